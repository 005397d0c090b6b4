"""Zip containers (PyTorch, TorchScript, .npz, zip-in-zip) read by our own parser, so tricks
zipfile refuses but loaders accept are inspected; also the member checks all archives share.
"""

from __future__ import annotations

import bz2
import lzma
import re
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from stockade.core.findings import Severity
from stockade.model.scan.formats.compressed import RATIO_FLOOR, inflate, report_bomb, unpack_cap
from stockade.model.scan.interface import Blob, ScanContext

__all__ = [
    "SCANNER",
    "ZipArchive",
    "check_member_name",
    "report_duplicates",
    "report_too_many",
]

TRAVERSAL_RULE = "STK-ARC-001"
ABSOLUTE_RULE = "STK-ARC-002"
ODD_NAME_RULE = "STK-ARC-003"
TOO_MANY_RULE = "STK-ARC-005"
DUPLICATE_RULE = "STK-ARC-007"

MISMATCH_RULE = "STK-ZIP-001"
CRC_RULE = "STK-ZIP-002"
FAKE_ENCRYPTION_RULE = "STK-ZIP-003"
NO_DIRECTORY_RULE = "STK-ZIP-004"
OVERLAP_RULE = "STK-ZIP-005"
PREPENDED_RULE = "STK-ZIP-006"
HIDDEN_RULE = "STK-ZIP-007"
TRAILING_RULE = "STK-ZIP-008"
GAP_RULE = "STK-ZIP-009"

_ARCHIVE_REFS = ("CWE-22", "OWASP-LLM03:2025")
_EVASION_REFS = ("CWE-434", "OWASP-LLM03:2025", "ATLAS:AML.T0010")

_LOCAL_SIG = b"PK\x03\x04"
_CENTRAL_SIG = b"PK\x01\x02"
_END_SIG = b"PK\x05\x06"
_END64_SIG = b"PK\x06\x06"
_END64_LOCATOR_SIG = b"PK\x06\x07"
_DESCRIPTOR_SIG = b"PK\x07\x08"

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_END = struct.Struct("<4sHHHHIIH")
_END64_LOCATOR = struct.Struct("<4sIQI")
_END64 = struct.Struct("<4sQHHIIQQQQ")
_MAX_COMMENT = 0xFFFF
_U32 = 0xFFFFFFFF

_FLAG_ENCRYPTED = 0x0001
_FLAG_DESCRIPTOR = 0x0008
_FLAG_STRONG_ENCRYPTION = 0x0040
_FLAG_UTF8 = 0x0800

_STORED, _DEFLATED, _BZIP2, _LZMA, _AES = 0, 8, 12, 14, 99
_METHOD_NAMES = {9: "deflate64", 93: "zstandard", 95: "xz", 98: "ppmd", _AES: "AES-encrypted"}

# Checking the CRC of a stored member reads all of it; raw tensor data can run to
# gigabytes and is never code, so stored members above this size are not checksummed.
_CRC_LIMIT = 64 << 20
_LOCAL_PATTERN = re.compile(re.escape(_LOCAL_SIG))
_DESCRIPTOR_PATTERN = re.compile(re.escape(_DESCRIPTOR_SIG))
# Raw tensor storage inside a PyTorch archive, relative to the archive's top folder.
_STORAGE_NAME = re.compile(r"(?:\.?data|constants|traced_inputs)/\d+")
_DRIVE = re.compile(r"^[A-Za-z]:")
_NPY_MAGIC = b"\x93NUMPY"


# -- member-name checks shared by every archive format -------------------------------------


