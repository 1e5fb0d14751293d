"""Stored queries follow patient merges (ITI TF-2a 3.18.4.1.2.3.9.1, Patient Identity Merge):
the patients are fed and merged through the PIX Manager's feed (xds.identity.feed, as ITI-44
carries it out), documents are registered through ITI-42, and every stored query that takes a
patient id answers for a survivor with the objects registered under it and under every id
merged into it, as they were registered. On SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from sqlalchemy import literal, select

from tests import plans
from tests import queries as q
from tests import submissions as s
from tests.plans import sqlite_plan
from tests.plans import statements as all_statements
from tests.queries import quote, quote_list, register
from tests.test_identity_data import DOMAIN, japanese, pid
from xds.config import Settings
from xds.ebrim import ns
from xds.identity import feed
from xds.identity.directory import IdentityDirectory
from xds.identity.policy import IdentityPolicy
from xds.model.person import PatientRecord
from xds.registry import find, service
from xds.registry.register import DocumentRegistry
from xds.registry.stored_query import MULTI_PATIENT_STORED_QUERY
from xds.store import db

POLICY = IdentityPolicy.from_settings(Settings(affinity_domain=DOMAIN),
                                      clock=lambda: datetime(2025, 12, 1, tzinfo=timezone.utc))
SURVIVOR, SUBSUMED, OTHER, LATER = (pid(e).cx for e in ("S1", "M1", "O1", "L1"))
ACCESSION = "2025001^^^&1.2.3.4.5.6&ISO^urn:ihe:iti:xds:2013:accession"
APPROVED_FOLDERS = ("$XDSFolderStatus", quote_list([q.APPROVED]))
APPROVED_SETS = ("$XDSSubmissionSetStatus", quote_list([q.APPROVED]))


@pytest.fixture
def registry(engine):
    """A registry whose patients come from the PIX Manager's feed, merges included."""
    for extension, who in (("S1", "yamada"), ("M1", "sato"), ("O1", "takahashi_new"), ("L1", "saito_old")):
        fed(engine, feed.add, japanese(extension, who))
    return DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True), patients=IdentityDirectory())


@pytest.fixture
def stored(registry):
    return service.stored_query_for(registry)


def fed(engine, fn, *args):
    with db.write_session(engine) as session:
        return fn(session, *args, POLICY)


def merge(engine, survivor: str, subsumed: str):
    """ITI-44 Patient Registry Duplicates Resolved: `subsumed` is retired into `survivor`."""
    return fed(engine, feed.merge, PatientRecord(ids=[pid(survivor.split("^")[0])]), pid(subsumed.split("^")[0]))


@pytest.fixture
def charts(registry):
    """Each patient's submission: a document (with a reference id), a folder holding it."""
    charts = {}
    for patient in (SURVIVOR, SUBSUMED, OTHER):
        charts[patient] = register(registry, s.document("doc", s.new_oid(), patient, reference_ids=[ACCESSION]),
                                   s.folder("fol", s.new_oid(), patient),
                                   s.association("fol-doc", "HasMember", "fol", "doc"),
                                   s.association("ss-fol-doc", "HasMember", "ss", "fol-doc"), patient=patient)
    return charts


def find_documents(stored, patient, return_type="ObjectRef"):
    return q.find_documents(stored, patient=patient, return_type=return_type)


def patient_ids(answer: q.Answer) -> dict[str, str]:
    """entryUUID -> the patientId its metadata carries, for the DocumentEntries of an answer."""
    found = {}
    for entry_uuid in answer.by_kind.get("DocumentEntry", []):
        element = answer.element_of(entry_uuid)
        (identifier,) = [e for e in element.iter(ns.rim("ExternalIdentifier"))
                         if e.get("identificationScheme") == ns.DE_PATIENT_ID]
        found[entry_uuid] = identifier.get("value")
    return found


# --- the survivor's queries answer for the ids merged into it ----------------------------------------


def test_before_the_merge_each_id_answers_for_itself(stored, charts):
    assert find_documents(stored, SURVIVOR).ids == [charts[SURVIVOR]["doc"]]
    assert find_documents(stored, SUBSUMED).ids == [charts[SUBSUMED]["doc"]]


def test_find_documents_for_the_survivor_holds_the_subsumed_ids_documents(engine, stored, charts):
    merge(engine, SURVIVOR, SUBSUMED)
    answer = find_documents(stored, SURVIVOR, "LeafClass")
    assert answer.status == "Success", answer.errors  # one patient: no XDSResultNotSinglePatient
    # Each document as it was registered: the subsumed id's document keeps its patientId.
    assert patient_ids(answer) == {charts[SURVIVOR]["doc"]: SURVIVOR, charts[SUBSUMED]["doc"]: SUBSUMED}
    assert set(find_documents(stored, SURVIVOR).ids) == {charts[SURVIVOR]["doc"], charts[SUBSUMED]["doc"]}


