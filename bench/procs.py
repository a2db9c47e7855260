"""Child processes for a benchmark run: free loopback ports, CPU pinning, bounded waits, clean stops.

Every process is started in its own session and stopped with SIGTERM (then
SIGKILL after a bounded wait), so a run never leaves anything behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Pinning:
    """Which CPU the load generator and the servers run on.

    On a 2-core machine the load generator (wrk or the gRPC client) gets one
    core and the whole server side (Envoy and the decision server) the other,
    so the client never steals the servers' CPU and every scenario has the same
    budget: one core for the thing measured.
    """

    client_cpu: str | None
    server_cpu: str | None

    @classmethod
    def choose(cls, enabled: bool) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if not enabled or len(cpus) < 2 or shutil.which("taskset") is None:
            return cls(None, None)
        return cls(str(cpus[0]), str(cpus[1]))

    @property
    def active(self) -> bool:
        return self.client_cpu is not None

    def describe(self) -> str:
        if not self.active:
            return "no CPU pinning (taskset missing, fewer than 2 CPUs, or --no-pin)"
        return f"taskset: load generator on CPU {self.client_cpu}; Envoy and decision servers on CPU {self.server_cpu}"

    def client(self, cmd: Sequence[str]) -> list[str]:
        return _pinned(self.client_cpu, cmd)

    def server(self, cmd: Sequence[str]) -> list[str]:
        return _pinned(self.server_cpu, cmd)


def _pinned(cpu: str | None, cmd: Sequence[str]) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if cpu is not None else list(cmd)


class Proc:
    """A started child whose output goes to a temporary file (read back when it fails)."""

    def __init__(self, name: str, cmd: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            list(cmd),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self, limit: int = 4000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-limit:]

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.output()}")

    def stop(self, timeout: float = 5.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(timeout)
        self.log.close()


@contextlib.contextmanager
def running(name: str, cmd: Sequence[str], env: dict[str, str] | None = None) -> Iterator[Proc]:
    proc = Proc(name, cmd, env)
    try:
        yield proc
    finally:
        proc.stop()


def wait_tcp(proc: Proc, port: int, timeout: float = 15.0) -> None:
    """Wait until ``port`` on loopback accepts connections (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not listen on port {port} within {timeout:.0f}s:\n{proc.output()}")


def http_status(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> int:
    """Status of one GET (0 when the connection fails)."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return 0


def wait_http_ok(proc: Proc, url: str, headers: dict[str, str] | None = None, timeout: float = 15.0) -> None:
    """Wait until ``url`` answers 200 (bounded): the scenario is wired and allowing."""
    deadline = time.monotonic() + timeout
    last = 0
    while time.monotonic() < deadline:
        proc.check_alive()
        last = http_status(url, headers)
        if last == 200:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f}s (last status {last}):\n{proc.output()}")
