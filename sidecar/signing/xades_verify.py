"""XAdES validation (ETSI EN 319 102-1 basic and LT/LTA checks) with embedded data only.

For each ``ds:Signature`` of a document:

1. format: SignedInfo, SignatureValue, QualifyingProperties targeting the
   signature, SignedProperties covered by a reference — else TOTAL_FAILED /
   FORMAT_FAILURE;
2. signing certificate: the certificate whose digest SigningCertificateV2 (or
   v1) names, found in KeyInfo or CertificateValues — else INDETERMINATE /
   NO_SIGNING_CERTIFICATE_FOUND;
3. every reference's digest (TOTAL_FAILED / HASH_FAILURE) and the signature
   value (TOTAL_FAILED / SIG_CRYPTO_FAILURE);
4. signature timestamps: imprint over the canonicalized ds:SignatureValue, the
   token's own signature and its TSA's chain;
5. the signer's chain to a trust anchor and its revocation status *at the
   timestamp's time*, using only the certificates, CRLs and OCSP responses the
   document carries (no network unless the caller allows fetching);
6. archive timestamps (B-LTA) over the clause 5.5.2.2 input.

The level reached is the highest whose requirements hold: B-B (core and
signing certificate), B-T (+ a valid signature timestamp), B-LT (+ validation
data that suffice offline for the signer and the TSA), B-LTA (+ a valid
archive timestamp).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from asn1crypto import x509
from cryptography import x509 as cx509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree
from pyhanko.sign.validation.errors import SignatureValidationError
from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko_certvalidator import ValidationContext, find_valid_path
from pyhanko_certvalidator.errors import (
    ExpiredError,
    InsufficientRevinfoError,
    InvalidCertificateError,
    NotYetValidError,
    PathBuildingError,
    RevokedError,
    ValidationError,
)
from pyhanko_certvalidator.policy_decl import (
    REQUIRE_REVINFO,
    CertRevTrustPolicy,
    RevocationCheckingPolicy,
    RevocationCheckingRule,
)
from pyhanko_certvalidator.registry import CertificateRegistry, SimpleTrustManager

from ..trust.tsa import TokenContents, read_token
from .pdf_checks import PdfInspector
from .report import Evidence, Indication, Level, SignatureReport, SubIndication, subject_text
from .validation_cache import MISS, OutcomeCache
from .workers import WorkerLost
from .xades_properties import (
    archive_timestamp_input,
    find_qualifying_properties,
)
from .xml_safety import DEFAULT_MAX_DEPTH, DEFAULT_MAX_SIZE, parse_xml
from .xmldsig import (
    C14N_INCL,
    DIGESTS,
    WEAK_DIGESTS,
    AmbiguousReference,
    UnresolvableReference,
    UnsupportedAlgorithm,
    c14n,
    dereference,
    digest,
    ds,
    resolve_uri,
    xades,
    xades141,
)

__all__ = ["VerificationPolicy", "verify_xml", "verify_xml_blocking", "verify_xml_bounded"]

logger = logging.getLogger("sidecar.signing.xades_verify")

_SIGNED_PROPERTIES_TYPE = "http://uri.etsi.org/01903#SignedProperties"
_SIGNATURE_METHODS: dict[str, tuple[str, str]] = {
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": ("rsa", "sha256"),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": ("rsa", "sha384"),
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": ("rsa", "sha512"),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": ("ec", "sha256"),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": ("ec", "sha384"),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512": ("ec", "sha512"),
    # Known, checked, and too weak to prove anything (ETSI TS 119 312): see _Weak.
    "http://www.w3.org/2000/09/xmldsig#rsa-sha1": ("rsa", "sha1"),
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1": ("ec", "sha1"),
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
#: Digests whose match proves nothing today (a weak signature is INDETERMINATE).
_WEAK_HASHES = frozenset({"sha1"})
_SIGNER_KEY_USAGE = KeyUsageConstraints(
    key_usage={"digital_signature", "non_repudiation"}, match_all_key_usages=False
)
_TSA_KEY_USAGE = KeyUsageConstraints(extd_key_usage={"time_stamping"})


@dataclass(frozen=True)
class VerificationPolicy:
    """What the validator trusts. It never goes online: only embedded data count."""

    trust_roots: Sequence[x509.Certificate]
    #: Validation time when no timestamp gives one (tests); default now.
    now: datetime | None = None
    max_size: int = DEFAULT_MAX_SIZE
    max_depth: int = DEFAULT_MAX_DEPTH


class _Failed(Exception):
    def __init__(self, indication: Indication, sub: SubIndication, message: str) -> None:
        super().__init__(message)
        self.indication = indication
        self.sub = sub
        self.message = message


def _b64(element: etree._Element | None) -> bytes:
    if element is None:
        return b""
    return base64.b64decode("".join((element.text or "").split()), validate=False)


@dataclass
class _Embedded:
    """Certificates and revocation data carried by one signature."""

    certificates: list[x509.Certificate] = field(default_factory=list)
    crls: list[bytes] = field(default_factory=list)
    ocsps: list[bytes] = field(default_factory=list)
    has_certificate_values: bool = False
    has_revocation_values: bool = False

    def add_certificate(self, cert: x509.Certificate) -> None:
        if all(c.dump() != cert.dump() for c in self.certificates):
            self.certificates.append(cert)


def _embedded(signature: etree._Element) -> _Embedded:
    found = _Embedded()
    for element in signature.iterfind(f"{ds('KeyInfo')}/{ds('X509Data')}/{ds('X509Certificate')}"):
        found.add_certificate(x509.Certificate.load(_b64(element)))
    usp = signature.find(f".//{xades('UnsignedSignatureProperties')}")
    if usp is None:
        return found
    for values in usp.iterfind(xades("CertificateValues")):
        found.has_certificate_values = True
        for element in values.iterfind(xades("EncapsulatedX509Certificate")):
            found.add_certificate(x509.Certificate.load(_b64(element)))
    revocation_holders = [
        *usp.iterfind(xades("RevocationValues")),
        *usp.iterfind(f"{xades141('TimeStampValidationData')}/{xades('RevocationValues')}"),
    ]
    for tsvd in usp.iterfind(xades141("TimeStampValidationData")):
        for element in tsvd.iterfind(
            f"{xades('CertificateValues')}/{xades('EncapsulatedX509Certificate')}"
        ):
            found.add_certificate(x509.Certificate.load(_b64(element)))
    for values in revocation_holders:
        found.has_revocation_values = True
        found.crls += [
            _b64(e)
            for e in values.iterfind(f"{xades('CRLValues')}/{xades('EncapsulatedCRLValue')}")
        ]
        found.ocsps += [
            _b64(e)
            for e in values.iterfind(f"{xades('OCSPValues')}/{xades('EncapsulatedOCSPValue')}")
        ]
    return found


def _signing_certificate(
    signed_signature_properties: etree._Element, candidates: Sequence[x509.Certificate]
) -> x509.Certificate:
    holder = signed_signature_properties.find(xades("SigningCertificateV2"))
    if holder is None:
        holder = signed_signature_properties.find(xades("SigningCertificate"))
    if holder is None:
        raise _Failed(
            Indication.INDETERMINATE,
            SubIndication.NO_SIGNING_CERTIFICATE_FOUND,
            "no SigningCertificateV2 in the SignedProperties",
        )
    first = holder.find(f"{xades('Cert')}/{xades('CertDigest')}")
    if first is None:
        raise _Failed(
            Indication.TOTAL_FAILED, SubIndication.FORMAT_FAILURE, "SigningCertificate is empty"
        )
    method = first.find(ds("DigestMethod"))
    algorithm = "" if method is None else method.get("Algorithm", "")
    expected = _b64(first.find(ds("DigestValue")))
    for cert in candidates:
        if algorithm in DIGESTS and digest(cert.dump(), algorithm) == expected:
            return cert
        if algorithm == "http://www.w3.org/2000/09/xmldsig#sha1" and (
            hashlib.sha1(cert.dump()).digest() == expected  # noqa: S324 - v1 digest, matched only
        ):
            return cert
    raise _Failed(
        Indication.INDETERMINATE,
        SubIndication.NO_SIGNING_CERTIFICATE_FOUND,
        "no certificate in the signature matches the SigningCertificateV2 digest",
    )


def _verify_signature_value(
    signed_info: etree._Element, value: bytes, cert: x509.Certificate
) -> bool:
    """Check the signature value; True when it holds but with a weak digest."""
    method_element = signed_info.find(ds("SignatureMethod"))
    method = "" if method_element is None else method_element.get("Algorithm", "")
    if method not in _SIGNATURE_METHODS:
        raise _Failed(
            Indication.INDETERMINATE,
            SubIndication.CRYPTO_CONSTRAINTS_FAILURE,
            f"signature method {method!r} is not accepted",
        )
    kind, digest_name = _SIGNATURE_METHODS[method]
    c14n_element = signed_info.find(ds("CanonicalizationMethod"))
    c14n_method = C14N_INCL if c14n_element is None else c14n_element.get("Algorithm", "")
    try:
        data = c14n(signed_info, c14n_method)
    except UnsupportedAlgorithm as exc:
        # Not implemented here is not proven wrong.
        raise _Failed(
            Indication.INDETERMINATE, SubIndication.CRYPTO_CONSTRAINTS_FAILURE, str(exc)
        ) from None
    public_key = cx509.load_der_x509_certificate(cert.dump()).public_key()
    algorithm = _HASHES[digest_name]()
    try:
        if kind == "rsa" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(value, data, padding.PKCS1v15(), algorithm)
        elif kind == "ec" and isinstance(public_key, ec.EllipticCurvePublicKey):
            size = (public_key.curve.key_size + 7) // 8
            if len(value) != 2 * size:
                raise InvalidSignature
            r = int.from_bytes(value[:size], "big")
            s = int.from_bytes(value[size:], "big")
            public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(algorithm))
        else:
            raise InvalidSignature
    except InvalidSignature:
        raise _Failed(
            Indication.TOTAL_FAILED,
            SubIndication.SIG_CRYPTO_FAILURE,
            "the signature value does not verify with the signing certificate's key",
        ) from None
    return digest_name in _WEAK_HASHES


def _check_references(
    signature: etree._Element, signed_info: etree._Element, signed_properties: etree._Element
) -> bool:
    """Check every reference's digest; True when they hold but one uses a weak digest."""
    covers_properties = covers_data = weak = False
    # A reference whose data cannot be had (another document, a transform or digest
    # not implemented here) proves nothing either way: it makes the verdict
    # INDETERMINATE, unless another reference proves the document changed.
    unavailable: list[_Failed] = []
    for reference in signed_info.iterfind(ds("Reference")):
        uri = reference.get("URI")
        method = reference.find(ds("DigestMethod"))
        algorithm = "" if method is None else method.get("Algorithm", "")
        weak = weak or algorithm in WEAK_DIGESTS
        if algorithm not in DIGESTS and algorithm not in WEAK_DIGESTS:
            unavailable.append(
                _Failed(
                    Indication.INDETERMINATE,
                    SubIndication.CRYPTO_CONSTRAINTS_FAILURE,
                    f"reference {uri!r}: digest {algorithm!r} is not accepted",
                )
            )
            continue
        try:
            target, _xpointer = resolve_uri(signature.getroottree(), uri or "")
            actual = digest(dereference(reference, signature), algorithm)
        except AmbiguousReference as exc:
            raise _Failed(
                Indication.TOTAL_FAILED, SubIndication.FORMAT_FAILURE, f"reference {uri!r}: {exc}"
            ) from None
        except (UnsupportedAlgorithm, UnresolvableReference) as exc:
            unavailable.append(
                _Failed(
                    Indication.INDETERMINATE,
                    SubIndication.SIGNED_DATA_NOT_FOUND,
                    f"reference {uri!r}: {exc}",
                )
            )
            continue
        if actual != _b64(reference.find(ds("DigestValue"))):
            what = "the signed data" if uri == "" else f"the element {uri}"
            raise _Failed(
                Indication.TOTAL_FAILED,
                SubIndication.HASH_FAILURE,
                f"the digest of {what} does not match: it was changed after signing",
            )
        if reference.get("Type") == _SIGNED_PROPERTIES_TYPE:
            covers_properties = covers_properties or target is signed_properties
        elif target is None:
            covers_data = True
        elif target.tag == ds("Object") and target.getparent() is signature:
            # An enveloping signature: its data is a ds:Object of its own.
            covers_data = True
        else:
            inside = target is signature or any(a is signature for a in target.iterancestors())
            covers_data = covers_data or not inside
    if unavailable:
        raise unavailable[0]
    if not covers_properties:
        raise _Failed(
            Indication.TOTAL_FAILED,
            SubIndication.FORMAT_FAILURE,
            "no reference covers this signature's SignedProperties",
        )
    if not covers_data:
        raise _Failed(
            Indication.INDETERMINATE,
            SubIndication.SIGNED_DATA_NOT_FOUND,
            "no reference covers data outside the signature",
        )
    return weak


