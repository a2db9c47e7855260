"""``python -m bench``: every load scenario, then every micro benchmark, as two tables.

    python -m bench                       # everything (see docs/benchmarks.md for how long)
    python -m bench --only a,c --duration 3
    python -m bench --only i,m,memory --latency-duration 0
    python -m bench --only micro
    python -m bench compare bench/results/A.json bench/results/B.json

Ratios are computed only between rows of the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import pkgutil
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench import HERE, memory, results, wrk
from bench.memory import MemoryResult
from bench.procs import Pinning
from bench.scenarios import REDIS_CPU_TARGET, SCENARIOS, TWINS, Row, envoy_version, new_run, redis_added_cpu, run_one

KEYS = (*SCENARIOS, "memory", "micro")
RESULTS = HERE / "results"


def _options(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(KEYS), help=f"comma-separated subset of {','.join(KEYS)} (default: all)")
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per scenario (default 8)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each measurement (default 2)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections / gRPC client concurrency (default 32)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--latency-duration", type=float, default=5.0, help="seconds of k6 open-loop load at half of each Envoy scenario's maximum (default 5; 0: none)")
    p.add_argument("--identities", type=int, default=100_000, help="distinct client addresses driven into authz on the memory store (default 100000)")
    p.add_argument("--redis-identities", type=int, default=20_000, help="distinct client addresses driven into authz on Redis (default 20000)")
    p.add_argument("--micro-duration", type=float, default=1.0, help="seconds per micro measurement (default 1)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--json", metavar="FILE", help="write the results here (default: bench/results/<UTC time>.json)")
    opts = p.parse_args(argv)
    chosen = [k.strip() for k in opts.only.split(",") if k.strip()]
    unknown = sorted(set(chosen) - set(KEYS))
    if unknown:
        p.error(f"unknown scenario(s) {','.join(unknown)}; choose from {','.join(KEYS)}")
    if opts.duration <= 0 or opts.connections < 1 or opts.threads < 1 or opts.connections < opts.threads:
        p.error("--duration must be > 0 and 1 <= --threads <= --connections")
    if opts.latency_duration < 0 or opts.identities < 1 or opts.redis_identities < 1:
        p.error("--latency-duration must be >= 0, --identities and --redis-identities >= 1")
    opts.keys = [k for k in KEYS if k in chosen]
    return opts


def _header(pinning: Pinning, settings: wrk.WrkSettings, envoy: str, latency_s: float) -> list[str]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    k6_line = f"open loop: k6 constant-arrival-rate at half of each row's req/s for {latency_s:g}s" if latency_s > 0 else "open loop: off"
    return [
        f"authz benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} at start, Python {platform.python_version()}, Envoy {envoy}",
        f"load: {settings.describe()}, GET to loopback; Envoy --concurrency 1, routes are direct_response (no upstream)",
        k6_line,
        f"pinning: {pinning.describe()}",
        "every ratio compares rows of this run only; a noisy shared machine moves absolute numbers by 10-20 %",
    ]


def _fmt_ratio(num: Row, den: Row | None) -> str:
    if den is None or not den.measured or not num.measured:
        return "-"
    return f"{num.rps / den.rps:.2f}"


def _us(row: Row, role: str) -> str:
    value = row.cpu_us.get(role)
    return f"{value:,.0f}" if value else "-"


def load_table(rows: list[Row]) -> str:
    by_key = {r.key: r for r in rows}
    head = ("", "scenario", "req/s", "p50 ms", "p99 ms", "vs (a)", "vs (b)", "vs ref", "errors", "server µs", "envoy µs", "redis µs", "RT/dec")
    lines: list[tuple[str, ...]] = [head]
    for r in rows:
        ref_key = SCENARIOS[r.key][1]
        if not r.measured:
            lines.append((f"({r.key})", r.title, r.note, *([""] * (len(head) - 3))))
            continue
        ratio = _fmt_ratio(r, by_key.get(ref_key)) if ref_key else "-"
        ref = f"{ratio} of ({ref_key})" if ratio != "-" else "-"
        rt = f"{r.rt_per_decision:.2f}" if r.rt_per_decision is not None else "-"
        lines.append(
            (f"({r.key})", r.title, f"{r.rps:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}",
             _fmt_ratio(r, by_key.get("a")), _fmt_ratio(r, by_key.get("b")), ref, str(r.errors),
             _us(r, "server"), _us(r, "envoy"), _us(r, "redis"), rt)
        )  # fmt: skip
    return _render(lines)


def twins_table(rows: list[Row]) -> str:
    """Each Redis row against its memory-store twin of the same run: throughput kept, authz CPU Redis adds."""
    by_key = {r.key: r for r in rows}
    lines: list[tuple[str, ...]] = [("", "scenario", "vs twin", "server µs/dec", "Redis adds", "target", "redis µs")]
    for r in rows:
        twin = by_key.get(TWINS.get(r.key, ""))
        if twin is None or not r.measured or not twin.measured:
            continue
        added = redis_added_cpu(r, twin)
        target = REDIS_CPU_TARGET.get(r.key)
        verdict = "-"
        if target is not None and added is not None:
            verdict = f"<= {target:+.0%}: {'met' if added <= target else 'missed'}"
        lines.append((
            f"({r.key})", r.title, f"{r.rps / twin.rps:.2f} of ({twin.key})",
            f"{_us(r, 'server')} vs {_us(twin, 'server')}", f"{added:+.0%}" if added is not None else "-", verdict, _us(r, "redis"),
        ))  # fmt: skip
    return _render(lines) if len(lines) > 1 else ""


def redis_notes(rows: list[Row], duration_s: float) -> str:
    out = []
    for r in rows:
        if r.rt_per_decision is None:
            continue
        other = ", ".join(f"{k} {v}" for k, v in sorted(r.other_commands.items())) or "none"
        inside = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.script_commands.items())) or "none"
        out.append(
            f"({r.key}) {r.decisions:,} decisions, {r.rt_per_decision:.3f} EVALSHA each (inside it, per decision: {inside}); "
            f"other client commands in the {duration_s:g}s: {other}"
        )
    return "\n".join(out)


def workers_table(rows: list[Row]) -> str:
    lines: list[tuple[str, ...]] = [("", "worker", "endpoint", "Checks", "share", "CPU µs/dec")]
    for r in rows:
        if not r.workers:
            continue
        total = sum(w.decisions for w in r.workers)
        for w in r.workers:
            share = f"{w.decisions / total:.2f}" if total else "-"
            lines.append((f"({r.key})", str(w.index), w.endpoint, f"{w.decisions:,}", share, f"{w.cpu_us_per_decision:,.0f}" if w.decisions else "-"))
        lines.append((f"({r.key})", "all", f"Envoy counted {r.decisions:,}", f"{total:,}", "", _us(r, "server")))
    return _render(lines) if len(lines) > 1 else ""


def latency_table(rows: list[Row]) -> str:
    lines: list[tuple[str, ...]] = [("", "scenario", "offered/s", "p50 ms", "p99 ms", "p99.9 ms", "dropped", "failed")]
    for r in rows:
        lat = r.latency
        if lat is None:
            note = r.latency_note or ("not measured" if not r.measured else "no Envoy: not measured (k6 speaks HTTP)")
            lines.append((f"({r.key})", r.title, note, "", "", "", "", ""))
            continue
        if not lat.offered_fully:
            # k6 measured its own queue, not the server's latency: no percentiles (the JSON keeps them)
            lines.append((f"({r.key})", r.title, f"{lat.rate:,} *", "k6-bound", "k6-bound", "k6-bound", f"{lat.dropped:,}", f"{lat.failed:,}"))
            continue
        lines.append((f"({r.key})", r.title, f"{lat.rate:,}", f"{lat.p50_ms:.2f}", f"{lat.p99_ms:.2f}", f"{lat.p999_ms:.2f}", f"{lat.dropped:,}", f"{lat.failed:,}"))
    text = _render(lines)
    if any(r.latency is not None and not r.latency.offered_fully for r in rows):
        text += (
            "\n* k6 could not start every arrival on its one CPU (more than 0.1 % dropped): the rate was not offered,"
            "\n  and its percentiles would be k6's own queue; they are left out here (kept in the JSON)"
        )
    return text


def memory_table(m: MemoryResult) -> str:
    mib = 1024 * 1024
    rows: list[tuple[str, str, str]] = [("measurement", "value", "unit")]
    r = m.redis
    if r is not None:
        rows += [
            (f"Redis: identities driven (distinct client addresses, {r.identities:,} found in Redis)", f"{m.redis_identities:,}", ""),
            ("Redis: Checks not allowed while driving (store past its deadline)", f"{m.redis_not_allowed:,}", ""),
            ("Redis: keys per identity", f"{r.keys_per_identity:.2f}", "keys"),
            (f"Redis: MEMORY USAGE of one identity's keys (mean of {r.sampled:,})", f"{r.memory_usage_bytes:,.0f}", "bytes"),
            ("Redis: used_memory growth / identities found", f"{r.used_memory_delta_bytes:,.0f}", "bytes"),
        ]
    rows += [
        ("memory store: identities driven (distinct client addresses)", f"{m.identities:,}", ""),
        ("memory store: Checks not allowed while driving", f"{m.not_allowed:,}", ""),
        ("memory store: authz RSS before (after a warm-up from one address)", f"{m.rss_before_bytes / mib:,.1f}", "MiB"),
        (f"memory store: authz RSS after {m.identities:,} identities", f"{m.rss_after_bytes / mib:,.1f}", "MiB"),
        ("memory store: RSS growth / identities", f"{m.rss_per_identity:,.0f}", "bytes"),
        ("memory store: pace of the drive (Python gRPC client)", f"{m.driven_rps:,.0f}", "Checks/s"),
    ]
    widths = [max(len(x[i]) for x in rows) for i in range(3)]
    out = []
    for n, x in enumerate(rows):
        out.append(f"{x[0]:<{widths[0]}}  {x[1]:>{widths[1]}}  {x[2]}".rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


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


def micro_results(duration_s: float) -> list[tuple[str, str, float | None, str]]:
    out: list[tuple[str, str, float | None, str]] = []
    for name in micro_modules():
        try:
            module = importlib.import_module(f"bench.{name}")
            results = module.run(duration_s)
        except Exception as exc:  # one broken module must not hide the others
            out.append((name, f"failed: {type(exc).__name__}: {exc}"[:100], None, ""))
            continue
        for label, value, unit in results:
            out.append((name, label, float(value), unit))
    return out


def micro_table(results: list[tuple[str, str, float | None, str]]) -> str:
    rows: list[tuple[str, ...]] = [("module", "measurement", "value", "unit")]
    rows += [(m, label, f"{v:,.2f}" if v is not None else "", u) for m, label, v, u in results]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    out = []
    for n, r in enumerate(rows):
        out.append(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _compare(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench compare", description=results.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="the earlier run's JSON")
    p.add_argument("b", type=Path, help="the later run's JSON")
    p.add_argument("--threshold", type=float, default=0.10, help="flag a change for the worse beyond this share (default 0.10)")
    opts = p.parse_args(argv)
    try:
        print(results.compare(results.load(opts.a), results.load(opts.b), opts.threshold))
    except (OSError, ValueError, KeyError) as exc:
        p.error(str(exc))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["compare"]:
        return _compare(args[1:])
    opts = _options(args)
    settings = wrk.WrkSettings(opts.threads, opts.connections, opts.duration, opts.warmup)
    pinning = Pinning.choose(not opts.no_pin)
    load_keys = [k for k in opts.keys if k in SCENARIOS]
    started = time.monotonic()
    started_utc = f"{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}"
    rows: list[Row] = []
    header: list[str] = []
    mem: MemoryResult | None = None
    if load_keys or "memory" in opts.keys:
        run, tmp = new_run(pinning, settings)
        run.latency_s = opts.latency_duration
        run.identities, run.redis_identities = opts.identities, opts.redis_identities
        with tmp:
            header = _header(pinning, settings, envoy_version(run.envoy), run.latency_s)
            print("\n".join(header), flush=True)
            for key in load_keys:
                print(f"  running ({key}) ...", file=sys.stderr, flush=True)
                rows.append(run_one(key, run))
            if "memory" in opts.keys:
                print("  running (memory) ...", file=sys.stderr, flush=True)
                try:
                    mem = memory.measure(run)
                except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as exc:
                    print(f"[memory] failed: {exc}", file=sys.stderr)
    if rows:
        print()
        print(load_table(rows))
        twins = twins_table(rows)
        if twins:
            print()
            print("Redis against its memory-store twin (same policy, same door): throughput kept, authz CPU per decision Redis adds")
            print(twins)
        notes = redis_notes(rows, opts.duration)
        if notes:
            print()
            print("Redis commands over each measured interval (INFO commandstats after CONFIG RESETSTAT)")
            print(notes)
        wt = workers_table(rows)
        if wt:
            print()
            print("decisions per worker (Envoy's requests to each worker's endpoint over the measured interval)")
            print(wt)
        if any(r.latency is not None or r.latency_note for r in rows):
            print()
            print(f"latency at a fixed offered load: half of each row's req/s, k6 constant-arrival-rate, {opts.latency_duration:g}s")
            print(latency_table(rows))
    if "memory" in opts.keys:
        print()
        print("memory per identity (bench/policies/identities.yaml: two buckets each; distinct client addresses through the gRPC door)")
        print(memory_table(mem) if mem is not None else "failed (see stderr)")
    micro: list[tuple[str, str, float | None, str]] = []
    if "micro" in opts.keys:
        micro = micro_results(opts.micro_duration)
        print()
        print(f"micro benchmarks (single process, unpinned, {opts.micro_duration:g}s each; lower is better for µs/op)")
        print(micro_table(micro))
    out = Path(opts.json) if opts.json else RESULTS / f"{started_utc.replace(':', '')}.json"
    refs = {k: SCENARIOS[k][1] for k in SCENARIOS}
    twin_keys = {k: TWINS.get(k) for k in SCENARIOS}
    settings_doc = {
        "duration_s": opts.duration, "warmup_s": opts.warmup, "connections": opts.connections, "threads": opts.threads,
        "latency_s": opts.latency_duration, "identities": opts.identities, "redis_identities": opts.redis_identities,
        "pinning": pinning.describe(),
    }  # fmt: skip
    doc = results.document(
        started=started_utc, header=header, settings=settings_doc, rows=rows, refs=refs, twins=twin_keys, memory=mem,
        micro=[(m, n, v, u) for m, n, v, u in micro if v is not None],
    )  # fmt: skip
    results.save(doc, out)
    print(f"\n(done in {time.monotonic() - started:.0f}s; results in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
