"""The canonical request path routes match, and what makes a path ambiguous.

Every door builds its ``Request`` through :func:`canonicalize`, so a route
sees one path whatever the proxy and whatever the client's spelling. The raw
path stays in ``Request.path``: signatures (RFC 9421 ``@path``, Kong
hmac-auth) cover the path as sent.

The canonical path is RFC 3986 normalization (section 6.2.2):

* percent-encoded unreserved characters (``ALPHA / DIGIT / - . _ ~``) are
  decoded (``/%61dmin`` is ``/admin``); every other percent-encoding keeps
  upper-case hex (``%2f`` is ``%2F``), and characters a URI may not hold raw
  (non-ASCII, ``"``, ``\\``, ``{``...) are percent-encoded as UTF-8, so the
  canonical path is ASCII;
* dot segments are removed (section 5.2.4);
* repeated slashes are merged (``//admin//x`` is ``/admin/x``);
* ``;parameters`` are dropped from each segment (``/admin;x/y`` is
  ``/admin/y``), as servlet containers and Envoy's path normalization read them.

What a backend may read differently from authz is reported as a
:class:`PathProblem`; the engine refuses a request with any problem the
policy's ``paths.allow`` does not list (``request.ambiguous_path``). Some
classes can never be allowed (``NEVER_ALLOWED``): no reading of them is
safe. The canonical path does not depend on what is allowed: an allowed
``%2F`` stays ``%2F`` and is no separator.
"""

from __future__ import annotations

import re
from enum import IntFlag


class PathProblem(IntFlag):
    """One way a request path can mean different things to authz and to a backend.

    The policy name of a class is its lower-cased member name (``encoded_slash``).
    """

    #: ``%2F``: a separator to backends that decode before routing, data to others
    ENCODED_SLASH = 1 << 0
    #: ``%5C``: a separator to backends that decode and treat ``\\`` as one (Windows, some Java)
    ENCODED_BACKSLASH = 1 << 1
    #: a raw ``\\``: a separator to some backends (IIS, Tomcat with some options)
    BACKSLASH = 1 << 2
    #: a ``;`` path parameter: dropped by servlet containers and Envoy, data to others;
    #: or ``%3B``, a parameter to backends that decode before they split parameters off
    SEMICOLON = 1 << 3
    #: a ``.`` or ``..`` segment: removed by some backends, routed literally by others
    DOT_SEGMENT = 1 << 4
    #: a dot segment spelt with ``%2E``: some backends decode it only after resolving dot segments
    ENCODED_DOT = 1 << 5
    #: ``%25`` followed by two hex digits (``%252e``): a backend that decodes twice reads another path
    DOUBLE_ENCODING = 1 << 6
    #: percent-encoded bytes that are not UTF-8 (``%E9`` as Latin-1): decoders disagree on them
    NON_UTF8 = 1 << 7
    #: a path starting with ``//``: URL parsers read ``//host/path`` as an authority
    LEADING_DOUBLE_SLASH = 1 << 8
    # never allowed
    #: ``%00`` or a raw control character (NUL, CR, LF, TAB, DEL) or space
    CONTROL = 1 << 9
    #: ``%`` not followed by two hex digits (``%zz``, a truncated ``%4``, IIS ``%u002e``)
    INVALID_ENCODING = 1 << 10
    #: ``..`` that would climb above the root (``/../admin``)
    ABOVE_ROOT = 1 << 11
    #: a dot segment whose effect depends on the parser: ``..;x``, or ``..`` next to ``//``
    AMBIGUOUS_DOT_SEGMENT = 1 << 12
    #: an overlong or 5/6-byte UTF-8 form (``%C0%AF`` is ``/`` to lenient decoders)
    OVERLONG_UTF8 = 1 << 13
    #: absolute-form (``http://host/p``), authority-form (``host:443``), ``*``, or no leading ``/``
    NOT_ORIGIN_FORM = 1 << 14
    #: a ``#`` in the target: no client sends a fragment; backends cut it at different places
    FRAGMENT = 1 << 15
    # allowed when listed (added after the others: the bits are stable)
    #: a name ending in ``.`` or a space (``%20``): Windows (IIS, NTFS) drops them, ``/admin./x`` is ``/admin/x``
    TRAILING_DOT_OR_SPACE = 1 << 16


NO_PROBLEM = PathProblem(0)
NEVER_ALLOWED = (
    PathProblem.CONTROL
    | PathProblem.INVALID_ENCODING
    | PathProblem.ABOVE_ROOT
    | PathProblem.AMBIGUOUS_DOT_SEGMENT
    | PathProblem.OVERLONG_UTF8
    | PathProblem.NOT_ORIGIN_FORM
    | PathProblem.FRAGMENT
)
#: every class by its policy name, in bit order
BY_NAME: dict[str, PathProblem] = {p.name.lower(): p for p in PathProblem if p.name}
ALLOWABLE = frozenset(name for name, p in BY_NAME.items() if not p & NEVER_ALLOWED)


