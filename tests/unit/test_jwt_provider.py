"""JWT providers: interop with jwcrypto, claims, scopes, forwarding, token locations, cache, single use."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from jwcrypto import jwk as jc_jwk
from jwcrypto import jwt as jc_jwt

from authz.clock import FixedClock
from authz.decision import Outcome
from authz.pipeline import Engine
from authz.policy import load_policy
from authz.stages.authenticate.jwt import JwtAuthenticator
from authz.store import ALREADY_CLAIMED, BEFORE_EPOCH, CLAIMED, ClaimOnce
from authz.store.memory import MemoryStore
from tests.support.jwt_tokens import (
    AUD,
    ISS,
    KEYS,
    KID_FOR,
    NOW_MS,
    NOW_S,
    STANDARD,
    claims,
    ctx,
    mint,
    private_key,
    provider,
    request,
)

ALL_ALGS = sorted(KID_FOR)


@pytest.fixture
def std(tmp_path: Path) -> JwtAuthenticator:
    return provider(tmp_path, STANDARD)


def _jwcrypto_key(alg: str) -> jc_jwk.JWK:
    kid = KID_FOR[alg]
    if alg.startswith("HS"):
        secret = private_key(kid)
        return jc_jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(secret).rstrip(b"=").decode())
    return jc_jwk.JWK.from_pem((KEYS / f"{kid}.key.pem").read_bytes())


@pytest.mark.parametrize("alg", ALL_ALGS)
async def test_tokens_minted_by_jwcrypto_verify_for_every_algorithm(std: JwtAuthenticator, alg: str) -> None:
    token = jc_jwt.JWT(header={"alg": alg, "kid": KID_FOR[alg], "typ": "JWT"}, claims=claims())
    token.make_signed_token(_jwcrypto_key(alg))
    result = await std.authenticate(request(token.serialize()), ctx())
    assert result.ok, result.reason
    assert (result.subject, result.key_id) == ("user-42", KID_FOR[alg])


@pytest.mark.parametrize("alg", ALL_ALGS)
async def test_a_token_signed_by_another_key_of_the_same_kind_is_a_bad_signature(std: JwtAuthenticator, alg: str) -> None:
    good = mint(alg)
    h, p, s = good.split(".")
    other = mint(alg, sub="someone-else").split(".")
    forged = f"{h}.{other[1]}.{s}"  # the signature of one payload on another
    result = await std.authenticate(request(forged), ctx())
    assert (result.ok, result.reason) == (False, "jwt.bad_signature")


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"exp": NOW_S - 31}, "jwt.expired"),
        ({"exp": None}, "jwt.missing_claim"),
        ({"exp": "soon"}, "jwt.malformed"),
        ({"nbf": NOW_S + 31}, "jwt.not_yet_valid"),
        ({"iat": NOW_S + 31}, "jwt.not_yet_valid"),
        ({"iss": "https://evil.test/"}, "jwt.bad_issuer"),
        ({"iss": None}, "jwt.bad_issuer"),
        ({"aud": "other.test"}, "jwt.bad_audience"),
        ({"aud": ["a.test", "b.test"]}, "jwt.bad_audience"),
        ({"aud": None}, "jwt.bad_audience"),
        ({"sub": None}, "jwt.missing_claim"),
        ({"sub": 42}, "jwt.missing_claim"),
    ],
)
async def test_claims_are_checked_with_exact_reasons(std: JwtAuthenticator, over: dict[str, object], reason: str) -> None:
    result = await std.authenticate(request(mint("ES256", **over)), ctx())
    assert (result.ok, result.reason, result.status) == (False, reason, 0)
    assert 'error="invalid_token"' in result.challenge


async def test_leeway_admits_a_token_just_past_exp_and_an_audience_list(std: JwtAuthenticator) -> None:
    result = await std.authenticate(request(mint("ES256", exp=NOW_S - 29, aud=["x.test", AUD])), ctx())
    assert result.ok


async def test_max_lifetime(tmp_path: Path) -> None:
    auth = provider(tmp_path, STANDARD + "max_lifetime: 10m\n")
    assert (await auth.authenticate(request(mint("ES256", iat=NOW_S, exp=NOW_S + 600)), ctx())).ok
    long = await auth.authenticate(request(mint("ES256", iat=NOW_S, exp=NOW_S + 601)), ctx())
    assert long.reason == "jwt.lifetime_too_long"
    # a token that hides its lifetime by omitting iat is measured from now
    no_iat = await auth.authenticate(request(mint("ES256", iat=None, exp=NOW_S + 3600)), ctx())
    assert no_iat.reason == "jwt.lifetime_too_long"


@pytest.mark.parametrize(
    ("over", "ok"),
    [
        ({"scope": "orders:read orders:write"}, True),
        ({"scope": None, "scp": ["orders:write", "orders:read"]}, True),
        ({"scope": "orders:read"}, False),
        ({"scope": None}, False),
    ],
)
async def test_scopes_from_scope_string_or_scp_list(tmp_path: Path, over: dict[str, object], ok: bool) -> None:
    auth = provider(tmp_path, STANDARD + "scopes: [orders:read, orders:write]\nrealm: shop\n")
    result = await auth.authenticate(request(mint("RS256", **over)), ctx())
    assert result.ok is ok
    if not ok:
        assert (result.reason, result.status) == ("jwt.insufficient_scope", 403)
        assert result.challenge == (
            'Bearer realm="shop", error="insufficient_scope", '
            'error_description="token lacks a required scope", scope="orders:read orders:write"'
        )


async def test_required_claims(tmp_path: Path) -> None:
    auth = provider(tmp_path, STANDARD + "required_claims: [email]\n")
    assert (await auth.authenticate(request(mint("ES256")), ctx())).reason == "jwt.missing_claim"
    assert (await auth.authenticate(request(mint("ES256", email="a@b.test")), ctx())).ok


async def test_forwarded_claims_payload_header_and_token_removal(tmp_path: Path) -> None:
    auth = provider(
        tmp_path,
        STANDARD
        + """
