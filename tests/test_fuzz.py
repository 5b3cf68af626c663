"""Fuzzing every route of the contract through real HTTP (issue 15, "Done when").

A fixed seed draws >= 10,000 requests across every operation of
:data:`sidecar.api.contract.CONTRACT` (and the pages outside it), on an in-process
daemon in sandbox mode (keys, TSA/OCSP/CRL, the CNS simulator all real, on loopback):
valid requests, then the hostile classes of the issue (Host headers, the HTTP
parser's refusals on raw sockets, odd XML encodings, huge integers, non-Latin-1
multipart boundaries, a ``Content-Encoding`` that lies), and random mutations of
valid bodies (XML, PDF, multipart, timestamp queries, JSON), query strings, headers,
paths and methods. Every answer must be either a success or problem+json with a
stable code, never a 5xx other than the documented upstream 502/503/504, and never
show the token or a path of the machine.

Mutated *signed PDFs* have their own test, :func:`test_fuzz_signed_pdf_mutations`
(600 more requests, another seed): the class of input that once got 500s from the PDF
engine; a failure there lists each bad answer by its cause.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gzip
import hashlib
import json
import random
import re
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yarl
from aiohttp import ClientError, ClientSession, ClientTimeout
from asn1crypto import algos, tsp

from sidecar.api.contract import CONTRACT, Operation
from sidecar.config import ServerSettings
from sidecar.sandbox import SandboxPKI
from sidecar.signing.profiles import BUNDLED_PROFILE_DIR
from tests.fixtures.cns import SimulatorThread, sandbox_cns_settings, unsigned_fee_note
from tests.fixtures.daemon import Api

SEED = 1515
REQUESTS = 10_000
CONCURRENCY = 8
PROBLEM = "application/problem+json"
#: The documented upstream failures (docs/api.md, Errors), and their codes.
UPSTREAM = {
    502: {"upstream_error"},
    503: {"upstream_unavailable", "storage_unavailable"},
    504: {"upstream_timeout"},
}
SAMPLES = BUNDLED_PROFILE_DIR / "samples"


# --- What is sent ------------------------------------------------------------------------


@dataclass
class Case:
    """One request: through the HTTP client, or (``raw``) as bytes on a socket."""

    kind: str
    method: str = "GET"
    path: str = "/"
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    raw: bytes | None = None


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes


@dataclass
class Seeds:
    """Valid bodies to start from (made once, by the daemon itself where signed)."""

    xml: dict[str, bytes]
    pdf: bytes
    signed_pdf: bytes
    signed_xml: bytes
    tsq: bytes


XML_TOKENS = [
    b'<?xml version="1.0" encoding="UTF-7"?>',
    b'<?xml version="1.0" encoding="utf-32"?>',
    b'<?xml version="1.0" encoding="shift_jis"?>',
    b'<?xml version="1.0" encoding="nonsense"?>',
    b'<!DOCTYPE a [<!ENTITY x "y">]>',
    b'<!DOCTYPE a SYSTEM "http://127.0.0.1:1/x.dtd">',
    b"&x;",
    b"]]>",
    b"<![CDATA[",
    b"\x00",
    b"\xed\xa0\x80",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"<a>" * 40,
    b" xmlns:n0='urn:x'" * 20,
    b"<UUID>not-a-uuid</UUID>",
    b"<UUID>" + b"9" * 300 + b"</UUID>",
    b'<Document mimeType="application/pdf">!!!</Document>',
    b'<Document mimeType="application/pdf">' + base64.b64encode(b"%PDF-1.7 junk") + b"</Document>",
    b"<ds:Signature xmlns:ds='http://www.w3.org/2000/09/xmldsig#'/>",
    b"<?pi x?>",
    b"<!-- -- -->",
    "é€𝄞".encode(),
]
PDF_TOKENS = [
    b"startxref\n999999999\n%%EOF\n",
    b"startxref\n-1\n%%EOF",
    b"/Encrypt 99 0 R",
    b"/Encrypt << /Filter /Standard /V 9 /R 9 /O (x) /U (y) /P -1 >>",
    b"/Length 99999999",
    b"/Length -5",
    b"/ByteRange [0 1 2 3]",
    b"/Type /Sig /Contents <00>",
    b"xref\n0 99999999\n",
    b"trailer\n<< /Root 999 0 R /Size 1 >>\n",
    b"/Filter /FlateDecode",
    b"/Filter /JBIG2Decode",
    b"%%EOF",
    b"1 0 obj\n<< /Type /Catalog /Pages 1 0 R >>\nendobj\n",
    b"stream\r\n\x78\x9c\xff\xff\r\nendstream",
    b"/Kids [1 0 R 1 0 R]",
    b"/AcroForm << /Fields [99 0 R] /SigFlags 3 >>",
    b"(" * 50,
    b"<<" * 50,
]
STRANGE_VALUES = [
    "",
    " ",
    "99999999999999999999999",
    "-1",
    "0",
    "1e309",
    "NaN",
    "٣",
    "\u202e",
    "%00",
    "%ff%fe",
    "%",
    "a" * 3000,
    "../../etc/passwd",
    "B-B",
    "B-T",
    "B-LT",
    "B-LTA",
    "b-lt",
    "true",
    "0,0,0,0",
    "1,2,3",
    "10,10,200,60",
    "-5,-5,1e9,1e9",
    "sha256",
    "sha1",
    "fee-note",
    "sandbox-rsa",
    "sandbox-ec",
    "nope",
    "queued",
    "delivered",
    "2026-01-01T00:00:00Z",
    "9999-12-31T23:59:59+14:00",
    "2026-13-45",
    str(uuid.UUID(int=0)),
]
HOSTS = [
    "[::1].evil.example",
    "[::1]evil",
    "::1",
    "[::1",
    "localhost:99999",
    "localhost:",
    "evil.example",
    "127.0.0.1.nip.io",
    "LOCALHOST:7420",
    "[::1]:7420",
    "localhost\t",
    "",
]
CONTENT_TYPES = [
    "application/xml",
    "text/xml; charset=utf-8",
    "application/pdf",
    "application/json",
    "application/timestamp-query",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "multipart/form-data; boundary=é€x",
    'multipart/form-data; boundary="a b"',
    "multipart/form-data; boundary=" + "b" * 200,
    "multipart/mixed; boundary=x",
    "text/plain",
    "application/octet-stream",
    "application/xml; charset=utf-7",
    "xml",
    ";;;",
]


def mutate_bytes(rng: random.Random, data: bytes, tokens: list[bytes]) -> bytes:
    """One to four random edits: flips, cuts, splices, token insertions."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            out.extend(rng.choice(tokens))
            continue
        where = rng.randrange(len(out))
        choice = rng.random()
        if choice < 0.25:
            for _ in range(rng.randint(1, 8)):
                out[rng.randrange(len(out))] = rng.randrange(256)
        elif choice < 0.4:
            del out[where : where + rng.randint(1, 2000)]
        elif choice < 0.5:
            del out[where:]
        elif choice < 0.6:
            span = out[where : where + rng.randint(1, 500)]
            out[where:where] = span * rng.randint(1, 5)
        else:
            out[where:where] = rng.choice(tokens)
    return bytes(out)


