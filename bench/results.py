"""A run's results as JSON, and ``python -m bench compare A.json B.json``: what changed per row.

Absolute throughput moves 10-20 % between runs on a shared machine, so the
comparison shows three things per row: the throughput ratio B/A, the change
of the row's within-run ratio against its reference row ("vs ref", which
cancels most of the machine's mood), and the CPU µs per decision of each
process (the steadiest figure: work per request, not requests per second).
A change beyond the threshold (10 % by default) in the wrong direction is
flagged with ``!``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

VERSION = 1
ROLES = ("server", "envoy", "redis")


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):  # NaN is not JSON
        return None
    return value


def document(
    *, started: str, header: Sequence[str], settings: Mapping[str, Any], rows: Sequence[Any], refs: Mapping[str, str | None],
    twins: Mapping[str, str | None] | None = None, memory: Any = None, micro: Sequence[tuple[str, str, float, str]] = (),
) -> dict[str, Any]:  # fmt: skip
    """The run as JSON: every row with its reference row (``ref``) and, for a Redis row, its memory-store twin (``twin``)."""
    out_rows = []
    for r in rows:
        d = to_jsonable(r)
        d["ref"] = refs.get(d["key"])
        d["twin"] = (twins or {}).get(d["key"])
        out_rows.append(d)
    return {
        "version": VERSION,
        "started_utc": started,
        "header": list(header),
        "settings": dict(settings),
        "rows": out_rows,
        "memory": to_jsonable(memory),
        "micro": [{"module": m, "measurement": n, "value": v, "unit": u} for m, n, v, u in micro],
    }


def save(doc: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    if doc.get("version") != VERSION:
        raise ValueError(f"{path}: not a bench result of version {VERSION}")
    return doc


# -- comparing two runs ---------------------------------------------------------


def _rps(rows: Mapping[str, Mapping[str, Any]], key: str | None) -> float:
    if key is None or key not in rows:
        return 0.0
    return float(rows[key].get("rps") or 0.0)


def vs_ref(rows: Mapping[str, Mapping[str, Any]], key: str) -> float | None:
    """The row's throughput as a share of its reference row's, within one run."""
    ref = rows[key].get("ref")
    num, den = _rps(rows, key), _rps(rows, ref)
    return num / den if num and den else None


def _change(a: float | None, b: float | None) -> float | None:
    return (b - a) / a if a and b is not None else None


def _fmt_pair(a: float | None, b: float | None, digits: int, *, worse_if_up: bool, threshold: float) -> str:
    if a is None and b is None:
        return "-"
    fa = f"{a:,.{digits}f}" if a is not None else "-"
    fb = f"{b:,.{digits}f}" if b is not None else "-"
    ch = _change(a, b)
    if ch is None:
        return f"{fa} -> {fb}"
    flag = "!" if (ch > threshold if worse_if_up else ch < -threshold) else ""
    pct = round(ch * 100) or 0  # no "-0%"
    return f"{fa} -> {fb} ({pct:+d}%){flag}"


def _cpu(row: Mapping[str, Any], role: str) -> float | None:
    value = (row.get("cpu_us") or {}).get(role)
    return float(value) if value else None


def offered_fully(lat: Mapping[str, Any]) -> bool:
    """The same rule as k6.Latency.offered_fully: at most 0.1 % of the arrivals dropped."""
    requests, dropped = int(lat.get("requests") or 0), int(lat.get("dropped") or 0)
    return dropped <= max(1, (requests + dropped) // 1000)


def _p99_half(row: Mapping[str, Any]) -> float | None:
    """p99 at half load, when k6 really offered that load (otherwise it measured its own queue)."""
    lat = row.get("latency")
    if not lat or lat.get("p99_ms") is None or not offered_fully(lat):
        return None
    return float(lat["p99_ms"])


def compare(a: Mapping[str, Any], b: Mapping[str, Any], threshold: float = 0.10) -> str:
    """A table of what changed from run A to run B, per row present in either."""
    ra = {r["key"]: r for r in a.get("rows", [])}
    rb = {r["key"]: r for r in b.get("rows", [])}
    out = [f"A: {a.get('started_utc', '?')}   B: {b.get('started_utc', '?')}   ('!' = worse by more than {threshold:.0%})", ""]
    head = ("", "scenario", "req/s B/A", "vs ref A -> B", "server µs/dec", "envoy µs/dec", "redis µs/dec", "RT/dec", "p99 ms at half load")
    lines: list[tuple[str, ...]] = [head]
    for key in sorted(set(ra) | set(rb)):
        if key not in ra or key not in rb:
            lines.append((f"({key})", (ra.get(key) or rb[key])["title"], "only in " + ("B" if key in rb else "A")))
            continue
        x, y = ra[key], rb[key]
        if not x.get("rps") or not y.get("rps"):
            lines.append((f"({key})", x["title"], "not measured in " + ("A" if not x.get("rps") else "B")))
            continue
        ratio = y["rps"] / x["rps"]
        rflag = "!" if ratio < 1 - threshold else ""
        ref = x.get("ref") or y.get("ref")
        lines.append((
            f"({key})", x["title"], f"{ratio:.2f}{rflag}",
            _fmt_pair(vs_ref(ra, key), vs_ref(rb, key), 2, worse_if_up=False, threshold=threshold)
            + (f" of ({ref})" if ref and (vs_ref(ra, key) or vs_ref(rb, key)) else ""),
            *(_fmt_pair(_cpu(x, role), _cpu(y, role), 0, worse_if_up=True, threshold=threshold) for role in ROLES),
            _fmt_pair(x.get("rt_per_decision"), y.get("rt_per_decision"), 2, worse_if_up=True, threshold=0.0),
            _fmt_pair(_p99_half(x), _p99_half(y), 2, worse_if_up=True, threshold=threshold),
        ))  # fmt: skip
    out.append(render(lines))
    twins = _compare_twins(ra, rb, threshold)
    if twins:
        out += ["", twins]
    mem = _compare_memory(a.get("memory"), b.get("memory"), threshold)
    if mem:
        out += ["", mem]
    micro = _compare_micro(a.get("micro", []), b.get("micro", []), threshold)
    if micro:
        out += ["", micro]
    return "\n".join(out)


def vs_twin(rows: Mapping[str, Mapping[str, Any]], key: str) -> tuple[float | None, float | None]:
    """A Redis row against its memory-store twin, within one run: (throughput share, authz CPU added as a share)."""
    twin = rows[key].get("twin")
    if not twin or twin not in rows:
        return None, None
    num, den = _rps(rows, key), _rps(rows, twin)
    mine, theirs = _cpu(rows[key], "server"), _cpu(rows[twin], "server")
    return (num / den if num and den else None), ((mine - theirs) / theirs if mine and theirs else None)


def _compare_twins(ra: Mapping[str, Mapping[str, Any]], rb: Mapping[str, Mapping[str, Any]], threshold: float) -> str:
    """Per Redis row in both runs: the share of its twin's throughput, and the authz CPU Redis adds (in points)."""
    lines: list[tuple[str, ...]] = [("", "Redis against its memory-store twin", "vs twin A -> B", "Redis adds, authz CPU A -> B")]
    for key in sorted(set(ra) & set(rb)):
        twin = ra[key].get("twin") or rb[key].get("twin")
        if not twin:
            continue
        (sa, ca), (sb, cb) = vs_twin(ra, key), vs_twin(rb, key)
        if sa is None and sb is None:
            continue
        added = "-"
        if ca is not None and cb is not None:
            # a share of a share: the change is shown in percentage points, flagged beyond the threshold's points
            flag = "!" if cb - ca > threshold else ""
            added = f"{ca:+.0%} -> {cb:+.0%} ({round((cb - ca) * 100):+d} pt){flag}"
        share = _fmt_pair(sa, sb, 2, worse_if_up=False, threshold=threshold) + f" of ({twin})"
        lines.append((f"({key})", ra[key]["title"], share, added))
    return render(lines) if len(lines) > 1 else ""


