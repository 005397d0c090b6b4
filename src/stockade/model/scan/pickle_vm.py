"""A symbolic interpreter for pickle streams (protocols 0-5): it runs the opcode stream on a
stack machine of symbolic values and records which globals are imported and how they are used.

It never imports, calls or unpickles anything: callables are names, calls are records.
"""

from __future__ import annotations

import codecs
import copyreg
import gc
import mmap
import re
import struct
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

__all__ = [
    "NO_ROLES",
    "UNKNOWN_ROLES",
    "Break",
    "CallRoles",
    "GlobalUse",
    "Interpretation",
    "Issue",
    "NestedPickle",
    "Use",
    "interpret",
    "looks_like_pickle",
]

HIGHEST_PROTOCOL = 5
MAX_STACK = 2_000_000  # values on the stack, all marks together
MAX_MARKS = 200_000
MAX_MEMO = 20_000_000
MAX_KEPT_ITEMS = 64  # container elements remembered (the rest are counted, not kept)
MAX_NESTED = 100  # distinct embedded pickles handed back for scanning
MAX_GLOBALS = 10_000  # distinct globals one stream may import
MAX_ISSUES = 1_000  # distinct issues kept apart (further ones are counted together)
MAX_INLINE = 4096  # payloads longer than this stay in the stream as a `Chunk`
MAX_INLINE_DEPTH = 8  # joblib object arrays pickled inside a pickle
_CHECK_EVERY = 1 << 16  # opcodes between stack/memo size checks


class Use(IntEnum):
    """How a pickle uses a global, weakest first."""

    REFERENCE = 1  # imported and kept as a value
    CONSTRUCT = 2  # instantiated without running `__init__` (NEWOBJ, copyreg helpers)
    CALL = 3  # called with arguments (REDUCE, INST, OBJ, or by a callee that calls it)
    MODIFY = 4  # its items or attributes are set (SETITEM, APPEND, BUILD on the global)


@dataclass(frozen=True)
class CallRoles:
    """What a callable does with its positional arguments: which it calls, which it
    instantiates, which it unpickles, and whether it returns the global named by two of
    them (`resolves=(module_index, name_index)`). `calls_all` is for callables nothing is
    known about: any function handed to them may be called."""

    calls_all: bool = False
    calls: tuple[int, ...] = ()
    constructs: tuple[int, ...] = ()
    unpickles: tuple[int, ...] = ()
    resolves: tuple[int, int] | None = None


NO_ROLES = CallRoles()
UNKNOWN_ROLES = CallRoles(calls_all=True)

RolesLookup = Callable[[str, str], CallRoles]


@dataclass(frozen=True)
class GlobalUse:
    """One global a pickle imports, with the strongest use made of it.

    `kind` is `named` (module and name known), `computed` (STACK_GLOBAL operands or a
    resolver's arguments were not constant strings) or `extension` (an EXT code that the
    copyreg registry does not know). `written` is the name as written in the stream when
    Python 2 name mapping (protocols < 3) changed it.
    """

    module: str | None
    name: str | None
    kind: Literal["named", "computed", "extension"]
    offset: int
    opcode: str
    use: Use
    use_offset: int
    use_opcode: str
    invocations: int
    written: str | None = None
    extension: int | None = None

    @property
    def label(self) -> str:
        if self.kind == "named":
            return f"{self.module}.{self.name}"
        if self.kind == "extension":
            return f"<extension code {self.extension}>"
        return "<name computed at load time>"


@dataclass(frozen=True)
class Issue:
    """A construct worth reporting that is not a global: `code` is one of
    `computed-callable`, `persistent-id`, `computed-unpickle`, `joblib-file`,
    `joblib-unknown-size`, `extension-code`."""

    code: str
    offset: int
    subject: str
    count: int = 1


@dataclass(frozen=True, eq=False)
class NestedPickle:
    """Constant bytes passed to a callable that unpickles them, found at `offset` (the
    call); `data` is a view into the stream where the bytes lie in it, a copy otherwise."""

    offset: int
    callee: str
    data: bytes | memoryview


@dataclass(frozen=True)
class Break:
    """Where and why interpretation stopped before a STOP opcode."""

    reason: str
    offset: int
    truncated: bool = False


@dataclass(frozen=True)
class Interpretation:
    """What one pickle stream (from `start` to its STOP at `end`) imports and does."""

    start: int
    end: int
    protocol: int
    ops: int
    globals: tuple[GlobalUse, ...]
    issues: tuple[Issue, ...]
    nested: tuple[NestedPickle, ...]
    error: Break | None = None


# -- symbolic values ------------------------------------------------------------------


class _Stats:
    __slots__ = (
        "extension",
        "invocations",
        "kind",
        "module",
        "name",
        "offset",
        "opcode",
        "use",
        "use_offset",
        "use_opcode",
        "written",
    )

    def __init__(
        self,
        module: str | None,
        name: str | None,
        kind: Literal["named", "computed", "extension"],
        offset: int,
        opcode: str,
        written: str | None,
        extension: int | None = None,
    ) -> None:
        self.module = module
        self.name = name
        self.kind: Literal["named", "computed", "extension"] = kind
        self.offset = offset
        self.opcode = opcode
        self.written = written
        self.extension = extension
        self.use = Use.REFERENCE
        self.use_offset = offset
        self.use_opcode = opcode
        self.invocations = 0

    def record(self) -> GlobalUse:
        return GlobalUse(
            module=self.module,
            name=self.name,
            kind=self.kind,
            offset=self.offset,
            opcode=self.opcode,
            use=self.use,
            use_offset=self.use_offset,
            use_opcode=self.use_opcode,
            invocations=self.invocations,
            written=self.written,
            extension=self.extension,
        )


class _Global:
    """A module attribute the loader would import."""

    __slots__ = ("label", "module", "name", "stats")

    def __init__(self, module: str | None, name: str | None, label: str, stats: _Stats) -> None:
        self.module = module
        self.name = name
        self.label = label
        self.stats = stats


class _Result:
    """What a call or instantiation returns; `cls` is the class of the new object when the
    opcode makes one (NEWOBJ, copyreg helpers), `state` what BUILD gave it."""

    __slots__ = ("args", "callee", "cls", "offset", "state")

    def __init__(self, callee: Any, args: tuple[Any, ...], offset: int, cls: Any) -> None:
        self.callee = callee
        self.args = args
        self.offset = offset
        self.cls = cls
        self.state: Any = None


