"""What one measured interval cost: CPU per decision by process, Redis commands, decisions per worker.

A ``Meter`` reads its counters right before the measured load starts and
right after it ends (never across the warm-up):

* CPU: ``utime + stime`` of each watched process from ``/proc/<pid>/stat``;
* decisions: Envoy's ``http.<prefix>.downstream_rq_completed`` (every request
  Envoy answered in the interval went through the authorization in front of
  its route), or the count a direct client reports;
* Redis: ``CONFIG RESETSTAT`` at the start, ``INFO commandstats`` at the end;
* workers: the newest decision id of each authz worker (Admin API
  ``ListDecisions``, limit 1). A decision id is ``<process prefix>-<counter>``,
  the counter counting that process's decisions from 1, so the difference of
  the counters is how many decisions that very process made.
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


def parse_decision_id(decision_id: str) -> tuple[str, int]:
    """``"7f3a91c0d2e4-00000000001a"`` -> (``"7f3a91c0d2e4"``, 26): the process's prefix and its counter."""
    prefix, sep, counter = decision_id.rpartition("-")
    if not sep or not prefix or not counter:
        raise ValueError(f"not a decision id: {decision_id!r}")
    return prefix, int(counter, 16)


def newest_decision(grpc_port: int) -> tuple[str, int]:
    """(prefix, counter) of the newest decision of the authz process on ``grpc_port``; ("", 0) before its first."""
    import grpc

    from authz.admin.v1 import admin_pb2, admin_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = admin_pb2_grpc.DecisionsStub(channel)
        listed = stub.ListDecisions(admin_pb2.ListDecisionsRequest(limit=1), timeout=5)
    if not listed.decisions:
        return "", 0
    return parse_decision_id(listed.decisions[0].id)


@dataclass(frozen=True, slots=True)
class WorkerCount:
    index: int
    prefix: str  # the worker's decision-id prefix
    decisions: int  # decisions it made in the measured interval
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
    """

    def __init__(
        self,
        roles: dict[str, Callable[[], list[int]]],
        count: Callable[[], int] | None = None,
        *,
        redis_port: int | None = None,
        worker_ports: Sequence[int] = (),
        worker_pids: Callable[[], list[int]] | None = None,
    ) -> None:
        self.roles = roles
        self.count = count
        self.redis_port = redis_port
        self.worker_ports = list(worker_ports)
        self.worker_pids = worker_pids

    def start(self) -> None:
        self.pids = {role: get() for role, get in self.roles.items()}
        self.wpids = self.worker_pids() if self.worker_pids else []
        self.workers0 = [newest_decision(p) for p in self.worker_ports]
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
        for i, (port, (prefix0, n0)) in enumerate(zip(self.worker_ports, self.workers0, strict=True)):
            prefix, n = newest_decision(port)
            if prefix0 and prefix != prefix0:
                raise RuntimeError(f"worker {i} (port {port}) changed its decision-id prefix: it was restarted")
            made = n - n0
            own = wcpu[i] if i < len(wcpu) else 0.0
            workers.append(WorkerCount(i, prefix, made, procstat.per_unit(own, made)))
        return Measured(elapsed, decisions, cpu, rt, workers)
