"""The store interface: every stateful check of one request in one atomic call.

Stages never talk to a backend. They describe what they need as plain
operations (``authz.store.ops``); the engine collects the operations of one
request into a batch and calls ``Store.apply(batch, now_ms)`` once. The memory
store runs the batch as one synchronous function (no await point inside, so
it is atomic on the event loop); the Redis store runs it as one registered Lua
script (one round trip; one per hash slot on Redis Cluster). Results come back
in the order of the operations.

A batch is all-or-nothing for what it *spends*: if any enforced operation
refuses (a bucket is empty, a nonce was already used, a distinct-count limit
is exceeded), no token is taken and no nonce is claimed by any operation of
the batch, so a replayed or refused request never spends someone else's
quota. What a batch *observes* (the distinct values seen, a quota's offence
record that drives its cooldown, reputation) is recorded either way, because
a refused request is still evidence.

Time comes from the caller (``now_ms``), never from the backend's clock, so the
memory and Redis stores behave identically and tests pin time. Every key a
store writes has a TTL: memory is bounded by active clients, not by history.

A *dry run* (``apply(batch, now_ms, dry_run=True)``) answers exactly what
the real batch would answer at that moment and writes nothing at all: no
spending, no observation, no epoch, no TTL refresh, no compensation. It is
how the admin API explains a decision or shows a client without changing
what it shows. The deadline and the circuit breaker apply as to any call.

The store keeps an *epoch*: the time its state began. A store that lost its
memory (process restarted, Redis flushed or restarted without persistence)
starts a new epoch, and single-use claims whose subject was created before it
are refused (``BEFORE_EPOCH``), so losing state never reopens a replay window.

``Store.apply`` owns failure, so no backend can get it wrong: a deadline per
call, every backend error wrapped as ``StoreError``, and a circuit breaker
(``authz.store.breaker``) that answers at once while the backend is known to
be down and lets a probe through now and then.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any, TypeAlias

from authz.errors import StoreError
from authz.stats import Histogram
from authz.store.breaker import Breaker

# -- results -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tokens:
    """Result of ``TakeTokens``.

    :param allowed: the tokens were taken (or, for a refused batch, would have been)
    :param remaining: whole tokens left after this take
    :param retry_after_ms: when refused, how long until ``cost`` tokens are there (0 if allowed)
    :param reset_ms: how long until the bucket is full again
    :param cooldown_ms: when refused because the client is held out (cooldown), how long still
    :param strikes: the client's offences against this quota within the cooldown memory
    """

    allowed: bool
    remaining: int
    retry_after_ms: int
    reset_ms: int
    cooldown_ms: int = 0
    strikes: int = 0


@dataclass(frozen=True, slots=True)
class Distinct:
    """Result of ``CountDistinct``: how many distinct values the key saw in its window."""

    count: int
    exceeded: bool


# ClaimOnce results
CLAIMED = 0
ALREADY_CLAIMED = 1
BEFORE_EPOCH = 2

Result: TypeAlias = Any  # each operation documents its own result type


# -- the memory backend's view of state ---------------------------------------


@dataclass(slots=True)
class Step:
    """What one operation found and wants to write (memory backend).

    :param result: the operation's result
    :param refused: an enforced refusal: the batch spends nothing
    :param spend: writes applied only when the batch is accepted
    :param observe: writes applied whatever the batch's fate

    A write is ``(key, value, expires_ms)``; a None value deletes the key (``Forget``).
    """

    result: Result
    refused: bool = False
    spend: list[tuple[str, Any, int]] = field(default_factory=list)
    observe: list[tuple[str, Any, int]] = field(default_factory=list)


class MemView(ABC):
    """Read access to the memory store's state during a batch (sees the batch's own writes)."""

    epoch_ms: int

    @abstractmethod
    def get(self, key: str) -> Any | None:
        """The live value at ``key``, or None (absent or expired)."""


# -- operations ------------------------------------------------------------------


class Op(ABC):
    """One state operation of a batch.

    Each operation knows how each backend runs it: ``mem_step`` for the memory
    store, and for Redis the name of its function in the batch script
    (``LUA``), its keys and arguments, and how to decode the script's answer.
    No backend switches on operation types.

    ``tag`` names what the state belongs to (a subject, an address, a key
    id's replay shard): Redis puts it in the key's hash tag, so all state of
    one identity lives in one Cluster slot. ``kind`` groups operations for
    failure policy and for Cluster compensation.
    """

    __slots__ = ()

    #: the function of the batch script that runs this operation
    LUA: str = ""
    #: spending operations are undone on Cluster when another slot refuses or fails
    spends: bool = True

    @property
    @abstractmethod
    def key(self) -> str:
        """The operation's logical key (unique within its tag)."""

    @property
    @abstractmethod
    def tag(self) -> str:
        """What the state belongs to (Redis hash tag)."""

    @abstractmethod
    def mem_step(self, view: MemView, now_ms: int) -> Step:
        """Run against the memory store's state; must not write anything itself."""

    @abstractmethod
    def redis_keys(self, prefix: str, now_ms: int) -> list[str]:
        """The physical keys the script touches, all in the tag's slot."""

    @abstractmethod
    def redis_args(self, now_ms: int) -> list[str | int | float]:
        """The script arguments of this operation."""

    @abstractmethod
    def decode(self, raw: Any) -> Result:
        """The result from the script's answer for this operation."""

    def refund_args(self) -> list[str | int | float] | None:
        """Arguments that undo this operation's spending (Cluster compensation), or None."""
        return None

    def spent(self, result: Result) -> bool:
        """Did this operation spend anything, given its result (what a compensation gives back)?"""
        return False

    def forgettable_keys(self, prefix: str, now_ms: int) -> list[tuple[str, str]]:
        """The state this operation keeps for its identity, as ``Forget`` removes it.

        One ``(memory key, Redis key)`` pair per key: the memory store's key
        name and the physical Redis key (``prefix``, hash-tagged by ``tag``).
        Never a replay shard's epoch; empty for an operation whose state must
        not be forgotten (the default).
        """
        return []


def rkey(prefix: str, tag: str, name: str) -> str:
    """A physical Redis key: ``<prefix>{<tag>}<name>``, hash-tagged by what it belongs to."""
    # a tag may not contain braces: Redis takes the first {...} as the hash tag
    safe = tag.replace("{", "(").replace("}", ")")
    return f"{prefix}{{{safe}}}{name}"


# -- the arithmetic every backend shares -----------------------------------------


def gcra(tat: float, now: float, interval: float, capacity: int, cost: int) -> tuple[float | None, Tokens]:
    """The token-bucket arithmetic shared by every backend (the Lua script mirrors it line by line).

    GCRA keeps one number per bucket, the theoretical arrival time (TAT). The
    bucket holds ``capacity`` tokens and refills one every ``interval`` ms.

    :param tat: the stored theoretical arrival time (ms), or 0 for a new bucket
    :return: (new tat to store, or None when refused; the result)
    """
    tat = max(tat, now)
    new_tat = tat + interval * cost
    allow_at = new_tat - interval * capacity
    if allow_at > now:
        retry = allow_at - now
        remaining = math.floor((now - (tat - interval * capacity)) / interval)
        return None, Tokens(False, max(remaining, 0), max(math.floor(retry + 0.999), 1), math.floor(tat - now + 0.999))
    remaining = math.floor((now - allow_at) / interval)
    return new_tat, Tokens(True, remaining, 0, math.floor(new_tat - now + 0.999))


def cooldown_ms(strikes: int, base_ms: int, factor: float, max_ms: int) -> int:
    """How long the ``strikes``-th offence holds a client out: base * factor^(strikes-1), capped."""
    if strikes <= 0:
        return 0
    return int(min(base_ms * factor ** (strikes - 1), max_ms))


class PartialFailure(StoreError):
    """Some of a batch's operations could not be applied; the others answered (Redis Cluster).

    :param results: one per operation, None where it failed
    :param failed: the indices of the operations that failed
    :param undo: gives back what the operations that answered spent (never raises)
    """

    def __init__(self, message: str, results: list[Result | None], failed: frozenset[int], undo: Callable[[], None]) -> None:
        super().__init__(message)
        self.results = results
        self.failed = failed
        self._undo = undo

    def compensate(self) -> None:
        """Give back what the operations that answered spent (in the background)."""
        self._undo()


# -- the store -----------------------------------------------------------------


@dataclass(slots=True)
class Health:
    """A store's health as a component (gRPC health, /healthz details, metrics)."""

    kind: str
    serving: bool
    breaker: str
    detail: str = ""
    epoch_ms: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": "serving" if self.serving else "not_serving", "kind": self.kind, "breaker": self.breaker}
        if self.detail:
            out["detail"] = self.detail
        return out


class Store(ABC):
    """Atomic batches of state operations, behind a deadline and a circuit breaker.

    Backends implement ``_apply``; callers use ``apply``, which owns failure.

    :param deadline_ms: the most one batch may take before it counts as failed
    :param breaker: the circuit breaker (a default one when None)
    """

    #: a name for logs and metrics: "memory", "redis", "redis-sentinel", "redis-cluster"
    kind: str = ""
    #: a backend whose calls can wait on the network (the deadline applies)
    remote: bool = False

    def __init__(self, *, deadline_ms: int = 5, breaker: Breaker | None = None) -> None:
        self.deadline_s = deadline_ms / 1000
        self.breaker = breaker or Breaker()
        #: what the last failure was (its type; never credentials)
        self.last_error = ""
        #: what the last background probe found (None before the first one)
        self.reachable: bool | None = None
        #: each answered batch's round trip (metrics); failures by kind (an error type,
        #: "timeout", "circuit_open": names from this code, never from a backend's message)
        self.latency = Histogram()
        self.errors: dict[str, int] = {}

    async def apply(self, ops: Sequence[Op], now_ms: int, *, dry_run: bool = False) -> list[Result]:
        """Apply every operation atomically, in order, in one round trip.

        :param ops: the request's operations; keys may belong to different clients
        :param now_ms: the engine's clock reading for this request
        :param dry_run: compute the results a real apply would return now, and write nothing
        :return: one result per operation, in order
        :raises StoreError: the batch could not be applied (none of its spending took effect,
            except on Redis Cluster where the failure of one slot is compensated, see docs)
        """
        breaker = self.breaker
        if not breaker.allow():
            self.errors["circuit_open"] = self.errors.get("circuit_open", 0) + 1
            raise StoreError(f"{self.kind} store unavailable (circuit open: {self.last_error or 'failures'})")
        started = perf_counter_ns()
        try:
            if self.remote:
                async with asyncio.timeout(self.deadline_s):
                    results = await self._apply(ops, now_ms, dry_run)
            else:
                results = await self._apply(ops, now_ms, dry_run)
        except StoreError as exc:
            self._failed(exc)
            raise
        except TimeoutError as exc:
            self._failed(exc, "timeout")
            raise StoreError(f"{self.kind} store did not answer within {self.deadline_s * 1000:g} ms") from exc
        except asyncio.CancelledError:
            breaker.abandon()
            raise
        except Exception as exc:  # every backend error is a StoreError to the pipeline
            self._failed(exc)
            raise StoreError(f"{self.kind} store failed: {type(exc).__name__}") from exc
        breaker.success()
        self.latency.observe(perf_counter_ns() - started)
        return results

    def _failed(self, exc: BaseException, kind: str = "") -> None:
        self.last_error = type(exc.__cause__ or exc).__name__
        self.errors[kind or self.last_error] = self.errors.get(kind or self.last_error, 0) + 1
        self.breaker.failure()

    @abstractmethod
    async def _apply(self, ops: Sequence[Op], now_ms: int, dry_run: bool) -> list[Result]:
        """The backend's batch: all-or-nothing for spending, one round trip; nothing written when ``dry_run``."""

    @abstractmethod
    async def ping(self) -> bool:
        """True when the backend answers (health checks)."""

    def health(self) -> Health:
        """The store as a health component; never waits on the backend.

        Not serving while the circuit is open, or while the last probe failed
        (a store nobody has asked since it died is still down).
        """
        state = self.breaker.state
        serving = state != "open" and self.reachable is not False
        detail = self.last_error if (state != "closed" or not serving) else ""
        return Health(self.kind, serving, state, detail)

    async def probe(self) -> bool:
        """Ping the backend (a background task does, every second) and remember the answer."""
        try:
            ok = await self.ping()
        except Exception as exc:  # a probe never raises
            self.last_error = type(exc).__name__
            ok = False
        if not ok and not self.last_error:
            self.last_error = "no answer to PING"
        if ok and self.breaker.state != "closed":
            self.breaker.success()  # the backend answers again: requests need not wait for a probe of their own
        self.reachable = ok
        return ok

    def describe(self) -> str:
        """Where the store is, without credentials (logs, health)."""
        return f"{self.kind}://"

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Begin connecting in the background; must not wait for the backend."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and background tasks."""


__all__ = [
    "ALREADY_CLAIMED",
    "BEFORE_EPOCH",
    "CLAIMED",
    "Distinct",
    "Health",
    "MemView",
    "Op",
    "PartialFailure",
    "Result",
    "Step",
    "Store",
    "StoreError",
    "Tokens",
    "cooldown_ms",
    "gcra",
    "rkey",
]
