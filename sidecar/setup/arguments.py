"""The flags of ``sidecar setup`` (kept apart: building the parser imports nothing heavy)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["add_parser", "flag_reader"]


def flag_reader(args: argparse.Namespace) -> Callable[[str], Any]:
    """``args``' flag by name, None when absent: a flag's value has the flag's own type,
    which argparse does not declare (hence Any)."""
    values: dict[str, Any] = vars(args)
    return lambda name: values.get(name)


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register ``sidecar setup`` and its flags."""
    p = commands.add_parser(
        "setup",
        help="configure the signing key, TSA and CNS; write sidecar.toml",
        description="Find the signing key (PKCS#11 token or PKCS#12 file), ask for the "
        "TSA and the CNS, store secrets in the OS secret store, write sidecar.toml and "
        "run doctor. Secrets given to --non-interactive come from environment variables.",
    )
    config_option(p)
    p.add_argument("--non-interactive", action="store_true", help="answers from flags only")
    p.add_argument("--force", action="store_true", help="replace an existing configuration")
    p.add_argument("--list", action="store_true", help="list PKCS#11 modules, tokens, certificates")
    p.add_argument("--no-doctor", action="store_true", help="do not run doctor at the end")
    key = p.add_argument_group("signing key")
    key.add_argument("--module", metavar="PATH", help="PKCS#11 module (default: look for one)")
    key.add_argument("--token-label", metavar="LABEL")
    key.add_argument("--token-serial", metavar="SERIAL")
    key.add_argument("--key-label", metavar="LABEL", help="CKA_LABEL of the key/certificate")
    key.add_argument("--key-id", metavar="HEX", help="CKA_ID of the key/certificate")
    key.add_argument("--pin-source", choices=("keyring", "pinpad"), default="keyring")
    key.add_argument("--pin-env", metavar="VAR", help="environment variable holding the PIN")
    key.add_argument("--p12", metavar="FILE", help="a PKCS#12 file instead of a token")
    key.add_argument("--p12-passphrase-env", metavar="VAR")
    key.add_argument("--key-name", metavar="ID", help="the key's id in sidecar (default: from CN)")
    key.add_argument("--description", help="who the key belongs to (default: its subject)")
    key.add_argument("--no-key", action="store_true", help="configure no signing key")
    tsa = p.add_argument_group("time-stamping authority")
    tsa.add_argument("--tsa-url", metavar="URL")
    tsa.add_argument("--tsa-policy", metavar="OID", help="TSA policy OID to demand")
    tsa.add_argument("--tsa-username", metavar="USER", help="HTTP basic auth user")
    tsa.add_argument("--tsa-password-env", metavar="VAR")
    tsa.add_argument("--no-tsa", action="store_true")
    cns = p.add_argument_group("CNS")
    cns.add_argument("--cns-environment", choices=("test", "production"), default="test")
    cns.add_argument("--cns-url", metavar="URL", help="base URL of that environment")
    cns.add_argument("--cns-auth", choices=("none", "bearer", "oauth2"), default="none")
    cns.add_argument("--cns-token-env", metavar="VAR", help="bearer: variable holding the token")
    cns.add_argument("--cns-token-url", metavar="URL", help="oauth2: the token endpoint")
    cns.add_argument("--cns-client-id", metavar="ID")
    cns.add_argument("--cns-client-secret-env", metavar="VAR")
    cns.add_argument("--cns-scope")
    cns.add_argument("--cns-pkcs12", metavar="FILE", help="TLS client certificate (PKCS#12)")
    cns.add_argument("--cns-pkcs12-passphrase-env", metavar="VAR")
    cns.add_argument("--cns-ca-file", metavar="FILE", help="CA bundle for the CNS's server")
    cns.add_argument("--no-cns", action="store_true")
