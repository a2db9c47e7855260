"""Wiring: one place that builds the process from settings.

``App`` owns the engine, the store, the decision log and two gRPC servers:
the one Envoy calls (``--grpc-listen``: ext_authz, the access log service,
health and reflection of those) and the admin listener (``--admin-listen``:
the authz.admin.v1 services, each call authenticated and every change
audited, with health and reflection of its own; server/admin_auth.py). The
admin API is never on the listener Envoy (and whatever reaches Envoy's
network) can call. With ``--workers`` only worker 0 serves it: the admin
API reads and changes shared state (the store, the keystore) the same way
from any worker, and the decision ring and watchers it shows are worker 0's.
``serve(settings)`` runs it until SIGTERM/SIGINT:

1. health turns NOT_SERVING for every service (Envoy's gRPC health check moves
   traffic away), and for ``drain`` seconds checks are still answered (a
   second signal ends the drain at once);
2. the listener closes and in-flight checks get ``grace`` seconds to finish;
3. the decision log is flushed, the store closed, and the process exits 0.

SIGHUP, or a change to the policy or a file it reads, reloads the policy
(server/reload.py). A file that does not validate is refused with its error
logged (file, line, field) and the running policy stays in force. SIGUSR1
reopens the decision log (log rotation).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import grpc
from envoy.service.accesslog.v3 import als_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from authz.adapters.http import HttpDoor, Modes
from authz.admin.v1 import admin_pb2, admin_pb2_grpc
from authz.clock import Clock, SystemClock
from authz.decision import Decision
from authz.decisionlog import DecisionLog
from authz.errors import ConfigError
from authz.pipeline import Engine
from authz.policy.compile import load_policy
from authz.policy.model import Policy
from authz.server import tls
from authz.server.access_log import SERVICE_NAME as ACCESS_LOG
from authz.server.access_log import AccessLogService
from authz.server.admin import ClientsService, DecisionsService, PolicyService, Watchers
from authz.server.admin_auth import Audit, admin_auth
from authz.server.admin_keys import ApiKeysService, KeysService
from authz.server.ecs import audit_to_ecs, to_ecs
from authz.server.ext_authz import SERVICE_NAME as EXT_AUTHZ
from authz.server.ext_authz import AuthorizationService
from authz.server.guard import add_guarded
from authz.server.health import HealthServicer
from authz.server.http import HttpServer
from authz.server.keystore import open_keystore
from authz.server.metrics import DecisionMetrics, MetricsServer, write_snapshots
from authz.server.reload import Reloader
from authz.server.tracing import Tracer, provider_from_env
from authz.settings import Settings
from authz.store import store_from_url

log = logging.getLogger("authz.server")

HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
#: the gRPC health service name of the store component (authz itself keeps serving when it fails:
#: each route's on_store_error says what a failure means)
STORE_SERVICE = "authz.store"
PROBE_INTERVAL_S = 1.0
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
        #: managed keys and API keys (--keystore): started by start(), followed while serving
        self.keystore = open_keystore(settings, self.clock)
        self.policy = policy if policy is not None else load_policy(settings.config, keystore=self.keystore)
        self.store = store_from_url(settings.store, clock=self.clock, deadline_ms=settings.store_deadline)
        log_path = settings.decision_log or None
        if log_path not in (None, "-") and settings.worker_index >= 0:
            log_path = f"{log_path}.worker-{settings.worker_index}"  # one writer per file
        ecs = settings.decision_log_format == "ecs"
        self.decisions = DecisionLog(
            log_path, ring_size=settings.decision_ring, max_bytes=settings.decision_log_max_bytes,
            serialize=to_ecs if ecs else Decision.to_record, serialize_audit=audit_to_ecs if ecs else None,
        )  # fmt: skip
        #: who may call the admin API (raises ConfigError for an unusable tokens file), and its audit trail
        self.admin_auth = admin_auth(settings)
        self.audit = Audit(self.decisions.audit)
        #: WatchDecisions calls, fed by every decision without waiting
        self.watchers = Watchers()
        self._route_names = frozenset(r.name for r in self.policy.routes)
        #: per-decision counters for /metrics (server/metrics.py); everything else is read when scraped
        self.metrics = DecisionMetrics(lambda: self._route_names)
        self.engine = Engine(self.policy, self.store, clock=self.clock, on_decision=self._on_decision)
        self.health = HealthServicer()
        #: OpenTelemetry (--otel): spans from each decision's stage times (server/tracing.py)
        self.tracer: Tracer | None = None
        if settings.otel:
            self.tracer = Tracer(provider_from_env())
            self.engine.observer = self.tracer
        #: Envoy's access log stream: the backend's answers as evidence (server/access_log.py)
        self.access_log = AccessLogService(self.engine)
        self.server: grpc.aio.Server | None = None
        self.grpc_port = 0
        self.admin_server: grpc.aio.Server | None = None
        self.admin_port = 0
        self.admin_health = HealthServicer()
        self.http: HttpServer | None = None
        self.http_port = 0
        self._serving = False
        self.stopped = asyncio.Event()
        self._stopping = False
        self._drain_cut = asyncio.Event()
        self._probe: asyncio.Task[None] | None = None
        #: the one place that decides to replace the policy (SIGHUP, files changed): server/reload.py
        self.reloader = Reloader(
            settings.config, lambda: self.engine.policy, self._adopt, interval=settings.watch_interval,
            load=lambda path: load_policy(path, keystore=self.keystore),
        )  # fmt: skip
        self._keep_file_keys(self.policy)
        self._watch: asyncio.Task[None] | None = None
        self.metrics_server: MetricsServer | None = None
        self._snapshots: asyncio.Task[None] | None = None

    @property
    def service_names(self) -> tuple[str, ...]:
        """The services of the listener Envoy calls."""
        return (EXT_AUTHZ, ACCESS_LOG, HEALTH)

    def admin_servicers(self) -> list[tuple[Any, Any, str]]:
        """(generated register function, servicer, service name) of each admin service.

        Keys and ApiKeys are served with a keystore (``--keystore``) only: without one there is
        nothing they could manage.
        """
        names = admin_pb2.DESCRIPTOR.services_by_name
        clock = self.clock
        keyed: list[tuple[Any, Any, str]] = []
        if self.keystore is not None:
            keyed = [
                (admin_pb2_grpc.add_KeysServicer_to_server, KeysService(self.keystore, self.audit), names["Keys"].full_name),
                (admin_pb2_grpc.add_ApiKeysServicer_to_server, ApiKeysService(self.keystore, self.audit), names["ApiKeys"].full_name),
            ]
        return [
            *keyed,
            (admin_pb2_grpc.add_DecisionsServicer_to_server, DecisionsService(self.decisions, self.engine, self.watchers), names["Decisions"].full_name),
            (admin_pb2_grpc.add_ClientsServicer_to_server, ClientsService(self.engine, self.audit, clock.now_ms), names["Clients"].full_name),
            (admin_pb2_grpc.add_PolicyServicer_to_server, PolicyService(self.engine, self.reloader, self.audit), names["Policy"].full_name),
        ]

    @property
    def admin_service_names(self) -> tuple[str, ...]:
        """The services of the admin listener (health included)."""
        return (*(name for _, _, name in self.admin_servicers()), HEALTH)

    def components(self) -> dict[str, Any]:
        """Each component's health, for /healthz (never waits on a backend)."""
        return {"store": self.store.health().to_dict(), "policy": self.policy_health()}

    def policy_health(self) -> dict[str, Any]:
        """The running policy's version and the last reload's outcome (health details, admin)."""
        policy, last = self.engine.policy, self.reloader.last
        out: dict[str, Any] = {"status": "serving", "version": policy.version, "file": policy.file, "routes": len(policy.routes)}
        out["loaded_at"] = round(self.reloader.loaded_at, 3)
        if last is not None and last.result == "refused":
            out["last_reload"] = {"result": "refused", "error": last.error}
        return out

    async def _watch_store(self) -> None:
        """Probe the store every second: its health is a component of its own (STORE_SERVICE)."""
        last: bool | None = None
        while True:
            tls.refresh_all()  # certificate files: logs and metrics current even without new connections
            await self.store.probe()
            serving = self.store.health().serving
            if serving != last:
                await self.health.set(STORE_SERVICE, SERVING if serving else NOT_SERVING)
                if last is not None:
                    h = self.store.health()
                    (log.info if serving else log.warning)("store %s: %s", "back" if serving else "unavailable", h.detail or h.kind)
                last = serving
            await asyncio.sleep(PROBE_INTERVAL_S)

    def _keep_file_keys(self, policy: Policy) -> None:
        """Tell the keystore the running policy's keys-file keys (names it must not take; ListKeys)."""
        if self.keystore is not None:
            ring = policy.keyring
            self.keystore.file_ring = getattr(ring, "file_ring", ring)

    async def start(self) -> None:
        if self.keystore is not None:
            await self.keystore.start()  # a keystore that cannot be read refuses the start (ConfigError)
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
        add_guarded(server, als_pb2_grpc.add_AccessLogServiceServicer_to_server, self.access_log)
        add_guarded(server, health_pb2_grpc.add_HealthServicer_to_server, self.health)
        add_guarded(
            server,
            reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
            reflection.aio.ReflectionServicer((*self.service_names, reflection.SERVICE_NAME)),
        )
        try:
            if self.settings.grpc_tls_cert:
                creds = tls.server_credentials(
                    self.settings.grpc_tls_cert, self.settings.grpc_tls_key, self.settings.grpc_client_ca or None, name="grpc"
                )
                self.grpc_port = server.add_secure_port(self._grpc_address(), creds)
            else:
                self.grpc_port = server.add_insecure_port(self._grpc_address())
        except RuntimeError:  # grpc raises when the address cannot be bound
            self.grpc_port = 0
        if self.grpc_port == 0:
            raise ConfigError(
                "settings", 0, "grpc_listen", f"cannot listen on {self._grpc_address()} (in use, or not a local address)"
            )
        admin = self._admin_server()  # binds before anything serves: a taken port fails the start cleanly
        if self.settings.http_listen:
            await self._start_http()  # before gRPC serves: a taken port must fail the start cleanly
        if self.settings.metrics_dir:  # a worker: the supervisor serves the metrics
            self._snapshots = asyncio.create_task(
                write_snapshots(self, self.settings.metrics_dir, max(self.settings.worker_index, 0)), name="metrics-snapshots"
            )
        elif self.settings.metrics_listen:
            self.metrics_server = MetricsServer(self, self.settings.metrics_listen)
            await self.metrics_server.start()
        await self.decisions.start()
        await self.store.start()  # connects in the background; never waits for the backend
        await server.start()
        self.server = server
        if admin is not None:
            await admin.start()
            self.admin_server = admin
        await self._set_health(SERVING)
        await self.health.set(STORE_SERVICE, SERVING if self.store.health().serving else NOT_SERVING)
        self._probe = asyncio.create_task(self._watch_store(), name="store-probe")
        if self.settings.watch:
            self._watch = asyncio.create_task(self.reloader.watch(), name="policy-watch")
        worker = f"worker {self.settings.worker_index}: " if self.settings.worker_index >= 0 else ""
        st = self.settings
        scheme = ("gRPC over mTLS" if st.grpc_client_ca else "gRPC over TLS") if st.grpc_tls_cert else "gRPC"
        log.info(
            "%sauthz serving %s on %s (policy %s, %d routes, store %s)",
            worker,
            scheme,
            self._listen_addr(),
            self.policy.file,
            len(self.policy.routes),
            self.store.describe(),
        )

    def _admin_server(self) -> grpc.aio.Server | None:
        """The admin listener, bound (not started); None when it is off, or cannot be authenticated."""
        st = self.settings
        if not st.admin_listen or st.worker_index > 0:
            return None
        auth = self.admin_auth
        if not auth.configured:
            log.warning(
                "admin listener %s not started: no admin credential is configured (set --admin-tokens-file or"
                " AUTHZ_ADMIN_TOKENS, or --admin-client-ca; on loopback, --admin-insecure-no-auth)", st.admin_listen,
                extra={"event": "admin.disabled"},
            )  # fmt: skip
            return None
        if auth.insecure and not len(auth.tokens) and not auth.mtls:
            log.warning("INSECURE: the admin API on %s accepts every caller without authentication (--admin-insecure-no-auth)", st.admin_listen)
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 4 << 20)])
        for register, servicer, _ in self.admin_servicers():
            add_guarded(server, register, servicer, auth=auth.check)
        add_guarded(server, health_pb2_grpc.add_HealthServicer_to_server, self.admin_health)  # probes need no credential
        add_guarded(
            server,
            reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
            reflection.aio.ReflectionServicer((*self.admin_service_names, reflection.SERVICE_NAME)),
            auth=auth.check,
        )  # fmt: skip
        try:
            if st.admin_tls_cert:
                creds = tls.server_credentials(st.admin_tls_cert, st.admin_tls_key, st.admin_client_ca or None, name="admin")
                self.admin_port = server.add_secure_port(st.admin_listen, creds)
            else:
                self.admin_port = server.add_insecure_port(st.admin_listen)
        except RuntimeError:
            self.admin_port = 0
        if self.admin_port == 0:
            raise ConfigError("settings", 0, "admin_listen", f"cannot listen on {st.admin_listen} (in use, or not a local address)")
        scheme = ("mTLS" if st.admin_client_ca else "TLS") if st.admin_tls_cert else "plaintext"
        host = st.admin_listen.rpartition(":")[0]
        log.info("admin API on %s:%d (%s; callers authenticate with %s)", host, self.admin_port, scheme, auth.describe())
        return server

    async def _start_http(self) -> None:
        door = HttpDoor(self.engine, self.modes, serving=lambda: self._serving, components=self.components)
        st = self.settings
        context = tls.ssl_context(st.http_tls_cert, st.http_tls_key, st.http_client_ca or None, name="http") if st.http_tls_cert else None
        self.http = HttpServer(door, st.http_listen, header_timeout=st.http_header_timeout, grace=st.grace, ssl_context=context)
        await self.http.start(reuse_port=self.settings.worker_index >= 0)
        self.http_port = self.http.port

    def _grpc_address(self) -> str:
        """The gRPC address: worker i of a supervisor serves on the configured port + i."""
        host, _, port = self.settings.grpc_listen.rpartition(":")
        index = self.settings.worker_index
        return f"{host}:{int(port) + index}" if index > 0 and port != "0" else self.settings.grpc_listen

    def _listen_addr(self) -> str:
        host = self.settings.grpc_listen.rpartition(":")[0]
        return f"{host}:{self.grpc_port}"

    async def _set_health(self, status: Any) -> None:
        self._serving = status == SERVING
        await self.health.set("", status)
        for name in self.service_names:
            await self.health.set(name, status)
        if self.admin_server is not None:
            await self.admin_health.set("", status)
            for name in self.admin_service_names:
                await self.admin_health.set(name, status)

    def reload(self) -> bool:
        """Load the policy file again now; keep the running policy if it does not validate."""
        return self.reloader.reload("reload").result != "refused"

    def _adopt(self, policy: Policy) -> None:
        self._route_names = frozenset(r.name for r in policy.routes)
        self.policy = self.engine.policy = policy  # one assignment: checks in flight keep the one they read
        self._keep_file_keys(policy)

    def _on_decision(self, decision: Decision) -> None:
        self.decisions.record(decision)
        self.metrics.record(decision)
        self.watchers.publish(decision)

    async def stop(self) -> None:
        """Drain, close the listeners, let in-flight checks finish. A second call ends the drain."""
        if self._stopping:
            if not self._drain_cut.is_set():
                log.info("second stop signal: ending the drain")
                self._drain_cut.set()
            return
        self._stopping = True
        await self._set_health(NOT_SERVING)
        if self.settings.drain:
            log.info("draining for %.1fs (health NOT_SERVING; a second signal stops at once)", self.settings.drain)
            try:
                await asyncio.wait_for(self._drain_cut.wait(), self.settings.drain)
            except TimeoutError:
                pass
        self._drain_cut.set()
        stopping = []
        if self.server is not None:
            stopping.append(self.server.stop(self.settings.grace))
        if self.admin_server is not None:
            stopping.append(self.admin_server.stop(min(self.settings.grace, 1.0)))  # watchers end with it
        if self.http is not None:
            stopping.append(self.http.stop())
        await asyncio.gather(*stopping)
        if self._snapshots is not None:
            self._snapshots.cancel()  # writes the final numbers as it ends
            await asyncio.gather(self._snapshots, return_exceptions=True)
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        for task in (self._probe, self._watch):
            if task is not None:
                task.cancel()
        await self.decisions.stop()
        await self.store.close()
        if self.keystore is not None:
            await self.keystore.close()
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.shutdown)
        log.info("authz stopped")
        self.stopped.set()


async def serve(settings: Settings) -> None:
    app = App(settings)
    loop = asyncio.get_running_loop()
    await app.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(app.stop()))
    loop.add_signal_handler(signal.SIGHUP, lambda: app.reloader.request("SIGHUP"))
    loop.add_signal_handler(signal.SIGUSR1, app.decisions.reopen)
    await app.stopped.wait()
