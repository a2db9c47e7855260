"""The HTTP door: an HTTP authorization request -> Request, Decision -> HTTP answer.

A bare ASGI callable (no framework on the hot path). Each caller speaks its own
convention, chosen per path prefix of the authorization request (``Modes``):

``envoy``
    Envoy ``http_service`` ext_authz. The authorization request *is* the
    original request: its method, its target after the configured prefix
    (Envoy's ``path_prefix``), and the headers Envoy's ``allowed_headers``
    let through. ``Host`` is the original authority.
``forward-auth``
    Traefik ``forwardAuth``, Caddy ``forward_auth``, Kong plugins calling an
    auth URL. The original request line comes in ``X-Forwarded-Method``,
    ``X-Forwarded-Uri``, ``X-Forwarded-Host`` and ``X-Forwarded-Proto``.
``nginx``
    nginx ``auth_request``: ``X-Original-Method`` and ``X-Original-URI``
    (plus ``X-Forwarded-Host`` / ``X-Forwarded-Proto`` when the config sets
    them, else ``Host`` and ``http``). nginx accepts only 2xx, 401 and 403
    from an auth subrequest, so any other refusal is answered 403 with the
    real status in ``x-authz-status`` for the nginx config to restore.
``auto``
    picks per request: ``X-Original-URI`` -> nginx, ``X-Forwarded-Uri`` ->
    forward-auth, else envoy. Only safe behind proxies that overwrite those
    headers; prefer a fixed convention per prefix.

What the normalized ``Request`` contains, whatever the convention: method,
path, query, host and scheme of the *original* request; every header of the
authorization request *except* the ones that only carry the convention or
the authorization hop itself (``x-forwarded-method``, ``x-forwarded-uri``,
``x-forwarded-host``, ``x-forwarded-proto`` in forward-auth and nginx mode,
``x-forwarded-port`` / ``-prefix`` / ``-server``, ``x-original-uri``,
``x-original-method``, ``host``, ``content-length``, hop-by-hop headers and
``x-envoy-expected-rq-timeout-ms``). So a signature can never cover a header
the client did not send. ``x-forwarded-for`` stays: the identify stage reads
it under the policy's trusted-proxy rules, with ``peer_ip`` the socket peer
(the proxy). In envoy mode an ``x-envoy-external-address`` is used as the
forwarded-for value when no ``x-forwarded-for`` came, under the same rules.

Answers: allow -> 200 with the upstream ``x-authz-*`` headers and the
client headers (``ratelimit``, ``ratelimit-policy``) under their own names;
in envoy mode ``x-envoy-auth-headers-to-remove`` lists the client-sent
headers authz did not set (any ``x-authz-*``, any claim header of the
policy) for Envoy to strip. Deny / limit -> the decision's status, client
headers and small JSON body. A request the door cannot read gets a deny
with a reason from ``engine.malformed``, never an exception.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from authz.adapters import Malformed, check_host, check_method, check_target, peer_address
from authz.decision import REQUEST_BAD_ENCODING, REQUEST_MALFORMED, Decision, Outcome
from authz.paths import target_problems
from authz.pipeline import Engine
from authz.request import Request, split_target

log = logging.getLogger("authz.adapters")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

ENVOY = "envoy"
FORWARD_AUTH = "forward-auth"
NGINX = "nginx"
AUTO = "auto"
MODES = (ENVOY, FORWARD_AUTH, NGINX, AUTO)

#: the default conventions: one path prefix per caller
DEFAULT_MODES = "/envoy=envoy,/forward-auth=forward-auth,/nginx=nginx"
#: answered when no convention prefix claims the path
HEALTH_PATH = b"/healthz"
#: the scope key of the raw request target, when the server provides it (authz/server/http.py does)
RAW_TARGET = "authz.raw_target"

# headers of the authorization hop itself, never part of the original request
_HOP = frozenset(
    {
        "host",
        "content-length",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
        "x-envoy-expected-rq-timeout-ms",
    }
)
# headers that carry the forward-auth / nginx conventions
_CONVENTION = frozenset(
    {
        "x-forwarded-method",
        "x-forwarded-uri",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-original-uri",
        "x-original-method",
    }
)
_DROP_ENVOY = _HOP
# convention fields that carry one fact each: a second line is refused, not joined
_ONE_LINE = frozenset({"host", "x-forwarded-method", "x-forwarded-uri", "x-forwarded-host", "x-original-uri", "x-original-method"})
_DROP_FORWARDED = _HOP | _CONVENTION

# RFC 9110 5.5 / uvicorn's own check: no CTLs but HTAB in a field value
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 9110 5.1: every name authz writes is a token (one match over all names joined with LF)
_FIELD_NAMES = re.compile(b"[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:\n[!#$%&'*+.^_`|~0-9A-Za-z-]+)*")
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_NGINX_STATUSES = (401, 403)
_VERSIONS = frozenset({"1.0", "1.1"})


@dataclass(frozen=True, slots=True)
class ModeRule:
    prefix: bytes
    mode: str


class Modes:
    """Which convention applies to an authorization request path.

    Parsed from ``[PREFIX=]MODE[,...]``: ``envoy`` alone applies to every path;
    ``/envoy=envoy,/nginx=nginx`` picks by path prefix (whole segments, the
    longest wins). In envoy mode the prefix is removed from the path, as Envoy's
    ``path_prefix`` added it.
    """

    def __init__(self, rules: list[ModeRule]) -> None:
        self.rules = sorted(rules, key=lambda r: len(r.prefix), reverse=True)

    @classmethod
    def parse(cls, spec: str) -> Modes:
        """:raises ValueError: with a message naming the bad entry"""
        rules: list[ModeRule] = []
        seen: set[bytes] = set()
        for entry in spec.split(","):
            entry = entry.strip()
            if not entry:
                continue
            prefix, sep, mode = entry.rpartition("=")
            prefix = prefix.strip().rstrip("/") if sep else ""
            mode = mode.strip()
            if mode not in MODES:
                raise ValueError(f"{entry!r}: mode must be one of {', '.join(MODES)}")
            if prefix and (not prefix.startswith("/") or not prefix.isascii() or "?" in prefix or " " in prefix):
                raise ValueError(f"{entry!r}: a prefix is an ASCII path starting with '/'")
            raw = prefix.encode()
            if raw in seen:
                raise ValueError(f"{entry!r}: prefix {prefix or '(every path)'} given twice")
            seen.add(raw)
            rules.append(ModeRule(raw, mode))
        if not rules:
            raise ValueError("no convention given")
        return cls(rules)

    def match(self, path: bytes) -> tuple[str, bytes] | None:
        """The mode for ``path`` and the path with the prefix removed, or None."""
        for rule in self.rules:
            p = rule.prefix
            if not p:
                return rule.mode, path
            if path.startswith(p) and (len(path) == len(p) or path[len(p)] in b"/?"):
                rest = path[len(p) :]
                return rule.mode, rest if rest[:1] == b"/" else b"/" + rest
        return None

    def describe(self) -> str:
        return ",".join(f"{r.prefix.decode()}={r.mode}" if r.prefix else r.mode for r in self.rules)


_UNREADABLE = Request(method="", path="", door="http")


class HttpDoor:
    """The ASGI callable. One instance per server; the engine may be swapped on reload.

    :param engine: decides
    :param modes: the convention per path prefix
    :param serving: tells the health endpoint whether to answer 200 or 503
    :param components: the health of each component (the store), shown in the health answer
    """

    def __init__(
        self,
        engine: Engine,
        modes: Modes,
        serving: Callable[[], bool] = lambda: True,
        components: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.engine = engine
        self.modes = modes
        self.serving = serving
        self.components = components

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        engine = self.engine
        raw_target: bytes = scope.get(RAW_TARGET) or _target_of(scope)
        path_end = raw_target.find(b"?")
        raw_path = raw_target if path_end < 0 else raw_target[:path_end]
        found = self.modes.match(raw_path)
        if found is None:
            if raw_path == HEALTH_PATH and scope["method"] in ("GET", "HEAD"):
                await self._health(send)
                return
            decision = engine.malformed(
                _UNREADABLE, REQUEST_MALFORMED, "no HTTP convention is configured for this path"
            )
            await answer(send, decision, ENVOY)
            return
        mode, rest = found
        try:
            req = to_request(scope, mode, rest + raw_target[len(raw_path) :] if mode == ENVOY else b"")
        except Malformed as exc:
            decision = engine.malformed(_UNREADABLE, exc.reason, exc.detail)
        else:
            decision = await engine.decide(req)
        await answer(send, decision, mode if mode != AUTO else _auto_mode(scope))

    async def _health(self, send: Send) -> None:
        # 200 while authz answers checks; a failing store is a component's state, not a reason
        # to take authz out of rotation (the routes' on_store_error decide what it means)
        ok = self.serving()
        body = json.dumps(
            {"status": "serving" if ok else "not_serving", "components": self.components()}, separators=(",", ":")
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200 if ok else 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"cache-control", b"no-store"),
                    (b"content-length", b"%d" % len(body)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    # Nothing to set up: the engine belongs to the process, not to the server.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _target_of(scope: Scope) -> bytes:
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    qs: bytes = scope.get("query_string", b"")
    return raw + b"?" + qs if qs else raw


def _auto_mode(scope: Scope) -> str:
    for name, _ in scope["headers"]:
        if name == b"x-original-uri":
            return NGINX
        if name == b"x-forwarded-uri":
            return FORWARD_AUTH
    return ENVOY


def _headers(raw: list[tuple[bytes, bytes]], drop: frozenset[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Decode the field lines: (kept headers, dropped convention headers).

    Names arrive lower-cased (ASGI says so). Repeated lines are joined with
    ", " (RFC 9110 5.3), as in the gRPC door, except for the fields that
    carry one fact (Host, the convention's method, target and host): a
    second line of those is refused. This runs for every request: one loop,
    and one control-character search over all values at the end (control
    characters are ``request.malformed``, as in the gRPC door, before
    non-UTF-8 bytes are ``request.bad_encoding``).
    """
    kept: dict[str, str] = {}
    conv: dict[str, str] = {}
    values = []
    undecodable = b""
    for bname, bvalue in raw:
        values.append(bvalue)
        name = bname.decode("latin-1")
        try:
            value = bvalue.decode("utf-8").strip(" \t")
        except UnicodeDecodeError:
            undecodable = undecodable or bname
            value = ""
        out = conv if name in drop else kept
        prev = out.get(name)
        if prev is None:
            out[name] = value
        elif out is conv and name in _ONE_LINE:
            raise Malformed(REQUEST_MALFORMED, f"more than one {name} header")
        else:
            out[name] = f"{prev}, {value}"
    if _BAD_VALUE.search(b"\t".join(values)):
        raise Malformed(REQUEST_MALFORMED, "control characters in a header value")
    if undecodable:
        raise Malformed(REQUEST_BAD_ENCODING, f"header {undecodable[:64].decode('latin-1')!r} is not valid UTF-8")
    return kept, conv


