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
import contextlib
import io
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509
from pyhanko.pdf_utils import generic, misc
from pyhanko.pdf_utils.decode_limits import DecodePurpose
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.ades.report import AdESSubIndic
from pyhanko.sign.fields import SigSeedSubFilter
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

from ..logs import traceback_text
from .pdf_changes import changes_after
from .pdf_checks import (
    PdfFacts,
    PdfInspector,
    PdfLimits,
    PdfRefused,
    form_fields,
    inspect_pdf,
    quick_guard,
)
from .report import Evidence, Indication, Level, SignatureReport, SubIndication, subject_text
from .workers import WorkerLost

__all__ = ["REQUIRE_REVINFO", "VerifyOutcome", "verify_pdf", "verify_pdf_blocking"]

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
    """The document's DSS content, parsed once; a damaged entry is left out and said."""

    def __init__(self, reader: PdfFileReader) -> None:
        self.certs: list[x509.Certificate] = []
        self.ocsps: list[asn1_ocsp.OCSPResponse] = []
        self.crls: list[asn1_crl.CertificateList] = []
        self.present = False
        self.problems: list[str] = []
        try:
            dss = DocumentSecurityStore.read_dss(reader)
        except NoDSSFoundError:
            return
        except Exception as exc:  # a DSS of the wrong type, a broken stream: the rest stands
            self.problems.append(f"the DSS cannot be read ({_reason(exc)})")
            return
        self.present = True
        try:
            self.certs = list(dss.load_certs())
        except Exception as exc:
            self.problems.append(f"a DSS certificate cannot be read ({_reason(exc)})")
        self.ocsps = self._load(dss.ocsps, DecodePurpose.OCSP_RESPONSE, asn1_ocsp.OCSPResponse)
        self.crls = self._load(dss.crls, DecodePurpose.CRL, asn1_crl.CertificateList)

    def _load(self, refs: Iterable[Any], purpose: DecodePurpose, kind: Any) -> list[Any]:
        """Each stream of a DSS array parsed as *kind*; an unreadable one left out, and said."""
        loaded = []
        for ref in refs:
            try:
                loaded.append(kind.load(ref.get_object().read_data(purpose)))
            except Exception as exc:
                self.problems.append(
                    f"a DSS entry ({kind.__name__}) cannot be read ({_reason(exc)})"
                )
        return loaded


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


def _sub_indication(indic: AdESSubIndic | None) -> SubIndication | None:
    if indic is None:
        return None
    try:
        return SubIndication(str(indic.standard_name))
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
    sub = _sub_indication(status.trust_problem_indic)
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
        tsub = _sub_indication(ts.trust_problem_indic)
        return (
            Indication.INDETERMINATE,
            tsub or SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE,
            ["the signature timestamp's TSA does not validate"],
        )
    return Indication.TOTAL_PASSED, None, messages


def _reason(exc: BaseException) -> str:
    """A one-line reason for a report: the type, and the message's first line."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _OutOfTime(BaseException):
    """The document's verification budget is spent (raised by the timer or between
    signatures). A BaseException, so that no ``except Exception`` on the way swallows it."""


@dataclass
class _Entry:
    """One filled signature field, before validation."""

    name: str
    #: ``/Sig`` or ``/DocTimeStamp``.
    kind: str
    subfilter: str
    signature: EmbeddedPdfSignature | None
    #: Why the signature cannot even be read (no usable CMS), else None.
    error: str | None = None


@dataclass(frozen=True)
class VerifyOutcome:
    """What a verification run found (it crosses the worker boundary)."""

    reports: tuple[SignatureReport, ...]
    #: Tracebacks of what went wrong while checking: for the log only, never the answer.
    incidents: tuple[str, ...] = ()


class _Run:
    """One document's verification: the budget, the reports so far, the incidents."""

    def __init__(self, budget: float | None) -> None:
        self.budget = budget
        self.ends = time.monotonic() + budget if budget is not None else None
        self.entries: list[_Entry] = []
        self.reports: list[SignatureReport] = []
        self.incidents: list[str] = []
        self.timestamps: dict[str, dict[str, Any]] = {}

    def check_time(self) -> None:
        if self.ends is not None and time.monotonic() > self.ends:
            raise _OutOfTime

    def incident(self, what: str, exc: BaseException) -> None:
        self.incidents.append(f"{what}: {traceback_text(exc)}"[:8000])


