"""Several keys (physicians, a delegate), one default, closed on shutdown."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.keys import KeyConfig, KeyConfigError, KeyNotFound, KeyRegistry
from tests.fixtures.softhsm import (
    MAIN_PIN,
    MAIN_TOKEN,
    P12_PASSPHRASE,
    KeyPki,
    SoftHsm,
    verify_signature,
)


def _p12(key_id: str, path: Path, *, default: bool = False) -> KeyConfig:
    return KeyConfig(
        id=key_id,
        backend="pkcs12",
        path=path,
        passphrase_source="config",
        passphrase=P12_PASSPHRASE,
        default=default,
    )


async def test_several_keys_one_default(
    softhsm: SoftHsm, pkcs12_files: dict[str, Path], key_pki: KeyPki
) -> None:
    registry = KeyRegistry.from_configs(
        [
            _p12("dr-a", pkcs12_files["rsa"]),
            _p12("dr-b", pkcs12_files["ec"], default=True),
            KeyConfig(
                id="dr-c-card",
                backend="pkcs11",
                module=softhsm.module,
                token_label=MAIN_TOKEN,
                key_id="01",
                pin_source="config",
                pin=MAIN_PIN,
                description="Dr C (LuxTrust card)",
            ),
        ]
    )
    await registry.open()
    try:
        assert registry.default_id == "dr-b"
        assert registry.get().id == "dr-b"
        assert len(registry) == 3
        infos = {info.id: info for info in registry.describe()}
        assert infos["dr-b"].default and not infos["dr-a"].default
        assert infos["dr-c-card"].description == "Dr C (LuxTrust card)"
        assert all(info.unlocked for info in infos.values())
        for key_id, leaf in (("dr-a", "rsa"), ("dr-b", "ec"), ("dr-c-card", "rsa")):
            signature = await registry.get(key_id).sign(b"hello")
            verify_signature(key_pki.leaves[leaf].certificate, b"hello", signature)
        with pytest.raises(KeyNotFound):
            registry.get("dr-z")
    finally:
        await registry.close()
    assert not registry.get("dr-a").unlocked
    assert not registry.get("dr-c-card").unlocked


async def test_a_single_key_is_the_default(pkcs12_files: dict[str, Path]) -> None:
    registry = KeyRegistry.from_configs([_p12("only", pkcs12_files["rsa"])])
    assert registry.get().id == "only"


def test_duplicate_ids_and_defaults(pkcs12_files: dict[str, Path]) -> None:
    with pytest.raises(KeyConfigError, match="configured twice"):
        KeyRegistry.from_configs([_p12("a", pkcs12_files["rsa"]), _p12("a", pkcs12_files["ec"])])
    with pytest.raises(KeyConfigError, match="several keys are marked default"):
        KeyRegistry.from_configs(
            [
                _p12("a", pkcs12_files["rsa"], default=True),
                _p12("b", pkcs12_files["ec"], default=True),
            ]
        )


async def test_no_default_among_several(pkcs12_files: dict[str, Path]) -> None:
    registry = KeyRegistry.from_configs(
        [_p12("a", pkcs12_files["rsa"]), _p12("b", pkcs12_files["ec"])]
    )
    with pytest.raises(KeyNotFound):
        registry.get()


async def test_open_fails_on_a_misconfigured_key(
    tmp_path: Path, pkcs12_files: dict[str, Path]
) -> None:
    registry = KeyRegistry.from_configs(
        [
            _p12("good", pkcs12_files["rsa"]),
            KeyConfig(
                id="bad",
                backend="pkcs11",
                module=tmp_path / "gclib.dll",
                key_id="01",
                pin_source="pinpad",
            ),
        ]
    )
    with pytest.raises(KeyConfigError, match=r"gclib\.dll"):
        await registry.open()
    assert not registry.get("good").unlocked  # closed again
