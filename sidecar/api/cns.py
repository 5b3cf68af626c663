"""CNS routes (API.md): fee-note deposit and cancellation through the outbox,
message status, and the synchronous PID v2 requests; and :func:`fee_note_context`,
the subsystem that lets the deposit sign and timestamp fee notes itself.

A fee note deposited unsigned is signed with the ``fee-note`` profile's recipe
(XSD, XAdES-B-LT, the default key) before it is persisted. It must carry its UUID
(the daemon does not fill it in here: a UUID made at each post would make a re-post
a second fee note) and, as the profile has a PDF, its PDF/A embedded (base64) in
``Document``: the recipe PAdES-signs that PDF, embeds it back and signs the XML.
An empty ``Document`` is refused (400 ``bad_parameter``, ``parameter: pdf``), a
document the XSD refuses too (422 ``schema_violation``): nothing is queued. The
idempotency key is the body *as posted*: re-posting the same unsigned body answers
the first deposit, never signs again.

Offline mode (``cns.defer_timestamp``): with the TSA or the revocation data out of
reach, the fee note is signed B-B and held ``awaiting_timestamp``; the worker raises
it to B-LT with :func:`sidecar.signing.xades.augment_xml` once the TSA is back.

Codes besides API.md's stable ones (an extension, nothing existing changed):
``unsigned_document`` (422: the fee note must be signed first: this daemon has no
signing key or no ``fee-note`` profile), ``invalid_uuid``
(422: no RFC 4122 v4 UUID in the message), ``not_cancellable`` (409: the deposit
was rejected or failed, the CNS has nothing to cancel), ``cns_rejected`` (422: the
CNS refused a PID v2 request; ``errors`` holds its reasons), ``storage_unavailable``
(503: the disk is full or read-only; nothing was accepted, try again later).

Each message belongs to the client that deposited it: another client gets 404 when it
reads, lists or cancels it (and 409 ``duplicate_uuid`` when it posts the same UUID);
a client with the ``admin`` scope sees and cancels all.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid as uuid_module
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from aiohttp import web

from ..clients import Scope
from ..cns.documents import (
    DocumentError,
    ForbiddenDtd,
    InvalidUuid,
    MalformedXml,
    is_signed,
    message_uuid,
    parse_message,
    signature_level,
)
from ..cns.outbox import DuplicateUuid, InvalidState, Message, Status, UnknownMessage
from ..cns.subsystem import (
    AUDIT_JOURNAL,
    CNS,
    FEE_NOTE_UPGRADER,
    SIGN_FEE_NOTE,
    CnsRuntime,
    SignedFeeNote,
)
from ..cns.transport import CnsTimeout, CnsTransport, CnsUnreachable, PidKind
from ..cns.worker import TimestampUnavailable
from ..operations.signing import fee_note_signer
from ..signing.forms import FormError
from ..signing.report import Level
from ..signing.sources import UpstreamFailure
from ..signing.trust_binding import TrustTimestampSource, TrustValidationDataSource
from ..signing.xades import augment_xml
from ..storage import StorageUnavailable
from .appkeys import CLIENT, SERVICES, SETTINGS
from .guards import read_body
from .observe import METRICS
from .problems import Problem, bad_parameter, register_problem_mapper

__all__ = ["HANDLERS", "fee_note_context"]

log = logging.getLogger("sidecar.cns")

#: Seconds a caller is told to wait when the CNS cannot be reached.
RETRY_AFTER = "30"
MAX_PAGE = 1000
#: SQLite's integers are 64-bit: a larger cursor is no cursor of ours.
MAX_CURSOR = 2**63 - 1
#: Seconds a caller is told to wait when the disk cannot take a write.
STORAGE_RETRY_AFTER = "60"

_LEVELS_BELOW_LT = {"B-B", "B-T"}


def _runtime(request: web.Request) -> CnsRuntime:
    return request.app[CNS]


def _client(request: web.Request) -> str:
    client = request.get(CLIENT)
    return client.name if client is not None else ""


def _owner(request: web.Request) -> str | None:
    """Whose messages the caller may see: its own, or (``admin``) everyone's (None)."""
    client = request.get(CLIENT)
    if client is not None and Scope.ADMIN in client.scopes:
        return None
    return _client(request)


