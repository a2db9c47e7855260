"""The store contract: every backend (memory, a real redis-server, a real Redis Cluster) passes the same tests.

The clock is pinned: every batch gets ``now_ms`` from the test, never from the
backend, so the Lua script and the Python arithmetic must agree exactly.
"""

from __future__ import annotations

import random

import pytest

from authz.errors import ConfigError
from authz.store import (
    ALREADY_CLAIMED,
    BEFORE_EPOCH,
    CLAIMED,
    ClaimOnce,
    Cooldown,
    CountDistinct,
    MemoryStore,
    Store,
    TakeTokens,
    Tokens,
    store_from_url,
)
from authz.store.ops import Derived, Reputation
from tests.store.conftest import T0, Backend, settle


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
        await settle(store)
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
    await settle(store)
    (left,) = await store.apply([TakeTokens("q:signer:k1", interval_ms=1000, capacity=3, cost=0)], T0)
    assert left.remaining == 2
    # a quota refusal claims no nonce: the same nonce is still good afterwards
    empty = TakeTokens("q:empty:k1", interval_ms=60_000, capacity=1)
    await store.apply([empty], T0)
    fresh = ClaimOnce("n:k1:def", ttl_ms=60_000, created_ms=T0)
    r = await store.apply([fresh, empty], T0)
    assert r[0] == CLAIMED and not r[1].allowed
    await settle(store)
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
    await settle(store)
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


def test_store_from_url() -> None:
    assert isinstance(store_from_url("memory://", now_ms=T0), MemoryStore)
    with pytest.raises(ConfigError, match="unknown store URL scheme 'mongodb'"):
        store_from_url("mongodb://x", now_ms=T0)


# -- cooldown ------------------------------------------------------------------------

COOLDOWN = Cooldown(after=2, base_ms=10_000, factor=2.0, max_ms=25_000, memory_ms=60_000)


async def test_a_client_that_keeps_exhausting_a_quota_is_held_out_longer_each_time(store: Store) -> None:
    op = TakeTokens("q:cd:a", interval_ms=1000, capacity=1, cooldown=COOLDOWN)
    now = T0
    assert (await store.apply([op], now))[0].allowed
    first = (await store.apply([op], now))[0]  # an offence, the first: an ordinary 429
    assert (first.allowed, first.cooldown_ms, first.strikes, first.retry_after_ms) == (False, 0, 1, 1000)
    second = (await store.apply([op], now + 1))[0]  # the second offence: held out 10 s
    assert (second.allowed, second.cooldown_ms, second.strikes, second.retry_after_ms) == (False, 10_000, 2, 10_000)
    held = (await store.apply([op], now + 5_000))[0]  # while held: refused, no new offence
    assert (held.allowed, held.cooldown_ms, held.strikes, held.retry_after_ms) == (False, 5_001, 2, 5_001)
    released = (await store.apply([op], now + 10_001))[0]
    assert released.allowed and released.strikes == 2
    third = (await store.apply([op], now + 10_002))[0]  # exhausted again at once: 20 s
    assert (third.cooldown_ms, third.strikes) == (20_000, 3)
    fourth = (await store.apply([op], now + 30_003))[0]
    assert fourth.allowed
    capped = (await store.apply([op], now + 30_004))[0]
    assert (capped.cooldown_ms, capped.strikes) == (25_000, 4)  # 40 s capped at 25 s
    # offences are forgotten after the memory period without one
    later = now + 30_004 + 60_000
    assert (await store.apply([op], later))[0].allowed
    fresh = (await store.apply([op], later))[0]
    assert (fresh.cooldown_ms, fresh.strikes) == (0, 1)


