"""Audit messages (xds.audit.events) against the DICOM PS3.15 audit schema and the IHE
Connectathon Schematron rules (IHE-WUSTL/Syslog), both read from the shared conformance data.

About the Schematron files, as found (they are not edited; see _schematron):
- none declares a queryBinding, so they are XSLT 1.0 bindings, which lxml's isoschematron runs;
- lxml checks a Schematron file against the ISO Schematron RELAX NG grammar first. The ITI-18
  files fail that check (rule ids such as id="top level elements" are not xs:ID values) and
  ITI-42_110107 has an attribute ``d=`` where ``id=`` was meant. These are only grammar faults of
  ids, not of the rules, so the files are compiled with validate_schema=False;
- the ITI-18 files (mt01 and mt02) hold the assertion
  ``count(ParticipantObjectDetail[@type='QueryEncoding'] and ParticipantObjectDetail[@value!=''])=1``:
  count() of a boolean is an XPath 1.0 type error, so libxslt stops ("Invalid type") on every
  message. The rule is wrong, not the message; the test replaces that one test expression by its
  evident intent, ``count(ParticipantObjectDetail[@type='QueryEncoding' and @value!=''])=1``, in
  memory, and runs the rest as written.
"""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from lxml import etree, isoschematron

from tests.data import CONFORMANCE
from xds.audit import events
from xds.audit.events import (
    AuditSource,
    DocumentRef,
    HumanRequestor,
    TransactionContext,
)

AUDIT = CONFORMANCE / "schemas" / "audit"
SCHEMATRON = AUDIT / "schematron-wustl"
PARSER = etree.XMLParser(no_network=True, resolve_entities=False)

pytestmark = pytest.mark.skipif(not AUDIT.is_dir(), reason=f"conformance data missing: {AUDIT}")

_BROKEN_QUERY_ENCODING = ("count(ParticipantObjectDetail[@type='QueryEncoding'] and "
                          "ParticipantObjectDetail[@value!=''])=1")
_FIXED_QUERY_ENCODING = "count(ParticipantObjectDetail[@type='QueryEncoding' and @value!=''])=1"

SOURCE = AuditSource("XDS-AFFINITY-1", enterprise_site_id="KMIX")
REGISTRY_URL = "https://registry.example.org:8443/xds/registry"
REPOSITORY_URL = "https://repository.example.org:8443/xds/repository"
REPLY_TO = "http://client.example.org/reply"
PATIENT = "6789^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
SUBMISSION_SET = "1.3.6.1.4.1.21367.2005.3.99.1.1010"
QUERY_ID = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"  # FindDocuments
QUERY = (b'<query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0">'
         b'<query:ResponseOption returnType="LeafClass"/></query:AdhocQueryRequest>')
DOCUMENTS = (
    DocumentRef("1.3.6.1.4.1.21367.2005.3.99.1.1011", "1.3.6.1.4.1.21367.2010.1.2.1125",
                "urn:oid:1.3.6.1.4.1.21367.2010.1.2.2045"),
    DocumentRef("1.3.6.1.4.1.21367.2005.3.99.1.1012", "1.3.6.1.4.1.21367.2010.1.2.1125",
                "urn:oid:1.3.6.1.4.1.21367.2010.1.2.2045"),
)
PIX_URL = "https://pix.example.org:8443/pix"
PDQ_URL = "https://pix.example.org:8443/pdq"
HL7_MESSAGE_ID = "1.2.840.114350.1.13.0.1.7.1.1^35423"
HL7_QUERY = b'<queryByParameter xmlns="urn:hl7-org:v3"><queryId root="1.2.3" extension="q1"/></queryByParameter>'
TIME = dt.datetime(2026, 11, 24, 9, 30, 15, 250000, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(AUDIT / "dicom2017c.xsd"), PARSER))


_compiled: dict[str, isoschematron.Schematron] = {}


def _schematron(name: str) -> isoschematron.Schematron:
    """A Connectathon rule file, compiled as found apart from the notes in the module doc."""
    if name not in _compiled:
        tree = etree.parse(str(SCHEMATRON / name), PARSER)
        for assertion in tree.iter("{http://purl.oclc.org/dsdl/schematron}assert"):
            if assertion.get("test") == _BROKEN_QUERY_ENCODING:
                assertion.set("test", _FIXED_QUERY_ENCODING)
        _compiled[name] = isoschematron.Schematron(tree, store_report=True, validate_schema=False)
    return _compiled[name]


