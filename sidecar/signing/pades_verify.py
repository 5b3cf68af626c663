"""Validation of a PDF's signatures, reported in the terms of ETSI EN 319 102-1.

pyHanko checks each signature (integrity, CMS signature, chain, revocation, the
signature timestamp, what later revisions changed); this module turns that into a
:class:`~sidecar.signing.report.SignatureReport` and derives the PAdES baseline
level reached, which pyHanko does not classify:

- ``/SubFilter /ETSI.CAdES.detached`` → B-B (anything else is reported as CAdES/
  PKCS#7 with no baseline level);
- a signature-time-stamp attribute that validates → B-T;
- a DSS whose certificates and revocation data let the signer's and the TSA's
  chains validate **offline** (no fetching, revocation data required for every
  certificate, at the time the timestamp proves) → B-LT;
- a document timestamp over a later revision (covering that DSS) → B-LTA.

By default nothing is fetched: the answer then says what the document proves by
itself, which is what the CNS will see once the OCSP responses are old.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime

from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509
from pyhanko.pdf_utils import misc
from pyhanko.pdf_utils.decode_limits import DecodePurpose
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import DocumentSecurityStore, async_validate_pdf_signature
from pyhanko.sign.validation.errors import NoDSSFoundError, SignatureValidationError
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature, async_validate_pdf_timestamp
from pyhanko.sign.validation.status import PdfSignatureStatus
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.policy_decl import (
    CertRevTrustPolicy,
    RevocationCheckingPolicy,
    RevocationCheckingRule,
)

from .pades import ValidationContextFactory
from .pdf_checks import PdfInspector, inspect_pdf, quick_guard
from .report import Evidence, Indication, Level, SignatureReport, SubIndication

__all__ = ["REQUIRE_REVINFO", "verify_pdf"]

log = logging.getLogger("sidecar.signing.pades")

#: Revocation data required for every certificate below the anchor (the B-LT test).
REQUIRE_REVINFO = CertRevTrustPolicy(
    RevocationCheckingPolicy(
        ee_certificate_rule=RevocationCheckingRule.CRL_OR_OCSP_REQUIRED,
        intermediate_ca_cert_rule=RevocationCheckingRule.CRL_OR_OCSP_REQUIRED,
    )
)

PADES_SUBFILTER = "/ETSI.CAdES.detached"

_FAILED = {
    SubIndication.FORMAT_FAILURE,
    SubIndication.HASH_FAILURE,
    SubIndication.SIG_CRYPTO_FAILURE,
    SubIndication.REVOKED,
    SubIndication.EXPIRED,
    SubIndication.NOT_YET_VALID,
}


class _Dss:
    """The document's DSS content, parsed once."""

    def __init__(self, reader: PdfFileReader) -> None:
        self.certs: list[x509.Certificate] = []
        self.ocsps: list[asn1_ocsp.OCSPResponse] = []
        self.crls: list[asn1_crl.CertificateList] = []
        self.present = False
        try:
            dss = DocumentSecurityStore.read_dss(reader)
        except NoDSSFoundError:
            return
        self.present = True
        self.certs = list(dss.load_certs())
        self.ocsps = [
            asn1_ocsp.OCSPResponse.load(r.get_object().read_data(DecodePurpose.OCSP_RESPONSE))
            for r in dss.ocsps
        ]
        self.crls = [
            asn1_crl.CertificateList.load(c.get_object().read_data(DecodePurpose.CRL))
            for c in dss.crls
        ]


def _offline_context(
    roots: Sequence[x509.Certificate],
    dss: _Dss,
    extra: Iterable[x509.Certificate],
    moment: datetime | None,
) -> ValidationContext:
    return ValidationContext(
        trust_roots=list(roots),
        other_certs=[*dss.certs, *extra],
        ocsps=dss.ocsps,
        crls=dss.crls,
        allow_fetching=False,
        revinfo_policy=REQUIRE_REVINFO,
        moment=moment,
        # Revocation data fetched just after the timestamp proves the state at its time.
        retroactive_revinfo=True,
    )


def _sub_indication(name: str | None) -> SubIndication | None:
    if name is None:
        return None
    try:
        return SubIndication(name)
    except ValueError:
        return SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE


