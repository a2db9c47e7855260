"""One table of hostile requests, the same refusal through both doors of one running authz.

Each row is one request, sent twice to the same ``authz serve`` process:

* to the gRPC door over a real gRPC socket, as the ``CheckRequest`` Envoy
  would send (``encode_raw_headers``: raw ``header_map`` entries, so hostile
  bytes arrive as they were);
* to the HTTP door over real HTTP in its Envoy convention (``/envoy`` prefix),
  written as raw bytes on the socket where an HTTP client would refuse them.

Both must answer the same status and reason. Then the addresses: a source
address that is not an IP address is refused, and an X-Forwarded-For entry
that is not one ends the walk at the last trusted hop, through both doors.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2

from tests.support.jwt_tokens import mint
from tests.support.procs import LOOPBACK
from tests.support.proxies import start_authz_http

POLICY = Path(__file__).parent / "policies" / "http_door.yaml"
HOST = "api.example.test"
_clients = itertools.count(1)


@dataclass
class Hostile:
    """One request, as both doors receive it."""

    id: str
    expected: tuple[int, str]
    method: str = "GET"
    target: str = "/api/items"
    #: Host field lines (the gRPC door gets the first as http.host and each as an :authority entry)
    hosts: list[str] = field(default_factory=lambda: [HOST])
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    peer: str = "127.0.0.1"


ROWS = [
    Hostile("plain", (200, "ok")),
    Hostile("tab-in-a-value", (200, "ok"), headers=[("x-note", b"a\tb")]),
    Hostile("utf8-value", (200, "ok"), headers=[("x-note", "café".encode())]),
    # the target
    Hostile("space-in-path", (400, "request.malformed"), target="/api/a b"),
    Hostile("relative-path", (400, "request.malformed"), target="api/items"),
    Hostile("asterisk", (400, "request.malformed"), target="*"),
    Hostile("absolute-form", (400, "request.malformed"), target=f"http://{HOST}/api/items"),
    Hostile("nul-in-path", (400, "request.malformed"), target="/api/a\x00b"),
    Hostile("control-in-path", (400, "request.malformed"), target="/api/a\x01b"),
    Hostile("del-in-path", (400, "request.malformed"), target="/api/a\x7fb"),
    Hostile("non-ascii-path", (400, "request.malformed"), target="/api/café"),
    Hostile("target-too-long", (431, "request.too_large"), target="/api/" + "a" * 10_000),
    # the method
    Hostile("empty-method", (400, "request.malformed"), method=""),
    # the host
    Hostile("missing-host", (400, "request.malformed"), hosts=[]),
    Hostile("empty-host", (400, "request.malformed"), hosts=[""]),
    Hostile("duplicate-host", (400, "request.malformed"), hosts=[HOST, "evil.test"]),
    Hostile("duplicate-same-host", (400, "request.malformed"), hosts=[HOST, HOST]),
    Hostile("cr-in-host", (400, "request.malformed"), hosts=[HOST + "\rx-evil: 1"]),
    Hostile("lf-in-host", (400, "request.malformed"), hosts=[HOST + "\nx-evil: 1"]),
    Hostile("nul-in-host", (400, "request.malformed"), hosts=[HOST + "\x00"]),
    Hostile("space-in-host", (400, "request.malformed"), hosts=["api example.test"]),
    Hostile("slash-in-host", (400, "request.malformed"), hosts=[HOST + "/admin"]),
    Hostile("non-ascii-host", (400, "request.malformed"), hosts=["apí.example.test"]),
    Hostile("long-host", (400, "request.malformed"), hosts=["a" * 1000 + ".test"]),
    Hostile("absurdly-long-host", (431, "request.too_large"), hosts=["a" * 70_000 + ".test"]),
    # header names
    Hostile("control-in-name", (400, "request.malformed"), headers=[("x-a\x01b", b"v")]),
    Hostile("space-in-name", (400, "request.malformed"), headers=[("x a", b"v")]),
    Hostile("empty-name", (400, "request.malformed"), headers=[("", b"v")]),
    Hostile("separator-in-name", (400, "request.malformed"), headers=[("x(a)", b"v")]),
    Hostile("non-ascii-name", (400, "request.malformed"), headers=[("x-café", b"v")]),
    # header values
    Hostile("non-utf8-value", (400, "request.bad_encoding"), headers=[("x-note", b"caf\xe9")]),
    Hostile("nul-in-value", (400, "request.malformed"), headers=[("x-note", b"a\x00b")]),
    Hostile("cr-in-value", (400, "request.malformed"), headers=[("x-note", b"a\rb")]),
    Hostile("lf-in-value", (400, "request.malformed"), headers=[("x-note", b"a\nb")]),
    Hostile("control-in-value", (400, "request.malformed"), headers=[("x-note", b"a\x1bb")]),
    Hostile("del-in-value", (400, "request.malformed"), headers=[("x-note", b"a\x7fb")]),
    Hostile("control-and-non-utf8", (400, "request.malformed"), headers=[("x-a", b"\xff"), ("x-b", b"\x01")]),
    Hostile("too-many-headers", (431, "request.too_large"), headers=[(f"x-h{i}", b"v") for i in range(130)]),
    # X-Forwarded-For behind the (trusted) loopback peer: a malformed entry is never an identity
    Hostile("forwarded-garbage", (200, "ok"), headers=[("x-forwarded-for", b"garbage")]),
    Hostile("forwarded-denied-then-garbage", (200, "ok"), headers=[("x-forwarded-for", b"203.0.113.66, garbage")]),
    Hostile("forwarded-garbage-then-denied", (403, "ip.denied"), headers=[("x-forwarded-for", b"garbage, 203.0.113.66")]),
    Hostile("forwarded-empty-entry", (200, "ok"), headers=[("x-forwarded-for", b"203.0.113.66, , 127.0.0.1")]),
    Hostile("forwarded-mapped-denied", (403, "ip.denied"), headers=[("x-forwarded-for", b"::ffff:203.0.113.66")]),
    Hostile("forwarded-with-port", (403, "ip.denied"), headers=[("x-forwarded-for", b"203.0.113.66:4431")]),
    Hostile("forwarded-zone-id", (200, "ok"), headers=[("x-forwarded-for", b"fe80::1%eth0")]),
]

#: the client address authz must decide on, for the allowed rows that test one
CLIENT_IP = {
    "forwarded-garbage": "127.0.0.1",
    "forwarded-denied-then-garbage": "127.0.0.1",
    "forwarded-empty-entry": "127.0.0.1",
    "forwarded-zone-id": "127.0.0.1",
    "plain": "127.0.0.1",
}


@pytest.fixture(scope="module")
def authz() -> Iterator[tuple[int, int]]:
    proc, grpc_port, http_port = start_authz_http(POLICY)
    with proc:
        yield grpc_port, http_port


@pytest.fixture(scope="module")
def check(authz: tuple[int, int]) -> Iterator[Any]:
    with grpc.insecure_channel(f"{LOOPBACK}:{authz[0]}") as channel:
        yield channel.unary_unary(
            "/envoy.service.auth.v3.Authorization/Check",
            request_serializer=external_auth_pb2.CheckRequest.SerializeToString,
            response_deserializer=external_auth_pb2.CheckResponse.FromString,
        )


@dataclass
class Answer:
    status: int
    reason: str
    headers: dict[str, str]


def check_request(row: Hostile, client: str, peer: address_pb2.Address | None = None) -> Any:
    """The CheckRequest Envoy would send for the row (encode_raw_headers: raw header_map entries)."""
    entries = [base_pb2.HeaderValue(key=":authority", raw_value=h.encode()) for h in row.hosts]
    entries += [
        base_pb2.HeaderValue(key=":method", raw_value=row.method.encode()),
        base_pb2.HeaderValue(key=":path", raw_value=row.target.encode()),
        base_pb2.HeaderValue(key=":scheme", raw_value=b"http"),
        base_pb2.HeaderValue(key="x-client", raw_value=client.encode()),
    ]
    entries += [base_pb2.HeaderValue(key=k, raw_value=v) for k, v in row.headers]
    http = ac.AttributeContext.HttpRequest(
        id="1", method=row.method, path=row.target, host=row.hosts[0] if row.hosts else "", scheme="http",
        protocol="HTTP/1.1", header_map=base_pb2.HeaderMap(headers=entries),
    )  # fmt: skip
    if peer is None:
        peer = address_pb2.Address(socket_address=address_pb2.SocketAddress(address=row.peer, port_value=40000))
    return external_auth_pb2.CheckRequest(
        attributes=ac.AttributeContext(source=ac.AttributeContext.Peer(address=peer), request=ac.AttributeContext.Request(http=http))
    )


def via_grpc(check: Any, req: Any) -> Answer:
    resp = check(req, timeout=5)
    if resp.status.code == 0:
        headers = {h.header.key: h.header.value for h in resp.ok_response.headers}
        return Answer(200, resp.dynamic_metadata.fields["reason"].string_value, headers)
    denied = resp.denied_response
    return Answer(denied.status.code, json.loads(denied.body)["error"], {h.header.key: h.header.value for h in denied.headers})


def raw_request(row: Hostile, client: str) -> bytes:
    """The same request as Envoy's http_service would send it to ``/envoy``, byte for byte."""
    lines = [row.method.encode() + b" /envoy" + row.target.encode() + b" HTTP/1.1"]
    lines += [b"Host: " + h.encode() for h in row.hosts]
    lines += [name.encode() + b": " + value for name, value in row.headers]
    lines += [b"x-client: " + client.encode(), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def via_http(port: int, data: bytes) -> Answer:
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while True:  # authz closes the connection (Connection: close, or after a refusal)
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(status_line.split()[1])
    reason = "ok" if status == 200 else json.loads(body)["error"]
    return Answer(status, reason, headers)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_the_same_hostile_request_gets_the_same_answer_through_both_doors(authz: tuple[int, int], check: Any, row: Hostile) -> None:
    grpc_answer = via_grpc(check, check_request(row, f"{row.id}-grpc-{next(_clients)}"))
    http_answer = via_http(authz[1], raw_request(row, f"{row.id}-http-{next(_clients)}"))
    assert (grpc_answer.status, grpc_answer.reason) == row.expected, grpc_answer
    assert (http_answer.status, http_answer.reason) == row.expected, http_answer
    for answer in (grpc_answer, http_answer):
        assert answer.headers["x-authz-decision-id"]
        if row.id in CLIENT_IP:
            assert answer.headers["x-authz-client-ip"] == CLIENT_IP[row.id]


def _socket(address: str) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=address, port_value=40000))


