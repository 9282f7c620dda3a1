"""The device seal log (RFC 9162; leaf i is the COSE bytes of seal b = i + 1), rebuilt
from the seals a stream delivered, as far as every seal from b = 1 arrived. A checkpoint's
root that equals it proves the device's signed log holds exactly the seals received; one
that differs is a finding. A stream joined later than b = 1, or with a hole, cannot be
compared (a bundle's log proofs can: `edgeseal verify`).
"""

from __future__ import annotations

from collections.abc import Callable

from agent.trust import merkle
from agent.trust.stream_events import CheckpointVerified, Event, Finding

KEPT_ROOTS = 4096  # roots of recent log sizes, for checkpoints that come after their seals
KEPT_PENDING = 64  # checkpoints that came before their seals


class SealLog:
    def __init__(self) -> None:
        self._frontier = merkle.Frontier()
        self._roots: dict[int, bytes] = {}  # log size -> root
        self._pending: dict[int, bytes] = {}  # checkpoints waiting for seals: size -> signed root

    def grow(self, leaf_of: Callable[[int], bytes | None]) -> list[Event]:
        """Appends the seals that now continue the log (`leaf_of(b)`: the log leaf hash of
        seal b, if received), and compares the checkpoints waiting for them."""
        events: list[Event] = []
        while (leaf := leaf_of(self._frontier.size + 1)) is not None:
            self._frontier.append(leaf)
            size, root = self._frontier.size, self._frontier.root()
            self._roots[size] = root
            self._roots.pop(size - KEPT_ROOTS, None)
            if size in self._pending:
                events.append(_compare(size, self._pending.pop(size), root))
        return events

    @property
    def size(self) -> int:
        """How many seals from b = 1 on were received without a hole."""
        return self._frontier.size

    def check(self, size: int, root: bytes, arriving: bool) -> Event:
        """A verified checkpoint's root against the seals received; `arriving` says whether
        seal b = self.size + 1 may still come (not dropped, not before the watch began)."""
        if size in self._roots:
            return _compare(size, root, self._roots[size])
        if size <= self._frontier.size or not arriving:
            return CheckpointVerified(size, "unchecked")
        self._pending[size] = root
        if len(self._pending) > KEPT_PENDING:
            del self._pending[min(self._pending)]
        return CheckpointVerified(size, "later")


def _compare(size: int, signed: bytes, received: bytes) -> Event:
    if signed != received:
        return Finding(
            f"checkpoint size={size}",
            f"its root is not the root of the seals b 1..{size} received: the device's log holds other seals",
        )
    return CheckpointVerified(size, "matches")
