"""OpenTelemetry spans per stage under the caller's traceparent (the SDK's in-memory exporter), and --otel without the SDK."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from authz.cli import cli
from authz.decision import DecisionIds
from authz.pipeline import Engine
from authz.policy.compile import load_policy
from authz.request import Request
from authz.server.tracing import Tracer
from authz.store import MemoryStore

POLICY = Path(__file__).parents[1] / "integration" / "policies" / "through_envoy.yaml"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def traced() -> tuple[Engine, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = Engine(load_policy(str(POLICY)), MemoryStore(epoch_ms=0), ids=DecisionIds("0123456789ab"))
    engine.observer = Tracer(provider)
    return engine, exporter


def req(path: str, **headers: str) -> Request:
    return Request(method="GET", path=path, host="api.test", headers={"host": "api.test", **headers}, peer_ip="198.51.100.9", door="grpc")


async def test_a_check_is_a_server_span_under_the_callers_trace_with_one_child_per_stage() -> None:
    engine, exporter = traced()
    decision = await engine.decide(req("/v1/items", traceparent=f"00-{TRACE_ID}-{PARENT_ID}-01", tracestate="vendor=1"))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    check = spans["authz.check"]
    assert f"{check.context.trace_id:032x}" == TRACE_ID
    assert check.parent is not None and f"{check.parent.span_id:016x}" == PARENT_ID
    assert check.kind.name == "SERVER"
    assert check.attributes is not None
    assert check.attributes["authz.decision_id"] == decision.id
    assert (check.attributes["authz.outcome"], check.attributes["authz.reason"], check.attributes["authz.route"]) == ("allow", "ok", "api")
    assert check.attributes["authz.policy_version"] == decision.policy_version
    stages = ["authz.route", "authz.identify", "authz.authenticate", "authz.plan", "authz.apply", "authz.judge", "authz.respond"]
    assert sorted(spans) == sorted(["authz.check", *stages])
    previous_end = check.start_time
    for name in stages:  # children, in order, back to back, inside the check
        span = spans[name]
        assert span.parent is not None and span.parent.span_id == check.context.span_id
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time == previous_end and span.end_time >= span.start_time
        previous_end = span.end_time
    assert check.end_time == previous_end


async def test_an_early_refusal_has_spans_only_for_the_stages_it_reached() -> None:
    engine, exporter = traced()
    await engine.decide(req("/admin/users"))  # a deny route: decided at the route stage
    names = {s.name for s in exporter.get_finished_spans()}
    assert names == {"authz.check", "authz.route", "authz.identify", "authz.respond"}
    (check,) = [s for s in exporter.get_finished_spans() if s.name == "authz.check"]
    assert check.parent is None  # no traceparent: a new trace


async def test_a_malformed_traceparent_starts_a_new_trace() -> None:
    engine, exporter = traced()
    await engine.decide(req("/v1/items", traceparent="00-zz-not-a-trace"))
    (check,) = [s for s in exporter.get_finished_spans() if s.name == "authz.check"]
    assert check.parent is None


def test_otel_without_the_sdk_is_refused_with_the_extra_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # import fails as if not installed
    result = CliRunner().invoke(cli, ["serve", "-c", str(POLICY), "--otel", "--no-metrics"])
    assert result.exit_code == 1
    assert "settings: otel: --otel needs the OpenTelemetry SDK, which is not installed: pip install 'authz[otel]'" in result.output
