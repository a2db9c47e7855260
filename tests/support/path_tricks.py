"""One table of request targets that try to reach a denied subtree, and ordinary ones.

examples/policy.yaml denies ``/admin`` and everything under it in any letter
case (``subtree`` + ``ignore_case``) and lets everything else through its
``api`` route. Every ``TRICKS`` target means ``/admin/...`` to *some* backend
(one that decodes twice, strips ``;`` parameters, folds case, treats ``\\`` as a
separator...): none may reach an upstream in a form that any backend reads
as ``/admin/...`` (``admin_readings``). ``NO_PATH`` targets name no path and
may not reach it at all; ``CONTROLS`` are ordinary targets that must. Each row holds what authz itself answers under the example
policy, whichever door the request comes through; a proxy may refuse a trick
before asking authz.

Targets are written as they go on the request line, byte for byte (UTF-8 for
the one raw non-ASCII row).
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import unquote

AMBIGUOUS = (400, "request.ambiguous_path")
#: a target that is not origin-form is no path at all: both doors refuse it before the canonicalizer
MALFORMED = (400, "request.malformed")
DENIED = (403, "route.deny")
ALLOWED = (200, "ok")


class Row(NamedTuple):
    target: str
    #: authz's (status, reason) under examples/policy.yaml
    expect: tuple[int, str]
    why: str

    @property
    def origin_form(self) -> bool:
        return self.target.startswith("/")


TRICKS: list[Row] = [
    Row("/admin/x", DENIED, "the plain request"),
    Row("//admin/x", AMBIGUOUS, "leading //: an authority to URL parsers"),
    Row("/%61dmin/x", DENIED, "encoded unreserved letter"),
    Row("/%41DMIN/x", DENIED, "encoded letters, upper case"),
    Row("/./admin/x", AMBIGUOUS, "dot segment"),
    Row("/v1/../admin/x", AMBIGUOUS, "dot-dot segment"),
    Row("/admin/./x", AMBIGUOUS, "dot segment inside the subtree"),
    Row("/../admin/x", AMBIGUOUS, "above the root"),
    Row("/Admin/x", DENIED, "case: case-insensitive backends"),
    Row("/ADMIN/x", DENIED, "case"),
    Row("/adm%C4%B1n/x", DENIED, "dotless i: Java equalsIgnoreCase reads admin"),
    Row("/ADM%C4%B0N/x", DENIED, "dotted capital I: Java lower-cases it to i"),
    Row("/admın/x", MALFORMED, "raw dotless i (UTF-8 on the wire): not a URI character"),
    Row("/admin", DENIED, "the subtree root without a slash"),
    Row("/admin;x/", AMBIGUOUS, "path parameter: servlet containers read /admin/"),
    Row("/admin;jsessionid=1/x", AMBIGUOUS, "path parameter"),
    Row("/admin%3Bx/", AMBIGUOUS, "encoded ;: a parameter once decoded"),
    Row("/admin..;/x", AMBIGUOUS, "Tomcat-style ..; after a name"),
    Row("/admin./x", AMBIGUOUS, "trailing dot: Windows drops it"),
    Row("/admin%20/x", AMBIGUOUS, "trailing space: Windows drops it"),
    Row("/v1/..;/admin/x", AMBIGUOUS, "..; is .. to Tomcat and Envoy"),
    Row("/admin%2Fx", AMBIGUOUS, "encoded slash"),
    Row("/admin%2fx", AMBIGUOUS, "encoded slash, lower-case hex"),
    Row("/public/..%2fadmin/x", AMBIGUOUS, "encoded slash hiding a dot-dot"),
    Row("/admin%5Cx", AMBIGUOUS, "encoded backslash"),
    Row("/admin\\x", AMBIGUOUS, "raw backslash: a separator to some servers"),
    Row("/admin%00/x", AMBIGUOUS, "encoded NUL"),
    Row("/%2e%2e/admin/x", AMBIGUOUS, "encoded dots above the root"),
    Row("/v1/%2E%2E/admin/x", AMBIGUOUS, "encoded dot-dot"),
    Row("/admin/%2e/x", AMBIGUOUS, "encoded dot"),
    Row("/v1/.%2e/admin/x", AMBIGUOUS, "half-encoded dot-dot"),
    Row("/%2561dmin/x", AMBIGUOUS, "double encoding: a second decoding reads /admin"),
    Row("/admin%252fx", AMBIGUOUS, "double-encoded slash"),
    Row("/admin%c0%afx", AMBIGUOUS, "overlong UTF-8 slash"),
    Row("/v1/%c0%ae%c0%ae/admin/x", AMBIGUOUS, "overlong UTF-8 dots"),
    Row("/v1//../admin/x", AMBIGUOUS, "// next to ..: /admin/x to nginx, /v1/admin/x to RFC 3986"),
    Row("/public#/../admin/x", AMBIGUOUS, "fragment: Go servers keep it in the path"),
    Row("/admin/%zz", AMBIGUOUS, "invalid percent-encoding"),
    Row("/admin/%4", AMBIGUOUS, "truncated percent-encoding"),
    Row("http://api.example.com/admin/x", MALFORMED, "absolute-form"),
]

#: targets that name no path at all: never for an upstream
NO_PATH: list[Row] = [
    Row("api.example.com:443", MALFORMED, "authority-form"),
    Row("*", MALFORMED, "asterisk-form"),
]

CONTROLS: list[Row] = [
    Row("/public/x", ALLOWED, "plain"),
    Row("/v1/items?page=1&next=/admin/x", ALLOWED, "the query is not the path"),
    Row("/v1/items/", ALLOWED, "trailing slash"),
    Row("/administrator", ALLOWED, "a sibling of the subtree, not in it"),
    Row("/admin-tools/x", ALLOWED, "a sibling of the subtree"),
    Row("/v1/caf%C3%A9", ALLOWED, "percent-encoded UTF-8"),
    Row("/v1/a%2Bb", ALLOWED, "an encoded sub-delimiter stays data"),
    Row("/%76%31/items", ALLOWED, "encoded unreserved letters"),
    Row("/.well-known/security.txt", ALLOWED, "a name starting with a dot"),
    Row("/healthz", ALLOWED, "the health route"),
]


# how liberal backends read a path: decoding up to three times (overlong
# UTF-8 for "/" and "." included), "\\" as "/", ";params" dropped, a NUL or a
# "#" ending the path, "//" merged before or after dot segments, trailing dots
# and spaces of a name dropped (Windows), case folded the way Java / .NET fold it
_OVERLONG = (("%c0%af", "/"), ("%e0%80%af", "/"), ("%c0%ae", "."), ("%e0%80%ae", "."))
_FOLDS = str.maketrans({"ı": "i", "İ": "i", "ſ": "s", "\u212a": "k"})


def _resolve(path: str, merge_first: bool) -> str:
    segments = path.split("/")[1:]
    if merge_first:
        segments = [s for i, s in enumerate(segments) if s or i == len(segments) - 1]
    out: list[str] = []
    for i, s in enumerate(segments):
        if s in (".", ".."):
            if s == ".." and out:
                out.pop()
            if i == len(segments) - 1:
                out.append("")
            continue
        out.append(s)
    out = [s for i, s in enumerate(out) if s or i == len(out) - 1]
    return "/" + "/".join(out)


def admin_readings(target: str) -> set[str]:
    """The readings of a target (path and query) that some backend takes for /admin or below."""
    path = target.split("?", 1)[0]
    if "://" in path:
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    texts = set()
    for start in (path, path.split("#", 1)[0]):
        cur = start
        for _ in range(4):
            texts.update({cur, cur.split("\x00", 1)[0]})
            for seq, char in _OVERLONG:
                cur = re.sub(re.escape(seq), char, cur, flags=re.IGNORECASE)
            cur = unquote(cur, errors="replace")
    found = set()
    for text in texts:
        for slashes in (text, text.replace("\\", "/")):
            for params in (slashes, re.sub(r";[^/]*", "", slashes)):
                if not params.startswith("/"):
                    continue
                for merge_first in (False, True):
                    resolved = _resolve(params, merge_first).translate(_FOLDS).lower()
                    for reading in (resolved, re.sub(r"(?<=[^/.])[. ]+(?=/|$)", "", resolved)):
                        if reading == "/admin" or reading.startswith("/admin/"):
                            found.add(reading)
    return found
