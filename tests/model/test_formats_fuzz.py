"""Fuzzing the GGUF, safetensors, XGBoost, LightGBM, CatBoost and Hugging Face scanners:
random and mutated bytes never raise out of `detect` or `scan`, and never make the
scanner allocate more than a small multiple of the input."""

from __future__ import annotations

import json
import struct
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.core.findings import Finding
from stockade.model.scan.engine import make_dispatch
from stockade.model.scan.formats import (
    catboost,
    chat_template,
    gguf,
    hf_config,
    lightgbm,
    safetensors,
    xgboost,
)
from stockade.model.scan.interface import Blob, FormatScanner, ScanContext

SCANNERS: list[FormatScanner] = [
    gguf.SCANNER,
    safetensors.SCANNER,
    xgboost.SCANNER,
    lightgbm.SCANNER,
    catboost.SCANNER,
    hf_config.SCANNER,
]
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MEMORY_BOUND = 16 << 20  # far above what a 4 KiB input needs, far below a claimed 2^60


# -- seeds: one small well-formed file of each format ---------------------------------------


def _gguf_seed() -> bytes:
    def string(text: bytes) -> bytes:
        return struct.pack("<Q", len(text)) + text

    template = b"{% for m in messages %}{{ m['role'] ~ m.content|trim }}{% endfor %}"
    metadata = [
        string(b"general.architecture") + struct.pack("<I", 8) + string(b"llama"),
        string(b"general.alignment") + struct.pack("<II", 4, 32),
        string(b"tokenizer.ggml.tokens")
        + struct.pack("<IIQ", 9, 8, 3)
        + b"".join(string(t) for t in (b"a", b"bb", b"ccc")),
        string(b"x.nested") + struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 4, 2) + bytes(8),
        string(b"tokenizer.chat_template") + struct.pack("<I", 8) + string(template),
    ]
    tensors = [
        string(b"w") + struct.pack("<IQQIQ", 2, 8, 2, 0, 0),
        string(b"q") + struct.pack("<IQIQ", 1, 32, 8, 64),
    ]
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    head += b"".join(metadata) + b"".join(tensors)
    head += b"\0" * (-len(head) % 32)
    return head + bytes(64) + bytes(34) + bytes(30)


def _safetensors_seed() -> bytes:
    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]},
        "c": {"dtype": "BOOL", "shape": [0], "data_offsets": [22, 22]},
        "d": {"dtype": "F4", "shape": [4], "data_offsets": [22, 24]},
    }
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(24)


_XGB_MODEL = {
    "learner": {
        "attributes": {},
        "feature_names": [],
        "gradient_booster": {
            "model": {
                "gbtree_model_param": {"num_trees": "1"},
                "tree_info": [0],
                "trees": [{"id": 0, "left_children": [1, -1, -1], "base_weights": [0.5, 0.1, 0.2]}],
            },
            "name": "gbtree",
        },
        "learner_model_param": {"base_score": "5E-1", "num_feature": "3"},
        "objective": {"name": "reg:squarederror"},
    },
    "version": [3, 0, 0],
}


def _ubjson(value: object) -> bytes:
    def length(size: int) -> bytes:
        return b"L" + struct.pack(">q", size)

    if isinstance(value, dict):
        items = b"".join(length(len(k)) + k.encode() + _ubjson(v) for k, v in value.items())
        return b"{" + items + b"}"
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        return b"[$d#" + length(len(value)) + b"".join(struct.pack(">f", v) for v in value)
    if isinstance(value, list):
        return b"[#" + length(len(value)) + b"".join(_ubjson(v) for v in value)
    if isinstance(value, int):
        return b"L" + struct.pack(">q", value)
    assert isinstance(value, str)
    return b"S" + length(len(value.encode())) + value.encode()


def _lightgbm_seed() -> bytes:
    tree = "Tree=0\nnum_leaves=2\nsplit_feature=0\nthreshold=0.5\nleaf_value=0.1 0.2\n\n\n"
    head = f"tree\nversion=v4\nnum_class=1\nmax_feature_idx=0\ntree_sizes={len(tree)}\n\n"
    tail = "end of trees\n\nparameters:\n[objective: binary]\nend of parameters\n\n"
    return (head + tree + tail + "pandas_categorical:null\n").encode()


