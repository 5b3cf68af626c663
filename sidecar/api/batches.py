"""``/v1/batches``: many documents signed with one authorisation (:mod:`sidecar.batches`).

The body is JSON: ``{"documents": [{"name", "kind", "profile", "level", "xml", "pdf",
"reason", "location"}]}`` with the documents in base64; the PIN, when the key takes
one per operation, comes in ``X-Sidecar-PIN`` (never logged, stored or echoed; see
``docs/pin.md``). A batch belongs to the client that made it: another client gets a
404, as for a batch that does not exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from typing import Any

from aiohttp import web

from ..batches import Batch, BatchDocument
from ..clients import Client
from ..i18n import N_, negotiate
from ..operations.batches import open_batch
from .appkeys import CLIENT, SERVICES
from .authorisation import operation_authorisation
from .guards import read_body
from .problems import Problem, bad_parameter, problem_for, problem_language

__all__ = ["HANDLERS", "batch_problem"]

log = logging.getLogger("sidecar.batches")

_KINDS = ("form", "xml", "pdf")
_FIELDS = {"name", "kind", "profile", "level", "xml", "pdf", "reason", "location"}


def batch_problem(exc: BaseException) -> Problem:
    """How a batch document's failure is reported (also by ``sidecar sign``)."""
    problem = exc if isinstance(exc, Problem) else problem_for(exc)
    if problem is None:
        log.error("batch document failed unexpectedly", exc_info=exc)
        problem = Problem(500, "internal_error", N_("the document could not be signed"))
    return problem


def _problem_of(exc: BaseException) -> dict[str, Any]:
    # Signed in a task started by the request: its context has the caller's language.
    return batch_problem(exc).body(language=negotiate(problem_language.get()))


