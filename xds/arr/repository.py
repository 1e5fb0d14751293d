"""The Audit Record Repository's store (ATNA, ITI-20 Record Audit Event): every syslog message
received, kept whole and chained by hash, with the fields a search needs beside it.

What belongs here: reading a received message into an AuditRecord (`read`, no I/O), appending
records to the chain (`append`), checking the chain (`verify`) and finding records (`search`).
What does not: sockets (xds.arr.receiver) and printing (xds.arr.command).

Theory of operation.

Nothing received is lost. A message that is not RFC 5424 syslog, whose MSG is not XML, or whose
XML is not an AuditMessage is stored all the same, its raw bytes as they came, with the reason in
`malformed`; so is what a stream with broken framing left. Fields are read from a message in
both attribute styles senders use: DICOM PS3.15 A.5 (``csd-code``, ``originalText``) and
RFC 3881 (``code``, ``displayName``). Values longer than their column are cut before the hash is
taken (PostgreSQL would refuse them); the raw message keeps them whole.

Tamper evidence. Records are numbered 1, 2, 3... in the order they are appended, and each
stores ``hash = sha256(prev_hash + canonical(record))``, where prev_hash is the previous record's
hash (64 zeros for the first) and canonical() is a fixed serialisation of every value stored
but the chain's own (seq, prev_hash, hash): the raw message, received time, transport, sender,
TLS peer, the fields read and the search keys. A record changed by SQL no longer matches its
hash; one deleted leaves a gap in the numbers and a prev_hash that points nowhere; one inserted
(renumbering those after it) is skipped by its successor's prev_hash. The head row
(audit_chain) holds the last seq and hash, so records deleted from the end show too. What a
hash chain cannot show is a rewrite of the whole chain from some record on, by someone who can
also rewrite the head: compare the head hash that `xds audit verify` prints with one noted
elsewhere to catch that.

Appending takes the chain's lock first: the head row with SELECT ... FOR UPDATE on PostgreSQL,
the database's write lock (the write session's BEGIN IMMEDIATE) on SQLite. Receiver threads and
processes therefore append one transaction after the other, each reading the head the previous
one left.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields, replace

from lxml import etree
from sqlalchemy import Engine, func, insert, or_, select, update
from sqlalchemy.orm import Session

from xds.audit import syslog
from xds.audit.events import WSA_ANONYMOUS
from xds.store import db
from xds.store.tables import TEXT_KEY, AuditChainRow, AuditRecordKeyRow, AuditRecordRow

# Core tables, not ORM objects: verify reads millions of rows and a session's identity map
# would keep every one of them.
_RECORD = AuditRecordRow.__table__
_KEY = AuditRecordKeyRow.__table__

GENESIS = "0" * 64
#: Opens every canonical content: a later format (more columns) gets a new version, and verify
#: keeps reading the old one.
CANONICAL_VERSION = b"xds-audit-record/1\n"

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)

# ParticipantObjectIDTypeCode / TypeCodeRole values that say what an object is (RFC 3881 5.5,
# ITI TF-2 3.18.5.1, 3.41.7.1, 3.43.6.1).
_PATIENT_ID_TYPE = "2"              # Patient Number
_REPORT_ID_TYPE = "9"               # Report Number: a document uniqueId
_SUBMISSION_SET_ID_TYPE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
_ROLE_PATIENT, _ROLE_REPORT, _ROLE_QUERY = "1", "3", "24"
# RoleIDCodes of systems (DICOM CID 402): a requestor without one of these and without a
# network address is a person (ITI's human requestor, the XUA subject).
_SYSTEM_ROLES = {"110150", "110152", "110153"}  # Application, Destination, Source
_SOURCE_ROLE = "110153"

KINDS = ("patient", "document", "submission_set", "query", "event_type")


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


@dataclass(frozen=True)
class Reception:
    """One message as the receiver got it, before anything is read from it."""

    raw: bytes
    transport: str                        # "tls", "tcp", "udp"; "local" for the ARR's own records
    sender_address: str | None = None
    sender_port: int | None = None
    tls_peer: str | None = None           # the client certificate's subject (RFC 4514)
    received_at: _dt.datetime = field(default_factory=_now)
    #: Set by the receiver when the bytes are not one message (broken framing): stored as
    #: malformed with this reason, not parsed.
    problem: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One stored record: the columns of audit_record, and its search keys."""

    received_at: _dt.datetime
    transport: str
    sender_address: str | None
    sender_port: int | None
    tls_peer: str | None
    raw: bytes
    malformed: str | None = None
    facility: int | None = None
    severity: int | None = None
    syslog_time: _dt.datetime | None = None
    hostname: str | None = None
    app_name: str | None = None
    procid: str | None = None
    msgid: str | None = None
    event_time: _dt.datetime | None = None
    event_id: str | None = None
    event_name: str | None = None
    event_action: str | None = None
    outcome: int | None = None
    user_id: str | None = None
    user_name: str | None = None
    source_system: str | None = None
    source_address: str | None = None
    audit_source_id: str | None = None
    audit_enterprise_site_id: str | None = None
    #: (kind, value) pairs, sorted, each once; kinds are KINDS.
    keys: tuple[tuple[str, str], ...] = ()
    seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None

    def values(self, kind: str) -> list[str]:
        return [value for k, value in self.keys if k == kind]

    @property
    def patients(self) -> list[str]:
        return self.values("patient")

    @property
    def documents(self) -> list[str]:
        return self.values("document")

    @property
    def message(self) -> bytes:
        """The syslog MSG (the audit message) when the raw bytes are syslog, else the raw bytes."""
        try:
            return syslog.parse(self.raw).msg
        except ValueError:
            return self.raw


