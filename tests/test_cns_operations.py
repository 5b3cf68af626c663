"""The CNS operations with no web application: :func:`open_cns` takes its services as
arguments, the operations take plain values, and nothing under ``sidecar/cns/`` reaches
up into the API (or serves HTTP, but for the simulator, the CNS's own stand-in)."""

from __future__ import annotations

import ast
import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest

from sidecar.audit import AuditJournal
from sidecar.cns.outbox import DuplicateUuid, Status
from sidecar.cns.subsystem import open_cns
from sidecar.health import HealthCheck
from sidecar.metrics import Metrics
from sidecar.operations.cns import (
    Caller,
    CnsNotConfigured,
    UnsignedDocument,
    deposit_fee_note,
    list_messages,
    message_status,
)
from sidecar.paths import Paths
from sidecar.signing.report import Level
from tests.fixtures.cns import FeeNotes, SimulatorThread, cns_settings, fee_note_xml

CNS_PACKAGE = Path(__file__).resolve().parents[1] / "sidecar" / "cns"


def imported_modules(source: Path) -> set[str]:
    """Every module *source* imports, relative imports resolved from ``sidecar.cns``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ["sidecar", "cns"][: 3 - node.level] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_nothing_under_cns_imports_the_api_or_aiohttp_web() -> None:
    sources = sorted(CNS_PACKAGE.glob("*.py"))
    assert len(sources) > 5
    for source in sources:
        modules = imported_modules(source)
        assert not {m for m in modules if m.startswith("sidecar.api")}, source.name
        if source.name != "simulator.py":  # the CNS's stand-in is a server of its own
            assert "aiohttp.web" not in modules, source.name


async def test_deposit_without_an_app(
    tmp_path: Path, cns_simulator: SimulatorThread, fee_notes: FeeNotes
) -> None:
    paths = Paths(config_dir=tmp_path, data_dir=tmp_path, log_dir=tmp_path / "logs")
    metrics = Metrics(process=False)
    checks: list[tuple[str, HealthCheck]] = []
    alice, bob = Caller("alice"), Caller("bob")
    async with (
        aiohttp.ClientSession() as http,
        open_cns(
            cns_settings(cns_simulator.url),
            paths,
            http=http,
            journal=None,
            metrics=metrics,
            health_checks=checks,
        ) as runtime,
    ):
        assert [name for name, _ in checks] == ["cns", "outbox", "storage"]
        note_uuid, body = fee_notes.make()
        accepted = await deposit_fee_note(runtime, body, alice)
        assert accepted.created and accepted.message.id == note_uuid
        assert accepted.message.level == Level.B_B.value  # plain XMLDSig: no XAdES properties
        again = await deposit_fee_note(runtime, body, alice)
        assert not again.created and again.message.id == note_uuid
        with pytest.raises(DuplicateUuid):  # the same body, another client's
            await deposit_fee_note(runtime, body, bob)
        # No signer was handed in: an unsigned note is refused, nothing is queued.
        unsigned = str(uuid.uuid4())
        with pytest.raises(UnsignedDocument):
            await deposit_fee_note(runtime, fee_note_xml(unsigned), alice)
        assert await message_status(runtime, unsigned, alice) is None

        # In a thread: the delivery worker it waits for runs on this test's loop.
        await asyncio.to_thread(cns_simulator.wait_for, lambda s: s.booking_counts[note_uuid] == 1)
        for _ in range(200):  # bounded: 10 s at most
            message = await message_status(runtime, note_uuid, alice)
            if message is not None and message.status == Status.DELIVERED:
                break
            await asyncio.sleep(0.05)
        assert message is not None and message.status == Status.DELIVERED
        assert await message_status(runtime, note_uuid, bob) is None
        assert [m.id for m in await list_messages(runtime, Caller(admin=True))] == [note_uuid]
        queued = metrics.registry.get_sample_value(
            "sidecar_cns_messages_total", {"operation": "deposit", "result": "queued"}
        )
        assert queued == 1
    # open_cns opened the data directory's journal itself (none was handed in).
    journal = AuditJournal(tmp_path / "audit.sqlite3")
    try:
        assert any(entry.uuid == note_uuid for entry in journal.entries())
        assert journal.verify().ok
    finally:
        journal.close()


async def test_no_cns_endpoint_is_refused_before_anything(tmp_path: Path) -> None:
    paths = Paths(config_dir=tmp_path, data_dir=tmp_path, log_dir=tmp_path / "logs")
    settings = cns_settings("")
    async with (
        aiohttp.ClientSession() as http,
        open_cns(
            settings, paths, http=http, journal=None, metrics=None, health_checks=[]
        ) as runtime,
    ):
        assert runtime.transport is None and runtime.worker is None
        with pytest.raises(CnsNotConfigured, match="no CNS endpoint is configured"):
            await deposit_fee_note(runtime, b"not even XML", Caller())
