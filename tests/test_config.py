"""Configuration: defaults that work, and bad files refused with file, key and reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.config import ConfigError, ServerSettings, Settings, load_settings, parse_size
from sidecar.server import check_binding


def write(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "sidecar.toml"
    file.write_text(text)
    return file


def test_missing_file_gives_working_defaults(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "absent.toml")
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 7420
    assert settings.server.allow_remote is False
    assert settings.server.allowed_origins == ()
    check_binding(settings.server)  # the default binding is acceptable


def test_values_are_read(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        '[server]\nport = 7500\nallowed_origins = ["http://localhost:3000"]\n'
        '[limits]\nxml = "2 MiB"\npdf = 1000\n[log]\nformat = "json"\nfile = "logs/s.log"\n',
    )
    settings = load_settings(file)
    assert settings.server.port == 7500
    assert settings.server.allowed_origins == ("http://localhost:3000",)
    assert settings.limits.xml == 2 * 1024 * 1024
    assert settings.limits.pdf == 1000
    assert settings.log.format == "json"
    # Relative to the file, not to wherever a service manager started us.
    assert settings.log.file == tmp_path / "logs" / "s.log"


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("[server]\nprot = 7420\n", "server.prot", "did you mean 'port'"),
        ("[server]\nport = 99999\n", "server.port", "between 1 and 65535"),
        ('[server]\nport = "7420"\n', "server.port", "expected an integer"),
        ("[server]\nallow_remote = 1\n", "server.allow_remote", "true or false"),
        ('[server]\nallowed_origins = ["*"]\n', "server.allowed_origins", "no wildcard"),
        ('[log]\nformat = "xml"\n', "log.format", "one of 'text', 'json'"),
        ('[limits]\nxml = "lots"\n', "limits.xml", "a size"),
        ("[limits]\nxml = 0\n", "limits.xml", "more than 0"),
        ("[serverr]\nport = 1\n", "serverr", "unknown setting"),
        ("server = 3\n", "server", "expected a table"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    file = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(file)
    assert caught.value.key == key
    assert caught.value.file == file
    message = str(caught.value)
    assert str(file) in message and key in message and fragment in message


def test_invalid_toml_is_refused_with_position(tmp_path: Path) -> None:
    file = write(tmp_path, "[server\nport = 1\n")
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 1"):
        load_settings(file)


def test_cli_refuses_broken_file_without_traceback(tmp_path: Path) -> None:
    file = write(tmp_path, "[server]\nport = 'x'\n")
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "serve", "--config", str(file)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SIDECAR_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{file}: server.port: expected an integer" in result.stderr


def test_cli_refuses_missing_explicit_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "config", "check", "--config", str(tmp_path / "n.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SIDECAR_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "no such file" in result.stderr


def test_size_parser() -> None:
    assert parse_size("1 KiB") == 1024
    assert parse_size("20MB") == 20_000_000
    assert parse_size(5) == 5
    for bad in ("-1", "1 TB", True, 1.5, "0"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_non_loopback_bind_refused_by_default() -> None:
    with pytest.raises(ConfigError, match="allow_remote = true and TLS"):
        check_binding(ServerSettings(host="0.0.0.0"))
    with pytest.raises(ConfigError, match="needs TLS"):
        check_binding(ServerSettings(host="192.168.1.10", allow_remote=True))
    with pytest.raises(ConfigError, match="go together"):
        check_binding(ServerSettings(tls_cert=Path("/x.pem")))


def test_non_loopback_with_tls_is_accepted(tmp_path: Path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sidecar.praxis.lu")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "c.pem", tmp_path / "k.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ServerSettings(
        host="192.168.1.10", allow_remote=True, tls_cert=cert_file, tls_key=key_file
    )
    assert check_binding(server) is not None
    with pytest.raises(ConfigError, match="cannot load the TLS"):
        check_binding(ServerSettings(tls_cert=key_file, tls_key=cert_file))


def test_settings_defaults_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().server.port = 1  # type: ignore[misc]