#: The columns of audit_record that an AuditRecord has (all but the chain's own two).
_COLUMNS = tuple(f.name for f in fields(AuditRecord) if f.name not in ("keys", "prev_hash", "hash"))
#: What the hash covers: every stored value but the chain's own: seq, prev_hash (chained by
#: the hash's input instead) and the hash. The order is what the links protect; a seq is only
#: its place, so that a record inserted with the others renumbered is told as inserted.
_HASHED = (*(name for name in _COLUMNS if name != "seq"), "keys")


# --- reading a message ---------------------------------------------------------------------

def _text(value: str | None, size: int) -> str | None:
    """A value as a column can hold it: no NUL (PostgreSQL text refuses it), at most `size`
    characters; empty is None."""
    if value is None:
        return None
    value = value.replace("\x00", "\ufffd")[:size]
    return value or None


def _utc(time: _dt.datetime | None) -> _dt.datetime | None:
    """UTC, microseconds: what both databases give back unchanged (SQLite keeps no offset, so
    a time without one is taken as UTC)."""
    if time is None:
        return None
    try:
        return time.astimezone(_dt.UTC) if time.tzinfo else time.replace(tzinfo=_dt.UTC)
    except OverflowError:  # year 1 with a negative offset, and the like
        return None


def _xs_datetime(value: str | None) -> _dt.datetime | None:
    """An xs:dateTime (EventDateTime); ValueError if it is not one."""
    if not value:
        raise ValueError("missing")
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    time = _dt.datetime.fromisoformat(text)
    if "T" not in value:
        raise ValueError("no time of day")
    converted = _utc(time)
    if converted is None:
        raise ValueError("out of range")
    return converted


def _local(element: etree._Element) -> str | None:
    return etree.QName(element).localname if isinstance(element.tag, str) else None


def _children(element: etree._Element, name: str) -> list[etree._Element]:
    # By local name: a few senders put the audit message in a namespace.
    return [child for child in element if _local(child) == name]


def _child(element: etree._Element, name: str) -> etree._Element | None:
    found = _children(element, name)
    return found[0] if found else None


def _code(element: etree._Element | None) -> tuple[str | None, str | None]:
    """(code, display name) of a coded value, DICOM or RFC 3881 style."""
    if element is None:
        return None, None
    code = element.get("csd-code") or element.get("code")
    name = element.get("originalText") or element.get("displayName")
    return code, name