def test_every_query_by_patient_follows_the_merge(engine, stored, charts):
    merge(engine, SURVIVOR, SUBSUMED)
    ours = [charts[SURVIVOR], charts[SUBSUMED]]
    by_reference = q.ask(stored, "FindDocumentsByReferenceId", ("$XDSDocumentEntryPatientId", quote(SURVIVOR)),
                         q.APPROVED_DOCUMENTS, ("$XDSDocumentEntryReferenceIdList",
                                                quote_list([ACCESSION])),
                         return_type="LeafClass")
    assert by_reference.status == "Success" and by_reference.kind("DocumentEntry") == {c["doc"] for c in ours}
    sets = q.ask(stored, "FindSubmissionSets", ("$XDSSubmissionSetPatientId", quote(SURVIVOR)), APPROVED_SETS,
                 return_type="LeafClass")
    assert sets.status == "Success" and sets.kind("SubmissionSet") == {c["ss"] for c in ours}
    folders = q.ask(stored, "FindFolders", ("$XDSFolderPatientId", quote(SURVIVOR)), APPROVED_FOLDERS,
                    return_type="LeafClass")
    assert folders.status == "Success" and folders.kind("Folder") == {c["fol"] for c in ours}
    everything = q.ask(stored, "GetAll", ("$patientId", quote(SURVIVOR)), q.APPROVED_DOCUMENTS, APPROVED_SETS,
                       APPROVED_FOLDERS, return_type="LeafClass")
    assert everything.status == "Success", everything.errors
    assert everything.kind("DocumentEntry") == {c["doc"] for c in ours}
    assert everything.kind("SubmissionSet") == {c["ss"] for c in ours}
    assert everything.kind("Folder") == {c["fol"] for c in ours}
    # The associations among them: each SubmissionSet's three HasMembers and the folder's one.
    assert len(everything.kind("Association")) == 8


def test_a_query_for_the_retired_id_returns_no_results(engine, stored, charts):
    """ITI TF-2a 3.18.4.1.2.3.9.1: a query for the subsumed id "shall return no results"; its
    documents are found under the survivor."""
    assert find_documents(stored, SUBSUMED).ids == [charts[SUBSUMED]["doc"]]
    merge(engine, SURVIVOR, SUBSUMED)
    answer = find_documents(stored, SUBSUMED)
    assert answer.status == "Success" and answer.ids == []
    assert charts[SUBSUMED]["doc"] in find_documents(stored, SURVIVOR).ids


def test_other_patients_are_not_drawn_in(engine, stored, charts):
    merge(engine, SURVIVOR, SUBSUMED)
    assert charts[OTHER]["doc"] not in find_documents(stored, SURVIVOR).ids
    assert find_documents(stored, OTHER).ids == [charts[OTHER]["doc"]]


def test_merges_chain_to_the_last_survivor(engine, registry, stored, charts):
    merge(engine, SURVIVOR, SUBSUMED)
    merge(engine, LATER, SURVIVOR)  # the survivor, with what was merged into it, into another
    later = register(registry, s.document("doc", s.new_oid(), LATER), patient=LATER)
    answer = find_documents(stored, LATER, "LeafClass")
    assert answer.status == "Success", answer.errors
    assert patient_ids(answer) == {later["doc"]: LATER, charts[SURVIVOR]["doc"]: SURVIVOR,
                                   charts[SUBSUMED]["doc"]: SUBSUMED}


def test_a_submission_for_the_retired_id_is_refused(engine, registry, charts):
    merge(engine, SURVIVOR, SUBSUMED)
    problems = registry.register(s.element(s.submission(SUBSUMED)[0]))
    assert [p.code for p in problems if p.is_error] == ["XDSUnknownPatientId"]


def test_a_registry_that_knows_no_merges_answers_as_before(engine, registry, charts):
    merge(engine, SURVIVOR, SUBSUMED)
    plain = service.stored_query_for(DocumentRegistry(sessions=registry.sessions))  # its patient list
    assert find_documents(plain, SURVIVOR).ids == [charts[SURVIVOR]["doc"]]


# --- one person is one patient ----------------------------------------------------------------------


