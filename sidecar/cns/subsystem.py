"""The CNS forwarding subsystem: what it holds, its seams and its lifecycle.

:func:`open_cns` (entered after keys, trust and signing) opens the audit journal
(unless it is handed one), the outbox, builds the transport for the configured
environment, starts the delivery worker and registers the health checks. In sandbox
mode with no sandbox URL configured, it serves the CNS simulator on loopback from the
same process and points the transport at it. It knows no web application: every
service it uses is an argument (the API's adapter, :func:`sidecar.api.cns.cns_context`,
reads them from the app).

Seams the signing work plugs into (arguments of :func:`open_cns`):

- ``sign_fee_note`` (:data:`FeeNoteSigner`): ``async (xml) -> SignedFeeNote``, signs
  an unsigned fee note with the ``fee-note`` profile's recipe and the default key (in
  offline mode at B-B when the TSA or the revocation data cannot be had). ``None`` (no
  key, no profile): an unsigned deposit is refused (422 ``unsigned_document``), never
  signed with something fake.
- ``upgrade_fee_note`` (:data:`~sidecar.cns.worker.Upgrader`): ``async (xml) ->
  (xml, level)``, adds the timestamp and validation data to a B-B fee note held
  ``awaiting_timestamp`` (offline mode, ``cns.defer_timestamp``); raises
  :class:`~sidecar.cns.worker.TimestampUnavailable` while the TSA is down.

In sandbox mode the served simulator checks what the CNS would: the ``fee-note``
profile's XSD (or ``cns.simulator_xsd``), the UUID where the daemon's
:class:`~sidecar.cns.documents.MessageRule` says it is, and the XAdES signature with
our verifier, the sandbox's roots, at least B-LT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import aiohttp
from lxml import etree

from ..audit import AuditJournal, open_journal
from ..config import CnsSettings, ConfigError, Settings
from ..health import CheckResult, HealthCheck, Status
from ..metrics import Metrics, OutboxStats
from ..paths import Paths
from ..ports import bind_error
from ..sandbox.pki import SandboxError, SandboxPKI
from ..signing.profiles import Profile
from ..storage import StorageUnavailable, disk_space
from .commands import audit_path, outbox_path
from .documents import DocumentError, MessageRule
from .journal_feed import JournalFeed
from .outbox import Outbox, open_outbox
from .simulator import SANDBOX_KEPT_BOOKINGS, CnsSimulator, serve_simulator, xades_verifier
from .transport import CnsConfigError, CnsTransport, CnsTransportError, resolve_base_url
from .worker import DeliveryWorker, Upgrader

__all__ = [
    "CnsRuntime",
    "FeeNoteSigner",
    "SignedFeeNote",
    "open_cns",
]

log = logging.getLogger("sidecar.cns")


@dataclass(frozen=True)
class SignedFeeNote:
    """A fee note the daemon signed itself, and what with."""

    xml: bytes
    #: The XAdES level reached (``B-LT``; ``B-B`` in offline mode with the TSA down).
    level: str
    key_id: str
    #: The embedded PDF's PAdES level, if the profile has a PDF.
    pdf_level: str | None = None


FeeNoteSigner = Callable[[bytes], Awaitable[SignedFeeNote]]

#: Outbox age past which the health check says ``degraded``.
STALE_SECONDS = 3600.0


@dataclass
class CnsRuntime:
    """What the CNS operations need; ``transport``/``worker`` are None with no CNS URL."""

    outbox: Outbox
    journal: AuditJournal
    transport: CnsTransport | None
    worker: DeliveryWorker | None
    settings: CnsSettings = field(default_factory=CnsSettings)
    #: Where a message's UUID is and which level it needs.
    rule: MessageRule = field(default_factory=MessageRule)
    metrics: Metrics | None = None
    sign_fee_note: FeeNoteSigner | None = None
    upgrade_fee_note: Upgrader | None = None
    simulator: CnsSimulator | None = None
    simulator_url: str | None = None
    #: Why there is no transport, for the answers and the health check.
    unavailable: str = ""
    _deposit_locks: dict[str, tuple[asyncio.Lock, list[int]]] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def deposit_lock(self, uuid: str) -> AsyncIterator[None]:
        """One deposit of a given UUID at a time (in this process): two posts of the
        same unsigned fee note must not both be signed."""
        lock, users = self._deposit_locks.setdefault(uuid, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._deposit_locks[uuid]


@contextlib.asynccontextmanager
async def open_cns(
    settings: Settings,
    paths: Paths,
    *,
    http: aiohttp.ClientSession,
    journal: AuditJournal | None,
    metrics: Metrics | None,
    health_checks: list[tuple[str, HealthCheck]],
    profiles: Iterable[Profile] = (),
    sandbox_pki: SandboxPKI | None = None,
    simulator_port: int = 0,
    sign_fee_note: FeeNoteSigner | None = None,
    upgrade_fee_note: Upgrader | None = None,
) -> AsyncIterator[CnsRuntime]:
    """The CNS forwarding, running until the context exits.

    *journal*: the audit journal to write to (``None``: open the data directory's own,
    and close it on exit). *health_checks*: the daemon's list, which this appends its
    checks to. *profiles*: the forms whose documents go to the CNS (they say where a
    message's UUID is and which level it needs; the ``fee-note`` one's XSD is what the
    sandbox simulator checks). *simulator_port*: where the sandbox's simulator listens
    (0: a free port, so that tests never collide).
    """
    cns = settings.cns
    profiles = tuple(profiles)
    own_journal = journal is None
    # The journal follows the outbox's store (a PostgreSQL outbox: the same database).
    audit = open_journal(audit_path(paths), cns.outbox) if journal is None else journal
    outbox = open_outbox(outbox_path(settings, paths), local_dir=paths.data_dir, settings=cns)
    runtime = CnsRuntime(
        outbox,
        audit,
        None,
        None,
        settings=cns,
        rule=MessageRule.of(cns.uuid_xpath, profiles),
        metrics=metrics,
        sign_fee_note=sign_fee_note,
        upgrade_fee_note=upgrade_fee_note,
    )
    feed = JournalFeed(outbox, audit)
    simulator_server = None
    try:
        await feed.start()
        sandbox_url = None
        if sandbox_pki is not None and cns.environment == "sandbox" and not cns.base_urls.sandbox:
            fee_note = next((p for p in profiles if p.name == "fee-note"), None)
            runtime.simulator = CnsSimulator(
                xsd=cns.simulator_xsd or (fee_note.xsd if fee_note is not None else None),
                verifier=xades_verifier(sandbox_pki.roots_pem),
                uuid_reader=_uuid_reader(runtime.rule),
                kept_bookings=SANDBOX_KEPT_BOOKINGS,
            )
            serving = serve_simulator(runtime.simulator, sandbox_pki.host, simulator_port)
            try:
                sandbox_url = runtime.simulator_url = await serving.__aenter__()
            except OSError as exc:
                raise SandboxError(
                    f"cannot serve the sandbox CNS simulator on {sandbox_pki.host}:"
                    f"{simulator_port}: {bind_error(exc)}: stop what holds it, or set "
                    "[sandbox] cns_port in sidecar.toml to a free port"
                ) from None
            simulator_server = serving
            log.info("CNS simulator at %s", sandbox_url)
        try:
            base_url = resolve_base_url(cns, sandbox_url)
        except CnsConfigError as exc:
            runtime.unavailable = str(exc)
            log.warning("CNS forwarding disabled: %s", exc)
        else:
            try:
                runtime.transport = CnsTransport(cns, base_url, http, metrics=metrics)
            except CnsConfigError as exc:
                raise ConfigError(settings.source, "cns", str(exc)) from None
            runtime.worker = DeliveryWorker(
                outbox,
                runtime.transport,
                cns,
                upgrader=upgrade_fee_note,
                metrics=metrics,
            )
            await runtime.worker.start()
            log.info("CNS forwarding to %s (%s)", base_url, cns.environment)
        if metrics is not None and not metrics.watches("outbox"):
            metrics.watch_outbox(_outbox_stats(outbox))
        health_checks.append(("cns", _reachability(runtime)))
        health_checks.append(("outbox", _outbox_check(outbox)))
        health_checks.append(("storage", _storage_check(outbox, audit)))
        yield runtime
    finally:
        if runtime.worker is not None:
            await runtime.worker.stop()
        await feed.stop()
        if simulator_server is not None:
            await simulator_server.__aexit__(None, None, None)
        outbox.close()
        if own_journal:
            audit.close()


def _outbox_stats(outbox: Outbox) -> Callable[[], Awaitable[OutboxStats]]:
    """The outbox's state for ``/metrics``, read when scraped."""

    async def stats() -> OutboxStats:
        counts = await outbox.run(outbox.counts)
        _, oldest = await outbox.run(outbox.depth)
        age = max(0.0, time.time() - oldest) if oldest is not None else None
        return OutboxStats(counts, age)

    return stats


