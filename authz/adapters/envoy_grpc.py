"""Envoy ext_authz over gRPC: CheckRequest -> Request, Decision -> CheckResponse.

What Envoy sends and honours is described in docs/envoy.md. In short:

* ``header_map`` (sent with ``encode_raw_headers: true``) keeps repeated field
  lines apart, so they can be joined with ", " as RFC 9110 and RFC 9421 expect;
  the older ``headers`` map joins them with "," and is used only when
  ``header_map`` is absent.
* Pseudo-headers (``:authority``, ``:path``...) arrive in the same map; their
  facts come from the typed ``http`` fields instead.
* Envoy only tests ``status.code == OK``; a denial's HTTP status is
  ``denied_response.status``. Every header mutation sets ``append_action``
  explicitly so behaviour does not depend on the Envoy version.
"""

from __future__ import annotations

import re
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2

from authz.adapters import Malformed
from authz.decision import REQUEST_BAD_ENCODING, REQUEST_MALFORMED, REQUEST_TOO_LARGE, Decision, Outcome
from authz.request import Request, split_target, valid_authority, valid_field_name, valid_field_names, valid_target

CheckRequest = external_auth_pb2.CheckRequest
CheckResponse = external_auth_pb2.CheckResponse

OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD

# google.rpc.Code values for the check status (Envoy only tests OK / not OK;
# the specific code is for logs and other callers)
_RPC_OK = 0
_RPC_CODE = {400: 3, 401: 16, 403: 7, 404: 7, 429: 8, 431: 3, 503: 14}
_VALID_STATUS = set(http_status_pb2.StatusCode.values())
_SCHEMES = frozenset({"http", "https"})
# the characters of an IPv4 / IPv6 address, with an optional IPv6 zone ("fe80::1%eth0"); "" on a pipe
_PEER = re.compile(r"[0-9A-Fa-f:.]*(?:%[0-9A-Za-z_.\-]+)?")


def to_request(check: Any, *, max_headers: int = 1024, max_header_bytes: int = 1 << 20) -> Request:
    """Build the normalized Request from a CheckRequest.

    :raises Malformed: missing http attributes, oversized or undecodable headers
    """
    attrs = check.attributes
    if not attrs.HasField("request") or not attrs.request.HasField("http"):
        raise Malformed(REQUEST_MALFORMED, "CheckRequest has no attributes.request.http")
    http = attrs.request.http
    method = http.method
    if not method or not method.isascii() or not method.isalpha():
        raise Malformed(REQUEST_MALFORMED, "missing or invalid :method")
    raw_path = http.path
    if not raw_path:
        raise Malformed(REQUEST_MALFORMED, "missing :path")
    if len(raw_path) > max_header_bytes:
        raise Malformed(REQUEST_TOO_LARGE, "request target too large")
    if not valid_target(raw_path):
        raise Malformed(REQUEST_MALFORMED, "invalid :path (not origin-form or absolute-form, or not visible ASCII)")
    host = http.host
    if not valid_authority(host):
        raise Malformed(REQUEST_MALFORMED, "invalid :authority")
    scheme = http.scheme.lower() if http.scheme else "http"
    if scheme not in _SCHEMES:
        raise Malformed(REQUEST_MALFORMED, ":scheme is not http or https")

    headers: dict[str, str] = {}
    total = 0
    if http.HasField("header_map"):
        entries = http.header_map.headers
        if len(entries) > max_headers:
            raise Malformed(REQUEST_TOO_LARGE, f"{len(entries)} header lines")
        for hv in entries:
            name = hv.key
            if name[:1] == ":":
                continue
            raw = hv.raw_value if hv.raw_value else hv.value.encode()
            total += len(name) + len(raw)
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise Malformed(REQUEST_BAD_ENCODING, f"header {name!r} is not valid UTF-8") from None
            name = name.lower()
            value = value.strip(" \t")
            prev = headers.get(name)
            headers[name] = value if prev is None else f"{prev}, {value}"
    else:
        hmap = http.headers
        if len(hmap) > max_headers:
            raise Malformed(REQUEST_TOO_LARGE, f"{len(hmap)} headers")
        for name, value in hmap.items():
            if name[:1] == ":":
                continue
            total += len(name) + len(value)
            headers[name.lower()] = value
    if total > max_header_bytes:
        raise Malformed(REQUEST_TOO_LARGE, f"{total} bytes of headers")
    if not valid_field_names(headers):
        bad = next(n for n in headers if not valid_field_name(n))
        raise Malformed(REQUEST_BAD_ENCODING, f"header name {bad[:64]!r} is not a token")
    for name, value in headers.items():
        if not _field_ok(value):
            raise Malformed(REQUEST_BAD_ENCODING, f"control characters in header {name[:64]!r}")

    path, query, has_query = split_target(raw_path)
    source = attrs.source
    sock = source.address.socket_address
    if _PEER.fullmatch(sock.address) is None:
        # Envoy's peer is an IP address (or none, on a pipe); this one would reach logs and x-authz-client-ip
        raise Malformed(REQUEST_MALFORMED, "source address is not an IP address")
    context = dict(attrs.context_extensions) if attrs.context_extensions else {}
    req_time = attrs.request.time
    return Request(
        method=method,
        path=path,
        query=query,
        has_query=has_query,
        host=host.lower(),
        scheme=scheme,
        protocol=http.protocol,
        headers=headers,
        peer_ip=sock.address,
        peer_port=sock.port_value,
        tls_principal=source.principal,
        tls_certificate=source.certificate,
        sni=attrs.tls_session.sni,
        request_id=http.id,
        time_ms=req_time.seconds * 1000 + req_time.nanos // 1_000_000,
        door="grpc",
        context=context,
    )


