"""The consent records (consent_record): per person, append-only.

    persons_of(session, ["P1^^^&1.2.3&ISO", ...])      -> {id: person id, or None}
    consents_of(session, ["P1^^^&1.2.3&ISO", ...])     -> {id: (person id, its consent now)}
    latest(session, [person id, ...])                  -> {person id: its latest record}
    of_patients(session, [patient pk, ...])             -> {pk: (id, person id, its consent now)}
    in_domain(session, root, might_allow)               -> the consents of a domain's ids, in batches
    history(session, person id)                         -> every record, oldest first
    change(session, "P1^^^&1.2.3&ISO", "grant", policy, model="blanket", ...)
    revoke(session, person id, "P1^^^&1.2.3&ISO", "bppc:<uniqueId>", policy, ended=...)  -> a record, or None
    reinstate(session, person id, "P1^^^&1.2.3&ISO", "bppc:<uniqueId>", policy, ...)     -> a record, or None

What belongs here: reading and writing the rows, and the one place a change is made (`change`:
the person's latest consent, the change applied to it, a new row). What does not: what a
consent allows (xds.consent.decision) and the rules of each change (xds.consent.record).

A row is never updated or deleted: each change is a new row holding the whole consent it left,
with who recorded it, when, why and from which source, and what it asked (`arguments`, JSON:
the action and the values `apply` took), so that a replay (revoke, reinstate) makes it again
exactly; the latest row of a person (the highest id) is its consent now. Two changes of one
person are serialised (the person's advisory lock on PostgreSQL, the write lock on SQLite:
callers use a write session), so that neither is built on a consent the other has replaced.

Reading is one statement for the ids of a query: each id's person (identity_patient, by
(root, extension)) and that person's latest row (ix_consent_record_person), joined.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
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
    #: What the change asked, JSON text (`_asked`); None for a record written before migration
    #: 0009, which a replay makes again by the difference it made (`_again`).
    arguments: str | None = None


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
                         m["recorded_by"], m["reason"], m["source"], m["arguments"])


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
           recorded_by: str, reason: str, source: str, arguments: str) -> ConsentRecord:
    """A new record: `state` is the person's consent from now on, `arguments` what was asked."""
    values = dict(person_id=person_id, patient_id=patient_id, action=action, model=state.model,
                  facilities=json.dumps(list(state.facilities)), excluded=json.dumps(list(state.excluded)),
                  individuals=json.dumps(list(state.individuals)), valid_from=state.valid_from,
                  valid_to=state.valid_to, on_hold=state.on_hold, withdrawn_at=state.withdrawn_at,
                  recorded_at=at, recorded_by=recorded_by[:512], reason=reason[:1024], source=source[:512],
                  arguments=arguments)
    new_id = session.execute(insert(R).values(**values).returning(R.c.id)).scalar_one()
    return ConsentRecord(new_id, person_id, patient_id, action, state, at, values["recorded_by"],
                         values["reason"], values["source"], arguments)


#: The values of a change (`apply`'s keywords) a record keeps, and those that are times.
_VALUES = ("model", "facilities", "individuals", "excluded", "valid_from", "valid_to")
_TIMES = ("valid_from", "valid_to")


def _asked(action: str, values: dict) -> str:
    """What `change` was asked, as a record keeps it: the action and `apply`'s values, a BPPC
    policy's meaning spelled out (the setting may name other facilities tomorrow: the record
    keeps what the document meant when it was registered), times in ISO 8601, empty values
    left out."""
    values = dict(values)
    meaning = values.pop("meaning", None)
    if meaning is not None:
        values.update(model=meaning.model, facilities=meaning.facilities, individuals=meaning.individuals)
    asked: dict = {"action": action}
    for key in _VALUES:
        value = values.get(key)
        if value is None or value == "" or (not isinstance(value, (str, datetime)) and not list(value)):
            continue
        asked[key] = value.isoformat() if isinstance(value, datetime) else value if isinstance(value, str) \
            else list(value)
    return json.dumps(asked, ensure_ascii=False)


def asked(row: ConsentRecord) -> dict | None:
    """What `row`'s change asked (`_asked`, times read back), None for a record written before
    migration 0009."""
    if row.arguments is None:
        return None
    values = json.loads(row.arguments)
    for key in _TIMES:
        if values.get(key):
            values[key] = aware(datetime.fromisoformat(values[key]))
    return values


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
                  source=source, arguments=_asked(action, values))


#: How a BPPC consent document stopped granting (a revocation's `arguments`): deprecated (by a
#: replacement or ITI-57; ITI-57 may make it Approved again) or deleted (ITI-62: it is gone).
DEPRECATED, DELETED = "deprecated", "deleted"


def revoke(session: Session, person_id: int, patient_id: str, source: str, policy: ConsentPolicy, *,
           at: datetime, recorded_by: str, reason: str, ended: str = DEPRECATED) -> ConsentRecord | None:
    """The grants recorded from `source` (a BPPC document: "bppc:<uniqueId>") no longer hold, the
    document being `ended` (DEPRECATED or DELETED): a new record (action revoke, that source,
    `reason`) whose consent is the person's record replayed without them, nor those of any
    other source that no longer grants (`_replayed`). None when the source granted nothing or
    was revoked already (a deprecated document deleted after). Use a write session.

    What is taken back is what the document allowed, never what it forbade: its exclusions,
    holds and withdrawals stay until a later grant lifts them, so a deleted opt-out never
    reopens a record by itself."""
    identity_store.lock(session, [f"consent:{person_id}"])
    rows = history(session, person_id)
    registrations = _registrations(rows)
    this = registrations.get(source)
    if this is None or this.ended or not this.grants:
        return None
    this.ended = ended
    return append(session, person_id, patient_id, record.REVOKE, _replayed(rows, registrations, source, policy),
                  at=at, recorded_by=recorded_by, reason=reason, source=source,
                  arguments=json.dumps({"action": record.REVOKE, "ended": ended}))


