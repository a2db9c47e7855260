"""Credentials for the fuzz policy: bearer tokens and RFC 9421 signatures that verify.

So that a share of the generated requests gets past authentication and the
fuzzer reaches the allow path of every route, not only its refusals. Tokens
and signatures are made for a given time: the pinned clock of the in-process
engine, or now for a running ``authz serve``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from hypothesis import strategies as st

from authz.httpsig import sign_request
from authz.keys import load_keys
from tests.support.jwt_tokens import mint

KEYS_FILE = Path(__file__).resolve().parents[1] / "keys" / "jwt" / "keys.yaml"
SIG_KEY = "sig-hmac"
SIGNED_PATHS = [b"/sig/items", b"/sig/a?b=1&c", b"/anyone/x", b"/jwt/orders/1", b"/host/a"]
SIGNED_HOSTS = [b"api.test", b"a.example.org"]

#: (method, path, host, header lines): a request line and the credential headers made for it
Line = tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]]]


@cache
def _secret() -> bytes:
    key = load_keys(str(KEYS_FILE)).get(SIG_KEY)
    assert key is not None
    material = key.material
    assert isinstance(material, bytes)
    return material


@cache
def bearer_tokens(now_s: int) -> tuple[bytes, ...]:
    """``Bearer ...`` values: three that verify, and forged, expired, unsigned and wrong-audience ones."""
    times = {"iat": now_s - 60, "exp": now_s + 600}
    good = [mint("RS256", **times), mint("ES256", **times), mint("HS256", **times)]
    bad = [
        mint("RS256", kid="rsa-1", **times)[:-4] + "AAAA",  # forged signature
        mint("RS256", iat=now_s - 7200, exp=now_s - 3600),  # expired
        mint("ES256", aud="other", **times),
        mint("RS256", kid="rsa-2", **times),  # a key this policy does not hold
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",  # alg none
    ]
    return tuple(b"Bearer " + t.encode() for t in good + bad)


def signature_headers(method: bytes, url: str, now_s: int, nonce: str) -> list[tuple[bytes, bytes]]:
    added = sign_request(
        method.decode(), url, [], key_id=SIG_KEY, algorithm="hmac-sha256", key=_secret(), created=now_s, nonce=nonce
    )
    return [(n.lower().encode(), v.encode()) for n, v in added]


def lines(now_s: int, scheme: str = "http") -> st.SearchStrategy[Line]:
    """A request line with no credential, a bearer token, or a signature over it (for ``scheme``)."""

    def build(method: bytes, path: bytes, host: bytes, kind: int, token: bytes, nonce: str) -> Line:
        if kind == 1:
            return method, path, host, [(b"authorization", token)]
        if kind == 2:
            url = f"{scheme}://{host.decode()}{path.decode()}"
            return method, path, host, signature_headers(method, url, now_s, nonce)
        return method, path, host, []

    return st.builds(
        build,
        st.sampled_from([b"GET", b"POST"]),
        st.sampled_from(SIGNED_PATHS),
        st.sampled_from(SIGNED_HOSTS),
        st.sampled_from([0, 1, 1, 2, 2]),
        st.sampled_from(bearer_tokens(now_s)),
        st.text("0123456789abcdef", min_size=8, max_size=16),
    )
