"""One table of request targets that try to reach a denied subtree, and ordinary ones.

examples/policy.yaml denies ``/admin`` and everything under it in any letter
case (``subtree`` + ``ignore_case``) and lets everything else through its
``api`` route. Every ``TRICKS`` target means ``/admin/...`` to *some* backend
(one that decodes twice, strips ``;`` parameters, folds case, treats ``\\`` as a
separator...); none may ever reach an upstream. ``CONTROLS`` are ordinary
targets that must. Each row holds what authz itself answers under the example
policy, whichever door the request comes through; a proxy may refuse a trick
before asking authz.

Targets are written as they go on the request line, byte for byte (UTF-8 for
the one raw non-ASCII row).
"""

from __future__ import annotations

from typing import NamedTuple

AMBIGUOUS = (400, "request.ambiguous_path")
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
    Row("/admın/x", DENIED, "raw dotless i (UTF-8 on the wire)"),
    Row("/admin", DENIED, "the subtree root without a slash"),
    Row("/admin;x/", AMBIGUOUS, "path parameter: servlet containers read /admin/"),
    Row("/admin;jsessionid=1/x", AMBIGUOUS, "path parameter"),
    Row("/admin%3Bx/", AMBIGUOUS, "encoded ;: a parameter once decoded"),
    Row("/admin..;/x", AMBIGUOUS, "Tomcat-style ..; after a name"),
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
    Row("http://api.example.com/admin/x", AMBIGUOUS, "absolute-form"),
    Row("api.example.com:443", AMBIGUOUS, "authority-form"),
    Row("*", AMBIGUOUS, "asterisk-form"),
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
