"""authz's HTTP door behind each real proxy, on the shipped example configs.

Envoy (ext_authz http_service), nginx (auth_request), Traefik (forwardAuth)
and Caddy (forward_auth) stand between a client and an upstream that echoes
what it received. The same contract holds through each: allowed requests
reach the upstream with authz's x-authz-* headers and never with a client's;
refused and limited ones get authz's status, headers and reason at the client
and never reach the upstream; authz decided on the original method, path and
host (read back from its decision log).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from authz.decision import REASONS
from authz.httpsig import sign_request
from authz.keys import load_keys
from tests.support.jwt_tokens import KEYS, mint
from tests.support.procs import EchoUpstream, Proc, http_request
from tests.support.proxies import (
    Proxy,
    fetch,
    start_authz_http,
    start_caddy,
    start_envoy_http,
    start_nginx,
    start_traefik,
)

POLICY = Path(__file__).parent / "policies" / "http_door.yaml"
LAUNCHERS: dict[str, Callable[[int, int], Proxy]] = {
    "envoy": start_envoy_http,
    "nginx": start_nginx,
    "traefik": start_traefik,
    "caddy": start_caddy,
}
# proxies that can add authz's RateLimit fields to an allowed request's response
PASSES_CLIENT_HEADERS_ON_ALLOW = {"envoy", "nginx"}
# proxies that remove every client-sent x-authz-* header, not only the ones authz sets
REMOVES_ANY_X_AUTHZ = {"envoy", "traefik", "caddy"}

_clients = itertools.count(1)


def client_key() -> str:
    """A fresh quota bucket (the test policy counts per x-client header)."""
    return f"c{time.monotonic_ns()}-{next(_clients)}"


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, int, Path]]:
    log = tmp_path_factory.mktemp("authz") / "decisions.jsonl"
    proc, _grpc_port, http_port = start_authz_http(POLICY, "--decision-log", str(log))
    proc.ready_s = time.time()  # type: ignore[attr-defined]  # its memory store's epoch is earlier
    with proc:
        yield proc, http_port, log


@pytest.fixture(scope="module", params=sorted(LAUNCHERS))
def proxy(
    request: pytest.FixtureRequest, authz: tuple[Proc, int, Path], echo_upstream: EchoUpstream
) -> Iterator[tuple[str, Proxy]]:
    name = request.param
    with LAUNCHERS[name](echo_upstream.port, authz[1]) as running:
        yield name, running


def decision(log: Path, decision_id: str, timeout: float = 3.0) -> dict[str, Any]:
    """authz's decision log line for one decision id (the log is flushed every 0.2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        if log.exists():
            for line in log.read_text().splitlines():
                rec = json.loads(line)
                if rec["id"] == decision_id:
                    return rec
        if time.monotonic() > deadline:
            raise AssertionError(f"decision {decision_id} not in the decision log")
        time.sleep(0.05)


def test_allowed_request_reaches_upstream_with_authz_headers(
    proxy: tuple[str, Proxy], authz: tuple[Proc, int, Path], upstream: EchoUpstream
) -> None:
    name, running = proxy
    reply = fetch(running.port, "POST", "/api/items?page=2", {"x-client": client_key(), "host": "api.example.test"})
    assert reply.status == 200, reply
    seen = upstream.last()
    assert seen["method"] == "POST"
    assert seen["path"] == "/api/items?page=2"
    headers = seen["headers"]
    assert headers["x-authz-client-ip"] == "127.0.0.1"
    assert headers["x-authz-auth"] == "anonymous"
    rec = decision(authz[2], headers["x-authz-decision-id"])
    assert (rec["outcome"], rec["reason"], rec["route"], rec["door"]) == ("allow", "ok", "api", "http")
    assert (rec["method"], rec["path"]) == ("POST", "/api/items")
    assert rec["host"].startswith("api.example.test")
    if name in PASSES_CLIENT_HEADERS_ON_ALLOW:
        assert reply.headers["ratelimit"].startswith('"roomy";r=')
        assert reply.headers["ratelimit-policy"] == '"roomy";q=100000;w=60'


