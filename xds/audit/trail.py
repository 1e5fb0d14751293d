"""The audit trail: where the actors put their audit records (ATNA, ITI-20).

    trail = AuditTrail.from_settings(settings)
    trail.start()                                            # background delivery
    trail.record_transaction(events.iti18_registry, ctx)     # a transaction's record
    trail.record(events.application_start(...))              # a message written already

A transaction's record costs it one append to the durable spool (xds.audit.spool) of the
values the message is written from (events.context_values); the sender writes the message and
its RFC 5424 syslog header when it sends it, so the transaction waits neither for a network nor
for the XML (writing an audit message costs more than the stored query it records), nor, by
default, for the disk (a background thread fdatasyncs the spool every
audit_spool_fsync_interval seconds). Node events (start, stop, alerts) are rare and spooled as
messages. Nothing here raises: auditing must not break a transaction; a record that cannot be
kept, or whose message cannot be written, is logged as an error (AUDIT RECORD LOST).

Delivery. A server has several worker processes, each with its own trail on the same spool
folder; one process at a time delivers. Each trail's deliverer thread waits for an exclusive lock
on the spool's lock file and, once it has it, keeps it for the life of its process, so when the
delivering worker ends another takes over where the cursors say. It runs one sender thread per
destination: each reads the records after its cursor, in order, and moves the cursor when they
are sent; a destination that fails is retried with a growing pause (up to RETRY_MAX seconds),
its records waiting in the spool, and the others are not held up. A sender that wakes for a
record waits BATCH_WAIT first, so that what comes in meanwhile goes in the same batch and
moves the cursor once. Each record goes once to each destination, in order, as long as the
processes stop cleanly (close() lets a sender finish the batch in hand; `xds serve` calls it as
a worker exits); a process killed between sending a batch and moving the cursor sends that
batch again when delivery resumes: at least once, never lost.

With no destination configured the trail is off (NO_AUDIT): development only.
"""

from __future__ import annotations

import fcntl
import logging
import marshal
import os
import socket
import threading
import time
from collections.abc import Callable

from xds.audit import events, syslog
from xds.audit.spool import Spool
from xds.audit.transport import SendError, connect, parse_destinations
from xds.config import Settings

log = logging.getLogger("xds.audit")

APP_NAME = "xds-affinity"
RETRY_MIN, RETRY_MAX = 0.5, 30.0
POLL = 0.5  # how often an idle sender looks for records written by other processes
BATCH_WAIT = 0.2  # seconds a caught-up sender lets records gather (fewer, larger batches)
BATCH = 1000  # records read and sent at once, at most
# A spool entry of a transaction's values starts with _VALUES (a syslog message starts "<"),
# then the version of their layout (events.context_values): a release that does not know a
# layout says so rather than send it.
_VALUES, _LAYOUT = b"\x00", 1


