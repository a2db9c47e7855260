"""Real redis-server processes for tests: a single node, a 3-master Cluster, a replica + Sentinel.

Every server binds 127.0.0.1 on a free port (never the machine's own Redis on
6379), keeps its files in a temporary directory, and is stopped by its owner.
Servers can be killed and restarted on the same port to prove fault
behaviour. Every wait is bounded in time.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import redis

from tests.support.procs import LOOPBACK, Proc, free_port, wait_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def client(port: int) -> redis.Redis:
    """A plain redis-py client on one server (tests inspect the server with it)."""
    return redis.Redis(host=LOOPBACK, port=port, socket_timeout=2, socket_connect_timeout=2)


def info(port: int, section: str = "default") -> dict[str, Any]:
    with client(port) as c:
        return dict(c.info(section))


class RedisServer:
    """One redis-server on a free loopback port, with a scratch directory of its own."""

    def __init__(self, *extra: str, port: int | None = None, name: str = "redis") -> None:
        self.port = port or free_port()
        self.extra = list(extra)
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"authz-{name}-"))
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}"

    def args(self) -> list[str]:
        return [
            REDIS_SERVER, "--port", str(self.port), "--bind", LOOPBACK, "--dir", str(self.dir),
            "--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
            "--enable-debug-command", "local",  # DEBUG SLEEP plays a slow Redis
            *self.extra,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.proc = Proc(self.args(), name=self.name).start()
        wait_port(LOOPBACK, self.port, timeout=timeout, proc=self.proc)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} on {self.port} never answered PING\n{self.proc.tail()}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        try:
            with client(self.port) as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def client(self) -> redis.Redis:
        return client(self.port)

    def kill(self) -> None:
        """SIGKILL: the abrupt death of a crash."""
        if self.proc is not None:
            self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def restart(self) -> None:
        """Start again on the same port (without persistence: with empty data)."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        with client(self.port) as c:
            c.flushall()

    def all_keys(self) -> list[str]:
        """Every key, by SCAN (tests only)."""
        with client(self.port) as c:
            return [k.decode() for k in c.scan_iter(count=1000)]

    def pttl(self, key: str) -> int:
        with client(self.port) as c:
            return int(c.pttl(key))


class RedisCluster:
    """A real Redis Cluster of ``masters`` masters (and ``replicas`` replicas each), built with redis-cli."""

    def __init__(self, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000) -> None:
        self.nodes = [
            RedisServer(
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms), "--cluster-require-full-coverage", "no",
                "--cluster-replica-validity-factor", "0",
                # the bus port on a free port of its own (the default, port + 10000, may be taken or too high)
                "--cluster-port", str(free_port()),
                name=f"redis-cluster-{i}",
            )
            for i in range(masters * (1 + replicas))
        ]  # fmt: skip
        self.replicas = replicas

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{LOOPBACK}:{n.port}" for n in self.nodes[:3])

    def start(self, timeout: float = 30.0) -> RedisCluster:
        for node in self.nodes:
            node.start()
        addrs = [f"{LOOPBACK}:{n.port}" for n in self.nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addrs, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout,
        )  # fmt: skip
        self.wait_ok(timeout)
        return self

    def wait_ok(self, timeout: float = 30.0, nodes: Sequence[RedisServer] | None = None) -> None:
        """Wait until every node agrees: state ok, all slots served, every node known, replicas in sync.

        A cluster that is still converging answers MOVED back and forth, which
        is not what the tests are about.
        """
        deadline = time.monotonic() + timeout
        live = [n for n in (nodes or self.nodes) if n.proc is not None and n.proc.alive]
        while True:
            infos = [info_cluster(n.port) for n in live]
            views = {_slot_view(n.port) for n in live}
            settled = all(
                i.get("cluster_state") == "ok" and i.get("cluster_slots_ok") == "16384"
                and i.get("cluster_known_nodes") == str(len(self.nodes))
                for i in infos
            ) and len(views) == 1  # fmt: skip
            replicas = [n for n in live if info(n.port, "replication").get("role") == "slave"]
            if settled and all(info(n.port, "replication").get("master_link_status") == "up" for n in replicas):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster did not settle: {infos}")
            time.sleep(0.05)

    def masters(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None and n.proc.alive and info(n.port, "replication").get("role") == "master"]

    def node_for_key(self, key: str) -> RedisServer:
        with client(self.masters()[0].port) as c:
            slot = int(c.cluster("KEYSLOT", key))
        for node in self.masters():
            for start, end in _slots_of(node.port):
                if start <= slot <= end:
                    return node
        raise LookupError(f"no live master serves slot {slot}")

    def flush(self) -> None:
        for node in self.masters():
            node.flush()

    def all_keys(self) -> list[tuple[RedisServer, str]]:
        return [(node, key) for node in self.masters() for key in node.all_keys()]

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def info_cluster(port: int) -> dict[str, str]:
    try:
        with client(port) as c:
            text = c.execute_command("CLUSTER", "INFO").decode()
    except redis.RedisError:
        return {}
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


