"""The state operations stages plan. Each knows how every backend runs it.

``TakeTokens``   a token bucket (GCRA), with an optional cooldown for repeat offenders
                 (``cost=0`` peeks: the bucket's state, taking and writing nothing)
``ClaimOnce``    a single-use claim (a signature nonce, a JWT jti) checked against the store's epoch
``CountDistinct`` how many distinct values a key saw in a window (a HyperLogLog in Redis)
``Reputation``   an identity's decaying evidence, cadence, bursts and sequences
``Forget``       remove the state another operation keeps for its identity (an admin's reset)

For the memory store an operation computes a ``Step`` from the current state;
for Redis it names its function in ``lua/batch.lua`` and encodes its keys and
arguments, and decodes the script's answer. The Lua functions mirror the
Python ones line by line; the store contract tests run both on a pinned clock.

Every operation runs the same in a dry run (``Store.apply(..., dry_run=True)``):
the store computes the results and skips the writes, so an operation needs
nothing of its own for it. Each operation also lists the keys it keeps for
its identity (``forgettable_keys``), which is all ``Forget`` needs to know.
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

    ``cost=0`` peeks at the bucket: the same result (remaining, reset, a
    cooldown under way and its strikes) with nothing taken and nothing written,
    not even an offence (a route that costs nothing commits none). It still
    refuses while the client is held out, as any take of that quota would.
    Result: ``Tokens``.

    :raises ValueError: a negative cost (it would mint tokens) or an interval that is not positive
    """

    bucket: str
    interval_ms: float
    capacity: int
    cost: int = 1
    enforce: bool = True
    owner: str = ""
    cooldown: Cooldown | None = None

    LUA = "take"

    def __post_init__(self) -> None:
        if self.cost < 0 or not self.interval_ms > 0:
            raise ValueError(f"bucket {self.bucket!r}: cost {self.cost} and interval {self.interval_ms} ms (cost >= 0, interval > 0)")

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
            if cd is not None and self.cost:
                strikes += 1
                hold = cd.hold_ms(strikes) if strikes >= cd.after else 0
                step.observe.append((cd_key, (now_ms + hold, strikes, now_ms), now_ms + max(hold, cd.memory_ms)))
                step.result = Tokens(False, res.remaining, max(res.retry_after_ms, hold), res.reset_ms, hold, strikes)
            elif strikes:  # a peek refused (the quota shrank): no offence, the strikes as they are
                step.result = Tokens(False, res.remaining, res.retry_after_ms, res.reset_ms, 0, strikes)
            return step
        if strikes:
            res = Tokens(True, res.remaining, 0, res.reset_ms, 0, strikes)
        if not self.cost:
            return Step(res)
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

    def forgettable_keys(self, prefix: str, now_ms: int) -> list[tuple[str, str]]:
        """The bucket and its cooldown record (kept, whether or not this take has a cooldown)."""
        cd = "cd:" + self.bucket
        return [(self.bucket, rkey(prefix, self.tag, "q:" + self.bucket)), (cd, rkey(prefix, self.tag, cd))]


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

    Nothing of a claim can be forgotten (``forgettable_keys`` is empty): a
    forgotten claim would accept its captured request again, and a forgotten
    epoch would accept credentials made before the store lost its state.
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

    A dry run's count is exact on every backend: Redis adds the member to a
    copy of the HyperLogLog in the same slot, which the script deletes before
    it returns.
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

    def forgettable_keys(self, prefix: str, now_ms: int) -> list[tuple[str, str]]:
        """The current window's values (earlier windows no longer count)."""
        index, _ = self.window(now_ms)
        name = f"{self.counter}#{index}"
        return [(name, rkey(prefix, self.tag, "d:" + name))]





