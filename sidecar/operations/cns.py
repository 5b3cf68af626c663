"""The CNS use cases: deposit and cancel a fee note, the PID v2 exchange, the messages.

Each takes the running :class:`~sidecar.cns.subsystem.CnsRuntime`, the document or
identifiers as plain values and the :class:`Caller`, and returns a typed result; each
writes its own journal entries and counts its own metrics. They know no HTTP: the
refusals are exceptions the API maps to answers —

- :class:`CnsNotConfigured`: no CNS endpoint is configured;
- :class:`~sidecar.signing.xml_safety.XmlInputError` (not XML, a DTD, over the
  bounds) and :class:`~sidecar.cns.documents.InvalidUuid`: the message as posted;
- :class:`UnsignedDocument`: a fee note posted unsigned that this daemon cannot sign;
  :class:`EmbeddedPdfMissing`: one it could sign but for its PDF/A, not embedded;
  :class:`~sidecar.signing.forms.FormError` and its kin: the recipe refused it;
- :class:`~sidecar.cns.outbox.DuplicateUuid` (another content, or another client's),
  :class:`~sidecar.cns.outbox.UnknownMessage`, :class:`~sidecar.cns.outbox.InvalidState`;
- :class:`~sidecar.storage.StorageUnavailable`: the outbox or the journal cannot write;
- :class:`~sidecar.cns.transport.CnsTimeout`, :class:`~sidecar.cns.transport.CnsUnreachable`:
  a PID exchange that got no answer (journaled before it is raised).

A deposit parses the posted XML once (:func:`~sidecar.cns.documents.read_message`); a
fee note posted unsigned is signed by the ``fee-note`` recipe before it is persisted,
and its level is the one the recipe reports. The idempotency key is the body *as
posted*: re-posting the same unsigned body answers the first deposit, never signs again.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid as uuid_module
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..cns.documents import CnsMessage, read_message
from ..cns.outbox import DuplicateUuid, Message, Status
from ..cns.subsystem import CnsRuntime, FeeNoteSigner, SignedFeeNote
from ..cns.transport import CnsAnswer, CnsTimeout, CnsTransport, CnsUnreachable, PidKind
from ..cns.worker import TimestampUnavailable, Upgrader
from ..errors import BadInput, Misconfigured
from ..signing.forms import FormError
from ..signing.report import Level
from ..signing.sources import UpstreamFailure
from ..signing.trust_binding import TrustTimestampSource, TrustValidationDataSource
from ..signing.xades import augment_xml
from ..trust import TrustServices
from .signing import fee_note_signer

if TYPE_CHECKING:
    from .services import Services

__all__ = [
    "Accepted",
    "Caller",
    "CnsNotConfigured",
    "EmbeddedPdfMissing",
    "UnsignedDocument",
    "cancel_fee_note",
    "check_configured",
    "deposit_fee_note",
    "exchange_pid",
    "fee_note_seam",
    "list_messages",
    "message_status",
    "timestamp_upgrader",
]


@dataclass(frozen=True)
class Caller:
    """Who asks: its client name (``""`` when the daemon has no clients) and whether it
    sees every client's messages (the ``admin`` scope) or its own only."""

    name: str = ""
    admin: bool = False

    @property
    def owner(self) -> str | None:
        """Whose messages the caller may see: its own, or everyone's (None)."""
        return None if self.admin else self.name


@dataclass(frozen=True)
class Accepted:
    """A message on disk: ``created`` is false when it was accepted before."""

    message: Message
    created: bool


class CnsNotConfigured(Misconfigured):
    """No CNS endpoint is configured: nothing can be forwarded."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UnsignedDocument(BadInput):
    """The fee note is not signed and this daemon cannot sign it (no key, no profile)."""


class EmbeddedPdfMissing(BadInput):
    """The fee note's PDF/A is not embedded in it, and the recipe signs that PDF."""

    def __init__(self, reason: str) -> None:
        super().__init__("the fee note's PDF/A is not embedded in its Document element")
        self.reason = reason


