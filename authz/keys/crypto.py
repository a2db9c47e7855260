"""Encryption at rest for the keystore: AES-256-GCM under rotatable master keys.

A master key is 32 random bytes, given in base64 (``openssl rand -base64 32``)
in a file or in ``AUTHZ_MASTER_KEY``, never on a command line. Several may be
given, each with an id (``new:BASE64,old:BASE64``): the first encrypts, all
decrypt, so a master key is rotated by putting a new one first, re-encrypting
(``Keystore.rotate_master``) and then dropping the old one. A single key
without an id has the id ``default``.

Two subkeys are derived from each master key with HKDF-SHA256, one for
AES-GCM and one for an HMAC over the whole document, so that encryption and
integrity never share a key. Every secret field is sealed with its place in
the document as associated data (a ciphertext moved to another key's field
does not open), and the document's MAC covers every field, sealed or not (a
revocation edited out of the file is detected, not obeyed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authz.keys.errors import Corrupt

MASTER_KEY_BYTES = 32
NONCE_BYTES = 12
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class MasterKey:
    id: str
    key: bytes = field(repr=False)
    aead: AESGCM = field(repr=False, compare=False, init=False)
    mac_key: bytes = field(repr=False, compare=False, init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "aead", AESGCM(_derive(self.key, b"authz keystore aes-256-gcm")))
        object.__setattr__(self, "mac_key", _derive(self.key, b"authz keystore document mac"))


def _derive(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


class MasterKeys:
    """The master keys in order: the first encrypts, every one decrypts."""

    __slots__ = ("_by_id", "primary")

    def __init__(self, keys: Iterable[MasterKey]) -> None:
        ordered = list(keys)
        if not ordered:
            raise ValueError("no master key given")
        self._by_id: dict[str, MasterKey] = {}
        for mk in ordered:
            if mk.id in self._by_id:
                raise ValueError(f"master key id {mk.id!r} is given twice")
            self._by_id[mk.id] = mk
        self.primary = ordered[0]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    def get(self, key_id: str) -> MasterKey | None:
        return self._by_id.get(key_id)

    def __repr__(self) -> str:
        return f"MasterKeys({', '.join(self._by_id)})"


def parse_master_keys(text: str) -> MasterKeys:
    """``BASE64`` or ``id:BASE64[,id:BASE64...]`` (commas or new lines between entries).

    :raises ValueError: saying what is wrong, never echoing key material
    """
    entries = [e.strip() for e in re.split(r"[,\n]", text) if e.strip()]
    if not entries:
        raise ValueError("no master key given")
    keys = []
    for n, entry in enumerate(entries, 1):
        key_id, sep, b64 = entry.rpartition(":")
        if not sep:
            if len(entries) > 1:
                raise ValueError(f"master key {n}: with several keys each needs an id (id:BASE64)")
            key_id, b64 = "default", entry
        if not _ID.fullmatch(key_id):
            raise ValueError(f"master key {n}: the id must be letters, digits, '.', '_', '-' (at most 64)")
        try:
            raw = base64.b64decode(b64.replace("-", "+").replace("_", "/") + "=" * (-len(b64) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"master key {key_id!r} is not valid base64") from None
        if len(raw) != MASTER_KEY_BYTES:
            raise ValueError(
                f"master key {key_id!r} is {len(raw)} bytes; it must be {MASTER_KEY_BYTES} random bytes (openssl rand -base64 32)"
            )
        keys.append(MasterKey(key_id, raw))
    return MasterKeys(keys)


def new_master_key() -> str:
    """A fresh master key in base64, as ``parse_master_keys`` reads it."""
    return base64.b64encode(os.urandom(MASTER_KEY_BYTES)).decode()


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64d(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise Corrupt(f"{what} is not a base64url string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise Corrupt(f"{what} is not base64url") from None


def seal(mk: MasterKey, plaintext: bytes, aad: str) -> dict[str, str]:
    """Encrypt one secret field; ``aad`` is its place in the document."""
    nonce = os.urandom(NONCE_BYTES)
    return {"mk": mk.id, "nonce": b64e(nonce), "ct": b64e(mk.aead.encrypt(nonce, plaintext, aad.encode()))}


def unseal(keys: MasterKeys, blob: Any, aad: str) -> bytes:
    """Decrypt a sealed field.

    :raises Corrupt: unknown master key id, or a ciphertext that does not authenticate
    """
    if not isinstance(blob, dict) or set(blob) != {"mk", "nonce", "ct"}:
        raise Corrupt(f"the sealed field of {aad} is not {{mk, nonce, ct}}")
    mk = _master(keys, blob["mk"], aad)
    nonce = b64d(blob["nonce"], f"the nonce of {aad}")
    if len(nonce) != NONCE_BYTES:
        raise Corrupt(f"the nonce of {aad} is not {NONCE_BYTES} bytes")
    try:
        return mk.aead.decrypt(nonce, b64d(blob["ct"], f"the ciphertext of {aad}"), aad.encode())
    except InvalidTag:
        raise Corrupt(f"the secret of {aad} does not decrypt under master key {mk.id!r}: tampered, or another key with that id") from None


def mac(mk: MasterKey, body: bytes) -> dict[str, str]:
    return {"mk": mk.id, "tag": b64e(hmac.new(mk.mac_key, body, hashlib.sha256).digest())}


def check_mac(keys: MasterKeys, blob: Any, body: bytes) -> str:
    """Check the document's MAC; return the master key id it was made under.

    :raises Corrupt: no MAC, an unknown master key, or a document changed since it was written
    """
    if not isinstance(blob, dict) or set(blob) != {"mk", "tag"}:
        raise Corrupt("the document has no integrity tag (mac: {mk, tag})")
    mk = _master(keys, blob["mk"], "the document")
    want = hmac.new(mk.mac_key, body, hashlib.sha256).digest()
    if not hmac.compare_digest(want, b64d(blob["tag"], "the integrity tag")):
        raise Corrupt(f"the integrity tag does not match under master key {mk.id!r}: the document was changed outside authz, or the master key is not the one it was written with")
    return mk.id


def _master(keys: MasterKeys, key_id: Any, what: str) -> MasterKey:
    mk = keys.get(key_id) if isinstance(key_id, str) else None
    if mk is None:
        raise Corrupt(
            f"{what} is sealed under master key {key_id!r}, which is not configured (configured: {', '.join(keys.ids)})"
        )
    return mk
