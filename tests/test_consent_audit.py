"""Access control in the audit trail and for review (xds.consent): every denial is in a record of
the transaction's own event with EventOutcomeIndicator 4 (8 when the transaction failed anyway)
and the reason; break-glass is granted, flagged in the record (with the purpose of use) and
kept for `xds consent review`; the patient's access report (`xds audit report --patient`) shows
both; and the client's answer is the same as without any of it.

The whole server in-process (xds.app, called as WSGI), its audit records sent over UDP as to
an Audit Record Repository, stored by the ARR's own store, and the commands run as `xds` runs
them. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from lxml import etree
from sqlalchemy import select

from tests import queries as q
from tests import saml
from tests.test_audit_events import AUDIT, PARSER
from tests.test_consent_notrace import (AUDIENCE, FACILITY_A, REPOSITORY, RS, THEM, US, XDSB, charts, cx, send,
                                        uid)
from tests.test_identity_data import DOMAIN, japanese, pid
from tests.test_xua_http import AuditReceiver
from xds import cli
from xds.app import Server
from xds.arr import repository as arr
from xds.config import Settings
from xds.consent import store
from xds.consent.policy import ConsentPolicy
from xds.hl7v3 import pdq as hl7_pdq, pix as hl7_pix
from xds.hl7v3.ns import INTERACTIONS
from xds.identity import feed
from xds.identity.policy import IdentityPolicy
from xds.model.person import Identifier
from xds.store import db
from xds.store.tables import ConsentBreakGlassRow
from xds.transactions import ITI_18, ITI_41, ITI_43

FACILITY_B = "1.2.392.200119.6.102.77"
EMERGENCY = ("ETREAT", "2.16.840.1.113883.5.8", "HL7 ActReason", "Emergency treatment")
#: P1 consents to facility A, P2 to nobody, P3 to facility B only.
CONSENTS = {"P1": [FACILITY_A], "P2": None, "P3": [FACILITY_B]}
WHO = {"P1": "yamada", "P2": "sato", "P3": "saito_old"}


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    """The DICOM PS3.15 audit message schema."""
    return etree.XMLSchema(etree.parse(str(AUDIT / "dicom2017c.xsd"), PARSER))


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    return saml.IdentityProvider(tmp_path_factory.mktemp("idp"), "audit-idp")


@pytest.fixture
def node(database_url, tmp_path, idp):
    db.upgrade(database_url)
    receiver = AuditReceiver()
    config = tmp_path / "xds.toml"
    config.write_text(f'database_url = "{database_url}"\ndata_dir = "{tmp_path / "var"}"\n'
                      'access_control = "consent"\nconsent_break_glass = true\n')
    server = Server(Settings(data_dir=tmp_path / "var", database_url=database_url, access_control="consent",
                             consent_break_glass=True, affinity_domain=DOMAIN, pix_linking_rules="",
                             repository_unique_id=REPOSITORY, xua_policy="optional",
                             xua_trusted_certificates=str(idp.certificate), xua_audiences=AUDIENCE,
                             audit_destinations=receiver.url))
    unique_ids = {(key, name): f"1.2.392.200119.6.102.9.{i}.{n}" for i, key in enumerate(CONSENTS)
                  for n, name in enumerate(("ss1", "d1", "d2", "f1", "ss2", "d3", "d4"))}
    policy = ConsentPolicy.from_settings(server.settings)
    with db.write_session(server.engine) as session:
        for key, who in WHO.items():
            feed.add(session, japanese(key, who), IdentityPolicy.from_settings(server.settings))
        for key, facilities in CONSENTS.items():
            if facilities:
                store.change(session, cx(key), "grant", policy, at=dt.datetime.now(dt.UTC), recorded_by="desk",
                             reason="", source="test", model="facility", facilities=facilities)
    for key in CONSENTS:
        for request in charts(key, unique_ids):
            assert send(server, "/repository", request, ITI_41.action)[1].body.get("status").endswith(":Success")
    try:
        yield server, receiver, unique_ids, config
    finally:
        server.audit.close()
        server.engine.dispose()
        receiver.socket.close()


def record_of(receiver: AuditReceiver, event: str, patient: str, outcome: str | None = None) -> etree._Element:
    """The record of transaction `event` naming `patient` (with that EventOutcomeIndicator)."""
    def matches(message):
        types = [e.get("csd-code") for e in message.iterfind("EventIdentification/EventTypeCode")]
        patients = [e.get("ParticipantObjectID") for e in message.iterfind("ParticipantObjectIdentification")
                    if e.get("ParticipantObjectTypeCodeRole") == "1"]
        found = message.find("EventIdentification").get("EventOutcomeIndicator")
        return event in types and patient in patients and (outcome is None or found == outcome)
    return receiver.wait_for(matches)


def description(message: etree._Element) -> str:
    return message.findtext("EventIdentification/EventOutcomeDescription") or ""


def test_a_query_for_a_patient_not_consented_is_answered_empty_and_audited_as_denied(node, idp, schema):
    server, receiver, unique_ids, _ = node
    assertion = idp.signed(audience=AUDIENCE)
    for key, shown in (("P1", True), ("P2", False)):
        body = q.request("FindDocuments", ("$XDSDocumentEntryPatientId", q.quote(cx(key))), q.APPROVED_DOCUMENTS)
        answer = q.read(send(server, "/registry", body, ITI_18.action, assertion=assertion)[1].body)
        assert answer.status == "Success" and bool(answer.ids) is shown
    denied = record_of(receiver, "ITI-18", cx("P2"), outcome="4")
    assert description(denied) == "access denied by consent: no consent recorded"
    assert schema.validate(denied), schema.error_log
    allowed = record_of(receiver, "ITI-18", cx("P1"))
    assert allowed.find("EventIdentification").get("EventOutcomeIndicator") == "0" and not description(allowed)


def test_a_get_query_and_a_retrieval_audit_each_patient_left_out(node, idp, schema):
    server, receiver, unique_ids, _ = node
    assertion = idp.signed(audience=AUDIENCE)
    body = q.request("GetDocuments", ("$XDSDocumentEntryEntryUUID", q.quote_list([uid("P1", "d1"), uid("P3", "d1")])))
    answer = q.read(send(server, "/registry", body, ITI_18.action, assertion=assertion)[1].body)
    assert answer.ids == [uid("P1", "d1")]
    denied = record_of(receiver, "ITI-18", cx("P3"), outcome="4")
    assert description(denied) == f"access denied by consent: facility {FACILITY_A} is not among the facilities " \
                                  "consented to"

    retrieve = etree.Element(f"{{{XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": XDSB})
    for key in ("P1", "P2"):
        item = etree.SubElement(retrieve, f"{{{XDSB}}}DocumentRequest")
        etree.SubElement(item, f"{{{XDSB}}}RepositoryUniqueId").text = REPOSITORY
        etree.SubElement(item, f"{{{XDSB}}}DocumentUniqueId").text = unique_ids[key, "d1"]
    message = send(server, "/repository", retrieve, ITI_43.action, assertion=assertion)[1]
    assert message.body.find(f"{{{RS}}}RegistryResponse").get("status").endswith(":PartialSuccess")
    assert [e.get("errorCode") for e in message.body.iter(f"{{{RS}}}RegistryError")] == ["XDSDocumentUniqueIdError"]
    withheld = record_of(receiver, "ITI-43", cx("P2"), outcome="4")
    assert [e.get("ParticipantObjectID") for e in withheld.iterfind("ParticipantObjectIdentification")
            if e.get("ParticipantObjectTypeCodeRole") == "3"] == [unique_ids["P2", "d1"]]
    assert schema.validate(withheld), schema.error_log
    record_of(receiver, "ITI-43", cx("P1"), outcome="4")  # the retrieval as a whole was partly refused


def test_pix_and_pdq_audit_the_persons_left_out(node, idp, schema):
    server, receiver, _, _ = node
    assertion = idp.signed(audience=AUDIENCE)
    query = hl7_pix.pix_query(pid("P3"), sender=THEM, receiver=US)
    answer = hl7_pix.read_pix_query_response(send(server, "/pix", query, INTERACTIONS["PRPA_IN201309UV02"].action,
                                                  assertion=assertion)[1].body)
    assert [d.code for d in answer.acknowledgement.details] == ["204"]  # as for an id nobody fed
    denied = record_of(receiver, "ITI-45", cx("P3"), outcome="8")  # the query failed: AE
    assert description(denied).startswith("access denied by consent: facility")

    search = hl7_pdq.pdq_query(hl7_pdq.PdqQuery(query_id=Identifier("1.2.9", "g"),
                                                living_subject_administrative_gender="M"), sender=THEM, receiver=US)
    found = hl7_pdq.read_pdq_query_response(send(server, "/pdq", search, INTERACTIONS["PRPA_IN201305UV02"].action,
                                                 assertion=assertion)[1].body)
    assert [m.record.ids[0] for m in found.matches] == [pid("P1")] and found.result_total_quantity == 1
    # A search is audited once: its own record counts the matches left out and names none.
    left_out = receiver.wait_for(lambda m: any(e.get("csd-code") == "ITI-47" for e in
                                               m.iterfind("EventIdentification/EventTypeCode")))
    assert left_out.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    assert description(left_out) == "access denied by consent: 2 matches left out"
    assert not [e for e in left_out.iterfind("ParticipantObjectIdentification")
                if e.get("ParticipantObjectTypeCodeRole") == "1"]
    assert schema.validate(left_out), schema.error_log
    # A search for a patient by id asked for that patient: its denial names it.
    by_id = hl7_pdq.pdq_query(hl7_pdq.PdqQuery(query_id=Identifier("1.2.9", "id"), living_subject_ids=[pid("P3")]),
                              sender=THEM, receiver=US)
    found = hl7_pdq.read_pdq_query_response(send(server, "/pdq", by_id, INTERACTIONS["PRPA_IN201305UV02"].action,
                                                 assertion=assertion)[1].body)
    assert found.matches == [] and found.query_response_code == "NF"
    denied = record_of(receiver, "ITI-47", cx("P3"), outcome="4")
    assert description(denied).startswith(f"access denied by consent: facility {FACILITY_A} is not among")
    assert schema.validate(denied), schema.error_log


def test_break_glass_is_granted_flagged_audited_and_listed_for_review(node, idp, schema, capsys):
    server, receiver, _, config = node
    emergency = idp.signed(audience=AUDIENCE, purposes=(EMERGENCY,))
    body = q.request("FindDocuments", ("$XDSDocumentEntryPatientId", q.quote(cx("P3"))), q.APPROVED_DOCUMENTS)
    normal = q.read(send(server, "/registry", body, ITI_18.action, assertion=idp.signed(audience=AUDIENCE))[1].body)
    assert normal.ids == []
    answer = q.read(send(server, "/registry", body, ITI_18.action, assertion=emergency)[1].body)
    assert len(answer.ids) == 3  # d1, d3, d4 (d2 was replaced)

    glass = record_of(receiver, "ITI-18", cx("P3"), outcome="0")
    assert description(glass).startswith("break-glass for purpose of use ETREAT@2.16.840.1.113883.5.8: facility")
    assert [p.get("csd-code") for p in glass.iterfind("EventIdentification/PurposeOfUse")] == ["ETREAT"]
    assert schema.validate(glass), schema.error_log
    with db.make_sessionmaker(server.engine)() as session:
        (row,) = session.scalars(select(ConsentBreakGlassRow)).all()
    assert (row.patient_id, row.transaction, row.facility, row.user_id) == (cx("P3"), "ITI-18", FACILITY_A, saml.USER)
    assert row.purposes == "ETREAT^2.16.840.1.113883.5.8" and row.message_id.startswith("urn:uuid:")

    assert cli.main(["--config", str(config), "consent", "review"]) == 0
    listed = capsys.readouterr().out
    assert cx("P3") in listed and "ITI-18" in listed and "ETREAT" in listed and "1 break-glass access" in listed
    assert cli.main(["--config", str(config), "consent", "review", "--patient", cx("P1")]) == 0
    assert "No break-glass access." in capsys.readouterr().out

    # A patient who withdrew is not shown even in an emergency.
    with db.write_session(server.engine) as session:
        store.change(session, cx("P3"), "withdraw", ConsentPolicy.from_settings(server.settings),
                     at=dt.datetime.now(dt.UTC), recorded_by="patient", reason="", source="test")
    assert q.read(send(server, "/registry", body, ITI_18.action, assertion=emergency)[1].body).ids == []


def test_the_patients_access_report_shows_denials_and_break_glass(node, idp, capsys):
    server, receiver, _, config = node
    for key, assertion in (("P2", idp.signed(audience=AUDIENCE)),
                           ("P3", idp.signed(audience=AUDIENCE, purposes=(EMERGENCY,)))):
        body = q.request("FindDocuments", ("$XDSDocumentEntryPatientId", q.quote(cx(key))), q.APPROVED_DOCUMENTS)
        send(server, "/registry", body, ITI_18.action, assertion=assertion)
    messages = [record_of(receiver, "ITI-18", cx("P2"), "4"), record_of(receiver, "ITI-18", cx("P3"), "0")]
    engine = server.engine  # the Audit Record Repository's tables are in the same database here
    arr.store(engine, [arr.Reception(b"<85>1 - - - - IHE+RFC-3881 - " + etree.tostring(m), "udp", "127.0.0.1")
                       for m in messages])
    assert cli.main(["--config", str(config), "audit", "report", "--patient", cx("P2")]) == 0
    report = capsys.readouterr().out
    assert "1 denied" in report and "DENIED (no consent recorded)" in report
    assert cli.main(["--config", str(config), "audit", "report", "--patient", cx("P3")]) == 0
    report = capsys.readouterr().out
    assert "1 break-glass" in report and "BREAK-GLASS (for purpose of use ETREAT" in report
