"""What the audit trail records of each transaction: a TransactionContext written from the
transaction's table row (xds.transactions), the SOAP request's addressing, the Caller and the
Result the actor returned. Nothing is read back out of a response.

The way in (xds.dispatch) calls record() after the actor has answered and before the answer is
sent, so a record is in the durable spool when the client learns the outcome. Nothing here may
break a transaction: whatever goes wrong is logged as AUDIT RECORD LOST and swallowed.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Callable
from wsgiref.util import request_uri

from lxml import etree

from xds.audit import events
from xds.audit.trail import AuditTrail
from xds.ebrim.submission import ParsedSubmission
from xds.errors import XdsError
from xds.result import Result
from xds.security.caller import Caller
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
                      endpoint_url=endpoint_url(request.environ), outcome=result.status)
        for values in _values(result, request):
            trail.record_transaction(transaction.audit, events.TransactionContext(**common, **values))
    except Exception:
        log.exception("AUDIT RECORD LOST for %s (MessageID %s)", transaction, request.message_id)


def _values(result: Result, request: SoapRequest) -> list[dict]:
    """The values of the records of one transaction: one record, or for a retrieval one per
    patient, since a record names at most one (ITI TF-2b 3.43.6.1.2), each with that patient's
    documents in the request's order; a retrieval that returned nothing gives one record
    without documents."""
    values: dict = {"patient_id": result.patient_id,
                    "submission_set_unique_id": result.submission_set_unique_id}
    if result.query is not None:
        values.update(query_id=result.query.query_id, patient_id=result.query.patient_id,
                      home_community_id=result.query.home_community_id,
                      # the AdhocQueryRequest on its own, with the namespace declarations it
                      # inherited in the envelope (the tree keeps no source bytes to copy)
                      query_request=etree.tostring(request.body, encoding="UTF-8", with_tail=False))
    if not result.documents:
        return [values]
    by_patient: dict[str, list[events.DocumentRef]] = {}
    for document in result.documents:
        by_patient.setdefault(document.patient_id, []).append(events.DocumentRef(
            document.unique_id, document.repository_unique_id, document.home_community_id))
    return [{**values, "patient_id": patient, "documents": refs} for patient, refs in by_patient.items()]


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
    `registry_url` (ITI TF-2b 3.42.7.1.1: the repository is the Document Source there)."""
    host = socket.gethostname()

    def audited(parsed: ParsedSubmission) -> list[XdsError]:
        errors = register(parsed)
        try:
            ss = parsed.submission.submission_set
            ctx = events.TransactionContext(
                action=ITI_42.action, client_address=host, endpoint_url=registry_url,
                outcome=Result(errors).status, process_id=str(os.getpid()),
                patient_id=(ss.patient_id or "") if ss else "",
                submission_set_unique_id=(ss.unique_id or "") if ss else "")
            trail.record_transaction(ITI_42_SENT, ctx)
        except Exception:
            log.exception("AUDIT RECORD LOST for the ITI-42 sent to %s", registry_url)
        return errors

    return audited