@contextlib.contextmanager
def _alarm(budget: float | None) -> Iterator[None]:
    """Interrupt the work with :class:`_OutOfTime` after *budget* seconds, where a
    timer signal can (POSIX, main thread: a worker process); elsewhere the budget
    is checked between signatures only."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if budget is None or not usable:
        yield
        return

    def ring(signum: int, frame: object) -> None:
        raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, budget)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _kind(sig_object: generic.DictionaryObject) -> str:
    if sig_object.get("/Type") == "/DocTimeStamp" or sig_object.get("/SubFilter") == (
        "/ETSI.RFC3161"
    ):
        return "/DocTimeStamp"
    return "/Sig"


def _entries(reader: PdfFileReader, run: _Run) -> list[_Entry]:
    """Every filled signature field, whatever its SubFilter, signing order (unreadable last).

    pyHanko's own list leaves out SubFilters it does not know (``adbe.pkcs7.sha1``) and
    fails whole on one unreadable CMS: each field is taken on its own here.
    """
    found: list[tuple[int, _Entry]] = []
    try:
        # The form's own walk (cycles cut short), not pyHanko's, which gives up on one.
        fields = [
            (name, node.raw_get("/V"), node)
            for name, node, field_type in form_fields(reader.root)
            if field_type == "/Sig" and "/V" in node
        ]
    except Exception as exc:
        run.incident("reading the signature fields", exc)
        raise PdfRefused(
            "malformed_pdf", f"the PDF's form cannot be read ({_reason(exc)})"
        ) from None
    for name, value, field_dict in fields:
        try:
            sig_object = value.get_object()
            if not isinstance(sig_object, generic.DictionaryObject):
                raise TypeError("the signature value is not a dictionary")
            kind, subfilter = _kind(sig_object), str(sig_object.get("/SubFilter", ""))
        except Exception as exc:
            entry = _Entry(name, "/Sig", "", None, f"the signature dictionary: {_reason(exc)}")
            found.append((1 << 30, entry))
            continue
        try:
            signature = EmbeddedPdfSignature(reader, field_dict, name)
            revision = signature.signed_revision
            if signature.md_algorithm not in _DIGESTS:
                raise ValueError(
                    f"the SignerInfo's digest algorithm is {signature.md_algorithm!r}, "
                    "not a digest algorithm"
                )
        except Exception as exc:
            found.append((1 << 30, _Entry(name, kind, subfilter, None, _reason(exc))))
            continue
        found.append((revision, _Entry(name, kind, subfilter, signature)))
    found.sort(key=lambda item: item[0])
    return [entry for _, entry in found]


def _unchecked(entry_name: str, kind: str, why: str) -> SignatureReport:
    return SignatureReport(
        format="PAdES",
        level=Level.NONE,
        indication=Indication.INDETERMINATE,
        signature_id=entry_name,
        messages=[why],
        details={"checked": False, "type": _TYPE[kind]},
    )


#: Digest algorithms a SignerInfo may name (asn1crypto's names).
_DIGESTS = frozenset(
    {"md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sha512_224", "sha512_256",
     "sha3_224", "sha3_256", "sha3_384", "sha3_512", "shake128", "shake256"}
)  # fmt: skip

_TYPE = {"/Sig": "signature", "/DocTimeStamp": "document_timestamp"}


def _format_failure(entry: _Entry, why: str) -> SignatureReport:
    return SignatureReport(
        format="PAdES" if entry.subfilter in {PADES_SUBFILTER, "/ETSI.RFC3161"} else "CAdES",
        level=Level.NONE,
        indication=Indication.TOTAL_FAILED,
        sub_indication=SubIndication.FORMAT_FAILURE,
        signature_id=entry.name,
        messages=[f"the signature cannot be processed: {why}"],
        details={"type": _TYPE[entry.kind], "subfilter": entry.subfilter},
    )


async def _timestamp_report(
    entry: _Entry, roots: Sequence[x509.Certificate], dss: _Dss, run: _Run
) -> SignatureReport:
    """A document timestamp, reported in its own right (and remembered for B-LTA)."""
    assert entry.signature is not None
    signature = entry.signature
    try:
        status = await async_validate_pdf_timestamp(
            signature, validation_context=_offline_context(roots, dss, (), None), skip_diff=True
        )
    except _PROCESSING_ERRORS as exc:
        run.timestamps[entry.name] = {"field": entry.name, "intact": False, "error": _reason(exc)}
        return _format_failure(entry, _reason(exc))
    intact = status.intact and status.valid
    run.timestamps[entry.name] = {
        "field": entry.name,
        "time": status.timestamp.isoformat(),
        "intact": intact,
        "trusted": status.trusted,
        "revision": signature.signed_revision,
    }
    sub: SubIndication | None = None
    if not status.intact:
        indication, sub = Indication.TOTAL_FAILED, SubIndication.HASH_FAILURE
        messages = ["the bytes the document timestamp covers were changed"]
    elif not status.valid:
        indication, sub = Indication.TOTAL_FAILED, SubIndication.SIG_CRYPTO_FAILURE
        messages = ["the document timestamp's signature does not verify"]
    elif not status.trusted:
        indication = Indication.INDETERMINATE
        sub = (
            _sub_indication(status.trust_problem_indic) or SubIndication.NO_CERTIFICATE_CHAIN_FOUND
        )
        messages = ["the document timestamp's TSA does not validate"]
    else:
        indication, messages = Indication.TOTAL_PASSED, []
    return SignatureReport(
        format="PAdES",
        level=Level.NONE,
        indication=indication,
        sub_indication=sub,
        signature_id=entry.name,
        signer=subject_text(status.signing_cert) if status.signing_cert else None,
        timestamp_time=status.timestamp,
        coverage=status.coverage.name.lower() if status.coverage else None,
        messages=messages,
        details={
            "type": "document_timestamp",
            "subfilter": entry.subfilter,
            "intact": status.intact,
            "valid": status.valid,
            "trusted": status.trusted,
            "revision": signature.signed_revision,
        },
    )


def _legacy_report(entry: _Entry) -> SignatureReport:
    """A SubFilter pyHanko does not validate (``adbe.pkcs7.sha1``, ``adbe.x509.rsa_sha1``).

    For ``adbe.pkcs7.sha1`` the CMS carries the SHA-1 digest of the signed bytes as its
    content: whether the bytes still match is checked; the signature value is not, and
    SHA-1 no longer meets any current algorithm policy (ISO 32000-2 deprecates it).
    """
    assert entry.signature is not None
    signature = entry.signature
    details: dict[str, Any] = {"type": "signature", "subfilter": entry.subfilter}
    messages = [
        f"SubFilter {entry.subfilter or '(none)'} is not validated by sidecar: "
        "it relies on SHA-1 or a raw PKCS#1 signature, deprecated by ISO 32000-2"
    ]
    sub = SubIndication.CRYPTO_CONSTRAINTS_FAILURE
    indication = Indication.INDETERMINATE
    if entry.subfilter == "/adbe.pkcs7.sha1":
        content = signature.signed_data["encap_content_info"]["content"].native
        if isinstance(content, bytes):
            matches = content == signature.compute_digest("sha1")
            details["intact"] = matches
            if not matches:
                indication, sub = Indication.TOTAL_FAILED, SubIndication.HASH_FAILURE
                messages.insert(0, "the signed bytes were changed after signing")
    signer = None
    try:
        signer_cert = signature.signer_cert
        signer = subject_text(signer_cert) if signer_cert is not None else None
    except Exception:  # a name for the report only
        signer = None
    return SignatureReport(
        format="CAdES",
        level=Level.NONE,
        indication=indication,
        sub_indication=sub,
        signature_id=entry.name,
        signer=signer,
        messages=messages,
        details=details,
    )


#: Errors that say the signature's structure is wrong (FORMAT_FAILURE), as opposed to
#: an unexpected failure of the validator (INDETERMINATE, logged).
_PROCESSING_ERRORS = (SignatureValidationError, ValueError, misc.PdfError)


async def _validate(
    signature: EmbeddedPdfSignature,
    roots: Sequence[x509.Certificate],
    dss: _Dss,
    run: _Run,
) -> tuple[PdfSignatureStatus, str | None]:
    """pyHanko's validation, offline; the difference analysis once. Returns the status
    and, when the difference analysis itself failed, why (the rest is then checked
    without it)."""
    preliminary = await async_validate_pdf_signature(
        signature,
        signer_validation_context=_offline_context(roots, dss, (), None),
        skip_diff=True,
    )
    ts_time = preliminary.timestamp_validity.timestamp if preliminary.timestamp_validity else None
    kwargs: dict[str, Any] = {
        "signer_validation_context": _offline_context(roots, dss, (), ts_time),
        "ts_validation_context": _offline_context(roots, dss, (), ts_time),
    }
    try:
        return await async_validate_pdf_signature(signature, **kwargs), None
    except _PROCESSING_ERRORS:
        raise
    except Exception as exc:  # e.g. a KeyError inside pyHanko's difference analysis
        run.incident(f"difference analysis of {signature.field_name}", exc)
        status = await async_validate_pdf_signature(signature, skip_diff=True, **kwargs)
        return status, _reason(exc)


async def _chain_ok_without_revinfo(
    signature: EmbeddedPdfSignature, roots: Sequence[x509.Certificate], dss: _Dss
) -> bool:
    context = ValidationContext(
        trust_roots=list(roots), other_certs=dss.certs, allow_fetching=False
    )
    try:
        status = await async_validate_pdf_signature(
            signature, signer_validation_context=context, skip_diff=True
        )
    except (SignatureValidationError, ValueError):
        return False
    return status.trusted


def _changes_messages(changes: dict[str, Any]) -> list[str]:
    if not changes.get("visible"):
        return []
    parts = []
    for key, label in (
        ("content_streams", "content stream(s) replaced or added"),
        ("xobjects", "XObject(s) replaced"),
        ("annotations_added", "annotation(s) added"),
        ("annotations_modified", "annotation appearance(s) changed"),
        ("annotations_removed", "annotation(s) removed"),
    ):
        count = changes.get(f"{key}_count", len(changes.get(key, ())))
        if count:
            parts.append(f"{count} {label}")
    if "page_count" in changes:
        parts.append(
            f"page count {changes['page_count']['before']} -> {changes['page_count']['after']}"
        )
    pages = ", ".join(str(p) for p in changes.get("pages", ())) or "?"
    return [
        f"after this signature, {changes['revisions']} later revision(s) changed what the "
        f"document shows (page {pages}: {'; '.join(parts)}): what is displayed now is not "
        "what was signed"
    ]


async def _signature_report(
    reader: PdfFileReader,
    entry: _Entry,
    roots: Sequence[x509.Certificate],
    dss: _Dss,
    run: _Run,
) -> SignatureReport:
    assert entry.signature is not None
    signature = entry.signature
    subfilter = entry.subfilter
    pades = subfilter == PADES_SUBFILTER
    try:
        status, diff_error = await _validate(signature, roots, dss, run)
    except _PROCESSING_ERRORS as exc:
        return _format_failure(entry, _reason(exc))

    indication, sub, messages = _indication(status)
    if (
        indication is Indication.INDETERMINATE
        and sub is SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE
        and await _chain_ok_without_revinfo(signature, roots, dss)
    ):
        # The chain is fine; only revocation data is missing (EN 319 102-1: TRY_LATER).
        sub = SubIndication.TRY_LATER
        messages = [
            "the signer's chain validates, but the document carries no revocation data "
            "for it: validate with fetching, or sign at B-LT"
        ]
    if diff_error is not None:
        messages.insert(0, f"what later revisions changed could not be analysed ({diff_error})")
        if indication is Indication.TOTAL_PASSED:
            indication = Indication.INDETERMINATE
    try:
        changes = changes_after(reader, signature.signed_revision)
    except Exception as exc:
        run.incident(f"changes after {signature.field_name}", exc)
        changes = {"error": _reason(exc)}
    messages.extend(_changes_messages(changes))
    ts = status.timestamp_validity
    timestamped = ts is not None and ts.intact and ts.valid
    offline_ok = dss.present and status.bottom_line and (ts is None or ts.trusted)
    doc_timestamps = [
        info
        for info in run.timestamps.values()
        if info.get("revision", -1) > signature.signed_revision
    ]

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
    messages.extend(dss.problems)

    cert = status.signing_cert
    return SignatureReport(
        format="PAdES" if pades else "CAdES",
        level=level,
        indication=indication,
        sub_indication=sub,
        signature_id=signature.field_name,
        signer=subject_text(cert),
        signer_certificate_serial=format(cert.serial_number, "x"),
        claimed_signing_time=status.signer_reported_dt,
        timestamp_time=ts.timestamp if ts is not None else None,
        offline_validation_data=offline_ok,
        coverage=status.coverage.name.lower() if status.coverage else None,
        messages=messages,
        details={
            "type": "signature",
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
            "changes_after_signing": changes,
        },
        evidence=Evidence(
            cert,
            tuple(signature.other_embedded_certs),
            ((ts.timestamp, ts.signing_cert),) if ts is not None else (),
        ),
    )


async def _report(
    reader: PdfFileReader, entry: _Entry, roots: Sequence[x509.Certificate], dss: _Dss, run: _Run
) -> SignatureReport:
    """One entry's report; whatever fails stays within it."""
    if entry.signature is None:
        return _format_failure(entry, entry.error or "unreadable")
    try:
        if entry.kind == "/DocTimeStamp":
            return await _timestamp_report(entry, roots, dss, run)
        if entry.subfilter not in _KNOWN_SUBFILTERS:
            return _legacy_report(entry)
        return await _signature_report(reader, entry, roots, dss, run)
    except _PROCESSING_ERRORS as exc:
        return _format_failure(entry, _reason(exc))
    except Exception as exc:
        run.incident(f"validating {entry.name}", exc)
        report = _unchecked(
            entry.name, entry.kind, f"the signature could not be validated ({_reason(exc)})"
        )
        report.details["checked"] = "failed"
        return report


