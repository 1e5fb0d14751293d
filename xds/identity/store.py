"""The identity tables, row by row: what xds.identity.feed, .links, .pix and .pdq read and write.

What belongs here: reading and writing patients, persons, keys, other ids, revisions,
candidates; the locks that serialise feeds of one person. What does not: the rules (when to
link, what a merge does) and anything of HL7v3.

Serialisation. Two feeds of one person (two hospitals feeding ids of one patient at the same
moment, from two processes or hosts) must not each create a person. Every writer therefore
takes, before it reads anything it decides on, a lock on each value its decision depends on:
each id of the record (its own and its other ids) and its birth date (demographic links need
the same birth date). On PostgreSQL these are transaction-level advisory locks
(pg_advisory_xact_lock, taken in one order so two writers cannot deadlock); a writer that
joins a person also locks that person's row (SELECT ... FOR UPDATE) and, when a merge has
removed it in the meantime, decides again. On SQLite the write transaction already holds the
database's one write lock from its first statement (BEGIN IMMEDIATE, xds.store.db): callers
must use a write session (db.write_session) there, as for every write.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from xds.identity import records
from xds.identity.names import Normaliser, birth_date
from xds.model.person import Identifier, PatientRecord
from xds.store.db import chunked
from xds.store.tables import (IdentityCandidateRow, IdentityKeyRow, IdentityOtherIdRow, IdentityPatientRow,
                              IdentityPersonRow, IdentityRevisionRow)

ACTIVE, RETIRED = "active", "retired"

_key: Table = IdentityKeyRow.__table__  # type: ignore[assignment]
_other: Table = IdentityOtherIdRow.__table__  # type: ignore[assignment]
_revision: Table = IdentityRevisionRow.__table__  # type: ignore[assignment]
_candidate: Table = IdentityCandidateRow.__table__  # type: ignore[assignment]


# --- locks ------------------------------------------------------------------------------

_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || '|' || :value, 0))")

def lock_values(record: PatientRecord | None = None, ids: Iterable[Identifier] = (),
                birth_dates: Iterable[str | None] = ()) -> set[str]:
    """The values a decision about `record` (and `ids`) depends on."""
    values = {f"id:{i.root}|{i.extension}" for i in ids}
    dates = list(birth_dates)
    if record is not None:
        values.update(f"id:{i.root}|{i.extension}" for i in [*record.ids, *record.other_ids])
        dates.append(birth_date(record.birth_time))
    values.update(f"birth:{d}" for d in dates if d)
    return values


def lock(session: Session, values: Iterable[str]) -> None:
    """Hold a lock on each of `values` until the transaction ends (PostgreSQL); nothing on
    SQLite, where a write transaction holds the whole database."""
    if session.get_bind().dialect.name != "postgresql":
        return
    # Advisory locks are the database's, not a schema's: the key names the schema too, so that
    # registries in two schemas of one database (the tests' way) never wait for each other. Taken
    # in the values' order, the same in every process (a hash collision only serialises more).
    for value in sorted(set(values)):
        session.execute(_ADVISORY_LOCK, {"value": value})


def lock_persons(session: Session, person_ids: Iterable[int]) -> set[int]:
    """Lock these persons' rows (in id order); return those that still exist."""
    ids = sorted(set(person_ids))
    if not ids:
        return set()
    statement = (select(IdentityPersonRow.id).where(IdentityPersonRow.id.in_(ids))
                 .order_by(IdentityPersonRow.id).with_for_update())
    return set(session.scalars(statement))


# --- patients -----------------------------------------------------------------------------

def get(session: Session, identifier: Identifier) -> IdentityPatientRow | None:
    return session.scalars(select(IdentityPatientRow).where(
        IdentityPatientRow.root == identifier.root,
        IdentityPatientRow.extension == identifier.extension)
        .execution_options(populate_existing=True)).one_or_none()


def get_many(session: Session, ids: Iterable[Identifier]) -> dict[Identifier, IdentityPatientRow]:
    """The rows of those of `ids` that are known."""
    wanted = list(dict.fromkeys(ids))
    found: dict[Identifier, IdentityPatientRow] = {}
    by_root: dict[str, list[str]] = {}
    for i in wanted:
        by_root.setdefault(i.root, []).append(i.extension)
    for root, extensions in by_root.items():
        for chunk in chunked(extensions):
            for row in session.scalars(select(IdentityPatientRow).where(
                    IdentityPatientRow.root == root, IdentityPatientRow.extension.in_(chunk))
                    .execution_options(populate_existing=True)):
                found[identifier(row)] = row
    return found


