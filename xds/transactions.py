"""The transactions this server answers: one table, the way xds.rules holds the rules.

Each row says everything the way in (xds.dispatch) needs to serve a transaction: the
wsa:Action a request carries and the one its response carries, the endpoint path it is served
at, the IHE actor that answers it and that actor's handler (a method of the actor's service
object, called with the SOAP request and the Caller, returning a xds.result.Result), how the
response is written from that Result, whether it goes as MTOM whatever the request was, the
audit event it records (a key of xds.audit.events.EVENTS) and the rule whose error answers an
unexpected failure (None: a SOAP Receiver fault). The response's action, the endpoint and the
audit event follow from these.

Action URIs are written here and nowhere else: the clients (xds.client, the repository's
registration with a remote registry, the command line, the conformance runner) take them from
this table too.

Adding a transaction: a row here; its handler on the actor's service; its response writer
(xds.ebrim) when it is not a plain RegistryResponse; its audit event in xds.audit.events
EVENTS; its rules in xds.rules; its operation in the actor's WSDL. A new actor: its endpoint in
ENDPOINTS and its service in xds.app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xds.ebrim.query_response import adhoc_query_response
from xds.ebrim.remove import registry_response_of
from xds.ebrim.response import registry_response
from xds.ebrim.retrieve import retrieve_document_set_response
from xds.hl7v3.ns import INTERACTIONS
from xds.result import Result

WSDL_DIR = Path(__file__).resolve().parent.parent / "wsdl"

#: A response writer: the Result -> the response body and its attachments (Content-ID, media
#: type, content), which the SOAP layer sends as MTOM parts.
Respond = Callable[[Result], tuple[object, list]]


def _registry_response(result: Result) -> tuple[object, list]:
    return registry_response(result.errors), []


def _hl7v3_answer(result: Result) -> tuple[object, list]:
    # The PIX Manager and PDQ Supplier write their HL7v3 answer whole (xds.identity.service):
    # it echoes the request's header and query.
    return result.content, []


@dataclass(frozen=True)
class Endpoint:
    path: str
    wsdl: Path
    #: Streams documents: MTOM parts go to the repository's staging folder as they arrive,
    #: and envelopes may hold inline documents (see xds.repository.service).
    documents: bool = False


REGISTRY, REPOSITORY = "DocumentRegistry", "DocumentRepository"
PIX_MANAGER, PDQ_SUPPLIER = "PatientIdentifierCrossReferenceManager", "PatientDemographicsSupplier"
#: Where each actor is served.
ENDPOINTS = {
    REGISTRY: Endpoint("/registry", WSDL_DIR / "XDS.b_DocumentRegistry.wsdl"),
    REPOSITORY: Endpoint("/repository", WSDL_DIR / "XDS.b_DocumentRepository.wsdl", documents=True),
    PIX_MANAGER: Endpoint("/pix", WSDL_DIR / "PIXManager.wsdl"),
    PDQ_SUPPLIER: Endpoint("/pdq", WSDL_DIR / "PDQSupplier.wsdl"),
}


@dataclass(frozen=True)
class Transaction:
    name: str                  # as IHE numbers it: ITI-42
    title: str                 # as IHE names it
    action: str                # wsa:Action of the request
    actor: str                 # the IHE actor that answers it here
    handler: str               # the method of that actor's service that answers it
    respond: Respond
    internal_error: str | None = None      # the rule answering an unexpected failure
    mtom: bool = False                     # the response is MTOM whatever the request was
    answer_action: str = ""                # wsa:Action of the response when not the default

    @property
    def response_action(self) -> str:
        """wsa:Action of the response: the request's with "Response" (so IHE's WSDLs name them
        for XDS), or for an HL7v3 message the action of its answer's interaction."""
        return self.answer_action or self.action + "Response"

    @property
    def endpoint(self) -> str:
        return ENDPOINTS[self.actor].path

    @property
    def audit(self) -> tuple[str, str]:
        """The xds.audit.events.EVENTS key of the record the answering actor writes."""
        return self.name, self.actor

    def __str__(self) -> str:
        return f"{self.name} {self.title}"


