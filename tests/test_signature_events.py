"""Every signature made is one event: one audit-journal entry, one metrics increment.

Through each signing route (XML, PDF, form, batch) and the CLI's ``sign`` (one file,
and several as a batch): each signature adds exactly one ``sign.*`` journal entry (a
form's two signatures share its one entry) and one ``sidecar_signatures`` increment per
signature; a refused document adds neither.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from sidecar.api.appkeys import SERVICES
from sidecar.audit import AuditEntry
from sidecar.batch import SignRequest, sign_with
from sidecar.config import SandboxSettings, Settings
from sidecar.operations import Services, open_services
from sidecar.sandbox import SandboxPKI
from sidecar.signing.profiles import BUNDLED_PROFILE_DIR
from tests.fixtures.daemon import Api, make_paths

SAMPLES = BUNDLED_PROFILE_DIR / "samples"
FEE_NOTE_XML = (SAMPLES / "fee-note.xml").read_bytes()
SETTINGS = Settings(sandbox=SandboxSettings(softhsm=False))
SIGNATURES = [(f, lv) for f in ("xades", "pades") for lv in ("B-B", "B-T", "B-LT", "B-LTA")]


class Tally:
    """What the journal and the metrics of *services* gained since the last look."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.seen = self._entries()
        self.counts = self._counts()

    def _entries(self) -> list[AuditEntry]:
        return [e for e in self.services.journal.entries() if e.operation.startswith("sign.")]

    def _counts(self) -> dict[tuple[str, str], float]:
        registry = self.services.metrics.registry
        return {
            (f, lv): registry.get_sample_value(
                "sidecar_signatures_total", {"format": f, "level": lv}
            )
            or 0.0
            for f, lv in SIGNATURES
        }

    def since(self) -> tuple[list[AuditEntry], dict[tuple[str, str], float]]:
        """New ``sign.*`` entries and the counters that moved (by how much)."""
        entries, counts = self._entries(), self._counts()
        new = entries[len(self.seen) :]
        moved = {k: counts[k] - self.counts[k] for k in counts if counts[k] != self.counts[k]}
        self.seen, self.counts = entries, counts
        return new, moved


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def test_each_signing_route_makes_one_event_per_signature(
    api_factory: Callable[..., Awaitable[Api]], sandbox_services: SandboxPKI, fee_note_pdf: bytes
) -> None:
    api = await api_factory(SETTINGS, sandbox_pki=sandbox_services)
    tally = Tally(api.client.app[SERVICES])
    auth = api.auth("signer")

    response = await api.client.post(
        "/v1/xml/sign?level=B-B",
        data=b"<a><b>1</b></a>",
        headers={**auth, "Content-Type": "application/xml"},
    )
    assert response.status == 200, await response.text()
    signed_xml = await response.read()
    (entry,), moved = tally.since()
    assert (entry.operation, entry.level, entry.key_id, entry.client) == (
        "sign.xml",
        "B-B",
        "sandbox-rsa",
        "signer",
    )
    assert moved == {("xades", "B-B"): 1}
    assert entry.detail["signatures"] == {"xades": "B-B"}
    assert entry.digest == hashlib.sha256(signed_xml).hexdigest()

    response = await api.client.post(
        "/v1/pdf/sign?level=B-T",
        data=fee_note_pdf,
        headers={**auth, "Content-Type": "application/pdf"},
    )
    assert response.status == 200, await response.text()
    (entry,), moved = tally.since()
    assert (entry.operation, entry.level) == ("sign.pdf", "B-T")
    assert moved == {("pades", "B-T"): 1}

    form = aiohttp.FormData()
    form.add_field("xml", FEE_NOTE_XML, filename="f.xml", content_type="application/xml")
    form.add_field("pdf", fee_note_pdf, filename="f.pdf", content_type="application/pdf")
    response = await api.client.post("/v1/forms/fee-note/sign", data=form, headers=auth)
    assert response.status == 200, await response.text()
    (entry,), moved = tally.since()
    # One form, one entry; its two signatures counted once each.
    assert (entry.operation, entry.level, entry.uuid) == (
        "sign.fee-note",
        "B-LT",
        response.headers["X-Form-UUID"],
    )
    assert moved == {("xades", "B-LT"): 1, ("pades", "B-B"): 1}

    # A refused document: no event at all.
    response = await api.client.post(
        "/v1/xml/sign?level=B-B",
        data=b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>',
        headers={**auth, "Content-Type": "application/xml"},
    )
    assert response.status == 422
    assert tally.since() == ([], {})

    documents: list[dict[str, Any]] = [
        {"name": "x", "kind": "xml", "level": "B-B", "xml": _b64(b"<c>2</c>")},
        {"name": "p", "kind": "pdf", "level": "B-B", "pdf": _b64(fee_note_pdf)},
        {"name": "bad", "kind": "xml", "xml": _b64(b"<unclosed>")},
    ]
    response = await api.client.post("/v1/batches", json={"documents": documents}, headers=auth)
    assert response.status == 202, await response.text()
    location = response.headers["Location"]
    deadline = time.monotonic() + 120
    while (summary := await (await api.client.get(location, headers=auth)).json())[
        "state"
    ] == "running":
        assert time.monotonic() < deadline, summary
        await asyncio.sleep(0.1)
    assert [d["state"] for d in summary["documents"]] == ["signed", "signed", "failed"]
    entries, moved = tally.since()
    assert sorted((e.operation, e.level, e.client) for e in entries) == [
        ("sign.pdf", "B-B", "signer"),
        ("sign.xml", "B-B", "signer"),
    ]
    assert moved == {("xades", "B-B"): 1, ("pades", "B-B"): 1}
    assert api.client.app[SERVICES].journal.verify().ok


async def test_cli_sign_makes_one_event_per_file(
    sandbox_services: SandboxPKI, fee_note_pdf: bytes, tmp_path: Path
) -> None:
    """``sidecar sign``'s own path (sidecar.batch.sign_with), one file and then a folder's
    worth as one batch, on services opened as the CLI opens them."""
    one = tmp_path / "one.xml"
    one.write_bytes(b"<a>1</a>")
    many = [tmp_path / "two.xml", tmp_path / "three.pdf", tmp_path / "broken.xml"]
    many[0].write_bytes(b"<a>2</a>")
    many[1].write_bytes(fee_note_pdf)
    many[2].write_bytes(b"<unclosed>")
    paths = make_paths(tmp_path / "home")
    async with open_services(SETTINGS, paths, sandbox_pki=sandbox_services) as services:
        tally = Tally(services)
        out = io.StringIO()
        status = await sign_with(services, [one], SignRequest(level="B-B"), output=None, out=out)
        assert status == 0, out.getvalue()
        (entry,), moved = tally.since()
        assert (entry.operation, entry.level, entry.client) == ("sign.xml", "B-B", "cli")
        assert moved == {("xades", "B-B"): 1}

        status = await sign_with(services, many, SignRequest(level="B-T"), output=None, out=out)
        assert status == 1 and "malformed_xml" in out.getvalue(), out.getvalue()
        entries, moved = tally.since()
        assert sorted((e.operation, e.level) for e in entries) == [
            ("sign.pdf", "B-T"),
            ("sign.xml", "B-T"),
        ]
        assert moved == {("xades", "B-T"): 1, ("pades", "B-T"): 1}
    assert (tmp_path / "one.signed.xml").exists() and not (tmp_path / "broken.signed.xml").exists()
