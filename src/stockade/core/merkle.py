"""Merkle tree hashing, inclusion and consistency proofs as in RFC 6962 / RFC 9162 section 2.

Pure functions over leaf hashes; leaves are read once, in order, so a caller can stream them.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from hashlib import sha256

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "ConsistencyProof",
    "Frontier",
    "InclusionProof",
    "consistency_proof",
    "consistency_ranges",
    "hash_ranges",
    "inclusion_proof",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "tree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = sha256(b"").digest()
_LEAF = b"\x00"
_NODE = b"\x01"

Range = tuple[int, int]


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return sha256(_NODE + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than `n` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ValueError(f"{what} must be {HASH_SIZE} bytes")


def tree_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) by the recursive definition of RFC 9162 2.1.1, over already-hashed leaves."""
    for value in leaf_hashes:
        _check_hash(value, "a leaf hash")

    def mth(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaf_hashes[lo]
        k = _split(hi - lo)
        return node_hash(mth(lo, lo + k), mth(lo + k, hi))

    return mth(0, len(leaf_hashes)) if leaf_hashes else EMPTY_ROOT


# -- compact range ----------------------------------------------------------------------


def _push(stack: list[bytes], size: int, value: bytes) -> None:
    """Append one leaf hash to the compact range `stack` of a tree of `size` leaves."""
    while size & 1:
        value = node_hash(stack.pop(), value)
        size >>= 1
    stack.append(value)


def _fold(stack: Sequence[bytes]) -> bytes:
    """The root of a compact range: its subtree hashes folded right to left."""
    if not stack:
        return EMPTY_ROOT
    root = stack[-1]
    for value in reversed(stack[:-1]):
        root = node_hash(value, root)
    return root


@dataclass(frozen=True)
class Frontier:
    """The right edge of a tree of `size` leaves: one perfect-subtree hash per set bit of
    `size`, largest (leftmost) first. Appending a leaf and computing the root are O(log n).
    """

    size: int = 0
    hashes: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError("a tree size cannot be negative")
        if len(self.hashes) != self.size.bit_count():
            raise ValueError(
                f"a frontier of {self.size} leaves holds {self.size.bit_count()} hashes, "
                f"not {len(self.hashes)}"
            )
        for value in self.hashes:
            _check_hash(value, "a frontier hash")

    def append(self, leaf: bytes) -> Frontier:
        return self.extend((leaf,))

    def extend(self, leaves: Iterable[bytes]) -> Frontier:
        stack = list(self.hashes)
        size = self.size
        for leaf in leaves:
            _check_hash(leaf, "a leaf hash")
            _push(stack, size, leaf)
            size += 1
        return Frontier(size, tuple(stack))

    def root(self) -> bytes:
        return _fold(self.hashes)

    def ranges(self) -> list[Range]:
        """The leaf range [start, end) each hash covers, in the same order as `hashes`."""
        out: list[Range] = []
        start = 0
        for bit in reversed(range(self.size.bit_length())):
            if self.size >> bit & 1:
                out.append((start, start + (1 << bit)))
                start += 1 << bit
        return out

    def to_bytes(self) -> bytes:
        return b"".join(self.hashes)

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> Frontier:
        if len(data) % HASH_SIZE:
            raise ValueError("a frontier is a whole number of 32-byte hashes")
        hashes = tuple(data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE))
        return cls(size, hashes)


def hash_ranges(leaf_hashes: Iterable[bytes], ranges: Sequence[Range]) -> list[bytes]:
    """MTH of the leaves in each [start, end) of `ranges`, reading the leaves once, in order.

    Memory is O(log n) per range, so the leaves may come from a stream of any length; only
    the first max(end) leaves are read. Raises ValueError when the stream is too short.
    """
    results: list[bytes | None] = [None] * len(ranges)
    for j, (start, end) in enumerate(ranges):
        if not 0 <= start <= end:
            raise ValueError(f"invalid leaf range [{start}, {end})")
        if start == end:
            results[j] = EMPTY_ROOT
    pending = sorted((start, j) for j, (start, end) in enumerate(ranges) if start < end)
    if not pending:
        return [r for r in results if r is not None]
    last = max(end for _, end in ranges)
    active: dict[int, list[bytes]] = {}
    position = 0
    for i, value in enumerate(leaf_hashes):
        if i >= last:
            break
        _check_hash(value, "a leaf hash")
        while position < len(pending) and pending[position][0] == i:
            active[pending[position][1]] = []
            position += 1
        for j in list(active):
            start, end = ranges[j]
            _push(active[j], i - start, value)
            if i + 1 == end:
                results[j] = _fold(active.pop(j))
        if position == len(pending) and not active:
            break
    missing = [ranges[j] for j, r in enumerate(results) if r is None]
    if missing:
        raise ValueError(f"too few leaves for the range {missing[0]}")
    return [r for r in results if r is not None]


