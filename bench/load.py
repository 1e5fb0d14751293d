"""Fill a registry database with the benchmark corpus (bench/corpus.py): by default 100,000
patients, 1,000,000 DocumentEntries in 400,000 submissions.

    python -m bench.load --database URL [--patients N] [--workers 2]
    python -m bench.load --database URL --verify     # the equality check only

What is stored is what ITI-42 stores, produced by the registry's own code: each submission is
an ITI-42 SubmitObjectsRequest (symbolic ids), read by `xds.ebrim.submission.read_submission`
and stored by `DocumentRegistry._store` - the very step `register()` runs once a submission
is accepted (UUIDs assigned, status Approved in the model and the XML, the XML serialized,
`xds.store.registry.save_submission` building the rows). Only two things differ from
`register()`, both for speed and neither changing a row:

* the checks against the registry (known patient, uniqueIds not yet registered) are skipped:
  the corpus is valid by construction (`--verify` and a sample of `validate` show it);
* save_submission is handed a collector instead of a Session: the rows it would INSERT one
  submission at a time are gathered from worker processes and written in bulk (SQLite:
  executemany; PostgreSQL: COPY), one transaction per chunk of patients.

`--verify` proves the second point: the same submissions registered through `register()`
(one transaction each, as the HTTP endpoint does) and through this loader, with the same
UUID sequence, give byte-identical rows in every table, on the database given.

Resumable: chunks commit in order, so a rerun starts after the last patient stored.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

from lxml import etree
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from bench import corpus
from xds.ebrim.submission import read_submission
from xds.registry.register import DocumentRegistry
from xds.registry.validate import validate
from xds.store import db, patients, stored_xml
from xds.store.tables import DocumentEntryRow, metadata

CHUNK = 500  # patients per worker task and per transaction (5,000 documents)
FIXED_CLOCK = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)


# --- producing rows with the registry's own code -----------------------------------------------


class RowCollector:
    """Stands in for the Session that `xds.store.registry.save_submission` inserts through:
    keeps each `execute(insert(table), rows)` call's rows, by table, as tuples. Object ids are
    numbered from `first_id` on; a code stays its (attribute, value) key, which the writer turns
    into the dictionary's id (`code_order`: new keys in the order register() would add them)."""

    def __init__(self, first_id: int = 1) -> None:
        self.tables: dict[str, tuple[list[str], list[tuple]]] = {}
        self._next_id = first_id
        self.code_order: dict[tuple[str, str], None] = {}

    def next_object_ids(self, count: int) -> list[int]:
        ids = list(range(self._next_id, self._next_id + count))
        self._next_id += count
        return ids

    def code_ids(self, keys) -> dict[tuple[str, str], tuple[str, str]]:
        wanted = set(keys)
        self.code_order.update(dict.fromkeys(sorted(wanted - self.code_order.keys())))
        return {key: key for key in wanted}

    def stored(self) -> dict[str, tuple[list[str], list[tuple]]]:
        """The rows as the database stores them: XML compressed (as the column type does)."""
        out = {}
        for name, (columns, rows) in self.tables.items():
            if "xml" in columns:
                at = columns.index("xml")
                rows = [(*row[:at], stored_xml.stored(row[at]), *row[at + 1:]) for row in rows]
            out[name] = (columns, rows)
        return out

    def execute(self, statement, rows=None):
        if getattr(statement, "is_insert", False) is not True or rows is None:
            raise NotImplementedError(f"the loader only collects INSERTs, not {statement}")
        name = statement.table.name
        if name not in self.tables:
            self.tables[name] = (list(rows[0]), [])
        columns, out = self.tables[name]
        for row in rows:
            if len(row) != len(columns):
                raise ValueError(f"rows of {name} differ in their columns")
            out.append(tuple(row[c] for c in columns))


_registry = DocumentRegistry(sessions=None, check_patient_ids=False, clock=lambda: FIXED_CLOCK)  # type: ignore[arg-type]


def store_submission(collector: RowCollector, xml: str, check: bool = False) -> None:
    parsed = read_submission(etree.fromstring(xml.encode()))
    problems = list(parsed.errors)
    if check:
        problems += validate(parsed.submission, None)
    if any(p.is_error for p in problems):
        raise ValueError(f"the corpus made an invalid submission: {problems}")
    _registry._store(collector, parsed, _registry._prepare(parsed))  # noqa: SLF001 - the steps register() stores with


#: Object ids per patient: 10 DocumentEntries and 4 SubmissionSets, with room.
IDS_PER_PATIENT = 16


def produce(first_last: tuple[int, int]) -> tuple[dict[str, tuple[list[str], list[tuple]]], list[tuple[str, str]]]:
    """Rows of patients first..last-1 (a worker process's task), and their new codes in order."""
    first, last = first_last
    collector = RowCollector(first * IDS_PER_PATIENT + 1)
    for p in range(first, last):
        for s, xml in enumerate(corpus.submissions(p), 1):
            store_submission(collector, xml, check=(p % 97 == 0 and s == 4))
    return collector.stored(), list(collector.code_order)


