"""The anvil fixture's own promises (tests/anvil_chain.py): a paris chain with funded
accounts, and test-only RPC helpers that do what the sync module's tests will rely on."""

from __future__ import annotations

from anvil_chain import Anvil


def balance(anvil: Anvil, account: str) -> int:
    return int(anvil.rpc("eth_getBalance", [account, "latest"]), 16)


def block_hash(anvil: Anvil, number: int) -> str:
    return anvil.rpc("eth_getBlockByNumber", [hex(number), False])["hash"]


def send(anvil: Anvil, value: int) -> str:
    return anvil.rpc("eth_sendTransaction", [{"from": anvil.accounts[0], "to": anvil.accounts[1], "value": hex(value)}])


def test_the_chain_is_fresh_and_its_accounts_are_funded(anvil: Anvil) -> None:
    assert anvil.chain_id == int(anvil.rpc("eth_chainId"), 16) == 31337
    assert anvil.block_number() == 0
    assert len(anvil.accounts) == len(anvil.private_keys) == 4
    assert all(balance(anvil, account) == 10_000 * 10**18 for account in anvil.accounts)


def test_mine_and_snapshot_revert(anvil: Anvil) -> None:
    snapshot = anvil.snapshot()
    anvil.mine(5)
    assert anvil.block_number() == 5
    anvil.revert(snapshot)
    assert anvil.block_number() == 0


def test_reorg_replaces_blocks_and_can_replay_a_transaction(anvil: Anvil) -> None:
    anvil.mine(4)
    before = block_hash(anvil, 3)
    target = balance(anvil, anvil.accounts[1])
    anvil.reorg(2, [({"from": anvil.accounts[0], "to": anvil.accounts[1], "value": hex(7)}, 0)])
    assert anvil.block_number() == 4  # same height, other blocks: only the hash tells
    assert block_hash(anvil, 3) != before
    assert balance(anvil, anvil.accounts[1]) == target + 7


def test_drop_transaction_removes_a_pending_one(anvil: Anvil) -> None:
    anvil.rpc("evm_setAutomine", [False])
    tx_hash = send(anvil, 1)
    assert anvil.drop_transaction(tx_hash)
    assert not anvil.drop_transaction(tx_hash)
    anvil.mine()
    assert anvil.rpc("eth_getTransactionByHash", [tx_hash]) is None
