"""The JSON report: `ScanResult.to_dict()` as a document with a `schema_version`, findings,
errors and summary counts; `ScanResult.from_dict` reads it back.
"""

from __future__ import annotations

import json
from typing import TextIO

from stockade.core.findings import ScanResult

__all__ = ["write_json"]


def write_json(result: ScanResult, stream: TextIO) -> None:
    encoding = (getattr(stream, "encoding", None) or "utf-8").lower().replace("-", "")
    document = result.to_dict()
    stream.write(json.dumps(document, indent=2, ensure_ascii=encoding != "utf8") + "\n")
    stream.flush()
