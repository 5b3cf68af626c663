"""``POST /v1/pdf/sign`` and the signing subsystem (PDF engine, form profiles).

:func:`signing_context` (in ``SUBSYSTEMS`` after keys and trust) builds the PAdES
engine on the trust layer (its checked TSA client, its revocation service), the
worker pool that reads callers' PDFs, and the profile registry; handlers find
them under :data:`PADES` and :data:`PROFILES`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ..signing.pades import PadesEngine, PadesOptions, VisibleStamp, parse_level
from ..signing.pdf_checks import PdfInspector, PdfLimits
from ..signing.profiles import BUNDLED_PROFILE_DIR, ProfileError, ProfileRegistry
from ..signing.trust_binding import TrustValidationDataSource
from .authorisation import with_operation_pin
from .guards import read_body
from .keys import SETTINGS
from .problems import bad_parameter
from .qualification import after_signing, before_signing
from .signing_keys import KEY_REGISTRY
from .timestamps import TRUST

__all__ = ["HANDLERS", "PADES", "PROFILES", "sign_pdf", "signing_context"]

log = logging.getLogger("sidecar.signing")

PADES = web.AppKey("pades", PadesEngine)
PROFILES = web.AppKey("profiles", ProfileRegistry)

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


def pdf_options(request: web.Request, default_level: str) -> PadesOptions:
    try:
        level = parse_level(request.query.get("level", default_level))
    except ValueError as exc:
        raise bad_parameter("level", str(exc)) from None
    return PadesOptions(
        level=level,
        reason=_text(request, "reason"),
        location=_text(request, "location"),
        contact_info=_text(request, "contact"),
        stamp=_stamp(request),
        require_pdfa=request.query.get("require_pdfa", "false").lower() in {"true", "1"},
    )


async def sign_pdf(request: web.Request) -> web.Response:
    """PAdES-sign the body (application/pdf) at ``?level=`` (default B-LT)."""
    app = request.app
    options = pdf_options(request, app[SETTINGS].signing.pdf_level)
    signer = await app[KEY_REGISTRY].acquire(request.query.get("key") or None)
    body = await read_body(request)
    before_signing(app, signer)  # [trust.lists] at_signing
    signed = await app[PADES].sign(body, signer, options)
    log.info(
        "signed a PDF at %s with key %s (%d -> %d bytes)",
        signed.level.value,
        signer.id,
        len(body),
        len(signed.data),
    )
    return web.Response(
        body=signed.data,
        content_type="application/pdf",
        headers={
            "X-Signature-Level": signed.level.value,
            "X-Signature-Field": signed.field_name,
            **after_signing(app, signer),
        },
    )


async def signing_context(app: web.Application) -> AsyncIterator[None]:
    """Subsystem: the PDF engine over the trust layer, the PDF workers, the profiles."""
    settings = app[SETTINGS].signing
    try:
        profiles = ProfileRegistry.load([BUNDLED_PROFILE_DIR, *settings.profile_dirs])
    except ProfileError as exc:
        from ..config import ConfigError

        raise ConfigError(app[SETTINGS].source, "signing.profile_dirs", str(exc)) from None
    app[PROFILES] = profiles
    inspector = PdfInspector(
        PdfLimits(
            max_objects=settings.pdf_max_objects,
            timeout=settings.pdf_parse_timeout,
            worker_memory=settings.pdf_worker_memory,
            workers=settings.pdf_workers,
            verify_timeout=settings.verify_timeout,
            idle_exit=settings.worker_idle_exit,
        )
    )
    trust = app.get(TRUST)
    timestamper = trust.tsa.timestamper() if trust is not None else None
    validation = TrustValidationDataSource(trust.revocation) if trust is not None else None
    app[PADES] = PadesEngine(
        inspector=inspector, timestamper=timestamper, validation_data=validation
    )
    log.info("signing: %d profile(s): %s", len(profiles), ", ".join(p.name for p in profiles))
    try:
        yield
    finally:
        inspector.close()


HANDLERS = {"signPdf": with_operation_pin(sign_pdf)}
