"""Linking: which person a fed patient id belongs to, and the administrator's say over it.

The rules (the setting pix_linking_rules names which, in order; the first that decides wins):

| rule | links a patient to a person when | lists candidates instead when |
| --- | --- | --- |
| identifier | the record's other ids (asOtherIDs, extra Patient.ids) name a patient of exactly one person, or a patient of exactly one person names this id among its other ids (a retired id counts as its survivor) | they name patients of more than one person (identifier-conflict) |
| demographics | exactly one person has a patient with the same birth date (to the day), the same known gender (not UN) and the same name: for every representation both records have (IDE kanji, SYL kana, ABC), a whole name (family + given, normalised: xds.identity.names) in common | more than one person matches (demographics-ambiguous); or a patient agrees on name and birth date but not on gender, or on family name, birth date and gender but not on given name, neither record a multiple birth (demographics-partial) |

Never linked automatically, always listed instead (same-domain): a person that already has an
active id of the same assigning authority. Two ids of one domain for one patient are a
duplicate the source resolves by a merge (ITI-44), not a cross-reference.

Links an administrator made (`link`, `unlink`) and those a merge made are kept: a later feed of
the patient re-evaluates only links the rules made. A patient that a revised record no longer
ties to its person leaves it (for the person the rules name, or a new one); the others stay
together (their links are not re-evaluated transitively: `candidates` shows what is doubtful).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from xds.identity import store
from xds.identity.errors import IdentityError
from xds.identity.names import FAMILY, NAME, birth_date
from xds.identity.policy import DEMOGRAPHICS, IDENTIFIER, IdentityPolicy
from xds.identity.store import ACTIVE, RETIRED
from xds.model.person import Identifier, PatientRecord
from xds.store.db import chunked
from xds.store.tables import IdentityCandidateRow as C
from xds.store.tables import IdentityKeyRow, IdentityPatientRow

#: Links no feed undoes.
STICKY = ("manual", "merge")
#: An id known only because another source's feed named it (asOtherIDs; xds.identity.feed).
NAMED = "named"
#: Genders that say something (AdministrativeGender M, F; UN says nothing).
KNOWN_GENDERS = ("M", "F")


@dataclass
class Decision:
    """What the rules say of one record: the person to join (None: none) by which rule, and
    the patients an administrator should look at, with why."""

    person_id: int | None = None
    rule: str | None = None
    candidates: list[tuple[int, str]] = field(default_factory=list)


def evaluate(session: Session, pk: int | None, record: PatientRecord, policy: IdentityPolicy) -> Decision:
    """Apply the rules to `record` (the patient `pk`, None when new), leaving that patient
    itself out of the comparison."""
    for rule in policy.rules:
        if rule == IDENTIFIER:
            decision = _by_identifier(session, pk, record)
        elif rule == DEMOGRAPHICS:
            decision = _by_demographics(session, pk, record, policy)
        else:  # policy.parse_rules refused it already
            continue
        if decision.person_id is not None:
            decision = _same_domain(session, pk, record, decision)
        if decision.person_id is not None or decision.candidates:
            return decision
    return Decision()


def _by_identifier(session: Session, pk: int | None, record: PatientRecord) -> Decision:
    own = record.ids[0]
    evidence = [i for i in dict.fromkeys([*record.ids[1:], *record.other_ids]) if i != own]
    matched: list[IdentityPatientRow] = []
    survivors: list[int] = []
    for row in store.get_many(session, evidence).values():
        if row.status == RETIRED and row.merged_into is not None:
            survivors.append(row.merged_into)
        elif row.status == ACTIVE:
            matched.append(row)
    claimed = store.by_pk(session, [*survivors, *store.claimants(session, own)])
    matched += [row for row in claimed.values() if row.status == ACTIVE]
    matched = [row for row in matched if row.pk != pk]
    persons: dict[int, IdentityPatientRow] = {}
    for row in matched:
        persons.setdefault(row.person_id, row)
    if len(persons) == 1:
        return Decision(next(iter(persons)), IDENTIFIER)
    if len(persons) > 1:
        return Decision(candidates=[(row.pk, "identifier-conflict") for row in persons.values()])
    return Decision()


def _by_demographics(session: Session, pk: int | None, record: PatientRecord, policy: IdentityPolicy) -> Decision:
    normaliser = policy.normaliser
    date = birth_date(record.birth_time)
    mine = normaliser.names_by_script(record)
    if not date or len(date) < 8 or not mine:
        return Decision()
    keys = set()
    for name in record.names:
        family, _, whole = normaliser.name_keys(name)
        keys.update(family)
        keys.update(whole)
    # From the birth date (ix_identity_patient_birth: about 30 patients a day in a million),
    # each checked for a key (ix_identity_key_key: kind, key, patient_pk). Written as a join,
    # SQLite (no statistics) started from the keys instead: every 佐藤 in the database, each
    # looked up for its birth date, 0.1-1 s a feed at 1,000,000 patients against 0.3 ms.
    P, K = IdentityPatientRow, IdentityKeyRow
    pks: set[int] = set()
    for chunk in chunked(sorted(keys)):
        named = select(K.patient_pk).where(K.patient_pk == P.pk, K.kind.in_((FAMILY, NAME)), K.key.in_(chunk))
        pks.update(session.scalars(select(P.pk).where(P.birth_date == date, P.status == ACTIVE, named.exists())))
    pks.discard(pk)  # type: ignore[arg-type]
    full: dict[int, list[int]] = {}
    partial: list[int] = []
    gender = record.gender if record.gender in KNOWN_GENDERS else None
    my_family = _family_keys(record, policy)
    for row in store.by_pk(session, pks).values():
        other = store.record_of(row)
        agree = _names_agree(mine, normaliser.names_by_script(other))
        same_gender = gender is not None and row.gender == gender
        if agree and same_gender:
            full.setdefault(row.person_id, []).append(row.pk)
        elif agree:
            partial.append(row.pk)  # name and birth date, not gender
        elif (same_gender and my_family & _family_keys(other, policy)
              and not record.multiple_birth and not other.multiple_birth):
            partial.append(row.pk)  # family name, birth date and gender, not given name
    if len(full) == 1:
        return Decision(next(iter(full)), DEMOGRAPHICS)
    if len(full) > 1:
        return Decision(candidates=[(p, "demographics-ambiguous") for rows in full.values() for p in rows])
    return Decision(candidates=[(p, "demographics-partial") for p in sorted(partial)])


def _family_keys(record: PatientRecord, policy: IdentityPolicy) -> set[str]:
    keys: set[str] = set()
    for name in record.names:
        keys.update(policy.normaliser.name_keys(name)[0])
    return keys


def _names_agree(a: dict[str, set[str]], b: dict[str, set[str]]) -> bool:
    """Both records have a name in some representation, and in each representation both have
    they share a whole name."""
    common = a.keys() & b.keys()
    return bool(common) and all(a[script] & b[script] for script in common)


def _same_domain(session: Session, pk: int | None, record: PatientRecord, decision: Decision) -> Decision:
    root = record.ids[0].root
    clash = [row for row in store.members(session, decision.person_id)  # type: ignore[arg-type]
             if row.root == root and row.pk != pk]
    if clash:
        return Decision(candidates=[(row.pk, "same-domain") for row in clash])
    return decision


# --- joining and leaving ------------------------------------------------------------------

def move(session: Session, row: IdentityPatientRow, person_id: int, link: str, now: datetime) -> None:
    """Move one patient (and the ids retired into it) to another person."""
    old = row.person_id
    if old == person_id:
        row.link = link
        return
    row.person_id = person_id
    row.link = link
    for retired in session.scalars(select(IdentityPatientRow).where(IdentityPatientRow.merged_into == row.pk)):
        retired.person_id = person_id
    store.touch_person(session, person_id, now)
    store.touch_person(session, old, now)
    session.flush()
    store.drop_person_if_empty(session, old)


# --- the administrator's commands (xds patients candidates / link / unlink) -----------------

@dataclass(frozen=True)
class Candidate:
    """`patient` may be the same person as `other` (why: `reason`)."""

    patient: Identifier
    other: Identifier
    reason: str
    created_at: datetime


def candidates(session: Session) -> list[Candidate]:
    """The possible links the rules would not make alone, oldest first."""
    rows = store.candidate_rows(session)
    patients = store.by_pk(session, [pk for r in rows for pk in (r.patient_pk, r.other_pk)])
    return [Candidate(store.identifier(patients[r.patient_pk]), store.identifier(patients[r.other_pk]),
                      r.reason, r.created_at)
            for r in rows if r.patient_pk in patients and r.other_pk in patients]


def link(session: Session, a: Identifier, b: Identifier, policy: IdentityPolicy, *, force: bool = False) -> int:
    """Link `a` to `b`: a's person (all its ids) joins b's. Refused (IdentityError
    "same-domain") when the person would then hold two active ids of one assigning authority,
    unless `force`. Returns the person's id. Use a write session."""
    now = policy.clock()
    store.lock(session, store.lock_values(ids=[a, b]))
    row_a, row_b = lock_people(session, [a, b])
    source, target = row_a.person_id, row_b.person_id
    if source == target:
        row_a.link = "manual"
        return target
    moving = store.members(session, source, active_only=False)
    staying = store.members(session, target)
    if not force:
        roots = {r.root for r in staying}
        clash = sorted({r.root for r in moving if r.status == ACTIVE and r.root in roots})
        if clash:
            raise IdentityError("same-domain", f"{a.extension}^^^&{a.root}&ISO and {b.extension}^^^&{b.root}&ISO: "
                                f"the person would hold two ids of the assigning authority {', '.join(clash)}; "
                                "merge them (ITI-44) or link with force", a)
    for row in moving:
        row.person_id = target
        if row.status == ACTIVE:
            row.link = "manual"
            store.revise_history(session, row, "link", now)
    store.touch_person(session, target, now)
    session.flush()
    store.drop_person_if_empty(session, source)
    store.drop_candidates(session, [r.pk for r in moving + staying], between=True)
    return target


