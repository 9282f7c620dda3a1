import sqlite3
from pathlib import Path

import pytest

from agent.buffer import schema
from agent.buffer.store import Buffer, BufferWriteError, SealRow
from agent.errors import BufferError_


def test_a_new_buffer_is_wal_at_the_current_schema(tmp_path: Path) -> None:
    buffer = Buffer.open(tmp_path)
    conn = sqlite3.connect(tmp_path / "buffer.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    conn.close()
    buffer.close()


def test_counters_are_derived_from_rows(tmp_path: Path) -> None:
    buffer = Buffer.open(tmp_path)
    assert (buffer.next_seq(), buffer.sealed_through(), buffer.last_seal()) == (1, 0, None)
    buffer.insert_readings([(1, b"a"), (2, b"b"), (3, b"c")])
    assert buffer.next_seq() == 4 and buffer.sealed_through() == 0
    buffer.commit_seal(SealRow(1, 1, 2, 5, bytes(32), b"seal-1", []))
    assert buffer.sealed_through() == 2 and buffer.next_seq() == 4
    buffer.commit_seal(SealRow(2, 10, 0, 6, bytes(32), b"gap-seal", []))  # a gap of seqs 3..9, no readings
    assert buffer.next_seq() == 10
    assert buffer.start_boot(1) == 1 and buffer.start_boot(2) == 2
    buffer.close()


def test_a_seal_number_is_never_written_twice(tmp_path: Path) -> None:
    buffer = Buffer.open(tmp_path)
    buffer.commit_seal(SealRow(1, 1, 1, 5, bytes(32), b"x", []))
    with pytest.raises(BufferError_):
        buffer.commit_seal(SealRow(1, 2, 1, 5, bytes(32), b"y", []))
    assert [s.cose for s in buffer.seals()] == [b"x"]
    buffer.close()


def test_a_database_from_a_newer_edgeseal_is_refused(tmp_path: Path) -> None:
    Buffer.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "buffer.db")
    conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(BufferError_, match="newer than this edgeseal"):
        Buffer.open(tmp_path)


def test_export_side_does_not_create_state(tmp_path: Path) -> None:
    with pytest.raises(BufferError_, match="no edgeseal state"):
        Buffer.open(tmp_path / "nothing", create=False)
    assert not (tmp_path / "nothing").exists()


def test_migration_statements_keep_one_transaction() -> None:
    statements = schema._statements("CREATE TABLE a (x); -- note; with semicolon\nCREATE TABLE b (y);")
    assert statements == ["CREATE TABLE a (x); -- note; with semicolon", "CREATE TABLE b (y);"]


def test_one_agent_per_state_directory(tmp_path: Path) -> None:
    first = Buffer.open(tmp_path)
    with pytest.raises(BufferError_, match="another edgeseal agent"):
        Buffer.open(tmp_path)
    reader = Buffer.open(tmp_path, create=False)  # exports read beside the agent
    reader.close()
    first.close()
    Buffer.open(tmp_path).close()  # the lock goes with its holder


def test_a_constraint_violation_is_not_retried_as_a_full_disk(tmp_path: Path) -> None:
    buffer = Buffer.open(tmp_path)
    buffer.insert_readings([(1, b"a")])
    with pytest.raises(BufferError_) as raised:
        buffer.insert_readings([(1, b"again")])
    assert not isinstance(raised.value, BufferWriteError)
    assert buffer.readings(1, 1) == [(1, b"a")]
    buffer.close()


def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Buffer.open(tmp_path).close()
    broken = "CREATE TABLE half_done (x);\nTHIS IS NOT SQL;"
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, broken])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(schema.MIGRATIONS))
    with pytest.raises(BufferError_, match="cannot open the buffer"):
        Buffer.open(tmp_path)
    conn = sqlite3.connect(tmp_path / "buffer.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS) - 1
    assert not conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall()
    conn.close()


def test_migration_4_gives_batches_of_no_readings_the_zero_salt_key(tmp_path: Path) -> None:
    """Buffers sealed before it hold random keys in their gap and drop-record batches,
    which verifiers now refuse: the upgrade fixes them, and touches no other batch."""
    conn = sqlite3.connect(tmp_path / "buffer.db", isolation_level=None)
    for script in schema.MIGRATIONS[:3]:
        for statement in schema._statements(script):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    insert = "INSERT INTO seals(b, s0, n, t, salt_key, cose, log_frontier) VALUES (?, ?, ?, 0, ?, x'00', x'80')"
    conn.execute(insert, (1, 1, 5, b"r" * 32))
    conn.execute(insert, (2, 6, 0, b"s" * 32))
    conn.close()
    buffer = Buffer.open(tmp_path)
    buffer.close()
    conn = sqlite3.connect(tmp_path / "buffer.db")
    assert conn.execute("SELECT b, salt_key FROM seals ORDER BY b").fetchall() == [(1, b"r" * 32), (2, bytes(32))]
    conn.close()
