"""Load the PDQ benchmark's patients (bench/pdq_corpus.py) into an identity database: the rows
the Patient Identity Feed (xds.identity.feed.add) stores for them, written in bulk.

    python -m bench.pdq_load --database URL [--patients 1000000]
    python -m bench.pdq_load --database URL --verify     # the equality check only
    python -m bench.pdq_load --database URL --feed-rate  # feed.add's own rate on a loaded database

Why not feed.add itself: it is the right code but one record at a time (locks, the linking
rules' look-ups, about 15 statements per feed), and at 1,000,000 patients its demographic rule
starts from the name keys (bench/RESULTS.md): measured on the loaded databases at 20 feeds/s
on SQLite and 48 on PostgreSQL (`--feed-rate`), 6 to 14 hours for a million. This
loader writes the same rows from the same code paths where they do not read the database:

* search keys: Normaliser.record_keys (what store.write_keys inserts); records as JSON:
  records.to_json (what store.new_patient and revise_history store);
* links: the corpus feeds each person's regional id first and its other ids right after,
  naming the regional id in asOtherIDs, so the identifier rule links them (link
  "identifier", the person's revision counted up by each), and the regional id starts a
  person of its own (link "new");
* the demographic rule, which feed.add runs for each regional id (its identifier rule finds
  nothing), is run here over an index in memory of the patients fed before it, with the
  comparison xds.identity.links uses (_names_agree): its candidates (demographics-ambiguous,
  demographics-partial, and same-domain, as every person already has a regional id) are
  stored as set_candidates stores them. A demographic link it would make (never, in this
  corpus) stops the load;
* the registry learns the regional ids (xds.store.patients' table), as _tell_registry does.

Rows are made in worker processes and written in bulk (SQLite: executemany; PostgreSQL: COPY),
the secondary indexes dropped during the load and created again after, as the schema has them.
`--verify` feeds a small corpus with many namesakes born the same day through feed.add and
through this loader into two fresh databases and compares every identity table row by row,
then the answers of PDQ queries of every kind.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Index, Table, func, select, text
from sqlalchemy.engine import make_url

from bench.pdq_corpus import DOMAIN, Corpus, record_of
from xds.config import Settings
from xds.identity import records
from xds.identity.links import KNOWN_GENDERS, _names_agree  # noqa: PLC2701 - the rule's own comparison
from xds.identity.names import FAMILY, NAME, birth_date
from xds.identity.policy import IdentityPolicy
from xds.store import db
from xds.store.tables import (IdentityCandidateRow, IdentityKeyRow, IdentityOtherIdRow, IdentityPatientRow,
                              IdentityPersonRow, IdentityRevisionRow, PatientRow)

#: Every feed of the corpus happens at this moment (the policy's clock).
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
POLICY = IdentityPolicy.from_settings(Settings(affinity_domain=DOMAIN), clock=lambda: NOW)
CHUNK = 5_000  # patients per worker task and per transaction

TABLES: dict[str, Table] = {t.name: t for t in (  # type: ignore[misc]
    IdentityPersonRow.__table__, IdentityPatientRow.__table__, IdentityKeyRow.__table__,
    IdentityOtherIdRow.__table__, IdentityRevisionRow.__table__, IdentityCandidateRow.__table__)}
COLUMNS = {
    "identity_person": ["id", "revision", "created_at", "updated_at"],
    "identity_patient": ["pk", "root", "extension", "person_id", "status", "merged_into", "link", "revision",
                         "gender", "birth_date", "sender", "record", "updated_at"],
    "identity_key": ["patient_pk", "seq", "kind", "key"],
    "identity_other_id": ["patient_pk", "root", "extension"],
    "identity_revision": ["patient_pk", "revision", "action", "at", "person_id", "sender", "record"],
    "identity_candidate": ["patient_pk", "other_pk", "reason", "created_at"],
    "patient": ["patient_id"],  # created_at: the server's default, as patients.add leaves it
}


# --- rows, made in worker processes ------------------------------------------------------------

@dataclass(slots=True)
class Demographics:
    """What the demographic rule compares of one patient (xds.identity.links._by_demographics)."""

    pk: int
    person_id: int
    root: str
    gender: str | None
    birth: str | None
    #: Its keys of kind family or name (what the rule's SELECT finds it by).
    keys: frozenset[str]
    #: The keys the rule looks for when this record is fed: its family and whole-name keys.
    wanted: frozenset[str]
    scripts: dict[str, set[str]]
    family: frozenset[str]
    multiple_birth: bool | None


@dataclass
class Chunk:
    rows: dict[str, list[tuple]]
    demographics: list[Demographics]


_corpus: Corpus | None = None


def _init(patients: int, seed: int, birth_dates: int | None) -> None:
    global _corpus
    _corpus = Corpus(patients, seed, birth_dates)


def produce(first_last: tuple[int, int]) -> Chunk:
    """The rows of patients first..last-1 (a worker's task), candidates aside."""
    corpus = _corpus
    assert corpus is not None
    first, last = first_last
    n = POLICY.normaliser
    rows: dict[str, list[tuple]] = {name: [] for name in COLUMNS}
    demographics = []
    for patient in corpus.patients_of(first, last):
        record = record_of(patient, corpus)
        pk, person_id = patient.number + 1, patient.person.number + 1
        own = record.ids[0]
        regional = own.root == DOMAIN
        if regional:
            # Its person is new; each further id of it counts the person's revision up.
            start = corpus.first_patient(patient.person.number)
            ids = min(len(patient.person.sources), corpus.patients - start)
            rows["identity_person"].append((person_id, ids, NOW, NOW))
            rows["patient"].append((own.cx,))
        gender = record.gender
        date = birth_date(record.birth_time)
        json = records.to_json(record)
        rows["identity_patient"].append((pk, own.root, own.extension, person_id, "active", None,
                                         "new" if regional else "identifier", 1, gender, date, record.sender,
                                         json, NOW))
        keys = n.record_keys(record)
        rows["identity_key"] += [(pk, seq, kind, key) for seq, kind, key in keys]
        others = [i for i in dict.fromkeys([*record.ids[1:], *record.other_ids]) if i != own and i.root and i.extension]
        rows["identity_other_id"] += [(pk, i.root, i.extension) for i in others]
        rows["identity_revision"].append((pk, 1, "add", NOW, person_id, record.sender, json))
        wanted: set[str] = set()
        family: set[str] = set()
        for name in record.names:
            f, _, whole = n.name_keys(name)
            wanted.update(f)
            wanted.update(whole)
            family.update(f)
        demographics.append(Demographics(
            pk, person_id, own.root, gender, date, frozenset(k for _, kind, k in keys if kind in (FAMILY, NAME)),
            frozenset(wanted), n.names_by_script(record), frozenset(family), record.multiple_birth))
    return Chunk(rows, demographics)


class Linker:
    """The demographic rule over the patients fed so far, in memory (see the module's
    docstring): the candidates feed.add stores for a regional id."""

    def __init__(self) -> None:
        self.by_birth: dict[str, list[Demographics]] = {}
        self.members: dict[int, list[Demographics]] = {}

    def candidates(self, d: Demographics) -> list[tuple[int, str]]:
        if d.root != DOMAIN:
            return []  # linked by the identifier rule: no candidates
        if not d.birth or len(d.birth) < 8 or not d.scripts:
            return []
        pool = [o for o in self.by_birth.get(d.birth, ()) if o.keys & d.wanted and o.pk != d.pk]
        full: dict[int, list[int]] = {}
        partial: list[int] = []
        gender = d.gender if d.gender in KNOWN_GENDERS else None
        for o in sorted(pool, key=lambda o: o.pk):
            agree = _names_agree(d.scripts, o.scripts)
            same_gender = gender is not None and o.gender == gender
            if agree and same_gender:
                full.setdefault(o.person_id, []).append(o.pk)
            elif agree:
                partial.append(o.pk)
            elif same_gender and d.family & o.family and not d.multiple_birth and not o.multiple_birth:
                partial.append(o.pk)
        if len(full) == 1:
            person = next(iter(full))
            clash = [m.pk for m in self.members[person] if m.root == d.root and m.pk != d.pk]
            if not clash:
                raise RuntimeError(f"patient {d.pk} would be linked to person {person} by demographics: the corpus "
                                   "assumes every person has a regional id fed first")
            pairs = [(pk, "same-domain") for pk in clash]
        elif len(full) > 1:
            pairs = [(pk, "demographics-ambiguous") for pks in full.values() for pk in pks]
        else:
            pairs = [(pk, "demographics-partial") for pk in sorted(partial)]
        unique = {other: reason for other, reason in pairs if other != d.pk}
        return [(d.pk, other, reason, NOW) for other, reason in unique.items()]

    def add(self, d: Demographics) -> None:
        # Kept for every patient (a million of them): the same few thousand key strings once.
        d.keys = frozenset(map(sys.intern, d.keys))
        d.wanted = frozenset()  # only needed while the patient itself is fed
        d.family = frozenset(map(sys.intern, d.family))
        d.scripts = {script: set(map(sys.intern, keys)) for script, keys in d.scripts.items()}
        if d.birth:
            self.by_birth.setdefault(d.birth, []).append(d)
        self.members.setdefault(d.person_id, []).append(d)


# --- writing ----------------------------------------------------------------------------------

def _secondary_indexes() -> list[Index]:
    return [ix for table in (*TABLES.values(), PatientRow.__table__) for ix in table.indexes]


class SqliteWriter:
    def __init__(self, url: str):
        self.connection = sqlite3.connect(make_url(url).database, isolation_level=None)
        # Loading only; the server's connections set their own pragmas (xds.store.db).
        self.connection.execute("PRAGMA synchronous = OFF")
        self.connection.execute("PRAGMA cache_size = -4000000")
        from sqlalchemy.dialects import sqlite as dialect

        d = dialect.dialect()
        # How SQLAlchemy writes a time on SQLite (sqlite3's own adapter writes another form).
        self.convert = IdentityPersonRow.__table__.c.created_at.type.dialect_impl(d).bind_processor(d)

    def write(self, rows: dict[str, list[tuple]]) -> None:
        c = self.connection
        c.execute("BEGIN IMMEDIATE")
        for name, values in rows.items():
            if not values:
                continue
            columns = COLUMNS[name]
            if any(isinstance(v, datetime) for v in values[0]):
                values = [tuple(self.convert(v) if isinstance(v, datetime) else v for v in row) for row in values]
            names = ", ".join(f'"{col}"' for col in columns)
            c.executemany(f'INSERT INTO "{name}" ({names}) VALUES ({", ".join("?" for _ in columns)})', values)
        c.execute("COMMIT")

    def close(self) -> None:
        self.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.connection.close()


class PostgresWriter:
    def __init__(self, url: str):
        import psycopg

        self.connection = psycopg.connect(libpq_url(url))

    def write(self, rows: dict[str, list[tuple]]) -> None:
        with self.connection.transaction(), self.connection.cursor() as cursor:
            for name, values in rows.items():
                if not values:
                    continue
                names = ", ".join(f'"{col}"' for col in COLUMNS[name])
                with cursor.copy(f'COPY "{name}" ({names}) FROM STDIN') as copy:
                    for row in values:
                        copy.write_row(row)

    def close(self) -> None:
        self.connection.close()


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as psycopg takes it (the search_path option kept)."""
    u = make_url(url)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


def load(url: str, corpus: Corpus, *, workers: int = 2, quiet: bool = False) -> float:
    """Write the corpus into the migrated, empty identity tables at `url`; returns seconds."""
    engine = db.make_engine(url)
    postgres = engine.dialect.name == "postgresql"
    indexes = _secondary_indexes()
    with engine.begin() as connection:
        if connection.scalar(select(func.count()).select_from(IdentityPatientRow.__table__)):
            raise SystemExit(f"{url}: the identity tables are not empty")
        for ix in indexes:
            ix.drop(connection)
    writer = PostgresWriter(url) if postgres else SqliteWriter(url)
    linker = Linker()
    start = time.monotonic()
    tasks = [(first, min(first + CHUNK, corpus.patients)) for first in range(0, corpus.patients, CHUNK)]
    context = multiprocessing.get_context("fork")
    done = 0
    try:
        with context.Pool(workers, _init, (corpus.patients, corpus.seed, corpus.birth_dates)) as pool:
            for chunk in pool.imap(produce, tasks):
                candidates = []
                for d in chunk.demographics:
                    candidates += linker.candidates(d)
                    linker.add(d)
                chunk.rows["identity_candidate"] = candidates
                writer.write(chunk.rows)
                done += len(chunk.demographics)
                if not quiet and done % 100_000 < CHUNK:
                    rate = done / (time.monotonic() - start)
                    print(f"  {done:,} patients, {rate:,.0f}/s", flush=True)
    finally:
        writer.close()
    with engine.begin() as connection:
        for ix in indexes:
            ix.create(connection)
        if postgres:
            # The bulk rows carry their own ids: the sequences must follow for later feeds.
            for table, column in (("identity_person", "id"), ("identity_patient", "pk")):
                connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                                        f"(SELECT coalesce(max({column}), 1) FROM {table}))"))
    if postgres:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return time.monotonic() - start


# --- the equality check -------------------------------------------------------------------------

def feed_all(url: str, corpus: Corpus, batch: int = 1_000, first: int = 0) -> float:
    """Feed the corpus (from patient `first`) through xds.identity.feed.add, `batch` feeds per
    transaction; seconds."""
    from xds.identity import feed

    engine = db.make_engine(url)
    start = time.monotonic()
    records_ = corpus.records(first, corpus.patients)
    while True:
        with db.write_session(engine) as session:
            fed = 0
            for record in records_:
                feed.add(session, record, POLICY)
                fed += 1
                if fed == batch:
                    break
        if fed < batch:
            break
    seconds = time.monotonic() - start
    engine.dispose()
    return seconds


def feed_rate(url: str, corpus: Corpus, count: int = 1_000) -> float:
    """Feeds per second of feed.add on the loaded database at `url`: the `count` records that
    would follow the corpus, in transactions of 100, each rolled back (the database is left
    as it was)."""
    from xds.identity import feed

    bigger = Corpus(corpus.patients + count, corpus.seed, corpus.birth_dates)
    engine = db.make_engine(url)
    sessions = db.make_sessionmaker(engine, write=True)
    start = time.monotonic()
    for first in range(corpus.patients, corpus.patients + count, 100):
        with sessions() as session:
            for record in bigger.records(first, min(first + 100, corpus.patients + count)):
                feed.add(session, record, POLICY)
            session.rollback()
    seconds = time.monotonic() - start
    engine.dispose()
    return count / seconds


def dump(url: str) -> dict[str, list[tuple]]:
    """Every identity row (and the registry's patient ids), in key order."""
    engine = db.make_engine(url)
    result = {}
    with engine.connect() as connection:
        for name, table in TABLES.items():
            result[name] = [tuple(r) for r in connection.execute(select(table).order_by(*table.primary_key.columns))]
        result["patient"] = [tuple(r) for r in connection.execute(
            select(PatientRow.patient_id).order_by(PatientRow.patient_id))]
    engine.dispose()
    return result


def verify(base_url: str | None, patients: int = 3_000, birth_dates: int = 40) -> bool:
    """Feed a corpus with many namesakes born the same day both ways; compare."""
    from bench.pdq import check_answers

    corpus = Corpus(patients, birth_dates=birth_dates)
    with _two_databases(base_url) as (fed_url, loaded_url):
        seconds = feed_all(fed_url, corpus)
        print(f"feed.add: {patients:,} feeds in {seconds:.1f} s = {patients / seconds:,.0f} feeds/s "
              f"(transactions of 1,000 feeds)", flush=True)
        seconds = load(loaded_url, corpus, quiet=True)
        print(f"bulk loader: {patients:,} patients in {seconds:.1f} s", flush=True)
        a, b = dump(fed_url), dump(loaded_url)
        same = True
        for name in a:
            if a[name] != b[name]:
                same = False
                extra, missing = set(b[name]) - set(a[name]), set(a[name]) - set(b[name])
                print(f"  {name}: DIFFERENT: {len(a[name])} rows fed, {len(b[name])} loaded; loaded only: "
                      f"{sorted(extra)[:3]}; fed only: {sorted(missing)[:3]}", flush=True)
            else:
                print(f"  {name}: {len(a[name]):,} rows, identical", flush=True)
        reasons: dict[str, int] = {}
        for row in a["identity_candidate"]:
            reasons[row[2]] = reasons.get(row[2], 0) + 1
        print(f"  candidates by reason: {reasons}", flush=True)
        for url, how in ((fed_url, "fed"), (loaded_url, "loaded")):
            engine = db.make_engine(url)
            try:
                checked = check_answers(engine, corpus, samples=6)
            finally:
                engine.dispose()
            print(f"  PDQ answers of the {how} database as the corpus predicts: {checked} queries", flush=True)
    return same


@contextlib.contextmanager
def _two_databases(base_url: str | None) -> Iterator[tuple[str, str]]:
    """Two fresh migrated databases: SQLite files, or two schemas of the PostgreSQL database."""
    if base_url is None or make_url(base_url).get_backend_name() == "sqlite":
        with tempfile.TemporaryDirectory(prefix="pdq-verify-") as folder:
            urls = (f"sqlite:///{folder}/fed.sqlite3", f"sqlite:///{folder}/loaded.sqlite3")
            for url in urls:
                db.upgrade(url)
            yield urls
        return
    admin = db.make_engine(base_url)
    schemas = [f"verify_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    urls = []
    for schema in schemas:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        u = make_url(base_url)
        options = " ".join(filter(None, [u.query.get("options"), f"-csearch_path={schema}"]))
        urls.append(u.update_query_dict({"options": options}).render_as_string(hide_password=False))
    try:
        for url in urls:
            db.upgrade(url)
        yield urls[0], urls[1]
    finally:
        with admin.begin() as connection:
            for schema in schemas:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pdq_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", help="SQLAlchemy URL of a migrated, empty identity database "
                                           "(with --verify: where to make the two test databases)")
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    parser.add_argument("--verify", action="store_true")
    parser.add_argument("--feed-rate", action="store_true",
                        help="measure feed.add on the loaded database (1,000 feeds, rolled back)")
    args = parser.parse_args(argv)
    if args.feed_rate:
        rate = feed_rate(args.database, Corpus(args.patients))
        print(f"feed.add on {args.patients:,} patients: {rate:,.0f} feeds/s (transactions of 100, rolled back)")
        return 0
    if args.verify:
        same = verify(args.database)
        print("EQUALITY CHECK " + ("PASSED" if same else "FAILED"))
        return 0 if same else 1
    if not args.database:
        parser.error("--database is required")
    db.upgrade(args.database)
    seconds = load(args.database, Corpus(args.patients), workers=args.workers)
    print(f"loaded {args.patients:,} patients in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
