"""Wiring: one place that builds the process from settings.

``App`` owns the engine, the store, the decision log and the gRPC server
(ext_authz, admin, health, reflection). ``serve(settings)`` runs it until
SIGTERM/SIGINT:

1. health turns NOT_SERVING for every service (Envoy's gRPC health check moves
   traffic away), and for ``drain`` seconds checks are still answered;
2. the listener closes and in-flight checks get ``grace`` seconds to finish;
3. the decision log is flushed, the store closed, and the process exits 0.

SIGHUP reloads the policy file. A file that does not validate is refused with
its error logged (file, line, field) and the running policy stays in force.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from authz.adapters.http import HttpDoor, Modes
from authz.admin.v1 import admin_pb2, admin_pb2_grpc
from authz.clock import Clock, SystemClock
from authz.decisionlog import DecisionLog
from authz.errors import ConfigError
from authz.pipeline import Engine
from authz.policy.compile import load_policy
from authz.policy.model import Policy
from authz.server.admin import DecisionsService
from authz.server.ext_authz import SERVICE_NAME as EXT_AUTHZ
from authz.server.ext_authz import AuthorizationService
from authz.server.guard import add_guarded
from authz.server.health import HealthServicer
from authz.server.http import HttpServer
from authz.settings import Settings
from authz.store import store_from_url

log = logging.getLogger("authz.server")

ADMIN_SERVICES = tuple(s.full_name for s in admin_pb2.DESCRIPTOR.services_by_name.values())
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class App:
    def __init__(self, settings: Settings, *, policy: Policy | None = None, clock: Clock | None = None) -> None:
        settings.validate()
        try:
            self.modes = Modes.parse(settings.http_mode)
        except ValueError as exc:
            raise ConfigError("settings", 0, "http_mode", str(exc)) from None
        self.settings = settings
        self.clock = clock or SystemClock()
        self.policy = policy if policy is not None else load_policy(settings.config)
        self.store = store_from_url(settings.store, now_ms=self.clock.now_ms())
        self.decisions = DecisionLog(settings.decision_log or None, ring_size=settings.decision_ring)
        self.engine = Engine(self.policy, self.store, clock=self.clock, on_decision=self.decisions.record)
        self.health = HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.grpc_port = 0
        self.http: HttpServer | None = None
        self.http_port = 0
        self._serving = False
        self.stopped = asyncio.Event()
        self._stopping = False

    @property
    def service_names(self) -> tuple[str, ...]:
        return (EXT_AUTHZ, *ADMIN_SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                # Off: with per-process state (memory store) two processes sharing a
                # port would each keep their own nonces and buckets, so a replay or a
                # quota could be split across them. A second start must fail instead.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", 4 << 20),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ]
        )
        server.add_generic_rpc_handlers([AuthorizationService(self.engine).handler()])
        # the other services: undecodable bytes get INVALID_ARGUMENT, never a traceback (guard.py)
        add_guarded(server, admin_pb2_grpc.add_DecisionsServicer_to_server, DecisionsService(self.decisions))
        add_guarded(server, health_pb2_grpc.add_HealthServicer_to_server, self.health)
        add_guarded(
            server,
            reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
            reflection.aio.ReflectionServicer((*self.service_names, reflection.SERVICE_NAME)),
        )
        try:
            self.grpc_port = server.add_insecure_port(self.settings.grpc_listen)
        except RuntimeError:  # grpc raises when the address cannot be bound
            self.grpc_port = 0
        if self.grpc_port == 0:
            raise ConfigError(
                "settings", 0, "grpc_listen", f"cannot listen on {self.settings.grpc_listen} (in use, or not a local address)"
            )
        if self.settings.http_listen:
            await self._start_http()  # before gRPC serves: a taken port must fail the start cleanly
        await self.decisions.start()
        await server.start()
        self.server = server
        await self._set_health(SERVING)
        log.info(
            "authz serving gRPC on %s (policy %s, %d routes, store %s)",
            self._listen_addr(),
            self.policy.file,
            len(self.policy.routes),
            self.store.kind,
        )

    async def _start_http(self) -> None:
        door = HttpDoor(self.engine, self.modes, serving=lambda: self._serving)
        self.http = HttpServer(
            door, self.settings.http_listen, header_timeout=self.settings.http_header_timeout, grace=self.settings.grace
        )
        await self.http.start()
        self.http_port = self.http.port

    def _listen_addr(self) -> str:
        host = self.settings.grpc_listen.rpartition(":")[0]
        return f"{host}:{self.grpc_port}"

    async def _set_health(self, status: Any) -> None:
        self._serving = status == SERVING
        await self.health.set("", status)
        for name in self.service_names:
            await self.health.set(name, status)

    def reload(self) -> bool:
        """Load the policy file again; keep the running policy if it does not validate."""
        try:
            policy = load_policy(self.settings.config)
        except ConfigError as exc:
            log.error("policy reload refused, the running policy stays in force: %s", exc)
            return False
        self.policy = self.engine.policy = policy
        log.info("policy reloaded from %s (%d routes)", policy.file, len(policy.routes))
        return True

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        await self._set_health(NOT_SERVING)
        if self.settings.drain:
            log.info("draining for %.1fs (health NOT_SERVING)", self.settings.drain)
            await asyncio.sleep(self.settings.drain)
        stopping = []
        if self.server is not None:
            stopping.append(self.server.stop(self.settings.grace))
        if self.http is not None:
            stopping.append(self.http.stop())
        await asyncio.gather(*stopping)
        await self.decisions.stop()
        await self.store.close()
        log.info("authz stopped")
        self.stopped.set()


async def serve(settings: Settings) -> None:
    app = App(settings)
    loop = asyncio.get_running_loop()
    await app.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(app.stop()))
    loop.add_signal_handler(signal.SIGHUP, app.reload)
    await app.stopped.wait()
