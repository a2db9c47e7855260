"""What a process has cost so far, read from Linux ``/proc``: CPU time, resident memory, children.

The parsers take the file's text, so they are tested on fixed samples; the
readers around them open ``/proc/<pid>/...``. A process that has exited
reads as 0 (its cost is gone with it; the caller sees the row as suspicious).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class Stat:
    """The fields of ``/proc/<pid>/stat`` the bench uses."""

    pid: int
    comm: str
    ppid: int
    utime: int  # clock ticks in user mode
    stime: int  # clock ticks in kernel mode

    @property
    def ticks(self) -> int:
        return self.utime + self.stime


def parse_stat(text: str) -> Stat:
    """Parse one ``/proc/<pid>/stat`` line.

    The command name (field 2) is in parentheses and may itself hold spaces
    and parentheses, so the fields are counted from the *last* ``)``.
    """
    head, sep, rest = text.rpartition(")")
    if not sep:
        raise ValueError(f"not a /proc stat line: {text[:80]!r}")
    pid_text, _, comm = head.partition(" (")
    fields = rest.split()
    # rest starts at field 3 (state): ppid is field 4, utime 14, stime 15 (1-based, proc(5))
    if len(fields) < 13:
        raise ValueError(f"short /proc stat line: {text[:80]!r}")
    return Stat(int(pid_text), comm, int(fields[1]), int(fields[11]), int(fields[12]))


def parse_rss_kib(status_text: str) -> int:
    """VmRSS in KiB from ``/proc/<pid>/status`` (0 for a zombie, which has none)."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split(":", 1)[1].split()
            if unit != "kB":
                raise ValueError(f"unexpected VmRSS unit {unit!r}")
            return int(value)
    return 0


def stat(pid: int) -> Stat | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError):
        return None


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time the given processes have used so far, added up."""
    ticks = 0
    for pid in pids:
        s = stat(pid)
        ticks += s.ticks if s is not None else 0
    return ticks / CLK_TCK


def rss_bytes(pid: int) -> int:
    try:
        return parse_rss_kib((PROC / str(pid) / "status").read_text()) * 1024
    except OSError:
        return 0


def children_of(parent: int, stats: Iterable[Stat]) -> list[int]:
    """The pids whose parent is ``parent``, in pid order."""
    return sorted(s.pid for s in stats if s.ppid == parent)


def all_stats() -> list[Stat]:
    out = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            s = stat(int(entry.name))
            if s is not None:
                out.append(s)
    return out


def children(parent: int) -> list[int]:
    """The live children of ``parent`` (the workers of an ``authz serve --workers N`` supervisor)."""
    return children_of(parent, all_stats())


def per_unit(seconds: float, count: int) -> float:
    """CPU microseconds per counted unit (0 when nothing was counted)."""
    return 1e6 * seconds / count if count > 0 else 0.0


def cpu_by_role(pids: Mapping[str, Iterable[int]]) -> dict[str, float]:
    """CPU seconds so far per role ("authz", "envoy", "redis"), each role a set of pids."""
    return {role: cpu_seconds(ps) for role, ps in pids.items()}


def cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def worker_index(args: list[str]) -> int | None:
    """The ``--worker-index`` of an ``authz serve`` worker's command line, or None."""
    if "--worker-index" in args:
        i = args.index("--worker-index")
        if i + 1 < len(args):
            return int(args[i + 1])
    return None


def workers_of(supervisor: int, count: int) -> list[int]:
    """The pids of a supervisor's ``count`` workers, worker 0 first; fewer when some are not up."""
    by_index = {}
    for pid in children(supervisor):
        index = worker_index(cmdline(pid))
        if index is not None:
            by_index[index] = pid
    return [by_index[i] for i in range(count) if i in by_index]
