"""Tar archives (model bundles, PyTorch's oldest checkpoint format): headers read with the
stdlib over the bytes in place, links and devices reported, members dispatched unread.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from typing import ClassVar

from stockade.core.findings import Severity
from stockade.model.scan.formats import torch_legacy
from stockade.model.scan.formats.compressed import all_zero
from stockade.model.scan.formats.zip import check_member_name, report_duplicates, report_too_many
from stockade.model.scan.interface import Blob, ScanContext

__all__ = ["SCANNER", "TarArchive", "ViewFile", "is_tar_header"]

LINK_RULE = "STK-ARC-006"
DEVICE_RULE = "STK-ARC-008"
TRAILING_RULE = "STK-TAR-001"

_BLOCK = 512
_CHUNK = 1 << 20
_ARCHIVE_REFS = ("CWE-22", "CWE-59", "OWASP-LLM03:2025")
# PyTorch before 0.4 saved a tar of four members; two are not plain pickles.
_TORCH_MEMBERS = frozenset({"sys_info", "pickle", "storages", "tensors"})


class ViewFile(io.RawIOBase):
    """A read-only, seekable file over bytes or a memoryview, without copying them."""

    def __init__(self, data: bytes | memoryview) -> None:
        super().__init__()
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        # RawIOBase.read would allocate the size asked for: a hostile header may ask for
        # gigabytes. Never hand out more than is there.
        left = max(0, len(self._view) - self._pos)
        count = left if size is None or size < 0 else min(size, left)
        data = bytes(self._view[self._pos : self._pos + count])
        self._pos += count
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        target = memoryview(buffer).cast("B")
        count = max(0, min(len(target), len(self._view) - self._pos))
        target[:count] = self._view[self._pos : self._pos + count]
        self._pos += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._pos + offset
        elif whence == io.SEEK_END:
            position = len(self._view) + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if position < 0:
            raise ValueError("negative seek position")
        self._pos = position
        return position

    def tell(self) -> int:
        return self._pos


def is_tar_header(block: bytes) -> bool:
    """A 512-byte tar header whose checksum holds (every tar dialect has one)."""
    if len(block) < _BLOCK or not block[:100].strip(b"\x00"):
        return False
    field = block[148:156]
    try:
        declared = int(field.replace(b"\x00", b" ").strip() or b"-1", 8)
    except ValueError:
        return False
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:_BLOCK])
    signed = unsigned - sum(256 for b in block[:148] + block[156:_BLOCK] if b > 127)
    return declared in (unsigned, signed)


class TarArchive:
    """An uncompressed tar archive (compressed ones are unpacked by the stream scanner first)."""

    name: ClassVar[str] = "tar"

    def detect(self, blob: Blob) -> bool:
        return is_tar_header(bytes(memoryview(blob.data)[:_BLOCK]))

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        view = memoryview(blob.data).cast("B")
        members: list[tuple[str, memoryview, int]] = []
        names: list[str] = []
        end = 0
        try:
            archive = tarfile.TarFile(
                fileobj=ViewFile(view), mode="r", encoding="utf-8", errors="replace"
            )
        except (tarfile.TarError, EOFError, ValueError, OSError) as exc:
            ctx.error(blob, f"tar archive cannot be read: {exc}")
            return
        with archive:
            while True:
                try:
                    info = archive.next()
                except (tarfile.TarError, EOFError, ValueError, OSError, UnicodeError) as exc:
                    ctx.error(blob, f"tar archive damaged after {len(names)} members: {exc}")
                    end = -1
                    break
                if info is None:
                    end = archive.offset
                    break
                if len(names) >= ctx.limits.max_members:
                    report_too_many(ctx, blob, f"over {ctx.limits.max_members}")
                    end = -1
                    break
                names.append(info.name)
                data = self._member(blob, ctx, view, info)
                if data is not None:
                    members.append((info.name, data, info.offset))
        report_duplicates(ctx, blob, [name for name in names if not name.endswith("/")])
        torch_layout = {"pickle", "storages", "tensors"} <= set(names) and set(names) <= (
            _TORCH_MEMBERS
        )
        for name, data, offset in members:
            if torch_layout and name in ("storages", "tensors"):
                torch_legacy.scan_tar_member(blob, ctx, name, data, offset)
            else:
                ctx.scan_member(blob, name, data)
        if end > 0:
            self._trailing(blob, ctx, view, end)

    @staticmethod
    def _member(
        blob: Blob, ctx: ScanContext, view: memoryview, info: tarfile.TarInfo
    ) -> memoryview | None:
        """Report what the header says; return the member's bytes if it has any."""
        check_member_name(ctx, blob, info.name, offset=info.offset)
        if info.issym() or info.islnk():
            _report_link(blob, ctx, info)
            return None
        if info.ischr() or info.isblk() or info.isfifo():
            ctx.report(
                blob,
                DEVICE_RULE,
                "Archive holds a device or pipe",
                Severity.HIGH,
                offset=info.offset,
                detail=f"member {info.name!r} is a {'pipe' if info.isfifo() else 'device'}: "
                "extracting it creates a special file",
                snippet=info.name,
                remediation="Do not extract this archive; a model bundle holds regular files.",
                references=_ARCHIVE_REFS,
                category="archive",
            )
            return None
        if not info.isreg():
            return None
        if info.issparse():
            ctx.error(blob, f"sparse member {info.name!r} not inspected", offset=info.offset)
            return None
        start = info.offset_data
        available = max(0, len(view) - start)
        if info.size > available:
            ctx.error(
                blob,
                f"member {info.name!r} truncated: {info.size} bytes declared, {available} present",
                offset=info.offset,
            )
        return view[start : start + min(info.size, available)]

    @staticmethod
    def _trailing(blob: Blob, ctx: ScanContext, view: memoryview, end: int) -> None:
        # Past the end-of-archive blocks and the record padding, which are zeros.
        end += _zero_run(view[end:])
        rest = view[end:]
        if not rest:
            return
        ctx.report(
            blob,
            TRAILING_RULE,
            "Data after the end of the tar archive",
            Severity.LOW,
            offset=end,
            detail=f"{len(rest)} bytes follow the end-of-archive marker; inspected separately",
            references=_ARCHIVE_REFS,
            category="archive-evasion",
        )
        ctx.scan_member(blob, "<data after archive>", rest)


def _zero_run(view: memoryview) -> int:
    """How many zero bytes `view` starts with."""
    run = 0
    while run < len(view):
        chunk = view[run : run + _CHUNK]
        if all_zero(chunk):
            run += len(chunk)
            continue
        return run + len(chunk) - len(bytes(chunk).lstrip(b"\x00"))
    return run


def _report_link(blob: Blob, ctx: ScanContext, info: tarfile.TarInfo) -> None:
    target = info.linkname.replace("\\", "/")
    kind = "symbolic link" if info.issym() else "hard link"
    base = posixpath.dirname(info.name) if info.issym() else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    escapes = target.startswith("/") or resolved == ".." or resolved.startswith("../")
    ctx.report(
        blob,
        LINK_RULE,
        f"Archive holds a {kind}" + (" out of the extraction directory" if escapes else ""),
        Severity.HIGH if escapes else Severity.MEDIUM,
        offset=info.offset,
        detail=f"member {info.name!r} links to {info.linkname!r}",
        snippet=f"{info.name} -> {info.linkname}",
        remediation="Do not extract this archive; a model bundle holds regular files.",
        references=_ARCHIVE_REFS,
        category="archive",
    )


SCANNER = TarArchive()
