"""Chat templates (Jinja2) shipped inside models: parse them with Jinja2's own parser and
walk the syntax tree for reaches into Python internals; a template is never rendered.

Used by the GGUF scanner (`tokenizer.chat_template*`) and the Hugging Face scanner
(`tokenizer_config.json`'s `chat_template`, `chat_template.jinja`). Not a format scanner.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from jinja2 import Environment, nodes
from jinja2.ext import Extension
from jinja2.parser import Parser

from stockade.core.findings import Severity
from stockade.model.scan.interface import REFERENCES, Blob, ScanContext

__all__ = [
    "TEMPLATE_RULES",
    "TemplateAnalysis",
    "TemplateConcern",
    "analyse_template",
    "report_template",
]

TEMPLATE_RULES = {
    "STK-TPL-001": "Chat template reaches Python internals",
    "STK-TPL-002": "Chat template uses a private attribute",
    "STK-TPL-003": "Chat template computes an attribute name at render time",
    "STK-TPL-004": "Chat template loads another template",
}

# Attribute names whose only use in a template is escaping to Python (public SSTI chains).
_INTERNALS = frozenset(
    {
        "__class__",
        "__mro__",
        "__base__",
        "__bases__",
        "__subclasses__",
        "__globals__",
        "__builtins__",
        "__init__",
        "__import__",
        "__dict__",
        "__getattribute__",
        "__getattr__",
        "__code__",
        "__closure__",
        "__func__",
        "__self__",
        "__module__",
        "__loader__",
        "__spec__",
        "__reduce__",
        "__reduce_ex__",
        "__call__",
        "__new__",
        "__enter__",
        "func_globals",
        "func_code",
        "f_globals",
        "f_locals",
        "f_back",
        "f_builtins",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "ag_frame",
        "tb_frame",
        "mro",
        "os",
        "popen",
        "subprocess",
        "import_module",
        "eval",
        "exec",
        "execfile",
        "system",
        "spawn",
        "check_output",
        "getoutput",
    }
)
# Internals that are also ordinary words in chat data (a dict key "system"), so they
# count only where the template calls them or reads them as an attribute, not as an
# item key of a message.
_CALLED_ONLY = frozenset({"system", "spawn", "mro"})

# Global names a template would only use if its environment leaked Python into it.
_DANGEROUS_NAMES = frozenset(
    {"os", "subprocess", "sys", "builtins", "importlib", "__builtins__", "__import__"}
)
_DANGEROUS_CALLS = frozenset(
    {"eval", "exec", "compile", "open", "getattr", "setattr", "globals", "locals", "vars"}
)

_DUNDER = re.compile(r"__\w+__")
_MAX_FOLDED = 256  # longest string we rebuild from constant pieces
_MAX_TEMPLATE = 4 << 20


@dataclass(frozen=True)
class TemplateConcern:
    """Constructs on one line of a template that break one rule: the names they reach and
    the expressions that reach them."""

    rule_id: str
    severity: Severity
    line: int
    names: tuple[str, ...]
    evidence: str

    @property
    def detail(self) -> str:
        names = ", ".join(f"`{name}`" for name in self.names)
        return f"line {self.line}: {_EXPLAIN[self.rule_id]} ({names})"


_EXPLAIN = {
    "STK-TPL-001": "reaches names whose only use in a template is escaping to Python "
    "(object graph, globals, builtins, os)",
    "STK-TPL-002": "reads private attributes, which Jinja2's sandbox refuses",
    "STK-TPL-003": "reads an attribute whose name is only known at render time",
    "STK-TPL-004": "reads another template through the loader, which may reach files on "
    "the machine that renders it",
}


@dataclass(frozen=True)
class TemplateAnalysis:
    """What a template does; `problem` says why it could not be parsed (then no concerns)."""

    concerns: tuple[TemplateConcern, ...] = ()
    problem: str | None = None

    @property
    def worst(self) -> Severity | None:
        return max((c.severity for c in self.concerns), default=None)


@dataclass(frozen=True)
class _Hit:
    rule_id: str
    severity: Severity
    line: int
    name: str
    evidence: str


class _GenerationTag(Extension):
    """`{% generation %}...{% endgeneration %}`: transformers marks assistant turns with it."""

    tags = {"generation"}

    def parse(self, parser: Parser) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


@cache
def _environment() -> Environment:
    # The same syntax transformers accepts (loop controls, `generation`) plus `do`. The
    # environment only parses: nothing here ever compiles or renders a template.
    return Environment(  # noqa: S701 - never renders, so autoescape is irrelevant
        extensions=["jinja2.ext.loopcontrols", "jinja2.ext.do", _GenerationTag]
    )


def analyse_template(source: str) -> TemplateAnalysis:
    """Parse `source` as Jinja2 and list every reach into Python internals it contains."""
    if len(source) > _MAX_TEMPLATE:
        return TemplateAnalysis(problem=f"template of {len(source)} characters is too long")
    tree, problem = _parse(source)
    if tree is None:
        return TemplateAnalysis(problem=problem)
    grouped: dict[tuple[str, int], list[_Hit]] = {}
    for hit in _walk(tree):
        grouped.setdefault((hit.rule_id, hit.line), []).append(hit)
    concerns = []
    for (rule_id, line), hits in sorted(grouped.items(), key=lambda item: item[0][::-1]):
        names = tuple(dict.fromkeys(hit.name for hit in hits))
        evidence = " ".join(dict.fromkeys(hit.evidence for hit in hits))
        severity = max(hit.severity for hit in hits)
        concerns.append(TemplateConcern(rule_id, severity, line, names, evidence))
    return TemplateAnalysis(concerns=tuple(concerns))


def _parse(source: str) -> tuple[nodes.Template | None, str]:
    # The parser itself, not `Environment.parse`: that one rewrites the traceback of a
    # syntax error through fake frames, a reference cycle that keeps every caller's frame
    # (and the memory map the scanned file sits in) alive until the garbage collector runs.
    try:
        return Parser(_environment(), source).parse(), ""
    except RecursionError as exc:
        _forget(exc)
        return None, "template nested too deeply to parse"
    except Exception as exc:  # TemplateSyntaxError and anything the lexer trips on
        where = getattr(exc, "lineno", None)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        _forget(exc)
        at = f" (line {where})" if where else ""
        return None, f"template does not parse{at}: {message}"


def _forget(exc: BaseException) -> None:
    """Drop the frames an exception holds, so nothing outlives the scan that raised it."""
    current: BaseException | None = exc
    for _ in range(16):  # chained exceptions; a chain that loops is cut here
        if current is None:
            return
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
            current.__traceback__ = None
        current = current.__context__ or current.__cause__


def report_template(
    blob: Blob,
    ctx: ScanContext,
    source: str,
    *,
    label: str,
    offset: int | None = None,
) -> TemplateAnalysis:
    """Analyse one template and report what it does against `blob`; `label` names the
    template (the GGUF key or the JSON field it came from). A template that does not
    parse is an error: what it would do is unknown."""
    analysis = analyse_template(source)
    if analysis.problem is not None:
        ctx.error(blob, f"{label}: {analysis.problem}", offset=offset)
        return analysis
    for concern in analysis.concerns:
        ctx.report(
            blob,
            concern.rule_id,
            TEMPLATE_RULES[concern.rule_id],
            concern.severity,
            offset=offset,
            detail=f"{label}, {concern.detail}",
            snippet=concern.evidence,
            remediation="Do not render this template outside a sandbox; replace it with a "
            "reviewed chat template before loading the model.",
            references=(*REFERENCES, "CWE-1336"),
            category="model-template-injection",
            properties={"template": label, "line": concern.line, "names": list(concern.names)},
        )
    return analysis


# -- the walk ----------------------------------------------------------------------------


def _nodes(tree: nodes.Node) -> Iterator[tuple[nodes.Node, nodes.Node | None]]:
    """Every node with its parent, without recursion (templates may nest deeply)."""
    stack: list[tuple[nodes.Node, nodes.Node | None]] = [(tree, None)]
    while stack:
        node, parent = stack.pop()
        yield node, parent
        children = list(node.iter_child_nodes())
        stack.extend((child, node) for child in reversed(children))


def _walk(tree: nodes.Node) -> Iterator[_Hit]:
    folder = _Folder(tree)
    # Names the template binds itself (`set`, loop variables, macro parameters) are its
    # own data, whatever they are called.
    bound = {
        node.name
        for node, _ in _nodes(tree)
        if isinstance(node, nodes.Name) and node.ctx in ("store", "param")
    }
    for node, parent in _nodes(tree):
        line = getattr(node, "lineno", 0) or 0
        called = isinstance(parent, nodes.Call) and parent.node is node
        if isinstance(node, nodes.Getattr | nodes.NSRef):
            yield from _attribute(node.attr, line, f".{node.attr}", called=called)
        elif isinstance(node, nodes.Getitem):
            key = folder.fold(node.arg)
            if isinstance(key, str):
                yield from _attribute(key, line, f"[{key!r}]", called=called, item=True)
        elif isinstance(node, nodes.Filter):
            yield from _filter(node, line, folder)
        elif isinstance(node, nodes.Name) and node.ctx == "load" and node.name not in bound:
            yield from _name(node.name, line, called=called)
        elif isinstance(node, nodes.Include | nodes.Import | nodes.FromImport | nodes.Extends):
            kind = type(node).__name__.lower()
            yield _Hit("STK-TPL-004", Severity.MEDIUM, line, kind, f"{{% {kind} %}}")
        elif isinstance(node, nodes.Const | nodes.Concat | nodes.Add | nodes.Mul | nodes.Mod):
            if isinstance(parent, nodes.Getitem) and parent.arg is node:
                continue  # judged as a key above
            yield from _string(node, line, folder)


def _attribute(
    name: str, line: int, evidence: str, *, called: bool, item: bool = False
) -> Iterator[_Hit]:
    # `|map(attribute="a.b")` and friends follow dotted paths, so judge every step.
    for part in name.split("."):
        if part in _INTERNALS and (part not in _CALLED_ONLY or (called and not item)):
            yield _Hit("STK-TPL-001", Severity.CRITICAL, line, part, evidence)
        elif part.startswith("_") and part != "_" and (not item or "__" in part):
            yield _Hit("STK-TPL-002", Severity.HIGH, line, part, evidence)


def _name(name: str, line: int, *, called: bool) -> Iterator[_Hit]:
    if name in _DANGEROUS_NAMES or (called and name in _DANGEROUS_CALLS):
        yield _Hit("STK-TPL-001", Severity.CRITICAL, line, name, f"{name}()" if called else name)


_ATTRIBUTE_FILTERS: dict[str, tuple[int | None, str | None]] = {
    # filter -> (position of the attribute argument, its keyword)
    "attr": (0, None),
    "map": (None, "attribute"),
    "selectattr": (0, None),
    "rejectattr": (0, None),
    "sort": (None, "attribute"),
    "groupby": (0, "attribute"),
    "sum": (None, "attribute"),
    "unique": (None, "attribute"),
    "min": (None, "attribute"),
    "max": (None, "attribute"),
}


def _filter(node: nodes.Filter, line: int, folder: _Folder) -> Iterator[_Hit]:
    if node.name not in _ATTRIBUTE_FILTERS:
        return
    index, keyword = _ATTRIBUTE_FILTERS[node.name]
    argument: nodes.Node | None = None
    if index is not None and len(node.args) > index:
        argument = node.args[index]
    for pair in node.kwargs:
        if pair.key == keyword:
            argument = pair.value
    if argument is None:
        return
    name = folder.fold(argument)
    if isinstance(name, str):
        evidence = f"|{node.name}({name!r})"
        yield from _attribute(name, line, evidence, called=node.name == "attr")
    elif node.name == "attr":
        yield _Hit("STK-TPL-003", Severity.MEDIUM, line, "attr", "|attr(<computed>)")


def _string(node: nodes.Node, line: int, folder: _Folder) -> Iterator[_Hit]:
    """A string constant (or one built from pieces) that spells an internal name: it can
    only be meant for a lookup (`|map(attribute=...)`, `|attr`, `[...]`)."""
    text = folder.fold(node)
    if not isinstance(text, str) or ("__" not in text and "_globals" not in text):
        return
    for part in text.split("."):
        if (_DUNDER.fullmatch(part) and part in _INTERNALS) or part in _GLOBALS_ALIASES:
            yield _Hit("STK-TPL-001", Severity.CRITICAL, line, part, repr(text))


_GLOBALS_ALIASES = frozenset({"func_globals", "f_globals"})


# -- constant folding ------------------------------------------------------------------

_Value = str | int | list["_Value"] | None


class _Folder:
    """Computes the value an expression has without any render-time input: the string
    building of public SSTI payloads (`~`, `+`, `*`, `%`, `|join`, `|reverse`, `|format`,
    slices, `.format()`), through variables set once to such a constant."""

    def __init__(self, tree: nodes.Node | None = None) -> None:
        self.constants: dict[str, _Value] = {}
        if tree is not None:
            self.collect(tree)

    def collect(self, tree: nodes.Node) -> None:
        assigned: dict[str, list[nodes.Node]] = {}
        for node, _ in _nodes(tree):
            if isinstance(node, nodes.Assign) and isinstance(node.target, nodes.Name):
                assigned.setdefault(node.target.name, []).append(node.node)
            elif isinstance(node, nodes.AssignBlock) and isinstance(node.target, nodes.Name):
                body = nodes.Concat(
                    [
                        item
                        for output in node.body
                        for item in (output.nodes if isinstance(output, nodes.Output) else [output])
                    ]
                )
                assigned.setdefault(node.target.name, []).append(body)
        # Fold in rounds so `{% set b = a ~ 'ss__' %}` sees `a`; a name set twice is unknown.
        for _ in range(8):
            before = len(self.constants)
            for name, values in assigned.items():
                if len(values) == 1 and name not in self.constants:
                    value = self.fold(values[0])
                    if value is not None:
                        self.constants[name] = value
            if len(self.constants) == before:
                break

    def fold(self, node: nodes.Node) -> _Value:
        try:
            return self.node(node, 0)
        except (ValueError, TypeError, IndexError, OverflowError, RecursionError):
            return None

    def node(self, node: nodes.Node, depth: int) -> _Value:
        if depth > 64:
            return None
        depth += 1
        if isinstance(node, nodes.Const):
            value = node.value
            if isinstance(value, bool):
                return None
            return value if isinstance(value, str | int) else None
        if isinstance(node, nodes.Name) and node.ctx == "load":
            return self.constants.get(node.name)
        if isinstance(node, nodes.TemplateData):
            return node.data
        if isinstance(node, nodes.Neg | nodes.Pos):
            value = self.node(node.node, depth)
            if not isinstance(value, int):
                return None
            return -value if isinstance(node, nodes.Neg) else value
        if isinstance(node, nodes.List | nodes.Tuple):
            items = [self.node(item, depth) for item in node.items]
            return None if any(item is None for item in items) else items
        if isinstance(node, nodes.Concat):
            parts = [self.node(part, depth) for part in node.nodes]
            if any(not isinstance(part, str | int) for part in parts):
                return None
            return _bounded("".join(str(part) for part in parts))
        if isinstance(node, nodes.Add):
            left, right = self.node(node.left, depth), self.node(node.right, depth)
            if isinstance(left, str) and isinstance(right, str):
                return _bounded(left + right)
            return None
        if isinstance(node, nodes.Mul):
            left, right = self.node(node.left, depth), self.node(node.right, depth)
            if isinstance(left, int) and isinstance(right, str):
                left, right = right, left
            if isinstance(left, str) and isinstance(right, int) and 0 <= right <= _MAX_FOLDED:
                return _bounded(left * right)
            return None
        if isinstance(node, nodes.Mod):
            left, right = self.node(node.left, depth), self.node(node.right, depth)
            if isinstance(left, str):
                return _percent(left, right if isinstance(right, list) else [right])
            return None
        if isinstance(node, nodes.Getitem):
            return self.getitem(node, depth)
        if isinstance(node, nodes.Filter) and node.node is not None:
            return self.filter(node, depth)
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
            return self.method(node, depth)
        return None

    def getitem(self, node: nodes.Getitem, depth: int) -> _Value:
        value = self.node(node.node, depth)
        if not isinstance(value, str | list):
            return None
        if isinstance(node.arg, nodes.Slice):
            bounds = []
            for part in (node.arg.start, node.arg.stop, node.arg.step):
                bound = None if part is None else self.node(part, depth)
                if part is not None and not isinstance(bound, int):
                    return None
                bounds.append(bound)
            if bounds[2] == 0:
                return None
            return value[slice(*bounds)]
        index = self.node(node.arg, depth)
        return value[index] if isinstance(index, int) else None

    def filter(self, node: nodes.Filter, depth: int) -> _Value:
        assert node.node is not None
        value = self.node(node.node, depth)
        args = [self.node(arg, depth) for arg in node.args]
        name = node.name
        if name == "join" and isinstance(value, list):
            separator = args[0] if args else ""
            if isinstance(separator, str) and all(isinstance(v, str | int) for v in value):
                return _bounded(separator.join(str(v) for v in value))
            return None
        if name == "reverse" and isinstance(value, str | list):
            return value[::-1]
        if name in {"first", "last"} and isinstance(value, str | list) and value:
            return value[0] if name == "first" else value[-1]
        if name in {"string", "lower", "upper", "trim"} and isinstance(value, str):
            return {
                "string": value,
                "lower": value.lower(),
                "upper": value.upper(),
                "trim": value.strip(),
            }[name]
        if name == "replace" and isinstance(value, str) and len(args) >= 2:
            old, new = args[0], args[1]
            if isinstance(old, str) and isinstance(new, str) and old:
                return _bounded(value.replace(old, new))
            return None
        if name == "format" and isinstance(value, str):
            return _percent(value, args)
        if name == "list" and isinstance(value, str):
            return list(value)
        return None

    def method(self, node: nodes.Call, depth: int) -> _Value:
        target = node.node
        assert isinstance(target, nodes.Getattr)
        value = self.node(target.node, depth)
        if not isinstance(value, str):
            return None
        args = [self.node(arg, depth) for arg in node.args]
        method = target.attr
        if method == "join" and len(args) == 1 and isinstance(args[0], list):
            pieces = args[0]
            if all(isinstance(piece, str) for piece in pieces):
                return _bounded(value.join(str(piece) for piece in pieces))
            return None
        if method == "format":
            return _braces(value, args)
        if method in {"lower", "upper", "strip"} and not args:
            return {"lower": value.lower(), "upper": value.upper(), "strip": value.strip()}[method]
        if method == "replace" and len(args) == 2:
            old, new = args
            if isinstance(old, str) and isinstance(new, str) and old:
                return _bounded(value.replace(old, new))
        return None


_PERCENT = re.compile(r"%([%sdc])")
_BRACES = re.compile(r"\{(\d*)\}")


def _percent(pattern: str, args: list[_Value]) -> _Value:
    """`'%c%c%s' % (95, 95, 'class')` with only %s, %d, %c and %%."""
    values = iter(args)
    out: list[str] = []
    position = 0
    for match in _PERCENT.finditer(pattern):
        out.append(pattern[position : match.start()])
        position = match.end()
        kind = match.group(1)
        if kind == "%":
            out.append("%")
            continue
        value = next(values, None)
        if kind == "c" and isinstance(value, int) and 0 <= value < 0x110000:
            out.append(chr(value))
        elif kind in "sd" and isinstance(value, str | int):
            out.append(str(value))
        else:
            return None
    if "%" in pattern[position:]:
        return None
    out.append(pattern[position:])
    return _bounded("".join(out))


def _braces(pattern: str, args: list[_Value]) -> _Value:
    """`'{0}{0}class{0}{0}'.format('_')` with only plain `{}` and `{N}` fields."""
    if re.sub(_BRACES, "", pattern).count("{") or re.sub(_BRACES, "", pattern).count("}"):
        return None
    automatic = iter(range(len(args)))
    out: list[str] = []
    position = 0
    for match in _BRACES.finditer(pattern):
        out.append(pattern[position : match.start()])
        position = match.end()
        index = int(match.group(1)) if match.group(1) else next(automatic, len(args))
        if index >= len(args) or not isinstance(args[index], str | int):
            return None
        out.append(str(args[index]))
    out.append(pattern[position:])
    return _bounded("".join(out))


def _bounded(text: str) -> str | None:
    return text if len(text) <= _MAX_FOLDED else None
