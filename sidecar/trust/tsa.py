"""RFC 3161 time-stamp client: several TSAs in order, each reply checked before use.

Every reply is checked, in this order: HTTP status and content type, PKIStatus,
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

Tokens are kept with the exact bytes the TSA signed (:class:`ReceivedContentInfo`):
asn1crypto re-encodes a structure whose length happens to end in 0x80 (it takes it
for an indefinite length), which costs a full re-encoding of the token each time a
CMS object holding it is written, and would alter a token not in strict DER.

TSAs are tried in configuration order. Each has its own timeout, a bounded number of
attempts for transient failures (refused/reset connection, HTTP 5xx) and a
:class:`~sidecar.trust.breaker.CircuitBreaker`, so a dead TSA is skipped without a
connection attempt until its cool-down ends.

A token that leaves out the TSA's issuing CA needs it fetched (the certificate's
caIssuers URL), often from the host that also serves OCSP and CRLs. Fetched issuers
are kept (``keep_issuer``, on disk in the revocation cache), and handed back at the
next start (``known_certs``), so that a restart does not depend on that host. When it
is unreachable and the issuer is not known, the reply cannot be checked *now*:
:class:`TsaIssuerUnavailable` (an upstream unavailable, retry later), which says
nothing against the TSA and leaves its breaker as it was.

Error messages are meant for people: what failed and what to do. The low-level cause
(an ASN.1 parser's text, an exception name) goes to the log only.

Engines use :meth:`TimeStampClient.timestamp` (XAdES) or
:meth:`TimeStampClient.timestamper` (a pyHanko ``TimeStamper`` going through these
checks, for PAdES); the API relays callers' requests with :meth:`TimeStampClient.relay`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
from asn1crypto import cms, core, parser, tsp, x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from pyhanko.sign.general import check_ess_certid, extract_signer_info
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.sign.timestamps.common_utils import TimestampRequestError
from pyhanko.sign.validation.generic_cms import validate_tst_signed_data
from pyhanko.sign.validation.utils import CMSAlgorithmUsagePolicy
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.errors import CertificateFetchError
from pyhanko_certvalidator.fetchers.aiohttp_fetchers import AIOHttpCertificateFetcher
from pyhanko_certvalidator.fetchers.api import FetchLimits
from pyhanko_certvalidator.fetchers.common_utils import FetchBudget, gather_aia_issuer_urls
from pyhanko_certvalidator.policy_decl import DisallowWeakAlgorithmsPolicy
from pyhanko_certvalidator.registry import SimpleCertificateStore
from pyhanko_certvalidator.sig_validate import (
    DefaultSignatureValidator,
    SignatureValidationContext,
)
from pyhanko_certvalidator.util import get_pyca_cryptography_hash

from .._hooks.asn1crypto_hooks import ReceivedContentInfo
from ..config import BreakerSettings, TsaSettings
from ..errors import UpstreamError, UpstreamFailed, UpstreamSlow, UpstreamUnavailable
from ..logs import register_secret, request_extra
from ..upstream import connection_words, describe, log_cause
from .anchors import TrustAnchors
from .breaker import BreakerStatus, CircuitBreaker

__all__ = [
    "DIGEST_SIZES",
    "CheckedTimeStamper",
    "ReceivedContentInfo",
    "RelayedReply",
    "TimeStampClient",
    "TimeStampToken",
    "TsaEndpoint",
    "TsaError",
    "TsaIssuerUnavailable",
    "TsaPathCache",
    "TsaRejected",
    "TsaReplyError",
    "TsaStatus",
    "TsaTimeout",
    "TsaUnavailable",
    "check_reply",
    "complete_chain",
    "make_request",
    "parse_request",
]

log = logging.getLogger("sidecar.trust.tsa")

#: Hash algorithms accepted for imprints (RFC 3161 via RFC 5816; no SHA-1).
DIGEST_SIZES: Mapping[str, int] = {"sha256": 32, "sha384": 48, "sha512": 64}
#: A TimeStampResp with a full chain is a few KB; refuse to buffer more than this.
MAX_REPLY_BYTES = 256 * 1024
_TSQ = "application/timestamp-query"
_TSR = "application/timestamp-reply"
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
# failInfo values meaning "this TSA cannot now", as opposed to "your request is wrong".
_TRANSIENT_FAIL_INFO = frozenset({"time_not_available", "system_failure"})


# ---------------------------------------------------------------- errors


class TsaError(TimestampRequestError, UpstreamError):
    """A timestamp could not be obtained. ``reason`` is a stable short code."""

    reason = "tsa_error"

    def __init__(self, message: str, *, url: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.url = url
        if reason is not None:
            self.reason = reason
        self.failures: tuple[TsaError, ...] = ()


class TsaUnavailable(TsaError, UpstreamUnavailable):
    """No TSA could be reached (refused, reset, circuit open, none configured)."""

    reason = "unreachable"
    #: Always set: seconds until the circuit may let a request through.
    retry_after: float

    def __init__(self, message: str, *, retry_after: float = 1.0, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class TsaIssuerUnavailable(TsaUnavailable):
    """The TSA answered, but its issuer certificate could not be fetched to check the
    reply's chain (the caIssuers host is unreachable): not the TSA's fault."""

    reason = "issuer_unavailable"


class TsaTimeout(TsaError, UpstreamSlow):
    """A TSA did not answer within its timeout."""

    reason = "timeout"


class TsaReplyError(TsaError, UpstreamFailed):
    """A TSA answered, but the answer is unusable (HTTP error, malformed, failed check)."""

    reason = "bad_reply"


class TsaRejected(TsaReplyError):
    """The TSA answered with a PKIStatus other than granted."""

    reason = "rejected"

    def __init__(self, message: str, *, fail_info: Sequence[str] = (), **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.fail_info = tuple(fail_info)


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class TsaEndpoint:
    """One TSA as the client uses it (built from :class:`~sidecar.config.TsaSettings`)."""

    url: str
    timeout: float = 10.0
    attempts: int = 2
    policy: str | None = None
    #: ``Authorization`` header value for HTTP basic auth (kept out of repr and logs).
    authorization: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    @classmethod
    def from_settings(
        cls, settings: TsaSettings, *, environ: Mapping[str, str] | None = None
    ) -> TsaEndpoint:
        """Resolve the password source and load the client certificate; ValueError if unusable."""
        if not settings.url:
            raise ValueError("trust.tsa: every TSA needs a url")
        environ = os.environ if environ is None else environ
        auth = None
        if settings.username:
            password = _read_password(settings, environ)
            register_secret(password)
            auth = aiohttp.encode_basic_auth(settings.username, password)
            if settings.url.startswith("http://"):
                log.warning(
                    "TSA %s uses basic auth over plain http: the password travels in clear",
                    settings.url,
                )
        elif settings.password_env or settings.password_file or settings.password_keyring:
            raise ValueError(f"TSA {settings.url}: a password is configured but no username")
        context = None
        if settings.client_cert is not None:
            context = ssl.create_default_context()
            try:
                context.load_cert_chain(settings.client_cert, settings.client_key)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(
                    f"TSA {settings.url}: cannot load the client certificate "
                    f"{settings.client_cert}: {exc}"
                ) from None
        elif settings.client_key is not None:
            raise ValueError(f"TSA {settings.url}: client_key given without client_cert")
        return cls(
            url=settings.url,
            timeout=settings.timeout,
            attempts=settings.attempts,
            policy=settings.policy,
            authorization=auth,
            ssl_context=context,
        )


def _read_password(settings: TsaSettings, environ: Mapping[str, str]) -> str:
    if settings.password_env:
        value = environ.get(settings.password_env)
        if value is None:
            raise ValueError(
                f"TSA {settings.url}: environment variable {settings.password_env} is not set"
            )
        return value
    if settings.password_file is not None:
        try:
            return settings.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(
                f"TSA {settings.url}: cannot read password_file: {exc.strerror}"
            ) from None
    if settings.password_keyring:
        from ..keys.credentials import SecretUnavailable, read_stored_secret

        try:
            return read_stored_secret(settings.password_keyring, "TSA password")
        except SecretUnavailable as exc:
            raise ValueError(f"TSA {settings.url}: {exc.detail}") from None
    raise ValueError(
        f"TSA {settings.url}: username given without password_env, password_file "
        "or password_keyring"
    )


@dataclass
class TsaPathStats:
    #: Full checks (CMS signature and path validation by pyHanko).
    validations: int = 0
    #: Tokens whose TSA certificate path was taken from the cache.
    reused: int = 0


@dataclass(frozen=True)
class _TsaPath:
    chain: tuple[x509.Certificate, ...]
    anchors: TrustAnchors
    #: Every certificate of the path is valid from ``valid_from`` to ``valid_to``.
    valid_from: datetime
    valid_to: datetime
    #: Monotonic clock reading after which the entry is validated again.
    expires: float


class TsaPathCache:
    """Validated TSA certificate paths, so that a token costs its own checks only.

    What is kept, per TSA certificate (its DER) and anchor set: the path pyHanko
    validated for a token from that certificate to one of the anchors (PKIX path
    validation: each certificate's signature, names, basic constraints, the TSA
    certificate's key usage and ``timeStamping`` EKU) and the interval in which
    every certificate of the path is valid. Nothing in it depends on the token
    but the time, so a later token is accepted with that path when its genTime
    falls inside the interval; otherwise it is validated in full again.

    Replies arriving together share the first one's path validation (single
    flight per TSA certificate) rather than each validating the same path.

    How long: ``ttl`` seconds (one hour by default), or until the anchors change
    (another :class:`TrustAnchors` object). Revocation is not part of it: the
    reply check never looks at the TSA's revocation status (no fetching on the hot
    path); B-LT collects and checks the TSA chain's revocation data with
    :meth:`~sidecar.trust.revocation.RevocationService.revocation_info`, cached
    by the revocation data's own validity.
    """

    def __init__(
        self,
        *,
        ttl: float = 3600.0,
        max_entries: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._paths: dict[bytes, _TsaPath] = {}
        self._pending: dict[bytes, asyncio.Future[None]] = {}
        self.stats = TsaPathStats()

    def __len__(self) -> int:
        return len(self._paths)

    def clear(self) -> None:
        self._paths.clear()

    def lookup(
        self, cert: x509.Certificate, anchors: TrustAnchors, at: datetime
    ) -> tuple[x509.Certificate, ...] | None:
        """The kept chain (*cert* first) usable for a token of genTime *at*, if any."""
        entry = self._paths.get(cert.sha256)
        if entry is None:
            return None
        if entry.anchors is not anchors or self._clock() >= entry.expires:
            del self._paths[cert.sha256]
            return None
        if not entry.valid_from <= at <= entry.valid_to:
            return None
        return entry.chain

    def validating(self, cert: x509.Certificate) -> bool:
        """Whether a full check of a token from *cert* is under way."""
        return cert.sha256 in self._pending

    async def settled(self, cert: x509.Certificate) -> None:
        """Wait for the full check under way for *cert* (whatever its outcome)."""
        pending = self._pending.get(cert.sha256)
        if pending is not None:
            await asyncio.shield(pending)

    def start(self, cert: x509.Certificate) -> Callable[[], None]:
        """Mark a full check for *cert* as under way; call the result when it ends."""
        key = cert.sha256
        pending: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, pending)

        def settle() -> None:
            if self._pending.get(key) is pending:
                del self._pending[key]
            if not pending.done():
                pending.set_result(None)

        return settle

    def remember(self, chain: Sequence[x509.Certificate], anchors: TrustAnchors) -> None:
        """Keep *chain* (TSA certificate first, anchor last), just validated against *anchors*."""
        if not chain:
            return
        if len(self._paths) >= self._max_entries:
            self._paths.pop(next(iter(self._paths)))
        self._paths[chain[0].sha256] = _TsaPath(
            chain=tuple(chain),
            anchors=anchors,
            valid_from=max(c.not_valid_before for c in chain),
            valid_to=min(c.not_valid_after for c in chain),
            expires=self._clock() + self._ttl,
        )


@dataclass(frozen=True)
class TimeStampToken:
    """A checked RFC 3161 token: the DER ``ContentInfo`` and what it says."""

    content_info: cms.ContentInfo
    tst_info: tsp.TSTInfo
    tsa_url: str
    #: The TSA's certificate, then its issuers up to and including the anchor.
    chain: tuple[x509.Certificate, ...]

    @property
    def der(self) -> bytes:
        return self.content_info.dump()

    @property
    def gen_time(self) -> datetime:
        value: datetime = self.tst_info["gen_time"].native
        return value

    @property
    def serial_number(self) -> int:
        value: int = self.tst_info["serial_number"].native
        return value

    @property
    def policy(self) -> str:
        return str(self.tst_info["policy"].dotted)

    @property
    def hash_algorithm(self) -> str:
        return str(self.tst_info["message_imprint"]["hash_algorithm"]["algorithm"].native)

    @property
    def imprint(self) -> bytes:
        value: bytes = self.tst_info["message_imprint"]["hashed_message"].native
        return value

    @property
    def signer(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def certificates(self) -> tuple[x509.Certificate, ...]:
        """Every certificate the token itself carries (the chain may hold more)."""
        choices = self.content_info["content"]["certificates"] or ()
        return tuple(c.chosen for c in choices if c.name == "certificate")


@dataclass(frozen=True)
class RelayedReply:
    """A caller's TimeStampReq answered: the TSA's TimeStampResp bytes, unchanged, and the token."""

    response_der: bytes
    token: TimeStampToken


@dataclass(frozen=True)
class TsaStatus:
    url: str
    breaker: BreakerStatus
    last_success: float | None
    last_failure: float | None
    last_error: str | None


# ---------------------------------------------------------------- requests


def make_request(
    digest: bytes, algorithm: str, *, policy: str | None = None, nonce: int | None = None
) -> tsp.TimeStampReq:
    """A TimeStampReq with a fresh 64-bit nonce and ``certReq`` set."""
    _check_imprint(algorithm, digest)
    request: dict[str, object] = {
        "version": "v1",
        "message_imprint": {
            "hash_algorithm": {"algorithm": algorithm},
            "hashed_message": digest,
        },
        "nonce": nonce if nonce is not None else secrets.randbits(63) | (1 << 62),
        "cert_req": True,
    }
    if policy is not None:
        request["req_policy"] = policy
    return tsp.TimeStampReq(request)


def parse_request(data: bytes) -> tsp.TimeStampReq:
    """Parse and check a caller's DER TimeStampReq; ValueError says what is wrong."""
    if not data:
        raise ValueError("the body is empty")
    try:
        request = tsp.TimeStampReq.load(data, strict=True)
        request.native  # noqa: B018 - force a full parse: asn1crypto is lazy
    except (ValueError, TypeError) as exc:
        log.info("refused TimeStampReq: %s", describe(exc), extra=request_extra())
        raise ValueError("not a DER-encoded RFC 3161 TimeStampReq") from None
    if request["version"].native != "v1":
        raise ValueError("TimeStampReq version must be 1")
    imprint = request["message_imprint"]
    _check_imprint(imprint["hash_algorithm"]["algorithm"].native, imprint["hashed_message"].native)
    return request


