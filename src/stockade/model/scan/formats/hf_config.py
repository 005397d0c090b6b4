"""Hugging Face model folders: the custom code `trust_remote_code` would run (`auto_map`,
`custom_pipelines`), the Python files shipped beside the weights, and chat templates.

Python is parsed with `ast` and Jinja2 with its parser; nothing is imported, executed
or rendered. Referenced files are read only from inside the folder the config sits in.
"""

from __future__ import annotations

import ast
import json
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

from stockade.core.findings import Severity
from stockade.model.scan.formats.chat_template import report_template
from stockade.model.scan.interface import REFERENCES, Blob, ScanContext

__all__ = [
    "CONFIG_KEYS",
    "SCANNER",
    "CodeConcern",
    "HuggingFaceScanner",
    "PythonAnalysis",
    "Reference",
    "analyse_python",
    "auto_map_references",
]

# Top-level keys only Hugging Face configs, tokenizer configs and processor configs have.
CONFIG_KEYS = frozenset(
    {
        "model_type",
        "architectures",
        "auto_map",
        "_name_or_path",
        "chat_template",
        "tokenizer_class",
        "transformers_version",
        "processor_class",
        "image_processor_type",
        "feature_extractor_type",
        "custom_pipelines",
    }
)
_KEY_PATTERN = re.compile(
    rb'"(?:' + b"|".join(re.escape(key.encode()) for key in sorted(CONFIG_KEYS)) + rb')"\s*:'
)
_MAX_CONFIG = 16 << 20
_MAX_CODE = 8 << 20
_MAX_TEMPLATE_FILE = 4 << 20
_MAX_MODULES = 64  # custom-code files followed through relative imports, per config
_LISTED = 10
_MAX_REFERENCES = 100  # entry points reported one by one
_MAX_LISTED = 1000  # directory entries looked at for weight files
# Files whose presence makes a directory a model folder (so its .py files are model code).
_MODEL_MARKERS = (
    "config.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "generation_config.json",
    "adapter_config.json",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".onnx", ".h5", ".keras", ".msgpack", ".pt")
_REFERENCE = re.compile(
    r"(?:(?P<repo>[^\s]+?)--)?(?P<module>[A-Za-z_][\w.]*)\.(?P<cls>[A-Za-z_]\w*)"
)

_RULES = {
    "STK-HF-001": "Loading this model runs custom code (trust_remote_code)",
    "STK-HF-002": "Custom code comes from another repository",
    "STK-HF-003": "Custom code the config points to does dangerous things",
    "STK-HF-004": "Custom code shipped with the model",
    "STK-HF-005": "Custom code does dangerous things",
    "STK-HF-006": "Custom code reference is malformed",
}
_REMEDIATION = (
    "Load the model without trust_remote_code, or review every referenced Python file "
    "(and pin the revision) before allowing it."
)


# -- what counts as dangerous in custom code ---------------------------------------------

_EXECUTES = frozenset(
    {
        "eval",
        "exec",
        "compile",
        "__import__",
        "builtins.eval",
        "builtins.exec",
        "builtins.compile",
        "builtins.__import__",
        "importlib.__import__",
        "os.system",
        "os.popen",
        "os.fork",
        "os.forkpty",
        "os.posix_spawn",
        "os.posix_spawnp",
        "pty.spawn",
        "platform.popen",
        "commands.getoutput",
        "commands.getstatusoutput",
        "marshal.loads",
        "marshal.load",
        "pickle.loads",
        "pickle.load",
        "_pickle.loads",
        "_pickle.load",
        "dill.loads",
        "dill.load",
        "cloudpickle.loads",
        "cloudpickle.load",
        "types.CodeType",
        "types.FunctionType",
        "runpy.run_path",
        "runpy.run_module",
        "code.interact",
        "code.InteractiveInterpreter",
        "code.InteractiveConsole",
        # Loading native code or poking memory; `ctypes.c_int32(...)` and friends are
        # plain values (quantisation kernels pass them) and do not count.
        "ctypes.CDLL",
        "ctypes.PyDLL",
        "ctypes.WinDLL",
        "ctypes.OleDLL",
        "ctypes.LibraryLoader",
        "ctypes.memmove",
        "ctypes.memset",
        "ctypes.string_at",
        "ctypes.wstring_at",
    }
)
_EXECUTES_PREFIX = (
    "subprocess.",
    "_posixsubprocess.",
    "os.exec",
    "os.spawn",
    "ctypes.cdll.",
    "ctypes.pydll.",
    "ctypes.windll.",
    "ctypes.oledll.",
    "ctypes.pythonapi.",
)
_REACHES_OUT = frozenset(
    {
        "importlib.import_module",
        "torch.hub.load",
        "shutil.rmtree",
        "urllib.urlopen",
        "webbrowser.open",
    }
)
_REACHES_OUT_PREFIX = (
    "socket.",
    "urllib.request.",
    "urllib2.",
    "http.client.",
    "requests.",
    "httpx.",
    "aiohttp.",
    "ftplib.",
    "smtplib.",
    "telnetlib.",
    "paramiko.",
    "xmlrpc.client.",
    "webbrowser.",
)
_BUILTIN_NAMES = frozenset({"eval", "exec", "compile", "__import__"})


