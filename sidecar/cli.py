"""The ``sidecar`` command line (API.md, "Command line": scripts depend on it)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .clients import ClientStore, TokenError, parse_fingerprint, parse_key_ids, parse_scopes
from .config import ConfigError, Settings, load_settings
from .i18n import _
from .logs import configure_logging
from .paths import HomeNotWritable, Paths, resolve_paths

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar",
        description="Local signing, timestamping and CNS forwarding daemon.",
    )
    parser.add_argument("--version", action="version", version=f"sidecar {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def config_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, metavar="FILE", help="configuration file (TOML)")

    serve = commands.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--sandbox", action="store_true", help="generate and serve a test PKI")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 7420)")
    config_option(serve)

    sandbox = commands.add_parser("sandbox", help="same as 'serve --sandbox'")
    sandbox.add_argument("--host", help="address to bind (default 127.0.0.1)")
    sandbox.add_argument("--port", type=int, help="port to bind (default 7420)")
    config_option(sandbox)

    token = commands.add_parser("token", help="manage API clients and their tokens")
    token_commands = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = token_commands.add_parser("create", help="make a client; prints its token once")
    create.add_argument("name")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        help="sign, timestamp, forward, verify, admin (repeat or comma-separate)",
    )
    create.add_argument("--replace", action="store_true", help="re-key an existing client")
    create.add_argument(
        "--keys",
        action="append",
        metavar="ID[,ID...]",
        help="the only signing keys it may use (default: every key)",
    )
    create.add_argument(
        "--cert-fingerprint",
        metavar="SHA256",
        help="its TLS client certificate's SHA-256 (needs [server] client_ca): "
        "that certificate then identifies it, and its token alone is refused",
    )
    create.add_argument(
        "--rate-limit", metavar="N/s", help="its own request rate, over [server] rate_limit"
    )
    listing = token_commands.add_parser("list", help="list the clients (never their tokens)")
    listing.add_argument("--json", action="store_true")
    revoke = token_commands.add_parser("revoke", help="remove a client")
    revoke.add_argument("name")

    keys = commands.add_parser("keys", help="list and test the signing keys")
    keys_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    keys_list = keys_commands.add_parser("list", help="the keys, as GET /v1/keys shows them")
    keys_list.add_argument("--json", action="store_true")
    keys_test = keys_commands.add_parser(
        "test", help="sign a test message with a key and verify it with its certificate"
    )
    keys_test.add_argument("id")
    for sub in (keys_list, keys_test):
        sub.add_argument("--sandbox", action="store_true", help="the sandbox's keys")
        config_option(sub)

    sign = commands.add_parser(
        "sign", help="sign XML/PDF files with the daemon's engines (no daemon needed)"
    )
    sign.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="XML or PDF files, or folders (their XML and PDF files, signed as one batch)",
    )
    sign.add_argument("--level", choices=("B-B", "B-T", "B-LT", "B-LTA"))
    sign.add_argument("--key", help="key id (sidecar keys list); the default key otherwise")
    sign.add_argument("--profile", help="form profile: run the form recipe (e.g. fee-note)")
    sign.add_argument("--pdf", type=Path, help="with --profile: the form's PDF to embed")
    sign.add_argument("--reason", help="PDF: reason shown in the signature")
    sign.add_argument("--location", help="PDF: location shown in the signature")
    sign.add_argument(
        "--out",
        help="output file (one input) or directory (several inputs, or a name ending in /: "
        "made if missing); default NAME.signed.EXT next to each input",
    )
    sign.add_argument(
        "--ask-pin",
        action="store_true",
        help="ask the key's PIN once for all the files (asked anyway for a key whose PIN "
        "comes with each operation)",
    )
    verify = commands.add_parser("verify", help="report the signatures of XML/PDF files")
    verify.add_argument(
        "files", nargs="+", type=Path, metavar="FILE", help="XML or PDF files, or folders"
    )
    verify.add_argument("--json", action="store_true")
    for sub in (sign, verify):
        sub.add_argument("--sandbox", action="store_true", help="the sandbox's keys and PKI")
        config_option(sub)

    config = commands.add_parser("config", help="check the configuration")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = config_commands.add_parser("check", help="load the file and report problems")
    config_option(check)

    status = commands.add_parser("status", help="the daemon's health, or a status page link")
    status.add_argument(
        "--open", action="store_true", help="print a link that signs the status page (/) in"
    )
    status.add_argument("--json", action="store_true", help="the health report as JSON")
    status.add_argument("--port", type=int, help="the daemon's port, if not the configured one")
    config_option(status)

    doctor = commands.add_parser("doctor", help="check the installation; name what is broken")
    doctor.add_argument("--json", action="store_true", help="machine-readable report")
    doctor.add_argument("--sandbox", action="store_true", help="also check the sandbox PKI")
    doctor.add_argument("--host", help="the daemon's address, if not the configured one")
    doctor.add_argument("--port", type=int, help="the daemon's port, if not the configured one")
    config_option(doctor)

    from .service.commands import add_service_parser

    add_service_parser(commands)
    from .cns.commands import add_parsers as add_cns_parsers

    add_cns_parsers(commands, config_option)
    from .setup.arguments import add_parser as add_setup_parser

    add_setup_parser(commands, config_option)
    from .trust.lists.commands import add_parser as add_trust_parser

    add_trust_parser(commands, config_option)
    return parser


def _settings(paths: Paths, file: Path | None) -> Settings:
    if file is not None:
        return load_settings(file, required=True)
    return load_settings(paths.config_file)


def _serve(args: argparse.Namespace, paths: Paths, sandbox: bool) -> int:
    from .server import run

    settings = _settings(paths, args.config)
    server = settings.server
    if args.host:
        server = dataclasses.replace(server, host=args.host)
    if args.port is not None:
        if not 1 <= args.port <= 65535:
            raise ConfigError(None, "--port", f"must be between 1 and 65535 (got {args.port})")
        server = dataclasses.replace(server, port=args.port)
    settings = dataclasses.replace(settings, server=server)
    configure_logging(settings.log.level, settings.log.format, settings.log.file)
    return run(settings, paths, sandbox=sandbox)


def _token(args: argparse.Namespace, paths: Paths) -> int:
    if args.token_command in ("create", "revoke"):
        paths.ensure_writable()
    store = ClientStore(paths.clients_file)
    if args.token_command == "create":
        token = store.create(
            args.name,
            parse_scopes(args.scope),
            replace=args.replace,
            keys=parse_key_ids(args.keys) if args.keys is not None else None,
            cert_sha256=(
                parse_fingerprint(args.cert_fingerprint) if args.cert_fingerprint else None
            ),
            rate_limit=args.rate_limit,
        )
        # stdout only, so an installer can capture it; it is not stored anywhere.
        print(token)
        print(
            f"client {args.name!r} created; keep this token, it is not shown again",
            file=sys.stderr,
        )
    elif args.token_command == "list":
        if args.json:
            print(json.dumps([c.public() for c in store.clients()], indent=2))
        else:
            for c in store.clients():
                keys = ",".join(sorted(c.keys)) if c.keys is not None else "*"
                extra = "".join(
                    f" {label}={value}"
                    for label, value in (("cert", c.cert_sha256), ("rate", c.rate_limit))
                    if value
                )
                print(
                    f"{c.name:<24} {','.join(sorted(c.scopes)):<40} {c.created} keys={keys}{extra}"
                )
    elif args.token_command == "revoke":
        store.revoke(args.name)
        print(f"client {args.name!r} revoked", file=sys.stderr)
    return 0


def _keys(args: argparse.Namespace, paths: Paths) -> int:
    import asyncio

    settings = _settings(paths, args.config)
    configure_logging("warning")
    if args.sandbox:
        paths.ensure_writable()  # the sandbox's PKI is made in the home
    return asyncio.run(_keys_async(args, settings, paths))


async def _keys_async(args: argparse.Namespace, settings: Settings, paths: Paths) -> int:
    from .keys import KeyLayerError, KeyRegistry
    from .keys.selftest import SelfTestFailed, self_test
    from .operations.key_info import key_info_json

    configs = list(settings.keys)
    if not configs and args.sandbox:
        from .sandbox.keys import sandbox_key_configs
        from .sandbox.pki import ensure_sandbox_pki

        pki = ensure_sandbox_pki(
            paths.sandbox_dir, host=settings.sandbox.host, port=settings.sandbox.port
        )
        configs = sandbox_key_configs(pki, softhsm=settings.sandbox.softhsm)
    registry = KeyRegistry.from_configs(configs)
    try:
        await registry.open()
    except KeyLayerError as exc:
        raise ConfigError(settings.source, "keys", str(exc)) from None
    try:
        if args.keys_command == "list":
            infos = [key_info_json(info) for info in registry.describe()]
            if args.json:
                print(json.dumps(infos, indent=2))
            elif not infos:
                print("no signing key is configured ([[keys]] in sidecar.toml)")
            for info in [] if args.json else infos:
                state = "unlocked" if info["unlocked"] else f"LOCKED: {info['locked_detail']}"
                print(
                    f"{info['id']:<20} {info['backend']:<7} {info['key_type'] or '?':<9} "
                    f"expires {info['not_after'] or '?'} ({info['days_to_expiry']} days)  "
                    f"{state}\n    {info['subject'] or ''}"
                )
            return 0
        try:
            signer = registry.get(args.id)
            await self_test(signer)
        except (KeyLayerError, SelfTestFailed) as exc:
            print(f"sidecar: key test failed: {exc}", file=sys.stderr)
            return 2
        print(f"key {signer.id!r}: signature verified with its certificate ({signer.key_type})")
        return 0
    finally:
        await registry.close()


def _operation_pin(settings: Settings, args: argparse.Namespace) -> str | None:
    """The PIN typed once on the terminal for this command, when one is wanted."""
    import getpass

    wanted = args.ask_pin
    alone = len(settings.keys) == 1
    for key in settings.keys:
        chosen = key.id == args.key or (args.key is None and (key.default or alone))
        wanted = wanted or (chosen and key.pin_source == "request")
    if not wanted:
        return None
    return getpass.getpass(f"PIN for key {args.key or 'default'}: ")


#: What a folder given to ``sign``/``verify`` contributes: its XML and PDF files.
_DOCUMENT_SUFFIXES = (".xml", ".pdf")


def _expand_folders(files: Sequence[Path], *, signing: bool) -> list[Path]:
    """Each folder replaced by its XML and PDF files (not its subfolders), sorted; to
    sign, without the ``.signed.`` outputs of an earlier run (signing a folder twice
    must not sign the signatures). A folder with no such file stays, to be named."""
    expanded: list[Path] = []
    for given in files:
        if not given.is_dir():
            expanded.append(given)
            continue
        found = sorted(
            f
            for f in given.iterdir()
            if f.is_file()
            and f.suffix.lower() in _DOCUMENT_SUFFIXES
            and not (signing and ".signed." in f.name)
        )
        expanded.extend(found or [given])
    return expanded


def _documents(args: argparse.Namespace, paths: Paths) -> int:
    import asyncio

    from .batch import SignRequest, sign_files, verify_files

    settings = _settings(paths, args.config)
    configure_logging("warning", settings.log.format)
    paths.ensure_writable()  # the trust layer's caches, the sandbox's PKI
    args.files = _expand_folders(args.files, signing=args.command == "sign")
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        print(_("sidecar: no such file: {files}", files=", ".join(missing)), file=sys.stderr)
        return 2
    if args.command == "verify":
        return asyncio.run(
            verify_files(
                settings, paths, args.files, sandbox=args.sandbox, as_json=args.json, out=sys.stdout
            )
        )
    if args.pdf is not None and not args.profile:
        print(_("sidecar: --pdf goes with --profile (the form recipe)"), file=sys.stderr)
        return 2
    output = None if args.out is None else Path(args.out)
    if output is not None and (len(args.files) > 1 or args.out.endswith(("/", os.sep))):
        if output.exists() and not output.is_dir():
            print(
                _("sidecar: --out {path} is a file, not a directory", path=output), file=sys.stderr
            )
            return 2
        output.mkdir(parents=True, exist_ok=True)
    request = SignRequest(
        level=args.level,
        key=args.key,
        profile=args.profile,
        pdf=args.pdf,
        reason=args.reason,
        location=args.location,
    )
    try:
        return asyncio.run(
            sign_files(
                settings,
                paths,
                args.files,
                request,
                sandbox=args.sandbox,
                output=output,
                out=sys.stdout,
                pin=_operation_pin(settings, args),
            )
        )
    except ValueError as exc:
        print(f"sidecar: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status."""
    try:
        status = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        # The reader went away (`sidecar ... --json | head`): stop quietly, as Unix
        # tools do; stdout goes to devnull so the interpreter's last flush is silent.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return status


