"""Proof-of-work challenges, the client's side: the wire format and the reference solver.

authz answers a request that must show work with a challenge in a header
(docs/challenges.md)::

    Authz-Challenge: v=1, c="v1.Qx3f8Zb1.18.1767225600000.1767225720000.<salt>.<b>.<r>.<mac>", d=18, exp=1767225720

The client finds a nonce ``n`` (1 to 64 characters of ``A-Z a-z 0-9 - _``)
such that SHA-256 over the bytes of ``c`` followed by the bytes of ``n`` starts
with ``d`` zero bits, and repeats the request with::

    Authz-Solution: c="v1.Qx3f8Zb1.18...", n="48213"

Both are RFC 8941 structured-field dictionaries. ``c`` is opaque to the client
(authz authenticates it with an HMAC); ``exp`` is when it stops being
accepted, in Unix seconds. This module is what a Python client needs:
:func:`solve` turns a challenge header into a solution header value, bounded
in difficulty and in time. It imports nothing from the server.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any

from http_sfv.dictionary import Dictionary
from http_sfv.types import Token

#: the response header carrying a challenge (lower case, as authz sends names)
CHALLENGE_HEADER = "authz-challenge"
#: the request header carrying a solution
SOLUTION_HEADER = "authz-solution"
#: the format version this module reads and writes
VERSION = 1
#: no challenge is ever harder than this (authz refuses a policy asking for more)
MAX_DIFFICULTY = 32
#: a solver gives up on a challenge harder than this unless told otherwise
DEFAULT_MAX_DIFFICULTY = 26
#: ... and after this many seconds
DEFAULT_MAX_SECONDS = 60.0
#: bounds of the fields, checked before anything else looks at them
MAX_TOKEN_CHARS = 256
MAX_NONCE_CHARS = 64
MAX_FIELD_CHARS = 512

_TOKEN = re.compile(r"[A-Za-z0-9_.-]{1,%d}" % MAX_TOKEN_CHARS)
_NONCE = re.compile(r"[A-Za-z0-9_-]{1,%d}" % MAX_NONCE_CHARS)
#: the solution exactly as :func:`format_solution` writes it: parsed without the general parser
_CANONICAL_SOLUTION = re.compile(r'c="([A-Za-z0-9_.-]{1,%d})", n="([A-Za-z0-9_-]{1,%d})"' % (MAX_TOKEN_CHARS, MAX_NONCE_CHARS))
#: checking the clock every this many hashes costs nothing measurable and bounds overshoot (~40 ms)
_BATCH = 1 << 16


class ChallengeFormatError(ValueError):
    """A challenge or solution header that does not follow the format."""


class SolveError(Exception):
    """A challenge the solver will not or could not solve within its bounds."""


@dataclass(frozen=True, slots=True)
class Challenge:
    """A parsed ``Authz-Challenge``: the token to hash, its difficulty and its expiry (Unix seconds)."""

    token: str
    difficulty: int
    expires: int


def target(difficulty: int) -> bytes:
    """The bound a digest must stay under: 256-bit big-endian ``2 ** (256 - difficulty)``.

    A digest (32 bytes, compared as bytes, which compares them as big-endian
    numbers) below it starts with at least ``difficulty`` zero bits.
    """
    if not 1 <= difficulty <= MAX_DIFFICULTY:
        raise ValueError(f"difficulty must be 1..{MAX_DIFFICULTY}, got {difficulty}")
    return (1 << (256 - difficulty)).to_bytes(32, "big")


def leading_zero_bits(digest: bytes) -> int:
    """How many zero bits ``digest`` starts with."""
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def solved(token: str, nonce: str, difficulty: int) -> bool:
    """Does SHA-256(token || nonce) start with ``difficulty`` zero bits?"""
    return hashlib.sha256((token + nonce).encode("ascii")).digest() < target(difficulty)


def format_challenge(token: str, difficulty: int, expires: int) -> str:
    """The ``Authz-Challenge`` value."""
    return f'v={VERSION}, c="{token}", d={difficulty}, exp={expires}'


def format_solution(token: str, nonce: str) -> str:
    """The ``Authz-Solution`` value."""
    return f'c="{token}", n="{nonce}"'


class _StrictDictionary(Dictionary):
    """A Dictionary whose parse fails on a repeated key (never "the last one wins")."""

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self.data:
            raise ValueError(f"duplicate key {key!r}")
        super().__setitem__(key, value)


def _dictionary(value: str, what: str) -> Dictionary:
    if len(value) > MAX_FIELD_CHARS:
        raise ChallengeFormatError(f"{what} is longer than {MAX_FIELD_CHARS} characters")
    d = _StrictDictionary()
    try:
        d.parse(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ChallengeFormatError(f"{what} is not a structured-field dictionary: {exc.__cause__ or exc}") from None
    return d


def _string(d: Dictionary, key: str, what: str) -> str:
    if key not in d:
        raise ChallengeFormatError(f"{what} has no {key!r}")
    value = d[key].value
    if not isinstance(value, str) or isinstance(value, Token) or d[key].params:
        raise ChallengeFormatError(f"{what}: {key!r} must be a string without parameters")
    return value


def _integer(d: Dictionary, key: str, what: str) -> int:
    if key not in d:
        raise ChallengeFormatError(f"{what} has no {key!r}")
    value = d[key].value
    if type(value) is not int:
        raise ChallengeFormatError(f"{what}: {key!r} must be an integer")
    return value


def parse_challenge(value: str) -> Challenge:
    """Read an ``Authz-Challenge`` value. Unknown members are ignored (later versions may add some).

    :raises ChallengeFormatError: not a challenge of this version
    """
    d = _dictionary(value.strip(), "the challenge")
    version = _integer(d, "v", "the challenge")
    if version != VERSION:
        raise ChallengeFormatError(f"challenge version {version} (this solver reads version {VERSION})")
    token = _string(d, "c", "the challenge")
    if _TOKEN.fullmatch(token) is None:
        raise ChallengeFormatError(f"the challenge's 'c' is not 1 to {MAX_TOKEN_CHARS} characters of A-Z a-z 0-9 . - _")
    difficulty = _integer(d, "d", "the challenge")
    if not 1 <= difficulty <= MAX_DIFFICULTY:
        raise ChallengeFormatError(f"difficulty {difficulty} is outside 1..{MAX_DIFFICULTY}")
    return Challenge(token, difficulty, _integer(d, "exp", "the challenge"))


def parse_solution(value: str) -> tuple[str, str]:
    """Read an ``Authz-Solution`` value into (token, nonce).

    The form :func:`format_solution` writes is matched directly; any other
    serialization of the same dictionary goes through the general parser,
    with the same result. Members other than ``c`` and ``n`` are refused.

    :raises ChallengeFormatError: not a solution
    """
    m = _CANONICAL_SOLUTION.fullmatch(value)
    if m is not None:
        return m.group(1), m.group(2)
    d = _dictionary(value.strip(" "), "the solution")
    extra = sorted(set(d) - {"c", "n"})
    if extra:
        raise ChallengeFormatError(f"the solution has unknown members {', '.join(extra)}")
    token, nonce = _string(d, "c", "the solution"), _string(d, "n", "the solution")
    if _TOKEN.fullmatch(token) is None:
        raise ChallengeFormatError(f"the solution's 'c' is not 1 to {MAX_TOKEN_CHARS} characters of A-Z a-z 0-9 . - _")
    if _NONCE.fullmatch(nonce) is None:
        raise ChallengeFormatError(f"the solution's 'n' is not 1 to {MAX_NONCE_CHARS} characters of A-Z a-z 0-9 - _")
    return token, nonce


def challenge_in(text: str) -> str:
    """The challenge value in ``text``: a whole response as ``curl -i`` prints it, or the bare value.

    :raises ChallengeFormatError: the text holds header lines but no ``Authz-Challenge``
    """
    lines = text.replace("\r\n", "\n").split("\n")
    found = [line.partition(":")[2].strip() for line in lines if line.partition(":")[0].strip().lower() == CHALLENGE_HEADER]
    if found:
        return found[-1]  # after redirects curl prints several responses: the last one counts
    stripped = text.strip()
    if "\n" in stripped or stripped.upper().startswith("HTTP/"):
        raise ChallengeFormatError("no Authz-Challenge header in the response")
    return stripped


def find_nonce(token: str, difficulty: int, deadline: float) -> str:
    """The first decimal nonce that solves ``token`` at ``difficulty``, searched until ``deadline`` (monotonic).

    :raises SolveError: the deadline passed first
    """
    bound = target(difficulty)
    prefix = hashlib.sha256(token.encode("ascii"))
    copy = prefix.copy
    start = 0
    while True:
        for i in range(start, start + _BATCH):
            h = copy()
            h.update(b"%d" % i)
            if h.digest() < bound:
                return str(i)
        start += _BATCH
        if time.monotonic() >= deadline:
            raise SolveError(f"no solution after {start} hashes; gave up at the time limit")


def solve(
    challenge_header: str,
    *,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_difficulty: int = DEFAULT_MAX_DIFFICULTY,
    now: float | None = None,
) -> str:
    """The ``Authz-Solution`` value for an ``Authz-Challenge`` value (or a ``curl -i`` response holding one).

    Bounded: a challenge harder than ``max_difficulty`` bits is refused
    without work, and the search stops after ``max_seconds`` or when the
    challenge expires, whichever comes first.

    :param now: the Unix time in seconds (default: the system clock), to judge the expiry
    :raises ChallengeFormatError: the input holds no well-formed challenge
    :raises SolveError: too hard, already expired, or not solved in time
    """
    if not 1 <= max_difficulty <= MAX_DIFFICULTY:
        raise ValueError(f"max_difficulty must be 1..{MAX_DIFFICULTY}")
    challenge = parse_challenge(challenge_in(challenge_header))
    if challenge.difficulty > max_difficulty:
        raise SolveError(f"difficulty {challenge.difficulty} is above the limit of {max_difficulty} bits")
    wall = time.time() if now is None else now
    left = challenge.expires - wall
    if left <= 0:
        raise SolveError(f"the challenge expired {int(-left)} s ago; ask again")
    deadline = time.monotonic() + min(max_seconds, left)
    return format_solution(challenge.token, find_nonce(challenge.token, challenge.difficulty, deadline))


__all__ = [
    "CHALLENGE_HEADER",
    "DEFAULT_MAX_DIFFICULTY",
    "DEFAULT_MAX_SECONDS",
    "MAX_DIFFICULTY",
    "SOLUTION_HEADER",
    "VERSION",
    "Challenge",
    "ChallengeFormatError",
    "SolveError",
    "challenge_in",
    "find_nonce",
    "format_challenge",
    "format_solution",
    "leading_zero_bits",
    "parse_challenge",
    "parse_solution",
    "solve",
    "solved",
    "target",
]
