"""Keras configs and HDF5 models, TensorFlow SavedModels and graphs, ONNX models: benign
files as the real libraries write them stay clean, code and file access are reported.

Every malicious fixture is built here as bytes and only ever scanned, never loaded.
"""

from __future__ import annotations

import base64
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from stockade.core.findings import Finding, Severity
from stockade.model.scan import engine
from stockade.model.scan.formats import hdf5, keras, tf_savedmodel
from stockade.model.scan.formats import onnx as onnx_format
from stockade.model.scan.interface import Blob

SCANNERS = [tf_savedmodel.SCANNER, onnx_format.SCANNER, hdf5.SCANNER, keras.SCANNER]


def scan(data: bytes, path: str = "model", **kwargs: Any) -> list[Finding]:
    return engine.scan_bytes(data, path, scanners=SCANNERS, **kwargs)


def serious(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.is_error or f.severity >= Severity.MEDIUM]


def rules(found: list[Finding]) -> list[tuple[str, Severity]]:
    return sorted((f.rule_id, f.severity) for f in found if not f.is_error)


# -- Keras fixtures, shaped as Keras 3 and tf.keras 2 write them ----------------------------

FLOAT32 = {
    "module": "keras",
    "class_name": "DTypePolicy",
    "config": {"name": "float32"},
    "registered_name": None,
}
# A marshalled code object as Keras's func_dump writes it (the bytes are never loaded).
LAMBDA_CODE = base64.b64encode(
    b"\xe3\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x03\x00\x00\x00"
    b"\xf3\x18\x00\x00\x00\x97\x00t\x01\x00\x00\x00\x00\x00\x00\x00\x00\xa9\x02\xda\x02os"
    b"\xda\x06system\xa9\x01\xda\x01x"
).decode()


def keras3_layer(class_name: str, name: str, **config: Any) -> dict[str, Any]:
    return {
        "module": "keras.layers",
        "class_name": class_name,
        "config": {"name": name, "trainable": True, "dtype": FLOAT32, **config},
        "registered_name": None,
        "build_config": {"input_shape": [None, 4]},
    }


def keras3_dense(name: str = "dense", units: int = 8, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "units": units,
        "activation": "relu",
        "use_bias": True,
        "kernel_initializer": {
            "module": "keras.initializers",
            "class_name": "GlorotUniform",
            "config": {"seed": None},
            "registered_name": None,
        },
        "bias_initializer": {
            "module": "keras.initializers",
            "class_name": "Zeros",
            "config": {},
            "registered_name": None,
        },
        "kernel_regularizer": None,
        "bias_regularizer": None,
        "kernel_constraint": None,
        "bias_constraint": None,
    }
    config.update(extra)
    return keras3_layer("Dense", name, **config)


def keras3_model(*layers: dict[str, Any]) -> dict[str, Any]:
    input_layer = {
        "class_name": "InputLayer",
        "config": {"batch_shape": [None, 4], "dtype": "float32", "sparse": False, "name": "input"},
        "module": "keras.layers",
        "registered_name": None,
    }
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "trainable": True,
            "dtype": FLOAT32,
            "layers": [input_layer, *(layers or (keras3_dense(),))],
        },
        "registered_name": None,
        "build_config": {"input_shape": [None, 4]},
        "compile_config": {
            "optimizer": {
                "module": "keras.optimizers",
                "class_name": "Adam",
                "config": {"name": "adam", "learning_rate": 0.001, "beta_1": 0.9},
                "registered_name": None,
            },
            "loss": {
                "module": "builtins",
                "class_name": "function",
                "config": "binary_crossentropy",
                "registered_name": "function",
            },
            "metrics": ["accuracy"],
            "run_eagerly": False,
            "jit_compile": False,
        },
    }


def keras3_functional() -> dict[str, Any]:
    """A functional model with the history tensors Keras 3 writes."""
    tensor = {
        "class_name": "__keras_tensor__",
        "config": {"shape": [None, 4], "dtype": "float32", "keras_history": ["input", 0, 0]},
    }
    dense = keras3_dense()
    dense["inbound_nodes"] = [{"args": [tensor], "kwargs": {}}]
    return {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": {
            "name": "functional",
            "trainable": True,
            "layers": [dense],
            "input_layers": [["input", 0, 0]],
            "output_layers": [["dense", 0, 0]],
        },
        "registered_name": "Functional",
    }


def fn(module: str, name: str, registered: str | None = None) -> dict[str, Any]:
    return {
        "module": module,
        "class_name": "function",
        "config": name,
        "registered_name": registered,
    }


def dumps(document: object) -> bytes:
    return json.dumps(document).encode()


def keras2_model_config(*layers: dict[str, Any]) -> dict[str, Any]:
    """`model.to_json()` of tf.keras 2: no `module` keys."""
    dense = {
        "class_name": "Dense",
        "config": {
            "name": "dense",
            "trainable": True,
            "dtype": "float32",
            "units": 8,
            "activation": "relu",
            "use_bias": True,
            "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
            "bias_initializer": {"class_name": "Zeros", "config": {}},
        },
    }
    return {
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {
                    "class_name": "InputLayer",
                    "config": {"batch_input_shape": [None, 4], "dtype": "float32", "name": "in"},
                },
                *(layers or (dense,)),
            ],
        },
        "keras_version": "2.15.0",
        "backend": "tensorflow",
    }


