"""The crash suite (DESIGN 5, first promise): the whole agent under load — readings,
sealing, checkpoints, MQTT delivery to Mosquitto, anchoring on anvil — killed with SIGKILL
over and over, at every crash point (agent/crashpoints.py: between the steps whose order
the promises rest on) and at random moments. After every kill the buffer must open clean
(`PRAGMA integrity_check`), every batch sealed before is still there byte for byte with
all its readings, `b` and `seq` continue without a hole, and checkpoints and anchor
records never change. After the last kill an orderly run must deliver and anchor, every
batch acknowledged by the broker must have reached a subscriber (copies recognisable by
`b`), and the export must verify, offline and on the chain.

`EDGESEAL_CRASH_TRIALS` sets the number of kills (CI runs a short suite; docs/reliability.md
gives the full run's figures and command).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from agent_harness import DEVICE_ID, export_and_verify, write_config
from anchor_harness import ChainAccount, Journal, anchor_section, deploy_registry, fund, wait_for
from anvil_chain import Anvil
from cli_runner import in_process
from crash_harness import Trials, assert_kept, snapshot
from mqtt_auditor import Subscriber
from mqtt_broker import BrokerFarm, BrokerSpec

from agent.crashpoints import POINTS

TRIALS = int(os.environ.get("EDGESEAL_CRASH_TRIALS", str(len(POINTS) + 1)))  # CI: each point once
LOAD = """  - name: load
    type: simulator
    interval: 10ms
    generate: {count: 200, prefix: "p.", pattern: random}"""
# More than one core can store: the memory queue overflows, readings are dropped, and
# kills land between a drop and the seal that would have signed its gap.
OVERLOAD = """  - name: flood
    type: simulator
    interval: 10ms
    generate: {count: 4000, prefix: "f.", pattern: random}"""
SEALING = "interval: 100ms\n  checkpoint_every: 5"


@pytest.mark.timeout(180 + 20 * TRIALS)  # a trial takes 2-10 s
def test_kill_9_at_every_crash_point_loses_nothing(
    tmp_path: Path,
    mqtt_brokers: BrokerFarm,
    anvil: Anvil,
    chain_keystore: ChainAccount,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broker = mqtt_brokers.start(BrokerSpec(persistence=True))
    subscriber = Subscriber(broker, DEVICE_ID)
    contract = deploy_registry(anvil)
    fund(anvil, chain_keystore.address)
    config = write_config(tmp_path, sources=LOAD, seal=SEALING)
    config.write_text(
        config.read_text()
        + f"mqtt:\n  url: {broker.url}\n  keepalive: 2s\n"
        + anchor_section(anvil.url, anvil.chain_id, contract, chain_keystore)
    )
    seed = int.from_bytes(os.urandom(4), "big")
    trials = Trials(config, seed)
    started = time.monotonic()
    try:
        trials.run(TRIALS, POINTS)
        reached = set(trials.tally.kills)
        assert reached >= {*POINTS, "random"}, f"seed {seed}: never killed at {set(POINTS) - reached}"

        # an orderly run delivers what waits and anchors a checkpoint of its own
        sealed, checkpointed = len(trials.state.seals), max(trials.state.checkpoints, default=0)
        agent = trials.start()
        journal = Journal(config.parent / "state")
        wait_for(lambda: _caught_up(trials.db, sealed, checkpointed), "the backlog delivered, a new anchor", 90)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0, trials.log.read_text()[-3000:]
        assert not journal.alarms(), journal.alarms()
        final = snapshot(trials.db)
        assert_kept(trials.state, final, "the orderly run")
        received = wait_for(lambda: _received_all_delivered(subscriber, trials.db), "the subscriber caught up")
    finally:
        subscriber.close()

    report, bundle = export_and_verify(config)
    assert report.valid, report.findings
    assert len(report.complete) == 1 and not report.gaps, (report.complete, report.gaps)
    # every start is counted, but one killed before its first seal leaves no seal of its boot
    assert report.boots[-1] == final.boots and TRIALS + 1 - trials.tally.kills["random"] <= final.boots <= TRIALS + 1
    path = tmp_path / "bundle.cbor"
    path.write_bytes(bundle)
    on_chain = in_process(capsys, "verify")(path, "--ca", tmp_path / "ca.pem", "--rpc", anvil.url)
    assert on_chain.code == 0 and "VERIFIED on chain" in on_chain.out, on_chain.out + on_chain.err

    copies = sum(received.values()) - len(received)
    print(
        f"reliability: crash: full stack, {TRIALS} trials in {time.monotonic() - started:.0f} s (seed {seed}):"
        f" {trials.tally.line()}; {len(final.seals)} batches, {report.readings} readings sealed, none lost;"
        f" {final.boots} boots; {len(final.anchors)} anchors verified on chain; {copies} duplicate deliveries by b"
    )


@pytest.mark.timeout(120 + 10 * TRIALS)
def test_kill_9_while_overloaded_leaves_only_signed_gaps(tmp_path: Path) -> None:
    """Overloaded, the memory queue drops readings: kills between a drop and the seal
    that signs its gap must leave the gap signed by the next start, never silent."""
    config = write_config(tmp_path, sources=OVERLOAD, seal=SEALING)
    config.write_text(config.read_text().replace("buffer:\n", "buffer:\n  max_pending: 1000\n"))
    seed = int.from_bytes(os.urandom(4), "big")
    trials = Trials(config, seed)
    points = ("readings.written", "seal.signed", "seal.written", "checkpoint.signed", "checkpoint.written")
    count = max(len(points) + 1, TRIALS // 2)
    trials.run(count, points)

    agent = trials.start()  # a last, orderly run checkpoints everything
    time.sleep(2.0)
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 0, trials.log.read_text()[-3000:]
    report, _ = export_and_verify(config)
    assert report.valid, report.findings
    assert report.gaps, "the overload dropped nothing: the test did not test drops"
    assert all(gap.signed for gap in report.gaps), report.gaps
    pieces = sorted([*report.complete, *((g.first, g.last) for g in report.gaps)])
    assert pieces[0][0] == 1 and all(a[1] + 1 == b[0] for a, b in zip(pieces, pieces[1:])), (
        "every seq from 1 on is either a verified reading or inside a signed gap"
    )
    print(
        f"reliability: crash: overloaded, {count} trials (seed {seed}): {trials.tally.line()};"
        f" {report.readings} readings sealed, {len(report.gaps)} signed gaps, every seq accounted for"
    )


def _caught_up(db: Path, sealed: int, checkpointed: int) -> bool:
    """The batches sealed before this run are delivered, and a checkpoint of this run is anchored."""
    buffer = Journal(db.parent)
    [(waiting,)] = buffer.rows("SELECT count(*) FROM seals WHERE delivered IS NULL AND b <= ?", sealed)
    [(anchored,)] = buffer.rows("SELECT coalesce(max(size), 0) FROM anchors")
    return waiting == 0 and anchored > checkpointed


def _received_all_delivered(subscriber: Subscriber, db: Path) -> Counter[int] | None:
    """Every batch the broker acknowledged reached the subscriber: the numbers received
    are exactly 1..last sealed."""
    delivered = {b for (b,) in Journal(db.parent).rows("SELECT b FROM seals WHERE delivered IS NOT NULL")}
    received = subscriber.numbers()
    return received if delivered <= set(received) else None