def check_configured(runtime: CnsRuntime) -> CnsTransport:
    """The transport to the CNS; :class:`CnsNotConfigured` when there is none (callers
    may ask first, before they read a body)."""
    if runtime.transport is None:
        raise CnsNotConfigured(f"no CNS endpoint is configured: {runtime.unavailable}")
    return runtime.transport


async def _writable(runtime: CnsRuntime) -> None:
    """Refuse early (:class:`StorageUnavailable`) while a store is known not to write.

    A store that failed is probed with a real write first, so that the first request
    after the disk has room again goes through."""
    outbox, journal = runtime.outbox, runtime.journal
    if outbox.health.failure is not None:
        await outbox.run(outbox.probe)
    if journal.health.failure is not None:
        await asyncio.to_thread(journal.probe)


def _announce(runtime: CnsRuntime, message: Message, operation: str) -> None:
    """A newly accepted message: wake the worker, count it (the outbox journaled it)."""
    assert runtime.worker is not None  # check_configured() said there is one
    runtime.worker.wake()
    if runtime.metrics is not None:
        runtime.metrics.cns_message(operation, message.status.value)


async def deposit_fee_note(runtime: CnsRuntime, body: bytes, caller: Caller) -> Accepted:
    """Persist the fee note (signing it first if it is not): accepted means on disk."""
    check_configured(runtime)
    note = await asyncio.to_thread(read_message, body, runtime.rule)
    await _writable(runtime)
    # Idempotency is on what the caller sent, before any signing.
    digest = hashlib.sha256(body).hexdigest()
    outbox = runtime.outbox
    async with runtime.deposit_lock(note.uuid):
        # A committed deposit of this UUID is seen by any connection (the lock above keeps
        # this daemon's own posts of it one at a time): no need to queue behind the writes.
        existing = await outbox.read_point(outbox.get, note.uuid)
        if existing is not None:
            mine = caller.owner is None or existing.client == caller.owner
            if existing.digest != digest or existing.operation != "deposit" or not mine:
                raise DuplicateUuid(existing)
            return Accepted(existing, False)
        document, level, signed_here = body, note.level, False
        if level is None:
            signed = await _sign(runtime, note, caller)
            document, level, signed_here = signed.xml, Level(signed.level), True
        awaiting = (
            runtime.settings.defer_timestamp
            and not level.at_least(note.required)
            and runtime.upgrade_fee_note is not None
        )
        message, created = await outbox.run(
            outbox.enqueue_deposit,
            note.uuid,
            document,
            digest,
            client=caller.name,
            level=level.value,
            awaiting_timestamp=awaiting,
            detail={"bytes": len(document), "signed_here": signed_here},
        )
    if created:
        _announce(runtime, message, "deposit")
    return Accepted(message, created)


async def _sign(runtime: CnsRuntime, note: CnsMessage, caller: Caller) -> SignedFeeNote:
    """Sign an unsigned fee note with the ``fee-note`` recipe (which journals it).

    The recipe keeps the caller's UUID (it fills the profile's UUID element only when
    empty, and an empty one was refused before), so the signed note is not parsed again.
    """
    sign = runtime.sign_fee_note
    if sign is None:
        raise UnsignedDocument(
            "the fee note is not signed (no ds:Signature) and this daemon cannot sign "
            "it (no signing key or no 'fee-note' profile)"
        )
    try:
        # Journaled and counted by the signing operation, as every signature is.
        signed = await sign(note.data, client=caller.name)
    except FormError as exc:
        if exc.reason != "pdf_missing":
            raise
        raise EmbeddedPdfMissing(exc.reason) from None
    if not signed.level:  # a recipe that does not sign the XML: not a deposit's
        raise RuntimeError("the fee-note recipe returned an unsigned XML document")
    return signed


