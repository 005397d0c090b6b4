"""Dataset integrity: count the records of a dataset file and check a copy of a registered
dataset version against its recorded digest, leaving evidence for the lifecycle gates.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

from stockade.core.errors import InvalidInput

__all__ = ["count_records"]

_CSV_FIELD_LIMIT = 16 * 1024 * 1024


def count_records(path: Path, fmt: str) -> int | None:
    """Records in a CSV/TSV (header excluded, quoted newlines respected) or JSON-lines file,
    streamed; None for formats without a record structure."""
    fmt = fmt.lower()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
            if fmt in {"csv", "tsv"}:
                csv.field_size_limit(_CSV_FIELD_LIMIT)
                reader = csv.reader(text, delimiter="\t" if fmt == "tsv" else ",")
                rows = sum(1 for row in reader if row)
                return max(rows - 1, 0)
            if fmt in {"jsonl", "ndjson"}:
                return sum(1 for line in text if line.strip())
    except (OSError, csv.Error, EOFError) as exc:
        raise InvalidInput(f"{path}: cannot count records: {exc}") from exc
    return None
