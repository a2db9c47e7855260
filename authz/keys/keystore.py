"""The keystore: managed keys and API keys, encrypted at rest, shared by every instance.

State is one JSON document (docs/keys.md shows it): the managed keys with
their versions, and the API keys. HMAC secrets are sealed with AES-256-GCM
under the first master key (``authz.keys.crypto``); public keys, hashes of
API keys and dates are in clear, and an HMAC over the whole document makes
any edit outside authz a refusal, not a change. Generated private keys are
returned once and never stored.

Backends keep the document and tell every instance when it changes:

* a file: written atomically (a temporary file in the same directory, fsync,
  ``os.replace``), mode 0600, with writers serialized by ``flock`` on
  ``<file>.lock``; readers notice a change by polling its inode, size and
  modification time every 0.25 s.
* Redis: the document under ``{<prefix>}:doc`` beside a version counter
  ``{<prefix>}:version``; a Lua script writes both only if the version is
  the one the writer read (concurrent writers never lose an update) and
  publishes the new version on ``<prefix>:changed``. Readers listen on that
  channel and also poll the version every 0.5 s, so a lost message (or a
  Cluster, where only the poll runs) still shows within a second.

A stored document that cannot be read (bad JSON, truncated, an unknown or
wrong master key, a tampered field) is refused with a message naming the
file or Redis key and what is wrong: at start that is a ``ConfigError``;
later, the keys in force stay in force and the error is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from authz.algorithms import ALGORITHMS
from authz.clock import Clock, SystemClock
from authz.errors import ConfigError
from authz.keys import EMPTY_KEYRING, Key, KeyRing, managed
from authz.keys import apikeys as api
from authz.keys.apikeys import ApiKey
from authz.keys.crypto import MasterKeys, b64d, b64e, check_mac, mac, seal, unseal
from authz.keys.errors import AlreadyExists, Corrupt, FailedPrecondition, KeystoreError, NotFound
from authz.keys.managed import Made, ManagedKey, Version

log = logging.getLogger("authz.keys")

FORMAT = "authz-keystore"
FORMAT_VERSION = 1
FILE_POLL_S = 0.25
REDIS_POLL_S = 0.5
DEFAULT_REDIS_PREFIX = "authz:keystore"
_WRITE_ATTEMPTS = 20
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class State:
    serial: int = 0
    keys: Mapping[str, ManagedKey] = field(default_factory=dict)
    api_keys: Mapping[str, ApiKey] = field(default_factory=dict)


# -- the document ----------------------------------------------------------------


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def encode(state: State, masters: MasterKeys) -> bytes:
    """The document of a state, sealed and MACed under the first master key."""
    mk = masters.primary
    keys = []
    for key in state.keys.values():
        versions = []
        for v in key.versions:
            entry: dict[str, Any] = {
                "version": v.number, "created_ms": v.created_ms, "not_after_ms": v.not_after_ms, "revoked_ms": v.revoked_ms,
            }  # fmt: skip
            if v.secret:
                entry["secret"] = seal(mk, v.secret, _aad(key.name, v.number))
            else:
                entry["public_pem"] = v.public_pem
            versions.append(entry)
        keys.append({
            "name": key.name, "algorithm": key.algorithm, "subject": key.subject, "created_ms": key.created_ms,
            "versions": versions,
        })  # fmt: skip
    api_keys = [
        {
            "id": a.id, "name": a.name, "owner": a.owner, "tier": a.tier, "created_ms": a.created_ms,
            "not_after_ms": a.not_after_ms, "revoked_ms": a.revoked_ms, "retiring": a.retiring,
            "salt": b64e(a.salt), "hmac_sha256": b64e(a.digest),
        }
        for a in state.api_keys.values()
    ]
    doc: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "serial": state.serial, "keys": keys, "api_keys": api_keys}
    doc["mac"] = mac(mk, _canonical(doc))
    return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"


def _aad(name: str, number: int) -> str:
    return f"key {name!r} version {number}"


def decode(data: bytes, masters: MasterKeys) -> State:
    """Read a document; refuse anything that is not exactly what ``encode`` writes.

    :raises Corrupt: saying what is wrong (never the secrets)
    """

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise Corrupt(f"member {k!r} appears twice")
            out[k] = v
        return out

    def no_constant(name: str) -> Any:
        raise Corrupt(f"{name} is not JSON")

    try:
        doc = json.loads(data, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except UnicodeDecodeError:
        raise Corrupt("not UTF-8 text (not a keystore document)") from None
    except ValueError as exc:
        raise Corrupt(f"not JSON (truncated or damaged?): {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise Corrupt(f"not a keystore document (no \"format\": \"{FORMAT}\")")
    if doc.get("format_version") != FORMAT_VERSION:
        raise Corrupt(f"format_version {doc.get('format_version')!r}; this authz reads {FORMAT_VERSION}")
    tag = doc.pop("mac", None)
    check_mac(masters, tag, _canonical(doc))
    keys: dict[str, ManagedKey] = {}
    for n, entry in enumerate(_list(doc, "keys", "the document")):
        where = f"keys[{n}]"
        name = _str(entry, "name", where)
        versions = []
        for m, ve in enumerate(_list(entry, "versions", where)):
            vwhere = f"{where}.versions[{m}]"
            number = _int(ve, "version", vwhere)
            secret = unseal(masters, ve["secret"], _aad(name, number)) if "secret" in ve else b""
            versions.append(
                Version(
                    number=number,
                    created_ms=_int(ve, "created_ms", vwhere),
                    not_after_ms=_int(ve, "not_after_ms", vwhere),
                    revoked_ms=_int(ve, "revoked_ms", vwhere),
                    public_pem="" if secret else _str(ve, "public_pem", vwhere),
                    secret=secret,
                )
            )
        key = ManagedKey(name, _str(entry, "algorithm", where), _str(entry, "subject", where), _int(entry, "created_ms", where), tuple(versions))
        if key.algorithm not in ALGORITHMS:
            raise Corrupt(f"{where}: unknown algorithm {key.algorithm!r}")
        keys[name] = key
    api_keys: dict[str, ApiKey] = {}
    for n, entry in enumerate(_list(doc, "api_keys", "the document")):
        where = f"api_keys[{n}]"
        record = ApiKey(
            id=_str(entry, "id", where), name=_str(entry, "name", where), owner=_str(entry, "owner", where),
            tier=_str(entry, "tier", where), created_ms=_int(entry, "created_ms", where),
            not_after_ms=_int(entry, "not_after_ms", where), revoked_ms=_int(entry, "revoked_ms", where),
            retiring=bool(entry.get("retiring", False)),
            salt=b64d(entry.get("salt"), f"{where}.salt"), digest=b64d(entry.get("hmac_sha256"), f"{where}.hmac_sha256"),
        )  # fmt: skip
        api_keys[record.id] = record
    return State(_int(doc, "serial", "the document"), keys, api_keys)


def sealed_with(data: bytes) -> set[str]:
    """The master key ids a document's secrets and MAC were made under (no check)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return set()
    ids = {doc.get("mac", {}).get("mk")}
    for key in doc.get("keys", []):
        for v in key.get("versions", []):
            if isinstance(v.get("secret"), dict):
                ids.add(v["secret"].get("mk"))
    return {i for i in ids if isinstance(i, str)}


