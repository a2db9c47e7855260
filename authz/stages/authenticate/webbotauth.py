"""``web_bot_auth``: automated clients that prove who they are (Web Bot Auth).

An agent signs each request (RFC 9421, Ed25519) and names its origin in
``Signature-Agent``; the origin publishes its keys in a key directory
(``agent_directory``). A request is **verified** when, cheapest check first:

1. it carries a signature with ``tag="web-bot-auth"`` (the first such one is
   the one checked) with ``created``, ``expires`` and ``keyid``, ``alg``
   absent or ``ed25519``;
2. its ``Signature-Agent`` member (the Dictionary member keyed by the
   signature's label, or the single member the signature covers; or the older
   bare String) is an ``https`` origin of ``type`` directory;
3. the configuration trusts that origin (its ``trust`` list, a local
   directory, or ``trust: any``);
4. ``created`` is not ahead of the clock, not older than ``max_age``, the
   signature has not expired, and ``expires - created`` is at most
   ``max_validity`` (each with ``clock_skew``); a ``nonce`` when required;
5. it covers ``@authority`` (or ``@target-uri``), the ``Signature-Agent``
   member it uses (``"signature-agent";key="<label>"``, or the whole field),
   and every component the configuration requires;
6. the origin's directory (a local file, or fetched: bounded, cached, no
   redirects) holds a usable Ed25519 key whose JWK thumbprint is ``keyid``;
7. the signature verifies with that key.

Then the identity is the agent: subject and ``bot`` its origin, key id the
thumbprint, the configuration's ``tier`` (``verified-bot``), and the upstream
gets ``x-authz-bot: <origin>``. The signature is single-use: its nonce (or,
without one, the signature itself) is claimed in the request's one store call
for as long as it could be accepted; a second use is refused
``agent.replayed``, whatever the route accepts.

Any other failure is not a verification. With ``on_failure: fallback`` (the
default) a route that also accepts ``anonymous`` lets the request go on as
anonymous, adding the failure to ``ctx.evidence`` (``agent.forged`` 1.0,
``agent.expired`` 0.5, ...) and signals; otherwise it is refused 401 with the
failure's reason (503 ``agent.keys_unavailable`` while a directory cannot be
had). A replay is refused even on an anonymous route: it is only found in the
store call, where the request was already counted against the agent's quota
tier, so it cannot be treated as anonymous any more (docs/web-bot-auth.md).

Policy section, by example::

    web_bot_auth:
      agents:
        trust: [https://crawler.example]     # or: any (every origin whose directory verifies)
        directories: {https://partner.example: agents/partner.json}   # local directories
        tier: verified-bot
        max_age: 5m            # oldest acceptable created
        max_validity: 1d       # longest expires - created (at most 1d)
        clock_skew: 5s
        nonce: optional        # required | optional
        on_failure: fallback   # fallback | refuse
        directory_proofs: ignore   # ignore | verify | require
        cache_ttl: {min: 1m, default: 1h, max: 1d}
        fetch_timeout: 3s
"""

from __future__ import annotations

import hashlib
import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from authz.decision import Outcome, Reason, reason
from authz.httpsig import SignatureError, parse_signature, parse_signature_input, signature_base, verify
from authz.httpsig.base import SignatureInput
from authz.httpsig.components import parse_component
from authz.httpsig.sfv import Item, parse_dictionary, parse_item
from authz.stages.authenticate import Authenticator, AuthResult
from authz.stages.authenticate.agent_directory import (
    PROOF_MODES,
    AgentKey,
    Directories,
    Directory,
    DirectoryError,
    FetchOptions,
    parse_directory,
    parse_origin,
)
from authz.stages.authenticate.jwks import strict_json
from authz.stages.authenticate.signature import MAX_FIELD_BYTES, SATISFIED_BY, message_of
from authz.stages.context import Ctx
from authz.store.base import ALREADY_CLAIMED, BEFORE_EPOCH, Op, Result
from authz.store.ops import ClaimOnce

if TYPE_CHECKING:
    from authz.config.context import CompileContext
    from authz.config.source import Node
    from authz.keys import KeyRing
    from authz.request import Request

