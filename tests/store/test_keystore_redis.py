"""The keystore on a real redis-server: two instances, each seeing the other's changes within a second."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from authz.clock import FixedClock
from authz.errors import ConfigError
from authz.keys.crypto import MasterKey, MasterKeys
from authz.keys.keystore import Keystore, RedisBackend
from authz.server.keystore import open_keystore
from authz.settings import Settings
from tests.support.redis import RedisServer

T0 = 1_700_000_000_000
MASTER = MasterKeys([MasterKey("m", os.urandom(32))])


def keystore(server: RedisServer, prefix: str) -> Keystore:
    client = aioredis.Redis(host="127.0.0.1", port=server.port)
    return Keystore(RedisBackend(client, server.url, prefix=prefix), MASTER, clock=FixedClock(T0))


@pytest.fixture
async def pair(redis_node: RedisServer, request: pytest.FixtureRequest) -> AsyncIterator[tuple[Keystore, Keystore]]:
    prefix = f"test:{request.node.name}"
    a, b = keystore(redis_node, prefix), keystore(redis_node, prefix)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


async def seen(condition: Any, seconds: float = 1.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "not seen within a second"
        await asyncio.sleep(0.02)


async def test_creation_rotation_revocation_reach_the_other_instance(pair: tuple[Keystore, Keystore]) -> None:
    a, b = pair
    await a.create_key("partner", "hmac-sha256")
    await seen(lambda: "partner.v1" in b.ring_keys())
    await a.rotate_key("partner", T0 + 60_000)
    await seen(lambda: "partner.v2" in b.ring_keys() and b.ring_keys()["partner.v1"].not_after_ms == T0 + 60_000)
    await a.revoke_key("partner", 2)
    await seen(lambda: b.ring_keys()["partner.v2"].revoked)
    record, _ = await b.create_api_key("export", "acme", "gold")
    await seen(lambda: a.api_key(record.id) is not None)
    await b.revoke_api_key(record.id)
    await seen(lambda: a.api_key(record.id) is not None and a.api_key(record.id).revoked_ms == T0)  # type: ignore[union-attr]


class Deaf(RedisBackend):
    """Hears no pub/sub message (as on a Cluster, or when a message is lost): the version poll alone."""

    async def notifications(self, changed: Any) -> None:
        await asyncio.Event().wait()


async def test_the_version_poll_alone_carries_changes(pair: tuple[Keystore, Keystore], redis_node: RedisServer) -> None:
    a, _ = pair
    backend: Any = a.backend
    deaf = Keystore(Deaf(aioredis.Redis(host="127.0.0.1", port=redis_node.port), redis_node.url, prefix=backend.doc_key[1:-5]), MASTER)
    await deaf.start()
    try:
        await a.create_key("quiet", "ed25519")
        await seen(lambda: "quiet.v1" in deaf.ring_keys())
    finally:
        await deaf.close()


async def test_concurrent_writers_lose_no_update(pair: tuple[Keystore, Keystore]) -> None:
    a, b = pair
    await asyncio.gather(*(s.create_api_key(f"k{i}", "acme") for i in range(10) for s in (a, b)))
    await a.refresh()
    assert len(a.api_keys()) == 20


async def test_settings_open_a_redis_keystore(redis_node: RedisServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("AUTHZ_MASTER_KEY", "k1:" + __import__("base64").b64encode(os.urandom(32)).decode())
    settings = Settings(config="p.yaml", keystore=redis_node.url + "/3")
    settings.validate()
    ks = open_keystore(settings)
    assert ks is not None and "key {authz:keystore}:doc" in ks.where
    await ks.start()
    try:
        await ks.create_key("x", "HS256")
        assert "x.v1" in ks.ring_keys()
    finally:
        await ks.close()
    unreachable = open_keystore(Settings(config="p.yaml", keystore="redis://127.0.0.1:1"))
    assert unreachable is not None
    with pytest.raises(ConfigError, match="cannot read the keystore"):
        await unreachable.start()
    await unreachable.close()
    monkeypatch.delenv("AUTHZ_MASTER_KEY")
    with pytest.raises(ConfigError, match="master key"):
        Settings(config="p.yaml", keystore=str(tmp_path / "ks.json")).validate()
    with pytest.raises(ConfigError, match="unknown keystore URL scheme"):
        Settings(config="p.yaml", keystore="mongodb://x").validate()
