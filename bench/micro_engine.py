"""Micro benchmarks of authz's own per-request work, without any I/O.

* ``Engine.decide`` on the bench policy with the memory store and the decision
  ring the server keeps (``serve`` without a decision-log file);
* the gRPC adapter: ``envoy_grpc.to_request`` on a realistic CheckRequest and
  ``envoy_grpc.to_response`` on the resulting allow;
* the protobuf work around them that the server also pays per Check
  (parse the CheckRequest, serialize the CheckResponse).

Each figure is the mean over a bounded loop timed with ``time.perf_counter``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from authz.adapters import envoy_grpc
from authz.decision import Outcome
from authz.decisionlog import DecisionLog
from authz.pipeline import Engine
from authz.policy import load_policy
from authz.request import Request
from authz.store import MemoryStore
from bench import BENCH_POLICY, HERE
from bench.checkreq import check_request

BATCH = 500
MAX_CALLS = 2_000_000


def _per_op_us(fn: Callable[[], object], duration_s: float) -> float:
    """Mean µs per call of ``fn`` over at most ``duration_s`` seconds (and MAX_CALLS calls)."""
    clock = time.perf_counter
    for _ in range(BATCH):  # warm caches and the allocator
        fn()
    calls = 0
    started = clock()
    deadline = started + duration_s
    while calls < MAX_CALLS:
        for _ in range(BATCH):
            fn()
        calls += BATCH
        if clock() >= deadline:
            break
    return (clock() - started) / calls * 1e6


async def _per_op_us_async(fn: Callable[[], Awaitable[object]], duration_s: float) -> float:
    clock = time.perf_counter
    for _ in range(BATCH):
        await fn()
    calls = 0
    started = clock()
    deadline = started + duration_s
    while calls < MAX_CALLS:
        for _ in range(BATCH):
            await fn()
        calls += BATCH
        if clock() >= deadline:
            break
    return (clock() - started) / calls * 1e6


def _decide_us(policy_file: Path, req: Request, duration_s: float) -> float:
    engine = Engine(load_policy(str(policy_file)), MemoryStore(epoch_ms=int(time.time() * 1000)), on_decision=DecisionLog(None).record)
    decision = asyncio.run(engine.decide(req))
    if decision.outcome is not Outcome.ALLOW:
        raise RuntimeError(f"{policy_file.name} does not allow the bench request: {decision.reason}")
    return asyncio.run(_per_op_us_async(lambda: engine.decide(req), duration_s))


def run(duration_s: float) -> list[tuple[str, float, str]]:
    policy = load_policy(str(BENCH_POLICY))
    store = MemoryStore(epoch_ms=int(time.time() * 1000))
    engine = Engine(policy, store, on_decision=DecisionLog(None).record)
    check = check_request()
    wire = check.SerializeToString()
    req = envoy_grpc.to_request(check)

    decision = asyncio.run(engine.decide(req))
    if decision.outcome is not Outcome.ALLOW:
        raise RuntimeError(f"the bench policy does not allow the bench request: {decision.reason}")
    response = envoy_grpc.to_response(decision)

    decide_us = asyncio.run(_per_op_us_async(lambda: engine.decide(req), duration_s))
    # what the reputation stage adds: the same request under two quotas, then two quotas + reputation
    two, scored = (_decide_us(HERE / "policies" / name, req, duration_s) for name in ("two-quotas.yaml", "reputation.yaml"))
    return [
        ("Engine.decide (bench policy, memory store)", decide_us, "µs/op"),
        ("Engine.decide (two quotas, memory store)", two, "µs/op"),
        ("Engine.decide (two quotas + reputation and evidence)", scored, "µs/op"),
        ("  reputation and evidence add", scored - two, "µs/op"),
        ("envoy_grpc.to_request (10 headers)", _per_op_us(lambda: envoy_grpc.to_request(check), duration_s), "µs/op"),
        ("envoy_grpc.to_response (allow)", _per_op_us(lambda: envoy_grpc.to_response(decision), duration_s), "µs/op"),
        (f"CheckRequest.FromString ({len(wire)} B)", _per_op_us(lambda: envoy_grpc.CheckRequest.FromString(wire), duration_s), "µs/op"),
        ("CheckResponse.SerializeToString", _per_op_us(response.SerializeToString, duration_s), "µs/op"),
    ]
