"""Fuzzing the HTTP door: raw request heads over a real socket to ``authz serve``.

The real server (uvicorn + httptools with authz's BoundedHttpTools) on
tests/fuzz/policy.yaml, in each convention (``/envoy``, ``/forward-auth``,
``/nginx``). Every head is sent on a new connection and the first answer read.
Properties, for every input:

* the answer is a well-formed HTTP/1.1 response with a decision id (never a
  dropped connection, never ``internal.error``), and the server still serves
  afterwards;
* a request the oracle (tests/fuzz/http_wire.py) calls malformed is never
  allowed;
* no input costs more than the profile's deadline (1 s).
"""

from __future__ import annotations

import collections
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz import creds, http_wire
from tests.fuzz.profile import fuzz_settings
from tests.support.procs import LOOPBACK, Proc, http_request
from tests.support.proxies import start_authz_http

POLICY = Path(__file__).parent / "policy.yaml"
HEAD_TIMEOUT = 0.5
_STATUS = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [\x20-\x7e]*")
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+): ?([\x20-\x7e\t]*)")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Proc, int]]:
    proc, _grpc, http_port = start_authz_http(POLICY, "--http-header-timeout", str(HEAD_TIMEOUT))
    with proc:
        yield proc, http_port


def exchange(port: int, data: bytes, timeout: float = 3.0) -> bytes:
    """Send ``data`` on a new connection; return the first response (head and body; no body to HEAD)."""
    no_body = data.split(None, 1)[:1] == [b"HEAD"]
    deadline = time.monotonic() + timeout
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything
        buf = b""
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                match = re.search(rb"\r\ncontent-length: *([0-9]+)\r\n", buf[: end + 2], re.IGNORECASE)
                want = end + 4 + (int(match.group(1)) if match and not no_body else 0)
                if len(buf) >= want:
                    return buf[:want]
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError) as exc:
                raise AssertionError(f"no complete answer ({type(exc).__name__}); got {buf[:300]!r}") from None
            if not chunk:
                raise AssertionError(f"connection closed without a complete answer; got {buf[:300]!r}")
            buf += chunk


def judge(raw: bytes, no_body: bool = False) -> tuple[int, str]:
    """(status, reason) of an answer, after asserting that it is a well-formed response with a decision.

    :param no_body: the answer is to a HEAD request (its content-length is the GET's, RFC 9110 9.3.2)
    """
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status_line = _STATUS.fullmatch(lines[0])
    assert status_line, f"bad status line {lines[0][:100]!r}"
    fields: dict[str, list[str]] = {}
    for line in lines[1:]:
        field = _FIELD.fullmatch(line)
        assert field, f"bad field line {line[:100]!r}"
        fields.setdefault(field.group(1).decode().lower(), []).append(field.group(2).decode())
    lengths = fields.get("content-length", [])
    assert len(lengths) == 1 and lengths[0].isdigit(), fields
    if no_body:
        assert body == b""
    else:
        assert lengths == [str(len(body))], fields
    decision_id = fields.get("x-authz-decision-id", [""])
    assert len(decision_id) == 1 and decision_id[0], f"no decision id: {fields}"
    status = int(status_line.group(1))
    if status == 200:
        assert body == b"" and lengths == ["0"]
        return status, "ok"
    if no_body:
        reason = fields.get("x-authz-reason", ["(not shown to HEAD)"])
        return status, reason[0]
    doc = json.loads(body)
    assert doc["decision_id"] == decision_id[0]
    assert doc["error"] != "internal.error", doc
    return status, str(doc["error"])


def clean(mode: str, method: bytes, target: bytes, fields: list[tuple[bytes, bytes]]) -> http_wire.Head:
    return http_wire.Head(mode, method, target, b"HTTP/1.1", [(n, b": ", v) for n, v in fields])


def test_hostile_request_heads_over_a_real_socket(served: tuple[Proc, int]) -> None:
    proc, port = served
    stats: collections.Counter[str] = collections.Counter()
    now_s = int(time.time())

    @fuzz_settings(0.7)
    @given(head=st.one_of(*(http_wire.heads(now_s, rate) for rate in (0, 0, 3, 10, 30))))
    @example(head=clean("envoy", b"GET", b"/envoy/anyone/x", [(b"Host", b"api.test")]))
    @example(head=clean("envoy", b"GET", b"/envoy/jwt/orders/1", [(b"Host", b"api.test"), (b"Authorization", creds.bearer_tokens(now_s)[0])]))
    @example(head=clean("forward-auth", b"GET", b"/forward-auth", [
        (b"Host", b"authz:9190"), (b"X-Forwarded-Method", b"POST"), (b"X-Forwarded-Uri", b"/anyone/x?a=1"),
        (b"X-Forwarded-Host", b"api.test"), (b"X-Forwarded-Proto", b"https"),
    ]))  # fmt: skip
    @example(head=clean("nginx", b"GET", b"/nginx", [
        (b"Host", b"authz:9190"), (b"X-Original-Method", b"GET"), (b"X-Original-URI", b"/host/a"),
        (b"X-Forwarded-Host", b"a.example.org"),
    ]))  # fmt: skip
    def run(head: http_wire.Head) -> None:
        data = head.encode()
        status, reason = judge(exchange(port, data), no_body=data.split(None, 1)[:1] == [b"HEAD"])
        why = http_wire.malformed(data, head.mode)
        allowed = status == 200
        if why is not None:
            assert not allowed, f"allowed a malformed request ({why}) in {head.mode} mode: {data[:600]!r}"
            stats["malformed"] += 1
        stats[f"{head.mode}:{'allow' if allowed else 'deny'}:{reason}"] += 1

    run()
    assert proc.alive
    status, _, _ = http_request(f"http://{LOOPBACK}:{port}/healthz", timeout=2)
    assert status == 200
    assert "Traceback" not in proc.log_text()
    # the explicit examples are allowed in every convention, generated heads are allowed too,
    # and malformed ones were met
    allowed_modes = {k.split(":")[0] for k in stats if ":allow:" in k}
    assert allowed_modes == set(http_wire.MODES), stats
    assert sum(n for k, n in stats.items() if ":allow:" in k) > 4, stats
    assert stats["malformed"] > 0, stats
