"""Proof of work behind each real proxy's shipped example config (HTTP door).

Envoy (http_service), nginx (auth_request), Traefik (forwardAuth) and Caddy
(forward_auth): the client gets authz's 401 with ``Authz-Challenge``, its
``Authz-Solution`` reaches authz, the solved request reaches the upstream
once, and its replay is refused before the upstream.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator

import pytest

from authz.challenge import parse_challenge, solve
from tests.support.procs import EchoUpstream
from tests.support.proxies import (
    Proxy,
    fetch,
    start_authz_http,
    start_caddy,
    start_envoy_http,
    start_nginx,
    start_traefik,
)

LAUNCHERS: dict[str, Callable[[int, int], Proxy]] = {
    "envoy": start_envoy_http,
    "nginx": start_nginx,
    "traefik": start_traefik,
    "caddy": start_caddy,
}

POLICY = """
version: 1
trusted_proxies: [127.0.0.1/32, "::1/128"]   # every proxy here reaches authz from loopback
challenges:
  default: {secret_file: challenge.key, base_difficulty: 10}
routes:
  - name: signup
    match: {path: {prefix: /signup}}
    auth: [anonymous]
    challenge: default
"""


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    work = tmp_path_factory.mktemp("challenge-proxies")
    (work / "challenge.key").write_bytes(os.urandom(48).hex().encode())
    (work / "policy.yaml").write_text(POLICY)
    proc, _grpc, http_port = start_authz_http(work / "policy.yaml")
    with proc:
        yield http_port


@pytest.fixture(scope="module", params=sorted(LAUNCHERS))
def proxy(request: pytest.FixtureRequest, authz: int, echo_upstream: EchoUpstream) -> Iterator[tuple[str, Proxy]]:
    with LAUNCHERS[request.param](echo_upstream.port, authz) as running:
        yield request.param, running


def test_challenge_solution_and_replay_through_the_proxy(proxy: tuple[str, Proxy], upstream: EchoUpstream) -> None:
    name, running = proxy
    refused = fetch(running.port, "GET", "/signup/form", {"host": "api.example.test"})
    assert refused.status == 401, refused
    assert json.loads(refused.body)["error"] == "challenge.required"
    challenge = parse_challenge(refused.headers["authz-challenge"])
    assert challenge.difficulty == 10
    assert "PoW" in refused.headers["www-authenticate"]
    assert upstream.count == 0

    solution = solve(refused.headers["authz-challenge"], max_seconds=10)
    passed = fetch(running.port, "GET", "/signup/form", {"host": "api.example.test", "authz-solution": solution})
    assert passed.status == 200, (name, passed)
    assert upstream.count == 1
    if name == "envoy":  # the others cannot remove request headers on authz's word
        assert "authz-solution" not in upstream.last()["headers"]

    again = fetch(running.port, "GET", "/signup/form", {"host": "api.example.test", "authz-solution": solution})
    assert again.status == 401, again
    assert json.loads(again.body)["error"] == "challenge.replay"
    assert parse_challenge(again.headers["authz-challenge"]).token != challenge.token
    assert upstream.count == 1
