"""The pickle scanner: every evasion family is flagged at the right severity, pickles written
by real libraries (NumPy, scikit-learn, joblib, torch- and pandas-shaped streams) are clean.

Fixtures are bytes written by hand or by `pickle` on stand-in objects; none is ever loaded.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import io
import os
import pickle
import random
import struct
import sys
import types
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from stockade.core.errors import ConfigError
from stockade.core.findings import Finding, Severity
from stockade.model.scan.engine import scan_bytes
from stockade.model.scan.formats.pickle import (
    SCANNER,
    PicklePolicy,
    default_policy,
    load_policy,
    scan_pickle,
)
from stockade.model.scan.interface import Blob, Limits, ScanContext
from stockade.model.scan.pickle_vm import Use, interpret, looks_like_pickle

# -- helpers ----------------------------------------------------------------------------


def scan(data: bytes, limits: Limits | None = None) -> list[Finding]:
    return scan_bytes(data, "model.pkl", scanners=[SCANNER], limits=limits)


def issues(findings: list[Finding], at_least: Severity = Severity.MEDIUM) -> list[Finding]:
    return [f for f in findings if not f.is_error and f.severity >= at_least]


def worst(findings: list[Finding]) -> Severity | None:
    found = [f.severity for f in findings if not f.is_error]
    return max(found) if found else None


def rule(findings: list[Finding], rule_id: str) -> list[Finding]:
    return [f for f in findings if f.rule_id == rule_id]


def assert_clean(data: bytes, what: str) -> None:
    findings = scan(data)
    assert not [f for f in findings if f.is_error], (what, findings)
    assert not issues(findings), (what, [(f.rule_id, f.snippet, f.detail) for f in findings])


class Reduce:
    """A harmless stand-in whose pickle calls `func(*args)` on load."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.func, self.args


# A tiny pickle assembler for streams the standard pickler never writes.
PROTO2 = b"\x80\x02"
PROTO4 = b"\x80\x04"
MARK, STOP, TUPLE, REDUCE, POP, DICT = b"(", b".", b"t", b"R", b"0", b"}"
EMPTY_TUPLE, NONE, BUILD, SETITEM = b")", b"N", b"b", b"s"
STACK_GLOBAL, MEMOIZE, NEWOBJ, NEWOBJ_EX = b"\x93", b"\x94", b"\x81", b"\x92"


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(value: str) -> bytes:
    raw = value.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def binbytes(value: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(value)) + value


def call(callee: bytes, *args: bytes) -> bytes:
    return callee + MARK + b"".join(args) + TUPLE + REDUCE


def invoke(module: str, name: str, *args: bytes) -> bytes:
    """A protocol 2 pickle that calls module.name(*args) and stops."""
    return PROTO2 + call(glob(module, name), *args) + STOP


# -- dangerous callables -----------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(6))
def test_os_system_reduce_is_critical_with_global_and_offset(protocol: int) -> None:
    data = pickle.dumps(Reduce(os.system, "echo pwned"), protocol=protocol)
    findings = scan(data)
    hits = rule(findings, "STK-PKL-001")
    assert len(hits) == 1
    hit = hits[0]
    assert hit.severity == Severity.CRITICAL
    assert hit.snippet == f"{os.system.__module__}.system"
    assert hit.location.offset == data.rindex(b"R")
    assert hit.properties["use"] == "called"
    assert not [f for f in findings if f.is_error]


STDLIB_PAYLOADS = [
    # string-evaluating stdlib functions
    ("builtins", "eval"),
    ("builtins", "exec"),
    ("builtins", "compile"),
    ("builtins", "open"),
    ("builtins", "__import__"),
    ("builtins", "getattr"),
    ("builtins", "setattr"),
    ("timeit", "timeit"),
    ("cProfile", "run"),
    ("profile", "run"),
    ("pdb", "run"),
    ("runpy", "run_path"),
    ("runpy", "_run_code"),
    ("code", "InteractiveInterpreter"),
    ("codeop", "compile_command"),
    ("idlelib.pyshell", "ModifiedInterpreter"),
    ("numpy.testing._private.utils", "runstring"),
    ("numpy.f2py", "compile"),
    # process, network and file primitives in uncommon modules
    ("os", "popen"),
    ("os", "execv"),
    ("posix", "system"),
    ("nt", "system"),
    ("subprocess", "Popen"),
    ("subprocess", "check_output"),
    ("pty", "spawn"),
    ("imaplib", "IMAP4_SSL"),
    ("uuid", "_get_command_stdout"),
    ("uuid", "_popen"),
    ("pydoc", "pipepager"),
    ("ctypes", "CDLL"),
    ("_io", "FileIO"),
    ("io", "open"),
    ("logging.handlers", "SMTPHandler"),
    ("smtplib", "SMTP"),
    ("ftplib", "FTP"),
    ("telnetlib", "Telnet"),
    ("poplib", "POP3"),
    ("urllib.request", "urlopen"),
    ("http.client", "HTTPSConnection"),
    ("ssl", "get_server_certificate"),
    ("socket", "create_connection"),
    ("webbrowser", "open"),
    ("shutil", "rmtree"),
    ("venv", "create"),
    ("ensurepip", "bootstrap"),
    ("pip", "main"),
    ("pip._internal.cli.main", "main"),
    ("multiprocessing", "Process"),
    ("asyncio.subprocess", "create_subprocess_shell"),
    ("asyncio.unix_events", "_UnixSubprocessTransport"),
    ("asyncio.base_subprocess", "BaseSubprocessTransport"),
    ("platform", "popen"),
    ("sys", "exit"),
    # trampolines
    ("operator", "attrgetter"),
    ("operator", "methodcaller"),
    ("operator", "itemgetter"),
    ("functools", "partial"),
    ("functools", "reduce"),
    ("importlib", "import_module"),
    ("pkgutil", "resolve_name"),
    # code objects
    ("marshal", "loads"),
    ("types", "CodeType"),
    ("types", "FunctionType"),
    ("dill._dill", "_create_code"),
    ("dill._dill", "_create_function"),
    ("cloudpickle.cloudpickle", "_make_function"),
    ("joblib.externals.cloudpickle.cloudpickle", "_make_function"),
    ("torch.fx.graph_module", "reduce_graph_module"),
    ("torch.jit", "load"),
    ("torch", "load"),
    ("numpy", "load"),
]


