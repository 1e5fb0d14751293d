"""The durable spool audit records wait in until every destination has them.

A record is committed here, in the transaction's own request, before the client has its answer;
sending happens later, in the background (xds.audit.trail). The spool is an SQLite file of its
own under the data directory, whatever database the registry uses: it must work when that
database is down, and it is written by every worker process of the server.

Each destination keeps a cursor: the sequence number of the last record it has. A record is
deleted once every configured destination's cursor has passed it, so a destination that is down
keeps its records while the others go on, and gets them in order when it returns.

The spool is bounded (max_bytes of messages). When a record would pass the bound it is refused
and counted, the refusal is logged as an error, and once per episode a record of the caller's
choosing (a security alert) is let in above the bound, so the Audit Record Repository learns
that records were lost.

Durability. A record is committed to the WAL before append() returns, so it survives the
process crashing. It is on the disk once the WAL is fsynced: by append() itself when the spool
is made with fsync_interval 0, else by sync(), which the trail calls every fsync_interval
seconds from a background thread. That is group commit: one fsync for all the records of the
interval instead of one in every request (which cost an ITI-18 query 15% of its time here), at
the price that a machine crash or power loss can take the last interval's records with it.
The cursors are written without fsync: losing a cursor's last move sends its records again,
which is better than waiting for the disk on every batch.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

# state.bytes is kept by triggers, so that neither an append nor a purge has to add sizes up.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS record (seq INTEGER PRIMARY KEY AUTOINCREMENT, message BLOB NOT NULL,
                                   size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cursor (destination TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO state VALUES ('bytes', 0), ('refused', 0), ('full', 0);
CREATE TRIGGER IF NOT EXISTS record_added AFTER INSERT ON record
    BEGIN UPDATE state SET value = value + NEW.size WHERE name = 'bytes'; END;
CREATE TRIGGER IF NOT EXISTS record_removed AFTER DELETE ON record
    BEGIN UPDATE state SET value = value - OLD.size WHERE name = 'bytes'; END;
"""


class Spool:
    def __init__(self, path: str | Path, max_bytes: int, fsync_interval: float = 0.0):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.fsync_interval = fsync_interval
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._db().executescript(_SCHEMA)  # idempotent; executescript commits by itself

    # -- connections: one per thread, autocommit, explicit BEGIN IMMEDIATE -----------------------

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'NORMAL' if self.fsync_interval else 'FULL'}")
            self._local.db = db
        return db

    class _Transaction:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind, value, traceback) -> None:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")

    def _transaction(self) -> "Spool._Transaction":
        return self._Transaction(self._db())

    # -- writing ------------------------------------------------------------------------------------

    def append(self, message: bytes) -> bool:
        """Store one record; False when the spool is full (the record is refused and counted)."""
        with self._transaction() as db:
            stored = db.execute(
                "INSERT INTO record (message, size) SELECT ?1, length(?1) "
                "WHERE (SELECT value FROM state WHERE name = 'bytes') + length(?1) <= ?2",
                (message, self.max_bytes)).rowcount
            if not stored:
                db.execute("UPDATE state SET value = value + 1 WHERE name = 'refused'")
            return bool(stored)

    def append_alert(self, message: bytes) -> bool:
        """Store `message` above the bound, once per episode of fullness: True the first time
        after the spool filled, False while that episode lasts (the alert is in already)."""
        with self._transaction() as db:
            if _state(db, "full"):
                return False
            db.execute("INSERT INTO record (message, size) VALUES (?1, length(?1))", (message,))
            db.execute("UPDATE state SET value = 1 WHERE name = 'full'")
            return True

    def sync(self) -> None:
        """fsync what has been committed (the WAL): see Durability above."""
        for suffix in ("-wal", ""):
            try:
                fd = os.open(str(self.path) + suffix, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- delivering ---------------------------------------------------------------------------------

    def cursor(self, destination: str) -> int:
        """The last record `destination` has; a new destination starts with what is here."""
        db = self._db()
        row = db.execute("SELECT seq FROM cursor WHERE destination = ?", (destination,)).fetchone()
        if row is not None:
            return row[0]
        with self._transaction() as db:
            first = db.execute("SELECT COALESCE(MIN(seq), 0) - 1 FROM record").fetchone()[0]
            start = max(first, 0)
            db.execute("INSERT OR IGNORE INTO cursor VALUES (?, ?)", (destination, start))
            return db.execute("SELECT seq FROM cursor WHERE destination = ?", (destination,)).fetchone()[0]

    def after(self, seq: int, limit: int = 100) -> list[tuple[int, bytes]]:
        """Up to `limit` records after `seq`, in order."""
        return self._db().execute("SELECT seq, message FROM record WHERE seq > ? ORDER BY seq LIMIT ?",
                                  (seq, limit)).fetchall()

    def delivered(self, destination: str, seq: int, destinations: list[str]) -> None:
        """`destination` has every record up to `seq`; drop what all `destinations` have."""
        with self._transaction() as db:
            db.execute("UPDATE cursor SET seq = ? WHERE destination = ?", (seq, destination))
            marks = [row[0] for row in db.execute(
                f"SELECT seq FROM cursor WHERE destination IN ({','.join('?' * len(destinations))})",
                destinations)]
            if len(marks) < len(destinations):
                return  # a destination that has not started yet still needs everything
            db.execute("DELETE FROM record WHERE seq <= ?", (min(marks),))
            if _state(db, "full") and _state(db, "bytes") <= self.max_bytes // 2:
                db.execute("UPDATE state SET value = 0 WHERE name = 'full'")  # the episode is over

    # -- looking --------------------------------------------------------------------------------

    def last_seq(self) -> int:
        return self._db().execute("SELECT COALESCE(MAX(seq), 0) FROM record").fetchone()[0]

    def pending(self) -> int:
        """Records some destination does not have yet."""
        return self._db().execute("SELECT COUNT(*) FROM record").fetchone()[0]

    def state(self) -> dict[str, int]:
        """bytes held, records refused so far, and whether the spool is in a full episode."""
        return dict(self._db().execute("SELECT name, value FROM state").fetchall())

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


def _state(db: sqlite3.Connection, name: str) -> int:
    return db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()[0]
