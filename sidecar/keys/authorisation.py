"""The physician's authorisation for one operation or one batch: a PIN given for it.

Qualified signature keys on cards carry ``CKA_ALWAYS_AUTHENTICATE``: the token wants a
context-specific login (``C_Login(CKU_CONTEXT_SPECIFIC)``) before every ``C_Sign``. A
PIN kept in the OS secret store would turn that "sole control" into a formality, so
such a key takes its PIN from the operation itself — a request's PIN, or one batch's
— held here for the operation's life only and wiped when it ends.

The authorisation travels with the operation as a context variable: the engines pass
a :class:`~sidecar.keys.signer.Signer` along and know nothing of PINs, and
:meth:`Signer.sign` hands the caller's context to the key's worker thread.

What "wiped" can mean in CPython: the PIN is kept in a ``bytearray`` that is zeroed
on :meth:`Authorisation.close`; each login decodes a short-lived ``str`` (python-pkcs11
takes one) that the interpreter frees but cannot be made to overwrite. See
``docs/pin.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar

from .errors import KeyLocked

logger = logging.getLogger(__name__)

__all__ = ["Authorisation", "authorised", "current_authorisation", "forbid_core_dumps"]

_CURRENT: ContextVar[Authorisation | None] = ContextVar("sidecar_authorisation", default=None)


class Authorisation:
    """A PIN given for one operation (or one batch), bounded in time, wiped on close.

    ``pin=None`` means the protected authentication path: the token's pinpad asks.
    *lifetime* is in seconds (``None``: until closed).
    """

    def __init__(self, pin: str | None, *, lifetime: float | None = None) -> None:
        self._pin = bytearray(pin.encode("utf-8")) if pin is not None else None
        self.protected_path = pin is None
        self._deadline = time.monotonic() + lifetime if lifetime is not None else None
        self._closed = False
        self._refused = False
        self._fingerprints: dict[bytes, bytes] = {}
        self._lock = threading.Lock()
        #: Context-specific logins done with this authorisation (one per signature).
        self.logins = 0

    def __repr__(self) -> str:  # never the PIN
        state = "closed" if self._closed else "refused" if self._refused else "open"
        return f"<Authorisation {state}, {self.logins} login(s)>"

    @property
    def active(self) -> bool:
        """False once closed, refused by the token, or past its lifetime."""
        if self._deadline is not None and time.monotonic() > self._deadline:
            self.close()
        return not self._closed and not self._refused

    def pin(self, key_id: str) -> str | None:
        """The PIN to present now (``None``: the pinpad asks), or :class:`KeyLocked`."""
        with self._lock:
            if not self.active:
                if self._refused:
                    raise KeyLocked(
                        "pin_incorrect",
                        f"key {key_id!r}: the token refused the PIN given for this operation; "
                        "it is not presented again",
                        key_id=key_id,
                    )
                raise KeyLocked(
                    "pin_missing",
                    f"key {key_id!r}: the authorisation for this operation has ended "
                    "(ended early, or past its time)",
                    key_id=key_id,
                )
            self.logins += 1
            return None if self._pin is None else self._pin.decode("utf-8")

    def fingerprint(self, salt: bytes, *, compute: bool = True) -> bytes | None:
        """A salted slow hash of the PIN (to compare with a refused one), memoised per salt.

        ``None`` for the pinpad, or when not yet derived and *compute* is false (the
        derivation takes ~10 ms of CPU: not on the event loop).
        """
        with self._lock:
            if self._pin is None:
                return None
            if salt not in self._fingerprints:
                if not compute:
                    return None
                self._fingerprints[salt] = hashlib.pbkdf2_hmac("sha256", self._pin, salt, 10_000)
            return self._fingerprints[salt]

    def refused(self) -> None:
        """The token rejected this PIN: never present it again; wipe it."""
        with self._lock:
            self._refused = True
            self._wipe()

    def close(self) -> None:
        """End the authorisation and zero the PIN (idempotent)."""
        self._closed = True
        self._wipe()

    def _wipe(self) -> None:
        self._fingerprints.clear()
        if self._pin is not None:
            for i in range(len(self._pin)):
                self._pin[i] = 0
            self._pin = bytearray()


def current_authorisation() -> Authorisation | None:
    """The authorisation of the operation running in this context, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def authorised(authorisation: Authorisation | None, *, close: bool = True) -> Iterator[None]:
    """Run the block under *authorisation*; closed (PIN wiped) at the end unless told not."""
    token = _CURRENT.set(authorisation)
    try:
        yield
    finally:
        _CURRENT.reset(token)
        if close and authorisation is not None:
            authorisation.close()


def forbid_core_dumps() -> None:
    """No core file for this process (and the workers it starts after this call).

    A crash while an operation's PIN is in memory would otherwise write it to disk.
    POSIX only; where the limit cannot be lowered the daemon says so and goes on.
    """
    try:
        import resource
    except ImportError:  # Windows: no core files in this sense (WER is configured apart)
        return
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError) as exc:
        logger.warning("core dumps could not be turned off (%s)", exc)