KERAS2_TRAINING_CONFIG = {
    "loss": "binary_crossentropy",
    "metrics": [
        [
            {
                "class_name": "MeanMetricWrapper",
                "config": {"name": "accuracy", "dtype": "float32", "fn": "binary_accuracy"},
            }
        ]
    ],
    "weighted_metrics": None,
    "loss_weights": None,
    "optimizer_config": {
        "class_name": "Custom>Adam",
        "config": {"name": "Adam", "learning_rate": 0.001, "is_legacy_optimizer": False},
    },
}


def keras2_lambda(function: object = None, **config: Any) -> dict[str, Any]:
    return {
        "class_name": "Lambda",
        "config": {
            "name": "lambda",
            "trainable": True,
            "dtype": "float32",
            "function": [LAMBDA_CODE, None, None] if function is None else function,
            "function_type": "lambda",
            "module": "__main__",
            "output_shape": None,
            "output_shape_type": "raw",
            "output_shape_module": None,
            "arguments": {},
            **config,
        },
    }


def weights_h5(path: Path | None = None) -> bytes:
    """A Keras 3 `model.weights.h5`: groups of variables, no model config."""
    target: Any = io.BytesIO() if path is None else path
    with h5py.File(target, "w") as handle:
        group = handle.create_group("layers/dense/vars")
        group.create_dataset("0", data=np.ones((4, 8), "f4"))
        group.create_dataset("1", data=np.zeros((8,), "f4"), compression="gzip")
        handle.create_group("optimizer/vars")
    return target.getvalue() if path is None else path.read_bytes()


def legacy_h5(
    model_config: object, training_config: object = KERAS2_TRAINING_CONFIG, **kwargs: Any
) -> bytes:
    """A tf.keras 2 full-model `.h5`: JSON attributes on the root, weights below."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", **kwargs) as handle:
        handle.attrs["backend"] = "tensorflow"
        handle.attrs["keras_version"] = "2.15.0"
        handle.attrs["model_config"] = json.dumps(model_config)
        if training_config is not None:
            handle.attrs["training_config"] = json.dumps(training_config)
        weights = handle.create_group("model_weights")
        weights.attrs["layer_names"] = [b"dense"]
        dense = weights.create_group("dense/dense")
        dense.create_dataset("kernel:0", data=np.ones((4, 8), "f4"))
        dense.create_dataset("bias:0", data=np.zeros((8,), "f4"))
    return buffer.getvalue()


def keras_archive(config: dict[str, Any]) -> bytes:
    """A `.keras` file as Keras 3 saves it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "metadata.json",
            json.dumps({"keras_version": "3.6.0", "date_saved": "2025-01-02@10:00:00"}),
        )
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", weights_h5())
    return buffer.getvalue()


# -- Keras config -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        keras3_model(),
        keras3_functional(),
        keras2_model_config(),
        {"keras_version": "3.6.0", "date_saved": "2025-01-02@10:00:00"},
        keras3_model(keras3_dense(activation=fn("builtins", "mw>scaled_relu", "function"))),
        keras3_model(keras3_layer("GemmaBackbone", "backbone") | {"module": "keras_hub.src.x"}),
        keras3_model(
            keras3_layer("Dense", "d")
            | {"module": "keras.src.layers.core.dense", "registered_name": "Dense"}
        ),
    ],
    ids=["sequential", "functional", "tf-keras-2", "metadata", "registered-fn", "hub", "src"],
)
def test_benign_keras_json_is_recognised_and_clean(document: object) -> None:
    data = dumps(document)
    assert keras.SCANNER.detect(Blob("config.json", data))
    assert scan(data, "config.json") == []


def test_lambda_bytecode_is_critical_and_names_what_it_calls() -> None:
    lam = {"class_name": "__lambda__", "config": {"code": LAMBDA_CODE, "defaults": None}}
    found = scan(dumps(keras3_model(keras3_layer("Lambda", "evil", function=lam))))
    [finding] = found
    assert (finding.rule_id, finding.severity) == ("STK-KERAS-001", Severity.CRITICAL)
    assert "names in the bytecode: os, system" in finding.detail
    assert finding.properties["json_path"] == "$.config.layers[1].config.function"


def test_generic_lambda_serialisation_anywhere_is_critical() -> None:
    lam = {"class_name": "__lambda__", "config": {"value": [LAMBDA_CODE, None, None]}}
    found = scan(dumps(keras3_model(keras3_dense(activation=lam))))
    assert rules(found) == [("STK-KERAS-001", Severity.CRITICAL)]


@pytest.mark.parametrize("key", ["function", "output_shape"])
def test_tf_keras_lambda_layer_is_critical(key: str) -> None:
    layer = (
        keras2_lambda()
        if key == "function"
        else keras2_lambda(
            function="relu",
            function_type="function",
            output_shape=[LAMBDA_CODE, None, None],
            output_shape_type="lambda",
        )
    )
    found = scan(dumps(keras2_model_config(layer)))
    assert rules(found) == [("STK-KERAS-001", Severity.CRITICAL)]
    assert key in found[0].detail


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        (fn("os", "system"), ("STK-KERAS-002", Severity.CRITICAL)),
        (fn("subprocess", "Popen"), ("STK-KERAS-002", Severity.CRITICAL)),
        (fn("builtins", "exec", "function"), ("STK-KERAS-002", Severity.CRITICAL)),
        (fn("os", "pkg>system"), ("STK-KERAS-002", Severity.HIGH)),
        (fn("shutil", "rmtree"), ("STK-KERAS-002", Severity.HIGH)),
        (fn("my_project.activations", "swishy"), ("STK-KERAS-003", Severity.MEDIUM)),
        (fn("keras.utils", "get_file"), ("STK-KERAS-004", Severity.HIGH)),
        (fn("keras.config", "enable_unsafe_deserialization"), ("STK-KERAS-004", Severity.CRITICAL)),
        (fn("keras.src.utils.file_utils", "rmtree"), ("STK-KERAS-004", Severity.HIGH)),
        (fn("tensorflow.io", "read_file"), ("STK-KERAS-005", Severity.HIGH)),
    ],
)
def test_function_references_outside_keras(reference: dict[str, Any], expected: tuple) -> None:
    found = scan(dumps(keras3_model(keras3_dense(activation=reference))))
    assert rules(found) == [expected]
    assert found[0].properties["json_path"] == "$.config.layers[1].config.activation"


