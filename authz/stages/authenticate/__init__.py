"""Stage 3, authenticate: who proved what. Pure CPU (plus cached key fetches).

A route lists the methods it accepts (``auth: [jwt:partners, signature:bots]``).
The first method whose credentials the request carries decides: its success
sets the identity, its failure denies with its own reason code. A request that
carries none of them is denied ``auth.missing`` with every method's challenge,
unless the route also accepts ``anonymous``.

One exception, for credentials that only ever claim a *better* treatment than
anonymous (Web Bot Auth agents): a method may mark its failure ``fallback``.
On a route that accepts ``anonymous`` such a failure does not refuse: its
evidence joins ``ctx.evidence`` (it counts against the sender) and the request
goes on as if it carried no credentials of that method.

Each kind of method is one module of this package and registers a
``MethodKind`` in ``KINDS``; the policy compiler asks it to compile the named
configurations of its policy section.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from authz.decision import AUTH_MISSING, Reason
from authz.stages.context import Ctx, StatefulCheck
from authz.store.base import Op

if TYPE_CHECKING:
    from authz.config.context import CompileContext
    from authz.config.source import Node
    from authz.keys import KeyRing
    from authz.request import Request


@dataclass(slots=True)
class AuthResult:
    """What an authentication method found.

    On failure ``reason`` is a registered reason code and ``challenge`` the
    ``WWW-Authenticate`` value to send. On success ``subject`` / ``key_id``
    identify the client, and ``claims`` (planned store operations with their
    judges, e.g. a single-use nonce) join the request's one store call.
    """

    ok: bool
    reason: Reason | None = None
    status: int = 0
    challenge: str = ""
    subject: str = ""
    key_id: str = ""
    claims: dict[str, Any] | None = None
    #: the quota tier this credential puts the client in ("verified-bot", an API key's tier)
    tier: str = ""
    #: a verified agent's name (Web Bot Auth), "" otherwise
    bot: str = ""
    upstream_headers: list[tuple[str, str]] = field(default_factory=list)
    remove_headers: list[str] = field(default_factory=list)
    signals: list[tuple[str, str]] = field(default_factory=list)
    ops: list[tuple[Op, StatefulCheck]] = field(default_factory=list)
    #: on failure: on a route that also accepts anonymous, go on as anonymous instead of refusing
    fallback: bool = False
    #: what the attempt shows about the sender, (signal, strength 0..1), for ``ctx.evidence``
    evidence: list[tuple[str, float]] = field(default_factory=list)


class Authenticator(ABC):
    """One configured authentication method (a JWT provider, a signature profile)."""

    kind: str = ""
    name: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind

    @abstractmethod
    def present(self, req: Request) -> bool:
        """Does the request carry credentials of this method (even invalid ones)?"""

    def applies(self, ctx: Ctx) -> bool:
        """Does this method decide for the request? By default: it carries the method's credentials.

        A method that recognizes clients by what the identify stage found (an
        address list) looks at ``ctx.identity`` instead.
        """
        return self.present(ctx.req)

    @abstractmethod
    async def authenticate(self, req: Request, ctx: Ctx) -> AuthResult:
        """Verify the credentials. Never raises for bad input: returns a failed result."""

    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value that invites this method ("" for none)."""
        return ""

    def offer(self, req: Request) -> list[tuple[str, str]]:
        """More headers for any 401 of a route accepting this method ("Accept-Signature")."""
        return []

    def upstream_header_names(self) -> frozenset[str]:
        """Every request header (lower-cased) this method may set on an allowed request.

        The policy compiler collects them: a client-sent copy of any of them is
        removed from every allowed request whose decision did not set it,
        whichever method authenticated it.
        """
        return frozenset()


class MethodKind(Protocol):
    """A kind of authentication method, as the policy compiler sees it."""

    @property
    def kind(self) -> str:
        """The name routes use before the colon: ``jwt`` in ``jwt:partners``."""
        ...

    @property
    def section(self) -> str | None:
        """The top-level policy key holding this kind's named configurations, or None."""
        ...

    def compile(self, name: str, node: Node, cc: CompileContext[KeyRing]) -> Authenticator:
        """Compile one named configuration of the section; errors name file, line, field."""
        ...


def registered_kinds() -> dict[str, MethodKind]:
    """Every kind of method authz knows, by name."""
    from authz.stages.authenticate import anonymous, api_key, jwt, kong_hmac, listed_bot, signature, webbotauth

    kinds: list[MethodKind] = [
        anonymous.KIND, jwt.KIND, signature.KIND, kong_hmac.KIND, webbotauth.KIND, listed_bot.KIND, api_key.KIND,
    ]  # fmt: skip
    return {k.kind: k for k in kinds}


async def authenticate(ctx: Ctx, methods: tuple[Authenticator, ...], anonymous_ok: bool) -> None:
    """Run the route's methods against ``ctx.req``; record identity or refusal in ``ctx``."""
    req = ctx.req
    ctx.offers = methods
    for method in methods:
        if not method.applies(ctx):
            continue
        result = await method.authenticate(req, ctx)
        ident = ctx.identity
        ident.method = method.label
        if result.signals:
            ctx.signals.extend(result.signals)
        if result.evidence:
            ctx.evidence.extend(result.evidence)
        if not result.ok and result.fallback and anonymous_ok:
            ident.method = ""
            continue  # as if the request carried no credentials of this method
        if not result.ok:
            assert result.reason is not None, "a failed AuthResult names its reason"
            ctx.refuse(result.reason, status=result.status)
            if result.challenge:
                ctx.deny_headers.append(("www-authenticate", result.challenge))
            return
        ident.subject = result.subject
        ident.key_id = result.key_id
        ident.claims = result.claims
        if result.tier:
            ident.tier = result.tier
        if result.bot:
            ident.bot = result.bot
        if result.upstream_headers:
            ctx.upstream_headers.extend(result.upstream_headers)
        if result.remove_headers:
            ctx.remove_headers.extend(result.remove_headers)
        for op, check in result.ops:
            ctx.plan(op, check)
        return
    if anonymous_ok:
        ctx.identity.method = "anonymous"
        return
    ctx.refuse(AUTH_MISSING)
    for method in methods:
        value = method.challenge()
        if value:
            ctx.deny_headers.append(("www-authenticate", value))
