"""ITI-46 PIX Update Notification (ITI TF-2b 3.46) from the PIX Manager's durable queue
(xds.identity.notify), to a real PIX Consumer: a WSGI server on a free port that reads each
SOAP 1.2 request, checks its PRPA_IN201302UV02 against HL7's NE2008 schemas and answers an
accept acknowledgement (AA; AE with the schema's complaints; or what a test scripts: HTTP 500,
AE, AR, a request held until released). Every test runs on SQLite and on PostgreSQL.

What is checked: a feed's notifications reach each consumer with its domains' ids only, valid
by the schemas and the PIXv3 Schematron; a rolled-back feed sends nothing; a consumer that fails
or is down gets them again, in order per person, after a restart too; a refusal parks the
notification and holds nothing back; two senders on one database never send one row twice; a
clean stop sends nothing twice; each notification answered is audited.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from lxml import etree
from sqlalchemy import func, select

from tests.server import XDS, free_port, serve
from tests.test_audit_actors import Recording
from tests.test_hl7v3_validation import assert_valid, needs_data, schemas
from tests.test_identity_data import CLINIC, DOMAIN, HOSPITAL_A, HOSPITAL_B, japanese, many, pid
from xds.audit import events
from xds.client import post_soap
from xds.config import Settings
from xds.hl7v3 import ack
from xds.hl7v3.details import error
from xds.hl7v3.feed import read_patient_feed, record_added
from xds.hl7v3.ns import INTERACTIONS, UPDATE_NOTIFICATION_ACTION
from xds.identity import feed, links, notify
from xds.identity.policy import IdentityPolicy
from xds.model.person import Identifier
from xds.soap import build_envelope, parse_message
from xds.store import db
from xds.store.tables import PixNotificationRow

pytestmark = needs_data

MANAGER = "1.2.392.200119.6.102.99.1"
CONSUMER_DEVICE = "1.2.392.200119.6.102.99.7"
IDENTITY = IdentityPolicy.from_settings(Settings(affinity_domain=DOMAIN))
#: Retries quick enough for a test, slow enough not to spin.
QUICK = dict(pix_notify_retry_min=0.05, pix_notify_retry_max=0.2, pix_notify_timeout=10.0)


# --- a PIX Consumer -------------------------------------------------------------------------

class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


@dataclasses.dataclass
class Delivery:
    message_id: str
    ids: list[Identifier]        # Patient.id, then every asOtherIDs id, as read
    answer: str                  # "AA", "AE", "AR", or "500"
    receiver: str
    sender: str
    message: bytes


class Consumer:
    """A PIX Consumer (see the module's text). `answer(n, delivery)` says how the n-th request
    is answered (default AA); with `hold` set, the first request waits for it (`entered` tells
    when it is waiting)."""

    def __init__(self, port: int = 0, answer=None):
        self.answer = answer or (lambda n, d: "AA")
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        self.hold: threading.Event | None = None
        self.entered = threading.Event()
        self.server = make_server("127.0.0.1", port, self._app, server_class=_Server, handler_class=_Quiet)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/pix-consumer"

    def accepted(self) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.answer == "AA"]

    def _app(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        request = parse_message(environ.get("CONTENT_TYPE"), body)
        assert request.action == UPDATE_NOTIFICATION_ACTION
        message = request.body
        read = read_patient_feed(message)
        patient = read.patient
        delivery = Delivery(read.header.message_id.root if read.header.message_id else "",
                            [*patient.ids, *patient.other_ids] if patient else [], "", read.header.receiver,
                            read.header.sender, b"")
        delivery.message = etree.tostring(message)
        with self.lock:
            n = len(self.deliveries)
            self.deliveries.append(delivery)
        if self.hold is not None and n == 0:
            self.entered.set()
            self.hold.wait(30)
        answer = self.answer(n, delivery)
        problems = schemas().validate(message)  # the consumer's own check of what it gets
        if problems:
            answer = "AE"
        delivery.answer = str(answer)
        if answer == 500:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"the consumer is busy"]
        details = problems or ([error("204", f"unknown patient {delivery.ids[0].cx}")] if answer != "AA" else [])
        reply = ack.accept_acknowledgement(read.header, answer, details, sender=CONSUMER_DEVICE)
        envelope = build_envelope(reply, "urn:hl7-org:v3:MCCI_IN000002UV01", relates_to=request.message_id)
        start_response("200 OK", [("Content-Type", "application/soap+xml; charset=UTF-8")])
        return [envelope]

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def consumers():
    started: list[Consumer] = []

    def start(**kwargs) -> Consumer:
        consumer = Consumer(**kwargs)
        started.append(consumer)
        return consumer

    yield start
    for consumer in started:
        consumer.close()


def wait_for(condition, timeout: float = 20.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)


# --- the PIX Manager's side ------------------------------------------------------------------

def settings(*entries: str, **more) -> Settings:
    return Settings(pix_consumers=";".join(entries), hl7v3_device_id=MANAGER, **{**QUICK, **more})


def notifier(engine, config: Settings, trail=None) -> notify.UpdateNotifier:
    return notify.UpdateNotifier.from_settings(config, engine, trail if trail is not None else Recording())


def fed(engine, record, policy: notify.NotificationPolicy, *, revise: bool = False):
    """A feed and its notifications, in one transaction (as the ITI-44 service does)."""
    with db.write_session(engine) as session:
        result = (feed.revise if revise else feed.add)(session, record, IDENTITY)
        notify.enqueue(session, result, policy)
    return result


def queued(engine) -> list[PixNotificationRow]:
    with db.make_sessionmaker(engine)() as session:
        return list(session.scalars(select(PixNotificationRow).order_by(PixNotificationRow.id)))


def state(engine) -> dict:
    with db.make_sessionmaker(engine)() as session:
        return notify.queue_state(session)


def one_person(extension: str, root: str, *others: Identifier):
    """A record of the same person (yamada, 1971-01-01) under another id, naming others."""
    return japanese(extension, root=root, other_ids=tuple(others))


# --- configuration ----------------------------------------------------------------------------

def test_the_setting_names_each_consumer_its_domains_and_its_device():
    parsed = notify.parse_consumers(f" https://ehr.example/pix?a=b={DOMAIN},{HOSPITAL_A} ; "
                                    f"http://lab.example/pix={CLINIC} device={CONSUMER_DEVICE};")
    assert parsed == (notify.PixConsumer("https://ehr.example/pix?a=b", (DOMAIN, HOSPITAL_A), DOMAIN),
                      notify.PixConsumer("http://lab.example/pix", (CLINIC,), CONSUMER_DEVICE))
    assert notify.parse_consumers("") == ()
    for bad, says in (("https://ehr.example/pix", "names no domains"), ("https://ehr.example/pix=", "names no domains"),
                      ("ehr.example=1.2.3", "not an http"), ("https://ehr.example/pix=1.2.x", "'1.2.x'"),
                      ("https://e/p=1.2 device=oid", "'oid'"), ("https://e/p=1.2;https://e/p=1.3", "named twice")):
        with pytest.raises(ValueError, match=says):
            notify.parse_consumers(bad)
    with pytest.raises(ValueError, match="hl7v3_device_id"):
        notify.NotificationPolicy.from_settings(Settings(pix_consumers=f"https://e/p={DOMAIN}"))
    with pytest.raises(ValueError, match="pix_notify_retry_min"):
        notify.NotificationPolicy.from_settings(settings(f"https://e/p={DOMAIN}", pix_notify_retry_min=0))
    assert notify.NotificationPolicy.from_settings(Settings()).consumers == ()


def test_without_consumers_nothing_is_queued_and_no_sender_runs(engine):
    policy = notify.NotificationPolicy.from_settings(Settings())
    result = fed(engine, japanese("D1"), policy)
    assert result.persons_changed and queued(engine) == []
    quiet = notifier(engine, Settings()).start()
    assert not quiet.enabled and quiet._thread is None and quiet.run_once() == notify.Round()
    quiet.close()


# --- delivery ---------------------------------------------------------------------------------

def test_each_consumer_gets_its_domains_ids_in_valid_messages_and_each_is_audited(engine, consumers):
    x, y = consumers(), consumers()
    config = settings(f"{x.url}={DOMAIN},{HOSPITAL_A} device={CONSUMER_DEVICE}", f"{y.url}={HOSPITAL_A}")
    policy = notify.NotificationPolicy.from_settings(config)
    fed(engine, japanese("D1"), policy)                                   # y wants no DOMAIN id
    fed(engine, one_person("H1", HOSPITAL_A, pid("D1")), policy)          # H1 joins D1's person
    fed(engine, one_person("C1", CLINIC, pid("D1")), policy)              # neither wants CLINIC ids
    assert [(r.consumer, r.status, r.attempts) for r in queued(engine)] == [
        (x.url, "waiting", 0), (x.url, "waiting", 0), (y.url, "waiting", 0), (x.url, "waiting", 0),
        (y.url, "waiting", 0)]
    trail = Recording()
    sender = notifier(engine, config, trail)
    assert sender.run_once() == notify.Round(sent=5)
    assert queued(engine) == [] and state(engine) == {"waiting": 0, "retrying": 0, "parked": 0,
                                                      "oldest_waiting_seconds": 0.0}
    d1, h1 = pid("D1"), pid("H1", HOSPITAL_A)
    assert [d.ids for d in x.accepted()] == [[d1], [d1, h1], [d1, h1]]
    assert [d.ids for d in y.accepted()] == [[h1], [h1]]
    # Devices: ours as sender; the configured one, else the consumer's first domain, as receiver.
    assert {(d.sender, d.receiver) for d in x.accepted()} == {(MANAGER, CONSUMER_DEVICE)}
    assert {(d.sender, d.receiver) for d in y.accepted()} == {(MANAGER, HOSPITAL_A)}
    for delivery in x.accepted() + y.accepted():
        assert_valid(etree.fromstring(delivery.message))  # NE2008 and the PIXv3 Schematron
    assert sender.run_once() == notify.Round()  # nothing twice

    assert len(trail.records) == 5
    for key, ctx in trail.records:
        assert key == notify.ITI_46_SENT and ctx.action == UPDATE_NOTIFICATION_ACTION
        assert ctx.outcome == events.EventOutcome.SUCCESS and ctx.client_address == socket.gethostname()
    assert [(ctx.endpoint_url, ctx.patient_id) for _, ctx in trail.records] == [
        (x.url, d1.cx), (x.url, d1.cx), (y.url, h1.cx), (x.url, d1.cx), (y.url, h1.cx)]
    assert [ctx.query_id for _, ctx in trail.records] == [d.message_id for d in x.accepted()[:2]] + [
        y.accepted()[0].message_id, x.accepted()[2].message_id, y.accepted()[1].message_id]
    # The message the audit trail writes of it (ITI TF-2b 3.46.5.1.1): the PIX Manager is the
    # Source and the requestor, the consumer the Destination, the patient and the message id.
    message = etree.fromstring(events.build(*notify.ITI_46_SENT, trail.records[0][1], events.AuditSource("PIX-1")))
    event = message.find("EventIdentification")
    assert (event.get("EventActionCode"), event.find("EventID").get("csd-code"),
            event.find("EventTypeCode").get("csd-code")) == ("U", "110110", "ITI-46")
    source, destination = message.findall("ActiveParticipant")
    assert source.get("UserIsRequestor") == "true" and source.find("RoleIDCode").get("csd-code") == "110153"
    assert source.get("AlternativeUserID") == trail.records[0][1].process_id
    assert destination.get("UserID") == x.url and destination.find("RoleIDCode").get("csd-code") == "110152"
    (patient,) = message.findall("ParticipantObjectIdentification")
    assert patient.get("ParticipantObjectID") == d1.cx
    assert [base64.b64decode(d.get("value")).decode() for d in patient.iter("ParticipantObjectDetail")] == [
        x.accepted()[0].message_id]


def test_a_rolled_back_feed_sends_nothing(engine, consumers):
    x = consumers()
    config = settings(f"{x.url}={DOMAIN}")
    policy = notify.NotificationPolicy.from_settings(config)
    with pytest.raises(RuntimeError):
        with db.write_session(engine) as session:
            notify.enqueue(session, feed.add(session, japanese("D1"), IDENTITY), policy)
            assert notify.queue_state(session)["waiting"] == 1  # queued, in the feed's transaction
            raise RuntimeError("the feed failed after it was applied")
    assert queued(engine) == [] and notifier(engine, config).run_once() == notify.Round()
    assert x.deliveries == []


def test_what_a_merge_and_an_unlink_queue(engine, consumers):
    x = consumers()
    policy = notify.NotificationPolicy.from_settings(settings(f"{x.url}={DOMAIN},{HOSPITAL_A},{HOSPITAL_B}"))
    a, b = many(2, root=HOSPITAL_B)
    fed(engine, a, policy)
    fed(engine, dataclasses.replace(a, ids=[pid("A1", HOSPITAL_A)], other_ids=[a.ids[0]]), policy)
    fed(engine, b, policy)
    with db.write_session(engine) as session:  # b's id is retired into a's: one person is left
        merged = feed.merge(session, dataclasses.replace(a, other_ids=[]), b.ids[0], IDENTITY)
        assert notify.enqueue(session, merged, policy) == 1 and len(merged.persons_changed) == 2
    with db.write_session(engine) as session:  # the administrator takes A1 out again: two persons
        person = links.unlink(session, pid("A1", HOSPITAL_A), IDENTITY)
        assert notify.enqueue_persons(session, [person, merged.person_id], policy) == 2
    assert [r.ids for r in queued(engine)][-3:] == [
        f'[["{HOSPITAL_A}", "A1"], ["{HOSPITAL_B}", "{a.ids[0].extension}"]]',
        f'[["{HOSPITAL_B}", "{a.ids[0].extension}"]]', f'[["{HOSPITAL_A}", "A1"]]']


# --- failures, order, restarts ---------------------------------------------------------------

def test_a_consumer_that_fails_gets_each_notification_again_in_order(engine, consumers):
    # The first two requests are answered HTTP 500; the person's later notifications wait.
    x = consumers(answer=lambda n, d: 500 if n < 2 else "AA")
    config = settings(f"{x.url}={DOMAIN},{HOSPITAL_A},{CLINIC}")
    policy = notify.NotificationPolicy.from_settings(config)
    fed(engine, japanese("D1"), policy)
    fed(engine, one_person("H1", HOSPITAL_A, pid("D1")), policy)
    fed(engine, one_person("C1", CLINIC, pid("D1")), policy)
    sender = notifier(engine, config).start()
    try:
        wait_for(lambda: len(x.accepted()) == 3, what="three notifications accepted")
    finally:
        sender.close()
    d1, h1, c1 = pid("D1"), pid("H1", HOSPITAL_A), pid("C1", CLINIC)
    assert [d.ids for d in x.accepted()] == [[d1], [d1, h1], [d1, h1, c1]]
    assert [d.answer for d in x.deliveries] == ["500", "500", "AA", "AA", "AA"]
    # The same message each time: a consumer can tell a resend by its id.
    assert x.deliveries[0].message_id == x.deliveries[1].message_id == x.deliveries[2].message_id
    assert queued(engine) == []


def test_a_consumer_that_is_down_gets_them_when_it_is_back_after_a_restart(engine, database_url, consumers):
    port = free_port()
    url = f"http://127.0.0.1:{port}/pix-consumer"
    config = settings(f"{url}={DOMAIN},{HOSPITAL_A}")
    policy = notify.NotificationPolicy.from_settings(config)
    fed(engine, japanese("D1"), policy)
    fed(engine, one_person("H1", HOSPITAL_A, pid("D1")), policy)
    first = notifier(engine, config).start()
    try:
        wait_for(lambda: any(r.attempts for r in queued(engine)), what="an attempt at the consumer that is down")
    finally:
        first.close()
    tried = queued(engine)
    assert len(tried) == 2 and "cannot be reached" in tried[0].last_error
    assert state(engine)["retrying"] == 1 and state(engine)["waiting"] == 2

    x = consumers(port=port)  # the consumer is back; the PIX Manager starts again (a new process)
    again = db.make_engine(database_url)
    second = notifier(again, config).start()
    try:
        wait_for(lambda: len(x.accepted()) == 2, what="both notifications accepted")
    finally:
        second.close()
        again.dispose()
    assert [d.ids for d in x.accepted()] == [[pid("D1")], [pid("D1"), pid("H1", HOSPITAL_A)]]
    assert len(x.deliveries) == 2 and queued(engine) == []


def test_a_refusal_is_parked_with_its_reason_and_holds_nothing_back(engine, consumers):
    # The consumer refuses the first notification (AE, then AR for the one sent again).
    x = consumers(answer=lambda n, d: {0: "AE", 3: "AR"}.get(n, "AA"))
    config = settings(f"{x.url}={DOMAIN},{HOSPITAL_A},{CLINIC}")
    policy = notify.NotificationPolicy.from_settings(config)
    fed(engine, japanese("D1"), policy)
    fed(engine, one_person("H1", HOSPITAL_A, pid("D1")), policy)
    trail = Recording()
    sender = notifier(engine, config, trail)
    assert sender.run_once() == notify.Round(sent=1, refused=1)
    assert [d.answer for d in x.deliveries] == ["AE", "AA"]  # the later one was not held back
    assert state(engine)["parked"] == 1 and state(engine)["waiting"] == 0
    with db.make_sessionmaker(engine)() as session:
        (refused,) = notify.parked(session)
    assert refused.ids == [pid("D1")] and refused.attempts == 1 and refused.consumer == x.url
    assert refused.reason.startswith("AE: E 204: unknown patient D1^^^&")
    assert [(ctx.outcome, ctx.outcome_description) for _, ctx in trail.records] == [
        (events.EventOutcome.SERIOUS_FAILURE, refused.reason), (events.EventOutcome.SUCCESS, "")]
    assert sender.run_once() == notify.Round() and len(x.deliveries) == 2  # not retried

    fed(engine, one_person("C1", CLINIC, pid("D1")), policy)  # a later change is sent
    assert sender.run_once() == notify.Round(sent=1)
    with db.write_session(engine) as session:  # sent again: the person as it is now
        assert notify.requeue_parked(session, policy) == 1
    assert sender.run_once() == notify.Round(refused=1)
    assert x.deliveries[-1].ids == [pid("D1"), pid("H1", HOSPITAL_A), pid("C1", CLINIC)]
    with db.make_sessionmaker(engine)() as session:
        assert notify.parked(session)[0].reason.startswith("AR: ")
    with db.write_session(engine) as session:
        assert notify.discard_parked(session) == 1
    assert queued(engine) == []


def test_two_senders_on_one_database_never_send_one_row_twice(engine, database_url, consumers):
    x = consumers()
    x.hold = threading.Event()
    config = settings(f"{x.url}={DOMAIN},{HOSPITAL_A}")
    policy = notify.NotificationPolicy.from_settings(config)
    people = many(5, root=DOMAIN)
    for i, record in enumerate(people):
        fed(engine, record, policy)
        fed(engine, dataclasses.replace(record, ids=[pid(f"H{i}", HOSPITAL_A)], other_ids=[record.ids[0]]), policy)
    rows = queued(engine)
    assert len(rows) == 10
    first = notifier(engine, config).start()
    other_engine = db.make_engine(database_url)  # another worker, or another host
    second = notifier(other_engine, config)
    try:
        wait_for(x.entered.is_set, what="the first sender's first request")  # held at the consumer
        held = x.deliveries[0].message_id
        done = second.run_once()
        if engine.dialect.name == "postgresql":
            # The second takes every other person; not the held row, nor that person's next one.
            assert done == notify.Round(sent=8)
        else:
            assert done == notify.Round()  # SQLite: one process delivers; the other waits its turn
        x.hold.set()
        wait_for(lambda: len(x.accepted()) == 10, what="all ten accepted")
    finally:
        first.close()
        second.close()
        other_engine.dispose()
    ids = [d.message_id for d in x.deliveries]
    assert sorted(ids) == sorted(r.message_id for r in rows) and ids.count(held) == 1
    for row_a, row_b in zip(rows[::2], rows[1::2]):  # each person's two, in order
        assert ids.index(row_a.message_id) < ids.index(row_b.message_id)
    assert queued(engine) == []


def test_a_clean_stop_settles_the_notification_in_hand(engine, database_url, consumers):
    x = consumers()
    x.hold = threading.Event()
    config = settings(f"{x.url}={DOMAIN}")
    policy = notify.NotificationPolicy.from_settings(config)
    fed(engine, japanese("D1"), policy)
    fed(engine, many(1, root=DOMAIN)[0], policy)
    sender = notifier(engine, config).start()
    wait_for(x.entered.is_set, what="a request in hand")
    stopping = threading.Thread(target=sender.close, kwargs={"timeout": 20})
    stopping.start()
    wait_for(lambda: sender._stopping.is_set(), what="the stop")
    x.hold.set()
    stopping.join(30)
    assert not stopping.is_alive()
    assert len(x.deliveries) == 1 and len(queued(engine)) == 1  # the one in hand settled; the other waits
    again = db.make_engine(database_url)
    try:
        assert notifier(again, config).run_once() == notify.Round(sent=1)
    finally:
        again.dispose()
    assert len(x.deliveries) == 2 and len({d.message_id for d in x.deliveries}) == 2


def test_rows_of_a_consumer_no_longer_configured_wait(engine, consumers):
    x, y = consumers(), consumers()
    both = settings(f"{x.url}={DOMAIN}", f"{y.url}={DOMAIN}")
    fed(engine, japanese("D1"), notify.NotificationPolicy.from_settings(both))
    assert notifier(engine, settings(f"{x.url}={DOMAIN}")).run_once() == notify.Round(sent=1)
    assert [r.consumer for r in queued(engine)] == [y.url] and y.deliveries == []
    with db.make_sessionmaker(engine)() as session:
        assert notify.queue_state(session, dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=60))[
            "oldest_waiting_seconds"] >= 59
        assert session.scalar(select(func.count()).select_from(PixNotificationRow)) == 1


# --- served ------------------------------------------------------------------------------------

def test_xds_serve_notifies_the_consumers_of_the_feeds_it_takes(database_url, tmp_path, consumers):
    """A real `xds serve` (two workers: two senders, in two processes) fed over HTTP (ITI-44)."""
    x = consumers()
    env = dict(os.environ, XDS_DATA_DIR=str(tmp_path / "var"), XDS_DATABASE_URL=database_url,
               XDS_AFFINITY_DOMAIN=DOMAIN, XDS_HL7V3_DEVICE_ID=MANAGER,
               XDS_PIX_CONSUMERS=f"{x.url}={DOMAIN},{HOSPITAL_A} device={CONSUMER_DEVICE}",
               XDS_PIX_NOTIFY_RETRY_MIN="0.05", XDS_PIX_NOTIFY_RETRY_MAX="0.2")
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    process, base = serve(env, tmp_path / "server.log")
    try:
        for record in (japanese("D1"), one_person("H1", HOSPITAL_A, pid("D1"))):
            answer = post_soap(base + "/pix", record_added(record, sender=CONSUMER_DEVICE, receiver=MANAGER),
                               INTERACTIONS["PRPA_IN201301UV02"].action)
            assert ack.read_accept_acknowledgement(answer).acknowledgement.type_code == "AA"
        wait_for(lambda: len(x.accepted()) == 2, what="two notifications from the server")
        # /health shows the queue: both settled (a settled row leaves the waiting count)
        wait_for(lambda: json.loads(urllib.request.urlopen(base + "/health").read())["pix_notifications"]
                 == {"waiting": 0, "retrying": 0, "parked": 0, "oldest_waiting_seconds": 0.0},
                 what="/health to show no notification waiting")
    finally:
        process.terminate()
        process.wait(10)
    assert [d.ids for d in x.accepted()] == [[pid("D1")], [pid("D1"), pid("H1", HOSPITAL_A)]]
    assert len(x.deliveries) == 2 and {(d.sender, d.receiver) for d in x.deliveries} == {(MANAGER, CONSUMER_DEVICE)}