def _storage_problem(exc: StorageUnavailable) -> Problem:
    return Problem(
        503,
        "storage_unavailable",
        f"{exc}: nothing was accepted or changed; try again later",
        headers={"Retry-After": STORAGE_RETRY_AFTER},
    )


register_problem_mapper(StorageUnavailable, _storage_problem)


async def _writable(request: web.Request) -> None:
    """Refuse early (503 ``storage_unavailable``) while a store is known not to write.

    A store that failed is probed with a real write first, so that the first request
    after the disk has room again goes through."""
    runtime = _runtime(request)
    journal = request.app[AUDIT_JOURNAL]
    if runtime.outbox.health.failure is not None:
        await runtime.outbox.run(runtime.outbox.probe)
    if journal.health.failure is not None:
        await asyncio.to_thread(journal.probe)


def _transport(runtime: CnsRuntime) -> CnsTransport:
    if runtime.transport is None:
        raise Problem(
            503,
            "upstream_unavailable",
            f"no CNS endpoint is configured: {runtime.unavailable}",
            headers={"Retry-After": "3600"},
        )
    return runtime.transport


def _document_problem(exc: DocumentError) -> Problem:
    if isinstance(exc, MalformedXml):
        return Problem(400, "malformed_xml", exc.detail, line=exc.line, column=exc.column)
    if isinstance(exc, ForbiddenDtd):
        return Problem(422, "forbidden_dtd", exc.detail)
    if isinstance(exc, InvalidUuid):
        return Problem(422, "invalid_uuid", exc.detail)
    return Problem(422, "schema_violation", exc.detail)


def _announce(request: web.Request, runtime: CnsRuntime, message: Message, operation: str) -> None:
    """A newly accepted message: wake the worker, count it (the outbox journaled it)."""
    assert runtime.worker is not None
    runtime.worker.wake()
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.cns_message(operation, message.status.value)


def _accepted(message: Message, status: int = 202) -> web.Response:
    url = f"/v1/cns/messages/{message.id}"
    body: dict[str, Any] = {"uuid": message.id, "status": message.status.value, "status_url": url}
    if message.operation == "cancel":
        body["fee_note_uuid"] = message.subject
    return web.json_response(body, status=status, headers={"Location": url})


def _duplicate(existing: Message) -> Problem:
    return Problem(
        409,
        "duplicate_uuid",
        f"a message with UUID {existing.id} was already accepted with different content",
        uuid=existing.id,
        status_url=f"/v1/cns/messages/{existing.id}",
    )


async def deposit_fee_note(request: web.Request) -> web.Response:
    """Persist the fee note (signing it first if it is not), then 202: accepted means
    on disk (API.md, Idempotency)."""
    runtime = _runtime(request)
    settings = request.app[SETTINGS].cns
    _transport(runtime)
    body = await read_body(request)
    try:
        root = parse_message(body)
        note_uuid = message_uuid(root, settings.uuid_xpath)
    except DocumentError as exc:
        raise _document_problem(exc) from None
    await _writable(request)
    # Idempotency is on what the caller sent, before any signing.
    digest = hashlib.sha256(body).hexdigest()
    outbox = runtime.outbox
    owner = _owner(request)
    async with runtime.deposit_lock(note_uuid):
        existing = await outbox.run(outbox.get, note_uuid)
        if existing is not None:
            mine = owner is None or existing.client == owner
            if existing.digest != digest or existing.operation != "deposit" or not mine:
                raise _duplicate(existing)
            return _accepted(existing)
        document = body
        signed: SignedFeeNote | None = None
        if not is_signed(root):
            signed = await _sign(request, body, note_uuid)
            document = signed.xml
            try:
                root = parse_message(document)
            except DocumentError as exc:  # our own signer's output: a bug, not the caller's
                raise Problem(500, "internal_error", "the signed fee note is unusable") from exc
        level = signature_level(root)
        awaiting = (
            settings.defer_timestamp
            and level in _LEVELS_BELOW_LT
            and request.app.get(FEE_NOTE_UPGRADER) is not None
        )
        try:
            message, created = await outbox.run(
                outbox.enqueue_deposit,
                note_uuid,
                document,
                digest,
                client=_client(request),
                level=level,
                awaiting_timestamp=awaiting,
                detail={"bytes": len(document), "signed_here": signed is not None},
            )
        except DuplicateUuid as exc:
            raise _duplicate(exc.existing) from None
    if created:
        _announce(request, runtime, message, "deposit")
    return _accepted(message)


