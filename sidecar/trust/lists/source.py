"""The trusted-list source (ETSI TS 119 612): fetch, verify, cache, load offline.

The EU list of trusted lists (LOTL) is verified against the LOTL signer certificates
pyHanko bundles (or those named in ``[trust.lists] lotl_signers``); each member
state's list named in ``territories`` against the certificates the LOTL designates for
it. A list's signature is checked at the list's own issue time (a list signed by a
TLSO certificate that has since expired stays readable; whether it is still current is
the NextUpdate rule's job). Lists are kept on disk as fetched, signature included
(:mod:`.cache`), and every load verifies them again: the daemon works from the cache
with no network at all.

NextUpdate: a list past it is *stale* (used, with a warning); past it by more than
``stale_grace`` seconds it is *refused* (not used). A list whose signature fails, or
that cannot be parsed, is never used, and never replaces a good cached copy; nor does a
list with a lower sequence number than the cached one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import aiohttp
from asn1crypto import x509
from lxml import etree
from pyhanko.sign.validation.qualified import eutl_parse
from pyhanko.sign.validation.qualified.eutl_fetch import EU_LOTL_LOCATION
from pyhanko.sign.validation.qualified.tsp import (
    CAServiceInformation,
    QTSTServiceInformation,
    TSPRegistry,
)

from ..._hooks import pyhanko_eutl_hooks as _pyhanko
from .cache import CachedList, ListCache
from .errors import (
    ListError,
    ListSignatureInvalid,
    ListStale,
    ListUnavailable,
    ListUnparseable,
)

__all__ = [
    "LOTL_KEY",
    "ListInfo",
    "ListPolicy",
    "ListedService",
    "TrustedLists",
    "bundled_lotl_signers",
    "fetch_lists",
    "read_lists",
]

log = logging.getLogger("sidecar.trust.lists")

#: The LOTL's key in the cache and in reports.
LOTL_KEY = "EU"
#: A list issued further in the future than this is refused (a clock or a forgery).
ISSUE_SKEW = timedelta(minutes=5)


def bundled_lotl_signers() -> list[x509.Certificate]:
    """pyHanko's bundled LOTL signer certificates: the latest known and the OJ ones."""
    certs = [*eutl_parse.latest_known_lotl_tlso_certs()]
    for anchor in (0, 1):
        certs.extend(eutl_parse.ojeu_bootstrap_lotl_tlso_certs(anchor))
    unique = {c.sha256: c for c in certs}
    return list(unique.values())


@dataclass(frozen=True)
class ListPolicy:
    """What to fetch and how strictly to judge it (``[trust.lists]``, resolved)."""

    lotl_url: str = EU_LOTL_LOCATION
    territories: tuple[str, ...] = ("LU",)
    #: Seconds past NextUpdate a list is still used (with a warning).
    stale_grace: float = 7 * 86400.0
    #: Certificates the LOTL may be signed with; empty: pyHanko's bundled ones.
    lotl_signers: tuple[x509.Certificate, ...] = ()
    #: Seconds one download may take.
    timeout: float = 60.0


