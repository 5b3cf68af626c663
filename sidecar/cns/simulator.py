"""A CNS simulator: the other end of the transport, for the sandbox and the tests.

The CNS's real web-service contract is confidential; this is ours, the default of
``[cns.wire]``. All bodies are XML (any namespace; elements are matched by local
name). Every request but ``GET /health`` carries ``Idempotency-Key: <UUID>``.

``POST /fee-notes`` (dépôt)
    Body: the signed fee note. Checks, in order: well-formed (no DTD), the profile's
    XSD (if one is configured), the signature (the pluggable verifier), the UUID in
    the document equals the idempotency key and is an RFC 4122 v4 UUID. The sandbox
    (``serve --sandbox``) checks the ``fee-note`` profile's XSD and verifies with
    :func:`xades_verifier`: our XAdES validator, the sandbox's roots, at least B-LT.
    ``200 <DepositAnswer><UUID/><Status>booked</Status><Reference/></DepositAnswer>``,
    or ``422 <Rejection><UUID/><Reason code="...">text</Reason>...</Rejection>``.
``DELETE /fee-notes/{uuid}`` (annulation)
    The key is the cancellation's own UUID. ``200 <CancelAnswer>`` with
    ``<Status>cancelled</Status>``; ``404`` unknown fee note; ``409`` already
    cancelled by another message.
``POST /pid/simulations`` | ``/pid/validations`` | ``/pid/contestations`` (PID v2)
    Body ``<PidRequest><UUID/><Patient matricule="..."/><Act code="C1" quantity="1"/>
    ...</PidRequest>`` (a contestation also carries ``<ValidationReference>`` and
    ``<Motive>``). The simulation answer computes amounts from :data:`PID_RULES`
    with anomaly codes (:data:`ANOMALIES`); a validation books the transaction and
    gives its reference; a contestation of a known validation is registered.
``GET /messages/{key}`` (status of a message, by its idempotency key)
    What became of a request, asked after its answer was lost: ``200
    <MessageStatus><UUID/><Known>true</Known><AnswerStatus>200</AnswerStatus>
    <Answer>base64 of the answer</Answer></MessageStatus>`` when the key was
    processed (the first answer, as a replay would give it), ``404 <Rejection>`` with
    reason ``UNKNOWN_MESSAGE`` when nothing was processed under it: sending it again
    is then safe. Idempotent, books nothing. Only ``latency`` applies to it (an answer
    lost to a slow CNS stays lost for the lookup too); the other faults concern
    processing.
``GET /health``
    ``200 ok``.

Idempotency: the first answer to a key is remembered (for the last ``kept_keys``
keys: :data:`KEPT_KEYS`); a request with a key already answered gets that answer again
and is never booked twice — whatever its content, as a server that deduplicates by key
does. Fault answers (injected 5xx, dropped
connections) are not remembered, since nothing was processed... except for the
"duplicate" fault (:attr:`Faults.drop_after_booking`), which books and then drops
the connection, so the client cannot know and sends the message again.

Faults (:class:`Faults`, changeable while running, also over ``POST /_simulator/faults``):
latency, a queue of status codes to answer next (503, 500...), connections dropped
after the request was read (before or after booking, or at random), a slow drip.
``GET /_simulator/stats`` gives the counts the tests assert on, and the process's id.

The simulator is an HTTP server in its own right (the CNS's stand-in, not a part of the
daemon's API): it alone under ``sidecar/cns/`` uses ``aiohttp.web``, for its own server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import inspect
import itertools
import logging
import os
import random
import socket
import uuid as uuid_module
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from lxml import etree

from ..signing.xml_safety import ForbiddenDtd, XmlInputError, parse_xml

__all__ = [
    "ANOMALIES",
    "PID_RULES",
    "CnsSimulator",
    "Faults",
    "PidRule",
    "SignatureVerifier",
    "check_signature_present",
    "serve_simulator",
    "xades_verifier",
]

log = logging.getLogger("sidecar.cns.simulator")

_K = TypeVar("_K")
_V = TypeVar("_V")

DS_NS = "http://www.w3.org/2000/09/xmldsig#"

#: Checks a fee note's signature: the document in, the reasons to refuse it out
#: (none: accepted). May be a plain function or a coroutine function.
SignatureVerifier = Callable[[bytes], Sequence[str] | Awaitable[Sequence[str]]]


@dataclass(frozen=True)
class PidRule:
    """One act of the (simulated) tariff: its label, fee, the CNS's share, a daily cap."""

    label: str
    fee: Decimal
    coverage: Decimal
    max_per_day: int = 1


