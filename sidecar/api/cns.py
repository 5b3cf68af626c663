"""CNS routes (API.md): fee-note deposit and cancellation through the outbox,
message status, and the synchronous PID v2 requests. Each handler parses the request,
calls one operation of :mod:`sidecar.operations.cns` and renders its result or refusal.
Also :func:`fee_note_context`, which lets the deposit sign and timestamp fee notes
itself, and :func:`cns_context`, the app's adapter to
:func:`sidecar.cns.subsystem.open_cns`.

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

import time
import uuid as uuid_module
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from aiohttp import web

from ..audit import AuditJournal
from ..clients import Scope
from ..cns.documents import InvalidUuid
from ..cns.outbox import DuplicateUuid, InvalidState, Message, Status, UnknownMessage
from ..cns.subsystem import CnsRuntime, FeeNoteSigner, SignedFeeNote, open_cns
from ..cns.transport import CnsTimeout, CnsUnreachable, PidKind
from ..cns.worker import TimestampUnavailable, Upgrader
from ..operations import cns as operations
from ..operations.cns import Caller, CnsNotConfigured, EmbeddedPdfMissing, UnsignedDocument
from ..signing.report import Level
from ..signing.sources import UpstreamFailure
from ..signing.trust_binding import TrustTimestampSource, TrustValidationDataSource
from ..signing.xades import augment_xml
from ..signing.xml_safety import XmlInputError
from .forms import fee_note_signer
from .guards import read_body
from .keys import CLIENT, HEALTH_CHECKS, HTTP_SESSION, PATHS, SANDBOX_PKI, SETTINGS
from .observe import METRICS
from .pdf import PADES, PROFILES
from .problems import Problem, bad_parameter, xml_problem
from .signing_keys import KEY_REGISTRY
from .timestamps import TRUST

__all__ = [
    "AUDIT_JOURNAL",
    "CNS",
    "FEE_NOTE_UPGRADER",
    "HANDLERS",
    "SIGN_FEE_NOTE",
    "cns_context",
    "fee_note_context",
]

#: The running CNS forwarding (outbox, transport, worker).
CNS = web.AppKey("cns", CnsRuntime)
#: The journal every signature and delivery is written to.
AUDIT_JOURNAL = web.AppKey("audit_journal", AuditJournal)
#: The deposit's signer of unsigned fee notes (see :mod:`sidecar.cns.subsystem`).
SIGN_FEE_NOTE = web.AppKey[FeeNoteSigner]("sign_fee_note")
#: The offline mode's upgrader of B-B fee notes to B-LT.
FEE_NOTE_UPGRADER = web.AppKey[Upgrader]("fee_note_upgrader")

#: Seconds a caller is told to wait when the CNS cannot be reached.
RETRY_AFTER = "30"
MAX_PAGE = 1000
#: SQLite's integers are 64-bit: a larger cursor is no cursor of ours.
MAX_CURSOR = 2**63 - 1


def _runtime(request: web.Request) -> CnsRuntime:
    return request.app[CNS]


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


async def cns_context(app: web.Application) -> AsyncIterator[None]:
    """Subsystem, after :func:`fee_note_context`: the app's adapter to
    :func:`~sidecar.cns.subsystem.open_cns`, which knows no app (the composition root
    will call it directly)."""
    # Imported here: the app module imports this one. ``serve --sandbox`` (the app
    # generates its sandbox) binds the sandbox's port; a sandbox handed in by the test
    # suite gets a free port, so that tests never collide.
    from .app import SANDBOX_DIR

    pki = app.get(SANDBOX_PKI)
    journal = app.get(AUDIT_JOURNAL)
    registry = app.get(PROFILES)
    async with open_cns(
        app[SETTINGS],
        app[PATHS],
        http=app[HTTP_SESSION],
        journal=journal,
        metrics=app.get(METRICS),
        health_checks=app[HEALTH_CHECKS],
        profiles=registry if registry is not None else (),
        sandbox_pki=pki,
        simulator_port=pki.cns_port if pki is not None and SANDBOX_DIR in app else 0,
        sign_fee_note=app.get(SIGN_FEE_NOTE),
        upgrade_fee_note=app.get(FEE_NOTE_UPGRADER),
    ) as runtime:
        app[CNS] = runtime
        if journal is None:
            app[AUDIT_JOURNAL] = runtime.journal
        yield


async def fee_note_context(app: web.Application) -> AsyncIterator[None]:
    """Subsystem, after signing and before ``cns_context``: the deposit's signing seams.

    :data:`SIGN_FEE_NOTE` when there is a default key and a ``fee-note`` profile;
    :data:`FEE_NOTE_UPGRADER` (offline mode) when there is a TSA.
    """
    registry = app.get(KEY_REGISTRY)
    profiles = app.get(PROFILES)
    metrics = app.get(METRICS)
    defer = app[SETTINGS].cns.defer_timestamp
    if (
        registry is not None
        and registry.default_id is not None
        and profiles is not None
        and profiles.get("fee-note") is not None
        and PADES in app
    ):
        recipe = fee_note_signer(app, fallback_level=Level.B_B if defer else None)

        async def sign_fee_note(xml: bytes) -> SignedFeeNote:
            started = time.perf_counter()
            form, key_id = await recipe(xml)
            xml_level = form.xml_level.value if form.xml_level else ""
            pdf_level = form.pdf_level.value if form.pdf_level else None
            # Counted here: this signature is made by the deposit, not by a signing route.
            if metrics is not None:
                if pdf_level:
                    metrics.signature_made("pades", pdf_level)
                if xml_level:
                    metrics.signature_made("xades", xml_level, time.perf_counter() - started)
            return SignedFeeNote(form.xml, xml_level, key_id, pdf_level)

        app[SIGN_FEE_NOTE] = sign_fee_note
    trust = app.get(TRUST)
    if trust is not None and trust.tsa.endpoints:
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
