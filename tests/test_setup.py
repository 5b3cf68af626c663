"""``sidecar setup``: a real SoftHSM2 token and PKCS#12 files, flags and a terminal.

Every run is a real ``python -m sidecar setup`` process whose OS secret store is
keyrings.alt's file backend (``PYTHON_KEYRING_BACKEND``) in a temp directory: the
same store the daemon started afterwards reads. The interactive path runs on a
pseudo-terminal (pexpect), as a person would type.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

from sidecar.config import Settings
from sidecar.keys import KeyConfig
from sidecar.keys.discovery import (
    MODULE_CANDIDATES,
    FoundModule,
    ModuleCandidate,
    find_modules,
)
from sidecar.setup.toml_out import render_settings
from tests.fixtures.cns import SimulatorThread
from tests.fixtures.daemon import DaemonProcess
from tests.fixtures.sandbox import free_port
from tests.fixtures.softhsm import (
    MAIN_PIN,
    MAIN_TOKEN,
    P12_PASSPHRASE,
    PINS_PIN,
    PINS_TOKEN,
    SoftHsm,
)

TSA_PASSWORD = "tsa-password-Hq27"
CNS_TOKEN = "cns-bearer-Wd83"


@pytest.fixture
def setup_env(tmp_path: Path, softhsm: SoftHsm) -> dict[str, str]:
    """SIDECAR_HOME and a file-backed OS secret store, private to the test."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        **os.environ,
        "SIDECAR_HOME": str(home),
        "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring",
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "SOFTHSM2_CONF": str(softhsm.conf),
        "COLUMNS": "120",
    }


