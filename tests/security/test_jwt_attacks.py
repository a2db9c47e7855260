"""One named regression test per attack class on JWT verification (hostile inputs, literal keys in tests/keys/jwt)."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from authz.errors import ConfigError
from authz.stages.authenticate.jwks import VerifyKey
from authz.stages.authenticate.jwt import JwtAuthenticator, b64url_decode, verify_signature
from tests.support.jwt_tokens import KEYS, STANDARD, b64, claims, ctx, mint, provider, raw_token, request

RSA_PUBLIC_PEM = (KEYS / "rsa-1.pub.pem").read_bytes()
EC_PUBLIC_PEM = (KEYS / "ec-1.pub.pem").read_bytes()


@pytest.fixture
def std(tmp_path: Path) -> JwtAuthenticator:
    return provider(tmp_path, STANDARD)


@pytest.fixture
def rsa_only(tmp_path: Path) -> JwtAuthenticator:
    return provider(tmp_path, f"algorithms: [RS256]\nkeys: {{jwks_file: {KEYS / 'jwks.json'}}}\n")


async def reason(auth: JwtAuthenticator, token: str) -> str:
    result = await auth.authenticate(request(token), ctx())
    assert not result.ok
    return result.reason


def hs256(header: dict[str, object], payload: dict[str, object], secret: bytes) -> str:
    h, p = b64(json.dumps(header)), b64(json.dumps(payload))
    sig = hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64(sig)}"


# -- alg none ------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "noNe"])
@pytest.mark.parametrize("signature", [b"", b"x"])
async def test_alg_none_in_any_spelling_is_refused(std: JwtAuthenticator, alg: str, signature: bytes) -> None:
    token = raw_token({"alg": alg, "typ": "JWT"}, claims(), signature)
    assert await reason(std, token) == "jwt.alg_not_allowed"


def test_alg_none_cannot_be_configured(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"alg none \(unsecured tokens\) can never be allowed"):
        provider(tmp_path, f"algorithms: [RS256, None]\nkeys: {{jwks_file: {KEYS / 'jwks.json'}}}\n")


# -- algorithm confusion ----------------------------------------------------------


@pytest.mark.parametrize("pem", [RSA_PUBLIC_PEM, EC_PUBLIC_PEM], ids=["rsa-public-key", "ec-public-key"])
async def test_hs256_signed_with_a_public_key_is_refused_when_only_rsa_is_allowed(rsa_only: JwtAuthenticator, pem: bytes) -> None:
    token = hs256({"alg": "HS256", "kid": "rsa-1"}, claims(), pem)
    assert await reason(rsa_only, token) == "jwt.alg_not_allowed"


@pytest.mark.parametrize("pem", [RSA_PUBLIC_PEM, EC_PUBLIC_PEM], ids=["rsa-public-key", "ec-public-key"])
async def test_hs256_signed_with_a_public_key_is_refused_even_when_hs256_is_allowed(std: JwtAuthenticator, pem: bytes) -> None:
    kid = "rsa-1" if pem is RSA_PUBLIC_PEM else "ec-1"
    # naming the public key: the key is bound to RSA/EC and is never an HMAC secret
    assert await reason(std, hs256({"alg": "HS256", "kid": kid}, claims(), pem)) == "jwt.alg_not_allowed"
    # naming no key: only keyring HMAC secrets can verify HS256, and the PEM is not one
    assert await reason(std, hs256({"alg": "HS256"}, claims(), pem)) == "jwt.unknown_kid"
    assert await reason(std, hs256({"alg": "HS256", "kid": "hs-256"}, claims(), pem)) == "jwt.bad_signature"


async def test_a_token_may_not_choose_another_algorithm_for_a_bound_key(std: JwtAuthenticator) -> None:
    # ec-1 is an ES256 key: an RS256 or ES384 header naming it is refused before verification
    es256 = mint("ES256")
    h, p, s = es256.split(".")
    for alg in ("RS256", "ES384", "PS256", "EdDSA"):
        forged = f"{b64(json.dumps({'alg': alg, 'kid': 'ec-1'}))}.{p}.{s}"
        assert await reason(std, forged) == "jwt.alg_not_allowed"


def test_symmetric_and_private_keys_are_refused_in_a_jwks(tmp_path: Path) -> None:
    (tmp_path / "oct.json").write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}))
    with pytest.raises(ConfigError, match="symmetric"):
        provider(tmp_path, "algorithms: [HS256]\nkeys: {jwks_file: oct.json}\n")
    private = json.loads((KEYS / "jwks.json").read_text())["keys"][2] | {"d": "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}
    (tmp_path / "priv.json").write_text(json.dumps({"keys": [private]}))
    with pytest.raises(ConfigError, match="private key material"):
        provider(tmp_path, "algorithms: [ES256]\nkeys: {jwks_file: priv.json}\n")


# -- keys named by the token: jku, x5u, jwk, x5c -------------------------------------


class _CountingServer(http.server.ThreadingHTTPServer):
    hits = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.hits += 1  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"keys": []}')

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def trap() -> Iterator[_CountingServer]:
    server = _CountingServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


async def test_jku_x5u_jwk_x5c_headers_are_never_followed_or_trusted(std: JwtAuthenticator, trap: _CountingServer) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    attacker_jwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(attacker.public_key()))
    url = f"http://127.0.0.1:{trap.server_address[1]}/jwks.json"
    headers = {
        "jku": url,
        "x5u": url,
        "jwk": attacker_jwk,
        "x5c": ["MIIBszCCAVmgAwIBAgIUQ=="],
    }
    for kid in ("attacker", "ec-1", None):
        hdr = dict(headers) | ({"kid": kid} if kid else {})
        token = pyjwt.encode(claims(), attacker, algorithm="ES256", headers=hdr)
        expected = {"attacker": "jwt.unknown_kid", "ec-1": "jwt.bad_signature", None: "jwt.bad_signature"}[kid]
        assert await reason(std, token) == expected
    assert trap.hits == 0


# -- kid is a lookup key only -----------------------------------------------------


@pytest.mark.parametrize(
    "kid",
    ["../../../../../../dev/null", "/etc/passwd", "' OR '1'='1", "rsa-1' --", "rsa-1\u0000", "file:///dev/null", "*", ""],
)
async def test_kid_path_traversal_and_sql_strings_are_lookup_keys_only(std: JwtAuthenticator, kid: str) -> None:
    token = pyjwt.encode(claims(), _rsa_private(), algorithm="RS256", headers={"kid": kid})
    assert await reason(std, token) in {"jwt.unknown_kid"}


@pytest.mark.parametrize("kid", [7, {"a": 1}, ["rsa-1"], "k" * 257])
async def test_kid_that_is_not_a_short_string_is_malformed(std: JwtAuthenticator, kid: object) -> None:
    token = raw_token({"alg": "RS256", "kid": kid}, claims(), b"sig")
    assert await reason(std, token) == "jwt.malformed"


def _rsa_private() -> object:
    from tests.support.jwt_tokens import private_key

    return private_key("rsa-1")


# -- ECDSA psychic signatures (CVE-2022-21449) ---------------------------------------


ES256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.mark.parametrize(
    ("alg", "kid", "signature"),
    [
        ("ES256", "ec-1", bytes(64)),
        ("ES384", "ec-384", bytes(96)),
        ("ES512", "ec-521", bytes(132)),
        ("ES256", "ec-1", bytes(32) + (1).to_bytes(32, "big")),
        ("ES256", "ec-1", (1).to_bytes(32, "big") + bytes(32)),
        ("ES256", "ec-1", ES256_ORDER.to_bytes(32, "big") * 2),
        ("ES256", "ec-1", bytes(63)),
    ],
    ids=["es256-r0-s0", "es384-r0-s0", "es512-r0-s0", "r0", "s0", "r=s=n", "short"],
)
async def test_ecdsa_signature_with_r_or_s_zero_is_refused(std: JwtAuthenticator, alg: str, kid: str, signature: bytes) -> None:
    token = raw_token({"alg": alg, "kid": kid}, claims(), signature)
    assert await reason(std, token) == "jwt.bad_signature"


def test_psychic_signature_is_refused_by_the_verifier_itself() -> None:
    key = VerifyKey("k", frozenset({"ES256"}), ec.generate_private_key(ec.SECP256R1()).public_key(), "test")
    assert not verify_signature("ES256", key, b"anything", bytes(64))


# -- size, syntax ----------------------------------------------------------------


async def test_oversized_token_is_refused_before_parsing(std: JwtAuthenticator) -> None:
    big = mint("ES256", blob="x" * 9000)
    assert len(big) > 8192
    assert await reason(std, big) == "jwt.too_large"
    # garbage of the same size never reaches the parser either
    assert await reason(std, "!" * 8193) == "jwt.too_large"
    assert std.misses == 0


@pytest.mark.parametrize(
    "token",
    [
        "abc",
        "a.b",
        "a.b.c.d.e",  # JWE compact serialization
        '{"payload":"x","signatures":[]}',  # JWS JSON serialization
        "eyJhbGciOiJSUzI1NiJ9=.eyJzdWIiOiJ4In0.c2ln",  # padding
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2l+/w",  # standard alphabet
        "eyJhbGciOiJSUzI1NiJ9 .eyJzdWIiOiJ4In0.c2ln",
        b64("[1,2]") + "." + b64("{}") + ".c2ln",  # header not an object
        b64('{"alg":"RS256","alg":"none"}') + "." + b64("{}") + ".c2ln",  # duplicate member
        b64('{"alg":"RS256",') + "." + b64("{}") + ".c2ln",  # broken JSON
        b64('{"alg":"RS256","crit":["b64"],"b64":false}') + "." + b64("{}") + ".c2ln",
        b64('{"alg":"RS256","typ":"JWE"}') + "." + b64("{}") + ".c2ln",
        b64('{"typ":"JWT"}') + "." + b64("{}") + ".c2ln",  # no alg
        b64('{"alg":"RS256","x":NaN}') + "." + b64("{}") + ".c2ln",
    ],
)
async def test_malformed_tokens_are_refused_cleanly(std: JwtAuthenticator, token: str) -> None:
    assert await reason(std, token) == "jwt.malformed"


async def test_non_canonical_base64url_is_refused() -> None:
    with pytest.raises(ValueError):
        b64url_decode("QR")  # "A" is "QQ"; "QR" has stray low bits
    assert b64url_decode("QQ") == b"A"


async def test_payload_that_is_not_a_claims_object_after_a_valid_signature(std: JwtAuthenticator) -> None:
    key = _rsa_private()
    token = pyjwt.api_jws.encode(b"[1,2,3]", key, algorithm="RS256", headers={"kid": "rsa-1"})  # type: ignore[arg-type]
    assert await reason(std, token) == "jwt.malformed"


# -- time and audience ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"exp": 1_600_000_000}, "jwt.expired"),
        ({"nbf": 1_800_000_000}, "jwt.not_yet_valid"),
        ({"iss": "https://idp.test.evil/"}, "jwt.bad_issuer"),
        ({"aud": "api.test.evil"}, "jwt.bad_audience"),
        ({"exp": 1e308}, "jwt.malformed"),
        ({"exp": True}, "jwt.malformed"),
    ],
)
async def test_expired_future_wrong_issuer_wrong_audience(std: JwtAuthenticator, over: dict[str, object], expected: str) -> None:
    assert await reason(std, mint("RS256", **over)) == expected


async def test_missing_scope_is_403_insufficient_scope(tmp_path: Path) -> None:
    auth = provider(tmp_path, STANDARD + "scopes: [admin]\n")
    result = await auth.authenticate(request(mint("RS256", scope="admin:read not-admin")), ctx())
    assert (result.reason, result.status) == ("jwt.insufficient_scope", 403)
    assert 'error="insufficient_scope"' in result.challenge


# -- secrecy ---------------------------------------------------------------------------


async def test_tokens_are_never_logged(std: JwtAuthenticator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = [mint("RS256"), mint("RS256", exp=1), raw_token({"alg": "none"}, claims()), "x" * 9000]
    for t in tokens:
        await std.authenticate(request(t), ctx())
    text = caplog.text
    for t in tokens:
        for part in t.split("."):
            assert len(part) < 8 or part not in text
