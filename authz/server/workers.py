"""``--workers N``: a supervisor process and N worker processes sharing one store.

Python runs one event loop on one core, so authz scales on a host by
processes. The supervisor starts N copies of ``authz serve`` (the same
options, ``--worker-index i``), forwards SIGTERM, SIGINT and SIGHUP to them,
restarts a worker that dies (at most once a second), and exits when all of
them have stopped after a SIGTERM.

How calls reach the workers:

* **gRPC**: worker *i* listens on the ``--grpc-listen`` port + *i*. Envoy
  multiplexes every check over a few HTTP/2 connections, so a shared port
  (SO_REUSEPORT balances *connections*) leaves workers idle; measured on this
  project, one of two workers got no checks at all in 2 runs of 6. Listing
  each worker as an endpoint of Envoy's ``authz`` cluster lets Envoy's load
  balancer spread *calls* (``envoy/envoy-workers.yaml``).
* **HTTP door**: every worker listens on the same port with SO_REUSEPORT.
  HTTP/1.1 proxies (Envoy ``http_service``, nginx, Traefik, Caddy) open one
  connection per concurrent request, so the kernel's spreading of
  connections spreads requests.

The admin API (``--admin-listen``) is served by worker 0 alone, on the
configured port: it reads and changes the shared store the same from any
worker, and one address is what operators and the CLI call. Its decision
ring and watchers are worker 0's (each worker's decision log file has every
decision of that worker). ``AUTHZ_ADMIN_TOKENS`` and ``AUTHZ_MASTER_KEY`` are
passed to the workers in their environment, never on their command line.

Workers need a shared store (Redis): with the memory store each would keep
its own nonces and buckets (``Settings.validate`` refuses it).

Metrics: the supervisor alone listens on ``--metrics-listen``; each worker
leaves its numbers in a temporary directory the supervisor made (and
removes), and one scrape answers with all of them summed
(``authz.server.metrics``). SIGUSR1 (reopen the decision log) is forwarded
too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from types import FrameType
from typing import Any

from authz.server.admin_auth import TOKENS_ENV
from authz.settings import Settings

log = logging.getLogger("authz.workers")

#: the keystore's master key variable (--master-key-file's alternative), passed to workers as it is
MASTER_KEY_ENV = "AUTHZ_MASTER_KEY"
#: a worker that dies is started again after this many seconds
RESTART_DELAY_S = 1.0


def worker_args(settings: Settings, index: int) -> list[str]:
    """The command line of worker ``index``: every setting, spelled as ``authz serve`` options."""
    args = [sys.executable, "-m", "authz", "serve"]
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if f.name in ("workers", "worker_index"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{f.name.replace('_', '-')}")
        else:
            args += [flag, str(value)]
    return [*args, "--worker-index", str(index), "--workers", "1"]


def supervise(settings: Settings) -> int:
    """Run ``settings.workers`` workers until SIGTERM; returns the exit status."""
    from authz.server.metrics import Aggregator, serve_aggregate

    aggregator: Aggregator | None = None
    metrics_server = None
    if settings.metrics_listen:
        metrics_dir = tempfile.mkdtemp(prefix="authz-metrics-")
        aggregator = Aggregator(metrics_dir)
        try:
            metrics_server = serve_aggregate(aggregator, settings.metrics_listen)
        except BaseException:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            raise
        settings = dataclasses.replace(settings, metrics_dir=metrics_dir)
    try:
        return _supervise(settings, aggregator)
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        if aggregator is not None:
            shutil.rmtree(aggregator.dir, ignore_errors=True)


def _supervise(settings: Settings, aggregator: Any) -> int:
    # the command line says it all, but for secrets, which never go on a command line
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_") or k in (TOKENS_ENV, MASTER_KEY_ENV)}
    procs: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def start(index: int) -> None:
        procs[index] = subprocess.Popen(worker_args(settings, index), env=env)  # noqa: S603 - our own command
        log.info("worker %d started (pid %d)", index, procs[index].pid)

    def forward(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, forward)
    for index in range(settings.workers):
        start(index)
    log.info("authz supervising %d workers (gRPC from %s, HTTP %s)", settings.workers, settings.grpc_listen, settings.http_listen or "off")
    last_start: dict[int, float] = {}
    status = 0
    while True:
        time.sleep(0.2)
        alive = 0
        for index, proc in list(procs.items()):
            code = proc.poll()
            if code is None:
                alive += 1
                continue
            if stopping:
                status = status or code
                continue
            if time.monotonic() - last_start.get(index, 0.0) < RESTART_DELAY_S:
                alive += 1
                continue
            log.error("worker %d exited with %s; starting it again", index, code)
            if aggregator is not None:
                aggregator.worker_exited(index)  # its counts stay in the totals
            last_start[index] = time.monotonic()
            start(index)
            alive += 1
        if stopping and alive == 0:
            log.info("all workers stopped")
            return status
