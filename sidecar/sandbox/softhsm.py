"""The sandbox's RSA signer again, on a SoftHSM2 token, when SoftHSM2 is installed.

Vendors integrating a smartcard want to see the PKCS#11 path work before they
touch a real card: this token holds the same key and certificate as
``sandbox-rsa``, so both backends sign as the same (test) physician.

SoftHSM reads ``SOFTHSM2_CONF`` once, when the module is first loaded in a
process. The sandbox token is therefore only offered when that variable is
unset (we set it) or already points at the sandbox's own configuration.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..keys.discovery import find_modules
from .pki import SandboxError, SandboxPKI

__all__ = ["SandboxToken", "ensure_sandbox_token", "find_softhsm_module"]

log = logging.getLogger("sidecar.sandbox")

TOKEN_LABEL = "sidecar-sandbox"
KEY_LABEL = "sandbox-rsa"
KEY_ID = "01"


@dataclass(frozen=True)
class SandboxToken:
    """Where the sandbox token is and how to log in to it (a sandbox: the PIN is on disk)."""

    conf: Path
    module: Path
    token_label: str
    key_label: str
    key_id: str
    pin: str


def find_softhsm_module() -> Path | None:
    # The one list of module locations is the keys layer's (sidecar setup uses it too).
    found = find_modules("SoftHSM2")
    return found[0].path if found else None


def _run(command: list[str], conf: Path) -> None:
    result = subprocess.run(
        command,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        # The command line holds the PIN: name the tool only.
        raise SandboxError(
            f"{Path(command[0]).name} failed while making the sandbox token: "
            f"{(result.stderr or result.stdout).strip()[:300]}"
        )


def ensure_sandbox_token(pki: SandboxPKI) -> SandboxToken | None:
    """The sandbox token, made once under ``pki.directory/softhsm``; ``None`` without SoftHSM.

    Blocking (runs the SoftHSM tools); call it from a worker thread.
    """
    module = find_softhsm_module()
    tools = [shutil.which("softhsm2-util"), shutil.which("pkcs11-tool")]
    if module is None or None in tools:
        return None
    directory = pki.directory / "softhsm"
    conf = directory / "softhsm2.conf"
    current = os.environ.get("SOFTHSM2_CONF")
    if current and Path(current) != conf:
        log.info("SOFTHSM2_CONF names another configuration: no sandbox SoftHSM token")
        return None
    metadata = directory / "token.json"
    if not metadata.exists():
        _make_token(pki, directory, module, tools[0] or "", tools[1] or "")
    pin = json.loads(metadata.read_text())["pin"]
    return SandboxToken(conf, module, TOKEN_LABEL, KEY_LABEL, KEY_ID, pin)


def _make_token(pki: SandboxPKI, directory: Path, module: Path, util: str, tool: str) -> None:
    signer = pki.signers["sandbox-rsa"]
    # Built aside and renamed into place, like the PKI: a crash leaves no half token.
    work = Path(tempfile.mkdtemp(prefix=".softhsm-", dir=pki.directory))
    try:
        tokens = work / "tokens"
        tokens.mkdir(mode=0o700)
        # SoftHSM stores the absolute token directory: write the final one.
        conf = work / "softhsm2.conf"
        final_tokens = directory / "tokens"
        conf.write_text(f"directories.tokendir = {final_tokens}\nobjectstore.backend = file\n")
        work_conf = work / "work.conf"
        work_conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
        pin, so_pin = secrets.token_hex(4), secrets.token_hex(8)
        _run(
            [
                util,
                "--init-token",
                "--free",
                "--label",
                TOKEN_LABEL,
                "--so-pin",
                so_pin,
                "--pin",
                pin,
            ],
            work_conf,
        )
        _run(
            [
                util, "--import", str(signer.key_pem), "--token", TOKEN_LABEL,
                "--label", KEY_LABEL, "--id", KEY_ID, "--pin", pin,
            ],
            work_conf,
        )  # fmt: skip
        cert = x509.load_pem_x509_certificate(signer.cert_pem.read_bytes())
        cert_der = work / "cert.der"
        cert_der.write_bytes(cert.public_bytes(serialization.Encoding.DER))
        _run(
            [
                tool, "--module", str(module), "--token-label", TOKEN_LABEL, "--login",
                "--pin", pin, "--write-object", str(cert_der), "--type", "cert",
                "--id", KEY_ID, "--label", KEY_LABEL,
            ],
            work_conf,
        )  # fmt: skip
        cert_der.unlink()
        work_conf.unlink()
        fd = os.open(work / "token.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"pin": pin, "note": "sandbox token: not for real signatures"}, handle)
        os.chmod(work, 0o700)
        os.replace(work, directory)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
