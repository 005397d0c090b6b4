"""NumPy `.npy` arrays: the header is parsed as a literal (never evaluated), its shape and
dtype checked against the data, and an object array's pickle dispatched to be inspected.
"""

from __future__ import annotations

import ast
import math
import re
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from stockade.core.errors import InvalidInput
from stockade.core.findings import Severity
from stockade.model.scan.interface import Blob, ScanContext

__all__ = ["SCANNER", "ArrayHeader", "HeaderProblem", "NumpyArray", "read_header"]

SHORT_RULE = "STK-NPY-001"
TRAILING_RULE = "STK-NPY-002"
OBJECT_RULE = "STK-NPY-003"

MAGIC = b"\x93NUMPY"
# numpy refuses headers over 10000 bytes unless the file is trusted (allow_pickle); we
# read up to this many and call anything longer uninspectable.
_MAX_HEADER = 1 << 20
_MAX_NESTING = 32
_OBJECT_MEMBER = "<object array pickle>"

_TYPE = re.compile(r"([<>|=]?)([a-zA-Z?])(\d*)(\[[a-zA-Z0-9]+\])?")
_SIZES = {
    "?": 1, "b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "l": 8, "L": 8, "q": 8, "Q": 8,
    "e": 2, "f": 4, "d": 8, "g": 16, "F": 8, "D": 16, "G": 32, "O": 8, "M": 8, "m": 8,
}  # fmt: skip
_SIZED = frozenset("biufcSUVMmO")  # type codes whose size follows them ("f4", "S10")


class HeaderProblem(InvalidInput):
    """The header cannot be read the way numpy reads it."""


@dataclass(frozen=True)
class ArrayHeader:
    """What an `.npy` header declares, and where the array data starts."""

    version: tuple[int, int]
    descr: Any
    fortran_order: bool
    shape: tuple[int, ...]
    data_offset: int
    has_objects: bool
    itemsize: int | None  # None when the dtype is not one we can size

    @property
    def data_size(self) -> int | None:
        if self.itemsize is None or self.has_objects:
            return None
        return math.prod(self.shape) * self.itemsize


