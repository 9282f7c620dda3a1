"""Anchoring for tests: the AnchorRegistry deployed on a test chain (anvil), a funded
chain account in a keystore, and the agent's `anchor:` section pointing at them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from anvil_chain import Anvil
from web3 import Web3

from agent.anchor.keystore import create_keystore, keystore_address
from agent.anchor.registry import artifact

PASSPHRASE = b"test passphrase, development only"


@dataclass(frozen=True)
class ChainAccount:
    keystore: Path
    passphrase_file: Path
    address: str


@pytest.fixture(scope="session")
def chain_keystore(tmp_path_factory: pytest.TempPathFactory) -> ChainAccount:
    """One keystore for the session (scrypt costs about a second); each test funds it on its own chain."""
    directory = tmp_path_factory.mktemp("chain-key")
    passphrase_file = directory / "passphrase"
    passphrase_file.write_bytes(PASSPHRASE)
    keystore = directory / "chain-key.json"
    create_keystore(keystore, PASSPHRASE)
    return ChainAccount(keystore, passphrase_file, keystore_address(keystore))


def deploy_registry(anvil: Anvil) -> str:
    web3 = Web3(Web3.HTTPProvider(anvil.url))
    factory = web3.eth.contract(abi=artifact()["abi"], bytecode=artifact()["bytecode"])
    receipt = web3.eth.wait_for_transaction_receipt(factory.constructor().transact({"from": anvil.accounts[0]}))
    assert receipt["status"] == 1
    return receipt["contractAddress"]


def fund(anvil: Anvil, address: str, ether: int = 10) -> None:
    web3 = Web3(Web3.HTTPProvider(anvil.url))
    tx = web3.eth.send_transaction({"from": anvil.accounts[0], "to": address, "value": Web3.to_wei(ether, "ether")})
    assert web3.eth.wait_for_transaction_receipt(tx)["status"] == 1


def anchor_section(url: str, chain_id: int, contract: str, account: ChainAccount, **settings: object) -> str:
    """The `anchor:` YAML section: fast defaults for tests, overridable."""
    values: dict[str, object] = {
        "finality": "immediate",
        "interval": "1s",
        "poll_interval": "100ms",
        "replace_after": "30s",
        "reconnect_delay": "100ms",
        "reconnect_delay_max": "500ms",
    }
    values.update(settings)
    lines = [
        "anchor:",
        f"  rpc: {url}",
        f"  chain_id: {chain_id}",
        f'  contract: "{contract}"',
        "  key:",
        f"    keystore: {account.keystore}",
        f"    passphrase_file: {account.passphrase_file}",
    ]
    lines += [
        f"  {name}: {json.dumps(value) if not isinstance(value, str) else value}" for name, value in values.items()
    ]
    return "\n".join(lines) + "\n"
