"""``POST /v1/xml/sign``: an enveloped XAdES signature of the caller's XML document.

``?level=`` (B-B, B-T, B-LT, B-LTA; default: the profile's, else ``[signing]
xml_level``), ``?profile=`` (its XML level), ``?key=`` (default key otherwise).
The engine (:mod:`sidecar.signing.xades`) does the work; this module maps its
typed errors to problems: refused XML (400/422), unknown key or profile (404),
locked key (423, mapped by the keys' module), and an unavailable TSA or
revocation service for the asked level (502/503/504 — never a lower level).

:func:`xml_context` (in ``SUBSYSTEMS``) starts the worker processes that draft
XAdES signatures (``[signing] xml_workers``, each draft under ``xml_draft_timeout``,
one client holding at most ``xml_workers_per_client`` of them) and adds their
``/v1/health`` check; every route that signs XML passes them to the engine
(:func:`xml_workers`), with the calling client's name.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ..config import SigningSettings, default_workers
from ..keys import Signer
from ..signing.forms import check_profile
from ..signing.profiles import Profile
from ..signing.report import BASELINE_LEVELS, Level
from ..signing.trust_binding import TrustTimestampSource, TrustValidationDataSource
from ..signing.workers import WorkerPool, pool_check, shared_or_own
from ..signing.xades import (
    SignaturePolicy,
    XadesOptions,
    sign_xml,
)
from ..signing.xml_safety import (
    NamespaceBounds,
    parse_xml,
)
from .authorisation import with_operation_pin
from .guards import read_body
from .keys import CLIENT, HEALTH_CHECKS, SETTINGS
from .pdf import PADES, PROFILES
from .problems import Problem, bad_parameter
from .qualification import after_signing, before_signing
from .signing_keys import KEY_REGISTRY
from .timestamps import TRUST

__all__ = [
    "HANDLERS",
    "XML_WORKERS",
    "client_name",
    "sign_xml_document",
    "sign_xml_with",
    "xades_options",
    "xml_context",
    "xml_level",
    "xml_workers",
    "xml_workers_started",
]

log = logging.getLogger("sidecar.signing")

_LEVELS = {level.value: level for level in BASELINE_LEVELS}

#: The processes drafting XAdES signatures; absent: drafted in threads.
XML_WORKERS = web.AppKey("xml_workers", WorkerPool)
_XML_WORKERS_STARTING = web.AppKey("xml_workers_starting", asyncio.Future)


def _worker_count(settings: SigningSettings) -> int:
    if settings.xml_workers is not None:
        return settings.xml_workers
    return default_workers()  # one per core beyond the loop's: 1 on 2 cores


async def xml_context(app: web.Application) -> AsyncIterator[None]:
    """Subsystem: the XAdES drafting workers, started in the background.

    Their start (the forkserver imports the signing stack, a second or more) would
    otherwise hold the daemon's start; until the first is up, drafts wait for it.
    """
    count = _worker_count(app[SETTINGS].signing)
    if count == 0:
        yield
        return
    signing = app[SETTINGS].signing
    workers = shared_or_own(  # one pool with the PDF steps': fewer processes
        app[PADES].inspector.workers if PADES in app else None,
        "XAdES",
        workers=count,
        deadline=signing.xml_draft_timeout,
        per_client=signing.xml_workers_per_client or max(1, count - 1),
        # A draft waits for a worker no longer than a worker may take over one.
        queue_timeout=signing.xml_draft_timeout,
        idle_exit=signing.worker_idle_exit,
    )
    app[XML_WORKERS] = workers
    # Not awaited: the processes start from threads (the forkserver's imports take a
    # second or more) while the daemon becomes ready; a draft meanwhile waits for the
    # first worker.
    starting = app[_XML_WORKERS_STARTING] = asyncio.ensure_future(workers.start())
    # On SIGTERM, aiohttp waits the shutdown timeout for requests under way, then as
    # long again for them to end: a stuck draft would hold it both times. Drafts get
    # the timeout less 2 s (the rest of the cleanup and the interpreter's own exit take
    # about 1 s), then their workers are killed and their callers answered 503.
    grace = app[SETTINGS].server.shutdown_timeout
    grace = max(grace / 2, grace - 2.0)

    async def stop_drafting(_: web.Application) -> None:
        workers.stop_after(grace)

    app.on_shutdown.append(stop_drafting)  # still open while the subsystems start
    app[HEALTH_CHECKS].append(("xml-workers", pool_check(workers, "xml-workers")))
    log.info(
        "XAdES: %d drafting worker process(es), at most %d per client",
        count,
        workers.per_client,
    )
    try:
        yield
    finally:
        try:
            await starting
        except Exception as exc:  # drafts went to threads all along
            log.warning("XAdES: the drafting workers did not start: %s", exc)
        workers.close()


def xml_workers(app: web.Application) -> WorkerPool | None:
    """The drafting workers to hand :func:`~sidecar.signing.xades.sign_xml` (starting or
    started); ``None`` when there are none, or none could be started: threads draft."""
    starting = app.get(_XML_WORKERS_STARTING)
    if starting is None or (starting.done() and starting.exception() is not None):
        return None
    return app.get(XML_WORKERS)


def client_name(request: web.Request) -> str | None:
    """Whose share of the drafting workers a request's signature counts against."""
    client = request.get(CLIENT)
    return client.name if client is not None else None