#: A small tariff, enough to exercise the amounts and the anomalies.
PID_RULES: Mapping[str, PidRule] = {
    "C1": PidRule("Consultation du médecin généraliste", Decimal("52.10"), Decimal("0.88")),
    "C2": PidRule("Consultation du médecin spécialiste", Decimal("61.40"), Decimal("0.88")),
    "V1": PidRule("Visite au domicile du patient", Decimal("84.30"), Decimal("0.80")),
    "D1": PidRule("Examen bucco-dentaire", Decimal("35.20"), Decimal("1.00")),
    "E1": PidRule("Électrocardiogramme", Decimal("31.75"), Decimal("0.88"), max_per_day=2),
}

#: Anomaly codes with their texts, as the CNS's rules engine would give them.
ANOMALIES: Mapping[str, str] = {
    "A001": "Acte inconnu de la nomenclature",
    "A002": "Nombre d'actes supérieur au maximum journalier",
    "A003": "Quantité invalide",
    "R001": "Matricule du patient manquant",
    "R002": "Aucun acte dans la demande",
    "R003": "Référence de validation inconnue",
    "R004": "Motif de contestation manquant",
}


@dataclass
class Faults:
    """What goes wrong on purpose. Counters are consumed one request at a time."""

    #: Seconds to wait before answering anything.
    latency: float = 0.0
    #: Status codes to answer next, one per request, without processing (e.g. [503] * 5).
    statuses: list[int] = field(default_factory=list)
    #: Requests to read and then drop the connection of, without processing.
    drop_after_read: int = 0
    #: Requests to process (book) and then drop the connection of: a "duplicate" follows.
    drop_after_booking: int = 0
    #: Chance that any request is booked and then its connection dropped.
    drop_probability: float = 0.0
    #: Seconds over which the answer is trickled out (a slow drip).
    drip_seconds: float = 0.0


def check_signature_present(document: bytes) -> list[str]:
    """The default verifier: an XMLDSig ``Signature`` that is complete and well-formed.

    It proves nothing about the signer: :func:`xades_verifier` is the real check.
    """
    try:
        root = parse_xml(document).root
    except XmlInputError as exc:
        return [f"not well-formed: {exc}"]
    signatures = root.findall(f".//{{{DS_NS}}}Signature")
    if not signatures:
        return ["no ds:Signature"]
    reasons = []
    for signature in signatures:
        signed_info = signature.find(f"{{{DS_NS}}}SignedInfo")
        value = signature.find(f"{{{DS_NS}}}SignatureValue")
        if signed_info is None or signed_info.find(f"{{{DS_NS}}}Reference") is None:
            reasons.append("ds:Signature without ds:SignedInfo/ds:Reference")
        if signed_info is not None and signed_info.find(f"{{{DS_NS}}}SignatureMethod") is None:
            reasons.append("ds:SignedInfo without ds:SignatureMethod")
        text = "".join((value.text or "").split()) if value is not None else ""
        try:
            ok = bool(text) and bool(base64.b64decode(text, validate=True))
        except ValueError:
            ok = False
        if not ok:
            reasons.append("ds:SignatureValue missing or not base64")
    return reasons