def _list(obj: Any, name: str, where: str) -> list[Any]:
    value = obj.get(name) if isinstance(obj, dict) else None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise Corrupt(f"{where}: {name} is not a list of objects")
    return value


def _str(obj: dict[str, Any], name: str, where: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise Corrupt(f"{where}: {name} is not a string")
    return value


def _int(obj: dict[str, Any], name: str, where: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Corrupt(f"{where}: {name} is not a non-negative integer")
    return value


# -- backends --------------------------------------------------------------------


class Backend(ABC):
    """Where the document lives. ``token`` names what a reader read, for a conditional write."""

    #: the file or Redis key, for messages
    where: str = ""
    poll_s: float = FILE_POLL_S

    @abstractmethod
    async def load(self) -> tuple[str, bytes | None]:
        """(token, document); None when there is no keystore yet."""

    @abstractmethod
    async def save(self, data: bytes, token: str) -> bool:
        """Write the document if it is still the one ``token`` names; False if another writer came first."""

    @abstractmethod
    async def stamp(self) -> object:
        """Something that changes whenever the document does (cheap: it is polled)."""

    async def notifications(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` on each push notification, until cancelled (default: none, polling only)."""
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


class FileBackend(Backend):
    def __init__(self, path: str) -> None:
        self.path = path
        self.where = path
        self.poll_s = FILE_POLL_S

    async def load(self) -> tuple[str, bytes | None]:
        return await asyncio.to_thread(self._load)

    def _load(self) -> tuple[str, bytes | None]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return "", None
        except OSError as exc:
            raise Corrupt(f"cannot read: {exc.strerror or exc}") from None
        return hashlib.sha256(data).hexdigest(), data

    async def save(self, data: bytes, token: str) -> bool:
        return await asyncio.to_thread(self._save, data, token)

    def _save(self, data: bytes, token: str) -> bool:
        directory = os.path.dirname(os.path.abspath(self.path))
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self._load()[0] != token:
                return False
            tmp_fd, tmp = tempfile.mkstemp(prefix=".keystore-", dir=directory)
            try:
                os.fchmod(tmp_fd, 0o600)
                with os.fdopen(tmp_fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            return True
        finally:
            os.close(fd)  # releases the lock

    async def stamp(self) -> object:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)


_LOAD_LUA = "return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}"
_SAVE_LUA = """
local v = redis.call('GET', KEYS[2]) or ''
if v ~= ARGV[2] then return false end
redis.call('SET', KEYS[1], ARGV[1])
local n = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[3], n)
return n
"""


class RedisBackend(Backend):
    """The document in Redis. ``client`` is a redis-py asyncio client (or Cluster client)."""

    def __init__(self, client: Any, describe: str, *, prefix: str = DEFAULT_REDIS_PREFIX, cluster: bool = False) -> None:
        self.client = client
        self.cluster = cluster
        # one hash slot for both keys, so the scripts work on a Cluster
        self.doc_key = f"{{{prefix}}}:doc"
        self.version_key = f"{{{prefix}}}:version"
        self.channel = f"{prefix}:changed"
        self.where = f"{describe} key {self.doc_key}"
        self.poll_s = REDIS_POLL_S

    async def load(self) -> tuple[str, bytes | None]:
        doc, version = await self.client.eval(_LOAD_LUA, 2, self.doc_key, self.version_key)
        return (version or b"").decode(), doc

    async def save(self, data: bytes, token: str) -> bool:
        n = await self.client.eval(_SAVE_LUA, 2, self.doc_key, self.version_key, data, token, self.channel)
        return bool(n)

    async def stamp(self) -> object:
        return await self.client.get(self.version_key)

    async def notifications(self, changed: Callable[[], None]) -> None:
        if self.cluster:
            await asyncio.Event().wait()  # redis-py's Cluster client has no pub/sub: the poll alone
        pubsub = self.client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message.get("type") == "message":
                    changed()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), 1.0)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.aclose()


# -- the keystore ------------------------------------------------------------------


class Keystore:
    """Managed keys and API keys, read from a backend and kept current.

    Reads (``ring_keys``, ``api_key``, ``keys``...) are plain attribute and
    dictionary look-ups on the state in force; ``generation`` changes each
    time that state is replaced. Changes go through the backend first and
    are adopted only once written.
    """

    def __init__(self, backend: Backend, master_keys: MasterKeys, *, clock: Clock | None = None) -> None:
        self.backend = backend
        self.master_keys = master_keys
        self.clock = clock or SystemClock()
        self.state = State()
        #: bumped each time a new state is adopted (the live keyring watches it)
        self.generation = 0
        #: the running policy's keys-file keys: their names are taken, ListKeys shows them
        self.file_ring: KeyRing = EMPTY_KEYRING
        self._ring: dict[str, Key] = {}
        self._digest = b""
        self._bad_digest = b""
        self._stamp: object = None
        self._write_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._kick = asyncio.Event()
        self.loaded = False
        self._closing = False

    @property
    def where(self) -> str:
        return self.backend.where

    # -- life ------------------------------------------------------------------

    async def start(self) -> None:
        """Read the keystore and start following its changes.

        :raises ConfigError: the keystore cannot be read (naming it and what is wrong)
        """
        try:
            self._stamp = await self.backend.stamp()
            _, data = await self.backend.load()
            if data is not None:
                self._adopt(decode(data, self.master_keys), data)
        except Corrupt as exc:
            raise ConfigError(self.where, 0, "keystore", f"refused: {exc}") from None
        except (OSError, ConnectionError) as exc:
            raise ConfigError(self.where, 0, "keystore", f"cannot read the keystore: {exc}") from None
        except Exception as exc:  # redis-py raises its own types for an unreachable server
            raise ConfigError(self.where, 0, "keystore", f"cannot read the keystore: {type(exc).__name__}: {exc}") from None
        self.loaded = True
        self._tasks = [
            asyncio.create_task(self._poll(), name="keystore-poll"),
            asyncio.create_task(self._listen(), name="keystore-listen"),
        ]

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        # redis-py's pub/sub reader may swallow one cancellation; the flag ends its loop
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        self._tasks = []
        await self.backend.close()

    async def _poll(self) -> None:
        warned = False
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), self.backend.poll_s)
            except TimeoutError:
                pass
            kicked = self._kick.is_set()
            self._kick.clear()
            try:
                stamp = await self.backend.stamp()
                if kicked or stamp != self._stamp:
                    self._stamp = stamp
                    await self.refresh()
                warned = False
            except Exception as exc:
                if not warned:
                    log.warning("keystore %s: cannot look for changes (%s); the keys in force stay in force", self.where, type(exc).__name__)
                    warned = True

    async def _listen(self) -> None:
        while not self._closing:
            try:
                await self.backend.notifications(self._kick.set)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(1.0)  # the poll covers the gap; subscribe again

    async def refresh(self) -> bool:
        """Read the keystore now; adopt it if it changed and reads well. True when adopted."""
        _, data = await self.backend.load()
        if data is None:
            return False
        digest = hashlib.sha256(data).digest()
        if digest in (self._digest, self._bad_digest):
            return False
        try:
            state = decode(data, self.master_keys)
        except Corrupt as exc:
            self._bad_digest = digest
            log.error("keystore %s refused: %s; the keys in force stay in force", self.where, exc)
            return False
        self._adopt(state, data)
        log.info("keystore %s: serial %d adopted (%d keys, %d API keys)", self.where, state.serial, len(state.keys), len(state.api_keys))
        return True

    def _adopt(self, state: State, data: bytes) -> None:
        ring: dict[str, Key] = {}
        for key in state.keys.values():
            for v in key.versions:
                made = managed.ring_key(key, v, f"keystore:{key.name}")
                old = self._ring.get(made.id)
                # an unchanged version keeps its object: caches keyed on it (verified tokens) stay warm
                ring[made.id] = old if old is not None and _same(old, made) else made
        self.state = state
        self._ring = ring
        self._digest = hashlib.sha256(data).digest()
        self.generation += 1

    # -- reads -------------------------------------------------------------------

    def ring_keys(self) -> Mapping[str, Key]:
        """Every version of every managed key, as keyring entries (revoked and retired ones too)."""
        return self._ring

    def api_key(self, key_id: str) -> ApiKey | None:
        return self.state.api_keys.get(key_id)

    def managed_keys(self) -> list[ManagedKey]:
        return sorted(self.state.keys.values(), key=lambda k: k.name)

    def key(self, name: str) -> ManagedKey:
        key = self.state.keys.get(name)
        if key is None:
            if self._file_key(name):
                raise FailedPrecondition(f"{name!r} is a key of the keys file ({self.file_ring.file}); change it there")
            raise NotFound(f"no key named {name!r}")
        return key

    def api_keys(self, owner: str = "") -> list[ApiKey]:
        return sorted(
            (a for a in self.state.api_keys.values() if not owner or a.owner == owner), key=lambda a: (a.created_ms, a.id)
        )

    def jwks(self) -> dict[str, Any]:
        """The public keys of every usable asymmetric version (RFC 7517)."""
        now = self.clock.now_ms()
        out = []
        for key in self.managed_keys():
            for v in key.versions:
                if v.public_pem and v.status(now) in ("active", "retiring"):
                    out.append(managed.public_jwk(key, v))
        return {"keys": out}

    def _file_key(self, name: str) -> bool:
        return self.file_ring.get(name) is not None or any(k.id.startswith(f"{name}.v") for k in self.file_ring)

    # -- changes ---------------------------------------------------------------

    async def create_key(self, name: str, algorithm: str, subject: str = "", import_pem: str = "", import_jwk: str = "") -> Made:
        managed.check_name(name)
        if self._file_key(name):
            raise AlreadyExists(f"{name!r} is taken by the keys file ({self.file_ring.file})")

        def change(state: State) -> tuple[State, Made]:
            if name in state.keys:
                raise AlreadyExists(f"a key named {name!r} exists")
            made = managed.create(name, algorithm, subject, import_pem, import_jwk, self.clock.now_ms())
            return replace(state, keys={**state.keys, name: made.key}), made

        return await self._change(change, f"create key {name}")

    async def rotate_key(self, name: str, previous_valid_until_ms: int = 0, import_pem: str = "", import_jwk: str = "") -> Made:
        def change(state: State) -> tuple[State, Made]:
            key = self._in(state, name)
            made = managed.rotate(key, previous_valid_until_ms, import_pem, import_jwk, self.clock.now_ms())
            return replace(state, keys={**state.keys, name: made.key}), made

        return await self._change(change, f"rotate key {name}")

    async def revoke_key(self, name: str, version: int = 0) -> ManagedKey:
        def change(state: State) -> tuple[State, ManagedKey]:
            key = managed.revoke(self._in(state, name), version, self.clock.now_ms())
            return replace(state, keys={**state.keys, name: key}), key

        return await self._change(change, f"revoke key {name}" + (f" v{version}" if version else ""))

    async def create_api_key(self, name: str, owner: str, tier: str = "", expires_ms: int = 0) -> tuple[ApiKey, str]:
        def change(state: State) -> tuple[State, tuple[ApiKey, str]]:
            record, text = api.new(name, owner, tier, expires_ms, self.clock.now_ms(), set(state.api_keys))
            return replace(state, api_keys={**state.api_keys, record.id: record}), (record, text)

        return await self._change(change, "create API key")

    async def rotate_api_key(self, key_id: str, previous_valid_until_ms: int = 0) -> tuple[ApiKey, str]:
        def change(state: State) -> tuple[State, tuple[ApiKey, str]]:
            now = self.clock.now_ms()
            old = self._api_in(state, key_id)
            retired = api.retire(old, previous_valid_until_ms or now + managed.DEFAULT_RETIRE_MS, now)
            record, text = api.new(old.name, old.owner, old.tier, 0, now, set(state.api_keys))
            return replace(state, api_keys={**state.api_keys, old.id: retired, record.id: record}), (record, text)

        return await self._change(change, f"rotate API key {key_id}")

    async def revoke_api_key(self, key_id: str) -> ApiKey:
        def change(state: State) -> tuple[State, ApiKey]:
            record = api.revoke(self._api_in(state, key_id), self.clock.now_ms())
            return replace(state, api_keys={**state.api_keys, key_id: record}), record

        return await self._change(change, f"revoke API key {key_id}")

    async def rotate_master(self) -> int:
        """Write everything again under the first master key; return how many secrets were re-sealed.

        After it, master keys other than the first can be removed from the configuration.
        """

        def change(state: State) -> tuple[State, int]:
            return state, sum(1 for k in state.keys.values() for v in k.versions if v.secret)

        return await self._change(change, "re-encrypt under master key " + self.master_keys.primary.id)

    def _in(self, state: State, name: str) -> ManagedKey:
        key = state.keys.get(name)
        if key is None:
            if self._file_key(name):
                raise FailedPrecondition(f"{name!r} is a key of the keys file ({self.file_ring.file}); change it there")
            raise NotFound(f"no key named {name!r}")
        return key

    @staticmethod
    def _api_in(state: State, key_id: str) -> ApiKey:
        record = state.api_keys.get(key_id)
        if record is None:
            raise NotFound(f"no API key with id {key_id!r}")
        return record

    async def _change(self, change: Callable[[State], tuple[State, T]], what: str) -> T:
        """Read, change, write if nobody wrote in between (else again), adopt."""
        async with self._write_lock:
            for _ in range(_WRITE_ATTEMPTS):
                token, data = await self.backend.load()
                try:
                    current = decode(data, self.master_keys) if data is not None else State()
                except Corrupt as exc:
                    raise FailedPrecondition(f"the keystore {self.where} cannot be read, so it is not changed: {exc}") from None
                new, result = change(current)
                new = replace(new, serial=current.serial + 1)
                encoded = encode(new, self.master_keys)
                if await self.backend.save(encoded, token):
                    self._adopt(new, encoded)
                    self._stamp = await self.backend.stamp()
                    log.info("keystore %s: %s (serial %d)", self.where, what, new.serial)
                    return result
            raise FailedPrecondition(f"the keystore {self.where} kept changing under this write; try again")


class _Nowhere(Backend):
    """No document: the keystore of a policy checked offline (``authz check-config``)."""

    where = "(no keystore)"

    async def load(self) -> tuple[str, bytes | None]:
        return "", None

    async def save(self, data: bytes, token: str) -> bool:
        raise FailedPrecondition("this keystore is a placeholder for checking a policy; it keeps nothing")

    async def stamp(self) -> object:
        return None


def offline_keystore() -> Keystore:
    """A keystore that holds nothing, for compiling a policy that uses one without its contents."""
    from authz.keys.crypto import MasterKey

    return Keystore(_Nowhere(), MasterKeys([MasterKey("offline", bytes(32))]))


def _same(a: Key, b: Key) -> bool:
    return (a.id, a.algorithm, a.subject, a.revoked, a.not_after_ms) == (b.id, b.algorithm, b.subject, b.revoked, b.not_after_ms) and _material(a) == _material(b)


def _material(key: Key) -> bytes:
    if isinstance(key.material, bytes):
        return key.material
    from cryptography.hazmat.primitives import serialization

    return bytes(key.material.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def iter_versions(key: ManagedKey) -> Iterator[tuple[str, Version]]:
    for v in key.versions:
        yield key.key_id(v), v


__all__ = ["Backend", "FileBackend", "Keystore", "KeystoreError", "RedisBackend", "State", "decode", "encode", "offline_keystore"]
