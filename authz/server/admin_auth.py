"""Who may call the admin API, and the audit trail of what they changed.

Every call to the admin listener (``--admin-listen``) is authenticated before
its method runs (``AdminAuth.check``, installed on every method by
``guard.add_guarded``):

* **a bearer token**: ``authorization: Bearer <token>`` metadata, compared
  with every configured token. Tokens come from ``--admin-tokens-file``
  (``name:token`` lines, or YAML ``tokens: [{name: ..., token: ...}]``;
  looked at again at most once a second and reloaded when it changes) and
  from ``AUTHZ_ADMIN_TOKENS`` (``name:token,name:token``), never from the
  command line, where ``ps`` would show them. Only their SHA-256 digests are
  kept; the presented token's digest is compared with each of them with
  ``hmac.compare_digest``, all of them every time, so neither the timing
  nor the answer says which token came close;
* **a client certificate**, when the listener requires mTLS
  (``--admin-client-ca``): the TLS handshake has verified it, and its subject
  CN names the caller. A token presented as well must be valid;
* **nothing**, only with ``--admin-insecure-no-auth`` on a loopback address
  (``Settings.validate`` refuses it elsewhere), logged as insecure at start.

Without any of them the admin listener does not start (a warning says why and
what to set): no admin API is better than an open one. Refusals are
``UNAUTHENTICATED`` (no credential, a malformed header, an unknown token) or
``PERMISSION_DENIED`` (a verified certificate without a subject CN); the
message never quotes what was sent.

``Audit`` writes one record per change (keys, API keys, a client reset, a
policy reload): who (the token's name, the certificate's CN), how they
proved it, from where (the peer), what, when. Each goes to the operational
log (logger ``authz.audit``, one structured line) and, when a decision log
is configured, into it as a JSON line with ``"event": "audit"``
(``DecisionLog.audit``, off the request path like decisions). A detail whose
name says it is a secret is never written.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import yaml

from authz.errors import ConfigError

log = logging.getLogger("authz.server")
audit_log = logging.getLogger("authz.audit")

#: the environment variable holding admin tokens, ``name:token[,name:token...]``
TOKENS_ENV = "AUTHZ_ADMIN_TOKENS"
#: the shortest token accepted: 128 bits of base64 or hex is at least this long
MIN_TOKEN_CHARS = 16
MAX_TOKENS = 1000
#: the least time between two looks at the tokens file
CHECK_INTERVAL_S = 1.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
#: a token is printable ASCII without spaces (it travels in an HTTP/2 header)
_TOKEN = re.compile(r"[\x21-\x7e]+")
#: details that must never reach an audit record, whatever a caller passes
_SECRET_DETAILS = frozenset({"secret", "token", "key", "password", "private_key", "import_pem", "import_jwk", "authorization"})
_MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made an admin call: a name, how it was proved (token, certificate, none), and the peer."""

    name: str
    auth: str
    peer: str


_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("authz_admin_caller", default=None)


def current_caller() -> Caller | None:
    """The caller of the admin call being served (set by ``AdminAuth.check``)."""
    return _caller.get()