def _danger(name: str) -> Severity | None:
    if name in _EXECUTES or name.startswith(_EXECUTES_PREFIX):
        return Severity.CRITICAL
    if name in _REACHES_OUT or name.startswith(_REACHES_OUT_PREFIX):
        return Severity.HIGH
    return None


@dataclass(frozen=True)
class CodeConcern:
    """A dangerous call (or import of a dangerous callable) in a Python file."""

    name: str  # the resolved dotted name: `os.system`, `requests.get`
    severity: Severity
    line: int
    column: int  # byte offset in the line, as `ast` counts it
    what: str  # "call", "import", "reference" or "remote code"


@dataclass(frozen=True)
class PythonAnalysis:
    concerns: tuple[CodeConcern, ...]
    relative_imports: tuple[str, ...]  # module paths imported with one leading dot


def analyse_python(source: bytes) -> PythonAnalysis:
    """Parse Python source (never run it) and list its dangerous calls and the modules it
    imports relative to its own folder. Raises SyntaxError/ValueError when it does not
    parse, RecursionError/MemoryError when it nests beyond the parser."""
    with warnings.catch_warnings():
        # The scanned file's own oddities (invalid escapes) are not the scanner's warnings.
        warnings.simplefilter("ignore")
        tree = ast.parse(source)
    visitor = _CodeVisitor()
    visitor.visit_all(tree)
    concerns = {(c.name, c.line, c.what): c for c in visitor.concerns}
    return PythonAnalysis(
        tuple(sorted(concerns.values(), key=lambda c: (c.line, c.column))),
        tuple(dict.fromkeys(visitor.relative)),
    )


