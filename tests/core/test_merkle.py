"""RFC 6962 / 9162 Merkle hashing: the published reference vectors, and properties for every
tree shape up to a few hundred leaves (proofs verify; any altered hash, index or size fails)."""

from __future__ import annotations

from collections.abc import Iterator
from hashlib import sha256

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.core.merkle import (
    EMPTY_ROOT,
    ConsistencyProof,
    Frontier,
    InclusionProof,
    consistency_proof,
    hash_ranges,
    inclusion_proof,
    leaf_hash,
    node_hash,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)

# The Certificate Transparency reference tree (RFC 6962 test data).
CT_DATA = [
    bytes.fromhex(x)
    for x in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_LEAVES = [leaf_hash(d) for d in CT_DATA]

MAX = 300
LEAVES = [leaf_hash(i.to_bytes(2, "big")) for i in range(MAX)]
ROOTS = [tree_hash(LEAVES[:n]) for n in range(MAX + 1)]


def _flip(value: bytes, bit: int) -> bytes:
    data = bytearray(value)
    data[bit // 8 % len(data)] ^= 1 << bit % 8
    return bytes(data)


def test_hashes_are_domain_separated() -> None:
    assert sha256(b"").digest() == EMPTY_ROOT
    assert leaf_hash(b"x") == sha256(b"\x00x").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()


def test_reference_roots() -> None:
    for n, expected in enumerate(CT_ROOTS):
        assert tree_hash(CT_LEAVES[:n]).hex() == expected
        assert Frontier().extend(CT_LEAVES[:n]).root().hex() == expected


@pytest.mark.parametrize(
    ("index", "size", "path"),
    [
        (
            0,
            8,
            [
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            [
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ],
)
def test_reference_inclusion_proofs(index: int, size: int, path: list[str]) -> None:
    proof = inclusion_proof(CT_LEAVES, index, size)
    assert [h.hex() for h in proof.hashes] == path
    assert verify_inclusion(proof, CT_LEAVES[index], bytes.fromhex(CT_ROOTS[size]))


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        (
            2,
            8,
            [
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            [
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ],
)
def test_reference_consistency_proofs(old: int, new: int, path: list[str]) -> None:
    proof = consistency_proof(CT_LEAVES, old, new)
    assert [h.hex() for h in proof.hashes] == path
    assert verify_consistency(proof, bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new]))


@st.composite
def index_and_size(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, MAX))
    return draw(st.integers(0, size - 1)), size


@st.composite
def old_and_new(draw: st.DrawFn) -> tuple[int, int]:
    new = draw(st.integers(0, MAX))
    return draw(st.integers(0, new)), new


@settings(max_examples=400, deadline=None)
@given(index_and_size())
def test_every_inclusion_proof_verifies(case: tuple[int, int]) -> None:
    index, size = case
    proof = inclusion_proof(LEAVES, index, size)
    assert verify_inclusion(proof, LEAVES[index], ROOTS[size])


@settings(max_examples=400, deadline=None)
@given(index_and_size(), st.data())
def test_altered_inclusion_proofs_fail(case: tuple[int, int], data: st.DataObject) -> None:
    index, size = case
    proof = inclusion_proof(LEAVES, index, size)
    root = ROOTS[size]
    bit = data.draw(st.integers(0, 255))
    assert not verify_inclusion(proof, _flip(LEAVES[index], bit), root)
    assert not verify_inclusion(proof, LEAVES[index], _flip(root, bit))
    if proof.hashes:
        at = data.draw(st.integers(0, len(proof.hashes) - 1))
        hashes = list(proof.hashes)
        hashes[at] = _flip(hashes[at], bit)
        assert not verify_inclusion(InclusionProof(index, size, tuple(hashes)), LEAVES[index], root)
        shorter = InclusionProof(index, size, proof.hashes[:-1])
        assert not verify_inclusion(shorter, LEAVES[index], root)
    longer = InclusionProof(index, size, (*proof.hashes, LEAVES[0]))
    assert not verify_inclusion(longer, LEAVES[index], root)
    other = data.draw(st.integers(-1, size).filter(lambda i: i != index))
    assert not verify_inclusion(InclusionProof(other, size, proof.hashes), LEAVES[index], root)
    # Another size, checked against that size's real root.
    resized = data.draw(st.integers(index + 1, MAX).filter(lambda n: n != size))
    moved = InclusionProof(index, resized, proof.hashes)
    assert not verify_inclusion(moved, LEAVES[index], ROOTS[resized])


@settings(max_examples=400, deadline=None)
@given(old_and_new())
def test_every_consistency_proof_verifies(case: tuple[int, int]) -> None:
    old, new = case
    proof = consistency_proof(LEAVES, old, new)
    assert verify_consistency(proof, ROOTS[old], ROOTS[new])


@settings(max_examples=400, deadline=None)
@given(old_and_new(), st.data())
def test_altered_consistency_proofs_fail(case: tuple[int, int], data: st.DataObject) -> None:
    old, new = case
    proof = consistency_proof(LEAVES, old, new)
    bit = data.draw(st.integers(0, 255))
    assert not verify_consistency(proof, _flip(ROOTS[old], bit), ROOTS[new])
    if old != 0:  # the empty tree is a prefix of any tree: its proof says nothing of `new`
        assert not verify_consistency(proof, ROOTS[old], _flip(ROOTS[new], bit))
    if proof.hashes:
        at = data.draw(st.integers(0, len(proof.hashes) - 1))
        hashes = list(proof.hashes)
        hashes[at] = _flip(hashes[at], bit)
        altered = ConsistencyProof(old, new, tuple(hashes))
        assert not verify_consistency(altered, ROOTS[old], ROOTS[new])
        shorter = ConsistencyProof(old, new, proof.hashes[:-1])
        assert not verify_consistency(shorter, ROOTS[old], ROOTS[new])
    longer = ConsistencyProof(old, new, (*proof.hashes, LEAVES[0]))
    assert not verify_consistency(longer, ROOTS[old], ROOTS[new])
    # Other sizes, each checked against its own real root: a proof binds its sizes.
    # Other sizes, each checked against its own real root: a proof binds its sizes. (An
    # empty proof rightly holds from size 0, or between equal sizes.)
    if new > 0:
        other_old = data.draw(st.integers(0, new).filter(lambda m: m != old))
        if proof.hashes or other_old not in (0, new):
            moved = ConsistencyProof(other_old, new, proof.hashes)
            assert not verify_consistency(moved, ROOTS[other_old], ROOTS[new])
    if old > 0:
        other_new = data.draw(st.integers(old, MAX).filter(lambda n: n != new))
        moved = ConsistencyProof(old, other_new, proof.hashes)
        assert not verify_consistency(moved, ROOTS[old], ROOTS[other_new])


def test_consistency_edge_cases() -> None:
    assert verify_consistency(ConsistencyProof(4, 4, ()), ROOTS[4], ROOTS[4])
    assert not verify_consistency(ConsistencyProof(4, 4, ()), ROOTS[4], ROOTS[5])
    assert not verify_consistency(ConsistencyProof(4, 4, (ROOTS[4],)), ROOTS[4], ROOTS[4])
    assert verify_consistency(ConsistencyProof(0, 8, ()), EMPTY_ROOT, ROOTS[8])
    assert not verify_consistency(ConsistencyProof(0, 8, ()), ROOTS[1], ROOTS[8])
    assert not verify_consistency(ConsistencyProof(5, 3, ()), ROOTS[5], ROOTS[3])
    proof = consistency_proof(LEAVES, 6, 8)
    assert not verify_consistency(ConsistencyProof(6, 8, ()), ROOTS[6], ROOTS[8])
    assert not verify_consistency(proof, ROOTS[6][:31], ROOTS[8])
    assert not verify_inclusion(InclusionProof(8, 8, ()), LEAVES[0], ROOTS[8])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=8), max_size=150))
