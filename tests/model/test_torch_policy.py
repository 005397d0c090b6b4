"""What real torch writes must stay clean: TorchScript's typed-list helpers and archive
classes, sparse layouts, and protocol-0 storage ids; their look-alikes must not."""

from __future__ import annotations

from stockade.core.findings import Severity
from stockade.model.scan.engine import scan_bytes
from stockade.model.scan.formats import pickle as pickle_format

SCANNERS = [pickle_format.SCANNER]


def _call(module: str, name: str, arg: bytes = b"]\x94") -> bytes:
    """Protocol 4: GLOBAL module name, one list argument, REDUCE, STOP."""
    return (
        b"\x80\x04c" + f"{module}\n{name}\n".encode() + arg + b"\x85R."  # (arg,) then call
    )


def _worst(data: bytes) -> Severity | None:
    found = [f.severity for f in scan_bytes(data, "x.pkl", scanners=SCANNERS) if not f.is_error]
    return max(found, default=None)


def test_torchscript_and_sparse_helpers_are_allowed() -> None:
    for module, name in [
        ("torch.jit._pickle", "build_intlist"),
        ("torch.jit._pickle", "build_tensorlist"),
        ("torch.jit._pickle", "restore_type_tag"),
        ("torch.serialization", "_get_layout"),
    ]:
        worst = _worst(_call(module, name))
        assert worst is None or worst < Severity.MEDIUM, (module, name, worst)


def test_archive_classes_are_constructible_but_not_callable_with_arguments() -> None:
    built = b"\x80\x02c__torch__.torch.nn.modules.linear\nLinear\n)\x81}b."  # NEWOBJ + BUILD
    worst = _worst(built)
    assert worst is None or worst < Severity.MEDIUM


def test_look_alikes_stay_dangerous() -> None:
    assert _worst(_call("torch.jit", "load", b"X\x04\x00\x00\x00m.pt")) is Severity.CRITICAL
    assert _worst(_call("torch.serialization", "load", b"X\x01\x00\x00\x00f")) is Severity.CRITICAL


def test_protocol_zero_storage_ids_are_torch_references() -> None:
    text_id = b"P('storage', <class 'torch.FloatStorage'>, '0', 'cpu', 4)\n."
    worst = _worst(text_id)
    assert worst is None or worst < Severity.MEDIUM
    other = _worst(b"Pfile:///etc/passwd\n.")
    assert other is Severity.MEDIUM


def test_common_checkpoint_extras_are_allowed() -> None:
    for module, name in [
        ("argparse", "Namespace"),
        ("pandas", "StringDtype"),
        ("pandas.core.internals.managers", "BlockManager"),
        ("torch", "ScriptObject"),
    ]:
        worst = _worst(_call(module, name))
        assert worst is None or worst < Severity.MEDIUM, (module, name, worst)
