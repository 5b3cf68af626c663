"""POST /v1/pdf/sign over HTTP: defaults, options, and every kind of bad PDF."""

from __future__ import annotations

import io

import pytest
from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import copy_into_new_writer

from sidecar.api.problems import problem_for
from sidecar.signing.pades_verify import verify_pdf
from sidecar.signing.pdf_checks import PdfInspector, PdfLimits, PdfRefused
from sidecar.signing.report import Level
from tests.fixtures.daemon import Api
from tests.fixtures.pades import pdfsig_report

PDF = {"Content-Type": "application/pdf"}


def _encrypted(data: bytes) -> bytes:
    writer = copy_into_new_writer(PdfFileReader(io.BytesIO(data)))
    writer.encrypt("owner-secret", "user-secret")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _with_update(data: bytes, update: bytes) -> bytes:
    return data + update


def _xref_loop(data: bytes) -> bytes:
    # An update whose /Prev points at itself: a reader following it never ends.
    start = len(data)
    return data + (
        b"xref\n0 1\n0000000000 65535 f \ntrailer\n<< /Size 12 /Root 1 0 R /Prev %d >>\n"
        b"startxref\n%d\n%%%%EOF\n" % (start, start)
    )


def _many_objects(data: bytes, count: int) -> bytes:
    start = data.rsplit(b"startxref", 1)[1].split()[0]
    entries = b"0000000000 65535 f \n" + b"0000000009 00000 n \n" * (count - 1)
    pos = len(data)
    return (
        data
        + b"xref\n0 %d\n" % count
        + entries
        + (
            b"trailer\n<< /Size %d /Root 1 0 R /Prev %s >>\nstartxref\n%d\n%%%%EOF\n"
            % (count, start, pos)
        )
    )


def _metadata_bomb(data: bytes, decoded_size: int) -> bytes:
    # Object 10 (the XMP stream) redefined as a Flate stream of spaces: small on the wire,
    # *decoded_size* bytes once inflated (within pyHanko's own ratio limit).
    import zlib

    packed = zlib.compress(b" " * decoded_size, 9)
    start = data.rsplit(b"startxref", 1)[1].split()[0]
    offset = len(data)
    obj = (
        (
            b"10 0 obj\n<< /Type /Metadata /Subtype /XML /Filter /FlateDecode /Length %d >>\n"
            b"stream\n" % len(packed)
        )
        + packed
        + b"\nendstream\nendobj\n"
    )
    xref = len(data) + len(obj)
    return (
        data
        + obj
        + (
            b"xref\n10 1\n%010d 00000 n \ntrailer\n<< /Size 12 /Root 1 0 R /Prev %s >>\n"
            b"startxref\n%d\n%%%%EOF\n" % (offset, start, xref)
        )
    )


def _status(exc: PdfRefused) -> int:
    """The status the API answers an engine's refusal with (the engine knows none)."""
    problem = problem_for(exc)
    assert problem is not None
    return problem.status


async def test_sign_defaults_to_b_lt(
    sandbox_api: Api, fee_note_pdf: bytes, sandbox_roots: list[asn1_x509.Certificate]
) -> None:
    response = await sandbox_api.client.post(
        "/v1/pdf/sign?reason=Honoraires&location=Luxembourg&contact=cabinet%40example.lu",
        data=fee_note_pdf,
        headers={**PDF, **sandbox_api.auth("signer")},
    )
    assert response.status == 200, await response.text()
    assert response.content_type == "application/pdf"
    assert response.headers["X-Signature-Level"] == "B-LT"
    data = await response.read()
    assert "Signature is Valid" in pdfsig_report(data)
    (report,) = await verify_pdf(data, trust_roots=sandbox_roots)
    assert report.level is Level.B_LT and report.offline_validation_data
    sig = PdfFileReader(io.BytesIO(data)).embedded_regular_signatures[0].sig_object
    assert str(sig["/ContactInfo"]) == "cabinet@example.lu"


