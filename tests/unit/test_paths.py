"""The canonical path (authz.paths), its problem classes, and route matching on it.

The tables are literal: raw path -> canonical path and the classes found.
RFC 3986 section 5.2.4 and 5.4 examples are included (as absolute paths).
"""

from __future__ import annotations

import pathlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.config.context import CompileContext
from authz.config.source import load
from authz.keys import EMPTY_KEYRING
from authz.paths import ALLOWABLE, BY_NAME, NEVER_ALLOWED, PathProblem, canonicalize, fold_case, names, target_problems
from authz.policy.compile import compile_policy
from authz.policy.model import Policy
from authz.request import Request
from authz.stages.route import match_route
from tests.support.path_tricks import admin_readings

ROOT = pathlib.Path(__file__).parents[2]

# raw path -> (canonical path, problem classes)
CANONICAL: list[tuple[str, str, str]] = [
    # unchanged
    ("/", "/", ""),
    ("/v1/items", "/v1/items", ""),
    ("/v1/items/", "/v1/items/", ""),
    ("/a-b_c.d~e/f!$&'()*+,=:@", "/a-b_c.d~e/f!$&'()*+,=:@", ""),
    ("/.well-known/x", "/.well-known/x", ""),
    ("/a..b/c", "/a..b/c", ""),
    ("/v1/items.json", "/v1/items.json", ""),
    # percent-encoding: unreserved decoded, the rest upper-case hex
    ("/%61dmin/x", "/admin/x", ""),
    ("/%41%44%4D%49%4E", "/ADMIN", ""),
    ("/a%7e%2d%5f%2E%30", "/a~-_.0", ""),
    ("/caf%c3%a9", "/caf%C3%A9", ""),
    ("/a%20b%3f%23%25", "/a%20b%3F%23%25", ""),
    ("/a%2bb%21", "/a%2Bb%21", ""),
    ("/%25%32%65", "/%252e", "double_encoding"),  # %32 %65 are "2" "e": the same as %252e
    # characters a URI holds only encoded
    ("/café", "/caf%C3%A9", ""),
    ('/a"b<c>d{e}f|g^h`i[j]', "/a%22b%3Cc%3Ed%7Be%7Df%7Cg%5Eh%60i%5Bj%5D", ""),
    # repeated slashes merged
    ("/a//b///c", "/a/b/c", ""),
    ("/a/b//", "/a/b/", ""),
    ("//admin/x", "/admin/x", "leading_double_slash"),
    # RFC 3986 5.2.4 and 5.4 examples (as absolute paths)
    ("/a/b/c/./../../g", "/a/g", "dot_segment"),
    ("/mid/content=5/../6", "/mid/6", "dot_segment"),
    ("/b/c/./g", "/b/c/g", "dot_segment"),
    ("/b/c/.", "/b/c/", "dot_segment"),
    ("/b/c/./", "/b/c/", "dot_segment"),
    ("/b/c/..", "/b/", "dot_segment"),
    ("/b/c/../", "/b/", "dot_segment"),
    ("/b/c/../g", "/b/g", "dot_segment"),
    ("/b/c/../..", "/", "dot_segment"),
    ("/b/c/../../g", "/g", "dot_segment"),
    ("/b/c/g.", "/b/c/g.", "trailing_dot_or_space"),  # Windows drops the dot
    ("/b/c/.g", "/b/c/.g", ""),
    ("/b/c/g..", "/b/c/g..", "trailing_dot_or_space"),
    ("/b/c/..g", "/b/c/..g", ""),
    ("/b/c/./../g", "/b/g", "dot_segment"),
    ("/b/c/./g/.", "/b/c/g/", "dot_segment"),
    ("/b/c/g/./h", "/b/c/g/h", "dot_segment"),
    ("/b/c/g/../h", "/b/c/h", "dot_segment"),
    ("/b/c/../../../g", "/g", "dot_segment,above_root"),  # RFC 5.4.2 clamps; authz refuses
    ("/b/c/../../../../g", "/g", "dot_segment,above_root"),
    ("/..", "/", "dot_segment,above_root"),
    ("/../admin/x", "/admin/x", "dot_segment,above_root"),
    # encoded dots
    ("/v1/%2E%2E/admin/x", "/admin/x", "dot_segment,encoded_dot"),
    ("/v1/.%2e/admin/x", "/admin/x", "dot_segment,encoded_dot"),
    ("/admin/%2e/x", "/admin/x", "dot_segment,encoded_dot"),
    ("/%2e%2e/admin/x", "/admin/x", "dot_segment,encoded_dot,above_root"),
    ("/admin%2ejson", "/admin.json", ""),
    # Windows drops trailing dots and spaces from names
    ("/admin./x", "/admin./x", "trailing_dot_or_space"),
    ("/admin%2e/x", "/admin./x", "trailing_dot_or_space"),
    ("/admin%20/x", "/admin%20/x", "trailing_dot_or_space"),
    ("/admin.;x/y", "/admin./y", "semicolon,trailing_dot_or_space"),
    # dot segments next to empty segments: RFC order and merge-first disagree
    ("/admin//../public", "/admin/public", "dot_segment,ambiguous_dot_segment"),
    ("/v1//../admin/x", "/v1/admin/x", "dot_segment,ambiguous_dot_segment"),
    ("/a//./b", "/a/b", "dot_segment"),  # "." removes nothing: both readings agree
    ("//../admin", "/admin", "dot_segment,leading_double_slash,above_root"),
    # ;parameters dropped from each segment
    ("/admin;x/", "/admin/", "semicolon"),
    ("/admin;x=1;y/users", "/admin/users", "semicolon"),
    ("/admin..;/x", "/admin../x", "semicolon,trailing_dot_or_space"),
    ("/v1/..;/admin/x", "/admin/x", "semicolon,dot_segment,ambiguous_dot_segment"),
    ("/a;%2F/b", "/a/b", "encoded_slash,semicolon"),  # parameters are checked too
    ("/admin%3bx/", "/admin%3Bx/", "semicolon"),  # data, but a parameter once decoded
    # encoded and raw separators stay data
    ("/admin%2Fx", "/admin%2Fx", "encoded_slash"),
    ("/admin%2fx", "/admin%2Fx", "encoded_slash"),
    ("/admin%5Cx", "/admin%5Cx", "encoded_backslash"),
    ("/admin%5cx", "/admin%5Cx", "encoded_backslash"),
    ("/admin\\x", "/admin%5Cx", "backslash"),
    ("/public/..%2fadmin", "/public/..%2Fadmin", "encoded_slash"),
    # double encoding
    ("/%2561dmin/x", "/%2561dmin/x", "double_encoding"),
    ("/admin%252fx", "/admin%252fx", "double_encoding"),
    ("/a%25%32%46", "/a%252F", "double_encoding"),
    ("/a%25zz", "/a%25zz", ""),  # %25 then no hex pair: one decoding reads "%zz", data
    # UTF-8
    ("/admin%c0%afx", "/admin%C0%AFx", "overlong_utf8"),
    ("/%c0%ae%c0%ae/admin", "/%C0%AE%C0%AE/admin", "overlong_utf8"),
    ("/%e0%80%af", "/%E0%80%AF", "overlong_utf8"),
    ("/%f0%80%80%af", "/%F0%80%80%AF", "overlong_utf8"),
    ("/%f8%80%80%80%af", "/%F8%80%80%80%AF", "overlong_utf8"),
    ("/caf%e9", "/caf%E9", "non_utf8"),
    ("/%ed%a0%80", "/%ED%A0%80", "non_utf8"),  # a UTF-16 surrogate
    ("/%c3", "/%C3", "non_utf8"),  # truncated
    # never allowed
    ("/admin%00/x", "/admin%00/x", "control"),
    ("/admin\x00/x", "/admin%00/x", "control"),
    ("/a b", "/a%20b", "control"),
    ("/a\tb", "/a%09b", "control"),
    ("/admin%zz", "/admin%25zz", "invalid_encoding"),
    ("/admin%4", "/admin%254", "invalid_encoding"),
    ("/admin%", "/admin%25", "invalid_encoding"),
    ("/%u002e%u002e/admin", "/%25u002e%25u002e/admin", "invalid_encoding"),
    ("/public#/../admin", "/admin", "dot_segment,fragment"),
    ("*", "*", "not_origin_form"),
    ("api.example.com:443", "api.example.com:443", "not_origin_form"),
    ("", "", "not_origin_form"),
]


