"""The backend's answers as evidence: real Envoy's access log service feeds authz's reputation.

Envoy runs the shipped ``envoy/envoy.yaml`` (ports changed only): its
``http_grpc`` access log streams the 4xx answers of requests authz allowed on
scoring routes back to authz. A client whose requests the backend answers 404
(enumeration) sees its score rise and is then refused, while a client sending
as many requests that the backend answers 200 is not; a login route's 401s
count as failed logins.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import (
    ENVOY_YAML,
    EchoUpstream,
    Proc,
    free_port,
    http_request,
    render_envoy_config,
    start_authz,
    start_envoy,
)

pytestmark = pytest.mark.envoy

POLICY = """
version: 1
quotas:
  three: {limit: 3, window: 1m, burst: 3, by: ip}
reputation:
  half_life: 10m
  scale: 10
routes:
  - name: api
    match: {path: {prefix: /api/}}
    auth: [anonymous]
    reputation:
      actions:
        - {at: 15, do: tag}
        - {at: 45, do: deny}
  - name: login
    match: {path: {exact: /login}}
    auth: [anonymous]
    reputation: {sensitive: true, actions: [{at: 15, do: tag}]}
  - name: metered
    match: {path: {prefix: /metered/}}
    auth: [anonymous]
    quota: [three]
"""

#: distinct /24s, so that two clients share no subnet identity
SCANNER, PERSON, GUESSER = "127.0.11.2", "127.0.12.2", "127.0.13.2"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, echo_upstream: EchoUpstream) -> Iterator[tuple[str, Proc, Path]]:
    policy = tmp_path_factory.mktemp("rep") / "policy.yaml"
    policy.write_text(POLICY)
    authz, authz_port = start_authz(policy, "--no-http")
    envoy: Proc | None = None
    try:
        ports = {"admin": free_port(), "ingress": free_port(), "upstream": echo_upstream.port, "authz": authz_port}
        envoy, _ = start_envoy(render_envoy_config(ENVOY_YAML, ports))
        yield f"http://127.0.0.1:{ports['ingress']}", envoy, policy
    finally:
        if envoy is not None:
            envoy.stop()
        authz.stop()


@pytest.fixture
def base(stack: tuple[str, Proc, Path]) -> str:
    return stack[0]


def score_seen(base: str, upstream: EchoUpstream, source: str, path: str = "/api/home") -> tuple[float, str]:
    """What the upstream is told about ``source`` on a request the backend answers 200."""
    status, _, body = http_request(base + path, source=source)
    assert status == 200, body
    seen = upstream.last()["headers"]
    return float(seen["x-authz-score"]), seen.get("x-authz-signals", "")


def wait_score(base: str, upstream: EchoUpstream, source: str, above: float, path: str = "/api/home") -> tuple[float, str]:
    """Poll until the score passes ``above`` (Envoy flushes its access log every 0.5 s); bounded."""
    deadline = time.monotonic() + 15
    while True:
        score, signals = score_seen(base, upstream, source, path)
        if score > above or time.monotonic() > deadline:
            return score, signals
        time.sleep(0.3)


def test_a_run_of_404s_raises_the_score_until_the_client_is_refused(base: str, upstream: EchoUpstream) -> None:
    upstream.statuses["/api/missing/"] = 404
    for source in (SCANNER, PERSON):
        assert score_seen(base, upstream, source) == (0.0, "")
    for _ in range(14):
        status, _, _ = http_request(f"{base}/api/missing/{uuid.uuid4().hex[:8]}x", source=SCANNER)
        assert status == 404  # the backend's own answer, passed through
        status, _, _ = http_request(f"{base}/api/page/{uuid.uuid4().hex[:8]}x", source=PERSON)
        assert status == 200
    score, signals = wait_score(base, upstream, SCANNER, above=15)
    assert score > 15 and "status.404" in signals.split(","), (score, signals)
    person, _ = score_seen(base, upstream, PERSON)
    assert person < score - 10  # the same pace with 200s: no enumeration evidence
    # more 404s: past the deny threshold the scanner is refused, by authz, before the backend
    for _ in range(20):
        http_request(f"{base}/api/missing/{uuid.uuid4().hex[:8]}x", source=SCANNER)
    deadline = time.monotonic() + 15
    while True:
        before = upstream.count
        status, headers, body = http_request(base + "/api/home", source=SCANNER)
        if status == 403 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert status == 403 and b"reputation.denied" in body, (status, body)
    assert upstream.count == before  # never reached the backend
    assert score_seen(base, upstream, PERSON)[0] < 45


def test_a_login_the_backend_refuses_counts_as_a_failed_login(base: str, upstream: EchoUpstream) -> None:
    upstream.statuses["/login"] = 401
    for _ in range(4):
        status, _, _ = http_request(base + "/login", source=GUESSER)
        assert status == 401
    upstream.statuses["/login"] = 200
    score, signals = wait_score(base, upstream, GUESSER, above=15, path="/login")
    assert score > 15 and "login.failure" in signals.split(","), (score, signals)


def test_envoys_own_json_access_log_replays_to_the_same_outcomes(stack: tuple[str, Proc, Path], upstream: EchoUpstream) -> None:
    from authz.offline.replay import read_records, replay
    from authz.policy import load_policy

    base, envoy, policy = stack
    source = "127.0.14.2"
    statuses = [http_request(f"{base}/metered/{i}", source=source, headers=[("user-agent", "replay-test/1")])[0] for i in range(6)]
    assert statuses == [200, 200, 200, 429, 429, 429]
    deadline = time.monotonic() + 10
    while True:  # Envoy's stdout access log is flushed about every second
        lines = [line for line in envoy.log_text().splitlines() if line.startswith("{") and '"/metered/' in line]
        if len(lines) == 6 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(lines) == 6
    first = json.loads(lines[0])
    assert (first["authority"], first["user_agent"], first["client_ip"]) == ("127.0.0.1:" + base.rsplit(":", 1)[1], "replay-test/1", source)
    report = asyncio.run(replay(read_records(lines), load_policy(str(policy))))
    (tally,) = report.tallies
    assert (tally.by_class["allowed"], tally.by_class["throttled"]) == (3, 3)
    assert tally.by_reason["quota.exhausted"] == 3
