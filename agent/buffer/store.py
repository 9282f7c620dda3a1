"""The durable buffer: one SQLite database in WAL mode in the state directory.

Durability is chosen per write, because the design allows it: readings are committed
with synchronous=NORMAL (a crash of the process loses nothing committed; a power cut may
lose the last unsealed readings, which the device never signed or published), while a
seal or checkpoint commit runs with synchronous=FULL, whose fsync of the WAL also makes
every reading it covers durable. Counters (next seq, next batch) are derived from the
rows themselves, so there is no second bookkeeping to drift after a crash.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.buffer.schema import migrate
from agent.errors import BufferError_
from agent.trust import cbor, merkle

DB_NAME = "buffer.db"


class BufferWriteError(BufferError_):
    """A write failed (disk full, I/O error); the caller keeps the data and retries."""


@dataclass(frozen=True)
class SealRow:
    b: int
    s0: int
    n: int
    t: int
    salt_key: bytes
    cose: bytes


class Buffer:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, state_dir: str | os.PathLike[str], *, create: bool = True) -> Buffer:
        directory = Path(state_dir)
        path = directory / DB_NAME
        if not create and not path.exists():
            raise BufferError_(f"{directory}: no edgeseal state here ({DB_NAME} not found)")
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            migrate(conn)
        except (sqlite3.Error, OSError, ValueError) as exc:
            raise BufferError_(f"{path}: cannot open the buffer: {exc}") from None
        return cls(conn, path)

    def close(self) -> None:
        self._conn.close()

    # -- state derived from the rows ------------------------------------------------

    def start_boot(self, now_ns: int) -> int:
        with self._durable():
            cur = self._conn.execute("INSERT INTO boots(started) VALUES (?)", (now_ns,))
        return int(cur.lastrowid or 0)

    def next_seq(self) -> int:
        row = self._conn.execute(
            "SELECT max(coalesce((SELECT max(seq) FROM readings), 0),"
            " coalesce((SELECT s0 + n - 1 FROM seals ORDER BY b DESC LIMIT 1), 0))"
        ).fetchone()
        return int(row[0]) + 1

    def last_seal(self) -> SealRow | None:
        row = self._conn.execute("SELECT * FROM seals ORDER BY b DESC LIMIT 1").fetchone()
        return SealRow(*row) if row else None

    def sealed_through(self) -> int:
        """The last seq covered by a seal (0 if none)."""
        last = self.last_seal()
        return last.s0 + last.n - 1 if last else 0

    # -- readings -------------------------------------------------------------------

    def insert_readings(self, rows: list[tuple[int, bytes]]) -> None:
        try:
            self._conn.execute("BEGIN")
            self._conn.executemany("INSERT INTO readings(seq, leaf) VALUES (?, ?)", rows)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise BufferWriteError(f"cannot store readings: {exc}") from None

    def readings(self, first: int, last: int) -> list[tuple[int, bytes]]:
        return self._conn.execute(
            "SELECT seq, leaf FROM readings WHERE seq BETWEEN ? AND ? ORDER BY seq", (first, last)
        ).fetchall()

    # -- seals, log, checkpoints ------------------------------------------------------

    def commit_seal(self, seal: SealRow) -> None:
        try:
            with self._durable():
                self._conn.execute(
                    "INSERT INTO seals(b, s0, n, t, salt_key, cose) VALUES (?, ?, ?, ?, ?, ?)",
                    (seal.b, seal.s0, seal.n, seal.t, seal.salt_key, seal.cose),
                )
        except sqlite3.Error as exc:
            raise BufferWriteError(f"cannot store seal b={seal.b}: {exc}") from None

    def seals(self, first_b: int = 1, last_b: int | None = None) -> Iterator[SealRow]:
        last_b = last_b if last_b is not None else 2**62
        for row in self._conn.execute("SELECT * FROM seals WHERE b BETWEEN ? AND ? ORDER BY b", (first_b, last_b)):
            yield SealRow(*row)

    def seal_log_leaf_hashes(self) -> list[bytes]:
        return [merkle.leaf_hash(c) for (c,) in self._conn.execute("SELECT cose FROM seals ORDER BY b")]

    def commit_checkpoint(self, size: int, t: int, cose_bytes: bytes) -> None:
        try:
            with self._durable():
                self._conn.execute("INSERT INTO checkpoints(size, t, cose) VALUES (?, ?, ?)", (size, t, cose_bytes))
        except sqlite3.Error as exc:
            raise BufferWriteError(f"cannot store checkpoint {size}: {exc}") from None

    def checkpoints(self) -> list[tuple[int, bytes]]:
        return self._conn.execute("SELECT size, cose FROM checkpoints ORDER BY size").fetchall()

    def last_checkpoint_size(self) -> int:
        return int(self._conn.execute("SELECT coalesce(max(size), 0) FROM checkpoints").fetchone()[0])

    # -- identities -----------------------------------------------------------------

    def remember_identity(self, kid: bytes, chain_der: list[bytes], boot: int) -> None:
        with self._durable():
            self._conn.execute(
                "INSERT OR IGNORE INTO identities(kid, chain, first_boot) VALUES (?, ?, ?)",
                (kid, cbor.encode(chain_der), boot),
            )

    def identity_chain(self, kid: bytes) -> list[bytes] | None:
        row = self._conn.execute("SELECT chain FROM identities WHERE kid = ?", (kid,)).fetchone()
        return cbor.decode(row[0]) if row else None

    def integrity_check(self) -> str:
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    # -- transactions ---------------------------------------------------------------

    def _durable(self) -> _DurableTransaction:
        return _DurableTransaction(self)

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


class _DurableTransaction:
    """A transaction whose commit is fsync'd (synchronous=FULL for this commit only)."""

    def __init__(self, buffer: Buffer) -> None:
        self._conn = buffer._conn
        self._buffer = buffer

    def __enter__(self) -> None:
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                try:
                    self._conn.execute("COMMIT")
                except sqlite3.Error:
                    self._buffer._rollback()
                    raise
            else:
                self._buffer._rollback()
        finally:
            self._conn.execute("PRAGMA synchronous=NORMAL")
