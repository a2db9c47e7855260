"""The policy: one YAML file, validated and compiled at load, swapped whole on reload.

``authz.policy.compile.load_policy`` reads a file; ``authz.policy.model`` holds
the compiled objects. The positioned-YAML reader every error comes from is
``authz.config.source``.
"""

from __future__ import annotations

from authz.policy.compile import load_policy
from authz.policy.model import Policy, Route

__all__ = ["Policy", "Route", "load_policy"]