class _Opaque:
    """A value whose content is unknown: a persistent object, an out-of-band buffer, an
    array read by joblib."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what


class _Chunk:
    """A long payload left in the stream: bytes, bytearray or text `length` long at `start`."""

    __slots__ = ("kind", "length", "start")

    def __init__(self, kind: str, start: int, length: int) -> None:
        self.kind = kind
        self.start = start
        self.length = length


class _Items:
    """A list, dict or set: the first elements are kept, the rest only counted."""

    __slots__ = ("count", "items", "kind")

    def __init__(self, kind: str, items: list[Any] | None = None) -> None:
        self.kind = kind
        self.items: list[Any] = []
        self.count = 0
        if items:
            self.extend(items)

    def extend(self, values: list[Any]) -> None:
        room = MAX_KEPT_ITEMS - len(self.items)
        if room > 0:
            self.items.extend(values[:room])
        self.count += len(values)

    def get(self, key: Any) -> Any:
        """A dict's value for a constant key (dict items are kept as (key, value) pairs)."""
        for item in self.items:
            if isinstance(item, tuple) and len(item) == 2 and _same(item[0], key):
                return item[1]
        return None

    def has(self, key: Any) -> bool:
        return any(isinstance(i, tuple) and len(i) == 2 and _same(i[0], key) for i in self.items)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and isinstance(a, str | int | bytes) and a == b


_CONSTANTS = (str, bytes, int, float, bool, type(None), complex)


class _Stop(Exception):
    def __init__(self, brk: Break) -> None:
        super().__init__(brk.reason)
        self.brk = brk


class _Halt(Exception):
    """Stop interpreting without an error: what follows cannot be located."""


# -- the machine ----------------------------------------------------------------------

_COPYREG_NEW = frozenset({"copyreg.__newobj__", "copyreg.__newobj_ex__", "copyreg._reconstructor"})
# torch.save at protocol 0 writes each storage's persistent id as the text of its tuple:
# "('storage', <class 'torch.FloatStorage'>, '0', 'cpu', 4)".
_TORCH_TEXT_STORAGE = re.compile(
    r"\('storage', <class 'torch\.[A-Za-z0-9_.]*Storage'>, '[^']*', '[^']*', \d+(, .*)?\)\Z"
)

_JOBLIB_ARRAYS = frozenset(
    {
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
    }
)
_JOBLIB_FILES = frozenset(
    {
        "joblib.numpy_pickle_compat.NDArrayWrapper",
        "joblib.numpy_pickle_compat.ZNDArrayWrapper",
        "joblib.numpy_pickle.NDArrayWrapper",
        "joblib.numpy_pickle.ZNDArrayWrapper",
        "sklearn.externals.joblib.numpy_pickle.NDArrayWrapper",
        "sklearn.externals.joblib.numpy_pickle.ZNDArrayWrapper",
    }
)
_LATIN1 = frozenset(
    {"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1", "ascii", "utf-8", "utf8"}
)
_DTYPE_SIZES = {"b": 1, "?": 1}