def xades_verifier(
    trust_roots: Path | Sequence[Any], *, minimum: str = "B-LT"
) -> SignatureVerifier:
    """The real check: every XAdES signature TOTAL_PASSED at *minimum* or above,
    validated by :func:`sidecar.signing.xades_verify.verify_xml` with *trust_roots*
    (a PEM file, or asn1crypto certificates) and the data the document embeds only,
    as the CNS would with what it receives."""
    # Imported here: the simulator alone (e.g. as a stand-alone script with the
    # presence check) needs none of the signing stack.
    from ..signing.report import BASELINE_LEVELS, Indication
    from ..signing.xades_verify import VerificationPolicy, verify_xml
    from ..trust import load_certificates

    roots = load_certificates(trust_roots) if isinstance(trust_roots, Path) else list(trust_roots)
    policy = VerificationPolicy(trust_roots=roots)
    order = [level.value for level in BASELINE_LEVELS]
    if minimum not in order:
        raise ValueError(f"minimum must be one of {', '.join(order)}")

    async def verify(document: bytes) -> list[str]:
        try:
            reports = await verify_xml(document, policy)
        except XmlInputError as exc:
            return [f"document refused before validation: {exc}"]
        if not reports:
            return ["no ds:Signature"]
        reasons = []
        for report in reports:
            name = report.signature_id or "signature"
            if report.indication != Indication.TOTAL_PASSED:
                sub = f"/{report.sub_indication.value}" if report.sub_indication else ""
                why = f": {report.messages[0]}" if report.messages else ""
                reasons.append(f"{name}: {report.indication.value}{sub}{why}")
            elif order.index(report.level.value) < order.index(minimum):
                reasons.append(f"{name}: level {report.level.value}, {minimum} required")
        return reasons

    return verify


def _parser() -> etree.XMLParser:
    """For the XSD file only (a local file of ours): requests go through parse_xml."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def _local(root: etree._Element, name: str) -> list[etree._Element]:
    return root.xpath(f"//*[local-name()='{name}']")


def _text(root: etree._Element, name: str) -> str:
    found = _local(root, name)
    return (found[0].text or "").strip() if found else ""


def _is_v4(value: str) -> bool:
    try:
        parsed = uuid_module.UUID(value)
    except ValueError:
        return False
    return parsed.version == 4 and parsed.variant == uuid_module.RFC_4122


def _xml(tag: str, *children: etree._Element | tuple[str, str], **attrs: str) -> etree._Element:
    element = etree.Element(tag, **attrs)
    for child in children:
        if isinstance(child, tuple):
            etree.SubElement(element, child[0]).text = child[1]
        else:
            element.append(child)
    return element


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, content_type="application/xml")


def _answer(status: int, root: etree._Element) -> _Answer:
    return _Answer(status, etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _rejection(status: int, key: str, reasons: Sequence[tuple[str, str]]) -> _Answer:
    root = _xml("Rejection", ("UUID", key))
    for code, text in reasons:
        reason = etree.SubElement(root, "Reason", code=code)
        reason.text = text
    return _answer(status, root)


class _Dropped(Exception):
    """The connection was dropped on purpose."""


#: Booked documents the simulator keeps (each ~70 KiB with its PDF): a bound, so that
#: a long-running sandbox does not grow by every note it books.
KEPT_BOOKINGS = 256
#: ...and in ``serve --sandbox``'s own simulator, where nothing reads them: 256 signed
#: fee notes are ~18 MB of the daemon's memory (measured under the mixed load of #19).
SANDBOX_KEPT_BOOKINGS = 16


#: Idempotency keys (and fee note UUIDs) whose answers and counts the simulator keeps:
#: each ~1 KiB. The CNS's deduplication holds for the last this many keys; a key older
#: than that, sent again, would be processed again (no test or client waits that long).
KEPT_KEYS = 65_536
#: ...and in ``serve --sandbox``'s own simulator, which runs for days under load: at the
#: ~30 deposits/s a saturated 2-core machine delivers, minutes of keys; hours at a
#: practice's pace (``bench/bench_mixed.py`` grew it ~1 KiB per deposit without end).
SANDBOX_KEPT_KEYS = 8_192


class _Recent(dict[_K, _V]):
    """A dict that forgets its oldest entry past *size* entries."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, key: _K, value: _V) -> None:
        if key not in self and len(self) >= self.size:
            del self[next(iter(self))]
        super().__setitem__(key, value)


