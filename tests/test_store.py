"""xds.store: engine set-up, what the register step stores and finds, known patients.

Every test runs on SQLite and on PostgreSQL (see conftest.database_url).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid

import pytest
from sqlalchemy import Engine, select, text, union_all
from sqlalchemy.exc import IntegrityError

from xds import dtm
from xds.model import (
    Association,
    AssociationType,
    Author,
    AvailabilityStatus,
    Code,
    DocumentEntry,
    DocumentEntryType,
    Folder,
    Submission,
    SubmissionSet,
)
from xds.store import db, patients, registry
from xds.store.tables import (
    AuthorRow,
    CodeRow,
    DocumentEntryRow,
    FolderRow,
    ObjectCodeRow,
    ReferenceIdRow,
    SubmissionSetRow,
)

APPROVED = AvailabilityStatus.APPROVED.value
DEPRECATED = AvailabilityStatus.DEPRECATED.value
PATIENT = "P1^^^&1.2.3.4&ISO"


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def oid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def submission(
    patient: str = PATIENT, ss_unique_id: str | None = None, document_unique_id: str | None = None
) -> Submission:
    """A SubmissionSet with one DocumentEntry and one Folder holding it."""
    ss = SubmissionSet(
        id=urn(),
        unique_id=ss_unique_id or oid(),
        source_id="1.3.6.1.4.1.21367.2025.1",
        patient_id=patient,
        submission_time="20250301101500",
        content_type_code=Code("REFERRAL", "1.2.392.200119.4"),
        authors=[Author(person="^Sato^Hanako"), Author(institutions=["Kagawa Hospital"])],
    )
    doc = DocumentEntry(
        id=urn(),
        unique_id=document_unique_id or oid(),
        patient_id=patient,
        mime_type="text/xml",
        hash="DA39A3EE5E6B4B0D3255BFEF95601890AFD80709",
        size="1234",
        creation_time="2025",
        service_start_time="202502281030",
        repository_unique_id="1.2.3.4.5",
        class_code=Code("11490-0", "2.16.840.1.113883.6.1"),
        type_code=Code("18842-5", "2.16.840.1.113883.6.1"),
        format_code=Code("urn:ihe:iti:xds-sd:text:2008", "1.3.6.1.4.1.19376.1.2.3"),
        healthcare_facility_type_code=Code("HOSP", "2.16.840.1.113883.5.11"),
        practice_setting_code=Code("394802001", "2.16.840.1.113883.6.96"),
        # The same code twice: side rows are de-duplicated, not refused.
        confidentiality_codes=[Code("N", "2.16.840.1.113883.5.25")] * 2,
        event_codes=[Code("T-D3000", "SNM3"), Code("T-A0100", "SNM3")],
        authors=[Author(person="^Sato^Hanako"), Author(person="^Tanaka^Ichiro")],
        reference_ids=["order-42^^^&1.2.3.9&ISO^urn:ihe:iti:xds:2013:order"],
    )
    folder = Folder(
        id=urn(),
        unique_id=oid(),
        patient_id=patient,
        last_update_time="20250301101500",
        codes=[Code("Referral", "1.2.3.7")],
    )
    member = AssociationType.HAS_MEMBER.value
    return Submission(
        submission_set=ss,
        documents=[doc],
        folders=[folder],
        associations=[
            Association(urn(), member, ss.id, doc.id, submission_set_status="Original"),
            Association(urn(), member, ss.id, folder.id),
            Association(urn(), member, folder.id, doc.id),
        ],
    )


def xml_of(s: Submission) -> dict[str, str]:
    return {o.id: f'<Object id="{o.id}"/>' for o in s.objects()}


def _row(session, table, entry_uuid: str):
    return session.scalars(select(table).where(table.entry_uuid == entry_uuid)).one()


def _objects():
    """id and entryUUID of every object that has side-table rows."""
    return union_all(*(select(t.id, t.entry_uuid) for t in (DocumentEntryRow, SubmissionSetRow, FolderRow))).subquery()


def save(engine: Engine, s: Submission) -> None:
    with db.write_session(engine) as session:
        registry.save_submission(session, s, xml_of(s))


# -- db -----------------------------------------------------------------------------------


def test_sqlite_engine_creates_its_folder_and_sets_pragmas(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'a' / 'b' / 'registry.sqlite3'}", 2.5)
    try:
        with engine.connect() as c:
            pragma = lambda name: c.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
            assert pragma("journal_mode") == "wal"
            assert pragma("foreign_keys") == 1
            assert pragma("synchronous") == 2  # FULL: a committed submission survives a power cut
            assert pragma("busy_timeout") == 2500
            assert pragma("cache_size") == -32768
        assert (tmp_path / "a" / "b" / "registry.sqlite3").exists()
    finally:
        engine.dispose()


def test_sqlite_write_session_begins_immediate(tmp_path):
    """A write session holds the write lock from its start: a second writer cannot begin."""
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    db.upgrade(url)
    engine, impatient = db.make_engine(url), db.make_engine(url, busy_timeout=0.05)
    try:
        with db.write_session(engine) as session:
            session.execute(select(1))
            with pytest.raises(Exception, match="locked"):
                with db.write_session(impatient) as other:
                    other.execute(select(1))
            with pytest.raises(Exception, match="locked"):
                with db.make_sessionmaker(impatient, write=True).begin() as other:
                    other.execute(select(1))
            # Readers are not blocked by the writer (WAL).
            with db.make_sessionmaker(impatient)() as reader:
                assert reader.execute(select(1)).scalar() == 1
    finally:
        engine.dispose()
        impatient.dispose()


def test_postgresql_read_sessions_run_each_statement_on_its_own(engine):
    """Under READ COMMITTED each statement sees its own snapshot, in a transaction or not: a read
    session sends no BEGIN and no ROLLBACK (two round trips of a stored query's four). Write
    sessions keep their transaction, and an engine set to another isolation level keeps it."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    with db.make_sessionmaker(engine)() as reader:
        reader.execute(select(1))
        assert reader.connection().connection.driver_connection.autocommit
    with db.write_session(engine) as writer:
        writer.execute(select(1))
        assert not writer.connection().connection.driver_connection.autocommit
    repeatable = engine.execution_options(isolation_level="REPEATABLE READ")
    with db.make_sessionmaker(repeatable)() as reader:
        assert reader.execute(text("SHOW transaction_isolation")).scalar() == "repeatable read"


def test_a_waiting_sqlite_writer_takes_the_write_lock_once_it_is_freed(tmp_path, monkeypatch):
    """A writer finding the write lock taken tries again (every millisecond, not in SQLite's
    growing sleeps) and gets it when the holder commits; its busy_timeout is as set after."""
    url = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    db.upgrade(url)
    holder_engine, waiter_engine = db.make_engine(url), db.make_engine(url, busy_timeout=30)
    waiting = threading.Event()
    sleep = time.sleep
    monkeypatch.setattr(db.time, "sleep", lambda seconds: (waiting.set(), sleep(seconds)))
    outcome: list[object] = []

    def waiter() -> None:
        try:
            with db.write_session(waiter_engine) as session:
                session.execute(select(1))
                outcome.append(session.connection().exec_driver_sql("PRAGMA busy_timeout").scalar())
        except Exception as e:  # noqa: BLE001 - reported below
            outcome.append(e)

    try:
        with db.write_session(holder_engine) as session:
            session.execute(select(1))  # BEGIN IMMEDIATE: the write lock is ours
            thread = threading.Thread(target=waiter)
            thread.start()
            assert waiting.wait(30), "the second writer never found the lock taken"
            assert not outcome  # still waiting while we hold it
        thread.join(30)
        assert outcome == [30000]
    finally:
        holder_engine.dispose()
        waiter_engine.dispose()


def test_ping(engine):
    assert db.ping(engine)
    unreachable = db.make_engine("postgresql://nobody@127.0.0.1:1/none")
    assert not db.ping(unreachable)


def test_a_pooled_connection_the_server_cut_while_it_rested_is_replaced(engine, monkeypatch):
    if engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL connection pool")
    pings = []
    ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(c) or ping(c))
    with engine.connect() as c:
        pid = c.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    # Used a moment ago: not pinged again (no round trip per request)
    with engine.connect() as c:
        assert c.exec_driver_sql("SELECT pg_backend_pid()").scalar() == pid
    assert pings == []
    # The server ends it while it rests in the pool (a restart, an idle timeout) ...
    killer = db.make_engine(engine.url)
    with killer.connect() as k:
        assert k.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar()
    killer.dispose()
    # ... and it has rested longer than IDLE_PING: the ping finds it gone, the pool gives another
    monkeypatch.setattr(db, "IDLE_PING", 0.0)
    with engine.connect() as c:
        assert c.exec_driver_sql("SELECT pg_backend_pid()").scalar() not in (pid, None)
    assert pings


