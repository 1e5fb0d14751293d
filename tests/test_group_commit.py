"""Group commit on SQLite (xds.store.group_commit): write transactions that a process's threads
wait to run at the same time share one commit, and each is still all-or-nothing and durable
before its block returns."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from xds.store import db, registry
from xds.store.tables import CodeRow
from xds.store.group_commit import GroupCommit, after_commit


@pytest.fixture
def url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'rows.sqlite3'}"
    with sqlite3.connect(tmp_path / "rows.sqlite3") as connection:
        connection.execute("CREATE TABLE row (x INTEGER PRIMARY KEY)")
    return url


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = db.make_engine(url)
    yield engine
    engine.dispose()


def group(engine: Engine) -> GroupCommit:
    return db._GROUPS[engine.pool]


def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.001)


def committed_rows(url: str) -> set[int]:
    """The rows another connection sees: what was committed."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
        return {x for (x,) in connection.execute("SELECT x FROM row")}


class Writer(threading.Thread):
    """A thread running `work(session)` in one write session; `outcome` is None or its error."""

    def __init__(self, engine: Engine, work: Callable):
        super().__init__(daemon=True)
        self.engine, self.work = engine, work
        self.inside = threading.Event()
        self.outcome: BaseException | None | str = "not finished"

    def run(self) -> None:
        try:
            with db.write_session(self.engine) as session:
                self.inside.set()
                self.work(session)
            self.outcome = None
        except BaseException as e:  # noqa: BLE001 - the test reads it
            self.outcome = e

    def finished(self) -> BaseException | None | str:
        self.join(30)
        assert not self.is_alive(), "the writer never finished"
        return self.outcome


def insert(x: int, then: Callable[[], object] = lambda: None) -> Callable:
    def work(session) -> None:
        session.execute(text("INSERT INTO row (x) VALUES (:x)"), {"x": x})
        then()
    return work


def holding_its_turn(engine: Engine) -> tuple[Writer, threading.Event]:
    """A writer inside its block (inserting 1), holding its turn until the event is set."""
    release = threading.Event()
    first = Writer(engine, insert(1, then=lambda: release.wait(30)))
    first.start()
    assert first.inside.wait(30)
    return first, release


def batch_behind(engine: Engine, first: Writer, *others: Writer) -> None:
    """Start `first`, which holds the turn until released; then the others, once they wait."""
    first.start()
    assert first.inside.wait(30)
    for writer in others:
        writer.start()
    until(lambda: group(engine).waiting == len(others), "the other writers wait for their turn")


def test_writers_waiting_together_share_one_commit(engine, url):
    commits: list[int] = []
    event.listen(engine, "commit", lambda _connection: commits.append(1))
    release = threading.Event()
    seen_at_commit: list[set[int]] = []

    def first_work(session) -> None:
        insert(1)(session)
        after_commit(session, lambda _session: seen_at_commit.append(committed_rows(url)))
        release.wait(30)

    first = Writer(engine, first_work)
    others = [Writer(engine, insert(2)), Writer(engine, insert(3))]
    batch_behind(engine, first, *others)
    assert committed_rows(url) == set()  # nothing is committed while the batch is open
    release.set()
    assert [w.finished() for w in [first, *others]] == [None, None, None]
    assert len(commits) == 1
    assert committed_rows(url) == {1, 2, 3}
    # The first member's after_commit ran once the batch was on disk, not at its savepoint.
    assert seen_at_commit == [{1, 2, 3}]


def test_a_writer_alone_commits_at_once(engine, url):
    commits: list[int] = []
    event.listen(engine, "commit", lambda _connection: commits.append(1))
    for x in (1, 2):
        with db.write_session(engine) as session:
            insert(x)(session)
        assert committed_rows(url) == set(range(1, x + 1))
    assert len(commits) == 2


def test_a_member_that_fails_undoes_its_own_work_alone(engine, url):
    release = threading.Event()
    first = Writer(engine, insert(1, then=lambda: release.wait(30)))
    clash = Writer(engine, insert(1))  # the first member's row: the unique key refuses it
    third = Writer(engine, insert(3))
    batch_behind(engine, first, clash, third)
    release.set()
    assert first.finished() is None
    assert isinstance(clash.finished(), IntegrityError)
    assert third.finished() is None
    assert committed_rows(url) == {1, 3}


def test_a_member_rolled_back_by_its_own_code_keeps_nothing(engine, url):
    def changes_its_mind(session) -> None:
        insert(2)(session)
        session.rollback()  # as the registry does with a submission it refuses

    release = threading.Event()
    first = Writer(engine, insert(1, then=lambda: release.wait(30)))
    second = Writer(engine, changes_its_mind)
    batch_behind(engine, first, second)
    release.set()
    assert first.finished() is None and second.finished() is None
    assert committed_rows(url) == {1}


