"""The HTTP door's server: uvicorn (httptools parser) in authz's own event loop.

uvicorn runs as a listener inside the process that already runs the gRPC
server (``loop="none"``: the loop is authz's, uvloop when installed), so both
doors share one engine, one store, one decision log.

uvicorn's httptools protocol puts no bound on the request head and no time
limit on reading it, so ``BoundedHttpTools`` adds them:

* request target, header bytes and header lines are capped from the policy's
  ``limits`` (the gRPC door's bounds): a larger head is refused with 431
  ``request.too_large``;
* a head that is not complete within ``header_timeout`` seconds is refused
  with 408 ``request.timeout`` (a connection that sent nothing is just closed);
* bodies are never read; more than ``MAX_BODY`` bytes of one closes the
  connection;
* anything httptools cannot parse is refused with 400 ``request.malformed``.

Each refusal is a real decision (id, reason, decision log) rendered as a raw
HTTP response, after which the connection closes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import ssl
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from authz.adapters.http import RAW_TARGET, HttpDoor, render_raw
from authz.decision import REQUEST_MALFORMED, REQUEST_TIMEOUT, REQUEST_TOO_LARGE, Reason
from authz.errors import ConfigError
from authz.request import Request
from authz.settings import split_hostport

log = logging.getLogger("authz.http")
# uvicorn warns once per unparsable or upgrade request; here each of those is a
# decision in the decision log already (bounded), so only errors are logged
_WIRE_LOG = logging.getLogger("authz.http.wire")
_WIRE_LOG.setLevel(logging.ERROR)

#: body bytes of one request after which the connection is closed (bodies are never read)
MAX_BODY = 1 << 20
#: seconds an idle keep-alive connection stays open; above the proxies' own pool
#: idle times (Envoy 1h is set lower in the example, nginx 60 s, Traefik 90 s)
KEEP_ALIVE = 120
_HEAD = Request(method="", path="", door="http")


class _TooLarge(Exception):
    pass


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded request heads and a head timeout."""

    door: HttpDoor
    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = _WIRE_LOG
        self._head_bytes = 0
        self._head_lines = 0
        self._body_bytes = 0
        self._seen_bytes = False
        self._refusal = ""
        self._head_timer: asyncio.TimerHandle | None = None

    # connection and timers

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's, but an Upgrade request is an ordinary check here (no
        # WebSocket side): answer it and parse on past it instead of dropping
        # what follows it in the same read
        self._seen_bytes = True
        self._unset_keepalive_if_required()
        for _ in range(len(data) + 1):  # each round consumes at least one request head
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                offset = upgrade.args[0] if upgrade.args and isinstance(upgrade.args[0], int) else len(data)
                data = data[offset:]
                if data and not self.transport.is_closing():
                    continue
            except httptools.HttpParserError:
                self.send_400_response("Invalid HTTP request received.")
            return

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if not self._seen_bytes:
            self.transport.close()  # nothing asked, nothing to answer
            return
        self._refuse(REQUEST_TIMEOUT, "request head not complete in time")

    # parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = self._head_lines = self._body_bytes = 0
        if self._head_timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self._limits().max_target_bytes + 1024:
            self._refusal = "request target too large"
            raise _TooLarge
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # httptools may deliver one field in pieces; count every byte and each call
        self._head_bytes += len(name) + len(value)
        self._head_lines += 1
        limits = self._limits()
        if self._head_bytes > limits.max_header_bytes or self._head_lines > limits.max_headers * 4:
            self._refusal = "request head too large"
            raise _TooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        self.scope[RAW_TARGET] = self.url  # type: ignore[literal-required]
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > MAX_BODY:
            self.transport.close()
            return
        super().on_body(body)

    # refusals below the ASGI layer

    def send_400_response(self, msg: str) -> None:
        # called by uvicorn for every parser error, ours included
        if self._refusal:
            self._refuse(REQUEST_TOO_LARGE, self._refusal)
        else:
            self._refuse(REQUEST_MALFORMED, "unparsable HTTP request")

    def _refuse(self, reason: Reason, detail: str) -> None:
        self._disarm()
        decision = self.door.engine.malformed(_HEAD, reason, detail)
        self.transport.write(render_raw(decision))
        self.transport.close()

    def _limits(self) -> Any:
        return self.door.engine.policy.limits


class HttpServer:
    """The HTTP door's listener, started and stopped by the App."""

    def __init__(
        self, door: HttpDoor, listen: str, *, header_timeout: float, grace: float, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.door = door
        self.listen = listen
        #: TLS (authz.server.tls: the certificate follows its files); None serves plain HTTP
        self.ssl_context = ssl_context
        protocol = type("AuthzHttpProtocol", (BoundedHttpTools,), {"door": door, "header_timeout": header_timeout})
        self.config = uvicorn.Config(
            door,
            http=protocol,
            loop="none",
            lifespan="off",
            ws="none",
            interface="asgi3",
            proxy_headers=False,  # the engine applies the policy's trusted proxies itself
            server_header=False,
            date_header=False,
            access_log=False,
            log_config=None,
            timeout_keep_alive=KEEP_ALIVE,
            timeout_graceful_shutdown=math.ceil(grace),
            backlog=2048,
        )
        self.server = uvicorn.Server(self.config)
        self.sock: socket.socket | None = None
        self.port = 0

    async def start(self, *, reuse_port: bool = False) -> None:
        """:param reuse_port: share the port with the other workers (SO_REUSEPORT: the kernel spreads connections)"""
        host, port = split_hostport(self.listen, "http_listen")
        self.sock = _bind(host, port, reuse_port)
        self.port = self.sock.getsockname()[1]
        self.config.load()
        self.config.ssl = self.ssl_context
        self.server.lifespan = self.config.lifespan_class(self.config)  # "off": a no-op
        await self.server.startup(sockets=[self.sock])
        shown = f"[{host}]" if ":" in host else host
        scheme = "HTTPS" + (" with client certificates" if self.ssl_context.verify_mode == ssl.CERT_REQUIRED else "") if self.ssl_context else "HTTP"
        log.info("authz serving %s on %s:%d (%s)", scheme, shown, self.port, self.door.modes.describe())

    async def stop(self) -> None:
        if self.server.started:
            await self.server.shutdown(sockets=[self.sock] if self.sock else None)
            self.server.started = False


def _bind(host: str, port: int, reuse_port: bool = False, field: str = "http_listen") -> socket.socket:
    """Bind the listening socket here, so that a taken port is a ConfigError, not uvicorn's exit."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind(addr)
            sock.listen(2048)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise ConfigError("settings", 0, field, f"cannot listen on {host}:{port}: {exc}") from None
    return sock
