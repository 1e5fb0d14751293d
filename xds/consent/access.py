"""One request's view of the patients: which it may see, and what the audit trail records.

    gate = ConsentGate.from_settings(settings)        # None-like when access_control is off
    access = gate.access(caller)                      # per request; None: no access control
    access.visible(session, ["P1^^^&1.2.3&ISO", ...]) -> the ids it may see
    access.visible_persons(session, {id: person})     -> the same, persons known (PIX, PDQ)
    result.consent = access                           # the audit reads access.denied / .break_glass

A PatientAccess is made for one request and dropped with it: decisions are cached in it for the
request's patients only (a query naming a patient twice decides once), never across requests,
so a withdrawal committed before a request begins applies to it, on every worker and host.

What each transaction answers for a patient the facility may not see (as the same registry,
repository or PIX Manager holding only what the facility may see would answer: no count, no id,
no other error or status):

| transaction | answer |
| --- | --- |
| ITI-18 by patient (FindDocuments, FindDocumentsByReferenceId, FindSubmissionSets, FindFolders, GetAll) | Success, no objects (xds.registry.query) |
| ITI-18 by id (the Get queries) | the objects of the other patients only; Associations with an end the facility may not see left out (xds.registry.find) |
| ITI-51 | the patients the facility may see, of those named (or of all, when none is named) |
| ITI-43 | XDSDocumentUniqueIdError, exactly as for a document the repository does not hold (xds.repository.retrieve) |
| ITI-45 | AE, 204 unknown key identifier: as for an id the PIX Manager does not know (ITI TF-2 3.45.4.2.3, Case 3) |
| ITI-47 | the other matches only; the total and the continuation count those alone |

Audit (xds.audit.actors): each patient denied is in a record of the transaction's own event
with EventOutcomeIndicator 4 (minor failure) and the reason as EventOutcomeDescription; each seen
by break-glass keeps its outcome with "break-glass: ..." as description, and is written to
consent_break_glass for `xds consent review` (BreakGlassLog, after the handler).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from xds.config import Settings
from xds.consent import store
from xds.consent.decision import Decision, evaluate
from xds.consent.policy import ConsentPolicy
from xds.security.caller import Caller, XUser
from xds.store import db
from xds.store.tables import ConsentBreakGlassRow

log = logging.getLogger("xds.consent")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Seen:
    """A patient seen by break-glass: its person and why consent alone did not allow it."""

    person_id: int | None
    reason: str


@dataclass
class PatientAccess:
    policy: ConsentPolicy
    facility: str
    user: XUser | None
    at: datetime
    #: Patient id -> why it may not be seen (for the audit trail).
    denied: dict[str, str] = field(default_factory=dict)
    #: Patient id -> seen by break-glass.
    break_glass: dict[str, Seen] = field(default_factory=dict)
    #: Patient id -> the documents (uniqueIds) a retrieval did not return for it (ITI-43).
    withheld: dict[str, list[str]] = field(default_factory=dict)
    _decided: dict[str, bool] = field(default_factory=dict, repr=False)

    def visible(self, session: Session, patient_ids: Iterable[str]) -> set[str]:
        """Those of `patient_ids` (CX) this request may see, each decided by its person's consent."""
        ids = [i for i in dict.fromkeys(patient_ids) if i]
        wanted = [i for i in ids if i not in self._decided]
        if wanted:
            found = store.consents_of(session, wanted)
            for cx in wanted:
                person, consent = found[cx]
                self._note(cx, person, evaluate(consent, self.facility, self.user, self._purposes, self.at,
                                                self.policy))
        return {i for i in ids if self._decided[i]}

    def visible_persons(self, session: Session, persons: Mapping[str, int | None]) -> set[str]:
        """Those of the ids of `persons` (id -> its person, as the PIX Manager read it) this
        request may see."""
        wanted = {cx: p for cx, p in persons.items() if cx not in self._decided}
        if wanted:
            records = store.latest(session, [p for p in wanted.values() if p is not None])
            for cx, person in wanted.items():
                latest = records.get(person) if person is not None else None
                self._note(cx, person, evaluate(latest.state if latest else None, self.facility, self.user,
                                                self._purposes, self.at, self.policy))
        return {cx for cx in persons if self._decided[cx]}

    @property
    def _purposes(self):
        return self.user.purposes_of_use if self.user is not None else ()

    def _note(self, patient_id: str, person: int | None, decision: Decision) -> None:
        self._decided[patient_id] = decision.allowed
        if not decision.allowed:
            self.denied[patient_id] = decision.reason
        elif decision.break_glass:
            self.break_glass[patient_id] = Seen(person, decision.reason)


@dataclass(frozen=True)
class ConsentGate:
    """Makes each request's PatientAccess, when access control is on."""

    policy: ConsentPolicy
    clock: Callable[[], datetime] = utc_now

    @classmethod
    def from_settings(cls, settings: Settings) -> "ConsentGate | None":
        """The gate of `settings`; None when access_control is off (nothing is filtered)."""
        policy = ConsentPolicy.from_settings(settings)
        return cls(policy) if policy.enabled else None

    def access(self, caller: Caller | None) -> PatientAccess | None:
        """The view of `caller`'s request; None for no caller (this server's own command line,
        an administrator's: it sees everything)."""
        if caller is None:
            return None
        return PatientAccess(self.policy, caller.facility, caller.user, self.clock())


@dataclass
class BreakGlassLog:
    """A hook after the handler (xds.dispatch): writes each break-glass access of a request to
    consent_break_glass, for `xds consent review`. Never fails the request: a row that cannot
    be written is logged (the audit record has the access too)."""

    engine: Engine

    def __call__(self, transaction, request, caller: Caller, result) -> None:
        access = getattr(result, "consent", None)
        if access is None or not access.break_glass:
            return
        user = caller.user
        purposes = " ".join(f"{p.code}^{p.code_system}" if p.code_system else p.code
                            for p in (user.purposes_of_use if user else ()))
        rows = [dict(at=access.at, person_id=seen.person_id, patient_id=patient[:256], transaction=transaction.name,
                     facility=access.facility[:512], user_id=(user.name_id if user else "")[:512],
                     user_name=(user.audit_name if user else "")[:512], purposes=purposes[:512],
                     reason=seen.reason[:1024], message_id=(request.message_id or "")[:512],
                     address=(caller.address or "")[:64])
                for patient, seen in access.break_glass.items()]
        try:
            with db.write_session(self.engine) as session:
                session.execute(insert(ConsentBreakGlassRow), rows)
        except Exception:
            log.exception("BREAK-GLASS ACCESS NOT LOGGED for review (%s, MessageID %s, patients %s)",
                          transaction.name, request.message_id, ", ".join(access.break_glass))


def consent_sessions(settings: Settings, registry=None):
    """Read sessions on the database holding the consent records and the PIX Manager's persons:
    the in-process registry's (`registry`, a DocumentRegistry), else settings.database (a
    repository registering with a remote registry must share that database with its PIX
    Manager for consent to be read)."""
    engine = registry.sessions.kw["bind"] if registry is not None else db.make_engine(settings.database)
    return db.make_sessionmaker(engine)


def after_hooks(settings: Settings, engine: Engine) -> list[BreakGlassLog]:
    """The dispatcher's hooks after the handler for `settings`: the break-glass log when access
    control and break-glass are on."""
    policy = ConsentPolicy.from_settings(settings)
    return [BreakGlassLog(engine)] if policy.enabled and policy.break_glass else []