def multipart(boundary: str, parts: list[tuple[str, bytes]]) -> bytes:
    chunks = []
    for name, content in parts:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


class Fuzzer:
    """Draws :class:`Case` objects from one seeded generator."""

    def __init__(self, seed: int, seeds: Seeds, token: str) -> None:
        self.rng = random.Random(seed)
        self.seeds = seeds
        self.token = token
        self.operations = list(CONTRACT)

    # The valid request of each route, then mutated.

    def path_of(self, op: Operation) -> str:
        path = op.path.replace("{profile}", self.rng.choice(["fee-note", "ecit", "pid-simulation"]))
        return path.replace("{uuid}", str(uuid.UUID(int=self.rng.getrandbits(128), version=4)))

    def body_for(self, op: Operation) -> tuple[str, bytes]:
        rng, seeds = self.rng, self.seeds
        if not op.request_types:
            return "", b""
        if op.operation_id == "createTimestamp":
            if rng.random() < 0.5:
                return "application/timestamp-query", seeds.tsq
            return "application/octet-stream", rng.randbytes(rng.randint(0, 200))
        if op.operation_id == "signPdf":
            return "application/pdf", seeds.pdf
        if op.operation_id == "signForm":
            if rng.random() < 0.6:
                xml = seeds.xml["fee-note.xml"]
                return "multipart/form-data; boundary=fz", multipart(
                    "fz", [("xml", xml), ("pdf", seeds.pdf)]
                )
            return "application/xml", unsigned_fee_note(str(uuid.uuid4()), seeds.pdf)
        if op.operation_id == "verify":
            if rng.random() < 0.5:
                return "application/xml", seeds.signed_xml
            return "application/pdf", seeds.pdf
        if op.operation_id == "depositFeeNote":
            if rng.random() < 0.8:
                return "application/xml", seeds.signed_xml
            # The daemon signs an unsigned note itself (XAdES-B-LT and PAdES): costly.
            return "application/xml", unsigned_fee_note(str(uuid.uuid4()), seeds.pdf)
        if op.operation_id.startswith("pid"):
            name = op.operation_id.removeprefix("pid").lower()
            return "application/xml", seeds.xml[f"pid-{name}.xml"]
        return "application/xml", rng.choice(list(seeds.xml.values()))

    def query_for(self, op: Operation) -> dict[str, str]:
        query: dict[str, str] = {}
        for parameter in op.parameters:
            if parameter.location == "query" and self.rng.random() < 0.3:
                query[parameter.name] = self.rng.choice(STRANGE_VALUES)
        if op.operation_id in ("signXml", "signPdf") and "level" not in query:
            # Mostly B-B: the TSA round trips of B-LT would dominate the run's time.
            query["level"] = self.rng.choice(["B-B"] * 6 + ["B-T", "B-LT"])
        return query

    def route_case(self, op: Operation) -> Case:
        rng = self.rng
        content_type, body = self.body_for(op)
        headers = {"Authorization": f"Bearer {self.token}"}
        if content_type:
            headers["Content-Type"] = content_type
        query = self.query_for(op)
        case = Case("valid", op.method, self.path_of(op), _encode_query(query), headers, body)
        for _ in range(rng.choice([0, 1, 1, 1, 2, 2, 3])):
            rng.choice(
                [
                    self.mutate_body,
                    self.mutate_body,
                    self.mutate_query,
                    self.mutate_headers,
                    self.mutate_path,
                    self.mutate_method,
                ]
            )(case)
        return case

    # Mutations

    def mutate_body(self, case: Case) -> None:
        rng = self.rng
        case.kind = "body"
        content_type = case.headers.get("Content-Type", "")
        if content_type.startswith("multipart/"):
            self._mutate_multipart(case)
        elif "pdf" in content_type:
            case.kind = "body-pdf"
            case.body = mutate_bytes(rng, case.body or self.seeds.pdf, PDF_TOKENS)
        elif "xml" in content_type:
            case.kind = "body-xml"
            case.body = mutate_bytes(rng, case.body or b"<a/>", XML_TOKENS)
        else:
            case.kind = "body-other"
            case.body = rng.choice(
                [
                    json.dumps(
                        {"a": [1] * rng.randint(0, 50), "b": "x" * rng.randint(0, 99)}
                    ).encode(),
                    b"{" * rng.randint(1, 500),
                    rng.randbytes(rng.randint(0, 3000)),
                    mutate_bytes(rng, self.seeds.tsq, [b"\x30\x80", b"\xff" * 9, b"\x02\x00"]),
                ]
            )
            if rng.random() < 0.5:
                case.headers["Content-Type"] = rng.choice(["application/json", *CONTENT_TYPES])

    def _mutate_multipart(self, case: Case) -> None:
        rng = self.rng
        case.kind = "body-multipart"
        choice = rng.random()
        if choice < 0.3:
            case.headers["Content-Type"] = rng.choice(CONTENT_TYPES)
        elif choice < 0.5:
            boundary = rng.choice(["fz", "x" * 70, "a'()+_,-./:=?", "é€", "fz\r\nX: y"])
            names = rng.sample(["xml", "pdf", "pdf", "other", "", 'a"b'], rng.randint(0, 4))
            parts = [
                (n, rng.choice([self.seeds.xml["fee-note.xml"], self.seeds.pdf, b""]))
                for n in names
            ]
            case.headers["Content-Type"] = "multipart/form-data; boundary=fz"
            case.body = multipart(boundary, parts)
        else:
            case.body = mutate_bytes(
                rng,
                case.body,
                [
                    b"\r\n--fz\r\n",
                    b"--fz--",
                    b"Content-Transfer-Encoding: base64\r\n",
                    b'name="xml"',
                    b"\r\n\r\n",
                    *XML_TOKENS[:4],
                    *PDF_TOKENS[:4],
                ],
            )

    def mutate_query(self, case: Case) -> None:
        rng = self.rng
        case.kind = "query"
        pieces = [case.query] if case.query else []
        for _ in range(rng.randint(1, 4)):
            name = rng.choice(
                [
                    "level",
                    "profile",
                    "key",
                    "count",
                    "hash",
                    "after",
                    "limit",
                    "since",
                    "status",
                    "page",
                    "box",
                    "visible",
                    "reason",
                    "require_pdfa",
                    "x",
                    "",
                    "a[]",
                ]
            )
            value = rng.choice(STRANGE_VALUES)
            pieces.append(f"{_quote(name)}={_quote(value)}" if rng.random() < 0.8 else name)
        if rng.random() < 0.2:
            pieces.append(rng.choice(["%", "%zz", "&&&", "=", "a=%ff%fe", "a=%00", "%2", "a=b=c"]))
        case.query = "&".join(pieces)

    def mutate_headers(self, case: Case) -> None:
        rng = self.rng
        case.kind = "headers"
        choice = rng.random()
        if choice < 0.2:
            case.headers["Host"] = rng.choice(HOSTS)
        elif choice < 0.35:
            case.headers["Authorization"] = rng.choice(
                [
                    "Bearer " + "A" * rng.randint(100, 7000),
                    "Bearer",
                    "Basic dXNlcjpwYXNz",
                    "bearer " + self.token,
                    "Bearer  " + self.token + " x",
                    "Bearer é",
                    "",
                ]
            )
        elif choice < 0.5:
            case.headers["Content-Type"] = rng.choice(CONTENT_TYPES)
        elif choice < 0.65:
            case.headers["Content-Encoding"] = rng.choice(
                ["gzip", "deflate", "br", "x-foo", "gzip, gzip"]
            )
            if rng.random() < 0.3:
                compress = (
                    gzip.compress if "gzip" in case.headers["Content-Encoding"] else zlib.compress
                )
                case.body = compress(case.body)
        elif choice < 0.75:
            case.headers["Origin"] = rng.choice(
                ["https://evil.example", "null", "http://localhost:1"]
            )
        elif choice < 0.85:
            case.headers["X-Request-Id"] = rng.choice(["x" * 200, "a b", "é", "ok-1"])
        else:
            case.headers[
                rng.choice(
                    ["Accept", "Expect", "Range", "If-None-Match", "Cookie", "X-Forwarded-For"]
                )
            ] = rng.choice(["*/*", "100-continue", "bytes=0-1", "teapot", "a" * 4000])

    def mutate_path(self, case: Case) -> None:
        rng = self.rng
        case.kind = "path"
        case.path = rng.choice(
            [
                case.path + "/",
                case.path.upper(),
                case.path + "/../../etc/passwd",
                "/v1/cns/messages/" + rng.choice(STRANGE_VALUES[:12]).replace("%", "%25"),
                "/v1/forms/"
                + rng.choice(["..", "%2e%2e", "fee-note%00", "x" * 300, "é"])
                + "/sign",
                "/v1/cns/fee-notes/" + rng.choice(["x", str(uuid.uuid4()).upper(), "%00"]),
                "/v2/nothing",
                "//v1/health",
                "/v1/health;x=y",
                "/docs/../openapi.json",
                "/static/" + "a" * 200,
            ]
        )

    def mutate_method(self, case: Case) -> None:
        case.kind = "method"
        case.method = self.rng.choice(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])

    # Raw bytes for the HTTP parser.

    def raw_case(self) -> Case:
        rng = self.rng
        auth = f"Authorization: Bearer {self.token}\r\n"
        line = rng.choice(
            [
                b"GARBAGE\r\n\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(40) + b"\r\n\r\n",
                b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",
                b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX: " + b"x" * 9000 + b"\r\n\r\n",
                b"GET /v1/uuids HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
                + self.token.encode()
                + b"A" * 9000
                + b"\r\n\r\n",
                b"GET /v1/uuids HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \x01"
                + self.token.encode()
                + b"\r\n\r\n",
                b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
                b"POST /v1/verify HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                b"\r\nzz\r\n",
                b"POST /v1/verify HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Length: 3\r\n\r\n",
                b"POST /v1/verify HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n",
                b"POST /v1/verify HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n"
                b"Content-Length: 2\r\n\r\nab",
                b"GET /v1/health HTTP/2.0\r\nHost: localhost\r\n\r\n",
                b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nHost: evil\r\n\r\n",
                b"GET /v1/health\r\n\r\n",
                b"GET  /v1/health  HTTP/1.1\r\n\r\n",
                b"GET /v1/health HTTP/1.1\nHost: localhost\n\n",
                b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n Folded: x\r\n\r\n",
                b"GET /v1/health HTTP/1.1\r\nHost: local\x00host\r\n\r\n",
                b"GET /v1/h\xc3\xa9alth HTTP/1.1\r\nHost: localhost\r\n\r\n",
                b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
                b"Content-Length: 0\r\n\r\n",
                b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\n",
                b"POST /v1/xml/sign HTTP/1.1\r\nHost: localhost\r\n"
                + auth.encode()
                + b"Content-Type: application/xml\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\n<a>\r\nFFFFFFFFFFFFFFFFFFFF\r\n",
                b"POST /v1/xml/sign HTTP/1.1\r\nHost: localhost\r\n"
                + auth.encode()
                + b"Content-Type: application/xml\r\nContent-Encoding: gzip\r\n"
                b"Content-Length: 10\r\n\r\n" + rng.randbytes(10),
            ]
        )
        if rng.random() < 0.3:
            line = mutate_bytes(rng, line, [b"\r\n", b"\n", b" ", b":", b"\x00", b"\xff"])
        return Case("raw", raw=line)

    def next(self) -> Case:
        if self.rng.random() < 0.08:
            return self.raw_case()
        op = self.rng.choice(self.operations)
        case = self.route_case(op)
        if case.method == "HEAD":
            case.body = b""  # HEAD has no body; aiohttp's client would send one anyway
        if self.rng.random() < 0.02:
            case.path = self.rng.choice(["/", "/docs", "/docs/app.js", "/favicon.ico"])
            case.kind = "page"
        return case


