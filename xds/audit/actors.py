"""What the registry and the repository tell the audit trail about each transaction they
serve: the values of a TransactionContext, read from the SOAP request and the answer.

The services call the functions here after they have their answer and before they send it, so
a record is in the durable spool when the client learns the outcome. Nothing here may break a
transaction: audit() logs and swallows whatever goes wrong (a record lost is logged as such).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable
from wsgiref.util import request_uri

from lxml import etree

from xds.audit import events
from xds.audit.trail import AuditTrail
from xds.ebrim import ns
from xds.soap import SoapRequest
from xds.security.tls import peer_subject

log = logging.getLogger("xds.audit")

_RIM = f"{{{ns.RIM}}}"
_XDSB = f"{{{ns.XDSB}}}"
_ADHOC_QUERY, _SLOT, _VALUE_LIST, _VALUE = (f"{_RIM}{name}" for name in ("AdhocQuery", "Slot", "ValueList", "Value"))
# The stored query parameters that name the patient (ITI TF-2a 3.18.4.1.2.3.7).
_PATIENT_PARAMETERS = ("$XDSDocumentEntryPatientId", "$XDSSubmissionSetPatientId", "$XDSFolderPatientId",
                       "$patientId")


def audit(trail: AuditTrail, build: Callable[[events.TransactionContext, events.AuditSource], bytes],
          request: SoapRequest, answer: etree._Element | bytes | str | int, **values) -> None:
    """Record `build`'s message for `request`, answered with `answer` (a response element
    with a status attribute, a status, or an EventOutcomeIndicator); `values` fill the rest
    of the TransactionContext. Never raises."""
    if not trail.enabled:
        return
    try:
        ctx = events.context_from_request(
            request, endpoint_url=endpoint_url(request.environ), outcome=outcome(answer),
            client_certificate=peer_subject(request.environ) or "", **values)
        trail.record_transaction(build, ctx)
    except Exception:
        log.exception("AUDIT RECORD LOST for %s (MessageID %s)", request.action, request.message_id)


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


_STATUS = re.compile(rb'\bstatus="([^"]+)"')


def outcome(answer: etree._Element | bytes | str | int) -> str | int:
    """The outcome of an answer: its status, as a response element, or as serialized bytes
    (a LeafClass AdhocQueryResponse is written without a tree: its status is the first)."""
    if isinstance(answer, bytes):
        found = _STATUS.search(answer, 0, 4096)
        return found.group(1).decode() if found else events.EventOutcome.MAJOR_FAILURE
    if isinstance(answer, etree._Element):
        status = answer.get("status")
        if status is None:  # RetrieveDocumentSetResponse: the status is on its RegistryResponse
            inner = answer.find(f"{{{ns.RS}}}RegistryResponse")
            status = inner.get("status") if inner is not None else None
        return status or events.EventOutcome.MAJOR_FAILURE
    return answer


def submission(submit: etree._Element) -> dict:
    """The patient and the SubmissionSet uniqueId of a SubmitObjectsRequest (ITI-41/42)."""
    for package in submit.iter(f"{_RIM}RegistryPackage"):
        identifiers = {e.get("identificationScheme"): e.get("value")
                       for e in package.iter(f"{_RIM}ExternalIdentifier")}
        if ns.SS_UNIQUE_ID in identifiers:
            return {"patient_id": identifiers.get(ns.SS_PATIENT_ID) or "",
                    "submission_set_unique_id": identifiers[ns.SS_UNIQUE_ID] or ""}
    return {}


def query(request_body: etree._Element) -> dict:
    """The stored query's id, its patient, its homeCommunityId and the request as received:
    the AdhocQueryRequest on its own, a document with the namespace declarations it inherited
    in the envelope (lxml writes them; the tree keeps no source bytes to copy instead)."""
    request = etree.tostring(request_body, encoding="UTF-8", with_tail=False)
    # iterchildren() rather than find()/findtext(): this runs for every query, and the
    # ElementPath calls cost more than the walk (1.6 of 8.7 us for a FindDocuments request)
    adhoc = next(request_body.iterchildren(_ADHOC_QUERY), None)
    if adhoc is None:
        return {"query_request": request}
    patient = ""
    for slot in adhoc.iter(_SLOT):
        if slot.get("name") in _PATIENT_PARAMETERS:
            patient = (_first_value(slot) or "").strip().strip("'")
            break
    return {"query_id": adhoc.get("id") or "", "patient_id": patient,
            "home_community_id": adhoc.get("home") or "", "query_request": request}


def _first_value(slot: etree._Element) -> str | None:
    """slot.findtext("rim:ValueList/rim:Value")."""
    for value_list in slot.iterchildren(_VALUE_LIST):
        for value in value_list.iterchildren(_VALUE):
            return value.text or ""
    return None


def retrievals(request_body: etree._Element, found: Iterable[tuple[str, str]], repository_unique_id: str,
               home_community_id: str = "") -> list[dict]:
    """The values of the ITI-43 records for a RetrieveDocumentSetRequest whose answer carries
    `found` (uniqueId, patient id): one record per patient, since a record names at most one
    (ITI TF-2b 3.43.6.1.2), each with that patient's documents, in the request's order, with
    the homeCommunityId their request named, else `home_community_id` (this node's). An answer
    with no document gives one record without documents."""
    patient_of = dict(found)
    by_patient: dict[str, list[events.DocumentRef]] = {}
    for item in request_body.iter(f"{_XDSB}DocumentRequest"):
        unique_id = (item.findtext(f"{_XDSB}DocumentUniqueId") or "").strip()
        if unique_id not in patient_of:
            continue
        home = (item.findtext(f"{_XDSB}HomeCommunityId") or "").strip() or home_community_id
        by_patient.setdefault(patient_of.pop(unique_id), []).append(
            events.DocumentRef(unique_id, repository_unique_id, home))
    if not by_patient:
        return [{"documents": []}]
    return [{"patient_id": patient, "documents": refs} for patient, refs in by_patient.items()]
