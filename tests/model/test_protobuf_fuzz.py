"""The bounded protobuf wire reader and the Keras, HDF5, SavedModel and ONNX scanners under
random and mutated input: only findings and could-not-inspect errors come out, never an
exception, and every walk is bounded in fields and depth."""

from __future__ import annotations

import io
import json

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from stockade.core.findings import Finding
from stockade.model.scan import engine
from stockade.model.scan.formats import hdf5, keras, onnx, tf_savedmodel
from stockade.model.scan.interface import Blob, ScanContext
from stockade.model.scan.protobuf_wire import (
    FIXED32,
    FIXED64,
    LEN,
    VARINT,
    Budget,
    Message,
    WireError,
    read_varint,
)

WIRE_SCANNERS = [tf_savedmodel.SCANNER, onnx.SCANNER, keras.SCANNER]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def f_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def f_bytes(number: int, value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | LEN) + varint(len(raw)) + raw


def encode(fields: list[tuple[int, int, int | bytes]]) -> bytes:
    out = bytearray()
    for number, wire, value in fields:
        out += varint(number << 3 | wire)
        if wire == VARINT:
            out += varint(value)  # type: ignore[arg-type]
        elif wire == FIXED64:
            out += value.to_bytes(8, "little")  # type: ignore[union-attr]
        elif wire == FIXED32:
            out += value.to_bytes(4, "little")  # type: ignore[union-attr]
        else:
            out += varint(len(value)) + value  # type: ignore[arg-type]
    return bytes(out)


# -- seeds, as the real writers lay them out ------------------------------------------------


def onnx_seed() -> bytes:
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    body = helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "body", [], [])
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["H"]),
            helper.make_node("If", ["c"], ["Y"], then_branch=body, else_branch=body),
            helper.make_node("Decrypt", ["Y"], ["Z"], domain="evil.ops"),
        ],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Z", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def saved_model_seed() -> bytes:
    def node(name: str, op: str) -> bytes:
        return f_bytes(1, name) + f_bytes(2, op)

    print_attr = f_bytes(5, f_bytes(1, "output_stream") + f_bytes(2, f_bytes(2, "file:///x")))
    function = f_bytes(1, f_bytes(1, "__inference_f_1")) + f_bytes(3, node("p", "PyFunc"))
    graph = (
        f_bytes(1, node("x", "Placeholder"))
        + f_bytes(1, node("save", "SaveV2"))
        + f_bytes(1, node("print", "PrintV2") + print_attr)
        + f_bytes(2, f_bytes(1, function))
    )
    meta = f_bytes(1, f_bytes(4, "serve")) + f_bytes(2, graph) + f_bytes(6, f_bytes(2, "../a"))
    return f_varint(1, 1) + f_bytes(2, meta)


KERAS_SEED = json.dumps(
    {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "Lambda",
                    "config": {
                        "name": "l",
                        "function": {"class_name": "__lambda__", "config": {"code": "4wEAAA=="}},
                    },
                    "registered_name": None,
                },
                {"module": "os", "class_name": "function", "config": "system"},
            ]
        },
    }
).encode()


def keras_metadata_seed() -> bytes:
    node = f_bytes(3, "root") + f_bytes(4, "_tf_keras_layer") + f_bytes(5, KERAS_SEED)
    return f_bytes(1, node)


def hdf5_seed() -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.attrs["model_config"] = KERAS_SEED.decode()
        handle.create_dataset("model_weights/dense/kernel:0", data=np.ones((4, 4), "f4"))
    return buffer.getvalue()


TEXT_SEED = b"""saved_model_schema_version: 1
meta_graphs { graph_def {
  node { name: "x" op: "Placeholder" }
  node { name: "p" op: "Py" 'Func' }  # concatenated literals
  node { name: "w" op: "PrintV2" attr { key: "output_stream" value { s: "file:///x" } } }
} }
"""

SEEDS = [onnx_seed(), saved_model_seed(), KERAS_SEED, keras_metadata_seed(), TEXT_SEED]


def mutate(data: bytes, edits: list[tuple[int, int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for kind, where, value in edits:
        at = where % (len(out) + 1)
        if kind == 0 and at < len(out):
            out[at] = value
        elif kind == 1:
            out[at:at] = bytes([value]) * (value % 7 + 1)
        else:
            del out[at : at + value % 9 + 1]
    return bytes(out if cut is None else out[: cut % (len(out) + 1)])


EDITS = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 1 << 20), st.integers(0, 255)), max_size=12
)


def scan_directly(data: bytes, name: str) -> list[Finding]:
    """Run each scanner that claims the bytes, straight (not through the engine's crash
    guard), so any exception fails the test."""
    ctx = ScanContext()
    ctx.dispatch = engine.make_dispatch(WIRE_SCANNERS)
    blob = Blob(name, data)
    for scanner in WIRE_SCANNERS:
        if scanner.detect(blob):
            scanner.scan(blob, ctx)
    return ctx.findings


# -- the wire reader ------------------------------------------------------------------------


FIELD = st.one_of(
    st.tuples(st.integers(1, (1 << 29) - 1), st.just(VARINT), st.integers(0, (1 << 64) - 1)),
    st.tuples(st.integers(1, 1000), st.just(FIXED64), st.integers(0, (1 << 64) - 1)),
    st.tuples(st.integers(1, 1000), st.just(FIXED32), st.integers(0, (1 << 32) - 1)),
    st.tuples(st.integers(1, 1000), st.just(LEN), st.binary(max_size=300)),
)


