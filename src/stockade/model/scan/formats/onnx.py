"""ONNX models: external-data locations that leave the model's directory, custom-op
domains and ops that call back into Python, in the main graph, its subgraphs, training
graphs and model-local functions.

Read with the bounded wire reader, never with the `onnx` package or a runtime.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import ClassVar

from stockade.core.findings import Severity
from stockade.model.scan.interface import Blob, ScanContext, path_escapes
from stockade.model.scan.protobuf_wire import LEN, VARINT, Budget, Field, Message, WireError

__all__ = ["SCANNER", "OnnxScanner"]

RULE_EXTERNAL_ESCAPES = "STK-ONNX-001"
RULE_EXTERNAL_MISSING = "STK-ONNX-002"
RULE_CUSTOM_DOMAIN = "STK-ONNX-003"
RULE_PYTHON_OP = "STK-ONNX-004"
RULE_CONTRIB_OP = "STK-ONNX-005"

_STANDARD_DOMAINS = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training", "ai.onnx.preview"}
)
# Op types that hand control to a Python callable registered in the runtime's process
# (onnxruntime's PythonOp for exported autograd functions, onnxruntime-extensions' PyOp).
_PYTHON_OP_TYPES = frozenset({"PythonOp", "PythonOpGrad", "PyOp", "PyFunc", "PythonFunction"})
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL

# ModelProto fields and their wire types; unknown fields are tolerated, as protobuf does.
_MODEL_FIELDS = {
    1: VARINT,
    2: LEN,
    3: LEN,
    4: LEN,
    5: VARINT,
    6: LEN,
    7: LEN,
    8: LEN,
    14: LEN,
    20: LEN,
    25: LEN,
    26: LEN,
}
_GRAPH_FIELDS = frozenset({1, 2, 5, 10, 11, 12, 13, 14, 15, 16})
_DETECT_BUDGET = 100_000
_MAX_TEXT = 1 << 16


@dataclass
class _Uses:
    """All nodes of one flagged (domain, op type), gathered into one finding."""

    offset: int
    nodes: list[str] = field(default_factory=list)
    places: list[str] = field(default_factory=list)
    count: int = 0


class OnnxScanner:
    """ONNX `ModelProto` files, recognised by `ir_version` and a graph or functions."""

    name: ClassVar[str] = "onnx"

    def detect(self, blob: Blob) -> bool:
        data = blob.data
        if len(data) < 4:
            return False
        try:
            return _looks_like_model(Message(data, budget=Budget(_DETECT_BUDGET, 4)))
        except WireError:  # the graph's first field is itself broken
            return False

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        walk = _Walk(blob, ctx)
        try:
            walk.model(Message(blob.data, budget=Budget()))
        except WireError as exc:
            ctx.error(blob, f"onnx: {exc.reason}", offset=exc.offset)
        finally:
            walk.flush()


def _looks_like_model(root: Message) -> bool:
    """`ir_version` and a graph (or model-local functions) with the wire types ModelProto
    gives them; a file truncated after those still counts, so its scan can fail closed."""
    ir_version = False
    body = False
    try:
        for item in root:
            expected = _MODEL_FIELDS.get(item.number)
            if expected is None:
                continue
            if item.wire_type != expected:
                return False
            if item.number == 1:
                ir_version = 1 <= item.value <= 100
                if not ir_version:
                    return False
            elif item.number == 7:
                first = next(iter(item.message()), None)
                if first is not None and first.number not in _GRAPH_FIELDS:
                    return False
                body = True
            elif item.number == 25:
                body = True
    except WireError:
        pass
    return ir_version and body


class _Walk:
    def __init__(self, blob: Blob, ctx: ScanContext) -> None:
        self.blob = blob
        self.ctx = ctx
        self.local_functions: set[tuple[str, str]] = set()
        self.ops: dict[tuple[str, str, str], _Uses] = {}
        self.locations: dict[tuple[str, str], tuple[Severity, str, int, list[str]]] = {}

    # -- structure ----------------------------------------------------------------------
    def model(self, root: Message) -> None:
        # Model-local functions first, so calls to them are not taken for custom ops; a
        # break here surfaces again below, after the graph has been walked.
        with contextlib.suppress(WireError):
            for item in root:
                if item.number == 25 and item.wire_type == LEN:
                    self.local_functions.add(_function_id(item.message()))
        for item in root:
            if item.wire_type != LEN:
                continue
            if item.number == 7:
                self.graph(item.message(), "graph")
            elif item.number == 20:
                for part in item.message():
                    if part.number in (1, 2) and part.wire_type == LEN:
                        kind = "initialization" if part.number == 1 else "algorithm"
                        self.graph(part.message(), f"training {kind} graph")
            elif item.number == 25:
                self.function(item.message())

    def graph(self, graph: Message, place: str) -> None:
        for item in graph:
            if item.wire_type != LEN:
                continue
            if item.number == 1:
                self.node(item, place)
            elif item.number == 5:
                self.tensor(item.message(), place)
            elif item.number == 15:
                self.sparse_tensor(item.message(), place)

    def function(self, function: Message) -> None:
        domain, name = _function_id(function)
        place = f"function {domain}:{name}" if domain else f"function {name}"
        for item in function:
            if item.number == 7 and item.wire_type == LEN:
                self.node(item, place)

    def node(self, item: Field, place: str) -> None:
        op_type = domain = name = ""
        attributes: list[Field] = []
        for part in item.message():
            if part.wire_type != LEN:
                continue
            if part.number == 4:
                op_type = part.text(256)
            elif part.number == 7:
                domain = part.text(256)
            elif part.number == 3:
                name = part.text(256)
            elif part.number == 5:
                attributes.append(part)
        self.op(domain, op_type, name or "?", place, item.offset)
        for attribute in attributes:
            self.attribute(attribute.message(), f"{place} > {op_type} {name or '?'}")

    def attribute(self, attribute: Message, place: str) -> None:
        for item in attribute:
            if item.wire_type != LEN:
                continue
            if item.number in (6, 11):  # g, graphs: If/Loop/Scan bodies
                self.graph(item.message(), place)
            elif item.number in (5, 10):  # t, tensors
                self.tensor(item.message(), place)
            elif item.number in (22, 23):  # sparse_tensor, sparse_tensors
                self.sparse_tensor(item.message(), place)

    def sparse_tensor(self, sparse: Message, place: str) -> None:
        for item in sparse:
            if item.number in (1, 2) and item.wire_type == LEN:  # values, indices
                self.tensor(item.message(), place)

    def tensor(self, tensor: Message, place: str) -> None:
        name = ""
        locations: list[Field] = []
        external = False
        for item in tensor:
            if item.number == 8 and item.wire_type == LEN:
                name = item.text(256)
            elif item.number == 14 and item.wire_type == VARINT:
                external = item.value == _EXTERNAL
            elif item.number == 13 and item.wire_type == LEN:
                key = value = None
                for part in item.message():
                    if part.number == 1 and part.wire_type == LEN:
                        key = part.text(64)
                    elif part.number == 2 and part.wire_type == LEN:
                        value = part
                if key == "location" and value is not None:
                    locations.append(value)
        if not external:
            return
        if not locations:
            self.external_data("", name or "?", tensor.start)
        # Readers keep the last location; every one is judged.
        for location in locations:
            self.external_data(location.text(_MAX_TEXT), name or "?", location.offset)

    # -- checks -------------------------------------------------------------------------
    def op(self, domain: str, op_type: str, name: str, place: str, offset: int) -> None:
        if domain in _STANDARD_DOMAINS:
            return
        if op_type in _PYTHON_OP_TYPES:
            rule = RULE_PYTHON_OP
        elif (domain, op_type) in self.local_functions:
            return
        elif domain == "com.microsoft" or domain.startswith("com.microsoft."):
            rule = RULE_CONTRIB_OP
        else:
            rule = RULE_CUSTOM_DOMAIN
        uses = self.ops.setdefault((rule, domain, op_type), _Uses(offset))
        uses.count += 1
        if len(uses.nodes) < 5:
            uses.nodes.append(name)
        if place not in uses.places and len(uses.places) < 5:
            uses.places.append(place)

    def external_data(self, location: str, tensor: str, offset: int) -> None:
        problem = _location_problem(location, self.blob.base)
        if problem is None:
            return
        severity, reason = problem
        entry = self.locations.get((location, reason))
        if entry is None:
            self.locations[(location, reason)] = (severity, reason, offset, [tensor])
        elif len(entry[3]) < 5:
            entry[3].append(tensor)

    def flush(self) -> None:
        for (rule, domain, op_type), uses in self.ops.items():
            title, severity, why = {
                RULE_PYTHON_OP: (
                    "ONNX node calls back into Python",
                    Severity.HIGH,
                    "runtimes that implement it call a Python function registered in the "
                    "loading process",
                ),
                RULE_CUSTOM_DOMAIN: (
                    "ONNX node uses a custom operator domain",
                    Severity.MEDIUM,
                    "running it needs a custom-op library loaded into the runtime",
                ),
                RULE_CONTRIB_OP: (
                    "ONNX node uses an ONNX Runtime contrib operator",
                    Severity.INFO,
                    "implemented by ONNX Runtime's com.microsoft contrib ops",
                ),
            }[rule]
            op = f"{domain}:{op_type}"
            self.ctx.report(
                self.blob,
                rule,
                title,
                severity,
                offset=uses.offset,
                detail=(
                    f"{op}: {why}; {uses.count} node(s) ({', '.join(uses.nodes)}) "
                    f"in {', '.join(uses.places)}"
                ),
                snippet=op,
                properties={"domain": domain, "op_type": op_type, "count": uses.count},
            )
        for (location, _), (severity, reason, offset, tensors) in self.locations.items():
            missing = severity is Severity.LOW
            self.ctx.report(
                self.blob,
                RULE_EXTERNAL_MISSING if missing else RULE_EXTERNAL_ESCAPES,
                "ONNX external data file is missing"
                if missing
                else "ONNX external data path leaves the model's directory",
                severity,
                offset=offset,
                detail=f"{location!r} {reason}; tensors: {', '.join(tensors)}",
                snippet=location,
                category="model-integrity" if missing else "model-file-access",
            )
        self.ops.clear()
        self.locations.clear()


def _function_id(function: Message) -> tuple[str, str]:
    domain = name = ""
    for item in function:
        if item.wire_type != LEN:
            continue
        if item.number == 10:
            domain = item.text(256)
        elif item.number == 1:
            name = item.text(256)
    return domain, name


def _location_problem(location: str, base: str | None) -> tuple[Severity, str] | None:
    """What is wrong with an external-data location, read against the model's folder."""
    if "\x00" in location:
        return Severity.HIGH, "holds a NUL byte, which truncates the path the runtime opens"
    if path_escapes(location):
        return Severity.HIGH, "is absolute or climbs out of the model's directory"
    if base is None:
        return None
    if not location:
        return Severity.LOW, "is empty: the tensor's data cannot be found"
    full = os.path.join(base, location)
    if not os.path.lexists(full):
        return Severity.LOW, "does not exist beside the model"
    real = os.path.realpath(full)
    root = os.path.realpath(base)
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        return Severity.HIGH, f"is a link that resolves outside the model's directory ({real})"
    return None


SCANNER = OnnxScanner()
