"""Proof of work through real Envoy, real ``authz serve``, real curl and ``authz solve``.

The client is refused 401 with a challenge, solves it with the CLI exactly as
docs/challenges.md shows, repeats the request and passes; the same solution
again is refused, and so are solutions used from another address or on
another route. The upstream sees only the request that passed.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from authz.challenge import parse_challenge, solve
from tests.support.procs import (
    ENVOY_YAML,
    EchoUpstream,
    Proc,
    free_port,
    http_request,
    render_envoy_config,
    start_authz,
    start_envoy,
    venv_bin,
)

pytestmark = pytest.mark.envoy

POLICY = """
version: 1
challenges:
  default:
    secret_file: challenge.key      # base_difficulty 16 and max 24: the defaults
routes:
  - name: signup
    match: {path: {exact: /v1/signup}}
    auth: [anonymous]
    challenge: default
  - name: login
    match: {path: {exact: /v1/login}}
    auth: [anonymous]
    challenge: default
"""


@dataclass
class Stack:
    base: str
    work: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, echo_upstream: EchoUpstream) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("challenge")
    (work / "challenge.key").write_bytes(os.urandom(48).hex().encode())
    (work / "policy.yaml").write_text(POLICY)
    authz, authz_port = start_authz(work / "policy.yaml", "--no-http")
    envoy: Proc | None = None
    try:
        ports = {"admin": free_port(), "ingress": free_port(), "upstream": echo_upstream.port, "authz": authz_port}
        envoy, _ = start_envoy(render_envoy_config(ENVOY_YAML, ports))
        yield Stack(f"http://127.0.0.1:{ports['ingress']}", work)
    finally:
        if envoy is not None:
            envoy.stop()
        authz.stop()


def curl(*args: str) -> str:
    """curl -si: the whole response as text (status line, headers, body)."""
    out = subprocess.run(["curl", "-si", "--max-time", "5", *args], capture_output=True, text=True, timeout=10, check=True)
    return out.stdout


def status_of(response: str) -> int:
    return int(response.split(" ", 2)[1])


def body_of(response: str) -> dict[str, str]:
    return json.loads(response.replace("\r\n", "\n").split("\n\n", 1)[1])  # type: ignore[no-any-return]


def header_of(response: str, name: str) -> str:
    head = response.replace("\r\n", "\n").split("\n\n", 1)[0]
    values = [line.partition(":")[2].strip() for line in head.split("\n")[1:] if line.partition(":")[0].lower() == name]
    assert len(values) == 1, (name, head)
    return values[0]


def test_the_client_solves_the_challenge_with_authz_solve_and_passes_once(stack: Stack, upstream: EchoUpstream) -> None:
    url = stack.base + "/v1/signup"
    refused = curl(url)
    assert status_of(refused) == 401, refused
    assert body_of(refused)["error"] == "challenge.required"
    assert header_of(refused, "www-authenticate") == 'PoW realm="authz"'
    challenge = parse_challenge(header_of(refused, "authz-challenge"))
    assert challenge.difficulty == 16
    assert upstream.count == 0

    (stack.work / "refused.txt").write_text(refused)
    solved = subprocess.run(
        [str(venv_bin("authz")), "solve", "--max-seconds", "30", str(stack.work / "refused.txt")],
        capture_output=True, text=True, timeout=40, check=True,
    )  # fmt: skip
    solution_header = solved.stdout.strip()
    assert solution_header.startswith("Authz-Solution: c=")

    passed = curl("-H", solution_header, url)
    assert status_of(passed) == 200, passed
    assert upstream.count == 1
    seen = upstream.last()["headers"]
    assert "authz-solution" not in seen  # the backend never sees it
    assert seen["x-authz-client-ip"] == "127.0.0.1"

    replayed = curl("-H", solution_header, url)
    assert status_of(replayed) == 401
    assert body_of(replayed)["error"] == "challenge.replay"
    fresh = parse_challenge(header_of(replayed, "authz-challenge"))
    assert fresh.token != challenge.token
    assert upstream.count == 1  # the refused requests never reached it


def test_a_solution_is_refused_from_another_address_and_on_another_route(stack: Stack, upstream: EchoUpstream) -> None:
    url = stack.base + "/v1/signup"
    status, headers, _ = http_request(url, source="127.0.0.2")
    assert status == 401
    solution = solve(headers["authz-challenge"], max_seconds=30)

    status, _, body = http_request(url, headers=[("authz-solution", solution)], source="127.0.0.3")
    assert (status, json.loads(body)["error"]) == (401, "challenge.foreign_identity")
    status, _, body = http_request(stack.base + "/v1/login", headers=[("authz-solution", solution)], source="127.0.0.2")
    assert (status, json.loads(body)["error"]) == (401, "challenge.foreign_route")
    assert upstream.count == 0
    # neither refusal spent it: its own client, on its own route, passes
    status, _, _ = http_request(url, headers=[("authz-solution", solution)], source="127.0.0.2")
    assert status == 200
    assert upstream.count == 1


def test_a_forged_solution_is_refused(stack: Stack, upstream: EchoUpstream) -> None:
    url = stack.base + "/v1/signup"
    _, headers, _ = http_request(url)
    token = parse_challenge(headers["authz-challenge"]).token
    forged = token.replace(".16.", ".1.", 1)
    status, headers, body = http_request(url, headers=[("authz-solution", f'c="{forged}", n="0"')])
    assert (status, json.loads(body)["error"]) == (401, "challenge.invalid")
    assert "authz-challenge" in headers
    assert upstream.count == 0
