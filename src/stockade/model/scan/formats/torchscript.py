"""TorchScript code (`code/__torch__/**.py` archive members), parsed with `ast` and never run:
file I/O ops, custom-op namespaces, Python builtins and system modules are reported.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from stockade.core.findings import Severity
from stockade.model.scan.interface import Blob, ScanContext

__all__ = ["SCANNER", "CodeFinding", "TorchScriptCode", "inspect_code"]

DANGEROUS_RULE = "STK-TS-001"
FILE_OP_RULE = "STK-TS-002"
CUSTOM_OP_RULE = "STK-TS-003"
INTROSPECTION_RULE = "STK-TS-004"

# Operator and class namespaces that ship with PyTorch and its domain libraries.
KNOWN_NAMESPACES = frozenset(
    {
        "aten", "prim", "prims", "quantized", "_quantized", "quantization",
        "quantized_decomposed", "prepacked", "mkldnn", "mkldnn_prepacked", "mkl", "onednn",
        "sparse", "profiler", "profiling", "xnnpack", "fbgemm", "c10d", "dist_c10d",
        "dist_rpc", "_c10d_functional", "_c10d_functional_autograd", "rngprims", "rnn",
        "_nnapi", "backendutils", "static_runtime", "symm_mem", "inductor",
        "inductor_prims", "onnx", "export", "_dtensor", "_native", "torchvision",
        "torchaudio", "torchtext", "image",
    }
)  # fmt: skip

# Operators TorchScript can call that read or write files (any namespace).
FILE_OPS = frozenset(
    {
        "save", "from_file", "load_tensor", "load_library", "_load_for_mobile",
        "read_file", "write_file", "read_video_from_file",
    }
)  # fmt: skip

# Names that have no business in TorchScript: reaching them means Python code, processes,
# files or the network.
DANGEROUS_NAMES = frozenset(
    {
        "eval", "exec", "execfile", "compile", "__import__", "open", "breakpoint", "input",
        "globals", "locals", "vars", "setattr", "delattr", "__builtins__",
        "os", "posix", "nt", "sys", "subprocess", "builtins", "importlib", "shutil",
        "socket", "pty", "ctypes", "runpy", "pickle", "marshal", "code", "codeop", "pdb",
        "multiprocessing", "signal", "tempfile", "pathlib", "io", "requests", "urllib",
        "http", "webbrowser", "platform", "shlex", "asyncio", "threading", "types",
    }
)  # fmt: skip

INTROSPECTION = frozenset(
    {
        "__globals__", "__builtins__", "__subclasses__", "__class__", "__bases__", "__base__",
        "__mro__", "__code__", "__dict__", "__getattribute__", "__reduce__",
        "__reduce_ex__", "__loader__", "__spec__", "__closure__", "__func__", "__self__",
        "__import__",
    }
)  # fmt: skip

_MAX_SOURCE = 64 << 20
_CODE_PATH = re.compile(r"(?:^|/)code/__torch__(?:/.*)?\.py$")
_TOKEN = re.compile(
    r"\b(?:__import__|eval|exec|compile|open|os\.|subprocess\.|importlib\.|builtins\.)\s*\(?"
)


@dataclass(frozen=True)
class CodeFinding:
    """One construct in TorchScript source that reaches outside tensor maths."""

    rule_id: str
    severity: Severity
    title: str
    name: str
    line: int


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _bound_names(tree: ast.AST) -> set[str]:
    """Names the source binds itself (parameters, assignments, loop targets, functions and
    classes): a parameter called `code` or `signal` is not the module of that name."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            bound.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
    return bound


def inspect_code(source: str) -> list[CodeFinding]:
    """What a TorchScript source reaches outside tensor maths; raises SyntaxError (and
    ValueError, RecursionError, MemoryError) when it cannot be parsed."""
    tree = ast.parse(source, mode="exec")
    bound = _bound_names(tree)
    found: list[CodeFinding] = []
    for node in ast.walk(tree):
        found.extend(_inspect_node(node, bound))
    return found