def _check_imprint(algorithm: str, digest: bytes) -> None:
    size = DIGEST_SIZES.get(algorithm)
    if size is None:
        raise ValueError(
            f"hash algorithm {algorithm!r} is not accepted (use {', '.join(DIGEST_SIZES)})"
        )
    if len(digest) != size:
        raise ValueError(f"a {algorithm} digest is {size} bytes, not {len(digest)}")


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
        token: cms.ContentInfo = ReceivedContentInfo.received(_token_der(response_der))
        if token["content_type"].native != "signed_data":
            raise ValueError("the token is not CMS SignedData")
        signed_data: cms.SignedData = token["content"]
        encap = signed_data["encap_content_info"]
        if encap["content_type"].native != "tst_info":
            raise ValueError("the token does not encapsulate a TSTInfo")
        tst_info: tsp.TSTInfo = encap["content"].parsed
        tst_info.native  # noqa: B018 - force a full parse
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        _log_cause(url, "malformed time-stamp token", exc)
        raise fail("malformed", "the time-stamp token in the reply is malformed") from None

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

    gen_time: datetime = tst_info["gen_time"].native
    signer = _designated_certificate(signed_data) if paths is not None else None
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
    return TimeStampToken(content_info=token, tst_info=tst_info, tsa_url=url, chain=chain)


