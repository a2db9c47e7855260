"""JWT test helpers: the committed test keys, token minting, and providers compiled from YAML.

Tokens are minted with PyJWT (an independent implementation of the signing
side); authz verifies them with its own code path. Time is pinned: ``NOW_S``.
"""

from __future__ import annotations

import base64
import json
import textwrap
from functools import cache
from pathlib import Path
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization

from authz.keys import load_keys
from authz.policy import load_policy
from authz.request import Request
from authz.stages.authenticate.jwt import JwtAuthenticator
from authz.stages.context import Ctx

KEYS = Path(__file__).resolve().parents[1] / "keys" / "jwt"
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "jose"
#: the pinned clock of the jwt tests: 2023-11-14T22:13:20Z
NOW_S = 1_700_000_000
NOW_MS = NOW_S * 1000
ISS = "https://idp.test/"
AUD = "api.test"

#: algorithm -> the kid of the committed test key that signs it
KID_FOR = {
    "RS256": "rsa-1", "RS384": "rsa-1", "RS512": "rsa-1",
    "PS256": "rsa-1", "PS384": "rsa-1", "PS512": "rsa-1",
    "ES256": "ec-1", "ES384": "ec-384", "ES512": "ec-521", "EdDSA": "ed-1",
    "HS256": "hs-256", "HS384": "hs-384", "HS512": "hs-512",
}  # fmt: skip


@cache
def private_key(kid: str) -> Any:
    """The signing key for a kid: a private key object, or the HMAC secret bytes."""
    if kid.startswith("hs-") or kid == "rfc7515-a1":
        key = load_keys(str(KEYS / "keys.yaml")).get(kid)
        assert key is not None
        return key.material
    return serialization.load_pem_private_key((KEYS / f"{kid}.key.pem").read_bytes(), None)


def claims(**over: Any) -> dict[str, Any]:
    """A valid claims set at the pinned time; ``None`` values remove a claim."""
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "user-42",
        "iat": NOW_S - 60,
        "exp": NOW_S + 600,
        "scope": "orders:read profile",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def mint(alg: str = "RS256", kid: str | None = "", headers: dict[str, Any] | None = None, **claim_over: Any) -> str:
    """A token signed by the committed key ``kid`` (else the one for ``alg``).

    ``kid=""`` names the signing key's kid, ``None`` names none, an unknown kid is
    only a label on a token signed by the key for ``alg``.
    """
    known = kid and ((KEYS / f"{kid}.key.pem").exists() or kid.startswith("hs-"))
    signing_kid = kid if known else KID_FOR[alg]
    hdr = dict(headers or {})
    if kid is not None:
        hdr["kid"] = kid or signing_kid
    return pyjwt.encode(claims(**claim_over), private_key(signing_kid), algorithm=alg, headers=hdr)


def b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token assembled by hand (for forged and malformed inputs)."""
    return f"{b64(json.dumps(header))}.{b64(json.dumps(payload))}.{b64(signature)}"


def provider(tmp_path: Path, body: str, *, name: str = "p") -> JwtAuthenticator:
    """Compile a policy with one jwt provider ``name`` (YAML ``body``) and return it."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"version: 1\nkeys_file: {KEYS / 'keys.yaml'}\njwt_providers:\n  {name}:\n"
        + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
        + f"\nroutes:\n  - name: api\n    auth: [jwt:{name}]\n"
    )
    auth = load_policy(str(policy)).authenticators[f"jwt:{name}"]
    assert isinstance(auth, JwtAuthenticator)
    return auth


STANDARD = f"""
issuer: {ISS}
audiences: [{AUD}]
algorithms: [RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, HS256, HS384, HS512]
keys:
  jwks_file: {KEYS / 'jwks.json'}
  keyring: [hs-256, hs-384, hs-512, hs-revoked]
"""


def request(token: str | None = None, headers: dict[str, str] | None = None, query: str = "") -> Request:
    h = dict(headers or {})
    if token is not None:
        h["authorization"] = f"Bearer {token}"
    return Request(method="GET", path="/v1/x", query=query, has_query=bool(query), host="api.test", headers=h, peer_ip="127.0.0.1")


def ctx(req: Request | None = None, now_ms: int = NOW_MS) -> Ctx:
    return Ctx(req or request(), now_ms, "test-decision")