def _requestor(participants: list[etree._Element]) -> tuple[etree._Element | None, etree._Element | None]:
    """(user, system): the person who asked when the message names one (a requestor without a
    network address and without a system's role), and the requesting system (the first
    requestor with a network address). UserIsRequestor defaults to true (RFC 3881)."""
    requestors = [p for p in participants if p.get("UserIsRequestor", "true").strip().lower() in ("true", "1")]
    system = next((p for p in requestors if p.get("NetworkAccessPointID")), None)
    person = None
    for participant in requestors:
        roles = {_code(role)[0] for role in _children(participant, "RoleIDCode")}
        if not participant.get("NetworkAccessPointID") and not roles & _SYSTEM_ROLES:
            person = participant
            break
    if system is None:
        # No requestor has an address: the side in the Source role is where the request came from.
        system = next((p for p in participants if p.get("NetworkAccessPointID") and _SOURCE_ROLE in
                       {_code(role)[0] for role in _children(p, "RoleIDCode")}), None)
    if person is None and requestors:
        person = requestors[0]
    return person, system


def _object_kind(element: etree._Element) -> str | None:
    id_type, _ = _code(_child(element, "ParticipantObjectIDTypeCode"))
    role = element.get("ParticipantObjectTypeCodeRole")
    type_code = element.get("ParticipantObjectTypeCode")
    if role == _ROLE_PATIENT or (id_type == _PATIENT_ID_TYPE and type_code in (None, "1")):
        return "patient"
    if id_type == _SUBMISSION_SET_ID_TYPE:
        return "submission_set"
    if id_type == _REPORT_ID_TYPE or (role == _ROLE_REPORT and type_code == "2"):
        return "document"
    if role == _ROLE_QUERY:
        return "query"
    return None


def _audit_message(msg: bytes) -> tuple[dict, str | None]:
    """The fields of an AuditMessage, and what makes it malformed (None when nothing does)."""
    try:
        root = etree.fromstring(msg, _PARSER)
    except (etree.LxmlError, ValueError) as exc:
        return {}, f"MSG is not well-formed XML: {exc}"
    if _local(root) != "AuditMessage":
        return {}, f"MSG is XML but not an AuditMessage (root element {_local(root)!r})"
    values: dict = {}
    keys: set[tuple[str, str]] = set()
    problem = None
    event = _child(root, "EventIdentification")
    if event is None:
        problem = "AuditMessage without EventIdentification"
    else:
        values["event_id"], values["event_name"] = _code(_child(event, "EventID"))
        if values["event_id"] is None:
            problem = "EventIdentification without an EventID code"
        values["event_action"] = event.get("EventActionCode")
        outcome = (event.get("EventOutcomeIndicator") or "").strip()
        values["outcome"] = int(outcome) if outcome.isdigit() and int(outcome) < 100 else None
        try:
            values["event_time"] = _xs_datetime(event.get("EventDateTime"))
        except ValueError as exc:
            problem = problem or f"EventDateTime {event.get('EventDateTime')!r} is not an xs:dateTime ({exc})"
        for type_code in _children(event, "EventTypeCode"):
            code, _ = _code(type_code)
            if code:
                keys.add(("event_type", code))
    person, system = _requestor(_children(root, "ActiveParticipant"))
    if person is not None:
        values["user_id"], values["user_name"] = person.get("UserID"), person.get("UserName")
    if system is not None:
        values["source_address"] = system.get("NetworkAccessPointID")
        user_id = system.get("UserID")  # an anonymous ReplyTo names no one
        values["source_system"] = system.get("UserName") or (None if user_id == WSA_ANONYMOUS else user_id)
    source = _child(root, "AuditSourceIdentification")
    if source is not None:
        values["audit_source_id"] = source.get("AuditSourceID")
        values["audit_enterprise_site_id"] = source.get("AuditEnterpriseSiteID")
    for element in _children(root, "ParticipantObjectIdentification"):
        kind, object_id = _object_kind(element), element.get("ParticipantObjectID")
        if kind and object_id:
            keys.add((kind, object_id))
    values["keys"] = keys
    return values, problem


_SIZES = {column.name: getattr(column.type, "length", None) for column in _RECORD.columns}


