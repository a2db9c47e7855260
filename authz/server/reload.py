"""Policy reloads: the one place that decides when the running policy is replaced.

Two triggers:

* ``SIGHUP`` (``request("SIGHUP")``): load the policy file again, now;
* a change on disk (``watch()``, ``--watch``, on by default): every
  ``interval`` seconds the status (modification time, size, inode) of the
  policy file and of every file it read (``Policy.files``: the keys file,
  address lists, JWKS files, CA files...) is compared with what was loaded;
  a change loads the policy again. Only stat calls run on the event loop;
  reading and compiling run in a thread, never per request.

A new version is compiled and validated in full before anything changes; it
then replaces the old one with a single assignment (``engine.policy``), which
the engine reads once per request, so checks in flight finish under the
version they started with. A file that does not validate is refused: its
exact ``file:line: field: message`` is logged, the running version stays,
and the same bad files are not tried again until they change once more.
Content that changed only in its timestamps (the same version) replaces
nothing.

A file that is rewritten while it is being compiled would leave the compiled
policy behind the disk: the status of the files is taken before the load and
compared after it, and a load that raced a write is done again (at most
``MAX_RACES`` times).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from authz.errors import ConfigError
from authz.policy.compile import load_policy
from authz.policy.model import Policy

log = logging.getLogger("authz.reload")

#: seconds between two looks at the files
WATCH_INTERVAL_S = 1.0
#: loads done again because a file changed while it was being compiled
MAX_RACES = 3

Stamp = tuple[tuple[int, int, int, int] | int, ...]


def stamp(files: tuple[str, ...]) -> Stamp:
    """The status of each file (an errno for one that cannot be looked at)."""
    out: list[tuple[int, int, int, int] | int] = []
    for path in files:
        try:
            st = os.stat(path)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
        except OSError as exc:
            out.append(exc.errno or -1)
    return tuple(out)


@dataclass(slots=True)
class Outcome:
    """What one reload did: ``loaded`` (a new version runs), ``unchanged``, or ``refused``."""

    result: str
    version: str
    seconds: float = 0.0
    error: str = ""


class Reloader:
    """Loads ``config`` again on request or on change and hands a new version to ``adopt``.

    :param config: the policy file
    :param current: the running policy
    :param adopt: makes a new policy the running one (one assignment, on the event loop)
    """

    def __init__(
        self,
        config: str,
        current: Callable[[], Policy],
        adopt: Callable[[Policy], None],
        *,
        interval: float = WATCH_INTERVAL_S,
        load: Callable[[str], Policy] = load_policy,
    ) -> None:
        self.config = config
        self.current = current
        self.adopt = adopt
        self.interval = interval
        self._load = load
        policy = current()
        self._files = policy.files or (config,)
        self._stamp = stamp(self._files)
        self._refused: Stamp | None = None
        self._lock = threading.Lock()
        self._async_lock: asyncio.Lock | None = None  # one background load at a time (a signal and the watcher)
        self._seq = 0  # loads started
        self._settled = 0  # the newest load whose outcome counts
        #: counts by result (metrics), the time and outcome of the last attempt (health)
        self.counts = {"loaded": 0, "unchanged": 0, "refused": 0}
        self.last: Outcome | None = None
        self.loaded_at = time.time()

    # -- the load ------------------------------------------------------------------

    def reload(self, trigger: str) -> Outcome:
        """Load now, on the calling thread (the event loop's); never raises."""
        return self._settle(trigger, *self._load_checked())

    async def reload_async(self, trigger: str) -> Outcome:
        """Load in a thread (the event loop keeps answering), adopt on the loop; never raises."""
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            loaded = await asyncio.to_thread(self._load_checked)
        return self._settle(trigger, *loaded)

    def _load_checked(self) -> tuple[int, Policy | None, str, float]:
        """(sequence, the new policy or None, the error, seconds): changes nothing."""
        with self._lock:
            self._seq += 1
            seq = self._seq
            known = self._files
        started = time.perf_counter()
        policy: Policy | None = None
        error = ""
        for _ in range(MAX_RACES + 1):
            before = dict(zip(known, stamp(known), strict=True))
            try:
                policy, error = self._load(self.config), ""
            except ConfigError as exc:
                policy, error = None, str(exc)
            except Exception as exc:  # a loader bug must not end the server
                policy, error = None, f"{self.config}: cannot load: {type(exc).__name__}"
            # the files both loads know, unchanged during the load: what was compiled is what is on disk
            common = tuple(p for p in (policy.files if policy is not None else known) if p in before)
            if stamp(common) == tuple(before[p] for p in common):
                break
            log.info("a policy file changed while it was loaded; loading again", extra={"event": "policy.reload_raced"})
        return seq, policy, error, time.perf_counter() - started

    def _settle(self, trigger: str, seq: int, policy: Policy | None, error: str, seconds: float) -> Outcome:
        running = self.current()
        if seq < self._settled:  # a later load already settled: this one read older files
            return Outcome("unchanged", running.version, seconds)
        self._settled = seq
        if policy is None:
            self._refused = stamp(self._files)
            self.counts["refused"] += 1
            outcome = Outcome("refused", running.version, seconds, error)
            log.error(
                "policy reload (%s) refused, version %s stays in force: %s", trigger, running.version, error,
                extra={"event": "policy.reload_refused", "version": running.version},
            )  # fmt: skip
        else:
            self._files = policy.files or (self.config,)
            self._stamp = stamp(self._files)
            self._refused = None
            if policy.version == running.version:
                self.counts["unchanged"] += 1
                outcome = Outcome("unchanged", running.version, seconds)
                log.info(
                    "policy reload (%s): version %s unchanged", trigger, running.version,
                    extra={"event": "policy.unchanged", "version": running.version},
                )  # fmt: skip
            else:
                self.adopt(policy)
                self.loaded_at = time.time()
                self.counts["loaded"] += 1
                outcome = Outcome("loaded", policy.version, seconds)
                log.info(
                    "policy reloaded (%s) from %s: version %s replaces %s (%d routes, %d files, %.1f ms)",
                    trigger, policy.file, policy.version, running.version, len(policy.routes), len(self._files),
                    seconds * 1000, extra={"event": "policy.reloaded", "version": policy.version},
                )  # fmt: skip
        self.last = outcome
        return outcome

    def request(self, trigger: str) -> None:
        """Reload soon, in the background (a signal handler calls this)."""
        task = asyncio.get_running_loop().create_task(self.reload_async(trigger), name="policy-reload")
        _background.add(task)
        task.add_done_callback(_background.discard)

    # -- the watcher ---------------------------------------------------------------

    def changed(self) -> bool:
        """Have the files changed since they were loaded (or last refused)?"""
        now = stamp(self._files)
        return now not in (self._stamp, self._refused)

    async def watch(self) -> None:
        """Look at the files every ``interval`` seconds; reload when they changed. Runs until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                if self.changed():
                    await self.reload_async("file changed")
            except Exception as exc:  # the watcher must outlive anything a file system does
                log.error("policy watcher: %s", type(exc).__name__)


_background: set[asyncio.Task[Outcome]] = set()


__all__ = ["MAX_RACES", "WATCH_INTERVAL_S", "Outcome", "Reloader", "stamp"]
