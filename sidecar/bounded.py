"""One way to keep a small cache bounded: the oldest entry goes first.

The per-process caches of certificates, verdicts and keys (``trust/tsa``, the signer's
chain) hold a few entries per TSA or key; past their bound, forgetting the oldest is
enough (an entry forgotten is only worked out again)."""

from __future__ import annotations

from typing import TypeVar

__all__ = ["remember"]

K = TypeVar("K")
V = TypeVar("V")


def remember(entries: dict[K, V], key: K, value: V, max_entries: int) -> V:
    """Store *value* under *key*, first forgetting the oldest entry if *entries* is
    full; returns *value*."""
    if key not in entries and len(entries) >= max_entries:
        entries.pop(next(iter(entries)))
    entries[key] = value
    return value
