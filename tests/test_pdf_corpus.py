"""Real PDFs from other projects' public test suites, signed and verified over HTTP.

``tests/corpus/pdf/`` holds PDFs we did not write (pyHanko's, qpdf's and pdf.js's test
data; ``tests/corpus/SOURCES.md`` says where each comes from and under which licence):
signed, certified, locked, timestamped, odd but legal, and broken ones. Each is
verified and signed (B-B) through the API. What must hold for every file:

- no 5xx, ever; a refusal is a 4xx with one of the stable PDF codes;
- a signed output is accepted by poppler's ``pdfsig`` and by pyHanko (the new
  signature intact and valid), and every earlier signature keeps its integrity and
  DocMDP verdicts.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.fields import enumerate_sig_fields
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko_certvalidator import ValidationContext

from tests.fixtures.daemon import Api
from tests.fixtures.pades import pdfsig_report

CORPUS = Path(__file__).parent / "corpus" / "pdf"
FILES = sorted(CORPUS.rglob("*.pdf")) + sorted(CORPUS.rglob("*.PDF"))
PDF = {"Content-Type": "application/pdf"}
#: The codes a PDF may be refused with (docs/api.md).
REFUSALS = {"malformed_pdf", "unsupported_pdf", "pdf_certified", "pdf_locked", "too_large"}
#: Files checked at once (the daemon has two PDF workers).
CONCURRENCY = 3


def test_corpus_is_there() -> None:
    assert len(FILES) >= 200
    assert sum(f.stat().st_size for f in FILES) < 30 * 2**20
    listed = (CORPUS.parent / "SOURCES.md").read_text()
    missing = [f for f in FILES if f.relative_to(CORPUS).as_posix() not in listed]
    assert not missing, missing[:5]


def _verdicts(body: dict[str, Any]) -> dict[str, tuple[object, object]]:
    return {
        r["signature_id"]: (r["details"].get("intact"), r["details"].get("docmdp_ok"))
        for r in body["signatures"]
        if r["details"].get("type") == "signature"
    }


def _last_pdfsig_block(report: str) -> str:
    blocks = re.split(r"(?m)^Signature #\d+:", report)
    return blocks[-1] if len(blocks) > 1 else ""


async def _check(api: Api, path: Path, roots: list[asn1_x509.Certificate]) -> tuple[list[str], str]:
    """Problems found with one file, and what happened to it (for the summary)."""
    problems: list[str] = []
    name = path.relative_to(CORPUS).as_posix()
    data = path.read_bytes()
    verify_auth = {**PDF, **api.auth("verifier")}
    response = await api.client.post("/v1/verify", data=data, headers=verify_auth)
    body = await response.json()
    if response.status >= 500 or (response.status >= 400 and body.get("code") not in REFUSALS):
        problems.append(f"{name}: verify answered {response.status} {body}")
    before = _verdicts(body) if response.status == 200 else {}

    response = await api.client.post(
        "/v1/pdf/sign?level=B-B", data=data, headers={**PDF, **api.auth("signer")}
    )
    if response.status != 200:
        refusal = await response.json()
        if response.status >= 500 or refusal.get("code") not in REFUSALS:
            problems.append(f"{name}: sign answered {response.status} {refusal}")
        return problems, f"refused {refusal.get('code')}"
    signed = await response.read()
    field = response.headers["X-Signature-Field"]

    pdfsig = await asyncio.to_thread(pdfsig_report, signed)
    if "Signature is Valid" not in _last_pdfsig_block(pdfsig):
        problems.append(f"{name}: pdfsig does not accept the new signature: {pdfsig[-300:]}")

    reader = PdfFileReader(io.BytesIO(signed), strict=False)
    # The new field only: an earlier signature of the file may be broken on purpose.
    new = list(enumerate_sig_fields(reader, filled_status=True, with_name=field))
    if len(new) != 1:
        problems.append(f"{name}: pyHanko finds {len(new)} signature(s) named {field}")
    else:
        signature = EmbeddedPdfSignature(reader, new[0][2], field)
        status = await async_validate_pdf_signature(
            signature, signer_validation_context=ValidationContext(trust_roots=roots)
        )
        if not (status.intact and status.valid and status.coverage.name == "ENTIRE_FILE"):
            problems.append(f"{name}: pyHanko: the new signature is not intact and valid")

    response = await api.client.post("/v1/verify", data=signed, headers=verify_auth)
    after_body = await response.json()
    if response.status != 200:
        problems.append(f"{name}: verifying the signed output answered {response.status}")
        return problems, "signed"
    after = _verdicts(after_body)
    for signature_id, verdict in before.items():
        if after.get(signature_id) != verdict:
            problems.append(
                f"{name}: signing changed {signature_id}'s verdict {verdict} -> "
                f"{after.get(signature_id)}"
            )
    return problems, "signed"


@pytest.mark.asyncio
async def test_corpus_signs_and_verifies(
    sandbox_api: Api, sandbox_roots: list[asn1_x509.Certificate]
) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)
    outcomes: dict[str, int] = {}
    problems: list[str] = []

    async def one(path: Path) -> None:
        async with gate:
            try:
                found, outcome = await _check(sandbox_api, path, sandbox_roots)
            except Exception as exc:  # the checks' own tools failing on an output: a finding
                found, outcome = [f"{path.name}: checking failed: {exc!r}"[:300]], "error"
        problems.extend(found)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(one(path) for path in FILES))
    print(f"\ncorpus: {len(FILES)} files in {time.perf_counter() - started:.0f} s: {outcomes}")
    assert outcomes.get("signed", 0) >= len(FILES) // 3
    assert not problems, "\n".join(problems[:40])
