"""Counters and histograms cheap enough for every decision: plain numbers, read when scraped.

The hot path never calls a metrics library: a decision adds one to a dict
entry and drops each stage's duration into a bucket (``bisect`` over a tuple
of integer nanosecond bounds). The metrics listener (``authz.server.metrics``)
turns these numbers into Prometheus metrics when it is scraped.

``Laps`` times one decision's stages: one ``perf_counter_ns`` per stage
boundary. The engine makes one per decision and hands it, when the decision
is made, to ``StageStats.observe`` (and to a tracer, when one is set).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from time import perf_counter_ns

#: the stages of a decision, in order (authz/pipeline.py); ``Laps.mark`` takes their index
STAGES = ("route", "identify", "authenticate", "plan", "apply", "judge", "respond")
ROUTE, IDENTIFY, AUTHENTICATE, PLAN, APPLY, JUDGE, RESPOND = range(len(STAGES))

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


class Laps:
    """The stage boundaries of one decision: (stage index, perf_counter_ns) after each stage."""

    __slots__ = ("t0", "marks")

    def __init__(self, t0: int) -> None:
        self.t0 = t0
        self.marks: list[tuple[int, int]] = []

    def mark(self, stage: int) -> None:
        self.marks.append((stage, perf_counter_ns()))


class StageStats:
    """One latency histogram per stage; a stage a decision did not reach is not observed."""

    __slots__ = ("stages",)

    def __init__(self) -> None:
        self.stages = [Histogram() for _ in STAGES]

    def observe(self, laps: Laps) -> None:
        stages = self.stages
        prev = laps.t0
        for stage, t in laps.marks:
            stages[stage].observe(t - prev)
            prev = t


__all__ = ["LATENCY_BOUNDS_NS", "LATENCY_BOUNDS_S", "STAGES", "Histogram", "Laps", "StageStats"]
