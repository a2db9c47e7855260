"""Counters and histograms cheap enough for every decision: plain numbers, read when scraped.

The hot path never calls a metrics library: a decision adds one to a dict
entry and drops each stage's duration into a bucket (``bisect`` over a tuple
of integer nanosecond bounds). The metrics listener (``authz.server.metrics``)
turns these numbers into Prometheus metrics when it is scraped.

``Laps`` times one decision's stages: one ``perf_counter_ns`` per stage
boundary, stored in a list slot. The engine makes one per decision and hands
it, when the decision is made, to ``StageStats.observe`` (and to a tracer,
when one is set).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

#: the stages of a decision, in order (authz/pipeline.py); ``Laps.mark`` takes their index
STAGES = ("route", "identify", "authenticate", "plan", "apply", "judge", "respond")
ROUTE, IDENTIFY, AUTHENTICATE, PLAN, APPLY, JUDGE, RESPOND = range(1, len(STAGES) + 1)

#: bounds (seconds) of latency histograms: stages, decisions, store round trips
LATENCY_BOUNDS_S = (
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
LATENCY_BOUNDS_NS = tuple(round(b * 1e9) for b in LATENCY_BOUNDS_S)


class Histogram:
    """Counts per bucket (not cumulative; the last bucket is +Inf) and the sum of what was observed.

    :param bounds: the buckets' upper bounds, ascending, in the unit of what is observed
    :param scale: what one unit is in the exported unit (1e-9 for nanoseconds to seconds)
    """

    __slots__ = ("bounds", "counts", "sum", "scale")

    def __init__(self, bounds: Sequence[float] = LATENCY_BOUNDS_NS, scale: float = 1e-9) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum: float = 0
        self.scale = scale

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)


#: one decision's stage boundaries: ``laps[0]`` is its start (perf_counter_ns), ``laps[stage]``
#: when that stage ended, 0 for a stage it did not reach. A plain list: ``laps[ROUTE] = perf_counter_ns()``
#: is the whole cost of a boundary.
Laps = list[int]


def new_laps(t0: int) -> Laps:
    return [t0, 0, 0, 0, 0, 0, 0, 0]


class StageStats:
    """One latency histogram per stage, kept as bare lists; a stage a decision did not reach is not observed."""

    __slots__ = ("bounds", "counts", "sums")

    def __init__(self, bounds: Sequence[int] = LATENCY_BOUNDS_NS) -> None:
        self.bounds = tuple(bounds)
        # index 0 unused: the stage constants index these lists directly
        self.counts = [[0] * (len(self.bounds) + 1) for _ in range(len(STAGES) + 1)]
        self.sums = [0] * (len(STAGES) + 1)

    def observe(self, laps: Laps) -> None:
        # unrolled: a loop over the seven stages costs a third more per decision
        b, c, s = self.bounds, self.counts, self.sums
        prev = laps[0]
        t = laps[1]
        if t:
            d = t - prev
            c[1][bisect_left(b, d)] += 1
            s[1] += d
            prev = t
        t = laps[2]
        if t:
            d = t - prev
            c[2][bisect_left(b, d)] += 1
            s[2] += d
            prev = t
        t = laps[3]
        if t:
            d = t - prev
            c[3][bisect_left(b, d)] += 1
            s[3] += d
            prev = t
        t = laps[4]
        if t:
            d = t - prev
            c[4][bisect_left(b, d)] += 1
            s[4] += d
            prev = t
        t = laps[5]
        if t:
            d = t - prev
            c[5][bisect_left(b, d)] += 1
            s[5] += d
            prev = t
        t = laps[6]
        if t:
            d = t - prev
            c[6][bisect_left(b, d)] += 1
            s[6] += d
            prev = t
        t = laps[7]
        if t:
            d = t - prev
            c[7][bisect_left(b, d)] += 1
            s[7] += d

    def histogram(self, stage: int) -> Histogram:
        """Stage ``stage``'s numbers as a Histogram (a copy, for exposition)."""
        h = Histogram(self.bounds, 1e-9)
        h.counts = list(self.counts[stage])
        h.sum = self.sums[stage]
        return h


__all__ = ["LATENCY_BOUNDS_NS", "LATENCY_BOUNDS_S", "STAGES", "Histogram", "Laps", "StageStats", "new_laps"]
