"""The decision log in Elastic Common Schema field names (``--decision-log-format ecs``).

Each line is one ECS document, so Elastic, OpenSearch and Splunk index it
without a mapping of their own. authz's own facts that ECS has no field for
go under ``authz.*``. The mapping (docs/operations.md lists it):

==========================  ==========================================================
ECS field                   from the decision
==========================  ==========================================================
``@timestamp``              ``time_ms`` (ISO 8601, UTC, milliseconds)
``event.id``                ``id`` (the decision id, as in x-authz-decision-id)
``event.action``            ``outcome``: allow, deny, limit, challenge, error
``event.outcome``           success (allow), failure (deny, limit, challenge), unknown (error)
``event.reason``            ``reason`` (the reason code, docs/reasons.md)
``event.duration``          ``duration_us``, in nanoseconds
``event.kind/category``     event / [web]; ``event.type``: [allowed] or [denied]
``http.request.method``     ``method``
``http.request.id``         ``request_id`` (the proxy's x-request-id)
``http.response.status_code``  ``status`` (what authz answers)
``url.domain``, ``url.port``   ``host``
``url.path``                ``path`` (as sent; ``authz.route_path`` is the canonical one)
``source.ip``               ``client_ip``
``source.geo.country_iso_code``, ``source.as.number``  ``country``, ``asn``
``user.id``                 ``subject``
``user_agent.original``     ``user_agent``
``rule.name``               ``route``
``rule.version``            ``policy_version``
==========================  ==========================================================
"""

from __future__ import annotations

import datetime
from typing import Any

from authz.decision import Decision, Outcome

ECS_VERSION = "8.11.0"
_EVENT_OUTCOME = {Outcome.ALLOW: "success", Outcome.DENY: "failure", Outcome.LIMIT: "failure", Outcome.CHALLENGE: "failure", Outcome.ERROR: "unknown"}


def _timestamp(ms: int) -> str:
    t = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _domain(host: str) -> tuple[str, int | None]:
    if host.startswith("["):
        end = host.find("]")
        port = host[end + 2 :] if end > 0 and host[end + 1 : end + 2] == ":" else ""
        return host[1:end] if end > 0 else host, int(port) if port.isdigit() else None
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name, int(port)
    return host, None


def to_ecs(d: Decision) -> dict[str, Any]:
    """One decision as an ECS document (nested objects). Holds no credential, as ``to_record``."""
    ident = d.identity
    doc: dict[str, Any] = {
        "@timestamp": _timestamp(d.time_ms),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "id": d.id,
            "kind": "event",
            "category": ["web"],
            "type": ["allowed" if d.allowed else "denied"],
            "action": d.outcome.value,
            "outcome": _EVENT_OUTCOME.get(d.outcome, "unknown"),
            "reason": d.reason.code,
            "duration": d.duration_us * 1000,
            "dataset": "authz.decision",
            "module": "authz",
        },
        "http": {"request": {"method": d.method}, "response": {"status_code": d.status}},
        "source": {"ip": ident.client_ip} if ident.client_ip else {},
        "rule": {"name": d.route},
        "service": {"name": "authz"},
    }
    if d.request_id:
        doc["http"]["request"]["id"] = d.request_id
    url: dict[str, Any] = {"path": d.path}
    if d.host:
        domain, port = _domain(d.host)
        url["domain"] = domain
        if port is not None:
            url["port"] = port
    doc["url"] = url
    if d.policy_version:
        doc["rule"]["version"] = d.policy_version
    if ident.country:
        doc["source"].setdefault("geo", {})["country_iso_code"] = ident.country
    if ident.asn:
        doc["source"]["as"] = {"number": ident.asn}
    if ident.subject:
        doc["user"] = {"id": ident.subject}
    if d.user_agent:
        doc["user_agent"] = {"original": d.user_agent}
    own: dict[str, Any] = {"door": d.door, "route_path": d.route_path}
    optional = {
        "key_id": ident.key_id,
        "auth_method": ident.method,
        "tier": ident.tier,
        "bot": ident.bot,
        "headers": d.plain_headers,
    }
    own.update((k, v) for k, v in optional.items() if v)
    if d.score is not None:
        own["score"] = d.score
        own["top_signals"] = [[name, share] for name, share in d.top_signals]
    if d.signals:
        own["signals"] = dict(d.signals)
    doc["authz"] = own
    return doc


__all__ = ["ECS_VERSION", "to_ecs"]


def audit_to_ecs(record: dict[str, Any]) -> dict[str, Any]:
    """An admin audit record (server/admin_auth.py) as an ECS document: ``event.dataset`` authz.audit.

    ``event`` is an ECS object, so the record's ``"event": "audit"`` becomes
    ``event.kind: event`` with ``event.dataset: authz.audit``; the change's own
    details go under ``authz.audit``.
    """
    known = {"event", "time_ms", "who", "auth", "peer", "action", "target"}
    return {
        "@timestamp": _timestamp(int(record.get("time_ms", 0))),
        "ecs": {"version": ECS_VERSION},
        "event": {"kind": "event", "category": ["configuration"], "type": ["change"], "action": record.get("action", ""), "dataset": "authz.audit", "module": "authz"},
        "user": {"name": record.get("who", "")},
        "source": {"address": record.get("peer", "")},
        "service": {"name": "authz"},
        "authz": {"audit": {"target": record.get("target", ""), "auth": record.get("auth", ""), **{k: v for k, v in record.items() if k not in known}}},
    }