def _valid_dotted(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


class _Machine:
    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        start: int,
        roles: RolesLookup | None,
        max_ops: int,
        depth: int = 0,
        parent: _Machine | None = None,
    ) -> None:
        self.data = data
        self.n = len(data)
        self.start = start
        self.end = start
        self.roles = roles
        self.max_ops = max_ops
        self.depth = depth
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.proto = 0
        self.ops = 0
        self.parent = parent
        if parent is not None:
            self.stats = parent.stats
            self.issues = parent.issues
            self.nested = parent.nested
            self.nested_seen = parent.nested_seen
        else:
            self.stats: dict[str, _Stats] = {}
            self.issues: dict[tuple[str, str], list[Any]] = {}
            self.nested: list[NestedPickle] = []
            self.nested_seen: set[tuple[Any, ...]] = set()
        self.extra_ops = 0
        self.halted = False
        self._roles_cache: dict[str, CallRoles] = {}
        self._find = self._finder(data)
        table: list[Any] = [None] * 256
        for code, (_name, method) in _OPCODES.items():
            table[code] = getattr(self, method)
        self.table = table

    @staticmethod
    def _finder(data: Any) -> Callable[[bytes, int], int] | None:
        """A fast `find` over the whole stream: the bytes themselves, or the buffer a
        memoryview spans in full (an mmap for files)."""
        if isinstance(data, bytes | bytearray):
            return data.find
        obj = getattr(data, "obj", None)
        if isinstance(obj, bytes | bytearray | mmap.mmap) and len(obj) == data.nbytes:
            return obj.find
        return None

    # -- driving ----------------------------------------------------------------------
    def run(self) -> Break | None:
        data = self.data
        n = self.n
        table = self.table
        pos = self.start
        at = pos
        count = 0
        budget = self.max_ops
        try:
            while True:
                if pos >= n:
                    raise _Stop(Break("the stream ends before its STOP opcode", pos, True))
                at = pos
                handler = table[data[pos]]
                if handler is None:
                    raise _Stop(Break(f"invalid opcode 0x{data[pos]:02x}", pos))
                pos = handler(pos + 1, at)
                count += 1
                if pos < 0:
                    self.end = -pos
                    break
                if not count & (_CHECK_EVERY - 1):
                    self._check_sizes(count + self.extra_ops, budget, at)
            if count + self.extra_ops > budget:
                raise _Stop(Break(f"more than {budget} opcodes", at))
        except _Halt:
            self.ops = count + self.extra_ops
            self.end = at
            self.halted = True
            return None
        except _Stop as stop:
            brk = stop.brk
        except IndexError:
            brk = Break(f"stack underflow or no MARK at {_OPCODES[data[at]][0]}", at)
        except RecursionError:
            brk = Break("values nested too deeply", at)
        except (ArithmeticError, LookupError, TypeError, ValueError, struct.error) as exc:
            # Never expected (the fuzz tests look for this reason): fail closed, keep findings.
            name = _OPCODES[data[at]][0] if data[at] in _OPCODES else "opcode"
            brk = Break(f"internal error interpreting {name}: {type(exc).__name__}", at)
        else:
            self.ops = count + self.extra_ops
            return None
        self.ops = count + self.extra_ops  # completed opcodes
        self.end = brk.offset
        return brk

    def _check_sizes(self, count: int, budget: int, at: int) -> None:
        if count > budget:
            raise _Stop(Break(f"more than {budget} opcodes", at))
        if len(self.metastack) > MAX_MARKS:
            raise _Stop(Break(f"more than {MAX_MARKS} nested marks", at))
        total = len(self.stack) + sum(len(frame) for frame in self.metastack)
        if total > MAX_STACK:
            raise _Stop(Break(f"more than {MAX_STACK} values on the stack", at))
        if len(self.memo) > MAX_MEMO:
            raise _Stop(Break(f"more than {MAX_MEMO} memo entries", at))

    # -- reading ----------------------------------------------------------------------
    def _need(self, p: int, size: int) -> None:
        if p + size > self.n:
            raise _Stop(Break("the stream ends inside an opcode argument", self.n, True))

    def _u8(self, p: int) -> int:
        self._need(p, 1)
        return self.data[p]

    def _unpack(self, fmt: struct.Struct, p: int) -> int:
        self._need(p, fmt.size)
        return fmt.unpack_from(self.data, p)[0]

    def _newline(self, p: int) -> int:
        if self._find is not None:
            end = self._find(b"\n", p)
        else:
            end = -1
            step = 256
            q = p
            while q < self.n:
                i = bytes(self.data[q : q + step]).find(b"\n")
                if i >= 0:
                    end = q + i
                    break
                q += step
                step = min(step * 4, 1 << 24)
        if end < 0:
            raise _Stop(Break("the stream ends inside a text argument", self.n, True))
        return end

    def _line(self, p: int) -> tuple[bytes, int]:
        end = self._newline(p)
        return bytes(self.data[p:end]), end + 1

    def _payload(self, kind: str, p: int, size: int, at: int) -> Any:
        if size < 0:
            raise _Stop(Break("negative length", at))
        self._need(p, size)
        if size > MAX_INLINE:
            return _Chunk(kind, p, size)
        raw = self.data[p : p + size]
        if kind == "str":
            try:
                return str(raw, "utf-8", "surrogatepass")
            except UnicodeDecodeError:
                raise _Stop(Break("text that is not UTF-8", at)) from None
        if kind == "bytearray":
            return bytearray(raw)
        return bytes(raw)

    def _string(self, raw: bytes) -> str | bytes:
        """Python 2 `str` data: loaded as ASCII text by default, bytes otherwise."""
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            return raw

    # -- stack ------------------------------------------------------------------------
    def _pop_mark(self) -> list[Any]:
        items = self.stack
        self.stack = self.metastack.pop()  # IndexError: no MARK (handled as underflow)
        return items

    # -- globals and uses ---------------------------------------------------------------
    def _global(self, module: str, name: str, at: int, opcode: str) -> _Global:
        if not (_valid_dotted(module) and _valid_dotted(name)):
            raise _Stop(Break(f"invalid global name {module!r} {name!r}", at))
        written = None
        if self.proto < 3:
            mapped = NAME_MAPPING.get((module, name))
            if mapped is not None:
                written = f"{module}.{name}"
                module, name = mapped
            elif module in IMPORT_MAPPING:
                written = f"{module}.{name}"
                module = IMPORT_MAPPING[module]
        label = f"{module}.{name}"
        stats = self.stats.get(label)
        if stats is None:
            self._room(at)
            stats = self.stats[label] = _Stats(module, name, "named", at, opcode, written)
        elif written and not stats.written:
            stats.written = written
        return _Global(module, name, label, stats)

    def _computed(self, at: int, opcode: str) -> _Global:
        label = f"<computed@{at}>"
        stats = self.stats.get(label)
        if stats is None:
            self._room(at)
            stats = self.stats[label] = _Stats(None, None, "computed", at, opcode, None)
        return _Global(None, None, label, stats)

    def _room(self, at: int) -> None:
        if len(self.stats) >= MAX_GLOBALS:
            raise _Stop(Break(f"more than {MAX_GLOBALS} distinct globals", at))

    def _use(self, value: Any, use: Use, at: int, opcode: str) -> None:
        if isinstance(value, _Global):
            stats = value.stats
            if use >= Use.CONSTRUCT:
                stats.invocations += 1
            if use > stats.use:
                stats.use = use
                stats.use_offset = at
                stats.use_opcode = opcode
        elif isinstance(value, _Result | _Opaque) and use >= Use.CONSTRUCT:
            self._issue("computed-callable", at, opcode)

    def _issue(self, code: str, at: int, subject: str) -> None:
        key = (code, subject)
        if key not in self.issues and len(self.issues) >= MAX_ISSUES:
            key = (code, "(further occurrences)")
        seen = self.issues.get(key)
        if seen is None:
            self.issues[key] = [at, 1]
        else:
            seen[1] += 1

    def _roles(self, callee: _Global) -> CallRoles:
        if callee.module is None or callee.name is None:
            return UNKNOWN_ROLES
        if self.roles is None:
            return NO_ROLES
        found = self._roles_cache.get(callee.label)
        if found is None:
            found = self._roles_cache[callee.label] = self.roles(callee.module, callee.name)
        return found

    def _call(self, callee: Any, args: Any, at: int, opcode: str, use: Use) -> Any:
        """Record a call of `callee` with `args` and return its symbolic result."""
        argv = _as_args(args)
        self._use(callee, use, at, opcode)
        if not isinstance(callee, _Global):
            self._hand_over(argv, at, opcode)
            return _Result(callee, argv, at, None)
        label = callee.label
        cls = callee
        if opcode.startswith("NEWOBJ"):
            return _Result(callee, argv, at, callee)
        if label in _COPYREG_NEW:
            cls = argv[0] if argv else None
            # `cls.__new__(cls, *args)` with arguments runs whatever `__new__` does with them.
            extra = argv[1:] if label == "copyreg.__newobj__" else argv[1:2] + argv[2:3]
            given = any(not _empty(value) for value in extra)
            if label == "copyreg._reconstructor":
                given = False
            self._use(cls, Use.CALL if given else Use.CONSTRUCT, at, opcode)
            if label == "copyreg._reconstructor" and len(argv) > 1:
                base = argv[1]
                if not (isinstance(base, _Global) and base.label == "builtins.object"):
                    self._use(base, Use.CALL, at, opcode)
            return _Result(callee, argv, at, cls)
        if label in ("_codecs.encode", "codecs.encode"):
            encoded = self._encode(argv)
            if encoded is not None:
                return encoded
        roles = self._roles(callee)
        if roles.calls_all:
            self._hand_over(argv, at, opcode)
        elif roles is not NO_ROLES:
            for index in roles.calls:
                if index < len(argv):
                    self._use(argv[index], Use.CALL, at, opcode)
            for index in roles.constructs:
                if index < len(argv):
                    self._use(argv[index], Use.CONSTRUCT, at, opcode)
            for index in roles.unpickles:
                if index < len(argv):
                    self._unpickles(argv[index], at, label)
            if roles.resolves is not None:
                return self._resolve(argv, roles.resolves, at, label)
        return _Result(callee, argv, at, cls)

    def _hand_over(self, argv: tuple[Any, ...], at: int, opcode: str) -> None:
        """Globals handed to a callable nothing is known about may be called by it."""
        for value in argv:
            if isinstance(value, _Global):
                self._use(value, Use.CALL, at, opcode)

    def _encode(self, argv: tuple[Any, ...]) -> bytes | None:
        """`_codecs.encode(text, 'latin1')` is how protocols < 3 write bytes: evaluate it."""
        if len(argv) not in (1, 2):
            return None
        text = argv[0]
        codec = argv[1] if len(argv) == 2 else "utf-8"
        if not isinstance(codec, str) or codec.lower() not in _LATIN1:
            return None
        if isinstance(text, _Chunk) and text.kind in ("str", "unicode-line"):
            text = self._materialise(text)
        if not isinstance(text, str):
            return None
        try:
            return text.encode(codec)
        except (UnicodeError, LookupError):
            return None

    def _materialise(self, chunk: _Chunk) -> Any:
        raw = bytes(self.data[chunk.start : chunk.start + chunk.length])
        try:
            if chunk.kind == "str":
                return str(raw, "utf-8", "surrogatepass")
            if chunk.kind == "unicode-line":
                return str(raw, "raw-unicode-escape")
        except UnicodeDecodeError:
            return None
        return raw

    def _unpickles(self, value: Any, at: int, callee: str) -> None:
        if isinstance(value, _Chunk) and value.kind in ("bytes", "bytearray"):
            key: tuple[Any, ...] = ("at", value.start, value.length)
            payload: bytes | memoryview = memoryview(self.data)[
                value.start : value.start + value.length
            ]
        elif isinstance(value, bytes | bytearray):
            payload = bytes(value)
            key = ("copy", len(payload), hash(payload))
        else:
            self._issue("computed-unpickle", at, callee)
            return
        # The same bytes reused through the memo are scanned once.
        if key not in self.nested_seen and len(self.nested) < MAX_NESTED:
            self.nested_seen.add(key)
            self.nested.append(NestedPickle(at, callee, payload))

    def _resolve(self, argv: tuple[Any, ...], where: tuple[int, int], at: int, callee: str) -> Any:
        first, second = where
        if max(first, second) >= len(argv):
            return _Result(None, argv, at, None)
        owner, attr = argv[first], argv[second]
        if isinstance(owner, _Global) and owner.module is not None and isinstance(attr, str):
            module, name = owner.module, f"{owner.name}.{attr}"
        elif isinstance(owner, str) and isinstance(attr, str):
            module, name = owner, attr
        else:
            return self._computed(at, f"REDUCE {callee}")
        if not (_valid_dotted(module) and _valid_dotted(name)):
            return self._computed(at, f"REDUCE {callee}")
        label = f"{module}.{name}"
        stats = self.stats.get(label)
        if stats is None:
            self._room(at)
            stats = self.stats[label] = _Stats(module, name, "named", at, f"REDUCE {callee}", None)
        return _Global(module, name, label, stats)

    def _modify(self, target: Any, at: int, opcode: str) -> None:
        if isinstance(target, _Global):
            self._use(target, Use.MODIFY, at, opcode)

    # -- opcodes ----------------------------------------------------------------------
    def op_mark(self, p: int, at: int) -> int:
        self.metastack.append(self.stack)
        self.stack = []
        return p

    def op_stop(self, p: int, at: int) -> int:
        self.stack.pop()
        return -p

    def op_pop(self, p: int, at: int) -> int:
        if self.stack:
            self.stack.pop()
        else:
            self._pop_mark()
        return p

    def op_pop_mark(self, p: int, at: int) -> int:
        self._pop_mark()
        return p

    def op_dup(self, p: int, at: int) -> int:
        self.stack.append(self.stack[-1])
        return p

    def op_float(self, p: int, at: int) -> int:
        line, p = self._line(p)
        try:
            self.stack.append(float(line))
        except ValueError:
            raise _Stop(Break("FLOAT argument is not a number", at)) from None
        return p

    def op_int(self, p: int, at: int) -> int:
        line, p = self._line(p)
        if line == b"00":
            self.stack.append(False)
        elif line == b"01":
            self.stack.append(True)
        else:
            self.stack.append(_parse_int(line, at))
        return p

    def op_long(self, p: int, at: int) -> int:
        line, p = self._line(p)
        if line.endswith(b"L"):
            line = line[:-1]
        self.stack.append(_parse_int(line, at))
        return p

    def op_binint(self, p: int, at: int) -> int:
        self.stack.append(self._unpack(_I4, p))
        return p + 4

    def op_binint1(self, p: int, at: int) -> int:
        if p >= self.n:
            self._need(p, 1)
        self.stack.append(self.data[p])
        return p + 1

    def op_binint2(self, p: int, at: int) -> int:
        self.stack.append(self._unpack(_U2, p))
        return p + 2

    def op_long1(self, p: int, at: int) -> int:
        size = self._u8(p)
        self._need(p + 1, size)
        self.stack.append(int.from_bytes(self.data[p + 1 : p + 1 + size], "little", signed=True))
        return p + 1 + size

    def op_long4(self, p: int, at: int) -> int:
        size = self._unpack(_I4, p)
        if size < 0:
            raise _Stop(Break("LONG4 byte count < 0", at))
        self._need(p + 4, size)
        if size > MAX_INLINE:
            self.stack.append(_Opaque("long integer"))
        else:
            raw = self.data[p + 4 : p + 4 + size]
            self.stack.append(int.from_bytes(raw, "little", signed=True))
        return p + 4 + size

    def op_binfloat(self, p: int, at: int) -> int:
        self.stack.append(self._unpack(_F8, p))
        return p + 8

    def op_none(self, p: int, at: int) -> int:
        self.stack.append(None)
        return p

    def op_true(self, p: int, at: int) -> int:
        self.stack.append(True)
        return p

    def op_false(self, p: int, at: int) -> int:
        self.stack.append(False)
        return p

    def op_string(self, p: int, at: int) -> int:
        end = self._newline(p)
        size = end - p
        if size < 2:
            raise _Stop(Break("the STRING opcode argument must be quoted", at))
        quote = self.data[p]
        if quote not in (0x22, 0x27) or self.data[end - 1] != quote:
            raise _Stop(Break("the STRING opcode argument must be quoted", at))
        if size > MAX_INLINE:
            self.stack.append(_Chunk("string-line", p + 1, size - 2))
        else:
            try:
                raw = codecs.escape_decode(bytes(self.data[p + 1 : end - 1]))[0]
            except ValueError:
                raise _Stop(Break("invalid escape in STRING", at)) from None
            self.stack.append(self._string(raw))
        return end + 1

    def op_binstring(self, p: int, at: int) -> int:
        size = self._unpack(_I4, p)
        if size < 0:
            raise _Stop(Break("BINSTRING pickle has negative byte count", at))
        value = self._payload("bytes", p + 4, size, at)
        self.stack.append(self._string(value) if isinstance(value, bytes) else value)
        return p + 4 + size

    def op_short_binstring(self, p: int, at: int) -> int:
        size = self._u8(p)
        value = self._payload("bytes", p + 1, size, at)
        self.stack.append(self._string(value))
        return p + 1 + size

    def op_unicode(self, p: int, at: int) -> int:
        end = self._newline(p)
        if end - p > MAX_INLINE:
            self.stack.append(_Chunk("unicode-line", p, end - p))
        else:
            try:
                self.stack.append(str(bytes(self.data[p:end]), "raw-unicode-escape"))
            except UnicodeDecodeError:
                raise _Stop(Break("invalid escape in UNICODE", at)) from None
        return end + 1

    def op_binunicode(self, p: int, at: int) -> int:
        size = self._unpack(_U4, p)
        self.stack.append(self._payload("str", p + 4, size, at))
        return p + 4 + size

    def op_short_binunicode(self, p: int, at: int) -> int:
        end = p + 1 + (self.data[p] if p < self.n else 0)
        if end > self.n:
            self._need(p, end - p)
        try:
            self.stack.append(str(self.data[p + 1 : end], "utf-8", "surrogatepass"))
        except UnicodeDecodeError:
            raise _Stop(Break("text that is not UTF-8", at)) from None
        return end

    def op_binunicode8(self, p: int, at: int) -> int:
        size = self._unpack(_U8, p)
        self.stack.append(self._payload("str", p + 8, size, at))
        return p + 8 + size

    def op_binbytes(self, p: int, at: int) -> int:
        size = self._unpack(_U4, p)
        self.stack.append(self._payload("bytes", p + 4, size, at))
        return p + 4 + size

    def op_short_binbytes(self, p: int, at: int) -> int:
        size = self._u8(p)
        self.stack.append(self._payload("bytes", p + 1, size, at))
        return p + 1 + size

    def op_binbytes8(self, p: int, at: int) -> int:
        size = self._unpack(_U8, p)
        self.stack.append(self._payload("bytes", p + 8, size, at))
        return p + 8 + size

    def op_bytearray8(self, p: int, at: int) -> int:
        size = self._unpack(_U8, p)
        self.stack.append(self._payload("bytearray", p + 8, size, at))
        return p + 8 + size

    def op_next_buffer(self, p: int, at: int) -> int:
        self.stack.append(_Opaque("out-of-band buffer"))
        return p

    def op_readonly_buffer(self, p: int, at: int) -> int:
        if not self.stack:
            raise IndexError("READONLY_BUFFER on an empty stack")
        return p

    def op_empty_tuple(self, p: int, at: int) -> int:
        self.stack.append(())
        return p

    def op_tuple(self, p: int, at: int) -> int:
        items = self._pop_mark()
        self.stack.append(tuple(items))
        return p

    def op_tuple1(self, p: int, at: int) -> int:
        self.stack[-1] = (self.stack[-1],)
        return p

    def op_tuple2(self, p: int, at: int) -> int:
        stack = self.stack
        second = stack.pop()
        stack[-1] = (stack[-1], second)
        return p

    def op_tuple3(self, p: int, at: int) -> int:
        stack = self.stack
        third = stack.pop()
        second = stack.pop()
        stack[-1] = (stack[-1], second, third)
        return p

    def op_empty_list(self, p: int, at: int) -> int:
        self.stack.append(_Items("list"))
        return p

    def op_list(self, p: int, at: int) -> int:
        items = self._pop_mark()
        self.stack.append(_Items("list", items))
        return p

    def op_empty_dict(self, p: int, at: int) -> int:
        self.stack.append(_Items("dict"))
        return p

    def op_dict(self, p: int, at: int) -> int:
        items = self._pop_mark()
        if len(items) % 2:
            raise _Stop(Break("DICT needs key/value pairs", at))
        self.stack.append(_Items("dict", list(zip(items[::2], items[1::2], strict=True))))
        return p

    def op_empty_set(self, p: int, at: int) -> int:
        self.stack.append(_Items("set"))
        return p

    def op_frozenset(self, p: int, at: int) -> int:
        items = self._pop_mark()
        self.stack.append(_Items("frozenset", items))
        return p

    def op_append(self, p: int, at: int) -> int:
        value = self.stack.pop()
        target = self.stack[-1]
        if isinstance(target, _Items):
            target.extend([value])
        else:
            self._modify(target, at, "APPEND")
        return p

    def op_appends(self, p: int, at: int) -> int:
        items = self._pop_mark()
        target = self.stack[-1]
        if isinstance(target, _Items):
            target.extend(items)
        else:
            self._modify(target, at, "APPENDS")
        return p

    def op_additems(self, p: int, at: int) -> int:
        items = self._pop_mark()
        target = self.stack[-1]
        if isinstance(target, _Items):
            target.extend(items)
        else:
            self._modify(target, at, "ADDITEMS")
        return p

    def op_setitem(self, p: int, at: int) -> int:
        stack = self.stack
        value = stack.pop()
        key = stack.pop()
        target = stack[-1]
        if isinstance(target, _Items):
            target.extend([(key, value)])
        else:
            self._modify(target, at, "SETITEM")
        return p

    def op_setitems(self, p: int, at: int) -> int:
        items = self._pop_mark()
        if len(items) % 2:
            raise _Stop(Break("SETITEMS needs key/value pairs", at))
        target = self.stack[-1]
        if isinstance(target, _Items):
            room = MAX_KEPT_ITEMS - len(target.items)
            if room > 0:
                kept = items[: 2 * room]
                target.items.extend(zip(kept[::2], kept[1::2], strict=True))
            target.count += len(items) // 2
        else:
            self._modify(target, at, "SETITEMS")
        return p

    # memo
    def op_put(self, p: int, at: int) -> int:
        line, p = self._line(p)
        key = _parse_int(line, at)
        if key < 0:
            raise _Stop(Break("negative PUT argument", at))
        self.memo[key] = self.stack[-1]
        return p

    def op_binput(self, p: int, at: int) -> int:
        if p >= self.n:
            self._need(p, 1)
        self.memo[self.data[p]] = self.stack[-1]
        return p + 1

    def op_long_binput(self, p: int, at: int) -> int:
        self.memo[self._unpack(_U4, p)] = self.stack[-1]
        return p + 4

    def op_memoize(self, p: int, at: int) -> int:
        self.memo[len(self.memo)] = self.stack[-1]
        return p

    def _get(self, key: int, at: int) -> None:
        try:
            self.stack.append(self.memo[key])
        except KeyError:
            raise _Stop(Break(f"memo value not found at index {key}", at)) from None

    def op_get(self, p: int, at: int) -> int:
        line, p = self._line(p)
        self._get(_parse_int(line, at), at)
        return p

    def op_binget(self, p: int, at: int) -> int:
        if p >= self.n:
            self._need(p, 1)
        try:
            self.stack.append(self.memo[self.data[p]])
        except KeyError:
            raise _Stop(Break(f"memo value not found at index {self.data[p]}", at)) from None
        return p + 1

    def op_long_binget(self, p: int, at: int) -> int:
        self._get(self._unpack(_U4, p), at)
        return p + 4

    # protocol and frames
    def op_proto(self, p: int, at: int) -> int:
        proto = self._u8(p)
        if proto > HIGHEST_PROTOCOL:
            raise _Stop(Break(f"unsupported pickle protocol: {proto}", at))
        self.proto = proto
        return p + 1

    def op_frame(self, p: int, at: int) -> int:
        self._need(p, 8)  # frames are transparent: their bytes are read in order
        return p + 8

    # globals
    def op_global(self, p: int, at: int) -> int:
        module, p = self._line(p)
        name, p = self._line(p)
        self.stack.append(self._global(_utf8(module, at), _utf8(name, at), at, "GLOBAL"))
        return p

    def op_stack_global(self, p: int, at: int) -> int:
        name = self.stack.pop()
        module = self.stack.pop()
        if isinstance(module, str) and isinstance(name, str):
            self.stack.append(self._global(module, name, at, "STACK_GLOBAL"))
        elif isinstance(module, _Result | _Opaque) or isinstance(name, _Result | _Opaque):
            # Strings made by calls at load time: which global is imported is unknowable.
            self.stack.append(self._computed(at, "STACK_GLOBAL"))
        else:
            raise _Stop(Break("STACK_GLOBAL requires str operands", at))
        return p

    def _ext(self, code: int, at: int, opcode: str) -> None:
        if code <= 0:
            raise _Stop(Break("EXT specifies code <= 0", at))
        key = copyreg._inverted_registry.get(code)  # type: ignore[attr-defined]
        if key is not None:
            self.stack.append(self._global(key[0], key[1], at, opcode))
            return
        label = f"<extension {code}>"
        stats = self.stats.get(label)
        if stats is None:
            self._room(at)
            stats = self.stats[label] = _Stats(None, None, "extension", at, opcode, None, code)
        self.stack.append(_Global(None, None, label, stats))

    def op_ext1(self, p: int, at: int) -> int:
        self._ext(self._u8(p), at, "EXT1")
        return p + 1

    def op_ext2(self, p: int, at: int) -> int:
        self._ext(self._unpack(_U2, p), at, "EXT2")
        return p + 2

    def op_ext4(self, p: int, at: int) -> int:
        self._ext(self._unpack(_I4, p), at, "EXT4")
        return p + 4

    # calls and objects
    def op_reduce(self, p: int, at: int) -> int:
        stack = self.stack
        args = stack.pop()
        stack[-1] = self._call(stack[-1], args, at, "REDUCE", Use.CALL)
        return p

    def op_newobj(self, p: int, at: int) -> int:
        stack = self.stack
        args = stack.pop()
        # `cls.__new__(cls)`; with arguments, `__new__` may act on them (numpy.memmap opens
        # a file), so that is a call.
        use = Use.CONSTRUCT if _empty(args) else Use.CALL
        stack[-1] = self._call(stack[-1], args, at, "NEWOBJ", use)
        return p

    def op_newobj_ex(self, p: int, at: int) -> int:
        stack = self.stack
        kwargs = stack.pop()
        args = stack.pop()
        use = Use.CONSTRUCT if _empty(args) and _empty(kwargs) else Use.CALL
        stack[-1] = self._call(stack[-1], args, at, "NEWOBJ_EX", use)
        return p

    def op_obj(self, p: int, at: int) -> int:
        items = self._pop_mark()
        if not items:
            raise _Stop(Break("OBJ needs a class", at))
        self.stack.append(self._call(items[0], tuple(items[1:]), at, "OBJ", Use.CALL))
        return p

    def op_inst(self, p: int, at: int) -> int:
        module, p = self._line(p)
        name, p = self._line(p)
        klass = self._global(_utf8(module, at), _utf8(name, at), at, "INST")
        items = self._pop_mark()
        self.stack.append(self._call(klass, tuple(items), at, "INST", Use.CALL))
        return p

    def op_build(self, p: int, at: int) -> int:
        state = self.stack.pop()
        target = self.stack[-1]
        if isinstance(target, _Global):
            self._modify(target, at, "BUILD")
        elif isinstance(target, _Result):
            target.state = state
            cls = target.cls
            if isinstance(cls, _Global):
                if cls.label in _JOBLIB_ARRAYS:
                    return self._joblib_array(state, p, at)
                if cls.label in _JOBLIB_FILES:
                    self._joblib_file(state, at)
        return p

    def op_persid(self, p: int, at: int) -> int:
        line, p = self._line(p)
        try:
            pid = line.decode("ascii")
        except UnicodeDecodeError:
            raise _Stop(Break("persistent IDs in protocol 0 must be ASCII strings", at)) from None
        if not _TORCH_TEXT_STORAGE.match(pid):
            self._issue("persistent-id", at, f"text id {pid[:60]!r}")
        self.stack.append(_Opaque("persistent object"))
        return p

    def op_binpersid(self, p: int, at: int) -> int:
        pid = self.stack.pop()
        self._persistent(pid, at)
        self.stack.append(_Opaque("persistent object"))
        return p

    def _persistent(self, pid: Any, at: int) -> None:
        """torch.save names each storage `('storage', <torch.*Storage>, key, location,
        numel)` (legacy files add a view, or name a module's source); anything else
        depends on the loader's own `persistent_load`."""
        if isinstance(pid, tuple) and pid and pid[0] == "storage" and len(pid) in (5, 6):
            kind = pid[1]
            if (
                isinstance(kind, _Global)
                and kind.module is not None
                and kind.module.split(".")[0] == "torch"
                and (kind.name or "").endswith("Storage")
                and isinstance(pid[2], str)
                and isinstance(pid[3], str)
                and isinstance(pid[4], int)
            ):
                self._use(kind, Use.CONSTRUCT, at, "BINPERSID")
                return
        if (
            isinstance(pid, tuple)
            and len(pid) == 4
            and pid[0] == "module"
            and isinstance(pid[1], _Global)
            and all(isinstance(item, str | None) for item in pid[2:])
        ):
            self._use(pid[1], Use.CONSTRUCT, at, "BINPERSID")
            return
        self._issue("persistent-id", at, _describe(pid))

    # -- joblib -----------------------------------------------------------------------
    def _joblib_array(self, state: Any, p: int, at: int) -> int:
        """joblib writes an array's raw bytes (or a whole pickle, for object arrays) right
        after the BUILD of its NumpyArrayWrapper; skip them as joblib reads them."""
        self.stack[-1] = _Opaque("array read by joblib")
        size = _joblib_size(state)
        if size is None:
            self._issue("joblib-unknown-size", at, "NumpyArrayWrapper")
            raise _Halt
        count, itemsize, has_object, aligned = size
        if has_object:
            if self.depth >= MAX_INLINE_DEPTH:
                raise _Stop(Break("joblib object arrays nested too deeply", at))
            inner = _Machine(self.data, p, self.roles, self.max_ops, self.depth + 1, self)
            brk = inner.run()
            self.extra_ops += inner.ops
            if brk is not None:
                raise _Stop(brk)
            if inner.halted:
                raise _Halt
            return inner.end
        start = p
        if aligned:
            padding = self._u8(p)
            p += 1 + padding
        total = count * itemsize
        if p + total > self.n:
            raise _Stop(Break("the stream ends inside joblib array data", at, True))
        self._as_plain_pickle(start, p + total)
        return p + total

    def _as_plain_pickle(self, start: int, end: int) -> None:
        """`pickle.load` (rather than joblib's loader) would read the array bytes as more
        opcodes: record the globals they would import and how they would use them. Real
        array data breaks at once and imports nothing; only imports are kept, so stray
        opcodes in numbers never become findings."""
        if start >= end or self.depth >= MAX_INLINE_DEPTH:
            return
        region = memoryview(self.data)[:end]
        plain = _Machine(region, start, self.roles, self.max_ops, self.depth + 1)
        plain.run()
        for label, stats in plain.stats.items():
            mine = self.stats.get(label)
            if mine is None:
                self.stats[label] = stats
            elif stats.use > mine.use:
                mine.use, mine.use_offset, mine.use_opcode = (
                    stats.use,
                    stats.use_offset,
                    stats.use_opcode,
                )

    def _joblib_file(self, state: Any, at: int) -> None:
        if isinstance(state, _Items):
            filename = state.get("filename")
            if isinstance(filename, str) and (
                "/" in filename or "\\" in filename or filename.startswith(".")
            ):
                self._issue("joblib-file", at, filename[:200])