def read(reception: Reception) -> AuditRecord:
    """The record to store for one received message: never raises for anything the message
    holds; what cannot be read is said in `malformed`."""
    values: dict = {
        "received_at": _utc(reception.received_at), "transport": reception.transport,
        "sender_address": reception.sender_address, "sender_port": reception.sender_port,
        "tls_peer": reception.tls_peer, "raw": bytes(reception.raw),
    }
    problem = reception.problem
    keys: set[tuple[str, str]] = set()
    if problem is None:
        try:
            message = syslog.parse(reception.raw)
        except ValueError as exc:
            problem = f"not RFC 5424 syslog: {exc}"
        else:
            values.update(facility=message.facility, severity=message.severity,
                          syslog_time=_utc(message.timestamp), hostname=message.hostname,
                          app_name=message.app_name, procid=message.procid, msgid=message.msgid)
            fields_read, problem = _audit_message(message.msg)
            keys = fields_read.pop("keys", set())
            values.update(fields_read)
    values["malformed"] = problem
    for name, size in _SIZES.items():
        if size and isinstance(values.get(name), str):
            values[name] = _text(values[name], size)
    clipped = {(kind, _text(value, TEXT_KEY)) for kind, value in keys}
    values["keys"] = tuple(sorted((kind, value) for kind, value in clipped if value))
    return AuditRecord(**values)


# --- the chain -----------------------------------------------------------------------------

def _time_text(time: _dt.datetime | None) -> str | None:
    if time is None:
        return None
    return _utc(time).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def canonical(record: AuditRecord) -> bytes:
    """The bytes a record's hash covers: its stored values as JSON, keys sorted, ASCII only
    (non-ASCII characters escaped), times in UTC with microseconds, the raw message in base64."""
    content = {}
    for name in _HASHED:
        value = getattr(record, name)
        if isinstance(value, _dt.datetime):
            value = _time_text(value)
        elif isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        elif name == "keys":
            value = [list(pair) for pair in value]
        content[name] = value
    return CANONICAL_VERSION + json.dumps(content, sort_keys=True, separators=(",", ":")).encode("ascii")


def chain_hash(prev_hash: str, record: AuditRecord) -> str:
    return hashlib.sha256(prev_hash.encode("ascii", "replace") + canonical(record)).hexdigest()


def _head(session: Session, lock: bool) -> tuple[int, str] | None:
    query = select(AuditChainRow.seq, AuditChainRow.hash).where(AuditChainRow.id == 1)
    row = session.execute(query.with_for_update() if lock else query).one_or_none()
    return (row.seq, row.hash) if row else None


def head(engine: Engine) -> tuple[int, str]:
    """(seq, hash) of the chain's last record; (0, GENESIS) when there is none. Raises
    SQLAlchemyError when the tables are not there (the database not upgraded)."""
    with _read_session(engine) as session:
        return _head(session, lock=False) or (0, GENESIS)


def _lock_head(session: Session) -> tuple[int, str]:
    """The chain's head, locked until the transaction ends (see the module's text)."""
    head = _head(session, lock=True)
    if head is not None:
        return head
    # The first append ever. Two first appenders may get here together on PostgreSQL (no row
    # to lock yet): the second's INSERT waits for the first's commit and then does nothing,
    # and its SELECT ... FOR UPDATE reads (and locks) the head the first left.
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    session.execute(upsert(AuditChainRow).values(id=1, seq=0, hash=GENESIS).on_conflict_do_nothing())
    return _head(session, lock=True)


def append(engine: Engine, records: Sequence[AuditRecord]) -> list[AuditRecord]:
    """Append `records` (from read()) to the chain in one transaction; they come back with
    their seq and hashes."""
    if not records:
        return []
    with db.write_session(engine) as session:
        seq, head = _lock_head(session)
        chained = []
        for record in records:
            seq += 1
            record = replace(record, seq=seq, prev_hash=head, hash=None)
            head = chain_hash(head, record)
            chained.append(replace(record, hash=head))
        session.execute(insert(_RECORD), [
            {**{name: getattr(r, name) for name in _COLUMNS}, "prev_hash": r.prev_hash, "hash": r.hash}
            for r in chained])
        keys = [{"record_seq": r.seq, "kind": kind, "value": value} for r in chained for kind, value in r.keys]
        if keys:
            session.execute(insert(_KEY), keys)
        session.execute(update(AuditChainRow).where(AuditChainRow.id == 1).values(seq=seq, hash=head))
    return chained


