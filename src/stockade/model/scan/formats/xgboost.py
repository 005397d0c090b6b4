"""XGBoost models saved as JSON or UBJSON: data only (trees and parameters), so a
well-formed one is clean; a truncated or malformed one is an error (not inspected).

UBJSON is walked value by value without building it, skipping typed numeric arrays by
their declared sizes, so a large model costs little more than its structure.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

from stockade.model.scan.interface import Blob, ScanContext

__all__ = ["SCANNER", "UbjsonError", "XGBoostScanner", "ubjson_keys"]

_JSON_HEAD = re.compile(
    rb'\A(?:\xef\xbb\xbf)?\s*\{\s*(?:"version"\s*:\s*\[[\d\s,]*\]\s*,\s*)?"learner"\s*:\s*\{'
)
_MAX_JSON = 512 << 20  # parsed in full up to this size; larger ones are checked at the ends
_MAX_DEPTH = 128

# UBJSON markers: fixed payload sizes; S and H carry a length; [ and { open containers.
_FIXED = {
    ord("Z"): 0,
    ord("N"): 0,
    ord("T"): 0,
    ord("F"): 0,
    ord("i"): 1,
    ord("U"): 1,
    ord("C"): 1,
    ord("I"): 2,
    ord("l"): 4,
    ord("d"): 4,
    ord("L"): 8,
    ord("D"): 8,
}
_INTEGERS = {
    ord("i"): struct.Struct(">b"),
    ord("U"): struct.Struct(">B"),
    ord("I"): struct.Struct(">h"),
    ord("l"): struct.Struct(">i"),
    ord("L"): struct.Struct(">q"),
}
_STRING, _HUGE = ord("S"), ord("H")
_ARRAY, _OBJECT, _ARRAY_END, _OBJECT_END = ord("["), ord("{"), ord("]"), ord("}")
_NOOP = ord("N")


class UbjsonError(ValueError):
    """The bytes are not one well-formed UBJSON value; `offset` is where it went wrong."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} at byte {offset}")
        self.offset = offset


@dataclass
class _Container:
    closer: int
    remaining: int | None  # None: runs until its closing marker
    element: int | None  # the marker every element shares (`$`), None: each has its own
    path: tuple[str, ...]
    keys: set[str] | None = field(default=None)


def ubjson_keys(data: bytes | memoryview, depth: int = 2) -> dict[tuple[str, ...], set[str]]:
    """Walk one UBJSON value that fills `data` exactly and return the object keys found
    within `depth` levels, by path (`()` is the top object). Raises `UbjsonError`."""
    view = memoryview(data)
    end = len(view)
    if end == 0:
        raise UbjsonError("empty", 0)
    found: dict[tuple[str, ...], set[str]] = {}
    stack: list[_Container] = []
    pos = 0

    def need(size: int) -> None:
        if size > end - pos:
            raise UbjsonError(f"needs {size} bytes but the data ends", pos)

    def integer(marker: int) -> int:
        nonlocal pos
        fmt = _INTEGERS.get(marker)
        if fmt is None:
            raise UbjsonError(f"length marker {chr(marker)!r} is not an integer type", pos)
        need(fmt.size)
        (value,) = fmt.unpack_from(view, pos)
        pos += fmt.size
        if value < 0:
            raise UbjsonError(f"negative length {value}", pos)
        return int(value)

    def byte() -> int:
        nonlocal pos
        need(1)
        value = view[pos]
        pos += 1
        return value

    def value(marker: int, path: tuple[str, ...]) -> None:
        """Consume one value whose marker is already read; containers are pushed."""
        nonlocal pos
        size = _FIXED.get(marker)
        if size is not None:
            need(size)
            pos += size
            return
        if marker in (_STRING, _HUGE):
            length = integer(byte())
            need(length)
            pos += length
            return
        if marker not in (_ARRAY, _OBJECT):
            raise UbjsonError(f"unknown marker {marker:#04x}", pos - 1)
        if len(stack) >= _MAX_DEPTH:
            raise UbjsonError(f"containers nested deeper than {_MAX_DEPTH}", pos)
        element = count = None
        if pos < end and view[pos] == ord("$"):
            pos += 1
            element = byte()
            if element not in _FIXED and element not in (_STRING, _HUGE, _ARRAY, _OBJECT):
                raise UbjsonError(f"unknown element marker {element:#04x}", pos - 1)
            if byte() != ord("#"):
                raise UbjsonError("a typed container needs a count", pos - 1)
            count = integer(byte())
        elif pos < end and view[pos] == ord("#"):
            pos += 1
            count = integer(byte())
        is_object = marker == _OBJECT
        if count is not None:
            per_element = (2 if is_object else 0) + (_FIXED.get(element, 1) if element else 1)
            need(count * per_element)
            if not is_object and element is not None and element in _FIXED:
                pos += count * _FIXED[element]  # typed numeric array: skip it whole
                return
        keys: set[str] | None = None
        if is_object and len(path) < depth:
            keys = found.setdefault(path, set())
        closer = _OBJECT_END if is_object else _ARRAY_END
        stack.append(_Container(closer, count, element, path, keys))

    value(byte(), ())
    while stack:
        top = stack[-1]
        if top.remaining == 0:
            stack.pop()
            continue
        if top.remaining is None:
            need(1)
            if view[pos] == top.closer:
                pos += 1
                stack.pop()
                continue
            if view[pos] == _NOOP and top.element is None:
                pos += 1
                continue
        child = top.path
        if top.closer == _OBJECT_END:
            length = integer(byte())
            need(length)
            if top.keys is not None:
                key = bytes(view[pos : pos + length]).decode("utf-8", "replace")
                top.keys.add(key)
                child = (*top.path, key)
            pos += length
        if top.remaining is not None:
            top.remaining -= 1
        value(top.element if top.element is not None else byte(), child)
    if pos != end:
        raise UbjsonError(f"{end - pos} bytes follow the model", pos)
    return found