@pytest.mark.parametrize(("module", "name"), STDLIB_PAYLOADS)
def test_known_dangerous_callables_are_critical_when_invoked(module: str, name: str) -> None:
    findings = scan(invoke(module, name, text("id")))
    hits = rule(findings, "STK-PKL-001")
    assert [h.snippet for h in hits] == [f"{module}.{name}"]
    assert hits[0].severity == Severity.CRITICAL


@pytest.mark.parametrize("protocol", [0, 1, 2])
def test_python2_names_are_mapped_before_judging(protocol: int) -> None:
    header = b"\x80" + bytes([protocol]) if protocol >= 2 else b""
    for module, name in (("__builtin__", "eval"), ("commands", "getoutput")):
        data = header + glob(module, name) + b"(S'id'\ntR."
        hits = rule(scan(data), "STK-PKL-001")
        assert hits, (module, name)
        assert hits[0].properties["global"] in ("builtins.eval", "subprocess.getoutput")
        assert f"written as {module}.{name}" in hits[0].detail


def test_inst_and_obj_opcodes_invoke_their_class() -> None:
    inst = b"(S'id'\nios\nsystem\n."
    obj = b"(cos\nsystem\nS'id'\no."
    for data in (inst, obj):
        assert worst(scan(data)) == Severity.CRITICAL


def test_newobj_and_newobj_ex_instantiate_their_class() -> None:
    popen = glob("subprocess", "Popen")
    bare = PROTO2 + popen + EMPTY_TUPLE + NEWOBJ + STOP
    newobj = PROTO2 + popen + MARK + text("id") + TUPLE + NEWOBJ + STOP
    newobj_ex = PROTO4 + popen + MARK + text("id") + TUPLE + DICT + NEWOBJ_EX + STOP
    assert rule(scan(bare), "STK-PKL-001")[0].properties["use"] == "instantiated"
    # with arguments, `__new__` acts on them: that is a call
    for data in (newobj, newobj_ex):
        assert rule(scan(data), "STK-PKL-001")[0].properties["use"] == "called"


def test_allowed_classes_given_constructor_arguments_are_not_allowed() -> None:
    memmap = glob("numpy", "memmap")
    bare = PROTO2 + memmap + EMPTY_TUPLE + NEWOBJ + STOP
    opened = PROTO2 + memmap + MARK + text("/tmp/x") + TUPLE + NEWOBJ + STOP
    assert not issues(scan(bare))
    assert [f.rule_id for f in issues(scan(opened))] == ["STK-PKL-003"]


# -- names assembled at load time ---------------------------------------------------------


def test_stack_global_names_assembled_through_the_memo() -> None:
    data = (
        PROTO4
        + text("os")
        + MEMOIZE
        + text("system")
        + MEMOIZE
        + POP
        + POP
        + b"h\x00h\x01"  # BINGET 0, BINGET 1
        + STACK_GLOBAL
        + MARK
        + text("id")
        + TUPLE
        + REDUCE
        + STOP
    )
    hits = rule(scan(data), "STK-PKL-001")
    assert [h.snippet for h in hits] == ["os.system"]
    assert hits[0].properties["opcode"] == "STACK_GLOBAL"


@pytest.mark.parametrize(
    "strings",
    [
        (b"S'os'\n", b"S'system'\n"),  # STRING
        (b"T\x02\x00\x00\x00os", b"T\x06\x00\x00\x00system"),  # BINSTRING
        (b"U\x02os", b"U\x06system"),  # SHORT_BINSTRING
        (b"Vos\n", b"Vsystem\n"),  # UNICODE
        (b"X\x02\x00\x00\x00os", b"X\x06\x00\x00\x00system"),  # BINUNICODE
        (b"S'o\\x73'\n", b"p0\n0g0\nS'system'\n"),  # escapes, PUT/GET text memo
    ],
)
def test_stack_global_from_old_string_opcodes(strings: tuple[bytes, bytes]) -> None:
    module, name = strings
    data = PROTO4 + module + name + STACK_GLOBAL + MARK + text("id") + TUPLE + REDUCE + STOP
    hits = rule(scan(data), "STK-PKL-001")
    assert [h.snippet for h in hits] == ["os.system"]


