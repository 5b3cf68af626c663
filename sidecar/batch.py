"""``sidecar sign`` and ``sidecar verify``: the daemon's engines on files, no daemon needed.

The commands start the application the daemon runs — keys, trust layer, profiles,
engines — on an ephemeral loopback port with a one-off client, and send each file
through the routes a caller would use. A file therefore gets exactly what the HTTP
API would give it: the same checks, levels and errors, and no second code path to
keep in step with the first.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from .api.app import create_app
from .api.batches import batches_context
from .api.pdf import signing_context
from .api.signing_keys import keys_context
from .api.timestamps import trust_context
from .clients import ClientStore, Scope
from .config import Settings
from .i18n import _, current
from .paths import Paths, write_atomically
from .progress import Progress
from .sandbox.pki import ensure_sandbox_pki

__all__ = ["SignRequest", "local_daemon", "sign_files", "verify_files"]

_XML = "application/xml"
_PDF = "application/pdf"


@dataclass(frozen=True)
class SignRequest:
    """What to do with each file of ``sidecar sign``."""

    level: str | None = None
    key: str | None = None
    #: A form profile: the file goes through the form recipe (``--pdf`` adds the PDF part).
    profile: str | None = None
    pdf: Path | None = None
    reason: str | None = None
    location: str | None = None


def _kind(data: bytes) -> str:
    return _PDF if data.lstrip()[:5] == b"%PDF-" else _XML


def _answered(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


@contextlib.asynccontextmanager
async def local_daemon(
    settings: Settings, paths: Paths, *, sandbox: bool
) -> AsyncIterator[aiohttp.ClientSession]:
    """The engines behind a loopback HTTP session authorised to sign and verify."""
    with tempfile.TemporaryDirectory(prefix="sidecar-cli-") as scratch:
        store = ClientStore(Path(scratch) / "clients.json")
        token = store.create("cli", frozenset({Scope.SIGN, Scope.VERIFY}))
        sandbox_kwargs: dict[str, Any] = {}
        if sandbox:
            pki = await asyncio.get_running_loop().run_in_executor(
                None,
                lambda: ensure_sandbox_pki(
                    paths.sandbox_dir, host=settings.sandbox.host, port=settings.sandbox.port
                ),
            )
            # A running `serve --sandbox` already serves the sandbox's TSA/OCSP/CRL.
            if _answered(pki.host, pki.port):
                sandbox_kwargs["sandbox_pki"] = pki
            else:
                sandbox_kwargs["sandbox_dir"] = paths.sandbox_dir
        app = create_app(
            settings,
            paths,
            client_store=store,
            subsystems=[keys_context, trust_context, signing_context, batches_context],
            **sandbox_kwargs,
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            async with aiohttp.ClientSession(
                f"http://127.0.0.1:{port}",
                # The daemon's problem details come back in the reader's language.
                headers={"Authorization": f"Bearer {token}", "Accept-Language": current()},
                timeout=aiohttp.ClientTimeout(total=300),
            ) as session:
                yield session
        finally:
            await runner.cleanup()


def _default_output(source: Path) -> Path:
    return source.with_name(f"{source.stem}.signed{source.suffix}")


def _write_atomically(target: Path, data: bytes) -> None:
    # A signed file is either wholly there or not there: never half-written.
    write_atomically(target, data)


async def _problem_text(response: aiohttp.ClientResponse) -> str:
    try:
        problem = await response.json(content_type=None)
        return f"{problem.get('detail')} ({problem.get('code')})"
    except (ValueError, aiohttp.ContentTypeError):
        return f"HTTP {response.status}"


async def _sign_one(
    session: aiohttp.ClientSession, source: Path, request: SignRequest
) -> tuple[bytes | None, str]:
    data = await asyncio.to_thread(source.read_bytes)
    kind = _kind(data)
    params = {
        name: value
        for name, value in (
            ("level", request.level),
            ("key", request.key),
            ("reason", request.reason),
            ("location", request.location),
        )
        if value
    }
    if kind == _XML and request.profile:
        params.pop("level", None)
        url = f"/v1/forms/{request.profile}/sign"
        body: Any
        if request.pdf is not None:
            body = aiohttp.FormData()
            body.add_field("xml", data, content_type=_XML, filename=source.name)
            body.add_field(
                "pdf", request.pdf.read_bytes(), content_type=_PDF, filename=request.pdf.name
            )
            headers = {}
        else:
            body, headers = data, {"Content-Type": _XML}
    else:
        if kind == _XML:
            params.pop("reason", None)
            params.pop("location", None)
        url = "/v1/xml/sign" if kind == _XML else "/v1/pdf/sign"
        body, headers = data, {"Content-Type": kind}
    async with session.post(url, params=params, data=body, headers=headers) as response:
        if response.status != 200:
            return None, await _problem_text(response)
        level = response.headers.get("X-Signature-Level", "?")
        return await response.read(), _("signed at {level}", level=level)


async def sign_files(
    settings: Settings,
    paths: Paths,
    files: Sequence[Path],
    request: SignRequest,
    *,
    sandbox: bool,
    output: Path | None,
    out: TextIO,
    pin: str | None = None,
) -> int:
    """Sign each file; ``output`` is a file (one input) or a directory. Exit status.

    Several files (or a *pin*) go through ``POST /v1/batches``: one authorisation, one
    card session, the PIN typed once for all of them."""
    output_dir = output is not None and await asyncio.to_thread(output.is_dir)
    if output is not None and len(files) > 1 and not output_dir:
        raise ValueError(
            _("{output} must be an existing directory when signing several files", output=output)
        )
    failures = 0
    async with local_daemon(settings, paths, sandbox=sandbox) as session:
        with Progress(len(files), _("signing"), unit="file") as progress:
            batched = len(files) > 1 or pin is not None
            signing = _batch_results if batched else _one_by_one
            async for source, signed, note in signing(session, files, request, pin, settings):
                if signed is None:
                    failures += 1
                    print(_("{file}: refused: {reason}", file=source, reason=note), file=out)
                else:
                    if output is None:
                        target = _default_output(source)
                    elif output_dir:
                        target = output / _default_output(source).name
                    else:
                        target = output
                    await asyncio.to_thread(_write_atomically, target, signed)
                    print(f"{source}: {note} -> {target}", file=out)
                progress.advance(note=source.name, failed=signed is None)
    return 1 if failures else 0


async def _one_by_one(
    session: aiohttp.ClientSession,
    files: Sequence[Path],
    request: SignRequest,
    pin: str | None,
    settings: Settings,
) -> AsyncIterator[tuple[Path, bytes | None, str]]:
    for source in files:
        signed, note = await _sign_one(session, source, request)
        yield source, signed, note


async def _batch_document(source: Path, request: SignRequest) -> dict[str, Any]:
    data = await asyncio.to_thread(source.read_bytes)
    encoded = base64.b64encode(data).decode("ascii")
    if _kind(data) == _PDF:
        entry = {"kind": "pdf", "pdf": encoded, "level": request.level}
        entry.update(reason=request.reason, location=request.location)
    elif request.profile:
        entry = {"kind": "form", "xml": encoded, "profile": request.profile}
        if request.pdf is not None:
            pdf = await asyncio.to_thread(request.pdf.read_bytes)
            entry["pdf"] = base64.b64encode(pdf).decode("ascii")
    else:
        entry = {"kind": "xml", "xml": encoded, "level": request.level}
    return {"name": source.name, **{k: v for k, v in entry.items() if v is not None}}


async def _batch_results(
    session: aiohttp.ClientSession,
    files: Sequence[Path],
    request: SignRequest,
    pin: str | None,
    settings: Settings,
) -> AsyncIterator[tuple[Path, bytes | None, str]]:
    """Each file's result, in order, as ``POST /v1/batches`` signs them (one PIN for all;
    more files than ``[signing] batch_max_documents`` make several batches)."""
    headers = {"X-Sidecar-PIN": pin} if pin is not None else {}
    params = {"key": request.key} if request.key else {}
    size = settings.signing.batch_max_documents
    for start in range(0, len(files), size):
        chunk = files[start : start + size]
        documents = [await _batch_document(source, request) for source in chunk]
        async with session.post(
            "/v1/batches", params=params, json={"documents": documents}, headers=headers
        ) as response:
            if response.status != 202:
                note = await _problem_text(response)
                for source in files[start:]:
                    yield source, None, note
                return
            location = response.headers["Location"]
        del documents
        done = 0
        while done < len(chunk):
            async with session.get(location) as response:
                summary = await response.json()
            entries = summary["documents"]
            while done < len(chunk) and entries[done]["state"] != "pending":
                entry = entries[done]
                if entry["state"] == "signed":
                    async with session.get(entry["href"]) as response:
                        level = response.headers.get("X-Signature-Level", "?")
                        yield (
                            chunk[done],
                            await response.read(),
                            _("signed at {level}", level=level),
                        )
                else:
                    problem = entry.get("problem") or {}
                    note = f"{problem.get('detail', entry['state'])} ({problem.get('code')})"
                    yield chunk[done], None, note
                done += 1
            if done < len(chunk):
                await asyncio.sleep(0.2)


async def verify_files(
    settings: Settings,
    paths: Paths,
    files: Sequence[Path],
    *,
    sandbox: bool,
    as_json: bool,
    out: TextIO,
) -> int:
    """Report each file's signatures; exit 0 only when every one is TOTAL_PASSED."""
    results: list[dict[str, Any]] = []
    all_passed = True
    async with local_daemon(settings, paths, sandbox=sandbox) as session:
        with Progress(len(files), _("verifying"), unit="file") as progress:
            for source in files:
                data = await asyncio.to_thread(source.read_bytes)
                async with session.post(
                    "/v1/verify", data=data, headers={"Content-Type": _kind(data)}
                ) as response:
                    if response.status != 200:
                        all_passed = False
                        results.append(
                            {"file": str(source), "error": await _problem_text(response)}
                        )
                    else:
                        report = await response.json()
                        all_passed = all_passed and _passed(report)
                        results.append({"file": str(source), "report": report})
                progress.advance(note=source.name)
    if as_json:
        print(json.dumps(results, indent=2), file=out)
        return 0 if all_passed else 1
    for result in results:
        if "error" in result:
            unverified = _(
                "{file}: cannot be verified: {reason}", file=result["file"], reason=result["error"]
            )
            print(unverified, file=out)
            continue
        report = result["report"]
        signatures = report["signatures"]
        if not signatures:
            print(_("{file}: no signature", file=result["file"]), file=out)
        for signature in signatures:
            print(_line(result["file"], signature), file=out)
        for signature in report.get("embedded_pdf", {}).get("signatures", []):
            print(_line(_("{file} (embedded PDF)", file=result["file"]), signature), file=out)
            if signature.get("note"):
                print("    " + _("{note}: accepted", note=signature["note"]), file=out)
    return 0 if all_passed else 1