class XGBoostScanner:
    """Recognise XGBoost JSON and UBJSON models and check they are complete."""

    name: ClassVar[str] = "xgboost"

    def detect(self, blob: Blob) -> bool:
        head = bytes(blob.data[:512])
        return bool(_JSON_HEAD.match(head)) or _ubjson_head(head)

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        head = bytes(blob.data[:512])
        if _JSON_HEAD.match(head):
            self.scan_json(blob, ctx)
        else:
            self.scan_ubjson(blob, ctx)

    def scan_json(self, blob: Blob, ctx: ScanContext) -> None:
        data = blob.data
        if len(data) > _MAX_JSON:
            if not bytes(data[-4096:]).rstrip().endswith(b"}"):
                ctx.error(blob, "XGBoost JSON model is truncated: it does not end its object")
            return
        try:
            model = json.loads(bytes(data))
        except RecursionError:
            ctx.error(blob, "XGBoost JSON model nests too deeply to parse")
            return
        except ValueError as exc:
            ctx.error(blob, f"XGBoost JSON model does not parse: {exc}")
            return
        problem = _model_problem(model)
        if problem:
            ctx.error(blob, f"not a complete XGBoost model: {problem}")

    def scan_ubjson(self, blob: Blob, ctx: ScanContext) -> None:
        try:
            keys = ubjson_keys(blob.data)
        except UbjsonError as exc:
            ctx.error(blob, f"XGBoost UBJSON model is malformed: {exc}", offset=exc.offset)
            return
        top = keys.get((), set())
        learner = keys.get(("learner",), set())
        missing = [f"learner.{key}" for key in _LEARNER_KEYS if key not in learner]
        if "learner" not in top or "version" not in top:
            missing = ["learner" if "learner" not in top else "version"]
        if missing:
            ctx.error(blob, f"not a complete XGBoost model: missing {', '.join(missing)}")


_LEARNER_KEYS = ("gradient_booster", "learner_model_param", "objective")


def _model_problem(model: Any) -> str | None:
    if not isinstance(model, dict) or not isinstance(model.get("learner"), dict):
        return "no learner object"
    version = model.get("version")
    if not (
        isinstance(version, list)
        and version
        and all(isinstance(part, int) and not isinstance(part, bool) for part in version)
    ):
        return "no version"
    learner = model["learner"]
    for key in _LEARNER_KEYS:
        if not isinstance(learner.get(key), dict):
            return f"no learner.{key}"
    booster = learner["gradient_booster"]
    if not isinstance(booster.get("name"), str):
        return "the gradient booster has no name"
    return None


def _ubjson_head(head: bytes) -> bool:
    """`{`, then a key "learner" or "version" with an integer length marker."""
    if len(head) < 3 or head[0] != _OBJECT:
        return False
    fmt = _INTEGERS.get(head[1])
    if fmt is None or len(head) < 2 + fmt.size:
        return False
    (length,) = fmt.unpack_from(head, 2)
    start = 2 + fmt.size
    return length == 7 and head[start : start + 7] in (b"learner", b"version")


SCANNER = XGBoostScanner()
