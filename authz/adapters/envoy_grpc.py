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

import logging
import re
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2

from authz.adapters import Malformed, check_host, check_method, check_target, fields_safe, peer_address
from authz.decision import (
    INTERNAL_ERROR,
    REQUEST_BAD_ENCODING,
    REQUEST_MALFORMED,
    REQUEST_TOO_LARGE,
    Decision,
    Outcome,
)
from authz.paths import target_problems
from authz.request import Request, split_target
from authz.stages.respond import DECISION_ID

log = logging.getLogger("authz.adapters")

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


def to_request(check: Any, *, max_headers: int = 1024, max_header_bytes: int = 1 << 20) -> Request:
    """Build the normalized Request from a CheckRequest.

    :raises Malformed: missing http attributes, oversized or undecodable headers
    """
    attrs = check.attributes
    if not attrs.HasField("request") or not attrs.request.HasField("http"):
        raise Malformed(REQUEST_MALFORMED, "CheckRequest has no attributes.request.http")
    http = attrs.request.http
    method = http.method
    raw_path = http.path
    host = http.host
    head = len(raw_path) + len(host)  # counted with the headers, as the HTTP door counts its head
    if head > max_header_bytes:
        raise Malformed(REQUEST_TOO_LARGE, "request target and host too large")
    if http.HasField("header_map"):
        headers = _header_map(http.header_map.headers, host, max_headers, max_header_bytes - head)
    else:
        headers = _headers_map(http.headers, host, max_headers, max_header_bytes - head)
    # the checks the HTTP door's parser and adapter make, with the same reasons
    check_method(method)
    check_target(raw_path)
    check_host(host)
    scheme = http.scheme.lower() if http.scheme else "http"
    if scheme not in _SCHEMES:
        raise Malformed(REQUEST_MALFORMED, ":scheme is not http or https")

    path, query, has_query = split_target(raw_path)
    source = attrs.source
    peer_ip, peer_port = _source(source)
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
        peer_ip=peer_ip,
        peer_port=peer_port,
        tls_principal=source.principal,
        tls_certificate=source.certificate,
        sni=attrs.tls_session.sni,
        request_id=http.id,
        time_ms=req_time.seconds * 1000 + req_time.nanos // 1_000_000,
        door="grpc",
        context=context,
        target_problems=target_problems(raw_path),
    )


def _source(source: Any) -> tuple[str, int]:
    """(address, port) of ``attributes.source``: an IP address, canonical.

    A unix-socket (``pipe``) or internal source has no IP address, and authz
    identifies clients by address (lists, quotas, ``x-authz-client-ip``): such a
    check is refused rather than decided for an empty identity.
    """
    addr = source.address
    if addr.HasField("pipe"):
        raise Malformed(REQUEST_MALFORMED, "the source is a unix socket (pipe), not an IP address")
    sock = addr.socket_address
    return peer_address(sock.address), sock.port_value


