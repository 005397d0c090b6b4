"""Keras model configurations: the `config.json` of a `.keras` archive, `model.to_json()`
output and the JSON that `.h5` files and SavedModels carry; Lambda bytecode and references
to code outside Keras.

The JSON is parsed, never deserialised: no module is imported and no bytecode unmarshalled.
`scan_keras_json` and `scan_keras_document` serve the HDF5 and SavedModel scanners too.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from typing import Any, ClassVar

from stockade.core.findings import Severity
from stockade.model.scan.interface import Blob, ScanContext, path_escapes

__all__ = [
    "MAX_JSON_BYTES",
    "SCANNER",
    "KerasConfigScanner",
    "scan_keras_document",
    "scan_keras_json",
]

RULE_LAMBDA = "STK-KERAS-001"
RULE_DANGEROUS_REFERENCE = "STK-KERAS-002"
RULE_FOREIGN_MODULE = "STK-KERAS-003"
RULE_LOADER = "STK-KERAS-004"
RULE_TF_OP = "STK-KERAS-005"
RULE_FILE_PATH = "STK-KERAS-006"
RULE_LAYER_NAME = "STK-KERAS-007"
RULE_CUSTOM_OBJECT = "STK-KERAS-008"

MAX_JSON_BYTES = 64 << 20
MAX_CONTAINERS = 2_000_000
_MAX_CODE_BYTES = 1 << 20

# Packages maintained with Keras: a config naming them imports nothing foreign.
_KERAS_PACKAGES = frozenset(
    {"keras", "tf_keras", "keras_hub", "keras_nlp", "keras_cv", "keras_rs", "keras_tuner"}
)
_KERAS_PREFIXES = ("tensorflow.keras", "tensorflow.python.keras")

# Modules whose functions run code or processes: naming one of their callables in a config
# hands the loader a way to call it (CVE-2025-1550).
_CODE_MODULES = frozenset(
    {
        "os",
        "posix",
        "nt",
        "subprocess",
        "pty",
        "runpy",
        "code",
        "codeop",
        "commands",
        "popen2",
        "pickle",
        "_pickle",
        "cPickle",
        "marshal",
        "dill",
        "cloudpickle",
        "joblib",
        "importlib",
        "pkgutil",
        "ctypes",
        "multiprocessing",
        "pdb",
        "bdb",
        "timeit",
        "profile",
        "cProfile",
        "trace",
        "webbrowser",
        "sys",
        "asyncio",
        "platform",
        "signal",
        "_posixsubprocess",
        "operator",
        "functools",
    }
)
# Modules that read or write files or reach the network.
_IO_MODULES = frozenset(
    {
        "shutil",
        "socket",
        "ssl",
        "urllib",
        "urllib2",
        "urllib3",
        "http",
        "httplib",
        "requests",
        "httpx",
        "aiohttp",
        "ftplib",
        "smtplib",
        "imaplib",
        "poplib",
        "telnetlib",
        "xmlrpc",
        "io",
        "_io",
        "tempfile",
        "glob",
        "pathlib",
        "fileinput",
        "zipfile",
        "tarfile",
        "shelve",
        "dbm",
        "sqlite3",
        "logging",
        "venv",
        "ensurepip",
        "pip",
    }
)
# Python builtins that evaluate code, import modules, open files or reach into objects.
_DANGEROUS_BUILTINS = frozenset(
    {
        "exec",
        "eval",
        "compile",
        "__import__",
        "open",
        "breakpoint",
        "input",
        "help",
        "getattr",
        "setattr",
        "delattr",
        "globals",
        "locals",
        "vars",
        "exit",
        "quit",
        "memoryview",
        "__build_class__",
    }
)
# Keras's own functions and layers that fetch, load or unlock: harmless names inside Keras
# that nevertheless read files, reach the network or re-enable unsafe loading.
_KERAS_GADGETS: dict[str, tuple[Severity, str]] = {
    "enable_unsafe_deserialization": (
        Severity.CRITICAL,
        "turns off Keras safe mode, so later Lambda bytecode runs",
    ),
    "func_load": (Severity.CRITICAL, "unmarshals and runs Python bytecode"),
    "get_file": (Severity.HIGH, "downloads a URL and writes it to disk"),
    "load_model": (Severity.HIGH, "loads another model from a path"),
    "load_weights": (Severity.HIGH, "loads weights from a path"),
    "load_model_from_hdf5": (Severity.HIGH, "loads another model from a path"),
}
# Keras layers that load code or models when they are built from their config.
_LOADER_LAYERS: dict[str, tuple[Severity, str]] = {
    "TFSMLayer": (Severity.HIGH, "loads a TensorFlow SavedModel from a path"),
    "TorchModuleWrapper": (
        Severity.HIGH,
        "unpickles an embedded torch module with torch.load",
    ),
}
_KERAS_IO_MODULES = ("keras.src.utils.file_utils", "keras.utils.file_utils")

# TensorFlow Python API functions (the names `TFOpLambda` layers and tensorflow modules
# refer to) that run Python, load native code, or touch files.
_TF_API_CALLS: dict[str, tuple[Severity, str]] = {
    "py_function": (Severity.CRITICAL, "runs a Python function"),
    "numpy_function": (Severity.CRITICAL, "runs a Python function"),
    "py_func": (Severity.CRITICAL, "runs a Python function"),
    "eager_py_func": (Severity.CRITICAL, "runs a Python function"),
    "load_op_library": (Severity.CRITICAL, "loads a native library"),
    "load_library": (Severity.CRITICAL, "loads a native library"),
    "load_file_system_library": (Severity.CRITICAL, "loads a native library"),
    "load_pluggable_device_library": (Severity.CRITICAL, "loads a native library"),
    "read_file": (Severity.HIGH, "reads a file"),
    "write_file": (Severity.HIGH, "writes a file"),
    "matching_files": (Severity.HIGH, "lists files"),
    "GFile": (Severity.HIGH, "opens a file"),
    "FastGFile": (Severity.HIGH, "opens a file"),
    "TFRecordDataset": (Severity.HIGH, "reads files"),
    "TextLineDataset": (Severity.HIGH, "reads files"),
    "FixedLengthRecordDataset": (Severity.HIGH, "reads files"),
    "CsvDataset": (Severity.HIGH, "reads files"),
    "SqlDataset": (Severity.HIGH, "queries a database file"),
    "TFRecordWriter": (Severity.HIGH, "writes files"),
    "create_file_writer": (Severity.HIGH, "writes files"),
    "create_file_writer_v2": (Severity.HIGH, "writes files"),
    "enable_dump_debug_info": (Severity.HIGH, "writes debug dumps to disk"),
    "load": (Severity.HIGH, "loads a model from a path"),
    "load_model": (Severity.HIGH, "loads a model from a path"),
}
# tf.keras 2.11+ registers its own optimizers under the package "Custom".
_KERAS_OPTIMIZERS = frozenset(
    {
        "Adadelta",
        "Adafactor",
        "Adagrad",
        "Adam",
        "AdamW",
        "Adamax",
        "Ftrl",
        "Lion",
        "LossScaleOptimizer",
        "Nadam",
        "RMSprop",
        "SGD",
    }
)
_LOOKUP_LAYERS = frozenset({"StringLookup", "IntegerLookup", "TextVectorization"})

_OPEN_OBJECT = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\r\n]*\{")


def _json_key(name: str) -> re.Pattern[bytes]:
    """A pattern for the JSON string `name` followed by a colon, every character of it
    written plainly or as a \\u escape, so escaping a key does not hide it."""
    parts = []
    for char in name:
        code = f"{ord(char):04x}"
        escaped = "".join(f"[{c}{c.upper()}]" if c.isalpha() else c for c in code)
        parts.append(f"(?:{re.escape(char)}|\\\\u{escaped})")
    return re.compile(('"' + "".join(parts) + r'"[ \t\r\n]*:').encode())


_KERAS_KEYS = (_json_key("class_name"), _json_key("keras_version"))
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BYTECODE_NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_.]{1,63}")


class KerasConfigScanner:
    """Keras model JSON: a `.keras` archive's `config.json` and `metadata.json`, or any
    standalone model JSON with Keras's `class_name` / `config` / `module` shape."""

    name: ClassVar[str] = "keras_config"

    def __init__(self) -> None:
        # The text `detect` had to re-encode (UTF-16/32 JSON), handed on to `scan`.
        self._decoded: tuple[Blob, bytes] | None = None

    def detect(self, blob: Blob) -> bool:
        self._decoded = None
        data = blob.data
        if not 2 <= len(data) <= MAX_JSON_BYTES:
            return False
        text: bytes | memoryview = data
        encoding = json.detect_encoding(bytes(data[:4]))
        if encoding not in ("utf-8", "utf-8-sig"):
            try:
                text = bytes(data).decode(encoding).encode("utf-8")
            except (UnicodeDecodeError, LookupError):
                return False
        if not _OPEN_OBJECT.match(text):
            return False
        if not any(key.search(text) for key in _KERAS_KEYS):
            return False
        if isinstance(text, bytes) and text is not data:
            self._decoded = (blob, text)
        return True

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        decoded, self._decoded = self._decoded, None
        text = decoded[1] if decoded is not None and decoded[0] is blob else blob.data
        scan_keras_json(text, blob, ctx)


