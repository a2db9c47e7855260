"""The path-tricks table through every door and every shipped proxy config.

One authz (both doors) on examples/policy.yaml, one echo upstream, and each
proxy on its shipped config with only addresses replaced: Envoy over gRPC
(envoy/envoy.yaml), Envoy http_service (envoy/envoy-http.yaml), nginx,
Traefik and Caddy (examples/). Every target of tests/support/path_tricks.py
is sent raw, byte for byte, on its own connection. A trick must never reach
the upstream (the proxy or authz refuses it, whichever comes first); an
ordinary target must reach it, once.

The policy is the example file with one change: its per-client quota is
raised, because behind an HTTP proxy every request comes from the proxy's
address and the example's 5 requests per 10 s would refuse the controls.
Its routes and paths section are the example's, byte for byte.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.path_tricks import CONTROLS, NO_PATH, TRICKS, Row, admin_readings
from tests.support.procs import (
    ENVOY_YAML,
    LOOPBACK,
    EchoUpstream,
    free_port,
    render_envoy_config,
    start_envoy,
)
from tests.support.proxies import (
    Proxy,
    start_authz_http,
    start_caddy,
    start_envoy_http,
    start_nginx,
    start_traefik,
    substitute,
)

EXAMPLES = Path(__file__).parents[2] / "examples"
ANSWER_TIMEOUT = 5.0


def _envoy_grpc(upstream_port: int, grpc_port: int) -> Proxy:
    text = render_envoy_config(ENVOY_YAML, {"admin": free_port(), "ingress": free_port(), "upstream": upstream_port, "authz": grpc_port})
    proc, ports = start_envoy(text)
    return Proxy(proc, ports["ingress"], Path(tempfile.mkdtemp(prefix="authz-envoy-grpc-")))


# proxy name -> (launcher, which authz port it talks to)
PROXIES: dict[str, tuple[Callable[[int, int], Proxy], str]] = {
    "envoy-grpc": (_envoy_grpc, "grpc"),
    "envoy-http": (start_envoy_http, "http"),
    "nginx": (start_nginx, "http"),
    "traefik": (start_traefik, "http"),
    "caddy": (start_caddy, "http"),
}


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("paths")
    policy = work / "policy.yaml"
    policy.write_text(
        substitute(
            (EXAMPLES / "policy.yaml").read_text(),
            {
                "    limit: 5\n    window: 10s\n    burst: 5\n": "    limit: 100000\n    window: 10s\n    burst: 100000\n",
                "file: lists/blocked.txt": f"file: {EXAMPLES / 'lists' / 'blocked.txt'}",
            },
        )
    )
    proc, grpc_port, http_port = start_authz_http(policy)
    with proc:
        yield {"grpc": grpc_port, "http": http_port, "policy": policy}


@pytest.fixture(scope="module", params=sorted(PROXIES))
def proxy(request: pytest.FixtureRequest, authz: dict[str, Any], echo_upstream: EchoUpstream) -> Iterator[tuple[str, Proxy]]:
    launcher, door = PROXIES[request.param]
    running = launcher(echo_upstream.port, authz[door])
    try:
        yield request.param, running
    finally:
        running.stop()


def send_raw(port: int, target: str) -> tuple[int, bytes]:
    """One GET with ``target`` written on the request line exactly as given.

    Returns (status, raw answer); status 0 when the proxy closed without an
    answer. Reading stops at the end of the answer (Content-Length), not at the
    close: Envoy delays closing after its own 400s by a second.
    """
    head = f"GET {target} HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: path-tricks\r\nConnection: close\r\n\r\n"
    answer = b""
    with socket.create_connection((LOOPBACK, port), timeout=ANSWER_TIMEOUT) as sock:
        sock.sendall(head.encode("utf-8"))
        try:
            while data := sock.recv(65536):
                answer += data
                if _complete(answer):
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    parts = answer.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return 0, answer
    return int(parts[1]), answer


def _complete(answer: bytes) -> bool:
    end = answer.find(b"\r\n\r\n")
    if end < 0:
        return False
    for line in answer[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(answer) - end - 4 >= int(value)
    return False


def test_every_trick_means_the_denied_subtree_to_some_backend() -> None:
    # the table's premise, and the check below's power: each trick has a reading in /admin
    assert [r.target for r in TRICKS if not admin_readings(r.target)] == []
    assert [r.target for r in CONTROLS if admin_readings(r.target)] == []


@pytest.mark.parametrize("row", TRICKS, ids=[r.target for r in TRICKS])
def test_a_trick_never_reaches_the_upstream_as_the_denied_subtree(proxy: tuple[str, Proxy], upstream: EchoUpstream, row: Row) -> None:
    name, running = proxy
    status, answer = send_raw(running.port, row.target)
    if upstream.count == 0:
        assert status == 0 or 400 <= status < 500, (name, row.target, answer[:300])
        return
    # a normalizing proxy may have resolved the trick into another path; then
    # authz decided on that path, and no backend may read it as /admin
    seen = upstream.last()["path"]
    assert admin_readings(seen) == set(), f"{name} let {row.target!r} ({row.why}) through as {seen!r}"
    assert status == 200, (name, row.target, answer[:300])


@pytest.mark.parametrize("row", NO_PATH, ids=[r.target for r in NO_PATH])
def test_a_target_without_a_path_never_reaches_the_upstream(proxy: tuple[str, Proxy], upstream: EchoUpstream, row: Row) -> None:
    name, running = proxy
    status, answer = send_raw(running.port, row.target)
    assert upstream.count == 0, f"{name} let {row.target!r} through as {upstream.last()['path']!r}"
    assert status == 0 or 400 <= status < 500, (name, row.target, answer[:300])


@pytest.mark.parametrize("row", CONTROLS, ids=[r.target for r in CONTROLS])
def test_an_ordinary_path_reaches_the_upstream(proxy: tuple[str, Proxy], upstream: EchoUpstream, row: Row) -> None:
    name, running = proxy
    status, answer = send_raw(running.port, row.target)
    assert status == 200, (name, row.target, answer[:300])
    assert upstream.count == 1
    assert b'"x-authz-decision-id"' in answer


def test_authz_answers_the_plain_trick_itself_through_every_proxy(proxy: tuple[str, Proxy], upstream: EchoUpstream) -> None:
    # the refusals above are authz's, not only the proxies': the plain request
    # and an ambiguous one reach authz through every proxy and get its reasons
    name, running = proxy
    status, answer = send_raw(running.port, "/Admin/x")
    assert (status, b'"error":"route.deny"' in answer) == (403, True), (name, answer[:300])
    status, answer = send_raw(running.port, "/admin;x/")
    assert (status, b'"error":"request.ambiguous_path"' in answer) == (400, True), (name, answer[:300])
    assert upstream.count == 0


def test_the_policy_under_test_is_the_example_but_for_its_quota(authz: dict[str, Any]) -> None:
    example = (EXAMPLES / "policy.yaml").read_text()
    tested = authz["policy"].read_text()

    def section(text: str, start: str, end: str | None = None) -> str:
        return text[text.index(start) : text.index(end) if end else None]

    assert section(tested, "paths:", "# Address lists") == section(example, "paths:", "# Address lists")
    assert section(tested, "routes:") == section(example, "routes:")
    assert "subtree: /admin}, ignore_case: true" in section(example, "routes:")
