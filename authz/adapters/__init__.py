"""Doors: wire formats in (a normalized Request) and out (the decision on the wire).

``envoy_grpc`` speaks Envoy's ext_authz gRPC API; ``http`` speaks the HTTP
conventions of Envoy http_service, forward-auth proxies and nginx auth_request.
"""

from __future__ import annotations

from authz.decision import Reason


class Malformed(Exception):
    """A door's input cannot become a Request; carries the reason code to deny with."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
