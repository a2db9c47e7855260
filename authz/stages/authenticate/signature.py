"""``signature``: HTTP Message Signatures (RFC 9421) with replay protection.

A route that lists ``signature:<profile>`` accepts requests signed as the
profile says. The request's ``Signature-Input`` / ``Signature`` are parsed
(strict RFC 8941), the key named by ``keyid`` is taken from the keyring and
*its* algorithm is used (an ``alg`` parameter that disagrees is refused), the
profile's rules on covered components, ``created`` / ``expires``, ``nonce``
and ``tag`` are applied, cheapest first, and only then is the signature base
built and verified.

Replay: an accepted ``(keyid, nonce)`` is claimed once in the request's single
store call, for as long as the signature could still be accepted. The claim
carries the signature's ``created`` time, and a store refuses claims created
before its epoch (when its state began), so a store that lost its memory never
reopens the window (docs/signatures.md).

Policy section, by example::

    signatures:
      bots:
        components: ["@method", "@target-uri"]   # must be covered (default)
        body_components: [content-digest]         # also, when the request has a body (default)
        label: sig1            # accept only this label (default: any label)
        tag: my-api            # accept only signatures with this ``tag`` (default: any)
        select: first          # of the acceptable signatures verify: first | any | all (default first)
        created: required      # required | optional (default required)
        max_age: 5m            # oldest acceptable ``created`` (default 5m)
        clock_skew: 5s         # tolerance on created / expires (default 5s)
        nonce: required        # required | optional (default required)
        keys: [bot-ed25519]    # key ids this profile accepts (default: every RFC 9421 key)

Without a ``keys`` list a profile accepts every key of the keyring with an
RFC 9421 algorithm, keystore keys included (docs/keys.md): a key created,
rotated or revoked through the admin API applies at once.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import TYPE_CHECKING

from authz.decision import Outcome, Reason, reason
from authz.httpsig import (
    Message,
    SignatureError,
    check_content_digest,
    parse_signature,
    parse_signature_input,
    signature_base,
    verify,
)
from authz.httpsig.algorithms import ALGORITHMS
from authz.httpsig.base import SignatureInput
from authz.httpsig.components import parse_component
from authz.httpsig.sfv import parse_item
from authz.stages.authenticate import Authenticator, AuthResult
from authz.stages.context import Ctx
from authz.stages.replay import ReplayCheck
from authz.store.ops import ClaimOnce

if TYPE_CHECKING:
    from authz.config.context import CompileContext
    from authz.config.source import Node
    from authz.keys import Key, KeyRing
    from authz.request import Request

_D = Outcome.DENY
SIG_MISSING = reason("sig.missing", _D, 401, "The request carries signatures, but none with the label the profile verifies.")
SIG_MALFORMED = reason("sig.malformed", _D, 401, "Signature-Input or Signature does not parse, breaks an RFC 9421 rule, or exceeds the size limits.")
SIG_BAD_SIGNATURE = reason("sig.bad_signature", _D, 401, "The signature does not verify with the key named by keyid.")
SIG_UNKNOWN_KEY = reason("sig.unknown_key", _D, 401, "No usable signature key has the signature's keyid (absent, unknown, revoked, expired, not allowed).")
SIG_ALG_MISMATCH = reason("sig.alg_mismatch", _D, 401, "The signature's alg parameter disagrees with the algorithm bound to its key.")
SIG_COMPONENT_MISSING = reason("sig.component_missing", _D, 401, "A component the profile requires is not covered, or a covered component is absent from the request.")
SIG_CREATED_MISSING = reason("sig.created_missing", _D, 401, "The profile requires the created parameter and the signature has none.")
SIG_CREATED_IN_FUTURE = reason("sig.created_in_future", _D, 401, "The signature's created time is ahead of the clock by more than the allowed skew.")
SIG_TOO_OLD = reason("sig.too_old", _D, 401, "The signature was created longer ago than the profile's max_age.")
SIG_EXPIRED = reason("sig.expired", _D, 401, "The signature's expires time has passed.")
SIG_NONCE_MISSING = reason("sig.nonce_missing", _D, 401, "The profile requires a nonce and the signature has none.")
SIG_TAG_MISMATCH = reason("sig.tag_mismatch", _D, 401, "No signature of the request carries the tag the profile requires.")
SIG_BAD_CONTENT_DIGEST = reason("sig.bad_content_digest", _D, 401, "Content-Digest is covered or required but absent or not a well-formed sha-256/sha-512 digest.")
SIG_REPLAY = reason("sig.replay", _D, 401, "This keyid and nonce (for Kong hmac with single_use, this signature) were already used.")
SIG_REPLAY_UNVERIFIABLE = reason("sig.replay_unverifiable", _D, 401, "The signature was made before the replay store's current epoch (the store restarted or lost its state), so its single use cannot be checked; sign the request again.")
#: what a client refused with sig.replay_unverifiable can do
SIGN_AGAIN = "the replay store restarted after this signature was made; sign the request again (new nonce and created time)"

#: Signature-Input / Signature values longer than this are refused before parsing
MAX_FIELD_BYTES = 8192
#: covering one of these components covers the required one too (RFC 9421 2.2)
SATISFIED_BY: dict[str, tuple[str, ...]] = {
    '"@authority"': ('"@target-uri"',),
    '"@scheme"': ('"@target-uri"',),
    '"@path"': ('"@target-uri"', '"@request-target"'),
    '"@query"': ('"@target-uri"', '"@request-target"'),
}
_SIG_CODES = {
    "malformed": SIG_MALFORMED,
    "unsupported": SIG_MALFORMED,
    "component_missing": SIG_COMPONENT_MISSING,
    "bad_content_digest": SIG_BAD_CONTENT_DIGEST,
}
_LABEL = re.compile(r"^[a-z*][a-z0-9_.*-]{0,63}$")


def message_of(req: Request) -> Message:
    """The signature library's view of a normalized request (fields joined with ", ")."""
    return Message(
        method=req.method,
        scheme=req.scheme,
        authority=req.host,
        path=req.path,
        query=req.query,
        has_query=req.has_query,
        fields=req.headers,
    )


