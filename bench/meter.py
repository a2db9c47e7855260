"""What one measured interval cost: CPU per decision by process, Redis commands, decisions per worker.

A ``Meter`` reads its counters right before the measured load starts and
right after it ends (never across the warm-up):

* CPU: ``utime + stime`` of each watched process from ``/proc/<pid>/stat``;
* decisions: Envoy's ``http.<prefix>.downstream_rq_completed`` (every request
  Envoy answered in the interval went through the authorization in front of
  its route), or the count a direct client reports;
* Redis: ``CONFIG RESETSTAT`` at the start, ``INFO commandstats`` at the end;
* workers: Envoy's request count per endpoint of the ``authz`` cluster (its
  admin ``/clusters``: ``authz::127.0.0.1:9191::rq_total::N``); each worker
  listens on a port of its own, so the difference is how many Checks that
  very worker answered. (The admin API, which could tell a process's
  decisions by their id counter, is served by worker 0 alone.)
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench import procstat, redisbench


def parse_envoy_counter(text: str, name: str) -> int:
    """One counter's value from Envoy's plain-text ``/stats`` (``name: value`` lines)."""
    m = re.search(rf"^{re.escape(name)}: (\d+)$", text, re.M)
    if not m:
        raise ValueError(f"no counter {name} in Envoy's stats")
    return int(m.group(1))


def envoy_counter(admin_port: int, name: str) -> int:
    url = f"http://127.0.0.1:{admin_port}/stats?filter=^{re.escape(name)}$"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return parse_envoy_counter(resp.read().decode(), name)


def parse_endpoint_requests(text: str, cluster: str) -> dict[int, int]:
    """Port -> ``rq_total`` of each endpoint of ``cluster`` from Envoy's plain-text ``/clusters``."""
    out: dict[int, int] = {}
    for m in re.finditer(rf"^{re.escape(cluster)}::[^:]+:(\d+)::rq_total::(\d+)$", text, re.M):
        out[int(m.group(1))] = int(m.group(2))
    return out


def endpoint_requests(admin_port: int, cluster: str = "authz") -> dict[int, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/clusters", timeout=5) as resp:
        return parse_endpoint_requests(resp.read().decode(), cluster)


@dataclass(frozen=True, slots=True)
class WorkerCount:
    index: int
    endpoint: str  # the worker's address, as Envoy's cluster names it
    decisions: int  # Checks Envoy sent it in the measured interval
    cpu_us_per_decision: float  # its own CPU over the interval / its own decisions


@dataclass(frozen=True, slots=True)
class Measured:
    seconds: float
    decisions: int
    cpu_s: dict[str, float]  # role -> CPU seconds over the interval
    round_trips: redisbench.RoundTrips | None = None
    workers: list[WorkerCount] = field(default_factory=list)

    def cpu_us(self) -> dict[str, float]:
        return {role: procstat.per_unit(s, self.decisions) for role, s in self.cpu_s.items()}


class Meter:
    """Reads the counters at ``start()`` and ``stop()``.

    :param roles: role -> a function giving that role's pids when called (at ``start``: workers exist by then)
    :param count: the decision count so far (Envoy's counter), or None when the caller counts
    :param redis_port: the Redis whose commands are counted, if any
    :param worker_ports: the gRPC port of each authz worker whose decisions are counted, if any
    :param envoy_admin: Envoy's admin port, which counts the requests sent to each worker
    """

    def __init__(
        self,
        roles: dict[str, Callable[[], list[int]]],
        count: Callable[[], int] | None = None,
        *,
        redis_port: int | None = None,
        worker_ports: Sequence[int] = (),
        worker_pids: Callable[[], list[int]] | None = None,
        envoy_admin: int | None = None,
    ) -> None:
        self.roles = roles
        self.count = count
        self.redis_port = redis_port
        self.worker_ports = list(worker_ports)
        self.worker_pids = worker_pids
        self.envoy_admin = envoy_admin

    def start(self) -> None:
        self.pids = {role: get() for role, get in self.roles.items()}
        self.wpids = self.worker_pids() if self.worker_pids else []
        self.workers0 = self._per_worker()
        self.redis = None
        if self.redis_port is not None:
            # one connection for the reset and the reading, opened before: its set-up is not counted
            self.redis = redisbench.client(self.redis_port)
            self.redis.ping()
            redisbench.reset_stats(self.redis)
        self.n0 = self.count() if self.count else 0
        self.cpu0 = procstat.cpu_by_role(self.pids)
        self.wcpu0 = [procstat.cpu_seconds([p]) for p in self.wpids]
        self.t0 = time.monotonic()

    def _per_worker(self) -> dict[int, int]:
        if not self.worker_ports or self.envoy_admin is None:
            return {}
        return endpoint_requests(self.envoy_admin)

    def stop(self, counted: int | None = None) -> Measured:
        """``counted``: the decisions the caller counted itself (without an Envoy counter)."""
        elapsed = time.monotonic() - self.t0
        cpu = {role: s - self.cpu0[role] for role, s in procstat.cpu_by_role(self.pids).items()}
        wcpu = [procstat.cpu_seconds([p]) - c0 for p, c0 in zip(self.wpids, self.wcpu0, strict=True)]
        decisions = counted if counted is not None else (self.count() - self.n0 if self.count else 0)
        rt = None
        if self.redis is not None:
            with self.redis:
                rt = redisbench.round_trips(redisbench.read_calls(self.redis), decisions)
        workers = []
        after = self._per_worker()
        for i, port in enumerate(self.worker_ports):
            made = after.get(port, 0) - self.workers0.get(port, 0)
            own = wcpu[i] if i < len(wcpu) else 0.0
            workers.append(WorkerCount(i, f"127.0.0.1:{port}", made, procstat.per_unit(own, made)))
        return Measured(elapsed, decisions, cpu, rt, workers)
