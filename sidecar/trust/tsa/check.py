"""The one check of a TSA's reply (:func:`check_reply`), before a token is used.

Every reply is checked, in this order (HTTP status and content type by the client
before): PKIStatus,
nonce, message imprint, policy, the CMS signature and the TSA's chain to one of our
trust anchors (pyHanko's :func:`validate_tst_signed_data`, at the token's genTime),
a critical extended key usage that is exactly ``timeStamping`` (RFC 3161 section
2.3), and finally genTime against the local clock. The clock check comes last on
purpose: once the signature is known good, a large difference means *our* clock is
off (a classic workstation fault), and the message says so.

The TSA's certificate path is the one costly part, and the same for every token of
one TSA certificate: :class:`TsaPathCache` keeps it (see there for what and how
long). A token signed by a certificate whose path is kept still gets every per-token
check — nonce, imprint, policy, the CMS signature with its signed attributes
(message digest, content type, ESS signing certificate), the algorithm policy,
the EKU, genTime inside the validity of every certificate of the path, the clock.

Used by the client for every reply, and by ``sidecar doctor`` for its probe: a TSA
the doctor calls fine gives tokens the daemon accepts.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from asn1crypto import algos, cms, core, tsp, x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pyhanko.sign.general import check_ess_certid, extract_signer_info
from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
from pyhanko.sign.validation.utils import CMSAlgorithmUsagePolicy
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.errors import CertificateFetchError
from pyhanko_certvalidator.policy_decl import DisallowWeakAlgorithmsPolicy
from pyhanko_certvalidator.sig_validate import (
    DefaultSignatureValidator,
    SignatureValidationContext,
)
from pyhanko_certvalidator.util import get_pyca_cryptography_hash

from ...bounded import remember
from ...upstream import describe, log_cause
from ..anchors import TrustAnchors
from .errors import TsaIssuerUnavailable, TsaRejected, TsaReplyError
from .paths import TsaPathCache
from .token import TimeStampToken, read_token, token_of_reply

log = logging.getLogger("sidecar.trust.tsa")


#: PKIStatus values (RFC 3161 2.4.2, as asn1crypto names them).
_PKI_STATUSES = frozenset(
    {
        "granted",
        "granted_with_mods",
        "rejection",
        "waiting",
        "revocation_warning",
        "revocation_notification",
    }
)


# ---------------------------------------------------------------- reply checks


async def check_reply(
    request: tsp.TimeStampReq,
    response_der: bytes,
    *,
    url: str,
    anchors: TrustAnchors,
    clock_skew: float,
    expected_policy: str | None = None,
    other_certs: Sequence[x509.Certificate] = (),
    fetch_issuers: IssuerFetcher | None = None,
    now: datetime | None = None,
    paths: TsaPathCache | None = None,
) -> TimeStampToken:
    """Check a TimeStampResp against the request that asked for it.

    *paths* keeps validated TSA certificate paths between calls (see
    :class:`TsaPathCache`); without it every reply gets a full path validation.

    Raises :class:`TsaRejected` for a refusal and :class:`TsaReplyError` (with
    ``reason`` one of ``malformed``, ``nonce_mismatch``, ``imprint_mismatch``,
    ``policy_mismatch``, ``bad_signature``, ``untrusted_tsa``, ``bad_eku``,
    ``clock_skew``) for a reply that must not be used.
    """

    def fail(reason: str, message: str) -> TsaReplyError:
        return TsaReplyError(f"TSA {url}: {message}", url=url, reason=reason)

    try:
        response = tsp.TimeStampResp.load(response_der, strict=True)
        status = response["status"]
        status_value = status["status"].native
        # asn1crypto parses lazily: everything read below is read here, where a
        # broken encoding is the reply's fault and not an error of ours.
        texts = "; ".join(status["status_string"].native or []) or "no reason given"
        fail_info = sorted(status["fail_info"].native or [])
        if status_value not in _PKI_STATUSES:
            raise ValueError(f"PKIStatus {status_value!r} is not one RFC 3161 defines")
    except (ValueError, TypeError, KeyError) as exc:
        _log_cause(url, "reply not a TimeStampResp", exc)
        raise fail("malformed", "the reply is not an RFC 3161 TimeStampResp") from None
    if status_value not in ("granted", "granted_with_mods"):
        raise TsaRejected(
            f"TSA {url} refused the request: {status_value} ({_shorten(texts)}"
            + (f"; failInfo {', '.join(fail_info)})" if fail_info else ")"),
            url=url,
            fail_info=fail_info,
        )
    try:
        contents = read_token(token_of_reply(response_der))
    except ValueError as exc:
        _log_cause(url, "malformed time-stamp token", exc)
        raise fail("malformed", "the time-stamp token in the reply is malformed") from None
    signed_data, tst_info = contents.signed_data, contents.tst_info

    # Nonce and imprint first: cheap, and they are what binds the reply to our request.
    asked_nonce = request["nonce"].native
    if asked_nonce is not None and tst_info["nonce"].native != asked_nonce:
        raise fail(
            "nonce_mismatch",
            "the reply's nonce is not the request's (a replayed or misrouted reply)",
        )
    asked = request["message_imprint"]
    got = tst_info["message_imprint"]
    if (
        got["hash_algorithm"]["algorithm"].native != asked["hash_algorithm"]["algorithm"].native
        or got["hashed_message"].native != asked["hashed_message"].native
    ):
        raise fail("imprint_mismatch", "the token's message imprint is not the request's")
    policy = request["req_policy"].dotted if request["req_policy"].native else expected_policy
    if policy is not None and tst_info["policy"].dotted != policy:
        raise fail(
            "policy_mismatch",
            f"the token's policy is {tst_info['policy'].dotted}, expected {policy}",
        )

    gen_time = contents.gen_time
    signer = contents.tsa_certificate if paths is not None else None
    chain = None
    if paths is not None and signer is not None:
        chain = paths.lookup(signer, anchors, gen_time)
        if chain is None and paths.validating(signer):
            # A burst: the first reply's path validation is under way; share it.
            await paths.settled(signer)
            chain = paths.lookup(signer, anchors, gen_time)
    if chain is not None:
        assert paths is not None
        paths.stats.reused += 1
        _check_token_signature(signed_data, chain[0], gen_time, fail)
    else:
        settle = paths.start(signer) if paths is not None and signer is not None else None
        try:
            certs = list(other_certs)
            unreachable: list[str] = []
            if fetch_issuers is not None:
                fetched, unreachable = await _missing_issuers(
                    signed_data, certs, anchors, fetch_issuers
                )
                certs += fetched
            try:
                chain = await _check_signature(
                    signed_data, asked, gen_time, url, anchors, certs, fail
                )
            except TsaReplyError as exc:
                if exc.reason != "untrusted_tsa" or not unreachable:
                    raise
                # Not chaining for want of an issuer we could not fetch says nothing
                # about the TSA: the check is impossible now, not failed.
                raise TsaIssuerUnavailable(
                    f"TSA {url}: its issuing CA's certificate ({', '.join(unreachable)}) "
                    "could not be fetched, so the reply cannot be checked now; try again "
                    "when the certificate host is reachable",
                    url=url,
                    retry_after=ISSUER_RETRY_AFTER,
                ) from None
            if paths is not None:
                paths.stats.validations += 1
                paths.remember(chain, anchors)
        finally:
            if settle is not None:
                settle()
    _check_tsa_eku(chain[0], fail)

    local = now or datetime.now(UTC)
    offset = (local - gen_time).total_seconds()
    if abs(offset) > clock_skew:
        direction = "ahead of" if offset > 0 else "behind"
        raise fail(
            "clock_skew",
            f"this machine's clock is {abs(offset):.0f} s {direction} the TSA's signed time "
            f"(genTime {gen_time.isoformat()}, local {local.isoformat(timespec='seconds')}, "
            f"{clock_skew:g} s allowed): the local clock is probably wrong — check its time "
            "synchronisation (NTP / Windows Time)",
        )
    return TimeStampToken(
        content_info=contents.content_info,
        tst_info=tst_info,
        tsa_url=url,
        chain=chain,
        carried=contents.certificates,
    )


#: Fetches the issuers of a certificate (its AIA caIssuers URLs).
IssuerFetcher = Callable[[x509.Certificate], Awaitable[list[x509.Certificate]]]
_MAX_CHAIN = 5


#: Seconds a caller is told to wait when a TSA's issuer certificate cannot be fetched.
ISSUER_RETRY_AFTER = 30


async def _missing_issuers(
    signed_data: cms.SignedData,
    known: Sequence[x509.Certificate],
    anchors: TrustAnchors,
    fetch_issuers: IssuerFetcher,
) -> tuple[list[x509.Certificate], list[str]]:
    """Issuers the token leaves out, fetched from caIssuers (many TSAs embed only their own),
    and the subjects whose issuer could not be fetched (host unreachable, no answer).

    Walks up from each embedded certificate; stops at an anchor or a known issuer.
    """
    pool = [c.chosen for c in (signed_data["certificates"] or ()) if c.name == "certificate"]
    pool += list(known)
    fetched: list[x509.Certificate] = []
    unreachable: list[str] = []
    anchor_subjects = {a.subject.dump() for a in anchors.certificates}
    for start in list(pool):
        cert = start
        for _ in range(_MAX_CHAIN):
            if cert.self_issued or cert.issuer.dump() in anchor_subjects:
                break
            issuer = next((c for c in pool if c.subject.dump() == cert.issuer.dump()), None)
            if issuer is None:
                try:
                    candidates = await fetch_issuers(cert)
                except (CertificateFetchError, TimeoutError) as exc:
                    who = cert.subject.human_friendly
                    log.warning("cannot fetch the issuer of %s: %s", who, describe(exc))
                    unreachable.append(f"issuer of {who}")
                    break
                issuer = next(
                    (c for c in candidates if c.subject.dump() == cert.issuer.dump()), None
                )
                if issuer is None:
                    break
                pool.append(issuer)
                fetched.append(issuer)
            cert = issuer
    return fetched, unreachable


_TOKEN_ALGORITHMS = CMSAlgorithmUsagePolicy.lift_policy(DisallowWeakAlgorithmsPolicy())
_SIGNATURES = DefaultSignatureValidator()
#: Signed attributes a token may carry once at most, and those it must carry.
_SINGLE: tuple[str, ...] = (
    "content_type",
    "message_digest",
    "signing_certificate",
    "signing_certificate_v2",
)
_SINGLE += ("cms_algorithm_protection",)
_REQUIRED = ("content_type", "message_digest")


class _EssMatches:
    """Which ESS signing-certificate values name which certificates, remembered.

    Every token of a TSA carries the same attribute; matching it (a certificate
    digest, then an RFC 5280 comparison of the issuer's name) is the costliest
    step of a token's check, and its answer depends on those two values only.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self._known: dict[tuple[bytes, bytes], bool] = {}
        self._max_entries = max_entries

    def match(self, attribute: cms.CMSAttribute, cert: x509.Certificate) -> bool:
        key = (attribute.dump(), cert.sha256)
        known = self._known.get(key)
        if known is None:
            value = attribute["values"][0]
            if attribute["type"].native == "signing_certificate_v2":
                certid = tsp.SigningCertificateV2.load(value.dump())["certs"][0]
            else:
                certid = tsp.SigningCertificate.load(value.dump())["certs"][0]
            known = bool(check_ess_certid(cert, certid))
            remember(self._known, key, known, self._max_entries)
        return known


_ESS = _EssMatches()


class _AlgorithmVerdicts:
    """The algorithm policy's answer per (signature algorithm, digest algorithm, key).

    :data:`_TOKEN_ALGORITHMS` (pyHanko's DisallowWeakAlgorithmsPolicy, lifted to CMS)
    looks at the algorithms and the key's size only, never at the time: every token of
    a TSA gets the same answer, remembered here rather than worked out again per token.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self._known: dict[tuple[bytes, bytes, bytes], str | None] = {}
        self._max_entries = max_entries

    def refusal(
        self,
        signature_algorithm: algos.SignedDigestAlgorithm,
        digest_algorithm: algos.DigestAlgorithm,
        cert: x509.Certificate,
        at: datetime,
    ) -> str | None:
        """Why the policy refuses these algorithms with *cert*'s key, or None."""
        key = (signature_algorithm.dump(), digest_algorithm.dump(), cert.sha256)
        if key in self._known:
            return self._known[key]
        allowed = [
            _TOKEN_ALGORITHMS.signature_algorithm_allowed(
                signature_algorithm, moment=at, public_key=cert.public_key
            ),
            _TOKEN_ALGORITHMS.digest_algorithm_allowed(digest_algorithm, moment=at),
            _TOKEN_ALGORITHMS.digest_combination_allowed(
                signature_algo=signature_algorithm,
                message_digest_algo=digest_algorithm,
                moment=None,
            ),
        ]
        refused = next((a for a in allowed if not a), None)
        reason = None
        if refused is not None:
            reason = refused.failure_reason or "an algorithm is not allowed"
        remember(self._known, key, reason, self._max_entries)
        return reason


_ALGORITHMS = _AlgorithmVerdicts()


class _PublicKeys:
    """TSA certificates' public keys loaded into cryptography once, by certificate."""

    def __init__(self, max_entries: int = 64) -> None:
        self._keys: dict[bytes, PublicKeyTypes] = {}
        self._max_entries = max_entries

    def of(self, cert: x509.Certificate) -> PublicKeyTypes:
        found = self._keys.get(cert.sha256)
        if found is None:
            found = load_der_public_key(cert.public_key.dump())
            remember(self._keys, cert.sha256, found, self._max_entries)
        return found


_PUBLIC_KEYS = _PublicKeys()


def _signature_verifies(
    signature: bytes,
    signed_bytes: bytes,
    cert: x509.Certificate,
    algorithm: algos.SignedDigestAlgorithm,
    digest: str,
) -> bool:
    """Whether *signature* over *signed_bytes* verifies with *cert*'s key.

    RSASSA-PKCS1-v1_5 (what TSAs use) is verified with cryptography directly and the
    key loaded once per certificate; any other algorithm goes through pyHanko's
    validator, which loads the key for each call.
    """
    try:
        name = algorithm.signature_algo
    except ValueError:
        name = algorithm["algorithm"].native
    try:
        if name == "rsassa_pkcs1v15" and cert.public_key.algorithm == "rsa":
            key = _PUBLIC_KEYS.of(cert)
            if isinstance(key, rsa.RSAPublicKey):
                try:
                    hash_name = algorithm.hash_algo
                except ValueError:
                    hash_name = digest  # plain rsaEncryption: the SignerInfo's digest
                key.verify(
                    signature, signed_bytes, PKCS1v15(), get_pyca_cryptography_hash(hash_name)
                )
                return True
        _SIGNATURES.validate_signature(
            signature,
            signed_bytes,
            cert.public_key,
            algorithm,
            context=SignatureValidationContext(contextual_md_algorithm=digest),
        )
        return True
    except InvalidSignature:
        return False


class _TokenRefused(ValueError):
    """A token refused by our own check; its message is meant for people."""


def _check_token_signature(
    signed_data: cms.SignedData,
    cert: x509.Certificate,
    gen_time: datetime,
    fail: Callable[[str, str], TsaReplyError],
) -> None:
    """The per-token part of :func:`validate_tst_signed_data`, the path being known good.

    The checks of pyHanko's ``validate_sig_integrity``, in one pass over the signed
    attributes: the algorithm policy at genTime (pyHanko's default for a
    ValidationContext); content type ``tst_info``; the message digest over the
    encapsulated TSTInfo; the ESS signing certificate (SigningCertificateV2
    preferred) naming ``cert``; CMSAlgorithmProtection, if present; the signature.
    """
    try:
        signer_info = extract_signer_info(signed_data)
        signature_algorithm = signer_info["signature_algorithm"]
        digest_algorithm = signer_info["digest_algorithm"]
        refused = _ALGORITHMS.refusal(signature_algorithm, digest_algorithm, cert, gen_time)
        if refused is not None:
            raise _TokenRefused(refused)
        signed_attrs = signer_info["signed_attrs"]
        if signed_attrs is core.VOID:
            raise _TokenRefused("the token has no signed attributes")
        # The bytes as received: the signature is over them, not over a re-encoding.
        signed_bytes = signed_attrs.untag().dump()
        found: dict[str, cms.CMSAttribute] = {}
        for attribute in signed_attrs:
            name = attribute["type"].native
            if name in _SINGLE:
                if name in found or len(attribute["values"]) != 1:
                    raise _TokenRefused(f"the {name} attribute is not single-valued")
                found[name] = attribute
        missing = [name for name in _REQUIRED if name not in found]
        if missing:
            raise _TokenRefused(f"the signed attributes lack {', '.join(missing)}")
        if found["content_type"]["values"][0].native != "tst_info":
            raise _TokenRefused("the signed content type is not tst_info")
        md = hashes.Hash(get_pyca_cryptography_hash(digest_algorithm["algorithm"].native))
        md.update(bytes(signed_data["encap_content_info"]["content"]))
        intact = found["message_digest"]["values"][0].native == md.finalize()
        ess = found.get("signing_certificate_v2") or found.get("signing_certificate")
        if ess is not None and not _ESS.match(ess, cert):
            raise _TokenRefused("the ESS signing certificate does not name the TSA's certificate")
        protection = found.get("cms_algorithm_protection")
        if protection is not None:
            protected = protection["values"][0]
            if protected["digest_algorithm"].native != digest_algorithm.native or (
                protected["signature_algorithm"].native != signature_algorithm.native
            ):
                raise _TokenRefused("CMSAlgorithmProtection does not match the algorithms used")
        valid = _signature_verifies(
            signer_info["signature"].native,
            signed_bytes,
            cert,
            signature_algorithm,
            digest_algorithm["algorithm"].native,
        )
    except _TokenRefused as exc:  # our own words: what is wrong with the token
        raise fail("bad_signature", f"the token's CMS signature is refused: {exc}") from None
    except Exception as exc:  # asn1crypto and pyHanko raise several unrelated types
        _log_cause(cert.subject.human_friendly, "CMS signature not checkable", exc)
        raise fail("bad_signature", "the token's CMS signature cannot be checked") from None
    if not (intact and valid):
        raise fail("bad_signature", "the token's CMS signature does not verify")


async def _check_signature(
    signed_data: cms.SignedData,
    imprint: tsp.MessageImprint,
    gen_time: datetime,
    url: str,
    anchors: TrustAnchors,
    other_certs: Sequence[x509.Certificate],
    fail: Callable[[str, str], TsaReplyError],
) -> tuple[x509.Certificate, ...]:
    if not anchors.certificates:
        raise fail("untrusted_tsa", "no trust anchor is configured to check the TSA against")
    # Validated as of genTime: the TSA's certificate must have been valid when it signed.
    # Revocation is not checked here (no fetching on the hot path); the TSA chain's
    # revocation data is collected with the signer's when a B-LT signature is built.
    context = ValidationContext(
        trust_roots=list(anchors.certificates),
        other_certs=list(other_certs),
        moment=gen_time,
        allow_fetching=False,
        revocation_mode="soft-fail",
    )
    expected = imprint["hashed_message"].native
    try:
        status = await validate_tst_signed_data(signed_data, context, lambda _algo: expected)
    except Exception as exc:  # pyHanko raises several unrelated types for broken CMS
        _log_cause(url, "CMS signature not checkable", exc)
        raise fail("bad_signature", "the token's CMS signature cannot be checked") from None
    if not (status.get("intact") and status.get("valid")):
        raise fail("bad_signature", "the token's CMS signature does not verify")
    problem = status.get("trust_problem_indic")
    path = status.get("validation_path")
    if problem is not None or path is None:
        signer = status.get("signing_cert")
        who = signer.subject.human_friendly if signer is not None else "the TSA"
        why = getattr(problem, "name", None) or "no path to a trust anchor"
        raise fail(
            "untrusted_tsa",
            f"the TSA certificate ({who}) does not chain to a configured trust anchor ({why})",
        )
    certs = [c for c in path.iter_certs(include_root=True) if isinstance(c, x509.Certificate)]
    # iter_certs goes from the anchor down; we want the TSA's certificate first.
    return tuple(reversed(certs))


def _check_tsa_eku(cert: x509.Certificate, fail: Callable[[str, str], TsaReplyError]) -> None:
    # RFC 3161 2.3: exactly one EKU, id-kp-timeStamping, and the extension critical.
    # pyHanko checks presence only; OpenSSL's ts -verify insists on all of it.
    for extension in cert["tbs_certificate"]["extensions"]:
        if extension["extn_id"].native == "extended_key_usage":
            purposes = extension["extn_value"].native
            if purposes == ["time_stamping"] and extension["critical"].native:
                return
            raise fail(
                "bad_eku",
                "the TSA certificate's extended key usage must be exactly timeStamping "
                f"and critical (it is {purposes}, critical={extension['critical'].native})",
            )
    raise fail("bad_eku", "the TSA certificate has no extended key usage extension")


def _log_cause(tsa: str, what: str, exc: BaseException) -> None:
    log_cause(log, f"TSA {tsa}", what, exc)


def _shorten(text: str, limit: int = 200) -> str:
    """A TSA's own status text, kept to a readable length."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
