"""Step 7 on a chain, without one: what a node answered, compared with an anchor record
(agent.trust.anchor_check). The answers are made up here; tests/integration/anchoring
asks a real node."""

from __future__ import annotations

from agent.trust.anchor_check import (
    AnchorClaim,
    AnchoredLog,
    block_problem,
    code_problem,
    judge_block,
    placement_problem,
)
from agent.trust.anchors import AnchoredEvent
from agent.trust.bundle import Anchor
from agent.trust.payloads import CheckpointPayload

KID = bytes(range(32))
ROOT = b"\x11" * 32
SIZE = 7
BLOCK = 100
BLOCK_HASH = b"\xbb" * 32
TX = b"\x77" * 32
CONTRACT = b"\xcc" * 20
SUBMITTER = b"\x5a" * 20
REGISTRY_CODE = b"\x60\x80\x60\x40"

RECORD = Anchor(b"checkpoint", 31337, CONTRACT, TX, BLOCK, BLOCK_HASH, 2)
CLAIM = AnchorClaim(3, RECORD, KID, CheckpointPayload("GW-1", SIZE, ROOT, 0))


def log(size: int = SIZE, root: bytes = ROOT, tx: bytes = TX, key_id: bytes = KID) -> AnchoredLog:
    return AnchoredLog(AnchoredEvent(SUBMITTER, key_id, size, root), tx)


# -- the chain and the block --------------------------------------------------------------


def test_the_records_chain_with_its_block_below_the_head_is_placed() -> None:
    assert placement_problem(RECORD, 31337, BLOCK) is None


def test_a_node_of_another_chain() -> None:
    assert placement_problem(RECORD, 1, 500) == "the record is for chain 31337, but the node serves chain 1"


def test_a_block_beyond_the_head() -> None:
    assert placement_problem(RECORD, 31337, BLOCK - 1) == (
        f"block {BLOCK} is beyond the chain's head {BLOCK - 1} (a shorter chain, or another one)"
    )


def test_the_registrys_code_is_what_makes_a_log_count() -> None:
    assert code_problem(RECORD, REGISTRY_CODE, REGISTRY_CODE) is None
    assert (
        code_problem(RECORD, b"", REGISTRY_CODE) == f"contract 0x{CONTRACT.hex()} holds no code, not the AnchorRegistry"
    )
    assert code_problem(RECORD, b"\x00" * 9, REGISTRY_CODE) == (
        f"contract 0x{CONTRACT.hex()} holds other code (9 bytes), not the AnchorRegistry"
    )


def test_the_canonical_block_at_the_records_number() -> None:
    assert block_problem(RECORD, BLOCK, BLOCK_HASH) is None


def test_a_block_hash_the_node_does_not_know() -> None:
    assert block_problem(RECORD, None, b"\x01" * 32) == (
        f"block {BLOCK} (0x{BLOCK_HASH.hex()}) is not on this chain:"
        " reorganised away, or the record is of another chain"
    )


def test_a_block_hash_of_another_number() -> None:
    assert block_problem(RECORD, BLOCK + 1, b"\x01" * 32) == (
        f"block {BLOCK} (0x{BLOCK_HASH.hex()}): that hash is of block {BLOCK + 1} on this chain"
    )


def test_a_known_block_that_is_no_longer_canonical() -> None:
    """Some nodes keep blocks of a side chain: known by hash, not at their number."""
    problem = block_problem(RECORD, BLOCK, b"\x01" * 32)
    assert problem == (
        f"block {BLOCK} (0x{BLOCK_HASH.hex()}) is no longer canonical (block {BLOCK} is now 0x{'01' * 32}):"
        " reorganised away"
    )


# -- the log and the confirmations --------------------------------------------------------


def test_the_log_of_the_checkpoint_proves_the_anchor() -> None:
    check = judge_block(CLAIM, [log()], head=BLOCK + 5)
    assert check.verified and check.problems == ()
    assert check.confirmations == 5
    assert check.log == log() and check.log.event.submitter == SUBMITTER


def test_a_log_in_another_transaction_than_the_records_is_a_finding() -> None:
    """The agent records the transaction that was mined, in the block the record pins:
    an honest record names the transaction that holds the log."""
    check = judge_block(CLAIM, [log(tx=b"\x99" * 32)], head=BLOCK + 2)
    assert not check.verified and check.log == log(tx=b"\x99" * 32)
    assert check.problems == (
        f"the Anchored log in block {BLOCK} is in transaction 0x{'99' * 32}, not the record's 0x{TX.hex()}",
    )


def test_of_two_matching_logs_the_records_transaction_is_the_one() -> None:
    """Another submitter may anchor the same checkpoint in the same block."""
    check = judge_block(CLAIM, [log(tx=b"\x99" * 32), log()], head=BLOCK + 2)
    assert check.verified and check.log == log()


def test_no_log_in_the_block() -> None:
    check = judge_block(CLAIM, [], head=BLOCK + 2)
    assert not check.verified and check.log is None
    assert check.problems == (
        f"no Anchored log of contract 0x{CONTRACT.hex()} in block {BLOCK} for key id {KID.hex()}",
    )


def test_logs_of_another_key_id_do_not_count() -> None:
    check = judge_block(CLAIM, [log(key_id=b"\x02" * 32)], head=BLOCK + 2)
    assert check.problems[0].startswith("no Anchored log of contract")


def test_a_log_of_another_size() -> None:
    (problem,) = judge_block(CLAIM, [log(size=SIZE + 1)], head=BLOCK + 2).problems
    where = f"in block {BLOCK} for key id {KID.hex()}"
    assert problem == f"the Anchored log {where} anchors tree size {SIZE + 1}, not the checkpoint's {SIZE}"


def test_a_log_of_another_root() -> None:
    (problem,) = judge_block(CLAIM, [log(root=b"\x22" * 32)], head=BLOCK + 2).problems
    assert problem.endswith(f"anchors root 0x{'22' * 32}, not the checkpoint's 0x{ROOT.hex()}")


def test_a_log_of_another_size_and_root_among_others() -> None:
    logs = [log(size=SIZE + 1, root=b"\x22" * 32), log(size=SIZE + 2)]
    (problem,) = judge_block(CLAIM, logs, head=BLOCK + 2).problems
    assert f"anchors tree size {SIZE + 1}, not the checkpoint's {SIZE} and root 0x{'22' * 32}" in problem
    assert problem.endswith("(and 1 other Anchored log(s), none matching)")


def test_the_log_of_the_same_size_is_the_one_described() -> None:
    (problem,) = judge_block(CLAIM, [log(size=SIZE + 1), log(root=b"\x22" * 32)], head=BLOCK + 2).problems
    assert "anchors root 0x" in problem and "tree size" not in problem


def test_fewer_confirmations_than_the_record_claims() -> None:
    check = judge_block(CLAIM, [log()], head=BLOCK + 1)
    assert check.log == log() and check.confirmations == 1 and not check.verified
    assert check.problems == (
        f"the record claims 2 confirmations, but the chain now has 1 on top of block {BLOCK}:"
        " a shorter chain (reorganised, or a node behind)",
    )


def test_more_confirmations_than_the_record_claims_are_fine() -> None:
    assert judge_block(CLAIM, [log()], head=BLOCK + 50).verified


def test_a_missing_log_and_too_few_confirmations_are_both_said() -> None:
    assert len(judge_block(CLAIM, [], head=BLOCK).problems) == 2
