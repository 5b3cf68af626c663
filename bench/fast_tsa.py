"""A fast RFC 3161 TSA for the benchmarks, in its own process (like a real, remote TSA).

pyHanko's DummyTimeStamper with the sandbox TSA's key parsed once (certomancer's own
TSA and DummyTimeStamper reload the key per request: ~50 ms of CPU that is not ours).
Running it in a child process keeps its CPU off the benchmarked process's GIL.

    with running_fast_tsa(pki_dir) as url: ...      # from a benchmark
    python bench/fast_tsa.py PKI_DIR PORT           # what that runs
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web
from asn1crypto import cms, core, pem, tsp
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from pyhanko.sign.general import as_signing_certificate, simple_cms_attribute
from pyhanko.sign.timestamps.dummy_client import DummyTimeStamper
from stats import free_port


def _der(path: Path) -> bytes:
    return pem.unarmor(path.read_bytes())[2]


class FastTimeStamper(DummyTimeStamper):
    """pyHanko's test TSA with its key parsed and its ESS attribute built once."""

    def __init__(self, *, tsa_cert: asn1_x509.Certificate, tsa_key: asn1_keys.PrivateKeyInfo):
        super().__init__(tsa_cert=tsa_cert, tsa_key=tsa_key)
        self._key = serialization.load_der_private_key(tsa_key.dump(), password=None)
        self._ess = simple_cms_attribute("signing_certificate", as_signing_certificate(tsa_cert))

    def _sign_tst_info(self, tst_info_data, md_algorithm, dt):  # type: ignore[no-untyped-def]
        digest = hashlib.new(md_algorithm, tst_info_data).digest()
        attrs = cms.CMSAttributes(
            [
                simple_cms_attribute("content_type", "tst_info"),
                simple_cms_attribute("signing_time", cms.Time({"utc_time": core.UTCTime(dt)})),
                self._ess,
                simple_cms_attribute("message_digest", digest),
            ]
        )
        algorithm = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384()}[md_algorithm]
        return self._key.sign(attrs.dump(), PKCS1v15(), algorithm), attrs


def serve(pki_dir: Path, port: int) -> None:
    cert = asn1_x509.Certificate.load(_der(pki_dir / "certs" / "tsa.pem"))
    key = asn1_keys.PrivateKeyInfo.load(_der(pki_dir / "keys" / "tsa.key.pem"))
    stamper = FastTimeStamper(tsa_cert=cert, tsa_key=key)

    async def handle(request: web.Request) -> web.Response:
        req = tsp.TimeStampReq.load(await request.read())
        resp = await stamper.async_request_tsa_response(req)
        return web.Response(body=resp.dump(), content_type="application/timestamp-reply")

    app = web.Application()
    app.router.add_post("/tsa", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


@contextlib.contextmanager
def running_fast_tsa(pki_dir: Path) -> Iterator[str]:
    """Start the TSA in a child process; its URL while the block runs."""
    port = free_port()
    child = subprocess.Popen([sys.executable, __file__, str(pki_dir), str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the benchmark TSA did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/tsa"
    finally:
        child.terminate()
        child.wait(timeout=10)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]))
