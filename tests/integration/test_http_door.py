"""authz's HTTP door as a server: hostile input, slow clients, health, drain, start-up errors.

A real ``authz serve`` process; raw sockets play the clients, so nothing
between the test and the server tidies the bytes up.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import LOOPBACK, free_port, start_authz, venv_bin
from tests.support.proxies import fetch, start_authz_http

POLICY = Path(__file__).parent / "policies" / "http_door.yaml"
HEAD_TIMEOUT = 0.5


@pytest.fixture(scope="module")
def door() -> Iterator[int]:
    proc, _grpc, http_port = start_authz_http(POLICY, "--http-header-timeout", str(HEAD_TIMEOUT))
    with proc:
        yield http_port


def exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send ``data``, then read until the server closes (bounded by ``timeout``)."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock, timeout)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    raise AssertionError(f"the server did not close the connection within {timeout}s: {b''.join(chunks)[:300]!r}")


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def refusal(raw: bytes) -> tuple[int, str]:
    status, headers, body = parse(raw)
    doc = json.loads(body)
    assert headers["x-authz-decision-id"] == doc["decision_id"]
    return status, doc["error"]


def test_an_oversized_header_is_refused_431(door: int) -> None:
    raw = exchange(door, b"GET /envoy/api/x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert refusal(raw) == (431, "request.too_large")


def test_an_oversized_target_is_refused_431(door: int) -> None:
    raw = exchange(door, b"GET /envoy/api/" + b"a" * 12_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert refusal(raw) == (431, "request.too_large")


def test_too_many_header_lines_are_refused_431(door: int) -> None:
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(600))
    raw = exchange(door, b"GET /envoy/api/x HTTP/1.1\r\nHost: a\r\n" + lines + b"\r\n")
    assert refusal(raw) == (431, "request.too_large")


@pytest.mark.parametrize(
    "garbage",
    [
        b"HELLO\r\n\r\n",
        b"GET /envoy/api/x HTTP/1.1\r\nHost: a\r\nX-Bad\x00: v\r\n\r\n",
        b"GET /envoy/api/x HTTP/1.1\r\nHost: a\r\nX-Split: a\rb\r\n\r\n",
        b"GET /envoy/api/x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS ClientHello
    ],
    ids=["not-http", "nul-in-name", "bare-cr", "cl-and-te", "tls-hello"],
)
def test_unparsable_requests_are_refused_400(door: int, garbage: bytes) -> None:
    assert refusal(exchange(door, garbage)) == (400, "request.malformed")


def test_a_header_that_is_not_utf8_is_refused_with_its_reason(door: int) -> None:
    raw = exchange(door, b"GET /envoy/api/x HTTP/1.1\r\nHost: a\r\nX-Name: \xff\xfe\r\nConnection: close\r\n\r\n")
    assert refusal(raw) == (400, "request.bad_encoding")


def test_a_slow_request_head_is_refused_408_in_time(door: int) -> None:
    with socket.create_connection((LOOPBACK, door), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /envoy/api/x HTTP/1.1\r\nHost: a\r\n")
        # a byte every 0.1 s for up to 8 s does not keep the head open (slowloris)
        trickle = 8.0
        while time.monotonic() - started < trickle:
            time.sleep(0.1)
            try:
                sock.sendall(b"X")
            except OSError:
                break  # closed by the server
            sock.setblocking(False)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break  # the answer has come
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
        raw = read_until_closed(sock, 5)
        elapsed = time.monotonic() - started
    assert refusal(raw) == (408, "request.timeout")
    assert HEAD_TIMEOUT <= elapsed < trickle  # cut at the timeout, not when the client stopped


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(door: int) -> None:
    with socket.create_connection((LOOPBACK, door), timeout=5) as sock:
        assert read_until_closed(sock, 5) == b""


def test_pipelined_requests_are_answered_in_order(door: int) -> None:
    raw = exchange(
        door,
        b"GET /envoy/admin/x HTTP/1.1\r\nHost: a\r\nX-Client: p1\r\n\r\n"
        b"GET /envoy/api/x HTTP/1.1\r\nHost: a\r\nX-Client: p1\r\nConnection: close\r\n\r\n",
    )
    first, _, rest = raw.partition(b"}")
    assert parse(first + b"}")[0] == 403
    assert rest.startswith(b"HTTP/1.1 200 ")


def test_an_upgrade_request_is_decided_like_any_other(door: int) -> None:
    # Envoy asks about a WebSocket handshake with its upgrade headers; authz has
    # no WebSocket side and answers the check, then the next one on the connection
    raw = exchange(
        door,
        b"GET /envoy/api/ws HTTP/1.1\r\nHost: a\r\nX-Client: ws\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        b"GET /envoy/admin/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 ") and b"x-authz-decision-id: " in first
    assert refusal(rest) == (403, "route.deny")


def test_a_huge_body_is_never_read_and_closes_the_connection(door: int) -> None:
    with socket.create_connection((LOOPBACK, door), timeout=5) as sock:
        sock.sendall(b"POST /envoy/api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 50000000\r\n\r\n")
        sent = 0
        with pytest.raises(OSError):  # the server closes once it has seen more than 1 MiB
            for _ in range(400):
                sock.sendall(b"z" * 65536)
                sent += 65536
        assert sent < 8 << 20
    # and the server is fine
    assert fetch(door, "GET", "/envoy/api/x", {"x-client": "after-body"}).status == 200


def test_the_door_still_decides_after_all_of_that(door: int) -> None:
    reply = fetch(door, "GET", "/envoy/api/ok", {"x-client": "last"})
    assert reply.status == 200 and reply.headers["x-authz-decision-id"]
    assert fetch(door, "GET", "/healthz").status == 200


def test_drain_turns_health_503_while_checks_are_still_answered() -> None:
    proc, _grpc, port = start_authz_http(POLICY, "--drain", "1.5", "--grace", "1")
    with proc:
        assert fetch(port, "GET", "/healthz").status == 200
        proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + 1.0
        while fetch(port, "GET", "/healthz").status != 503:
            assert time.monotonic() < deadline, "health never turned 503"
            time.sleep(0.05)
        assert fetch(port, "GET", "/envoy/api/x", {"x-client": "drain"}).status == 200
        assert proc.popen is not None
        assert proc.popen.wait(timeout=10) == 0
    with pytest.raises(OSError):
        socket.create_connection((LOOPBACK, port), timeout=1).close()


def test_no_http_leaves_the_port_closed_and_a_taken_port_fails_the_start() -> None:
    http_port = free_port()
    proc, _grpc = start_authz(POLICY, "--http-listen", f"{LOOPBACK}:{http_port}", "--no-http")
    with proc, pytest.raises(OSError):
        socket.create_connection((LOOPBACK, http_port), timeout=1).close()
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        run = subprocess.run(
            [venv_bin("authz"), "serve", "-c", str(POLICY), "--grpc-listen", f"{LOOPBACK}:{free_port()}", "--http-listen", f"{LOOPBACK}:{port}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert run.returncode == 1
    assert "http_listen" in run.stderr and "cannot listen" in run.stderr


def test_a_bad_http_mode_is_a_settings_error() -> None:
    run = subprocess.run(
        [venv_bin("authz"), "serve", "-c", str(POLICY), "--grpc-listen", f"{LOOPBACK}:{free_port()}", "--http-mode", "/x=gopher"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 1
    assert "http_mode" in run.stderr and "gopher" in run.stderr

