"""The Audit Record Repository's commands.

    xds audit-server [--tls HOST:PORT] [--tcp HOST:PORT] [--udp HOST:PORT]
    xds audit verify
    xds audit search [--patient ID] [--since T] [--until T] [--event CODE] [--user U]
                     [--malformed] [--limit N] [--xml]
    xds audit report --patient ID

Times are ISO 8601 (2025-11-24, 2025-11-24T09:30, 2025-11-24T09:30+09:00); without an offset
they are UTC, and a date alone in --until means the end of that day. Times are printed in UTC.
Exit status: 0; 1 when verify finds the chain broken; 2 on a usage error or when the database
cannot be read.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import signal
import sys
import threading
import unicodedata

from xds import config

# EventActionCode (DICOM PS3.15 A.5.1) in a reader's words.
ACTIONS = {"C": "created", "R": "read", "U": "updated", "D": "deleted", "E": "executed"}
QUERY_EVENT = "110112"
OUTCOMES = {0: "success", 4: "minor failure", 8: "serious failure", 12: "major failure"}
# What a transaction (EventTypeCode) did, for the patient's report.
TRANSACTIONS = {
    "ITI-18": "searched the patient's documents",
    "ITI-38": "searched the patient's documents in another community",
    "ITI-39": "retrieved documents from another community",
    "ITI-41": "submitted documents",
    "ITI-42": "registered documents",
    "ITI-43": "retrieved documents",
    "ITI-44": "sent the patient's identity",
    "ITI-45": "looked up the patient's identifiers",
    "ITI-47": "searched patient demographics",
    "ITI-55": "looked up the patient in another community",
    "ITI-57": "updated document metadata",
    "ITI-62": "removed document metadata",
}


def add_parser(subparsers) -> None:
    """Add `audit-server` and `audit` to the `xds` command's subparsers."""
    server = subparsers.add_parser(
        "audit-server", help="run the Audit Record Repository: receive syslog audit messages (ITI-20) and store them",
        description="Receive RFC 5424 syslog audit messages over TLS (RFC 5425, mutual TLS with tls_certificate, "
                    "tls_private_key and tls_ca_certificates), plain TCP (RFC 6587) and UDP (RFC 5426), and store "
                    "each one whole, chained by hash, in the database (database_url; run `xds db upgrade` first). "
                    "Malformed messages are stored too, flagged with the reason.")
    server.add_argument("--tls", metavar="HOST:PORT", help="listen for syslog over TLS, e.g. 0.0.0.0:6514")
    server.add_argument("--tcp", metavar="HOST:PORT", help="listen for syslog over plain TCP, e.g. 127.0.0.1:601")
    server.add_argument("--udp", metavar="HOST:PORT", help="listen for syslog over UDP, e.g. 0.0.0.0:514")
    server.set_defaults(run=_audit_server)

    audit = subparsers.add_parser("audit", help="the Audit Record Repository's records: verify, search, report")
    commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = commands.add_parser(
        "verify", help="recompute the hash chain; name the first record deleted, changed or inserted",
        description="Reads every audit record in order and recomputes its hash from its content and the previous "
                    "record's hash. Exit status 1 names the first record deleted, changed or inserted; 0 prints "
                    "the count and the chain's head hash (note it elsewhere to detect a rewrite of the whole chain).")
    verify.set_defaults(run=_verify)

    search = commands.add_parser("search", help="find audit records; print them as a table or as XML")
    search.add_argument("--patient", metavar="ID", help="a patient id as the messages carry it (ID^^^&OID&ISO)")
    search.add_argument("--since", metavar="TIME", type=_time, help="events at or after TIME")
    search.add_argument("--until", metavar="TIME", type=_until, help="events at or before TIME")
    search.add_argument("--event", metavar="CODE", help="an EventID (110112) or EventTypeCode (ITI-18) code")
    search.add_argument("--user", metavar="USER", help="the requestor's UserID or UserName")
    search.add_argument("--malformed", action="store_true", help="only the messages stored as malformed")
    search.add_argument("--limit", type=int, default=1000, metavar="N", help="at most N records (default 1000)")
    search.add_argument("--xml", action="store_true", help="print the audit messages as received instead of a table")
    search.set_defaults(run=_search)

    report = commands.add_parser(
        "report", help="a patient's access history: who accessed their records, from where, when, and what",
        description="Every audit record naming the patient, in time order: who (the requesting user or system), "
                    "which facility and system reported it, when, what was done, and which documents.")
    report.add_argument("--patient", required=True, metavar="ID", help="the patient id (ID^^^&OID&ISO)")
    report.set_defaults(run=_report)


# --- arguments -----------------------------------------------------------------------------