def _catboost_seed() -> bytes:
    core = bytearray(struct.pack("<I", 16))  # root table at 16
    core += struct.pack("<HHHHHH", 12, 20, 4, 8, 0, 16)  # vtable at 4
    core += struct.pack("<i", 12) + bytes(16)  # root table at 16, vtable 12 bytes back
    version_at = len(core)
    core += struct.pack("<I", 18) + b"FlabuffersModel_v1\0\0"
    trees_vtable = len(core)
    core += struct.pack("<HHHxx", 6, 8, 4)
    trees = len(core)
    core += struct.pack("<iI", trees - trees_vtable, 1)
    parts = len(core)
    core += struct.pack("<II", 1, 4) + struct.pack("<I", 18) + b"static_provider_v1\0\0"
    for field, target in ((0, version_at), (1, trees), (3, parts)):
        struct.pack_into("<I", core, 20 + 4 * field, target - (20 + 4 * field))
    ctrs = struct.pack("<I", 2) + struct.pack("<I", 8) + bytes(8) + struct.pack("<I", 4) + bytes(4)
    return b"CBM1" + struct.pack("<I", len(core)) + bytes(core) + ctrs


SEEDS: dict[str, bytes] = {
    "gguf": _gguf_seed(),
    "safetensors": _safetensors_seed(),
    "xgboost-json": json.dumps(_XGB_MODEL).encode(),
    "xgboost-ubj": _ubjson(_XGB_MODEL),
    "lightgbm": _lightgbm_seed(),
    "catboost": _catboost_seed(),
    "hf-config": json.dumps(
        {
            "model_type": "tiny",
            "auto_map": {"AutoModel": "modeling_tiny.Tiny", "AutoTokenizer": ["tok.T", None]},
            "chat_template": [{"name": "default", "template": "{{ messages[0].content }}"}],
        }
    ).encode(),
}


def test_every_seed_is_well_formed_and_clean() -> None:
    """The fuzz seeds are real files of their formats, so mutations start from the inside."""
    owners = {
        "gguf": "gguf",
        "safetensors": "safetensors",
        "xgboost-json": "xgboost",
        "xgboost-ubj": "xgboost",
        "lightgbm": "lightgbm",
        "catboost": "catboost",
        "hf-config": "hf_config",
    }
    for name, data in SEEDS.items():
        findings = scan(data)
        assert [s.name for s in SCANNERS if s.detect(Blob("f", data))] == [owners[name]]
        expected = ["STK-HF-001"] if name == "hf-config" else []
        assert [f.rule_id for f in findings] == expected, (name, findings)


# -- the harness -----------------------------------------------------------------------------


def scan(data: bytes, *, name: str = "f", base: str | None = None) -> list[Finding]:
    """Detect and scan with every scanner the way the engine would, but let any exception
    out (the engine would turn it into an error finding, hiding the crash), and bound the
    memory the scan allocates."""
    blob = Blob(name, data, base=base)
    ctx = ScanContext()
    ctx.dispatch = make_dispatch(SCANNERS)
    tracemalloc.start()
    try:
        for scanner in SCANNERS:
            if scanner.detect(blob):
                scanner.scan(blob, ctx)
                break
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND + 64 * len(data)
    return ctx.findings


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """A seed with a few byte flips, insertions, deletions, overwritten integers or a cut."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "insert", "delete", "int", "cut", "huge"]))
        if action == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        elif action == "int":
            data[position : position + 4] = struct.pack("<I", draw(st.integers(0, 2**32 - 1)))
        elif action == "huge":
            data[position : position + 8] = struct.pack("<Q", 2 ** draw(st.integers(30, 63)))
        else:
            del data[position:]
    return bytes(data)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder: a config, and custom code that imports code that calls out."""
    folder = tmp_path_factory.mktemp("model")
    (folder / "config.json").write_text('{"model_type": "x"}')
    (folder / "modeling_tiny.py").write_text("from .helpers import x\nimport os\n")
    (folder / "helpers.py").write_text("import os\nos.system('id')\nfrom . import helpers\n")
    return folder


