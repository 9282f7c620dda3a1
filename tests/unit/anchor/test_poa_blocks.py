"""Blocks of a Besu QBFT/IBFT 2.0 chain carry validator data in extraData (more than the
32 bytes web3 accepts by default): with `poa: true` they read, without it the node reads
as unusable, never as a crash. The node here is a canned JSON-RPC answer of such a block."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest

from agent.anchor.rpc import Chain, ChainUnavailable

QBFT_EXTRA_DATA = "0x" + "f8" * 97  # RLP of vanity, validators, vote, round, seals


def qbft_block() -> dict[str, object]:
    zero32 = "0x" + "00" * 32
    return {
        "number": "0x10", "hash": "0x" + "ab" * 32, "parentHash": zero32, "nonce": "0x0000000000000000",
        "sha3Uncles": zero32, "logsBloom": "0x" + "00" * 256, "transactionsRoot": zero32,
        "stateRoot": zero32, "receiptsRoot": zero32, "miner": "0x" + "00" * 20, "difficulty": "0x1",
        "totalDifficulty": "0x10", "extraData": QBFT_EXTRA_DATA, "size": "0x100", "gasLimit": "0x1c9c380",
        "gasUsed": "0x0", "timestamp": "0x5f5e100", "transactions": [], "uncles": [], "baseFeePerGas": "0x7",
        "mixHash": zero32,
    }  # fmt: skip


class _Node(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = {"jsonrpc": "2.0", "id": request["id"], "result": qbft_block()}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def qbft_node() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Node)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


async def _base_fee(url: str, poa: bool) -> int | None:
    chain = Chain.connect(url, poa=poa)
    try:
        return await chain.base_fee()
    finally:
        await chain.close()


def test_poa_blocks_read_with_poa_set(qbft_node: str) -> None:
    assert asyncio.run(_base_fee(qbft_node, poa=True)) == 7


def test_without_poa_such_blocks_make_the_node_unusable_not_a_crash(qbft_node: str) -> None:
    with pytest.raises(ChainUnavailable, match="set anchor.poa: true"):
        asyncio.run(_base_fee(qbft_node, poa=False))
