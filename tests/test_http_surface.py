"""The HTTP surface under hostile input (issue 15): the Host guard's exact parse, the
HTTP parser's own refusals as problem+json, read timeouts on raw sockets, 4xx (not
500) for odd encodings and parameters, nothing secret in the log, log files 0600."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import json
import logging
import os
import stat
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from sidecar import memory
from sidecar.api import protocol
from sidecar.cns.simulator import KEPT_BOOKINGS, CnsSimulator
from sidecar.config import ServerSettings, Settings
from sidecar.logs import configure_logging
from tests.fixtures.daemon import Api
from tests.test_api_guards import problem

PROBLEM = "application/problem+json"


def address(api: Api) -> tuple[str, int]:
    server = api.client.server
    return str(server.host), int(server.port)  # type: ignore[arg-type]


async def exchange(api: Api, raw: bytes, *, timeout: float = 10) -> bytes:
    """Send *raw* on a fresh connection; everything the daemon answers until it closes."""
    reader, writer = await asyncio.open_connection(*address(api))
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def parse_answer(raw: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body)


# 1. Host guard ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "[::1].evil.example",
        "[::1]evil",
        "[::1]:7420.evil.example",
        "[::1",
        "::1",  # an IPv6 literal goes in brackets
        "localhost:99999",
        "localhost:",
        "localhost:80:80",
        "localhost.evil.example",
        "127.0.0.1.evil.example",
        "local host",
        "",
    ],
)
async def test_host_guard_parses_exactly(api: Api, host: str) -> None:
    response = await api.client.get("/v1/health", headers={"Host": host})
    assert response.status == 403, host
    assert (await problem(response))["code"] == "forbidden"


@pytest.mark.parametrize("host", ["[::1]", "[::1]:1", "[0:0:0:0:0:0:0:1]:7420", "localhost:65535"])
async def test_host_guard_still_takes_loopback(api: Api, host: str) -> None:
    assert (await api.client.get("/v1/health", headers={"Host": host})).status == 200


async def test_host_guard_takes_a_configured_ipv6_in_any_spelling(api_factory) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(server=ServerSettings(allowed_hosts=("2001:DB8:0::1", "Praxis.LU")))
    api = await api_factory(settings)
    for host in ("[2001:db8::1]:7420", "[2001:0db8:0:0:0:0:0:1]", "praxis.lu"):
        assert (await api.client.get("/v1/health", headers={"Host": host})).status == 200, host
    for host in ("2001:db8::1", "[2001:db8::2]"):
        assert (await api.client.get("/v1/health", headers={"Host": host})).status == 403, host


# 2. The HTTP parser's own errors ---------------------------------------------------------

MALFORMED = {
    "not HTTP": (b"GARBAGE\r\n\r\n", 400, "malformed_http"),
    "bad header": (
        b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",
        400,
        "malformed_http",
    ),
    "header too long": (
        b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"x" * 9000 + b"\r\n\r\n",
        431,
        "header_too_large",
    ),
    "bad chunk size": (
        b"POST /v1/verify HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
        "malformed_http",
    ),
    "length and chunked": (
        b"POST /v1/verify HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 5\r\n\r\n",
        400,
        "malformed_http",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_parser_errors_are_problem_json(api: Api, case: str) -> None:
    raw, status, code = MALFORMED[case]
    answer_status, headers, body = parse_answer(await exchange(api, raw))
    assert answer_status == status
    assert headers["content-type"].startswith(PROBLEM)
    assert body["code"] == code and body["status"] == status
    assert headers["x-request-id"]
    # aiohttp's own text quoted the offending bytes back.
    assert "Bad Header" not in json.dumps(body) and "xxxx" not in json.dumps(body)


async def test_unknown_expect_is_problem_json(api: Api) -> None:
    response = await api.client.get("/v1/health", headers={"Expect": "teapot"})
    assert response.status == 417
    assert (await problem(response))["code"] == "expectation_failed"
    # 100-continue still works as HTTP says.
    ok = await exchange(
        api,
        b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert ok.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")


async def test_aiohttp_hooks_fence(api: Api) -> None:
    """The private aiohttp hooks sidecar.api.protocol relies on are still there.

    If this fails after an aiohttp upgrade, re-read web_protocol.py / web_server.py /
    web_app.py and mend protocol.py before anything else.
    """
    owners = {
        "web.Application": web.Application,
        "web.Server": web.Server,
        "web.RequestHandler": web.RequestHandler,
    }
    server = api.client.server.runner.server  # type: ignore[union-attr]
    assert isinstance(server, protocol._Server)
    handler = server()
    try:
        assert isinstance(handler, protocol._Connection)
        for owner, name in protocol.PRIVATE_HOOKS:
            target = {"web.Server": server, "web.RequestHandler": handler}.get(owner)
            assert hasattr(target or owners[owner], name), f"{owner}.{name} is gone"
        assert isinstance(handler._request_count, int)
        assert handler._waiter is None  # not started: no waiting for a request yet
        assert len(handler._messages) == 0
    finally:
        handler.connection_lost(None)


# 3. Read timeouts ------------------------------------------------------------------------


@pytest.fixture
async def short_timeouts(api_factory) -> Api:  # type: ignore[no-untyped-def]
    settings = Settings(
        server=ServerSettings(header_timeout=1.0, body_timeout=1.0, keepalive_timeout=1.5)
    )
    return await api_factory(settings)


async def test_slow_header_client_is_cut(short_timeouts: Api) -> None:
    reader, writer = await asyncio.open_connection(*address(short_timeouts))
    started = time.monotonic()
    writer.write(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n")
    answer = b""
    for _ in range(80):  # a header line every 0.1 s, never the end of the head
        writer.write(b"X-Slow: 1\r\n")
        try:
            answer = await asyncio.wait_for(reader.read(65536), 0.1)
        except TimeoutError:
            continue
        break
    elapsed = time.monotonic() - started
    writer.close()
    status, headers, body = parse_answer(answer)
    assert status == 408 and body["code"] == "header_timeout"
    assert headers["content-type"] == PROBLEM
    assert 0.9 < elapsed < 8


async def test_silent_connection_is_cut(short_timeouts: Api) -> None:
    reader, writer = await asyncio.open_connection(*address(short_timeouts))
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert parse_answer(answer)[0] == 408


async def test_idle_keepalive_connection_is_closed(short_timeouts: Api) -> None:
    reader, writer = await asyncio.open_connection(*address(short_timeouts))
    writer.write(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200")
    length = int(
        next(
            v
            for k, v in (line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
            if k.lower() == b"content-length"
        )
    )
    await reader.readexactly(length)
    started = time.monotonic()
    rest = await asyncio.wait_for(reader.read(), 10)  # EOF: the daemon closed it
    writer.close()
    assert rest == b""
    assert 1.0 < time.monotonic() - started < 8


async def test_keepalive_connection_within_timeout_is_reused(short_timeouts: Api) -> None:
    reader, writer = await asyncio.open_connection(*address(short_timeouts))
    for _ in range(3):
        writer.write(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        await asyncio.sleep(0.5)  # under header and keep-alive timeouts
    writer.close()


async def test_drained_body_starts_no_header_deadline(api_factory) -> None:  # type: ignore[no-untyped-def]
    # A body the daemon refused unread is drained by aiohttp after the answer; those
    # bytes are no request head, and the idle connection after them is keep-alive's.
    settings = Settings(server=ServerSettings(header_timeout=1.0, keepalive_timeout=10.0))
    api = await api_factory(settings)
    reader, writer = await asyncio.open_connection(*address(api))
    writer.write(
        b"POST /v1/verify HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/xml\r\n"
        b"Content-Length: 200000\r\n\r\n"
    )
    writer.write(b"x" * 100)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 401")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    writer.write(b"x" * 199900)  # the rest, drained unread
    await writer.drain()
    await asyncio.sleep(2.5)  # past header_timeout, within keepalive_timeout
    writer.write(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    again = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert again.startswith(b"HTTP/1.1 200"), again


async def stalled_body(api: Api, *, extra: bytes = b"") -> tuple[int, dict[str, str], dict]:
    """A POST whose body stops after 3 of its 1000 bytes; the answer, parsed."""
    reader, writer = await asyncio.open_connection(*address(api))
    writer.write(
        b"POST /v1/verify HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/xml\r\n"
        + f"Authorization: Bearer {api.tokens['all']}\r\n".encode()
        + extra
        + b"Content-Length: 1000\r\n\r\n<a>"
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    return parse_answer(answer)


async def test_stalled_body_is_408(short_timeouts: Api) -> None:
    status, headers, body = await stalled_body(short_timeouts)
    assert status == 408 and body["code"] == "body_timeout"
    assert headers["connection"] == "close"


async def test_timeouts_are_configurable() -> None:
    defaults = ServerSettings()
    # Far above what any practice's software takes to send a request.
    assert defaults.header_timeout >= 30 and defaults.body_timeout >= 30
    assert defaults.keepalive_timeout >= 120


# 4. 4xx, not 500 -------------------------------------------------------------------------

UTF7 = b'<?xml version="1.0" encoding="UTF-7"?><a>+AGQ-</a>'


@pytest.mark.parametrize(
    "path", ["/v1/xml/sign", "/v1/verify", "/v1/forms/fee-note/sign", "/v1/cns/fee-notes"]
)
async def test_xml_declared_utf7_is_4xx(sandbox_api: Api, path: str) -> None:
    response = await sandbox_api.client.post(
        path, data=UTF7, headers={"Content-Type": "application/xml", **sandbox_api.auth()}
    )
    assert 400 <= response.status < 500
    body = await problem(response)
    assert body["code"] in ("malformed_xml", "invalid_uuid")


@pytest.mark.parametrize("after", ["99999999999999999999999", "-1", "1e3", "٣", " 1"])
async def test_huge_after_cursor_is_400(api: Api, after: str) -> None:
    response = await api.client.get("/v1/cns/messages", params={"after": after}, headers=api.auth())
    assert response.status == 400
    body = await problem(response)
    assert body["code"] == "bad_parameter" and body["parameter"] == "after"


async def test_non_latin1_multipart_boundary_is_400(sandbox_api: Api) -> None:
    boundary = "é€x"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="xml"\r\n\r\n<a/>\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    response = await sandbox_api.client.post(
        "/v1/forms/fee-note/sign",
        data=body,
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            **sandbox_api.auth(),
        },
    )
    assert response.status == 400
    assert (await problem(response))["parameter"] == "boundary"


async def test_gzip_declared_on_plain_body_is_400(api: Api) -> None:
    response = await api.client.post(
        "/v1/verify",
        data=b"<a>not gzip</a>",
        headers={"Content-Type": "application/xml", "Content-Encoding": "gzip", **api.auth()},
    )
    assert response.status == 400
    assert (await problem(response))["code"] == "malformed_body"


async def test_undecodable_unread_body_is_no_daemon_error(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    # Refused before its body is read (no token): aiohttp drains the body afterwards.
    body = b"not gzip at all" * 10
    answer = await exchange(
        api,
        b"POST /v1/verify HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/xml\r\n"
        b"Content-Encoding: gzip\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )
    assert parse_answer(answer)[0] == 401
    await asyncio.sleep(0.2)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_real_gzip_body_is_read(api: Api) -> None:
    response = await api.client.post(
        "/v1/verify",
        data=gzip.compress(b"<a>"),
        headers={"Content-Type": "application/xml", "Content-Encoding": "gzip", **api.auth()},
    )
    # Decoded, then refused for what it is: XML that is not well-formed.
    assert response.status == 400
    assert (await problem(response))["code"] == "malformed_xml"


async def test_undecodable_token_is_401(api: Api) -> None:
    # Found by the fuzz test: a token with bytes that are not UTF-8 was a 500.
    for token in (b"\xff\xfeabc", "é".encode(), b"abc\x7f"):
        answer = await exchange(
            api,
            b"GET /v1/uuids HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            b"Authorization: Bearer " + token + b"\r\n\r\n",
        )
        status, headers, _body = parse_answer(answer)
        assert status in (400, 401), (token, answer[:200])
        assert headers["content-type"] == PROBLEM


# 5. Nothing secret in the log; log files 0600 --------------------------------------------


@contextlib.contextmanager
def logging_to(path: Path) -> Iterator[Path]:
    """The daemon's logging configured to *path*, as ``sidecar serve`` does; then undone."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("debug", "text", path)
    try:
        yield path
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    with logging_to(tmp_path / "logs" / "sidecar.log") as path:
        yield path