#: Told of each upstream exchange: (upstream, outcome, seconds).
ExchangeObserver = Callable[[str, str, float], None]
#: Fetches the issuers of a certificate (its AIA caIssuers URLs).
IssuerFetcher = Callable[[x509.Certificate], Awaitable[list[x509.Certificate]]]
_MAX_CHAIN = 5
#: caIssuers URLs tried per certificate.
_MAX_ISSUER_URLS = 4
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


def complete_chain(response_der: bytes, token: TimeStampToken) -> bytes:
    """The reply with the TSA's intermediate certificates added to the token, if missing.

    RFC 3161 2.4.1 lets the certificates field carry more than the TSA's own; the
    field is outside the signature. Callers verifying with ``openssl ts -verify
    -CAfile roots.pem`` need the intermediates. Signed parts are copied byte for
    byte; if anything else would change, the reply is returned as it was.
    """
    try:
        response = tsp.TimeStampResp.load(response_der)
        content_info = response["time_stamp_token"]
        signed_data = content_info["content"]
        present = [c.chosen for c in (signed_data["certificates"] or ()) if c.name == "certificate"]
        have = {c.sha256 for c in present}
        # Intermediates only: the anchor is what the verifier brings.
        missing = [c for c in token.chain[1:-1] if c.sha256 not in have]
        if not missing:
            return response_der
        fields = {
            name: signed_data[name]
            for name in ("version", "digest_algorithms", "encap_content_info", "signer_infos")
        }
        if signed_data["crls"].native is not None:
            fields["crls"] = signed_data["crls"]
        fields["certificates"] = [*(signed_data["certificates"] or ()), *missing]
        new_signed = cms.SignedData(fields)
        new_token = cms.ContentInfo({"content_type": "signed_data", "content": new_signed})
        new_response = tsp.TimeStampResp(
            {"status": response["status"], "time_stamp_token": new_token}
        )
        der = new_response.dump()
        # Paranoia: the signed parts must be the TSA's bytes, untouched.
        again = tsp.TimeStampResp.load(der)["time_stamp_token"]["content"]
        for name in ("encap_content_info", "signer_infos"):
            if again[name].dump() != signed_data[name].dump():
                return response_der
        return der
    except (ValueError, TypeError, KeyError):
        return response_der


