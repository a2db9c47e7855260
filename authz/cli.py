"""The ``authz`` command. Thin: parse options, call the library."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

import click

from authz import __version__
from authz.challenge import DEFAULT_MAX_DIFFICULTY, DEFAULT_MAX_SECONDS, MAX_DIFFICULTY
from authz.errors import ConfigError
from authz.policy.compile import load_policy
from authz.settings import DEFAULT_DRAIN, Settings

LOG_LEVELS = ("debug", "info", "warning", "error")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="authz")
def cli() -> None:
    """authz: API bot-protection decision server for Envoy ext_authz and HTTP forward-auth.

    Every option of `serve` also reads an AUTHZ_* environment variable
    (--grpc-listen is AUTHZ_GRPC_LISTEN); the command line wins.
    """


@cli.command()
@click.option("--config", "-c", envvar="AUTHZ_CONFIG", show_envvar=True, required=True, type=click.Path(dir_okay=False), help="Policy file (YAML).")
@click.option("--grpc-listen", envvar="AUTHZ_GRPC_LISTEN", show_envvar=True, default="127.0.0.1:9191", show_default=True, help="host:port of the gRPC listener Envoy calls: ext_authz, the access log service, health, reflection (the admin API is on --admin-listen).")
@click.option("--http-listen", envvar="AUTHZ_HTTP_LISTEN", show_envvar=True, default="127.0.0.1:9190", show_default=True, help="host:port of the HTTP door (Envoy http_service, Traefik/Caddy forward-auth, nginx auth_request); '' turns it off.")
@click.option("--no-http", is_flag=True, envvar="AUTHZ_NO_HTTP", show_envvar=True, help="Do not serve the HTTP door (same as --http-listen '').")
@click.option("--http-mode", envvar="AUTHZ_HTTP_MODE", show_envvar=True, default="/envoy=envoy,/forward-auth=forward-auth,/nginx=nginx", show_default=True, help="HTTP convention per path prefix of the authorization request, '[PREFIX=]MODE[,...]' with MODE envoy|forward-auth|nginx|auto; a bare MODE covers every path. Envoy http_service: set path_prefix to the prefix (e.g. /envoy), which authz strips. Forward-auth: address http://HOST:PORT/forward-auth. nginx: proxy_pass http://HOST:PORT/nginx. GET /healthz answers 200 (503 while draining) when no prefix claims it.")
@click.option("--http-header-timeout", envvar="AUTHZ_HTTP_HEADER_TIMEOUT", show_envvar=True, default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Seconds an HTTP client has to send a complete request head (else 408 request.timeout).")
@click.option("--store", envvar="AUTHZ_STORE", show_envvar=True, default="memory://", show_default=True, help="State store URL: memory:// (one process), redis://[user:pass@]host:port[/db], rediss:// (TLS), unix:///path, redis+sentinel://host:port[,host:port]/service[/db], redis+cluster://host:port[,host:port]. authz starts without Redis and connects when it appears.")
@click.option("--store-deadline", envvar="AUTHZ_STORE_DEADLINE", show_envvar=True, default=20, show_default=True, type=click.IntRange(1, 10_000), help="Milliseconds one store call may take before it counts as failed (the route's on_store_error applies). Keep it well below Envoy's check timeout (250 ms in the example), and above the event loop's lag under load, which counts against it.")
@click.option("--worker-index", envvar="AUTHZ_WORKER_INDEX", default=-1, type=int, hidden=True)
@click.option("--workers", envvar="AUTHZ_WORKERS", show_envvar=True, default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes (needs a shared store). Worker i serves gRPC on the --grpc-listen port + i (list each as an endpoint of Envoy's authz cluster); all share the HTTP door's port.")
@click.option("--decision-log", envvar="AUTHZ_DECISION_LOG", show_envvar=True, default="", help="Write one JSON line per decision to this file ('-' for stdout).")
@click.option("--decision-ring", envvar="AUTHZ_DECISION_RING", show_envvar=True, default=10_000, show_default=True, type=click.IntRange(min=1), help="Recent decisions kept for the admin API.")
@click.option("--drain", envvar="AUTHZ_DRAIN", show_envvar=True, default=DEFAULT_DRAIN, show_default=True, type=click.FloatRange(min=0), help="Seconds to keep answering after SIGTERM while health reports NOT_SERVING, so that Envoy's health check (1 s interval in envoy/envoy.yaml) moves traffic to other endpoints before the listener closes; 0 closes at once.")
@click.option("--grace", envvar="AUTHZ_GRACE", show_envvar=True, default=5.0, show_default=True, type=click.FloatRange(min=0), help="Seconds in-flight checks get to finish on shutdown.")
@click.option("--watch-interval", envvar="AUTHZ_WATCH_INTERVAL", show_envvar=True, default=1.0, show_default=True, type=click.FloatRange(min=0, max=3600, min_open=True), help="Seconds between two looks (--watch) at the policy file and the files it reads (keys, address lists, AS number lists, GeoIP databases, JWKS). A change reloads the policy off the request path, validated in full; a bad file is refused with its file:line logged and the running version stays.")
@click.option("--log-level", envvar="AUTHZ_LOG_LEVEL", show_envvar=True, default="info", show_default=True, type=click.Choice(LOG_LEVELS))
@click.option("--uvloop/--no-uvloop", envvar="AUTHZ_UVLOOP", show_envvar=True, default=True, show_default=True, help="Run the event loop on uvloop when installed.")
@click.option("--grpc-tls-cert", envvar="AUTHZ_GRPC_TLS_CERT", show_envvar=True, default="", metavar="PEM", help="Serve gRPC over TLS with this certificate chain (with --grpc-tls-key). Reloaded when the files change; connections stay up.")
@click.option("--grpc-tls-key", envvar="AUTHZ_GRPC_TLS_KEY", show_envvar=True, default="", metavar="PEM", help="The private key of --grpc-tls-cert (unencrypted PEM).")
@click.option("--grpc-client-ca", envvar="AUTHZ_GRPC_CLIENT_CA", show_envvar=True, default="", metavar="PEM", help="mTLS: gRPC callers must present a certificate issued by these CAs (give Envoy one, and it is the only caller).")
@click.option("--http-tls-cert", envvar="AUTHZ_HTTP_TLS_CERT", show_envvar=True, default="", metavar="PEM", help="Serve the HTTP door over TLS with this certificate chain (with --http-tls-key); reloaded on change.")
@click.option("--http-tls-key", envvar="AUTHZ_HTTP_TLS_KEY", show_envvar=True, default="", metavar="PEM", help="The private key of --http-tls-cert (unencrypted PEM).")
@click.option("--http-client-ca", envvar="AUTHZ_HTTP_CLIENT_CA", show_envvar=True, default="", metavar="PEM", help="mTLS: HTTP callers must present a certificate issued by these CAs.")
@click.option("--metrics-listen", envvar="AUTHZ_METRICS_LISTEN", show_envvar=True, default="127.0.0.1:9193", show_default=True, help="host:port of the Prometheus metrics listener (GET /metrics); with --workers the supervisor serves every worker's metrics, summed.")
@click.option("--no-metrics", is_flag=True, envvar="AUTHZ_NO_METRICS", show_envvar=True, help="Do not serve metrics (same as --metrics-listen '').")
@click.option("--metrics-dir", envvar="AUTHZ_METRICS_DIR", default="", hidden=True)
@click.option("--watch/--no-watch", envvar="AUTHZ_WATCH", show_envvar=True, default=True, show_default=True, help="Reload the policy when it, or a file it reads (keys, address lists, GeoIP databases, JWKS), changes on disk (looked at every --watch-interval seconds). SIGHUP reloads either way.")
@click.option("--log-format", envvar="AUTHZ_LOG_FORMAT", show_envvar=True, default="text", show_default=True, type=click.Choice(("text", "json")), help="Operational log lines on stderr: text, or json (one JSON object per line, for a log shipper).")
@click.option("--decision-log-format", envvar="AUTHZ_DECISION_LOG_FORMAT", show_envvar=True, default="authz", show_default=True, type=click.Choice(("authz", "ecs")), help="Field names of the decision log: authz's own, or Elastic Common Schema (docs/operations.md).")
@click.option("--decision-log-max-bytes", envvar="AUTHZ_DECISION_LOG_MAX_BYTES", show_envvar=True, default=0, show_default=True, type=click.IntRange(min=0), help="Rotate the decision log to FILE.1 when it reaches this size; 0 never (SIGUSR1 reopens the file for logrotate).")
@click.option("--otel/--no-otel", envvar="AUTHZ_OTEL", show_envvar=True, default=False, show_default=True, help="OpenTelemetry spans per decision and stage, under the caller's traceparent; configured by the OTEL_* variables. Needs pip install 'authz[otel]'.")
@click.option("--admin-listen", envvar="AUTHZ_ADMIN_LISTEN", show_envvar=True, default="127.0.0.1:9194", show_default=True, help="host:port of the admin API (keys, API keys, decisions, explain, clients, policy; docs/admin.md); '' turns it off. It starts only with a credential: --admin-tokens-file, AUTHZ_ADMIN_TOKENS or --admin-client-ca (on loopback, --admin-insecure-no-auth); without one a warning says it is off. With --workers, worker 0 serves it.")
@click.option("--admin-tokens-file", envvar="AUTHZ_ADMIN_TOKENS_FILE", show_envvar=True, default="", metavar="FILE", help="Admin bearer tokens, one 'name:token' per line (or YAML tokens: [{name, token}]), reloaded when the file changes. AUTHZ_ADMIN_TOKENS='name:token,...' adds tokens from the environment; tokens are never taken from the command line.")
@click.option("--admin-tls-cert", envvar="AUTHZ_ADMIN_TLS_CERT", show_envvar=True, default="", metavar="PEM", help="Serve the admin API over TLS with this certificate chain (with --admin-tls-key); reloaded on change.")
@click.option("--admin-tls-key", envvar="AUTHZ_ADMIN_TLS_KEY", show_envvar=True, default="", metavar="PEM", help="The private key of --admin-tls-cert (unencrypted PEM).")
@click.option("--admin-client-ca", envvar="AUTHZ_ADMIN_CLIENT_CA", show_envvar=True, default="", metavar="PEM", help="mTLS on the admin API: callers need a certificate from these CAs, whose subject CN names them in the audit log.")
@click.option("--admin-insecure-no-auth/--no-admin-insecure-no-auth", envvar="AUTHZ_ADMIN_INSECURE_NO_AUTH", show_envvar=True, default=False, help="INSECURE: serve the admin API to every caller without a credential; refused unless --admin-listen is a loopback address.")
@click.option("--keystore", envvar="AUTHZ_KEYSTORE", show_envvar=True, default="", help="Managed keys and API keys (docs/keys.md): a file path, or a Redis URL (redis://, rediss://, unix://, redis+cluster://) shared by every instance. Needs a master key (--master-key-file or AUTHZ_MASTER_KEY).")
@click.option("--master-key-file", envvar="AUTHZ_MASTER_KEY_FILE", show_envvar=True, default="", type=click.Path(dir_okay=False), help="File holding the keystore's master key (base64 of 32 random bytes), or several as id:base64 lines, the first encrypting; else the AUTHZ_MASTER_KEY variable. Never give the key itself on the command line.")
def serve(**options: object) -> None:
    """Serve decisions until SIGTERM (SIGHUP reloads the policy file, SIGUSR1 reopens the decision log)."""
    if options.pop("no_http"):
        options["http_listen"] = ""
    if options.pop("no_metrics"):
        options["metrics_listen"] = ""
    settings = Settings(**options)  # type: ignore[arg-type]
    from authz.server.logs import setup_logging

    listener = setup_logging(settings.log_level, settings.log_format)
    try:
        if settings.otel:
            from authz.server.tracing import require_sdk

            require_sdk()  # refused here, before any worker starts
        if settings.workers > 1 and settings.worker_index < 0:
            from authz.server.workers import supervise

            settings.validate()
            from authz.keys.keystore import offline_keystore

            # refuse a bad policy once, before any worker starts
            load_policy(settings.config, keystore=offline_keystore() if settings.keystore else None)
            raise SystemExit(supervise(settings))
        run = _runner(settings.uvloop)
        from authz.server.app import serve as serve_app

        run(serve_app(settings))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        listener.stop()


@cli.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False))
def check_config(file: str) -> None:
    """Validate a policy file: exit 0, or 1 with the file, line and field at fault."""
    from authz.keys.keystore import offline_keystore

    try:
        # the keystore's contents are the server's business: a policy that uses one compiles against an empty one
        policy = load_policy(file, keystore=offline_keystore())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{file}: OK ({len(policy.routes)} routes, {len(policy.quotas)} quotas, {len(policy.authenticators)} auth methods)")


@cli.command()
def reasons() -> None:
    """Print every reason code authz can give, as a Markdown table."""
    from authz.decision import reasons_table
    from authz.stages.authenticate import registered_kinds

    registered_kinds()  # importing the method kinds registers their codes
    click.echo(reasons_table(), nl=False)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True, allow_dash=True))
@click.option("--policy", "policy_file", required=True, type=click.Path(dir_okay=False, exists=True), help="The policy to decide the traffic with.")
@click.option("--against", "against_file", default=None, type=click.Path(dir_okay=False, exists=True), help="A second policy: print its outcomes too and every request whose outcome changes.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def replay(file: str, policy_file: str, against_file: str | None, as_json: bool) -> None:
    """Replay recorded traffic (FILE, JSON lines; - for stdin) through a policy.

    FILE is authz's decision log or Envoy's JSON access log (the format of
    envoy/envoy.yaml). Each request is decided by the real pipeline on a fresh
    memory store at its recorded time, as fast as the machine goes, and the
    report counts what would have been allowed, throttled, challenged and
    denied, per route and per reason. Logs hold no credentials: a request's
    authentication is taken as recorded (its subject, key id and tier, or its
    refusal). Example, before deploying a change:

    \b
        authz replay decisions.log --policy policy.yaml --against candidate.yaml
    """
    import json as json_module

    from authz.offline.replay import ReplayError, print_report, read_records
    from authz.offline.replay import replay as run_replay

    try:
        policy = load_policy(policy_file)
        against = load_policy(against_file) if against_file else None
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    stream = sys.stdin if file == "-" else open(file, encoding="utf-8", errors="replace")  # noqa: SIM115
    try:
        report = asyncio.run(run_replay(read_records(stream), policy, against))
    except ReplayError as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    finally:
        if stream is not sys.stdin:
            stream.close()
    if as_json:
        click.echo(json_module.dumps(report.to_dict(), indent=2))
    else:
        print_report(report, sys.stdout)


@cli.command()
def signals() -> None:
    """Print every reputation signal with its default weight, as a Markdown table."""
    from authz.stages.reputation import signals_table

    click.echo(signals_table(), nl=False)


@cli.command("jwks")
@click.argument("public_keys", metavar="PUBLIC_KEY.pem...", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--kid", default=None, help="The key id (with one key only). Default: the key's RFC 7638 thumbprint.")
@click.option("--alg", default=None, metavar="ALG", help="The JWS algorithm the key is bound to (the JWK's alg). Default: ES256/ES384/ES512 by the EC key's curve, EdDSA for Ed25519/Ed448; required for RSA keys (RS256...PS512).")
def jwks(public_keys: tuple[str, ...], kid: str | None, alg: str | None) -> None:
    """Print a JWKS holding the given public keys (PEM), for a provider's keys.jwks_file.

    Give several files to publish a new key beside the old one while tokens
    signed by either are still in use. Private keys, certificates, RSA keys
    under 2048 bits, curves other than P-256/P-384/P-521 and HMAC algorithms
    are refused: a JWKS holds public signing keys only (HMAC secrets go in the
    keys file, under the provider's keys.keyring). Example:

    \b
        openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out idp.key.pem
        openssl pkey -in idp.key.pem -pubout -out idp.pub.pem
        authz jwks idp.pub.pem > jwks.json
    """
    import json

    from authz.stages.authenticate.jwks import JwkError, check_jwk_alg, load_public_pem, parse_jwks, public_jwk

    if kid is not None and len(public_keys) > 1:
        raise click.BadParameter("names one key; with several files each kid is the key's thumbprint", param_hint="--kid")
    try:
        if alg is not None:
            check_jwk_alg(alg)
    except JwkError as exc:
        raise click.BadParameter(str(exc), param_hint="--alg") from None
    keys = []
    for path in public_keys:
        try:
            with open(path, "rb") as f:
                keys.append(public_jwk(load_public_pem(f.read()), alg=alg, kid=kid))
        except JwkError as exc:
            raise click.ClickException(f"{path}: {exc}") from None
        except OSError as exc:
            raise click.ClickException(f"{path}: cannot read: {exc.strerror or exc}") from None
    doc = {"keys": keys}
    # what is printed must be what a provider accepts: read it back as authz will
    try:
        parse_jwks(doc, frozenset(k["alg"] for k in keys), "authz jwks", strict=True)
    except JwkError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(doc, indent=2))


@cli.command("sign")
@click.option("--method", "-X", default="GET", show_default=True, help="Request method.")
@click.option("--header", "-H", "headers", multiple=True, metavar="'NAME: VALUE'", help="A request header (repeatable); covered when listed in --component.")
@click.option("--key-id", default=None, help="The keyid the server's keys file knows (required, except with --web-bot-auth: the key's JWK thumbprint).")
@click.option("--algorithm", "-a", default=None, type=click.Choice(["hmac-sha256", "ed25519", "ecdsa-p256-sha256", "ecdsa-p384-sha384", "rsa-pss-sha512", "rsa-v1_5-sha256"]), help="The key's algorithm (required, except with --web-bot-auth: ed25519).")
@click.option("--key-file", required=True, type=click.Path(dir_okay=False, exists=True), help="PEM private key, or the raw HMAC secret.")
@click.option("--component", "-c", "components", multiple=True, help="Covered component (repeatable); default @method and @target-uri (with --web-bot-auth: @authority, and Signature-Agent always).")
@click.option("--data", "-d", default=None, help="Request body: adds and covers Content-Digest (the body is not sent by this command).")
@click.option("--tag", default=None, help="The tag parameter.")
@click.option("--label", default="sig1", show_default=True)
@click.option("--expires-in", type=click.IntRange(min=1), default=None, help="Seconds until the signature expires (with --web-bot-auth: 60 by default).")
@click.option("--web-bot-auth", "agent", default=None, metavar="AGENT_ORIGIN", help="Sign as a Web Bot Auth agent whose key directory is at AGENT_ORIGIN (https://crawler.example): adds Signature-Agent, tag web-bot-auth, created and expires; the key is Ed25519 (docs/web-bot-auth.md).")
@click.option("--curl", is_flag=True, help="Print a curl command instead of header lines.")
@click.argument("url")
def sign(url: str, method: str, headers: tuple[str, ...], key_id: str | None, algorithm: str | None, key_file: str, components: tuple[str, ...], data: str | None, tag: str | None, label: str, expires_in: int | None, agent: str | None, curl: bool) -> None:
    """Print RFC 9421 signature headers for one request, for curl and friends.

    Each run makes a fresh nonce and created time: a signature is good once.
    """
    import shlex

    from authz.httpsig import SignatureError, load_signing_key, sign_request
    from authz.httpsig.agent import TAG, sign_agent_request

    pairs = []
    for line in headers:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected 'Name: value', got {line!r}", param_hint="--header")
        pairs.append((name.strip(), value.strip()))
    if agent is not None:
        if algorithm not in (None, "ed25519"):
            raise click.BadParameter("Web Bot Auth agents sign with ed25519", param_hint="--algorithm")
        if tag not in (None, TAG):
            raise click.BadParameter(f"a Web Bot Auth signature's tag is {TAG}", param_hint="--tag")
        algorithm = "ed25519"
    elif key_id is None or algorithm is None:
        raise click.UsageError("--key-id and --algorithm are required (unless --web-bot-auth)")
    try:
        with open(key_file, "rb") as f:
            key = load_signing_key(f.read(), algorithm)
        if agent is not None:
            from cryptography.hazmat.primitives.asymmetric import ed25519

            from authz.stages.authenticate.agent_directory import parse_origin

            if parse_origin(agent) is None:
                raise ValueError(f"not an agent origin (https://host[:port], no path): {agent!r}")
            if not isinstance(key, ed25519.Ed25519PrivateKey):
                raise ValueError("a Web Bot Auth agent key is an Ed25519 private key")
            added = sign_agent_request(
                method, url, pairs, key=key, agent=agent.rstrip("/"), label=label, key_id=key_id,
                components=components or ("@authority",), expires_in=expires_in or 60,
                body=data.encode() if data is not None else None,
            )  # fmt: skip
        else:
            assert key_id is not None
            added = sign_request(
                method, url, pairs, key_id=key_id, algorithm=algorithm, key=key,
                components=components or ("@method", "@target-uri"), label=label, tag=tag,
                expires_in=expires_in, body=data.encode() if data is not None else None,
            )  # fmt: skip
    except (ValueError, SignatureError) as exc:
        raise click.ClickException(str(exc)) from None
    if not curl:
        for name, value in added:
            click.echo(f"{name}: {value}")
        return
    parts = ["curl", "-X", method]
    for name, value in [*pairs, *added]:
        parts += ["-H", f"{name}: {value}"]
    if data is not None:
        parts += ["--data-binary", data]
    click.echo(" ".join(shlex.quote(p) for p in [*parts, url]))


@cli.command("solve")
@click.argument("response", type=click.File("r"), default="-")
@click.option("--challenge", "-c", "value", default=None, metavar="VALUE", help="The Authz-Challenge value itself, instead of reading RESPONSE.")
@click.option("--max-seconds", default=DEFAULT_MAX_SECONDS, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Give up after this long (or when the challenge expires, if sooner).")
@click.option("--max-difficulty", default=DEFAULT_MAX_DIFFICULTY, show_default=True, type=click.IntRange(1, MAX_DIFFICULTY), help="Refuse, without working, a challenge harder than this many bits.")
@click.option("--value-only", is_flag=True, help="Print only the header's value.")
def solve(response: TextIO, value: str | None, max_seconds: float, max_difficulty: int, value_only: bool) -> None:
    """Solve a proof-of-work challenge and print the Authz-Solution header (docs/challenges.md).

    RESPONSE is a file (default: standard input) holding a refused response
    as `curl -i` prints it, or just the Authz-Challenge value. The printed
    line is a curl -H argument. Example:

    \b
        curl -si https://api.example.com/v1/signup > refused.txt
        curl -H "$(authz solve refused.txt)" https://api.example.com/v1/signup

    Exit 1 when the input holds no challenge, the challenge is too hard or
    expired, or no solution was found in time.
    """
    from authz.challenge import SOLUTION_HEADER, ChallengeFormatError, SolveError
    from authz.challenge import solve as solve_challenge

    text = value if value is not None else response.read(1 << 20)
    try:
        solution = solve_challenge(text, max_seconds=max_seconds, max_difficulty=max_difficulty)
    except (ChallengeFormatError, SolveError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(solution if value_only else f"{SOLUTION_HEADER.title()}: {solution}")


def _runner(use_uvloop: bool):  # type: ignore[no-untyped-def]
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            return asyncio.run
        return uvloop.run
    return asyncio.run


def _add_admin_commands() -> None:
    """keys, apikeys, decisions, client, policy: the admin API's commands (authz/admin_cli.py)."""
    from authz.admin_cli import COMMANDS

    for command in COMMANDS:
        cli.add_command(command)


_add_admin_commands()


def main() -> None:
    cli(prog_name="authz")
