"""Envelope encryption: each object gets a fresh AES-256 data key, wrapped by a KMS key, and
is sealed in authenticated, streamed chunks; the format, its header and every error live here.

Layout: header | chunk 0 | chunk 1 | ... | chunk n (the final one). Header, big-endian:
magic `STOCKENV` | version u8 | KMS name (u8 length, ASCII) | KEK id (u8 length, ASCII) |
chunk size u32 | base nonce (12 bytes) | wrapped data key (u16 length, bytes).
Each chunk is AES-256-GCM ciphertext of `chunk size` plaintext bytes (the final one: 0 to
`chunk size`) followed by its 16-byte tag. Chunk i uses the base nonce XOR i (a 64-bit
counter in its last 8 bytes) and the associated data
SHA-256(header) | SHA-256(caller's associated data) | i (u64) | final flag (u8),
so header edits, reordering, truncation, extension and splicing from another envelope all
fail authentication. The data key is wrapped with the header fields before it as associated
data, so it is bound to this envelope's nonce and chunk size.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import struct
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stockade.core.errors import InvalidInput, NotFound, StockadeError
from stockade.core.files import atomic_output
from stockade.core.kms import KMS, KeyDestroyed, UnwrapFailed

__all__ = [
    "DATA_KEY_BYTES",
    "DEFAULT_CHUNK_SIZE",
    "MAGIC",
    "MAX_CHUNK_SIZE",
    "NONCE_BYTES",
    "TAG_BYTES",
    "VERSION",
    "DecryptionFailed",
    "EnvelopeHeader",
    "decrypt_bytes",
    "decrypt_file",
    "decrypt_stream",
    "encrypt_bytes",
    "encrypt_file",
    "encrypt_stream",
    "read_header",
]

MAGIC = b"STOCKENV"
VERSION = 1
DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 64 << 20
DATA_KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_MAX_WRAPPED_BYTES = 4096
_MAX_COUNTER = (1 << 64) - 1
_CHUNK_AAD = struct.Struct(">QB")  # chunk counter, final flag


class DecryptionFailed(StockadeError):
    """An envelope could not be opened: not an envelope, altered, truncated, or its key gone."""

    code = "decryption_failed"
    http_status = 422
    exit_code = 1


@dataclass(frozen=True)
class EnvelopeHeader:
    """The authenticated header at the start of every envelope."""

    version: int
    kms: str
    kek_id: str
    chunk_size: int
    nonce: bytes
    wrapped_key: bytes

    def _wrap_context(self) -> bytes:
        """Every header field before the wrapped key: the associated data of the wrap."""
        kms = self.kms.encode("ascii")
        kek = self.kek_id.encode("ascii")
        return b"".join(
            [
                MAGIC,
                struct.pack(">B", self.version),
                struct.pack(">B", len(kms)),
                kms,
                struct.pack(">B", len(kek)),
                kek,
                struct.pack(">I", self.chunk_size),
                self.nonce,
            ]
        )

    def to_bytes(self) -> bytes:
        return self._wrap_context() + struct.pack(">H", len(self.wrapped_key)) + self.wrapped_key

    @property
    def length(self) -> int:
        """Size of the encoded header in bytes (where chunk 0 starts)."""
        return len(self.to_bytes())


# -- encryption ---------------------------------------------------------------------------


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    kms: KMS,
    kek_id: str,
    *,
    associated_data: bytes = b"",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> EnvelopeHeader:
    """Read `src` to its end and write its envelope to `dst`; returns the header written."""
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise InvalidInput(f"chunk size must be 1 to {MAX_CHUNK_SIZE} bytes, not {chunk_size}")
    kms_name = kms.name
    if not _printable(kms_name, 64):
        raise InvalidInput(f"KMS name {kms_name!r} must be 1 to 64 printable ASCII characters")
    if not _printable(kek_id, 255):
        raise InvalidInput(f"key id {kek_id!r} must be 1 to 255 printable ASCII characters")
    data_key = AESGCM.generate_key(bit_length=8 * DATA_KEY_BYTES)
    unsealed = EnvelopeHeader(
        VERSION, kms_name, kek_id, chunk_size, secrets.token_bytes(NONCE_BYTES), b""
    )
    wrapped = kms.wrap(kek_id, data_key, unsealed._wrap_context())
    if not 1 <= len(wrapped) <= _MAX_WRAPPED_BYTES:
        raise InvalidInput(f"KMS {kms_name!r} returned a wrapped key of {len(wrapped)} bytes")
    header = EnvelopeHeader(VERSION, kms_name, kek_id, chunk_size, unsealed.nonce, bytes(wrapped))
    encoded = header.to_bytes()
    dst.write(encoded)

    aead = AESGCM(data_key)
    aad = _ChunkAssociatedData(encoded, associated_data)
    base = int.from_bytes(header.nonce, "big")
    # One look-ahead byte tells whether the chunk just read is the last one.
    plain = bytearray(chunk_size + 1)
    sealed = bytearray(chunk_size + TAG_BYTES)
    plain_view, sealed_view = memoryview(plain), memoryview(sealed)
    have = _read_full(src, plain_view)
    counter = 0
    while True:
        final = have <= chunk_size
        size = have if final else chunk_size
        aead.encrypt_into(
            _chunk_nonce(base, counter),
            plain_view[:size],
            aad.for_chunk(counter, final),
            sealed_view[: size + TAG_BYTES],
        )
        dst.write(sealed_view[: size + TAG_BYTES])
        if final:
            return header
        if counter == _MAX_COUNTER:
            raise InvalidInput("input too long for one envelope (2**64 chunks)")
        counter += 1
        plain[0] = plain[chunk_size]
        have = 1 + _read_full(src, plain_view[1:])


def encrypt_bytes(
    data: bytes,
    kms: KMS,
    kek_id: str,
    *,
    associated_data: bytes = b"",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> bytes:
    out = io.BytesIO()
    encrypt_stream(
        io.BytesIO(data),
        out,
        kms,
        kek_id,
        associated_data=associated_data,
        chunk_size=chunk_size,
    )
    return out.getvalue()


def encrypt_file(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    kms: KMS,
    kek_id: str,
    *,
    associated_data: bytes = b"",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> EnvelopeHeader:
    """Encrypt a file; `dst_path` appears (mode 0600) only once the whole envelope is written."""
    with _open_input(src_path) as src, atomic_output(dst_path) as dst:
        return encrypt_stream(
            src, dst, kms, kek_id, associated_data=associated_data, chunk_size=chunk_size
        )


# -- decryption ---------------------------------------------------------------------------


def read_header(source: str | os.PathLike[str] | BinaryIO) -> EnvelopeHeader:
    """The header of an envelope file or stream (a stream is left just after it)."""
    if isinstance(source, str | os.PathLike):
        with _open_input(source) as handle:
            return _parse_header(handle)
    return _parse_header(source)


def decrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    kms: KMS,
    *,
    associated_data: bytes = b"",
) -> EnvelopeHeader:
    """Authenticate and decrypt the envelope in `src` into `dst`, chunk by chunk.

    Only authenticated plaintext is written, but a failure at chunk N leaves chunks before
    it in `dst`: discard `dst` on `DecryptionFailed` (`decrypt_file` does).
    """
    header = _parse_header(src)
    if header.kms != kms.name:
        raise DecryptionFailed(
            f"the envelope's data key is wrapped by KMS {header.kms!r}, not {kms.name!r}"
        )
    data_key = _unwrap(kms, header)
    if len(data_key) != DATA_KEY_BYTES:
        raise DecryptionFailed("the unwrapped data key has the wrong length")
    aead = AESGCM(data_key)
    aad = _ChunkAssociatedData(header.to_bytes(), associated_data)
    base = int.from_bytes(header.nonce, "big")
    chunk_size = header.chunk_size
    full = chunk_size + TAG_BYTES
    sealed = bytearray(full + 1)
    plain = bytearray(chunk_size)
    sealed_view, plain_view = memoryview(sealed), memoryview(plain)
    have = _read_full(src, sealed_view)
    counter = 0
    while True:
        final = have <= full
        size = have if final else full
        if size < TAG_BYTES:
            if counter == 0 and size == 0:
                raise DecryptionFailed("the envelope was truncated: no data after its header")
            raise DecryptionFailed(f"the ciphertext was truncated at chunk {counter}")
        try:
            aead.decrypt_into(
                _chunk_nonce(base, counter),
                sealed_view[:size],
                aad.for_chunk(counter, final),
                plain_view[: size - TAG_BYTES],
            )
        except InvalidTag:
            raise DecryptionFailed(_altered(counter)) from None
        dst.write(plain_view[: size - TAG_BYTES])
        if final:
            return header
        if counter == _MAX_COUNTER:
            raise DecryptionFailed("the envelope has more than 2**64 chunks")
        counter += 1
        sealed[0] = sealed[full]
        have = 1 + _read_full(src, sealed_view[1:])


def decrypt_bytes(blob: bytes, kms: KMS, *, associated_data: bytes = b"") -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(blob), out, kms, associated_data=associated_data)
    return out.getvalue()


def decrypt_file(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    kms: KMS,
    *,
    associated_data: bytes = b"",
) -> EnvelopeHeader:
    """Decrypt a file; `dst_path` (mode 0600) appears only if every chunk authenticated."""
    with _open_input(src_path) as src, atomic_output(dst_path) as dst:
        return decrypt_stream(src, dst, kms, associated_data=associated_data)


# -- internals ----------------------------------------------------------------------------


class _ChunkAssociatedData:
    """SHA-256(header) | SHA-256(caller data) | counter | final, built without re-hashing."""

    def __init__(self, header: bytes, associated_data: bytes) -> None:
        self._prefix = (
            hashlib.sha256(header).digest() + hashlib.sha256(bytes(associated_data)).digest()
        )

    def for_chunk(self, counter: int, final: bool) -> bytes:
        return self._prefix + _CHUNK_AAD.pack(counter, 1 if final else 0)


def _chunk_nonce(base: int, counter: int) -> bytes:
    # The counter occupies the low 64 bits; XOR keeps nonces distinct for 2**64 chunks.
    return (base ^ counter).to_bytes(NONCE_BYTES, "big")


def _altered(counter: int) -> str:
    if counter == 0:
        return (
            "the ciphertext was altered or truncated at chunk 0 "
            "(or its header was altered, or the associated data does not match)"
        )
    return f"the ciphertext was altered or truncated at chunk {counter}"


def _read_full(src: BinaryIO, view: memoryview) -> int:
    """Fill `view` from `src` unless the stream ends first; returns the bytes read."""
    total = 0
    wanted = len(view)
    readinto = getattr(src, "readinto", None)
    while total < wanted:
        if readinto is not None:
            got = readinto(view[total:])
        else:
            data = src.read(wanted - total)
            got = len(data)
            view[total : total + got] = data
        if not got:
            break
        total += got
    return total


def _read_exact(src: BinaryIO, size: int, what: str) -> bytes:
    buffer = bytearray(size)
    if _read_full(src, memoryview(buffer)) != size:
        raise DecryptionFailed(f"the envelope was truncated in its header ({what})")
    return bytes(buffer)


def _parse_header(src: BinaryIO) -> EnvelopeHeader:
    magic = bytearray(len(MAGIC))
    got = _read_full(src, memoryview(magic))
    if got != len(MAGIC) or bytes(magic) != MAGIC:
        raise DecryptionFailed("not a Stockade envelope (its first bytes are not STOCKENV)")
    (version,) = _read_exact(src, 1, "version")
    if version != VERSION:
        raise DecryptionFailed(f"unsupported envelope version {version} (this reads {VERSION})")
    (kms_length,) = _read_exact(src, 1, "KMS name")
    kms = _ascii(_read_exact(src, kms_length, "KMS name"), "KMS name")
    (kek_length,) = _read_exact(src, 1, "key id")
    kek_id = _ascii(_read_exact(src, kek_length, "key id"), "key id")
    (chunk_size,) = struct.unpack(">I", _read_exact(src, 4, "chunk size"))
    nonce = _read_exact(src, NONCE_BYTES, "nonce")
    (wrapped_length,) = struct.unpack(">H", _read_exact(src, 2, "wrapped key"))
    wrapped = _read_exact(src, wrapped_length, "wrapped key")
    if not _printable(kms, 64):
        raise DecryptionFailed(f"the envelope header names an invalid KMS {kms!r}")
    if not _printable(kek_id, 255):
        raise DecryptionFailed(f"the envelope header names an invalid key id {kek_id!r}")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise DecryptionFailed(f"the envelope header gives an invalid chunk size {chunk_size}")
    if not 1 <= wrapped_length <= _MAX_WRAPPED_BYTES:
        raise DecryptionFailed(f"the envelope header gives an invalid key length {wrapped_length}")
    return EnvelopeHeader(version, kms, kek_id, chunk_size, nonce, wrapped)


def _ascii(raw: bytes, what: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise DecryptionFailed(f"the envelope header has a non-ASCII {what}") from None


def _printable(text: str, limit: int) -> bool:
    """KMS names and key ids go into the header as-is; each KMS checks its own id rules."""
    return 1 <= len(text) <= limit and all("!" <= char <= "~" for char in text)


def _unwrap(kms: KMS, header: EnvelopeHeader) -> bytes:
    try:
        return kms.unwrap(header.kek_id, header.wrapped_key, header._wrap_context())
    except KeyDestroyed as exc:
        raise DecryptionFailed(f"key destroyed: {exc.message}") from None
    except (NotFound, InvalidInput):
        raise DecryptionFailed(
            f"key-encryption key {header.kek_id!r} named in the envelope was not found "
            "(the header was altered, or the key lives in another key store)"
        ) from None
    except UnwrapFailed:
        raise DecryptionFailed(
            "the envelope's wrapped data key was altered, or its header was altered"
        ) from None


def _open_input(path: str | os.PathLike[str]) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise NotFound(f"input file {os.fspath(path)} not found") from None
    except IsADirectoryError:
        raise InvalidInput(f"input {os.fspath(path)} is a directory, not a file") from None
    except PermissionError:
        raise InvalidInput(f"input file {os.fspath(path)} is not readable") from None
