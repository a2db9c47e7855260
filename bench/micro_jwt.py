"""Micro benchmarks of JWT verification: what one token costs authz, with and without the cache.

* ``verify`` of a fresh RS256 / ES256 token (cache disabled: every call parses,
  looks the key up and checks the signature and claims);
* ``verify`` of a token the cache already holds (a SHA-256 of the token and a
  dictionary lookup, plus the key-still-current and expiry checks).

Keys are generated in memory; time is pinned so the tokens never expire during
the run. Each figure is the mean over a bounded loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from authz.policy import load_policy
from authz.stages.authenticate.jwt import JwtAuthenticator

NOW_MS = 1_700_000_000_000
MAX_CALLS = 200_000
BATCH = 50


def _provider(jwks: dict[str, object], cache_size: int) -> JwtAuthenticator:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "policy.yaml")
        with open(path, "w") as f:
            f.write(
                "version: 1\njwt_providers:\n  b:\n    issuer: https://idp.bench/\n    audiences: [api]\n"
                f"    algorithms: [RS256, ES256]\n    cache_size: {cache_size}\n"
                f"    keys: {{jwks: {json.dumps(jwks)}}}\nroutes:\n  - name: r\n    auth: [jwt:b]\n"
            )
        auth = load_policy(path).authenticators["jwt:b"]
    assert isinstance(auth, JwtAuthenticator)
    return auth


def _per_op_us(auth: JwtAuthenticator, token: str, duration_s: float) -> float:
    loop = asyncio.new_event_loop()
    try:
        verify = auth.verify

        async def run() -> float:
            for _ in range(BATCH):
                await verify(token, NOW_MS)
            calls = 0
            started = time.perf_counter()
            deadline = started + duration_s
            while calls < MAX_CALLS:
                for _ in range(BATCH):
                    await verify(token, NOW_MS)
                calls += BATCH
                if time.perf_counter() >= deadline:
                    break
            return (time.perf_counter() - started) / calls * 1e6

        return loop.run_until_complete(run())
    finally:
        loop.close()


def run(duration_s: float) -> list[tuple[str, float, str]]:
    rsa_key = rsa.generate_private_key(65537, 2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks_keys = []
    for kid, alg, key, cls in (
        ("r1", "RS256", rsa_key, pyjwt.algorithms.RSAAlgorithm),
        ("e1", "ES256", ec_key, pyjwt.algorithms.ECAlgorithm),
    ):
        jwk = json.loads(cls.to_jwk(key.public_key()))
        jwk.update(kid=kid, alg=alg)
        jwks_keys.append(jwk)
    jwks = {"keys": jwks_keys}
    claims = {"iss": "https://idp.bench/", "aud": "api", "sub": "bench", "iat": NOW_MS // 1000, "exp": NOW_MS // 1000 + 3600}
    tokens = {
        "RS256": pyjwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "r1"}),
        "ES256": pyjwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "e1"}),
    }
    uncached = _provider(jwks, cache_size=0)
    cached = _provider(jwks, cache_size=1000)
    share = duration_s / 4
    out: list[tuple[str, float, str]] = []
    for alg, token in tokens.items():
        out.append((f"jwt {alg} verify (no cache)", _per_op_us(uncached, token, share), "µs/op"))
        out.append((f"jwt {alg} verify (cached)", _per_op_us(cached, token, share), "µs/op"))
    return out


if __name__ == "__main__":
    for name, value, unit in run(2.0):
        print(f"{name:36} {value:10.2f} {unit}")