def _indication(status: PdfSignatureStatus) -> tuple[Indication, SubIndication | None, list[str]]:
    messages: list[str] = []
    if not status.intact:
        return (
            Indication.TOTAL_FAILED,
            SubIndication.HASH_FAILURE,
            ["the signed bytes were changed after signing"],
        )
    if not status.valid:
        return (
            Indication.TOTAL_FAILED,
            SubIndication.SIG_CRYPTO_FAILURE,
            ["the signature value does not verify with the signer's key"],
        )
    if status.docmdp_ok is False:
        return (
            Indication.TOTAL_FAILED,
            SubIndication.FORMAT_FAILURE,
            [
                f"later revisions make changes the signature does not allow "
                f"({status.modification_level.name if status.modification_level else '?'})"
            ],
        )
    ts = status.timestamp_validity
    if ts is not None and not (ts.intact and ts.valid):
        return (
            Indication.TOTAL_FAILED,
            SubIndication.HASH_FAILURE,
            ["the signature timestamp does not match the signature"],
        )
    if status.revoked:
        messages.append("the signer's certificate (or its chain) is revoked")
    sub = _sub_indication(status.trust_problem_indic.name if status.trust_problem_indic else None)
    if sub is None and status.validation_path is None:
        sub = SubIndication.NO_CERTIFICATE_CHAIN_FOUND
    if sub is not None:
        messages.append(f"the signer's certificate does not validate: {sub.value}")
        return (
            (Indication.TOTAL_FAILED if sub in _FAILED else Indication.INDETERMINATE),
            sub,
            messages,
        )
    if ts is not None and not ts.trusted:
        tsub = _sub_indication(ts.trust_problem_indic.name if ts.trust_problem_indic else None)
        return (
            Indication.INDETERMINATE,
            tsub or SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE,
            ["the signature timestamp's TSA does not validate"],
        )
    return Indication.TOTAL_PASSED, None, messages


async def _chain_ok_without_revinfo(
    signature: EmbeddedPdfSignature, roots: Sequence[x509.Certificate], dss: _Dss
) -> bool:
    context = ValidationContext(
        trust_roots=list(roots), other_certs=dss.certs, allow_fetching=False
    )
    try:
        status = await async_validate_pdf_signature(signature, signer_validation_context=context)
    except (SignatureValidationError, ValueError):
        return False
    return status.trusted


async def _doc_timestamps_after(
    reader: PdfFileReader,
    signature: EmbeddedPdfSignature,
    roots: Sequence[x509.Certificate],
    dss: _Dss,
) -> list[dict[str, object]]:
    found = []
    for ts in reader.embedded_timestamp_signatures:
        if ts.signed_revision <= signature.signed_revision:
            continue
        context = _offline_context(roots, dss, (), None)
        try:
            status = await async_validate_pdf_timestamp(ts, validation_context=context)
            found.append(
                {
                    "field": ts.field_name,
                    "time": status.timestamp.isoformat(),
                    "intact": status.intact and status.valid,
                    "trusted": status.trusted,
                }
            )
        except (SignatureValidationError, ValueError) as exc:
            found.append({"field": ts.field_name, "intact": False, "error": str(exc)[:200]})
    return found


