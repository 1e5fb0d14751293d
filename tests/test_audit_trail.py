"""The audit trail: the durable spool (bounded, one cursor per destination, kept across
restarts), and every transaction of a running `xds serve` recorded and delivered, each record
valid against the DICOM schema and its transaction's Connectathon Schematron.

The records are received here on a UDP socket (RFC 5426): the server's own sender, over the
loopback network. tests/test_audit_rsyslog.py has rsyslog as the peer, over TLS."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from lxml import etree

from tests import submissions as s
from tests.queries import APPROVED_DOCUMENTS, quote, request as query_request
from tests.test_audit_events import AUDIT, _assert_schematron, schema  # noqa: F401 (fixture)
from tests.test_query_http import soap_query
from tests.test_repository_support import (
    pnr_request,
    soap_pnr,
    soap_retrieve,
    start_server,
    status_of,
    stop_server,
)
from xds.audit import events, syslog
from xds.audit.spool import AuditSpool
from xds.audit.trail import NO_AUDIT, AuditTrail
from xds.config import Settings

HOME = "urn:oid:1.2.392.200119.6.102.1000"
pytestmark = pytest.mark.skipif(not AUDIT.is_dir(), reason=f"conformance data missing: {AUDIT}")


# -- the spool --------------------------------------------------------------------------------


def _deliver(spool: AuditSpool, destination: str, count: int | None = None) -> list[bytes]:
    """What a sender does: read the records after `destination`'s cursor, say they went."""
    cursor = spool.cursor(destination)
    records = cursor.read(limit=1000)
    cursor.advance(len(records) if count is None else count)
    cursor.close()
    return records


def test_spool_keeps_records_until_every_destination_has_them(tmp_path):
    a, b = "tls://a:6514", "udp://b:514"
    spool = AuditSpool(tmp_path / "spool", [a, b], max_bytes=10_000)
    for n in range(5):
        assert spool.append(b"record %d" % n)
    assert _deliver(spool, a) == [b"record %d" % n for n in range(5)]
    assert spool.unsent(a) == [] and len(spool.unsent(b)) == 5  # b has none of them yet
    assert _deliver(spool, b, count=3) == [b"record %d" % n for n in range(5)]
    assert spool.unsent(b) == [b"record 3", b"record 4"]
    assert spool.waiting() == 2 * (len(b"record 3") + 16)  # message and frame

    again = AuditSpool(tmp_path / "spool", [a, b], max_bytes=10_000)  # a restart: nothing forgotten
    assert again.unsent(b) == [b"record 3", b"record 4"] and again.unsent(a) == []
    assert again.append(b"record 5") and again.unsent(a) == [b"record 5"]


def test_delivered_segments_are_deleted_once_sealed(tmp_path):
    a = "udp://a:514"
    spool = AuditSpool(tmp_path / "spool", [a], max_bytes=40_000)  # segments of 5,000 bytes
    for n in range(12):
        assert spool.append(b"%04d" % n + b"." * 996)
    assert len(spool.segments()) == 3  # the first two full, and the one being written
    assert [m[:4] for m in _deliver(spool, a)] == [b"%04d" % n for n in range(12)]
    assert len(spool.segments()) == 1  # the sealed ones are gone; this process still writes the last
    spool.close()
    _deliver(spool, a)
    assert spool.segments() == [] and spool.waiting() == 0


def test_records_of_several_writers_are_delivered_in_the_order_written(tmp_path):
    a = "tcp://a:601"
    first = AuditSpool(tmp_path / "spool", [a], max_bytes=10_000)
    second = AuditSpool(tmp_path / "spool", [a], max_bytes=10_000)  # another worker: its own segment
    for n in range(6):
        assert (first if n % 2 else second).append(b"record %d" % n)
    assert len(first.segments()) == 2
    assert _deliver(first, a) == [b"record %d" % n for n in range(6)]


def test_a_record_lost_in_a_crash_is_skipped(tmp_path, caplog):
    a = "tcp://a:601"
    spool = AuditSpool(tmp_path / "spool", [a], max_bytes=10_000)
    assert spool.append(b"whole")
    spool.close()
    (segment,) = spool.segments()
    with open(tmp_path / "spool" / segment, "r+b") as crashed:  # the end mark reached the disk,
        end = int.from_bytes(crashed.read(8), "big")            # the next record's bytes did not
        crashed.seek(0)
        crashed.write((end + 40).to_bytes(8, "big"))
    assert _deliver(spool, a) == [b"whole"]
    assert _deliver(spool, a) == [] and "not a whole record" in caplog.text
    assert spool.waiting() == 0 and spool.segments() == []


