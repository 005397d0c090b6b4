"""TensorFlow SavedModels (`saved_model.pb`, `keras_metadata.pb`, `fingerprint.pb`,
`variables.index`) and frozen `GraphDef`s: ops that run Python, touch files or reach the
network, in the graph and in its function library; asset paths; embedded Keras JSON.

Read with the bounded wire reader: no generated protobuf classes, no TensorFlow.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from typing import ClassVar

from stockade.core.findings import Severity
from stockade.model.scan.formats.keras import MAX_JSON_BYTES, scan_keras_json
from stockade.model.scan.interface import Blob, ScanContext, path_escapes
from stockade.model.scan.protobuf_wire import LEN, VARINT, Budget, Field, Message, WireError

__all__ = ["SCANNER", "TFSavedModelScanner", "classify_op"]

RULE_PYTHON_OP = "STK-TF-001"
RULE_FILE_OP = "STK-TF-002"
RULE_NETWORK_OP = "STK-TF-003"
RULE_ASSET_PATH = "STK-TF-004"

# Ops that call back into the Python interpreter of the loading process.
_PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
# Ops that read, list or write files. Checkpointing ops (SaveV2, RestoreV2,
# MergeV2Checkpoints, ShardedFilename, ShardedFilespec, StringJoin, the V1 Save/Restore
# family) are in every normal SavedModel and stay quiet, as do vocabulary-table
# initialisers that read the model's own assets (InitializeTableFromTextFile).
_FILE_OPS = frozenset(
    {
        "ReadFile",
        "WriteFile",
        "MatchingFiles",
        "ImmutableConst",
        "WholeFileReader",
        "WholeFileReaderV2",
        "TextLineReader",
        "TextLineReaderV2",
        "TFRecordReader",
        "TFRecordReaderV2",
        "FixedLengthRecordReader",
        "FixedLengthRecordReaderV2",
        "LMDBReader",
        "TFRecordDataset",
        "TFRecordDatasetV2",
        "TextLineDataset",
        "FixedLengthRecordDataset",
        "FixedLengthRecordDatasetV2",
        "CSVDataset",
        "CSVDatasetV2",
        "ExperimentalCSVDataset",
        "SqlDataset",
        "ExperimentalSqlDataset",
        "LMDBDataset",
        "ExperimentalLMDBDataset",
        "MatchingFilesDataset",
        "ExperimentalMatchingFilesDataset",
        "DatasetToTFRecord",
        "ExperimentalDatasetToTFRecord",
        "SaveDataset",
        "SaveDatasetV2",
        "LoadDataset",
        "SnapshotDataset",
        "SnapshotDatasetV2",
        "SnapshotDatasetReader",
        "SnapshotNestedDatasetReader",
        "SnapshotChunkDataset",
        "DebugIdentity",
        "DebugIdentityV2",
        "DebugIdentityV3",
        "DebugNanCount",
        "DebugNumericSummary",
        "CreateSummaryFileWriter",
        "CreateSummaryDbWriter",
        "LoadAndRemapMatrix",
        "GenerateVocabRemapping",
    }
)
# Ops that open connections to other machines.
_NETWORK_OPS = frozenset(
    {
        "Rpc",
        "TryRpc",
        "RpcClient",
        "RpcServer",
        "RpcServerStart",
        "RpcServerRegister",
        "RpcCall",
        "RpcCheckStatus",
        "RpcGetValue",
        "DataServiceDataset",
        "DataServiceDatasetV2",
        "DataServiceDatasetV3",
        "DataServiceDatasetV4",
        "RegisterDataset",
        "RegisterDatasetV2",
        "DistributedSave",
        "GcsConfigureCredentials",
        "GcsConfigureBlockCache",
        "BigQueryReader",
        "GenerateBigQueryReaderPartitions",
    }
)
# Ops that touch files only with some attribute values: (attribute, is-it-a-file?).
_ATTR_FILE_OPS = {
    "PrintV2": ("output_stream", lambda value: value.startswith("file://")),
    "DecodeProtoV2": ("descriptor_source", lambda value: value not in ("", "local://")),
    "EncodeProto": ("descriptor_source", lambda value: value not in ("", "local://")),
}

_WATCHED_OPS = _PYTHON_OPS | _FILE_OPS | _NETWORK_OPS | frozenset(_ATTR_FILE_OPS)

# The footer magic of the sorted-string table TensorFlow's checkpoint index is written in.
_TABLE_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")
_OP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_>.\-]*")
# Protobuf text format (`saved_model.pbtxt`, `graph.pbtxt`), which TensorFlow also loads.
_TEXT_FORMAT_START = re.compile(
    rb"(?:[ \t\r\n]|#[^\n]*\n)*(?:saved_model_schema_version\s*:|meta_graphs\s*\{|node\s*\{)"
)
_TEXT_OP = re.compile(rb"\bop\s*:\s*((?:\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'|\s|#[^\n]*\n)+)")
_TEXT_NAME = re.compile(rb"\bname\s*:\s*\"((?:[^\"\\\n]|\\.)*)\"")
_TEXT_STRING = re.compile(rb"\"((?:[^\"\\\n]|\\.)*)\"|'((?:[^'\\\n]|\\.)*)'")
_TEXT_NEXT_NODE = re.compile(rb"\bnode(?:_def)?\s*\{")
_MAX_TEXT_FORMAT = 256 << 20
_DETECT_FIELDS = 64
_MAX_TEXT = 1 << 16


def classify_op(op: str) -> tuple[Severity, str, str] | None:
    """(severity, why, rule id) for an op that runs Python, touches files or reaches the
    network whatever its attributes; None for every other op."""
    if op in _PYTHON_OPS:
        return Severity.CRITICAL, "calls a Python function in the loading process", RULE_PYTHON_OP
    if op in _FILE_OPS:
        return Severity.HIGH, "reads or writes files", RULE_FILE_OP
    if op in _NETWORK_OPS:
        return Severity.HIGH, "connects to other machines", RULE_NETWORK_OP
    return None


@dataclass
class _OpUse:
    """Every use of one flagged op in a file, gathered into one finding."""

    rule: str
    severity: Severity
    reason: str
    offset: int
    nodes: list[str] = field(default_factory=list)
    places: list[str] = field(default_factory=list)
    count: int = 0


class TFSavedModelScanner:
    """SavedModel protobufs and frozen graphs, recognised by their leading fields."""

    name: ClassVar[str] = "tf_savedmodel"

    def detect(self, blob: Blob) -> bool:
        return _classify(blob) is not None

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        kind = _classify(blob)
        if kind in (None, "fingerprint", "checkpoint_index"):
            return  # data only: hashes and a table of tensor offsets
        walk = _Walk(blob, ctx)
        try:
            if kind == "text":
                walk.text_format(blob.data)
                return
            root = Message(blob.data, budget=Budget())
            if kind == "saved_model":
                walk.saved_model(root)
            elif kind == "graph_def":
                walk.graph(root, "graph")
            else:
                walk.keras_metadata(root)
        except WireError as exc:
            ctx.error(blob, f"{kind}: {exc.reason}", offset=exc.offset)
        finally:
            walk.flush()


# -- detection ---------------------------------------------------------------------------


def _classify(blob: Blob) -> str | None:
    data = blob.data
    if len(data) == 0:
        return None
    # TensorFlow opens these two by name whatever they hold: so do we, and fail closed
    # when they do not parse.
    if blob.name == "saved_model.pb":
        return "saved_model"
    if blob.name == "keras_metadata.pb":
        return "keras_metadata"
    if len(data) <= _MAX_TEXT_FORMAT and _TEXT_FORMAT_START.match(data):
        return "text"
    if len(data) >= 48 and bytes(data[-8:]) == _TABLE_MAGIC:
        return "checkpoint_index"
    try:
        fields = _leading_fields(data)
    except WireError:
        return None
    if not fields:
        return None
    if _is_saved_model(fields):
        return "saved_model"
    if _is_fingerprint(fields, len(data)):
        return "fingerprint"
    if _is_graph_def(fields):
        return "graph_def"
    if _is_keras_metadata(fields):
        return "keras_metadata"
    return None


def _leading_fields(data: bytes | memoryview) -> list[Field]:
    fields: list[Field] = []
    for item in Message(data, budget=Budget(max_fields=_DETECT_FIELDS * 4, max_depth=4)):
        fields.append(item)
        if len(fields) >= _DETECT_FIELDS:
            break
    return fields


def _child_fields(item: Field, limit: int = 16) -> list[Field]:
    fields: list[Field] = []
    for child in item.message():
        fields.append(child)
        if len(fields) >= limit:
            break
    return fields


def _is_saved_model(fields: list[Field]) -> bool:
    """`saved_model_schema_version = 1` (varint 1), then `meta_graphs = 2`, each a
    MetaGraphDef whose fields (meta_info_def=1 ... object_graph_def=7) are messages."""
    first = fields[0]
    if first.number != 1 or first.wire_type != VARINT or not 1 <= first.value <= 16:
        return False
    if any(f.number != 2 or f.wire_type != LEN for f in fields[1:]) or len(fields) < 2:
        return False
    try:
        parts = _child_fields(fields[1], 1)
    except WireError:
        return False
    return not parts or (parts[0].number <= 7 and parts[0].wire_type == LEN)


def _is_fingerprint(fields: list[Field], size: int) -> bool:
    """FingerprintDef: five uint64 hashes (fields 1-5) and a VersionDef (6)."""
    if size > 4096:
        return False
    hashes = {f.number for f in fields if f.number <= 5 and f.wire_type == VARINT}
    others = [f for f in fields if not (f.number <= 5 and f.wire_type == VARINT)]
    return len(hashes) >= 3 and all(f.number == 6 and f.wire_type == LEN for f in others)


def _is_graph_def(fields: list[Field]) -> bool:
    """GraphDef: node=1, library=2, version=3, versions=4, debug_info=5; the first node
    must read as a NodeDef with a name and an op."""
    kinds = {1: LEN, 2: LEN, 3: VARINT, 4: LEN, 5: LEN}
    if any(kinds.get(f.number) != f.wire_type for f in fields):
        return False
    node = next((f for f in fields if f.number == 1), None)
    if node is None:
        return False
    try:
        parts = _child_fields(node)
    except WireError:
        return False
    op = next((p for p in parts if p.number == 2), None)
    if op is None or op.wire_type != LEN or not 0 < op.value <= 256:
        return False
    return _OP_NAME.fullmatch(op.text()) is not None


def _is_keras_metadata(fields: list[Field]) -> bool:
    """SavedMetadata: repeated SavedObject{version=1, node_id=2, node_path=3,
    identifier=4, metadata=5}, identifiers `_tf_keras_*`, metadata JSON."""
    if any(f.number != 1 or f.wire_type != LEN for f in fields):
        return False
    try:
        parts = _child_fields(fields[0])
    except WireError:
        return False
    kinds = {1: LEN, 2: VARINT, 3: LEN, 4: LEN, 5: LEN}
    if any(kinds.get(p.number) != p.wire_type for p in parts):
        return False
    identifier = next((p for p in parts if p.number == 4), None)
    metadata = next((p for p in parts if p.number == 5), None)
    if identifier is not None and identifier.text(64).startswith("_tf_keras"):
        return True
    return metadata is not None and metadata.text(64).lstrip().startswith("{")


# -- scanning ----------------------------------------------------------------------------


class _Walk:
    def __init__(self, blob: Blob, ctx: ScanContext) -> None:
        self.blob = blob
        self.ctx = ctx
        self.uses: dict[tuple[str, str], _OpUse] = {}

    def saved_model(self, root: Message) -> None:
        index = 0
        for item in root:
            if item.number != 2 or item.wire_type != LEN:
                continue
            place = f"meta graph {index}"
            index += 1
            assets = 0
            for part in item.message():
                if part.wire_type != LEN:
                    continue
                if part.number == 2:
                    self.graph(part.message(), place)
                elif part.number == 6:
                    self.asset(part, f"{place} asset {assets}")
                    assets += 1
                elif part.number == 7:
                    self.object_graph(part.message(), place)

    def graph(self, graph: Message, place: str) -> None:
        for item in graph:
            if item.wire_type != LEN:
                continue
            if item.number == 1:
                self.node(item, place)
            elif item.number == 2:
                for function in item.message():
                    if function.number == 1 and function.wire_type == LEN:
                        self.function(function.message(), place)

    def function(self, function: Message, place: str) -> None:
        name = "?"
        signature = function.first(1)
        if signature is not None and signature.wire_type == LEN:
            op_name = signature.message().first(1)
            if op_name is not None and op_name.wire_type == LEN:
                name = op_name.text(256)
        where = f"{place} function {name}"
        for item in function:
            if item.number == 3 and item.wire_type == LEN:
                self.node(item, where)

    def node(self, item: Field, place: str) -> None:
        # Protobuf keeps the last of repeated singular fields, other readers the first:
        # every op a NodeDef names is judged.
        name = op = ""
        attrs: list[Field] = []
        for part in item.message():
            if part.wire_type != LEN:
                continue
            number = part.number
            if number == 2:
                text = part.text(256)
                if not op or text in _WATCHED_OPS:
                    op = text
            elif number == 1:
                name = part.text(256)
            elif number == 5:
                attrs.append(part)
        if op not in _WATCHED_OPS:
            return
        found = classify_op(op)
        if found is not None:
            severity, reason, rule = found
            self.use(rule, severity, op, reason, item.offset, name, place)
            return
        watched = _ATTR_FILE_OPS.get(op)
        if watched is None:
            return
        attr_name, touches_file = watched
        value = _string_attr(attrs, attr_name)
        if value is not None and touches_file(value):
            self.use(
                RULE_FILE_OP,
                Severity.HIGH,
                op,
                f"reads or writes a file named by its {attr_name} attribute ({value})",
                item.offset,
                name,
                place,
            )

    def text_format(self, data: bytes | memoryview) -> None:
        """Text-format protobuf: every `op: "..."` value (adjacent literals concatenate,
        escapes decode, as the text parser does), judged like a binary NodeDef's op."""
        for match in _TEXT_OP.finditer(data):
            op = "".join(
                _unescape(part.group(1) if part.group(1) is not None else part.group(2))
                for part in _TEXT_STRING.finditer(match.group(1))
            )
            if op not in _WATCHED_OPS:
                continue
            found = classify_op(op)
            if found is None:
                attr_name, touches_file = _ATTR_FILE_OPS[op]
                value = _text_attr(data, match.end(), attr_name)
                if value is None or not touches_file(value):
                    continue
                found = (
                    Severity.HIGH,
                    f"reads or writes a file named by its {attr_name} attribute ({value})",
                    RULE_FILE_OP,
                )
            severity, reason, rule = found
            before = bytes(data[max(0, match.start() - 512) : match.start()])
            names = _TEXT_NAME.findall(before)
            name = _unescape(names[-1]) if names else "?"
            self.use(rule, severity, op, reason, match.start(), name, "text-format graph")

    def use(
        self,
        rule: str,
        severity: Severity,
        op: str,
        reason: str,
        offset: int,
        node: str,
        place: str,
    ) -> None:
        key = (rule, op)
        found = self.uses.get(key)
        if found is None:
            found = self.uses[key] = _OpUse(rule, severity, reason, offset)
        found.count += 1
        if len(found.nodes) < 5:
            found.nodes.append(node or "?")
        if place not in found.places and len(found.places) < 5:
            found.places.append(place)

    def flush(self) -> None:
        for (rule, op), use in self.uses.items():
            kind = {
                RULE_PYTHON_OP: "runs Python",
                RULE_FILE_OP: "touches files",
                RULE_NETWORK_OP: "reaches the network",
            }[rule]
            self.ctx.report(
                self.blob,
                rule,
                f"TensorFlow graph op {kind}: {op}",
                use.severity,
                offset=use.offset,
                detail=(
                    f"{op} {use.reason}; {use.count} node(s) "
                    f"({', '.join(use.nodes)}) in {', '.join(use.places)}"
                ),
                snippet=op,
                properties={"op": op, "count": use.count},
            )
        self.uses.clear()

    def asset(self, item: Field, place: str) -> None:
        # Every filename counts: protobuf keeps the last of a repeated singular field.
        for filename in item.message():
            if filename.number != 2 or filename.wire_type != LEN:
                continue
            path = filename.text(_MAX_TEXT)
            if not path_escapes(path):
                continue
            self.ctx.report(
                self.blob,
                RULE_ASSET_PATH,
                "SavedModel asset path leaves the model's directory",
                Severity.HIGH,
                offset=filename.offset,
                detail=f"{place}: TensorFlow reads asset {path!r} when the model loads",
                snippet=path,
                category="model-file-access",
            )

    def object_graph(self, graph: Message, place: str) -> None:
        """Older SavedModels keep each Keras layer's JSON in SavedUserObject.metadata."""
        for index, node in enumerate(graph):
            if node.number != 1 or node.wire_type != LEN:
                continue
            for user in node.message():
                if user.number != 4 or user.wire_type != LEN:
                    continue
                for part in user.message():
                    if part.number == 3 and part.wire_type == LEN and part.value:
                        self.embedded_json(part, f"{place} object {index} metadata")

    def keras_metadata(self, root: Message) -> None:
        for index, node in enumerate(root):
            if node.number != 1 or node.wire_type != LEN:
                continue
            path = f"node {index}"
            metadata: Field | None = None
            for part in node.message():
                if part.wire_type != LEN:
                    continue
                if part.number == 3:
                    path = part.text(256)
                elif part.number == 5:
                    metadata = part
            if metadata is not None and metadata.value:
                self.embedded_json(metadata, f"keras metadata {path}")

    def embedded_json(self, item: Field, origin: str) -> None:
        if item.value > MAX_JSON_BYTES:
            self.ctx.error(
                self.blob,
                f"{origin}: {item.value} bytes of JSON is over {MAX_JSON_BYTES}",
                offset=item.offset,
            )
            return
        scan_keras_json(item.raw(MAX_JSON_BYTES), self.blob, self.ctx, origin=origin)