_SUBINDICATIONS_BY_NAME = {s.name: s for s in SubIndication}
_SUB_FALLBACK = {
    "REVOKED_CA_NO_POE": SubIndication.REVOKED_NO_POE,
    "REVOCATION_OUT_OF_BOUNDS_NO_POE": SubIndication.OUT_OF_BOUNDS_NO_POE,
    "CRYPTO_CONSTRAINTS_FAILURE_NO_POE": SubIndication.CRYPTO_CONSTRAINTS_FAILURE,
    "NO_POE": SubIndication.OUT_OF_BOUNDS_NO_POE,
    "EXPIRED": SubIndication.OUT_OF_BOUNDS_NO_POE,
}


def _sub_from_pyhanko(indic: object) -> SubIndication:
    name = getattr(indic, "name", str(indic))
    return _SUBINDICATIONS_BY_NAME.get(name) or _SUB_FALLBACK.get(
        name, SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE
    )


@dataclass
class _Stamp:
    element: etree._Element
    contents: TokenContents
    ok: bool
    message: str
    trust_problem: SubIndication | None = None


#: pyhanko-certvalidator's tolerance in every comparison with the validation time.
_TIME_TOLERANCE = timedelta(seconds=30)
#: Everything a validation context here is built with but its inputs: part of every
#: kept outcome's key (a change here is another key).
_CONTEXT_SETTINGS = "offline;REQUIRE_REVINFO;retroactive;tolerance=30s"
#: Certificate validation outcomes (signer and TSA), by exact inputs and time window.
_OUTCOMES = OutcomeCache(512, tolerance=_TIME_TOLERANCE)
_TRUST_MANAGERS: dict[tuple[bytes, ...], SimpleTrustManager] = {}
_TRUSTED = "trusted"
#: A token context's certificate registry, by TSA certificate (see _token_context).
_TOKEN_REGISTRIES: dict[bytes, CertificateRegistry] = {}
_NO_REVOCATION_CHECK = CertRevTrustPolicy(
    RevocationCheckingPolicy(
        ee_certificate_rule=RevocationCheckingRule.NO_CHECK,
        intermediate_ca_cert_rule=RevocationCheckingRule.NO_CHECK,
    )
)


