"""Network and certificate probes the doctor checks are made of.

Used by the sandbox check here and meant for the trust, keys and CNS checks: each
turns an upstream's behaviour into a :class:`~sidecar.doctor.Finding` that names the
broken link (unreachable, answering an error, a clock that is off, a certificate
about to expire).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import datetime

import aiohttp
from asn1crypto import algos, ocsp, pem, tsp, x509

from ..i18n import N_, _, format_date, ngettext
from . import Finding

__all__ = [
    "ProbeError",
    "TimestampProbe",
    "clock_skew_finding",
    "expiry_finding",
    "load_pem_certificates",
    "ocsp_probe",
    "timestamp_probe",
]

#: Beyond this, timestamps and OCSP answers look wrong to a validator (and the CNS).
CLOCK_TOLERANCE_SECONDS = 120.0
EXPIRY_WARN_DAYS = 30
#: Renewing a qualified certificate (a new smartcard) takes days: inside this window
#: the certificate is reported broken, not just worth a warning.
EXPIRY_FAIL_DAYS = 14


class ProbeError(Exception):
    """An upstream could not be used: ``kind`` is unreachable, timeout or error."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(detail)

    def said(self, service: str) -> str:
        """What went wrong with *service*, in the reader's language."""
        kind = _(_KINDS[self.kind]) if self.kind in _KINDS else self.kind
        return _("{service} {kind}: {detail}", service=service, kind=kind, detail=self.detail)


#: The kinds of ProbeError, in words.
_KINDS = {"unreachable": N_("unreachable"), "timeout": N_("timeout"), "error": N_("error")}


@dataclass(frozen=True)
class TimestampProbe:
    gen_time: datetime
    #: Local clock minus the TSA's, seconds (positive: this machine is ahead).
    skew_seconds: float
    round_trip_seconds: float


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, content_type: str, seconds: float
) -> bytes:
    try:
        async with asyncio.timeout(seconds):
            async with session.post(url, data=body, headers={"Content-Type": content_type}) as r:
                payload = await r.read()
                if r.status != 200:
                    answered = _("{url} answered HTTP {status}", url=url, status=r.status)
                    raise ProbeError("error", answered)
                return payload
    except TimeoutError:
        late = _("{url} did not answer within {seconds} s", url=url, seconds=format(seconds, "g"))
        raise ProbeError("timeout", late) from None
    except aiohttp.ClientConnectorError as exc:
        cannot = _("cannot connect to {url}: {reason}", url=url, reason=exc.os_error)
        raise ProbeError("unreachable", cannot) from None
    except aiohttp.ClientError as exc:
        raise ProbeError("unreachable", f"{url}: {type(exc).__name__}: {exc}") from None


