"""The path-tricks table through both doors in-process: the same decision everywhere.

Each target of tests/support/path_tricks.py goes through the gRPC adapter
(a CheckRequest as Envoy builds it -> ``envoy_grpc.to_request`` -> the
engine) and through the HTTP door's ASGI callable in each convention (Envoy
``http_service``, forward-auth, nginx), against examples/policy.yaml itself.
Every request comes from its own client address, so the example's quota
never decides. The decision (status, reason, raw path, canonical path) must
be the table's, and the same in every door.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.service.auth.v3 import attribute_context_pb2 as ac

from authz.adapters import Malformed, envoy_grpc
from authz.adapters import http as door
from authz.decision import Decision
from authz.paths import fold_case
from authz.pipeline import Engine
from authz.policy import load_policy
from authz.request import Request, split_target
from authz.store import store_from_url
from tests.support.path_tricks import CONTROLS, NO_PATH, TRICKS, Row

EXAMPLE_POLICY = Path(__file__).parents[2] / "examples" / "policy.yaml"
ROWS = TRICKS + NO_PATH + CONTROLS
UNREADABLE = Request(method="", path="", door="grpc")
DOORS = ("grpc", "envoy", "forward-auth", "nginx")
_clients = itertools.count(1)


def _client() -> str:
    n = next(_clients)
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


class Recorder:
    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def __call__(self, decision: Decision) -> None:
        self.decisions.append(decision)


@pytest.fixture(scope="module")
def engine() -> tuple[Engine, Recorder]:
    recorder = Recorder()
    return Engine(load_policy(str(EXAMPLE_POLICY)), store_from_url("memory://", now_ms=0), on_decision=recorder), recorder


def carries(door_name: str, row: Row) -> bool:
    """Can this door carry the target at all? Envoy's http_service sends
    ``path_prefix + :path``: an origin-form, ASCII target, always."""
    return door_name != "envoy" or (row.origin_form and row.target.isascii())


def _check(target: str) -> Any:
    http = ac.AttributeContext.HttpRequest(
        id="1", method="GET", path=target, host="api.example.com", scheme="http", protocol="HTTP/1.1",
        header_map=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=":path", raw_value=target.encode())]),
    )  # fmt: skip
    peer = address_pb2.Address(socket_address=address_pb2.SocketAddress(address=_client(), port_value=40000))
    return envoy_grpc.CheckRequest(
        attributes=ac.AttributeContext(source=ac.AttributeContext.Peer(address=peer), request=ac.AttributeContext.Request(http=http))
    )


async def via_grpc(engine: Engine, target: str) -> Decision:
    """As the gRPC door does it: a request its adapter cannot read is refused with the adapter's reason."""
    try:
        req = envoy_grpc.to_request(_check(target))
    except Malformed as exc:
        return engine.malformed(UNREADABLE, exc.reason, exc.detail)
    return await engine.decide(req)


