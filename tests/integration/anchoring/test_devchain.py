"""The demo's development chain (agent/anchor/devchain.py): eth-tester behind real HTTP
JSON-RPC, the registry deployed on it, the agent anchoring on it over its production
path, errors answered as JSON-RPC error objects, and nothing left running after stop."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from agent_harness import SIMULATED, export_and_verify, run_for, write_config
from anchor_harness import ChainAccount, anchor_section
from cli_runner import in_process
from eth_account import Account
from web3 import Web3

from agent.anchor.devchain import DevChain, deploy_registry, fund, rpc
from agent.anchor.registry import artifact, deployed_code
from agent.config import load_config
from agent.trust.bundle import decode_bundle
from agent.trust.payloads import open_checkpoint


@pytest.fixture
def chain() -> Iterator[DevChain]:
    with DevChain() as running:
        yield running


def post(url: str, body: bytes) -> Any:
    """The decoded answer to a raw HTTP POST: what any JSON-RPC client would read."""
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def call(url: str, method: str, params: list[Any], request_id: int = 7) -> Any:
    return post(url, json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}).encode())


def test_the_registry_deploys_with_the_first_dev_account_at_the_same_address_every_time(chain: DevChain) -> None:
    contract = deploy_registry(chain.url)
    assert bytes.fromhex(rpc(chain.url, "eth_getCode", [contract, "latest"])[2:]) == deployed_code()
    with DevChain() as another:
        assert another.chain_id == chain.chain_id
        assert deploy_registry(another.url) == contract  # a new chain each start, alike


def test_funding_an_account(chain: DevChain) -> None:
    account = Account.create().address
    fund(chain.url, account, 3 * 10**18)
    assert int(rpc(chain.url, "eth_getBalance", [account, "latest"]), 16) == 3 * 10**18


def test_the_agent_anchors_on_it_over_http_and_verify_rpc_proves_it(
    tmp_path: Path, chain: DevChain, chain_keystore: ChainAccount, capsys: pytest.CaptureFixture[str]
) -> None:
    contract = deploy_registry(chain.url)
    fund(chain.url, chain_keystore.address, 10**18)
    path = write_config(tmp_path, sources=SIMULATED)
    path.write_text(path.read_text() + anchor_section(chain.url, chain.chain_id, contract, chain_keystore))

    run_for(load_config(path), 4.0)

    report, data = export_and_verify(path)
    assert report.valid, report.findings
    anchors = decode_bundle(data).anchors
    assert len(anchors) >= 2
    web3 = Web3(Web3.HTTPProvider(chain.url))  # an independent client of the same JSON-RPC
    registry = web3.eth.contract(address=contract, abi=artifact()["abi"])
    for record in anchors:
        receipt = web3.eth.get_transaction_receipt(record.tx)
        assert (receipt["blockNumber"], bytes(receipt["blockHash"])) == (record.block, record.block_hash)
        # the logs by block hash, which eth-tester lacks and the server translates
        (entry,) = web3.eth.get_logs({"blockHash": record.block_hash, "address": contract})
        event = registry.events.Anchored().process_log(entry)
        assert event["args"]["treeSize"] == open_checkpoint(record.checkpoint)[1].size
        assert event["args"]["submitter"] == chain_keystore.address
    bundle = tmp_path / "bundle.cbor"
    bundle.write_bytes(data)
    verified = in_process(capsys, "verify")(bundle, "--ca", tmp_path / "ca.pem", "--rpc", chain.url)
    assert verified.code == 0, verified.out + verified.err
    assert verified.out.count("VERIFIED on chain") == len(anchors)


def test_errors_are_json_rpc_error_objects(chain: DevChain) -> None:
    unknown = call(chain.url, "eth_noSuchMethod", [])
    assert unknown["id"] == 7 and unknown["error"]["code"] == -32601
    refused = call(chain.url, "eth_sendRawTransaction", ["0x1234"])
    assert refused["id"] == 7 and refused["error"]["code"] == -32000 and refused["error"]["message"]
    no_block = call(chain.url, "eth_getLogs", [{"blockHash": "0x" + "00" * 32}])
    assert "unknown block" in no_block["error"]["message"]
    assert post(chain.url, b"{not json")["error"]["code"] == -32700
    assert post(chain.url, b'{"id": 1, "params": []}')["error"]["code"] == -32600
    assert post(chain.url, b'{"id": 1, "method": "eth_chainId", "params": {}}')["error"]["code"] == -32600
    assert call(chain.url, "eth_chainId", [])["result"] == hex(chain.chain_id)  # it still answers


def test_a_mined_transaction_sent_again_is_refused_as_nonce_too_low(chain: DevChain) -> None:
    account = Account.create()
    fund(chain.url, account.address, 10**18)
    transfer = {"chainId": chain.chain_id, "nonce": 0, "to": account.address, "value": 1, "gas": 21_000}
    raw = "0x" + bytes(account.sign_transaction({**transfer, "gasPrice": 10**10}).raw_transaction).hex()
    assert "result" in call(chain.url, "eth_sendRawTransaction", [raw])
    again = call(chain.url, "eth_sendRawTransaction", [raw])
    assert again["error"]["message"].startswith("nonce too low"), again  # as geth says it: the agent reads it so


def test_a_batch_is_answered_in_order(chain: DevChain) -> None:
    batch = [{"jsonrpc": "2.0", "id": n, "method": m, "params": []} for n, m in enumerate(["eth_chainId", "eth_nope"])]
    first, second = post(chain.url, json.dumps(batch).encode())
    assert (first["id"], first["result"]) == (0, hex(chain.chain_id))
    assert (second["id"], second["error"]["code"]) == (1, -32601)


def test_concurrent_transactions_are_serialised(chain: DevChain) -> None:
    """Each eth_sendTransaction takes the sender's next nonce: interleaved inside
    eth-tester, two would take the same one."""
    sender = rpc(chain.url, "eth_accounts", [])[0]
    receiver = Account.create().address
    transfer = {"from": sender, "to": receiver, "value": "0x1", "gas": hex(21_000)}
    with ThreadPoolExecutor(8) as pool:
        hashes = list(pool.map(lambda _: rpc(chain.url, "eth_sendTransaction", [transfer]), range(24)))
    assert len(set(hashes)) == 24
    assert int(rpc(chain.url, "eth_getBalance", [receiver, "latest"]), 16) == 24


def test_stop_leaves_no_thread_even_with_an_idle_connection_open() -> None:
    before = set(threading.enumerate())
    chain = DevChain().start()
    rpc(chain.url, "eth_blockNumber", [])
    host, port = chain.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))):  # connected, sends nothing
        chain.stop()
    assert set(threading.enumerate()) <= before
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1).close()