@FUZZ
@given(st.lists(FIELD, max_size=40))
def test_reader_reads_back_what_was_written(fields: list[tuple[int, int, int | bytes]]) -> None:
    data = encode(fields)
    read = list(Message(memoryview(data)))
    assert [(f.number, f.wire_type) for f in read] == [(n, w) for n, w, _ in fields]
    for item, (_, wire, value) in zip(read, fields, strict=True):
        if wire == LEN:
            assert bytes(item.payload()) == value
            assert item.value == len(value)  # type: ignore[arg-type]
        else:
            assert item.value == value
        assert data[item.offset :].startswith(varint(item.number << 3 | wire))


@FUZZ
@given(st.binary(max_size=2000))
def test_reader_on_random_bytes_only_raises_wire_errors(data: bytes) -> None:
    budget = Budget(max_fields=10_000, max_depth=8)
    try:
        count = sum(1 for _ in Message(data, budget=budget))
    except WireError as exc:
        assert 0 <= exc.offset <= len(data)
    else:
        assert count <= len(data) // 2


@given(st.integers(0, (1 << 64) - 1))
def test_varints_round_trip(value: int) -> None:
    encoded = varint(value)
    assert read_varint(encoded, 0, len(encoded)) == (value, len(encoded))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x0b\x00", "start-group"),
        (b"\x0c", "end-group"),
        (b"\x0e", "reserved wire type 6"),
        (b"\x00\x01", "invalid field number 0"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "varint longer than 10 bytes"),
        (b"\x08\x80", "truncated varint"),
        (b"\x09\x00\x00", "truncated fixed64"),
        (b"\x0d\x00", "truncated fixed32"),
    ],
)
def test_malformed_wire_data(data: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        list(Message(data))


def test_a_truncated_field_is_handed_out_before_the_error() -> None:
    data = f_varint(1, 5) + f_bytes(2, b"abcdef")[:-2]
    seen = []
    with pytest.raises(WireError, match="claims 6 bytes, 4 remain"):
        for item in Message(data):
            seen.append(item)
    assert bytes(seen[-1].payload()) == b"abcd"


def test_field_budget_stops_a_flood_of_fields() -> None:
    data = b"\x08\x00" * 50_000
    with pytest.raises(WireError, match="more than 1000 fields"):
        list(Message(data, budget=Budget(max_fields=1000)))


def test_nesting_depth_is_bounded_without_recursion_errors() -> None:
    data = b"\x08\x01"
    for _ in range(5000):
        data = f_bytes(1, data)

    def walk(message: Message) -> None:
        for item in message:
            if item.wire_type == LEN:
                walk(item.message())

    with pytest.raises(WireError, match="nested deeper than 100"):
        walk(Message(data))


# -- the scanners -----------------------------------------------------------------------------


@FUZZ
@given(
    st.binary(max_size=3000),
    st.sampled_from(["m.onnx", "saved_model.pb", "keras_metadata.pb", "config.json"]),
)
def test_scanners_on_random_bytes(data: bytes, name: str) -> None:
    for finding in scan_directly(data, name):
        assert isinstance(finding, Finding)


@FUZZ
@given(st.sampled_from(range(len(SEEDS))), EDITS, st.one_of(st.none(), st.integers(0, 1 << 20)))
def test_scanners_on_mutated_models(seed: int, edits: list, cut: int | None) -> None:
    data = mutate(SEEDS[seed], edits, cut)
    for name in ("model", "saved_model.pb", "keras_metadata.pb"):
        found = scan_directly(data, name)
        assert all(isinstance(f, Finding) for f in found)


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_every_seed_is_detected_and_flagged(seed: int) -> None:
    found = scan_directly(SEEDS[seed], "saved_model.pb" if seed == 1 else "model")
    assert any(not f.is_error for f in found)
    assert not any(f.is_error for f in found)


def test_deeply_nested_onnx_subgraphs_are_bounded() -> None:
    # Deeper than protobuf itself lets onnx build: If > then_branch > graph > If ...
    graph = f_bytes(1, f_bytes(4, "Op") + f_bytes(7, "x.y"))
    for _ in range(60):  # 3 messages per level: far past the depth budget
        attribute = f_bytes(1, "then_branch") + f_varint(20, 5) + f_bytes(6, graph)
        graph = f_bytes(1, f_bytes(4, "If") + f_bytes(5, attribute))
    model = f_varint(1, 8) + f_bytes(7, graph)
    found = engine.scan_bytes(model, "deep.onnx", scanners=WIRE_SCANNERS)
    assert [f.rule_id for f in found] == ["STK-ERR-001"]
    assert "nested deeper than" in found[0].detail


def test_a_flood_of_graph_nodes_stays_within_the_budget() -> None:
    node = f_bytes(1, f_bytes(4, "Relu"))
    graph = node * 200_000
    model = f_varint(1, 8) + f_bytes(7, graph)
    found = engine.scan_bytes(model, "wide.onnx", scanners=WIRE_SCANNERS)
    assert found == []


@settings(max_examples=30, deadline=None, derandomize=True)
@given(EDITS, st.one_of(st.none(), st.integers(0, 1 << 16)))
def test_hdf5_reader_survives_corrupt_files(edits: list, cut: int | None) -> None:
    data = mutate(hdf5_seed(), edits, cut)
    found = engine.scan_bytes(data, "m.h5", scanners=[hdf5.SCANNER, keras.SCANNER])
    assert all("parser failed" not in f.detail for f in found)
