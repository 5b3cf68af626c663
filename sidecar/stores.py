"""Which store keeps the CNS outbox and the audit journal: ``[cns] outbox`` chooses.

An SQLite file (one daemon, the default) or a PostgreSQL URL (several daemons sharing
one outbox and one journal, see ``docs/hospital.md``). The PostgreSQL stores are
imported only when chosen: psycopg is loaded by the daemons that use it, and no store
module imports this chooser (no import cycle between a store and its variant).
"""

from __future__ import annotations

from pathlib import Path

from .audit import AuditJournal
from .cns.outbox import Outbox
from .config import CnsSettings, is_database_url

__all__ = ["open_journal", "open_outbox"]


def open_outbox(
    location: Path | str, *, local_dir: Path | None = None, settings: CnsSettings | None = None
) -> Outbox:
    """The outbox at *location*: a PostgreSQL URL, else an SQLite file.

    *local_dir*: where a PostgreSQL outbox's daemon keeps its files (the storage check
    watches that disk); *settings*: the delivery timeouts a PostgreSQL claim's lease
    must outlast (none: the command line, which delivers nothing)."""
    if is_database_url(location):
        from .cns.outbox_pg import PgOutbox, lease_for

        lease = lease_for(settings) if settings is not None else None
        return PgOutbox(str(location), local_dir=local_dir, lease_seconds=lease)
    return Outbox(Path(location))


def open_journal(sqlite_path: Path, outbox: Path | str | None = None) -> AuditJournal:
    """The journal beside the outbox at *outbox*: in its PostgreSQL database if it is
    one (``[cns] outbox = "postgresql://…"``), else the SQLite file *sqlite_path*."""
    if is_database_url(outbox):
        from .audit_pg import PgAuditJournal

        return PgAuditJournal(str(outbox))
    return AuditJournal(sqlite_path)
