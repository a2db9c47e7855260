"""State stores, chosen by URL: ``memory://`` (default) or, later, ``redis://``."""

from __future__ import annotations

from urllib.parse import urlsplit

from authz.errors import ConfigError
from authz.store.base import ClaimOnce, Op, Result, Store, TakeTokens, Tokens
from authz.store.memory import MemoryStore

__all__ = ["ClaimOnce", "MemoryStore", "Op", "Result", "Store", "TakeTokens", "Tokens", "store_from_url"]


def store_from_url(url: str, *, now_ms: int) -> Store:
    """Build the store a URL names.

    :param url: ``memory://``
    :param now_ms: the current time; a new store's epoch
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore(epoch_ms=now_ms)
    raise ConfigError("--store", 0, "store", f"unknown store URL scheme {scheme!r} in {url!r} (supported: memory://)")
