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

from agent.buffer.schema import SCHEMA_VERSION, migrate
from agent.errors import BufferError_
from agent.trust import cbor, merkle

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

    def commit_seal(self, seal: SealRow) -> None:
        with self._writing(f"store seal b={seal.b}"), self._durable():
            self._conn.execute(
                f"INSERT INTO seals({_SEAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seal.b, seal.s0, seal.n, seal.t, seal.salt_key, seal.cose, cbor.encode(seal.log_frontier)),
            )

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

    def checkpoints(self) -> list[tuple[int, bytes]]:
        return self._conn.execute("SELECT size, cose FROM checkpoints ORDER BY size").fetchall()

    def last_checkpoint_size(self) -> int:
        return int(self._conn.execute("SELECT coalesce(max(size), 0) FROM checkpoints").fetchone()[0])

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

    # -- transactions ---------------------------------------------------------------

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
