"""CheckRequest -> Request and Decision -> CheckResponse, on Envoy's real protobuf types."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.service.auth.v3 import attribute_context_pb2 as ac

from authz.adapters import envoy_grpc
from authz.decision import Decision, Identity, Outcome

HV = base_pb2.HeaderValue


def check_request(
    *,
    header_map: list[tuple[str, bytes]] | None = None,
    headers: dict[str, str] | None = None,
    path: str = "/v1/items?b=2&a=1",
    method: str = "GET",
    host: str = "API.example.com",
    source: str = "203.0.113.5",
    scheme: str = "https",
) -> envoy_grpc.CheckRequest:
    http = ac.AttributeContext.HttpRequest(id="42", method=method, path=path, host=host, scheme=scheme, protocol="HTTP/2")
    if header_map is not None:
        http.header_map.CopyFrom(base_pb2.HeaderMap(headers=[HV(key=k, raw_value=v) for k, v in header_map]))
    if headers is not None:
        http.headers.update(headers)
    return envoy_grpc.CheckRequest(
        attributes=ac.AttributeContext(
            source=ac.AttributeContext.Peer(
                address=address_pb2.Address(pipe=address_pb2.Pipe(path="/run/envoy.sock"))
                if source == "pipe"
                else address_pb2.Address(socket_address=address_pb2.SocketAddress(address=source, port_value=4431)),
                principal="spiffe://example.org/bot",
            ),
            request=ac.AttributeContext.Request(http=http),
            context_extensions={"tenant": "a"},
        )
    )


def test_header_map_repeated_lines_join_with_comma_space_and_pseudo_headers_drop() -> None:
    req = envoy_grpc.to_request(
        check_request(header_map=[(":authority", b"api.example.com"), (":path", b"/x"), ("accept", b"text/html"), ("Accept", b" application/json "), ("x-empty", b"")])
    )
    assert dict(req.headers) == {"accept": "text/html, application/json", "x-empty": ""}
    assert (req.method, req.path, req.query, req.has_query) == ("GET", "/v1/items", "b=2&a=1", True)
    assert (req.host, req.scheme, req.protocol, req.request_id) == ("api.example.com", "https", "HTTP/2", "42")
    assert (req.peer_ip, req.peer_port, req.tls_principal) == ("203.0.113.5", 4431, "spiffe://example.org/bot")
    assert dict(req.context) == {"tenant": "a"} and req.door == "grpc"


def test_headers_map_is_used_when_header_map_is_absent() -> None:
    req = envoy_grpc.to_request(check_request(headers={":authority": "api.example.com", "user-agent": "curl/8", "accept": "a,b"}))
    assert dict(req.headers) == {"user-agent": "curl/8", "accept": "a,b"}


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"header_map": [("x", b"\xff\xfe")]}, "request.bad_encoding"),
        ({"header_map": [("x", b"a\r\nInjected: 1")]}, "request.malformed"),
        ({"header_map": [("x", b"a\x00b")]}, "request.malformed"),
        ({"header_map": [("x", b"a\x7fb")]}, "request.malformed"),
        ({"header_map": [("x", b"\xff"), ("y", b"a\x01")]}, "request.malformed"),
        ({"header_map": [("bad name", b"v")]}, "request.malformed"),
        ({"header_map": [("x\x01y", b"v")]}, "request.malformed"),
        ({"header_map": [("", b"v")]}, "request.malformed"),
        ({"header_map": [("x:y", b"v")]}, "request.malformed"),
        ({"header_map": [("x,authorization", b"v")]}, "request.malformed"),
        ({"header_map": [(":authority", b"api.example.com"), (":authority", b"evil.test")]}, "request.malformed"),
        ({"header_map": [(":authority", b"evil.test")]}, "request.malformed"),
        ({"header_map": [("host", b"evil.test")]}, "request.malformed"),
        ({"headers": {"host": "evil.test"}}, "request.malformed"),
        ({"headers": {"x": "a\r\nb"}}, "request.malformed"),
        ({"host": ""}, "request.malformed"),
        ({"host": "api.example.com\r\nx-evil: 1"}, "request.malformed"),
        ({"host": "a" * 300}, "request.malformed"),
        ({"host": "a" * 70_000}, "request.too_large"),
        ({"path": "api/items"}, "request.malformed"),
        ({"path": "/a b"}, "request.malformed"),
        ({"path": "/a\x00b"}, "request.malformed"),
        ({"path": "*"}, "request.malformed"),
        ({"path": "http://evil.test/a"}, "request.malformed"),
        ({"path": "/caf\u00e9"}, "request.malformed"),
        ({"source": "1.2.3.4\r\nx-evil: 1"}, "request.malformed"),
        ({"source": "garbage"}, "request.malformed"),
        ({"source": ""}, "request.malformed"),
        ({"source": "fe80::1%eth0"}, "request.malformed"),
        ({"source": "pipe"}, "request.malformed"),
        ({"header_map": [(f"h{i}", b"v") for i in range(300)]}, "request.too_large"),
        ({"header_map": [("big", b"v" * 70_000)]}, "request.too_large"),
        ({"path": ""}, "request.malformed"),
        ({"method": ""}, "request.malformed"),
        ({"method": "G E T"}, "request.malformed"),
        # found by tests/fuzz: targets, authorities, schemes and names Envoy would never send
        ({"path": "\uff0f"}, "request.malformed"),  # a fullwidth solidus is not "/"
        ({"path": "*"}, "request.malformed"),
        ({"path": "v1/items"}, "request.malformed"),
        ({"path": "/v1/a b"}, "request.malformed"),
        ({"path": "/v1/\x0b"}, "request.malformed"),
        ({"path": "/v1/caf\u00e9"}, "request.malformed"),
        ({"path": "HTTP://api.example.com/v1"}, "request.malformed"),
        ({"host": "api.example.com/admin"}, "request.malformed"),
        ({"host": "a b"}, "request.malformed"),
        ({"host": "\x1bapi"}, "request.malformed"),
        ({"host": "user@api.example.com"}, "request.malformed"),
        ({"scheme": "ftp"}, "request.malformed"),
        ({"scheme": "https "}, "request.malformed"),
        ({"header_map": [("content-digest/", b"v")]}, "request.malformed"),
        ({"header_map": [("x(y)", b"v")]}, "request.malformed"),
        ({"header_map": [("", b"v")]}, "request.malformed"),
        ({"headers": {"": "v"}}, "request.malformed"),
    ],
)
def test_malformed_check_requests_name_a_reason(kwargs: dict[str, object], reason: str) -> None:
    with pytest.raises(envoy_grpc.Malformed) as info:
        envoy_grpc.to_request(check_request(**kwargs), max_headers=256, max_header_bytes=65536)  # type: ignore[arg-type]
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("path", "host", "scheme", "expect"),
    [
        ("/v1/a?b=%20&c", "api.example.com:8443", "HTTPS", ("/v1/a", "api.example.com:8443", "https")),
        ("/v1/x", "[2001:db8::1]:443", "", ("/v1/x", "[2001:db8::1]:443", "http")),
        ("/", "a", "http", ("/", "a", "http")),
    ],
)
def test_valid_targets_authorities_and_schemes_are_kept(path: str, host: str, scheme: str, expect: tuple[str, str, str]) -> None:
    req = envoy_grpc.to_request(check_request(path=path, host=host, scheme=scheme))
    assert (req.path, req.host, req.scheme) == expect


@pytest.mark.parametrize("address", ["\x00172.16.0.1", "203.0.113.5 ", "localhost", "10.0.0.1\r\nx: y"])
def test_a_source_address_that_is_not_an_ip_is_malformed(address: str) -> None:
    with pytest.raises(envoy_grpc.Malformed) as info:
        envoy_grpc.to_request(check_request(source=address))
    assert info.value.reason == "request.malformed"


def test_missing_http_attributes_is_malformed() -> None:
    with pytest.raises(envoy_grpc.Malformed) as info:
        envoy_grpc.to_request(envoy_grpc.CheckRequest())
    assert info.value.reason == "request.malformed"


def test_the_source_is_canonical() -> None:
    assert envoy_grpc.to_request(check_request(source="::ffff:203.0.113.5")).peer_ip == "203.0.113.5"
    assert envoy_grpc.to_request(check_request(source="2001:DB8:0:0::7")).peer_ip == "2001:db8::7"


def test_tab_in_a_value_is_allowed() -> None:
    req = envoy_grpc.to_request(check_request(header_map=[("x", b"a\tb")]))
    assert req.headers["x"] == "a\tb"


def test_allow_sets_overwrite_on_every_header_and_carries_metadata() -> None:
    d = Decision(
        id="d1", outcome=Outcome.ALLOW, status=200, reason="ok", time_ms=1, route="api",
        identity=Identity(client_ip="203.0.113.5", subject="bot"),
        upstream_headers=[("x-authz-subject", "bot")], client_headers=[("ratelimit", '"q";r=1;t=2')],
        remove_headers=["x-authz-evil"],
    )  # fmt: skip
    resp = envoy_grpc.to_response(d)
    assert resp.status.code == 0
    ok = resp.ok_response
    assert [(h.header.key, h.header.value, h.append_action) for h in ok.headers] == [("x-authz-subject", "bot", envoy_grpc.OVERWRITE)]
    assert [(h.header.key, h.append_action) for h in ok.response_headers_to_add] == [("ratelimit", envoy_grpc.OVERWRITE)]
    assert list(ok.headers_to_remove) == ["x-authz-evil"]
    meta = resp.dynamic_metadata
    assert (meta["decision_id"], meta["reason"], meta["subject"], meta["route"]) == ("d1", "ok", "bot", "api")


@pytest.mark.parametrize(("status", "rpc"), [(401, 16), (403, 7), (429, 8), (503, 14), (400, 3)])
def test_deny_carries_status_body_and_headers(status: int, rpc: int) -> None:
    d = Decision(id="d2", outcome=Outcome.DENY, status=status, reason="x.y", time_ms=1, client_headers=[("www-authenticate", "Bearer"), ("x-authz-decision-id", "d2")], body=b'{"error":"x.y"}')
    resp = envoy_grpc.to_response(d)
    assert resp.status.code == rpc and resp.status.message == "x.y"
    denied = resp.denied_response
    assert denied.status.code == status
    assert denied.body == '{"error":"x.y"}'
    assert [(h.header.key, h.header.value) for h in denied.headers] == [("www-authenticate", "Bearer"), ("x-authz-decision-id", "d2")]
    assert all(h.append_action == envoy_grpc.APPEND for h in denied.headers)