def _assert_schematron(name: str, message: etree._Element) -> None:
    rules = _schematron(name)
    valid = rules.validate(etree.ElementTree(message))
    failures = [e.message for e in rules.error_log]
    assert valid, f"{name}: {failures}"


def _context(**values) -> TransactionContext:
    base = {"action": "urn:ihe:iti:2007:RegisterDocumentSet-b", "message_id": "urn:uuid:1234",
                "reply_to": REPLY_TO, "client_address": "192.0.2.10", "endpoint_url": REGISTRY_URL,
                "patient_id": PATIENT, "process_id": "4242", "time": TIME}
    base.update(values)
    return TransactionContext(**base)


def _parse(data: bytes) -> etree._Element:
    """A builder's message (UTF-8 bytes with an XML declaration), parsed."""
    assert isinstance(data, bytes)
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>\n<AuditMessage>")
    return etree.fromstring(data, PARSER)


def _one(message: etree._Element, path: str) -> etree._Element:
    found = message.xpath(path)
    assert len(found) == 1, f"{path}: {len(found)} matches"
    return found[0]


def _participant(message: etree._Element, role: str) -> etree._Element:
    return _one(message, f"ActiveParticipant[RoleIDCode/@csd-code='{role}']")


def _b64(value: str) -> str:
    return base64.b64decode(value).decode("utf-8")


# (transaction, actor): (context, schematron files): every row of EVENTS, with the rule file(s)
# the Connectathon uses for that transaction, EventID and actor. ITI-18 mt01 is the Document
# Consumer's record (3.18.5.1.1), mt02 the Document Registry's (3.18.5.1.2).
CASES = {
    ("ITI-42", "DocumentRegistry"): (
        {"submission_set_unique_id": SUBMISSION_SET},
        ["ITI-42_110107_mt01_DICOM.sch"]),
    ("ITI-18", "DocumentRegistry"): (
        {"action": "urn:ihe:iti:2007:RegistryStoredQuery", "query_id": QUERY_ID,
             "query_request": QUERY},
        ["ITI-18_110112_mt02_DICOM.sch"]),
    ("ITI-41", "DocumentRepository"): (
        {"action": "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b",
             "endpoint_url": REPOSITORY_URL, "submission_set_unique_id": SUBMISSION_SET},
        ["ITI-41_110107_mt01_DICOM.sch"]),
    ("ITI-42", "DocumentRepository"): (
        {"reply_to": None, "client_address": "repository.example.org",
             "submission_set_unique_id": SUBMISSION_SET},
        ["ITI-42_110106_mt01_DICOM.sch"]),
    ("ITI-43", "DocumentRepository"): (
        {"action": "urn:ihe:iti:2007:RetrieveDocumentSet", "endpoint_url": REPOSITORY_URL,
             "patient_id": "", "documents": DOCUMENTS},
        ["ITI-43_110106_mt01_DICOM.sch"]),
    # PIX and PDQ: mt02 is the manager's / supplier's record.
    ("ITI-44", "PatientIdentifierCrossReferenceManager"): (
        {"action": "urn:hl7-org:v3:PRPA_IN201301UV02", "endpoint_url": PIX_URL, "query_id": HL7_MESSAGE_ID},
        ["ITI-44_110110_mt02_DICOM.sch"]),
    # The feed's delete of an id a merge retired (tests/test_identity_audit.py)
    events.ITI_44_DELETE: (
        {"action": "urn:hl7-org:v3:PRPA_IN201304UV02", "endpoint_url": PIX_URL, "query_id": HL7_MESSAGE_ID},
        ["ITI-44_110110_mt02_DICOM.sch"]),
    ("ITI-45", "PatientIdentifierCrossReferenceManager"): (
        {"action": "urn:hl7-org:v3:PRPA_IN201309UV02", "endpoint_url": PIX_URL, "query_id": HL7_MESSAGE_ID,
         "query_request": HL7_QUERY},
        ["ITI-45_110112_mt02_DICOM.sch"]),
    ("ITI-47", "PatientDemographicsSupplier"): (
        {"action": "urn:hl7-org:v3:PRPA_IN201305UV02", "endpoint_url": PDQ_URL, "query_id": HL7_MESSAGE_ID,
         "patient_id": "", "query_request": HL7_QUERY},
        ["ITI-47_110112_mt02_DICOM.sch"]),
    # Remove Metadata and Documents: the Connectathon rules have no file for these; their
    # content is checked in tests/test_registry_remove.py and tests/test_repository_remove.py.
    ("ITI-62", "DocumentRegistry"): (
        {"action": "urn:ihe:iti:2010:DeleteDocumentSet",
         "documents": (DocumentRef("urn:uuid:7d2a4e6e-0dfa-4c4d-8f42-1c2bd7b3e1a0"),)}, []),
    ("ITI-86", "DocumentRepository"): (
        {"action": "urn:ihe:iti:2017:RemoveDocuments", "endpoint_url": REPOSITORY_URL, "documents": DOCUMENTS},
        []),
    # PIXV3 Update Notification, sent by the PIX Manager to a consumer (xds.identity.notify): no
    # Connectathon rule file for ITI-46; the record's content is checked in
    # tests/test_identity_notify.py.
    ("ITI-46", "PatientIdentifierCrossReferenceManager"): (
        {"action": "urn:hl7-org:v3:PRPA_IN201302UV02", "reply_to": None, "client_address": "pix.example.org",
         "endpoint_url": "https://ehr.example.org/pix-consumer", "query_id": HL7_MESSAGE_ID}, []),
    # Multi-Patient Stored Query: no Connectathon rule file for ITI-51; one record per patient,
    # checked in tests/test_query_multipatient.py.
    ("ITI-51", "DocumentRegistry"): (
        {"action": "urn:ihe:iti:2009:MultiPatientStoredQuery",
         "query_id": "urn:uuid:3d1bdb10-39a2-11de-89c2-2f44d94eaa9f", "query_request": QUERY}, []),
    # Update Document Set (Metadata Update): no Connectathon rule file for ITI-57; shaped as the
    # registry's ITI-42 record (patient, SubmissionSet), checked in tests/test_registry_update.py.
    ("ITI-57", "DocumentRegistry"): (
        {"action": "urn:ihe:iti:2010:UpdateDocumentSet", "submission_set_unique_id": SUBMISSION_SET}, []),
}