def store(engine: Engine, receptions: Iterable[Reception]) -> list[AuditRecord]:
    """read() and append() in one: what the receiver does with what it got."""
    return append(engine, [read(reception) for reception in receptions])


# --- reading records back ------------------------------------------------------------------

def _from_row(row, keys: Iterable[tuple[str, str]]) -> AuditRecord:
    values = {name: getattr(row, name) for name in _COLUMNS}
    for name, value in values.items():
        if isinstance(value, _dt.datetime):
            values[name] = _utc(value)
        elif isinstance(value, memoryview):
            values[name] = bytes(value)
    return AuditRecord(**values, keys=tuple(sorted(keys)), prev_hash=row.prev_hash, hash=row.hash)


def _keys_of(session: Session, seqs: Sequence[int]) -> dict[int, list[tuple[str, str]]]:
    found: dict[int, list[tuple[str, str]]] = {seq: [] for seq in seqs}
    for chunk in db.chunked(list(seqs)):
        query = select(AuditRecordKeyRow.record_seq, AuditRecordKeyRow.kind, AuditRecordKeyRow.value).where(
            AuditRecordKeyRow.record_seq.in_(chunk))
        for seq, kind, value in session.execute(query):
            found[seq].append((kind, value))
    return found


def _read_session(engine: Engine):
    """A read transaction on one snapshot (verify reads records, keys and head in several
    statements while receivers append): REPEATABLE READ on PostgreSQL; on SQLite (WAL) a read
    transaction is one snapshot already."""
    if engine.dialect.name == "postgresql":
        engine = engine.execution_options(isolation_level="REPEATABLE READ")
    return db.make_sessionmaker(engine)()


def records(session: Session, batch: int = 2000) -> Iterator[AuditRecord]:
    """Every record in chain order, read in batches by seq (the primary key)."""
    last = None
    while True:
        query = select(_RECORD).order_by(_RECORD.c.seq).limit(batch)
        if last is not None:
            query = query.where(_RECORD.c.seq > last)
        rows = session.execute(query).all()
        if not rows:
            return
        keys = _keys_of(session, [row.seq for row in rows])
        for row in rows:
            yield _from_row(row, keys[row.seq])
        last = rows[-1].seq


# --- verify --------------------------------------------------------------------------------

@dataclass
class ChainReport:
    count: int = 0                      # records checked (up to the first problem)
    malformed: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problem: str | None = None          # the first record deleted, changed or inserted
    seq: int | None = None              # the record the problem names

    @property
    def ok(self) -> bool:
        return self.problem is None

    def lines(self) -> list[str]:
        if self.ok:
            return [f"OK: {self.count} audit record(s), {self.malformed} of them malformed; "
                    f"the chain is intact up to its head {self.head_seq} {self.head_hash}"]
        return [f"FAILED: {self.problem}",
                f"{self.count} record(s) before it are intact"]


def _range(first: int, last: int) -> str:
    return f"record {first}" if first == last else f"records {first} to {last}"


