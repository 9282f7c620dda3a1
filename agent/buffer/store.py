"""The durable buffer: one SQLite database in WAL mode in the state directory.

Durability is chosen per write, because the design allows it: readings are committed
with synchronous=NORMAL (a crash of the process loses nothing committed; a power cut may
lose the last unsealed readings, which the device never signed or published), while a
seal or checkpoint commit runs with synchronous=FULL, whose fsync of the WAL also makes
every reading it covers durable. Counters (next seq, next batch) are derived from the
rows themselves, so there is no second bookkeeping to drift after a crash.

One agent owns a state directory (an exclusive lock on DIR/agent.lock); readers such as
`edgeseal export` take no lock and read a consistent snapshot (`Buffer.snapshot`).

Errors: a write that may succeed later (disk full, I/O error) is `BufferWriteError`,
which callers retry; anything else (a constraint violated, a corrupt file) is
`BufferError_` and ends the agent, because retrying cannot help.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agent.buffer.anchor_journal import AnchorJournal
from agent.buffer.schema import SCHEMA_VERSION, migrate
from agent.crashpoints import crash_point
from agent.errors import BufferError_
from agent.trust import cbor, merkle
from agent.trust.payloads import Gap

DB_NAME = "buffer.db"
LOCK_NAME = "agent.lock"
_SEAL_COLUMNS = "b, s0, n, t, salt_key, cose, log_frontier"
TRANSIENT_ERRORS = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_READONLY", "SQLITE_PROTOCOL")


class BufferWriteError(BufferError_):
    """A write failed for now (disk full, I/O error); the caller keeps the data and retries."""


@dataclass(frozen=True)
class SealRow:
    b: int
    s0: int
    n: int
    t: int
    salt_key: bytes
    cose: bytes
    log_frontier: list[bytes]  # the seal log's right edge once this seal is in it

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> SealRow:
        return cls(*row[:6], cbor.decode(row[6]))


@dataclass(frozen=True)
class OutgoingBatch:
    """A sealed batch to publish: its seal, salt key and exact reading leaves."""

    b: int
    t: int  # seal time, ns
    cose: bytes
    salt_key: bytes
    readings: list[bytes]


@dataclass(frozen=True)
class Backlog:
    """What waits for the broker, and what the disk budget cost."""

    batches: int  # sealed, not yet acknowledged
    readings: int
    oldest_t: int | None  # seal time of the oldest waiting batch, ns
    dropped_batches: int  # dropped undelivered when the budget was reached, ever
    used_bytes: int


class Buffer:
    def __init__(self, conn: sqlite3.Connection, path: Path, lock: TextIO | None) -> None:
        self._conn = conn
        self._lock = lock
        self.path = path

    @classmethod
    def open(cls, state_dir: str | os.PathLike[str], *, create: bool = True) -> Buffer:
        """create=True: the agent's own buffer (created if absent, locked for this process);
        create=False: an existing buffer, for reading beside a running agent."""
        directory = Path(state_dir)
        path = directory / DB_NAME
        if not create and not path.exists():
            raise BufferError_(f"{directory}: no edgeseal state here ({DB_NAME} not found)")
        lock = _lock(directory) if create else None
        try:
            conn = _connect(path) if create else _connect_read_only(path)
        except (sqlite3.Error, OSError, ValueError) as exc:
            if lock:
                lock.close()
            raise BufferError_(f"{path}: cannot open the buffer: {exc}") from None
        return cls(conn, path, lock)

    def close(self) -> None:
        self._conn.close()
        if self._lock:
            self._lock.close()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one consistent state, however the agent writes meanwhile."""
        with self.reading():
            self._conn.execute("BEGIN")
            try:
                yield
            finally:
                self._conn.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[None]:
        """A read that fails (a damaged file, a foreign database) is a BufferError_."""
        try:
            yield
        except sqlite3.Error as exc:
            raise BufferError_(f"{self.path}: cannot read the buffer: {exc}") from None

    # -- state derived from the rows ------------------------------------------------

    def start_boot(self, now_ns: int) -> int:
        with self._writing("count this start"), self._durable():
            cur = self._conn.execute("INSERT INTO boots(started) VALUES (?)", (now_ns,))
        return int(cur.lastrowid or 0)

    def next_seq(self) -> int:
        row = self._conn.execute(
            "SELECT max(coalesce((SELECT max(seq) FROM readings), 0),"
            " coalesce((SELECT s0 + n - 1 FROM seals ORDER BY b DESC LIMIT 1), 0))"
        ).fetchone()
        return int(row[0]) + 1

    def last_seal(self) -> SealRow | None:
        row = self._conn.execute(f"SELECT {_SEAL_COLUMNS} FROM seals ORDER BY b DESC LIMIT 1").fetchone()
        return SealRow.from_row(row) if row else None

    def sealed_through(self) -> int:
        """The last seq covered by a seal (0 if none)."""
        last = self.last_seal()
        return last.s0 + last.n - 1 if last else 0

    # -- readings -------------------------------------------------------------------

    def insert_readings(self, rows: list[tuple[int, bytes]]) -> None:
        with self._writing("store readings"):
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany("INSERT INTO readings(seq, leaf) VALUES (?, ?)", rows)
                crash_point("readings.written")
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def iter_readings(self, first: int, last: int, chunk: int = 10_000) -> Iterator[list[tuple[int, bytes]]]:
        """readings(first, last) in chunks, however many there are."""
        while first <= last:
            rows = self._conn.execute(
                "SELECT seq, leaf FROM readings WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?", (first, last, chunk)
            ).fetchall()
            if not rows:
                return
            yield rows
            first = rows[-1][0] + 1

    def readings(self, first: int, last: int) -> list[tuple[int, bytes]]:
        return self._conn.execute(
            "SELECT seq, leaf FROM readings WHERE seq BETWEEN ? AND ? ORDER BY seq", (first, last)
        ).fetchall()

    # -- seals, log, checkpoints ------------------------------------------------------

    def commit_seal(self, seal: SealRow, records_drop: int | None = None) -> None:
        """Stores a seal; a drop record also marks its drop (by first seq) as recorded,
        in the same transaction, so a drop is recorded exactly once."""
        with self._writing(f"store seal b={seal.b}"), self._durable():
            self._conn.execute(
                f"INSERT INTO seals({_SEAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seal.b, seal.s0, seal.n, seal.t, seal.salt_key, seal.cose, cbor.encode(seal.log_frontier)),
            )
            if records_drop is not None:
                self._conn.execute("UPDATE drops SET sealed_b = ? WHERE first = ?", (seal.b, records_drop))
            crash_point("seal.written")

    def seals(self, first_b: int = 1, last_b: int | None = None) -> Iterator[SealRow]:
        last_b = last_b if last_b is not None else 2**62
        query = f"SELECT {_SEAL_COLUMNS} FROM seals WHERE b BETWEEN ? AND ? ORDER BY b"
        for row in self._conn.execute(query, (first_b, last_b)):
            yield SealRow.from_row(row)

    def seal_log_leaf_hashes(self, size: int) -> list[bytes]:
        rows = self._conn.execute("SELECT cose FROM seals WHERE b <= ? ORDER BY b", (size,))
        return [merkle.leaf_hash(c) for (c,) in rows]

    def commit_checkpoint(self, size: int, t: int, cose_bytes: bytes) -> None:
        with self._writing(f"store checkpoint {size}"), self._durable():
            self._conn.execute("INSERT INTO checkpoints(size, t, cose) VALUES (?, ?, ?)", (size, t, cose_bytes))
            crash_point("checkpoint.written")

    def checkpoints(self) -> list[tuple[int, bytes]]:
        return self._conn.execute("SELECT size, cose FROM checkpoints ORDER BY size").fetchall()

    def checkpoint(self, size: int) -> bytes | None:
        row = self._conn.execute("SELECT cose FROM checkpoints WHERE size = ?", (size,)).fetchone()
        return row[0] if row else None

    def last_checkpoint_size(self) -> int:
        return int(self._conn.execute("SELECT coalesce(max(size), 0) FROM checkpoints").fetchone()[0])

    # -- delivery and the disk budget ---------------------------------------------------

    def undelivered(self, after_b: int, limit: int) -> list[OutgoingBatch]:
        """The oldest sealed batches after `after_b` the broker has not acknowledged, with
        their readings (a drop record has none)."""
        rows = self._conn.execute(
            "SELECT b, s0, n, t, salt_key, cose FROM seals"
            " WHERE b > ? AND delivered IS NULL AND gone = 0 ORDER BY b LIMIT ?",
            (after_b, limit),
        ).fetchall()
        return [
            OutgoingBatch(b, t, cose, salt_key, [leaf for _, leaf in self.readings(s0, s0 + n - 1)] if n else [])
            for b, s0, n, t, salt_key, cose in rows
        ]

    def mark_delivered(self, b: int, at_ns: int) -> None:
        """Not fsync'd: a mark lost to a power cut only means the batch is sent again."""
        with self._writing(f"mark batch {b} delivered"):
            self._conn.execute("UPDATE seals SET delivered = ? WHERE b = ?", (at_ns, b))

    def undelivered_checkpoints(self) -> list[tuple[int, bytes]]:
        return self._conn.execute("SELECT size, cose FROM checkpoints WHERE delivered IS NULL ORDER BY size").fetchall()

    def mark_checkpoint_delivered(self, size: int, at_ns: int) -> None:
        with self._writing(f"mark checkpoint {size} delivered"):
            self._conn.execute("UPDATE checkpoints SET delivered = ? WHERE size = ?", (at_ns, size))

    def backlog(self) -> Backlog:
        waiting, readings, oldest = self._conn.execute(
            "SELECT count(*), coalesce(sum(n), 0), min(t) FROM seals WHERE delivered IS NULL AND gone = 0"
        ).fetchone()
        (dropped,) = self._conn.execute("SELECT count(*) FROM seals WHERE gone = 2").fetchone()
        return Backlog(waiting, readings, oldest, dropped, self.used_bytes())

    def used_bytes(self) -> int:
        """Bytes of the database in use: freed pages are reused before the file grows."""
        (pages,) = self._conn.execute("PRAGMA page_count").fetchone()
        (free,) = self._conn.execute("PRAGMA freelist_count").fetchone()
        (size,) = self._conn.execute("PRAGMA page_size").fetchone()
        return (pages - free) * size

    def prune_delivered(self, batches: int, sealed_before: int | None = None) -> int:
        """Deletes the readings of up to `batches` of the oldest delivered batches (sealed
        before `sealed_before`, if given); returns how many. Their seals stay: the seal log
        and its proofs need them."""
        limit = sealed_before if sealed_before is not None else 2**63 - 1
        rows = self._conn.execute(
            "SELECT b, s0, n FROM seals WHERE delivered IS NOT NULL AND gone = 0 AND t < ? ORDER BY b LIMIT ?",
            (limit, batches),
        ).fetchall()
        if rows:
            with self._writing("delete delivered readings"), self._durable():
                self._forget(rows, gone=1)
        return len(rows)

    def drop_undelivered(self, batches: int, why: str) -> Gap | None:
        """Deletes the readings of up to `batches` of the oldest undelivered batches and
        notes the drop for the sealer to record (a signed gap), in one transaction; None
        when nothing can be dropped."""
        # Never the newest batch with readings: a drop record then always names seqs that end
        # before that batch, so its gap cannot end right before its own s0, which is the shape
        # of the other kind of gap (readings lost before sealing).
        rows = self._conn.execute(
            "SELECT b, s0, n FROM seals WHERE delivered IS NULL AND gone = 0 AND n > 0"
            " AND b < (SELECT max(b) FROM seals WHERE n > 0) ORDER BY b LIMIT ?",
            (batches,),
        ).fetchall()
        # one run of consecutive batches: a delivered batch or a drop record between two
        # dropped ones would otherwise sit inside the gap, which must name only dropped seqs
        # and must match the hole a consumer sees between the seals it received
        rows = [row for i, row in enumerate(rows) if row[0] == rows[0][0] + i] if rows else rows
        if not rows:
            return None
        gap = Gap(rows[0][1], rows[-1][1] + rows[-1][2] - 1, why)
        with self._writing("drop undelivered readings"), self._durable():
            self._forget(rows, gone=2)
            self._conn.execute("INSERT INTO drops(first, last, why) VALUES (?, ?, ?)", (gap.first, gap.last, why))
        return gap

    def pending_drops(self) -> list[Gap]:
        """Drops no seal records yet, oldest first."""
        rows = self._conn.execute("SELECT first, last, why FROM drops WHERE sealed_b IS NULL ORDER BY first")
        return [Gap(*row) for row in rows]

    def _forget(self, rows: list[tuple[int, int, int]], gone: int) -> None:
        self._conn.executemany(
            "DELETE FROM readings WHERE seq BETWEEN ? AND ?", [(s0, s0 + n - 1) for _, s0, n in rows]
        )
        self._conn.executemany("UPDATE seals SET gone = ? WHERE b = ?", [(gone, b) for b, _, _ in rows])

    # -- identities -----------------------------------------------------------------

    def remember_identity(self, kid: bytes, chain_der: list[bytes], boot: int) -> None:
        """Every certificate chain a key was used with: a renewed certificate must not
        orphan the data signed under the one before."""
        with self._writing("record the certificate chain"), self._durable():
            self._conn.execute(
                "INSERT OR IGNORE INTO identities(kid, chain, first_boot) VALUES (?, ?, ?)",
                (kid, cbor.encode(chain_der), boot),
            )

    def identity_chains(self, kid: bytes) -> list[list[bytes]]:
        """The chains recorded for `kid`, newest first."""
        rows = self._conn.execute("SELECT chain FROM identities WHERE kid = ? ORDER BY rowid DESC", (kid,))
        return [cbor.decode(chain) for (chain,) in rows]

    # -- anchoring -------------------------------------------------------------------

    @property
    def anchors(self) -> AnchorJournal:
        return AnchorJournal(self._conn, self._durably)

    def log_root(self, size: int) -> bytes:
        """The seal log's root at `size` (1..last b), from the right edge stored with seal b = size."""
        (frontier,) = self._conn.execute("SELECT log_frontier FROM seals WHERE b = ?", (size,)).fetchone()
        return merkle.Frontier.restore(size, cbor.decode(frontier)).root()

    # -- transactions ---------------------------------------------------------------

    @contextmanager
    def _durably(self, what: str) -> Iterator[None]:
        with self._writing(what), self._durable():
            yield

    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """Maps SQLite's errors: those a retry may outlive (disk full, I/O error, busy,
        read-only file system) become BufferWriteError; anything else ends the agent."""
        try:
            yield
        except sqlite3.Error as exc:
            name = getattr(exc, "sqlite_errorname", "")
            if name.startswith(TRANSIENT_ERRORS):
                raise BufferWriteError(f"cannot {what}: {exc}") from None
            raise BufferError_(f"{self.path}: cannot {what}: {exc} ({name or 'no SQLite code'})") from None

    @contextmanager
    def _durable(self) -> Iterator[None]:
        """A transaction whose commit is fsync'd (synchronous=FULL for this commit only)."""
        self._conn.execute("PRAGMA synchronous=FULL")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        finally:
            self._conn.execute("PRAGMA synchronous=NORMAL")

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    migrate(conn)
    return conn


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """For readers beside the agent: never migrates, never writes."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=5000")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        conn.close()
        raise ValueError(f"its schema is version {version}; this edgeseal reads version {SCHEMA_VERSION}")
    return conn


def _lock(directory: Path) -> TextIO:
    """One agent per state directory: a second one would interleave seqs and seals."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = open(directory / LOCK_NAME, "a")  # noqa: SIM115 - held for the buffer's life
    except OSError as exc:
        raise BufferError_(f"{directory}: cannot use as state directory: {exc.strerror}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise BufferError_(f"{directory}: another edgeseal agent is using this state directory") from None
    return lock
