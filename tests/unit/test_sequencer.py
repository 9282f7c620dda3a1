"""The sequencer's bookkeeping against a real buffer on disk."""

import asyncio
import time
from pathlib import Path

from agent.buffer.store import Buffer
from agent.sequencer import Sequencer
from agent.trust.leaf import decode_leaf
from drivers.api import Quality, Reading


def _readings(n: int, tag: str = "t") -> list[Reading]:
    return [Reading(tag, time.time_ns(), i, 0) for i in range(n)]


def _sequencer(buffer: Buffer, max_pending: int = 1000) -> Sequencer:
    return Sequencer(buffer, max_pending=max_pending, flush_interval=0.01, max_batch=50)


def test_flush_numbers_commits_and_batches(tmp_path: Path) -> None:
    buffer = Buffer.open(tmp_path)
    seq = _sequencer(buffer)
    asyncio.run(seq.submit(_readings(30)))
    assert asyncio.run(seq.drain()) == 30
    assert [decode_leaf(leaf).seq for _, leaf in buffer.readings(1, 30)] == list(range(1, 31))
    assert not seq.batch_full.is_set()
    asyncio.run(seq.submit(_readings(30)))
    asyncio.run(seq.drain())
    assert seq.batch_full.is_set(), "max_batch reached: the sealer is woken"
    batch = seq.take_batch()
    assert batch is not None and (batch.s0, batch.n, batch.gap) == (1, 60, None)
    assert seq.take_batch() is None
    buffer.close()


def test_unsealed_readings_of_a_crashed_run_go_into_the_first_batch(tmp_path: Path) -> None:
    buffer = Buffer.open(tmp_path)
    seq = _sequencer(buffer)
    asyncio.run(seq.submit(_readings(12)))
    asyncio.run(seq.drain())
    buffer.close()  # the process "dies" before sealing

    buffer = Buffer.open(tmp_path)
    seq = _sequencer(buffer)
    batch = seq.take_batch()
    assert batch is not None and (batch.s0, batch.n) == (1, 12)
    asyncio.run(seq.submit(_readings(1)))
    asyncio.run(seq.drain())
    assert buffer.next_seq() == 14
    buffer.close()


def test_drops_become_one_gap_until_a_reading_is_committed(tmp_path: Path) -> None:
    buffer = Buffer.open(tmp_path)
    seq = _sequencer(buffer, max_pending=10)
    asyncio.run(seq.submit(_readings(5)))
    asyncio.run(seq.drain())  # seq 1..5 committed, open batch
    asyncio.run(seq.submit(_readings(13)))  # 3 dropped: seq 6..8
    asyncio.run(seq.submit(_readings(2)))  # 2 more dropped: seq 9..10
    assert seq.dropped == 5
    asyncio.run(seq.drain())  # the 10 queued become 11..20
    first, second = seq.take_batch(), seq.take_batch()
    assert first is not None and (first.s0, first.n, first.gap) == (1, 5, None)
    assert second is not None and (second.s0, second.n) == (11, 10)
    assert second.gap is not None and (second.gap.first, second.gap.last) == (6, 10)
    buffer.close()


def test_a_value_the_format_cannot_hold_is_marked_bad_not_fatal(tmp_path: Path) -> None:
    buffer = Buffer.open(tmp_path)
    seq = _sequencer(buffer)
    now = time.time_ns()
    readings = [Reading("ok", now, 1.5, 0), Reading("odd", now, {1, 2}, 0), Reading("huge", now, 2**70, 0)]
    asyncio.run(seq.submit(readings))
    assert asyncio.run(seq.drain()) == 3
    leaves = [decode_leaf(leaf) for _, leaf in buffer.readings(1, 3)]
    assert [(x.tag, x.value, x.quality) for x in leaves] == [
        ("ok", 1.5, 0),
        ("odd", None, 0x80060000),
        ("huge", None, 0x80060000),
    ]
    buffer.close()