class _CodeVisitor:
    """Resolves names through the file's imports and records dangerous uses."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}
        self.concerns: list[CodeConcern] = []
        self.relative: list[str] = []

    def visit_all(self, tree: ast.AST) -> None:
        # Imports first, wherever they are, so a call above a late import still resolves.
        nodes = list(ast.walk(tree))
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                self.imported(node)
        called = {id(node.func) for node in nodes if isinstance(node, ast.Call)}
        for node in nodes:
            if isinstance(node, ast.Call):
                self.call(node)
            elif (
                isinstance(node, ast.Name)
                and node.id in _BUILTIN_NAMES
                and isinstance(node.ctx, ast.Load)
                and node.id not in self.aliases
                and id(node) not in called
            ):
                self.add(node.id, node, "reference")

    def imported(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self.aliases[alias.asname] = alias.name
                else:
                    head = alias.name.split(".", 1)[0]
                    self.aliases[head] = head
            return
        if node.level:
            if node.level == 1:
                if node.module:
                    self.relative.append(node.module)
                else:
                    self.relative.extend(alias.name for alias in node.names)
            return
        module = node.module or ""
        for alias in node.names:
            if alias.name == "*":
                continue
            full = f"{module}.{alias.name}"
            self.aliases[alias.asname or alias.name] = full
            if _danger(full) is not None:
                self.add(full, node, "import")

    def resolve(self, node: ast.AST) -> str | None:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            root = self.aliases.get(node.id, node.id)
        elif isinstance(node, ast.Call) and _is_dunder_import(node):
            root = _constant_text(node.args[0]) if node.args else None
            if root is None:
                return None
        else:
            return None
        return ".".join([root, *reversed(parts)])

    def call(self, node: ast.Call) -> None:
        name = self.resolve(node.func)
        if name in ("getattr", "builtins.getattr") and len(node.args) >= 2:
            target = self.resolve(node.args[0])
            attribute = _constant_text(node.args[1])
            if target is not None and attribute is not None:
                self.add(f"{target}.{attribute}", node, "call")
        elif name is not None:
            self.add(name, node, "call")
        for keyword in node.keywords:
            if keyword.arg == "trust_remote_code" and _truthy(keyword.value):
                self.concerns.append(
                    CodeConcern(
                        "trust_remote_code=True",
                        Severity.HIGH,
                        node.lineno,
                        node.col_offset,
                        "remote code",
                    )
                )

    def add(self, name: str, node: ast.AST, what: str) -> None:
        severity = _danger(name)
        if severity is not None:
            line = getattr(node, "lineno", 1)
            column = getattr(node, "col_offset", 0)
            self.concerns.append(CodeConcern(name, severity, line, column, what))


def _is_dunder_import(node: ast.Call) -> bool:
    return isinstance(node.func, ast.Name) and node.func.id == "__import__"


def _constant_text(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _truthy(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


# -- auto_map ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """One custom-code entry point: where it is declared and the `module.Class` it names."""

    declared_by: str  # `auto_map.AutoModel`, `custom_pipelines.text-generation.impl`
    text: str
    repo: str | None
    module: str | None  # None when the text is not a valid reference
    cls: str | None

    @property
    def file(self) -> str | None:
        return None if self.module is None else self.module.replace(".", "/") + ".py"


def auto_map_references(config: dict[str, Any]) -> list[Reference]:
    """Every custom-code reference in a config's `auto_map` and `custom_pipelines`."""
    found: list[Reference] = []
    auto_map = config.get("auto_map")
    if isinstance(auto_map, dict):
        for auto_class, value in auto_map.items():
            values = value if isinstance(value, list | tuple) else [value]
            for item in values:
                if item is not None:
                    found.append(_reference(f"auto_map.{auto_class}", item))
    elif auto_map is not None:
        found.append(_reference("auto_map", auto_map))
    pipelines = config.get("custom_pipelines")
    if isinstance(pipelines, dict):
        for task, spec in pipelines.items():
            if isinstance(spec, dict) and "impl" in spec:
                found.append(_reference(f"custom_pipelines.{task}.impl", spec["impl"]))
    return found


def _reference(declared_by: str, value: object) -> Reference:
    text = value if isinstance(value, str) else json.dumps(value)[:200]
    match = _REFERENCE.fullmatch(text) if isinstance(value, str) else None
    if match is None:
        return Reference(declared_by, text, None, None, None)
    return Reference(declared_by, text, match["repo"], match["module"], match["cls"])


# -- the scanner -------------------------------------------------------------------------


