"""``python -m sim``: seeded traffic through the real pipeline; a confusion table per traffic class.

    python -m sim                      # seeds 1, 2 and 3 at full scale (make simulate)
    python -m sim --seeds 7 --scale 0.3 --json

Targets (exit status 1 if a run misses one): at least 95 % of each attack
class's requests after each attacker's first 50 mitigated (throttled,
challenged or denied), at most 0.1 % of legitimate requests affected (not
allowed, or held by a tarpit), no verified agent's request ever affected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from sim.world import COLUMNS, Tally, World

MITIGATED_TARGET = 0.95
AFFECTED_TARGET = 0.001


def run(seed: int, scale: float, minutes: int) -> Tally:
    world = World(seed, scale=scale, minutes=minutes)
    try:
        world.populate()
        return asyncio.run(world.run())
    finally:
        world.close()


def misses(t: Tally) -> list[str]:
    """The targets a run missed, in words."""
    out = []
    for label, (n, m) in sorted(t.after_grace.items()):
        if n and m / n < MITIGATED_TARGET:
            out.append(f"{label}: {m / n:.1%} of {n} requests after the first {50} mitigated (target {MITIGATED_TARGET:.0%})")
    if t.affected_share > AFFECTED_TARGET:
        out.append(f"legitimate requests affected: {t.affected_share:.3%} (target at most {AFFECTED_TARGET:.1%})")
    if t.agent_affected:
        out.append(f"verified agents affected: {t.agent_affected} requests (target 0)")
    return out


def table(seed: int, t: Tally) -> str:
    lines = [f"seed {seed}: {t.decisions} decisions in {t.wall_s:.1f} s ({t.wall_s / max(t.decisions, 1) * 1e6:.0f} us each)"]
    width = max(len(label) for label in t.by_class)
    lines.append(f"  {'class':<{width}}  " + "  ".join(f"{c:>10}" for c in COLUMNS) + "   after 50: mitigated")
    for label, counts in sorted(t.by_class.items(), key=lambda kv: (kv[0] in {x for x in t.after_grace}, kv[0])):
        after = t.after_grace.get(label)
        tail = f"   {after[1] / after[0]:.1%} of {after[0]}" if after and after[0] else ""
        lines.append(f"  {label:<{width}}  " + "  ".join(f"{counts[c]:>10}" for c in COLUMNS) + tail)
    lines.append(
        f"  legitimate affected: {t.legit_affected} of {t.legit_requests} ({t.affected_share:.3%}); "
        f"verified agents affected: {t.agent_affected} of {t.agent_requests}; "
        f"attack after 50 mitigated: {t.mitigated_share:.1%}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--scale", type=float, default=1.0, help="multiply the number of senders of every class (default 1)")
    p.add_argument("--minutes", type=int, default=60, help="simulated minutes (default 60)")
    p.add_argument("--json", action="store_true", help="one JSON object per seed instead of tables")
    opts = p.parse_args(argv)
    failed = False
    for seed in opts.seeds:
        t = run(seed, opts.scale, opts.minutes)
        missed = misses(t)
        failed = failed or bool(missed)
        if opts.json:
            print(json.dumps({"seed": seed, **t.to_dict(), "missed": missed}))
        else:
            print(table(seed, t))
            for m in missed:
                print(f"  MISSED: {m}")
            print()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
