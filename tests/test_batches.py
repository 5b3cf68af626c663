"""``/v1/batches``: a day's fee notes signed with one PIN on a CKA_ALWAYS_AUTHENTICATE key.

The 100-note batch is checked by every independent validator the suite uses: xadesjs
and xmlsec1 on all 100 XML signatures (one xadesjs process for all of them; xmlsec1 is
~20 ms a document), pdfsig on all 100 embedded PDFs (PAdES-B, as the fee-note profile
asks), and pyHanko offline
(no fetching, revocation data required) on the batch's stand-alone B-LT PDFs.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import x509 as asn1_x509
from pyhanko.sign.validation.status import PdfSignatureStatus

from sidecar.api.appkeys import SERVICES
from sidecar.config import SandboxSettings, Settings, SigningSettings
from sidecar.keys import KeyConfig
from sidecar.sandbox import SandboxPKI
from sidecar.signing.forms import embedded_pdf
from sidecar.signing.profiles import BUNDLED_PROFILE_DIR, ProfileRegistry
from sidecar.signing.xml_safety import parse_xml
from tests.fixtures.daemon import Api
from tests.fixtures.pades import pdfsig_report, pyhanko_offline
from tests.fixtures.qualified import qualified_key  # noqa: F401
from tests.fixtures.softhsm import MAIN_PIN, WRONG_PIN, SoftHsm
from tests.fixtures.xades import xadesjs_verify, xmlsec1_verify

SAMPLES = BUNDLED_PROFILE_DIR / "samples"
FEE_NOTE_XML = (SAMPLES / "fee-note.xml").read_bytes()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _fee_note(n: int, pdf: bytes) -> dict[str, Any]:
    return {
        "name": f"note-{n}",
        "kind": "form",
        "profile": "fee-note",
        "xml": _b64(FEE_NOTE_XML),
        "pdf": _b64(pdf),
    }


@pytest.fixture
def make_api(
    api_factory: Callable[..., Awaitable[Api]],
    sandbox_services: SandboxPKI,
    qualified_key: KeyConfig,  # noqa: F811
) -> Callable[..., Awaitable[Api]]:
    async def make(**signing: Any) -> Api:
        settings = Settings(
            sandbox=SandboxSettings(softhsm=False),
            keys=[qualified_key],
            signing=SigningSettings(**signing),
        )
        return await api_factory(settings, sandbox_pki=sandbox_services)

    return make


def _upstream_calls(api: Api) -> dict[str, float]:
    """Exchanges with each upstream so far (downloads, not cache hits), from the metrics."""
    registry = api.client.app[SERVICES].metrics.registry
    return {
        upstream: sum(
            registry.get_sample_value(
                "sidecar_upstream_requests_total", {"upstream": upstream, "outcome": outcome}
            )
            or 0.0
            for outcome in ("ok", "error", "unavailable", "timeout")
        )
        for upstream in ("tsa", "ocsp", "crl")
    }


async def _until_finished(api: Api, location: str, budget: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + budget
    while True:
        response = await api.client.get(location, headers=api.auth("signer"))
        assert response.status == 200
        summary = await response.json()
        if summary["state"] != "running":
            return summary
        assert time.monotonic() < deadline, summary
        await asyncio.sleep(0.2)


async def test_a_hundred_fee_notes_with_one_pin(
    make_api: Callable[..., Awaitable[Api]],
    fee_note_pdf: bytes,
    make_pdfa: Callable[..., bytes],
    sandbox_services: SandboxPKI,
    sandbox_roots: list[asn1_x509.Certificate],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = time.time() - 1
    caplog.set_level(logging.DEBUG)
    api = await make_api()
    documents = [_fee_note(n, fee_note_pdf) for n in range(100)]
    # One bad document in the middle, and two stand-alone PDFs at B-LT.
    documents.insert(40, {"name": "broken", "kind": "xml", "xml": _b64(b"<note>unclosed")})
    standalone = make_pdfa(["a report"])
    documents += [
        {"name": f"report-{n}", "kind": "pdf", "level": "B-LT", "pdf": _b64(standalone)}
        for n in range(2)
    ]
    signer = api.client.app[SERVICES].keys.get("qualified")
    logins_before = signer.context_logins  # type: ignore[attr-defined]
    calls_before = _upstream_calls(api)

    response = await api.client.post(
        "/v1/batches",
        json={"documents": documents},
        # The practice software reads French: a failed document's problem is French too.
        headers={**api.auth("signer"), "X-Sidecar-PIN": MAIN_PIN, "Accept-Language": "fr"},
    )
    assert response.status == 202, await response.text()
    answers = [await response.text()]
    location = response.headers["Location"]
    summary = await _until_finished(api, location)
    answers.append(str(summary))
    assert summary["state"] == "done"
    assert (summary["total"], summary["signed"], summary["failed"]) == (103, 102, 1)
    broken = summary["documents"][40]
    assert broken["name"] == "broken" and broken["state"] == "failed"
    assert broken["problem"]["code"] == "malformed_xml" and broken["problem"]["status"] == 400
    assert broken["problem"]["title"] == "Requête incorrecte"
    # Every signature went through its own context-specific login, with the one PIN.
    assert signer.context_logins - logins_before == 100 * 2 + 2  # type: ignore[attr-defined]
    # A timestamp per B-LT signature; the chain's revocation data fetched once, not per
    # document (the trust layer's cache; concurrent documents share one validation).
    calls = _upstream_calls(api)
    made = {name: calls[name] - calls_before[name] for name in calls}
    assert made["tsa"] >= 102, made
    assert made["ocsp"] + made["crl"] <= 6, made

    outputs: list[bytes] = []
    for entry in summary["documents"]:
        if entry["state"] != "signed":
            continue
        response = await api.client.get(entry["href"], headers=api.auth("signer"))
        assert response.status == 200
        outputs.append(await response.read())
        assert response.headers["X-Signature-Level"] == "B-LT"
    notes, reports = outputs[:100], outputs[100:]
    assert len({parse_xml(n).tree.findtext("{*}UUID") for n in notes}) == 100

    # XAdES core incl. SignedProperties and the B-LT properties: xadesjs, all 100.
    results = await asyncio.to_thread(xadesjs_verify, notes)
    for result in results:
        (signature,) = result["signatures"]
        assert signature["valid"] is True, signature
        assert {"SignatureTimeStamp", "CertificateValues", "RevocationValues"} <= set(
            signature["unsigned"]
        )
    # XMLDSig core and chain to the sandbox root: xmlsec1, all 100.
    for note in notes:
        checked = await asyncio.to_thread(xmlsec1_verify, note, sandbox_services.roots_pem)
        assert checked.returncode == 0, checked.stderr
    # The embedded PDFs: poppler on every one.
    registry = ProfileRegistry.load([BUNDLED_PROFILE_DIR])
    for note in notes:
        found = embedded_pdf(parse_xml(note).tree, registry)
        assert found is not None
        assert "Signature is Valid" in await asyncio.to_thread(pdfsig_report, found[1])
    # The stand-alone PDFs: B-LT proven offline by pyHanko, and intact for poppler.
    for report in reports:
        status: PdfSignatureStatus = await pyhanko_offline(report, sandbox_roots)
        assert status.bottom_line, status.pretty_print_details()
        assert "Signature is Valid" in await asyncio.to_thread(pdfsig_report, report)

    # The PIN is nowhere: logs, answers, the daemon's home (journal, stores, logs), any
    # file the test wrote in the user's home, no core file.
    for text in [caplog.text, *answers]:
        assert MAIN_PIN not in text
    assert_pin_nowhere((MAIN_PIN,), started, tmp_path)


async def test_a_refused_pin_is_a_423_and_nothing_is_signed(
    make_api: Callable[..., Awaitable[Api]], fee_note_pdf: bytes
) -> None:
    api = await make_api()
    signer = api.client.app[SERVICES].keys.get("qualified")
    body = {"documents": [_fee_note(n, fee_note_pdf) for n in range(3)]}
    # The session is opened with the right PIN first (another request).
    response = await api.client.post(
        "/v1/batches", json=body, headers={**api.auth("signer"), "X-Sidecar-PIN": MAIN_PIN}
    )
    assert response.status == 202
    await _until_finished(api, response.headers["Location"])
    before = signer.context_logins  # type: ignore[attr-defined]
    texts = []
    for _ in range(2):
        response = await api.client.post(
            "/v1/batches", json=body, headers={**api.auth("signer"), "X-Sidecar-PIN": WRONG_PIN}
        )
        assert response.status == 423
        problem = await response.json()
        assert problem["code"] == "key_locked" and problem["reason"] == "pin_incorrect"
        texts.append(await response.text())
    # Presented once; the second batch's identical PIN never reached the token.
    assert signer.context_logins - before == 1  # type: ignore[attr-defined]
    assert "not presented again" in texts[1]
    assert all(WRONG_PIN not in t and MAIN_PIN not in t for t in texts)
    # Back to the right PIN: SoftHSM's failure count is reset for the other tests.
    response = await api.client.post(
        "/v1/batches", json=body, headers={**api.auth("signer"), "X-Sidecar-PIN": MAIN_PIN}
    )
    assert response.status == 202


async def test_ended_early_bounded_and_owned(
    make_api: Callable[..., Awaitable[Api]], fee_note_pdf: bytes
) -> None:
    api = await make_api(batch_max_documents=30, batch_concurrency=1)
    pin = {**api.auth("signer"), "X-Sidecar-PIN": MAIN_PIN}

    too_many = {"documents": [_fee_note(n, fee_note_pdf) for n in range(31)]}
    response = await api.client.post("/v1/batches", json=too_many, headers=pin)
    assert response.status == 422 and (await response.json())["code"] == "batch_too_large"

    body = {"documents": [_fee_note(n, fee_note_pdf) for n in range(30)]}
    response = await api.client.post("/v1/batches", json=body, headers=pin)
    assert response.status == 202
    location = response.headers["Location"]

    # Another client does not see it.
    response = await api.client.get(location, headers=api.auth("all"))
    assert response.status == 404

    # The physician ends it: nothing more is signed, what was signed stays readable.
    response = await api.client.delete(location, headers=api.auth("signer"))
    assert response.status == 200
    ended = await response.json()
    assert ended["state"] == "cancelled"
    assert ended["signed"] >= 1 and ended["cancelled"] >= 1
    assert ended["signed"] + ended["cancelled"] == 30
    await asyncio.sleep(0.5)
    response = await api.client.get(location, headers=api.auth("signer"))
    assert (await response.json())["signed"] == ended["signed"]
    first = ended["documents"][0]
    response = await api.client.get(first["href"], headers=api.auth("signer"))
    assert response.status == 200 and response.headers["X-Form-UUID"] == first["uuid"]
    last = ended["documents"][-1]
    response = await api.client.get(f"{location}/documents/29", headers=api.auth("signer"))
    assert last["state"] == "cancelled" and response.status == 409

    # Refused shapes: each a 400 naming the field, before anything is signed.
    for bad, field in [
        ({"documents": []}, "documents"),
        ({"documents": [{"kind": "fax"}]}, "documents[0].kind"),
        ({"documents": [{"kind": "pdf", "pdf": "@@@"}]}, "documents[0].pdf"),
        ({"documents": [{"kind": "form", "xml": _b64(b"<a/>")}]}, "documents[0].profile"),
    ]:
        response = await api.client.post("/v1/batches", json=bad, headers=pin)
        assert response.status == 400, bad
        assert (await response.json())["parameter"] == field


async def test_the_authorisation_runs_out(
    make_api: Callable[..., Awaitable[Api]], fee_note_pdf: bytes
) -> None:
    """Past ``batch_max_minutes`` nothing more is signed with the batch's PIN.

    The bound is set from what documents cost on this machine: a fresh daemon's first
    (cold caches: the one signed before the 202) plus three more at the warm pace. That
    lets the first through and stops well before a hundred."""
    warm = await make_api(batch_concurrency=1)

    async def timed_batch(count: int) -> float:
        started = time.perf_counter()
        response = await warm.client.post(
            "/v1/batches",
            json={"documents": [_fee_note(90 + n, fee_note_pdf) for n in range(count)]},
            headers={**warm.auth("signer"), "X-Sidecar-PIN": MAIN_PIN},
        )
        assert response.status == 202
        await _until_finished(warm, response.headers["Location"], budget=120)
        return time.perf_counter() - started

    cold_first = await timed_batch(1)
    per_document = await timed_batch(8) / 8  # (the status polls' 0.2 s included)
    lifetime = cold_first + 3 * per_document
    api = await make_api(batch_max_minutes=lifetime / 60, batch_concurrency=1)
    body = {"documents": [_fee_note(n, fee_note_pdf) for n in range(100)]}
    response = await api.client.post(
        "/v1/batches", json=body, headers={**api.auth("signer"), "X-Sidecar-PIN": MAIN_PIN}
    )
    assert response.status == 202
    summary = await _until_finished(api, response.headers["Location"], budget=120)
    assert summary["state"] == "expired"
    assert 1 <= summary["signed"] < 100
    assert summary["signed"] + summary["cancelled"] + summary["failed"] == 100
    assert summary["documents"][-1]["state"] in ("cancelled", "failed")


def assert_pin_nowhere(
    pins: tuple[str, ...], since: float, *roots: Path, daemon_here: bool = True
) -> None:
    """No file written since *since* under *roots* and the user's home holds a PIN, and no
    core file was written (an in-process daemon turned core dumps off: checked too)."""
    if daemon_here:
        assert resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)
    home = Path.home()
    for root in (*roots, home, Path.cwd()):
        for folder, dirs, names in os.walk(root):
            if Path(folder) == home:
                dirs[:] = [d for d in dirs if d != ".claude"]  # the session machinery's own
            for name in names:
                path = Path(folder, name)
                try:
                    if path.stat().st_mtime < since or not path.is_file():
                        continue
                    content = path.read_bytes()
                except OSError:  # gone meanwhile (another helper's temp file)
                    continue
                assert not name.startswith("core"), path
                for pin in pins:
                    assert pin.encode() not in content, path


def _sidecar(
    home: Path, *args: str, stdin: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env, "SIDECAR_HOME": str(home)},
        timeout=300,
    )


def test_sign_files_asks_the_pin_once(
    softhsm: SoftHsm,
    qualified_key: KeyConfig,  # noqa: F811
    tmp_path: Path,
) -> None:
    """``sidecar sign`` on several files: one PIN on the terminal, one batch."""
    started = time.time() - 1
    home = tmp_path / "home"
    home.mkdir()
    (home / "sidecar.toml").write_text(
        "[[keys]]\n"
        f'id = "{qualified_key.id}"\n'
        'backend = "pkcs11"\n'
        f'module = "{qualified_key.module}"\n'
        f'token_label = "{qualified_key.token_label}"\n'
        f'key_label = "{qualified_key.key_label}"\n'
        'pin_source = "request"\n'
    )
    folder = tmp_path / "notes"
    folder.mkdir()
    files = []
    for n in range(4):
        files.append(folder / f"note-{n}.xml")
        files[-1].write_bytes(f"<note><n>{n}</n></note>".encode())
    env = {"SOFTHSM2_CONF": str(softhsm.conf)}
    args = ["sign", "--level", "B-B", *map(str, files)]

    signed = _sidecar(home, *args, stdin=MAIN_PIN + "\n", env=env)
    assert signed.returncode == 0, signed.stdout + signed.stderr
    assert signed.stdout.count("signed at B-B") == 4
    assert signed.stderr.count("PIN for key") == 1  # asked once
    for source in files:
        assert b"SignatureValue" in source.with_name(f"{source.stem}.signed.xml").read_bytes()

    refused = _sidecar(home, *args, stdin=WRONG_PIN + "\n", env=env)
    assert refused.returncode == 1
    assert refused.stdout.count("refused") == 4
    assert refused.stdout.count("(key_locked)") == 4
    # The right PIN again (it also clears SoftHSM's failed-login count for other tests).
    again = _sidecar(home, *args[:4], stdin=MAIN_PIN + "\n", env=env)
    assert again.returncode == 0, again.stdout + again.stderr

    for run in (signed, refused, again):
        assert MAIN_PIN not in run.stdout + run.stderr
        assert WRONG_PIN not in run.stdout + run.stderr
    assert_pin_nowhere((MAIN_PIN, WRONG_PIN), started, tmp_path, daemon_here=False)
