"""What a consent allows: may this facility (this user, for these purposes, now) see this
person's data?

    decide(session, person_id, facility, user, purposes, at, policy) -> Decision
    decide_many(session, person_ids, facility, user, purposes, at, policy) -> {person: Decision}
    evaluate(state, facility, user, purposes, at, policy) -> Decision       (no I/O)

In order, the first that applies decides:

1. no requesting facility: denied (with access control on, a request whose facility is not
   known sees no patient data, break-glass included);
2. no consent recorded: allowed when the network's consent is implied (consent_implied), else
   denied;
3. withdrawn: denied (break-glass cannot override it: the patient said no);
4. viewing on hold; outside the validity period (from inclusive, to exclusive); the facility
   excluded; the model not covering the facility (per facility) or the user (per person: the
   XUA NameID or subject-id among the individuals; no user, no match): denied;
5. otherwise allowed (blanket, implied, the facility or the individual listed).

A denial other than a withdrawal (step 1 aside) becomes a break-glass access when the network
allows it (consent_break_glass) and one of the request's XUA purposes of use is an emergency
(consent_break_glass_purposes): allowed, flagged, with the reason consent alone gave.

Nothing is kept between calls: each reads the records in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from xds.consent import store
from xds.consent.policy import BLANKET, FACILITY, IMPLIED, PERSON, ConsentPolicy, facility_id
from xds.consent.record import ConsentState
from xds.security.caller import CE, XUser


@dataclass(frozen=True)
class Decision:
    allowed: bool
    #: Why, in words an auditor reads (the audit record's EventOutcomeDescription).
    reason: str
    #: Allowed only for an emergency, against what consent says (or without consent).
    break_glass: bool = False


NO_FACILITY = Decision(False, "the requesting facility is not known (no XUA organization-id, no client certificate "
                              "listed in facility_certificates)")


def evaluate(state: ConsentState | None, facility: str, user: XUser | None, purposes: Iterable[CE | str],
             at: datetime, policy: ConsentPolicy) -> Decision:
    facility = facility_id(facility)
    if not facility:
        return NO_FACILITY
    decision = _by_consent(state, facility, user, at, policy)
    if decision.allowed or not policy.break_glass or (state is not None and state.withdrawn_at is not None):
        return decision
    emergency = policy.emergency_purpose(purposes)
    if not emergency:
        return decision
    return Decision(True, f"break-glass for purpose of use {emergency}: {decision.reason}", break_glass=True)


def _by_consent(state: ConsentState | None, facility: str, user: XUser | None, at: datetime,
                policy: ConsentPolicy) -> Decision:
    if state is None:
        if policy.implied:
            return Decision(True, "implied consent (the network's; no consent recorded)")
        return Decision(False, "no consent recorded")
    if state.withdrawn_at is not None:
        return Decision(False, f"consent withdrawn at {state.withdrawn_at.isoformat(timespec='seconds')}")
    if state.on_hold:
        return Decision(False, "viewing on hold")
    if state.valid_from is not None and at < state.valid_from:
        return Decision(False, f"consent valid from {state.valid_from.isoformat(timespec='seconds')}")
    if state.valid_to is not None and at >= state.valid_to:
        return Decision(False, f"consent ended at {state.valid_to.isoformat(timespec='seconds')}")
    if facility in state.excluded:
        return Decision(False, f"facility {facility} is excluded")
    if state.model in (BLANKET, IMPLIED):
        return Decision(True, f"{state.model} consent")
    if state.model == FACILITY:
        if facility in state.facilities:
            return Decision(True, f"consent to facility {facility}")
        return Decision(False, f"facility {facility} is not among the facilities consented to")
    if state.model == PERSON:
        names = {user.name_id, user.subject_id} - {""} if user is not None else set()
        named = next((n for n in state.individuals if n in names), None)
        if named is not None:
            return Decision(True, f"consent to individual {named}")
        who = user.name_id if user is not None else "a request without an XUA user"
        return Decision(False, f"{who} is not among the individuals consented to")
    return Decision(False, "no consent given")


def decide_many(session: Session, person_ids: Iterable[int | None], facility: str, user: XUser | None,
                purposes: Iterable[CE | str], at: datetime, policy: ConsentPolicy) -> dict[int | None, Decision]:
    """decide() for many persons, their records read together (None: an id no person has, which
    no consent can name)."""
    persons = set(person_ids)
    purposes = tuple(purposes)
    if not facility_id(facility):
        return {p: NO_FACILITY for p in persons}
    records = store.latest(session, [p for p in persons if p is not None])
    return {p: evaluate(records[p].state if p in records else None, facility, user, purposes, at, policy)
            for p in persons}


def decide(session: Session, person_id: int | None, facility: str, user: XUser | None,
           purposes: Iterable[CE | str], at: datetime, policy: ConsentPolicy = ConsentPolicy(enabled=True)) -> Decision:
    """Whether `facility` (its `user`, for `purposes`) may see the data of `person_id` at `at`."""
    return decide_many(session, [person_id], facility, user, purposes, at, policy)[person_id]