def _trust_manager(roots: Sequence[x509.Certificate]) -> SimpleTrustManager:
    """The trust manager of ``roots``, built once per set of anchors (by their DER):
    it is only read during a validation."""
    key = tuple(root.dump() for root in roots)
    manager = _TRUST_MANAGERS.get(key)
    if manager is None:
        if len(_TRUST_MANAGERS) >= 16:
            _TRUST_MANAGERS.clear()  # anchors change rarely: no need for an order
        manager = _TRUST_MANAGERS[key] = SimpleTrustManager.build(trust_roots=list(roots))
    return manager


def _context(
    policy: VerificationPolicy, embedded: _Embedded, moment: datetime
) -> ValidationContext:
    # Any change here changes _CONTEXT_SETTINGS (the kept outcomes' key).
    return ValidationContext(
        trust_manager=_trust_manager(policy.trust_roots),
        other_certs=embedded.certificates,
        crls=embedded.crls,
        ocsps=embedded.ocsps,
        moment=moment,
        allow_fetching=False,
        revinfo_policy=CertRevTrustPolicy(REQUIRE_REVINFO, retroactive_revinfo=True),
        # Revocation data gathered right after the timestamp is what LT is made of.
        retroactive_revinfo=True,
        time_tolerance=_TIME_TOLERANCE,
    )


