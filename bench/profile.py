"""Profile authz's Check path under load: Envoy -> authz over gRPC, wrk driving, py-spy sampling authz.

    python -m bench.profile --duration 10 [--native] [--top 20] [--policy full]

``--policy bench`` (the default) is scenario (c); ``--policy full`` is (o):
bench/policies/full.yaml on the memory store, wrk sending precomputed
requests once each (bench/precomputed.py), sized for the whole wrk run.

Prints the functions where authz spends its samples: by own time (the frame
that was running) and by inclusive time (on the stack). Same pinning as
``python -m bench``; py-spy runs beside wrk on the load generator's CPU.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

from bench import BENCH_POLICY, envoy_config, precomputed, procstat, wrk
from bench.procs import Pinning, free_port, running, wait_http_ok, wait_tcp
from bench.scenarios import BENCH_PATH, Run, authz_cmd, envoy_binary


def _frame(frame: str) -> str:
    # py-spy raw frames look like "decide (authz/pipeline.py:55)"; drop the line number so a function is one row
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


def _layer(frame: str) -> str:
    if frame.startswith("Runner.run "):  # the loop's own C code: uvloop, grpc's Cython, sockets
        return "event loop + gRPC core (C/Cython, below Runner.run)"
    if "(authz/" in frame:
        return "authz code (adapters, pipeline, stages, store)"
    if "(grpc/" in frame:
        return "grpc Python layer"
    if "(google/protobuf" in frame:
        return "protobuf Python layer"
    if "asyncio/" in frame or "inspect.py" in frame or "_weakrefset" in frame:
        return "asyncio Python layer"
    return "event loop + gRPC core (C/Cython, below Runner.run)"


def summarize(raw: str, top: int) -> str:
    """Own and inclusive time per function, over the main (event loop) thread only.

    Other threads (the logging queue listener, gRPC's own) wait most of the
    time; without --native py-spy cannot always tell waiting from working, so
    they would only blur the picture.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    total = other_threads = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")[1:]]  # the first frame is the thread
        if not frames or any(f.startswith("Thread.run") for f in frames):
            other_threads += n
            continue
        total += n
        own[frames[-1]] += n
        layers[_layer(frames[-1])] += n
        for f in set(frames):
            inclusive[f] += n
    if not total:
        return "no samples"
    out = [f"{total} samples of the event loop thread ({other_threads} of other threads left out)", "", "by layer (own time):"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in layers.most_common()]
    out += ["", "own time (the running frame):"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    out += ["", "inclusive time (anywhere on the stack), authz and grpc frames:"]
    mine = [(f, n) for f, n in inclusive.most_common() if "(authz/" in f or "(grpc/" in f][:top]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in mine]
    return "\n".join(out)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    return procstat.cpu_seconds([pid])


def _requests(admin_port: int) -> int:
    """Requests Envoy's listener has completed (admin stats)."""
    url = f"http://127.0.0.1:{admin_port}/stats?filter=^http\\.bench\\.downstream_rq_completed$"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return int(text.strip().rsplit(":", 1)[1])


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of sampling (default 10)")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--rate", type=int, default=250, help="samples per second (default 250)")
    p.add_argument("--native", action="store_true", help="also sample C/Cython frames (gRPC core, protobuf)")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--output", help="also keep py-spy's raw collapsed stacks in this file")
    p.add_argument("--policy", choices=("bench", "full"), default="bench", help="bench.yaml, as (c) (default), or the full policy, as (o)")
    opts = p.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    pinning = Pinning.choose(True)
    settings = wrk.WrkSettings(1, opts.connections, opts.duration + 4, 1.0)
    with tempfile.TemporaryDirectory(prefix="authz-profile-") as tmp:
        authz_port, port, admin = free_port(), free_port(), free_port()
        config = Path(tmp) / "envoy.json"
        config.write_text(
            envoy_config.bootstrap(port, admin, [envoy_config.grpc_ext_authz("authz")], [envoy_config.cluster("authz", authz_port, http2=True)])
        )
        raw = Path(opts.output) if opts.output else Path(tmp) / "raw.txt"
        run = Run(pinning, settings, envoy_binary(), Path(tmp))
        policy = run.full_policy()[1] if opts.policy == "full" else BENCH_POLICY
        with running("authz", pinning.server(authz_cmd(run, authz_port, policy=policy))) as server:
            wait_tcp(server, authz_port)
            ready_s = time.time()
            envoy_cmd = [run.envoy, "-c", str(config), "--concurrency", "1", "--disable-hot-restart", "-l", "warning"]
            with running("envoy", pinning.server(envoy_cmd)) as envoy:
                wait_tcp(envoy, port, timeout=30)
                url, headers, script = f"http://127.0.0.1:{port}{BENCH_PATH}", None, []
                if opts.policy == "full":
                    traffic = precomputed.Traffic(run.full_policy()[0], f"http://127.0.0.1:{port}", ready_s)
                    url, headers = traffic.probe()
                    n = precomputed.sized(opts.duration + 4, precomputed.CEILING_RPS["grpc"])
                    reqs = traffic.write_wrk(Path(tmp) / "wrk-profile.txt", n)
                    script = ["-s", str(precomputed.write_wrk_script(Path(tmp)))]
                wait_http_ok(envoy, url, headers)
                if opts.policy == "full":
                    traffic.wait_until_valid()
                load = subprocess.Popen(
                    pinning.client(["wrk", "-t1", f"-c{opts.connections}", f"-d{round(opts.duration + 4)}s", "--latency", *script, url,
                                    *([str(reqs), "1"] if script else [])]),
                    stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                try:
                    subprocess.run(["sleep", "1.5"], check=True)  # let the load settle first
                    spy = [pyspy, "record", "-p", str(server.pid), "-d", str(round(opts.duration)), "-r", str(opts.rate),
                           "-f", "raw", "-o", str(raw)]
                    # native unwinding must pause the process; Python-only sampling need not
                    spy.append("--native" if opts.native else "--nonblocking")
                    cpu0 = {p.name: _cpu_seconds(p.pid) for p in (server, envoy)}
                    rq0, t0 = _requests(admin), time.monotonic()
                    done = subprocess.run(pinning.client(spy), capture_output=True, text=True, timeout=opts.duration + 60)
                    elapsed, requests = time.monotonic() - t0, _requests(admin) - rq0
                    cpu = {p.name: _cpu_seconds(p.pid) - cpu0[p.name] for p in (server, envoy)}
                    if done.returncode != 0:
                        raise SystemExit(f"py-spy failed: {done.stderr.strip()[-2000:]}")
                finally:
                    out, _ = load.communicate(timeout=opts.duration + 30)
        res = wrk.parse(out)
        if res.ran_out:
            raise SystemExit(f"the precomputed requests ran out ({res.precomputed_total:,}): raise precomputed.CEILING_RPS['grpc']")
        print(f"authz on {policy.name} under wrk -t1 -c{opts.connections} through Envoy (gRPC ext_authz), {pinning.describe()}")
        print(f"wrk: {res.rps:,.0f} req/s, {res.errors:,} errors (non-2xx or socket)")
        print(f"while sampling: {requests / elapsed:,.0f} req/s (py-spy{' --native pauses the process and' if opts.native else ''} costs some)")
        for name, seconds in cpu.items():
            print(f"  {name}: {100 * seconds / elapsed:.0f}% of a CPU, {1e6 * seconds / max(requests, 1):.0f} µs CPU per request")
        print(summarize(raw.read_text(), opts.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