def names(problems: int) -> str:
    """The policy names of the classes in ``problems``, comma-separated, in bit order."""
    return ",".join(name for name, p in BY_NAME.items() if problems & p)


# plain ints in the loops: IntFlag arithmetic costs a microsecond an operation
_ENCODED_SLASH = PathProblem.ENCODED_SLASH.value
_ENCODED_BACKSLASH = PathProblem.ENCODED_BACKSLASH.value
_BACKSLASH = PathProblem.BACKSLASH.value
_SEMICOLON = PathProblem.SEMICOLON.value
_DOT_SEGMENT = PathProblem.DOT_SEGMENT.value
_ENCODED_DOT = PathProblem.ENCODED_DOT.value
_DOUBLE_ENCODING = PathProblem.DOUBLE_ENCODING.value
_NON_UTF8 = PathProblem.NON_UTF8.value
_LEADING_DOUBLE_SLASH = PathProblem.LEADING_DOUBLE_SLASH.value
_CONTROL = PathProblem.CONTROL.value
_INVALID_ENCODING = PathProblem.INVALID_ENCODING.value
_ABOVE_ROOT = PathProblem.ABOVE_ROOT.value
_AMBIGUOUS_DOT_SEGMENT = PathProblem.AMBIGUOUS_DOT_SEGMENT.value
_OVERLONG_UTF8 = PathProblem.OVERLONG_UTF8.value
_FRAGMENT = PathProblem.FRAGMENT.value
_TRAILING_DOT_OR_SPACE = PathProblem.TRAILING_DOT_OR_SPACE.value
# characters a canonical path holds raw: unreserved, sub-delims but ";", ":" and "@"
_RAW_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
# the common case, decided by one regex: nothing to decode, nothing to resolve
_PLAIN = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,=:@/]*")
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,=:@]*")
_DOTS = frozenset({".", ".."})


def target_problems(target: str) -> PathProblem:
    """What the raw request target's form says, before it is split into path and query."""
    problems = NO_PROBLEM
    if not target.startswith("/"):
        problems |= PathProblem.NOT_ORIGIN_FORM
    if "#" in target:
        problems |= PathProblem.FRAGMENT
    return problems


def canonicalize(path: str) -> tuple[str, PathProblem]:
    """The canonical form of a raw path (no query) and the problems found in it.

    The canonical path is meaningful only when the problems are allowed; a
    path with a problem that is never allowed gets a best-effort form.
    """
    if not path.startswith("/"):
        return path, PathProblem.NOT_ORIGIN_FORM
    if _PLAIN.fullmatch(path) and "//" not in path and "/." not in path and "./" not in path and path[-1] != ".":
        return path, NO_PROBLEM
    known = _RECENT.get(path)
    if known is not None:
        return known
    result = _canonicalize(path)
    if len(path) <= _RECENT_MAX_LEN:
        if len(_RECENT) >= _RECENT_SIZE:
            _RECENT.clear()  # bounded: a flood of distinct paths costs only the misses
        _RECENT[path] = result
    return result


# Paths that need the slow path repeat (the same encoded name, the same
# endpoint): remember the most recent ones. About 0.1 us for a hit, 5 us or
# more for the work.
_RECENT: dict[str, tuple[str, PathProblem]] = {}
_RECENT_SIZE = 4096
_RECENT_MAX_LEN = 512


def _canonicalize(path: str) -> tuple[str, PathProblem]:
    problems = _LEADING_DOUBLE_SLASH if path.startswith("//") else 0
    segments: list[str] = []
    dots = False
    for raw in path[1:].split("/"):
        if _PLAIN_SEGMENT.fullmatch(raw):
            name, params, encoded_dot = raw, False, False
        else:
            name, found, params, encoded_dot = _segment(raw)
            problems |= found
        if name in _DOTS:
            dots = True
            problems |= _DOT_SEGMENT
            if encoded_dot:
                problems |= _ENCODED_DOT
            if params:
                problems |= _AMBIGUOUS_DOT_SEGMENT
        elif name[-1:] == "." or name[-3:] == "%20":
            problems |= _TRAILING_DOT_OR_SPACE
        segments.append(name)
    if not dots:
        return "/" + "/".join(_merge(segments)), PathProblem(problems) if problems else NO_PROBLEM
    # RFC 3986 resolves dot segments with empty segments still in place, then
    # slashes are merged; many servers (nginx) merge first. When the two
    # readings differ ("/admin//../x"), the path is ambiguous.
    resolved, climbed = _remove_dots(segments)
    canonical = _merge(resolved)
    if any(not s for s in segments[:-1]):
        other, climbed_other = _remove_dots(_merge(segments))
        climbed = climbed or climbed_other
        if _merge(other) != canonical:
            problems |= _AMBIGUOUS_DOT_SEGMENT
    if climbed:
        problems |= _ABOVE_ROOT
    return "/" + "/".join(canonical), PathProblem(problems)


