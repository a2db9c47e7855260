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

from collections.abc import Mapping
from types import MappingProxyType

from authz.paths import NO_PROBLEM, PathProblem, canonicalize, fold_case

EMPTY_HEADERS: Mapping[str, str] = MappingProxyType({})


class Request:
    """One request as authz sees it. Build it once; treat it as immutable.

    :param method: request method, upper-case as sent (``GET``)
    :param path: the path part of the request target as sent, not decoded (``/v1/items``);
        what signatures cover. Routes match ``route_path``, its canonical form
        (authz.paths), and ``path_problems`` says what may make it ambiguous.
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
    :param target_problems: what the door found in the raw target's form
        (``authz.paths.target_problems``), added to the path's own problems
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
        "_target_problems",
        "_route_path",
        "_path_problems",
        "_folded",
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
        target_problems: PathProblem = NO_PROBLEM,
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
        self._target_problems = target_problems
        # computed on first use: after the engine's size limits, so an
        # oversized target is refused before any work that scales with it
        self._route_path: str | None = None
        self._path_problems = NO_PROBLEM
        self._folded: str | None = None

    @property
    def route_path(self) -> str:
        """The canonical path routes match (``authz.paths.canonicalize``), computed once."""
        if self._route_path is None:
            self._route_path, problems = canonicalize(self.path)
            # IntFlag arithmetic costs about 0.5 us: skip it in the common case
            self._path_problems = problems | self._target_problems if self._target_problems else problems
        return self._route_path

    @property
    def known_route_path(self) -> str:
        """``route_path`` if something needed it already, else "" (for records of refusals made before routing)."""
        return self._route_path or ""

    @property
    def path_problems(self) -> PathProblem:
        """What may make the path mean something else to a backend (``authz.paths.PathProblem``)."""
        if self._route_path is None:
            _ = self.route_path
        return self._path_problems

    @property
    def folded_route_path(self) -> str:
        """``route_path`` for case-insensitive routes (``authz.paths.fold_case``), computed once."""
        if self._folded is None:
            self._folded = fold_case(self.route_path)
        return self._folded

    @property
    def target(self) -> str:
        """The request target as sent: path plus ``?query`` when there was one."""
        return f"{self.path}?{self.query}" if self.has_query else self.path

    def __repr__(self) -> str:
        # Never the query or a header: either may carry a credential (a token in
        # ?access_token=, an Authorization header, a cookie), and this text reaches logs.
        query = "?..." if self.has_query else ""
        return f"Request({self.method} {self.scheme}://{self.host}{self.path}{query} from {self.peer_ip})"


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
