"""PKCS#11 signer against a real SoftHSM2 token."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pkcs11
import pytest
from pkcs11 import TokenFlag

from sidecar.keys import CertificateNotValid, KeyConfig, KeyLocked, create_signer, pkcs11_module
from sidecar.keys.pkcs11_module import load_module
from sidecar.keys.pkcs11_token import Pkcs11Signer, check_pin_flags
from tests.fixtures.softhsm import (
    MAIN_PIN,
    MAIN_TOKEN,
    PINS_PIN,
    PINS_TOKEN,
    REMOVABLE_PIN,
    REMOVABLE_TOKEN,
    WRONG_PIN,
    KeyPki,
    MemoryKeyring,
    SoftHsm,
    verify_signature,
)


def _config(hsm: SoftHsm, name: str, token: str, **kwargs: object) -> KeyConfig:
    return KeyConfig(id=name, backend="pkcs11", module=hsm.module, token_label=token, **kwargs)  # type: ignore[arg-type]


def _flags(hsm: SoftHsm, token: str) -> TokenFlag:
    return load_module(hsm.module).lib.get_token(token_label=token).flags


@pytest.fixture(scope="module")
def main_signers(softhsm: SoftHsm) -> Iterator[dict[str, Pkcs11Signer]]:
    """``rsa`` by label, ``ec`` by id, ``expired``: all on the main token, PIN from config."""
    configs = {
        "rsa": _config(
            softhsm, "hsm-rsa", MAIN_TOKEN, key_label="rsa", pin_source="config", pin=MAIN_PIN
        ),
        "ec": _config(
            softhsm, "hsm-ec", MAIN_TOKEN, key_id="02", pin_source="config", pin=MAIN_PIN
        ),
        "expired": _config(
            softhsm,
            "hsm-expired",
            MAIN_TOKEN,
            key_label="expired",
            pin_source="config",
            pin=MAIN_PIN,
        ),
    }
    signers = {name: create_signer(config) for name, config in configs.items()}
    yield signers  # type: ignore[misc]
    for signer in signers.values():
        signer.close()


@pytest.mark.parametrize(("name", "key_type"), [("rsa", "rsa-2048"), ("ec", "ec-p256")])
async def test_signs_and_verifies(
    name: str, key_type: str, main_signers: dict[str, Pkcs11Signer], key_pki: KeyPki
) -> None:
    signer = main_signers[name]
    data = b"<fee-note>pkcs11</fee-note>"
    signature = await signer.sign(data)
    leaf = key_pki.leaves[name].certificate
    verify_signature(leaf, data, signature)
    assert signer.key_type == key_type
    assert signer.crypto_certificate == leaf
    # The chain comes from the certificates on the token.
    assert [c.dump() for c in signer.chain] == [
        key_pki.intermediate.cert_file.read_bytes(),
        key_pki.root.cert_file.read_bytes(),
    ]
    info = signer.describe()
    assert (info.backend, info.unlocked, info.key_type) == ("pkcs11", True, key_type)


async def test_rsa_pss(main_signers: dict[str, Pkcs11Signer], key_pki: KeyPki) -> None:
    data = b"pss on the token"
    signature = await main_signers["rsa"].sign(data, pss=True)
    verify_signature(key_pki.leaves["rsa"].certificate, data, signature, pss=True)


@pytest.mark.parametrize("name", ["rsa", "ec"])
async def test_fifty_concurrent_signatures(
    name: str, main_signers: dict[str, Pkcs11Signer], key_pki: KeyPki
) -> None:
    signer = main_signers[name]
    messages = [f"concurrent {i}".encode() for i in range(50)]
    # Half through the async API, half as a worker thread would (signxml): one session.
    signatures = await asyncio.gather(
        *(
            signer.sign(m) if i % 2 else asyncio.to_thread(signer.sign_blocking, m)
            for i, m in enumerate(messages)
        )
    )
    for message, signature in zip(messages, signatures, strict=True):
        verify_signature(key_pki.leaves[name].certificate, message, signature)


async def test_sign_does_not_block_the_event_loop(main_signers: dict[str, Pkcs11Signer]) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.gather(*(main_signers["rsa"].sign(b"%d" % i) for i in range(30)))
    task.cancel()
    assert ticks > 30  # the loop kept turning while the token worked


async def test_expired_certificate(main_signers: dict[str, Pkcs11Signer]) -> None:
    with pytest.raises(CertificateNotValid) as caught:
        await main_signers["expired"].sign(b"x")
    assert caught.value.reason == "expired"
    assert main_signers["expired"].describe().certificate_status == "expired"


async def test_missing_pin_reports_the_certificate(
    softhsm: SoftHsm, memory_keyring: MemoryKeyring
) -> None:
    signer = create_signer(_config(softhsm, "hsm-nopin", PINS_TOKEN, key_label="pins"))
    try:
        signer.open()
        info = signer.describe()
        assert (info.unlocked, info.locked_reason) == (False, "pin_missing")
        assert info.subject is not None and "Dr Test pins" in info.subject  # read without login
        with pytest.raises(KeyLocked) as caught:
            await signer.sign(b"x")
        assert caught.value.reason == "pin_missing"
        assert "'hsm-nopin'" in caught.value.detail
    finally:
        signer.close()


async def test_wrong_pin(
    softhsm: SoftHsm,
    key_pki: KeyPki,
    memory_keyring: MemoryKeyring,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    memory_keyring.set_password("sidecar", "hsm-pins", WRONG_PIN)
    signer = create_signer(_config(softhsm, "hsm-pins", PINS_TOKEN, key_label="pins"))
    try:
        with pytest.raises(KeyLocked) as first:
            await signer.sign(b"x")
        assert first.value.reason == "pin_incorrect"
        # SoftHSM reports a failed try with CKF_USER_PIN_COUNT_LOW (and has no lockout).
        assert first.value.token_flags == ("CKF_USER_PIN_COUNT_LOW",)
        assert first.value.retries_left is None
        assert _flags(softhsm, PINS_TOKEN) & TokenFlag.USER_PIN_COUNT_LOW

        # The same wrong PIN is not presented again.
        with pytest.raises(KeyLocked) as second:
            await signer.sign(b"x")
        assert second.value.reason == "pin_incorrect"
        assert "not presented again" in second.value.detail

        # Fixed in the keyring: recovers without a restart; the counter is reset.
        memory_keyring.set_password("sidecar", "hsm-pins", PINS_PIN)
        signature = await signer.sign(b"x")
        verify_signature(key_pki.leaves["pins"].certificate, b"x", signature)
        assert not _flags(softhsm, PINS_TOKEN) & TokenFlag.USER_PIN_COUNT_LOW

        exceptions = [first.value, second.value]
        for text in [caplog.text, *map(str, exceptions), *map(repr, exceptions)]:
            assert WRONG_PIN not in text
            assert PINS_PIN not in text
    finally:
        signer.close()  # logs out, so that the next test's login is a real one


class FinalTrySigner(Pkcs11Signer):
    """SoftHSM never sets CKF_USER_PIN_FINAL_TRY (it has no retry limit), so this
    seam adds it to the real token's flags; everything else is the real token."""

    def _token_flags(self, token: pkcs11.Token) -> TokenFlag:
        return super()._token_flags(token) | TokenFlag.USER_PIN_FINAL_TRY


