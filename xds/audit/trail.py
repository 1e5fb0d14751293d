"""The audit trail: where the actors put their audit records (ATNA, ITI-20).

    trail = AuditTrail.from_settings(settings)
    trail.start()                                                     # background delivery
    trail.record_transaction(("ITI-18", "DocumentRegistry"), ctx)     # a transaction's record
    trail.record(events.application_start(...))                       # a message written already

A transaction's record costs it one append to the durable spool (xds.audit.spool) of its
event's name (a key of events.EVENTS) and the values the message is written from
(events.context_values), as JSON; the sender writes the message (events.build) and its RFC 5424
syslog header when it sends it, so the transaction waits neither for a network nor for the XML
(writing an audit message costs more than the stored query it records), nor, by default, for
the disk (a background thread fdatasyncs the spool every audit_spool_fsync_interval seconds).
Node events (start, stop, alerts) are rare and spooled as messages. Nothing here raises:
auditing must not break a transaction; a record that cannot be kept, or whose message cannot be
written, is logged as an error (AUDIT RECORD LOST).

The spool outlives a release: an entry is read by the release that sends it, maybe a newer one
than the release that wrote it, on a newer Python. So the values are JSON, which every Python
reads alike (marshal, which layout 1 used, is not promised to), and each entry says its layout,
which later releases keep reading (_transaction).

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

import binascii
import fcntl
import json
import logging
import marshal
import os
import socket
import threading
import time
from collections.abc import Sequence

from xds.audit import events, syslog
from xds.audit.spool import AuditSpool
from xds.audit.transport import SendError, connect, parse_destinations
from xds.config import Settings

log = logging.getLogger("xds.audit")

APP_NAME = "xds-affinity"
RETRY_MIN, RETRY_MAX = 0.5, 30.0
POLL = 0.5  # how often an idle sender looks for records written by other processes
BATCH_WAIT = 0.2  # seconds a caught-up sender lets records gather (fewer, larger batches)
BATCH = 1000  # records read and sent at once, at most
# A spool entry of a transaction's values starts with _VALUES (a syslog message starts "<"),
# then the version of their layout: a release that does not know a layout says so rather than
# send it. Layout 2: the JSON of [EVENTS key, events.context_values, events.source_values].
# Layout 1 (the releases before): marshal of (the builder function's name, the values as a dict,
# the source values), still read (_layout_1) so that what an older release left in a spool is
# delivered after an upgrade.
_VALUES, _LAYOUT = b"\x00", 2
_ENTRY = _VALUES + bytes((_LAYOUT,))
# Compact; no check for circular references, which plain values cannot have. Written as UTF-8
# with "surrogatepass" (and read so): a str from a client may hold lone surrogates, which the
# message writes as U+FFFD and so the values must keep as they were; strict UTF-8 cannot hold
# them, and JSON's \u escapes do not keep them either (an escaped high and low surrogate side by
# side are read back as the one character they make).
_JSON = json.JSONEncoder(separators=(",", ":"), check_circular=False, ensure_ascii=False)
# Layout 1 named a record by its builder, one function per EVENTS key, since removed.
_LAYOUT_1_EVENTS = {
    "iti42_registry": ("ITI-42", "DocumentRegistry"),
    "iti18_registry": ("ITI-18", "DocumentRegistry"),
    "iti41_repository": ("ITI-41", "DocumentRepository"),
    "iti42_repository": ("ITI-42", "DocumentRepository"),
    "iti43_repository": ("ITI-43", "DocumentRepository"),
}


class AuditTrail:
    def __init__(self, settings: Settings, destinations: list[str]):
        self.settings = settings
        self.destinations = destinations
        self.hostname = socket.gethostname()
        self.source = events.AuditSource(
            audit_source_id=settings.audit_source_id or self.hostname,
            enterprise_site_id=settings.audit_enterprise_site_id)
        self.spool = (AuditSpool(settings.audit_spool, destinations, settings.audit_spool_max_bytes,
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

    def record(self, message: bytes, outcome: int | str = events.EventOutcome.SUCCESS) -> None:
        """Keep `message` (an AuditMessage, as xds.audit.events writes it, with the outcome
        it was written with: its syslog severity) for delivery to every destination."""
        if self.spool is None:
            return
        try:
            success = events.outcome_indicator(outcome) == events.EventOutcome.SUCCESS
            self._keep(syslog.format_message(
                message, hostname=self.hostname, app_name=APP_NAME, procid=str(os.getpid()),
                severity=syslog.SEVERITY_NOTICE if success else syslog.SEVERITY_WARNING))
        except Exception:
            log.exception("AUDIT RECORD LOST: it could not be written to the spool %s", self.spool.directory)

    def record_transaction(self, event: tuple[str, str], ctx: events.TransactionContext) -> None:
        """Keep the record of `event`, a key of events.EVENTS such as ("ITI-18",
        "DocumentRegistry"), for `ctx`: the key and the values go to the spool, and the sender
        writes the message (events.build) when it sends it. Writing an audit message costs more
        than the query it records; the transaction only waits for its values to be kept."""
        if self.spool is None:
            return
        try:
            if event not in events.EVENTS:  # refused now: the sender could not write it later
                raise ValueError(f"{event!r} is not a transaction's audit event (a key of events.EVENTS)")
            kept = (event, events.context_values(ctx), events.source_values(self.source))
            self._keep(_ENTRY + _JSON.encode(kept).encode("utf-8", "surrogatepass"))
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
            (transaction, actor), values, source = _transaction(entry)
            ctx = events.context_from_values(values)
            message = events.build(transaction, actor, ctx, events.source_from_values(source))
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


def _transaction(entry: bytes) -> Sequence:
    """The EVENTS key, the values (events.context_values) and the source values of a spool
    entry of a transaction's values, whichever layout wrote it."""
    layout = entry[1]
    if layout == _LAYOUT:
        return json.loads(entry[2:].decode("utf-8", "surrogatepass"))
    if layout == 1:
        return _layout_1(entry[2:])
    raise ValueError(f"layout {layout} of a transaction's values is not one this release reads "
                     f"(1 to {_LAYOUT})")


def _layout_1(payload: bytes) -> tuple[tuple[str, str], list, tuple]:
    """A layout-1 entry in layout 2's terms. Its values were a dict of the same fields, each
    as context_values writes it still but the query request, kept as bytes; marshal wrote it.
    tests/test_audit_trail.py holds an entry of the last release that wrote this layout: the
    day a Python's marshal no longer reads it, that test says so."""
    name, fields, source = marshal.loads(payload)
    fields["query_request"] = binascii.b2a_base64(fields["query_request"], newline=False).decode("ascii")
    return _LAYOUT_1_EVENTS[name], [fields[field] for field in events.CONTEXT_FIELDS], source


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