@pytest.mark.parametrize(
    "source",
    [
        _socket("1.2.3.4\r\nx-evil: 1"),
        _socket("garbage"),
        _socket(""),
        _socket("fe80::1%eth0"),
        _socket("127.0.0.1 "),
        address_pb2.Address(pipe=address_pb2.Pipe(path="/run/envoy/ingress.sock")),
        address_pb2.Address(),
    ],
    ids=["crlf", "name", "empty", "zone-id", "trailing-space", "pipe", "no-address"],
)
def test_a_source_that_is_not_an_ip_address_is_refused(check: Any, source: address_pb2.Address) -> None:
    answer = via_grpc(check, check_request(ROWS[0], f"src-{next(_clients)}", peer=source))
    assert (answer.status, answer.reason) == (400, "request.malformed")
    assert "x-evil" not in answer.headers
    assert set(answer.headers) == {"x-authz-decision-id", "content-type", "cache-control"}


@pytest.mark.parametrize(
    ("source", "xff", "client_ip"),
    [
        ("::ffff:127.0.0.1", b"", "127.0.0.1"),  # mapped: the same client, and still the trusted proxy
        ("::ffff:127.0.0.1", b"198.51.100.7", "198.51.100.7"),
        ("::1", b"[2001:DB8::7]:443", "2001:db8::7"),
        ("::1", b"::ffff:198.51.100.7", "198.51.100.7"),
        ("0:0:0:0:0:0:0:1", b"", "::1"),
    ],
)
def test_addresses_are_canonical(check: Any, source: str, xff: bytes, client_ip: str) -> None:
    row = Hostile("canonical", (200, "ok"), headers=[("x-forwarded-for", xff)] if xff else [], peer=source)
    answer = via_grpc(check, check_request(row, f"canon-{next(_clients)}"))
    assert (answer.status, answer.reason) == (200, "ok")
    assert answer.headers["x-authz-client-ip"] == client_ip


