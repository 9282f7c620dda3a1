"""The stream checker (agent.trust.stream) over batch messages made by the real sealer:
in order, duplicates, holes explained by drop records and holes not explained, tampering,
restarts, and certificates that are wrong, untrusted or late."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from fixtures import open_pipeline
from sealed_stream import DEVICE, Device

from agent.retention import Retention
from agent.trust import cose
from agent.trust.bundle import Batch, decode_batch
from agent.trust.payloads import SEAL_CONTENT_TYPE, open_seal
from agent.trust.stream import StreamChecker
from agent.trust.stream_events import (
    BatchVerified,
    CertificateAccepted,
    CheckpointVerified,
    Dropped,
    Duplicate,
    Event,
    Finding,
    Held,
    Missing,
    Restart,
    SignedGap,
    Summary,
)

E = TypeVar("E", bound=Event)


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Device:
    """Four batches of three readings (b 1..4, seq 1..12) and a checkpoint of size 4."""
    device = Device.make(tmp_path_factory.mktemp("device"))
    device.boot(4)
    return device


@pytest.fixture
def checker(device: Device) -> StreamChecker:
    return StreamChecker(device.roots)


def feed(checker: StreamChecker, *batches: bytes) -> list[Event]:
    return [event for data in batches for event in checker.feed_batch(data)]


def only(events: list[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def findings(events: list[Event]) -> list[str]:
    return [e.text() for e in events if isinstance(e, Finding)]


def summary(checker: StreamChecker) -> Summary:
    events = checker.finish()
    assert isinstance(events[-1], Summary)
    return events[-1]


def test_batches_in_order_verify_one_by_one(device: Device, checker: StreamChecker) -> None:
    [accepted] = checker.feed_cert(device.cert_message)
    assert isinstance(accepted, CertificateAccepted) and accepted.device == DEVICE
    events = feed(checker, *device.messages())
    assert [(e.b, e.seqs, e.readings) for e in only(events, BatchVerified)] == [
        (1, (1, 3), 3),
        (2, (4, 6), 3),
        (3, (7, 9), 3),
        (4, (10, 12), 3),
    ]
    assert findings(events) == []
    [checkpoint] = checker.feed_checkpoint(device.checkpoints()[-1])
    assert checkpoint == CheckpointVerified(4, "matches")
    result = summary(checker)
    assert result.valid and (result.batches, result.readings, result.first_b, result.last_b) == (4, 12, 1, 4)
    assert result.text().startswith("summary: VALID: 4 batches verified (b=1..4, boots 1), 12 readings")


def test_every_event_is_one_json_object(device: Device, checker: StreamChecker) -> None:
    events = checker.feed_cert(device.cert_message) + feed(checker, *device.messages()) + checker.finish()
    for event in events:
        line = json.dumps(event.as_dict())
        assert json.loads(line)["event"] == event.kind and "\n" not in event.text()


def test_the_same_batch_again_is_a_duplicate_not_a_finding(device: Device, checker: StreamChecker) -> None:
    b1, b2, b3, b4 = device.messages()
    checker.feed_cert(device.cert_message)
    events = feed(checker, b1, b2, b2, b3, b2, b4)
    assert [e.text() for e in only(events, Duplicate)] == ["duplicate of b=2", "duplicate of b=2"]
    result = summary(checker)
    assert result.valid and result.duplicates == 2 and result.batches == 4


def test_a_second_copy_with_a_changed_reading_is_a_finding(device: Device, checker: StreamChecker) -> None:
    b1, b2, b3, _ = device.messages()
    checker.feed_cert(device.cert_message)
    events = feed(checker, b1, b2, _tampered_reading(b2), b3)
    assert findings(events) == [
        "FINDING b=2: arrived again with the same seal but other contents: readings do not hash to the sealed root"
    ]
    assert not summary(checker).valid


def test_two_seals_with_one_batch_number_are_a_finding(device: Device, checker: StreamChecker) -> None:
    """The device key itself signed a second b=2 (a compromised or broken agent)."""
    b1, b2, _, _ = device.messages()
    checker.feed_cert(device.cert_message)
    events = feed(checker, b1, b2, _resealed(device, b2))
    assert findings(events) == ["FINDING b=2: two different seals with one batch number, both signed by the device"]


def test_a_tampered_reading_is_a_finding_and_the_stream_goes_on(device: Device, checker: StreamChecker) -> None:
    b1, b2, b3, b4 = device.messages()
    checker.feed_cert(device.cert_message)
    events = feed(checker, b1, _tampered_reading(b2), b3, b4)
    assert findings(events) == ["FINDING b=2: readings do not hash to the sealed root"]
    assert [e.b for e in only(events, BatchVerified)] == [1, 3, 4]
    assert [e.text() for e in only(events, Missing)] == ["missing b=2 (seq 4..6): not received (yet)"]
    assert findings(checker.finish()) == ["FINDING b=2: missing: never received; no drop record names their seqs 4..6"]


def test_a_missing_batch_no_drop_record_explains_is_a_finding_at_the_end(
    device: Device, checker: StreamChecker
) -> None:
    b1, _, b3, b4 = device.messages()
    checker.feed_cert(device.cert_message)
    events = feed(checker, b1, b3, b4)
    assert findings(events) == []
    assert only(events, Missing) == [Missing(2, 2, (4, 6))]
    assert findings(checker.finish()) == ["FINDING b=2: missing: never received; no drop record names their seqs 4..6"]
    assert summary(checker).findings == 1


def test_the_newest_batches_a_checkpoint_covers_are_missing_if_they_never_come(
    device: Device, checker: StreamChecker
) -> None:
    """The device publishes a checkpoint after the batches it covers: a watch that saw the
    batches before them and the checkpoint, but not them, lost them (or was kept from them)."""
    b1, b2, _, _ = device.messages()
    checker.feed_cert(device.cert_message)
    events = feed(checker, b1, b2) + checker.feed_checkpoint(device.checkpoints()[-1])
    assert findings(events) == []
    assert findings(checker.finish()) == ["FINDING b=3..4: missing: never received; checkpoint size=4 covers them"]


def test_a_watch_that_sees_only_a_checkpoint_misses_nothing(device: Device, checker: StreamChecker) -> None:
    """It may have begun after the batches the checkpoint covers were published."""
    checker.feed_cert(device.cert_message)
    checker.feed_checkpoint(device.checkpoints()[-1])
    assert findings(checker.finish()) == []


def test_a_batch_arriving_late_is_no_longer_missing(device: Device, checker: StreamChecker) -> None:
    b1, b2, b3, b4 = device.messages()
    checker.feed_cert(device.cert_message)
    events = feed(checker, b1, b3, b2, b4)
    assert findings(events) == [] and len(only(events, Missing)) == 1
    assert summary(checker).valid


def test_a_batch_number_far_ahead_is_one_missing_run(device: Device, checker: StreamChecker) -> None:
    b1, b2, _, _ = device.messages()
    checker.feed_cert(device.cert_message)
    events = feed(checker, b1, b2, _resealed(device, b2, b=10**15))
    assert only(events, Missing) == [Missing(3, 10**15 - 1, None)]


def test_garbage_and_a_broken_seal_are_findings_that_say_where(device: Device, checker: StreamChecker) -> None:
    b1, b2, _, _ = device.messages()
    checker.feed_cert(device.cert_message)
    broken = Batch(decode_batch(b2).seal[:-1], decode_batch(b2).salt_key, decode_batch(b2).readings).encode()
    events = feed(checker, b"\xff not cbor", b1, broken, b2)
    found = findings(events)
    assert len(found) == 2
    assert found[0].startswith("FINDING batch message 1: batch:")
    assert found[1].startswith("FINDING batch message 3: ")
    assert [e.b for e in only(events, BatchVerified)] == [1, 2]


def test_batches_dropped_undelivered_are_missing_until_their_drop_record(tmp_path: Path) -> None:
    """As tests/integration/test_disk_budget.py: the budget drops the oldest undelivered
    batches, and the drop record comes after the next batch."""
    device, stream = _dropping(tmp_path, batches=6, per_batch=1000, budget=lambda used: used * 6 // 10)
    checker = StreamChecker(device.roots)
    checker.feed_cert(device.cert_message)
    events = feed(checker, *stream)
    [missing] = only(events, Missing)
    [dropped] = only(events, Dropped)
    assert missing.first_b == 3 and dropped.first_b == 3 and dropped.last_b == missing.last_b
    assert dropped.seqs == missing.seqs and dropped.seqs[0] == 2001 and dropped.records == [8]
    assert dropped.text().startswith(f"dropped undelivered: seqs 2001..{dropped.seqs[1]} (buffer full")
    assert findings(events) == []
    result = summary(checker)
    assert result.valid and result.dropped == missing.last_b - 2


def test_a_long_hole_is_explained_by_several_drop_records_end_to_end(tmp_path: Path) -> None:
    """The agent drops at most ten batches per record, and never its newest batch with
    readings: b 3..14 take two records, b 15 stays."""
    device, stream = _dropping(tmp_path, batches=15, per_batch=100, budget=lambda used: 1)
    checker = StreamChecker(device.roots)
    checker.feed_cert(device.cert_message)
    events = feed(checker, *stream)
    assert [e.b for e in only(events, BatchVerified)] == [1, 2, 15, 16, 17, 18]
    assert only(events, Missing) == [Missing(3, 14, (201, 1400))]
    [first_record] = only(events, SignedGap)
    assert (first_record.b, first_record.seqs) == (17, (201, 1200))
    [dropped] = only(events, Dropped)
    assert (dropped.first_b, dropped.last_b, dropped.seqs, dropped.records) == (3, 14, (201, 1400), [17, 18])
    assert summary(checker).valid


def test_a_restart_is_reported_and_the_chain_continues(tmp_path: Path) -> None:
    device = Device.make(tmp_path)
    device.boot(2)
    device.boot(2)
    checker = StreamChecker(device.roots)
    events = checker.feed_cert(device.cert_message) + feed(checker, *device.messages())
    assert only(events, Restart) == [Restart(3, 1, 2, None)]
    assert findings(events) == []
    assert summary(checker).boots == [1, 2]


def test_batches_before_the_certificate_are_held_until_it_comes(device: Device) -> None:
    _, b2, b3, _ = device.messages()  # b=1 carries its chain (x5chain): leave it out
    checker = StreamChecker(device.roots)
    assert feed(checker, b2, b3) == [Held("b=2"), Held("b=3")]
    events = checker.feed_cert(device.cert_message)
    assert [type(e) for e in events] == [CertificateAccepted, BatchVerified, BatchVerified]
    assert summary(checker).valid


def test_batches_whose_certificate_never_comes_are_findings_at_the_end(device: Device) -> None:
    checker = StreamChecker(device.roots)
    feed(checker, device.messages()[1])
    assert findings(checker.finish()) == ["FINDING b=2: not verified: no certificate for its key arrived"]


def test_the_first_seal_carries_its_chain(device: Device) -> None:
    checker = StreamChecker(device.roots)
    events = feed(checker, *device.messages())
    assert isinstance(events[0], CertificateAccepted) and events[0].source == "the seal of b=1"
    assert summary(checker).valid


def test_a_certificate_from_an_unknown_ca_is_refused_and_so_is_every_batch(device: Device, tmp_path: Path) -> None:
    stranger = Device.make(tmp_path, "stranger-1")
    checker = StreamChecker(stranger.roots)  # trusts another manufacturer only
    [refused] = checker.feed_cert(device.cert_message)
    assert refused.text().startswith(
        "FINDING the certificate message: certificate chain refused: no trusted root issued"
    )
    events = feed(checker, *device.messages()[:2])
    assert [f.split(":")[0] for f in findings(events)] == ["FINDING b=1", "FINDING b=2"]
    assert "signed by a key whose certificate chain was refused: no trusted root issued" in findings(events)[1]
    assert not only(events, BatchVerified)


def test_the_certificate_of_another_device_verifies_none_of_its_batches(device: Device, tmp_path: Path) -> None:
    stranger = Device.make(tmp_path, "stranger-1")
    checker = StreamChecker(stranger.roots)
    assert isinstance(checker.feed_cert(stranger.cert_message)[0], CertificateAccepted)
    _, b2, b3, _ = device.messages()
    found = findings(feed(checker, b2, b3))
    assert len(found) == 2 and all("which no certificate received names" in f for f in found)


def test_a_checkpoint_that_disagrees_with_the_seals_received_is_a_finding(device: Device) -> None:
    checker = StreamChecker(device.roots)
    checker.feed_cert(device.cert_message)
    b1, b2, b3, _ = device.messages()
    feed(checker, b1, b2, b3)
    # the device's checkpoint of size 4 comes before b=4: compared once b=4 is here
    assert checker.feed_checkpoint(device.checkpoints()[-1]) == [CheckpointVerified(4, "later")]
    assert feed(checker, _resealed(device, device.messages()[3]))[-1] == Finding(
        "checkpoint size=4",
        "its root is not the root of the seals b 1..4 received: the device's log holds other seals",
    )


def _tampered_reading(message: bytes) -> bytes:
    """The batch with one bit of its first reading's quality flipped: still a valid leaf."""
    batch = decode_batch(message)
    first = batch.readings[0][:-1] + bytes([batch.readings[0][-1] ^ 1])
    return Batch(batch.seal, batch.salt_key, [first, *batch.readings[1:]]).encode()


