"""``authz keys | apikeys | decisions | client | policy``: the admin API from a shell.

Each command is one call to the admin listener (protos/authz/admin/v1/admin.proto,
docs/admin.md) through its generated stub; nothing here decides anything.
Where to call and how to prove who you are, on every command:

* ``--admin HOST:PORT`` (``AUTHZ_ADMIN_ADDR``, default 127.0.0.1:9194);
* TLS with ``--ca`` (the CA that signed the admin listener's certificate),
  ``--server-name`` when the certificate names another host, and for mTLS
  ``--cert`` / ``--key``;
* the bearer token from ``--token-file`` or ``AUTHZ_ADMIN_TOKEN``, never
  from the command line (``ps`` and shell histories show command lines).

Answers print as tables for people, or with ``--json`` as the proto's JSON
mapping (``json_format.MessageToDict``, field names as in the proto) for
scripts. A generated secret (a key's secret, an API key) is printed once,
with the server's notice that it is never shown again.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_ADDR = "127.0.0.1:9194"
BEARER_ENV = "AUTHZ_ADMIN_TOKEN"


def admin_options(fn: F) -> F:
    """The options every admin command takes: where to call, TLS, the token, the output format."""
    options = [
        click.option("--admin", "addr", envvar="AUTHZ_ADMIN_ADDR", show_envvar=True, default=DEFAULT_ADDR, show_default=True, help="host:port of authz's admin listener."),
        click.option("--ca", type=click.Path(dir_okay=False, exists=True), default=None, help="Speak TLS, trusting this CA (PEM) for the admin listener's certificate."),
        click.option("--cert", type=click.Path(dir_okay=False, exists=True), default=None, help="Client certificate (PEM) for an mTLS admin listener (with --key)."),
        click.option("--key", "key_file", type=click.Path(dir_okay=False, exists=True), default=None, help="The private key of --cert (PEM)."),
        click.option("--server-name", default=None, help="The name the admin listener's certificate is checked for (default: the host of --admin)."),
        click.option("--token-file", type=click.Path(dir_okay=False, exists=True), default=None, help=f"A file holding the admin bearer token (else ${BEARER_ENV})."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True, help="Seconds the call may take."),
        click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON (the proto's JSON mapping)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


class Admin:
    """A connection to the admin listener: the stubs, the call metadata, how to print answers."""

    def __init__(self, addr: str, ca: str | None, cert: str | None, key_file: str | None, server_name: str | None, token_file: str | None, timeout: float, as_json: bool, **_: Any) -> None:
        import grpc

        self.as_json = as_json
        self.timeout = timeout
        token = ""
        if token_file is not None:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        else:
            token = os.environ.get(BEARER_ENV, "").strip()
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        if bool(cert) != bool(key_file):
            raise click.UsageError("--cert and --key go together")
        if ca or cert:
            def read(path: str | None) -> bytes | None:
                if path is None:
                    return None
                with open(path, "rb") as f:
                    return f.read()

            creds = grpc.ssl_channel_credentials(root_certificates=read(ca), private_key=read(key_file), certificate_chain=read(cert))
            opts = [("grpc.ssl_target_name_override", server_name)] if server_name else []
            self.channel = grpc.secure_channel(addr, creds, options=opts)
        else:
            self.channel = grpc.insecure_channel(addr)
        self.addr = addr

    def stub(self, name: str) -> Any:
        from authz.admin.v1 import admin_pb2_grpc

        return getattr(admin_pb2_grpc, f"{name}Stub")(self.channel)

    def call(self, method: Callable[..., Any], request: Any) -> Any:
        import grpc

        try:
            return method(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise _failed(exc, self.addr) from None

    def stream(self, method: Callable[..., Any], request: Any) -> Iterable[Any]:
        import grpc

        try:
            yield from method(request, timeout=None, metadata=self.metadata)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            raise _failed(exc, self.addr) from None

    def close(self) -> None:
        self.channel.close()

    def print_json(self, message: Any) -> None:
        click.echo(json.dumps(as_dict(message), indent=2))


def _failed(exc: Any, addr: str) -> click.ClickException:
    code = exc.code()
    detail = exc.details() or ""
    if code.name == "UNAVAILABLE":
        return click.ClickException(f"cannot reach the admin API at {addr}: {detail}")
    return click.ClickException(f"{code.name}: {detail}")


def as_dict(message: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    out: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return out


def _admin(options: dict[str, Any]) -> Admin:
    return Admin(**options)


def when(ms: int) -> str:
    """A time in ms since the epoch, for people (UTC); "-" for 0."""
    if not ms:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """Columns padded to their widest cell."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def pairs(items: Iterable[tuple[str, Any]]) -> None:
    """name: value lines."""
    for name, value in items:
        click.echo(f"{name}: {value}")


