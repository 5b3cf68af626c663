"""Loading a PKCS#11 module (the token middleware's shared library).

Most support calls about tokens start here: a 32-bit ``gclib.dll`` handed to
a 64-bit Python, a path to the middleware's helper DLL instead of its PKCS#11
module, a file that is not there. :func:`load_module` checks the file before
the system loader does and turns every failure into a
:class:`~sidecar.keys.errors.KeyConfigError` naming the file and the likely
cause.

One :class:`Pkcs11Module` exists per library file in the process: a module
keeps process-wide state (C_Initialize), so every signer on it shares it.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pkcs11

from .errors import KeyConfigError

if TYPE_CHECKING:
    # What pkcs11.lib() returns: the class of python-pkcs11's compiled module, which its
    # own pkcs11/__init__.py names the same way for its annotations.
    from pkcs11._pkcs11 import lib as Pkcs11Lib

__all__ = ["Pkcs11Module", "inspect_library", "load_module"]

logger = logging.getLogger(__name__)

REINITIALIZE_INTERVAL = 1.0
"""Seconds between two C_Finalize/C_Initialize cycles of one module.

Some modules (SoftHSM among them) only notice a token that came back after a
re-initialization; every session of every signer on the module is lost by
it, so a stream of requests against an absent token must not keep doing it.
"""

_THALES_HINT = (
    "use the 64-bit module, C:\\Program Files\\Thales\\Classic Client\\BIN\\gclib.dll "
    "(the one under C:\\Program Files (x86)\\ is 32-bit)"
)

_ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86-64", 183: "arm64"}
_PE_MACHINES = {0x014C: "x86", 0x01C4: "arm", 0x8664: "x86-64", 0xAA64: "arm64"}
_MACHO_CPUS = {7: "x86", 0x01000007: "x86-64", 12: "arm", 0x0100000C: "arm64"}
_BITS = {"x86": 32, "arm": 32, "x86-64": 64, "arm64": 64}


def _python_architecture() -> str:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "x86-64" if struct.calcsize("P") == 8 else "x86"
    if machine in ("aarch64", "arm64", "armv8l"):
        return "arm64" if struct.calcsize("P") == 8 else "arm"
    return machine


def _library_architecture(header: bytes) -> tuple[str, str] | None:
    """(format, architecture) of a shared library, from its first bytes."""
    if header[:4] == b"\x7fELF" and len(header) >= 20:
        order = "<" if header[5] == 1 else ">"
        (machine,) = struct.unpack_from(order + "H", header, 18)
        fallback = "32-bit" if header[4] == 1 else "64-bit"
        return "ELF", _ELF_MACHINES.get(machine, fallback)
    if header[:2] == b"MZ" and len(header) >= 0x40:
        (pe_offset,) = struct.unpack_from("<I", header, 0x3C)
        if header[pe_offset : pe_offset + 4] == b"PE\0\0":
            (machine,) = struct.unpack_from("<H", header, pe_offset + 4)
            return "PE", _PE_MACHINES.get(machine, f"machine 0x{machine:04x}")
        return "PE", "unknown"
    if header[:4] in (b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe") and len(header) >= 8:
        (cpu,) = struct.unpack_from("<I", header, 4)
        return "Mach-O", _MACHO_CPUS.get(cpu, f"cpu 0x{cpu:x}")
    if header[:4] == b"\xca\xfe\xba\xbe":
        return "Mach-O", "universal"
    return None


def inspect_library(path: Path) -> str | None:
    """Why ``path`` cannot be a loadable PKCS#11 module for this Python, or ``None``."""
    if not path.exists():
        return f"PKCS#11 module {path} does not exist: is the token middleware installed?"
    if not path.is_file():
        return f"PKCS#11 module {path} is not a file"
    try:
        with path.open("rb") as handle:
            header = handle.read(4096)
    except OSError as exc:
        return f"PKCS#11 module {path} cannot be read: {exc.strerror}"
    found = _library_architecture(header)
    if found is None:
        return (
            f"{path} is not a shared library (no ELF, PE or Mach-O header): "
            "point 'module' at the middleware's PKCS#11 .so/.dll/.dylib"
        )
    _, library_arch = found
    python_arch = _python_architecture()
    if library_arch in _BITS and python_arch in _BITS and library_arch != python_arch:
        detail = (
            f"{path} is a {_BITS[library_arch]}-bit {library_arch} library and this Python "
            f"is {_BITS[python_arch]}-bit {python_arch}: a {_BITS[python_arch]}-bit process "
            f"cannot load a {_BITS[library_arch]}-bit module"
        )
        if path.name.lower().startswith(("gclib", "libgclib")):
            detail += f"; {_THALES_HINT}"
        else:
            detail += "; install or select the middleware's module built for this architecture"
        return detail
    return None


