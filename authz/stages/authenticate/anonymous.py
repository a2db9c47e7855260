"""``anonymous``: a route that accepts requests without credentials.

It is not an authenticator: listing it in a route's ``auth`` lets requests
that carry no credentials of the other listed methods through as anonymous
(quotas then count them by client address). Credentials that are present are
still verified, so a bad token is never downgraded to anonymous.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from authz.config.context import CompileContext
    from authz.config.source import Node
    from authz.keys import KeyRing
    from authz.stages.authenticate import Authenticator


class _Anonymous:
    kind = "anonymous"
    section = None

    def compile(self, name: str, node: Node, cc: CompileContext[KeyRing]) -> Authenticator:
        node.error("anonymous takes no configuration")


KIND = _Anonymous()