def _secret(secret: str, notice: str, label: str) -> None:
    click.echo(f"{label}: {secret}")
    click.echo(notice or "Shown once: it cannot be read again.", err=True)


# -- keys ------------------------------------------------------------------------------


@click.group("keys")
def keys() -> None:
    """Signing keys and HMAC secrets of the keystore (and the keys file's, read-only)."""


def _key_rows(keys_: Iterable[Any]) -> list[list[Any]]:
    rows = []
    for k in keys_:
        for v in k.versions:
            rows.append([k.name, v.key_id, k.algorithm, v.status, k.subject, k.source, when(v.created_ms), when(v.not_after_ms)])
    return rows


_KEY_HEADERS = ("NAME", "KEY ID", "ALGORITHM", "STATUS", "SUBJECT", "SOURCE", "CREATED", "NOT AFTER")


@keys.command("list")
@admin_options
def keys_list(**options: Any) -> None:
    """Every key and its versions."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    reply = a.call(a.stub("Keys").ListKeys, admin_pb2.ListKeysRequest())
    if a.as_json:
        a.print_json(reply)
    else:
        table(_key_rows(reply.keys), _KEY_HEADERS)


@keys.command("get")
@click.argument("name")
@admin_options
def keys_get(name: str, **options: Any) -> None:
    """One key by name."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    reply = a.call(a.stub("Keys").GetKey, admin_pb2.GetKeyRequest(name=name))
    if a.as_json:
        a.print_json(reply)
    else:
        table(_key_rows([reply]), _KEY_HEADERS)


def _read_import(path: str | None) -> str:
    if path is None:
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read()


def _print_created(a: Admin, reply: Any) -> None:
    if a.as_json:
        a.print_json(reply)
        return
    table(_key_rows([reply.key]), _KEY_HEADERS)
    click.echo(f"key id: {reply.key_id}")
    if reply.secret:
        _secret(reply.secret, reply.notice, "secret")


@keys.command("create")
@click.argument("name")
@click.option("--algorithm", "-a", required=True, help="hmac-sha256, ed25519, ecdsa-p256-sha256 (RFC 9421) or HS256, EdDSA, ES256 (JWS)...")
@click.option("--subject", default="", help="The identity the key proves (default: the name).")
@click.option("--import-pem", type=click.Path(dir_okay=False, exists=True), default=None, help="Import this public key (PEM) instead of generating one.")
@click.option("--import-jwk", type=click.Path(dir_okay=False, exists=True), default=None, help="Import this public JWK or one-key JWKS (JSON) instead of generating one.")
@admin_options
def keys_create(name: str, algorithm: str, subject: str, import_pem: str | None, import_jwk: str | None, **options: Any) -> None:
    """Create a key; a generated secret or private key is printed this once."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    request = admin_pb2.CreateKeyRequest(name=name, algorithm=algorithm, subject=subject, import_pem=_read_import(import_pem), import_jwk=_read_import(import_jwk))
    _print_created(a, a.call(a.stub("Keys").CreateKey, request))


@keys.command("rotate")
@click.argument("name")
@click.option("--previous-valid-for", type=click.FloatRange(min=0), default=None, help="Seconds the previous versions keep verifying (default: the server's, one hour).")
@click.option("--import-pem", type=click.Path(dir_okay=False, exists=True), default=None, help="The new version's public key (PEM), instead of a generated one.")
@click.option("--import-jwk", type=click.Path(dir_okay=False, exists=True), default=None, help="The new version's public JWK (JSON).")
@admin_options
def keys_rotate(name: str, previous_valid_for: float | None, import_pem: str | None, import_jwk: str | None, **options: Any) -> None:
    """A new version of a key; a generated secret or private key is printed this once."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    until = _until(previous_valid_for)
    request = admin_pb2.RotateKeyRequest(name=name, previous_valid_until_ms=until, import_pem=_read_import(import_pem), import_jwk=_read_import(import_jwk))
    _print_created(a, a.call(a.stub("Keys").RotateKey, request))