def verify(engine: Engine) -> ChainReport:
    """Recompute the chain; the report names the first record deleted, changed or inserted."""
    report = ChainReport()
    with _read_session(engine) as session:
        previous: AuditRecord | None = None
        for record in records(session):
            expected = previous.seq + 1 if previous else 1
            problem = None
            if record.seq != expected:
                problem = (f"{_range(expected, record.seq - 1)} deleted "
                           f"(record {record.seq} follows record {previous.seq if previous else 'none'})")
                seq = expected
            elif chain_hash(record.prev_hash, record) != record.hash:
                problem, seq = (f"record {record.seq} changed: its content no longer gives its hash "
                                f"(received {_time_text(record.received_at)})"), record.seq
            elif record.prev_hash != (previous.hash if previous else GENESIS):
                if previous is not None and record.prev_hash == previous.prev_hash:
                    problem, seq = (f"record {previous.seq} inserted: record {record.seq} is chained "
                                    f"to the record before it"), previous.seq
                elif previous is None:
                    problem, seq = ("records deleted before record 1, or record 1 changed: "
                                    "it is not chained to the start"), 1
                else:
                    problem, seq = (f"record {previous.seq} changed and its hash recomputed, or records "
                                    f"deleted after it and the rest renumbered: record {record.seq} is "
                                    f"not chained to it"), previous.seq
            if problem:
                report.problem, report.seq = problem, seq
                return report
            report.count += 1
            report.malformed += record.malformed is not None
            previous = record
        head = _head(session, lock=False)
    last_seq, last_hash = (previous.seq, previous.hash) if previous else (0, GENESIS)
    if head is None:
        head = (0, GENESIS)
        if previous is not None:
            report.problem, report.seq = "the chain's head (table audit_chain) is missing", last_seq
            return report
    head_seq, head_hash = head
    if head_seq > last_seq:
        report.problem, report.seq = (f"{_range(last_seq + 1, head_seq)} deleted from the end "
                                      f"(the chain's head is record {head_seq})"), last_seq + 1
    elif head_seq < last_seq:
        report.problem, report.seq = (f"{_range(head_seq + 1, last_seq)} inserted after the chain's head "
                                      f"(record {head_seq})"), head_seq + 1
    elif head_hash != last_hash:
        report.problem, report.seq = (f"record {last_seq} changed and its hash recomputed: the chain's "
                                      f"head has another hash"), last_seq
    report.head_seq, report.head_hash = last_seq, last_hash
    return report


# --- search --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SearchResult:
    records: list[AuditRecord]
    truncated: bool                     # more records matched than the limit


def search_statement(*, patient: str | None = None, since: _dt.datetime | None = None,
                     until: _dt.datetime | None = None, event: str | None = None, user: str | None = None,
                     malformed: bool = False, limit: int | None = None):
    """The SELECT of search() (tests read its query plan)."""
    record = _RECORD.c
    query = select(_RECORD)
    if patient is not None:
        query = query.where(record.seq.in_(_keyed("patient", patient)))
    if since is not None:
        query = query.where(record.event_time >= _utc(since))
    if until is not None:
        query = query.where(record.event_time <= _utc(until))
    if event is not None:
        query = query.where(or_(record.event_id == event, record.seq.in_(_keyed("event_type", event))))
    if user is not None:
        query = query.where(or_(record.user_id == user, record.user_name == user))
    if malformed:
        query = query.where(record.malformed.is_not(None))
    query = query.order_by(record.event_time.asc().nulls_last(), record.seq)
    return query if limit is None else query.limit(limit)


def search(engine: Engine, *, patient: str | None = None, since: _dt.datetime | None = None,
           until: _dt.datetime | None = None, event: str | None = None, user: str | None = None,
           malformed: bool = False, limit: int | None = 1000) -> SearchResult:
    """Records by patient id (exact CX), event time range (inclusive), EventID or EventTypeCode
    code, user (UserID or UserName of the requestor), malformed or not; in event time order
    (records without an event time last), at most `limit` (None: all). Every condition is an
    index probe: the patient through ix_audit_record_key_value, the time through
    ix_audit_record_event_time, the event and user through theirs."""
    query = search_statement(patient=patient, since=since, until=until, event=event, user=user,
                             malformed=malformed, limit=None if limit is None else limit + 1)
    with _read_session(engine) as session:
        rows = session.execute(query).all()
        truncated = limit is not None and len(rows) > limit
        rows = rows[:limit] if limit is not None else rows
        keys = _keys_of(session, [row.seq for row in rows])
        return SearchResult([_from_row(row, keys[row.seq]) for row in rows], truncated)


def _keyed(kind: str, value: str):
    return select(AuditRecordKeyRow.record_seq).where(AuditRecordKeyRow.kind == kind,
                                                      AuditRecordKeyRow.value == value)


def count(engine: Engine) -> tuple[int, int]:
    """(records, malformed records)."""
    with _read_session(engine) as session:
        total = session.execute(select(func.count()).select_from(AuditRecordRow)).scalar_one()
        bad = session.execute(select(func.count()).select_from(AuditRecordRow).where(
            AuditRecordRow.malformed.is_not(None))).scalar_one()
    return total, bad
