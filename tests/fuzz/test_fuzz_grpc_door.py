"""Fuzzing the gRPC door: hostile CheckRequests, as raw protobuf bytes.

In-process for volume: the bytes go through the door's own deserializer
(``AuthorizationService.handler()``), ``check`` and the response serializer,
with an engine on tests/fuzz/policy.yaml (JWT, signature and anonymous routes,
an anonymous catch-all) on a pinned clock. A smaller set goes over a real
gRPC socket to ``authz serve``. Properties, for every input:

* the answer is a well-formed CheckResponse (never a gRPC error, never
  ``internal.error``), and the server still serves afterwards;
* a request the oracle calls malformed (tests/fuzz/hostile.py) is never
  allowed; one whose string fields are not UTF-8 is refused ``request.malformed``;
* no input costs more than the profile's deadline (1 s).
"""

from __future__ import annotations

import asyncio
import collections
import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2
from hypothesis import example, given
from hypothesis import strategies as st

from authz.clock import FixedClock
from authz.pipeline import Engine
from authz.policy.compile import load_policy
from authz.server.ext_authz import AuthorizationService
from authz.store import MemoryStore
from tests.fuzz import creds, grpc_wire, hostile
from tests.fuzz.profile import fuzz_settings
from tests.support.jwt_tokens import NOW_MS, NOW_S
from tests.support.procs import LOOPBACK, Proc, start_authz, wait_grpc_serving

POLICY = Path(__file__).parent / "policy.yaml"
CHECK = "/envoy.service.auth.v3.Authorization/Check"
CheckRequest = external_auth_pb2.CheckRequest
CheckResponse = external_auth_pb2.CheckResponse
# RFC 9110: a field line may never carry these in a name or value (Envoy would reset the stream)
_UNSAFE = ("\r", "\n", "\x00")


def test_the_oracle_knows_the_policy_limits() -> None:
    limits = load_policy(POLICY).limits
    assert (limits.max_headers, limits.max_header_bytes, limits.max_target_bytes) == (
        hostile.MAX_HEADERS,
        hostile.MAX_HEADER_BYTES,
        hostile.MAX_TARGET_BYTES,
    )


# the oracle


def malformed(check: Any) -> str | None:
    """Why a decoded CheckRequest is malformed, or None. Written from the RFCs, not from the adapter."""
    attrs = check.attributes
    if not attrs.HasField("request") or not attrs.request.HasField("http"):
        return "no attributes.request.http"
    http = attrs.request.http
    if not hostile.is_token(http.method.encode()):
        return "method is not a token"
    path = http.path.encode()
    if not hostile.is_target(path):
        return "path is not an origin-form or absolute-form target"
    if hostile.target_too_large(path):
        return "target over max_target_bytes"
    if not hostile.is_host(http.host.encode()):
        return "host is not an authority"
    if http.scheme.lower() not in ("", "http", "https"):  # RFC 3986 3.1: case-insensitive
        return "scheme is not http or https"
    if http.HasField("header_map"):
        entries = [(h.key, h.raw_value or h.value.encode()) for h in http.header_map.headers]
        if len(entries) > hostile.MAX_HEADERS * 4:
            return "too many header lines"
    else:
        entries = [(k, v.encode()) for k, v in http.headers.items()]
    names = set()
    size = 0
    for name, value in entries:
        if name.startswith(":"):
            continue  # pseudo-headers: their facts are the typed fields above
        size += len(name.encode()) + len(value)
        names.add(name.lower())
        if not hostile.is_token(name.encode()):
            return f"header name {name[:20]!r} is not a token"
        if not hostile.value_ok(value):
            return f"header {name[:20]!r}: control characters or not UTF-8"
    if len(names) > hostile.MAX_HEADERS or size > hostile.MAX_HEADER_BYTES:
        return "headers over the limits"
    return None


# the answer