def _message(key) -> etree._Element:
    values, _ = CASES[key]
    return _parse(events.build(*key, _context(**values), SOURCE))


def test_every_event_of_the_table_is_tested():
    assert set(CASES) == set(events.EVENTS)


@pytest.mark.parametrize("key", list(CASES), ids=lambda k: f"{k[0]}-{k[1]}")
def test_message_is_valid_dicom_audit_xml(schema, key):
    values, _ = CASES[key]
    data = events.build(*key, _context(**values), SOURCE)
    message = _parse(data)
    assert schema.validate(message), schema.error_log
    # written as lxml writes it: serializing the parsed message gives the same bytes
    assert etree.tostring(message, xml_declaration=True, encoding="UTF-8") == data


@pytest.mark.parametrize("key", list(CASES), ids=lambda k: f"{k[0]}-{k[1]}")
def test_message_passes_connectathon_schematron(key):
    message = _message(key)
    spec = events.EVENTS[key]
    for name in CASES[key][1]:
        assert name.startswith(f"{key[0]}_{spec.event_id.code}_")
        _assert_schematron(name, message)


def test_schematron_catches_a_broken_message():
    """The rules really run: a destination without its process id is refused."""
    message = _message(("ITI-42", "DocumentRegistry"))
    del _participant(message, "110152").attrib["AlternativeUserID"]
    rules = _schematron("ITI-42_110107_mt01_DICOM.sch")
    assert not rules.validate(etree.ElementTree(message))
    assert any("AlternativeUserID" in e.message for e in rules.error_log)


@pytest.mark.parametrize("key, event_id, action, type_code", [
    (("ITI-42", "DocumentRegistry"), "110107", "C", "ITI-42"),
    (("ITI-18", "DocumentRegistry"), "110112", "E", "ITI-18"),
    (("ITI-41", "DocumentRepository"), "110107", "C", "ITI-41"),
    (("ITI-42", "DocumentRepository"), "110106", "R", "ITI-42"),
    (("ITI-43", "DocumentRepository"), "110106", "R", "ITI-43"),
    (("ITI-44", "PatientIdentifierCrossReferenceManager"), "110110", "C", "ITI-44"),
    (("ITI-45", "PatientIdentifierCrossReferenceManager"), "110112", "E", "ITI-45"),
    (("ITI-47", "PatientDemographicsSupplier"), "110112", "E", "ITI-47"),
    (("ITI-51", "DocumentRegistry"), "110112", "E", "ITI-51"),
    (("ITI-57", "DocumentRegistry"), "110107", "U", "ITI-57"),
])
def test_event_identification(key, event_id, action, type_code):
    message = _message(key)
    event = _one(message, "EventIdentification")
    assert event.get("EventActionCode") == action
    assert event.get("EventOutcomeIndicator") == "0"
    assert event.get("EventDateTime") == "2026-11-24T09:30:15.250+00:00"
    assert _one(event, "EventID").attrib == {
        "csd-code": event_id, "codeSystemName": "DCM",
        "originalText": events.EVENTS[key].event_id.text}
    assert _one(event, "EventTypeCode").get("csd-code") == type_code
    assert _one(event, "EventTypeCode").get("codeSystemName") == "IHE Transactions"
    source = _one(message, "AuditSourceIdentification")
    assert source.get("AuditSourceID") == "XDS-AFFINITY-1"
    assert source.get("AuditEnterpriseSiteID") == "KMIX"