_D = Outcome.DENY
AGENT_MALFORMED = reason("agent.malformed", _D, 401, "A Web Bot Auth signature or its Signature-Agent does not parse, lacks created, expires or keyid, is not ed25519, names no https origin of type directory, or exceeds the size limits.")
AGENT_WRONG_TAG = reason("agent.wrong_tag", _D, 401, "The request names a Signature-Agent but carries no signature with tag web-bot-auth.")
AGENT_UNTRUSTED = reason("agent.untrusted", _D, 401, "The agent origin in Signature-Agent is not one the web_bot_auth configuration trusts.")
AGENT_EXPIRED = reason("agent.expired", _D, 401, "The agent signature has expired, its created is older than max_age, or its created is in the future (beyond the clock skew).")
AGENT_VALIDITY_TOO_LONG = reason("agent.validity_too_long", _D, 401, "The agent signature's expires minus created exceeds max_validity.")
AGENT_NONCE_MISSING = reason("agent.nonce_missing", _D, 401, "The web_bot_auth configuration requires a nonce and the agent signature has none.")
AGENT_COMPONENT_MISSING = reason("agent.component_missing", _D, 401, "The agent signature does not cover @authority (or @target-uri), the Signature-Agent member it names, or a component the configuration requires; or a covered component is absent.")
AGENT_UNKNOWN_KEY = reason("agent.unknown_key", _D, 401, "The agent's key directory has no usable Ed25519 key whose JWK thumbprint is the signature's keyid.")
AGENT_KEYS_UNAVAILABLE = reason("agent.keys_unavailable", Outcome.ERROR, 503, "The agent's key directory could not be fetched (refused, slow, too large, not a directory, a redirect) and none is cached.")
AGENT_FORGED = reason("agent.forged", _D, 401, "The agent signature does not verify with the key its keyid names in the agent's directory.")
AGENT_REPLAYED = reason("agent.replayed", _D, 401, "This agent signature (its nonce, or without one the signature itself) was already used; an agent signs each request.")
AGENT_REPLAY_UNVERIFIABLE = reason("agent.replay_unverifiable", _D, 401, "The agent signature was made before the replay store's current epoch (the store restarted or lost its state), so its single use cannot be checked; sign the request again.")

#: how strongly each failure counts against the sender (``ctx.evidence``); an
#: unavailable directory says nothing about the sender (the draft: a failed fetch is no evidence)
EVIDENCE: dict[str, float] = {
    AGENT_MALFORMED.code: 0.5,
    AGENT_WRONG_TAG.code: 0.5,
    AGENT_UNTRUSTED.code: 0.2,
    AGENT_EXPIRED.code: 0.5,
    AGENT_VALIDITY_TOO_LONG.code: 0.5,
    AGENT_NONCE_MISSING.code: 0.3,
    AGENT_COMPONENT_MISSING.code: 0.5,
    AGENT_UNKNOWN_KEY.code: 0.7,
    AGENT_FORGED.code: 1.0,
    AGENT_REPLAYED.code: 1.0,
}
TAG = "web-bot-auth"
BOT_HEADER = "x-authz-bot"
DEFAULT_TIER = "verified-bot"
_SIGN_AGAIN = "the replay store restarted after this signature was made; sign the request again (new created time)"
_MAX_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class _Fail:
    reason: Reason
    detail: str
    origin: str = ""


@dataclass(frozen=True, slots=True)
class _Verified:
    origin: str
    thumbprint: str
    si: SignatureInput
    signature: bytes


class AgentReplayCheck:
    """The single use of an agent signature: a second use is refused and loses the agent's tier."""

    __slots__ = ()

    @property
    def kind(self) -> str:
        return "replay"

    def judge(self, result: Result, op: Op, ctx: Ctx) -> None:
        if result == ALREADY_CLAIMED:
            refusal, detail = AGENT_REPLAYED, "already_claimed"
        elif result == BEFORE_EPOCH:
            refusal, detail = AGENT_REPLAY_UNVERIFIABLE, "before_store_epoch"
        else:
            return
        first = ctx.reason is None
        ctx.refuse(refusal)
        ctx.signals.append((refusal.code, detail))
        ident = ctx.identity
        ident.tier = ""
        ident.bot = ""
        if result == ALREADY_CLAIMED:
            # found in the judge step, after reputation planned: recorded with the outcome
            ctx.late_evidence.append((AGENT_REPLAYED.code, EVIDENCE[AGENT_REPLAYED.code]))
        elif first:
            ctx.body["hint"] = _SIGN_AGAIN


