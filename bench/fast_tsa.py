"""A fast RFC 3161 TSA for the benchmarks, in its own process (like a real, remote TSA).

The sandbox TSA's key and certificate, with the key parsed once (certomancer's own TSA
reloads it per request: ~50 ms of CPU that is not ours) and the reply built with
little more than the signature's cost (about 1 ms of CPU: :class:`FastTimeStamper`).
Running it in a child process keeps its CPU off the benchmarked process's GIL; on a
2-core machine it still shares the cores, so its cost is kept small.

    with running_fast_tsa(pki_dir) as tsa: ...      # from a benchmark (tsa.url, tsa.pid)
    python bench/fast_tsa.py PKI_DIR PORT           # what that runs
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from asn1crypto import algos, cms, core, pem, tsp
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from pyhanko.sign.general import as_signing_certificate, simple_cms_attribute
from stats import free_port


def _der(path: Path) -> bytes:
    return pem.unarmor(path.read_bytes())[2]


def _tlv(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, content."""
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


class FastTimeStamper:
    """A test TSA whose own cost is the RSA signature and little else.

    Everything a reply shares with the next (signer identifier, algorithms, ESS
    signing-certificate attribute, certificates) is DER-encoded once; per request
    only the TSTInfo and two signed attributes are encoded, and the reply is put
    together from DER pieces. (pyHanko's DummyTimeStamper rebuilds all of it, which
    re-encodes the certificate, and reads the local time zone: ~5 ms of CPU a reply,
    which on a 2-core machine takes a core away from the daemon being measured.)
    """

    POLICY = "1.3.6.1.4.1.4146.2.2"

    def __init__(self, *, tsa_cert: asn1_x509.Certificate, tsa_key: asn1_keys.PrivateKeyInfo):
        self._key = serialization.load_der_private_key(tsa_key.dump(), password=None)
        self._ess = simple_cms_attribute(
            "signing_certificate", as_signing_certificate(tsa_cert)
        ).dump()
        self._content_type = simple_cms_attribute("content_type", "tst_info").dump()
        self._sid = cms.SignerIdentifier(
            {
                "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                    {"issuer": tsa_cert.issuer, "serial_number": tsa_cert.serial_number}
                )
            }
        ).dump()
        self._certificates = _tlv(0xA0, tsa_cert.dump())  # [0] IMPLICIT SET OF
        self._rsa = algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"}).dump()
        self._tst_info_type = cms.ContentType("tst_info").dump()
        self._signed_data_type = cms.ContentType("signed_data").dump()
        self._granted = tsp.PKIStatusInfo({"status": "granted"}).dump()
        self._serial = itertools.count(secrets.randbits(48))

    def reply(self, request_der: bytes) -> bytes:
        request = tsp.TimeStampReq.load(request_der)
        imprint = request["message_imprint"]
        md_algorithm = imprint["hash_algorithm"]["algorithm"].native
        now = datetime.now(UTC)
        fields = {
            "version": "v1",
            "policy": request["req_policy"].dotted if request["req_policy"].native else self.POLICY,
            "message_imprint": imprint,
            "serial_number": next(self._serial),
            "gen_time": now,
        }
        if request["nonce"].native is not None:
            fields["nonce"] = request["nonce"]
        tst_info = tsp.TSTInfo(fields).dump()
        digest = hashlib.new(md_algorithm, tst_info).digest()
        # DER: a SET OF is sorted by encoding.
        attributes = b"".join(
            sorted(
                [
                    self._content_type,
                    simple_cms_attribute(
                        "signing_time", cms.Time({"utc_time": core.UTCTime(now)})
                    ).dump(),
                    self._ess,
                    simple_cms_attribute("message_digest", digest).dump(),
                ]
            )
        )
        algorithm = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384()}[md_algorithm]
        signature = self._key.sign(_tlv(0x31, attributes), PKCS1v15(), algorithm)
        digest_algorithm = algos.DigestAlgorithm({"algorithm": md_algorithm}).dump()
        signer_info = _tlv(
            0x30,
            b"\x02\x01\x01"
            + self._sid
            + digest_algorithm
            + _tlv(0xA0, attributes)
            + self._rsa
            + _tlv(0x04, signature),
        )
        encap = _tlv(0x30, self._tst_info_type + _tlv(0xA0, _tlv(0x04, tst_info)))
        signed_data = _tlv(
            0x30,
            b"\x02\x01\x03"
            + _tlv(0x31, digest_algorithm)
            + encap
            + self._certificates
            + _tlv(0x31, signer_info),
        )
        token = _tlv(0x30, self._signed_data_type + _tlv(0xA0, signed_data))
        return _tlv(0x30, self._granted + token)


def serve(pki_dir: Path, port: int) -> None:
    cert = asn1_x509.Certificate.load(_der(pki_dir / "certs" / "tsa.pem"))
    key = asn1_keys.PrivateKeyInfo.load(_der(pki_dir / "keys" / "tsa.key.pem"))
    stamper = FastTimeStamper(tsa_cert=cert, tsa_key=key)

    async def handle(request: web.Request) -> web.Response:
        reply = stamper.reply(await request.read())
        return web.Response(body=reply, content_type="application/timestamp-reply")

    app = web.Application()
    app.router.add_post("/tsa", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


@dataclass(frozen=True)
class RunningTsa:
    url: str
    #: The TSA's process (for its CPU time).
    pid: int


@contextlib.contextmanager
def running_fast_tsa(pki_dir: Path) -> Iterator[RunningTsa]:
    """Start the TSA in a child process; where it answers while the block runs."""
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
        yield RunningTsa(f"http://127.0.0.1:{port}/tsa", child.pid)
    finally:
        child.terminate()
        child.wait(timeout=10)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]))
