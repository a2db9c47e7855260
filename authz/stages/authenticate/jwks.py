"""Verification keys for JWT providers: JWKS documents (inline, file, remote) and the keyring.

A key found by its ``kid`` decides how a token is verified. Every key here is
bound to the algorithms it may verify *before* any token is seen:

* a JWK with ``alg`` verifies that algorithm only;
* an EC or OKP JWK without ``alg`` is bound by its curve (P-256 -> ES256, ...);
* an RSA JWK without ``alg`` verifies the provider's allowed RSA algorithms;
* symmetric JWKs (``kty: oct``) are refused: HMAC secrets come from the
  keyring only, never from a document that may be public.

So an RSA or EC public key can never be used as an HMAC secret, whatever a
token's header says.

``RemoteJwks`` fetches a JWKS URL (HTTPS unless the operator says otherwise)
with httpx, on the event loop and never on a request's path once keys are
known: a stale set is refreshed in the background while requests keep using
it, a failed fetch keeps the keys already known (stale-while-error), and an
unknown ``kid`` triggers at most one refetch per ``refetch_interval`` so that a
flood of random kids costs the identity provider one request, not thousands.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from authz.algorithms import ALGORITHMS, CURVES, HMAC, JWS_BY_JWK_CURVE, JWS_NAMES, MIN_RSA_BITS, RSA, describe_key
from authz.keys import Key, KeyRing

log = logging.getLogger("authz.jwt")

#: every JWS algorithm a provider may allow ("none" is not one of them, in any spelling)
JWS_ALGORITHMS = JWS_NAMES
RSA_ALGORITHMS = frozenset(a for a in JWS_NAMES if ALGORITHMS[a].family == RSA)
HMAC_ALGORITHMS = frozenset(a for a in JWS_NAMES if ALGORITHMS[a].family == HMAC)
MAX_KID_CHARS = 256


@dataclass(frozen=True, slots=True, eq=False)
class VerifyKey:
    """A key ready to verify tokens: bound to its algorithms, parsed once.

    Identity matters: a cached verified token remembers the ``VerifyKey`` that
    verified it and is honoured only while the provider still returns that
    very object for the kid (a rotation or revocation replaces or drops it).
    """

    kid: str
    algorithms: frozenset[str]
    #: HMAC secret bytes, or a ``cryptography`` public key
    material: Any
    #: where the key came from, for messages: "jwks_uri", "jwks.json", "keys.yaml:12"
    origin: str
    #: the keyring entry, for keys that come from the keyring (revocation, expiry)
    ring_key: Key | None = None

    def usable(self, now_ms: int) -> bool:
        return self.ring_key is None or self.ring_key.usable(now_ms)


class JwkError(ValueError):
    """A JWK that cannot be used; the message says why."""


def strict_json(data: bytes | str) -> Any:
    """Parse JSON refusing duplicate member names (one parser, one meaning: no differential)."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"duplicate member {k!r}")
            out[k] = v
        return out

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(data, object_pairs_hook=pairs, parse_constant=no_constant)


