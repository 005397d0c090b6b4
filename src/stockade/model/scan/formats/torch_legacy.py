"""PyTorch's legacy checkpoints (pre-1.6 pickle runs, pre-0.4 tar): each pickle torch would
unpickle is dispatched, raw storage bytes are stepped over by their declared sizes.
"""

from __future__ import annotations

import pickletools
import re
from collections.abc import Iterator
from typing import ClassVar

from stockade.model.scan.interface import Blob, ScanContext

__all__ = ["MAGIC_NUMBER", "SCANNER", "TorchLegacy", "pickle_end", "scan_tar_member"]

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# The magic number as pickle protocol 2+ writes it (LONG1, 10 bytes) and as 0/1 do.
_MAGIC_BINARY = b"\x8a\x0a" + MAGIC_NUMBER.to_bytes(10, "little")
_MAGIC_TEXT = b"L" + str(MAGIC_NUMBER).encode() + b"L\n"
_MAGIC_WINDOW = 32  # PROTO and a FRAME header may precede it

# torch.load unpickles these, in this order, before it reads raw storage bytes.
_PICKLES = ("<magic number>", "<protocol version>", "<system info>", "<model>", "<storage keys>")

_ELEMENT_SIZES = {
    "Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2,
    "Char": 1, "Byte": 1, "Bool": 1, "ComplexDouble": 16, "ComplexFloat": 8, "QUInt8": 1,
    "QInt8": 1, "QInt32": 4, "QUInt4x2": 1, "QUInt2x4": 1, "Untyped": 1,
}  # fmt: skip
_STORAGE_KINDS = b"|".join(kind.encode() for kind in _ELEMENT_SIZES)
_STORAGE_TYPE = re.compile(rb"(?<![A-Za-z])(" + _STORAGE_KINDS + rb")Storage")
_NEWLINE = re.compile(b"\n")

_STOP = ord(".")
_FIXED, _LINES, _PREFIXED = 0, 1, 2


def _opcode_table() -> dict[int, tuple[int, int, bool]]:
    """For each opcode byte: how its argument is laid out (kind, size, signed)."""
    table: dict[int, tuple[int, int, bool]] = {}
    prefixed = {
        pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
        pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
        pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
        pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
    }
    for op in pickletools.opcodes:
        code = op.code.encode("latin-1")[0]
        arg = op.arg
        if arg is None:
            table[code] = (_FIXED, 0, False)
        elif arg.n >= 0:
            table[code] = (_FIXED, arg.n, False)
        elif arg.n == pickletools.UP_TO_NEWLINE:
            table[code] = (_LINES, 2 if arg.name == "stringnl_noescape_pair" else 1, False)
        else:
            width, signed = prefixed[arg.n]
            table[code] = (_PREFIXED, width, signed)
    return table


_OPCODES = _opcode_table()


def pickle_end(data: bytes | memoryview, start: int = 0) -> int | None:
    """Where the pickle starting at `start` ends (just past its STOP), found by stepping
    over opcode arguments without decoding or running anything; None when the bytes are
    not a complete pickle."""
    view = memoryview(data).cast("B")
    size = len(view)
    pos = start
    while pos < size:
        code = view[pos]
        pos += 1
        layout = _OPCODES.get(code)
        if layout is None:
            return None
        if code == _STOP:
            return pos
        kind, width, signed = layout
        if kind == _FIXED:
            pos += width
        elif kind == _LINES:
            for _ in range(width):
                newline = _NEWLINE.search(view, pos)
                if newline is None:
                    return None
                pos = newline.end()
        else:
            if pos + width > size:
                return None
            length = int.from_bytes(view[pos : pos + width], "little", signed=signed)
            if length < 0:
                return None
            pos += width + length
    return None


def _has_magic(head: bytes) -> bool:
    return _MAGIC_BINARY in head or _MAGIC_TEXT in head


class TorchLegacy:
    """A checkpoint written by `torch.save(..., _use_new_zipfile_serialization=False)` or by
    PyTorch before 1.6."""

    name: ClassVar[str] = "torch-legacy"

    def detect(self, blob: Blob) -> bool:
        view = memoryview(blob.data)
        head = bytes(view[: _MAGIC_WINDOW + len(_MAGIC_TEXT)])
        if not head or head[0] not in (0x80, ord("L")) or not _has_magic(head):
            return False
        # The magic pickle alone (as this scanner dispatches it) is not a checkpoint.
        end = pickle_end(head)
        return end is not None and end < len(view)

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        view = memoryview(blob.data).cast("B")
        pos = 0
        for name in _PICKLES:
            end = pickle_end(view, pos)
            if end is None:
                # Let the pickle scanner report what it finds before the break.
                ctx.scan_member(blob, name, view[pos:])
                ctx.error(blob, f"legacy PyTorch file: the {name} pickle is damaged", offset=pos)
                return
            ctx.scan_member(blob, name, view[pos:end])
            pos = end
        # What follows is raw storage bytes, read by torch as numbers, never unpickled.


