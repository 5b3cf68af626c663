"""``sidecar sign`` and ``sidecar verify``: the daemon's operations on files, no daemon needed.

The commands open the services the daemon runs — keys, trust layer, profiles,
engines, the audit journal — with :func:`~sidecar.operations.open_services` (no CNS),
and call the operations a caller's request reaches, directly: no HTTP server, no
listening socket. A file therefore gets what the HTTP API would give it: the same
checks, levels and errors (in the API's words: its problem codes), each signature
journaled and counted as one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .batches import BatchDocument, SignedDocument
from .config import Settings
from .i18n import _, current
from .keys import Authorisation
from .operations import Services, open_services
from .operations.batches import batch_request, open_batch, sign_batch_document
from .operations.verify import verify_document
from .paths import Paths, write_atomically
from .progress import Progress
from .sandbox.pki import ensure_sandbox_pki

__all__ = [
    "CLIENT",
    "SignRequest",
    "local_services",
    "sign_files",
    "sign_with",
    "verify_files",
]


_XML = "application/xml"
_PDF = "application/pdf"

#: Who the audit journal names for a signature made by the CLI.
CLIENT = "cli"


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
async def local_services(
    settings: Settings, paths: Paths, *, sandbox: bool
) -> AsyncIterator[Services]:
    """The daemon's services, in this process, without the CNS."""
    sandbox_kwargs: dict[str, Any] = {}
    if sandbox:
        pki = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: ensure_sandbox_pki(
                paths.sandbox_dir, host=settings.sandbox.host, port=settings.sandbox.port
            ),
        )
        # A running `serve --sandbox` already serves the sandbox's TSA/OCSP/CRL; else
        # they are served from here while the command runs (the sandbox's upstreams:
        # what a signature at B-T and above needs to reach).
        if _answered(pki.host, pki.port):
            sandbox_kwargs["sandbox_pki"] = pki
        else:
            sandbox_kwargs["sandbox_dir"] = paths.sandbox_dir
    async with open_services(settings, paths, **sandbox_kwargs) as services:
        yield services


def _problem(exc: BaseException) -> dict[str, Any]:
    """*exc* in the API's words (code, detail in the reader's language)."""
    # The problem mappers are registered by the API's modules (sidecar.api.problems).
    from .api import app as _mappers  # noqa: F401
    from .api.batches import batch_problem

    return batch_problem(exc).body(language=current())


def _text(problem: dict[str, Any]) -> str:
    return f"{problem.get('detail')} ({problem.get('code')})"


def _default_output(source: Path) -> Path:
    return source.with_name(f"{source.stem}.signed{source.suffix}")


def _write_atomically(target: Path, data: bytes) -> None:
    # A signed file is either wholly there or not there: never half-written.
    write_atomically(target, data)


async def _document(source: Path, request: SignRequest, index: int = 0) -> BatchDocument:
    """A file as a batch document would give it (the kind read from its first bytes)."""
    data = await asyncio.to_thread(source.read_bytes)
    if _kind(data) == _PDF:
        return BatchDocument(
            index,
            source.name,
            "pdf",
            pdf=data,
            level=request.level,
            reason=request.reason,
            location=request.location,
        )
    if request.profile:
        pdf = await asyncio.to_thread(request.pdf.read_bytes) if request.pdf else None
        return BatchDocument(index, source.name, "form", xml=data, pdf=pdf, profile=request.profile)
    return BatchDocument(index, source.name, "xml", xml=data, level=request.level)


def _signed_note(signed: SignedDocument) -> str:
    return _("signed at {level}", level=signed.info.get("level", "?"))


async def _sign_one(
    services: Services, source: Path, request: SignRequest
) -> tuple[bytes | None, str]:
    """One file through its kind's operation, with ``--key`` (the default key otherwise)."""
    try:
        document = await _document(source, request)
        typed = batch_request(services, document, CLIENT)
        signer = await services.keys.acquire(request.key)
        signed = await sign_batch_document(services, typed, signer)
    except Exception as exc:
        return None, _text(_problem(exc))
    return signed.data, _signed_note(signed)


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

    Several files (or a *pin*) are signed as one batch (:class:`~sidecar.batches.Batch`,
    as ``POST /v1/batches`` does): one authorisation, one card session, the PIN typed
    once for all of them."""
    output_dir = output is not None and await asyncio.to_thread(output.is_dir)
    if output is not None and len(files) > 1 and not output_dir:
        raise ValueError(
            _("{output} must be an existing directory when signing several files", output=output)
        )
    async with local_services(settings, paths, sandbox=sandbox) as services:
        return await sign_with(services, files, request, output=output, out=out, pin=pin)


async def sign_with(
    services: Services,
    files: Sequence[Path],
    request: SignRequest,
    *,
    output: Path | None,
    out: TextIO,
    pin: str | None = None,
) -> int:
    """:func:`sign_files` on services already open. Exit status."""
    output_dir = output is not None and await asyncio.to_thread(output.is_dir)
    failures = 0
    with Progress(len(files), _("signing"), unit="file") as progress:
        batched = len(files) > 1 or pin is not None
        signing = _batch_results if batched else _one_by_one
        async for source, signed, note in signing(services, files, request, pin):
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
    services: Services, files: Sequence[Path], request: SignRequest, pin: str | None
) -> AsyncIterator[tuple[Path, bytes | None, str]]:
    for source in files:
        signed, note = await _sign_one(services, source, request)
        yield source, signed, note


async def _batch_results(
    services: Services, files: Sequence[Path], request: SignRequest, pin: str | None
) -> AsyncIterator[tuple[Path, bytes | None, str]]:
    """Each file's result, in order, as a batch signs them (one PIN for all; more files
    than ``[signing] batch_max_documents`` make several batches)."""
    settings = services.settings.signing
    size = settings.batch_max_documents
    for start in range(0, len(files), size):
        chunk = files[start : start + size]
        try:
            signer = services.keys.get(request.key)
            documents = [
                await _document(source, request, index) for index, source in enumerate(chunk)
            ]
            authorisation = (
                Authorisation(pin, lifetime=settings.batch_max_minutes * 60)
                if pin is not None
                else None
            )
            # The first document now: a PIN the token refuses ends the whole run here.
            batch = await open_batch(
                services,
                documents,
                signer,
                owner=CLIENT,
                authorisation=authorisation,
                problem_of=_problem,
                keep=False,
            )
        except Exception as exc:  # a key locked, unknown, refusing the PIN...
            note = _text(_problem(exc))
            for source in files[start:]:
                yield source, None, note
            return
        del documents
        try:
            for index, source in enumerate(chunk):
                result = batch.results[index]
                await result.settled.wait()
                if result.signed is not None:
                    yield source, result.signed.data, _signed_note(result.signed)
                else:
                    problem = result.problem or {"detail": result.state}
                    yield source, None, _text(problem)
        finally:
            batch.cancel()
            await batch.wait()


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
    async with local_services(settings, paths, sandbox=sandbox) as services:
        with Progress(len(files), _("verifying"), unit="file") as progress:
            for source in files:
                data = await asyncio.to_thread(source.read_bytes)
                try:
                    report = await verify_document(services, data, xml=_kind(data) == _XML)
                except Exception as exc:
                    all_passed = False
                    results.append({"file": str(source), "error": _text(_problem(exc))})
                else:
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