async def _verify_one(
    reader: PdfFileReader,
    signature: EmbeddedPdfSignature,
    roots: Sequence[x509.Certificate],
    dss: _Dss,
    allow_fetching: bool,
    online: ValidationContextFactory | None,
) -> SignatureReport:
    subfilter = str(signature.sig_object.get("/SubFilter", ""))
    pades = subfilter == PADES_SUBFILTER
    base_report = SignatureReport(
        format="PAdES" if pades else "CAdES",
        level=Level.NONE,
        indication=Indication.INDETERMINATE,
        signature_id=signature.field_name,
    )
    try:
        # First pass offline: what the document proves by itself (and the B-LT test).
        preliminary = await async_validate_pdf_signature(
            signature, signer_validation_context=_offline_context(roots, dss, (), None)
        )
        ts_time = (
            preliminary.timestamp_validity.timestamp if preliminary.timestamp_validity else None
        )
        offline_context = _offline_context(roots, dss, (), ts_time)
        offline = await async_validate_pdf_signature(
            signature,
            signer_validation_context=offline_context,
            ts_validation_context=_offline_context(roots, dss, (), ts_time),
        )
        status = offline
        if allow_fetching:
            context = (
                online()
                if online
                else ValidationContext(
                    trust_roots=list(roots), allow_fetching=True, revinfo_policy=REQUIRE_REVINFO
                )
            )
            status = await async_validate_pdf_signature(
                signature, signer_validation_context=context, ts_validation_context=context
            )
    except (SignatureValidationError, ValueError, misc.PdfError) as exc:
        base_report.indication = Indication.TOTAL_FAILED
        base_report.sub_indication = SubIndication.FORMAT_FAILURE
        base_report.messages.append(f"the signature cannot be processed: {str(exc)[:200]}")
        return base_report

    indication, sub, messages = _indication(status)
    if (
        not allow_fetching
        and indication is Indication.INDETERMINATE
        and sub is SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE
        and await _chain_ok_without_revinfo(signature, roots, dss)
    ):
        # The chain is fine; only revocation data is missing (EN 319 102-1: TRY_LATER).
        sub = SubIndication.TRY_LATER
        messages = [
            "the signer's chain validates, but the document carries no revocation data "
            "for it: validate with fetching, or sign at B-LT"
        ]
    ts = status.timestamp_validity
    timestamped = ts is not None and ts.intact and ts.valid
    offline_ok = dss.present and offline.bottom_line and (ts is None or ts.trusted)
    if ts is not None and offline.timestamp_validity is not None:
        offline_ok = offline_ok and offline.timestamp_validity.trusted
    doc_timestamps = await _doc_timestamps_after(reader, signature, roots, dss)

    level = Level.NONE
    if pades:
        level = Level.B_B
        if timestamped:
            level = Level.B_T
            if offline_ok:
                level = Level.B_LT
                if any(d.get("intact") and d.get("trusted") for d in doc_timestamps):
                    level = Level.B_LTA
    if not pades:
        messages.append(f"SubFilter {subfilter or '(none)'} is not PAdES (ETSI.CAdES.detached)")
    if ts is None:
        messages.append("no signature timestamp (B-T needs one)")
    elif not offline_ok:
        messages.append("the document's validation data does not suffice offline (B-LT needs it)")

    cert = status.signing_cert
    return SignatureReport(
        format="PAdES" if pades else "CAdES",
        level=level,
        indication=indication,
        sub_indication=sub,
        signature_id=signature.field_name,
        signer=cert.subject.human_friendly,
        signer_certificate_serial=format(cert.serial_number, "x"),
        claimed_signing_time=status.signer_reported_dt,
        timestamp_time=ts.timestamp if ts is not None else None,
        offline_validation_data=offline_ok,
        coverage=status.coverage.name.lower() if status.coverage else None,
        messages=messages,
        details={
            "intact": status.intact,
            "valid": status.valid,
            "trusted": status.trusted,
            "revoked": status.revoked,
            "subfilter": subfilter,
            "md_algorithm": status.md_algorithm,
            "signature_mechanism": status.pkcs7_signature_mechanism,
            "modification_level": (
                status.modification_level.name.lower() if status.modification_level else None
            ),
            "docmdp_ok": status.docmdp_ok,
            "timestamp": (
                {
                    "intact": ts.intact and ts.valid,
                    "trusted": ts.trusted,
                    "time": ts.timestamp.isoformat(),
                }
                if ts is not None
                else None
            ),
            "dss": dss.present,
            "document_timestamps": doc_timestamps,
            "revision": signature.signed_revision,
        },
        evidence=Evidence(
            cert,
            tuple(signature.other_embedded_certs),
            ((ts.timestamp, ts.signing_cert),) if ts is not None else (),
        ),
    )


async def verify_pdf(
    data: bytes,
    *,
    trust_roots: Sequence[x509.Certificate],
    allow_fetching: bool = False,
    validation_context: ValidationContextFactory | None = None,
    inspector: PdfInspector | None = None,
) -> list[SignatureReport]:
    """One report per signature of *data* (document timestamps are reported with
    the signatures they protect). Raises :class:`~.pdf_checks.PdfRefused` for a
    document that cannot be read (400 ``malformed_pdf`` / 422 ``unsupported_pdf``).

    *validation_context* makes the contexts used when *allow_fetching* is on (the
    trust layer's, sharing its revocation cache).
    """
    if inspector is not None:
        await inspector.inspect(data)
    else:
        from .pdf_checks import PdfLimits

        quick_guard(data, PdfLimits())
        await asyncio.to_thread(inspect_pdf, data)
    reader = PdfFileReader(io.BytesIO(data), strict=False)
    dss = _Dss(reader)
    reports = []
    for signature in reader.embedded_regular_signatures:
        reports.append(
            await _verify_one(
                reader, signature, trust_roots, dss, allow_fetching, validation_context
            )
        )
    return reports
