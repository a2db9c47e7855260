"""``python -m bench``: every load scenario, then every micro benchmark, as two tables.

    python -m bench                       # everything (about 90 s of load plus start-ups)
    python -m bench --only a,c --duration 3
    python -m bench --only micro

Ratios are computed only between rows of the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import pkgutil
import platform
import sys
import time

from bench import HERE, wrk
from bench.procs import Pinning
from bench.scenarios import SCENARIOS, Row, envoy_version, new_run, run_one

KEYS = (*SCENARIOS, "micro")


def _options(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(KEYS), help=f"comma-separated subset of {','.join(KEYS)} (default: all)")
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per scenario (default 8)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each measurement (default 2)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections / gRPC client concurrency (default 32)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--micro-duration", type=float, default=1.0, help="seconds per micro measurement (default 1)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    opts = p.parse_args(argv)
    chosen = [k.strip() for k in opts.only.split(",") if k.strip()]
    unknown = sorted(set(chosen) - set(KEYS))
    if unknown:
        p.error(f"unknown scenario(s) {','.join(unknown)}; choose from {','.join(KEYS)}")
    if opts.duration <= 0 or opts.connections < 1 or opts.threads < 1 or opts.connections < opts.threads:
        p.error("--duration must be > 0 and 1 <= --threads <= --connections")
    opts.keys = [k for k in KEYS if k in chosen]
    return opts


def _header(pinning: Pinning, settings: wrk.WrkSettings, envoy: str) -> list[str]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return [
        f"authz benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} at start, Python {platform.python_version()}, Envoy {envoy}",
        f"load: {settings.describe()}, GET to loopback; Envoy --concurrency 1, routes are direct_response (no upstream)",
        f"pinning: {pinning.describe()}",
        "every ratio compares rows of this run only; a noisy shared machine moves absolute numbers by 10-20 %",
    ]


def _fmt_ratio(num: Row, den: Row | None) -> str:
    if den is None or not den.measured or not num.measured:
        return "-"
    return f"{num.rps / den.rps:.2f}"


def load_table(rows: list[Row]) -> str:
    by_key = {r.key: r for r in rows}
    head = ("", "scenario", "req/s", "p50 ms", "p99 ms", "vs (a)", "vs (b)", "vs floor", "errors")
    lines = [head]
    for r in rows:
        floor_key = SCENARIOS[r.key][1]
        if not r.measured:
            lines.append((f"({r.key})", r.title, r.note, "", "", "", "", "", ""))
            continue
        ratio = _fmt_ratio(r, by_key.get(floor_key)) if floor_key else "-"
        floor = f"{ratio} of ({floor_key})" if ratio != "-" else "-"
        lines.append(
            (f"({r.key})", r.title, f"{r.rps:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}",
             _fmt_ratio(r, by_key.get("a")), _fmt_ratio(r, by_key.get("b")), floor, str(r.errors))
        )
    return _render(lines)


def _render(lines: list[tuple[str, ...]]) -> str:
    # a note on an unmeasured row spans the numeric columns: keep it out of the width computation
    measured = [ln for ln in lines if ln[3] != "" or ln is lines[0]]
    widths = [max(len(ln[i]) for ln in measured) for i in range(len(lines[0]))]
    out = []
    for n, ln in enumerate(lines):
        if ln[3] == "" and n:
            out.append(f"{ln[0]:<{widths[0]}}  {ln[1]:<{widths[1]}}  {ln[2]}")
            continue
        cells = [f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(ln, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def micro_modules() -> list[str]:
    """Every ``bench/micro_*.py``, in name order."""
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("micro_"))


def micro_table(duration_s: float) -> str:
    rows: list[tuple[str, ...]] = [("module", "measurement", "value", "unit")]
    for name in micro_modules():
        try:
            module = importlib.import_module(f"bench.{name}")
            results = module.run(duration_s)
        except Exception as exc:  # one broken module must not hide the others
            rows.append((name, f"failed: {type(exc).__name__}: {exc}"[:100], "", ""))
            continue
        for label, value, unit in results:
            rows.append((name, label, f"{value:,.2f}", unit))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    out = []
    for n, r in enumerate(rows):
        out.append(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    opts = _options(argv)
    settings = wrk.WrkSettings(opts.threads, opts.connections, opts.duration, opts.warmup)
    pinning = Pinning.choose(not opts.no_pin)
    load_keys = [k for k in opts.keys if k != "micro"]
    started = time.monotonic()
    if load_keys:
        run, tmp = new_run(pinning, settings)
        with tmp:
            print("\n".join(_header(pinning, settings, envoy_version(run.envoy))), flush=True)
            rows = []
            for key in load_keys:
                print(f"  running ({key}) ...", file=sys.stderr, flush=True)
                rows.append(run_one(key, run))
        print()
        print(load_table(rows))
    if "micro" in opts.keys:
        print()
        print(f"micro benchmarks (single process, unpinned, {opts.micro_duration:g}s each; lower is better for µs/op)")
        print(micro_table(opts.micro_duration))
    print(f"\n(done in {time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
