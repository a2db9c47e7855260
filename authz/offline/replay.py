"""Replay recorded traffic through a policy: what would it have allowed, throttled, challenged, denied?

``authz replay FILE --policy P [--against Q]`` reads JSON lines, either
authz's decision log or Envoy's JSON access log (the format of
``envoy/envoy.yaml``), rebuilds each request, and decides it with the real
pipeline on a fresh memory store, at the recorded times (``clock: request``,
taken as recorded), as fast as the machine goes. It prints the outcomes per
route and per reason, and with ``--against`` the second policy's and every
change between the two.

Neither log holds a credential, so authentication is *taken as recorded*: a
request that was authenticated (by a method the route still accepts) keeps
its subject, key id and tier; one that was refused for its credentials is
refused for the same reason; one that carried none carries none. Everything
else (routes, address lists, quotas, distinct counts, reputation, actions)
is decided afresh. Envoy's log also has the backend's status: a 4xx answer
to a request the replayed policy allows feeds the reputation stage, as
Envoy's access log service does when serving.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from authz.clock import FixedClock
from authz.decision import REASONS, Decision, DecisionIds, Outcome, Reason
from authz.pipeline import Engine
from authz.policy.model import Policy
from authz.request import Request
from authz.stages.authenticate import Authenticator, AuthResult
from authz.stages.context import Ctx
from authz.store.memory import MemoryStore

#: what a report calls each outcome
CLASSES = {Outcome.ALLOW: "allowed", Outcome.LIMIT: "throttled", Outcome.CHALLENGE: "challenged", Outcome.DENY: "denied", Outcome.ERROR: "denied"}
COLUMNS = ("allowed", "throttled", "challenged", "denied")
#: reason families that are the credential's verdict, reproduced as recorded
_AUTH_FAMILIES = frozenset({"jwt", "sig", "agent", "apikey", "auth"})
#: the ordinary headers the decision log names (their values are not logged)
_PLACEHOLDER = "*"
#: a log line longer than this is not a request record
MAX_LINE = 64 * 1024


class ReplayError(Exception):
    """A line that is not a record of either format: named by its line number."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as a log recorded it."""

    line: int
    time_ms: int
    method: str
    host: str
    path: str
    client_ip: str
    user_agent: str = ""
    plain_headers: tuple[str, ...] = ()
    request_id: str = ""
    auth_method: str = ""
    subject: str = ""
    key_id: str = ""
    tier: str = ""
    bot: str = ""
    #: the reason the recorded decision gave ("" for an Envoy line without authz's metadata)
    reason: str = ""
    #: the backend's status (Envoy's log only; 0 when unknown or not the backend's)
    backend_status: int = 0

    def request(self) -> Request:
        headers = {name: _PLACEHOLDER for name in self.plain_headers}
        if self.user_agent:
            headers["user-agent"] = self.user_agent
        if self.request_id:
            headers["x-request-id"] = self.request_id
        return Request(
            method=self.method, path=self.path, host=self.host, headers=headers, peer_ip=self.client_ip,
            request_id=self.request_id, time_ms=self.time_ms, door="replay",
        )  # fmt: skip


def _field(rec: dict[str, Any], name: str) -> str:
    value = rec.get(name)
    if value is None or value == "-":  # Envoy writes "-" (text) or null (JSON) for a missing value
        return ""
    return str(value)


def _envoy_time(text: str, line: int) -> int:
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise ReplayError(f"line {line}: time {text[:40]!r} is not an ISO 8601 time") from None


