"""BPPC (Basic Patient Privacy Consents, ITI TF-3 5.1) consent documents registered through XDS
update the consent record, in the registration's own transaction: stored together, or neither.

A DocumentEntry is a consent document when its formatCode is BPPC's: urn:ihe:iti:bppc:2007, or
urn:ihe:iti:bppc-sd:2007 with a scanned part (ITI TF-3 5.1.2, 5.1.3). Its eventCodeList holds
"the Patient Privacy Policy Identifiers that have been acknowledged to within the document"
(ITI TF-3 5.1.2.1.1.2): each code that consent_bppc_policies names is a change of the
patient's consent, applied in the order of the list (xds.consent.store.change):

    consent_bppc_policies = "1.2.392.100.9.1=blanket; 1.2.392.100.9.2=facility:1.2.392.100.1;
                             1.2.392.100.9.9=withdraw"

The consent's effective time (the CDA's documentationOf/serviceEvent/effectiveTime, which is
the entry's serviceStartTime and serviceStopTime) is the validity period of a grant. Recorded
by the document's first author person (else the submission's), with source
"bppc:<uniqueId>". Codes no setting names change nothing (a network's own policies may be
there for other readers), and neither does a document for a patient the PIX Manager does not
know (logged: nothing can hold its consent, and without consent nothing is shown).

A consent document that is deprecated or deleted no longer grants: replaced (RPLC or
XFRM_RPLC in a registration, ITI-42, which deprecates it), its status changed to Deprecated
(ITI-57), or deleted (ITI-62). Each appends a record (action "revoke", source "bppc:<uniqueId>",
the reason naming the transaction and, for a replacement, the document replacing it) whose
consent is the person's record without that document's grants (xds.consent.store.revoke), in
the transaction that deprecates or deletes it. A replacement is revoked before the documents of
its own submission are applied, so a new consent document replacing an old one leaves the new
one's consent. A deprecated consent document whose status ITI-57 changes back to Approved
(ITI TF-2b 3.57.4.1.3.3.2: Deprecated to Approved) grants again: a record (action "reinstate",
its source, the reason naming the transaction) whose consent is the record replayed with its
grants in their place, what came after them applying to them (xds.consent.store.reinstate); a
deleted one is gone (its uniqueId registered again is a new document). The registry calls this
hook after storing a registration (`__call__`), and its update and removal steps call
`deprecated`, `approved` and `removed` (xds.registry.update, xds.registry.remove). A new version
of a consent document's metadata (ITI-57) keeps its uniqueId and its status: the document still
stands, and so does its consent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy.orm import Session

from xds.consent import store
from xds.consent.policy import ConsentPolicy
from xds.consent.record import GRANT, ConsentError
from xds.model import Submission
from xds.model.metadata import REPLACING
from xds.store import registry as registry_store

log = logging.getLogger("xds.consent")

BPPC_FORMATS = frozenset({"urn:ihe:iti:bppc:2007", "urn:ihe:iti:bppc-sd:2007"})


def _time(value: str | None) -> datetime | None:
    """An HL7 DTM (YYYY[MM[DD[hh[mm[ss]]]]], UTC in XDS metadata) as the first instant it names."""
    if not value:
        return None
    digits = value.strip()[:14]
    padded = digits + "0101000000"[len(digits) - 4:] if len(digits) >= 4 else ""
    try:
        return datetime.strptime(padded, "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class BppcConsents:
    """The registry's hook after a submission is stored (DocumentRegistry.after_store)."""

    policy: ConsentPolicy
    clock: Callable[[], datetime] = _utc_now

    def __call__(self, session: Session, submission: Submission) -> None:
        ss = submission.submission_set
        fallback = next((a.person for a in (ss.authors if ss else []) if a.person), "") or (ss.source_id if ss else "")
        replaced = {a.target: a for a in submission.associations if a.association_type in REPLACING}
        if replaced:  # first: a consent document replacing another leaves its own consent
            new_ids = {d.id: d.unique_id for d in submission.documents}

            def why(target: str) -> str:
                a = replaced[target]
                return (f"deprecated: replaced ({a.association_type.short_name}) by document "
                        f"{new_ids.get(a.source) or a.source} of submission set {ss.unique_id if ss else '?'} "
                        "(ITI-42 Register Document Set-b)")

            self._revoke(session, list(replaced), fallback or "Document Registry", why, store.DEPRECATED)
        for entry in submission.documents:
            if entry.format_code is None or entry.format_code.code not in BPPC_FORMATS or not entry.patient_id:
                continue
            meanings = [self.policy.bppc[c.code] for c in entry.event_codes if c.code in self.policy.bppc]
            if not meanings:
                continue
            person = store.persons_of(session, [entry.patient_id]).get(entry.patient_id)
            if person is None:
                log.warning("BPPC document %s: patient %s is not known to the PIX Manager; its consent is not "
                            "recorded", entry.unique_id, entry.patient_id)
                continue
            author = next((a.person for a in entry.authors if a.person), "") or fallback or "BPPC document"
            now = self.clock()
            for meaning in meanings:
                try:
                    store.change(session, entry.patient_id, meaning.action, self.policy, at=now, recorded_by=author,
                                 reason=f"BPPC consent document {entry.unique_id}", source=f"bppc:{entry.unique_id}",
                                 person_id=person, meaning=meaning,
                                 **({"valid_from": _time(entry.service_start_time),
                                     "valid_to": _time(entry.service_stop_time)} if meaning.action == GRANT else {}))
                except ConsentError as refused:
                    log.warning("BPPC document %s: %s", entry.unique_id, refused)


    def deprecated(self, session: Session, entry_uuids: list[str], transaction: str) -> None:
        """The DocumentEntries `entry_uuids` were made Deprecated by `transaction` (ITI-57)."""
        self._revoke(session, entry_uuids, transaction, lambda _: f"deprecated: status changed to Deprecated "
                                                                  f"({transaction})", store.DEPRECATED)

    def approved(self, session: Session, entry_uuids: list[str], transaction: str) -> None:
        """The DocumentEntries `entry_uuids` were made Approved (again) by `transaction` (ITI-57)."""
        self._each(session, entry_uuids, lambda person, row, now: store.reinstate(
            session, person, row.patient_id, f"bppc:{row.unique_id}", self.policy, at=now, recorded_by=transaction,
            reason=f"BPPC consent document {row.unique_id} approved again: status changed to Approved "
                   f"({transaction})"), "grants consent again")

    def removed(self, session: Session, entry_uuids: list[str], transaction: str) -> None:
        """The registry objects `entry_uuids` are being deleted by `transaction` (ITI-62): called
        before their rows go."""
        self._revoke(session, entry_uuids, transaction, lambda _: f"deleted ({transaction})", store.DELETED)

    def _revoke(self, session: Session, entry_uuids: list[str], recorded_by: str, why: Callable[[str], str],
                ended: str) -> None:
        """Revoke the consent of those of `entry_uuids` that are documents whose registration
        recorded consent (store.revoke: nothing for the others), the document `ended` as
        store.DEPRECATED or store.DELETED."""
        self._each(session, entry_uuids, lambda person, row, now: store.revoke(
            session, person, row.patient_id, f"bppc:{row.unique_id}", self.policy, at=now, recorded_by=recorded_by,
            reason=f"BPPC consent document {row.unique_id} {why(row.entry_uuid)}", ended=ended),
            "no longer grants consent")

    def _each(self, session: Session, entry_uuids: list[str],
              write: Callable[[int, registry_store.ObjectRow, datetime], store.ConsentRecord | None],
              what: str) -> None:
        """`write` for each of `entry_uuids` that is a DocumentEntry of a patient the PIX Manager
        knows (its person, its row, now); `what` it did, logged when it wrote a record."""
        entries = [row for row in registry_store.find_entries_by_uuid(session, entry_uuids).values()
                   if row.kind == "DocumentEntry" and row.unique_id and row.patient_id]
        if not entries:
            return
        persons = store.persons_of(session, [row.patient_id for row in entries])
        now = self.clock()
        for row in entries:
            person = persons.get(row.patient_id)
            if person is None:
                continue
            written = write(person, row, now)
            if written is not None:
                log.info("BPPC document %s %s: %s; now %s", row.unique_id, what, written.reason,
                         written.state.describe())


def hook(settings) -> BppcConsents | None:
    """The registry's after_store hook for `settings`: None when no BPPC policy id is configured
    (consent_bppc_policies), so registrations do nothing more."""
    policy = ConsentPolicy.from_settings(settings)
    return BppcConsents(policy) if policy.bppc else None
