"""PIX Update Notification HL7 V3 (ITI-46, ITI TF-2b 3.46) as the PIX Manager sends it: a
durable queue in the database, filled in the feed's transaction, and a sender in each worker
that empties it.

    policy = NotificationPolicy.from_settings(settings)     pix_consumers, hl7v3_device_id ...
    enqueue(session, feed_result, policy)                   in the feed's write transaction
    enqueue_persons(session, person_ids, policy)            the same for an administrator's
                                                            link or unlink
    notifier = UpdateNotifier.from_settings(settings, engine, trail).start()   each worker
    notifier.wake()                                         after a commit that queued some
    notifier.run_once()                                     deliver what is due now, once
    notifier.close()                                        as the worker exits
    queue_state(session), parked(session), requeue_parked(session, policy), discard_parked(session)

What the standard asks. The PIX Manager notifies a PIX Consumer "when there is a change in a set
of cross-referenced patient identifiers for any of the patient identifiers belonging to Patient
Identifier Domains of interest" to it, the domains being configured on the PIX Manager
(3.46.4.1.1): here pix_consumers. The message is the Patient Registry Record Revised,
PRPA_IN201302UV02, carrying only the person's ids in the consumer's domains of interest
(3.46.4.1.2; written by xds.hl7v3.feed.update_notification: the first domain's ids in
Patient.id, each other domain's in an asOtherIDs, Person.name nullFlavor NA), answered by an
accept acknowledgement MCCI_IN000002UV01; SOAP 1.2 with WS-Addressing (Appendix V), wsa:Action
urn:hl7-org:v3:PRPA_IN201302UV02. Each one sent is audited (3.46.5).

Where the standard is silent, decided here:

* When. A person whose ids changed (FeedResult.persons_changed: an id joined or left it, a merge)
  is notified to every consumer with at least one of its ids in the consumer's domains; a
  person left with none there (or removed by a merge, its ids now the survivor's) is not. A
  change among ids the consumer does not want still sends it the person's (unchanged) ids: the
  trigger is a change of the person's cross-reference. "Two or more of the domains managed" is
  read as the configuration (a consumer names the domains it wants), not as a bound on what
  one message carries: a person left with a single id there is notified, or the consumer would
  never learn that an unlink split it.
* What. The row holds the message's ids as they were when the feed committed, not the person
  as it is when the row is sent: each notification tells the change it stands for, and a
  consumer that was down gets the changes it missed one after the other.
* Fan-out. One row per person per consumer, at enqueue: each consumer moves on its own (one
  that is down holds no other back), a row is exactly one message, and it goes when sent.
* Failures. A consumer that cannot be reached, answers an HTTP error or a SOAP fault, or
  answers something that is no accept acknowledgement, gets the notification again, forever,
  after a pause doubling from pix_notify_retry_min to pix_notify_retry_max (the row's
  next_attempt_at; the sender also pauses that consumer, so a consumer that is down costs one
  attempt per pause, not one per row). An acknowledgement AE or AR (CE, CR) is a refusal of
  this message, which the same bytes would get again: the row is parked with the
  acknowledgementDetails as its reason, logged, counted by queue_state (for /health), listed by
  parked(); requeue_parked sends the person's ids as they are now (the old row's ids may be
  older than notifications sent since), discard_parked drops it. A parked row does not hold
  the person's later notifications back: each carries the whole list.
* Audit. Each notification a consumer answered (accepted or refused) is recorded as ITI-46 by
  the Patient Identifier Cross-reference Manager; an attempt that got no answer is logged, not
  recorded (a consumer down for an hour would otherwise fill the Audit Record Repository with
  one record per retry).

Theory of operation.

Order. A person's notifications to a consumer go in the order of their rows' ids, and the ids
follow the order the feeds committed: feeds that change one person are serialised on that
person's row (xds.identity.store: locked, or created, by every feed that changes it), and
enqueue runs after, in the same transaction. A sender takes a row only when no earlier row of
the same consumer and person is waiting (the NOT EXISTS in _next_due), whether that one is
being sent by another sender, waiting out its pause, or in no one's hands.

Claiming. On PostgreSQL a sender takes the next due row with SELECT ... FOR UPDATE SKIP LOCKED
and keeps the transaction, and so the lock, open while it sends: other workers and hosts skip
the row (and, by the rule above, the person's later rows) and take others; once the consumer
answered, the row is deleted (or parked, or given its next attempt) and the transaction
commits. A sender that dies mid-send loses its connection and with it the lock: the row is sent
again by whoever comes next (at least once; a consumer tells a resend by its unchanged message
id). On SQLite a transaction held across an HTTP exchange would hold the database's one write
lock and stop every feed; so one process at a time delivers there, holding an exclusive lock
on a file beside the database (as the audit trail's deliverer does), reading the next row,
sending it, then settling it in a short write transaction.

Stopping. close() lets the sender finish the notification in hand (it is settled before the
thread ends), so nothing is sent twice after a clean stop; the rest waits in the table for the
next start, on this host or any other.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import re
import socket
import ssl
import threading
import urllib.error
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lxml import etree
from sqlalchemy import Engine, case, delete, exists, func, insert, select, update
from sqlalchemy.orm import Session, aliased

from xds.audit import events
from xds.audit.trail import NO_AUDIT, AuditTrail
from xds.client import post_soap
from xds.hl7v3.ack import read_accept_acknowledgement
from xds.hl7v3.feed import update_notification
from xds.hl7v3.ns import UPDATE_NOTIFICATION_ACTION, is_oid
from xds.identity import store
from xds.identity.feed import FeedResult
from xds.identity.policy import utc_now
from xds.model.person import Identifier
from xds.security import tls
from xds.store import db
from xds.store.tables import PixNotificationRow

log = logging.getLogger("xds.identity.notify")

N = PixNotificationRow
WAITING, PARKED = "waiting", "parked"
#: The audit record of a notification sent (a key of xds.audit.events.EVENTS).
ITI_46_SENT = ("ITI-46", "PatientIdentifierCrossReferenceManager")
#: Acknowledgement typeCodes (HL7 AcknowledgementType): accepted, and refused (error, reject).
ACCEPTING = frozenset({"AA", "CA"})
REFUSING = frozenset({"AE", "AR", "CE", "CR"})
#: How often an idle sender looks for rows other processes queued (seconds).
POLL = 1.0
#: The longest reason kept with a row (its column's size).
REASON_LENGTH = 2048


# --- configuration ------------------------------------------------------------------------

@dataclass(frozen=True)
class PixConsumer:
    """A PIX Consumer: where it takes notifications, the domains (assigning authority OIDs) it
    wants ids of, in the order it gave them, and its device id (the messages' receiver)."""

    url: str
    domains: tuple[str, ...]
    device: str

    def select(self, ids: Sequence[Identifier]) -> list[Identifier]:
        """The ids of `ids` in this consumer's domains: its first domain's first."""
        return [i for domain in self.domains for i in ids if i.root == domain]


_DEVICE = re.compile(r"(.*?)(?:\s+device=(\S*))?")


def parse_consumers(text: str) -> tuple[PixConsumer, ...]:
    """The setting pix_consumers ("URL=OID,OID[ device=OID];..."); ValueError saying what is
    wrong with an entry."""
    consumers: dict[str, PixConsumer] = {}
    for entry in (e.strip() for e in text.split(";")):
        if not entry:
            continue
        body, device = _DEVICE.fullmatch(entry).groups()
        url, equals, listed = body.strip().rpartition("=")
        domains = tuple(dict.fromkeys(d.strip() for d in listed.split(",") if d.strip()))
        if not equals or not url or not domains:
            raise ValueError(f"pix_consumers: {entry!r} names no domains: write URL=OID[,OID...]")
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ValueError(f"pix_consumers: {url!r} is not an http:// or https:// URL")
        for value in (*domains, *([device] if device is not None else [])):
            if not is_oid(value):
                raise ValueError(f"pix_consumers: {value!r} (for {url}) is not an OID")
        if url in consumers:
            raise ValueError(f"pix_consumers: {url} is named twice")
        consumers[url] = PixConsumer(url, domains, device or domains[0])
    return tuple(consumers.values())


@dataclass(frozen=True)
class NotificationPolicy:
    """What the queue and its senders are configured with (see the settings of the same names)."""

    consumers: tuple[PixConsumer, ...] = ()
    #: This PIX Manager's device id: the messages' sender (hl7v3_device_id).
    device: str = ""
    retry_min: float = 1.0
    retry_max: float = 300.0
    timeout: float = 30.0
    clock: Callable[[], dt.datetime] = utc_now

    @classmethod
    def from_settings(cls, settings, clock: Callable[[], dt.datetime] = utc_now) -> "NotificationPolicy":
        consumers = parse_consumers(settings.pix_consumers)
        device = settings.hl7v3_device_id.strip()
        if consumers and not is_oid(device):
            raise ValueError("pix_consumers needs hl7v3_device_id: this PIX Manager's device id (an OID), "
                             "the sender of its update notifications")
        if not 0 < settings.pix_notify_retry_min <= settings.pix_notify_retry_max:
            raise ValueError("pix_notify_retry_min must be above 0 and at most pix_notify_retry_max")
        if settings.pix_notify_timeout <= 0:
            raise ValueError("pix_notify_timeout must be above 0")
        return cls(consumers, device, settings.pix_notify_retry_min, settings.pix_notify_retry_max,
                   settings.pix_notify_timeout, clock)

    def consumer(self, url: str) -> PixConsumer | None:
        return next((c for c in self.consumers if c.url == url), None)

    def pause(self, failures: int) -> float:
        """Seconds before the next attempt after `failures` failed ones in a row."""
        return min(self.retry_max, self.retry_min * 2 ** max(failures - 1, 0))


# --- the queue ----------------------------------------------------------------------------

def enqueue(session: Session, result: FeedResult, policy: NotificationPolicy) -> int:
    """Queue the notifications of a feed (ITI-44) in its own write transaction: committed with
    it, rolled back with it. Returns the number of rows queued."""
    return enqueue_persons(session, result.persons_changed, policy)


def enqueue_persons(session: Session, persons: Iterable[int], policy: NotificationPolicy, *,
                    consumers: Sequence[PixConsumer] | None = None) -> int:
    """Queue a notification of each of `persons` (as they are in this transaction) to each
    consumer (all configured ones, or `consumers`) with ids of it in its domains."""
    targets = policy.consumers if consumers is None else consumers
    if not targets:
        return 0
    now = policy.clock()
    rows = []
    for person in sorted(set(persons)):
        ids = [store.identifier(m) for m in store.members(session, person)]
        for consumer in targets:
            wanted = consumer.select(ids)
            if wanted:
                rows.append({"consumer": consumer.url, "person_id": person, "ids": _ids_json(wanted),
                             "message_id": str(uuid.uuid4()), "created_at": now, "status": WAITING,
                             "attempts": 0, "next_attempt_at": now, "last_error": None})
    if rows:
        session.execute(insert(N), rows)
    return len(rows)


def notification_message(row: PixNotificationRow, policy: NotificationPolicy) -> etree._Element:
    """The PRPA_IN201302UV02 of a row: the same message (id, creation time, ids) every time."""
    consumer = policy.consumer(row.consumer)
    receiver = consumer.device if consumer is not None else ""
    return update_notification(_ids_from(row.ids), sender=policy.device, receiver=receiver,
                               message_id=row.message_id, now=_utc(row.created_at))


def queue_state(session: Session, now: dt.datetime | None = None) -> dict:
    """For /health: notifications waiting (those of them whose consumer failed at least once:
    retrying), parked ones, and the age of the oldest waiting one."""
    now = now or utc_now()
    waiting, retrying, oldest = session.execute(
        select(func.count(), func.coalesce(func.sum(case((N.attempts > 0, 1), else_=0)), 0),
               func.min(N.created_at)).where(N.status == WAITING)).one()
    parked_count = session.scalar(select(func.count()).where(N.status == PARKED))
    age = max((now - _utc(oldest)).total_seconds(), 0.0) if oldest is not None else 0.0
    return {"waiting": waiting, "retrying": int(retrying), "parked": parked_count,
            "oldest_waiting_seconds": round(age, 1)}


@dataclass(frozen=True)
class ParkedNotification:
    id: int
    consumer: str
    person_id: int
    ids: list[Identifier]
    created_at: dt.datetime
    attempts: int
    #: The consumer's acknowledgement: its typeCode and details.
    reason: str


def parked(session: Session) -> list[ParkedNotification]:
    """The notifications consumers refused, oldest first."""
    rows = session.scalars(select(N).where(N.status == PARKED).order_by(N.id))
    return [ParkedNotification(r.id, r.consumer, r.person_id, _ids_from(r.ids), _utc(r.created_at), r.attempts,
                               r.last_error or "") for r in rows]


def requeue_parked(session: Session, policy: NotificationPolicy, ids: Iterable[int] | None = None) -> int:
    """Send parked notifications again (all, or those of the row ids `ids`), each as its
    person's ids are now: a new row per person and consumer, after everything queued before.
    Rows of consumers no longer configured stay parked. Returns the number of rows queued."""
    statement = select(N.id, N.consumer, N.person_id).where(N.status == PARKED)
    if ids is not None:
        statement = statement.where(N.id.in_(list(ids)))
    queued = 0
    by_consumer: dict[str, list[tuple[int, int]]] = {}
    for row_id, url, person in session.execute(statement):
        by_consumer.setdefault(url, []).append((row_id, person))
    for url, rows in by_consumer.items():
        consumer = policy.consumer(url)
        if consumer is None:
            continue
        session.execute(delete(N).where(N.id.in_([row_id for row_id, _ in rows])))
        queued += enqueue_persons(session, [person for _, person in rows], policy, consumers=[consumer])
    return queued


def discard_parked(session: Session, ids: Iterable[int] | None = None) -> int:
    """Drop parked notifications (all, or those of the row ids `ids`); returns how many."""
    statement = delete(N).where(N.status == PARKED)
    if ids is not None:
        statement = statement.where(N.id.in_(list(ids)))
    return session.execute(statement).rowcount


def _next_due(session: Session, urls: Sequence[str], now: dt.datetime, *, lock: bool) -> PixNotificationRow | None:
    """The oldest row due now for one of `urls` that no earlier waiting row of its consumer and
    person holds back (locked, skipping rows other senders hold, when `lock`)."""
    earlier = aliased(N)
    statement = (select(N).where(
        N.status == WAITING, N.consumer.in_(urls), N.next_attempt_at <= now,
        ~exists().where(earlier.consumer == N.consumer, earlier.person_id == N.person_id,
                        earlier.status == WAITING, earlier.id < N.id))
        .order_by(N.id).limit(1))
    if lock:
        statement = statement.with_for_update(skip_locked=True, of=N)
    return session.scalars(statement).first()


# --- sending ------------------------------------------------------------------------------

SENT, REFUSED, FAILED = "sent", "refused", "failed"


@dataclass(frozen=True)
class Attempt:
    """What became of one attempt: sent (accepted), refused (parked) or failed (retried)."""

    outcome: str
    reason: str = ""


@dataclass
class Round:
    """What one run_once did."""

    sent: int = 0
    refused: int = 0
    failed: int = 0

    def add(self, attempt: Attempt) -> None:
        setattr(self, attempt.outcome, getattr(self, attempt.outcome) + 1)


class UpdateNotifier:
    """The sender of one worker (see the module's text): a background thread, or run_once()."""

    def __init__(self, engine: Engine, policy: NotificationPolicy, *, trail: AuditTrail = NO_AUDIT,
                 contexts: dict[str, ssl.SSLContext | None] | None = None):
        self.engine = engine
        self.policy = policy
        self.trail = trail
        self._contexts = contexts or {}
        self._postgres = engine.dialect.name == "postgresql"
        self._host = socket.gethostname()
        self._stopping = threading.Event()
        self._wake = threading.Condition()
        self._woken = False
        self._round = threading.Lock()  # one round at a time in this process (thread and run_once)
        self._guard = threading.Lock()  # the delivery lock file
        self._lock_file = None
        self._thread: threading.Thread | None = None
        #: Consumers this sender leaves alone until then, and their failures in a row.
        self._paused: dict[str, dt.datetime] = {}
        self._failures: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings, engine: Engine, trail: AuditTrail = NO_AUDIT,
                      clock: Callable[[], dt.datetime] = utc_now) -> "UpdateNotifier":
        """For xds.config.Settings: mutual TLS with https consumers as with every peer."""
        policy = NotificationPolicy.from_settings(settings, clock)
        contexts = {c.url: tls.context_for(c.url, settings) for c in policy.consumers}
        return cls(engine, policy, trail=trail, contexts=contexts)

    @property
    def enabled(self) -> bool:
        return bool(self.policy.consumers)

    # -- running ------------------------------------------------------------------------------

    def start(self) -> "UpdateNotifier":
        """Deliver in the background (a daemon thread); nothing when no consumer is configured."""
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pix-notify", daemon=True)
            self._thread.start()
        return self

    def wake(self) -> None:
        """Look at the queue now rather than at the next poll (after a commit that queued rows)."""
        with self._wake:
            self._woken = True
            self._wake.notify_all()

    def run_once(self) -> Round:
        """Deliver everything due now, each consumer until it fails once; returns what was done.
        On SQLite nothing, when another process is the one delivering."""
        if not self.enabled or not self._try_lock():
            return Round()
        with self._round:
            return self._deliver_due()

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the notification in hand (it is settled first); the rest stays queued."""
        self._stopping.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                # Still waiting for a consumer: keep the delivery lock (SQLite) until the process
                # ends, or another process could send the notification in hand again.
                log.warning("ITI-46 sender still waiting for a consumer after %.1f s; left to the process's end",
                            timeout)
                return
            self._thread = None
        with self._guard:
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    def _run(self) -> None:
        while not self._stopping.is_set() and not self._try_lock():
            self._stopping.wait(POLL)  # another process delivers (SQLite); take over if it ends
        while not self._stopping.is_set():
            idle = POLL
            try:
                with self._round:
                    self._deliver_due()
                    idle = self._idle()
            except Exception:
                log.exception("ITI-46 sender: a round failed; the queue is looked at again in %.1f s", POLL)
            with self._wake:
                if not self._woken and not self._stopping.is_set():
                    self._wake.wait(idle)
                self._woken = False

    def _idle(self) -> float:
        """Seconds to wait: the next poll, or sooner when a paused consumer's pause ends."""
        now = self.policy.clock()
        ends = [(until - now).total_seconds() for until in self._paused.values() if until > now]
        return max(min([POLL, *ends]), 0.01)

    def _try_lock(self) -> bool:
        """Whether this process may deliver: always on PostgreSQL (rows are locked one by one);
        on SQLite when it holds the delivery lock file (kept until close)."""
        with self._guard:
            if self._postgres or self._lock_file is not None:
                return True
            path = _lock_path(self.engine)
            if path is None:  # an in-memory database: this process is its only user
                return True
            lock_file = open(path, "a+b")
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock_file.close()
                return False
            self._lock_file = lock_file
            return True

    # -- one round ----------------------------------------------------------------------------

    def _deliver_due(self) -> Round:
        done = Round()
        failed: set[str] = set()  # a consumer that failed is not tried again in this round
        while not self._stopping.is_set():
            now = self.policy.clock()
            urls = [c.url for c in self.policy.consumers
                    if c.url not in failed and self._paused.get(c.url, now) <= now]
            step = self._deliver_one(urls) if urls else None
            if step is None:
                return done
            url, attempt = step
            done.add(attempt)
            if attempt.outcome == FAILED:
                failed.add(url)
        return done

    def _deliver_one(self, urls: list[str]) -> tuple[str, Attempt] | None:
        if self._postgres:
            with db.write_session(self.engine) as session:
                row = _next_due(session, urls, self.policy.clock(), lock=True)
                if row is None:
                    return None
                attempt = self._attempt(row)  # the row stays locked meanwhile
                self._settle(session, row, attempt)
            return row.consumer, attempt
        with db.make_sessionmaker(self.engine)() as session:
            row = _next_due(session, urls, self.policy.clock(), lock=False)
        if row is None:
            return None
        attempt = self._attempt(row)
        with db.write_session(self.engine) as session:
            self._settle(session, row, attempt)
        return row.consumer, attempt

    def _attempt(self, row: PixNotificationRow) -> Attempt:
        """Send the row's message and read the consumer's answer; audit it when there is one."""
        url = row.consumer
        try:
            message = notification_message(row, self.policy)
        except Exception as exc:  # a row this release cannot write: retried (and logged) like a failure
            log.exception("ITI-46: the message of row %d cannot be written", row.id)
            return Attempt(FAILED, f"the message cannot be written: {exc}")
        try:
            body = post_soap(url, message, UPDATE_NOTIFICATION_ACTION, timeout=self.policy.timeout,
                             context=self._contexts.get(url))
        except urllib.error.URLError as exc:
            return Attempt(FAILED, f"{url} cannot be reached: {exc.reason}")
        except Exception as exc:  # HTTP errors, SOAP faults, timeouts, unreadable answers
            return Attempt(FAILED, str(exc) or type(exc).__name__)
        answer = read_accept_acknowledgement(body)
        ack = answer.acknowledgement
        if ack is None or not (ack.type_code in ACCEPTING or ack.type_code in REFUSING):
            what = etree.QName(body).localname if isinstance(body.tag, str) else "?"
            return Attempt(FAILED, f"{url} answered {what} without an acknowledgement typeCode this "
                                   f"sender knows ({ack.type_code if ack else 'none'})")
        if ack.target_message_id is not None and ack.target_message_id.root != row.message_id:
            log.warning("ITI-46: %s acknowledged message %s for message %s", url, ack.target_message_id.root,
                        row.message_id)
        if ack.type_code in ACCEPTING:
            attempt = Attempt(SENT)
        else:
            details = "; ".join(str(d) for d in ack.details) or "no acknowledgementDetail given"
            attempt = Attempt(REFUSED, f"{ack.type_code}: {details}")
        self._record(row, attempt)
        return attempt

    def _settle(self, session: Session, row: PixNotificationRow, attempt: Attempt) -> None:
        """The row after its attempt: gone, parked, or due again after a pause."""
        url, now = row.consumer, self.policy.clock()
        if attempt.outcome == FAILED:
            failures = self._failures.get(url, 0) + 1
            self._failures[url] = failures
            pause = self.policy.pause(max(failures, row.attempts + 1))
            self._paused[url] = now + dt.timedelta(seconds=pause)
            session.execute(update(N).where(N.id == row.id).values(
                attempts=N.attempts + 1, next_attempt_at=now + dt.timedelta(seconds=pause),
                last_error=attempt.reason[:REASON_LENGTH]))
            log.warning("ITI-46 to %s (person %d, message %s) failed, attempt %d; again in %.1f s: %s",
                        url, row.person_id, row.message_id, row.attempts + 1, pause, attempt.reason)
            return
        if self._failures.pop(url, 0):
            # The consumer is back: what waits out a pause it caused may go now.
            self._paused.pop(url, None)
            session.execute(update(N).where(N.consumer == url, N.status == WAITING, N.next_attempt_at > now)
                            .values(next_attempt_at=now))
        if attempt.outcome == SENT:
            session.execute(delete(N).where(N.id == row.id))
            return
        session.execute(update(N).where(N.id == row.id).values(
            status=PARKED, attempts=N.attempts + 1, last_error=attempt.reason[:REASON_LENGTH]))
        log.error("ITI-46 to %s (person %d, message %s) refused, parked (xds.identity.notify.requeue_parked "
                  "sends the person again): %s", url, row.person_id, row.message_id, attempt.reason)

    def _record(self, row: PixNotificationRow, attempt: Attempt) -> None:
        if not self.trail.enabled:
            return
        try:
            ids = _ids_from(row.ids)
            ctx = events.TransactionContext(
                action=UPDATE_NOTIFICATION_ACTION, client_address=self._host, endpoint_url=row.consumer,
                outcome=events.EventOutcome.SUCCESS if attempt.outcome == SENT else events.EventOutcome.SERIOUS_FAILURE,
                outcome_description=attempt.reason, patient_id=ids[0].cx if ids else "",
                # the HL7 message id, written as the patient's MSH-10 detail (xds.audit.events)
                query_id=row.message_id, process_id=str(os.getpid()))
            self.trail.record_transaction(ITI_46_SENT, ctx)
        except Exception:
            log.exception("AUDIT RECORD LOST for the ITI-46 sent to %s", row.consumer)


# --- helpers --------------------------------------------------------------------------------

def _ids_json(ids: Sequence[Identifier]) -> str:
    return json.dumps([[i.root, i.extension] for i in ids], ensure_ascii=False)


def _ids_from(text: str) -> list[Identifier]:
    return [Identifier(root, extension) for root, extension in json.loads(text)]


def _utc(moment: dt.datetime) -> dt.datetime:
    """A time read back: SQLite keeps no zone (every time here is written in UTC)."""
    return moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment


def _lock_path(engine: Engine) -> Path | None:
    """The delivery lock file of an SQLite database: beside it (None for an in-memory one)."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database)
    return path.with_name(path.name + ".pix-notify.lock")
