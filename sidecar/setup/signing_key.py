"""The signing key: found on a token (PKCS#11) or read from a PKCS#12 file, then tested.

Tokens and their certificates are listed with :mod:`sidecar.keys.discovery`; the
chosen key is opened and made to sign with the daemon's own key readers
(:class:`~sidecar.keys.KeyRegistry`, :func:`~sidecar.keys.selftest.self_test`), its
PIN or passphrase read back from the OS secret store as the daemon will read it.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

from ..i18n import _, format_date
from ..keys import KeyConfig, KeyInfo, KeyLayerError, KeyRegistry
from ..keys.discovery import (
    FoundModule,
    SlotListing,
    TokenCertificate,
    TokenListing,
    find_modules,
    list_tokens,
)
from ..keys.selftest import self_test
from .arguments import flag_reader
from .secrets import Secret, secret_from_env
from .terminal import Prompter, SetupAborted, no_such_file

__all__ = [
    "KeyChoice",
    "describe_machine",
    "describe_slots",
    "key_from_flags",
    "key_interactively",
    "suggest_key_id",
    "test_key",
]


@dataclass(frozen=True)
class KeyChoice:
    """The ``[[keys]]`` table to write, and its secret (None: pinpad, or no passphrase)."""

    config: KeyConfig
    secret: Secret | None


@dataclass(frozen=True)
class _Candidate:
    module: Path
    token: TokenListing
    certificate: TokenCertificate


def suggest_key_id(subject: str) -> str:
    """A key id from a certificate subject: its common name, lower case, dashes."""
    match = re.search(r"Common Name: ([^,]+)", subject)
    name = match.group(1) if match else subject
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64].strip("-")
    return slug or "signing-key"


def _certificate_line(cert: TokenCertificate) -> str:
    kind = _("CA certificate") if cert.is_ca else cert.key_type
    return (
        _(
            "{subject}  [{kind}, expires {date}]",
            subject=cert.subject,
            kind=kind,
            date=format_date(cert.not_after),
        )
        + "\n       "
        + _(
            "issued by {issuer}; label {label!r}, id {id}",
            issuer=cert.issuer,
            label=cert.label,
            id=cert.id_hex or "-",
        )
    )


def describe_slots(module: Path, slots: list[SlotListing]) -> list[str]:
    """Lines telling what a module shows: slots, tokens, certificates."""
    if not slots:
        return [
            _(
                "{module}: no slot (no reader connected, or the smartcard service is not running)",
                module=module,
            )
        ]
    lines = [f"{module}:"]
    for slot in slots:
        token = slot.token
        if token is None:
            lines.append(
                "  "
                + _(
                    "slot {slot} ({description}): no token",
                    slot=slot.slot_id,
                    description=slot.description,
                )
            )
            continue
        extra = _(", PIN pad") if token.pinpad else ""
        maker = f"{token.manufacturer} {token.model}"
        lines.append(
            "  "
            + _(
                "slot {slot} ({description}): token {label!r} serial {serial} ({maker}{extra})",
                slot=slot.slot_id,
                description=slot.description,
                label=token.label,
                serial=token.serial or "-",
                maker=maker,
                extra=extra,
            )
        )
        if token.problem:
            lines.append(f"    {token.problem}")
        elif not token.certificates:
            lines.append("    " + _("no certificate"))
        lines.extend(f"    - {_certificate_line(c)}" for c in token.certificates)
    return lines


def describe_machine(extra_modules: list[Path] | None = None) -> list[str]:
    """What ``sidecar setup --list`` prints: every module found and what it holds."""
    given = [FoundModule("given", p) for p in extra_modules or []]
    named = {m.path.resolve() for m in given}
    modules = given + [m for m in find_modules() if m.path.resolve() not in named]
    if not modules:
        return [
            _("no PKCS#11 module found at the usual places (is the token middleware installed?)")
        ]
    lines: list[str] = []
    for found in modules:
        lines.append(f"[{found.middleware}]")
        try:
            lines.extend(describe_slots(found.path, list_tokens(found.path)))
        except KeyLayerError as exc:
            lines.append(f"{found.path}: {exc.detail}")
    return lines


def _candidates(
    modules: list[Path],
    *,
    token_label: str | None,
    token_serial: str | None,
    key_label: str | None,
    key_id: str | None,
) -> tuple[list[_Candidate], list[str]]:
    """Signer certificates matching the flags, and what was seen (for the error)."""
    found: list[_Candidate] = []
    seen: list[str] = []
    for module in modules:
        try:
            slots = list_tokens(module)
        except KeyLayerError as exc:
            seen.append(f"{module}: {exc.detail}")
            continue
        seen.extend(describe_slots(module, slots))
        for slot in slots:
            token = slot.token
            if token is None or not token.initialized:
                continue
            if token_label is not None and token.label != token_label:
                continue
            if token_serial is not None and token.serial != token_serial:
                continue
            for cert in token.certificates:
                if cert.is_ca:
                    continue
                if key_id is not None and cert.id_hex != key_id.lower():
                    continue
                if key_label is not None and key_id is None and cert.label != key_label:
                    continue
                found.append(_Candidate(module, token, cert))
    return found, seen


def _pkcs11_config(
    candidate: _Candidate,
    *,
    key_name: str | None,
    description: str | None,
    pin_source: str,
) -> KeyConfig:
    cert = candidate.certificate
    token = candidate.token
    return KeyConfig(
        id=key_name or suggest_key_id(cert.subject),
        backend="pkcs11",
        default=True,
        description=description if description is not None else cert.subject,
        module=candidate.module,
        token_label=token.label or None,
        token_serial=None if token.label else token.serial or None,
        # The key is found by CKA_ID, which a card's key and certificate share (their
        # labels may differ); by the certificate's label only when it has no id.
        key_id=cert.id_hex or None,
        key_label=None if cert.id_hex else cert.label,
        pin_source=pin_source,  # type: ignore[arg-type]
    )


def key_from_flags(args: argparse.Namespace) -> KeyChoice | None:
    """The key the flags describe; None with ``--no-key``."""
    get = flag_reader(args)
    if get("no_key"):
        return None
    if get("p12"):
        path = Path(get("p12")).expanduser().resolve()
        name = get("key_name") or suggest_key_id(path.stem)
        config = KeyConfig(
            id=name,
            backend="pkcs12",
            default=True,
            description=get("description") or "",
            path=path,
            passphrase_source="keyring",
        )
        passphrase = secret_from_env(
            get("p12_passphrase_env"), _("the PKCS#12 passphrase"), "--p12-passphrase-env"
        )
        return KeyChoice(config, Secret(config.secret_entry, "PKCS#12 passphrase", passphrase))
    if not any(get(k) for k in ("module", "token_label", "token_serial", "key_label", "key_id")):
        raise SetupAborted(
            _(
                "no signing key named: give --module/--token-label/--key-label/--key-id "
                "(a token), --p12 FILE, or --no-key"
            )
        )
    modules = [Path(get("module"))] if get("module") else [m.path for m in find_modules()]
    found, seen = _candidates(
        modules,
        token_label=get("token_label"),
        token_serial=get("token_serial"),
        key_label=get("key_label"),
        key_id=get("key_id"),
    )
    if len(found) != 1:
        problem = (
            _("no certificate matches the flags (--token-label, --key-label, --key-id)")
            if not found
            else _("several certificates match the flags (--token-label, --key-label, --key-id)")
        )
        raise SetupAborted(
            problem + "; " + _("seen:") + "\n" + "\n".join(seen or [_("no PKCS#11 module found")])
        )
    pinpad = get("pin_source") == "pinpad"
    config = _pkcs11_config(
        found[0],
        key_name=get("key_name"),
        description=get("description"),
        pin_source="pinpad" if pinpad else "keyring",
    )
    if pinpad:
        return KeyChoice(config, None)
    pin = secret_from_env(get("pin_env"), _("the token's PIN"), "--pin-env")
    return KeyChoice(config, Secret(config.secret_entry, f"PIN of key {config.id!r}", pin))


def _choose_module(ask: Prompter, given: Path | None) -> Path:
    if given is not None:
        return given
    found = find_modules()
    options = [f"{m.middleware}: {m.path}" for m in found] + [_("another module (type its path)")]
    if not found:
        ask.say(_("No PKCS#11 module found at the usual places."))
    index = ask.choose(_("Which PKCS#11 module (the token's middleware)?"), options)
    if index < len(found):
        return found[index].path
    return Path(ask.ask(_("Path of the PKCS#11 module (.so/.dll/.dylib)"))).expanduser()


def _pkcs11_interactively(ask: Prompter, args: argparse.Namespace) -> KeyChoice:
    get = flag_reader(args)
    given = Path(get("module")) if get("module") else None
    while True:
        module = _choose_module(ask, given)
        found, seen = _candidates(
            [module], token_label=None, token_serial=None, key_label=None, key_id=None
        )
        ask.say("\n".join(seen))
        if found:
            break
        ask.say(_("No signer certificate on any token of this module."))
        if not ask.confirm(_("Look again (insert the card first) or pick another module?"), True):
            raise SetupAborted(_("no signing key was chosen"))
        given = None
    options = [
        _(
            "{subject} [{key_type}, expires {date}] on token {token!r}",
            subject=c.certificate.subject,
            key_type=c.certificate.key_type,
            date=format_date(c.certificate.not_after),
            token=c.token.label,
        )
        for c in found
    ]
    chosen = found[ask.choose(_("Which certificate signs?"), options)]
    pin_source = "keyring"
    if chosen.token.pinpad and ask.confirm(
        _("The reader has a PIN pad: type the PIN on it at each start (nothing stored)?"), True
    ):
        pin_source = "pinpad"
    name = ask.ask(
        _("Key id (what API callers name it)"), suggest_key_id(chosen.certificate.subject)
    )
    config = _pkcs11_config(chosen, key_name=name, description=None, pin_source=pin_source)
    if pin_source == "pinpad":
        return KeyChoice(config, None)
    pin = ask.secret(
        _("PIN of token {token!r} (stored in the OS secret store)", token=chosen.token.label)
    )
    return KeyChoice(config, Secret(config.secret_entry, f"PIN of key {config.id!r}", pin))


def _pkcs12_interactively(ask: Prompter) -> KeyChoice:
    def exists(answer: str) -> str | None:
        return None if Path(answer).expanduser().is_file() else no_such_file(answer)

    path = Path(ask.ask(_("Path of the PKCS#12 file (.p12/.pfx)"), check=exists)).expanduser()
    name = ask.ask(_("Key id (what API callers name it)"), suggest_key_id(path.stem))
    config = KeyConfig(
        id=name,
        backend="pkcs12",
        default=True,
        path=path.resolve(),
        passphrase_source="keyring",
    )
    passphrase = ask.secret(_("Passphrase of the file (stored in the OS secret store)"))
    return KeyChoice(config, Secret(config.secret_entry, "PKCS#12 passphrase", passphrase))


def key_interactively(ask: Prompter, args: argparse.Namespace) -> KeyChoice | None:
    get = flag_reader(args)
    if get("p12"):
        kind = 1
    elif get("module"):
        kind = 0
    else:
        kind = ask.choose(
            _("Where is the physician's signing key?"),
            [
                _("on a smartcard or token (PKCS#11: LuxTrust card or stick, OpenSC...)"),
                _("in a PKCS#12 file (.p12/.pfx)"),
                _("none for now"),
            ],
        )
    if kind == 0:
        return _pkcs11_interactively(ask, args)
    if kind == 1:
        return _pkcs12_interactively(ask)
    return None


def test_key(config: KeyConfig) -> KeyInfo:
    """Open the key as the daemon will (secret from the OS secret store) and sign with it.

    Raises :class:`~sidecar.keys.KeyLayerError` or :class:`SelfTestFailed`.
    """

    async def run() -> KeyInfo:
        registry = KeyRegistry.from_configs([config])
        await registry.open()
        try:
            signer = await registry.acquire(config.id)
            await self_test(signer)
            return signer.describe()
        finally:
            await registry.close()

    return asyncio.run(run())
