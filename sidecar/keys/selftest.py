"""``sidecar keys test``: sign a test message and check it against the certificate."""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ..errors import Misconfigured
from .algorithms import hash_algorithm
from .signer import Signer

__all__ = ["SelfTestFailed", "self_test"]


class SelfTestFailed(Misconfigured):
    """The key signed, but the signature does not verify with its certificate."""


async def self_test(signer: Signer, *, digest: str = "sha256") -> None:
    """Sign fresh random bytes and verify the result with the certificate's public key.

    Catches a token whose key and certificate do not belong together, which
    would otherwise surface only when the CNS rejects a signed form.
    """
    data = b"sidecar key self-test " + secrets.token_bytes(32)
    signature = await signer.sign(data, digest=digest)
    public_key = signer.crypto_certificate.public_key()
    algorithm = hash_algorithm(digest)
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(algorithm))
        else:
            raise SelfTestFailed(f"key {signer.id!r}: unsupported public key type")
    except InvalidSignature:
        raise SelfTestFailed(
            f"key {signer.id!r}: the signature does not verify with the certificate "
            "(key and certificate do not match?)"
        ) from None