_KNOWN_SUBFILTERS = {sf.value for sf in SigSeedSubFilter}


async def _verify_all(data: bytes, roots: Sequence[x509.Certificate], run: _Run) -> None:
    reader = PdfFileReader(io.BytesIO(data), strict=False)
    run.entries = _entries(reader, run)
    dss = _Dss(reader)
    # Document timestamps first: each signature's B-LTA test reads their results.
    order = sorted(run.entries, key=lambda e: e.kind != "/DocTimeStamp")
    done: dict[int, SignatureReport] = {}
    run.reports = []
    for entry in order:
        run.check_time()
        done[id(entry)] = await _report(reader, entry, roots, dss, run)
        run.reports = [done[id(e)] for e in run.entries if id(e) in done]


def verify_pdf_blocking(
    data: bytes, roots_der: tuple[bytes, ...], budget: float | None
) -> VerifyOutcome:
    """Every signature and document timestamp of *data*, reported; blocking, meant for a
    PDF worker. After *budget* seconds what is not checked yet is reported
    INDETERMINATE (``details.checked`` false) with the reason.

    Raises :class:`PdfRefused` when the document itself (not one signature) is unreadable.
    """
    if multiprocessing.parent_process() is not None:
        # In a worker, nothing configured its logging: pyHanko's warnings (a traceback
        # per chain it cannot validate) would reach stderr. They are the report's findings.
        logging.getLogger("pyhanko").setLevel(logging.CRITICAL)
        logging.getLogger("pyhanko_certvalidator").setLevel(logging.CRITICAL)
    roots = [x509.Certificate.load(der) for der in roots_der]
    run = _Run(budget)
    stopped: str | None = None
    try:
        with _alarm(budget):
            asyncio.run(_verify_all(data, roots, run))
    except _OutOfTime:
        stopped = _deadline_message(budget)
    except PdfRefused:
        raise
    except Exception as exc:  # outside any one signature: the document's structure
        run.incident("verifying the document", exc)
        if not run.entries:
            raise PdfRefused(
                "malformed_pdf", f"the PDF's signatures cannot be read ({_reason(exc)})"
            ) from None
        stopped = f"not checked: the document could not be processed further ({_reason(exc)})"
    reports = list(run.reports)
    if stopped is not None:
        checked = {r.signature_id for r in reports}
        for entry in run.entries:
            if entry.name not in checked:
                reports.append(_unchecked(entry.name, entry.kind, stopped))
    return VerifyOutcome(tuple(reports), tuple(run.incidents))