def _string_attr(attrs: list[Field], wanted: str) -> str | None:
    """The string value of attribute `wanted` in a NodeDef's attr map entries."""
    for entry in attrs:
        key = value = None
        for part in entry.message():
            if part.wire_type != LEN:
                continue
            if part.number == 1:
                key = part.text(256)
            elif part.number == 2:
                value = part
        if key != wanted or value is None:
            continue
        text = value.message().first(2)  # AttrValue.s
        return "" if text is None or text.wire_type != LEN else text.text(_MAX_TEXT)
    return None


def _text_attr(data: bytes | memoryview, start: int, wanted: str) -> str | None:
    """The string attribute `wanted` of the text-format node whose op ends at `start`."""
    window = bytes(data[start : start + 16384])
    window = window[: m.start()] if (m := _TEXT_NEXT_NODE.search(window)) else window
    pattern = (
        rb"key\s*:\s*\"" + re.escape(wanted.encode()) + rb"\"\s*value\s*\{\s*s\s*:\s*"
        rb"\"((?:[^\"\\\n]|\\.)*)\""
    )
    found = re.search(pattern, window)
    return None if found is None else _unescape(found.group(1))


def _unescape(literal: bytes) -> str:
    """A text-format string literal's value (C escapes: octal, hex, \\n, \\", ...)."""
    if b"\\" not in literal:
        return literal.decode("utf-8", "replace")
    try:
        return codecs.escape_decode(literal)[0].decode("utf-8", "replace")
    except ValueError:
        return literal.decode("utf-8", "replace")


SCANNER = TFSavedModelScanner()