def _field_ok(value: str) -> bool:
    # RFC 9110 5.5: CR, LF and NUL are never valid in a field value; other
    # controls (but HTAB) are not either. (Names are tokens: checked together.)
    return value.isprintable() or all(c == "\t" or (c >= " " and c != "\x7f") for c in value)


def _add_headers(field: Any, headers: list[tuple[str, str]], action: int) -> None:
    # Filling submessages in place costs less than half of building
    # HeaderValueOption objects and copying them in (measured with upb).
    for name, value in headers:
        hvo = field.add()
        hvo.header.key = name
        hvo.header.value = value
        hvo.append_action = action


def to_response(decision: Decision) -> Any:
    """Build the CheckResponse Envoy acts on, with the decision in dynamic metadata."""
    resp = CheckResponse()
    ident = decision.identity
    meta = resp.dynamic_metadata.fields
    meta["decision_id"].string_value = decision.id
    meta["outcome"].string_value = decision.outcome.value
    meta["reason"].string_value = decision.reason
    meta["route"].string_value = decision.route
    meta["client_ip"].string_value = ident.client_ip
    if ident.subject:
        meta["subject"].string_value = ident.subject
    if ident.key_id:
        meta["key_id"].string_value = ident.key_id

    if decision.outcome is Outcome.ALLOW:
        resp.status.code = _RPC_OK
        ok = resp.ok_response
        _add_headers(ok.headers, decision.upstream_headers, OVERWRITE)
        if decision.remove_headers:
            ok.headers_to_remove.extend(decision.remove_headers)
        if decision.client_headers:
            _add_headers(ok.response_headers_to_add, decision.client_headers, OVERWRITE)
        return resp

    resp.status.code = _RPC_CODE.get(decision.status, 7)
    resp.status.message = decision.reason
    denied = resp.denied_response
    denied.status.code = decision.status if decision.status in _VALID_STATUS else 403
    # Envoy removes a header named in denied_response.headers before adding the
    # given values, so OVERWRITE and APPEND only differ for repeated names.
    _add_headers(denied.headers, decision.client_headers, APPEND)
    denied.body = decision.body.decode()
    return resp
