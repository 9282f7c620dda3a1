"""The power-cut suite (DESIGN 5: a sealed reading "is never lost by a crash or power
cut"). A kill -9 leaves the operating system's page cache intact, so it cannot show a
missing fsync. Here the agent's state directory lives on a file system that keeps writes
in memory until they are synced (tests/powercut_fs.py), and each trial ends in a power
cut: the file system's daemon dies with everything unsynced, then the agent, at every
crash point and at random moments, with MQTT delivery and anchoring running.

After every cut, besides the crash suite's checks (the buffer opens clean, nothing that
survived an earlier cut is lost, `b` and `seq` continue), what the world outside saw must
have survived: every seal a subscriber received from the broker is in the buffer byte for
byte, and every checkpoint anchored on the chain is in the buffer with the anchored root.
An agent that published or anchored before its data was durable would fail here. At the
end an orderly run, stopped and then cut, must leave everything verifiable, with no alarm.

`EDGESEAL_POWERCUT_TRIALS` sets the number of cuts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from agent_harness import DEVICE_ID, export_and_verify, write_config
from anchor_harness import ChainAccount, Journal, anchor_section, deploy_registry, fund
from anvil_chain import Anvil
from crash_harness import Snapshot, Trials, assert_kept, snapshot
from mqtt_auditor import Subscriber
from mqtt_broker import BrokerFarm, BrokerSpec
from powercut_fs import PowerCutFs

from agent.anchor import devchain
from agent.crashpoints import POINTS
from agent.trust.anchors import ANCHORED_TOPIC, AnchoredEvent, decode_anchored
from agent.trust.payloads import open_checkpoint

TRIALS = int(os.environ.get("EDGESEAL_POWERCUT_TRIALS", str(len(POINTS) + 1)))
# lighter than the crash suite's: every write goes through a file system daemon in Python
LOAD = """  - name: load
    type: simulator
    interval: 50ms
    generate: {count: 100, prefix: "p.", pattern: random}"""
SEALING = "interval: 100ms\n  checkpoint_every: 5"


def anchored_on_chain(url: str, contract: str) -> list[AnchoredEvent]:
    logs = devchain.rpc(
        url, "eth_getLogs", [{"address": contract, "fromBlock": "0x0", "topics": ["0x" + ANCHORED_TOPIC.hex()]}]
    )
    return [decode_anchored([bytes.fromhex(t[2:]) for t in x["topics"]], bytes.fromhex(x["data"][2:])) for x in logs]


@pytest.mark.timeout(180 + 30 * TRIALS)  # a trial takes 3-20 s
def test_a_power_cut_at_every_crash_point_loses_nothing_the_world_saw(
    tmp_path: Path, mqtt_brokers: BrokerFarm, anvil: Anvil, chain_keystore: ChainAccount
) -> None:
    power = PowerCutFs(tmp_path / "disk", tmp_path / "state")
    broker = mqtt_brokers.start(BrokerSpec(persistence=True))
    subscriber = Subscriber(broker, DEVICE_ID)
    contract = deploy_registry(anvil)
    fund(anvil, chain_keystore.address)
    config = write_config(tmp_path, sources=LOAD, seal=SEALING)  # buffer.dir: state, the mount
    config.write_text(
        config.read_text()
        + f"mqtt:\n  url: {broker.url}\n  keepalive: 2s\n"
        + anchor_section(anvil.url, anvil.chain_id, contract, chain_keystore)
    )
    published = anchored = 0

    def the_world_saw_only_durable_data(now: Snapshot) -> None:
        nonlocal published, anchored
        seen = subscriber.seen()
        for b, seal in seen.items():
            assert b in now.seals and now.seals[b].cose == seal, f"batch {b} was published, then lost by a power cut"
        events = anchored_on_chain(anvil.url, contract)
        for event in events:
            checkpoint = now.checkpoints.get(event.tree_size)
            assert checkpoint is not None, f"checkpoint {event.tree_size} was anchored, then lost by a power cut"
            assert open_checkpoint(checkpoint)[1].root == event.root
        published, anchored = len(seen), len(events)

    seed = int.from_bytes(os.urandom(4), "big")
    trials = Trials(config, seed, power)
    started = time.monotonic()
    try:
        trials.run(TRIALS, POINTS, the_world_saw_only_durable_data)
        reached = set(trials.tally.kills)
        assert reached >= {*POINTS, "random"}, f"seed {seed}: never cut at {set(POINTS) - reached}"

        agent = trials.start()  # an orderly run, then the power goes as after a shutdown
        time.sleep(4.0)
        assert trials.stop(agent) == 0, trials.log.read_text()[-3000:]
        final = snapshot(trials.db)
        assert_kept(trials.state, final, "the orderly run")
        the_world_saw_only_durable_data(final)
        assert not Journal(power.backing).alarms()
    finally:
        subscriber.close()
        power.cut()

    power.mount()  # a fresh daemon: the mount shows the disk as it is
    try:
        report, _ = export_and_verify(config)
    finally:
        power.cut()
    assert report.valid, report.findings
    assert len(report.complete) == 1 and not report.gaps, (report.complete, report.gaps)
    print(
        f"reliability: power cut: {TRIALS} trials in {time.monotonic() - started:.0f} s (seed {seed}):"
        f" {trials.tally.line()}; {len(final.seals)} batches, {report.readings} readings sealed, none lost;"
        f" {published} batches published and {anchored} checkpoints anchored, every one still on the disk"
    )


@pytest.mark.parametrize("synced", [True, False])
def test_the_file_system_keeps_only_what_was_synced(tmp_path: Path, synced: bool) -> None:
    """The suite's premise: without an fsync, a power cut loses the write."""
    power = PowerCutFs(tmp_path / "disk", tmp_path / "mnt").mount()
    try:
        fd = os.open(power.mountpoint / "file", os.O_RDWR | os.O_CREAT)
        os.write(fd, b"durable?" * 1000)
        if synced:
            os.fsync(fd)
        os.write(fd, b"never synced")
        assert os.pread(fd, 8, 0) == b"durable?", "reads see the unsynced data, as from a page cache"
        os.close(fd)
    finally:
        power.cut()
    assert (power.backing / "file").read_bytes() == (b"durable?" * 1000 if synced else b"")


def test_a_file_truncated_then_regrown_reads_zeros_past_the_cut(tmp_path: Path) -> None:
    """As SQLite resets its shared-memory file (truncated to 3 bytes, then regrown): stale
    bytes from the disk must not reappear, or SQLite would trust a stale WAL index."""
    power = PowerCutFs(tmp_path / "disk", tmp_path / "mnt").mount()
    try:
        fd = os.open(power.mountpoint / "shm", os.O_RDWR | os.O_CREAT)
        os.write(fd, b"x" * 8192)
        os.fsync(fd)
        os.ftruncate(fd, 3)
        os.pwrite(fd, b"\0", 8191)
        assert os.pread(fd, 8192, 0) == b"xxx" + bytes(8189)
        os.close(fd)
    finally:
        power.cut()
