"""A fresh RSA key, its JWKS and a valid RS256 token for the jwt_authn scenario.

The key lives only for one run; the token is valid for an hour, so Envoy
verifies a real signature on every request.
"""

from __future__ import annotations

import base64
import json
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ISSUER = "https://bench.authz.invalid"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(n: int) -> str:
    return _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def make_jwks_and_token(kid: str = "bench-1") -> tuple[str, str]:
    """(JWKS JSON text, compact RS256 token) for a new 2048-bit key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_numbers()
    jwks = {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": _int_b64(pub.n), "e": _int_b64(pub.e)}]}
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    claims = {"iss": ISSUER, "sub": "bench-client", "aud": "bench", "iat": now, "exp": now + 3600}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return json.dumps(jwks), f"{signing_input}.{_b64(sig)}"
