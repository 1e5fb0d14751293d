"""The Audit Record Repository's store (xds.arr.repository) and its commands (`xds audit
verify|search|report`): fields read from audit messages of both attribute styles, malformed
messages kept, the hash chain and how verify names a record deleted, changed or inserted, and
searches that use the indexes. Database tests run on SQLite and PostgreSQL (tests/conftest.py).

The messages are the project's own (xds.audit.events builders in RFC 5424 syslog) and public
ones from ../shared/conformance-data/atna (RFC 3881 and DICOM attribute styles)."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import re
import unicodedata
from dataclasses import replace

import pytest
from lxml import etree
from sqlalchemy import delete, insert, select, text, update

from tests.data import CONFORMANCE
from xds import cli
from xds.arr import repository
from xds.audit import events, syslog
from xds.arr.repository import GENESIS, Reception
from xds.store import db
from xds.store.tables import AuditChainRow, AuditRecordKeyRow, AuditRecordRow

ATNA = CONFORMANCE / "atna"
needs_atna_samples = pytest.mark.skipif(not ATNA.is_dir(), reason=f"conformance data missing: {ATNA}")

SOURCE = events.AuditSource("KMIX-REPOSITORY", enterprise_site_id="1.2.392.200119.6.102")
PATIENT = "P0001^^^&1.2.392.200119.6.102.11037&ISO"
OTHER_PATIENT = "P0002^^^&1.2.392.200119.6.102.11037&ISO"
DOCTOR = events.HumanRequestor("yamada@kagawa-hp.example", "山田 太郎")
T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


# --- messages (also used by tests/test_audit_receiver.py) ----------------------------------

def retrieve_event(*, patient: str = PATIENT, documents=("1.2.392.1.1", "1.2.392.1.2"), time: dt.datetime = T0,
                   requestor: events.HumanRequestor | None = DOCTOR, client: str = "10.1.2.3",
                   patient_name: str | None = None) -> bytes:
    """ITI-43 Retrieve Document Set at the repository (Export, R); with `patient_name` the
    patient object also carries a ParticipantObjectName (which the builder does not write)."""
    ctx = events.TransactionContext(
        client_address=client, endpoint_url="https://repository.kmix.example/repository",
        patient_id=patient, documents=[events.DocumentRef(d, "1.2.392.9") for d in documents],
        human_requestor=requestor, time=time, client_certificate="CN=consumer,O=Kagawa Hospital")
    message = events.build("ITI-43", "DocumentRepository", ctx, SOURCE)
    if patient_name:
        root = etree.fromstring(message)
        for element in root.iter("ParticipantObjectIdentification"):
            if element.get("ParticipantObjectTypeCodeRole") == "1":
                # ParticipantObjectName comes after the IDTypeCode (DICOM PS3.15 A.5.1).
                etree.SubElement(element, "ParticipantObjectName").text = patient_name
        message = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return message


def query_event(*, patient: str = PATIENT, time: dt.datetime = T0) -> bytes:
    """ITI-18 Registry Stored Query at the registry (Query, E)."""
    ctx = events.TransactionContext(
        client_address="10.9.9.9", endpoint_url="https://registry.kmix.example/registry", patient_id=patient,
        query_id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d", query_request=b"<AdhocQueryRequest/>",
        time=time)
    return events.build("ITI-18", "DocumentRegistry", ctx, events.AuditSource("KMIX-REGISTRY"))


def submit_event(*, patient: str = PATIENT, time: dt.datetime = T0) -> bytes:
    """ITI-41 Provide and Register at the repository (Import, C)."""
    ctx = events.TransactionContext(
        client_address="10.5.5.5", endpoint_url="https://repository.kmix.example/repository", patient_id=patient,
        submission_set_unique_id="1.2.392.77.1", time=time,
        human_requestor=events.HumanRequestor("suzuki@marugame.example", "鈴木 花子"))
    return events.build("ITI-41", "DocumentRepository", ctx, SOURCE)


def syslog_message(message: bytes, *, hostname: str = "repository-1") -> bytes:
    return syslog.format_message(message, hostname=hostname, app_name="xds-affinity", procid="4242")


def reception(message: bytes, **values) -> Reception:
    values.setdefault("transport", "tcp")
    values.setdefault("sender_address", "192.0.2.10")
    values.setdefault("sender_port", 50000)
    return Reception(syslog_message(message), **values)


def wustl_sample(name: str, time: str = "2026-03-01T10:00:00+09:00") -> bytes:
    """An IHE-WUSTL template as a sender would send it: without the comment before the XML
    declaration (see conformance-data's README), its ${timeStamp} filled in."""
    data = (ATNA / "wustl" / name).read_bytes()
    return data.split(b"\n", 1)[1].replace(b"${timeStamp}", time.encode())


# --- reading messages ----------------------------------------------------------------------

def test_fields_of_a_retrieve_are_read():
    record = repository.read(reception(retrieve_event(), tls_peer="CN=repository-1,O=KMIX"))
    assert record.malformed is None
    assert (record.facility, record.severity, record.hostname, record.app_name, record.procid, record.msgid) == (
        10, 5, "repository-1", "xds-affinity", "4242", "IHE+RFC-3881")
    assert (record.event_id, record.event_name, record.event_action, record.outcome) == ("110106", "Export", "R", 0)
    assert record.event_time == T0
    assert record.values("event_type") == ["ITI-43"]
    # The person behind the request, not the requesting system, is the user.
    assert (record.user_id, record.user_name) == ("yamada@kagawa-hp.example", "山田 太郎")
    assert (record.source_system, record.source_address) == ("CN=consumer,O=Kagawa Hospital", "10.1.2.3")
    assert (record.audit_source_id, record.audit_enterprise_site_id) == ("KMIX-REPOSITORY", "1.2.392.200119.6.102")
    assert record.patients == [PATIENT]
    assert record.documents == ["1.2.392.1.1", "1.2.392.1.2"]
    assert record.tls_peer == "CN=repository-1,O=KMIX"
    assert record.message == retrieve_event()


def test_without_a_person_the_requesting_system_is_the_user():
    record = repository.read(reception(query_event()))
    assert record.user_id == events.WSA_ANONYMOUS
    assert (record.source_system, record.source_address) == (None, "10.9.9.9")  # anonymous names no one
    assert (record.event_id, record.event_action) == ("110112", "E")
    assert record.values("query") == ["urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"]


def test_a_submission_names_its_submission_set():
    record = repository.read(reception(submit_event()))
    assert (record.event_id, record.event_action, record.user_name) == ("110107", "C", "鈴木 花子")
    assert record.values("submission_set") == ["1.2.392.77.1"]
    assert record.patients == [PATIENT]


@needs_atna_samples
def test_rfc3881_attribute_style_is_read():
    """IHE Connectathon template (code / displayName attributes, UserIsRequestor defaulted)."""
    record = repository.read(reception(wustl_sample("ITI-41_110106.rfc.xml")))
    assert record.malformed is None
    assert (record.event_id, record.event_name, record.event_action, record.outcome) == ("110106", "Export", "R", 4)
    assert record.event_time == dt.datetime(2026, 3, 1, 1, 0, tzinfo=dt.UTC)
    assert (record.user_id, record.user_name) == ("fgranger", "farley")
    assert record.source_address == "128.252.180.34"
    assert record.audit_source_id == "SUN PIX/PDQ"
    assert record.patients == ["TestPatient1^^^&&1.3.6.1.4.1.21367.13.20.1000&ISO"]
    assert record.values("submission_set") == ["1.3.6.1.4.1.21367.2010.1.2.167.1292341934274.2"]


@needs_atna_samples
def test_a_captured_syslog_frame_is_read():
    """One RFC 5424 message with a BOM, as an Open Health Tools bridge sent it."""
    raw = (ATNA / "wustl" / "syslog-frame-example.txt").read_bytes().rstrip(b"\r\n")
    record = repository.read(Reception(raw, "udp", "192.0.2.1", 514))
    assert record.malformed is None
    assert (record.hostname, record.app_name, record.procid) == ("cabig-h1", "OHT", "521")
    assert (record.event_id, record.values("event_type")) == ("110100", ["110120"])
    assert record.event_time == dt.datetime(2010, 12, 17, 21, 12, 4, 287000, tzinfo=dt.UTC)
    assert record.user_id == "JoeS"


@needs_atna_samples
def test_dicom_attribute_style_sample_is_read():
    raw = syslog_message((ATNA / "ehealthsuisse" / "iti-41-log.xml").read_bytes())
    record = repository.read(Reception(raw, "tls", "192.0.2.1", 6514))
    assert record.malformed is None
    assert (record.event_id, record.values("event_type")) == ("110106", ["ITI-41"])
    assert record.user_id == "pma@gnt.com"  # the first requestor without a system's role
    assert record.source_address == "hcohcdemo01-app06-icwpxs01.net.swisscom-health.it"
    assert record.patients == ["752343^^^&2.16.840.1.113883.3.37.4.1.1.2.1.1&ISO"]


@pytest.mark.parametrize("raw, reason", [
    (b"hello, this is not syslog", "not RFC 5424 syslog"),
    (b"<85>1 2026-03-01T00:00:00Z host app 1 IHE+RFC-3881 - \xef\xbb\xbf<AuditMessage><unclosed>",
     "MSG is not well-formed XML"),
    (b"<85>1 2026-03-01T00:00:00Z host app 1 IHE+RFC-3881 - <Envelope/>", "not an AuditMessage"),
    (b"<85>1 2026-03-01T00:00:00Z host app 1 IHE+RFC-3881 - <AuditMessage/>",
     "AuditMessage without EventIdentification"),
    (b"<85>1 2026-03-01T00:00:00Z host app 1 IHE+RFC-3881 - <AuditMessage><EventIdentification "
     b"EventDateTime='yesterday' EventActionCode='E' EventOutcomeIndicator='0'><EventID csd-code='110100'/>"
     b"</EventIdentification></AuditMessage>", "EventDateTime 'yesterday' is not an xs:dateTime"),
    (b"<85>1 2026-03-01T00:00:00Z host app 1 IHE+RFC-3881 - <!DOCTYPE a [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>"
     b"<AuditMessage>&e;</AuditMessage>", "AuditMessage without EventIdentification"),
])
def test_malformed_messages_are_kept_with_the_reason(raw, reason):
    record = repository.read(Reception(raw, "udp", "192.0.2.1", 514))
    assert reason in record.malformed
    assert record.raw == raw


def test_values_are_fitted_to_their_columns():
    """A NUL (PostgreSQL text refuses it) and values longer than their columns: cut, not refused."""
    long_user = "u" * 2000
    raw = syslog_message(retrieve_event(requestor=events.HumanRequestor(long_user, "x")))
    raw = raw.replace(b"repository-1", b"host\x00name", 1)
    record = repository.read(Reception(raw, "udp", "192.0.2.1", 514))
    assert record.hostname == "host\ufffdname"
    assert record.user_id == "u" * 512
    assert record.raw == raw


# --- the chain -----------------------------------------------------------------------------

def _store(engine, *messages, **values):
    return repository.store(engine, [reception(m, **values) for m in messages])


def _three(engine):
    return _store(engine, retrieve_event(), query_event(), submit_event(patient=OTHER_PATIENT))


def test_appended_records_are_numbered_and_chained(engine):
    stored = _three(engine)
    assert [r.seq for r in stored] == [1, 2, 3]
    assert stored[0].prev_hash == GENESIS
    assert [r.prev_hash for r in stored[1:]] == [r.hash for r in stored[:2]]
    assert repository.head(engine) == (3, stored[-1].hash)
    # What comes back from the database hashes to what was stored (both databases give every
    # value back unchanged, times included).
    with db.make_sessionmaker(engine)() as session:
        back = list(repository.records(session))
    assert [repository.chain_hash(r.prev_hash, r) for r in back] == [r.hash for r in stored]
    assert back[0].user_name == "山田 太郎"


def test_verify_passes_an_intact_chain(engine):
    _three(engine)
    repository.store(engine, [Reception(b"not syslog at all", "udp", "192.0.2.1", 514)])
    report = repository.verify(engine)
    assert report.ok, report.problem
    assert (report.count, report.malformed, report.head_seq) == (4, 1, 4)


def test_verify_passes_an_empty_repository(engine):
    report = repository.verify(engine)
    assert report.ok and report.count == 0


def test_verify_names_a_record_whose_message_was_changed(engine):
    _three(engine)
    with db.write_session(engine) as session:
        raw = session.execute(select(AuditRecordRow.raw).where(AuditRecordRow.seq == 2)).scalar_one()
        session.execute(update(AuditRecordRow).where(AuditRecordRow.seq == 2).values(
            raw=bytes(raw).replace(b"10.9.9.9", b"10.9.9.8")))
    report = repository.verify(engine)
    assert not report.ok
    assert report.seq == 2
    assert report.problem.startswith("record 2 changed")
    assert report.count == 1


def test_verify_names_a_record_whose_patient_key_was_changed(engine):
    """The search keys are hashed too: hiding an access from a patient's report shows."""
    _three(engine)
    with db.write_session(engine) as session:
        session.execute(update(AuditRecordKeyRow).where(
            AuditRecordKeyRow.record_seq == 1, AuditRecordKeyRow.kind == "patient").values(value="someone-else"))
    report = repository.verify(engine)
    assert (report.ok, report.seq) == (False, 1)
    assert "record 1 changed" in report.problem


def test_verify_names_a_deleted_middle_record(engine):
    _three(engine)
    with db.write_session(engine) as session:
        session.execute(delete(AuditRecordKeyRow).where(AuditRecordKeyRow.record_seq == 2))
        session.execute(delete(AuditRecordRow).where(AuditRecordRow.seq == 2))
    report = repository.verify(engine)
    assert (report.ok, report.seq) == (False, 2)
    assert report.problem.startswith("record 2 deleted")


def test_verify_names_records_deleted_from_the_end(engine):
    _three(engine)
    with db.write_session(engine) as session:
        session.execute(delete(AuditRecordRow).where(AuditRecordRow.seq == 3))
    report = repository.verify(engine)
    assert (report.ok, report.seq) == (False, 3)
    assert report.problem.startswith("record 3 deleted from the end")


def test_verify_names_a_changed_record_whose_hash_was_recomputed(engine):
    """Someone who knows the hashing changes record 2 and gives it a matching hash: record 3
    is no longer chained to it."""
    _three(engine)
    with db.make_sessionmaker(engine)() as session:
        second = list(repository.records(session))[1]
    changed = replace(second, sender_address="192.0.2.66")
    with db.write_session(engine) as session:
        session.execute(update(AuditRecordRow).where(AuditRecordRow.seq == 2).values(
            sender_address="192.0.2.66", hash=repository.chain_hash(second.prev_hash, changed)))
    report = repository.verify(engine)
    assert (report.ok, report.seq) == (False, 2)
    assert report.problem.startswith("record 2 changed and its hash recomputed")


def test_verify_names_an_inserted_record(engine):
    """A record slipped in between 1 and 2, the others renumbered: record 3 (the old 2) is
    chained to record 1, skipping the newcomer."""
    stored = _three(engine)
    with db.write_session(engine) as session:
        for table, column in ((AuditRecordKeyRow, AuditRecordKeyRow.record_seq), (AuditRecordRow, AuditRecordRow.seq)):
            session.execute(update(table).where(column >= 2).values({column: column + 1000}))
            session.execute(update(table).where(column >= 1000).values({column: column - 999}))
        forged = replace(repository.read(reception(retrieve_event(patient=OTHER_PATIENT))), seq=2)
        row = {name: getattr(forged, name) for name in repository._COLUMNS}
        session.execute(insert(AuditRecordRow), [{**row, "prev_hash": stored[0].hash,
                                                  "hash": repository.chain_hash(stored[0].hash, forged)}])
        session.execute(insert(AuditRecordKeyRow), [{"record_seq": 2, "kind": k, "value": v} for k, v in forged.keys])
    report = repository.verify(engine)
    assert (report.ok, report.seq) == (False, 2)
    assert report.problem.startswith("record 2 inserted")


def test_verify_names_a_record_appended_behind_the_head(engine):
    stored = _three(engine)
    with db.write_session(engine) as session:
        session.execute(update(AuditChainRow).values(seq=2, hash=stored[1].hash))
    report = repository.verify(engine)
    assert (report.ok, report.seq) == (False, 3)
    assert "inserted after the chain's head" in report.problem


def test_threads_appending_together_make_one_chain(engine):
    import threading

    def work(n):
        for i in range(10):
            _store(engine, retrieve_event(documents=(f"1.2.392.{n}.{i}",)))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = repository.verify(engine)
    assert report.ok, report.problem
    assert report.count == 40


def _append_from_a_process(url: str, n: int, barrier, results) -> None:
    engine = db.make_engine(url)
    try:
        barrier.wait(timeout=30)
        for i in range(10):
            repository.store(engine, [reception(retrieve_event(documents=(f"1.2.392.{n}.{i}",)))])
        results.put("ok")
    except Exception as exc:  # reported to the test, which fails on it
        results.put(f"{type(exc).__name__}: {exc}")
    finally:
        engine.dispose()


def test_processes_appending_together_make_one_chain(engine, database_url):
    """Several receiver processes on one database: the chain lock serialises them."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(3), context.Queue()
    workers = [context.Process(target=_append_from_a_process, args=(database_url, n, barrier, results))
               for n in range(3)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert outcomes == ["ok"] * 3
    report = repository.verify(engine)
    assert report.ok, report.problem
    assert report.count == 30


# --- search --------------------------------------------------------------------------------

@pytest.fixture
def history(engine):
    """A patient's morning: a submission, a query, a retrieve; and another patient's query; and
    a malformed message."""
    hour = dt.timedelta(hours=1)
    _store(engine, submit_event(time=T0), query_event(time=T0 + hour),
           retrieve_event(time=T0 + 2 * hour, documents=("1.2.392.1.1",)),
           query_event(patient=OTHER_PATIENT, time=T0 + 3 * hour))
    repository.store(engine, [Reception(b"\x00\x01 binary noise", "udp", "192.0.2.99", 40000)])
    return engine


def test_search_by_patient(history):
    found = repository.search(history, patient=PATIENT).records
    assert [r.event_id for r in found] == ["110107", "110112", "110106"]
    assert repository.search(history, patient="nobody^^^&1.2&ISO").records == []


def test_search_by_time_event_and_user(history):
    hour = dt.timedelta(hours=1)
    assert [r.seq for r in repository.search(history, since=T0 + hour, until=T0 + 2 * hour).records] == [2, 3]
    # An offset is honoured: 10:00+09:00 is 01:00 UTC, before every event.
    tokyo = dt.timezone(dt.timedelta(hours=9))
    assert repository.search(history, until=dt.datetime(2026, 3, 1, 10, 0, tzinfo=tokyo)).records == []
    assert [r.seq for r in repository.search(history, event="110112").records] == [2, 4]
    assert [r.seq for r in repository.search(history, event="ITI-43").records] == [3]
    assert [r.seq for r in repository.search(history, user="山田 太郎").records] == [3]
    assert [r.seq for r in repository.search(history, user="suzuki@marugame.example").records] == [1]
    assert [r.seq for r in repository.search(history, patient=PATIENT, event="110112").records] == [2]


def test_search_lists_malformed_records_last_and_limits(history):
    everything = repository.search(history)
    assert [r.seq for r in everything.records] == [1, 2, 3, 4, 5]  # no event time: last
    assert [r.seq for r in repository.search(history, malformed=True).records] == [5]
    limited = repository.search(history, limit=2)
    assert ([r.seq for r in limited.records], limited.truncated) == ([1, 2], True)
    assert repository.count(history) == (5, 1)


def _plan(engine, statement) -> str:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + _compiled(engine, statement)).all()
            return "\n".join(row[-1] for row in rows)
        # A handful of rows: the planner would rightly scan; forbid that to see that it can
        # use an index at all.
        connection.execute(text("SET enable_seqscan = off"))
        rows = connection.exec_driver_sql("EXPLAIN " + _compiled(engine, statement)).all()
        return "\n".join(row[0] for row in rows)


def _compiled(engine, statement) -> str:
    return str(statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))


def test_searches_use_the_indexes(history):
    by_patient = _plan(history, repository.search_statement(patient=PATIENT))
    assert "ix_audit_record_key_value" in by_patient
    assert not re.search(r"SCAN audit_record\b(?! USING)|Seq Scan on audit_record\b", by_patient), by_patient
    by_time = _plan(history, repository.search_statement(since=T0, until=T0 + dt.timedelta(hours=1)))
    assert "ix_audit_record_event_time" in by_time, by_time


# --- the commands --------------------------------------------------------------------------

@pytest.fixture
def xds(database_url, monkeypatch, capsys):
    """`xds ...` on the test database: (exit status, stdout)."""
    monkeypatch.setenv("XDS_DATABASE_URL", database_url)
    monkeypatch.delenv("XDS_CONFIG", raising=False)

    def run(*args: str) -> tuple[int, str]:
        status = cli.main(list(args))
        return status, capsys.readouterr().out
    return run


def test_cli_verify(history, xds):
    status, out = xds("audit", "verify")
    assert status == 0
    assert out.startswith("OK: 5 audit record(s), 1 of them malformed")
    with db.write_session(history) as session:
        session.execute(update(AuditRecordRow).where(AuditRecordRow.seq == 4).values(sender_address="192.0.2.66"))
    status, out = xds("audit", "verify")
    assert status == 1
    assert out.startswith("FAILED: record 4 changed")


def test_cli_search_table(history, xds):
    status, out = xds("audit", "search", "--patient", PATIENT)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["seq", "time", "(UTC)", "event", "action", "outcome", "user", "source", "address",
                                "patients", "documents"]
    retrieve = next(line for line in lines if line.startswith("3 "))
    for value in ("2026-03-01 11:00:00Z", "Export ITI-43", "read", "success", "山田 太郎 (yamada@kagawa-hp.example)",
                  "10.1.2.3", PATIENT, "1.2.392.1.1"):
        assert value in retrieve
    assert lines[-1] == "3 record(s)"
    # Columns line up in a terminal, a Japanese name (two columns a character) included.
    assert len({_column(line, "10.") for line in lines[1:4]}) == 1, out


def _column(line: str, value: str) -> int:
    """Where `value` starts on a terminal: East Asian wide characters take two columns."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line[:line.index(value)])


def test_cli_search_options(history, xds):
    status, out = xds("audit", "search", "--since", "2026-03-01T10:00", "--until", "2026-03-01T11:00Z")
    assert status == 0 and out.splitlines()[-1] == "2 record(s)"
    status, out = xds("audit", "search", "--until", "2026-03-01")  # a date alone: to the end of the day
    assert out.splitlines()[-1] == "4 record(s)"
    status, out = xds("audit", "search", "--event", "ITI-18", "--limit", "1")
    assert out.splitlines()[-1] == "1 record(s); more match: raise --limit or narrow the search"
    status, out = xds("audit", "search", "--malformed")
    assert "(malformed)" in out
    assert "record 5 is malformed (udp from 192.0.2.99" in out and "not RFC 5424 syslog" in out
    with pytest.raises(SystemExit):
        xds("audit", "search", "--since", "last tuesday")


def test_cli_search_xml(history, xds):
    status, out = xds("audit", "search", "--user", "山田 太郎", "--xml")
    assert status == 0
    comment, message = out.split("\n", 1)
    assert comment.startswith("<!-- audit record 3, received ")
    root = etree.fromstring(message.strip().encode("utf-8"))
    assert root.tag == "AuditMessage"
    assert etree.tostring(root) == etree.tostring(etree.fromstring(
        retrieve_event(time=T0 + dt.timedelta(hours=2), documents=("1.2.392.1.1",))))


def test_cli_patient_report(history, xds):
    status, out = xds("audit", "report", "--patient", PATIENT)
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == (f"Access history of patient {PATIENT}: 3 event(s), 2026-03-01 09:00:00Z to "
                        "2026-03-01 11:00:00Z")
    assert lines[2].split() == ["when", "(UTC)", "who", "reported", "by", "(facility)", "from", "(system,",
                                "address)", "what", "documents"]
    submitted, queried, retrieved = lines[3:6]
    assert "鈴木 花子 (suzuki@marugame.example)" in submitted
    assert "created: submitted documents (ITI-41)" in submitted
    assert "submission set 1.2.392.77.1" in submitted
    assert "queried: searched the patient's documents (ITI-18)" in queried
    assert "KMIX-REGISTRY" in queried and "10.9.9.9" in queried
    for value in ("2026-03-01 11:00:00Z", "山田 太郎 (yamada@kagawa-hp.example)",
                  "KMIX-REPOSITORY (site 1.2.392.200119.6.102)", "CN=consumer,O=Kagawa Hospital 10.1.2.3",
                  "read: retrieved documents (ITI-43)",
                  "1.2.392.1.1"):
        assert value in retrieved
    status, out = xds("audit", "report", "--patient", "nobody^^^&1.2&ISO")
    assert (status, out) == (0, "No audit record names patient nobody^^^&1.2&ISO.\n")


def test_cli_tells_when_the_database_has_no_audit_tables(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDS_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    assert cli.main(["audit", "verify"]) == 2
    assert "xds db upgrade" in capsys.readouterr().err
