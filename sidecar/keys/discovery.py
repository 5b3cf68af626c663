"""What PKCS#11 middleware is installed, and what its tokens hold.

The one list of the places where token middleware puts its PKCS#11 module
(:data:`MODULE_CANDIDATES`): LuxTrust's (Gemalto/Thales Classic Client, whose
module is ``gclib``), Thales/SafeNet Authentication Client, OpenSC and SoftHSM2,
at their usual Windows, Linux and macOS paths. ``sidecar setup`` offers what it
finds there; the sandbox looks for SoftHSM2 here too.

:func:`list_tokens` reads a module's slots, tokens and certificates through a
public session (no PIN): what a person needs to pick a key, and the labels and
ids a ``[[keys]]`` table names. Modules are loaded with
:func:`~sidecar.keys.pkcs11_module.load_module`, so the same checks (wrong
architecture, not a PKCS#11 library) give the same words.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import pkcs11
from asn1crypto import x509
from pkcs11 import Attribute, ObjectClass, SlotFlag, TokenFlag

from ..i18n import _
from .algorithms import key_type_of
from .errors import KeyConfigError
from .pkcs11_module import load_module

__all__ = [
    "MODULE_CANDIDATES",
    "FoundModule",
    "ModuleCandidate",
    "SlotListing",
    "TokenCertificate",
    "TokenListing",
    "find_modules",
    "list_tokens",
]

T = TypeVar("T")


@dataclass(frozen=True)
class ModuleCandidate:
    """Where one middleware puts its PKCS#11 module on one platform."""

    middleware: str
    #: ``sys.platform`` prefix: "win32", "linux" or "darwin".
    platform: str
    path: str


def _candidates(middleware: str, platform: str, *paths: str) -> list[ModuleCandidate]:
    return [ModuleCandidate(middleware, platform, path) for path in paths]


_LUXTRUST = "LuxTrust / Gemalto Classic Client"
_SAFENET = "Thales SafeNet Authentication Client"