class _RecentCounter(Counter[str]):
    """A Counter that forgets its oldest key past *size* keys."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, key: str, value: int) -> None:
        if key not in self and len(self) >= self.size:
            del self[next(iter(self))]
        super().__setitem__(key, value)


class CnsSimulator:
    """The simulator's state and its aiohttp application (:meth:`app`)."""

    def __init__(
        self,
        *,
        xsd: Path | etree.XMLSchema | None = None,
        verifier: SignatureVerifier | None = None,
        rules: Mapping[str, PidRule] = PID_RULES,
        seed: int | None = None,
        uuid_reader: Callable[[etree._Element], str | None] | None = None,
        kept_bookings: int = KEPT_BOOKINGS,
        kept_keys: int = KEPT_KEYS,
    ) -> None:
        if isinstance(xsd, Path):
            xsd = etree.XMLSchema(etree.parse(str(xsd), parser=_parser()))
        self.xsd: etree.XMLSchema | None = xsd
        self.verifier: SignatureVerifier = verifier or check_signature_present
        self.rules = rules
        #: Where a fee note's UUID is (the CNS knows its own schema): by default the
        #: first element named UUID or MessageId, else the root's uuid/Id attribute.
        self.uuid_reader = uuid_reader or _fee_note_uuid
        self.faults = Faults()
        self._rng = random.Random(seed)  # noqa: S311 - fault injection, not secrets
        #: Idempotency key → the first answer, for the last ``kept_keys`` keys.
        self.answers: dict[str, _Answer] = _Recent(kept_keys)
        #: Fee note UUID → the booked document, for the last ``kept_bookings`` notes
        #: (``booking_counts`` keeps every UUID): ``serve --sandbox`` runs for days.
        self.bookings: dict[str, bytes] = _Recent(kept_bookings)
        #: Fee note UUID → how many times it was booked (the tests want 1), for the last
        #: ``kept_keys`` notes (what can be cancelled).
        self.booking_counts: Counter[str] = _RecentCounter(kept_keys)
        #: Fee note UUID → the cancellation's UUID.
        self.cancellations: dict[str, str] = {}
        self.validations: dict[str, str] = {}
        #: Idempotency key → requests received (duplicates included), last ``kept_keys``.
        self.requests: Counter[str] = _RecentCounter(kept_keys)
        #: Idempotency key → status lookups received (``GET /messages/{key}``), likewise.
        self.lookups: Counter[str] = _RecentCounter(kept_keys)
        self.dropped = 0
        self._references = itertools.count(1)
        self._lock = asyncio.Lock()

    # -- the application ---------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2, middlewares=[_dropped])
        app.router.add_get("/health", self._health)
        app.router.add_get("/messages/{key}", self._lookup)
        app.router.add_post("/fee-notes", self._keyed(self._deposit))
        app.router.add_delete("/fee-notes/{uuid}", self._keyed(self._cancel))
        for kind in ("simulation", "validation", "contestation"):
            app.router.add_post(f"/pid/{kind}s", self._keyed(self._pid(kind)))
        app.router.add_get("/_simulator/stats", self._stats)
        app.router.add_post("/_simulator/faults", self._set_faults)
        return app

    def stats(self) -> dict[str, Any]:
        return {
            "bookings": len(self.booking_counts),
            "booking_counts": dict(self.booking_counts),
            "cancellations": dict(self.cancellations),
            "requests": dict(self.requests),
            "lookups": dict(self.lookups),
            "dropped": self.dropped,
            # Which process books (the sandbox's runs in a child of the daemon's).
            "pid": os.getpid(),
        }

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _lookup(self, request: web.Request) -> web.Response:
        key = request.match_info["key"].strip().lower()
        self.lookups[key] += 1
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        answer = self.answers.get(key)
        if answer is None:
            reason = ("UNKNOWN_MESSAGE", "aucune demande traitée sous cette clé")
            return _rejection(404, key, [reason]).response()
        return _answer(
            200,
            _xml(
                "MessageStatus",
                ("UUID", key),
                ("Known", "true"),
                ("AnswerStatus", str(answer.status)),
                ("Answer", base64.b64encode(answer.body).decode("ascii")),
            ),
        ).response()

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _set_faults(self, request: web.Request) -> web.Response:
        data = await request.json()
        self.faults = Faults(**data)
        return web.json_response(asdict(self.faults))

    def _keyed(
        self, process: Callable[[web.Request, str, bytes], Awaitable[_Answer]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            key = request.headers.get("Idempotency-Key", "").strip().lower()
            faults = self.faults
            if not key:
                return _rejection(400, "", [("NO_KEY", "Idempotency-Key manquant")]).response()
            self.requests[key] += 1
            if faults.latency:
                await asyncio.sleep(faults.latency)
            if faults.statuses:
                status = faults.statuses.pop(0)
                return web.Response(status=status, text=f"simulated {status}")
            if faults.drop_after_read > 0:
                faults.drop_after_read -= 1
                self._drop(request)
            # One key at a time, so that two copies of one message racing each other
            # still make one booking.
            async with self._lock:
                answer = self.answers.get(key)
                if answer is None:
                    answer = await process(request, key, body)
                    self.answers[key] = answer
            if faults.drop_after_booking > 0:
                faults.drop_after_booking -= 1
                self._drop(request)
            if faults.drop_probability and self._rng.random() < faults.drop_probability:
                self._drop(request)
            if faults.drip_seconds:
                return await self._drip(request, answer, faults.drip_seconds)
            return answer.response()

        return handler

    def _drop(self, request: web.Request) -> None:
        self.dropped += 1
        if request.transport is not None:
            request.transport.abort()
        raise _Dropped

    async def _drip(
        self, request: web.Request, answer: _Answer, seconds: float
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=answer.status)
        response.content_type = "application/xml"
        response.content_length = len(answer.body)
        await response.prepare(request)
        chunks = max(1, min(len(answer.body), 10))
        size = -(-len(answer.body) // chunks)
        for start in range(0, len(answer.body), size):
            await asyncio.sleep(seconds / chunks)
            await response.write(answer.body[start : start + size])
        await response.write_eof()
        return response

    # -- fee notes -----------------------------------------------------------------------

    async def _deposit(self, request: web.Request, key: str, body: bytes) -> _Answer:
        try:
            root = parse_xml(body).root
        except ForbiddenDtd:
            return _rejection(422, key, [("DTD", "DTD interdite")])
        except XmlInputError as exc:
            return _rejection(400, key, [("XML", str(exc))])
        if self.xsd is not None and not self.xsd.validate(root):
            return _rejection(
                422,
                key,
                [("XSD", f"{e.line}:{e.column}: {e.message}") for e in self.xsd.error_log],
            )
        reasons = self.verifier(body)
        if inspect.isawaitable(reasons):
            reasons = await reasons
        if reasons:
            return _rejection(422, key, [("SIGNATURE", r) for r in reasons])
        note_uuid = self.uuid_reader(root)
        if note_uuid is None or not _is_v4(note_uuid):
            return _rejection(422, key, [("UUID", "UUID absent ou non conforme (RFC 4122 v4)")])
        if note_uuid.lower() != key:
            return _rejection(422, key, [("UUID", "l'UUID du document diffère de la clé")])
        self.bookings[key] = body
        self.booking_counts[key] += 1
        reference = f"CNS-{next(self._references):08d}"
        return _answer(
            200,
            _xml("DepositAnswer", ("UUID", key), ("Status", "booked"), ("Reference", reference)),
        )

    async def _cancel(self, request: web.Request, key: str, body: bytes) -> _Answer:
        note = request.match_info["uuid"].lower()
        if note not in self.booking_counts:
            return _rejection(404, key, [("UNKNOWN_FEE_NOTE", "mémoire d'honoraires inconnu")])
        if note in self.cancellations:
            return _rejection(409, key, [("ALREADY_CANCELLED", "déjà annulé")])
        self.cancellations[note] = key
        return _answer(
            200,
            _xml("CancelAnswer", ("UUID", key), ("FeeNote", note), ("Status", "cancelled")),
        )

    # -- PID v2 --------------------------------------------------------------------------

    def _pid(self, kind: str) -> Callable[[web.Request, str, bytes], Awaitable[_Answer]]:
        async def process(request: web.Request, key: str, body: bytes) -> _Answer:
            try:
                root = parse_xml(body).root
            except XmlInputError as exc:
                return _rejection(400, key, [("XML", str(exc))])
            if kind == "contestation":
                reference = _text(root, "ValidationReference")
                if reference not in self.validations.values():
                    return _rejection(422, key, [("R003", ANOMALIES["R003"])])
                if not _text(root, "Motive"):
                    return _rejection(422, key, [("R004", ANOMALIES["R004"])])
                number = f"CONT-{next(self._references):08d}"
                return _answer(
                    200,
                    _xml(
                        "PidContestationAnswer",
                        ("UUID", key),
                        ("Status", "registered"),
                        ("ValidationReference", reference),
                        ("Reference", number),
                    ),
                )
            computed = self._simulate(root, key)
            if isinstance(computed, _Answer):
                return computed
            if kind == "validation":
                reference = f"PID-{next(self._references):08d}"
                self.validations[key] = reference
                computed.tag = "PidValidationAnswer"
                etree.SubElement(computed, "Status").text = "validated"
                etree.SubElement(computed, "Reference").text = reference
            return _answer(200, computed)

        return process

    def _simulate(self, root: etree._Element, key: str) -> etree._Element | _Answer:
        patient = _local(root, "Patient")
        if not patient or not patient[0].get("matricule"):
            return _rejection(422, key, [("R001", ANOMALIES["R001"])])
        acts = _local(root, "Act")
        if not acts:
            return _rejection(422, key, [("R002", ANOMALIES["R002"])])
        answer = _xml("PidSimulationAnswer", ("UUID", key))
        anomalies: list[tuple[str, str]] = []
        total = covered = Decimal("0.00")
        for act in acts:
            code = act.get("code", "")
            try:
                quantity = int(act.get("quantity", "1"))
            except ValueError:
                quantity = 0
            line = etree.SubElement(answer, "Act", code=code, quantity=str(quantity))
            rule = self.rules.get(code)
            if rule is None:
                anomalies.append(("A001", f"{ANOMALIES['A001']}: {code}"))
                line.set("accepted", "false")
                continue
            if quantity < 1:
                anomalies.append(("A003", f"{ANOMALIES['A003']}: {code}"))
                line.set("accepted", "false")
                continue
            accepted = min(quantity, rule.max_per_day)
            if quantity > rule.max_per_day:
                anomalies.append(("A002", f"{ANOMALIES['A002']}: {code} ({rule.max_per_day})"))
            amount = rule.fee * accepted
            share = (amount * rule.coverage).quantize(Decimal("0.01"), ROUND_HALF_UP)
            line.set("accepted", "true")
            line.set("amount", f"{amount:.2f}")
            line.set("covered", f"{share:.2f}")
            line.text = rule.label
            total += amount
            covered += share
        etree.SubElement(answer, "Total").text = f"{total:.2f}"
        etree.SubElement(answer, "Covered").text = f"{covered:.2f}"
        etree.SubElement(answer, "PatientShare").text = f"{total - covered:.2f}"
        block = etree.SubElement(answer, "Anomalies")
        for code, text in anomalies:
            etree.SubElement(block, "Anomaly", code=code).text = text
        return answer


def _fee_note_uuid(root: etree._Element) -> str | None:
    found = root.xpath("//*[local-name()='UUID' or local-name()='MessageId']")
    if found:
        return (found[0].text or "").strip()
    return root.get("uuid") or root.get("Id")


@web.middleware
async def _dropped(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except _Dropped:
        # The transport is gone; this answer is never written.
        return web.Response(status=599)


@contextlib.asynccontextmanager
async def serve_simulator(
    simulator: CnsSimulator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    sock: socket.socket | None = None,
) -> AsyncIterator[str]:
    """Serve *simulator* on host:port (0: any free port), or on *sock* already bound;
    yields its base URL."""
    app = simulator.app()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    try:
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()


def main() -> None:
    """``python -m sidecar.cns.simulator --port 7422 [--xsd FILE] [--roots PEM]``: a
    stand-alone simulator (without ``--roots``, only a signature's presence is checked)."""
    parser = argparse.ArgumentParser(description="sidecar's CNS simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7422)
    parser.add_argument("--xsd", type=Path)
    parser.add_argument(
        "--roots", type=Path, help="PEM trust anchors: verify XAdES at B-LT with them"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    async def run() -> None:
        verifier = xades_verifier(args.roots) if args.roots else None
        simulator = CnsSimulator(xsd=args.xsd, verifier=verifier)
        async with serve_simulator(simulator, args.host, args.port) as url:
            log.info("CNS simulator at %s", url)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