def _joblib_size(state: Any) -> tuple[int, int, bool, bool] | None:
    if not isinstance(state, _Items) or state.kind != "dict":
        return None
    shape = state.get("shape")
    dtype = state.get("dtype")
    if not isinstance(shape, tuple) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape
    ):
        return None
    count = 1
    for dim in shape:
        count *= dim
    described = _dtype(dtype)
    if described is None:
        return None
    itemsize, has_object = described
    aligned = state.get("numpy_array_alignment_bytes") is not None
    return count, itemsize, has_object, aligned


def _dtype(value: Any) -> tuple[int, bool] | None:
    """(itemsize, holds Python objects) of a pickled `numpy.dtype(code, False, True)` with
    its BUILD state `(version, byteorder, subarray, names, fields, elsize, alignment,
    flags[, metadata])`."""
    if not isinstance(value, _Result) or not isinstance(value.callee, _Global):
        return None
    if value.callee.label != "numpy.dtype" or not value.args:
        return None
    code = value.args[0]
    if not isinstance(code, str):
        return None
    code = code.lstrip("<>|=")
    if not code:
        return None
    state = value.state
    elsize = -1
    flags = 0
    if isinstance(state, tuple) and len(state) >= 8:
        if isinstance(state[5], int):
            elsize = state[5]
        if isinstance(state[7], int):
            flags = state[7]
    kind, digits = code[0], code[1:]
    has_object = kind == "O" or bool(flags & 1)
    if elsize > 0:
        return elsize, has_object
    if digits.isdigit():
        return int(digits), has_object
    if kind in _DTYPE_SIZES:
        return _DTYPE_SIZES[kind], has_object
    return None