def _token_der(response_der: bytes) -> bytes:
    """The TimeStampToken's own bytes inside a TimeStampResp (status, then token)."""
    _, _, _, _, body, _ = parser.parse(response_der, strict=True)
    status_length = parser.peek(body)
    token = body[status_length:]
    if not token or parser.peek(token) != len(token):
        raise ValueError("no single time-stamp token after the status")
    return token


def _designated_certificate(signed_data: cms.SignedData) -> x509.Certificate | None:
    """The certificate the token carries that its ``sid`` designates, if exactly found.

    As pyHanko identifies the signer (issuer and serial, or key identifier);
    :func:`_check_token_signature` then checks it against the ESS signing-certificate
    attribute. Anything unusual: None, and the full check reports what is wrong.
    """
    try:
        sid = extract_signer_info(signed_data)["sid"]
        for choice in signed_data["certificates"] or ():
            if choice.name == "certificate" and designates(sid, choice.chosen):
                cert: x509.Certificate = choice.chosen
                return cert
    except Exception:  # malformed: left to the full check, which says what is wrong
        return None
    return None


def designates(sid: cms.SignerIdentifier, cert: x509.Certificate) -> bool:
    """Whether a CMS ``sid`` names *cert* (issuer and serial, or subject key identifier).

    Names compare by DER first (the usual case), then by RFC 5280 equality, which
    spares the string preparation that dominates the cost of the second.
    """
    if sid.name == "issuer_and_serial_number":
        issuer = sid.chosen["issuer"]
        return bool(
            sid.chosen["serial_number"].native == cert.serial_number
            and (issuer.dump() == cert.issuer.dump() or issuer == cert.issuer)
        )
    return bool(sid.chosen.native == cert.key_identifier)


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
            if len(self._known) >= self._max_entries:
                self._known.pop(next(iter(self._known)))
            self._known[key] = known
        return known


