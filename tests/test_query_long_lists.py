"""Stored queries with more ids than a database takes in one statement (SQLite binds at most
32,766 parameters, PostgreSQL 65,535): GetDocuments with 40,000 entryUUIDs, a Multi-Patient
Stored Query (ITI-51) with 40,000 patients, the patients' merges looked up for all of them,
and their audit records. With the query limits raised to let them in they answer correctly, in
statements of a few bound parameters each; with the limits as shipped they are refused with
XDSStoredQueryParamNumber before any SQL runs. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests import plans
from tests import queries as q
from tests import submissions as s
from tests.queries import quote_list, register
from tests.test_audit_actors import Recording
from tests.test_identity_data import DOMAIN, japanese, pid
from xds.audit import actors
from xds.config import Settings
from xds.identity import feed
from xds.identity.directory import IdentityDirectory
from xds.identity.policy import IdentityPolicy
from xds.model.person import PatientRecord
from xds.registry import service
from xds.registry.query import RegistryStoredQuery
from xds.registry.query_params import QueryLimits
from xds.registry.register import DocumentRegistry
from xds.registry.stored_query import MULTI_PATIENT_STORED_QUERY
from xds.security.caller import Caller
from xds.soap import SoapRequest
from xds.store import db
from xds.transactions import ITI_51

MANY = 40_000
DOCUMENTS = "urn:uuid:3d1bdb10-39a2-11de-89c2-2f44d94eaa9f"  # FindDocumentsForMultiplePatients
FOLDERS = "urn:uuid:50d3f5ac-39a2-11de-a1ca-b366239e58df"    # FindFoldersForMultiplePatients
#: Limits raised to let 40,000 values in (what an operator would set: max_query_parameter_values
#: and max_query_values).
GENEROUS = QueryLimits(parameter_values=50_000, values=100_000)
POLICY = IdentityPolicy.from_settings(Settings(affinity_domain=DOMAIN),
                                      clock=lambda: datetime(2025, 12, 1, tzinfo=timezone.utc))
PARAMETER_LIMIT = 32_766  # SQLite's; PostgreSQL's is higher


@pytest.fixture
def statements(engine):
    """The statements run on `engine` while the test runs, with their parameters."""
    with plans.statements(engine, every=True) as seen:
        yield seen


def bound(parameters) -> int:
    return len(parameters) if isinstance(parameters, (dict, list, tuple)) else 0


def fake_uuids(n: int) -> list[str]:
    return [f"urn:uuid:00000000-0000-4000-8000-{i:012d}" for i in range(n)]


def fake_patients(n: int) -> list[str]:
    return [f"X{i:06d}^^^&{DOMAIN}&ISO" for i in range(n)]


def generous(registry) -> RegistryStoredQuery:
    stored = service.stored_query_for(registry)
    return RegistryStoredQuery(stored.sessions, limits=GENEROUS, patients=stored.patients)


def ask(stored, query_id, *slots, return_type="ObjectRef", transaction="ITI-18") -> q.Answer:
    return q.read(stored.query(q.request(query_id, *slots, return_type=return_type), transaction))


# --- GetDocuments with 40,000 entryUUIDs --------------------------------------------------------------


def test_get_documents_with_40000_entry_uuids(registry, statements):
    r = register(registry, s.document("a", s.new_oid()), s.document("b", s.new_oid()))
    ids = [r["a"], *fake_uuids(MANY - 2), r["b"]]
    stored = generous(registry)
    for return_type in ("ObjectRef", "LeafClass"):
        statements.clear()
        answer = ask(stored, "GetDocuments", ("$XDSDocumentEntryEntryUUID", quote_list(ids)), return_type=return_type)
        assert answer.status == "Success" and set(answer.ids) == {r["a"], r["b"]}
        assert statements and max(bound(p) for _, p in statements) < 10


def test_get_documents_with_40000_unique_ids_as_shipped_is_refused_before_any_sql(registry, statements):
    stored = service.stored_query_for(registry)
    statements.clear()
    answer = ask(stored, "GetDocuments", ("$XDSDocumentEntryUniqueId", quote_list(f"1.2.{i}" for i in range(MANY))))
    assert answer.codes == ["XDSStoredQueryParamNumber"] and statements == []


# --- FindDocumentsForMultiplePatients with 40,000 patients -----------------------------------------------


def test_find_documents_for_40000_patients(registry, statements):
    first, last = s.PATIENT, s.OTHER_PATIENT
    charts = {p: register(registry, s.document("doc", s.new_oid(), p), patient=p) for p in (first, last)}
    named = [first, *fake_patients(MANY - 2), last]
    stored = generous(registry)
    for return_type in ("ObjectRef", "LeafClass"):
        statements.clear()
        answer = ask(stored, DOCUMENTS, ("$XDSDocumentEntryPatientId", quote_list(named)), q.APPROVED_DOCUMENTS,
                     return_type=return_type, transaction=MULTI_PATIENT_STORED_QUERY)
        assert answer.status == "Success", answer.errors
        assert set(answer.ids) == {charts[first]["doc"], charts[last]["doc"]}
        assert max(bound(p) for _, p in statements) < 10
        assert all(len(text) < 4000 for text, _ in statements)


def test_find_folders_for_40000_patients(registry):
    charts = {p: register(registry, s.folder("fol", s.new_oid(), p), patient=p) for p in (s.PATIENT, s.OTHER_PATIENT)}
    named = [*fake_patients(MANY - 2), s.PATIENT, s.OTHER_PATIENT]
    answer = ask(generous(registry), FOLDERS, ("$XDSFolderPatientId", quote_list(named)),
                 ("$XDSFolderStatus", quote_list([q.APPROVED])), transaction=MULTI_PATIENT_STORED_QUERY)
    assert answer.status == "Success" and set(answer.ids) == {c["fol"] for c in charts.values()}


def test_40000_patients_as_shipped_are_refused_before_any_sql(registry, statements):
    statements.clear()
    answer = ask(service.stored_query_for(registry), DOCUMENTS,
                 ("$XDSDocumentEntryPatientId", quote_list(fake_patients(MANY))), q.APPROVED_DOCUMENTS,
                 transaction=MULTI_PATIENT_STORED_QUERY)
    assert answer.codes == ["XDSStoredQueryParamNumber"] and "max_query_parameter_values" in answer.errors[0].context
    assert statements == []


# --- their merges, looked up for all of them at once --------------------------------------------------------


def test_the_merges_of_40000_patients(engine, statements):
    for extension, who in (("S1", "yamada"), ("M1", "sato")):
        with db.write_session(engine) as session:
            feed.add(session, japanese(extension, who), POLICY)
    registry = DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True), patients=IdentityDirectory())
    survivor, subsumed = pid("S1").cx, pid("M1").cx
    charts = {p: register(registry, s.document("doc", s.new_oid(), p), patient=p) for p in (survivor, subsumed)}
    with db.write_session(engine) as session:
        feed.merge(session, PatientRecord(ids=[pid("S1")]), pid("M1"), POLICY)
    statements.clear()
    answer = ask(generous(registry), DOCUMENTS,
                 ("$XDSDocumentEntryPatientId", quote_list([*fake_patients(MANY - 1), survivor])),
                 q.APPROVED_DOCUMENTS, transaction=MULTI_PATIENT_STORED_QUERY)
    assert answer.status == "Success" and set(answer.ids) == {charts[survivor]["doc"], charts[subsumed]["doc"]}
    # The directory looks the ids up a thousand at a time (with a few other parameters).
    assert max(bound(p) for _, p in statements) <= 1010 < PARAMETER_LIMIT


# --- their audit records ---------------------------------------------------------------------------------------


def test_40000_patients_are_40000_records_each_the_size_of_one(registry):
    named = fake_patients(MANY)
    body = q.request(DOCUMENTS, ("$XDSDocumentEntryPatientId", quote_list(named)), q.APPROVED_DOCUMENTS)
    request = SoapRequest(action=ITI_51.action, message_id="urn:uuid:51", header=None, body=body)
    caller = Caller("10.1.2.3")
    registry_service = service.RegistryService.of(registry, Settings(multi_patient_query_callers="10.1.2.3",
                                                                     max_query_parameter_values=50_000,
                                                                     max_query_values=100_000))
    result = registry_service.multi_patient_stored_query(request, caller)
    assert not result.failed
    trail = Recording()
    actors.record(trail, ITI_51, request, caller, result)
    assert [ctx.patient_id for _, ctx in trail.records] == named
    # Each record's query names its own patient: it does not grow with the list.
    assert max(len(ctx.query_request) for _, ctx in trail.records) < 2000
