"""The state operations stages plan. Each knows how every backend runs it.

``TakeTokens``   a token bucket (GCRA), with an optional cooldown for repeat offenders
``ClaimOnce``    a single-use claim (a signature nonce, a JWT jti) checked against the store's epoch
``CountDistinct`` how many distinct values a key saw in a window (a HyperLogLog in Redis)

For the memory store an operation computes a ``Step`` from the current state;
for Redis it names its function in ``lua/batch.lua`` and encodes its keys and
arguments, and decodes the script's answer. The Lua functions mirror the
Python ones line by line; the store contract tests run both on a pinned clock.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

from authz.store.base import (
    ALREADY_CLAIMED,
    BEFORE_EPOCH,
    CLAIMED,
    Distinct,
    MemView,
    Op,
    Step,
    Tokens,
    cooldown_ms,
    gcra,
    rkey,
)

#: single-use claims are spread over this many replay shards, each with its own epoch
REPLAY_SHARDS = 16
#: most members the memory store remembers per distinct-count key (Redis HyperLogLog has no such bound)
MAX_DISTINCT_MEMBERS = 4096


@dataclass(frozen=True, slots=True)
class Cooldown:
    """Hold a client out of a quota that it keeps exhausting.

    Every refusal outside a cooldown is an offence, remembered for ``memory_ms``
    after the last one. From the ``after``-th offence on, the client is held
    out for ``base_ms * factor ** (n - 1)`` (n counting from that offence),
    capped at ``max_ms``; refusals while held out are not offences.
    """

    after: int
    base_ms: int
    factor: float
    max_ms: int
    memory_ms: int

    def hold_ms(self, strikes: int) -> int:
        return cooldown_ms(strikes - self.after + 1, self.base_ms, self.factor, self.max_ms)


@dataclass(frozen=True, slots=True)
class TakeTokens(Op):
    """Take ``cost`` tokens from a bucket of ``capacity`` that refills one every ``interval_ms``.

    A refused take changes the bucket not at all. ``enforce=False`` (a shadow
    quota) counts and reports but never makes the batch refuse.
    Result: ``Tokens``.
    """

    bucket: str
    interval_ms: float
    capacity: int
    cost: int = 1
    enforce: bool = True
    owner: str = ""
    cooldown: Cooldown | None = None

    LUA = "take"

    @property
    def key(self) -> str:
        return self.bucket

    @property
    def tag(self) -> str:
        return self.owner or self.bucket

    def mem_step(self, view: MemView, now_ms: int) -> Step:
        cd = self.cooldown
        strikes = 0
        cd_key = "cd:" + self.bucket
        if cd is not None:
            held = view.get(cd_key)
            if held is not None and now_ms - held[2] < cd.memory_ms:
                until, strikes, _ = held
                if until > now_ms:
                    wait = until - now_ms
                    return Step(Tokens(False, 0, wait, 0, wait, strikes), refused=self.enforce)
        stored = view.get(self.bucket)
        tat = float(stored) if stored is not None else 0.0
        new_tat, res = gcra(tat, now_ms, self.interval_ms, self.capacity, self.cost)
        if new_tat is None:
            step = Step(res, refused=self.enforce)
            if cd is not None:
                strikes += 1
                hold = cd.hold_ms(strikes) if strikes >= cd.after else 0
                step.observe.append((cd_key, (now_ms + hold, strikes, now_ms), now_ms + max(hold, cd.memory_ms)))
                step.result = Tokens(False, res.remaining, max(res.retry_after_ms, hold), res.reset_ms, hold, strikes)
            return step
        if strikes:
            res = Tokens(True, res.remaining, 0, res.reset_ms, 0, strikes)
        return Step(res, spend=[(self.bucket, new_tat, math.floor(new_tat + 0.999))])

    def redis_keys(self, prefix: str, now_ms: int) -> list[str]:
        return [rkey(prefix, self.tag, "q:" + self.bucket), rkey(prefix, self.tag, "cd:" + self.bucket)]

    def redis_args(self, now_ms: int) -> list[str | int | float]:
        cd = self.cooldown
        head: list[str | int | float] = [repr(float(self.interval_ms)), self.capacity, self.cost, int(self.enforce)]
        if cd is None:
            return [*head, 0, 0, 0, 0, 0]
        return [*head, cd.after, cd.base_ms, repr(float(cd.factor)), cd.max_ms, cd.memory_ms]

    def decode(self, raw: Any) -> Tokens:
        allowed, remaining, retry, reset, hold, strikes = (int(x) for x in raw)
        return Tokens(bool(allowed), remaining, retry, reset, hold, strikes)

    def refund_args(self) -> list[str | int | float]:
        return [repr(float(self.interval_ms)), self.cost]

    def spent(self, result: Any) -> bool:
        return isinstance(result, Tokens) and result.allowed


def replay_shard_tag(shard: int) -> str:
    """The hash tag of replay shard ``shard`` (0 .. REPLAY_SHARDS - 1)."""
    return f"replay:{shard:02d}"


def replay_shard(key: str) -> str:
    """The replay shard of a claim key (its Redis hash tag, and the epoch it answers to)."""
    return replay_shard_tag(zlib.crc32(key.encode()) % REPLAY_SHARDS)


@dataclass(frozen=True, slots=True)
class ClaimOnce(Op):
    """Claim ``key`` for ``ttl_ms``; succeeds only for the first claimant.

    ``created_ms`` is when the thing being claimed (a signature, a token) was
    made. A claim made before the store's epoch is refused as ``BEFORE_EPOCH``,
    because the store cannot know whether it was already claimed before it
    lost its state. Result: ``CLAIMED``, ``ALREADY_CLAIMED`` or ``BEFORE_EPOCH``.
    """

    claim: str
    ttl_ms: int
    created_ms: int

    LUA = "claim"

    @property
    def key(self) -> str:
        return self.claim

    @property
    def tag(self) -> str:
        return replay_shard(self.claim)

    def mem_step(self, view: MemView, now_ms: int) -> Step:
        if view.get(self.claim) is not None:
            return Step(ALREADY_CLAIMED, refused=True)
        if self.created_ms < view.epoch_ms:
            return Step(BEFORE_EPOCH, refused=True)
        return Step(CLAIMED, spend=[(self.claim, 1, now_ms + self.ttl_ms)])

    def redis_keys(self, prefix: str, now_ms: int) -> list[str]:
        return [rkey(prefix, self.tag, "n:" + self.claim), rkey(prefix, self.tag, "epoch")]

    def redis_args(self, now_ms: int) -> list[str | int | float]:
        return [self.ttl_ms, self.created_ms]

    def decode(self, raw: Any) -> int:
        return int(raw)

    def refund_args(self) -> list[str | int | float]:
        return []

    def spent(self, result: Any) -> bool:
        return bool(result == CLAIMED)


@dataclass(frozen=True, slots=True)
class CountDistinct(Op):
    """Add ``member`` to the values ``counter`` saw in the current window; exceeded above ``limit``.

    Windows are fixed, ``window_ms`` long, counted from the Unix epoch (so every
    process and backend agrees on them). What was seen is recorded even when
    the batch refuses (an observation, not a spending). Result: ``Distinct``.
    """

    counter: str
    member: str
    limit: int
    window_ms: int
    enforce: bool = True
    owner: str = ""

    LUA = "distinct"
    spends = False

    @property
    def key(self) -> str:
        return self.counter

    @property
    def tag(self) -> str:
        return self.owner or self.counter

    def window(self, now_ms: int) -> tuple[int, int]:
        """The current window's index and its end."""
        index = now_ms // self.window_ms
        return index, (index + 1) * self.window_ms

    def mem_step(self, view: MemView, now_ms: int) -> Step:
        index, end = self.window(now_ms)
        key = f"{self.counter}#{index}"
        members: frozenset[str] = view.get(key) or frozenset()
        if self.member not in members and len(members) < MAX_DISTINCT_MEMBERS:
            members = members | {self.member}
        count = len(members)
        exceeded = count > self.limit
        step = Step(Distinct(count, exceeded), refused=exceeded and self.enforce)
        step.observe.append((key, members, end))
        return step

    def redis_keys(self, prefix: str, now_ms: int) -> list[str]:
        index, _ = self.window(now_ms)
        return [rkey(prefix, self.tag, f"d:{self.counter}#{index}")]

    def redis_args(self, now_ms: int) -> list[str | int | float]:
        _, end = self.window(now_ms)
        return [self.member, self.limit, self.window_ms, int(self.enforce), end]

    def decode(self, raw: Any) -> Distinct:
        count, exceeded = (int(x) for x in raw)
        return Distinct(count, bool(exceeded))


__all__ = ["REPLAY_SHARDS", "ClaimOnce", "Cooldown", "CountDistinct", "TakeTokens", "replay_shard", "replay_shard_tag"]
