"""``jwt``: bearer tokens (RFC 7519) signed by an identity provider.

Policy, by example (docs/jwt.md is the reference)::

    jwt_providers:
      partners:
        issuer: https://idp.example.com/
        audiences: [api.example.com]
        algorithms: [RS256, ES256]
        keys:
          jwks: {keys: [...]}               # inline JWKS
          jwks_file: keys/partners.jwks.json
          remote: {url: https://idp.example.com/jwks.json, cache_ttl: 5m}
          keyring: [partner-hs256]          # HMAC secrets (or public keys) from keys_file
          keystore: true                    # every keystore key whose algorithm is allowed
        leeway: 30s
        max_lifetime: 1h
        required_claims: [sub]
        scopes: [orders:read]
        token_from: {header: authorization} # or {header: x-token} {query: access_token} {cookie: at}
        forward: {claims: {email: x-authz-email}, payload_header: x-authz-jwt-payload, remove_token: true}
        single_use: false                   # claim each jti once (replay store)

Verification order, each step refusing with its own reason before the next
runs: size (before parsing) -> syntax -> header -> ``alg`` against the
allow-list (before any key is touched) -> key by ``kid`` -> the key's own
algorithm binding -> signature -> claims (exp, nbf, iat, lifetime, iss, aud,
required claims, scopes). ``jku``, ``x5u``, ``jwk`` and ``x5c`` in a token
header are never read. Tokens are never logged.

``keys: {keystore: true}`` trusts the keystore (docs/keys.md): every managed
key whose algorithm is on the provider's list verifies tokens whose ``kid``
is one of its version ids (``<name>.v<N>``), from the moment it is created;
a rotated-out version until its ``not_after``, a revoked one never again. A
cached verified token is re-checked against the live keyring on each hit,
so a revocation applies to it at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
import ssl
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from authz.algorithms import ALGORITHMS
from authz.decision import Outcome, Reason, reason
from authz.stages.authenticate import Authenticator, AuthResult
from authz.stages.authenticate.jwks import (
    JWS_ALGORITHMS,
    MAX_KID_CHARS,
    JwkError,
    KeySet,
    RemoteJwks,
    RemoteOptions,
    VerifyKey,
    keyring_keys,
    parse_jwks,
    strict_json,
)
from authz.stages.replay import ReplayCheck
from authz.stages.respond import HEADER_PREFIX, RESERVED_HEADERS
from authz.store.ops import ClaimOnce

if TYPE_CHECKING:
    from authz.config.context import CompileContext
    from authz.config.source import Node
    from authz.keys import KeyRing
    from authz.request import Request
    from authz.stages.context import Ctx

_D = Outcome.DENY
JWT_MALFORMED = reason("jwt.malformed", _D, 401, "The bearer token is not a well-formed compact JWS/JWT (syntax, encoding, JSON, header).")
JWT_TOO_LARGE = reason("jwt.too_large", _D, 401, "The bearer token exceeds the provider's size limit; refused before parsing.")
JWT_ALG_NOT_ALLOWED = reason("jwt.alg_not_allowed", _D, 401, "The token's alg is not on the provider's allow-list (alg none is never), or does not fit the key.")
JWT_UNKNOWN_KID = reason("jwt.unknown_kid", _D, 401, "No key of the provider has the token's kid (after a rate-limited JWKS refetch).")
JWT_KEY_REVOKED = reason("jwt.key_revoked", _D, 401, "The token's key is revoked or past its not_after date in the keyring.")
JWT_KEYS_UNAVAILABLE = reason("jwt.keys_unavailable", Outcome.ERROR, 503, "The provider's remote JWKS has never been fetched successfully.")
JWT_BAD_SIGNATURE = reason("jwt.bad_signature", _D, 401, "The token's signature does not verify with its key.")
JWT_EXPIRED = reason("jwt.expired", _D, 401, "The token's exp is in the past (beyond the leeway).")
JWT_NOT_YET_VALID = reason("jwt.not_yet_valid", _D, 401, "The token's nbf or iat is in the future (beyond the leeway).")
JWT_LIFETIME_TOO_LONG = reason("jwt.lifetime_too_long", _D, 401, "The token lives longer than the provider's max_lifetime.")
JWT_BAD_ISSUER = reason("jwt.bad_issuer", _D, 401, "The token's iss is not the provider's issuer.")
JWT_BAD_AUDIENCE = reason("jwt.bad_audience", _D, 401, "None of the token's aud values is an audience of the provider.")
JWT_MISSING_CLAIM = reason("jwt.missing_claim", _D, 401, "A claim the provider requires (exp, the subject claim, required_claims) is missing or of the wrong type.")
JWT_INSUFFICIENT_SCOPE = reason("jwt.insufficient_scope", _D, 403, "The token lacks a scope the provider requires (scope string or scp list).")
JWT_REPLAY = reason("jwt.replay", _D, 401, "The single-use token's jti was already used.")
JWT_REPLAY_UNVERIFIABLE = reason("jwt.replay_unverifiable", _D, 401, "The single-use token was issued before the replay store's current epoch (the store restarted or lost its state), so its single use cannot be checked; get a new token.")

DEFAULT_MAX_TOKEN_BYTES = 8192
_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
#: claim headers are named under this prefix: every shipped proxy config forwards it
#: to the upstream and strips client-sent copies (docs/jwt.md, "Claim headers")
CLAIM_HEADER_PREFIX = HEADER_PREFIX
_TYP_OK = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
_MAX_JTI = 256
_MAX_REALM = 128


class Failure(Exception):
    """A refused token: the reason code and a short, token-free description."""

    def __init__(self, reason: Reason, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


@dataclass(frozen=True, slots=True)
class TokenSource:
    """Where the token is: ``header`` (authorization means ``Bearer``), ``query`` or ``cookie``."""

    where: str
    name: str

    def present(self, req: Request) -> bool:
        if self.where == "header":
            value = req.headers.get(self.name)
            if value is None:
                return False
            return self.name != "authorization" or value[:7].lower() == "bearer "
        if self.where == "query":
            return req.has_query and any(p.partition("=")[0] == self.name for p in req.query.split("&"))
        return any(c.partition("=")[0].strip() == self.name for c in req.headers.get("cookie", "").split(";"))

    def extract(self, req: Request) -> str:
        """The token text ("" when absent). Several tokens are malformed, not a choice."""
        if self.where == "header":
            value = req.headers.get(self.name, "")
            if self.name == "authorization":
                value = value[7:] if value[:7].lower() == "bearer " else ""
            return value.strip(" \t")
        if self.where == "query":
            found = [p.partition("=")[2] for p in req.query.split("&") if p.partition("=")[0] == self.name]
        else:
            found = [
                c.partition("=")[2].strip()
                for c in req.headers.get("cookie", "").split(";")
                if c.partition("=")[0].strip() == self.name
            ]
        if len(found) > 1:
            raise Failure(JWT_MALFORMED, "more than one token in the request")
        return unquote(found[0]) if found and self.where == "query" else (found[0] if found else "")


@dataclass(frozen=True, slots=True)
class Forward:
    """What a verified token passes to the upstream."""

    #: (claim name, header name)
    claims: tuple[tuple[str, str], ...] = ()
    payload_header: str = ""
    remove_token: bool = False


@dataclass(slots=True)
class Provider:
    """One compiled ``jwt_providers`` entry (everything decided at load)."""

    name: str
    algorithms: frozenset[str]
    issuer: str | None = None
    audiences: frozenset[str] = frozenset()
    leeway_ms: int = 30_000
    max_lifetime_ms: int | None = None
    subject_claim: str = "sub"
    required_claims: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    token: TokenSource = TokenSource("header", "authorization")
    forward: Forward = Forward()
    single_use: bool = False
    realm: str = "authz"
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES
    cache_size: int = 10_000
    static_keys: KeySet = field(default_factory=KeySet)
    remote: RemoteJwks | None = None


@dataclass(slots=True)
class _Verified:
    """A verified token as the cache keeps it: valid until ``exp_ms`` while ``key`` stays current."""

    exp_ms: int
    key: VerifyKey
    subject: str
    claims: dict[str, Any]
    upstream: list[tuple[str, str]]
    remove: list[str]
    jti_key: str
    iat_ms: int


def b64url_decode(part: str) -> bytes:
    """Strict base64url without padding: the alphabet is checked by the caller's regex,
    and a non-canonical encoding (stray low bits) is refused so one token has one spelling."""
    if len(part) % 4 == 1:
        raise ValueError("impossible base64url length")
    raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != part:
        raise ValueError("non-canonical base64url")
    return raw


def verify_signature(alg: str, key: VerifyKey, signing_input: bytes, signature: bytes) -> bool:
    """Check a JWS signature with a key already bound to ``alg`` (the algorithm table verifies)."""
    if alg not in key.algorithms:
        return False
    return ALGORITHMS[alg].verify(key.material, signing_input, signature)


def token_hash(token: str) -> str:
    """A short, non-reversible name for a token (the most that may ever be logged)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class JwtAuthenticator(Authenticator):
    """Verifies bearer tokens of one provider, with a bounded cache of verified tokens."""

    kind = "jwt"

    def __init__(self, provider: Provider, keyring_view: tuple[Any, list[str], bool] | None = None) -> None:
        self.name = provider.name
        self.p = provider
        self._cache: OrderedDict[bytes, _Verified] = OrderedDict()
        # (KeyRing, ids, every keystore key) kept so keyring changes are seen through the ring's own objects
        self._ring = keyring_view
        self._ring_cache: tuple[Any, int, KeySet] | None = None
        realm = f'Bearer realm="{provider.realm}", error="invalid_token"'
        self._replay = ReplayCheck(
            replayed=JWT_REPLAY,
            unverifiable=JWT_REPLAY_UNVERIFIABLE,
            challenge=f'{realm}, error_description="token already used"',
            unverifiable_challenge=f'{realm}, error_description="issued before the replay store restarted; get a new token"',
            hint="the replay store restarted after this token was issued; get a new token",
        )
        self.hits = 0
        self.misses = 0

    # -- the Authenticator interface ---------------------------------------

    def present(self, req: Request) -> bool:
        return self.p.token.present(req)

    def challenge(self) -> str:
        return f'Bearer realm="{self.p.realm}"'

    def upstream_header_names(self) -> frozenset[str]:
        fw = self.p.forward
        names = {header for _, header in fw.claims}
        if fw.payload_header:
            names.add(fw.payload_header)
        return frozenset(names)

    async def authenticate(self, req: Request, ctx: Ctx) -> AuthResult:
        try:
            token = self.p.token.extract(req)
            if not token:
                raise Failure(JWT_MALFORMED, "empty bearer token")
            verified = await self.verify(token, ctx.now_ms)
        except Failure as f:
            return self._refusal(f)
        result = AuthResult(
            ok=True,
            subject=verified.subject,
            key_id=verified.key.kid,
            claims=verified.claims,
            upstream_headers=verified.upstream,
            remove_headers=verified.remove,
        )
        if self.p.single_use:
            ttl = max(verified.exp_ms + self.p.leeway_ms - ctx.now_ms, 1)
            result.ops.append((ClaimOnce(verified.jti_key, ttl, verified.iat_ms), self._replay))
        return result

    def _refusal(self, f: Failure) -> AuthResult:
        realm = f'Bearer realm="{self.p.realm}"'
        desc = f.description.replace('"', "'")
        if f.reason == JWT_INSUFFICIENT_SCOPE:
            scope = " ".join(self.p.scopes)
            return AuthResult(
                ok=False,
                reason=f.reason,
                status=403,
                challenge=f'{realm}, error="insufficient_scope", error_description="{desc}", scope="{scope}"',
            )
        if f.reason == JWT_KEYS_UNAVAILABLE:
            return AuthResult(ok=False, reason=f.reason, challenge=realm)
        return AuthResult(
            ok=False, reason=f.reason, challenge=f'{realm}, error="invalid_token", error_description="{desc}"'
        )

    # -- verification ----------------------------------------------------------

    async def verify(self, token: str, now_ms: int) -> _Verified:
        """Verify a token (or find it in the cache).

        :raises Failure: with the reason code of the first check that failed
        """
        p = self.p
        if len(token) > p.max_token_bytes:
            raise Failure(JWT_TOO_LARGE, f"token longer than {p.max_token_bytes} bytes")
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(digest)
        if hit is not None:
            if self._key_current(hit.key, now_ms) and now_ms < hit.exp_ms + p.leeway_ms:
                self._cache.move_to_end(digest)
                self.hits += 1
                return hit
            del self._cache[digest]
        self.misses += 1
        verified = await self._verify(token, now_ms)
        self._cache[digest] = verified
        if len(self._cache) > p.cache_size:
            self._cache.popitem(last=False)
        return verified

    def _key_current(self, key: VerifyKey, now_ms: int) -> bool:
        """Is the key that verified a cached token still the provider's key for that kid?"""
        if not key.usable(now_ms):
            return False
        if key.ring_key is not None:
            return self._ring is not None and self._ring[0].get(key.kid) is key.ring_key
        sets = [self.p.static_keys]
        if self.p.remote is not None:
            sets.append(self.p.remote.current())  # a hot cache must not keep stale keys from refreshing
        return any(ks.by_kid.get(key.kid) is key or key in ks.unnamed for ks in sets)

    async def _verify(self, token: str, now_ms: int) -> _Verified:
        if not _TOKEN.fullmatch(token):
            raise Failure(JWT_MALFORMED, "not a compact JWS (three base64url parts)")
        h64, p64, s64 = token.split(".")
        header = self._json_object(h64, "header")
        alg = self._check_header(header)
        key = await self._find_key(header, alg, now_ms)
        try:
            signature = b64url_decode(s64)
        except (ValueError, binascii.Error):
            raise Failure(JWT_MALFORMED, "signature is not base64url") from None
        if not verify_signature(alg, key, f"{h64}.{p64}".encode("ascii"), signature):
            raise Failure(JWT_BAD_SIGNATURE, "signature does not verify")
        claims = self._json_object(p64, "payload")
        return self._check_claims(claims, key, p64, now_ms)

    @staticmethod
    def _json_object(part: str, what: str) -> dict[str, Any]:
        try:
            value = strict_json(b64url_decode(part))
        except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
            raise Failure(JWT_MALFORMED, f"{what} is not base64url JSON") from None
        if not isinstance(value, dict):
            raise Failure(JWT_MALFORMED, f"{what} is not a JSON object")
        return value

    def _check_header(self, header: dict[str, Any]) -> str:
        """The header's alg, once it passed the allow-list. No key is looked at before this."""
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise Failure(JWT_MALFORMED, "header has no alg")
        if alg.lower() == "none":
            raise Failure(JWT_ALG_NOT_ALLOWED, "unsecured tokens (alg none) are never accepted")
        if alg not in self.p.algorithms:
            raise Failure(JWT_ALG_NOT_ALLOWED, "alg not allowed by this provider")
        if "crit" in header:
            raise Failure(JWT_MALFORMED, "critical header extensions are not supported")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in _TYP_OK):
            raise Failure(JWT_MALFORMED, "typ is not JWT")
        # jku, x5u, jwk, x5c: never read. Keys come from the provider's configuration only.
        return alg

    async def _find_key(self, header: dict[str, Any], alg: str, now_ms: int) -> VerifyKey:
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_CHARS):
            raise Failure(JWT_MALFORMED, "kid is not a short string")
        remote = self.p.remote
        if remote is not None and not remote.loaded:
            await remote.wait_loaded()
        key = self._lookup(kid, alg, now_ms)
        if key is None and kid and remote is not None:
            key = await remote.refetch_for_unknown(kid)
            if key is not None and alg not in key.algorithms:
                key = None
        if key is None:
            if remote is not None and not remote.loaded and not self.p.static_keys and self._ring is None:
                raise Failure(JWT_KEYS_UNAVAILABLE, "keys unavailable")
            raise Failure(JWT_UNKNOWN_KID, "no key for this kid" if kid else "token names no kid")
        if alg not in key.algorithms:
            raise Failure(JWT_ALG_NOT_ALLOWED, "alg does not fit the key")
        if not key.usable(now_ms):
            raise Failure(JWT_KEY_REVOKED, "key revoked or expired")
        return key

    def _lookup(self, kid: str | None, alg: str, now_ms: int) -> VerifyKey | None:
        sets = [self.p.static_keys]
        if self.p.remote is not None:
            sets.append(self.p.remote.current())
        ring_keys = self._ring_keys()
        if kid:
            for ks in sets:
                if (key := ks.by_kid.get(kid)) is not None:
                    return key
            return ring_keys.by_kid.get(kid)
        # no kid: only when exactly one key can verify this algorithm
        candidates = [k for ks in (*sets, ring_keys) for k in ks.all() if alg in k.algorithms]
        return candidates[0] if len(candidates) == 1 else None

    def _ring_keys(self) -> KeySet:
        if self._ring is None:
            return _EMPTY
        ring, ids, keystore = self._ring
        version = ring.version
        if self._ring_cache is None or self._ring_cache[0] is not ring or self._ring_cache[1] != version:
            if keystore:
                ids = list(dict.fromkeys([*ids, *(k.id for k in ring if k.source == "keystore")]))
            self._ring_cache = (ring, version, KeySet(keyring_keys(ring, ids, self.p.algorithms)))
        return self._ring_cache[2]

    # -- claims ----------------------------------------------------------------

    def _check_claims(self, claims: dict[str, Any], key: VerifyKey, p64: str, now_ms: int) -> _Verified:
        p = self.p
        leeway = p.leeway_ms
        exp = _time_claim(claims, "exp")
        if exp is None:
            raise Failure(JWT_MISSING_CLAIM, "exp is required")
        if exp <= now_ms - leeway:
            raise Failure(JWT_EXPIRED, "token expired")
        nbf = _time_claim(claims, "nbf")
        if nbf is not None and nbf > now_ms + leeway:
            raise Failure(JWT_NOT_YET_VALID, "token not valid yet (nbf)")
        iat = _time_claim(claims, "iat")
        if iat is not None and iat > now_ms + leeway:
            raise Failure(JWT_NOT_YET_VALID, "token issued in the future (iat)")
        if p.max_lifetime_ms is not None:
            start = iat if iat is not None else now_ms
            if exp - start > p.max_lifetime_ms or exp - now_ms > p.max_lifetime_ms + leeway:
                raise Failure(JWT_LIFETIME_TOO_LONG, "token lifetime exceeds the provider's maximum")
        if p.issuer is not None and claims.get("iss") != p.issuer:
            raise Failure(JWT_BAD_ISSUER, "issuer not accepted")
        if p.audiences:
            aud = claims.get("aud")
            auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if not any(isinstance(a, str) and a in p.audiences for a in auds):
                raise Failure(JWT_BAD_AUDIENCE, "audience not accepted")
        for name in p.required_claims:
            if claims.get(name) is None:
                raise Failure(JWT_MISSING_CLAIM, f"claim {name} is required")
        subject = claims.get(p.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise Failure(JWT_MISSING_CLAIM, f"claim {p.subject_claim} must be a non-empty string")
        if p.scopes:
            granted = _scopes(claims)
            if not all(s in granted for s in p.scopes):
                raise Failure(JWT_INSUFFICIENT_SCOPE, "token lacks a required scope")
        jti_key = ""
        iat_ms = iat if iat is not None else now_ms
        if p.single_use:
            jti = claims.get("jti")
            if not isinstance(jti, str) or not jti or len(jti) > _MAX_JTI:
                raise Failure(JWT_MISSING_CLAIM, "single-use tokens need a jti (a short string)")
            if iat is None:
                raise Failure(JWT_MISSING_CLAIM, "single-use tokens need iat")
            jti_key = "jwt:" + hashlib.sha256(f"{p.name}\0{claims.get('iss', '')}\0{jti}".encode()).hexdigest()[:32]
        upstream, remove = self._forward(claims, p64)
        return _Verified(exp, key, subject, claims, upstream, remove, jti_key, iat_ms)

    def _forward(self, claims: dict[str, Any], p64: str) -> tuple[list[tuple[str, str]], list[str]]:
        fw = self.p.forward
        upstream: list[tuple[str, str]] = []
        remove: list[str] = []
        for claim, header in fw.claims:
            value = _header_value(_claim(claims, claim))
            if value is None:
                remove.append(header)  # absent claim: the client must not supply the header itself
            else:
                upstream.append((header, value))
        if fw.payload_header:
            upstream.append((fw.payload_header, p64))
        if fw.remove_token:
            remove.append(self.p.token.name)
        return upstream, remove


_EMPTY = KeySet()


def _time_claim(claims: dict[str, Any], name: str) -> int | None:
    """A NumericDate claim in ms; a present claim of another type is a bad token, not an absent one."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Failure(JWT_MALFORMED, f"{name} is not a number")
    if not -(2**53) < value < 2**53:
        raise Failure(JWT_MALFORMED, f"{name} is out of range")
    return int(value * 1000)


def _scopes(claims: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    scope = claims.get("scope")
    if isinstance(scope, str):
        out.update(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, str):
        out.update(scp.split())
    elif isinstance(scp, list):
        out.update(s for s in scp if isinstance(s, str))
    return out


def _claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by name, or by a dotted path into nested objects (``realm_access.roles``)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _header_value(value: Any) -> str | None:
    """A claim as a header value: strings as they are, lists joined with commas, objects as JSON.
    A value with control characters is not forwarded (no header injection through a claim)."""
    import json

    if value is None:
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = ",".join(value)
    else:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text) or len(text) > 4096:
        return None
    return text


# -- configuration ---------------------------------------------------------------


class _JwtKind:
    kind = "jwt"
    section = "jwt_providers"

    def compile(self, name: str, node: Node, cc: CompileContext[KeyRing]) -> Authenticator:
        return compile_provider(name, node, cc)


KIND = _JwtKind()

_KEYS = {
    "issuer", "audiences", "algorithms", "keys", "leeway", "max_lifetime", "subject_claim",
    "required_claims", "scopes", "token_from", "forward", "single_use", "realm",
    "max_token_bytes", "cache_size",
}  # fmt: skip


def compile_provider(name: str, node: Node, cc: CompileContext[KeyRing]) -> JwtAuthenticator:
    """Compile one provider; every error names file, line and field."""
    node.keys(allowed=_KEYS, required={"algorithms", "keys"})
    algs_node = node.get("algorithms")
    algs: set[str] = set()
    for item in algs_node.items():
        alg = item.str()
        if alg.lower() == "none":
            item.error("alg none (unsecured tokens) can never be allowed")
        if alg not in JWS_ALGORITHMS:
            item.error(f"unknown JWS algorithm {alg!r} (one of {', '.join(JWS_ALGORITHMS)})")
        algs.add(alg)
    if not algs:
        algs_node.error("list at least one algorithm")
    allowed = frozenset(algs)

    issuer = node.get("issuer").str() if node.has("issuer") else None
    audiences = frozenset(node.get("audiences").str_list()) if node.has("audiences") else frozenset()
    realm_node = node.get("realm", "authz")
    realm = realm_node.str()
    if len(realm) > _MAX_REALM or not all(0x20 <= ord(c) < 0x7F and c not in '"\\' for c in realm):
        realm_node.error(f"a realm is at most {_MAX_REALM} printable ASCII characters without quotes or backslashes")
    max_lifetime = node.get("max_lifetime").duration_ms(min_ms=1000) if node.has("max_lifetime") else None
    single_use = node.get("single_use", False).bool()
    token = _token_from(node.get("token_from")) if node.has("token_from") else TokenSource("header", "authorization")
    forward = _forward(node.get("forward", {}), token)
    static, ring, remote = _keys(node.get("keys"), allowed, cc)
    provider = Provider(
        name=name,
        algorithms=allowed,
        issuer=issuer,
        audiences=audiences,
        leeway_ms=node.get("leeway", 30).duration_ms(),
        max_lifetime_ms=max_lifetime,
        subject_claim=node.get("subject_claim", "sub").str(),
        required_claims=tuple(node.get("required_claims", []).str_list()),
        scopes=tuple(node.get("scopes", []).str_list()),
        token=token,
        forward=forward,
        single_use=single_use,
        realm=realm,
        max_token_bytes=node.get("max_token_bytes", DEFAULT_MAX_TOKEN_BYTES).int(min=256, max=1 << 20),
        cache_size=node.get("cache_size", 10_000).int(min=0, max=10_000_000),
        static_keys=static,
        remote=remote,
    )
    return JwtAuthenticator(provider, ring)


def _token_from(node: Node) -> TokenSource:
    node.keys(allowed={"header", "query", "cookie"})
    given = [k for k in ("header", "query", "cookie") if node.has(k)]
    if len(given) != 1:
        node.error("give exactly one of header, query, cookie")
    where = given[0]
    value_node = node.get(where)
    value = value_node.str()
    if where == "header" and not _HEADER_NAME.fullmatch(value):
        value_node.error(f"not a lower-case header name: {value!r}")
    if where != "header" and not re.fullmatch(r"[A-Za-z0-9_.~-]{1,64}", value):
        value_node.error(f"not a plain {where} name: {value!r}")
    return TokenSource(where, value)


def _forward(node: Node, token: TokenSource) -> Forward:
    node.keys(allowed={"claims", "payload_header", "remove_token"})
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for claim, hnode in node.get("claims", {}).entries():
        header = _forward_header(hnode, seen)
        pairs.append((claim, header))
    payload = ""
    if node.has("payload_header"):
        payload = _forward_header(node.get("payload_header"), seen)
    remove = node.get("remove_token", False).bool()
    if remove and token.where != "header":
        node.get("remove_token").error("remove_token works for a token in a header only")
    return Forward(tuple(pairs), payload, remove)


def _forward_header(hnode: Node, seen: set[str]) -> str:
    header = hnode.str()
    if not _HEADER_NAME.fullmatch(header):
        hnode.error(f"not a lower-case header name: {header!r}")
    if not header.startswith(CLAIM_HEADER_PREFIX) or len(header) == len(CLAIM_HEADER_PREFIX):
        hnode.error(
            f"a claim header is named {CLAIM_HEADER_PREFIX}<name>, got {header!r}: the proxy configs "
            f"forward that prefix to the upstream and strip client-sent copies (docs/jwt.md)"
        )
    if header in RESERVED_HEADERS:
        hnode.error(f"{header!r} is a header authz sets itself; it cannot carry a claim")
    if header in seen:
        hnode.error(f"header {header!r} is used twice")
    seen.add(header)
    return header


def _keys(
    node: Node, allowed: frozenset[str], cc: CompileContext[KeyRing]
) -> tuple[KeySet, tuple[Any, list[str], bool] | None, RemoteJwks | None]:
    node.keys(allowed={"jwks", "jwks_file", "remote", "keyring", "keystore"})
    if not any(node.has(k) for k in ("jwks", "jwks_file", "remote", "keyring", "keystore")):
        node.error("give at least one key source: jwks, jwks_file, remote, keyring or keystore")
    static: list[VerifyKey] = []
    if node.has("jwks"):
        jnode = node.get("jwks")
        static += _parse_static(jnode, _plain(jnode.mapping()), allowed, "inline jwks")
    if node.has("jwks_file"):
        fnode = node.get("jwks_file")
        path = cc.path(fnode)
        try:
            with open(path, "rb") as f:
                doc = strict_json(f.read())
        except OSError as exc:
            fnode.error(f"cannot read {fnode.value}: {exc.strerror or exc}")
        except ValueError as exc:
            fnode.error(f"{fnode.value} is not JSON: {exc}")
        static += _parse_static(fnode, doc, allowed, fnode.value)
    kids = [k.kid for k in static if k.kid]
    if len(kids) != len(set(kids)):
        node.error("the same kid appears in jwks and jwks_file")
    ring: tuple[Any, list[str], bool] | None = None
    if node.has("keyring"):
        ring_obj, ids = _keyring(node.get("keyring"), allowed, cc)
        ring = (ring_obj, ids, False)
    if node.has("keystore") and node.get("keystore").bool():
        if cc.keystore is None:
            node.get("keystore").error("keystore: true needs a keystore (authz serve --keystore, docs/keys.md)")
        ring = (cc.keyring, ring[1] if ring is not None else [], True)
    if any(a.startswith("HS") for a in allowed) and ring is None:
        node.error("HS* algorithms need HMAC secrets from the keyring (keys.keyring: [ids]) or the keystore (keys.keystore: true)")
    remote = _remote(node.get("remote"), allowed, cc) if node.has("remote") else None
    if not static and ring is None and remote is None:
        node.error("no usable key for the provider's algorithms")
    return KeySet(static), ring, remote


def _parse_static(node: Node, doc: Any, allowed: frozenset[str], origin: str) -> list[VerifyKey]:
    try:
        keys, _ = parse_jwks(doc, allowed, origin, strict=True)
    except JwkError as exc:
        node.error(str(exc))
    if not keys:
        node.error(f"no key in this JWKS can verify {', '.join(sorted(allowed))}")
    return keys


def _keyring(node: Node, allowed: frozenset[str], cc: CompileContext[KeyRing]) -> tuple[Any, list[str]]:
    ring = getattr(cc, "keyring", None)
    # ids name keys of the keys file (keystore keys: keys.keystore), checked against the file's own ring
    file_ring = getattr(ring, "file_ring", ring)
    ids: list[str] = []
    for item in node.items():
        kid = item.str()
        key = file_ring.get(kid) if file_ring is not None else None
        if key is None:
            item.error(f"no key {kid!r} in the keyring (keys_file)")
        if key.algorithm not in JWS_ALGORITHMS:
            item.error(f"key {kid!r} is for {key.algorithm}, not a JWS algorithm")
        if key.algorithm not in allowed:
            item.error(f"key {kid!r} is bound to {key.algorithm}, which the provider's algorithms do not allow")
        ids.append(kid)
    if not ids:
        node.error("list at least one key id")
    return ring, ids


def _remote(node: Node, allowed: frozenset[str], cc: CompileContext[KeyRing]) -> RemoteJwks:
    node.keys(
        allowed={"url", "ca_file", "cache_ttl", "refetch_interval", "timeout", "max_bytes", "allow_http"},
        required={"url"},
    )
    unode = node.get("url")
    url = unode.str()
    parts = urlsplit(url)
    allow_http = node.get("allow_http", False).bool()
    if parts.scheme not in ("https", "http") or not parts.hostname:
        unode.error(f"not an absolute https URL: {url!r}")
    if parts.scheme == "http" and not allow_http:
        unode.error("a JWKS URL must be https (set allow_http: true only for a trusted local network)")
    ctx: ssl.SSLContext | None = None
    if node.has("ca_file"):
        cnode = node.get("ca_file")
        try:
            ctx = ssl.create_default_context(cafile=cc.path(cnode))
        except (OSError, ssl.SSLError) as exc:
            cnode.error(f"cannot load CA bundle: {exc}")
    options = RemoteOptions(
        url=url,
        ssl_context=ctx,
        cache_ttl_s=node.get("cache_ttl", "5m").duration_ms(min_ms=1) / 1000,
        refetch_interval_s=node.get("refetch_interval", "30s").duration_ms() / 1000,
        timeout_s=node.get("timeout", "5s").duration_ms(min_ms=10) / 1000,
        max_bytes=node.get("max_bytes", 512 * 1024).int(min=1024, max=16 << 20),
    )
    return RemoteJwks(options, allowed)


def _plain(value: Any) -> Any:
    """YAML containers (with line numbers) as plain dicts and lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
