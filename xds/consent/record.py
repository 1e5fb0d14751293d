"""A person's consent, and how each change moves it. No I/O: xds.consent.store keeps the
records, xds.consent.decision reads them.

The models (MHLW's guidance for regional networks names them; the national sharing service adds
the hold):

| model | who may see |
| --- | --- |
| blanket | every participating facility (any facility the network identifies), but those excluded |
| facility | the facilities listed (a chosen list, or one facility at a time: grants add up) |
| person | the individuals listed: users whose XUA NameID or subject-id is one of them |
| implied | as blanket: the patient was told and did not opt out (opting out is a withdrawal, or an exclusion of some facilities) |
| none | nobody: no consent was given (a hold or a withdrawal recorded before any grant) |

Beside the model: a validity period (from inclusive, to exclusive), viewing on hold (nothing is
shown until a release) and the withdrawal (nothing is shown; a later grant is a new consent).
An excluded facility is never allowed, whatever the model.

Changes, each giving the whole new consent (the record keeps both):

- grant(model, facilities / individuals, excluded, valid from/to): a new consent when the model
  changes or the last one was withdrawn; a grant of the model in force adds its facilities
  (per facility) or individuals (per person) to those already allowed, and takes them off the
  exclusions; a blanket or implied grant states its exclusion list anew. A hold stays as it was.
- exclude(facilities): added to the exclusions, taken off the allowed facilities.
- hold / release: viewing on hold, or not.
- withdraw(at): withdrawn from then on (its other values kept, for the history).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from xds.consent.policy import BLANKET, FACILITY, IMPLIED, MODELS, PERSON, facility_id

NONE = "none"
GRANT, EXCLUDE, HOLD, RELEASE, WITHDRAW = "grant", "exclude", "hold", "release", "withdraw"
ACTIONS = (GRANT, EXCLUDE, HOLD, RELEASE, WITHDRAW)
#: Not changes anyone asks for: the record of a BPPC document that no longer grants
#: (deprecated or deleted), whose consent is the record replayed without that document's grants
#: (xds.consent.store.revoke); and of a deprecated one made Approved again, replayed with them
#: (xds.consent.store.reinstate).
REVOKE, REINSTATE = "revoke", "reinstate"


class ConsentError(ValueError):
    """A change that cannot be made (a message a person can act on)."""


@dataclass(frozen=True)
class ConsentState:
    model: str = NONE
    #: Per facility: the facilities allowed.
    facilities: tuple[str, ...] = ()
    #: Facilities never allowed (an exclusion list; any model).
    excluded: tuple[str, ...] = ()
    #: Per person: the individuals allowed (XUA NameID or subject-id).
    individuals: tuple[str, ...] = ()
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    on_hold: bool = False
    withdrawn_at: datetime | None = None

    def describe(self) -> str:
        """The consent in a line, as `xds consent show` prints it."""
        parts = [self.model]
        if self.model == FACILITY:
            parts.append("facilities " + (", ".join(self.facilities) or "(none)"))
        if self.model == PERSON:
            parts.append("individuals " + (", ".join(self.individuals) or "(none)"))
        if self.excluded:
            parts.append("excluding " + ", ".join(self.excluded))
        if self.valid_from or self.valid_to:
            parts.append(f"valid {_day(self.valid_from) or '...'} to {_day(self.valid_to) or '...'}")
        if self.on_hold:
            parts.append("ON HOLD")
        if self.withdrawn_at:
            parts.append(f"WITHDRAWN {self.withdrawn_at.isoformat(timespec='seconds')}")
        return "; ".join(parts)


def _day(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else ""


def _union(first: tuple[str, ...], more: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*first, *more)))


def _without(values: tuple[str, ...], dropped: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v for v in values if v not in set(dropped))


def grant(state: ConsentState, model: str, *, facilities=(), individuals=(), excluded=(),
          valid_from: datetime | None = None, valid_to: datetime | None = None) -> ConsentState:
    if model not in MODELS:
        raise ConsentError(f"no consent model {model!r}: one of {', '.join(MODELS)}")
    facilities = tuple(dict.fromkeys(facility_id(f) for f in facilities if facility_id(f)))
    excluded = tuple(dict.fromkeys(facility_id(f) for f in excluded if facility_id(f)))
    individuals = tuple(dict.fromkeys(i.strip() for i in individuals if i.strip()))
    if model == FACILITY and not facilities:
        raise ConsentError("a consent per facility names the facilities allowed (--facility)")
    if model == PERSON and not individuals:
        raise ConsentError("a consent per person names the individuals allowed (--person)")
    if valid_from and valid_to and valid_to <= valid_from:
        raise ConsentError("the consent would end before it begins (--to is not after --from)")
    going_on = state.model == model and state.withdrawn_at is None
    if model in (BLANKET, IMPLIED):
        new = ConsentState(model, excluded=excluded)
    elif going_on:
        new = ConsentState(model, facilities=_without(_union(state.facilities, facilities), excluded),
                           excluded=_union(_without(state.excluded, facilities), excluded),
                           individuals=_union(state.individuals, individuals))
    else:
        new = ConsentState(model, facilities=_without(facilities, excluded), excluded=excluded,
                           individuals=individuals)
    # A grant of the consent in force keeps its period unless it gives one (either bound).
    if going_on and valid_from is None and valid_to is None:
        valid_from, valid_to = state.valid_from, state.valid_to
    return replace(new, valid_from=valid_from, valid_to=valid_to, on_hold=state.on_hold)


def exclude(state: ConsentState, facilities) -> ConsentState:
    facilities = tuple(dict.fromkeys(facility_id(f) for f in facilities if facility_id(f)))
    if not facilities:
        raise ConsentError("name the facilities to exclude")
    return replace(state, excluded=_union(state.excluded, facilities),
                   facilities=_without(state.facilities, facilities))


def hold(state: ConsentState) -> ConsentState:
    return replace(state, on_hold=True)


def release(state: ConsentState) -> ConsentState:
    return replace(state, on_hold=False)


def withdraw(state: ConsentState, at: datetime) -> ConsentState:
    return replace(state, withdrawn_at=at)
