"""The policy: one YAML file, validated and compiled at load, swapped whole on reload.

``authz.policy.compile.load_policy`` reads a file; ``authz.policy.model`` holds
the compiled objects; ``authz.policy.source`` gives positions to every error.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Policy", "Route", "load_policy"]


def __getattr__(name: str) -> Any:
    # Lazy, so that authz.keys can use authz.policy.source without an import cycle.
    if name == "load_policy":
        from authz.policy.compile import load_policy

        return load_policy
    if name in ("Policy", "Route"):
        from authz.policy import model

        return getattr(model, name)
    raise AttributeError(name)
