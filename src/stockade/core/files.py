"""Atomic, private file output: everything Stockade writes to disk (keys, reports,
checkpoints, decrypted objects) goes through here, so a reader sees the old file or the
whole new one, never half of it, and a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from stockade.core.errors import InvalidInput

__all__ = ["atomic_output", "write_atomic"]


@contextmanager
def atomic_output(
    path: str | os.PathLike[str], *, mode: int = 0o600, what: str = "output"
) -> Iterator[BinaryIO]:
    """A temp file beside `path` (created with `mode`), fsynced and renamed onto `path`
    only if the block succeeds. Problems with the destination raise `InvalidInput` naming
    `what` (e.g. "report", "checkpoint")."""
    target = Path(path)
    if target.is_dir():
        raise InvalidInput(f"cannot write {what} to {target}: it is a directory")
    folder = target.parent
    if not folder.is_dir():
        raise InvalidInput(
            f"cannot write {what} to {target}: {what} folder {folder} does not exist"
        )
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".partial")
    except OSError as exc:
        raise InvalidInput(f"cannot write {what} to {target}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InvalidInput(f"cannot write {what} to {target}: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(
    path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o600, what: str = "output"
) -> None:
    """Write `data` (text is UTF-8 encoded) atomically; see `atomic_output`."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_output(path, mode=mode, what=what) as handle:
        handle.write(payload)
