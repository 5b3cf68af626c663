"""The composition root: every service of the daemon, built once, closed in reverse.

:func:`open_services` is the one place that knows in which order the parts depend on
each other; the daemon's application enters it once (``sidecar.api.app``), and so do
``sidecar sign`` and ``sidecar verify`` (``sidecar.batch``), which need no server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from .. import __version__
from ..audit import AUDIT_FILE, AuditJournal
from ..batches import BatchStore
from ..cns.subsystem import CnsRuntime, open_cns
from ..config import ConfigError, Settings, SigningSettings, default_workers
from ..health import CheckResult, HealthCheck, Status
from ..keys import KeyConfig, KeyConfigError, KeyRegistry
from ..keys.authorisation import forbid_core_dumps
from ..metrics import CertificateExpiry, Metrics
from ..paths import Paths
from ..sandbox.keys import sandbox_key_configs
from ..sandbox.pki import SandboxPKI, ensure_sandbox_pki
from ..sandbox.services import serve_sandbox_pki
from ..signing.pades import PadesEngine
from ..signing.pdf_checks import PdfInspector, PdfLimits
from ..signing.profiles import BUNDLED_PROFILE_DIR, ProfileError, ProfileRegistry
from ..signing.trust_binding import TrustValidationDataSource
from ..signing.workers import WorkerPool, pool_check, shared_or_own
from ..signing.xades import XadesOptions
from ..stores import open_journal
from ..trust import AnchorError, TrustServices, open_trust
from .cns import fee_note_seam, timestamp_upgrader
from .events import SignatureEvent, record_signature
from .key_info import key_info_json
from .qualification import trusted_lists_check
from .signing import xades_options

if TYPE_CHECKING:
    from ..trust.lists import ListPolicy

__all__ = ["DraftingWorkers", "Services", "open_services"]

log = logging.getLogger("sidecar.services")
# Each part logs under the name it always had: operators filter on them.
_app_log = logging.getLogger("sidecar.app")
_keys_log = logging.getLogger("sidecar.keys")
_signing_log = logging.getLogger("sidecar.signing")

#: Certificates closer than this to expiry make the key check ``degraded``.
EXPIRY_WARNING_DAYS = 30


@dataclass
class DraftingWorkers:
    """The processes drafting XAdES signatures, started in the background.

    Their start (the forkserver imports the signing stack, a second or more) would
    otherwise hold the daemon's start; until the first is up, drafts wait for it.
    """

    pool: WorkerPool | None = None
    starting: asyncio.Future[None] | None = None

    def current(self) -> WorkerPool | None:
        """The workers to hand :func:`~sidecar.signing.xades.sign_xml` (starting or
        started); ``None`` when there are none, or none could be started: threads draft."""
        starting = self.starting
        if starting is None or (starting.done() and starting.exception() is not None):
            return None
        return self.pool

    async def started(self) -> WorkerPool | None:
        """:meth:`current` once their start has ended (for tests and benchmarks)."""
        if self.starting is not None:
            await asyncio.wait([self.starting])
        return self.current()


@dataclass
class Services:
    """Everything the operations use, built by :func:`open_services`."""

    settings: Settings
    paths: Paths
    #: The daemon's one outgoing HTTP session (TSA, OCSP/CRL, CNS).
    http: aiohttp.ClientSession
    metrics: Metrics
    #: Every signature and delivery is written to it (``sidecar.audit``).
    journal: AuditJournal
    keys: KeyRegistry
    trust: TrustServices
    profiles: ProfileRegistry
    pades: PadesEngine
    #: ``[signing]``'s XAdES options (a form's profile adds its namespaces).
    xades: XadesOptions
    xml_workers: DraftingWorkers
    batches: BatchStore
    #: ``/v1/health``'s checks, each part adding its own.
    health_checks: list[tuple[str, HealthCheck]]
    #: The sandbox PKI (``--sandbox``); its roots are trusted, its TSA used.
    sandbox_pki: SandboxPKI | None = None
    #: The CNS runtime (outbox, transport, delivery worker), when the CNS is opened.
    cns: CnsRuntime | None = None
    #: Called when the host begins to stop (``begin_shutdown``).
    _on_shutdown: list[Callable[[], None]] = field(default_factory=list)

    async def signature_made(self, event: SignatureEvent) -> None:
        """Journal and count one signing operation (see :mod:`.events`)."""
        await record_signature(event, journal=self.journal, metrics=self.metrics)

    def begin_shutdown(self) -> None:
        """The host stops taking requests: bound what those under way may still take."""
        for step in self._on_shutdown:
            step()


def _worker_count(settings: SigningSettings) -> int:
    if settings.xml_workers is not None:
        return settings.xml_workers
    return default_workers()  # one per core beyond the loop's: 1 on 2 cores


@contextlib.asynccontextmanager
async def _http_session() -> AsyncIterator[aiohttp.ClientSession]:
    # One session for every upstream (TSA, OCSP/CRL, CNS): connection reuse matters
    # when a burst of signatures each needs a timestamp.
    timeout = aiohttp.ClientTimeout(total=30, connect=5)
    async with aiohttp.ClientSession(
        timeout=timeout, headers={"User-Agent": f"sidecar/{__version__}"}
    ) as session:
        yield session


@contextlib.asynccontextmanager
async def _served_sandbox(
    settings: Settings,
    sandbox_dir: Path,
    http: aiohttp.ClientSession,
    health_checks: list[tuple[str, HealthCheck]],
) -> AsyncIterator[SandboxPKI]:
    """Generate (first time) and serve the sandbox PKI (``serve --sandbox``)."""
    sandbox = settings.sandbox
    loop = asyncio.get_running_loop()
    # Key generation takes a moment on first start; keep the loop free meanwhile.
    pki = await loop.run_in_executor(
        None,
        lambda: ensure_sandbox_pki(
            sandbox_dir, host=sandbox.host, port=sandbox.port, cns_port=sandbox.cns_port
        ),
    )
    async with serve_sandbox_pki(pki):
        _app_log.info("sandbox PKI served at %s; trust anchors in %s", pki.base_url, pki.roots_pem)

        async def check() -> CheckResult:
            url = next(iter(pki.crl_urls.values()))
            async with http.get(url) as response:
                ok = response.status == 200
            return CheckResult(
                "sandbox-pki",
                "ok" if ok else "degraded",
                f"TSA/OCSP/CRL at {pki.base_url}" if ok else f"CRL answered {response.status}",
            )

        health_checks.append(("sandbox-pki", check))
        yield pki


def _errors_check(metrics: Metrics) -> HealthCheck:
    async def check() -> CheckResult:
        # Always "ok": past errors are information for a person, and must not make
        # /v1/health flap for the monitoring that polls it.
        recent = metrics.recent_errors()
        if not recent:
            detail = "no errors since the daemon started"
        else:
            detail = f"{len(recent)} recent error(s); latest: {recent[0].message}"
        return CheckResult("errors", "ok", detail, {"recent": [e.as_json() for e in recent]})

    return check


def key_check(registry: KeyRegistry) -> CheckResult:
    """``keys``: degraded when a key is locked, its certificate unusable or expiring."""
    infos = registry.describe()
    if not infos:
        return CheckResult("keys", "degraded", "no signing key is configured")
    problems = []
    worst: Status = "ok"
    for info in infos:
        if not info.opened:  # loaded on first use, and not used yet: nothing to check
            continue
        days = (info.not_after - datetime.now(UTC)).days if info.not_after else None
        # A key that takes its PIN with each operation waits for one: not a fault.
        waiting = info.pin_per_operation and info.locked_reason == "pin_missing"
        if (not info.unlocked and not waiting) or info.certificate_status != "valid":
            problems.append(f"{info.id}: {info.locked_detail or info.certificate_status}")
            worst = "degraded"
        elif days is not None and days < EXPIRY_WARNING_DAYS:
            problems.append(f"{info.id}: certificate expires in {days} days")
            worst = "degraded"
    detail = "; ".join(problems) or f"{len(infos)} key(s) unlocked"
    return CheckResult("keys", worst, detail, data={"keys": [key_info_json(i) for i in infos]})


async def _open_keys(
    settings: Settings, sandbox: SandboxPKI | None, health_checks: list[tuple[str, HealthCheck]]
) -> KeyRegistry:
    """The configured keys (or the sandbox's), opened."""
    configs: Sequence[KeyConfig] = settings.keys
    if not configs and sandbox is not None:
        softhsm = settings.sandbox.softhsm
        configs = await asyncio.get_running_loop().run_in_executor(
            None, lambda: sandbox_key_configs(sandbox, softhsm=softhsm)
        )
    registry = KeyRegistry.from_configs(configs)
    try:
        await registry.open()
    except KeyConfigError as exc:
        raise ConfigError(settings.source, "keys", exc.detail) from None
    for info in registry.describe():
        state = "unlocked" if info.unlocked else f"locked ({info.locked_reason})"
        _keys_log.info("key %s (%s, %s): %s", info.id, info.backend, info.key_type, state)

    async def check() -> CheckResult:
        return key_check(registry)

    health_checks.append(("keys", check))
    return registry


def _sandbox_list_policy(sandbox: SandboxPKI | None) -> ListPolicy | None:
    if sandbox is None:
        return None
    from ..sandbox.lists import ensure_sandbox_lists, sandbox_list_policy

    return sandbox_list_policy(ensure_sandbox_lists(sandbox))


def _tsa_check(trust: TrustServices) -> HealthCheck:
    async def check() -> CheckResult:
        # Breaker state only: a health probe must not buy timestamps (TSAs may bill).
        statuses = trust.tsa.status()
        data = {
            "tsa": [
                {
                    "url": s.url,
                    "state": s.breaker.state,
                    "consecutive_failures": s.breaker.consecutive_failures,
                    **({"retry_after": s.breaker.retry_after} if s.breaker.retry_after else {}),
                }
                for s in statuses
            ],
            "anchors": len(trust.anchors),
            "revocation_cache_entries": len(trust.revocation.cache),
        }
        if not statuses:
            return CheckResult("tsa", "degraded", "no TSA configured", data)
        closed = [s for s in statuses if s.breaker.state != "open"]
        if len(closed) == len(statuses):
            return CheckResult("tsa", "ok", f"{len(statuses)} TSA(s) available", data)
        if closed:
            return CheckResult(
                "tsa", "degraded", f"{len(statuses) - len(closed)} TSA(s) skipped", data
            )
        return CheckResult("tsa", "down", "every TSA is failing (circuits open)", data)

    return check


async def _open_trust(
    stack: AsyncExitStack,
    settings: Settings,
    paths: Paths,
    http: aiohttp.ClientSession,
    metrics: Metrics,
    sandbox: SandboxPKI | None,
) -> TrustServices:
    """The trust layer; in sandbox mode its roots are trusted and its TSA used."""
    opening = open_trust(
        settings.trust,
        session=http,
        data_dir=paths.data_dir,
        extra_anchor_files=[sandbox.roots_pem] if sandbox is not None else [],
        default_tsa_url=sandbox.tsa_url if sandbox is not None else None,
        # The sandbox publishes its own signed trusted lists (sidecar.sandbox.lists).
        list_policy=_sandbox_list_policy(sandbox),
        # Every TSA/OCSP/CRL exchange feeds sidecar_upstream_* on /metrics.
        on_exchange=metrics.upstream_done,  # type: ignore[arg-type]
    )
    try:
        return await stack.enter_async_context(opening)
    except (ValueError, AnchorError) as exc:
        # A start-up refusal with file, key and reason, like any configuration error.
        raise ConfigError(settings.source, "trust", str(exc)) from None


def _open_pdf(settings: Settings, trust: TrustServices) -> tuple[ProfileRegistry, PadesEngine]:
    """The form profiles; the PAdES engine over the trust layer and the PDF workers."""
    signing = settings.signing
    try:
        profiles = ProfileRegistry.load([BUNDLED_PROFILE_DIR, *signing.profile_dirs])
    except ProfileError as exc:
        raise ConfigError(settings.source, "signing.profile_dirs", str(exc)) from None
    inspector = PdfInspector(
        PdfLimits(
            max_objects=signing.pdf_max_objects,
            timeout=signing.pdf_parse_timeout,
            worker_memory=signing.pdf_worker_memory,
            workers=signing.pdf_workers,
            verify_timeout=signing.verify_timeout,
            idle_exit=signing.worker_idle_exit,
        )
    )
    pades = PadesEngine(
        inspector=inspector,
        timestamper=trust.tsa.timestamper(),
        # B-LT/B-LTA embed the trust layer's checked data (no per-signature re-validation).
        validation_data=TrustValidationDataSource(trust.revocation),
    )
    _signing_log.info(
        "signing: %d profile(s): %s", len(profiles), ", ".join(p.name for p in profiles)
    )
    return profiles, pades


@contextlib.asynccontextmanager
async def _drafting_workers(
    settings: Settings, health_checks: list[tuple[str, HealthCheck]], shared: WorkerPool
) -> AsyncIterator[tuple[DraftingWorkers, Callable[[], None]]]:
    """The XAdES drafting workers (``[signing] xml_workers``), started in the background;
    with the step that bounds the drafts under way once the host begins to stop.

    They are a kind of step on *shared*, the PDF steps' processes (fewer processes: a
    practice PC's memory), the pool grown to ``xml_workers`` if that is more; the PDF
    inspector closes the processes."""
    signing = settings.signing
    count = _worker_count(signing)
    if count == 0:
        yield DraftingWorkers(), lambda: None
        return
    pool = shared_or_own(
        shared,
        "XAdES",
        workers=count,
        deadline=signing.xml_draft_timeout,
        per_client=signing.xml_workers_per_client or max(1, count - 1),
        # A draft waits for a worker no longer than a worker may take over one.
        queue_timeout=signing.xml_draft_timeout,
        idle_exit=signing.worker_idle_exit,
    )
    # Not awaited: the processes start from threads (the forkserver's imports take a
    # second or more) while the daemon becomes ready; a draft meanwhile waits for the
    # first worker.
    starting = asyncio.ensure_future(pool.start())
    # On SIGTERM, aiohttp waits the shutdown timeout for requests under way, then as
    # long again for them to end: a stuck draft would hold it both times. Drafts get
    # the timeout less 2 s (the rest of the cleanup and the interpreter's own exit take
    # about 1 s), then their workers are killed and their callers answered 503.
    grace = settings.server.shutdown_timeout
    grace = max(grace / 2, grace - 2.0)
    health_checks.append(("xml-workers", pool_check(pool, "xml-workers")))
    _signing_log.info(
        "XAdES: %d drafting worker process(es), at most %d per client", count, pool.per_client
    )
    try:
        yield DraftingWorkers(pool, starting), lambda: pool.stop_after(grace)
    finally:
        try:
            await starting
        except Exception as exc:  # drafts went to threads all along
            _signing_log.warning("XAdES: the drafting workers did not start: %s", exc)
        pool.close()


@contextlib.asynccontextmanager
async def _batches() -> AsyncIterator[BatchStore]:
    """The daemon's batches; running ones end (PINs wiped) when it stops.

    Operations may now hold a PIN in memory: no core file may carry it to disk."""
    forbid_core_dumps()
    store = BatchStore()
    try:
        yield store
    finally:
        await store.close()


def _watch_certificates(metrics: Metrics, registry: KeyRegistry) -> None:
    """Signing certificates' expiry on /metrics, read when scraped."""

    def certificates() -> list[CertificateExpiry]:
        return [
            CertificateExpiry(info.id, "signer", info.not_after)
            for info in registry.describe()
            if info.not_after is not None
        ]

    metrics.watch_certificates(certificates)


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings,
    paths: Paths,
    *,
    sandbox_pki: SandboxPKI | None = None,
    sandbox_dir: Path | None = None,
    metrics: Metrics | None = None,
    health_checks: list[tuple[str, HealthCheck]] | None = None,
    cns: bool = False,
) -> AsyncIterator[Services]:
    """Build the services in dependency order; close them in reverse on exit.

    *sandbox_pki*: a sandbox already served (the test suite's, or a running
    ``serve --sandbox`` the CLI found); *sandbox_dir*: generate and serve the sandbox
    here (``serve --sandbox``). *metrics* and *health_checks* may be the host's own
    (the application's middleware counts into the same metrics); new ones otherwise.
    *cns*: open the CNS forwarding too (the daemon; ``sidecar sign`` has no use for it).
    Raises :class:`~sidecar.config.ConfigError` for an unusable configuration.
    """
    metrics = metrics if metrics is not None else Metrics()
    checks: list[tuple[str, HealthCheck]] = health_checks if health_checks is not None else []
    checks.append(("errors", _errors_check(metrics)))
    try:
        base_xades = xades_options(settings.signing)
    except ValueError as exc:
        raise ConfigError(settings.source, "signing", str(exc)) from None
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(_http_session())
        if sandbox_pki is None and sandbox_dir is not None:
            sandbox_pki = await stack.enter_async_context(
                _served_sandbox(settings, sandbox_dir, http, checks)
            )
        # The journal follows the outbox's store (a PostgreSQL outbox: the same database).
        journal = open_journal(paths.data_dir / AUDIT_FILE, settings.cns.outbox)
        stack.callback(journal.close)
        registry = await _open_keys(settings, sandbox_pki, checks)
        stack.push_async_callback(registry.close)
        trust = await _open_trust(stack, settings, paths, http, metrics, sandbox_pki)
        checks.append(("tsa", _tsa_check(trust)))
        if trust.lists is not None:
            checks.append(("trusted-lists", trusted_lists_check(trust, registry)))
        profiles, pades = _open_pdf(settings, trust)
        stack.callback(pades.inspector.close)
        workers, stop_drafting = await stack.enter_async_context(
            _drafting_workers(settings, checks, pades.inspector.workers)
        )
        batches = await stack.enter_async_context(_batches())
        services = Services(
            settings=settings,
            paths=paths,
            http=http,
            metrics=metrics,
            journal=journal,
            keys=registry,
            trust=trust,
            profiles=profiles,
            pades=pades,
            xades=base_xades,
            xml_workers=workers,
            batches=batches,
            health_checks=checks,
            sandbox_pki=sandbox_pki,
        )
        services._on_shutdown.append(stop_drafting)
        _watch_certificates(metrics, registry)
        if cns:
            # The CNS forwarding last: its deposits sign with the services above.
            services.cns = await stack.enter_async_context(
                open_cns(
                    settings,
                    paths,
                    http=http,
                    journal=journal,
                    metrics=metrics,
                    health_checks=checks,
                    profiles=profiles,
                    sandbox_pki=sandbox_pki,
                    # ``serve --sandbox`` binds the sandbox's CNS port; a sandbox handed
                    # in (the test suite's) gets a free one, so that runs never collide.
                    simulator_port=sandbox_pki.cns_port
                    if sandbox_pki is not None and sandbox_dir is not None
                    else 0,
                    sign_fee_note=fee_note_seam(services),
                    upgrade_fee_note=timestamp_upgrader(trust),
                )
            )
        yield services
