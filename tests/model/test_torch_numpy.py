"""PyTorch (zip, TorchScript, legacy pickle sequence, pre-0.4 tar) and NumPy (.npy, .npz)
artifacts. NumPy files come from numpy itself; torch is not installed, so its files are built
by hand with the byte layout torch.save and torch.jit.save write. Malicious pickles are
produced by pickle's own pickler from stand-ins and are only ever scanned.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.core.findings import Finding, Severity
from stockade.model.scan import engine
from stockade.model.scan.formats import compressed, sevenzip, tar, torch_legacy, torchscript
from stockade.model.scan.formats import numpy as npy
from stockade.model.scan.formats import pickle as pickle_format
from stockade.model.scan.formats import zip as zip_format
from stockade.model.scan.interface import Blob, ScanContext

SCANNERS = [
    zip_format.SCANNER,
    tar.SCANNER,
    sevenzip.SCANNER,
    compressed.SCANNER,
    torch_legacy.SCANNER,
    npy.SCANNER,
    torchscript.SCANNER,
    pickle_format.SCANNER,
]


class Evil:
    """Pickles to a call of os.system; the bytes are scanned, never loaded."""

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, ("echo owned",))


EVIL_PICKLE = pickle.dumps(Evil(), protocol=2)


def scan(data: bytes, path: str = "artifact") -> list[Finding]:
    return engine.scan_bytes(data, path, scanners=SCANNERS)


def serious(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.is_error or f.severity >= Severity.MEDIUM]


def critical_members(found: list[Finding]) -> list[str | None]:
    return [f.location.member for f in found if f.severity is Severity.CRITICAL]


def errors(found: list[Finding]) -> list[str]:
    return [f.detail for f in found if f.is_error]


class Seen:
    """Records every member the dispatcher hands to a scanner, then lets others run."""

    name: ClassVar[str] = "seen"

    def __init__(self) -> None:
        self.members: list[str] = []

    def detect(self, blob: Blob) -> bool:
        if blob.member is not None:
            self.members.append(blob.member)
        return False

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        raise AssertionError("never accepts")


# -- NumPy -----------------------------------------------------------------------------------


def npy_bytes(array: np.ndarray, **kwargs: object) -> bytes:
    sink = io.BytesIO()
    np.save(sink, array, **kwargs)
    return sink.getvalue()


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype="float32").reshape(2, 3, 4),
        np.asfortranarray(np.eye(3)),
        np.array(3.5),
        np.zeros((0, 4)),
        np.array([True, False]),
        np.array([1 + 2j], dtype="complex128"),
        np.array(["hello", "world"]),
        np.array([b"ab", b"cd"]),
        np.array(["2020-01-01"], dtype="datetime64[ns]"),
        np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8", (2,)), ("c", "S3")]),
        np.zeros(2, dtype=np.dtype([("x", "u1"), ("y", "<f4")], align=True)),
    ],
)
def test_numeric_arrays_written_by_numpy_are_clean(array: np.ndarray) -> None:
    assert scan(npy_bytes(array)) == []


def test_npz_archives_written_by_numpy_are_clean(tmp_path: Path) -> None:
    arrays = {"w": np.random.default_rng(0).normal(size=(50, 20)), "b": np.zeros(20)}
    plain, packed = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(plain, **arrays)
    np.savez_compressed(packed, **arrays)
    assert engine.scan_file(plain, scanners=SCANNERS) == []
    assert engine.scan_file(packed, scanners=SCANNERS) == []


def test_object_arrays_dispatch_their_pickle() -> None:
    benign = scan(npy_bytes(np.array(["text", 3, {"k": 1.5}], dtype=object)))
    assert [f.rule_id for f in benign] == [npy.OBJECT_RULE]
    assert benign[0].severity is Severity.INFO
    evil = scan(npy_bytes(np.array([Evil()], dtype=object)))
    assert critical_members(evil) == ["<object array pickle>"]


def test_object_arrays_inside_npz_are_found(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, weights=np.ones(3), meta=np.array([Evil(), 1], dtype=object))
    found = engine.scan_file(path, scanners=SCANNERS)
    assert critical_members(found) == ["meta.npy!/<object array pickle>"]
    packed = tmp_path / "evil_packed.npz"
    np.savez_compressed(packed, meta=np.array([Evil()], dtype=object))
    found = engine.scan_file(packed, scanners=SCANNERS)
    assert critical_members(found) == ["meta.npy!/<object array pickle>"]


def test_structured_dtype_with_an_object_field_is_an_object_array() -> None:
    array = np.zeros(1, dtype=[("n", "<i4"), ("o", "O")])
    array[0] = (1, Evil())
    found = scan(npy_bytes(array))
    assert critical_members(found) == ["<object array pickle>"]


def test_header_and_data_that_disagree() -> None:
    data = npy_bytes(np.arange(100, dtype="<i8"))
    short = scan(data[:-8])
    assert [f.rule_id for f in short] == [npy.SHORT_RULE]
    trailing = scan(data + EVIL_PICKLE)
    assert npy.TRAILING_RULE in {f.rule_id for f in trailing}
    assert critical_members(trailing) == ["<after array>"]
    # np.save() twice on one file handle is normal: the second array is scanned too.
    assert scan(data + npy_bytes(np.array([Evil()], dtype=object))) != []
    assert scan(data + npy_bytes(np.ones(2))) == []


def raw_npy(header: str, version: int = 1, body: bytes = b"") -> bytes:
    text = header.encode("utf-8" if version == 3 else "latin1")
    size = struct.pack("<H", len(text)) if version == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes([version, 0]) + size + text + body


def test_headers_are_parsed_as_literals_never_evaluated() -> None:
    hostile = [
        "{'descr': __import__('os').system('echo owned'), 'fortran_order': False, 'shape': ()}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
        "{'descr': '<f4', 'fortran_order': 'no', 'shape': (1,)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': " + "(" * 100 + ")" * 100 + "}",
        "not a dict at all",
    ]
    for header in hostile:
        found = scan(raw_npy(header))
        assert len(errors(found)) == 1, header
    assert errors(scan(b"\x93NUMPY\x09\x00\x00\x00")) == [".npy header: unknown format version 9.0"]


def test_read_header_reports_the_declared_array() -> None:
    header = npy.read_header(
        raw_npy("{'descr': '<U3', 'fortran_order': True, 'shape': (2, 5)}", version=3)
    )
    assert header.shape == (2, 5)
    assert header.fortran_order is True
    assert header.data_size == 2 * 5 * 12
    assert not header.has_objects
    assert npy.read_header(raw_npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,)}", 2))


# -- PyTorch zip checkpoints -----------------------------------------------------------------


def torch_zip(records: dict[str, bytes], prefix: str = "archive", deflated: tuple = ()) -> bytes:
    """A zip laid out the way torch.save writes one: stored members aligned to 64 bytes by an
    "FB" padding field, sizes in data descriptors, the central directory at the end."""
    out = bytearray()
    central: list[bytes] = []
    for name, data in records.items():
        full = f"{prefix}/{name}".encode()
        method = 8 if name in deflated else 0
        body = data
        if method:
            packer = zlib.compressobj(6, zlib.DEFLATED, -15)
            body = packer.compress(data) + packer.flush()
        offset = len(out)
        pad = (-(offset + 30 + len(full) + 4)) % 64
        extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
        crc = zlib.crc32(data)
        out += struct.pack(
            "<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0x808, method, 0, 0, 0, 0, 0, len(full), len(extra)
        )
        out += full + extra + body
        out += struct.pack("<4sIII", b"PK\x07\x08", crc, len(body), len(data))
        central.append(
            struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                20,
                20,
                0x808,
                method,
                0,
                0,
                crc,
                len(body),
                len(data),
                len(full),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + full
        )
    directory = b"".join(central)
    end = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(central), len(central), len(directory), len(out), 0
    )
    return bytes(out + directory + end)


def _text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def state_dict_pickle(tensors: dict[str, int], *, legacy: bool = False) -> bytes:
    """The pickle torch.save writes for a state dict of float tensors (protocol 2): an
    OrderedDict of `_rebuild_tensor_v2` calls on persistent storage ids."""
    out = bytearray(b"\x80\x02ccollections\nOrderedDict\n)R(")
    for key, (name, numel) in enumerate(tensors.items()):
        out += _text(name) + b"ctorch._utils\n_rebuild_tensor_v2\n("
        out += b"(" + _text("storage") + b"ctorch\nFloatStorage\n" + _text(str(key))
        out += _text("cpu") + b"K" + bytes([numel]) + (b"N" if legacy else b"") + b"tQ"
        out += b"K\x00K" + bytes([numel]) + b"\x85K\x01\x85\x89"
        out += b"ccollections\nOrderedDict\n)RtR"
    return bytes(out + b"u.")


def test_a_torch_checkpoint_is_clean_and_its_storage_is_not_unpacked() -> None:
    tensors = {"fc.weight": 12, "fc.bias": 3}
    records = {
        "data.pkl": state_dict_pickle(tensors),
        ".format_version": b"1",
        ".storage_alignment": b"64",
        "byteorder": b"little",
        "data/0": np.ones(12, dtype="<f4").tobytes(),
        "data/1": EVIL_PICKLE,  # storage bytes are numbers to torch, never unpickled
        "version": b"3\n",
        ".data/serialization_id": b"1234567890123456789012345678901234567890",
    }
    seen = Seen()
    found = engine.scan_bytes(torch_zip(records), "model.pt", scanners=[seen, *SCANNERS])
    assert found == []
    assert seen.members == ["archive/data.pkl"]


def test_an_array_posing_as_torch_storage_is_still_inspected() -> None:
    records = {
        "data.pkl": state_dict_pickle({"w": 1}),
        "data/0": npy_bytes(np.array([Evil()], dtype=object)),
    }
    assert critical_members(scan(torch_zip(records))) == ["archive/data/0!/<object array pickle>"]


def test_a_torch_checkpoint_with_a_malicious_pickle() -> None:
    found = scan(torch_zip({"data.pkl": EVIL_PICKLE, "version": b"3\n"}))
    assert critical_members(found) == ["archive/data.pkl"]


def test_torch_metadata_records_holding_something_else_are_inspected() -> None:
    records = {"data.pkl": state_dict_pickle({"w": 1}), "version": EVIL_PICKLE}
    assert critical_members(scan(torch_zip(records))) == ["archive/version"]


# -- TorchScript -------------------------------------------------------------------------------

# Source as torch.jit.save (PyTorch 2.x) writes it for a scripted nn.Sequential.
SEQUENTIAL_SOURCE = """\
class Sequential(Module):
  __parameters__ = []
  __buffers__ = []
  training : bool
  _is_full_backward_hook : Optional[bool]
  __annotations__["0"] = __torch__.torch.nn.modules.linear.Linear
  __annotations__["1"] = __torch__.torch.nn.modules.activation.ReLU
  def forward(self: __torch__.torch.nn.modules.container.Sequential,
    input: Tensor) -> Tensor:
    _0 = getattr(self, "0")
    _1 = getattr(self, "1")
    input0 = (_0).forward(input, )
    return (_1).forward(input0, )
  def __len__(self: __torch__.torch.nn.modules.container.Sequential) -> int:
    return 2