def check_member_name(
    ctx: ScanContext, blob: Blob, name: str, *, offset: int | None = None
) -> None:
    """Report a member name that would write outside the extraction directory, or that
    different tools would read differently (backslashes, NUL or control characters)."""
    if "\x00" in name or any(ord(c) < 0x20 for c in name):
        ctx.report(
            blob,
            ODD_NAME_RULE,
            "Archive member name holds control characters",
            Severity.MEDIUM,
            offset=offset,
            detail=f"member {name!r}: tools truncate or print such names differently",
            snippet=repr(name),
            remediation="Rebuild the archive with plain member names.",
            references=_ARCHIVE_REFS,
            category="archive",
        )
    posix = name.replace("\\", "/")
    if "\\" in name:
        ctx.report(
            blob,
            ODD_NAME_RULE,
            "Archive member name uses backslashes",
            Severity.MEDIUM,
            offset=offset,
            detail=f"member {name!r}: Windows tools treat backslashes as directory separators",
            snippet=name,
            remediation="Rebuild the archive with '/' as the only separator.",
            references=_ARCHIVE_REFS,
            category="archive",
        )
    if posix.startswith("/") or _DRIVE.match(posix):
        ctx.report(
            blob,
            ABSOLUTE_RULE,
            "Archive member has an absolute path",
            Severity.HIGH,
            offset=offset,
            detail=f"member {name!r} would be written outside the extraction directory",
            snippet=name,
            remediation="Do not extract this archive; rebuild it with relative member names.",
            references=_ARCHIVE_REFS,
            category="archive",
        )
    if ".." in posix.split("/"):
        ctx.report(
            blob,
            TRAVERSAL_RULE,
            "Archive member path escapes the extraction directory",
            Severity.HIGH,
            offset=offset,
            detail=f"member {name!r} climbs out of the extraction directory with '..'",
            snippet=name,
            remediation="Do not extract this archive; rebuild it without '..' in member names.",
            references=_ARCHIVE_REFS,
            category="archive",
        )


def report_duplicates(ctx: ScanContext, blob: Blob, names: Iterable[str]) -> None:
    """Several members with one name: loaders differ on which one they read."""
    seen: set[str] = set()
    repeated: list[str] = []
    for name in names:
        if name in seen and name not in repeated:
            repeated.append(name)
        seen.add(name)
    if repeated:
        shown = ", ".join(repr(n) for n in repeated[:5])
        more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
        ctx.report(
            blob,
            DUPLICATE_RULE,
            "Archive holds several members with the same name",
            Severity.MEDIUM,
            detail=f"repeated: {shown}{more}; loaders disagree on which copy they read "
            "(every copy was inspected)",
            snippet=repeated[0],
            remediation="Rebuild the archive with one member per name.",
            references=_EVASION_REFS,
            category="archive",
        )


def report_too_many(ctx: ScanContext, blob: Blob, count: int | str) -> None:
    limit = ctx.limits.max_members
    ctx.report(
        blob,
        TOO_MANY_RULE,
        "Archive holds more members than the limit",
        Severity.MEDIUM,
        detail=f"{count} members, more than the limit of {limit}",
        remediation="Split the archive, or raise the member limit if this is expected.",
        references=("CWE-409",),
        category="resource-exhaustion",
    )
    ctx.error(blob, f"only the first {limit} members inspected")


# -- zip structures ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Local:
    """A local file header and where its data starts."""

    offset: int
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    raw_name: bytes
    data_offset: int


@dataclass(frozen=True)
class _Central:
    """A central directory record, its header offset already moved by any prepended data."""

    offset: int  # of the record itself
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    raw_name: bytes
    header_offset: int


@dataclass(frozen=True)
class _View:
    """One way a loader reads a member: where its bytes lie and how to unpack them.
    `label` names the member in findings (it marks the local header's reading)."""

    name: str
    label: str
    flags: int
    method: int
    crc: int | None
    csize: int
    usize: int | None
    data_offset: int
    header_offset: int
    method_data: bytes = b""


@dataclass(frozen=True)
class _End:
    offset: int  # of the end-of-central-directory record (the zip64 one when present)
    cd_start: int  # where the central directory actually lies
    cd_size: int
    count: int
    shift: int  # bytes prepended before the archive (cd_start - declared offset)
    tail: int  # end of the end record and its comment


def _decode_name(raw: bytes, flags: int) -> str:
    return raw.decode("utf-8" if flags & _FLAG_UTF8 else "cp437", errors="replace")