def test_class_in_a_foreign_module_and_registered_name_lookup() -> None:
    custom = keras3_layer("MyLayer", "mine") | {
        "module": "my_project.layers",
        "registered_name": "my_project>MyLayer",
    }
    # Keras also looks the registered name up in the module: os.system here.
    sneaky = keras3_layer("Nothing", "n") | {"module": "os", "registered_name": "system"}
    found = scan(dumps(keras3_model(custom, sneaky)))
    assert rules(found) == [
        ("STK-KERAS-002", Severity.CRITICAL),
        ("STK-KERAS-003", Severity.MEDIUM),
    ]
    assert any(f.snippet == "os.Nothing, os.system" for f in found)


def test_loader_layers_and_tf_ops() -> None:
    layers = [
        keras3_layer("TFSMLayer", "tfsm", filepath="/tmp/attacker_savedmodel"),
        {
            "class_name": "TFOpLambda",
            "config": {"name": "tf.io.read_file", "function": "io.read_file"},
        },
        {"class_name": "TFOpLambda", "config": {"name": "pf", "function": "raw_ops.PyFunc"}},
        {"class_name": "TFOpLambda", "config": {"name": "add", "function": "math.add"}},
        {"class_name": "TFOpLambda", "config": {"name": "g", "function": "io.gfile.copy"}},
    ]
    found = scan(dumps(keras2_model_config(*layers)))
    assert rules(found) == [
        ("STK-KERAS-004", Severity.HIGH),
        ("STK-KERAS-005", Severity.HIGH),
        ("STK-KERAS-005", Severity.HIGH),
        ("STK-KERAS-005", Severity.CRITICAL),
    ]
    assert any("/tmp/attacker_savedmodel" in f.detail for f in found)


def test_torch_module_wrapper_payload_is_scanned_as_a_member() -> None:
    inner = dumps(keras3_model(keras3_dense(activation=fn("os", "system"))))
    wrapper = keras3_layer("TorchModuleWrapper", "torch", module=base64.b64encode(inner).decode())
    found = scan(dumps(keras3_model(wrapper)), "model.json")
    assert rules(found) == [
        ("STK-KERAS-002", Severity.CRITICAL),
        ("STK-KERAS-004", Severity.HIGH),
    ]
    nested = next(f for f in found if f.rule_id == "STK-KERAS-002")
    assert nested.location.member == "$.config.layers[1].config.module"


@pytest.mark.parametrize(
    ("vocabulary", "expected"),
    [
        ("/etc/passwd", Severity.HIGH),
        ("gs://bucket/vocab.txt", Severity.HIGH),
        ("../../secrets.txt", Severity.HIGH),
        ("vocab.txt", Severity.LOW),
    ],
)
def test_lookup_layer_vocabulary_files(vocabulary: str, expected: Severity) -> None:
    layer = keras3_layer("StringLookup", "lookup", vocabulary=vocabulary, max_tokens=None)
    assert rules(scan(dumps(keras3_model(layer)))) == [("STK-KERAS-006", expected)]


def test_lookup_layer_with_inline_vocabulary_is_clean() -> None:
    layer = keras3_layer("StringLookup", "lookup", vocabulary=["a", "b"])
    assert scan(dumps(keras3_model(layer))) == []


@pytest.mark.parametrize(("name", "flagged"), [("../../x", True), ("/abs", True), ("a..b", False)])
def test_layer_names_that_are_paths(name: str, flagged: bool) -> None:
    found = scan(dumps(keras3_model(keras3_dense(name=name))))
    assert rules(found) == ([("STK-KERAS-007", Severity.MEDIUM)] if flagged else [])


def test_custom_objects_without_module() -> None:
    layer = {"class_name": "Custom>MyLayer", "config": {"name": "mine"}}
    found = scan(dumps(keras2_model_config(layer) | {"training_config": KERAS2_TRAINING_CONFIG}))
    assert rules(found) == [("STK-KERAS-008", Severity.LOW)]


def test_escaped_keys_utf16_and_leading_space_do_not_hide_a_config() -> None:
    lam = {"class_name": "__lambda__", "config": {"code": LAMBDA_CODE}}
    plain = dumps(keras3_model(keras3_layer("Lambda", "l", function=lam)))
    escaped = plain.replace(b'"class_name"', b'"\\u0063lass_n\\u0061me"')
    assert b'"class_name"' not in escaped
    variants = [
        escaped,
        plain.decode().encode("utf-16"),
        plain.decode().encode("utf-32-le"),
        b" \n" * 50_000 + plain,
        b"\xef\xbb\xbf" + plain,
    ]
    for data in variants:
        assert rules(scan(data, "config.json")) == [("STK-KERAS-001", Severity.CRITICAL)]


