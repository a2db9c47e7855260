"""API keys: ``azk_<id>_<secret>``, stored as salted hashes.

The id (12 URL-safe characters) is the public part: keys are listed, rotated
and revoked by it, and a request's key is found by it in one dictionary
look-up. The secret is 32 random bytes (base64url, 43 characters); only
HMAC-SHA256(salt, secret) is stored, with a 16-byte random salt per key.
A 256-bit random secret cannot be guessed from its hash, so a fast hash is
enough (no password-hashing cost on the hot path), and the stored hash is
compared in constant time.

Both parts have a fixed length, so a key parses without ambiguity although
``_`` is in the URL-safe alphabet.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import string
from dataclasses import dataclass, field, replace

from authz.keys.errors import FailedPrecondition, InvalidArgument

PREFIX = "azk_"
ID_CHARS = 12
SECRET_BYTES = 32
SECRET_CHARS = 43
KEY_CHARS = len(PREFIX) + ID_CHARS + 1 + SECRET_CHARS
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_TIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_LABEL = 256
KEY_NOTICE = "This API key is shown once and never again: store it now."


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    owner: str
    tier: str
    created_ms: int
    not_after_ms: int = 0
    revoked_ms: int = 0
    salt: bytes = field(default=b"", repr=False)
    digest: bytes = field(default=b"", repr=False)
    #: replaced by a rotation: works until not_after_ms
    retiring: bool = False

    def status(self, now_ms: int) -> str:
        if self.revoked_ms:
            return "revoked"
        if self.not_after_ms and now_ms >= self.not_after_ms:
            return "expired"
        return "retiring" if self.retiring else "active"

    def matches(self, secret: bytes) -> bool:
        """Is this the key's secret? (constant time)"""
        return hmac.compare_digest(_digest(self.salt, secret), self.digest)


def _digest(salt: bytes, secret: bytes) -> bytes:
    return hmac.new(salt, secret, hashlib.sha256).digest()


def parse(text: str) -> tuple[str, bytes] | None:
    """(id, secret) of a well-formed key, None for anything else."""
    if len(text) != KEY_CHARS or not text.startswith(PREFIX) or text[len(PREFIX) + ID_CHARS] != "_":
        return None
    key_id = text[len(PREFIX) : len(PREFIX) + ID_CHARS]
    secret_text = text[len(PREFIX) + ID_CHARS + 1 :]
    if not _B64URL.fullmatch(key_id) or not _B64URL.fullmatch(secret_text):
        return None
    try:
        secret = base64.urlsafe_b64decode(secret_text + "=")
    except (binascii.Error, ValueError):
        return None
    if base64.urlsafe_b64encode(secret).rstrip(b"=").decode() != secret_text:
        return None  # one key, one spelling
    return key_id, secret


def check_fields(name: str, owner: str, tier: str) -> None:
    if not owner or len(owner) > MAX_LABEL or not owner.isprintable():
        raise InvalidArgument(f"an owner is 1 to {MAX_LABEL} printable characters (the subject of the requests the key authenticates)")
    if len(name) > MAX_LABEL or not name.isprintable():
        raise InvalidArgument(f"a name is at most {MAX_LABEL} printable characters")
    if tier and not _TIER.fullmatch(tier):
        raise InvalidArgument("a tier is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")


#: an id's characters: letters and digits only (71 bits in 12), so an id never starts with '-'
#: (a command line would read it as an option) and never holds the key's '_' separator
ID_ALPHABET = string.ascii_letters + string.digits


def _new_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_CHARS))


def new(name: str, owner: str, tier: str, expires_ms: int, now_ms: int, taken: set[str] | frozenset[str] = frozenset()) -> tuple[ApiKey, str]:
    """A new key and its full text (to return once)."""
    check_fields(name, owner, tier)
    if expires_ms and expires_ms <= now_ms:
        raise InvalidArgument("expires_ms is in the past (0: never)")
    key_id = _new_id()
    while key_id in taken:
        key_id = _new_id()
    secret = secrets.token_bytes(SECRET_BYTES)
    salt = os.urandom(16)
    record = ApiKey(key_id, name, owner, tier, now_ms, expires_ms, 0, salt, _digest(salt, secret))
    text = f"{PREFIX}{key_id}_{base64.urlsafe_b64encode(secret).rstrip(b'=').decode()}"
    return record, text


def retire(record: ApiKey, until_ms: int, now_ms: int) -> ApiKey:
    """The old key of a rotation: working until ``until_ms`` (or its own earlier expiry)."""
    if record.status(now_ms) in ("revoked", "expired"):
        raise FailedPrecondition(f"API key {record.id} is {record.status(now_ms)}; create a new key instead")
    if until_ms < now_ms:
        raise InvalidArgument("previous_valid_until_ms is in the past (give 0 for one hour, or a later time)")
    return replace(record, not_after_ms=min(until_ms, record.not_after_ms) if record.not_after_ms else until_ms, retiring=True)


def revoke(record: ApiKey, now_ms: int) -> ApiKey:
    if record.revoked_ms:
        raise FailedPrecondition(f"API key {record.id} is already revoked")
    return replace(record, revoked_ms=now_ms)
