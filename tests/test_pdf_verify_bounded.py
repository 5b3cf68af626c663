"""PDF verification runs in the memory-capped PDF workers, within a deadline.

A document with many signatures (each later revision analysed against every earlier
signature) is the costly case: the daemon keeps answering ``/v1/health`` while it is
verified, its own memory does not grow with it, and a deadline too short to finish
gives a partial report whose unchecked signatures are INDETERMINATE.
"""

from __future__ import annotations

import io
import os
import time

import pytest
import pytest_asyncio
from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.reader import PdfFileReader

from sidecar.keys import Signer
from sidecar.signing.pades import PadesEngine, PadesOptions
from sidecar.signing.pades_verify import verify_pdf
from sidecar.signing.pdf_checks import PdfInspector, PdfLimits
from sidecar.signing.report import Indication, Level
from tests.fixtures.daemon import Api, while_polling_health

pytestmark = pytest.mark.asyncio(loop_scope="session")

SIGNATURES = 25
PDF = {"Content-Type": "application/pdf"}


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def many_signatures_pdf(
    pades_engine: PadesEngine, pades_signers: dict[str, Signer], fee_note_pdf: bytes
) -> bytes:
    """The fee note signed 25 times (B-B, alternating RSA and EC), built once per session."""
    data = fee_note_pdf
    for number in range(SIGNATURES):
        signer = pades_signers["pkcs12-rsa" if number % 2 else "pkcs12-ec"]
        data = (await pades_engine.sign(data, signer, PadesOptions(level=Level.B_B))).data
    return data


def _first_revision_end(data: bytes) -> int:
    """The end of the first signed revision (its %%EOF after the original file's)."""
    reader = PdfFileReader(io.BytesIO(data))
    byte_range = [int(v) for v in reader.embedded_signatures[0].byte_range]
    start, length = byte_range[2], byte_range[3]
    return start + length


def _rss() -> int:
    """This process's resident set size, bytes (Linux)."""
    with open(f"/proc/{os.getpid()}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_many_signatures_verified_off_the_loop(
    sandbox_api: Api, many_signatures_pdf: bytes
) -> None:
    assert len(PdfFileReader(io.BytesIO(many_signatures_pdf)).embedded_signatures) == SIGNATURES
    client = sandbox_api.client
    # Warm the workers and the route first with the first revision (one signature): in
    # this in-process setup the first verification costs the test process a one-time
    # ~100 MB (later ones +0-3 MB; a plain process verifying in the workers, as in
    # bench/bench_pdf_verify.py, grows by nothing). The bound is on what a costly
    # document adds.
    first = many_signatures_pdf[: _first_revision_end(many_signatures_pdf)]
    warm = await client.post(
        "/v1/verify", data=first, headers={**PDF, **sandbox_api.auth("verifier")}
    )
    assert warm.status == 200 and len((await warm.json())["signatures"]) == 1
    rss_before = _rss()
    polled = await while_polling_health(
        client,
        "POST",
        "/v1/verify",
        data=many_signatures_pdf,
        headers={**PDF, **sandbox_api.auth("verifier")},
    )
    body, elapsed, polls = polled.body, polled.elapsed, polled.polls
    rss_growth = _rss() - rss_before
    checked = [r for r in body.get("signatures", ()) if r["details"].get("checked") is not False]
    print(
        f"\n25-signature verify: {elapsed:.1f} s, {len(checked)} checked, "
        f"{len(polls)} health polls, "
        f"slowest {max(polls) * 1000:.0f} ms, main RSS +{rss_growth / 2**20:.1f} MB"
    )
    assert polled.status == 200, body
    assert len(body["signatures"]) == SIGNATURES
    assert all(r["details"]["type"] == "signature" for r in body["signatures"])
    # Within the default 30 s all are checked on an idle machine; a loaded one may leave
    # some INDETERMINATE (the deadline test below checks that answer), never none checked.
    assert checked and all(r["signer"] for r in checked)
    assert len(polls) >= 3
    assert max(polls) < 0.25, sorted(polls)[-5:]
    assert rss_growth < 50 * 2**20


async def test_deadline_gives_a_partial_report(
    many_signatures_pdf: bytes, sandbox_roots: list[asn1_x509.Certificate]
) -> None:
    inspector = PdfInspector(PdfLimits(workers=1))
    try:
        started = time.perf_counter()
        reports = await verify_pdf(
            many_signatures_pdf, trust_roots=sandbox_roots, inspector=inspector, deadline=0.1
        )
        elapsed = time.perf_counter() - started
    finally:
        inspector.close()
    assert len(reports) == SIGNATURES  # every signature is named, checked or not
    unchecked = [r for r in reports if r.details.get("checked") is False]
    checked = [r for r in reports if r.details.get("checked") is not False]
    assert unchecked, "a 0.1 s budget cannot cover 25 signatures"
    for report in unchecked:
        assert report.indication is Indication.INDETERMINATE
        assert "not checked" in report.messages[0]
    assert all(r.signer for r in checked)
    assert elapsed < 0.1 + 5.0 + 10.0  # budget + pool backstop + worker start, loaded machine