def test_a_bad_reading_never_carries_a_value(tmp_path: Path) -> None:
    buffer = Buffer.open(tmp_path)
    seq = _sequencer(buffer)
    asyncio.run(seq.submit([Reading("t", time.time_ns(), 42, 0x80050000), Reading("t", 1, 7, 0x40900000)]))
    asyncio.run(seq.drain())
    assert [decode_leaf(leaf)[3:] for _, leaf in buffer.readings(1, 2)] == [(None, 0x80050000), (7, 0x40900000)]
    buffer.close()


def test_seqs_missing_at_restart_become_a_signed_gap_not_a_broken_batch(tmp_path: Path) -> None:
    """Readings dropped (their gap not yet sealed) and the process killed: the next start
    must seal the stored runs as they are, with the missing seqs as a gap between them."""
    buffer = Buffer.open(tmp_path)
    seq = _sequencer(buffer, max_pending=10)
    asyncio.run(seq.submit(_readings(5)))
    asyncio.run(seq.drain())  # seq 1..5
    asyncio.run(seq.submit(_readings(14)))  # 4 dropped: seq 6..9
    asyncio.run(seq.drain())  # seq 10..19
    buffer.close()  # killed before sealing anything

    buffer = Buffer.open(tmp_path)
    seq = _sequencer(buffer)
    first, second = seq.take_batch(), seq.take_batch()
    assert first is not None and (first.s0, first.n, first.gap) == (1, 5, None)
    assert second is not None and (second.s0, second.n) == (10, 10)
    assert second.gap is not None and (second.gap.first, second.gap.last) == (6, 9)
    assert second.gap.why == "not in the buffer at restart"
    assert seq.take_batch() is None
    buffer.close()


def test_drops_without_a_write_failure_say_so(tmp_path: Path) -> None:
    buffer = Buffer.open(tmp_path)
    seq = _sequencer(buffer, max_pending=10)
    asyncio.run(seq.submit(_readings(12)))
    asyncio.run(seq.drain())
    batch = seq.take_batch()
    assert batch is not None and batch.gap is not None
    assert batch.gap.why == "dropped from the full memory queue: readings came faster than they were stored"
    buffer.close()


def test_many_unsealed_readings_are_recovered_in_bounded_batches(tmp_path: Path) -> None:
    buffer = Buffer.open(tmp_path)
    now = time.time_ns()
    from agent.trust.leaf import encode_leaf

    buffer.insert_readings([(s, encode_leaf(s, now, "t", s, 0)) for s in range(1, 125)])
    buffer.close()  # as after a long signer outage: all stored, none sealed
    buffer = Buffer.open(tmp_path)
    seq = _sequencer(buffer)  # max_batch 50
    batches = [seq.take_batch() for _ in range(seq.ready())]
    assert [(b.s0, b.n) for b in batches if b] == [(1, 50), (51, 50), (101, 24)]
    buffer.close()


def test_a_reading_the_leaf_cannot_hold_is_kept_as_bad_and_spares_its_batch(tmp_path: Path) -> None:
    """A time beyond CBOR's integers or text that is not UTF-8 (driver bugs) is stored as
    Bad_EncodingError, at the time it was stored when its own cannot be held; the good
    readings submitted with it are stored as they are."""
    buffer = Buffer.open(tmp_path)
    seq = _sequencer(buffer)
    now = time.time_ns()
    asyncio.run(seq.submit([Reading("far", 2**70, 1.0), Reading("text", now, "\udcff"), Reading("ok", now, 2.5)]))
    assert asyncio.run(seq.drain()) == 3
    far, text, ok = (decode_leaf(leaf) for _, leaf in buffer.readings(1, 3))
    assert (far.value, far.quality) == (None, Quality.BAD_ENCODING_ERROR) and now <= far.ts <= time.time_ns()
    assert (text.value, text.quality, text.ts) == (None, Quality.BAD_ENCODING_ERROR, now)
    assert (ok.value, ok.quality, ok.ts) == (2.5, 0, now)
    buffer.close()
