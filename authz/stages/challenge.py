"""Proof of work for clients without credentials: stateless challenges, single-use solutions.

A ``Challenger`` (one configuration of the policy's ``challenges`` section)
issues challenges and checks solutions. Nothing is stored when a challenge is
issued: the challenge token carries its own facts, authenticated by an HMAC
under a server secret::

    v1.<kid>.<d>.<iat_ms>.<exp_ms>.<salt>.<btag>.<rtag>.<mac>

``kid`` names the secret (so a rotated one is found without trying each),
``d`` is the difficulty in leading zero bits, ``iat_ms`` / ``exp_ms`` the issue
time and expiry, ``salt`` 16 random bytes, ``btag`` / ``rtag`` keyed tags of the
binding (the client's identity, as the caller says) and of the route name, and
``mac`` the HMAC-SHA-256 of everything before it, cut to 128 bits. The tags
let a valid token used by another client or on another route be told apart
from a forged one without putting the identity itself in the token.

A solution is checked cheapest first: format, secret, MAC, expiry, binding,
route, difficulty, then one SHA-256 for the work. A solution that passes is
claimed once (``ClaimOnce`` on its salt) in the request's single store call,
dated at its issue time, so a store that lost its state refuses it rather than
accept it twice. Wire format and solver: ``authz.challenge``; the whole
design, costs and limits: docs/challenges.md.

Policy section, by example::

    challenges:
      default:
        secret_file: secrets/challenge.key   # >= 32 bytes; the same file on every authz host
        accept:                              # more secrets that verify (never issue), each until a time
          - {secret_file: secrets/challenge.old, until: "2026-03-01T12:00:00Z"}
        ttl: 2m                              # how long a challenge may be solved and used (default 2m)
        base_difficulty: 16                  # leading zero bits for a score of 0 (default 16)
        max_difficulty: 24                   # never harder than this (default 24, at most 32)
    routes:
      - name: signup
        auth: [anonymous]
        challenge: default                   # every request must carry a solution
"""

from __future__ import annotations

import base64
import hmac
import math
import os
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from authz.challenge import (
    CHALLENGE_HEADER,
    MAX_DIFFICULTY,
    SOLUTION_HEADER,
    ChallengeFormatError,
    format_challenge,
    parse_solution,
    solved,
)
from authz.decision import Outcome, Reason, reason
from authz.stages.context import Ctx
from authz.store.base import ALREADY_CLAIMED, BEFORE_EPOCH, Op, Result
from authz.store.ops import ClaimOnce

if TYPE_CHECKING:
    from authz.config.context import CompileContext
    from authz.config.source import Node

_C = Outcome.CHALLENGE
CHALLENGE_REQUIRED = reason("challenge.required", _C, 401, "The route demands proof of work and the request carries no Authz-Solution; Authz-Challenge holds a challenge to solve (docs/challenges.md).")
CHALLENGE_MALFORMED = reason("challenge.malformed", _C, 401, "Authz-Solution is not a structured dictionary of c and n, or its challenge is not of a known version and form; a new challenge is attached.")
CHALLENGE_INVALID = reason("challenge.invalid", _C, 401, "The solved challenge was not issued by this server under a secret it still accepts: forged, altered (difficulty, times, tags) or made with a retired secret; a new challenge is attached.")
CHALLENGE_EXPIRED = reason("challenge.expired", _C, 401, "The solved challenge is past its expiry; a new challenge is attached.")
CHALLENGE_FOREIGN_IDENTITY = reason("challenge.foreign_identity", _C, 401, "The solved challenge was issued to another client (another address or subject); a new challenge is attached.")
CHALLENGE_FOREIGN_ROUTE = reason("challenge.foreign_route", _C, 401, "The solved challenge was issued for another route; a new challenge is attached.")
CHALLENGE_INSUFFICIENT = reason("challenge.insufficient", _C, 401, "The solved challenge is easier than this request now needs; a new, harder challenge is attached.")
CHALLENGE_WRONG = reason("challenge.wrong_solution", _C, 401, "SHA-256 of the challenge and the nonce does not start with the challenge's number of zero bits; a new challenge is attached.")
CHALLENGE_REPLAY = reason("challenge.replay", _C, 401, "This solution was already used (a solution is good for one request); a new challenge is attached.")
CHALLENGE_REPLAY_UNVERIFIABLE = reason("challenge.replay_unverifiable", _C, 401, "The challenge was issued before the replay store's current epoch (the store restarted or lost its state), so its single use cannot be checked; a new challenge is attached.")

