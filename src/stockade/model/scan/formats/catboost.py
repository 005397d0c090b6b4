"""CatBoost binary models (`.cbm`): the `CBM1` magic, the declared size of the model core
and the FlatBuffers table it holds; data only, so a consistent one is clean.

A core that does not fit the file, or whose root table points outside it, is an error;
bytes after a core that names no further model parts are a low finding.
"""

from __future__ import annotations

import struct
from typing import ClassVar

from stockade.core.findings import Severity
from stockade.model.scan.interface import Blob, ScanContext

__all__ = ["SCANNER", "CatBoostScanner"]

MAGIC = b"CBM1"
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
# TModelCore's fields, in schema order.
_FORMAT_VERSION, _MODEL_TREES, _INFO_MAP, _MODEL_PART_IDS = range(4)
_MAX_PARTS = 1024


class _Malformed(Exception):
    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset


class _FlatBuffer:
    """Bounds-checked reads of one FlatBuffers buffer (offsets relative to its start)."""

    def __init__(self, data: memoryview, base: int) -> None:
        self.data = data
        self.base = base  # where the buffer starts in the file, for error offsets

    def read(self, fmt: struct.Struct, at: int, what: str) -> int:
        if at < 0 or at + fmt.size > len(self.data):
            raise _Malformed(f"{what} points outside the model core", self.base + max(at, 0))
        (value,) = fmt.unpack_from(self.data, at)
        return int(value)

    def table_fields(self, table: int) -> list[int]:
        """Field offsets (0 = absent) of the table at `table`, checked to lie inside."""
        vtable = table - self.read(_I32, table, "root table")
        length = self.read(_U16, vtable, "vtable")
        size = self.read(_U16, vtable + 2, "vtable")
        if length < 4 or length % 2 or size < 4:
            raise _Malformed("the root table's vtable is malformed", self.base + vtable)
        if table + size > len(self.data):
            raise _Malformed("the root table runs past the model core", self.base + table)
        fields = [self.read(_U16, vtable + 4 + 2 * i, "vtable") for i in range((length - 4) // 2)]
        for index, offset in enumerate(fields):
            if offset and not 4 <= offset < size:
                raise _Malformed(f"field {index} lies outside its table", self.base + table)
        return fields

    def target(self, table: int, field: int, what: str) -> int:
        """Follow the offset stored in a field to the object it points to."""
        at = table + field
        destination = at + self.read(_U32, at, what)
        if destination >= len(self.data):
            raise _Malformed(f"{what} points outside the model core", self.base + at)
        return destination

    def string(self, at: int, what: str) -> bytes:
        length = self.read(_U32, at, what)
        if at + 4 + length + 1 > len(self.data):
            raise _Malformed(f"{what} runs past the model core", self.base + at)
        return bytes(self.data[at + 4 : at + 4 + length])

    def strings(self, at: int, what: str) -> list[bytes]:
        count = self.read(_U32, at, what)
        if count > _MAX_PARTS or at + 4 + 4 * count > len(self.data):
            raise _Malformed(f"{what} declares {count} entries", self.base + at)
        out = []
        for index in range(count):
            entry = at + 4 + 4 * index
            out.append(self.string(entry + self.read(_U32, entry, what), what))
        return out


_STATIC_CTRS = b"static_provider_v1"


def _check_ctr_tables(data: memoryview, start: int) -> None:
    """The static CTR provider: a table count, then each table as a size and a buffer;
    together they must fill the rest of the file exactly."""
    if start + 4 > len(data):
        raise _Malformed("the file ends inside the CTR tables", start)
    (count,) = _U32.unpack_from(data, start)
    position = start + 4
    if count == 0xFFFFFFFF:  # a 64-bit count follows
        if position + 8 > len(data):
            raise _Malformed("the file ends inside the CTR tables", position)
        (count,) = struct.unpack_from("<Q", data, position)
        position += 8
    if count * 4 > len(data) - position:
        raise _Malformed(f"{count} CTR tables cannot fit in the file", start)
    for index in range(count):
        if position + 4 > len(data):
            raise _Malformed(f"the file ends before CTR table {index}", position)
        (size,) = _U32.unpack_from(data, position)
        position += 4 + size
        if position > len(data):
            raise _Malformed(f"CTR table {index} runs past the end of the file", position)
    if position != len(data):
        raise _Malformed(f"{len(data) - position} bytes follow the last CTR table", position)


class CatBoostScanner:
    """Recognise CatBoost `.cbm` models and check the core they declare."""

    name: ClassVar[str] = "catboost"

    def detect(self, blob: Blob) -> bool:
        return bytes(blob.data[:4]) == MAGIC

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        try:
            self.check(blob, ctx)
        except _Malformed as problem:
            ctx.error(blob, f"CatBoost model is malformed: {problem.reason}", offset=problem.offset)

    def check(self, blob: Blob, ctx: ScanContext) -> None:
        data = memoryview(blob.data)
        if len(data) < 8:
            raise _Malformed("the file ends inside the header", len(data))
        (core_size,) = _U32.unpack_from(data, 4)
        if 8 + core_size > len(data):
            raise _Malformed(
                f"the header declares a {core_size}-byte model core but only "
                f"{len(data) - 8} bytes follow",
                4,
            )
        if core_size < 12:
            raise _Malformed(f"a {core_size}-byte model core is too small", 4)
        core = _FlatBuffer(data[8 : 8 + core_size], 8)
        root = core.read(_U32, 0, "root offset")
        fields = core.table_fields(root)
        present = {index for index, offset in enumerate(fields) if offset}
        if _FORMAT_VERSION not in present or _MODEL_TREES not in present:
            raise _Malformed("the model core has no format version or no trees", 8 + root)
        version = core.string(
            core.target(root, fields[_FORMAT_VERSION], "format version"), "format version"
        )
        if not (version and version.isascii() and version.decode("ascii").isprintable()):
            raise _Malformed(f"format version {version[:40]!r} is not a version name", 8 + root)
        core.table_fields(core.target(root, fields[_MODEL_TREES], "trees"))
        parts: list[bytes] = []
        if _MODEL_PART_IDS in present:
            parts = core.strings(
                core.target(root, fields[_MODEL_PART_IDS], "part list"), "part list"
            )
        trailing = len(data) - 8 - core_size
        if parts and trailing == 0:
            names = ", ".join(part.decode("ascii", "replace") for part in parts[:5])
            raise _Malformed(f"the core names model parts ({names}) but none follow", len(data))
        if parts == [_STATIC_CTRS]:
            _check_ctr_tables(data, 8 + core_size)
        if trailing and not parts:
            ctx.report(
                blob,
                "STK-CB-001",
                "Bytes after the CatBoost model",
                Severity.LOW,
                offset=8 + core_size,
                detail=f"{trailing} bytes follow a model core that names no further parts; "
                "CatBoost ignores them, another reader may not",
                remediation="Re-save the model with CatBoost to drop the extra bytes.",
                references=(),
                category="model-malformed",
            )


SCANNER = CatBoostScanner()
