"""The gRPC listener's other services under bad input, over a real socket to ``authz serve``.

Health/List answers every service; undecodable bytes to the admin API, health
and reflection get INVALID_ARGUMENT (not UNKNOWN); unknown methods get
UNIMPLEMENTED, oversized messages RESOURCE_EXHAUSTED; and none of it leaves a
traceback in authz's log. grpcurl (the test extras' binary) lists the services
by reflection and calls Health/List as an operator would.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.admin.v1 import admin_pb2, admin_pb2_grpc
from authz.server.app import App
from authz.settings import Settings
from tests.support.procs import LOOPBACK, Proc, start_authz, venv_bin

POLICY = Path(__file__).parent / "policies" / "grpc_server.yaml"
SERVICES = {
    "envoy.service.auth.v3.Authorization",
    "envoy.service.accesslog.v3.AccessLogService",
    "authz.admin.v1.Decisions",
    "grpc.health.v1.Health",
}
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
#: what Health/List names: the server (""), each service, and the store as a component
HEALTH_NAMES = {"", "authz.store", *SERVICES}
#: what grpcio writes when a servicer or a deserializer raises
LOG_NEEDLES = ("Traceback", "Exception deserializing", "Unexpected [", " ERROR ")


@pytest.fixture(scope="module")
def authz() -> Iterator[Proc]:
    proc, _port = start_authz(POLICY, "--no-http")
    with proc:
        yield proc


@pytest.fixture
def channel(authz: Proc) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"{LOOPBACK}:{authz.ports['grpc']}") as ch:
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


def raw_unary(channel: grpc.Channel, method: str, payload: bytes) -> grpc.RpcError | bytes:
    call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        return bytes(call(payload, timeout=5))
    except grpc.RpcError as exc:
        return exc


def test_health_list_answers_every_service_serving(channel: grpc.Channel, clean_log: None) -> None:
    reply = health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=5)
    assert {name: s.status for name, s in reply.statuses.items()} == {
        name: health_pb2.HealthCheckResponse.SERVING for name in HEALTH_NAMES
    }


async def test_health_list_follows_the_status_when_draining() -> None:
    app = App(Settings(config=str(POLICY), grpc_listen="127.0.0.1:0", http_listen=""))
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


async def test_an_exception_in_an_admin_method_is_internal_and_logged_without_its_message(caplog: pytest.LogCaptureFixture) -> None:
    app = App(Settings(config=str(POLICY), grpc_listen="127.0.0.1:0", http_listen=""))
    await app.start()

    def broken(decision_id: str) -> None:
        raise RuntimeError(f"boom {decision_id}")

    app.decisions.get = broken  # type: ignore[method-assign]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
            stub = admin_pb2_grpc.DecisionsStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetDecision(admin_pb2.GetDecisionRequest(id="secret-token-123"), timeout=5)
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
    ("method", "payload", "message_type"),
    [
        ("/authz.admin.v1.Decisions/GetDecision", CORRUPT, "authz.admin.v1.GetDecisionRequest"),
        ("/authz.admin.v1.Decisions/GetDecision", BAD_UTF8, "authz.admin.v1.GetDecisionRequest"),
        ("/authz.admin.v1.Decisions/ListDecisions", CORRUPT, "authz.admin.v1.ListDecisionsRequest"),
        # ListDecisionsRequest field 2 is the filter; its field 1 the outcome string
        ("/authz.admin.v1.Decisions/ListDecisions", b"\x12\x04\x0a\x02\xc3\x28", "authz.admin.v1.ListDecisionsRequest"),
        ("/grpc.health.v1.Health/Check", BAD_UTF8, "grpc.health.v1.HealthCheckRequest"),
        ("/grpc.health.v1.Health/List", CORRUPT, "grpc.health.v1.HealthListRequest"),
    ],
)
def test_undecodable_bytes_get_invalid_argument_and_no_traceback(
    channel: grpc.Channel, clean_log: None, method: str, payload: bytes, message_type: str
) -> None:
    got = raw_unary(channel, method, payload)
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


def test_a_valid_admin_call_still_works_after_bad_ones(channel: grpc.Channel, clean_log: None) -> None:
    raw_unary(channel, "/authz.admin.v1.Decisions/GetDecision", CORRUPT)
    got = raw_unary(channel, "/authz.admin.v1.Decisions/GetDecision", b"\x0a\x04nope")
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


@pytest.mark.parametrize("method", ["/authz.admin.v1.Decisions/GetDecision", "/envoy.service.auth.v3.Authorization/Check"])
def test_oversized_messages_are_resource_exhausted(channel: grpc.Channel, clean_log: None, method: str) -> None:
    # one string field of 5 MiB: above the listener's 4 MiB receive limit
    size = 5 << 20
    got = raw_unary(channel, method, b"\x0a" + varint(size) + b"a" * size)
    assert isinstance(got, grpc.RpcError), got
    assert got.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def run_grpcurl(authz: Proc, *args: str) -> str:
    """grpcurl -plaintext [options] ADDRESS [verb / method]: the last argument goes after the address."""
    *options, verb = args
    done = subprocess.run(
        [str(venv_bin("grpcurl")), "-plaintext", "-max-time", "5", *options, f"{LOOPBACK}:{authz.ports['grpc']}", *verb.split()],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, f"grpcurl {' '.join(args)}: {done.stderr}"
    return done.stdout


def test_grpcurl_lists_the_services_by_reflection(authz: Proc, clean_log: None) -> None:
    assert set(run_grpcurl(authz, "list").split()) == {*SERVICES, REFLECTION}
    described = run_grpcurl(authz, "describe grpc.health.v1.Health")
    assert "rpc List ( .grpc.health.v1.HealthListRequest )" in described


def test_grpcurl_calls_health_list(authz: Proc, clean_log: None) -> None:
    reply = json.loads(run_grpcurl(authz, "grpc.health.v1.Health/List"))
    assert reply == {"statuses": {name: {"status": "SERVING"} for name in HEALTH_NAMES}}
    check = json.loads(run_grpcurl(authz, "-d", '{"service": "authz.admin.v1.Decisions"}', "grpc.health.v1.Health/Check"))
    assert check == {"status": "SERVING"}