def _outcome_key(
    what: str,
    cert: x509.Certificate,
    policy: VerificationPolicy,
    embedded: _Embedded,
    moment: datetime,
) -> Hashable | None:
    return _OUTCOMES.key(
        f"{what};{_CONTEXT_SETTINGS}",
        cert,
        policy.trust_roots,
        embedded.certificates,
        embedded.crls,
        embedded.ocsps,
        moment,
    )


def _token_context(tsa_certificate: x509.Certificate, moment: datetime) -> ValidationContext:
    """A context in which the TSA's certificate is itself the anchor, for a token whose
    TSA path is known good (a kept outcome): pyHanko then judges the token itself (its
    signature, imprint, algorithms and ESS signing certificate), which no context
    changes. Its trust manager and registry are built once per TSA certificate."""
    trust_manager = _trust_manager((tsa_certificate,))
    registry = _TOKEN_REGISTRIES.get(tsa_certificate.dump())
    if registry is None:
        if len(_TOKEN_REGISTRIES) >= 8:
            _TOKEN_REGISTRIES.clear()
        registry = CertificateRegistry.build((tsa_certificate,))
        _TOKEN_REGISTRIES[tsa_certificate.dump()] = registry
    return ValidationContext(
        trust_manager=trust_manager,
        certificate_registry=registry,
        moment=moment,
        allow_fetching=False,
        revinfo_policy=_NO_REVOCATION_CHECK,
        time_tolerance=_TIME_TOLERANCE,
    )


