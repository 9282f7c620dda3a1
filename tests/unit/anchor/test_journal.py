"""The anchoring journal in the buffer: transactions stored before they are sent,
settled or voided per nonce, records kept, alarms kept."""

from __future__ import annotations

from pathlib import Path

from agent.buffer.anchor_journal import AnchorTx
from agent.buffer.store import Buffer


def tx(n: int, nonce: int, signed: int) -> AnchorTx:
    return AnchorTx(bytes([n]) * 32, nonce, 10 * n, b"raw%d" % n, 100 * n, n, signed)


def test_a_nonce_settles_to_one_anchored_transaction_and_voids_the_others(tmp_path: Path) -> None:
    buffer = Buffer.open(tmp_path)
    journal = buffer.anchors
    journal.add(tx(1, 0, 100))
    journal.add(tx(2, 0, 200))  # a replacement
    assert [t.hash for t in journal.open_transactions()] == [tx(1, 0, 0).hash, tx(2, 0, 0).hash]
    journal.settle(tx(1, 0, 0).hash, 10, b"record", 300)
    assert journal.open_transactions() == []
    assert [(a.size, a.record, a.t) for a in journal.anchored()] == [(10, b"record", 300)]
    assert journal.latest_anchored().size == 10  # type: ignore[union-attr]
    assert journal.last_signed() == 100  # the anchored one: a void replacement does not count
    buffer.close()


def test_a_void_nonce_does_not_hold_the_next_anchor_back(tmp_path: Path) -> None:
    buffer = Buffer.open(tmp_path)
    journal = buffer.anchors
    journal.add(tx(1, 0, 100))
    journal.add(tx(2, 1, 500))
    journal.void(1)
    assert [t.nonce for t in journal.open_transactions()] == [0]
    assert journal.last_signed() == 100
    buffer.close()


def test_the_journal_survives_a_reopen_and_alarms_are_kept(tmp_path: Path) -> None:
    buffer = Buffer.open(tmp_path)
    buffer.anchors.add(tx(3, 4, 100))
    buffer.anchors.raise_alarm("the chain says otherwise", 7)
    buffer.close()
    buffer = Buffer.open(tmp_path)
    assert buffer.anchors.open_transactions() == [tx(3, 4, 100)]
    assert [(a.t, a.message) for a in buffer.anchors.alarms()] == [(7, "the chain says otherwise")]
    buffer.close()
