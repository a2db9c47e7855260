"""The live keyring: the keys file's keys and the keystore's, behind one ``KeyRing``.

The policy compiles against this ring when a keystore is configured, so
every method that takes keys from the keyring (JWT ``keyring`` / ``keystore``
key sources, ``signature`` profiles, ``kong_hmac``) sees keystore keys as
they are created, rotated and revoked, without a policy reload.

The merged view is rebuilt when the keystore's ``generation`` moved, on the
first look after the change, and replaced in one assignment; each rebuild
takes a new ``version``, so caches keyed on (ring, version) drop what they
derived from the old keys. A version that is revoked or past its
``not_after`` stays in the ring with ``revoked`` / ``not_after_ms`` set, so
the methods refuse it as revoked (``jwt.key_revoked``...), not as unknown.

The keys file wins a clash of key ids (the keystore refuses names that would
clash with the keys file it knows, but a keys file edited later may add one);
the clash is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from authz.keys import Key, KeyRing, next_version

if TYPE_CHECKING:
    from authz.keys.keystore import Keystore

log = logging.getLogger("authz.keys")


class LiveKeyRing(KeyRing):
    """A ``KeyRing`` whose contents follow a keystore."""

    __slots__ = ("file_ring", "keystore", "_seen", "_clashes")

    def __init__(self, file_ring: KeyRing, keystore: Keystore) -> None:
        super().__init__({key.id: key for key in file_ring}, file=file_ring.file)
        self.file_ring = file_ring
        self.keystore = keystore
        self._seen = -1
        self._clashes: frozenset[str] = frozenset()
        self._fresh()

    def _fresh(self) -> None:
        generation = self.keystore.generation
        if generation == self._seen:
            return
        merged = {key.id: key for key in self.file_ring}
        clashes = set()
        for kid, key in self.keystore.ring_keys().items():
            if kid in merged:
                clashes.add(kid)
                continue
            merged[kid] = key
        if clashes - self._clashes:
            log.warning("keystore key ids also in the keys file %s (the file's keys apply): %s", self.file, ", ".join(sorted(clashes)))
        self._clashes = frozenset(clashes)
        self._keys = merged  # one assignment: a reader sees the old ring or the new one
        self._version = next_version()
        self._seen = generation

    @property
    def version(self) -> int:
        self._fresh()
        return self._version

    def get(self, key_id: str) -> Key | None:
        if self.keystore.generation != self._seen:
            self._fresh()
        return self._keys.get(key_id)

    def __iter__(self) -> Iterator[Key]:
        self._fresh()
        return iter(list(self._keys.values()))

    def __len__(self) -> int:
        self._fresh()
        return len(self._keys)