#: what a refused client is told in the JSON body
HINT = "solve the proof of work in Authz-Challenge and repeat the request with Authz-Solution (docs/challenges.md)"
#: sent with every challenge: a 401 must name a scheme (RFC 9110 11.6.1); the challenge itself is Authz-Challenge
WWW_AUTHENTICATE = ("www-authenticate", 'PoW realm="authz"')
#: at least this many bytes of secret; 32 is HMAC-SHA-256's own size
MIN_SECRET_BYTES = 32
MAX_TTL_MS = 3_600_000
#: more verification-only secrets than this would be a key store, not a rotation
MAX_ACCEPT = 4
#: the claim outlives the challenge's expiry by this much (clock steps between hosts)
CLAIM_MARGIN_MS = 5_000
_SALT_BYTES = 16
_TAG_BYTES = 8
_MAC_BYTES = 16
_FIELDS = 9


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class _Secret:
    """One secret, keyed for HMAC once at load. Its ``repr`` and ``str`` show the key id only."""

    __slots__ = ("kid", "until_ms", "_hmac")

    def __init__(self, secret: bytes, until_ms: int | None = None) -> None:
        # a key of its own for challenges, whatever else the secret's bytes are
        key = hmac.digest(secret, b"authz challenge v1", "sha256")
        self._hmac = hmac.new(key, digestmod="sha256")
        self.kid = _b64(self._digest(b"kid:")[:6])
        #: verify-only secrets stop being accepted at this time (ms); None for the issuing one
        self.until_ms = until_ms

    def _digest(self, data: bytes) -> bytes:
        h = self._hmac.copy()
        h.update(data)
        return h.digest()

    def mac(self, body: str) -> str:
        return _b64(self._digest(b"mac:" + body.encode("ascii"))[:_MAC_BYTES])

    def tag(self, kind: bytes, value: str) -> str:
        return _b64(self._digest(kind + value.encode("utf-8", "surrogatepass"))[:_TAG_BYTES])

    def __repr__(self) -> str:
        return f"<challenge secret {self.kid}>"

    __str__ = __repr__


class ChallengeState(StrEnum):
    ABSENT = "absent"
    PASSED = "passed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ChallengeResult:
    """What ``Challenger.check`` found.

    ``absent``: the request carries no solution. ``passed``: a valid solution
    of ``difficulty`` bits, whose single-use claim is planned (the request can
    still be refused when the store says it was used). ``failed``: ``reason``
    says why; nothing was planned.
    """

    state: ChallengeState
    reason: Reason | None = None
    difficulty: int = 0

    @property
    def passed(self) -> bool:
        return self.state is ChallengeState.PASSED


ABSENT = ChallengeResult(ChallengeState.ABSENT)