async def _check_timestamp(
    element: etree._Element,
    expected_input: Callable[[str], bytes],
    embedded: _Embedded,
    policy: VerificationPolicy,
) -> _Stamp:
    """One SignatureTimeStamp or ArchiveTimeStamp: imprint, token signature, TSA chain."""
    encapsulated = element.find(xades("EncapsulatedTimeStamp"))
    try:
        contents = read_token(_b64(encapsulated))
    except (ValueError, TypeError) as exc:
        raise _Failed(
            Indication.TOTAL_FAILED, SubIndication.FORMAT_FAILURE, f"unreadable timestamp: {exc}"
        ) from None
    method = element.find(ds("CanonicalizationMethod"))
    algorithm = C14N_INCL if method is None else method.get("Algorithm", C14N_INCL)
    try:
        data = expected_input(algorithm)
    except UnsupportedAlgorithm as exc:
        raise _Failed(Indication.TOTAL_FAILED, SubIndication.FORMAT_FAILURE, str(exc)) from None
    for cert in contents.certificates:
        embedded.add_certificate(cert)
    name = etree.QName(element).localname

    def imprint(algorithm: str) -> bytes:
        return hashlib.new(algorithm, data).digest()

    tsa = contents.tsa_certificate
    key = None if tsa is None else _outcome_key("tsa", tsa, policy, embedded, contents.gen_time)
    if key is not None and _OUTCOMES.get(key) == _TRUSTED:
        assert tsa is not None
        # The TSA's path was validated with these very inputs in this time window: the
        # token's own checks alone. Anything short of a clean pass is judged in full.
        with contextlib.suppress(SignatureValidationError, ValueError, TypeError, KeyError):
            status = await validate_tst_signed_data(
                contents.signed_data, _token_context(tsa, contents.gen_time), imprint
            )
            if _clean(status, tsa):
                return _Stamp(
                    element, contents, True, f"{name} of {contents.gen_time.isoformat()} is valid"
                )
    context = _context(policy, embedded, contents.gen_time)
    try:
        status = await validate_tst_signed_data(contents.signed_data, context, imprint)
    except (SignatureValidationError, ValueError, TypeError, KeyError) as exc:
        # A token whose structure no longer holds together (a changed byte in it).
        raise _Failed(
            Indication.TOTAL_FAILED,
            SubIndication.SIG_CRYPTO_FAILURE,
            f"{name}: the timestamp token is damaged ({exc})",
        ) from None
    if not status["intact"] or not status["valid"]:
        imprint_ok = hashlib.new(contents.imprint_algorithm, data).digest() == contents.imprint
        raise _Failed(
            Indication.TOTAL_FAILED,
            SubIndication.HASH_FAILURE if not imprint_ok else SubIndication.SIG_CRYPTO_FAILURE,
            f"{name}: "
            + (
                "its imprint does not match what it should cover"
                if not imprint_ok
                else "the token's signature does not verify"
            ),
        )
    if status.get("trust_problem_indic") is not None:
        # pyHanko's verdict is coarse: redo the TSA's path for the precise reason.
        sub = None
        if contents.tsa_certificate is not None:
            sub = await _validate_certificate(contents.tsa_certificate, context, _TSA_KEY_USAGE)
        sub = sub or _sub_from_pyhanko(status["trust_problem_indic"])
        return _Stamp(
            element, contents, False, f"{name}: the TSA cannot be validated ({sub.value})", sub
        )
    if key is not None and tsa is not None and _clean(status, tsa):
        _OUTCOMES.put(key, _TRUSTED)
    return _Stamp(element, contents, True, f"{name} of {contents.gen_time.isoformat()} is valid")