def _quote(text: str) -> str:
    return yarl.URL.build(query={"v": text}).raw_query_string[2:]


def _encode_query(query: dict[str, str]) -> str:
    return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in query.items())


# --- Sending and judging -----------------------------------------------------------------


async def send(session: ClientSession, base: str, case: Case) -> Answer | None:
    url = yarl.URL(f"{base}{case.path}" + (f"?{case.query}" if case.query else ""), encoded=True)
    async with session.request(
        case.method,
        url,
        headers=case.headers,
        data=case.body if case.body or case.method not in ("GET", "HEAD", "DELETE") else None,
        skip_auto_headers=("Content-Type",),
        allow_redirects=False,
        compress=None,
    ) as response:
        return Answer(response.status, response.content_type, await response.read())


async def send_raw(host: str, port: int, raw: bytes) -> Answer | None:
    """Write *raw* while reading the answer (the daemon may answer before the body ends)."""
    reader, writer = await asyncio.open_connection(host, port)
    data = bytearray()

    async def read() -> None:
        while True:
            head, found, body = bytes(data).partition(b"\r\n\r\n")
            if found and re.match(rb"HTTP/1\.[01] 1\d\d ", head):
                del data[: len(head) + 4]  # an interim answer (100 Continue): the next one
                continue
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if found and length and len(body) >= int(length[1]):
                return
            chunk = await reader.read(65536)
            if not chunk:
                return
            data.extend(chunk)

    reading = asyncio.create_task(read())
    try:
        writer.write(raw)
        await writer.drain()
    except ConnectionError:
        pass  # it answered and closed before taking the whole request
    try:
        await asyncio.wait_for(reading, 15)
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if match is None:
        return None
    headers = head.decode("latin-1").lower()
    content_type = re.search(r"\r\ncontent-type: *([^;\r\n]*)", headers)
    return Answer(int(match[1]), content_type[1].strip() if content_type else "", body)


