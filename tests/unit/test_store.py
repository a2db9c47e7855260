"""The store contract. Every backend must pass these (the Redis store joins ALL_STORES)."""

from __future__ import annotations

import pytest

from authz.errors import ConfigError
from authz.store import MemoryStore, Store, store_from_url
from authz.store.base import ALREADY_CLAIMED, BEFORE_EPOCH, CLAIMED, ClaimOnce, TakeTokens, Tokens

T0 = 1_700_000_000_000


def make_memory() -> Store:
    return MemoryStore(epoch_ms=T0)


ALL_STORES = [pytest.param(make_memory, id="memory")]


@pytest.fixture(params=ALL_STORES)
def store(request: pytest.FixtureRequest) -> Store:
    return request.param()  # type: ignore[no-any-return]


async def test_bucket_allows_burst_then_refuses_with_retry_after(store: Store) -> None:
    op = TakeTokens("q:t:a", interval_ms=1000, capacity=3)
    results = [(await store.apply([op], T0))[0] for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]  # type: ignore[union-attr]
    assert [r.remaining for r in results] == [2, 1, 0, 0]  # type: ignore[union-attr]
    refused = results[3]
    assert isinstance(refused, Tokens) and refused.retry_after_ms == 1000
    assert refused.reset_ms == 3000


async def test_bucket_refills_continuously(store: Store) -> None:
    op = TakeTokens("q:t:b", interval_ms=100, capacity=2)
    for _ in range(2):
        await store.apply([op], T0)
    (r,) = await store.apply([op], T0 + 50)
    assert isinstance(r, Tokens) and not r.allowed and r.retry_after_ms == 50
    (r,) = await store.apply([op], T0 + 100)
    assert isinstance(r, Tokens) and r.allowed and r.remaining == 0
    (r,) = await store.apply([op], T0 + 10_000)
    assert isinstance(r, Tokens) and r.allowed and r.remaining == 1


async def test_a_refused_take_costs_nothing(store: Store) -> None:
    op = TakeTokens("q:t:c", interval_ms=1000, capacity=1)
    await store.apply([op], T0)
    for i in range(5):
        (r,) = await store.apply([op], T0 + i)
        assert isinstance(r, Tokens) and not r.allowed
    (r,) = await store.apply([op], T0 + 1000)
    assert isinstance(r, Tokens) and r.allowed


async def test_buckets_are_independent_and_batched(store: Store) -> None:
    a = TakeTokens("q:t:x", interval_ms=1000, capacity=1)
    b = TakeTokens("q:t:y", interval_ms=1000, capacity=1)
    claim = ClaimOnce("n:k:1", ttl_ms=5000, created_ms=T0)
    r = await store.apply([a, b, claim], T0)
    assert [x.allowed for x in r[:2]] == [True, True]  # type: ignore[union-attr]
    assert r[2] == CLAIMED
    r = await store.apply([a, b, claim], T0)
    assert [x.allowed for x in r[:2]] == [False, False]  # type: ignore[union-attr]
    assert r[2] == ALREADY_CLAIMED


async def test_claim_once_expires_after_its_ttl(store: Store) -> None:
    claim = ClaimOnce("n:k:2", ttl_ms=1000, created_ms=T0)
    assert await store.apply([claim], T0) == [CLAIMED]
    assert await store.apply([claim], T0 + 999) == [ALREADY_CLAIMED]
    assert await store.apply([claim], T0 + 1000) == [CLAIMED]


async def test_claims_made_before_the_store_epoch_are_refused(store: Store) -> None:
    assert await store.apply([ClaimOnce("n:k:old", 60_000, created_ms=T0 - 1)], T0) == [BEFORE_EPOCH]
    assert await store.apply([ClaimOnce("n:k:new", 60_000, created_ms=T0)], T0) == [CLAIMED]


async def test_memory_store_forgets_expired_keys() -> None:
    store = MemoryStore(epoch_ms=T0)
    for i in range(1000):
        await store.apply([TakeTokens(f"q:t:{i}", interval_ms=10, capacity=1)], T0)
        await store.apply([ClaimOnce(f"n:k:{i}", ttl_ms=500, created_ms=T0)], T0)
    assert len(store) == 2000
    await store.apply([], T0 + 2_000)
    assert len(store) == 0


def test_store_from_url() -> None:
    assert isinstance(store_from_url("memory://", now_ms=T0), MemoryStore)
    with pytest.raises(ConfigError, match="unknown store URL scheme 'mongodb'"):
        store_from_url("mongodb://x", now_ms=T0)