@pytest.mark.parametrize(("raw", "canonical", "problems"), CANONICAL, ids=[repr(r[0])[1:-1] or "empty" for r in CANONICAL])
def test_canonical_path(raw: str, canonical: str, problems: str) -> None:
    got, found = canonicalize(raw)
    assert (got, names(found)) == (canonical, problems)
    if not found & NEVER_ALLOWED:
        # canonical is a fixed point: canonicalizing it again changes nothing
        assert canonicalize(got)[0] == got


def test_every_class_is_covered_by_the_table() -> None:
    seen = {n for _, _, p in CANONICAL for n in p.split(",") if n}
    assert seen | {"not_origin_form", "fragment"} == set(BY_NAME)


def test_canonical_paths_are_ascii() -> None:
    for raw, _, _ in CANONICAL:
        assert canonicalize(raw)[0].isascii()


@pytest.mark.parametrize(
    ("target", "problems"),
    [
        ("/v1/items?q=1", ""),
        ("/a?x=#frag", "fragment"),
        ("/a#b", "fragment"),
        ("http://api.example.com/admin/x", "not_origin_form"),
        ("https://api.example.com", "not_origin_form"),
        ("api.example.com:443", "not_origin_form"),
        ("*", "not_origin_form"),
    ],
)
def test_target_form(target: str, problems: str) -> None:
    assert names(target_problems(target)) == problems