def as_raw(case: Case) -> bytes:
    """*case* as bytes on the wire, one request per connection."""
    target = case.path + (f"?{case.query}" if case.query else "")
    headers = {"Host": "localhost", **case.headers, "Connection": "close"}
    headers["Content-Length"] = str(len(case.body))
    lines = [f"{case.method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + b"\r\n\r\n" + case.body


def judge(case: Case, answer: Answer | None, token: str, secrets: list[str]) -> str | None:
    """What is wrong with *answer*, or ``None``."""
    if answer is None:
        return None if case.raw is not None else "no answer"
    if answer.status >= 500 and answer.status not in UPSTREAM:
        return f"{answer.status} {answer.body[:300]!r}"
    text = answer.body.decode("utf-8", "replace")
    for secret in [token, *secrets]:
        if secret in text:
            return f"{answer.status}: the answer shows {secret[:12]!r}..."
    if "Traceback" in text:
        return f"{answer.status}: a traceback"
    if answer.status < 400:
        return None
    if case.method == "HEAD":
        return None if answer.content_type == PROBLEM else f"{answer.status} HEAD not problem"
    if answer.content_type != PROBLEM:
        return f"{answer.status} {answer.content_type}: {answer.body[:200]!r}"
    if case.raw is not None and not answer.body.rstrip().endswith(b"}"):
        return None  # a raw answer may be cut where the client stopped reading
    try:
        body = json.loads(answer.body)
    except ValueError:
        return f"{answer.status} problem+json that is not JSON"
    if body.get("status") != answer.status or not isinstance(body.get("code"), str):
        return f"{answer.status} problem without its status/code: {body}"
    if answer.status in UPSTREAM and body["code"] not in UPSTREAM[answer.status]:
        return f"{answer.status} with code {body['code']!r}"
    return None


@dataclass
class Outcome:
    sent: int = 0
    by_route: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, Case, str]] = field(default_factory=list)

    def summary(self, limit: int = 25) -> str:
        lines = [f"{len(self.failures)} bad answers of {self.sent}:"]
        grouped = Counter((kind, problem[:90]) for kind, _c, problem in self.failures)
        for (kind, problem), count in grouped.most_common(limit):
            lines.append(f"  {count:5d} x [{kind}] {problem}")
        return "\n".join(lines)


