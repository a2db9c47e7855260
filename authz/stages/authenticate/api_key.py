"""``api_key``: keys of the keystore (``azk_<id>_<secret>``) in a request header.

Policy section, by example::

    api_keys:
      partners:
        header: x-api-key        # where the key is (default x-api-key)
        tiers: [gold, silver]    # only keys of these tiers (default: every key)

The key is read from the configured header only. ``Authorization: ApiKey``
is not a registered HTTP authentication scheme and clients do not agree on
it, so it is not guessed at; a deployment whose clients send the key in
another header names that header.

A request without the header is not this method's (``auth.missing`` when no
other method applies). A malformed key, an unknown id or a wrong secret is
``apikey.invalid``; a revoked key ``apikey.revoked``; a key past its
``not_after`` (its expiry, or the end of a rotation's overlap)
``apikey.expired``. A failure counts against the sender like any refused
credential (the reputation stage's ``auth.failure``). An accepted key
authenticates its owner: subject = owner, key id ``apikey:<id>``, quota
tier = the key's tier. The header is removed from the request the upstream
receives, whatever the outcome: a key never travels further than authz.

Keys are looked up by id in the keystore's state in force (one dictionary
look-up) and the secret's salted hash compared in constant time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

from authz.decision import Outcome, Reason, reason
from authz.keys.apikeys import ApiKey, parse
from authz.stages.authenticate import Authenticator, AuthResult

if TYPE_CHECKING:
    from authz.config.context import CompileContext
    from authz.config.source import Node
    from authz.keys import KeyRing
    from authz.request import Request
    from authz.stages.context import Ctx

_D = Outcome.DENY
APIKEY_INVALID = reason("apikey.invalid", _D, 401, "The API key is malformed, or no key has its id, or its secret does not match.")
APIKEY_REVOKED = reason("apikey.revoked", _D, 401, "The API key was revoked.")
APIKEY_EXPIRED = reason("apikey.expired", _D, 401, "The API key is past its expiry (or the end of its rotation's overlap).")
APIKEY_TIER = reason("apikey.tier_not_allowed", _D, 403, "The API key is valid, but its tier is not one this route's api_keys configuration accepts.")

DEFAULT_HEADER = "x-api-key"
MAX_HEADER_BYTES = 256
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_REFUSED_HEADERS = frozenset({"authorization", "cookie", "host", "signature", "signature-input", "content-type", "content-length"})


class ApiKeySource(Protocol):
    """Where the API keys in force are found (authz.keys.keystore.Keystore)."""

    def api_key(self, key_id: str) -> ApiKey | None: ...


class ApiKeyMethod(Authenticator):
    kind = "api_key"

    def __init__(self, name: str, source: ApiKeySource, header: str, tiers: frozenset[str] | None) -> None:
        self.name = name
        self.source = source
        self.header = header
        self.tiers = tiers
        self._challenge = f'ApiKey realm="{name}", header="{header}"'

    def present(self, req: Request) -> bool:
        return self.header in req.headers

    def challenge(self) -> str:
        return self._challenge

    def _fail(self, why: Reason, detail: str, key_id: str = "") -> AuthResult:
        signals = [("apikey.problem", detail)]
        if key_id:
            signals.append(("apikey.id", key_id))
        return AuthResult(ok=False, reason=why, status=why.status, challenge=self._challenge, signals=signals)

    async def authenticate(self, req: Request, ctx: Ctx) -> AuthResult:
        value = req.headers.get(self.header, "").strip(" \t")
        if len(value) > MAX_HEADER_BYTES:
            return self._fail(APIKEY_INVALID, "too long")
        parsed = parse(value)
        if parsed is None:
            return self._fail(APIKEY_INVALID, "malformed")
        key_id, secret = parsed
        record = self.source.api_key(key_id)
        if record is None:
            return self._fail(APIKEY_INVALID, "unknown id", key_id)
        if not record.matches(secret):
            return self._fail(APIKEY_INVALID, "wrong secret", key_id)
        status = record.status(ctx.now_ms)
        if status == "revoked":
            return self._fail(APIKEY_REVOKED, "revoked", key_id)
        if status == "expired":
            return self._fail(APIKEY_EXPIRED, "expired", key_id)
        if self.tiers is not None and record.tier not in self.tiers:
            return self._fail(APIKEY_TIER, "tier not accepted", key_id)
        return AuthResult(
            ok=True, subject=record.owner, key_id=f"apikey:{record.id}", tier=record.tier, remove_headers=[self.header]
        )


class _ApiKeyKind:
    kind = "api_key"
    section = "api_keys"

    def compile(self, name: str, node: Node, cc: CompileContext[KeyRing]) -> Authenticator:
        node.keys(allowed={"header", "tiers"})
        hnode = node.get("header", DEFAULT_HEADER)
        header = hnode.str()
        if not _HEADER_NAME.fullmatch(header):
            hnode.error(f"not a lower-case header name: {header!r}")
        if header in _REFUSED_HEADERS or header.startswith("x-authz-"):
            hnode.error(f"{header!r} cannot carry an API key (it means something else to HTTP or to authz)")
        tiers = None
        if node.has("tiers"):
            tiers = frozenset(node.get("tiers").str_list())
            if not tiers:
                node.get("tiers").error("list at least one tier (or leave tiers out for every key)")
        if cc.keystore is None:
            node.error("api_key methods need a keystore, where API keys live (authz serve --keystore, docs/keys.md)")
        return ApiKeyMethod(name, cc.keystore, header, tiers)


KIND = _ApiKeyKind()