#: RFC 9110 5.5: no control character but HTAB in a field value (CR, LF and NUL least of all)
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
#: RFC 9110 5.1: field names are tokens; checked over all names joined with ","
_NAMES = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:,[!#$%&'*+.^_`|~0-9A-Za-z-]+)*")
#: the names Envoy carries the authority under (HTTP/1 Host becomes :authority)
_AUTHORITY = (":authority", "host")


def _header_map(entries: Any, host: str, max_headers: int, max_header_bytes: int) -> dict[str, str]:
    """``header_map`` (raw bytes, one entry per field line) -> lower-cased names, lines joined with ", ".

    Pseudo-headers and ``host`` are left out, as in the HTTP door: their
    facts are the typed fields, and an authority entry that repeats or
    disagrees with ``http.host`` is refused. The target and the authority
    count towards the size bound (the HTTP door counts the request line and
    Host too). One search for control characters over all values and one
    match of all names, after the loop.
    """
    if len(entries) > max_headers:
        raise Malformed(REQUEST_TOO_LARGE, f"{len(entries)} header lines")
    headers: dict[str, str] = {}
    raws: list[bytes] = []
    total = 0
    host_raw = host.encode().lower()
    authorities = hosts = 0
    undecodable = ""
    for hv in entries:
        name = hv.key
        if name[:1] == ":":
            if name == ":authority":
                authorities += 1
                if (hv.raw_value or hv.value.encode()).lower() != host_raw:
                    raise Malformed(REQUEST_MALFORMED, "Host and :authority disagree")
            continue
        raw = hv.raw_value or hv.value.encode()
        total += len(name) + len(raw)
        name = name.lower()
        if name == "host":
            hosts += 1
            if raw.lower() != host_raw:
                raise Malformed(REQUEST_MALFORMED, "Host and :authority disagree")
            continue
        raws.append(raw)
        try:
            value = raw.decode("utf-8").strip(" \t")
        except UnicodeDecodeError:
            undecodable = undecodable or name
            value = ""
        prev = headers.get(name)
        headers[name] = value if prev is None else f"{prev}, {value}"
    if total > max_header_bytes:
        raise Malformed(REQUEST_TOO_LARGE, f"{total} bytes of headers")
    if authorities > 1 or hosts > 1:
        raise Malformed(REQUEST_MALFORMED, "more than one Host")
    _check_fields(headers, raws)
    if undecodable:
        raise Malformed(REQUEST_BAD_ENCODING, f"header {undecodable[:64]!r} is not valid UTF-8")
    return headers


def _headers_map(hmap: Any, host: str, max_headers: int, max_header_bytes: int) -> dict[str, str]:
    """The older ``headers`` map (lines already joined with ","), under the same rules."""
    if len(hmap) > max_headers:
        raise Malformed(REQUEST_TOO_LARGE, f"{len(hmap)} headers")
    headers: dict[str, str] = {}
    total = 0
    hosts = 0
    for name, value in hmap.items():
        lname = name.lower()
        if lname in _AUTHORITY:
            hosts += lname == "host"
            if value.lower() != host.lower():
                raise Malformed(REQUEST_MALFORMED, "Host and :authority disagree")
        if name[:1] == ":" or lname == "host":
            continue
        total += len(name) + len(value)
        headers[lname] = value
    if total > max_header_bytes:
        raise Malformed(REQUEST_TOO_LARGE, f"{total} bytes of headers")
    if hosts > 1:
        raise Malformed(REQUEST_MALFORMED, "more than one Host")
    _check_fields(headers, [v.encode() for v in headers.values()])
    return headers


def _check_fields(headers: dict[str, str], raws: list[bytes]) -> None:
    joined = ",".join(headers)
    # the count: a name holding the separator itself must not pass as two names
    if headers and (_NAMES.fullmatch(joined) is None or joined.count(",") != len(headers) - 1):
        bad = next((n for n in headers if _NAMES.fullmatch(n) is None or "," in n), "")
        raise Malformed(REQUEST_MALFORMED, f"header name {bad[:64]!r} is not a token")
    if _BAD_VALUE.search(b"\t".join(raws)):
        raise Malformed(REQUEST_MALFORMED, "control characters in a header value")


def _add_headers(field: Any, headers: list[tuple[str, str]], action: int) -> None:
    # Filling submessages in place costs less than half of building
    # HeaderValueOption objects and copying them in (measured with upb).
    for name, value in headers:
        hvo = field.add()
        hvo.header.key = name
        hvo.header.value = value
        hvo.append_action = action


def to_response(decision: Decision) -> Any:
    """Build the CheckResponse Envoy acts on, with the decision in dynamic metadata.

    Every header name and value goes through ``fields_safe`` first; a decision
    that would put a control character or a non-token name on the wire is
    answered 503 ``internal.error`` with nothing but the decision id.
    """
    if not fields_safe(decision.upstream_headers + decision.client_headers, decision.remove_headers):
        return _unsafe(decision)
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
    if ident.method:
        meta["auth"].string_value = ident.method
    if ident.tier:
        meta["tier"].string_value = ident.tier

    if decision.outcome is Outcome.ALLOW:
        if decision.feedback:
            # the access log service hands it back with the backend's status (adapters/envoy_als.py)
            meta["feedback"].list_value.extend(decision.feedback)
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


def _unsafe(decision: Decision) -> Any:
    """The fail-closed answer when a decision's headers cannot be written (as the HTTP door's)."""
    log.error("decision %s: a header would carry a control character or a bad name; answered 503 internal.error", decision.id)
    resp = CheckResponse()
    meta = resp.dynamic_metadata.fields
    meta["decision_id"].string_value = decision.id
    meta["outcome"].string_value = INTERNAL_ERROR.outcome.value
    meta["reason"].string_value = INTERNAL_ERROR
    resp.status.code = _RPC_CODE[INTERNAL_ERROR.status]
    resp.status.message = INTERNAL_ERROR
    denied = resp.denied_response
    denied.status.code = INTERNAL_ERROR.status
    _add_headers(
        denied.headers,
        [(DECISION_ID, decision.id), ("content-type", "application/json"), ("cache-control", "no-store")],
        APPEND,
    )
    denied.body = '{"error":"%s","decision_id":"%s"}' % (INTERNAL_ERROR, decision.id)
    return resp
