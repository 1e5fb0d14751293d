"""Multi-Patient Stored Query (ITI-51, ITI TF-2b 3.51): FindDocumentsForMultiplePatients and
FindFoldersForMultiplePatients, their parameters, the patients' merges, who may ask, and the
audit records (one per patient); the NIST toolkit's MPQ tests (12361, 12364) with its own data
and queries; over HTTP with zeep and over mutual TLS to the Audit Record Repository. On SQLite
and PostgreSQL."""

from __future__ import annotations

import base64
import os
import re
import signal
import ssl
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from lxml import etree

from tests import plans
from tests import queries as q
from tests import submissions as s
from tests.data import CONFORMANCE, PARSER
from tests.queries import quote, quote_list, register
from tests.server import XDS, serve
from tests.test_audit_actors import Recording
from tests.test_identity_data import DOMAIN, japanese, pid
from xds.audit import actors, events
from xds.config import Settings
from xds.conformance.ebrim21 import to_ebrim30
from xds.conformance.prepare import prepare, substitute, unique_id_sequence
from xds.ebrim import ns
from xds.identity import feed
from xds.identity.directory import IdentityDirectory
from xds.identity.policy import IdentityPolicy
from xds.model.person import PatientRecord
from xds.registry import service
from xds.registry.query import RegistryStoredQuery
from xds.registry.query_params import QueryLimits
from xds.registry.register import DocumentRegistry
from xds.registry.stored_query import MULTI_PATIENT_STORED_QUERY
from xds.rules import RULES
from xds.security.allowed import AllowedCallers
from xds.security.caller import Caller
from xds.soap import SoapRequest, build_envelope, parse_response
from xds.store import db, patients
from xds.transactions import ITI_51

DOCUMENTS = "urn:uuid:3d1bdb10-39a2-11de-89c2-2f44d94eaa9f"  # FindDocumentsForMultiplePatients
FOLDERS = "urn:uuid:50d3f5ac-39a2-11de-a1ca-b366239e58df"    # FindFoldersForMultiplePatients
THIRD = "P3003^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
APPROVED_FOLDERS = ("$XDSFolderStatus", quote_list([q.APPROVED]))

CARDIOLOGY = ("C1", "1.2.999.1", "cardiology")
RADIOLOGY = ("C2", "1.2.999.1", "radiology")
CLINIC = ("F2", "1.2.999.2", "clinic")
SURGERY = ("E2", "1.2.999.3", "surgery")


def ask(stored, query_id: str, *slots, return_type: str = "ObjectRef") -> q.Answer:
    """A Multi-Patient Stored Query, as ITI-51 carries it."""
    return q.read(stored.query(q.request(query_id, *slots, return_type=return_type), MULTI_PATIENT_STORED_QUERY))


def patients_slot(*ids: str, name: str = "$XDSDocumentEntryPatientId"):
    return name, quote_list(ids)


@pytest.fixture
def stored(registry, session_factory):
    with session_factory.begin() as session:
        patients.add(session, [THIRD])
    return service.stored_query_for(registry)


@pytest.fixture
def charts(registry, stored):
    """Three patients' documents: P1 a cardiology letter, P2 a radiology report from a clinic,
    P3 a cardiology letter with a surgery event; a folder each."""
    return {
        s.PATIENT: register(registry, s.document("doc", s.new_oid(), s.PATIENT, class_code=CARDIOLOGY),
                            s.folder("fol", s.new_oid(), s.PATIENT), patient=s.PATIENT),
        s.OTHER_PATIENT: register(registry, s.document("doc", s.new_oid(), s.OTHER_PATIENT, class_code=RADIOLOGY,
                                                       facility=CLINIC),
                                  s.folder("fol", s.new_oid(), s.OTHER_PATIENT, codes=(CLINIC,)),
                                  patient=s.OTHER_PATIENT),
        THIRD: register(registry, s.document("doc", s.new_oid(), THIRD, class_code=CARDIOLOGY,
                                             events=(s.EVENT, SURGERY)),
                        s.folder("fol", s.new_oid(), THIRD), patient=THIRD),
    }


