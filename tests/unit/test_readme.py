"""The README's command synopsis says what the commands really take."""

from __future__ import annotations

import re
from pathlib import Path

import click

from authz.cli import cli, serve

README = Path(__file__).resolve().parents[2] / "README.md"


def _synopsis() -> str:
    text = README.read_text()
    start = text.index("authz serve --config POLICY")
    return text[start : text.index("```", start)]


def _serve_part() -> str:
    synopsis = _synopsis()
    return synopsis[: synopsis.index("\nauthz ", 1)]


def test_the_serve_synopsis_lists_every_option_and_nothing_else() -> None:
    written = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", _serve_part()))
    real = {o for p in serve.params if isinstance(p, click.Option) and not p.hidden for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}
    assert written == real - {"--help"}


def _shown(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_the_serve_synopsis_shows_the_real_defaults() -> None:
    part = _serve_part()
    for p in serve.params:
        if isinstance(p, click.Option) and not p.hidden and not p.is_flag and not p.required and p.default not in (None, ""):
            assert _shown(p.default) in part, (p.name, p.default)


def test_every_command_is_listed() -> None:
    synopsis = _synopsis()
    for name in cli.commands:  # type: ignore[attr-defined]
        assert re.search(rf"^authz {name}\b", synopsis, re.MULTILINE), name