forward:
  claims: {sub: x-authz-user, email: x-authz-email, groups: x-authz-groups, org.id: x-authz-org, is_admin: x-authz-admin, evil: x-authz-evil}
  payload_header: x-authz-jwt-payload
  remove_token: true
""",
    )
    token = mint("ES256", groups=["a", "b"], org={"id": 7}, is_admin=False, evil="a\r\nx-injected: 1")
    result = await auth.authenticate(request(token), ctx())
    assert result.ok
    up = dict(result.upstream_headers)
    assert up["x-authz-user"] == "user-42"
    assert up["x-authz-groups"] == "a,b"
    assert up["x-authz-org"] == "7"
    assert up["x-authz-admin"] == "false"
    payload = json.loads(base64.urlsafe_b64decode(up["x-authz-jwt-payload"] + "=="))
    assert payload["sub"] == "user-42"
    assert "x-authz-evil" not in up  # a claim with CR/LF is never a header
    # absent claims: the client's own copies of those headers are stripped
    assert set(result.remove_headers) == {"x-authz-email", "x-authz-evil", "authorization"}
    assert auth.upstream_header_names() == {
        "x-authz-user", "x-authz-email", "x-authz-groups", "x-authz-org", "x-authz-admin", "x-authz-evil", "x-authz-jwt-payload",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("token_from", "where"),
    [("{header: x-token}", "header"), ("{query: access_token}", "query"), ("{cookie: at}", "cookie")],
)
async def test_token_locations(tmp_path: Path, token_from: str, where: str) -> None:
    auth = provider(tmp_path, STANDARD + f"token_from: {token_from}\n")
    token = mint("ES256")
    if where == "header":
        req = request(headers={"x-token": token})
    elif where == "query":
        req = request(query=f"a=1&access_token={token}")
    else:
        req = request(headers={"cookie": f"x=1; at={token}"})
    assert auth.present(req)
    assert not auth.present(request(token))  # Authorization is not this provider's place
    assert (await auth.authenticate(req, ctx(req))).ok
    if where == "query":
        twice = request(query=f"access_token={token}&access_token={token}")
        assert (await auth.authenticate(twice, ctx(twice))).reason == "jwt.malformed"


def test_bearer_scheme_is_case_insensitive_and_other_schemes_are_not_present(std: JwtAuthenticator) -> None:
    assert std.present(request(headers={"authorization": "bearer abc"}))
    assert not std.present(request(headers={"authorization": "Basic dXNlcjpwYXNz"}))
    assert not std.present(request())


async def test_the_cache_answers_a_repeated_token_without_verifying_and_honours_expiry(std: JwtAuthenticator) -> None:
    token = mint("RS256", exp=NOW_S + 100)
    for _ in range(5):
        assert (await std.authenticate(request(token), ctx())).ok
    assert (std.misses, std.hits) == (1, 4)
    late = await std.authenticate(request(token), ctx(now_ms=NOW_MS + 131_000))
    assert late.reason == "jwt.expired"
    assert std.misses == 2


async def test_the_cache_is_bounded(tmp_path: Path) -> None:
    auth = provider(tmp_path, STANDARD + "cache_size: 3\n")
    tokens = [mint("ES256", jti=str(i)) for i in range(5)]
    for t in tokens:
        assert (await auth.authenticate(request(t), ctx())).ok
    assert len(auth._cache) == 3
    await auth.authenticate(request(tokens[0]), ctx())
    assert auth.hits == 0  # the oldest were evicted


async def test_revoked_keyring_key_is_refused(std: JwtAuthenticator) -> None:
    import jwt as pyjwt

    token = pyjwt.encode(claims(), private_key_for("hs-revoked"), algorithm="HS256", headers={"kid": "hs-revoked"})
    result = await std.authenticate(request(token), ctx())
    assert result.reason == "jwt.key_revoked"


def private_key_for(kid: str) -> bytes:
    from authz.keys import load_keys

    key = load_keys(str(KEYS / "keys.yaml")).get(kid)
    assert key is not None
    return bytes(key.material)


async def test_single_use_tokens_claim_their_jti_once_through_the_store(tmp_path: Path) -> None:
    auth = provider(tmp_path, STANDARD + "single_use: true\n")
    token = mint("ES256", jti="once-1")
    store = MemoryStore(epoch_ms=NOW_MS - 3_600_000)
    results = []
    for _ in range(2):
        c = ctx()
        r = await auth.authenticate(request(token), c)
        assert r.ok and len(r.ops) == 1
        op, check = r.ops[0]
        assert isinstance(op, ClaimOnce) and op.created_ms == (NOW_S - 60) * 1000
        assert check.kind == "replay"
        [res] = await store.apply([op], NOW_MS)
        results.append(res)
        check.judge(res, op, c)
        results.append(c.reason)
    assert results == [CLAIMED, None, ALREADY_CLAIMED, "jwt.replay"]
    no_jti = await auth.authenticate(request(mint("ES256")), ctx())
    assert no_jti.reason == "jwt.missing_claim"


async def test_single_use_token_issued_before_the_store_epoch_is_unverifiable(tmp_path: Path) -> None:
    auth = provider(tmp_path, STANDARD + "single_use: true\n")
    store = MemoryStore(epoch_ms=NOW_MS)  # the store lost its memory after the token was issued
    c = ctx()
    r = await auth.authenticate(request(mint("ES256", jti="j")), c)
    op, check = r.ops[0]
    [res] = await store.apply([op], NOW_MS)
    assert res == BEFORE_EPOCH
    check.judge(res, op, c)
    assert c.reason == "jwt.replay_unverifiable"
    assert "get a new token" in c.body["hint"]


async def test_through_the_engine_missing_token_gets_the_bearer_challenge(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"""version: 1
jwt_providers:
  p:
    issuer: {ISS}
    audiences: [{AUD}]
    algorithms: [ES256]
    realm: api
    keys: {{jwks_file: {KEYS / 'jwks.json'}}}
routes:
  - name: api
    auth: [jwt:p]
"""
    )
    engine = Engine(load_policy(str(policy)), MemoryStore(0), clock=FixedClock(NOW_MS))
    missing = await engine.decide(request())
    assert (missing.reason, missing.status) == ("auth.missing", 401)
    assert ("www-authenticate", 'Bearer realm="api"') in missing.client_headers
    ok = await engine.decide(request(mint("ES256")))
    assert ok.outcome is Outcome.ALLOW and ok.identity.subject == "user-42"
    assert ok.identity.method == "jwt:p"
