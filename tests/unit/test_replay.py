"""authz replay: recorded traffic through the real pipeline, at the recorded times."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from authz.cli import cli
from authz.clock import FixedClock
from authz.decision import Decision, DecisionIds
from authz.offline.replay import ReplayError, parse_record, read_records, replay
from authz.pipeline import Engine
from authz.policy import load_policy
from authz.request import Request
from authz.store import MemoryStore

T0 = 1_700_000_000_000
POLICY = """
version: 1
quotas:
  per-ip: {{limit: {limit}, window: 1m, burst: {limit}, by: ip}}
reputation: {{half_life: 10m, scale: 10}}
routes:
  - name: login
    match: {{path: {{exact: /login}}}}
    auth: [anonymous]
    reputation: {{sensitive: true}}
  - name: api
    match: {{path: {{prefix: /api/}}}}
    auth: [anonymous]
    quota: [per-ip]
    reputation:
      actions: [{{at: 40, do: deny}}]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


async def record_traffic(tmp_path: Path) -> tuple[Path, list[Decision]]:
    """Serve some traffic with the limit-5 policy and keep its decision log, as authz writes it."""
    decisions: list[Decision] = []
    policy = load_policy(str(write(tmp_path, "p.yaml", POLICY.format(limit=5))))
    clock = FixedClock(T0)
    engine = Engine(policy, MemoryStore(epoch_ms=T0), clock=clock, ids=DecisionIds("live"), on_decision=decisions.append)
    for i in range(30):
        clock.ms = T0 + i * 1500
        peer = "192.0.2.1" if i % 3 else "198.51.100.2"
        headers = {"user-agent": "Mozilla/5.0", "accept": "text/html", "accept-language": "en"}
        await engine.decide(Request(method="GET", path=f"/api/page{i}", host="shop.example", headers=headers, peer_ip=peer))
        await engine.settle()  # serving, what a request revealed is recorded well before the next one
    log = tmp_path / "decisions.log"
    log.write_text("".join(json.dumps(d.to_record()) + "\n" for d in decisions))
    return log, decisions


async def test_replaying_a_log_with_its_own_policy_gives_the_same_outcomes(tmp_path: Path) -> None:
    log, live = await record_traffic(tmp_path)
    policy = load_policy(str(tmp_path / "p.yaml"))
    with log.open() as f:
        report = await replay(read_records(f), policy)
    (tally,) = report.tallies
    assert tally.total == 30
    live_counts = {"allowed": sum(d.allowed for d in live), "throttled": sum(d.reason == "quota.exhausted" for d in live)}
    assert live_counts["throttled"] > 0
    assert tally.by_class["allowed"] == live_counts["allowed"]
    assert tally.by_class["throttled"] == live_counts["throttled"]
    assert tally.by_reason["quota.exhausted"] == live_counts["throttled"]


async def test_against_a_second_policy_shows_every_change(tmp_path: Path) -> None:
    log, _ = await record_traffic(tmp_path)
    p = load_policy(str(tmp_path / "p.yaml"))
    q = load_policy(str(write(tmp_path, "q.yaml", POLICY.format(limit=2))))
    with log.open() as f:
        report = await replay(read_records(f), p, q)
    a, b = report.tallies
    assert b.by_class["throttled"] > a.by_class["throttled"]
    assert report.changes[("api", "allowed", "throttled")] > 0
    inflow = sum(n for (_, _, to), n in report.changes.items() if to == "throttled")
    outflow = sum(n for (_, frm, _), n in report.changes.items() if frm == "throttled")
    assert inflow - outflow == b.by_class["throttled"] - a.by_class["throttled"]
    assert report.to_dict()["changes"][0]["lines"]  # line numbers to look at