def test_dtm_padded():
    assert dtm.padded("2025") == "20250000000000"
    assert dtm.padded("20250301101500") == "20250301101500"
    assert dtm.padded(None) is None
    # Padded values of different precision compare in time order.
    assert dtm.padded("2024") < dtm.padded("20240101") <= dtm.padded("202401010000") < dtm.padded("2025")


# -- registry -----------------------------------------------------------------------------


def test_save_submission_and_find_it_again(engine, session_factory):
    s = submission()
    save(engine, s)
    ss, doc, folder = s.submission_set, s.documents[0], s.folders[0]

    with session_factory() as session:
        unknown = urn()
        found = registry.find_entries_by_uuid(session, [o.id for o in s.objects()] + [unknown])
        assert unknown not in found
        assert {uuid_: row.kind for uuid_, row in found.items()} == {
            ss.id: "SubmissionSet",
            doc.id: "DocumentEntry",
            folder.id: "Folder",
            **{a.id: "Association" for a in s.associations},
        }
        assert all(row.status == APPROVED for row in found.values())
        d = found[doc.id]
        assert (d.patient_id, d.unique_id, d.hash, d.size) == (
            PATIENT,
            doc.unique_id,
            doc.hash.lower(),
            1234,
        )
        assert (d.logical_id, d.version, d.object_type) == (doc.id, "1", DocumentEntryType.STABLE.value)
        assert (found[ss.id].unique_id, found[ss.id].patient_id) == (ss.unique_id, PATIENT)
        assert found[folder.id].unique_id == folder.unique_id
        a = found[s.associations[2].id]
        assert (a.association_type, a.source, a.target) == (
            AssociationType.HAS_MEMBER.value,
            folder.id,
            doc.id,
        )

        assert registry.registered_unique_ids(session, [doc.unique_id, "1.2.9"], ["1.2.9"], ["1.2.9"]) == (
            {doc.unique_id: [d]}, {"SubmissionSet": {}, "Folder": {}})
        assert registry.existing_unique_ids(session, "SubmissionSet", [ss.unique_id, "1.2"]) == {
            ss.unique_id: ss.id
        }
        assert registry.existing_unique_ids(session, "Folder", [folder.unique_id]) == {
            folder.unique_id: folder.id
        }

        stored = _row(session, DocumentEntryRow, doc.id)
        assert stored.xml == f'<Object id="{doc.id}"/>'
        assert stored.submission_set == ss.id
        assert stored.creation_time == "20250000000000"
        assert stored.service_start_time == "20250228103000"
        assert stored.service_stop_time is None

        owners = _objects()
        codes = set(session.execute(select(owners.c.entry_uuid, CodeRow.attribute, CodeRow.value)
                                    .select_from(ObjectCodeRow)
                                    .join(owners, owners.c.id == ObjectCodeRow.object_id)
                                    .join(CodeRow, CodeRow.id == ObjectCodeRow.code_id)))
        assert (doc.id, "confidentialityCode", "N^^^2.16.840.1.113883.5.25") in codes
        assert (doc.id, "classCode", "11490-0^^^2.16.840.1.113883.6.1") in codes
        assert (ss.id, "contentTypeCode", "REFERRAL^^^1.2.392.200119.4") in codes
        assert (folder.id, "folderCodeList", "Referral^^^1.2.3.7") in codes
        assert len([c for c in codes if c[0] == doc.id]) == 8  # 5 single, 1 confidentiality, 2 event
        assert set(session.execute(select(owners.c.entry_uuid, AuthorRow.person)
                                   .join(owners, owners.c.id == AuthorRow.object_id))) == {
            (ss.id, "^Sato^Hanako"),  # the author without a person has no row
            (doc.id, "^Sato^Hanako"),
            (doc.id, "^Tanaka^Ichiro"),
        }
        assert session.scalars(select(ReferenceIdRow.value)).all() == doc.reference_ids


