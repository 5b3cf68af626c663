"""The trusted lists in the daemon: loaded from the cache at start, refreshed on a schedule.

Loading (signature checks) and refreshing run off the event loop. Each time the lists
change, *on_change* hears of it (the trust layer re-derives its anchors).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from ...config import ListSettings
from ..anchors import load_certificates
from .cache import ListCache
from .source import ListPolicy, TrustedLists, fetch_lists, read_lists

__all__ = ["LIST_CACHE_DIR", "ListService", "policy_from_settings"]

log = logging.getLogger("sidecar.trust.lists")

#: The cache's directory under the data directory, unless ``cache_dir`` says otherwise.
LIST_CACHE_DIR = "trusted-lists"


def policy_from_settings(settings: ListSettings) -> ListPolicy:
    signers = tuple(load_certificates(settings.lotl_signers)) if settings.lotl_signers else ()
    return ListPolicy(
        lotl_url=settings.lotl_url,
        territories=tuple(t.upper() for t in settings.territories),
        stale_grace=settings.stale_grace,
        lotl_signers=signers,
        timeout=settings.timeout,
    )


class ListService:
    """The lists in use, and the means to refresh them."""

    def __init__(
        self,
        settings: ListSettings,
        data_dir: Path,
        *,
        policy: ListPolicy | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.policy = policy or policy_from_settings(settings)
        self.cache = ListCache(settings.cache_dir or data_dir / LIST_CACHE_DIR)
        self._clock = clock
        self.current = TrustedLists()
        self.last_refresh: datetime | None = None
        self.last_refresh_problems: list[str] = []
        self.on_change: Callable[[TrustedLists], None] | None = None

    async def load(self) -> TrustedLists:
        """Read the cached lists again (no network)."""
        lists = await asyncio.to_thread(read_lists, self.cache, self.policy, self._clock())
        self.current = lists
        for problem in lists.problems:
            log.warning("%s", problem)
        if self.on_change is not None:
            self.on_change(lists)
        return lists

    async def refresh(self, session: aiohttp.ClientSession) -> list[str]:
        """Fetch the lists, store those that verify, and load them. Returns the problems."""
        problems = await fetch_lists(session, self.cache, self.policy, clock=self._clock)
        for problem in problems:
            log.warning("trusted lists refresh: %s", problem)
        refreshed = self._clock()
        await self.load()
        # Only once the fetched lists are loaded: the health check reads "refreshed, and
        # nothing usable" as a problem, not as the first fetch under way.
        self.last_refresh, self.last_refresh_problems = refreshed, problems
        return problems

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Refresh now if the cache has nothing usable, then every ``refresh_interval``."""
        delay = 0.0 if not self.current.usable else self.settings.refresh_interval
        while True:
            await asyncio.sleep(delay)
            try:
                await self.refresh(session)
            except Exception:  # a refresh must never end the schedule
                log.exception("trusted lists refresh failed")
            delay = self.settings.refresh_interval

    def as_json(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "usable": self.current.usable,
            "lists": [i.as_json(now) for i in self.current.lists],
            "problems": list(self.current.problems),
            "last_refresh": self.last_refresh.isoformat() if self.last_refresh else None,
            "last_refresh_problems": list(self.last_refresh_problems),
            "at_signing": self.settings.at_signing,
        }