def test_request_keeps_the_raw_path_for_signatures_and_adds_the_canonical_one() -> None:
    req = Request(method="GET", path="/v1/%7Euser/../items", query="a=%2F", has_query=True)
    assert (req.path, req.target) == ("/v1/%7Euser/../items", "/v1/%7Euser/../items?a=%2F")
    assert req.route_path == "/v1/items"
    assert req.path_problems == PathProblem.DOT_SEGMENT
    # the query is not part of the path: nothing in it is a problem
    assert Request(method="GET", path="/a", query="x=%00%2F..", has_query=True).path_problems == 0
    absolute = Request(method="GET", path="/admin", target_problems=target_problems("http://h/admin"))
    assert absolute.path_problems == PathProblem.NOT_ORIGIN_FORM


def test_classes_that_can_be_allowed() -> None:
    assert sorted(ALLOWABLE) == [
        "backslash", "dot_segment", "double_encoding", "encoded_backslash", "encoded_dot",
        "encoded_slash", "leading_double_slash", "non_utf8", "semicolon", "trailing_dot_or_space",
    ]  # fmt: skip
    never = {n for n, p in BY_NAME.items() if p & NEVER_ALLOWED}
    assert never == {"control", "invalid_encoding", "above_root", "ambiguous_dot_segment", "overlong_utf8", "not_origin_form", "fragment"}


def test_every_class_is_in_the_policy_docs_table() -> None:
    doc = (ROOT / "docs" / "policy.md").read_text()
    rows = set(re.findall(r"^\| `([a-z_0-9]+)` \|", doc, re.MULTILINE))
    assert set(BY_NAME) <= rows


@pytest.mark.parametrize(
    ("path", "folded"),
    [
        ("/ADMIN/X", "/admin/x"),
        ("/Adm%C4%B1n", "/admin"),  # dotless i: "ı".upper() is "I"
        ("/ADM%C4%B0N", "/admin"),  # dotted capital I: Java lower-cases it to "i"
        ("/%C5%BFecret", "/secret"),  # long s: "ſ".upper() is "S"
        ("/%E2%84%AAey", "/key"),  # Kelvin sign: lower-cases to "k"
        ("/A%2FB", "/a%2fb"),
    ],
)
def test_case_folding(path: str, folded: str) -> None:
    assert fold_case(path) == folded


# matching


def _policy(text: str) -> Policy:
    return compile_policy(load("policy.yaml", text), CompileContext(file="policy.yaml", base_dir=".", keyring=EMPTY_KEYRING))


def _route(policy: Policy, path: str) -> str:
    route = match_route(policy.routes, Request(method="GET", path=path))
    return route.name if route is not None else ""


MATCHING = """
version: 1
routes:
  - {name: admin, match: {path: {subtree: /admin}, ignore_case: true}, action: deny}
  - {name: files, match: {path: {subtree: /files/}}, action: allow}
  - {name: exact, match: {path: {exact: /Exact}, ignore_case: true}, action: allow}
  - {name: prefix, match: {path: {prefix: /pre}}, action: allow}
  - {name: regex, match: {path: {regex: "/v[0-9]+/ITEMS/.*"}, ignore_case: true}, action: allow}
  - {name: rest, match: {}, action: allow}
"""


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/admin", "admin"),
        ("/admin/", "admin"),
        ("/admin/x/y", "admin"),
        ("/Admin/x", "admin"),
        ("/ADMIN", "admin"),
        ("/%61dmin/x", "admin"),
        ("/%41DMIN", "admin"),
        ("/adm%C4%B1n/x", "admin"),
        ("//admin/x", "admin"),
        ("/v1/../admin/x", "admin"),
        ("/admin;jsessionid=1/x", "admin"),
        ("/administrator", "rest"),
        ("/admin.json", "rest"),
        ("/admin%2Fx", "rest"),  # an allowed %2F is no separator: one segment "admin%2Fx"
        ("/files", "files"),  # a subtree given with a trailing slash is the same subtree
        ("/files/a", "files"),
        ("/Files/a", "rest"),  # case-sensitive without ignore_case
        ("/filesystem", "rest"),
        ("/exact", "exact"),
        ("/EXACT", "exact"),
        ("/exact/", "rest"),
        ("/prefix-anything", "prefix"),
        ("/v2/items/x", "regex"),
        ("/V2/Items/X", "regex"),
        ("/", "rest"),
    ],
)
def test_subtree_and_ignore_case(path: str, route: str) -> None:
    policy = _policy(MATCHING)
    assert _route(policy, path) == route