class WebBotAuth(Authenticator):
    """One ``web_bot_auth.<name>`` configuration, compiled."""

    kind = "web_bot_auth"

    def __init__(
        self,
        name: str,
        *,
        trusted: frozenset[str],
        trust_any: bool,
        directories: Directories,
        public_only: bool,
        tier: str = DEFAULT_TIER,
        components: tuple[str, ...] = (),
        max_age_ms: int = 300_000,
        max_validity_ms: int = _MAX_DAY_MS,
        skew_ms: int = 5_000,
        nonce_required: bool = False,
        fallback: bool = True,
    ) -> None:
        self.name = name
        self.trusted = trusted
        self.trust_any = trust_any
        self.directories = directories
        self.public_only = public_only
        self.tier = tier
        self.components = components
        self.max_age_ms = max_age_ms
        self.max_validity_ms = max_validity_ms
        self.skew_ms = skew_ms
        self.nonce_required = nonce_required
        self.fallback = fallback
        #: origin of each key of the local directories, for a request without Signature-Agent
        self._local_by_key: dict[str, list[str]] = {}
        for origin, directory in directories.static.items():
            for thumb in directory.keys:
                self._local_by_key.setdefault(thumb, []).append(origin)
        flags = ";created;expires" + (";nonce" if nonce_required else "")
        covered = " ".join(['"@authority"', '"signature-agent";key="sig1"', *(c for c in components if c != '"@authority"')])
        self._accept = f'sig1=({covered}){flags};tag="{TAG}"'
        self._replay = AgentReplayCheck()

    # -- the Authenticator interface ---------------------------------------

    def present(self, req: Request) -> bool:
        h = req.headers
        if "signature-agent" in h:
            return True
        value = h.get("signature-input")
        return value is not None and f'tag="{TAG}"' in value

    def offer(self, req: Request) -> list[tuple[str, str]]:
        return [("accept-signature", self._accept)]

    def upstream_header_names(self) -> frozenset[str]:
        return frozenset({BOT_HEADER})

    async def authenticate(self, req: Request, ctx: Ctx) -> AuthResult:
        try:
            outcome = await self._verify(req, ctx.now_ms)
        except SignatureError as exc:
            code = AGENT_COMPONENT_MISSING if exc.code == "component_missing" else AGENT_MALFORMED
            outcome = _Fail(code, exc.detail)
        if isinstance(outcome, _Fail):
            return self._failed(outcome)
        origin = outcome.origin
        result = AuthResult(
            ok=True,
            subject=origin,
            key_id=outcome.thumbprint,
            tier=self.tier,
            bot=origin,
            upstream_headers=[(BOT_HEADER, origin)],
            signals=[("agent.verified", origin)],
        )
        result.ops.append((self._claim(outcome), self._replay))
        return result

    def _failed(self, f: _Fail) -> AuthResult:
        signals = [("agent.problem", f.detail)]
        if f.origin:
            signals.append(("agent.claimed", f.origin))
        strength = EVIDENCE.get(f.reason.code)
        evidence = [(f.reason.code, strength)] if strength is not None else []
        if self.fallback:
            signals.append(("agent.unverified", f.reason.code))
        return AuthResult(ok=False, reason=f.reason, fallback=self.fallback, signals=signals, evidence=evidence)

    # -- verification ----------------------------------------------------------

    async def _verify(self, req: Request, now_ms: int) -> _Verified | _Fail:
        h = req.headers
        input_value, sig_value, agent_value = h.get("signature-input"), h.get("signature"), h.get("signature-agent")
        if input_value is None or sig_value is None:
            return _Fail(AGENT_WRONG_TAG, "Signature-Agent without a signature")
        if max(len(input_value), len(sig_value), len(agent_value or "")) > MAX_FIELD_BYTES:
            return _Fail(AGENT_MALFORMED, "signature fields too large")
        inputs = parse_signature_input(input_value)
        candidates = [si for si in inputs.values() if si.tag == TAG]
        if not candidates:
            return _Fail(AGENT_WRONG_TAG, f'no signature with tag="{TAG}"')
        si = candidates[0]
        signature = parse_signature(sig_value).get(si.label)
        if signature is None:
            return _Fail(AGENT_MALFORMED, f"no Signature member for label {si.label!r}")
        if si.keyid is None or si.created is None or si.expires is None:
            return _Fail(AGENT_MALFORMED, "created, expires and keyid are required")
        if si.alg is not None and si.alg != "ed25519":
            return _Fail(AGENT_MALFORMED, f"alg {si.alg!r}: agents sign with ed25519")

        agent = self._agent(agent_value, si)
        if isinstance(agent, _Fail):
            return agent
        origin, member_key = agent
        if not (self.trust_any or origin in self.trusted or origin in self.directories.static):
            return _Fail(AGENT_UNTRUSTED, "agent origin not trusted", origin)

        problem = self._check_time(si, now_ms)
        if problem is not None:
            return _Fail(problem[0], problem[1], origin)
        if self.nonce_required and si.nonce is None:
            return _Fail(AGENT_NONCE_MISSING, "nonce required", origin)
        missing = self._uncovered(si, agent_value is not None, member_key)
        if missing:
            return _Fail(AGENT_COMPONENT_MISSING, f"{missing} not covered", origin)

        directory = self.directories.get(origin, public_only=self.public_only and origin not in self.trusted)
        if directory is None:
            return _Fail(AGENT_UNKNOWN_KEY, "no directory for this origin (fetch is off)", origin)
        key = await directory.find(si.keyid)
        if key is None:
            if not directory.loaded:
                return _Fail(AGENT_KEYS_UNAVAILABLE, "key directory unavailable", origin)
            return _Fail(AGENT_UNKNOWN_KEY, "keyid not in the agent's directory", origin)
        if not key.usable(now_ms):
            return _Fail(AGENT_UNKNOWN_KEY, "the key is outside its nbf/exp", origin)
        base = signature_base(message_of(req), si)
        if not verify("ed25519", key.material, base, signature):
            return _Fail(AGENT_FORGED, "signature does not verify", origin)
        return _Verified(origin, key.thumbprint, si, signature)

    def _agent(self, value: str | None, si: SignatureInput) -> tuple[str, str | None] | _Fail:
        """The agent origin the signature names, and the Dictionary member key it came from."""
        if value is None:
            origins = self._local_by_key.get(si.keyid or "", [])
            if len(origins) == 1:
                return origins[0], None  # the operator's own file says whose key this is
            return _Fail(AGENT_MALFORMED, "no Signature-Agent (the agent's origin)")
        text = value.strip(" \t")
        member_key: str | None = None
        if text.startswith('"'):
            member = parse_item(text, "Signature-Agent")
        else:
            members = parse_dictionary(text, "Signature-Agent")
            if si.label in members:
                member_key = si.label
            else:
                covered = [c.param("key") for c in si.components if c.name == "signature-agent" and c.param("key") in members]
                if len(covered) != 1:
                    return _Fail(AGENT_MALFORMED, f"Signature-Agent has no member for label {si.label!r}")
                member_key = covered[0]
            found = members[member_key]
            if not isinstance(found, Item):
                return _Fail(AGENT_MALFORMED, "a Signature-Agent member is a string")
            member = found
        if not isinstance(member.value, str):
            return _Fail(AGENT_MALFORMED, "Signature-Agent is not a string")
        kind = member.params.get("type")
        if kind is not None and str(kind) != "directory":
            return _Fail(AGENT_MALFORMED, f"Signature-Agent type {str(kind)[:32]!r} is not supported (directory)")
        origin = parse_origin(member.value)
        if origin is None:
            return _Fail(AGENT_MALFORMED, "Signature-Agent is not an https origin")
        return origin, member_key

    def _check_time(self, si: SignatureInput, now_ms: int) -> tuple[Reason, str] | None:
        assert si.created is not None and si.expires is not None
        created_ms, expires_ms, skew = si.created * 1000, si.expires * 1000, self.skew_ms
        if expires_ms - created_ms > self.max_validity_ms:
            return AGENT_VALIDITY_TOO_LONG, "expires - created exceeds max_validity"
        if created_ms > now_ms + skew:
            return AGENT_EXPIRED, "created is in the future"
        if now_ms - created_ms > self.max_age_ms + skew:
            return AGENT_EXPIRED, "created is older than max_age"
        if now_ms > expires_ms + skew:
            return AGENT_EXPIRED, "expired"
        return None

    def _uncovered(self, si: SignatureInput, has_agent: bool, member_key: str | None) -> str:
        covered = {c.text for c in si.components}
        if '"@authority"' not in covered and '"@target-uri"' not in covered:
            return '"@authority"'
        if has_agent:
            whole = any(c.name == "signature-agent" and c.param("key") is None for c in si.components)
            keyed = member_key is not None and any(c.name == "signature-agent" and c.param("key") == member_key for c in si.components)
            if not (whole or keyed):
                return f'"signature-agent";key="{member_key}"' if member_key else '"signature-agent"'
        for want in self.components:
            if want not in covered and not any(alt in covered for alt in SATISFIED_BY.get(want, ())):
                return want
        return ""

    def _claim(self, v: _Verified) -> ClaimOnce:
        """Claim the nonce (or the signature) for as long as the signature could be accepted."""
        si = v.si
        assert si.created is not None and si.expires is not None
        what = f"n\0{si.nonce}" if si.nonce is not None else "s\0" + v.signature.hex()
        digest = hashlib.sha256(f"{v.origin}\0{v.thumbprint}\0{what}".encode()).hexdigest()[:40]
        created_ms = si.created * 1000
        until = min(created_ms + self.max_age_ms, si.expires * 1000) + self.skew_ms
        earliest = created_ms - self.skew_ms
        return ClaimOnce(claim=f"wba:{digest}", ttl_ms=max(until - earliest, 1), created_ms=earliest)


