"""The consent records (consent_record): per person, append-only.

    persons_of(session, ["P1^^^&1.2.3&ISO", ...])      -> {id: person id, or None}
    consents_of(session, ["P1^^^&1.2.3&ISO", ...])     -> {id: (person id, its consent now)}
    latest(session, [person id, ...])                  -> {person id: its latest record}
    of_patients(session, [patient pk, ...])             -> {pk: (id, person id, its consent now)}
    in_domain(session, root, might_allow)               -> the consents of a domain's ids, in batches
    history(session, person id)                         -> every record, oldest first
    change(session, "P1^^^&1.2.3&ISO", "grant", policy, model="blanket", ...)
    revoke(session, person id, "P1^^^&1.2.3&ISO", "bppc:<uniqueId>", policy, ...)   -> a record, or None

What belongs here: reading and writing the rows, and the one place a change is made (`change`:
the person's latest consent, the change applied to it, a new row). What does not: what a
consent allows (xds.consent.decision) and the rules of each change (xds.consent.record).

A row is never updated or deleted: each change is a new row holding the whole consent it left,
with who recorded it, when, why and from which source; the latest row of a person (the highest
id) is its consent now. Two changes of one person are serialised (the person's advisory lock on
PostgreSQL, the write lock on SQLite: callers use a write session), so that neither is built
on a consent the other has replaced.

Reading is one statement for the ids of a query: each id's person (identity_patient, by
(root, extension)) and that person's latest row (ix_consent_record_person), joined.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from sqlalchemy import ColumnElement, and_, bindparam, func, insert, or_, select
from sqlalchemy.orm import Session

from xds.consent import record
from xds.consent.policy import BLANKET, IMPLIED, PERSON, ConsentPolicy, PolicyMeaning
from xds.consent.record import ConsentError, ConsentState
from xds.identity import store as identity_store
from xds.identity.directory import parse_cx
from xds.model.person import Identifier
from xds.store.db import chunked
from xds.store.tables import ConsentRecordRow, IdentityPatientRow

R = ConsentRecordRow.__table__
P = IdentityPatientRow.__table__
_latest_id = select(func.max(R.c.id)).where(R.c.person_id == P.c.person_id).correlate(P).scalar_subquery()
#: What a decision reads of a record: the consent, not who recorded it (every query reads it:
#: each column more is a value converted, the times parsed from text on SQLite).
_STATE_COLUMNS = (R.c.model, R.c.facilities, R.c.excluded, R.c.individuals, R.c.valid_from, R.c.valid_to,
                  R.c.on_hold, R.c.withdrawn_at)
# An id's person and the consent of that person's latest record, in one statement (the record's
# columns are NULL when the person has none).
_WITH_CONSENT = (select(P.c.root, P.c.extension, P.c.person_id, *_STATE_COLUMNS)
                 .select_from(P.outerjoin(R, and_(R.c.person_id == P.c.person_id, R.c.id == _latest_id))))
_ONE = _WITH_CONSENT.where(P.c.root == bindparam("root"), P.c.extension == bindparam("extension"))


@dataclass(frozen=True)
class ConsentRecord:
    id: int
    person_id: int
    #: The local id the change was recorded for.
    patient_id: str
    action: str
    state: ConsentState
    recorded_at: datetime
    recorded_by: str
    reason: str
    source: str


def aware(moment: datetime | None) -> datetime | None:
    # SQLite gives back naive datetimes (stored in UTC).
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _listed(text: str) -> tuple[str, ...]:
    return () if text == "[]" else tuple(json.loads(text))  # most lists are empty: read on every query


def _state(m) -> ConsentState:
    return ConsentState(m["model"], _listed(m["facilities"]), _listed(m["excluded"]), _listed(m["individuals"]),
                        aware(m["valid_from"]), aware(m["valid_to"]), bool(m["on_hold"]), aware(m["withdrawn_at"]))


def _record(row) -> ConsentRecord:
    m = row._mapping
    state = _state(m)
    return ConsentRecord(m["id"], m["person_id"], m["patient_id"], m["action"], state, aware(m["recorded_at"]),
                         m["recorded_by"], m["reason"], m["source"])


def consents_of(session: Session, patient_ids: Iterable[str]) -> dict[str, tuple[int | None, ConsentState | None]]:
    """Each of `patient_ids` (CX) -> (its person, the consent of that person's latest record, None
    when it has none), or (None, None) for an id the PIX Manager does not know (or that is no
    CX). A retired (merged) id is its survivor's person's: merges move the retired id into it."""
    ids = list(dict.fromkeys(patient_ids))
    found: dict[str, tuple[int | None, ConsentState | None]] = {cx: (None, None) for cx in ids}
    parsed = {cx: parse_cx(cx) for cx in ids}
    if len(ids) == 1:  # a query for one patient: the statement is compiled once, parameters bound
        identifier = parsed[ids[0]]
        if identifier is not None:
            row = session.execute(_ONE, {"root": identifier.root, "extension": identifier.extension}).first()
            if row is not None:
                found[ids[0]] = (row.person_id, _state(row._mapping) if row.model is not None else None)
        return found
    by_root: dict[str, dict[str, str]] = {}
    for cx, identifier in parsed.items():
        if identifier is not None:
            by_root.setdefault(identifier.root, {})[identifier.extension] = cx
    for root, extensions in by_root.items():
        for chunk in chunked(sorted(extensions)):
            for row in session.execute(_WITH_CONSENT.where(P.c.root == root, P.c.extension.in_(chunk))):
                found[extensions[row.extension]] = (row.person_id,
                                                    _state(row._mapping) if row.model is not None else None)
    return found


def of_patients(session: Session, pks: Iterable[int]) -> dict[int, tuple[str, int, ConsentState | None]]:
    """Each of `pks` (identity_patient rows: a search's matches) -> (its id as CX, its person,
    the consent of that person's latest record or None), read together, one statement per
    thousand."""
    found: dict[int, tuple[str, int, ConsentState | None]] = {}
    for chunk in chunked(sorted(set(pks))):
        for row in session.execute(_WITH_CONSENT.add_columns(P.c.pk).where(P.c.pk.in_(chunk))):
            found[row.pk] = (Identifier(row.root, row.extension).cx, row.person_id,
                             _state(row._mapping) if row.model is not None else None)
    return found


def might_allow(facility: str, *, implied: bool, emergency: bool) -> ColumnElement[bool]:
    """A condition on a person's latest record (NULL columns: none) that every consent allowing
    `facility` meets (xds.consent.decision says which do; this only narrows what it reads):
    none recorded when consent is implied, else one neither withdrawn nor on hold that is
    blanket, implied, per person or names the facility; for an emergency (break-glass), any
    not withdrawn."""
    if emergency:
        return or_(R.c.model.is_(None), R.c.withdrawn_at.is_(None))
    given = and_(R.c.withdrawn_at.is_(None), R.c.on_hold.is_(False),
                 or_(R.c.model.in_([BLANKET, IMPLIED, PERSON]),
                     R.c.facilities.contains(json.dumps(facility), autoescape=True)))
    return or_(R.c.model.is_(None), given) if implied else and_(R.c.model.is_not(None), given)


def in_domain(session: Session, root: str, condition: ColumnElement[bool], batch: int = 500
              ) -> Iterator[list[tuple[int, ConsentState | None]]]:
    """The ids of assigning authority `root` (active or retired: a retired id is its survivor's
    person's) whose person's latest record meets `condition`, as (person, consent) batches in
    the order of the ids: a caller looking for one it may see stops at the first batch that
    has one."""
    after = ""
    while True:
        rows = session.execute(_WITH_CONSENT.where(P.c.root == root, P.c.extension > after, condition)
                               .order_by(P.c.extension).limit(batch)).all()
        if not rows:
            return
        yield [(row.person_id, _state(row._mapping) if row.model is not None else None) for row in rows]
        if len(rows) < batch:
            return
        after = rows[-1].extension


def persons_of(session: Session, patient_ids: Iterable[str]) -> dict[str, int | None]:
    return {cx: person for cx, (person, _) in consents_of(session, patient_ids).items()}


def latest(session: Session, person_ids: Iterable[int]) -> dict[int, ConsentRecord]:
    """The latest consent record of each of `person_ids` that has one."""
    found: dict[int, ConsentRecord] = {}
    for chunk in chunked(sorted(set(person_ids))):
        newest = select(func.max(R.c.id)).where(R.c.person_id.in_(chunk)).group_by(R.c.person_id)
        for row in session.execute(select(R).where(R.c.id.in_(newest))):
            found[row.person_id] = _record(row)
    return found


def history(session: Session, person_id: int) -> list[ConsentRecord]:
    return [_record(row) for row in session.execute(select(R).where(R.c.person_id == person_id).order_by(R.c.id))]


def append(session: Session, person_id: int, patient_id: str, action: str, state: ConsentState, *, at: datetime,
           recorded_by: str, reason: str, source: str) -> ConsentRecord:
    """A new record: `state` is the person's consent from now on."""
    values = dict(person_id=person_id, patient_id=patient_id, action=action, model=state.model,
                  facilities=json.dumps(list(state.facilities)), excluded=json.dumps(list(state.excluded)),
                  individuals=json.dumps(list(state.individuals)), valid_from=state.valid_from,
                  valid_to=state.valid_to, on_hold=state.on_hold, withdrawn_at=state.withdrawn_at,
                  recorded_at=at, recorded_by=recorded_by[:512], reason=reason[:1024], source=source[:512])
    new_id = session.execute(insert(R).values(**values).returning(R.c.id)).scalar_one()
    return ConsentRecord(new_id, person_id, patient_id, action, state, at, values["recorded_by"],
                         values["reason"], values["source"])


def starting(policy: ConsentPolicy) -> ConsentState:
    """The consent of a person with no record: implied where the network says so, else none."""
    return ConsentState(IMPLIED) if policy.implied else ConsentState()


def apply(state: ConsentState, action: str, at: datetime, meaning: PolicyMeaning | None = None, *,
          model: str = "", facilities=(), individuals=(), excluded=(), valid_from: datetime | None = None,
          valid_to: datetime | None = None) -> ConsentState:
    """`state` after `action` (a BPPC policy's `meaning` gives the model and lists)."""
    if meaning is not None:
        model, facilities, individuals = meaning.model, meaning.facilities, meaning.individuals
    if action == record.GRANT:
        return record.grant(state, model, facilities=facilities, individuals=individuals, excluded=excluded,
                            valid_from=valid_from, valid_to=valid_to)
    if action == record.EXCLUDE:
        return record.exclude(state, facilities or excluded)
    if action == record.HOLD:
        return record.hold(state)
    if action == record.RELEASE:
        return record.release(state)
    if action == record.WITHDRAW:
        return record.withdraw(state, at)
    raise ConsentError(f"no consent action {action!r}: one of {', '.join(record.ACTIONS)}")


def change(session: Session, patient_id: str, action: str, policy: ConsentPolicy, *, at: datetime,
           recorded_by: str, reason: str, source: str, person_id: int | None = None, **values) -> ConsentRecord:
    """Record `action` for the person of `patient_id` (any of its local ids): the consent it had
    (or the network's starting one), changed, as a new record. ConsentError when the id is not
    the PIX Manager's or the change cannot be made. Use a write session."""
    if person_id is None:
        person_id = persons_of(session, [patient_id]).get(patient_id)
    if person_id is None:
        raise ConsentError(f"patient {patient_id} is not known to the PIX Manager: feed it first "
                           "(ITI-44, or `xds patients add`)")
    identity_store.lock(session, [f"consent:{person_id}"])
    current = latest(session, [person_id]).get(person_id)
    state = apply(current.state if current else starting(policy), action, at, **values)
    return append(session, person_id, patient_id, action, state, at=at, recorded_by=recorded_by, reason=reason,
                  source=source)


def revoke(session: Session, person_id: int, patient_id: str, source: str, policy: ConsentPolicy, *,
           at: datetime, recorded_by: str, reason: str) -> ConsentRecord | None:
    """The grants recorded from `source` (a BPPC document: "bppc:<uniqueId>") no longer hold:
    a new record (action revoke, that source, `reason`) whose consent is the person's record
    replayed without them, nor those of any source revoked before. None when the source
    granted nothing or was revoked already. Use a write session.

    What is taken back is what the document allowed, never what it forbade: its exclusions,
    holds and withdrawals stay until a later grant lifts them, so a deleted opt-out never
    reopens a record by itself. The replay starts at the state before the first grant taken
    back and applies each later change again as the difference it made (`_again`), so a later
    withdrawal, hold or exclusion stays, and a later grant still grants what it added."""
    identity_store.lock(session, [f"consent:{person_id}"])
    rows = history(session, person_id)
    revoked = {row.source for row in rows if row.action == record.REVOKE}
    if source in revoked:
        return None
    revoked.add(source)
    dropped = {index for index, row in enumerate(rows) if row.action == record.GRANT and row.source in revoked}
    if not any(rows[index].source == source for index in dropped):
        return None
    start = min(dropped)
    state = rows[start - 1].state if start else starting(policy)
    for index in range(start, len(rows)):
        row = rows[index]
        if index in dropped or row.action == record.REVOKE:
            continue
        state = _again(state, rows[index - 1].state if index else starting(policy), row)
    return append(session, person_id, patient_id, record.REVOKE, state, at=at, recorded_by=recorded_by,
                  reason=reason, source=source)


def _again(base: ConsentState, before: ConsentState, row: ConsentRecord) -> ConsentState:
    """`row`'s change made again on `base`: a change is known by the state before it and the
    state it left (the records keep no more), which for a grant to a model other than the one
    in force, a blanket or implied grant, hold, release and withdrawal is the change itself; a
    grant adding to the facilities or individuals in force, and an exclusion, add what they
    added (one that named only what was there already adds nothing)."""
    after = row.state
    if row.action == record.GRANT:
        adding = before.model == after.model and before.withdrawn_at is None and after.model not in (BLANKET, IMPLIED)
        if not adding:
            values = dict(facilities=after.facilities, individuals=after.individuals, excluded=after.excluded,
                          valid_from=after.valid_from, valid_to=after.valid_to)
        else:
            period = (after.valid_from, after.valid_to)
            values = dict(facilities=_added(after.facilities, before.facilities),
                          individuals=_added(after.individuals, before.individuals),
                          excluded=_added(after.excluded, before.excluded),
                          **(dict(zip(("valid_from", "valid_to"), period))
                             if period != (before.valid_from, before.valid_to) else {}))
        try:
            return record.grant(base, after.model, **values)
        except ConsentError:
            return base  # it added only what the grants taken back had given
    if row.action == record.EXCLUDE:
        added = _added(after.excluded, before.excluded) + _added(before.facilities, after.facilities)
        return record.exclude(base, added) if added else base
    if row.action in (record.HOLD, record.RELEASE):
        return replace(base, on_hold=after.on_hold)
    if row.action == record.WITHDRAW:
        return replace(base, withdrawn_at=after.withdrawn_at)
    return after


def _added(values: tuple[str, ...], before: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v for v in values if v not in set(before))
