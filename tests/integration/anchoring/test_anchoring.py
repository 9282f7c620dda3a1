"""The agent anchors its log on a real local chain (anvil), and the export carries
anchor records that match the chain."""

from __future__ import annotations

from pathlib import Path

from agent_harness import SIMULATED, export_and_verify, run_for, write_config
from anchor_harness import ChainAccount, anchor_section, deploy_registry, fund
from anvil_chain import Anvil
from web3 import Web3

from agent.anchor.registry import artifact
from agent.buffer.store import Buffer
from agent.config import load_config
from agent.trust.bundle import decode_bundle
from agent.trust.payloads import open_checkpoint


def test_the_agent_anchors_checkpoints_and_the_export_proves_them(
    tmp_path: Path, anvil: Anvil, chain_keystore: ChainAccount
) -> None:
    contract = deploy_registry(anvil)
    fund(anvil, chain_keystore.address)
    path = write_config(tmp_path, sources=SIMULATED)
    path.write_text(path.read_text() + anchor_section(anvil.url, anvil.chain_id, contract, chain_keystore))
    config = load_config(path)

    run_for(config, 4.0)

    report, data = export_and_verify(path)
    assert report.valid, report.findings
    bundle = decode_bundle(data)
    assert len(bundle.anchors) >= 2
    web3 = Web3(Web3.HTTPProvider(anvil.url))
    registry = web3.eth.contract(address=contract, abi=artifact()["abi"])
    for record in bundle.anchors:
        message, checkpoint = open_checkpoint(record.checkpoint)
        receipt = web3.eth.get_transaction_receipt(record.tx)
        assert (receipt["blockNumber"], bytes(receipt["blockHash"])) == (record.block, record.block_hash)
        (event,) = registry.events.Anchored().process_receipt(receipt)
        assert event["args"]["root"] == checkpoint.root
        assert event["args"]["treeSize"] == checkpoint.size
        assert event["args"]["deviceKeyId"] == message.kid
        assert event["args"]["submitter"] == chain_keystore.address
    latest = bundle.anchors[-1]
    size = open_checkpoint(latest.checkpoint)[1].size
    kid = open_checkpoint(latest.checkpoint)[0].kid
    assert registry.functions.latest(chain_keystore.address, kid).call() == [size, latest.block]
    buffer = Buffer.open(config.buffer.dir, create=False)
    try:
        assert not buffer.anchors.open_transactions()
        assert not buffer.anchors.alarms()
    finally:
        buffer.close()


def test_the_policy_waits_for_enough_new_seals_and_the_interval(
    tmp_path: Path, anvil: Anvil, chain_keystore: ChainAccount
) -> None:
    contract = deploy_registry(anvil)
    fund(anvil, chain_keystore.address)
    path = write_config(tmp_path, sources=SIMULATED)
    policy = {"interval": "1s", "min_new_seals": 12}  # seals every 200 ms: about one anchor in 2.4 s
    path.write_text(path.read_text() + anchor_section(anvil.url, anvil.chain_id, contract, chain_keystore, **policy))

    run_for(load_config(path), 6.0)

    buffer = Buffer.open(tmp_path / "state", create=False)
    try:
        sizes = [a.size for a in buffer.anchors.anchored()]
    finally:
        buffer.close()
    assert 1 <= len(sizes) <= 3
    assert sizes[0] >= 12 and all(b - a >= 12 for a, b in zip(sizes, sizes[1:]))
