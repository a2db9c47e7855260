"""Stores for the contract suite: memory, a real redis-server, a real 3-master Redis Cluster.

The servers are session-scoped (one per test process); every test gets a
flushed store, so tests are independent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from authz.clock import FixedClock
from authz.store import MemoryStore, Store
from authz.store.redis import RedisStore
from tests.support.redis import RedisCluster, RedisServer

T0 = 1_700_000_000_000


@pytest.fixture(scope="session")
def redis_node() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    with RedisCluster(masters=3) as cluster:
        yield cluster


class Backend:
    """A store under test and how to look at its raw state."""

    def __init__(
        self, name: str, store: Store, keys: Callable[[], list[tuple[str, int | None]]], nodes: Callable[[], list[RedisServer]] = list,
    ) -> None:
        self.name = name
        self.store = store
        self.keys = keys  # every key with its TTL in ms (None: no TTL)
        self.nodes = nodes  # the Redis servers holding the store's keys (none for memory)


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    name = request.param
    if name == "memory":
        mem = MemoryStore(epoch_ms=T0)
        yield Backend(name, mem, lambda: [(k, mem.ttl_ms(k, T0)) for k in mem.key_names()])
        return
    if name == "redis":
        node: RedisServer = request.getfixturevalue("redis_node")
        node.flush()
        store = RedisStore(node.url, deadline_ms=2000, clock=FixedClock(T0))

        def node_keys() -> list[tuple[str, int | None]]:
            return [(k, _ttl(node.pttl(k))) for k in node.all_keys()]

        yield Backend(name, store, node_keys, lambda: [node])
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        store = RedisStore(cluster.url, deadline_ms=2000, clock=FixedClock(T0))

        def cluster_keys() -> list[tuple[str, int | None]]:
            return [(k, _ttl(n.pttl(k))) for n, k in cluster.all_keys()]

        yield Backend(name, store, cluster_keys, cluster.masters)
    await store.close()


def _ttl(pttl: int) -> int | None:
    return pttl if pttl > 0 else None


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.store


async def settle(store: Store) -> None:
    """Wait for a Cluster store's background compensations (nothing to wait for elsewhere)."""
    if isinstance(store, RedisStore):
        await store.wait_background()
