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

    :param reason: the reason code of a refused claim (``sig.replay``, ``jwt.replay``)
    :param challenge: the ``WWW-Authenticate`` value sent with the refusal
    """

    reason: Reason
    challenge: str
    kind: str = "replay"

    def judge(self, result: Result, op: Op, ctx: Ctx) -> None:
        if result in (ALREADY_CLAIMED, BEFORE_EPOCH):
            first = ctx.reason is None
            ctx.refuse(self.reason)
            ctx.signals.append((self.reason, "already_claimed" if result == ALREADY_CLAIMED else "before_epoch"))
            if first:
                ctx.deny_headers.append(("www-authenticate", self.challenge))
