"""The reputation stage through the engine, on the memory store with a pinned clock:
each signal moves the score the documented way and decays as documented; actions by threshold."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from authz.clock import FixedClock
from authz.config.context import CompileContext
from authz.config.source import load
from authz.decision import DecisionIds
from authz.errors import ConfigError
from authz.keys import EMPTY_KEYRING
from authz.pipeline import Engine
from authz.policy.compile import compile_policy
from authz.request import Request
from authz.stages.authenticate import Authenticator, AuthResult
from authz.stages.authenticate.jwt import JWT_BAD_SIGNATURE
from authz.stages.context import Ctx
from authz.store import MemoryStore

T0 = 1_700_000_000_000

POLICY = """
version: 1
quotas:
  strict: {limit: 2, window: 1m, by: ip}
  addresses_per_user: {distinct: ip, per: subject, limit: 2, window: 1h, action: signal}
reputation:
  half_life: 10m
  scale: 10
  cadence: {min_intervals: 6, max_cv: 0.1}
  burst: {rate: 30, window: 10s}
  sequence: {min_run: 3}
routes:
  - name: home
    match: {path: {exact: /}}
    auth: [anonymous]
    reputation: {}
  - name: login
    match: {path: {exact: /login}}
    auth: [anonymous]
    reputation: {sensitive: true}
  - name: checkout
    match: {path: {prefix: /checkout}}
    auth: [anonymous]
    reputation: {after: [home]}
  - name: api
    match: {path: {prefix: /api/}}
    auth: [anonymous]
    reputation:
      actions:
        - {at: 20, do: tag}
        - {at: 40, do: throttle, quota: strict}
        - {at: 60, do: tarpit, delay: 50ms}
        - {at: 75, do: decoy, status: 404, body: '{"items": []}'}
        - {at: 90, do: deny}
  - name: account
    match: {path: {prefix: /account/}}
    auth: [anonymous]
    quota: [addresses_per_user]
    reputation: {}
  - name: watch
    match: {path: {prefix: /watch/}}
    auth: [anonymous]
    reputation: {monitor: true, actions: [{at: 1, do: deny}]}
