"""``POST /v1/forms/{profile}/sign``: the standardized-form recipe of a profile.

Body: ``multipart/form-data`` with the parts ``xml`` and ``pdf``, or ``application/xml``
with the PDF already embedded where the profile says. Answer: the signed XML, with
``X-Form-UUID``, ``X-Signature-Level`` (XML) and ``X-Pdf-Signature-Level`` headers.
"""

from __future__ import annotations

from aiohttp import web

from ..operations.signing import FormSigning, sign_form_document
from .appkeys import SERVICES
from .authorisation import with_operation_pin
from .guards import read_body
from .media import media_type
from .multipart import form_parts
from .problems import bad_parameter
from .qualification import qualification_headers
from .xml import client_name, named_profile

__all__ = ["HANDLERS", "sign_form"]


#: The form takes two parts (``xml``, ``pdf``); a few more are tolerated (and refused
#: by name), thousands are an attack on the parser.
MAX_FORM_PARTS = 16


async def sign_form(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    profile = named_profile(services, request.match_info["profile"])
    body = await read_body(request)
    pdf: bytes | None = None
    if media_type(request) == "multipart/form-data":
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
    signing = FormSigning(
        profile, xml, pdf, key=request.query.get("key") or None, client=client_name(request)
    )
    signed = await sign_form_document(services, signing)
    headers = {"X-Signature-Level": signed.level.value}
    if signed.uuid:
        headers["X-Form-UUID"] = signed.uuid
    if signed.pdf_level:
        headers["X-Pdf-Signature-Level"] = signed.pdf_level.value
    headers.update(qualification_headers(signed.verdict))
    return web.Response(body=signed.data, content_type="application/xml", headers=headers)


HANDLERS = {"signForm": with_operation_pin(sign_form)}