async def test_authentication_is_taken_as_recorded(tmp_path: Path) -> None:
    base = {"time_ms": T0, "outcome": "allow", "method": "GET", "host": "a", "path": "/p/x", "client_ip": "192.0.2.9"}
    lines = [
        {**base, "reason": "ok", "auth_method": "jwt:partners", "subject": "alice"},
        {**base, "reason": "jwt.expired", "outcome": "deny", "auth_method": "jwt:partners"},
        {**base, "reason": "ok", "auth_method": "anonymous"},
    ]
    text = "\n".join(json.dumps(x) for x in lines)
    jwt_route = """
version: 1
jwt_providers:
  partners:
    issuer: "https://idp.example/"
    audiences: [a]
    algorithms: [ES256]
    keys:
      jwks:
        keys: [{"kty": "EC", "crv": "P-256", "x": "G3E4dCZUU1NzjnTtADXv6Jg0fygnFcE7YaS0Gm10xgg", "y": "Ts3jA4cOES63gUZ4uQ_pNP825fGuyJnEPqdbqMUfEF4", "kid": "ec-1", "alg": "ES256"}]
routes:
  - name: p
    match: {path: {prefix: /p/}}
    auth: [AUTH]
"""
    p = load_policy(str(write(tmp_path, "j.yaml", jwt_route.replace("AUTH", "jwt:partners"))))
    others = jwt_route.replace("jwt_providers:\n  partners:", "jwt_providers:\n  others:").replace("AUTH", "jwt:others")
    q = load_policy(str(write(tmp_path, "s.yaml", others)))
    report = await replay(read_records(text.splitlines()), p, q)
    a, b = report.tallies
    assert dict(a.by_reason) == {"ok": 1, "jwt.expired": 1, "auth.missing": 1}
    # the new policy takes no JWT: the recorded token is no credential for it
    assert dict(b.by_reason) == {"auth.missing": 2, "jwt.expired": 1}


def test_envoy_json_access_log_lines_are_read() -> None:
    line = {
        "time": "2026-12-01T10:00:00.250Z", "method": "GET", "authority": "api.example", "path": "/api/x",
        "status": 404, "details": "via_upstream", "peer": "203.0.113.4", "client_ip": None, "user_agent": "curl/8",
        "request_id": "-", "decision_id": "abc", "reason": "ok", "auth": "anonymous", "subject": None,
    }  # fmt: skip
    rec = parse_record(line, 7)
    at = datetime(2026, 12, 1, 10, 0, 0, 250_000, tzinfo=UTC)
    assert (rec.time_ms, rec.client_ip, rec.host, rec.backend_status, rec.request_id) == (int(at.timestamp() * 1000), "203.0.113.4", "api.example", 404, "")
    local = parse_record({**line, "details": "ext_authz_denied", "status": 403}, 8)
    assert local.backend_status == 0  # authz's own refusal, not the backend's answer


async def test_the_backends_404s_in_an_envoy_log_feed_reputation(tmp_path: Path) -> None:
    policy = load_policy(str(write(tmp_path, "p.yaml", POLICY.format(limit=1000))))
    lines = []
    for i in range(40):
        ts = f"2026-12-01T10:00:{i:02d}.000Z"
        lines.append(json.dumps({"time": ts, "method": "GET", "authority": "a", "path": f"/api/guess-{i}x", "status": 404, "details": "via_upstream", "peer": "203.0.113.50"}))
    report = await replay(read_records(lines), policy)
    (tally,) = report.tallies
    assert tally.by_reason["reputation.denied"] > 0  # enumeration crossed the deny threshold
    assert tally.by_class["allowed"] >= 10  # ... only after enough evidence


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "line 1: not JSON"),
        ("[1, 2]", "line 1: not a JSON object"),
        ('{"hello": 1}', "line 1: neither a decision-log record nor an Envoy JSON access log line"),
        ('\n{"time_ms": "soon", "outcome": "allow"}', "line 2: ValueError in a field"),
        ('{"time": "yesterday", "method": "GET", "peer": "1.2.3.4"}', "line 1: time 'yesterday' is not an ISO 8601 time"),
    ],
)
def test_a_bad_line_is_refused_naming_it(text: str, message: str) -> None:
    with pytest.raises(ReplayError, match=message):
        list(read_records(text.splitlines()))


def test_the_cli_prints_tables_and_json(tmp_path: Path) -> None:
    log, _ = asyncio.run(record_traffic(tmp_path))
    write(tmp_path, "q.yaml", POLICY.format(limit=2))
    runner = CliRunner()
    out = runner.invoke(cli, ["replay", str(log), "--policy", str(tmp_path / "p.yaml"), "--against", str(tmp_path / "q.yaml")])
    assert out.exit_code == 0, out.output
    assert "30 requests" in out.output and "api: allowed -> throttled" in out.output
    js = runner.invoke(cli, ["replay", str(log), "--policy", str(tmp_path / "p.yaml"), "--json"])
    assert json.loads(js.output)["policies"][0]["requests"] == 30
    bad = write(tmp_path, "bad.log", '{"x": 1}\n')
    err = runner.invoke(cli, ["replay", str(bad), "--policy", str(tmp_path / "p.yaml")])
    assert err.exit_code == 1 and "bad.log: line 1: neither" in err.output
