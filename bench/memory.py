"""What one identity costs in memory: bytes in Redis, and authz's RSS on the memory store.

Both drive distinct client addresses through authz's gRPC door directly
(bench/identities.py: a fixed number of Checks, then it stops), on
bench/policies/identities.yaml (two quotas per client, with limits whose
buckets outlive the measurement), so every identity creates its two buckets
and they are all still there when memory is read:

* Redis: after a warm-up from one address, ``used_memory`` is read, N
  identities are driven, and then (a) ``MEMORY USAGE`` (exact, ``SAMPLES 0``)
  of every key of a random sample of identities, grouped by their hash tag,
  and (b) the growth of ``used_memory`` divided by the identities found.
* Memory store: after a warm-up from one address that fills the decision
  ring, authz's RSS (``VmRSS``) is read, 100k identities are driven, and RSS
  is read again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from bench import HERE, procstat, redisbench
from bench.procs import free_port, running, wait_tcp
from bench.redisbench import redis_server
from bench.scenarios import Run, authz_cmd

PY = sys.executable
IDENTITIES_POLICY = HERE / "policies" / "identities.yaml"
#: the hash tag of a driven identity's keys (10.0.0.0/8; the warm-up's 127.0.0.1 is left out)
DRIVEN_TAG = "ip:10."
#: the warm-up from one address: more than the decision ring holds (10,000 by default), so it is full before measuring
WARMUP_CHECKS = 12_000


@dataclass(frozen=True, slots=True)
class MemoryResult:
    identities: int  # distinct identities driven into the memory store
    rss_before_bytes: int
    rss_after_bytes: int
    redis_identities: int  # distinct identities driven into Redis
    redis: redisbench.IdentityMemory | None
    driven_rps: float  # Checks per second of the memory-store drive (the Python client's pace)
    #: Checks not allowed while driving (a store call past its deadline is refused: on_store_error quota closed)
    redis_not_allowed: int = 0
    not_allowed: int = 0

    @property
    def rss_per_identity(self) -> float:
        return (self.rss_after_bytes - self.rss_before_bytes) / self.identities if self.identities else 0.0


def _drive(run: Run, port: int, count: int, *, one_address: bool = False) -> dict[str, float]:
    cmd = [PY, "-m", "bench.identities", "--target", f"127.0.0.1:{port}", "--count", str(count), "--concurrency", str(run.wrk.connections)]
    if one_address:
        cmd.append("--one-address")
    # bounded: the client sends exactly `count` Checks; the timeout allows a slow 500 per second
    done = subprocess.run(run.pinning.client(cmd), capture_output=True, text=True, timeout=60 + count / 500)
    if done.returncode != 0:
        raise RuntimeError(f"bench.identities failed: {done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    # the warm-up from one address runs into its own quota at once: its refusals are expected
    if not one_address and result["not_allowed"] > count // 100:
        raise RuntimeError(f"{result['not_allowed']} of {count} Checks were not allowed")
    return result


def measure(run: Run) -> MemoryResult:
    # Redis first (the smaller drive), then the memory store
    redis_mem = None
    with redis_server(run.pinning) as (_redis, rport):
        port = free_port()
        cmd = authz_cmd(run, port, policy=IDENTITIES_POLICY, store=f"redis://127.0.0.1:{rport}")
        with running("authz (Redis, identities)", run.pinning.server(cmd)) as server:
            wait_tcp(server, port)
            _drive(run, port, 2_000, one_address=True)
            before = redisbench.used_memory(rport)
            rres = _drive(run, port, run.redis_identities)
            redis_not_allowed = int(rres["not_allowed"])
            redis_mem = redisbench.identity_memory(rport, DRIVEN_TAG, before)
    port = free_port()
    with running("authz (memory, identities)", run.pinning.server(authz_cmd(run, port, policy=IDENTITIES_POLICY))) as server:
        wait_tcp(server, port)
        _drive(run, port, WARMUP_CHECKS, one_address=True)
        rss0 = procstat.rss_bytes(server.pid)
        res = _drive(run, port, run.identities)
        rss1 = procstat.rss_bytes(server.pid)
        server.check_alive()
    return MemoryResult(
        run.identities, rss0, rss1, run.redis_identities, redis_mem, float(res["rps"]), redis_not_allowed, int(res["not_allowed"])
    )