def test_a_first_member_rolled_back_leaves_the_next_ones_their_own_transaction(engine, url):
    """The first member runs without a savepoint: its rollback ends the transaction."""
    release = threading.Event()

    def refuses(session) -> None:
        insert(1)(session)
        release.wait(30)
        session.rollback()

    first = Writer(engine, refuses)
    second, third = Writer(engine, insert(2)), Writer(engine, insert(3))
    batch_behind(engine, first, second, third)
    release.set()
    assert [w.finished() for w in (first, second, third)] == [None, None, None]
    assert committed_rows(url) == {2, 3}


def rolled_back_by_the_database(session) -> None:
    """What SQLite does after some errors (disk full, I/O error): the transaction is rolled back
    and the statement fails."""
    session.connection().connection.driver_connection.execute("ROLLBACK")
    raise OSError("disk I/O error")


def lose_a_batch(engine: Engine, first_work: Callable) -> BaseException | None | str:
    """`first_work` as a batch's first member, and behind it a member whose statement makes the
    database roll the batch back; the first member's outcome."""
    release = threading.Event()
    first = Writer(engine, lambda session: (first_work(session), release.wait(30)))
    second = Writer(engine, rolled_back_by_the_database)
    batch_behind(engine, first, second)
    release.set()
    assert second.finished() is not None
    return first.finished()


def test_when_the_database_rolled_the_batch_back_every_member_hears_it(engine, url):
    """The members whose work was in a batch the database rolled back must not be answered as
    if it had been committed."""
    remembered: list[int] = []

    def first_work(session) -> None:
        insert(1)(session)
        after_commit(session, lambda _session: remembered.append(1))

    assert isinstance(lose_a_batch(engine, first_work), OperationalError)
    assert committed_rows(url) == set()
    assert remembered == []
    with db.write_session(engine) as session:  # the next batch starts afresh
        insert(4)(session)
    assert committed_rows(url) == {4}


def test_a_member_whose_savepoint_rolled_back_still_waits_for_the_batch(engine, url):
    """A savepoint of its own (begin_nested) rolled back undoes that part only: the rest of the
    member's work is in the batch, and it hears the batch's outcome."""
    remembered: list[int] = []

    def partly_refused(session) -> None:
        try:
            with session.begin_nested():
                insert(2)(session)
                raise ValueError("refused")
        except ValueError:
            pass
        insert(1)(session)
        after_commit(session, lambda _session: remembered.append(1))

    assert isinstance(lose_a_batch(engine, partly_refused), OperationalError)
    assert committed_rows(url) == set() and remembered == []


def test_a_writer_waiting_for_its_turn_longer_than_busy_timeout_is_answered_busy(url):
    engine = db.make_engine(url, busy_timeout=0.3)
    try:
        first, release = holding_its_turn(engine)
        late = Writer(engine, insert(2))
        late.start()
        outcome = late.finished()  # before the first lets go
        assert isinstance(outcome, OperationalError) and "locked" in str(outcome)
        release.set()
        assert first.finished() is None
        assert committed_rows(url) == {1}
    finally:
        engine.dispose()


def test_batches_of_two_processes_take_the_write_lock_in_turn(url, engine, monkeypatch):
    """Another engine stands for another worker process: its own group waits for SQLite's write
    lock while this one's batch holds it."""
    other = db.make_engine(url)
    locked_out = threading.Event()
    sleep = time.sleep
    monkeypatch.setattr(db.time, "sleep", lambda seconds: (locked_out.set(), sleep(seconds)))
    try:
        first, release = holding_its_turn(engine)
        elsewhere = Writer(other, insert(2))
        elsewhere.start()
        assert locked_out.wait(30), "the other process's writer never found the lock taken"
        assert not elsewhere.inside.is_set()
        release.set()
        assert first.finished() is None and elsewhere.finished() is None
        assert committed_rows(url) == {1, 2}
    finally:
        other.dispose()


def test_code_ids_of_a_batch_that_failed_are_not_remembered(tmp_path):
    """The registry caches the ids of the codes it added once they are committed: in a batch,
    once the batch is; a lost batch's ids may be taken by other codes later."""
    url = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    try:
        def adds_a_code(session) -> None:
            registry.code_ids(session, [("classCode", "lost^^^1.2.3")])

        assert isinstance(lose_a_batch(engine, adds_a_code), OperationalError)
        with db.write_session(engine) as session:
            other = registry.code_ids(session, [("classCode", "other^^^1.2.3")])
            again = registry.code_ids(session, [("classCode", "lost^^^1.2.3")])
        with db.make_sessionmaker(engine)() as session:
            stored = dict(session.execute(select(CodeRow.value, CodeRow.id)).all())
        assert stored == {"other^^^1.2.3": other[("classCode", "other^^^1.2.3")],
                          "lost^^^1.2.3": again[("classCode", "lost^^^1.2.3")]}
    finally:
        engine.dispose()
