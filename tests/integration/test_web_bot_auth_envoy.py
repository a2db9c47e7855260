"""Web Bot Auth end to end: a signed agent request through real Envoy and a real ``authz serve``.

authz fetches the agent's key directory from a real HTTPS server on loopback
(its certificate made here, trusted through the policy's ``ca_file``); the
upstream sees ``x-authz-bot``. A replay is refused, a forged claim passes as
anonymous without the header, and a client-sent ``x-authz-bot`` never
reaches the upstream.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.support.agents import DirectoryServer, directory_server, make_cert, signed, thumbprint
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
web_bot_auth:
  agents:
    trust: [{origin}]
    ca_file: {ca}
    fetch_timeout: 3s
    clock_skew: 2s
routes:
  - name: open
    match: {{path: {{prefix: /open/}}}}
    auth: [web_bot_auth:agents, anonymous]
  - name: agents
    match: {{path: {{prefix: /agents/}}}}
    auth: [web_bot_auth:agents]
"""


@dataclass
class Stack:
    base: str
    site: DirectoryServer
    key: ed25519.Ed25519PrivateKey
    #: when authz was known to be up (its store's epoch is earlier)
    ready_s: float

    def created(self) -> int:
        """A ``created`` whose claim (created minus the 2 s skew) is not before the store's epoch, and not ahead of the clock by more than the skew."""
        c = max(int(time.time()), math.ceil(self.ready_s) + 2)
        while time.time() < c - 2:  # at most ~1 s
            time.sleep(0.05)
        return c

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, echo_upstream: EchoUpstream) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("wba")
    cert, key_file = make_cert(tmp)
    key = ed25519.Ed25519PrivateKey.generate()
    with directory_server(cert, key_file) as site:
        site.keys = [key]
        policy = Path(tmp / "policy.yaml")
        policy.write_text(POLICY.format(origin=site.origin, ca=cert))
        authz, authz_port = start_authz(policy, "--no-http")
        envoy: Proc | None = None
        try:
            ports = {"admin": free_port(), "ingress": free_port(), "upstream": echo_upstream.port, "authz": authz_port}
            envoy, _ = start_envoy(render_envoy_config(ENVOY_YAML, ports))
            st = Stack(f"http://127.0.0.1:{ports['ingress']}", site, key, time.time())
            # the first agent request makes authz fetch the directory over HTTPS; on a busy machine that
            # can outlast Envoy's 250 ms check timeout (a 503 for that one request, the fetch completing
            # in authz): warm the cache once, so the tests see the cached path they are about
            for _ in range(10):
                warm = st.url("/agents/warm")
                if http_request(warm, headers=agent_headers(st, warm))[0] != 503:
                    break
                time.sleep(0.2)
            yield st
        finally:
            if envoy is not None:
                envoy.stop()
            authz.stop()


def agent_headers(stack: Stack, url: str, **kw: object) -> list[tuple[str, str]]:
    return signed(url, stack.key, stack.site.origin, created=stack.created(), **kw)  # type: ignore[arg-type]


def test_a_signed_agent_reaches_the_upstream_with_x_authz_bot(stack: Stack, upstream: EchoUpstream) -> None:
    url = stack.url("/agents/items?page=1")
    status, _, body = http_request(url, headers=agent_headers(stack, url))
    assert status == 200, body
    seen = upstream.last()["headers"]
    assert seen["x-authz-bot"] == stack.site.origin
    assert seen["x-authz-subject"] == stack.site.origin
    assert seen["x-authz-key-id"] == thumbprint(stack.key)
    assert seen["x-authz-auth"] == "web_bot_auth:agents"
    assert stack.site.fetches == 1
    # the same agent again: its directory is cached
    url2 = stack.url("/agents/more")
    assert http_request(url2, headers=agent_headers(stack, url2))[0] == 200
    assert stack.site.fetches == 1


def test_a_replayed_agent_signature_is_refused(stack: Stack, upstream: EchoUpstream) -> None:
    url = stack.url("/open/page")
    headers = agent_headers(stack, url)
    assert http_request(url, headers=headers)[0] == 200
    status, resp_headers, body = http_request(url, headers=headers)
    assert (status, json.loads(body)["error"]) == (401, "agent.replayed")
    assert 'tag="web-bot-auth"' in resp_headers["accept-signature"]
    assert upstream.count == 1


def test_a_forged_agent_passes_as_anonymous_without_the_bot_header(stack: Stack, upstream: EchoUpstream) -> None:
    url = stack.url("/open/page")
    forger = ed25519.Ed25519PrivateKey.generate()
    headers = signed(url, forger, stack.site.origin, created=stack.created(), key_id=thumbprint(stack.key))
    status, _, body = http_request(url, headers=[*headers, ("x-authz-bot", stack.site.origin)])
    assert status == 200, body
    seen = upstream.last()["headers"]
    assert "x-authz-bot" not in seen
    assert seen["x-authz-auth"] == "anonymous"
    # where only agents are accepted, the same forgery is a 401 with its reason
    url = stack.url("/agents/page")
    headers = signed(url, forger, stack.site.origin, created=stack.created(), key_id=thumbprint(stack.key))
    status, _, body = http_request(url, headers=headers)
    assert (status, json.loads(body)["error"]) == (401, "agent.forged")