def _clean(status: dict[str, Any], tsa: x509.Certificate) -> bool:
    """pyHanko found the token intact, validly signed by ``tsa`` and trusted."""
    signer = status.get("signing_cert")
    return (
        bool(status.get("intact"))
        and bool(status.get("valid"))
        and status.get("trust_problem_indic") is None
        and signer is not None
        and signer.dump() == tsa.dump()
    )


async def _validate_certificate(
    cert: x509.Certificate, context: ValidationContext, usage: KeyUsageConstraints
) -> SubIndication | None:
    """Path, revocation and key usage of ``cert`` at the context's moment; ``None`` if fine.

    pyHanko's own mapping folds "no revocation data" into
    CERTIFICATE_CHAIN_GENERAL_FAILURE; EN 319 102-1 calls it TRY_LATER.
    """
    try:
        await find_valid_path(
            cert, context.path_builder.async_build_paths_lazy(cert), validation_context=context
        )
        usage.validate(cert)
    except InsufficientRevinfoError:
        return SubIndication.TRY_LATER
    except RevokedError as exc:
        # Revoked before the moment of validation (the timestamp's time): failed.
        return SubIndication.REVOKED if exc.is_ee_cert else SubIndication.REVOKED_NO_POE
    except PathBuildingError:
        return SubIndication.NO_CERTIFICATE_CHAIN_FOUND
    except ExpiredError:
        return SubIndication.OUT_OF_BOUNDS_NO_POE
    except NotYetValidError:
        return SubIndication.NOT_YET_VALID
    except InvalidCertificateError:
        return SubIndication.CHAIN_CONSTRAINTS_FAILURE
    except (ValidationError, ValueError) as exc:
        logger.info("certificate validation failed: %s", exc)
        return SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE
    return None


async def _validate_signer(
    cert: x509.Certificate, policy: VerificationPolicy, embedded: _Embedded, moment: datetime
) -> SubIndication | None:
    """:func:`_validate_certificate` for the signer, reusing the outcome of the same
    inputs in the same time window (:mod:`.validation_cache`)."""
    key = _outcome_key("signer", cert, policy, embedded, moment)
    if key is not None:
        kept = _OUTCOMES.get(key)
        if kept is not MISS:
            return cast(SubIndication | None, kept)
    outcome = await _validate_certificate(
        cert, _context(policy, embedded, moment), _SIGNER_KEY_USAGE
    )
    if key is not None:
        _OUTCOMES.put(key, outcome)
    return outcome


async def _verify_one(signature: etree._Element, policy: VerificationPolicy) -> SignatureReport:
    report = SignatureReport(
        format="XAdES",
        level=Level.NONE,
        indication=Indication.TOTAL_FAILED,
        signature_id=signature.get("Id"),
    )
    checks: dict[str, object] = {}
    report.details["checks"] = checks
    try:
        await _verify_into(signature, policy, report, checks)
    except _Failed as failure:
        report.indication = failure.indication
        report.sub_indication = failure.sub
        report.messages.insert(0, failure.message)
        if failure.indication == Indication.TOTAL_FAILED:
            report.level = Level.NONE
    except Exception as exc:
        # Something in this signature that no check above foresaw: nothing is proven
        # wrong, so not TOTAL_FAILED; the other signatures' reports stand.
        logger.warning("XAdES signature %s: unexpected %r", signature.get("Id"), exc, exc_info=True)
        report.indication = Indication.INDETERMINATE
        report.sub_indication = SubIndication.FORMAT_FAILURE
        report.level = Level.NONE
        report.messages.insert(0, f"this signature could not be processed ({type(exc).__name__})")
    return report