def _parse_time(text: str) -> tuple[_dt.datetime, bool]:
    """(time, whether it was a date alone)."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        time = _dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date or time") from None
    if time.tzinfo is None:
        time = time.replace(tzinfo=_dt.UTC)
    return time, "T" not in value.upper() and " " not in value


def _time(text: str) -> _dt.datetime:
    return _parse_time(text)[0]


def _until(text: str) -> _dt.datetime:
    time, date_only = _parse_time(text)
    return time + _dt.timedelta(days=1, microseconds=-1) if date_only else time


# --- audit-server --------------------------------------------------------------------------

def _audit_server(args, settings: config.Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from xds.arr import repository
    from xds.arr.receiver import AuditRecordRepository, parse_address
    from xds.store import db

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        listen = {name: parse_address(value) for name in ("tls", "tcp", "udp")
                  if (value := getattr(args, name)) is not None}
    except ValueError as exc:
        print(f"xds audit-server: {exc}", file=sys.stderr)
        return 2
    if not listen:
        print("xds audit-server: give at least one of --tls, --tcp, --udp", file=sys.stderr)
        return 2
    engine = db.make_engine(settings.database, busy_timeout=settings.busy_timeout)
    try:
        seq, _ = repository.head(engine)
    except SQLAlchemyError as exc:
        print(f"xds audit-server: cannot read the audit records in {db.redacted(settings.database)} "
              f"({type(exc).__name__}); is the database created (`xds db upgrade`)?", file=sys.stderr)
        return 2
    try:
        arr = AuditRecordRepository(settings, engine, **listen)
    except (OSError, ValueError) as exc:  # port taken, no TLS certificate...
        print(f"xds audit-server: {exc}", file=sys.stderr)
        return 2
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    arr.start()
    logging.getLogger("xds.arr.receiver").info("%d audit record(s) stored so far", seq)
    for transport, (host, port) in arr.addresses.items():
        # One line each on stdout, for whoever started us (tests give port 0 and read it here).
        print(f"listening {transport} {host}:{port}", flush=True)
    try:
        while not stopping.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        arr.stop()
        engine.dispose()
    return 0


# --- verify, search, report ----------------------------------------------------------------

def _engine(settings: config.Settings):
    from xds.store import db

    return db.make_engine(settings.database, busy_timeout=settings.busy_timeout)


def _database_error(command: str, settings: config.Settings, exc: Exception) -> int:
    from xds.store import db

    print(f"xds audit {command}: cannot read the audit records in {db.redacted(settings.database)} "
          f"({type(exc).__name__}); is the database created (`xds db upgrade`)?", file=sys.stderr)
    return 2


def _verify(args, settings: config.Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from xds.arr import repository

    engine = _engine(settings)
    try:
        report = repository.verify(engine)
    except SQLAlchemyError as exc:
        return _database_error("verify", settings, exc)
    finally:
        engine.dispose()
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def _search(args, settings: config.Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from xds.arr import repository

    if args.limit < 1:
        print("xds audit search: --limit must be at least 1", file=sys.stderr)
        return 2
    engine = _engine(settings)
    try:
        result = repository.search(engine, patient=args.patient, since=args.since, until=args.until,
                                   event=args.event, user=args.user, malformed=args.malformed, limit=args.limit)
    except SQLAlchemyError as exc:
        return _database_error("search", settings, exc)
    finally:
        engine.dispose()
    if args.xml:
        write_xml(result.records, sys.stdout)
    else:
        print(search_table(result.records))
    more = "; more match: raise --limit or narrow the search" if result.truncated else ""
    print(f"{len(result.records)} record(s){more}", file=sys.stderr if args.xml else sys.stdout)
    return 0


def _report(args, settings: config.Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from xds.arr import repository

    engine = _engine(settings)
    try:
        result = repository.search(engine, patient=args.patient, limit=None)
    except SQLAlchemyError as exc:
        return _database_error("report", settings, exc)
    finally:
        engine.dispose()
    print(patient_report(args.patient, result.records))
    return 0


# --- formatting ----------------------------------------------------------------------------

def _when(time: _dt.datetime | None) -> str:
    return time.astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if time else "-"


def _event(record) -> str:
    if record.malformed:
        return "(malformed)"
    types = " ".join(record.values("event_type"))
    name = record.event_name or record.event_id or "?"
    return f"{name} {types}".strip()


def _action(record) -> str:
    action = record.event_action or ""
    if action == "E" and record.event_id == QUERY_EVENT:
        return "queried"
    return ACTIONS.get(action, action or "-")


def _outcome(record) -> str:
    if record.outcome is None:
        return "-"
    return OUTCOMES.get(record.outcome, str(record.outcome))


def _user(record) -> str:
    """The requestor as a person reads it: name (id); an anonymous WS-Addressing ReplyTo is no
    one's name, so it is left out."""
    from xds.audit.events import WSA_ANONYMOUS

    user_id = None if record.user_id == WSA_ANONYMOUS else record.user_id
    if record.user_name and user_id:
        return f"{record.user_name} ({user_id})"
    return record.user_name or user_id or "-"