def test_root_subtree_matches_everything() -> None:
    policy = _policy("version: 1\nroutes:\n  - {name: all, match: {path: {subtree: /}}, action: allow}\n")
    assert [_route(policy, p) for p in ("/", "/a", "/a/b/")] == ["all", "all", "all"]


def test_paths_allow_compiles_to_the_classes() -> None:
    policy = _policy("version: 1\npaths: {allow: [encoded_slash, semicolon]}\nroutes:\n  - {name: a, match: {path: {exact: /a%2Fb}}, action: allow}\n")
    assert policy.path_allow == PathProblem.ENCODED_SLASH | PathProblem.SEMICOLON
    assert _route(policy, "/a%2fb") == "a"
    assert _policy("version: 1\nroutes:\n  - {name: a, action: allow}\n").path_allow == 0


def test_the_example_policy_denies_the_admin_subtree_in_any_spelling() -> None:
    from authz.policy import load_policy

    policy = load_policy(str(ROOT / "examples" / "policy.yaml"))
    assert policy.path_allow == 0
    for path in ("/admin", "/admin/", "/Admin/x", "/ADMIN/x", "/%61dmin/x", "/adm%C4%B1n"):
        assert _route(policy, path) == "admin", path
    for path in ("/administrator", "/public/x", "/v1/admin"):
        assert _route(policy, path) == "api", path


def test_an_oversized_target_is_refused_before_it_is_canonicalized() -> None:
    import asyncio

    from authz.pipeline import Engine
    from authz.store import store_from_url

    policy = _policy("version: 1\nlimits: {max_target_bytes: 64}\nroutes:\n  - {name: a, action: allow}\n")
    engine = Engine(policy, store_from_url("memory://", now_ms=0))
    req = Request(method="GET", path="/" + "%41" * 100)
    decision = asyncio.run(engine.decide(req))
    assert (decision.reason, decision.route_path) == ("request.too_large", "")
    assert req.known_route_path == ""  # never computed
    small = Request(method="GET", path="/%41")
    assert asyncio.run(engine.decide(small)).route_path == "/A"


# properties, over paths built from the pieces tricks are made of

_PIECES = [
    "/", "//", ".", "..", "admin", "Admin", "ADMIN", "x", "v1", "%61", "%41", "dmin", "%2e", "%2E", "%2f", "%5c",
    ";", ";x", "%3b", "%25", "%32", "%66", "%c0%af", "%c0", "%af", "%C4%B1", "ı", "\\", "#", "%00", "%20", " ",
    "%zz", "%4", "é", "%C3%A9", "~", "-", "%7e",
]  # fmt: skip
_PATHS = st.lists(st.sampled_from(_PIECES), max_size=12).map(lambda parts: "/" + "".join(parts))


@settings(max_examples=1000, deadline=None)
@given(_PATHS)
def test_canonicalize_is_total_ascii_and_a_fixed_point(path: str) -> None:
    canonical, problems = canonicalize(path)
    assert canonical.isascii() and canonical.startswith("/")
    if not problems & NEVER_ALLOWED:
        again, more = canonicalize(canonical)
        assert again == canonical
        assert not more & NEVER_ALLOWED


@settings(max_examples=1000, deadline=None)
@given(_PATHS)
def test_a_path_with_no_problem_is_admin_to_a_backend_only_if_it_is_admin_to_authz(path: str) -> None:
    canonical, problems = canonicalize(path)
    if problems:
        return
    folded = fold_case(canonical)
    in_subtree = folded == "/admin" or folded.startswith("/admin/")
    assert in_subtree or not admin_readings(path), (path, canonical, admin_readings(path))


def test_the_cache_of_recent_slow_paths_is_bounded_and_changes_nothing() -> None:
    from authz import paths

    first = canonicalize("/v1/caf%c3%a9/../x")
    assert canonicalize("/v1/caf%c3%a9/../x") == first == ("/v1/x", PathProblem.DOT_SEGMENT)
    for i in range(paths._RECENT_SIZE + 10):
        canonicalize(f"/%61/{i}")
    assert 0 < len(paths._RECENT) <= paths._RECENT_SIZE
    long = "/%61" * 200  # longer than the cache keeps
    assert canonicalize(long)[0] == "/a" * 200 and long not in paths._RECENT
