"""``sidecar setup``: from nothing (or the sandbox) to a ``sidecar.toml`` for real parts.

Interactive on a terminal; ``--non-interactive`` takes every answer from flags
(secrets from environment variables named by flags, never from the command line)
for installers. Either way:

1. the signing key is found (a token through its PKCS#11 module, or a PKCS#12
   file), its PIN or passphrase stored in the OS secret store, and the key opened
   and made to sign exactly as the daemon will;
2. the TSA and the CNS environment are asked, their credentials stored likewise;
3. the file is written (mode 0600, never holding a secret), after passing the
   validation ``serve`` runs; an existing file is replaced only with ``--force``
   or a yes (its other settings are kept);
4. ``sidecar doctor`` runs on it and its verdict is shown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from ..config import ConfigError, Settings, load_settings
from ..i18n import _, format_date
from ..keys import KeyLayerError, KeyLocked
from ..keys.credentials import SecretUnavailable
from ..keys.selftest import SelfTestFailed
from ..paths import Paths
from .secrets import Secret, SecretStash
from .services import cns_from_flags, cns_interactively, tsa_from_flags, tsa_interactively
from .signing_key import KeyChoice, describe_machine, key_from_flags, key_interactively, test_key
from .terminal import Prompter, SetupAborted
from .toml_out import render_settings

__all__ = ["setup_command", "write_validated"]

#: Doctor findings that do not make setup fail: the daemon is started after setup.
_EXPECTED_AFTER_SETUP = frozenset({"daemon"})


def write_validated(target: Path, text: str) -> Settings:
    """Write *text* to *target* (0600) only if it passes the validation ``serve`` runs.

    The text is written beside the target first and checked from there, so that a
    refused configuration never replaces a working one.
    """
    from ..server import validate_for_serve

    target.parent.mkdir(parents=True, exist_ok=True)
    draft = target.with_name(f".{target.name}.setup-{os.getpid()}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            settings = load_settings(draft, required=True)
            validate_for_serve(settings)  # exactly what `serve` refuses
        except ConfigError as exc:
            raise ConfigError(target, exc.key, exc.problem) from None
        os.replace(draft, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            draft.unlink()
    return dataclasses.replace(settings, source=target)


def _start_from(target: Path, out: TextIO) -> Settings:
    """The existing file's settings (kept where setup asks nothing), or the defaults."""
    if not target.exists():
        return Settings()
    try:
        return load_settings(target)
    except ConfigError as exc:
        out.write(_("(the existing file does not load, it is replaced whole: {error})", error=exc))
        out.write("\n")
        return Settings()


def _tested_key(choice: KeyChoice, stash: SecretStash, ask: Prompter | None, out: TextIO) -> None:
    """Store the key's secret, open the key and sign; interactive: retry the secret."""
    secret = choice.secret
    while True:
        if secret is not None:
            stash.store(secret)
        try:
            info = test_key(choice.config)
        except (KeyLayerError, SelfTestFailed) as exc:
            detail = getattr(exc, "detail", str(exc))
            message = _("the key does not work: {detail}", detail=detail)
            if ask is None:
                raise SetupAborted(message) from None
            ask.say(f"  {message}")
            retry_secret = (
                isinstance(exc, KeyLocked)
                and exc.reason in ("pin_incorrect", "passphrase_incorrect")
                and secret is not None
            )
            if retry_secret and ask.confirm(
                _("Type it again? (a card counts wrong PINs and locks after a few)"), True
            ):
                assert secret is not None
                secret = Secret(secret.entry, secret.what, ask.secret(secret.what))
                continue
            raise SetupAborted(message) from None
        expires = format_date(info.not_after) if info.not_after else "-"
        out.write(_("key {key!r} signs: {subject}", key=info.id, subject=info.subject) + "\n")
        out.write(
            "    "
            + _(
                "issued by {issuer}; {key_type}, expires {date}",
                issuer=info.issuer,
                key_type=info.key_type,
                date=expires,
            )
            + "\n"
        )
        return


