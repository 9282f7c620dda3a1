"""Anchoring converges whatever the chain does: a dropped transaction, a node restarted
mid-submission, a reorganisation deeper than the receipt, the nonce taken by another
process, a transaction never mined, the agent killed between submission and
confirmation. Each runs `edgeseal run` as its own process against a real anvil node,
and ends with an export whose anchor records verify against the chain."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from agent_harness import SIMULATED, export_and_verify, write_config
from anchor_harness import (
    AgentProcess,
    ChainAccount,
    Journal,
    anchor_section,
    deploy_registry,
    fund,
    wait_for,
)
from anvil_chain import Anvil, AnvilNode
from eth_account import Account
from web3 import Web3

from agent.anchor.keystore import open_keystore
from agent.anchor.registry import artifact
from agent.trust.bundle import Anchor, decode_bundle
from agent.trust.payloads import open_checkpoint

OPEN, ANCHORED, VOID = 0, 1, 2


@dataclass
class Rig:
    node: AnvilNode
    contract: str
    config: Path
    journal: Journal
    agent: AgentProcess

    @property
    def chain(self) -> Anvil:
        return self.node.chain

    def automine(self, on: bool) -> None:
        self.chain.rpc("evm_setAutomine", [on])

    def first_transaction(self) -> tuple[bytes, int, int, int, int, int]:
        return wait_for(lambda: self.journal.transactions()[:1], "an anchor transaction")[0]

    def final_record(self, mine: bool = False) -> Anchor:
        return wait_for(lambda: self.journal.records()[:1], "a final anchor", every=self.chain.mine if mine else None)[
            0
        ]


@pytest.fixture
def rig(tmp_path: Path, anvil_node: Callable[..., AnvilNode], chain_keystore: ChainAccount) -> Callable[..., Rig]:
    started: list[AgentProcess] = []

    def make(*node_options: str, fund_account: bool = True, **anchor_settings: object) -> Rig:
        node = anvil_node(*node_options)
        contract = deploy_registry(node.chain)
        if fund_account:
            fund(node.chain, chain_keystore.address)
        config = write_config(tmp_path / "gateway", sources=SIMULATED)
        settings: dict[str, object] = {"interval": "1h", **anchor_settings}  # one anchor in play
        section = anchor_section(node.chain.url, node.chain.chain_id, contract, chain_keystore, **settings)
        config.write_text(config.read_text() + section)
        agent = AgentProcess(config)
        started.append(agent)
        return Rig(node, contract, config, Journal(tmp_path / "gateway" / "state"), agent)

    yield make
    for agent in started:
        agent.stop()


def assert_proven(rig: Rig, record: Anchor) -> None:
    """The record names the canonical block holding the Anchored log of its checkpoint, and
    the export carries it and verifies."""
    web3 = Web3(Web3.HTTPProvider(rig.chain.url))
    assert bytes(web3.eth.get_block(record.block)["hash"]) == record.block_hash
    registry = web3.eth.contract(address=rig.contract, abi=artifact()["abi"])
    message, checkpoint = open_checkpoint(record.checkpoint)
    logs = registry.events.Anchored().get_logs(
        from_block=record.block, to_block=record.block, argument_filters={"deviceKeyId": message.kid}
    )
    assert [(log["args"]["treeSize"], log["args"]["root"]) for log in logs] == [(checkpoint.size, checkpoint.root)]
    rig.agent.stop()
    report, data = export_and_verify(rig.config)
    assert report.valid, report.findings
    assert record in decode_bundle(data).anchors


def test_a_dropped_transaction_is_sent_again(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.automine(False)
    r.agent.start()
    tx_hash = r.first_transaction()[0]
    wait_for(lambda: r.chain.rpc("eth_getTransactionByHash", ["0x" + tx_hash.hex()]), "the node to have it")
    assert r.chain.drop_transaction("0x" + tx_hash.hex())

    record = r.final_record(mine=True)

    assert record.tx == tx_hash  # the same signed bytes, sent again
    assert [(t[1], t[5]) for t in r.journal.transactions()] == [(0, ANCHORED)]
    assert "re-sending anchor transaction" in r.agent.log()
    assert_proven(r, record)


def test_a_node_restarted_mid_submission_loses_nothing(tmp_path: Path, rig: Callable[..., Rig]) -> None:
    r = rig("--state", str(tmp_path / "chain-state.json"), "--state-interval", "1")
    time.sleep(1.5)  # the deployed contract and the funds are in the state file
    r.automine(False)
    r.agent.start()
    tx_hash = r.first_transaction()[0]
    r.node.stop()  # the transaction pool goes with it
    time.sleep(2.0)  # the agent finds the node gone and backs off
    r.node.start()  # automine again; the contract and the funds are back

    record = r.final_record()

    assert record.tx == tx_hash
    assert "anchoring paused" in r.agent.log()
    assert_proven(r, record)


def test_a_reorganisation_deeper_than_the_receipt_puts_the_anchor_back(rig: Callable[..., Rig]) -> None:
    r = rig(finality="confirmations", confirmations=3)
    r.automine(False)
    r.agent.start()
    tx_hash = r.first_transaction()[0]
    wait_for(lambda: r.chain.rpc("eth_getTransactionByHash", ["0x" + tx_hash.hex()]), "the node to have it")
    r.chain.mine(2)  # mined, one block on top: not final yet
    first = r.chain.rpc("eth_getTransactionReceipt", ["0x" + tx_hash.hex()])
    r.chain.reorg(2)  # both blocks replaced; anvil does not re-queue the transaction

    assert r.chain.rpc("eth_getTransactionReceipt", ["0x" + tx_hash.hex()]) is None
    record = r.final_record(mine=True)

    assert record.block_hash.hex() != first["blockHash"].removeprefix("0x")
    assert record.confirmations >= 3
    assert_proven(r, record)


def test_a_nonce_taken_by_another_process_is_given_up_for_the_next(
    rig: Callable[..., Rig], chain_keystore: ChainAccount
) -> None:
    r = rig()
    r.automine(False)
    r.agent.start()
    tx_hash, nonce, *_ = r.first_transaction()
    # another program with the same account sends its own transaction at that nonce, and
    # the node keeps the better-paying one
    account = open_keystore(chain_keystore.keystore, chain_keystore.passphrase_file.read_bytes())
    other = Account.sign_transaction(
        {"chainId": r.chain.chain_id, "nonce": nonce, "to": r.chain.accounts[1], "value": 1, "gas": 21_000}
        | {"maxFeePerGas": 50 * 10**9, "maxPriorityFeePerGas": 5 * 10**9},
        account.key,
    )
    r.chain.rpc("eth_sendRawTransaction", ["0x" + bytes(other.raw_transaction).hex()])
    r.chain.mine()

    record = r.final_record(mine=True)

    assert record.tx != tx_hash
    journal = [(t[1], t[5]) for t in r.journal.transactions()]
    assert journal == [(nonce, VOID), (nonce + 1, ANCHORED)]
    assert "used by a transaction not sent by this agent" in r.agent.log()
    assert_proven(r, record)


def test_a_transaction_not_mined_in_time_is_replaced_with_higher_fees(rig: Callable[..., Rig]) -> None:
    r = rig(replace_after="1s")
    r.automine(False)
    r.agent.start()
    wait_for(lambda: len(r.journal.transactions()) >= 2, "a replacement", timeout=15)
    r.automine(True)
    r.chain.mine()

    record = r.final_record()

    (_, nonce, _, fee, tip, _), (_, same_nonce, _, raised_fee, raised_tip, _) = r.journal.transactions()[:2]
    assert same_nonce == nonce
    assert raised_fee * 8 >= fee * 9 and raised_tip * 8 >= tip * 9  # at least 12.5 % more on both caps
    states = [t[5] for t in r.journal.transactions()]
    assert states.count(ANCHORED) == 1 and set(states) <= {ANCHORED, VOID}
    assert_proven(r, record)


def test_an_agent_killed_between_submission_and_confirmation_follows_up(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.automine(False)
    r.agent.start()
    tx_hash = r.first_transaction()[0]
    wait_for(lambda: r.chain.rpc("eth_getTransactionByHash", ["0x" + tx_hash.hex()]), "the node to have it")
    r.agent.stop(signal.SIGKILL)
    r.chain.mine()  # mined while no agent runs
    r.agent.start()

    record = r.final_record()

    assert record.tx == tx_hash
    assert [(t[1], t[5]) for t in r.journal.transactions()] == [(0, ANCHORED)]  # never sent twice
    assert_proven(r, record)


def test_an_account_without_funds_is_said_once_and_anchors_once_funded(
    rig: Callable[..., Rig], chain_keystore: ChainAccount
) -> None:
    r = rig(fund_account=False)
    r.agent.start()
    wait_for(lambda: "refuses the anchor transaction" in r.agent.log(), "the node's refusal")
    time.sleep(1.0)  # several rounds of sending it again
    fund(r.chain, chain_keystore.address)

    record = r.final_record()

    assert r.agent.log().count("refuses the anchor transaction") == 1
    assert_proven(r, record)


def test_a_chain_that_lost_the_open_nonce_is_anchored_anew(
    rig: Callable[..., Rig], chain_keystore: ChainAccount
) -> None:
    r = rig(interval="500ms")
    r.agent.start()
    wait_for(lambda: r.journal.records()[:1], "a first anchor")
    r.automine(False)
    wait_for(lambda: any(t[5] == OPEN and t[1] > 0 for t in r.journal.transactions()), "an open later anchor")
    r.agent.stop()
    r.node.stop()
    r.node.start()  # no --state: a new chain, on which the account has sent nothing
    assert deploy_registry(r.chain) == r.contract  # same deployer, same nonce: same address
    fund(r.chain, chain_keystore.address)
    lost = len(r.journal.records())
    r.agent.start()

    record = wait_for(lambda: r.journal.records()[lost:][:1] or None, "an anchor on the new chain")[0]

    assert "fewer than this agent's open nonce" in r.agent.log()
    assert all(t[5] != OPEN for t in r.journal.transactions()[:-1])
    assert_proven(r, record)


def test_a_transaction_to_a_previous_contract_anchors_nothing_in_the_new(rig: Callable[..., Rig]) -> None:
    r = rig()
    r.automine(False)
    r.agent.start()
    tx_hash = r.first_transaction()[0]
    wait_for(lambda: r.chain.rpc("eth_getTransactionByHash", ["0x" + tx_hash.hex()]), "the node to have it")
    r.agent.stop()
    r.automine(True)  # mined, into the old registry
    new_contract = deploy_registry(r.chain)
    r.config.write_text(r.config.read_text().replace(r.contract, new_contract))
    r.contract = new_contract
    r.agent.start()

    record = r.final_record()

    assert record.contract.hex() == new_contract.lower().removeprefix("0x")
    assert "went to another contract" in r.agent.log()
    assert_proven(r, record)
