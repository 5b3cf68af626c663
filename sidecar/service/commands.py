"""``sidecar service install|uninstall|start|stop|status|run``.

Usable from an installer: no prompts, exit status 0 on success, 1 on failure, the
reason on stderr; ``status --json`` for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from ..config import Settings, load_settings
from ..paths import Paths
from .manager import (
    SERVICE_NAME,
    VIRTUAL_ACCOUNT,
    ServiceError,
    ServiceManager,
    default_manager,
    windows_spec,
)

__all__ = ["add_service_parser", "load_service_settings", "service_command"]


def load_service_settings(paths: Paths, config_file: Path | None) -> Settings:
    if config_file is not None:
        return load_settings(config_file, required=True)
    return load_settings(paths.config_file)


def add_service_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    service = commands.add_parser("service", help="install and control the OS service")
    actions = service.add_subparsers(dest="service_command", metavar="ACTION", required=True)
    install = actions.add_parser("install", help="register the service (admin / root)")
    install.add_argument("--config", type=Path, metavar="FILE", help="configuration file")
    install.add_argument(
        "--account",
        default=VIRTUAL_ACCOUNT,
        help=f"Windows account to run as (default {VIRTUAL_ACCOUNT}; 'LocalSystem')",
    )
    install.add_argument(
        "--start-type",
        choices=("auto-delayed", "auto", "demand", "disabled"),
        default="auto-delayed",
    )
    install.add_argument("--no-start", action="store_true", help="register, do not start")
    actions.add_parser("uninstall", help="remove the service (data is kept)")
    actions.add_parser("start", help="start the service")
    actions.add_parser("stop", help="stop the service (requests under way finish)")
    status = actions.add_parser("status", help="is it installed, running?")
    status.add_argument("--json", action="store_true")
    # What the Windows SCM starts, not for people: without help=, argparse leaves it out
    # of the list (help=SUPPRESS would print "==SUPPRESS==" there).
    run = actions.add_parser("run")
    run.add_argument("--config", type=Path, metavar="FILE")


def service_command(
    args: argparse.Namespace,
    paths: Paths,
    *,
    manager: ServiceManager | None = None,
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    action = args.service_command
    try:
        if action == "run":
            if sys.platform != "win32":
                raise ServiceError("'service run' is for the Windows service manager")
            from .windows import dispatch

            return dispatch(args.config)
        manager = manager or default_manager()
        if action == "install":
            if args.config is not None:  # refuse a broken file before registering it
                load_service_settings(paths, args.config)
            account = None if args.account.lower() == "localsystem" else args.account
            spec = windows_spec(config_file=args.config, account=account, start=args.start_type)
            manager.install(spec)
            print(f"service {spec.name!r} installed: {spec.command_line}", file=sys.stderr)
            if not args.no_start:
                manager.start(spec.name)
                print(f"service {spec.name!r} started", file=sys.stderr)
        elif action == "uninstall":
            status = manager.status(SERVICE_NAME)
            if status.state not in ("stopped", "not-installed"):
                manager.stop(SERVICE_NAME)
            if status.state != "not-installed":
                manager.uninstall(SERVICE_NAME)
            print(
                f"service {SERVICE_NAME!r} removed; data kept in {paths.data_dir}", file=sys.stderr
            )
        elif action == "start":
            manager.start(SERVICE_NAME)
        elif action == "stop":
            manager.stop(SERVICE_NAME)
        elif action == "status":
            status = manager.status(SERVICE_NAME)
            if args.json:
                out.write(json.dumps({"name": SERVICE_NAME, **vars(status)}) + "\n")
            else:
                pid = f" (pid {status.pid})" if status.pid else ""
                out.write(f"{SERVICE_NAME}: {status.state}{pid}\n")
            return 0 if status.state == "running" else 3  # LSB: 3 = not running
    except ServiceError as exc:
        print(f"sidecar: {exc}", file=sys.stderr)
        return 1
    return 0