def jwk_to_key(jwk: Any, allowed: frozenset[str], origin: str) -> VerifyKey | None:
    """Turn one JWK into a ``VerifyKey``, or None when it is not a signing key for ``allowed``.

    :raises JwkError: the JWK is invalid or unsafe (private, symmetric, weak)
    """
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

    if not isinstance(jwk, dict):
        raise JwkError("a JWK is a JSON object")
    kty = jwk.get("kty")
    kid = jwk.get("kid", "")
    if not isinstance(kid, str) or len(kid) > MAX_KID_CHARS:
        raise JwkError(f"kid must be a string of at most {MAX_KID_CHARS} characters")
    if kty == "oct":
        raise JwkError("symmetric (kty oct) keys are not accepted in a JWKS; put HMAC secrets in the keys file")
    if any(p in jwk for p in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise JwkError("this JWK holds private key material; publish public keys only")
    use = jwk.get("use")
    if use is not None and use != "sig":
        return None  # an encryption key: not ours to use
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    alg = jwk.get("alg")
    if alg is not None and not isinstance(alg, str):
        raise JwkError("alg must be a string")
    parsers = {"RSA": RSAAlgorithm, "EC": ECAlgorithm, "OKP": OKPAlgorithm}
    if kty not in parsers:
        raise JwkError(f"unsupported kty {kty!r} (RSA, EC or OKP)")
    try:
        material = parsers[kty].from_jwk(json.dumps(jwk))  # type: ignore[attr-defined]
    except Exception as exc:  # PyJWT raises several types for a bad JWK
        raise JwkError(f"invalid {kty} JWK: {exc}") from None

    if kty == "RSA":
        if not isinstance(material, rsa.RSAPublicKey):
            raise JwkError("not an RSA public key")
        if material.key_size < MIN_RSA_BITS:
            raise JwkError(f"RSA keys need at least {MIN_RSA_BITS} bits; got {material.key_size}")
        algs = RSA_ALGORITHMS if alg is None else frozenset({alg})
        if not algs <= RSA_ALGORITHMS:
            raise JwkError(f"alg {alg!r} does not fit an RSA key")
    elif kty == "EC":
        if not isinstance(material, ec.EllipticCurvePublicKey):
            raise JwkError("not an EC public key")
        bound = JWS_BY_JWK_CURVE.get(jwk.get("crv", ""))
        if bound is None:
            raise JwkError(f"unsupported curve {jwk.get('crv')!r} (P-256, P-384, P-521)")
        if alg is not None and alg != bound:
            raise JwkError(f"alg {alg!r} does not fit curve {jwk.get('crv')} ({bound})")
        algs = frozenset({bound})
    else:
        if not isinstance(material, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            raise JwkError("only Ed25519 and Ed448 OKP keys sign")
        if alg is not None and alg != "EdDSA":
            raise JwkError(f"alg {alg!r} does not fit an OKP key (EdDSA)")
        algs = frozenset({"EdDSA"})
    algs = algs & allowed
    if not algs:
        return None  # a key for algorithms this provider does not accept
    return VerifyKey(kid=kid, algorithms=algs, material=material, origin=origin)


class KeySet:
    """Keys by kid, immutable. Keys without a kid are kept apart (usable by kid-less tokens)."""

    __slots__ = ("by_kid", "unnamed")

    def __init__(self, keys: Iterable[VerifyKey] = ()) -> None:
        self.by_kid: dict[str, VerifyKey] = {}
        self.unnamed: list[VerifyKey] = []
        for key in keys:
            if key.kid:
                self.by_kid[key.kid] = key
            else:
                self.unnamed.append(key)

    def __len__(self) -> int:
        return len(self.by_kid) + len(self.unnamed)

    def all(self) -> list[VerifyKey]:
        return [*self.by_kid.values(), *self.unnamed]


def parse_jwks(doc: Any, allowed: frozenset[str], origin: str, *, strict: bool) -> tuple[list[VerifyKey], list[str]]:
    """The usable keys of a JWKS document, and the problems found.

    :param strict: raise on the first bad key (configuration files); otherwise
        skip it and report it (a remote IdP's document must not take the other keys down)
    :raises JwkError: the document is not a JWKS, or (strict) a key is bad
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwkError('a JWKS is an object with a "keys" list')
    keys: list[VerifyKey] = []
    problems: list[str] = []
    seen: set[str] = set()
    for i, jwk in enumerate(doc["keys"]):
        try:
            key = jwk_to_key(jwk, allowed, origin)
            if key is not None and key.kid:
                if key.kid in seen:
                    raise JwkError(f"duplicate kid {key.kid!r}")
                seen.add(key.kid)
        except JwkError as exc:
            if strict:
                raise JwkError(f"keys[{i}]: {exc}") from None
            problems.append(f"keys[{i}]: {exc}")
            continue
        if key is not None:
            keys.append(key)
    return keys, problems


def keyring_keys(ring: KeyRing, ids: list[str], allowed: frozenset[str]) -> list[VerifyKey]:
    """``VerifyKey`` views of keyring entries (HMAC secrets or public keys with a JWS algorithm)."""
    out = []
    for kid in ids:
        key = ring.get(kid)
        if key is None or key.algorithm not in allowed:
            continue
        out.append(VerifyKey(kid, frozenset({key.algorithm}), key.material, key.where, key))
    return out


@dataclass(frozen=True, slots=True)
class RemoteOptions:
    url: str
    ssl_context: ssl.SSLContext | None
    #: keys older than this are refreshed in the background
    cache_ttl_s: float = 300.0
    #: the least time between two fetches triggered by unknown kids
    refetch_interval_s: float = 30.0
    timeout_s: float = 5.0
    max_bytes: int = 512 * 1024


class RemoteJwks:
    """A JWKS URL, cached. Requests read ``keys`` without waiting; fetches happen beside them."""

    def __init__(
        self,
        options: RemoteOptions,
        allowed: frozenset[str],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.allowed = allowed
        self.keys = KeySet()
        self._monotonic = monotonic
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch of any outcome
        self._task: asyncio.Task[bool] | None = None
        #: counters for metrics and tests: fetches started, fetches failed
        self.fetches = 0
        self.failures = 0
        self.last_error = ""

    # -- the request path -------------------------------------------------

    def current(self) -> KeySet:
        """The keys known now; starts a background refresh when they are stale (never waits)."""
        now = self._monotonic()
        stale = self._fetched_at is None or now - self._fetched_at >= self.options.cache_ttl_s
        if stale and (self._attempted_at is None or now - self._attempted_at >= self._retry_delay()):
            self._start_fetch()
        return self.keys

    @property
    def loaded(self) -> bool:
        return self._fetched_at is not None

    async def wait_loaded(self) -> bool:
        """Cold start: wait for the first fetch (bounded by the fetch timeout)."""
        if self._fetched_at is None:
            task = self._task or self._start_fetch()
            await asyncio.shield(task)
        return self._fetched_at is not None

    async def refetch_for_unknown(self, kid: str) -> VerifyKey | None:
        """An unknown kid arrived: fetch again unless a fetch ran too recently (rate limit)."""
        if self._task is not None:
            await asyncio.shield(self._task)
        else:
            now = self._monotonic()
            if self._attempted_at is not None and now - self._attempted_at < self.options.refetch_interval_s:
                return self.keys.by_kid.get(kid)
            await asyncio.shield(self._start_fetch())
        return self.keys.by_kid.get(kid)

    def _retry_delay(self) -> float:
        """After a failure, do not retry on every request: at most once per refetch interval."""
        return min(self.options.refetch_interval_s, self.options.cache_ttl_s)

    # -- fetching ---------------------------------------------------------

    def _start_fetch(self) -> asyncio.Task[bool]:
        if self._task is None:
            self._attempted_at = self._monotonic()
            self.fetches += 1
            self._task = asyncio.get_running_loop().create_task(self._fetch())
        return self._task

    async def _fetch(self) -> bool:
        try:
            doc = await asyncio.wait_for(self._get(), self.options.timeout_s)
            keys, problems = parse_jwks(doc, self.allowed, "jwks_uri", strict=False)
        except Exception as exc:  # network, TLS, HTTP status, JSON: keep the known keys
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("JWKS fetch from %s failed (%s); keeping %d known keys", self.options.url, self.last_error, len(self.keys))
            return False
        finally:
            self._task = None
        if problems:
            log.warning("JWKS from %s: skipped %d keys: %s", self.options.url, len(problems), "; ".join(problems[:5]))
        self.keys = KeySet(self._keep_identity(keys))
        self._fetched_at = self._monotonic()
        return True

    def _keep_identity(self, keys: list[VerifyKey]) -> list[VerifyKey]:
        """Reuse the old object for a key that did not change, so cached tokens it verified stay valid."""
        old = self.keys.by_kid
        out = []
        for key in keys:
            prev = old.get(key.kid) if key.kid else None
            if prev is not None and prev.algorithms == key.algorithms and _same_public(prev.material, key.material):
                out.append(prev)
            else:
                out.append(key)
        return out

    async def _get(self) -> Any:
        import httpx

        opts = self.options
        verify: ssl.SSLContext | bool = opts.ssl_context if opts.ssl_context is not None else True
        async with httpx.AsyncClient(
            verify=verify, trust_env=False, follow_redirects=False, timeout=opts.timeout_s
        ) as client, client.stream("GET", opts.url, headers={"accept": "application/json"}) as resp:
            if resp.status_code != 200:
                raise JwkError(f"HTTP {resp.status_code}")
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > opts.max_bytes:
                    raise JwkError(f"response larger than {opts.max_bytes} bytes")
        return strict_json(bytes(body))


def _same_public(a: Any, b: Any) -> bool:
    from cryptography.hazmat.primitives import serialization

    if isinstance(a, bytes) or isinstance(b, bytes):
        return bool(a == b)
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if isinstance(a, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        fmt, enc = serialization.PublicFormat.Raw, serialization.Encoding.Raw
    try:
        same: bool = a.public_bytes(enc, fmt) == b.public_bytes(enc, fmt)
        return same
    except (TypeError, ValueError, AttributeError):
        return False


# -- publishing: a public key as a JWK (``authz jwks``) ------------------------------

#: RFC 7638 section 3.2 (RFC 8037 section 2 for OKP): the members a thumbprint hashes
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK, base64url without padding."""
    import base64
    import hashlib

    members = {m: jwk[m] for m in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    text = json.dumps(members, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()


def load_public_pem(data: bytes) -> Any:
    """A ``cryptography`` public key from PEM text.

    :raises JwkError: a private key, a certificate, or not a PEM public key
    """
    from cryptography.hazmat.primitives import serialization

    if b"PRIVATE KEY" in data:
        raise JwkError("this is a private key; give its public key (openssl pkey -in KEY -pubout -out PUBLIC.pem)")
    if b"-----BEGIN CERTIFICATE" in data:
        raise JwkError("this is a certificate; give its public key (openssl x509 -in CERT -pubkey -noout > PUBLIC.pem)")
    try:
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise JwkError("not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None


def check_jwk_alg(alg: str) -> None:
    """Refuse an algorithm a published JWK cannot have: unknown, or HMAC.

    :raises JwkError: with the reason
    """
    if alg not in JWS_NAMES:
        raise JwkError(f"unknown JWS algorithm {alg!r} (one of {', '.join(a for a in JWS_NAMES if a not in HMAC_ALGORITHMS)})")
    if alg in HMAC_ALGORITHMS:
        raise JwkError(
            f"{alg} uses a shared secret, which never goes in a JWKS (it may be public): "
            "put the secret in the keys file and list its id under the provider's keys.keyring"
        )


def public_jwk(key: Any, *, alg: str | None = None, kid: str | None = None) -> dict[str, Any]:
    """The public JWK of ``key`` for a JWKS: ``kid``, ``use: sig``, ``alg`` and the key.

    :param alg: the JWS algorithm the key is bound to; derived from the curve
        for EC and OKP keys, required for RSA keys (one key, one algorithm)
    :param kid: default: the key's RFC 7638 thumbprint
    :raises JwkError: an algorithm that does not fit, an HMAC algorithm, a weak
        or unsupported key
    """
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

    if alg is not None:
        check_jwk_alg(alg)
    if isinstance(key, rsa.RSAPublicKey):
        weak = ALGORITHMS["RS256"].key_problem(key)
        if weak:
            raise JwkError(weak)
        if alg is None:
            raise JwkError("an RSA key needs an explicit alg (RS256, RS384, RS512, PS256, PS384 or PS512): a JWK binds its key to one algorithm")
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key, as_dict=True)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        curve = CURVES.get(key.curve.name)
        if curve is None:
            raise JwkError(f"unsupported curve {key.curve.name} (P-256, P-384, P-521)")
        alg = alg or JWS_BY_JWK_CURVE[curve[2]]
        jwk = ECAlgorithm.to_jwk(key, as_dict=True)
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        alg = alg or "EdDSA"
        jwk = OKPAlgorithm.to_jwk(key, as_dict=True)
    else:
        raise JwkError(f"unsupported key: {describe_key(key)} (RSA, EC on P-256/P-384/P-521, Ed25519 or Ed448)")
    problem = ALGORITHMS[alg].key_problem(key)
    if problem:
        raise JwkError(problem)
    if kid is not None and (not kid or len(kid) > MAX_KID_CHARS or not kid.isprintable()):
        raise JwkError(f"a kid is 1 to {MAX_KID_CHARS} printable characters")
    material: dict[str, Any] = {m: jwk[m] for m in ("kty", "crv", "n", "e", "x", "y") if m in jwk}
    return {"kid": kid if kid is not None else jwk_thumbprint(material), "use": "sig", "alg": alg, **material}