def test_a_cursor_torn_by_a_crash_falls_back_one_batch(tmp_path):
    a = "tcp://a:601"
    spool = AuditSpool(tmp_path / "spool", [a], max_bytes=10_000)
    for n in range(4):
        spool.append(b"record %d" % n)
    _deliver(spool, a, count=1)
    _deliver(spool, a, count=1)  # the cursor's newest slot: after record 1
    (cursor_file,) = (tmp_path / "spool").glob("cursor-*")
    with open(cursor_file, "r+b") as torn:  # the newest slot half written when the power went
        torn.seek(0)
        torn.write(b"\xff" * 20)
    assert spool.unsent(a) == [b"record 1", b"record 2", b"record 3"]  # record 1 goes again


def test_a_full_spool_refuses_and_lets_one_alert_in(tmp_path):
    destination = "udp://a:514"
    spool = AuditSpool(tmp_path / "spool", [destination], max_bytes=100)
    assert spool.append(b"x" * 60)
    assert not spool.append(b"y" * 60)
    assert not spool.append(b"z" * 60)
    assert spool.state()["refused"] == 2
    assert spool.append_alert(b"alert") and not spool.append_alert(b"alert again")
    assert spool.unsent(destination) == [b"x" * 60, b"alert"]
    _deliver(spool, destination)
    assert spool.state()["full"] == 0 and spool.append(b"y" * 60)  # the episode is over


def _files(directory: Path) -> dict[str, tuple]:
    """Each file of `directory`: its size, its time of change and its bytes."""
    return {path.name: (path.stat().st_size, path.stat().st_mtime_ns, path.read_bytes())
            for path in sorted(directory.iterdir())}


def test_looking_at_the_spool_changes_nothing(tmp_path):
    """state() and waiting() are what GET /health calls: they only read, even when the records
    waiting have fallen to half the bound and the full episode is over. The episode ends where
    the waiting records are measured anyway: by a writer, or by the sender after a batch."""
    destination = "udp://a:514"
    spool = AuditSpool(tmp_path / "spool", [destination], max_bytes=100)
    _deliver(spool, destination)  # a cursor file, as a sender leaves one
    assert spool.append_alert(b"alert")  # an episode's alert; 21 bytes wait, under half the bound
    before = _files(tmp_path / "spool")
    assert "full" in before
    for _ in range(3):
        assert spool.state() == {"bytes": 21, "refused": 0, "full": 1}
        assert spool.waiting() == 21
    assert _files(tmp_path / "spool") == before

    assert spool.append(b"record")  # the writer measures (the first time, then every RESCAN s)
    assert spool.state()["full"] == 0

    assert spool.append_alert(b"alert")  # another episode
    assert spool.state()["full"] == 1
    _deliver(spool, destination)  # the sender, after a batch (Cursor.advance -> purge)
    assert spool.state()["full"] == 0


def test_a_new_destination_gets_what_waits(tmp_path):
    spool = AuditSpool(tmp_path / "spool", ["udp://a:1", "udp://b:2"], max_bytes=10_000)
    spool.append(b"one")
    _deliver(spool, "udp://a:1")
    assert spool.waiting() > 0  # b has not started: the record stays
    assert spool.unsent("udp://b:2") == [b"one"]


def test_audit_off_without_destinations(tmp_path):
    trail = AuditTrail.from_settings(Settings(data_dir=tmp_path))
    assert trail is NO_AUDIT and not trail.enabled
    trail.record(events.application_start("xds", trail.source))  # goes nowhere, fails nothing
    assert trail.flush(0.1) and not (tmp_path / "audit-spool").exists()


def test_bad_destinations_are_refused():
    for value in ("syslog://a:514", "tls://a", "udp://:514"):
        with pytest.raises(ValueError, match="audit destination"):
            AuditTrail.from_settings(Settings(audit_destinations=value))


def test_a_full_spool_raises_one_security_alert(tmp_path):
    receiver = _udp_receiver()
    settings = Settings(data_dir=tmp_path, audit_destinations=f"udp://127.0.0.1:{receiver.getsockname()[1]}",
                        audit_spool_max_bytes=3000)
    trail = AuditTrail.from_settings(settings)  # not started: nothing leaves the spool
    for n in range(10):
        trail.record(events.application_start(f"app-{n}", trail.source))
    state = trail.spool.state()
    assert state["refused"] > 0 and state["full"] == 1
    waiting = len(trail.spool.unsent(trail.destinations[0]))
    trail.start()
    assert trail.flush(10)
    records = _receive(receiver, waiting)
    alerts = [r for r in records if r.find("EventIdentification/EventID").get("csd-code") == "110113"]
    assert len(alerts) == 1
    assert alerts[0].find("EventIdentification/EventTypeCode").get("csd-code") == "110133"
    assert "audit spool full" in alerts[0].findtext("EventIdentification/EventOutcomeDescription")
    trail.close()