def test_stack_global_with_computed_operands_is_flagged() -> None:
    made = call(glob("builtins", "str"), text("os"))
    referenced = PROTO4 + made + text("system") + STACK_GLOBAL + STOP
    invoked = PROTO4 + made + text("system") + STACK_GLOBAL + MARK + TUPLE + REDUCE + STOP
    assert [f.severity for f in rule(scan(referenced), "STK-PKL-004")] == [Severity.HIGH]
    assert [f.severity for f in rule(scan(invoked), "STK-PKL-004")] == [Severity.CRITICAL]


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("sklearn.utils", "os.system"),
        ("torch.serialization", "pickle.loads"),
        ("collections", "abc.os.system"),
        ("builtins", "object.__subclasses__"),
        ("numpy", "testing._private.utils.runstring"),
    ],
)
def test_dotted_names_reaching_dangerous_globals(module: str, name: str) -> None:
    data = PROTO4 + text(module) + text(name) + STACK_GLOBAL + MARK + TUPLE + REDUCE + STOP
    findings = scan(data)
    assert worst(findings) in (Severity.CRITICAL, Severity.HIGH)
    assert rule(findings, "STK-PKL-001")[0].snippet == f"{module}.{name}"


def test_getattr_trampoline_through_import() -> None:
    module = call(glob("builtins", "__import__"), text("os"))
    attr = call(glob("builtins", "getattr"), module, text("system"))
    data = PROTO2 + MARK + TUPLE + POP + attr + MARK + text("id") + TUPLE + REDUCE + STOP
    findings = scan(data)
    assert {h.snippet for h in rule(findings, "STK-PKL-001")} == {
        "builtins.__import__",
        "builtins.getattr",
    }
    assert rule(findings, "STK-PKL-006")  # the computed function is then called


def test_ufunc_reconstruct_resolves_the_global_it_names() -> None:
    resolver = call(glob("numpy.core", "_ufunc_reconstruct"), text("os"), text("system"))
    data = PROTO2 + call(resolver, text("id")) + STOP
    hits = rule(scan(data), "STK-PKL-001")
    assert [h.snippet for h in hits] == ["os.system"]


def test_functions_handed_to_trampolines_count_as_called() -> None:
    partial = call(glob("functools", "partial"), glob("os", "system"), text("id"))
    data = PROTO2 + call(partial) + STOP
    hits = {h.snippet: h for h in rule(scan(data), "STK-PKL-001")}
    assert set(hits) == {"functools.partial", "os.system"}
    factory = PROTO2 + call(glob("collections", "defaultdict"), glob("os", "system")) + STOP
    assert [h.snippet for h in rule(scan(factory), "STK-PKL-001")] == ["os.system"]


def test_functions_handed_to_unknown_callables_count_as_called() -> None:
    data = PROTO2 + call(glob("acme.tools", "apply"), glob("os", "system"), text("id")) + STOP
    findings = scan(data)
    assert [h.snippet for h in rule(findings, "STK-PKL-001")] == ["os.system"]
    assert [h.snippet for h in rule(findings, "STK-PKL-003")] == ["acme.tools.apply"]
    # an allowed container only keeps what it is given
    kept = PROTO2 + call(glob("builtins", "list"), MARK + glob("os", "system") + b"l") + STOP
    assert [h.rule_id for h in issues(scan(kept))] == ["STK-PKL-002"]


def test_reconstructor_base_is_called() -> None:
    data = (
        PROTO2
        + call(glob("copy_reg", "_reconstructor"), glob("os", "system"), glob("os", "system"))
        + STOP
    )
    hits = rule(scan(data), "STK-PKL-001")
    assert hits[0].properties["use"] == "called"


# -- values, results and modification -----------------------------------------------------


def test_dangerous_global_referenced_but_never_invoked_is_high() -> None:
    data = pickle.dumps({"hook": os.system, "weights": [1.0, 2.0]}, protocol=4)
    findings = scan(data)
    hits = rule(findings, "STK-PKL-002")
    assert [h.severity for h in hits] == [Severity.HIGH]
    assert not rule(findings, "STK-PKL-001")


def test_result_called_and_discarded_still_counts() -> None:
    data = PROTO2 + call(glob("os", "system"), text("id")) + POP + NONE + STOP
    assert worst(scan(data)) == Severity.CRITICAL


def test_modifying_a_module_level_object() -> None:
    environ = PROTO2 + glob("os", "environ") + text("LD_PRELOAD") + text("/tmp/x.so")
    assert worst(scan(environ + SETITEM + STOP)) == Severity.CRITICAL
    patched = PROTO2 + glob("collections", "OrderedDict") + DICT + BUILD + STOP
    hits = rule(scan(patched), "STK-PKL-007")
    assert [h.severity for h in hits] == [Severity.HIGH]