def test_get_documents_of_a_survivor_and_a_merged_id_is_one_patient(engine, stored, charts):
    both = quote_list([charts[SURVIVOR]["doc"], charts[SUBSUMED]["doc"]])
    before = q.ask(stored, "GetDocuments", ("$XDSDocumentEntryEntryUUID", both), return_type="LeafClass")
    assert before.codes == ["XDSResultNotSinglePatient"]
    merge(engine, SURVIVOR, SUBSUMED)
    after = q.ask(stored, "GetDocuments", ("$XDSDocumentEntryEntryUUID", both), return_type="LeafClass")
    assert after.status == "Success" and after.kind("DocumentEntry") == {charts[SURVIVOR]["doc"],
                                                                        charts[SUBSUMED]["doc"]}


def test_get_documents_of_two_persons_is_still_refused(engine, stored, charts):
    merge(engine, SURVIVOR, SUBSUMED)
    three = quote_list([charts[p]["doc"] for p in (SURVIVOR, SUBSUMED, OTHER)])
    answer = q.ask(stored, "GetDocuments", ("$XDSDocumentEntryEntryUUID", three), return_type="LeafClass")
    assert answer.codes == ["XDSResultNotSinglePatient"]
    assert "of 2 patients" in answer.errors[0].context
    assert OTHER in answer.errors[0].context and SURVIVOR in answer.errors[0].context
    assert SUBSUMED not in answer.errors[0].context  # counted with its survivor


# --- the index still leads ---------------------------------------------------------------------------


@pytest.fixture
def statements(engine):
    """The SELECT statements FROM document_entry run on `engine` (text, parameters) while the test runs."""
    with plans.statements(engine, "FROM document_entry") as seen:
        yield seen


def patient_index_plan(engine, statement: str, parameters) -> tuple[bool, str]:
    """Whether the plan of `statement` searches document_entry by its (patient_id, status, ...)
    index, and the plan. PostgreSQL plans a scan of a table this small whatever its indexes:
    sequential scans are priced out, so that the plan shows whether the condition can use the
    index at all."""
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            plan = "\n".join(row[-1] for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                                            parameters))
            return "ix_document_entry_patient (patient_id=? AND status=?" in plan, plan
        plan = postgres_plan(connection, statement, parameters)
        lines = plan.splitlines()
        # the condition of the document_entry index scan (the aliases' lookups have their own)
        scan = next((i for i, line in enumerate(lines) if "ix_document_entry_patient" in line), None)
        condition = next((line for line in lines[scan:] if "Index Cond" in line), "") if scan is not None else ""
        return scan is not None and re.search(r"patient_id\)?(::text)? = ANY", condition), plan


def postgres_plan(connection, statement: str, parameters) -> str:
    """EXPLAIN of `statement`, sequential scans priced out (see patient_index_plan)."""
    connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    return "\n".join(row[0] for row in connection.exec_driver_sql("EXPLAIN " + statement, parameters))


def test_the_merged_ids_keep_the_patient_index(engine, stored, charts, statements):
    merge(engine, SURVIVOR, SUBSUMED)
    find_documents(stored, SURVIVOR, "LeafClass")
    (statement, parameters), = statements
    assert "patient_id IN" in statement or "patient_id = ANY" in statement
    uses, plan = patient_index_plan(engine, statement, parameters)
    assert uses, plan


# --- one statement: the aliases are looked up within the query's own -------------------------------


@pytest.mark.parametrize("patient", [SURVIVOR, SUBSUMED, OTHER, "NOBODY^^^&1.2.3&ISO", "garbage"])
def test_a_query_for_one_patient_is_one_statement(engine, stored, charts, patient):
    """The directory's aliases of the patient (merged ids, a retired id's none, an unknown or
    unparsable id's itself) are a subquery of the query's statement, not a statement before it:
    one round trip fewer per query on PostgreSQL."""
    merge(engine, SURVIVOR, SUBSUMED)
    expected = {SURVIVOR: {charts[SURVIVOR]["doc"], charts[SUBSUMED]["doc"]}, OTHER: {charts[OTHER]["doc"]}}
    with all_statements(engine) as seen:
        answer = find_documents(stored, patient, "LeafClass")
    assert answer.status == "Success" and answer.kind("DocumentEntry") == expected.get(patient, set())
    (statement, _), = seen
    assert "FROM document_entry" in statement and "identity_patient" in statement


