"""Stage 4/6 for replay: single-use claims (signature nonces, JWT ``jti``).

An authentication method that verified a single-use credential plans a
``ClaimOnce`` operation with a ``ReplayCheck``; the claim joins the request's
one store call. The check refuses a second use, and a use the store cannot
vouch for: a claim whose credential was created before the store's epoch
(the store lost its memory, so it cannot know whether the credential was
already used). Replay checks fail closed when the store is down unless a
route says ``on_store_error: {replay: open}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from authz.decision import Reason
from authz.stages.context import Ctx
from authz.store.base import ALREADY_CLAIMED, BEFORE_EPOCH, Op, Result


@dataclass(frozen=True, slots=True)
class ReplayCheck:
    """Judges one claim. Build it once per method configuration, not per request.

    Two refusals, told apart because the client's remedy differs:

    * ``replayed``: the credential was already used; a replay, or a client bug;
    * ``unverifiable``: the credential predates the store's epoch (the store
      restarted or lost its state after the credential was made), so the store
      cannot tell whether it was used; an honest client just makes a new one,
      and ``hint`` tells it so (in ``WWW-Authenticate`` and the JSON body).

    :param extra: more headers for the refusal (``Accept-Signature``)
    """

    replayed: Reason
    unverifiable: Reason
    challenge: str
    unverifiable_challenge: str
    hint: str
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def kind(self) -> str:
        return "replay"

    def judge(self, result: Result, op: Op, ctx: Ctx) -> None:
        if result == ALREADY_CLAIMED:
            reason, challenge = self.replayed, self.challenge
        elif result == BEFORE_EPOCH:
            reason, challenge = self.unverifiable, self.unverifiable_challenge
        else:
            return
        first = ctx.reason is None
        ctx.refuse(reason)
        ctx.signals.append((reason.code, "already_claimed" if result == ALREADY_CLAIMED else "before_store_epoch"))
        if first:
            ctx.deny_headers.append(("www-authenticate", challenge))
            ctx.deny_headers.extend(self.extra)
            if result == BEFORE_EPOCH:
                ctx.body["hint"] = self.hint
