"""The secrets setup collects, and their way into the OS secret store.

Every secret goes to the OS secret store (``keyring``, service ``"sidecar"``)
through :mod:`sidecar.keys.credentials`, the module the daemon reads them with;
the configuration file only names the entry. If setup stops before the file is
written, the entries it changed are put back as they were.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..i18n import _
from ..keys.credentials import (
    SecretUnavailable,
    delete_stored_secret,
    read_stored_secret,
    store_secret,
)
from .terminal import SetupAborted

__all__ = ["Secret", "SecretStash", "secret_from_env"]


@dataclass(frozen=True)
class Secret:
    """A secret and the entry it goes to; the value is never shown."""

    entry: str
    #: What it is, for messages: "PIN of key 'dr-muller'", "TSA password".
    what: str
    value: str = field(repr=False)


class SecretStash:
    """Stores secrets and remembers what each entry held before, to undo."""

    def __init__(self) -> None:
        self._previous: dict[str, str | None] = {}

    def store(self, secret: Secret) -> None:
        """Raises :class:`~sidecar.keys.credentials.SecretUnavailable` (no secret store)."""
        if secret.entry not in self._previous:
            try:
                self._previous[secret.entry] = read_stored_secret(secret.entry, secret.what)
            except SecretUnavailable:
                self._previous[secret.entry] = None
        store_secret(secret.entry, secret.value)

    @property
    def entries(self) -> list[str]:
        return list(self._previous)

    def undo(self) -> None:
        """Put every entry changed back as it was (best effort)."""
        for entry, previous in self._previous.items():
            try:
                if previous is None:
                    delete_stored_secret(entry)
                else:
                    store_secret(entry, previous)
            except SecretUnavailable:
                pass
        self._previous.clear()

    def keep(self) -> None:
        """The configuration is written: the stored secrets stay."""
        self._previous.clear()


def secret_from_env(variable: str | None, what: str, flag: str) -> str:
    """A secret an installer hands over in an environment variable (never on the
    command line, which other users of the machine can read)."""
    if not variable:
        raise SetupAborted(
            _("{what}: name the environment variable holding it with {flag}", what=what, flag=flag)
        )
    value = os.environ.get(variable)
    if not value:
        raise SetupAborted(
            _(
                "{what}: environment variable {variable} is empty or unset",
                what=what,
                variable=variable,
            )
        )
    return value
