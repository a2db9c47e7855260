"""``make demo``: real Envoy in front of an echo upstream, asking authz about every request.

Starts, on loopback:

* an echo upstream that answers every request with the method, path and
  headers it received (so you can see the x-authz-* headers authz added);
* ``authz serve`` with examples/policy.yaml;
* Envoy with envoy/envoy.yaml, the example config, unchanged when its ports
  (10000, 8080, 9191, 9901) are free, else with free ports substituted;

prints ``curl`` lines for an allowed, a denied and a rate-limited request,
streams Envoy's access log (one JSON line per request, with authz's
decision id and reason), and stops everything on Ctrl-C (or after
``--seconds``).
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.procs import (  # noqa: E402 - needs the repository root on sys.path
    ENVOY_YAML,
    LOOPBACK,
    EchoUpstream,
    Proc,
    envoy_ports,
    free_port,
    http_request,
    render_envoy_config,
    start_authz,
    start_envoy,
)

POLICY = ROOT / "examples" / "policy.yaml"


def _options(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/demo.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", default=str(POLICY), help="policy file for authz (default: examples/policy.yaml)")
    p.add_argument("--free-ports", action="store_true", help="always use free ports instead of the config's")
    p.add_argument("--seconds", type=float, default=0.0, help="stop after this many seconds (default: wait for Ctrl-C)")
    return p.parse_args(argv)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _cluster_port(config: str, name: str) -> int:
    """The port of a static cluster's first endpoint."""
    import yaml

    conf = yaml.safe_load(config)
    (cluster,) = [c for c in conf["static_resources"]["clusters"] if c["name"] == name]
    ep = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    return int(ep["address"]["socket_address"]["port_value"])


def choose_ports(force_free: bool) -> dict[str, int]:
    """The example config's ports, or a free port for each one that is taken."""
    text = ENVOY_YAML.read_text()
    wanted = {**envoy_ports(text), "upstream": _cluster_port(text, "upstream"), "authz": _cluster_port(text, "authz")}
    chosen = {}
    for name, port in wanted.items():
        if force_free or not _port_free(port):
            chosen[name] = free_port()
            if not force_free:
                print(f"port {port} ({name}) is taken; using {chosen[name]}")
        else:
            chosen[name] = port
    return chosen


def curl_lines(base: str) -> str:
    return f"""
Try it (in another terminal):

  # allowed: the upstream echoes the x-authz-* headers authz added; RateLimit headers on the answer
  curl -i {base}/api/hello

  # denied by route: 403 with {{"error": "route.deny", "decision_id": ...}}; never reaches the upstream
  curl -i {base}/admin/users

  # a forged identity header is removed before the upstream sees it
  curl -s -H 'x-authz-subject: admin' {base}/api/hello

  # rate-limited: 5 requests per 10 s per client, then 429 with Retry-After
  for i in $(seq 7); do curl -s -o /dev/null -w '%{{http_code}}\\n' {base}/api/hello; done

Envoy's access log follows (Ctrl-C stops everything).
"""


def _follow(envoy: Proc, seen: int) -> int:
    """Print the access-log lines Envoy wrote since the last call; returns how many lines were read."""
    lines = envoy.log_text().splitlines()
    if len(lines) < seen:  # the 64 KiB window moved on
        seen = 0
    for line in lines[seen:]:
        if line.startswith("{"):
            print(line, flush=True)
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    opts = _options(argv)
    ports = choose_ports(opts.free_ports)
    stop_at = time.monotonic() + opts.seconds if opts.seconds > 0 else None
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    with EchoUpstream(port=ports["upstream"]) as upstream:
        authz, _ = start_authz(opts.policy, port=ports["authz"])
        with authz:
            config = render_envoy_config(ENVOY_YAML, ports)
            envoy, _ = start_envoy(config)
            with envoy:
                base = f"http://{LOOPBACK}:{ports['ingress']}"
                print(f"upstream {upstream.url}  authz {LOOPBACK}:{ports['authz']}  envoy {base}  admin http://{LOOPBACK}:{ports['admin']}")
                ok = http_request(base + "/healthz")[0]
                denied = http_request(base + "/admin/users")[0]
                print(f"self-check: GET /healthz -> {ok}, GET /admin/users -> {denied}")
                print(curl_lines(base), flush=True)
                seen = 0
                while not stopping and (stop_at is None or time.monotonic() < stop_at):
                    if not (authz.alive and envoy.alive):
                        print("authz or Envoy exited:\n" + authz.tail() + "\n" + envoy.tail(), file=sys.stderr)
                        return 1
                    seen = _follow(envoy, seen)
                    time.sleep(0.2)
            _follow(envoy, seen)  # what Envoy flushed on its way out
    print("stopped")
    return 0 if ok == 200 and denied == 403 else 1


if __name__ == "__main__":
    sys.exit(main())
