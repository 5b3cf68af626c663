"""An HSM holding one key per physician (SoftHSM2 stands in): keys with
``load = "first_use"`` are opened by the first operation that uses them, not at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from sidecar.keys import KeyConfig, KeyRegistry
from sidecar.operations.services import key_check
from tests.fixtures.daemon import DaemonProcess
from tests.fixtures.softhsm import MAIN_PIN, MAIN_TOKEN, SO_PIN, SoftHsm
from tests.fixtures.xades import FORM

KEYS = 50
PIN = "hsm-pin-6152"
TOKEN = "hospital-hsm"

# Run in a child process with the HSM's own SOFTHSM2_CONF (SoftHSM reads it once per
# process, and this test process has its own): 50 EC keys made on the token, each
# with a certificate from one software CA.
_MAKE_KEYS = textwrap.dedent(
    """
    import datetime as dt, sys
    import pkcs11
    from pkcs11 import Attribute, KeyType, ObjectClass, CertificateType
    from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    module, label, pin, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hospital test CA")])
    now = dt.datetime.now(dt.timezone.utc)
    token = pkcs11.lib(module).get_token(token_label=label)
    with token.open(rw=True, user_pin=pin) as session:
        params = session.create_domain_parameters(
            KeyType.EC,
            {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        for n in range(1, count + 1):
            name = f"dr-{n:02d}"
            public, _ = params.generate_keypair(store=True, label=name, id=bytes([n]))
            spki = serialization.load_der_public_key(encode_ec_public_key(public))
            cert = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca_name)
                .public_key(spki)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(days=30))
                .sign(ca_key, hashes.SHA256())
            )
            session.create_object({
                Attribute.CLASS: ObjectClass.CERTIFICATE,
                Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                Attribute.TOKEN: True,
                Attribute.LABEL: name,
                Attribute.ID: bytes([n]),
                Attribute.SUBJECT: cert.subject.public_bytes(),
                Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
            })
    """
)


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory, softhsm: SoftHsm) -> dict[str, str]:
    """A SoftHSM2 of its own (token directory, conf) holding the 50 keys; the
    environment a process needs to use it."""
    base = tmp_path_factory.mktemp("hospital-hsm")
    (base / "tokens").mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    init = ["softhsm2-util", "--init-token", "--free", "--label", TOKEN]
    subprocess.run([*init, "--so-pin", SO_PIN, "--pin", PIN], env=env, check=True)
    made = subprocess.run(
        [sys.executable, "-c", _MAKE_KEYS, str(softhsm.module), TOKEN, PIN, str(KEYS)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    return env


def _keys_toml(module: Path) -> str:
    tables = [
        f'[[keys]]\nid = "dr-{n:02d}"\nbackend = "pkcs11"\nmodule = "{module}"\n'
        f'token_label = "{TOKEN}"\nkey_label = "dr-{n:02d}"\npin_source = "config"\n'
        f'pin = "{PIN}"\nload = "first_use"\n'
        for n in range(1, KEYS + 1)
    ]
    return '[log]\nlevel = "info"\n\n' + "\n".join(tables)


def _call(daemon: DaemonProcess, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        daemon.base_url + path,
        data=body,
        headers={"Authorization": f"Bearer {daemon.token}", "Content-Type": "application/xml"},
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_fifty_keys_open_on_first_use(
    tmp_path: Path,
    hsm: dict[str, str],
    softhsm: SoftHsm,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "sidecar.toml").write_text(_keys_toml(softhsm.module))
    daemon = daemon_factory(home, env={"SOFTHSM2_CONF": hsm["SOFTHSM2_CONF"]})
    # Started, listening: and not one key logged in (each login is one log line).
    assert daemon.log_text().count("logged in to token") == 0

    status, body = _call(daemon, "/v1/keys")
    assert status == 200
    keys = {k["id"]: k for k in json.loads(body)["keys"]}
    assert len(keys) == KEYS
    assert not any(k["opened"] or k["unlocked"] for k in keys.values())

    status, signed = _call(daemon, "/v1/xml/sign?key=dr-37&level=B-B", FORM)
    assert status == 200, signed
    assert b"<ds:Signature" in signed
    logins = [line for line in daemon.log_text().splitlines() if "logged in to token" in line]
    assert len(logins) == 1 and "dr-37" in logins[0]

    status, body = _call(daemon, "/v1/keys")
    keys = {k["id"]: k for k in json.loads(body)["keys"]}
    assert [i for i, k in keys.items() if k["opened"]] == ["dr-37"]
    assert keys["dr-37"]["unlocked"] and keys["dr-37"]["subject"].endswith("dr-37")
    # Naming no key, with 50 and none the default: 404, nothing opened.
    status, _ = _call(daemon, "/v1/xml/sign?level=B-B", FORM)
    assert status == 404
    assert daemon.stop() == 0


async def test_a_first_use_key_is_opened_by_its_first_operation(softhsm: SoftHsm) -> None:
    def config(name: str, label: str, load: str) -> KeyConfig:
        return KeyConfig(
            id=name,
            backend="pkcs11",
            module=softhsm.module,
            token_label=MAIN_TOKEN,
            key_label=label,
            pin_source="config",
            pin=MAIN_PIN,
            load=load,  # type: ignore[arg-type]
        )

    registry = KeyRegistry.from_configs(
        [config("at-start", "rsa", "start"), config("later", "ec", "first_use")]
    )
    await registry.open()
    try:
        described = {i.id: i for i in registry.describe()}
        assert described["at-start"].opened and described["at-start"].unlocked
        assert not described["later"].opened and not described["later"].unlocked
        assert described["later"].subject is None
        # Not used yet is not a fault: the keys health check stays ok.
        assert key_check(registry).status == "ok", key_check(registry).detail
        signer = await registry.acquire("later")
        assert signer.unlocked
        assert len(await signer.sign(b"document")) > 0
        assert registry.get("later").describe().opened
    finally:
        await registry.close()
