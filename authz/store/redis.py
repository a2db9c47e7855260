"""The Redis store: one Lua script per request, on a single node, behind Sentinel, or on a Cluster.

URLs (``--store``):

``redis://[user:pass@]host:port[/db]``, ``rediss://...`` (TLS), ``unix:///path/redis.sock``
    one Redis. TLS options as redis-py query parameters (``?ssl_ca_certs=ca.pem``,
    ``ssl_certfile``, ``ssl_keyfile``).
``redis+sentinel://[user:pass@]host:port[,host:port...]/service[/db]``
    the master of ``service`` as the Sentinels name it; failovers are followed.
``redis+cluster://[user:pass@]host:port[,host:port...]``
    a Redis Cluster, from any of its nodes.

A request's operations go to Redis as one ``EVALSHA`` of ``lua/batch.lua``
(redis-py reloads the script after a ``NOSCRIPT``), all-or-nothing for what
the batch spends: one round trip, one atomic step on the server.

On a Cluster every key is hash-tagged by what it belongs to (a subject, an
address, a replay shard), so one identity's state lives in one slot; a
request whose operations touch several slots runs one script per slot,
concurrently. Each slot's script is atomic; across slots the batch is made
all-or-nothing by compensation: when a slot refuses, the slots that accepted
give their tokens back and drop the claims they made (``lua/refund.lua``, only
claims this batch wrote). When a slot fails (down, timed out), the batch
raises ``PartialFailure``: the pipeline applies the route's failure policy to
the checks whose slot failed, and compensates the others unless the request
is allowed. Between a slot's charge and its compensation (one more round
trip) a concurrent request may find the tokens taken: it can be refused
more, never allowed more.

A dry run is the same script with its mode argument set: it computes every
reply and writes nothing (see the script's header), so on a Cluster no slot
spends and nothing is compensated. A dry run that meets ``NOSCRIPT`` still
checks the server's identity before loading the script (below): that check
guards every later batch, and a new epoch it starts is the server's, not the
request's.

Epochs: each replay shard keeps its epoch in Redis, so restarting authz does
not open a new one. A Redis that lost its data has no epoch, and the next
claim starts one. A Redis that restarted with its data reloaded from disk,
or a replica promoted by a failover, may have lost the last claims without
losing the epoch. Both have forgotten the batch script (Redis keeps scripts
in memory only), so the store's first ``EVALSHA`` there answers
``NOSCRIPT``: before loading the script again, the store compares the
server's run id with the one recorded next to each replay shard's epoch
(``lua/identity.lua``), and a changed server starts a new epoch. (A
``SCRIPT FLUSH`` by an operator looks the same and also starts one: refusing
a few signatures is the safe side.)

The store never waits for Redis at start-up and never crashes without it:
calls fail (``StoreError``) until Redis answers, and the circuit breaker keeps
a dead Redis from costing more than a microsecond per request. Credentials
never appear in ``describe()``, logs or health output.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import itertools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from authz.clock import Clock, SystemClock
from authz.errors import ConfigError
from authz.store.base import Health, Op, PartialFailure, Result, Store, rkey
from authz.store.breaker import Breaker
from authz.store.ops import REPLAY_SHARDS, replay_shard_tag

log = logging.getLogger("authz.store")

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster")
#: the prefix of every key authz writes
PREFIX = "authz:"


def _lua(name: str) -> str:
    return importlib.resources.files("authz.store").joinpath(f"lua/{name}").read_text(encoding="utf-8")


BATCH_LUA = _lua("batch.lua")
REFUND_LUA = _lua("refund.lua")
IDENTITY_LUA = _lua("identity.lua")
#: connections opened at start-up, before traffic needs them
WARM_CONNECTIONS = 8
#: how often a compensation is sent before it is given up (backing off from 50 ms)
REFUND_ATTEMPTS = 6
#: how long a replay shard's epoch and server marker live without being refreshed
EPOCH_TTL_MS = 7 * 86_400_000


@dataclass(frozen=True, slots=True)
class Target:
    """Where a Redis URL points, without its credentials (for logs and health)."""

    scheme: str
    hosts: tuple[tuple[str, int], ...]
    service: str = ""
    db: int = 0
    path: str = ""

    def describe(self) -> str:
        where = self.path or ",".join(f"{h}:{p}" for h, p in self.hosts)
        suffix = f"/{self.service}" if self.service else ""
        return f"{self.scheme}://{where}{suffix}" + (f"/{self.db}" if self.db else "")


def parse_url(url: str) -> tuple[Target, dict[str, Any]]:
    """Split a store URL into its target and the client options (credentials, TLS).

    :raises ConfigError: naming what is wrong, never echoing a password
    """
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in SCHEMES:
        raise ConfigError("--store", 0, "store", f"unknown store URL scheme {scheme!r} (supported: memory://, {', '.join(s + '://' for s in SCHEMES)})")
    options: dict[str, Any] = {}
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    tls = scheme.startswith("rediss")
    query = dict(parse_qsl(parts.query))
    for key in TLS_PARAMETERS:
        if key in query:
            options[key] = query.pop(key)
    if query:
        raise ConfigError("--store", 0, "store", f"unknown store URL parameters: {', '.join(sorted(query))}")
    _check_tls(scheme, options)
    if tls:
        options["ssl"] = True
    if scheme == "unix":
        if not parts.path:
            raise ConfigError("--store", 0, "store", "unix:// needs a socket path")
        return Target(scheme, (), path=parts.path), options
    hosts = _hosts(parts)
    if scheme.endswith("+sentinel"):
        segments = [s for s in parts.path.split("/") if s]
        if not segments:
            raise ConfigError("--store", 0, "store", "redis+sentinel:// needs the service name: redis+sentinel://host:26379/mymaster")
        db = _db(segments[1] if len(segments) > 1 else "0")
        return Target(scheme, hosts, service=segments[0], db=db), options
    if scheme.endswith("+cluster"):
        if parts.path.strip("/"):
            raise ConfigError("--store", 0, "store", "a Redis Cluster has no database number")
        return Target(scheme, hosts), options
    if len(hosts) != 1:
        raise ConfigError("--store", 0, "store", "redis:// names one host (use redis+sentinel:// or redis+cluster:// for several)")
    return Target(scheme, hosts, db=_db(parts.path.strip("/") or "0")), options


#: the TLS parameters of a rediss:// URL: the CA that issued the server's certificate, and
#: authz's client certificate and key when Redis requires one (tls-auth-clients yes)
TLS_PARAMETERS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")


def _check_tls(scheme: str, options: dict[str, Any]) -> None:
    """TLS parameters only with TLS, a certificate with its key, and the server always verified.

    Messages name the parameter, never a path (the key's path is nobody's business in a log).
    """
    given = [k for k in TLS_PARAMETERS if k in options]
    if given and not scheme.startswith("rediss"):
        raise ConfigError("--store", 0, "store", f"{given[0]} needs TLS: use rediss:// (or rediss+sentinel://, rediss+cluster://)")
    if ("ssl_certfile" in options) != ("ssl_keyfile" in options):
        raise ConfigError("--store", 0, "store", "ssl_certfile and ssl_keyfile go together (the client certificate and its key)")
    reqs = options.get("ssl_cert_reqs")
    if reqs is not None and reqs != "required":
        raise ConfigError(
            "--store", 0, "store",
            f"ssl_cert_reqs={reqs} would accept any server: authz always verifies Redis's certificate"
            " (give the CA that issued it as ssl_ca_certs)",
        )  # fmt: skip
    for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        value = options.get(key)
        if value is not None and not value:
            raise ConfigError("--store", 0, "store", f"{key} is empty")


def _hosts(parts: SplitResult) -> tuple[tuple[str, int], ...]:
    netloc = parts.netloc.rpartition("@")[2]
    out = []
    for item in netloc.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep:
            host, port = item.strip(), "26379" if parts.scheme.endswith("+sentinel") else "6379"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("--store", 0, "store", f"not host:port in the store URL: {item.strip()!r}")
        out.append((host, int(port)))
    return tuple(out)


def _sha1(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1


def _db(text: str) -> int:
    if not text.isdigit():
        raise ConfigError("--store", 0, "store", f"not a database number: {text!r}")
    return int(text)


class RedisStore(Store):
    """:param url: a ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://`` or ``redis+cluster://`` URL
    :param deadline_ms: the most one batch may take
    :param max_connections: the connection pool's bound (per node on a Cluster)
    :param clock: the engine's clock
    """

    remote = True

    def __init__(
        self,
        url: str,
        *,
        deadline_ms: int = 20,
        breaker: Breaker | None = None,
        max_connections: int = 32,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(deadline_ms=deadline_ms, breaker=breaker)
        #: the engine's clock: a new epoch begins at its "now", as claims are dated by it
        self.clock: Clock = clock or SystemClock()
        self.target, options = parse_url(url)
        self._tls_files = {k: str(v) for k, v in options.items() if k in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")}
        self.cluster = self.target.scheme.endswith("+cluster")
        self.kind = "redis-cluster" if self.cluster else "redis-sentinel" if self.target.scheme.endswith("+sentinel") else "redis"
        self._sentinels: list[Any] = []
        self.client = self._client(options, max_connections)
        self._batch_sha = _sha1(BATCH_LUA)
        # the one task that checks the server's identity and loads the script (see _prepare)
        self._preparing: asyncio.Task[None] | None = None
        self._warmer: asyncio.Task[None] | None = None
        self._refund = self.client.register_script(REFUND_LUA)
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()
        self._background: set[asyncio.Task[Any]] = set()
        #: compensations that could not be sent (metrics, tests)
        self.compensation_failures = 0
        #: identity checks run (after a NOSCRIPT), and replay shards that started a new epoch because the server changed
        self.identity_checks = 0
        self.epochs_renewed = 0
        #: batches sent again after the Cluster client dropped a connection being set up
        self.reconnect_retries = 0


    def _client(self, options: dict[str, Any], max_connections: int) -> Any:
        import redis.asyncio as aioredis
        from redis.asyncio.cluster import ClusterNode, RedisCluster
        from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
        from redis.asyncio.retry import Retry
        from redis.asyncio.sentinel import Sentinel
        from redis.backoff import NoBackoff

        # The deadline is Store.apply's; socket timeouts only bound a connection attempt.
        # RESP2: the script's replies are plain arrays either way, and redis-py's Cluster
        # client drops connections that are still connecting under RESP3 (seen with
        # redis-py 8 on a Cluster with replicas: AttributeError on a fresh connection).
        common: dict[str, Any] = {
            "socket_connect_timeout": 1.0, "socket_timeout": 2.0, "decode_responses": False, "protocol": 2, **options,
        }  # fmt: skip
        target = self.target
        if target.scheme == "unix":
            # a bounded pool that makes a burst wait for a connection instead of opening
            # one per concurrent request (a connection costs several round trips to set up)
            pool = aioredis.BlockingConnectionPool(
                connection_class=UnixDomainSocketConnection, path=target.path, max_connections=max_connections, timeout=2, **common
            )
            return aioredis.Redis.from_pool(pool)
        if self.cluster:
            nodes = [ClusterNode(h, p) for h, p in target.hosts]
            # No retries: a script whose connection broke after it was written may have run,
            # and sending it again would spend twice. The slot fails (PartialFailure) and the
            # client refreshes its topology before the next batch. MOVED / ASK redirects are
            # followed all the same (they are not retries of a failed write).
            return RedisCluster(
                startup_nodes=nodes, max_connections=max_connections, require_full_coverage=False,
                retry=Retry(NoBackoff(), 0), **common,
            )  # fmt: skip
        if target.scheme.endswith("+sentinel"):
            sentinel_opts = {k: v for k, v in common.items() if k not in ("db",)}
            sentinel = Sentinel(list(target.hosts), sentinel_kwargs=sentinel_opts, **common)  # type: ignore[no-untyped-call]
            self._sentinels = list(sentinel.sentinels)
            return sentinel.master_for(target.service, db=target.db, max_connections=max_connections)
        (host, port), = target.hosts
        tls = bool(common.pop("ssl", False))
        pool = aioredis.BlockingConnectionPool(
            connection_class=SSLConnection if tls else Connection, host=host, port=port, db=target.db,
            max_connections=max_connections, timeout=2, **common,
        )  # fmt: skip
        return aioredis.Redis.from_pool(pool)

    async def _evalsha(self, keys: list[str], args: list[str | int | float]) -> Any:
        """One EVALSHA of the batch script; after a NOSCRIPT, check the server's identity, load, retry."""
        from redis.exceptions import NoScriptError

        try:
            try:
                return await self.client.evalsha(self._batch_sha, len(keys), *keys, *args)
            except AttributeError:
                # redis-py's Cluster client can drop a connection while it is still being
                # set up, when a topology refresh marks every connection for reconnect; the
                # command was never written, so sending it again is safe
                if not self.cluster:
                    raise
                self.reconnect_retries += 1
                return await self.client.evalsha(self._batch_sha, len(keys), *keys, *args)
        except NoScriptError:
            # one request checks and reloads; the others that met the same NOSCRIPT wait for it
            # The server forgot the script: one task checks its identity and loads the script
            # again. It runs beside the requests, shielded from their deadlines, so a slow
            # recovery finishes once instead of being cut short by every request in turn.
            await asyncio.shield(self._prepare())
            return await self.client.evalsha(self._batch_sha, len(keys), *keys, *args)

    def _prepare(self) -> asyncio.Task[None]:
        task = self._preparing
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._identity_and_script(), name="redis-prepare")
            self._preparing = task
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return task

    async def _identity_and_script(self) -> None:
        await self._check_identity()
        await self.client.script_load(BATCH_LUA)

    async def start(self, wait_s: float = 0.5) -> None:
        """Connect, check the server and load the script in the background, before traffic needs it.

        Waits at most ``wait_s`` for that (a Redis that answers is ready before
        the first check); never longer: a Redis that is not there yet is tried
        again every second, and requests meanwhile follow their routes'
        on_store_error.
        """
        for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            path = self._tls_files.get(key)
            if path is not None and not os.access(path, os.R_OK):
                raise ConfigError("--store", 0, "store", f"cannot read the file of {key}")
        self._warmer = asyncio.get_running_loop().create_task(self._warm(), name="redis-warm")
        try:
            await asyncio.wait_for(asyncio.shield(self._warmer), wait_s)
        except TimeoutError:
            log.warning("%s does not answer yet; serving meanwhile by each route's on_store_error", self.describe())

    async def _warm(self) -> None:
        delay = 0.1
        while True:
            try:
                await asyncio.shield(self._prepare())
                # open a few connections now, so that the first burst does not pay for them
                await asyncio.gather(*(self.client.ping() for _ in range(WARM_CONNECTIONS)))
                return
            except Exception as exc:  # not there yet, or failing over: try again
                self.last_error = type(exc).__name__
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _check_identity(self) -> None:
        """The server behind ``key`` forgot the script: start a new epoch in each replay shard
        whose server changed since authz last looked (see the module doc)."""
        now_ms = self.clock.now_ms()
        if self.cluster:
            # the run id of each master, then each shard on its own node
            from redis.asyncio.cluster import RedisCluster

            infos = await self.client.info("server", target_nodes=RedisCluster.PRIMARIES)
            run_ids = {name: str(info.get("run_id", "")) for name, info in infos.items()}
        else:
            info = await self.client.info("server")
            run_id = str(info.get("run_id", ""))
        renewed = 0
        for shard in range(REPLAY_SHARDS):
            tag = replay_shard_tag(shard)
            keys = [rkey(PREFIX, tag, "server"), rkey(PREFIX, tag, "epoch")]
            if self.cluster:
                node = self.client.get_node_from_key(keys[1])
                run_id = run_ids.get(node.name, "") if node is not None else ""
                if not run_id:
                    continue
            if int(await self.client.eval(IDENTITY_LUA, 2, *keys, run_id, now_ms, EPOCH_TTL_MS)) == 2:
                # counted at once: a check cut short by a timeout has still renewed these shards
                renewed += 1
                self.epochs_renewed += 1
        self.identity_checks += 1
        if renewed:
            log.warning(
                "%s: the Redis server changed (restart or failover, or its scripts were flushed); "
                "%d replay shards start a new epoch", self.describe(), renewed,
            )  # fmt: skip

    def describe(self) -> str:
        """The store's URL without credentials."""
        return self.target.describe()

    # -- the batch ---------------------------------------------------------------

    def _batch_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids):x}"

    @staticmethod
    def _encode(ops: Sequence[Op], now_ms: int, batch: str, dry_run: bool = False) -> tuple[list[str], list[str | int | float]]:
        """KEYS and ARGV of the batch script (its header comment describes the layout)."""
        keys: list[str] = []
        args: list[str | int | float] = [now_ms, batch, 1 if dry_run else 0, len(ops)]
        for op in ops:
            ks = op.redis_keys(PREFIX, now_ms)
            a = op.redis_args(now_ms)
            keys += ks
            args += [op.LUA, len(ks), len(a), *a]
        return keys, args

    async def _run(self, ops: Sequence[Op], now_ms: int, batch: str, dry_run: bool) -> tuple[bool, list[Result]]:
        keys, args = self._encode(ops, now_ms, batch, dry_run)
        reply = await self._evalsha(keys, args)
        return bool(reply[0]), [op.decode(raw) for op, raw in zip(ops, reply[1:], strict=True)]

    async def _apply(self, ops: Sequence[Op], now_ms: int, dry_run: bool) -> list[Result]:
        if not ops:
            return []
        batch = self._batch_id()
        if not self.cluster:
            _, results = await self._run(ops, now_ms, batch, dry_run)
            return results
        return await self._apply_cluster(ops, now_ms, batch, dry_run)

    async def _apply_cluster(self, ops: Sequence[Op], now_ms: int, batch: str, dry_run: bool) -> list[Result]:
        # a dry run spends nothing on any slot, so nothing is ever compensated
        # one script per slot, concurrently; all keys of one operation share its tag's slot
        by_slot: dict[int, list[int]] = {}
        for i, op in enumerate(ops):
            slot = self.client.keyslot(op.redis_keys(PREFIX, now_ms)[0])
            by_slot.setdefault(slot, []).append(i)
        groups = list(by_slot.values())
        if len(groups) == 1:
            _, only = await self._run(ops, now_ms, batch, dry_run)
            return only
        # each slot gets most of the deadline, so that a dead slot fails alone (PartialFailure)
        # before the whole batch runs out of time
        slot_deadline = self.deadline_s * 0.8

        async def run(group: list[int]) -> tuple[bool, list[Result]]:
            async with asyncio.timeout(slot_deadline):
                return await self._run([ops[i] for i in group], now_ms, batch, dry_run)

        tasks = [asyncio.ensure_future(run(group)) for group in groups]
        try:
            answers = await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            # the whole batch ran out of time: give back what the slots that answered spent
            for group, task in zip(groups, tasks, strict=True):
                if task.done() and not task.cancelled() and task.exception() is None:
                    refused_here, res = task.result()
                    if not refused_here and not dry_run:
                        self.compensate([ops[i] for i in group], res, batch, now_ms)
                else:
                    task.cancel()
            raise
        results: list[Result | None] = [None] * len(ops)
        failed: set[int] = set()
        refused = False
        errors: list[BaseException] = []
        accepted: list[int] = []
        for group, answer in zip(groups, answers, strict=True):
            if isinstance(answer, BaseException):
                failed.update(group)
                errors.append(answer)
                continue
            group_refused, group_results = answer
            refused = refused or group_refused
            if not group_refused:
                accepted += group
            for i, res in zip(group, group_results, strict=True):
                results[i] = res
        if dry_run:
            accepted = []
        if failed:
            accepted_ops, accepted_results = [ops[i] for i in accepted], [results[i] for i in accepted]
            raise PartialFailure(
                f"{len(errors)} of {len(groups)} Cluster slots failed ({type(errors[0]).__name__})",
                results, frozenset(failed),
                lambda: self.compensate(accepted_ops, accepted_results, batch, now_ms),
            )  # fmt: skip
        if refused and accepted:
            # a refused batch spends nothing: the slots that accepted give back what they took
            self.compensate([ops[i] for i in accepted], [results[i] for i in accepted], batch, now_ms)
        return results

    def compensate(self, ops: Sequence[Op], results: Sequence[Result], batch: str, now_ms: int) -> None:
        """Undo what ``ops`` (of ``batch``, with these results) spent, in the background, one script per slot."""
        spending = [op for op, res in zip(ops, results, strict=True) if op.spent(res)]
        if not spending:
            return
        by_slot: dict[int, list[Op]] = {}
        for op in spending:
            by_slot.setdefault(self.client.keyslot(op.redis_keys(PREFIX, now_ms)[0]), []).append(op)
        for group in by_slot.values():
            task = asyncio.get_running_loop().create_task(self._send_refund(group, batch, now_ms))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _send_refund(self, ops: Sequence[Op], batch: str, now_ms: int) -> None:
        # the marker makes the script idempotent, so a lost reply can be sent again safely
        keys: list[str] = [rkey(PREFIX, ops[0].tag, f"undo:{batch}")]
        args: list[str | int | float] = [now_ms, batch, len(ops)]
        for op in ops:
            ks = op.redis_keys(PREFIX, now_ms)
            a = op.refund_args() or []
            keys += ks
            args += [op.LUA, len(ks), len(a), *a]
        last: Exception | None = None
        for attempt in range(REFUND_ATTEMPTS):
            try:
                async with asyncio.timeout(max(self.deadline_s * 4, 0.05)):
                    await self._refund(keys=keys, args=args)
                return
            except Exception as exc:  # a failover may be under way: try again, a few times
                last = exc
                await asyncio.sleep(0.05 * 2**attempt)
        # compensation is best effort; the loss is one request's worth of tokens or a nonce
        self.compensation_failures += 1
        log.warning("could not give back what a refused batch spent on %s: %s", self.kind, type(last).__name__)

    # -- health and lifecycle ----------------------------------------------------------

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(0.5):
                return bool(await self.client.ping())
        except Exception as exc:
            self.last_error = type(exc).__name__
            return False

    def health(self) -> Health:
        h = super().health()
        h.detail = self.describe() + (f" ({h.detail})" if h.detail else "")
        return h

    async def wait_background(self) -> None:
        """Wait for pending compensations (tests, shutdown)."""
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def close(self) -> None:
        if self._warmer is not None:
            self._warmer.cancel()
        await self.wait_background()
        for c in (self.client, *self._sentinels):
            try:
                await c.aclose()
            except Exception as exc:
                log.debug("closing a Redis client: %s", type(exc).__name__)


__all__ = ["PREFIX", "REPLAY_SHARDS", "PartialFailure", "RedisStore", "Target", "parse_url"]