def _deadline_message(budget: float | None) -> str:
    return (
        f"not checked: verifying this document takes longer than the {budget or 0:g} s "
        "allowed ([signing] verify_timeout); the signatures listed before were checked"
    )


async def verify_pdf(
    data: bytes,
    *,
    trust_roots: Sequence[x509.Certificate],
    inspector: PdfInspector | None = None,
    deadline: float | None = None,
) -> list[SignatureReport]:
    """One report per signature and document timestamp of *data*, in signing order.

    Raises :class:`~.pdf_checks.PdfRefused` for a document that cannot be read
    (``malformed_pdf`` / ``unsupported_pdf``). With an *inspector*, the document is
    read and validated in its memory-capped workers within *deadline* seconds (default:
    its limits' ``verify_timeout``); without one, in a thread (a PDF sidecar made).
    """
    if inspector is not None:
        facts = await inspector.inspect(data)
        budget = deadline if deadline is not None else inspector.limits.verify_timeout
    else:
        quick_guard(data, PdfLimits())
        facts = await asyncio.to_thread(inspect_pdf, data)
        budget = deadline if deadline is not None else PdfLimits().verify_timeout
    roots = tuple(cert.dump() for cert in trust_roots)
    try:
        if inspector is not None:
            # The worker stops itself at the budget; the pool's deadline is the backstop
            # for a step stuck in C code.
            outcome = await inspector.run(
                verify_pdf_blocking, data, roots, budget, deadline=budget + _BACKSTOP
            )
        else:
            outcome = await asyncio.to_thread(verify_pdf_blocking, data, roots, budget)
    except TimeoutError:
        log.warning("PDF verification stopped at its deadline (%.0f s)", budget + _BACKSTOP)
        outcome = _nothing_checked(facts, _deadline_message(budget))
    except WorkerLost:
        log.warning("PDF verification: the worker died (memory ceiling?)")
        outcome = _nothing_checked(
            facts, "not checked: verifying this document needs more memory than allowed"
        )
    for incident in outcome.incidents:
        what, _, trace = incident.partition(": ")
        log.warning("PDF verification: %s failed", what, extra={"traceback": trace})
    if not outcome.reports and facts.signatures:
        # Stopped before even one signature was listed: an empty report would read as
        # "unsigned"; the signatures the reading found are named, unchecked.
        return list(_nothing_checked(facts, _deadline_message(budget)).reports)
    return list(outcome.reports)


#: Seconds the pool waits beyond the budget before it kills the worker.
_BACKSTOP = 5.0


def _nothing_checked(facts: PdfFacts, why: str) -> VerifyOutcome:
    return VerifyOutcome(tuple(_unchecked(name, kind, why) for name, kind in facts.signatures))
