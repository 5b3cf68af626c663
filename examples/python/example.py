"""sidecar end to end in Python, standard library only (3.8+).

Token, UUIDs, sign a fee note with its PDF, deposit it with the CNS, follow it until
delivered, then a PID v2 simulation::

    python examples/python/example.py [BASE_URL [TOKEN_FILE]]

Environment (arguments win): SIDECAR_URL (default http://127.0.0.1:7420),
SIDECAR_TOKEN_FILE (default $SIDECAR_HOME/default.token, else the per-user location),
SIDECAR_SAMPLES (folder with fee-note.xml, fee-note.pdf, pid-simulation.xml; default
profiles/samples of the distribution), SIDECAR_WAIT_SECONDS (default 60).
Exits non-zero at the first step that fails.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent


class Failed(Exception):
    pass


def default_token_file():
    if os.environ.get("SIDECAR_TOKEN_FILE"):
        return Path(os.environ["SIDECAR_TOKEN_FILE"])
    if os.environ.get("SIDECAR_HOME"):
        return Path(os.environ["SIDECAR_HOME"]) / "default.token"
    if sys.platform == "win32":
        return Path(os.environ["LOCALAPPDATA"]) / "sidecar" / "default.token"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "sidecar" / "default.token"
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "sidecar" / "default.token"


class Sidecar:
    def __init__(self, base, token):
        self.base = base.rstrip("/")
        self.token = token

    def call(self, method, path, body=None, content_type=None):
        """One request; the answer's bytes. A status >= 400 raises with the problem+json."""
        url = path if path.startswith("http") else self.base + path
        if not url.startswith(("http://", "https://")):
            raise Failed(f"{url!r} is not an http(s) URL")
        request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 (checked)
        request.add_header("Authorization", "Bearer " + self.token)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                return response.read()
        except urllib.error.HTTPError as error:
            problem = error.read().decode("utf-8", "replace")
            # "code" is the stable, machine-readable part of every error answer.
            raise Failed(f"{method} {path} answered {error.code}: {problem}") from None
        except urllib.error.URLError as error:
            raise Failed(f"{method} {path}: no answer from {self.base} ({error.reason})") from None

    def json(self, method, path, body=None, content_type=None):
        return json.loads(self.call(method, path, body, content_type))


def multipart(parts):
    """multipart/form-data from (name, filename, content type, bytes) parts."""
    boundary = "sidecar-" + uuid.uuid4().hex
    body = b""
    for name, filename, content_type, data in parts:
        body += (
            (
                f"--{boundary}\r\n"
                f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: {content_type}\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return body, "multipart/form-data; boundary=" + boundary


def fill_uuid(xml, value):
    if b"<UUID></UUID>" not in xml:
        raise Failed("the sample has no empty <UUID></UUID> to fill")
    return xml.replace(b"<UUID></UUID>", f"<UUID>{value}</UUID>".encode(), 1)


def main(argv):
    base = argv[1] if len(argv) > 1 else os.environ.get("SIDECAR_URL", "http://127.0.0.1:7420")
    token_file = Path(argv[2]) if len(argv) > 2 else default_token_file()
    samples = Path(os.environ.get("SIDECAR_SAMPLES") or HERE.parent.parent / "profiles" / "samples")
    wait_seconds = float(os.environ.get("SIDECAR_WAIT_SECONDS", "60"))

    print(f"1. token: reading {token_file}")
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise Failed(f"cannot read the token file {token_file}: {error.strerror}") from None
    api = Sidecar(base, token)

    health = api.json("GET", "/v1/health")
    print(f"2. daemon at {api.base}: status {health['status']}, version {health['version']}")

    note_uuid, pid_uuid = api.json("GET", "/v1/uuids?count=2")["uuids"]
    print(f"3. UUIDs: fee note {note_uuid}, PID simulation {pid_uuid}")

    note = fill_uuid((samples / "fee-note.xml").read_bytes(), note_uuid)
    body, content_type = multipart(
        [
            ("xml", "fee-note.xml", "application/xml", note),
            ("pdf", "fee-note.pdf", "application/pdf", (samples / "fee-note.pdf").read_bytes()),
        ]
    )
    signed = api.call("POST", "/v1/forms/fee-note/sign", body, content_type)
    if b"SignatureValue" not in signed:
        raise Failed("the answer holds no signature")
    print(f"4. fee note signed: {len(signed)} bytes of XAdES-signed XML")

    accepted = api.json("POST", "/v1/cns/fee-notes", signed, "application/xml")
    if accepted["uuid"] != note_uuid:
        raise Failed(f"deposited under another UUID: {accepted}")
    print(f"5. deposited: status {accepted['status']}, following {accepted['status_url']}")

    deadline = time.monotonic() + wait_seconds
    while True:
        message = api.json("GET", accepted["status_url"])
        if message["status"] in ("delivered", "rejected", "failed"):
            break
        if time.monotonic() > deadline:
            raise Failed(f"still {message['status']!r} after {wait_seconds:g} s")
        time.sleep(0.5)
    print(f"6. fee note {note_uuid}: {message['status']} after {message['attempts']} attempt(s)")
    if message["status"] != "delivered":
        raise Failed(f"the CNS did not take the fee note: {message.get('reasons')}")

    request = fill_uuid((samples / "pid-simulation.xml").read_bytes(), pid_uuid)
    answer = api.call("POST", "/v1/cns/pid/simulations", request, "application/xml")
    print("7. PID simulation answered:")
    print(answer.decode("utf-8"))
    print(f"done: fee note {note_uuid} delivered")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Failed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
