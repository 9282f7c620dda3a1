"""The buffer's schema, as numbered migrations recorded in PRAGMA user_version.

A migration runs in one transaction with its version bump, so a crash mid-upgrade
leaves the previous version intact. Never edit a released migration: add the next one.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: the trusted core
    """
    CREATE TABLE boots (
        boot     INTEGER PRIMARY KEY,           -- agent starts, from 1
        started  INTEGER NOT NULL               -- ns since epoch
    );
    CREATE TABLE readings (
        seq      INTEGER PRIMARY KEY,           -- device-wide, never reused
        leaf     BLOB NOT NULL                  -- exact leaf bytes, DESIGN 3.1
    );
    CREATE TABLE seals (
        b        INTEGER PRIMARY KEY,           -- batch number, from 1, no gaps
        s0       INTEGER NOT NULL,              -- first seq
        n        INTEGER NOT NULL,              -- readings in the batch
        t        INTEGER NOT NULL,              -- seal time, ns
        salt_key BLOB NOT NULL,                 -- 32 bytes; never published in a selective bundle
        cose     BLOB NOT NULL,                 -- COSE_Sign1 bytes: seal log leaf b - 1
        log_frontier BLOB NOT NULL              -- CBOR array: the seal log's right edge after b
    );
    CREATE TABLE checkpoints (
        size     INTEGER PRIMARY KEY,           -- seal log size covered
        t        INTEGER NOT NULL,
        cose     BLOB NOT NULL
    );
    CREATE TABLE identities (
        kid      BLOB NOT NULL,                 -- SHA-256 of the device key's SPKI
        chain    BLOB NOT NULL,                 -- CBOR array of DER certificates
        first_boot INTEGER NOT NULL,            -- a renewed certificate adds a row
        PRIMARY KEY (kid, chain)
    );
    """,
    # 2: delivery over MQTT and the disk budget
    """
    ALTER TABLE seals ADD COLUMN delivered INTEGER;           -- ns the broker acknowledged it; NULL: not yet
    -- readings deleted: 1 after delivery, 2 dropped undelivered (the disk budget)
    ALTER TABLE seals ADD COLUMN gone INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE checkpoints ADD COLUMN delivered INTEGER;     -- ns the broker acknowledged it; NULL: not yet
    -- what the publisher, the disk budget and `status` look for, found without scanning a
    -- history of millions of seals
    CREATE INDEX seals_undelivered ON seals(b) WHERE delivered IS NULL AND gone = 0;
    CREATE INDEX seals_prunable ON seals(b) WHERE delivered IS NOT NULL AND gone = 0;
    CREATE INDEX seals_dropped ON seals(b) WHERE gone = 2;
    CREATE TABLE drops (
        first    INTEGER PRIMARY KEY,           -- seqs first..last, sealed, dropped undelivered
        last     INTEGER NOT NULL,
        why      TEXT NOT NULL,
        sealed_b INTEGER                        -- the seal that records the drop; NULL until made
    );
    """,
    # 3: anchoring
    """
    CREATE TABLE anchor_txs (                 -- every anchor transaction, stored before it is sent
        hash     BLOB PRIMARY KEY,            -- transaction hash, 32 bytes
        nonce    INTEGER NOT NULL,
        size     INTEGER NOT NULL,            -- the checkpoint (seal log size) it anchors
        raw      BLOB NOT NULL,               -- the signed transaction: re-sent as is, never re-signed
        max_fee  INTEGER NOT NULL,            -- maxFeePerGas, or gasPrice for a legacy transaction (wei)
        tip      INTEGER NOT NULL,            -- maxPriorityFeePerGas, or gasPrice (wei)
        signed   INTEGER NOT NULL,            -- ns
        state    INTEGER NOT NULL DEFAULT 0   -- 0 open (may yet be mined), 1 anchored, 2 void (never mined)
    );
    CREATE INDEX anchor_txs_open ON anchor_txs(nonce) WHERE state = 0;
    CREATE TABLE anchors (                    -- final anchors
        size     INTEGER PRIMARY KEY,         -- the checkpoint anchored
        record   BLOB NOT NULL,               -- the anchor record, CBOR (DESIGN 3.5)
        t        INTEGER NOT NULL             -- ns, when it was found final
    );
    CREATE TABLE anchor_alarms (              -- the chain holds what this device's log cannot explain
        t        INTEGER NOT NULL,
        message  TEXT NOT NULL
    );
    """,
    # 4: a batch of no readings carries the fixed salt key (it salts nothing; verifiers check it)
    """
    UPDATE seals SET salt_key = zeroblob(32) WHERE n = 0;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to SCHEMA_VERSION; returns the version found before."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise ValueError(
            f"database schema version {found} is newer than this edgeseal ({SCHEMA_VERSION});"
            " upgrade edgeseal or restore the matching database"
        )
    for version in range(found + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[version - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return found


def _statements(script: str) -> list[str]:
    """executescript would commit implicitly; split so the migration stays one transaction."""
    out, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    return [s for s in out if s]
