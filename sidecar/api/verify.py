"""``POST /v1/verify``: one EN 319 102-1 report per signature of an XML or PDF document.

Dispatches on the Content-Type (XML, or else PDF) to
:func:`sidecar.operations.verify.verify_document`, which says what is checked and how.
"""

from __future__ import annotations

from aiohttp import web

from ..operations.verify import verify_document
from .appkeys import SERVICES
from .guards import read_body

__all__ = ["HANDLERS", "verify"]

_XML = ("application/xml", "text/xml")


async def verify(request: web.Request) -> web.Response:
    """``verify``: ``{"format", "signatures": [report...]}`` (+ ``embedded_pdf`` for a form)."""
    body = await read_body(request)
    report = await verify_document(request.app[SERVICES], body, xml=request.content_type in _XML)
    return web.json_response(report)


HANDLERS = {"verify": verify}