def docs(charts, *patient_ids):
    return {charts[p]["doc"] for p in patient_ids}


# --- FindDocumentsForMultiplePatients (ITI TF-2b 3.51.4.1.2.1) --------------------------------------


def test_documents_of_the_patients_named(stored, charts):
    for return_type in ("ObjectRef", "LeafClass"):
        answer = ask(stored, DOCUMENTS, patients_slot(s.PATIENT, THIRD), q.APPROVED_DOCUMENTS, return_type=return_type)
        assert answer.status == "Success", answer.errors  # several patients: no XDSResultNotSinglePatient
        assert set(answer.ids) == docs(charts, s.PATIENT, THIRD)


def test_one_patient_in_a_list_of_one(stored, charts):
    assert set(ask(stored, DOCUMENTS, patients_slot(s.OTHER_PATIENT), q.APPROVED_DOCUMENTS).ids) == docs(
        charts, s.OTHER_PATIENT)


@pytest.mark.parametrize("slot, expected", [
    (("$XDSDocumentEntryClassCode", quote_list([s.key(CARDIOLOGY)])), (s.PATIENT, THIRD)),
    (("$XDSDocumentEntryHealthcareFacilityTypeCode", quote_list([s.key(CLINIC)])), (s.OTHER_PATIENT,)),
    (("$XDSDocumentEntryEventCodeList", quote_list([s.key(SURGERY)])), (THIRD,)),
    (("$XDSDocumentEntryEventCodeList", quote_list([s.key(s.EVENT)])), (s.PATIENT, s.OTHER_PATIENT, THIRD)),
])
def test_without_patients_every_patients_documents_with_the_code(stored, charts, slot, expected):
    answer = ask(stored, DOCUMENTS, slot, q.APPROVED_DOCUMENTS, return_type="LeafClass")
    assert answer.status == "Success" and set(answer.ids) == docs(charts, *expected)


def test_the_other_filters_apply_as_in_find_documents(stored, charts):
    cardiology = ("$XDSDocumentEntryClassCode", quote_list([s.key(CARDIOLOGY)]))
    both_events = [("$XDSDocumentEntryEventCodeList", quote_list([s.key(s.EVENT)])),
                   ("$XDSDocumentEntryEventCodeList", quote_list([s.key(SURGERY)]))]  # AND
    assert set(ask(stored, DOCUMENTS, cardiology, *both_events, q.APPROVED_DOCUMENTS).ids) == docs(charts, THIRD)
    assert ask(stored, DOCUMENTS, cardiology, q.APPROVED_DOCUMENTS,
               ("$XDSDocumentEntryCreationTimeFrom", "20250101")).ids == []
    deprecated = ("$XDSDocumentEntryStatus", quote_list([q.DEPRECATED]))
    assert ask(stored, DOCUMENTS, patients_slot(s.PATIENT, THIRD), deprecated).ids == []


def test_a_query_with_nothing_to_select_on_is_refused(stored, charts):
    answer = ask(stored, DOCUMENTS, q.APPROVED_DOCUMENTS)
    assert answer.status == "Failure" and answer.codes == ["XDSStoredQueryMissingParam"]
    (problem,) = answer.errors
    assert problem.location == "$XDSDocumentEntryPatientId"
    assert problem.context == RULES["query.missing-at-least-one"].error(
        query="FindDocumentsForMultiplePatients",
        params="$XDSDocumentEntryPatientId, $XDSDocumentEntryClassCode, $XDSDocumentEntryEventCodeList, "
               "$XDSDocumentEntryHealthcareFacilityTypeCode").context
    # The status is still required, as in FindDocuments.
    missing = ask(stored, DOCUMENTS, patients_slot(s.PATIENT))
    assert missing.codes == ["XDSStoredQueryMissingParam"] and missing.errors[0].location == "$XDSDocumentEntryStatus"


def test_the_patient_list_is_held_to_the_query_limits(registry, charts):
    small = RegistryStoredQuery(service.stored_query_for(registry).sessions, limits=QueryLimits(parameter_values=2))
    answer = ask(small, DOCUMENTS, patients_slot(s.PATIENT, s.OTHER_PATIENT, THIRD), q.APPROVED_DOCUMENTS)
    assert answer.codes == ["XDSStoredQueryParamNumber"] and answer.errors[0].location == "$XDSDocumentEntryPatientId"


