"""Run a how-to page (docs/howto-*.md) as a reader would, so that it cannot rot.

A page's fenced blocks are of three kinds, told apart only by their info
string, which a rendered page does not show:

* ```` ```sh ````: a command the reader types; the test runs it with bash
  (``-e -o pipefail``) in a scratch directory, each block in a new shell, in
  page order. Blocks share files, not shell variables.
* ```` ```text ```` right after a ``sh`` block: what that block prints. The
  test compares it with the real standard output; ``...`` stands for any text
  (a decision id, a key, a time).
* ```` ```shell ````: shown, not run. The one holding ``authz serve`` is where
  the reader starts authz and Envoy; the test starts them there itself (real
  processes on free ports) and gives the later blocks their address in
  ``$API``.

Commands find ``authz``, ``envoy`` and ``python3`` on ``PATH``: the test puts
the project's venv first, as an installed authz would be.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FENCE = re.compile(r"^```([\w-]*)\s*$")


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    #: 1-based line of the opening fence, for messages
    line: int


def blocks(markdown: str) -> list[Block]:
    """Every top-level fenced block of a Markdown text, in order."""
    out: list[Block] = []
    lang: str | None = None
    start = 0
    body: list[str] = []
    for number, line in enumerate(markdown.splitlines(), 1):
        if lang is None:
            m = _FENCE.match(line)
            if m:
                lang, start, body = m.group(1), number, []
        elif line.rstrip() == "```":
            out.append(Block(lang, "\n".join(body) + "\n", start))
            lang = None
        else:
            body.append(line)
    if lang is not None:
        raise ValueError(f"the block opened at line {start} is never closed")
    return out


def matches(expected: str, actual: str) -> bool:
    """``actual`` equals ``expected`` where each ``...`` of ``expected`` may be any text."""
    parts = [re.escape(p) for p in expected.strip().split("...")]
    return re.fullmatch(".*?".join(parts), actual.strip(), re.DOTALL) is not None


@dataclass
class Step:
    block: Block
    stdout: str
    #: what the echo upstream received while the block ran
    upstream: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Page:
    """One how-to page, run in ``workdir``."""

    path: Path
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)

    def run(self, start: Callable[[Block], Mapping[str, str]], upstream_requests: Callable[[], list[dict[str, Any]]]) -> None:
        """Run the page's ``sh`` blocks; call ``start`` at the ``shell`` block that starts authz.

        ``start`` returns variables for the later blocks (``API``).
        ``upstream_requests`` returns everything the upstream received so far.
        """
        page = blocks(self.path.read_text())
        env = {**os.environ, "PATH": f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", **self.env}
        started = False
        for i, block in enumerate(page):
            where = f"{self.path.name}:{block.line}"
            if block.lang == "shell" and "authz serve" in block.text:
                assert not started, f"{where}: authz is started twice"
                env.update(start(block))
                started = True
                continue
            if block.lang != "sh":
                continue
            seen = len(upstream_requests())
            run = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", block.text],
                cwd=self.workdir, env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert run.returncode == 0, f"{where}: exit {run.returncode}\n{block.text}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
            step = Step(block, run.stdout, upstream_requests()[seen:])
            self.steps.append(step)
            following = page[i + 1] if i + 1 < len(page) else None
            if following is not None and following.lang == "text":
                assert matches(following.text, run.stdout), (
                    f"{where}: the page says this block prints\n{following.text}\nbut it printed\n{run.stdout}\nstderr:\n{run.stderr}"
                )
        assert started, f"{self.path.name}: no ```shell block starts authz serve"

    def step(self, needle: str) -> Step:
        """The one step whose commands contain ``needle``."""
        found = [s for s in self.steps if needle in s.block.text]
        assert len(found) == 1, f"{len(found)} sh blocks of {self.path.name} contain {needle!r}"
        return found[0]


__all__ = ["Block", "Page", "Step", "blocks", "matches"]
