"""The consent commands: record a patient's consent, show it, review break-glass accesses.

    xds consent grant PATIENT [--model blanket|facility|person|implied] [--facility F]... [--person ID]...
                      [--exclude F]... [--from T] [--to T] [--by WHO] [--reason TEXT]
    xds consent exclude PATIENT FACILITY... [--by WHO] [--reason TEXT]
    xds consent hold PATIENT [--release] [--by WHO] [--reason TEXT]
    xds consent withdraw PATIENT [--by WHO] [--reason TEXT]
    xds consent show PATIENT [--json]
    xds consent review [--patient ID] [--since T] [--until T] [--limit N]

PATIENT is any local id of the patient (ID^^^&OID&ISO): the consent is its person's, shared by
every id linked to it (xds.consent.record says what each change does). The model of a grant is
per facility with --facility, per person with --person, blanket otherwise (unless --model says).
Facilities are OIDs (urn:oid: may prefix them); individuals are XUA subject ids (the NameID, or
the subject-id attribute). Times are ISO 8601 (2026-04-01, 2026-04-01T09:00+09:00; UTC without
an offset). Each change is recorded with who (--by, default the user running the command), when,
why (--reason) and the source "cli"; nothing is overwritten (`show` prints the history).

Exit status: 0; 1 when the change cannot be made (an id the PIX Manager does not know, a
consent per facility without facilities...: the reason is printed); 2 for bad input or a
database that cannot be read.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import os
import sys

from xds import config

_DB_HELP = "is it created and migrated (`xds db upgrade`)?"


def add_parser(subparsers) -> None:
    """Add `consent` to the `xds` command's subparsers."""
    consent = subparsers.add_parser(
        "consent", help="patients' consent: grant, exclude, hold, withdraw, show; review break-glass accesses",
        description="Record and show patients' consent to share their documents (access_control = consent), "
                    "and review the accesses made without it in emergencies (break-glass).")
    commands = consent.add_subparsers(dest="consent_command", required=True)

    def change(name: str, help_text: str):
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("patient", metavar="PATIENT", help="any local id of the patient (ID^^^&OID&ISO)")
        parser.add_argument("--by", help="who records it (default: the user running the command)")
        parser.add_argument("--reason", default="", help="why, as the patient or the form says")
        return parser

    grant = change("grant", "record a consent: blanket, per facility, per person or implied")
    grant.add_argument("--model", choices=("blanket", "facility", "person", "implied"),
                       help="default: facility with --facility, person with --person, else blanket")
    grant.add_argument("--facility", action="append", default=[], metavar="OID", help="a facility allowed")
    grant.add_argument("--person", action="append", default=[], metavar="ID",
                       help="an individual allowed (XUA NameID or subject-id)")
    grant.add_argument("--exclude", action="append", default=[], metavar="OID", help="a facility never allowed")
    grant.add_argument("--from", dest="valid_from", metavar="TIME", help="valid from (inclusive)")
    grant.add_argument("--to", dest="valid_to", metavar="TIME", help="valid until (exclusive)")
    grant.set_defaults(run=_grant)

    exclude = change("exclude", "exclude facilities (whatever the model)")
    exclude.add_argument("facilities", nargs="+", metavar="FACILITY")
    exclude.set_defaults(run=_exclude)

    hold = change("hold", "put viewing on hold (nothing is shown), or --release it")
    hold.add_argument("--release", action="store_true", help="end the hold")
    hold.set_defaults(run=_hold)

    withdraw = change("withdraw", "withdraw the consent (or opt out of implied consent): nothing is shown")
    withdraw.set_defaults(run=_withdraw)

    show = commands.add_parser("show", help="a patient's consent now, and its history")
    show.add_argument("patient", metavar="PATIENT")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=_show)

    review = commands.add_parser("review", help="list the accesses granted by break-glass (emergency, no consent)")
    review.add_argument("--patient", metavar="ID", help="only this patient's person")
    review.add_argument("--since", metavar="TIME")
    review.add_argument("--until", metavar="TIME")
    review.add_argument("--limit", type=int, default=1000)
    review.set_defaults(run=_review)


def _time(text: str | None, end: bool = False) -> _dt.datetime | None:
    """ISO 8601; UTC without an offset; a date alone in an upper bound means the end of that day."""
    if not text:
        return None
    moment = _dt.datetime.fromisoformat(text)
    if end and len(text) == 10:
        moment += _dt.timedelta(days=1)
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.UTC)


def _who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name for this uid (a container)
        return str(os.getuid())


def _engine(settings: config.Settings):
    from xds.store import db

    return db.make_engine(settings.database)


def _database_error(settings: config.Settings, exc: Exception) -> int:
    from xds.store import db

    print(f"xds: cannot use the database {db.redacted(settings.database)} ({type(exc).__name__}); {_DB_HELP}",
          file=sys.stderr)
    return 2