def test_unknown_callables_and_globals_are_medium() -> None:
    called = scan(invoke("acme.models", "Loader", text("x")))
    assert [(f.rule_id, f.severity) for f in issues(called)] == [("STK-PKL-003", Severity.MEDIUM)]
    kept = scan(PROTO2 + glob("acme.models", "transform") + STOP)
    assert [(f.rule_id, f.severity) for f in issues(kept)] == [("STK-PKL-008", Severity.MEDIUM)]
    # an allowed class used beyond what the policy allows: sklearn classes are never called
    misused = scan(invoke("sklearn.utils.validation", "check_array", text("x")))
    assert "only to be instantiated" in rule(misused, "STK-PKL-003")[0].detail


def test_unknown_extension_codes_are_medium() -> None:
    data = PROTO2 + b"\x82\xf0" + MARK + TUPLE + REDUCE + STOP
    hits = rule(scan(data), "STK-PKL-005")
    assert [h.severity for h in hits] == [Severity.MEDIUM]
    assert hits[0].snippet == "<extension code 240>"


def test_persistent_ids_outside_the_torch_shape() -> None:
    odd = PROTO2 + text("anything") + b"Q" + STOP
    assert [f.severity for f in rule(scan(odd), "STK-PKL-009")] == [Severity.MEDIUM]
    text_id = b"Pfile:/etc/passwd\n."
    assert rule(scan(text_id), "STK-PKL-009")


# -- nested pickles -----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4])
def test_nested_pickle_in_pickle_loads_is_scanned(protocol: int) -> None:
    inner = pickle.dumps(Reduce(os.system, "id"), protocol=protocol)
    data = pickle.dumps(Reduce(pickle.loads, inner), protocol=protocol)
    findings = scan(data)
    loads = rule(findings, "STK-PKL-001")
    outer = [f for f in loads if f.location.member is None]
    nested = [f for f in loads if f.location.member is not None]
    assert [f.severity for f in outer] == [Severity.HIGH]
    assert nested[0].severity == Severity.CRITICAL
    assert nested[0].location.member.startswith("<nested pickle @")


def test_nested_pickle_written_as_latin1_text_in_protocol_2() -> None:
    inner = pickle.dumps(Reduce(os.system, "id"), protocol=2)
    # protocols < 3 write bytes as _codecs.encode(text, 'latin1')
    data = pickle.dumps(Reduce(pickle.loads, inner), protocol=1)
    assert b"_codecs" in data
    nested = [f for f in scan(data) if f.location.member]
    assert worst(nested) == Severity.CRITICAL


def test_torch_load_from_bytes_scans_the_embedded_file() -> None:
    inner = pickle.dumps(Reduce(os.system, "id"), protocol=2)
    data = invoke("torch.storage", "_load_from_bytes", binbytes(inner))
    findings = scan(data)
    assert not [f for f in issues(findings) if f.location.member is None]
    assert worst(findings) == Severity.CRITICAL


def test_computed_bytes_handed_to_an_unpickler() -> None:
    payload = call(glob("base64", "b64decode"), text("gASV"))
    data = PROTO2 + call(glob("pickle", "loads"), payload) + STOP
    assert [f.severity for f in rule(scan(data), "STK-PKL-010")] == [Severity.HIGH]


# -- broken and concatenated streams --------------------------------------------------------


def test_payload_followed_by_truncation_keeps_the_finding_and_adds_an_error() -> None:
    whole = pickle.dumps(Reduce(os.system, "id"), protocol=0)
    cut = whole[: whole.index(b"R") + 1]  # no STOP
    findings = scan(cut)
    assert worst(findings) == Severity.CRITICAL
    errors = [f for f in findings if f.is_error]
    assert len(errors) == 1
    assert errors[0].location.offset == len(cut)


def test_payload_followed_by_garbage() -> None:
    data = PROTO2 + call(glob("os", "system"), text("id")) + b"\xff\xfe garbage"
    findings = scan(data)
    assert worst(findings) == Severity.CRITICAL
    errors = [f for f in findings if f.is_error]
    assert errors[0].location.offset == data.index(b"\xff")
    assert "invalid opcode" in errors[0].detail


def test_concatenated_pickles_are_each_scanned() -> None:
    benign = pickle.dumps({"weights": [1, 2, 3]}, protocol=4)
    evil = pickle.dumps(Reduce(os.system, "id"), protocol=2)
    data = benign + evil + pickle.dumps([1], protocol=0)
    hits = rule(scan(data), "STK-PKL-001")
    assert len(hits) == 1
    assert hits[0].location.offset == len(benign) + evil.rindex(b"R")


def test_payload_in_a_broken_second_pickle_is_not_lost() -> None:
    benign = pickle.dumps([1, 2], protocol=2)
    evil = b"cos\nsystem\n(S'id'\ntR"  # breaks before STOP
    findings = scan(benign + evil)
    assert worst(findings) == Severity.CRITICAL
    assert [f for f in findings if f.is_error]


def test_raw_bytes_after_the_last_pickle_are_trailing_data() -> None:
    data = pickle.dumps({"a": 1}, protocol=2) + b"\x00" * 64 + os.urandom(64)
    findings = scan(data)
    assert not [f for f in findings if f.is_error]
    assert [f.rule_id for f in findings] == ["STK-PKL-012"]
    assert findings[0].severity == Severity.INFO


