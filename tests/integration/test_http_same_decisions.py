"""One table of requests, the same decisions through the gRPC door and every HTTP convention.

A single ``authz serve`` process answers gRPC ``Check`` calls (as Envoy's
ext_authz filter makes them) and HTTP authorization requests in the Envoy,
forward-auth and nginx conventions. For every row the decision (outcome,
status, reason, route, client address, method, path) read back from the
decision log is the same whichever door it came through, and so is the status
the proxy would give the client.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2

from tests.support.procs import LOOPBACK
from tests.support.proxies import Reply, fetch, start_authz_http

POLICY = Path(__file__).parent / "policies" / "http_door.yaml"
DOORS = ("grpc", "envoy", "forward-auth", "nginx")

# (id, method, path, extra headers, how many times to send it, expected (status, reason) of the last)
ROWS: list[tuple[str, str, str, dict[str, str], int, tuple[int, str]]] = [
    ("public", "GET", "/public", {}, 1, (200, "ok")),
    ("api", "GET", "/api/items?page=1", {"authorization": "Bearer opaque"}, 1, (200, "ok")),
    ("api-post", "POST", "/api/items", {}, 1, (200, "ok")),
    ("admin", "GET", "/admin/users", {}, 1, (403, "route.deny")),
    ("method-not-routed", "PATCH", "/api/items", {}, 1, (403, "route.no_match")),
    ("path-not-routed", "GET", "/nowhere", {}, 1, (403, "route.no_match")),
    ("denied-address", "GET", "/api/items", {"x-forwarded-for": "203.0.113.66"}, 1, (403, "ip.denied")),
    ("forwarded-address", "GET", "/api/items", {"x-forwarded-for": "198.51.100.23, 127.0.0.1"}, 1, (200, "ok")),
    ("quota-left", "GET", "/limited/a", {}, 2, (200, "ok")),
    ("quota-exhausted", "GET", "/limited/a", {}, 3, (429, "quota.exhausted")),
    ("target-too-long", "GET", "/api/" + "a" * 8300, {}, 1, (431, "request.too_large")),
    ("too-many-headers", "GET", "/api/items", {f"x-h{i}": "v" for i in range(130)}, 1, (431, "request.too_large")),
]

_keys = itertools.count(1)


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, Path]]:
    log = tmp_path_factory.mktemp("same") / "decisions.jsonl"
    proc, grpc_port, http_port = start_authz_http(POLICY, "--decision-log", str(log))
    with proc:
        yield grpc_port, http_port, log


@pytest.fixture(scope="module")
def check(authz: tuple[int, int, Path]) -> Iterator[Any]:
    with grpc.insecure_channel(f"{LOOPBACK}:{authz[0]}") as channel:
        yield channel.unary_unary(
            "/envoy.service.auth.v3.Authorization/Check",
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )


def via_grpc(check: Any, method: str, path: str, headers: dict[str, str]) -> tuple[str, int]:
    """(decision id, status the client would get) for a Check as Envoy sends it."""
    pairs = [(":authority", "api.example.test"), (":method", method), (":path", path), *headers.items()]
    http = ac.AttributeContext.HttpRequest(
        id="1", method=method, path=path, host="api.example.test", scheme="http", protocol="HTTP/1.1",
        header_map=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs]),
    )  # fmt: skip
    peer = address_pb2.Address(socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=40000))
    req = external_auth_pb2.CheckRequest(
        attributes=ac.AttributeContext(source=ac.AttributeContext.Peer(address=peer), request=ac.AttributeContext.Request(http=http))
    )
    resp = check(req, timeout=5)
    decision_id = resp.dynamic_metadata.fields["decision_id"].string_value
    if resp.status.code == 0:
        return decision_id, 200
    return decision_id, resp.denied_response.status.code


def via_http(port: int, door: str, method: str, path: str, headers: dict[str, str]) -> tuple[str, int]:
    """(decision id, status the client would get) for an HTTP authorization request."""
    headers = {"host": "api.example.test", **headers}
    if door == "envoy":
        reply = fetch(port, method, "/envoy" + path, headers)
    elif door == "forward-auth":
        conv = {"x-forwarded-method": method, "x-forwarded-uri": path, "x-forwarded-host": "api.example.test", "x-forwarded-proto": "http"}
        reply = fetch(port, "GET", "/forward-auth", {**headers, **conv})
    else:
        conv = {"x-original-method": method, "x-original-uri": path}
        reply = fetch(port, "GET", "/nginx", {**headers, **conv})
    return reply.headers["x-authz-decision-id"], client_status(door, reply)


def client_status(door: str, reply: Reply) -> int:
    if door == "nginx" and reply.status != 200:
        assert reply.status in (401, 403)  # what auth_request accepts
        return int(reply.headers["x-authz-status"])  # what examples/nginx.conf gives the client
    return reply.status


def records(log: Path, ids: list[str], timeout: float = 3.0) -> dict[str, dict[str, Any]]:
    """The decision log lines of ``ids`` (the log is flushed every 0.2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, dict[str, Any]] = {}
        if log.exists():
            for line in log.read_text().splitlines():
                rec = json.loads(line)
                if rec["id"] in ids:
                    found[rec["id"]] = rec
        if len(found) == len(ids):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"decisions {sorted(set(ids) - set(found))} not in the decision log")
        time.sleep(0.05)


@pytest.mark.parametrize(("row", "method", "path", "headers", "times", "expected"), ROWS, ids=[r[0] for r in ROWS])
def test_same_decision_through_every_door(
    authz: tuple[int, int, Path],
    check: Any,
    row: str,
    method: str,
    path: str,
    headers: dict[str, str],
    times: int,
    expected: tuple[int, str],
) -> None:
    _, http_port, log = authz
    answers: dict[str, tuple[str, int]] = {}
    for door in DOORS:
        sent = {**headers, "x-client": f"{row}-{door}-{next(_keys)}"}  # a fresh quota bucket per door
        for _ in range(times):
            if door == "grpc":
                answers[door] = via_grpc(check, method, path, sent)
            else:
                answers[door] = via_http(http_port, door, method, path, sent)
    recs = records(log, [decision_id for decision_id, _ in answers.values()])
    seen: dict[str, tuple[Any, ...]] = {}
    for door, (decision_id, status) in answers.items():
        rec = recs[decision_id]
        assert rec["door"] == ("grpc" if door == "grpc" else "http")
        seen[door] = (status, rec["status"], rec["reason"], rec["outcome"], rec["route"], rec["client_ip"], rec["method"], rec["path"])
    assert len(set(seen.values())) == 1, seen
    assert seen["grpc"][:3] == (expected[0], expected[0], expected[1])