async def via_http(engine: Engine, recorder: Recorder, mode: str, target: str) -> tuple[Decision, int]:
    raw = target.encode()
    host = [(b"host", b"api.example.com")]
    if mode == "envoy":
        raw_target, headers = b"/envoy" + raw, host
    elif mode == "forward-auth":
        raw_target = b"/forward-auth"
        headers = [(b"x-forwarded-method", b"GET"), (b"x-forwarded-uri", raw), (b"x-forwarded-host", b"api.example.com")]
    else:
        raw_target = b"/nginx"
        headers = [*host, (b"x-original-method", b"GET"), (b"x-original-uri", raw)]
    path, _, query = raw_target.partition(b"?")
    scope: dict[str, Any] = {
        "type": "http", "method": "GET", "path": path.decode("latin-1"), "raw_path": path, "query_string": query,
        "headers": headers, "client": (_client(), 40000), door.RAW_TARGET: raw_target,
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the door must never read a body")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    before = len(recorder.decisions)
    await door.HttpDoor(engine, door.Modes.parse(door.DEFAULT_MODES))(scope, receive, send)
    assert len(recorder.decisions) == before + 1
    decision = recorder.decisions[-1]
    status = sent[0]["status"]
    if mode == "nginx" and decision.status not in (200, 401, 403):
        # nginx's auth_request takes only 2xx/401/403: the real status rides along
        assert dict(sent[0]["headers"])[b"x-authz-status"] == b"%d" % decision.status
        status = decision.status
    if decision.status != 200:
        assert json.loads(sent[1]["body"])["error"] == decision.reason
    return decision, status


@pytest.mark.parametrize("row", ROWS, ids=[r.target for r in ROWS])
async def test_the_same_decision_through_every_door(engine: tuple[Engine, Recorder], row: Row) -> None:
    eng, recorder = engine
    seen: dict[str, tuple[int, str, str, str]] = {}
    for name in DOORS:
        if not carries(name, row):
            continue
        if name == "grpc":
            decision = await via_grpc(eng, row.target)
            status = decision.status
        else:
            decision, status = await via_http(eng, recorder, name, row.target)
        assert (status, decision.reason) == row.expect, f"{name}: {row.why}"
        seen[name] = (decision.status, decision.reason, decision.path, decision.route_path)
    assert len(set(seen.values())) == 1, seen
    assert set(seen) >= {"grpc", "forward-auth", "nginx"}
    # the log shows the path as sent (absolute-form keeps only its path) and the canonical one
    _, _, path, route_path = next(iter(seen.values()))
    if row.expect == (400, "request.malformed"):
        assert path == ""  # unreadable: no request was built, nothing of it is logged
        return
    assert path == split_target(row.target)[0]
    if row.expect != (400, "request.ambiguous_path"):
        folded = fold_case(route_path)
        in_admin = folded == "/admin" or folded.startswith("/admin/")
        assert in_admin == (row.expect == (403, "route.deny")), route_path


async def test_an_ambiguous_path_names_its_classes_and_the_client(engine: tuple[Engine, Recorder]) -> None:
    eng, _ = engine
    decision = await via_grpc(eng, "/v1/..;/admin%2Fx")
    assert (decision.status, decision.reason, decision.route) == (400, "request.ambiguous_path", "")
    assert dict(decision.signals)["request.path"] == "encoded_slash,semicolon,dot_segment,ambiguous_dot_segment"
    assert decision.identity.client_ip.startswith("10.")
    record = decision.to_record()
    assert (record["path"], record["route_path"]) == ("/v1/..;/admin%2Fx", "/admin%2Fx")


async def test_paths_allow_accepts_a_class_and_its_meaning_stays_unambiguous(tmp_path: Path) -> None:
    text = EXAMPLE_POLICY.read_text().replace("paths:\n  allow: []", "paths:\n  allow: [encoded_slash, semicolon]")
    assert "encoded_slash" in text
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(text.replace("file: lists/blocked.txt", f"file: {EXAMPLE_POLICY.parent / 'lists' / 'blocked.txt'}"))
    eng = Engine(load_policy(str(policy_file)), store_from_url("memory://", now_ms=0))

    async def decide(target: str) -> tuple[int, str, str]:
        d = await via_grpc(eng, target)
        return d.status, d.reason, d.route_path

    # an allowed %2F is data, not a separator: one segment "admin%2Fx", outside /admin
    assert await decide("/admin%2Fx") == (200, "ok", "/admin%2Fx")
    # an allowed ;parameter is dropped, so it cannot hide the subtree
    assert await decide("/admin;x/y") == (403, "route.deny", "/admin/y")
    assert await decide("/public;v=1/x") == (200, "ok", "/public/x")
    # classes not listed stay refused, and ..; never passes
    assert (await decide("/v1/../admin"))[:2] == (400, "request.ambiguous_path")
    assert (await decide("/v1/..;/admin"))[:2] == (400, "request.ambiguous_path")


@pytest.mark.parametrize("target", ["api/items", "*", "http://evil.test/a"])
def test_targets_that_are_not_origin_form_are_malformed_in_both_doors(target: str) -> None:
    with pytest.raises(Malformed) as grpc_err:
        envoy_grpc.to_request(_check(target))
    s = {"type": "http", "method": "GET", "client": ("10.0.0.1", 1), "headers": [(b"x-forwarded-method", b"GET"), (b"x-forwarded-uri", target.encode()), (b"x-forwarded-host", b"api.example.com")]}
    with pytest.raises(Malformed) as http_err:
        door.to_request(s, door.FORWARD_AUTH)
    assert grpc_err.value.reason == http_err.value.reason == "request.malformed"
