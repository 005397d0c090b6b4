"""Fuzzing the pickle interpreter and scanner: random and mutated streams never raise, never
hang, keep the work bounded, and never lose a finding made before the stream breaks.

Every input here is only ever scanned, never unpickled.
"""

from __future__ import annotations

import collections
import os
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.core.findings import Finding, Severity
from stockade.model.scan.formats.pickle import SCANNER, scan_pickle
from stockade.model.scan.interface import Blob, Limits, ScanContext
from stockade.model.scan.pickle_vm import interpret, looks_like_pickle

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Reduce:
    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.func, self.args


def _dispatch(blob: Blob, ctx: ScanContext) -> None:
    """Nested members go straight to the pickle scanner, so an exception would surface
    here instead of being turned into an error finding by the engine."""
    if SCANNER.detect(blob):
        SCANNER.scan(blob, ctx)


def scan_raw(data: bytes, limits: Limits | None = None) -> list[Finding]:
    ctx = ScanContext(limits=limits or Limits())
    ctx.dispatch = _dispatch
    scan_pickle(Blob("fuzz.pkl", data), ctx)
    for finding in ctx.findings:
        assert isinstance(finding, Finding)
        assert "internal error" not in finding.detail, finding.detail
        offset = finding.location.offset
        if offset is not None and finding.location.member is None:
            assert 0 <= offset <= len(data)
    return ctx.findings


def _corpus() -> list[bytes]:
    values: list[Any] = [
        {"weights": [1.0, 2.0], "name": "model", "shape": (2, 3)},
        collections.OrderedDict(a=np.arange(6, dtype="f4").reshape(2, 3)),
        np.array([1, "a", None], dtype=object),
        {1, 2, frozenset({3})},
        [b"bytes", bytearray(b"ba"), 2**70, -1.5, None, True],
        Reduce(os.system, "echo fuzz"),
        [Reduce(pickle.loads, pickle.dumps(Reduce(os.system, "id"), protocol=2))],
    ]
    return [pickle.dumps(v, protocol=p) for v in values for p in range(6)]


CORPUS = _corpus()


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_never_raise(data: bytes) -> None:
    looks_like_pickle(data)
    result = interpret(data)
    assert 0 <= result.end <= len(data)
    scan_raw(data)


@FUZZ
@given(st.binary(min_size=1, max_size=512))
def test_random_bytes_after_a_pickle_header_never_raise(tail: bytes) -> None:
    for header in (b"\x80\x02", b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00", b"(", b"c"):
        scan_raw(header + tail)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete", "splice"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[position] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[position:]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        else:
            other = draw(st.sampled_from(CORPUS))
            data[position:] = other[draw(st.integers(0, len(other))) :]
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_pickles_never_raise(data: bytes) -> None:
    looks_like_pickle(data)
    scan_raw(data)


@FUZZ
@given(mutated(), st.integers(1, 200))
def test_work_is_bounded_by_the_opcode_limit(data: bytes, limit: int) -> None:
    result = interpret(data, max_ops=limit)
    assert result.ops <= max(limit, 0) + 65536
    scan_raw(data, Limits(max_pickle_ops=limit))


PAYLOAD = pickle.dumps(Reduce(os.system, "echo fuzz"), protocol=0)
CALL_AT = PAYLOAD.rindex(b"R")


@FUZZ
@given(st.integers(CALL_AT + 1, len(PAYLOAD)), st.binary(max_size=64))
def test_findings_before_a_break_are_never_lost(cut: int, junk: bytes) -> None:
    findings = scan_raw(PAYLOAD[:cut] + junk)
    critical = [f for f in findings if f.severity == Severity.CRITICAL and not f.is_error]
    assert critical
    assert critical[0].location.offset == CALL_AT


@pytest.mark.parametrize(
    "data",
    [
        b"(" * 400_000,
        b"]" * 300_000 + b".",
        b"\x80\x04" + b"\x8e" + b"\xff" * 8,  # an 18-exabyte BINBYTES8
        b"\x80\x04" + b"\x95" + b"\xff" * 8 + b"N.",  # a frame larger than the stream
        b"I" + b"9" * 100_000 + b"\n.",
        b"\x8b\xff\xff\xff\x7f",  # LONG4 of 2 GiB
        b"X\xff\xff\xff\xff",
        b"\x80\x02" + b"]q\x00" + b"h\x00" * 200_000 + b".",
        b"\x80\x02" + b"(" * 1000 + b"t" * 999 + b".",
    ],
)
def test_hostile_shapes_are_bounded(data: bytes) -> None:
    findings = scan_raw(data)
    assert all(isinstance(f, Finding) for f in findings)


def test_many_distinct_globals_are_refused() -> None:
    body = b"".join(b"cm%d\nf\n0" % i for i in range(10_050))
    findings = scan_raw(b"\x80\x02" + body + b"N.")
    errors = [f for f in findings if f.is_error]
    assert errors
    assert "distinct globals" in errors[0].detail


def test_the_same_nested_bytes_are_scanned_once() -> None:
    inner = pickle.dumps(Reduce(os.system, "id"), protocol=2)
    loads = b"cpickle\nloads\n"
    data = b"\x80\x02B" + len(inner).to_bytes(4, "little") + inner + b"q\x00"
    data += (loads + b"h\x00\x85R0") * 50 + b"N."
    findings = scan_raw(data)
    nested = {f.location.member for f in findings if f.location.member}
    assert len(nested) == 1