async def test_sign_options(sandbox_api: Api, fee_note_pdf: bytes) -> None:
    response = await sandbox_api.client.post(
        "/v1/pdf/sign?level=B-B&key=sandbox-ec&visible=true&page=1&box=300,60,540,130",
        data=fee_note_pdf,
        headers={**PDF, **sandbox_api.auth("signer")},
    )
    assert response.status == 200, await response.text()
    assert response.headers["X-Signature-Level"] == "B-B"
    data = await response.read()
    sig = PdfFileReader(io.BytesIO(data)).embedded_regular_signatures[0]
    assert sig.signer_cert.public_key.algorithm == "ec"
    assert [round(float(v)) for v in sig.sig_field["/Rect"]] == [300, 60, 540, 130]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("level=B-X", "level"),
        ("visible=maybe", "visible"),
        ("visible=true&box=1,2", "box"),
        ("reason=" + "x" * 300, "reason"),
    ],
)
async def test_bad_parameters(
    sandbox_api: Api, fee_note_pdf: bytes, query: str, parameter: str
) -> None:
    response = await sandbox_api.client.post(
        f"/v1/pdf/sign?{query}", data=fee_note_pdf, headers={**PDF, **sandbox_api.auth("signer")}
    )
    assert response.status == 400
    body = await response.json()
    assert body["code"] == "bad_parameter" and body["parameter"] == parameter


async def test_unknown_key_is_404(sandbox_api: Api, fee_note_pdf: bytes) -> None:
    response = await sandbox_api.client.post(
        "/v1/pdf/sign?key=nobody", data=fee_note_pdf, headers={**PDF, **sandbox_api.auth("signer")}
    )
    assert response.status == 404


async def test_bad_pdfs(sandbox_api: Api, fee_note_pdf: bytes, make_pdfa) -> None:
    cases = {
        "not a PDF": (b"<html>hello</html>" * 50, 400, "malformed_pdf"),
        "empty": (b"", 400, "malformed_pdf"),
        "truncated": (fee_note_pdf[: len(fee_note_pdf) // 2], 400, "malformed_pdf"),
        "broken xref": (
            fee_note_pdf.replace(b"startxref\n", b"startxref\n9"),
            400,
            "malformed_pdf",
        ),
        "xref loop": (_xref_loop(fee_note_pdf), 400, "malformed_pdf"),
        "encrypted": (_encrypted(fee_note_pdf), 422, "unsupported_pdf"),
        "huge object count": (_many_objects(fee_note_pdf, 300_000), 422, "unsupported_pdf"),
        "huge declared /Size": (
            fee_note_pdf.replace(b"/Size 12", b"/Size 99999999999"),
            422,
            "unsupported_pdf",
        ),
    }
    for name, (body, status, code) in cases.items():
        response = await sandbox_api.client.post(
            "/v1/pdf/sign?level=B-B", data=body, headers={**PDF, **sandbox_api.auth("signer")}
        )
        problem = await response.json()
        assert (response.status, problem.get("code")) == (status, code), (name, problem)
        assert "Traceback" not in problem["detail"] and "/tmp" not in problem["detail"]
    # A PDF/A demanded by the caller, and a plain PDF given.
    response = await sandbox_api.client.post(
        "/v1/pdf/sign?level=B-B&require_pdfa=true",
        data=make_pdfa(pdfa_part=None),
        headers={**PDF, **sandbox_api.auth("signer")},
    )
    assert response.status == 422 and (await response.json())["code"] == "unsupported_pdf"


async def test_worker_limits(fee_note_pdf: bytes) -> None:
    # A table of 150 000 entries is under the object limit but costs the parser more than
    # the deadline below allows: the worker is stopped, the answer is a clear 422.
    big = _many_objects(fee_note_pdf, 150_000)
    slow = PdfInspector(PdfLimits(timeout=0.05, workers=1))
    with pytest.raises(PdfRefused) as caught:
        await slow.inspect(big)
    assert (_status(caught.value), caught.value.code) == (422, "unsupported_pdf")
    assert "within" in caught.value.detail
    # The pool is replaced: the next document is read normally.
    slow.limits = PdfLimits(timeout=30, workers=1)
    assert (await slow.inspect(fee_note_pdf)).pdfa == "2B"
    slow.close()

    starved = PdfInspector(PdfLimits(worker_memory=400 * 1024**2, workers=1))
    with pytest.raises(PdfRefused) as caught:
        await starved.inspect(_metadata_bomb(fee_note_pdf, 250 * 1024**2))
    assert (_status(caught.value), caught.value.code) == (422, "unsupported_pdf")
    starved.close()
