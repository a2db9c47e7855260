"""The in-memory store: one process, nothing else to run.

A batch runs as one synchronous function with no await inside, so on the
event loop it is atomic. Every key expires; expired keys are removed lazily on
access and by a sweep over a one-second timing wheel, so memory stays bounded
by the number of clients active within the longest TTL.
"""

from __future__ import annotations

from collections.abc import Sequence

from authz.store.base import (
    ALREADY_CLAIMED,
    BEFORE_EPOCH,
    CLAIMED,
    ClaimOnce,
    Op,
    Result,
    Store,
    TakeTokens,
    gcra,
)


class MemoryStore(Store):
    kind = "memory"

    def __init__(self, epoch_ms: int) -> None:
        """:param epoch_ms: when this store's state began (the process start)."""
        self.epoch_ms = epoch_ms
        # key -> [value, expires_at_ms, wheel_second]
        self._data: dict[str, list[float | int]] = {}
        # second -> keys that may expire within it
        self._wheel: dict[int, list[str]] = {}
        self._swept_s = epoch_ms // 1000

    def __len__(self) -> int:
        return len(self._data)

    async def apply(self, ops: Sequence[Op], now_ms: int) -> list[Result]:
        return self.apply_sync(ops, now_ms)

    def apply_sync(self, ops: Sequence[Op], now_ms: int) -> list[Result]:
        if now_ms // 1000 > self._swept_s:
            self._sweep(now_ms)
        data = self._data
        out: list[Result] = []
        for op in ops:
            entry = data.get(op.key)
            if entry is not None and entry[1] <= now_ms:
                entry = None
            if type(op) is TakeTokens:
                tat = float(entry[0]) if entry is not None else 0.0
                new_tat, res = gcra(tat, now_ms, op.interval_ms, op.capacity, op.cost)
                if new_tat is not None:
                    self._put(op.key, new_tat, int(new_tat + 0.999), entry)
                out.append(res)
            elif type(op) is ClaimOnce:
                if entry is not None:
                    out.append(ALREADY_CLAIMED)
                elif op.created_ms < self.epoch_ms:
                    out.append(BEFORE_EPOCH)
                else:
                    self._put(op.key, 1, now_ms + op.ttl_ms, None)
                    out.append(CLAIMED)
            else:  # pragma: no cover - the type checker keeps this unreachable
                raise TypeError(f"unknown store operation {op!r}")
        return out

    def _put(self, key: str, value: float | int, expires_ms: int, entry: list[float | int] | None) -> None:
        second = expires_ms // 1000
        if entry is not None and entry[2] == second:
            entry[0] = value
            entry[1] = expires_ms
            return
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
                if entry is not None and entry[2] == second and entry[1] <= now_ms:
                    del data[key]
        self._swept_s = now_s

    async def ping(self) -> bool:
        return True
