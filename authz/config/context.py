"""What the compiler of one policy section may use."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from authz.config.source import Node

#: the keyring type (authz.keys.KeyRing); a parameter so that this low module
#: does not import the layer above it
RingT = TypeVar("RingT")


@dataclass
class CompileContext(Generic[RingT]):
    """The policy file's place, its keyring, and objects shared between sections.

    :param file: the policy file as the operator named it (for messages)
    :param base_dir: relative paths in the policy are relative to this directory
    :param keyring: verification keys and HMAC secrets (the policy's ``keys_file``)
    :param shared: objects a section compiler keeps across its configurations
    :param reads: every file path the policy named (``path``), in order: the policy's version
        covers their content, and the server watches them for changes
    :param keystore: the keystore (authz.keys.keystore.Keystore) when one is configured, else
        None: its keys join ``keyring`` (authz.keys.live), its API keys serve ``api_key`` methods
    """

    file: str
    base_dir: str
    keyring: RingT
    shared: dict[str, Any] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)
    keystore: Any = None

    def path(self, node: Node) -> str:
        """A file path from the policy, relative to the policy file's directory (recorded in ``reads``)."""
        value = node.str()
        path = value if os.path.isabs(value) else os.path.join(self.base_dir, value)
        if path not in self.reads:
            self.reads.append(path)
        return path
