"""Dry runs, peeks and Forget, on every backend (memory, a real redis-server, a real Redis Cluster).

A dry run must answer what the real apply that follows it answers, and leave
the raw state exactly as it was: the memory store's data compared as a deep
copy; Redis compared key by key on every node (the key set, each key's DUMP,
and no TTL longer than before). The clock is pinned, so nothing of authz's
expires between the two looks; Redis's own clock moves on, which only ever
shortens a TTL.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from authz.errors import StoreError
from authz.store import CLAIMED, ClaimOnce, Cooldown, CountDistinct, MemoryStore, Op, TakeTokens, Tokens
from authz.store.breaker import Breaker
from authz.store.ops import Derived, Forget, Reputation
from authz.store.redis import RedisStore
from tests.store.conftest import T0, Backend, settle


@pytest.fixture(autouse=True)
async def started(backend: Backend) -> None:
    """Start the store as the server does, then empty it.

    A Redis store's first call checks the server's identity (recording a
    marker and an epoch per replay shard) before it loads the batch script:
    store start-up, not any batch's doing. Flushing the data afterwards keeps
    the script, so the tests begin from nothing at all.
    """
    store = backend.store
    if isinstance(store, RedisStore):
        await store.start(wait_s=10)
        for node in backend.nodes():
            node.flush()
    assert backend.keys() == []


COOLDOWN = Cooldown(after=2, base_ms=10_000, factor=2.0, max_ms=25_000, memory_ms=60_000)
HOUR = 3_600_000


def raw_state(backend: Backend) -> Any:
    """Everything the store holds: the memory store's internals, or every key of every Redis node."""
    store = backend.store
    if isinstance(store, MemoryStore):
        return copy.deepcopy((store._data, store._wheel, store._swept_s))
    out: dict[tuple[int, bytes], tuple[bytes, int]] = {}
    for node in backend.nodes():
        with node.client() as c:
            for key in c.scan_iter(count=1000):
                out[(node.port, key)] = (c.dump(key), int(c.pttl(key)))
    return out


def assert_unchanged(backend: Backend, before: Any, after: Any) -> None:
    if isinstance(backend.store, MemoryStore):
        assert after == before
        return
    assert sorted(after) == sorted(before), "a dry run added or removed keys"
    for key, (dump, pttl) in before.items():
        dump_after, pttl_after = after[key]
        assert dump_after == dump, f"a dry run changed {key!r}"
        # Redis's clock moves on: a TTL may only have shrunk (a refresh would have grown it)
        assert (pttl_after == -1) == (pttl == -1) and pttl_after <= pttl, f"a dry run changed the TTL of {key!r}"


async def dry_then_real(backend: Backend, ops: list[Op], now_ms: int) -> list[Any]:
    """Dry-run ``ops``, check nothing changed, apply them for real; the two answers must be equal."""
    store = backend.store
    before = raw_state(backend)
    dry = await store.apply(ops, now_ms, dry_run=True)
    await settle(store)
    assert_unchanged(backend, before, raw_state(backend))
    real = await store.apply(ops, now_ms)
    await settle(store)
    assert dry == real, (now_ms, ops)
    return real


# -- dry runs --------------------------------------------------------------------------


