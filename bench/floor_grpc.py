"""The gRPC floor: a minimal grpc.aio ext_authz server that allows everything.

It answers ``envoy.service.auth.v3.Authorization/Check`` with one
pre-serialized OK ``CheckResponse`` and does not even parse the request, so it
is the least any Python grpc.aio authorization server can cost behind Envoy.

    python -m bench.floor_grpc --port 9192
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import status_pb2

_OK = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=0)).SerializeToString()


async def _check(request: bytes, context: Any) -> bytes:
    return _OK


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "envoy.service.auth.v3.Authorization",
        {"Check": grpc.unary_unary_rpc_method_handler(_check)},  # bytes in, bytes out
    )
    server.add_generic_rpc_handlers([handler])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action=argparse.BooleanOptionalAction, default=False, help="run on uvloop (default: asyncio)")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args.port))
    else:
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
