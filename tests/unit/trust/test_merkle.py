"""Property tests: proofs made by MerkleTree verify by the RFC algorithms, for every
tree size up to a few hundred, and every mutation of them fails."""

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.trust import merkle


def reference_mth(leaves: list[bytes]) -> bytes:
    """MTH straight from RFC 9162 2.1.1, recursively."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return merkle.leaf_hash(leaves[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return merkle.node_hash(reference_mth(leaves[:k]), reference_mth(leaves[k:]))


DATA = [i.to_bytes(4, "big") for i in range(300)]
HASHES = [merkle.leaf_hash(d) for d in DATA]
TREE = merkle.MerkleTree(HASHES)


@pytest.mark.parametrize("size", range(0, 300))
def test_every_root_agrees(size: int) -> None:
    frontier = merkle.Frontier()
    frontier.extend(HASHES[:size])
    expected = reference_mth(DATA[:size])
    assert merkle.root_of(HASHES[:size]) == expected
    assert TREE.root(size) == expected
    assert frontier.root() == expected


@pytest.mark.parametrize("size", range(1, 300))
def test_inclusion_proofs_for_every_leaf(size: int) -> None:
    root = TREE.root(size)
    for index in range(size):
        path = TREE.inclusion_proof(index, size)
        merkle.verify_inclusion(HASHES[index], index, size, path, root)
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(HASHES[(index + 1) % 300], index, size, path, root)


@pytest.mark.parametrize("size2", range(1, 300, 7))
def test_consistency_proofs_for_every_prefix(size2: int) -> None:
    root2 = TREE.root(size2)
    for size1 in range(1, size2 + 1):
        path = TREE.consistency_proof(size1, size2)
        merkle.verify_consistency(size1, size2, path, TREE.root(size1), root2)
        if size1 < size2:
            with pytest.raises(merkle.ProofError):
                merkle.verify_consistency(
                    size1, size2, path, TREE.root(size1), TREE.root(size2 - 1) if size2 - 1 != size1 else HASHES[0]
                )


@given(st.integers(2, 299), st.data())
def test_any_flipped_bit_breaks_an_inclusion_proof(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    path = TREE.inclusion_proof(index, size)
    which = data.draw(st.integers(0, len(path) - 1))
    bit = data.draw(st.integers(0, 255))
    broken = list(path)
    broken[which] = bytes(b ^ (1 << (bit % 8)) if i == bit // 8 else b for i, b in enumerate(path[which]))
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(HASHES[index], index, size, broken, TREE.root(size))