def _empty(value: Any) -> bool:
    return value == () or value is None or (isinstance(value, _Items) and value.count == 0)


def _as_args(args: Any) -> tuple[Any, ...]:
    if isinstance(args, tuple):
        return args
    if isinstance(args, _Items):
        return tuple(args.items)
    return ()


def _describe(value: Any, depth: int = 0) -> str:
    if isinstance(value, _Global):
        return value.label
    if isinstance(value, tuple) and depth < 2:
        return "(" + ", ".join(_describe(item, depth + 1) for item in value[:6]) + ")"
    if isinstance(value, _CONSTANTS):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return type(value).__name__.strip("_").lower()


def _parse_int(line: bytes, at: int) -> int:
    text = line.strip()
    try:
        return int(text, 0)
    except ValueError:
        pass
    try:
        return int(text, 10)
    except ValueError:
        raise _Stop(Break(f"not an integer: {bytes(text[:20])!r}", at)) from None


def _utf8(raw: bytes, at: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Stop(Break("a global name that is not UTF-8", at)) from None


_I4 = struct.Struct("<i")
_U2 = struct.Struct("<H")
_U4 = struct.Struct("<I")
_U8 = struct.Struct("<Q")
_F8 = struct.Struct(">d")

_OPCODES: dict[int, tuple[str, str]] = {
    ord(code): (name, method)
    for code, name, method in (
        ("(", "MARK", "op_mark"),
        (".", "STOP", "op_stop"),
        ("0", "POP", "op_pop"),
        ("1", "POP_MARK", "op_pop_mark"),
        ("2", "DUP", "op_dup"),
        ("F", "FLOAT", "op_float"),
        ("I", "INT", "op_int"),
        ("J", "BININT", "op_binint"),
        ("K", "BININT1", "op_binint1"),
        ("L", "LONG", "op_long"),
        ("M", "BININT2", "op_binint2"),
        ("N", "NONE", "op_none"),
        ("P", "PERSID", "op_persid"),
        ("Q", "BINPERSID", "op_binpersid"),
        ("R", "REDUCE", "op_reduce"),
        ("S", "STRING", "op_string"),
        ("T", "BINSTRING", "op_binstring"),
        ("U", "SHORT_BINSTRING", "op_short_binstring"),
        ("V", "UNICODE", "op_unicode"),
        ("X", "BINUNICODE", "op_binunicode"),
        ("a", "APPEND", "op_append"),
        ("b", "BUILD", "op_build"),
        ("c", "GLOBAL", "op_global"),
        ("d", "DICT", "op_dict"),
        ("}", "EMPTY_DICT", "op_empty_dict"),
        ("e", "APPENDS", "op_appends"),
        ("g", "GET", "op_get"),
        ("h", "BINGET", "op_binget"),
        ("i", "INST", "op_inst"),
        ("j", "LONG_BINGET", "op_long_binget"),
        ("l", "LIST", "op_list"),
        ("]", "EMPTY_LIST", "op_empty_list"),
        ("o", "OBJ", "op_obj"),
        ("p", "PUT", "op_put"),
        ("q", "BINPUT", "op_binput"),
        ("r", "LONG_BINPUT", "op_long_binput"),
        ("s", "SETITEM", "op_setitem"),
        ("t", "TUPLE", "op_tuple"),
        (")", "EMPTY_TUPLE", "op_empty_tuple"),
        ("u", "SETITEMS", "op_setitems"),
        ("G", "BINFLOAT", "op_binfloat"),
        ("B", "BINBYTES", "op_binbytes"),
        ("C", "SHORT_BINBYTES", "op_short_binbytes"),
        ("\x80", "PROTO", "op_proto"),
        ("\x81", "NEWOBJ", "op_newobj"),
        ("\x82", "EXT1", "op_ext1"),
        ("\x83", "EXT2", "op_ext2"),
        ("\x84", "EXT4", "op_ext4"),
        ("\x85", "TUPLE1", "op_tuple1"),
        ("\x86", "TUPLE2", "op_tuple2"),
        ("\x87", "TUPLE3", "op_tuple3"),
        ("\x88", "NEWTRUE", "op_true"),
        ("\x89", "NEWFALSE", "op_false"),
        ("\x8a", "LONG1", "op_long1"),
        ("\x8b", "LONG4", "op_long4"),
        ("\x8c", "SHORT_BINUNICODE", "op_short_binunicode"),
        ("\x8d", "BINUNICODE8", "op_binunicode8"),
        ("\x8e", "BINBYTES8", "op_binbytes8"),
        ("\x8f", "EMPTY_SET", "op_empty_set"),
        ("\x90", "ADDITEMS", "op_additems"),
        ("\x91", "FROZENSET", "op_frozenset"),
        ("\x92", "NEWOBJ_EX", "op_newobj_ex"),
        ("\x93", "STACK_GLOBAL", "op_stack_global"),
        ("\x94", "MEMOIZE", "op_memoize"),
        ("\x95", "FRAME", "op_frame"),
        ("\x96", "BYTEARRAY8", "op_bytearray8"),
        ("\x97", "NEXT_BUFFER", "op_next_buffer"),
        ("\x98", "READONLY_BUFFER", "op_readonly_buffer"),
    )
}


# Opcodes a loader accepts first: the ones that push without needing the stack or memo.
_START = frozenset(b"(]})cNILFSVXUTKJMGBCP\x82\x83\x84\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x95\x96")
_PROBE_WINDOWS = (512, 1 << 16, None)  # None: the whole stream
_PROBE_OPS = 4096


def _stream(data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
    if isinstance(data, memoryview) and (data.format != "B" or data.ndim != 1):
        return data.cast("B")
    return data


def interpret(
    data: bytes | bytearray | memoryview,
    start: int = 0,
    *,
    roles: RolesLookup | None = None,
    max_ops: int = 50_000_000,
) -> Interpretation:
    """Interpret the pickle that begins at `start`, up to its STOP opcode.

    `roles` tells what a named callable does with its arguments (see `CallRoles`). Never
    raises on malformed input: where the stream breaks, `error` says why, and everything
    seen before the break is still reported.
    """
    machine = _Machine(_stream(data), start, roles, max_ops)
    # The symbolic values hold no reference cycles worth collecting mid-run, and the
    # collector's passes over millions of memo entries would dominate the time.
    collecting = gc.isenabled()
    gc.disable()
    try:
        brk = machine.run()
    finally:
        if collecting:
            gc.enable()
    return Interpretation(
        start=start,
        end=machine.end,
        protocol=machine.proto,
        ops=machine.ops,
        globals=tuple(stats.record() for stats in machine.stats.values()),
        issues=tuple(
            Issue(code, at, subject, count)
            for (code, subject), (at, count) in machine.issues.items()
        ),
        nested=tuple(machine.nested),
        error=brk,
    )


def looks_like_pickle(data: bytes | bytearray | memoryview) -> bool:
    """Cheap content check: a PROTO header, or (protocols 0 and 1, which have none) a
    first opcode a loader accepts and a run of well-formed opcodes after it. A stream that
    imports a global before it breaks is a pickle too, so truncated payloads are caught."""
    size = len(data)
    if size < 2:
        return False
    first, second = data[0], data[1]
    if first == 0x80:
        if second > HIGHEST_PROTOCOL or (size > 2 and data[2] not in _OPCODES):
            return False
        needed = 2 if second >= 2 else 4
    elif first in _START:
        needed = 4
    else:
        return False
    for window in _PROBE_WINDOWS:
        whole = window is None or window >= size
        head = _stream(data) if window is None else bytes(data[:window])
        machine = _Machine(head, 0, None, _PROBE_OPS)
        brk = machine.run()
        ops = machine.ops
        imports = any(stats.kind == "named" for stats in machine.stats.values())
        if brk is None:
            # A whole pickle: short ones count only when nothing follows them.
            return ops >= needed or machine.end == size or imports
        if ops > _PROBE_OPS or (brk.truncated and not whole and ops >= needed):
            return True
        if not brk.truncated or whole:
            # Broken or truncated: after a PROTO header, or once it imported something,
            # or after a long run of good opcodes, it is a (damaged) pickle.
            return ops >= needed and (imports or ops >= 2 * needed or (first == 0x80 and ops > 2))
    return False
