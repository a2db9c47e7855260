"""bench/procstat.py: /proc parsing for the bench's CPU-per-decision and RSS figures."""

from __future__ import annotations

import os
import time

import pytest

from bench import procstat

# a real line (python3 under taskset), with a command name that holds a space and parentheses
LINE = (
    "4242 (python3 (x) y) S 4200 4242 1147 0 -1 4194560 5273 0 0 0 731 129 0 0 20 0 5 0 790129 "
    "1054715904 19683 18446744073709551615 1 1 0 0 0 0 0 16781312 17642 0 0 0 17 1 0 0 0 0 0"
)


def test_parse_stat_counts_fields_after_the_last_parenthesis() -> None:
    s = procstat.parse_stat(LINE)
    assert (s.pid, s.comm, s.ppid, s.utime, s.stime) == (4242, "python3 (x) y", 4200, 731, 129)
    assert s.ticks == 860


@pytest.mark.parametrize("bad", ["", "4242 python3 S 1 2", "4242 (x) S 1 2 3"])
def test_parse_stat_refuses_what_is_not_a_stat_line(bad: str) -> None:
    with pytest.raises(ValueError):
        procstat.parse_stat(bad)


def test_parse_rss_kib() -> None:
    status = "Name:\tauthz\nVmPeak:\t  900000 kB\nVmRSS:\t   73512 kB\nRssAnon:\t   60000 kB\n"
    assert procstat.parse_rss_kib(status) == 73512
    assert procstat.parse_rss_kib("Name:\tzombie\nState:\tZ (zombie)\n") == 0


def test_children_of_picks_by_parent_pid() -> None:
    stats = [
        procstat.Stat(10, "authz", 1, 0, 0),
        procstat.Stat(12, "python", 10, 5, 5),
        procstat.Stat(11, "python", 10, 5, 5),
        procstat.Stat(13, "other", 12, 0, 0),
    ]
    assert procstat.children_of(10, stats) == [11, 12]
    assert procstat.children_of(99, stats) == []


def test_worker_index_reads_the_worker_command_line() -> None:
    args = ["python", "-m", "authz", "serve", "--grpc-listen", "127.0.0.1:9191", "--worker-index", "1", "--workers", "1"]
    assert procstat.worker_index(args) == 1
    assert procstat.worker_index(["python", "-m", "authz", "serve"]) is None


def test_per_unit_is_microseconds_per_count() -> None:
    assert procstat.per_unit(0.5, 1000) == pytest.approx(500.0)
    assert procstat.per_unit(0.5, 0) == 0.0


def test_cpu_seconds_of_this_process_grows_with_work_and_a_gone_pid_reads_zero() -> None:
    before = procstat.cpu_seconds([os.getpid()])
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # bounded busy work: 50 ms of CPU
        pass
    assert procstat.cpu_seconds([os.getpid()]) > before
    assert procstat.cpu_seconds([2**22 + 12345]) == 0.0  # above pid_max: never a process
    assert procstat.rss_bytes(os.getpid()) > 1024 * 1024