def has_body(req: Request) -> bool:
    """Does the request announce a body? (The body itself is never seen.)"""
    headers = req.headers
    length = headers.get("content-length")
    return (length is not None and length.strip() != "0") or "transfer-encoding" in headers


class SignatureProfile(Authenticator):
    """One ``signatures.<name>`` profile, compiled."""

    kind = "signature"

    def __init__(
        self,
        name: str,
        keyring: KeyRing,
        *,
        components: tuple[str, ...],
        body_components: tuple[str, ...],
        label: str | None,
        tag: str | None,
        created_required: bool,
        max_age_ms: int,
        skew_ms: int,
        nonce_required: bool,
        allowed_keys: frozenset[str] | None,
        select: str = "first",
    ) -> None:
        self.name = name
        self.select = select
        self.keyring = keyring
        self.components = components
        self.body_components = body_components
        self.want_label = label
        self.want_tag = tag
        self.created_required = created_required
        self.max_age_ms = max_age_ms
        self.skew_ms = skew_ms
        self.nonce_required = nonce_required
        self.allowed_keys = allowed_keys
        self._challenge = f'Signature realm="{name}"'
        flags = (";created" if created_required else "") + (";nonce" if nonce_required else "")
        tag_part = f';tag="{tag}"' if tag else ""
        self._accept = f"{label or 'sig1'}=({' '.join(components)}){flags}{tag_part}"
        self._accept_body = f"{label or 'sig1'}=({' '.join(components + body_components)}){flags}{tag_part}"
        self._replay = ReplayCheck(
            replayed=SIG_REPLAY,
            unverifiable=SIG_REPLAY_UNVERIFIABLE,
            challenge=self._challenge,
            unverifiable_challenge=f'{self._challenge}, error_description="sign again"',
            hint=SIGN_AGAIN,
        )

    def present(self, req: Request) -> bool:
        h = req.headers
        return "signature-input" in h or "signature" in h

    def challenge(self) -> str:
        return self._challenge

    def offer(self, req: Request) -> list[tuple[str, str]]:
        """``Accept-Signature`` for every 401 of a route that accepts this profile (RFC 9421 5.1)."""
        return [("accept-signature", self._accept_body if has_body(req) and self.body_components else self._accept)]

    def _fail(self, reason: Reason, detail: str) -> AuthResult:
        return AuthResult(ok=False, reason=reason, challenge=self._challenge, signals=[("sig.problem", detail)])

    async def authenticate(self, req: Request, ctx: Ctx) -> AuthResult:
        try:
            return self._authenticate(req, ctx)
        except SignatureError as exc:
            return self._fail(_SIG_CODES.get(exc.code, SIG_MALFORMED), exc.detail)

    def _authenticate(self, req: Request, ctx: Ctx) -> AuthResult:
        h = req.headers
        input_value, sig_value = h.get("signature-input"), h.get("signature")
        if input_value is None or sig_value is None:
            return self._fail(SIG_MALFORMED, "Signature-Input and Signature must come together")
        if len(input_value) > MAX_FIELD_BYTES or len(sig_value) > MAX_FIELD_BYTES:
            return self._fail(SIG_MALFORMED, "signature fields too large")
        inputs = parse_signature_input(input_value)
        candidates = self._candidates(inputs)
        if isinstance(candidates, Reason):
            return self._fail(candidates, "no acceptable signature label")
        signatures = parse_signature(sig_value)
        if self.select == "first":
            candidates = candidates[:1]
        verified: list[tuple[SignatureInput, Key]] = []
        failures: list[tuple[str, Reason, str]] = []
        msg = message_of(req)
        for si in candidates:
            outcome = self._verify_one(si, signatures.get(si.label), req, msg, ctx.now_ms)
            if isinstance(outcome, tuple):
                failures.append((si.label, *outcome))
                if self.select != "any":
                    break  # first and all: the first failure decides
            else:
                verified.append((si, outcome))
                if self.select == "any":
                    break
        if failures and (self.select != "any" or not verified):
            label, reason, detail = failures[0]
            result = self._fail(reason, f"{label}: {detail}")
            if len(candidates) > 1:
                result.signals.append(("sig.failed", ",".join(f"{lbl}:{r.code}" for lbl, r, _ in failures)))
            return result
        si, key = verified[0]
        result = AuthResult(ok=True, subject=key.subject, key_id=key.id)
        if len(verified) > 1:
            result.signals.append(("sig.verified", ",".join(f"{s.label}:{k.id}" for s, k in verified)))
        for si, key in verified:
            if si.nonce is not None and si.created is not None:
                result.ops.append((self._claim(key.id, si), self._replay))
        return result

    def _verify_one(
        self, si: SignatureInput, signature: bytes | None, req: Request, msg: Message, now_ms: int
    ) -> Key | tuple[Reason, str]:
        """The key that verified ``si``, or (the reason, a detail) it did not. Cheapest checks first."""
        try:
            if signature is None:
                return SIG_MALFORMED, f"no Signature member for label {si.label!r}"
            key = self._key(si.keyid, now_ms)
            if key is None:
                return SIG_UNKNOWN_KEY, "keyid absent, unknown or not usable"
            if si.alg is not None and si.alg != key.algorithm:
                return SIG_ALG_MISMATCH, f"alg {si.alg!r} but the key is {key.algorithm}"
            problem = self._check_time(si, now_ms)
            if problem is not None:
                return problem, "created/expires outside the window"
            if si.nonce is None and self.nonce_required:
                return SIG_NONCE_MISSING, "nonce required"
            missing = self._uncovered(si, req)
            if missing:
                return SIG_COMPONENT_MISSING, f"{missing} not covered"
            if si.covers("content-digest"):
                check_content_digest(req.headers.get("content-digest"))
            base = signature_base(msg, si)
        except SignatureError as exc:
            return _SIG_CODES.get(exc.code, SIG_MALFORMED), exc.detail
        if not verify(key.algorithm, key.material, base, signature):
            return SIG_BAD_SIGNATURE, "signature does not verify"
        return key

    def _candidates(self, inputs: dict[str, SignatureInput]) -> list[SignatureInput] | Reason:
        """The signatures the profile accepts to verify, in field order, or the reason there is none."""
        out: list[SignatureInput] = []
        tag_refused = False
        for label, si in inputs.items():
            if self.want_label is not None and label != self.want_label:
                continue
            if self.want_tag is not None and si.tag != self.want_tag:
                tag_refused = True
                continue
            out.append(si)
        if out:
            return out
        return SIG_TAG_MISMATCH if tag_refused else SIG_MISSING

    def _key(self, keyid: str | None, now_ms: int) -> Key | None:
        if keyid is None or (self.allowed_keys is not None and keyid not in self.allowed_keys):
            return None
        key = self.keyring.get(keyid)
        if key is None or key.algorithm not in ALGORITHMS or not key.usable(now_ms):
            return None
        return key

    def _check_time(self, si: SignatureInput, now_ms: int) -> Reason | None:
        skew = self.skew_ms
        if si.created is None:
            if self.created_required:
                return SIG_CREATED_MISSING
        else:
            created_ms = si.created * 1000
            if created_ms > now_ms + skew:
                return SIG_CREATED_IN_FUTURE
            if now_ms - created_ms > self.max_age_ms + skew:
                return SIG_TOO_OLD
        if si.expires is not None and now_ms > si.expires * 1000 + skew:
            return SIG_EXPIRED
        return None

    def _uncovered(self, si: SignatureInput, req: Request) -> str:
        covered = {c.text for c in si.components}
        required = self.components + (self.body_components if has_body(req) else ())
        for want in required:
            if want not in covered and not any(alt in covered for alt in SATISFIED_BY.get(want, ())):
                return want
        return ""

    def _claim(self, keyid: str, si: SignatureInput) -> ClaimOnce:
        """Claim the nonce for as long as this signature could still be accepted."""
        created_ms = (si.created or 0) * 1000
        until = created_ms + self.max_age_ms + self.skew_ms
        if si.expires is not None:
            until = min(until, si.expires * 1000 + self.skew_ms)
        # The claim is dated from the earliest moment the signature could have been
        # accepted (created minus the skew): a store whose epoch is later cannot know
        # whether it was, and refuses it. The ttl, counted from now, covers the whole window.
        earliest = created_ms - self.skew_ms
        return ClaimOnce(claim=f"n:{keyid}:{si.nonce}", ttl_ms=max(until - earliest, 1), created_ms=earliest)