#: Every known module location, the LuxTrust middleware first (the physicians' cards).
MODULE_CANDIDATES: tuple[ModuleCandidate, ...] = (
    *_candidates(
        _LUXTRUST,
        "win32",
        r"C:\Program Files\Gemalto\Classic Client\BIN\gclib.dll",
        r"C:\Program Files\Thales\Classic Client\BIN\gclib.dll",
        r"C:\Windows\System32\gclib.dll",
    ),
    *_candidates(
        _LUXTRUST,
        "linux",
        "/usr/lib/pkcs11/libgclib.so",
        "/usr/lib/ClassicClient/libgclib.so",
        "/usr/lib/libgclib.so",
        "/usr/lib64/libgclib.so",
    ),
    *_candidates(
        _LUXTRUST,
        "darwin",
        "/Library/Frameworks/Pkcs11ClassicClient.framework/Versions/A/"
        "Pkcs11ClassicClient/libgclib.dylib",
        "/usr/local/lib/ClassicClient/libgclib.dylib",
        "/usr/local/lib/libgclib.dylib",
    ),
    *_candidates(
        _SAFENET,
        "win32",
        r"C:\Windows\System32\eTPKCS11.dll",
        r"C:\Program Files\SafeNet\Authentication\SAC\x64\eTPKCS11.dll",
    ),
    *_candidates(_SAFENET, "linux", "/usr/lib/libeTPkcs11.so", "/usr/lib64/libeTPkcs11.so"),
    *_candidates(_SAFENET, "darwin", "/usr/local/lib/libeTPkcs11.dylib"),
    *_candidates(
        "OpenSC",
        "win32",
        r"C:\Program Files\OpenSC Project\OpenSC\pkcs11\opensc-pkcs11.dll",
        r"C:\Windows\System32\opensc-pkcs11.dll",
    ),
    *_candidates(
        "OpenSC",
        "linux",
        "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
        "/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so",
        "/usr/lib64/opensc-pkcs11.so",
        "/usr/lib/opensc-pkcs11.so",
        "/usr/local/lib/opensc-pkcs11.so",
    ),
    *_candidates(
        "OpenSC",
        "darwin",
        "/Library/OpenSC/lib/opensc-pkcs11.so",
        "/opt/homebrew/lib/opensc-pkcs11.so",
        "/usr/local/lib/opensc-pkcs11.so",
    ),
    *_candidates("SoftHSM2", "win32", r"C:\SoftHSM2\lib\softhsm2-x64.dll"),
    *_candidates(
        "SoftHSM2",
        "linux",
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib64/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ),
    *_candidates(
        "SoftHSM2",
        "darwin",
        "/opt/homebrew/lib/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ),
)


@dataclass(frozen=True)
class FoundModule:
    """A module file present on this machine."""

    middleware: str
    path: Path


def find_modules(
    middleware: str | None = None,
    *,
    candidates: Iterable[ModuleCandidate] = MODULE_CANDIDATES,
    platform: str = sys.platform,
) -> list[FoundModule]:
    """The candidate modules of this platform that exist, in list order, each file once.

    *middleware* keeps only one family (e.g. ``"SoftHSM2"``). A symbolic link and
    its target are the same module: only the first name is kept.
    """
    found: list[FoundModule] = []
    seen: set[Path] = set()
    for candidate in candidates:
        if not platform.startswith(candidate.platform):
            continue
        if middleware is not None and candidate.middleware != middleware:
            continue
        path = Path(candidate.path)
        if not path.is_file():
            continue
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        found.append(FoundModule(candidate.middleware, path))
    return found


@dataclass(frozen=True)
class TokenCertificate:
    """A certificate on a token, with the labels and id a ``[[keys]]`` table names."""

    label: str
    #: CKA_ID in hex (the private key of a card's certificate has the same id).
    id_hex: str
    subject: str
    issuer: str
    not_after: datetime
    key_type: str
    #: A CA certificate (an intermediate or root kept on the card), not a signer's.
    is_ca: bool


@dataclass(frozen=True)
class TokenListing:
    label: str
    serial: str
    manufacturer: str
    model: str
    #: A PIN-pad reader: the PIN is typed on the reader (``pin_source = "pinpad"``).
    pinpad: bool
    initialized: bool
    certificates: tuple[TokenCertificate, ...]
    #: Why the certificates could not be read, if they could not.
    problem: str | None = None


@dataclass(frozen=True)
class SlotListing:
    slot_id: int
    description: str
    token: TokenListing | None


def _run_with_deadline(call: Callable[[], T], seconds: float, what: str) -> T:
    """*call* in a thread; a middleware that hangs is reported, not waited on forever.

    The thread cannot be stopped (a PKCS#11 call cannot be interrupted): it is a
    daemon thread, left behind when the command ends.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            failure.append(exc)

    # In the caller's context: what the listing says comes in the command's language.
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(run,), name="pkcs11-listing", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise KeyConfigError(
            f"{what} did not answer within {seconds:g} s (is the smartcard service running?)"
        )
    if failure:
        raise failure[0]
    return outcome[0]


def _certificates(token: pkcs11.Token) -> tuple[TokenCertificate, ...]:
    session = token.open()
    try:
        found = []
        for obj in session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE}):
            certificate = x509.Certificate.load(obj[Attribute.VALUE])
            validity = certificate["tbs_certificate"]["validity"]
            found.append(
                TokenCertificate(
                    label=str(obj[Attribute.LABEL]),
                    id_hex=bytes(obj[Attribute.ID]).hex(),
                    subject=certificate.subject.human_friendly,
                    issuer=certificate.issuer.human_friendly,
                    not_after=validity["not_after"].native,
                    key_type=key_type_of(certificate.public_key),
                    is_ca=bool(certificate.ca),
                )
            )
        return tuple(found)
    finally:
        session.close()


def _token(slot: pkcs11.Slot) -> TokenListing:
    token = slot.get_token()
    flags = token.flags
    initialized = bool(flags & TokenFlag.TOKEN_INITIALIZED)
    certificates: tuple[TokenCertificate, ...] = ()
    problem = None
    if initialized:
        try:
            certificates = _certificates(token)
        except pkcs11.PKCS11Error as exc:
            problem = _("the certificates cannot be read ({error})", error=type(exc).__name__)
    else:
        problem = _("the token is not initialized (no PIN, no keys)")
    return TokenListing(
        label=token.label.strip(),
        serial=token.serial.decode("ascii", "replace").strip(),
        manufacturer=token.manufacturer_id.strip(),
        model=token.model.strip(),
        pinpad=bool(flags & TokenFlag.PROTECTED_AUTHENTICATION_PATH),
        initialized=initialized,
        certificates=certificates,
        problem=problem,
    )


def list_tokens(module: Path, *, seconds: float = 30.0) -> list[SlotListing]:
    """Every slot of *module*, with its token and certificates when a token is present.

    Raises :class:`~sidecar.keys.errors.KeyConfigError` when the module cannot be
    loaded or does not answer in *seconds*.
    """
    loaded = load_module(module)

    def read() -> list[SlotListing]:
        slots = []
        with loaded.using():
            for slot in loaded.lib.get_slots(token_present=False):
                token = None
                if slot.flags & SlotFlag.TOKEN_PRESENT:
                    try:
                        token = _token(slot)
                    except pkcs11.PKCS11Error:
                        token = None
                slots.append(SlotListing(slot.slot_id, slot.slot_description.strip(), token))
        return slots

    try:
        return _run_with_deadline(read, seconds, f"PKCS#11 module {module}")
    except pkcs11.PKCS11Error as exc:
        raise KeyConfigError(
            f"PKCS#11 module {module} cannot list its slots ({type(exc).__name__})",
            path=str(module),
        ) from None