async def xml_workers_started(app: web.Application) -> WorkerPool | None:
    """:func:`xml_workers` once their start has ended (for tests and benchmarks)."""
    starting = app.get(_XML_WORKERS_STARTING)
    if starting is not None:
        await asyncio.wait([starting])
    return xml_workers(app)


def xades_options(
    settings: SigningSettings, namespaces: dict[str, str] | None = None
) -> XadesOptions:
    """The engine's options from ``[signing]`` (raises ValueError when inconsistent)."""
    policy = None
    if settings.xml_policy_id:
        if not settings.xml_policy_digest:
            raise ValueError("[signing] xml_policy_id needs xml_policy_digest (base64)")
        try:
            base64.b64decode(settings.xml_policy_digest, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("[signing] xml_policy_digest must be base64") from None
        policy = SignaturePolicy(
            identifier=settings.xml_policy_id,
            digest_value=settings.xml_policy_digest,
            digest_algorithm=settings.xml_policy_digest_algorithm,
            uri=settings.xml_policy_uri,
        )
    prefixes = dict(namespaces or {})
    for entry in settings.xml_namespaces:
        prefix, sep, uri = entry.partition("=")
        if not sep or not prefix.strip() or not uri.strip():
            raise ValueError(f"[signing] xml_namespaces: {entry!r} is not 'prefix=uri'")
        prefixes[prefix.strip()] = uri.strip()
    return XadesOptions(
        placement=settings.xml_signature_parent,
        namespaces=prefixes,
        policy=policy,
        claimed_roles=settings.xml_signer_roles,
        allow_parallel=settings.xml_allow_parallel,
        namespace_bounds=NamespaceBounds(
            settings.xml_max_namespaces, settings.xml_max_namespaces_in_scope
        ),
    )


def named_profile(app: web.Application, name: str) -> Profile:
    """Profile ``name`` (404 when there is no such profile)."""
    profile = app[PROFILES].get(name)
    if profile is None:
        raise Problem(404, "not_found", f"no profile {name!r}", profile=name)
    return profile


def xml_level(app: web.Application, profile: Profile | None, raw_level: str | None) -> Level:
    """The level asked (``level``), else the profile's, else ``[signing] xml_level``."""
    level = _LEVELS[app[SETTINGS].signing.xml_level]
    if profile is not None:
        level = profile.xml_level or level
    if raw_level is not None:
        if raw_level not in _LEVELS:
            raise bad_parameter("level", f"one of {', '.join(_LEVELS)} (got {raw_level!r})")
        level = _LEVELS[raw_level]
    return level


async def sign_xml_with(
    app: web.Application,
    body: bytes,
    signer: Signer,
    level: Level,
    *,
    profile: Profile | None = None,
    client: str | None = None,
) -> bytes:
    """The XAdES engine on *body* with the daemon's trust layer and ``[signing]`` options.

    With a *profile* the document must be that profile's (root element and XSD, as the
    form route checks: 422 ``schema_violation``); *client*: whose share of the drafting
    workers it uses."""
    try:
        options = xades_options(app[SETTINGS].signing)
    except ValueError as exc:
        raise Problem(500, "configuration_error", str(exc)) from None
    if profile is not None:
        limit = app[SETTINGS].limits.xml
        # Parsing and XSD validation are CPU work: off the event loop.
        await asyncio.to_thread(lambda: check_profile(parse_xml(body, max_size=limit), profile))
    before_signing(app, signer)  # [trust.lists] at_signing
    trust = app.get(TRUST)
    timestamps = validation = None
    if trust is not None:
        if trust.tsa.endpoints:
            timestamps = TrustTimestampSource(trust.tsa)
        validation = TrustValidationDataSource(trust.revocation)
    return await sign_xml(
        body,
        signer,
        level,
        options,
        timestamps=timestamps,
        validation_data=validation,
        workers=xml_workers(app),
        client=client,
    )


async def sign_xml_document(request: web.Request) -> web.Response:
    """``signXml``: the signed document, same encoding, otherwise byte for byte."""
    app = request.app
    name = request.query.get("profile")
    profile = named_profile(app, name) if name else None
    level = xml_level(app, profile, request.query.get("level"))
    signer = await app[KEY_REGISTRY].acquire(request.query.get("key") or None)
    body = await read_body(request)
    signed = await sign_xml_with(
        app, body, signer, level, profile=profile, client=client_name(request)
    )
    log.info("signed an XML document at %s with key %s", level.value, signer.id)
    return web.Response(
        body=signed,
        content_type="application/xml",
        headers={"X-Signature-Level": level.value, **after_signing(app, signer)},
    )


HANDLERS = {"signXml": with_operation_pin(sign_xml_document)}
