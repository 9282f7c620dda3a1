"""`edgeseal demo` as a user runs it: its own Modbus and OPC UA simulators read by the real
drivers, a software TPM when swtpm is installed, a clearly labelled software key when it is
not, a local Mosquitto broker when Mosquitto is installed; each run ends with bundles that
verify and a tampered copy that does not. It anchors on a development chain of its own, new
at every run, or on a local node given with --rpc."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from anvil_chain import Anvil
from web3 import Web3

from agent.anchor.keystore import keystore_address
from agent.anchor.registry import artifact
from agent.buffer.anchor_journal import AnchorTx
from agent.buffer.store import Buffer
from agent.demo_broker import find_mosquitto
from agent.demo_plant import Plant, free_port
from agent.trust.bundle import Anchor, Batch, decode_bundle
from agent.trust.leaf import Leaf, decode_leaf
from agent.trust.payloads import open_checkpoint
from provisioning.swtpm import swtpm_available

RUN_CLI = "import sys; from agent.cli import main; sys.exit(main())"
# the demo on a machine without Mosquitto (its search reaches /usr/sbin whatever PATH says)
RUN_CLI_WITHOUT_MOSQUITTO = (
    "import sys, agent.demo; agent.demo.find_mosquitto = lambda: None; from agent.cli import main; sys.exit(main())"
)
MODBUS_TAGS = {"press.hydraulic_pressure", "press.strokes", "press.running", "press.motor_current"}
OPCUA_TAGS = {"oven.temperature", "line.speed", "line.state"}
# the default: the demo's first checkpoint comes ~6 s into the run (opening the chain
# keystore, then 5 s of seals), and a 10 s demo must anchor it
ANCHORING_SECONDS = "10"


def _demo(
    directory: Path, path: str, *options: str, seconds: str = "2", program: str = RUN_CLI
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PATH": path}
    argv = [sys.executable, "-c", program, "demo", "--seconds", seconds, "--dir", str(directory), *options]
    return subprocess.run(argv, env=environment, capture_output=True, text=True, timeout=120)


def _anchored_this_run(result: subprocess.CompletedProcess[str]) -> int:
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"^  anchors     (\d+) this run, .*; the bundle carries them", result.stdout, re.MULTILINE)
    assert found, result.stdout
    on_chain = re.findall(r"^  on chain    log size \d+ in block \d+: VERIFIED \(", result.stdout, re.MULTILINE)
    assert len(on_chain) == int(found[1]), result.stdout  # each checked on the chain while it runs
    return int(found[1])


def _bundle_anchors(directory: Path) -> list[Anchor]:
    return decode_bundle((directory / "bundle.cbor").read_bytes()).anchors


def _verify(directory: Path, *options: str, bundle: str = "bundle.cbor") -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", RUN_CLI, "verify", str(directory / bundle), "--ca", str(directory / "ca.pem")]
    return subprocess.run([*argv, *options], capture_output=True, text=True, timeout=120)


def _leaves(directory: Path) -> list[Leaf]:
    batches = decode_bundle((directory / "bundle.cbor").read_bytes()).batches
    return [decode_leaf(raw) for batch in batches if isinstance(batch, Batch) for raw in batch.readings]


def _processes(pattern: str) -> int:
    return len(subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split())


def test_the_demo_signs_in_a_software_tpm_when_swtpm_is_installed(tmp_path: Path) -> None:
    assert swtpm_available(), "swtpm is not installed (bash scripts/setup.sh installs it)"
    before = _processes("swtpm socket")
    result = _demo(tmp_path, os.environ["PATH"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "key in a software TPM (swtpm" in result.stdout
    assert "signer: tpm" in (tmp_path / "edgeseal.yaml").read_text()
    assert not (tmp_path / "device-key.pem").exists()  # the key is in the TPM only
    assert result.stdout.count(": VALID") == 2
    assert _verify(tmp_path).returncode == 0
    assert _processes("swtpm socket") == before  # the demo stopped its TPM


def test_without_swtpm_the_demo_labels_its_software_key(tmp_path: Path) -> None:
    python_only = str(Path(sys.executable).parent)  # no swtpm on this PATH
    result = _demo(tmp_path, python_only)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SOFTWARE KEY (development only, not a TPM" in result.stdout
    assert (tmp_path / "device-key.pem").exists()
    assert _verify(tmp_path).returncode == 0


def test_the_demo_reads_its_plant_over_modbus_and_opcua_publishes_and_catches_a_forged_copy(tmp_path: Path) -> None:
    assert find_mosquitto(), "mosquitto is not installed (apt-get install -y mosquitto)"
    result = _demo(tmp_path, os.environ["PATH"], seconds="4")
    assert result.returncode == 0, result.stdout + result.stderr
    for source, driver in (
        ("press-plc", "modbus, tcp://127.0.0.1:"),
        ("line-controller", "opcua, opc.tcp://127.0.0.1:"),
    ):
        found = re.search(
            rf"^ +(?:sources +)?{source} \({driver}\d+.*\): (\d+) readings of", result.stdout, re.MULTILINE
        )
        assert found and int(found[1]) > 0, result.stdout

    good = {leaf.tag: leaf.value for leaf in _leaves(tmp_path) if leaf.quality == 0}
    assert MODBUS_TAGS | OPCUA_TAGS <= good.keys(), sorted(good)  # every tag read, over the wire, with a value
    assert 150 < good["press.hydraulic_pressure"] < 250 and isinstance(good["press.strokes"], int)
    assert good["line.state"] in ("RUNNING", "CHANGEOVER") and 170 < good["oven.temperature"] < 190

    published = re.search(
        r"^  mqtt        (\d+) of (\d+) batches acknowledged by mosquitto", result.stdout, re.MULTILINE
    )
    assert published and int(published[1]) >= 1, result.stdout
    assert "mqtt:\n  url: mqtt://127.0.0.1:" in (tmp_path / "edgeseal.yaml").read_text()
    assert _processes(str(tmp_path / "mosquitto")) == 0  # the demo stopped its broker

    assert result.stdout.count(": VALID") == 2  # the full and the selective bundle
    forged = tmp_path / "bundle-tampered.cbor"
    assert f"{forged}: INVALID, as expected (press.hydraulic_pressure at seq " in result.stdout
    assert "  FINDING     batches[" in result.stdout
    checked = _verify(tmp_path, bundle=forged.name)
    assert checked.returncode == 1 and "INVALID" in checked.stdout, checked.stdout + checked.stderr


def test_the_plant_simulators_stop_leaving_no_task_or_thread() -> None:
    threads = set(threading.enumerate())

    async def start_and_stop() -> set[asyncio.Task[object]]:
        async with Plant(free_port(), free_port()):
            await asyncio.sleep(0.3)  # a few ticks of changing values
        return asyncio.all_tasks() - {asyncio.current_task()}

    assert asyncio.run(start_and_stop()) == set()
    assert set(threading.enumerate()) == threads


def test_without_mosquitto_the_demo_says_it_published_nothing(tmp_path: Path) -> None:
    result = _demo(tmp_path, os.environ["PATH"], program=RUN_CLI_WITHOUT_MOSQUITTO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "  mqtt        SKIPPED: Mosquitto is not installed" in result.stdout
    assert "mqtt:" not in (tmp_path / "edgeseal.yaml").read_text()
    assert result.stdout.count(": VALID") == 2


def test_the_demo_anchors_and_a_second_run_anchors_again_on_its_new_chain(tmp_path: Path) -> None:
    first = _demo(tmp_path, os.environ["PATH"], seconds=ANCHORING_SECONDS)
    assert _anchored_this_run(first) >= 1
    assert "development chain" in first.stdout and "DEVELOPMENT ONLY" in first.stdout
    assert (tmp_path / "chain-key.json").exists() and (tmp_path / "chain-passphrase").stat().st_mode & 0o077 == 0
    earlier = _bundle_anchors(tmp_path)
    assert len(earlier) >= 1
    assert "finality: immediate" in (tmp_path / "edgeseal.yaml").read_text()

    _leave_a_transaction_open(tmp_path / "state", nonce=7)  # as a run stopped before it was mined leaves it
    # the new chain holds none of the last run's anchors: the newest checkpoint is anchored at once
    second = _demo(tmp_path, os.environ["PATH"], seconds="4")
    this_run = _anchored_this_run(second)
    assert this_run >= 1
    assert f"and {len(earlier)} of earlier runs, on development chains now gone" in second.stdout
    carried = _bundle_anchors(tmp_path)
    assert len(carried) == len(earlier) + this_run
    assert {a.tx for a in earlier} < {a.tx for a in carried}
    assert second.stdout.count(": VALID") == 2
    assert _verify(tmp_path).returncode == 0
    buffer = Buffer.open(tmp_path / "state", create=False)
    try:
        assert not buffer.anchors.open_transactions()  # the one sent to the gone chain is void
    finally:
        buffer.close()


def _leave_a_transaction_open(state: Path, nonce: int) -> None:
    """An anchor transaction journalled at a nonce the next, new chain will not reach: left
    open, the agent would wait for it."""
    buffer = Buffer.open(state)
    try:
        size = buffer.last_checkpoint_size()
        signed = time.time_ns() - 60 * 10**9  # not holding the next anchor back by its interval
        buffer.anchors.add(AnchorTx(os.urandom(32), nonce, size, b"\x02" + os.urandom(100), 2, 1, signed))
    finally:
        buffer.close()


def test_the_demo_anchors_on_a_local_node_given_with_rpc(tmp_path: Path, anvil: Anvil) -> None:
    first = _demo(tmp_path, os.environ["PATH"], "--rpc", anvil.url, seconds=ANCHORING_SECONDS)
    assert _anchored_this_run(first) >= 1
    assert f"node at {anvil.url}, chain {anvil.chain_id}" in first.stdout and "deployed now" in first.stdout
    contract = json.loads((tmp_path / "chain-registry.json").read_text())["contract"]
    registry = Web3(Web3.HTTPProvider(anvil.url)).eth.contract(address=contract, abi=artifact()["abi"])
    latest = max(_bundle_anchors(tmp_path), key=lambda a: a.block)
    message, checkpoint = open_checkpoint(latest.checkpoint)
    account = keystore_address(tmp_path / "chain-key.json")
    assert registry.functions.latest(account, message.kid).call() == [checkpoint.size, latest.block]
    assert f"--ca {tmp_path / 'ca.pem'} --rpc {anvil.url}" in first.stdout  # the node outlives the demo
    checked = _verify(tmp_path, "--rpc", anvil.url)
    assert checked.returncode == 0 and "VERIFIED on chain" in checked.stdout, checked.stdout + checked.stderr

    second = _demo(tmp_path, os.environ["PATH"], "--rpc", anvil.url)  # the node keeps the registry
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"AnchorRegistry {contract} (as last run)" in second.stdout