async def test_final_try_is_not_tried(softhsm: SoftHsm, memory_keyring: MemoryKeyring) -> None:
    assert not _flags(softhsm, PINS_TOKEN) & TokenFlag.USER_PIN_COUNT_LOW
    memory_keyring.set_password("sidecar", "hsm-final", WRONG_PIN)
    signer = FinalTrySigner(_config(softhsm, "hsm-final", PINS_TOKEN, key_label="pins"))
    try:
        with pytest.raises(KeyLocked) as caught:
            await signer.sign(b"x")
        assert caught.value.reason == "pin_final_try"
        assert caught.value.retries_left == 1
        assert "CKF_USER_PIN_FINAL_TRY" in caught.value.token_flags
        assert "will not present" in caught.value.detail
        # Proof that no C_Login happened: a wrong PIN would have set COUNT_LOW.
        assert not _flags(softhsm, PINS_TOKEN) & TokenFlag.USER_PIN_COUNT_LOW
    finally:
        signer.close()


async def test_token_removed_then_back(
    softhsm: SoftHsm,
    key_pki: KeyPki,
    memory_keyring: MemoryKeyring,
    monkeypatch: pytest.MonkeyPatch,
    main_signers: dict[str, Pkcs11Signer],
) -> None:
    monkeypatch.setattr(pkcs11_module, "REINITIALIZE_INTERVAL", 0.0)
    memory_keyring.set_password("sidecar", "hsm-removable", REMOVABLE_PIN)
    signer = create_signer(_config(softhsm, "hsm-removable", REMOVABLE_TOKEN, key_id="21"))
    leaf = key_pki.leaves["removable"].certificate
    token_dir = softhsm.token_dirs[REMOVABLE_TOKEN]
    away: Path = softhsm.token_dir.parent / "pulled-out"
    try:
        verify_signature(leaf, b"before", await signer.sign(b"before"))

        token_dir.rename(away)  # the stick is pulled out
        try:
            for _ in range(2):  # stays locked, does not crash, however often asked
                with pytest.raises(KeyLocked) as caught:
                    await signer.sign(b"during")
                assert caught.value.reason == "token_absent"
            info = signer.describe()
            assert (info.unlocked, info.locked_reason) == (False, "token_absent")
            assert info.subject is not None  # still known from before
        finally:
            away.rename(token_dir)  # and put back

        verify_signature(leaf, b"after", await signer.sign(b"after"))
        assert signer.describe().unlocked
        # Keys on other tokens of the same module survive the re-initialization.
        data = b"other token"
        verify_signature(
            key_pki.leaves["rsa"].certificate, data, await main_signers["rsa"].sign(data)
        )
    finally:
        signer.close()


