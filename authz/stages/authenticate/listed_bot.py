"""``listed_bot``: crawlers recognized by their address alone, a weaker tier than a signature.

Search engines publish the address ranges their crawlers use; an operator
keeps them (and its own partners' CIDRs) as address lists (``ip_lists``, one
``CIDR [label]`` a line). A route that lists ``listed_bot:<name>`` puts a
request whose client address (after trusted proxies) is on one of the
configuration's lists in the ``listed-bot`` tier: subject and ``bot`` the
entry's label (the list's name when the entry has none), ``x-authz-listed-bot``
upstream. Nothing is proved but the address, so it is a tier of its own,
never ``verified-bot``; ``user_agent`` can demand that the User-Agent also
names the crawler (a substring, case-insensitive), which keeps other traffic
from the same ranges (a cloud's customers) out of the tier.

A request from a listed address that carries other credentials of the route
is decided by the route's method order like any other; an address that is not
listed, or a User-Agent that does not match, is simply not this method's
(the next method, or ``anonymous``, decides).

Policy section, by example::

    ip_lists:
      googlebot: {file: lists/googlebot.txt}
    listed_bots:
      crawlers:
        lists: [googlebot]
        user_agent: [Googlebot]      # optional
        tier: listed-bot             # default
    routes:
      - auth: [web_bot_auth:agents, listed_bot:crawlers, anonymous]
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from authz.stages.authenticate import Authenticator, AuthResult
from authz.stages.context import Ctx

if TYPE_CHECKING:
    from authz.config.cidr import CidrSet
    from authz.config.context import CompileContext
    from authz.config.source import Node
    from authz.keys import KeyRing
    from authz.request import Request

LISTED_HEADER = "x-authz-listed-bot"
DEFAULT_TIER = "listed-bot"
#: the compile context's shared entry holding the policy's address lists (authz.policy.compile)
IP_LISTS = "ip_lists"


class ListedBot(Authenticator):
    """One ``listed_bots.<name>`` configuration, compiled."""

    kind = "listed_bot"

    def __init__(self, name: str, lists: tuple[CidrSet, ...], user_agents: tuple[str, ...] = (), tier: str = DEFAULT_TIER) -> None:
        self.name = name
        self.lists = lists
        self.user_agents = tuple(u.lower() for u in user_agents)
        self.tier = tier

    def present(self, req: Request) -> bool:
        return False  # no credentials: the address decides (applies)

    def _label(self, ctx: Ctx) -> str | None:
        ip = ctx.identity.client_ip
        if not ip:
            return None
        for cset in self.lists:
            label = cset.match(ip)
            if label is not None:
                if self.user_agents:
                    ua = ctx.req.headers.get("user-agent", "").lower()
                    if not any(u in ua for u in self.user_agents):
                        return None
                return label
        return None

    def applies(self, ctx: Ctx) -> bool:
        return self._label(ctx) is not None

    async def authenticate(self, req: Request, ctx: Ctx) -> AuthResult:
        label = self._label(ctx) or self.name
        if not (label.isascii() and label.isprintable()) or len(label) > 128:
            label = self.name  # a list file's label goes into a header: plain text only
        return AuthResult(
            ok=True,
            subject=label,
            tier=self.tier,
            bot=label,
            upstream_headers=[(LISTED_HEADER, label)],
            signals=[("bot.listed", label)],
        )

    def upstream_header_names(self) -> frozenset[str]:
        return frozenset({LISTED_HEADER})


class _ListedBotKind:
    kind = "listed_bot"
    section = "listed_bots"

    def compile(self, name: str, node: Node, cc: CompileContext[KeyRing]) -> Authenticator:
        node.keys(allowed={"lists", "user_agent", "tier"}, required={"lists"})
        known: dict[str, CidrSet] = cc.shared.get(IP_LISTS, {})
        lists: list[CidrSet] = []
        lnode = node.get("lists")
        for item in lnode.items():
            list_name = item.str()
            if list_name not in known:
                item.error(f"no address list named {list_name!r} in ip_lists")
            if known[list_name] in lists:
                item.error(f"list {list_name!r} named twice")
            lists.append(known[list_name])
        if not lists:
            lnode.error("name at least one address list")
        user_agents = tuple(node.get("user_agent", []).str_list())
        for i, ua in enumerate(user_agents):
            if not ua.strip() or not ua.isprintable():
                node.get("user_agent").items()[i].error("a User-Agent token is printable text")
        tier = node.get("tier", DEFAULT_TIER).str()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", tier):
            node.get("tier").error(f"not a tier name: {tier!r} (letters, digits, '_', '.', '-')")
        return ListedBot(name, tuple(lists), user_agents, tier)


KIND = _ListedBotKind()