def _merge(segments: list[str]) -> list[str]:
    """Drop empty segments but a last one (the trailing slash)."""
    last = len(segments) - 1
    return [s for i, s in enumerate(segments) if s or i == last]


def _remove_dots(segments: list[str]) -> tuple[list[str], bool]:
    """RFC 3986 5.2.4 over segments: (result, whether a ``..`` found nothing to remove)."""
    out: list[str] = []
    climbed = False
    last = len(segments) - 1
    for i, s in enumerate(segments):
        if s in _DOTS:
            if s == "..":
                if out:
                    out.pop()
                else:
                    climbed = True
            if i == last:
                out.append("")  # "/a/b/.." is "/a/", a directory
            continue
        out.append(s)
    return out, climbed


def _segment(raw: str) -> tuple[str, int, bool, bool]:
    """One raw segment -> (canonical name without parameters, problems, had parameters, had an encoded dot).

    Parameters are checked like the name (a backend that keeps them may decode
    them) but left out of the name.
    """
    out: list[str] = []
    problems = 0
    params = False
    encoded_dot = False
    run = bytearray()  # consecutive percent-encoded bytes, checked as UTF-8 together
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == "%":
            if i + 2 >= n or raw[i + 1] not in _HEX or raw[i + 2] not in _HEX:
                problems |= _INVALID_ENCODING | _check_run(run)
                text = "%25"
                i += 1
            else:
                b = int(raw[i + 1 : i + 3], 16)
                run.append(b)
                i += 3
                if b in _UNRESERVED:
                    text = chr(b)
                    encoded_dot |= b == 0x2E and not params
                else:
                    text = "%%%02X" % b
                    if b == 0x2F:
                        problems |= _ENCODED_SLASH
                    elif b == 0x5C:
                        problems |= _ENCODED_BACKSLASH
                    elif b == 0x00:
                        problems |= _CONTROL
                    elif b == 0x3B:  # data here, but a parameter to backends that decode first
                        problems |= _SEMICOLON
                    elif b == 0x25 and _hex_pair_follows(raw, i):
                        problems |= _DOUBLE_ENCODING
        else:
            if run:
                problems |= _check_run(run)
            i += 1
            if c in _RAW_OK:
                text = c
            elif c == ";":
                problems |= _SEMICOLON
                params = True
                continue
            else:
                if c == "\\":
                    problems |= _BACKSLASH
                elif c == "#":
                    problems |= _FRAGMENT
                elif c <= " " or c == "\x7f":
                    problems |= _CONTROL
                elif "\ud800" <= c <= "\udfff":
                    problems |= _NON_UTF8
                text = "".join("%%%02X" % b for b in c.encode("utf-8", "surrogatepass"))
        if not params:
            out.append(text)
    if run:
        problems |= _check_run(run)
    return "".join(out), problems, params, encoded_dot


def _hex_pair_follows(raw: str, j: int) -> bool:
    """Whether, after one decoding, the characters at ``j`` read as two hex digits."""
    for _ in range(2):
        c = raw[j : j + 1]
        if c == "%" and raw[j + 1 : j + 2] in _HEX and raw[j + 2 : j + 3] in _HEX:
            c = chr(int(raw[j + 1 : j + 3], 16))
            j += 3
        else:
            j += 1
        if not c or c not in _HEX:
            return False
    return True


def _check_run(run: bytearray) -> int:
    """Problems of one run of percent-encoded bytes (then emptied)."""
    if max(run, default=0) < 0x80:
        run.clear()
        return 0
    data = bytes(run)
    run.clear()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        for k, b in enumerate(data):
            nxt = data[k + 1] if k + 1 < len(data) else 0
            if b in (0xC0, 0xC1) or b >= 0xF8 or (b == 0xE0 and 0x80 <= nxt <= 0x9F) or (b == 0xF0 and 0x80 <= nxt <= 0x8F):
                return _OVERLONG_UTF8
        return _NON_UTF8
    return 0


def fold_case(path: str) -> str:
    """A canonical path for case-insensitive matching: ASCII lower case, plus the
    non-ASCII letters that Java's ``equalsIgnoreCase`` and .NET's invariant
    culture fold onto ASCII ones (dotless ``ı`` and ``İ`` to ``i``, long ``ſ`` to
    ``s``, the Kelvin sign to ``k``), so ``/admın`` cannot pass for another path
    to authz while a case-insensitive backend reads ``/admin``."""
    folded = path.lower()
    if "%" in folded:
        for encoded, letter in _FOLDS:
            folded = folded.replace(encoded, letter)
    return folded


_FOLDS = (("%c4%b1", "i"), ("%c4%b0", "i"), ("%c5%bf", "s"), ("%e2%84%aa", "k"))
