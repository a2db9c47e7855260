"""Decisions are data.

One ``Decision`` per request. The headers sent upstream and to the client, the
decision log line, the metrics labels, the admin API's answer and Envoy's
dynamic metadata are all views of this one object.

Reason codes are a stable, documented vocabulary (``REASONS`` below and
docs/reasons.md, which a test keeps in step). A reason names the *first* check
that decided the outcome; the other contributing facts go in ``signals``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import count
from typing import Any


class Outcome(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    LIMIT = "limit"
    CHALLENGE = "challenge"
    ERROR = "error"


class Reason(str):
    """A reason code: the code itself (a ``str``) with its outcome, default status and meaning.

    Stages hold their reasons as module constants made by :func:`reason`, so a
    misspelt code fails when its module loads, never on a request, and deciding
    needs no lookup. Being a ``str``, a reason compares equal to its code and
    serializes as it.
    """

    outcome: Outcome
    status: int
    description: str

    def __new__(cls, code: str, outcome: Outcome, status: int, description: str) -> Reason:
        self = super().__new__(cls, code)
        self.outcome = outcome
        self.status = status
        self.description = description
        return self

    @property
    def code(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"Reason({self.code!r})"

    def __reduce__(self) -> tuple[type[Reason], tuple[str, Outcome, int, str]]:
        return Reason, (self.code, self.outcome, self.status, self.description)


#: Every reason code authz can give, with its outcome and default HTTP status.
#: Each is registered once by the module that owns it (:func:`reason`).
REASONS: dict[str, Reason] = {}


def reason(code: str, outcome: Outcome, status: int, description: str) -> Reason:
    """Register a reason code and return it. A code may be registered only once.

    :raises ValueError: the code is already registered with another meaning
    """
    prev = REASONS.get(code)
    if prev is not None:
        if (prev.outcome, prev.status, prev.description) != (outcome, status, description):
            raise ValueError(f"reason {code!r} registered twice with different meanings")
        return prev
    r = Reason(code, outcome, status, description)
    REASONS[code] = r
    return r


A, D, L, E = Outcome.ALLOW, Outcome.DENY, Outcome.LIMIT, Outcome.ERROR

OK = reason("ok", A, 200, "Every check of the route passed.")
OK_IP_ALLOWLISTED = reason("ok.ip_allowlisted", A, 200, "The client address is on a list whose action is `allow`; later checks were skipped.")
OK_STORE_UNAVAILABLE = reason("ok.store_unavailable", A, 200, "The store failed and every stateful check of the route fails open; allowed, tagged.")
ROUTE_NO_MATCH = reason("route.no_match", D, 403, "No route of the policy matches the request (host, method, path).")
ROUTE_DENY = reason("route.deny", D, 403, "The matched route's action is `deny`.")
IP_DENIED = reason("ip.denied", D, 403, "The client address is on a deny list (the list's label is a signal).")
IP_NOT_ALLOWED = reason("ip.not_allowed", D, 403, "The route admits only listed addresses and the client's is not on any list.")
AUTH_MISSING = reason("auth.missing", D, 401, "The route requires authentication and the request carries no credentials of any accepted kind.")
QUOTA_EXHAUSTED = reason("quota.exhausted", L, 429, "A request quota of the route is used up; Retry-After says when to retry.")
REQUEST_MALFORMED = reason("request.malformed", D, 400, "The request could not be understood: missing attributes, a method that is not letters, a target that is not an origin-form path, a missing, repeated or invalid Host, a header name that is not a token, a control character in a header value, a peer that is not an IP address.")
REQUEST_TOO_LARGE = reason("request.too_large", D, 431, "The request's headers or target exceed the configured limits.")
REQUEST_TIMEOUT = reason("request.timeout", D, 408, "The client did not send a complete request head in time (HTTP door).")
REQUEST_AMBIGUOUS_PATH = reason("request.ambiguous_path", D, 400, "The path could mean something else to the backend than to authz (an encoded `/`, a dot segment, a `;` parameter...; the classes are in the `request.path` signal); the policy's `paths.allow` may accept some classes (docs/policy.md).")
REQUEST_BAD_ENCODING = reason("request.bad_encoding", D, 400, "A header value is not valid UTF-8.")
STORE_UNAVAILABLE = reason("store.unavailable", E, 503, "The state store failed and a stateful check of the route fails closed.")
INTERNAL_ERROR = reason("internal.error", E, 503, "authz hit an unexpected error; it fails closed and logs the decision id.")


def reasons_table() -> str:
    """The vocabulary as a Markdown table (docs/reasons.md, ``authz reasons``)."""
    rows = ["| code | outcome | status | meaning |", "| --- | --- | --- | --- |"]
    for r in sorted(REASONS.values(), key=lambda r: r.code):
        rows.append(f"| `{r.code}` | {r.outcome.value} | {r.status} | {r.description} |")
    return "\n".join(rows) + "\n"


class DecisionIds:
    """Unique, cheap decision ids: a random 48-bit prefix per process and a counter.

    ``7f3a91c0d2e4-00000000001a``: unique across processes and hosts without any
    coordination, sortable within one process, and ~0.2 us to make.
    """

    __slots__ = ("_prefix", "_counter")

    def __init__(self, prefix: str | None = None) -> None:
        self._prefix = prefix if prefix is not None else os.urandom(6).hex()
        self._counter = count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._counter):012x}"


@dataclass(slots=True)
class Identity:
    """Who the request is from, as far as authz could tell.

    ``client_ip`` is the trusted-proxy-aware client address; ``subject`` and
    ``key_id`` are set by an authentication method; ``method`` names it
    (``anonymous``, ``jwt:<provider>``, ``signature:<profile>``). ``tier``
    selects a route's quota tier (``verified-bot`` for an agent that proved
    who it is, an API key's tier); ``bot`` names a verified agent. The
    others are what the identify stage found: the client's country and
    network (a GeoIP database), the session and device ids and the TLS
    fingerprint the policy says where to read.
    """

    client_ip: str = ""
    subject: str = ""
    key_id: str = ""
    method: str = ""
    claims: dict[str, Any] | None = None
    tier: str = ""
    bot: str = ""
    country: str = ""
    asn: int = 0
    session: str = ""
    device: str = ""
    fingerprint: str = ""

    @property
    def client_key(self) -> str:
        """The identity quotas count against: the subject when known, else the address."""
        return f"sub:{self.subject}" if self.subject else f"ip:{self.client_ip}"


@dataclass(slots=True)
class Decision:
    """The verdict on one request, and everything that explains it.

    ``upstream_headers`` go to the backend on allow. ``client_headers`` go to the
    client: on the denial itself, or added to the upstream's response on allow.
    ``remove_headers`` are request headers to strip before the backend sees them.
    """

    id: str
    outcome: Outcome
    status: int
    reason: Reason
    time_ms: int
    route: str = ""
    identity: Identity = field(default_factory=Identity)
    signals: list[tuple[str, str]] = field(default_factory=list)
    upstream_headers: list[tuple[str, str]] = field(default_factory=list)
    client_headers: list[tuple[str, str]] = field(default_factory=list)
    remove_headers: list[str] = field(default_factory=list)
    body: bytes = b""
    duration_us: int = 0
    #: the reputation score (0-100) and its top signals with their share, when the route scores
    score: float | None = None
    top_signals: list[tuple[str, float]] = field(default_factory=list)
    #: for the backend's answer to count as evidence: the scored identities and flags, which the
    #: gRPC door puts in dynamic metadata and Envoy's access log service sends back (adapters/envoy_als.py)
    feedback: tuple[str, ...] = ()
    # facts of the request kept for the log and the admin API (never secrets)
    method: str = ""
    host: str = ""
    #: the path as sent; ``route_path`` is the canonical one routes matched (authz.paths)
    path: str = ""
    door: str = ""
    route_path: str = ""
    #: the proxy's id of the request (x-request-id): joins Envoy's access log to this decision
    request_id: str = ""
    #: what the request said of itself that a replay of the log needs (never a credential):
    #: the user agent (bounded) and which ordinary headers it carried
    user_agent: str = ""
    plain_headers: str = ""
    #: the version of the policy that decided (``Policy.version``): a reload's switch is visible per decision
    policy_version: str = ""

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW

    def to_record(self) -> dict[str, Any]:
        """The decision as one JSON-able dict: the decision log line and the admin view.

        Holds no credential: tokens, signatures and cookies never reach a Decision.
        """
        ident = self.identity
        rec: dict[str, Any] = {
            "id": self.id,
            "time_ms": self.time_ms,
            "outcome": self.outcome.value,
            "status": self.status,
            "reason": self.reason.code,
            "route": self.route,
            "door": self.door,
            "method": self.method,
            "host": self.host,
            "path": self.path,
            "route_path": self.route_path,
            "client_ip": ident.client_ip,
            "duration_us": self.duration_us,
        }
        optional = {
            "subject": ident.subject,
            "key_id": ident.key_id,
            "auth_method": ident.method,
            "tier": ident.tier,
            "bot": ident.bot,
            "country": ident.country,
            "asn": ident.asn,
            "request_id": self.request_id,
            "user_agent": self.user_agent,
            "headers": self.plain_headers,
            "policy_version": self.policy_version,
        }
        rec.update((name, value) for name, value in optional.items() if value)
        if self.score is not None:
            rec["score"] = self.score
            rec["top_signals"] = [[name, share] for name, share in self.top_signals]
        if self.signals:
            rec["signals"] = dict(self.signals)
        return rec
