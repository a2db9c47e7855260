"""The gRPC server over real sockets: every reason over the wire, malformed
requests, health, reflection, the admin API (on its own listener), and SIGTERM draining."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import address_pb2
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from authz.admin.v1 import admin_pb2, admin_pb2_grpc
from authz.errors import ConfigError
from authz.server.app import App
from authz.settings import Settings
from tests.support.admin import bearer, new_token
from tests.support.procs import start_authz

POLICY = Path(__file__).parent / "policies" / "grpc_server.yaml"
TOKEN = new_token()


@pytest.fixture
async def app(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    monkeypatch.setenv("AUTHZ_ADMIN_TOKENS", f"tests:{TOKEN}")
    a = App(Settings(config=str(POLICY), grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0", admin_listen="127.0.0.1:0", grace=1.0, drain=0.0))
    await a.start()
    yield a
    await a.stop()


@pytest.fixture
async def channel(app: App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        yield ch


def check(path: str, *, peer: str = "172.16.0.1", headers: dict[str, str] | None = None) -> external_auth_pb2.CheckRequest:
    return external_auth_pb2.CheckRequest(
        attributes=ac.AttributeContext(
            source=ac.AttributeContext.Peer(address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=peer, port_value=1))),
            request=ac.AttributeContext.Request(
                http=ac.AttributeContext.HttpRequest(method="GET", path=path, host="api.example.com", scheme="https", headers=headers or {})
            ),
        )
    )


@pytest.mark.parametrize(
    ("path", "peer", "headers", "code", "http_status", "reason"),
    [
        ("/v1/a", "172.16.0.1", {}, 0, 200, "ok"),
        ("/healthz", "172.16.0.1", {}, 0, 200, "ok"),
        ("/v1/a", "198.51.100.7", {}, 0, 200, "ok.ip_allowlisted"),
        ("/nowhere", "172.16.0.1", {}, 7, 403, "route.no_match"),
        ("/admin/x", "172.16.0.1", {}, 7, 403, "route.deny"),
        ("/v1/a", "192.0.2.1", {}, 7, 403, "ip.denied"),
        ("/office/a", "172.16.0.1", {}, 7, 403, "ip.not_allowed"),
        ("/v1/" + "a" * 3000, "172.16.0.1", {}, 3, 431, "request.too_large"),
        ("/v1/a", "172.16.0.1", {f"h{i}": "v" for i in range(40)}, 3, 431, "request.too_large"),
    ],
)
async def test_reason_over_the_wire(channel: grpc.aio.Channel, path: str, peer: str, headers: dict[str, str], code: int, http_status: int, reason: str) -> None:
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    resp = await stub.Check(check(path, peer=peer, headers=headers))
    assert resp.status.code == code
    assert resp.dynamic_metadata["reason"] == reason
    if code:
        assert resp.denied_response.status.code == http_status
        assert f'"error":"{reason}"' in resp.denied_response.body
        assert any(h.header.key == "x-authz-decision-id" for h in resp.denied_response.headers)


async def test_quota_exhausted_over_the_wire(channel: grpc.aio.Channel) -> None:
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    codes = [(await stub.Check(check("/v1/q", peer="172.16.1.1"))).status.code for _ in range(3)]
    assert codes == [0, 0, 8]
    resp = await stub.Check(check("/v1/q", peer="172.16.1.1"))
    assert resp.denied_response.status.code == 429
    assert {h.header.key for h in resp.denied_response.headers} >= {"retry-after", "ratelimit", "ratelimit-policy"}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xff\xff", "request.malformed"),  # not protobuf
        (external_auth_pb2.CheckRequest().SerializeToString(), "request.malformed"),  # no http attributes
        # a string field (http.method) holding invalid UTF-8, built by hand on the wire
        (bytes.fromhex("0a0c") + bytes.fromhex("2a0a") + bytes.fromhex("1a08") + b"\x12\x04\xff\xfeAB" + b"\x22\x00", "request.malformed"),
    ],
)
async def test_undecodable_requests_get_a_deny_not_an_error(channel: grpc.aio.Channel, payload: bytes, reason: str) -> None:
    call = channel.unary_unary(
        "/envoy.service.auth.v3.Authorization/Check",
        request_serializer=lambda b: b,
        response_deserializer=external_auth_pb2.CheckResponse.FromString,
    )
    resp = await call(payload)
    assert resp.status.code != 0
    assert resp.denied_response.status.code == 400
    assert resp.dynamic_metadata["reason"] == reason


async def test_health_reports_serving_for_every_service(app: App, channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", "envoy.service.auth.v3.Authorization", "envoy.service.accesslog.v3.AccessLogService"):
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, name


async def test_reflection_lists_every_service(app: App) -> None:
    def list_services() -> set[str]:
        # grpcio-reflection's client is synchronous: run it off the server's loop
        with grpc.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
            db = ProtoReflectionDescriptorDatabase(ch)
            services = set(db.get_services())
            # and the services' messages resolve through reflection, as grpcurl needs
            db.FindFileContainingSymbol("envoy.service.auth.v3.Authorization")
            return services

    services = await asyncio.to_thread(list_services)
    # the admin API is on the admin listener only
    assert services == {
        "envoy.service.auth.v3.Authorization",
        "envoy.service.accesslog.v3.AccessLogService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_admin_api_finds_decisions_by_id_and_filter(app: App, channel: grpc.aio.Channel) -> None:
    stub = external_auth_pb2_grpc.AuthorizationStub(channel)
    denied = await stub.Check(check("/%61dmin/x", peer="172.16.2.2"))
    decision_id = denied.dynamic_metadata["decision_id"]
    await stub.Check(check("/v1/fine", peer="172.16.2.3"))
    admin_channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.admin_port}")
    admin = admin_pb2_grpc.DecisionsStub(admin_channel)
    md = bearer(TOKEN)
    got = await admin.GetDecision(admin_pb2.GetDecisionRequest(id=decision_id), metadata=md)
    assert (got.reason, got.http_status, got.route, got.client_ip, got.door) == ("route.deny", 403, "admin", "172.16.2.2", "grpc")
    assert (got.path, got.route_path) == ("/%61dmin/x", "/admin/x")  # as sent, and as routed
    listed = await admin.ListDecisions(admin_pb2.ListDecisionsRequest(filter=admin_pb2.DecisionFilter(outcome="allow")), metadata=md)
    assert [d.path for d in listed.decisions] == ["/v1/fine"]
    listed = await admin.ListDecisions(admin_pb2.ListDecisionsRequest(filter=admin_pb2.DecisionFilter(reason="route.")), metadata=md)
    assert [d.id for d in listed.decisions] == [decision_id]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await admin.GetDecision(admin_pb2.GetDecisionRequest(id="nope"), metadata=md)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    await admin_channel.close()


async def test_reload_keeps_running_policy_when_new_file_is_bad(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.read_text())
    a = App(Settings(config=str(policy), grpc_listen="127.0.0.1:0", http_listen="127.0.0.1:0", drain=0.0))
    await a.start()
    try:
        policy.write_text("version: 1\nroutes:\n  - {name: only, action: deny}\n")
        assert a.reload() is True
        assert [r.name for r in a.engine.policy.routes] == ["only"]
        policy.write_text("version: 1\nroutes: [{name: x, action: nope}]\n")
        assert a.reload() is False
        assert [r.name for r in a.engine.policy.routes] == ["only"]
    finally:
        await a.stop()


def test_sigterm_drains_answers_in_flight_checks_and_exits_0() -> None:
    proc, port = start_authz(POLICY, "--drain", "1.5", "--grace", "2")
    with proc:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = external_auth_pb2_grpc.AuthorizationStub(ch)
            health = health_pb2_grpc.HealthStub(ch)
            futures = [stub.Check.future(check("/healthz"), timeout=5) for _ in range(200)]
            proc.signal(signal.SIGTERM)
            # every check sent before SIGTERM is answered
            assert all(f.result().status.code == 0 for f in futures)
            # while draining: health says NOT_SERVING and checks are still answered
            deadline = time.monotonic() + 1.0
            status = None
            while time.monotonic() < deadline:
                status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
                if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                time.sleep(0.05)
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert stub.Check(check("/healthz"), timeout=2).status.code == 0
        assert proc.popen is not None
        assert proc.popen.wait(timeout=10) == 0
    assert "authz stopped" in proc.log_text()


async def test_a_second_process_cannot_take_a_port_in_use(app: App) -> None:
    # Two memory stores behind one port would split nonces and buckets between
    # them, so the second start must fail with a clear message.
    other = App(Settings(config=str(POLICY), grpc_listen=f"127.0.0.1:{app.grpc_port}", http_listen=""))
    with pytest.raises(ConfigError, match=rf"cannot listen on 127.0.0.1:{app.grpc_port} \(in use"):
        await other.start()