@pytest.mark.parametrize("outcome, indicator", [
    ("Success", "0"), ("PartialSuccess", "4"), ("Failure", "8"),
    ("urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success", "0"),
    ("urn:ihe:iti:2007:ResponseStatusType:PartialSuccess", "4"),
    ("urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure", "8"),
    (12, "12"),
])
def test_outcome_indicator(schema, outcome, indicator):
    message = _parse(events.build("ITI-42", "DocumentRegistry",
        _context(outcome=outcome, submission_set_unique_id=SUBMISSION_SET), SOURCE))
    assert _one(message, "EventIdentification").get("EventOutcomeIndicator") == indicator
    assert schema.validate(message)


def test_unknown_outcome_is_refused():
    with pytest.raises(ValueError):
        events.outcome_indicator("Maybe")


def test_registry_import_participants():
    message = _message(("ITI-42", "DocumentRegistry"))
    source = _participant(message, "110153")
    assert source.get("UserID") == REPLY_TO
    assert source.get("UserIsRequestor") == "true"
    assert source.get("NetworkAccessPointID") == "192.0.2.10"
    assert source.get("NetworkAccessPointTypeCode") == "2"
    destination = _participant(message, "110152")
    assert destination.get("UserID") == REGISTRY_URL
    assert destination.get("AlternativeUserID") == "4242"
    assert destination.get("UserIsRequestor") == "false"
    assert destination.get("NetworkAccessPointID") == "registry.example.org"
    assert destination.get("NetworkAccessPointTypeCode") == "1"
    patient = _one(message, "ParticipantObjectIdentification[@ParticipantObjectTypeCode='1']")
    assert patient.get("ParticipantObjectID") == PATIENT
    assert patient.get("ParticipantObjectTypeCodeRole") == "1"
    assert _one(patient, "ParticipantObjectIDTypeCode").get("csd-code") == "2"
    submission = _one(message, "ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='20']")
    assert submission.get("ParticipantObjectID") == SUBMISSION_SET
    assert _one(submission, "ParticipantObjectIDTypeCode").get("csd-code") == \
        "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"


def test_anonymous_reply_to():
    message = _parse(events.build("ITI-41", "DocumentRepository",
        _context(reply_to=None, endpoint_url=REPOSITORY_URL,
                 submission_set_unique_id=SUBMISSION_SET), SOURCE))
    assert _participant(message, "110153").get("UserID") == \
        "http://www.w3.org/2005/08/addressing/anonymous"


def test_repository_export_to_registry_carries_its_own_process_id():
    message = _message(("ITI-42", "DocumentRepository"))
    source = _participant(message, "110153")
    assert source.get("AlternativeUserID") == "4242"
    assert source.get("NetworkAccessPointID") == "repository.example.org"
    assert _participant(message, "110152").get("UserID") == REGISTRY_URL
    assert _participant(message, "110152").get("AlternativeUserID") is None


def test_stored_query_object():
    message = _message(("ITI-18", "DocumentRegistry"))
    query = _one(message, "ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='24']")
    assert query.get("ParticipantObjectID") == QUERY_ID
    assert query.get("ParticipantObjectTypeCode") == "2"
    assert _one(query, "ParticipantObjectIDTypeCode").get("csd-code") == "ITI-18"
    assert base64.b64decode(_one(query, "ParticipantObjectQuery").text) == QUERY
    encoding = _one(query, "ParticipantObjectDetail[@type='QueryEncoding']")
    assert _b64(encoding.get("value")) == "UTF-8"
    # the patient of the query, when it has one
    patient = _one(message, "ParticipantObjectIdentification[@ParticipantObjectTypeCode='1']")
    assert patient.get("ParticipantObjectID") == PATIENT


