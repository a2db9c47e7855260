"""Nothing a client sends as a credential reaches a log line or a decision record, and
``Engine.decide`` never raises, whatever breaks inside it (responding included)."""

from __future__ import annotations

import json
import logging

import pytest

from authz.clock import FixedClock
from authz.decision import DecisionIds, Outcome
from authz.pipeline import Engine
from authz.policy import load_policy
from authz.request import Request
from authz.stages import respond
from authz.stages.authenticate import Authenticator, AuthResult
from authz.stages.context import Ctx
from authz.stages.route import Match, Route
from authz.store import MemoryStore

T0 = 1_700_000_000_000
TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2VjcmV0LXNpZ25hdHVyZQ"
COOKIE_SECRET = "session-secret-4f1c2a"
HEADER_SECRET = "hunter2-api-key-9d8e"

POLICY = """
version: 1
routes:
  - name: api
    match: {path: {prefix: /}}
    auth: [anonymous]
"""


class _Explodes(Authenticator):
    """A stage with a bug whose message quotes the request's credentials."""

    kind = "boom"
    name = "t"

    def present(self, req: Request) -> bool:
        return True

    async def authenticate(self, req: Request, ctx: Ctx) -> AuthResult:
        raise RuntimeError(f"bug while reading {req.query} {req.headers.get('cookie')} {req.headers.get('x-api-key')}")


def _engine(tmp_path: object, method: Authenticator | None = None) -> Engine:
    path = f"{tmp_path}/p.yaml"
    with open(path, "w") as f:
        f.write(POLICY)
    policy = load_policy(path)
    if method is not None:
        route = Route(name="api", match=Match(), auth=(method,), anonymous=False)
        policy = type(policy)(file=path, routes=(route,))
    return Engine(policy, MemoryStore(epoch_ms=T0), clock=FixedClock(T0), ids=DecisionIds("leak"))


def _hostile_request() -> Request:
    return Request(
        method="GET",
        path="/v1/items",
        query=f"access_token={TOKEN}&page=2",
        has_query=True,
        host="api.example.com",
        headers={
            "authorization": f"Bearer {TOKEN}",
            "cookie": f"sid={COOKIE_SECRET}",
            "x-api-key": HEADER_SECRET,
        },
        peer_ip="192.0.2.10",
    )


def _assert_clean(text: str) -> None:
    for secret in (TOKEN, COOKIE_SECRET, HEADER_SECRET, "c2VjcmV0"):
        assert secret not in text


async def test_a_failing_stage_logs_no_credential(tmp_path: object, caplog: pytest.LogCaptureFixture) -> None:
    records: list[dict[str, object]] = []
    engine = _engine(tmp_path, _Explodes())
    engine.on_decision = lambda d: records.append(d.to_record())
    with caplog.at_level(logging.DEBUG):
        decision = await engine.decide(_hostile_request())
    assert (decision.outcome, decision.status, decision.reason) == (Outcome.ERROR, 503, "internal.error")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "internal error deciding" in logged and decision.id in logged
    assert "RuntimeError (message withheld)" in logged
    _assert_clean(logged)
    _assert_clean(json.dumps(records))
    _assert_clean(repr(_hostile_request()))


async def test_the_decision_record_of_an_allowed_request_holds_no_credential(tmp_path: object) -> None:
    decision = await _engine(tmp_path).decide(_hostile_request())
    assert decision.reason == "ok"
    _assert_clean(json.dumps(decision.to_record()))


async def test_decide_never_raises_even_when_responding_breaks(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_finish(*args: object, **kwargs: object) -> None:
        raise ValueError(f"respond broke on {TOKEN}")

    monkeypatch.setattr(respond, "finish", broken_finish)
    engine = _engine(tmp_path)
    seen = []
    engine.on_decision = seen.append
    decision = await engine.decide(_hostile_request())
    assert (decision.status, decision.reason) == (503, "internal.error")
    assert decision.id.startswith("leak-")
    assert json.loads(decision.body) == {"error": "internal.error", "decision_id": decision.id}
    assert seen == [decision]
    _assert_clean("\n".join(r.getMessage() for r in caplog.records))


async def test_a_failing_decision_sink_does_not_fail_the_decision(tmp_path: object) -> None:
    engine = _engine(tmp_path)

    def sink(_: object) -> None:
        raise OSError("disk full")

    engine.on_decision = sink
    decision = await engine.decide(_hostile_request())
    assert decision.reason == "ok"


async def test_a_broken_clock_still_gives_a_decision(tmp_path: object) -> None:
    class Broken:
        def now_ms(self) -> int:
            raise RuntimeError("clock")

    engine = _engine(tmp_path)
    engine.clock = Broken()
    decision = await engine.decide(_hostile_request())
    assert (decision.status, decision.reason, decision.id) == (503, "internal.error", "unknown")
