"""Stage 4 (plan) and 6 (judge) for quotas: token buckets per client.

A quota allows ``limit`` requests per ``window`` with bursts up to ``burst``,
refilling continuously (GCRA, one stored number per bucket). The bucket key is
the quota's name plus what it counts by: the client (authenticated subject,
else address), the address, the subject, the key id, a header, or one shared
bucket for everyone.

The client sees the IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers)
of the most constrained quota: ``RateLimit-Policy: "name";q=100;w=60`` and
``RateLimit: "name";r=42;t=17``; a refused request gets 429 with ``Retry-After``.
"""

from __future__ import annotations

from dataclasses import dataclass

from authz.decision import QUOTA_EXHAUSTED
from authz.stages.context import Ctx
from authz.store.base import Op, Result, Tokens
from authz.store.ops import TakeTokens

BY_CHOICES = {"client", "ip", "subject", "key_id", "route", "global"}


@dataclass(frozen=True, slots=True, eq=False)
class Quota:
    """A compiled quota and the judge of its bucket's result."""

    name: str
    limit: int
    window_ms: int
    burst: int
    by: str  # one of BY_CHOICES, or "header:<name>"
    kind: str = "quota"

    @property
    def interval_ms(self) -> float:
        return self.window_ms / self.limit

    def plan(self, ctx: Ctx, route_name: str) -> None:
        key = self._key(ctx, route_name)
        ctx.plan(TakeTokens(key, self.window_ms / self.limit, self.burst), self)

    def _key(self, ctx: Ctx, route_name: str) -> str:
        ident = ctx.identity
        by = self.by
        if by == "client":
            part = ident.client_key
        elif by == "ip":
            part = ident.client_ip
        elif by == "subject":
            part = ident.subject or f"ip:{ident.client_ip}"
        elif by == "key_id":
            part = ident.key_id or f"ip:{ident.client_ip}"
        elif by == "route":
            part = route_name
        elif by == "global":
            part = "*"
        else:  # header:<name>
            part = ctx.req.headers.get(by[7:], "") or f"ip:{ident.client_ip}"
        return f"q:{self.name}:{part}"

    def judge(self, result: Result, op: Op, ctx: Ctx) -> None:
        assert isinstance(result, Tokens)
        window_s = max(self.window_ms // 1000, 1)
        reset_s = (result.reset_ms + 999) // 1000
        # Report the most constrained quota: the first refusal, else the lowest remaining.
        if not result.allowed:
            retry_s = max((result.retry_after_ms + 999) // 1000, 1)
            if ctx.reason is None:
                ctx.refuse(QUOTA_EXHAUSTED)
                ctx.deny_headers.append(("retry-after", str(retry_s)))
                _set_ratelimit(ctx, self.name, self.burst, window_s, 0, retry_s)
            ctx.signals.append(("quota." + self.name, "exhausted"))
            return
        _set_ratelimit(ctx, self.name, self.burst, window_s, result.remaining, reset_s)


def _set_ratelimit(ctx: Ctx, name: str, quota: int, window_s: int, remaining: int, reset_s: int) -> None:
    headers = ctx.client_headers
    for i, (hname, value) in enumerate(headers):
        if hname == "ratelimit":
            if ctx.reason is None and remaining >= _remaining_of(value):
                return
            headers[i] = ("ratelimit", f'"{name}";r={remaining};t={reset_s}')
            headers[i + 1] = ("ratelimit-policy", f'"{name}";q={quota};w={window_s}')
            return
    headers.append(("ratelimit", f'"{name}";r={remaining};t={reset_s}'))
    headers.append(("ratelimit-policy", f'"{name}";q={quota};w={window_s}'))


def _remaining_of(value: str) -> int:
    start = value.find(";r=") + 3
    end = value.find(";", start)
    return int(value[start:end])
