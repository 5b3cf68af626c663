"""``sidecar audit verify|export`` and ``sidecar outbox list|retry``.

They open the same stores as the daemon: the SQLite files (WAL lets them read while it
runs; a ``retry`` waits for the daemon's write lock and is picked up at its next poll),
or the PostgreSQL database of ``[cns] outbox = "postgresql://…"``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ..audit import AUDIT_FILE
from ..config import Settings, is_database_url
from ..i18n import _
from ..paths import Paths
from ..progress import progress_iter
from ..storage import StorageUnavailable
from ..stores import open_journal, open_outbox
from .journal_feed import copy_events
from .outbox import InvalidState, Outbox, Status, UnknownMessage

__all__ = ["add_parsers", "audit_path", "outbox_path", "run"]


def audit_path(paths: Paths) -> Path:
    return paths.data_dir / AUDIT_FILE


def outbox_path(settings: Settings, paths: Paths) -> Path | str:
    """The SQLite outbox's file, or the PostgreSQL outbox's URL."""
    return settings.cns.outbox or paths.data_dir / "outbox.sqlite3"


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    audit = commands.add_parser("audit", help="check or export the audit journal")
    audit_commands = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = audit_commands.add_parser(
        "verify", help="walk the hash chain; name every changed, removed or reordered entry"
    )
    config_option(verify)
    export = audit_commands.add_parser("export", help="the entries as JSON lines on stdout")
    export.add_argument("--since", help="only entries at or after this RFC 3339 time")
    config_option(export)

    outbox = commands.add_parser("outbox", help="look at and retry CNS messages")
    outbox_commands = outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    listing = outbox_commands.add_parser("list", help="the messages and their states")
    listing.add_argument("--status", choices=[s.value for s in Status])
    listing.add_argument("--json", action="store_true")
    config_option(listing)
    retry = outbox_commands.add_parser(
        "retry", help="queue a failed or unknown message again (same UUID: the CNS deduplicates)"
    )
    retry.add_argument("uuid")
    config_option(retry)


def run(
    args: argparse.Namespace, settings: Settings, paths: Paths, out: TextIO = sys.stdout
) -> int:
    if args.command == "audit":
        return _audit(args, settings, paths, out)
    return _outbox(args, settings, paths, out)


def _journal_events(outbox: Outbox, settings: Settings, paths: Paths) -> None:
    """Copy the retry's journal event now (the daemon would at its next poll)."""
    journal = open_journal(audit_path(paths), settings.cns.outbox)
    try:
        copy_events(outbox, journal)
    except StorageUnavailable as exc:
        print(f"sidecar: the journal entry waits in the outbox: {exc}", file=sys.stderr)
    finally:
        journal.close()


def _audit(args: argparse.Namespace, settings: Settings, paths: Paths, out: TextIO) -> int:
    path = audit_path(paths)
    shared = is_database_url(settings.cns.outbox)  # the journal is in the outbox's database
    if not shared and not path.exists():
        print(f"sidecar: no audit journal in {paths.data_dir}", file=sys.stderr)
        return 1
    try:
        journal = open_journal(path, settings.cns.outbox)
    except StorageUnavailable as exc:
        print(f"sidecar: {exc}", file=sys.stderr)
        return 1
    try:
        if args.audit_command == "verify":
            report = journal.verify()
            if report.ok:
                print(f"audit journal OK: {report.entries} entries, chain intact", file=out)
                return 0
            for problem in report.problems:
                print(f"audit journal TAMPERED: {problem}", file=out)
            return 1
        try:
            # stdout is the data; the progress line goes to stderr on a terminal.
            entries = progress_iter(
                journal.entries(since=args.since), label=_("exporting"), unit="entry"
            )
            for entry in entries:
                print(json.dumps(entry.as_json(), ensure_ascii=False), file=out)
        except ValueError:
            print(f"sidecar: --since: not an RFC 3339 time: {args.since!r}", file=sys.stderr)
            return 2
        return 0
    finally:
        journal.close()


def _outbox(args: argparse.Namespace, settings: Settings, paths: Paths, out: TextIO) -> int:
    path = outbox_path(settings, paths)
    if isinstance(path, Path) and not path.exists():
        print(f"sidecar: no outbox at {path}", file=sys.stderr)
        return 1
    try:
        outbox = open_outbox(path, local_dir=paths.data_dir)
    except StorageUnavailable as exc:
        print(f"sidecar: {exc}", file=sys.stderr)
        return 1
    try:
        if args.outbox_command == "list":
            status = Status(args.status) if args.status else None
            after = 0
            while True:
                page = outbox.list(status=status, after=after, limit=500)
                for message in page:
                    if args.json:
                        print(json.dumps(message.as_json(), ensure_ascii=False), file=out)
                    else:
                        print(
                            f"{message.id}  {message.operation:<7} {message.status:<18} "
                            f"attempts={message.attempts:<3} {message.last_error}",
                            file=out,
                        )
                if len(page) < 500:
                    return 0
                after = page[-1].seq
        try:
            message = outbox.retry(args.uuid.strip().lower())
        except UnknownMessage:
            print(f"sidecar: no message {args.uuid}", file=sys.stderr)
            return 1
        except InvalidState as exc:
            print(f"sidecar: {exc}", file=sys.stderr)
            return 1
        except StorageUnavailable as exc:
            print(f"sidecar: {exc}", file=sys.stderr)
            return 1
        _journal_events(outbox, settings, paths)
        print(f"{message.id} queued again", file=out)
        return 0
    finally:
        outbox.close()