# -- inclusion --------------------------------------------------------------------------


@dataclass(frozen=True)
class InclusionProof:
    """The audit path of leaf `leaf_index` in the tree of `tree_size` leaves, bottom up."""

    leaf_index: int
    tree_size: int
    hashes: tuple[bytes, ...]


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The leaf ranges whose hashes form PATH(index, D[size]) (RFC 9162 2.1.3.1), in order."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    path: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def inclusion_proof(leaf_hashes: Iterable[bytes], index: int, size: int) -> InclusionProof:
    """The proof that leaf `index` is in the tree made of the first `size` leaves."""
    hashes = hash_ranges(leaf_hashes, inclusion_ranges(index, size))
    return InclusionProof(index, size, tuple(hashes))


def verify_inclusion(proof: InclusionProof, leaf: bytes, root: bytes) -> bool:
    """RFC 9162 2.1.3.2: does `proof` show `leaf` at its index in the tree with `root`?"""
    index, size = proof.leaf_index, proof.tree_size
    if not 0 <= index < size:
        return False
    if not all(_is_hash(h) for h in (leaf, root, *proof.hashes)):
        return False
    fn, sn = index, size - 1
    value = leaf
    for sibling in proof.hashes:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            value = node_hash(sibling, value)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            value = node_hash(value, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(value, root)


# -- consistency ------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsistencyProof:
    """The proof that the tree of `old_size` leaves is a prefix of the one of `new_size`."""

    old_size: int
    new_size: int
    hashes: tuple[bytes, ...]


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """The leaf ranges whose hashes form PROOF(m, D[n]) (RFC 9162 2.1.4.1), in order.

    Empty when old_size is 0 or equals new_size: nothing needs proving then.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from {old_size} to {new_size} leaves")
    if old_size in (0, new_size):
        return []
    out: list[Range] = []
    m, lo, hi, complete = old_size, 0, new_size, True
    # SUBPROOF(m, D[lo:hi], complete), unrolled: each step records the sibling subtree.
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            m -= k
            lo += k
            complete = False
    if not complete:
        out.append((lo, hi))
    out.reverse()
    return out


def consistency_proof(
    leaf_hashes: Iterable[bytes], old_size: int, new_size: int
) -> ConsistencyProof:
    """The proof that the first `old_size` leaves' tree is a prefix of the first `new_size`."""
    hashes = hash_ranges(leaf_hashes, consistency_ranges(old_size, new_size))
    return ConsistencyProof(old_size, new_size, tuple(hashes))


def verify_consistency(proof: ConsistencyProof, old_root: bytes, new_root: bytes) -> bool:
    """RFC 9162 2.1.4.2: is the tree with `old_root` a prefix of the tree with `new_root`?

    The empty tree (size 0, root SHA-256("")) is a prefix of every tree, with an empty proof.
    """
    first, second, path = proof.old_size, proof.new_size, list(proof.hashes)
    if not 0 <= first <= second:
        return False
    if not all(_is_hash(h) for h in (old_root, new_root, *path)):
        return False
    if first == second:
        return not path and hmac.compare_digest(old_root, new_root)
    if first == 0:
        return not path and hmac.compare_digest(old_root, EMPTY_ROOT)
    if not path:
        return False
    if first & (first - 1) == 0:
        path.insert(0, old_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    old_value = new_value = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            old_value = node_hash(c, old_value)
            new_value = node_hash(c, new_value)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            new_value = node_hash(new_value, c)
        fn >>= 1
        sn >>= 1
    return (
        sn == 0
        and hmac.compare_digest(old_value, old_root)
        and hmac.compare_digest(new_value, new_root)
    )


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE
