"""``multipart/form-data`` bodies: split without the e-mail parser's per-line Python
loop, capped in parts, large ones off the event loop (issue "Freezes")."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request

import aiohttp
import pytest
from aiohttp import payload

from sidecar.api.multipart import ON_LOOP_BYTES, form_parts
from sidecar.api.problems import Problem
from tests.fixtures.daemon import Api


async def _encoded(form: aiohttp.FormData) -> tuple[str, bytes]:
    """The Content-Type and the body aiohttp's own client would send for ``form``."""
    body = form()
    assert isinstance(body, payload.Payload)
    chunks: list[bytes] = []

    class Sink:
        async def write(self, data: bytes) -> None:
            chunks.append(bytes(data))

    await body.write(Sink())  # type: ignore[arg-type]
    return body.content_type if not body.headers else body.headers["Content-Type"], b"".join(chunks)


@pytest.mark.parametrize("size", [100, ON_LOOP_BYTES + 1])  # on the loop, in a thread
async def test_parts_as_a_real_client_sends_them(size: int) -> None:
    form = aiohttp.FormData()
    xml = b"<a>" + b"x" * size + b"</a>"
    pdf = bytes(range(256)) * 4 + b"\r\n--not-the-boundary\r\n"
    form.add_field("xml", xml, filename="f.xml", content_type="application/xml")
    form.add_field("pdf", pdf, filename="f.pdf", content_type="application/pdf")
    content_type, body = await _encoded(form)
    assert await form_parts(content_type, body, max_parts=16) == {"xml": xml, "pdf": pdf}


async def test_preamble_transfer_encodings_and_unnamed_parts() -> None:
    body = (
        b"preamble to ignore\r\n"
        b"--b0undary \r\n"  # transport padding after a delimiter is allowed
        b'Content-Disposition: form-data; name="xml"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        b"PGEvPg==\r\n"
        b"--b0undary\r\n"
        b"Content-Type: text/plain\r\n\r\n"
        b"no name: skipped\r\n"
        b"--b0undary--\r\nepilogue"
    )
    parts = await form_parts("multipart/form-data; boundary=b0undary", body, max_parts=4)
    assert parts == {"xml": b"<a/>"}


@pytest.mark.parametrize(
    ("content_type", "body", "words"),
    [
        ("multipart/form-data; boundary=b", b"--b\r\n\r\nx", "no closing boundary"),
        ("multipart/form-data; boundary=b", b"nothing here", "no boundary line"),
        ("multipart/form-data; boundary=b", b"--bx\r\n\r\n\r\n--b--", "malformed"),
        ("multipart/form-data; boundary=b\u00e9", "--b\u00e9--".encode(), "boundary"),
        ("multipart/form-data", b"--b--", "boundary"),
        ("text/plain; boundary=b", b"--b--", "not a multipart"),
        (
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n' * 2 + b"--b--",
            "given twice",
        ),
    ],
)
async def test_refusals_are_400(content_type: str, body: bytes, words: str) -> None:
    with pytest.raises(Problem) as refused:
        await form_parts(content_type, body, max_parts=16)
    assert refused.value.status == 400 and refused.value.code == "bad_parameter"
    assert words in refused.value.detail


def _many_parts(count: int) -> bytes:
    """``count`` small named parts: 16.5 MB for 300,000."""
    parts = b"".join(
        b'--heavy\r\nContent-Disposition: form-data; name="p%d"\r\n\r\nx\r\n' % i
        for i in range(count)
    )
    return parts + b"--heavy--\r\n"


async def test_300000_parts_while_another_client_polls_health(sandbox_api: Api) -> None:
    """The form route refuses 300,000 parts (400) while a second client's
    ``/v1/health`` polls, every 100 ms, each answer within 250 ms."""
    body = _many_parts(300_000)
    assert len(body) > 16_000_000
    latencies: list[float] = []
    done = threading.Event()
    url = str(sandbox_api.client.make_url("/v1/health"))

    def poll() -> None:
        # A thread of its own: a poller on the test's loop (the daemon's, in process)
        # would stall with it and never see the stall.
        for _ in range(600):  # bounded: 60 s at most
            started = time.monotonic()
            with urllib.request.urlopen(url, timeout=60) as response:
                response.read()
            latencies.append(time.monotonic() - started)
            if done.is_set() and len(latencies) >= 5:
                return
            time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))

    poller = threading.Thread(target=poll)
    poller.start()
    await asyncio.sleep(0.3)
    started = time.monotonic()
    response = await sandbox_api.client.post(
        "/v1/forms/fee-note/sign",
        data=body,
        headers={
            **sandbox_api.auth("signer"),
            "Content-Type": "multipart/form-data; boundary=heavy",
        },
    )
    took = time.monotonic() - started
    problem = await response.json()
    done.set()
    await asyncio.to_thread(poller.join, 60)
    worst = max(latencies)
    print(f"300,000 parts: answered in {took:.2f} s; {len(latencies)} polls, worst {worst:.3f} s")
    assert response.status == 400, problem
    assert problem["code"] == "bad_parameter" and "more than 16 parts" in problem["detail"]
    assert worst < 0.25, sorted(latencies)[-5:]
