"""The one interface every signing engine uses: :class:`Signer`.

A signer hashes and signs bytes with one private key and knows that key's
certificate and chain. It knows nothing of documents: the XAdES and PAdES
engines build what is signed, and get raw signatures back —
RSASSA-PKCS1-v1_5 by default, RSASSA-PSS on request (MGF1 with the same
digest, salt as long as the digest: what ETSI EN 319 412/CAdES profiles
expect), and for EC keys a DER ``ECDSA-Sig-Value``.

Signing runs off the event loop: :meth:`Signer.sign` hands the blocking
:meth:`Signer.sign_blocking` to an executor. Engines that must call back
synchronously (signxml runs in a worker thread) call ``sign_blocking``.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar, Literal

from asn1crypto import x509
from cryptography import x509 as cx509

from .algorithms import hash_algorithm, key_type_of
from .errors import CertificateNotValid, KeyLocked, UnsupportedAlgorithm
from .key_settings import KeyConfig

__all__ = ["Backend", "KeyInfo", "Signer"]

logger = logging.getLogger(__name__)

Backend = Literal["pkcs12", "pkcs11"]


@dataclass(frozen=True)
class KeyInfo:
    """What ``GET /v1/keys`` and ``sidecar keys list`` show about one key.

    Certificate fields are ``None`` while the certificate has never been read
    (token absent since start, PKCS#12 passphrase missing).
    """

    id: str
    backend: Backend
    default: bool
    description: str
    key_type: str | None
    subject: str | None
    issuer: str | None
    serial: str | None
    """Certificate serial number, hexadecimal."""
    not_before: datetime | None
    not_after: datetime | None
    certificate_status: Literal["valid", "expired", "not_yet_valid", "unknown"]
    unlocked: bool
    locked_reason: str | None
    """The :class:`KeyLocked` reason of the last failure, while locked."""
    locked_detail: str | None
    pin_per_operation: bool = False
    """The key signs only with a PIN given for each operation (``X-Sidecar-PIN``, a
    batch's authorisation, or the pinpad): CKA_ALWAYS_AUTHENTICATE or ``pin_source =
    "request"``. Locked for ``pin_missing`` between operations is then its normal state."""
    opened: bool = True
    """False for a key loaded on first use (``load = "first_use"``) that no operation
    has used yet: nothing is known of it but its configuration, and nothing is wrong."""


class Signer(ABC):
    """A private key able to sign, with its certificate and chain.

    Subclasses implement :meth:`_unlock` (blocking: read the file, log in to
    the token) and :meth:`_sign_unlocked` (blocking, called with the key
    ready); this class does the certificate checks, the locking state and the
    executor hand-off.
    """

    backend: ClassVar[Backend]

    def __init__(self, config: KeyConfig, *, executor: Executor | None = None) -> None:
        self.config = config
        self._executor = executor
        self._certificate: x509.Certificate | None = None
        self._chain: tuple[x509.Certificate, ...] = ()
        self._last_lock: KeyLocked | None = None
        #: Whether :meth:`open` or an operation has tried to make the key ready.
        self._opened = False

    # -- identity ---------------------------------------------------------

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def certificate(self) -> x509.Certificate:
        """The signer's certificate (asn1crypto); :class:`KeyLocked` if never read."""
        if self._certificate is None:
            raise self._last_lock or KeyLocked(
                "token_error", f"key {self.id!r} has not been opened", key_id=self.id
            )
        return self._certificate

    @property
    def crypto_certificate(self) -> cx509.Certificate:
        """The same certificate as a ``cryptography`` object."""
        return cx509.load_der_x509_certificate(self.certificate.dump())

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """Intermediates (and root, if known), nearest the signer first."""
        return self._chain

    @property
    def key_type(self) -> str:
        """``"rsa-2048"``, ``"ec-p256"``... from the certificate's public key."""
        return key_type_of(self.certificate.public_key)

    @property
    def pin_per_operation(self) -> bool:
        """True when each operation must bring its PIN (see :class:`KeyInfo`)."""
        return False

    @property
    def unlocked(self) -> bool:
        """True when the key can sign right now without a login or a passphrase."""
        return self._is_unlocked()

    # -- lifecycle --------------------------------------------------------

    def open(self) -> None:
        """Try to make the key ready (blocking). Never raises :class:`KeyLocked`:
        the state is kept and reported by :meth:`describe` and the next sign."""
        self._opened = True
        try:
            self._unlock()
        except KeyLocked as exc:
            self._note_locked(exc)

    @abstractmethod
    def close(self) -> None:
        """Forget the key and release sessions (blocking, idempotent)."""

    # -- signing ----------------------------------------------------------

    async def sign(self, data: bytes, *, digest: str = "sha256", pss: bool = False) -> bytes:
        """Hash ``data`` with ``digest`` and sign it, off the event loop."""
        loop = asyncio.get_running_loop()
        call = functools.partial(self.sign_blocking, data, digest=digest, pss=pss)
        # The caller's context goes along: it holds the operation's authorisation
        # (the PIN a key with CKA_ALWAYS_AUTHENTICATE logs in with for this signature).
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._executor, context.run, call)

    async def ready(self) -> None:
        """Make sure the key can sign now, off the event loop: unlock it if it is not
        (a key whose last unlock failed is retried here) and check its certificate.

        Engines read the certificate before they sign: they call this first, so that a
        token put back or a passphrase fixed works without a restart.
        """
        if self._is_unlocked():
            # Nothing to unlock: a date comparison, not worth a worker thread.
            self.check_validity()
            return
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        await loop.run_in_executor(self._executor, context.run, self._ready_blocking)

    def _ready_blocking(self) -> None:
        self._opened = True
        if not self._is_unlocked():
            try:
                self._unlock()
            except KeyLocked as exc:
                self._note_locked(exc)
                raise
        self.check_validity()

    def sign_blocking(self, data: bytes, *, digest: str = "sha256", pss: bool = False) -> bytes:
        """The blocking form of :meth:`sign`; thread-safe."""
        hash_algorithm(digest)  # reject unknown digests before touching the token
        self._ready_blocking()
        if pss and not self.key_type.startswith("rsa"):
            raise UnsupportedAlgorithm(f"key {self.id!r} is {self.key_type}: PSS needs RSA")
        try:
            signature = self._sign_unlocked(data, digest.lower(), pss)
        except KeyLocked as exc:
            self._note_locked(exc)
            raise
        self._last_lock = None
        return signature

    def check_validity(self, at: datetime | None = None) -> None:
        """Raise :class:`CertificateNotValid` unless the certificate is valid ``at``."""
        status = self._certificate_status(at)
        if status == "valid":
            return
        validity = self.certificate["tbs_certificate"]["validity"]
        not_before = validity["not_before"].native
        not_after = validity["not_after"].native
        if status == "expired":
            detail = f"the certificate of key {self.id!r} expired on {not_after.isoformat()}"
        else:
            detail = (
                f"the certificate of key {self.id!r} is valid only from {not_before.isoformat()}"
            )
        raise CertificateNotValid(
            status, detail, key_id=self.id, not_before=not_before, not_after=not_after
        )

    def describe(self) -> KeyInfo:
        """A snapshot of the key's identity and state."""
        cert = self._certificate
        lock = self._last_lock if not self._is_unlocked() else None
        info = KeyInfo(
            id=self.id,
            backend=self.backend,
            default=self.config.default,
            description=self.config.description,
            key_type=None,
            subject=None,
            issuer=None,
            serial=None,
            not_before=None,
            not_after=None,
            certificate_status="unknown",
            unlocked=self._is_unlocked(),
            locked_reason=lock.reason if lock else None,
            locked_detail=lock.detail if lock else None,
            pin_per_operation=self.pin_per_operation,
            opened=self._opened,
        )
        if cert is None:
            return info
        validity = cert["tbs_certificate"]["validity"]
        return dataclasses.replace(
            info,
            key_type=key_type_of(cert.public_key),
            subject=cert.subject.human_friendly,
            issuer=cert.issuer.human_friendly,
            serial=format(cert.serial_number, "x"),
            not_before=validity["not_before"].native,
            not_after=validity["not_after"].native,
            certificate_status=self._certificate_status(None),
        )

    # -- for subclasses ---------------------------------------------------

    @abstractmethod
    def _is_unlocked(self) -> bool: ...

    @abstractmethod
    def _unlock(self) -> None:
        """Make the key ready or raise :class:`KeyLocked`; sets the certificate."""

    @abstractmethod
    def _sign_unlocked(self, data: bytes, digest: str, pss: bool) -> bytes:
        """Sign with the key ready; may raise :class:`KeyLocked` (token pulled out)."""

    def _set_certificate(
        self, certificate: x509.Certificate, chain: Sequence[x509.Certificate]
    ) -> None:
        if self._certificate is not None and self._certificate.dump() != certificate.dump():
            logger.warning("key %s: the certificate has changed since it was last read", self.id)
        self._certificate = certificate
        self._chain = tuple(chain)

    def _note_locked(self, exc: KeyLocked) -> None:
        self._last_lock = exc
        logger.warning("key %s is locked (%s): %s", self.id, exc.reason, exc.detail)

    def _certificate_status(
        self, at: datetime | None
    ) -> Literal["valid", "expired", "not_yet_valid"]:
        at = at or datetime.now(UTC)
        validity = self.certificate["tbs_certificate"]["validity"]
        if at < validity["not_before"].native:
            return "not_yet_valid"
        if at > validity["not_after"].native:
            return "expired"
        return "valid"
