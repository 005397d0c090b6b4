"""The format scanners, in detection order: the first whose `detect` accepts a blob scans
it. Containers come first (their members are dispatched again), then code-bearing formats,
then data-only formats. Each module exposes `SCANNER`.
"""

from __future__ import annotations

from importlib import import_module

from stockade.model.scan.interface import FormatScanner

__all__ = ["FORMAT_MODULES", "load_scanners"]

FORMAT_MODULES: tuple[str, ...] = (
    # containers: their members come back through the dispatcher
    "zip",
    "tar",
    "sevenzip",
    "compressed",
    # formats with a fixed magic or a self-describing header
    "gguf",
    "safetensors",
    "hdf5",
    "numpy",
    "catboost",
    # pickle-based: legacy torch files are pickles with a torch magic number first
    "torch_legacy",
    "pickle",
    # code and configuration that loaders execute or interpret
    "torchscript",
    "hf_config",  # before keras: keras claims any JSON with a nested class_name
    "keras",
    # data-only text and protobuf formats, last: their detection is structural
    "xgboost",
    "lightgbm",
    "tf_savedmodel",
    "onnx",
)


def load_scanners() -> list[FormatScanner]:
    return [import_module(f"{__name__}.{name}").SCANNER for name in FORMAT_MODULES]
