"""Run wrk and read requests/s, p50, p99 and error counts from its ``--latency`` report."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True, slots=True)
class WrkSettings:
    threads: int = 1
    connections: int = 32
    duration_s: float = 8.0
    warmup_s: float = 2.0

    def describe(self) -> str:
        return f"wrk -t{self.threads} -c{self.connections} -d{self.duration_s:g}s --latency (after a {self.warmup_s:g}s warm-up)"


@dataclass(frozen=True, slots=True)
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx/3xx answers plus socket errors


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse(out: str) -> Result:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"(\d+) requests in", out)
    if not (rps and p50 and p99 and total):
        raise ValueError(f"unreadable wrk output:\n{out}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return Result(float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), int(total.group(1)), errors)


def _secs(value: float) -> str:
    # wrk reads whole seconds
    return f"{max(1, round(value))}s"


def _base(settings: WrkSettings, headers: Sequence[str], prefix: Sequence[str]) -> list[str]:
    base = [*prefix, "wrk", f"-t{settings.threads}", f"-c{settings.connections}"]
    for h in headers:
        base += ["-H", h]
    return base


def warmup(url: str, settings: WrkSettings, *, headers: Sequence[str] = (), prefix: Sequence[str] = ()) -> None:
    """The warm-up alone (nothing is read from it)."""
    if settings.warmup_s > 0:
        limit = settings.warmup_s + 30
        subprocess.run([*_base(settings, headers, prefix), f"-d{_secs(settings.warmup_s)}", url], capture_output=True, check=True, timeout=limit)


def measure(url: str, settings: WrkSettings, *, headers: Sequence[str] = (), prefix: Sequence[str] = ()) -> Result:
    """One measured run, no warm-up (the caller reads process counters around it)."""
    done = subprocess.run(
        [*_base(settings, headers, prefix), f"-d{_secs(settings.duration_s)}", "--latency", url],
        capture_output=True, text=True, check=True, timeout=settings.duration_s + 30,
    )  # fmt: skip
    return parse(done.stdout)


def run(url: str, settings: WrkSettings, *, headers: Sequence[str] = (), prefix: Sequence[str] = ()) -> Result:
    """Warm up, then measure once. ``prefix`` is the pinning command (taskset)."""
    warmup(url, settings, headers=headers, prefix=prefix)
    return measure(url, settings, headers=headers, prefix=prefix)