def by_pk(session: Session, pks: Iterable[int]) -> dict[int, IdentityPatientRow]:
    result: dict[int, IdentityPatientRow] = {}
    for chunk in chunked(sorted(set(pks))):
        for row in session.scalars(select(IdentityPatientRow).where(IdentityPatientRow.pk.in_(chunk))
                                   .execution_options(populate_existing=True)):
            result[row.pk] = row
    return result


def identifier(row: IdentityPatientRow) -> Identifier:
    return Identifier(row.root, row.extension)


def record_of(row: IdentityPatientRow) -> PatientRecord:
    return records.from_json(row.record)


def members(session: Session, person_id: int, *, active_only: bool = True) -> list[IdentityPatientRow]:
    """The patients of a person, in the order they were first fed."""
    statement = (select(IdentityPatientRow).where(IdentityPatientRow.person_id == person_id)
                 .execution_options(populate_existing=True))
    if active_only:
        statement = statement.where(IdentityPatientRow.status == ACTIVE)
    return list(session.scalars(statement.order_by(IdentityPatientRow.pk)))


def known_roots(session: Session, roots: Iterable[str]) -> set[str]:
    """Those of `roots` (assigning authorities) some fed id has."""
    found = set()
    for root in set(roots):
        if session.scalar(select(IdentityPatientRow.pk).where(IdentityPatientRow.root == root).limit(1)) is not None:
            found.add(root)
    return found


def new_patient(session: Session, record: PatientRecord, person_id: int, link: str, now: datetime) -> IdentityPatientRow:
    own = record.ids[0]
    row = IdentityPatientRow(
        root=own.root, extension=own.extension, person_id=person_id, status=ACTIVE, merged_into=None,
        link=link, revision=0, gender=record.gender, birth_date=birth_date(record.birth_time),
        sender=record.sender, record=records.to_json(record), updated_at=now)
    session.add(row)
    session.flush()
    return row


def set_record(row: IdentityPatientRow, record: PatientRecord, now: datetime) -> None:
    row.gender = record.gender
    row.birth_date = birth_date(record.birth_time)
    row.sender = record.sender
    row.record = records.to_json(record)
    row.updated_at = now


def write_keys(session: Session, row: IdentityPatientRow, record: PatientRecord, normaliser: Normaliser) -> None:
    """Replace the patient's search keys and other ids with those of `record`."""
    session.execute(delete(_key).where(_key.c.patient_pk == row.pk))
    session.execute(delete(_other).where(_other.c.patient_pk == row.pk))
    keys = normaliser.record_keys(record)
    if keys:
        session.execute(insert(_key), [{"patient_pk": row.pk, "seq": seq, "kind": kind, "key": key}
                                       for seq, kind, key in keys])
    own = record.ids[0]
    others = [i for i in dict.fromkeys([*record.ids[1:], *record.other_ids])
              if i != own and i.root and i.extension]
    if others:
        session.execute(insert(_other), [{"patient_pk": row.pk, "root": i.root, "extension": i.extension}
                                         for i in others])


def drop_keys(session: Session, pk: int) -> None:
    """A retired patient is searched by nothing (its record stays in its history)."""
    session.execute(delete(_key).where(_key.c.patient_pk == pk))
    session.execute(delete(_other).where(_other.c.patient_pk == pk))


def claimants(session: Session, identifier: Identifier) -> list[int]:
    """The patients whose records name `identifier` among their other ids."""
    return list(session.scalars(select(_other.c.patient_pk).where(
        _other.c.root == identifier.root, _other.c.extension == identifier.extension)))


def revise_history(session: Session, row: IdentityPatientRow, action: str, now: datetime,
                   record: PatientRecord | None = None) -> None:
    """Add a revision to the patient's history (the record when one was fed)."""
    row.revision += 1
    session.execute(insert(_revision).values(
        patient_pk=row.pk, revision=row.revision, action=action, at=now, person_id=row.person_id,
        sender=record.sender if record is not None else None,
        record=records.to_json(record) if record is not None else None))


@dataclass(frozen=True)
class Revision:
    revision: int
    action: str
    at: datetime
    person_id: int
    sender: str | None
    record: PatientRecord | None


def history(session: Session, pk: int) -> list[Revision]:
    rows = session.execute(select(_revision).where(_revision.c.patient_pk == pk).order_by(_revision.c.revision))
    return [Revision(r.revision, r.action, r.at, r.person_id, r.sender,
                     records.from_json(r.record) if r.record is not None else None) for r in rows]