class Challenger:
    """One compiled ``challenges.<name>``: issues challenges, checks solutions.

    The reputation stage (or a route's ``challenge:`` option) calls it:

    * ``issue(ctx, binding, route, difficulty)``: the headers of a refusal that challenges;
    * ``check(ctx, binding, route)``: the request's solution, its claim planned when it passes;
    * ``demand(ctx, binding, route)``: both, refusing when there is no valid solution;
    * ``difficulty_for(score)``: leading zero bits for a score of 0..100.

    ``binding`` is who the challenge is for (the client address, a subject:
    ``Identity.client_key``); a solution checks only with the same binding
    and route. It never raises for what a client sent.
    """

    __slots__ = ("name", "ttl_ms", "base_difficulty", "max_difficulty", "_issuer", "_by_kid")

    def __init__(
        self,
        name: str,
        secret: bytes,
        *,
        ttl_ms: int = 120_000,
        base_difficulty: int = 16,
        max_difficulty: int = 24,
        accept: tuple[tuple[bytes, int], ...] = (),
    ) -> None:
        if len(secret) < MIN_SECRET_BYTES or any(len(s) < MIN_SECRET_BYTES for s, _ in accept):
            raise ValueError(f"a challenge secret has at least {MIN_SECRET_BYTES} bytes")
        if not 1 <= base_difficulty <= max_difficulty <= MAX_DIFFICULTY:
            raise ValueError(f"need 1 <= base_difficulty <= max_difficulty <= {MAX_DIFFICULTY}")
        self.name = name
        self.ttl_ms = ttl_ms
        self.base_difficulty = base_difficulty
        self.max_difficulty = max_difficulty
        self._issuer = _Secret(secret)
        self._by_kid = {self._issuer.kid: self._issuer}
        for other, until_ms in accept:
            s = _Secret(other, until_ms)
            if s.kid in self._by_kid:
                raise ValueError("the same secret is listed twice")
            self._by_kid[s.kid] = s

    def __repr__(self) -> str:
        return f"Challenger({self.name!r}, ttl_ms={self.ttl_ms}, difficulty={self.base_difficulty}..{self.max_difficulty}, kids={sorted(self._by_kid)})"

    # -- difficulty ---------------------------------------------------------

    def difficulty_for(self, score: float) -> int:
        """Leading zero bits for a score (0..100): ``base`` at 0, one bit more per equal step, ``max`` at 100.

        Each bit doubles the expected work, so the cost grows exponentially
        with the score. A score outside 0..100 is clamped; NaN is the maximum.
        """
        if math.isnan(score):
            return self.max_difficulty
        share = min(max(score, 0.0), 100.0) / 100.0
        return self.base_difficulty + math.floor(share * (self.max_difficulty - self.base_difficulty) + 1e-9)

    def _clamp(self, difficulty: int) -> int:
        return min(max(difficulty, 1), self.max_difficulty)

    # -- issue --------------------------------------------------------------

    def token(self, now_ms: int, binding: str, route: str, difficulty: int) -> str:
        """A fresh challenge token (``difficulty`` clamped to 1..max_difficulty)."""
        s = self._issuer
        d = self._clamp(difficulty)
        body = ".".join(
            (
                "v1",
                s.kid,
                str(d),
                str(now_ms),
                str(now_ms + self.ttl_ms),
                _b64(os.urandom(_SALT_BYTES)),
                s.tag(b"b:", binding),
                s.tag(b"r:", route),
            )
        )
        return f"{body}.{s.mac(body)}"

    def issue(self, ctx: Ctx, binding: str, route: str, difficulty: int) -> list[tuple[str, str]]:
        """The headers of a refusal that challenges: ``Authz-Challenge`` and ``WWW-Authenticate``.

        The caller adds them to ``ctx.deny_headers`` (``refuse`` does all of it).
        """
        d = self._clamp(difficulty)
        exp_s = (ctx.now_ms + self.ttl_ms) // 1000
        ctx.signals.append(("challenge.issued", str(d)))
        return [(CHALLENGE_HEADER, format_challenge(self.token(ctx.now_ms, binding, route, d), d, exp_s)), WWW_AUTHENTICATE]

    def refuse(self, ctx: Ctx, reason: Reason, binding: str, route: str, difficulty: int, *, status: int = 0) -> None:
        """Refuse with ``reason`` (and ``status``, default the reason's 401) and a fresh challenge.

        A request someone refused before keeps that refusal and gets no challenge.
        """
        if ctx.reason is not None:
            return
        ctx.refuse(reason, status=status)
        ctx.deny_headers.extend(self.issue(ctx, binding, route, difficulty))
        ctx.body["hint"] = HINT

    # -- check --------------------------------------------------------------

    def check(self, ctx: Ctx, binding: str, route: str, *, min_difficulty: int = 0) -> ChallengeResult:
        """The request's ``Authz-Solution``: absent, passed (its claim planned in ``ctx``) or failed.

        :param min_difficulty: a solution of an easier challenge fails ``challenge.insufficient``
            (never more than ``max_difficulty``: a client can always pass)
        """
        value = ctx.req.headers.get(SOLUTION_HEADER)
        if value is None:
            return ABSENT
        min_difficulty = min(min_difficulty, self.max_difficulty)
        outcome = self._verify(value, ctx.now_ms, binding, route, min_difficulty)
        if isinstance(outcome, Reason):
            ctx.signals.append(("challenge.failed", outcome.code))
            return ChallengeResult(ChallengeState.FAILED, outcome)
        salt, iat_ms, exp_ms, d = outcome
        claim = ClaimOnce(claim=f"pow:{salt}", ttl_ms=max(exp_ms - ctx.now_ms, 0) + CLAIM_MARGIN_MS, created_ms=iat_ms)
        ctx.plan(claim, ChallengeClaim(self, binding, route, max(d, min_difficulty)))
        ctx.remove_headers.append(SOLUTION_HEADER)
        ctx.signals.append(("challenge.solved", str(d)))
        return ChallengeResult(ChallengeState.PASSED, difficulty=d)

    def demand(self, ctx: Ctx, binding: str, route: str, difficulty: int | None = None, *, status: int = 0) -> ChallengeResult:
        """Require a solution of at least ``difficulty`` bits (default ``base_difficulty``).

        Without a valid one the request is refused (``challenge.required`` or
        the failure's reason) with a fresh challenge of that difficulty.
        """
        d = self.base_difficulty if difficulty is None else self._clamp(difficulty)
        result = self.check(ctx, binding, route, min_difficulty=d)
        if not result.passed:
            self.refuse(ctx, result.reason or CHALLENGE_REQUIRED, binding, route, d, status=status)
        return result

    def _verify(self, value: str, now_ms: int, binding: str, route: str, min_difficulty: int) -> Reason | tuple[str, int, int, int]:
        """(salt, iat_ms, exp_ms, difficulty) of a valid solution, or why it is not one. Cheapest first."""
        try:
            token, nonce = parse_solution(value)
        except ChallengeFormatError:
            return CHALLENGE_MALFORMED
        fields = token.split(".")
        if len(fields) != _FIELDS or fields[0] != "v1":
            return CHALLENGE_MALFORMED
        _, kid, d_s, iat_s, exp_s, salt, btag, rtag, mac = fields
        secret = self._by_kid.get(kid)
        if secret is None or (secret.until_ms is not None and now_ms >= secret.until_ms):
            return CHALLENGE_INVALID
        if not hmac.compare_digest(secret.mac(token[: -len(mac) - 1]), mac):
            return CHALLENGE_INVALID
        # authenticated: every field below is one this server wrote
        d, iat_ms, exp_ms = int(d_s), int(iat_s), int(exp_s)
        if now_ms >= exp_ms:
            return CHALLENGE_EXPIRED
        if not hmac.compare_digest(secret.tag(b"b:", binding), btag):
            return CHALLENGE_FOREIGN_IDENTITY
        if not hmac.compare_digest(secret.tag(b"r:", route), rtag):
            return CHALLENGE_FOREIGN_ROUTE
        if d < min_difficulty:
            return CHALLENGE_INSUFFICIENT
        if not solved(token, nonce, d):
            return CHALLENGE_WRONG
        return salt, iat_ms, exp_ms, d