def parse_record(rec: Any, line: int) -> Recorded:
    """A decision-log record or an Envoy JSON access log line -> Recorded.

    :raises ReplayError: neither format, or a field of the wrong type
    """
    if not isinstance(rec, dict):
        raise ReplayError(f"line {line}: not a JSON object")
    if rec.get("type") == "audit":
        raise ReplayError(f"line {line}: an audit record, not a request")
    try:
        if "outcome" in rec and "time_ms" in rec:  # authz's decision log
            return Recorded(
                line=line, time_ms=int(rec["time_ms"]), method=_field(rec, "method"), host=_field(rec, "host"),
                path=_field(rec, "path") or "/", client_ip=_field(rec, "client_ip"), user_agent=_field(rec, "user_agent"),
                plain_headers=tuple(h for h in _field(rec, "headers").split(",") if h), request_id=_field(rec, "request_id"),
                auth_method=_field(rec, "auth_method"), subject=_field(rec, "subject"), key_id=_field(rec, "key_id"),
                tier=_field(rec, "tier"), bot=_field(rec, "bot"), reason=_field(rec, "reason"),
            )  # fmt: skip
        if "method" in rec and "time" in rec and ("peer" in rec or "client_ip" in rec):  # Envoy's access log
            status = int(_field(rec, "status") or 0)
            backend = status if _field(rec, "details") == "via_upstream" else 0
            return Recorded(
                line=line, time_ms=_envoy_time(_field(rec, "time"), line), method=_field(rec, "method"),
                host=_field(rec, "authority"), path=_field(rec, "path") or "/",
                client_ip=_field(rec, "client_ip") or _field(rec, "peer"), user_agent=_field(rec, "user_agent"),
                request_id=_field(rec, "request_id"), auth_method=_field(rec, "auth"), subject=_field(rec, "subject"),
                key_id=_field(rec, "key_id"), tier=_field(rec, "tier"), reason=_field(rec, "reason"), backend_status=backend,
            )  # fmt: skip
    except (TypeError, ValueError) as exc:
        raise ReplayError(f"line {line}: {type(exc).__name__} in a field") from None
    raise ReplayError(f"line {line}: neither a decision-log record nor an Envoy JSON access log line")


def read_records(lines: Iterable[str]) -> Iterator[Recorded]:
    """Parse JSON lines; blank lines are skipped. :raises ReplayError: naming the line"""
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        if len(text) > MAX_LINE:
            raise ReplayError(f"line {number}: longer than {MAX_LINE} bytes")
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReplayError(f"line {number}: not JSON ({exc.msg})") from None
        yield parse_record(rec, number)


class _AsRecorded(Authenticator):
    """Stands for a route's methods: the credential's verdict as the log recorded it."""

    kind = "recorded"
    name = "replay"

    def __init__(self, labels: frozenset[str]) -> None:
        self.labels = labels
        self.current: Recorded | None = None

    @property
    def label(self) -> str:
        rec = self.current
        return rec.auth_method if rec is not None and rec.auth_method else "recorded"

    def present(self, req: Request) -> bool:
        rec = self.current
        if rec is None:
            return False
        if _auth_refusal(rec) is not None:
            return True
        return bool(rec.auth_method) and rec.auth_method != "anonymous" and rec.auth_method in self.labels

    async def authenticate(self, req: Request, ctx: Ctx) -> AuthResult:
        rec = self.current
        assert rec is not None
        refusal = _auth_refusal(rec)
        if refusal is not None:
            return AuthResult(ok=False, reason=refusal)
        return AuthResult(ok=True, subject=rec.subject, key_id=rec.key_id, tier=rec.tier, bot=rec.bot)


def _auth_refusal(rec: Recorded) -> Reason | None:
    if rec.reason.split(".", 1)[0] not in _AUTH_FAMILIES:
        return None
    return REASONS.get(rec.reason)


@dataclass
class Tally:
    """Outcome counts of one policy over the replayed requests."""

    policy: str
    total: int = 0
    by_class: Counter[str] = field(default_factory=Counter)
    by_route: dict[str, Counter[str]] = field(default_factory=dict)
    by_reason: Counter[str] = field(default_factory=Counter)

    def add(self, d: Decision) -> str:
        cls = CLASSES[d.outcome]
        self.total += 1
        self.by_class[cls] += 1
        self.by_route.setdefault(d.route or "(no route)", Counter())[cls] += 1
        self.by_reason[d.reason.code] += 1
        return cls

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy, "requests": self.total, "outcomes": {c: self.by_class[c] for c in COLUMNS},
            "routes": {r: {c: n[c] for c in COLUMNS} for r, n in sorted(self.by_route.items())},
            "reasons": dict(self.by_reason.most_common()),
        }  # fmt: skip


