"""verify_pdf: EN 319 102-1 indications for good, tampered and untrusted PDFs."""

from __future__ import annotations

import pytest
from asn1crypto import x509 as asn1_x509
from pyhanko.keys import load_certs_from_pemder

from sidecar.keys import Signer
from sidecar.signing.pades import PadesEngine, PadesOptions
from sidecar.signing.pades_verify import verify_pdf
from sidecar.signing.pdf_checks import PdfRefused
from sidecar.signing.report import Indication, Level, SubIndication

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_b_lt_report(
    pades_engine: PadesEngine,
    pades_signers: dict[str, Signer],
    fee_note_pdf: bytes,
    sandbox_roots: list[asn1_x509.Certificate],
) -> None:
    signed = await pades_engine.sign(
        fee_note_pdf, pades_signers["pkcs12-rsa"], PadesOptions(level=Level.B_LT)
    )
    (report,) = await verify_pdf(signed.data, trust_roots=sandbox_roots)
    assert report.format == "PAdES" and report.level is Level.B_LT
    assert report.indication is Indication.TOTAL_PASSED and report.sub_indication is None
    assert report.offline_validation_data and report.coverage == "entire_file"
    assert report.signer and "Sandbox" in report.signer
    assert report.timestamp_time is not None and report.claimed_signing_time is not None
    assert report.details["intact"] and report.details["dss"]
    assert report.as_json()["level"] == "B-LT"


async def test_b_b_without_revocation_data_is_try_later(
    pades_engine: PadesEngine,
    pades_signers: dict[str, Signer],
    fee_note_pdf: bytes,
    sandbox_roots: list[asn1_x509.Certificate],
) -> None:
    signed = await pades_engine.sign(
        fee_note_pdf, pades_signers["pkcs12-ec"], PadesOptions(level=Level.B_B)
    )
    (report,) = await verify_pdf(signed.data, trust_roots=sandbox_roots)
    assert report.level is Level.B_B
    assert (report.indication, report.sub_indication) == (
        Indication.INDETERMINATE,
        SubIndication.TRY_LATER,
    )
    assert not report.offline_validation_data


async def test_tampered_signed_bytes_fail(
    pades_engine: PadesEngine,
    pades_signers: dict[str, Signer],
    fee_note_pdf: bytes,
    sandbox_roots: list[asn1_x509.Certificate],
) -> None:
    signed = await pades_engine.sign(
        fee_note_pdf, pades_signers["pkcs12-rsa"], PadesOptions(level=Level.B_T)
    )
    # Change one character of the page text (inside the signed byte range).
    tampered = signed.data.replace(b"/Producer (sidecar", b"/Producer (Sidecar", 1)
    assert tampered != signed.data
    (report,) = await verify_pdf(tampered, trust_roots=sandbox_roots)
    assert (report.indication, report.sub_indication) == (
        Indication.TOTAL_FAILED,
        SubIndication.HASH_FAILURE,
    )


async def test_untrusted_root_is_indeterminate(
    pades_engine: PadesEngine,
    pades_signers: dict[str, Signer],
    fee_note_pdf: bytes,
    make_sandbox_pki,
) -> None:
    signed = await pades_engine.sign(
        fee_note_pdf, pades_signers["pkcs12-rsa"], PadesOptions(level=Level.B_LT)
    )
    other = make_sandbox_pki()
    foreign_roots = list(load_certs_from_pemder([str(other.roots_pem)]))
    (report,) = await verify_pdf(signed.data, trust_roots=foreign_roots)
    assert report.indication is Indication.INDETERMINATE
    assert report.sub_indication is not None
    assert report.level is Level.B_T  # the DSS does not validate offline against these roots


async def test_unsigned_pdf_has_no_reports(
    fee_note_pdf: bytes, sandbox_roots: list[asn1_x509.Certificate]
) -> None:
    assert await verify_pdf(fee_note_pdf, trust_roots=sandbox_roots) == []


async def test_not_a_pdf(sandbox_roots: list[asn1_x509.Certificate]) -> None:
    with pytest.raises(PdfRefused) as caught:
        await verify_pdf(b"GIF89a...", trust_roots=sandbox_roots)
    assert caught.value.code == "malformed_pdf"
