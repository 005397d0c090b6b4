"""Report writers: one per output format (console, JSON, SARIF 2.1.0), each turning a
ScanResult into text on a stream; `write_report` picks one by name.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import TextIO

from stockade.core.errors import InvalidInput
from stockade.core.findings import ScanResult
from stockade.core.report.console import write_console
from stockade.core.report.json_report import write_json
from stockade.core.report.sarif import to_sarif, write_sarif

__all__ = [
    "ReportFormat",
    "to_sarif",
    "write_console",
    "write_json",
    "write_report",
    "write_sarif",
]


class ReportFormat(StrEnum):
    console = "console"
    json = "json"
    sarif = "sarif"

    @classmethod
    def parse(cls, value: str | ReportFormat) -> ReportFormat:
        if isinstance(value, ReportFormat):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            names = ", ".join(member.value for member in cls)
            raise InvalidInput(f"unknown report format {value!r}: use one of {names}") from None


_WRITERS: dict[ReportFormat, Callable[[ScanResult, TextIO], None]] = {
    ReportFormat.console: write_console,
    ReportFormat.json: write_json,
    ReportFormat.sarif: write_sarif,
}


def write_report(result: ScanResult, fmt: ReportFormat | str, stream: TextIO) -> None:
    """Write `result` to `stream` in the format named by `fmt`."""
    _WRITERS[ReportFormat.parse(fmt)](result, stream)
