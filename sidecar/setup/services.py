"""The TSA (``[[trust.tsa]]``) and the CNS environment (``[cns]``) setup asks for.

Answers are checked with the configuration's own field checks (the ``check``
of each :mod:`sidecar.config` field), so a URL or an OID is refused here for the
reason ``serve`` would refuse it. Credentials become OS secret store entries
named in the file (``password_keyring``, ``token_keyring``...).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from ..config import CnsAuth, CnsBaseUrls, CnsSettings, CnsTls, TsaSettings
from ..i18n import _
from .arguments import flag_reader
from .secrets import Secret, secret_from_env
from .terminal import Prompter, SetupAborted, no_such_file

__all__ = [
    "cns_from_flags",
    "cns_interactively",
    "field_check",
    "tsa_from_flags",
    "tsa_interactively",
]

Check = Callable[[str], "str | None"]


def field_check(cls: type[Any], name: str) -> Check:
    """The configuration's own check of ``cls.name``, as "why not" (None: fine)."""
    spec = next(f for f in dataclasses.fields(cls) if f.name == name)
    check = spec.metadata.get("check")

    def run(value: str) -> str | None:
        if check is None:
            return None
        try:
            check(value)
        except ValueError as exc:
            return str(exc)
        return None

    return run


def _checked(value: str, check: Check, flag: str) -> str:
    problem = check(value)
    if problem is not None:
        raise SetupAborted(f"{flag}: {problem}")
    return value


def _tsa_entry(url: str) -> str:
    return f"tsa:{urlsplit(url).hostname or url}"


def tsa_from_flags(args: argparse.Namespace) -> tuple[TsaSettings | None, list[Secret]]:
    get = flag_reader(args)
    if get("no_tsa"):
        return None, []
    if not get("tsa_url"):
        raise SetupAborted(_("no TSA named: give --tsa-url (and its credentials), or --no-tsa"))
    url = _checked(get("tsa_url"), field_check(TsaSettings, "url"), "--tsa-url")
    policy = get("tsa_policy")
    if policy:
        _checked(policy, field_check(TsaSettings, "policy"), "--tsa-policy")
    username = get("tsa_username") or ""
    secrets: list[Secret] = []
    entry = ""
    if username:
        entry = _tsa_entry(url)
        password = secret_from_env(
            get("tsa_password_env"), _("the TSA password"), "--tsa-password-env"
        )
        secrets.append(Secret(entry, "TSA password", password))
    tsa = TsaSettings(url=url, policy=policy or None, username=username, password_keyring=entry)
    return tsa, secrets


def tsa_interactively(ask: Prompter) -> tuple[TsaSettings | None, list[Secret]]:
    ask.say(
        "\n"
        + _(
            "Time-stamping authority (RFC 3161): the qualified TSA named in the CNS's "
            "technical documentation."
        )
    )
    url = ask.ask(_("TSA URL"), optional=True, check=field_check(TsaSettings, "url"))
    if not url:
        ask.say("  " + _("no TSA: only B-B signatures until one is configured ([[trust.tsa]])"))
        return None, []
    policy = ask.ask(
        _("TSA policy OID to demand"), optional=True, check=field_check(TsaSettings, "policy")
    )
    username = ask.ask(_("TSA user name (HTTP basic auth)"), optional=True)
    secrets: list[Secret] = []
    entry = ""
    if username:
        entry = _tsa_entry(url)
        secrets.append(
            Secret(entry, "TSA password", ask.secret(_("TSA password (OS secret store)")))
        )
    tsa = TsaSettings(url=url, policy=policy or None, username=username, password_keyring=entry)
    return tsa, secrets


def _cns(
    environment: str,
    url: str,
    auth: CnsAuth,
    tls: CnsTls,
) -> CnsSettings:
    return CnsSettings(
        environment=environment,  # type: ignore[arg-type]
        base_urls=CnsBaseUrls(**{environment: url}),
        auth=auth,
        tls=tls,
    )