async def run(api: Api, cases: Iterator[Case], total: int, secrets: list[str]) -> Outcome:
    host, port = str(api.client.server.host), int(api.client.server.port)  # type: ignore[arg-type]
    base = f"http://{host}:{port}"
    token = api.tokens["all"]
    outcome = Outcome()
    queue: asyncio.Queue[Case | None] = asyncio.Queue(maxsize=CONCURRENCY * 2)

    async def worker(session: ClientSession) -> None:
        while (case := await queue.get()) is not None:
            began = time.monotonic()
            try:
                if case.raw is not None:
                    answer = await send_raw(host, port, case.raw)
                    route = "raw"
                else:
                    answer = await send(session, base, case)
                    route = f"{case.method} {re.sub(r'[0-9a-f-]{36}', '{uuid}', case.path)}"
            except (ClientError, ConnectionError):
                # aiohttp's client gives up on a connection the daemon closed after an
                # early answer (a refusal before the body was read): ask again on a
                # socket of its own and judge that answer.
                answer = await send_raw(host, port, as_raw(case))
                route = f"{case.method} {re.sub(r'[0-9a-f-]{36}', '{uuid}', case.path)}"
            except ValueError:
                continue  # a header or URL aiohttp's client refuses to send
            outcome.sent += 1
            outcome.by_route[route] += 1
            outcome.seconds[f"{route} {answer.status if answer else None}"] += (
                time.monotonic() - began
            )
            if answer is not None:
                outcome.by_status[answer.status] += 1
            problem = judge(case, answer, token, secrets)
            if problem is not None:
                outcome.failures.append((case.kind, case, problem))

    timeout = ClientTimeout(total=120)
    async with ClientSession(timeout=timeout, auto_decompress=True) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(CONCURRENCY)]
        for _, case in zip(range(total), cases, strict=False):
            await queue.put(case)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    return outcome


