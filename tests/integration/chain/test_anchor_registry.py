"""AnchorRegistry (contracts/AnchorRegistry.sol, DESIGN §3.5) deployed from the committed
artifact on a local anvil chain, through web3.py: every check of anchor(), the Anchored
event, the latest() view, and the gas an anchor costs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from anvil_chain import Anvil
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError

ARTIFACT = json.loads((Path(__file__).resolve().parents[3] / "agent" / "anchor" / "AnchorRegistry.json").read_text())
DEVICE = Web3.keccak(text="device-key-1")  # a kid, as the agent derives it: 32 bytes
OTHER_DEVICE = Web3.keccak(text="device-key-2")


def root(n: int) -> bytes:
    # roots are hashes: no zero bytes to speak of, which is what calldata gas is priced on
    return Web3.keccak(n.to_bytes(8, "big"))


@pytest.fixture
def web3(anvil: Anvil) -> Web3:
    return Web3(Web3.HTTPProvider(anvil.url))


@pytest.fixture
def registry(web3: Web3, anvil: Anvil) -> Contract:
    factory = web3.eth.contract(abi=ARTIFACT["abi"], bytecode=ARTIFACT["bytecode"])
    receipt = web3.eth.wait_for_transaction_receipt(factory.constructor().transact({"from": anvil.accounts[0]}))
    # a failed deploy still has a contractAddress in its receipt (FIELD-NOTES, Chain): check
    # the status, and that the code there is the artifact's (no immutables: byte for byte)
    assert receipt["status"] == 1
    assert web3.eth.get_code(receipt["contractAddress"]) == bytes.fromhex(ARTIFACT["deployedBytecode"][2:])
    return web3.eth.contract(address=receipt["contractAddress"], abi=ARTIFACT["abi"])


def anchor(web3: Web3, registry: Contract, sender: str, device: bytes, size: int, root_: bytes) -> dict:
    tx_hash = registry.functions.anchor(device, size, root_).transact({"from": sender})
    receipt = web3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    return receipt


def test_an_anchor_is_recorded_in_the_view_and_its_root_in_the_event(
    web3: Web3, registry: Contract, anvil: Anvil
) -> None:
    submitter = anvil.accounts[1]
    assert registry.functions.latest(submitter, DEVICE).call() == [0, 0]
    receipt = anchor(web3, registry, submitter, DEVICE, 7, root(7))

    (event,) = registry.events.Anchored().process_receipt(receipt)
    assert event["args"] == {"submitter": submitter, "deviceKeyId": DEVICE, "treeSize": 7, "root": root(7)}
    assert registry.functions.latest(submitter, DEVICE).call() == [7, receipt["blockNumber"]]

    # the reader's path: the view gives the block; the log there, found by its indexed
    # fields (submitter, deviceKeyId), gives the root
    size, block = registry.functions.latest(submitter, DEVICE).call()
    logs = registry.events.Anchored().get_logs(
        from_block=block, to_block=block, argument_filters={"submitter": submitter, "deviceKeyId": DEVICE}
    )
    assert [(log["args"]["treeSize"], log["args"]["root"]) for log in logs] == [(size, root(7))]


@pytest.mark.parametrize(
    ("device", "size", "root_", "reason"),
    [
        pytest.param(DEVICE, 11, b"\0" * 32, "AnchorRegistry: zero root", id="zero-root"),
        pytest.param(OTHER_DEVICE, 0, root(1), "AnchorRegistry: zero treeSize", id="zero-size-first-anchor"),
        pytest.param(DEVICE, 0, root(1), "AnchorRegistry: zero treeSize", id="zero-size"),
        pytest.param(DEVICE, 10, root(99), "AnchorRegistry: treeSize not increasing", id="equal-size"),
        pytest.param(DEVICE, 9, root(9), "AnchorRegistry: treeSize not increasing", id="smaller-size"),
    ],
)
def test_a_bad_anchor_is_refused_with_its_reason(
    web3: Web3, registry: Contract, anvil: Anvil, device: bytes, size: int, root_: bytes, reason: str
) -> None:
    submitter = anvil.accounts[0]
    first = anchor(web3, registry, submitter, DEVICE, 10, root(10))
    call = registry.functions.anchor(device, size, root_)
    # web3 decodes a reason string (it would not decode a custom error: FIELD-NOTES, Chain)
    with pytest.raises(ContractLogicError, match=reason):
        call.call({"from": submitter})
    # sent anyway with explicit gas (no estimate to fail first), it is mined and reverts
    receipt = web3.eth.wait_for_transaction_receipt(call.transact({"from": submitter, "gas": 100_000}))
    assert receipt["status"] == 0
    assert receipt["logs"] == []
    assert registry.functions.latest(submitter, DEVICE).call() == [10, first["blockNumber"]]
    assert registry.functions.latest(submitter, OTHER_DEVICE).call() == [0, 0]


def test_each_submitter_and_each_device_has_its_own_sequence(web3: Web3, registry: Contract, anvil: Anvil) -> None:
    first, second = anvil.accounts[0], anvil.accounts[1]
    a = anchor(web3, registry, first, DEVICE, 10, root(10))
    # smaller sizes than the first submitter's 10 on this device: a sequence of its own
    b = anchor(web3, registry, second, DEVICE, 3, root(3))
    c = anchor(web3, registry, first, OTHER_DEVICE, 1, root(1))
    d = anchor(web3, registry, second, DEVICE, 4, root(4))
    assert registry.functions.latest(first, DEVICE).call() == [10, a["blockNumber"]]
    assert registry.functions.latest(second, DEVICE).call() == [4, d["blockNumber"]]
    assert registry.functions.latest(first, OTHER_DEVICE).call() == [1, c["blockNumber"]]
    assert registry.functions.latest(second, OTHER_DEVICE).call() == [0, 0]
    assert b["blockNumber"] < d["blockNumber"]


def test_anchor_gas_stays_in_the_design_budget(web3: Web3, registry: Contract, anvil: Anvil) -> None:
    submitter = anvil.accounts[0]
    first = anchor(web3, registry, submitter, DEVICE, 1, root(1))["gasUsed"]
    later = [anchor(web3, registry, submitter, DEVICE, size, root(size))["gasUsed"] for size in (2, 1000, 2**64 - 1)]
    print(f"\nAnchorRegistry.anchor gas: first {first}, later {later}")
    # the first anchor of a (submitter, device) pays for a new slot (SSTORE 0 -> non-zero)
    assert 40_000 <= first <= 55_000
    assert all(25_000 <= gas <= 45_000 for gas in later)