def cns_from_flags(args: argparse.Namespace) -> tuple[CnsSettings | None, list[Secret]]:
    get = flag_reader(args)
    if get("no_cns"):
        return None, []
    if not get("cns_url"):
        raise SetupAborted(
            _("no CNS endpoint named: give --cns-url (and --cns-environment), or --no-cns")
        )
    environment = get("cns_environment") or "test"
    url = _checked(get("cns_url"), field_check(CnsBaseUrls, environment), "--cns-url")
    secrets: list[Secret] = []
    mode: Literal["none", "bearer", "oauth2"] = get("cns_auth") or "none"
    auth = CnsAuth(mode=mode)
    if mode == "bearer":
        entry = f"cns:{environment}:token"
        token = secret_from_env(get("cns_token_env"), _("the CNS token"), "--cns-token-env")
        secrets.append(Secret(entry, "CNS token", token))
        auth = CnsAuth(mode="bearer", token_keyring=entry)
    elif mode == "oauth2":
        entry = f"cns:{environment}:client-secret"
        token_url = _checked(
            get("cns_token_url") or "", field_check(CnsAuth, "token_url"), "--cns-token-url"
        )
        if not token_url or not get("cns_client_id"):
            raise SetupAborted(_("--cns-auth oauth2 needs --cns-token-url and --cns-client-id"))
        secret = secret_from_env(
            get("cns_client_secret_env"), _("the CNS client secret"), "--cns-client-secret-env"
        )
        secrets.append(Secret(entry, "CNS client secret", secret))
        auth = CnsAuth(
            mode="oauth2",
            token_url=token_url,
            client_id=get("cns_client_id"),
            client_secret_keyring=entry,
            scope=get("cns_scope") or "",
        )
    tls = CnsTls()
    if get("cns_pkcs12"):
        entry = f"cns:{environment}:pkcs12"
        passphrase = secret_from_env(
            get("cns_pkcs12_passphrase_env"),
            _("the CNS client certificate's passphrase"),
            "--cns-pkcs12-passphrase-env",
        )
        secrets.append(Secret(entry, "CNS client certificate passphrase", passphrase))
        tls = CnsTls(
            pkcs12=Path(get("cns_pkcs12")).expanduser().resolve(),
            pkcs12_passphrase_keyring=entry,
        )
    if get("cns_ca_file"):
        tls = dataclasses.replace(tls, ca_file=Path(get("cns_ca_file")).expanduser().resolve())
    return _cns(environment, url, auth, tls), secrets


def cns_interactively(ask: Prompter) -> tuple[CnsSettings | None, list[Secret]]:
    ask.say("\n" + _("CNS (fee notes, PID v2): the endpoint and credentials the CNS gave you."))
    environments = ["test", "production"]
    shown = [_("test"), _("production"), _("not now (no forwarding to the CNS)")]
    index = ask.choose(_("Which CNS environment?"), shown)
    if index == 2:
        return None, []
    environment = environments[index]
    url = ask.ask(
        _("CNS {environment} base URL", environment=shown[index]),
        check=field_check(CnsBaseUrls, environment),
    )
    secrets: list[Secret] = []
    mode = ["none", "bearer", "oauth2"][
        ask.choose(
            _("How does sidecar authenticate to it?"),
            [
                _("client certificate only, or nothing"),
                _("a bearer token"),
                _("OAuth2 client credentials"),
            ],
        )
    ]
    auth = CnsAuth()
    if mode == "bearer":
        entry = f"cns:{environment}:token"
        secrets.append(Secret(entry, "CNS token", ask.secret(_("CNS token (OS secret store)"))))
        auth = CnsAuth(mode="bearer", token_keyring=entry)
    elif mode == "oauth2":
        entry = f"cns:{environment}:client-secret"
        token_url = ask.ask(_("OAuth2 token URL"), check=field_check(CnsAuth, "token_url"))
        client_id = ask.ask(_("OAuth2 client id"))
        scope = ask.ask(_("OAuth2 scope"), optional=True)
        secret = ask.secret(_("OAuth2 client secret (OS secret store)"))
        secrets.append(Secret(entry, "CNS client secret", secret))
        auth = CnsAuth(
            mode="oauth2",
            token_url=token_url,
            client_id=client_id,
            client_secret_keyring=entry,
            scope=scope,
        )
    tls = CnsTls()

    def exists(answer: str) -> str | None:
        return None if Path(answer).expanduser().is_file() else no_such_file(answer)

    p12 = ask.ask(_("Client certificate for the CNS (PKCS#12 file)"), optional=True, check=exists)
    if p12:
        entry = f"cns:{environment}:pkcs12"
        passphrase = ask.secret(_("Its passphrase (OS secret store)"))
        secrets.append(Secret(entry, "CNS client certificate passphrase", passphrase))
        tls = CnsTls(pkcs12=Path(p12).expanduser().resolve(), pkcs12_passphrase_keyring=entry)
    return _cns(environment, url, auth, tls), secrets