def test_token_absent_at_start(softhsm: SoftHsm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pkcs11_module, "REINITIALIZE_INTERVAL", 0.0)
    signer = create_signer(
        _config(softhsm, "hsm-ghost", "no-such-token", key_label="x", pin_source="pinpad")
    )
    signer.open()
    info = signer.describe()
    assert (info.unlocked, info.locked_reason, info.certificate_status) == (
        False,
        "token_absent",
        "unknown",
    )
    with pytest.raises(KeyLocked, match="no token label 'no-such-token'"):
        signer.sign_blocking(b"x")
    signer.close()


def test_pinpad_without_protected_path(softhsm: SoftHsm) -> None:
    signer = create_signer(
        _config(softhsm, "hsm-pinpad", PINS_TOKEN, key_label="pins", pin_source="pinpad")
    )
    with pytest.raises(KeyLocked) as caught:
        signer.sign_blocking(b"x")
    assert caught.value.reason == "pinpad_unavailable"
    signer.close()


def test_config_pin_is_warned_about_and_never_logged(
    softhsm: SoftHsm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = _config(
        softhsm, "hsm-warned", MAIN_TOKEN, key_label="rsa", pin_source="config", pin=MAIN_PIN
    )
    signer = create_signer(config)
    signer.sign_blocking(b"x")
    signer.close()
    assert "stored in the configuration file" in caplog.text
    assert MAIN_PIN not in caplog.text
    assert MAIN_PIN not in repr(config)


@pytest.mark.parametrize(
    ("flags", "pinpad", "reason", "retries"),
    [
        (TokenFlag.USER_PIN_LOCKED, False, "pin_locked", 0),
        (TokenFlag.USER_PIN_LOCKED, True, "pin_locked", 0),
        (TokenFlag.USER_PIN_FINAL_TRY | TokenFlag.USER_PIN_COUNT_LOW, False, "pin_final_try", 1),
        # Through a pinpad the physician types the PIN: their call, not ours.
        (TokenFlag.USER_PIN_FINAL_TRY, True, None, None),
        (TokenFlag.USER_PIN_COUNT_LOW, False, None, None),
        (TokenFlag(0), False, None, None),
    ],
)
def test_pin_flag_decision(
    flags: TokenFlag, pinpad: bool, reason: str | None, retries: int | None
) -> None:
    if reason is None:
        check_pin_flags(flags, key_id="k", pinpad=pinpad)
        return
    with pytest.raises(KeyLocked) as caught:
        check_pin_flags(flags, key_id="k", pinpad=pinpad)
    assert (caught.value.reason, caught.value.retries_left) == (reason, retries)
