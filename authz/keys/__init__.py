"""The keyring: verification keys and HMAC secrets by key id.

One key is bound to exactly one algorithm. The key found by its id decides
how a signature or token is verified, never the request, which closes the
algorithm-confusion family of attacks (an RSA public key used as an HMAC
secret, ``alg: none``, an ECDSA key offered for RSA...). The loader checks
that the material fits the algorithm (key type, curve, RSA size) when the
file is read, so nothing on the hot path parses keys.

Keys file, by example::

    keys:
      - id: bot-ed25519
        algorithm: ed25519           # RFC 9421 name, or a JWS name (EdDSA, RS256...)
        public_key: |                # PEM, or public_key_file: path, or jwk: {...}
          -----BEGIN PUBLIC KEY-----
          ...
        subject: partner-bot         # the identity the key proves (default: the id)
      - id: bot-hmac
        algorithm: hmac-sha256
        secret: c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA   # base64/base64url, or secret_file: path
      - id: old
        algorithm: RS256
        public_key_file: keys/old.pem
        status: revoked              # active (default) | revoked
        not_after: "2027-01-01T00:00:00Z"

Keys can also be managed at run time, in the keystore (``authz.keys.keystore``,
docs/keys.md): encrypted at rest, shared by every instance, rotated and
revoked through the admin API. ``authz.keys.live.LiveKeyRing`` merges the two
sources behind this module's ``KeyRing`` interface.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from authz.algorithms import ALGORITHMS, HMAC
from authz.config import source
from authz.config.source import Node

# Text that means "this is a public key", never an HMAC secret.
_KEY_MARKERS = (b"-----BEGIN", b"ssh-rsa", b"ssh-ed25519", b"ecdsa-sha2-", b'"kty"')


@dataclass(frozen=True, slots=True)
class Key:
    id: str
    algorithm: str
    #: HMAC secret bytes, or a ``cryptography`` public key checked against ``algorithm``
    material: Any
    subject: str
    revoked: bool = False
    not_after_ms: int | None = None
    #: "keys.yaml:12", for messages
    where: str = ""
    #: "file" (the policy's keys file) or "keystore" (managed at run time)
    source: str = "file"

    @property
    def family(self) -> str:
        return ALGORITHMS[self.algorithm].family

    def usable(self, now_ms: int) -> bool:
        """Not revoked and not past ``not_after``."""
        return not self.revoked and (self.not_after_ms is None or now_ms < self.not_after_ms)


class KeyRing:
    """Keys by id. Immutable; a reload builds a new ring with a new ``version``.

    ``version`` is unique across every ring of the process: a cache keyed on
    (ring, version) drops its entries when the keys it saw change, whichever
    ring object holds them (``authz.keys.live`` replaces its contents in place).
    """

    __slots__ = ("_keys", "_version", "file")

    _versions = 0

    def __init__(self, keys: dict[str, Key], file: str = "") -> None:
        self._keys = dict(keys)
        self.file = file
        self._version = next_version()

    @property
    def version(self) -> int:
        return self._version

    def get(self, key_id: str) -> Key | None:
        return self._keys.get(key_id)

    def __iter__(self) -> Iterator[Key]:
        return iter(self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)


def next_version() -> int:
    """A keyring version never used before in this process."""
    KeyRing._versions += 1
    return KeyRing._versions


EMPTY_KEYRING = KeyRing({})


def load_keys(path: str) -> KeyRing:
    """Read a keys file. Every problem is a ConfigError naming file, line and field."""
    root = source.load(path)
    root.keys(allowed={"keys"}, required={"keys"})
    base_dir = os.path.dirname(os.path.abspath(path))
    keys: dict[str, Key] = {}
    for node in root.get("keys").items():
        key = _key(node, base_dir)
        if key.id in keys:
            node.get("id").error(f"duplicate key id {key.id!r} (first at {keys[key.id].where})")
        keys[key.id] = key
    return KeyRing(keys, file=path)


def _key(node: Node, base_dir: str) -> Key:
    material_keys = {"public_key", "public_key_file", "jwk", "secret", "secret_file"}
    node.keys(
        allowed={"id", "algorithm", "subject", "status", "not_after", *material_keys},
        required={"id", "algorithm"},
    )
    kid = node.get("id").str()
    if len(kid) > 256 or not kid.isprintable():
        node.get("id").error("a key id is at most 256 printable characters")
    alg_node = node.get("algorithm")
    algorithm = alg_node.str(choices=set(ALGORITHMS))
    row = ALGORITHMS[algorithm]
    given = [k for k in ("public_key", "public_key_file", "jwk", "secret", "secret_file") if node.has(k)]
    if len(given) != 1:
        node.error(f"give exactly one of {', '.join(sorted(material_keys))}")
    which = given[0]
    mnode = node.get(which)

    if row.family == HMAC:
        if which not in ("secret", "secret_file", "jwk"):
            mnode.error(f"{algorithm} needs a shared secret (secret, secret_file or an oct jwk), not {which}")
        material: Any = _secret(mnode, which, base_dir)
        if any(marker in material for marker in _KEY_MARKERS):
            mnode.error("this secret looks like public key text; an HMAC secret must be random bytes")
    else:
        if which in ("secret", "secret_file"):
            mnode.error(f"{algorithm} needs a public key (public_key, public_key_file or jwk), not a secret")
        material = _public_key(mnode, which, base_dir)
    problem = row.key_problem(material)
    if problem:
        mnode.error(problem)

    status = node.get("status", "active").str(choices={"active", "revoked"})
    not_after_ms = None
    if node.has("not_after"):
        na = node.get("not_after")
        raw = na.value
        if isinstance(raw, datetime):
            stamp = raw
        else:
            try:
                stamp = datetime.fromisoformat(na.str().replace("Z", "+00:00"))
            except ValueError:
                na.error(f"expected an ISO 8601 time like 2027-01-01T00:00:00Z; got {raw!r}")
        if stamp.tzinfo is None:
            na.error("give a time zone (Z for UTC)")
        not_after_ms = int(stamp.timestamp() * 1000)
    subject = node.get("subject", kid).str()
    return Key(
        id=kid,
        algorithm=algorithm,
        material=material,
        subject=subject,
        revoked=status == "revoked",
        not_after_ms=not_after_ms,
        where=f"{node.file}:{node.line}",
    )


def _read(mnode: Node, base_dir: str) -> bytes:
    rel = mnode.str()
    path = rel if os.path.isabs(rel) else os.path.join(base_dir, rel)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        mnode.error(f"cannot read {rel}: {exc.strerror or exc}")


def _secret(mnode: Node, which: str, base_dir: str) -> bytes:
    if which == "secret_file":
        return _read(mnode, base_dir)
    if which == "jwk":
        jwk = mnode.mapping()
        if jwk.get("kty") != "oct" or not isinstance(jwk.get("k"), str):
            mnode.error("an HMAC jwk needs kty: oct and k")
        text = jwk["k"]
    else:
        text = mnode.str()
    try:
        padded = text + "=" * (-len(text) % 4)
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        mnode.error("not valid base64 / base64url")


def _public_key(mnode: Node, which: str, base_dir: str) -> PublicKeyTypes:
    if which == "jwk":
        return _jwk_public(mnode)
    data = _read(mnode, base_dir) if which == "public_key_file" else mnode.str().encode()
    if b"PRIVATE KEY" in data:
        mnode.error("this is a private key; give the public key only")
    try:
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        pass
    try:
        return serialization.load_ssh_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        mnode.error("not a PEM public key (SubjectPublicKeyInfo) or an OpenSSH public key")


def _jwk_public(mnode: Node) -> PublicKeyTypes:
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

    jwk = mnode.mapping()
    if "d" in jwk:
        mnode.error("this jwk holds a private key ('d'); give the public key only")
    text = json.dumps(dict(jwk))
    parsers = {"RSA": RSAAlgorithm, "EC": ECAlgorithm, "OKP": OKPAlgorithm}
    kty = jwk.get("kty")
    if kty not in parsers:
        mnode.error(f"unsupported jwk kty {kty!r} for a public key (RSA, EC, OKP)")
    try:
        return parsers[kty].from_jwk(text)  # type: ignore[attr-defined,no-any-return]
    except Exception as exc:  # PyJWT raises several types for bad JWKs
        mnode.error(f"invalid {kty} jwk: {exc}")