# -- the last check before the wire: a verified token whose subject would split a header


def _crlf_token() -> str:
    now = int(time.time())
    return mint("ES256", sub="alice\r\nx-authz-role: admin", iat=now - 10, exp=now + 300)


def test_a_header_that_would_split_fails_closed_in_both_doors(authz: tuple[int, int], check: Any) -> None:
    # the subject becomes x-authz-subject: a valid signature does not make CR LF writable
    row = Hostile("crlf-subject", (503, "internal.error"), target="/jwt/orders", headers=[("authorization", f"Bearer {_crlf_token()}".encode())])
    grpc_answer = via_grpc(check, check_request(row, f"crlf-grpc-{next(_clients)}"))
    http_answer = via_http(authz[1], raw_request(row, f"crlf-http-{next(_clients)}"))
    for answer in (grpc_answer, http_answer):
        assert (answer.status, answer.reason) == (503, "internal.error"), answer
        assert "x-authz-role" not in answer.headers
        assert "x-authz-subject" not in answer.headers
        assert answer.headers["x-authz-decision-id"]
    assert set(grpc_answer.headers) == {"x-authz-decision-id", "content-type", "cache-control"}
    # (the server may add its own "connection: close")
    assert set(http_answer.headers) - {"connection"} == {"x-authz-decision-id", "content-type", "cache-control", "content-length"}
