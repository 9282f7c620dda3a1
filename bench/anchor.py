"""Anchoring benchmark: gas per anchor transaction, and gas per reading at 1,000 readings/s
with 10-minute anchors, against the naive design of one transaction per reading.

The real agent (`agent.runtime.run_agent`: simulator source, sequencer, buffer, sealer
with a software key, anchoring worker) runs against a local anvil started by the benchmark
(`--hardfork paris`, the oldest fork the target chains run), with the AnchorRegistry
deployed from the committed build. Its checkpoints come every 0.5 s and are anchored as
they come, so a short run gives many anchors. Every anchor the agent recorded in its
buffer (`anchors.anchored()`, decoded) is looked up on the chain: its receipt's status
and gasUsed, and how many readings the checkpoint added since the anchor before.

  gas per anchor     the first anchor of a (submitter, device) pair writes a fresh storage
                     slot; later ones overwrite it: both shown (later: min / median / max).
  gas per reading    at 1,000 readings/s with an anchor every 10 minutes, one anchor covers
                     600,000 readings: later-anchor gas / 600,000.
  naive baseline     one transaction per reading, each the same shape as an anchor (a
                     32-byte hash and a counter into the same contract): the same measured
                     later-anchor gas per reading, 1,000 transactions/s.
  chain capacity     against a 30M-gas block every 12 s (Ethereum's): the share of one
                     block an anchor takes, and the gas per second each design needs.

    python bench/anchor.py [--seconds 12]

Needs anvil (bash scripts/npm-tools.sh) and the test tools (bash scripts/setup.sh test):
anvil is started as the tests start it (tests/anvil_chain.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402  (the anvil runner reports a missing binary with pytest.fail)

from agent.anchor.devchain import deploy_registry, fund, rpc  # noqa: E402
from agent.anchor.keystore import create_keystore  # noqa: E402
from agent.buffer.store import Buffer  # noqa: E402
from agent.config import load_config  # noqa: E402
from agent.runtime import run_agent  # noqa: E402
from agent.trust.bundle import decode_anchor  # noqa: E402
from agent.trust.payloads import open_checkpoint  # noqa: E402
from provisioning.devca import make_demo_identity  # noqa: E402
from tests.anvil_chain import AnvilNode  # noqa: E402

DEVICE_ID = "bench-gateway"
PASSPHRASE = "bench passphrase, development only"
RATE = 1_000  # readings/s of the figure asked for
ANCHOR_EVERY = 600  # s: 10-minute anchors
READINGS_PER_ANCHOR = RATE * ANCHOR_EVERY
BLOCK_GAS, BLOCK_TIME = 30_000_000, 12  # Ethereum's block: 30M gas every 12 s


@dataclass(frozen=True)
class Measured:
    gas: list[int]  # gasUsed of each anchor transaction, in the order anchored
    readings: list[int]  # readings each anchor's checkpoint added since the one before
    block_gas_limit: int  # of the chain the agent anchored on
    sealed: int  # readings sealed in the run
    seconds: float


def write_config(directory: Path, url: str, chain_id: int, contract: str) -> tuple[Path, str]:
    """The agent on a 1,000 readings/s simulator (100 tags every 100 ms), checkpoints every
    0.5 s, each anchored as it comes; and the address of its new chain account."""
    make_demo_identity(directory, DEVICE_ID)
    (directory / "passphrase").write_text(PASSPHRASE)
    account = create_keystore(directory / "chain-key.json", PASSPHRASE.encode())
    path = directory / "edgeseal.yaml"
    path.write_text(f"""device:
  id: {DEVICE_ID}
identity:
  key: device-key.pem
  cert_chain: device-chain.pem
sources:
  - name: load
    type: simulator
    interval: 100ms
    generate: {{count: 100, prefix: "load.", pattern: random, max: 100}}
seal:
  interval: 250ms
  checkpoint_every: 2
  checkpoint_interval: 500ms
buffer:
  dir: state
anchor:
  rpc: {url}
  chain_id: {chain_id}
  contract: "{contract}"
  key: {{keystore: chain-key.json, passphrase_file: passphrase}}
  finality: immediate
  interval: 500ms
  poll_interval: 100ms