def unlink(session: Session, a: Identifier, policy: IdentityPolicy) -> int:
    """Take `a` out of its person into a person of its own (feeds will not link it again by
    the rules; an administrator can). Returns its person's id. Use a write session."""
    now = policy.clock()
    store.lock(session, store.lock_values(ids=[a]))
    (row,) = lock_people(session, [a])
    others = [r for r in store.members(session, row.person_id) if r.pk != row.pk]
    if not others:
        row.link = "manual"
        return row.person_id
    move(session, row, store.new_person(session, now), "manual", now)
    store.revise_history(session, row, "unlink", now)
    return row.person_id


def dismiss(session: Session, a: Identifier, b: Identifier) -> bool:
    """Forget the candidate pair a, b (an administrator decided they are two persons)."""
    rows = store.get_many(session, [a, b])
    if a not in rows or b not in rows:
        return False
    pa, pb = rows[a].pk, rows[b].pk
    result = session.execute(delete(C).where(((C.patient_pk == pa) & (C.other_pk == pb))
                                             | ((C.patient_pk == pb) & (C.other_pk == pa))))
    return bool(result.rowcount)


def lock_people(session: Session, ids: list[Identifier]) -> list[IdentityPatientRow]:
    """The active rows of `ids`, their persons' rows locked. The ids must be locked already
    (store.lock): only a merge or link moving a whole person can then change their persons,
    and it locks those persons too, so this locks and reads again until nothing moved."""
    rows = [_active(session, i) for i in ids]
    locked: set[int] = set()
    for _ in range(20):
        wanted = {row.person_id for row in rows}
        if wanted <= locked:
            return rows
        locked |= store.lock_persons(session, wanted - locked)
        rows = [_active(session, i) for i in ids]
    raise RuntimeError("the persons of %s keep moving" % ", ".join(i.cx for i in ids))


def _active(session: Session, identifier: Identifier) -> IdentityPatientRow:
    row = store.get(session, identifier)
    if row is None:
        raise IdentityError("unknown-id", f"{identifier.cx} was never fed", identifier)
    if row.status != ACTIVE:
        raise IdentityError("retired", f"{identifier.cx} was merged into another id", identifier)
    return row