def _uuid_reader(rule: MessageRule) -> Callable[[etree._Element], str | None]:
    """The simulator finds a fee note's UUID where the daemon does (the CNS knows its
    own schema as the operator's configuration describes it)."""

    def read(root: etree._Element) -> str | None:
        try:
            return rule.uuid_of(root)
        except DocumentError:
            return None

    return read


def _reachability(runtime: CnsRuntime) -> Callable[[], Awaitable[CheckResult]]:
    async def check() -> CheckResult:
        if runtime.transport is None:
            return CheckResult("cns", "degraded", f"not configured: {runtime.unavailable}")
        worker = runtime.worker
        try:
            answer = await runtime.transport.probe()
        except CnsTransportError as exc:
            paused = ""
            if worker is not None and worker.outage_since is not None:
                down = time.time() - worker.outage_since
                paused = f"; deliveries paused for {down:.0f} s, resumed when it answers"
            return CheckResult("cns", "degraded", f"unreachable: {exc}{paused}")
        status: Status = "ok" if answer.status < 500 else "degraded"
        return CheckResult("cns", status, f"{runtime.transport.base_url} answered {answer.status}")

    return check


def _outbox_check(outbox: Outbox) -> Callable[[], Awaitable[CheckResult]]:
    async def check() -> CheckResult:
        depth, oldest = await outbox.run(outbox.depth)
        counts = await outbox.run(outbox.counts)
        age = round(time.time() - oldest, 1) if oldest is not None else 0.0
        failed = counts.get("failed", 0)
        unknown = counts.get("unknown", 0)
        data = {"depth": depth, "oldest_pending_seconds": age, "failed": failed}
        if unknown:
            data["unknown"] = unknown
        if failed or unknown or age > STALE_SECONDS:
            detail = f"{depth} pending, oldest {age:.0f} s, {failed} failed"
            if unknown:
                detail += (
                    f", {unknown} unknown (the CNS may have booked them: do not send them "
                    "again under a new UUID)"
                )
            return CheckResult("outbox", "degraded", detail, data)
        return CheckResult("outbox", "ok", f"{depth} pending", data)

    return check


