"""The format scanners, in detection order: the first whose `detect` accepts a blob scans
it. Containers come first (their members are dispatched again), then code-bearing formats,
then data-only formats. Each module exposes `SCANNER`.
"""

from __future__ import annotations

from importlib import import_module

from stockade.model.scan.interface import FormatScanner

__all__ = ["FORMAT_MODULES", "load_scanners"]

FORMAT_MODULES: tuple[str, ...] = ()


def load_scanners() -> list[FormatScanner]:
    return [import_module(f"{__name__}.{name}").SCANNER for name in FORMAT_MODULES]
