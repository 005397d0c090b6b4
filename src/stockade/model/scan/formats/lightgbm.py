"""LightGBM text models (`Booster.save_model`): data only, so a complete one is clean; a
truncated one, or one whose tree table disagrees with its trees, is an error.

Trees are located through the `tree_sizes` header the way LightGBM reads them, with
byte searches, never a Python loop over lines.
"""

from __future__ import annotations

import re
from typing import ClassVar

from stockade.model.scan.interface import Blob, ScanContext

__all__ = ["SCANNER", "LightGbmScanner"]

_HEAD = re.compile(rb"\Atree\r?\n(?:[^\n]{0,256}\n){0,8}?version=v\d+\r?\n")
_END_OF_TREES = b"end of trees"
_MAX_TREES = 10_000_000


class LightGbmScanner:
    """Recognise LightGBM text models and check their trees are all there."""

    name: ClassVar[str] = "lightgbm"

    def detect(self, blob: Blob) -> bool:
        return bool(_HEAD.match(bytes(blob.data[:4096])))

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        problem = _problem(blob.data)
        if problem is not None:
            reason, offset = problem
            ctx.error(blob, f"LightGBM model is malformed: {reason}", offset=offset)


def _problem(data: bytes | memoryview) -> tuple[str, int] | None:
    """What is wrong with a LightGBM text model, and where; None when it is complete."""
    view = memoryview(data)
    raw = view.obj if isinstance(data, memoryview) else data
    # mmap, bytes and bytearray all search in C without a copy.
    search = raw if hasattr(raw, "find") and len(raw) == len(view) else bytes(view)
    nul = search.find(b"\x00")
    if nul >= 0:
        return "binary data inside a text model", nul
    first_tree = _line_start(search, b"Tree=", 0)
    end_of_trees = _line_start(search, _END_OF_TREES, 0)
    if end_of_trees < 0:
        return "no `end of trees` line: the file is truncated", len(view)
    parameters = _line_start(search, b"parameters:", end_of_trees)
    if parameters >= 0 and _line_start(search, b"end of parameters", parameters) < 0:
        return "no `end of parameters` line: the file is truncated", len(view)
    header_end = min(x for x in (first_tree, end_of_trees) if x >= 0)
    header = bytes(view[:header_end]).decode("utf-8", "replace")
    sizes_line = re.search(r"^tree_sizes=([0-9 ]*)\r?$", header, re.MULTILINE)
    if sizes_line is None:
        # Older models have no tree_sizes: every tree must at least come before the end.
        stray = _line_start(search, b"Tree=", end_of_trees)
        return None if stray < 0 else ("a tree follows `end of trees`", stray)
    words = sizes_line.group(1).split()
    if len(words) > _MAX_TREES:
        return f"{len(words)} trees declared", sizes_line.start()
    sizes = [int(word) for word in words]
    if not sizes:
        if 0 <= first_tree < end_of_trees:
            return "trees follow an empty tree_sizes", first_tree
        return None
    if first_tree < 0:
        return f"tree_sizes lists {len(sizes)} trees but there are none", header_end
    position = first_tree
    for index, size in enumerate(sizes):
        label = b"Tree=%d" % index
        if search[position : position + len(label)] != label:
            return f"tree {index} is not where tree_sizes puts it", position
        position += size
        if position > end_of_trees:
            return f"tree {index} runs past `end of trees`", position
    if search[position : position + len(_END_OF_TREES)] != _END_OF_TREES:
        return "tree_sizes does not add up to the trees' bytes", position
    return None


def _line_start(search: bytes, needle: bytes, start: int) -> int:
    """Offset of the first line that begins with `needle`, or -1."""
    if search[start : start + len(needle)] == needle and start == 0:
        return 0
    found = search.find(b"\n" + needle, start)
    return found + 1 if found >= 0 else -1


SCANNER = LightGbmScanner()