def _record(args, settings: config.Settings, action: str, **values) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from xds.consent import store
    from xds.consent.policy import ConsentPolicy
    from xds.consent.record import ConsentError
    from xds.store import db

    try:
        policy = ConsentPolicy.from_settings(settings)
    except ValueError as exc:
        print(f"xds: {exc}", file=sys.stderr)
        return 2
    engine = _engine(settings)
    try:
        with db.write_session(engine) as session:
            written = store.change(session, args.patient, action, policy, at=_dt.datetime.now(_dt.UTC),
                                   recorded_by=args.by or _who(), reason=args.reason, source="cli", **values)
    except ConsentError as refused:
        print(f"xds: {refused}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        return _database_error(settings, exc)
    finally:
        engine.dispose()
    print(f"person {written.person_id}: {written.state.describe()}")
    if not policy.enabled:
        print("note: access_control is off: consent is recorded but not enforced", file=sys.stderr)
    return 0


def _grant(args, settings: config.Settings) -> int:
    model = args.model or ("facility" if args.facility else "person" if args.person else "blanket")
    try:
        valid_from, valid_to = _time(args.valid_from), _time(args.valid_to, end=True)
    except ValueError as exc:
        print(f"xds: --from/--to: {exc}", file=sys.stderr)
        return 2
    return _record(args, settings, "grant", model=model, facilities=args.facility, individuals=args.person,
                   excluded=args.exclude, valid_from=valid_from, valid_to=valid_to)


def _exclude(args, settings: config.Settings) -> int:
    return _record(args, settings, "exclude", facilities=args.facilities)


def _hold(args, settings: config.Settings) -> int:
    return _record(args, settings, "release" if args.release else "hold")


def _withdraw(args, settings: config.Settings) -> int:
    return _record(args, settings, "withdraw")


def _when(moment: _dt.datetime | None) -> str:
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


def _show(args, settings: config.Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from xds.arr.command import table
    from xds.consent import store
    from xds.identity import store as identity_store
    from xds.store import db

    engine = _engine(settings)
    try:
        with db.make_sessionmaker(engine)() as session:
            person = store.persons_of(session, [args.patient]).get(args.patient)
            if person is None:
                print(f"xds: patient {args.patient} is not known to the PIX Manager", file=sys.stderr)
                return 1
            ids = [identity_store.identifier(r).cx + ("" if r.status == identity_store.ACTIVE else " (merged)")
                   for r in identity_store.members(session, person, active_only=False)]
            records = store.history(session, person)
    except SQLAlchemyError as exc:
        return _database_error(settings, exc)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps({"person": person, "ids": ids, "history": [
            {"at": r.recorded_at.isoformat(), "action": r.action, "by": r.recorded_by, "reason": r.reason,
             "source": r.source, "patient": r.patient_id, "model": r.state.model,
             "facilities": list(r.state.facilities), "excluded": list(r.state.excluded),
             "individuals": list(r.state.individuals),
             "valid_from": r.state.valid_from.isoformat() if r.state.valid_from else None,
             "valid_to": r.state.valid_to.isoformat() if r.state.valid_to else None,
             "on_hold": r.state.on_hold,
             "withdrawn_at": r.state.withdrawn_at.isoformat() if r.state.withdrawn_at else None,
             # what the change asked (None for records written before migration 0009)
             "asked": json.loads(r.arguments) if r.arguments is not None else None}
            for r in records]}, ensure_ascii=False, indent=1))
        return 0
    print(f"person {person}: {', '.join(ids)}")
    print(f"consent now: {records[-1].state.describe() if records else 'none recorded'}")
    if records:
        print()
        print(table(("when (UTC)", "action", "by", "source", "for id", "reason", "consent after it"),
                    [(_when(r.recorded_at), r.action, r.recorded_by, r.source, r.patient_id, r.reason or "-",
                      r.state.describe()) for r in records]))
    return 0


def _review(args, settings: config.Settings) -> int:
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from xds.arr.command import table
    from xds.consent import store
    from xds.store import db
    from xds.store.tables import ConsentBreakGlassRow as B

    try:
        since, until = _time(args.since), _time(args.until, end=True)
    except ValueError as exc:
        print(f"xds: --since/--until: {exc}", file=sys.stderr)
        return 2
    engine = _engine(settings)
    try:
        with db.make_sessionmaker(engine)() as session:
            statement = select(B).order_by(B.id)
            if args.patient:
                person = store.persons_of(session, [args.patient]).get(args.patient)
                statement = statement.where(B.person_id == person) if person is not None else \
                    statement.where(B.patient_id == args.patient)
            if since:
                statement = statement.where(B.at >= since)
            if until:
                statement = statement.where(B.at < until)
            rows = session.scalars(statement.limit(args.limit)).all()
    except SQLAlchemyError as exc:
        return _database_error(settings, exc)
    finally:
        engine.dispose()
    if not rows:
        print("No break-glass access.")
        return 0
    print(table(("when (UTC)", "transaction", "patient", "facility", "user", "purpose of use", "address", "why",
                 "message id"),
                [(_when(store.aware(r.at)), r.transaction, r.patient_id, r.facility or "-", r.user_name or r.user_id
                  or "-", r.purposes or "-", r.address or "-", r.reason, r.message_id or "-") for r in rows]))
    print(f"{len(rows)} break-glass access(es)")
    return 0
