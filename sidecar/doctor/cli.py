"""``sidecar doctor [--json] [--config FILE] [--sandbox] [--host H] [--port P]``: run the
checks, print, exit."""

from __future__ import annotations

import asyncio
import json
import shutil
import textwrap
from pathlib import Path
from typing import TextIO

import aiohttp

from .. import __version__
from ..i18n import N_, _
from ..paths import Paths
from . import DoctorContext, DoctorReport, load_context_settings, run_doctor

__all__ = ["collect_report", "doctor_command", "render_table"]

#: The status column, short in every language.
_LABEL = {"ok": N_("ok"), "warn": N_("WARN"), "fail": N_("FAIL"), "skip": N_("skip")}


def render_table(report: DoctorReport, width: int | None = None) -> str:
    """A table a sysadmin reads top to bottom; each problem says what to do."""
    width = width or max(80, min(shutil.get_terminal_size().columns, 140))
    name_width = max([len(f.check) for f in report.findings] + [5])
    labels = {status: _(label) for status, label in _LABEL.items()}
    label_width = max([5] + [len(label) for label in labels.values()])
    indent = label_width + 1 + name_width + 2
    lines = [f"sidecar doctor {__version__}", ""]
    for finding in report.findings:
        head = f"{labels[finding.status]:<{label_width}} {finding.check:<{name_width}}  "
        body = textwrap.wrap(finding.summary, max(30, width - indent)) or [""]
        lines.append(head + body[0])
        lines.extend(" " * indent + rest for rest in body[1:])
        if finding.fix and finding.status in ("warn", "fail"):
            fix = textwrap.wrap("-> " + finding.fix, max(30, width - indent))
            lines.extend(" " * indent + part for part in fix)
    lines.append("")
    broken = report.broken
    warnings = [f for f in report.findings if f.status == "warn"]
    if broken:
        lines.append(_("BROKEN: {checks}", checks=", ".join(f.check for f in broken)))
    elif warnings:
        names = ", ".join(f.check for f in warnings)
        lines.append(_("working, with warnings: {checks}", checks=names))
    else:
        lines.append(_("everything checked is working"))
    return "\n".join(lines) + "\n"


async def collect_report(
    paths: Paths,
    config_file: Path | None,
    sandbox: bool,
    host: str | None = None,
    port: int | None = None,
) -> DoctorReport:
    """Every check's findings, without printing them (``sidecar setup`` shows them too)."""
    settings, file, error = load_context_settings(paths, config_file)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        ctx = DoctorContext(
            paths=paths,
            settings=settings,
            sandbox=sandbox,
            session=session,
            config_file=file,
            config_error=error,
            host=host,
            port=port,
        )
        return await run_doctor(ctx)


def doctor_command(
    paths: Paths,
    *,
    config_file: Path | None,
    sandbox: bool,
    as_json: bool,
    out: TextIO,
    host: str | None = None,
    port: int | None = None,
) -> int:
    """Exit status: 0 when nothing is broken (warnings allowed), 1 otherwise."""
    report = asyncio.run(collect_report(paths, config_file, sandbox, host, port))
    if as_json:
        out.write(json.dumps(report.as_json(), indent=2) + "\n")
    else:
        out.write(render_table(report))
    return report.exit_code
