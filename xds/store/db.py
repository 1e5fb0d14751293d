"""Engine, sessions and migrations: everything that knows which database is behind the URL.

SQLite and PostgreSQL differ in one way the rest of the code must not see: concurrency.

* PostgreSQL locks rows and index entries, so concurrent writers only wait for each other where
  they touch the same data, and unique constraints settle races (one insert wins, the other
  gets an IntegrityError).
* SQLite has one writer at a time per file. Python's sqlite3 module begins transactions
  lazily, as DEFERRED, which takes the write lock only at the first INSERT/UPDATE. Two
  processes that both read and then both write can then each hold a read snapshot the other's
  write would invalidate: one of them fails at once with "database is locked" and the
  busy_timeout does not help. Write sessions therefore begin their transactions with
  BEGIN IMMEDIATE, which takes the write lock first (waiting up to busy_timeout), so writers
  queue instead of failing; read sessions stay DEFERRED and, in WAL mode, never block a
  writer nor wait for one.

Use `write_session(engine)` or a `make_sessionmaker(engine, write=True)` for every
transaction that writes, even on PostgreSQL, so the calling code is the same on both.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import Pool

from xds.store.group_commit import DEADLINE, GroupCommit

MIGRATIONS = Path(__file__).parent / "migrations"

T = TypeVar("T")

#: Execution option read by the SQLite "begin" hook: which BEGIN to emit.
_BEGIN = "xds_sqlite_begin"

#: The group commit of each SQLite engine made here, by its connection pool (which the engine's
#: copies with other execution options share).
_GROUPS: weakref.WeakKeyDictionary[Pool, GroupCommit] = weakref.WeakKeyDictionary()


def _normalize(url: str | URL) -> URL:
    u = make_url(url)
    # psycopg 3 is the driver we install; plain postgresql:// would mean psycopg2.
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    return u


def _is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def make_engine(url: str | URL, busy_timeout: float = 10.0) -> Engine:
    """An engine for `url` set up for several workers sharing one database.

    busy_timeout (seconds): how long a writer waits for a lock before it gives up (the caller
    answers XDSRegistryBusy): SQLite's write lock ("database is locked"), or on PostgreSQL any
    lock a statement waits for (lock_timeout), so that a transaction left open on a table -
    an administrator's session, a stuck process - makes submissions fail with an answer
    instead of hang.
    """
    u = _normalize(url)
    timeout_ms = int(busy_timeout * 1000)
    if not _is_sqlite(u):
        # synchronous_commit on: a commit has reached the disk (and a synchronous standby, where
        # one is set up) before the answer leaves, whatever the server's default says.
        options = " ".join(filter(None, [u.query.get("options"), f"-c lock_timeout={timeout_ms}",
                                         "-c synchronous_commit=on"]))
        engine = create_engine(u.update_query_dict({"options": options}))
        _ping_when_idle(engine)
        return engine

    database = u.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(u)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # We emit BEGIN ourselves (see _on_begin); sqlite3's own transaction handling would
        # begin DEFERRED, and not at all before SELECT or DDL.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {timeout_ms}")  # first: the others may wait
            _enable_wal(cursor, busy_timeout)
            # A Success answer promises that the submission survives a power cut: FULL syncs
            # the WAL at every commit (NORMAL, in WAL mode, may lose the last transactions
            # before one). Measured in bench/RESULTS.md: an fdatasync here costs about 0.3 ms.
            cursor.execute("PRAGMA synchronous = FULL")
            # The default page cache (2 MB) cannot even hold the inner pages of the indexes at
            # a million documents; with 32 MB a FindDocuments over a patient with thousands of
            # entries went from 12.6 to 5.2 ms. A ceiling per connection, filled as used.
            cursor.execute("PRAGMA cache_size = -32768")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        options = connection.get_execution_options()
        mode = options.get(_BEGIN, "DEFERRED")
        if mode == "IMMEDIATE":
            deadline = options.get(DEADLINE)
            timeout = busy_timeout if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                _begin_immediate(connection.connection.driver_connection, timeout, busy_timeout)
            except sqlite3.Error as e:  # raised as SQLAlchemy's, as a statement's error is
                raise exc.DBAPIError.instance("BEGIN IMMEDIATE", None, e, sqlite3.Error,
                                              dialect=connection.dialect) from e
        else:
            connection.exec_driver_sql(f"BEGIN {mode}")

    _GROUPS[engine.pool] = GroupCommit(busy_timeout)
    return engine


#: Seconds a pooled PostgreSQL connection may rest before it is checked on checkout.
IDLE_PING = 5.0


def _ping_when_idle(engine: Engine) -> None:
    """Connections resting in the pool are cut by firewalls, idle timeouts and server restarts:
    one that rested longer than IDLE_PING is pinged before use, and replaced when the ping
    fails. Not every checkout, as pool_pre_ping does: under load a connection rests for
    milliseconds, and the ping was one more round trip per request (GetDocuments p50 -10-25%
    without it, in process on PostgreSQL). A connection the server dropped meanwhile fails its
    request, which is answered as any database error is, and the pool is renewed."""
    rested = "xds_checked_in"

    def _resting(_dbapi_connection, record) -> None:
        record.info[rested] = time.monotonic()

    event.listen(engine, "connect", _resting)
    event.listen(engine, "checkin", _resting)

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection, record, _proxy) -> None:
        if time.monotonic() - record.info.get(rested, 0.0) <= IDLE_PING:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as e:
            # The pool discards this connection and checks out another (SQLAlchemy's own
            # pessimistic disconnect handling).
            raise exc.DisconnectionError(f"a pooled connection is gone: {e}") from e


#: How long a writer waiting for SQLite's write lock sleeps between two tries: short, and not
#: growing as SQLite's own busy handler's sleeps do (1, 2, 5 ... up to 100 ms).
_WRITER_POLL = 0.001


def _begin_immediate(driver, timeout: float, busy_timeout: float) -> None:
    """BEGIN IMMEDIATE, waiting up to `timeout` for the write lock another connection holds.

    Writers in other processes and threads take SQLite's one write lock in turn. Left to
    SQLite's busy handler, a writer that has waited a while sleeps up to 100 ms between tries,
    through releases of the lock that others take first: at 8 clients over 2 workers a
    registration's p99 was 0.6-1.9 s (0.16-0.18 s this way, bench/RESULTS.md). Here BEGIN
    IMMEDIATE does not wait (busy_timeout 0 for it) and is tried again every millisecond until
    the deadline; then it fails as SQLite's own wait would ("database is locked"), answered
    XDSRegistryBusy."""
    cursor = driver.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout = 0")
        try:
            _while_locked(cursor, "BEGIN IMMEDIATE", timeout, _WRITER_POLL)
        finally:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    finally:
        cursor.close()


def _while_locked(cursor, sql: str, timeout: float, pause: float) -> None:
    """Run `sql`, again every `pause` seconds while SQLite answers "database is locked" at once,
    for at most `timeout` seconds; then its error is raised."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cursor.execute(sql)
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)


