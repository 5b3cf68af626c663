"""Untrusted XML: DTDs and entities refused unread, malformed input located, bounds kept."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from sidecar.signing.xml_safety import (
    UNBOUNDED_NAMESPACES,
    ForbiddenDtd,
    MalformedXml,
    NamespaceBounds,
    XmlLimitExceeded,
    parse_xml,
)
from tests.fixtures.daemon import Api
from tests.fixtures.sandbox import free_port


class Listener:
    """A loopback HTTP server counting requests: an XXE must never reach it."""

    def __init__(self) -> None:
        self.hits = 0
        self.url = ""


@pytest_asyncio.fixture
async def listener() -> AsyncIterator[Listener]:
    seen = Listener()

    async def handle(request: web.Request) -> web.Response:
        seen.hits += 1
        return web.Response(text='<!ENTITY leak "leaked">')

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    seen.url = f"http://127.0.0.1:{port}"
    yield seen
    await runner.cleanup()


def _attacks(url: str, secret: Path) -> dict[str, bytes]:
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    return {
        "dtd": b'<?xml version="1.0"?>\n<!DOCTYPE a [<!ELEMENT a (#PCDATA)>]><a/>',
        "external_entity_file": (
            f'<!DOCTYPE a [<!ENTITY x SYSTEM "file://{secret}">]><a>&x;</a>'.encode()
        ),
        "external_entity_http": (f'<!DOCTYPE a [<!ENTITY x SYSTEM "{url}/x">]><a>&x;</a>'.encode()),
        "parameter_entity": (
            f'<!DOCTYPE a [<!ENTITY % p SYSTEM "{url}/p.dtd"> %p;]><a>&leak;</a>'.encode()
        ),
        "external_dtd": f'<!DOCTYPE a SYSTEM "{url}/a.dtd"><a/>'.encode(),
        "billion_laughs": (
            f'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY l0 "lol">{laughs}]><a>&l9;</a>'
        ).encode(),
    }


@pytest.mark.parametrize(
    "attack",
    [
        "dtd",
        "external_entity_file",
        "external_entity_http",
        "parameter_entity",
        "external_dtd",
        "billion_laughs",
    ],
)
async def test_dtd_attacks_refused_unread(attack: str, listener: Listener, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    document = _attacks(listener.url, secret)[attack]
    tracemalloc.start()
    started = time.process_time()
    try:
        with pytest.raises(ForbiddenDtd) as caught:
            parse_xml(document)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert listener.hits == 0
    assert "TOP-SECRET" not in str(caught.value)
    # Refused before any expansion: no growth (a billion laughs would need gigabytes).
    assert peak < 2 * 1024**2
    assert time.process_time() - started < 5  # a generous ceiling, not a benchmark


@pytest.mark.parametrize(
    ("document", "line", "column"),
    [
        (b"<a>\n  <b></a>", 2, 8),
        (b'<?xml version="1.0"?>\n<a x="1" x="2"/>', 2, 10),
        (b"<a>&undefined;</a>", 1, 4),
        (b"<p:a/>", 1, 1),
        (b"<a></a><b/>", 1, 8),
    ],
)
def test_malformed_has_line_and_column(document: bytes, line: int, column: int) -> None:
    with pytest.raises(MalformedXml) as caught:
        parse_xml(document)
    assert (caught.value.line, caught.value.column) == (line, column), caught.value


def test_bounds() -> None:
    deep = b"<a>" * 200 + b"</a>" * 200
    with pytest.raises(XmlLimitExceeded):
        parse_xml(deep, max_depth=128)
    assert parse_xml(deep, max_depth=256).root.tag == "a"
    with pytest.raises(XmlLimitExceeded):
        parse_xml(b"<a>" + b"x" * 2000 + b"</a>", max_size=1000)
    with pytest.raises(MalformedXml):
        parse_xml(b"  \n")


def _declaring(count: int, *, nested: bool) -> bytes:
    """``count`` namespace declarations, all on the root or one per sibling element."""
    if nested:
        declarations = " ".join(f'xmlns:p{i}="urn:n:{i}"' for i in range(count))
        return f"<r {declarations}><c/></r>".encode()
    return ("<r>" + "".join(f'<c xmlns:p{i}="urn:n:{i}"/>' for i in range(count)) + "</r>").encode()


def test_namespace_declarations_are_bounded_in_total_and_in_scope() -> None:
    bounds = NamespaceBounds(total=100, in_scope=10)
    parse_xml(_declaring(10, nested=True), namespaces=bounds)
    with pytest.raises(XmlLimitExceeded, match="more than 10 namespace declarations in scope"):
        parse_xml(_declaring(11, nested=True), namespaces=bounds)
    # Declarations that go out of scope count in the total only.
    parse_xml(_declaring(100, nested=False), namespaces=bounds)
    with pytest.raises(XmlLimitExceeded, match="more than 100 namespaces"):
        parse_xml(_declaring(101, nested=False), namespaces=bounds)
    # The defaults refuse what the issue measured (10,000 on one element: 13-17 s to
    # canonicalise; 100,000: 19+ minutes) at the first declaration too many.
    for count in (10_000, 100_000):
        started = time.monotonic()
        with pytest.raises(XmlLimitExceeded):
            parse_xml(_declaring(count, nested=True))
        assert time.monotonic() - started < 2
    assert len(parse_xml(_declaring(65, nested=True), namespaces=UNBOUNDED_NAMESPACES).root.nsmap)


async def test_api_refuses_dtd_and_malformed(sandbox_api: Api, listener: Listener) -> None:
    headers = {**sandbox_api.auth(), "Content-Type": "application/xml"}
    for route in ("/v1/xml/sign?level=B-B", "/v1/verify"):
        attack = f'<!DOCTYPE a [<!ENTITY x SYSTEM "{listener.url}/x">]><a>&x;</a>'.encode()
        response = await sandbox_api.client.post(route, data=attack, headers=headers)
        assert response.status == 422, await response.text()
        assert (await response.json())["code"] == "forbidden_dtd"
        response = await sandbox_api.client.post(route, data=b"<a>\n<b></a>", headers=headers)
        assert response.status == 400
        body = await response.json()
        assert body["code"] == "malformed_xml"
        assert (body["line"], body["column"]) == (2, 6)
    assert listener.hits == 0


def test_depth_beyond_lxml_bound_is_a_limit() -> None:
    # lxml refuses more than 256 levels by itself: still reported as our bound.
    deep = b"<a>" * 300 + b"</a>" * 300
    with pytest.raises(XmlLimitExceeded):
        parse_xml(deep, max_depth=128)
    with pytest.raises(XmlLimitExceeded):
        parse_xml(b"<a>" * 129 + b"</a>" * 129, max_depth=128)
    assert parse_xml(b"<a>" * 128 + b"</a>" * 128, max_depth=128).root.tag == "a"


@pytest.mark.parametrize(
    "document",
    [
        b"<a/>",
        b"<a/>\r\n\n",
        b"<a x='1'\n/>",
        b"<a><b/>text</a>",
        b'\xef\xbb\xbf<?xml version="1.0"?><!-- <b> --><?pi <c> ?>\n<p:a xmlns:p="u" x=">">'
        b"<b/></p:a  >\n",
        b"<a><![CDATA[</a>]]></a>",
        b"<a><?pi </a>?></a>",
        b"<a><b/></a><!-- </a> -->",  # a comment after the root: the full scan
        b"<a><b/></a><?pi </a>?>",
        b"<?xml version='1.0' encoding='ISO-8859-1'?><a>\xe9</a>",
    ],
)
def test_root_span_matches_the_full_scan(document: bytes) -> None:
    parsed = parse_xml(document)
    quick = parsed.span_of(parsed.root)  # before the full scan ran
    assert quick == parsed.spans[0]


def test_spans_are_computed_only_when_needed() -> None:
    parsed = parse_xml(b'<?xml version="1.0"?>\n<a>\n  <b/>\n</a>\n')
    assert parsed.span_of(parsed.root).end == parsed.data.rindex(b"</a>")
    assert "spans" not in vars(parsed)  # the document element needed no full scan
    assert len(parsed.spans) == 2