def _main(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    paths = resolve_paths()
    _use_language(paths, getattr(args, "config", None))
    try:
        if args.command == "serve":
            return _serve(args, paths, sandbox=args.sandbox)
        if args.command == "sandbox":
            return _serve(args, paths, sandbox=True)
        if args.command == "token":
            return _token(args, paths)
        if args.command == "keys":
            return _keys(args, paths)
        if args.command in ("sign", "verify"):
            return _documents(args, paths)
        if args.command == "status":
            from .status import status_command

            return status_command(
                _settings(paths, args.config), paths, open_link=args.open, as_json=args.json,
                out=sys.stdout, err=sys.stderr, port=args.port,
            )  # fmt: skip
        if args.command == "doctor":
            from .doctor.cli import doctor_command

            return doctor_command(
                paths,
                config_file=args.config,
                sandbox=args.sandbox,
                as_json=args.json,
                out=sys.stdout,
                host=args.host,
                port=args.port,
            )
        if args.command == "service":
            from .service.commands import service_command

            return service_command(args, paths)
        if args.command in ("audit", "outbox"):
            from .cns.commands import run as cns_command

            return cns_command(args, _settings(paths, args.config), paths)
        if args.command == "setup":
            from .setup.command import setup_command

            return setup_command(args, paths)
        if args.command == "trust":
            from .trust.lists.commands import trust_command

            return trust_command(args, _settings(paths, args.config), paths, sys.stdout)
        if args.command == "config":
            from .server import validate_for_serve

            settings = _settings(paths, args.config)
            validate_for_serve(settings)  # exactly what `serve` refuses
            source = settings.source or _("defaults (no file)")
            print(_("configuration OK: {source}", source=source))
            return 0
    except ConfigError as exc:
        print(_("sidecar: configuration refused: {error}", error=exc), file=sys.stderr)
        return 2
    except TokenError as exc:
        print(f"sidecar: {exc}", file=sys.stderr)
        return 2
    except HomeNotWritable as exc:
        print(f"sidecar: {exc}", file=sys.stderr)
        return 2
    except PermissionError as exc:
        # Whatever the up-front checks could not foresee (a log file elsewhere...).
        where = exc.filename or _("a file")
        print(
            _(
                "sidecar: permission denied on {file}: run sidecar as the user who owns it "
                "(the daemon's user), or fix its permissions",
                file=where,
            ),
            file=sys.stderr,
        )
        return 2
    except Exception as exc:
        if not _is_sandbox_error(exc):
            raise
        print(f"sidecar: {exc}", file=sys.stderr)  # a port taken, a damaged sandbox...
        return 1
    parser.print_help()
    return 2


def _use_language(paths: Paths, file: Path | None) -> None:
    """``[ui] language``, else the OS locale's (LC_ALL, LC_MESSAGES, LANG)."""
    from .i18n import choose, language_from_environment, use

    try:
        configured = load_settings(file or paths.config_file).ui.language
    except ConfigError:
        configured = None  # the command itself says what is wrong with the file
    use(choose(configured, language_from_environment(os.environ)))


def _is_sandbox_error(exc: Exception) -> bool:
    # Looked up only once raised: importing the sandbox costs a second at every start.
    module = sys.modules.get("sidecar.sandbox.pki")
    return module is not None and isinstance(exc, module.SandboxError)


if __name__ == "__main__":
    sys.exit(main())