def _slot_view(port: int) -> tuple[tuple[int, int, int], ...]:
    """How this node sees the slot map: (start, end, master port) ranges."""
    try:
        with client(port) as c:
            slots = c.execute_command("CLUSTER", "SLOTS")
    except redis.RedisError:
        return ()
    return tuple(sorted((int(s[0]), int(s[1]), int(s[2][1])) for s in slots))


def _slots_of(port: int) -> list[tuple[int, int]]:
    """The slot ranges this node serves as a master, from CLUSTER NODES (myself line)."""
    with client(port) as c:
        text = c.execute_command("CLUSTER", "NODES").decode()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 8 and "myself" in fields[2]:
            out = []
            for item in fields[8:]:
                if item.startswith("["):
                    continue
                start, _, end = item.partition("-")
                out.append((int(start), int(end or start)))
            return out
    return []


class Sentinel:
    """A master, a replica and one Sentinel watching them (quorum 1, fast failover)."""

    SERVICE = "authz-test"

    def __init__(self) -> None:
        self.master = RedisServer(name="redis-master")
        self.replica = RedisServer(name="redis-replica")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="authz-sentinel-"))
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://{LOOPBACK}:{self.port}/{self.SERVICE}"

    def start(self, timeout: float = 20.0) -> Sentinel:
        self.master.start()
        self.replica.extra += ["--replicaof", LOOPBACK, str(self.master.port)]
        self.replica.start()
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind {LOOPBACK}\nprotected-mode no\ndir {self.dir}\n"
            f"sentinel monitor {self.SERVICE} {LOOPBACK} {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.SERVICE} 500\n"
            f"sentinel failover-timeout {self.SERVICE} 3000\n"
            f"sentinel parallel-syncs {self.SERVICE} 1\n"
        )
        self.proc = Proc([REDIS_SERVER, str(conf), "--sentinel"], name="redis-sentinel").start()
        wait_port(LOOPBACK, self.port, timeout=timeout, proc=self.proc)
        deadline = time.monotonic() + timeout
        while info(self.replica.port, "replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise TimeoutError("the replica never synced")
            time.sleep(0.05)
        return self

    def master_port(self) -> int:
        with client(self.port) as c:
            host, port = c.execute_command("SENTINEL", "get-master-addr-by-name", self.SERVICE)
        return int(port)

    def wait_failover(self, from_port: int, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, redis.RedisError, ValueError, TypeError):
                port = self.master_port()
                if port != from_port and info(port, "replication").get("role") == "master":
                    return port
            if time.monotonic() > deadline:
                raise TimeoutError("Sentinel did not fail over")
            time.sleep(0.05)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        self.master.close()
        self.replica.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Sentinel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def redis_server(*extra: str) -> Iterator[RedisServer]:
    with RedisServer(*extra) as server:
        yield server


__all__ = ["RedisCluster", "RedisServer", "Sentinel", "client", "info", "redis_server"]
