"""The configured keys of one daemon: several physicians, or a delegate."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Sequence

from .access import choose_key, current_key_access
from .errors import KeyConfigError, KeyNotFound
from .key_settings import KeyConfig
from .pkcs11_token import Pkcs11Signer
from .pkcs12_file import Pkcs12Signer
from .signer import KeyInfo, Signer

__all__ = ["KeyRegistry", "create_signer"]

logger = logging.getLogger(__name__)


def create_signer(config: KeyConfig) -> Signer:
    """The signer for one key config, not yet opened."""
    if config.backend == "pkcs12":
        return Pkcs12Signer(config)
    return Pkcs11Signer(config)


class KeyRegistry:
    """Signers by id, with one default.

    :meth:`open` is where configuration problems surface (missing module,
    unreadable file: :class:`KeyConfigError`); token states (absent, PIN) do
    not stop it — they are reported per key and retried on use.
    """

    def __init__(self, signers: Sequence[Signer]) -> None:
        by_id: dict[str, Signer] = {}
        for signer in signers:
            if signer.id in by_id:
                raise KeyConfigError(f"key id {signer.id!r} is configured twice", key_id=signer.id)
            by_id[signer.id] = signer
        defaults = [s.id for s in signers if s.config.default]
        if len(defaults) > 1:
            raise KeyConfigError(f"several keys are marked default: {', '.join(defaults)}")
        self._signers = by_id
        # One key alone is the default without saying so.
        self._default = defaults[0] if defaults else (signers[0].id if len(signers) == 1 else None)

    @classmethod
    def from_configs(cls, configs: Iterable[KeyConfig]) -> KeyRegistry:
        return cls([create_signer(config) for config in configs])

    async def open(self) -> None:
        """Open every key but those loaded on first use (``load = "first_use"``: the
        first :meth:`acquire` opens them), off the event loop; closes them all if one
        is misconfigured."""
        loop = asyncio.get_running_loop()
        try:
            for signer in self._signers.values():
                if signer.config.load == "first_use":
                    continue
                await loop.run_in_executor(None, signer.open)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close every key (sessions logged out, in-memory keys dropped)."""
        loop = asyncio.get_running_loop()
        for signer in self._signers.values():
            try:
                await loop.run_in_executor(None, signer.close)
            except Exception:
                logger.exception("closing key %s failed", signer.id)

    async def acquire(self, key_id: str | None = None) -> Signer:
        """:meth:`get`, then :meth:`Signer.ready`: the signer, able to sign now, or
        :class:`KeyLocked` / :class:`CertificateNotValid` saying why not."""
        signer = self.get(key_id)
        await signer.ready()
        return signer

    def get(self, key_id: str | None = None) -> Signer:
        """The signer ``key_id``, or the default one when ``key_id`` is ``None``.

        The one place where operations choose their key, so the one place the
        client's key access (:mod:`.access`) is enforced: a key the client may not
        use is :class:`~.access.KeyNotAllowed`, whether it exists or not.
        """
        key_id = choose_key(current_key_access(), key_id, self._default)
        if key_id is None:
            raise KeyNotFound(None)
        try:
            return self._signers[key_id]
        except KeyError:
            raise KeyNotFound(key_id) from None

    @property
    def default_id(self) -> str | None:
        return self._default

    def describe(self) -> list[KeyInfo]:
        return [signer.describe() for signer in self._signers.values()]

    def __iter__(self) -> Iterator[Signer]:
        return iter(self._signers.values())

    def __len__(self) -> int:
        return len(self._signers)