# -- configuration ---------------------------------------------------------------

_KEYS = {
    "trust", "directories", "fetch", "tier", "components", "max_age", "max_validity", "clock_skew", "nonce",
    "on_failure", "directory_proofs", "cache_ttl", "refetch_interval", "fetch_timeout", "max_directory_bytes",
    "max_keys", "max_agents", "max_concurrent_fetches", "ca_file", "insecure_private_addresses", "insecure_test_keys",
}  # fmt: skip


class _WebBotAuthKind:
    kind = "web_bot_auth"
    section = "web_bot_auth"

    def compile(self, name: str, node: Node, cc: CompileContext[KeyRing]) -> Authenticator:
        return compile_agents(name, node, cc)


KIND = _WebBotAuthKind()


def compile_agents(name: str, node: Node, cc: CompileContext[KeyRing]) -> WebBotAuth:
    """Compile one ``web_bot_auth`` configuration; every error names file, line and field."""
    import re

    node.keys(allowed=_KEYS)
    if not (node.has("trust") or node.has("directories")):
        node.error("give trust (a list of agent origins, or any) or directories (local key directories), or both")
    trusted: set[str] = set()
    trust_any = False
    if node.has("trust"):
        tnode = node.get("trust")
        if tnode.value == "any":
            trust_any = True
        elif isinstance(tnode.value, list):
            for item in tnode.items():
                trusted.add(_origin(item))
        else:
            tnode.error("a list of agent origins (https://host[:port]), or any")
    accept_test_keys = node.get("insecure_test_keys", False).bool()
    max_keys = node.get("max_keys", 32).int(min=1, max=1000)
    static: dict[str, Directory] = {}
    for origin_text, fnode in node.get("directories", {}).entries():
        origin = parse_origin(origin_text)
        if origin is None or origin != origin_text.rstrip("/"):
            fnode.error(f"not a normalized agent origin (https://host[:port], lower case, no path): {origin_text!r}")
        static[origin] = Directory(origin, _local_directory(fnode, cc, max_keys, accept_test_keys))

    fetch_node = node.get("fetch", True)
    fetch = fetch_node.bool()
    if trust_any and not fetch:
        fetch_node.error("trust: any needs fetch: true (the directories of unknown origins must be fetched)")
    tier = node.get("tier", DEFAULT_TIER).str()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", tier):
        node.get("tier").error(f"not a tier name: {tier!r} (letters, digits, '_', '.', '-')")
    max_validity_ms = node.get("max_validity", "1d").duration_ms(min_ms=1000)
    if max_validity_ms > _MAX_DAY_MS:
        node.get("max_validity").error("at most 1d (the drafts bound an agent signature's life to a day)")
    max_age_ms = node.get("max_age", "5m").duration_ms(min_ms=1000)
    if max_age_ms > _MAX_DAY_MS:
        node.get("max_age").error("at most 1d: single-use claims are remembered for the whole window")
    skew_ms = node.get("clock_skew", "5s").duration_ms()
    if skew_ms > 600_000:
        node.get("clock_skew").error("at most 10m")

    ttl = node.get("cache_ttl", {})
    ttl.keys(allowed={"min", "default", "max"})
    min_ms = ttl.get("min", "1m").duration_ms(min_ms=1000)
    default_ms = ttl.get("default", "1h").duration_ms(min_ms=1000)
    max_ms = ttl.get("max", "1d").duration_ms(min_ms=1000)
    if not min_ms <= default_ms <= max_ms:
        ttl.error("cache_ttl needs min <= default <= max")
    if max_ms > 7 * _MAX_DAY_MS:
        ttl.get("max").error("at most 7d: a removed key must stop verifying")
    timeout_ms = node.get("fetch_timeout", "3s").duration_ms(min_ms=100)
    if timeout_ms > 30_000:
        node.get("fetch_timeout").error("at most 30s: a request waits this long for a directory it lacks")
    ssl_context: ssl.SSLContext | None = None
    if node.has("ca_file"):
        cnode = node.get("ca_file")
        try:
            ssl_context = ssl.create_default_context(cafile=cc.path(cnode))
        except (OSError, ssl.SSLError) as exc:
            cnode.error(f"cannot load CA bundle: {exc}")
    options = FetchOptions(
        ssl_context=ssl_context,
        default_ttl_s=default_ms / 1000,
        min_ttl_s=min_ms / 1000,
        max_ttl_s=max_ms / 1000,
        refetch_interval_s=node.get("refetch_interval", "30s").duration_ms() / 1000,
        timeout_s=timeout_ms / 1000,
        max_bytes=node.get("max_directory_bytes", 64 * 1024).int(min=1024, max=1 << 20),
        max_keys=max_keys,
        accept_test_keys=accept_test_keys,
        proofs=node.get("directory_proofs", "ignore").str(choices=set(PROOF_MODES)),
        public_only=not node.get("insecure_private_addresses", False).bool(),
        skew_s=skew_ms / 1000,
    )
    directories = Directories(
        static,
        options,
        fetch=fetch,
        max_agents=node.get("max_agents", 1000).int(min=1, max=1_000_000),
        max_concurrent=node.get("max_concurrent_fetches", 8).int(min=1, max=1000),
    )
    nonce_required = node.get("nonce", "optional").str(choices={"required", "optional"}) == "required"
    fallback = node.get("on_failure", "fallback").str(choices={"fallback", "refuse"}) == "fallback"
    return WebBotAuth(
        name,
        trusted=frozenset(trusted),
        trust_any=trust_any,
        directories=directories,
        public_only=options.public_only,
        tier=tier,
        components=_components(node.get("components", [])),
        max_age_ms=max_age_ms,
        max_validity_ms=max_validity_ms,
        skew_ms=skew_ms,
        nonce_required=nonce_required,
        fallback=fallback,
    )


