"""Run wrk and read requests/s, p50, p99 and error counts from its ``--latency`` report.

A run may take a Lua script (``Script``: wrk's ``-s``, with the arguments
wrk hands to its ``init``), as the full-policy rows do to send precomputed
requests once each (bench/precomputed.py); what that script reports is read
back too.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
class Script:
    """A wrk Lua script and the arguments after the URL (its ``init(args)`` gets them as args[1]...)."""

    path: Path
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx/3xx answers plus socket errors
    #: precomputed requests the script sent, of how many, and how many wrk threads ran out (None: no such script)
    precomputed_sent: int | None = None
    precomputed_total: int | None = None
    ran_out: int = 0


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
    pre = re.search(r"^precomputed: (\d+) of (\d+) sent, (\d+) threads ran out$", out, re.M)
    sent, of, ran_out = (int(g) for g in pre.groups()) if pre else (None, None, 0)
    return Result(float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), int(total.group(1)), errors, sent, of, ran_out)


def _secs(value: float) -> str:
    # wrk reads whole seconds
    return f"{max(1, round(value))}s"


def _base(settings: WrkSettings, headers: Sequence[str], prefix: Sequence[str], script: Script | None) -> list[str]:
    base = [*prefix, "wrk", f"-t{settings.threads}", f"-c{settings.connections}"]
    for h in headers:
        base += ["-H", h]
    if script is not None:
        base += ["-s", str(script.path)]
    return base


def _tail(url: str, script: Script | None) -> list[str]:
    return [url, *(script.args if script else ())]


def warmup(
    url: str, settings: WrkSettings, *, headers: Sequence[str] = (), prefix: Sequence[str] = (), script: Script | None = None
) -> None:
    """The warm-up alone (nothing is read from it)."""
    if settings.warmup_s > 0:
        limit = settings.warmup_s + 30
        cmd = [*_base(settings, headers, prefix, script), f"-d{_secs(settings.warmup_s)}", *_tail(url, script)]
        subprocess.run(cmd, capture_output=True, check=True, timeout=limit)


def measure(
    url: str, settings: WrkSettings, *, headers: Sequence[str] = (), prefix: Sequence[str] = (), script: Script | None = None
) -> Result:
    """One measured run, no warm-up (the caller reads process counters around it)."""
    done = subprocess.run(
        [*_base(settings, headers, prefix, script), f"-d{_secs(settings.duration_s)}", "--latency", *_tail(url, script)],
        capture_output=True, text=True, check=True, timeout=settings.duration_s + 30,
    )  # fmt: skip
    return parse(done.stdout)


def run(url: str, settings: WrkSettings, *, headers: Sequence[str] = (), prefix: Sequence[str] = ()) -> Result:
    """Warm up, then measure once. ``prefix`` is the pinning command (taskset)."""
    warmup(url, settings, headers=headers, prefix=prefix)
    return measure(url, settings, headers=headers, prefix=prefix)
