"""The layout of a transaction's values in the audit spool (xds.audit.trail): an entry kept by
one release is sent by the next, maybe on a newer Python, so every layout a release wrote is
read by the ones after it.

Layout 2 is JSON. Layout 1 was marshal, whose format Python does not promise across versions;
its entries below were written by the last release that wrote layout 1 (Python 3.11, marshal
version 4), byte for byte, and must still come out as the messages they stood for.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import time

from lxml import etree

from xds.audit import events, syslog
from xds.audit.trail import AuditTrail
from xds.config import Settings

# An ITI-43 at the repository, PartialSuccess, with a person and her role; written by
# AuditTrail.record_transaction(events.iti43_repository, ctx) of that release.
LAYOUT_1_ENTRY = (
    b'\x00\x01)\x03\xda\x10iti43_repository{\xda\x06action\xfa$urn:ihe:iti:2007:RetrieveDocumentSet'
    b'\xda\nmessage_id\xfa\rurn:uuid:0f0e\xda\x08reply_toN\xda\x0eclient_address\xfa\n192.0.2.10'
    b'\xda\x0cendpoint_url\xfa2https://repository.example.org:8443/xds/repository\xda\x0eserver_add'
    b'ress\xda\x00\xda\x07outcome\xda\x0ePartialSuccess\xda\x13outcome_descriptionr\x0b\x00\x00\x00'
    b'\xda\npatient_id\xfa%6789^^^&1.2.392.200119.6.102.1000&ISO\xda\x18submission_set_unique_idr'
    b'\x0b\x00\x00\x00\xda\x08query_idr\x0b\x00\x00\x00\xda\rquery_request\xf3\x00\x00\x00\x00\xda'
    b'\x0equery_encoding\xfa\x05UTF-8\xda\x11home_community_idr\x0b\x00\x00\x00\xda\x12client_certi'
    b'ficater\x0b\x00\x00\x00\xda\nprocess_id\xda\x044242\xda\tdocuments[\x01\x00\x00\x00)\x03\xfa'
    b'\x0b1.2.392.9.1\xfa\t1.2.392.9\xfa!urn:oid:1.2.392.200119.6.102.1000\xda\x0fhuman_requestor)'
    b'\x03\xfa\x18yamada@kagawa-hp.example\xf5\r\x00\x00\x00\xe5\xb1\xb1\xe7\x94\xb0 \xe5\xa4\xaa'
    b'\xe9\x83\x8e[\x01\x00\x00\x00)\x03\xda\x03HCP\xfa\x082.16.756r"\x00\x00\x00\xda\x04time)\x02l'
    b'\x04\x00\x00\x00P(>7\t\x043\x00l\x03\x00\x00\x00\x00Da\x16\x1e\x000)\x03\xfa\x0cXDS-OLD-NODE'
    b'\xda\x04KMIX)\x03\xda\x014\xda\x03DCM\xfa4Application Server Process Tier in Multi-tier Syste'
    b'm')
# An ITI-18 at the registry, Failure, its AdhocQueryRequest bytes in UTF-8 (kept as bytes in
# layout 1, base64 in layout 2); record_transaction(events.iti18_registry, ctx).
LAYOUT_1_QUERY = (
    b'\x00\x01)\x03\xda\x0eiti18_registry{\xda\x06action\xfa$urn:ihe:iti:2007:RegistryStoredQuery'
    b'\xda\nmessage_id\xfa\rurn:uuid:0f0f\xda\x08reply_to\xfa\x1bhttp://client.example/reply\xda'
    b'\x0eclient_address\xfa\n192.0.2.11\xda\x0cendpoint_url\xfa)https://registry.example.org/xds/r'
    b'egistry\xda\x0eserver_address\xda\x00\xda\x07outcome\xda\x07Failure\xda\x13outcome_descriptio'
    b'nr\x0c\x00\x00\x00\xda\npatient_id\xfa%6789^^^&1.2.392.200119.6.102.1000&ISO\xda\x18submissio'
    b'n_set_unique_idr\x0c\x00\x00\x00\xda\x08query_id\xfa-urn:uuid:14d4debf-8f97-4251-9a74-a90016b'
    b'0af0d\xda\rquery_request\xf3\x10\x00\x00\x00<q>\xe7\xb4\xb9\xe4\xbb\x8b\xe7\x8a\xb6</q>\xda'
    b'\x0equery_encoding\xfa\x05UTF-8\xda\x11home_community_idr\x0c\x00\x00\x00\xda\x12client_certi'
    b'ficater\x0c\x00\x00\x00\xda\nprocess_id\xda\x044243\xda\tdocuments[\x00\x00\x00\x00\xda\x0fhu'
    b'man_requestorN\xda\x04time)\x02l\x04\x00\x00\x00\x00}\x93<\t\x043\x00\xe9\x00\x00\x00\x000)'
    b'\x03\xfa\x0cXDS-OLD-NODEr\x0c\x00\x00\x00)\x03\xda\x014\xda\x03DCM\xfa4Application Server Pro'
    b'cess Tier in Multi-tier System')


def _trail(tmp_path, receiver: socket.socket, **settings) -> AuditTrail:
    return AuditTrail.from_settings(Settings(
        data_dir=tmp_path, audit_destinations=f"udp://127.0.0.1:{receiver.getsockname()[1]}", **settings))


def _receiver() -> socket.socket:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    return receiver


def _sent(trail: AuditTrail, receiver: socket.socket, count: int) -> list[syslog.SyslogMessage]:
    """What the trail's sender sends of the spool: `count` syslog messages."""
    trail.start()
    assert trail.flush(10)
    found = []
    deadline = time.monotonic() + 10
    while len(found) < count:
        receiver.settimeout(max(0.01, deadline - time.monotonic()))
        found.append(syslog.parse(receiver.recv(65536)))
    trail.close()
    return found


