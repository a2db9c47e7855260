"""The HTTP door's adapter: conventions -> Request, Decision -> HTTP answer, hostile input.

The ASGI callable is driven with ASGI scopes as uvicorn builds them, against a
real engine on the test policy and the memory store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from authz.adapters import http as door
from authz.decision import Decision, Identity, Outcome
from authz.pipeline import Engine
from authz.policy import load_policy
from authz.store import store_from_url

POLICY = Path(__file__).parents[1] / "integration" / "policies" / "http_door.yaml"


def scope(
    path: bytes = b"/envoy/api/items",
    headers: list[tuple[bytes, bytes]] | None = None,
    method: str = "GET",
    client: tuple[str, int] = ("127.0.0.1", 5555),
    raw_target: bytes | None = None,
) -> dict[str, Any]:
    target = raw_target if raw_target is not None else path
    raw_path, _, query = target.partition(b"?")
    headers = list(headers or [])
    if not any(name == b"host" for name, _ in headers):
        headers.insert(0, (b"host", b"api.example.test"))  # every HTTP/1.1 request has one
    s: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": raw_path.decode("latin-1"),
        "raw_path": raw_path,
        "query_string": query,
        "headers": headers,
        "client": client,
        door.RAW_TARGET: target,
    }
    return s


@pytest.fixture
def engine() -> Engine:
    return Engine(load_policy(str(POLICY)), store_from_url("memory://", now_ms=0))


async def call(app: door.HttpDoor, s: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the door must never read a body")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(s, receive, send)
    start, body = sent
    headers = {n.decode(): v.decode() for n, v in start["headers"]}
    assert headers["content-length"] == str(len(body["body"]))
    return start["status"], headers, body["body"]


# Modes


def test_modes_pick_the_longest_whole_segment_prefix_and_strip_it() -> None:
    modes = door.Modes.parse("envoy, /ext=forward-auth, /ext/nginx=nginx")
    assert modes.match(b"/ext/nginx") == ("nginx", b"/")
    assert modes.match(b"/ext/nginx/a") == ("nginx", b"/a")
    assert modes.match(b"/ext/x") == ("forward-auth", b"/x")
    assert modes.match(b"/extra") == ("envoy", b"/extra")  # not a segment of /ext
    assert door.Modes.parse(door.DEFAULT_MODES).match(b"/healthz") is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no convention"),
        ("grpc", "mode must be one of"),
        ("envoy=/x", "mode must be one of"),
        ("x=envoy", "starting with '/'"),
        ("/a=envoy,/a/=nginx", "given twice"),
        ("/ä=envoy", "ASCII"),
    ],
)
def test_bad_mode_specs_are_refused_with_the_entry(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        door.Modes.parse(spec)


# conventions -> Request


def test_envoy_request_is_the_original_request_minus_hop_headers() -> None:
    s = scope(
        headers=[
            (b"host", b"API.Example.com:8443"),
            (b"content-length", b"0"),
            (b"x-envoy-expected-rq-timeout-ms", b"250"),
            (b"accept", b"a"),
            (b"accept", b"b"),
            (b"x-forwarded-for", b"198.51.100.7"),
            (b"x-forwarded-proto", b"https"),
            (b"x-request-id", b"rid-1"),
            (b"x-forwarded-uri", b"/admin/"),  # not a convention header in envoy mode
        ],
        raw_target=b"/envoy/api/items?b=2&a=1",
    )
    req = door.to_request(s, door.ENVOY, b"/api/items?b=2&a=1")
    assert (req.method, req.path, req.query, req.has_query) == ("GET", "/api/items", "b=2&a=1", True)
    assert (req.host, req.scheme, req.door, req.request_id) == ("api.example.com:8443", "https", "http", "rid-1")
    assert (req.peer_ip, req.peer_port) == ("127.0.0.1", 5555)
    assert dict(req.headers) == {
        "accept": "a, b",
        "x-forwarded-for": "198.51.100.7",
        "x-forwarded-proto": "https",
        "x-request-id": "rid-1",
        "x-forwarded-uri": "/admin/",
    }


def test_envoy_external_address_stands_in_for_a_missing_forwarded_for() -> None:
    req = door.to_request(scope(headers=[(b"x-envoy-external-address", b"198.51.100.9")]), door.ENVOY, b"/x")
    assert req.headers["x-forwarded-for"] == "198.51.100.9"
    both = [(b"x-envoy-external-address", b"198.51.100.9"), (b"x-forwarded-for", b"203.0.113.1")]
    assert door.to_request(scope(headers=both), door.ENVOY, b"/x").headers["x-forwarded-for"] == "203.0.113.1"


def test_forward_auth_convention_headers_never_reach_the_request() -> None:
    s = scope(
        path=b"/forward-auth",
        headers=[
            (b"host", b"authz:9190"),
            (b"x-forwarded-method", b"DELETE"),
            (b"x-forwarded-uri", b"/api/items/7?force=1"),
            (b"x-forwarded-host", b"API.example.com"),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-port", b"443"),
            (b"x-forwarded-server", b"traefik-1"),
            (b"x-forwarded-for", b"198.51.100.7"),
            (b"x-real-ip", b"198.51.100.7"),
            (b"authorization", b"Bearer t"),
        ],
    )
    req = door.to_request(s, door.FORWARD_AUTH)
    assert (req.method, req.path, req.query, req.host, req.scheme) == ("DELETE", "/api/items/7", "force=1", "api.example.com", "https")
    assert dict(req.headers) == {"x-forwarded-for": "198.51.100.7", "x-real-ip": "198.51.100.7", "authorization": "Bearer t"}


def test_nginx_convention_falls_back_to_host_and_http() -> None:
    s = scope(path=b"/nginx", headers=[(b"host", b"api.example.com"), (b"x-original-method", b"PUT"), (b"x-original-uri", b"/api/x?")])
    req = door.to_request(s, door.NGINX)
    assert (req.method, req.path, req.query, req.has_query, req.host, req.scheme) == ("PUT", "/api/x", "", True, "api.example.com", "http")
    assert dict(req.headers) == {}


def test_auto_picks_the_convention_from_the_headers() -> None:
    nginx = scope(headers=[(b"x-original-method", b"GET"), (b"x-original-uri", b"/n")])
    fwd = scope(headers=[(b"x-forwarded-method", b"GET"), (b"x-forwarded-uri", b"/f")])
    assert door.to_request(nginx, door.AUTO).path == "/n"
    assert door.to_request(fwd, door.AUTO).path == "/f"
    assert door.to_request(scope(), door.AUTO, b"/e").path == "/e"


@pytest.mark.parametrize(
    ("mode", "headers", "reason", "detail"),
    [
        (door.FORWARD_AUTH, [(b"x-forwarded-uri", b"/a")], "request.malformed", "X-Forwarded-Method"),
        (door.FORWARD_AUTH, [(b"x-forwarded-method", b"GET")], "request.malformed", "X-Forwarded-Uri"),
        (door.NGINX, [(b"x-original-method", b"GET")], "request.malformed", "X-Original-URI"),
        (door.FORWARD_AUTH, [(b"x-forwarded-method", b"G E"), (b"x-forwarded-uri", b"/a")], "request.malformed", "method"),
        (door.FORWARD_AUTH, [(b"x-forwarded-method", b"GET"), (b"x-forwarded-uri", b"a/b")], "request.malformed", "target"),
        (door.FORWARD_AUTH, [(b"x-forwarded-method", b"GET"), (b"x-forwarded-uri", b"/a b")], "request.malformed", "target"),
        (door.NGINX, [(b"x-original-method", b"GET"), (b"x-original-uri", b"/a"), (b"x-forwarded-proto", b"gopher")], "request.malformed", "Proto"),
        (door.FORWARD_AUTH, [(b"x-forwarded-method", b"GET"), (b"x-forwarded-uri", b"/a"), (b"x-n", b"\xff\xfe")], "request.bad_encoding", "UTF-8"),
        (door.FORWARD_AUTH, [(b"x-forwarded-method", b"GET"), (b"x-forwarded-uri", b"/a"), (b"x-n", b"a\x00b")], "request.malformed", "control"),
        (door.ENVOY, [(b"x-n", b"a\x1bb")], "request.malformed", "control"),
        # control characters win over non-UTF-8, as the parser refuses them first
        (door.ENVOY, [(b"x-a", b"\xff"), (b"x-n", b"a\x1bb")], "request.malformed", "control"),
        (door.FORWARD_AUTH, [(b"x-forwarded-method", b"GET"), (b"x-forwarded-uri", b"http://evil.test/a")], "request.malformed", "target"),
        (door.FORWARD_AUTH, [(b"x-forwarded-method", b"GET"), (b"x-forwarded-uri", "/caf\u00e9".encode())], "request.malformed", "target"),
        (door.FORWARD_AUTH, [(b"x-forwarded-method", b"GET"), (b"x-forwarded-uri", b"/a"), (b"x-forwarded-uri", b"/b")], "request.malformed", "more than one x-forwarded-uri"),
        (door.FORWARD_AUTH, [(b"x-forwarded-method", b"GET"), (b"x-forwarded-uri", b"/a"), (b"x-forwarded-host", b"a.test"), (b"x-forwarded-host", b"b.test")], "request.malformed", "more than one x-forwarded-host"),
        (door.ENVOY, [(b"host", b"a.test"), (b"host", b"b.test")], "request.malformed", "more than one host"),
        (door.ENVOY, [(b"host", b"")], "request.malformed", "no Host"),
        (door.ENVOY, [(b"host", b"a.test/evil")], "request.malformed", "Host"),
        (door.ENVOY, [(b"host", b"a" * 300)], "request.malformed", "Host"),
        (door.NGINX, [(b"x-original-method", b""), (b"x-original-uri", b"/a")], "request.malformed", "X-Original-Method"),
        # found by fuzzing: the other Host, non-ASCII targets, transfer codings, Unicode spaces
        (door.NGINX, [(b"x-original-method", b"GET"), (b"x-original-uri", b"/a"), (b"host", b"a"), (b"host", b"b")], "request.malformed", "(?i)host"),
        (door.FORWARD_AUTH, [(b"x-forwarded-method", b"GET"), (b"x-forwarded-uri", b"/a"), (b"x-forwarded-host", b"a b")], "request.malformed", "Host"),
        (door.FORWARD_AUTH, [(b"x-forwarded-method", b"GET"), (b"x-forwarded-uri", b"/a"), (b"host", b"a.test"), (b"x-forwarded-host", b"b.test"), (b"host", b"c")], "request.malformed", "(?i)host"),
        (door.FORWARD_AUTH, [(b"x-forwarded-method", b"GET"), (b"x-forwarded-uri", b"/a"), (b"host", b"a.test/x"), (b"x-forwarded-host", b"b.test")], "request.malformed", "Host"),
        (door.NGINX, [(b"x-original-method", b"GET"), (b"x-original-uri", "\uff0fadmin".encode())], "request.malformed", "target"),
        (door.NGINX, [(b"x-original-method", b"GET"), (b"x-original-uri", b"/a"), (b"transfer-encoding", b"gzip")], "request.malformed", "Transfer-Encoding"),
        (door.ENVOY, [(b"transfer-encoding", b"chunked, gzip")], "request.malformed", "Transfer-Encoding"),
        (door.NGINX, [(b"x-original-method", b"GET"), (b"x-original-uri", b"/a"), (b"x-forwarded-proto", "\u2028http".encode())], "request.malformed", "Proto"),
    ],
)
def test_malformed_convention_input_is_a_reasoned_refusal(
    mode: str, headers: list[tuple[bytes, bytes]], reason: str, detail: str
) -> None:
    with pytest.raises(door.Malformed, match=detail) as err:
        door.to_request(scope(headers=headers), mode, b"/a")
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "client",
    [("1.2.3.4\r\nx-evil: 1", 5555), ("garbage", 1), ("", 0), ("fe80::1%eth0", 1)],
    ids=["crlf", "name", "empty", "zone-id"],
)
def test_the_peer_must_be_an_ip_address(client: tuple[str, int]) -> None:
    with pytest.raises(door.Malformed, match="peer address") as err:
        door.to_request(scope(client=client), door.ENVOY, b"/a")
    assert err.value.reason == "request.malformed"


def test_the_peer_is_canonical() -> None:
    assert door.to_request(scope(client=("::ffff:127.0.0.1", 1)), door.ENVOY, b"/a").peer_ip == "127.0.0.1"
    assert door.to_request(scope(client=("2001:DB8:0::1", 1)), door.ENVOY, b"/a").peer_ip == "2001:db8::1"


@pytest.mark.parametrize("version", ["0.9", "2.0", "2", "1.2"])
def test_only_http_1_requests_are_read(version: str) -> None:
    s = scope(headers=[(b"host", b"api.test")])
    assert door.to_request(s, door.ENVOY, b"/a").host == "api.test"
    s["http_version"] = version
    with pytest.raises(door.Malformed, match=r"HTTP/1\.0 or HTTP/1\.1") as err:
        door.to_request(s, door.ENVOY, b"/a")
    assert err.value.reason == "request.malformed"


# the ASGI callable, end to end through the engine


async def test_allow_answers_200_with_upstream_and_client_headers(engine: Engine) -> None:
    app = door.HttpDoor(engine, door.Modes.parse(door.DEFAULT_MODES))
    status, headers, body = await call(
        app, scope(headers=[(b"x-client", b"u1"), (b"x-authz-subject", b"forged"), (b"x-authz-zzz", b"forged")], raw_target=b"/envoy/api/x")
    )
    assert (status, body) == (200, b"")
    assert headers["x-authz-auth"] == "anonymous"
    assert headers["x-authz-client-ip"] == "127.0.0.1"
    assert "x-authz-subject" not in headers
    assert headers["ratelimit"].startswith('"roomy";r=')
    # Envoy strips the client's own x-authz-* headers on authz's word
    assert headers["x-envoy-auth-headers-to-remove"] == "x-authz-subject, x-authz-zzz"


async def test_deny_answers_the_decision_status_headers_and_body(engine: Engine) -> None:
    app = door.HttpDoor(engine, door.Modes.parse(door.DEFAULT_MODES))
    status, headers, body = await call(
        app, scope(path=b"/forward-auth", headers=[(b"x-forwarded-method", b"GET"), (b"x-forwarded-uri", b"/admin/x")])
    )
    assert status == 403
    assert json.loads(body) == {"error": "route.deny", "decision_id": headers["x-authz-decision-id"]}
    assert headers["content-type"] == "application/json"
    assert "x-authz-status" not in headers


async def test_nginx_gets_403_and_the_real_status_in_a_header(engine: Engine) -> None:
    app = door.HttpDoor(engine, door.Modes.parse(door.DEFAULT_MODES))
    nginx = scope(path=b"/nginx", headers=[(b"x-original-method", b"GET"), (b"x-original-uri", b"/limited/a"), (b"x-client", b"n1")])
    assert (await call(app, nginx))[0] == 200
    assert (await call(app, nginx))[0] == 200
    status, headers, body = await call(app, nginx)
    assert (status, headers["x-authz-status"], headers["x-authz-reason"]) == (403, "429", "quota.exhausted")
    assert headers["retry-after"]
    assert json.loads(body)["error"] == "quota.exhausted"
    denied = scope(path=b"/nginx", headers=[(b"x-original-method", b"GET"), (b"x-original-uri", b"/admin/")])
    status, headers, _ = await call(app, denied)
    assert (status, headers["x-authz-status"]) == (403, "403")


async def test_unreadable_requests_and_unknown_paths_are_decisions_not_errors(engine: Engine) -> None:
    recorded: list[Decision] = []
    engine.on_decision = recorded.append
    app = door.HttpDoor(engine, door.Modes.parse(door.DEFAULT_MODES))
    status, headers, body = await call(app, scope(path=b"/forward-auth", headers=[(b"x-forwarded-uri", b"/a")]))
    assert (status, json.loads(body)["error"]) == (400, "request.malformed")
    status, _, body = await call(app, scope(raw_target=b"/elsewhere/x"))
    assert (status, json.loads(body)["error"]) == (400, "request.malformed")
    assert [d.reason for d in recorded] == ["request.malformed", "request.malformed"]
    assert recorded[0].signals == [("request.problem", "forward-auth: no X-Forwarded-Method header")]


async def test_health_answers_only_where_no_convention_claims_the_path(engine: Engine) -> None:
    serving = [True]
    app = door.HttpDoor(engine, door.Modes.parse(door.DEFAULT_MODES), serving=lambda: serving[0])
    assert (await call(app, scope(raw_target=b"/healthz")))[:1] == (200,)
    serving[0] = False
    status, _, body = await call(app, scope(raw_target=b"/healthz"))
    assert (status, json.loads(body)) == (503, {"status": "not_serving", "components": {}})
    # with envoy on every path, /healthz is a request like any other (never a bypass)
    everything = door.HttpDoor(engine, door.Modes.parse("envoy"))
    status, headers, _ = await call(everything, scope(raw_target=b"/healthz"))
    assert status == 403 and headers["x-authz-decision-id"]


def test_a_header_value_that_would_split_the_response_fails_closed() -> None:
    decision = Decision(
        id="d-1", outcome=Outcome.ALLOW, status=200, reason="ok", time_ms=0, identity=Identity(),
        upstream_headers=[("x-authz-subject", "alice\r\nx-authz-role: admin")],
    )  # fmt: skip
    status, headers, body = door.render(decision, door.ENVOY)
    assert status == 503
    assert json.loads(body)["error"] == "internal.error"
    assert all(b"\r" not in v and b"\n" not in v for _, v in headers)


def test_raw_refusal_is_a_complete_http_response() -> None:
    decision = Decision(
        id="d-2", outcome=Outcome.DENY, status=431, reason="request.too_large", time_ms=0,
        client_headers=[("x-authz-decision-id", "d-2")], body=b'{"error":"request.too_large","decision_id":"d-2"}',
    )  # fmt: skip
    raw = door.render_raw(decision)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"connection: close" in head and b"content-length: %d" % len(body) in head
    assert json.loads(body)["error"] == "request.too_large"
