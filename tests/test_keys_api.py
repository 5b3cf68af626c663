"""GET /v1/keys, key errors as problem+json, and the sandbox's keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from sidecar.config import Settings
from sidecar.keys import KeyConfig, KeyLocked
from sidecar.sandbox.pki import SandboxPKI
from tests.fixtures.daemon import Api, DaemonProcess


async def test_sandbox_keys_listed(sandbox_api: Api, sandbox_pki: SandboxPKI) -> None:
    response = await sandbox_api.client.get("/v1/keys", headers=sandbox_api.auth("signer"))
    assert response.status == 200
    keys = {k["id"]: k for k in (await response.json())["keys"]}
    rsa, ec = keys["sandbox-rsa"], keys["sandbox-ec"]
    cert = x509.load_pem_x509_certificate(sandbox_pki.signers["sandbox-rsa"].cert_pem.read_bytes())
    assert rsa["backend"] == "pkcs12" and rsa["default"] is True
    assert rsa["key_type"] == "rsa-2048" and ec["key_type"] == "ec-p256"
    assert rsa["serial"] == format(cert.serial_number, "x")
    assert rsa["unlocked"] is True and rsa["certificate_status"] == "valid"
    assert rsa["not_after"].startswith(cert.not_valid_after_utc.date().isoformat())
    assert rsa["days_to_expiry"] > 30
    for field in ("subject", "issuer", "not_before"):
        assert rsa[field]
    # The passphrase is configuration, never an answer.
    passphrase = sandbox_pki.signers["sandbox-rsa"].p12_passphrase
    assert passphrase not in json.dumps(keys)


async def test_keys_need_sign_scope(sandbox_api: Api) -> None:
    response = await sandbox_api.client.get("/v1/keys", headers=sandbox_api.auth("verifier"))
    assert response.status == 403


async def test_locked_key_is_reported_not_crashed(api_factory, sandbox_pki: SandboxPKI) -> None:  # type: ignore[no-untyped-def]
    signer = sandbox_pki.signers["sandbox-rsa"]
    wrong = KeyConfig(
        id="wrong",
        backend="pkcs12",
        path=signer.p12,
        passphrase_source="config",
        passphrase="not-the-passphrase",
    )
    api = await api_factory(Settings(keys=(wrong,)))
    keys = (await (await api.client.get("/v1/keys", headers=api.auth())).json())["keys"]
    assert keys[0]["unlocked"] is False
    assert keys[0]["locked_reason"] == "passphrase_incorrect"
    assert "not-the-passphrase" not in json.dumps(keys)


async def test_key_errors_map_to_problems(api: Api) -> None:
    from sidecar.api.problems import problem_for

    problem = problem_for(KeyLocked("pin_incorrect", "wrong PIN", key_id="k", retries_left=2))
    assert problem is not None and problem.status == 423 and problem.code == "key_locked"
    assert problem.body()["retries_left"] == 2


def test_cli_keys_list_and_test(
    tmp_path: Path, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    from tests.fixtures.daemon import free_port

    home = tmp_path / "home"
    home.mkdir()
    (home / "sidecar.toml").write_text(f"[sandbox]\nport = {free_port()}\n")
    daemon = daemon_factory(home, "--sandbox")
    daemon.stop()
    env = {**os.environ, "SIDECAR_HOME": str(home)}
    env.pop("SOFTHSM2_CONF", None)
    listed = subprocess.run(
        [sys.executable, "-m", "sidecar", "keys", "list", "--sandbox", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    ids = {k["id"]: k for k in json.loads(listed.stdout)}
    assert {"sandbox-rsa", "sandbox-ec"} <= set(ids)
    for key_id in ids:
        tested = subprocess.run(
            [sys.executable, "-m", "sidecar", "keys", "test", key_id, "--sandbox"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert tested.returncode == 0, tested.stderr
        assert "signature verified" in tested.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "sidecar", "keys", "test", "nobody", "--sandbox"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert missing.returncode == 2 and "nobody" in missing.stderr


async def test_signing_with_a_locked_key_is_423_and_recovers(
    api_factory, sandbox_pki: SandboxPKI, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A PKCS#12 file whose passphrase is wrong (a locked key) answers 423 with the
    reason; the passphrase fixed in the OS secret store, the same daemon signs."""
    import keyring

    from tests.fixtures.softhsm import MemoryKeyring

    signer = sandbox_pki.signers["sandbox-rsa"]
    store = MemoryKeyring()
    previous = keyring.get_keyring()
    keyring.set_keyring(store)
    try:
        store.set_password("sidecar", "dr-locked", "not-the-passphrase")
        locked = KeyConfig(id="dr-locked", backend="pkcs12", path=signer.p12)
        api = await api_factory(Settings(keys=(locked,)))
        headers = {"Content-Type": "application/xml", **api.auth("signer")}
        response = await api.client.post("/v1/xml/sign?level=B-B", data=b"<a/>", headers=headers)
        assert response.status == 423
        problem = await response.json()
        assert problem["code"] == "key_locked" and problem["reason"] == "passphrase_incorrect"
        assert "not-the-passphrase" not in json.dumps(problem)
        store.set_password("sidecar", "dr-locked", signer.p12_passphrase)
        response = await api.client.post("/v1/xml/sign?level=B-B", data=b"<a/>", headers=headers)
        assert response.status == 200, await response.text()
    finally:
        keyring.set_keyring(previous)
