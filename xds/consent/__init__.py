"""Consent and access control: which facility may see which patient's documents (issue 12).

Regional networks share a patient's records only with the facilities the patient agreed to,
and stop at once when the patient withdraws. IHE leaves the enforcement to the affinity domain
(BPPC records the consent, XUA names who asks); here it is enforced by the Document Registry
(ITI-18, ITI-51), the Document Repository (ITI-43) and the PIX Manager / PDQ Supplier (ITI-45,
ITI-47) when the setting access_control is "consent".

    record.py     a consent: its models (blanket, per facility, per person, implied), hold and
                  withdrawal, and how each change (grant, exclude, hold, release, withdraw) moves it
    store.py      the consent records: per person, append-only, with who, when, why, source and
                  what each change asked; a revoked source's grants replayed away (and back,
                  for a document made Approved again)
    decision.py   decide(session, person_id, facility, user, purposes, at) -> Decision, and
                  decide_many for the many persons of one query
    policy.py     the settings: access_control, break-glass, implied consent, BPPC policy ids
    facility.py   who is asking: the requesting facility of a request (XUA organization id, or
                  the client certificate mapped in facility_certificates), a dispatcher check
    access.py     one request's view: the patients it may see, and the denials and break-glass
                  accesses the audit trail records; the break-glass log
    identity.py   what the PIX Manager and the PDQ Supplier answer: the domains a request may
                  know, the PIX answer, a search's page (every match decided, one page read)
    bppc.py       BPPC consent documents registered through XDS update the record; deprecated
                  or deleted, they no longer grant; made Approved again, they grant again
    command.py    `xds consent grant|exclude|hold|withdraw|show|review`

Theory of operation. A consent belongs to a person (identity_person): every local id of the
person, and every id merged into it, shares it. The record is a chain of rows, each the whole
consent a change left (and what the change asked), never updated: the latest row of a person is
the consent now. A request carries its facility (Caller.facility, set by
facility.RequestingFacility before the handler runs); each handler that reads patient data asks
a PatientAccess, made for that request alone, which of the patients it found may be shown, in
the request's own database transaction: no decision outlives its request, so a withdrawal
committed before a request begins is seen by it, on every worker and host. What may not be seen
is left out exactly as if it were not stored: no count, no id, no other error or status (see
access.py for what each transaction answers).
"""
