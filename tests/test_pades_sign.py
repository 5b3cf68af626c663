"""PAdES signing: every level x key type (both backends), checked by poppler and pyHanko,
with the PDF/A markers of the input kept."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.reader import PdfFileReader

from sidecar.api.problems import problem_for
from sidecar.keys import Signer
from sidecar.signing.pades import PadesEngine, PadesError, PadesOptions, VisibleStamp
from sidecar.signing.pades_verify import verify_pdf
from sidecar.signing.pdf_checks import PdfInspector, PdfRefused, inspect_pdf, pdfa_problems
from sidecar.signing.report import Indication, Level
from sidecar.signing.trust_binding import TrustValidationDataSource
from sidecar.trust import TrustServices
from sidecar.trust.tsa import read_token
from tests.fixtures.pades import pdfsig_report, pyhanko_offline, read_dss

pytestmark = pytest.mark.asyncio(loop_scope="session")

CASES = [
    *[("pkcs12-rsa", level) for level in Level if level is not Level.NONE],
    *[("pkcs12-ec", level) for level in Level if level is not Level.NONE],
    # PKCS#11 (SoftHSM2): one level per key type.
    ("pkcs11-rsa", Level.B_LT),
    ("pkcs11-ec", Level.B_LTA),
]


@pytest.mark.parametrize(("kind", "level"), CASES, ids=[f"{k}-{lv.value}" for k, lv in CASES])
async def test_level_and_key_type(
    kind: str,
    level: Level,
    pades_engine: PadesEngine,
    pades_signers: dict[str, Signer],
    fee_note_pdf: bytes,
    sandbox_roots: list[asn1_x509.Certificate],
) -> None:
    signed = await pades_engine.sign(
        fee_note_pdf,
        pades_signers[kind],
        PadesOptions(level=level, reason="Mémoire d'honoraires", location="Luxembourg"),
    )
    data = signed.data
    # Incremental update: the original bytes are untouched.
    assert data.startswith(fee_note_pdf)
    # The facts the workers derived from the writer's view (the output is not read
    # again) are those a full reading of the output finds.
    assert signed.after == inspect_pdf(data)

    # poppler: integrity of the signature.
    report = pdfsig_report(data)
    assert "Signature is Valid" in report, report
    assert "Total document signed" in report or level is Level.B_LTA, report

    # pyHanko, fed only the document's DSS, nothing fetched, revocation data required.
    status = await pyhanko_offline(data, sandbox_roots)
    assert status.intact and status.valid
    assert (status.timestamp_validity is not None) == (level is not Level.B_B)
    if level in (Level.B_LT, Level.B_LTA):
        assert status.trusted, status.pretty_print_details()
        assert status.timestamp_validity is not None and status.timestamp_validity.trusted
    else:
        assert not status.trusted  # B-B / B-T carry no revocation data
        assert read_dss(data) is None
    reader = PdfFileReader(io.BytesIO(data))
    assert len(reader.embedded_timestamp_signatures) == (1 if level is Level.B_LTA else 0)
    sig = reader.embedded_regular_signatures[0]
    assert sig.sig_object["/SubFilter"] == "/ETSI.CAdES.detached"
    assert str(sig.sig_object["/Reason"]) == "Mémoire d'honoraires"
    assert str(sig.sig_object["/Location"]) == "Luxembourg"

    # Our own verification derives the same level.
    everything = await verify_pdf(data, trust_roots=sandbox_roots)
    reports = [r for r in everything if r.details["type"] == "signature"]
    assert [r.level for r in reports] == [level]
    # A document timestamp is reported in its own right too.
    timestamps = [r for r in everything if r.details["type"] == "document_timestamp"]
    assert len(timestamps) == (1 if level is Level.B_LTA else 0)
    assert all(t.indication is Indication.TOTAL_PASSED for t in timestamps)
    expected = (
        Indication.TOTAL_PASSED if level in (Level.B_LT, Level.B_LTA) else Indication.INDETERMINATE
    )
    assert reports[0].indication is expected, reports[0].messages

    # PDF/A: pdfaid, OutputIntents, Info/XMP agreement and the version all kept.
    before, after = inspect_pdf(fee_note_pdf), inspect_pdf(data)
    assert pdfa_problems(after) == []
    assert (after.pdfaid_part, after.pdfaid_conformance) == ("2", "B")
    assert after.output_intents == before.output_intents
    assert after.info == before.info and after.xmp == before.xmp
    assert after.info["/Producer"] == after.xmp["pdf:Producer"]
    assert after.version == before.version == "1.7"
    assert after.catalog_version is None  # no /Version 2.0 (ISO 32002) even for EC


@pytest.mark.parametrize("kind", ["pkcs12-rsa", "pkcs12-ec"])
async def test_pdfa1_keeps_pdf_1_4(
    kind: str, pades_engine: PadesEngine, pades_signers: dict[str, Signer], make_pdfa
) -> None:
    original = make_pdfa(version="1.4", pdfa_part=1)
    signed = await pades_engine.sign(original, pades_signers[kind], PadesOptions(level=Level.B_T))
    after = inspect_pdf(signed.data)
    assert signed.after == after
    assert after.version == "1.4" and after.catalog_version is None
    assert after.pdfa == "1B" and after.info_xmp_mismatches == ()
    assert "Signature is Valid" in pdfsig_report(signed.data)


async def test_non_pdfa_with_ec_may_move_to_pdf_2(
    pades_engine: PadesEngine, pades_signers: dict[str, Signer], make_pdfa
) -> None:
    # Outside PDF/A, pyHanko's declaration of ECDSA (ISO 32002, PDF 2.0) is left alone.
    original = make_pdfa(pdfa_part=None)
    signed = await pades_engine.sign(
        original, pades_signers["pkcs12-ec"], PadesOptions(level=Level.B_B)
    )
    assert inspect_pdf(signed.data).version == "2.0"
    assert signed.after == inspect_pdf(signed.data)  # the catalog's /Version seen by the writer


async def test_profile_demanding_pdfa_refuses_plain_pdf(
    pades_engine: PadesEngine, pades_signers: dict[str, Signer], make_pdfa
) -> None:
    with pytest.raises(PdfRefused) as caught:
        await pades_engine.sign(
            make_pdfa(pdfa_part=None),
            pades_signers["pkcs12-rsa"],
            PadesOptions(level=Level.B_B, require_pdfa=True),
        )
    # The engine's refusal carries no status: the API's table answers it 422.
    problem = problem_for(caught.value)
    assert problem is not None
    assert (problem.status, caught.value.code) == (422, "unsupported_pdf")
    assert "pdfaid" in caught.value.detail


async def test_visible_stamp_embeds_its_font(
    pades_engine: PadesEngine, pades_signers: dict[str, Signer], fee_note_pdf: bytes
) -> None:
    signed = await pades_engine.sign(
        fee_note_pdf,
        pades_signers["pkcs12-rsa"],
        PadesOptions(level=Level.B_B, stamp=VisibleStamp(page=-1, box=(300, 60, 540, 130))),
    )
    assert signed.after == inspect_pdf(signed.data)  # widget, appearance, font: counted
    reader = PdfFileReader(io.BytesIO(signed.data))
    widget = reader.embedded_regular_signatures[0].sig_field
    assert [round(float(v)) for v in widget["/Rect"]] == [300, 60, 540, 130]
    appearance = widget["/AP"]["/N"]
    fonts = appearance["/Resources"]["/Font"]
    for font in fonts.values():
        font = font.get_object()
        assert font["/Subtype"] == "/TrueType"
        assert "/FontFile2" in font["/FontDescriptor"]  # embedded, as PDF/A requires
    assert "Signature is Valid" in pdfsig_report(signed.data)


async def test_invisible_by_default(
    pades_engine: PadesEngine, pades_signers: dict[str, Signer], fee_note_pdf: bytes
) -> None:
    signed = await pades_engine.sign(
        fee_note_pdf, pades_signers["pkcs12-rsa"], PadesOptions(level=Level.B_B)
    )
    widget = PdfFileReader(io.BytesIO(signed.data)).embedded_regular_signatures[0].sig_field
    assert [float(v) for v in widget["/Rect"]] == [0, 0, 0, 0]
    assert int(widget["/F"]) & 4  # Print flag, as PDF/A wants for annotations


async def test_second_signature_gets_next_field(
    pades_engine: PadesEngine,
    pades_signers: dict[str, Signer],
    fee_note_pdf: bytes,
    sandbox_roots: list[asn1_x509.Certificate],
) -> None:
    once = await pades_engine.sign(
        fee_note_pdf, pades_signers["pkcs12-rsa"], PadesOptions(level=Level.B_T)
    )
    twice = await pades_engine.sign(
        once.data, pades_signers["pkcs12-ec"], PadesOptions(level=Level.B_T)
    )
    assert (once.field_name, twice.field_name) == ("Signature1", "Signature2")
    assert twice.before == inspect_pdf(once.data) and twice.after == inspect_pdf(twice.data)
    assert twice.after.signatures == (("Signature1", "/Sig"), ("Signature2", "/Sig"))
    reports = await verify_pdf(twice.data, trust_roots=sandbox_roots)
    assert [r.signature_id for r in reports] == ["Signature1", "Signature2"]
    assert all(r.level is Level.B_T for r in reports)


async def test_level_without_tsa_is_refused(
    pades_signers: dict[str, Signer], fee_note_pdf: bytes
) -> None:
    engine = PadesEngine(inspector=PdfInspector())
    with pytest.raises(PadesError) as caught:
        await engine.sign(fee_note_pdf, pades_signers["pkcs12-rsa"], PadesOptions(level=Level.B_T))
    assert caught.value.reason == "tsa_not_configured"
    engine.inspector.close()


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_engine(pades_trust: TrustServices) -> AsyncIterator[PadesEngine]:
    """An engine of its own (its size and TSA memory start empty) on the session's trust."""
    engine = PadesEngine(
        inspector=PdfInspector(),
        timestamper=pades_trust.tsa.timestamper(),
        validation_data=TrustValidationDataSource(pades_trust.revocation),
    )
    yield engine
    engine.inspector.close()


