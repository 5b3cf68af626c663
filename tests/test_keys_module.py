"""Loading PKCS#11 modules: every failure names the file and the likely cause."""

from __future__ import annotations

import struct
from pathlib import Path

import pkcs11._pkcs11
import pytest

from sidecar.keys import KeyConfig, KeyConfigError, create_signer
from sidecar.keys.pkcs11_module import inspect_library, load_module
from tests.fixtures.softhsm import SoftHsm


def _elf_header(bits: int, machine: int) -> bytes:
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1, 1]) + bytes(9)
    return ident + struct.pack("<HH", 3, machine) + bytes(64)


def _pe_header(machine: int) -> bytes:
    dos = bytearray(0x80)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x80)
    return bytes(dos) + b"PE\0\0" + struct.pack("<H", machine) + bytes(64)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "libgclib.so"
    with pytest.raises(KeyConfigError) as caught:
        load_module(missing)
    assert str(missing) in caught.value.detail
    assert "does not exist" in caught.value.detail
    assert caught.value.path == str(missing)


def test_not_a_library(tmp_path: Path) -> None:
    text = tmp_path / "opensc-pkcs11.so"
    text.write_text("this is a README, not a module\n")
    with pytest.raises(KeyConfigError) as caught:
        load_module(text)
    assert str(text) in caught.value.detail
    assert "not a shared library" in caught.value.detail


def test_library_without_function_list() -> None:
    # A real shared library that is not a PKCS#11 module: python-pkcs11's own extension.
    library = Path(pkcs11._pkcs11.__file__)
    with pytest.raises(KeyConfigError) as caught:
        load_module(library)
    assert str(library) in caught.value.detail
    assert "C_GetFunctionList" in caught.value.detail
    assert "not a PKCS#11 module" in caught.value.detail


def test_32_bit_gclib_on_64_bit_python(tmp_path: Path) -> None:
    # A file with a real PE32 (i386) header, as the Program Files (x86) gclib.dll has:
    # the check reads the header, the system loader is never reached.
    dll = tmp_path / "gclib.dll"
    dll.write_bytes(_pe_header(0x014C))
    detail = inspect_library(dll)
    assert detail is not None
    assert str(dll) in detail
    assert "32-bit" in detail and "64-bit" in detail
    assert "C:\\Program Files\\Thales\\Classic Client\\BIN\\" in detail
    with pytest.raises(KeyConfigError, match="cannot load a 32-bit module"):
        load_module(dll)


def test_32_bit_elf(tmp_path: Path) -> None:
    library = tmp_path / "libsomething-pkcs11.so"
    library.write_bytes(_elf_header(32, 3))
    detail = inspect_library(library)
    assert detail is not None and "32-bit x86 library" in detail


def test_64_bit_pe_header_is_accepted_by_the_check(tmp_path: Path) -> None:
    dll = tmp_path / "gclib.dll"
    dll.write_bytes(_pe_header(0x8664))
    assert inspect_library(dll) is None


def test_softhsm_module_passes(softhsm: SoftHsm) -> None:
    assert inspect_library(softhsm.module) is None
    assert load_module(softhsm.module) is load_module(softhsm.module)  # one per process


def test_signer_open_raises_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "gclib.dll"
    signer = create_signer(
        KeyConfig(id="card", backend="pkcs11", module=missing, key_label="x", pin_source="pinpad")
    )
    with pytest.raises(KeyConfigError, match=r"gclib\.dll does not exist"):
        signer.open()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"backend": "pkcs12"}, "needs 'path'"),
        ({"backend": "pkcs11"}, "needs 'module'"),
        ({"backend": "pkcs11", "module": Path("m.so")}, "needs 'key_label' or 'key_id'"),
        ({"backend": "pkcs11", "module": Path("m.so"), "key_id": "zz"}, "hexadecimal"),
        (
            {"backend": "pkcs11", "module": Path("m.so"), "key_id": "01", "pin": "1234"},
            "pin_source is not 'config'",
        ),
        (
            {"backend": "pkcs11", "module": Path("m.so"), "key_id": "01", "pin_source": "config"},
            "no 'pin'",
        ),
        ({"backend": "pkcs12", "path": Path("a.p12"), "token_label": "x"}, "pkcs11' only"),
    ],
)
def test_config_validation(fields: dict[str, object], message: str) -> None:
    with pytest.raises(KeyConfigError, match=message) as caught:
        KeyConfig(id="k", **fields)  # type: ignore[arg-type]
    assert "1234" not in str(caught.value)
