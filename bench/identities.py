"""Many distinct clients through authz's gRPC door: a fixed number of Checks, then it stops.

Request *i* comes from client address ``10.x.y.z`` (the *i*-th address of
10.0.0.0/8, from 10.0.0.1 on) in the CheckRequest's ``source`` field: the
address authz identifies the client by. No packet goes to those addresses;
everything travels over one loopback channel. With ``--one-address`` every
request comes from 127.0.0.1 instead (a warm-up that creates one identity).
Prints one JSON object: how many were sent, how many were not allowed, and
how long it took.

    python -m bench.identities --target 127.0.0.1:9191 --count 100000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import time
from collections.abc import Iterator

import grpc
from envoy.service.auth.v3 import external_auth_pb2

from bench.checkreq import check_request

METHOD = "/envoy.service.auth.v3.Authorization/Check"
FIRST = int(ipaddress.IPv4Address("10.0.0.1"))


def address(i: int) -> str:
    """The ``i``-th client address (0-based) of 10.0.0.0/8."""
    if not 0 <= i < 2**24 - 2:
        raise ValueError(f"no {i}-th address in 10.0.0.0/8")
    return str(ipaddress.IPv4Address(FIRST + i))


async def run(target: str, count: int, concurrency: int, distinct: bool) -> dict[str, float | int]:
    req = check_request()
    sock = req.attributes.source.address.socket_address
    todo: Iterator[int] = iter(range(count))
    not_allowed = 0

    async def worker(call: grpc.aio.UnaryUnaryMultiCallable) -> None:
        nonlocal not_allowed
        for i in todo:  # shared: each index is taken by exactly one coroutine
            if distinct:
                sock.address = address(i)
            body = req.SerializeToString()
            answer = external_auth_pb2.CheckResponse.FromString(await call(body, timeout=10.0))
            not_allowed += answer.status.code != 0

    started = time.perf_counter()
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD)
        await asyncio.gather(*(worker(call) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"sent": count, "not_allowed": not_allowed, "seconds": elapsed, "rps": count / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--one-address", action="store_true", help="every request from 127.0.0.1 (one identity)")
    args = parser.parse_args()
    try:
        import uvloop

        result = uvloop.run(run(args.target, args.count, args.concurrency, not args.one_address))
    except ImportError:
        result = asyncio.run(run(args.target, args.count, args.concurrency, not args.one_address))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
