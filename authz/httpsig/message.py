"""The parts of an HTTP request that RFC 9421 components are taken from.

The library never sees a wire format or a proxy's data model: a caller builds
one ``Message`` (the decision server from its normalized request, the signing
helper from a URL) and the components are resolved against it.

Field values are kept as the caller has them. ``fields`` maps lower-cased
names to the combined value (repeated lines joined with ", " as RFC 9110 5.3
and RFC 9421 2.1 do); ``field_lines`` optionally keeps the separate lines,
which only the ``;bs`` parameter needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlsplit

_OBS_FOLD = re.compile(r"\r?\n[ \t]+")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def normalize_value(value: str) -> str:
    """RFC 9421 2.1: strip leading/trailing whitespace, replace obs-fold by one space."""
    if "\n" in value:
        value = _OBS_FOLD.sub(" ", value)
    return value.strip(" \t")


class Message:
    """One request, as far as signature components are concerned.

    :param method: as sent, case preserved (``@method`` is case-sensitive)
    :param scheme: ``http`` or ``https``
    :param authority: the host (and port) the request was sent to
    :param path: the path, not decoded, ``/`` when empty
    :param query: the query without ``?``, not decoded
    :param has_query: whether the target had a ``?``
    :param fields: lower-cased field name -> combined value
    :param field_lines: lower-cased field name -> each field line's value (optional)
    :param request_target: the request target when it is not in origin form
        (absolute form, ``CONNECT`` authority form, ``*``)
    """

    __slots__ = ("method", "scheme", "authority", "path", "query", "has_query", "fields", "field_lines", "request_target", "_qp")

    def __init__(
        self,
        *,
        method: str,
        scheme: str,
        authority: str,
        path: str,
        query: str = "",
        has_query: bool = False,
        fields: Mapping[str, str],
        field_lines: Mapping[str, Sequence[str]] | None = None,
        request_target: str | None = None,
    ) -> None:
        self.method = method
        self.scheme = scheme
        self.authority = authority
        self.path = path or "/"
        self.query = query
        self.has_query = has_query or bool(query)
        self.fields = fields
        self.field_lines = field_lines
        self.request_target = request_target
        self._qp: list[tuple[str, str]] | None = None

    @classmethod
    def from_url(cls, method: str, url: str, headers: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> Message:
        """A message for a request to ``url`` with these header lines (the signing side)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an absolute http(s) URL: {url!r}")
        before_fragment = url.partition("#")[0]
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        lines: dict[str, list[str]] = {}
        for name, value in pairs:
            lines.setdefault(name.lower(), []).append(normalize_value(value))
        return cls(
            method=method,
            scheme=parts.scheme,
            authority=parts.netloc,
            path=parts.path or "/",
            query=parts.query,
            has_query="?" in before_fragment,
            fields={name: ", ".join(values) for name, values in lines.items()},
            field_lines=lines,
        )

    # -- derived values (RFC 9421 2.2) ------------------------------------

    def norm_authority(self) -> str:
        """``@authority``: lower-cased, default port omitted."""
        auth = self.authority.lower()
        port = _DEFAULT_PORTS.get(self.scheme.lower())
        if port and auth.endswith(port):
            auth = auth[: -len(port)]
        return auth

    def target(self) -> str:
        """``@request-target``: origin form unless another form was given."""
        if self.request_target is not None:
            return self.request_target
        return f"{self.path}?{self.query}" if self.has_query else self.path

    def target_uri(self) -> str:
        """``@target-uri``: the absolute URI the request was sent to."""
        origin = f"{self.path}?{self.query}" if self.has_query else self.path
        return f"{self.scheme.lower()}://{self.norm_authority()}{origin}"