@dataclass(frozen=True, slots=True)
class Derived:
    """What the reputation operation infers from an identity's own history (its parameters).

    ``cadence``: after ``cadence_min`` arrivals, inter-arrival times whose
    coefficient of variation (an exponentially weighted one, ``alpha``) is
    below ``cadence_cv`` add ``cadence_weight``. ``burst``: more than
    ``burst_rate`` arrivals within about a burst half-life add ``burst_weight``.
    ``sequence``: ``sequence_min`` consecutive numeric ids one apart
    (``/items/41``, ``/items/42``...) add ``sequence_weight``.
    """

    alpha: float = 0.2
    cadence_min: int = 8
    cadence_cv: float = 0.1
    cadence_weight: float = 1.0
    burst_half_life_ms: int = 10_000
    burst_rate: float = 30.0
    burst_weight: float = 1.0
    sequence_min: int = 4
    sequence_weight: float = 2.0


@dataclass(frozen=True, slots=True)
class Standing:
    """Result of ``Reputation``: an identity's decayed evidence, as of this request.

    :param count: decayed number of requests (about the last half-life's)
    :param routes: the route bits this identity had reached before this request
    :param intervals: how many inter-arrival times the cadence saw
    :param signals: signal name -> decayed weighted evidence
    """

    count: float
    routes: int
    intervals: int
    signals: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class Reputation(Op):
    """Read and update one identity's reputation state: decaying evidence, cadence, bursts, sequences.

    Evidence decays lazily, by 2^(-elapsed / half-life) when the identity is
    next seen. It is an observation: recorded whatever the batch's fate.
    ``arrival`` counts this request (False for evidence recorded after a
    decision). Result: ``Standing``.
    """

    identity: str
    half_life_ms: int
    ttl_ms: int
    evidence: tuple[tuple[str, float], ...] = ()
    arrival: bool = True
    number: int = -1
    route_bit: int = 0
    derived: Derived = Derived()

    LUA = "reputation"
    spends = False

    @property
    def key(self) -> str:
        return "r:" + self.identity

    @property
    def tag(self) -> str:
        return self.identity

    def mem_step(self, view: MemView, now_ms: int) -> Step:
        st: dict[str, Any] = dict(view.get(self.key) or {})
        d = self.derived
        t = st.get("t", now_ms)
        dt = max(now_ms - t, 0)
        f, fb = 2 ** (-dt / self.half_life_ms), 2 ** (-dt / d.burst_half_life_ms)
        sig: dict[str, float] = {name: v * f for name, v in st.get("s", {}).items()}
        n = st.get("n", 0.0) * f
        b = st.get("b", 0.0) * fb
        c, m, var = st.get("c", 0), st.get("m", 0.0), st.get("v", 0.0)
        r = st.get("r", 0)

        def add(name: str, amount: float) -> None:
            sig[name] = sig.get(name, 0.0) + amount

        last = st.get("a")
        if self.arrival:
            n += 1
            b += 1
            if last is not None:
                iat = now_ms - last
                if c == 0:
                    m, var = float(iat), 0.0
                else:
                    delta = iat - m
                    m = m + d.alpha * delta
                    var = (1 - d.alpha) * (var + d.alpha * delta * delta)
                c += 1
            last = now_ms
            if c >= d.cadence_min and m > 0 and math.sqrt(var) / m < d.cadence_cv:
                add("cadence", d.cadence_weight)
            if b >= d.burst_rate:
                add("burst", d.burst_weight)
        sq = st.get("q", 0)
        number = st.get("i")
        if self.number >= 0:
            sq = sq + 1 if number is not None and abs(self.number - number) == 1 else 0
            number = self.number
            if sq >= d.sequence_min:
                add("sequence", d.sequence_weight)
        for name, amount in self.evidence:
            add(name, amount)
        prev = r
        if self.route_bit and not r & self.route_bit:
            r += self.route_bit
        kept = {name: v for name, v in sorted(sig.items()) if v >= 0.001}
        state = {"t": now_ms, "n": n, "b": b, "c": c, "m": m, "v": var, "r": r, "q": sq, "s": kept}
        if last is not None:
            state["a"] = last
        if number is not None:
            state["i"] = number
        result = Standing(
            count=math.floor(n * 1000) / 1000,
            routes=prev,
            intervals=c,
            signals=tuple((name, math.floor(v * 1000) / 1000) for name, v in kept.items()),
        )
        return Step(result, observe=[(self.key, state, now_ms + self.ttl_ms)])

    def redis_keys(self, prefix: str, now_ms: int) -> list[str]:
        return [rkey(prefix, self.tag, "r")]

    def redis_args(self, now_ms: int) -> list[str | int | float]:
        d = self.derived
        args: list[str | int | float] = [
            self.half_life_ms, d.burst_half_life_ms, self.ttl_ms, int(self.arrival), self.number, self.route_bit,
            repr(d.alpha), d.cadence_min, repr(d.cadence_cv), repr(d.cadence_weight),
            repr(d.burst_rate), repr(d.burst_weight), d.sequence_min, repr(d.sequence_weight),
        ]  # fmt: skip
        for name, amount in self.evidence:
            args += [name, repr(float(amount))]
        return args

    def decode(self, raw: Any) -> Standing:
        n, routes, intervals = int(raw[0]), int(raw[1]), int(raw[2])
        pairs = raw[3:]
        signals = tuple(
            (pairs[i].decode() if isinstance(pairs[i], bytes) else str(pairs[i]), int(pairs[i + 1]) / 1000)
            for i in range(0, len(pairs), 2)
        )
        return Standing(count=n / 1000, routes=routes, intervals=intervals, signals=signals)

    def forgettable_keys(self, prefix: str, now_ms: int) -> list[tuple[str, str]]:
        """The identity's reputation hash."""
        return [(self.key, rkey(prefix, self.tag, "r"))]


