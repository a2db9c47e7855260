"""The admin API's Keys and ApiKeys services (protos/authz/admin/v1/admin.proto).

The admin listener registers them, authenticates the caller and provides
``audit``: a callable ``audit(context, action, target, **details)`` that
records who changed what. These servicers call it after every successful
change, with names, ids and times only: a secret, a private key or an API
key is in the one answer that creates it and nowhere else (not in audit
details, log lines, error messages or list answers).

Errors: INVALID_ARGUMENT for bad names, algorithms or key material,
NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION for a keys-file key (read-only
here: change the keys file) or a keystore that cannot be read or written as
asked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc

from authz.admin.v1 import admin_pb2, admin_pb2_grpc
from authz.keys import Key, KeyRing
from authz.keys import managed as mk
from authz.keys.apikeys import KEY_NOTICE, ApiKey
from authz.keys.errors import AlreadyExists, FailedPrecondition, InvalidArgument, KeystoreError, NotFound
from authz.keys.keystore import Keystore
from authz.keys.managed import ManagedKey

log = logging.getLogger("authz.admin")

T = TypeVar("T")

_CODES: dict[type[KeystoreError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
}


class Audit(Protocol):
    def __call__(self, context: grpc.aio.ServicerContext, action: str, target: str, **details: str) -> None: ...


async def _guard(context: grpc.aio.ServicerContext, call: Awaitable[T]) -> T:
    """Run a keystore call; turn its errors into gRPC statuses with their (secret-free) message."""
    try:
        return await call
    except KeystoreError as exc:
        code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), grpc.StatusCode.FAILED_PRECONDITION)
        await context.abort(code, str(exc))
        raise AssertionError("abort raises") from None
    except (OSError, ConnectionError) as exc:
        log.error("keystore unavailable: %s", type(exc).__name__)
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"the keystore cannot be reached ({type(exc).__name__})")
        raise AssertionError("abort raises") from None


class KeysService(admin_pb2_grpc.KeysServicer):
    """``authz.admin.v1.Keys``.

    :param file_keys: the running policy's keys-file keys (default: ``keystore.file_ring``,
        which the server keeps current); shown with source "file", never changed here
    """

    def __init__(self, keystore: Keystore, audit: Audit, *, file_keys: Callable[[], KeyRing] | None = None) -> None:
        self.keystore = keystore
        self.audit = audit
        self._file_keys = file_keys or (lambda: keystore.file_ring)

    def _file_ring(self) -> KeyRing:
        ring = self._file_keys()
        return getattr(ring, "file_ring", ring)  # a live ring's own file keys

    def _file_key(self, name: str) -> Key | None:
        key = self._file_ring().get(name)
        return key if key is not None and key.source == "file" else None

    def _pb(self, key: ManagedKey) -> admin_pb2.Key:
        now = self.keystore.clock.now_ms()
        current = key.current(now)
        return admin_pb2.Key(
            name=key.name,
            algorithm=key.algorithm,
            subject=key.subject,
            source="keystore",
            current_key_id=key.key_id(current) if current is not None else "",
            versions=[
                admin_pb2.KeyVersion(
                    version=v.number, key_id=key.key_id(v), status=v.status(now), created_ms=v.created_ms,
                    not_after_ms=v.not_after_ms, revoked_ms=v.revoked_ms,
                    public_jwk=json.dumps(mk.public_jwk(key, v), sort_keys=True) if v.public_pem else "",
                )
                for v in key.versions
            ],
        )

    def _file_pb(self, key: Key) -> admin_pb2.Key:
        now = self.keystore.clock.now_ms()
        status = "revoked" if key.revoked else "expired" if not key.usable(now) else "retiring" if key.not_after_ms else "active"
        jwk = ""
        if not isinstance(key.material, bytes):
            from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

            codec: Any = {"OKP": OKPAlgorithm, "EC": ECAlgorithm, "RSA": RSAAlgorithm}.get(key.family)
            if codec is not None:
                doc = codec.to_jwk(key.material, as_dict=True)
                doc.update(kid=key.id, alg=mk.JWS_ALG.get(key.algorithm, key.algorithm))
                jwk = json.dumps(doc, sort_keys=True)
        version = admin_pb2.KeyVersion(version=1, key_id=key.id, status=status, not_after_ms=key.not_after_ms or 0, public_jwk=jwk)
        return admin_pb2.Key(
            name=key.id, algorithm=key.algorithm, subject=key.subject, source="file",
            current_key_id=key.id if status in ("active", "retiring") else "", versions=[version],
        )  # fmt: skip

    def _made(self, made: mk.Made) -> admin_pb2.CreateKeyResponse:
        return admin_pb2.CreateKeyResponse(
            key=self._pb(made.key), key_id=made.key_id, secret=made.secret, notice=mk.SECRET_NOTICE if made.secret else ""
        )

    async def ListKeys(self, request: Any, context: grpc.aio.ServicerContext) -> admin_pb2.ListKeysResponse:  # noqa: N802 (gRPC method names)
        keys = [self._file_pb(k) for k in self._file_ring() if k.source == "file"]
        keys += [self._pb(k) for k in self.keystore.managed_keys()]
        return admin_pb2.ListKeysResponse(keys=keys)

    async def GetKey(self, request: Any, context: grpc.aio.ServicerContext) -> admin_pb2.Key:  # noqa: N802 (gRPC method names)
        file_key = self._file_key(request.name)
        if file_key is not None:
            return self._file_pb(file_key)
        key = await _guard(context, _value_of(lambda: self.keystore.key(request.name)))
        return self._pb(key)

    async def CreateKey(self, request: Any, context: grpc.aio.ServicerContext) -> admin_pb2.CreateKeyResponse:  # noqa: N802 (gRPC method names)
        if self._file_key(request.name) is not None:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{request.name!r} is a key of the keys file")
        made = await _guard(
            context, self.keystore.create_key(request.name, request.algorithm, request.subject, request.import_pem, request.import_jwk)
        )
        how = "imported" if request.import_pem or request.import_jwk else "generated"
        self.audit(context, "key.create", request.name, key_id=made.key_id, algorithm=made.key.algorithm, material=how)
        return self._made(made)

    async def RotateKey(self, request: Any, context: grpc.aio.ServicerContext) -> admin_pb2.CreateKeyResponse:  # noqa: N802 (gRPC method names)
        await self._no_file_key(request.name, context)
        made = await _guard(
            context, self.keystore.rotate_key(request.name, request.previous_valid_until_ms, request.import_pem, request.import_jwk)
        )
        until = min((v.not_after_ms for v in made.key.versions[:-1] if v.not_after_ms), default=0)
        self.audit(context, "key.rotate", request.name, key_id=made.key_id, previous_valid_until_ms=str(until))
        return self._made(made)

    async def RevokeKey(self, request: Any, context: grpc.aio.ServicerContext) -> admin_pb2.Key:  # noqa: N802 (gRPC method names)
        await self._no_file_key(request.name, context)
        key = await _guard(context, self.keystore.revoke_key(request.name, request.version))
        self.audit(context, "key.revoke", request.name, version=str(request.version) if request.version else "all")
        return self._pb(key)

    async def ExportJwks(self, request: Any, context: grpc.aio.ServicerContext) -> admin_pb2.ExportJwksResponse:  # noqa: N802 (gRPC method names)
        return admin_pb2.ExportJwksResponse(jwks=json.dumps(self.keystore.jwks(), sort_keys=True))

    async def _no_file_key(self, name: str, context: grpc.aio.ServicerContext) -> None:
        if self._file_key(name) is not None and name not in self.keystore.state.keys:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"{name!r} is a key of the keys file ({self._file_ring().file}); change it there"
            )


async def _value_of(get: Callable[[], T]) -> T:
    return get()


def api_key_pb(record: ApiKey, now_ms: int) -> admin_pb2.ApiKey:
    return admin_pb2.ApiKey(
        id=record.id, name=record.name, owner=record.owner, tier=record.tier, status=record.status(now_ms),
        created_ms=record.created_ms, not_after_ms=record.not_after_ms, revoked_ms=record.revoked_ms,
    )  # fmt: skip


class ApiKeysService(admin_pb2_grpc.ApiKeysServicer):
    """``authz.admin.v1.ApiKeys``."""

    def __init__(self, keystore: Keystore, audit: Audit) -> None:
        self.keystore = keystore
        self.audit = audit

    def _now(self) -> int:
        return self.keystore.clock.now_ms()

    async def ListApiKeys(self, request: Any, context: grpc.aio.ServicerContext) -> admin_pb2.ListApiKeysResponse:  # noqa: N802 (gRPC method names)
        now = self._now()
        return admin_pb2.ListApiKeysResponse(api_keys=[api_key_pb(a, now) for a in self.keystore.api_keys(request.owner)])

    async def CreateApiKey(self, request: Any, context: grpc.aio.ServicerContext) -> admin_pb2.CreateApiKeyResponse:  # noqa: N802 (gRPC method names)
        record, text = await _guard(context, self.keystore.create_api_key(request.name, request.owner, request.tier, request.expires_ms))
        self.audit(context, "apikey.create", record.id, owner=record.owner, tier=record.tier, name=record.name)
        return admin_pb2.CreateApiKeyResponse(api_key=api_key_pb(record, self._now()), key=text, notice=KEY_NOTICE)

    async def RotateApiKey(self, request: Any, context: grpc.aio.ServicerContext) -> admin_pb2.CreateApiKeyResponse:  # noqa: N802 (gRPC method names)
        record, text = await _guard(context, self.keystore.rotate_api_key(request.id, request.previous_valid_until_ms))
        old = self.keystore.api_key(request.id)
        until = str(old.not_after_ms) if old is not None else ""
        self.audit(context, "apikey.rotate", request.id, new_id=record.id, previous_valid_until_ms=until)
        return admin_pb2.CreateApiKeyResponse(api_key=api_key_pb(record, self._now()), key=text, notice=KEY_NOTICE)

    async def RevokeApiKey(self, request: Any, context: grpc.aio.ServicerContext) -> admin_pb2.ApiKey:  # noqa: N802 (gRPC method names)
        record = await _guard(context, self.keystore.revoke_api_key(request.id))
        self.audit(context, "apikey.revoke", record.id, owner=record.owner)
        return api_key_pb(record, self._now())


__all__ = ["ApiKeysService", "Audit", "KeysService"]