def _system(record) -> str:
    source = record.audit_source_id or "-"
    if record.audit_enterprise_site_id:
        source += f" (site {record.audit_enterprise_site_id})"
    return source


def _display_width(text: str) -> int:
    # East Asian wide and full-width characters take two columns of a terminal: a Japanese
    # name must not push the columns after it out of line.
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Rows as aligned text columns."""
    widths = [max(_display_width(row[i]) for row in (header, *rows)) for i in range(len(header))]
    def line(row) -> str:
        cells = (value + " " * (width - _display_width(value)) for value, width in zip(row, widths, strict=True))
        return "  ".join(cells).rstrip()

    return "\n".join(line(row) for row in (header, *rows))


def search_table(records) -> str:
    header = ("seq", "time (UTC)", "event", "action", "outcome", "user", "source address", "patients", "documents")
    rows = [(str(r.seq), _when(r.event_time), _event(r), _action(r), _outcome(r), _user(r),
             r.source_address or "-", ", ".join(r.patients) or "-", ", ".join(r.documents) or "-")
            for r in records]
    lines = [table(header, rows)]
    for r in records:
        if r.malformed:
            lines.append(f"record {r.seq} is malformed ({r.transport} from {r.sender_address}, received "
                         f"{_when(r.received_at)}): {r.malformed}")
    return "\n".join(lines)


def write_xml(records, out) -> None:
    """Each record's audit message as received (the syslog MSG), after a comment naming it."""
    for r in records:
        note = f" malformed: {r.malformed}" if r.malformed else ""
        note = note.replace("--", "- -")  # no "--" inside an XML comment
        out.write(f"<!-- audit record {r.seq}, received {_when(r.received_at)} over {r.transport} "
                  f"from {r.sender_address}{note} -->\n")
        out.write(r.message.decode("utf-8", "replace").strip() + "\n")


def _what(record) -> str:
    action = _action(record)
    done = [TRANSACTIONS[code] for code in record.values("event_type") if code in TRANSACTIONS]
    codes = " ".join(record.values("event_type"))
    detail = f"{action}: {'; '.join(done)}" if done else f"{action}: {record.event_name or record.event_id or '?'}"
    if codes:
        detail += f" ({codes})"
    if record.outcome:
        detail += f", {_outcome(record)}"
    return detail


def access_note(record) -> str:
    """What access control (xds.consent) noted in a record: "DENIED (reason)" for an access
    denied by the patient's consent, "BREAK-GLASS (reason)" for one granted without it in an
    emergency; "" otherwise. Read from the message's EventOutcomeDescription, with its purposes
    of use (the audit writer, xds.audit.actors.with_consent, puts them there)."""
    if record.malformed:
        return ""
    try:
        from lxml import etree

        root = etree.fromstring(record.message, etree.XMLParser(resolve_entities=False, no_network=True))
    except Exception:
        return ""
    description = next((e.text or "" for e in root.iter() if isinstance(e.tag, str)
                        and etree.QName(e).localname == "EventOutcomeDescription"), "").strip()
    if description.startswith("access denied by consent: "):
        return f"DENIED ({description.removeprefix('access denied by consent: ')})"
    if description.startswith("break-glass"):
        return f"BREAK-GLASS ({description.removeprefix('break-glass').lstrip(' :')})"
    return ""


def patient_report(patient: str, records) -> str:
    """The patient's access history: who, from which facility and system, when, what, which
    documents; one line an event, in time order. Accesses denied by the patient's consent and
    those granted by break-glass are flagged (`access_note`), and counted above the table."""
    if not records:
        return f"No audit record names patient {patient}."
    times = [r.event_time for r in records if r.event_time]
    span = f", {_when(min(times))} to {_when(max(times))}" if times else ""
    header = ("when (UTC)", "who", "reported by (facility)", "from (system, address)", "what", "documents")
    rows = []
    flagged = {"DENIED": 0, "BREAK-GLASS": 0}
    for r in records:
        documents = r.documents or [f"submission set {value}" for value in r.values("submission_set")]
        origin = " ".join(value for value in (r.source_system, r.source_address) if value)
        what = "(malformed message) " + r.malformed if r.malformed else _what(r)
        note = access_note(r)
        if note:
            flagged[note.split(" ", 1)[0]] += 1
            what = f"{note}: {what}"
        rows.append((_when(r.event_time), _user(r), _system(r), origin or "-", what, ", ".join(documents) or "-"))
    counts = "".join(f", {n} {name.lower()}" for name, n in flagged.items() if n)
    return (f"Access history of patient {patient}: {len(records)} event(s){counts}{span}\n\n"
            + table(header, rows))