@dataclass(frozen=True, slots=True)
class ChallengeClaim:
    """Judges the single-use claim of one solution; refuses a second use with a fresh challenge."""

    challenger: Challenger
    binding: str
    route: str
    difficulty: int

    @property
    def kind(self) -> str:
        return "replay"  # on_store_error: {replay: ...} decides when the store cannot say

    def judge(self, result: Result, op: Op, ctx: Ctx) -> None:
        if result == ALREADY_CLAIMED:
            why = CHALLENGE_REPLAY
        elif result == BEFORE_EPOCH:
            why = CHALLENGE_REPLAY_UNVERIFIABLE
        else:
            return
        ctx.signals.append(("challenge.failed", why.code))
        self.challenger.refuse(ctx, why, self.binding, self.route, self.difficulty)


# -- the policy section ---------------------------------------------------------


def compile_challengers(node: Node, cc: CompileContext[Any]) -> dict[str, Challenger]:
    """The ``challenges`` section: one ``Challenger`` per name. Errors name file, line and field."""
    out: dict[str, Challenger] = {}
    for name, cnode in node.entries():
        cnode.keys(allowed={"secret_file", "accept", "ttl", "base_difficulty", "max_difficulty"}, required={"secret_file"})
        secret = _secret(cnode.get("secret_file"), cc)
        accept: list[tuple[bytes, int]] = []
        anode = cnode.get("accept", [])
        items = anode.items()
        if len(items) > MAX_ACCEPT:
            anode.error(f"at most {MAX_ACCEPT} secrets (rotate one at a time)")
        for item in items:
            item.keys(allowed={"secret_file", "until"}, required={"secret_file", "until"})
            other = _secret(item.get("secret_file"), cc)
            if other == secret or any(other == s for s, _ in accept):
                item.get("secret_file").error("this secret is already listed")
            accept.append((other, _time_ms(item.get("until"))))
        ttl_node = cnode.get("ttl", "2m")
        ttl_ms = ttl_node.duration_ms(min_ms=1000)
        if ttl_ms > MAX_TTL_MS:
            ttl_node.error("at most 1h: a solution stays usable, and its claim remembered, that long")
        base = cnode.get("base_difficulty", 16).int(min=1, max=MAX_DIFFICULTY)
        top = cnode.get("max_difficulty", max(base, 24)).int(min=base, max=MAX_DIFFICULTY)
        out[name] = Challenger(name, secret, ttl_ms=ttl_ms, base_difficulty=base, max_difficulty=top, accept=tuple(accept))
    return out


