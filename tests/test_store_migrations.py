"""Migrations: the latest revision builds exactly the schema of xds/store/tables.py, and
upgrading is safe to repeat and to run from several processes at once."""

from __future__ import annotations

import multiprocessing

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from xds.store import db, patients
from xds.store.tables import metadata

HEAD = ScriptDirectory.from_config(db.alembic_config()).get_current_head()


def _revision(url: str) -> str | None:
    engine = db.make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = db.make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_builds_the_schema_of_tables_py(database_url):
    db.upgrade(database_url)
    assert _revision(database_url) == HEAD
    engine = db.make_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_upgrade_twice_changes_nothing(database_url):
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    try:
        with db.write_session(engine) as session:
            patients.add(session, ["a^^^&1.2&ISO"])
        db.upgrade(database_url)
        assert _revision(database_url) == HEAD
        with db.make_sessionmaker(engine)() as session:
            assert patients.list_all(session) == ["a^^^&1.2&ISO"]
    finally:
        engine.dispose()


def test_downgrade_to_base_and_up_again(database_url):
    db.upgrade(database_url)
    db.downgrade(database_url, "base")
    assert _tables(database_url) == {"alembic_version"}
    db.upgrade(database_url)
    assert _tables(database_url) == {"alembic_version", *metadata.tables}


def test_sqlite_upgrade_creates_the_file_and_its_folder(tmp_path):
    url = f"sqlite:///{tmp_path / 'new' / 'registry.sqlite3'}"
    db.upgrade(url)
    assert (tmp_path / "new" / "registry.sqlite3").exists()
    assert _revision(url) == HEAD


def _upgrade(url: str, barrier, results) -> None:
    try:
        barrier.wait(timeout=30)
        db.upgrade(url)
        results.put("ok")
    except Exception as e:  # reported to the test, which fails on it
        results.put(f"{type(e).__name__}: {e}")


def test_workers_starting_together_upgrade_once(database_url):
    """Several workers run upgrade() on one fresh database at the same moment."""
    processes = 3
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=_upgrade, args=(database_url, barrier, results))
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    assert outcomes == ["ok"] * processes
    assert _revision(database_url) == HEAD
