"""Files reloaded on change: new versions validated and swapped whole, bad ones refused, old kept."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from authz.clock import FixedClock
from authz.config.cidr import CidrSet
from authz.config.watch import FileWatch, poll_all, signature
from authz.decision import DecisionIds
from authz.errors import ConfigError
from authz.pipeline import Engine
from authz.policy.compile import load_policy
from authz.request import Request
from authz.store import MemoryStore

T0 = 1_700_000_000_000


def _bump(path: Path, text: str) -> None:
    """Write ``text`` and move the mtime forward, so the change shows even on coarse clocks."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


def _counter_watch(path: Path) -> tuple[FileWatch[int], list[int]]:
    installed: list[int] = []

    def load() -> int:
        text = path.read_text()
        if not text.strip().isdigit():
            raise ConfigError(str(path), 1, "value", f"not a number: {text.strip()!r}")
        return int(text)

    seen = signature((str(path),))
    installed.append(load())
    return FileWatch("counter", (str(path),), load, installed.append, seen), installed


def test_unchanged_files_are_not_read_again(tmp_path: Path) -> None:
    path = tmp_path / "n.txt"
    path.write_text("1")
    watch, installed = _counter_watch(path)
    for _ in range(3):
        result = watch.poll()
        assert not result.changed
    assert installed == [1]


def test_a_changed_file_is_loaded_and_installed(tmp_path: Path) -> None:
    path = tmp_path / "n.txt"
    path.write_text("1")
    watch, installed = _counter_watch(path)
    _bump(path, "2")
    result = watch.poll()
    assert result.reloaded and result.error is None
    assert installed == [1, 2]
    assert not watch.poll().changed  # read once per change


def test_a_bad_version_is_refused_once_and_a_good_one_later_installed(tmp_path: Path) -> None:
    path = tmp_path / "n.txt"
    path.write_text("1")
    watch, installed = _counter_watch(path)
    _bump(path, "two")
    result = watch.poll()
    assert result.changed and not result.reloaded
    assert str(result.error) == f"{path}:1: value: not a number: 'two'"
    assert installed == [1]  # the running value stays
    assert not watch.poll().changed  # the same bad file is not reported again
    _bump(path, "3")
    assert watch.poll().reloaded
    assert installed == [1, 3]


def test_a_vanished_file_is_refused_and_the_old_version_stays(tmp_path: Path) -> None:
    path = tmp_path / "n.txt"
    path.write_text("1")
    watch, installed = _counter_watch(path)
    path.unlink()
    result = watch.poll()
    assert result.error is not None and installed == [1]
    _bump(path, "4")
    assert watch.poll().reloaded and installed == [1, 4]


def test_a_file_replaced_by_rename_is_seen(tmp_path: Path) -> None:
    """Feed updaters write a new file and rename it over the old: same size, same mtime possible."""
    path = tmp_path / "n.txt"
    path.write_text("5")
    watch, installed = _counter_watch(path)
    other = tmp_path / "n.new"
    other.write_text("6")
    st = path.stat()
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only the inode differs
    os.replace(other, path)
    assert watch.poll().reloaded and installed == [5, 6]


def test_poll_all_reports_only_the_changed(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("1")
    b.write_text("1")
    wa, _ = _counter_watch(a)
    wb, _ = _counter_watch(b)
    _bump(b, "x")
    results = poll_all([wa, wb])
    assert [(r.what, r.reloaded) for r in results] == [("counter", False)]


def test_cidrset_replace_is_whole_under_concurrent_lookups() -> None:
    """Readers on other threads see the old list or the new one, never a mix or an error."""
    live = CidrSet("l")
    live.add("192.0.2.0/24", "old")
    live.add("2001:db8::/32", "old")
    new = CidrSet("l")
    new.add("192.0.2.0/24", "new")
    new.add("2001:db8::/32", "new")
    seen: set[tuple[str | None, str | None]] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add((live.match("192.0.2.1"), live.match("2001:db8::1")))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(2000):
            fresh = CidrSet("l")
            label = "new" if i % 2 else "old"
            fresh.add("192.0.2.0/24", label)
            fresh.add("2001:db8::/32", label)
            live.replace(fresh)
    finally:
        stop.set()
        reader.join(timeout=10)
    assert seen <= {("old", "old"), ("new", "new"), ("old", "new"), ("new", "old")}
    assert all(None not in pair for pair in seen)
    live.replace(new)
    assert live.size == 2 and live.match("192.0.2.9") == "new"


# an address list under a running engine


POLICY = """
version: 1
ip_lists:
  blocked: {file: blocked.txt, cidrs: ["198.51.100.0/24 inline"]}
ip: {deny: [blocked]}
routes:
  - {name: api, auth: [anonymous]}
"""


def _engine(tmp_path: Path) -> Engine:
    (tmp_path / "policy.yaml").write_text(POLICY)
    policy = load_policy(str(tmp_path / "policy.yaml"))
    return Engine(policy, MemoryStore(epoch_ms=T0), clock=FixedClock(T0), ids=DecisionIds("test"))


def _req(peer: str) -> Request:
    return Request(method="GET", path="/", host="api.example.com", peer_ip=peer)


async def test_a_changed_list_file_is_used_by_the_running_engine(tmp_path: Path) -> None:
    lst = tmp_path / "blocked.txt"
    lst.write_text("192.0.2.0/24 first\n")
    engine = _engine(tmp_path)
    policy = engine.policy
    assert (await engine.decide(_req("192.0.2.7"))).reason == "ip.denied"
    assert (await engine.decide(_req("203.0.113.7"))).reason == "ok"

    _bump(lst, "# moved\n203.0.113.0/24 second\n")
    (result,) = poll_all(policy.watches)
    assert result.reloaded and "blocked" in result.what
    assert engine.policy is policy  # the policy object is the same; the list inside was swapped
    assert (await engine.decide(_req("192.0.2.7"))).reason == "ok"
    d = await engine.decide(_req("203.0.113.7"))
    assert d.reason == "ip.denied" and ("ip.list", "blocked:second") in d.signals
    # the inline entries are part of every version
    assert (await engine.decide(_req("198.51.100.1"))).reason == "ip.denied"


async def test_a_broken_list_file_is_refused_and_the_running_list_stays(tmp_path: Path) -> None:
    lst = tmp_path / "blocked.txt"
    lst.write_text("192.0.2.0/24 first\n")
    engine = _engine(tmp_path)
    _bump(lst, "192.0.2.0/24 first\n203.0.113.0/24 ok\n203.0.113.300 typo\n")
    (result,) = poll_all(engine.policy.watches)
    assert str(result.error) == f"{lst}:3: cidr: not an IP address or CIDR block: '203.0.113.300'"
    assert (await engine.decide(_req("192.0.2.7"))).reason == "ip.denied"
    assert (await engine.decide(_req("203.0.113.7"))).reason == "ok"  # nothing of the bad version
