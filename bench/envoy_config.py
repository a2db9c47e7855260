"""Envoy bootstraps for the scenarios: one listener whose only route is a ``direct_response``.

No upstream is ever contacted, so what is measured is Envoy plus whatever
authorization the scenario puts in front of the route. Bootstraps are written
as JSON (a subset of YAML that Envoy reads without a YAML parser).
"""

from __future__ import annotations

import json
from typing import Any

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
EXT_AUTHZ = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
JWT_AUTHN = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
LOCAL_RL = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

#: generous on purpose: a slow check shows as latency, not as a 403 from a timeout
CHECK_TIMEOUT = "2s"


def bootstrap(listen_port: int, admin_port: int, filters: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> str:
    """The whole bootstrap as JSON text."""
    hcm = {
        "stat_prefix": "bench",
        "codec_type": "AUTO",
        "route_config": {
            "name": "bench",
            "virtual_hosts": [
                {
                    "name": "bench",
                    "domains": ["*"],
                    "routes": [
                        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}
                    ],
                }
            ],
        },
        "http_filters": [*filters, {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    config = {
        "admin": {"address": _addr(admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": "bench",
                    "address": _addr(listen_port),
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {"@type": HCM, **hcm}}]}
                    ],
                }
            ],
            "clusters": clusters,
        },
    }
    return json.dumps(config, indent=1)


def _addr(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def cluster(name: str, port: int, *, http2: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(port)}}]}],
        },
    }
    protocol = {"http2_protocol_options": {}} if http2 else {"http_protocol_options": {}}
    out["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {"@type": HTTP_OPTIONS, "explicit_http_config": protocol}
    }
    return out


def _ext_authz(**service: Any) -> dict[str, Any]:
    # fail closed, as in production; the service is the only difference between doors
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {"@type": EXT_AUTHZ, "transport_api_version": "V3", "failure_mode_allow": False, **service},
    }


def grpc_ext_authz(cluster_name: str) -> dict[str, Any]:
    """ext_authz over gRPC, as docs/envoy.md recommends (raw header map, fail closed)."""
    return _ext_authz(
        encode_raw_headers=True,
        grpc_service={"envoy_grpc": {"cluster_name": cluster_name}, "timeout": CHECK_TIMEOUT},
    )


def http_ext_authz(cluster_name: str, port: int) -> dict[str, Any]:
    """ext_authz over plain HTTP, as envoy/envoy-http.yaml sets it up for authz's HTTP door.

    The check request is the original method and path under ``/envoy`` (the
    door's Envoy convention), with every request header and the client address
    in ``x-forwarded-for``; 200 allows. The floor gets the very same requests.
    """
    return _ext_authz(
        http_service={
            "server_uri": {"uri": f"http://127.0.0.1:{port}", "cluster": cluster_name, "timeout": CHECK_TIMEOUT},
            "path_prefix": "/envoy",
            "authorization_request": {
                "headers_to_add": [{"key": "x-forwarded-for", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}]
            },
        },
        allowed_headers={"patterns": [{"safe_regex": {"regex": ".*"}}]},
    )


def jwt_authn(jwks: str, issuer: str) -> dict[str, Any]:
    """Envoy's own JWT check with an inline JWKS (no fetch, no cache of verified tokens)."""
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": JWT_AUTHN,
            "providers": {"bench": {"issuer": issuer, "local_jwks": {"inline_string": jwks}}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }


def local_ratelimit() -> dict[str, Any]:
    """Envoy's local token bucket, enabled and enforced, with a bucket that never runs dry."""
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": LOCAL_RL,
            "stat_prefix": "bench_rl",
            "token_bucket": {"max_tokens": 1_000_000_000, "tokens_per_fill": 1_000_000_000, "fill_interval": "1s"},
            "filter_enabled": {"runtime_key": "bench_rl_enabled", "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "filter_enforced": {"runtime_key": "bench_rl_enforced", "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        },
    }