def _secret(node: Node, cc: CompileContext[Any]) -> bytes:
    path = cc.path(node)
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16).strip()
    except OSError as exc:
        node.error(f"cannot read file {node.value!r} (looked for {path}): {exc.strerror or exc}")
    if len(data) < MIN_SECRET_BYTES:
        node.error(f"a challenge secret needs at least {MIN_SECRET_BYTES} bytes, this file has {len(data)} (make one with: openssl rand -base64 48)")
    return data


def _time_ms(node: Node) -> int:
    raw = node.value
    if isinstance(raw, datetime):
        stamp = raw
    else:
        try:
            stamp = datetime.fromisoformat(node.str().replace("Z", "+00:00"))
        except ValueError:
            node.error(f"expected an ISO 8601 time like 2027-01-01T00:00:00Z; got {raw!r}")
    if stamp.tzinfo is None:
        node.error("give a time zone (Z for UTC)")
    return int(stamp.timestamp() * 1000)


__all__ = [
    "ABSENT",
    "CHALLENGE_EXPIRED",
    "CHALLENGE_FOREIGN_IDENTITY",
    "CHALLENGE_FOREIGN_ROUTE",
    "CHALLENGE_INSUFFICIENT",
    "CHALLENGE_INVALID",
    "CHALLENGE_MALFORMED",
    "CHALLENGE_REPLAY",
    "CHALLENGE_REPLAY_UNVERIFIABLE",
    "CHALLENGE_REQUIRED",
    "CHALLENGE_WRONG",
    "ChallengeClaim",
    "ChallengeResult",
    "ChallengeState",
    "Challenger",
    "compile_challengers",
]
