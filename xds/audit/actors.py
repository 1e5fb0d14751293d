"""What the audit trail records of each transaction: a TransactionContext written from the
transaction's table row (xds.transactions), the SOAP request's addressing, the Caller and the
Result the actor returned. Nothing is read back out of a response.

The way in (xds.dispatch) calls record() after the actor has answered and before the answer is
sent, so a record is in the durable spool when the client learns the outcome. Nothing here may
break a transaction: whatever goes wrong is logged as AUDIT RECORD LOST and swallowed.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import socket
from collections.abc import Callable
from wsgiref.util import request_uri

from lxml import etree

from xds.audit import events
from xds.audit.trail import AuditTrail
from xds.ebrim.query_request import with_each_value
from xds.ebrim.submission import ParsedSubmission
from xds.errors import XdsError
from xds.result import Result
from xds.security.caller import CE, Caller, XUser, acting_for
from xds.soap import SoapRequest
from xds.transactions import ITI_42, ITI_42_SENT, Transaction

log = logging.getLogger("xds.audit")


def record(trail: AuditTrail, transaction: Transaction, request: SoapRequest, caller: Caller,
           result: Result) -> None:
    """Record `transaction`, answered with `result`, in `trail`. Never raises."""
    if not trail.enabled:
        return
    try:
        common = dict(action=request.action or "", message_id=request.message_id, reply_to=request.reply_to,
                      client_address=caller.address, client_certificate=caller.certificate_subject,
                      endpoint_url=endpoint_url(request.environ), outcome=result.status,
                      human_requestor=human_requestor(caller.user))
        records = _values(result, request)
        if result.consent is not None:
            records = with_consent(records, result.consent, events.outcome_indicator(result.status))
        for values in records:
            trail.record_transaction(transaction.audit, events.TransactionContext(**{**common, **values}))
        # The ids a merge retired: a record each, after the survivor's (events.RETIRED_RECORDS).
        retired = events.RETIRED_RECORDS.get(transaction.audit) if not result.failed else None
        for patient in result.patients if retired else ():
            trail.record_transaction(retired, events.TransactionContext(**{**common, **records[0],
                                                                           "patient_id": patient}))
    except Exception:
        log.exception("AUDIT RECORD LOST for %s (MessageID %s)", transaction, request.message_id)


def human_requestor(user: XUser | None) -> events.HumanRequestor | None:
    """The XUA user as the record's human requestor (ITI TF-2 3.40.4.2): UserID the NameID,
    UserName alias<user@issuer>, the roles as RoleIDCode and the purposes of use, each an
    HL7 CE written as a DICOM coded value: the code system's OID as its codeSystemName (its
    name when the CE has no OID), the displayName as originalText (the code when none)."""
    if user is None:
        return None
    return events.HumanRequestor(user.name_id, user.audit_name, tuple(map(_coded, user.roles)),
                                 tuple(map(_coded, user.purposes_of_use)))


def _coded(code: CE) -> events.CodedValue:
    return events.CodedValue(code.code, code.code_system or code.code_system_name, code.display_name or code.code)


def _values(result: Result, request: SoapRequest) -> list[dict]:
    """The values of the records of one transaction: one record, or for a retrieval one per
    patient, since a record names at most one (ITI TF-2b 3.43.6.1.2), each with that patient's
    documents in the request's order; a retrieval that returned nothing gives one record
    without documents. A multi-patient query (ITI-51) is recorded once per patient too (ITI
    TF-2b 3.51.5.1), each record's query naming its own patient only: a patient's access report
    shows no other patient's id, and the records grow with the patients, not with their square."""
    values: dict = {"patient_id": result.patient_id,
                    "submission_set_unique_id": result.submission_set_unique_id}
    query = result.query
    if query is not None and query.patients:
        values.update(query_id=query.query_id, home_community_id=query.home_community_id)
        requests = (with_each_value(request.body, query.patient_parameter, query.patients)
                    if query.patient_parameter else itertools.repeat(_query_request(result, request.body)))
        return [{**values, "patient_id": patient, "query_request": query_request}
                for patient, query_request in zip(query.patients, requests)]
    if query is not None:
        values.update(query_id=query.query_id, patient_id=query.patient_id,
                      home_community_id=query.home_community_id,
                      query_request=_query_request(result, request.body))
    if not result.documents:
        return [values]
    by_patient: dict[str, list[events.DocumentRef]] = {}
    for document in result.documents:
        by_patient.setdefault(document.patient_id, []).append(events.DocumentRef(
            document.unique_id, document.repository_unique_id, document.home_community_id))
    return [{**values, "patient_id": patient, "documents": refs} for patient, refs in by_patient.items()]