def _enable_wal(cursor, timeout: float) -> None:
    """WAL journal: readers and the writer do not block each other.

    WAL is a property of the file, so this only acts once, on a fresh database. Switching
    needs the file to itself and SQLite then answers "database is locked" at once instead of
    waiting busy_timeout: that happens when several workers open a fresh database together,
    so the switch is retried for as long as a writer would wait.
    """
    if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return
    _while_locked(cursor, "PRAGMA journal_mode = WAL", timeout, 0.02)


def make_sessionmaker(engine: Engine, *, write: bool = False) -> sessionmaker[Session]:
    """Sessions on `engine`; `write=True` for those whose transactions write.

    On SQLite a write session's transaction begins IMMEDIATE (see the module's docstring):
    give the register step a write sessionmaker, the query step a plain one. Its `begin()`
    joins the process's group commit (xds.store.group_commit) on an engine made by make_engine.
    """
    # expire_on_commit=False: objects read in a finished transaction stay usable (we hand
    # plain rows to the protocol code, not live ORM objects, so nothing goes stale silently).
    if not write:
        return sessionmaker(_reader(engine), expire_on_commit=False)
    group = _GROUPS.get(engine.pool)  # SQLite engines made by make_engine have one
    if group is None:
        return sessionmaker(_writer(engine), expire_on_commit=False)
    return _GroupSessions(_writer(engine), expire_on_commit=False, group=group)


class _GroupSessions(sessionmaker):
    """Write sessions whose `begin()` transactions are committed in groups (SQLite)."""

    def __init__(self, bind: Engine, *, group: GroupCommit, **kw):
        super().__init__(bind, **kw)
        self._group = group

    def begin(self):
        return self._group.begin(self)


def _reader(engine: Engine) -> Engine:
    """The engine whose transactions begin DEFERRED on SQLite, also when `engine` is a write
    engine (a write sessionmaker's bind): a reader made from it must not queue behind writers."""
    options = engine.get_execution_options()
    if _is_sqlite(engine.url):
        if options.get(_BEGIN, "DEFERRED") != "DEFERRED":
            return engine.execution_options(**{_BEGIN: "DEFERRED"})
        return engine
    if "isolation_level" not in options:
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


def _writer(engine: Engine) -> Engine:
    """The engine whose transactions begin IMMEDIATE on SQLite (the same pool and hooks)."""
    if _is_sqlite(engine.url):
        return engine.execution_options(**{_BEGIN: "IMMEDIATE"})
    return engine


@contextlib.contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """One write transaction: committed when the block ends, rolled back if it raises.

    On SQLite the transaction holds the database's write lock from its first statement
    (BEGIN IMMEDIATE), so concurrent writers wait their turn instead of failing.
    """
    with make_sessionmaker(engine, write=True).begin() as session:
        yield session


def redacted(url: str | URL) -> str:
    """The database URL as it may be printed: its password hidden."""
    return _normalize(url).render_as_string(hide_password=True)


def ping(engine: Engine) -> bool:
    """True if the database answers (the /health endpoint)."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:  # any failure means "not healthy"; the caller logs nothing more
        return False


def alembic_config() -> Config:
    """Alembic's configuration, built in code: the project needs no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (creating it on a fresh SQLite file).

    Idempotent, and safe when several processes start at once: on SQLite the migration runs
    in a BEGIN IMMEDIATE transaction, on PostgreSQL under an advisory lock (see
    migrations/env.py), and each reads the current revision only once it holds the lock.
    """
    _migrate(url, lambda config: command.upgrade(config, revision))


def downgrade(url: str | URL, revision: str) -> None:
    """Take the database at `url` back to `revision` ("base": no tables at all)."""
    _migrate(url, lambda config: command.downgrade(config, revision))


def _migrate(url: str | URL, run: Callable[[Config], None]) -> None:
    # One transaction for the whole run (both databases have transactional DDL once we emit
    # BEGIN ourselves on SQLite): a failed migration leaves the previous revision intact.
    # env.py sees the transaction already open and runs inside it.
    engine = make_engine(url)
    try:
        with _writer(engine).begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            run(config)
    finally:
        engine.dispose()


def chunked(items: Sequence[T], size: int = 1000) -> Iterator[Sequence[T]]:
    """`items` in slices of at most `size`: IN lists and multi-row VALUES stay well under the
    drivers' bound-parameter limits (SQLite 32766, PostgreSQL 65535)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