async def _trusted_offline(data: bytes, roots: list[asn1_x509.Certificate]) -> None:
    """pyHanko, fed only the DSS: the signature and its timestamp validate, trusted."""
    status = await pyhanko_offline(data, roots)
    assert status.intact and status.valid and status.trusted, status.pretty_print_details()
    assert status.timestamp_validity is not None and status.timestamp_validity.trusted


async def test_a_signature_outgrowing_its_room_is_made_again(
    fresh_engine: PadesEngine,
    pades_signers: dict[str, Signer],
    fee_note_pdf: bytes,
    sandbox_roots: list[asn1_x509.Certificate],
) -> None:
    signer = pades_signers["pkcs12-rsa"]
    # As if an earlier signature had been far smaller (another TSA, a shorter chain).
    fresh_engine._reserved[(signer.certificate.sha256, Level.B_LT)] = 200
    signed = await fresh_engine.sign(fee_note_pdf, signer, PadesOptions(level=Level.B_LT))
    assert fresh_engine._reserved[(signer.certificate.sha256, Level.B_LT)] > 200
    assert "Total document signed" in pdfsig_report(signed.data)
    await _trusted_offline(signed.data, sandbox_roots)


async def test_a_document_timestamp_outgrowing_its_room_is_made_again(
    fresh_engine: PadesEngine,
    pades_signers: dict[str, Signer],
    fee_note_pdf: bytes,
    sandbox_roots: list[asn1_x509.Certificate],
) -> None:
    fresh_engine._timestamp_reserved = 200  # as if the TSA's tokens had been far smaller
    signed = await fresh_engine.sign(
        fee_note_pdf, pades_signers["pkcs12-rsa"], PadesOptions(level=Level.B_LTA)
    )
    assert fresh_engine._timestamp_reserved > 200
    reader = PdfFileReader(io.BytesIO(signed.data))
    assert len(reader.embedded_timestamp_signatures) == 1
    await _trusted_offline(signed.data, sandbox_roots)


