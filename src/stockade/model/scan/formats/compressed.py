"""Compressed streams (gzip, bz2, xz, lzma, zlib, lz4 frames and joblib's "ZF" files) and
the bounded decompression every container shares: never more than the limits allow.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import lz4.frame

from stockade.core.findings import Severity
from stockade.model.scan.interface import Blob, ScanContext

__all__ = [
    "BOMB_RULE",
    "RATIO_FLOOR",
    "SCANNER",
    "CompressedStream",
    "Inflated",
    "all_zero",
    "inflate",
    "report_bomb",
    "unpack_cap",
]

BOMB_RULE = "STK-ARC-004"
TRAILING_RULE = "STK-CMP-001"
SIZE_RULE = "STK-CMP-002"

# Below this many unpacked bytes the ratio limit does not apply: a sparse array of zeros
# legitimately deflates a thousandfold, and inflating a few MiB costs nothing.
RATIO_FLOOR = 64 << 20

_IN_CHUNK = 1 << 20  # compressed bytes fed per call, so leftovers are never copied twice
_OUT_CHUNK = 16 << 20  # most output asked for per call
_LZMA_MEMLIMIT = 1 << 30  # a hostile header may declare a 4 GiB dictionary
_TRIAL = 1024  # compressed bytes decoded to confirm a short magic number

# joblib before 0.9.3 wrote "ZF", the unpacked length in hex padded to 19 characters,
# then a zlib stream (joblib/numpy_pickle_compat.py: write_zfile / read_zfile).
_ZF_PREFIX = b"ZF"
_ZF_LENGTH = 19


@dataclass(frozen=True)
class Inflated:
    """What a bounded decompression produced.

    `data` holds at most `cap` bytes; `end` is where the compressed stream(s) ended in the
    input (the input's length when it ended early); `complete` says the stream reached its
    proper end; `exceeded` says it would have produced more than `cap`; `problem` is the
    decoder's complaint, if any.
    """

    data: bytearray
    end: int
    complete: bool
    exceeded: bool
    problem: str | None = None


def unpack_cap(ctx: ScanContext, compressed_size: int, archive_left: int | None = None) -> int:
    """How many bytes one member may unpack to: the per-member and per-file limits, and
    `max_ratio` times its compressed size once past `RATIO_FLOOR`."""
    limits = ctx.limits
    cap = min(
        limits.max_member_bytes,
        limits.max_total_bytes - ctx.total_bytes,
        max(RATIO_FLOOR, limits.max_ratio * max(compressed_size, 1)),
    )
    if archive_left is not None:
        cap = min(cap, archive_left)
    return max(cap, 0)


def report_bomb(
    ctx: ScanContext,
    blob: Blob,
    what: str,
    cap: int,
    compressed_size: int,
    *,
    why: str | None = None,
) -> None:
    """A member that unpacks past its cap: a finding, and an error for the unread rest.
    `why` names the limit; by default it is worked out from `cap`."""
    limits = ctx.limits
    if why is None:
        if cap == limits.max_member_bytes:
            why = f"the per-member limit of {limits.max_member_bytes} bytes"
        elif cap == limits.max_total_bytes - ctx.total_bytes:
            why = f"the limit of {limits.max_total_bytes} bytes unpacked from one file"
        else:
            why = f"{limits.max_ratio} times its compressed size of {compressed_size} bytes"
    ctx.report(
        blob,
        BOMB_RULE,
        "Decompression bomb: a member unpacks far beyond its size",
        Severity.HIGH,
        detail=f"{what} unpacks to more than {cap} bytes, past {why}",
        snippet=what,
        remediation="Do not unpack or load this file; a loader would exhaust memory or disk.",
        references=("CWE-409",),
        category="resource-exhaustion",
    )
    ctx.error(blob, f"{what}: only the first {cap} bytes unpacked and inspected")


def _is_zlib_stream(decoder: Any) -> bool:
    return hasattr(decoder, "unconsumed_tail")


def inflate(
    data: bytes | memoryview,
    open_stream: Callable[[], Any],
    cap: int,
    *,
    magic: bytes = b"",
) -> Inflated:
    """Decompress `data` with decoders made by `open_stream` (zlib, bz2, lzma or lz4
    decompressor objects), producing at most `cap` bytes. With `magic`, a further stream
    that starts with it right after one ends is decompressed too, as the stdlib and lz4
    file readers do with concatenated streams.
    """
    view = memoryview(data).cast("B")
    size = len(view)
    out = bytearray()
    pos = 0
    decoder = open_stream()
    try:
        while True:
            state = "more"
            while pos < size:
                chunk_end = min(pos + _IN_CHUNK, size)
                state = _feed(decoder, view[pos:chunk_end], out, cap)
                if state == "eof":
                    pos = chunk_end - len(decoder.unused_data or b"")
                    break
                pos = chunk_end
                if state == "exceeded":
                    del out[cap:]
                    return Inflated(out, pos, False, True)
            if state == "more":
                state = _drain(decoder, out, cap)
                if state == "exceeded":
                    del out[cap:]
                    return Inflated(out, pos, False, True)
            if state != "eof":
                return Inflated(out, size, False, False, "the compressed stream ends early")
            if magic and bytes(view[pos : pos + len(magic)]) == magic:
                decoder = open_stream()
                continue
            return Inflated(out, pos, True, False)
    except (zlib.error, lzma.LZMAError, OSError, EOFError, RuntimeError, ValueError) as exc:
        del out[cap:]
        return Inflated(out, pos, False, False, f"{type(exc).__name__}: {exc}")


def _feed(decoder: Any, chunk: memoryview, out: bytearray, cap: int) -> str:
    if _is_zlib_stream(decoder):
        pending: bytes | memoryview = chunk
        while True:
            want = min(cap - len(out) + 1, _OUT_CHUNK)
            piece = decoder.decompress(pending, want)
            out += piece
            if len(out) > cap:
                return "exceeded"
            if decoder.eof:
                return "eof"
            pending = decoder.unconsumed_tail
            if not pending and len(piece) < want:
                return "more"
    want = min(cap - len(out) + 1, _OUT_CHUNK)
    out += decoder.decompress(chunk, want)
    if len(out) > cap:
        return "exceeded"
    return _drain(decoder, out, cap) if not decoder.eof else "eof"


def _drain(decoder: Any, out: bytearray, cap: int) -> str:
    """Collect output the decoder holds back after its input ran out."""
    while not decoder.eof:
        if not _is_zlib_stream(decoder) and decoder.needs_input:
            return "more"
        want = min(cap - len(out) + 1, _OUT_CHUNK)
        piece = decoder.decompress(b"", want)
        out += piece
        if len(out) > cap:
            return "exceeded"
        if not piece:
            return "more"
    return "eof"


@dataclass(frozen=True)
class _Codec:
    name: str
    magic: bytes
    open_stream: Callable[[], Any]
    concatenates: bool = True


_GZIP = _Codec("gzip", b"\x1f\x8b", lambda: zlib.decompressobj(31))
_ZLIB = _Codec("zlib", b"", lambda: zlib.decompressobj(15), concatenates=False)
_BZ2 = _Codec("bz2", b"BZh", bz2.BZ2Decompressor)
_XZ = _Codec(
    "xz",
    b"\xfd7zXZ\x00",
    lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_LZMA_MEMLIMIT),
)
_LZMA = _Codec(
    "lzma",
    b"",
    lambda: lzma.LZMADecompressor(format=lzma.FORMAT_ALONE, memlimit=_LZMA_MEMLIMIT),
    concatenates=False,
)
_LZ4 = _Codec("lz4", b"\x04\x22\x4d\x18", lz4.frame.LZ4FrameDecompressor)


def _zf_start(head: bytes) -> int | None:
    """Where the zlib stream of a joblib "ZF" file starts, or None if `head` is not one."""
    if not head.startswith(_ZF_PREFIX) or len(head) < len(_ZF_PREFIX) + _ZF_LENGTH + 2:
        return None
    length = head[len(_ZF_PREFIX) : len(_ZF_PREFIX) + _ZF_LENGTH].rstrip(b" ")
    if not length.startswith(b"0x") or not _is_hex(length[2:]):
        return None
    start = len(_ZF_PREFIX) + _ZF_LENGTH
    if head[start : start + 1] == b" ":  # joblib <= 0.8.4 on Python 2 padded one more
        start += 1
    return start if _zlib_header(head[start : start + 2]) else None


def _is_hex(text: bytes) -> bool:
    return bool(text) and all(c in b"0123456789abcdefABCDEF" for c in text)


def _zlib_header(head: bytes) -> bool:
    # CMF 0x78 (deflate, 32 KiB window), no preset dictionary, header checksum valid.
    return (
        len(head) == 2
        and head[0] == 0x78
        and head[1] in (0x01, 0x5E, 0x9C, 0xDA)
        and (head[0] << 8 | head[1]) % 31 == 0
    )


def _lzma_alone_header(head: bytes) -> bool:
    # Properties byte 0x5d (lc=3, lp=0, pb=2, every preset), a power-of-two-ish dictionary
    # size, and an unpacked size that is either unknown (all ones) or below 2**48.
    if len(head) < 13 or head[0] != 0x5D or head[1] != 0:
        return False
    dictionary = int.from_bytes(head[1:5], "little")
    if dictionary < 4096 or (dictionary & (dictionary - 1) and dictionary % 3):
        return False
    unpacked = head[5:13]
    return unpacked == b"\xff" * 8 or unpacked[6:8] == b"\x00\x00"


def _sniff(head: bytes) -> tuple[_Codec, int] | None:
    """The codec of a stream and where its compressed data starts."""
    start = _zf_start(head)
    if start is not None:
        return _Codec("joblib zlib", b"", _ZLIB.open_stream, concatenates=False), start
    if head.startswith(b"\x1f\x8b\x08"):
        return _GZIP, 0
    if (
        len(head) >= 10
        and head.startswith(b"BZh")
        and 0x31 <= head[3] <= 0x39
        and head[4:10] in (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")
    ):
        return _BZ2, 0
    if head.startswith(_XZ.magic):
        return _XZ, 0
    if head.startswith(_LZ4.magic):
        return _LZ4, 0
    if _lzma_alone_header(head):
        return _LZMA, 0
    if _zlib_header(head[:2]):
        return _ZLIB, 0
    return None


class CompressedStream:
    """A whole file (or member) that is one compressed stream: unpack it within the
    limits and dispatch what it holds (for joblib, the pickle stream)."""

    name: ClassVar[str] = "compressed"

    def detect(self, blob: Blob) -> bool:
        view = memoryview(blob.data)
        sniffed = _sniff(bytes(view[:32]))
        if sniffed is None:
            return False
        codec, start = sniffed
        if codec.magic and len(codec.magic) >= 4:
            return True
        # Two or three magic bytes also start other formats (a safetensors header length
        # of 0x9c78 reads as a zlib header): the first bytes must decode too.
        try:
            codec.open_stream().decompress(bytes(view[start : start + _TRIAL]), 64)
        except (zlib.error, lzma.LZMAError, OSError, EOFError, RuntimeError, ValueError):
            return False
        return True

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        view = memoryview(blob.data).cast("B")
        sniffed = _sniff(bytes(view[:32]))
        if sniffed is None:
            ctx.error(blob, "not a recognised compressed stream")
            return
        codec, start = sniffed
        body = view[start:]
        cap = unpack_cap(ctx, len(body))
        declared = _declared_size(view) if codec.name == "joblib zlib" else None
        result = inflate(
            body, codec.open_stream, cap, magic=codec.magic if codec.concatenates else b""
        )
        what = f"{codec.name} stream"
        if result.exceeded:
            report_bomb(ctx, blob, what, cap, len(body))
        elif declared is not None and result.complete and declared != len(result.data):
            ctx.report(
                blob,
                SIZE_RULE,
                "Compressed stream size disagrees with its header",
                Severity.LOW,
                detail=f"header declares {declared} bytes, the stream holds {len(result.data)}",
                remediation="joblib refuses this file; rebuild it from the original object.",
                references=(),
                category="integrity",
            )
        if result.problem:
            ctx.error(blob, f"{what} damaged after {len(result.data)} bytes: {result.problem}")
        if result.data:
            ctx.scan_member(blob, f"<{what}>", memoryview(result.data))
        end = start + result.end
        if result.complete and end < len(view):
            self._trailing(blob, ctx, view[end:], what, end)

    @staticmethod
    def _trailing(blob: Blob, ctx: ScanContext, rest: memoryview, what: str, offset: int) -> None:
        if all_zero(rest):
            return  # zero padding after the stream, as tape-style writers leave
        ctx.report(
            blob,
            TRAILING_RULE,
            "Data after the end of the compressed stream",
            Severity.LOW,
            offset=offset,
            detail=f"{len(rest)} bytes follow the {what}; inspected separately",
            remediation="Loaders ignore or reject these bytes; rebuild the file from source.",
            references=(),
            category="integrity",
        )
        ctx.scan_member(blob, f"<after {what}>", rest)


def all_zero(view: memoryview) -> bool:
    """Whether every byte is zero (padding), compared a chunk at a time."""
    for start in range(0, len(view), _IN_CHUNK):
        chunk = view[start : start + _IN_CHUNK]
        if chunk != bytes(len(chunk)):
            return False
    return True


def _declared_size(view: memoryview) -> int | None:
    text = bytes(view[len(_ZF_PREFIX) : len(_ZF_PREFIX) + _ZF_LENGTH]).rstrip(b" ")
    try:
        return int(text, 16)
    except ValueError:
        return None


SCANNER = CompressedStream()