def to_request(scope: Scope, mode: str, envoy_target: bytes = b"") -> Request:
    """Build the normalized Request from one ASGI HTTP scope under a convention.

    :param envoy_target: in envoy mode, the original target (prefix removed)
    :raises Malformed: missing or invalid convention headers, bad encoding
    """
    if mode == AUTO:
        mode = _auto_mode(scope)
    if scope.get("http_version", "1.1") not in _VERSIONS:
        raise Malformed(REQUEST_MALFORMED, "not an HTTP/1.0 or HTTP/1.1 request")
    client = scope.get("client") or ("", 0)
    peer_ip = peer_address(client[0])
    if mode == ENVOY:
        headers, conv = _headers(scope["headers"], _DROP_ENVOY)
        method = scope["method"]
        try:
            target = envoy_target.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed(REQUEST_BAD_ENCODING, "the request target is not UTF-8") from None
        host = conv.get("host", "")
        scheme = _scheme(headers.get("x-forwarded-proto", "http"))
        if "x-forwarded-for" not in headers:
            external = headers.get("x-envoy-external-address")
            if external:
                headers["x-forwarded-for"] = external
    else:
        headers, conv = _headers(scope["headers"], _DROP_FORWARDED)
        if mode == FORWARD_AUTH:
            method = conv.get("x-forwarded-method", "")
            target = conv.get("x-forwarded-uri", "")
            missing = "X-Forwarded-Method" if not method else "X-Forwarded-Uri"
        else:
            method = conv.get("x-original-method", "")
            target = conv.get("x-original-uri", "")
            missing = "X-Original-Method" if not method else "X-Original-URI"
        if not method or not target:
            raise Malformed(REQUEST_MALFORMED, f"{mode}: no {missing} header")
        host = conv.get("x-forwarded-host") or conv.get("host", "")
        scheme = _scheme(conv.get("x-forwarded-proto", "http"))
    # the checks the gRPC door makes, with the same reasons
    check_method(method)
    check_target(target)
    check_host(host)
    for name in ("host", "x-forwarded-host"):
        # the Host not chosen must be one authority too (repeated lines were joined with ", ")
        other = conv.get(name)
        if other is not None and other != host:
            check_host(other)
    # RFC 9112 6.1: a request whose last transfer coding is not chunked has no knowable length
    coding = conv.get("transfer-encoding")
    if coding is not None and coding.rpartition(",")[2].strip(" \t").lower() != "chunked":
        raise Malformed(REQUEST_MALFORMED, "Transfer-Encoding does not end with chunked")
    path, query, has_query = split_target(target)
    return Request(
        method=method,
        path=path,
        query=query,
        has_query=has_query,
        host=host.lower(),
        scheme=scheme,
        protocol="",
        headers=headers,
        peer_ip=peer_ip,
        peer_port=client[1] or 0,
        request_id=headers.get("x-request-id", ""),
        door="http",
        # the arrival time, the HTTP door's counterpart of Envoy's attributes.request.time
        time_ms=time.time_ns() // 1_000_000,
        target_problems=target_problems(target),
    )


