"""`edgeseal verify --rpc`: asks a node what agent.trust.anchor_check needs to prove each
anchor claim of a bundle (DESIGN 3.5, 4).

Per claim, in order, stopping at the first answer that rules the record out: the node's
chain id and head (asked once), the contract's code (once per contract), the block with
the record's hash and the canonical block at its number, then that block's `Anchored`
logs for the checkpoint's key id. Logs are asked for by block hash only once the block is
known to be canonical: nodes answer an unknown hash with an error, not with no logs.

A node that cannot be asked raises ChainUnavailable; the caller decides what that means.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.anchor.registry import deployed_code
from agent.anchor.rpc import Chain, Log
from agent.trust import anchor_check
from agent.trust.anchor_check import AnchorCheck, AnchorClaim, AnchoredLog
from agent.trust.anchors import AnchorFormatError, anchored_topics, decode_anchored


async def check_anchors(chain: Chain, claims: Sequence[AnchorClaim]) -> list[AnchorCheck]:
    if not claims:
        return []
    chain_id, head = await chain.chain_id(), await chain.head()
    codes: dict[bytes, bytes] = {}
    checks = []
    for claim in claims:
        checks.append(await _check(chain, claim, chain_id, head, codes))
    return checks


async def _check(chain: Chain, claim: AnchorClaim, chain_id: int, head: int, codes: dict[bytes, bytes]) -> AnchorCheck:
    r = claim.record
    if problem := anchor_check.placement_problem(r, chain_id, head):
        return AnchorCheck(claim, (problem,))
    if r.contract not in codes:
        codes[r.contract] = await chain.code(r.contract)
    if problem := anchor_check.code_problem(r, codes[r.contract], deployed_code()):
        return AnchorCheck(claim, (problem,))
    number_of_hash = await chain.block_number_of(r.block_hash)
    hash_at_number = await chain.block_hash(r.block)
    if problem := anchor_check.block_problem(r, number_of_hash, hash_at_number):
        return AnchorCheck(claim, (problem,))
    logs = await chain.logs(r.contract, r.block_hash, anchored_topics(claim.key_id))
    return anchor_check.judge_block(claim, _anchored(logs), head)


def _anchored(logs: list[Log]) -> list[AnchoredLog]:
    found = []
    for entry in logs:
        try:
            found.append(AnchoredLog(decode_anchored(entry.topics, entry.data), entry.tx_hash))
        except AnchorFormatError:
            continue  # not of the registry's ABI: it proves nothing
    return found