async def _sign(request: web.Request, body: bytes, note_uuid: str) -> SignedFeeNote:
    """Sign an unsigned fee note with the ``fee-note`` recipe; journal the signature."""
    sign = request.app.get(SIGN_FEE_NOTE)
    if sign is None:
        raise Problem(
            422,
            "unsigned_document",
            "the fee note is not signed (no ds:Signature) and this daemon cannot sign "
            "it (no signing key or no 'fee-note' profile): sign it first "
            "(POST /v1/forms/fee-note/sign)",
        )
    try:
        signed = await sign(body)
    except FormError as exc:
        if exc.reason != "pdf_missing":
            raise
        raise Problem(
            400,
            "bad_parameter",
            "the fee note's PDF/A must be embedded (base64) in its Document element: "
            "a deposit is one XML document",
            parameter="pdf",
            reason=exc.reason,
        ) from None
    try:
        same_uuid = message_uuid(parse_message(signed.xml)) == note_uuid
    except DocumentError:
        same_uuid = False
    if not same_uuid:  # the recipe keeps a caller's UUID: anything else is a bug
        raise Problem(500, "internal_error", "signing changed the fee note's UUID")
    # Journaled and counted by the signing operation itself (sidecar.operations.events).
    return signed


def _uuid_parameter(request: web.Request) -> str:
    raw = request.match_info["uuid"]
    try:
        return str(uuid_module.UUID(raw))
    except ValueError:
        raise bad_parameter("uuid", f"{raw[:64]!r} is not a UUID") from None


async def cancel_fee_note(request: web.Request) -> web.Response:
    """Queue the cancellation; it is sent only once its deposit has been delivered."""
    runtime = _runtime(request)
    _transport(runtime)
    note_uuid = _uuid_parameter(request)
    await _writable(request)
    outbox = runtime.outbox
    try:
        message, created = await outbox.run(
            outbox.enqueue_cancel,
            note_uuid,
            str(uuid_module.uuid4()),
            client=_client(request),
            owner=_owner(request),
        )
    except UnknownMessage:
        raise Problem(404, "not_found", f"no fee note {note_uuid} was deposited here") from None
    except InvalidState as exc:
        raise Problem(409, "not_cancellable", str(exc), uuid=note_uuid) from None
    if created:
        _announce(request, runtime, message, "cancel")
    return _accepted(message)