# --- FindFoldersForMultiplePatients (ITI TF-2b 3.51.4.1.2.2) -----------------------------------------


def test_folders_of_the_patients_named(stored, charts):
    answer = ask(stored, FOLDERS, patients_slot(s.PATIENT, s.OTHER_PATIENT, name="$XDSFolderPatientId"),
                 APPROVED_FOLDERS, return_type="LeafClass")
    assert answer.status == "Success"
    assert answer.kind("Folder") == {charts[p]["fol"] for p in (s.PATIENT, s.OTHER_PATIENT)}


def test_folders_of_every_patient_by_code(stored, charts):
    answer = ask(stored, FOLDERS, ("$XDSFolderCodeList", quote_list([s.key(s.FOLDER_CODE)])), APPROVED_FOLDERS)
    assert set(answer.ids) == {charts[p]["fol"] for p in (s.PATIENT, THIRD)}


def test_folders_with_nothing_to_select_on_are_refused(stored, charts):
    answer = ask(stored, FOLDERS, APPROVED_FOLDERS)
    assert answer.codes == ["XDSStoredQueryMissingParam"] and answer.errors[0].location == "$XDSFolderPatientId"
    assert "$XDSFolderPatientId, $XDSFolderCodeList" in answer.errors[0].context


# --- each transaction its own queries ------------------------------------------------------------------


def test_a_multi_patient_query_sent_as_iti18_names_iti51(stored, charts):
    answer = q.ask(stored, DOCUMENTS, patients_slot(s.PATIENT), q.APPROVED_DOCUMENTS)
    assert answer.codes == ["XDSUnknownStoredQuery"]
    assert answer.errors[0].context == RULES["query.wrong-transaction"].error(
        id=DOCUMENTS, name="FindDocumentsForMultiplePatients", transaction="Registry Stored Query (ITI-18)",
        other="Multi-Patient Stored Query (ITI-51)").context


def test_an_iti18_query_sent_as_iti51_is_unknown_there(stored, charts):
    find_documents = q.query_id("FindDocuments")
    answer = ask(stored, find_documents, ("$XDSDocumentEntryPatientId", quote(s.PATIENT)), q.APPROVED_DOCUMENTS)
    assert answer.codes == ["XDSUnknownStoredQuery"] and "FindDocuments" in answer.errors[0].context
    assert "send it as Registry Stored Query (ITI-18)" in answer.errors[0].context
    unknown = ask(stored, "urn:uuid:00000000-0000-4000-8000-000000000051", q.APPROVED_DOCUMENTS)
    assert unknown.codes == ["XDSUnknownStoredQuery"]
    assert unknown.errors[0].context == RULES["query.unknown-multi-patient"].error(
        id="urn:uuid:00000000-0000-4000-8000-000000000051").context


# --- each patient's merges ---------------------------------------------------------------------------------


POLICY = IdentityPolicy.from_settings(Settings(affinity_domain=DOMAIN),
                                      clock=lambda: datetime(2025, 12, 1, tzinfo=timezone.utc))


def test_each_patients_merges_are_followed(engine):
    survivor, subsumed, other = (pid(e).cx for e in ("S1", "M1", "O1"))
    for extension, who in (("S1", "yamada"), ("M1", "sato"), ("O1", "takahashi_new")):
        with db.write_session(engine) as session:
            feed.add(session, japanese(extension, who), POLICY)
    registry = DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True), patients=IdentityDirectory())
    stored = service.stored_query_for(registry)
    charts = {p: register(registry, s.document("doc", s.new_oid(), p), patient=p) for p in (survivor, subsumed, other)}
    before = ask(stored, DOCUMENTS, patients_slot(survivor, other), q.APPROVED_DOCUMENTS)
    assert set(before.ids) == docs(charts, survivor, other)
    with db.write_session(engine) as session:
        feed.merge(session, PatientRecord(ids=[pid("S1")]), pid("M1"), POLICY)
    after = ask(stored, DOCUMENTS, patients_slot(survivor, other), q.APPROVED_DOCUMENTS, return_type="LeafClass")
    assert after.status == "Success" and set(after.ids) == docs(charts, survivor, subsumed, other)
    # A subsumed id stands for nothing any more (ITI TF-2a 3.18.4.1.2.3.9.1): alone it finds
    # nothing, never "every patient" as a query naming none would.
    nothing = ask(stored, DOCUMENTS, patients_slot(subsumed), q.APPROVED_DOCUMENTS)
    assert nothing.status == "Success" and nothing.ids == []