def read_header(data: bytes | memoryview) -> ArrayHeader:
    """Parse an `.npy` header without evaluating anything; raises `HeaderProblem`."""
    view = memoryview(data).cast("B")
    if bytes(view[:6]) != MAGIC or len(view) < 10:
        raise HeaderProblem("not a .npy file")
    major, minor = view[6], view[7]
    if major == 1:
        (length,) = struct.unpack_from("<H", view, 8)
        start = 10
    elif major in (2, 3):
        if len(view) < 12:
            raise HeaderProblem("header length missing")
        (length,) = struct.unpack_from("<I", view, 8)
        start = 12
    else:
        raise HeaderProblem(f"unknown format version {major}.{minor}")
    if length > _MAX_HEADER:
        raise HeaderProblem(f"header of {length} bytes is too large to inspect")
    if start + length > len(view):
        raise HeaderProblem("header runs past the end of the data")
    raw = bytes(view[start : start + length])
    try:
        text = raw.decode("utf-8" if major == 3 else "latin1")
    except UnicodeDecodeError:
        raise HeaderProblem("header is not valid UTF-8") from None
    fields = _literal(text)
    if not isinstance(fields, dict) or set(fields) != {"descr", "fortran_order", "shape"}:
        raise HeaderProblem("header must hold exactly descr, fortran_order and shape")
    shape = fields["shape"]
    if not isinstance(shape, tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise HeaderProblem(f"shape is not a tuple of sizes: {shape!r}")
    if not isinstance(fields["fortran_order"], bool):
        raise HeaderProblem("fortran_order is not a boolean")
    descr = fields["descr"]
    has_objects, itemsize = _describe(descr, 0)
    return ArrayHeader(
        version=(major, minor),
        descr=descr,
        fortran_order=fields["fortran_order"],
        shape=shape,
        data_offset=start + length,
        has_objects=has_objects,
        itemsize=itemsize,
    )


def _literal(text: str) -> Any:
    # Python's parser can overflow the C stack on deep nesting; numpy headers are flat.
    depth = deepest = 0
    for match in re.finditer(r"'[^']*'|\"[^\"]*\"|[\[({]|[\])}]", text):
        mark = match.group()
        if mark in ("[", "(", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif mark in ("]", ")", "}"):
            depth -= 1
    if deepest > _MAX_NESTING:
        raise HeaderProblem(f"header nests deeper than {_MAX_NESTING} levels")
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise HeaderProblem(f"header is not a literal: {type(exc).__name__}") from None


def _describe(descr: Any, depth: int) -> tuple[bool, int | None]:
    """Whether a dtype description holds Python objects, and its item size if known."""
    if depth > _MAX_NESTING:
        raise HeaderProblem("dtype nests too deeply")
    if isinstance(descr, str):
        return _describe_type(descr)
    if isinstance(descr, list):
        objects = False
        total: int | None = 0
        for field in descr:
            if not isinstance(field, tuple) or len(field) not in (2, 3):
                raise HeaderProblem(f"malformed structured dtype field {field!r}")
            field_objects, size = _describe(field[1], depth + 1)
            objects = objects or field_objects
            count = 1
            if len(field) == 3:
                sub = field[2]
                sub = (sub,) if isinstance(sub, int) else sub
                if not isinstance(sub, tuple) or not all(
                    isinstance(n, int) and n >= 0 for n in sub
                ):
                    raise HeaderProblem(f"malformed subarray shape {field[2]!r}")
                count = math.prod(sub)
            total = None if total is None or size is None else total + size * count
        return objects, total
    raise HeaderProblem(f"dtype description is neither text nor a field list: {descr!r}")


def _describe_type(code: str) -> tuple[bool, int | None]:
    match = _TYPE.fullmatch(code.strip())
    if match is None:
        # numpy accepts other spellings ("float32", "int64"); they hold no objects.
        return ("object" in code.lower() or code.strip() == "O"), None
    _order, kind, digits, _unit = match.groups()
    if kind == "O":
        return True, None
    if digits:
        size = int(digits)
        if kind == "U":
            return False, size * 4
        if kind == "c" or kind in _SIZED:
            return False, size
        return False, None
    return False, _SIZES.get(kind)


class NumpyArray:
    """A `.npy` array (on its own or as an `.npz` member)."""

    name: ClassVar[str] = "numpy"

    def detect(self, blob: Blob) -> bool:
        return bytes(memoryview(blob.data)[:6]) == MAGIC

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        view = memoryview(blob.data).cast("B")
        try:
            header = read_header(view)
        except HeaderProblem as exc:
            ctx.error(blob, f".npy header: {exc}", offset=0)
            return
        body = view[header.data_offset :]
        if header.has_objects:
            ctx.report(
                blob,
                OBJECT_RULE,
                "NumPy array of Python objects: loading it unpickles",
                Severity.INFO,
                offset=header.data_offset,
                detail=f"dtype {header.descr!r}: numpy.load needs allow_pickle=True and "
                "unpickles the data (the pickle was inspected)",
                remediation="Store numeric arrays, or convert the objects to a data format.",
                references=("CWE-502",),
                category="model-format",
            )
            ctx.scan_member(blob, _OBJECT_MEMBER, body)
            return
        expected = header.data_size
        if expected is None:
            return
        if len(body) < expected:
            ctx.report(
                blob,
                SHORT_RULE,
                "NumPy array data is shorter than its header declares",
                Severity.LOW,
                offset=header.data_offset,
                detail=f"shape {header.shape} of {header.descr!r} needs {expected} bytes, "
                f"{len(body)} present",
                remediation="The file is truncated or altered; numpy refuses to load it.",
                references=(),
                category="integrity",
            )
        elif len(body) > expected:
            rest = body[expected:]
            if bytes(rest[:6]) != MAGIC:
                # np.save() called twice on one file is the benign reason for extra bytes.
                ctx.report(
                    blob,
                    TRAILING_RULE,
                    "Bytes after the NumPy array data",
                    Severity.LOW,
                    offset=header.data_offset + expected,
                    detail=f"{len(rest)} bytes follow the {expected} bytes the header "
                    "declares; inspected separately",
                    remediation="Rebuild the file from the original array.",
                    references=(),
                    category="integrity",
                )
            ctx.scan_member(blob, "<after array>", rest)


SCANNER = NumpyArray()