_ESS = _EssMatches()


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
        allowed = [
            _TOKEN_ALGORITHMS.signature_algorithm_allowed(
                signature_algorithm, moment=gen_time, public_key=cert.public_key
            ),
            _TOKEN_ALGORITHMS.digest_algorithm_allowed(digest_algorithm, moment=gen_time),
            _TOKEN_ALGORITHMS.digest_combination_allowed(
                signature_algo=signature_algorithm,
                message_digest_algo=digest_algorithm,
                moment=None,
            ),
        ]
        refused = next((a for a in allowed if not a), None)
        if refused is not None:
            raise _TokenRefused(refused.failure_reason or "an algorithm is not allowed")
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
        try:
            _SIGNATURES.validate_signature(
                signer_info["signature"].native,
                signed_bytes,
                cert.public_key,
                signature_algorithm,
                context=SignatureValidationContext(
                    contextual_md_algorithm=digest_algorithm["algorithm"].native
                ),
            )
            valid = True
        except InvalidSignature:
            valid = False
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


# ---------------------------------------------------------------- client


class _Tsa:
    """An endpoint and its running state."""

    def __init__(self, endpoint: TsaEndpoint, breaker: CircuitBreaker) -> None:
        self.endpoint = endpoint
        self.breaker = breaker
        self.last_success: float | None = None
        self.last_failure: float | None = None
        self.last_error: str | None = None
        #: HTTP requests started (for tests and metrics: a skipped TSA adds none).
        self.attempts = 0


