"""XML verification in the memory-capped workers, within a deadline.

Canonicalizing costs each element the square of the namespaces in scope (libxml2):
a document of 40,000 elements with 60 namespaces in scope — within the input bounds —
takes seconds to canonicalize. Verifying it must not hold the daemon's event loop,
and a document too costly to finish gets its signatures named, unchecked.
"""

from __future__ import annotations

import time

from asn1crypto import x509 as asn1_x509

from sidecar.signing.pdf_checks import PdfInspector, PdfLimits
from sidecar.signing.report import Indication, Level
from sidecar.signing.xades_verify import VerificationPolicy, verify_xml, verify_xml_bounded
from tests.fixtures.daemon import Api, while_polling_health
from tests.fixtures.xades import SignXml

XML = {"Content-Type": "application/xml"}


def costly_document(elements: int = 40_000, namespaces: int = 60) -> bytes:
    declarations = " ".join(f'xmlns:n{i}="urn:sidecar:test:ns:{i}"' for i in range(namespaces))
    rows = "".join(f"<n{i % namespaces}:row>{i}</n{i % namespaces}:row>" for i in range(elements))
    return f'<?xml version="1.0"?><doc {declarations}>{rows}</doc>'.encode()


async def test_worker_report_equals_the_in_process_one(
    signed_xml: SignXml, sandbox_roots: list[asn1_x509.Certificate]
) -> None:
    document = await signed_xml("pkcs12-rsa", Level.B_LT)
    policy = VerificationPolicy(trust_roots=sandbox_roots)
    inspector = PdfInspector(PdfLimits(workers=1))
    try:
        bounded = await verify_xml_bounded(document, policy, inspector, deadline=60)
    finally:
        inspector.close()
    direct = await verify_xml(document, policy)
    assert [r.as_json() for r in bounded] == [r.as_json() for r in direct]
    assert bounded[0].indication == Indication.TOTAL_PASSED


async def test_deadline_names_every_signature_unchecked(
    signed_xml: SignXml, sandbox_roots: list[asn1_x509.Certificate]
) -> None:
    document = await signed_xml("pkcs12-rsa", Level.B_LT)
    inspector = PdfInspector(PdfLimits(workers=1))
    try:
        started = time.perf_counter()
        reports = await verify_xml_bounded(
            document, VerificationPolicy(trust_roots=sandbox_roots), inspector, deadline=0.001
        )
        elapsed = time.perf_counter() - started
    finally:
        inspector.close()
    assert len(reports) == 1
    (report,) = reports
    assert report.indication == Indication.INDETERMINATE
    assert report.details["checked"] is False
    assert "not checked" in report.messages[0]
    assert report.signature_id  # named, so that a caller can tell which
    assert elapsed < 30  # the stuck worker was killed, not waited for


async def test_costly_document_verified_off_the_loop(sandbox_api: Api, signed_xml: SignXml) -> None:
    document = await signed_xml("pkcs12-rsa", Level.B_B, costly_document())
    polled = await while_polling_health(
        sandbox_api.client,
        "POST",
        "/v1/verify",
        data=document,
        headers={**XML, **sandbox_api.auth("verifier")},
    )
    body, elapsed, polls = polled.body, polled.elapsed, polled.polls
    print(f"\ncostly XML verify: {elapsed:.1f} s, {len(polls)} polls, slowest {max(polls):.3f} s")
    assert polled.status == 200, body
    (signature,) = body["signatures"]
    assert signature["details"]["checks"]["references"] == "ok"
    assert len(polls) >= 3
    assert max(polls) < 0.25, sorted(polls)[-5:]
