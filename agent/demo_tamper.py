"""The demo's last act: one reading changed in a copy of a genuine full bundle, as someone
editing an exported record would, for `verify` to catch. Everything else in the copy,
seals and signatures included, stays as the device made it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from agent.trust.bundle import Batch, Bundle
from agent.trust.leaf import Leaf, decode_leaf, encode_leaf

SHIFT = -20.0  # the forged value: the genuine one less this much, e.g. a pressure peak lowered


@dataclass(frozen=True)
class Tampering:
    """What was changed, for the summary."""

    seq: int
    tag: str
    genuine: Any
    forged: Any


def tamper(bundle: Bundle, tag: str) -> tuple[Bundle, Tampering]:
    """A copy of the full `bundle` whose first number reading of `tag` (of any tag, if it has
    none) has another value, its leaf encoded again as the agent would have."""
    where = _first_number(bundle, tag) or _first_number(bundle, None)
    if where is None:
        raise ValueError("the bundle holds no reading with a number value to change")
    i, j, leaf = where
    forged = round(leaf.value + SHIFT, 3)
    batch = bundle.batches[i]
    assert isinstance(batch, Batch)
    readings = list(batch.readings)
    readings[j] = encode_leaf(leaf.seq, leaf.ts, leaf.tag, forged, leaf.quality)
    batches = list(bundle.batches)
    batches[i] = dataclasses.replace(batch, readings=readings)
    copy = dataclasses.replace(bundle, batches=batches)
    return copy, Tampering(leaf.seq, leaf.tag, leaf.value, forged)


def _first_number(bundle: Bundle, tag: str | None) -> tuple[int, int, Leaf] | None:
    """(batch index, reading index, leaf) of the first float reading of `tag` (None: any tag)."""
    for i, batch in enumerate(bundle.batches):
        for j, raw in enumerate(batch.readings if isinstance(batch, Batch) else ()):
            leaf = decode_leaf(raw)
            if type(leaf.value) is float and tag in (None, leaf.tag):
                return i, j, leaf
    return None
