"""`edgeseal demo` as a user runs it: a software TPM when swtpm is installed, a clearly
labelled software key when it is not; both end with bundles that verify. It anchors on a
development chain of its own, new at every run, or on a local node given with --rpc."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from anvil_chain import Anvil
from web3 import Web3

from agent.anchor.keystore import keystore_address
from agent.anchor.registry import artifact
from agent.buffer.anchor_journal import AnchorTx
from agent.buffer.store import Buffer
from agent.trust.bundle import Anchor, decode_bundle
from agent.trust.payloads import open_checkpoint
from provisioning.swtpm import swtpm_available

RUN_CLI = "import sys; from agent.cli import main; sys.exit(main())"
# the default: the demo's first checkpoint comes ~6 s into the run (opening the chain
# keystore, then 5 s of seals), and a 10 s demo must anchor it
ANCHORING_SECONDS = "10"


def _demo(directory: Path, path: str, *options: str, seconds: str = "2") -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PATH": path}
    argv = [sys.executable, "-c", RUN_CLI, "demo", "--seconds", seconds, "--dir", str(directory), *options]
    return subprocess.run(argv, env=environment, capture_output=True, text=True, timeout=120)


def _anchored_this_run(result: subprocess.CompletedProcess[str]) -> int:
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"^  anchors     (\d+) this run, .*; the bundle carries them", result.stdout, re.MULTILINE)
    assert found, result.stdout
    return int(found[1])


def _bundle_anchors(directory: Path) -> list[Anchor]:
    return decode_bundle((directory / "bundle.cbor").read_bytes()).anchors


def _verify(directory: Path, *options: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", RUN_CLI, "verify", str(directory / "bundle.cbor"), "--ca", str(directory / "ca.pem")]
    return subprocess.run([*argv, *options], capture_output=True, text=True, timeout=120)


def _swtpm_processes() -> int:
    listed = subprocess.run(["pgrep", "-f", "swtpm socket"], capture_output=True, text=True).stdout
    return len(listed.split())


def test_the_demo_signs_in_a_software_tpm_when_swtpm_is_installed(tmp_path: Path) -> None:
    assert swtpm_available(), "swtpm is not installed (bash scripts/setup.sh installs it)"
    before = _swtpm_processes()
    result = _demo(tmp_path, os.environ["PATH"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "key in a software TPM (swtpm" in result.stdout
    assert "signer: tpm" in (tmp_path / "edgeseal.yaml").read_text()
    assert not (tmp_path / "device-key.pem").exists()  # the key is in the TPM only
    assert result.stdout.count(": VALID") == 2
    assert _verify(tmp_path).returncode == 0
    assert _swtpm_processes() == before  # the demo stopped its TPM


def test_without_swtpm_the_demo_labels_its_software_key(tmp_path: Path) -> None:
    python_only = str(Path(sys.executable).parent)  # no swtpm on this PATH
    result = _demo(tmp_path, python_only)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SOFTWARE KEY (development only, not a TPM" in result.stdout
    assert (tmp_path / "device-key.pem").exists()
    assert _verify(tmp_path).returncode == 0


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