def test_json_that_is_not_keras_is_left_to_others() -> None:
    for data in (b'{"architectures": ["BertModel"], "model_type": "bert"}', b"[1, 2]", b"{"):
        assert not keras.SCANNER.detect(Blob("config.json", data))


@pytest.mark.parametrize(
    "data",
    [
        b'{"class_name": "Sequential", "config": {',
        b'{"class_name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"class_name": "X", "config": "\xff\xfe"}',
    ],
    ids=["truncated", "deep", "bad-utf8"],
)
def test_broken_keras_json_is_an_error(data: bytes) -> None:
    found = scan(data, "config.json")
    assert [f.rule_id for f in found] == ["STK-ERR-001"]
    assert "parser failed" not in found[0].detail


def test_keras_archive_through_the_zip_scanner() -> None:
    from stockade.model.scan.formats import zip as zip_format

    scanners = [zip_format.SCANNER, *SCANNERS]
    benign = engine.scan_bytes(keras_archive(keras3_model()), "m.keras", scanners=scanners)
    assert serious(benign) == []
    lam = {"class_name": "__lambda__", "config": {"code": LAMBDA_CODE}}
    evil = keras_archive(keras3_model(keras3_layer("Lambda", "l", function=lam)))
    found = engine.scan_bytes(evil, "m.keras", scanners=scanners)
    [finding] = serious(found)
    assert finding.rule_id == "STK-KERAS-001"
    assert finding.location.member == "config.json"


# -- HDF5 -------------------------------------------------------------------------------


def test_weights_only_h5_is_clean(tmp_path: Path) -> None:
    data = weights_h5(tmp_path / "model.weights.h5")
    assert scan(data, "model.weights.h5") == []
    assert engine.scan_file(tmp_path / "model.weights.h5", scanners=SCANNERS) == []


def test_benign_legacy_keras_h5_is_clean(tmp_path: Path) -> None:
    data = legacy_h5(keras2_model_config())
    assert hdf5.SCANNER.detect(Blob("m.h5", data))
    assert scan(data, "m.h5") == []
    (tmp_path / "m.h5").write_bytes(data)
    assert engine.scan_file(tmp_path / "m.h5", scanners=SCANNERS) == []


def test_lambda_in_legacy_h5_model_config(tmp_path: Path) -> None:
    data = legacy_h5(keras2_model_config(keras2_lambda()))
    (tmp_path / "m.h5").write_bytes(data)
    for found in (scan(data, "m.h5"), engine.scan_file(tmp_path / "m.h5", scanners=SCANNERS)):
        assert rules(found) == [("STK-KERAS-001", Severity.CRITICAL)]
        assert found[0].properties["origin"] == "attribute model_config"


def test_training_config_is_scanned_too() -> None:
    training = dict(KERAS2_TRAINING_CONFIG, loss=fn("os", "system"))
    found = scan(legacy_h5(keras2_model_config(), training), "m.h5")
    assert rules(found) == [("STK-KERAS-002", Severity.CRITICAL)]
    assert "training_config" in found[0].detail


def test_h5_after_a_user_block_is_found() -> None:
    data = legacy_h5(keras2_model_config(keras2_lambda()), userblock_size=1024)
    assert bytes(data[:8]) != b"\x89HDF\r\n\x1a\n"
    assert hdf5.signature_offset(data) == 1024
    assert rules(scan(data, "m.h5")) == [("STK-KERAS-001", Severity.CRITICAL)]


def test_links_and_storage_that_read_other_files() -> None:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle["model_weights/dense"] = h5py.ExternalLink("/etc/passwd", "/kernel")
        handle.create_dataset("raw", shape=(16,), dtype="u1", external=[("/etc/hostname", 0, 16)])
        layout = h5py.VirtualLayout(shape=(3,), dtype="f8")
        layout[:] = h5py.VirtualSource("../other.h5", "data", shape=(3,))
        handle.create_virtual_dataset("mapped", layout)
        handle["model_weights/again"] = handle["model_weights"]  # a cycle of hard links
    found = scan(buffer.getvalue(), "w.h5")
    assert rules(found) == [
        ("STK-HDF5-001", Severity.HIGH),
        ("STK-HDF5-002", Severity.HIGH),
        ("STK-HDF5-003", Severity.HIGH),
    ]
    assert {f.snippet for f in found} == {"/etc/passwd", "/etc/hostname", "../other.h5"}


@pytest.mark.parametrize("value", ["not json {", 42])
def test_unreadable_model_config_is_an_error(value: object) -> None:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.attrs["model_config"] = value
    found = scan(buffer.getvalue(), "m.h5")
    assert [f.rule_id for f in found] == ["STK-ERR-001"]


def test_garbage_after_the_signature_is_an_error_not_a_crash() -> None:
    found = scan(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8, "x.h5")
    assert [f.rule_id for f in found] == ["STK-ERR-001"]
    assert "hdf5" in found[0].detail


def test_a_crash_in_the_hdf5_library_is_an_error_and_the_reader_recovers() -> None:
    data = bytearray(legacy_h5(keras2_model_config()))
    # The attribute's datatype flags: this value makes HDF5 1.14 dereference garbage.
    data[data.index(b"model_config\x00") + 17] = 134
    found = scan(bytes(data), "m.h5")
    assert [f.rule_id for f in found] == ["STK-ERR-001"]
    assert found[0].detail.startswith("hdf5: ")
    assert scan(legacy_h5(keras2_model_config()), "m.h5") == []
    assert rules(scan(legacy_h5(keras2_model_config(keras2_lambda())), "m.h5")) == [
        ("STK-KERAS-001", Severity.CRITICAL)
    ]


