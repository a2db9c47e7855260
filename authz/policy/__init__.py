"""The policy: one YAML file, validated and compiled at load, swapped whole on reload."""

from __future__ import annotations

from authz.policy.compile import load_policy
from authz.policy.model import Policy, Route

__all__ = ["Policy", "Route", "load_policy"]