def _origin(item: Node) -> str:
    text = item.str()
    origin = parse_origin(text)
    if origin is None:
        item.error(f"not an agent origin (https://host[:port], no path): {text!r}")
    if origin != text.rstrip("/"):
        item.error(f"write the origin as {origin!r} (lower case, no default port)")
    return origin


def _local_directory(fnode: Node, cc: CompileContext[KeyRing], max_keys: int, accept_test_keys: bool) -> dict[str, AgentKey]:
    path = cc.path(fnode)
    if not os.path.isfile(path):
        fnode.error(f"cannot read file {fnode.value!r} (looked for {path})")
    try:
        with open(path, "rb") as f:
            data = f.read()
        doc = strict_json(data)
    except OSError as exc:
        fnode.error(f"cannot read {fnode.value}: {exc.strerror or exc}")
    except ValueError as exc:
        fnode.error(f"{fnode.value} is not JSON: {exc}")
    try:
        keys, _ = parse_directory(doc, max_keys=max_keys, accept_test_keys=accept_test_keys, strict=True)
    except DirectoryError as exc:
        fnode.error(f"{fnode.value}: {exc}")
    if not keys:
        fnode.error(f"{fnode.value} holds no Ed25519 key")
    return keys


def _components(node: Node) -> tuple[str, ...]:
    out: list[str] = []
    for item in node.items():
        text = item.str()
        try:
            comp = parse_component(parse_item(text if text.startswith('"') else f'"{text}"', "component"))
        except SignatureError as exc:
            item.error(f"not a request component identifier: {exc.detail}")
        if comp.text in out:
            item.error(f"{text!r} listed twice")
        out.append(comp.text)
    return tuple(out)