def mixed_batch(rnd: random.Random, now: int, step: int) -> list[Op]:
    """A request's worth of operations over a few identities, with repeats within the batch."""
    derived = Derived(cadence_min=3, cadence_cv=0.3, burst_rate=5, sequence_min=2, burst_half_life_ms=3000)
    pool: list[Op] = []
    for who in rnd.sample(["alice", "bob", "carol"], rnd.randint(1, 2)):
        pool.append(TakeTokens(f"q:dry:{who}", interval_ms=rnd.choice([100.0, 1000.0, 333.3333333333333]), capacity=rnd.randint(1, 3), cost=rnd.choice([0, 1, 1, 2]), owner=f"sub:{who}", cooldown=COOLDOWN))
        pool.append(CountDistinct(f"ips:{who}", rnd.choice(["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]), limit=2, window_ms=60_000, enforce=rnd.random() < 0.5, owner=f"sub:{who}"))
        pool.append(Reputation(f"sub:{who}", 600_000, 2_400_000, evidence=((rnd.choice(["ua.automation", "auth.failure"]), 1.5),), number=rnd.choice([-1, 5, 6]), route_bit=rnd.choice([0, 1, 4]), derived=derived))
    pool.append(TakeTokens("q:dry:global", interval_ms=10.0, capacity=20))
    pool.append(ClaimOnce(f"n:k:{rnd.randint(0, 12)}", ttl_ms=30_000, created_ms=now))
    if rnd.random() < 0.2:
        pool.append(ClaimOnce(f"n:k:old{step}", ttl_ms=30_000, created_ms=T0 - 1))  # before every epoch
    batch = rnd.sample(pool, rnd.randint(1, min(6, len(pool))))
    # the same state twice in one batch: the second must see the first's writes, dry or not
    if rnd.random() < 0.4:
        batch.append(rnd.choice(batch))
    if rnd.random() < 0.15:
        forgettable = [op for op in batch if op.forgettable_keys("", now)]
        if forgettable:
            batch.insert(rnd.randrange(len(batch) + 1), Forget(rnd.choice(forgettable)))
    return batch


@pytest.mark.parametrize("seed", [11, 12, 13])
async def test_a_dry_run_answers_what_the_real_apply_answers_and_writes_nothing(backend: Backend, seed: int) -> None:
    rnd = random.Random(seed)
    reference = MemoryStore(epoch_ms=T0)
    now = T0
    refused = 0
    for step in range(60):
        now += rnd.choice([0, 0, 1, 50, 700, 5000, 20_000])
        batch = mixed_batch(rnd, now, step)
        real = await dry_then_real(backend, batch, now)
        # and every backend answers as the memory store does (but for how many keys a Forget
        # removed: Redis also counts a value dead by authz's clock that it has not collected yet)
        expected = await reference.apply(batch, now)
        assert [r for op, r in zip(batch, real, strict=True) if not isinstance(op, Forget)] == [
            r for op, r in zip(batch, expected, strict=True) if not isinstance(op, Forget)
        ], (now, batch)
        refused += any(isinstance(r, Tokens) and not r.allowed for r in real)
    assert refused > 0  # the sequence reached refusals and cooldowns, not only the easy path


async def test_a_dry_run_starts_no_epoch_and_claims_nothing(backend: Backend) -> None:
    store = backend.store
    claim = ClaimOnce("n:k:first", ttl_ms=60_000, created_ms=T0)
    assert await store.apply([claim], T0, dry_run=True) == [CLAIMED]
    assert backend.keys() == []  # not even a replay shard's epoch
    assert await store.apply([claim], T0, dry_run=True) == [CLAIMED]
    assert await store.apply([claim], T0) == [CLAIMED]
    assert backend.keys() != []


async def test_a_dry_run_refreshes_no_ttl(backend: Backend) -> None:
    store = backend.store
    ops: list[Op] = [
        ClaimOnce("n:k:ttl", ttl_ms=60_000, created_ms=T0),
        CountDistinct("ips:ttl", "192.0.2.1", limit=5, window_ms=60_000, owner="sub:ttl"),
        TakeTokens("q:ttl", interval_ms=1000, capacity=1, cooldown=COOLDOWN, owner="sub:ttl"),
    ]
    await store.apply(ops, T0)
    await store.apply(ops[2:], T0)  # an offence: the cooldown record exists
    for node in backend.nodes():
        with node.client() as c:
            for key in c.scan_iter(count=1000):
                c.pexpire(key, 3_600_000)  # short enough that a real apply would refresh the epoch
    await dry_then_real(backend, [ClaimOnce("n:k:ttl2", ttl_ms=60_000, created_ms=T0), *ops], T0)


async def test_a_dry_run_counts_distinct_values_exactly_without_adding_them(backend: Backend) -> None:
    store = backend.store
    for i in range(40):  # past the sparse encoding's first steps
        await store.apply([CountDistinct("ips:hll", f"198.51.100.{i}", limit=100, window_ms=60_000)], T0)
    for member in ["198.51.100.3", "203.0.113.9", "203.0.113.10"]:
        op = CountDistinct("ips:hll", member, limit=40, window_ms=60_000)
        await dry_then_real(backend, [op, op, CountDistinct("ips:hll", "192.0.2.200", limit=40, window_ms=60_000)], T0 + 1)


async def test_a_dry_run_across_slots_that_refuses_compensates_nothing(backend: Backend) -> None:
    store = backend.store
    empty = TakeTokens("q:cross:empty", interval_ms=60_000, capacity=1, owner="sub:x")
    await store.apply([empty], T0)
    roomy = [TakeTokens(f"q:cross:{i}", interval_ms=1000, capacity=5, owner=f"sub:{i}") for i in range(6)]
    await store.apply(roomy, T0)
    await settle(store)
    r = await dry_then_real(backend, [*roomy, empty], T0)
    assert not r[-1].allowed and all(x.allowed and x.remaining == 3 for x in r[:-1])
    (left,) = await store.apply([TakeTokens("q:cross:0", interval_ms=1000, capacity=5, cost=0, owner="sub:0")], T0)
    assert left.remaining == 4  # the real refusal was compensated, the dry one had nothing to give back


async def test_a_dry_run_goes_through_the_circuit_breaker() -> None:
    store = MemoryStore(epoch_ms=T0, breaker=Breaker())
    for _ in range(10):
        store.breaker.failure()
    with pytest.raises(StoreError, match="circuit open"):
        await store.apply([TakeTokens("q:b", 1000, 1)], T0, dry_run=True)


# -- peeks (cost 0) ----------------------------------------------------------------------


async def test_a_peek_reports_the_bucket_and_its_cooldown_and_writes_nothing(backend: Backend) -> None:
    store = backend.store
    reference = MemoryStore(epoch_ms=T0)
    take = TakeTokens("q:peek", interval_ms=1000, capacity=3, cooldown=COOLDOWN, owner="sub:p")
    peek = TakeTokens("q:peek", interval_ms=1000, capacity=3, cost=0, cooldown=COOLDOWN, owner="sub:p")
    assert await store.apply([peek], T0) == [Tokens(True, 3, 0, 0)]
    assert backend.keys() == []  # a peek at a new bucket creates nothing
    seen = []
    for at in [T0, T0, T0, T0 + 1, T0 + 2, T0 + 3, T0 + 5000, T0 + 12_000]:
        for op in (take, peek):
            got = await store.apply([op], at)
            assert got == await reference.apply([op], at), (at, op)
            if op is peek:
                seen.append(got[0])
    held = [t for t in seen if t.cooldown_ms]
    assert held and all(not t.allowed and t.strikes == 2 for t in held)  # the peek shows the hold, adds no strike
    before = raw_state(backend)
    await store.apply([peek], T0 + 12_000)
    assert_unchanged(backend, before, raw_state(backend))


def test_a_take_refuses_a_negative_cost_and_an_empty_interval() -> None:
    assert TakeTokens("q:x", 1000, 1, cost=0).cost == 0
    with pytest.raises(ValueError, match="cost -1"):
        TakeTokens("q:x", 1000, 1, cost=-1)
    with pytest.raises(ValueError, match="interval 0"):
        TakeTokens("q:x", 0, 1)


# -- Forget ----------------------------------------------------------------------------------


def identity_ops(who: str, now: int, member: str = "192.0.2.1") -> list[Op]:
    return [
        TakeTokens(f"q:f:{who}", interval_ms=60_000, capacity=1, cooldown=COOLDOWN, owner=f"sub:{who}"),
        CountDistinct(f"ips:f:{who}", member, limit=1, window_ms=60_000, enforce=False, owner=f"sub:{who}"),
        Reputation(f"sub:{who}", HOUR, 4 * HOUR, evidence=(("auth.failure", 2.0),), route_bit=2),
    ]


async def test_after_forget_an_identity_is_new_and_nothing_else_changed(backend: Backend) -> None:
    store = backend.store
    fresh = await MemoryStore(epoch_ms=T0).apply(identity_ops("alice", T0), T0)
    for who in ("alice", "bob"):
        for i, member in enumerate(["192.0.2.1", "192.0.2.2", "192.0.2.3"]):
            await store.apply(identity_ops(who, T0, member), T0 + i)  # exhausted, struck, held out
    claim = ClaimOnce("n:k:forget", ttl_ms=600_000, created_ms=T0)
    assert await store.apply([claim], T0) == [CLAIMED]
    keys_before = key_names(backend)
    bob_and_epochs = {k: v for k, v in _dumps(backend).items() if "alice" not in str(k)}
    forgets = [Forget(op) for op in identity_ops("alice", T0 + 3)]
    assert await store.apply(forgets, T0 + 3, dry_run=True) == [2, 1, 1]
    assert key_names(backend) == keys_before  # a dry Forget removes nothing
    assert await store.apply(forgets, T0 + 3) == [2, 1, 1]
    assert await store.apply(forgets, T0 + 3) == [0, 0, 0]
    await settle(store)
    # bob, the claim and every replay shard's epoch are as they were
    assert {k: v for k, v in _dumps(backend).items() if "alice" not in str(k)} == bob_and_epochs
    assert not any("alice" in str(k) for k in _dumps(backend))
    assert await store.apply([claim], T0 + 3) == [1]  # still claimed
    # alice is new: a full bucket, no strikes, one distinct value, no evidence
    again = await store.apply(identity_ops("alice", T0), T0 + 3)
    assert again[0] == fresh[0] and again[1] == fresh[1]
    assert again[2].count == 1.0 and again[2].routes == 0 and dict(again[2].signals) == {"auth.failure": 2.0}
    bob = await store.apply(identity_ops("bob", T0), T0 + 3)
    assert not bob[0].allowed and bob[0].strikes == 2  # bob is still held out


def key_names(backend: Backend) -> set[str]:
    listed = backend.keys()
    return {name for name, _ in listed}


def _dumps(backend: Backend) -> dict[Any, Any]:
    """Every key's value (memory: the live entries; Redis: DUMP on every node)."""
    store = backend.store
    if isinstance(store, MemoryStore):
        return {k: copy.deepcopy(v[:2]) for k, v in store._data.items()}
    return {key: dump for key, (dump, _) in raw_state(backend).items()}


async def test_forget_applies_in_a_refused_batch_and_later_operations_see_it(backend: Backend) -> None:
    store = backend.store
    bucket = TakeTokens("q:f:carol", interval_ms=60_000, capacity=2, owner="sub:carol")
    empty = TakeTokens("q:f:empty", interval_ms=60_000, capacity=1, owner="sub:dave")
    await store.apply([bucket, bucket, empty], T0)
    # the batch refuses (empty), yet the reset applies: an operator's reset is not the client's spending
    r = await store.apply([empty, Forget(bucket)], T0)
    assert (r[0].allowed, r[1]) == (False, 1)
    await settle(store)
    (peek,) = await store.apply([TakeTokens("q:f:carol", 60_000, 2, cost=0, owner="sub:carol")], T0)
    assert peek.remaining == 2
    # within a batch: a take, then its reset, then a take that finds a new bucket (dry and real agree)
    r = await dry_then_real(backend, [bucket, Forget(bucket), bucket], T0)
    assert (r[0].remaining, r[1], r[2].remaining) == (1, 1, 1)


def test_a_claim_cannot_be_forgotten() -> None:
    with pytest.raises(ValueError, match="ClaimOnce keeps no state"):
        Forget(ClaimOnce("n:k:1", 1000, T0))
    with pytest.raises(ValueError, match="Forget keeps no state"):
        Forget(Forget(TakeTokens("q:x", 1000, 1)))


def test_forget_lists_its_target_keys_in_the_target_slot() -> None:
    op = TakeTokens("q:slot", 1000, 1, owner="sub:s")
    assert Forget(op).redis_keys("authz:", T0) == op.redis_keys("authz:", T0)
    assert Forget(op).tag == op.tag
    rep = Reputation("ip:192.0.2.1", HOUR, HOUR)
    assert Forget(rep).redis_keys("authz:", T0) == rep.redis_keys("authz:", T0)