# --- the indexes --------------------------------------------------------------------------------------------


@pytest.fixture
def statements(engine):
    """The SELECT statements FROM document_entry run on `engine` (text, parameters) while the test runs."""
    with plans.statements(engine, "FROM document_entry") as seen:
        yield seen


def plan_of(engine, statement: str, parameters) -> str:
    """The plan of `statement`; on PostgreSQL with sequential scans priced out (the tables are
    too small for any other plan to be chosen otherwise), so that it shows what an index can do."""
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            return "\n".join(row[-1] for row in rows)
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        return "\n".join(row[0] for row in connection.exec_driver_sql("EXPLAIN " + statement, parameters))


def test_a_patient_list_searches_the_patient_index(engine, stored, charts, statements):
    for many in (False, True):  # inline, and bound as one list (past find.INLINE_VALUES)
        statements.clear()
        others = [f"X{i}^^^&1.2.3&ISO" for i in range(40)] if many else []
        ask(stored, DOCUMENTS, patients_slot(s.PATIENT, THIRD, *others), q.APPROVED_DOCUMENTS)
        (statement, parameters), = statements
        plan = plan_of(engine, statement, parameters)
        if engine.dialect.name == "sqlite":
            assert "ix_document_entry_patient (patient_id=? AND status=?" in plan, plan
        else:
            assert "ix_document_entry_patient" in plan and re.search(r"patient_id\)?(::text)? = ANY", plan), plan


def test_without_patients_the_code_index_drives(engine, stored, charts, statements):
    ask(stored, DOCUMENTS, ("$XDSDocumentEntryClassCode", quote_list([s.key(CARDIOLOGY)])), q.APPROVED_DOCUMENTS)
    (statement, parameters), = statements
    plan = plan_of(engine, statement, parameters)
    assert "ix_object_code_code" in plan, plan
    if engine.dialect.name == "sqlite":
        assert "SCAN document_entry" not in plan, plan


# --- who may ask (the setting multi_patient_query_callers) ----------------------------------------------


def mpq_request(*slots, return_type: str = "ObjectRef") -> SoapRequest:
    body = q.request(DOCUMENTS, *slots, return_type=return_type)
    return SoapRequest(action=ITI_51.action, message_id="urn:uuid:51", header=None, body=body)


PORTAL = Caller("10.1.2.3", "CN=portal.example,O=Kagawa")


def test_nobody_may_ask_unless_configured(registry, charts):
    registry_service = service.RegistryService.of(registry)
    result = registry_service.multi_patient_stored_query(mpq_request(patients_slot(s.PATIENT), q.APPROVED_DOCUMENTS),
                                                         PORTAL)
    assert result.failed and [e.code for e in result.errors] == ["XDSRegistryError"]
    assert result.errors[0].context == RULES["query.multi-patient-refused"].error(
        caller="the client at 10.1.2.3 with certificate 'CN=portal.example,O=Kagawa'").context


@pytest.mark.parametrize("listed, allowed", [
    ("10.1.2.3", True),
    ("10.1.2.0/24", True),
    ("10.1.3.0/24", False),
    ("CN=portal.example,O=Kagawa", True),
    ("CN=other.example,O=Kagawa; 192.0.2.0/24", False),
    ("CN=other.example,O=Kagawa\n10.0.0.0/8", True),
])
def test_callers_are_allowed_by_address_or_certificate(registry, charts, listed, allowed):
    registry_service = service.RegistryService.of(registry, Settings(multi_patient_query_callers=listed))
    result = registry_service.multi_patient_stored_query(mpq_request(patients_slot(s.PATIENT), q.APPROVED_DOCUMENTS),
                                                         PORTAL)
    assert result.failed != allowed
    if allowed:
        assert result.content.objects == [charts[s.PATIENT]["doc"]]


