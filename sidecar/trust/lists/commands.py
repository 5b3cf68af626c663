"""``sidecar trust refresh`` and ``sidecar trust lists``: the trusted lists from a shell."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from typing import TextIO

import aiohttp

from ...config import Settings
from ...paths import Paths
from .service import ListService

__all__ = ["add_parser", "trust_command"]


def add_parser(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    config_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    trust = commands.add_parser("trust", help="the EU trusted lists ([trust.lists])")
    actions = trust.add_subparsers(dest="trust_command", metavar="ACTION", required=True)
    refresh = actions.add_parser("refresh", help="fetch the lists now, verify and cache them")
    refresh.add_argument("--json", action="store_true", help="machine-readable report")
    config_option(refresh)
    show = actions.add_parser("lists", help="the cached lists, verified again (no network)")
    show.add_argument("--json", action="store_true", help="machine-readable report")
    config_option(show)


def _print(service: ListService, out: TextIO, as_json: bool) -> None:
    report = service.as_json()
    if as_json:
        json.dump(report, out, indent=1)
        out.write("\n")
        return
    for item in report["lists"]:
        out.write(
            f"{item['list']:3} {item['state']:8} sequence {item['sequence']}, issued "
            f"{item['issued']}, next update {item['next_update']}, "
            f"fetched {item['age_seconds'] // 3600} h ago\n"
        )
    for problem in report["last_refresh_problems"]:
        out.write(f"  ! refresh: {problem}\n")
    for problem in report["problems"]:
        out.write(f"  ! {problem}\n")


async def _run(args: argparse.Namespace, settings: Settings, paths: Paths, out: TextIO) -> int:
    # The command works whether or not the daemon has the lists enabled yet: a sysadmin
    # fills the cache first, then turns them on.
    service = ListService(replace(settings.trust.lists, enabled=True), paths.data_dir)
    if args.trust_command == "refresh":
        async with aiohttp.ClientSession() as session:
            await service.refresh(session)
    else:
        await service.load()
    _print(service, out, args.json)
    return 0 if service.current.usable else 1


def trust_command(args: argparse.Namespace, settings: Settings, paths: Paths, out: TextIO) -> int:
    """Exit status 0 when at least one member state's list is usable, else 1."""
    return asyncio.run(_run(args, settings, paths, out))