def parse_tokens(text: str, source: str) -> list[tuple[str, str]]:
    """(name, token) pairs from a tokens file's text or the environment variable's value.

    :raises ConfigError: naming the source, the line and what is wrong (never a token)
    """
    stripped = text.lstrip()
    if stripped.startswith(("tokens:", "{", "---")):
        return _yaml_tokens(text, source)
    out: list[tuple[str, str]] = []
    for lineno, line in enumerate(text.replace(",", "\n").splitlines() if source == TOKENS_ENV else text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        if not sep:
            raise ConfigError(source, lineno, "", "expected name:token")
        out.append(_checked(name.strip(), token.strip(), source, lineno, len(out)))
    return _unique(out, source)


def _yaml_tokens(text: str, source: str) -> list[tuple[str, str]]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(source, mark.line + 1 if mark is not None else 0, "", "not valid YAML") from None
    if not isinstance(doc, dict) or set(doc) != {"tokens"} or not isinstance(doc["tokens"], list):
        raise ConfigError(source, 0, "tokens", "expected a mapping with one key, tokens: a list of {name, token}")
    out: list[tuple[str, str]] = []
    for i, item in enumerate(doc["tokens"]):
        if not isinstance(item, dict) or set(item) != {"name", "token"}:
            raise ConfigError(source, 0, f"tokens[{i}]", "expected {name, token}")
        name, token = item["name"], item["token"]
        if not isinstance(name, str) or not isinstance(token, str):
            raise ConfigError(source, 0, f"tokens[{i}]", "name and token are strings")
        out.append(_checked(name, token, source, 0, i))
    return _unique(out, source)


def _checked(name: str, token: str, source: str, line: int, index: int) -> tuple[str, str]:
    field = f"tokens[{index}]"
    if not _NAME.fullmatch(name):
        raise ConfigError(source, line, field, "a token's name is 1-64 letters, digits, '.', '_', '@', '-'")
    if not _TOKEN.fullmatch(token) or len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(source, line, field, f"the token of {name!r} must be at least {MIN_TOKEN_CHARS} printable characters without spaces")
    return name, token


def _unique(pairs: list[tuple[str, str]], source: str) -> list[tuple[str, str]]:
    if len(pairs) > MAX_TOKENS:
        raise ConfigError(source, 0, "tokens", f"at most {MAX_TOKENS} tokens")
    names = [n for n, _ in pairs]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(source, 0, "tokens", f"the name {name!r} is given twice")
    if len({t for _, t in pairs}) != len(pairs):
        raise ConfigError(source, 0, "tokens", "two names share one token: each caller needs a token of its own")
    return pairs


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenSet:
    """Admin tokens as (name, SHA-256 digest): the file's, reloaded when it changes, and the environment's.

    :param path: the tokens file ("" for none)
    :param env: the environment variable's value ("" for none)
    :raises ConfigError: a tokens file or variable that cannot be used at start
    """

    def __init__(self, path: str = "", env: str = "", *, interval: float = CHECK_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._env = [(n, _digest(t)) for n, t in parse_tokens(env, TOKENS_ENV)] if env.strip() else []
        self._file: list[tuple[str, bytes]] = []
        self._stamp: Any = None
        self._checked = clock()
        #: reloads of the file, and refused versions of it (logged without content)
        self.reloads = 0
        self.failures = 0
        if path:
            self._stamp = self._status()
            self._file = self._read()
        names = [n for n, _ in self._file] + [n for n, _ in self._env]
        if len(set(names)) != len(names):
            raise ConfigError(path or TOKENS_ENV, 0, "tokens", "a name is given both in the tokens file and in AUTHZ_ADMIN_TOKENS")

    def __len__(self) -> int:
        return len(self._file) + len(self._env)

    def _status(self) -> Any:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            return exc.errno
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _read(self) -> list[tuple[str, bytes]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read(_MAX_FILE_BYTES + 1)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(self.path, 0, "", f"cannot read the admin tokens file: {getattr(exc, 'strerror', None) or type(exc).__name__}") from None
        if len(text) > _MAX_FILE_BYTES:
            raise ConfigError(self.path, 0, "", f"larger than {_MAX_FILE_BYTES} bytes")
        return [(n, _digest(t)) for n, t in parse_tokens(text, self.path)]

    def refresh(self) -> None:
        """Reload the file when it changed (at most once per interval); a bad version keeps the tokens in use."""
        if not self.path:
            return
        now = self._clock()
        if now - self._checked < self._interval:
            return
        with self._lock:
            if now - self._checked < self._interval:
                return
            self._checked = now
            stamp = self._status()
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                self._file = self._read()
            except ConfigError as exc:
                self.failures += 1
                log.warning("admin tokens file not reloaded, the tokens in use stay: %s", exc, extra={"event": "admin.tokens_refused"})
                return
            self.reloads += 1
        log.info("admin tokens reloaded from %s (%d tokens)", self.path, len(self._file), extra={"event": "admin.tokens_reloaded"})

    def match(self, token: str) -> str | None:
        """The name of the token, or None; compares with every token, whichever matches."""
        self.refresh()
        presented = _digest(token)
        found: str | None = None
        for name, digest in (*self._file, *self._env):
            if hmac.compare_digest(digest, presented) and found is None:
                found = name
        return found


class AdminAuth:
    """The admin listener's authentication: tokens, client certificates, or (loopback) none.

    :param tokens: the configured tokens (may be empty)
    :param mtls: the listener verifies client certificates (``--admin-client-ca``)
    :param insecure: ``--admin-insecure-no-auth``: callers without a credential are let in
    """

    def __init__(self, tokens: TokenSet, *, mtls: bool = False, insecure: bool = False) -> None:
        self.tokens = tokens
        self.mtls = mtls
        self.insecure = insecure

    @property
    def configured(self) -> bool:
        """Is there any way to call the admin API (a credential, or the explicit insecure flag)?"""
        return bool(len(self.tokens)) or self.mtls or self.insecure

    def describe(self) -> str:
        """How callers authenticate, for the start-up log line (never a token)."""
        ways = []
        if len(self.tokens):
            ways.append(f"{len(self.tokens)} bearer tokens")
        if self.mtls:
            ways.append("client certificates")
        if self.insecure and not ways:
            ways.append("NO AUTHENTICATION (--admin-insecure-no-auth)")
        return " or ".join(ways)

    def identify(self, context: grpc.aio.ServicerContext) -> tuple[Caller | None, grpc.StatusCode, str]:
        """(the caller, or None with the refusal's code and message)."""
        peer = context.peer() or ""
        header = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode("latin-1")
                break
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                return None, grpc.StatusCode.UNAUTHENTICATED, "the authorization metadata must be 'Bearer <token>'"
            name = self.tokens.match(token)
            if name is None:
                return None, grpc.StatusCode.UNAUTHENTICATED, "invalid admin token"
            return Caller(name, "token", peer), grpc.StatusCode.OK, ""
        if self.mtls:
            auth = context.auth_context() or {}
            names = auth.get("x509_common_name") or []
            if not names:
                return None, grpc.StatusCode.PERMISSION_DENIED, "the client certificate has no subject CN to name the caller"
            cn = names[0].decode("utf-8", "replace") if isinstance(names[0], bytes) else str(names[0])
            return Caller(cn, "certificate", peer), grpc.StatusCode.OK, ""
        if self.insecure:
            return Caller("anonymous", "none", peer), grpc.StatusCode.OK, ""
        return None, grpc.StatusCode.UNAUTHENTICATED, "admin credentials required: authorization: Bearer <token>"

    async def check(self, context: grpc.aio.ServicerContext, method: str) -> None:
        """Let the call through (the caller is then ``current_caller()``), or abort it."""
        caller, code, message = self.identify(context)
        if caller is None:
            log.info("admin call to %s refused (%s) from %s", method, code.name, context.peer(), extra={"event": "admin.refused"})
            await context.abort(code, message)
            raise AssertionError("abort raises")
        _caller.set(caller)


def admin_auth(settings: Any, env: Mapping[str, str] | None = None) -> AdminAuth:
    """The admin listener's authentication from settings and the environment.

    :raises ConfigError: a tokens file or AUTHZ_ADMIN_TOKENS that cannot be used
    """
    env = os.environ if env is None else env
    tokens = TokenSet(settings.admin_tokens_file, env.get(TOKENS_ENV, ""))
    return AdminAuth(tokens, mtls=bool(settings.admin_client_ca), insecure=settings.admin_insecure_no_auth)


class Audit:
    """Writes audit records: ``audit(context, action, target, **details)`` after each change.

    :param sink: where the JSON record also goes (``DecisionLog.audit``), or None
    :param clock: milliseconds since the epoch
    """

    def __init__(self, sink: Callable[[dict[str, Any]], None] | None = None, clock: Callable[[], int] | None = None) -> None:
        self.sink = sink
        self._clock = clock or (lambda: int(time.time() * 1000))
        #: records written (tests, metrics)
        self.count = 0

    def __call__(self, context: grpc.aio.ServicerContext | None, action: str, target: str, **details: Any) -> None:
        caller = current_caller()
        peer = context.peer() if context is not None else ""
        record: dict[str, Any] = {
            "event": "audit",
            "time_ms": self._clock(),
            "who": caller.name if caller is not None else "",
            "auth": caller.auth if caller is not None else "",
            "peer": caller.peer if caller is not None else peer,
            "action": action,
            "target": target,
        }
        for name, value in details.items():
            if name.lower() in _SECRET_DETAILS or "secret" in name.lower() or "token" in name.lower():
                continue  # a secret never reaches a log, whoever passed it
            record[name] = value if isinstance(value, str | int | float | bool) or value is None else str(value)
        self.count += 1
        audit_log.info(
            "audit: %s %s by %s (%s) from %s", action, target, record["who"] or "?", record["auth"] or "?", record["peer"],
            extra={**{f"audit.{k}": v for k, v in record.items() if k != "event"}, "event": f"audit.{action}"},
        )  # fmt: skip
        if self.sink is not None:
            try:
                self.sink(record)
            except Exception as exc:  # the audit log line above was written; the file's writer reports its own errors
                log.error("audit record not queued for the decision log: %s", type(exc).__name__)


__all__ = ["TOKENS_ENV", "AdminAuth", "Audit", "Caller", "TokenSet", "admin_auth", "current_caller", "parse_tokens"]
