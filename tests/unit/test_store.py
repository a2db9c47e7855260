"""The store contract. Every backend must pass these (the Redis store joins ALL_STORES)."""

from __future__ import annotations

import pytest

from authz.errors import ConfigError
from authz.store import (
    ALREADY_CLAIMED,
    BEFORE_EPOCH,
    CLAIMED,
    ClaimOnce,
    CountDistinct,
    MemoryStore,
    Store,
    TakeTokens,
    Tokens,
    store_from_url,
)

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
    assert [x.allowed for x in r[:2]] == [True, True]
    assert r[2] == CLAIMED
    r = await store.apply([a, b, claim], T0)
    assert [x.allowed for x in r[:2]] == [False, False]
    assert r[2] == ALREADY_CLAIMED


async def test_a_batch_refused_by_one_quota_spends_no_other_quota(store: Store) -> None:
    roomy = TakeTokens("q:roomy:a", interval_ms=1000, capacity=5)
    tight = TakeTokens("q:tight:a", interval_ms=1000, capacity=1)
    assert [r.allowed for r in await store.apply([roomy, tight], T0)] == [True, True]
    # tight is empty: the batch refuses, and roomy keeps its 4 tokens however often it is tried
    for _ in range(10):
        r = await store.apply([roomy, tight], T0)
        assert (r[0].allowed, r[1].allowed) == (True, False)
        assert r[0].remaining == 3  # what roomy would have left: it was not charged
    (alone,) = await store.apply([roomy], T0)
    assert (alone.allowed, alone.remaining) == (True, 3)


async def test_a_replayed_claim_spends_no_tokens_and_a_refused_quota_claims_no_nonce(store: Store) -> None:
    bucket = TakeTokens("q:signer:k1", interval_ms=1000, capacity=3)
    first = ClaimOnce("n:k1:abc", ttl_ms=60_000, created_ms=T0)
    assert await store.apply([first, bucket], T0) == [CLAIMED, Tokens(True, 2, 0, 1000)]
    # the captured request replayed: refused, and the signer's bucket is untouched
    for _ in range(5):
        assert (await store.apply([first, bucket], T0))[0] == ALREADY_CLAIMED
    (left,) = await store.apply([TakeTokens("q:signer:k1", interval_ms=1000, capacity=3, cost=0)], T0)
    assert left.remaining == 2
    # a quota refusal claims no nonce: the same nonce is still good afterwards
    empty = TakeTokens("q:empty:k1", interval_ms=60_000, capacity=1)
    await store.apply([empty], T0)
    fresh = ClaimOnce("n:k1:def", ttl_ms=60_000, created_ms=T0)
    r = await store.apply([fresh, empty], T0)
    assert r[0] == CLAIMED and not r[1].allowed
    assert (await store.apply([fresh], T0)) == [CLAIMED]


async def test_a_shadow_quota_never_refuses_the_batch(store: Store) -> None:
    shadow = TakeTokens("q:shadow:a", interval_ms=1000, capacity=1, enforce=False)
    real = TakeTokens("q:real:a", interval_ms=1000, capacity=10)
    await store.apply([shadow, real], T0)
    r = await store.apply([shadow, real], T0)
    assert (r[0].allowed, r[1].allowed, r[1].remaining) == (False, True, 8)
    (after,) = await store.apply([real], T0)
    assert after.remaining == 7  # the shadow refusal did not stop real from being charged


async def test_distinct_values_are_observed_even_when_the_batch_refuses(store: Store) -> None:
    empty = TakeTokens("q:e:a", interval_ms=60_000, capacity=1)
    await store.apply([empty], T0)
    for i, ip in enumerate(["192.0.2.1", "192.0.2.2", "192.0.2.3"], 1):
        d, t = await store.apply([CountDistinct("ips:tok", ip, limit=2, window_ms=60_000), empty], T0)
        assert (d.count, d.exceeded, t.allowed) == (i, i > 2, False)
    (again,) = await store.apply([CountDistinct("ips:tok", "192.0.2.1", limit=2, window_ms=60_000)], T0 + 1)
    assert (again.count, again.exceeded) == (3, True)
    (later,) = await store.apply([CountDistinct("ips:tok", "192.0.2.9", limit=2, window_ms=60_000)], T0 + 60_000)
    assert (later.count, later.exceeded) == (1, False)  # a new window


async def test_an_exceeded_distinct_limit_refuses_the_batch_unless_it_only_signals(store: Store) -> None:
    bucket = TakeTokens("q:b:tok", interval_ms=1000, capacity=100)
    for ip in ("192.0.2.1", "192.0.2.2"):
        await store.apply([CountDistinct("ips:t2", ip, limit=1, window_ms=60_000), bucket], T0)
    (left,) = await store.apply([TakeTokens("q:b:tok", interval_ms=1000, capacity=100, cost=0)], T0)
    assert left.remaining == 99  # the second address was over the limit: no token taken
    signal_only = CountDistinct("ips:t3", "192.0.2.1", limit=0, window_ms=60_000, enforce=False)
    d, t = await store.apply([signal_only, bucket], T0)
    assert d.exceeded and t.allowed and t.remaining == 98


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
