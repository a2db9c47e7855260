"""The Redis store against real redis-server processes: round trips, epochs, faults, Cluster, Sentinel.

Servers are started on free loopback ports by the fixtures, killed and
restarted by the tests; nothing here talks to the machine's own Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from authz.clock import FixedClock
from authz.errors import ConfigError, StoreError
from authz.store import BEFORE_EPOCH, CLAIMED, ClaimOnce, TakeTokens, store_from_url
from authz.store.base import PartialFailure
from authz.store.breaker import Breaker
from authz.store.redis import RedisStore, parse_url
from tests.store.conftest import T0
from tests.support.procs import LOOPBACK, free_port
from tests.support.redis import RedisCluster, RedisServer, Sentinel, client


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as s:
        yield s


@pytest.fixture
async def store(server: RedisServer) -> AsyncIterator[RedisStore]:
    s = RedisStore(server.url, deadline_ms=1000, clock=FixedClock(T0))
    yield s
    await s.close()


#: the commands lua/batch.lua calls
INSIDE_THE_SCRIPT = {"get", "set", "pttl", "pexpire", "hmget", "hset", "pfadd", "pfcount"}


def take(name: str = "q:t:a", capacity: int = 10) -> TakeTokens:
    return TakeTokens(name, interval_ms=1000, capacity=capacity)


# -- URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind", "describe"),
    [
        ("redis://127.0.0.1:6390/2", "redis", "redis://127.0.0.1:6390/2"),
        ("redis://alice:s3cr3t@127.0.0.1:6390", "redis", "redis://127.0.0.1:6390"),
        ("rediss://:s3cr3t@cache.internal:6380/0?ssl_ca_certs=/etc/ca.pem", "redis", "rediss://cache.internal:6380"),
        ("unix:///run/redis.sock", "redis", "unix:///run/redis.sock"),
        ("redis+sentinel://:s3cr3t@10.0.0.1:26379,10.0.0.2:26379/main/1", "redis-sentinel", "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/main/1"),
        ("redis+cluster://u:s3cr3t@10.0.0.1:7000,10.0.0.2:7000", "redis-cluster", "redis+cluster://10.0.0.1:7000,10.0.0.2:7000"),
    ],
)
def test_store_urls_and_no_credentials_in_their_description(url: str, kind: str, describe: str) -> None:
    store = store_from_url(url)
    assert isinstance(store, RedisStore) and store.kind == kind
    assert store.describe() == describe
    assert "s3cr3t" not in store.describe() and "s3cr3t" not in str(store.health().to_dict())


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://:s3cr3t@h:99999", "not host:port in the store URL: 'h:99999'"),
        ("redis://h:1,h:2", "redis:// names one host"),
        ("redis+sentinel://h:26379", "needs the service name"),
        ("redis+cluster://h:7000/3", "a Redis Cluster has no database number"),
        ("redis://h:1/x", "not a database number: 'x'"),
        ("redis://h:1?timeout=3", "unknown store URL parameters: timeout"),
        ("memory://somewhere", "memory:// takes no host"),
        ("postgres://:s3cr3t@h", "unknown store URL scheme 'postgres'"),
    ],
)
def test_bad_store_urls_are_refused_without_echoing_a_password(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        store_from_url(url)
    assert message in str(err.value) and "s3cr3t" not in str(err.value)
    assert err.value.field == "store"


def test_parse_url_keeps_credentials_for_the_client_only() -> None:
    target, options = parse_url("redis://alice:p%40ss@127.0.0.1:6390/1")
    assert (target.hosts, target.db) == ((("127.0.0.1", 6390),), 1)
    assert options == {"username": "alice", "password": "p@ss"}


# -- one round trip ---------------------------------------------------------------------


async def test_a_batch_is_exactly_one_evalsha(server: RedisServer, store: RedisStore) -> None:
    ops = [take("q:a:x"), take("q:b:x"), ClaimOnce("n:k:warm", 60_000, T0)]
    await store.apply(ops, T0)  # connects (and checks the server's identity) first
    with client(server.port) as c:
        c.config_resetstat()
        for i in range(50):
            await store.apply([take("q:a:x"), take("q:b:x"), ClaimOnce(f"n:k:{i}", 60_000, T0)], T0)
        stats = c.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): v["calls"] for name, v in stats.items()}
    calls.pop("config|resetstat", None)
    calls.pop("info", None)
    # commandstats also counts what the script itself calls; the client sent only EVALSHA
    assert calls.pop("evalsha") == 50
    assert set(calls) <= INSIDE_THE_SCRIPT, calls


async def test_the_script_is_reloaded_after_redis_forgets_it(server: RedisServer, store: RedisStore) -> None:
    assert (await store.apply([take()], T0))[0].allowed
    with client(server.port) as c:
        c.script_flush()
    assert (await store.apply([take()], T0))[0].remaining == 8


# -- epochs ---------------------------------------------------------------------------------


async def test_restarting_authz_keeps_the_epoch_flushing_redis_starts_one(server: RedisServer) -> None:
    first = RedisStore(server.url, clock=FixedClock(T0), deadline_ms=1000)
    assert await first.apply([ClaimOnce("n:k:1", 60_000, T0)], T0) == [CLAIMED]
    await first.close()
    # authz restarts later: the epoch is Redis's, a claim made before the restart is still vouched for
    later = T0 + 30_000
    second = RedisStore(server.url, clock=FixedClock(later), deadline_ms=1000)
    assert await second.apply([ClaimOnce("n:k:2", 60_000, T0 + 10_000)], later) == [CLAIMED]
    assert second.epochs_renewed == 0
    # Redis loses its data: a claim made before that cannot be vouched for
    server.flush()
    assert await second.apply([ClaimOnce("n:k:3", 60_000, later - 1)], later) == [BEFORE_EPOCH]
    assert await second.apply([ClaimOnce("n:k:4", 60_000, later)], later) == [CLAIMED]
    await second.close()


async def test_a_redis_restarted_with_its_data_still_starts_a_new_epoch(tmp_path: object) -> None:
    with RedisServer("--appendonly", "yes", "--appendfsync", "always") as server:
        store = RedisStore(server.url, clock=FixedClock(T0), deadline_ms=1000)
        assert await store.apply([ClaimOnce("n:k:kept", 600_000, T0)], T0) == [CLAIMED]
        server.restart()  # same data (AOF), another run id
        later = T0 + 5_000
        store.clock = FixedClock(later)
        for _ in range(20):  # the first calls find the old connections dead
            try:
                result = await store.apply([ClaimOnce("n:k:older", 600_000, T0 + 1_000)], later)
                break
            except StoreError:
                await asyncio.sleep(0.05)
        assert result == [BEFORE_EPOCH]
        assert store.epochs_renewed == 16
        # the data is there: the claim made before the restart is still refused as used
        assert (await store.apply([ClaimOnce("n:k:kept", 600_000, later)], later)) == [1]
        await store.close()


# -- faults -------------------------------------------------------------------------------


async def test_a_dead_redis_fails_fast_opens_the_breaker_and_recovers(server: RedisServer) -> None:
    breaker = Breaker(threshold=3, open_ms=300)
    store = RedisStore(server.url, deadline_ms=200, breaker=breaker, clock=FixedClock(T0))
    assert (await store.apply([take()], T0))[0].allowed
    assert store.health().serving
    server.kill()
    for _ in range(3):
        with pytest.raises(StoreError):
            await store.apply([take()], T0)
    assert breaker.state == "open"
    started = time.perf_counter()
    for _ in range(1000):
        with pytest.raises(StoreError, match="circuit open"):
            await store.apply([take()], T0)
    assert (time.perf_counter() - started) / 1000 < 0.001  # the open circuit answers at once
    health = store.health()
    assert not health.serving and health.to_dict()["breaker"] == "open"
    server.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            result = await store.apply([take()], T0)
            break
        except StoreError:
            assert time.monotonic() < deadline, "never recovered"
            await asyncio.sleep(0.05)
    assert result[0].allowed and breaker.state == "closed" and store.health().serving
    await store.close()


async def test_a_store_made_before_redis_exists_works_once_it_appears() -> None:
    port = free_port()
    store = RedisStore(f"redis://{LOOPBACK}:{port}", deadline_ms=200, breaker=Breaker(threshold=2, open_ms=100), clock=FixedClock(T0))
    with pytest.raises(StoreError):
        await store.apply([take()], T0)
    with RedisServer(port=port):
        deadline = time.monotonic() + 10
        while True:
            try:
                assert (await store.apply([take()], T0))[0].allowed
                break
            except StoreError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    await store.close()


async def test_a_slow_redis_hits_the_deadline(server: RedisServer) -> None:
    store = RedisStore(server.url, deadline_ms=50, clock=FixedClock(T0))
    await store.apply([take()], T0)

    async def block() -> None:
        def sleep() -> None:
            with client(server.port) as c:
                c.execute_command("DEBUG", "SLEEP", "0.5")

        await asyncio.to_thread(sleep)

    blocker = asyncio.create_task(block())
    await asyncio.sleep(0.1)
    started = time.perf_counter()
    with pytest.raises(StoreError, match="did not answer within 50 ms"):
        await store.apply([take()], T0)
    assert time.perf_counter() - started < 0.3
    await blocker
    await store.close()


# -- Cluster ------------------------------------------------------------------------------


@pytest.fixture
def cluster_with_replicas() -> Iterator[RedisCluster]:
    with RedisCluster(masters=3, replicas=1, node_timeout_ms=500) as c:
        yield c


async def test_cluster_a_dead_master_fails_only_its_slots_then_fails_over(cluster_with_replicas: RedisCluster) -> None:
    cluster = cluster_with_replicas
    # a generous deadline: the machine may be busy, and this test is about which slots fail, not speed
    store = RedisStore(cluster.url, deadline_ms=1500, breaker=Breaker(threshold=1000), clock=FixedClock(T0))
    await store.start()
    try:
        owners = [f"sub:user{i}" for i in range(40)]
        ops = [TakeTokens(f"q:c:{o}", interval_ms=1000, capacity=100, owner=o) for o in owners]
        assert all(r.allowed for r in await store.apply(ops, T0))
        victim = cluster.node_for_key("authz:{" + owners[0] + "}q:q:c:" + owners[0])
        victim.kill()
        with pytest.raises(PartialFailure) as err:
            await store.apply(ops, T0)
        failed = err.value.failed
        assert 0 in failed and len(failed) < len(ops)  # only the dead master's slots failed
        assert all(r is not None for i, r in enumerate(err.value.results) if i not in failed)
        err.value.compensate()
        await store.wait_background()
        # its replica takes over; the store follows without a restart, and the new master's shards renew their epochs
        deadline = time.monotonic() + 20
        ambiguous = set(failed)  # a slot that timed out may or may not have spent: it is not counted below
        while True:
            try:
                results = await store.apply(ops, T0)
                break
            except PartialFailure as again:
                again.compensate()  # what the pipeline does for a refused request
                ambiguous |= again.failed
            except StoreError:
                ambiguous = set(range(len(ops)))  # the whole batch timed out: nothing is known
            assert time.monotonic() < deadline, "no failover"
            await asyncio.sleep(0.1)
        await store.wait_background()
        assert store.compensation_failures == 0
        assert all(r.allowed for r in results)
        # the failed attempts were given back on the slots that answered: only the first and the last batch count
        known = [r.remaining for i, r in enumerate(results) if i not in ambiguous]
        assert known and set(known) == {98}
    finally:
        await store.close()  # a failed assertion must not leave the client's sockets to the garbage collector


# -- Sentinel -------------------------------------------------------------------------------


async def test_sentinel_failover_is_followed_and_starts_a_new_epoch() -> None:
    with Sentinel() as sentinel:
        store = RedisStore(sentinel.url, deadline_ms=500, breaker=Breaker(threshold=1000), clock=FixedClock(T0))
        assert await store.apply([ClaimOnce("n:k:before", 600_000, T0)], T0) == [CLAIMED]
        old = sentinel.master_port()
        sentinel.master.kill()
        sentinel.wait_failover(old)
        later = T0 + 10_000
        store.clock = FixedClock(later)
        deadline = time.monotonic() + 20
        while True:
            try:
                result = await store.apply([ClaimOnce("n:k:older", 600_000, T0 + 1_000)], later)
                break
            except StoreError:
                assert time.monotonic() < deadline, "the store never reached the new master"
                await asyncio.sleep(0.1)
        # the promoted replica may have missed the last claims: what predates the failover is refused
        assert result == [BEFORE_EPOCH]
        assert store.epochs_renewed == 16
        assert await store.apply([ClaimOnce("n:k:after", 600_000, later)], later) == [CLAIMED]
        await store.close()