def test_opcode_limit_is_enforced() -> None:
    data = pickle.dumps(list(range(5000)), protocol=0)
    findings = scan(data, limits=Limits(max_pickle_ops=1000))
    assert [f for f in findings if f.is_error]


def test_unbounded_marks_are_refused() -> None:
    findings = scan(b"(" * 300_000 + b".")
    errors = [f for f in findings if f.is_error]
    assert errors
    assert "marks" in errors[0].detail


# -- benign pickles written by real libraries ------------------------------------------------


@pytest.fixture(scope="module")
def estimators() -> dict[str, Any]:
    rng = np.random.RandomState(0)
    features = rng.rand(80, 4)
    labels = (features[:, 0] + features[:, 1] > 1).astype(int)
    return {
        "logistic": LogisticRegression().fit(features, labels),
        "pipeline": Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(
            features, labels
        ),
        "gradient_boosting": GradientBoostingClassifier(n_estimators=5).fit(features, labels),
        "random_forest": RandomForestClassifier(
            n_estimators=4, random_state=np.random.RandomState(1)
        ).fit(features, labels),
    }


ARRAYS: dict[str, Any] = {
    "float": np.arange(12, dtype="f8").reshape(3, 4),
    "fortran": np.asfortranarray(np.ones((3, 2), dtype="f4")),
    "int": np.arange(7, dtype=">i2"),
    "bool": np.array([True, False]),
    "complex": np.array([1 + 2j]),
    "datetime": np.array(["2024-01-01"], dtype="M8[ns]"),
    "unicode": np.array(["abc", "de"]),
    "bytes": np.array([b"ab"], dtype="S4"),
    "structured": np.zeros(3, dtype=[("a", "f4"), ("b", "i8")]),
    "object": np.array([1, "a", None], dtype=object),
    "empty": np.zeros((0, 3)),
    "scalar": np.float32(3.5),
    "masked": np.ma.masked_array([1, 2], [0, 1]),
    "random_state": np.random.RandomState(0),
    "generator": np.random.default_rng(0),
    "ufunc": np.log1p,
    "dtype": np.dtype("f8"),
}


@pytest.mark.parametrize("protocol", range(6))
@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_numpy_pickles_are_clean(name: str, protocol: int) -> None:
    assert_clean(pickle.dumps(ARRAYS[name], protocol=protocol), f"{name} p{protocol}")


@pytest.mark.parametrize("protocol", range(6))
def test_scikit_learn_pickles_are_clean(estimators: dict[str, Any], protocol: int) -> None:
    for name, model in estimators.items():
        assert_clean(pickle.dumps(model, protocol=protocol), f"{name} p{protocol}")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_joblib_files_are_clean_and_fully_interpreted(
    estimators: dict[str, Any], protocol: int, tmp_path: Path
) -> None:
    payloads = {**estimators, "arrays": dict(ARRAYS), "big": np.random.rand(300, 40)}
    for name, value in payloads.items():
        path = tmp_path / f"{name}.joblib"
        joblib.dump(value, path, compress=0, protocol=protocol)
        data = path.read_bytes()
        assert_clean(data, f"{name} joblib p{protocol}")
        result = interpret(data, roles=default_policy().roles)
        assert result.error is None
        assert result.end == len(data)


def test_joblib_inline_arrays_do_not_hide_what_follows(tmp_path: Path) -> None:
    path = tmp_path / "evil.joblib"
    joblib.dump({"weights": np.arange(1000.0), "hook": Reduce(os.system, "id")}, path)
    assert worst(scan(path.read_bytes())) == Severity.CRITICAL
    objects = tmp_path / "objects.joblib"
    joblib.dump(np.array([Reduce(os.system, "id"), 1], dtype=object), objects)
    assert worst(scan(objects.read_bytes())) == Severity.CRITICAL


