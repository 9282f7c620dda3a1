"""Merkle trees exactly as RFC 9162 section 2.1 (the RFC 6962 tree), SHA-256.

Leaf hash = SHA-256(0x00 || data), interior node = SHA-256(0x01 || left || right).
`MerkleTree` computes proofs for any tree size up to the leaves it holds; verification
functions follow the RFC's algorithms step by step (2.1.3.2 and 2.1.4.2). `Frontier`
grows a tree one leaf at a time in O(log n) memory, for the sealer and the seal log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()


class ProofError(ValueError):
    """A proof that does not verify, with the reason."""


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def _level_up(level: Sequence[bytes]) -> list[bytes]:
    """Hash pairs; an odd last node is carried up unchanged (RFC 6962's shape)."""
    h = _sha256
    up = [h(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        up.append(level[-1])
    return up


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, computed level by level."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        level = _level_up(level)
    return level[0]


class MerkleTree:
    """All levels of a tree, for proofs against it or against any of its prefixes."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self._levels = [list(leaf_hashes)]
        while len(self._levels[-1]) > 1:
            self._levels.append(_level_up(self._levels[-1]))

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        self._check_size(size)
        return self._subtree(0, size) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 9162 2.1.3.1."""
        size = self.size if size is None else size
        self._check_size(size)
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} outside a tree of size {size}")
        return self._path(index, 0, size)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """PROOF(size1, D[0:size2]) of RFC 9162 2.1.4.1, for 0 < size1 <= size2."""
        size2 = self.size if size2 is None else size2
        self._check_size(size2)
        if not 0 < size1 <= size2:
            raise ValueError(f"no consistency proof from size {size1} to {size2}")
        return self._subproof(size1, 0, size2, True)

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} outside 0..{self.size}")

    def _subtree(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]); an aligned complete block is read from the stored levels."""
        width = hi - lo
        if width & (width - 1) == 0 and lo % width == 0:
            return self._levels[width.bit_length() - 1][lo // width]
        k = _largest_power_of_two_below(width)
        return node_hash(self._subtree(lo, lo + k), self._subtree(lo + k, hi))

    def _path(self, m: int, lo: int, hi: int) -> list[bytes]:
        if hi - lo == 1:
            return []
        k = _largest_power_of_two_below(hi - lo)
        if m < k:
            return self._path(m, lo, lo + k) + [self._subtree(lo + k, hi)]
        return self._path(m - k, lo + k, hi) + [self._subtree(lo, lo + k)]

    def _subproof(self, m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if complete else [self._subtree(lo, hi)]
        k = _largest_power_of_two_below(n)
        if m <= k:
            return self._subproof(m, lo, lo + k, complete) + [self._subtree(lo + k, hi)]
        return self._subproof(m - k, lo + k, hi, False) + [self._subtree(lo, lo + k)]


class Frontier:
    """The right edge of a growing tree: one root per complete subtree, largest first."""

    def __init__(self) -> None:
        self._stack: list[bytes] = []
        self.size = 0

    @classmethod
    def restore(cls, size: int, nodes: Sequence[bytes]) -> Frontier:
        """The frontier whose `size` and `nodes` were saved earlier."""
        if len(nodes) != size.bit_count() or any(len(n) != 32 for n in nodes):
            raise ValueError(f"{len(nodes)} saved nodes do not describe a tree of size {size}")
        frontier = cls()
        frontier._stack, frontier.size = list(nodes), size
        return frontier

    @property
    def nodes(self) -> list[bytes]:
        """The roots of the complete subtrees, largest first: what `restore` takes."""
        return list(self._stack)

    def copy(self) -> Frontier:
        return Frontier.restore(self.size, self._stack)

    def append(self, leaf: bytes) -> None:
        self.extend((leaf,))

    def extend(self, leaves: Sequence[bytes]) -> None:
        """append() for many leaves, with the loop's names local (the sealer's hot path)."""
        stack, size, sha256 = self._stack, self.size, _sha256
        for leaf in leaves:
            node, height = leaf, size
            while height & 1:
                node = sha256(b"\x01" + stack.pop() + node).digest()
                height >>= 1
            stack.append(node)
            size += 1
        self.size = size

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node


def _check_hashes(hashes: Sequence[bytes]) -> None:
    if any(len(h) != 32 for h in hashes):
        raise ProofError("a hash in the proof is not 32 bytes")


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 2.1.3.2. Raises ProofError unless `leaf` is at `index` of the tree."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} outside a tree of size {size}")
    _check_hashes([leaf, *path])
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ProofError("inclusion path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion path is shorter than the tree is deep")
    if r != root:
        raise ProofError("inclusion path does not lead to the root")


def verify_consistency(size1: int, size2: int, path: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """RFC 9162 2.1.4.2. Raises ProofError unless tree size1 is a prefix of tree size2."""
    if size1 <= 0:
        raise ProofError("a consistency proof from an empty tree proves nothing")
    if size2 < size1:
        raise ProofError(f"tree shrank from size {size1} to {size2}")
    if size1 == size2:
        if path:
            raise ProofError("trees of equal size need an empty consistency path")
        if root1 != root2:
            raise ProofError("trees of equal size have different roots")
        return
    if not path:
        raise ProofError("empty consistency path between different sizes")
    _check_hashes(path)
    path = list(path)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency path is longer than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency path is shorter than needed")
    if fr != root1:
        raise ProofError("consistency path does not lead to the first root")
    if sr != root2:
        raise ProofError("consistency path does not lead to the second root")
