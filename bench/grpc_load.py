"""Direct gRPC load on ``Authorization/Check``, without Envoy: fixed concurrency for a fixed time.

Runs as its own process (pin it away from the server): N coroutines on one
grpc.aio channel each send the realistic CheckRequest of bench/checkreq.py
back to back. Prints one JSON object: requests/s, p50 and p99 in ms, and how
many answers were not an allow. The client is Python too, so on 2 cores its
own CPU cost caps what it can measure.

    python -m bench.grpc_load --target 127.0.0.1:9191 --concurrency 32 --duration 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc
from envoy.service.auth.v3 import external_auth_pb2

from bench.checkreq import check_request

METHOD = "/envoy.service.auth.v3.Authorization/Check"


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def _worker(call: grpc.aio.UnaryUnaryMultiCallable, body: bytes, stop_at: float, lat: list[float] | None) -> int:
    n = 0
    clock = time.perf_counter
    while True:
        t0 = clock()
        if t0 >= stop_at:
            return n
        await call(body, timeout=5.0)
        if lat is not None:
            lat.append(clock() - t0)
        n += 1


async def run(target: str, concurrency: int, duration: float, warmup: float) -> dict[str, float | int]:
    body = check_request().SerializeToString()
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD)  # bytes in, bytes out: the client does not parse
        first = external_auth_pb2.CheckResponse.FromString(await call(body, timeout=5.0))
        if first.status.code != 0:
            raise SystemExit(f"the server does not allow the bench request: {first.status}")
        if warmup > 0:
            stop = time.perf_counter() + warmup
            await asyncio.gather(*(_worker(call, body, stop, None) for _ in range(concurrency)))
        lat: list[float] = []
        started = time.perf_counter()
        counts = await asyncio.gather(*(_worker(call, body, started + duration, lat) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        last = external_auth_pb2.CheckResponse.FromString(await call(body, timeout=5.0))
    lat.sort()
    return {
        "requests": sum(counts),
        "rps": sum(counts) / elapsed,
        "p50_ms": _percentile(lat, 0.50) * 1000,
        "p99_ms": _percentile(lat, 0.99) * 1000,
        "not_allowed": int(last.status.code != 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    try:
        import uvloop

        result = uvloop.run(run(args.target, args.concurrency, args.duration, args.warmup))
    except ImportError:
        result = asyncio.run(run(args.target, args.concurrency, args.duration, args.warmup))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
