"""TLS and mTLS for authz's listeners, from certificate files that are reloaded when they change.

    creds = server_credentials(cert, key, client_ca)   # gRPC: a grpc.ServerCredentials
    ctx = ssl_context(cert, key, client_ca)            # HTTP (uvicorn, asyncio): an ssl.SSLContext

Each call reads the PEM files once and checks them (a file that is missing,
unreadable or not PEM, a key that does not belong to the certificate, a
certificate outside its validity period: ``ConfigError`` naming the option).
With ``client_ca`` a client must present a certificate issued by one of
those CAs (mTLS: make Envoy the only caller); without it any client may
connect.

Rotation without restart: at a new connection's handshake, at most once per
``CHECK_INTERVAL_S``, the files' status (modification time, size, inode) is
compared with what was loaded; when one changed, the three are read and
checked again, and a consistent new set is used for every later handshake.
Established connections keep the certificate they were opened with. A set
that does not check out (a key written before its certificate, say) is left
out, logged once, and looked at again at the next handshake; the certificate
in use stays. Nothing of this touches the disk per request.

gRPC calls the fetcher of ``grpc.dynamic_ssl_server_credentials`` before each
handshake; the HTTP context's SNI callback (called for every handshake, SNI
or not) moves the connection to the newest context. ``certificates()`` lists
every certificate set of the process (metrics, health).
"""

from __future__ import annotations

import datetime
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from authz.errors import ConfigError

log = logging.getLogger("authz.tls")

#: the least time between two looks at the files (at handshakes)
CHECK_INTERVAL_S = 1.0
#: the largest certificate, key or CA file read (PEM)
MAX_PEM_BYTES = 1 << 20

_ALL: list[CertFiles] = []
_ALL_LOCK = threading.Lock()


