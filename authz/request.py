"""The normalized, read-only view of one request.

Every door (Envoy gRPC ext_authz, the HTTP door) builds exactly one ``Request``
per check and hands it to the engine; no stage ever sees the wire format. The
body is never part of it: payload integrity is covered by a signed
``Content-Digest`` header instead.

Header names are lower-cased. Repeated field lines are joined with ", " as
RFC 9110 section 5.3 says (Envoy's ``headers`` map joins them with "," only, so
the gRPC adapter prefers ``header_map`` when Envoy sends it). Pseudo-headers are
not in ``headers``; their facts are the typed fields below.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from types import MappingProxyType

EMPTY_HEADERS: Mapping[str, str] = MappingProxyType({})


class Request:
    """One request as authz sees it. Build it once; treat it as immutable.

    :param method: request method, upper-case as sent (``GET``)
    :param path: the path part of the request target, not decoded (``/v1/items``)
    :param query: the query part without the ``?``, not decoded, "" if none
    :param has_query: whether the target had a ``?`` at all (RFC 9421 ``@query``)
    :param host: authority as sent, lower-cased
    :param scheme: ``http`` or ``https``
    :param protocol: ``HTTP/1.1``, ``HTTP/2``... or "" when unknown
    :param headers: lower-cased names to values, repeated lines joined with ", "
    :param peer_ip: the L4 address of the connection the request came on
    :param peer_port: its port, 0 when unknown
    :param tls_principal: the client certificate's URI SAN, DNS SAN or subject ("" without mTLS)
    :param tls_certificate: the client's leaf certificate, PEM ("" unless the proxy sent it)
    :param sni: TLS server name ("" unless sent)
    :param request_id: the proxy's id of the request (Envoy stream id, x-request-id)
    :param time_ms: when the proxy received the request, ms since the epoch (0 if unknown)
    :param door: which adapter built it: ``grpc`` or ``http``
    :param context: string pairs the proxy attached (Envoy ``context_extensions``)
    """

    __slots__ = (
        "method",
        "path",
        "query",
        "has_query",
        "host",
        "scheme",
        "protocol",
        "headers",
        "peer_ip",
        "peer_port",
        "tls_principal",
        "tls_certificate",
        "sni",
        "request_id",
        "time_ms",
        "door",
        "context",
    )

    def __init__(
        self,
        *,
        method: str,
        path: str,
        query: str = "",
        has_query: bool = False,
        host: str = "",
        scheme: str = "http",
        protocol: str = "",
        headers: Mapping[str, str] = EMPTY_HEADERS,
        peer_ip: str = "",
        peer_port: int = 0,
        tls_principal: str = "",
        tls_certificate: str = "",
        sni: str = "",
        request_id: str = "",
        time_ms: int = 0,
        door: str = "grpc",
        context: Mapping[str, str] = EMPTY_HEADERS,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.has_query = has_query
        self.host = host
        self.scheme = scheme
        self.protocol = protocol
        self.headers = headers
        self.peer_ip = peer_ip
        self.peer_port = peer_port
        self.tls_principal = tls_principal
        self.tls_certificate = tls_certificate
        self.sni = sni
        self.request_id = request_id
        self.time_ms = time_ms
        self.door = door
        self.context = context

    @property
    def target(self) -> str:
        """The request target as sent: path plus ``?query`` when there was one."""
        return f"{self.path}?{self.query}" if self.has_query else self.path

    def __repr__(self) -> str:
        # Never the query or a header: either may carry a credential (a token in
        # ?access_token=, an Authorization header, a cookie), and this text reaches logs.
        query = "?..." if self.has_query else ""
        return f"Request({self.method} {self.scheme}://{self.host}{self.path}{query} from {self.peer_ip})"


# RFC 9112 3.2: origin-form, or absolute-form with the schemes authz serves; RFC 3986
# allows only visible ASCII in a target (anything else arrives percent-encoded)
_TARGET = re.compile(r"(?:/|https?://)[\x21-\x7e]*")
# RFC 3986 3.2.2 and 3.2.3: a reg-name or IPv4 address (unreserved, pct-encoded,
# sub-delims) or a bracketed IP literal, then an optional port; no space, "/", "@"
_AUTHORITY = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]*|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")
# RFC 9110 5.1 / 5.6.2: a field name is a token; names are tested together, one per line
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKENS = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*")


def valid_target(target: str) -> bool:
    """Whether a raw request target is origin-form or http(s) absolute-form, of visible ASCII only."""
    return _TARGET.fullmatch(target) is not None


def valid_authority(host: str) -> bool:
    """Whether a Host / :authority value is an authority (empty is allowed: HTTP/1.0 may omit it)."""
    return _AUTHORITY.fullmatch(host) is not None


def valid_field_name(name: str) -> bool:
    return _TOKEN.fullmatch(name) is not None


def valid_field_names(names: Collection[str]) -> bool:
    """Whether every name is a token, in one regex call (no names: True; one empty name: False)."""
    return not names or _TOKENS.fullmatch("\n".join(names)) is not None


def split_target(target: str) -> tuple[str, str, bool]:
    """Split a raw request target into (path, query, has_query). No decoding.

    An absolute-form target (``http://host/p?q``) keeps only its path and query;
    an empty path becomes ``/``.
    """
    if target.startswith(("http://", "https://")):
        slash = target.find("/", target.find("//") + 2)
        target = target[slash:] if slash >= 0 else "/"
    path, sep, query = target.partition("?")
    if "#" in query:
        query = query.partition("#")[0]
    elif not sep and "#" in path:
        path = path.partition("#")[0]
    return path or "/", query, bool(sep)


def join_field_lines(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Combine (lower-cased name, value) field lines into one value per name.

    RFC 9110 5.3: a recipient may combine repeated lines into one comma-separated
    list, in order, with ", " between values (which is also what RFC 9421 2.1
    signs). Values are stripped of leading and trailing whitespace.
    """
    out: dict[str, str] = {}
    for name, value in pairs:
        value = value.strip(" \t")
        prev = out.get(name)
        out[name] = value if prev is None else f"{prev}, {value}"
    return out