def test_h5_files_scan_in_the_process_pool(tmp_path: Path) -> None:
    for index in range(3):
        (tmp_path / f"evil{index}.h5").write_bytes(legacy_h5(keras2_model_config(keras2_lambda())))
    weights_h5(tmp_path / "model.weights.h5")
    result = engine.scan_paths([tmp_path], jobs=2)
    assert sorted((Path(f.location.path).name, f.rule_id) for f in result.findings) == [
        ("evil0.h5", "STK-KERAS-001"),
        ("evil1.h5", "STK-KERAS-001"),
        ("evil2.h5", "STK-KERAS-001"),
    ]


# -- protobuf writer for SavedModel fixtures ----------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def f_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def f_bytes(number: int, value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(raw)) + raw


def f_msg(number: int, *parts: bytes) -> bytes:
    return f_bytes(number, b"".join(parts))


def attr(key: str, value: bytes) -> bytes:
    """One entry of NodeDef.attr (map<string, AttrValue>)."""
    return f_msg(5, f_bytes(1, key), f_msg(2, value))


def attr_s(text: str) -> bytes:
    return f_bytes(2, text)  # AttrValue.s


def attr_type(dtype: int) -> bytes:
    return f_varint(6, dtype)  # AttrValue.type


def attr_func(name: str) -> bytes:
    return f_msg(10, f_bytes(1, name))  # AttrValue.func = NameAttrList{name}


def node(name: str, op: str, *inputs: str, attrs: tuple[bytes, ...] = ()) -> bytes:
    """A NodeDef: name=1, op=2, input=3, attr=5."""
    return (
        f_bytes(1, name)
        + f_bytes(2, op)
        + b"".join(f_bytes(3, i) for i in inputs)
        + b"".join(attrs)
    )


def function(name: str, *nodes: bytes) -> bytes:
    """FunctionDef: signature=1 (an OpDef: name=1, input_arg=2) and node_def=3."""
    signature = f_msg(1, f_bytes(1, name), f_msg(2, f_bytes(1, "args_0"), f_varint(3, 7)))
    return signature + b"".join(f_msg(3, n) for n in nodes)


def graph(*nodes: bytes, functions: tuple[bytes, ...] = ()) -> bytes:
    """GraphDef: node=1, library=2 (FunctionDefLibrary: function=1), versions=4."""
    library = f_msg(2, *(f_msg(1, f) for f in functions)) if functions else b""
    return b"".join(f_msg(1, n) for n in nodes) + library + f_msg(4, f_varint(1, 1645))


def meta_graph(graph_def: bytes, *extra: bytes) -> bytes:
    meta_info = f_msg(
        1,
        f_msg(2, f_msg(1, f_bytes(1, "SaveV2"))),  # stripped_op_list.op[0].name
        f_bytes(4, "serve"),
        f_bytes(5, "2.15.0"),
        f_bytes(6, "v2.15.0-rc1-8-g6887368d6d4"),
    )
    return f_msg(2, meta_info, f_msg(2, graph_def), *extra)


def saved_model(*meta_graphs: bytes) -> bytes:
    return f_varint(1, 1) + b"".join(meta_graphs)


def checkpointing_graph(*extra_nodes: bytes, extra_functions: tuple[bytes, ...] = ()) -> bytes:
    """The nodes every TF2 SavedModel has: variables, a serving call, and the
    save/restore machinery of the checkpoint (which names files, and must stay quiet)."""
    dt_float, dt_string = 1, 7
    nodes = (
        node("x", "Placeholder", attrs=(attr("dtype", attr_type(dt_float)),)),
        node("dense/kernel", "VarHandleOp", attrs=(attr("shared_name", attr_s("dense/kernel")),)),
        node("dense/kernel/Read", "ReadVariableOp", "dense/kernel"),
        node(
            "serving_default",
            "StatefulPartitionedCall",
            "x",
            "dense/kernel",
            attrs=(attr("f", attr_func("__inference_signature_wrapper_120")),),
        ),
        node("saver_filename", "Placeholder", attrs=(attr("dtype", attr_type(dt_string)),)),
        node(
            "saver",
            "StatefulPartitionedCall",
            "saver_filename",
            "dense/kernel",
            attrs=(attr("f", attr_func("__inference__traced_save_160")),),
        ),
        node("log", "PrintV2", "x", attrs=(attr("output_stream", attr_s("stderr")),)),
        node("vocab_init", "InitializeTableFromTextFileV2", "table", "asset_path"),
        node(
            "const",
            "Const",
            attrs=(attr("value", f_msg(8, f_varint(1, dt_float), f_bytes(4, b"\x00" * 4096))),),
        ),
        *extra_nodes,
    )
    save = function(
        "__inference__traced_save_160",
        node("StaticRegexFullMatch", "StaticRegexFullMatch", "file_prefix"),
        node("Const", "Const"),
        node("Select", "Select", "StaticRegexFullMatch", "Const"),
        node("StringJoin", "StringJoin", "file_prefix", "Select"),
        node("ShardedFilename", "ShardedFilename", "StringJoin", "num_shards"),
        node("SaveV2", "SaveV2", "ShardedFilename", "tensor_names", "shape_and_slices"),
        node("MergeV2Checkpoints", "MergeV2Checkpoints", "ShardedFilename", "file_prefix"),
        node("Identity", "Identity", "file_prefix"),
    )
    restore = function(
        "__inference__traced_restore_175",
        node("RestoreV2", "RestoreV2", "file_prefix", "tensor_names", "shape_and_slices"),
        node("AssignVariableOp", "AssignVariableOp", "dense/kernel", "RestoreV2"),
        node("NoOp", "NoOp"),
    )
    serve = function(
        "__inference_signature_wrapper_120",
        node("MatMul", "MatMul", "x", "kernel"),
        node("Relu", "Relu", "MatMul"),
    )
    return graph(*nodes, functions=(save, restore, serve, *extra_functions))


