"""Let signxml sign with any :class:`~sidecar.keys.signer.Signer`.

signxml wants a ``cryptography`` private key and only calls ``sign``,
``key_size``, ``public_key()`` and, for EC, ``curve``. These wrappers pass the
call through to ``sign_blocking`` of a :class:`BlockingSigner` (a
:class:`Signer`, or anything with the same three members), so signxml must run
in a worker thread (which it should anyway: it is CPU-bound), never on the
event loop.
"""

from __future__ import annotations

from typing import NoReturn, Protocol, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as _padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from .._hooks.cryptography_hooks import pss_salt_length
from .errors import UnsupportedAlgorithm

__all__ = ["BlockingSigner", "SignerEcKey", "SignerRsaKey", "as_cryptography_key"]


class BlockingSigner(Protocol):
    """What the wrappers use of a :class:`~sidecar.keys.signer.Signer`."""

    @property
    def key_type(self) -> str: ...

    @property
    def crypto_certificate(self) -> x509.Certificate: ...

    def sign_blocking(self, data: bytes, *, digest: str = "sha256", pss: bool = False) -> bytes: ...


def _hash_of(algorithm: object) -> hashes.HashAlgorithm:
    if isinstance(algorithm, Prehashed) or not isinstance(algorithm, hashes.HashAlgorithm):
        raise UnsupportedAlgorithm("a token signer hashes the data itself; pass the data")
    return algorithm


def _digest_name(algorithm: hashes.HashAlgorithm) -> str:
    return algorithm.name.replace("-", "")


def _no_export() -> NoReturn:
    raise UnsupportedAlgorithm("the private key of a signer cannot be exported")


class _NotExportable:
    """What both wrappers share: no export, and copies are the same token-backed key."""

    def private_bytes(
        self,
        encoding: ser.Encoding,
        format: ser.PrivateFormat,
        encryption_algorithm: ser.KeySerializationEncryption,
    ) -> bytes:
        _no_export()

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self


class SignerRsaKey(_NotExportable, rsa.RSAPrivateKey):
    """An RSA "private key" whose ``sign`` goes to a :class:`BlockingSigner`."""

    def __init__(self, signer: BlockingSigner) -> None:
        self._signer = signer
        public = signer.crypto_certificate.public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        self._public = public

    def sign(
        self,
        data: bytes,
        padding: _padding.AsymmetricPadding,
        # Whatever cryptography's version allows (HashAlgorithm, Prehashed, and since
        # 45 NoDigestInfo): only a HashAlgorithm is accepted.
        algorithm: object,
    ) -> bytes:
        hash_algorithm = _hash_of(algorithm)
        digest = _digest_name(hash_algorithm)
        if isinstance(padding, _padding.PKCS1v15):
            return self._signer.sign_blocking(data, digest=digest)
        if isinstance(padding, _padding.PSS):
            # The token's PSS uses MGF1 with the same digest and a digest-long salt.
            salt = pss_salt_length(padding)
            if salt not in (hash_algorithm.digest_size, _padding.PSS.DIGEST_LENGTH):
                raise UnsupportedAlgorithm("only PSS with a salt as long as the digest")
            return self._signer.sign_blocking(data, digest=digest, pss=True)
        raise UnsupportedAlgorithm(f"padding {padding.name} is not supported")

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def decrypt(self, ciphertext: bytes, padding: _padding.AsymmetricPadding) -> bytes:
        raise UnsupportedAlgorithm("a signing key does not decrypt")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        _no_export()


class SignerEcKey(_NotExportable, ec.EllipticCurvePrivateKey):
    """An EC "private key" whose ``sign`` goes to a :class:`BlockingSigner` (returns DER)."""

    def __init__(self, signer: BlockingSigner) -> None:
        self._signer = signer
        public = signer.crypto_certificate.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        self._public = public

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise UnsupportedAlgorithm("only ECDSA is supported")
        digest = _digest_name(_hash_of(signature_algorithm.algorithm))
        return self._signer.sign_blocking(data, digest=digest)

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise UnsupportedAlgorithm("a signing key does not do key agreement")

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        _no_export()


def as_cryptography_key(signer: BlockingSigner) -> SignerRsaKey | SignerEcKey:
    """The wrapper that fits the signer's key type."""
    if signer.key_type.startswith("rsa"):
        return SignerRsaKey(signer)
    if signer.key_type.startswith("ec"):
        return SignerEcKey(signer)
    raise UnsupportedAlgorithm(f"key type {signer.key_type} is not supported")
