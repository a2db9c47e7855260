"""Reading configuration files so that every error names the file, the line and the field.

``load(path)`` parses YAML (safe subset, duplicate keys refused) into a ``Node``
tree. A ``Node`` knows where it stands (file, line, dotted field path) and
offers typed accessors that raise ``ConfigError`` with that position:

    routes = root.get("routes").items()
    for r in routes:
        r.keys(allowed={"name", "match", ...}, required={"name"})
        name = r.get("name").str()
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterator
from typing import Any, NoReturn

import yaml

from authz.errors import ConfigError

_MISSING: Any = object()
# bool before int: True is an int too
_TYPE_NAMES = ((bool, "a boolean"), (dict, "a mapping"), (list, "a list"), (str, "a string"), (int, "an integer"), (float, "a number"))


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps line numbers and refuses duplicate keys."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: _LDict = _LDict()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise ConfigError(
                loader.name, key_node.start_mark.line + 1, str(key), "keys must be strings"
            )
        if key in out:
            raise ConfigError(
                loader.name,
                key_node.start_mark.line + 1,
                "",
                f"duplicate key {key!r} (first on line {out.lines[key]})",
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = value_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> list[Any]:
    out = _LList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


class _LDict(dict[str, Any]):
    line: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[str, int] = {}


class _LList(list[Any]):
    line: int = 0
    lines: list[int]


def read_text(path: str) -> str:
    """A configuration file's text. :raises ConfigError: naming the file"""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise ConfigError(path, 0, "", f"cannot read file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, 0, "", "file is not valid UTF-8") from None


def load(path: str, text: str | None = None) -> Node:
    """Parse a YAML file into a Node tree. Syntax errors name the file and line."""
    if text is None:
        text = read_text(path)
    loader = _Loader(text)
    loader.name = path
    try:
        data = loader.get_single_data()
    except ConfigError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise ConfigError(path, line, "", f"YAML syntax error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, 0, "", f"YAML error: {exc}") from None
    finally:
        loader.dispose()
    return Node(path, "", data, 1)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}


class Node:
    """A value in a configuration file, with its position."""

    __slots__ = ("file", "field", "value", "line")

    def __init__(self, file: str, field: str, value: Any, line: int) -> None:
        self.file = file
        self.field = field
        self.value = value
        self.line = getattr(value, "line", 0) or line

    def error(self, message: str) -> NoReturn:
        raise ConfigError(self.file, self.line, self.field, message)

    def _type(self) -> str:
        v = self.value
        for kind, name in _TYPE_NAMES:
            if isinstance(v, kind):
                return name
        return "nothing" if v is None else type(v).__name__

    # -- structure -------------------------------------------------------

    def keys(self, allowed: set[str], required: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        """Require a mapping whose keys are all in ``allowed`` and include ``required``."""
        m = self.mapping()
        for key in m:
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                Node(self.file, self._join(key), None, m.lines.get(key, self.line)).error(
                    f"unknown key {key!r} (expected one of: {hint})"
                )
        for key in sorted(required):
            if key not in m:
                self.error(f"missing required key {key!r}")

    def mapping(self) -> _LDict:
        if not isinstance(self.value, dict):
            self.error(f"expected a mapping, got {self._type()}")
        return self.value  # type: ignore[return-value]

    def has(self, key: str) -> bool:
        return isinstance(self.value, dict) and key in self.value

    def get(self, key: str, default: Any = _MISSING) -> Node:
        m = self.mapping()
        if key in m:
            return Node(self.file, self._join(key), m[key], m.lines.get(key, self.line))
        if default is _MISSING:
            self.error(f"missing required key {key!r}")
        return Node(self.file, self._join(key), default, self.line)

    def items(self) -> list[Node]:
        """The elements of a list (a single scalar is not accepted as a list)."""
        if not isinstance(self.value, list):
            self.error(f"expected a list, got {self._type()}")
        lines = getattr(self.value, "lines", [self.line] * len(self.value))
        return [
            Node(self.file, f"{self.field}[{i}]", v, lines[i]) for i, v in enumerate(self.value)
        ]

    def entries(self) -> Iterator[tuple[str, Node]]:
        """(key, Node) pairs of a mapping, in file order."""
        m = self.mapping()
        for key, v in m.items():
            yield key, Node(self.file, self._join(key), v, m.lines.get(key, self.line))

    def _join(self, key: str) -> str:
        return f"{self.field}.{key}" if self.field else key

    # -- scalars ---------------------------------------------------------

    def str(self, *, choices: set[str] | None = None, nonempty: bool = True) -> str:
        v = self.value
        if not isinstance(v, str):
            self.error(f"expected a string, got {self._type()}")
        if nonempty and not v:
            self.error("must not be empty")
        if choices is not None and v not in choices:
            self.error(f"must be one of {', '.join(sorted(choices))}; got {v!r}")
        return v

    def int(self, *, min: builtins.int | None = None, max: builtins.int | None = None) -> builtins.int:  # noqa: A002
        v = self.value
        if isinstance(v, bool) or not isinstance(v, int):
            self.error(f"expected an integer, got {self._type()}")
        if min is not None and v < min:
            self.error(f"must be at least {min}; got {v}")
        if max is not None and v > max:
            self.error(f"must be at most {max}; got {v}")
        return v

    def number(self, *, min: float | None = None, max: float | None = None) -> float:  # noqa: A002
        v = self.value
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.error(f"expected a number, got {self._type()}")
        if min is not None and v < min:
            self.error(f"must be at least {min}; got {v}")
        if max is not None and v > max:
            self.error(f"must be at most {max}; got {v}")
        return float(v)

    def bool(self) -> builtins.bool:
        if not isinstance(self.value, bool):
            self.error(f"expected true or false, got {self._type()}")
        return self.value

    def duration_ms(self, *, min_ms: builtins.int = 0) -> builtins.int:
        """A duration: a number of seconds, or a string like ``250ms``, ``10s``, ``5m``, ``1h``, ``1d``."""
        v = self.value
        if isinstance(v, bool):
            self.error("expected a duration like 10s, got a boolean")
        if isinstance(v, int | float):
            ms = int(v * 1000)
        elif isinstance(v, str) and (m := _DURATION.match(v)):
            ms = int(float(m.group(1)) * _UNIT_MS[m.group(2)])
        else:
            self.error(f"expected a duration like 250ms, 10s, 5m or 1h; got {v!r}")
        if ms < min_ms:
            self.error(f"must be at least {min_ms} ms; got {v!r}")
        return ms

    def str_list(self) -> list[builtins.str]:
        """A list of strings; a single string is accepted as a list of one."""
        if isinstance(self.value, str):
            return [self.str()]
        return [n.str() for n in self.items()]