def scan_keras_json(
    text: bytes | memoryview | str, blob: Blob, ctx: ScanContext, *, origin: str = ""
) -> None:
    """Parse Keras JSON (bounded in size and nesting) and report what loading it would
    run; `origin` says where in `blob` the JSON came from (an HDF5 attribute, a node of
    a SavedModel), for the findings' detail."""
    where = f"{origin}: " if origin else ""
    if len(text) > MAX_JSON_BYTES:
        ctx.error(blob, f"{where}Keras JSON of {len(text)} bytes is over {MAX_JSON_BYTES}")
        return
    try:
        document = json.loads(text if isinstance(text, str) else bytes(text))
    except RecursionError:
        ctx.error(blob, f"{where}Keras JSON nested too deeply to inspect")
        return
    except (ValueError, UnicodeDecodeError) as exc:
        ctx.error(blob, f"{where}not valid JSON: {exc}")
        return
    scan_keras_document(document, blob, ctx, origin=origin)


def scan_keras_document(
    document: object, blob: Blob, ctx: ScanContext, *, origin: str = ""
) -> None:
    """Walk parsed Keras JSON (iteratively, bounded) and report every object whose loading
    runs bytecode, imports code from outside Keras, or touches files or the network."""
    _Walk(blob, ctx, origin).run(document)


