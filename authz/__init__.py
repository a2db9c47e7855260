"""authz: an API bot-protection decision server for Envoy ext_authz and HTTP forward-auth."""

from __future__ import annotations

__version__ = "0.1.0"
