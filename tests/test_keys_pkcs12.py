"""PKCS#12 signer: real files, RSA-2048 and EC P-256, verified with cryptography."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature

from sidecar.keys import CertificateNotValid, KeyConfig, KeyConfigError, KeyLocked, create_signer
from sidecar.keys.pkcs12_file import Pkcs12Signer
from tests.fixtures.softhsm import P12_PASSPHRASE, KeyPki, MemoryKeyring, verify_signature


def _config(path: Path, key_id: str = "p12", **kwargs: object) -> KeyConfig:
    return KeyConfig(id=key_id, backend="pkcs12", path=path, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "key_type"), [("rsa", "rsa-2048"), ("ec", "ec-p256")])
async def test_signs_and_verifies(
    name: str,
    key_type: str,
    pkcs12_files: dict[str, Path],
    key_pki: KeyPki,
    memory_keyring: MemoryKeyring,
) -> None:
    memory_keyring.set_password("sidecar", f"p12-{name}", P12_PASSPHRASE)
    signer = create_signer(_config(pkcs12_files[name], f"p12-{name}"))
    signer.open()
    assert signer.unlocked
    assert signer.key_type == key_type
    leaf = key_pki.leaves[name].certificate
    assert signer.crypto_certificate == leaf
    # The chain comes from the file, in order, nearest issuer first.
    assert [c.dump() for c in signer.chain] == [
        key_pki.intermediate.cert_file.read_bytes(),
        key_pki.root.cert_file.read_bytes(),
    ]
    data = b"<fee-note>42</fee-note>"
    signature = await signer.sign(data)
    verify_signature(leaf, data, signature)
    with pytest.raises(InvalidSignature):
        verify_signature(leaf, data + b"x", signature)
    info = signer.describe()
    assert info.backend == "pkcs12"
    assert info.key_type == key_type
    assert info.unlocked
    assert info.certificate_status == "valid"
    assert info.subject is not None and f"Dr Test {name}" in info.subject
    assert info.serial == format(leaf.serial_number, "x")


async def test_rsa_pss(pkcs12_files: dict[str, Path], key_pki: KeyPki) -> None:
    signer = create_signer(
        _config(pkcs12_files["rsa"], passphrase_source="config", passphrase=P12_PASSPHRASE)
    )
    data = b"pss please"
    signature = await signer.sign(data, pss=True)
    verify_signature(key_pki.leaves["rsa"].certificate, data, signature, pss=True)


async def test_key_is_parsed_once(pkcs12_files: dict[str, Path], key_pki: KeyPki) -> None:
    path = pkcs12_files["ec"]
    copy = path.with_name("ec-once.p12")
    copy.write_bytes(path.read_bytes())
    signer = create_signer(_config(copy, passphrase_source="config", passphrase=P12_PASSPHRASE))
    await signer.sign(b"first")
    copy.unlink()  # the file is not read again
    signature = await signer.sign(b"second")
    verify_signature(key_pki.leaves["ec"].certificate, b"second", signature)


async def test_missing_passphrase_is_key_locked(
    pkcs12_files: dict[str, Path], memory_keyring: MemoryKeyring
) -> None:
    signer = create_signer(_config(pkcs12_files["rsa"], "nobody-stored-it"))
    signer.open()  # never raises for a locked key
    assert not signer.unlocked
    info = signer.describe()
    assert (info.unlocked, info.locked_reason, info.subject) == (False, "passphrase_missing", None)
    with pytest.raises(KeyLocked) as caught:
        await signer.sign(b"x")
    assert caught.value.reason == "passphrase_missing"
    assert "'nobody-stored-it'" in caught.value.detail
    # Stored later: the next request works, no restart.
    memory_keyring.set_password("sidecar", "nobody-stored-it", P12_PASSPHRASE)
    assert await signer.sign(b"x")


async def test_wrong_passphrase_is_key_locked_and_not_logged(
    pkcs12_files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-passphrase-81"
    config = _config(pkcs12_files["rsa"], "p12-wrong", passphrase_source="config", passphrase=wrong)
    signer = create_signer(config)
    with pytest.raises(KeyLocked) as caught:
        await signer.sign(b"x")
    assert caught.value.reason == "passphrase_incorrect"
    for text in (caplog.text, str(caught.value), repr(caught.value), repr(config)):
        assert wrong not in text
        assert P12_PASSPHRASE not in text
    assert "stored in the configuration file" in caplog.text  # discouraged, said once


async def test_expired_certificate(pkcs12_files: dict[str, Path]) -> None:
    signer = create_signer(
        _config(pkcs12_files["expired"], passphrase_source="config", passphrase=P12_PASSPHRASE)
    )
    signer.open()
    assert signer.describe().certificate_status == "expired"
    with pytest.raises(CertificateNotValid) as caught:
        await signer.sign(b"x")
    assert caught.value.reason == "expired"
    assert caught.value.not_after < dt.datetime.now(dt.UTC)


def test_not_yet_valid(pkcs12_files: dict[str, Path]) -> None:
    signer = create_signer(
        _config(pkcs12_files["rsa"], passphrase_source="config", passphrase=P12_PASSPHRASE)
    )
    signer.open()
    with pytest.raises(CertificateNotValid) as caught:
        signer.check_validity(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    assert caught.value.reason == "not_yet_valid"


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.p12"
    signer = create_signer(_config(missing, passphrase_source="none"))
    with pytest.raises(KeyConfigError) as caught:
        signer.open()
    assert str(missing) in caught.value.detail
    assert caught.value.path == str(missing)


def test_not_a_pkcs12_file(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.p12"
    bogus.write_text("hello")
    signer = create_signer(_config(bogus, passphrase_source="none"))
    with pytest.raises(KeyConfigError, match="is not a PKCS#12 file"):
        signer.open()


async def test_concurrent_signatures(pkcs12_files: dict[str, Path], key_pki: KeyPki) -> None:
    signer = create_signer(
        _config(pkcs12_files["ec"], passphrase_source="config", passphrase=P12_PASSPHRASE)
    )
    assert isinstance(signer, Pkcs12Signer)
    messages = [f"message {i}".encode() for i in range(50)]
    signatures = await asyncio.gather(*(signer.sign(m) for m in messages))
    for message, signature in zip(messages, signatures, strict=True):
        verify_signature(key_pki.leaves["ec"].certificate, message, signature)