async def _verify_into(
    signature: etree._Element,
    policy: VerificationPolicy,
    report: SignatureReport,
    checks: dict[str, object],
) -> None:
    signed_info = signature.find(ds("SignedInfo"))
    value_element = signature.find(ds("SignatureValue"))
    props = find_qualifying_properties(signature)
    signed_properties = None if props is None else props.find(xades("SignedProperties"))
    ssp = (
        None
        if signed_properties is None
        else signed_properties.find(xades("SignedSignatureProperties"))
    )
    if signed_info is None or value_element is None or ssp is None:
        raise _Failed(
            Indication.TOTAL_FAILED,
            SubIndication.FORMAT_FAILURE,
            "not a XAdES signature: SignedInfo, SignatureValue or SignedProperties is missing",
        )
    assert signed_properties is not None
    try:
        embedded = _embedded(signature)
    except (ValueError, TypeError) as exc:
        raise _Failed(
            Indication.TOTAL_FAILED, SubIndication.FORMAT_FAILURE, f"bad embedded value: {exc}"
        ) from None
    signing_time = ssp.findtext(xades("SigningTime"))
    if signing_time:
        try:
            report.claimed_signing_time = datetime.fromisoformat(signing_time.strip())
        except ValueError:
            report.messages.append(f"SigningTime {signing_time!r} is not a valid time")

    cert = _signing_certificate(ssp, embedded.certificates)
    report.signer = subject_text(cert)
    report.signer_certificate_serial = format(cert.serial_number, "x")
    checks["signing_certificate"] = "found"

    weak = _check_references(signature, signed_info, signed_properties)
    checks["references"] = "ok"
    weak = _verify_signature_value(signed_info, _b64(value_element), cert) or weak
    checks["signature_value"] = "ok"
    report.level = Level.B_B
    report.indication = Indication.TOTAL_PASSED
    if weak:
        # Intact, but SHA-1 proves nothing without a proof of existence from before
        # it was withdrawn (EN 319 102-1 5.2.8, TS 119 312): not failed, not passed.
        checks["algorithms"] = "SHA-1"
        raise _Failed(
            Indication.INDETERMINATE,
            SubIndication.CRYPTO_CONSTRAINTS_FAILURE_NO_POE,
            "the signature is intact, but uses SHA-1, which is too weak to rely on "
            "without a proof of existence from before it was withdrawn",
        )

    usp = signature.find(f".//{xades('UnsignedSignatureProperties')}")
    stamps = [] if usp is None else list(usp.iterfind(xades("SignatureTimeStamp")))
    archives = [] if usp is None else list(usp.iterfind(xades141("ArchiveTimeStamp")))

    def signature_value_input(algorithm: str) -> bytes:
        assert value_element is not None
        return c14n(value_element, algorithm)

    signature_stamps: list[_Stamp] = []
    for element in stamps:
        stamp = await _check_timestamp(element, signature_value_input, embedded, policy)
        signature_stamps.append(stamp)
        report.messages.append(stamp.message)
    # Every stamp here is intact (a broken one raised): it makes the level B-T; a
    # TSA that cannot be validated makes the verdict indeterminate, further down.
    checks["signature_timestamps"] = [s.message for s in signature_stamps]
    report.evidence = Evidence(
        cert,
        tuple(embedded.certificates),
        tuple((s.contents.gen_time, s.contents.tsa_certificate) for s in signature_stamps),
    )
    if signature_stamps:
        earliest = min(signature_stamps, key=lambda s: s.contents.gen_time)
        report.timestamp_time = earliest.contents.gen_time
        moment = earliest.contents.gen_time
        if report.claimed_signing_time and report.claimed_signing_time > moment + timedelta(
            minutes=5
        ):
            raise _Failed(
                Indication.INDETERMINATE,
                SubIndication.TIMESTAMP_ORDER_FAILURE,
                "the claimed signing time is after the signature timestamp",
            )
    else:
        moment = policy.now or datetime.now(UTC)

    signer_problem = await _validate_signer(cert, policy, embedded, moment)
    checks["signer_chain"] = signer_problem.name if signer_problem else "trusted"
    offline = signer_problem is None and all(s.ok for s in signature_stamps)
    report.offline_validation_data = offline and embedded.has_revocation_values

    if signature_stamps:
        report.level = Level.B_T
        if report.offline_validation_data:
            report.level = Level.B_LT
            archive_ok = bool(archives)
            for element in archives:

                def archive_input(algorithm: str, _element: etree._Element = element) -> bytes:
                    return archive_timestamp_input(signature, algorithm, before=_element)

                stamp = await _check_timestamp(element, archive_input, embedded, policy)
                report.messages.append(stamp.message)
                archive_ok = archive_ok and stamp.ok
            if archive_ok:
                report.level = Level.B_LTA

    problems = [s for s in signature_stamps if not s.ok]
    if problems:
        raise _Failed(
            Indication.INDETERMINATE,
            problems[0].trust_problem or SubIndication.CERTIFICATE_CHAIN_GENERAL_FAILURE,
            problems[0].message,
        )
    if signer_problem is not None:
        indication = (
            Indication.TOTAL_FAILED
            if signer_problem in (SubIndication.REVOKED, SubIndication.NOT_YET_VALID)
            else Indication.INDETERMINATE
        )
        detail = {
            SubIndication.TRY_LATER: "no usable revocation data for the signer's chain is "
            "embedded (a B-LT signature carries it)",
            SubIndication.NO_CERTIFICATE_CHAIN_FOUND: "the signer's certificate does not "
            "chain to a trusted root",
        }.get(signer_problem, f"the signer's certificate chain: {signer_problem.value}")
        raise _Failed(indication, signer_problem, detail)


