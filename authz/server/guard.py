"""gRPC services that fail cleanly on bad input: INVALID_ARGUMENT, not UNKNOWN and a traceback.

grpcio answers a request its deserializer cannot decode with ``UNKNOWN`` and
logs "Exception deserializing request!" or "Unexpected [DecodeError] raised by
servicer method" with a traceback: any client could fill authz's log that way.
``add_guarded`` registers a generated servicer (admin, health, reflection) with
every method's deserializer wrapped: bytes that do not decode become
``INVALID_ARGUMENT`` naming the message type, and nothing is logged. An
exception escaping a unary method is logged once without its message (it may
quote request data) and answered ``INTERNAL``.

The ext_authz service is not registered here: it has its own deserializer that
turns undecodable bytes into a deny (authz/server/ext_authz.py).

With ``auth`` (the admin listener: ``admin_auth.AdminAuth.check``) every
method first authenticates its caller, which aborts the call when it is
refused; the method then runs with the caller known (``current_caller``).

Registration happens once at start-up; per call the only cost is a type test.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from authz.pipeline import safe_traceback

log = logging.getLogger("authz.server")

#: checks a call's caller before its method runs; aborts the call to refuse it
Auth = Callable[[grpc.aio.ServicerContext, str], Awaitable[None]]


class Undecodable:
    """What a guarded deserializer returns for bytes it cannot decode."""

    __slots__ = ("detail",)

    def __init__(self, detail: str) -> None:
        self.detail = detail


def safe_deserializer(deserialize: Callable[[bytes], Any], type_name: str) -> Callable[[bytes], Any]:
    def guarded(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, or anything a custom deserializer raises
            return Undecodable(f"request is not a valid {type_name}: {_reason(exc)}")

    return guarded


def _reason(exc: Exception) -> str:
    # upb: "Error parsing message with type 'x.Y': Wire format was corrupt"
    text = str(exc)
    return text.rpartition(": ")[2] or type(exc).__name__


async def _refuse(context: grpc.aio.ServicerContext, request: Undecodable) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.detail)


def _unary(behavior: Callable[..., Any], method: str, auth: Auth | None = None) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):  # server streaming as an async generator

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if auth is not None:
                await auth(context, method)
            if type(request) is Undecodable:
                await _refuse(context, request)
            async for reply in behavior(request, context):
                yield reply

        return streaming

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if auth is not None:
            await auth(context, method)
        if type(request) is Undecodable:
            await _refuse(context, request)
        try:
            return await behavior(request, context)
        except (grpc.aio.AbortError, grpc.RpcError):
            raise
        except Exception as exc:
            log.error("internal error in %s; answered INTERNAL\n%s", method, safe_traceback(exc))
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    return unary


def _streamed(behavior: Callable[..., Any], method: str, auth: Auth | None = None) -> Callable[..., Any]:
    async def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for request in requests:
            if type(request) is Undecodable:
                await _refuse(context, request)
            yield request

    if inspect.isasyncgenfunction(behavior):

        async def streaming(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if auth is not None:
                await auth(context, method)
            async for reply in behavior(checked(requests, context), context):
                yield reply

        return streaming

    async def unary(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        if auth is not None:
            await auth(context, method)
        return await behavior(checked(requests, context), context)

    return unary


def guard(service: str, handlers: dict[str, Any], request_types: dict[str, str], auth: Auth | None = None) -> dict[str, Any]:
    """The method handlers of one service with guarded deserializers and behaviours (and authentication)."""
    out = {}
    for name, h in handlers.items():
        method = f"/{service}/{name}"
        deserialize = safe_deserializer(h.request_deserializer, request_types.get(name, "request message"))
        if h.unary_unary is not None:
            out[name] = h._replace(request_deserializer=deserialize, unary_unary=_unary(h.unary_unary, method, auth))
        elif h.unary_stream is not None:
            out[name] = h._replace(request_deserializer=deserialize, unary_stream=_unary(h.unary_stream, method, auth))
        elif h.stream_unary is not None:
            out[name] = h._replace(request_deserializer=deserialize, stream_unary=_streamed(h.stream_unary, method, auth))
        else:
            out[name] = h._replace(request_deserializer=deserialize, stream_stream=_streamed(h.stream_stream, method, auth))
    return out


class _Collector:
    """Stands in for a server while generated ``add_*Servicer_to_server`` code registers."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Ignored: the same handlers arrive through ``add_registered_method_handlers``."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.services[service] = handlers


def add_guarded(
    server: grpc.aio.Server, register: Callable[[Any, Any], None], servicer: Any, pool: Any = None, *, auth: Auth | None = None
) -> None:
    """``register(servicer, server)`` (generated code), with every method guarded.

    :param pool: where the request message types are looked up by name (the default pool)
    :param auth: authenticates each call before its method runs (the admin listener)
    """
    from google.protobuf import descriptor_pool

    collector = _Collector()
    register(servicer, collector)
    if not collector.services:
        raise RuntimeError(f"{register.__name__} registered no service")
    pool = pool or descriptor_pool.Default()
    for service, handlers in collector.services.items():
        try:
            desc = pool.FindServiceByName(service)
            types = {m.name: m.input_type.full_name for m in desc.methods}
        except KeyError:
            types = {}
        guarded = guard(service, handlers, types, auth)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, guarded),))
        server.add_registered_method_handlers(service, guarded)
