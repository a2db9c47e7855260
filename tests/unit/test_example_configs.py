"""The shipped proxy configs forward every header the shipped policies may set.

nginx and Caddy cannot copy headers by prefix, so each upstream header of a
policy (authz's own x-authz-* and every JWT claim header) needs its line in
examples/nginx.conf (``auth_request_set`` and ``proxy_set_header``) and in
examples/Caddyfile (``copy_headers``). The proxy integration tests run these
very files with tests/integration/policies/http_door.yaml; this checks that
the example policy's headers are listed too, so the examples agree.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from authz.policy import load_policy
from tests.support.proxies import EXAMPLES, TRAEFIK_DYNAMIC

ROOT = EXAMPLES.parent
POLICIES = [EXAMPLES / "policy.yaml", ROOT / "tests" / "integration" / "policies" / "http_door.yaml"]


def nginx_forwarded() -> set[str]:
    text = (EXAMPLES / "nginx.conf").read_text()
    captured = dict(re.findall(r"auth_request_set\s+\$(\w+)\s+\$upstream_http_(\w+);", text))
    out = set()
    for name, var in re.findall(r"proxy_set_header\s+(X-Authz-[\w-]+)\s+\$(\w+);", text):
        assert var in captured, f"{name} is set from ${var}, which no auth_request_set captures"
        assert captured[var] == name.lower().replace("-", "_"), f"{name} is set from the wrong header"
        out.add(name.lower())
    return out


def caddy_forwarded() -> set[str]:
    text = (EXAMPLES / "Caddyfile").read_text()
    (line,) = re.findall(r"^\s*copy_headers\s+(.+)$", text, flags=re.M)
    return {name.lower() for name in line.split()}


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_nginx_and_caddy_forward_every_upstream_header_of_the_shipped_policies(policy: Path) -> None:
    names = load_policy(str(policy)).upstream_headers
    assert {"x-authz-email", "x-authz-org"} <= names  # the policies do have claim headers
    assert names - nginx_forwarded() == set()
    assert names - caddy_forwarded() == set()


def test_traefik_and_envoy_forward_the_prefix() -> None:
    assert "authResponseHeadersRegex: ^(?i)x-authz-" in TRAEFIK_DYNAMIC.read_text()
    assert "patterns: [{prefix: x-authz-}]" in (ROOT / "envoy" / "envoy-http.yaml").read_text()