def test_an_ipv4_client_on_a_dual_stack_socket_matches_its_ipv4_entry():
    assert AllowedCallers.parse("10.1.2.0/24").allows(Caller("::ffff:10.1.2.3"))
    assert not AllowedCallers.parse("10.1.2.0/24").allows(Caller("::ffff:10.1.3.3"))
    assert not AllowedCallers.parse("").allows(Caller("127.0.0.1"))


def test_a_subject_without_a_verified_certificate_matches_nothing():
    assert not AllowedCallers.parse("CN=portal.example,O=Kagawa").allows(Caller("10.1.2.3"))


@pytest.mark.parametrize("listed", ["portal.example", "10.1.2.300", "10.1.2.0/33"])
def test_a_malformed_entry_stops_the_registry_from_starting(registry, listed):
    with pytest.raises(ValueError, match="multi_patient_query_callers"):
        service.RegistryService.of(registry, Settings(multi_patient_query_callers=listed))


# --- the audit records: one per patient (ITI TF-2b 3.51.5.1) -------------------------------------------


def recorded(registry, request: SoapRequest, caller=PORTAL, listed="10.1.2.3"):
    registry_service = service.RegistryService.of(registry, Settings(multi_patient_query_callers=listed))
    result = registry_service.multi_patient_stored_query(request, caller)
    trail = Recording()
    actors.record(trail, ITI_51, request, caller, result)
    return result, trail.records


def patient_slot_values(ctx: events.TransactionContext) -> list[str]:
    query = etree.fromstring(ctx.query_request)
    return [v.text for slot in query.iter(ns.rim("Slot")) if slot.get("name") == "$XDSDocumentEntryPatientId"
            for v in slot.iter(ns.rim("Value"))]


def test_one_record_per_patient_named_each_naming_its_patient_only(registry, charts):
    request = mpq_request(patients_slot(s.PATIENT, THIRD, "P404^^^&1.2.3&ISO"), q.APPROVED_DOCUMENTS)
    result, records = recorded(registry, request)
    assert not result.failed
    assert [event for event, _ in records] == [("ITI-51", "DocumentRegistry")] * 3
    assert [ctx.patient_id for _, ctx in records] == [s.PATIENT, THIRD, "P404^^^&1.2.3&ISO"]
    for _, ctx in records:
        assert ctx.query_id == DOCUMENTS and ctx.outcome.endswith(":Success")
        assert patient_slot_values(ctx) == [quote_list([ctx.patient_id])]
        # the rest of the query as sent
        assert b"$XDSDocumentEntryStatus" in ctx.query_request and b"ResponseOption" in ctx.query_request


def test_a_refusal_is_recorded_for_each_patient_it_named(registry, charts):
    request = mpq_request(patients_slot(s.PATIENT, THIRD), q.APPROVED_DOCUMENTS)
    result, records = recorded(registry, request, caller=Caller("192.0.2.9"))
    assert result.failed
    assert [(ctx.patient_id, ctx.outcome.rsplit(":", 1)[-1]) for _, ctx in records] == [
        (s.PATIENT, "Failure"), (THIRD, "Failure")]


def test_without_patients_a_leaf_class_answer_is_recorded_for_each_patient_it_holds(registry, charts):
    cardiology = ("$XDSDocumentEntryClassCode", quote_list([s.key(CARDIOLOGY)]))
    _, records = recorded(registry, mpq_request(cardiology, q.APPROVED_DOCUMENTS, return_type="LeafClass"))
    assert sorted(ctx.patient_id for _, ctx in records) == sorted([s.PATIENT, THIRD])
    # An ObjectRef answer holds ids, no patient's metadata: one record, without patient.
    _, records = recorded(registry, mpq_request(cardiology, q.APPROVED_DOCUMENTS))
    assert [ctx.patient_id for _, ctx in records] == [""]


