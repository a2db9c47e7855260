"""The admin listener over real sockets: authentication, audit, decisions (filters, watch, explain),
clients and the policy, against an ``App`` with the memory store and against a real redis-server.

The ext_authz listener serves none of it; explain changes no state (the
memory store's data and every Redis key's DUMP are the same afterwards);
admin tokens never reach a log, the decision log or an answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis as redis_lib
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from authz.admin.v1 import admin_pb2, admin_pb2_grpc
from authz.errors import ConfigError
from authz.httpsig import sign_request
from authz.server import tls
from authz.server.app import App
from authz.settings import Settings
from tests.support.admin import bearer, bearer_channel, new_token, reflected_call, write_tokens
from tests.support.certs import Authority
from tests.support.redis import RedisServer

HOST = "api.example.com"
POLICY = """
version: 1
keys_file: keys.yaml
trusted_proxies: [127.0.0.1/32]
signatures:
  bots: {clock_skew: 1s}
quotas:
  per-ip: {limit: 5, window: 1m, by: ip, cooldown: {after: 1, base: 10s}}
  per-client: {limit: 100, window: 1m, by: client}
reputation: {half_life: 10m}
routes:
  - {name: health, match: {path: {exact: /healthz}}, action: allow}
  - name: api
    match: {path: {prefix: /v1/}}
    auth: [anonymous]
    quota: [per-ip, per-client]
    reputation: {actions: [{at: 95, do: deny}]}
  - {name: signed, match: {path: {prefix: /signed/}}, auth: ["signature:bots"], reputation: {}}