def _scheme(value: str) -> str:
    # a proxy chain may list several: the first is the client's
    # strip " \t" only: str.strip() would also remove U+2028, U+0085... and accept "\u2028http"
    first = value.partition(",")[0].strip(" \t").lower()
    scheme = _SCHEMES.get(first)
    if scheme is None:
        raise Malformed(REQUEST_MALFORMED, "X-Forwarded-Proto is not http or https")
    return scheme


def render(decision: Decision, mode: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The HTTP answer for a decision under a convention: (status, headers, body)."""
    if decision.outcome is Outcome.ALLOW:
        headers = [(n.encode(), v.encode()) for n, v in decision.upstream_headers]
        headers += [(n.encode(), v.encode()) for n, v in decision.client_headers]
        if decision.remove_headers and mode == ENVOY:
            headers.append((b"x-envoy-auth-headers-to-remove", ", ".join(decision.remove_headers).encode()))
        headers.append((b"content-length", b"0"))
        status, body = 200, b""
    else:
        status = decision.status
        body = decision.body
        headers = [(n.encode(), v.encode()) for n, v in decision.client_headers]
        if mode == NGINX:
            headers.append((b"x-authz-status", b"%d" % status))
            headers.append((b"x-authz-reason", decision.reason.encode()))
            if status not in _NGINX_STATUSES:
                status = 403
        headers.append((b"content-length", b"%d" % len(body)))
    # never let a value from a token or a list, or a bad name (one authz sets or
    # names in x-envoy-auth-headers-to-remove), split the response
    name_list = [n for n, _ in headers] + [n.encode() for n in decision.remove_headers]
    names = b"\n".join(name_list)
    if (
        _BAD_VALUE.search(b"\t".join([v for _, v in headers]))
        or _FIELD_NAMES.fullmatch(names) is None
        or names.count(b"\n") != len(name_list) - 1  # a name holding the separator
    ):
        return _unsafe(decision)
    return status, headers, body


def _unsafe(decision: Decision) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    log.error("decision %s: a header would carry a control character or a bad name; answered 503 internal.error", decision.id)
    body = b'{"error":"internal.error","decision_id":"%s"}' % decision.id.encode()
    return (
        503,
        [
            (b"x-authz-decision-id", decision.id.encode()),
            (b"content-type", b"application/json"),
            (b"cache-control", b"no-store"),
            (b"content-length", b"%d" % len(body)),
        ],
        body,
    )


async def answer(send: Send, decision: Decision, mode: str) -> None:
    status, headers, body = render(decision, mode)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def render_raw(decision: Decision, mode: str = ENVOY) -> bytes:
    """The whole HTTP/1.1 response, for refusals made below the ASGI layer (the connection closes)."""
    status, headers, body = render(decision, mode)
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, _PHRASES.get(status, b"Refused"))]
    lines += [b"%s: %s\r\n" % (n, v) for n, v in headers]
    lines.append(b"connection: close\r\n\r\n")
    lines.append(body)
    return b"".join(lines)


_PHRASES = {
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    408: b"Request Timeout",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}