@dataclass(frozen=True, slots=True)
class Forget(Op):
    """Remove the state ``target`` keeps for its identity, as if the identity were new.

    The keys are the target's ``forgettable_keys``: a bucket and its cooldown
    record, a reputation hash, the current distinct-count window; never a
    replay shard's epoch, and nothing of a single-use claim. The target only
    names the state: it is not run.

    Forgetting is an observation-like write, not a spending: it applies
    whatever the batch's fate, even when another operation of the batch
    refuses (an operator's reset must not depend on the client's quota), is
    never compensated on Cluster, and operations after it in the batch see the
    state gone. A dry run reports what it would remove and removes nothing.

    Result: the number of keys removed. The memory store counts keys whose
    value was still live by authz's clock; Redis counts the keys it deleted,
    which can include a value dead by authz's clock that Redis had not
    collected yet (expiry keeps values 10 s past their use).

    :raises ValueError: the target keeps no state that may be forgotten (a claim, a Forget)
    """

    target: Op

    LUA = "forget"
    spends = False

    def __post_init__(self) -> None:
        if not self.target.forgettable_keys("", 0):
            raise ValueError(f"{type(self.target).__name__} keeps no state that may be forgotten")

    @property
    def key(self) -> str:
        return self.target.key

    @property
    def tag(self) -> str:
        return self.target.tag

    def mem_step(self, view: MemView, now_ms: int) -> Step:
        keys = [mem for mem, _ in self.target.forgettable_keys("", now_ms)]
        removed = sum(1 for key in keys if view.get(key) is not None)
        # a None value is a deletion: the batch's later operations see the key gone
        return Step(removed, observe=[(key, None, 0) for key in keys])

    def redis_keys(self, prefix: str, now_ms: int) -> list[str]:
        return [physical for _, physical in self.target.forgettable_keys(prefix, now_ms)]

    def redis_args(self, now_ms: int) -> list[str | int | float]:
        return []

    def decode(self, raw: Any) -> int:
        return int(raw)


__all__ = [
    "REPLAY_SHARDS",
    "ClaimOnce",
    "Cooldown",
    "CountDistinct",
    "Derived",
    "Forget",
    "Reputation",
    "Standing",
    "TakeTokens",
    "replay_shard",
    "replay_shard_tag",
]