def test_spoofed_authz_headers_never_reach_upstream(proxy: tuple[str, Proxy], upstream: EchoUpstream) -> None:
    name, running = proxy
    forged = {
        "x-client": client_key(),
        "x-authz-subject": "admin",
        "x-authz-decision-id": "forged",
        "x-authz-client-ip": "10.6.6.6",
        "x-authz-auth": "jwt:forged",
        "x-authz-key-id": "forged-key",
        "x-authz-extra": "forged",
    }
    reply = fetch(running.port, "GET", "/api/whoami", forged)
    assert reply.status == 200, reply
    headers = upstream.last()["headers"]
    assert headers["x-authz-decision-id"] not in ("forged", "")
    assert headers["x-authz-client-ip"] == "127.0.0.1"
    assert headers["x-authz-auth"] == "anonymous"
    assert "x-authz-subject" not in headers
    assert "x-authz-key-id" not in headers
    if name in REMOVES_ANY_X_AUTHZ:
        assert "x-authz-extra" not in headers
    else:  # nginx cannot remove headers by prefix (docs/http.md): only the names authz sets are safe
        del headers["x-authz-extra"]
    # no forged value made it under any name authz sets
    assert not [v for n, v in headers.items() if n.startswith("x-authz-") and "forged" in v]


def test_client_written_forwarded_for_is_not_believed(
    proxy: tuple[str, Proxy], authz: tuple[Proc, int, Path], upstream: EchoUpstream
) -> None:
    # 203.0.113.66 is on the policy's deny list: believing the client's own
    # X-Forwarded-For would refuse it; every proxy must replace it with the peer
    _, running = proxy
    reply = fetch(running.port, "GET", "/api/xff", {"x-client": client_key(), "x-forwarded-for": "203.0.113.66"})
    assert reply.status == 200, reply
    assert upstream.last()["headers"]["x-authz-client-ip"] == "127.0.0.1"


def test_denied_request_gets_authz_answer_and_never_reaches_upstream(
    proxy: tuple[str, Proxy], authz: tuple[Proc, int, Path], upstream: EchoUpstream
) -> None:
    _, running = proxy
    reply = fetch(running.port, "GET", "/admin/users", {"x-client": client_key()})
    assert reply.status == 403, reply
    body = json.loads(reply.body)
    assert body["error"] == "route.deny"
    assert reply.headers["x-authz-decision-id"] == body["decision_id"]
    assert reply.headers["cache-control"] == "no-store"
    rec = decision(authz[2], body["decision_id"])
    assert (rec["outcome"], rec["route"], rec["path"]) == ("deny", "admin", "/admin/users")
    assert upstream.count == 0


def test_unrouted_method_is_refused_with_its_status(proxy: tuple[str, Proxy], upstream: EchoUpstream) -> None:
    # PATCH is not among the api route's methods: authz must have seen the
    # original method, not the proxy's GET to the auth endpoint
    _, running = proxy
    reply = fetch(running.port, "PATCH", "/api/items", {"x-client": client_key()})
    assert reply.status == REASONS["route.no_match"].status, reply
    assert json.loads(reply.body)["error"] == "route.no_match"
    assert upstream.count == 0


def test_limited_request_gets_429_with_retry_after(proxy: tuple[str, Proxy], upstream: EchoUpstream) -> None:
    _, running = proxy
    key = client_key()
    for _ in range(2):
        assert fetch(running.port, "GET", "/limited/thing", {"x-client": key}).status == 200
    reply = fetch(running.port, "GET", "/limited/thing", {"x-client": key})
    assert reply.status == 429, reply
    assert json.loads(reply.body)["error"] == "quota.exhausted"
    assert 1 <= int(reply.headers["retry-after"]) <= 60
    assert reply.headers["ratelimit"].startswith('"tight";r=0;t=')
    assert reply.headers["ratelimit-policy"] == '"tight";q=2;w=60'
    assert reply.headers["x-authz-decision-id"]
    assert upstream.count == 2


# -- claim headers (docs/jwt.md "Claim headers"): forwarded, and never forged

