"""authz serve --otel behind real Envoy: the span of a check joins the trace of the client's traceparent."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.support.procs import (
    ENVOY_YAML,
    LOOPBACK,
    EchoUpstream,
    free_port,
    http_request,
    render_envoy_config,
    start_authz,
    start_envoy,
)

pytestmark = pytest.mark.envoy

POLICY = Path(__file__).parent / "policies" / "through_envoy.yaml"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def test_the_check_span_continues_the_trace_envoy_forwards(monkeypatch: pytest.MonkeyPatch, echo_upstream: EchoUpstream) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    authz, port = start_authz(POLICY, "--otel", "--no-http")
    ports = {"admin": free_port(), "ingress": free_port(), "upstream": echo_upstream.port, "authz": port}
    envoy, _ = start_envoy(render_envoy_config(ENVOY_YAML, ports))
    with authz, envoy:
        traceparent = f"00-{TRACE_ID}-b7ad6b7169203331-01"
        status, _, _ = http_request(f"http://{LOOPBACK}:{ports['ingress']}/v1/items", headers=[("traceparent", traceparent)])
        assert status == 200
        deadline = time.monotonic() + 10
        while '"name": "authz.respond"' not in authz.log_text():
            assert time.monotonic() < deadline, authz.tail()
            time.sleep(0.1)
    # the console exporter prints each span as a JSON object
    text = authz.log_text()
    spans = [json.loads(m) for m in re.findall(r"^\{\n.*?^\}$", text, re.MULTILINE | re.DOTALL)]
    check = next(s for s in spans if s["name"] == "authz.check")
    assert check["context"]["trace_id"] == f"0x{TRACE_ID}"
    assert check["parent_id"] == "0xb7ad6b7169203331"
    assert check["attributes"]["authz.outcome"] == "allow"
    assert {s["name"] for s in spans if s["context"]["trace_id"] == f"0x{TRACE_ID}"} >= {"authz.check", "authz.route", "authz.apply", "authz.respond"}