def test_the_records_are_valid_dicom_audit_messages(registry, charts):
    schema = etree.XMLSchema(etree.parse(str(CONFORMANCE / "schemas" / "audit" / "dicom2017c.xsd"), PARSER))
    _, records = recorded(registry, mpq_request(patients_slot(s.PATIENT, THIRD), q.APPROVED_DOCUMENTS))
    for key, ctx in records:
        message = etree.fromstring(events.build(*key, ctx, events.AuditSource("XDS-1")))
        schema.assertValid(message)
        assert message.find("EventIdentification/EventTypeCode").get("csd-code") == "ITI-51"
        (patient,) = message.xpath("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='1']")
        assert patient.get("ParticipantObjectID") == ctx.patient_id
        (query,) = message.xpath("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='24']")
        assert query.get("ParticipantObjectID") == DOCUMENTS
        assert query.find("ParticipantObjectIDTypeCode").get("csd-code") == "ITI-51"
        assert base64.b64decode(query.findtext("ParticipantObjectQuery")) == ctx.query_request


# --- the NIST toolkit's MPQ tests: 12361 loads the data, 12364 queries it -------------------------------

MPQ_TESTS = CONFORMANCE / "iti-51" / "nist"
NIST_PATIENTS = {"15819": "MPQ19^^^&1.3.6.1.4.1.21367.13.20.1000&ISO",
                 "15820": "MPQ20^^^&1.3.6.1.4.1.21367.13.20.1000&ISO"}


@dataclass
class NistStep:
    name: str
    query: Path
    status: str
    object_refs: int | None
    reports: dict[str, str]  # $symbol$ -> the test whose patient it is


def nist_steps() -> list[NistStep]:
    if not MPQ_TESTS.is_dir():
        return []
    found = []
    for plan in sorted((MPQ_TESTS / "12364").glob("*/testplan.xml")):
        step = etree.parse(str(plan), PARSER).getroot().find("TestStep")
        transaction = step.find("MPQTransaction")
        refs = transaction.find("ExpectedContents/ObjectRefs")
        found.append(NistStep(plan.parent.name, plan.parent / transaction.findtext("MetadataFile").strip(),
                              step.findtext("ExpectedStatus").strip(), None if refs is None else int(refs.get("count")),
                              {u.get("useAs"): u.get("test") for u in transaction.iter("UseReport")}))
    return found


@pytest.fixture
def nist_loaded(engine, session_factory):
    """12361's two submissions, as the toolkit parameterizes them: single_doc for the patient of
    15820, multi_doc for the patient of 15819 (each fed first, as 15819 and 15820 do)."""
    with session_factory.begin() as session:
        patients.add(session, list(NIST_PATIENTS.values()))
    registry = DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True))
    new_unique_id = unique_id_sequence(f"1.2.392.200119.6.102.97.{uuid.uuid4().int % 10**9}")
    for section, patient in (("single_doc", NIST_PATIENTS["15820"]), ("multi_doc", NIST_PATIENTS["15819"])):
        template = to_ebrim30(etree.parse(str(MPQ_TESTS / "12361" / section / f"{section}.xml"), PARSER).getroot())
        tree, _ = prepare(template, patient_id=patient, source_id="1.2.392.200119.6.102.11",
                          new_unique_id=new_unique_id, assign_uuids=True)
        assert [p for p in registry.register(tree) if p.is_error] == [], section
    return service.stored_query_for(registry)


@pytest.mark.skipif(not MPQ_TESTS.is_dir(), reason=f"the public conformance data is not at {MPQ_TESTS}")
@pytest.mark.parametrize("step", nist_steps(), ids=lambda step: step.name)
def test_nist_mpq_step(step: NistStep, nist_loaded):
    variables = {symbol: NIST_PATIENTS[test] for symbol, test in step.reports.items()}
    request = substitute(etree.parse(str(step.query), PARSER).getroot(), variables)
    answer = q.read(nist_loaded.query(request, MULTI_PATIENT_STORED_QUERY))
    assert answer.status == step.status, answer.errors
    if step.object_refs is not None:
        assert len(answer.by_kind.get("ObjectRef", [])) == step.object_refs, answer.by_kind


