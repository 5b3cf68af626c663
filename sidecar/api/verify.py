"""``POST /v1/verify``: one EN 319 102-1 report per signature of an XML or PDF document.

Dispatches on the Content-Type: XML to :func:`sidecar.signing.xades_verify.verify_xml`
(in the bounded PDF/XML workers, within ``[signing] verify_timeout``),
PDF to :func:`sidecar.signing.pades_verify.verify_pdf`, parsed first in the bounded PDF
worker. A standardized form (an XML whose profile embeds a PDF) is reported twice over:
its XAdES signature, and the embedded PDF's PAdES signature under ``embedded_pdf``, each
of those with ``accepted`` and a ``note`` (PAdES-B by design: see
:func:`sidecar.signing.forms.embedded_pdf_note`).
Validation uses only what the document carries — the
certificates, CRLs and OCSP responses embedded in it — against the trust layer's
anchors: that is what says whether a B-LT signature is really long-term.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from asn1crypto import x509

from ..signing.forms import embedded_pdf, embedded_pdf_note
from ..signing.pades_verify import verify_pdf
from ..signing.qualification import qualify_reports
from ..signing.report import SignatureReport
from ..signing.xades_verify import VerificationPolicy, verify_xml_bounded
from ..signing.xml_safety import parse_xml
from .guards import read_body
from .keys import SANDBOX_PKI, SETTINGS
from .pdf import PADES, PROFILES
from .timestamps import TRUST

__all__ = ["HANDLERS", "verify_document"]

log = logging.getLogger("sidecar.verify")

_XML = ("application/xml", "text/xml")


def _trust_roots(app: web.Application) -> Sequence[x509.Certificate]:
    trust = app.get(TRUST)
    if trust is not None:
        return list(trust.anchors.certificates)
    sandbox = app.get(SANDBOX_PKI)
    if sandbox is not None:
        from ..trust import load_certificates

        return load_certificates(sandbox.roots_pem)
    return []


def _report_json(
    app: web.Application, reports: Sequence[SignatureReport], kind: str
) -> dict[str, Any]:
    # Qualification from the EU trusted lists (n/a, "not configured", without them).
    trust = app.get(TRUST)
    lists = trust.lists.current if trust is not None and trust.lists is not None else None
    roots = list(trust.anchors.certificates) if trust is not None else []
    qualify_reports(reports, lists, roots)
    return {"format": kind, "signatures": [r.as_json() for r in reports]}


async def verify_document(request: web.Request) -> web.Response:
    """``verify``: ``{"format", "signatures": [report...]}`` (+ ``embedded_pdf`` for a form)."""
    body = await read_body(request)
    app = request.app
    roots = _trust_roots(app)
    inspector = app[PADES].inspector
    if request.content_type not in _XML:
        reports = await verify_pdf(body, trust_roots=roots, inspector=inspector)
        return web.json_response(_report_json(app, reports, "pdf"))
    policy = VerificationPolicy(trust_roots=roots, max_size=app[SETTINGS].limits.xml)
    reports = await verify_xml_bounded(
        body, policy, inspector, app[SETTINGS].signing.verify_timeout
    )
    answer = _report_json(app, reports, "xml")
    # The XML was refused already if it is unsafe; this parse only finds the PDF.
    parsed = await asyncio.to_thread(parse_xml, body, max_size=policy.max_size)
    found = embedded_pdf(parsed.tree, app[PROFILES])
    if found is not None:
        profile, pdf = found
        pdf_reports = await verify_pdf(pdf, trust_roots=roots, inspector=inspector)
        answer["profile"] = profile.name
        embedded = _report_json(app, pdf_reports, "pdf")
        embedded["profile_level"] = profile.pdf_level.value
        for entry, report in zip(embedded["signatures"], pdf_reports, strict=True):
            # Whether this signature is what the form asks for; ``note`` says why when
            # that is so without TOTAL_PASSED (PAdES-B by design).
            entry["note"] = embedded_pdf_note(report, profile)
            entry["accepted"] = report.indication == "TOTAL_PASSED" or entry["note"] is not None
        answer["embedded_pdf"] = embedded
    return web.json_response(answer)


HANDLERS = {"verify": verify_document}
