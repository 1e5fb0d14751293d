"""The PIX Manager's audit records of what changes its patients (ITI TF-2b 3.44.5.1.2): a merge
(PRPA_IN201304UV02) is recorded as an update of the survivor and a delete of each subsumed id,
one patient a record; the administrator's changes from the command line (`xds patients add /
link / unlink / dismiss / remove`) as the same change arriving by ITI-44 would be, with the
local user as the human requestor. Each record is checked against the DICOM audit schema and
the Connectathon Schematron (ITI-44_110110_mt02), as tests/test_audit_events.py does."""

from __future__ import annotations

import base64
import getpass
import os

import pytest
from lxml import etree

from tests.test_audit_actors import Recording
from tests.test_audit_events import PARSER, _assert_schematron, schema  # noqa: F401 (fixture)
from tests.test_identity_data import HOSPITAL_A, HOSPITAL_B, japanese, pid
from tests.test_identity_feed import POLICY, write
from xds import config
from xds.audit import actors, events
from xds.audit.trail import AuditTrail, _transaction
from xds.hl7v3 import feed as hl7_feed
from xds.hl7v3.ns import INTERACTIONS
from xds.identity import feed
from xds.identity.service import IdentityService
from xds.security.caller import Caller
from xds.soap.envelope import build_envelope, parse_envelope
from xds.transactions import BY_ACTION

US, THEM = "1.2.392.200119.6.102.1", "1.2.392.200119.6.102.99"
PIX_URL = "https://pix.example.org/pix"
SOURCE = events.AuditSource("PIX-1")
MT02 = "ITI-44_110110_mt02_DICOM.sch"


def _fed_over_soap(service: IdentityService, message: etree._Element) -> list[tuple[tuple[str, str], events.TransactionContext]]:
    """`message` answered by the service as it is served (xds.dispatch), and the records the
    audit trail is given for it."""
    action = INTERACTIONS[etree.QName(message).localname].action
    request = parse_envelope(build_envelope(message, action, to=PIX_URL),
                             environ={"wsgi.url_scheme": "https", "HTTP_HOST": "pix.example.org",
                                      "PATH_INFO": "/pix", "REMOTE_ADDR": "192.0.2.7"})
    caller = Caller("192.0.2.7")
    result = service.patient_identity_feed(request, caller)
    trail = Recording()
    actors.record(trail, BY_ACTION[action], request, caller, result)
    return trail.records


def _checked(schema, key, ctx) -> etree._Element:  # noqa: F811 (the fixture)
    message = etree.fromstring(events.build(*key, ctx, SOURCE), PARSER)
    assert schema.validate(message), schema.error_log
    _assert_schematron(MT02, message)
    return message


def _patient(message: etree._Element) -> etree._Element:
    (patient,) = message.xpath("ParticipantObjectIdentification[@ParticipantObjectTypeCode='1']")
    return patient


def test_a_merge_records_an_update_of_the_survivor_and_a_delete_of_each_subsumed_id(engine, schema):  # noqa: F811
    survivor, first, second = pid("S1"), pid("R1"), pid("R2")
    for extension, who in (("S1", "yamada"), ("R1", "sato"), ("R2", "saito_old")):
        write(engine, feed.add, japanese(extension, who), POLICY)
    service = IdentityService(engine, POLICY)
    merge = hl7_feed.duplicates_resolved(japanese("S1"), [first, second], sender=THEM, receiver=US,
                                         message_id="1.2.3.4.5")
    records = _fed_over_soap(service, merge)

    assert [(key, ctx.patient_id) for key, ctx in records] == [
        (("ITI-44", "PatientIdentifierCrossReferenceManager"), survivor.cx),
        (events.ITI_44_DELETE, first.cx), (events.ITI_44_DELETE, second.cx)]
    update, *deletes = [_checked(schema, key, ctx) for key, ctx in records]
    assert update.find("EventIdentification").get("EventActionCode") == "U"
    assert _patient(update).get("ParticipantObjectDataLifeCycle") is None
    for message, subsumed in zip(deletes, (first, second)):
        event = message.find("EventIdentification")
        assert (event.get("EventActionCode"), event.get("EventOutcomeIndicator")) == ("D", "0")
        assert (event.find("EventID").get("csd-code"), event.find("EventTypeCode").get("csd-code")) == (
            "110110", "ITI-44")
        patient = _patient(message)
        # logically deleted: the id is retired, its record and history are kept
        assert (patient.get("ParticipantObjectID"), patient.get("ParticipantObjectDataLifeCycle")) == (
            subsumed.cx, "14")
        detail = patient.find("ParticipantObjectDetail[@type='II']")
        assert base64.b64decode(detail.get("value")).decode() == "1.2.3.4.5"  # the merge message's id

    # The same merge sent again retires nothing more: the survivor's record alone.
    again = _fed_over_soap(service, hl7_feed.duplicates_resolved(japanese("S1"), [first], sender=THEM,
                                                                 receiver=US))
    assert [key for key, _ in again] == [("ITI-44", "PatientIdentifierCrossReferenceManager")]


def test_a_refused_merge_records_no_delete(engine):
    write(engine, feed.add, japanese("S1"), POLICY)
    records = _fed_over_soap(IdentityService(engine, POLICY), hl7_feed.duplicates_resolved(
        japanese("S1"), [pid("NEVER")], sender=THEM, receiver=US))
    assert [(key, ctx.outcome) for key, ctx in records] == [
        (("ITI-44", "PatientIdentifierCrossReferenceManager"), "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure")]