async def test_a_cooldown_refusal_spends_nothing_elsewhere_in_the_batch(store: Store) -> None:
    held = TakeTokens("q:cd:b", interval_ms=60_000, capacity=1, cooldown=Cooldown(1, 60_000, 2.0, 60_000, 60_000))
    other = TakeTokens("q:other:b", interval_ms=1000, capacity=5)
    await store.apply([held], T0)
    await store.apply([held], T0)  # offence: held out
    for _ in range(3):
        r = await store.apply([held, other], T0 + 1)
        assert not r[0].allowed and r[0].cooldown_ms > 0
    await settle(store)
    (left,) = await store.apply([TakeTokens("q:other:b", interval_ms=1000, capacity=5, cost=0)], T0 + 1)
    assert left.remaining == 5


# -- the backends agree exactly -------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_backend_computes_what_the_memory_store_computes(backend: Backend, seed: int) -> None:
    rnd = random.Random(seed)
    reference = MemoryStore(epoch_ms=T0)
    buckets = [
        TakeTokens(f"q:mirror{seed}:{i}", interval_ms=rnd.choice([7.0, 100.0, 333.3333333333333, 1000.0, 6000.0 / 7]), capacity=rnd.randint(1, 20), cost=rnd.randint(1, 3), cooldown=rnd.choice([None, COOLDOWN]))
        for i in range(6)
    ]
    now = T0
    for _ in range(150):
        now += rnd.choice([0, 0, 1, 3, 17, 250, 999, 5000])
        batch = rnd.sample(buckets, rnd.randint(1, 3))
        expected = await reference.apply(batch, now)
        got = await backend.store.apply(batch, now)
        await settle(backend.store)
        assert got == expected, (now, batch)


# -- state is bounded -------------------------------------------------------------------


async def test_every_key_written_has_a_ttl(backend: Backend) -> None:
    store = backend.store
    ops = [
        TakeTokens("q:ttl:a", interval_ms=1000, capacity=2, cooldown=COOLDOWN),
        ClaimOnce("n:ttl:1", ttl_ms=30_000, created_ms=T0),
        CountDistinct("ips:ttl", "192.0.2.1", limit=5, window_ms=60_000),
    ]
    for i in range(4):
        await store.apply(ops, T0 + i)
    await store.apply([TakeTokens("q:ttl:b", interval_ms=1000, capacity=1, cost=1)], T0)
    keys = backend.keys()
    assert len(keys) >= 4
    assert [k for k, ttl in keys if ttl is None] == []
    # and nothing lives longer than what it is for (7 days: a replay shard's epoch)
    assert max(ttl for _, ttl in keys if ttl is not None) <= 7 * 86_400_000


async def test_memory_store_forgets_expired_keys() -> None:
    store = MemoryStore(epoch_ms=T0)
    for i in range(1000):
        await store.apply([TakeTokens(f"q:t:{i}", interval_ms=10, capacity=1)], T0)
        await store.apply([ClaimOnce(f"n:k:{i}", ttl_ms=500, created_ms=T0)], T0)
    assert len(store) == 2000
    await store.apply([], T0 + 2_000)
    assert len(store) == 0


async def test_memory_store_schedules_a_key_once_however_often_it_is_written() -> None:
    # a reputation hash is rewritten on every request, each time expiring later: the sweep's
    # wheel must grow with the keys, never with the writes
    store = MemoryStore(epoch_ms=T0)
    for i in range(5000):
        await store.apply([Reputation("ip:192.0.2.1", half_life_ms=600_000, ttl_ms=3_600_000)], T0 + i * 100)
    assert len(store) == 1 and store.scheduled() == 1
    last = T0 + 4999 * 100
    # swept at the second it was first scheduled for, it is alive and moves to its real expiry...
    await store.apply([], T0 + 3_600_000 + 1_000)
    assert len(store) == 1 and store.scheduled() == 1
    # ...where it goes
    await store.apply([], last + 3_600_000 + 1_000)
    assert len(store) == 0 and store.scheduled() == 0


async def test_memory_store_expires_a_key_written_to_expire_sooner() -> None:
    store = MemoryStore(epoch_ms=T0)
    await store.apply([ClaimOnce("n:k:long", ttl_ms=60_000, created_ms=T0)], T0)
    # the same key, rewritten to expire in 1 s (a bucket whose window shrank on reload, say)
    await store.apply([ClaimOnce("n:k:long", ttl_ms=60_000, created_ms=T0)], T0 + 61_000)
    store._put("n:k:long", "x", T0 + 62_000)
    store._put("n:k:long", "x", T0 + 61_500)
    await store.apply([], T0 + 63_000)
    assert "n:k:long" not in store.key_names()