""")
    return path, account


async def run_for(config: object, seconds: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    await run_agent(config, stop)


def measure(directory: Path, seconds: float) -> Measured:
    try:
        node = AnvilNode(directory / "anvil")
    except pytest.fail.Exception as exc:  # anvil missing or not starting: the runner says why
        sys.exit(str(exc))
    try:
        chain = node.chain
        contract = deploy_registry(chain.url)
        path, account = write_config(directory, chain.url, chain.chain_id, contract)
        fund(chain.url, account, 10**18)
        config = load_config(path)
        asyncio.run(run_for(config, seconds))
        return read_anchors(config.buffer.dir, chain.url, seconds)
    finally:
        node.stop()


def read_anchors(state_dir: str, url: str, seconds: float) -> Measured:
    """Every anchor the agent recorded, with its receipt's gas and the readings it added."""
    buffer = Buffer.open(state_dir, create=False)
    try:
        records = [decode_anchor(a.record) for a in buffer.anchors.anchored()]
        seals = {s.b: s.n for s in buffer.seals()}
    finally:
        buffer.close()
    gas, readings, covered = [], [], 0
    for record in sorted(records, key=lambda r: r.block):
        receipt = rpc(url, "eth_getTransactionReceipt", ["0x" + record.tx.hex()])
        if int(receipt["status"], 16) != 1:
            sys.exit(f"anchor transaction {record.tx.hex()} failed on chain")
        gas.append(int(receipt["gasUsed"], 16))
        size = open_checkpoint(record.checkpoint)[1].size
        readings.append(sum(seals.get(b, 0) for b in range(covered + 1, size + 1)))
        covered = size
    limit = int(rpc(url, "eth_getBlockByNumber", ["latest", False])["gasLimit"], 16)
    return Measured(gas, readings, limit, sum(seals.values()), seconds)


def report(m: Measured) -> None:
    if len(m.gas) < 2:
        sys.exit(f"only {len(m.gas)} anchors in {m.seconds:g} s: run longer (--seconds)")
    first, later = m.gas[0], m.gas[1:]
    typical = statistics.median(later)
    per_reading = typical / READINGS_PER_ANCHOR
    naive_per_second = RATE * typical
    capacity = BLOCK_GAS / BLOCK_TIME
    print(
        f"edgeseal anchoring: the agent on anvil (paris), {m.seconds:g} s, {m.sealed:,} readings sealed,"
        f" {len(m.gas)} anchors (readings added per anchor: {min(m.readings):,} to {max(m.readings):,});"
        f" chain block gas limit {m.block_gas_limit:,}"
    )
    print("| figure | value |")
    print("|---|---|")
    print(f"| gas, first anchor of this (account, device) | {first:,} |")
    print(f"| gas, later anchors: min / median / max | {min(later):,} / {typical:,.0f} / {max(later):,} |")
    print(
        f"| **gas per reading, 1,000 readings/s, 10-minute anchors** (÷ {READINGS_PER_ANCHOR:,}) "
        f"| **{per_reading:.4f}** |"
    )
    print(f"| naive baseline: one transaction per reading, gas per reading | {typical:,.0f} |")
    print(f"| naive / anchored, gas per reading | {typical / per_reading:,.0f}× |")
    print(f"| one anchor: share of a {BLOCK_GAS / 1e6:g}M-gas block | {typical / BLOCK_GAS:.3%} |")
    print(
        f"| anchored, gas per second (one anchor / {ANCHOR_EVERY} s) | {typical / ANCHOR_EVERY:,.1f} "
        f"({typical / ANCHOR_EVERY / capacity:.4%} of the chain's {capacity:,.0f} gas/s) |"
    )
    print(
        f"| naive, gas per second (1,000 transactions/s) | {naive_per_second:,.0f} "
        f"({naive_per_second / capacity:.1f}× the chain's {capacity:,.0f} gas/s) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="how long the agent runs (anchors every ~0.5 s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        (directory / "anvil").mkdir()
        report(measure(directory, args.seconds))


if __name__ == "__main__":
    main()
