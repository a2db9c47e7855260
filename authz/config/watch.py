"""Files a policy was read from, re-read when they change, swapped whole.

Address lists, the hosting ASN list and the GeoIP databases live in files
that change more often than the policy (feeds, monthly database releases). A
``FileWatch`` remembers what each file looked like when it was read (device,
inode, size, modification time); ``poll()`` looks again and, when something
changed, loads and validates the new version in full and hands it to
``install``, which swaps it in with one assignment. A version that does not
load (a syntax error, a truncated database, a file that vanished) is refused
and the running one stays; the refusal names the file and the line.

Polling is the server's job (a background task, every few seconds, in a
worker thread so that no ``stat`` or read ever runs on the event loop). The
policy object itself never changes: what it holds is a reference that the
watch swaps (``CidrSet.replace``, a database slot of ``Geo``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from authz.errors import ConfigError

T = TypeVar("T")

#: what a file looked like: (device, inode, size, mtime in ns), or None when it cannot be stat'ed
Signature = tuple[tuple[int, int, int, int] | None, ...]


def signature(paths: Iterable[str]) -> Signature:
    """How the files look now; a change in any part means "read it again"."""
    out: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll of one watch found: nothing, a new version in force, or a refused one."""

    what: str
    changed: bool = False
    error: ConfigError | None = None

    @property
    def reloaded(self) -> bool:
        return self.changed and self.error is None


class FileWatch(Generic[T]):
    """One reloadable part of a policy: its files, how to load them, where to install the result.

    :param what: what this is, for log lines ("address list 'tor'")
    :param paths: the files ``load`` reads
    :param load: reads and validates the files in full; raises ``ConfigError``
    :param install: puts a loaded value in force (one assignment: atomic for readers)
    :param seen: the files' signature when the running value was read (take it before reading)
    """

    __slots__ = ("what", "paths", "_load", "_install", "_seen")

    def __init__(
        self,
        what: str,
        paths: tuple[str, ...],
        load: Callable[[], T],
        install: Callable[[T], None],
        seen: Signature,
    ) -> None:
        self.what = what
        self.paths = paths
        self._load = load
        self._install = install
        self._seen = seen

    def poll(self) -> PollResult:
        """Look at the files; load, validate and install a changed version.

        A version that does not load is returned as the result's ``error``
        (a ``ConfigError``; an ``OSError`` becomes one), never raised.

        A version that changed again while it was being read is installed
        (it validated) but read once more at the next poll; a refused
        version is not read again until the files change once more, so one
        bad file is logged once.
        """
        now = signature(self.paths)
        if now == self._seen:
            return PollResult(self.what)
        try:
            value = self._load()
        except (ConfigError, OSError) as exc:
            if signature(self.paths) == now:
                self._seen = now
            if isinstance(exc, OSError):
                exc = ConfigError(self.paths[0] if self.paths else self.what, 0, "", f"cannot read: {exc.strerror or exc}")
            return PollResult(self.what, changed=True, error=exc)
        self._install(value)
        if signature(self.paths) == now:
            self._seen = now
        return PollResult(self.what, changed=True)


def poll_all(watches: Iterable[FileWatch[Any]]) -> list[PollResult]:
    """Poll every watch; the results of those whose files changed."""
    return [r for r in (w.poll() for w in watches) if r.changed]