def test_status_given_by_the_model_is_kept(engine, session_factory):
    s = submission()
    submitted = AvailabilityStatus.SUBMITTED.value
    s.documents[0].status = s.folders[0].status = s.associations[0].status = submitted
    save(engine, s)
    changed = [s.documents[0].id, s.folders[0].id, s.associations[0].id]
    with session_factory() as session:
        found = registry.find_entries_by_uuid(session, [o.id for o in s.objects()])
    assert {o for o, row in found.items() if row.status == submitted} == set(changed)


def test_resubmitted_document_has_two_entries(engine, session_factory):
    """The same uniqueId (same hash and size) may be registered again: two entries."""
    first = submission()
    again = submission(document_unique_id=first.documents[0].unique_id)
    save(engine, first)
    save(engine, again)
    with session_factory() as session:
        found = registry.registered_unique_ids(session, [first.documents[0].unique_id])[0]
    rows = found[first.documents[0].unique_id]
    assert {r.entry_uuid for r in rows} == {first.documents[0].id, again.documents[0].id}


def test_deprecate_changes_the_status_column_only(engine, session_factory):
    s = submission()
    save(engine, s)
    doc = s.documents[0].id
    with db.write_session(engine) as session:
        assert registry.deprecate(session, [doc, urn()]) == 1
    with db.write_session(engine) as session:
        # Already deprecated (e.g. by a concurrent replacement): nothing changes.
        assert registry.deprecate(session, [doc]) == 0
    with session_factory() as session:
        assert registry.find_entries_by_uuid(session, [doc])[doc].status == DEPRECATED
        assert _row(session, DocumentEntryRow, doc).xml == f'<Object id="{doc}"/>'