"""
ADMIN_SERVICES = {"authz.admin.v1.Decisions", "authz.admin.v1.Clients", "authz.admin.v1.Policy", "grpc.health.v1.Health"}
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"


@dataclass
class Env:
    dir: Path
    policy: Path
    tokens: Path
    token: str
    key: ed25519.Ed25519PrivateKey
    log: Path


@pytest.fixture
def env(tmp_path: Path) -> Env:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (tmp_path / "keys.yaml").write_text(
        "keys:\n  - id: bot\n    algorithm: ed25519\n    public_key: |\n" + "".join(f"      {line}\n" for line in pem.splitlines())
    )
    (tmp_path / "policy.yaml").write_text(POLICY)
    token = new_token()
    tokens = write_tokens(tmp_path / "tokens", {"ops": token, "other": new_token()})
    return Env(tmp_path, tmp_path / "policy.yaml", tokens, token, key, tmp_path / "decisions.jsonl")


def settings(env: Env, **over: Any) -> Settings:
    base: dict[str, Any] = {
        "config": str(env.policy), "grpc_listen": "127.0.0.1:0", "http_listen": "", "admin_listen": "127.0.0.1:0",
        "admin_tokens_file": str(env.tokens), "decision_log": str(env.log), "drain": 0.0, "grace": 1.0, "watch": False,
    }  # fmt: skip
    base.update(over)
    return Settings(**base)


@pytest.fixture
async def app(env: Env) -> AsyncIterator[App]:
    a = App(settings(env))
    await a.start()
    yield a
    await a.stop()
    tls.forget_all()


@pytest.fixture
async def admin(app: App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.admin_port}") as ch:
        yield ch


@pytest.fixture
async def ext(app: App) -> AsyncIterator[external_auth_pb2_grpc.AuthorizationStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        yield external_auth_pb2_grpc.AuthorizationStub(ch)


def check(path: str, *, peer: str = "172.16.0.1", headers: dict[str, str] | None = None, method: str = "GET") -> external_auth_pb2.CheckRequest:
    entries = [base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in (headers or {}).items()]
    return external_auth_pb2.CheckRequest(
        attributes=ac.AttributeContext(
            source=ac.AttributeContext.Peer(address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=peer, port_value=1))),
            request=ac.AttributeContext.Request(
                http=ac.AttributeContext.HttpRequest(method=method, path=path, host=HOST, scheme="https", header_map=base_pb2.HeaderMap(headers=entries))
            ),
        )
    )


def signed(env: Env, path: str, peer: str = "172.16.9.9") -> external_auth_pb2.CheckRequest:
    headers = dict(sign_request("GET", f"https://{HOST}{path}", [], key_id="bot", algorithm="ed25519", key=env.key))
    return check(path, peer=peer, headers={k.lower(): v for k, v in headers.items()})


def reason(resp: Any) -> str:
    return str(resp.dynamic_metadata.fields["reason"].string_value)


# -- the listeners -----------------------------------------------------------------------------


def _services(port: int, token: str | None) -> set[str]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as raw:
        ch = bearer_channel(raw, token) if token else raw
        return set(ProtoReflectionDescriptorDatabase(ch).get_services())


async def test_admin_services_are_on_the_admin_listener_only(app: App, env: Env) -> None:
    assert await asyncio.to_thread(_services, app.admin_port, env.token) == {*ADMIN_SERVICES, REFLECTION}
    assert await asyncio.to_thread(_services, app.grpc_port, None) == {
        "envoy.service.auth.v3.Authorization", "envoy.service.accesslog.v3.AccessLogService", "grpc.health.v1.Health", REFLECTION,
    }  # fmt: skip
    # and the admin methods are not answered there
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await admin_pb2_grpc.DecisionsStub(ch).ListDecisions(admin_pb2.ListDecisionsRequest(), metadata=bearer(env.token), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_reflection_builds_dynamic_messages_and_lists_decisions(app: App, env: Env, ext: Any) -> None:
    await ext.Check(check("/v1/reflected", peer="172.16.0.44"))

    def call() -> dict[str, Any]:
        with grpc.insecure_channel(f"127.0.0.1:{app.admin_port}") as raw:
            return reflected_call(bearer_channel(raw, env.token), "/authz.admin.v1.Decisions/ListDecisions", '{"limit": 5, "filter": {"client_ip": "172.16.0.44"}}')

    reply = await asyncio.to_thread(call)
    assert [d["path"] for d in reply["decisions"]] == ["/v1/reflected"]
    assert reply["decisions"][0]["reason_text"] == "Every check of the route passed."


# -- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        (bearer("azt_not-a-token-of-this-server"), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Basic b3BzOnNlY3JldA=="),), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer"),), grpc.StatusCode.UNAUTHENTICATED),
    ],
)
async def test_calls_without_a_valid_token_are_refused(admin: grpc.aio.Channel, env: Env, metadata: Any, code: grpc.StatusCode) -> None:
    stub = admin_pb2_grpc.PolicyStub(admin)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ShowPolicy(admin_pb2.ShowPolicyRequest(), metadata=metadata, timeout=5)
    assert info.value.code() == code
    assert env.token not in (info.value.details() or "")
    assert "not-a-token" not in (info.value.details() or "")
    # a reload needs a credential too: nothing changed
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.ReloadPolicy(admin_pb2.ReloadPolicyRequest(), metadata=metadata, timeout=5)


async def test_every_configured_token_works_and_health_needs_none(app: App, admin: grpc.aio.Channel, env: Env) -> None:
    other = env.tokens.read_text().splitlines()[1].partition(":")[2]
    for token in (env.token, other):
        info = await admin_pb2_grpc.PolicyStub(admin).ShowPolicy(admin_pb2.ShowPolicyRequest(), metadata=bearer(token), timeout=5)
        assert info.version == app.engine.policy.version
    # reflection needs the token; health answers probes without one
    with pytest.raises(grpc.RpcError) as refused:
        await asyncio.to_thread(_services, app.admin_port, None)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    health = await health_pb2_grpc.HealthStub(admin).Check(health_pb2.HealthCheckRequest(service="authz.admin.v1.Decisions"), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_tokens_from_the_environment(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    token = new_token()
    monkeypatch.setenv("AUTHZ_ADMIN_TOKENS", f"robot:{token}")
    a = App(settings(env, admin_tokens_file=""))
    await a.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{a.admin_port}") as ch:
            await admin_pb2_grpc.PolicyStub(ch).ReloadPolicy(admin_pb2.ReloadPolicyRequest(), metadata=bearer(token), timeout=5)
    finally:
        await a.stop()
    assert a.audit.count == 1
    audit = [json.loads(line) for line in env.log.read_text().splitlines() if '"event":"audit"' in line]
    assert [(r["who"], r["auth"], r["action"]) for r in audit] == [("robot", "token", "policy.reload")]


async def test_without_a_credential_the_admin_listener_stays_off(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    a = App(settings(env, admin_tokens_file=""))
    await a.start()
    try:
        assert a.admin_server is None and a.admin_port == 0
    finally:
        await a.stop()
    assert "admin listener 127.0.0.1:0 not started: no admin credential is configured" in caplog.text


async def test_insecure_no_auth_is_loopback_only_and_logged(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="loopback address only"):
        App(settings(env, admin_tokens_file="", admin_listen="0.0.0.0:0", admin_insecure_no_auth=True))
    a = App(settings(env, admin_tokens_file="", admin_insecure_no_auth=True))
    await a.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{a.admin_port}") as ch:
            await admin_pb2_grpc.PolicyStub(ch).ShowPolicy(admin_pb2.ShowPolicyRequest(), timeout=5)
    finally:
        await a.stop()
    assert "INSECURE: the admin API on 127.0.0.1:0 accepts every caller" in caplog.text


async def test_a_bad_tokens_file_refuses_the_start_without_quoting_it(env: Env) -> None:
    env.tokens.write_text("ops:short\n")
    with pytest.raises(ConfigError, match=r"tokens\[0\]: the token of 'ops' must be at least 16") as info:
        App(settings(env))
    assert "short" not in str(info.value).replace("'ops' must", "")


async def test_mtls_admits_certificates_of_the_ca_and_names_the_caller_by_cn(env: Env, tmp_path: Path) -> None:
    ca = Authority(tmp_path, "admin-ca")
    server = ca.issue("admin-server", ips=("127.0.0.1",))
    alice = ca.issue("alice", client=True)
    stranger = Authority(tmp_path, "other-ca").issue("mallory", client=True)
    a = App(settings(env, admin_tokens_file="", admin_tls_cert=str(server.cert), admin_tls_key=str(server.key), admin_client_ca=str(ca.path)))
    await a.start()
    try:
        def creds(who: Any) -> grpc.ChannelCredentials:
            return grpc.ssl_channel_credentials(ca.path.read_bytes(), who.key.read_bytes() if who else None, who.cert.read_bytes() if who else None)

        opts = [("grpc.ssl_target_name_override", "authz.internal")]
        for who in (None, stranger):  # no certificate, or one of another CA: the handshake fails
            async with grpc.aio.secure_channel(f"127.0.0.1:{a.admin_port}", creds(who), options=opts) as ch:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await admin_pb2_grpc.PolicyStub(ch).ShowPolicy(admin_pb2.ShowPolicyRequest(), timeout=5)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.secure_channel(f"127.0.0.1:{a.admin_port}", creds(alice), options=opts) as ch:
            reply = await admin_pb2_grpc.PolicyStub(ch).ReloadPolicy(admin_pb2.ReloadPolicyRequest(), timeout=5)
            assert reply.result == "unchanged"
    finally:
        await a.stop()
        tls.forget_all()
    audit = [json.loads(line) for line in env.log.read_text().splitlines() if '"event":"audit"' in line]
    assert [(r["who"], r["auth"]) for r in audit] == [("alice", "certificate")]


# -- decisions ------------------------------------------------------------------------------------


async def test_list_filters_by_identity_reason_and_time(app: App, admin: grpc.aio.Channel, env: Env, ext: Any) -> None:
    await asyncio.sleep(2.1)  # clock_skew 1 s: a signature made 1 s after the store's epoch began
    t0 = int(time.time() * 1000) - 1
    await ext.Check(check("/v1/a", peer="172.16.3.1"))
    await ext.Check(check("/nowhere", peer="172.16.3.2"))
    assert reason(await ext.Check(signed(env, "/signed/x"))) == "ok"
    stub = admin_pb2_grpc.DecisionsStub(admin)
    md = bearer(env.token)

    async def paths(**f: Any) -> list[str]:
        reply = await stub.ListDecisions(admin_pb2.ListDecisionsRequest(filter=admin_pb2.DecisionFilter(**f)), metadata=md, timeout=5)
        return [d.path for d in reply.decisions]

    assert await paths(identity="ip:172.16.3.1") == ["/v1/a"]
    assert await paths(identity="172.16.3.2") == ["/nowhere"]
    assert await paths(reason="route.") == ["/nowhere"]
    assert await paths(since_ms=t0, until_ms=t0 + 60_000, route="api") == ["/v1/a"]
    assert await paths(until_ms=t0) == []
    assert await paths(identity="key:bot") == ["/signed/x"]
    for bad in ({"outcome": "maybe"}, {"identity": "planet:mars"}, {"since_ms": 10, "until_ms": 5}):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await paths(**bad)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    got = await stub.ListDecisions(admin_pb2.ListDecisionsRequest(filter=admin_pb2.DecisionFilter(route="api")), metadata=md, timeout=5)
    d = got.decisions[0]
    assert (d.policy_version, d.reason_text) == (app.engine.policy.version, "Every check of the route passed.")
    assert d.score == pytest.approx(d.score) and any(s.name == "reputation.score" for s in d.signals)


async def registered(app: App, n: int = 1) -> None:
    """Wait (bounded) until the server holds ``n`` watchers: a stream's call has reached it."""
    for _ in range(500):
        if len(app.watchers) == n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(app.watchers)} watchers, not {n}")