def run_sidecar(
    env: dict[str, str], *args: str, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        env={**env, **(extra or {})},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def stored(env: dict[str, str], entry: str) -> str | None:
    """What the test's OS secret store holds under *entry*, read by another process."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, keyring, sys; "
            "print(json.dumps(keyring.get_password('sidecar', sys.argv[1])))",
            entry,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    value: str | None = json.loads(done.stdout)
    return value


def config_of(env: dict[str, str]) -> Path:
    return Path(env["SIDECAR_HOME"]) / "sidecar.toml"


def assert_no_secret(file: Path, *secrets: str) -> None:
    text = file.read_text()
    for secret in secrets:
        assert secret not in text
    assert file.stat().st_mode & 0o077 == 0


def test_non_interactive_softhsm_key_the_daemon_can_use(
    setup_env: dict[str, str],
    softhsm: SoftHsm,
    cns_simulator: SimulatorThread,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    closed_tsa = f"http://127.0.0.1:{free_port()}/tsa"
    done = run_sidecar(
        setup_env,
        "setup", "--non-interactive",
        "--module", str(softhsm.module), "--token-label", MAIN_TOKEN, "--key-id", "01",
        "--key-name", "dr-rsa", "--pin-env", "TEST_PIN",
        "--tsa-url", closed_tsa, "--tsa-username", "cabinet",
        "--tsa-password-env", "TEST_TSA_PW", "--tsa-policy", "1.2.3.4.1",
        "--cns-environment", "test", "--cns-url", cns_simulator.url,
        "--cns-auth", "bearer", "--cns-token-env", "TEST_CNS_TOKEN",
        extra={"TEST_PIN": MAIN_PIN, "TEST_TSA_PW": TSA_PASSWORD, "TEST_CNS_TOKEN": CNS_TOKEN},
    )  # fmt: skip
    output = done.stdout + done.stderr
    # The key signed during setup; doctor ran: only the daemon (not started) is broken.
    assert "key 'dr-rsa' signs: " in output and "Dr Test rsa" in output
    assert "sidecar doctor" in output and "BROKEN: daemon" in output, output
    assert re.search(r"ok +key:dr-rsa +present and unlocked", output), output
    assert re.search(r"ok +cns ", output), output  # the simulator, with the stored token
    assert done.returncode == 0, output

    file = config_of(setup_env)
    assert_no_secret(file, MAIN_PIN, TSA_PASSWORD, CNS_TOKEN)
    document = tomllib.loads(file.read_text())
    (key,) = document["keys"]
    assert key["backend"] == "pkcs11" and key["pin_source"] == "keyring"
    assert key["key_id"] == "01" and key["token_label"] == MAIN_TOKEN
    assert document["trust"]["tsa"][0]["password_keyring"] == "tsa:127.0.0.1"
    assert document["cns"]["auth"]["token_keyring"] == "cns:test:token"

    assert stored(setup_env, "dr-rsa") == MAIN_PIN
    assert stored(setup_env, "tsa:127.0.0.1") == TSA_PASSWORD
    assert stored(setup_env, "cns:test:token") == CNS_TOKEN

    check = run_sidecar(setup_env, "config", "check", "--config", str(file))
    assert check.returncode == 0, check.stderr

    # The daemon reads the file and every secret from the store: it would refuse to
    # start without the TSA password or the CNS token, and lists the key unlocked.
    daemon = daemon_factory(Path(setup_env["SIDECAR_HOME"]), env=setup_env)
    request = urllib.request.Request(
        f"{daemon.base_url}/v1/keys", headers={"Authorization": f"Bearer {daemon.token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        keys = json.load(response)["keys"]
    assert [(k["id"], k["backend"], k["unlocked"]) for k in keys] == [("dr-rsa", "pkcs11", True)]
    assert "Dr Test rsa" in keys[0]["subject"]
    assert daemon.stop() == 0
    for secret in (MAIN_PIN, TSA_PASSWORD, CNS_TOKEN):
        assert secret not in daemon.log_text()


def test_non_interactive_pkcs12_wrong_passphrase_writes_nothing(
    setup_env: dict[str, str], pkcs12_files: dict[str, Path]
) -> None:
    flags = ["setup", "--non-interactive", "--p12", str(pkcs12_files["ec"]),
             "--key-name", "dr-ec", "--p12-passphrase-env", "TEST_P12",
             "--no-tsa", "--no-cns", "--no-doctor"]  # fmt: skip
    wrong = run_sidecar(setup_env, *flags, extra={"TEST_P12": "not-the-passphrase"})
    assert wrong.returncode == 2
    assert "passphrase does not open" in wrong.stderr and "nothing written" in wrong.stderr
    assert not config_of(setup_env).exists()
    assert stored(setup_env, "dr-ec") is None  # the wrong one was taken back out

    right = run_sidecar(setup_env, *flags, extra={"TEST_P12": P12_PASSPHRASE})
    assert right.returncode == 0, right.stderr
    assert "key 'dr-ec' signs" in right.stdout and "ec-p256" in right.stdout
    file = config_of(setup_env)
    assert_no_secret(file, P12_PASSPHRASE)
    (key,) = tomllib.loads(file.read_text())["keys"]
    assert key == {
        "id": "dr-ec",
        "backend": "pkcs12",
        "default": True,
        "path": str(pkcs12_files["ec"].resolve()),
        "passphrase_source": "keyring",
    }
    assert stored(setup_env, "dr-ec") == P12_PASSPHRASE
    keys = run_sidecar(setup_env, "keys", "list", "--json")
    assert keys.returncode == 0, keys.stderr
    assert [(k["id"], k["unlocked"]) for k in json.loads(keys.stdout)] == [("dr-ec", True)]

    # An existing configuration is not replaced without --force.
    before = file.read_bytes()
    again = run_sidecar(setup_env, *flags, extra={"TEST_P12": P12_PASSPHRASE})
    assert again.returncode == 2 and "--force" in again.stderr
    assert file.read_bytes() == before
    # --force replaces what setup asks about and keeps the rest of the file.
    file.write_text(file.read_text() + '\n[log]\nlevel = "debug"\n')
    forced = run_sidecar(setup_env, *flags, "--force", extra={"TEST_P12": P12_PASSPHRASE})
    assert forced.returncode == 0, forced.stderr
    assert tomllib.loads(file.read_text())["log"] == {"level": "debug"}


def test_interactive_asks_before_replacing(setup_env: dict[str, str]) -> None:
    file = config_of(setup_env)
    file.write_text("[server]\nport = 7555\n")
    child = pexpect.spawn(
        sys.executable, ["-m", "sidecar", "setup"], env=setup_env, encoding="utf-8", timeout=60
    )
    try:
        child.expect(r"sidecar\.toml exists\. Replace it\? \[y/N\]: ")
        child.sendline("")
        child.expect("nothing written")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 2
    assert file.read_text() == "[server]\nport = 7555\n"


def test_non_interactive_refuses_missing_answers(setup_env: dict[str, str]) -> None:
    done = run_sidecar(setup_env, "setup", "--non-interactive", "--no-key", "--no-cns")
    assert done.returncode == 2
    assert "--tsa-url" in done.stderr and "--no-tsa" in done.stderr
    assert not config_of(setup_env).exists()


def test_list_shows_tokens_and_certificates(setup_env: dict[str, str], softhsm: SoftHsm) -> None:
    done = run_sidecar(setup_env, "setup", "--list", "--module", str(softhsm.module))
    assert done.returncode == 0, done.stderr
    assert f"token '{MAIN_TOKEN}'" in done.stdout
    assert re.search(r"Dr Test rsa.*\[rsa-2048, expires \d\d/\d\d/\d{4}\]", done.stdout)
    assert "issued by" in done.stdout and "Test Intermediate" in done.stdout
    assert "label 'ec', id 02" in done.stdout and "CA certificate" in done.stdout


def test_interactive_on_a_terminal(
    setup_env: dict[str, str], softhsm: SoftHsm, cns_simulator: SimulatorThread
) -> None:
    child = pexpect.spawn(
        sys.executable, ["-m", "sidecar", "setup"], env=setup_env, encoding="utf-8", timeout=120
    )
    try:
        child.expect(r"Where is the physician's signing key\?")
        child.expect(r"choice \[1\]: ")
        child.sendline("1")  # a smartcard or token
        # The modules found at their usual places, SoftHSM2's among them.
        child.expect(r"Which PKCS#11 module \(the token's middleware\)\?")
        child.expect(r"choice \[1\]: ")
        found = re.search(rf"(\d+)\) SoftHSM2: {re.escape(str(softhsm.module))}\r\n", child.before)
        assert found is not None, child.before
        child.sendline(found.group(1))
        child.expect(r"Which certificate signs\?\r\n")
        child.expect(r"choice \[1\]: ")
        menu = child.before
        choice = re.search(rf"(\d+)\) [^\n]*Dr Test pins[^\n]*'{PINS_TOKEN}'", menu)
        assert choice is not None, menu
        child.sendline(choice.group(1))
        child.expect(r"Key id \(what API callers name it\) \[dr-test-pins\]: ")
        child.sendline("")
        child.expect(f"PIN of token '{PINS_TOKEN}'")
        child.sendline("wrong-pin-1111")
        child.expect("the token rejected the PIN")
        child.expect(r"Type it again\?.*\[Y/n\]: ")
        child.sendline("y")
        child.expect("PIN of key 'dr-test-pins'")
        child.sendline(PINS_PIN)
        child.expect("key 'dr-test-pins' signs")
        child.expect(r"TSA URL \(empty: none\): ")
        child.sendline("not a url")
        child.expect("is not an http")
        child.expect(r"TSA URL \(empty: none\): ")
        child.sendline("")
        child.expect(r"Which CNS environment\?")
        child.expect(r"choice \[1\]: ")
        child.sendline("1")
        child.expect(r"CNS test base URL: ")
        child.sendline(cns_simulator.url)
        child.expect(r"choice \[1\]: ")
        child.sendline("2")
        child.expect("CNS token")
        child.sendline(CNS_TOKEN)
        child.expect(r"Client certificate for the CNS \(PKCS#12 file\) \(empty: none\): ")
        child.sendline("")
        child.expect("wrote ")
        child.expect("BROKEN: daemon")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    file = config_of(setup_env)
    assert_no_secret(file, PINS_PIN, CNS_TOKEN)
    document = tomllib.loads(file.read_text())
    assert document["keys"][0]["key_id"] == "11"
    assert "tsa" not in document.get("trust", {})
    assert document["cns"]["base_urls"] == {"test": cns_simulator.url}
    assert stored(setup_env, "dr-test-pins") == PINS_PIN
    assert stored(setup_env, "cns:test:token") == CNS_TOKEN
    check = run_sidecar(setup_env, "config", "check")
    assert check.returncode == 0, check.stderr


def test_no_secret_store_writes_nothing(
    setup_env: dict[str, str], pkcs12_files: dict[str, Path]
) -> None:
    # A machine where keyring finds no store at all (a Linux service without
    # keyrings.alt): the secret would have nowhere to go, so nothing is written.
    env = {**setup_env, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    done = run_sidecar(
        env,
        "setup", "--non-interactive", "--p12", str(pkcs12_files["rsa"]),
        "--p12-passphrase-env", "TEST_P12", "--no-tsa", "--no-cns",
        extra={"TEST_P12": P12_PASSPHRASE},
    )  # fmt: skip
    assert done.returncode == 2
    assert "OS secret store is not available" in done.stderr
    assert "docs/production.md" in done.stderr and P12_PASSPHRASE not in done.stderr
    assert not config_of(setup_env).exists()


def test_non_interactive_finds_the_module_and_names_the_key_by_id(
    setup_env: dict[str, str],
) -> None:
    # No --module: the modules at their usual places are searched for the certificate.
    done = run_sidecar(
        setup_env,
        "setup", "--non-interactive", "--token-label", MAIN_TOKEN, "--key-label", "ec",
        "--pin-env", "TEST_PIN", "--no-tsa", "--no-cns", "--no-doctor",
        extra={"TEST_PIN": MAIN_PIN},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (key,) = tomllib.loads(config_of(setup_env).read_text())["keys"]
    softhsm_found = find_modules("SoftHSM2")[0].path
    assert (key["id"], key["key_id"], key["module"]) == ("dr-test-ec", "02", str(softhsm_found))
    assert "key_label" not in key  # by CKA_ID: a card's key label may differ from its cert's
    missing = run_sidecar(
        setup_env,
        "setup", "--non-interactive", "--force", "--token-label", MAIN_TOKEN,
        "--key-label", "nobody", "--pin-env", "TEST_PIN", "--no-tsa", "--no-cns",
        extra={"TEST_PIN": MAIN_PIN},
    )  # fmt: skip
    assert missing.returncode == 2
    assert "no certificate matches" in missing.stderr and "label 'rsa', id 01" in missing.stderr


def test_module_candidates_by_platform_each_file_once(tmp_path: Path) -> None:
    library = tmp_path / "libgclib.so"
    library.write_bytes(b"\x7fELF")
    link = tmp_path / "pkcs11" / "libgclib.so"
    link.parent.mkdir()
    link.symlink_to(library)
    candidates = [
        ModuleCandidate("LuxTrust", "win32", str(library)),  # another platform's path
        ModuleCandidate("LuxTrust", "linux", str(link)),
        ModuleCandidate("LuxTrust", "linux", str(library)),  # the same file again
        ModuleCandidate("OpenSC", "linux", str(tmp_path / "absent.so")),
    ]
    found = find_modules(candidates=candidates, platform="linux")
    assert found == [FoundModule("LuxTrust", link)]
    assert find_modules("OpenSC", candidates=candidates, platform="linux") == []
    # The real list names the LuxTrust middleware on every platform.
    for platform in ("win32", "linux", "darwin"):
        assert any(c.platform == platform and "gclib" in c.path.lower() for c in MODULE_CANDIDATES)


def test_written_text_round_trips_through_toml(tmp_path: Path) -> None:
    key = KeyConfig(
        id="dr-x",
        backend="pkcs11",
        module=Path(r"C:\Program Files\Gemalto\Classic Client\BIN\gclib.dll"),
        token_label='LuxTrust "QES" ünï',
        key_id="0a",
    )
    text = render_settings(Settings(keys=(key,)), comment="first\nsecond")
    assert text.startswith("# first\n# second\n")
    (written,) = tomllib.loads(text)["keys"]
    assert written["module"] == str(key.module) and written["token_label"] == key.token_label
    assert written["pin_source"] == "keyring"  # said, although the default
