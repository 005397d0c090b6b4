"""GGUF and safetensors: files written byte by byte from the two specifications, benign
ones (every value type, quantised tensors, real chat templates) scanned clean, and every
malformed size, offset and hostile chat template reported, without loading anything.
"""

from __future__ import annotations

import json
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from stockade.core.findings import Finding, Severity
from stockade.model.scan.engine import scan_bytes, scan_file
from stockade.model.scan.formats import chat_template, gguf, safetensors
from stockade.model.scan.interface import Blob

SCANNERS = [gguf.SCANNER, safetensors.SCANNER]

# -- writing GGUF by hand, per the specification ------------------------------------------

UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY = range(10)
UINT64, INT64, FLOAT64 = 10, 11, 12
_SCALARS = {
    UINT8: "B",
    INT8: "b",
    UINT16: "H",
    INT16: "h",
    UINT32: "I",
    INT32: "i",
    FLOAT32: "f",
    BOOL: "?",
    UINT64: "Q",
    INT64: "q",
    FLOAT64: "d",
}
F32, F16, Q4_0, Q8_0, Q4_K, I8, I32, BF16 = 0, 1, 2, 8, 12, 24, 26, 30
_BLOCKS = {F32: (1, 4), F16: (1, 2), Q4_0: (32, 18), Q8_0: (32, 34), Q4_K: (256, 144)}
_BLOCKS |= {I8: (1, 1), I32: (1, 4), BF16: (1, 2)}