# --- Fixtures ----------------------------------------------------------------------------


@pytest.fixture
async def fuzz_api(
    api_factory: Callable[..., Awaitable[Api]],
    sandbox_services: SandboxPKI,
    real_cns_simulator: SimulatorThread,
) -> Api:
    settings = sandbox_cns_settings(real_cns_simulator.url)
    # Short read timeouts, so that a truncated raw request is answered 408 quickly.
    settings = dataclasses.replace(
        settings, server=ServerSettings(header_timeout=1.0, body_timeout=1.0)
    )
    return await api_factory(settings, sandbox_pki=sandbox_services)


def timestamp_query(data: bytes) -> bytes:
    request = tsp.TimeStampReq(
        {
            "version": 1,
            "message_imprint": {
                "hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                "hashed_message": hashlib.sha256(data).digest(),
            },
            "nonce": 12345,
            "cert_req": True,
        }
    )
    return bytes(request.dump())


async def make_seeds(api: Api) -> Seeds:
    xml = {path.name: path.read_bytes() for path in sorted(SAMPLES.glob("*.xml"))}
    pdf = (SAMPLES / "fee-note.pdf").read_bytes()
    signed_pdf = await api.client.post(
        "/v1/pdf/sign?level=B-LT",
        data=pdf,
        headers={"Content-Type": "application/pdf", **api.auth()},
    )
    assert signed_pdf.status == 200, await signed_pdf.text()
    signed_xml = await api.client.post(
        "/v1/forms/fee-note/sign",
        data=unsigned_fee_note(str(uuid.uuid4()), pdf),
        headers={"Content-Type": "application/xml", **api.auth()},
    )
    assert signed_xml.status == 200, await signed_xml.text()
    return Seeds(xml, pdf, await signed_pdf.read(), await signed_xml.read(), timestamp_query(pdf))