# --- writing rows in bulk ----------------------------------------------------------------------


class CodeDictionary:
    """The writer's side of the code dictionary: the ids of the codes already stored, and
    the rows of new ones, numbered on (what register() gives them on an empty registry)."""

    def __init__(self, rows) -> None:
        self.ids = {(attribute, value): id_ for id_, attribute, value in rows}

    def resolve(self, tables: dict[str, tuple[list[str], list[tuple]]],
                order: list[tuple[str, str]]) -> dict[str, tuple[list[str], list[tuple]]]:
        """`tables` with the code rows they need first and object_code's keys turned to ids."""
        new = []
        for key in order:
            if key not in self.ids:
                self.ids[key] = len(self.ids) + 1
                new.append((self.ids[key], *key))
        out = {"code": (["id", "attribute", "value"], new)} if new else {}
        for name, (columns, rows) in tables.items():
            if name == "object_code":
                rows = [(object_id, self.ids[key]) for object_id, key in rows]
            out[name] = (columns, rows)
        return out


class SqliteWriter:
    def __init__(self, url: str):
        self.connection = sqlite3.connect(make_url(url).database, isolation_level=None)
        # Loading only: these make the load faster and change nothing that is stored. The
        # server's own connections set their pragmas again (xds.store.db.make_engine).
        self.connection.execute("PRAGMA synchronous = OFF")
        self.connection.execute("PRAGMA cache_size = -2000000")
        self.codes = CodeDictionary(self.connection.execute("SELECT id, attribute, value FROM code"))

    def write(self, tables: dict[str, tuple[list[str], list[tuple]]], code_order: list[tuple[str, str]]) -> None:
        c = self.connection
        c.execute("BEGIN IMMEDIATE")
        for name, (columns, rows) in self.codes.resolve(tables, code_order).items():
            names = ", ".join(f'"{col}"' for col in columns)
            marks = ", ".join("?" for _ in columns)
            c.executemany(f'INSERT INTO "{name}" ({names}) VALUES ({marks})', rows)
        c.execute("COMMIT")

    def close(self) -> None:
        self.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.connection.close()


class PostgresWriter:
    def __init__(self, url: str):
        import psycopg

        self.connection = psycopg.connect(libpq_url(url))
        self.codes = CodeDictionary(self.connection.execute("SELECT id, attribute, value FROM code"))

    def write(self, tables: dict[str, tuple[list[str], list[tuple]]], code_order: list[tuple[str, str]]) -> None:
        with self.connection.transaction(), self.connection.cursor() as cursor:
            for name, (columns, rows) in self.codes.resolve(tables, code_order).items():
                names = ", ".join(f'"{col}"' for col in columns)
                with cursor.copy(f'COPY "{name}" ({names}) FROM STDIN') as copy:
                    for row in rows:
                        copy.write_row(row)

    def close(self) -> None:
        # The ids were given here, not by the database: its counters continue after them.
        self.connection.execute("SELECT setval(pg_get_serial_sequence('code', 'id'), (SELECT max(id) FROM code))")
        self.connection.execute("SELECT setval('registry_object_id', greatest((SELECT max(id) FROM document_entry),"
                                " (SELECT max(id) FROM submission_set), (SELECT max(id) FROM folder), 1))")
        self.connection.commit()
        self.connection.close()


def libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def writer_for(url: str):
    return SqliteWriter(url) if make_url(url).get_backend_name() == "sqlite" else PostgresWriter(url)


# --- the load ----------------------------------------------------------------------------------


def loaded_patients(engine) -> int:
    """Patients of the corpus already stored (chunks commit whole and in order)."""
    with engine.connect() as connection:
        count = connection.execute(
            select(func.count()).select_from(DocumentEntryRow.__table__)
            .where(DocumentEntryRow.unique_id.like(corpus.DOC_UID_ROOT + ".%"))
        ).scalar_one()
    return count // corpus.DOCUMENTS_PER_PATIENT