def test_benign_saved_model_with_checkpoint_ops_is_clean() -> None:
    data = saved_model(meta_graph(checkpointing_graph(), f_msg(6, f_bytes(2, "vocab.txt"))))
    assert tf_savedmodel.SCANNER.detect(Blob("saved_model.pb", data))
    assert tf_savedmodel.SCANNER.detect(Blob("renamed.bin", data))
    assert scan(data, "saved_model.pb") == []


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            node("py", "PyFunc", "x", attrs=(attr("token", attr_s("pyfunc_0")),)),
            ("STK-TF-001", Severity.CRITICAL),
        ),
        (node("rf", "ReadFile", "path"), ("STK-TF-002", Severity.HIGH)),
        (node("wf", "WriteFile", "path", "contents"), ("STK-TF-002", Severity.HIGH)),
        (node("dbg", "DebugIdentityV2", "x"), ("STK-TF-002", Severity.HIGH)),
        (
            node("p", "PrintV2", "x", attrs=(attr("output_stream", attr_s("file:///tmp/x")),)),
            ("STK-TF-002", Severity.HIGH),
        ),
        (node("rpc", "Rpc", "address", "method", "request"), ("STK-TF-003", Severity.HIGH)),
    ],
)
def test_dangerous_ops_in_the_graph(extra: bytes, expected: tuple) -> None:
    data = saved_model(meta_graph(checkpointing_graph(extra)))
    found = scan(data, "saved_model.pb")
    assert rules(found) == [expected]
    offset = found[0].location.offset
    assert offset is not None
    assert data[offset : offset + len(f_msg(1, extra))] == f_msg(1, extra)


def test_python_ops_inside_the_function_library() -> None:
    evil = function(
        "__inference_call_99",
        node("EagerPyFunc", "EagerPyFunc", "x", attrs=(attr("token", attr_s("pyfunc_3")),)),
        node("again", "EagerPyFunc", "x"),
    )
    found = scan(saved_model(meta_graph(checkpointing_graph(extra_functions=(evil,)))))
    [finding] = found
    assert (finding.rule_id, finding.severity) == ("STK-TF-001", Severity.CRITICAL)
    assert "__inference_call_99" in finding.detail
    assert finding.properties["count"] == 2


def test_asset_paths_that_leave_the_model() -> None:
    assets = (f_msg(6, f_bytes(2, "../../etc/passwd")), f_msg(6, f_bytes(2, "vocab.txt")))
    found = scan(saved_model(meta_graph(checkpointing_graph(), *assets)), "saved_model.pb")
    assert rules(found) == [("STK-TF-004", Severity.HIGH)]
    assert found[0].snippet == "../../etc/passwd"


def test_a_second_op_field_does_not_hide_a_python_op() -> None:
    # Protobuf keeps the last `op`; a reader that stopped at the first would see NoOp.
    sneaky = f_bytes(1, "innocent") + f_bytes(2, "NoOp") + f_bytes(2, "PyFunc")
    found = scan(saved_model(meta_graph(checkpointing_graph(sneaky))), "saved_model.pb")
    assert rules(found) == [("STK-TF-001", Severity.CRITICAL)]
    asset = f_msg(6, f_bytes(2, "vocab.txt"), f_bytes(2, "/etc/passwd"))
    found = scan(saved_model(meta_graph(checkpointing_graph(), asset)), "saved_model.pb")
    assert rules(found) == [("STK-TF-004", Severity.HIGH)]


def keras_node_metadata(
    document: object, path: str = "root", identifier: str = "_tf_keras_layer"
) -> bytes:
    version = f_msg(1, f_varint(1, 2), f_varint(2, 1))
    return f_msg(1, version, f_bytes(3, path), f_bytes(4, identifier), f_bytes(5, dumps(document)))


def test_keras_metadata_pb() -> None:
    benign = keras_node_metadata(keras2_model_config(), identifier="_tf_keras_sequential")
    layer = keras_node_metadata(keras2_lambda(), "root.layer-1")
    assert tf_savedmodel.SCANNER.detect(Blob("meta.pb", benign + layer))
    assert scan(benign, "keras_metadata.pb") == []
    found = scan(benign + layer, "keras_metadata.pb")
    assert rules(found) == [("STK-KERAS-001", Severity.CRITICAL)]
    assert found[0].properties["origin"] == "keras metadata root.layer-1"


def test_keras_json_in_the_object_graph() -> None:
    user_object = f_msg(4, f_bytes(1, "_tf_keras_layer"), f_bytes(3, dumps(keras2_lambda())))
    object_graph = f_msg(7, f_msg(1, f_msg(4, f_bytes(1, "trackable_dict"))), f_msg(1, user_object))
    found = scan(saved_model(meta_graph(checkpointing_graph(), object_graph)))
    assert rules(found) == [("STK-KERAS-001", Severity.CRITICAL)]
    assert "object 1 metadata" in found[0].detail