def test_stored_query_without_patient(schema):
    message = _parse(events.build("ITI-18", "DocumentRegistry",
                                  _context(patient_id="", query_id=QUERY_ID, query_request=QUERY), SOURCE))
    assert not message.xpath("ParticipantObjectIdentification[@ParticipantObjectTypeCode='1']")
    assert schema.validate(message)
    _assert_schematron("ITI-18_110112_mt02_DICOM.sch", message)


def test_retrieve_names_each_document():
    message = _message(("ITI-43", "DocumentRepository"))
    # data leaves the repository: it is the Source, the consumer the Destination
    source = _participant(message, "110153")
    assert source.get("UserID") == REPOSITORY_URL
    assert source.get("AlternativeUserID") == "4242"
    assert source.get("UserIsRequestor") == "false"
    destination = _participant(message, "110152")
    assert destination.get("UserID") == REPLY_TO
    assert destination.get("NetworkAccessPointID") == "192.0.2.10"
    documents = message.xpath("ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='3']")
    assert [d.get("ParticipantObjectID") for d in documents] == [d.unique_id for d in DOCUMENTS]
    for element, document in zip(documents, DOCUMENTS):
        assert element.get("ParticipantObjectTypeCode") == "2"
        assert _one(element, "ParticipantObjectIDTypeCode").attrib == {
            "csd-code": "9", "codeSystemName": "RFC-3881", "originalText": "Report Number"}
        details = {d.get("type"): _b64(d.get("value"))
                   for d in element.iter("ParticipantObjectDetail")}
        assert details == {"Repository Unique Id": document.repository_unique_id,
                           "ihe:homeCommunityID": document.home_community_id}


def test_human_requestor(schema):
    person = HumanRequestor("alice@hospital.example", "Alice Doe",
                            (events.CodedValue("HCP", "2.16.756.5.30.1.127.3.10.6",
                                         "Healthcare professional"),))
    message = _parse(events.build("ITI-41", "DocumentRepository",
        _context(endpoint_url=REPOSITORY_URL, submission_set_unique_id=SUBMISSION_SET,
                 human_requestor=person), SOURCE))
    assert schema.validate(message), schema.error_log
    _assert_schematron("ITI-41_110107_mt01_DICOM.sch", message)
    human = _one(message, "ActiveParticipant[@UserID='alice@hospital.example']")
    assert human.get("UserName") == "Alice Doe"
    assert human.get("UserIsRequestor") == "true"
    assert _one(human, "RoleIDCode").get("csd-code") == "HCP"