# --- persons ------------------------------------------------------------------------------

def new_person(session: Session, now: datetime) -> int:
    person = IdentityPersonRow(revision=1, created_at=now, updated_at=now)
    session.add(person)
    session.flush()
    return person.id


def touch_person(session: Session, person_id: int, now: datetime) -> None:
    """Count a change of the person's linked ids."""
    session.execute(update(IdentityPersonRow).where(IdentityPersonRow.id == person_id)
                    .values(revision=IdentityPersonRow.revision + 1, updated_at=now))


def drop_person_if_empty(session: Session, person_id: int) -> bool:
    left = session.scalar(select(func.count()).select_from(IdentityPatientRow)
                          .where(IdentityPatientRow.person_id == person_id))
    if left:
        return False
    session.execute(delete(IdentityPersonRow).where(IdentityPersonRow.id == person_id))
    return True


# --- candidates -----------------------------------------------------------------------------

def set_candidates(session: Session, pk: int, pairs: Sequence[tuple[int, str]], now: datetime) -> None:
    """Replace the candidates found for patient `pk` (other patient, reason)."""
    session.execute(delete(_candidate).where(_candidate.c.patient_pk == pk))
    unique = {other: reason for other, reason in pairs if other != pk}
    if unique:
        session.execute(insert(_candidate), [{"patient_pk": pk, "other_pk": other, "reason": reason,
                                              "created_at": now} for other, reason in unique.items()])


def drop_candidates(session: Session, pks: Iterable[int], *, between: bool = False) -> None:
    """Forget the candidates of these patients; with `between`, only the pairs of two of them
    (the members of one person: a few)."""
    pks = sorted(set(pks))
    if not pks:
        return
    if between:
        session.execute(delete(_candidate).where(_candidate.c.patient_pk.in_(pks),
                                                 _candidate.c.other_pk.in_(pks)))
        return
    for chunk in chunked(pks):
        session.execute(delete(_candidate).where(_candidate.c.patient_pk.in_(chunk)))
        session.execute(delete(_candidate).where(_candidate.c.other_pk.in_(chunk)))


def candidate_rows(session: Session):
    return session.execute(select(_candidate).order_by(_candidate.c.created_at, _candidate.c.patient_pk,
                                                       _candidate.c.other_pk)).all()


# --- maintenance ----------------------------------------------------------------------------

def rebuild_keys(session: Session, normaliser: Normaliser, batch: int = 1000) -> int:
    """Write every active patient's search keys again (after name_kanji_variants or
    name_fold_small_kana changed); returns how many patients. Run it in a write session, with
    the feeds stopped, or in batches by calling it on sessions of your own."""
    done, last = 0, 0
    while True:
        rows = list(session.scalars(select(IdentityPatientRow).where(
            IdentityPatientRow.pk > last, IdentityPatientRow.status == ACTIVE)
            .order_by(IdentityPatientRow.pk).limit(batch)))
        if not rows:
            return done
        for row in rows:
            write_keys(session, row, record_of(row), normaliser)
        done += len(rows)
        last = rows[-1].pk


# --- a person, for `xds patients show` --------------------------------------------------------

@dataclass(frozen=True)
class PatientView:
    identifier: Identifier
    status: str
    link: str
    revision: int
    record: PatientRecord
    #: The id it was merged into, when retired.
    merged_into: Identifier | None
    updated_at: datetime


@dataclass(frozen=True)
class PersonView:
    id: int
    revision: int
    #: Active ids first (in the order they were fed), then retired ones.
    patients: list[PatientView]


def person_of(session: Session, identifier: Identifier) -> PersonView | None:
    """The person `identifier` belongs to (its survivor's, when retired), with every id and
    record; None for an id never fed."""
    row = get(session, identifier)
    if row is None:
        return None
    person = session.get(IdentityPersonRow, row.person_id)
    rows = members(session, row.person_id, active_only=False)
    pks = by_pk(session, [r.merged_into for r in rows if r.merged_into is not None])
    views = [PatientView(Identifier(r.root, r.extension), r.status, r.link, r.revision, record_of(r),
                         Identifier(pks[r.merged_into].root, pks[r.merged_into].extension)
                         if r.merged_into in pks else None, r.updated_at)
             for r in rows]
    views.sort(key=lambda v: v.status != ACTIVE)
    return PersonView(row.person_id, person.revision if person is not None else 0, views)