@dataclass(frozen=True)
class ListInfo:
    """One list as loaded: which, from where, when issued, until when, and its state."""

    key: str
    url: str
    fetched: datetime
    sequence: int | None = None
    issued: datetime | None = None
    next_update: datetime | None = None
    #: ``current``; ``stale`` (past NextUpdate, still used); ``refused`` (not used).
    state: Literal["current", "stale", "refused"] = "current"
    problem: str | None = None

    def as_json(self, now: datetime) -> dict[str, Any]:
        return {
            "list": self.key,
            "url": self.url,
            "sequence": self.sequence,
            "issued": self.issued.isoformat() if self.issued else None,
            "next_update": self.next_update.isoformat() if self.next_update else None,
            "fetched": self.fetched.isoformat(),
            "age_seconds": round((now - self.fetched).total_seconds()),
            "state": self.state,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class ListedService:
    """A service of a loaded list with its status history (current first)."""

    territory: str
    provider: str
    name: str
    service_type: str
    statuses: tuple[tuple[str, datetime | None], ...]


@dataclass
class TrustedLists:
    """The lists in use: CA/QC and TSA/QTST registries, the lists' states, problems."""

    ca: TSPRegistry = field(default_factory=TSPRegistry)
    tsa: TSPRegistry = field(default_factory=TSPRegistry)
    lists: tuple[ListInfo, ...] = ()
    services: tuple[ListedService, ...] = ()
    #: One line per list not used or used with a warning.
    problems: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        """Whether at least one member state's list is in use."""
        return any(i.key != LOTL_KEY and i.state != "refused" for i in self.lists)

    def ca_certificates(self, at: datetime) -> list[x509.Certificate]:
        """Certificates of the CA/QC services granted at *at*: anchors for signer chains."""
        return _granted(self.ca, at)

    def tsa_certificates(self, at: datetime) -> list[x509.Certificate]:
        """Certificates of the TSA/QTST services granted at *at*: anchors for timestamps."""
        return _granted(self.tsa, at)


def _granted(registry: TSPRegistry, at: datetime) -> list[x509.Certificate]:
    found: dict[bytes, x509.Certificate] = {}
    authorities = {*registry.known_certificate_authorities, *registry.known_timestamp_authorities}
    for authority in authorities:
        cert = getattr(authority, "certificate", None)
        if cert is not None and any(registry.applicable_service_definitions(authority, at)):
            found.setdefault(cert.sha256, cert)
    return list(found.values())


@dataclass(frozen=True)
class _Verified:
    signed_xml: str
    header: _pyhanko.RawHeader


def _verify(key: str, xml: str, signers: Sequence[x509.Certificate], now: datetime) -> _Verified:
    """Check *xml*'s signature against *signers* at its issue time; its header, read
    from the signed content only."""
    try:
        etree.fromstring(
            xml.encode("utf-8"),
            etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False),
        )
        claimed = _pyhanko.read_header(xml)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise ListUnparseable(key, f"not well-formed XML: {exc}") from None
    except Exception as exc:  # xsdata's own errors: not a TS 119 612 list
        raise ListUnparseable(key, f"not a trusted list: {exc}") from None
    if claimed.issued is None:
        raise ListUnparseable(key, "no ListIssueDateTime")
    if claimed.issued > now + ISSUE_SKEW:
        raise ListSignatureInvalid(key, f"issued in the future ({claimed.issued.isoformat()})")
    if not signers:
        raise ListSignatureInvalid(key, "no certificate is designated to verify it")
    try:
        signed = _pyhanko.verified_content(xml, list(signers), claimed.issued)
    except etree.XMLSyntaxError as exc:
        raise ListUnparseable(key, f"not well-formed XML: {exc}") from None
    except Exception as exc:
        # pyHanko's SignatureValidationError, or signxml's own on malformed signatures.
        message = str(getattr(exc, "failure_message", None) or exc).splitlines()[0]
        raise ListSignatureInvalid(key, f"XML signature does not verify: {message}") from None
    header = _pyhanko.read_header(signed)
    if header.issued != claimed.issued:
        raise ListSignatureInvalid(key, "the signed content is not the list that was read")
    return _Verified(signed, header)


def _state(
    key: str, header: _pyhanko.RawHeader, now: datetime, grace: float
) -> tuple[Literal["current", "stale", "refused"], str | None]:
    if header.next_update is None or now <= header.next_update:
        return "current", None
    late = now - header.next_update
    message = (
        f"trusted list {key} is past its NextUpdate ({header.next_update.isoformat()}) "
        f"by {late.days} day(s): run 'sidecar trust refresh'"
    )
    if late.total_seconds() > grace:
        return "refused", str(ListStale(key, message.split(": ", 1)[0] + "; not used"))
    return "stale", message


def _lotl_references(
    verified: _Verified, territories: Iterable[str]
) -> dict[str, eutl_parse.TLReference]:
    wanted = {t.upper() for t in territories}
    refs: dict[str, eutl_parse.TLReference] = {}
    for ref in eutl_parse.parse_lotl_unsafe(verified.signed_xml).references:
        if eutl_parse.LOTL_RULE in ref.scheme_rules:
            continue
        if ref.territory.upper() in wanted:
            refs[ref.territory.upper()] = ref
    return refs


def read_lists(cache: ListCache, policy: ListPolicy, now: datetime | None = None) -> TrustedLists:
    """The lists in *cache*, each signature verified again, judged at *now*. No network.

    Heavy (XML signature checks): run it off the event loop.
    """
    now = now or datetime.now(UTC)
    infos: list[ListInfo] = []
    problems: list[str] = []
    result = TrustedLists()
    cached_lotl = cache.get(LOTL_KEY)
    if cached_lotl is None:
        problems.append(
            str(ListUnavailable(LOTL_KEY, "not fetched yet: run 'sidecar trust refresh'"))
        )
        result.problems = tuple(problems)
        return result
    signers = list(policy.lotl_signers) or bundled_lotl_signers()
    try:
        lotl = _verify(LOTL_KEY, cached_lotl.xml, signers, now)
    except ListError as exc:
        infos.append(
            ListInfo(
                LOTL_KEY, cached_lotl.url, cached_lotl.fetched, state="refused", problem=str(exc)
            )
        )
        result.lists, result.problems = tuple(infos), (str(exc),)
        return result
    state, problem = _state(LOTL_KEY, lotl.header, now, policy.stale_grace)
    infos.append(_info(LOTL_KEY, cached_lotl, lotl.header, state, problem))
    if problem:
        problems.append(problem)
    if state == "refused":
        result.lists, result.problems = tuple(infos), tuple(problems)
        return result
    refs = _lotl_references(lotl, policy.territories)
    services: list[ListedService] = []
    for territory in policy.territories:
        territory = territory.upper()
        cached = cache.get(territory)
        ref = refs.get(territory)
        if cached is None or ref is None:
            why = "not fetched yet" if ref is not None else "not named in the LOTL"
            problems.append(str(ListUnavailable(territory, why)))
            continue
        try:
            tl = _verify(territory, cached.xml, ref.tlso_certs, now)
        except ListError as exc:
            infos.append(
                ListInfo(territory, cached.url, cached.fetched, state="refused", problem=str(exc))
            )
            problems.append(str(exc))
            continue
        state, problem = _state(territory, tl.header, now, policy.stale_grace)
        infos.append(_info(territory, cached, tl.header, state, problem))
        if problem:
            problems.append(problem)
        if state == "refused":
            continue
        _register(tl.signed_xml, result)
        services.extend(
            ListedService(territory, s.provider, s.name, s.service_type, s.statuses)
            for s in _pyhanko.read_services(tl.signed_xml)
        )
    result.lists, result.services, result.problems = tuple(infos), tuple(services), tuple(problems)
    return result


