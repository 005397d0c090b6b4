"""GGUF (llama.cpp) models: parse the header, every metadata value and the tensor table
with each size checked against the file first, and analyse the chat templates.

Tensor data is never read: it is located by the declared offsets and checked to lie
inside the file, aligned and without overlap.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from stockade.core.findings import Severity
from stockade.model.scan.formats.chat_template import report_template
from stockade.model.scan.interface import Blob, ScanContext

__all__ = ["GGML_TYPES", "SCANNER", "GgufScanner"]

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 64  # GGML_MAX_NAME, terminator included
MAX_NESTING = 8  # arrays of arrays
_IMPOSSIBLE = 1 << 32  # bytes: a size past this, beyond the file's end, is crafted
_MAX_REPEATS = 20  # findings of one rule listed one by one
_MAX_TEMPLATE_BYTES = 4 << 20
_MAX_NAME_SHOWN = 1024

# ggml type id -> (name, elements per block, bytes per block), as llama.cpp defines them.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

# Metadata value types: id -> fixed size in bytes (None: string, array).
_UINT32, _STRING, _ARRAY = 4, 8, 9
_VALUE_SIZES: dict[int, int | None] = {
    0: 1,  # uint8
    1: 1,  # int8
    2: 2,  # uint16
    3: 2,  # int16
    4: 4,  # uint32
    5: 4,  # int32
    6: 4,  # float32
    7: 1,  # bool
    8: None,  # string
    9: None,  # array
    10: 8,  # uint64
    11: 8,  # int64
    12: 8,  # float64
}

_RULES = {
    "STK-GGUF-001": "GGUF declares a size larger than the file",
    "STK-GGUF-002": "GGUF metadata has an unknown value type",
    "STK-GGUF-003": "GGUF metadata arrays nested too deeply",
    "STK-GGUF-004": "GGUF repeats a metadata key or tensor name",
    "STK-GGUF-005": "GGUF tensor has an invalid shape",
    "STK-GGUF-006": "GGUF tensor has an unknown type",
    "STK-GGUF-007": "GGUF alignment is invalid",
    "STK-GGUF-008": "GGUF tensor data is misaligned or outside the file",
    "STK-GGUF-009": "GGUF tensors overlap",
    "STK-GGUF-010": "GGUF tensor name is too long",
}
_MALFORMED_FIX = (
    "Do not load this file: llama.cpp-based loaders have had memory-safety bugs on GGUF "
    "files with inconsistent sizes. Re-export the model with a current converter."
)


class _Stop(Exception):
    """Parsing cannot go on: the rest of the file is not inspected. `crafted` when a
    declared size is too large to be a truncated download."""

    def __init__(self, reason: str, offset: int, *, crafted: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offset = offset
        self.crafted = crafted


@dataclass(frozen=True)
class _Tensor:
    name: str
    offset: int  # relative to the data section
    nbytes: int | None  # None when the type or shape is unknown
    info_offset: int  # where its entry in the tensor table starts


class _Reader:
    """A bounds-checked cursor: every read checks the bytes exist first."""

    def __init__(self, data: memoryview, big_endian: bool, version: int) -> None:
        self.data = data
        self.end = len(data)
        self.pos = 0
        order = ">" if big_endian else "<"
        self.u32 = struct.Struct(order + "I")
        self.u64 = struct.Struct(order + "Q")
        self.count = self.u32 if version == 1 else self.u64

    def need(self, size: int, what: str) -> None:
        """Check before reading (or allocating): `size` bytes must be left."""
        left = self.end - self.pos
        if size <= left:
            return
        if size >= _IMPOSSIBLE:
            raise _Stop(
                f"{what} declares {size} bytes at byte {self.pos}, far beyond the "
                f"{self.end}-byte file (a known way to overflow GGUF loaders)",
                self.pos,
                crafted=True,
            )
        raise _Stop(f"{what} needs {size} bytes at byte {self.pos}; {left} are left", self.pos)

    def unsigned(self, fmt: struct.Struct, what: str) -> int:
        self.need(fmt.size, what)
        (value,) = fmt.unpack_from(self.data, self.pos)
        self.pos += fmt.size
        return int(value)

    def string(self, what: str) -> tuple[int, int]:
        """A length-prefixed string: returns (start, length) and moves past it."""
        length = self.unsigned(self.count, f"length of {what}")
        self.need(length, what)
        start = self.pos
        self.pos += length
        return start, length

    def text(self, start: int, length: int) -> str:
        """A name for reports and duplicate checks; a crafted gigabyte-long name is cut."""
        shown = bytes(self.data[start : start + min(length, _MAX_NAME_SHOWN)])
        return shown.decode("utf-8", "replace")


class GgufScanner:
    """Parse-only GGUF reader; findings for inconsistent sizes and hostile templates."""

    name: ClassVar[str] = "gguf"

    def detect(self, blob: Blob) -> bool:
        return bytes(blob.data[:4]) == MAGIC

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        view = memoryview(blob.data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        scan = _Scan(blob, ctx, view)
        try:
            scan.run()
        except _Stop as stop:
            if stop.crafted:
                scan.report("STK-GGUF-001", stop.reason, stop.offset, Severity.MEDIUM)
            ctx.error(blob, f"GGUF: {stop.reason}", offset=stop.offset)
        finally:
            scan.summarise()


class _Scan:
    def __init__(self, blob: Blob, ctx: ScanContext, data: memoryview) -> None:
        self.blob = blob
        self.ctx = ctx
        self.data = data
        self.keys: set[str] = set()
        self.alignment = DEFAULT_ALIGNMENT
        self.reported: dict[str, tuple[int, Severity]] = {}

    def report(self, rule_id: str, detail: str, offset: int | None, severity: Severity) -> None:
        # A crafted file can repeat one flaw a million times: the first few say enough.
        count = self.reported.get(rule_id, (0, severity))[0] + 1
        self.reported[rule_id] = (count, severity)
        if count > _MAX_REPEATS:
            return
        self.ctx.report(
            self.blob,
            rule_id,
            _RULES[rule_id],
            severity,
            offset=offset,
            detail=detail,
            remediation=_MALFORMED_FIX,
            category="model-malformed",
        )

    def summarise(self) -> None:
        for rule_id, (count, severity) in self.reported.items():
            if count > _MAX_REPEATS:
                self.ctx.report(
                    self.blob,
                    rule_id,
                    _RULES[rule_id],
                    severity,
                    detail=f"{count - _MAX_REPEATS} more of these were not listed",
                    remediation=_MALFORMED_FIX,
                    category="model-malformed",
                )

    @staticmethod
    def fits(reader: _Reader, declared: int, unit: int, what: str) -> None:
        """`declared` items of at least `unit` bytes each must fit in what is left."""
        reader.need(declared * unit, what)

    def run(self) -> None:
        data = self.data
        if len(data) < 8:
            raise _Stop("file ends inside the GGUF header", len(data))
        (little,) = struct.unpack_from("<I", data, 4)
        (big,) = struct.unpack_from(">I", data, 4)
        if 1 <= little <= 3:
            version, big_endian = little, False
        elif 1 <= big <= 3:
            version, big_endian = big, True
        else:
            raise _Stop(f"unsupported GGUF version {little}", 4)
        reader = _Reader(data, big_endian, version)
        reader.pos = 8
        tensor_count = reader.unsigned(reader.count, "tensor count")
        kv_count = reader.unsigned(reader.count, "metadata count")
        length_size = reader.count.size
        # The smallest possible entries: an empty key, a type and a one-byte value; an
        # empty name, no dimensions, a type and an offset.
        self.fits(reader, kv_count, length_size + 4 + 1, "metadata count")
        self.fits(reader, tensor_count, length_size + 4 + 4 + 8, "tensor count")
        for _ in range(kv_count):
            self.metadata(reader)
        tensors = [self.tensor_info(reader, version) for _ in range(tensor_count)]
        self.tensor_data(reader, tensors)

    # -- metadata ------------------------------------------------------------------------

    def metadata(self, reader: _Reader) -> None:
        entry = reader.pos
        start, length = reader.string("metadata key")
        key = reader.text(start, length)
        if key in self.keys:
            self.report(
                "STK-GGUF-004",
                f"metadata key {key!r} appears twice; loaders disagree on which value wins",
                entry,
                Severity.MEDIUM,
            )
        self.keys.add(key)
        kind = reader.unsigned(reader.u32, f"type of {key!r}")
        if kind not in _VALUE_SIZES:
            self.report(
                "STK-GGUF-002",
                f"metadata {key!r} has value type {kind}; its size cannot be known",
                entry,
                Severity.MEDIUM,
            )
            raise _Stop(f"unknown value type {kind} for {key!r}", reader.pos)
        value_at = reader.pos
        if kind == _STRING:
            start, length = reader.string(f"value of {key!r}")
            if key == "tokenizer.chat_template" or key.startswith("tokenizer.chat_template."):
                self.template(key, start, length, value_at)
        elif kind == _ARRAY:
            self.array(reader, key, 1)
        else:
            size = _VALUE_SIZES[kind]
            assert size is not None
            reader.need(size, f"value of {key!r}")
            if key == "general.alignment":
                self.set_alignment(reader, kind, value_at)
            reader.pos += size
        if key == "general.alignment" and kind != _UINT32:
            self.report(
                "STK-GGUF-007",
                f"general.alignment has value type {kind}, not uint32",
                value_at,
                Severity.MEDIUM,
            )

    def set_alignment(self, reader: _Reader, kind: int, offset: int) -> None:
        if kind != _UINT32:
            return
        (value,) = reader.u32.unpack_from(reader.data, reader.pos)
        if value == 0 or value & (value - 1):
            self.report(
                "STK-GGUF-007",
                f"general.alignment is {value}, not a power of two",
                offset,
                Severity.MEDIUM,
            )
            return
        self.alignment = value

    def array(self, reader: _Reader, key: str, depth: int) -> None:
        if depth > MAX_NESTING:
            self.report(
                "STK-GGUF-003",
                f"metadata {key!r} nests arrays more than {MAX_NESTING} deep",
                reader.pos,
                Severity.MEDIUM,
            )
            raise _Stop(f"arrays nested more than {MAX_NESTING} deep in {key!r}", reader.pos)
        kind = reader.unsigned(reader.u32, f"element type of {key!r}")
        count = reader.unsigned(reader.count, f"element count of {key!r}")
        if kind not in _VALUE_SIZES:
            self.report(
                "STK-GGUF-002",
                f"array {key!r} has element type {kind}; its size cannot be known",
                reader.pos,
                Severity.MEDIUM,
            )
            raise _Stop(f"unknown element type {kind} in {key!r}", reader.pos)
        size = _VALUE_SIZES[kind]
        if size is not None:
            self.fits(reader, count, size, f"element count of {key!r}")
            reader.pos += count * size
            return
        # Strings and arrays carry at least a length or a type and a count each.
        self.fits(reader, count, reader.count.size, f"element count of {key!r}")
        if kind == _ARRAY:
            for _ in range(count):
                self.array(reader, key, depth + 1)
            return
        self.strings(reader, key, count)

    def strings(self, reader: _Reader, key: str, count: int) -> None:
        """Skip `count` strings (token lists hold 100k+ of them): a tight loop."""
        data, unpack, width, end = (
            reader.data,
            reader.count.unpack_from,
            reader.count.size,
            reader.end,
        )
        pos = reader.pos
        for _ in range(count):
            if width > end - pos:
                reader.pos = pos
                reader.need(width, f"string length in {key!r}")
            (length,) = unpack(data, pos)
            pos += width
            if length > end - pos:
                reader.pos = pos
                self.fits(reader, length, 1, f"string in {key!r}")
            pos += length
        reader.pos = pos

    def template(self, key: str, start: int, length: int, offset: int) -> None:
        if length > _MAX_TEMPLATE_BYTES:
            self.ctx.error(
                self.blob, f"{key} of {length} bytes is too long to analyse", offset=offset
            )
            return
        raw = bytes(self.data[start : start + length])
        try:
            source = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.ctx.error(self.blob, f"{key} is not UTF-8 text: {exc.reason}", offset=offset)
            return
        report_template(self.blob, self.ctx, source, label=key, offset=offset)

    # -- tensors -------------------------------------------------------------------------

    def tensor_info(self, reader: _Reader, version: int) -> _Tensor:
        entry = reader.pos
        start, length = reader.string("tensor name")
        name = reader.text(start, length)
        if length >= MAX_NAME:
            self.report(
                "STK-GGUF-010",
                f"tensor name of {length} bytes; llama.cpp allows {MAX_NAME - 1}",
                entry,
                Severity.MEDIUM,
            )
        n_dims = reader.unsigned(reader.u32, f"dimension count of {name!r}")
        dim_format = reader.u32 if version == 1 else reader.u64
        self.fits(reader, n_dims, dim_format.size, f"dimension count of {name!r}")
        if n_dims > MAX_DIMS:
            # Skipped unread: a crafted count of millions must not become a list.
            reader.pos += n_dims * dim_format.size
            kind = reader.unsigned(reader.u32, f"type of {name!r}")
            offset = reader.unsigned(reader.u64, f"offset of {name!r}")
            self.report(
                "STK-GGUF-005",
                f"tensor {name!r}: {n_dims} dimensions; GGML supports {MAX_DIMS}",
                entry,
                Severity.MEDIUM,
            )
            return _Tensor(name, offset, None, entry)
        dims = [reader.unsigned(dim_format, f"dimension of {name!r}") for _ in range(n_dims)]
        kind = reader.unsigned(reader.u32, f"type of {name!r}")
        offset = reader.unsigned(reader.u64, f"offset of {name!r}")
        return _Tensor(name, offset, self.tensor_size(name, dims, kind, entry), entry)

    def tensor_size(self, name: str, dims: list[int], kind: int, entry: int) -> int | None:
        problem = None
        if any(dim >= 1 << 63 for dim in dims):
            problem = f"negative dimension in {dims}"
        elements = 1
        for dim in dims:
            elements *= dim
        if problem is None and elements >= 1 << 63:
            problem = f"shape {dims} has more elements than a 64-bit count holds"
        ggml = GGML_TYPES.get(kind)
        if problem is None and ggml is not None and dims and dims[0] % ggml[1]:
            problem = (
                f"first dimension {dims[0]} is not a multiple of {ggml[0]}'s block of {ggml[1]}"
            )
        if problem is not None:
            self.report("STK-GGUF-005", f"tensor {name!r}: {problem}", entry, Severity.MEDIUM)
            return None
        if ggml is None:
            self.report(
                "STK-GGUF-006",
                f"tensor {name!r} has type {kind}, which this scanner does not know; its "
                "size was not checked",
                entry,
                Severity.LOW,
            )
            return None
        return elements // ggml[1] * ggml[2]

    def tensor_data(self, reader: _Reader, tensors: list[_Tensor]) -> None:
        seen: set[str] = set()
        for tensor in tensors:
            if tensor.name in seen:
                self.report(
                    "STK-GGUF-004",
                    f"tensor {tensor.name!r} appears twice",
                    tensor.info_offset,
                    Severity.MEDIUM,
                )
            seen.add(tensor.name)
        if not tensors:
            return
        alignment = self.alignment
        data_start = -(-reader.pos // alignment) * alignment
        size = reader.end
        placed: list[tuple[int, int, str]] = []
        for tensor in tensors:
            begin = data_start + tensor.offset
            if tensor.offset % alignment:
                self.report(
                    "STK-GGUF-008",
                    f"tensor {tensor.name!r} starts at data offset {tensor.offset}, not a "
                    f"multiple of the alignment {alignment}",
                    tensor.info_offset,
                    Severity.MEDIUM,
                )
            end = begin + (tensor.nbytes or 0)
            if end > size:
                self.report(
                    "STK-GGUF-008",
                    f"tensor {tensor.name!r} spans bytes {begin}-{end} of a {size}-byte file",
                    tensor.info_offset,
                    Severity.MEDIUM,
                )
            if tensor.nbytes:
                placed.append((begin, end, tensor.name))
        placed.sort()
        reach, holder = 0, ""
        for begin, end, name in placed:
            if begin < reach:
                self.report(
                    "STK-GGUF-009",
                    f"tensor {name!r} starts at byte {begin}, inside {holder!r} (which ends "
                    f"at {reach})",
                    begin if begin < size else None,
                    Severity.MEDIUM,
                )
            if end > reach:
                reach, holder = end, name


SCANNER = GgufScanner()