"""


class Evidence(Authenticator):
    """Plays the stages that find evidence in a request: ``x-evidence: name=strength,...``."""

    kind = "evidence"
    name = "t"

    def present(self, req: Request) -> bool:
        return any(h in req.headers for h in ("x-evidence", "x-bad", "x-sub", "x-country", "x-session"))

    async def authenticate(self, req: Request, ctx: Ctx) -> AuthResult:
        if "x-bad" in req.headers:
            return AuthResult(ok=False, reason=JWT_BAD_SIGNATURE)
        ctx.identity.country = req.headers.get("x-country", "")
        ctx.identity.session = req.headers.get("x-session", "")
        for item in filter(None, req.headers.get("x-evidence", "").split(",")):
            name, _, strength = item.partition("=")
            ctx.evidence.append((name, float(strength)))
        # no subject unless x-sub says: an anonymous client
        return AuthResult(ok=True, subject=req.headers.get("x-sub", ""))


def engine(text: str = POLICY) -> Engine:
    policy = compile_policy(load("p.yaml", text), CompileContext(file="p.yaml", base_dir=".", keyring=EMPTY_KEYRING))
    routes = tuple(dataclasses.replace(r, auth=(Evidence(),), anonymous=True) for r in policy.routes)
    policy = dataclasses.replace(policy, routes=routes)
    return Engine(policy, MemoryStore(epoch_ms=T0), clock=FixedClock(T0), ids=DecisionIds("r"))


def req(path: str, peer: str = "198.51.100.7", evidence: str = "", **headers: str) -> Request:
    hs = {"user-agent": "Mozilla/5.0", "accept": "text/html", **{k.replace("_", "-"): v for k, v in headers.items()}}
    if evidence:
        hs["x-evidence"] = evidence
    return Request(method="GET", path=path, host="shop.example", headers=hs, peer_ip=peer)


async def decide_with(e: Engine, r: Request, evidence: list[tuple[str, float]]) -> Any:
    headers = dict(r.headers)
    headers["x-evidence"] = ",".join(f"{n}={s}" for n, s in evidence)
    return await e.decide(Request(method=r.method, path=r.path, host=r.host, headers=headers, peer_ip=r.peer_ip))


async def test_a_clean_client_scores_zero_and_the_upstream_sees_the_score() -> None:
    d = await engine().decide(req("/"))
    assert d.reason == "ok" and d.score == 0
    assert ("x-authz-score", "0") in d.upstream_headers


async def test_a_metronome_raises_the_score_and_a_person_does_not() -> None:
    e = engine()
    scores = []
    for i in range(12):
        e.clock.ms = T0 + i * 3000  # type: ignore[attr-defined]
        scores.append((await e.decide(req("/", peer="192.0.2.1"))).score)
    assert scores[5] == 0 and scores[-1] > 30  # after 6 intervals every 3 s exactly
    human = engine()
    gaps = [2100, 7300, 3900, 15000, 800, 4400, 9100, 2600, 5200, 1200, 6600]
    at = T0
    for gap in gaps:
        at += gap
        human.clock.ms = at  # type: ignore[attr-defined]
        d = await human.decide(req("/", peer="192.0.2.2"))
    assert d.score == 0


async def test_sequential_ids_are_enumeration() -> None:
    e = engine()
    for i in range(8):
        e.clock.ms = T0 + i * 1700 + (i % 3) * 450  # type: ignore[attr-defined]
        d = await e.decide(req(f"/api/items/{1000 + i}", peer="192.0.2.3"))
    assert d.score is not None and d.score > 40
    assert dict(d.signals)["reputation.top"].startswith("sequence=")


async def test_evidence_decays_by_half_each_half_life() -> None:
    e = engine()
    first = await decide_with(e, req("/", peer="192.0.2.4"), [("probe.traversal", 1.0)])
    assert first.score == pytest.approx(100 * 5 / 15, abs=0.1)  # weight 5, scale 10  # type: ignore[attr-defined]
    e.clock.advance(600_000)  # type: ignore[attr-defined]
    later = await e.decide(req("/", peer="192.0.2.4"))
    assert later.score == pytest.approx(100 * 2.5 / 12.5, abs=0.1)  # type: ignore[attr-defined]


async def test_failures_recorded_after_the_decision_count_against_the_address() -> None:
    e = engine()
    refused = [await e.decide(req("/login", peer="192.0.2.5", x_bad="1")) for _ in range(3)]
    assert all(d.reason == JWT_BAD_SIGNATURE for d in refused)
    assert refused[0].score is None  # refused before scoring; the failure is recorded afterwards, off the critical path
    await e.settle()
    # three failures on a sensitive route: auth.failure and login.failure, on the address
    d = await e.decide(req("/", peer="192.0.2.5"))
    assert d.score is not None and d.score > 50
    top = dict(d.top_signals)
    assert {"auth.failure", "login.failure"} <= set(top)
    # a neighbour on the same /24 inherits the login failures, not the address's own
    n = await e.decide(req("/", peer="192.0.2.99"))
    assert n.score is not None and 0 < n.score < d.score
    other = await e.decide(req("/", peer="203.0.113.5"))
    assert other.score == 0


async def test_actions_by_threshold_throttle_tarpit_decoy_deny() -> None:
    e = engine()
    peer = "192.0.2.6"

    async def with_probe(strength: float) -> object:
        return await decide_with(e, req("/api/x", peer=peer), [("probe.injection", strength)])

    tagged = await with_probe(0.5)  # 2.5 / 12.5 -> 20
    assert ("x-authz-signals", "probe.injection") in tagged.upstream_headers  # type: ignore[attr-defined]
    # past 40 the strict quota (2 a minute, counted on every request of the route) applies
    below = [await with_probe(0.2) for _ in range(2)]
    assert all(20 <= d.score < 40 and d.reason == "ok" for d in below)  # its tokens ran out, but below 40
    while (d := await with_probe(0.2)).score < 40:
        assert d.reason == "ok"
    assert d.reason == "reputation.throttled" and ("retry-after", "30") in d.client_headers  # 1 token per 30 s
    while (d := await with_probe(0.3)).score < 60:  # type: ignore[attr-defined]
        pass
    assert d.reason in ("ok", "reputation.throttled")  # type: ignore[attr-defined]
    while (d := await with_probe(0.5)).score < 75:  # type: ignore[attr-defined]
        pass
    assert (d.status, d.reason, d.body) == (404, "reputation.decoy", b'{"items": []}')  # type: ignore[attr-defined]
    assert not any(n.startswith("x-authz") for n, _ in d.client_headers)  # type: ignore[attr-defined]
    while (d := await with_probe(1.0)).score < 90:  # type: ignore[attr-defined]
        pass
    assert (d.status, d.reason) == (403, "reputation.denied")  # type: ignore[attr-defined]
    record = d.to_record()  # type: ignore[attr-defined]
    assert record["score"] >= 90 and record["top_signals"][0][0] == "probe.injection"


async def test_monitor_mode_records_the_would_be_action_and_changes_nothing() -> None:
    d = await decide_with(engine(), req("/watch/x"), [("probe.scanner_path", 1.0)])
    assert d.reason == "ok" and ("reputation.would", "deny") in d.signals  # type: ignore[attr-defined]


async def test_a_journey_without_its_predecessor_counts() -> None:
    e = engine()
    direct = await e.decide(req("/checkout/1", peer="192.0.2.7"))
    assert direct.score is not None and direct.score > 0 and ("journey" in dict(direct.signals)["reputation.top"])
    e2 = engine()
    await e2.decide(req("/", peer="192.0.2.8"))
    after_home = await e2.decide(req("/checkout/1", peer="192.0.2.8"))
    assert after_home.score == 0


async def test_a_verified_bot_is_not_scored() -> None:
    from authz.stages.route import Route

    class Agent(Authenticator):
        kind = "agent"
        name = "t"

        def present(self, req: Request) -> bool:
            return True

        async def authenticate(self, req: Request, ctx: Ctx) -> AuthResult:
            return AuthResult(ok=True, subject="https://bot.example", tier="verified-bot", bot="https://bot.example")

    e = engine()
    api = next(r for r in e.policy.routes if r.name == "api")
    route = Route(name="api", match=api.match, auth=(Agent(),), anonymous=False, reputation=api.reputation)
    e.policy = type(e.policy)(file="p", routes=(route,), reputation=e.policy.reputation)
    for i in range(40):
        e.clock.ms = T0 + i * 1000  # type: ignore[attr-defined]
        d = await decide_with(e, req(f"/api/items/{i}"), [("ua.automation", 1.0)])
    assert d.reason == "ok" and d.score is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("- {at: 40, do: throttle, quota: strict}", "- {at: 40, do: throttle, quota: nope}", ),
    ],
)
def test_a_throttle_names_a_bucket_quota(change: str, message: str) -> None:
    with pytest.raises(ConfigError, match="no bucket quota named 'nope'"):
        engine(POLICY.replace(change, message))


def test_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="actions are listed by rising score"):
        engine(POLICY.replace("- {at: 60, do: tarpit, delay: 50ms}", "- {at: 10, do: tarpit, delay: 50ms}"))
    with pytest.raises(ConfigError, match="at most the reputation section's max_tarpit"):
        engine(POLICY.replace("delay: 50ms", "delay: 5s"))
    with pytest.raises(ConfigError, match="unknown signal 'weather'"):
        engine(POLICY.replace("  scale: 10\n", "  scale: 10\n  weights: {weather: 1}\n"))
    with pytest.raises(ConfigError, match=r"no route named 'nowhere' .a journey's predecessors"):
        engine(POLICY.replace("after: [home]", "after: [nowhere]"))
    with pytest.raises(ConfigError, match="needs the policy's top-level reputation section"):
        text = POLICY.replace("reputation:\n  half_life: 10m\n  scale: 10\n  cadence: {min_intervals: 6, max_cv: 0.1}\n  burst: {rate: 30, window: 10s}\n  sequence: {min_run: 3}\n", "")
        compile_policy(load("p.yaml", text), CompileContext(file="p.yaml", base_dir=".", keyring=EMPTY_KEYRING))


async def test_one_token_from_many_addresses_is_evidence_against_it() -> None:
    e = engine()
    for i in range(3):
        d = await e.decide(req("/account/me", peer=f"203.0.113.{i + 1}", x_sub="carol"))
        assert d.reason == "ok"  # signal mode: never refused for it
    assert ("distinct.addresses_per_user", "3") in d.signals
    await e.settle()
    later = await e.decide(req("/account/me", peer="203.0.113.1", x_sub="carol"))
    assert "distinct.addresses_per_user" in dict(later.top_signals)


async def test_a_token_seen_from_two_countries_within_the_hour_is_geo_travel() -> None:
    e = engine()
    home = await e.decide(req("/", peer="192.0.2.30", x_sub="dave", x_country="FR"))
    assert ("reputation.travel", "2 countries") not in home.signals
    away = await e.decide(req("/", peer="198.51.100.30", x_sub="dave", x_country="BR"))
    assert ("reputation.travel", "2 countries") in away.signals
    await e.settle()
    d = await e.decide(req("/", peer="198.51.100.30", x_sub="dave", x_country="BR"))
    assert dict(d.top_signals).get("geo.travel", 0) > 0
    # an address travels with nobody: two addresses in two countries, no subject, no travel
    e2 = engine()
    await e2.decide(req("/", peer="192.0.2.31", x_country="FR"))
    other = await e2.decide(req("/", peer="192.0.2.31", x_country="BR"))
    assert not any(n == "reputation.travel" for n, _ in other.signals)


def test_the_documented_policy_and_signal_table_are_true() -> None:
    import re
    from pathlib import Path

    from authz.stages.reputation import signals_table

    doc = (Path(__file__).parents[2] / "docs" / "reputation.md").read_text()
    (example,) = re.findall(r"```yaml\n(.*?)```", doc, flags=re.S)
    policy = compile_policy(load("reputation.md", example), CompileContext(file="reputation.md", base_dir=".", keyring=EMPTY_KEYRING))
    assert [r.name for r in policy.routes if r.reputation is not None] == ["login", "catalogue", "checkout"]
    for row in signals_table().splitlines():
        assert row in doc, f"docs/reputation.md is missing {row!r} (regenerate with `authz signals`)"


async def test_challenge_action_asks_for_work_that_grows_with_the_score(tmp_path: Any) -> None:
    from authz.challenge import SOLUTION_HEADER, solve

    secret = tmp_path / "challenge.key"
    secret.write_bytes(b"k" * 32)
    text = POLICY.replace("routes:\n", f"challenges:\n  default: {{secret_file: {secret}, base_difficulty: 2, max_difficulty: 10}}\nroutes:\n", 1)
    text = text.replace("        - {at: 20, do: tag}\n", "        - {at: 20, do: challenge}\n", 1)
    e = engine(text)
    e.clock.ms = int(__import__("time").time() * 1000)  # type: ignore[attr-defined]  # the solver judges expiry by the wall clock
    peer = "192.0.2.40"
    first = await decide_with(e, req("/api/x", peer=peer), [("probe.injection", 0.5)])  # score 20
    assert (first.status, first.reason) == (429, "reputation.challenged")
    challenge = dict(first.client_headers)["authz-challenge"]
    assert "d=3" in challenge  # base 2 + 20% of (10 - 2), rounded down
    kept = dict((await decide_with(e, req("/api/x", peer=peer), [])).client_headers)["authz-challenge"]  # for later
    sol = SOLUTION_HEADER.replace("-", "_")
    solution = solve(challenge, now=e.clock.ms / 1000)  # type: ignore[attr-defined]
    solved = await decide_with(e, req("/api/x", peer=peer, **{sol: solution}), [])
    assert solved.reason == "ok" and ("reputation.challenge", "passed d=3") in solved.signals
    assert SOLUTION_HEADER in solved.remove_headers  # the backend never sees it
    again = await decide_with(e, req("/api/x", peer=peer, **{sol: solution}), [])
    assert again.reason == "challenge.replay"  # one request per solution
    # the score rose: a challenge of the old difficulty is no longer enough
    harder = await decide_with(e, req("/api/x", peer=peer), [("probe.injection", 0.3)])  # about 29: still a challenge
    need = int(dict(harder.client_headers)["authz-challenge"].split("d=")[1].split(",")[0])
    assert need > 3
    easy = solve(kept, now=e.clock.ms / 1000)  # type: ignore[attr-defined]
    refused = await decide_with(e, req("/api/x", peer=peer, **{sol: easy}), [])
    assert refused.reason == "reputation.challenged"
    assert ("reputation.challenge", f"insufficient d=3 < {need}") in refused.signals


def test_a_challenge_action_names_a_challenger() -> None:
    with pytest.raises(ConfigError, match="no challenger named 'default'"):
        engine(POLICY.replace("        - {at: 20, do: tag}\n", "        - {at: 20, do: challenge}\n", 1))


async def test_a_busy_address_is_judged_by_its_rate_of_evidence() -> None:
    e = engine()
    # 600 requests in 5 minutes from one address (many people behind a carrier NAT), 6 of them 404s
    nat = "100.64.0.1"
    rng = random.Random(7)
    at = T0
    for i in range(600):
        at += int(rng.expovariate(1 / 500))  # many people: arrivals at random
        e.clock.ms = at  # type: ignore[attr-defined]
        d = await e.decide(req(f"/api/p/{(i * 7919) % 5000}", peer=nat, x_session=f"s{i % 150}"))
        if i % 100 == 0:
            e.backend_answered(d.feedback, 404)
            await e.settle()
    busy = await e.decide(req("/", peer=nat))
    # the same six 404s from a quiet address
    quiet = "192.0.2.60"
    for i in range(6):
        d = await e.decide(req(f"/api/x{i}", peer=quiet))
        e.backend_answered(d.feedback, 404)
    await e.settle()
    alone = await e.decide(req("/", peer=quiet))
    assert busy.score is not None and alone.score is not None
    assert busy.score < 5 < alone.score
    # no burst evidence on the address, whatever its volume; its sessions are not bursting either
    assert "burst" not in dict(busy.top_signals)


async def test_a_bursting_anonymous_session_is_evidence_and_its_address_is_not() -> None:
    e = engine()
    for i in range(60):
        e.clock.ms = T0 + i * 100  # type: ignore[attr-defined]  # 10 a second, one session
        d = await e.decide(req("/", peer="192.0.2.61", x_session="hot"))
    assert dict(d.signals)["reputation.identity"] == "session"
    assert "burst" in dict(d.top_signals)


async def test_a_user_agent_claiming_a_listed_crawler_without_proof_is_impersonation() -> None:
    e = engine(POLICY.replace("  scale: 10\n", "  scale: 10\n  claimed_bots: [GPTBot, Googlebot]\n", 1))
    ua = "Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)"
    fake = await e.decide(Request(method="GET", path="/", host="shop.example", headers={"user-agent": ua}, peer_ip="192.0.2.70"))
    assert fake.score == pytest.approx(100 * 6 / 16, abs=0.1)
    assert ("reputation.claimed_bot", "gptbot") in fake.signals and fake.top_signals[0][0] == "ua.impersonation"
    # a word inside another is no claim
    other = await e.decide(Request(method="GET", path="/", host="shop.example", headers={"user-agent": "NotGPTBotter/1"}, peer_ip="203.0.113.71"))
    assert other.score == 0
    with pytest.raises(ConfigError, match="a crawler's user-agent word"):
        engine(POLICY.replace("  scale: 10\n", "  scale: 10\n  claimed_bots: ['Googlebot; rm']\n", 1))


async def test_many_addresses_of_one_ipv6_64_are_rotation_and_an_ipv4_24_is_not() -> None:
    e = engine()
    for i in range(18):
        d = await e.decide(req("/", peer=f"2001:db8:7:7::{i + 1:x}"))
    assert ("reputation.rotation", "17 addresses") in d.signals or ("reputation.rotation", "18 addresses") in d.signals
    await e.settle()
    later = await e.decide(req("/", peer="2001:db8:7:7::ffff"))
    assert dict(later.signals)["reputation.identity"] == "subnet6" and "ipv6.rotation" in dict(later.top_signals)
    v4 = engine()
    for i in range(18):
        d4 = await v4.decide(req("/", peer=f"198.51.100.{i + 1}"))
    assert not any(n == "reputation.rotation" for n, _ in d4.signals)


def test_a_jwt_signing_key_is_not_an_identity() -> None:
    from authz.stages.context import Ctx

    stage = engine().policy.reputation
    assert stage is not None
    ctx = Ctx(req("/"), T0, "r-1")
    ctx.identity.client_ip = "198.51.100.7"
    ctx.identity.method, ctx.identity.subject, ctx.identity.key_id = "jwt:partners", "alice", "idp-key-1"
    assert [k for k, _ in stage.identities_of(ctx)] == ["ip", "subnet", "subject"]
    ctx.identity.method = "signature:bots"
    assert [k for k, _ in stage.identities_of(ctx)] == ["ip", "subnet", "subject", "key_id"]


async def test_query_parameter_enumeration_is_a_sequence_and_head_is_probing() -> None:
    e = engine()
    for i in range(8):
        e.clock.ms = T0 + i * 1300 + (i % 2) * 400  # type: ignore[attr-defined]
        d = await e.decide(Request(method="GET", path="/api/list", query=f"sort=asc&page={40 + i}", has_query=True, host="a", headers={"user-agent": "x"}, peer_ip="192.0.2.80"))
    assert "sequence" in dict(d.top_signals)
    head = await e.decide(Request(method="HEAD", path="/", host="a", headers={"user-agent": "x"}, peer_ip="203.0.113.81"))
    assert head.top_signals and head.top_signals[0][0] == "method.probing"


async def test_signals_header_sends_the_top_signals_on_every_scored_allow() -> None:
    e = engine(POLICY.replace("  scale: 10\n", "  scale: 10\n  signals_header: true\n", 1))
    d = await decide_with(e, req("/", peer="192.0.2.90"), [("probe.traversal", 0.2)])  # score 9: no action
    assert ("x-authz-signals", "probe.traversal") in d.upstream_headers
    assert ("x-authz-signals", "") not in (await e.decide(req("/", peer="203.0.113.90"))).upstream_headers


async def test_a_listed_address_counts_its_list_once_however_busy_it_is() -> None:
    e = engine()
    scores = []
    rng = random.Random(3)
    for _ in range(200):
        e.clock.advance(int(rng.expovariate(1 / 1000)))  # type: ignore[attr-defined]  # many people, at random
        d = await decide_with(e, req("/", peer="100.64.9.1"), [("list.abuse", 0.6)])
        scores.append(d.score)
    assert scores[0] == scores[-1] == pytest.approx(100 * 0.6 / 10.6, abs=0.1)  # weight 1 x strength 0.6, once
    assert dict(d.top_signals) == {"list.abuse": pytest.approx(scores[-1], abs=0.1)}