def reinstate(session: Session, person_id: int, patient_id: str, source: str, policy: ConsentPolicy, *,
              at: datetime, recorded_by: str, reason: str) -> ConsentRecord | None:
    """The grants recorded from `source`, revoked when its document was deprecated, hold again
    (the document is Approved again, ITI-57): a new record (action reinstate, that source,
    `reason`) whose consent is the person's record replayed with them, in their place among the
    changes: what came after them still applies to them (a later withdrawal stays), as if the
    document had never been deprecated. None when the source is not revoked, or was deleted
    (a deleted document cannot come back). Use a write session."""
    identity_store.lock(session, [f"consent:{person_id}"])
    rows = history(session, person_id)
    registrations = _registrations(rows)
    this = registrations.get(source)
    if this is None or this.ended != DEPRECATED:
        return None
    this.ended = ""
    return append(session, person_id, patient_id, record.REINSTATE, _replayed(rows, registrations, source, policy),
                  at=at, recorded_by=recorded_by, reason=reason, source=source,
                  arguments=json.dumps({"action": record.REINSTATE}))


@dataclass
class _Registration:
    """A source's grants since it last began granting, and whether they hold: "" (they do),
    DEPRECATED or DELETED (revoked)."""

    grants: list[int]
    ended: str = ""
    #: The grants of its earlier registrations (a document deleted, then its uniqueId registered
    #: again): never again.
    gone: list[int] = field(default_factory=list)


def _registrations(rows: list[ConsentRecord]) -> dict[str, _Registration]:
    """Each source of a person's `rows` (the history, oldest first) -> its grants and whether
    they hold now, read from the revocations and reinstatements in the history."""
    found: dict[str, _Registration] = {}
    for index, row in enumerate(rows):
        this = found.get(row.source)
        if row.action == record.GRANT:
            if this is None:
                this = found[row.source] = _Registration([])
            elif this.ended:
                # A grant from a source that ended: its uniqueId registered again, which the
                # registry accepts only once the document that had it is deleted. That one's
                # grants are gone for good; the new document's hold.
                found[row.source] = this = _Registration([], gone=this.gone + this.grants)
            this.grants.append(index)
        elif row.action == record.REVOKE and this is not None:
            this.ended = _ending(row)
        elif row.action == record.REINSTATE and this is not None:
            this.ended = ""
    return found


def _ending(row: ConsentRecord) -> str:
    """How the document of a revocation ended. A record written before migration 0009 keeps
    it only in its reason (xds.consent.bppc wrote "... deprecated: ..." or "... deleted (...)");
    any other counts as deleted, so that it never grants again (the safe side)."""
    values = asked(row)
    if values is not None:
        return values.get("ended", DELETED)
    return DEPRECATED if " deprecated: " in row.reason else DELETED


def _replayed(rows: list[ConsentRecord], registrations: dict[str, _Registration], source: str,
              policy: ConsentPolicy) -> ConsentState:
    """The person's consent replayed from its history, without the grants that no longer hold
    (`registrations`, which `source`'s change has updated).

    The replay starts at the state before the first grant of a source ever revoked (or
    `source`): every record before it was made on the records before it alone, never on a
    replay, so it is exact. From there each change is made again on the replayed state: as it
    was asked (`arguments`), or, for a record written before migration 0009 (which keeps only
    the state it left), by the difference it made (`_again`). Revocations and reinstatements
    are no changes: they are what the registrations say."""
    dropped = {index for r in registrations.values() for index in (r.gone + r.grants if r.ended else r.gone)}
    revoked = {row.source for row in rows if row.action == record.REVOKE} | {source}
    start = min((index for r in revoked if r in registrations
                 for index in registrations[r].gone + registrations[r].grants), default=len(rows))
    state = rows[start - 1].state if start else starting(policy)
    for index in range(start, len(rows)):
        row = rows[index]
        if index in dropped or row.action in (record.REVOKE, record.REINSTATE):
            continue
        values = asked(row)
        if values is None:
            state = _again(state, rows[index - 1].state if index else starting(policy), row)
            continue
        action = values.pop("action")
        try:
            state = apply(state, action, row.recorded_at, **values)
        except ConsentError:
            pass  # cannot happen (a change fails by its own values alone), but a replay must not fail
    return state


def _again(base: ConsentState, before: ConsentState, row: ConsentRecord) -> ConsentState:
    """`row`'s change (a record written before migration 0009, which keeps no arguments) made
    again on `base`: a change is known by the state before it and the state it left, which for
    a grant to a model other than the one in force, a blanket or implied grant, hold, release
    and withdrawal is the change itself; a grant adding to the facilities or individuals in
    force, and an exclusion, add what they added (one that named only what was there already
    adds nothing: a facility a revoked grant had given and this one named again is lost, the
    safe side)."""
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
