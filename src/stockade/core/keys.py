"""The local key store: signing keys and key-encryption keys as files under `STOCKADE_HOME/keys`.

Key material never enters the database or a log. Files are written atomically with mode 0600
in a 0700 directory; destroying a key overwrites and removes its file.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from stockade.core.errors import Conflict, InvalidInput, NotFound
from stockade.core.files import write_atomic

__all__ = [
    "KEK_BYTES",
    "KeyInfo",
    "KeyStore",
    "PrivateSigningKey",
    "PublicSigningKey",
    "SigningAlgorithm",
    "public_pem",
    "validate_key_id",
]

SigningAlgorithm = Literal["ed25519", "ecdsa-p256"]
PrivateSigningKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicSigningKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
KEK_BYTES = 32  # AES-256

_KEY_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")


def validate_key_id(key_id: str) -> str:
    """Key ids become file names: lower-case letters, digits, `.`, `_`, `-`; at most 100."""
    if not _KEY_ID.fullmatch(key_id) or ".." in key_id:
        raise InvalidInput(
            f"invalid key id {key_id!r}: use lower-case letters, digits, '.', '_' or '-' "
            "(at most 100 characters, starting with a letter or digit)"
        )
    return key_id


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    kind: Literal["signing", "kek"]
    algorithm: str
    path: Path


class KeyStore:
    """Files: `signing/<id>.pem` (PKCS#8), `signing/<id>.pub.pem`, `kek/<id>.key` (32 bytes)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- paths ------------------------------------------------------------------------
    def _dir(self, kind: str) -> Path:
        folder = self.root / kind
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o700)
            os.chmod(folder, 0o700)
        return folder

    def _signing_path(self, key_id: str) -> Path:
        return self._dir("signing") / f"{validate_key_id(key_id)}.pem"

    def _public_path(self, key_id: str) -> Path:
        return self._dir("signing") / f"{validate_key_id(key_id)}.pub.pem"

    def _kek_path(self, key_id: str) -> Path:
        return self._dir("kek") / f"{validate_key_id(key_id)}.key"

    # -- signing keys -----------------------------------------------------------------
    def create_signing_key(
        self, key_id: str, algorithm: SigningAlgorithm = "ed25519"
    ) -> PrivateSigningKey:
        path = self._signing_path(key_id)
        if path.exists():
            raise Conflict(f"signing key {key_id!r} already exists")
        key: PrivateSigningKey
        if algorithm == "ed25519":
            key = ed25519.Ed25519PrivateKey.generate()
        elif algorithm == "ecdsa-p256":
            key = ec.generate_private_key(ec.SECP256R1())
        else:
            raise InvalidInput(f"unknown signing algorithm {algorithm!r}")
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(path, pem)
        write_atomic(self._public_path(key_id), public_pem(key.public_key()), mode=0o644)
        return key

    def signing_key(self, key_id: str) -> PrivateSigningKey:
        path = self._signing_path(key_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"signing key {key_id!r} not found in {self.root}") from None
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise InvalidInput(f"signing key {key_id!r} is of an unsupported type")
        return key

    def ensure_signing_key(
        self, key_id: str, algorithm: SigningAlgorithm = "ed25519"
    ) -> PrivateSigningKey:
        """The key, created on first use."""
        try:
            return self.signing_key(key_id)
        except NotFound:
            try:
                return self.create_signing_key(key_id, algorithm)
            except Conflict:  # created concurrently by another process
                return self.signing_key(key_id)

    def public_key(self, key_id: str) -> PublicSigningKey:
        path = self._public_path(key_id)
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except FileNotFoundError:
            raise NotFound(f"public key {key_id!r} not found in {self.root}") from None
        if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
            raise InvalidInput(f"public key {key_id!r} is of an unsupported type")
        return key

    # -- key-encryption keys ----------------------------------------------------------
    def create_kek(self, key_id: str) -> None:
        path = self._kek_path(key_id)
        if path.exists():
            raise Conflict(f"key-encryption key {key_id!r} already exists")
        write_atomic(path, secrets.token_bytes(KEK_BYTES))

    def kek(self, key_id: str) -> bytes:
        try:
            material = self._kek_path(key_id).read_bytes()
        except FileNotFoundError:
            raise NotFound(
                f"key-encryption key {key_id!r} not found (never created, or destroyed)"
            ) from None
        if len(material) != KEK_BYTES:
            raise InvalidInput(f"key-encryption key {key_id!r} is corrupt")
        return material

    def has_kek(self, key_id: str) -> bool:
        return self._kek_path(key_id).is_file()

    # -- both -------------------------------------------------------------------------
    def destroy(self, key_id: str) -> list[Path]:
        """Overwrite and remove every file of the key; returns the paths removed."""
        removed = []
        for path in (self._kek_path(key_id), self._signing_path(key_id), self._public_path(key_id)):
            if path.is_file():
                size = path.stat().st_size
                with open(path, "r+b") as handle:
                    handle.write(secrets.token_bytes(size))
                    handle.flush()
                    os.fsync(handle.fileno())
                path.unlink()
                removed.append(path)
        if not removed:
            raise NotFound(f"key {key_id!r} not found in {self.root}")
        return removed

    def list(self) -> list[KeyInfo]:
        found: list[KeyInfo] = []
        signing = self.root / "signing"
        if signing.is_dir():
            for path in sorted(signing.glob("*.pem")):
                if path.name.endswith(".pub.pem"):
                    continue
                key = self.signing_key(path.stem)
                algorithm = (
                    "ed25519" if isinstance(key, ed25519.Ed25519PrivateKey) else "ecdsa-p256"
                )
                found.append(KeyInfo(path.stem, "signing", algorithm, path))
        kek = self.root / "kek"
        if kek.is_dir():
            found.extend(
                KeyInfo(path.stem, "kek", "aes-256-gcm", path) for path in sorted(kek.glob("*.key"))
            )
        return found


def public_pem(key: PublicSigningKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
