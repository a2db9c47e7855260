"""Nothing a client sends can pass for a header authz set.

Every header name a provider, method or stage of the policy may set on an
allowed request is collected when the policy is compiled
(``Policy.upstream_headers``); a client-sent copy is removed from every
allowed request whose decision did not set it, whichever method (or
``anonymous``, or an ``allow`` route) let it through. Real engine, real JWT
and RFC 9421 methods, memory store, pinned clock.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.clock import FixedClock
from authz.decision import DecisionIds, Outcome
from authz.httpsig import sign_request
from authz.keys import load_keys
from authz.pipeline import Engine
from authz.policy import load_policy
from authz.request import Request
from authz.stages import respond
from authz.stages.context import Ctx
from authz.store import MemoryStore
from tests.support.jwt_tokens import AUD, ISS, KEYS, NOW_MS, NOW_S, mint

POLICY = f"""
version: 1
keys_file: {KEYS / 'keys.yaml'}
jwt_providers:
  partners:
    issuer: {ISS}
    audiences: [{AUD}]
    algorithms: [ES256]
    keys: {{jwks_file: {KEYS / 'jwks.json'}}}
    forward:
      claims: {{email: x-authz-email, org.id: x-authz-org}}
      payload_header: x-authz-jwt-payload
  others:
    issuer: {ISS}
    audiences: [{AUD}]
    algorithms: [ES256]
    keys: {{jwks_file: {KEYS / 'jwks.json'}}}
    forward:
      claims: {{tenant: x-authz-tenant}}
signatures:
  bots: {{keys: [sig-hmac], nonce: optional}}
routes:
  - name: open
    match: {{path: {{prefix: /open/}}}}
    action: allow
  - name: anon
    match: {{path: {{prefix: /anon/}}}}
    auth: [anonymous]
  - name: signed
    match: {{path: {{prefix: /signed/}}}}
    auth: [signature:bots]
  - name: jwt
    match: {{path: {{prefix: /jwt/}}}}
    auth: [jwt:partners]
"""

#: a client's attempt at every header the policy may set, in mixed case and on repeated lines
FORGED = [
    ("X-Authz-Email", "ceo@victim.test"),
    ("x-authz-email", "second@victim.test"),
    ("X-AUTHZ-ORG", "victim"),
    ("x-authz-jwt-payload", "e30"),
    ("x-authz-tenant", "victim"),
    ("x-authz-subject", "admin"),
]


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return Engine(load_policy(str(path)), MemoryStore(epoch_ms=NOW_MS - 60_000), clock=FixedClock(NOW_MS), ids=DecisionIds("t"))


def request(path: str, extra: list[tuple[str, str]] = ()) -> Request:  # type: ignore[assignment]
    # as both doors build it: names lower-cased, repeated lines joined with ", "
    headers: dict[str, str] = {}
    for name, value in [*FORGED, *extra]:
        name = name.lower()
        headers[name] = value if name not in headers else f"{headers[name]}, {value}"
    return Request(method="GET", path=path, host="api.test", headers=headers, peer_ip="127.0.0.1")


def test_the_policy_knows_every_header_it_may_set(engine: Engine) -> None:
    assert engine.policy.upstream_headers == respond.UPSTREAM_HEADERS | {
        "x-authz-email", "x-authz-org", "x-authz-jwt-payload", "x-authz-tenant",
    }  # fmt: skip


def signed(path: str) -> list[tuple[str, str]]:
    key = load_keys(str(KEYS / "keys.yaml")).get("sig-hmac")
    assert key is not None
    return sign_request("GET", f"http://api.test{path}", [], key_id="sig-hmac", algorithm="hmac-sha256", key=key.material, created=NOW_S)


@pytest.mark.parametrize(
    ("path", "method"),
    [("/open/x", ""), ("/anon/x", "anonymous"), ("/signed/x", "signature:bots")],
    ids=["allow-route", "anonymous", "signature"],
)
async def test_claim_headers_are_removed_on_routes_no_jwt_authenticated(engine: Engine, path: str, method: str) -> None:
    extra = signed(path) if method.startswith("signature") else []
    d = await engine.decide(request(path, extra))
    assert d.outcome is Outcome.ALLOW, d.reason
    up = dict(d.upstream_headers)
    assert up.get("x-authz-auth", "") == method
    assert up.get("x-authz-subject") != "admin"
    assert not {"x-authz-email", "x-authz-org", "x-authz-jwt-payload", "x-authz-tenant"} & set(up)
    assert {"x-authz-email", "x-authz-org", "x-authz-jwt-payload", "x-authz-tenant"} <= set(d.remove_headers)
    assert len(d.remove_headers) == len(set(d.remove_headers))


async def test_a_jwt_route_sets_its_claims_and_removes_the_absent_and_the_other_providers(engine: Engine) -> None:
    token = mint("ES256", org={"id": "acme"})  # no email claim
    d = await engine.decide(request("/jwt/x", [("authorization", f"Bearer {token}")]))
    assert d.outcome is Outcome.ALLOW, d.reason
    up = dict(d.upstream_headers)
    assert up["x-authz-org"] == "acme"
    assert up["x-authz-subject"] == "user-42"
    assert up["x-authz-jwt-payload"] != "e30"
    # absent claim and another provider's header: removed; set ones never are
    assert {"x-authz-email", "x-authz-tenant"} <= set(d.remove_headers)
    assert not set(up) & set(d.remove_headers)
    assert len(d.remove_headers) == len(set(d.remove_headers))


async def test_a_managed_name_outside_the_prefix_is_removed_too() -> None:
    # the mechanism does not depend on the x-authz- prefix: any name the policy may set
    req = Request(method="GET", path="/", headers={"x-user": "admin", "x-other": "kept"}, peer_ip="127.0.0.1")
    ctx = Ctx(req, NOW_MS, "t-1")
    d = respond.finish(ctx, "r", 0, respond.UPSTREAM_HEADERS | {"x-user"})
    assert d.remove_headers == ["x-user"]
    ctx = Ctx(req, NOW_MS, "t-2")
    ctx.upstream_headers.append(("x-user", "alice"))
    ctx.remove_headers.append("x-user")  # a method asking to remove what authz sets is overruled
    d = respond.finish(ctx, "r", 0, respond.UPSTREAM_HEADERS | {"x-user"})
    assert d.remove_headers == []
    assert ("x-user", "alice") in d.upstream_headers