async def test_a_timestamp_from_another_tsa_gets_its_data_after_the_signature(
    fresh_engine: PadesEngine,
    pades_trust: TrustServices,
    pades_signers: dict[str, Signer],
    fee_note_pdf: bytes,
    sandbox_roots: list[asn1_x509.Certificate],
) -> None:
    # The engine expects the TSA that stamped last; here one with another certificate
    # (a failover TSA stands in): the DSS signed with the signature lacks the real
    # TSA's data, which must then come in a revision after it.
    dummy = await pades_trust.tsa.timestamper().async_dummy_response("sha256")
    other = pades_signers["pkcs12-ec"].certificate
    fresh_engine._tsa = dataclasses.replace(
        read_token(dummy.dump()), tsa_certificate=other, certificates=(other,)
    )
    signed = await fresh_engine.sign(
        fee_note_pdf, pades_signers["pkcs12-rsa"], PadesOptions(level=Level.B_LT)
    )
    report = pdfsig_report(signed.data)
    assert "Signature is Valid" in report and "Total document signed" not in report
    await _trusted_offline(signed.data, sandbox_roots)
    assert fresh_engine._tsa.tsa_certificate is not None
    assert fresh_engine._tsa.tsa_certificate.sha256 != other.sha256  # the real TSA, kept
    assert signed.after.revisions == signed.before.revisions + 2
    assert signed.after == inspect_pdf(signed.data)


async def test_an_engine_given_only_a_validation_context_still_signs_b_lt(
    pades_trust: TrustServices,
    pades_signers: dict[str, Signer],
    fee_note_pdf: bytes,
    sandbox_roots: list[asn1_x509.Certificate],
) -> None:
    # The older seam (a factory of pyHanko contexts): pyHanko's validator gives the data.
    engine = PadesEngine(
        inspector=PdfInspector(),
        timestamper=pades_trust.tsa.timestamper(),
        validation_context=pades_trust.revocation.validation_context,
    )
    try:
        signed = await engine.sign(
            fee_note_pdf, pades_signers["pkcs12-ec"], PadesOptions(level=Level.B_LT)
        )
    finally:
        engine.inspector.close()
    assert "Total document signed" in pdfsig_report(signed.data)
    await _trusted_offline(signed.data, sandbox_roots)