def _compare_memory(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None, threshold: float) -> str:
    if not a or not b:
        return ""

    def per_identity(m: Mapping[str, Any]) -> float | None:
        n = m.get("identities") or 0
        return (m["rss_after_bytes"] - m["rss_before_bytes"]) / n if n else None

    def redis(m: Mapping[str, Any], field: str) -> float | None:
        r = m.get("redis")
        return float(r[field]) if r and r.get(field) is not None else None

    lines: list[tuple[str, ...]] = [("memory", "A -> B")]
    lines.append(("memory store: RSS growth per identity (bytes)", _fmt_pair(per_identity(a), per_identity(b), 0, worse_if_up=True, threshold=threshold)))
    lines.append(("Redis: MEMORY USAGE per identity (bytes)", _fmt_pair(redis(a, "memory_usage_bytes"), redis(b, "memory_usage_bytes"), 0, worse_if_up=True, threshold=threshold)))
    lines.append(("Redis: used_memory growth per identity (bytes)", _fmt_pair(redis(a, "used_memory_delta_bytes"), redis(b, "used_memory_delta_bytes"), 0, worse_if_up=True, threshold=threshold)))
    return render(lines)


def _compare_micro(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], threshold: float) -> str:
    ma = {(m["module"], m["measurement"]): m for m in a}
    mb = {(m["module"], m["measurement"]): m for m in b}
    common = [k for k in ma if k in mb]
    if not common:
        return ""
    lines: list[tuple[str, ...]] = [("module", "measurement", "A -> B")]
    for k in common:
        unit = ma[k]["unit"]
        up_is_worse = not unit.endswith("/s")  # µs/op: lower is better
        pair = _fmt_pair(float(ma[k]["value"]), float(mb[k]["value"]), 2, worse_if_up=up_is_worse, threshold=threshold)
        lines.append((k[0], k[1], f"{pair} {unit}"))
    return render(lines)


def render(lines: Sequence[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell; a short line (a note) is written as it is, out of the widths."""
    width = len(lines[0])
    full = [ln for ln in lines if len(ln) == width]
    widths = [max(len(ln[i]) for ln in full) for i in range(width)]
    out = []
    for n, ln in enumerate(lines):
        if len(ln) != width:
            out.append("  ".join(ln).rstrip())
            continue
        out.append("  ".join(f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(ln, widths, strict=True))).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
