"""Does authz's memory stay flat under sustained traffic? A bounded soak on the memory store.

authz serves bench/policies/reputation.yaml (two quotas and the reputation
stage with the request evidence families: every client address leaves
buckets and reputation state for its address and its /24) on the memory
store. The soak sends the same ``--identities`` distinct client addresses
(bench/identities.py: 10.x.y.z in the CheckRequest's source, over one
loopback channel) pass after pass until ``--seconds`` have gone by, and reads
authz's RSS after each pass. The first passes create every identity's state
and fill the decision ring; from then on a process without a leak keeps its
RSS flat, because the state is bounded by the identities, not by the traffic.
It stops by itself: a whole number of passes, then authz is stopped.

    python -m bench.soak --seconds 600 --identities 100000      # what make soak runs
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

from bench import HERE, procstat, wrk
from bench.memory import WARMUP_CHECKS, _drive
from bench.procs import Pinning, free_port, running, wait_tcp
from bench.scenarios import authz_cmd, new_run

POLICY = HERE / "policies" / "reputation.yaml"
#: passes that create the state and fill the ring before RSS is expected to be flat
SETTLING_PASSES = 2


@dataclass(frozen=True, slots=True)
class Sample:
    index: int
    elapsed_s: float
    checks: int  # Checks sent so far
    rss_bytes: int
    not_allowed: int


def soak(seconds: float, identities: int, pin: bool) -> list[Sample]:
    run, tmp = new_run(Pinning.choose(pin), wrk.WrkSettings())
    samples: list[Sample] = []
    with tmp:
        port = free_port()
        with running("authz (memory, soak)", run.pinning.server(authz_cmd(run, port, policy=POLICY))) as server:
            wait_tcp(server, port)
            _drive(run, port, WARMUP_CHECKS, one_address=True)
            started = time.monotonic()
            checks = 0
            samples.append(Sample(0, 0.0, 0, procstat.rss_bytes(server.pid), 0))
            while time.monotonic() - started < seconds:
                res = _drive(run, port, identities)
                checks += identities
                server.check_alive()
                samples.append(Sample(len(samples), time.monotonic() - started, checks, procstat.rss_bytes(server.pid), int(res["not_allowed"])))
                print(f"  pass {len(samples) - 1}: {checks:,} Checks, RSS {samples[-1].rss_bytes / 2**20:.1f} MiB", file=sys.stderr)
    return samples


def table(samples: list[Sample], identities: int) -> str:
    lines = [f"soak: {identities:,} identities pass after pass (bench/policies/reputation.yaml, memory store)", ""]
    lines.append(f"{'pass':>4}  {'elapsed s':>9}  {'Checks':>10}  {'RSS MiB':>8}  {'not allowed':>11}")
    for s in samples:
        lines.append(f"{s.index:>4}  {s.elapsed_s:>9.0f}  {s.checks:>10,}  {s.rss_bytes / 2**20:>8.1f}  {s.not_allowed:>11,}")
    if len(samples) > SETTLING_PASSES + 1:
        base, last = samples[SETTLING_PASSES], samples[-1]
        grown = last.rss_bytes - base.rss_bytes
        per_k = grown / max(last.checks - base.checks, 1) * 1000
        lines.append("")
        lines.append(
            f"after pass {SETTLING_PASSES}: RSS {grown / 2**20:+.1f} MiB over {last.checks - base.checks:,} more Checks"
            f" ({per_k:+.1f} bytes per 1,000 Checks; {grown / max(base.rss_bytes, 1):+.1%})"
        )
    else:
        lines.append("")
        lines.append(f"too short: fewer than {SETTLING_PASSES + 1} passes (raise --seconds or lower --identities)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600.0, help="keep starting passes until this long has gone by (default 600)")
    p.add_argument("--identities", type=int, default=100_000, help="distinct client addresses per pass (default 100000)")
    p.add_argument("--no-pin", action="store_true", help="do not pin the client and the server to separate CPUs")
    opts = p.parse_args(argv)
    print(table(soak(opts.seconds, opts.identities, not opts.no_pin), opts.identities))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
