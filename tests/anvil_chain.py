"""A local Ethereum chain for the anchoring tests: anvil (Foundry), from npm, as
contracts/package-lock.json pins it.

anvil runs as a subprocess whose output goes to a file, not a pipe, so no reader thread is
needed; readiness is its JSON-RPC answering. The native binary is started directly, not
npm's node wrapper (bin.mjs), so the process the fixture kills is anvil itself and no
orphan survives it. The chain runs the "paris" fork, the oldest our target chains run
(DESIGN §3.5): bytecode that needs a later fork (PUSH0) fails here as it would on Besu.

Use the `anvil` fixture: a fresh chain for each test (it starts in ~50 ms), with funded,
unlocked dev accounts and the test-only RPC methods a reorg or lost-transaction test needs.
Its RPC helper uses urllib: the fixture needs no web3, only eth_utils to checksum addresses.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CONTRACTS_DIR = Path(__file__).resolve().parent.parent / "contracts"
INSTALL_COMMAND = "bash scripts/npm-tools.sh"
HARDFORK = "paris"
ACCOUNTS = 4
START_TIMEOUT = 10.0


class RpcError(Exception):
    """anvil answered a JSON-RPC call with an error object."""


@dataclass(frozen=True)
class Anvil:
    url: str  # http://127.0.0.1:PORT
    chain_id: int
    accounts: tuple[str, ...]  # funded (10,000 ETH each), unlocked, EIP-55 checksummed (as web3 wants them)
    private_keys: tuple[str, ...]  # of accounts, in order, 0x-hex: for locally signed transactions

    def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        """The result of one JSON-RPC call; RpcError if anvil answers with an error."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.load(response)
        if "error" in answer:
            raise RpcError(f"{method}: {answer['error']}")
        return answer["result"]

    def snapshot(self) -> str:
        """An id for revert(): the chain's whole state now."""
        return self.rpc("evm_snapshot")

    def revert(self, snapshot_id: str) -> None:
        """Back to the state of snapshot(); that snapshot is used up (anvil deletes it)."""
        if not self.rpc("evm_revert", [snapshot_id]):
            raise RpcError(f"evm_revert: no snapshot {snapshot_id}")

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", [hex(blocks)])

    def reorg(self, depth: int, tx_block_pairs: Sequence[tuple[Any, int]] = ()) -> None:
        """Replaces the last `depth` blocks by as many new ones holding `tx_block_pairs`:
        (transaction request dict or raw signed hex, index of the new block from 0). anvil
        does not re-queue the dropped transactions (FIELD-NOTES, Chain)."""
        self.rpc("anvil_reorg", [depth, [list(pair) for pair in tx_block_pairs]])

    def drop_transaction(self, tx_hash: str) -> bool:
        """Removes a pending transaction from the pool; False if it was not there. The
        sender's pending nonce stays stale afterwards (FIELD-NOTES, Chain)."""
        return self.rpc("anvil_dropTransaction", [tx_hash]) is not None

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)


def anvil_binary() -> Path:
    # npm installs only the platform package matching this machine
    # (@foundry-rs/anvil-linux-amd64 etc.), holding the native binary
    found = sorted((CONTRACTS_DIR / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil*"))
    if not found:
        # a failure, not a skip: the chain tests must run wherever the suite runs
        pytest.fail(f"anvil is not installed in {CONTRACTS_DIR}; run: {INSTALL_COMMAND}", pytrace=False)
    return found[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class AnvilNode:
    """An anvil process that a test may stop and start again on the same port; with
    `--state FILE` among its options the chain survives that (to its last dump)."""

    def __init__(self, directory: Path, options: Sequence[str] = ()) -> None:
        self._directory, self._options = directory, list(options)
        self._port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self.chain = self.start()

    def start(self) -> Anvil:
        # imported here, not at the top: the plugin is loaded for the whole suite, and only a
        # chain test needs eth_utils (a dependency of web3)
        from eth_utils import to_checksum_address

        log_path, config_path = self._directory / "anvil.log", self._directory / "anvil-config.json"
        command = [anvil_binary(), "--host", "127.0.0.1", "--port", str(self._port), "--hardfork", HARDFORK]
        command += ["--accounts", str(ACCOUNTS), "--config-out", config_path, *self._options]
        with log_path.open("ab") as log:
            self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{self._port}"
        chain_id = _wait_ready(self._process, url, log_path)
        # --config-out holds the dev accounts and their keys, so none are hard-coded here
        config = json.loads(config_path.read_text())
        accounts = tuple(to_checksum_address(account) for account in config["available_accounts"])
        return Anvil(url, chain_id, accounts, tuple(config["private_keys"]))

    def stop(self) -> None:
        """SIGTERM: anvil writes its --state file as it exits."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


@pytest.fixture
def anvil_node(tmp_path: Path) -> Iterator[Callable[..., AnvilNode]]:
    """Starts anvil with extra options (`--no-mining`, `--state FILE`, ...); stopped afterwards."""
    started: list[AnvilNode] = []

    def start(*options: str) -> AnvilNode:
        directory = tmp_path / f"anvil-{len(started)}"
        directory.mkdir()
        started.append(AnvilNode(directory, options))
        return started[-1]

    try:
        yield start
    finally:
        for node in started:
            node.stop()


@pytest.fixture
def anvil(anvil_node: Callable[..., AnvilNode]) -> Anvil:
    """A fresh anvil chain of this test's own, stopped afterwards."""
    return anvil_node().chain


def _wait_ready(process: subprocess.Popen[bytes], url: str, log_path: Path) -> int:
    probe = Anvil(url, 0, (), ())
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return int(probe.rpc("eth_chainId"), 16)
        except (urllib.error.URLError, ConnectionError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            state = f"exited with {process.returncode}" if process.returncode is not None else "never answered"
            pytest.fail(f"anvil {state}; its output:\n{log_path.read_text(errors='replace')}", pytrace=False)
        time.sleep(0.02)