def _explain_load_error(path: Path, message: str) -> str:
    if "C_GetFunctionList" in message:
        return (
            f"{path} loads but exports no C_GetFunctionList: it is not a PKCS#11 module "
            "(perhaps another library of the middleware, a CSP or minidriver); "
            "point 'module' at its PKCS#11 library"
        )
    if "wrong ELF class" in message or "%1 is not a valid Win32" in message:
        hint = _THALES_HINT if "gclib" in path.name.lower() else "use the matching build"
        return f"{path} is built for another architecture than this Python; {hint}"
    return (
        f"the system loader could not load {path} ({message.strip()}); "
        "a library it depends on may be missing (e.g. pcsclite / the smartcard service)"
    )


class _SharedExclusiveLock:
    """Many signers use sessions at once; re-initialization needs them all out."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._writer)
            self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                self._condition.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._writer)
            self._writer = True
            self._condition.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._condition:
                self._writer = False
                self._condition.notify_all()


class Pkcs11Module:
    """A loaded PKCS#11 library, shared by every signer that uses it.

    ``generation`` counts re-initializations: a session opened in an older
    generation is dead, whatever the module says about its handle.
    """

    def __init__(self, path: Path, lib: Pkcs11Lib) -> None:
        self.path = path
        self.lib = lib
        self.generation = 0
        self._lock = _SharedExclusiveLock()
        self._last_reinitialized = float("-inf")

    def using(self) -> contextlib.AbstractContextManager[None]:
        """Hold while a session of this module is in use."""
        return self._lock.shared()

    def reinitialize(self, seen_generation: int) -> bool:
        """C_Finalize + C_Initialize, so that a token put back is seen again.

        Skipped (returns False) when another signer did it since
        ``seen_generation`` or when the last one is too recent.
        """
        with self._lock.exclusive():
            if self.generation != seen_generation:
                return True
            if time.monotonic() - self._last_reinitialized < REINITIALIZE_INTERVAL:
                return False
            logger.info("re-initializing PKCS#11 module %s to look for tokens again", self.path)
            try:
                self.lib.reinitialize()
            except pkcs11.PKCS11Error as exc:
                logger.warning(
                    "re-initializing PKCS#11 module %s failed: %s", self.path, type(exc).__name__
                )
                with contextlib.suppress(pkcs11.PKCS11Error):
                    self.lib.initialize()
            self.generation += 1
            self._last_reinitialized = time.monotonic()
            return True


_modules: dict[Path, Pkcs11Module] = {}
_modules_lock = threading.Lock()


def load_module(path: Path) -> Pkcs11Module:
    """The process's :class:`Pkcs11Module` for ``path``, loading it on first use."""
    resolved = path.expanduser().resolve()
    with _modules_lock:
        module = _modules.get(resolved)
        if module is not None:
            return module
        problem = inspect_library(resolved)
        if problem is not None:
            raise KeyConfigError(problem, path=str(path))
        try:
            lib = pkcs11.lib(str(resolved))
        except pkcs11.PKCS11Error as exc:
            text = str(exc)
            if "loading" in text:
                raise KeyConfigError(_explain_load_error(path, text), path=str(path)) from None
            raise KeyConfigError(
                f"PKCS#11 module {path} loaded but C_Initialize failed "
                f"({type(exc).__name__}): check the middleware's configuration and that "
                "the smartcard service is running",
                path=str(path),
            ) from None
        logger.info(
            "loaded PKCS#11 module %s (%s, %s)", path, lib.manufacturer_id, lib.library_description
        )
        module = Pkcs11Module(resolved, lib)
        _modules[resolved] = module
        return module