def test_touch_folders(engine, session_factory):
    s = submission()
    save(engine, s)
    folder = s.folders[0].id
    with db.write_session(engine) as session:
        assert registry.touch_folders(session, [folder], "20250401") == 1
    with session_factory() as session:
        assert _row(session, FolderRow, folder).last_update_time == "20250401000000"


def test_existing_unique_ids_only_for_unique_kinds(session_factory):
    with session_factory() as session, pytest.raises(ValueError):
        registry.existing_unique_ids(session, "DocumentEntry", ["1.2.3"])  # type: ignore[arg-type]


def test_a_failed_submission_leaves_nothing(engine, session_factory):
    """One transaction per submission: a duplicate folder uniqueId rolls back all of it."""
    first = submission()
    save(engine, first)
    second = submission()
    second.folders[0].unique_id = first.folders[0].unique_id
    with pytest.raises(IntegrityError):
        save(engine, second)
    with session_factory() as session:
        assert registry.find_entries_by_uuid(session, [o.id for o in second.objects()]) == {}


def test_database_enforces_submission_set_unique_id(engine, session_factory):
    """Two submissions of one SubmissionSet uniqueId both pass the early check (neither is
    committed yet); the unique constraint still lets only the first one in."""
    unique_id = oid()
    a, b = submission(ss_unique_id=unique_id), submission(ss_unique_id=unique_id)
    with session_factory() as check_a, session_factory() as check_b:
        assert registry.existing_unique_ids(check_a, "SubmissionSet", [unique_id]) == {}
        assert registry.existing_unique_ids(check_b, "SubmissionSet", [unique_id]) == {}
    save(engine, a)
    with pytest.raises(IntegrityError):
        save(engine, b)
    with session_factory() as session:
        assert registry.existing_unique_ids(session, "SubmissionSet", [unique_id]) == {
            unique_id: a.submission_set.id
        }


