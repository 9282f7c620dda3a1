"""`edgeseal verify --rpc URL` (DESIGN 4): the agent anchors its log on a real local chain
(anvil), and the export's anchor records are checked on that chain; records the chain
contradicts are findings (exit 1), and a node that cannot be asked is unusable input
(exit 2).

A bundle is not signed as a whole, only its seals and checkpoints are, so a test edits an
anchor record by re-encoding the bundle: exactly what anyone could do to a bundle file.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_harness import SIMULATED, export_and_verify, run_for, write_config
from anchor_harness import ChainAccount, anchor_section, deploy_registry, fund
from anvil_chain import Anvil, AnvilNode, free_port
from cli_runner import Result, in_process, one_line_error
from fixtures import export, make_sealed_state, mutate_bundle, replace

from agent.config import load_config
from agent.trust.bundle import Anchor, decode_bundle
from agent.trust.payloads import open_checkpoint

RUN_SECONDS = 3.5  # long enough for at least two anchors (a checkpoint a second)


@dataclass(frozen=True)
class AnchoredHistory:
    anvil: Anvil
    contract: str  # 0x hex in lower case, as the report shows addresses
    submitter: str
    bundle: bytes
    before_anchoring: str  # an anvil snapshot of the chain before the agent ran

    @property
    def records(self) -> list[Anchor]:
        return decode_bundle(self.bundle).anchors


Verify = Callable[..., Result]


@pytest.fixture
def history(tmp_path: Path, anvil: Anvil, chain_keystore: ChainAccount) -> AnchoredHistory:
    """The agent ran for a few seconds against anvil, anchoring its checkpoints; its export."""
    contract = deploy_registry(anvil)
    fund(anvil, chain_keystore.address)
    before = anvil.snapshot()
    path = write_config(tmp_path, sources=SIMULATED)
    path.write_text(path.read_text() + anchor_section(anvil.url, anvil.chain_id, contract, chain_keystore))
    run_for(load_config(path), RUN_SECONDS)
    report, bundle = export_and_verify(path)
    assert report.valid, report.findings
    history = AnchoredHistory(anvil, contract.lower(), chain_keystore.address.lower(), bundle, before)
    assert len(history.records) >= 2, "the agent anchored fewer than two checkpoints"
    return history


@pytest.fixture
def edgeseal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Verify:
    """`edgeseal verify bundle.cbor --ca ca.pem --jobs 1 OPTIONS...` in-process, in the
    directory holding the demo identity's ca.pem."""
    monkeypatch.chdir(tmp_path)
    verify = in_process(capsys, "verify", "bundle.cbor", "--ca", "ca.pem", "--jobs", "1")

    def run(bundle: bytes, *options: str) -> Result:
        Path("bundle.cbor").write_bytes(bundle)
        return verify(*options)

    return run


def with_record(bundle: bytes, index: int, **changes: Any) -> bytes:
    def change(b: Any) -> Any:
        anchors = list(b.anchors)
        anchors[index] = dataclasses.replace(anchors[index], **changes)
        return replace(b, anchors=anchors)

    return mutate_bundle(bundle, change)


def size_of(record: Anchor) -> int:
    return open_checkpoint(record.checkpoint)[1].size


def findings(result: Result) -> list[str]:
    return [line.removeprefix("  FINDING     ") for line in result.out.splitlines() if "FINDING" in line]


def block_hash(anvil: Anvil, number: int) -> bytes:
    return bytes.fromhex(anvil.rpc("eth_getBlockByNumber", [hex(number), False])["hash"][2:])


# -- a genuine history ------------------------------------------------------------------