def test_joblib_array_bytes_that_plain_pickle_would_run_are_inspected() -> None:
    """A polyglot: joblib reads the bytes after the wrapper as array data, `pickle.load`
    reads them as opcodes."""
    payload = b"cos\nsystem\n(S'id'\ntR0"
    dtype = call(glob("numpy", "dtype"), text("u1"), b"\x89\x88")
    dtype += MARK + b"K\x03" + text("|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t" + BUILD
    wrapper = glob("joblib.numpy_pickle", "NumpyArrayWrapper") + EMPTY_TUPLE + NEWOBJ
    shape = b"K" + bytes([len(payload)]) + b"\x85"
    state = DICT + MARK + text("shape") + shape + text("dtype") + dtype + b"u"
    data = PROTO2 + wrapper + state + BUILD + payload + STOP
    result = interpret(data, roles=default_policy().roles)
    assert result.error is None
    assert result.end == len(data)
    hits = rule(scan(data), "STK-PKL-001")
    assert [h.snippet for h in hits] == ["os.system"]


def test_joblib_wrapper_of_unknown_size_stops_without_error() -> None:
    wrapper = glob("joblib.numpy_pickle", "NumpyArrayWrapper") + MARK + TUPLE + NEWOBJ
    state = b"}" + MARK + text("shape") + b"N" + text("dtype") + b"N" + b"u"
    data = PROTO2 + wrapper + state + BUILD + os.urandom(200)
    findings = scan(data)
    assert not [f for f in findings if f.is_error]
    assert [f.rule_id for f in findings] == ["STK-PKL-013"]


def test_old_joblib_wrappers_that_read_files_outside_the_folder() -> None:
    wrapper = glob("joblib.numpy_pickle_compat", "NDArrayWrapper") + MARK + TUPLE + NEWOBJ
    state = b"}" + MARK + text("filename") + text("../../secret.npy") + b"u"
    findings = scan(PROTO2 + wrapper + state + BUILD + STOP)
    assert [f.severity for f in rule(findings, "STK-PKL-011")] == [Severity.HIGH]


PLAIN_VALUES: dict[str, Any] = {
    "dict": {"a": 1, "b": [1.5, None, True], "c": {"nested": (1, 2)}},
    "list": [1, 2.0, "three", b"four", bytearray(b"five")],
    "set": {1, 2, 3},
    "frozenset": frozenset({"a"}),
    "ordered": collections.OrderedDict(a=1, b=2),
    "defaultdict": collections.defaultdict(list, a=[1]),
    "counter": collections.Counter("hello"),
    "deque": collections.deque([1, 2]),
    "datetime": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    "date": datetime.date(2024, 1, 2),
    "delta": datetime.timedelta(days=3),
    "decimal": decimal.Decimal("1.25"),
    "complex": 1 + 2j,
    "big_int": 2**200,
    "recursive": (lambda x: (x.append(x), x)[1])([]),
    "slice": slice(1, 5, 2),
    "range": range(10),
    "long_text": "x" * 100_000,
    "long_bytes": os.urandom(100_000),
}


@pytest.mark.parametrize("protocol", range(6))
@pytest.mark.parametrize("name", sorted(PLAIN_VALUES))
def test_plain_python_values_are_clean(name: str, protocol: int) -> None:
    assert_clean(pickle.dumps(PLAIN_VALUES[name], protocol=protocol), f"{name} p{protocol}")


# -- torch- and pandas-shaped streams, written by the real pickler with stand-in modules -------


def _stand_in(modules: dict[str, dict[str, Any]]) -> Iterator[None]:
    """Register stand-in modules so `pickle` writes their names (nothing is imported)."""
    packages = {
        ".".join(name.split(".")[:i]) for name in modules for i in range(1, name.count(".") + 1)
    }
    names = packages | set(modules)
    saved = {name: sys.modules.get(name) for name in names}
    for name in packages - set(modules):
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
    for name, members in modules.items():
        module = types.ModuleType(name)
        for attr, value in members.items():
            if isinstance(value, type | types.FunctionType):
                value.__module__ = name
                value.__qualname__ = attr
            setattr(module, attr, value)
        sys.modules[name] = module
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _function(name: str) -> Callable[..., None]:
    def stand_in(*args: Any) -> None:
        return None

    stand_in.__name__ = name
    return stand_in


class _Storage:
    pass


class _Device:
    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __reduce__(self) -> tuple[Any, ...]:
        return sys.modules["torch"].device, (self.kind,)


class _Size(tuple):
    def __reduce__(self) -> tuple[Any, ...]:
        return sys.modules["torch"].Size, (tuple(self),)


class _Tensor:
    def __init__(self, key: str, shape: tuple[int, ...], helper: str = "_rebuild_tensor_v2"):
        self.key = key
        self.shape = shape
        self.helper = helper

    def __reduce__(self) -> tuple[Any, ...]:
        utils = sys.modules["torch._utils"]
        storage = (sys.modules["torch"].FloatStorage, self.key)
        stride = tuple(int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape)))
        hooks = collections.OrderedDict()
        if self.helper == "_rebuild_qtensor":
            params = (sys.modules["torch"].per_tensor_affine, 0.1, 0)
            args = (storage, 0, self.shape, stride, params, False, hooks)
        elif self.helper == "_rebuild_parameter":
            inner = _Tensor(self.key, self.shape)
            return utils._rebuild_parameter, (inner, True, hooks)
        elif self.helper == "_rebuild_sparse_tensor":
            return utils._rebuild_sparse_tensor, (sys.modules["torch"].sparse_coo, (1, 2, 3))
        else:
            args = (storage, 0, self.shape, stride, False, hooks)
        return getattr(utils, self.helper), args


class _Linear:
    """Pickled like an nn.Module: its class by name, then its __dict__ by BUILD."""

    def __init__(self) -> None:
        self.training = True
        self._parameters = collections.OrderedDict(weight=_Tensor("3", (2, 2)))
        self._modules = collections.OrderedDict()
        self.in_features = 2


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if (
            isinstance(obj, tuple)
            and len(obj) == 2
            and obj[0] is getattr(sys.modules.get("torch"), "FloatStorage", None)
        ):
            return ("storage", obj[0], obj[1], "cpu", 4)
        return None


