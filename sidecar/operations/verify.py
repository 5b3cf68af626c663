"""Verify a document: one EN 319 102-1 report per signature of an XML or PDF document.

XML goes to :func:`sidecar.signing.xades_verify.verify_xml_bounded` (in the bounded
workers, within ``[signing] verify_timeout``), a PDF to
:func:`sidecar.signing.pades_verify.verify_pdf`, parsed first in the bounded PDF
worker. A standardized form (an XML whose profile embeds a PDF) is reported twice
over: its XAdES signature, and the embedded PDF's PAdES signature under
``embedded_pdf``, each of those with ``accepted`` and a ``note`` (PAdES-B by design:
see :func:`sidecar.signing.forms.embedded_pdf_note`). Validation uses only what the
document carries against the trust layer's anchors: that is what says whether a B-LT
signature is really long-term.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..signing.forms import embedded_pdf, embedded_pdf_note
from ..signing.pades_verify import verify_pdf
from ..signing.qualification import qualify_reports
from ..signing.report import SignatureReport
from ..signing.xades_verify import VerificationPolicy, verify_xml_bounded
from ..signing.xml_safety import parse_xml

if TYPE_CHECKING:
    from .services import Services

__all__ = ["verify_document"]


def _report_json(
    services: Services, reports: Sequence[SignatureReport], kind: str
) -> dict[str, Any]:
    # Qualification from the EU trusted lists (n/a, "not configured", without them).
    trust = services.trust
    lists = trust.lists.current if trust.lists is not None else None
    roots = list(trust.anchors.certificates)
    qualify_reports(reports, lists, roots)
    return {"format": kind, "signatures": [r.as_json() for r in reports]}


async def verify_document(services: Services, data: bytes, *, xml: bool) -> dict[str, Any]:
    """``{"format", "signatures": [report...]}`` (+ ``profile`` and ``embedded_pdf`` for
    a form); raises the engines' errors for a document that cannot be read."""
    roots = list(services.trust.anchors.certificates)
    inspector = services.pades.inspector
    settings = services.settings
    if not xml:
        reports = await verify_pdf(data, trust_roots=roots, inspector=inspector)
        return _report_json(services, reports, "pdf")
    policy = VerificationPolicy(trust_roots=roots, max_size=settings.limits.xml)
    reports = await verify_xml_bounded(data, policy, inspector, settings.signing.verify_timeout)
    answer = _report_json(services, reports, "xml")
    # The XML was refused already if it is unsafe; this parse only finds the PDF.
    parsed = await asyncio.to_thread(parse_xml, data, max_size=policy.max_size)
    found = embedded_pdf(parsed.tree, services.profiles)
    if found is not None:
        profile, pdf = found
        pdf_reports = await verify_pdf(pdf, trust_roots=roots, inspector=inspector)
        answer["profile"] = profile.name
        embedded = _report_json(services, pdf_reports, "pdf")
        embedded["profile_level"] = profile.pdf_level.value
        for entry, report in zip(embedded["signatures"], pdf_reports, strict=True):
            # Whether this signature is what the form asks for; ``note`` says why when
            # that is so without TOTAL_PASSED (PAdES-B by design).
            entry["note"] = embedded_pdf_note(report, profile)
            entry["accepted"] = report.indication == "TOTAL_PASSED" or entry["note"] is not None
        answer["embedded_pdf"] = embedded
    return answer