def _small_int(piece: memoryview) -> int | None:
    """The value of a pickle holding one small non-negative integer (a count)."""
    raw = bytes(piece)
    if raw[:1] == b"\x80":
        raw = raw[2:]
    if raw[:1] == b"\x95":  # FRAME
        raw = raw[9:]
    if len(raw) >= 3 and raw[0] == ord("K") and raw[2:3] == b".":
        return raw[1]
    if len(raw) >= 4 and raw[0] == ord("M") and raw[3:4] == b".":
        return int.from_bytes(raw[1:3], "little")
    if len(raw) >= 6 and raw[0] == ord("J") and raw[5:6] == b".":
        value = int.from_bytes(raw[1:5], "little", signed=True)
        return value if value >= 0 else None
    match = re.fullmatch(rb"[IL](\d{1,12})L?\n\.", raw)
    return int(match.group(1)) if match else None


def scan_tar_member(
    parent: Blob, ctx: ScanContext, name: str, data: memoryview, offset: int
) -> None:
    """The `storages` or `tensors` member of a pre-0.4 PyTorch tar: pickles interleaved with
    raw bytes. Each pickle is dispatched; raw bytes are stepped over by their sizes."""
    blob = parent.child(name, data)
    if blob.depth > ctx.limits.max_depth:
        ctx.error(blob, f"nested deeper than {ctx.limits.max_depth} containers")
        return
    steps = _storage_steps if name == "storages" else _tensor_steps
    try:
        for label, start, end in steps(data, ctx.limits.max_members):
            ctx.scan_member(blob, label, data[start:end])
    except _Damaged as exc:
        ctx.scan_member(blob, exc.label, data[exc.offset :])
        ctx.error(blob, f"legacy PyTorch {name}: {exc}", offset=exc.offset)


class _Damaged(ValueError):
    def __init__(self, label: str, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.label = label
        self.offset = offset


def _next_pickle(data: memoryview, pos: int, label: str) -> int:
    end = pickle_end(data, pos)
    if end is None:
        raise _Damaged(label, pos, f"the {label} pickle is damaged")
    return end


def _count(data: memoryview, start: int, end: int, limit: int) -> int:
    count = _small_int(data[start:end])
    if count is None or count > limit:
        raise _Damaged("<count>", start, "the count pickle is not a count within the limits")
    return count


def _storage_steps(data: memoryview, limit: int) -> Iterator[tuple[str, int, int]]:
    pos = 0
    end = _next_pickle(data, pos, "<storage count>")
    yield "<storage count>", pos, end
    count = _count(data, pos, end, limit)
    pos = end
    for index in range(count):
        label = f"<storage {index}>"
        end = _next_pickle(data, pos, label)
        yield label, pos, end
        kind = _STORAGE_TYPE.search(bytes(data[pos:end]))
        if kind is None:
            raise _Damaged(label, pos, f"{label} names no storage type")
        element = _ELEMENT_SIZES[kind.group(1).decode()]
        if end + 8 > len(data):
            raise _Damaged(label, end, f"{label} has no size")
        numel = int.from_bytes(data[end : end + 8], "little", signed=True)
        pos = end + 8 + numel * element
        if numel < 0 or pos > len(data):
            raise _Damaged(label, end, f"{label} declares {numel} elements past the end")
    end = _next_pickle(data, pos, "<storage views>")
    yield "<storage views>", pos, end


def _tensor_steps(data: memoryview, limit: int) -> Iterator[tuple[str, int, int]]:
    pos = 0
    end = _next_pickle(data, pos, "<tensor count>")
    yield "<tensor count>", pos, end
    count = _count(data, pos, end, limit)
    pos = end
    for index in range(count):
        label = f"<tensor {index}>"
        end = _next_pickle(data, pos, label)
        yield label, pos, end
        if end + 8 > len(data):
            raise _Damaged(label, end, f"{label} has no shape")
        ndim = int.from_bytes(data[end : end + 4], "little", signed=True)
        pos = end + 8 + 16 * ndim + 8  # ndim (+4 unused), sizes, strides, storage offset
        if ndim < 0 or pos > len(data):
            raise _Damaged(label, end, f"{label} declares {ndim} dimensions past the end")


SCANNER = TorchLegacy()