@pytest.fixture
def torch_modules() -> Iterator[None]:
    torch_members: dict[str, Any] = {
        "FloatStorage": type("FloatStorage", (_Storage,), {}),
        "device": type("device", (), {}),
        "Size": type("Size", (), {}),
        "float32": _function("float32"),
        "per_tensor_affine": _function("per_tensor_affine"),
        "sparse_coo": _function("sparse_coo"),
    }
    utils = {
        name: _function(name)
        for name in (
            "_rebuild_tensor_v2",
            "_rebuild_parameter",
            "_rebuild_qtensor",
            "_rebuild_sparse_tensor",
        )
    }
    linear = {"Linear": _Linear}
    yield from _stand_in(
        {"torch": torch_members, "torch._utils": utils, "torch.nn.modules.linear": linear}
    )


def torch_pickle(value: Any, protocol: int = 2) -> bytes:
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=protocol).dump(value)
    return buffer.getvalue()


def test_torch_state_dict_pickles_are_clean(torch_modules: None) -> None:
    state = collections.OrderedDict(
        [
            ("fc.weight", _Tensor("0", (4, 3))),
            ("fc.bias", _Tensor("1", (4,))),
            ("q.weight", _Tensor("2", (2, 2), "_rebuild_qtensor")),
            ("p", _Tensor("3", (2,), "_rebuild_parameter")),
            ("sparse", _Tensor("4", (3,), "_rebuild_sparse_tensor")),
            ("device", _Device("cpu")),
            ("size", _Size((2, 3))),
            ("model", _Linear()),
        ]
    )
    for protocol in (2, 4):
        data = torch_pickle(state, protocol)
        assert b"torch._utils" in data
        assert_clean(data, f"torch p{protocol}")


def test_torch_zip_members_are_clean_and_scanned_through_the_zip(torch_modules: None) -> None:
    data = torch_pickle(collections.OrderedDict(w=_Tensor("0", (2,))))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", data)
        archive.writestr("archive/data/0", b"\x00" * 8)
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/byteorder", "little")
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        member = archive.read("archive/data.pkl")
    assert SCANNER.detect(Blob("model.pt", member, "archive/data.pkl", 1))
    assert_clean(member, "torch zip data.pkl")


def test_torch_legacy_stream_of_several_pickles_and_raw_storages(torch_modules: None) -> None:
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    version = pickle.dumps(1001, protocol=2)
    sys_info = pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
    main = torch_pickle(collections.OrderedDict(w=_Tensor("0", (2,))))
    keys = pickle.dumps(["0"], protocol=2)
    storages = struct.pack("<q", 2) + struct.pack("<2f", 1.0, 2.0)
    findings = scan(magic + version + sys_info + main + keys + storages)
    assert not [f for f in findings if f.is_error]
    assert not issues(findings)


def test_torch_storage_with_unknown_type_in_persistent_id(torch_modules: None) -> None:
    evil = PROTO2 + MARK + text("storage") + glob("os", "system") + text("0") + text("cpu")
    evil += b"K\x01" + TUPLE + b"Q" + STOP
    assert rule(scan(evil), "STK-PKL-009")
    assert rule(scan(evil), "STK-PKL-002")


class _Frame:
    def __init__(self, manager: Any) -> None:
        self._mgr = manager
        self._typ = "dataframe"
        self.attrs: dict[str, Any] = {}


class _BlockManager:
    def __init__(self) -> None:
        values = np.arange(6.0).reshape(2, 3)
        index = Reduce(_pandas("pandas.core.indexes.base", "_new_Index"), _Index, {"stop": 3})
        block = Reduce(_pandas("pandas._libs.internals", "_unpickle_block"), values, slice(0, 2), 2)
        self.state = (["a", "b"], [index], [block])

    def __reduce__(self) -> tuple[Any, ...]:
        return (copy_reconstructor(), (type(self), object, None), {"state": self.state})


class _Index:
    pass


def _pandas(module: str, name: str) -> Any:
    return getattr(sys.modules[module], name)


def copy_reconstructor() -> Any:
    import copyreg

    return copyreg._reconstructor


@pytest.fixture
def pandas_modules() -> Iterator[None]:
    yield from _stand_in(
        {
            "pandas.core.frame": {"DataFrame": _Frame},
            "pandas.core.internals.managers": {"BlockManager": _BlockManager},
            "pandas.core.indexes.range": {"RangeIndex": _Index},
            "pandas.core.indexes.base": {"_new_Index": _function("_new_Index")},
            "pandas._libs.internals": {"_unpickle_block": _function("_unpickle_block")},
        }
    )


def test_pandas_shaped_dataframe_pickle_is_clean(pandas_modules: None) -> None:
    frame = _Frame(_BlockManager())
    for protocol in (2, 4, 5):
        data = pickle.dumps(frame, protocol=protocol)
        assert b"pandas._libs.internals" in data
        assert_clean(data, f"pandas p{protocol}")


# -- detection -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(6))
def test_detects_every_protocol(protocol: int) -> None:
    for value in ({"a": [1, 2]}, [1.5], "text", None, 7, np.arange(3)):
        data = pickle.dumps(value, protocol=protocol)
        assert SCANNER.detect(Blob("x", data)), (value, protocol)


