"""The last check of each door: no header authz writes carries a control character or a bad name.

The same table of decisions through both doors' renderers: whatever put the
bad field there (a claim, a list, a bug), the answer is a 503
``internal.error`` carrying only the decision id, in every convention.
"""

from __future__ import annotations

import json

import pytest

from authz.adapters import envoy_grpc
from authz.adapters import http as door
from authz.decision import Decision, Identity, Outcome

ALLOW = dict(id="d-7", outcome=Outcome.ALLOW, status=200, reason="ok", time_ms=0, identity=Identity(client_ip="127.0.0.1"))
DENY = dict(id="d-7", outcome=Outcome.DENY, status=401, reason="auth.missing", time_ms=0, identity=Identity(), body=b"{}")

CASES = [
    ("cr-lf-in-upstream-value", {**ALLOW, "upstream_headers": [("x-authz-subject", "a\r\nx-authz-role: admin")]}),
    ("lf-in-upstream-value", {**ALLOW, "upstream_headers": [("x-authz-subject", "a\nb")]}),
    ("nul-in-upstream-value", {**ALLOW, "upstream_headers": [("x-authz-subject", "a\x00b")]}),
    ("escape-in-upstream-value", {**ALLOW, "upstream_headers": [("x-authz-email", "a\x1b[31m")]}),
    ("del-in-client-value", {**ALLOW, "client_headers": [("ratelimit", "a\x7f")]}),
    ("cr-in-deny-value", {**DENY, "client_headers": [("www-authenticate", 'Bearer realm="a\rb"')]}),
    ("space-in-name", {**ALLOW, "upstream_headers": [("x authz", "v")]}),
    ("colon-in-name", {**ALLOW, "upstream_headers": [("x-authz-a:b", "v")]}),
    ("crlf-in-name", {**DENY, "client_headers": [("x-a\r\nx-b", "v")]}),
    ("empty-name", {**ALLOW, "client_headers": [("", "v")]}),
    ("non-ascii-name", {**ALLOW, "upstream_headers": [("x-authz-é", "v")]}),
    ("comma-in-removed-name", {**ALLOW, "remove_headers": ["x-authz-a,authorization"]}),
    ("lf-in-removed-name", {**ALLOW, "remove_headers": ["x-authz-a\nx-b"]}),
]


@pytest.mark.parametrize("fields", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_the_grpc_door_fails_closed(fields: dict[str, object]) -> None:
    resp = envoy_grpc.to_response(Decision(**fields))  # type: ignore[arg-type]
    assert resp.status.code != 0
    denied = resp.denied_response
    assert denied.status.code == 503
    assert json.loads(denied.body) == {"error": "internal.error", "decision_id": "d-7"}
    assert [(h.header.key, h.header.value) for h in denied.headers] == [
        ("x-authz-decision-id", "d-7"), ("content-type", "application/json"), ("cache-control", "no-store"),
    ]  # fmt: skip
    assert not resp.ok_response.headers and not resp.ok_response.headers_to_remove
    assert resp.dynamic_metadata.fields["reason"].string_value == "internal.error"


@pytest.mark.parametrize("mode", [door.ENVOY, door.FORWARD_AUTH, door.NGINX])
@pytest.mark.parametrize("fields", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_the_http_door_fails_closed(fields: dict[str, object], mode: str) -> None:
    status, headers, body = door.render(Decision(**fields), mode)  # type: ignore[arg-type]
    assert status == 503
    assert json.loads(body) == {"error": "internal.error", "decision_id": "d-7"}
    assert [n for n, _ in headers] == [b"x-authz-decision-id", b"content-type", b"cache-control", b"content-length"]


def test_good_fields_pass_both_doors() -> None:
    d = Decision(**{**ALLOW, "upstream_headers": [("x-authz-subject", "a\tb ü")], "remove_headers": ["x-authz-x"]})  # type: ignore[arg-type]
    assert envoy_grpc.to_response(d).status.code == 0
    assert door.render(d, door.ENVOY)[0] == 200
