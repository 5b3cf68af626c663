"""Keys in a PKCS#12 file (.p12/.pfx), for practices without a smartcard.

The file is parsed once and the key kept in memory: re-reading and
re-deriving the PBKDF2/PBES2 key for every signature costs tens of
milliseconds for nothing.
"""

from __future__ import annotations

import threading

from asn1crypto import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from .algorithms import hash_algorithm
from .certificates import load_certificates, order_chain
from .credentials import SecretUnavailable, read_secret
from .errors import KeyConfigError, KeyLocked, UnsupportedAlgorithm
from .key_settings import KeyConfig
from .signer import Signer

__all__ = ["Pkcs12Signer", "sign_with_private_key"]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class Pkcs12Signer(Signer):
    """A key read from a PKCS#12 file."""

    backend = "pkcs12"

    def __init__(self, config: KeyConfig) -> None:
        super().__init__(config)
        self._key: PrivateKey | None = None
        self._lock = threading.Lock()

    def _is_unlocked(self) -> bool:
        return self._key is not None

    def _unlock(self) -> None:
        with self._lock:
            if self._key is not None:
                return
            path = self.config.path
            assert path is not None  # KeyConfig.validate guarantees it
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise KeyConfigError(
                    f"key {self.id!r}: cannot read the PKCS#12 file {path}: {exc.strerror}",
                    key_id=self.id,
                    path=str(path),
                ) from None
            try:
                secret = read_secret(self.config, "passphrase")
            except SecretUnavailable as exc:
                raise KeyLocked(
                    "passphrase_missing",
                    f"key {self.id!r}: {exc.detail}",
                    key_id=self.id,
                ) from None
            password = secret.encode("utf-8") if secret is not None else None
            try:
                loaded = pkcs12.load_pkcs12(data, password)
            except ValueError:
                # cryptography says the same for a wrong passphrase and a corrupt file;
                # a file that is not DER at all cannot be a PKCS#12, the rest is the
                # passphrase far more often than not.
                if not data.startswith(b"\x30"):
                    raise KeyConfigError(
                        f"key {self.id!r}: {path} is not a PKCS#12 file",
                        key_id=self.id,
                        path=str(path),
                    ) from None
                raise KeyLocked(
                    "passphrase_incorrect",
                    # No path: this detail is an API answer (423), not a log line.
                    f"key {self.id!r}: the passphrase does not open its PKCS#12 file "
                    "(or the file is damaged)",
                    key_id=self.id,
                ) from None
            key = loaded.key
            if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                raise KeyConfigError(
                    f"key {self.id!r}: {path} holds no RSA or EC private key",
                    key_id=self.id,
                    path=str(path),
                )
            if loaded.cert is None:
                raise KeyConfigError(
                    f"key {self.id!r}: {path} holds no certificate for its key",
                    key_id=self.id,
                    path=str(path),
                )
            if _public_der(loaded.cert.certificate.public_key()) != _public_der(key.public_key()):
                raise KeyConfigError(
                    f"key {self.id!r}: in {path} the certificate does not belong to the key",
                    key_id=self.id,
                    path=str(path),
                )
            leaf = x509.Certificate.load(
                loaded.cert.certificate.public_bytes(serialization.Encoding.DER)
            )
            pool = [
                x509.Certificate.load(c.certificate.public_bytes(serialization.Encoding.DER))
                for c in loaded.additional_certs
            ]
            for extra in self.config.chain:
                pool.extend(load_certificates(extra))
            self._set_certificate(leaf, order_chain(leaf, pool))
            self._key = key

    def _sign_unlocked(self, data: bytes, digest: str, pss: bool) -> bytes:
        key = self._key
        if key is None:  # closed meanwhile
            raise KeyLocked("passphrase_missing", f"key {self.id!r} is closed", key_id=self.id)
        return sign_with_private_key(key, data, digest, pss)

    def close(self) -> None:
        with self._lock:
            self._key = None


def sign_with_private_key(key: PrivateKey, data: bytes, digest: str, pss: bool) -> bytes:
    """Hash-and-sign with an in-memory key, in the formats :class:`Signer` promises."""
    algorithm = hash_algorithm(digest)
    if isinstance(key, rsa.RSAPrivateKey):
        if pss:
            pad: padding.AsymmetricPadding = padding.PSS(
                mgf=padding.MGF1(algorithm), salt_length=algorithm.digest_size
            )
        else:
            pad = padding.PKCS1v15()
        return key.sign(data, pad, algorithm)
    if pss:
        raise UnsupportedAlgorithm("PSS needs an RSA key")
    return key.sign(data, ec.ECDSA(algorithm))


def _public_der(public_key: object) -> bytes:
    assert isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