class TlsError(ValueError):
    """Certificate files that cannot be used: the option at fault and what is wrong (never key material)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message

    def config_error(self) -> ConfigError:
        return ConfigError("settings", 0, self.option.lstrip("-").replace("-", "_"), self.message)


@dataclass(frozen=True, slots=True)
class Material:
    """One checked set: the PEM bytes, and what logs and metrics show of the certificate."""

    cert: bytes
    key: bytes
    client_ca: bytes | None
    serial: int
    subject: str
    not_after: float


def _read(path: str, option: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise TlsError(option, f"cannot read {path!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_PEM_BYTES:
        raise TlsError(option, f"{path!r} is larger than {MAX_PEM_BYTES} bytes")
    return data


def check(cert: bytes, key: bytes, client_ca: bytes | None, *, options: tuple[str, str, str], now: float | None = None) -> Material:
    """Parse and check one set of PEM bytes.

    :param options: the option names for messages (cert, key, client CA)
    :raises TlsError: what is wrong, naming the option (a key's content is never quoted)
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_opt, key_opt, ca_opt = options
    try:
        chain = x509.load_pem_x509_certificates(cert)
    except ValueError:
        raise TlsError(cert_opt, "not a PEM certificate (chain)") from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise TlsError(key_opt, "not an unencrypted PEM private key") from None
    leaf = chain[0]
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if private.public_key().public_bytes(*fmt) != leaf.public_key().public_bytes(*fmt):
        raise TlsError(key_opt, f"the key does not belong to the certificate of {cert_opt}")
    now = time.time() if now is None else now
    not_before = leaf.not_valid_before_utc.timestamp()
    not_after = leaf.not_valid_after_utc.timestamp()
    if now < not_before:
        raise TlsError(cert_opt, f"the certificate is not valid before {leaf.not_valid_before_utc.isoformat()}")
    if now > not_after:
        raise TlsError(cert_opt, f"the certificate expired on {leaf.not_valid_after_utc.isoformat()}")
    if client_ca is not None:
        try:
            x509.load_pem_x509_certificates(client_ca)
        except ValueError:
            raise TlsError(ca_opt, "not a PEM certificate bundle") from None
    return Material(cert, key, client_ca, leaf.serial_number, leaf.subject.rfc4514_string(), not_after)


class CertFiles:
    """A certificate, its key and optionally a client CA, as files that may be replaced.

    :param name: what the set serves (``grpc``, ``http``, ``admin``): logs, metrics, option names
    :raises ConfigError: the files cannot be used now
    """

    def __init__(
        self,
        cert: str,
        key: str,
        client_ca: str | None = None,
        *,
        name: str = "tls",
        interval: float = CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cert_path, self.key_path, self.ca_path = cert, key, client_ca or None
        self.name = name
        self.options = (f"--{name}-tls-cert", f"--{name}-tls-key", f"--{name}-client-ca")
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()  # gRPC calls its fetcher from its own threads
        self._checked = clock()
        #: bumped whenever a new set is adopted; each consumer remembers the one it applied
        self.generation = 0
        #: sets adopted after the first, and sets refused (metrics)
        self.reloads = 0
        self.failures = 0
        self.last_error = ""
        self._refused_stamp: tuple[Any, ...] | None = None
        try:
            self._stamp = self._status()
            self.material = self._load()
        except TlsError as exc:
            raise exc.config_error() from None
        with _ALL_LOCK:
            _ALL.append(self)

    def close(self) -> None:
        """Leave the process's list (the listener stopped)."""
        with _ALL_LOCK:
            if self in _ALL:
                _ALL.remove(self)

    @property
    def mutual(self) -> bool:
        return self.ca_path is not None

    def _paths(self) -> tuple[str, ...]:
        return (self.cert_path, self.key_path) if self.ca_path is None else (self.cert_path, self.key_path, self.ca_path)

    def _status(self) -> tuple[Any, ...]:
        out: list[Any] = []
        for path in self._paths():
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev))
            except OSError as exc:
                out.append(exc.errno)
        return tuple(out)

    def _load(self) -> Material:
        cert_opt, key_opt, ca_opt = self.options
        cert = _read(self.cert_path, cert_opt)
        key = _read(self.key_path, key_opt)
        ca = _read(self.ca_path, ca_opt) if self.ca_path is not None else None
        return check(cert, key, ca, options=self.options)

    def refresh(self, *, force: bool = False) -> bool:
        """Look at the files (at most once per interval unless ``force``); adopt a changed, consistent set.

        Returns True when a new set was adopted. Never raises.
        """
        now = self._clock()
        if not force and now - self._checked < self._interval:
            return False
        with self._lock:
            if not force and now - self._checked < self._interval:
                return False
            self._checked = now
            stamp = self._status()
            if stamp in (self._stamp, self._refused_stamp):
                return False
            try:
                material = self._load()
            except TlsError as exc:
                self._refused_stamp = stamp
                self.failures += 1
                self.last_error = str(exc)
                log.warning(
                    "TLS files of %s not reloaded, the certificate in use stays: %s", self.name, exc,
                    extra={"event": "tls.reload_refused", "listener": self.name},
                )  # fmt: skip
                return False
            self._stamp = stamp
            self._refused_stamp = None
            self.last_error = ""
            if material == self.material:
                return False
            self.material = material
            self.generation += 1
            self.reloads += 1
        log.info(
            "TLS certificate of %s reloaded: %s, serial %x, valid until %s", self.name, material.subject,
            material.serial, _iso(material.not_after), extra={"event": "tls.reloaded", "listener": self.name},
        )  # fmt: skip
        return True

    # -- gRPC ------------------------------------------------------------------

    def grpc_credentials(self) -> Any:
        """Server credentials whose certificate follows the files (``grpc.dynamic_ssl_server_credentials``)."""
        import grpc

        applied = self.generation

        def config(m: Material) -> Any:
            return grpc.ssl_server_certificate_configuration([(m.key, m.cert)], root_certificates=m.client_ca)

        def fetch() -> Any:
            nonlocal applied
            try:
                self.refresh()
                if self.generation != applied:
                    applied = self.generation
                    return config(self.material)
            except Exception as exc:  # gRPC would fail the handshake; keep the certificate in use
                log.error("TLS reload of %s failed: %s", self.name, type(exc).__name__)
            return None

        return grpc.dynamic_ssl_server_credentials(config(self.material), fetch, require_client_authentication=self.mutual)

    # -- ssl (HTTP) ------------------------------------------------------------

    def _build_context(self, m: Material) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # the files were checked a moment ago; OpenSSL checks the pair again as it loads them
        ctx.load_cert_chain(self.cert_path, self.key_path)
        if m.client_ca is not None:
            ctx.load_verify_locations(cadata=m.client_ca.decode("ascii", "replace"))
            ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def ssl_context(self) -> ssl.SSLContext:
        """A server context whose certificate (and client CA) follow the files, for new handshakes."""
        try:
            first = self._build_context(self.material)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError("settings", 0, self.options[0].lstrip("-").replace("-", "_"), f"cannot load: {exc}") from None
        current = first
        applied = self.generation

        def switch(obj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            nonlocal current, applied
            try:
                self.refresh()
                if self.generation != applied:
                    applied = self.generation
                    current = self._build_context(self.material)
            except (ssl.SSLError, OSError) as exc:  # changed again since it was checked: keep the one in use
                log.warning("TLS context of %s not rebuilt: %s", self.name, exc)
            if current is not first:
                obj.context = current  # OpenSSL picks the new certificate and trust store for this handshake

        first.sni_callback = switch
        return first


def server_credentials(cert: str, key: str, client_ca: str | None = None, *, name: str = "grpc") -> Any:
    """gRPC server credentials from files, reloaded on change; ``client_ca`` requires client certificates.

    :raises ConfigError: the files cannot be used
    """
    return CertFiles(cert, key, client_ca, name=name).grpc_credentials()


def ssl_context(cert: str, key: str, client_ca: str | None = None, *, name: str = "http") -> ssl.SSLContext:
    """An ``ssl.SSLContext`` for a server, reloaded on change; ``client_ca`` requires client certificates.

    :raises ConfigError: the files cannot be used
    """
    return CertFiles(cert, key, client_ca, name=name).ssl_context()


def certificates() -> list[CertFiles]:
    """Every certificate set of this process (metrics, health)."""
    with _ALL_LOCK:
        return list(_ALL)


def refresh_all() -> None:
    """Look at every set's files now (a background task does every second, so logs and metrics are current)."""
    for files in certificates():
        files.refresh()


def forget_all() -> None:
    """Drop the process's list (tests that build many servers in one process)."""
    with _ALL_LOCK:
        _ALL.clear()


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


__all__ = ["CHECK_INTERVAL_S", "CertFiles", "Material", "TlsError", "certificates", "check", "refresh_all", "server_credentials", "ssl_context"]