class HuggingFaceScanner:
    """Configs with custom code or chat templates, `.py` files in model folders, and
    `.jinja` chat template files."""

    name: ClassVar[str] = "hf_config"

    def detect(self, blob: Blob) -> bool:
        name = blob.name.lower()
        if name.endswith(".jinja"):
            # transformers writes `chat_template.jinja` and `additional_chat_templates/*.jinja`.
            where = (blob.member or blob.path).replace("\\", "/")
            named = "chat_template" in name or "additional_chat_templates/" in where
            return named and len(blob.data) <= _MAX_TEMPLATE_FILE
        if name.endswith(".py"):
            return _in_model_folder(blob)
        return _looks_like_config(blob.data)

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        name = blob.name.lower()
        if name.endswith(".jinja"):
            self.scan_template_file(blob, ctx)
        elif name.endswith(".py"):
            self.scan_code_file(blob, ctx)
        else:
            self.scan_config(blob, ctx)

    # -- configs ---------------------------------------------------------------------------

    def scan_config(self, blob: Blob, ctx: ScanContext) -> None:
        raw = bytes(blob.data)
        try:
            config = json.loads(raw)
        except RecursionError:
            ctx.error(blob, "Hugging Face config nests too deeply to parse")
            return
        except ValueError as exc:
            ctx.error(blob, f"Hugging Face config is not JSON: {exc}")
            return
        if not isinstance(config, dict):
            ctx.error(blob, "Hugging Face config is not a JSON object")
            return
        references = auto_map_references(config)
        if references:
            self.report_references(blob, ctx, raw, references)
        if "chat_template" in config:
            self.templates(blob, ctx, raw, config["chat_template"])

    def report_references(
        self, blob: Blob, ctx: ScanContext, raw: bytes, references: list[Reference]
    ) -> None:
        offset = _find(raw, b'"auto_map"') or _find(raw, b'"custom_pipelines"')
        valid = [ref for ref in references if ref.module is not None]
        malformed = [ref for ref in references if ref.module is None or _escapes(ref)]
        listing = ", ".join(f"{ref.declared_by} -> {ref.text}" for ref in references[:_LISTED])
        found, missing, concerns = self.read_modules(blob, valid)
        detail = f"{len(references)} custom-code entry points: {listing}"
        if missing:
            absent = ", ".join(missing[:_LISTED])
            detail += f"; not in this folder (would be downloaded): {absent}"
        ctx.report(
            blob,
            "STK-HF-001",
            _RULES["STK-HF-001"],
            Severity.MEDIUM,
            offset=offset,
            detail=detail,
            snippet=listing,
            remediation=_REMEDIATION,
            category="model-custom-code",
            properties={
                "references": [ref.text for ref in references[:_MAX_REFERENCES]],
                "files": found,
            },
        )
        for ref in references[:_MAX_REFERENCES]:
            if ref.repo:
                ctx.report(
                    blob,
                    "STK-HF-002",
                    _RULES["STK-HF-002"],
                    Severity.HIGH,
                    offset=offset,
                    detail=f"{ref.declared_by} loads {ref.module}.{ref.cls} from the "
                    f"repository {ref.repo!r}, which this scan cannot see",
                    snippet=ref.text,
                    remediation=_REMEDIATION,
                    category="model-custom-code",
                )
        for ref in malformed[:_MAX_REFERENCES]:
            ctx.report(
                blob,
                "STK-HF-006",
                _RULES["STK-HF-006"],
                Severity.MEDIUM,
                offset=offset,
                detail=f"{ref.declared_by} is {ref.text!r}, not a `module.Class` name inside "
                "the model folder",
                snippet=ref.text[:200],
                remediation=_REMEDIATION,
                category="model-custom-code",
            )
        if concerns:
            worst = max(concern.severity for _, concern in concerns)
            listed = ", ".join(
                f"{path}:{concern.line} {concern.name}" for path, concern in concerns[:_LISTED]
            )
            more = f" and {len(concerns) - _LISTED} more" if len(concerns) > _LISTED else ""
            ctx.report(
                blob,
                "STK-HF-003",
                _RULES["STK-HF-003"],
                worst,
                offset=offset,
                detail=f"the custom code these entry points load calls {listed}{more}",
                snippet=listed,
                remediation=_REMEDIATION,
                category="model-custom-code",
            )

    def read_modules(
        self, blob: Blob, references: list[Reference]
    ) -> tuple[list[str], list[str], list[tuple[str, CodeConcern]]]:
        """Follow the referenced files (and their relative imports) inside the folder:
        (files analysed, files missing, dangerous uses found with their file)."""
        if blob.base is None:
            return [], [], []
        root = os.path.realpath(blob.base)
        queue = [ref.file for ref in references if ref.file and not ref.repo and not _escapes(ref)]
        seen: set[str] = set()
        found: list[str] = []
        missing: list[str] = []
        concerns: list[tuple[str, CodeConcern]] = []
        while queue and len(seen) < _MAX_MODULES:
            relative = queue.pop(0)
            if relative in seen:
                continue
            seen.add(relative)
            source = _read_inside(root, relative)
            if source is None:
                missing.append(relative)
                continue
            found.append(relative)
            try:
                analysis = analyse_python(source)
            except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
                unparsable = f"unparsable Python ({type(exc).__name__})"
                concerns.append((relative, CodeConcern(unparsable, Severity.MEDIUM, 1, 0, "parse")))
                continue
            concerns.extend((relative, concern) for concern in analysis.concerns)
            folder = os.path.dirname(relative)
            for module in analysis.relative_imports:
                queue.append(os.path.join(folder, module.replace(".", "/") + ".py"))
        return found, missing, concerns

    def templates(self, blob: Blob, ctx: ScanContext, raw: bytes, value: Any) -> None:
        offset = _find(raw, b'"chat_template"')
        if isinstance(value, str):
            report_template(blob, ctx, value, label="chat_template", offset=offset)
            return
        if isinstance(value, list) and all(
            isinstance(item, dict)
            and isinstance(item.get("template"), str)
            and isinstance(item.get("name", ""), str)
            for item in value
        ):
            for index, item in enumerate(value):
                label = f"chat_template[{item.get('name', index)}]"
                report_template(blob, ctx, item["template"], label=label, offset=offset)
            return
        if value is None:
            return
        ctx.error(
            blob,
            "chat_template is neither a template nor a list of named templates",
            offset=offset,
        )

    # -- files beside the config -----------------------------------------------------------

    def scan_code_file(self, blob: Blob, ctx: ScanContext) -> None:
        source = bytes(blob.data)
        try:
            analysis = analyse_python(source)
        except (RecursionError, MemoryError):
            ctx.error(blob, "Python file nests too deeply to parse")
            return
        except (SyntaxError, ValueError) as exc:
            ctx.error(blob, f"Python file does not parse: {exc}")
            return
        ctx.report(
            blob,
            "STK-HF-004",
            _RULES["STK-HF-004"],
            Severity.LOW,
            detail="a Python file in a model folder runs when the model is loaded with "
            "trust_remote_code, or when anything imports it",
            remediation=_REMEDIATION,
            references=REFERENCES,
            category="model-custom-code",
        )
        starts = _line_starts(source)
        for concern in analysis.concerns:
            offset = None
            if 0 < concern.line <= len(starts):
                offset = starts[concern.line - 1] + concern.column
            verb = {"import": "imports", "reference": "refers to"}.get(concern.what, "calls")
            ctx.report(
                blob,
                "STK-HF-005",
                _RULES["STK-HF-005"],
                concern.severity,
                offset=offset,
                detail=f"line {concern.line} {verb} {concern.name}",
                snippet=_line(source, starts, concern.line),
                remediation=_REMEDIATION,
                category="model-custom-code",
                properties={"line": concern.line, "name": concern.name},
            )

    def scan_template_file(self, blob: Blob, ctx: ScanContext) -> None:
        try:
            source = bytes(blob.data).decode("utf-8")
        except UnicodeDecodeError as exc:
            ctx.error(blob, f"chat template file is not UTF-8: {exc.reason}")
            return
        report_template(blob, ctx, source, label=blob.name)