def _zip64_values(extra: bytes, wanted: int) -> list[int]:
    """The 8-byte values of the zip64 extra field (tag 0x0001), at most `wanted`."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        if tag == 0x0001:
            count = min(len(body) // 8, wanted)
            return list(struct.unpack_from(f"<{count}Q", body)) if count else []
        pos += 4 + size
    return []


def _read_local(view: memoryview, offset: int) -> _Local | None:
    if offset < 0 or offset + _LOCAL.size > len(view):
        return None
    sig, _v, flags, method, _t, _d, crc, csize, usize, nlen, xlen = _LOCAL.unpack_from(view, offset)
    if sig != _LOCAL_SIG:
        return None
    name_end = offset + _LOCAL.size + nlen
    data_offset = name_end + xlen
    if data_offset > len(view):
        return None
    if csize == _U32 or usize == _U32:
        values = _zip64_values(bytes(view[name_end:data_offset]), 2)
        # The spec puts both sizes there, unpacked first; some writers put only the one
        # that overflowed.
        if len(values) == 2:
            usize = values[0] if usize == _U32 else usize
            csize = values[1] if csize == _U32 else csize
        elif values and usize == _U32:
            usize = values[0]
        elif values:
            csize = values[0]
    return _Local(
        offset=offset,
        flags=flags,
        method=method,
        crc=crc,
        csize=csize,
        usize=usize,
        raw_name=bytes(view[offset + _LOCAL.size : name_end]),
        data_offset=data_offset,
    )


def _find_end(view: memoryview) -> _End | None:
    """The end-of-central-directory record, checked for consistency, or None."""
    size = len(view)
    window_start = max(0, size - _END.size - _MAX_COMMENT)
    window = bytes(view[window_start:])
    at = window.rfind(_END_SIG)
    while at >= 0:
        end = _check_end(view, window_start + at)
        if end is not None:
            return end
        at = window.rfind(_END_SIG, 0, at)
    return None


def _check_end(view: memoryview, offset: int) -> _End | None:
    size = len(view)
    if offset + _END.size > size:
        return None
    _sig, disk, cd_disk, on_disk, count, cd_size, cd_offset, comment = _END.unpack_from(
        view, offset
    )
    tail = min(offset + _END.size + comment, size)
    if disk != cd_disk or on_disk != count:
        return None
    record = offset
    locator = offset - _END64_LOCATOR.size
    if locator >= 0 and bytes(view[locator : locator + 4]) == _END64_LOCATOR_SIG:
        record = locator - _END64.size
        if record < 0 or bytes(view[record : record + 4]) != _END64_SIG:
            return None
        fields = _END64.unpack_from(view, record)
        count, cd_size, cd_offset = fields[7], fields[8], fields[9]
    cd_start = record - cd_size
    if cd_start < 0 or cd_offset > cd_start:
        return None
    if count and bytes(view[cd_start : cd_start + 4]) != _CENTRAL_SIG:
        return None
    return _End(record, cd_start, cd_size, count, cd_start - cd_offset, tail)


def _read_central(view: memoryview, end: _End, max_members: int) -> tuple[list[_Central], bool]:
    """The central directory records; the flag says the directory is damaged."""
    records: list[_Central] = []
    pos = end.cd_start
    stop = end.cd_start + end.cd_size
    while pos < stop and len(records) <= max_members:
        if pos + _CENTRAL.size > stop:
            return records, True
        fields = _CENTRAL.unpack_from(view, pos)
        if fields[0] != _CENTRAL_SIG:
            return records, True
        flags, method, crc, csize, usize = fields[3], fields[4], fields[7], fields[8], fields[9]
        nlen, xlen, clen, header_offset = fields[10], fields[11], fields[12], fields[16]
        name_end = pos + _CENTRAL.size + nlen
        extra_end = name_end + xlen
        if extra_end + clen > stop:
            return records, True
        wanted = [usize == _U32, csize == _U32, header_offset == _U32]
        if any(wanted):
            values = iter(_zip64_values(bytes(view[name_end:extra_end]), sum(wanted)))
            usize = next(values, usize) if wanted[0] else usize
            csize = next(values, csize) if wanted[1] else csize
            header_offset = next(values, header_offset) if wanted[2] else header_offset
        records.append(
            _Central(
                offset=pos,
                flags=flags,
                method=method,
                crc=crc,
                csize=csize,
                usize=usize,
                raw_name=bytes(view[pos + _CENTRAL.size : name_end]),
                header_offset=header_offset + end.shift,
            )
        )
        pos = extra_end + clen
    damaged = len(records) <= max_members and len(records) != end.count and end.count != 0xFFFF
    return records, damaged


def _descriptor_length(view: memoryview, at: int, crc: int | None, csize: int) -> int:
    """Length of the data descriptor that follows a member's data, 0 when there is none."""
    start = at + 4 if bytes(view[at : at + 4]) == _DESCRIPTOR_SIG else at
    head = start - at
    if start + 12 > len(view):
        return head
    dcrc, dcsize = struct.unpack_from("<II", view, start)
    if (crc is not None and dcrc != crc) or dcsize != csize & _U32:
        return head
    # 32-bit or zip64 sizes: the right one is followed by the next record's signature.
    for length in (12, 20):
        if bytes(view[start + length : start + length + 2]) == b"PK":
            return head + length
    return head + 12


