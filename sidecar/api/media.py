"""Content-Type and part headers read without the e-mail package, when they are simple.

aiohttp reads a Content-Type with the standard library's e-mail header parser (tens of
microseconds; cached for repeated values, but a multipart body's boundary is new at
every request), and a multipart part's headers went through it too. Almost every
header a program sends is simple: ``type/subtype`` and ``name=value`` parameters
(tokens, or quoted strings without escapes). Those are read here with one regular
expression, giving exactly what the e-mail parser gives; anything else (comments,
escapes, RFC 2231 or encoded words, folded lines, other bytes) still goes to it.
"""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.helpers import parse_content_type

__all__ = ["media_type", "simple_header", "simple_part_headers"]

# RFC 9110 section 5.6.2, without "*" (RFC 2231's continuations and charsets).
_TOKEN = r"[A-Za-z0-9!#$%&'+.^_`|~-]+"
_PARAMETER = re.compile(rf"[ \t]*;[ \t]*({_TOKEN})=(?:({_TOKEN})|\"([^\"\\]*)\")[ \t]*")
_VALUE = re.compile(rf"[ \t]*({_TOKEN}(?:/{_TOKEN})?)[ \t]*((?:;[^;]*)*)")
_HEADER_LINE = re.compile(r"([A-Za-z0-9-]+):[ \t]*([\x20-\x7e]*?)[ \t]*")


def simple_header(value: str) -> tuple[str, dict[str, str]] | None:
    """``(value lowercased, parameters)`` of a simple header value (``form-data;
    name="xml"``, ``multipart/form-data; boundary=x``), parameter names lowercased, as
    the e-mail parser reads them; ``None`` when the value is not that simple (a name
    given twice included: readers of the e-mail parser's answer differ on which one
    counts), and the caller asks the e-mail parser."""
    match = _VALUE.fullmatch(value)
    if match is None or "=?" in value:
        return None
    parameters: dict[str, str] = {}
    rest, at = match[2], 0
    while at < len(rest):
        parameter = _PARAMETER.match(rest, at)
        if parameter is None:
            return None
        name, token, quoted = parameter.groups()
        name = name.lower()
        if name in parameters:  # the e-mail parser's get_param takes the first, aiohttp the last
            return None
        parameters[name] = token if token is not None else quoted
        at = parameter.end()
    return match[1].lower(), parameters


def _content_type(raw: str | None) -> str:
    """aiohttp's ``request.content_type`` of a Content-Type header."""
    if raw is None:
        return "application/octet-stream"  # RFC 9110 section 8.3
    simple = simple_header(raw)
    if simple is not None and "/" in simple[0]:
        return simple[0]
    return parse_content_type(raw)[0]


_MEDIA_TYPE = web.RequestKey("media_type", str)


def media_type(request: web.Request) -> str:
    """The request's media type, as ``request.content_type`` gives it (read once)."""
    known = request.get(_MEDIA_TYPE)
    if known is None:
        known = request[_MEDIA_TYPE] = _content_type(request.headers.get("Content-Type"))
    return known


def simple_part_headers(head: bytes) -> dict[str, str] | None:
    """A multipart part's header block (lines ending CRLF) as lowercased name → value
    (the first of a repeated name, as the e-mail parser's ``get`` gives), or ``None``
    when a line is not simple (folded, not ASCII, not ``Name: value``)."""
    headers: dict[str, str] = {}
    if head == b"\r\n":  # no header at all
        return headers
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not text.endswith("\r\n"):
        return None
    for line in text[:-2].split("\r\n"):
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            return None
        headers.setdefault(match[1].lower(), match[2])
    return headers
