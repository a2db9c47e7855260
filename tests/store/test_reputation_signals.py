"""Every signal moves the score by its documented weight and halves each half-life: memory, Redis, Cluster.

(What an address is, on a list or in a hosting network, counts once per request instead.)

Evidence goes through the real engine (a stand-in authentication method plays
the stages that find evidence), so the reputation operation runs in each
store's own implementation: the Python one, and the Lua script on a real
redis-server and a real 3-master Cluster.
"""

from __future__ import annotations

import dataclasses

import pytest

from authz.clock import FixedClock
from authz.config.context import CompileContext
from authz.config.source import load
from authz.decision import DecisionIds
from authz.keys import EMPTY_KEYRING
from authz.pipeline import Engine
from authz.policy.compile import compile_policy
from authz.request import Request
from authz.stages.authenticate import Authenticator, AuthResult
from authz.stages.context import Ctx
from authz.stages.reputation import SIGNALS
from tests.store.conftest import T0, Backend

HALF_LIFE = 600_000
SCALE = 10.0
POLICY = """
version: 1
reputation: {half_life: 10m, scale: 10}
routes:
  - name: items
    match: {path: {prefix: /items/}}
    auth: [anonymous]
    reputation: {}
  - name: home
    match: {path: {prefix: /}}
    auth: [anonymous]
    reputation: {}
"""


class Evidence(Authenticator):
    kind = "evidence"
    name = "t"

    def present(self, req: Request) -> bool:
        return "x-evidence" in req.headers

    async def authenticate(self, req: Request, ctx: Ctx) -> AuthResult:
        ctx.evidence.append((req.headers["x-evidence"], 1.0))
        return AuthResult(ok=True)


def engine(backend: Backend) -> Engine:
    policy = compile_policy(load("p.yaml", POLICY), CompileContext(file="p.yaml", base_dir=".", keyring=EMPTY_KEYRING))
    routes = tuple(dataclasses.replace(r, auth=(Evidence(),), anonymous=True) for r in policy.routes)
    return Engine(dataclasses.replace(policy, routes=routes), backend.store, clock=FixedClock(T0), ids=DecisionIds("s"))


def request(path: str, peer: str, **headers: str) -> Request:
    named = {k.replace("_", "-"): v for k, v in headers.items()}
    return Request(method="GET", path=path, host="a", headers={"user-agent": "x", **named}, peer_ip=peer)


def score(evidence: float) -> float:
    return round(100 * evidence / (evidence + SCALE), 1)


#: one name of each signal family, and the exact signals found in requests or outcomes
NAMES = sorted({(n + "x" if n.endswith(".") else n) for n in SIGNALS} - {"cadence", "burst", "sequence", "journey"})


@pytest.mark.parametrize("name", NAMES)
async def test_each_signal_adds_its_weight_and_halves_each_half_life(backend: Backend, name: str) -> None:
    e = engine(backend)
    weight = SIGNALS.get(name, SIGNALS.get(name[:-1])).weight  # type: ignore[union-attr]
    first = await e.decide(request("/", "203.0.113.9", x_evidence=name))
    assert first.score == pytest.approx(score(weight), abs=0.15)
    assert first.top_signals[0][0] == name
    e.clock.advance(HALF_LIFE)  # type: ignore[attr-defined]
    if name.startswith(("list.", "network.hosting")):
        # what the address is counts once per request, never accumulated
        again = await e.decide(request("/", "203.0.113.9", x_evidence=name))
        assert again.score == first.score
        return
    later = await e.decide(request("/", "203.0.113.9"))
    assert later.score == pytest.approx(score(weight / 2), abs=0.15)


async def test_sequences_and_bursts_are_inferred_by_every_store(backend: Backend) -> None:
    e = engine(backend)
    for i in range(8):  # 8 consecutive ids, 0.2 s apart, one anonymous client
        e.clock.ms = T0 + i * 200  # type: ignore[attr-defined]
        d = await e.decide(request(f"/items/{100 + i}", "198.51.100.20"))
    top = dict(d.top_signals)
    assert "sequence" in top and d.score is not None and d.score > 40
    # a metronome: 12 requests exactly 3 s apart
    for i in range(12):
        e.clock.ms = T0 + 10_000 + i * 3000  # type: ignore[attr-defined]
        m = await e.decide(request("/", "198.51.100.21"))
    assert "cadence" in dict(m.top_signals)