def _submit_from_another_process(url, unique_id, check_first, barrier, results) -> None:
    """One registry worker: wait for the others, then submit."""
    engine = db.make_engine(url)
    s = submission(ss_unique_id=unique_id)
    try:
        barrier.wait(timeout=30)
        with db.write_session(engine) as session:
            if check_first and registry.existing_unique_ids(session, "SubmissionSet", [unique_id]):
                results.put("found registered")
                return
            registry.save_submission(session, s, xml_of(s))
        results.put("committed")
    except IntegrityError:
        results.put("IntegrityError")
    except Exception as e:  # reported to the test, which fails on it
        results.put(f"{type(e).__name__}: {e}")
    finally:
        engine.dispose()


@pytest.mark.parametrize("check_first", [False, True], ids=["insert", "check-then-insert"])
def test_concurrent_processes_submit_one_submission_set(engine, database_url, check_first):
    """Four worker processes submit the same SubmissionSet uniqueId at once: exactly one
    commits, the others are refused cleanly (no 'database is locked', no deadlock)."""
    processes = 4
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    unique_id = oid()
    workers = [
        context.Process(
            target=_submit_from_another_process,
            args=(database_url, unique_id, check_first, barrier, results),
        )
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    outcomes = sorted(results.get(timeout=60) for _ in workers)
    for w in workers:
        w.join(timeout=30)
    refused = {"IntegrityError", "found registered"} if check_first else {"IntegrityError"}
    assert outcomes.count("committed") == 1, outcomes
    assert set(outcomes) - {"committed"} <= refused, outcomes
    with db.make_sessionmaker(engine)() as session:
        assert list(registry.existing_unique_ids(session, "SubmissionSet", [unique_id])) == [unique_id]


# -- patients -----------------------------------------------------------------------------


def test_patients_add_many(engine, session_factory):
    ids = [f"{n}^^^&1.2.392.100&ISO" for n in range(100_000)]
    with db.write_session(engine) as session:
        assert patients.add(session, ids) == 100_000
    with session_factory() as session:
        assert patients.list_all(session) == sorted(ids)


def test_patients_duplicates_are_ignored(engine, session_factory):
    with db.write_session(engine) as session:
        assert patients.add(session, ["a^^^&1.2&ISO", "b^^^&1.2&ISO", "a^^^&1.2&ISO"]) == 2
    with db.write_session(engine) as session:
        assert patients.add(session, ["b^^^&1.2&ISO", "c^^^&1.2&ISO"]) == 1
        assert patients.add(session, []) == 0
    with session_factory() as session:
        assert patients.list_all(session) == ["a^^^&1.2&ISO", "b^^^&1.2&ISO", "c^^^&1.2&ISO"]


def test_patients_remove_and_known(engine, session_factory):
    with db.write_session(engine) as session:
        patients.add(session, ["a^^^&1.2&ISO", "b^^^&1.2&ISO", "c^^^&1.2&ISO"])
    with db.write_session(engine) as session:
        assert patients.remove(session, ["a^^^&1.2&ISO", "x^^^&1.2&ISO"]) == 1
    with session_factory() as session:
        assert patients.known(session, ["a^^^&1.2&ISO", "b^^^&1.2&ISO", "x^^^&1.2&ISO"]) == {
            "b^^^&1.2&ISO"
        }
        assert patients.list_all(session) == ["b^^^&1.2&ISO", "c^^^&1.2&ISO"]
