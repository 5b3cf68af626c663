"""What can go wrong with a trusted list: one root, one class per cause."""

from __future__ import annotations

from ...errors import UpstreamError, UpstreamFailed, UpstreamUnavailable

__all__ = [
    "ListError",
    "ListSignatureInvalid",
    "ListStale",
    "ListUnavailable",
    "ListUnparseable",
]


class ListError(UpstreamError):
    """A trusted list (or the LOTL) that cannot be used; ``which`` names it (``EU``, ``LU``...)."""

    def __init__(self, which: str, message: str) -> None:
        self.which = which
        super().__init__(f"trusted list {which}: {message}")


class ListUnavailable(ListError, UpstreamUnavailable):
    """Neither the network nor the cache has the list."""


class ListUnparseable(ListError, UpstreamFailed):
    """The list is not well-formed XML (or not a TS 119 612 list)."""


class ListSignatureInvalid(ListError, UpstreamFailed):
    """The list's XML signature does not verify against the certificates designated for it."""


class ListStale(ListError, UpstreamFailed):
    """The list is past its NextUpdate by more than ``[trust.lists] stale_grace``."""