def test_frontier_root_equals_full_recomputation(data: list[bytes]) -> None:
    leaves = [leaf_hash(d) for d in data]
    frontier = Frontier()
    for n, leaf in enumerate(leaves):
        assert frontier.root() == tree_hash(leaves[:n])
        frontier = frontier.append(leaf)
    assert frontier.root() == tree_hash(leaves)
    assert frontier == Frontier().extend(leaves)
    assert Frontier.from_bytes(frontier.size, frontier.to_bytes()) == frontier
    # Each frontier hash is the root of the range it claims to cover.
    for (start, end), value in zip(frontier.ranges(), frontier.hashes, strict=True):
        assert tree_hash(leaves[start:end]) == value


def test_malformed_frontiers_are_refused() -> None:
    with pytest.raises(ValueError, match="holds 2 hashes"):
        Frontier(3, (LEAVES[0],))
    with pytest.raises(ValueError, match="32-byte"):
        Frontier.from_bytes(1, b"short")
    with pytest.raises(ValueError, match="negative"):
        Frontier(-1, ())


def test_ranges_are_hashed_from_one_stream() -> None:
    consumed = []

    def stream() -> Iterator[bytes]:
        for leaf in LEAVES:
            consumed.append(leaf)
            yield leaf

    ranges = [(0, 0), (3, 9), (0, 16), (8, 12)]
    assert hash_ranges(stream(), ranges) == [tree_hash(LEAVES[a:b]) for a, b in ranges]
    assert len(consumed) <= 17  # stops right after the last leaf it needs
    with pytest.raises(ValueError, match="too few leaves"):
        hash_ranges(iter(LEAVES[:5]), [(0, 6)])
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_proof(LEAVES, 5, 5)