def _object_ids(record: etree._Element, role: str) -> list[str]:
    return [o.get("ParticipantObjectID") for o in record.iter("ParticipantObjectIdentification")
            if o.get("ParticipantObjectTypeCodeRole") == role]


def test_entries_of_layout_1_are_still_delivered(tmp_path):
    """Entries an older release left in the spool (layout 1: marshal) are sent as the messages
    they stood for. marshal's format may change in a later Python (it is promised only within
    one version): then marshal.loads fails on these bytes, and this test says so; such a
    Python needs a reader of marshal version 4 of our own, or the spools drained before the
    upgrade."""
    receiver = _receiver()
    trail = _trail(tmp_path, receiver)
    trail.spool.append(LAYOUT_1_ENTRY)
    trail.spool.append(LAYOUT_1_QUERY)
    retrieve, query = _sent(trail, receiver, 2)

    assert (retrieve.procid, retrieve.severity) == ("4242", syslog.SEVERITY_WARNING)
    assert retrieve.timestamp == dt.datetime(2026, 11, 24, 9, 30, 15, 250000, tzinfo=dt.UTC)
    record = etree.fromstring(retrieve.msg)
    event = record.find("EventIdentification")
    assert (event.find("EventID").get("csd-code"), event.find("EventTypeCode").get("csd-code"),
            event.get("EventActionCode")) == ("110106", "ITI-43", "R")
    assert event.get("EventOutcomeIndicator") == "4"  # PartialSuccess
    assert event.get("EventDateTime") == "2026-11-24T18:30:15.250+09:00"  # its UTC offset kept
    assert _object_ids(record, "1") == ["6789^^^&1.2.392.200119.6.102.1000&ISO"]  # the patient
    assert _object_ids(record, "3") == ["1.2.392.9.1"]  # the document
    repository = record.find("ActiveParticipant[@UserIsRequestor='false']")
    assert (repository.get("UserID"), repository.get("AlternativeUserID")) == (
        "https://repository.example.org:8443/xds/repository", "4242")
    consumer = record.find("ActiveParticipant[@NetworkAccessPointID='192.0.2.10']")
    assert consumer.get("UserID") == events.WSA_ANONYMOUS
    person = record.find("ActiveParticipant[@UserID='yamada@kagawa-hp.example']")
    assert person.get("UserName") == "山田 太郎" and person.find("RoleIDCode").get("csd-code") == "HCP"
    source = record.find("AuditSourceIdentification")  # the source the old release kept
    assert (source.get("AuditSourceID"), source.get("AuditEnterpriseSiteID")) == ("XDS-OLD-NODE", "KMIX")

    assert (query.procid, query.severity) == ("4243", syslog.SEVERITY_WARNING)
    record = etree.fromstring(query.msg)
    event = record.find("EventIdentification")
    assert (event.find("EventID").get("csd-code"), event.find("EventTypeCode").get("csd-code")) == (
        "110112", "ITI-18")
    assert event.get("EventOutcomeIndicator") == "8"  # Failure
    assert _object_ids(record, "1") == ["6789^^^&1.2.392.200119.6.102.1000&ISO"]
    assert _object_ids(record, "24") == ["urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"]
    asked = record.find("ParticipantObjectIdentification/ParticipantObjectQuery").text
    assert asked == "PHE+57S55LuL54q2PC9xPg=="  # base64 of the bytes it kept: <q>紹介状</q>


def test_a_transaction_is_kept_as_json_and_sent_as_build_writes_it(tmp_path):
    """Layout 2: the EVENTS key, the values and the source, as JSON. The message sent is the
    one events.build writes for the same values, whatever a client sent (lone surrogates,
    bytes that are not UTF-8) and whatever the outcome's type: an EventOutcome (an IntEnum,
    which marshal refused, losing the record) is kept as its number."""
    receiver = _receiver()
    trail = _trail(tmp_path, receiver, audit_source_id="XDS-NODE")
    odd = "紹介状 \ud800\udfff \udc00 <&\">"
    ctx = events.TransactionContext(
        action="urn:ihe:iti:2007:RegistryStoredQuery", message_id=None, reply_to=f"http://x/{odd}",
        client_address="192.0.2.12", endpoint_url="https://registry.example.org/xds/registry",
        outcome=events.EventOutcome.MAJOR_FAILURE, outcome_description=odd, patient_id=f"P{odd}",
        query_id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d", query_request=b"\xff\xfe<q/>\x00",
        human_requestor=events.HumanRequestor(odd, odd, (events.CodedValue(odd, odd, odd),)),
        process_id="77", time=dt.datetime(2026, 11, 24, 18, 30, 0, 123456, tzinfo=dt.timezone(dt.timedelta(hours=9))))
    trail.record_transaction(("ITI-18", "DocumentRegistry"), ctx)

    (entry,) = trail.spool.unsent(trail.destinations[0])
    assert entry[:2] == b"\x00\x02"
    key, values, source = json.loads(entry[2:].decode("utf-8", "surrogatepass"))
    assert key == ["ITI-18", "DocumentRegistry"] and source[0] == "XDS-NODE"
    assert len(values) == len(events.CONTEXT_FIELDS)

    (sent,) = _sent(trail, receiver, 1)
    assert sent.msg == events.build("ITI-18", "DocumentRegistry", ctx, trail.source)
    assert (sent.procid, sent.severity) == ("77", syslog.SEVERITY_WARNING)
    assert etree.fromstring(sent.msg).find("EventIdentification").get("EventOutcomeIndicator") == "12"