def _looks_like_config(data: bytes | memoryview) -> bool:
    size = len(data)
    if size < 2 or size > _MAX_CONFIG:
        return False
    head = bytes(data[:64]).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"{"):
        return False
    raw = bytes(data)
    if _KEY_PATTERN.search(raw) is None:
        return False
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        return True  # it says it is a config; the scan reports that it does not parse
    return isinstance(parsed, dict) and not CONFIG_KEYS.isdisjoint(parsed)


def _in_model_folder(blob: Blob) -> bool:
    if blob.member is not None or blob.base is None or len(blob.data) > _MAX_CODE:
        return False
    if any(os.path.isfile(os.path.join(blob.base, marker)) for marker in _MODEL_MARKERS):
        return True
    try:
        with os.scandir(blob.base) as entries:
            for index, entry in enumerate(entries):
                if entry.name.endswith(_WEIGHT_SUFFIXES):
                    return True
                if index >= _MAX_LISTED:  # a source tree, not a model folder
                    return False
    except OSError:
        return False
    return False


def _escapes(ref: Reference) -> bool:
    """A module path that would leave the model folder (`..`, empty parts)."""
    return ref.module is not None and any(part in ("", "..") for part in ref.module.split("."))


def _read_inside(root: str, relative: str) -> bytes | None:
    """The file at `relative` under `root`, if it is a regular file that stays inside."""
    path = os.path.realpath(os.path.join(root, relative))
    if os.path.commonpath([root, path]) != root or not os.path.isfile(path):
        return None
    if os.path.islink(os.path.join(root, relative)):
        return None
    try:
        if os.path.getsize(path) > _MAX_CODE:
            return None
        with open(path, "rb") as handle:
            return handle.read(_MAX_CODE)
    except OSError:
        return None


def _find(raw: bytes, needle: bytes) -> int | None:
    found = raw.find(needle)
    return found if found >= 0 else None


def _line_starts(source: bytes) -> list[int]:
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def _line(source: bytes, starts: list[int], line: int) -> str:
    if not 0 < line < len(starts):
        return ""
    text = source[starts[line - 1] : starts[line]].decode("utf-8", "replace").strip()
    return text[:200]


SCANNER = HuggingFaceScanner()
