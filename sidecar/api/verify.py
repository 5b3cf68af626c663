"""``POST /v1/verify``: one EN 319 102-1 report per signature of an XML or PDF document.

Dispatches on the Content-Type: XML to :func:`sidecar.signing.xades_verify.verify_xml`,
PDF to :func:`sidecar.signing.pades_verify.verify_pdf` (imported when first needed;
501 while it is not there). Validation uses only what the document carries — the
certificates, CRLs and OCSP responses embedded in it — against the trust layer's
anchors: that is what says whether a B-LT signature is really long-term.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from asn1crypto import x509

from ..signing.report import SignatureReport
from ..signing.xades_verify import VerificationPolicy, verify_xml
from .guards import read_body
from .keys import SANDBOX_PKI, SETTINGS
from .problems import Problem
from .timestamps import TRUST
from .xml import xml_problem  # noqa: F401 - registers the XML problem mappers

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


def _report_json(reports: Sequence[SignatureReport], kind: str) -> dict[str, Any]:
    return {"format": kind, "signatures": [r.as_json() for r in reports]}


async def verify_document(request: web.Request) -> web.Response:
    """``verify``: ``{"format", "signatures": [report...]}``."""
    body = await read_body(request)
    roots = _trust_roots(request.app)
    limits = request.app[SETTINGS].limits
    if request.content_type in _XML:
        policy = VerificationPolicy(trust_roots=roots, max_size=limits.xml)
        reports = await verify_xml(body, policy)
        return web.json_response(_report_json(reports, "xml"))
    try:
        pades_verify = importlib.import_module("sidecar.signing.pades_verify")
        verify_pdf = pades_verify.verify_pdf
    except (ImportError, AttributeError):
        raise Problem(
            501, "not_implemented", "PDF verification is not built in this version"
        ) from None
    reports = await verify_pdf(body, trust_roots=roots)
    return web.json_response(_report_json(reports, "pdf"))


HANDLERS = {"verify": verify_document}
