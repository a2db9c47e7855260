"""Envoy access log entries -> the backend's answers as evidence (adapters/envoy_als.py, reputation feedback)."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest
from envoy.data.accesslog.v3 import accesslog_pb2 as al
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from authz.adapters.envoy_als import NAMESPACE, backend_answer
from authz.adapters.envoy_grpc import to_response
from authz.clock import FixedClock
from authz.config.context import CompileContext
from authz.config.source import load
from authz.decision import DecisionIds
from authz.keys import EMPTY_KEYRING
from authz.pipeline import Engine
from authz.policy.compile import compile_policy
from authz.request import Request
from authz.server.access_log import AccessLogService
from authz.stages.reputation import parse_feedback
from authz.store import MemoryStore

T0 = 1_700_000_000_000
POLICY = """
version: 1
reputation: {half_life: 10m, scale: 10}
routes:
  - name: api
    match: {path: {prefix: /api/}}
    auth: [anonymous]
    reputation: {}
  - name: login
    match: {path: {exact: /login}}
    auth: [anonymous]
    reputation: {sensitive: true}
  - name: plain
    match: {path: {prefix: /}}
    auth: [anonymous]
"""


def engine() -> Engine:
    policy = compile_policy(load("p.yaml", POLICY), CompileContext(file="p.yaml", base_dir=".", keyring=EMPTY_KEYRING))
    return Engine(policy, MemoryStore(epoch_ms=T0), clock=FixedClock(T0), ids=DecisionIds("r"))


def req(path: str, peer: str = "198.51.100.7") -> Request:
    return Request(method="GET", path=path, host="api.example", headers={"user-agent": "x"}, peer_ip=peer)


def entry(feedback: list[object] | None, status: int = 404, details: str = "via_upstream") -> al.HTTPAccessLogEntry:
    e = al.HTTPAccessLogEntry()
    e.response.response_code.value = status
    e.response.response_code_details = details
    if feedback is not None:
        fields = e.common_properties.metadata.filter_metadata[NAMESPACE].fields
        fields["decision_id"].string_value = "r-1"
        lv = fields["feedback"].list_value
        for item in feedback:
            if isinstance(item, str):
                lv.values.add().string_value = item
            else:
                lv.values.add().number_value = float(item)  # type: ignore[arg-type]
    return e


async def test_an_allowed_decision_on_a_scoring_route_carries_its_feedback_to_envoy() -> None:
    e = engine()
    d = await e.decide(req("/api/x"))
    assert d.feedback == ("1a", "ip:198.51.100.7", "net:198.51.100.0/24")
    meta = to_response(d).dynamic_metadata.fields["feedback"].list_value
    assert [v.string_value for v in meta.values] == list(d.feedback)
    login = await e.decide(req("/login"))
    assert login.feedback[0] == "1as"
    plain = await e.decide(req("/other"))
    assert plain.feedback == () and "feedback" not in to_response(plain).dynamic_metadata.fields


def test_only_the_backends_own_answers_with_authz_feedback_count() -> None:
    fb = ["1a", "ip:198.51.100.7"]
    assert backend_answer(entry(fb, 404)) == (("1a", "ip:198.51.100.7"), 404)
    assert backend_answer(entry(fb, 404, details="ext_authz_denied")) is None  # authz's own refusal
    assert backend_answer(entry(fb, 504, details="upstream_response_timeout")) is None  # Envoy's local reply
    assert backend_answer(entry(None)) is None  # a route that does not score
    assert backend_answer(entry(["1a", 7])) is None  # not a list of strings
    assert backend_answer(entry([])) is None
    assert backend_answer(entry(["1a"] + ["ip:1.2.3.4"] * 20)) is None
    no_code = entry(fb)
    no_code.response.ClearField("response_code")
    assert backend_answer(no_code) is None
    wrong_kind = entry(fb)
    wrong_kind.common_properties.metadata.filter_metadata[NAMESPACE].fields["feedback"].string_value = "1a ip:1.2.3.4"
    assert backend_answer(wrong_kind) is None


@pytest.mark.parametrize(
    "feedback",
    [
        ("2a", "ip:1.2.3.4"),  # another version
        ("1x", "ip:1.2.3.4"),  # unknown flag
        ("1a",),  # no identity
        ("1a", "evil:key"),  # not an identity kind
        ("1a", "ip:" + "1" * 300),  # unbounded
        ("1a", "ip:1.2.3.4\n"),  # control character
        ("1a", *["ip:1.2.3.4"] * 7),  # more identities than kinds
    ],
)
def test_feedback_authz_did_not_write_is_ignored(feedback: tuple[str, ...]) -> None:
    assert parse_feedback(feedback) is None
    assert engine().backend_answered(feedback, 404) is False


async def test_404s_from_the_backend_raise_the_score_and_other_statuses_do_not() -> None:
    e = engine()
    fb = (await e.decide(req("/api/x", peer="192.0.2.1"))).feedback
    for status in (200, 302, 500, 503):
        assert e.backend_answered(fb, status) is False
    await e.settle()
    assert (await e.decide(req("/api/x", peer="192.0.2.1"))).score == 0
    for _ in range(10):
        assert e.backend_answered(fb, 404)
    await e.settle()
    d = await e.decide(req("/api/x", peer="192.0.2.1"))
    assert d.score == pytest.approx(100 * 5 / 15, abs=0.5)  # 10 x 0.5, scale 10
    assert dict(d.top_signals).keys() == {"status.404"}
    # another 4xx weighs less; the neighbour on the /24 sees the subnet's share
    e.backend_answered(fb, 400)
    await e.settle()
    neighbour = await e.decide(req("/api/x", peer="192.0.2.77"))
    assert neighbour.score is not None and 0 < neighbour.score < d.score


async def test_a_sensitive_routes_401_is_a_failed_login_of_the_address() -> None:
    e = engine()
    fb = (await e.decide(req("/login", peer="192.0.2.9"))).feedback
    e.backend_answered(fb, 401)
    await e.settle()
    d = await e.decide(req("/api/x", peer="192.0.2.9"))
    assert {"login.failure", "status.4xx"} <= dict(d.top_signals).keys()


async def test_the_service_reads_a_real_grpc_stream_and_skips_what_is_not_evidence() -> None:
    e = engine()
    fb = list((await e.decide(req("/api/x", peer="192.0.2.20"))).feedback)
    service = AccessLogService(e)
    server = grpc.aio.server()
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        batch = als_pb2.StreamAccessLogsMessage(
            identifier=als_pb2.StreamAccessLogsMessage.Identifier(log_name="authz-feedback"),
            http_logs=als_pb2.StreamAccessLogsMessage.HTTPAccessLogEntries(
                log_entry=[entry(fb, 404), entry(fb, 404, details="ext_authz_denied"), entry(None), entry(fb, 200)]
            ),
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = als_pb2_grpc.AccessLogServiceStub(ch)

            async def messages():  # type: ignore[no-untyped-def]
                yield batch
                yield batch

            await asyncio.wait_for(stub.StreamAccessLogs(messages()), 5)
    finally:
        await server.stop(0)
    assert (service.entries, service.recorded) == (8, 2)
    await e.settle()
    assert dict((await e.decide(req("/api/x", peer="192.0.2.20"))).top_signals).keys() == {"status.404"}


def test_a_verified_agent_gets_no_feedback() -> None:
    # the reputation stage never scores a verified agent, so the backend's answers to it count for nothing
    from authz.stages.context import Ctx

    e = engine()
    ctx = Ctx(req("/api/x"), T0, "r-1")
    ctx.identity = dataclasses.replace(ctx.identity, tier="verified-bot")
    rep = e.policy.routes[0].reputation
    assert rep is not None and e.policy.reputation is not None
    e.policy.reputation.plan(ctx, rep)
    assert ctx.feedback == () and ctx.ops == []


