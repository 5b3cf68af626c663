"""Batch signing: many documents, one authorisation, one card session.

The day's fee notes signed with one PIN entry — what the German TI calls a comfort
signature and EU DSS offers as signing a batch of documents in one operation. A
:class:`Batch` holds the documents, the physician's
:class:`~sidecar.keys.authorisation.Authorisation` (bounded by ``[signing]
batch_max_documents`` and ``batch_max_minutes``) and one result per document: the
signed output, or the problem that document alone met.

Documents are signed concurrently (``batch_concurrency`` at a time), so that one
document's timestamp and revocation requests overlap another's key work; the key
itself signs one at a time (its session is not re-entrant). The revocation data of a
chain is fetched once and served from the trust layer's cache after that.

This module knows no HTTP: a batch is given ``sign_one`` (how to sign a document) and
``problem_of`` (how a failure is reported) by the API layer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .keys import Authorisation, KeyLocked, authorised

__all__ = [
    "Batch",
    "BatchDocument",
    "BatchStore",
    "DocumentResult",
    "SignOne",
    "SignedDocument",
]

log = logging.getLogger("sidecar.batches")

DocumentKind = Literal["form", "xml", "pdf"]
DocumentState = Literal["pending", "signed", "failed", "cancelled"]
BatchState = Literal["running", "done", "cancelled", "expired", "refused"]


@dataclass(frozen=True)
class BatchDocument:
    """One document of a batch, as the caller gave it."""

    index: int
    name: str
    kind: DocumentKind
    xml: bytes | None = None
    pdf: bytes | None = None
    profile: str | None = None
    level: str | None = None
    #: PDF only: the signature's reason and location.
    reason: str | None = None
    location: str | None = None

    def __repr__(self) -> str:  # no document content in a log line
        return f"<BatchDocument {self.index} {self.kind} {self.name!r}>"


@dataclass(frozen=True)
class SignedDocument:
    """A document's signed output and what describes it (levels, UUID)."""

    data: bytes
    content_type: str
    info: Mapping[str, str] = field(default_factory=dict)


@dataclass
class DocumentResult:
    state: DocumentState = "pending"
    signed: SignedDocument | None = None
    problem: dict[str, Any] | None = None
    #: Set once the state is no longer ``pending``.
    settled: asyncio.Event = field(default_factory=asyncio.Event, repr=False)


SignOne = Callable[[BatchDocument], Awaitable[SignedDocument]]
ProblemOf = Callable[[BaseException], dict[str, Any]]