async def test_watch_sends_new_matching_decisions(app: App, admin: grpc.aio.Channel, env: Env, ext: Any) -> None:
    stub = admin_pb2_grpc.DecisionsStub(admin)
    call = stub.WatchDecisions(admin_pb2.WatchDecisionsRequest(filter=admin_pb2.DecisionFilter(outcome="deny")), metadata=bearer(env.token), timeout=10)
    await registered(app)
    await ext.Check(check("/nowhere/first", peer="172.16.4.1"))
    first = await asyncio.wait_for(call.read(), 5)
    assert first.decision.reason == "route.no_match"
    await ext.Check(check("/v1/fine", peer="172.16.4.2"))  # an allow: filtered out
    await ext.Check(check("/nowhere/second", peer="172.16.4.3"))
    second = await asyncio.wait_for(call.read(), 5)
    assert (second.decision.path, second.dropped) == ("/nowhere/second", 0)
    call.cancel()
    await registered(app, 0)  # the watcher goes with its caller


async def test_a_watcher_that_never_reads_loses_decisions_and_never_slows_checks(app: App, admin: grpc.aio.Channel, env: Env, ext: Any) -> None:
    # a client that asks for the stream and never reads it: the window fills, then the queue
    lazy = grpc.aio.insecure_channel(
        f"127.0.0.1:{app.admin_port}", options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
    )
    call = admin_pb2_grpc.DecisionsStub(lazy).WatchDecisions(admin_pb2.WatchDecisionsRequest(), metadata=bearer(env.token))
    try:
        await registered(app)
        n = app.watchers.size * 3
        replies: list[Any] = []
        for start in range(0, n, 200):  # 200 checks in flight at a time, as a busy proxy sends them
            batch = [check("/healthz", peer=f"172.17.{i // 250}.{i % 250 + 1}") for i in range(start, min(start + 200, n))]
            replies += await asyncio.gather(*(ext.Check(req, timeout=10) for req in batch))
        assert len(replies) == n and all(r.status.code == 0 for r in replies)  # every check answered
        (watcher,) = app.watchers._watchers
        assert watcher.dropped > 0
        assert len(watcher.queue) <= app.watchers.size
    finally:
        call.cancel()
        await lazy.close()