def test_detects_truncated_pickles() -> None:
    cut = b"cos\nsystem\n(S'id'\ntR"
    assert looks_like_pickle(cut)
    assert looks_like_pickle(PROTO2 + glob("os", "system"))
    broken = pickle.dumps(list(range(100)), protocol=4)[:-40]
    assert looks_like_pickle(broken)
    findings = scan(broken)
    assert [f.rule_id for f in findings] == ["STK-ERR-001"]


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    return buffer.getvalue()


NOT_PICKLES: dict[str, bytes] = {
    "readme": b"# Stockade\n\nSecure AI systems across their whole lifecycle.\n" * 4,
    "readme_c": b"cat model.pkl\nthen run it\n",
    "csv": b"id,name,score\n1,alice,0.5\n2,bob,0.7\n",
    "csv_numbers": b"1,2,3\n4,5,6\n",
    "json": b'{"architectures": ["BertModel"], "hidden_size": 768}',
    "json_list": b'[1, 2, 3, {"a": null}]',
    "safetensors": struct.pack("<Q", 58)
    + b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  '
    + b"\x00" * 8,
    "zip": _zip_bytes(),
    "gguf": b"GGUF" + struct.pack("<IQQ", 3, 0, 0),
    "npy": b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
    "empty": b"",
    "one": b"N",
    "yaml": b"name: model\nversion: 1\nLayers:\n  - dense\n",
    "shell": b"#!/bin/sh\necho hi\n",
}


@pytest.mark.parametrize("name", sorted(NOT_PICKLES))
def test_does_not_detect_other_formats(name: str) -> None:
    assert not SCANNER.detect(Blob(name, NOT_PICKLES[name]))


def test_does_not_detect_random_bytes() -> None:
    rng = random.Random(1234)
    detected = [
        blob
        for blob in (rng.randbytes(rng.randrange(1, 2048)) for _ in range(3000))
        if looks_like_pickle(blob)
    ]
    assert detected == []


def test_detect_and_scan_work_on_memoryviews_over_files(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(b"S'" + b"a" * 200_000 + b"'\n0cos\nsystem\n(S'id'\ntR.")
    from stockade.model.scan.engine import scan_file

    findings = scan_file(path, scanners=[SCANNER])
    assert worst(findings) == Severity.CRITICAL


# -- the policy -----------------------------------------------------------------------------


def test_builtin_policy_loads_once_and_judges() -> None:
    policy = default_policy()
    assert policy is default_policy()
    assert policy.judge("os", "system").denied is not None
    assert policy.judge("collections", "OrderedDict").allowed == Use.CALL
    assert policy.judge("sklearn.linear_model._logistic", "LogisticRegression").allowed == (
        Use.CONSTRUCT
    )
    # a wildcard never allows an attribute chain
    assert policy.judge("sklearn.base", "np.load").allowed is None
    assert policy.roles("torch.storage", "_load_from_bytes").unpickles == (0,)


def test_users_can_extend_the_policy(tmp_path: Path) -> None:
    base = Path(__file__).parents[2] / "src/stockade/model/scan/rules/pickle_policy.toml"
    custom = tmp_path / "policy.toml"
    custom.write_text(
        base.read_text()
        + '\n[[allow]]\nreason = "our own loader"\nuse = "call"\nglobals = ["acme.models.*"]\n'
    )
    policy = load_policy(custom)
    assert isinstance(policy, PicklePolicy)
    data = invoke("acme.models", "Loader", text("x"))
    ctx = ScanContext()
    ctx.dispatch = lambda blob, inner: scan_pickle(blob, inner, policy)
    scan_pickle(Blob("model.pkl", data), ctx, policy)
    assert ctx.findings == []
    assert rule(scan(data), "STK-PKL-003")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("version = 2\n", "version must be 1"),
        ("version = 1\nextra = 1\n", "unknown keys"),
        ('version = 1\n[[allow]]\nglobals = ["a.b"]\nuse = "call"\n', "needs a reason"),
        ('version = 1\n[[allow]]\nreason = "r"\nglobals = ["a.b"]\nuse = "run"\n', "use must"),
        ('version = 1\n[[allow]]\nreason = "r"\nglobals = []\nuse = "call"\n', "non-empty"),
        ('version = 1\n[[deny]]\nreason = "r"\nglobals = ["os system"]\n', "not a module.name"),
        ('version = 1\n[[deny]]\nreason = "r"\nglobals = ["a.b"]\nseverity = "low"\n', "high"),
        ('version = 1\n[[deny]]\nreason = "r"\nglobals = ["a.b"]\nsevere = 1\n', "unknown keys"),
        ('version = 1\n[[deny]]\nreason = "r"\nglobals = ["a.b"]\ncalls = [-1]\n', "positions"),
        ('version = 1\n[[deny]]\nreason = "r"\nglobals = ["a.b"]\nresolves = [0]\n', "two"),
        ("version = \n", "not valid TOML"),
    ],
)
def test_policy_validator_names_the_problem(tmp_path: Path, document: str, message: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(document)
    with pytest.raises(ConfigError, match=message):
        load_policy(path)


def test_missing_policy_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy(tmp_path / "absent.toml")