# -- reputation ------------------------------------------------------------------------

HOUR = 3_600_000


async def test_reputation_evidence_decays_by_half_each_half_life(store: Store) -> None:
    op = Reputation("ip:192.0.2.1", half_life_ms=HOUR, ttl_ms=4 * HOUR, evidence=(("probe.traversal", 8.0),))
    (first,) = await store.apply([op], T0)
    assert dict(first.signals) == {"probe.traversal": 8.0} and first.count == 1.0
    (later,) = await store.apply([Reputation("ip:192.0.2.1", HOUR, 4 * HOUR, arrival=False)], T0 + HOUR)
    assert dict(later.signals) == {"probe.traversal": 4.0} and later.count == 0.5
    (much,) = await store.apply([Reputation("ip:192.0.2.1", HOUR, 4 * HOUR, arrival=False)], T0 + 14 * HOUR)
    assert much.signals == ()  # below 0.001: forgotten


async def test_reputation_sees_a_metronome_sequential_ids_and_bursts(store: Store) -> None:
    derived = Derived(cadence_min=5, cadence_cv=0.05, burst_rate=20, sequence_min=3, burst_half_life_ms=10_000)
    standing = None
    for i in range(12):
        op = Reputation("sub:bot", HOUR, 4 * HOUR, number=100 + i, derived=derived)
        (standing,) = await store.apply([op], T0 + i * 2000)  # exactly every 2 s
    assert standing is not None
    signals = dict(standing.signals)
    assert signals["cadence"] == pytest.approx(7, abs=0.2)  # from the 5th interval on (decayed a little)
    assert signals["sequence"] > 0 and "burst" not in signals
    assert standing.intervals == 11
    at = T0
    for i in range(25):  # 25 requests within a second, irregularly: a burst, no cadence
        at += (5, 75, 20, 60)[i % 4]
        (standing,) = await store.apply([Reputation("sub:fast", HOUR, 4 * HOUR, derived=derived)], at)
    assert "burst" in dict(standing.signals) and "cadence" not in dict(standing.signals)


async def test_reputation_remembers_the_routes_reached(store: Store) -> None:
    (a,) = await store.apply([Reputation("sess:x", HOUR, HOUR, route_bit=1)], T0)
    (b,) = await store.apply([Reputation("sess:x", HOUR, HOUR, route_bit=4)], T0 + 1)
    (c,) = await store.apply([Reputation("sess:x", HOUR, HOUR, route_bit=1)], T0 + 2)
    assert (a.routes, b.routes, c.routes) == (0, 1, 5)


@pytest.mark.parametrize("seed", [7, 8])
async def test_every_backend_computes_reputation_as_the_memory_store_does(backend: Backend, seed: int) -> None:
    rnd = random.Random(seed)
    reference = MemoryStore(epoch_ms=T0)
    derived = Derived(cadence_min=3, cadence_cv=0.3, burst_rate=5, sequence_min=2, burst_half_life_ms=3000)
    now = T0
    for _ in range(120):
        now += rnd.choice([0, 5, 100, 999, 1000, 1001, 30_000])
        ident = rnd.choice(["ip:198.51.100.1", "sub:alice", "net:198.51.100.0/24"])
        evidence = tuple((rnd.choice(["ua.automation", "auth.failure", "list.tor"]), rnd.choice([0.25, 1.0, 3.5])) for _ in range(rnd.randint(0, 2)))
        op = Reputation(ident, 600_000, 2_400_000, evidence=evidence, arrival=rnd.random() < 0.8, number=rnd.choice([-1, 5, 6, 7]), route_bit=rnd.choice([0, 1, 2, 8]), derived=derived)
        assert await backend.store.apply([op], now) == await reference.apply([op], now), now