class TimeStampClient:
    """RFC 3161 client over the daemon's shared aiohttp session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoints: Sequence[TsaEndpoint],
        anchors: TrustAnchors,
        *,
        clock_skew: float = 60.0,
        breaker: BreakerSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_exchange: ExchangeObserver | None = None,
        known_certs: Sequence[x509.Certificate] = (),
        keep_issuer: Callable[[x509.Certificate], Awaitable[None]] | None = None,
    ) -> None:
        """*on_exchange(upstream, outcome, seconds)* is told of every HTTP attempt
        (``outcome``: ok, error, unavailable, timeout), e.g. for metrics.

        *known_certs*: issuer certificates fetched before (candidates for the path,
        never anchors); *keep_issuer* is handed each newly fetched one to keep."""
        breaker = breaker or BreakerSettings()
        self._on_exchange = on_exchange
        self._session = session
        self._anchors = anchors
        self._clock_skew = clock_skew
        self._retry_delay = breaker.retry_delay
        self._cool_down = breaker.cool_down
        self._tsas = [
            _Tsa(ep, CircuitBreaker(breaker.failure_threshold, breaker.cool_down, clock=clock))
            for ep in endpoints
        ]
        # TSA certificates seen in checked tokens: lets a caller's certReq=false reply
        # (no certificates inside) still be checked.
        self._known_certs = SimpleCertificateStore()
        for cert in known_certs:
            self._known_certs.register(cert)
        self._keep_issuer = keep_issuer
        self._timestamper: CheckedTimeStamper | None = None
        #: Validated TSA certificate paths (what is kept and how long: TsaPathCache).
        self.paths = TsaPathCache()
        #: Per TSA URL, the chain of its last checked token (the trusted lists judge it).
        self.last_chains: dict[str, tuple[x509.Certificate, ...]] = {}

    @property
    def anchors(self) -> TrustAnchors:
        return self._anchors

    @anchors.setter
    def anchors(self, anchors: TrustAnchors) -> None:
        # The trusted lists changed (sidecar.trust.lists); the path cache keys on the
        # anchors object, so nothing validated against the old set is reused.
        self._anchors = anchors

    @property
    def endpoints(self) -> tuple[TsaEndpoint, ...]:
        return tuple(t.endpoint for t in self._tsas)

    def attempts(self, url: str) -> int:
        """HTTP requests started towards *url* so far."""
        return sum(t.attempts for t in self._tsas if t.endpoint.url == url)

    def status(self) -> list[TsaStatus]:
        return [
            TsaStatus(
                t.endpoint.url, t.breaker.status(), t.last_success, t.last_failure, t.last_error
            )
            for t in self._tsas
        ]

    async def timestamp(self, digest: bytes, algorithm: str = "sha256") -> TimeStampToken:
        """A checked token over *digest* (the hash, by *algorithm*, of what is stamped)."""
        _check_imprint(algorithm, digest)

        def request_for(endpoint: TsaEndpoint) -> tsp.TimeStampReq:
            return make_request(digest, algorithm, policy=endpoint.policy)

        return (await self._exchange(request_for)).token

    async def timestamp_data(self, data: bytes, algorithm: str = "sha256") -> RelayedReply:
        """Hash *data* with *algorithm* and timestamp it; the TSA's reply and the token."""
        if algorithm not in DIGEST_SIZES:
            raise ValueError(f"hash algorithm {algorithm!r} is not accepted")
        digest = hashlib.new(algorithm, data).digest()
        reply = await self._exchange(
            lambda endpoint: make_request(digest, algorithm, policy=endpoint.policy)
        )
        return RelayedReply(complete_chain(reply.response_der, reply.token), reply.token)

    async def relay(self, request: tsp.TimeStampReq) -> RelayedReply:
        """Send a caller's request as it is; the TSA's reply once checked.

        When the caller asked for certificates (``certReq``), intermediates the TSA
        left out are added (:func:`complete_chain`), so the token verifies against
        the roots alone.
        """
        reply = await self._exchange(lambda _endpoint: request)
        if request["cert_req"].native:
            reply = RelayedReply(complete_chain(reply.response_der, reply.token), reply.token)
        return reply

    async def _fetch_issuers(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """The certificates at *cert*'s caIssuers URLs; CertificateFetchError when none
        of those URLs could be read (pyHanko's own helper would just skip them)."""
        fetcher = AIOHttpCertificateFetcher(
            self._session,
            per_request_timeout=min(10.0, max(e.timeout for e in self.endpoints)),
            budget=FetchBudget(FetchLimits(max_requests=4, max_cert_requests=4)),
        )
        found: list[x509.Certificate] = []
        errors: list[CertificateFetchError] = []
        for url in list(gather_aia_issuer_urls(cert))[:_MAX_ISSUER_URLS]:
            try:
                found += await fetcher.fetch_certs(url, url_origin_type="certificate")
            except CertificateFetchError as exc:
                errors.append(exc)
        if errors and not found:
            raise errors[0]
        for issuer in found:
            if self._known_certs.register(issuer) and self._keep_issuer is not None:
                try:
                    await self._keep_issuer(issuer)
                except Exception as exc:  # kept in memory still; the disk is a convenience
                    log.warning("cannot keep the fetched issuer certificate: %s", describe(exc))
        return found

    def timestamper(self) -> CheckedTimeStamper:
        """A pyHanko ``TimeStamper`` over this client; one instance, reused (size estimate)."""
        if self._timestamper is None:
            self._timestamper = CheckedTimeStamper(self)
        return self._timestamper

    # ---- the exchange

    async def _exchange(
        self, request_for: Callable[[TsaEndpoint], tsp.TimeStampReq]
    ) -> RelayedReply:
        if not self._tsas:
            raise TsaUnavailable(
                "no TSA is configured ([[trust.tsa]] in the configuration)",
                reason="not_configured",
                retry_after=60,
            )
        failures: list[TsaError] = []
        for tsa in self._tsas:
            if not tsa.breaker.allow():
                failures.append(
                    TsaUnavailable(
                        f"TSA {tsa.endpoint.url}: skipped, circuit open after "
                        f"{tsa.breaker.failure_threshold} failures ({tsa.last_error})",
                        url=tsa.endpoint.url,
                        reason="circuit_open",
                        retry_after=tsa.breaker.retry_after(),
                    )
                )
                continue
            try:
                result = await self._try(tsa, request_for(tsa.endpoint))
            except TsaIssuerUnavailable as exc:
                # The TSA answered; its issuer's host did not: no verdict on the TSA.
                tsa.breaker.release()
                log.warning("%s", exc)
                failures.append(exc)
            except TsaRejected as exc:
                # The TSA is alive and said no. A request it finds wrong would be wrong
                # for the others too; only "cannot now" is worth the next TSA.
                self._succeeded(tsa)
                if not set(exc.fail_info) & _TRANSIENT_FAIL_INFO:
                    raise
                failures.append(exc)
            except TsaError as exc:
                self._failed(tsa, exc)
                failures.append(exc)
            except BaseException:
                tsa.breaker.release()  # cancelled: no verdict on this TSA
                raise
            else:
                self._succeeded(tsa)
                return result
        raise self._summary(failures)

    async def _try(self, tsa: _Tsa, request: tsp.TimeStampReq) -> RelayedReply:
        endpoint = tsa.endpoint
        body = request.dump()
        for attempt in range(1, endpoint.attempts + 1):
            started = time.perf_counter()
            try:
                result = await self._attempt(tsa, request, body)
            except _Transient as exc:
                self._observe(_outcome(exc.error), started)
                if attempt < endpoint.attempts:
                    log.info("TSA %s: %s; retrying", endpoint.url, exc)
                    await asyncio.sleep(self._retry_delay * attempt)
                    continue
                raise exc.error from None
            except TsaError as exc:
                self._observe(_outcome(exc), started)
                raise
            self._observe("ok", started)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _observe(self, outcome: str, started: float) -> None:
        if self._on_exchange is not None:
            self._on_exchange("tsa", outcome, time.perf_counter() - started)

    async def _attempt(self, tsa: _Tsa, request: tsp.TimeStampReq, body: bytes) -> RelayedReply:
        endpoint = tsa.endpoint
        reply = await self._post(tsa, body)
        token = await check_reply(
            request,
            reply,
            url=endpoint.url,
            anchors=self._anchors,
            clock_skew=self._clock_skew,
            expected_policy=endpoint.policy,
            other_certs=list(self._known_certs),
            fetch_issuers=self._fetch_issuers,
            paths=self.paths,
        )
        for cert in token.chain:
            self._known_certs.register(cert)
        self.last_chains[endpoint.url] = tuple(token.chain)
        return RelayedReply(reply, token)

    async def _post(self, tsa: _Tsa, body: bytes) -> bytes:
        endpoint = tsa.endpoint
        tsa.attempts += 1
        headers = {"Content-Type": _TSQ, "Accept": _TSR}
        if endpoint.authorization is not None:
            headers["Authorization"] = endpoint.authorization
        try:
            async with self._session.post(
                endpoint.url,
                data=body,
                headers=headers,
                ssl=endpoint.ssl_context or True,
                timeout=aiohttp.ClientTimeout(total=endpoint.timeout),
                allow_redirects=False,
            ) as response:
                if response.status >= 500:
                    raise _Transient(
                        TsaReplyError(
                            f"TSA {endpoint.url} answered HTTP {response.status}",
                            url=endpoint.url,
                            reason="http_error",
                        )
                    )
                if response.status != 200:
                    raise TsaReplyError(
                        f"TSA {endpoint.url} answered HTTP {response.status}"
                        + (
                            " (check the configured credentials)"
                            if response.status in (401, 403)
                            else ""
                        ),
                        url=endpoint.url,
                        reason="http_error",
                    )
                if response.content_type != _TSR:
                    raise TsaReplyError(
                        f"TSA {endpoint.url} answered {response.content_type or 'no content type'}"
                        f", not {_TSR}",
                        url=endpoint.url,
                        reason="malformed",
                    )
                data = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    data += chunk
                    if len(data) > MAX_REPLY_BYTES:
                        raise TsaReplyError(
                            f"TSA {endpoint.url}: reply over {MAX_REPLY_BYTES} bytes",
                            url=endpoint.url,
                            reason="malformed",
                        )
                return bytes(data)
        except TsaError:
            raise  # ours, from inside the block (TsaError is an OSError, as pyHanko's is)
        except TimeoutError:
            raise TsaTimeout(
                f"TSA {endpoint.url} did not answer within {endpoint.timeout:g} s",
                url=endpoint.url,
            ) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            _log_cause(endpoint.url, "no answer", exc)
            raise _Transient(
                TsaUnavailable(
                    f"TSA {endpoint.url} unreachable ({connection_words(exc)})",
                    url=endpoint.url,
                    retry_after=self._cool_down,
                )
            ) from None
        except aiohttp.ClientError as exc:
            _log_cause(endpoint.url, "unusable HTTP answer", exc)
            raise TsaReplyError(
                f"TSA {endpoint.url}: the HTTP answer is unusable",
                url=endpoint.url,
                reason="http_error",
            ) from None

    def _succeeded(self, tsa: _Tsa) -> None:
        tsa.breaker.record_success()
        tsa.last_success = time.time()

    def _failed(self, tsa: _Tsa, exc: TsaError) -> None:
        tsa.breaker.record_failure()
        tsa.last_failure = time.time()
        tsa.last_error = str(exc)
        log.warning("%s", exc)
        if tsa.breaker.state == "open":
            log.warning(
                "TSA %s: circuit open, skipped for %g s", tsa.endpoint.url, tsa.breaker.cool_down
            )

    def _summary(self, failures: list[TsaError]) -> TsaError:
        """One error for the caller: a bad answer beats a timeout beats unreachable."""
        message = "no TSA gave a usable timestamp: " + "; ".join(str(f) for f in failures)
        replies = [f for f in failures if isinstance(f, TsaReplyError)]
        summary: TsaError
        if replies:
            summary = TsaReplyError(message, url=replies[0].url, reason=replies[0].reason)
        elif any(isinstance(f, TsaTimeout) for f in failures):
            summary = TsaTimeout(message)
        else:
            waits = [f.retry_after for f in failures if isinstance(f, TsaUnavailable)]
            summary = TsaUnavailable(
                message,
                retry_after=max(1, math.ceil(min(waits))) if waits else self._cool_down,
                reason=failures[0].reason if len({f.reason for f in failures}) == 1 else None,
            )
        summary.failures = tuple(failures)
        return summary


def _outcome(exc: TsaError) -> str:
    if isinstance(exc, TsaIssuerUnavailable):
        return "ok"  # the exchange with the TSA was; its issuer's host was not
    if isinstance(exc, TsaTimeout):
        return "timeout"
    if isinstance(exc, TsaUnavailable):
        return "unavailable"
    return "error"


class _Transient(Exception):
    """A failure worth another attempt at the same TSA; carries the error to report."""

    def __init__(self, error: TsaError) -> None:
        super().__init__(str(error))
        self.error = error


def _log_cause(tsa: str, what: str, exc: BaseException) -> None:
    log_cause(log, f"TSA {tsa}", what, exc)


def _shorten(text: str, limit: int = 200) -> str:
    """A TSA's own status text, kept to a readable length."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class CheckedTimeStamper(TimeStamper):
    """A pyHanko ``TimeStamper`` whose tokens come from :class:`TimeStampClient`.

    pyHanko's own ``HTTPTimeStamper`` checks status and nonce only; this one hands
    pyHanko tokens that passed every check of :func:`check_reply`, with failover.
    Reuse one instance: pyHanko spends one timestamp per instance to estimate sizes.
    """

    def __init__(self, client: TimeStampClient) -> None:
        super().__init__(include_nonce=True)
        self._client = client

    async def async_timestamp(self, message_digest: bytes, md_algorithm: str) -> cms.ContentInfo:
        token = await self._client.timestamp(message_digest, md_algorithm)
        return token.content_info

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        reply = await self._client.relay(req)
        return tsp.TimeStampResp.load(reply.response_der)
