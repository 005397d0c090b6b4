"""7z archives, through py7zr: declared sizes are checked against the limits before anything
is unpacked, encrypted archives are reported as uninspectable, members are dispatched.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, ClassVar

import py7zr
import py7zr.exceptions
from py7zr.io import Py7zIO, WriterFactory

from stockade.core.findings import Severity
from stockade.model.scan.formats.compressed import RATIO_FLOOR, report_bomb
from stockade.model.scan.formats.tar import LINK_RULE, ViewFile
from stockade.model.scan.formats.zip import check_member_name, report_duplicates, report_too_many
from stockade.model.scan.interface import Blob, ScanContext

__all__ = ["SCANNER", "SevenZipArchive"]

MAGIC = b"7z\xbc\xaf\x27\x1c"
_ENCRYPTED = "cannot inspect encrypted archive"


class _Member(Py7zIO):
    """One member unpacked into memory, up to `limit` bytes; handed on when complete."""

    def __init__(self, index: int, limit: int, done: Callable[[int, bytearray, bool], None]):
        self.index = index
        self.limit = limit
        self.done = done
        self.buffer = bytearray()
        self.exceeded = False
        self.position = 0

    def write(self, s: bytes | bytearray) -> int:
        room = self.limit - len(self.buffer)
        if len(s) > room:
            self.exceeded = True
        self.buffer += s[: max(room, 0)]
        return len(s)

    def read(self, size: int | None = None) -> bytes:
        end = len(self.buffer) if size is None or size < 0 else self.position + size
        data = bytes(self.buffer[self.position : end])
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.position, 2: len(self.buffer)}[whence]
        self.position = max(0, base + offset)
        return self.position

    def flush(self) -> None:
        return None

    def size(self) -> int:
        return len(self.buffer)

    def close(self) -> None:
        self.done(self.index, self.buffer, self.exceeded)
        self.buffer = bytearray()


class _Members(WriterFactory):
    def __init__(self, limit: int, done: Callable[[int, bytearray, bool], None]) -> None:
        self.limit = limit
        self.done = done

    def create(self, filename: str) -> Py7zIO:
        return _Member(int(filename.rsplit("-", 1)[-1]), self.limit, self.done)


class SevenZipArchive:
    """A 7z archive."""

    name: ClassVar[str] = "7z"

    def detect(self, blob: Blob) -> bool:
        return bytes(memoryview(blob.data)[:6]) == MAGIC

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        view = memoryview(blob.data).cast("B")
        limits = ctx.limits
        budget = min(
            limits.max_total_bytes - ctx.total_bytes,
            max(RATIO_FLOOR, limits.max_ratio * len(view)),
        )
        try:
            source = io.BufferedReader(ViewFile(view), buffer_size=1 << 20)
            archive = py7zr.SevenZipFile(source, mode="r", max_extract_size=budget)
        except py7zr.exceptions.PasswordRequired:
            ctx.error(blob, _ENCRYPTED)
            return
        except Exception as exc:  # py7zr raises many kinds on damaged headers
            ctx.error(blob, f"7z archive cannot be read: {type(exc).__name__}: {exc}")
            return
        with archive:
            self._scan(blob, ctx, archive, budget)

    def _scan(self, blob: Blob, ctx: ScanContext, archive: Any, budget: int) -> None:
        limits = ctx.limits
        if archive.needs_password():
            ctx.error(blob, _ENCRYPTED)
            return
        files = list(archive.files)
        if len(files) > limits.max_members:
            report_too_many(ctx, blob, len(files))
            files = files[: limits.max_members]
        names = [str(f.filename) for f in files]
        for name in names:
            check_member_name(ctx, blob, name)
        report_duplicates(ctx, blob, names)
        declared = sum(max(int(f.uncompressed or 0), 0) for f in files)
        if declared > budget:
            report_bomb(
                ctx,
                blob,
                f"the archive's {len(files)} members",
                budget,
                len(blob.data),
                why=f"the {budget} bytes this archive may unpack (declared: {declared})",
            )
            return
        big = [i for i, f in enumerate(files) if int(f.uncompressed or 0) > limits.max_member_bytes]
        for index in big:
            report_bomb(
                ctx, blob, f"member {names[index]!r}", limits.max_member_bytes,
                int(files[index].compressed or 0),
            )  # fmt: skip
        links: dict[int, bool] = {i: bool(f.is_symlink) for i, f in enumerate(files)}
        unpacked: dict[int, tuple[bytearray, bool]] = {}

        def done(index: int, data: bytearray, exceeded: bool) -> None:
            unpacked[index] = (data, exceeded)

        # Members are unpacked under neutral names: py7zr refuses to unpack names that
        # would escape a directory, and those are exactly the ones we want to see.
        try:
            for index, item in enumerate(files):
                item._file_info["filename"] = f"stockade-member-{index}"
            wanted = [f"stockade-member-{i}" for i in range(len(files)) if i not in big]
            archive.extract(targets=wanted, factory=_Members(limits.max_member_bytes, done))
        except py7zr.exceptions.PasswordRequired:
            ctx.error(blob, _ENCRYPTED)
        except Exception as exc:
            ctx.error(blob, f"7z archive damaged: {type(exc).__name__}: {exc}")
        for index in sorted(unpacked):
            data, exceeded = unpacked.pop(index)
            name = names[index]
            if exceeded:
                report_bomb(ctx, blob, f"member {name!r}", limits.max_member_bytes, 0)
            if links[index]:
                self._link(blob, ctx, name, bytes(data[:4096]))
            elif data:
                ctx.scan_member(blob, name, memoryview(data))

    @staticmethod
    def _link(blob: Blob, ctx: ScanContext, name: str, target: bytes) -> None:
        text = target.decode("utf-8", errors="replace")
        escapes = text.startswith(("/", "\\")) or ".." in text.replace("\\", "/").split("/")
        ctx.report(
            blob,
            LINK_RULE,
            "Archive holds a symbolic link"
            + (" out of the extraction directory" if escapes else ""),
            Severity.HIGH if escapes else Severity.MEDIUM,
            detail=f"member {name!r} links to {text!r}",
            snippet=f"{name} -> {text}",
            remediation="Do not extract this archive; a model bundle holds regular files.",
            references=("CWE-59", "OWASP-LLM03:2025"),
            category="archive",
        )


SCANNER = SevenZipArchive()