def test_the_nist_mpq_steps_are_all_run():
    assert {step.name for step in nist_steps()} >= {"nothing", "classcode", "eventcode", "hcftc",
                                                     "classcode_eventcode", "eventcode_hcft", "one_pid", "multi_pid"}


# --- over HTTP, with zeep built from the served WSDL -----------------------------------------------------


@pytest.fixture
def mpq_server(database_url, tmp_path):
    env = dict(os.environ, XDS_DATA_DIR=str(tmp_path / "var"), XDS_DATABASE_URL=database_url,
               XDS_MULTI_PATIENT_QUERY_CALLERS="127.0.0.1")
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run([*XDS, "patients", "add", s.PATIENT, s.OTHER_PATIENT], env=env, check=True, capture_output=True)
    process, base = serve(env, tmp_path / "server.log")
    yield base
    process.terminate()
    process.wait(10)


def test_zeep_sends_iti51_and_reads_the_answer(mpq_server):
    zeep = pytest.importorskip("zeep")
    from tests.test_registry_http import soap_register

    for patient in (s.PATIENT, s.OTHER_PATIENT):
        status, response = soap_register(mpq_server, s.submission(patient)[0])
        assert status == 200 and response.body.get("status").endswith(":Success")
    client = zeep.Client(mpq_server + "/registry?wsdl")
    service_ = client.create_service("{urn:ihe:iti:xds-b:2007}DocumentRegistry_Binding_Soap12",
                                     mpq_server + "/registry")
    # zeep builds the request from the WSDL; the answer is read here (zeep's strict parser knows
    # no substitution group, so an rim:ObjectRef in a RegistryObjectList puzzles it).
    with client.settings(raw_response=True):
        response = service_.DocumentRegistry_MultiPatientStoredQuery(
            ResponseOption={"returnType": "ObjectRef", "returnComposedObjects": True},
            AdhocQuery={"id": DOCUMENTS, "Slot": [
                {"name": "$XDSDocumentEntryPatientId",
                 "ValueList": {"Value": [quote_list([s.PATIENT, s.OTHER_PATIENT])]}},
                {"name": "$XDSDocumentEntryStatus", "ValueList": {"Value": [quote_list([q.APPROVED])]}}]})
    reply = parse_response(response.headers["Content-Type"], response.content)
    assert reply.action == "urn:ihe:iti:2009:MultiPatientStoredQueryResponse"
    answer = q.read(reply.body)
    assert answer.status == "Success" and len(answer.by_kind["ObjectRef"]) == 2


def test_iti51_from_a_caller_not_listed_is_refused_over_http(database_url, tmp_path):
    from tests.test_registry_http import post

    env = dict(os.environ, XDS_DATA_DIR=str(tmp_path / "var"), XDS_DATABASE_URL=database_url)
    env.pop("XDS_MULTI_PATIENT_QUERY_CALLERS", None)
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    process, base = serve(env, tmp_path / "server.log")
    try:
        request = q.request(DOCUMENTS, patients_slot(s.PATIENT), q.APPROVED_DOCUMENTS)
        envelope = build_envelope(request, ITI_51.action, to=base + "/registry", message_id="urn:uuid:51")
        status, content_type, body = post(base + "/registry", envelope,
                                          f'application/soap+xml; charset=UTF-8; action="{ITI_51.action}"')
        response = parse_response(content_type, body)
        assert status == 200 and response.action == ITI_51.response_action
        answer = q.read(response.body)
        assert answer.status == "Failure" and answer.codes == ["XDSRegistryError"]
        assert "multi_patient_query_callers" in answer.errors[0].context
    finally:
        process.terminate()
        process.wait(10)


# --- over mutual TLS, audited to the Audit Record Repository ------------------------------------------------