# -- the scanner ---------------------------------------------------------------------------


class ZipArchive:
    """A zip archive: every member is checked and dispatched; what the central directory
    and the local headers say is compared, and both are inspected when they differ."""

    name: ClassVar[str] = "zip"

    def detect(self, blob: Blob) -> bool:
        view = memoryview(blob.data).cast("B")
        head = bytes(view[:8])
        if head[:4] in (_LOCAL_SIG, _END_SIG) or head == _DESCRIPTOR_SIG + _LOCAL_SIG:
            return True
        # Otherwise only a zip whose end record closes the file (something prepended to
        # it): a tar, or any file, whose last member happens to be a zip is not one.
        end = _find_end(view)
        return end is not None and end.tail == len(view) and bytes(view[257:262]) != b"ustar"

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        _ZipScan(blob, ctx).run()


@dataclass(frozen=True)
class _Unpacked:
    data: memoryview | None
    note: str | None = None  # why the data is missing or partial


class _ZipScan:
    """The state of one archive's scan."""

    def __init__(self, blob: Blob, ctx: ScanContext) -> None:
        self.blob = blob
        self.ctx = ctx
        self.view = memoryview(blob.data).cast("B")
        # All the members of one archive together may unpack to max_ratio times its size.
        self.archive_left = max(RATIO_FLOOR, ctx.limits.max_ratio * len(self.view))
        self.exhausted = False
        self.seen_regions: set[tuple[int, int, int]] = set()
        self.walked: set[int] = set()
        self.torch_prefixes: set[str] = set()

    # -- orchestration ---------------------------------------------------------------------

    def run(self) -> None:
        view = self.view
        limit = self.ctx.limits.max_members
        end = _find_end(view)
        centrals: list[_Central] = []
        damaged = end is None
        if end is not None:
            centrals, damaged = _read_central(view, end, limit)
            if len(centrals) > limit:
                report_too_many(self.ctx, self.blob, end.count or f"over {limit}")
                centrals = centrals[:limit]
        entries: list[tuple[_View, ...]] = []
        known: dict[int, int] = {}
        for record in centrals:
            pair = self._pair(record)
            if pair:
                entries.append(pair)
                start, stop = self._extent(pair[0])
                known[start] = max(stop, known.get(start, stop))
        walked: list[_View] = []
        if damaged:
            first = _LOCAL_PATTERN.search(view)
            if first is not None:
                walked = self._walk(first.start(), known)
            if not walked and not entries:
                self.ctx.error(self.blob, "no readable zip entries: the archive is damaged")
                return
            self.ctx.report(
                self.blob,
                NO_DIRECTORY_RULE,
                "Zip central directory is missing or damaged",
                Severity.MEDIUM,
                detail="Python's zipfile refuses this archive; entries were recovered from "
                f"their local headers ({len(walked)} beyond the directory's "
                f"{len(entries)}) and inspected",
                remediation="Rebuild the archive with a standard zip writer before use.",
                references=_EVASION_REFS,
                category="archive-evasion",
            )
        elif end is not None:
            covered = sorted([*known.items(), (end.cd_start, end.tail)])
            walked = self._hidden(covered, known)
            if end.tail < len(view):
                self._trailing(end.tail)
        entries.extend((item,) for item in walked)
        if entries:
            first_header = min(pair[0].header_offset for pair in entries)
            if first_header > 0:
                self._prepended(first_header)
        self._note_torch_layout(entries)
        self._overlaps(entries)
        for pair in entries:
            if self.exhausted:
                break
            self._scan_entry(pair)
        report_duplicates(self.ctx, self.blob, [pair[0].name for pair in entries])

    def _hidden(self, covered: list[tuple[int, int]], known: dict[int, int]) -> list[_View]:
        """Local entries the central directory does not list, found in the bytes between
        listed entries; other unaccounted bytes are reported and inspected."""
        found: list[_View] = []
        pos = 0
        for start, stop in covered:
            if start > pos:
                match = _LOCAL_PATTERN.search(self.view, pos, start)
                if match is not None:
                    hidden = self._walk(match.start(), known)
                    if hidden:
                        self.ctx.report(
                            self.blob,
                            HIDDEN_RULE,
                            "Zip entries missing from the central directory",
                            Severity.MEDIUM,
                            offset=match.start(),
                            detail=f"{len(hidden)} local entries (first: {hidden[0].name!r}) "
                            "that streaming readers see and directory readers do not; "
                            "inspected",
                            snippet=hidden[0].name,
                            references=_EVASION_REFS,
                            category="archive-evasion",
                        )
                        found.extend(hidden)
                elif pos > 0:
                    self._gap(pos, start)
            pos = max(pos, stop)
        return found

    def _walk(self, start: int, known: dict[int, int]) -> list[_View]:
        """Entries found by walking local headers from `start`, as streaming readers do;
        entries the directory lists are stepped over."""
        found: list[_View] = []
        view = self.view
        limit = self.ctx.limits.max_members
        attempts = 0
        pos: int | None = start
        while pos is not None and pos < len(view):
            attempts += 1
            if attempts > 4 * limit + 16:
                self.ctx.error(self.blob, "too many damaged zip headers to walk")
                break
            if pos in known:
                next_pos = known[pos]
            else:
                local = _read_local(view, pos)
                if local is None:
                    match = _LOCAL_PATTERN.search(view, pos + 1)
                    pos = match.start() if match else None
                    continue
                if pos not in self.walked:
                    if len(self.walked) >= limit:
                        report_too_many(self.ctx, self.blob, f"over {limit}")
                        break
                    self.walked.add(pos)
                    entry = self._walked_entry(local)
                    found.append(entry)
                else:
                    entry = self._walked_entry(local)
                next_pos = self._extent(entry)[1]
            if bytes(view[next_pos : next_pos + 4]) != _LOCAL_SIG:
                match = _LOCAL_PATTERN.search(view, max(next_pos, pos + 1))
                next_pos = match.start() if match else len(view)
            pos = next_pos
        return found

    def _walked_entry(self, local: _Local) -> _View:
        csize = self._walked_size(local)
        sized = not (local.flags & _FLAG_DESCRIPTOR and csize != local.csize)
        name = _decode_name(local.raw_name, local.flags)
        return _View(
            name=name,
            label=name,
            flags=local.flags,
            method=local.method,
            crc=local.crc if sized else None,
            csize=csize,
            usize=local.usize if sized else None,
            data_offset=local.data_offset,
            header_offset=local.offset,
            method_data=self._method_data(local.method, local),
        )

    def _walked_size(self, local: _Local) -> int:
        """A walked entry's compressed size; with a data descriptor and no sizes in the
        header, found by decompressing to the stream's end or by finding the descriptor."""
        available = len(self.view) - local.data_offset
        if not (local.flags & _FLAG_DESCRIPTOR and local.csize == 0):
            return min(local.csize, available)
        method_data = self._method_data(local.method, local)
        opener = _opener(local.method, method_data)
        if opener is not None:
            body = self.view[local.data_offset + len(method_data) :]
            result = inflate(body, opener, unpack_cap(self.ctx, len(body), self.archive_left))
            if result.complete:
                return len(method_data) + result.end
        for match in _DESCRIPTOR_PATTERN.finditer(self.view, local.data_offset):
            length = match.start() - local.data_offset
            if match.start() + 12 <= len(self.view):
                dsize = struct.unpack_from("<I", self.view, match.start() + 8)[0]
                if dsize == length & _U32:
                    return length
        return available

    def _pair(self, record: _Central) -> tuple[_View, ...]:
        """The central directory's view of a member, and the local header's when it differs."""
        name = _decode_name(record.raw_name, record.flags)
        local = _read_local(self.view, record.header_offset)
        if local is None:
            self.ctx.error(
                self.blob,
                f"member {name!r}: no local header at offset {record.header_offset}",
                offset=record.offset,
            )
            return ()
        central = _View(
            name=name,
            label=name,
            flags=record.flags,
            method=record.method,
            crc=record.crc,
            csize=record.csize,
            usize=record.usize,
            data_offset=local.data_offset,
            header_offset=local.offset,
            method_data=self._method_data(record.method, local),
        )
        differences: list[str] = []
        local_name = _decode_name(local.raw_name, local.flags)
        if local.raw_name != record.raw_name:
            differences.append(f"name {local_name!r}")
        if local.method != record.method:
            differences.append(f"compression method {local.method} (directory: {record.method})")
        if (local.flags ^ record.flags) & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION):
            differences.append("encryption flag")
        sized = not local.flags & _FLAG_DESCRIPTOR
        if sized and (local.csize, local.usize) != (record.csize, record.usize):
            differences.append(
                f"sizes {local.csize}/{local.usize} (directory: {record.csize}/{record.usize})"
            )
        if sized and local.crc != record.crc:
            differences.append(f"CRC {local.crc:08x} (directory: {record.crc:08x})")
        if not differences:
            return (central,)
        self.ctx.report(
            self.blob,
            MISMATCH_RULE,
            "Zip local header disagrees with the central directory",
            Severity.MEDIUM,
            offset=local.offset,
            detail=f"member {name!r}: local header has {', '.join(differences)}; loaders "
            "that read one or the other see different content (both were inspected)",
            snippet=name,
            references=_EVASION_REFS,
            category="archive-evasion",
        )
        local_view = _View(
            name=local_name,
            label=local_name if local_name != name else f"{name} (local header)",
            flags=local.flags,
            method=local.method,
            crc=local.crc if sized else record.crc,
            csize=local.csize if sized else record.csize,
            usize=local.usize if sized else record.usize,
            data_offset=local.data_offset,
            header_offset=local.offset,
            method_data=self._method_data(local.method, local),
        )
        return central, local_view

    def _method_data(self, method: int, local: _Local) -> bytes:
        if method != _LZMA:
            return b""
        # zip's LZMA members start with a 4-byte version/size prefix and the properties.
        head = bytes(self.view[local.data_offset : local.data_offset + 4])
        if len(head) < 4:
            return b""
        props = struct.unpack_from("<H", head, 2)[0]
        return bytes(self.view[local.data_offset : local.data_offset + 4 + props])

    def _extent(self, item: _View) -> tuple[int, int]:
        data_end = item.data_offset + item.csize
        if item.flags & _FLAG_DESCRIPTOR:
            data_end += _descriptor_length(self.view, data_end, item.crc, item.csize)
        return item.header_offset, data_end

    # -- findings about the archive as a whole ---------------------------------------------

    def _prepended(self, length: int) -> None:
        self.ctx.report(
            self.blob,
            PREPENDED_RULE,
            "Data before the first zip entry",
            Severity.MEDIUM,
            offset=0,
            detail=f"{length} bytes precede the archive: loaders that check the first bytes "
            "(torch.load, numpy.load) read them as another format; inspected separately",
            references=_EVASION_REFS,
            category="archive-evasion",
        )
        self.ctx.scan_member(self.blob, "<data before archive>", self.view[:length])

    def _trailing(self, start: int) -> None:
        rest = self.view[start:]
        self.ctx.report(
            self.blob,
            TRAILING_RULE,
            "Data after the end of the zip archive",
            Severity.LOW,
            offset=start,
            detail=f"{len(rest)} bytes follow the end record; inspected separately",
            references=_EVASION_REFS,
            category="archive-evasion",
        )
        self.ctx.scan_member(self.blob, "<data after archive>", rest)

    def _gap(self, start: int, stop: int) -> None:
        self.ctx.report(
            self.blob,
            GAP_RULE,
            "Unreferenced bytes between zip entries",
            Severity.LOW,
            offset=start,
            detail=f"{stop - start} bytes no entry accounts for; inspected separately",
            references=_EVASION_REFS,
            category="archive-evasion",
        )
        self.ctx.scan_member(self.blob, f"<bytes at offset {start}>", self.view[start:stop])

    def _overlaps(self, entries: list[tuple[_View, ...]]) -> None:
        extents = sorted(self._extent(pair[0]) for pair in entries)
        overlapping = 0
        reach = -1
        for start, stop in extents:
            if start < reach:
                overlapping += 1
            reach = max(reach, stop)
        if overlapping:
            self.ctx.report(
                self.blob,
                OVERLAP_RULE,
                "Zip entries overlap",
                Severity.HIGH,
                detail=f"{overlapping} entries share bytes with another entry: the "
                "construction of non-recursive zip bombs and of archives that show "
                "different tools different content",
                remediation="Do not unpack or load this file.",
                references=("CWE-409", *_EVASION_REFS),
                category="archive-evasion",
            )

    def _note_torch_layout(self, entries: list[tuple[_View, ...]]) -> None:
        for pair in entries:
            name = pair[0].name
            for pickle_name in ("data.pkl", "constants.pkl"):
                if name == pickle_name:
                    self.torch_prefixes.add("")
                elif name.endswith("/" + pickle_name) and name.count("/") == 1:
                    self.torch_prefixes.add(name[: -len(pickle_name)])

    # -- one member ------------------------------------------------------------------------

    def _scan_entry(self, pair: tuple[_View, ...]) -> None:
        digests: list[tuple[int, int]] = []
        for name in dict.fromkeys(item.name for item in pair):
            check_member_name(self.ctx, self.blob, name, offset=pair[0].header_offset)
        for item in pair:
            region = (item.data_offset, item.csize, item.method)
            if region in self.seen_regions:
                continue  # the same bytes under another entry (reported as an overlap)
            self.seen_regions.add(region)
            if self._is_torch_storage(item):
                continue
            unpacked = self._unpack(item)
            if unpacked.note:
                self.ctx.error(
                    self.blob, f"member {item.name!r}: {unpacked.note}", offset=item.header_offset
                )
            if unpacked.data is None:
                continue
            if len(pair) > 1:
                # The two readings only matter when they give different bytes.
                digest = (zlib.crc32(unpacked.data), len(unpacked.data))
                if digest in digests:
                    continue
                digests.append(digest)
            if self._is_torch_record(item.name, unpacked.data):
                continue
            self.ctx.scan_member(self.blob, item.label, unpacked.data)

    def _torch_relative(self, name: str) -> str | None:
        for prefix in self.torch_prefixes:
            if name.startswith(prefix):
                return name[len(prefix) :]
        return None

    def _is_torch_storage(self, item: _View) -> bool:
        """Raw tensor storage of a PyTorch archive: torch reads it as numbers and never
        deserialises it, so it is neither checksummed nor dispatched (it can be gigabytes).
        Only stored members qualify (torch never compresses them), and not one that starts
        like an .npy array, which numpy.load would read from the same zip."""
        rest = self._torch_relative(item.name)
        if rest is None or _STORAGE_NAME.fullmatch(rest) is None or item.method != _STORED:
            return False
        head = bytes(self.view[item.data_offset : item.data_offset + len(_NPY_MAGIC)])
        return head != _NPY_MAGIC

    def _is_torch_record(self, name: str, data: memoryview) -> bool:
        """The small metadata records of a PyTorch archive, when they hold what torch
        writes there; anything else in their place is dispatched like any member."""
        rest = self._torch_relative(name)
        if rest in ("version", ".data/version", ".format_version", ".storage_alignment"):
            return len(data) <= 32 and bytes(data).strip().isdigit()
        if rest == "byteorder":
            return bytes(data[:16]) in (b"little", b"big")
        if rest == ".data/serialization_id":
            return len(data) <= 64 and bytes(data).isdigit()
        return False

    def _unpack(self, item: _View) -> _Unpacked:
        view = self.view
        available = max(0, len(view) - item.data_offset)
        truncated = item.csize > available
        raw = view[item.data_offset : item.data_offset + min(item.csize, available)]
        note = (
            f"data truncated: {item.csize} bytes declared, {available} present"
            if (truncated)
            else None
        )
        if item.method == _AES or item.flags & _FLAG_STRONG_ENCRYPTION:
            return _Unpacked(None, "encrypted member cannot be inspected")
        encrypted = bool(item.flags & _FLAG_ENCRYPTED)
        if self.archive_left <= 0:
            self._exhaust(item)
            return _Unpacked(None)
        if item.method == _STORED:
            if len(raw) > self.archive_left:
                self._exhaust(item)
                return _Unpacked(None)
            self.archive_left -= len(raw)
            if encrypted or len(raw) <= _CRC_LIMIT:
                crc_ok = item.crc is None or zlib.crc32(raw) == item.crc
                if encrypted:
                    return self._fake_encryption(item, raw if crc_ok and not truncated else None)
                if not crc_ok and not truncated:
                    self._bad_crc(item)
            return _Unpacked(raw, note)
        opener = _opener(item.method, item.method_data)
        if opener is None:
            method = _METHOD_NAMES.get(item.method, f"method {item.method}")
            return _Unpacked(None, f"compressed with {method}, which cannot be inspected")
        cap = unpack_cap(self.ctx, len(raw), self.archive_left)
        result = inflate(raw[len(item.method_data) :], opener, cap)
        self.archive_left -= len(result.data)
        data = memoryview(result.data)
        crc_ok = result.complete and (item.crc is None or zlib.crc32(data) == item.crc)
        if encrypted:
            return self._fake_encryption(item, data if crc_ok else None)
        if result.exceeded:
            report_bomb(self.ctx, self.blob, f"member {item.name!r}", cap, len(raw))
        elif result.problem:
            note = f"cannot be decompressed after {len(data)} bytes: {result.problem}"
        elif not crc_ok:
            self._bad_crc(item)
        return _Unpacked(data, note)

    def _exhaust(self, item: _View) -> None:
        """The archive as a whole unpacked past max_ratio times its size: stop."""
        self.exhausted = True
        report_bomb(
            self.ctx,
            self.blob,
            f"the archive (at member {item.name!r})",
            max(RATIO_FLOOR, self.ctx.limits.max_ratio * len(self.view)),
            len(self.view),
            why=f"{self.ctx.limits.max_ratio} times the archive's size",
        )

    def _fake_encryption(self, item: _View, data: memoryview | None) -> _Unpacked:
        if data is None:
            return _Unpacked(None, "encrypted member cannot be inspected")
        self.ctx.report(
            self.blob,
            FAKE_ENCRYPTION_RULE,
            "Zip member marked encrypted but stored in clear",
            Severity.MEDIUM,
            offset=item.header_offset,
            detail=f"member {item.name!r} has the encryption flag set yet reads as plain "
            "data: scanners that skip encrypted members miss it, loaders that ignore the "
            "flag load it (inspected)",
            snippet=item.name,
            references=_EVASION_REFS,
            category="archive-evasion",
        )
        return _Unpacked(data)

    def _bad_crc(self, item: _View) -> None:
        self.ctx.report(
            self.blob,
            CRC_RULE,
            "Zip member fails its CRC check",
            Severity.MEDIUM,
            offset=item.header_offset,
            detail=f"member {item.name!r}: Python's zipfile refuses it, loaders that skip "
            "the check read it (inspected)",
            snippet=item.name,
            references=_EVASION_REFS,
            category="archive-evasion",
        )


def _opener(method: int, method_data: bytes) -> Callable[[], Any] | None:
    if method == _DEFLATED:
        return lambda: zlib.decompressobj(-15)
    if method == _BZIP2:
        return bz2.BZ2Decompressor
    if method == _LZMA and len(method_data) >= 9:
        try:
            lzma_filter = lzma._decode_filter_properties(  # type: ignore[attr-defined]
                lzma.FILTER_LZMA1, method_data[4:]
            )
        except (lzma.LZMAError, ValueError):
            return None
        if lzma_filter.get("dict_size", 0) > 1 << 30:
            return None
        return lambda: lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma_filter])
    return None


SCANNER = ZipArchive()