def _resealed(device: Device, message: bytes, **changes: int) -> bytes:
    """The batch's seal made again by the device key, one second later and with `changes`
    to its payload."""
    batch = decode_batch(message)
    msg, payload = open_seal(batch.seal)
    body = dataclasses.replace(payload, t=payload.t + 1_000_000_000, **changes).encode()
    protected = cose.protected_header(SEAL_CONTENT_TYPE, msg.kid)
    signature = asyncio.run(device.signer.sign_digest(cose.digest_to_sign(protected, body)))
    return Batch(cose.assemble(protected, body, signature), batch.salt_key, batch.readings).encode()


def _dropping(
    directory: Path, *, batches: int, per_batch: int, budget: Callable[[int], int]
) -> tuple[Device, list[bytes]]:
    """`batches` batches sealed, b 1..2 delivered, the disk budget (`budget` of the bytes in
    use) enforced, 10 more readings sealed: the device, and its stream as a watch receives it."""
    device = Device.make(directory)

    async def run() -> list[bytes]:
        buffer, sequencer, sealer = open_pipeline(directory / "state", device.signer, DEVICE)
        try:
            for _ in range(batches):
                await sequencer.submit(device.readings(per_batch))
                await sealer.seal_pending()
            delivered = [Batch(o.cose, o.salt_key, o.readings).encode() for o in buffer.undelivered(0, 2)]
            for b in (1, 2):
                buffer.mark_delivered(b, time.time_ns())
            Retention(buffer, max_bytes=budget(buffer.used_bytes()), keep_delivered=86400, warn_at=80).enforce()
            await sequencer.submit(device.readings(10))
            await sealer.finish()  # the next batch, then the drop records
            return delivered
        finally:
            buffer.close()

    delivered = asyncio.run(run())
    return device, delivered + device.messages()
