"""The administrator's patient commands: the registry's patient ids, and the PIX Manager /
PDQ Supplier's patients, their links and the candidates the linking rules left for a person.

    xds patients add ID... [--from FILE] [--family F --given G]... [--birth YYYYMMDD] [--gender M|F|UN]
    xds patients list
    xds patients remove ID...
    xds patients search [NAME] [--family F] [--given G] [--name TEXT] [--prefix] [--birth YYYYMMDD]
                        [--gender M|F|UN] [--id ID]... [--limit N] [--json]
    xds patients show ID [--json]
    xds patients candidates [--json]
    xds patients link A B [--force]
    xds patients unlink A
    xds patients dismiss A B

IDs are XDS patient ids, `extension^^^&root&ISO`. Exit status: 0; 1 when the identity store
refuses (an id never fed, an id merged away, a link that would give a person two ids of one
assigning authority: the IdentityError's code and reason are printed) or, for show, dismiss,
when there is nothing to show or dismiss; 2 for bad input (an id that is not a CX, a birth date
that is not one, no search parameter) or a database that cannot be read.

How `add` meets the registry (one truth). The Document Registry accepts the ids on its patient
list (xds.store.patients); the PIX Manager's feed (xds.identity.feed, the code ITI-44 runs,
ITI TF-2b 3.44.4) puts the ids of the affinity domain there as it feeds them, and takes a
merged-away id off it. So:

* With `affinity_domain` set, `add` is a local Patient Identity Feed: each new id goes through
  xds.identity.feed.add as a PatientRecord with that id (and the demographics given), in the
  same transaction as what it tells the registry. It joins the cross-references (the linking
  rules may link it, or list candidates); the registry accepts it when its assigning authority
  is the affinity domain, and an id of another authority is known to the PIX Manager only (the
  command says so). An id fed before is left as it is (a bare `add` must not wipe the
  demographics its source fed), unless demographics are given: then the fields given replace
  those of the stored record (a name replaces the stored names of its representation: kanji,
  kana or alphabetic) and it is fed as a revise. An id merged away is refused. A domain id
  the PIX Manager knows but the registry no longer accepts (after `remove`) is accepted again.
* Without `affinity_domain` no feed tells the registry anything, so `add` puts the ids on the
  registry's list itself, as it always did (100,000 ids in seconds, where feeding them one by
  one, a few hundred a second, takes minutes). An id given with demographics is also fed to the
  PIX Manager, in the same transaction, so `show` and `search` find it.

`remove` takes ids off the registry's list (its submissions then fail with
XDSUnknownPatientId; the documents stay registered). The PIX Manager keeps them, their links
and history (the feed has no delete, ITI TF-2b 3.44): the command says which it still knows,
and a later feed of one of them (its source revising it) makes the registry accept it again.
`list` prints the registry's list.

Audit: with `audit_destinations` set, every change these commands make (add, link, unlink,
dismiss, remove) is recorded as the same change arriving by ITI-44 is (_Audit), the local user
as the human requestor; the records wait in the audit spool for a server to send them.

The cross-reference policy belongs to the network (ITI TF-1 5: the Patient Identifier
Cross-reference Domain agrees on "a set of processes for administering these policies"):
`candidates` lists what the linking rules (xds.identity.links) would not decide alone, and
`link`, `unlink`, `dismiss` are the administrator's decisions, kept by later feeds.

`search` is a PDQ query (ITI-47, ITI TF-2b 3.47.4.1.2) on the local store: a kanji name finds
the ideographic name, a kana name (full-width or half-width, hiragana or katakana) the syllabic
one; --prefix sets the SRCH use (parts match as prefixes). `--json` prints, for scripts, the
records in the form they are stored in (xds.identity.records) with ids as CX.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import itertools
import json
import os
import shlex
import sys
import unicodedata
from dataclasses import dataclass

from xds import config

#: Why the linking rules list a pair instead of linking it (xds.identity.links), in a reader's words.
REASONS = {
    "identifier-conflict": "the other ids its record names belong to more than one person",
    "demographics-ambiguous": "the same name, birth date and gender as patients of more than one person",
    "demographics-partial": "the same name and birth date but another gender, or the same family name, birth "
                            "date and gender but another given name",
    # The two kinds of demographics-partial, told apart by the records (_explain).
    "other-gender": "the same name and birth date, but another gender",
    "other-given-name": "the same family name, birth date and gender, but another given name",
    "same-domain": "the rules match them, but the person already has an id of this assigning authority: a "
                   "duplicate its source resolves by a merge (ITI-44), or link with --force",
}
#: EntityNameUse codes (HL7v3) as printed next to a name.
NAME_USES = {"L": "legal", "A": "alias", "P": "pseudonym", "ASGN": "assigned", "C": "license", "I": "indigenous",
             "R": "religious", "OR": "official registry", "SRCH": "search", "PHON": "phonetic",
             "SNDX": "soundex", "IDE": "kanji", "SYL": "kana", "ABC": "alphabetic"}
GENDERS = {"M": "male", "F": "female", "UN": "undifferentiated"}
#: How an id came to be in its person (IdentityPatientRow.link).
LINKS = {"new": "the first id of its person", "identifier": "linked by the identifier rule",
         "demographics": "linked by the demographics rule", "manual": "linked by an administrator",
         "merge": "joined by a merge (ITI-44)",
         "named": "named by another source's feed (asOtherIDs); its own source has not fed it"}
#: How many per-id lines `add` prints before it only counts.
_DETAIL_LINES = 50
#: Ids `add` feeds in one database transaction (each in a savepoint of its own): fewer commits,
#: and few enough advisory locks held at once on PostgreSQL.
_FEED_BATCH = 100


def add_parser(subparsers) -> None:
    """Add `patients` and its commands to the `xds` command's subparsers."""
    patients = subparsers.add_parser(
        "patients", help="patient ids: the registry's list, the PIX Manager's patients, links and candidates",
        description="The patient ids the Document Registry accepts, and the PIX Manager / PDQ Supplier's "
                    "patients: search, show, the link candidates its rules listed, and the administrator's "
                    "link, unlink and dismiss. Ids are written ID^^^&OID&ISO.")
    commands = patients.add_subparsers(dest="patients_command", required=True)

    add = commands.add_parser(
        "add", help="add patient ids: a local feed to the PIX Manager, which tells the registry",
        description="With affinity_domain set: each id is fed to the PIX Manager (the code ITI-44 runs), "
                    "which makes an id of the affinity domain known to the registry. Without it: the ids "
                    "go on the registry's patient list (and an id given with demographics is also fed). "
                    "Demographics describe one id; repeat --family/--given for a kanji and a kana name.")
    add.add_argument("ids", nargs="*", metavar="ID")
    add.add_argument("--from", dest="from_file", metavar="FILE", help="a file with one patient id a line")
    add.add_argument("--family", action="append", default=[], metavar="NAME",
                     help="a family name (repeatable: the nth pairs with the nth --given)")
    add.add_argument("--given", action="append", default=[], metavar="NAME", help="a given name (repeatable)")
    add.add_argument("--birth", type=_birth, metavar="YYYYMMDD", help="the birth date (or YYYY, YYYYMM)")
    add.add_argument("--gender", type=_gender, metavar="M|F|UN", help="the administrative gender")
    add.set_defaults(run=_add)

    commands.add_parser("list", help="list the patient ids the registry accepts").set_defaults(run=_list)

    remove = commands.add_parser(
        "remove", help="take patient ids off the registry's list (the PIX Manager keeps them)")
    remove.add_argument("ids", nargs="+", metavar="ID")
    remove.set_defaults(run=_remove)

    search = commands.add_parser(
        "search", help="find patients by demographics (a local PDQ query, ITI-47)",
        description="Every parameter given must match. Names match whatever their width or kana kind: a "
                    "kanji name finds the kanji name, a kana name the kana name.")
    search.add_argument("text", nargs="?", metavar="NAME", help="a name as text (the same as --name)")
    search.add_argument("--name", metavar="TEXT", help="a whole name (family then given; spaces do not count) "
                                                       "or a family name")
    search.add_argument("--family", metavar="NAME", help="the family name")
    search.add_argument("--given", metavar="NAME", help="the given name")
    search.add_argument("--prefix", action="store_true", help="name parts match as prefixes (SRCH)")
    search.add_argument("--birth", type=_birth, metavar="YYYYMMDD",
                        help="the birth date; YYYY or YYYYMM match the whole year or month")
    search.add_argument("--gender", type=_gender, metavar="M|F|UN")
    search.add_argument("--id", dest="ids", action="append", default=[], type=_cx, metavar="ID",
                        help="a patient id (repeatable: any of them)")
    search.add_argument("--limit", type=_positive, default=50, metavar="N", help="at most N patients (default 50)")
    search.add_argument("--json", action="store_true", help="print the matches as JSON")
    search.set_defaults(run=_search)

    show = commands.add_parser(
        "show", help="one patient: its record, its person's ids, merges, history, candidates")
    show.add_argument("id", type=_cx, metavar="ID")
    show.add_argument("--json", action="store_true", help="print it as JSON")
    show.set_defaults(run=_show)

    candidates = commands.add_parser(
        "candidates", help="the pairs the linking rules would not link alone, for an administrator to decide")
    candidates.add_argument("--json", action="store_true", help="print them as JSON")
    candidates.set_defaults(run=_candidates)

    link = commands.add_parser(
        "link", help="link A to B: A's person (all its ids) joins B's; feeds do not undo it")
    link.add_argument("a", type=_cx, metavar="A")
    link.add_argument("b", type=_cx, metavar="B")
    link.add_argument("--force", action="store_true",
                      help="link even when the person then holds two ids of one assigning authority")
    link.set_defaults(run=_link)

    unlink = commands.add_parser(
        "unlink", help="take A out of its person into one of its own; the rules will not link it again")
    unlink.add_argument("a", type=_cx, metavar="A")
    unlink.set_defaults(run=_unlink)

    dismiss = commands.add_parser("dismiss", help="forget the candidate pair A, B: they are two persons")
    dismiss.add_argument("a", type=_cx, metavar="A")
    dismiss.add_argument("b", type=_cx, metavar="B")
    dismiss.set_defaults(run=_dismiss)

    notifications = commands.add_parser(
        "notifications", help="the ITI-46 notifications PIX Consumers refused (parked): list, send again, drop")
    action = notifications.add_mutually_exclusive_group()
    action.add_argument("--requeue", nargs="*", type=int, metavar="ID",
                        help="send these (all, without ids) again, as their persons' ids are now")
    action.add_argument("--discard", nargs="*", type=int, metavar="ID", help="drop these (all, without ids)")
    notifications.add_argument("--json", action="store_true", help="print JSON")
    notifications.set_defaults(run=_notifications_command)