def _storage_check(outbox: Outbox, journal: AuditJournal) -> Callable[[], Awaitable[CheckResult]]:
    """``storage``: degraded while the outbox or the journal cannot write, or the disk
    is short. A store that failed is probed with a real write, so that the check says
    ok again once the disk takes writes, without waiting for the next deposit."""

    async def check() -> CheckResult:
        if outbox.health.failure is not None:
            with contextlib.suppress(StorageUnavailable):
                await outbox.run(outbox.probe)
        if journal.health.failure is not None:
            with contextlib.suppress(StorageUnavailable):
                await asyncio.to_thread(journal.probe)
        problems = [
            f"{health.failure} (for {time.time() - (health.failing_since or time.time()):.0f} s)"
            for health in (outbox.health, journal.health)
            if health.failure is not None
        ]
        space = await asyncio.to_thread(disk_space, outbox.path.parent)
        # No free-space figure in the data: it moves with every write on the machine,
        # and the status page shows each figure as it was read.
        data = {"outcomes_held_in_memory": outbox.unrecorded}
        if space.short:
            problems.append(f"the disk is short: {space.free // 1024} KiB free")
        if problems:
            return CheckResult("storage", "degraded", "; ".join(problems), data)
        return CheckResult("storage", "ok", "the outbox and the audit journal can write", data)

    return check
