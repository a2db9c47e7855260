"""State stores, chosen by URL: ``memory://`` (default) or ``redis://`` and its relatives.

Stages plan operations (``authz.store.ops``); the engine applies a request's
operations in one ``Store.apply`` call (``authz.store.base``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from authz.errors import ConfigError
from authz.store.base import ALREADY_CLAIMED, BEFORE_EPOCH, CLAIMED, Distinct, Health, Op, Result, Store, Tokens
from authz.store.memory import MemoryStore
from authz.store.ops import ClaimOnce, Cooldown, CountDistinct, TakeTokens

__all__ = [
    "ALREADY_CLAIMED",
    "BEFORE_EPOCH",
    "CLAIMED",
    "ClaimOnce",
    "Cooldown",
    "CountDistinct",
    "Distinct",
    "Health",
    "MemoryStore",
    "Op",
    "Result",
    "Store",
    "TakeTokens",
    "Tokens",
    "store_from_url",
]


def store_from_url(url: str, *, now_ms: int, deadline_ms: int = 5) -> Store:
    """Build the store a URL names.

    :param url: ``memory://``
    :param now_ms: the current time; a new memory store's epoch
    :param deadline_ms: the most one batch may take (remote stores)
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore(epoch_ms=now_ms)
    raise ConfigError("--store", 0, "store", f"unknown store URL scheme {scheme!r} (supported: memory://)")
