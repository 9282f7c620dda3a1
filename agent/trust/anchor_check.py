"""Step 7 on a chain (DESIGN 3.5): what a node answered, compared with an anchor record.
Pure: the answers come in as values; asking the node is agent.anchor.onchain's business.

A record is proven when the node serves the record's chain, the record's block is the
canonical block at its number, the block holds an `Anchored` log of the record's contract
for the checkpoint's key id, size and root, in the transaction the record names, and the
chain has at least as many blocks on top of it as the record claims. The log is the proof;
the transaction must still be the record's: the agent makes a record from the receipt of
the transaction that was mined (a replacement or a reorg replay has a hash of its own, and
a block of its own), and the contract's strictly growing sizes leave one transaction per
block that anchors a checkpoint for a submitter. So an honest record always names the
transaction holding the log, and a record naming another one has been changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.trust.anchors import AnchoredEvent
from agent.trust.bundle import Anchor
from agent.trust.payloads import CheckpointPayload


@dataclass(frozen=True)
class AnchorClaim:
    """An anchor record that names a checkpoint of the bundle (step 7 offline): what it
    claims of a chain, not yet checked there."""

    index: int  # in the bundle's anchors
    record: Anchor
    key_id: bytes  # the checkpoint's kid: the deviceKeyId the contract was given
    checkpoint: CheckpointPayload


@dataclass(frozen=True)
class AnchoredLog:
    """An `Anchored` log found on chain, and the transaction that emitted it."""

    event: AnchoredEvent
    tx: bytes


@dataclass(frozen=True)
class AnchorCheck:
    """One claim checked on a chain. `log` is the matching log (its submitter is the chain
    account that anchored: whether to trust it is the auditor's call); `confirmations`
    are counted now, None when the record's block is not on the chain."""

    claim: AnchorClaim
    problems: tuple[str, ...] = ()
    confirmations: int | None = None
    log: AnchoredLog | None = None

    @property
    def verified(self) -> bool:
        return not self.problems


def placement_problem(record: Anchor, chain_id: int, head: int) -> str | None:
    """What rules the record out before its block is looked up: another chain, a block
    beyond the head."""
    if record.chain_id != chain_id:
        return f"the record is for chain {record.chain_id}, but the node serves chain {chain_id}"
    if record.block > head:
        return f"block {record.block} is beyond the chain's head {head} (a shorter chain, or another one)"
    return None


def code_problem(record: Anchor, code: bytes, registry_code: bytes) -> str | None:
    """Only the AnchorRegistry's code makes its logs mean that `submitter` anchored."""
    if code == registry_code:
        return None
    found = f"other code ({len(code)} bytes)" if code else "no code"
    return f"contract {_hex(record.contract)} holds {found}, not the AnchorRegistry"


def block_problem(record: Anchor, number_of_hash: int | None, hash_at_number: bytes | None) -> str | None:
    """`number_of_hash`: the number of the block with the record's hash (None: unknown to
    the node); `hash_at_number`: the canonical block's hash at the record's number."""
    block = f"block {record.block} ({_hex(record.block_hash)})"
    if number_of_hash is None:
        return f"{block} is not on this chain: reorganised away, or the record is of another chain"
    if number_of_hash != record.block:
        return f"{block}: that hash is of block {number_of_hash} on this chain"
    if hash_at_number != record.block_hash:
        shown = "none" if hash_at_number is None else _hex(hash_at_number)
        return f"{block} is no longer canonical (block {record.block} is now {shown}): reorganised away"
    return None


def judge_block(claim: AnchorClaim, logs: Sequence[AnchoredLog], head: int) -> AnchorCheck:
    """The record's block is canonical; `logs` are the `Anchored` logs of the record's
    contract in it."""
    logs = [x for x in logs if x.event.key_id == claim.key_id]
    match = _matching(claim, logs)
    confirmations = head - claim.record.block
    problems = [] if match else [_no_match(claim, logs)]
    if match and match.tx != claim.record.tx:
        problems.append(
            f"the Anchored log in block {claim.record.block} is in transaction {_hex(match.tx)},"
            f" not the record's {_hex(claim.record.tx)}"
        )
    if confirmations < claim.record.confirmations:
        problems.append(
            f"the record claims {claim.record.confirmations} confirmations, but the chain now has {confirmations}"
            f" on top of block {claim.record.block}: a shorter chain (reorganised, or a node behind)"
        )
    return AnchorCheck(claim, tuple(problems), confirmations, match)


def _matching(claim: AnchorClaim, logs: Sequence[AnchoredLog]) -> AnchoredLog | None:
    """The log that anchors the checkpoint; the record's own transaction's first."""
    c = claim.checkpoint
    found = [x for x in logs if (x.event.tree_size, x.event.root) == (c.size, c.root)]
    found.sort(key=lambda x: x.tx != claim.record.tx)
    return found[0] if found else None


def _no_match(claim: AnchorClaim, logs: Sequence[AnchoredLog]) -> str:
    r, c = claim.record, claim.checkpoint
    where = f"in block {r.block} for key id {claim.key_id.hex()}"
    if not logs:
        return f"no Anchored log of contract {_hex(r.contract)} {where}"
    nearest = next((x for x in logs if x.event.tree_size == c.size), logs[0])
    differs = []
    if nearest.event.tree_size != c.size:
        differs.append(f"tree size {nearest.event.tree_size}, not the checkpoint's {c.size}")
    if nearest.event.root != c.root:
        differs.append(f"root {_hex(nearest.event.root)}, not the checkpoint's {_hex(c.root)}")
    others = f" (and {len(logs) - 1} other Anchored log(s), none matching)" if len(logs) > 1 else ""
    return f"the Anchored log {where} anchors {' and '.join(differs)}{others}"


def _hex(data: bytes) -> str:
    return "0x" + data.hex()