# --- arguments -----------------------------------------------------------------------------

def _identifier(text: str):
    """An XDS patient id as the identity store's Identifier; ValueError saying what is wrong."""
    from xds.model import PatientId
    from xds.model.person import Identifier

    parsed = PatientId.parse(text)
    return Identifier(parsed.authority_oid, parsed.id)


def _cx(text: str):
    try:
        return _identifier(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _birth(text: str) -> str:
    """An HL7 TS to the day at most: YYYY, YYYYMM or YYYYMMDD (1971-01-01 is taken too)."""
    value = text.strip().replace("-", "")
    formats = {4: "%Y", 6: "%Y%m", 8: "%Y%m%d"}
    if not value.isdigit() or len(value) not in formats:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYYMMDD (or YYYY, YYYYMM)")
    try:
        _dt.datetime.strptime(value, formats[len(value)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date that exists") from None
    return value


def _gender(text: str) -> str:
    value = text.strip().upper()
    if value not in GENDERS:
        raise argparse.ArgumentTypeError(f"{text!r} is not an administrative gender: M, F or UN")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of at least 1")
    return value


def _names(families: list[str], givens: list[str]):
    """The names --family/--given describe, paired in order, each marked legal and with its
    representation (kanji IDE, kana SYL, alphabetic ABC) read from its characters."""
    from xds.identity.names import script_of
    from xds.model.person import PersonName

    names = []
    for family, given in itertools.zip_longest(families, givens, fillvalue=""):
        family, given = family.strip(), given.strip()
        if family or given:
            names.append(PersonName(family=(family,) if family else (), given=(given,) if given else (),
                                    uses=("L", script_of(family + given))))
    return names


def _read_ids(args) -> list[str]:
    ids = list(args.ids)
    if getattr(args, "from_file", None):
        with open(args.from_file, encoding="utf-8") as f:
            ids += [line.strip() for line in f if line.strip() and not line.startswith("#")]
    return ids


# --- the database --------------------------------------------------------------------------

def _command(name: str):
    """Run the command with a database engine and the identity policy; a database that cannot
    be read, or settings the policy refuses, end it with exit status 2 and a sentence."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(args, settings: config.Settings) -> int:
            from sqlalchemy.exc import SQLAlchemyError

            from xds.identity.policy import IdentityPolicy
            from xds.store import db

            try:
                policy = IdentityPolicy.from_settings(settings)
            except ValueError as exc:
                print(f"xds patients {name}: the settings: {exc}", file=sys.stderr)
                return 2
            engine = db.make_engine(settings.database, busy_timeout=settings.busy_timeout)
            try:
                return fn(args, settings, engine, policy)
            except BrokenPipeError:  # `xds patients search ... | head`: the reader has what it wanted
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (nothing more is written to it)
                return 1
            except SQLAlchemyError as exc:
                print(f"xds patients {name}: cannot use the database {db.redacted(settings.database)} "
                      f"({type(exc).__name__}); is it created (`xds db upgrade`)?", file=sys.stderr)
                return 2
            finally:
                engine.dispose()
        return run
    return wrap


def _notifications(settings: config.Settings):
    """The ITI-46 queue's settings (pix_consumers ...): a feed, link or unlink that changes a
    person's ids queues its notifications in its own transaction (xds.identity.notify); the
    servers' senders deliver them."""
    from xds.identity.notify import NotificationPolicy

    return NotificationPolicy.from_settings(settings)


def _read(engine):
    from xds.store import db

    return db.make_sessionmaker(engine)()


# --- the audit trail of the administrator's changes -------------------------------------------

#: What a record says was done to a patient record, as ITI-44 would record it (xds.audit.events):
#: an id added (C), a record revised or its links changed (U), an id the registry no longer
#: accepts (D).
_ADD, _REVISE, _DELETE = "add", "revise", "delete"


class _Audit:
    """The audit records (ATNA) of the administrator's changes to the PIX Manager's patients and
    the registry's patient list: each recorded as the same change arriving by ITI-44 is, the PIX
    Manager's Patient Record (DICOM 110110) of ITI TF-2b 3.44.5.1.2, one patient a record; the
    source this command (`xds patients add` on this host), the destination the identity store
    it changed (the database, its password hidden), the local user as the human requestor. No
    HL7 message carried the change: the command's own id stands where the message id would
    (ParticipantObjectDetail II), so one command's records can be told apart. The records go to
    the audit spool, as a server's do (audit_destinations); a server (`xds serve`) delivers
    them. With no audit destination nothing is recorded, as for the server."""

    def __init__(self, command: str, settings: config.Settings):
        import socket

        from xds.audit import events
        from xds.audit.trail import AuditTrail
        from xds.hl7v3.ns import new_message_id
        from xds.store import db

        self.trail = AuditTrail.from_settings(settings)
        host = socket.gethostname()
        self.common = dict(reply_to=f"xds patients {command}", client_address=host,
                           endpoint_url=db.redacted(settings.database), server_address=host,
                           human_requestor=events.HumanRequestor(_user()), query_id=new_message_id())

    def record(self, what: str, patient: str, *, refused: str = "") -> None:
        from xds.audit import events
        from xds.hl7v3.ns import INTERACTIONS

        # The request whose record ITI-44 writes for the same change (its EventActionCode)
        action = INTERACTIONS["PRPA_IN201301UV02" if what == _ADD else "PRPA_IN201302UV02"].action
        event = events.ITI_44_DELETE if what == _DELETE else ("ITI-44", "PatientIdentifierCrossReferenceManager")
        self.trail.record_transaction(event, events.TransactionContext(
            action=action, patient_id=patient, outcome="Failure" if refused else "Success",
            outcome_description=refused, **self.common))

    def __enter__(self) -> "_Audit":
        return self

    @property
    def enabled(self) -> bool:
        return self.trail.enabled

    def __exit__(self, *exc) -> None:
        if self.trail.enabled:  # (NO_AUDIT is shared: not closed here)
            self.trail.close()  # the records reach the disk (the spool's segment is sealed)


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no user name for this uid (a container): the uid is still someone
        return str(os.getuid())


def _audit(command: str, settings: config.Settings) -> _Audit | int:
    """The command's audit records; exit status 2, said, when the settings name a destination
    that is none."""
    try:
        return _Audit(command, settings)
    except ValueError as exc:
        print(f"xds patients {command}: the settings: {exc}", file=sys.stderr)
        return 2


def _change_settings(command: str, settings: config.Settings):
    """(the ITI-46 queue's settings, the audit records) of a command that changes the persons'
    ids; exit status 2, said, when the settings are wrong."""
    try:
        notifications = _notifications(settings)
    except ValueError as exc:
        print(f"xds patients {command}: the settings: {exc}", file=sys.stderr)
        return 2
    audit = _audit(command, settings)
    return audit if isinstance(audit, int) else (notifications, audit)


# --- add, list, remove ---------------------------------------------------------------------

@_command("add")
def _add(args, settings, engine, policy) -> int:
    from xds.store import db, patients

    try:
        texts = _read_ids(args)
    except OSError as exc:
        print(f"xds: {exc}", file=sys.stderr)
        return 2
    identifiers, bad = [], []
    for text in texts:
        try:
            identifiers.append(_identifier(text))
        except ValueError as exc:
            bad.append(str(exc))
    if bad:
        for reason in bad[:20]:
            print(f"xds: {reason}", file=sys.stderr)
        if len(bad) > 20:
            print(f"xds: ... and {len(bad) - 20} more", file=sys.stderr)
        print("xds: nothing was added", file=sys.stderr)
        return 2
    names = _names(args.family, args.given)
    demographics = bool(names or args.birth or args.gender)
    if demographics and len(set(identifiers)) != 1:
        print("xds: --family, --given, --birth and --gender describe one patient: give one id", file=sys.stderr)
        return 2

    if not policy.affinity_domain and not demographics:
        # No affinity domain: the registry's list is all there is to tell (see the docstring).
        audit = _audit("add", settings)
        if isinstance(audit, int):
            return audit
        with audit:
            with db.write_session(engine) as session:
                known = patients.known(session, texts) if audit.enabled else set()
                added = patients.add(session, texts)
            for text in dict.fromkeys(texts):
                if text not in known:
                    audit.record(_ADD, text)
        print(f"{added} patient id(s) added, {len(set(texts)) - added} already known")
        return 0
    checked = _change_settings("add", settings)
    if isinstance(checked, int):
        return checked
    notifications, audit = checked
    with audit:
        return _feed(list(dict.fromkeys(identifiers)), names, args, engine, policy, notifications, audit)


def _feed(identifiers, names, args, engine, policy, notifications, audit: _Audit) -> int:
    """Feed each id to the PIX Manager (see the docstring), _FEED_BATCH ids a transaction, each
    in a savepoint: an id refused leaves nothing, the others go on. The ITI-46 notifications of
    a feed are queued with it, as the service queues those of ITI-44."""
    from xds.identity import notify
    from xds.identity.errors import IdentityError
    from xds.store import db
    from xds.store.db import chunked

    counts = {"added": 0, "known": 0, "revised": 0, "refused": 0}
    accepted_again, outside, details = [], [], []
    progress = sys.stderr.isatty() and len(identifiers) > 10 * _FEED_BATCH
    for done, chunk in enumerate(chunked(identifiers, _FEED_BATCH)):
        if progress:
            print(f"\rfed {done * _FEED_BATCH} of {len(identifiers)}", end="", file=sys.stderr, flush=True)
        records = []  # audited once the batch is committed: what was done, not what was tried
        with db.write_session(engine) as session:
            for identifier in chunk:
                try:
                    with session.begin_nested():
                        action, result, again = _feed_one(session, identifier, names, args, policy)
                        if result is not None:
                            notify.enqueue(session, result, notifications)
                except IdentityError as refused:
                    counts["refused"] += 1
                    records.append((_ADD, identifier.cx, refused.message))
                    print(f"xds: {identifier.cx}: refused ({refused.code}): {refused.message}", file=sys.stderr)
                    continue
                counts[action] += 1
                if action != "known" or again:  # a known id changes only when the registry takes it again
                    records.append((_ADD if action == "added" else _REVISE, identifier.cx, ""))
                if again:
                    accepted_again.append(identifier.cx)
                if policy.affinity_domain and identifier.root != policy.affinity_domain:
                    outside.append(identifier.cx)
                if result is not None:
                    details += _feed_details(result)
        for what, patient, refused in records:
            audit.record(what, patient, refused=refused)
    if progress:
        print(f"\rfed {len(identifiers)} of {len(identifiers)}", file=sys.stderr)
    line = f"{counts['added']} patient id(s) added, {counts['known']} already known"
    if counts["revised"]:
        line += f", {counts['revised']} revised"
    if counts["refused"]:
        line += f", {counts['refused']} refused"
    print(line)
    for text in details[:_DETAIL_LINES]:
        print(f"  {text}")
    if len(details) > _DETAIL_LINES:
        print(f"  ... and {len(details) - _DETAIL_LINES} more (xds patients show ID, xds patients candidates)")
    if accepted_again:
        print(f"the registry accepts {len(accepted_again)} of them again (they had been removed)")
    if outside:
        example = f" ({outside[0]})" if len(outside) == 1 else f" ({outside[0]}, ...)"
        print(f"{len(outside)} id(s){example} not of the affinity domain {policy.affinity_domain}: the PIX "
              "Manager knows them, the registry does not accept them")
    return 1 if counts["refused"] else 0


def _feed_one(session, identifier, names, args, policy):
    """(what happened: added, known, revised; the FeedResult or None; whether the registry
    accepts the id again after a remove)."""
    import dataclasses

    from xds.identity import feed, store
    from xds.identity.directory import IdentityDirectory
    from xds.identity.errors import IdentityError
    from xds.identity.links import NAMED
    from xds.model.person import PatientRecord
    from xds.store import patients

    demographics = bool(names or args.birth or args.gender)
    # Without an affinity domain the registry's list is written here (the feed will not).
    if not policy.affinity_domain:
        patients.add(session, [identifier.cx])
    row = store.get(session, identifier)
    if row is None or row.link == NAMED:  # never fed (another source's feed may have named it)
        record = PatientRecord(ids=[identifier], names=names, gender=args.gender, birth_time=args.birth)
        return "added", feed.add(session, record, policy), False
    if row.status == store.RETIRED:
        survivor = IdentityDirectory().survivor(session, identifier.cx)
        raise IdentityError("retired", f"{identifier.cx} was merged into {survivor or 'another id'}: "
                            "it is no longer used", identifier)
    if demographics:
        stored = store.record_of(row)
        given = {policy.normaliser.script(n) for n in names}
        kept = [n for n in stored.names if policy.normaliser.script(n) not in given]
        record = dataclasses.replace(stored, names=[*names, *kept], birth_time=args.birth or stored.birth_time,
                                     gender=args.gender or stored.gender, sender=None)
        return "revised", feed.revise(session, record, policy), False
    again = False
    if policy.affinity_domain and identifier.root == policy.affinity_domain:
        # The rule the feed follows for every active id of the domain (xds.identity.feed).
        again = bool(patients.add(session, [identifier.cx]))
    return "known", None, again


def _feed_details(result) -> list[str]:
    """What a person should know of one feed beyond its count: links and candidates."""
    lines = []
    others = [i.cx for i in result.linked if i != result.patient]
    if others:
        lines.append(f"{result.patient.cx}: linked ({result.link}) to {', '.join(others)}")
    if result.candidates:
        lines.append(f"{result.patient.cx}: may be the same person as {', '.join(i.cx for i in result.candidates)}"
                     " (xds patients candidates)")
    return lines


@_command("list")
def _list(args, settings, engine, policy) -> int:
    from xds.store import patients

    with _read(engine) as session:
        for pid in patients.list_all(session):
            print(pid)
    return 0


@_command("remove")
def _remove(args, settings, engine, policy) -> int:
    from xds.identity import store
    from xds.identity.directory import parse_cx
    from xds.store import db, patients

    audit = _audit("remove", settings)
    if isinstance(audit, int):
        return audit
    with audit:
        with db.write_session(engine) as session:
            known = patients.known(session, args.ids) if audit.enabled else set()
            removed = patients.remove(session, args.ids)
            parsed = [i for i in (parse_cx(text) for text in args.ids) if i is not None]
            kept = [i.cx for i, row in store.get_many(session, parsed).items() if row.status == store.ACTIVE]
        for text in dict.fromkeys(args.ids):
            if text in known:  # the registry's record of it is deleted (its documents stay)
                audit.record(_DELETE, text)
    print(f"{removed} patient id(s) removed")
    if kept:
        print(f"the PIX Manager still knows {len(kept)} of them ({kept[0]}{', ...' if len(kept) > 1 else ''}): "
              "the registry accepts one again when its source feeds it, or with xds patients add")
    return 0


# --- search ----------------------------------------------------------------------------------

@_command("search")
def _search(args, settings, engine, policy) -> int:
    from xds.identity import pdq
    from xds.identity.errors import IdentityError
    from xds.model.person import PersonName

    if args.text and args.name:
        print("xds patients search: give the name once (NAME or --name)", file=sys.stderr)
        return 2
    text = (args.text or args.name or "").strip()
    if text and (args.family or args.given):
        print("xds patients search: give a name as text (NAME, --name) or in parts (--family, --given), "
              "not both", file=sys.stderr)
        return 2
    uses = (pdq.SEARCH_USE,) if args.prefix else ()
    name = None
    if text:
        name = PersonName(text=text, uses=uses)
    elif args.family or args.given:
        name = PersonName(family=(args.family,) if args.family else (), given=(args.given,) if args.given else (),
                          uses=uses)
    query = pdq.PdqQuery(names=[name] if name else [], birth_time=args.birth, gender=args.gender, ids=args.ids)
    try:
        with _read(engine) as session:
            page = pdq.search(session, query, policy, count=args.limit)
    except IdentityError as exc:  # no-parameters
        print(f"xds patients search: {exc.message}: give a name, --birth, --gender or --id", file=sys.stderr)
        return 2
    if args.json:
        _print_json({"total": page.total, "matches": [
            {"id": m.patient.cx, "score": m.score, "person": m.person_id,
             "other_ids": [i.cx for i in m.other_ids], "record": _record_json(m.record)} for m in page.matches]})
        return 0
    rows = [_summary(m.patient, m.record, policy) + [str(m.score), ", ".join(i.cx for i in m.other_ids)]
            for m in page.matches]
    if rows:
        print(_table([*SUMMARY, "score", "linked ids"], rows))
    more = f" (--limit {args.limit}: {page.remaining} more)" if page.remaining else ""
    print(f"{len(page.matches)} of {page.total} patient(s){more}")
    return 0


# --- show ------------------------------------------------------------------------------------

@_command("show")
def _show(args, settings, engine, policy) -> int:
    from xds.identity import links, store
    from xds.store import patients

    identifier = args.id
    with _read(engine) as session:
        row = store.get(session, identifier)
        on_list = bool(patients.known(session, [identifier.cx]))
        if row is None:
            where = ("the registry accepts it (it is on its patient list)" if on_list
                     else "nor does the registry accept it")
            print(f"xds patients show: {identifier.cx}: the PIX Manager never had it fed; {where}", file=sys.stderr)
            return 1
        person = store.person_of(session, identifier)
        history = store.history(session, row.pk)
        candidates = [c for c in links.candidates(session) if identifier in (c.patient, c.other)]
        others = store.get_many(session, [c.other if c.patient == identifier else c.patient for c in candidates])
    assert person is not None
    me = next(p for p in person.patients if p.identifier == identifier)
    retired_into_it = [p.identifier for p in person.patients if p.merged_into == identifier]
    pairs = [(c.other if c.patient == identifier else c.patient, c) for c in candidates]

    if args.json:
        _print_json({
            "id": identifier.cx, "status": me.status, "link": me.link, "revision": me.revision,
            "updated_at": _when(me.updated_at), "record": _record_json(me.record),
            "merged_into": me.merged_into.cx if me.merged_into else None,
            "retired_into_it": [i.cx for i in retired_into_it],
            "registry_accepts": on_list and me.status == store.ACTIVE,
            "person": {"id": person.id, "revision": person.revision, "ids": [
                {"id": p.identifier.cx, "status": p.status, "link": p.link,
                 "merged_into": p.merged_into.cx if p.merged_into else None} for p in person.patients]},
            "history": [{"revision": h.revision, "action": h.action, "at": _when(h.at), "person": h.person_id,
                         "source": h.sender, "record": _record_json(h.record) if h.record else None}
                        for h in history],
            "candidates": [{"id": other.cx, "reason": c.reason, "listed_at": _when(c.created_at)}
                           for other, c in pairs],
        })
        return 0

    survivor = me.merged_into.cx if me.merged_into else "?"
    state = "active" if me.status == store.ACTIVE else f"retired: merged into {survivor}"
    lines = _record_lines(me.record, policy)
    if me.status != store.ACTIVE:
        lines.append(("registry", f"refuses it: its documents are found under {survivor}"))
    else:
        lines.append(("registry", "accepts it" if on_list else "does not accept it (not on its patient list)"))
    if retired_into_it:
        lines.append(("merged into it", ", ".join(i.cx for i in retired_into_it)))
    print(f"{identifier.cx}  ({state}; {LINKS.get(me.link, me.link)}; revision {me.revision}, "
          f"{_when(me.updated_at)})")
    for label, value in lines:
        print(f"  {_pad(label, 22)}{value}")

    active = sum(p.status == store.ACTIVE for p in person.patients)
    print(f"\nperson {person.id} (revision {person.revision}): {active} active id(s)")
    rows = []
    for p in person.patients:
        status = p.status if p.merged_into is None else f"retired into {p.merged_into.cx}"
        rows.append([p.identifier.cx + (" *" if p.identifier == identifier else ""), status, p.link,
                     *_summary(p.identifier, p.record, policy)[1:]])
    print(_indent(_table(["id", "status", "link", *SUMMARY[1:]], rows)))

    print("\nhistory")
    print(_indent(_table(["rev", "when", "action", "person", "source", "record"], [
        [str(h.revision), _when(h.at), h.action, str(h.person_id), _source(h.sender) if h.record else "",
         _brief(h.record, policy) if h.record else ""] for h in history])))

    print("\ncandidates" if pairs else "\ncandidates: none")
    for other, c in pairs:
        other_record = store.record_of(others[other]) if other in others else None
        print(f"  {other.cx}  {_brief(other_record, policy) if other_record else ''}")
        print(f"    {c.reason}: {_explain(c.reason, me.record, other_record)}")
    return 0


def _record_lines(record, policy) -> list[tuple[str, str]]:
    """A record as fed, field by field: every name with its uses, birth, gender, addresses,
    telecoms, mother's maiden name, multiple birth, deceased, other ids, source."""
    from xds.dtm import readable

    lines = []
    for name in record.names:
        uses = " ".join(name.uses)
        meaning = ", ".join(NAME_USES[u] for u in name.uses if u in NAME_USES)
        lines.append(("name", f"{_name_text(name)}  [{uses}{': ' + meaning if meaning else ''}]" if uses
                      else _name_text(name)))
    if record.birth_time:
        lines.append(("birth", readable(record.birth_time)))
    if record.gender:
        lines.append(("gender", f"{record.gender} ({GENDERS[record.gender]})" if record.gender in GENDERS
                      else record.gender))
    for address in record.addresses:
        parts = [*address.street_lines, *(v for _, v in address.other_parts), address.city, address.state,
                 address.postal_code, address.country, address.text]
        use = f"  [{' '.join(address.uses)}]" if address.uses else ""
        lines.append(("address", ", ".join(p for p in parts if p) + use))
    for telecom in record.telecoms:
        lines.append(("telecom", telecom.value + (f"  [{' '.join(telecom.uses)}]" if telecom.uses else "")))
    if record.mothers_maiden_name is not None:
        lines.append(("mother's maiden name", _name_text(record.mothers_maiden_name)))
    if record.multiple_birth is not None:
        order = f" (order {record.multiple_birth_order})" if record.multiple_birth_order else ""
        lines.append(("multiple birth", ("yes" if record.multiple_birth else "no") + order))
    if record.deceased is not None or record.deceased_time:
        when = f" ({readable(record.deceased_time)})" if record.deceased_time else ""
        lines.append(("deceased", ("yes" if record.deceased or record.deceased_time else "no") + when))
    for other in [*record.ids[1:], *record.other_ids]:
        lines.append(("other id", other.cx))
    if record.provider_organization:
        lines.append(("provider organization", record.provider_organization))
    lines.append(("source", _source(record.sender)))
    return lines


# --- candidates, link, unlink, dismiss -------------------------------------------------------

@_command("candidates")
def _candidates(args, settings, engine, policy) -> int:
    from xds.identity import links, store

    with _read(engine) as session:
        pairs = links.candidates(session)
        rows = store.get_many(session, [i for c in pairs for i in (c.patient, c.other)])
    if args.json:
        def patient(identifier):
            row = rows[identifier]
            return {"id": identifier.cx, "person": row.person_id, "status": row.status,
                    "record": _record_json(store.record_of(row))}
        _print_json([{"patient": patient(c.patient), "other": patient(c.other), "reason": c.reason,
                      "explanation": _explain(c.reason, store.record_of(rows[c.patient]),
                                              store.record_of(rows[c.other])),
                      "listed_at": _when(c.created_at)} for c in pairs])
        return 0
    if not pairs:
        print("no candidates: the linking rules left nothing to decide")
        return 0
    for number, c in enumerate(pairs, 1):
        a, b = store.record_of(rows[c.patient]), store.record_of(rows[c.other])
        print(f"{number}. {c.reason}: {_explain(c.reason, a, b)} (listed {_when(c.created_at)})")
        table = [_summary(i, record, policy) + [_source(rows[i].sender), str(rows[i].person_id)]
                 for i, record in ((c.patient, a), (c.other, b))]
        print(_indent(_table([*SUMMARY, "source", "person"], table), "   "))
        first, second = shlex.quote(c.patient.cx), shlex.quote(c.other.cx)
        force = " --force" if c.reason == "same-domain" else ""
        print(f"   one person:  xds patients link {first} {second}{force}")
        print(f"   two persons: xds patients dismiss {first} {second}")
    print(f"{len(pairs)} candidate pair(s)")
    return 0


@dataclass
class _Relinked:
    """What `link` or `unlink` did: the person the id is in now, the persons whose ids changed
    (their ITI-46 notifications), the ids whose records changed (each audited) and the person of
    the id before."""

    person: int
    persons: set
    changed: list
    before: object


def _relink(command: str, args, settings, engine, change) -> _Relinked | int:
    """`change(session)` -> _Relinked in one write transaction, with the ITI-46 notifications
    of the persons it changed queued in it, and audited as ITI-44 would record it; the exit
    status when the settings or the identity store refuse it."""
    from xds.identity import notify
    from xds.identity.errors import IdentityError
    from xds.store import db

    checked = _change_settings(command, settings)
    if isinstance(checked, int):
        return checked
    notifications, audit = checked
    with audit:
        try:
            with db.write_session(engine) as session:
                done = change(session)
                notify.enqueue_persons(session, done.persons, notifications)
        except IdentityError as refused:
            for identifier in dict.fromkeys([args.a, getattr(args, "b", args.a)]):
                audit.record(_REVISE, identifier.cx, refused=refused.message)
            return _refused(command, refused)
        for identifier in done.changed:
            audit.record(_REVISE, identifier.cx)
    return done


@_command("link")
def _link(args, settings, engine, policy) -> int:
    from xds.identity import links, store

    def change(session) -> _Relinked:
        before = store.person_of(session, args.a)
        person = links.link(session, args.a, args.b, policy, force=args.force)
        # The ids of a's person moved into b's (each record's links changed); a alone when they
        # were one person already (its link is the administrator's now).
        moved = [p.identifier for p in before.patients if p.status == store.ACTIVE] if before.id != person \
            else [args.a]
        return _Relinked(person, {person, before.id}, moved, before)

    done = _relink("link", args, settings, engine, change)
    if isinstance(done, int):
        return done
    with _read(engine) as session:
        view = store.person_of(session, args.b)
    print(f"linked: {args.a.cx} and {args.b.cx} are one person (person {done.person})")
    _print_person(view, policy)
    return 0


@_command("unlink")
def _unlink(args, settings, engine, policy) -> int:
    from xds.identity import links, store

    def change(session) -> _Relinked:
        before = store.person_of(session, args.a)
        person = links.unlink(session, args.a, policy)
        return _Relinked(person, {person, before.id} if person != before.id else set(), [args.a], before)

    done = _relink("unlink", args, settings, engine, change)
    if isinstance(done, int):
        return done
    person, before = done.person, done.before
    if sum(p.status == store.ACTIVE for p in before.patients) == 1:
        print(f"{args.a.cx} was alone in its person already (person {person}); the linking rules will not link "
              "it any more (xds patients link can)")
    else:
        print(f"unlinked: {args.a.cx} is a person of its own (person {person}); the linking rules will not link "
              "it again (xds patients link can)")
        with _read(engine) as session:
            left = store.person_of(session, next(p.identifier for p in before.patients
                                                 if p.identifier != args.a and p.status == store.ACTIVE))
        print(f"the ids it leaves (person {left.id}):")
        _print_person(left, policy)
    return 0


@_command("dismiss")
def _dismiss(args, settings, engine, policy) -> int:
    from xds.identity import links, store
    from xds.identity.errors import IdentityError
    from xds.store import db

    audit = _audit("dismiss", settings)
    if isinstance(audit, int):
        return audit
    with audit:
        with db.write_session(engine) as session:
            known = store.get_many(session, [args.a, args.b])
            missing = [i for i in (args.a, args.b) if i not in known]
            if missing:
                return _refused("dismiss", IdentityError("unknown-id", f"{missing[0].cx} was never fed", missing[0]))
            dismissed = links.dismiss(session, args.a, args.b)
        if dismissed:  # the administrator's decision on both records
            for identifier in (args.a, args.b):
                audit.record(_REVISE, identifier.cx)
    if not dismissed:
        print(f"xds patients dismiss: {args.a.cx} and {args.b.cx} are not a candidate pair "
              "(xds patients candidates lists them)", file=sys.stderr)
        return 1
    print(f"dismissed: {args.a.cx} and {args.b.cx} are two persons; no longer listed "
          "(a later feed of either may list them again)")
    return 0


@_command("notifications")
def _notifications_command(args, settings, engine, policy) -> int:
    from xds.identity import notify
    from xds.store import db

    if args.requeue is not None or args.discard is not None:
        with db.write_session(engine) as session:
            if args.requeue is not None:
                count = notify.requeue_parked(session, _notifications(settings), args.requeue or None)
                print(f"{count} notification(s) queued again")
            else:
                count = notify.discard_parked(session, args.discard or None)
                print(f"{count} notification(s) dropped")
        return 0
    with _read(engine) as session:
        rows = notify.parked(session)
    if args.json:
        _print_json([{"id": r.id, "consumer": r.consumer, "person": r.person_id, "ids": [i.cx for i in r.ids],
                      "created": r.created_at.isoformat(), "attempts": r.attempts, "reason": r.reason} for r in rows])
        return 0
    if not rows:
        print("no parked notifications")
        return 0
    print(_table(["id", "consumer", "ids", "created", "reason"],
                 [[str(r.id), r.consumer, " ".join(i.cx for i in r.ids), _when(r.created_at), r.reason]
                  for r in rows]))
    return 0


def _explain(reason: str, record, other) -> str:
    """Why a pair is listed, in a reader's words; a demographics-partial pair says which of its
    two kinds it is."""
    if reason == "demographics-partial" and record is not None and other is not None:
        return REASONS["other-gender" if record.gender != other.gender else "other-given-name"]
    return REASONS.get(reason, reason)


def _refused(command: str, refused) -> int:
    print(f"xds patients {command}: refused ({refused.code}): {refused.message}", file=sys.stderr)
    return 1


def _print_person(view, policy) -> None:
    from xds.identity import store

    rows = [[p.identifier.cx, p.link, *_summary(p.identifier, p.record, policy)[1:]]
            for p in view.patients if p.status == store.ACTIVE]
    print(_indent(_table(["id", "link", *SUMMARY[1:]], rows)))


# --- printing --------------------------------------------------------------------------------

#: The columns that say who a patient is, in every table.
SUMMARY = ["id", "kanji", "kana", "alphabetic", "birth", "gender"]


def _summary(identifier, record, policy) -> list[str]:
    """[id, kanji, kana, alphabetic, birth, gender]."""
    return [identifier.cx, *_who(record, policy)]


def _who(record, policy) -> list[str]:
    """[kanji, kana, alphabetic, birth, gender]: a name of each representation (several joined
    with ' / ')."""
    from xds.dtm import readable
    from xds.identity.names import ALPHABETIC, IDEOGRAPHIC, SYLLABIC

    by_script: dict[str, list[str]] = {IDEOGRAPHIC: [], SYLLABIC: [], ALPHABETIC: []}
    for name in record.names:
        text, script = _name_text(name), policy.normaliser.script(name)
        if text and text not in by_script[script]:
            by_script[script].append(text)
    return [*(" / ".join(by_script[s]) for s in (IDEOGRAPHIC, SYLLABIC, ALPHABETIC)),
            readable(record.birth_time), record.gender or ""]


def _brief(record, policy) -> str:
    """A record on one line: its names, birth date and gender."""
    return "  ".join(value for value in _who(record, policy) if value)


def _name_text(name) -> str:
    parts = [*name.prefix, *name.family, *name.given, *name.suffix]
    return " ".join(p for p in parts if p) or name.text


def _source(sender: str | None) -> str:
    return sender or "local (xds patients add)"


def _when(value: _dt.datetime | None) -> str:
    """A stored time in UTC, as people read it (SQLite gives it back without its zone)."""
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(_dt.timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _record_json(record) -> dict:
    """A record as the identity store keeps it (xds.identity.records): one form for scripts."""
    from xds.identity import records

    return json.loads(records.to_json(record))


def _print_json(value) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def _width(text: str) -> int:
    """The columns `text` takes in a terminal: kanji, kana and full-width forms two, half-width
    kana one, combining marks and variation selectors none."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def _table(header: list[str], rows: list[list[str]]) -> str:
    """An aligned table by terminal width; columns empty on every row are left out (the id,
    first, always stays)."""
    keep = [i for i in range(len(header)) if i == 0 or any(row[i] for row in rows)]
    lines = [[line[i] for i in keep] for line in (header, *rows)]
    widths = [max(_width(line[i]) for line in lines) for i in range(len(keep))]
    return "\n".join("  ".join(_pad(value, width) for value, width in zip(line, widths)).rstrip()
                     for line in lines)


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())
