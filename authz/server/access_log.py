"""The gRPC access log service: Envoy's finished requests -> the backend's answers as evidence.

Envoy opens one long stream per worker thread and sends batches of
``HTTPAccessLogEntry`` (``envoy.access_loggers.http_grpc``); authz reads each
entry with ``adapters.envoy_als.backend_answer`` and hands what counts to the
engine, which records it in a background batch. Nothing here blocks the
stream on the store, and a malformed entry is skipped, never an error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from authz.adapters.envoy_als import backend_answer
from authz.pipeline import Engine

SERVICE_NAME = als_pb2.DESCRIPTOR.services_by_name["AccessLogService"].full_name


class AccessLogService(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """``StreamAccessLogs``: counts what it read, ignored and recorded."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.entries = 0
        self.recorded = 0

    async def StreamAccessLogs(  # noqa: N802 (the gRPC method's name)
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> Any:
        async for message in request_iterator:
            for entry in message.http_logs.log_entry:
                self.entries += 1
                answer = backend_answer(entry)
                if answer is not None and self.engine.backend_answered(*answer):
                    self.recorded += 1
        return als_pb2.StreamAccessLogsResponse()


__all__ = ["SERVICE_NAME", "AccessLogService"]
