"""The in-memory store: one process, nothing else to run.

A batch runs as one synchronous function with no await inside, so on the
event loop it is atomic. It runs in two steps: every operation computes its
result and its writes against the current state (seeing the writes of the
operations before it in the batch); then the writes are applied: all of them
when no enforced operation refused, only the observations otherwise. A dry
run stops before the second step (and skips the sweep), so it leaves the
state exactly as it found it.

Every key expires; expired keys are removed lazily on access and by a sweep
over a one-second timing wheel, so memory stays bounded by the number of
clients active within the longest TTL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from authz.store.base import MemView, Op, Result, Store


class _Batch(MemView):
    """The state as one batch sees it: the store's data under the batch's own pending writes."""

    __slots__ = ("epoch_ms", "_data", "_now", "_pending")

    def __init__(self, data: dict[str, list[Any]], epoch_ms: int, now_ms: int) -> None:
        self.epoch_ms = epoch_ms
        self._data = data
        self._now = now_ms
        self._pending: dict[str, tuple[Any, int]] = {}

    def get(self, key: str) -> Any | None:
        pending = self._pending.get(key)
        if pending is not None:
            return pending[0] if pending[1] > self._now else None
        entry = self._data.get(key)
        if entry is None or entry[1] <= self._now:
            return None
        return entry[0]

    def stage(self, key: str, value: Any, expires_ms: int) -> None:
        self._pending[key] = (value, expires_ms)


class MemoryStore(Store):
    kind = "memory"

    def __init__(self, epoch_ms: int, **kwargs: Any) -> None:
        """:param epoch_ms: when this store's state began (the process start)."""
        super().__init__(**kwargs)
        self.epoch_ms = epoch_ms
        # key -> [value, expires_at_ms, wheel_second]
        self._data: dict[str, list[Any]] = {}
        # second -> keys that may expire within it
        self._wheel: dict[int, list[str]] = {}
        self._swept_s = epoch_ms // 1000

    def __len__(self) -> int:
        return len(self._data)

    async def _apply(self, ops: Sequence[Op], now_ms: int, dry_run: bool) -> list[Result]:
        return self.apply_sync(ops, now_ms, dry_run)

    def apply_sync(self, ops: Sequence[Op], now_ms: int, dry_run: bool = False) -> list[Result]:
        if now_ms // 1000 > self._swept_s and not dry_run:
            self._sweep(now_ms)
        view = _Batch(self._data, self.epoch_ms, now_ms)
        results: list[Result] = []
        spend: list[tuple[str, Any, int]] = []
        observe: list[tuple[str, Any, int]] = []
        refused = False
        for op in ops:
            step = op.mem_step(view, now_ms)
            results.append(step.result)
            refused = refused or step.refused
            for write in step.spend:
                view.stage(*write)
                spend.append(write)
            for write in step.observe:
                view.stage(*write)
                observe.append(write)
        if dry_run:
            return results
        for key, value, expires in observe:
            self._put(key, value, expires)
        if not refused:
            for key, value, expires in spend:
                self._put(key, value, expires)
        return results

    def _put(self, key: str, value: Any, expires_ms: int) -> None:
        if value is None:  # forgotten (its wheel entry, if any, finds nothing to sweep)
            self._data.pop(key, None)
            return
        second = expires_ms // 1000
        entry = self._data.get(key)
        if entry is not None:
            entry[0] = value
            entry[1] = expires_ms
            if entry[2] <= second:
                # already in the wheel at or before its new expiry: the sweep of that second
                # finds it alive and moves it on, so a key is in the wheel once, however often
                # it is written (one entry per write would grow with traffic, not with keys)
                return
            entry[2] = second  # expiring sooner than it is scheduled: schedule it (again) earlier
        else:
            self._data[key] = [value, expires_ms, second]
        slot = self._wheel.get(second)
        if slot is None:
            self._wheel[second] = [key]
        else:
            slot.append(key)

    def _sweep(self, now_ms: int) -> None:
        now_s = now_ms // 1000
        data, wheel = self._data, self._wheel
        for second in [s for s in wheel if s < now_s]:
            for key in wheel.pop(second):
                entry = data.get(key)
                if entry is None or entry[2] != second:
                    continue  # forgotten, or scheduled earlier since (and swept there)
                if entry[1] <= now_ms:
                    del data[key]
                    continue
                # written again since it was scheduled: it expires later, so it moves to that second
                later = entry[1] // 1000
                entry[2] = later
                slot = wheel.get(later)
                if slot is None:
                    wheel[later] = [key]
                else:
                    slot.append(key)
        self._swept_s = now_s

    def ttl_ms(self, key: str, now_ms: int) -> int | None:
        """Milliseconds until ``key`` expires, None when absent (tests: every key has a TTL)."""
        entry = self._data.get(key)
        if entry is None or entry[1] <= now_ms:
            return None
        return int(entry[1] - now_ms)

    def key_names(self) -> list[str]:
        return list(self._data)

    def scheduled(self) -> int:
        """How many entries the timing wheel holds (at most one per key, however often it is written)."""
        return sum(len(keys) for keys in self._wheel.values())

    async def ping(self) -> bool:
        return True