def _b64(entry: dict[str, Any], name: str, index: int) -> bytes | None:
    value = entry.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_parameter(
            f"documents[{index}].{name}", N_("{name}: base64 text expected"), params={}
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Problem(
            400,
            "malformed_pdf" if name == "pdf" else "bad_parameter",
            N_("{name}: not valid base64"),
            params={"name": f"documents[{index}].{name}"},
            parameter=f"documents[{index}].{name}",
        ) from None


def _text(entry: dict[str, Any], name: str, index: int) -> str | None:
    value = entry.get(name)
    if value is not None and not isinstance(value, str):
        raise bad_parameter(f"documents[{index}].{name}", N_("{name}: text expected"), params={})
    return value


def parse_documents(body: Any, max_documents: int) -> list[BatchDocument]:
    """The batch's documents, each checked for shape (its content is the engines' task)."""
    if not isinstance(body, dict) or not isinstance(body.get("documents"), list):
        raise bad_parameter(
            "documents", N_("{name}: a JSON object with a 'documents' array expected"), params={}
        )
    entries = body["documents"]
    if not entries:
        raise bad_parameter("documents", N_("{name}: the batch is empty"), params={})
    if len(entries) > max_documents:
        raise Problem(
            422,
            "batch_too_large",
            N_(
                "{count} documents; one authorisation covers at most {limit} "
                "([signing] batch_max_documents)"
            ),
            params={"count": len(entries), "limit": max_documents},
            limit=max_documents,
        )
    documents = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise bad_parameter(f"documents[{index}]", N_("{name}: an object expected"), params={})
        unknown = sorted(set(entry) - _FIELDS)
        if unknown:
            raise bad_parameter(
                f"documents[{index}].{unknown[0]}", N_("{name}: unknown field"), params={}
            )
        kind = entry.get("kind")
        if kind not in _KINDS:
            raise bad_parameter(
                f"documents[{index}].kind",
                N_("{name}: one of {kinds}"),
                params={"kinds": ", ".join(_KINDS)},
            )
        xml, pdf = _b64(entry, "xml", index), _b64(entry, "pdf", index)
        if kind in ("form", "xml") and xml is None:
            raise bad_parameter(
                f"documents[{index}].xml",
                N_("{name}: a {kind} needs its XML"),
                params={"kind": kind},
            )
        if kind == "pdf" and (pdf is None or xml is not None):
            raise bad_parameter(
                f"documents[{index}].pdf", N_("{name}: a pdf document has one 'pdf'"), params={}
            )
        if kind == "xml" and pdf is not None:
            raise bad_parameter(
                f"documents[{index}].pdf",
                N_("{name}: use kind 'form' for an XML and PDF"),
                params={},
            )
        profile = _text(entry, "profile", index)
        if kind == "form" and not profile:
            raise bad_parameter(
                f"documents[{index}].profile", N_("{name}: a form needs its profile"), params={}
            )
        documents.append(
            BatchDocument(
                index=index,
                name=_text(entry, "name", index) or f"document-{index}",
                kind=kind,
                xml=xml,
                pdf=pdf,
                profile=profile,
                level=_text(entry, "level", index),
                reason=_text(entry, "reason", index),
                location=_text(entry, "location", index),
            )
        )
    return documents


def _owned(request: web.Request) -> Batch:
    client: Client = request[CLIENT]
    batch = request.app[SERVICES].batches.get(request.match_info["batch"])
    if batch is None or batch.owner != client.name:
        raise Problem(404, "not_found", N_("no such batch"), batch=request.match_info["batch"])
    return batch


def _summary(request: web.Request, batch: Batch) -> dict[str, Any]:
    return batch.summary(lambda index: f"/v1/batches/{batch.id}/documents/{index}")


async def create_batch(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings.signing
    key_id = request.query.get("key") or None
    signer = services.keys.get(key_id)
    raw = await read_body(request)
    try:
        body = await asyncio.to_thread(json.loads, raw)
    except (ValueError, UnicodeDecodeError):
        raise bad_parameter("body", N_("{name}: not JSON"), params={}) from None
    del raw
    documents = await asyncio.to_thread(parse_documents, body, settings.batch_max_documents)
    del body
    authorisation = operation_authorisation(request, lifetime=settings.batch_max_minutes * 60)
    batch = await open_batch(
        services,
        documents,
        signer,
        owner=request[CLIENT].name,
        authorisation=authorisation,
        problem_of=_problem_of,
    )
    log.info("batch %s: %d document(s) with key %s", batch.id, len(documents), signer.id)
    return web.json_response(
        _summary(request, batch), status=202, headers={"Location": f"/v1/batches/{batch.id}"}
    )


async def get_batch(request: web.Request) -> web.Response:
    return web.json_response(_summary(request, _owned(request)))


async def get_batch_document(request: web.Request) -> web.Response:
    batch = _owned(request)
    try:
        index = int(request.match_info["index"])
        result = batch.results[index]
    except (ValueError, IndexError):
        raise Problem(404, "not_found", N_("no such document in this batch")) from None
    if result.signed is None:
        extra: dict[str, Any] = {"problem": result.problem} if result.problem else {}
        raise Problem(
            409,
            "not_signed",
            N_("document {index} is {state}"),
            params={"index": index, "state": result.state},
            state=result.state,
            **extra,
        )
    headers = {"X-Signature-Level": result.signed.info.get("level", "none")}
    if "pdf_level" in result.signed.info:
        headers["X-Pdf-Signature-Level"] = result.signed.info["pdf_level"]
    if "uuid" in result.signed.info:
        headers["X-Form-UUID"] = result.signed.info["uuid"]
    return web.Response(
        body=result.signed.data, content_type=result.signed.content_type, headers=headers
    )


async def end_batch(request: web.Request) -> web.Response:
    batch = _owned(request)
    batch.cancel()
    await batch.wait()
    return web.json_response(_summary(request, batch))


HANDLERS = {
    "createBatch": create_batch,
    "getBatch": get_batch,
    "getBatchDocument": get_batch_document,
    "endBatch": end_batch,
}
