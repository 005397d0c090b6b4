"""Run the format scanners over files and directories: detect each blob's format by
content, dispatch nested members, bound the work, and scan many files in parallel.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from stockade.core import clock
from stockade.core.findings import Finding, ScanResult, Severity
from stockade.model.scan.formats import load_scanners
from stockade.model.scan.interface import Blob, FormatScanner, Limits, ScanContext

__all__ = [
    "SCANNER_NAME",
    "UNRECOGNISED_RULE",
    "iter_files",
    "make_dispatch",
    "scan_bytes",
    "scan_file",
    "scan_paths",
]

SCANNER_NAME = "model.scan"
UNRECOGNISED_RULE = "STK-MS-000"
PARALLEL_BYTES = 64 << 20  # below this much data, scan in this process


def make_dispatch(scanners: Sequence[FormatScanner]) -> Callable[[Blob, ScanContext], None]:
    """Detect a blob's format with the first scanner that accepts it and run that scanner.

    A scanner that raises is a could-not-inspect error for that blob, never a crash, and
    never loses what was already reported.
    """

    def dispatch(blob: Blob, ctx: ScanContext) -> None:
        for scanner in scanners:
            try:
                accepted = scanner.detect(blob)
            except Exception as exc:  # a detector must not take the scan down
                ctx.error(blob, f"{scanner.name} detection failed: {type(exc).__name__}: {exc}")
                return
            if not accepted:
                continue
            ctx.formats.append(scanner.name)
            try:
                scanner.scan(blob, ctx)
            except RecursionError:
                ctx.error(blob, f"{scanner.name}: structure nested too deeply to inspect")
            except MemoryError:
                ctx.error(blob, f"{scanner.name}: too large to inspect in memory")
            except Exception as exc:
                ctx.error(blob, f"{scanner.name} parser failed: {type(exc).__name__}: {exc}")
            return
        if len(blob.data) == 0:
            return
        ctx.report(
            blob,
            UNRECOGNISED_RULE,
            "Not a recognised model format; contents not inspected",
            Severity.INFO,
            detail=f"{len(blob.data)} bytes that no format scanner recognised",
            remediation="If this file is loaded as a model, convert it to a supported format.",
            references=(),
            category="coverage",
        )

    return dispatch


_default_scanners: list[FormatScanner] | None = None


def _scanners() -> list[FormatScanner]:
    global _default_scanners
    if _default_scanners is None:
        _default_scanners = load_scanners()
    return _default_scanners


def scan_bytes(
    data: bytes | memoryview,
    path: str = "<bytes>",
    *,
    limits: Limits | None = None,
    scanners: Sequence[FormatScanner] | None = None,
    base: str | None = None,
) -> list[Finding]:
    """Scan one in-memory artifact; returns its findings (errors included)."""
    ctx = ScanContext(limits=limits or Limits())
    ctx.dispatch = make_dispatch(scanners if scanners is not None else _scanners())
    ctx.dispatch(Blob(path, data, base=base), ctx)
    return ctx.findings


def scan_file(
    path: str | os.PathLike[str],
    *,
    limits: Limits | None = None,
    scanners: Sequence[FormatScanner] | None = None,
) -> list[Finding]:
    """Scan one file through a read-only memory map (large files are never copied)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                return scan_bytes(b"", name, limits=limits, scanners=scanners)
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            view = memoryview(mapped)
            try:
                return scan_bytes(
                    view,
                    name,
                    limits=limits,
                    scanners=scanners,
                    base=os.path.dirname(os.path.abspath(name)),
                )
            finally:
                _close_map(view, mapped)
    except OSError as exc:
        return [Finding.error(name, f"cannot read: {exc.strerror or exc}")]


def _close_map(view: memoryview, mapped: mmap.mmap) -> None:
    """Release the map. If a scanner left a slice of it in a reference cycle (an exception
    traceback, say), leave the map to the garbage collector rather than pay for a full
    collection per file: the file descriptor is already closed."""
    view.release()
    with contextlib.suppress(BufferError):
        mapped.close()


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[tuple[str, str | None]]:
    """Files to scan, as (path, problem): directories are walked in a stable order;
    symbolic links are not followed (a link out of a model folder is reported)."""
    for given in paths:
        path = Path(given)
        if path.is_symlink():
            yield os.fspath(path), "is a symbolic link; not followed"
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    full = os.path.join(root, name)
                    if os.path.islink(full):
                        yield full, "is a symbolic link; not followed"
                    else:
                        yield full, None
                for name in list(dirs):
                    if os.path.islink(os.path.join(root, name)):
                        dirs.remove(name)
                        yield os.path.join(root, name), "is a symbolic link; not followed"
        elif path.exists():
            yield os.fspath(path), None
        else:
            yield os.fspath(path), "does not exist"


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _scan_one(path: str, limits: Limits) -> list[dict[str, Any]]:
    return [finding.to_dict() for finding in scan_file(path, limits=limits)]


def scan_paths(
    paths: Sequence[str | os.PathLike[str]],
    *,
    jobs: int | None = None,
    limits: Limits | None = None,
    progress: Callable[[str], None] | None = None,
) -> ScanResult:
    """Scan files and directories; with several files and `jobs` > 1, in a process pool
    (by default one process per core once there are 64 MiB or more to read)."""
    limits = limits or Limits()
    started = clock.now()
    findings: list[Finding] = []
    todo: list[str] = []
    for path, problem in iter_files(paths):
        if problem:
            findings.append(Finding.error(path, problem))
        else:
            todo.append(path)
    if jobs is None:
        # A process pool costs more than it saves on a few small files.
        total = sum(_size(path) for path in todo)
        jobs = min(len(todo), os.cpu_count() or 1) if total >= PARALLEL_BYTES else 1
    workers = jobs
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            chunk = max(1, min(16, len(todo) // (workers * 4) or 1))
            for path, found in zip(
                todo, pool.map(_scan_one, todo, [limits] * len(todo), chunksize=chunk), strict=True
            ):
                findings.extend(Finding.from_dict(item) for item in found)
                if progress:
                    progress(path)
    else:
        for path in todo:
            findings.extend(scan_file(path, limits=limits))
            if progress:
                progress(path)
    return ScanResult(
        scanner=SCANNER_NAME,
        targets=tuple(os.fspath(p) for p in paths),
        findings=tuple(findings),
        started_at=started,
        finished_at=clock.now(),
    )