# --- the administrator's changes, from the command line -----------------------------------------

AUDIT_DESTINATION = "udp://127.0.0.1:9"  # nothing is sent: the command only spools its records


@pytest.fixture
def xds_environment():
    from tests.test_identity_data import DOMAIN

    return {"XDS_AFFINITY_DOMAIN": DOMAIN, "XDS_AUDIT_DESTINATIONS": AUDIT_DESTINATION}


def spooled(tmp_path) -> list[tuple[tuple[str, str], events.TransactionContext]]:
    """The records the commands left in the audit spool (the data folder of the `xds` fixture),
    in order, as the trail's sender reads them."""
    settings = config.load(env={"XDS_DATA_DIR": str(tmp_path / "var"), "XDS_AUDIT_DESTINATIONS": AUDIT_DESTINATION})
    trail = AuditTrail.from_settings(settings)
    try:
        entries = trail.spool.unsent(AUDIT_DESTINATION)
    finally:
        trail.close()
    return [(tuple(key), events.context_from_values(values)) for key, values, _ in map(_transaction, entries)]


def test_each_change_from_the_command_line_is_audited_as_iti_44_with_the_local_user(xds, tmp_path, schema):  # noqa: F811
    from tests.test_identity_data import DOMAIN

    d1, a1, b1 = pid("D1"), pid("A1", HOSPITAL_A), pid("B1", HOSPITAL_B)
    assert xds("patients", "add", d1.cx, "--family", "山田", "--given", "太郎", "--birth", "19710101",
               "--gender", "M").code == 0
    assert xds("patients", "add", a1.cx, "--family", "佐藤", "--given", "花子", "--birth", "19710101",
               "--gender", "M").code == 0
    assert xds("patients", "add", d1.cx).code == 0  # known, unchanged: nothing to record
    assert xds("patients", "add", b1.cx, "--family", "山田", "--given", "太郎", "--birth", "19710101",
               "--gender", "F").code == 0  # a candidate of D1 (another gender)
    assert xds("patients", "link", a1.cx, d1.cx).code == 0
    assert xds("patients", "unlink", a1.cx).code == 0
    assert xds("patients", "dismiss", b1.cx, d1.cx).code == 0
    assert xds("patients", "remove", d1.cx).code == 0
    assert xds("patients", "link", pid("NEVER").cx, d1.cx).code == 1  # refused: recorded as failed

    records = spooled(tmp_path)
    feed_key = ("ITI-44", "PatientIdentifierCrossReferenceManager")
    assert [(key == events.ITI_44_DELETE, ctx.reply_to, ctx.patient_id) for key, ctx in records] == [
        (False, "xds patients add", d1.cx), (False, "xds patients add", a1.cx), (False, "xds patients add", b1.cx),
        (False, "xds patients link", a1.cx), (False, "xds patients unlink", a1.cx),
        (False, "xds patients dismiss", b1.cx), (False, "xds patients dismiss", d1.cx),
        (True, "xds patients remove", d1.cx),
        (False, "xds patients link", pid("NEVER").cx), (False, "xds patients link", d1.cx)]
    try:
        user = getpass.getuser()
    except Exception:  # no user name for this uid: the command names the uid
        user = str(os.getuid())
    actions, outcomes = [], []
    for key, ctx in records:
        message = _checked(schema, key, ctx)  # the DICOM schema and the Connectathon rules
        event = message.find("EventIdentification")
        actions.append(event.get("EventActionCode"))
        outcomes.append(event.get("EventOutcomeIndicator"))
        (person,) = message.xpath("ActiveParticipant[not(RoleIDCode)]")
        assert (person.get("UserID"), person.get("UserIsRequestor")) == (user, "true")
        (source,) = message.xpath("ActiveParticipant[RoleIDCode/@csd-code='110153']")
        assert source.get("UserID") == ctx.reply_to and source.get("NetworkAccessPointID")
        (destination,) = message.xpath("ActiveParticipant[RoleIDCode/@csd-code='110152']")
        assert destination.get("AlternativeUserID") == ctx.process_id
        assert "password" not in destination.get("UserID")
    assert actions == ["C", "C", "C", "U", "U", "U", "U", "D", "U", "U"]
    assert outcomes == ["0"] * 8 + ["8", "8"]
    assert key == feed_key and "NEVER" in records[-2][1].outcome_description
    # one command, one id for its records (where a feed's message id stands)
    assert records[5][1].query_id == records[6][1].query_id != records[4][1].query_id
    assert DOMAIN in records[0][1].patient_id


def test_without_an_affinity_domain_the_registry_list_changes_are_audited(xds, tmp_path, monkeypatch, schema):  # noqa: F811
    monkeypatch.delenv("XDS_AFFINITY_DOMAIN")
    first, second = "P1^^^&1.2.3.4&ISO", "P2^^^&1.2.3.4&ISO"
    assert xds("patients", "add", first).code == 0
    assert xds("patients", "add", first, second).code == 0  # the first is known: only the second
    assert xds("patients", "remove", first, "P9^^^&1.2.3.4&ISO").code == 0  # P9 was never there
    records = spooled(tmp_path)
    assert [(key == events.ITI_44_DELETE, ctx.patient_id) for key, ctx in records] == [
        (False, first), (False, second), (True, first)]
    for key, ctx in records:
        _checked(schema, key, ctx)