"""

QUANTIZED_SOURCE = """\
class Linear(Module):
  __parameters__ = []
  __buffers__ = []
  _packed_params : __torch__.torch.classes.quantized.LinearPackedParamsBase
  def forward(self: __torch__.Linear, x: Tensor, signal: Tensor) -> Tensor:
    _0 = uninitialized(Tensor)
    if torch.eq(ops.prim.dtype(x), 6):
      Y = ops.quantized.linear_dynamic(x, self._packed_params, True)
    else:
      ops.prim.RaiseException("Unsupported dtype", "builtins.RuntimeError")
      Y = _0
    code = torch.ops.aten.relu(Y)
    cells = annotate(List[__torch__.torch.classes.rnn.CellParamsBase], [])
    return torch.mul(code, signal.size(0))
"""


def torchscript_zip(sources: dict[str, str]) -> bytes:
    records = {"data.pkl": b"\x80\x02).", "constants.pkl": b"\x80\x02).", "version": b"3\n"}
    records |= {f"code/__torch__/{name}": text.encode() for name, text in sources.items()}
    return torch_zip(
        records, prefix="model", deflated=tuple(f"code/__torch__/{n}" for n in sources)
    )


def test_torchscript_written_by_torch_is_clean() -> None:
    data = torchscript_zip(
        {"torch/nn/modules/container.py": SEQUENTIAL_SOURCE, "quantized.py": QUANTIZED_SOURCE}
    )
    assert scan(data) == []


@pytest.mark.parametrize(
    ("line", "rule", "severity"),
    [
        ('torch.save(x, "/tmp/owned")', torchscript.FILE_OP_RULE, Severity.CRITICAL),
        ('ops.aten.from_file("/etc/passwd")', torchscript.FILE_OP_RULE, Severity.CRITICAL),
        ('torch.ops.image.read_file("/etc/passwd")', torchscript.FILE_OP_RULE, Severity.CRITICAL),
        ("torch.ops.my_ops.run_shell(x)", torchscript.CUSTOM_OP_RULE, Severity.MEDIUM),
        ("torch.classes.evil.Runner()", torchscript.CUSTOM_OP_RULE, Severity.MEDIUM),
        ('__import__("os").system("id")', torchscript.DANGEROUS_RULE, Severity.CRITICAL),
        ('eval("1")', torchscript.DANGEROUS_RULE, Severity.CRITICAL),
        ('os.system("id")', torchscript.DANGEROUS_RULE, Severity.CRITICAL),
        ('subprocess.run(["id"])', torchscript.DANGEROUS_RULE, Severity.CRITICAL),
        ('open("/etc/passwd")', torchscript.DANGEROUS_RULE, Severity.CRITICAL),
        ("getattr(self, x.name)", torchscript.INTROSPECTION_RULE, Severity.HIGH),
        ("x.__class__.__bases__", torchscript.INTROSPECTION_RULE, Severity.HIGH),
        ('getattr(x, "__globals__")', torchscript.INTROSPECTION_RULE, Severity.HIGH),
    ],
)
def test_torchscript_code_that_reaches_outside_tensor_maths(
    line: str, rule: str, severity: Severity
) -> None:
    source = f"def forward(self: __torch__.M, x: Tensor) -> Tensor:\n  _0 = {line}\n  return x\n"
    found = scan(torchscript_zip({"m.py": source}))
    hits = [f for f in found if f.rule_id == rule]
    assert hits, line
    assert hits[0].severity is severity
    assert hits[0].location.member == "model/code/__torch__/m.py"
    assert hits[0].snippet == f"_0 = {line}"


def test_torchscript_imports_and_unparseable_code() -> None:
    found = scan(torchscript_zip({"m.py": "import subprocess\nimport __torch__.torch\n"}))
    assert [f.snippet for f in found if f.severity is Severity.CRITICAL] == ["import subprocess"]
    broken = scan(torchscript_zip({"m.py": "def f(:\n  os.system('id')\n"}))
    assert any("could not be parsed" in detail for detail in errors(broken))
    assert torchscript.DANGEROUS_RULE in {f.rule_id for f in broken}


def test_python_files_outside_code_folders_are_not_torchscript() -> None:
    blob = Blob("x.zip", b"import os\n", member="x.zip!/extra/setup.py")
    assert not torchscript.SCANNER.detect(blob)
    sagemaker = Blob("model.tar.gz", b"import os\n", member="<gzip stream>!/code/inference.py")
    assert not torchscript.SCANNER.detect(sagemaker)
    assert not torchscript.SCANNER.detect(Blob("code/m.py", b"import os\n"))
    assert torchscript.SCANNER.detect(Blob("x", b"import os\n", member="m/code/__torch__/a.py"))


# -- legacy PyTorch files ------------------------------------------------------------------------


def legacy_checkpoint(model: bytes, *, protocol: int = 2, sys_info: bytes | None = None) -> bytes:
    """The layout of torch.save(..., _use_new_zipfile_serialization=False)."""
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}
    parts = [
        pickle.dumps(torch_legacy.MAGIC_NUMBER, protocol=protocol),
        pickle.dumps(torch_legacy.PROTOCOL_VERSION, protocol=protocol),
        sys_info or pickle.dumps(info, protocol=protocol),
        model,
        pickle.dumps(["0", "1"], protocol=protocol),
        struct.pack("<q", 4) + np.ones(4, dtype="<f4").tobytes(),
        struct.pack("<q", 2) + np.ones(2, dtype="<f4").tobytes(),
    ]
    return b"".join(parts)


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_legacy_checkpoints_are_split_into_the_pickles_torch_loads(protocol: int) -> None:
    data = legacy_checkpoint(state_dict_pickle({"w": 4, "b": 2}, legacy=True), protocol=protocol)
    seen = Seen()
    found = engine.scan_bytes(data, "old.pt", scanners=[seen, *SCANNERS])
    assert serious(found) == []
    assert seen.members == [
        "<magic number>",
        "<protocol version>",
        "<system info>",
        "<model>",
        "<storage keys>",
    ]


def test_legacy_checkpoints_with_malicious_pickles() -> None:
    assert critical_members(scan(legacy_checkpoint(EVIL_PICKLE))) == ["<model>"]
    found = scan(legacy_checkpoint(state_dict_pickle({"w": 4}), sys_info=EVIL_PICKLE))
    assert critical_members(found) == ["<system info>"]


def test_a_truncated_legacy_checkpoint_keeps_what_was_found() -> None:
    data = legacy_checkpoint(EVIL_PICKLE)
    cut = data.index(EVIL_PICKLE) + len(EVIL_PICKLE) - 1
    found = scan(data[:cut])
    assert critical_members(found) == ["<model>"]
    assert any("<model> pickle is damaged" in detail for detail in errors(found))


def legacy_tar(*, pickled: bytes, storage_header: bytes | None = None) -> bytes:
    """The tar torch.save wrote before PyTorch 0.4: sys_info, pickle, storages, tensors."""
    storage_header = storage_header or pickle.dumps(("0", "cpu", _FloatStorage), protocol=2)
    storages = (
        pickle.dumps(1, protocol=2)
        + storage_header
        + struct.pack("<q", 3)
        + np.ones(3, dtype="<f4").tobytes()
        + pickle.dumps([], protocol=2)
    )
    tensors = (
        pickle.dumps(1, protocol=2)
        + pickle.dumps(("t0", "0", "FloatTensor"), protocol=2)
        + struct.pack("<ii", 1, 0)
        + struct.pack("<q", 3)
        + struct.pack("<q", 1)
        + struct.pack("<q", 0)
    )
    members = {
        "sys_info": pickle.dumps({"protocol_version": 1001}, protocol=2),
        "pickle": pickled,
        "tensors": tensors,
        "storages": storages,
    }
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return sink.getvalue()


class _FloatStorage:
    """Pickles by reference as torch.FloatStorage without torch installed."""

    __module__ = "torch"
    __qualname__ = "FloatStorage"


@pytest.fixture
def fake_torch_module(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    module = types.ModuleType("torch")
    module.FloatStorage = _FloatStorage  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", module)


@pytest.mark.usefixtures("fake_torch_module")
def test_the_pre_0_4_tar_layout() -> None:
    seen = Seen()
    data = legacy_tar(pickled=pickle.dumps({"t": "t0"}, protocol=2))
    found = engine.scan_bytes(data, "ancient.pt", scanners=[seen, *SCANNERS])
    assert serious(found) == []
    assert "storages!/<storage 0>" in seen.members
    assert "tensors!/<tensor 0>" in seen.members
    assert critical_members(scan(legacy_tar(pickled=EVIL_PICKLE))) == ["pickle"]
    evil_storage = pickle.dumps(("0", Evil(), "FloatStorage"), protocol=2)
    found = scan(legacy_tar(pickled=b"\x80\x02}.", storage_header=evil_storage))
    assert critical_members(found) == ["storages!/<storage 0>"]


# -- the pickle boundary walker ----------------------------------------------------------------

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(first=_values, second=_values, protocol=st.integers(0, 5))
def test_pickle_end_finds_exactly_where_each_pickle_stops(
    first: object, second: object, protocol: int
) -> None:
    one = pickle.dumps(first, protocol=protocol)
    two = pickle.dumps(second, protocol=protocol)
    assert torch_legacy.pickle_end(one) == len(one)
    assert torch_legacy.pickle_end(one + two) == len(one)
    assert torch_legacy.pickle_end(one + two, len(one)) == len(one) + len(two)
    assert torch_legacy.pickle_end(one[:-1]) is None