def with_consent(records: list[dict], access, outcome: events.EventOutcome) -> list[dict]:
    """`records` with access control's notes (xds.consent.access.PatientAccess): the record of
    a patient denied gets EventOutcomeIndicator 4 (minor failure: what was asked was not done
    for this patient; 8 when the transaction failed anyway) and the reason as its
    EventOutcomeDescription; one seen by break-glass keeps its outcome, with "break-glass: why"
    as description. A patient the records do not name yet (a Get query, a retrieval or a PDQ
    match left out, a break-glass object of a query naming no patient) gets a record of its own,
    the transaction's first without its documents, naming it and the documents withheld from
    it. The client's answer is not changed by any of this: it was written already."""
    denied = dict(access.denied)
    seen = dict(access.break_glass)
    failed = max(outcome, events.EventOutcome.MINOR_FAILURE)

    def denial(patient: str) -> dict:
        return {"outcome": failed, "outcome_description": f"access denied by consent: {denied.pop(patient)}",
                "documents": tuple(events.DocumentRef(uid) for uid in access.withheld.get(patient, ()))}

    def glass(patient: str) -> dict:
        return {"outcome_description": f"{seen.pop(patient).reason}"}

    out = []
    for values in records:
        patient = values.get("patient_id", "")
        if patient in denied and not values.get("documents"):
            values = {**values, **denial(patient)}
        elif patient in seen:
            values = {**values, **glass(patient)}
        out.append(values)
    base = {key: value for key, value in (records[0] if records else {}).items() if key != "documents"}
    out += [{**base, "patient_id": patient, **denial(patient)} for patient in list(denied)]
    out += [{**base, "patient_id": patient, **glass(patient)} for patient in list(seen)]
    return out


def _query_request(result: Result, body: etree._Element) -> bytes:
    """The query as the record carries it: the AdhocQueryRequest on its own, with the namespace
    declarations it inherited in the envelope (the tree keeps no source bytes to copy); of an
    HL7v3 message its queryByParameter, the Query Parameters of ITI TF-2b 3.45.5.1.2 (none for
    a feed: its record names the message only)."""
    if result.acknowledgement:
        body = body.find("{urn:hl7-org:v3}controlActProcess/{urn:hl7-org:v3}queryByParameter")
        if body is None:
            return b""
    return etree.tostring(body, encoding="UTF-8", with_tail=False)


def endpoint_url(environ: dict) -> str:
    """The URL the request was sent to, as this server saw it."""
    if not environ:
        return ""
    return _endpoint_url(*(environ.get(name) for name in _URL_PARTS))


_URL_PARTS = ("wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "SCRIPT_NAME", "PATH_INFO")


@functools.lru_cache(maxsize=256)  # a server's few endpoints; quoting the path is a fifth of a record
def _endpoint_url(*parts: str | None) -> str:
    return request_uri({name: part for name, part in zip(_URL_PARTS, parts) if part is not None},
                       include_query=False)


def audited_registration(register: Callable[[ParsedSubmission], list[XdsError]], trail: AuditTrail,
                         registry_url: str) -> Callable[[ParsedSubmission], list[XdsError]]:
    """`register`, recording each ITI-42 the repository sends to the registry at
    `registry_url` (ITI TF-2b 3.42.7.1.1: the repository is the Document Source there). Sent on
    behalf of a user whose X-User Assertion it conveys (xds.repository.registration), the record
    names that user as human requestor, as XUA asks of an X-Service User (ITI TF-2 3.40.4.2)."""
    host = socket.gethostname()

    def audited(parsed: ParsedSubmission) -> list[XdsError]:
        errors = register(parsed)
        try:
            ss = parsed.submission.submission_set
            sender = acting_for()
            ctx = events.TransactionContext(
                action=ITI_42.action, client_address=host, endpoint_url=registry_url,
                outcome=Result(errors).status, process_id=str(os.getpid()),
                human_requestor=human_requestor(sender.user) if sender is not None and sender.assertion else None,
                patient_id=(ss.patient_id or "") if ss else "",
                submission_set_unique_id=(ss.unique_id or "") if ss else "")
            trail.record_transaction(ITI_42_SENT, ctx)
        except Exception:
            log.exception("AUDIT RECORD LOST for the ITI-42 sent to %s", registry_url)
        return errors

    return audited
