"""CNS routes (API.md): fee-note deposit and cancellation through the outbox,
message status, and the synchronous PID v2 requests. Each handler parses the request,
calls one operation of :mod:`sidecar.operations.cns` and renders its result or refusal.
The CNS forwarding itself is opened by the composition root
(:func:`sidecar.operations.services.open_services`).

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
A message is refused as the XML routes refuse XML (one parser): ``malformed_xml``,
``forbidden_dtd``, and ``xml_limits`` (422: deeper or with more namespace
declarations than the daemon's bounds).

Each message belongs to the client that deposited it: another client gets 404 when it
reads, lists or cancels it (and 409 ``duplicate_uuid`` when it posts the same UUID);
a client with the ``admin`` scope sees and cancels all.
"""

from __future__ import annotations

import uuid as uuid_module
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiohttp import web

from ..clients import Scope
from ..cns.documents import InvalidUuid
from ..cns.outbox import DuplicateUuid, InvalidState, Message, Status, UnknownMessage
from ..cns.subsystem import CnsRuntime
from ..cns.transport import CnsTimeout, CnsUnreachable, PidKind
from ..operations import cns as operations
from ..operations.cns import Caller, CnsNotConfigured, EmbeddedPdfMissing, UnsignedDocument
from ..signing.xml_safety import XmlInputError
from .appkeys import CLIENT, SERVICES
from .guards import read_body
from .problems import Problem, bad_parameter, xml_problem

__all__ = ["HANDLERS"]

#: Seconds a caller is told to wait when the CNS cannot be reached.
RETRY_AFTER = "30"
MAX_PAGE = 1000
#: SQLite's integers are 64-bit: a larger cursor is no cursor of ours.
MAX_CURSOR = 2**63 - 1


def _runtime(request: web.Request) -> CnsRuntime:
    runtime = request.app[SERVICES].cns
    if runtime is None:  # an application built without the CNS (never the daemon's)
        raise CnsNotConfigured("the CNS forwarding is not open in this host")
    return runtime


def _caller(request: web.Request) -> Caller:
    client = request.get(CLIENT)
    if client is None:
        return Caller()
    return Caller(client.name, Scope.ADMIN in client.scopes)


#: What the CNS operations refuse a request with, answered by :func:`_refusal`.
_REFUSALS = (
    XmlInputError,
    InvalidUuid,
    CnsNotConfigured,
    UnsignedDocument,
    EmbeddedPdfMissing,
    DuplicateUuid,
)


def _refusal(exc: Exception) -> Problem:
    """The answer to a refusal of :data:`_REFUSALS`."""
    if isinstance(exc, XmlInputError):
        return xml_problem(exc)
    if isinstance(exc, InvalidUuid):
        return Problem(422, "invalid_uuid", exc.detail)
    if isinstance(exc, CnsNotConfigured):
        return Problem(503, "upstream_unavailable", exc.detail, headers={"Retry-After": "3600"})
    if isinstance(exc, UnsignedDocument):
        return Problem(
            422, "unsigned_document", f"{exc}: sign it first (POST /v1/forms/fee-note/sign)"
        )
    if isinstance(exc, EmbeddedPdfMissing):
        return Problem(
            400,
            "bad_parameter",
            "the fee note's PDF/A must be embedded (base64) in its Document element: "
            "a deposit is one XML document",
            parameter="pdf",
            reason=exc.reason,
        )
    assert isinstance(exc, DuplicateUuid)
    existing = exc.existing
    return Problem(
        409,
        "duplicate_uuid",
        f"a message with UUID {existing.id} was already accepted with different content",
        uuid=existing.id,
        status_url=f"/v1/cns/messages/{existing.id}",
    )


def _accepted(message: Message, status: int = 202) -> web.Response:
    url = f"/v1/cns/messages/{message.id}"
    body: dict[str, Any] = {"uuid": message.id, "status": message.status.value, "status_url": url}
    if message.operation == "cancel":
        body["fee_note_uuid"] = message.subject
    return web.json_response(body, status=status, headers={"Location": url})


async def deposit_fee_note(request: web.Request) -> web.Response:
    """Persist the fee note (signing it first if it is not), then 202: accepted means
    on disk (API.md, Idempotency)."""
    runtime = _runtime(request)
    try:
        operations.check_configured(runtime)  # before reading the body
        body = await read_body(request)
        accepted = await operations.deposit_fee_note(runtime, body, _caller(request))
    except _REFUSALS as exc:
        raise _refusal(exc) from None
    return _accepted(accepted.message)


def _uuid_parameter(request: web.Request) -> str:
    raw = request.match_info["uuid"]
    try:
        return str(uuid_module.UUID(raw))
    except ValueError:
        raise bad_parameter("uuid", f"{raw[:64]!r} is not a UUID") from None


async def cancel_fee_note(request: web.Request) -> web.Response:
    """Queue the cancellation; it is sent only once its deposit has been delivered."""
    runtime = _runtime(request)
    try:
        operations.check_configured(runtime)  # before looking at the UUID
        note_uuid = _uuid_parameter(request)
        accepted = await operations.cancel_fee_note(runtime, note_uuid, _caller(request))
    except _REFUSALS as exc:
        raise _refusal(exc) from None
    except UnknownMessage:
        raise Problem(404, "not_found", f"no fee note {note_uuid} was deposited here") from None
    except InvalidState as exc:
        raise Problem(409, "not_cancellable", str(exc), uuid=note_uuid) from None
    return _accepted(accepted.message)


async def get_message(request: web.Request) -> web.Response:
    message_id = _uuid_parameter(request)
    message = await operations.message_status(_runtime(request), message_id, _caller(request))
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
    messages = await operations.list_messages(
        _runtime(request), _caller(request), status=status, since=since, after=after, limit=limit
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
        try:
            operations.check_configured(runtime)  # before reading the body
            body = await read_body(request)
            answer = await operations.exchange_pid(runtime, kind, body, _caller(request))
        except _REFUSALS as exc:
            raise _refusal(exc) from None
        except CnsTimeout:
            timeout = runtime.settings.pid_timeout
            raise Problem(
                504, "upstream_timeout", f"the CNS did not answer within {timeout:g} s"
            ) from None
        except CnsUnreachable:
            raise Problem(
                503,
                "upstream_unavailable",
                "the CNS cannot be reached",
                headers={"Retry-After": RETRY_AFTER},
            ) from None
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


HANDLERS = {
    "depositFeeNote": deposit_fee_note,
    "cancelFeeNote": cancel_fee_note,
    "getMessage": get_message,
    "listMessages": list_messages,
    "pidSimulation": _pid("simulation"),
    "pidValidation": _pid("validation"),
    "pidContestation": _pid("contestation"),
}