def test_every_anchor_is_verified_on_chain(history: AnchoredHistory, edgeseal: Verify) -> None:
    anvil, records = history.anvil, history.records
    result = edgeseal(history.bundle, "--rpc", anvil.url)
    assert result.code == 0, result.out + result.err
    assert "bundle.cbor: VALID" in result.out
    head = anvil.block_number()
    for r in records:
        place = f"log size {size_of(r)} in block {r.block} of chain {anvil.chain_id}"
        count = head - r.block
        proof = f"{count} confirmation{'' if count == 1 else 's'}, submitter {history.submitter}"
        assert f"  anchor      {place}: VERIFIED on chain ({proof})\n" in result.out, result.out
    top = max(records, key=size_of)
    assert (
        f"  anchored    history up to log size {size_of(top)} (b 1..{size_of(top)}), in block {top.block}" in result.out
    )
    assert "NOT VERIFIED" not in result.out
    assert edgeseal(history.bundle, "--rpc", anvil.url, "--poa").out == result.out  # extraData of any length

    report = json.loads(edgeseal(history.bundle, "--rpc", anvil.url, "--json").out)
    assert report["valid"] is True and report["unverified_anchor_claims"] == []
    assert report["anchors"] == [
        {
            "index": i,
            "size": size_of(r),
            "chain_id": anvil.chain_id,
            "contract": history.contract,
            "block": r.block,
            "block_hash": "0x" + r.block_hash.hex(),
            "verified": True,
            "confirmations": head - r.block,
            "claimed_confirmations": r.confirmations,
            "submitter": history.submitter,
            "tx": "0x" + r.tx.hex(),
            "record_tx": "0x" + r.tx.hex(),
        }
        for i, r in enumerate(records)
    ]


def test_offline_the_anchors_are_said_to_be_unverified(history: AnchoredHistory, edgeseal: Verify) -> None:
    result = edgeseal(history.bundle)
    assert result.code == 0, result.out + result.err
    lines = [line for line in result.out.splitlines() if line.startswith("  anchor ")]
    assert len(lines) == len(history.records)
    assert all(line.endswith(": NOT VERIFIED (no chain access); VALID does not cover it") for line in lines)

    report = json.loads(edgeseal(history.bundle, "--json").out)
    assert report["anchors"] is None
    assert [c["size"] for c in report["unverified_anchor_claims"]] == [size_of(r) for r in history.records]
    assert not any(c["checked_on_chain"] for c in report["unverified_anchor_claims"])


def test_a_record_naming_another_transaction_is_a_finding(history: AnchoredHistory, edgeseal: Verify) -> None:
    """The agent records the transaction that was mined, in the block the record pins (a
    replacement or a reorg replay has its own hash and block): an honest record names the
    transaction that holds the log."""
    genuine = history.records[0].tx
    bundle = with_record(history.bundle, 0, tx=bytes(32))
    result = edgeseal(bundle, "--rpc", history.anvil.url)
    assert result.code == 1, result.out + result.err
    assert findings(result) == [
        f"anchors[0]: the Anchored log in block {history.records[0].block} is in transaction 0x{genuine.hex()},"
        f" not the record's 0x{bytes(32).hex()}"
    ]
    first = json.loads(edgeseal(bundle, "--rpc", history.anvil.url, "--json").out)["anchors"][0]
    assert (first["verified"], first["tx"], first["record_tx"]) == (False, "0x" + genuine.hex(), "0x" + "00" * 32)


# -- records the chain contradicts ---------------------------------------------------------