def _until(seconds: float | None) -> int:
    import time

    return 0 if seconds is None else int((time.time() + seconds) * 1000)


@keys.command("revoke")
@click.argument("name")
@click.option("--version", type=click.IntRange(min=0), default=0, help="The version to revoke (default 0: every version).")
@admin_options
def keys_revoke(name: str, version: int, **options: Any) -> None:
    """Revoke one version of a key, or all of them."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    reply = a.call(a.stub("Keys").RevokeKey, admin_pb2.RevokeKeyRequest(name=name, version=version))
    if a.as_json:
        a.print_json(reply)
    else:
        table(_key_rows([reply]), _KEY_HEADERS)


@keys.command("export")
@admin_options
def keys_export(**options: Any) -> None:
    """Print the JWKS of every usable public key."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    reply = a.call(a.stub("Keys").ExportJwks, admin_pb2.ExportJwksRequest())
    if a.as_json:
        a.print_json(reply)
    else:
        click.echo(json.dumps(json.loads(reply.jwks or "{}"), indent=2))


# -- API keys -------------------------------------------------------------------------------


@click.group("apikeys")
def apikeys() -> None:
    """API keys of the api_key authentication method (stored hashed)."""


_API_HEADERS = ("ID", "NAME", "OWNER", "TIER", "STATUS", "CREATED", "NOT AFTER", "REVOKED")


def _api_rows(items: Iterable[Any]) -> list[list[Any]]:
    return [[k.id, k.name, k.owner, k.tier, k.status, when(k.created_ms), when(k.not_after_ms), when(k.revoked_ms)] for k in items]


def _print_api_created(a: Admin, reply: Any) -> None:
    if a.as_json:
        a.print_json(reply)
        return
    table(_api_rows([reply.api_key]), _API_HEADERS)
    _secret(reply.key, reply.notice, "key")


@apikeys.command("list")
@click.option("--owner", default="", help="Only this owner's keys.")
@admin_options
def apikeys_list(owner: str, **options: Any) -> None:
    """Every API key (never the key itself)."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    reply = a.call(a.stub("ApiKeys").ListApiKeys, admin_pb2.ListApiKeysRequest(owner=owner))
    if a.as_json:
        a.print_json(reply)
    else:
        table(_api_rows(reply.api_keys), _API_HEADERS)


@apikeys.command("create")
@click.option("--name", required=True, help="A label for people (billing-export).")
@click.option("--owner", required=True, help="The subject of the requests the key authenticates.")
@click.option("--tier", default="", help="The quota tier of the key.")
@click.option("--expires-in", type=click.FloatRange(min=0, min_open=True), default=None, help="Seconds until the key stops working (default: never).")
@admin_options
def apikeys_create(name: str, owner: str, tier: str, expires_in: float | None, **options: Any) -> None:
    """Create an API key; the key is printed this once."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    request = admin_pb2.CreateApiKeyRequest(name=name, owner=owner, tier=tier, expires_ms=_until(expires_in))
    _print_api_created(a, a.call(a.stub("ApiKeys").CreateApiKey, request))