def test_a_listed_certificate_asks_and_each_patient_sees_only_their_own_record(tmp_path):
    from tests.certs import CertificateAuthority

    ca = CertificateAuthority(tmp_path / "pki")
    node, portal, hospital = ca.issue("xds-node"), ca.issue("portal"), ca.issue("hospital-a")
    base = {k: v for k, v in os.environ.items() if not k.startswith("XDS_")}
    arr_env = dict(base, XDS_DATA_DIR=str(tmp_path / "arr"))

    def run(env: dict, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*XDS, *args], env=env, capture_output=True, text=True, timeout=120)

    assert run(arr_env, "db", "upgrade").returncode == 0
    arr = subprocess.Popen([*XDS, "audit-server", "--tcp", "127.0.0.1:0"], env=arr_env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    server = None
    try:
        _, _, address = arr.stdout.readline().split()
        portal_subject = portal.subject
        node_env = dict(base, XDS_DATA_DIR=str(tmp_path / "node"), XDS_AUDIT_DESTINATIONS=f"tcp://{address}",
                        XDS_TLS_CERTIFICATE=str(node.certificate), XDS_TLS_PRIVATE_KEY=str(node.private_key),
                        XDS_TLS_CA_CERTIFICATES=str(ca.certificate), XDS_MULTI_PATIENT_QUERY_CALLERS=portal_subject)
        assert run(node_env, "db", "upgrade").returncode == 0
        assert run(node_env, "patients", "add", s.PATIENT, s.OTHER_PATIENT).returncode == 0
        contexts = {}
        for who in (portal, hospital):
            context = ssl.create_default_context(cafile=str(ca.certificate))
            context.load_cert_chain(who.certificate, who.private_key)
            contexts[who] = context
        server, url = serve(node_env, tmp_path / "node.log", context=contexts[portal], new_session=True)

        def ask_over_tls(who) -> q.Answer:
            request = q.request(DOCUMENTS, patients_slot(s.PATIENT, s.OTHER_PATIENT), q.APPROVED_DOCUMENTS)
            envelope = build_envelope(request, ITI_51.action, to=url + "/registry",
                                      message_id=f"urn:uuid:{uuid.uuid4()}")

            http = urllib.request.Request(url + "/registry", data=envelope, headers={
                "Content-Type": f'application/soap+xml; charset=UTF-8; action="{ITI_51.action}"'})
            with urllib.request.urlopen(http, timeout=30, context=contexts[who]) as response:
                return q.read(parse_response(response.headers["Content-Type"], response.read()).body)

        assert ask_over_tls(portal).status == "Success"
        refused = ask_over_tls(hospital)
        assert refused.codes == ["XDSRegistryError"] and "CN=hospital-a" in refused.errors[0].context

        deadline = time.monotonic() + 30
        while True:  # delivery is asynchronous: wait for the four ITI-51 records
            search = run(arr_env, "audit", "search", "--xml")
            if search.stdout.count('csd-code="ITI-51"') >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        messages = [etree.fromstring(m.encode()) for m in re.findall(r"<AuditMessage>.*?</AuditMessage>",
                                                                    search.stdout, re.S)]
        mpq = [m for m in messages if m.find("EventIdentification/EventTypeCode").get("csd-code") == "ITI-51"]
        seen = sorted((m.xpath("string(ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='1']"
                               "/@ParticipantObjectID)"),
                       m.find("EventIdentification").get("EventOutcomeIndicator"),
                       m.xpath("string(ActiveParticipant[@UserIsRequestor='true']/@UserName)")) for m in mpq)
        assert seen == sorted([(s.PATIENT, "0", portal_subject), (s.OTHER_PATIENT, "0", portal_subject),
                               (s.PATIENT, "8", hospital.subject),
                               (s.OTHER_PATIENT, "8", hospital.subject)]), seen
        for message in mpq:  # each record's query names its own patient, none other
            own = message.xpath("string(ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='1']"
                                "/@ParticipantObjectID)")
            query = base64.b64decode(message.xpath("string(.//ParticipantObjectQuery)")).decode()
            other = s.OTHER_PATIENT if own == s.PATIENT else s.PATIENT
            assert own.split("^")[0] in query and other.split("^")[0] not in query
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(15)
        arr.send_signal(signal.SIGTERM)
        arr.communicate(timeout=30)

