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


def hook(settings) -> BppcConsents | None:
    """The registry's after_store hook for `settings`: None when no BPPC policy id is configured
    (consent_bppc_policies), so registrations do nothing more."""
    policy = ConsentPolicy.from_settings(settings)
    return BppcConsents(policy) if policy.bppc else None