class Batch:
    """A running or finished batch; its results stay readable until evicted."""

    def __init__(
        self,
        documents: list[BatchDocument],
        *,
        owner: str,
        key_id: str | None,
        authorisation: Authorisation | None,
        max_minutes: float,
    ) -> None:
        self.id = secrets.token_urlsafe(12)
        self.owner = owner
        self.key_id = key_id
        self.documents = documents
        self.results = [DocumentResult() for _ in documents]
        self.state: BatchState = "running"
        self.created = time.time()
        self.deadline = time.monotonic() + max_minutes * 60
        self.expires_at = self.created + max_minutes * 60
        self.finished: float | None = None
        self._authorisation = authorisation
        self._task: asyncio.Task[None] | None = None

    # -- running --------------------------------------------------------------

    async def sign_first(self, sign_one: SignOne, problem_of: ProblemOf) -> None:
        """Sign the first document now, before the batch is accepted.

        A PIN the token refuses (or a locked key) then answers the request itself
        (:class:`KeyLocked` propagates; the authorisation is closed) instead of
        failing a hundred documents one after the other.
        """
        with authorised(self._authorisation, close=False):
            try:
                await self._sign(0, sign_one, problem_of, raise_locked=True)
            except KeyLocked:
                self.state = "refused"
                self._end()
                raise

    def start(self, sign_one: SignOne, problem_of: ProblemOf, *, concurrency: int) -> None:
        """Sign the remaining documents in the background."""
        with authorised(self._authorisation, close=False):
            # The task copies this context: every signature of the batch sees the
            # batch's authorisation, and nothing else does.
            self._task = asyncio.create_task(
                self._run(sign_one, problem_of, concurrency), name=f"batch-{self.id}"
            )

    async def _run(self, sign_one: SignOne, problem_of: ProblemOf, concurrency: int) -> None:
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int) -> None:
            async with gate:
                if self.state != "running":
                    return
                if time.monotonic() > self.deadline:
                    self.state = "expired"
                    return
                await self._sign(index, sign_one, problem_of, raise_locked=False)

        try:
            await asyncio.gather(*(one(i) for i in range(len(self.documents))))
        finally:
            if self.state == "running":
                self.state = "done"
            self._end()

    async def _sign(
        self, index: int, sign_one: SignOne, problem_of: ProblemOf, *, raise_locked: bool
    ) -> None:
        result = self.results[index]
        if result.state != "pending":
            return
        try:
            result.signed = await sign_one(self.documents[index])
            result.state = "signed"
            # The input is not needed any more: only the output stays in memory.
            self.documents[index] = dataclasses.replace(self.documents[index], xml=None, pdf=None)
        except asyncio.CancelledError:
            raise
        except KeyLocked as exc:
            if raise_locked:
                raise
            result.state, result.problem = "failed", problem_of(exc)
            # The key cannot sign for this authorisation any more (PIN refused, card
            # pulled, time over): the rest would fail the same way, or worse, retry.
            if self._authorisation is not None and not self._authorisation.active:
                self.state = "refused" if exc.reason == "pin_incorrect" else "expired"
        except Exception as exc:
            result.state, result.problem = "failed", problem_of(exc)
            log.info("batch %s: document %d refused (%s)", self.id, index, type(exc).__name__)
        finally:
            if result.state != "pending":
                result.settled.set()

    def cancel(self) -> None:
        """End the batch early (the physician withdraws consent): nothing more is signed."""
        if self.state == "running":
            self.state = "cancelled"
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._end()

    async def wait(self) -> None:
        """Until the background work has ended (tests, shutdown)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def _end(self) -> None:
        if self._authorisation is not None:
            self._authorisation.close()
        for result in self.results:
            if result.state == "pending":
                result.state = "cancelled"
            result.settled.set()
        if self.finished is None and self.state != "running":
            self.finished = time.time()
            counts = self.counts()
            log.info(
                "batch %s %s: %d signed, %d failed, %d cancelled",
                self.id,
                self.state,
                counts["signed"],
                counts["failed"],
                counts["cancelled"],
            )

    # -- reporting ------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        counts = {"pending": 0, "signed": 0, "failed": 0, "cancelled": 0}
        for result in self.results:
            counts[result.state] += 1
        return counts

    def summary(self, href: Callable[[int], str]) -> dict[str, Any]:
        """The batch as its owner sees it: progress and one entry per document."""
        documents = []
        for doc, result in zip(self.documents, self.results, strict=True):
            entry: dict[str, Any] = {
                "index": doc.index,
                "name": doc.name,
                "kind": doc.kind,
                "state": result.state,
            }
            if result.signed is not None:
                entry.update(result.signed.info)
                entry["href"] = href(doc.index)
            if result.problem is not None:
                entry["problem"] = result.problem
            documents.append(entry)
        return {
            "id": self.id,
            "state": self.state,
            "key": self.key_id,
            "total": len(self.documents),
            **self.counts(),
            "created": _iso(self.created),
            "expires": _iso(self.expires_at),
            "finished": _iso(self.finished) if self.finished else None,
            "documents": documents,
        }


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class BatchStore:
    """The daemon's batches, by id; a finished one is kept *retention* seconds."""

    def __init__(self, *, retention: float = 3600.0) -> None:
        self._batches: dict[str, Batch] = {}
        self._retention = retention

    def add(self, batch: Batch) -> None:
        self._evict()
        self._batches[batch.id] = batch

    def get(self, batch_id: str) -> Batch | None:
        self._evict()
        return self._batches.get(batch_id)

    def __iter__(self) -> Iterator[Batch]:
        return iter(list(self._batches.values()))

    def _evict(self) -> None:
        now = time.time()
        for batch_id, batch in list(self._batches.items()):
            if batch.finished is not None and now - batch.finished > self._retention:
                del self._batches[batch_id]

    async def close(self) -> None:
        """Cancel every running batch (the daemon stops): their PINs are wiped."""
        for batch in self:
            batch.cancel()
            await batch.wait()
