"""ITI-42 at the registry, in process, on SQLite and PostgreSQL: the rules that need the
registry's own content (ITI TF-2 3.42.4.1.3), lifecycle, and all-or-nothing storage."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select, text

from tests import submissions as s
from xds.errors import XdsError
from xds.model import AvailabilityStatus
from xds.registry.register import DocumentRegistry
from xds.store import db, patients
from xds.store import registry as store
from xds.store.tables import (
    AssociationRow,
    DocumentEntryRow,
    FolderRow,
    SubmissionSetRow,
)

APPROVED = AvailabilityStatus.APPROVED.value
DEPRECATED = AvailabilityStatus.DEPRECATED.value


def register(registry: DocumentRegistry, xml: str) -> list[XdsError]:
    return registry.register(s.element(xml))


def errors_of(problems: list[XdsError]) -> list[str]:
    return [p.code for p in problems if p.is_error]


def assert_rule(problems: list[XdsError], rule_id: str, *context_words: str) -> XdsError:
    from xds.rules import RULES

    rule = RULES[rule_id]
    matching = [p for p in problems if p.code == rule.code]
    assert matching, f"expected {rule.code} ({rule_id}), got {problems}"
    for word in context_words:
        assert any(word in p.context for p in matching), f"{word!r} not in {[p.context for p in matching]}"
    return matching[0]


def count(session_factory, table) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(table))


def document_by_uid(session_factory, unique_id: str):
    with session_factory() as session:
        return store.registered_unique_ids(session, [unique_id])[0][unique_id][0]


def test_accepts_a_submission_and_assigns_uuids(registry, session_factory):
    xml, uids = s.submission()
    assert register(registry, xml) == []
    doc = document_by_uid(session_factory, uids["document"])
    assert doc.entry_uuid.startswith("urn:uuid:")
    assert doc.status == APPROVED
    with session_factory() as session:
        ss_uuid = store.existing_unique_ids(session, "SubmissionSet", [uids["submission_set"]])[uids["submission_set"]]
        row = session.scalars(select(AssociationRow).where(AssociationRow.target == doc.entry_uuid)).one()
        xml_stored = session.scalar(select(DocumentEntryRow.xml).where(DocumentEntryRow.entry_uuid == doc.entry_uuid))
    assert row.source == ss_uuid
    assert "Document01" not in xml_stored and doc.entry_uuid in xml_stored
    assert APPROVED in xml_stored


def test_unknown_patient_is_refused(registry, session_factory):
    xml, _ = s.submission(patient="NOBODY^^^&1.2.392.200119.6.102.99&ISO")
    problems = register(registry, xml)
    assert_rule(problems, "patient.unknown", "NOBODY")
    assert count(session_factory, SubmissionSetRow) == 0


def test_patient_check_can_be_turned_off(engine):
    registry = DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True), check_patient_ids=False)
    xml, _ = s.submission(patient="NOBODY^^^&1.2.392.200119.6.102.99&ISO")
    assert register(registry, xml) == []


def test_resubmitting_the_same_document_is_accepted(registry, session_factory):
    xml, uids = s.submission()
    assert register(registry, xml) == []
    again, _ = s.submission(doc_uid=uids["document"], hash=s.HASH.upper())
    assert register(registry, again) == []  # hash comparison is case-insensitive
    with session_factory() as session:
        assert len(store.registered_unique_ids(session, [uids["document"]])[0][uids["document"]]) == 2


def test_resubmission_with_another_hash_fails(registry, session_factory):
    xml, uids = s.submission()
    register(registry, xml)
    again, _ = s.submission(doc_uid=uids["document"], hash="0" * 40)
    problems = register(registry, again)
    assert_rule(problems, "unique-id.hash-differs", uids["document"])
    assert errors_of(problems) == ["XDSNonIdenticalHash"]


def test_resubmission_with_another_size_fails(registry):
    xml, uids = s.submission()
    register(registry, xml)
    again, _ = s.submission(doc_uid=uids["document"], size="10")
    assert_rule(register(registry, again), "unique-id.size-differs", uids["document"], "10")


def test_resubmission_for_another_patient_fails(registry):
    xml, uids = s.submission()
    register(registry, xml)
    again, _ = s.submission(doc_uid=uids["document"], patient=s.OTHER_PATIENT)
    assert_rule(register(registry, again), "unique-id.resubmitted-other-patient", "P2002")


def test_submission_set_unique_id_twice_fails(registry, session_factory):
    xml, uids = s.submission()
    register(registry, xml)
    again, _ = s.submission(ss_uid=uids["submission_set"])
    assert_rule(register(registry, again), "unique-id.in-registry", uids["submission_set"])
    assert count(session_factory, SubmissionSetRow) == 1


def test_folder_unique_id_twice_fails(registry):
    uid = s.new_oid()
    first, _ = s.submission(extra=(s.folder("F", uid), s.association("a2", "HasMember", "SubmissionSet01", "F")))
    assert register(registry, first) == []
    second, _ = s.submission(extra=(s.folder("F", uid), s.association("a2", "HasMember", "SubmissionSet01", "F")))
    assert_rule(register(registry, second), "unique-id.in-registry", "Folder", uid)


def test_entry_uuid_already_used_fails(registry):
    fixed = "urn:uuid:0b2f5a5c-6b4d-4c8e-9a51-3d2e1f0a9b8c"
    first = s.request(
        s.submission_set("SubmissionSet01", s.new_oid()),
        s.document(fixed, s.new_oid()),
        s.association("as01", "HasMember", "SubmissionSet01", fixed, "Original"),
    )
    assert register(registry, first) == []
    second = s.request(
        s.submission_set("SubmissionSet01", s.new_oid()),
        s.document(fixed, s.new_oid()),
        s.association("as01", "HasMember", "SubmissionSet01", fixed, "Original"),
    )
    assert_rule(register(registry, second), "object.uuid-exists", fixed)


def _registered(registry, session_factory, **kw):
    xml, uids = s.submission(**kw)
    assert register(registry, xml) == []
    return document_by_uid(session_factory, uids["document"]).entry_uuid


def _relate(kind: str, target: str, patient: str = s.PATIENT) -> str:
    return s.request(
        s.submission_set("SubmissionSet01", s.new_oid(), patient),
        s.document("Document02", s.new_oid(), patient),
        s.association("as01", "HasMember", "SubmissionSet01", "Document02", "Original"),
        s.association("rel", kind, "Document02", target),
    )


def test_replacement_deprecates_the_original(registry, session_factory):
    original = _registered(registry, session_factory)
    assert register(registry, _relate("RPLC", original)) == []
    with session_factory() as session:
        assert store.find_entries_by_uuid(session, [original])[original].status == DEPRECATED


@pytest.mark.parametrize("kind", ["RPLC", "APND", "XFRM", "XFRM_RPLC"])
def test_relationship_to_a_deprecated_document_fails(registry, session_factory, kind):
    original = _registered(registry, session_factory)
    assert register(registry, _relate("RPLC", original)) == []
    problems = register(registry, _relate(kind, original))
    assert_rule(problems, "association.deprecated-target", original)


@pytest.mark.parametrize("kind", ["RPLC", "APND", "XFRM"])
def test_relationship_to_a_missing_document_fails(registry, kind):
    missing = "urn:uuid:5e0f4f0a-1b0b-4b7e-8f3e-000000000000"
    assert_rule(register(registry, _relate(kind, missing)), "association.bad-target", missing)


def test_relationship_to_another_patients_document_fails(registry, session_factory):
    original = _registered(registry, session_factory, patient=s.OTHER_PATIENT)
    assert_rule(register(registry, _relate("APND", original)), "patient.target-mismatch", "P2002")


def test_reference_to_an_unknown_object_fails(registry):
    missing = "urn:uuid:5e0f4f0a-1b0b-4b7e-8f3e-111111111111"
    xml, _ = s.submission(extra=(s.association("a9", "HasMember", "SubmissionSet01", missing, "Reference"),))
    assert_rule(register(registry, xml), "object.bad-reference", missing)


def test_has_member_from_an_existing_document_fails(registry, session_factory):
    original = _registered(registry, session_factory)
    xml, _ = s.submission(extra=(
        s.association("a9", "HasMember", original, "Document01"),
        s.association("a10", "HasMember", "SubmissionSet01", "a9"),
    ))
    assert_rule(register(registry, xml), "association.bad-member", original)


def test_folder_gets_documents_and_last_update_time(registry, session_factory):
    folder_uid = s.new_oid()
    xml, _ = s.submission(extra=(
        s.folder("F", folder_uid),
        s.association("a2", "HasMember", "SubmissionSet01", "F"),
        s.association("a3", "HasMember", "F", "Document01"),
        s.association("a4", "HasMember", "SubmissionSet01", "a3"),
    ))
    assert register(registry, xml) == []
    with session_factory() as session:
        folder = session.scalars(select(FolderRow).where(FolderRow.unique_id == folder_uid)).one()
    assert folder.last_update_time and "lastUpdateTime" in folder.xml
    # A later submission adds a document to the existing folder: lastUpdateTime moves on.
    registry.clock = lambda: __import__("datetime").datetime(2030, 1, 2, 3, 4, 5, tzinfo=__import__("datetime").timezone.utc)
    later, _ = s.submission(extra=(
        s.association("a3", "HasMember", folder.entry_uuid, "Document01"),
        s.association("a4", "HasMember", "SubmissionSet01", "a3"),
    ))
    assert register(registry, later) == []
    with session_factory() as session:
        assert session.scalars(select(FolderRow).where(FolderRow.entry_uuid == folder.entry_uuid)).one().last_update_time.startswith("20300102030405")


def test_replacement_joins_the_folders_of_the_original(registry, session_factory):
    folder_uid = s.new_oid()
    xml, uids = s.submission(extra=(
        s.folder("F", folder_uid),
        s.association("a2", "HasMember", "SubmissionSet01", "F"),
        s.association("a3", "HasMember", "F", "Document01"),
        s.association("a4", "HasMember", "SubmissionSet01", "a3"),
    ))
    assert register(registry, xml) == []
    original = document_by_uid(session_factory, uids["document"]).entry_uuid
    assert register(registry, _relate("RPLC", original)) == []
    with session_factory() as session:
        folder = session.scalars(select(FolderRow).where(FolderRow.unique_id == folder_uid)).one()
        members = session.scalars(select(AssociationRow.target).where(AssociationRow.source == folder.entry_uuid)).all()
    assert len(members) == 2 and original in members


def test_a_failed_submission_leaves_no_trace(registry, session_factory):
    xml = s.request(
        s.submission_set("SubmissionSet01", s.new_oid()),
        s.document("Document01", s.new_oid()),
        s.document("Document02", s.new_oid(), hash="not-a-hash"),
        s.association("as01", "HasMember", "SubmissionSet01", "Document01", "Original"),
        s.association("as02", "HasMember", "SubmissionSet01", "Document02", "Original"),
    )
    assert "XDSRegistryMetadataError" in errors_of(register(registry, xml))
    for table in (SubmissionSetRow, DocumentEntryRow, AssociationRow, FolderRow):
        assert count(session_factory, table) == 0


def test_every_error_is_reported_not_only_the_first(registry):
    xml = s.request(
        s.submission_set("SubmissionSet01", s.new_oid(), "NOBODY^^^&1.2.3&ISO"),
        s.document("Document01", s.new_oid(), "NOBODY^^^&1.2.3&ISO", hash="xyz", size="-1"),
        s.association("as01", "HasMember", "SubmissionSet01", "Document01", "Original"),
    )
    codes = errors_of(register(registry, xml))
    assert "XDSUnknownPatientId" in codes
    assert codes.count("XDSRegistryMetadataError") >= 2


def _register_in_a_process(database_url: str, xml: str, start, results) -> None:
    engine = db.make_engine(database_url)
    registry = DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True))
    start.wait()
    problems = registry.register(s.element(xml))
    results.put([p.code for p in problems if p.is_error])
    engine.dispose()


def _race(database_url: str, xmls: list[str]) -> list[list[str]]:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    workers = [context.Process(target=_register_in_a_process, args=(database_url, xml, start, results))
               for xml in xmls]
    for w in workers:
        w.start()
    start.set()
    outcomes = [results.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(30)
    return outcomes


def test_concurrent_submissions_of_one_submission_set_one_wins(registry, database_url, session_factory):
    ss_uid = s.new_oid()
    outcomes = _race(database_url, [s.submission(ss_uid=ss_uid)[0] for _ in range(4)])
    assert outcomes.count([]) == 1, outcomes
    assert all(o == ["XDSDuplicateUniqueIdInRegistry"] for o in outcomes if o), outcomes
    assert count(session_factory, SubmissionSetRow) == 1


def test_concurrent_replacements_of_one_document_one_wins(registry, database_url, session_factory):
    original = _registered(registry, session_factory)
    outcomes = _race(database_url, [_relate("RPLC", original) for _ in range(4)])
    assert outcomes.count([]) == 1, outcomes
    assert all(o == ["XDSRegistryDeprecatedDocumentError"] for o in outcomes if o), outcomes


def test_a_locked_database_answers_busy(database_url, engine, session_factory):
    with session_factory.begin() as session:
        patients.add(session, [s.PATIENT])
    impatient = db.make_engine(database_url, busy_timeout=0.2)
    registry = DocumentRegistry(sessions=db.make_sessionmaker(impatient, write=True))
    with db.write_session(engine) as other:  # another writer holds the lock
        if database_url.startswith("sqlite"):
            other.execute(select(1))  # SQLite: the database's one write lock
        else:  # PostgreSQL: a transaction left open with the table locked against writers
            other.execute(text("LOCK TABLE document_entry IN EXCLUSIVE MODE"))
        started = time.monotonic()
        problems = register(registry, s.submission()[0])
        assert time.monotonic() - started < 5  # an answer, not a hang
    assert_rule(problems, "registry.busy", "locked")
    assert register(registry, s.submission()[0]) == []  # and once it is free, all is well
    impatient.dispose()


def test_objects_are_serialized_before_the_write_transaction(registry, monkeypatch):
    """The write lock is held for the checks against the registry and the inserts only: the
    XML of every submitted object is made before the transaction begins."""
    import contextlib

    from xds.registry import register as register_module

    inside: list[bool] = []
    sessions = registry.sessions
    in_transaction = False

    @contextlib.contextmanager
    def watched_begin():
        nonlocal in_transaction
        with sessions.begin() as session:
            in_transaction = True
            try:
                yield session
            finally:
                in_transaction = False

    serialized = register_module.serialized
    monkeypatch.setattr(register_module, "serialized", lambda element: inside.append(in_transaction) or
                        serialized(element))
    monkeypatch.setattr(registry, "sessions", type("Watched", (), {"begin": staticmethod(watched_begin)})())
    assert register(registry, s.submission()[0]) == []
    assert inside == [False, False, False]


def test_a_refused_submission_leaves_the_model_with_the_submitter_s_ids(registry):
    """The XML is prepared before the checks against the registry; what they find still names
    the ids the submitter sent."""
    xml, _ = s.submission(patient="NOBODY^^^&1.2.392.200119.6.102.99&ISO")
    parsed = registry.read(s.element(xml))
    problem = assert_rule(registry.register_submission(parsed), "patient.unknown", "NOBODY")
    assert problem.location == "SubmissionSet01"
    assert [o.id for o in parsed.submission.objects()] == ["SubmissionSet01", "Document01", "as01"]