class Replayer:
    """One policy's engine over recorded traffic: a fresh memory store, the recorded times."""

    def __init__(self, policy: Policy) -> None:
        self.recorded: list[_AsRecorded] = []
        routes = []
        for route in policy.routes:
            stand_in = _AsRecorded(frozenset(m.label for m in route.auth))
            self.recorded.append(stand_in)
            routes.append(dataclasses.replace(route, auth=(stand_in,)) if route.auth else route)
        replayed = dataclasses.replace(policy, routes=tuple(routes), clock="request")
        self.clock = FixedClock(0)
        self.engine = Engine(replayed, MemoryStore(epoch_ms=0), clock=self.clock, ids=DecisionIds("replay"))
        self.engine.trust_request_time = True
        self.engine.hold_tarpits = False
        self.tally = Tally(policy.file)

    async def decide(self, rec: Recorded) -> Decision:
        for stand_in in self.recorded:
            stand_in.current = rec
        self.clock.ms = rec.time_ms  # background records are dated by the engine's clock
        d = await self.engine.decide(rec.request())
        if rec.backend_status and d.allowed and d.feedback:
            self.engine.backend_answered(d.feedback, rec.backend_status)
        await self.engine.settle()  # in order: what one request revealed counts for the next
        self.tally.add(d)
        return d


@dataclass
class Report:
    """A replay's result: one tally per policy, and the changes between the two."""

    tallies: list[Tally]
    changes: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (route, from, to)
    examples: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)  # line numbers

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"policies": [t.to_dict() for t in self.tallies]}
        if len(self.tallies) == 2:
            out["changes"] = [
                {"route": r, "from": a, "to": b, "requests": n, "lines": self.examples.get((r, a, b), [])}
                for (r, a, b), n in self.changes.most_common()
            ]
        return out


async def replay(records: Iterable[Recorded], policy: Policy, against: Policy | None = None) -> Report:
    """Decide every record under ``policy`` (and ``against``), in order."""
    first = Replayer(policy)
    second = Replayer(against) if against is not None else None
    report = Report([first.tally] + ([second.tally] if second is not None else []))
    for rec in records:
        a = await first.decide(rec)
        if second is None:
            continue
        b = await second.decide(rec)
        ca, cb = CLASSES[a.outcome], CLASSES[b.outcome]
        if ca != cb:
            key = (b.route or a.route or "(no route)", ca, cb)
            report.changes[key] += 1
            lines = report.examples.setdefault(key, [])
            if len(lines) < 5:
                lines.append(rec.line)
    return report


def print_report(report: Report, out: TextIO) -> None:
    """The human table."""
    for tally in report.tallies:
        out.write(f"{tally.policy}: {tally.total} requests\n")
        width = max([len("route"), *(len(r) for r in tally.by_route)])
        out.write(f"  {'route':<{width}}  " + "  ".join(f"{c:>10}" for c in COLUMNS) + "\n")
        for route, counts in sorted(tally.by_route.items()):
            out.write(f"  {route:<{width}}  " + "  ".join(f"{counts[c]:>10}" for c in COLUMNS) + "\n")
        out.write(f"  {'total':<{width}}  " + "  ".join(f"{tally.by_class[c]:>10}" for c in COLUMNS) + "\n")
        out.write("  by reason: " + ", ".join(f"{code} {n}" for code, n in tally.by_reason.most_common()) + "\n")
    if len(report.tallies) == 2:
        changed = sum(report.changes.values())
        out.write(f"changes from {report.tallies[0].policy} to {report.tallies[1].policy}: {changed} requests\n")
        for (route, a, b), n in report.changes.most_common():
            lines = ", ".join(str(x) for x in report.examples.get((route, a, b), []))
            out.write(f"  {route}: {a} -> {b}: {n} (lines {lines})\n")


__all__ = ["Recorded", "ReplayError", "Replayer", "Report", "Tally", "parse_record", "print_report", "read_records", "replay"]
