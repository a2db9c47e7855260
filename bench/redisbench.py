"""Redis for the bench: a real redis-server on a free loopback port, its command counts, its memory.

The server is started the way tests/support/redis.py starts one for the
tests (its own port and scratch directory, no persistence, never the
machine's Redis on 6379), pinned with the servers. The parsers work on what
redis-py's ``INFO`` returns and are tested on fixed samples.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

import authz.store
from bench.procs import Pinning, Proc, running, wait_tcp
from tests.support.redis import RedisServer

#: commands the bench itself sends around a measured interval, on a connection opened before it: not authz's
BENCH_OWN = frozenset({"config|resetstat", "info"})
#: where authz's Lua scripts live: the commands they call are counted in commandstats too, but are no round trips
LUA_DIR = Path(authz.store.__file__).resolve().parent / "lua"


def client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, socket_connect_timeout=2)


@contextlib.contextmanager
def redis_server(pinning: Pinning) -> Iterator[tuple[Proc, int]]:
    """One redis-server for one scenario: (its process, its port); stopped and its directory removed after."""
    server = RedisServer(name="bench-redis")
    try:
        with running("redis-server", pinning.server(server.args())) as proc:
            wait_tcp(proc, server.port)
            deadline = time.monotonic() + 10
            while not server.ping():
                proc.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on {server.port} never answered PING:\n{proc.output()}")
                time.sleep(0.02)
            yield proc, server.port
    finally:
        server.close()


def command_calls(info: Mapping[str, Any]) -> dict[str, int]:
    """``INFO commandstats`` as redis-py parses it -> {command: calls} (``cmdstat_`` dropped)."""
    out = {}
    for name, value in info.items():
        if name.startswith("cmdstat_") and isinstance(value, Mapping):
            out[name.removeprefix("cmdstat_")] = int(value.get("calls", 0))
    return out


def lua_commands(lua_text: str) -> set[str]:
    """The commands a Lua script calls, lower case.

    Directly (``redis.call('GET', ...)``, ``redis.pcall("SET", ...)``) or through
    the batch script's ``read`` / ``write`` helpers (``write('HSET', ...)``),
    which are redis.call itself when a batch is applied.
    """
    pattern = r"(?:redis\.p?call|\bread|\bwrite)\(\s*['\"]([A-Za-z|]+)['\"]"
    return {m.lower() for m in re.findall(pattern, lua_text)}


def script_commands(lua_dir: Path = LUA_DIR) -> frozenset[str]:
    """Every command any of authz's Lua scripts calls."""
    out: set[str] = set()
    for path in sorted(lua_dir.glob("*.lua")):
        out |= lua_commands(path.read_text())
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class RoundTrips:
    """What one measured interval cost the Redis server in commands.

    ``INFO commandstats`` counts the commands a script runs as well as the
    commands clients send, under the same names. The commands authz's scripts
    call are therefore reported apart (``in_scripts``): they run inside the
    one EVALSHA, no round trip of their own. authz's client sends none of them
    itself (it sends EVALSHA, and EVAL, SCRIPT LOAD, INFO, PING outside the
    batch), so nothing is hidden by that split.
    """

    decisions: int
    evalsha: int
    #: every other command clients sent in the interval, by name (authz's health probe PINGs once a second)
    other: dict[str, int] = field(default_factory=dict)
    #: commands run inside the scripts, by name
    in_scripts: dict[str, int] = field(default_factory=dict)

    @property
    def per_decision(self) -> float:
        return self.evalsha / self.decisions if self.decisions else 0.0

    @property
    def other_per_decision(self) -> float:
        return sum(self.other.values()) / self.decisions if self.decisions else 0.0

    def describe_other(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.other.items())) or "none"

    def describe_scripts(self) -> str:
        if not self.decisions:
            return "none"
        return ", ".join(f"{k} {v / self.decisions:.2f}" for k, v in sorted(self.in_scripts.items())) or "none"


def round_trips(
    calls: Mapping[str, int], decisions: int, own: frozenset[str] = BENCH_OWN, scripted: frozenset[str] | None = None
) -> RoundTrips:
    """Round trips per decision from the commands counted since ``CONFIG RESETSTAT``.

    ``own`` names the commands the bench sent itself (the reset, the reading
    ``INFO``): left out. ``scripted``: the commands authz's scripts call
    (default: read from its Lua files), reported apart.
    """
    scripted = script_commands() if scripted is None else scripted
    rest = {k: v for k, v in calls.items() if k != "evalsha" and k not in own and v}
    other = {k: v for k, v in rest.items() if k not in scripted}
    inside = {k: v for k, v in rest.items() if k in scripted}
    return RoundTrips(decisions, int(calls.get("evalsha", 0)), other, inside)


def reset_stats(c: redis.Redis) -> None:
    c.config_resetstat()


def read_calls(c: redis.Redis) -> dict[str, int]:
    return command_calls(c.info("commandstats"))


def used_memory(port: int) -> int:
    with client(port) as c:
        return int(c.info("memory")["used_memory"])


def hash_tag(key: str) -> str:
    """The ``{...}`` part of a key (what the key belongs to: one identity's keys share it), or '' without one."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if start >= 0 and end > start + 1 else ""


def group_by_identity(keys: Sequence[str], tag_prefix: str) -> dict[str, list[str]]:
    """Keys grouped by their hash tag, keeping only tags that start with ``tag_prefix`` (e.g. ``ip:``)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        tag = hash_tag(key)
        if tag.startswith(tag_prefix):
            groups[tag].append(key)
    return dict(groups)


@dataclass(frozen=True, slots=True)
class IdentityMemory:
    identities: int  # identities found in Redis (their hash tag starts with the prefix asked for)
    sampled: int  # identities whose keys were measured with MEMORY USAGE
    keys_per_identity: float
    memory_usage_bytes: float  # mean MEMORY USAGE of one identity's keys, added up
    used_memory_delta_bytes: float  # (used_memory after - before) / identities found


def identity_memory(port: int, tag_prefix: str, used_before: int, sample: int = 1000, seed: int = 7) -> IdentityMemory:
    """Bytes one identity costs in Redis, two ways: MEMORY USAGE of its keys, and used_memory's growth.

    ``used_before`` was read before the identities were driven; the growth is
    divided by the identities *found* (a refused Check, or an expired bucket,
    leaves none behind).
    """
    used_after = used_memory(port)
    with client(port) as c:
        keys = [k.decode() for k in c.scan_iter(count=1000)]
        groups = group_by_identity(keys, tag_prefix)
        chosen = random.Random(seed).sample(sorted(groups), min(sample, len(groups)))
        pipe = c.pipeline(transaction=False)
        for tag in chosen:
            for key in groups[tag]:
                pipe.memory_usage(key, samples=0)
        sizes = [int(s or 0) for s in pipe.execute()]
    n_keys = sum(len(groups[t]) for t in chosen)
    return IdentityMemory(
        identities=len(groups),
        sampled=len(chosen),
        keys_per_identity=n_keys / len(chosen) if chosen else 0.0,
        memory_usage_bytes=sum(sizes) / len(chosen) if chosen else 0.0,
        used_memory_delta_bytes=(used_after - used_before) / len(groups) if groups else 0.0,
    )
