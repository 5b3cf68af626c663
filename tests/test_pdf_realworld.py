"""Real-world PDF classes that used to break signing or verification (issue #20).

Each document is built here from the sample fee note with pyHanko (and the sandbox
signers), the way another vendor's software would have made it, and goes through
the HTTP API: legal structures sign and verify; a certification or a field lock that
forbids a new signature is refused with its own code naming the earlier signer; a
damaged signature gets its own result while the rest of the report stands; every
signature and document timestamp is reported; changes after signing are listed.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from asn1crypto import cms
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.fields import FieldMDPAction, FieldMDPSpec, MDPPerm, SigFieldSpec
from pyhanko.sign.timestamps import TimeStamper

from sidecar.keys import Signer
from sidecar.keys.pyhanko_adapter import PyHankoSignerAdapter
from sidecar.signing.pades import PadesEngine, PadesOptions
from sidecar.signing.report import Level
from sidecar.trust import TrustServices
from tests.fixtures.daemon import Api
from tests.fixtures.pades import pdfsig_report

pytestmark = pytest.mark.asyncio(loop_scope="session")

PDF = {"Content-Type": "application/pdf"}


async def _verify(api: Api, data: bytes) -> tuple[int, dict[str, Any]]:
    response = await api.client.post(
        "/v1/verify", data=data, headers={**PDF, **api.auth("verifier")}
    )
    return response.status, await response.json()


async def _sign(api: Api, data: bytes) -> tuple[int, bytes | dict[str, Any], str | None]:
    response = await api.client.post(
        "/v1/pdf/sign?level=B-B", data=data, headers={**PDF, **api.auth("signer")}
    )
    if response.status == 200:
        return 200, await response.read(), response.headers["X-Signature-Field"]
    return response.status, await response.json(), None


def _update(data: bytes, change: Any) -> bytes:
    """An incremental update of *data* made by ``change(writer)``."""
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    change(writer)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _text_appearance(text: str) -> generic.StreamObject:
    """A form XObject showing *text* (a field's appearance)."""
    return generic.StreamObject(
        {
            pdf_name("/Type"): pdf_name("/XObject"),
            pdf_name("/Subtype"): pdf_name("/Form"),
            pdf_name("/BBox"): generic.ArrayObject(
                [generic.NumberObject(v) for v in (0, 0, 200, 20)]
            ),
        },
        stream_data=f"BT /Helv 12 Tf 2 5 Td ({text}) Tj ET".encode(),
    )


def _text_field(writer: IncrementalPdfFileWriter, name: str, text: str) -> generic.IndirectObject:
    """A text field with a visible appearance on page 1, added to the form."""
    appearance = _text_appearance(text)
    widget = writer.add_object(
        generic.DictionaryObject(
            {
                pdf_name("/Type"): pdf_name("/Annot"),
                pdf_name("/Subtype"): pdf_name("/Widget"),
                pdf_name("/FT"): pdf_name("/Tx"),
                pdf_name("/T"): generic.TextStringObject(name),
                pdf_name("/V"): generic.TextStringObject(text),
                pdf_name("/Rect"): generic.ArrayObject(
                    [generic.NumberObject(v) for v in (300, 700, 500, 720)]
                ),
                pdf_name("/AP"): generic.DictionaryObject(
                    {pdf_name("/N"): writer.add_object(appearance)}
                ),
                pdf_name("/P"): writer.root["/Pages"]["/Kids"].raw_get(0),
            }
        )
    )
    page_ref = writer.root["/Pages"]["/Kids"].raw_get(0)
    page = page_ref.get_object()
    annots = page.get("/Annots", generic.ArrayObject())
    annots = (
        generic.ArrayObject([*annots, widget])
        if not isinstance(annots, generic.ArrayObject)
        else annots
    )
    if widget not in annots:
        annots.append(widget)
    page[pdf_name("/Annots")] = annots
    writer.update_container(page)
    root = writer.root
    form = root.get("/AcroForm")
    if form is None:
        form = generic.DictionaryObject({pdf_name("/Fields"): generic.ArrayObject()})
        root[pdf_name("/AcroForm")] = writer.add_object(form)
        form = root["/AcroForm"]
    form["/Fields"].append(widget)
    writer.update_root()
    writer.update_container(form)
    return widget


async def _pyhanko_sign(data: bytes, signer: Signer, **kwargs: Any) -> bytes:
    """Sign with pyHanko directly (another vendor's signature, with its options)."""
    field_spec = kwargs.pop("field_spec", None)
    metadata = signers.PdfSignatureMetadata(
        field_name=kwargs.pop("field_name", "Vendor"),
        subfilter=kwargs.pop("subfilter", fields.SigSeedSubFilter.PADES),
        **kwargs,
    )
    writer = IncrementalPdfFileWriter(io.BytesIO(data), strict=False)
    out = io.BytesIO()
    await signers.PdfSigner(
        metadata, signer=PyHankoSignerAdapter(signer), new_field_spec=field_spec
    ).async_sign_pdf(writer, output=out)
    return out.getvalue()


# -- legal structures ------------------------------------------------------------------


async def test_indirect_fields_and_output_intents(sandbox_api: Api, fee_note_pdf: bytes) -> None:
    def indirect(writer: IncrementalPdfFileWriter) -> None:
        root = writer.root
        intents = root.raw_get("/OutputIntents")
        root[pdf_name("/OutputIntents")] = writer.add_object(
            generic.ArrayObject(list(intents.get_object()))
        )
        root[pdf_name("/AcroForm")] = writer.add_object(
            generic.DictionaryObject(
                {pdf_name("/Fields"): writer.add_object(generic.ArrayObject())}
            )
        )
        writer.update_root()

    data = _update(fee_note_pdf, indirect)
    root = PdfFileReader(io.BytesIO(data)).root
    assert isinstance(root.raw_get("/OutputIntents"), generic.IndirectObject)
    status, signed, _ = await _sign(sandbox_api, data)
    assert status == 200, signed
    assert isinstance(signed, bytes) and "Signature is Valid" in pdfsig_report(signed)
    status, body = await _verify(sandbox_api, signed)
    assert status == 200 and len(body["signatures"]) == 1, body


async def test_new_field_name_never_collides(sandbox_api: Api, fee_note_pdf: bytes) -> None:
    data = _update(fee_note_pdf, lambda w: _text_field(w, "Signature1", "not a signature"))
    status, signed, field = await _sign(sandbox_api, data)
    assert status == 200, signed
    assert field == "Signature2"
    status, body = await _verify(sandbox_api, signed)
    assert [r["signature_id"] for r in body["signatures"]] == ["Signature2"]


# -- certifications and locks ------------------------------------------------------------


async def test_certified_no_changes_is_refused(
    sandbox_api: Api, fee_note_pdf: bytes, pades_signers: dict[str, Signer]
) -> None:
    certified = await _pyhanko_sign(
        fee_note_pdf, pades_signers["pkcs12-rsa"], certify=True,
        docmdp_permissions=MDPPerm.NO_CHANGES,
    )  # fmt: skip
    status, problem, _ = await _sign(sandbox_api, certified)
    assert status == 422 and isinstance(problem, dict)
    assert problem["code"] == "pdf_certified"
    assert "Sandbox" in problem["detail"] and "certified" in problem["detail"]


async def test_certified_form_filling_may_be_signed(
    sandbox_api: Api, fee_note_pdf: bytes, pades_signers: dict[str, Signer]
) -> None:
    certified = await _pyhanko_sign(
        fee_note_pdf, pades_signers["pkcs12-rsa"], certify=True,
        docmdp_permissions=MDPPerm.FILL_FORMS,
    )  # fmt: skip
    status, signed, _ = await _sign(sandbox_api, certified)
    assert status == 200, signed
    status, body = await _verify(sandbox_api, signed)
    first = body["signatures"][0]
    assert first["details"]["intact"] and first["details"]["docmdp_ok"] is not False


@pytest.mark.parametrize(
    "lock",
    [
        FieldMDPSpec(FieldMDPAction.ALL),
        "p1",
    ],
    ids=["lock-all", "fieldmdp-p1"],
)
async def test_locked_field_is_refused(
    sandbox_api: Api, fee_note_pdf: bytes, pades_signers: dict[str, Signer], lock: Any
) -> None:
    if lock == "p1":
        spec = SigFieldSpec(
            "Vendor",
            field_mdp_spec=FieldMDPSpec(FieldMDPAction.INCLUDE, fields=["Other"]),
            doc_mdp_update_value=MDPPerm.NO_CHANGES,
        )
    else:
        spec = SigFieldSpec("Vendor", field_mdp_spec=lock)
    locked = await _pyhanko_sign(fee_note_pdf, pades_signers["pkcs12-ec"], field_spec=spec)
    status, problem, _ = await _sign(sandbox_api, locked)
    assert status == 422 and isinstance(problem, dict), problem
    assert problem["code"] == "pdf_locked"
    assert "'Vendor'" in problem["detail"] and "Sandbox" in problem["detail"]


# -- one bad signature does not sink the report -----------------------------------------


async def _two_signatures(engine: PadesEngine, signers_: dict[str, Signer], pdf: bytes) -> bytes:
    once = await engine.sign(pdf, signers_["pkcs12-rsa"], PadesOptions(level=Level.B_B))
    return (await engine.sign(once.data, signers_["pkcs12-ec"], PadesOptions(level=Level.B_B))).data


def _replace_last_contents(data: bytes, make: Any) -> bytes:
    """The last signature's /Contents replaced by ``make(cms_bytes)`` (same room)."""
    reader = PdfFileReader(io.BytesIO(data))
    last = reader.embedded_signatures[-1]
    start = last.byte_range[0] + last.byte_range[1]
    end = last.byte_range[2]
    room = (end - start - 2) // 2
    new = make(last.pkcs7_content)
    assert len(new) <= room
    return data[: start + 1] + new.hex().encode().ljust(room * 2, b"0") + data[end - 1 :]


def _two_signer_infos(content: bytes) -> bytes:
    info = cms.ContentInfo.load(content)
    signed = info["content"]
    infos = signed["signer_infos"]
    doubled = cms.SignerInfos([infos[0], infos[0]])
    return cms.ContentInfo(
        {
            "content_type": "signed_data",
            "content": cms.SignedData(
                {
                    "version": signed["version"],
                    "digest_algorithms": signed["digest_algorithms"],
                    "encap_content_info": signed["encap_content_info"],
                    "certificates": signed["certificates"],
                    "signer_infos": doubled,
                }
            ),
        }
    ).dump()


def _signature_oid_as_digest(content: bytes) -> bytes:
    """ecdsa-with-SHA256 (a signature algorithm) where the digest algorithm belongs."""
    info = cms.ContentInfo.load(content)
    signer = info["content"]["signer_infos"][0]
    signer["digest_algorithm"] = cms.DigestAlgorithm({"algorithm": "1.2.840.10045.4.3.2"})
    return info.dump(force=True)


@pytest.mark.parametrize(
    "damage",
    [lambda c: b"", _two_signer_infos, _signature_oid_as_digest],
    ids=["empty-contents", "two-signer-infos", "signature-oid-as-digest"],
)
async def test_one_bad_signature_keeps_the_report(
    sandbox_api: Api,
    pades_engine: PadesEngine,
    pades_signers: dict[str, Signer],
    fee_note_pdf: bytes,
    damage: Any,
) -> None:
    data = _replace_last_contents(
        await _two_signatures(pades_engine, pades_signers, fee_note_pdf), damage
    )
    status, body = await _verify(sandbox_api, data)
    assert status == 200, body
    first, second = body["signatures"]
    assert first["signature_id"] == "Signature1" and first["details"]["intact"]
    assert first["signer"] and "Sandbox" in first["signer"]
    assert second["signature_id"] == "Signature2"
    assert (second["indication"], second["sub_indication"]) == ("TOTAL_FAILED", "FORMAT_FAILURE")
    assert second["messages"][0].startswith("the signature cannot be processed")


def _broken_dss(writer: IncrementalPdfFileWriter) -> None:
    broken = generic.StreamObject(
        {pdf_name("/Filter"): pdf_name("/FlateDecode")}, encoded_data=b"this is not zlib data"
    )
    writer.root[pdf_name("/DSS")] = writer.add_object(
        generic.DictionaryObject(
            {
                pdf_name("/OCSPs"): generic.ArrayObject([writer.add_object(broken)]),
                pdf_name("/Certs"): generic.ArrayObject([writer.add_object(broken)]),
            }
        )
    )
    writer.update_root()


async def test_broken_dss_stream_keeps_the_report(
    sandbox_api: Api,
    pades_engine: PadesEngine,
    pades_signers: dict[str, Signer],
    fee_note_pdf: bytes,
) -> None:
    signed = await pades_engine.sign(
        fee_note_pdf, pades_signers["pkcs12-rsa"], PadesOptions(level=Level.B_T)
    )
    status, body = await _verify(sandbox_api, _update(signed.data, _broken_dss))
    assert status == 200, body
    (report,) = body["signatures"]
    assert report["details"]["intact"] and report["level"] == "B-T"
    assert any("DSS" in m for m in report["messages"]), report["messages"]


def _trailer_update(data: bytes, extra: bytes, startxref: int | None = None) -> bytes:
    previous = data.rsplit(b"startxref", 1)[1].split()[0]
    offset = len(data)
    size = PdfFileReader(io.BytesIO(data)).trailer["/Size"]
    root = PdfFileReader(io.BytesIO(data)).trailer.raw_get("/Root")
    return data + (
        b"xref\n0 1\n0000000000 65535 f \ntrailer\n<< /Size %d /Root %d 0 R /Prev %s %s >>\n"
        b"startxref\n%d\n%%%%EOF\n"
        % (size, root.idnum, previous, extra, startxref if startxref is not None else offset)
    )


@pytest.mark.parametrize(
    ("extra", "startxref"),
    [
        (b"/Encrypt 5", None),
        (b"/Encrypt << /Filter /Bogus /V 9 >>", None),
        (b"/Encrypt [1 2 3]", None),
        (b"", 10**9),
    ],
    ids=["encrypt-integer", "encrypt-bogus", "encrypt-array", "startxref-past-end"],
)
async def test_damaged_signed_pdf_is_a_4xx_or_a_report(
    sandbox_api: Api,
    pades_engine: PadesEngine,
    pades_signers: dict[str, Signer],
    fee_note_pdf: bytes,
    extra: bytes,
    startxref: int | None,
) -> None:
    signed = await pades_engine.sign(
        fee_note_pdf, pades_signers["pkcs12-rsa"], PadesOptions(level=Level.B_B)
    )
    data = _trailer_update(signed.data, extra, startxref)
    for status, body in (await _verify(sandbox_api, data), (await _sign(sandbox_api, data))[:2]):
        assert status < 500, body
        if status >= 400:
            assert isinstance(body, dict) and body["code"] in {"malformed_pdf", "unsupported_pdf"}


# -- every signature and document timestamp reported -----------------------------------


async def test_document_timestamp_alone_is_reported(
    sandbox_api: Api, pades_trust: TrustServices, fee_note_pdf: bytes
) -> None:
    timestamper: TimeStamper = pades_trust.tsa.timestamper()
    writer = IncrementalPdfFileWriter(io.BytesIO(fee_note_pdf), strict=False)
    out = io.BytesIO()
    await signers.PdfTimeStamper(timestamper).async_timestamp_pdf(writer, "sha256", output=out)
    status, body = await _verify(sandbox_api, out.getvalue())
    assert status == 200, body
    (report,) = body["signatures"]
    assert report["details"]["type"] == "document_timestamp"
    assert report["details"]["intact"] and report["details"]["valid"] and report["timestamp_time"]
    # No DSS: the TSA's chain has no revocation data in the document.
    assert report["indication"] == "INDETERMINATE" and report["sub_indication"]


async def _sha1_signed(fee_note_pdf: bytes, signer: Signer) -> bytes:
    """An ``adbe.pkcs7.sha1`` signature (older Acrobat): the CMS signs the SHA-1 digest of
    the signed bytes, carried as its content. pyHanko no longer makes these: made here
    from a detached one, its SubFilter renamed (same length) and its CMS rebuilt."""
    import hashlib
    import re

    data = await _pyhanko_sign(
        fee_note_pdf, signer, field_name="Legacy",
        subfilter=fields.SigSeedSubFilter.ADOBE_PKCS7_DETACHED,
    )  # fmt: skip
    data = data.replace(b"/adbe.pkcs7.detached", b"/adbe.pkcs7.sha1    ", 1)
    match = re.search(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", data)
    assert match is not None
    a, b, c, d = (int(v) for v in match.groups())
    digest = hashlib.sha1(data[a : a + b] + data[c : c + d]).digest()  # noqa: S324 - the format
    content = await PyHankoSignerAdapter(signer).async_sign_general_data(
        digest, "sha256", detached=False
    )
    encoded = content.dump().hex().encode()
    room = c - (a + b) - 2
    assert len(encoded) <= room
    return data[: a + b + 1] + encoded.ljust(room, b"0") + data[c - 1 :]


async def test_adbe_pkcs7_sha1_is_reported(
    sandbox_api: Api, fee_note_pdf: bytes, pades_signers: dict[str, Signer]
) -> None:
    data = await _sha1_signed(fee_note_pdf, pades_signers["pkcs12-rsa"])
    status, body = await _verify(sandbox_api, data)
    assert status == 200, body
    (report,) = body["signatures"]
    assert (
        report["signature_id"] == "Legacy" and report["details"]["subfilter"] == "/adbe.pkcs7.sha1"
    )
    assert report["details"]["intact"] is True
    assert (report["indication"], report["sub_indication"]) == (
        "INDETERMINATE",
        "CRYPTO_CONSTRAINTS_FAILURE",
    )
    tampered = data.replace(b"/Producer (sidecar", b"/Producer (Sidecar", 1)
    assert tampered != data
    status, body = await _verify(sandbox_api, tampered)
    (report,) = body["signatures"]
    assert (report["indication"], report["sub_indication"]) == ("TOTAL_FAILED", "HASH_FAILURE")


# -- shadow attacks: what changed after the signature ------------------------------------


async def _signed_form(engine: PadesEngine, signer: Signer, pdf: bytes) -> tuple[bytes, int]:
    """The fee note with a visible text field "Amount", then signed (approval, B-B)."""
    holder: dict[str, int] = {}

    def add(writer: IncrementalPdfFileWriter) -> None:
        holder["widget"] = _text_field(writer, "Amount", "100.00 EUR").idnum

    with_form = _update(pdf, add)
    signed = await engine.sign(with_form, signer, PadesOptions(level=Level.B_B))
    return signed.data, holder["widget"]


def _replace_appearance(widget_id: int, text: str) -> Any:
    """Form filling: the field's value and its appearance replaced (shadow *replace*)."""

    def change(writer: IncrementalPdfFileWriter) -> None:
        (widget,) = [
            a.get_object()
            for a in writer.root["/Pages"]["/Kids"][0]["/Annots"]
            if a.get_object().get("/T") == "Amount"
        ]
        appearance = _text_appearance(text)
        widget[pdf_name("/V")] = generic.TextStringObject(text)
        widget[pdf_name("/AP")] = generic.DictionaryObject(
            {pdf_name("/N"): writer.add_object(appearance)}
        )
        writer.update_container(widget)

    return change


def _cover_page(writer: IncrementalPdfFileWriter) -> None:
    """An annotation with an opaque appearance over the page (shadow *hide*)."""
    cover = generic.StreamObject(
        {
            pdf_name("/Type"): pdf_name("/XObject"),
            pdf_name("/Subtype"): pdf_name("/Form"),
            pdf_name("/BBox"): generic.ArrayObject(
                [generic.NumberObject(v) for v in (0, 0, 600, 800)]
            ),
        },
        stream_data=b"1 g 0 0 600 800 re f",
    )
    annot = writer.add_object(
        generic.DictionaryObject(
            {
                pdf_name("/Type"): pdf_name("/Annot"),
                pdf_name("/Subtype"): pdf_name("/Square"),
                pdf_name("/Rect"): generic.ArrayObject(
                    [generic.NumberObject(v) for v in (0, 0, 600, 800)]
                ),
                pdf_name("/AP"): generic.DictionaryObject(
                    {pdf_name("/N"): writer.add_object(cover)}
                ),
            }
        )
    )
    page = writer.root["/Pages"]["/Kids"][0]
    page["/Annots"].append(annot)
    writer.update_container(
        page["/Annots"] if isinstance(page.raw_get("/Annots"), generic.IndirectObject) else page
    )


def _replace_content(writer: IncrementalPdfFileWriter) -> None:
    """The page's content stream swapped for another (shadow *hide-and-replace*)."""
    page = writer.root["/Pages"]["/Kids"][0]
    page[pdf_name("/Contents")] = writer.add_object(
        generic.StreamObject(stream_data=b"BT /F1 12 Tf 72 700 Td (Paid in full) Tj ET")
    )
    writer.update_container(page)


async def test_shadow_replace_is_reported(
    sandbox_api: Api,
    pades_engine: PadesEngine,
    pades_signers: dict[str, Signer],
    fee_note_pdf: bytes,
) -> None:
    signed, widget = await _signed_form(pades_engine, pades_signers["pkcs12-rsa"], fee_note_pdf)
    status, body = await _verify(sandbox_api, signed)
    (report,) = body["signatures"]
    assert report["details"]["changes_after_signing"]["visible"] is False

    attacked = _update(signed, _replace_appearance(widget, "10000.00 EUR"))
    status, body = await _verify(sandbox_api, attacked)
    assert status == 200, body
    (report,) = body["signatures"]
    assert report["details"]["intact"]  # the signed bytes are untouched: that is the attack
    changes = report["details"]["changes_after_signing"]
    assert changes["visible"] and changes["pages"] == [1]
    (modified,) = changes["annotations_modified"]
    assert modified["field"] == "Amount" and modified["appearance_changed"]
    assert any("not what was signed" in m for m in report["messages"]), report["messages"]


@pytest.mark.parametrize(
    ("attack", "kind"),
    [(_cover_page, "annotations_added"), (_replace_content, "content_streams")],
    ids=["hide", "hide-and-replace"],
)
async def test_shadow_hide_is_reported(
    sandbox_api: Api,
    pades_engine: PadesEngine,
    pades_signers: dict[str, Signer],
    fee_note_pdf: bytes,
    attack: Any,
    kind: str,
) -> None:
    signed, _ = await _signed_form(pades_engine, pades_signers["pkcs12-ec"], fee_note_pdf)
    status, body = await _verify(sandbox_api, _update(signed, attack))
    assert status == 200, body
    (report,) = body["signatures"]
    changes = report["details"]["changes_after_signing"]
    assert changes["visible"] and changes[kind], changes
    assert any("not what was signed" in m for m in report["messages"])


# -- a validator failure stays within its signature, and is logged ----------------------


async def test_difference_analysis_failure_stays_in_its_signature(
    pades_engine: PadesEngine,
    pades_signers: dict[str, Signer],
    fee_note_pdf: bytes,
    sandbox_roots: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A mock, as no real part of ours produces it: pyHanko's difference analysis raising
    # KeyError (seen on other vendors' LT documents). Verified in a thread, so the patch
    # applies; the worker path runs the same code.
    from pyhanko.sign.diff_analysis.policies import StandardDiffPolicy

    from sidecar.logs import current_request_id
    from sidecar.signing.pades_verify import verify_pdf

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("/Fields")

    data = await _two_signatures(pades_engine, pades_signers, fee_note_pdf)
    monkeypatch.setattr(StandardDiffPolicy, "review_file", broken)
    token = current_request_id.set("req-diff-test")
    try:
        with caplog.at_level("WARNING", logger="sidecar.signing.pades"):
            reports = await verify_pdf(data, trust_roots=sandbox_roots)
    finally:
        current_request_id.reset(token)
    first, second = reports
    # The first signature has a later revision to analyse: it says it could not.
    assert first.indication.value == "INDETERMINATE"
    assert "could not be analysed (KeyError" in first.messages[0]
    assert first.details["intact"] and first.signer
    assert second.details["intact"] and second.signer  # nothing after it to analyse
    logged = [r for r in caplog.records if "difference analysis" in r.getMessage()]
    assert logged, [r.getMessage() for r in caplog.records]
    trace = logged[0].traceback  # type: ignore[attr-defined]
    assert "KeyError" in trace and " in broken" in trace and "/work/" not in trace


async def test_mutated_signed_pdfs_never_get_a_5xx(
    sandbox_api: Api,
    pades_engine: PadesEngine,
    pades_signers: dict[str, Signer],
    fee_note_pdf: bytes,
) -> None:
    """Bytes of a two-signature PDF changed at seeded random places (a few at a time)."""
    import random

    data = await _two_signatures(pades_engine, pades_signers, fee_note_pdf)
    rng = random.Random(20)
    answers: dict[int, int] = {}
    for _ in range(40):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        status, body = await _verify(sandbox_api, bytes(mutated))
        answers[status] = answers.get(status, 0) + 1
        assert status < 500, body
        if status == 200:
            assert len(body["signatures"]) <= 2
        else:
            assert body["code"] in {"malformed_pdf", "unsupported_pdf"}, body
    assert answers.get(200), answers
