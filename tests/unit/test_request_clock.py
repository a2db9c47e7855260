"""``clock: request``: "now" is the time the proxy received the request, bounded when serving."""

from __future__ import annotations

import pytest

from authz.clock import FixedClock
from authz.decision import DecisionIds
from authz.errors import ConfigError
from authz.pipeline import Engine
from authz.policy import load_policy
from authz.request import Request
from authz.store import MemoryStore

WALL = 1_700_000_000_000
POLICY = """
version: 1
clock: {clock}
quotas:
  one: {{limit: 1, window: 1m, burst: 1, by: ip}}
routes:
  - name: api
    match: {{path: {{prefix: /}}}}
    auth: [anonymous]
    quota: [one]
"""


def engine(clock: str) -> Engine:
    policy = load_policy("p.yaml", POLICY.format(clock=clock))
    return Engine(policy, MemoryStore(epoch_ms=0), clock=FixedClock(WALL), ids=DecisionIds("c"))


def req(time_ms: int) -> Request:
    return Request(method="GET", path="/", host="a", headers={}, peer_ip="192.0.2.1", time_ms=time_ms)


async def test_the_request_time_is_now_within_the_skew() -> None:
    e = engine("request")
    assert (await e.decide(req(WALL - 4000))).time_ms == WALL - 4000
    assert (await e.decide(req(WALL - 6000))).time_ms == WALL  # further than 5 s: the wall clock
    assert (await e.decide(req(0))).time_ms == WALL  # unknown


async def test_the_skew_bound_is_configurable_and_the_system_clock_ignores_request_times() -> None:
    e = engine("{source: request, max_skew: 1m}")
    assert (await e.decide(req(WALL - 50_000))).time_ms == WALL - 50_000
    s = engine("system")
    assert (await s.decide(req(WALL - 1000))).time_ms == WALL


async def test_replaying_trusts_recorded_times_and_quotas_follow_them() -> None:
    e = engine("request")
    e.trust_request_time = True
    day = WALL - 86_400_000
    first, second, third = [await e.decide(req(day + t)) for t in (0, 1000, 61_000)]
    assert [d.time_ms for d in (first, second, third)] == [day, day + 1000, day + 61_000]
    # one a minute: the second is refused, the third a minute later is allowed, by the recorded times
    assert [d.reason for d in (first, second, third)] == ["ok", "quota.exhausted", "ok"]


def test_a_bad_clock_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"clock: .*request"):
        load_policy("p.yaml", POLICY.format(clock="sundial"))
