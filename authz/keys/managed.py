"""Managed keys: named keys with numbered versions, generated or imported.

A managed key is bound to one algorithm for all its versions. Version N has
the key id ``<name>.v<N>``, which clients put in a token's ``kid`` or a
signature's ``keyid``. What a version holds:

* HMAC algorithms: a generated random secret (32 bytes, or the algorithm's
  minimum when larger: 48 for HS384, 64 for HS512). It is returned once, when
  made, and kept (encrypted) because verifying needs it.
* Asymmetric algorithms: a public key. A generated pair (Ed25519, EC P-256)
  returns its private key once, as PKCS#8 PEM, and only the public key is
  kept; an imported public key (PEM, JWK, or a JWKS with one key) may be of
  any algorithm of the table. Private material offered for import is refused.

Rotation adds a version and gives the previous ones a ``not_after`` (they
keep verifying until then); revocation refuses a version, or every version,
from that moment. Versions are never deleted: a revoked key id stays known,
so it is refused as revoked rather than as unknown.

Everything here is pure: functions take the current objects and return new
ones; ``authz.keys.keystore`` stores them.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, cast

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from authz.algorithms import ALGORITHMS, EC, HMAC, OKP, RSA
from authz.keys import Key
from authz.keys.crypto import b64e
from authz.keys.errors import FailedPrecondition, InvalidArgument, NotFound

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: algorithms whose material authz can generate
GENERATED = ("hmac-sha256", "HS256", "HS384", "HS512", "ed25519", "EdDSA", "ecdsa-p256-sha256", "ES256")
HMAC_SECRET_BYTES = 32
#: the JWS name of each algorithm, for the ``alg`` of an exported JWK
JWS_ALG = {
    "ed25519": "EdDSA", "ecdsa-p256-sha256": "ES256", "ecdsa-p384-sha384": "ES384",
    "rsa-pss-sha512": "PS512", "rsa-v1_5-sha256": "RS256",
}  # fmt: skip
DEFAULT_RETIRE_MS = 3_600_000
MAX_SUBJECT = 256
SECRET_NOTICE = "This secret is shown once and never again: store it now."  # noqa: S105 (a message, not a secret)


@dataclass(frozen=True, slots=True)
class Version:
    number: int
    created_ms: int
    not_after_ms: int = 0
    revoked_ms: int = 0
    #: the public key (SubjectPublicKeyInfo PEM) of an asymmetric key
    public_pem: str = ""
    #: the HMAC secret; never shown after creation, encrypted at rest
    secret: bytes = field(default=b"", repr=False)

    def status(self, now_ms: int) -> str:
        if self.revoked_ms:
            return "revoked"
        if self.not_after_ms and now_ms >= self.not_after_ms:
            return "expired"
        return "retiring" if self.not_after_ms else "active"


@dataclass(frozen=True, slots=True)
class ManagedKey:
    name: str
    algorithm: str
    subject: str
    created_ms: int
    versions: tuple[Version, ...]

    def key_id(self, version: Version) -> str:
        return f"{self.name}.v{version.number}"

    def current(self, now_ms: int) -> Version | None:
        """The newest usable version: what new tokens and signatures should use."""
        usable = [v for v in self.versions if v.status(now_ms) in ("active", "retiring")]
        active = [v for v in usable if not v.not_after_ms]
        pick = active or usable
        return pick[-1] if pick else None

    def version(self, number: int) -> Version:
        for v in self.versions:
            if v.number == number:
                return v
        raise NotFound(f"key {self.name!r} has no version {number}")


@dataclass(frozen=True, slots=True)
class Made:
    """A new version and its generated material ("" when imported), to return once."""

    key: ManagedKey
    key_id: str
    secret: str = field(default="", repr=False)


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise InvalidArgument("a key name is 1 to 64 letters, digits, '-' or '_'")
    return name


def check_subject(subject: str) -> str:
    if not subject or len(subject) > MAX_SUBJECT or not subject.isprintable():
        raise InvalidArgument(f"a subject is 1 to {MAX_SUBJECT} printable characters")
    return subject


def create(name: str, algorithm: str, subject: str, import_pem: str, import_jwk: str, now_ms: int) -> Made:
    """A new key with its first version. The caller checks that the name is free."""
    check_name(name)
    if import_jwk and not algorithm:
        algorithm = _jwk_alg(import_jwk)
    if algorithm not in ALGORITHMS:
        raise InvalidArgument(f"unknown algorithm {algorithm!r} (one of {', '.join(ALGORITHMS)})")
    subject = check_subject(subject or name)
    key = ManagedKey(name, algorithm, subject, now_ms, ())
    return _add_version(key, import_pem, import_jwk, now_ms)


def rotate(key: ManagedKey, previous_valid_until_ms: int, import_pem: str, import_jwk: str, now_ms: int) -> Made:
    """A new version; the usable previous ones verify until ``previous_valid_until_ms`` (0: in an hour)."""
    until = previous_valid_until_ms or now_ms + DEFAULT_RETIRE_MS
    if until < now_ms:
        raise InvalidArgument("previous_valid_until_ms is in the past (give 0 for one hour, or a later time)")
    retired = tuple(
        replace(v, not_after_ms=min(until, v.not_after_ms) if v.not_after_ms else until)
        if not v.revoked_ms and v.status(now_ms) != "expired"
        else v
        for v in key.versions
    )
    return _add_version(replace(key, versions=retired), import_pem, import_jwk, now_ms)


def revoke(key: ManagedKey, number: int, now_ms: int) -> ManagedKey:
    """Revoke one version (``number``) or every version (0)."""
    if number:
        target = key.version(number)
        if target.revoked_ms:
            raise FailedPrecondition(f"{key.key_id(target)} is already revoked")
    versions = tuple(
        replace(v, revoked_ms=now_ms) if not v.revoked_ms and number in (0, v.number) else v
        for v in key.versions
    )
    return replace(key, versions=versions)


def _add_version(key: ManagedKey, import_pem: str, import_jwk: str, now_ms: int) -> Made:
    row = ALGORITHMS[key.algorithm]
    number = max((v.number for v in key.versions), default=0) + 1
    secret_text = ""
    if import_pem and import_jwk:
        raise InvalidArgument("give import_pem or import_jwk, not both")
    if import_pem or import_jwk:
        if row.family == HMAC:
            raise InvalidArgument(f"{key.algorithm} keys hold a shared secret, which authz generates; only public keys are imported")
        public = _import_pem(import_pem) if import_pem else _import_jwk(import_jwk, key.algorithm)
        version = Version(number, now_ms, public_pem=_pem(public))
    elif row.family == HMAC:
        secret = os.urandom(max(HMAC_SECRET_BYTES, row.min_secret_bytes))
        version = Version(number, now_ms, secret=secret)
        secret_text = b64e(secret)
    elif key.algorithm in GENERATED:
        private: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
        private = ed25519.Ed25519PrivateKey.generate() if row.family == OKP else ec.generate_private_key(ec.SECP256R1())
        version = Version(number, now_ms, public_pem=_pem(private.public_key()))
        secret_text = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
    else:
        raise InvalidArgument(
            f"authz generates {', '.join(GENERATED)} keys; import the public key of a {key.algorithm} key (import_pem or import_jwk)"
        )
    if version.public_pem:
        problem = row.key_problem(serialization.load_pem_public_key(version.public_pem.encode()))
        if problem:
            raise InvalidArgument(f"the key does not fit {key.algorithm}: {problem}")
    new = replace(key, versions=(*key.versions, version))
    return Made(new, new.key_id(version), secret_text)


def _pem(public: PublicKeyTypes) -> str:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _import_pem(text: str) -> PublicKeyTypes:
    if "PRIVATE KEY" in text:
        raise InvalidArgument("this is a private key; import the public key only")
    try:
        return serialization.load_pem_public_key(text.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidArgument("import_pem is not a PEM public key (SubjectPublicKeyInfo)") from None


def _one_jwk(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        raise InvalidArgument("import_jwk is not JSON") from None
    if isinstance(doc, dict) and "keys" in doc:
        keys = doc["keys"]
        if not isinstance(keys, list) or len(keys) != 1:
            raise InvalidArgument("a JWKS to import must hold exactly one key")
        doc = keys[0]
    if not isinstance(doc, dict):
        raise InvalidArgument("import_jwk is not a JWK (a JSON object)")
    private = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"} & set(doc)
    if private:
        raise InvalidArgument(f"this JWK holds private or secret material ({', '.join(sorted(private))}); import the public key only")
    return doc


def _jwk_alg(text: str) -> str:
    alg = _one_jwk(text).get("alg")
    if not isinstance(alg, str) or not alg:
        raise InvalidArgument("give the algorithm (the JWK has no alg)")
    return alg


def _import_jwk(text: str, algorithm: str) -> PublicKeyTypes:
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

    jwk = _one_jwk(text)
    alg = jwk.get("alg")
    if alg is not None and alg != algorithm and JWS_ALG.get(algorithm) != alg:
        raise InvalidArgument(f"the JWK says alg {alg!r}, the key is {algorithm}")
    parsers: dict[str, Any] = {"RSA": RSAAlgorithm, "EC": ECAlgorithm, "OKP": OKPAlgorithm}
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in parsers:
        raise InvalidArgument(f"unsupported JWK kty {kty!r} for a public key (RSA, EC, OKP)")
    try:
        key: Any = parsers[kty].from_jwk(json.dumps(jwk))
    except Exception:  # PyJWT raises several types for bad JWKs
        raise InvalidArgument(f"invalid {kty} JWK") from None
    if not isinstance(key, _PUBLIC_TYPES):
        raise InvalidArgument("import_jwk is not a public key")
    return cast("PublicKeyTypes", key)


def _public_types() -> tuple[type, ...]:
    from cryptography.hazmat.primitives.asymmetric import ed448, rsa

    return (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)


_PUBLIC_TYPES = _public_types()


def public_key(version: Version) -> Any:
    return serialization.load_pem_public_key(version.public_pem.encode())


def public_jwk(key: ManagedKey, version: Version) -> dict[str, Any]:
    """The public key of an asymmetric version as a JWK with kid, alg and use ({} for HMAC)."""
    if not version.public_pem:
        return {}
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

    family = ALGORITHMS[key.algorithm].family
    codec: Any = {OKP: OKPAlgorithm, EC: ECAlgorithm, RSA: RSAAlgorithm}[family]
    jwk: dict[str, Any] = codec.to_jwk(public_key(version), as_dict=True)
    jwk.update(kid=key.key_id(version), alg=JWS_ALG.get(key.algorithm, key.algorithm), use="sig")
    return jwk


def ring_key(key: ManagedKey, version: Version, where: str) -> Key:
    """The keyring view of one version: revoked and not_after as the methods check them."""
    material: Any = version.secret if version.secret else public_key(version)
    return Key(
        id=key.key_id(version),
        algorithm=key.algorithm,
        material=material,
        subject=key.subject,
        revoked=bool(version.revoked_ms),
        not_after_ms=version.not_after_ms or None,
        where=where,
        source="keystore",
    )