def _info(
    key: str,
    cached: CachedList,
    header: _pyhanko.RawHeader,
    state: Literal["current", "stale", "refused"],
    problem: str | None,
) -> ListInfo:
    return ListInfo(
        key,
        cached.url,
        cached.fetched,
        sequence=header.sequence,
        issued=header.issued,
        next_update=header.next_update,
        state=state,
        problem=problem,
    )


def _register(signed_xml: str, into: TrustedLists) -> None:
    # Two registries, so that a CA certificate that is also a QTST's digital identity
    # (LuxTrust's) does not make pyHanko's assessor see two contradictory services.
    definitions = eutl_parse.read_qualified_service_definitions(signed_xml)
    while True:
        try:
            sd = next(definitions)
        except StopIteration as stop:
            for error in stop.value or ():
                log.warning("trusted list: a service entry was skipped: %s", error)
            return
        if isinstance(sd, CAServiceInformation):
            into.ca.register_ca(sd)
        elif isinstance(sd, QTSTServiceInformation):
            into.tsa.register_tst(sd)


async def _download(session: aiohttp.ClientSession, url: str, seconds: float) -> str:
    headers = {"Accept": f"{eutl_parse.ETSI_TSL_MIME_TYPE}, application/xml, text/xml"}
    async with session.get(
        url, headers=headers, timeout=aiohttp.ClientTimeout(total=seconds), raise_for_status=True
    ) as response:
        return (await response.read()).decode("utf-8-sig")


async def fetch_lists(
    session: aiohttp.ClientSession,
    cache: ListCache,
    policy: ListPolicy,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[str]:
    """Download the LOTL and the configured lists; store each that verifies and is not
    older than the cached copy. Returns one line per list that was not stored."""
    problems: list[str] = []
    now = clock()
    signers = list(policy.lotl_signers) or bundled_lotl_signers()
    lotl_xml: str | None = None
    try:
        fetched = await _download(session, policy.lotl_url, policy.timeout)
        lotl = await asyncio.to_thread(_verify, LOTL_KEY, fetched, signers, now)
        await asyncio.to_thread(
            _store_if_newer, cache, LOTL_KEY, policy.lotl_url, lotl, fetched, now, signers
        )
        lotl_xml = fetched
    except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError) as exc:
        problems.append(
            str(ListUnavailable(LOTL_KEY, f"download failed: {exc or type(exc).__name__}"))
        )
    except ListError as exc:
        problems.append(str(exc))
    if lotl_xml is None:
        cached = cache.get(LOTL_KEY)
        if cached is None:
            return problems
        lotl_xml = cached.xml
    try:
        lotl = await asyncio.to_thread(_verify, LOTL_KEY, lotl_xml, signers, now)
    except ListError as exc:
        return [*problems, str(exc)]
    refs = _lotl_references(lotl, policy.territories)
    for territory in (t.upper() for t in policy.territories):
        ref = refs.get(territory)
        if ref is None:
            problems.append(str(ListUnavailable(territory, "not named in the LOTL")))
            continue
        try:
            xml = await _download(session, ref.location_uri, policy.timeout)
            tl = await asyncio.to_thread(_verify, territory, xml, ref.tlso_certs, now)
        except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError) as exc:
            problems.append(
                str(ListUnavailable(territory, f"download failed: {exc or type(exc).__name__}"))
            )
            continue
        except ListError as exc:
            problems.append(str(exc))
            continue
        if not await asyncio.to_thread(
            _store_if_newer, cache, territory, ref.location_uri, tl, xml, now, ref.tlso_certs
        ):
            problems.append(
                f"trusted list {territory}: older than the cached copy; kept the cached one"
            )
    return problems


def _store_if_newer(
    cache: ListCache,
    key: str,
    url: str,
    fetched: _Verified,
    xml: str,
    now: datetime,
    signers: Sequence[x509.Certificate],
) -> bool:
    """Store *xml* unless the cached copy has a higher sequence number (no roll-back).
    Heavy (the cached copy is verified again): run it off the event loop."""
    cached = cache.get(key)
    if cached is not None:
        try:
            previous = _verify(key, cached.xml, signers, now)
        except ListError:
            previous = None  # a cached copy that no longer verifies is replaced
        if previous is not None:
            old, new = previous.header.sequence, fetched.header.sequence
            if old is not None and new is not None and new < old:
                return False
    cache.put(key, url, now, xml)
    return True
