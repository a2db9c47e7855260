"""Admin tokens (files, YAML, the environment, reloads), audit records, decision filters, and the keys
the Clients service reads being the keys the engine writes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from authz.admin.v1 import admin_pb2
from authz.decision import OK, ROUTE_NO_MATCH, Decision, Identity
from authz.decisionlog import DecisionLog
from authz.errors import ConfigError
from authz.policy.compile import load_policy
from authz.request import Request
from authz.server.admin import Filter, client_ops
from authz.server.admin_auth import TOKENS_ENV, Audit, TokenSet, parse_tokens
from authz.stages.context import Ctx
from authz.store.ops import Reputation, TakeTokens

A, B = "a" * 16 + "-first-token", "b" * 16 + "-second-token"


def test_tokens_as_lines_yaml_and_the_environment() -> None:
    assert parse_tokens(f"# comment\nops:{A}\n\nci : {B}\n", "f") == [("ops", A), ("ci", B)]
    assert parse_tokens(f"tokens:\n  - {{name: ops, token: '{A}'}}\n", "f") == [("ops", A)]
    assert parse_tokens(f"ops:{A},ci:{B}", TOKENS_ENV) == [("ops", A), ("ci", B)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ops", "expected name:token"),
        ("ops:short", "at least 16 printable characters"),
        (f"bad name:{A}", "a token's name is"),
        (f"ops:{A}\nops:{B}", "the name 'ops' is given twice"),
        (f"ops:{A}\nci:{A}", "two names share one token"),
        ("tokens: [{name: ops}]", "expected {name, token}"),
        ("tokens: [", "not valid YAML"),
    ],
)
def test_bad_tokens_are_refused_without_quoting_them(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_tokens(text, "tokens.txt")
    assert A not in str(info.value) and "short" not in str(info.value).replace("'ops' must", "")


def test_match_names_the_token_and_compares_with_every_one() -> None:
    tokens = TokenSet("", f"ops:{A},ci:{B}")
    assert (tokens.match(A), tokens.match(B), tokens.match(A + "x"), tokens.match("")) == ("ops", "ci", None, None)
    assert A not in repr(vars(tokens))  # only digests are kept


def test_the_file_is_reloaded_when_it_changes_and_a_bad_version_keeps_the_tokens(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "tokens"
    path.write_text(f"ops:{A}\n")
    tokens = TokenSet(str(path), interval=1.0, clock=lambda: now[0])
    assert tokens.match(A) == "ops"
    path.write_text(f"ci:{B}\n")
    assert tokens.match(B) is None  # looked at once per interval
    now[0] = 1.5
    assert (tokens.match(B), tokens.match(A), tokens.reloads) == ("ci", None, 1)
    path.write_text("ci:short\n")
    now[0] = 3.0
    assert (tokens.match(B), tokens.failures) == ("ci", 1)


def test_a_name_in_both_the_file_and_the_environment_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text(f"ops:{A}\n")
    with pytest.raises(ConfigError, match="both in the tokens file and in AUTHZ_ADMIN_TOKENS"):
        TokenSet(str(tmp_path / "tokens"), f"ops:{B}")


async def test_audit_writes_one_line_to_each_log_and_never_a_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="authz.audit")
    log = DecisionLog(str(tmp_path / "d.jsonl"))
    await log.start()
    audit = Audit(log.audit, clock=lambda: 1234)
    audit(None, "key.create", "partner", algorithm="hmac-sha256", secret="s3cr3t-value", api_token="t0k3n-value")
    await log.stop()
    (record,) = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert record == {"event": "audit", "time_ms": 1234, "who": "", "auth": "", "peer": "", "action": "key.create", "target": "partner", "algorithm": "hmac-sha256"}
    assert "audit: key.create partner" in caplog.text
    assert "s3cr3t" not in caplog.text and "t0k3n" not in caplog.text


def decision(**ident: str) -> Decision:
    return Decision(id="x", outcome=OK.outcome, status=200, reason=OK, time_ms=1000, route="api", identity=Identity(**ident))


def test_filters() -> None:
    def parse(**f: object) -> Filter:
        return Filter.parse(admin_pb2.DecisionFilter(**f))  # type: ignore[arg-type]

    alice = decision(client_ip="2001:db8::1", subject="alice", key_id="k.v1")
    assert parse(identity="sub:alice").matches(alice) and not parse(identity="ip:alice").matches(alice)
    assert parse(identity="2001:DB8:0::1").matches(alice)  # bare values: canonical addresses
    assert parse(identity="k.v1").matches(alice) and parse(identity="key:k.v1").matches(alice)
    assert parse(since_ms=1000, until_ms=1000).matches(alice) and not parse(since_ms=1001).matches(alice)
    denied = Decision(id="y", outcome=ROUTE_NO_MATCH.outcome, status=403, reason=ROUTE_NO_MATCH, time_ms=1)
    assert parse(reason="route.").matches(denied) and not parse(reason="route").matches(denied)
    for bad in ({"outcome": "nope"}, {"identity": "planet:x"}, {"since_ms": 5, "until_ms": 1}):
        with pytest.raises(ValueError):
            parse(**bad)


POLICY = """
version: 1
keys_file: keys.yaml
signatures:
  bots: {}