def test_the_aliases_looked_up_in_sql_are_the_directorys(engine, charts):
    """IdentityDirectory.aliases_in_sql finds what aliases() gives, id for id: merges, a chain,
    retired ids, unknown and unparsable ids, the merged ids' text as Identifier.cx writes it."""
    merge(engine, SURVIVOR, SUBSUMED)
    merge(engine, LATER, SURVIVOR)
    directory = IdentityDirectory()
    ids = [SURVIVOR, SUBSUMED, OTHER, LATER, "NOBODY^^^&1.2.3&ISO", "garbage", "S1^^^&notanoid&ISO",
           f" {LATER}", LATER.replace("&ISO", "&iso")]
    with db.make_sessionmaker(engine)() as session:
        for cx in ids:
            aliases = directory.aliases_in_sql.select(literal(cx))
            found = session.execute(select(aliases.subquery()), directory.aliases_in_sql.values(cx)).scalars().all()
            assert sorted(found) == sorted(directory.aliases(session, cx)), cx
        assert directory.aliases(session, LATER) == [LATER, SURVIVOR, SUBSUMED]  # the chain, flattened


def test_the_answer_comes_in_the_order_of_the_listed_aliases(engine, registry, stored, charts):
    """FindDocuments for a survivor answers in the order a query given its aliases as a list
    does (a Multi-Patient Stored Query naming it: the directory's aliases_of, an IN list)."""
    for patient, times in ((SUBSUMED, ("2021", "2019")), (SURVIVOR, ("2020", "2018")), (LATER, ("2017", "2022"))):
        register(registry, *(s.document(f"d{i}", s.new_oid(), patient, creation_time=time)
                             for i, time in enumerate(times)), patient=patient)
    merge(engine, SURVIVOR, SUBSUMED)
    merge(engine, LATER, SURVIVOR)
    for return_type in ("ObjectRef", "LeafClass"):
        listed = q.read(stored.query(q.request("urn:uuid:3d1bdb10-39a2-11de-89c2-2f44d94eaa9f",
                                               ("$XDSDocumentEntryPatientId", quote_list([LATER])),
                                               q.APPROVED_DOCUMENTS, return_type=return_type),
                                     MULTI_PATIENT_STORED_QUERY))
        assert listed.status == "Success" and len(listed.ids) == 8, listed.errors
        assert find_documents(stored, LATER, return_type).ids == listed.ids


def test_the_aliases_subquery_keeps_the_indexes(engine, stored, charts):
    """The statement of FindDocuments for a survivor: the patient index searched for each alias,
    and the aliases found by the identity_patient (root, extension) and merged_into indexes."""
    merge(engine, SURVIVOR, SUBSUMED)
    with all_statements(engine) as seen:
        find_documents(stored, SURVIVOR, "LeafClass")
    (statement, parameters), = seen
    if engine.dialect.name == "sqlite":
        plan = sqlite_plan(engine, statement, parameters)
        assert any(step.startswith("SEARCH document_entry USING INDEX ix_document_entry_patient (patient_id=? "
                                   "AND status=?") for step in plan), plan
        assert sum(step.startswith("SEARCH survivor USING INDEX sqlite_autoindex_identity_patient_1 "
                                   "(root=? AND extension=?)") for step in plan) == 2, plan
        assert any(step.startswith("SEARCH merged USING INDEX ix_identity_patient_merged_into (merged_into=?)")
                   for step in plan), plan
        assert not [step for step in plan if step.startswith("SCAN") and "CONSTANT ROW" not in step], plan
        return
    with engine.begin() as connection:
        plan = postgres_plan(connection, statement, parameters)
    assert "Index Scan using ix_document_entry_patient on document_entry" in plan, plan
    assert plan.count("Index Scan using uq_identity_patient_root_extension") == 2, plan
    assert "Index Scan using ix_identity_patient_merged_into on identity_patient merged" in plan, plan
    assert "Seq Scan" not in plan, plan


def test_the_statements_of_a_shape_serve_every_patient_and_only_their_directorys_queries(engine, registry, stored,
                                                                                         charts):
    """One statement per query shape, its SQL text the same for every patient (the id, its root
    and extension are bound); a registry that knows no merges keeps statements of its own."""
    merge(engine, SURVIVOR, SUBSUMED)
    find._shapes.clear()
    with all_statements(engine) as seen:
        assert set(find_documents(stored, SURVIVOR).ids) == {charts[SURVIVOR]["doc"], charts[SUBSUMED]["doc"]}
        kept = {shape: dict(statements) for shape, statements in find._shapes.items()}
        assert find_documents(stored, OTHER).ids == [charts[OTHER]["doc"]]
        assert find_documents(stored, SUBSUMED).ids == []
        assert find_documents(stored, "garbage").ids == []
    assert len(kept) == 1 and {shape: dict(statements) for shape, statements in find._shapes.items()} == kept
    assert len(seen) == 4 and len({text for text, _ in seen}) == 1
    plain = service.stored_query_for(DocumentRegistry(sessions=registry.sessions))  # its patient list
    assert find_documents(plain, SURVIVOR).ids == [charts[SURVIVOR]["doc"]]
    assert len(find._shapes) == 2
