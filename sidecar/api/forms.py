"""``POST /v1/forms/{profile}/sign``: the standardized-form recipe of a profile.

Body: ``multipart/form-data`` with the parts ``xml`` and ``pdf``, or ``application/xml``
with the PDF already embedded where the profile says. Answer: the signed XML, with
``X-Form-UUID``, ``X-Signature-Level`` (XML) and ``X-Pdf-Signature-Level`` headers.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..keys import Signer
from ..signing.forms import SignedForm, XmlSignFunction, sign_form
from ..signing.profiles import Profile
from ..signing.report import Level
from ..signing.sources import UpstreamFailure
from ..signing.trust_binding import TrustTimestampSource, TrustValidationDataSource
from ..signing.xades import sign_xml
from .authorisation import with_operation_pin
from .guards import read_body
from .keys import SETTINGS
from .multipart import form_parts
from .pdf import PADES, PROFILES
from .problems import Problem, bad_parameter
from .qualification import after_signing, before_signing
from .signing_keys import KEY_REGISTRY
from .timestamps import TRUST
from .xml import client_name, xades_options, xml_workers

__all__ = ["HANDLERS", "fee_note_signer", "sign_form_document", "xades_for"]

log = logging.getLogger("sidecar.signing")


#: The form takes two parts (``xml``, ``pdf``); a few more are tolerated (and refused
#: by name), thousands are an attack on the parser.
MAX_FORM_PARTS = 16


def xades_for(app: web.Application, client: str | None = None) -> XmlSignFunction:
    """The XAdES engine bound to the daemon's trust layer and ``[signing]`` options;
    ``client``: whose share of the drafting workers it uses."""
    settings = app[SETTINGS].signing
    trust = app.get(TRUST)

    async def xades(document: bytes, key: Signer, level: Level, form: Profile) -> bytes:
        try:
            options = xades_options(settings, dict(form.namespaces))
        except ValueError as exc:
            raise Problem(500, "configuration_error", str(exc)) from None
        timestamps = validation = None
        if trust is not None:
            if trust.tsa.endpoints:
                timestamps = TrustTimestampSource(trust.tsa)
            validation = TrustValidationDataSource(trust.revocation)
        return await sign_xml(
            document,
            key,
            level,
            options,
            timestamps=timestamps,
            validation_data=validation,
            workers=xml_workers(app),
            client=client,
        )

    return xades


def fee_note_signer(
    app: web.Application, *, fallback_level: Level | None = None
) -> Callable[[bytes], Awaitable[tuple[SignedForm, str]]]:
    """``async (xml) -> (signed form, key id)``: the ``fee-note`` recipe with the default
    key, for the CNS deposit of an unsigned fee note (installed as
    ``sidecar.api.cns.SIGN_FEE_NOTE`` by :func:`sidecar.api.cns.fee_note_context`).
    The PDF must already be embedded.

    *fallback_level* (the CNS offline mode): when the TSA or the revocation data cannot
    be had (:class:`UpstreamFailure` ``unavailable``/``timeout``), the XML is signed at
    this level instead; the result's ``xml_level`` says which level was made."""
    xades = xades_for(app)

    async def sign(xml: bytes) -> tuple[SignedForm, str]:
        profile = app[PROFILES].get("fee-note")
        if profile is None:
            raise Problem(404, "not_found", "no profile 'fee-note'")
        signer = await app[KEY_REGISTRY].acquire(None)
        made: list[Level] = []

        async def sign_xml_with_fallback(
            document: bytes, key: Signer, level: Level, form: Profile
        ) -> bytes:
            try:
                signed = await xades(document, key, level, form)
            except UpstreamFailure as exc:
                if fallback_level is None or exc.kind == "error":
                    raise
                log.warning(
                    "fee note signed at %s, %s unreachable (%s): held for a timestamp",
                    fallback_level.value,
                    exc.service,
                    exc.detail,
                )
                signed = await xades(document, key, fallback_level, form)
                level = fallback_level
            made.append(level)
            return signed

        signed = await sign_form(
            profile, xml, None, signer, pades=app[PADES], sign_xml=sign_xml_with_fallback
        )
        if made:
            signed = dataclasses.replace(signed, xml_level=made[-1])
        return signed, signer.id

    return sign


async def sign_form_document(request: web.Request) -> web.Response:
    app = request.app
    name = request.match_info["profile"]
    profile = app[PROFILES].get(name)
    if profile is None:
        raise Problem(404, "not_found", f"no profile {name!r}", profile=name)
    signer = await app[KEY_REGISTRY].acquire(request.query.get("key") or None)
    body = await read_body(request)
    pdf: bytes | None = None
    if request.content_type == "multipart/form-data":
        parts = await form_parts(
            request.headers.get("Content-Type", ""), body, max_parts=MAX_FORM_PARTS
        )
        unknown = sorted(set(parts) - {"xml", "pdf"})
        if unknown:
            raise bad_parameter(unknown[0], "unknown part (expected 'xml' and 'pdf')")
        if "xml" not in parts:
            raise bad_parameter("xml", "the part 'xml' is missing")
        xml = parts["xml"]
        pdf = parts.get("pdf")
    else:
        xml = body

    before_signing(app, signer)  # [trust.lists] at_signing
    signed = await sign_form(
        profile, xml, pdf, signer, pades=app[PADES], sign_xml=xades_for(app, client_name(request))
    )
    log.info(
        "signed a %s form (PDF %s, XML %s) with key %s",
        profile.name,
        signed.pdf_level.value if signed.pdf_level else "-",
        signed.xml_level.value if signed.xml_level else "unsigned",
        signer.id,
    )
    headers = {"X-Signature-Level": signed.xml_level.value if signed.xml_level else "none"}
    if signed.uuid:
        headers["X-Form-UUID"] = signed.uuid
    if signed.pdf_level:
        headers["X-Pdf-Signature-Level"] = signed.pdf_level.value
    headers.update(after_signing(app, signer))
    return web.Response(body=signed.xml, content_type="application/xml", headers=headers)


HANDLERS = {"signForm": with_operation_pin(sign_form_document)}