def test_records_the_chain_contradicts_are_findings(history: AnchoredHistory, edgeseal: Verify) -> None:
    anvil, records = history.anvil, history.records
    first, last = records[0], records[-1]
    other_registry = deploy_registry(anvil).lower()  # the genuine contract, holding no anchor
    account = anvil.accounts[1]  # an address without code
    head = anvil.block_number()
    kid = open_checkpoint(first.checkpoint)[0].kid.hex()
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "another chain": (
            {"chain_id": anvil.chain_id + 1},
            f"the record is for chain {anvil.chain_id + 1}, but the node serves chain {anvil.chain_id}",
        ),
        "another block number": (
            {"block": first.block - 1},
            f"block {first.block - 1} (0x{first.block_hash.hex()}): that hash is of block {first.block} on this chain",
        ),
        "a block beyond the head": (
            {"block": head + 10},
            f"block {head + 10} is beyond the chain's head {head}",
        ),
        "another block": (
            {"block": 1, "block_hash": block_hash(anvil, 1)},
            f"no Anchored log of contract {history.contract} in block 1 for key id {kid}",
        ),
        "the block of another anchor": (
            {"block": last.block, "block_hash": last.block_hash},
            f"the Anchored log in block {last.block} for key id {kid} anchors tree size {size_of(last)},"
            f" not the checkpoint's {size_of(first)} and root 0x",
        ),
        "another registry": (
            {"contract": bytes.fromhex(other_registry[2:])},
            f"no Anchored log of contract {other_registry} in block {first.block}",
        ),
        "an address without code": (
            {"contract": bytes.fromhex(account[2:])},
            f"contract {account.lower()} holds no code, not the AnchorRegistry",
        ),
        "more confirmations than the chain has": (
            {"confirmations": head - first.block + 1},
            f"the record claims {head - first.block + 1} confirmations, but the chain now has {head - first.block}"
            f" on top of block {first.block}",
        ),
    }
    for case, (changes, expected) in cases.items():
        bundle = with_record(history.bundle, 0, **changes)
        text = edgeseal(bundle, "--rpc", anvil.url)
        assert text.code == 1, f"{case}: exit {text.code}\n{text.out}{text.err}"
        assert "bundle.cbor: INVALID" in text.out, case
        matching = [f for f in findings(text) if expected in f]
        assert len(findings(text)) == 1 and matching, f"{case}: expected {expected!r}, found {findings(text)}"
        assert "  anchor      log size" in text.out and ": NOT VERIFIED on chain (see the findings)" in text.out
        report = json.loads(edgeseal(bundle, "--rpc", anvil.url, "--json").out)
        assert report["valid"] is False, case
        assert [a["verified"] for a in report["anchors"]] == [False] + [True] * (len(records) - 1), case
        assert report["findings"] == [{"where": "anchors[0]", "message": matching[0].removeprefix("anchors[0]: ")}]


def test_a_node_of_another_chain_proves_no_anchor(
    history: AnchoredHistory, edgeseal: Verify, anvil_node: Callable[..., AnvilNode]
) -> None:
    other = anvil_node("--chain-id", "4242").chain
    result = edgeseal(history.bundle, "--rpc", other.url)
    assert result.code == 1, result.out + result.err
    assert findings(result) == [
        f"anchors[{i}]: the record is for chain {history.anvil.chain_id}, but the node serves chain 4242"
        for i in range(len(history.records))
    ]


def test_anchors_reverted_away_are_findings(history: AnchoredHistory, edgeseal: Verify) -> None:
    anvil, records = history.anvil, history.records
    head = anvil.block_number()
    anvil.revert(history.before_anchoring)
    anvil.mine(head - anvil.block_number() + 3)  # the records' block numbers exist again, with other blocks
    result = edgeseal(history.bundle, "--rpc", anvil.url)
    assert result.code == 1, result.out + result.err
    assert findings(result) == [
        f"anchors[{i}]: block {r.block} (0x{r.block_hash.hex()}) is not on this chain:"
        " reorganised away, or the record is of another chain"
        for i, r in enumerate(records)
    ]
    assert "  anchored    history" not in result.out
    report = json.loads(edgeseal(history.bundle, "--rpc", anvil.url, "--json").out)
    assert [(a["verified"], a["confirmations"], a["submitter"]) for a in report["anchors"]] == [
        (False, None, None)
    ] * len(records)


# -- a node that cannot be asked -----------------------------------------------------------


@pytest.fixture
def claimed(tmp_path: Path) -> bytes:
    """A sealed history whose bundle carries an anchor record of its last checkpoint,
    made up (no chain saw it): enough for verify to ask a node."""
    bundle = export(make_sealed_state(tmp_path))
    record = Anchor(decode_bundle(bundle).checkpoints[-1], 31337, bytes(20), bytes(32), 1, bytes(32), 0)
    return mutate_bundle(bundle, lambda b: replace(b, anchors=[record]))


def test_an_unreachable_node_is_unusable_input(claimed: bytes, edgeseal: Verify) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for options in ((), ("--json",)):
        result = edgeseal(claimed, "--rpc", url, *options)
        one_line_error(result, 2, f"--rpc {url}: cannot check the anchors")
        assert not result.out


def test_an_rpc_that_is_not_an_http_url_is_bad_usage(claimed: bytes, edgeseal: Verify) -> None:
    one_line_error(edgeseal(claimed, "--rpc", "127.0.0.1:8545"), 2, "--rpc: expected an http:// or https:// URL")
