"""Verifier step 5 between two seals: does one seal continue the one before it?

Shared by the bundle verifier (all seals at once) and the stream checker (seals as they
arrive over MQTT), so both judge a chain by the same rules: `prev` is the hash of the
previous seal, `boot` never goes back, and seqs continue, except for a gap the device
signed or a forward jump that a restart explains.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.trust.payloads import ZERO_HASH, Gap, SealPayload


@dataclass(frozen=True)
class GapRecord:
    first: int
    last: int
    why: str
    b: int | None  # the batch whose seal records it; None for a restart gap
    signed: bool


@dataclass(frozen=True)
class Link:
    """What joining two consecutive seals found: problems (each a finding), and the
    unsigned restart gap between them, if a restart explains a jump in seq."""

    problems: list[str]
    restart_gap: GapRecord | None = None


def first_seal_problems(first: SealPayload) -> list[str]:
    """Checks for the seal with b = 1: it starts the chain and the seqs."""
    problems = []
    if first.prev != ZERO_HASH:
        problems.append("the first seal's prev must be 32 zero bytes")
    if first.first_seq != 1:
        problems.append("the first seal must account for seq 1 (as a reading or in a gap)")
    return problems


def link_seals(prev: SealPayload, prev_digest: bytes, cur: SealPayload) -> Link:
    """Joins `cur` to `prev`, the seal of batch cur.b - 1 whose COSE bytes hash to
    `prev_digest`."""
    problems = []
    if cur.boot < prev.boot:
        problems.append(f"boot went back from {prev.boot} to {cur.boot}")
    if cur.prev != prev_digest:
        problems.append("prev is not the hash of the previous seal")
    expected, first = prev.last_seq + 1, cur.first_seq
    if first == expected:
        return Link(problems)
    if cur.boot > prev.boot and first > expected and (cur.gap is None or cur.drop_record):
        why = f"lost at restart (boot {prev.boot} -> {cur.boot})"
        return Link(problems, GapRecord(expected, first - 1, why, None, False))
    problems.append(f"seq continues at {first}, expected {expected}: {first - expected:+d} readings unexplained")
    return Link(problems)


def drop_tiling(seqs: tuple[int, int], drops: list[tuple[Gap, int]]) -> list[tuple[Gap, int]] | None:
    """The drop records (gap, b) whose gaps, laid end to end, name exactly the seqs
    `seqs` = (first, last) of missing batches, or None. The agent drops a few batches per
    record, so a long hole may take several."""
    by_first = {gap.first: (gap, b) for gap, b in drops}
    used, at = [], seqs[0]
    while at <= seqs[1]:
        record = by_first.get(at)
        if record is None or record[0].last > seqs[1]:
            return None
        used.append(record)
        at = record[0].last + 1
    return used
