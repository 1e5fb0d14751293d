"""The Patient Identity Feed (ITI-44, ITI TF-2b 3.44.4) as the PIX Manager and the Document
Registry's feed receiver carry it out: add, revise, merge.

    add(session, record, policy)               PRPA_IN201301UV02 Patient Registry Record Added
    revise(session, record, policy)            PRPA_IN201302UV02 Patient Registry Record Revised
    merge(session, record, subsumed, policy)   PRPA_IN201304UV02 Patient Registry Duplicates Resolved

Each takes a parsed record (xds.model.person; its first id is the one fed) and the caller's
write session (xds.store.db.write_session): the feed and what it tells the registry are one
transaction. Each returns a FeedResult, or raises IdentityError for a feed the service must
refuse (AE with an acknowledgementDetail).

* add: a new id joins a person: the one the linking rules name (xds.identity.links), else a
  new one; doubtful links are listed as candidates. An add of an id fed before is taken as a
  revise (a source that lost its acknowledgement sends the add again); an add of a retired
  id is refused ("retired").
* revise: the record replaces the one stored (the old one stays in the history), the keys
  follow, and the links the rules made are evaluated again. A revise of an id never fed is
  taken as an add (the record holds all it needs).
* merge: `subsumed` (priorRegisteredRole/id) is retired into the record's id (the survivor,
  added first if it was never fed; its demographics revised when the message carries some):
  the subsumed id's person joins the survivor's, ids retired into it now point at the
  survivor, and it is searched by nothing any more. A merge of an id never fed is refused
  ("unknown-subsumed"); a merge sent again changes nothing.

* the ids a record names beside its own (asOtherIDs, further Patient.ids) that no source has
  fed join its person as named ids (_name_others): the PIX Manager cross-references them (ITI-45
  answers them and finds the person by them; ITI-47 finds the patients that name them) before
  their own source feeds them. That source's feed is authoritative for its id: its record
  replaces the named one (an add, as the result says) and the linking rules place it.

The registry: an id whose root is the affinity domain (policy.affinity_domain) is added to
the registry's patient list (xds.store.patients) as it is fed; a retired one is removed from
it, so submissions for it fail with XDSUnknownPatientId whichever directory the registry asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from xds.identity import links, store
from xds.identity.errors import IdentityError
from xds.identity.links import NAMED, STICKY
from xds.identity.policy import IDENTIFIER, IdentityPolicy
from xds.identity.records import has_demographics
from xds.identity.store import ACTIVE, RETIRED
from xds.model.person import Identifier, PatientRecord
from xds.store import patients as registry_patients
from xds.store.tables import IdentityPatientRow

#: Attempts at joining a person that a concurrent merge keeps removing.
_ATTEMPTS = 5


@dataclass
class FeedResult:
    #: The id fed (the survivor of a merge).
    patient: Identifier
    #: "added", "revised", "merged", or "unchanged" (a merge sent again).
    action: str
    #: The person the id belongs to now, and all its active ids (the cross-reference).
    person_id: int
    linked: list[Identifier]
    #: How the id is in its person: new, identifier, demographics, manual, merge.
    link: str
    #: Ids an administrator should compare with this one (not linked automatically).
    candidates: list[Identifier] = field(default_factory=list)
    #: Patient ids (CX) the registry was told of, and those it now refuses (retired).
    registry_added: list[str] = field(default_factory=list)
    registry_removed: list[str] = field(default_factory=list)
    #: The id retired by a merge.
    retired: Identifier | None = None
    #: Persons whose set of ids changed (each an ITI-46 update notification, later).
    persons_changed: set[int] = field(default_factory=set)


def add(session: Session, record: PatientRecord, policy: IdentityPolicy) -> FeedResult:
    """ITI-44 add (see the module's docstring)."""
    _check(record)
    _lock(session, record)
    row = store.get(session, record.ids[0])
    if row is None:
        return _add(session, record, policy)
    if row.status == RETIRED:
        raise _retired(session, row)
    named = row.link == NAMED
    result = _revise(session, row, record, policy)
    if named:
        result.action = "added"  # its own source's first feed of an id another source named
    return result


def revise(session: Session, record: PatientRecord, policy: IdentityPolicy) -> FeedResult:
    """ITI-44 revise (see the module's docstring)."""
    return add(session, record, policy)


def merge(session: Session, record: PatientRecord, subsumed: Identifier, policy: IdentityPolicy) -> FeedResult:
    """ITI-44 duplicates resolved: retire `subsumed` into record.ids[0]."""
    _check(record)
    survivor = record.ids[0]
    if not subsumed.root or not subsumed.extension:
        raise IdentityError("invalid-id", "the id to retire has no root or no extension", subsumed)
    if subsumed == survivor:
        raise IdentityError("merge-self", f"{survivor.cx} cannot be merged into itself", subsumed)
    _lock(session, record, subsumed)
    old = store.get(session, subsumed)
    if old is None:
        raise IdentityError("unknown-subsumed", f"{subsumed.cx} was never fed: there is nothing to merge", subsumed)
    now = policy.clock()

    row = store.get(session, survivor)
    if old.status == RETIRED:
        if row is not None and old.merged_into == row.pk:
            return _result(session, row, "unchanged", policy, retired=subsumed)
        raise _retired(session, old)
    if row is None:
        result = _add(session, record, policy)
    elif row.status == RETIRED:
        raise _retired(session, row)
    elif has_demographics(record):
        links.lock_people(session, [survivor, subsumed])  # both persons before any row (see _revise)
        result = _revise(session, row, record, policy)
    else:
        result = _result(session, row, "revised", policy)
    row, old = links.lock_people(session, [survivor, subsumed])

    target, source = row.person_id, old.person_id
    old.status, old.merged_into, old.link = RETIRED, row.pk, "merge"
    session.execute(update(IdentityPatientRow).where(IdentityPatientRow.merged_into == old.pk)
                    .values(merged_into=row.pk).execution_options(synchronize_session=False))
    changed = {target}
    if source != target:
        for member in store.members(session, source, active_only=False):
            member.person_id = target
            if member.status == ACTIVE:
                member.link = "merge"
                store.revise_history(session, member, "merge", now)
        changed.add(source)
    store.touch_person(session, target, now)
    session.flush()
    if source != target:
        store.drop_person_if_empty(session, source)
    store.drop_keys(session, old.pk)
    store.drop_candidates(session, [old.pk])
    store.revise_history(session, old, "retire", now)
    store.revise_history(session, row, "merge", now)

    final = _result(session, row, "merged", policy, retired=subsumed)
    final.registry_added = result.registry_added
    if policy.affinity_domain and subsumed.root == policy.affinity_domain:
        registry_patients.remove(session, [subsumed.cx])
        final.registry_removed = [subsumed.cx]
    final.candidates = result.candidates
    final.persons_changed = changed | result.persons_changed
    return final


# --- the steps ----------------------------------------------------------------------------

def _add(session: Session, record: PatientRecord, policy: IdentityPolicy) -> FeedResult:
    now = policy.clock()
    decision = links.Decision()
    person = None
    for _ in range(_ATTEMPTS):
        decision = links.evaluate(session, None, record, policy)
        if decision.person_id is None or store.lock_persons(session, [decision.person_id]):
            person = decision.person_id
            break
    link = decision.rule if person is not None else "new"
    if person is None:
        person = store.new_person(session, now)
    else:
        store.touch_person(session, person, now)
    row = store.new_patient(session, record, person, link or "new", now)
    store.write_keys(session, row, record, policy.normaliser)
    store.revise_history(session, row, "add", now, record)
    store.set_candidates(session, row.pk, decision.candidates, now)
    _name_others(session, row, record, policy, now)
    result = _result(session, row, "added", policy, decision=decision)
    result.registry_added = _tell_registry(session, row, policy)
    result.persons_changed = {person}
    return result


def _revise(session: Session, row: IdentityPatientRow, record: PatientRecord, policy: IdentityPolicy) -> FeedResult:
    now = policy.clock()
    # Its person first, then its row: the order of every writer (a merge moving the person's
    # members holds the person and then updates their rows).
    (row,) = links.lock_people(session, [store.identifier(row)])
    before = store.record_of(row)
    store.set_record(row, record, now)
    store.write_keys(session, row, record, policy.normaliser)
    store.revise_history(session, row, "revise", now, record)
    decision = links.Decision()
    changed: set[int] = set()
    if row.link not in STICKY:
        for _ in range(_ATTEMPTS):
            decision = links.evaluate(session, row.pk, record, policy)
            current = row.person_id
            target = decision.person_id
            if target == current:
                row.link = decision.rule or row.link
                break
            if target is None:
                alone = all(m.pk == row.pk for m in store.members(session, current))
                if alone:
                    row.link = "new"
                    break
            persons = [current] + ([target] if target is not None else [])
            if not store.lock_persons(session, persons) >= set(persons):
                continue  # a merge moved one of them meanwhile: decide again
            new = target if target is not None else store.new_person(session, now)
            links.move(session, row, new, decision.rule or "new", now)
            store.revise_history(session, row, "link", now)
            changed = {current, new}
            break
        store.set_candidates(session, row.pk, decision.candidates, now)
    changed |= _name_others(session, row, record, policy, now)
    changed |= _unname(session, row, _named(before) - _named(record), now)
    result = _result(session, row, "revised", policy, decision=decision)
    result.registry_added = _tell_registry(session, row, policy)
    result.persons_changed = changed
    return result


def _named(record: PatientRecord) -> set[Identifier]:
    """The ids a record names beside its own (asOtherIDs, further Patient.ids)."""
    own = record.ids[0]
    return {i for i in [*record.ids[1:], *record.other_ids] if i != own and i.root and i.extension}


def _name_others(session: Session, row: IdentityPatientRow, record: PatientRecord, policy: IdentityPolicy,
                 now) -> set[int]:
    """The ids `record` names that no source has fed join its person as named ids (link
    NAMED, a record of the id alone): the cross-reference holds them, so ITI-45 answers them
    and finds the person by them, and ITI-47 finds the person's patients that name them. Not
    with the identifier rule off (the network does not link by ids), nor an id of a domain the
    person has an id of already (two ids of one domain are a duplicate its source resolves).
    When the id's own source feeds it, its record replaces the named one and the rules place it
    (the identifier rule: with the patients that name it). The persons changed."""
    if IDENTIFIER not in policy.rules:
        return set()
    wanted = sorted(_named(record) - set(store.get_many(session, _named(record))), key=lambda i: (i.root, i.extension))
    if not wanted:
        return set()
    roots = {m.root for m in store.members(session, row.person_id)}
    added = False
    for identifier in wanted:
        if identifier.root in roots:
            continue
        named = store.new_patient(session, PatientRecord(ids=[identifier], sender=record.sender), row.person_id,
                                  NAMED, now)
        store.revise_history(session, named, "named", now)
        roots.add(identifier.root)
        added = True
    if not added:
        return set()
    store.touch_person(session, row.person_id, now)
    return {row.person_id}


def _unname(session: Session, row: IdentityPatientRow, dropped: set[Identifier], now) -> set[int]:
    """Named ids the revised record no longer names, and no other patient does, leave its
    person for one of their own. The persons changed."""
    changed: set[int] = set()
    for other in store.get_many(session, dropped).values():
        if other.link != NAMED or other.status != ACTIVE or other.person_id != row.person_id:
            continue
        if store.claimants(session, store.identifier(other)):
            continue  # another patient still names it
        changed.add(other.person_id)
        links.move(session, other, store.new_person(session, now), NAMED, now)
        store.revise_history(session, other, "unlink", now)
        changed.add(other.person_id)
    return changed


def _lock(session: Session, record: PatientRecord, *others: Identifier) -> None:
    """Lock what a feed of `record` (and a merge of `others`) decides on: the ids and birth
    dates of the record and of the records stored for these ids now (a revise unties what the
    old record tied). Taken at once, in one order (store.lock), so that feeds cannot deadlock
    on them; the stored records are read before the locks, so they are read again after and
    whatever changed meanwhile is locked too."""
    ids = [record.ids[0], *others]
    values = store.lock_values(record, ids=others)
    stored = store.get_many(session, ids)
    for row in stored.values():
        values |= store.lock_values(store.record_of(row))
    store.lock(session, values)
    extra: set[str] = set()
    for row in store.get_many(session, ids).values():
        extra |= store.lock_values(store.record_of(row)) - values
    store.lock(session, extra)


def _tell_registry(session: Session, row: IdentityPatientRow, policy: IdentityPolicy) -> list[str]:
    if not policy.affinity_domain or row.root != policy.affinity_domain:
        return []
    cx = store.identifier(row).cx
    registry_patients.add(session, [cx])
    return [cx]


def _result(session: Session, row: IdentityPatientRow, action: str, policy: IdentityPolicy, *,
            decision: links.Decision | None = None, retired: Identifier | None = None) -> FeedResult:
    linked = [store.identifier(m) for m in store.members(session, row.person_id)]
    candidates = []
    if decision is not None and decision.candidates:
        others = store.by_pk(session, [pk for pk, _ in decision.candidates])
        candidates = [store.identifier(others[pk]) for pk, _ in decision.candidates if pk in others]
    return FeedResult(patient=store.identifier(row), action=action, person_id=row.person_id, linked=linked,
                      link=row.link, candidates=list(dict.fromkeys(candidates)), retired=retired)


def _check(record: PatientRecord) -> None:
    if not record.ids:
        raise IdentityError("invalid-id", "the record has no patient id")
    own = record.ids[0]
    if not own.root or not own.extension:
        raise IdentityError("invalid-id", "the patient id has no root or no extension", own)


def _retired(session: Session, row: IdentityPatientRow) -> IdentityError:
    survivor = session.scalar(select(IdentityPatientRow).where(IdentityPatientRow.pk == row.merged_into))
    into = f" into {store.identifier(survivor).cx}" if survivor is not None else ""
    return IdentityError("retired", f"{store.identifier(row).cx} was merged{into}: it is no longer used",
                         store.identifier(row))
