"""Real Envoy + real authz + a real upstream: what clients and backends actually see.

Envoy runs ``envoy/envoy.yaml``, the shipped example, with only its four ports
changed, so these tests are about the example config too. The policy is
``policies/through_envoy.yaml``. Loopback addresses other than 127.0.0.1
play other clients (127.0.0.66 is on the policy's deny list).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.procs import (
    ENVOY_YAML,
    ROOT,
    EchoUpstream,
    Proc,
    envoy_binary,
    envoy_stat,
    free_port,
    http_request,
    render_envoy_config,
    start_authz,
    start_envoy,
)

pytestmark = pytest.mark.envoy

POLICY = Path(__file__).parent / "policies" / "through_envoy.yaml"
DECISION_ID = re.compile(r"^[0-9a-f]{12}-[0-9a-f]{12}$")
EXT_AUTHZ = "envoy.filters.http.ext_authz"


def _example() -> dict[str, Any]:
    return yaml.safe_load(ENVOY_YAML.read_text())


def _ext_authz_config(conf: dict[str, Any]) -> dict[str, Any]:
    hcm = conf["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (flt,) = [f for f in hcm["http_filters"] if f["name"] == EXT_AUTHZ]
    return flt["typed_config"]


def _cluster(conf: dict[str, Any], name: str) -> dict[str, Any]:
    (cluster,) = [c for c in conf["static_resources"]["clusters"] if c["name"] == name]
    return cluster


STATUS_NAMES = {"ServiceUnavailable": 503, "Forbidden": 403, "InternalServerError": 500}


def _status_on_error() -> int:
    """The status the example config answers with when authz cannot be asked (Envoy's default is 403)."""
    code = _ext_authz_config(_example()).get("status_on_error", {}).get("code", "Forbidden")
    return STATUS_NAMES[code] if isinstance(code, str) else int(code)


@dataclass
class Stack:
    envoy: Proc
    authz: Proc
    authz_port: int
    url: str
    admin_port: int

    def get(self, path: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        return http_request(self.url + path, **kw)

    def access_log(self, decision_id: str) -> dict[str, Any]:
        """Envoy's JSON access-log line for a decision (written asynchronously, so wait a little)."""
        line = self.envoy.wait_for_log(f'"decision_id":"{decision_id}"', timeout=5)
        return json.loads(line[line.index("{") :])


@pytest.fixture(scope="module")
def stack(echo_upstream: EchoUpstream) -> Iterator[Stack]:
    """authz and Envoy, once per module (about 1.5 s to start both)."""
    authz, authz_port = start_authz(POLICY)
    envoy: Proc | None = None
    s: Stack | None = None
    try:
        ports = {"admin": free_port(), "ingress": free_port(), "upstream": echo_upstream.port, "authz": authz_port}
        envoy, _ = start_envoy(render_envoy_config(ENVOY_YAML, ports))
        s = Stack(envoy, authz, authz_port, f"http://127.0.0.1:{ports['ingress']}", ports["admin"])
        yield s
    finally:
        if envoy is not None:
            envoy.stop()
        (s.authz if s is not None else authz).stop()


def _json(body: bytes) -> dict[str, Any]:
    value = json.loads(body)
    assert isinstance(value, dict)
    return value


# the example config itself


def test_example_config_is_valid_for_the_real_envoy() -> None:
    done = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", ENVOY_YAML, "--disable-hot-restart", "--log-level", "error"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout


def test_example_config_fails_closed_and_sends_raw_headers() -> None:
    conf = _example()
    ext = _ext_authz_config(conf)
    assert ext["transport_api_version"] == "V3"
    assert ext["grpc_service"]["envoy_grpc"]["cluster_name"] == "authz"
    assert ext["failure_mode_allow"] is False
    assert ext["encode_raw_headers"] is True
    assert ext["include_peer_certificate"] is True
    assert "with_request_body" not in ext
    timeout = float(ext["grpc_service"]["timeout"].rstrip("s"))
    assert 0 < timeout <= 0.5
    authz = _cluster(conf, "authz")
    opts = authz["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in opts["explicit_http_config"]
    (check,) = authz["health_checks"]
    assert check["grpc_health_check"]["service_name"] == "envoy.service.auth.v3.Authorization"


# allowed traffic


def test_allowed_request_reaches_upstream_with_identity_headers(stack: Stack, upstream: EchoUpstream) -> None:
    status, headers, body = stack.get("/api/items?page=2")
    assert status == 200, body
    assert upstream.count == 1
    seen = upstream.last()
    assert seen["path"] == "/api/items?page=2"
    got = seen["headers"]
    assert DECISION_ID.match(got["x-authz-decision-id"])
    assert got["x-authz-client-ip"] == "127.0.0.1"
    assert got["x-authz-auth"] == "anonymous"
    # the client sees the quota it is under on an allowed answer too
    assert re.fullmatch(r'"roomy";r=\d+;t=\d+', headers["ratelimit"])
    assert headers["ratelimit-policy"] == '"roomy";q=10000;w=60'
    # Envoy's access log names authz's decision
    entry = stack.access_log(got["x-authz-decision-id"])
    assert (entry["status"], entry["outcome"], entry["reason"]) == (200, "allow", "ok")
    assert entry["client_ip"] == "127.0.0.1"


def test_client_address_is_the_peer_not_a_forwarded_header(stack: Stack, upstream: EchoUpstream) -> None:
    # 127.0.0.66 is denied; writing it (or anything else) in X-Forwarded-For changes nothing
    for forged in ("127.0.0.66", "203.0.113.9", "203.0.113.9, 127.0.0.66"):
        status, _, body = stack.get("/api/x", headers=[("x-forwarded-for", forged)], source="127.0.0.5")
        assert status == 200, body
        assert upstream.last()["headers"]["x-authz-client-ip"] == "127.0.0.5"


def test_client_sent_authz_headers_never_reach_upstream(stack: Stack, upstream: EchoUpstream) -> None:
    hostile = [
        ("X-Authz-Subject", "admin"),
        ("x-authz-key-id", "root-key"),
        ("x-authz-decision-id", "forged"),
        ("x-authz-client-ip", "10.0.0.1"),
        ("x-authz-client-ip", "10.0.0.2"),
        ("x-authz-auth", "jwt"),
        ("x-authz-role", "superuser"),
        ("X-AUTHZ-ANYTHING", "x"),
        ("x_authz_subject", "admin"),  # folded to X-Authz-Subject by CGI/WSGI-style backends
    ]
    status, _, body = stack.get("/api/x", headers=hostile)
    assert status == 200, body
    raw = upstream.last()["raw_headers"]
    ours = [(k, v) for k, v in raw if k.replace("_", "-").startswith("x-authz-")]
    names = sorted(k for k, _ in ours)
    assert names == ["x-authz-auth", "x-authz-client-ip", "x-authz-decision-id"], ours
    values = dict(ours)
    assert values["x-authz-client-ip"] == "127.0.0.1"
    assert values["x-authz-auth"] == "anonymous"
    assert DECISION_ID.match(values["x-authz-decision-id"])


# denied traffic


@pytest.mark.parametrize(
    "target",
    [
        "/admin/users",
        "/admin/",
        "/api/../admin/users",  # dot segments: normalised by Envoy before the check
        "/admin//users",
        "/%61dmin/users",  # encoded unreserved character
        "/api/%2e%2e/admin/users",
    ],
)
def test_deny_route_never_reaches_upstream(stack: Stack, upstream: EchoUpstream, target: str) -> None:
    status, headers, body = stack.get(target)
    assert status == 403, body
    assert upstream.count == 0
    reply = _json(body)
    assert reply == {"error": "route.deny", "decision_id": headers["x-authz-decision-id"]}
    assert DECISION_ID.match(reply["decision_id"])
    assert headers["content-type"] == "application/json"
    entry = stack.access_log(reply["decision_id"])
    assert (entry["status"], entry["details"], entry["reason"]) == (403, "ext_authz_denied", "route.deny")
    assert entry["path"].startswith("/admin/")


def test_deny_route_with_a_body_never_reaches_upstream(stack: Stack, upstream: EchoUpstream) -> None:
    status, headers, body = stack.get(
        "/admin/users", method="POST", headers=[("content-type", "application/json")], body=b'{"role":"admin"}'
    )
    assert status == 403
    assert upstream.count == 0
    assert _json(body)["error"] == "route.deny"


def test_denied_address_never_reaches_upstream(stack: Stack, upstream: EchoUpstream) -> None:
    status, headers, body = stack.get("/api/x", source="127.0.0.66")
    assert status == 403, body
    assert upstream.count == 0
    reply = _json(body)
    assert reply == {"error": "ip.denied", "decision_id": headers["x-authz-decision-id"]}
    entry = stack.access_log(reply["decision_id"])
    assert (entry["reason"], entry["client_ip"], entry["peer"]) == ("ip.denied", "127.0.0.66", "127.0.0.66")


def test_non_utf8_header_is_denied_not_rewritten(stack: Stack, upstream: EchoUpstream) -> None:
    # encode_raw_headers: authz sees the raw bytes (the plain map would show "!!")
    status, headers, body = stack.get("/api/x", headers=[("x-note", b"caf\xe9")])
    assert status == 400, body
    assert upstream.count == 0
    assert _json(body)["error"] == "request.bad_encoding"


def test_oversized_headers_never_reach_authz_or_upstream(stack: Stack, upstream: EchoUpstream) -> None:
    status, _, _ = stack.get("/api/x", headers=[("x-junk", "a" * 70_000)])
    assert status == 431  # Envoy's own limit (60 KiB) answers first
    assert upstream.count == 0


def test_exhausted_quota_is_429_and_never_reaches_upstream(stack: Stack, upstream: EchoUpstream) -> None:
    client = "127.0.0.20"  # a bucket of its own
    remaining = []
    for _ in range(3):
        status, headers, body = stack.get("/limited/x", source=client)
        assert status == 200, body
        assert headers["ratelimit-policy"] == '"tight";q=3;w=60'
        remaining.append(int(re.fullmatch(r'"tight";r=(\d+);t=\d+', headers["ratelimit"]).group(1)))  # type: ignore[union-attr]
    assert remaining == [2, 1, 0]
    assert upstream.count == 3

    status, headers, body = stack.get("/limited/x", source=client)
    assert status == 429
    assert upstream.count == 3
    assert 1 <= int(headers["retry-after"]) <= 20  # one token per 20 s
    assert re.fullmatch(r'"tight";r=0;t=\d+', headers["ratelimit"])
    assert headers["ratelimit-policy"] == '"tight";q=3;w=60'
    reply = _json(body)
    assert reply == {"error": "quota.exhausted", "decision_id": headers["x-authz-decision-id"], "quota": "tight"}
    entry = stack.access_log(reply["decision_id"])
    assert (entry["status"], entry["outcome"]) == (429, "limit")

    # another client is not affected
    status, _, _ = stack.get("/limited/x", source="127.0.0.21")
    assert status == 200


def test_envoy_counts_decisions(stack: Stack, upstream: EchoUpstream) -> None:
    prefix = "http.ingress.ext_authz.authz."
    before = envoy_stat(stack.admin_port, prefix + "denied"), envoy_stat(stack.admin_port, prefix + "ok")
    assert stack.get("/admin/x")[0] == 403
    assert stack.get("/api/x")[0] == 200
    after = envoy_stat(stack.admin_port, prefix + "denied"), envoy_stat(stack.admin_port, prefix + "ok")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


# authz down (last: it restarts authz)


def test_authz_down_fails_closed_then_recovers(stack: Stack, upstream: EchoUpstream) -> None:
    expected = _status_on_error()
    assert expected != 200
    stack.authz.kill()  # a crash: no drain, the connection just dies

    for target in ("/api/x", "/healthz", "/admin/x"):
        status, headers, body = stack.get(target)
        assert status == expected, (target, status, body)
        assert "x-authz-decision-id" not in headers
    assert upstream.count == 0
    line = stack.envoy.wait_for_log('"details":"ext_authz_error"', timeout=5)
    entry = json.loads(line[line.index("{") :])
    assert entry["status"] == expected
    assert envoy_stat(stack.admin_port, "http.ingress.ext_authz.authz.error") >= 3

    # back on the same port: traffic flows again without touching Envoy
    started = time.monotonic()
    stack.authz, _ = start_authz(POLICY, port=stack.authz_port)
    deadline = time.monotonic() + 10
    status = 0
    while time.monotonic() < deadline:
        status, _, _ = stack.get("/api/x")
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200, f"still {status} {time.monotonic() - started:.1f}s after authz restarted"
    assert upstream.count == 1


# make demo


def test_demo_starts_everything_and_answers_allow_and_deny() -> None:
    """``scripts/demo.py`` (``make demo``) on free ports: its self-check must see 200 and 403."""
    done = subprocess.run(
        [sys.executable, ROOT / "scripts" / "demo.py", "--free-ports", "--seconds", "0.5"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "self-check: GET /healthz -> 200, GET /admin/users -> 403" in done.stdout
    assert re.search(r"curl -i http://127\.0\.0\.1:\d+/admin/users", done.stdout)
    assert '"reason":"route.deny"' in done.stdout  # the access log is followed
    assert done.stdout.rstrip().endswith("stopped")
