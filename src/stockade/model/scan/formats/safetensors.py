"""safetensors files: the length-prefixed JSON header, its metadata, and every tensor's
dtype, shape and byte range, checked against the file without touching tensor bytes.

A header that cannot be read is an error; an inconsistent one is a finding, because
loaders other than the reference one have trusted these numbers.
"""

from __future__ import annotations

import json
import reprlib
import struct
from collections.abc import Mapping
from typing import Any, ClassVar

from stockade.core.findings import Severity
from stockade.model.scan.interface import Blob, ScanContext

__all__ = ["DTYPE_BITS", "MAX_DIMS", "MAX_HEADER", "SCANNER", "SafetensorsScanner"]

MAX_HEADER = 100_000_000  # the reference implementation's limit
MAX_DIMS = 64  # numpy's limit; no framework writes more
_DETECT_LIMIT = 1 << 32  # a header length past this is not a safetensors file at all
_MAX_REPEATS = 20

# dtype -> bits per element, as the reference implementation defines them.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

_RULES = {
    "STK-ST-001": "safetensors header length is invalid",
    "STK-ST-002": "safetensors header is malformed",
    "STK-ST-003": "safetensors metadata is not a map of strings",
    "STK-ST-004": "safetensors tensor has an unknown dtype",
    "STK-ST-005": "safetensors tensor has an invalid shape",
    "STK-ST-006": "safetensors tensor byte range does not match its shape",
    "STK-ST-007": "safetensors tensor lies outside the data",
    "STK-ST-008": "safetensors tensors overlap",
    "STK-ST-009": "safetensors data has bytes no tensor covers",
    "STK-ST-010": "safetensors header repeats a key",
}
_FIX = (
    "Do not load this file: its header disagrees with its data, which has been used to make "
    "loaders read or write out of bounds. Re-export the tensors with the safetensors library."
)


def _constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


class SafetensorsScanner:
    """Validate a safetensors header; the tensor bytes are only located, never read."""

    name: ClassVar[str] = "safetensors"

    def detect(self, blob: Blob) -> bool:
        head = bytes(blob.data[:9])
        if len(head) < 9 or head[8:9] != b"{":
            return False
        (length,) = struct.unpack("<Q", head[:8])
        # An absurd length before a JSON header is still safetensors: a loader-crashing one.
        if 2 <= length < _DETECT_LIMIT:
            return True
        # Eight bytes of text (indentation, say) before a brace are a JSON file, not a length.
        textual = all(32 <= b < 127 or b in (9, 10, 13) for b in head[:8])
        return not textual and bytes(blob.data[8:10]) == b'{"'

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        _Scan(blob, ctx).run()


