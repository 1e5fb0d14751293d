"""Group commit on SQLite: the write transactions a worker's threads wait to run at the same time
share one database transaction, and one commit.

SQLite has one writer at a time, and with synchronous=FULL every commit syncs the WAL to disk.
Left to themselves, the threads of a worker that queue for the write lock would each take it,
write, sync and let it go in turn. Here they queue for their worker's turn instead:

* the first of a batch begins a transaction (BEGIN IMMEDIATE: SQLite's write lock, waited for
  as any writer waits);
* each later member runs its own work in a SAVEPOINT of that transaction, so that its failure
  (a rejected submission, an IntegrityError) undoes its work alone; it sees the work of the
  members before it, as it would had they committed one after the other;
* the member that finds no other thread waiting (or is the BATCH-th) commits for all of them:
  one sync for the batch. A member's block returns only once that commit is on disk, and raises
  if it failed, so that a Success answer still means a durable submission.

A member whose work was undone answers at once: it has nothing to wait for. Another worker
process takes the write lock between two batches, as it took it between two transactions before.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator

from sqlalchemy import Engine, event, exc
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

#: Execution option read by the SQLite "begin" hook: the time.monotonic() by which BEGIN
#: IMMEDIATE must have the write lock (a member that waited for its turn has less left).
DEADLINE = "xds_sqlite_deadline"

#: The most members in one batch: the first one's answer waits for the others' work.
BATCH = 16

#: Session.info key of a member's callbacks for when the batch is committed (after_commit).
_ON_COMMIT = "xds_on_commit"


def after_commit(session: Session, callback: Callable[[Session], None]) -> None:
    """Call callback(session) once the session's transaction is committed, not if it rolls back.

    What is remembered outside the database (a cache of ids) must wait for that: in a batch,
    SQLAlchemy's after_commit event comes when the member's savepoint is released, before the
    batch commits, and the batch may still fail."""
    pending = session.info.get(_ON_COMMIT)
    if pending is None:
        event.listen(session, "after_commit", callback, once=True)
    else:
        pending.append(callback)


class _Batch:
    """One shared write transaction and, once it is committed, its outcome."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self.members = 0
        self.error: BaseException | None = None
        self._done = threading.Event()

    def open(self) -> bool:
        """Whether the database still holds the transaction: SQLite rolls it back by itself
        after some errors (disk full, I/O error), and a member's savepoint would then begin
        a new one in which the members before it are lost."""
        return self.connection.connection.driver_connection.in_transaction

    def commit(self) -> None:
        try:
            if not self.open():
                raise exc.OperationalError("COMMIT", None, sqlite3.OperationalError(
                    "the database rolled the write transaction back"))
            self.connection.commit()
        except BaseException as e:  # every member hears it: none of their work was kept
            self.error = e
            with contextlib.suppress(Exception):
                self.connection.rollback()
        finally:
            self.connection.close()
            self._done.set()

    def committed(self) -> None:
        """Wait for the commit; raise if it failed (each member its own copy of the error)."""
        self._done.wait()
        if self.error is not None:
            raise copy.copy(self.error)


class GroupCommit:
    """The write transactions of one database in this process (see the module's docstring)."""

    def __init__(self, busy_timeout: float):
        self._busy_timeout = busy_timeout
        self._turn = threading.Lock()  # held by the thread whose work is running
        self._queue = threading.Lock()  # guards _waiting, and the hand-over with it
        self._waiting = 0
        self._batch: _Batch | None = None

    @property
    def waiting(self) -> int:
        """How many threads are waiting for their turn."""
        return self._waiting

    @contextlib.contextmanager
    def begin(self, sessions: sessionmaker) -> Iterator[Session]:
        """A session whose work is part of the batch; committed (with the batch) when the block
        ends, undone if it raises or rolls back. `sessions` is bound to an engine that begins
        its transactions IMMEDIATE (xds.store.db.make_sessionmaker)."""
        deadline = time.monotonic() + self._busy_timeout
        self._take_turn(deadline)
        try:
            batch = self._join(sessions.kw["bind"], deadline)
        except BaseException:
            self._pass_turn()
            raise
        # The first member needs no savepoint: its rollback ends the transaction, which holds
        # nothing else then (the batch ends with it; see _join).
        mode = "create_savepoint" if batch.members else "rollback_only"
        callbacks: list[Callable[[Session], None]] = []
        undone: list[bool] = []
        try:
            with sessions(bind=batch.connection, join_transaction_mode=mode) as session:
                session.info[_ON_COMMIT] = callbacks
                event.listen(session, "after_soft_rollback", functools.partial(_undone, callbacks, undone))
                with session.begin():
                    yield session
        finally:
            batch.members += 1
            self._pass_turn()
        if undone:
            return  # none of its work is in the batch: nothing to wait for
        batch.committed()
        for callback in callbacks:
            callback(session)

    def _take_turn(self, deadline: float) -> None:
        with self._queue:
            self._waiting += 1
        taken = self._turn.acquire(timeout=max(0.0, deadline - time.monotonic()))
        with self._queue:
            self._waiting -= 1
            if taken:
                return
            # Given up; but a hand-over may have been meant for this thread alone: if the turn
            # is free, finish what it was handed (a batch no one else would commit).
            if not self._turn.acquire(blocking=False):
                raise _locked()
        self._pass_turn()
        raise _locked()

    def _join(self, engine: Engine, deadline: float) -> _Batch:
        batch = self._batch
        if batch is not None:
            if batch.open():
                return batch
            self._batch = None
            batch.commit()  # fails: its members hear that the database rolled it back
        connection = engine.connect()
        try:
            connection.execution_options(**{DEADLINE: deadline})
            connection.begin()  # BEGIN IMMEDIATE
        except BaseException:
            connection.close()
            raise
        self._batch = _Batch(connection)
        return self._batch

    def _pass_turn(self) -> None:
        """Hand the turn to a waiting thread, which carries on the batch; with none waiting (or
        a full batch), commit the batch first."""
        with self._queue:
            batch = self._batch
            if batch is None or (self._waiting and batch.members < BATCH):
                self._turn.release()
                return
            self._batch = None
        try:
            batch.commit()
        finally:
            self._turn.release()


def _undone(callbacks: list, undone: list, _session: Session, transaction: SessionTransaction) -> None:
    """A member's rollback: of its whole work (the session's outermost transaction), or of a
    savepoint within it (begin_nested), after which the rest of its work is still in the batch."""
    if transaction.parent is None:
        callbacks.clear()
        undone.append(True)


def _locked() -> exc.OperationalError:
    """What SQLite's own wait would have raised: the caller answers that the database is busy."""
    return exc.OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))
