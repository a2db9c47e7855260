"""Bearer tokens through real Envoy and a real ``authz serve`` process.

A valid RS256 or ES256 token reaches the upstream with its claims forwarded as
headers (client-sent copies of those headers replaced or removed) and without
the token itself; an expired token, no token, a forged token and a token
lacking the required scope are answered at Envoy with the RFC 6750 challenge
and never reach the upstream. Tokens are minted relative to the wall clock.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from authz.httpsig import sign_request
from authz.keys import load_keys
from tests.integration.conftest import POLICIES
from tests.support.jwt_tokens import AUD, ISS, KEYS, b64, mint
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

POLICY = POLICIES / "jwt_envoy.yaml"


@dataclass
class Stack:
    envoy: Proc
    authz: Proc
    base: str
    #: when authz was known to be up (its memory store's epoch is earlier)
    ready_s: float

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def stack(echo_upstream: EchoUpstream) -> Iterator[Stack]:
    authz, authz_port = start_authz(POLICY, "--no-http")
    envoy: Proc | None = None
    try:
        ports = {"admin": free_port(), "ingress": free_port(), "upstream": echo_upstream.port, "authz": authz_port}
        envoy, _ = start_envoy(render_envoy_config(ENVOY_YAML, ports))
        yield Stack(envoy, authz, f"http://127.0.0.1:{ports['ingress']}", time.time())
    finally:
        if envoy is not None:
            envoy.stop()
        authz.stop()


def now_claims(**over: Any) -> dict[str, Any]:
    """Claims valid right now (the running authz reads the wall clock)."""
    now = int(time.time())
    return {"iat": now - 10, "exp": now + 300, **over}


def bearer(token: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {token}")


def reason_of(body: bytes) -> Any:
    return json.loads(body)["error"]


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_a_valid_token_reaches_the_upstream_with_its_claims_as_headers(stack: Stack, upstream: EchoUpstream, alg: str) -> None:
    token = mint(alg, **now_claims(sub=f"user-{alg}", org={"id": "acme"}, roles=["buyer", "viewer"]))
    spoofed = [("x-authz-user", "admin"), ("X-Authz-User-Email", "ceo@victim.test"), ("x-authz-subject", "admin")]
    status, _, body = http_request(stack.url("/orders/17"), headers=[bearer(token), *spoofed])
    assert status == 200, body
    assert upstream.count == 1
    seen = upstream.last()["headers"]
    assert seen["x-authz-subject"] == f"user-{alg}"
    assert seen["x-authz-auth"] == "jwt:partners"
    assert seen["x-authz-user"] == f"user-{alg}"
    assert seen["x-authz-org-id"] == "acme"
    assert seen["x-authz-user-roles"] == "buyer,viewer"
    # the token has no email claim: the client's header is removed, not passed on
    assert "x-authz-user-email" not in seen
    # remove_token: the bearer token never reaches the upstream
    assert "authorization" not in seen
    # one line per header: the client's copies were replaced, not appended to
    raw = [name for name, _ in upstream.last()["raw_headers"]]
    assert raw.count("x-authz-user") == 1
    assert raw.count("x-authz-subject") == 1


def test_an_expired_token_gets_401_invalid_token(stack: Stack, upstream: EchoUpstream) -> None:
    now = int(time.time())
    token = mint("RS256", iat=now - 600, exp=now - 60)  # past exp by more than the 5 s leeway
    status, headers, body = http_request(stack.url("/orders/17"), headers=[bearer(token)])
    assert (status, reason_of(body)) == (401, "jwt.expired")
    challenge = headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="partners"')
    assert 'error="invalid_token"' in challenge
    assert upstream.count == 0


def test_no_token_gets_401_with_the_bearer_challenge(stack: Stack, upstream: EchoUpstream) -> None:
    status, headers, body = http_request(stack.url("/orders/17"), headers=[("x-authz-user", "admin")])
    assert (status, reason_of(body)) == (401, "auth.missing")
    assert headers["www-authenticate"] == 'Bearer realm="partners"'
    assert upstream.count == 0


def test_a_token_of_another_key_with_an_unknown_kid_is_refused(stack: Stack, upstream: EchoUpstream) -> None:
    # rsa-2 is a real, well-formed key, but not in this provider's JWKS
    token = mint("RS256", kid="rsa-2", **now_claims(sub="admin"))
    status, headers, body = http_request(stack.url("/orders/17"), headers=[bearer(token)])
    assert (status, reason_of(body)) == (401, "jwt.unknown_kid")
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert upstream.count == 0


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
def test_a_token_forged_under_a_known_kid_is_refused(stack: Stack, upstream: EchoUpstream, kid: str) -> None:
    claims = {"iss": ISS, "aud": AUD, "sub": "admin", "scope": "orders:read", **now_claims()}
    if kid == "rsa-1":
        forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = pyjwt.encode(claims, forger, algorithm="RS256", headers={"kid": kid})
    else:
        # a genuine ec-1 signature over other claims, spliced onto an elevated payload
        genuine = mint("ES256", **now_claims(sub="user-42")).split(".")
        token = ".".join([genuine[0], b64(json.dumps(claims)), genuine[2]])
    status, headers, body = http_request(stack.url("/orders/17"), headers=[bearer(token)])
    assert (status, reason_of(body)) == (401, "jwt.bad_signature")
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert upstream.count == 0


def test_a_token_without_the_required_scope_gets_403(stack: Stack, upstream: EchoUpstream) -> None:
    token = mint("ES256", **now_claims(scope="profile orders:write"))
    status, headers, body = http_request(stack.url("/orders/17"), headers=[bearer(token)])
    assert (status, reason_of(body)) == (403, "jwt.insufficient_scope")
    challenge = headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="partners"')
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="orders:read"' in challenge
    assert upstream.count == 0


#: a client's own copies of every claim header of the policy, in mixed case, one twice
FORGED_CLAIMS = [
    ("X-Authz-User", "admin"),
    ("x-authz-user", "root"),
    ("X-AUTHZ-USER-EMAIL", "ceo@victim.test"),
    ("x-authz-org-id", "victim"),
    ("x-authz-user-roles", "admin"),
]
CLAIM_HEADERS = {"x-authz-user", "x-authz-user-email", "x-authz-org-id", "x-authz-user-roles"}


def sig_headers(stack: Stack, url: str) -> list[tuple[str, str]]:
    key = load_keys(str(KEYS / "keys.yaml")).get("sig-hmac")
    assert key is not None
    # created - skew (1 s) must not predate the epoch of authz's fresh memory
    # store, and created must not be ahead of the clock by more than the skew
    created = max(int(time.time()), math.ceil(stack.ready_s) + 1)
    while time.time() < created - 1:  # at most ~2 s, once
        time.sleep(0.05)
    return sign_request("GET", url, [], key_id="sig-hmac", algorithm="hmac-sha256", key=key.material, created=created)


@pytest.mark.parametrize("route", ["public", "signed"])
def test_forged_claim_headers_never_reach_the_upstream_on_routes_without_a_token(stack: Stack, upstream: EchoUpstream, route: str) -> None:
    url = stack.url(f"/{route}/x")
    extra = sig_headers(stack, url) if route == "signed" else []
    status, _, body = http_request(url, headers=[*FORGED_CLAIMS, *extra])
    assert status == 200, body
    seen = upstream.last()
    assert seen["headers"]["x-authz-auth"] == ("anonymous" if route == "public" else "signature:bots")
    assert not CLAIM_HEADERS & {name for name, _ in seen["raw_headers"]}


def test_a_forged_claim_header_never_reaches_the_upstream_when_the_token_lacks_the_claim(stack: Stack, upstream: EchoUpstream) -> None:
    token = mint("ES256", **now_claims(sub="user-7"))  # no email, org or roles claim
    status, _, body = http_request(stack.url("/orders/1"), headers=[bearer(token), *FORGED_CLAIMS])
    assert status == 200, body
    raw = upstream.last()["raw_headers"]
    assert [v for n, v in raw if n == "x-authz-user"] == ["user-7"]
    assert not (CLAIM_HEADERS - {"x-authz-user"}) & {name for name, _ in raw}


def test_a_subject_that_would_split_a_header_fails_closed_at_envoy(stack: Stack, upstream: EchoUpstream) -> None:
    # a validly signed token whose subject holds CR LF: authz never hands Envoy that header
    token = mint("ES256", **now_claims(sub="alice\r\nx-authz-role: admin"))
    status, headers, body = http_request(stack.url("/orders/1"), headers=[bearer(token)])
    assert (status, reason_of(body)) == (503, "internal.error"), body
    assert json.loads(body)["decision_id"] == headers["x-authz-decision-id"]
    assert "x-authz-role" not in headers
    assert upstream.count == 0