def _run_doctor(paths: Paths, file: Path) -> tuple[str, list[str]]:
    from ..doctor.cli import collect_report, render_table

    report = asyncio.run(collect_report(paths, file, sandbox=False))
    return render_table(report), [f.check for f in report.broken]


def _gather(
    args: argparse.Namespace,
    ask: Prompter | None,
    stash: SecretStash,
    base: Settings,
    out: TextIO,
) -> Settings:
    key = key_from_flags(args) if ask is None else key_interactively(ask, args)
    if key is not None:
        _tested_key(key, stash, ask, out)
    tsa, tsa_secrets = tsa_from_flags(args) if ask is None else tsa_interactively(ask)
    cns, cns_secrets = cns_from_flags(args) if ask is None else cns_interactively(ask)
    for secret in [*tsa_secrets, *cns_secrets]:
        stash.store(secret)
    trust = dataclasses.replace(base.trust, tsa=(tsa,) if tsa is not None else ())
    return dataclasses.replace(
        base,
        keys=(key.config,) if key is not None else (),
        trust=trust,
        cns=cns if cns is not None else type(base.cns)(),
        source=None,
    )


def setup_command(
    args: argparse.Namespace, paths: Paths, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """Exit status: 0 written and nothing broken but the daemon not yet (re)started;
    1 written, but doctor found something broken; 2 nothing written."""
    if args.list:
        extra = [Path(args.module)] if args.module else []
        out.write("\n".join(describe_machine(extra)) + "\n")
        return 0
    target: Path = (args.config or paths.config_file).expanduser().absolute()
    interactive = not args.non_interactive
    if interactive and not sys.stdin.isatty():
        err.write(
            _("sidecar setup: no terminal; an installer passes --non-interactive and flags") + "\n"
        )
        return 2
    ask = Prompter(out) if interactive else None
    replace = args.force or not target.exists()
    if not replace and (
        ask is None or not ask.confirm(_("{file} exists. Replace it?", file=target), False)
    ):
        refused = _(
            "sidecar setup: {file} exists; nothing written (--force replaces it)", file=target
        )
        err.write(refused + "\n")
        return 2
    stash = SecretStash()
    try:
        settings = _gather(args, ask, stash, _start_from(target, out), out)
        entries = stash.entries
        comment = (
            f"Written by 'sidecar setup' on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n"
            "No secret is in this file: PINs, passphrases and credentials are in the OS\n"
            'secret store, service "sidecar"'
            + (f", entries: {', '.join(entries)}." if entries else ".")
            + "\nEvery setting: docs/production.md."
        )
        write_validated(target, render_settings(settings, comment=comment))
    except (SetupAborted, ConfigError, KeyLayerError, SecretUnavailable) as exc:
        stash.undo()
        detail = getattr(exc, "detail", None) or str(exc)
        if isinstance(exc, SecretUnavailable):
            detail += " " + _("(docs/production.md, 'The OS secret store', says which to use)")
        err.write(f"sidecar setup: {detail}\n" + _("nothing written") + "\n")
        return 2
    except KeyboardInterrupt:
        stash.undo()
        err.write("\n" + _("sidecar setup: interrupted; nothing written") + "\n")
        return 130
    stash.keep()
    out.write("\n" + _("wrote {file}", file=target) + "\n")
    if args.no_doctor:
        return 0
    out.write("\n" + _("running sidecar doctor on it:") + "\n\n")
    table, broken = _run_doctor(paths, target)
    out.write(table)
    if "daemon" in broken:
        out.write(
            "\n"
            + _(
                "The daemon is not running yet: start it (sidecar serve, or the service), "
                "then run 'sidecar doctor' again."
            )
            + "\n"
        )
    else:
        out.write("\n" + _("Restart the daemon so that it reads the new configuration.") + "\n")
    return 1 if set(broken) - _EXPECTED_AFTER_SETUP else 0
