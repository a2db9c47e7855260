"""Quotas through the engine: key templates, costs, shadow mode, cooldown, distinct-count limits,
and what a route does when the store fails (open, closed, a local bucket), on a pinned clock."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from authz.clock import FixedClock
from authz.config.context import CompileContext
from authz.config.source import load
from authz.decision import DecisionIds, Outcome
from authz.errors import ConfigError
from authz.keys import EMPTY_KEYRING
from authz.pipeline import Engine
from authz.policy.compile import compile_policy
from authz.request import Request
from authz.stages.authenticate import Authenticator, AuthResult
from authz.stages.context import Ctx
from authz.stages.quota import subnet_of
from authz.stages.route import Route
from authz.store import MemoryStore
from authz.store.base import Op, PartialFailure, Result, Store

T0 = 1_700_000_000_000

POLICY = """
version: 1
quotas:
  per-subnet: {limit: 2, window: 10s, by: subnet}
  per-tenant-route: {limit: 3, window: 10s, by: [header:x-tenant, route]}
  heavy: {limit: 10, window: 10s}
  watch: {limit: 1, window: 10s, by: ip, mode: shadow}
  logins: {limit: 1, window: 10s, by: ip, cooldown: {after: 2, base: 30s, factor: 2, max: 5m}}
  shared: {distinct: ip, per: header:x-token, limit: 2, window: 1h}
  seen: {distinct: ip, per: header:x-token, limit: 1, window: 1h, action: signal}
routes:
  - {name: subnet, match: {path: {prefix: /subnet/}}, auth: [anonymous], quota: [per-subnet]}
  - {name: tenant-a, match: {path: {prefix: /a/}}, auth: [anonymous], quota: [per-tenant-route]}
  - {name: tenant-b, match: {path: {prefix: /b/}}, auth: [anonymous], quota: [per-tenant-route]}
  - {name: heavy, match: {path: {prefix: /heavy/}}, auth: [anonymous], quota: [{name: heavy, cost: 4}]}
  - {name: shadow, match: {path: {prefix: /shadow/}}, auth: [anonymous], quota: [watch]}
  - {name: login, match: {path: {prefix: /login}}, auth: [anonymous], quota: [logins]}
  - {name: token, match: {path: {prefix: /token/}}, auth: [anonymous], quota: [shared, seen, heavy]}
  - {name: open, match: {path: {prefix: /open/}}, auth: [anonymous], quota: [heavy]}
  - {name: closed, match: {path: {prefix: /closed/}}, auth: [anonymous], quota: [heavy], on_store_error: {quota: closed}}
  - name: local
    match: {path: {prefix: /local/}}
    auth: [anonymous]
    quota: [per-subnet]
    on_store_error: {quota: local}