def judge(reply: Any) -> tuple[bool, str, str]:
    """(allowed, reason, route) of a CheckResponse, after asserting that it is well formed."""
    meta = reply.dynamic_metadata.fields
    reason = meta["reason"].string_value
    decision_id = meta["decision_id"].string_value
    assert decision_id, "no decision id"
    assert reason and reason != "internal.error", f"reason {reason!r}"
    allowed = reply.status.code == 0
    assert meta["outcome"].string_value == ("allow" if allowed else meta["outcome"].string_value)
    if allowed:
        assert reply.HasField("ok_response") and not reply.HasField("denied_response")
        pairs = [(h.header.key, h.header.value) for h in reply.ok_response.headers]
        pairs += [(h.header.key, h.header.value) for h in reply.ok_response.response_headers_to_add]
        assert ("x-authz-decision-id", decision_id) in pairs
    else:
        denied = reply.denied_response
        assert reply.HasField("denied_response") and not reply.HasField("ok_response")
        assert 400 <= denied.status.code < 600
        assert reply.status.message == reason
        body = json.loads(denied.body)
        assert (body["error"], body["decision_id"]) == (reason, decision_id)
        pairs = [(h.header.key, h.header.value) for h in denied.headers]
        assert ("x-authz-decision-id", decision_id) in pairs
    for name, value in pairs:
        assert name and name == name.lower() and not any(c in name + value for c in _UNSAFE), (name, value)
    return allowed, reason, meta["route"].string_value


def verdict(data: bytes, parts: grpc_wire.Parts | None, reply: Any, stats: collections.Counter[str]) -> None:
    """Every property for one request: well formed; undecodable or malformed is never allowed."""
    allowed, reason, route = judge(reply)
    try:
        decoded = CheckRequest.FromString(data)
    except Exception:
        decoded = None
    if parts is not None and grpc_wire.bad_strings(parts):
        assert decoded is None, "protobuf accepted a string field that is not UTF-8"
    if decoded is None:
        assert (allowed, reason) == (False, "request.malformed"), "undecodable bytes"
        assert reply.denied_response.status.code == 400
        stats["undecodable"] += 1
        return
    why = malformed(decoded)
    if why is not None:
        assert not allowed, f"allowed a malformed request ({why}), route {route!r}"
        stats["malformed"] += 1
    stats[f"{'allow' if allowed else 'deny'}:{route or '-'}:{reason}"] += 1


# in-process


class InProcess:
    """The door as grpcio would call it: its registered deserializer, ``check``, its serializer."""

    def __init__(self) -> None:
        self.engine = Engine(load_policy(POLICY), MemoryStore(epoch_ms=NOW_MS - 600_000), clock=FixedClock(NOW_MS))
        handler = AuthorizationService(self.engine).handler()
        method = handler.service(types.SimpleNamespace(method=CHECK, invocation_metadata=()))
        assert method is not None
        self.method = method
        self.loop = asyncio.new_event_loop()

    def __call__(self, data: bytes) -> Any:
        request = self.method.request_deserializer(data)
        response = self.loop.run_until_complete(self.method.unary_unary(request, None))
        return CheckResponse.FromString(self.method.response_serializer(response))

    def close(self) -> None:
        self.loop.close()


@pytest.fixture(scope="module")
def door() -> Iterator[InProcess]:
    d = InProcess()
    yield d
    d.close()


REQUESTS = grpc_wire.check_requests(list(creds.bearer_tokens(NOW_S)), creds.lines(NOW_S, "http"))


def clean(path: bytes, headers: list[tuple[bytes, bytes]]) -> grpc_wire.Parts:
    """A CheckRequest as Envoy sends it (for the explicit examples that must be allowed)."""
    entries: grpc_wire.Parts = [("headers", [("key", k), ("raw_value", v)]) for k, v in headers]
    http: grpc_wire.Parts = [("method", b"GET"), ("path", path), ("host", b"api.test"), ("scheme", b"http"), ("header_map", entries)]
    source: grpc_wire.Parts = [("address", [("socket_address", [("address", b"172.16.0.1"), ("port_value", 40000)])])]
    return [("attributes", [("source", source), ("request", [("http", http)])])]