# -- the fuzz tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", sorted(SEEDS))
@FUZZ
@given(data=st.data())
def test_mutated_files_never_crash_a_scanner(seed: str, data: st.DataObject) -> None:
    scan(data.draw(mutated(SEEDS[seed])))


@pytest.mark.parametrize(
    "prefix",
    [
        b"GGUF\x03\0\0\0",
        b"GGUF\x01\0\0\0",
        b"GGUF\0\0\0\x02",
        b"CBM1",
        b"tree\nversion=v4\n",
        b'{"learner":{',
        b"{L\0\0\0\0\0\0\0\x07learner",
        b'{"model_type":"x",',
    ],
)
@FUZZ
@given(tail=st.binary(max_size=4096))
def test_random_bytes_after_a_magic_never_crash(prefix: bytes, tail: bytes) -> None:
    scan(prefix + tail)


@FUZZ
@given(length=st.integers(0, 2**64 - 1), tail=st.binary(max_size=2048))
def test_random_safetensors_headers_never_crash(length: int, tail: bytes) -> None:
    scan(struct.pack("<Q", length) + b"{" + tail)


@FUZZ
@given(data=st.binary(max_size=2048))
def test_the_ubjson_walker_only_raises_its_own_error(data: bytes) -> None:
    try:
        keys = xgboost.ubjson_keys(b"{" + data)
    except xgboost.UbjsonError as exc:
        assert 0 <= exc.offset <= len(data) + 1
    else:
        assert () in keys  # a complete top-level object


_JINJA = [
    "{{", "}}", "{%", "%}", "for", " in ", "if", "endif", "endfor", "set", "=", "x", ".",
    "__class__", "__globals__", "|", "attr", "(", ")", "'", "'__", "~", "[", "]", "::", "-1",
    "join", "format", "'%c'", "95", "*", "2", ",", "+", "reverse", "map", "attribute=",
    "include", "macro", "endmacro", "generation", "endgeneration", "raw", "endraw", " ",
    "\n", "{#", "#}", "namespace", "ns", "loop.index0", "os", "popen",
]  # fmt: skip


@FUZZ
@given(parts=st.lists(st.sampled_from(_JINJA), max_size=60))
def test_template_analysis_never_raises(parts: list[str]) -> None:
    analysis = chat_template.analyse_template("".join(parts))
    assert (analysis.problem is None) or analysis.concerns == ()


_PYTHON = [
    "import os", "from os import system as s", "import subprocess as sp", "\n", "    ",
    "def f(", "):", "class C:", "s(", "sp.run(", "os.popen(", "getattr(os, 'system')(",
    "__import__('os')", ".system(", "eval(", "exec", "'x'", ")", "(", "[", "]", ",", "=",
    "from . import helpers", "from .modeling import X", "trust_remote_code=True", "lambda: ",
    "\x00", "\ufeff", "# -*- coding: latin-1 -*-", "\\", '"""',
]  # fmt: skip


@FUZZ
@given(parts=st.lists(st.sampled_from(_PYTHON), max_size=40))
def test_python_files_in_a_model_folder_never_crash_the_scanner(
    parts: list[str], model_folder: Path
) -> None:
    folder = model_folder
    source = "".join(parts).encode("utf-8", "surrogatepass")
    findings = scan(source, name=str(folder / "modeling_x.py"), base=str(folder))
    assert findings  # either the custom-code finding or a could-not-inspect error


@FUZZ
@given(
    auto_map=st.dictionaries(
        st.text(max_size=12),
        st.one_of(
            st.text(max_size=40),
            st.lists(st.one_of(st.none(), st.text(max_size=20)), max_size=3),
            st.integers(),
        ),
        max_size=5,
    ),
    template=st.one_of(st.text(max_size=200), st.integers(), st.none()),
)
def test_arbitrary_configs_never_crash_the_scanner(
    auto_map: dict[str, object], template: object, model_folder: Path
) -> None:
    folder = model_folder
    config = json.dumps({"model_type": "x", "auto_map": auto_map, "chat_template": template})
    scan(config.encode(), name=str(folder / "config.json"), base=str(folder))