async def test_overlong_authorization_is_not_logged(api: Api, log_file: Path) -> None:
    secret = "S3cr3tT0ken"
    for value in (
        f"Bearer {secret}" + "A" * 9000,  # over aiohttp's 8190-byte line
        f"Bearer {secret}\x01",  # a control character
    ):
        answer = await exchange(
            api,
            f"GET /v1/uuids HTTP/1.1\r\nHost: localhost\r\nAuthorization: {value}\r\n\r\n".encode(),
        )
        assert secret.encode() not in answer
        assert parse_answer(answer)[0] in (400, 431)
    # and a well-formed but unknown long token, through the middlewares
    response = await api.client.get(
        "/v1/uuids", headers={"Authorization": f"Bearer {secret}" + "B" * 4000}
    )
    assert response.status == 401
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = log_file.read_text()
    assert "malformed HTTP request" in text  # the refusals were logged...
    assert secret not in text and "AAAA" not in text  # ...without the header


def test_log_file_is_created_0600(log_file: Path) -> None:
    logging.getLogger("sidecar.test").warning("a line")
    assert stat.S_IMODE(os.stat(log_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(log_file.parent).st_mode) == 0o700


def test_existing_log_file_is_made_0600(tmp_path: Path) -> None:
    path = tmp_path / "old.log"
    path.write_text("")
    path.chmod(0o644)
    with logging_to(path):
        pass
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# 6. Memory ------------------------------------------------------------------------------


def test_sandbox_simulator_keeps_a_bounded_number_of_bodies(stand_in_xsd: Path) -> None:
    # The main process of `serve --sandbox` grew by every fee note the simulator booked
    # (~70 KiB each, kept forever): the tracemalloc finding of issue 15.
    simulator = CnsSimulator(xsd=stand_in_xsd)
    for index in range(KEPT_BOOKINGS + 100):
        key = str(uuid.UUID(int=index, version=4))
        simulator.bookings[key] = b"x" * 1000
        simulator.booking_counts[key] += 1
    assert len(simulator.bookings) == KEPT_BOOKINGS
    assert simulator.stats()["bookings"] == KEPT_BOOKINGS + 100
    newest = str(uuid.UUID(int=KEPT_BOOKINGS + 99, version=4))
    assert simulator.bookings[newest] == b"x" * 1000


def test_freed_memory_is_given_back() -> None:
    """What "does not give it back" was, beyond the simulator: glibc's free lists."""

    def rss_mib() -> float:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmRSS"))
        return int(line.split()[1]) / 1024

    assert sys.platform.startswith("linux") and memory.give_back()  # CI: Linux, glibc
    blocks = [bytes(2000) + bytes([index % 256]) for index in range(40_000)]  # ~80 MiB
    kept = blocks[::50]  # a block kept here and there: the heap cannot shrink from its top
    del blocks
    gc.collect()
    freed = rss_mib()
    assert memory.give_back()
    assert rss_mib() < freed - 30, (freed, rss_mib())
    assert len(kept) == 800


async def test_the_daemon_trims_periodically(api: Api) -> None:
    # The trimming task runs for as long as the app does.
    names = [task.get_coro().__name__ for task in asyncio.all_tasks()]  # type: ignore[union-attr]
    assert "trim_periodically" in names
