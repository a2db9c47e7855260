"""The store interface: every stateful check of one request in one atomic call.

Stages never talk to a backend. They describe what they need as plain
operations; the engine collects the operations of one request into a batch and
calls ``Store.apply(batch, now_ms)`` once. The memory store runs the batch as
one synchronous function (no await point inside, so it is atomic on the event
loop); the Redis store runs it as one registered Lua script (one round trip).
Results come back in the order of the operations.

Time comes from the caller (``now_ms``), never from the backend's clock, so the
memory and Redis stores behave identically and tests pin time.

Every key a store writes has a TTL: memory is bounded by active clients, not by
history.

The store also keeps an *epoch*: the time its state began. A store that lost
its memory (process restarted, Redis flushed or restarted without persistence)
starts a new epoch, and single-use claims whose subject was created before it
are refused, so losing state never reopens a replay window.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True, slots=True)
class TakeTokens:
    """Take ``cost`` tokens from a token bucket (GCRA: one stored number per bucket).

    The bucket holds ``capacity`` tokens and refills one token every
    ``interval_ms`` milliseconds. A refused take changes nothing.
    """

    key: str
    interval_ms: float
    capacity: int
    cost: int = 1


@dataclass(frozen=True, slots=True)
class Tokens:
    """Result of ``TakeTokens``.

    :param allowed: the tokens were taken
    :param remaining: whole tokens left after this take
    :param retry_after_ms: when refused, how long until ``cost`` tokens are there (0 if allowed)
    :param reset_ms: how long until the bucket is full again
    """

    allowed: bool
    remaining: int
    retry_after_ms: int
    reset_ms: int


@dataclass(frozen=True, slots=True)
class ClaimOnce:
    """Claim ``key`` for ``ttl_ms``; succeeds only for the first claimant.

    ``created_ms`` is when the thing being claimed (a signature, a token) was
    made. A claim made before the store's epoch is refused as ``BEFORE_EPOCH``,
    because the store cannot know whether it was already claimed before it
    lost its state.
    """

    key: str
    ttl_ms: int
    created_ms: int


# ClaimOnce results
CLAIMED = 0
ALREADY_CLAIMED = 1
BEFORE_EPOCH = 2

Op: TypeAlias = TakeTokens | ClaimOnce
Result: TypeAlias = Tokens | int


class Store(ABC):
    """Atomic batches of state operations."""

    #: a name for logs and metrics: "memory", "redis", "redis-cluster"
    kind: str = ""

    @abstractmethod
    async def apply(self, ops: Sequence[Op], now_ms: int) -> list[Result]:
        """Apply every operation atomically, in order, in one round trip.

        :param ops: the request's operations; keys may belong to different clients
        :param now_ms: the engine's clock reading for this request
        :return: one result per operation, in order
        :raises StoreError: the batch could not be applied; none or all of it took effect
        """

    @abstractmethod
    async def ping(self) -> bool:
        """True when the backend answers (health checks)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and background tasks."""


def gcra(tat: float, now: float, interval: float, capacity: int, cost: int) -> tuple[float | None, Tokens]:
    """The token-bucket arithmetic shared by every backend (the Lua script mirrors it).

    :param tat: the stored theoretical arrival time (ms), or 0 for a new bucket
    :return: (new tat to store or None when refused, the result)
    """
    tat = max(tat, now)
    new_tat = tat + interval * cost
    allow_at = new_tat - interval * capacity
    if allow_at > now:
        retry = allow_at - now
        remaining = int((now - (tat - interval * capacity)) // interval)
        return None, Tokens(False, max(remaining, 0), max(int(retry + 0.999), 1), int(tat - now + 0.999))
    remaining = int((now - allow_at) // interval)
    return new_tat, Tokens(True, remaining, 0, int(new_tat - now + 0.999))
