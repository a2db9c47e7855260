"""Micro benchmark: what verifying one RFC 9421 signature costs, per algorithm.

Measured on the RFC's own Appendix B request shape (five covered components).
``verify`` is the cryptography alone; ``signature method`` is the whole
authentication of one request (parse Signature-Input and Signature, key
lookup, time and coverage rules, signature base, verify) without the store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from authz.httpsig import sign_request, signature_base, verify
from authz.httpsig.base import parse_signature, parse_signature_input
from authz.keys import Key, KeyRing
from authz.request import Request, join_field_lines
from authz.stages.authenticate.signature import SignatureProfile, message_of
from authz.stages.context import Ctx

URL = "https://api.example.com/v1/orders?id=42"
HEADERS = [("content-type", "application/json"), ("date", "Tue, 20 Apr 2021 02:07:55 GMT")]
COMPONENTS = ("@method", "@target-uri", "@authority", "content-type", "date")


def _keys() -> dict[str, tuple[Any, Any]]:
    """algorithm -> (signing key, verification material)."""
    out: dict[str, tuple[Any, Any]] = {"hmac-sha256": (b"s" * 32, b"s" * 32)}
    for alg, priv in (
        ("ed25519", ed25519.Ed25519PrivateKey.generate()),
        ("ecdsa-p256-sha256", ec.generate_private_key(ec.SECP256R1())),
        ("ecdsa-p384-sha384", ec.generate_private_key(ec.SECP384R1())),
        ("rsa-pss-sha512", rsa.generate_private_key(65537, 2048)),
        ("rsa-v1_5-sha256", rsa.generate_private_key(65537, 2048)),
    ):
        out[alg] = (priv, priv.public_key())
    return out


def _per_op_us(fn: Callable[[], object], duration_s: float) -> float:
    n, batch = 0, 1
    started = time.perf_counter()
    deadline = started + duration_s
    while True:
        for _ in range(batch):
            fn()
        n += batch
        now = time.perf_counter()
        if now >= deadline or n >= 10_000_000:
            return (now - started) * 1e6 / n
        batch = min(batch * 2, 4096)


def run(duration_s: float) -> list[tuple[str, float, str]]:
    rows: list[tuple[str, float, str]] = []
    now_s = int(time.time())
    for alg, (priv, material) in _keys().items():
        added = sign_request("POST", URL, HEADERS, key_id="k", algorithm=alg, key=priv, components=COMPONENTS, created=now_s)
        pairs = [*HEADERS, *added]
        req = Request(method="POST", path="/v1/orders", query="id=42", has_query=True, host="api.example.com",
                      scheme="https", headers=join_field_lines([(n.lower(), v) for n, v in pairs]))  # fmt: skip
        headers = dict(added)
        si = parse_signature_input(headers["Signature-Input"])["sig1"]
        sig = parse_signature(headers["Signature"])["sig1"]
        base = signature_base(message_of(req), si)
        if not verify(alg, material, base, sig):
            raise RuntimeError(f"{alg}: the bench signature does not verify")
        rows.append((f"verify {alg}", _per_op_us(lambda: verify(alg, material, base, sig), duration_s / 2), "µs/op"))

        ring = KeyRing({"k": Key(id="k", algorithm=alg, material=material, subject="k")})
        profile = SignatureProfile("bench", ring, components=("\"@method\"", "\"@target-uri\""), body_components=(),
                                   label=None, tag=None, created_required=True, max_age_ms=300_000, skew_ms=5000,
                                   nonce_required=True, allowed_keys=None)  # fmt: skip
        loop = asyncio.new_event_loop()
        try:
            def one() -> None:
                ctx = Ctx(req, now_s * 1000, "bench")
                result = loop.run_until_complete(profile.authenticate(req, ctx))
                if not result.ok:
                    raise RuntimeError(f"{alg}: {result.reason}")

            one()
            rows.append((f"signature method, {alg} (parse + rules + base + verify)", _per_op_us(one, duration_s / 2), "µs/op"))
        finally:
            loop.close()
    return rows


if __name__ == "__main__":
    for name, value, unit in run(1.0):
        print(f"{name:70s} {value:10.1f} {unit}")