def test_record_is_fast_and_delivery_keeps_order(tmp_path):
    receiver = _udp_receiver()
    trail = AuditTrail.from_settings(Settings(
        data_dir=tmp_path, audit_destinations=f"udp://127.0.0.1:{receiver.getsockname()[1]}")).start()
    threads = [threading.Thread(target=lambda k=k: [trail.record(events.application_start(f"t{k}-{n}", trail.source))
                                                     for n in range(20)]) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert trail.flush(10)
    names = [r.find("ActiveParticipant").get("UserID") for r in _receive(receiver, 80)]
    assert sorted(names) == sorted(f"t{k}-{n}" for k in range(4) for n in range(20))
    for k in range(4):  # each thread's records in the order it wrote them
        mine = [n for n in names if n.startswith(f"t{k}-")]
        assert mine == [f"t{k}-{n}" for n in range(20)]
    trail.close()


# -- a running server records every transaction ------------------------------------------------


def _udp_receiver() -> socket.socket:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    receiver.bind(("127.0.0.1", 0))
    return receiver


def _receive(receiver: socket.socket, count: int, timeout: float = 15) -> list[etree._Element]:
    """`count` audit messages, each checked as ITI-20 asks of its syslog frame."""
    found = []
    deadline = time.monotonic() + timeout
    while len(found) < count:
        receiver.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = receiver.recv(65536)
        except TimeoutError:
            break
        message = syslog.parse(data)
        assert (message.facility, message.msgid, message.version) == (10, "IHE+RFC-3881", 1)
        assert message.severity in (4, 5) and data.count(syslog.BOM) == 1
        found.append(etree.fromstring(message.msg))
    assert len(found) == count, f"{len(found)} of {count} audit records arrived"
    return found


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A server (SQLite) sending its audit records to a UDP socket of the test's."""
    receiver = _udp_receiver()
    server = start_server("sqlite", tmp_path_factory.mktemp("audited"), extra_env={
        "XDS_AUDIT_DESTINATIONS": f"udp://127.0.0.1:{receiver.getsockname()[1]}",
        "XDS_AUDIT_SOURCE_ID": "XDS-TEST-NODE", "XDS_AUDIT_ENTERPRISE_SITE_ID": "KMIX",
        "XDS_HOME_COMMUNITY_ID": HOME})
    # The patient start_server added (`xds patients add`, before the server ran) was audited
    # then, as ITI-44, and waited in the spool: the server sends that first, then its start.
    added, start = _receive(receiver, 2)
    assert added.find("EventIdentification/EventTypeCode").get("csd-code") == "ITI-44"
    assert start.find("EventIdentification/EventTypeCode").get("csd-code") == "110120"
    yield server, receiver
    stop_server(server)


def _records_of(records, event_id: str, type_code: str) -> list[etree._Element]:
    return [r for r in records if r.find("EventIdentification/EventID").get("csd-code") == event_id
            and r.find("EventIdentification/EventTypeCode").get("csd-code") == type_code]


def _object_ids(record: etree._Element, id_type: str) -> list[str]:
    return [o.get("ParticipantObjectID") for o in record.iter("ParticipantObjectIdentification")
            if o.find("ParticipantObjectIDTypeCode").get("csd-code") == id_type]


def test_every_transaction_is_recorded(audited, schema):  # noqa: F811 (the fixture)
    server, receiver = audited
    data = os.urandom(5000)
    request, ids = pnr_request([("Document01", data, "text/plain")])
    status, response = soap_pnr(server, request, [("doc1@test", "text/plain", data)])
    assert status_of(response.body) == "Success"
    submission_set = request.xpath("//*[local-name()='ExternalIdentifier'][@identificationScheme="
                                   "'urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8']/@value")[0]
    status, answer = soap_query(server.base, query_request(
        "FindDocuments", ("$XDSDocumentEntryPatientId", quote(s.PATIENT)), APPROVED_DOCUMENTS))
    assert answer.body.get("status").endswith(":Success")
    status, retrieved = soap_retrieve(server, [(server.repository_unique_id, ids["Document01"], None),
                                               (server.repository_unique_id, "1.2.3.4.404", None)])
    assert status_of(retrieved.body.find("{urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0}RegistryResponse")) \
        == "PartialSuccess"

    records = _receive(receiver, 3)  # in-process registration: no ITI-42 of its own
    for record in records:
        schema.assertValid(record)
        source = record.find("AuditSourceIdentification")
        assert (source.get("AuditSourceID"), source.get("AuditEnterpriseSiteID")) == ("XDS-TEST-NODE", "KMIX")
        initiator = record.find("ActiveParticipant[@UserIsRequestor='true']")
        assert initiator.get("NetworkAccessPointID") == "127.0.0.1"

    (provide,) = _records_of(records, "110107", "ITI-41")
    _assert_schematron("ITI-41_110107_mt01_DICOM.sch", provide)
    assert _object_ids(provide, "2") == [s.PATIENT]
    assert _object_ids(provide, "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd") == [submission_set]
    assert provide.find("EventIdentification").get("EventOutcomeIndicator") == "0"
    assert provide.find("ActiveParticipant[@UserIsRequestor='false']").get("UserID") == server.base + "/repository"

    (query,) = _records_of(records, "110112", "ITI-18")
    _assert_schematron("ITI-18_110112_mt02_DICOM.sch", query)
    assert _object_ids(query, "2") == [s.PATIENT]
    assert _object_ids(query, "ITI-18") == ["urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"]
    query_text = query.find("ParticipantObjectIdentification/ParticipantObjectQuery").text
    asked = etree.fromstring(base64.b64decode(query_text))  # the request as it was received
    assert asked.xpath("//*[local-name()='Value']/text()")[0] == quote(s.PATIENT)

    (retrieve,) = _records_of(records, "110106", "ITI-43")
    _assert_schematron("ITI-43_110106_mt01_DICOM.sch", retrieve)
    assert retrieve.find("EventIdentification").get("EventOutcomeIndicator") == "4"  # PartialSuccess
    assert _object_ids(retrieve, "9") == [ids["Document01"]]  # the document sent, not the missing one
    assert _object_ids(retrieve, "2") == [s.PATIENT]  # kept by the repository since ITI-41
    details = {d.get("type"): base64.b64decode(d.get("value")).decode()
               for d in retrieve.iter("ParticipantObjectDetail")}
    assert details == {"Repository Unique Id": server.repository_unique_id, "ihe:homeCommunityID": HOME}


def test_a_refused_submission_is_recorded_as_a_failure(audited, schema):  # noqa: F811
    server, receiver = audited
    data = b"a letter"
    request, ids = pnr_request([("Document01", data, "text/plain")], patient="NOBODY^^^&1.2.392.200119.6.102.99&ISO")
    status, response = soap_pnr(server, request, [("doc1@test", "text/plain", data)])
    assert status_of(response.body) == "Failure"
    (record,) = _receive(receiver, 1)
    schema.assertValid(record)
    assert record.find("EventIdentification").get("EventOutcomeIndicator") == "8"
    assert _object_ids(record, "2") == ["NOBODY^^^&1.2.392.200119.6.102.99&ISO"]


def test_a_garbled_request_is_still_recorded(audited, schema):  # noqa: F811
    """A SubmitObjectsRequest without a SubmissionSet: refused, and the refusal recorded
    without the patient and submission set it did not have."""
    server, receiver = audited
    status, response = soap_pnr(server, etree.fromstring(
        '<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="urn:ihe:iti:xds-b:2007">'
        '<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0">'
        '<rim:RegistryObjectList xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"/>'
        '</lcm:SubmitObjectsRequest></xdsb:ProvideAndRegisterDocumentSetRequest>'))
    assert status_of(response.body) == "Failure"
    (record,) = _receive(receiver, 1)
    schema.assertValid(record)
    assert record.find("EventIdentification").get("EventOutcomeIndicator") == "8"
    assert record.find("ParticipantObjectIdentification") is None


def test_records_survive_the_process_being_killed(tmp_path):
    """Group commit leaves the fsync to a background thread; a record is written to the
    spool's segment all the same before record() returns, so SIGKILL right after loses nothing."""
    script = (
        "import os, signal, sys\n"
        "from xds.audit import events\n"
        "from xds.audit.trail import AuditTrail\n"
        "from xds.config import Settings\n"
        "trail = AuditTrail.from_settings(Settings(data_dir=sys.argv[1], audit_destinations='udp://127.0.0.1:9',"
        " audit_spool_fsync_interval=60))\n"
        "for n in range(50):\n"
        "    trail.record(events.application_start(f'app-{n}', trail.source))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr
    spool = AuditSpool(tmp_path / "audit-spool", ["udp://127.0.0.1:9"], max_bytes=1 << 30)
    names = [etree.fromstring(syslog.parse(m).msg).find("ActiveParticipant").get("UserID")
             for m in spool.unsent("udp://127.0.0.1:9")]
    assert names == [f"app-{n}" for n in range(50)]


def test_a_record_that_cannot_be_kept_is_logged_not_raised(tmp_path, caplog, monkeypatch):
    trail = AuditTrail.from_settings(Settings(data_dir=tmp_path, audit_destinations="udp://127.0.0.1:9"))

    def disk_full(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("xds.audit.spool.os.posix_fallocate", disk_full)  # a segment cannot be made
    trail.record(events.application_start("xds", trail.source))  # the transaction calling this goes on
    assert "AUDIT RECORD LOST" in caplog.text and trail.spool.waiting() == 0
    assert not list((tmp_path / "audit-spool").glob("*.new"))  # nothing half made is left
    trail.close()


def test_a_transaction_record_that_cannot_be_written_is_logged_and_the_rest_go_on(tmp_path, caplog):
    receiver = _udp_receiver()
    trail = AuditTrail.from_settings(Settings(data_dir=tmp_path,
                                              audit_destinations=f"udp://127.0.0.1:{receiver.getsockname()[1]}"))
    query = ("ITI-18", "DocumentRegistry")
    trail.record_transaction(query, events.TransactionContext(outcome="Success"))  # no query id
    trail.record_transaction(("ITI-18", "DocumentConsumer"), events.TransactionContext())  # not an EVENTS key
    trail.record_transaction(events.security_alert, events.TransactionContext())  # a function, not a key
    trail.spool.append(b"\x00\x09values of a later release")  # a layout this release does not know
    trail.record_transaction(query, events.TransactionContext(query_id="urn:uuid:1", outcome=0))
    refused = [r for r in caplog.records if r.exc_info and "is not a transaction's audit event" in str(r.exc_info[1])]
    assert len(refused) == 2 and all(r.getMessage().startswith("AUDIT RECORD LOST") for r in refused)
    assert len(trail.spool.unsent(trail.destinations[0])) == 3  # the refused two were never kept
    trail.start()
    assert trail.flush(10)
    (record,) = _receive(receiver, 1)
    assert record.find("ParticipantObjectIdentification").get("ParticipantObjectID") == "urn:uuid:1"
    assert "cannot be written as a message" in caplog.text and "stored query id" in caplog.text
    assert "layout 9 of a transaction's values is not one this release reads (1 to 2)" in caplog.text
    trail.close()


def test_health_shows_the_audit_backlog(tmp_path):
    """An Audit Record Repository that does not take records: /health shows them waiting."""
    import json
    import urllib.request

    from tests.server import serve

    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: every connection is refused
    env = dict(os.environ, XDS_DATA_DIR=str(tmp_path), XDS_AUDIT_DESTINATIONS=f"tcp://127.0.0.1:{dead.getsockname()[1]}")
    subprocess.run([sys.executable, "-m", "xds.cli", "db", "upgrade"], env=env, check=True, capture_output=True)
    process, base = serve(env, tmp_path / "server.log")
    try:
        health = json.loads(urllib.request.urlopen(base + "/health", timeout=10).read())
        assert health["status"] == "ok"
        assert health["audit"]["waiting_bytes"] > 0 and health["audit"]["refused"] == 0  # the start, at least
        assert health["audit"]["full"] is False
    finally:
        process.terminate()
        process.wait(15)
        dead.close()


def test_each_episode_of_a_full_spool_raises_its_alert(tmp_path):
    trail = AuditTrail.from_settings(Settings(data_dir=tmp_path, audit_destinations="udp://127.0.0.1:9",
                                              audit_spool_max_bytes=3000))
    alerts = []
    for episode, count in enumerate((12, 5)):  # 3 fit; refused: 1-9, then 10 and 11 (no power of 2)
        for n in range(count):
            trail.record(events.application_start(f"app-{episode}-{n}", trail.source))
        records = [etree.fromstring(syslog.parse(m).msg) for m in trail.spool.unsent(trail.destinations[0])]
        alerts.append(sum(r.find("EventIdentification/EventID").get("csd-code") == "110113" for r in records))
        _deliver(trail.spool, trail.destinations[0])  # the destination is back
    assert alerts == [1, 1]
    trail.close()
