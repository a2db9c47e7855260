"""The how-to pages run as written, against real authz and real Envoy.

Each page's shell blocks run in a scratch directory (tests/support/howto.py);
where the page starts authz and Envoy, the test starts them on free ports
(envoy/envoy.yaml with only its ports changed, an echo upstream as the API)
and the page's later commands reach Envoy through ``$API``. The printed
outputs the page shows must be what the commands print; the test also checks
what the page says the API receives.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.httpsig import load_signing_key, sign_request
from tests.support.howto import Block, Page, blocks, matches
from tests.support.procs import (
    ENVOY_YAML,
    ROOT,
    EchoUpstream,
    Proc,
    free_port,
    http_request,
    render_envoy_config,
    start_authz,
    start_envoy,
)

pytestmark = pytest.mark.envoy

DOCS = ROOT / "docs"


class Stack:
    """authz and Envoy, started where a page says to start them."""

    def __init__(self, workdir: Path, upstream: EchoUpstream) -> None:
        self.workdir = workdir
        self.upstream = upstream
        self.procs: list[Proc] = []
        self.started_at = 0.0
        self.api = ""

    def start(self, block: Block) -> Mapping[str, str]:
        lines = [shlex.split(line, comments=True) for line in block.text.splitlines()]
        lines = [words for words in lines if words]
        serve = [w for w in lines if w[:2] == ["authz", "serve"]]
        assert len(serve) == 1 and len(serve[0]) == 4 and serve[0][2] == "--config", serve
        assert ["envoy", "-c", "envoy/envoy.yaml"] in lines, "the page must start the example Envoy config"
        authz, authz_port = start_authz(self.workdir / serve[0][3], "--no-http")
        self.procs.append(authz)
        self.started_at = time.time()
        ports = {"admin": free_port(), "ingress": free_port(), "upstream": self.upstream.port, "authz": authz_port}
        envoy, _ = start_envoy(render_envoy_config(ENVOY_YAML, ports))
        self.procs.append(envoy)
        self.api = f"http://127.0.0.1:{ports['ingress']}"
        return {"API": self.api}

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture
def stack(tmp_path: Path, echo_upstream: EchoUpstream) -> Iterator[Stack]:
    echo_upstream.reset()
    s = Stack(tmp_path, echo_upstream)
    try:
        yield s
    finally:
        s.stop()


def run_page(name: str, stack: Stack, wait: Any = None) -> Page:
    page = Page(DOCS / name, stack.workdir)

    def start(block: Block) -> Mapping[str, str]:
        env = stack.start(block)
        if wait is not None:
            wait()
        return env

    page.run(start, lambda: list(stack.upstream.requests))
    return page


def test_the_runner_compares_outputs_with_ellipses() -> None:
    assert matches('{"error":"...","decision_id":"..."} 401', '{"error":"jwt.expired","decision_id":"a-1"} 401\n')
    assert not matches('{"error":"...","decision_id":"..."} 401', '{"error":"jwt.expired","decision_id":"a-1"} 403')
    assert matches("a\n...\nc", "a\nb1\nb2\nc")
    assert not matches("200", "200\n200")
    text = "x\n```sh\necho 1\n```\n\n```text\n1\n```\n```shell\nnot run\n```\n"
    assert [(b.lang, b.text, b.line) for b in blocks(text)] == [("sh", "echo 1\n", 2), ("text", "1\n", 6), ("shell", "not run\n", 9)]


def test_howto_jwt(stack: Stack) -> None:
    page = run_page("howto-jwt.md", stack)

    jwks = (stack.workdir / "jwks.json").read_text()
    assert "PRIVATE" not in jwks and '"d"' not in jwks
    # the allowed request reached the API with the identity the page names
    (seen,) = page.step('Bearer $(cat token)" "$API/orders/17"').upstream
    assert seen["path"] == "/orders/17"
    headers = seen["headers"]
    assert headers["x-authz-subject"] == "alice"
    assert headers["x-authz-auth"] == "jwt:idp"
    assert re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", headers["x-authz-decision-id"])
    # no refused request reached it
    assert page.step("curl -s -w ' %{http_code} %header{www-authenticate}").upstream == []
    assert page.step("forged").upstream == []
    assert len(stack.upstream.requests) == 1


def _clock_skew_s(policy: Path) -> float:
    (profile,) = yaml.safe_load(policy.read_text())["signatures"].values()
    skew = str(profile.get("clock_skew", "5s"))
    assert skew.endswith("s")
    return float(skew[:-1])


def test_howto_signing(stack: Stack) -> None:
    def past_the_epoch() -> None:
        # The page says: a signature created less than clock_skew after authz
        # started is refused (the replay store's epoch). Check that, then wait
        # it out, as a reader who signs a few seconds later does.
        workdir = stack.workdir
        key = load_signing_key((workdir / "bot.key.pem").read_bytes(), "ed25519")
        url = f"{stack.api}/v1/orders"
        early = sign_request("GET", url, [], key_id="bot-1", algorithm="ed25519", key=key)
        status, _, body = http_request(url, headers=early)
        assert (status, json.loads(body)["error"]) == (401, "sig.replay_unverifiable")
        # created is whole seconds: from here on, created - clock_skew >= the epoch
        until = math.ceil(stack.started_at) + _clock_skew_s(workdir / "policy.yaml")
        while time.time() < until:
            time.sleep(0.1)

    page = run_page("howto-signing.md", stack, wait=past_the_epoch)

    (seen,) = page.step("cat signature.txt").upstream
    assert seen["path"] == "/v1/orders?page=1"
    headers = seen["headers"]
    assert headers["x-authz-key-id"] == "bot-1"
    assert headers["x-authz-subject"] == "partner-bot"
    assert headers["x-authz-auth"] == "signature:bots"
    # the replay and the signature for another host never reached the API
    assert page.step("%header{www-authenticate}").upstream == []
    assert page.step("@other-host.txt").upstream == []
    (other,) = page.step("@api-host.txt").upstream
    assert other["headers"]["host"] == "api.example.com"
    assert other["headers"]["x-authz-key-id"] == "bot-1"
    assert len(stack.upstream.requests) == 2