class AuditTrail:
    def __init__(self, settings: Settings, destinations: list[str]):
        self.settings = settings
        self.destinations = destinations
        self.hostname = socket.gethostname()
        self.source = events.AuditSource(
            audit_source_id=settings.audit_source_id or self.hostname,
            enterprise_site_id=settings.audit_enterprise_site_id)
        self.spool = (Spool(settings.audit_spool, destinations, settings.audit_spool_max_bytes,
                            settings.audit_spool_fsync_interval) if destinations else None)
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock_file = None

    @classmethod
    def from_settings(cls, settings: Settings) -> "AuditTrail":
        destinations = parse_destinations(settings.audit_destinations)
        return cls(settings, destinations) if destinations else NO_AUDIT

    @property
    def enabled(self) -> bool:
        return self.spool is not None

    # -- recording ----------------------------------------------------------------------------------

    def record(self, message: bytes) -> None:
        """Keep `message` (an AuditMessage, as xds.audit.events writes it) for delivery to
        every destination."""
        if self.spool is None:
            return
        try:
            success = message.find(b'EventOutcomeIndicator="0"', 0, 1024) >= 0
            self._keep(syslog.format_message(
                message, hostname=self.hostname, app_name=APP_NAME, procid=str(os.getpid()),
                severity=syslog.SEVERITY_NOTICE if success else syslog.SEVERITY_WARNING))
        except Exception:
            log.exception("AUDIT RECORD LOST: it could not be written to the spool %s", self.spool.directory)

    def record_transaction(self, build: Callable[[events.TransactionContext, events.AuditSource], bytes],
                           ctx: events.TransactionContext) -> None:
        """Keep the record `build` (one of events.TRANSACTION_BUILDERS) writes for `ctx`: the
        values go to the spool, and the sender writes the message when it sends it. Writing an
        audit message costs more than the query it records; the transaction only waits for
        its values to be kept."""
        if self.spool is None:
            return
        try:
            if events.TRANSACTION_BUILDERS.get(build.__name__) is not build:
                raise ValueError(f"{build.__name__} is not a transaction's audit builder")
            self._keep(_VALUES + bytes((_LAYOUT,)) + marshal.dumps(
                (build.__name__, events.context_values(ctx), events.source_values(self.source))))
        except Exception:
            log.exception("AUDIT RECORD LOST: it could not be written to the spool %s", self.spool.directory)

    def _keep(self, entry: bytes) -> None:
        if not self.spool.append(entry):
            self._spool_full()
        with self._wake:
            self._wake.notify_all()

    def _message(self, entry: bytes) -> bytes | None:
        """The syslog message a spool entry stands for: itself, or written from the values a
        transaction kept (None, logged, when that fails)."""
        if not entry.startswith(_VALUES):
            return entry
        try:
            if entry[1] != _LAYOUT:
                raise ValueError(f"layout {entry[1]} of a transaction's values is not this release's ({_LAYOUT})")
            name, values, source = marshal.loads(entry[2:])
            ctx = events.context_from_values(values)
            message = events.TRANSACTION_BUILDERS[name](ctx, events.source_from_values(source))
            success = events.outcome_indicator(ctx.outcome) == events.EventOutcome.SUCCESS
            return syslog.format_message(
                message, hostname=self.hostname, app_name=APP_NAME, procid=ctx.process_id, time=ctx.time,
                severity=syslog.SEVERITY_NOTICE if success else syslog.SEVERITY_WARNING)
        except Exception:
            log.exception("AUDIT RECORD LOST: a transaction's audit values in the spool %s cannot be "
                          "written as a message", self.spool.directory)
            return None

    def _spool_full(self) -> None:
        state = self.spool.state()
        if not state["refused"] & (state["refused"] - 1):  # the 1st, 2nd, 4th, 8th...: loud, not a flood
            self._log_spool_full(state)
        if not state["full"]:  # the first refusal of this episode: tell the Audit Record Repository
            self._alert_spool_full(state)

    def _log_spool_full(self, state: dict) -> None:
        log.error("AUDIT SPOOL FULL (%s, %d bytes, limit %d): audit record refused, %d refused "
                  "so far; the destinations %s are not taking records",
                  self.spool.directory, state["bytes"], self.spool.max_bytes, state["refused"],
                  ", ".join(self.destinations))

    def _alert_spool_full(self, state: dict) -> None:
        ctx = events.TransactionContext(
            endpoint_url=f"file://{self.hostname}{self.spool.directory.resolve()}",
            server_address=self.hostname, outcome=8,
            outcome_description=f"audit spool full: {state['refused']} audit records lost")
        alert = events.security_alert(ctx, self.source, reason="audit spool full: audit records are being lost",
                                      type_code=events.AUDIT_RECORDING_STOPPED)
        frame = syslog.format_message(alert, hostname=self.hostname, app_name=APP_NAME,
                                      procid=str(os.getpid()), severity=syslog.SEVERITY_WARNING)
        self.spool.append_alert(frame)

    # -- delivering ---------------------------------------------------------------------------------

    def start(self) -> "AuditTrail":
        """Start delivering in the background (daemon threads; see the module's text)."""
        if self.spool is not None and not self._threads:
            for target, name in ((self._deliver, "audit-deliverer"), (self._sync, "audit-fsync")):
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def _sync(self) -> None:
        """Group commit: fsync the spool when this process has added to it (xds.audit.spool)."""
        interval = self.spool.fsync_interval
        while interval and not self._stopping.wait(interval):
            try:
                self.spool.sync()
            except OSError:
                log.exception("cannot fsync the audit spool %s", self.spool.directory)

    def _deliver(self) -> None:
        lock_path = self.spool.directory / "deliver.lock"
        self._lock_file = open(lock_path, "a+b")
        while not self._stopping.is_set():
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                self._stopping.wait(POLL)  # another process delivers; take over if it ends
        else:
            return
        senders = [threading.Thread(target=self._send_loop, args=(url,), name=f"audit-{url}", daemon=True)
                   for url in self.destinations]
        for sender in senders:
            sender.start()
        self._threads.extend(senders)

    def _send_loop(self, url: str) -> None:
        destination = connect(url, self.settings)
        cursor = self.spool.cursor(url)
        pause = RETRY_MIN
        try:
            while not self._stopping.is_set():
                batch = cursor.read(BATCH)
                if not batch:
                    with self._wake:
                        self._wake.wait(POLL)
                    self._stopping.wait(BATCH_WAIT)  # what comes in meanwhile joins the batch
                    continue
                written = [(index, message) for index, message in enumerate(map(self._message, batch))
                           if message is not None]
                try:
                    skipped = destination.send_batch([message for _, message in written]) if written else []
                except SendError as exc:
                    # Entries up to the first message not sent (those that could not be written
                    # are logged and gone).
                    cursor.advance(written[exc.sent][0] if exc.sent < len(written) else len(batch))
                    log.warning("audit destination %s: %s; %d bytes of records wait, retry in %.1f s",
                                url, exc, self.spool.waiting(), pause)
                    self._stopping.wait(pause)
                    pause = min(pause * 2, RETRY_MAX)
                    continue
                for index, reason in skipped:
                    log.error("audit record %d of a batch cannot go to %s: %s", index, url, reason)
                cursor.advance(len(batch))
                pause = RETRY_MIN
                if len(batch) < BATCH:  # caught up: let records gather rather than send each alone
                    self._stopping.wait(BATCH_WAIT)
        except Exception:
            log.exception("audit sender for %s stopped", url)
        finally:
            destination.close()
            cursor.close()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every destination has every record; False if `timeout` passed first."""
        if self.spool is None:
            return True
        with self._wake:
            self._wake.notify_all()
        return _wait_for(lambda: self.spool.waiting() == 0, timeout, self._stopping)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the threads (records not yet sent stay in the spool for the next start)."""
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        if self.spool is not None:
            self.spool.close()  # fdatasyncs and seals this process's segment


def _wait_for(condition, timeout: float, stopping: threading.Event) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        stopping.wait(0.05)
    return True


class _NoAudit(AuditTrail):
    """The trail when no destination is configured: records go nowhere."""

    def __init__(self):
        super().__init__(Settings(), [])


NO_AUDIT = _NoAudit()