async def get_message(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    message_id = _uuid_parameter(request)
    message = await runtime.outbox.run(runtime.outbox.get, message_id, owner=_owner(request))
    if message is None:
        raise Problem(404, "not_found", f"no CNS message {message_id}")
    return web.json_response(message.as_json())


def _since(raw: str) -> float:
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise bad_parameter("since", f"expected an RFC 3339 date-time, got {raw[:64]!r}") from None
    if moment.tzinfo is None:
        raise bad_parameter("since", "needs a time zone offset (e.g. Z)")
    return moment.timestamp()


def _count(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and low <= int(raw) <= high):
        raise bad_parameter(name, f"an integer from {low} to {high}")
    return int(raw)


async def list_messages(request: web.Request) -> web.Response:
    """Paged with ``limit`` (1-1000, default 100) and the opaque cursor ``after``."""
    runtime = _runtime(request)
    query = request.query
    status = None
    if "status" in query:
        try:
            status = Status(query["status"])
        except ValueError:
            allowed = ", ".join(s.value for s in Status)
            raise bad_parameter("status", f"one of {allowed}") from None
    since = _since(query["since"]) if "since" in query else None
    limit = _count(query, "limit", 100, 1, MAX_PAGE)
    # The cursor is a row id: SQLite's integers end at 2**63 - 1.
    after = _count(query, "after", 0, 0, MAX_CURSOR)
    messages = await runtime.outbox.run(
        runtime.outbox.list,
        status=status,
        since=since,
        after=after,
        limit=limit,
        owner=_owner(request),
    )
    next_url = None
    if len(messages) == limit:
        params = {k: v for k, v in query.items() if k != "after"}
        params["after"] = str(messages[-1].seq)
        next_url = str(request.rel_url.with_query(params))
    return web.json_response({"messages": [m.as_json() for m in messages], "next": next_url})


def _pid(kind: PidKind) -> Any:
    async def handler(request: web.Request) -> web.Response:
        runtime = _runtime(request)
        transport = _transport(runtime)
        settings = request.app[SETTINGS].cns
        body = await read_body(request)
        try:
            root = parse_message(body)
            key = message_uuid(root, settings.uuid_xpath)
        except DocumentError as exc:
            raise _document_problem(exc) from None
        await _writable(request)  # no answer from the CNS that the journal cannot keep
        journal = request.app[AUDIT_JOURNAL]
        digest = hashlib.sha256(body).hexdigest()

        async def record(outcome: str, **detail: Any) -> None:
            metrics = request.app.get(METRICS)
            if metrics is not None:
                status = detail.get("cns_status") or 0
                result = "delivered" if 200 <= status < 300 else "rejected"
                if outcome != "answered" or status >= 500:
                    result = "failed"
                metrics.cns_message(f"pid_{kind}", result)
            await journal.append_async(
                f"cns.pid.{kind}",
                outcome,
                client=_client(request),
                uuid=key,
                digest=digest,
                detail=detail,
            )

        try:
            answer = await transport.pid(kind, body, key)
        except CnsTimeout:
            await record("timeout")
            raise Problem(
                504, "upstream_timeout", f"the CNS did not answer within {settings.pid_timeout:g} s"
            ) from None
        except CnsUnreachable as exc:
            await record("unreachable", error=str(exc))
            raise Problem(
                503,
                "upstream_unavailable",
                "the CNS cannot be reached",
                headers={"Retry-After": RETRY_AFTER},
            ) from None
        await record("answered", cns_status=answer.status)
        if answer.ok:
            return web.Response(body=answer.body, content_type="application/xml")
        if 400 <= answer.status < 500:
            raise Problem(
                422,
                "cns_rejected",
                f"the CNS refused the PID v2 {kind} ({answer.status})",
                errors=answer.reasons(),
                cns_status=answer.status,
            )
        raise Problem(
            502, "upstream_error", f"the CNS answered {answer.status}", cns_status=answer.status
        )

    return handler


async def fee_note_context(app: web.Application) -> AsyncIterator[None]:
    """Subsystem, after signing and before ``cns_context``: the deposit's signing seams.

    :data:`SIGN_FEE_NOTE` when there is a default key and a ``fee-note`` profile;
    :data:`FEE_NOTE_UPGRADER` (offline mode) when there is a TSA.
    """
    services = app[SERVICES]
    defer = app[SETTINGS].cns.defer_timestamp
    recipe = fee_note_signer(services, fallback_level=Level.B_B if defer else None)
    if recipe is not None:
        sign = recipe

        async def sign_fee_note(xml: bytes) -> SignedFeeNote:
            form = await sign(xml)  # journaled and counted by the operation
            xml_level = form.level.value if form.level is not Level.NONE else ""
            pdf_level = form.pdf_level.value if form.pdf_level else None
            return SignedFeeNote(form.data, xml_level, form.key_id, pdf_level)

        app[SIGN_FEE_NOTE] = sign_fee_note
    trust = services.trust
    if trust.tsa.endpoints:
        timestamps = TrustTimestampSource(trust.tsa)
        validation = TrustValidationDataSource(trust.revocation)

        async def upgrade(xml: bytes) -> tuple[bytes, str]:
            try:
                upgraded = await augment_xml(
                    xml, Level.B_LT, timestamps=timestamps, validation_data=validation
                )
            except UpstreamFailure as exc:
                raise TimestampUnavailable(f"{exc.service}: {exc.detail}") from exc
            return upgraded, Level.B_LT.value

        app[FEE_NOTE_UPGRADER] = upgrade
    yield


HANDLERS = {
    "depositFeeNote": deposit_fee_note,
    "cancelFeeNote": cancel_fee_note,
    "getMessage": get_message,
    "listMessages": list_messages,
    "pidSimulation": _pid("simulation"),
    "pidValidation": _pid("validation"),
    "pidContestation": _pid("contestation"),
}