# name, title, request action, actor, its handler, response writer, internal-error rule, MTOM
TRANSACTIONS = tuple(Transaction(*row) for row in (
    ("ITI-42", "Register Document Set-b", "urn:ihe:iti:2007:RegisterDocumentSet-b", REGISTRY,
     "register_document_set", _registry_response, "registry.internal"),
    ("ITI-18", "Registry Stored Query", "urn:ihe:iti:2007:RegistryStoredQuery", REGISTRY,
     "registry_stored_query", adhoc_query_response, "query.internal"),
    ("ITI-41", "Provide and Register Document Set-b", "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b",
     REPOSITORY, "provide_and_register_document_set", _registry_response, "repository.internal"),
    ("ITI-43", "Retrieve Document Set", "urn:ihe:iti:2007:RetrieveDocumentSet", REPOSITORY,
     "retrieve_document_set", retrieve_document_set_response, None, True),
))


def _hl7v3(title: str, interaction: str, actor: str, handler: str) -> Transaction:
    """A row for an HL7v3 interaction: its actions are those xds.hl7v3.ns.INTERACTIONS names."""
    i = INTERACTIONS[interaction]
    return Transaction(i.transaction, title, i.action, actor, handler, _hl7v3_answer,
                       answer_action=i.response_action)


TRANSACTIONS += (
    _hl7v3("Patient Identity Feed HL7 V3", "PRPA_IN201301UV02", PIX_MANAGER, "patient_identity_feed"),
    _hl7v3("Patient Identity Feed HL7 V3", "PRPA_IN201302UV02", PIX_MANAGER, "patient_identity_feed"),
    _hl7v3("Patient Identity Feed HL7 V3", "PRPA_IN201304UV02", PIX_MANAGER, "patient_identity_feed"),
    _hl7v3("PIXV3 Query", "PRPA_IN201309UV02", PIX_MANAGER, "pix_query"),
    _hl7v3("Patient Demographics Query HL7 V3", "PRPA_IN201305UV02", PDQ_SUPPLIER, "patient_demographics_query"),
    _hl7v3("Patient Demographics Query HL7 V3", "QUQI_IN000003UV01", PDQ_SUPPLIER, "query_continuation"),
    _hl7v3("Patient Demographics Query HL7 V3", "QUQI_IN000003UV01_Cancel", PDQ_SUPPLIER, "query_continuation"),
)
# Remove Metadata and Documents (RMD): the Document Administrator's two transactions. ITI-86
# answers PartialSuccess when some of the documents it names were removed: its writer takes the
# status from the Result.
ITI_62 = Transaction("ITI-62", "Delete Document Set", "urn:ihe:iti:2010:DeleteDocumentSet", REGISTRY,
                     "delete_document_set", _registry_response, "remove.internal")
ITI_86 = Transaction("ITI-86", "Remove Documents", "urn:ihe:iti:2017:RemoveDocuments", REPOSITORY,
                     "remove_documents", registry_response_of, "remove-documents.internal")
TRANSACTIONS += (ITI_62, ITI_86)
# Multi-Patient Queries (MPQ): the registry's stored queries over several patients, answered
# like ITI-18 (an AdhocQueryResponse) to the callers the configuration allows.
ITI_51 = Transaction("ITI-51", "Multi-Patient Stored Query", "urn:ihe:iti:2009:MultiPatientStoredQuery",
                     REGISTRY, "multi_patient_stored_query", adhoc_query_response, "query.internal")
TRANSACTIONS += (ITI_51,)
# Metadata Update (XDS Metadata Update option): the Document Administrator's new versions, status
# changes and associations, answered with a RegistryResponse (Success or Failure only).
ITI_57 = Transaction("ITI-57", "Update Document Set", "urn:ihe:iti:2010:UpdateDocumentSet", REGISTRY,
                     "update_document_set", _registry_response, "update.internal")
TRANSACTIONS += (ITI_57,)
ITI_42, ITI_18, ITI_41, ITI_43 = TRANSACTIONS[:4]
BY_ACTION = {t.action: t for t in TRANSACTIONS}

#: The record the Document Repository writes of the ITI-42 it sends to a remote registry (it
#: is the Document Source there; in-process, registry and repository are one node).
ITI_42_SENT = ("ITI-42", REPOSITORY)
#: ITI-44 Patient Identity Feed HL7v3, add (the conformance runner sends it).
ITI_44_ADD = INTERACTIONS["PRPA_IN201301UV02"].action


def served_at(path: str) -> list[Transaction]:
    return [t for t in TRANSACTIONS if t.endpoint == path]
