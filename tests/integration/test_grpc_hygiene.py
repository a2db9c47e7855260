"""The gRPC listeners' other services under bad input, over real sockets to ``authz serve``.

Health/List answers every service; undecodable bytes to the admin API (on the
admin listener, with a token), health and reflection get INVALID_ARGUMENT (not
UNKNOWN); unknown methods get UNIMPLEMENTED, oversized messages
RESOURCE_EXHAUSTED; and none of it leaves a traceback in authz's log. grpcurl
(the test extras' binary) lists the services by reflection on each listener,
the admin services on the admin listener only, and calls Health/List, decision
listing, watching and explaining as an operator would.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import address_pb2
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.admin.v1 import admin_pb2, admin_pb2_grpc
from authz.server.app import App
from authz.settings import Settings
from tests.support.admin import bearer, new_token
from tests.support.procs import LOOPBACK, Proc, start_authz, venv_bin

POLICY = Path(__file__).parent / "policies" / "grpc_server.yaml"
TOKEN = new_token()
SERVICES = {
    "envoy.service.auth.v3.Authorization",
    "envoy.service.accesslog.v3.AccessLogService",
    "grpc.health.v1.Health",
}
ADMIN_SERVICES = {"authz.admin.v1.Decisions", "authz.admin.v1.Clients", "authz.admin.v1.Policy", "grpc.health.v1.Health"}
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
#: what Health/List names: the server (""), each service, and the store as a component
HEALTH_NAMES = {"", "authz.store", *SERVICES}
#: what grpcio writes when a servicer or a deserializer raises
LOG_NEEDLES = ("Traceback", "Exception deserializing", "Unexpected [", " ERROR ")


@pytest.fixture(scope="module")
def authz() -> Iterator[Proc]:
    proc, _port = start_authz(POLICY, "--no-http", env={"AUTHZ_ADMIN_TOKENS": f"tests:{TOKEN}"})
    with proc:
        yield proc


@pytest.fixture
def channel(authz: Proc) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"{LOOPBACK}:{authz.ports['grpc']}") as ch:
        yield ch


@pytest.fixture
def admin(authz: Proc) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"{LOOPBACK}:{authz.ports['admin']}") as ch:
        yield ch


@pytest.fixture
def clean_log(authz: Proc) -> Iterator[None]:
    """Fails the test if authz logged a traceback or an error while it ran."""
    before = len(authz.log_text())
    yield
    added = authz.log_text()[before:]
    found = [n for n in LOG_NEEDLES if n in added]
    assert not found, f"authz logged {found}:\n{added[-3000:]}"


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def raw_unary(channel: grpc.Channel, method: str, payload: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.RpcError | bytes:
    call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        return bytes(call(payload, timeout=5, metadata=metadata))
    except grpc.RpcError as exc:
        return exc


def test_health_list_answers_every_service_serving(channel: grpc.Channel, clean_log: None) -> None:
    reply = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=5)
    assert {name: s.status for name, s in reply.statuses.items()} == {
        name: health_pb2.HealthCheckResponse.SERVING for name in HEALTH_NAMES
    }


async def test_health_list_follows_the_status_when_draining() -> None:
    app = App(Settings(config=str(POLICY), grpc_listen="127.0.0.1:0", http_listen="", admin_listen=""))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            await app._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
            reply = await stub.List(health_pb2.HealthListRequest(), timeout=5)
            assert set(reply.statuses) == HEALTH_NAMES
            # the server and its services follow the drain; the store's status is the store's
            assert {reply.statuses[name].status for name in {"", *SERVICES}} == {health_pb2.HealthCheckResponse.NOT_SERVING}
            assert reply.statuses["authz.store"].status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await app.stop()


async def test_an_exception_in_an_admin_method_is_internal_and_logged_without_its_message(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHZ_ADMIN_TOKENS", f"tests:{TOKEN}")
    app = App(Settings(config=str(POLICY), grpc_listen="127.0.0.1:0", http_listen="", admin_listen="127.0.0.1:0"))
    await app.start()

    def broken(decision_id: str) -> None:
        raise RuntimeError(f"boom {decision_id}")

    app.decisions.get = broken  # type: ignore[method-assign]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.admin_port}") as ch:
            stub = admin_pb2_grpc.DecisionsStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetDecision(admin_pb2.GetDecisionRequest(id="secret-token-123"), timeout=5, metadata=bearer(TOKEN))
            assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INTERNAL, "internal error")
    finally:
        await app.stop()
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(logged) == 1 and "internal error in /authz.admin.v1.Decisions/GetDecision" in logged[0], logged
    assert "RuntimeError (message withheld)" in logged[0]
    assert "secret-token-123" not in caplog.text


# a corrupt wire format, and a string field (field 1) holding invalid UTF-8
CORRUPT = b"\xff\xff\xff"
BAD_UTF8 = b"\x0a\x02\xff\xfe"


@pytest.mark.parametrize(
    ("listener", "method", "payload", "message_type"),
    [
        ("admin", "/authz.admin.v1.Decisions/GetDecision", CORRUPT, "authz.admin.v1.GetDecisionRequest"),
        ("admin", "/authz.admin.v1.Decisions/GetDecision", BAD_UTF8, "authz.admin.v1.GetDecisionRequest"),
        ("admin", "/authz.admin.v1.Decisions/ListDecisions", CORRUPT, "authz.admin.v1.ListDecisionsRequest"),
        # ListDecisionsRequest field 2 is the filter; its field 1 the outcome string
        ("admin", "/authz.admin.v1.Decisions/ListDecisions", b"\x12\x04\x0a\x02\xc3\x28", "authz.admin.v1.ListDecisionsRequest"),
        ("admin", "/authz.admin.v1.Decisions/Explain", CORRUPT, "authz.admin.v1.ExplainRequest"),
        ("admin", "/authz.admin.v1.Clients/ShowClient", BAD_UTF8, "authz.admin.v1.ClientRequest"),
        ("admin", "/authz.admin.v1.Clients/ResetClient", CORRUPT, "authz.admin.v1.ClientRequest"),
        ("admin", "/authz.admin.v1.Policy/ValidatePolicy", BAD_UTF8, "authz.admin.v1.ValidatePolicyRequest"),
        ("admin", "/authz.admin.v1.Policy/ReloadPolicy", CORRUPT, "authz.admin.v1.ReloadPolicyRequest"),
        ("admin", "/grpc.health.v1.Health/Check", BAD_UTF8, "grpc.health.v1.HealthCheckRequest"),
        ("grpc", "/grpc.health.v1.Health/Check", BAD_UTF8, "grpc.health.v1.HealthCheckRequest"),
        ("grpc", "/grpc.health.v1.Health/List", CORRUPT, "grpc.health.v1.HealthListRequest"),
    ],
)
def test_undecodable_bytes_get_invalid_argument_and_no_traceback(
    authz: Proc, clean_log: None, listener: str, method: str, payload: bytes, message_type: str
) -> None:
    with grpc.insecure_channel(f"{LOOPBACK}:{authz.ports[listener]}") as ch:
        got = raw_unary(ch, method, payload, bearer(TOKEN) if listener == "admin" else ())
    assert isinstance(got, grpc.RpcError), got
    assert got.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert got.details().startswith(f"request is not a valid {message_type}: ")


def test_undecodable_bytes_to_streaming_methods_get_invalid_argument(channel: grpc.Channel, clean_log: None) -> None:
    watch = channel.unary_stream("/grpc.health.v1.Health/Watch", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as info:
        list(watch(BAD_UTF8, timeout=5))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reflect = channel.stream_stream(
        f"/{REFLECTION}/ServerReflectionInfo", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    with pytest.raises(grpc.RpcError) as info:
        list(reflect(iter([CORRUPT]), timeout=5))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "grpc.reflection.v1alpha.ServerReflectionRequest" in info.value.details()


def test_undecodable_bytes_without_a_token_are_refused_first(admin: grpc.Channel, clean_log: None) -> None:
    got = raw_unary(admin, "/authz.admin.v1.Decisions/GetDecision", CORRUPT)
    assert isinstance(got, grpc.RpcError) and got.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_valid_admin_call_still_works_after_bad_ones(admin: grpc.Channel, clean_log: None) -> None:
    raw_unary(admin, "/authz.admin.v1.Decisions/GetDecision", CORRUPT, bearer(TOKEN))
    got = raw_unary(admin, "/authz.admin.v1.Decisions/GetDecision", b"\x0a\x04nope", bearer(TOKEN))
    assert isinstance(got, grpc.RpcError)
    assert got.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "method",
    ["/no.such.Service/Method", "/authz.admin.v1.Decisions/DropAll", "/envoy.service.auth.v3.Authorization/Nope", "/"],
)
def test_unknown_methods_are_unimplemented(channel: grpc.Channel, clean_log: None, method: str) -> None:
    got = raw_unary(channel, method, b"")
    assert isinstance(got, grpc.RpcError), got
    assert got.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize(("listener", "method"), [("admin", "/authz.admin.v1.Decisions/GetDecision"), ("grpc", "/envoy.service.auth.v3.Authorization/Check")])
def test_oversized_messages_are_resource_exhausted(authz: Proc, clean_log: None, listener: str, method: str) -> None:
    # one string field of 5 MiB: above the listeners' 4 MiB receive limit
    size = 5 << 20
    with grpc.insecure_channel(f"{LOOPBACK}:{authz.ports[listener]}") as ch:
        got = raw_unary(ch, method, b"\x0a" + varint(size) + b"a" * size, bearer(TOKEN) if listener == "admin" else ())
    assert isinstance(got, grpc.RpcError), got
    assert got.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def grpcurl_args(authz: Proc, *args: str, listener: str = "grpc", max_time: float = 5) -> list[str]:
    *options, verb = args
    address = f"{LOOPBACK}:{authz.ports[listener]}"
    return [str(venv_bin("grpcurl")), "-plaintext", "-max-time", str(max_time), *options, address, *verb.split()]


def run_grpcurl(authz: Proc, *args: str, listener: str = "grpc") -> str:
    """grpcurl -plaintext [options] ADDRESS [verb / method]: the last argument goes after the address."""
    done = subprocess.run(grpcurl_args(authz, *args, listener=listener), capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 0, f"grpcurl {' '.join(args)}: {done.stderr}"
    return done.stdout


AUTH = ("-H", f"authorization: Bearer {TOKEN}")


def test_grpcurl_lists_the_services_by_reflection(authz: Proc, clean_log: None) -> None:
    assert set(run_grpcurl(authz, "list").split()) == {*SERVICES, REFLECTION}
    described = run_grpcurl(authz, "describe grpc.health.v1.Health")
    assert "rpc List ( .grpc.health.v1.HealthListRequest )" in described


def test_grpcurl_lists_the_admin_services_on_the_admin_listener_only(authz: Proc, clean_log: None) -> None:
    assert set(run_grpcurl(authz, *AUTH, "list", listener="admin").split()) == {*ADMIN_SERVICES, REFLECTION}
    assert not ADMIN_SERVICES - {"grpc.health.v1.Health"} & set(run_grpcurl(authz, "list").split())
    described = run_grpcurl(authz, *AUTH, "describe authz.admin.v1.Decisions", listener="admin")
    assert "rpc WatchDecisions ( .authz.admin.v1.WatchDecisionsRequest ) returns ( stream .authz.admin.v1.WatchDecisionsResponse )" in described
    # without the token, reflection is refused
    done = subprocess.run(grpcurl_args(authz, "list", listener="admin"), capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode != 0 and "Unauthenticated" in done.stderr


def ext_check(authz: Proc, path: str, peer: str) -> external_auth_pb2.CheckResponse:
    with grpc.insecure_channel(f"{LOOPBACK}:{authz.ports['grpc']}") as ch:
        request = external_auth_pb2.CheckRequest(
            attributes=ac.AttributeContext(
                source=ac.AttributeContext.Peer(address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=peer, port_value=1))),
                request=ac.AttributeContext.Request(http=ac.AttributeContext.HttpRequest(method="GET", path=path, host="api.example.com", scheme="https")),
            )
        )
        reply: external_auth_pb2.CheckResponse = external_auth_pb2_grpc.AuthorizationStub(ch).Check(request, timeout=5)
        return reply


def test_grpcurl_lists_watches_and_explains_decisions(authz: Proc, clean_log: None) -> None:
    ext_check(authz, "/nowhere/grpcurl", "172.16.20.1")
    listed = json.loads(run_grpcurl(authz, *AUTH, "-d", '{"filter": {"client_ip": "172.16.20.1"}}', "authz.admin.v1.Decisions/ListDecisions", listener="admin"))
    assert [(d["path"], d["reason"]) for d in listed["decisions"]] == [("/nowhere/grpcurl", "route.no_match")]
    # watch: the stream prints each new decision until -max-time ends it
    watch = subprocess.Popen(
        grpcurl_args(authz, *AUTH, "-d", '{"filter": {"reason": "route."}}', "authz.admin.v1.Decisions/WatchDecisions", listener="admin", max_time=3),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline and watch.poll() is None:
            ext_check(authz, "/nowhere/watched", "172.16.20.2")
            time.sleep(0.2)
        out, err = watch.communicate(timeout=10)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert '"path": "/nowhere/watched"' in out, err
    assert "DeadlineExceeded" in err  # -max-time ended it, as documented
    # explain: a CheckRequest as Envoy would send it, as JSON
    check = '{"attributes": {"source": {"address": {"socket_address": {"address": "172.16.20.3", "port_value": 1}}}, "request": {"http": {"method": "GET", "host": "api.example.com", "path": "/v1/q"}}}}'
    body = json.dumps({"check_request_json": check})
    explained = json.loads(run_grpcurl(authz, *AUTH, "-d", body, "authz.admin.v1.Decisions/Explain", listener="admin"))
    assert (explained["decision"]["reason"], explained["decision"]["route"]) == ("ok", "api")
    assert [s["stage"] for s in explained["stages"]][:2] == ["route", "identify"]


def test_grpcurl_calls_health_list(authz: Proc, clean_log: None) -> None:
    reply = json.loads(run_grpcurl(authz, "grpc.health.v1.Health/List"))
    assert reply == {"statuses": {name: {"status": "SERVING"} for name in HEALTH_NAMES}}
    check = json.loads(run_grpcurl(authz, "-d", '{"service": "envoy.service.auth.v3.Authorization"}', "grpc.health.v1.Health/Check"))
    assert check == {"status": "SERVING"}
    # the admin listener's health names the admin services; grpcurl's reflection lookup needs the token
    admin = json.loads(run_grpcurl(authz, *AUTH, "-d", '{"service": "authz.admin.v1.Decisions"}', "grpc.health.v1.Health/Check", listener="admin"))
    assert admin == {"status": "SERVING"}


def test_admin_health_answers_without_a_token(admin: grpc.Channel, clean_log: None) -> None:
    reply = health_pb2_grpc.HealthStub(admin).Check(health_pb2.HealthCheckRequest(service="authz.admin.v1.Policy"), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