def _passed(report: dict[str, Any]) -> bool:
    """Every signature of the document TOTAL_PASSED; a form's embedded PDF signature
    also when the report accepts it as what the form asks (PAdES-B by design)."""
    own = report["signatures"]
    embedded = report.get("embedded_pdf", {}).get("signatures", [])
    return (
        bool(own)
        and all(r["indication"] == "TOTAL_PASSED" for r in own)
        and all(r.get("accepted") for r in embedded)
    )


def _line(file: str, signature: dict[str, Any]) -> str:
    sub = f"/{signature['sub_indication']}" if signature.get("sub_indication") else ""
    signer = signature.get("signer") or _("unknown signer")
    return (
        f"{file}: {signature['format']} {signature['level']} "
        f"{signature['indication']}{sub} — {signer}"
        + _qualification(signature.get("qualification"))
    )


def _qualification(found: dict[str, Any] | None) -> str:
    """`` — QESig, qualified timestamp``: the EU trusted lists' verdict, when in use."""
    if not found or found.get("trusted_lists") == "not configured":
        return ""
    stamp = (
        _("qualified timestamp")
        if found.get("qualified_timestamp")
        else _("timestamp not qualified")
    )
    if not found.get("timestamps"):
        stamp = _("no timestamp")
    return f" — {found.get('signature')}, {stamp}"