quotas:
  by-ip: {limit: 5, window: 1m, by: ip}
  by-client: {limit: 5, window: 1m, by: client}
  by-subject: {limit: 5, window: 1m, by: subject}
  by-subnet: {limit: 5, window: 1m, by: subnet}
  by-two: {limit: 5, window: 1m, by: [ip, route]}
reputation: {}
routes:
  - {name: api, match: {path: {prefix: /}}, auth: ["signature:bots"], quota: [by-ip, by-client, by-subject, by-subnet], reputation: {}}
"""


def test_the_client_service_reads_the_keys_the_engine_writes(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (tmp_path / "keys.yaml").write_text(
        "keys:\n  - id: partner.v2\n    algorithm: ed25519\n    public_key: |\n" + "".join(f"      {line}\n" for line in pem.splitlines())
    )
    (tmp_path / "p.yaml").write_text(POLICY)
    policy = load_policy(str(tmp_path / "p.yaml"))
    assert policy.reputation is not None
    ctx = Ctx(Request(method="GET", path="/x", host="h"), 0, "id")
    ctx.route_name = "api"
    ctx.identity.client_ip = "203.0.113.7"
    ctx.identity.subject = "alice"
    ctx.identity.method = "signature:bots"
    ctx.identity.key_id = "partner.v2"
    written = dict(policy.reputation.identities_of(ctx))
    planned: list[str] = []
    route = policy.routes[0]
    for quota, _ in route.quotas:
        quota.plan(ctx, None)
    planned = [op.key for op in ctx.ops]
    for identity, kind in (("ip:203.0.113.7", "ip"), ("subnet:203.0.113.0/24", "subnet"), ("sub:alice", "subject"), ("key:partner.v2", "key_id")):
        found = client_ops(identity, policy)
        assert [op.key for _, op in found.reputation] == ["r:" + written[kind]], identity
        assert all(isinstance(op, Reputation) and not op.arrival and not op.evidence for _, op in found.reputation)
        for _, take in found.quotas:
            assert isinstance(take, TakeTokens) and take.cost == 0
    ip_buckets = {op.key for _, op in client_ops("ip:203.0.113.7", policy).quotas}
    assert ip_buckets == {"by-ip:ip:203.0.113.7", "by-client:ip:203.0.113.7"}  # by-two is not one identity's
    sub_buckets = {op.key for _, op in client_ops("sub:alice", policy).quotas}
    assert sub_buckets == {"by-subject:sub:alice", "by-client:sub:alice"} and sub_buckets <= set(planned)
    assert {op.key for _, op in client_ops("subnet:203.0.113.0/24", policy).quotas} == {"by-subnet:net:203.0.113.0/24"} <= set(planned)
    assert "by-ip:ip:203.0.113.7" in planned
    # the method that proved a subject can be named
    assert [op.key for _, op in client_ops("sub:signature:bots:alice", policy).reputation] == ["r:" + written["subject"]]