#: the claim headers of tests/integration/policies/http_door.yaml (and of the example policy)
CLAIM_HEADERS = ("x-authz-email", "x-authz-org")
#: a client's own copies, in mixed case, one on two lines
FORGED_CLAIMS = [
    ("X-Authz-Email", "ceo@victim.test"),
    ("x-authz-email", "cfo@victim.test"),
    ("X-AUTHZ-ORG", "victim"),
]


def token(**claims: Any) -> str:
    now = int(time.time())
    return mint("ES256", **{"iat": now - 10, "exp": now + 300, **claims})


def signature_headers(authz: tuple[Proc, int, Path], url: str) -> list[tuple[str, str]]:
    key = load_keys(str(KEYS / "keys.yaml")).get("sig-hmac")
    assert key is not None
    # created - skew (1 s) must not predate the epoch of authz's fresh memory
    # store, and created must not be ahead of the clock by more than the skew
    created = max(int(time.time()), math.ceil(authz[0].ready_s) + 1)  # type: ignore[attr-defined]
    while time.time() < created - 1:  # at most ~2 s, once
        time.sleep(0.05)
    return sign_request("GET", url, [], key_id="sig-hmac", algorithm="hmac-sha256", key=key.material, created=created)


def test_a_verified_tokens_claim_headers_reach_the_upstream(proxy: tuple[str, Proxy], upstream: EchoUpstream) -> None:
    _, running = proxy
    bearer = token(sub="user-9", email="user-9@partner.test", org={"id": "acme"})
    url = f"http://127.0.0.1:{running.port}/jwt/orders"
    status, _, body = http_request(url, headers=[("authorization", f"Bearer {bearer}"), ("x-client", client_key()), *FORGED_CLAIMS])
    assert status == 200, body
    raw = upstream.last()["raw_headers"]
    assert [v for n, v in raw if n == "x-authz-email"] == ["user-9@partner.test"]
    assert [v for n, v in raw if n == "x-authz-org"] == ["acme"]
    assert [v for n, v in raw if n == "x-authz-subject"] == ["user-9"]
    assert [v for n, v in raw if n == "x-authz-auth"] == ["jwt:partners"]


@pytest.mark.parametrize("route", ["anonymous", "signature", "jwt-without-the-claims"])
def test_a_forged_claim_header_never_reaches_the_upstream(
    proxy: tuple[str, Proxy], authz: tuple[Proc, int, Path], upstream: EchoUpstream, route: str
) -> None:
    _, running = proxy
    base = f"http://127.0.0.1:{running.port}"
    if route == "anonymous":
        url, extra, auth = f"{base}/api/claims", [], "anonymous"
    elif route == "signature":
        url = f"{base}/signed/claims"
        extra, auth = signature_headers(authz, url), "signature:bots"
    else:
        url, auth = f"{base}/jwt/claims", "jwt:partners"
        extra = [("authorization", f"Bearer {token(sub='user-3')}")]  # no email, no org claim
    status, _, body = http_request(url, headers=[*FORGED_CLAIMS, ("x-client", client_key()), *extra])
    assert status == 200, body
    raw = upstream.last()["raw_headers"]
    assert [v for n, v in raw if n == "x-authz-auth"] == [auth]
    assert [(n, v) for n, v in raw if n in CLAIM_HEADERS] == []


@pytest.mark.parametrize(
    ("claims", "status", "reason"),
    [(None, 401, "auth.missing"), ({"scope": "profile"}, 403, "jwt.insufficient_scope")],
    ids=["no-token", "insufficient-scope"],
)
def test_a_refusal_carries_exactly_one_www_authenticate(
    proxy: tuple[str, Proxy], upstream: EchoUpstream, claims: dict[str, Any] | None, status: int, reason: str
) -> None:
    _, running = proxy
    headers = {"x-client": client_key()}
    if claims is not None:
        headers["authorization"] = f"Bearer {token(**claims)}"
    reply = fetch(running.port, "GET", "/jwt/orders", headers)
    assert (reply.status, json.loads(reply.body)["error"]) == (status, reason), reply
    challenges = [v for n, v in reply.header_list if n.lower() == "www-authenticate"]
    assert len(challenges) == 1, challenges
    assert challenges[0].startswith('Bearer realm="partners"')
    assert upstream.count == 0