# A JSON path as a linked list of (parent, key): built as the walk goes, rendered only
# for the few nodes that are reported.
_Path = tuple[Any, ...]


def _render(path: _Path | None) -> str:
    parts: list[str] = []
    while path is not None:
        parent, key = path
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
        path = parent
    return "$" + "".join(reversed(parts))


class _Walk:
    def __init__(self, blob: Blob, ctx: ScanContext, origin: str) -> None:
        self.blob = blob
        self.ctx = ctx
        self.origin = origin

    def run(self, document: object) -> None:
        stack: list[tuple[object, _Path | None]] = [(document, None)]
        visited = 0
        while stack:
            node, path = stack.pop()
            visited += 1
            if visited > MAX_CONTAINERS:
                self.ctx.error(
                    self.blob, f"{self._where(path)}more than {MAX_CONTAINERS} JSON containers"
                )
                return
            if isinstance(node, dict):
                self._inspect(node, path)
                children: Iterator[tuple[Any, Any]] = iter(node.items())
            else:
                children = enumerate(node)  # type: ignore[arg-type]
            pending = [
                (value, (path, key))
                for key, value in children
                if isinstance(value, dict | list) and value
            ]
            stack.extend(reversed(pending))

    # -- reporting ------------------------------------------------------------------
    def _where(self, path: _Path | None) -> str:
        place = _render(path)
        return f"{self.origin} {place}: " if self.origin else f"{place}: "

    def _report(
        self,
        path: _Path | None,
        rule: str,
        title: str,
        severity: Severity,
        detail: str,
        snippet: str,
    ) -> None:
        json_path = _render(path)
        properties: dict[str, object] = {"json_path": json_path}
        if self.origin:
            properties["origin"] = self.origin
        self.ctx.report(
            self.blob,
            rule,
            title,
            severity,
            detail=f"{self._where(path)}{detail}",
            snippet=snippet,
            properties=properties,
        )

    # -- one Keras object -----------------------------------------------------------
    def _inspect(self, node: dict[str, Any], path: _Path | None) -> None:
        class_name = node.get("class_name")
        if not isinstance(class_name, str):
            return
        inner = node.get("config")
        if class_name == "__lambda__":
            self._report_lambda(path, inner, "a serialised lambda")
            return
        if class_name == "Lambda" and isinstance(inner, dict) and self._legacy_lambda(path, inner):
            return
        module = node.get("module")
        if class_name == "__typespec__":
            self._check_reference(path, module, node.get("spec_name"), None)
        elif class_name == "function":
            self._check_reference(path, module, inner, node.get("registered_name"))
        elif isinstance(module, str) and module:
            self._check_reference(path, module, class_name, node.get("registered_name"))
        elif ">" in class_name:
            self._custom_object(path, class_name)
        if isinstance(inner, dict):
            self._inspect_layer(path, class_name, inner)

    def _legacy_lambda(self, path: _Path | None, inner: dict[str, Any]) -> bool:
        """tf.keras writes a Lambda's function as `[base64 marshal, defaults, closure]`
        with `function_type: "lambda"`; its output shape may be a lambda too."""
        for key, kind in (("function", "function_type"), ("output_shape", "output_shape_type")):
            if inner.get(kind) == "lambda":
                self._report_lambda(path, inner.get(key), f"the Lambda layer's {key}")
                return True
        return False

    def _report_lambda(self, path: _Path | None, payload: object, what: str) -> None:
        code = _lambda_code(payload)
        names = _bytecode_names(code) if code else []
        detail = f"{what} is Python bytecode that Keras unmarshals and runs when loading"
        if names:
            detail += f"; names in the bytecode: {', '.join(names)}"
        self._report(
            path,
            RULE_LAMBDA,
            "Lambda layer carries Python bytecode",
            Severity.CRITICAL,
            detail,
            (code or "")[:120],
        )

    def _check_reference(
        self, path: _Path | None, module: object, name: object, registered: object
    ) -> None:
        if not isinstance(module, str) or not module:
            return
        candidates = [n for n in (name, registered) if isinstance(n, str) and n] or [""]
        risks = [(_reference_risk(module, c), c) for c in dict.fromkeys(candidates)]
        found = [(risk, c) for risk, c in risks if risk is not None]
        if not found:
            return
        rule, severity, title, reason = max(found, key=lambda pair: pair[0][1])[0]
        # Keras looks up both the class name and the registered name in the module.
        targets = [
            f"{module}.{c}" if _IDENTIFIER.fullmatch(c) else module
            for risk, c in found
            if risk[1] == severity
        ]
        target = ", ".join(dict.fromkeys(targets))
        self._report(path, rule, title, severity, f"{target}: {reason}", target)

    def _custom_object(self, path: _Path | None, class_name: str) -> None:
        package, _, short = class_name.partition(">")
        if package in _KERAS_PACKAGES or (package == "Custom" and short in _KERAS_OPTIMIZERS):
            return
        self._report(
            path,
            RULE_CUSTOM_OBJECT,
            "Model needs a custom object from outside the file",
            Severity.LOW,
            f"{class_name} is a registered custom object: the code that loads the model "
            "must supply it",
            class_name,
        )

    def _inspect_layer(self, path: _Path | None, class_name: str, inner: dict[str, Any]) -> None:
        if class_name in ("TFOpLambda", "SlicingOpLambda"):
            function = inner.get("function")
            if isinstance(function, str):
                risk = _tf_api_risk(function)
                if risk is not None:
                    severity, reason = risk
                    self._report(
                        path,
                        RULE_TF_OP,
                        "TFOpLambda layer calls a TensorFlow function that "
                        + ("runs code" if severity is Severity.CRITICAL else "touches files"),
                        severity,
                        f"tf.{function.removeprefix('tf.')} {reason}",
                        function,
                    )
        elif class_name in _LOADER_LAYERS:
            severity, reason = _LOADER_LAYERS[class_name]
            filepath = inner.get("filepath")
            detail = f"{class_name} {reason}"
            if isinstance(filepath, str):
                detail += f" ({filepath})"
            self._report(
                path,
                RULE_LOADER,
                f"{class_name} layer loads code",
                severity,
                detail,
                filepath if isinstance(filepath, str) else class_name,
            )
            if class_name == "TorchModuleWrapper":
                self._embedded_module(path, inner.get("module"))
        elif class_name in _LOOKUP_LAYERS:
            vocabulary = inner.get("vocabulary")
            if isinstance(vocabulary, str) and vocabulary:
                self._vocabulary_file(path, class_name, vocabulary)
        name = inner.get("name")
        if isinstance(name, str) and not class_name.startswith("__") and path_escapes(name):
            self._report(
                path,
                RULE_LAYER_NAME,
                "Layer name is a path that leaves the model's directory",
                Severity.MEDIUM,
                f"{class_name} named {name!r}: Keras builds asset and weight paths from "
                "layer names",
                name,
            )

    def _vocabulary_file(self, path: _Path | None, class_name: str, vocabulary: str) -> None:
        remote = "://" in vocabulary
        escapes = remote or path_escapes(vocabulary)
        self._report(
            path,
            RULE_FILE_PATH,
            "Preprocessing layer reads its vocabulary from a "
            + ("remote or outside path" if escapes else "file"),
            Severity.HIGH if escapes else Severity.LOW,
            f"{class_name} vocabulary is read from {vocabulary!r} when the model loads",
            vocabulary,
        )

    def _embedded_module(self, path: _Path | None, encoded: object) -> None:
        """A TorchModuleWrapper stores `torch.save` output base64-encoded: scan it too."""
        if not isinstance(encoded, str) or not encoded:
            return
        try:
            data = base64.b64decode(encoded, validate=False)
        except (binascii.Error, ValueError):
            self.ctx.error(self.blob, f"{self._where(path)}TorchModuleWrapper module is not base64")
            return
        member = f"{_render(path)}.config.module"
        if self.origin:
            member = f"{self.origin}#{member}"
        self.ctx.scan_member(self.blob, member, data)


