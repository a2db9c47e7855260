"""What can go wrong with the keystore, by what the caller should do about it.

The admin API maps each class to a gRPC status (authz.server.admin_keys).
Messages never hold secret material: they name keys by name, id or version.
"""

from __future__ import annotations


class KeystoreError(Exception):
    """Base class; ``str(exc)`` is a message for people."""


class InvalidArgument(KeystoreError):
    """A bad name, algorithm, time or key material."""


class NotFound(KeystoreError):
    """No key, version or API key by that name or id."""


class AlreadyExists(KeystoreError):
    """The name is taken (in the keystore, or by a key of the keys file)."""


class FailedPrecondition(KeystoreError):
    """The change cannot apply to this object as it is (a keys-file key, a revoked version)."""


class Corrupt(KeystoreError):
    """The stored keystore cannot be read: bad JSON, wrong master key, tampered or truncated.

    The message names the file (or Redis key) and what is wrong.
    """