#: one request per kind of route that the fuzz policy allows; run first, every time
ALLOWED = {
    "anyone": clean(b"/anyone/x", [(b"user-agent", b"curl/8.0")]),
    "jwt": clean(b"/jwt/orders/1", [(b"authorization", creds.bearer_tokens(NOW_S)[0])]),
    "sig": clean(b"/sig/items", creds.signature_headers(b"GET", "http://api.test/sig/items", NOW_S, "explicit-1")),
}


def test_hostile_check_requests_in_process(door: InProcess) -> None:
    stats: collections.Counter[str] = collections.Counter()

    @fuzz_settings()
    @given(parts=REQUESTS)
    @example(parts=ALLOWED["anyone"])
    @example(parts=ALLOWED["jwt"])
    @example(parts=ALLOWED["sig"])
    def run(parts: grpc_wire.Parts) -> None:
        data = grpc_wire.encode(parts)
        verdict(data, parts, door(data), stats)

    run()
    allowed = {k.split(":")[1] for k in stats if k.startswith("allow:")}
    # the explicit examples are allowed (so the oracle sees allows on every kind of route),
    # generated requests are allowed too, and malformed ones and undecodable bytes were met
    assert allowed >= set(ALLOWED), stats
    assert sum(n for k, n in stats.items() if k.startswith("allow:")) > len(ALLOWED), stats
    assert stats["malformed"] and stats["undecodable"], stats


def mutations() -> st.SearchStrategy[bytes]:
    """A valid-looking request's bytes and one blind change to them: truncate, flip, insert, splice."""

    def mutate(data: bytes, how: int, at: int, junk: bytes) -> bytes:
        cut = at % (len(data) + 1)
        if how == 0:
            return data[:cut]
        if how == 1 and data:
            i = at % len(data)
            return data[:i] + bytes([data[i] ^ (1 << (at % 8))]) + data[i + 1 :]
        if how == 2:
            return data[:cut] + junk + data[cut:]
        return junk

    return st.builds(mutate, REQUESTS.map(grpc_wire.encode), st.integers(0, 3), st.integers(0, 1 << 20), st.binary(max_size=24))


def test_blindly_mutated_bytes_in_process(door: InProcess) -> None:
    stats: collections.Counter[str] = collections.Counter()

    @fuzz_settings(0.5)
    @given(data=mutations())
    def run(data: bytes) -> None:
        verdict(data, None, door(data), stats)

    run()
    assert stats["undecodable"] > 0, stats


# over a real socket


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Proc, str]]:
    proc, port = start_authz(POLICY, "--no-http")
    with proc:
        yield proc, f"{LOOPBACK}:{port}"


def test_hostile_check_requests_over_a_real_socket(served: tuple[Proc, str]) -> None:
    proc, target = served
    stats: collections.Counter[str] = collections.Counter()
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(CHECK, request_serializer=lambda b: b, response_deserializer=CheckResponse.FromString)

        @fuzz_settings(0.1)
        @given(parts=grpc_wire.check_requests([], creds.lines(NOW_S, "http")), cut=st.none() | st.none() | st.integers(0, 1 << 16))
        def run(parts: grpc_wire.Parts, cut: int | None) -> None:
            data = grpc_wire.encode(parts)
            if cut is not None and cut < len(data):
                verdict(data[:cut], None, call(data[:cut], timeout=2), stats)
            else:
                verdict(data, parts, call(data, timeout=2), stats)

        run()
    assert proc.alive
    wait_grpc_serving(target, timeout=2, proc=proc)
    assert "Traceback" not in proc.log_text()
    assert stats["malformed"] and stats["undecodable"], stats
