"""The exceptions authz raises.

    AuthzError
    +-- ConfigError        a policy, key or list file is invalid (names file, line, field)
    +-- StoreError         the state store failed or timed out (wraps the backend's exception)

Decisions are never exceptions: a request that fails a check produces a Decision
with a reason code (see authz.decision). These exceptions are for operators'
mistakes and infrastructure faults only.
"""

from __future__ import annotations


class AuthzError(Exception):
    """Base of every exception authz raises on purpose."""


class ConfigError(AuthzError):
    """A configuration file is invalid. The message names the file, the line and the field.

    :param file: path of the offending file as the operator gave it
    :param line: 1-based line number, or 0 when the error concerns the whole file
    :param field: dotted path of the offending field (``routes[2].match.path``), or ""
    :param message: what is wrong, in a sentence
    """

    def __init__(self, file: str, line: int, field: str, message: str) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


class StoreError(AuthzError):
    """The state store could not apply a batch (unreachable, timed out, script error)."""
