"""The keystore of a serving process: master keys, backend and client from the settings.

``--keystore`` names a file or a Redis URL (redis://, rediss://, unix://,
redis+cluster://, rediss+cluster://; the same URL syntax and TLS parameters
as ``--store``). The master keys come from ``--master-key-file`` or the
``AUTHZ_MASTER_KEY`` variable, never from the command line (docs/keys.md).
"""

from __future__ import annotations

import os
from typing import Any

from authz.clock import Clock
from authz.errors import ConfigError
from authz.keys.crypto import MasterKeys, parse_master_keys
from authz.keys.keystore import FileBackend, Keystore, RedisBackend
from authz.settings import REDIS_KEYSTORE_SCHEMES, Settings

MASTER_KEY_ENV = "AUTHZ_MASTER_KEY"


def master_keys(settings: Settings) -> MasterKeys:
    """The master keys, from the file or the environment.

    :raises ConfigError: missing, unreadable or malformed (never echoing key material)
    """
    if settings.master_key_file:
        try:
            with open(settings.master_key_file, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(settings.master_key_file, 0, "master_key_file", f"cannot read the master key file: {getattr(exc, 'strerror', None) or exc}") from None
        where = settings.master_key_file
    else:
        text = os.environ.get(MASTER_KEY_ENV, "")
        where = MASTER_KEY_ENV
    try:
        return parse_master_keys(text)
    except ValueError as exc:
        raise ConfigError(where, 0, "master_key", str(exc)) from None


def open_keystore(settings: Settings, clock: Clock | None = None) -> Keystore | None:
    """The keystore the settings name (not started), or None without ``--keystore``."""
    if not settings.keystore:
        return None
    keys = master_keys(settings)
    location = settings.keystore
    scheme = location.partition("://")[0] if "://" in location else ""
    if scheme in REDIS_KEYSTORE_SCHEMES:
        client, describe = _redis_client(location)
        return Keystore(RedisBackend(client, describe, cluster=scheme.endswith("+cluster")), keys, clock=clock)
    return Keystore(FileBackend(location), keys, clock=clock)


def _redis_client(url: str) -> tuple[Any, str]:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    from authz.store.redis import parse_url

    try:
        target, options = parse_url(url)
    except ConfigError as exc:
        raise ConfigError("--keystore", 0, "keystore", exc.message) from None
    common: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0, "decode_responses": False, **options}
    if target.scheme == "unix":
        common.pop("ssl", None)
        return aioredis.Redis(unix_socket_path=target.path, **common), target.describe()
    if target.scheme.endswith("+cluster"):
        nodes = [ClusterNode(h, p) for h, p in target.hosts]
        return RedisCluster(startup_nodes=nodes, require_full_coverage=False, **common), target.describe()
    ((host, port),) = target.hosts
    return aioredis.Redis(host=host, port=port, db=target.db, **common), target.describe()