def test_a_transactions_values_kept_for_later_write_the_same_message():
    """The audit trail spools a transaction's values as JSON (xds.audit.trail) and writes the
    message when it sends it: what it writes then is what build() writes now, whatever a
    client sent (lone surrogates, bytes that are not UTF-8) and whatever the outcome's type."""
    import json

    person = HumanRequestor("alice@hospital.example", "Alice Doe", (events.CodedValue("HCP", "2.16.756", "HCP"),))
    value = HOSTILE + NOT_XML
    for key, ctx in (
        (("ITI-43", "DocumentRepository"), _context(
            documents=DOCUMENTS, human_requestor=person,
            time=dt.datetime(2026, 11, 24, 9, 30, 15, 123456, tzinfo=dt.UTC))),
        (("ITI-18", "DocumentRegistry"), _context(
            query_id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d", query_request="<q>紹介状</q>".encode(),
            outcome="Failure", time=dt.datetime(2026, 11, 24, 18, 30, tzinfo=dt.timezone(dt.timedelta(hours=9))))),
        (("ITI-18", "DocumentRegistry"), _context(
            query_id=f"urn:uuid:{value}", query_request=b"\xff\xfe<q/>\x00" + value.encode("utf-8", "surrogatepass"),
            outcome=events.EventOutcome.MAJOR_FAILURE, reply_to=value, patient_id=value, message_id=None,
            human_requestor=HumanRequestor(value, value, (events.CodedValue(value, value, value),)))),
    ):
        # as the trail keeps them: JSON, its lone surrogates as they were (UTF-8, surrogatepass)
        kept = json.loads(json.dumps((events.context_values(ctx), events.source_values(SOURCE)), ensure_ascii=False)
                          .encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass"))
        again = events.context_from_values(kept[0])
        assert again == ctx and events.source_from_values(kept[1]) == SOURCE
        assert events.build(*key, again, SOURCE) == events.build(*key, ctx, SOURCE)


def test_the_spools_values_name_every_field_of_a_transaction():
    """CONTEXT_FIELDS is the spool's layout: a field added to TransactionContext must be added
    there too, and that is a new layout (xds.audit.trail._LAYOUT) whose old one is still read."""
    import dataclasses

    assert sorted(events.CONTEXT_FIELDS) == sorted(f.name for f in dataclasses.fields(TransactionContext))
    assert len(events.context_values(_context())) == len(events.CONTEXT_FIELDS)


def test_missing_required_values_are_refused():
    with pytest.raises(ValueError, match="patient"):
        events.build("ITI-41", "DocumentRepository",
                     _context(patient_id="", submission_set_unique_id=SUBMISSION_SET), SOURCE)
    with pytest.raises(ValueError, match="submission set"):
        events.build("ITI-42", "DocumentRegistry", _context(), SOURCE)
    with pytest.raises(ValueError, match="document"):
        events.build("ITI-43", "DocumentRepository", _context(), SOURCE)
    with pytest.raises(ValueError, match="stored query id"):
        events.build("ITI-18", "DocumentRegistry", _context(query_request=QUERY), SOURCE)


def test_stored_query_home_community(schema):
    message = _parse(events.build("ITI-18", "DocumentRegistry",
        _context(query_id=QUERY_ID, query_request=QUERY,
                 home_community_id="urn:oid:1.3.6.1.4.1.21367.2010.1.2.2045"), SOURCE))
    assert schema.validate(message), schema.error_log
    _assert_schematron("ITI-18_110112_mt02_DICOM.sch", message)
    detail = _one(message, "ParticipantObjectIdentification/ParticipantObjectDetail"
                           "[@type='urn:ihe:iti:xca:2010:homeCommunityId']")
    assert _b64(detail.get("value")) == "urn:oid:1.3.6.1.4.1.21367.2010.1.2.2045"


# --- node events: no Connectathon Schematron exists for them in the rule set; XSD + values --

@pytest.mark.parametrize("builder, type_code", [
    (events.application_start, "110120"), (events.application_stop, "110121")])
def test_application_activity(schema, builder, type_code):
    message = _parse(builder("xds-registry", SOURCE, process_id="4242", launcher="root",
                             time=TIME, address="192.0.2.1"))
    assert schema.validate(message), schema.error_log
    event = _one(message, "EventIdentification")
    assert event.get("EventActionCode") == "E"
    assert event.get("EventOutcomeIndicator") == "0"
    assert _one(event, "EventID").get("csd-code") == "110100"
    assert _one(event, "EventTypeCode").attrib == {
        "csd-code": type_code, "codeSystemName": "DCM",
        "originalText": "Application Start" if type_code == "110120" else "Application Stop"}
    application = _participant(message, "110150")
    assert application.get("UserID") == "xds-registry"
    assert application.get("AlternativeUserID") == "4242"
    assert application.get("UserIsRequestor") == "false"
    assert _participant(message, "110151").get("UserID") == "root"
    assert not message.xpath("ParticipantObjectIdentification")


def test_application_start_defaults(schema):
    message = _parse(events.application_start("xds-registry", SOURCE))
    assert schema.validate(message), schema.error_log
    assert _participant(message, "110150").get("AlternativeUserID")
    assert not message.xpath("ActiveParticipant[RoleIDCode/@csd-code='110151']")


def test_security_alert_for_rejected_authentication(schema):
    message = _parse(events.security_alert(
        _context(outcome=8, patient_id=""), SOURCE, reason="TLS client certificate not trusted"))
    assert schema.validate(message), schema.error_log
    event = _one(message, "EventIdentification")
    assert _one(event, "EventID").get("csd-code") == "110113"
    assert _one(event, "EventTypeCode").get("csd-code") == "110126"
    assert event.get("EventOutcomeIndicator") == "8"
    peer = _one(message, "ActiveParticipant[@UserIsRequestor='true']")
    assert peer.get("UserID") == "192.0.2.10"
    assert peer.get("NetworkAccessPointID") == "192.0.2.10"
    node = _one(message, "ActiveParticipant[@UserIsRequestor='false']")
    assert node.get("UserID") == REGISTRY_URL
    assert node.get("AlternativeUserID") == "4242"
    resource = _one(message, "ParticipantObjectIdentification")
    assert resource.get("ParticipantObjectID") == REGISTRY_URL
    assert resource.get("ParticipantObjectTypeCodeRole") == "13"
    detail = _one(resource, "ParticipantObjectDetail[@type='Alert Description']")
    assert _b64(detail.get("value")) == "TLS client certificate not trusted"


def test_context_from_soap_request():
    from xds.soap.envelope import SoapMessage

    request = SoapMessage(action="urn:ihe:iti:2007:RegisterDocumentSet-b",
                          message_id="urn:uuid:abcd", header=None, body=etree.Element("x"),
                          environ={"REMOTE_ADDR": "198.51.100.7"}, reply_to=REPLY_TO)
    ctx = events.context_from_request(request, endpoint_url=REGISTRY_URL, outcome="Failure",
                                      patient_id=PATIENT, submission_set_unique_id=SUBMISSION_SET)
    assert (ctx.action, ctx.message_id, ctx.reply_to, ctx.client_address) == (
        "urn:ihe:iti:2007:RegisterDocumentSet-b", "urn:uuid:abcd", REPLY_TO, "198.51.100.7")
    message = _parse(events.build("ITI-42", "DocumentRegistry", ctx, SOURCE))
    assert _one(message, "EventIdentification").get("EventOutcomeIndicator") == "8"
    assert _participant(message, "110153").get("NetworkAccessPointID") == "198.51.100.7"
    _assert_schematron("ITI-42_110107_mt01_DICOM.sch", message)


# --- values from clients: escaped, never ill-formed ------------------------------------------

# Markup characters, quotes, whitespace that attribute-value normalization would turn into
# spaces, non-ASCII, and characters XML 1.0 does not allow at all (C0 controls, a lone
# surrogate, U+FFFE/U+FFFF): a certificate subject, a wsa:ReplyTo or a patient id may hold any.
HOSTILE = "a&b<c>d\"e'f\tg\nh\ri\r\nj]]>k&amp;l&#10;m 紹介状 😀 \x7f\x85\u2028"
NOT_XML = "\x00\x01\x08\x0b\x0c\x1b\x1f\ud800\udfff\ufffe\uffff"


def _replaced(value: str) -> str:
    """What a message holds for `value`: U+FFFD for each character XML 1.0 does not allow."""
    return "".join("\ufffd" if c in NOT_XML else c for c in value)


@pytest.mark.parametrize("not_xml", ["", NOT_XML], ids=["markup", "markup+invalid"])
def test_hostile_values_are_escaped_and_round_trip(schema, not_xml):
    value = HOSTILE + not_xml
    ctx = _context(
        reply_to=f"http://x/{value}", client_address=value, client_certificate=f"CN={value}",
        endpoint_url=f"https://registry.example.org/{value}", server_address=value,
        outcome="Failure", outcome_description=f"refused: {value}", patient_id=f"P{value}",
        query_id=f"urn:uuid:{value}", query_request=value.encode("utf-8", "surrogatepass"),
        query_encoding=value, home_community_id=value, process_id=value,
        human_requestor=HumanRequestor(f"u{value}", f"n{value}",
                                       (events.CodedValue(f"c{value}", f"s{value}", f"t{value}"),)))
    expected = _replaced(value)
    message = _parse(events.build("ITI-18", "DocumentRegistry", ctx, SOURCE))
    assert schema.validate(message), schema.error_log
    event = _one(message, "EventIdentification")
    assert event.get("EventOutcomeIndicator") == "8"
    # carriage returns survive in text too (written as &#13;, which parsing keeps)
    assert _one(event, "EventOutcomeDescription").text == f"refused: {expected}"
    source = _participant(message, "110153")
    assert source.get("UserID") == f"http://x/{expected}"
    assert source.get("UserName") == f"CN={expected}"
    assert source.get("NetworkAccessPointID") == expected
    destination = _participant(message, "110152")
    assert destination.get("UserID") == f"https://registry.example.org/{expected}"
    assert destination.get("AlternativeUserID") == expected
    assert destination.get("NetworkAccessPointID") == expected
    human = message.findall("ActiveParticipant")[2]
    assert (human.get("UserID"), human.get("UserName")) == (f"u{expected}", f"n{expected}")
    assert _one(human, "RoleIDCode").attrib == {
        "csd-code": f"c{expected}", "codeSystemName": f"s{expected}", "originalText": f"t{expected}"}
    patient = _one(message, "ParticipantObjectIdentification[@ParticipantObjectTypeCode='1']")
    assert patient.get("ParticipantObjectID") == f"P{expected}"
    query = _one(message, "ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='24']")
    assert query.get("ParticipantObjectID") == f"urn:uuid:{expected}"
    # base64 values are data, kept as they were (but a lone surrogate, which UTF-8 cannot hold)
    assert base64.b64decode(_one(query, "ParticipantObjectQuery").text) == \
        value.encode("utf-8", "surrogatepass")
    details = {d.get("type"): base64.b64decode(d.get("value")).decode("utf-8")
               for d in query.iter("ParticipantObjectDetail")}
    kept = value.replace("\ud800", "\ufffd").replace("\udfff", "\ufffd")
    assert details == {"QueryEncoding": kept, "urn:ihe:iti:xca:2010:homeCommunityId": kept}


@pytest.mark.parametrize("build", [
    lambda ctx, value: events.build("ITI-42", "DocumentRegistry", ctx, SOURCE),
    lambda ctx, value: events.build("ITI-41", "DocumentRepository", ctx, SOURCE),
    lambda ctx, value: events.build("ITI-42", "DocumentRepository", ctx, SOURCE),
    lambda ctx, value: events.build("ITI-43", "DocumentRepository", ctx, SOURCE),
    lambda ctx, value: events.security_alert(ctx, SOURCE, reason=value),
    lambda ctx, value: events.application_start(value, AuditSource(value, value), launcher=value,
                                                process_id=value, address=value, outcome=8),
    lambda ctx, value: events.application_stop(value, AuditSource(value, value), launcher=value,
                                               process_id=value, address=value, outcome=8),
], ids=["iti42-registry", "iti41", "iti42-repository", "iti43", "security-alert", "start", "stop"])
def test_every_builder_writes_well_formed_xml_whatever_the_values(schema, build):
    value = HOSTILE + NOT_XML
    ctx = _context(reply_to=value, client_address=value, client_certificate=value, endpoint_url=value,
                   outcome=8, outcome_description=value, patient_id=value, submission_set_unique_id=value,
                   documents=[DocumentRef(value, value, value)], process_id=value,
                   human_requestor=HumanRequestor(value, value))
    data = build(ctx, value)
    message = _parse(data)
    assert schema.validate(message), schema.error_log
    expected = _replaced(value)
    values = [v for element in message.iter() for k, v in element.attrib.items()
              if k not in ("csd-code", "codeSystemName", "originalText", "type", "value")
              and (value[:3] in v or expected[:3] in v)]
    assert values and all(expected in v for v in values), values
    # a value cannot forge the outcome the audit trail reads from the bytes
    assert b'EventOutcomeIndicator="0"' not in data


def test_a_value_cannot_forge_the_outcome():
    forged = 'x" EventOutcomeIndicator="0" y="'
    data = events.build("ITI-42", "DocumentRegistry", _context(
        outcome="Failure", submission_set_unique_id=SUBMISSION_SET, reply_to=forged, patient_id=forged), SOURCE)
    assert b'EventOutcomeIndicator="0"' not in data
    message = _parse(data)
    assert _one(message, "EventIdentification").get("EventOutcomeIndicator") == "8"
    assert _participant(message, "110153").get("UserID") == forged


@pytest.mark.parametrize("interaction, action", [("PRPA_IN201301UV02", "C"), ("PRPA_IN201302UV02", "U"),
                                                 ("PRPA_IN201304UV02", "U")])
def test_a_feed_record_says_what_the_feed_did(interaction, action):
    message = _parse(events.build("ITI-44", "PatientIdentifierCrossReferenceManager", _context(
        action=f"urn:hl7-org:v3:{interaction}", query_id=HL7_MESSAGE_ID), SOURCE))
    assert _one(message, "EventIdentification").get("EventActionCode") == action
    patient = _one(message, "ParticipantObjectIdentification[@ParticipantObjectTypeCode='1']")
    assert patient.get("ParticipantObjectID") == PATIENT
    assert _b64(_one(patient, "ParticipantObjectDetail[@type='II']").get("value")) == HL7_MESSAGE_ID


def test_a_pdq_record_carries_the_query_parameters():
    message = _message(("ITI-47", "PatientDemographicsSupplier"))
    query = _one(message, "ParticipantObjectIdentification[@ParticipantObjectTypeCodeRole='24']")
    assert base64.b64decode(query.findtext("ParticipantObjectQuery")) == HL7_QUERY
    assert _one(query, "ParticipantObjectIDTypeCode").get("csd-code") == "ITI-47"
