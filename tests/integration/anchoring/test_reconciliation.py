"""At start the worker checks the chain: its id, the contract's code, and the latest
checkpoint anchored for this device by this account. What the local log cannot explain
is an alarm (a cloned chain key); a wrong chain or contract stops anchoring, not the agent."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from agent_harness import SIMULATED, run_for, write_config
from anchor_harness import ChainAccount, Journal, anchor_section, deploy_registry, fund, wait_for
from anvil_chain import Anvil
from cli_runner import in_process

from agent.anchor.keystore import open_keystore
from agent.buffer.store import Buffer
from agent.config import load_config
from agent.trust.anchors import anchor_calldata
from agent.trust.payloads import open_checkpoint


def sealed_gateway(directory: Path) -> tuple[Path, bytes, int]:
    """A gateway that has sealed and checkpointed for a while without anchoring: its
    config, its device key id and its log size."""
    config = write_config(directory, sources=SIMULATED)
    run_for(load_config(config), 1.5)
    buffer = Buffer.open(directory / "state", create=False)
    try:
        size = buffer.last_checkpoint_size()
        kid = open_checkpoint(buffer.checkpoint(size))[0].kid
        return config, kid, buffer.last_seal().b
    finally:
        buffer.close()


def clone_anchors(anvil: Anvil, contract: str, account: ChainAccount, kid: bytes, size: int, root: bytes) -> None:
    """What a clone of this gateway's chain key could send."""
    key = open_keystore(account.keystore, account.passphrase_file.read_bytes())
    nonce = int(anvil.rpc("eth_getTransactionCount", [account.address, "latest"]), 16)
    signed = key.sign_transaction(
        {"chainId": anvil.chain_id, "nonce": nonce, "to": contract, "value": 0, "gas": 100_000}
        | {"data": anchor_calldata(kid, size, root), "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}
    )
    tx = anvil.rpc("eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()])
    # anvil mines at once, but its receipt may come a moment after the hash
    receipt = wait_for(lambda: anvil.rpc("eth_getTransactionReceipt", [tx]), "the clone's receipt", timeout=10)
    assert receipt["status"] == "0x1"


def with_anchoring(config: Path, anvil: Anvil, contract: str, account: ChainAccount, **settings: object) -> Path:
    config.write_text(config.read_text() + anchor_section(anvil.url, anvil.chain_id, contract, account, **settings))
    return config


@pytest.mark.parametrize(
    ("size_beyond_log", "alarm"),
    [(True, "beyond this log's"), (False, "which is not this log's")],
    ids=["larger-size", "other-root"],
)
def test_an_anchor_the_log_cannot_explain_raises_an_alarm(
    tmp_path: Path,
    anvil: Anvil,
    chain_keystore: ChainAccount,
    capsys: pytest.CaptureFixture[str],
    size_beyond_log: bool,
    alarm: str,
) -> None:
    config, kid, log_size = sealed_gateway(tmp_path / "gateway")
    contract = deploy_registry(anvil)
    fund(anvil, chain_keystore.address)
    forged_size = log_size + 1000 if size_beyond_log else 1
    clone_anchors(anvil, contract, chain_keystore, kid, forged_size, os.urandom(32))

    run_for(load_config(with_anchoring(config, anvil, contract, chain_keystore)), 3.0)  # the keystore alone: ~1 s

    journal = Journal(tmp_path / "gateway" / "state")
    (message,) = journal.alarms()
    assert alarm in message and f"size {forged_size}" in message
    # never a tree size at or below the chain's: beyond the log, nothing can be anchored
    assert bool(journal.records()) is not size_beyond_log
    status = in_process(capsys, "status")("--state-dir", str(tmp_path / "gateway" / "state"))
    assert status.code == 0 and f"ALARM        {message}" in status.out


def test_an_agent_restarted_on_an_anchored_log_reconciles_quietly(
    tmp_path: Path, anvil: Anvil, chain_keystore: ChainAccount
) -> None:
    config = write_config(tmp_path / "gateway", sources=SIMULATED)
    contract = deploy_registry(anvil)
    fund(anvil, chain_keystore.address)
    with_anchoring(config, anvil, contract, chain_keystore, interval="500ms")
    journal = Journal(tmp_path / "gateway" / "state")

    run_for(load_config(config), 2.0)
    first = journal.records()
    run_for(load_config(config), 2.0)

    assert first and len(journal.records()) > len(first)
    assert journal.alarms() == []
    sizes = [open_checkpoint(r.checkpoint)[1].size for r in journal.records()]
    assert sizes == sorted(set(sizes))  # strictly increasing across the restart


@pytest.mark.parametrize("mismatch", ["chain-id", "no-contract"])
def test_a_wrong_chain_or_contract_stops_anchoring_and_says_why(
    tmp_path: Path, anvil: Anvil, chain_keystore: ChainAccount, caplog: pytest.LogCaptureFixture, mismatch: str
) -> None:
    config = write_config(tmp_path / "gateway", sources=SIMULATED)
    contract = deploy_registry(anvil) if mismatch == "chain-id" else "0x" + "11" * 20
    section = anchor_section(anvil.url, anvil.chain_id, contract, chain_keystore)
    if mismatch == "chain-id":
        section = section.replace(f"chain_id: {anvil.chain_id}", "chain_id: 999")
    config.write_text(config.read_text() + section)

    with caplog.at_level(logging.ERROR, logger="agent.anchor.worker"):
        stats = run_for(load_config(config), 2.0)

    assert stats.seals > 0  # the agent goes on sealing
    assert Journal(tmp_path / "gateway" / "state").transactions() == []
    expected = "is chain 31337, not the configured chain_id 999" if mismatch == "chain-id" else "holds no code"
    stopped = [r.getMessage() for r in caplog.records if "anchoring stopped" in r.getMessage()]
    assert len(stopped) == 1 and expected in stopped[0]  # said once, not at every retry