async def test_get_decision_by_id(admin: grpc.aio.Channel, env: Env, ext: Any) -> None:
    resp = await ext.Check(check("/nowhere/x", peer="172.16.5.1"))
    decision_id = resp.dynamic_metadata.fields["decision_id"].string_value
    got = await admin_pb2_grpc.DecisionsStub(admin).GetDecision(admin_pb2.GetDecisionRequest(id=decision_id), metadata=bearer(env.token), timeout=5)
    assert (got.id, got.reason, got.http_status) == (decision_id, "route.no_match", 403)


# -- explain -----------------------------------------------------------------------------------


def memory_state(app: App) -> bytes:
    return pickle.dumps(sorted(app.store._data.items()))  # type: ignore[attr-defined]


async def test_explain_answers_as_the_door_would_and_changes_nothing(app: App, admin: grpc.aio.Channel, env: Env, ext: Any) -> None:
    await asyncio.sleep(2.1)  # clock_skew 1 s: a signature made 1 s after the store's epoch began
    used = signed(env, "/signed/used")
    assert reason(await ext.Check(used)) == "ok"
    fresh = signed(env, "/signed/fresh")
    for _ in range(3):
        await ext.Check(check("/v1/items/1", peer="172.16.6.6", headers={"user-agent": "curl/8"}))
    await app.engine.settle()
    await app.decisions.flush()
    state, ring, logged = memory_state(app), len(app.decisions.ring), env.log.read_bytes()
    stub = admin_pb2_grpc.DecisionsStub(admin)
    md = bearer(env.token)

    async def explain(req: external_auth_pb2.CheckRequest) -> admin_pb2.ExplainResponse:
        as_json = json_format.MessageToJson(req)
        reply: admin_pb2.ExplainResponse = await stub.Explain(admin_pb2.ExplainRequest(check_request_json=as_json), metadata=md, timeout=5)
        return reply

    quota = await explain(check("/v1/items/2", peer="172.16.6.6", headers={"user-agent": "curl/8"}))
    assert (quota.decision.outcome, quota.decision.reason, quota.decision.route) == ("allow", "ok", "api")
    assert quota.decision.id.startswith("explain-")
    stages = {s.stage: s for s in quota.stages}
    assert list(stages) == ["route", "identify", "authenticate", "challenge", "plan", "apply", "judge", "respond"]
    assert (stages["route"].verdict, stages["authenticate"].detail, stages["apply"].verdict) == ("matched", "anonymous", "answered")
    judged = {s.name: s.value for s in stages["judge"].signals}
    assert judged["TakeTokens per-ip:ip:172.16.6.6 (cost 1)"].startswith("allowed, 1 left")  # 5 - 3 - this one
    assert any(h.name == "ratelimit" for h in quota.headers)
    replay = await explain(used)
    assert replay.decision.reason == "sig.replay"
    assert [s.verdict for s in replay.stages if s.stage == "judge"] == ["refused"]
    assert (await explain(fresh)).decision.reason == "ok"
    described = await stub.Explain(
        admin_pb2.ExplainRequest(request=admin_pb2.HttpRequest(method="GET", host=HOST, path="/nowhere?x=1", source_address="172.16.6.7")),
        metadata=md, timeout=5,
    )  # fmt: skip
    assert (described.decision.reason, described.stages[0].verdict) == ("route.no_match", "none")
    malformed = await stub.Explain(admin_pb2.ExplainRequest(request=admin_pb2.HttpRequest(method="G T", host=HOST, path="/v1/x", source_address="172.16.6.7")), metadata=md, timeout=5)
    assert malformed.decision.reason == "request.malformed"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Explain(admin_pb2.ExplainRequest(check_request_json='{"attributes": 7}'), metadata=md, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await app.engine.settle()
    await app.decisions.flush()
    assert memory_state(app) == state  # quota, nonce and reputation state byte for byte
    assert (len(app.decisions.ring), env.log.read_bytes()) == (ring, logged)
    # the fresh signature was not claimed by its explanation: it passes once, for real
    assert reason(await ext.Check(fresh)) == "ok"
    assert reason(await ext.Check(fresh)) == "sig.replay"


def redis_dump(port: int) -> dict[bytes, bytes]:
    r = redis_lib.Redis(host="127.0.0.1", port=port)
    try:
        return {key: r.dump(key) for key in sorted(r.scan_iter(count=1000))}
    finally:
        r.close()


async def test_explain_changes_no_redis_key(env: Env) -> None:
    with RedisServer() as server:
        a = App(settings(env, store=server.url, store_deadline=500))
        await a.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{a.grpc_port}") as ch1, grpc.aio.insecure_channel(f"127.0.0.1:{a.admin_port}") as ch2:
                ext = external_auth_pb2_grpc.AuthorizationStub(ch1)
                await asyncio.sleep(2.1)  # the store's epoch is behind the signatures' creation
                used = signed(env, "/signed/used")
                assert reason(await ext.Check(used)) == "ok"
                for _ in range(6):  # past per-ip's 5: a cooldown and its strikes exist
                    await ext.Check(check("/v1/items/1", peer="172.16.7.7"))
                await a.engine.settle()
                before = await asyncio.to_thread(redis_dump, server.port)
                assert any(b"q:per-ip" in k for k in before) and any(b"cd:per-ip" in k for k in before)
                assert any(b"}r" in k for k in before) and any(b"n:" in k for k in before)
                stub = admin_pb2_grpc.DecisionsStub(ch2)
                reasons = []
                for req in (check("/v1/items/2", peer="172.16.7.7"), check("/v1/items/3", peer="172.16.7.8"), used, signed(env, "/signed/new")):
                    reply = await stub.Explain(admin_pb2.ExplainRequest(check_request_json=json_format.MessageToJson(req)), metadata=bearer(env.token), timeout=5)
                    assert reply.decision.id.startswith("explain-")
                    reasons.append(reply.decision.reason)
                assert reasons == ["quota.cooldown", "ok", "sig.replay", "ok"]
                await a.engine.settle()
                assert await asyncio.to_thread(redis_dump, server.port) == before
        finally:
            await a.stop()


# -- clients -------------------------------------------------------------------------------------


async def test_show_and_reset_a_client(app: App, admin: grpc.aio.Channel, env: Env, ext: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="authz.audit")
    for _ in range(7):
        await ext.Check(check("/v1/items/1", peer="172.16.8.8", headers={"user-agent": "python-requests/2"}))
    await app.engine.settle()
    stub = admin_pb2_grpc.ClientsStub(admin)
    md = bearer(env.token)
    state = await stub.ShowClient(admin_pb2.ClientRequest(identity="ip:172.16.8.8"), metadata=md, timeout=5)
    quotas = {q.quota: q for q in state.quotas}
    assert set(quotas) == {"per-ip", "per-client"}
    assert (quotas["per-ip"].key, quotas["per-ip"].capacity, quotas["per-ip"].remaining) == ("per-ip:ip:172.16.8.8", 5, 0)
    assert quotas["per-ip"].cooldown_ms > 0 and quotas["per-ip"].strikes >= 1
    assert quotas["per-client"].remaining == 95  # the refused batches spent nothing
    assert state.requests >= 6 and state.score > 0
    assert "quota.cooldown" in {s.name for s in state.signals}  # what the refusals revealed
    # the shown state is read without changing it
    again = await stub.ShowClient(admin_pb2.ClientRequest(identity="ip:172.16.8.8"), metadata=md, timeout=5)
    def counts(s: admin_pb2.ClientState) -> list[tuple[str, str, int, int]]:
        return [(q.quota, q.key, q.remaining, q.strikes) for q in s.quotas]

    assert counts(again) == counts(state) and again.requests == pytest.approx(state.requests, abs=0.01)
    subnet = await stub.ShowClient(admin_pb2.ClientRequest(identity="subnet:172.16.8.0/24"), metadata=md, timeout=5)
    assert subnet.requests >= 6
    reset = await stub.ResetClient(admin_pb2.ClientRequest(identity="ip:172.16.8.8"), metadata=md, timeout=5)
    assert reset.removed >= 3  # reputation, the per-ip bucket and its cooldown, the per-client bucket
    after = await stub.ShowClient(admin_pb2.ClientRequest(identity="ip:172.16.8.8"), metadata=md, timeout=5)
    assert (after.score, after.requests) == (0, 0)
    assert {q.quota: q.remaining for q in after.quotas} == {"per-ip": 5, "per-client": 100}
    assert reason(await ext.Check(check("/v1/items/2", peer="172.16.8.8"))) == "ok"
    assert "audit: client.reset ip:172.16.8.8 by ops (token)" in caplog.text
    for bad in ("planet:mars", "ip:999.1.1.1", "subnet:172.16.8.0/16", "subnet6:172.16.8.0/24", "nokind", "sub:"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ShowClient(admin_pb2.ClientRequest(identity=bad), metadata=md, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        if ":" not in bad or bad.startswith("planet"):
            assert "ip, subnet, subnet6, sub, key, session, device" in (info.value.details() or "")


# -- policy ------------------------------------------------------------------------------------------


async def test_show_validate_and_reload_the_policy(app: App, admin: grpc.aio.Channel, env: Env) -> None:
    stub = admin_pb2_grpc.PolicyStub(admin)
    md = bearer(env.token)
    shown = await stub.ShowPolicy(admin_pb2.ShowPolicyRequest(), metadata=md, timeout=5)
    assert (shown.file, list(shown.routes), shown.text) == (str(env.policy), ["health", "api", "signed"], POLICY)
    assert abs(shown.loaded_at_ms - time.time() * 1000) < 60_000
    # a candidate naming the keys file beside the running policy compiles
    ok = await stub.ValidatePolicy(admin_pb2.ValidatePolicyRequest(text=POLICY.replace("per-ip, per-client", "per-client")), metadata=md, timeout=5)
    assert ok.ok and ok.version and list(ok.routes) == ["health", "api", "signed"]
    bad = await stub.ValidatePolicy(admin_pb2.ValidatePolicyRequest(text=POLICY.replace("limit: 5", "limit: 0"), file_name="next.yaml"), metadata=md, timeout=5)
    assert not bad.ok and bad.error.startswith("next.yaml:8: quotas.per-ip.limit: ")
    assert app.engine.policy.version == shown.version  # validating swaps nothing
    env.policy.write_text(POLICY.replace("limit: 100", "limit: 200"))
    loaded = await stub.ReloadPolicy(admin_pb2.ReloadPolicyRequest(), metadata=md, timeout=5)
    assert (loaded.result, loaded.version) == ("loaded", app.engine.policy.version)
    env.policy.write_text("version: 1\nroutes: [{name: x, action: nope}]\n")
    refused = await stub.ReloadPolicy(admin_pb2.ReloadPolicyRequest(), metadata=md, timeout=5)
    assert refused.result == "refused" and "routes[0].action" in refused.error
    shown = await stub.ShowPolicy(admin_pb2.ShowPolicyRequest(), metadata=md, timeout=5)
    assert shown.version == loaded.version and "routes[0].action" in shown.last_reload_error
    await app.decisions.flush()
    audit = [json.loads(line) for line in env.log.read_text().splitlines() if '"event":"audit"' in line]
    assert [(r["who"], r["action"], r["result"]) for r in audit] == [("ops", "policy.reload", "loaded"), ("ops", "policy.reload", "refused")]
    assert all(r["peer"].startswith("ipv4:127.0.0.1:") and r["time_ms"] > 0 for r in audit)


async def test_no_token_in_any_log_or_answer(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    a = App(settings(env))
    await a.start()
    answers = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{a.admin_port}") as ch:
            md = bearer(env.token)
            answers.append(await admin_pb2_grpc.PolicyStub(ch).ShowPolicy(admin_pb2.ShowPolicyRequest(), metadata=md, timeout=5))
            answers.append(await admin_pb2_grpc.PolicyStub(ch).ReloadPolicy(admin_pb2.ReloadPolicyRequest(), metadata=md, timeout=5))
            answers.append(await admin_pb2_grpc.DecisionsStub(ch).ListDecisions(admin_pb2.ListDecisionsRequest(), metadata=md, timeout=5))
            for wrong in (env.token[:-1], env.token + "x"):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await admin_pb2_grpc.PolicyStub(ch).ShowPolicy(admin_pb2.ShowPolicyRequest(), metadata=bearer(wrong), timeout=5)
                answers.append(info.value.details())
    finally:
        await a.stop()
    secret_part = env.token[4:]
    for text in (caplog.text, env.log.read_text(), *(str(x) for x in answers)):
        assert secret_part not in text
        assert secret_part[:-1] not in text
