"""Digest and signature-format helpers shared by the backends and adapters.

Names follow the standards: digests as in RFC 5754 / asn1crypto (``"sha256"``),
key types as ``"rsa-2048"`` / ``"ec-p256"``, ECDSA signatures as the DER
``ECDSA-Sig-Value`` of RFC 3279 (what CMS and XML-DSig 1.1 both start from).
"""

from __future__ import annotations

from asn1crypto import algos, keys
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .errors import UnsupportedAlgorithm

__all__ = [
    "DIGESTS",
    "digest",
    "digest_info",
    "ecdsa_raw_to_der",
    "hash_algorithm",
    "key_type_of",
]

DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
"""Digests a signer accepts. SHA-1 and SHA-224 are deliberately absent (ETSI TS 119 312)."""

_CURVE_NAMES = {
    "secp256r1": "p256",
    "secp384r1": "p384",
    "secp521r1": "p521",
}


def hash_algorithm(name: str) -> hashes.HashAlgorithm:
    """The ``cryptography`` hash object for a digest name."""
    try:
        return DIGESTS[name.lower()]()
    except KeyError:
        raise UnsupportedAlgorithm(
            f"digest {name!r} is not supported (use one of {', '.join(DIGESTS)})"
        ) from None


def digest(name: str, data: bytes) -> bytes:
    """Hash ``data`` with the named digest."""
    hasher = hashes.Hash(hash_algorithm(name))
    hasher.update(data)
    return hasher.finalize()


def digest_info(name: str, data_digest: bytes) -> bytes:
    """The DER DigestInfo that RSASSA-PKCS1-v1_5 signs (RFC 8017, 9.2)."""
    return algos.DigestInfo(
        {
            "digest_algorithm": {"algorithm": name.lower(), "parameters": None},
            "digest": data_digest,
        }
    ).dump()


def ecdsa_raw_to_der(raw: bytes) -> bytes:
    """Turn PKCS#11's r‖s (two equal-length big-endian halves) into ECDSA-Sig-Value."""
    if not raw or len(raw) % 2:
        raise ValueError("an ECDSA signature from the token must have two equal halves")
    half = len(raw) // 2
    r = int.from_bytes(raw[:half], "big")
    s = int.from_bytes(raw[half:], "big")
    return encode_dss_signature(r, s)


def key_type_of(public_key: keys.PublicKeyInfo) -> str:
    """``"rsa-2048"``, ``"ec-p256"``... for a certificate's public key."""
    algorithm = public_key.algorithm
    if algorithm == "rsa":
        return f"rsa-{public_key.bit_size}"
    if algorithm == "ec":
        curve = public_key.curve[1]
        return f"ec-{_CURVE_NAMES.get(curve, curve)}"
    return algorithm
