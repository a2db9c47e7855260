"""The example tokens of RFC 7515, RFC 7519 and RFC 8037 (literal files in tests/vectors/jose), pinned clock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authz.stages.authenticate.jwks import jwk_to_key
from authz.stages.authenticate.jwt import JWS_ALGORITHMS, b64url_decode, verify_signature
from tests.support.jwt_tokens import VECTORS, ctx, provider, request

#: the RFC 7515 A.1-A.3 claims expire at 1300819380 (2011-03-22T18:43:00Z)
RFC_EXP_MS = 1_300_819_380_000
BEFORE_EXP = RFC_EXP_MS - 60_000


def vector(name: str) -> dict[str, object]:
    return json.loads((VECTORS / name).read_text())


def _jwks_provider(tmp_path: Path, name: str, alg: str) -> object:
    v = vector(name)
    (tmp_path / "v.jwks.json").write_text(json.dumps({"keys": [v["jwk"]]}))
    return provider(
        tmp_path,
        f"""
        issuer: joe
        subject_claim: iss
        algorithms: [{alg}]
        keys: {{jwks_file: v.jwks.json}}
        """,
    )


@pytest.mark.parametrize(
    ("name", "alg"),
    [("rfc7515_a2_rs256.json", "RS256"), ("rfc7515_a3_es256.json", "ES256")],
)
async def test_rfc7515_example_tokens_verify_before_their_expiry(tmp_path: Path, name: str, alg: str) -> None:
    auth = _jwks_provider(tmp_path, name, alg)
    token = str(vector(name)["token"])
    result = await auth.authenticate(request(token), ctx(now_ms=BEFORE_EXP))  # type: ignore[attr-defined]
    assert result.ok, result.reason
    assert result.subject == "joe"
    assert result.claims["http://example.com/is_root"] is True


async def test_rfc7519_section_3_1_hs256_token_with_keyring_secret(tmp_path: Path) -> None:
    auth = provider(
        tmp_path,
        """
        issuer: joe
        subject_claim: iss
        algorithms: [HS256]
        keys: {keyring: [rfc7515-a1]}
        """,
    )
    token = str(vector("rfc7515_a1_hs256.json")["token"])
    assert token.endswith(".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
    ok = await auth.authenticate(request(token), ctx(now_ms=BEFORE_EXP))
    assert ok.ok and ok.subject == "joe"
    late = await auth.authenticate(request(token), ctx(now_ms=RFC_EXP_MS + 31_000))
    assert (late.ok, late.reason) == (False, "jwt.expired")
    assert late.challenge == 'Bearer realm="authz", error="invalid_token", error_description="token expired"'


@pytest.mark.parametrize(
    ("name", "payload"),
    [("rfc7515_a4_es512.json", b"Payload"), ("rfc8037_a4_ed25519.json", b"Example of Ed25519 signing")],
)
def test_jws_examples_whose_payload_is_not_a_claims_set_verify_at_the_jws_layer(name: str, payload: bytes) -> None:
    v = vector(name)
    alg = str(v["alg"])
    key = jwk_to_key(v["jwk"], frozenset(JWS_ALGORITHMS), name)
    assert key is not None and key.algorithms == {alg}
    h64, p64, s64 = str(v["token"]).split(".")
    assert b64url_decode(p64) == payload
    assert verify_signature(alg, key, f"{h64}.{p64}".encode(), b64url_decode(s64))
    tampered = b64url_decode(s64)[:-1] + bytes([b64url_decode(s64)[-1] ^ 1])
    assert not verify_signature(alg, key, f"{h64}.{p64}".encode(), tampered)


async def test_jws_example_with_text_payload_is_a_malformed_jwt(tmp_path: Path) -> None:
    auth = _jwks_provider(tmp_path, "rfc8037_a4_ed25519.json", "EdDSA")
    result = await auth.authenticate(request(str(vector("rfc8037_a4_ed25519.json")["token"])), ctx())  # type: ignore[attr-defined]
    assert (result.ok, result.reason) == (False, "jwt.malformed")


async def test_rfc7515_a5_unsecured_example_is_refused(tmp_path: Path) -> None:
    auth = _jwks_provider(tmp_path, "rfc7515_a2_rs256.json", "RS256")
    result = await auth.authenticate(request(str(vector("rfc7515_a5_none.json")["token"])), ctx(now_ms=BEFORE_EXP))  # type: ignore[attr-defined]
    assert (result.ok, result.reason) == (False, "jwt.alg_not_allowed")