def _inspect_node(node: ast.AST, bound: set[str]) -> Iterator[CodeFinding]:
    line = getattr(node, "lineno", 0)
    if isinstance(node, ast.Import | ast.ImportFrom):
        modules = [alias.name for alias in node.names]
        if isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        for module in modules:
            root = module.split(".")[0]
            if root not in ("__torch__", "torch", "typing", "math"):
                yield CodeFinding(
                    DANGEROUS_RULE,
                    Severity.CRITICAL if root in DANGEROUS_NAMES else Severity.MEDIUM,
                    "TorchScript code imports a Python module",
                    module,
                    line,
                )
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
        if node.id in DANGEROUS_NAMES and node.id not in bound:
            yield CodeFinding(
                DANGEROUS_RULE,
                Severity.CRITICAL,
                "TorchScript code reaches a Python builtin or system module",
                node.id,
                line,
            )
    elif isinstance(node, ast.Attribute):
        if node.attr in INTROSPECTION:
            yield CodeFinding(
                INTROSPECTION_RULE,
                Severity.HIGH,
                "TorchScript code reaches Python internals",
                f"{_dotted(node) or '...'}",
                line,
            )
        dotted = _dotted(node)
        if dotted:
            yield from _inspect_operator(dotted, line)
    elif isinstance(node, ast.Call) and _dotted(node.func) == "getattr" and "getattr" not in bound:
        name = node.args[1] if len(node.args) > 1 else None
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            yield CodeFinding(
                INTROSPECTION_RULE,
                Severity.HIGH,
                "TorchScript code looks up an attribute by a computed name",
                "getattr",
                line,
            )
        elif name.value in INTROSPECTION:
            yield CodeFinding(
                INTROSPECTION_RULE,
                Severity.HIGH,
                "TorchScript code reaches Python internals",
                f"getattr(..., {name.value!r})",
                line,
            )


def _inspect_operator(dotted: str, line: int) -> Iterator[CodeFinding]:
    """`torch.ops.<ns>.<op>`, `ops.<ns>.<op>`, `torch.classes.<ns>.<cls>`, `torch.<op>`: only
    the full chain is judged (its prefixes are Attribute nodes of their own)."""
    parts = dotted.split(".")
    if parts[:2] == ["__torch__", "torch"]:
        parts = parts[1:]
    if parts[0] == "torch" and len(parts) >= 2 and parts[1] in ("ops", "classes"):
        kind, rest = parts[1], parts[2:]
    elif parts[0] == "ops":
        kind, rest = "ops", parts[1:]
    elif parts[0] == "torch" and len(parts) == 2:
        kind, rest = "torch", parts[1:]
    else:
        return
    if kind == "torch":
        if rest[0] in FILE_OPS:
            yield CodeFinding(
                FILE_OP_RULE,
                Severity.CRITICAL,
                "TorchScript code reads or writes files",
                dotted,
                line,
            )
        return
    if len(rest) != 2:
        return  # `ops.ns` alone, or `ops.ns.op.overload`: the `ops.ns.op` node is judged
    namespace, op = rest
    qualified = f"{kind}.{namespace}.{op}"
    if op in FILE_OPS or namespace == "debugprims":
        yield CodeFinding(
            FILE_OP_RULE,
            Severity.CRITICAL,
            "TorchScript code reads or writes files",
            qualified,
            line,
        )
    elif namespace not in KNOWN_NAMESPACES:
        what = "operator" if kind == "ops" else "class"
        yield CodeFinding(
            CUSTOM_OP_RULE,
            Severity.MEDIUM,
            f"TorchScript code calls a custom {what} from outside PyTorch",
            qualified,
            line,
        )


class TorchScriptCode:
    """A `code/__torch__/….py` member of a TorchScript archive (TorchScript names every
    compiled module and class under `__torch__`)."""

    name: ClassVar[str] = "torchscript"

    def detect(self, blob: Blob) -> bool:
        if not blob.member:
            return False
        inner = blob.member.rsplit("!/", 1)[-1].replace("\\", "/")
        if not _CODE_PATH.search(inner):
            return False
        head = bytes(memoryview(blob.data)[:4096])
        if b"\x00" in head:
            return False
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            return exc.start > len(head) - 4  # a character cut at the window's edge
        return True

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        view = memoryview(blob.data)
        if len(view) > _MAX_SOURCE:
            ctx.error(blob, f"TorchScript source over {_MAX_SOURCE} bytes not inspected")
            return
        source = bytes(view).decode("utf-8", errors="replace")
        try:
            found = inspect_code(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            self._fallback(blob, ctx, source)
            ctx.error(blob, f"TorchScript source could not be parsed: {type(exc).__name__}")
            return
        reported: set[tuple[str, str]] = set()
        for item in found:
            if (item.rule_id, item.name) in reported:
                continue
            reported.add((item.rule_id, item.name))
            ctx.report(
                blob,
                item.rule_id,
                item.title,
                item.severity,
                detail=f"{item.name} on line {item.line}",
                snippet=_line(source, item.line),
                properties={"line": item.line, "name": item.name},
            )

    @staticmethod
    def _fallback(blob: Blob, ctx: ScanContext, source: str) -> None:
        """Unparseable source still gets a look for the worst names."""
        match = _TOKEN.search(source)
        if match is None:
            return
        line = source.count("\n", 0, match.start()) + 1
        ctx.report(
            blob,
            DANGEROUS_RULE,
            "TorchScript code reaches a Python builtin or system module",
            Severity.CRITICAL,
            detail=f"{match.group().strip()} on line {line}",
            snippet=_line(source, line),
            confidence=0.7,
            properties={"line": line},
        )


def _line(source: str, number: int) -> str:
    lines = source.splitlines()
    return lines[number - 1].strip() if 0 < number <= len(lines) else ""


SCANNER = TorchScriptCode()