async def timestamp_probe(
    session: aiohttp.ClientSession, url: str, *, local_now: datetime, seconds: float = 10.0
) -> TimestampProbe:
    """A real RFC 3161 round trip: request a timestamp on random data, check the reply.

    *local_now* is the local clock read when the request is sent; the skew is measured
    against the TSA's ``genTime`` (half the round trip is added to be fair to the TSA).
    """
    digest = hashlib.sha256(secrets.token_bytes(32)).digest()
    nonce = secrets.randbits(63)
    request = tsp.TimeStampReq(
        {
            "version": "v1",
            "message_imprint": {
                "hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                "hashed_message": digest,
            },
            "nonce": nonce,
            "cert_req": False,
        }
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    body = await _post(session, url, request.dump(), "application/timestamp-query", seconds)
    elapsed = loop.time() - started
    try:
        reply = tsp.TimeStampResp.load(body)
        status = reply["status"]["status"].native
        if status not in ("granted", "granted_with_mods"):
            refused = _("{url} refused the timestamp request ({status})", url=url, status=status)
            raise ProbeError("error", refused)
        info = reply["time_stamp_token"]["content"]["encap_content_info"]["content"].parsed
        imprint = info["message_imprint"]["hashed_message"].native
        if imprint != digest or info["nonce"].native != nonce:
            other = _("{url} answered a timestamp for another request", url=url)
            raise ProbeError("error", other)
        gen_time: datetime = info["gen_time"].native
    except (ValueError, KeyError, TypeError) as exc:
        raise ProbeError(
            "error",
            _("{url} answered something that is not a timestamp: {reason}", url=url, reason=exc),
        ) from None
    # The TSA read its clock about half-way through the round trip.
    skew = local_now.timestamp() + elapsed / 2 - gen_time.timestamp()
    return TimestampProbe(gen_time, skew, elapsed)


async def ocsp_probe(
    session: aiohttp.ClientSession,
    url: str,
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    *,
    seconds: float = 10.0,
) -> str:
    """Ask *url* about *certificate*; returns its status (good, revoked, unknown)."""
    request = ocsp.OCSPRequest(
        {
            "tbs_request": {
                "request_list": [
                    {
                        "req_cert": {
                            "hash_algorithm": {"algorithm": "sha1"},
                            "issuer_name_hash": hashlib.sha1(  # noqa: S324 - RFC 6960 CertID
                                issuer.subject.dump()
                            ).digest(),
                            "issuer_key_hash": issuer.public_key.sha1,
                            "serial_number": certificate.serial_number,
                        }
                    }
                ]
            }
        }
    )
    body = await _post(session, url, request.dump(), "application/ocsp-request", seconds)
    try:
        response = ocsp.OCSPResponse.load(body)
        status = response["response_status"].native
        if status != "successful":
            raise ProbeError(
                "error", _("{url} answered OCSP status {status}", url=url, status=status)
            )
        single = response.basic_ocsp_response["tbs_response_data"]["responses"][0]
        return str(single["cert_status"].name)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ProbeError(
            "error", _("{url} answered something that is not OCSP: {reason}", url=url, reason=exc)
        ) from None


def clock_skew_finding(
    check: str, skew_seconds: float, *, tolerance: float = CLOCK_TOLERANCE_SECONDS
) -> Finding:
    minutes = f"{abs(skew_seconds) / 60:.0f}"
    data = {"skew_seconds": round(skew_seconds, 1)}
    if abs(skew_seconds) <= tolerance:
        within = _("clock within {seconds} s of the TSA", seconds=round(abs(skew_seconds)))
        return Finding(check, "ok", within, data=data)
    off = (
        _("this machine's clock is {minutes} min ahead of the TSA's", minutes=minutes)
        if skew_seconds > 0
        else _("this machine's clock is {minutes} min behind the TSA's", minutes=minutes)
    )
    return Finding(
        check,
        "fail",
        off,
        fix=_(
            "set the clock right and keep it synchronised (Linux: timedatectl set-ntp true; "
            "Windows: w32tm /resync); signatures and OCSP answers are judged by time"
        ),
        data=data,
    )


def expiry_finding(
    check: str,
    certificate: x509.Certificate,
    now: datetime,
    *,
    warn_days: int = EXPIRY_WARN_DAYS,
    fail_days: int = EXPIRY_FAIL_DAYS,
    what: str = N_("certificate"),
) -> Finding:
    """ok; warn within *warn_days* of expiry; fail within *fail_days*, expired or not yet valid."""
    validity = certificate["tbs_certificate"]["validity"]
    not_before = validity["not_before"].native
    not_after = validity["not_after"].native
    # "expires in 10 days" while 9.99 days are left; 0 only once it is due today.
    days = math.ceil((not_after - now).total_seconds() / 86400)
    subject = certificate.subject.human_friendly
    data = {"not_after": not_after.isoformat(), "days_left": days, "subject": subject}
    said = {"what": _(what), "subject": subject, "date": format_date(not_after)}
    if now < not_before:
        return Finding(
            check,
            "fail",
            _("{what} is not valid before {date}", **{**said, "date": format_date(not_before)}),
            fix=_("check this machine's clock"),
            data=data,
        )
    if now > not_after:
        return Finding(
            check,
            "fail",
            _("{what} expired on {date}", **said),
            fix=_("renew it ({subject}) and configure the new one", **said),
            data=data,
        )
    if days <= warn_days:
        return Finding(
            check,
            "fail" if days <= fail_days else "warn",
            ngettext(
                "{what} expires in {n} day ({date})",
                "{what} expires in {n} days ({date})",
                days,
                **said,
            ),
            fix=_("order its renewal ({subject}) now", **said),
            data=data,
        )
    valid = ngettext(
        "{what} valid until {date} ({n} day)",
        "{what} valid until {date} ({n} days)",
        days,
        **said,
    )
    return Finding(check, "ok", valid, data=data)


def load_pem_certificates(data: bytes) -> list[x509.Certificate]:
    return [x509.Certificate.load(der) for _kind, _headers, der in pem.unarmor(data, multiple=True)]