def secrets_of(api: Api, home: Path) -> list[str]:
    """What must never be shown: every token, and the daemon's home directory."""
    return [*api.tokens.values(), str(home)]


# --- The tests ---------------------------------------------------------------------------


async def test_fuzz(fuzz_api: Api, tmp_path: Path) -> None:
    seeds = await make_seeds(fuzz_api)
    fuzzer = Fuzzer(SEED, seeds, fuzz_api.tokens["all"])

    def cases() -> Iterator[Case]:
        while True:
            yield fuzzer.next()

    started = time.monotonic()
    outcome = await run(fuzz_api, cases(), REQUESTS, secrets_of(fuzz_api, tmp_path))
    elapsed = time.monotonic() - started
    print(f"\nfuzz: {outcome.sent} requests in {elapsed:.1f} s; statuses {dict(outcome.by_status)}")
    print("slowest:", [(k, round(v, 1)) for k, v in outcome.seconds.most_common(15)])
    assert outcome.sent >= REQUESTS * 0.95
    # Every route of the contract was exercised.
    exercised = {route.split(" ", 1)[1] for route in outcome.by_route if route != "raw"}
    for op in CONTRACT:
        pattern = re.sub(r"\{[a-z]+\}", "[^/]+", op.path)
        assert any(re.fullmatch(pattern, path) for path in exercised), op.path
    assert not outcome.failures, outcome.summary()


SIGNED_PDF_REQUESTS = 600


async def test_fuzz_signed_pdf_mutations(fuzz_api: Api, tmp_path: Path) -> None:
    """Random mutations of a PAdES-B-LT signed PDF, to ``/v1/verify`` and ``/v1/pdf/sign``.

    Kept apart from :func:`test_fuzz`: its own seed and count, on the class of input
    that found the PDF engine's 500s (now each signature's own verdict, or a 4xx).
    """
    seeds = await make_seeds(fuzz_api)
    rng = random.Random(SEED + 1)
    token = fuzz_api.tokens["all"]

    def cases() -> Iterator[Case]:
        while True:
            path = rng.choice(["/v1/verify"] * 3 + ["/v1/pdf/sign"])
            query = "level=B-B" if path == "/v1/pdf/sign" else ""
            body = mutate_bytes(rng, seeds.signed_pdf, PDF_TOKENS)
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/pdf"}
            yield Case("signed-pdf", "POST", path, query, headers, body)

    outcome = await run(fuzz_api, cases(), SIGNED_PDF_REQUESTS, secrets_of(fuzz_api, tmp_path))
    print(f"\nsigned PDF fuzz: {outcome.sent} requests; statuses {dict(outcome.by_status)}")
    assert outcome.sent >= SIGNED_PDF_REQUESTS * 0.95
    assert not outcome.failures, outcome.summary()