@apikeys.command("rotate")
@click.argument("key_id", metavar="ID")
@click.option("--previous-valid-for", type=click.FloatRange(min=0), default=None, help="Seconds the old key keeps working (default: the server's, one hour).")
@admin_options
def apikeys_rotate(key_id: str, previous_valid_for: float | None, **options: Any) -> None:
    """A new key for the same owner and tier; printed this once."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    request = admin_pb2.RotateApiKeyRequest(id=key_id, previous_valid_until_ms=_until(previous_valid_for))
    _print_api_created(a, a.call(a.stub("ApiKeys").RotateApiKey, request))


@apikeys.command("revoke")
@click.argument("key_id", metavar="ID")
@admin_options
def apikeys_revoke(key_id: str, **options: Any) -> None:
    """Refuse an API key from now on."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    reply = a.call(a.stub("ApiKeys").RevokeApiKey, admin_pb2.RevokeApiKeyRequest(id=key_id))
    if a.as_json:
        a.print_json(reply)
    else:
        table(_api_rows([reply]), _API_HEADERS)


# -- decisions ----------------------------------------------------------------------------


@click.group("decisions")
def decisions() -> None:
    """Recent decisions, live ones, and what the policy would decide (explain)."""


def filter_options(fn: F) -> F:
    options = [
        click.option("--outcome", default="", type=click.Choice(["", "allow", "deny", "limit", "challenge", "error"]), help="Only this outcome."),
        click.option("--reason", default="", help="This reason code, or a prefix ending in '.' (jwt.)."),
        click.option("--route", default="", help="Only this route."),
        click.option("--client-ip", default="", help="Only this client address."),
        click.option("--identity", default="", help="ip:ADDR, sub:SUBJECT, key:KEY_ID, or a bare value of any of them."),
        click.option("--since", type=float, default=None, help="Only decisions of the last SECONDS."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _filter(outcome: str, reason: str, route: str, client_ip: str, identity: str, since: float | None) -> Any:
    from authz.admin.v1 import admin_pb2

    return admin_pb2.DecisionFilter(outcome=outcome, reason=reason, route=route, client_ip=client_ip, identity=identity, since_ms=_until(-since) if since else 0)


_DECISION_HEADERS = ("TIME", "ID", "OUTCOME", "STATUS", "REASON", "ROUTE", "CLIENT", "SUBJECT", "METHOD", "PATH")


def _decision_row(d: Any) -> list[Any]:
    return [when(d.time_ms), d.id, d.outcome, d.http_status, d.reason, d.route or "-", d.client_ip or "-", d.subject or "-", d.method, d.path]


def _print_decision(d: Any) -> None:
    pairs(
        [
            ("id", d.id), ("time", when(d.time_ms)), ("outcome", f"{d.outcome} ({d.http_status})"),
            ("reason", f"{d.reason}: {d.reason_text}"), ("route", d.route or "-"), ("request", f"{d.method} {d.host}{d.path}"),
            ("client", d.client_ip or "-"), ("auth", d.auth_method or "-"), ("subject", d.subject or "-"), ("key id", d.key_id or "-"),
            ("tier", d.tier or "-"), ("score", f"{d.score:g}"), ("policy", d.policy_version), ("duration", f"{d.duration_us} us"),
        ]
    )  # fmt: skip
    for s in d.signals:
        click.echo(f"  signal {s.name} = {s.value}")


@decisions.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many, newest first.")
@filter_options
@admin_options
def decisions_list(limit: int, outcome: str, reason: str, route: str, client_ip: str, identity: str, since: float | None, **options: Any) -> None:
    """The most recent decisions, newest first."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    flt = _filter(outcome, reason, route, client_ip, identity, since)
    reply = a.call(a.stub("Decisions").ListDecisions, admin_pb2.ListDecisionsRequest(limit=limit, filter=flt))
    if a.as_json:
        a.print_json(reply)
    else:
        table([_decision_row(d) for d in reply.decisions], _DECISION_HEADERS)


@decisions.command("watch")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after this many decisions.")
@filter_options
@admin_options
def decisions_watch(count: int | None, outcome: str, reason: str, route: str, client_ip: str, identity: str, since: float | None, **options: Any) -> None:
    """Print decisions as they are made (one line each; --json: one JSON object per line) until Ctrl-C."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    flt = _filter(outcome, reason, route, client_ip, identity, since)
    seen = 0
    dropped = 0
    try:
        for reply in a.stream(a.stub("Decisions").WatchDecisions, admin_pb2.WatchDecisionsRequest(filter=flt)):
            if a.as_json:
                click.echo(json.dumps(as_dict(reply), separators=(",", ":")))
            else:
                if reply.dropped > dropped:
                    click.echo(f"({reply.dropped - dropped} decisions lost: this watcher fell behind)", err=True)
                click.echo("  ".join(str(c) for c in _decision_row(reply.decision)))
            sys.stdout.flush()
            dropped = reply.dropped
            seen += 1
            if count is not None and seen >= count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        a.close()


@decisions.command("get")
@click.argument("decision_id", metavar="ID")
@admin_options
def decisions_get(decision_id: str, **options: Any) -> None:
    """One decision by id (the x-authz-decision-id header)."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    reply = a.call(a.stub("Decisions").GetDecision, admin_pb2.GetDecisionRequest(id=decision_id))
    if a.as_json:
        a.print_json(reply)
    else:
        _print_decision(reply)


@decisions.command("explain")
@click.option("--check-request", type=click.File("r"), default=None, help="An Envoy CheckRequest as JSON (a file, - for stdin).")
@click.option("--method", "-X", default="GET", show_default=True)
@click.option("--host", default="", help="The request's Host.")
@click.option("--path", default="/", show_default=True, help="The request target (path and query), as sent.")
@click.option("--header", "-H", "headers", multiple=True, metavar="'NAME: VALUE'", help="A request header (repeatable).")
@click.option("--source", default="127.0.0.1", show_default=True, help="The address the request came from (the proxy's peer).")
@admin_options
def decisions_explain(check_request: Any, method: str, host: str, path: str, headers: tuple[str, ...], source: str, **options: Any) -> None:
    """What the running policy would decide on a request, stage by stage, as a dry run (nothing changes)."""
    from authz.admin.v1 import admin_pb2

    if check_request is not None:
        request = admin_pb2.ExplainRequest(check_request_json=check_request.read(4 << 20))
    else:
        if not host:
            raise click.UsageError("give --host (and --path...), or --check-request")
        described = admin_pb2.HttpRequest(method=method, host=host, path=path, source_address=source)
        for line in headers:
            name, sep, value = line.partition(":")
            if not sep or not name.strip():
                raise click.BadParameter(f"expected 'Name: value', got {line!r}", param_hint="--header")
            described.headers[name.strip().lower()] = value.strip()
        request = admin_pb2.ExplainRequest(request=described)
    a = _admin(options)
    reply = a.call(a.stub("Decisions").Explain, request)
    if a.as_json:
        a.print_json(reply)
        return
    d = reply.decision
    click.echo(f"{d.outcome} {d.http_status} {d.reason} (route {d.route or '-'}, dry run {d.id})")
    table([[s.stage, s.verdict, s.detail] for s in reply.stages], ("STAGE", "VERDICT", "DETAIL"))
    for s in reply.stages:
        for sig in s.signals:
            click.echo(f"  {s.stage}: {sig.name} = {sig.value}")


# -- clients ------------------------------------------------------------------------------


@click.group("client")
def client() -> None:
    """The state authz keeps about one identity: reputation, quota buckets, cooldowns."""


_IDENTITY_HELP = "kind:value: ip:203.0.113.7, subnet:203.0.113.0/24, subnet6:2001:db8:1:2::/64, sub:alice, key:partner.v2, session:ID, device:ID"


@client.command("show")
@click.argument("identity")
@admin_options
def client_show(identity: str, **options: Any) -> None:
    """An identity's score, signals and quota buckets (IDENTITY is kind:value)."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    reply = a.call(a.stub("Clients").ShowClient, admin_pb2.ClientRequest(identity=identity))
    if a.as_json:
        a.print_json(reply)
        return
    pairs([("identity", reply.identity), ("score", f"{reply.score:g}"), ("requests", f"{reply.requests:g}")])
    for s in reply.signals:
        click.echo(f"  signal {s.name} = {s.value}")
    if reply.quotas:
        table(
            [[q.quota, q.key, q.remaining, q.capacity, q.reset_ms, q.cooldown_ms, q.strikes] for q in reply.quotas],
            ("QUOTA", "BUCKET", "REMAINING", "CAPACITY", "RESET MS", "COOLDOWN MS", "STRIKES"),
        )


client_show.help = f"{client_show.help}\n\n{_IDENTITY_HELP}"


@client.command("reset")
@click.argument("identity")
@admin_options
def client_reset(identity: str, **options: Any) -> None:
    """Forget an identity's reputation, buckets and cooldowns (IDENTITY is kind:value)."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    reply = a.call(a.stub("Clients").ResetClient, admin_pb2.ClientRequest(identity=identity))
    if a.as_json:
        a.print_json(reply)
    else:
        click.echo(f"{reply.identity}: {reply.removed} pieces of state removed")


# -- policy ----------------------------------------------------------------------------------


@click.group("policy")
def policy() -> None:
    """The running policy: show it, validate a candidate, reload it."""


@policy.command("show")
@click.option("--text", "with_text", is_flag=True, help="Print the policy file's text too.")
@admin_options
def policy_show(with_text: bool, **options: Any) -> None:
    """The running policy's version, file, routes and last reload error."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    reply = a.call(a.stub("Policy").ShowPolicy, admin_pb2.ShowPolicyRequest())
    if a.as_json:
        a.print_json(reply)
        return
    pairs([("version", reply.version), ("file", reply.file), ("loaded", when(reply.loaded_at_ms)), ("routes", ", ".join(reply.routes))])
    if reply.last_reload_error:
        click.echo(f"last reload refused: {reply.last_reload_error}")
    if with_text:
        click.echo(reply.text, nl=False)


@policy.command("validate")
@click.argument("file", type=click.File("r"))
@admin_options
def policy_validate(file: Any, **options: Any) -> None:
    """Compile FILE (- for stdin) with the server's compiler; exit 1 with file:line: field: message."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    name = os.path.basename(file.name) if file.name not in ("-", "<stdin>") else "candidate.yaml"
    reply = a.call(a.stub("Policy").ValidatePolicy, admin_pb2.ValidatePolicyRequest(text=file.read(4 << 20), file_name=name))
    if a.as_json:
        a.print_json(reply)
    elif reply.ok:
        click.echo(f"{name}: OK, version {reply.version} ({len(reply.routes)} routes)")
    if not reply.ok:
        raise click.ClickException(reply.error)


@policy.command("reload")
@admin_options
def policy_reload(**options: Any) -> None:
    """Read the policy file again now; a file that does not validate is refused (exit 1)."""
    from authz.admin.v1 import admin_pb2

    a = _admin(options)
    reply = a.call(a.stub("Policy").ReloadPolicy, admin_pb2.ReloadPolicyRequest())
    if a.as_json:
        a.print_json(reply)
    else:
        click.echo(f"{reply.result}: version {reply.version}")
    if reply.result == "refused":
        raise click.ClickException(reply.error)


COMMANDS = (keys, apikeys, decisions, client, policy)

__all__ = ["COMMANDS", "apikeys", "client", "decisions", "keys", "policy"]
