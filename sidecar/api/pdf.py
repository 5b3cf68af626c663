"""``POST /v1/pdf/sign``: the request read into :class:`~sidecar.operations.signing.PdfSigning`,
signed by :func:`~sidecar.operations.signing.sign_pdf_document`, and how the PDF
engine's failures are answered."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from ..operations.signing import PdfSigning, sign_pdf_document
from ..signing.pades import VisibleStamp, parse_level
from .appkeys import SERVICES
from .authorisation import with_operation_pin
from .guards import read_body
from .problems import bad_parameter
from .qualification import qualification_headers

__all__ = ["HANDLERS", "pdf_signing", "sign_pdf"]


#: Query parameters of signPdf besides the contract's (extensions, documented in openapi).
_TEXT_LIMIT = 200


def _text(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if len(value) > _TEXT_LIMIT or any(ord(c) < 0x20 for c in value):
        raise bad_parameter(name, f"at most {_TEXT_LIMIT} printable characters")
    return value


def _stamp(request: web.Request) -> VisibleStamp | None:
    """``?visible=true[&page=N&box=x1,y1,x2,y2]``: a visible stamp (default invisible)."""
    visible = request.query.get("visible", "false").lower()
    if visible not in {"true", "false", "1", "0"}:
        raise bad_parameter("visible", "true or false")
    if visible in {"false", "0"}:
        return None
    try:
        page = int(request.query.get("page", "1"))
    except ValueError:
        raise bad_parameter("page", "a page number (1 = first, -1 = last)") from None
    if page == 0:
        raise bad_parameter("page", "a page number (1 = first, -1 = last)")
    box_text = request.query.get("box")
    if box_text is None:
        return VisibleStamp(page=page)
    try:
        x1, y1, x2, y2 = (int(v) for v in box_text.split(","))
    except ValueError:
        raise bad_parameter("box", "x1,y1,x2,y2 in points") from None
    if x2 - x1 < 20 or y2 - y1 < 10:
        raise bad_parameter("box", "at least 20 x 10 points, x1 < x2 and y1 < y2")
    return VisibleStamp(page=page, box=(x1, y1, x2, y2))


def pdf_signing(request: web.Request, default_level: str) -> PdfSigning:
    """The request's query read into what the operation takes (the body still to add)."""
    try:
        level = parse_level(request.query.get("level", default_level))
    except ValueError as exc:
        raise bad_parameter("level", str(exc)) from None
    return PdfSigning(
        b"",
        key=request.query.get("key") or None,
        level=level,
        reason=_text(request, "reason"),
        location=_text(request, "location"),
        contact_info=_text(request, "contact"),
        stamp=_stamp(request),
        require_pdfa=request.query.get("require_pdfa", "false").lower() in {"true", "1"},
    )


async def sign_pdf(request: web.Request) -> web.Response:
    """PAdES-sign the body (application/pdf) at ``?level=`` (default B-LT)."""
    services = request.app[SERVICES]
    signing = pdf_signing(request, services.settings.signing.pdf_level)
    body = await read_body(request)
    signed = await sign_pdf_document(services, dataclasses.replace(signing, document=body))
    return web.Response(
        body=signed.data,
        content_type="application/pdf",
        headers={
            "X-Signature-Level": signed.level.value,
            "X-Signature-Field": signed.field_name or "",
            **qualification_headers(signed.verdict),
        },
    )


HANDLERS = {"signPdf": with_operation_pin(sign_pdf)}