async def verify_xml(
    data: bytes, policy: VerificationPolicy, *, executor: Executor | None = None
) -> list[SignatureReport]:
    """Validate every XAdES signature of ``data``; one report each (none: an empty list).

    Raises :class:`~sidecar.signing.xml_safety.XmlInputError` for input refused
    before any validation (DTD, not well-formed, too large or deep).
    """
    loop = asyncio.get_running_loop()
    parsed = await loop.run_in_executor(
        executor, lambda: parse_xml(data, max_size=policy.max_size, max_depth=policy.max_depth)
    )
    return [
        await _verify_one(signature, policy) for signature in _outermost_signatures(parsed.root)
    ]


def verify_xml_blocking(
    data: bytes,
    roots_der: tuple[bytes, ...],
    now: datetime | None,
    max_size: int,
    max_depth: int,
) -> list[SignatureReport]:
    """:func:`verify_xml` in an event loop of its own: blocking, for a worker process
    (plain values in, picklable reports out)."""
    policy = VerificationPolicy(
        trust_roots=[x509.Certificate.load(der) for der in roots_der],
        now=now,
        max_size=max_size,
        max_depth=max_depth,
    )
    return asyncio.run(verify_xml(data, policy))


async def verify_xml_bounded(
    data: bytes, policy: VerificationPolicy, inspector: PdfInspector, deadline: float
) -> list[SignatureReport]:
    """:func:`verify_xml` in one of *inspector*'s memory-capped worker processes, within
    *deadline* seconds. A document too costly to finish gets every signature named,
    INDETERMINATE and ``details.checked`` false: canonicalizing and hashing a large
    document, or validating many chains, never holds the daemon's event loop.

    Raises :class:`~sidecar.signing.xml_safety.XmlInputError` as :func:`verify_xml`.
    """
    roots = tuple(cert.dump() for cert in policy.trust_roots)
    try:
        return await inspector.run(
            verify_xml_blocking,
            data,
            roots,
            policy.now,
            policy.max_size,
            policy.max_depth,
            deadline=deadline,
        )
    except (TimeoutError, WorkerLost) as exc:
        why = (
            f"not checked: verifying this document takes longer than the {deadline:g} s "
            "allowed ([signing] verify_timeout)"
            if isinstance(exc, TimeoutError)
            else "not checked: verifying this document needs more memory than allowed"
        )
        logger.warning("XAdES verification stopped (%s)", type(exc).__name__)
    parsed = await asyncio.to_thread(
        parse_xml, data, max_size=policy.max_size, max_depth=policy.max_depth
    )
    return [
        SignatureReport(
            format="XAdES",
            level=Level.NONE,
            indication=Indication.INDETERMINATE,
            signature_id=signature.get("Id"),
            messages=[why],
            details={"checked": False},
        )
        for signature in _outermost_signatures(parsed.root)
    ]


def _outermost_signatures(root: etree._Element) -> list[etree._Element]:
    if root.tag == ds("Signature"):
        return [root]
    return [
        s
        for s in root.iter(ds("Signature"))
        if not any(a.tag == ds("Signature") for a in s.iterancestors())
    ]
