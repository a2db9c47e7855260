"""A realistic ``CheckRequest``: what Envoy 1.40 sends for a plain API GET with ``encode_raw_headers``."""

from __future__ import annotations

import time
from typing import Any

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2

HEADERS = (
    (":authority", "api.example.com"),
    (":path", "/v1/items/42?fields=name,price"),
    (":method", "GET"),
    (":scheme", "http"),
    ("user-agent", "bench-client/1.0 (+https://example.com/bench)"),
    ("accept", "application/json"),
    ("accept-encoding", "gzip, deflate"),
    ("x-forwarded-proto", "http"),
    ("x-request-id", "2f1c5e0a-6b1d-4c1e-9d0e-3a7f8b9c0d1e"),
    ("x-envoy-expected-rq-timeout-ms", "15000"),
)


def check_request() -> Any:
    now = time.time()
    attrs = attribute_context_pb2.AttributeContext(
        source=attribute_context_pb2.AttributeContext.Peer(
            address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=51234))
        ),
        destination=attribute_context_pb2.AttributeContext.Peer(
            address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=10000))
        ),
    )
    req = attrs.request
    req.time.seconds = int(now)
    req.time.nanos = int((now % 1) * 1e9)
    http = req.http
    http.id = "1234567890123456789"
    http.method = "GET"
    http.path = "/v1/items/42?fields=name,price"
    http.host = "api.example.com"
    http.scheme = "http"
    http.protocol = "HTTP/1.1"
    http.size = 0
    http.header_map.headers.extend(base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in HEADERS)
    return external_auth_pb2.CheckRequest(attributes=attrs)
