"""The CNS forwarding subsystem in the daemon: its app keys, seams and lifecycle.

:func:`cns_context` (in ``SUBSYSTEMS``, after keys, trust and signing) opens the audit
journal (unless a subsystem before it did), the outbox, builds the transport for the
configured environment, starts the delivery worker and registers the health checks.
In sandbox mode with no sandbox URL configured, it serves the CNS simulator on
loopback from the same process and points the transport at it.

Seams the signing work plugs into (set them in a context that runs before this one):

- :data:`SIGN_FEE_NOTE`: ``async (xml) -> SignedFeeNote``, signs an unsigned fee
  note with the ``fee-note`` profile's recipe and the default key (in offline mode
  at B-B when the TSA or the revocation data cannot be had). Absent (no key, no
  profile): an unsigned deposit is refused (422 ``unsigned_document``), never
  signed with something fake. Set by :func:`sidecar.api.cns.fee_note_context`.
- :data:`FEE_NOTE_UPGRADER`: ``async (xml) -> (xml, level)``, adds the timestamp and
  validation data to a B-B fee note held ``awaiting_timestamp`` (offline mode,
  ``cns.defer_timestamp``); raises :class:`~sidecar.cns.worker.TimestampUnavailable`
  while the TSA is down.
- :data:`AUDIT_JOURNAL`: the journal every signature and delivery is written to.

In sandbox mode the served simulator checks what the CNS would: the ``fee-note``
profile's XSD (or ``cns.simulator_xsd``) and the XAdES signature with our verifier,
the sandbox's roots, at least B-LT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from ..api.appkeys import HEALTH_CHECKS, HTTP_SESSION, PATHS, SANDBOX_PKI, SETTINGS
from ..api.observe import METRICS
from ..audit import AuditJournal
from ..config import ConfigError
from ..health import CheckResult, Status
from ..ports import bind_error
from ..sandbox.pki import SandboxError
from ..storage import StorageUnavailable, disk_space
from .commands import audit_path
from .journal_feed import JournalFeed
from .outbox import Outbox
from .simulator import CnsSimulator, serve_simulator, xades_verifier
from .transport import CnsConfigError, CnsTransport, CnsTransportError, resolve_base_url
from .worker import DeliveryWorker, Upgrader

__all__ = [
    "AUDIT_JOURNAL",
    "CNS",
    "FEE_NOTE_UPGRADER",
    "SIGN_FEE_NOTE",
    "CnsRuntime",
    "FeeNoteSigner",
    "SignedFeeNote",
    "cns_context",
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
    """What the CNS handlers need; ``transport``/``worker`` are None with no CNS URL."""

    outbox: Outbox
    transport: CnsTransport | None
    worker: DeliveryWorker | None
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


CNS = web.AppKey("cns", CnsRuntime)
AUDIT_JOURNAL = web.AppKey("audit_journal", AuditJournal)
SIGN_FEE_NOTE = web.AppKey[FeeNoteSigner]("sign_fee_note")
FEE_NOTE_UPGRADER = web.AppKey[Upgrader]("fee_note_upgrader")


def _in_served_sandbox(app: web.Application) -> bool:
    # ``serve --sandbox`` (the app generates its sandbox) binds the sandbox's port; a
    # sandbox handed in by the test suite gets a free port, so that tests never collide.
    from ..api.app import SANDBOX_DIR  # the app module imports this one

    return SANDBOX_DIR in app


async def cns_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    cns = settings.cns
    data_dir: Path = app[PATHS].data_dir
    own_journal = AUDIT_JOURNAL not in app
    journal = AuditJournal(audit_path(app[PATHS])) if own_journal else app[AUDIT_JOURNAL]
    if own_journal:
        app[AUDIT_JOURNAL] = journal
    outbox = Outbox(cns.outbox or data_dir / "outbox.sqlite3")
    runtime = CnsRuntime(outbox, None, None)
    app[CNS] = runtime
    feed = JournalFeed(outbox, journal)
    simulator_server = None
    try:
        await feed.start()
        sandbox_url = None
        pki = app.get(SANDBOX_PKI)
        if pki is not None and cns.environment == "sandbox" and not cns.base_urls.sandbox:
            runtime.simulator = CnsSimulator(
                xsd=cns.simulator_xsd or _fee_note_xsd(app),
                verifier=xades_verifier(pki.roots_pem),
            )
            port = pki.cns_port if _in_served_sandbox(app) else 0
            serving = serve_simulator(runtime.simulator, pki.host, port)
            try:
                sandbox_url = runtime.simulator_url = await serving.__aenter__()
            except OSError as exc:
                raise SandboxError(
                    f"cannot serve the sandbox CNS simulator on {pki.host}:{port}: "
                    f"{bind_error(exc)}: stop what holds it, or set [sandbox] cns_port "
                    "in sidecar.toml to a free port"
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
                runtime.transport = CnsTransport(
                    cns, base_url, app[HTTP_SESSION], metrics=app.get(METRICS)
                )
            except CnsConfigError as exc:
                raise ConfigError(settings.source, "cns", str(exc)) from None
            runtime.worker = DeliveryWorker(
                outbox,
                runtime.transport,
                cns,
                upgrader=app.get(FEE_NOTE_UPGRADER),
                metrics=app.get(METRICS),
            )
            await runtime.worker.start()
            log.info("CNS forwarding to %s (%s)", base_url, cns.environment)
        app[HEALTH_CHECKS].append(("cns", _reachability(runtime)))
        app[HEALTH_CHECKS].append(("outbox", _outbox_check(outbox)))
        app[HEALTH_CHECKS].append(("storage", _storage_check(outbox, journal)))
        yield
    finally:
        if runtime.worker is not None:
            await runtime.worker.stop()
        await feed.stop()
        if simulator_server is not None:
            await simulator_server.__aexit__(None, None, None)
        outbox.close()
        if own_journal:
            journal.close()


def _fee_note_xsd(app: web.Application) -> Path | None:
    from ..api.pdf import PROFILES  # the API package imports this module

    registry = app.get(PROFILES)
    profile = registry.get("fee-note") if registry is not None else None
    return profile.xsd if profile is not None else None


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
