"""Signed requests through real Envoy and a real ``authz serve`` process.

A signed request reaches the upstream with the key id header; its replay gets
401; of 50 concurrent copies exactly one passes; and after authz is restarted
(its memory store starts a new epoch) the old signature is still refused.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from authz.httpsig import sign_request
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
from tests.unit.test_signature_profile import Keys, write_policy

pytestmark = pytest.mark.envoy

POLICY = """
version: 1
keys_file: keys.yaml
signatures:
  bots: {max_age: 60s, clock_skew: 1s}
routes:
  - name: signed
    match: {path: {prefix: /signed/}}
    auth: [signature:bots]
"""


@dataclass
class Stack:
    envoy: Proc
    authz: Proc
    authz_port: int
    policy: str
    base: str
    #: when the running authz was known to be up (its store's epoch is earlier)
    ready_s: float

    def created(self) -> int:
        """A ``created`` no earlier than the store's epoch plus the 1 s skew, and not ahead by more than 1 s."""
        c = max(int(time.time()), math.ceil(self.ready_s) + 1)
        while time.time() < c - 1:  # at most ~2 s
            time.sleep(0.05)
        return c

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, keys: Keys, echo_upstream: EchoUpstream) -> Iterator[Stack]:
    policy = write_policy(tmp_path_factory.mktemp("sig"), keys, POLICY)
    authz, authz_port = start_authz(policy, "--no-http")
    envoy: Proc | None = None
    s: Stack | None = None
    try:
        ports = {"admin": free_port(), "ingress": free_port(), "upstream": echo_upstream.port, "authz": authz_port}
        envoy, _ = start_envoy(render_envoy_config(ENVOY_YAML, ports))
        s = Stack(envoy, authz, authz_port, policy, f"http://127.0.0.1:{ports['ingress']}", time.time())
        yield s
    finally:
        if envoy is not None:
            envoy.stop()
        (s.authz if s is not None else authz).stop()


@pytest.fixture(scope="module")
def keys() -> Keys:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from tests.unit.test_signature_profile import HMAC_SECRET

    return Keys(private={"ed": ed25519.Ed25519PrivateKey.generate(), "hmac": HMAC_SECRET}, algorithm={"ed": "ed25519", "hmac": "hmac-sha256"})


def signed(stack: Stack, keys: Keys, url: str, kid: str = "ed", method: str = "GET", body: bytes | None = None) -> list[tuple[str, str]]:
    c = stack.created()
    return sign_request(method, url, [], key_id=kid, algorithm=keys.algorithm[kid], key=keys.private[kid], created=c, body=body)


def error_of(body: bytes) -> Any:
    return json.loads(body)["error"]


def test_signed_request_reaches_upstream_and_its_replay_is_refused(stack: Stack, keys: Keys, upstream: EchoUpstream) -> None:
    url = stack.url("/signed/items?page=1")
    headers = signed(stack, keys, url)
    status, _, body = http_request(url, headers=headers)
    assert status == 200, body
    assert upstream.count == 1
    seen = upstream.last()["headers"]
    assert seen["x-authz-key-id"] == "ed"
    assert seen["x-authz-subject"] == "sub-ed"
    assert seen["x-authz-auth"] == "signature:bots"

    status, resp_headers, body = http_request(url, headers=headers)
    assert (status, error_of(body)) == (401, "sig.replay")
    assert resp_headers["www-authenticate"] == 'Signature realm="bots"'
    assert upstream.count == 1


def test_signed_post_with_content_digest_passes(stack: Stack, keys: Keys, upstream: EchoUpstream) -> None:
    url = stack.url("/signed/orders")
    body = b'{"qty": 3}'
    headers = [("content-type", "application/json"), *signed(stack, keys, url, "hmac", "POST", body)]
    status, _, resp = http_request(url, method="POST", headers=headers, body=body)
    assert status == 200, resp
    assert upstream.last()["headers"]["x-authz-key-id"] == "hmac"
    # same signature, another path: Envoy forwards the path it got, authz refuses it
    status, _, resp = http_request(stack.url("/signed/other"), method="POST", headers=headers, body=body)
    assert (status, error_of(resp)) == (401, "sig.bad_signature")


def test_of_50_concurrent_copies_exactly_one_passes(stack: Stack, keys: Keys, upstream: EchoUpstream) -> None:
    url = stack.url("/signed/race")
    headers = signed(stack, keys, url)
    gate = threading.Barrier(50, timeout=10)

    def send(_: int) -> tuple[int, bytes]:
        gate.wait()
        status, _, body = http_request(url, headers=headers, timeout=10)
        return status, body

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(send, range(50)))
    statuses = sorted(s for s, _ in results)
    assert statuses.count(200) == 1, statuses
    assert statuses.count(401) == 49
    assert {error_of(b) for s, b in results if s == 401} == {"sig.replay"}
    assert upstream.count == 1


def test_a_restarted_authz_still_refuses_the_replay(stack: Stack, keys: Keys, upstream: EchoUpstream) -> None:
    url = stack.url("/signed/before-restart")
    headers = signed(stack, keys, url)
    assert http_request(url, headers=headers)[0] == 200
    stack.authz.stop()
    stack.authz, _ = start_authz(stack.policy, "--no-http", port=stack.authz_port)
    stack.ready_s = time.time()
    # wait until Envoy reaches the new process: an unsigned request is then a 401 from authz
    deadline = time.monotonic() + 10
    status, resp_headers = 0, {}
    while time.monotonic() < deadline:
        status, resp_headers, _ = http_request(stack.url("/signed/probe"))
        if status == 401 and "x-authz-decision-id" in resp_headers:
            break
        time.sleep(0.1)
    assert status == 401, status

    status, resp_headers, body = http_request(url, headers=headers)
    # the new store cannot vouch for a signature older than itself: refused, with the remedy
    assert (status, error_of(body)) == (401, "sig.replay_unverifiable")
    assert "sign the request again" in json.loads(body)["hint"]
    assert resp_headers["www-authenticate"].endswith('error_description="sign again"')
    assert resp_headers["accept-signature"].startswith("sig1=(")
    # a signature made a skew (1 s) after the restart passes
    fresh = signed(stack, keys, url)
    assert http_request(url, headers=fresh)[0] == 200
    assert upstream.count == 2