class _Scan:
    def __init__(self, blob: Blob, ctx: ScanContext) -> None:
        self.blob = blob
        self.ctx = ctx
        self.counts: dict[str, int] = {}

    def report(
        self, rule_id: str, detail: str, severity: Severity = Severity.MEDIUM, offset: int = 0
    ) -> None:
        count = self.counts[rule_id] = self.counts.get(rule_id, 0) + 1
        if count > _MAX_REPEATS:
            return
        self.ctx.report(
            self.blob,
            rule_id,
            _RULES[rule_id],
            severity,
            offset=offset,
            detail=detail,
            remediation=_FIX,
            category="model-malformed",
        )

    def summarise(self) -> None:
        for rule_id, count in self.counts.items():
            if count > _MAX_REPEATS:
                self.ctx.report(
                    self.blob,
                    rule_id,
                    _RULES[rule_id],
                    Severity.LOW if rule_id == "STK-ST-009" else Severity.MEDIUM,
                    detail=f"{count - _MAX_REPEATS} more of these were not listed",
                    remediation=_FIX,
                    category="model-malformed",
                )

    def run(self) -> None:
        try:
            self.check()
        finally:
            self.summarise()

    def check(self) -> None:
        blob, data = self.blob, self.blob.data
        size = len(data)
        (length,) = struct.unpack("<Q", bytes(data[:8]))
        if length > MAX_HEADER or 8 + length > size:
            self.report(
                "STK-ST-001",
                f"header declares {length} bytes; the file has {size - 8} after the length "
                f"and readers accept at most {MAX_HEADER}",
                offset=0,
            )
            self.ctx.error(blob, "safetensors header length is past the end of the file")
            return
        raw = bytes(data[8 : 8 + length])
        header = self.parse(raw)
        if header is None:
            return
        data_start = 8 + length
        data_size = size - data_start
        self.metadata(header)
        spans: list[tuple[int, int, str]] = []
        for name, info in header.items():
            if name == "__metadata__":
                continue
            span = self.tensor(name, info, data_size, data_start)
            if span is not None:
                spans.append(span)
        self.layout(spans, data_size, data_start)

    def parse(self, raw: bytes) -> dict[str, Any] | None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.ctx.error(self.blob, f"safetensors header is not UTF-8: {exc.reason}", offset=8)
            return None
        repeated: list[str] = []

        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            seen: dict[str, Any] = {}
            for key, value in items:
                if key in seen:
                    repeated.append(key)
                seen[key] = value
            return seen

        try:
            header = json.loads(text, object_pairs_hook=pairs, parse_constant=_constant)
        except RecursionError:
            self.ctx.error(self.blob, "safetensors header nests too deeply to parse", offset=8)
            return None
        except ValueError as exc:
            self.ctx.error(self.blob, f"safetensors header is not JSON: {exc}", offset=8)
            return None
        if not isinstance(header, dict):
            self.report(
                "STK-ST-002",
                f"header is a JSON {type(header).__name__}, not an object",
                offset=8,
            )
            return None
        if repeated:
            names = ", ".join(repr(key) for key in dict.fromkeys(repeated[:10]))
            self.report(
                "STK-ST-010",
                f"the header gives {names} more than once in one object; parsers disagree on "
                "which entry counts, so different tools see different tensors",
                offset=8,
            )
        return header

    def metadata(self, header: Mapping[str, Any]) -> None:
        if "__metadata__" not in header:
            return
        metadata = header["__metadata__"]
        if not isinstance(metadata, dict):
            self.report(
                "STK-ST-003", f"__metadata__ is a JSON {_kind(metadata)}, not an object", offset=8
            )
            return
        wrong = [key for key, value in metadata.items() if not isinstance(value, str)]
        if wrong:
            listed = ", ".join(repr(key) for key in wrong[:10])
            self.report(
                "STK-ST-003", f"__metadata__ values that are not strings: {listed}", offset=8
            )

    def tensor(
        self, name: str, info: Any, data_size: int, data_start: int
    ) -> tuple[int, int, str] | None:
        label = repr(name)
        if not isinstance(info, dict):
            self.report(
                "STK-ST-002", f"tensor {label} is a JSON {_kind(info)}, not an object", offset=8
            )
            return None
        extra = sorted(set(info) - {"dtype", "shape", "data_offsets"})
        if extra:
            self.report(
                "STK-ST-002",
                f"tensor {label} has unexpected fields {extra}",
                Severity.LOW,
                offset=8,
            )
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        bits = DTYPE_BITS.get(dtype) if isinstance(dtype, str) else None
        if bits is None:
            self.report("STK-ST-004", f"tensor {label} has dtype {dtype!r}", offset=8)
        if not (
            isinstance(shape, list)
            and len(shape) <= MAX_DIMS
            and all(
                isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape
            )
        ):
            self.report(
                "STK-ST-005",
                f"tensor {label} has shape {_short(shape)}: not a list of at most {MAX_DIMS} "
                "non-negative integers",
                offset=8,
            )
            shape = None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]
        ):
            self.report(
                "STK-ST-006",
                f"tensor {label} has data_offsets {_short(offsets)}: not [begin, end] with "
                "0 <= begin <= end",
                offset=8,
            )
            return None
        begin, end = offsets
        if bits is not None and shape is not None:
            elements = _elements(shape, data_size * 8)
            if elements > data_size * 8:
                self.report(
                    "STK-ST-006",
                    f"tensor {label}: {dtype} {_short(shape)} needs more bytes than the file has",
                    offset=8,
                )
            elif elements * bits % 8:
                self.report(
                    "STK-ST-006",
                    f"tensor {label}: {elements} elements of {dtype} do not fill whole bytes",
                    offset=8,
                )
            elif end - begin != elements * bits // 8:
                self.report(
                    "STK-ST-006",
                    f"tensor {label}: {dtype} {shape} needs {elements * bits // 8} bytes, "
                    f"data_offsets give {end - begin}",
                    offset=data_start + begin if begin < data_size else 8,
                )
        if end > data_size:
            self.report(
                "STK-ST-007",
                f"tensor {label} ends at data byte {end}; the data has {data_size} bytes",
                offset=8,
            )
        return begin, end, name

    def layout(self, spans: list[tuple[int, int, str]], data_size: int, data_start: int) -> None:
        spans.sort()
        covered = 0
        holder = ""
        gaps = 0
        for begin, end, name in spans:
            if begin < covered and end > begin:
                self.report(
                    "STK-ST-008",
                    f"tensor {name!r} starts at data byte {begin}, inside {holder!r} (which "
                    f"ends at {covered}): writing one changes the other",
                    offset=data_start + begin if begin < data_size else 8,
                )
            elif begin > covered:
                gaps += begin - covered
            if end > covered:
                covered, holder = end, name
        if covered < data_size:
            gaps += data_size - covered
        if gaps:
            self.report(
                "STK-ST-009",
                f"{gaps} of the {data_size} data bytes belong to no tensor; they can carry "
                "anything (the reference loader refuses such files)",
                Severity.LOW,
                offset=data_start,
            )


def _kind(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, int | float) else "null"
    )


def _elements(shape: list[int], cap: int) -> int:
    """The element count, or cap + 1 once it passes `cap` (a crafted shape of a million
    huge dimensions would otherwise cost a quadratic big-integer product)."""
    if 0 in shape:
        return 0
    elements = 1
    for dim in shape:
        elements *= dim
        if elements > cap:
            return cap + 1
    return elements


_REPR = reprlib.Repr()
_REPR.maxlist, _REPR.maxstring, _REPR.maxother, _REPR.maxdict, _REPR.maxlevel = 8, 60, 60, 4, 2


def _short(value: object) -> str:
    return _REPR.repr(value)


SCANNER = SafetensorsScanner()