"""


def engine(store: Store | None = None, text: str = POLICY) -> Engine:
    policy = compile_policy(load("p.yaml", text), CompileContext(file="p.yaml", base_dir=".", keyring=EMPTY_KEYRING))
    return Engine(policy, store if store is not None else MemoryStore(epoch_ms=T0), clock=FixedClock(T0), ids=DecisionIds("q"))


def req(path: str, peer: str = "198.51.100.7", **headers: str) -> Request:
    return Request(method="GET", path=path, host="api.example.com", headers={k.replace("_", "-"): v for k, v in headers.items()}, peer_ip=peer)


def test_subnets() -> None:
    assert subnet_of("198.51.100.7") == "198.51.100.0/24"
    assert subnet_of("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert subnet_of("::ffff:198.51.100.7") == "198.51.100.0/24"
    assert subnet_of("nonsense") == ""


async def test_a_subnet_shares_one_bucket_and_ipv6_rotation_within_a_64_does_not_help() -> None:
    e = engine()
    assert [(await e.decide(req("/subnet/x", f"198.51.100.{i}"))).reason for i in (1, 2, 3)] == ["ok", "ok", "quota.exhausted"]
    assert (await e.decide(req("/subnet/x", "198.51.101.1"))).reason == "ok"
    v6 = [(await e.decide(req("/subnet/x", f"2001:db8:0:1::{i:x}"))).reason for i in range(1, 4)]
    assert v6 == ["ok", "ok", "quota.exhausted"]


async def test_a_key_combines_a_header_and_the_route() -> None:
    e = engine()
    for _ in range(3):
        assert (await e.decide(req("/a/x", x_tenant="acme"))).reason == "ok"
    assert (await e.decide(req("/a/x", x_tenant="acme"))).reason == "quota.exhausted"
    assert (await e.decide(req("/b/x", x_tenant="acme"))).reason == "ok"  # another route: another bucket
    assert (await e.decide(req("/a/x", x_tenant="globex"))).reason == "ok"
    # no header: the client address, never one bucket shared by every request without it
    assert (await e.decide(req("/a/x", "203.0.113.1"))).reason == "ok"
    assert (await e.decide(req("/a/x", "203.0.113.2"))).reason == "ok"


async def test_a_route_can_make_a_request_cost_more() -> None:
    e = engine()
    first = await e.decide(req("/heavy/x"))
    assert first.reason == "ok" and ("ratelimit", '"heavy";r=6;t=4') in first.client_headers
    assert (await e.decide(req("/heavy/x"))).reason == "ok"
    refused = await e.decide(req("/heavy/x"))
    assert refused.reason == "quota.exhausted" and json.loads(refused.body)["quota"] == "heavy"
    assert ("ratelimit-policy", '"heavy";q=10;w=10') in refused.client_headers
    assert ("retry-after", "2") in refused.client_headers


async def test_a_shadow_quota_reports_but_never_refuses() -> None:
    e = engine()
    assert (await e.decide(req("/shadow/x"))).reason == "ok"
    d = await e.decide(req("/shadow/x"))
    assert d.reason == "ok" and ("quota.watch", "shadow_exhausted") in d.signals
    assert ("x-authz-shadow", "watch") in d.upstream_headers
    assert not any(n.startswith("ratelimit") for n, _ in d.client_headers)


async def test_a_client_that_keeps_hammering_is_held_out_longer() -> None:
    e = engine()
    assert (await e.decide(req("/login"))).reason == "ok"
    assert (await e.decide(req("/login"))).reason == "quota.exhausted"  # first offence: an ordinary 429
    held = await e.decide(req("/login"))
    assert held.reason == "quota.cooldown" and ("retry-after", "30") in held.client_headers
    assert ("quota.logins.strikes", "2") in held.signals
    e.clock.advance(20_000)  # type: ignore[attr-defined]
    still = await e.decide(req("/login"))
    assert still.reason == "quota.cooldown" and ("retry-after", "10") in still.client_headers
    e.clock.advance(10_001)  # type: ignore[attr-defined]
    assert (await e.decide(req("/login"))).reason == "ok"
    assert (await e.decide(req("/login"))).reason == "quota.cooldown"  # the third offence: 60 s
    assert ("retry-after", "60") in (await e.decide(req("/login"))).client_headers


async def test_a_token_used_from_too_many_addresses_is_refused_and_spends_nothing() -> None:
    e = engine()
    a = await e.decide(req("/token/x", "192.0.2.1", x_token="t1"))
    assert a.reason == "ok"
    b = await e.decide(req("/token/x", "192.0.2.2", x_token="t1"))
    assert b.reason == "ok" and ("distinct.seen", "2") in b.signals  # the signal-only limit (1) speaks
    c = await e.decide(req("/token/x", "192.0.2.3", x_token="t1"))
    assert (c.status, c.reason) == (403, "quota.distinct_exceeded")
    assert json.loads(c.body)["quota"] == "shared"
    # the first address keeps being refused for the window: the token is shared
    assert (await e.decide(req("/token/x", "192.0.2.1", x_token="t1"))).reason == "quota.distinct_exceeded"
    # the refused requests spent nothing: 'heavy' (cost 1 here) took 2 of 10
    ok = await e.decide(req("/heavy/x", "192.0.2.9"))
    assert ok.reason == "ok"


class Down(Store):
    kind = "down"

    async def _apply(self, ops: Sequence[Op], now_ms: int, dry_run: bool) -> list[Result]:
        raise ConnectionRefusedError()

    async def ping(self) -> bool:
        return False


class HalfDown(MemoryStore):
    """A Cluster with one slot down: operations on keys of one route fail, the others answer."""

    def __init__(self) -> None:
        super().__init__(epoch_ms=T0)
        self.undone = 0

    async def _apply(self, ops: Sequence[Op], now_ms: int, dry_run: bool) -> list[Result]:
        failed = frozenset(i for i, op in enumerate(ops) if "heavy:" in op.key)
        results: list[Any] = self.apply_sync([op for i, op in enumerate(ops) if i not in failed], now_ms, dry_run)
        merged: list[Any] = [None if i in failed else results.pop(0) for i in range(len(ops))]

        def undo() -> None:
            self.undone += 1

        raise PartialFailure("one slot down", merged, failed, undo)


async def test_store_failure_policies_per_route() -> None:
    e = engine(Down())
    opened = await e.decide(req("/open/x"))
    assert (opened.outcome, opened.reason) == (Outcome.ALLOW, "ok.store_unavailable")
    assert ("x-authz-degraded", "quota") in opened.upstream_headers
    closed = await e.decide(req("/closed/x"))
    assert (closed.status, closed.reason) == (503, "store.unavailable")
    assert ("x-authz-degraded", "quota") in closed.client_headers
    # local: each process enforces its share of the limit on its own
    local = [(await e.decide(req("/local/x", f"198.51.100.{i}"))).reason for i in (1, 2, 3)]
    assert local == ["ok.store_unavailable", "ok.store_unavailable", "quota.exhausted"]


async def test_a_partly_failed_batch_judges_what_answered_and_compensates_a_refusal() -> None:
    store = HalfDown()
    e = engine(store)
    for i in (1, 2):
        assert (await e.decide(req("/token/x", f"192.0.2.{i}", x_token="t"))).reason == "ok.store_unavailable"
    refused = await e.decide(req("/token/x", "192.0.2.3", x_token="t"))
    assert refused.reason == "quota.distinct_exceeded"  # judged from the slot that answered
    assert store.undone == 1  # and what the answering slots spent is given back


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("heavy: {limit: 10, window: 10s}", None),
        ("heavy: {limit: 10, window: 10s, by: [global, ip]}", "global is one bucket for everyone"),
        ("heavy: {limit: 10, window: 10s, by: [ip, ip]}", "'ip' listed twice"),
        ("heavy: {limit: 10, window: 10s, by: header:X-Up}", "header:<name> needs a lower-case header name"),
        ("heavy: {limit: 10, window: 10s, mode: dry}", "must be one of enforce, shadow"),
        ("heavy: {limit: 10, window: 10s, cooldown: {base: 1m, max: 1h, memory: 1m}}", "must be at least max"),
        ("heavy: {distinct: ip, per: subject, limit: 3, window: 1h, action: block}", "must be one of deny, signal"),
    ],
)
def test_quota_configuration_errors(change: str, message: str | None) -> None:
    text = POLICY.replace("heavy: {limit: 10, window: 10s}", change)
    if message is None:
        engine(text=text)
        return
    with pytest.raises(ConfigError, match=message):
        engine(text=text)


def test_a_route_cost_above_the_burst_is_refused() -> None:
    with pytest.raises(ConfigError, match="costs more than quota 'heavy' can ever hold"):
        engine(text=POLICY.replace("{name: heavy, cost: 4}", "{name: heavy, cost: 11}"))


class _Tiered(Authenticator):
    """Accepts any request with x-tier, putting it in that quota tier."""

    kind = "tiered"
    name = "t"

    def present(self, req: Request) -> bool:
        return "x-tier" in req.headers

    async def authenticate(self, req: Request, ctx: Ctx) -> AuthResult:
        return AuthResult(ok=True, subject="s-" + req.headers["x-tier"], tier=req.headers["x-tier"])


async def test_a_tier_replaces_the_route_quotas() -> None:
    text = POLICY.replace("  - {name: open,", "  - {name: tiered, match: {path: {prefix: /tiered/}}, auth: [anonymous], quota: [open-q], tiers: {gold: [heavy]}}\n  - {name: open,").replace(
        "  heavy: {limit: 10, window: 10s}", "  heavy: {limit: 10, window: 10s}\n  open-q: {limit: 1, window: 10s}"
    )
    e = engine(text=text)
    route = next(r for r in e.policy.routes if r.name == "tiered")
    tiered = Route(name=route.name, match=route.match, auth=(_Tiered(),), anonymous=True, quotas=route.quotas, tiers=route.tiers)
    e.policy = type(e.policy)(file="p", routes=(tiered,))
    assert [(await e.decide(req("/tiered/x"))).reason for _ in range(2)] == ["ok", "quota.exhausted"]
    gold = [(await e.decide(req("/tiered/x", x_tier="gold"))).reason for _ in range(3)]
    assert gold == ["ok", "ok", "ok"]  # the gold tier has 'heavy' (10), not 'open-q' (1)
    silver = [(await e.decide(req("/tiered/x", x_tier="silver"))).reason for _ in range(2)]
    assert silver == ["ok", "quota.exhausted"]  # no such tier: the route's quotas


def test_a_tier_names_existing_quotas() -> None:
    with pytest.raises(ConfigError, match="no quota named 'nope' in quotas"):
        engine(text=POLICY.replace("quota: [per-subnet]}", "quota: [per-subnet], tiers: {gold: [nope]}}", 1))