async def cancel_fee_note(runtime: CnsRuntime, fee_note_uuid: str, caller: Caller) -> Accepted:
    """Queue the cancellation; it is sent only once its deposit has been delivered."""
    check_configured(runtime)
    await _writable(runtime)
    outbox = runtime.outbox
    message, created = await outbox.run(
        outbox.enqueue_cancel,
        fee_note_uuid,
        str(uuid_module.uuid4()),
        client=caller.name,
        owner=caller.owner,
    )
    if created:
        _announce(runtime, message, "cancel")
    return Accepted(message, created)


async def message_status(runtime: CnsRuntime, message_id: str, caller: Caller) -> Message | None:
    """The message, if it exists and the caller may see it."""
    return await runtime.outbox.read_point(runtime.outbox.get, message_id, owner=caller.owner)


async def list_messages(
    runtime: CnsRuntime,
    caller: Caller,
    *,
    status: Status | None = None,
    since: float | None = None,
    after: int = 0,
    limit: int = 100,
) -> list[Message]:
    """One page of the messages the caller may see, after the cursor *after*."""
    outbox = runtime.outbox
    return await outbox.read(
        outbox.list, status=status, since=since, after=after, limit=limit, owner=caller.owner
    )


async def exchange_pid(
    runtime: CnsRuntime, kind: PidKind, body: bytes, caller: Caller
) -> CnsAnswer:
    """One synchronous PID v2 request (simulation, validation, contestation): the CNS's
    answer, whatever its status. Every outcome is journaled and counted."""
    transport = check_configured(runtime)
    message = await asyncio.to_thread(read_message, body, runtime.rule)
    await _writable(runtime)  # no answer from the CNS that the journal cannot keep
    digest = hashlib.sha256(body).hexdigest()

    async def record(outcome: str, **detail: Any) -> None:
        if runtime.metrics is not None:
            status = detail.get("cns_status") or 0
            result = "delivered" if 200 <= status < 300 else "rejected"
            if outcome != "answered" or status >= 500:
                result = "failed"
            runtime.metrics.cns_message(f"pid_{kind}", result)
        await runtime.journal.append_async(
            f"cns.pid.{kind}",
            outcome,
            client=caller.name,
            uuid=message.uuid,
            digest=digest,
            detail=detail,
        )

    try:
        answer = await transport.pid(kind, body, message.uuid)
    except CnsTimeout:
        await record("timeout")
        raise
    except CnsUnreachable as exc:
        await record("unreachable", error=str(exc))
        raise
    await record("answered", cns_status=answer.status)
    return answer


def fee_note_seam(services: Services) -> FeeNoteSigner | None:
    """The deposit's signer of unsigned fee notes: the ``fee-note`` recipe with the
    default key (:func:`~sidecar.operations.signing.fee_note_signer`, which journals
    and counts the signature); in offline mode (``[cns] defer_timestamp``) at B-B when
    the TSA cannot be had. ``None`` with no default key or no ``fee-note`` profile."""
    defer = services.settings.cns.defer_timestamp
    recipe = fee_note_signer(services, fallback_level=Level.B_B if defer else None)
    if recipe is None:
        return None
    sign = recipe

    async def sign_fee_note(xml: bytes, *, client: str = "") -> SignedFeeNote:
        form = await sign(xml, client=client)
        xml_level = form.level.value if form.level is not Level.NONE else ""
        pdf_level = form.pdf_level.value if form.pdf_level else None
        return SignedFeeNote(form.data, xml_level, form.key_id, pdf_level)

    return sign_fee_note


def timestamp_upgrader(trust: TrustServices) -> Upgrader | None:
    """Offline mode's upgrade of a B-B fee note held ``awaiting_timestamp`` to B-LT;
    ``None`` with no TSA configured."""
    if not trust.tsa.endpoints:
        return None
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

    return upgrade
