"""The anchoring's durable state, in the buffer database: the journal of signed anchor
transactions, the final anchor records, and alarms.

A transaction is written here, fsync'd, before it is sent, so after any crash the agent
knows every nonce it may have used and re-sends the same bytes rather than signing a
second, different transaction. Whether a transaction was mined is not stored: it is asked
of the chain again after a restart, which is the only authority on it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

OPEN, ANCHORED, VOID = 0, 1, 2
Writing = Callable[[str], AbstractContextManager[None]]


@dataclass(frozen=True)
class AnchorTx:
    hash: bytes
    nonce: int
    size: int  # the checkpoint it anchors
    raw: bytes
    max_fee: int
    tip: int
    signed: int  # ns


@dataclass(frozen=True)
class AnchoredCheckpoint:
    size: int
    record: bytes  # CBOR anchor record
    t: int  # ns, when found final


@dataclass(frozen=True)
class Alarm:
    t: int
    message: str


class AnchorJournal:
    def __init__(self, conn: sqlite3.Connection, durably: Writing) -> None:
        self._conn, self._durably = conn, durably

    def open_transactions(self) -> list[AnchorTx]:
        """The signed transactions that may yet be mined, oldest first (one nonce: the
        worker sends the next only when these are settled)."""
        rows = self._conn.execute(
            "SELECT hash, nonce, size, raw, max_fee, tip, signed FROM anchor_txs WHERE state = ? ORDER BY signed",
            (OPEN,),
        ).fetchall()
        return [AnchorTx(*row) for row in rows]

    def last_signed(self) -> int | None:
        """When the newest anchor transaction that is not void was signed (ns): the anchor
        interval runs from it, so one that was never mined does not hold the next back."""
        return self._conn.execute("SELECT max(signed) FROM anchor_txs WHERE state != ?", (VOID,)).fetchone()[0]

    def add(self, tx: AnchorTx) -> None:
        with self._durably(f"journal anchor transaction {tx.hash.hex()}"):
            self._conn.execute(
                "INSERT INTO anchor_txs(hash, nonce, size, raw, max_fee, tip, signed) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tx.hash, tx.nonce, tx.size, tx.raw, tx.max_fee, tx.tip, tx.signed),
            )

    def void(self, nonce: int) -> None:
        """The open transactions of `nonce` will never be mined: another took the nonce."""
        with self._durably(f"void anchor transactions of nonce {nonce}"):
            self._conn.execute("UPDATE anchor_txs SET state = ? WHERE nonce = ? AND state = ?", (VOID, nonce, OPEN))

    def settle(self, tx_hash: bytes, size: int, record: bytes, now_ns: int) -> None:
        """`tx_hash` is mined and final: its record is kept, its nonce's others are void."""
        with self._durably(f"record the anchor of checkpoint {size}"):
            (nonce,) = self._conn.execute("SELECT nonce FROM anchor_txs WHERE hash = ?", (tx_hash,)).fetchone()
            self._conn.execute("UPDATE anchor_txs SET state = ? WHERE nonce = ? AND state = ?", (VOID, nonce, OPEN))
            self._conn.execute("UPDATE anchor_txs SET state = ? WHERE hash = ?", (ANCHORED, tx_hash))
            # a chain that lost an anchor (reset, deep reorg) gets it again: the newer record counts
            self._conn.execute(
                "INSERT OR REPLACE INTO anchors(size, record, t) VALUES (?, ?, ?)", (size, record, now_ns)
            )

    def anchored(self) -> list[AnchoredCheckpoint]:
        rows = self._conn.execute("SELECT size, record, t FROM anchors ORDER BY size").fetchall()
        return [AnchoredCheckpoint(*row) for row in rows]

    def latest_anchored(self) -> AnchoredCheckpoint | None:
        row = self._conn.execute("SELECT size, record, t FROM anchors ORDER BY size DESC LIMIT 1").fetchone()
        return AnchoredCheckpoint(*row) if row else None

    def raise_alarm(self, message: str, now_ns: int) -> None:
        with self._durably("record an anchoring alarm"):
            self._conn.execute("INSERT INTO anchor_alarms(t, message) VALUES (?, ?)", (now_ns, message))

    def alarms(self) -> list[Alarm]:
        return [Alarm(*row) for row in self._conn.execute("SELECT t, message FROM anchor_alarms ORDER BY t")]
