"""Process settings: one frozen object, from command-line options or AUTHZ_* variables.

Every option of ``authz serve`` has an environment twin (``--grpc-listen`` is
``AUTHZ_GRPC_LISTEN``); the command line wins. Policy (what to decide) lives in
the policy file; settings say how the process runs.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from authz.errors import ConfigError

#: seconds of drain on SIGTERM: one Envoy health-check interval plus its timeout (1.25 s),
#: with room for a second check and a loaded machine
DEFAULT_DRAIN = 3.0
#: keystore URLs that mean Redis (anything else is a file path)
REDIS_KEYSTORE_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


@dataclass(frozen=True, slots=True)
class Settings:
    #: the policy file
    config: str
    #: host:port of the gRPC listener Envoy calls (ext_authz, the access log service, health, reflection)
    grpc_listen: str = "127.0.0.1:9191"
    #: host:port of the HTTP door (Envoy http_service, forward-auth, nginx auth_request); "" turns it off
    http_listen: str = "127.0.0.1:9190"
    #: the HTTP convention per path prefix, "[PREFIX=]MODE[,...]" (see authz/adapters/http.py)
    http_mode: str = "/envoy=envoy,/forward-auth=forward-auth,/nginx=nginx"
    #: seconds an HTTP client has to send a complete request head
    http_header_timeout: float = 10.0
    #: memory:// (default), or a Redis URL: redis://, rediss://, unix://, redis+sentinel://, redis+cluster://
    store: str = "memory://"
    #: the most one store call may take (ms) before it counts as failed (on_store_error applies)
    store_deadline: int = 20
    #: worker processes; more than one needs a shared store (Redis)
    workers: int = 1
    #: set by the supervisor in each worker it starts (-1: this process is not a worker)
    worker_index: int = -1
    #: JSON lines decision log: a path, "-" for standard output, "" for none
    decision_log: str = ""
    #: how many recent decisions the admin API can show
    decision_ring: int = 10_000
    #: seconds to keep answering after SIGTERM while health says NOT_SERVING, so that
    #: load balancers move traffic away before the listener closes. Envoy (envoy/envoy.yaml:
    #: checks every 1 s, 0.25 s timeout) drops an endpoint at its first NOT_SERVING answer.
    drain: float = DEFAULT_DRAIN
    #: seconds in-flight checks get to finish after the listener closes
    grace: float = 5.0
    #: seconds between two looks at the files the policy names (address lists, AS number
    #: lists, GeoIP databases); a changed one is re-read, validated and swapped in
    watch_interval: float = 1.0
    log_level: str = "info"
    #: run the event loop on uvloop when it is installed
    uvloop: bool = True
    #: TLS of the gRPC listener: certificate chain and key files (PEM), reloaded when they change;
    #: with a client CA, callers must present a certificate it issued (mTLS)
    grpc_tls_cert: str = ""
    grpc_tls_key: str = ""
    grpc_client_ca: str = ""
    #: the same for the HTTP door
    http_tls_cert: str = ""
    http_tls_key: str = ""
    http_client_ca: str = ""
    #: host:port of the Prometheus metrics listener; "" turns it off (``authz serve``'s default: 127.0.0.1:9193)
    metrics_listen: str = ""
    #: set by the supervisor in each worker: where the worker leaves its metrics for the supervisor
    metrics_dir: str = ""
    #: reload the policy and the files it reads when they change on disk (SIGHUP reloads either way)
    watch: bool = True
    #: operational log lines: "text" or "json" (one JSON object per line)
    log_format: str = "text"
    #: decision log field names: "authz" (Decision.to_record) or "ecs" (Elastic Common Schema)
    decision_log_format: str = "authz"
    #: rotate the decision log to <file>.1 when it reaches this size (0: never; SIGUSR1 reopens it)
    decision_log_max_bytes: int = 0
    #: OpenTelemetry spans per stage (the optional extra authz[otel]; OTEL_* variables configure it)
    otel: bool = False
    #: host:port of the admin listener (the authz.admin.v1 services); "" turns it off
    #: (``authz serve``'s default: 127.0.0.1:9194). It starts only with a credential configured:
    #: admin tokens, a client CA, or on loopback ``admin_insecure_no_auth`` (server/admin_auth.py)
    admin_listen: str = ""
    #: TLS of the admin listener; with a client CA every caller needs a certificate it issued,
    #: and the certificate's subject CN names the caller
    admin_tls_cert: str = ""
    admin_tls_key: str = ""
    admin_client_ca: str = ""
    #: a file of admin tokens (``name:token`` lines, or YAML ``tokens: [{name, token}]``), reloaded
    #: when it changes; tokens can also come from AUTHZ_ADMIN_TOKENS, never from the command line
    admin_tokens_file: str = ""
    #: serve the admin API without any credential (loopback only; insecure, logged as such)
    admin_insecure_no_auth: bool = False
    #: managed keys and API keys (docs/keys.md): "" for none, a file path, or a Redis URL
    #: (redis://, rediss://, unix://, redis+cluster://, rediss+cluster://)
    keystore: str = ""
    #: the keystore's master keys (base64, or id:base64 lines); else AUTHZ_MASTER_KEY
    master_key_file: str = ""

    def validate(self) -> None:
        host, port = split_hostport(self.grpc_listen, "grpc_listen")
        del host, port
        if self.http_listen:
            split_hostport(self.http_listen, "http_listen")
        if self.http_header_timeout <= 0:
            raise ConfigError("settings", 0, "http_header_timeout", "must be positive")
        if self.decision_ring < 1:
            raise ConfigError("settings", 0, "decision_ring", f"must be at least 1; got {self.decision_ring}")
        if self.drain < 0 or self.grace < 0:
            raise ConfigError("settings", 0, "drain/grace", "must not be negative")
        if not 0 < self.watch_interval <= 3600:
            raise ConfigError("settings", 0, "watch_interval", f"must be more than 0 and at most 3600 s; got {self.watch_interval}")
        if not 1 <= self.store_deadline <= 10_000:
            raise ConfigError("settings", 0, "store_deadline", f"must be 1 to 10000 ms; got {self.store_deadline}")
        if not 1 <= self.workers <= 64:
            raise ConfigError("settings", 0, "workers", f"must be 1 to 64; got {self.workers}")
        if self.admin_listen:
            admin_host, _ = split_hostport(self.admin_listen, "admin_listen")
            if self.admin_insecure_no_auth and not is_loopback(admin_host):
                raise ConfigError(
                    "settings", 0, "admin_insecure_no_auth",
                    f"serving the admin API without authentication is allowed on a loopback address only, not {admin_host!r}",
                )  # fmt: skip
        for door in ("grpc", "http", "admin"):
            cert, key, ca = (getattr(self, f"{door}_{n}") for n in ("tls_cert", "tls_key", "client_ca"))
            if bool(cert) != bool(key):
                raise ConfigError("settings", 0, f"{door}_tls_cert", f"--{door}-tls-cert and --{door}-tls-key go together")
            if ca and not cert:
                raise ConfigError("settings", 0, f"{door}_client_ca", f"--{door}-client-ca needs --{door}-tls-cert and --{door}-tls-key")
        if self.metrics_listen:
            split_hostport(self.metrics_listen, "metrics_listen")
        if self.log_format not in ("text", "json"):
            raise ConfigError("settings", 0, "log_format", f"must be text or json; got {self.log_format!r}")
        if self.decision_log_format not in ("authz", "ecs"):
            raise ConfigError("settings", 0, "decision_log_format", f"must be authz or ecs; got {self.decision_log_format!r}")
        if self.decision_log_max_bytes and self.decision_log_max_bytes < 4096:
            raise ConfigError("settings", 0, "decision_log_max_bytes", f"must be 0 (no limit) or at least 4096; got {self.decision_log_max_bytes}")
        self._validate_keystore()
        if self.workers > 1 and self.store.startswith("memory:"):
            raise ConfigError(
                "settings", 0, "workers",
                "several workers need a shared store (--store redis://...): with memory:// each worker would keep"
                " its own nonces and buckets, splitting replay protection and quotas between them",
            )  # fmt: skip

    def _validate_keystore(self) -> None:
        if not self.keystore:
            if self.master_key_file:
                raise ConfigError("settings", 0, "master_key_file", "--master-key-file needs --keystore")
            return
        if "://" in self.keystore:
            scheme = self.keystore.partition("://")[0]
            if scheme not in REDIS_KEYSTORE_SCHEMES:
                raise ConfigError(
                    "settings", 0, "keystore",
                    f"unknown keystore URL scheme {scheme!r}: give a file path or {', '.join(s + '://' for s in REDIS_KEYSTORE_SCHEMES)}",
                )  # fmt: skip
        elif os.path.isdir(self.keystore):
            raise ConfigError("settings", 0, "keystore", f"{self.keystore} is a directory; give the keystore file's path")
        if not self.master_key_file and not os.environ.get("AUTHZ_MASTER_KEY"):
            raise ConfigError(
                "settings", 0, "master_key_file",
                "a keystore needs its master key: --master-key-file FILE or AUTHZ_MASTER_KEY (base64 of 32 random bytes,"
                " or id:base64,... for rotation); never on the command line",
            )  # fmt: skip


def is_loopback(host: str) -> bool:
    """Is ``host`` a loopback address (127.0.0.0/8, ::1) or ``localhost``?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_hostport(value: str, field: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise ConfigError("settings", 0, field, f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)
