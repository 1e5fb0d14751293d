"""One request's view of the patients: which it may see, and what the audit trail records.

    gate = ConsentGate.from_settings(settings)        # None-like when access_control is off
    access = gate.access(caller)                      # per request; None: no access control
    access.visible(session, ["P1^^^&1.2.3&ISO", ...]) -> the ids it may see
    access.visible_persons(session, {id: person})     -> the same, persons known (PIX)
    access.sift(session, [patient pk, ...])           -> the matches of a search it may see (PDQ)
    access.sees_domain(session, root)                 -> may it see some id of that domain
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
| ITI-45, ITI-47, an assigning authority none of whose ids it may see | 204 at the id's root, the data source, the scoping organization: "unknown domain", as for one nobody fed (xds.consent.identity) |

Audit (xds.audit.actors): each patient denied is in a record of the transaction's own event
with EventOutcomeIndicator 4 (minor failure) and the reason as EventOutcomeDescription; each seen
by break-glass keeps its outcome with "break-glass: ..." as description, and is written to
consent_break_glass for `xds consent review` (BreakGlassLog, after the handler). A search
(ITI-47) is the exception, audited once whatever it hides: the matches it left out are counted
in its own record (the key "" of `denied`, the request as a whole: outcome 4, "N matches left
out"), and only those its query named by id (livingSubjectId) get a denial naming them. A
record naming every hidden match would put each of them in the others' access reports (a
record names one patient, so that a patient's report shows no other patient's id) and write as
many records as a search for a common name hides (thousands for 佐藤); the TF allows the
patients of an ITI-47 record (0..n) but asks for none.
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
from xds.consent.record import ConsentState
from xds.consent.policy import ConsentPolicy, facility_id
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
    #: Assigning authority -> whether some id of it may be seen (sees_domain).
    _domains: dict[str, bool] = field(default_factory=dict, repr=False)
    #: A search's matches (sift): patient id -> (its person, the decision), for note_search.
    _sifted: dict[str, tuple[int | None, Decision]] = field(default_factory=dict, repr=False)

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

    def sift(self, session: Session, pks: Iterable[int]) -> set[int]:
        """Those of a search's matches (identity_patient pks) this request may see, each one's
        consent read with its id in one statement per thousand matches, no demographics read.
        Nothing is noted for the audit trail until the page is known (note_search)."""
        # A decision depends on the consent alone within a request: most matches share a few
        # consents (blanket, none recorded), each decided once.
        decided: dict[ConsentState | None, Decision] = {}
        shown = set()
        for pk, (cx, person, state) in store.of_patients(session, pks).items():
            decision = decided.get(state)
            if decision is None:
                decision = decided[state] = self._evaluate(state)
            self._sifted[cx] = (person, decision)
            if decision.allowed:
                shown.add(pk)
        return shown

    def note_search(self, shown: Iterable[str], named: Iterable[str] = ()) -> None:
        """After a search (sift), what the audit trail records: break-glass for each match
        `shown` (those on the page answered), a denial for each hidden match the query `named`
        (by id), and the other hidden matches counted in one denial of the request (key "")."""
        for cx in shown:
            person, decision = self._sifted[cx]
            self._note(cx, person, decision)
        named = set(named)
        hidden = [cx for cx, (_, decision) in self._sifted.items() if not decision.allowed]
        for cx in hidden:
            if cx in named:
                self._note(cx, *self._sifted[cx])
        unnamed = sum(1 for cx in hidden if cx not in named)
        if unnamed:
            self.denied[""] = f"{unnamed} match{'es' if unnamed > 1 else ''} left out"
        self._sifted.clear()

    def sees_domain(self, session: Session, root: str) -> bool:
        """Whether this request may see some id of assigning authority `root` (active or
        retired). When it may see none, the domain is not one it may know: a PIX Manager
        holding only what it may see never had an id of it. Decided without noting anything
        (no patient's data is shown or refused by it), reading the ids of `root` in batches
        until one may be seen: the records that cannot allow it are left out by the database
        (store.might_allow), so a domain it may see none of costs one index range scan."""
        if root not in self._domains and not facility_id(self.facility):
            self._domains[root] = False  # no facility, no patient data (decision.NO_FACILITY)
        if root not in self._domains:
            condition = store.might_allow(self.facility, implied=self.policy.implied,
                                          emergency=bool(self.policy.break_glass
                                                         and self.policy.emergency_purpose(self._purposes)))
            self._domains[root] = any(self._evaluate(state).allowed
                                      for batch in store.in_domain(session, root, condition) for _, state in batch)
        return self._domains[root]

    def _evaluate(self, state) -> Decision:
        return evaluate(state, self.facility, self.user, self._purposes, self.at, self.policy)

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


def consent_database(settings: Settings) -> str:
    """Where the repository reads consent from (ITI-43), in words for `xds serve`'s start-up
    log; "" when access control is off. ValueError (naming the settings) for a repository that
    registers with a remote registry (registry_url) and is not told the registry's database
    (registry_database_url): the consent records and the PIX Manager's persons are the
    registry's, and its own database holds none, so it would decide every retrieval from
    nothing (no document served; every one with consent_implied) without anyone noticing."""
    if not ConsentPolicy.from_settings(settings).enabled:
        return ""
    if not settings.registry_url:
        return f"access control: consent records and persons read from this server's database " \
               f"{db.redacted(settings.database)}"
    if not settings.registry_database_url:
        raise ValueError(f"access_control = consent with registry_url = {settings.registry_url}: set "
                         "registry_database_url to that registry's database (its database_url), where the "
                         "consent records and the PIX Manager's persons are; this repository holds none, and "
                         "would decide every retrieval (ITI-43) without them")
    return f"access control: ITI-43 reads consent records and persons from the registry's database " \
           f"{db.redacted(settings.registry_database_url)} (registry_database_url)"


def consent_sessions(settings: Settings, registry=None):
    """Read sessions on the database holding the consent records and the PIX Manager's persons,
    for the repository's ITI-43: the remote registry's (registry_database_url, see
    consent_database) when it registers with one (registry_url), else the in-process
    registry's (`registry`, a DocumentRegistry), else settings.database."""
    consent_database(settings)  # ValueError: a remote registry whose database is not known
    if settings.registry_url:
        return db.make_sessionmaker(db.make_engine(settings.registry_database_url))
    engine = registry.sessions.kw["bind"] if registry is not None else db.make_engine(settings.database)
    return db.make_sessionmaker(engine)


def after_hooks(settings: Settings, engine: Engine) -> list[BreakGlassLog]:
    """The dispatcher's hooks after the handler for `settings`: the break-glass log when access
    control and break-glass are on."""
    policy = ConsentPolicy.from_settings(settings)
    return [BreakGlassLog(engine)] if policy.enabled and policy.break_glass else []