def test_frozen_graph_def() -> None:
    frozen = graph(node("x", "Placeholder"), node("py", "PyFuncStateless", "x"))
    assert tf_savedmodel.SCANNER.detect(Blob("frozen_inference_graph.pb", frozen))
    assert rules(scan(frozen, "frozen.pb")) == [("STK-TF-001", Severity.CRITICAL)]
    assert scan(graph(node("x", "Placeholder"), node("y", "Relu", "x")), "frozen.pb") == []


TEXT_SAVED_MODEL = b"""# written by tf.saved_model with as_text=True
saved_model_schema_version: 1
meta_graphs {
  meta_info_def { tags: "serve" tensorflow_version: "2.15.0" }
  graph_def {
    node { name: "x" op: "Placeholder" attr { key: "dtype" value { type: DT_FLOAT } } }
    node { name: "save/SaveV2" op: "SaveV2" input: "save/Const" }
    node {
      name: "log"
      op: "PrintV2"
      attr { key: "output_stream" value { s: "stderr" } }
    }
    %s
  }
}
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (b"", []),
        (b'node { name: "evil" op: "Py" "Func" }', [("STK-TF-001", Severity.CRITICAL)]),
        (b"node { name: 'evil' op: 'EagerPyFunc' }", [("STK-TF-001", Severity.CRITICAL)]),
        (b'node { name: "r" op: "\\x52eadFile" }', [("STK-TF-002", Severity.HIGH)]),
        (
            b'node { name: "p" op: "PrintV2" attr { key: "output_stream" '
            b'value { s: "file:///tmp/x" } } }',
            [("STK-TF-002", Severity.HIGH)],
        ),
    ],
    ids=["benign", "concatenated", "single-quoted", "escaped", "print-to-file"],
)
def test_text_format_saved_model(extra: bytes, expected: list) -> None:
    data = TEXT_SAVED_MODEL % extra
    assert tf_savedmodel.SCANNER.detect(Blob("saved_model.pbtxt", data))
    found = scan(data, "saved_model.pbtxt")
    assert rules(found) == expected
    if expected:
        assert found[0].detail.endswith("in text-format graph")


def test_fingerprint_and_checkpoint_index_are_data() -> None:
    fingerprint = b"".join(f_varint(n, 2**63 + n) for n in range(1, 6)) + f_msg(6, f_varint(1, 1))
    index = b"\x00" * 100 + (0xDB4775248B80FB57).to_bytes(8, "little")
    for data, name in ((fingerprint, "fingerprint.pb"), (index, "variables.index")):
        assert tf_savedmodel.SCANNER.detect(Blob(name, data))
        assert scan(data, name) == []


def test_truncated_saved_model_keeps_what_was_found() -> None:
    data = saved_model(meta_graph(checkpointing_graph(node("py", "PyFunc", "x"))))
    found = scan(data[: data.index(b"MergeV2Checkpoints")], "saved_model.pb")
    assert sorted(f.rule_id for f in found) == ["STK-ERR-001", "STK-TF-001"]


def test_a_file_named_saved_model_pb_that_does_not_parse_fails_closed() -> None:
    found = scan(b"\x0b\x0c garbage", "saved_model.pb")
    assert [f.rule_id for f in found] == ["STK-ERR-001"]


# -- ONNX -------------------------------------------------------------------------------


def onnx_model(
    *extra_nodes: onnx.NodeProto,
    opsets: tuple[tuple[str, int], ...] = (),
    functions: tuple[onnx.FunctionProto, ...] = (),
    big: bool = False,
) -> onnx.ModelProto:
    size = 64 if big else 4
    weight = numpy_helper.from_array(np.ones((size, size), np.float32), "W")
    bias = numpy_helper.from_array(np.zeros((size,), np.float32), "B")
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["XW"], name="matmul"),
        helper.make_node("Add", ["XW", "B"], ["H"], name="add"),
        helper.make_node("Relu", ["H"], ["Y"], name="relu"),
        *extra_nodes,
    ]
    graph_proto = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, size])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, size])],
        [weight, bias],
    )
    imports = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, v) for d, v in opsets)]
    return helper.make_model(
        graph_proto, opset_imports=imports, functions=list(functions), producer_name="pytorch"
    )


def test_benign_onnx_is_clean() -> None:
    data = onnx_model().SerializeToString()
    assert onnx_format.SCANNER.detect(Blob("m.onnx", data))
    assert not tf_savedmodel.SCANNER.detect(Blob("m.onnx", data))
    assert scan(data, "m.onnx") == []


def test_benign_onnx_with_external_data_is_clean(tmp_path: Path) -> None:
    onnx.save_model(
        onnx_model(big=True),
        tmp_path / "model.onnx",
        save_as_external_data=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    assert (tmp_path / "model.onnx.data").exists()
    assert engine.scan_file(tmp_path / "model.onnx", scanners=SCANNERS) == []


def test_contrib_ops_are_info_and_local_functions_are_not_custom_ops() -> None:
    fused = helper.make_node("FusedMatMul", ["Y", "W"], ["Z"], domain="com.microsoft", name="f")
    local = helper.make_function(
        "custom.fn",
        "Twice",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    call = helper.make_node("Twice", ["Y"], ["T"], domain="custom.fn", name="twice")
    model = onnx_model(
        fused, call, opsets=(("com.microsoft", 1), ("custom.fn", 1)), functions=(local,)
    )
    found = scan(model.SerializeToString(), "m.onnx")
    assert rules(found) == [("STK-ONNX-005", Severity.INFO)]
    assert serious(found) == []


def test_custom_domains_and_python_ops_in_nested_subgraphs_and_functions() -> None:
    custom = helper.make_node("Decrypt", ["x"], ["y"], domain="evil.ops", name="inner")
    python = helper.make_node(
        "PythonOp", ["x"], ["z"], domain="com.microsoft", name="py", func_name="os.system"
    )
    body = helper.make_graph([custom, python], "body", [], [])
    inner_if = helper.make_node("If", ["c"], ["o"], then_branch=body, else_branch=body)
    outer = helper.make_graph([inner_if], "outer", [], [])
    loop = helper.make_node("Loop", ["n", "c"], ["r"], body=outer, name="loop")
    pyop = helper.make_function(
        "my.fns",
        "Hidden",
        ["a"],
        ["b"],
        [helper.make_node("PyOp", ["a"], ["b"], domain="ai.onnx.contrib")],
        [helper.make_opsetid("ai.onnx.contrib", 1)],
    )
    found = scan(onnx_model(loop, functions=(pyop,)).SerializeToString(), "m.onnx")
    assert rules(found) == [
        ("STK-ONNX-003", Severity.MEDIUM),
        ("STK-ONNX-004", Severity.HIGH),
        ("STK-ONNX-004", Severity.HIGH),
    ]
    decrypt = next(f for f in found if f.rule_id == "STK-ONNX-003")
    assert decrypt.properties["count"] == 2  # both branches
    assert "loop" in decrypt.detail
    assert any("function my.fns:Hidden" in f.detail for f in found)


def external(tensor: TensorProto, location: str) -> TensorProto:
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


@pytest.mark.parametrize(
    "location", ["../../etc/passwd", "/etc/passwd", "C:\\Windows\\win.ini", "data/../../x"]
)
def test_external_data_that_leaves_the_model_directory(location: str, tmp_path: Path) -> None:
    model = onnx_model()
    external(model.graph.initializer[0], location)
    data = model.SerializeToString()
    for found in (scan(data, "m.onnx"), scan(data, "m.onnx", base=str(tmp_path))):
        assert rules(found) == [("STK-ONNX-001", Severity.HIGH)]
        assert found[0].snippet == location
        assert "W" in found[0].detail


def test_every_location_entry_is_judged() -> None:
    model = onnx_model()
    tensor = external(model.graph.initializer[0], "weights.bin")
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../../etc/passwd"  # the one readers keep
    found = scan(model.SerializeToString(), "m.onnx")
    assert [(f.rule_id, f.snippet) for f in found] == [("STK-ONNX-001", "../../../etc/passwd")]


def test_external_data_in_constants_and_sparse_initializers() -> None:
    value = external(numpy_helper.from_array(np.ones(4, np.float32), "c"), "/etc/shadow")
    constant = helper.make_node("Constant", [], ["C"], value=value, name="const")
    model = onnx_model(constant)
    sparse = helper.make_sparse_tensor(
        external(numpy_helper.from_array(np.ones(2, np.float32), "sv"), "../sparse.bin"),
        numpy_helper.from_array(np.array([0, 3], np.int64), "si"),
        [4],
    )
    model.graph.sparse_initializer.append(sparse)
    found = scan(model.SerializeToString(), "m.onnx")
    assert sorted(f.snippet for f in found) == ["../sparse.bin", "/etc/shadow"]
    assert {f.rule_id for f in found} == {"STK-ONNX-001"}


def test_missing_external_file_is_low_and_a_link_out_is_high(tmp_path: Path) -> None:
    model = onnx_model()
    external(model.graph.initializer[0], "weights.bin")
    data = model.SerializeToString()
    found = scan(data, "m.onnx", base=str(tmp_path))
    assert rules(found) == [("STK-ONNX-002", Severity.LOW)]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"x" * 64)
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(outside / "secret", folder / "weights.bin")
    found = scan(data, "m.onnx", base=str(folder))
    assert rules(found) == [("STK-ONNX-001", Severity.HIGH)]
    # Inside an archive (no folder to resolve against) only the path itself is judged.
    assert scan(data, "m.onnx") == []


def test_truncated_onnx_keeps_what_was_found() -> None:
    local = helper.make_function(
        "custom.fn",
        "Twice",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    model = onnx_model(helper.make_node("Op", ["Y"], ["Z"], domain="evil"), functions=(local,))
    data = model.SerializeToString()
    found = scan(data[: len(data) - 20], "m.onnx")
    assert sorted(f.rule_id for f in found) == ["STK-ERR-001", "STK-ONNX-003"]


def test_onnx_and_savedmodel_do_not_claim_each_other() -> None:
    model = onnx_model()
    model.ir_version = 1  # begins 08 01 12 like a SavedModel
    data = model.SerializeToString()
    assert not tf_savedmodel.SCANNER.detect(Blob("m.onnx", data))
    assert onnx_format.SCANNER.detect(Blob("m.onnx", data))
    sm = saved_model(meta_graph(checkpointing_graph()))
    assert not onnx_format.SCANNER.detect(Blob("saved_model.pb", sm))
    for scanner in SCANNERS:
        assert not scanner.detect(Blob("x", b"PK\x03\x04" + b"\x00" * 40))
