"""A signature made is one event: one audit-journal entry, the metrics counted once.

Every operation that signs (the routes, a batch's documents, the CLI, the fee note a
CNS deposit signs) ends by :func:`record_signature`, never the API reading a level
back from its answer. A form holds two signatures (the embedded PDF's PAdES one and
the XML's XAdES one): one entry, whose ``detail`` names both, and
``sidecar_signatures`` counted for each.

A full or read-only disk does not take back a signature already made: the entry is
then missing, which the log, the recent-errors journal and the ``storage`` health
check say (the signing routes keep answering on a full disk, as they always did;
the deposit refuses before signing, see ``sidecar.api.cns``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..audit import AuditJournal
from ..metrics import Metrics
from ..signing.report import Level
from ..storage import StorageUnavailable

__all__ = ["SignatureEvent", "record_signature"]

log = logging.getLogger("sidecar.operations")


@dataclass(frozen=True)
class SignatureEvent:
    """What the journal and the metrics learn of one signing operation."""

    #: The journal's operation: ``sign.xml``, ``sign.pdf``, ``sign.<profile>`` (a form).
    operation: str
    key_id: str
    #: The document's own signature level (a form: its XML's; ``none`` if unsigned).
    level: str
    #: The signed output, whose SHA-256 the journal keeps (never the content).
    document: bytes
    #: Each signature made: (format, level), format ``xades`` or ``pades``.
    signatures: tuple[tuple[str, Level], ...]
    #: Who asked (the API client's name, ``cli``), when known.
    client: str = ""
    #: The form's UUID, if it has one.
    uuid: str = ""
    #: Seconds the operation took (the metrics' signing-duration histogram).
    seconds: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


async def record_signature(
    event: SignatureEvent, *, journal: AuditJournal | None, metrics: Metrics | None
) -> None:
    """Journal *event* (durable when this returns, unless the disk refuses) and count it."""
    if metrics is not None:
        for format, level in event.signatures:
            metrics.signature_made(format, level.value, event.seconds)
    if journal is None:
        return
    try:
        await journal.append_async(
            event.operation,
            "signed",
            client=event.client,
            uuid=event.uuid,
            digest=hashlib.sha256(event.document).hexdigest(),
            key_id=event.key_id,
            level=event.level,
            detail={
                **event.detail,
                "signatures": {format: level.value for format, level in event.signatures},
            },
        )
    except StorageUnavailable as exc:
        log.error("the audit journal could not record a signature (%s): %s", event.operation, exc)
        if metrics is not None:
            metrics.record_error(
                "audit", f"a signature ({event.operation}) is missing from the audit journal"
            )
