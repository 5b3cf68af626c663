"""``POST /v1/forms/{profile}/sign``: the standardized-form recipe of a profile.

Body: ``multipart/form-data`` with the parts ``xml`` and ``pdf``, or ``application/xml``
with the PDF already embedded where the profile says. Answer: the signed XML, with
``X-Form-UUID``, ``X-Signature-Level`` (XML) and ``X-Pdf-Signature-Level`` headers.
"""

from __future__ import annotations

from aiohttp import web

from ..operations.signing import FormSigning, sign_form_document
from ..signing.forms import FormError, SchemaViolation
from .appkeys import SERVICES
from .authorisation import with_operation_pin
from .guards import read_body
from .multipart import form_parts
from .problems import Problem, bad_parameter, register_problem_mapper
from .qualification import qualification_headers
from .xml import client_name, named_profile

__all__ = ["HANDLERS", "sign_form"]


def _schema_violation(exc: SchemaViolation) -> Problem:
    detail = (
        f"the document does not match the XSD of profile {exc.profile!r}"
        if exc.stage == "input"
        else f"the signed result does not match the XSD of profile {exc.profile!r}"
    )
    return Problem(
        422,
        "schema_violation",
        detail,
        errors=[e.as_json() for e in exc.errors],
        profile=exc.profile,
        stage=exc.stage,
    )


def _form_error(exc: FormError) -> Problem:
    if exc.reason == "bad_base64":
        return Problem(400, "malformed_pdf", exc.detail, reason=exc.reason)
    if exc.reason in {"pdf_missing", "pdf_unexpected"}:
        return Problem(400, "bad_parameter", exc.detail, parameter="pdf", reason=exc.reason)
    if exc.reason == "element_missing":
        return Problem(422, "schema_violation", exc.detail, reason=exc.reason, errors=[])
    return Problem(503, "upstream_unavailable", exc.detail, reason=exc.reason)


#: The form takes two parts (``xml``, ``pdf``); a few more are tolerated (and refused
#: by name), thousands are an attack on the parser.
MAX_FORM_PARTS = 16

register_problem_mapper(SchemaViolation, _schema_violation)
register_problem_mapper(FormError, _form_error)


async def sign_form(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    profile = named_profile(services, request.match_info["profile"])
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