def load(url: str, total: int, workers: int) -> None:
    db.upgrade(url)
    engine = db.make_engine(url)
    start = loaded_patients(engine)
    print(f"{start} of {total} patients already loaded", flush=True)
    with db.write_session(engine) as session:
        added = patients.add(session, [corpus.patient_id(p) for p in range(total)])
    print(f"{added} patient ids added", flush=True)
    if start >= total:
        engine.dispose()
        return
    chunks = [(a, min(a + CHUNK, total)) for a in range(start, total, CHUNK)]
    writer = writer_for(url)
    t0 = time.monotonic()
    done = 0
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for tables, code_order in pool.imap(produce, chunks):
            writer.write(tables, code_order)
            done += len(tables["document_entry"][1])
            elapsed = time.monotonic() - t0
            if done % 50_000 < CHUNK * corpus.DOCUMENTS_PER_PATIENT or done == (total - start) * 10:
                remaining = (total - start) * corpus.DOCUMENTS_PER_PATIENT - done
                print(f"{start * 10 + done:>9} documents  {done / elapsed:7.0f} docs/s  "
                      f"ETA {remaining / (done / elapsed) / 60:5.1f} min", flush=True)
    writer.close()
    print(f"loaded {done} documents in {time.monotonic() - t0:.0f} s", flush=True)
    if engine.dialect.name == "postgresql":
        # Autovacuum would analyze these tables by itself soon after a load this size.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
        print("VACUUM ANALYZE done", flush=True)
    engine.dispose()


# --- the equality check ------------------------------------------------------------------------


@contextlib.contextmanager
def deterministic_uuids(seed: int) -> Iterator[None]:
    """The random bytes new UUIDs are made of (xds.ebrim.submission draws os.urandom, uuid.uuid4
    does too) as a fixed sequence. Only draws of a UUID's 16 bytes: SQLAlchemy names anonymous
    aliases from os.urandom(10) when it first compiles a statement, which one of the two paths
    compared may do and the other not."""
    original = os.urandom
    counter = iter(range(seed << 64, (seed + 1) << 64))
    os.urandom = lambda n: next(counter).to_bytes(n, "big") if n == 16 else original(n)
    try:
        yield
    finally:
        os.urandom = original


@contextlib.contextmanager
def scratch_databases(url: str, names: tuple[str, ...]) -> Iterator[list[str]]:
    """Empty databases beside `url`: SQLite files next to it, or PostgreSQL schemas in it."""
    import shutil
    import tempfile

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        folder = tempfile.mkdtemp(prefix="xds-verify-")
        try:
            yield [f"sqlite:///{folder}/{name}.sqlite3" for name in names]
        finally:
            shutil.rmtree(folder)
        return
    admin = db.make_engine(url)
    schemas = [f"verify_{name}_{uuid.uuid4().hex[:8]}" for name in names]
    with admin.begin() as connection:
        for schema in schemas:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield [u.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
               for schema in schemas]
    finally:
        with admin.begin() as connection:
            for schema in schemas:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def dump(url: str) -> dict[str, list[tuple]]:
    engine = db.make_engine(url)
    out = {}
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            columns = [c for c in table.columns if c.name != "created_at"]
            out[table.name] = [tuple(r) for r in connection.execute(
                select(*columns).order_by(*table.primary_key.columns))]
    engine.dispose()
    return out


def verify(url: str, patient_numbers=(7, 8, 12345)) -> bool:
    """Register the submissions of a few patients through DocumentRegistry.register() into one
    scratch database and through the loader into another; compare every row."""
    xmls = [xml for p in patient_numbers for xml in corpus.submissions(p)]
    with scratch_databases(url, ("register", "loader")) as (via_register, via_loader):
        for target in (via_register, via_loader):
            db.upgrade(target)
            engine = db.make_engine(target)
            with db.write_session(engine) as session:
                patients.add(session, [corpus.patient_id(p) for p in patient_numbers])
            engine.dispose()

        engine = db.make_engine(via_register)
        registry = DocumentRegistry(db.make_sessionmaker(engine, write=True), clock=lambda: FIXED_CLOCK)
        with deterministic_uuids(1):
            for xml in xmls:
                problems = registry.register(etree.fromstring(xml.encode()))
                if problems:
                    raise SystemExit(f"register() refused a corpus submission: {problems}")
        engine.dispose()

        with deterministic_uuids(1):
            collector = RowCollector()
            for xml in xmls:
                store_submission(collector, xml, check=True)
        writer = writer_for(via_loader)
        writer.write(collector.stored(), list(collector.code_order))
        writer.close()

        a, b = dump(via_register), dump(via_loader)
    same = True
    for table in a:
        if a[table] != b[table]:
            same = False
            print(f"DIFFERENT: {table}: register() {len(a[table])} rows, loader {len(b[table])} rows")
        else:
            print(f"identical: {table}: {len(a[table])} rows")
    print(f"equality check on {make_url(url).get_backend_name()}: {'PASSED' if same else 'FAILED'} "
          f"({len(xmls)} submissions)")
    return same


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="SQLAlchemy URL of the registry database")
    parser.add_argument("--patients", type=int, default=corpus.PATIENTS)
    parser.add_argument("--workers", type=int, default=2, help="processes producing rows")
    parser.add_argument("--verify", action="store_true", help="only run the equality check")
    args = parser.parse_args(argv)
    if args.verify:
        return 0 if verify(args.database) else 1
    if not verify(args.database):
        return 1
    load(args.database, args.patients, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