def _reference_risk(module: str, name: str) -> tuple[str, Severity, str, str] | None:
    """What loading `name` from `module` means: None when it stays inside Keras."""
    top = module.split(".", 1)[0]
    if module == "builtins":
        # Keras writes `builtins` for its own and for registered functions and resolves
        # them in Keras first; only Python's dangerous builtins matter.
        if name in _DANGEROUS_BUILTINS:
            return (
                RULE_DANGEROUS_REFERENCE,
                Severity.CRITICAL,
                "Keras config calls a dangerous Python builtin",
                "Keras falls back to Python's builtins for this name",
            )
        return None
    if top in _KERAS_PACKAGES or any(_within(module, prefix) for prefix in _KERAS_PREFIXES):
        if name in _KERAS_GADGETS:
            severity, reason = _KERAS_GADGETS[name]
            return (RULE_LOADER, severity, "Keras config calls a Keras loader function", reason)
        if any(_within(module, prefix) for prefix in _KERAS_IO_MODULES):
            return (
                RULE_LOADER,
                Severity.HIGH,
                "Keras config calls a Keras file utility",
                "reads, writes or deletes files",
            )
        return None
    if top == "tensorflow":
        risk = _tf_api_risk(name)
        if risk is None:
            return None
        return (RULE_TF_OP, risk[0], "Keras config calls a TensorFlow function", risk[1])
    callable_name = bool(_IDENTIFIER.fullmatch(name))
    if top in _CODE_MODULES:
        if callable_name:
            return (
                RULE_DANGEROUS_REFERENCE,
                Severity.CRITICAL,
                "Keras config calls a function that runs code or processes",
                f"Keras imports {module} and hands {name} to the model",
            )
        return (
            RULE_DANGEROUS_REFERENCE,
            Severity.HIGH,
            "Keras config imports a module that runs code or processes",
            f"Keras imports {module} while loading",
        )
    if top in _IO_MODULES:
        return (
            RULE_DANGEROUS_REFERENCE,
            Severity.HIGH,
            "Keras config calls a function that touches files or the network",
            f"Keras imports {module} and hands {name or 'it'} to the model",
        )
    return (
        RULE_FOREIGN_MODULE,
        Severity.MEDIUM,
        "Keras config imports code from outside Keras",
        f"Keras imports {module} while loading; that module's code runs",
    )


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _tf_api_risk(function: str) -> tuple[Severity, str] | None:
    """Risk of a TensorFlow Python API name such as `io.read_file` or `raw_ops.PyFunc`."""
    parts = [part for part in function.split(".") if part]
    if not parts:
        return None
    if parts[0] == "tf":
        parts = parts[1:]
    if len(parts) >= 2 and parts[-2] == "raw_ops":
        from stockade.model.scan.formats.tf_savedmodel import classify_op

        found = classify_op(parts[-1])
        return None if found is None else (found[0], found[1])
    if "gfile" in parts[:-1]:
        return (Severity.HIGH, "reads or writes files")
    return _TF_API_CALLS.get(parts[-1]) if parts else None


def _lambda_code(payload: object) -> str | None:
    """The base64 marshal text of a serialised lambda, in whichever shape Keras wrote it:
    `{"code": ...}`, `{"value": [code, defaults, closure]}`, `[code, ...]` or `code`."""
    for _ in range(4):
        if isinstance(payload, str):
            return payload
        if isinstance(payload, dict):
            payload = payload.get("code", payload.get("value"))
        elif isinstance(payload, list) and payload:
            payload = payload[0]
        else:
            return None
    return None


def _bytecode_names(code: str) -> list[str]:
    """Identifiers visible in marshalled bytecode (names, attribute names, strings): a
    hint of what the lambda does, read without unmarshalling it."""
    try:
        raw = base64.b64decode(code[: _MAX_CODE_BYTES * 4 // 3 + 4], validate=False)
    except (binascii.Error, ValueError):
        return []
    names: list[str] = []
    for match in _BYTECODE_NAME.finditer(raw[:_MAX_CODE_BYTES]):
        name = match.group().decode("ascii")
        if name not in names:
            names.append(name)
        if len(names) >= 12:
            break
    return names


SCANNER = KerasConfigScanner()
