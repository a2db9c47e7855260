"""Files reloaded on change: new versions validated and swapped whole, bad ones refused, old kept."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from authz.config.cidr import CidrSet
from authz.config.watch import FileWatch, poll_all, signature
from authz.errors import ConfigError


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