class _SignatureKind:
    kind = "signature"
    section = "signatures"

    def compile(self, name: str, node: Node, cc: CompileContext[KeyRing]) -> Authenticator:
        node.keys(
            allowed={"components", "body_components", "label", "tag", "select", "created", "max_age", "clock_skew", "nonce", "keys"}
        )
        components = _components(node.get("components", ["@method", "@target-uri"]))
        body_components = _components(node.get("body_components", ["content-digest"]))
        label = None
        if node.has("label"):
            lnode = node.get("label")
            label = lnode.str()
            if not _LABEL.match(label):
                lnode.error(f"not a structured-field key (lower case, at most 64): {label!r}")
        tag = node.get("tag").str() if node.has("tag") else None
        if tag is not None and (not tag.isascii() or '"' in tag or "\\" in tag):
            node.get("tag").error("a tag is printable ASCII without quotes or backslashes")
        created_required = node.get("created", "required").str(choices={"required", "optional"}) == "required"
        nonce_node = node.get("nonce", "required")
        nonce_required = nonce_node.str(choices={"required", "optional"}) == "required"
        if nonce_required and not created_required:
            nonce_node.error("a required nonce needs created: required (the replay window is counted from created)")
        max_age_ms = node.get("max_age", "5m").duration_ms(min_ms=1000)
        if max_age_ms > 86_400_000:
            node.get("max_age").error("at most 1d: nonces are remembered for the whole window")
        skew_ms = node.get("clock_skew", "5s").duration_ms()
        if skew_ms > 600_000:
            node.get("clock_skew").error("at most 10m")
        allowed = allowed_keys(node, cc, ALGORITHMS, "an HTTP signature algorithm")
        return SignatureProfile(
            name,
            cc.keyring,
            components=components,
            body_components=body_components,
            label=label,
            tag=tag,
            created_required=created_required,
            max_age_ms=max_age_ms,
            skew_ms=skew_ms,
            nonce_required=nonce_required,
            allowed_keys=allowed,
            select=node.get("select", "first").str(choices={"first", "any", "all"}),
        )


def _components(node: Node) -> tuple[str, ...]:
    """Component identifiers from the policy, as their serialized text (``"@method"``)."""
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


def allowed_keys(node: Node, cc: CompileContext[KeyRing], algorithms: Collection[str], what: str) -> frozenset[str] | None:
    """The ``keys`` allow-list of a profile, each checked against the keyring; None for "any"."""
    if not node.has("keys"):
        if cc.keystore is None and not any(k.algorithm in algorithms for k in cc.keyring):
            node.error(f"no key in the keys file has {what} (set keys_file and add one)")
        return None
    allowed = set()
    # a list names keys of the keys file: keystore keys come and go at run time (open profiles take them)
    file_ring = getattr(cc.keyring, "file_ring", cc.keyring)
    for item in node.get("keys").items():
        kid = item.str()
        key = file_ring.get(kid)
        if key is None:
            item.error(f"no key {kid!r} in the keys file")
        if key.algorithm not in algorithms:
            item.error(f"key {kid!r} is {key.algorithm}, not {what} ({', '.join(algorithms)})")
        allowed.add(kid)
    return frozenset(allowed)


KIND = _SignatureKind()