class GgufFile:
    """A GGUF writer following the spec: header, metadata, tensor infos, aligned data."""

    def __init__(self, version: int = 3, *, big_endian: bool = False) -> None:
        self.version = version
        self.order = ">" if big_endian else "<"
        self.metadata: list[bytes] = []
        self.tensors: list[tuple[str, list[int], int, bytes]] = []
        self.alignment = 32

    def pack(self, fmt: str, *values: object) -> bytes:
        return struct.pack(self.order + fmt, *values)

    def count(self, value: int) -> bytes:
        return self.pack("I" if self.version == 1 else "Q", value)

    def string(self, text: str | bytes) -> bytes:
        raw = text.encode() if isinstance(text, str) else text
        return self.count(len(raw)) + raw

    def value(self, kind: int, value: object) -> bytes:
        if kind == STRING:
            return self.string(value)  # type: ignore[arg-type]
        if kind == ARRAY:
            element, items = value  # type: ignore[misc]
            body = b"".join(self.value(element, item) for item in items)
            return self.pack("I", element) + self.count(len(items)) + body
        return self.pack(_SCALARS[kind], value)

    def add(self, key: str, kind: int, value: object) -> GgufFile:
        self.metadata.append(self.string(key) + self.pack("I", kind) + self.value(kind, value))
        if key == "general.alignment":
            self.alignment = int(value)  # type: ignore[call-overload]
        return self

    def raw_metadata(self, entry: bytes) -> GgufFile:
        self.metadata.append(entry)
        return self

    def tensor(self, name: str, dims: list[int], kind: int, data: bytes | None = None) -> GgufFile:
        if data is None:
            per_block, block_bytes = _BLOCKS[kind]
            elements = int(np.prod(dims)) if dims else 1
            data = bytes(range(256)) * (elements // per_block * block_bytes // 256 + 1)
            data = data[: elements // per_block * block_bytes]
        self.tensors.append((name, dims, kind, data))
        return self

    def build(self, *, offsets: list[int] | None = None, pad: bool = True) -> bytes:
        infos, blobs, position = [], [], 0
        for index, (name, dims, kind, data) in enumerate(self.tensors):
            offset = offsets[index] if offsets else position
            dim_fmt = "I" if self.version == 1 else "Q"
            info = self.string(name) + self.pack("I", len(dims))
            info += b"".join(self.pack(dim_fmt, dim) for dim in dims)
            infos.append(info + self.pack("I", kind) + self.pack("Q", offset))
            padded = data + b"\0" * (-len(data) % self.alignment)
            blobs.append(padded)
            position += len(padded)
        head = b"GGUF" + self.pack("I", self.version)
        head += self.count(len(self.tensors)) + self.count(len(self.metadata))
        head += b"".join(self.metadata) + b"".join(infos)
        if pad:
            head += b"\0" * (-len(head) % self.alignment)
        return head + b"".join(blobs)


# Chat templates as shipped in popular models (shortened only where they repeat).
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] "
    "| trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and "
    "assistant roles are supported!') }}{% endif %}{% endfor %}"
)
LLAMA31_TOOLS = """{{- bos_token }}
{%- if custom_tools is defined %}{%- set tools = custom_tools %}{%- endif %}
{%- if not tools_in_user_message is defined %}{%- set tools_in_user_message = true %}{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}{%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}{%- set date_string = "26 Jul 2024" %}{%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}{%- set system_message = "" %}{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions.\\n\\n" }}
    {%- for t in tools %}{{- t | tojson(indent=4) }}{{- "\\n\\n" }}{%- endfor %}
{%- endif %}
{{- system_message }}{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'
            + message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}{{- tool_call.arguments | tojson }}{{- "}" }}{{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}{{- message.content }}{%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""
QWEN_TOOLS = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}
    {%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
    {{- "\\n\\n# Tools\\n\\n<tools>" }}
    {%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user"
        and not(message.content.startswith('<tool_response>')
        and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}{%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}
        {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}{{- tool_call.name }}{{- '", "arguments": ' }}
            {%- if tool_call.arguments is string %}{{- tool_call.arguments }}
            {%- else %}{{- tool_call.arguments | tojson }}{%- endif %}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""
TRAINING_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] }}{% endgeneration %}{% else %}{{ message['content'] }}{% endif %}"
    "{% if loop.index > 50 %}{% break %}{% endif %}{% endfor %}"
    "{{ messages|selectattr('role', 'equalto', 'system')|map(attribute='content')|join }}"
)
BENIGN_TEMPLATES = {
    "chatml": CHATML,
    "llama3": LLAMA3,
    "mistral": MISTRAL,
    "llama3.1-tools": LLAMA31_TOOLS,
    "qwen-tools": QWEN_TOOLS,
    "training": TRAINING_TEMPLATE,
}

# Public server-side template injection payloads, as seen in malicious GGUF uploads.
SSTI_TEMPLATES = {
    "mro-subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "cycler-globals": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "lipsum-globals": "{{ lipsum.__globals__['os'].popen('touch /tmp/pwned').read() }}",
    "attr-concat": "{{ ''|attr('__cla'~'ss__') }}",
    "request-builtins": (
        "{{ request.application.__globals__.__builtins__.__import__('os').popen('id').read() }}"
    ),
    "joiner-globals": "{{ joiner.__init__.__globals__.os.system('id') }}",
    "namespace-globals": "{{ namespace.__init__.__globals__['os'].popen('id').read() }}",
    "attr-hex-escapes": "{{ ()|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "attr-join": "{{ ()|attr(['_','_','class','_','_']|join)|attr('__base__') }}",
    "attr-format": "{{ ()|attr('%c%cclass%c%c'|format(95,95,95,95)) }}",
    "attr-reversed": "{{ ()|attr('__ssalc__'|reverse) }}",
    "set-then-attr": "{% set a = '__cla' %}{% set b = a ~ 'ss__' %}{{ ()|attr(b) }}",
    "map-attribute": "{{ [()]|map(attribute='__class__.__base__')|list }}",
    "template-reference": "{{ self._TemplateReference__context.cycler.__init__ }}",
    "catch-warnings": (
        "{% for c in [].__class__.__base__.__subclasses__() %}{% if c.__name__ == "
        "'catch_warnings' %}{{ c()._module.__builtins__['__import__']('os').popen('id')"
        ".read() }}{% endif %}{% endfor %}"
    ),
    "inside-benign": CHATML + "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
}


def realistic_gguf(version: int = 3, *, big_endian: bool = False) -> GgufFile:
    """A llama-style model with every metadata value type and several tensor types."""
    tokens = [f"tok{i}" for i in range(3000)] + ["<|im_start|>", "<|im_end|>", "Ġthe", "日本"]
    model = GgufFile(version, big_endian=big_endian)
    (
        model.add("general.architecture", STRING, "llama")
        .add("general.name", STRING, "tiny-llama")
        .add("general.alignment", UINT32, 32)
        .add("general.file_type", UINT32, 7)
        .add("llama.context_length", UINT32, 4096)
        .add("llama.rope.freq_base", FLOAT32, 500000.0)
        .add("llama.attention.layer_norm_rms_epsilon", FLOAT32, 1e-5)
        .add("x.u8", UINT8, 255)
        .add("x.i8", INT8, -1)
        .add("x.u16", UINT16, 65535)
        .add("x.i16", INT16, -2)
        .add("x.i32", INT32, -3)
        .add("x.bool", BOOL, True)
        .add("x.u64", UINT64, 1 << 40)
        .add("x.i64", INT64, -(1 << 40))
        .add("x.f64", FLOAT64, 2.5)
        .add("x.nested", ARRAY, (ARRAY, [(INT32, [1, 2]), (STRING, ["a", "b"]), (UINT8, [])]))
        .add("tokenizer.ggml.model", STRING, "gpt2")
        .add("tokenizer.ggml.tokens", ARRAY, (STRING, tokens))
        .add("tokenizer.ggml.token_type", ARRAY, (INT32, [1] * len(tokens)))
        .add("tokenizer.ggml.scores", ARRAY, (FLOAT32, [0.0] * len(tokens)))
        .add("tokenizer.ggml.merges", ARRAY, (STRING, ["Ġ t", "h e", "Ġt he"]))
        .add("tokenizer.ggml.bos_token_id", UINT32, 1)
        .add("tokenizer.chat_template", STRING, LLAMA3)
        .add("tokenizer.chat_templates", ARRAY, (STRING, ["tool_use"]))
        .add("tokenizer.chat_template.tool_use", STRING, LLAMA31_TOOLS)
    )
    (
        model.tensor("token_embd.weight", [64, 8], Q8_0)
        .tensor("blk.0.attn_q.weight", [256, 2], Q4_K)
        .tensor("blk.0.ffn_up.weight", [64, 3], Q4_0)
        .tensor("blk.0.attn_norm.weight", [64], F32)
        .tensor("blk.0.ffn_down.weight", [7, 3], F16)
        .tensor("blk.0.bf16", [5], BF16)
        .tensor("blk.0.ids", [3, 3], I32)
        .tensor("output_norm.weight", [64], F32)
    )
    return model


def kinds(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.rule_id, f.severity.value) for f in findings]


def rules(findings: list[Finding]) -> set[str]:
    return {f.rule_id for f in findings}


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.is_error]


# -- GGUF: benign ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("big_endian", [False, True])
def test_a_realistic_gguf_in_every_version_and_byte_order_is_clean(
    version: int, big_endian: bool
) -> None:
    data = realistic_gguf(version, big_endian=big_endian).build()
    assert gguf.SCANNER.detect(scan_blob(data))
    assert scan_bytes(data, "model.gguf", scanners=SCANNERS) == []


@pytest.mark.parametrize("name", sorted(BENIGN_TEMPLATES))
def test_real_chat_templates_produce_no_finding(name: str) -> None:
    analysis = chat_template.analyse_template(BENIGN_TEMPLATES[name])
    assert analysis.problem is None
    assert analysis.concerns == ()
    data = GgufFile().add("tokenizer.chat_template", STRING, BENIGN_TEMPLATES[name]).build()
    assert scan_bytes(data, "m.gguf", scanners=SCANNERS) == []


def test_a_custom_alignment_is_honoured(tmp_path: Path) -> None:
    model = realistic_gguf()
    model.metadata = [entry for entry in model.metadata if b"general.alignment" not in entry]
    model.add("general.alignment", UINT32, 64)
    path = tmp_path / "aligned.gguf"
    path.write_bytes(model.build())
    assert scan_file(path, scanners=SCANNERS) == []


def test_a_gguf_without_tensors_or_metadata_is_clean() -> None:
    assert scan_bytes(GgufFile().build(), scanners=SCANNERS) == []


# -- GGUF: chat templates -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SSTI_TEMPLATES))
def test_template_injection_payloads_are_critical(name: str) -> None:
    payload = SSTI_TEMPLATES[name]
    data = realistic_gguf().add("tokenizer.chat_template.evil", STRING, payload).build()
    findings = scan_bytes(data, "evil.gguf", scanners=SCANNERS)
    critical = [f for f in findings if f.rule_id == "STK-TPL-001"]
    assert critical, kinds(findings)
    assert all(f.severity is Severity.CRITICAL for f in critical)
    finding = critical[0]
    assert "tokenizer.chat_template.evil" in finding.detail
    # The offset points at the template's value in the file: its length, then its text.
    offset = finding.location.offset
    assert offset is not None
    (length,) = struct.unpack_from("<Q", data, offset)
    assert data[offset + 8 : offset + 8 + length] == payload.encode()
    assert not errors(findings)


def test_a_computed_attribute_name_is_medium() -> None:
    template = "{{ ()|attr(request.args.name) }}"
    findings = scan_bytes(
        GgufFile().add("tokenizer.chat_template", STRING, template).build(), scanners=SCANNERS
    )
    assert kinds(findings) == [("STK-TPL-003", "medium")]


def test_a_template_that_includes_another_is_medium() -> None:
    analysis = chat_template.analyse_template("{% include '/etc/passwd' %}")
    assert [(c.rule_id, c.severity) for c in analysis.concerns] == [
        ("STK-TPL-004", Severity.MEDIUM)
    ]


def test_message_keys_named_like_internals_are_not_findings() -> None:
    template = (
        "{% set system = messages[0]['system'] %}{{ system }}{{ message['_id'] }}"
        "{{ message.role == 'system' }}{{ loop.index0 }}{{ tools['mro'] }}"
        "{% set sys = messages[0] %}{{ sys.content }}{% for os in oses %}{{ os }}{% endfor %}"
    )
    analysis = chat_template.analyse_template(template)
    assert analysis.problem is None
    assert analysis.concerns == ()


def test_a_template_that_does_not_parse_is_an_error_and_earlier_findings_stay() -> None:
    model = GgufFile().add("tokenizer.chat_template", STRING, SSTI_TEMPLATES["cycler-globals"])
    model.add("tokenizer.chat_template.broken", STRING, "{% for m in messages %}{{ m }")
    findings = scan_bytes(model.build(), "m.gguf", scanners=SCANNERS)
    assert ("STK-TPL-001", "critical") in kinds(findings)
    (error,) = errors(findings)
    assert "tokenizer.chat_template.broken" in error.detail
    assert "does not parse" in error.detail


def test_a_template_that_is_not_utf8_is_an_error() -> None:
    data = GgufFile().add("tokenizer.chat_template", STRING, b"{{ \xff }}").build()
    (error,) = scan_bytes(data, scanners=SCANNERS)
    assert error.is_error
    assert "UTF-8" in error.detail


def test_deeply_nested_templates_do_not_crash() -> None:
    analysis = chat_template.analyse_template("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")
    assert analysis.problem is not None


def test_scanning_a_file_with_a_broken_template_releases_the_memory_map(tmp_path: Path) -> None:
    # A syntax error's traceback must not keep the scan's frames (and the map) alive.
    path = tmp_path / "broken.gguf"
    path.write_bytes(GgufFile().add("tokenizer.chat_template", STRING, "{% if %}").build())
    (error,) = scan_file(path, scanners=SCANNERS)
    assert error.is_error


# -- GGUF: malformed ----------------------------------------------------------------------------


def test_a_claimed_2_to_the_60_strings_is_reported_without_allocating() -> None:
    model = GgufFile().add("general.name", STRING, "x")
    entry = model.string("tokenizer.ggml.tokens") + model.pack("I", ARRAY)
    entry += model.pack("I", STRING) + model.count(1 << 60) + model.string("a")
    data = model.raw_metadata(entry).build()
    tracemalloc.start()
    try:
        findings = scan_bytes(data, scanners=SCANNERS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    assert ("STK-GGUF-001", "medium") in kinds(findings)
    assert errors(findings)


@pytest.mark.parametrize(
    "field", ["tensor_count", "kv_count", "string_length", "array_of_u64", "n_dims"]
)
def test_impossible_counts_are_findings_and_stop_the_parse(field: str) -> None:
    model = GgufFile()
    if field == "tensor_count":
        data = b"GGUF" + struct.pack("<IQQ", 3, 1 << 50, 0)
    elif field == "kv_count":
        data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 62)
    elif field == "string_length":
        data = GgufFile().raw_metadata(struct.pack("<Q", 1 << 61) + b"key").build()
    elif field == "array_of_u64":
        entry = model.string("a") + model.pack("IIQ", ARRAY, UINT64, 1 << 59)
        data = model.raw_metadata(entry).build()
    else:
        info = model.string("t") + model.pack("I", 0xFFFFFFF0)
        data = b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + info + b"\0" * 64
    findings = scan_bytes(data, scanners=SCANNERS)
    assert ("STK-GGUF-001", "medium") in kinds(findings)
    assert len(errors(findings)) == 1


@pytest.mark.parametrize("cut", [5, 12, 30, 200, 5000, 30000])
def test_a_truncated_gguf_is_an_error_or_a_finding(cut: int) -> None:
    data = realistic_gguf().build()
    findings = scan_bytes(data[:cut], scanners=SCANNERS)
    assert errors(findings) or any(f.severity >= Severity.MEDIUM for f in findings)


def test_every_prefix_of_a_small_gguf_is_handled() -> None:
    data = (
        GgufFile()
        .add("tokenizer.chat_template", STRING, CHATML)
        .add("a", ARRAY, (STRING, ["x", "y"]))
        .tensor("w", [8], F32)
        .build()
    )
    for cut in range(len(data)):
        findings = scan_bytes(data[:cut], scanners=SCANNERS)
        if cut >= 4:
            assert errors(findings) or any(f.severity >= Severity.MEDIUM for f in findings), cut


def test_an_unknown_value_type_is_a_finding_and_an_error() -> None:
    model = GgufFile().add("general.name", STRING, "x")
    model.raw_metadata(model.string("weird") + model.pack("I", 99) + b"\0" * 16)
    findings = scan_bytes(model.build(), scanners=SCANNERS)
    assert ("STK-GGUF-002", "medium") in kinds(findings)
    assert errors(findings)


def test_arrays_nested_too_deep_are_reported() -> None:
    value: tuple[int, list[object]] = (UINT8, [])
    for _ in range(12):
        value = (ARRAY, [value])
    findings = scan_bytes(GgufFile().add("deep", ARRAY, value).build(), scanners=SCANNERS)
    assert ("STK-GGUF-003", "medium") in kinds(findings)


def test_repeated_keys_and_tensor_names_are_reported() -> None:
    model = GgufFile().add("general.name", STRING, "a").add("general.name", STRING, "b")
    model.tensor("w", [4], F32).tensor("w", [4], F32)
    findings = scan_bytes(model.build(), scanners=SCANNERS)
    assert [k for k in kinds(findings) if k[0] == "STK-GGUF-004"] == [
        ("STK-GGUF-004", "medium"),
        ("STK-GGUF-004", "medium"),
    ]


@pytest.mark.parametrize(
    ("dims", "kind", "rule"),
    [
        ([2, 2, 2, 2, 2], F32, "STK-GGUF-005"),  # more than GGML_MAX_DIMS
        ([1 << 63, 1], F32, "STK-GGUF-005"),  # negative as int64
        ([1 << 40, 1 << 40], F32, "STK-GGUF-005"),  # element count overflows int64
        ([33], Q8_0, "STK-GGUF-005"),  # not a whole number of blocks
        ([4], 77, "STK-GGUF-006"),  # unknown ggml type
    ],
)
def test_invalid_tensor_shapes_and_types(dims: list[int], kind: int, rule: str) -> None:
    data = GgufFile().tensor("t", dims, kind, b"\0" * 32).build()
    findings = scan_bytes(data, scanners=SCANNERS)
    expected = "low" if rule == "STK-GGUF-006" else "medium"
    assert (rule, expected) in kinds(findings)
    assert not errors(findings)


def test_a_million_dimensions_are_skipped_not_read() -> None:
    model = GgufFile()
    info = model.string("t") + model.pack("I", 1_000_000) + bytes(8_000_000)
    info += model.pack("I", F32) + model.pack("Q", 0)
    data = b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + info + bytes(64)
    tracemalloc.start()
    try:
        findings = scan_bytes(data, scanners=SCANNERS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kinds(findings) == [("STK-GGUF-005", "medium")]
    assert peak < 1 << 20


def test_an_alignment_that_is_not_a_power_of_two_is_reported() -> None:
    data = GgufFile().add("general.alignment", UINT32, 24).tensor("t", [8], F32).build()
    findings = scan_bytes(data, scanners=SCANNERS)
    assert ("STK-GGUF-007", "medium") in kinds(findings)


def test_an_alignment_of_the_wrong_type_is_reported() -> None:
    data = GgufFile().add("general.alignment", UINT64, 32).build()
    assert ("STK-GGUF-007", "medium") in kinds(scan_bytes(data, scanners=SCANNERS))


def test_tensor_data_outside_the_file_or_misaligned_is_reported() -> None:
    model = GgufFile().tensor("a", [8], F32).tensor("b", [8], F32)
    outside = scan_bytes(model.build(offsets=[0, 1 << 30]), scanners=SCANNERS)
    assert ("STK-GGUF-008", "medium") in kinds(outside)
    misaligned = scan_bytes(model.build(offsets=[0, 40]), scanners=SCANNERS)
    assert ("STK-GGUF-008", "medium") in kinds(misaligned)


def test_overlapping_tensors_are_reported() -> None:
    model = GgufFile().tensor("a", [64], F32).tensor("b", [8], F32).tensor("c", [8], F32)
    findings = scan_bytes(model.build(offsets=[0, 64, 128]), scanners=SCANNERS)
    overlaps = [f for f in findings if f.rule_id == "STK-GGUF-009"]
    assert len(overlaps) == 2
    assert all("inside 'a'" in f.detail for f in overlaps)


def test_a_tensor_name_longer_than_ggml_allows_is_reported() -> None:
    data = GgufFile().tensor("x" * 64, [8], F32).build()
    assert ("STK-GGUF-010", "medium") in kinds(scan_bytes(data, scanners=SCANNERS))


def test_a_flaw_repeated_many_times_is_listed_a_few_times() -> None:
    model = GgufFile()
    for index in range(200):
        model.tensor(f"t{index}", [8], F32)
    findings = scan_bytes(model.build(offsets=[0] * 200), scanners=SCANNERS)
    overlaps = [f for f in findings if f.rule_id == "STK-GGUF-009"]
    assert len(overlaps) == 21
    assert "not listed" in overlaps[-1].detail


def test_an_unsupported_version_is_an_error() -> None:
    (error,) = scan_bytes(b"GGUF" + struct.pack("<I", 7) + b"\0" * 32, scanners=SCANNERS)
    assert error.is_error
    assert "version" in error.detail


# -- safetensors: writing by hand, per the specification ------------------------------------


def safetensors_file(
    tensors: dict[str, tuple[str, list[int], bytes]],
    *,
    metadata: dict[str, object] | None = None,
    header: dict[str, object] | None = None,
    trailing: bytes = b"",
) -> bytes:
    """The reference layout: u64 header length, JSON padded with spaces to 8 bytes, then
    the tensors back to back in header order."""
    if header is None:
        header = {}
        if metadata is not None:
            header["__metadata__"] = metadata
        position = 0
        for name, (dtype, shape, data) in tensors.items():
            header[name] = {
                "dtype": dtype,
                "shape": shape,
                "data_offsets": [position, position + len(data)],
            }
            position += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    body = b"".join(data for _, _, data in tensors.values())
    return struct.pack("<Q", len(text)) + text + body + trailing


def realistic_safetensors() -> bytes:
    f32 = np.arange(12, dtype=np.float32).reshape(3, 4)
    bf16 = (f32.view(np.uint32) >> 16).astype(np.uint16)
    return safetensors_file(
        {
            "model.embed.weight": ("F32", [3, 4], f32.tobytes()),
            "model.embed.bf16": ("BF16", [3, 4], bf16.tobytes()),
            "model.norm.f16": ("F16", [4], np.ones(4, np.float16).tobytes()),
            "model.ids": ("I64", [2, 2], np.arange(4, dtype=np.int64).tobytes()),
            "model.mask": ("BOOL", [3], np.array([True, False, True]).tobytes()),
            "model.empty": ("F32", [0, 4], b""),
            "model.scalar": ("F64", [], np.float64(1.5).tobytes()),
            "model.fp8": ("F8_E4M3", [4], bytes(4)),
            "model.fp4": ("F4", [2, 4], bytes(4)),  # two values per byte
        },
        metadata={"format": "pt", "total_size": "123"},
    )


def scan_blob(data: bytes) -> Blob:
    return Blob("x", data)


# -- safetensors: benign ----------------------------------------------------------------------


def test_a_realistic_safetensors_file_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(realistic_safetensors())
    assert safetensors.SCANNER.detect(scan_blob(path.read_bytes()))
    assert scan_file(path, scanners=SCANNERS) == []


def test_an_empty_safetensors_file_is_clean() -> None:
    assert scan_bytes(safetensors_file({}), scanners=SCANNERS) == []


def test_a_gigabyte_safetensors_file_is_checked_without_reading_its_tensors(
    tmp_path: Path,
) -> None:
    size = 1 << 30
    head = safetensors_file(
        {}, header={"w": {"dtype": "F32", "shape": [size // 4], "data_offsets": [0, size]}}
    )
    path = tmp_path / "big.safetensors"
    with path.open("wb") as handle:
        handle.write(head)
        handle.truncate(len(head) + size)  # sparse: the tensor bytes are never written
    tracemalloc.start()
    try:
        findings = scan_file(path, scanners=SCANNERS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert findings == []
    assert peak < 1 << 20


# -- safetensors: malformed ------------------------------------------------------------------


def _one(
    dtype: str = "F32", shape: list[object] | None = None, offsets: list[object] | None = None
) -> dict[str, object]:
    shape = [2] if shape is None else shape
    offsets = [0, 8] if offsets is None else offsets
    return {"w": {"dtype": dtype, "shape": shape, "data_offsets": offsets}}


MALFORMED: dict[str, tuple[bytes, str, str]] = {
    "unknown dtype": (safetensors_file({}, header=_one("Q4")) + bytes(8), "STK-ST-004", "medium"),
    "negative dim": (
        safetensors_file({}, header=_one(shape=[-2])) + bytes(8),
        "STK-ST-005",
        "medium",
    ),
    "float dim": (
        safetensors_file({}, header=_one(shape=[2.0])) + bytes(8),
        "STK-ST-005",
        "medium",
    ),
    "bool dim": (
        safetensors_file({}, header=_one(shape=[True, 2])) + bytes(8),
        "STK-ST-005",
        "medium",
    ),
    "shape mismatch": (
        safetensors_file({}, header=_one(shape=[3])) + bytes(8),
        "STK-ST-006",
        "medium",
    ),
    "reversed offsets": (
        safetensors_file({}, header=_one(offsets=[8, 0])) + bytes(8),
        "STK-ST-006",
        "medium",
    ),
    "three offsets": (
        safetensors_file({}, header=_one(offsets=[0, 4, 8])) + bytes(8),
        "STK-ST-006",
        "medium",
    ),
    "past the end": (
        safetensors_file({}, header=_one(shape=[4], offsets=[0, 16])) + bytes(8),
        "STK-ST-007",
        "medium",
    ),
    "odd F4 count": (
        safetensors_file({}, header=_one("F4", [3], [0, 2])) + bytes(2),
        "STK-ST-006",
        "medium",
    ),
    "gap": (safetensors_file({}, header=_one(offsets=[8, 16])) + bytes(16), "STK-ST-009", "low"),
    "trailing bytes": (
        safetensors_file({}, header=_one()) + bytes(8) + b"#!payload",
        "STK-ST-009",
        "low",
    ),
    "metadata not strings": (
        safetensors_file({}, header={"__metadata__": {"a": 1}}),
        "STK-ST-003",
        "medium",
    ),
    "metadata not an object": (
        safetensors_file({}, header={"__metadata__": ["a"]}),
        "STK-ST-003",
        "medium",
    ),
    "tensor not an object": (safetensors_file({}, header={"w": 3}), "STK-ST-002", "medium"),
    "extra field": (
        safetensors_file(
            {}, header={"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "code": "x"}}
        )
        + b"\0",
        "STK-ST-002",
        "low",
    ),
    "huge shape": (
        safetensors_file({}, header=_one(shape=[1 << 62] * 64, offsets=[0, 8])) + bytes(8),
        "STK-ST-006",
        "medium",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_headers_are_findings(case: str) -> None:
    data, rule, severity = MALFORMED[case]
    assert safetensors.SCANNER.detect(scan_blob(data))
    findings = scan_bytes(data, scanners=SCANNERS)
    assert (rule, severity) in kinds(findings), kinds(findings)
    assert not errors(findings)


def test_overlapping_tensors_are_medium() -> None:
    header = {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
        "empty": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]},
    }
    findings = scan_bytes(safetensors_file({}, header=header) + bytes(16), scanners=SCANNERS)
    assert kinds(findings) == [("STK-ST-008", "medium")]
    assert "'b'" in findings[0].detail
    assert "'a'" in findings[0].detail


def test_a_repeated_tensor_name_is_medium() -> None:
    text = (
        b'{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        b'"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}'
    )
    data = struct.pack("<Q", len(text)) + text + b"\0\0"
    findings = scan_bytes(data, scanners=SCANNERS)
    assert ("STK-ST-010", "medium") in kinds(findings)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (struct.pack("<Q", 50) + b"{" + b" " * 10, "past the end"),
        (struct.pack("<Q", 200_000_000) + b"{" + b" " * 10, "past the end"),
        (struct.pack("<Q", 4) + b"{\xff\xfe}", "not UTF-8"),
        (struct.pack("<Q", 6) + b'{"a":}', "not JSON"),
        (struct.pack("<Q", 12) + b'{"a":NaN}   ', "not JSON"),
        (struct.pack("<Q", 8) + b"{}garbag", "not JSON"),
    ],
)
def test_headers_that_cannot_be_read_are_errors(data: bytes, reason: str) -> None:
    findings = scan_bytes(data, scanners=SCANNERS)
    assert errors(findings)
    assert reason in errors(findings)[0].detail


def test_an_oversized_header_length_is_also_a_finding() -> None:
    findings = scan_bytes(struct.pack("<Q", 1 << 31) + b"{}", scanners=SCANNERS)
    assert ("STK-ST-001", "medium") in kinds(findings)


def test_a_header_nested_too_deeply_is_an_error() -> None:
    text = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    (error,) = scan_bytes(struct.pack("<Q", len(text)) + text, scanners=SCANNERS)
    assert error.is_error


def test_detection_leaves_other_formats_alone() -> None:
    for data in (
        b'        {"learner": {}}',
        b"GGUF" + bytes(20),
        b"PK\x03\x04" + bytes(30),
        b"\x80\x04\x95" + bytes(20),
        struct.pack("<Q", 10) + b"[]",
        b"",
        b"{",
    ):
        assert not safetensors.SCANNER.detect(scan_blob(data))
        assert not gguf.SCANNER.detect(scan_blob(data)) or data.startswith(b"GGUF")


def test_an_absurd_header_length_is_still_read_as_safetensors() -> None:
    data = struct.pack("<Q", 1 << 62) + b'{"a": {"dtype": "F32", "shape": [1]}}'
    found = scan_bytes(data, "x.safetensors", scanners=[safetensors.SCANNER])
    assert any(f.rule_id == "STK-ST-001" for f in found)
