"""``multipart/form-data`` bodies (RFC 7578) read without stalling the event loop.

The body was read whole, bounded by the route's limit. What it costs to split it is
what used to freeze the daemon: the standard library's e-mail parser goes line by
line in Python, so 16.5 MB of 300,000 parts held the loop (and every other request)
for 40 s. Here:

- the parts are counted first with one C-speed search for the delimiter: more than
  the route takes (``max_parts``) is refused at once (400 ``bad_parameter``);
- the split itself is a handful of ``bytes.find`` calls per part (C speed, linear);
  only the small header block of each part goes through the e-mail header parser;
- a body over :data:`ON_LOOP_BYTES` is split in a thread, under a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.parser
import email.policy
import quopri
import re
from typing import Any

from aiohttp.helpers import parse_mimetype

from .media import simple_header, simple_part_headers
from .problems import Problem, bad_parameter

__all__ = ["ON_LOOP_BYTES", "form_parts"]

#: Up to this size the split costs less than a hop to a thread.
ON_LOOP_BYTES = 256 * 1024
#: A body split in a thread must be done within this many seconds (it takes
#: milliseconds: linear in the size, and the size is bounded by the route's limit).
SPLIT_DEADLINE = 10.0

#: RFC 2046 section 5.1.1: 1-70 characters of this set, not ending with a space.
_BOUNDARY = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$")
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.HTTP)


def _boundary(content_type: str) -> bytes:
    """The boundary parameter of a ``multipart/form-data`` Content-Type."""
    mime = parse_mimetype(content_type)
    if (mime.type, mime.subtype) != ("multipart", "form-data"):
        raise bad_parameter("body", "not a multipart/form-data body")
    boundary = mime.parameters.get("boundary")
    if not isinstance(boundary, str) or not _BOUNDARY.match(boundary):
        raise bad_parameter(
            "Content-Type",
            "the multipart boundary must be 1-70 letters, digits or '()+_,-./:=? (RFC 2046)",
        )
    return boundary.encode("ascii")


def _split(body: bytes, boundary: bytes, max_parts: int) -> list[bytes]:
    """The parts' bytes (headers and content), between the delimiters."""
    delimiter = b"--" + boundary
    # More delimiters than parts allowed (+1: the closing one): refused before any work.
    if body.count(delimiter) > max_parts + 1:
        raise bad_parameter("body", f"the multipart body has more than {max_parts} parts")
    if body.startswith(delimiter):
        at = 0
    else:  # a preamble before the first delimiter
        at = body.find(b"\r\n" + delimiter)
        if at < 0:
            raise bad_parameter("body", "the multipart body has no boundary line")
        at += 2
    parts: list[bytes] = []
    while True:
        at += len(delimiter)
        if body.startswith(b"--", at):  # the closing delimiter
            return parts
        line_end = body.find(b"\r\n", at)
        if line_end < 0 or body[at:line_end].strip(b" \t"):
            raise bad_parameter("body", "a multipart boundary line is malformed")
        start = line_end + 2
        end = body.find(b"\r\n" + delimiter, start)
        if end < 0:
            raise bad_parameter("body", "the multipart body has no closing boundary")
        parts.append(body[start:end])
        at = end + 2


def _decode(part: bytes) -> tuple[str | None, bytes]:
    """A part's name (Content-Disposition) and its content, transfer encoding undone."""
    if part.startswith(b"\r\n"):
        head, content = b"", part[2:]
    else:
        head, separator, content = part.partition(b"\r\n\r\n")
        if not separator:
            raise bad_parameter("body", "a multipart part has no blank line after its headers")
    name, encoding = _part_headers(head)
    if encoding == "base64":
        try:
            content = base64.b64decode(content)
        except (binascii.Error, ValueError):
            raise bad_parameter("body", "a base64 multipart part does not decode") from None
    elif encoding == "quoted-printable":
        content = quopri.decodestring(content)
    return (name if isinstance(name, str) else None), content


def _part_headers(head: bytes) -> tuple[Any, str]:
    """A part's ``name`` (Content-Disposition) and its Content-Transfer-Encoding
    (lowercased), as the e-mail header parser reads them, without it when simple."""
    simple = simple_part_headers(head + b"\r\n")
    if simple is not None:
        disposition = simple.get("content-disposition")
        parsed = simple_header(disposition) if disposition is not None else None
        if disposition is None or parsed is not None:
            given = parsed[1].get("name") if parsed is not None else None
            return given, simple.get("content-transfer-encoding", "").strip().lower()
    headers = _HEADERS.parsebytes(head + b"\r\n")
    name = headers.get_param("name", header="content-disposition")
    return name, str(headers.get("Content-Transfer-Encoding", "")).strip().lower()


def _parse(content_type: str, body: bytes, max_parts: int) -> dict[str, bytes]:
    boundary = _boundary(content_type)
    parts: dict[str, bytes] = {}
    for raw in _split(body, boundary, max_parts):
        name, content = _decode(raw)
        if name is None:
            continue
        if name in parts:
            raise bad_parameter(name, "the part is given twice")
        parts[name] = content
    return parts


async def form_parts(content_type: str, body: bytes, *, max_parts: int) -> dict[str, bytes]:
    """The named parts of a ``multipart/form-data`` body (``content_type`` is the whole
    header, boundary included); :class:`Problem` 400 when it is not one, or has more
    than ``max_parts`` parts."""
    if len(body) <= ON_LOOP_BYTES:
        return _parse(content_type, body, max_parts)
    try:
        async with asyncio.timeout(SPLIT_DEADLINE):
            return await asyncio.to_thread(_parse, content_type, body, max_parts)
    except TimeoutError:
        raise Problem(
            400,
            "bad_parameter",
            f"the multipart body could not be read within {SPLIT_DEADLINE:g} s",
            parameter="body",
        ) from None
