"""State stores, chosen by URL: ``memory://`` (default) or ``redis://`` and its relatives.

Stages plan operations (``authz.store.ops``); the engine applies a request's
operations in one ``Store.apply`` call (``authz.store.base``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from authz.clock import Clock, SystemClock
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


def store_from_url(url: str, *, clock: Clock | None = None, now_ms: int | None = None, deadline_ms: int = 20) -> Store:
    """Build the store a URL names.

    :param url: ``memory://``, or a Redis URL (``authz.store.redis``)
    :param clock: the engine's clock (a new epoch begins at its "now")
    :param now_ms: a new memory store's epoch (default: the clock's now)
    :param deadline_ms: the most one batch may take (remote stores)
    :raises ConfigError: an unknown scheme or a malformed URL (credentials never echoed)
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        if url.rstrip("/") != "memory:":
            raise ConfigError("--store", 0, "store", "memory:// takes no host, path or parameters")
        return MemoryStore(epoch_ms=now_ms if now_ms is not None else (clock or SystemClock()).now_ms())
    from authz.store.redis import RedisStore

    return RedisStore(url, deadline_ms=deadline_ms, clock=clock)
