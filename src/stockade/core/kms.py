"""The key management service interface (create, wrap, unwrap, destroy key-encryption keys)
and `LocalKMS`, which keeps the keys in the local `KeyStore` and wraps with AES-256-GCM.
"""

from __future__ import annotations

import os
import secrets
import struct
from abc import ABC, abstractmethod
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stockade.core import clock
from stockade.core.errors import Conflict, InvalidInput, NotFound, StockadeError
from stockade.core.keys import KeyStore, validate_key_id

__all__ = [
    "KMS",
    "MAX_DATA_KEY_BYTES",
    "KeyDestroyed",
    "LocalKMS",
    "UnwrapFailed",
]

MAX_DATA_KEY_BYTES = 4096

_WRAP_VERSION = 1
_NONCE_BYTES = 12
_TAG_BYTES = 16
_WRAP_CONTEXT = b"stockade.kms.local/1"


class KeyDestroyed(StockadeError):
    """The key-encryption key was destroyed: whatever was wrapped under it is gone for good."""

    code = "key_destroyed"
    http_status = 410
    exit_code = 1


class UnwrapFailed(StockadeError):
    """A wrapped key did not authenticate: altered, or wrapped under another key or context."""

    code = "unwrap_failed"
    http_status = 422
    exit_code = 1


class KMS(ABC):
    """Holds key-encryption keys and wraps data keys under them; the keys never leave it.

    `associated_data` is bound into every wrap: unwrapping with other associated data fails.
    """

    @property
    @abstractmethod
    def name(self) -> str:
        """Short provider name recorded in envelopes and key records, e.g. `local`."""

    @abstractmethod
    def create_kek(self, key_id: str) -> None:
        """Create a new key-encryption key; `Conflict` if the id is taken (or was ever used)."""

    @abstractmethod
    def wrap(self, key_id: str, data_key: bytes, associated_data: bytes) -> bytes:
        """Encrypt `data_key` under the key-encryption key `key_id`."""

    @abstractmethod
    def unwrap(self, key_id: str, wrapped: bytes, associated_data: bytes) -> bytes:
        """The data key; `KeyDestroyed`, `NotFound` or `UnwrapFailed` otherwise."""

    @abstractmethod
    def destroy_kek(self, key_id: str) -> None:
        """Destroy the key for good: every key wrapped under it becomes unreadable."""

    @abstractmethod
    def has_kek(self, key_id: str) -> bool:
        """Whether a live (not destroyed) key-encryption key of this id exists."""


class LocalKMS(KMS):
    """Key-encryption keys as files in a `KeyStore`; a destroyed key leaves a tombstone.

    Wrapped form: version (1 byte) | nonce (12) | AES-256-GCM ciphertext and tag. The key id
    is bound into the associated data, so a key wrapped under one id never unwraps under
    another. Tombstones (`destroyed/<id>.kek`, holding the time of destruction) let unwrap
    say "destroyed" rather than "not found", and stop an id from ever naming a new key.
    """

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    @property
    def name(self) -> str:
        return "local"

    # -- tombstones -------------------------------------------------------------------
    def _tombstone(self, key_id: str) -> Path:
        return self.keys.root / "destroyed" / f"{validate_key_id(key_id)}.kek"

    def destroyed_at(self, key_id: str) -> datetime | None:
        """When the key was destroyed, or None if it never was."""
        path = self._tombstone(key_id)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            # An unreadable timestamp still marks the key destroyed.
            return datetime.fromtimestamp(path.stat().st_mtime).astimezone()

    def _refuse_destroyed(self, key_id: str) -> None:
        moment = self.destroyed_at(key_id)
        if moment is not None:
            raise KeyDestroyed(
                f"key-encryption key {key_id!r} was destroyed at {clock.format_time(moment)}; "
                "data encrypted under it can no longer be decrypted"
            )

    # -- the interface ----------------------------------------------------------------
    def create_kek(self, key_id: str) -> None:
        if self.destroyed_at(key_id) is not None:
            raise Conflict(
                f"key id {key_id!r} belonged to a destroyed key-encryption key; "
                "key ids are never reused"
            )
        self.keys.create_kek(key_id)

    def has_kek(self, key_id: str) -> bool:
        return self.destroyed_at(key_id) is None and self.keys.has_kek(key_id)

    def wrap(self, key_id: str, data_key: bytes, associated_data: bytes) -> bytes:
        if not 1 <= len(data_key) <= MAX_DATA_KEY_BYTES:
            raise InvalidInput(f"a data key must be 1 to {MAX_DATA_KEY_BYTES} bytes")
        self._refuse_destroyed(key_id)
        kek = AESGCM(self.keys.kek(key_id))
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = kek.encrypt(nonce, bytes(data_key), _aad(key_id, associated_data))
        return bytes([_WRAP_VERSION]) + nonce + sealed

    def unwrap(self, key_id: str, wrapped: bytes, associated_data: bytes) -> bytes:
        self._refuse_destroyed(key_id)
        material = self.keys.kek(key_id)
        if len(wrapped) < 1 + _NONCE_BYTES + _TAG_BYTES + 1 or wrapped[0] != _WRAP_VERSION:
            raise UnwrapFailed(f"wrapped key for {key_id!r} is malformed")
        nonce = bytes(wrapped[1 : 1 + _NONCE_BYTES])
        try:
            return AESGCM(material).decrypt(
                nonce, bytes(wrapped[1 + _NONCE_BYTES :]), _aad(key_id, associated_data)
            )
        except InvalidTag:
            raise UnwrapFailed(
                f"wrapped key does not authenticate under key-encryption key {key_id!r}: "
                "it was altered, or wrapped under another key or for another object"
            ) from None

    def destroy_kek(self, key_id: str) -> None:
        self._refuse_destroyed(key_id)
        if not self.keys.has_kek(key_id):
            raise NotFound(f"key-encryption key {key_id!r} not found in {self.keys.root}")
        if self._has_signing_key(key_id):
            # KeyStore.destroy removes every file of an id, signing key included.
            raise Conflict(
                f"key id {key_id!r} names both a signing key and a key-encryption key; "
                "refusing to destroy both"
            )
        # Tombstone first: if shredding is interrupted the key already counts as destroyed.
        self._write_tombstone(key_id)
        self.keys.destroy(key_id)

    # -- internals --------------------------------------------------------------------
    def _has_signing_key(self, key_id: str) -> bool:
        try:
            self.keys.public_key(key_id)
        except NotFound:
            return False
        return True

    def _write_tombstone(self, key_id: str) -> None:
        path = self._tombstone(key_id)
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(path.parent, 0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(clock.format_time(clock.now()) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def _aad(key_id: str, associated_data: bytes) -> bytes:
    encoded = key_id.encode("ascii")
    return _WRAP_CONTEXT + struct.pack(">B", len(encoded)) + encoded + bytes(associated_data)
