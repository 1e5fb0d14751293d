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
from xds.ebrim.response import registry_response
from xds.ebrim.retrieve import retrieve_document_set_response
from xds.result import Result

WSDL_DIR = Path(__file__).resolve().parent.parent / "wsdl"

#: A response writer: the Result -> the response body and its attachments (Content-ID, media
#: type, content), which the SOAP layer sends as MTOM parts.
Respond = Callable[[Result], tuple[object, list]]


def _registry_response(result: Result) -> tuple[object, list]:
    return registry_response(result.errors), []


@dataclass(frozen=True)
class Endpoint:
    path: str
    wsdl: Path
    #: Streams documents: MTOM parts go to the repository's staging folder as they arrive,
    #: and envelopes may hold inline documents (see xds.repository.service).
    documents: bool = False


REGISTRY, REPOSITORY = "DocumentRegistry", "DocumentRepository"
#: Where each actor is served.
ENDPOINTS = {
    REGISTRY: Endpoint("/registry", WSDL_DIR / "XDS.b_DocumentRegistry.wsdl"),
    REPOSITORY: Endpoint("/repository", WSDL_DIR / "XDS.b_DocumentRepository.wsdl", documents=True),
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

    @property
    def response_action(self) -> str:
        """wsa:Action of the response: the request's with "Response" (so IHE's WSDLs name them)."""
        return self.action + "Response"

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
ITI_42, ITI_18, ITI_41, ITI_43 = TRANSACTIONS
BY_ACTION = {t.action: t for t in TRANSACTIONS}

#: The record the Document Repository writes of the ITI-42 it sends to a remote registry (it
#: is the Document Source there; in-process, registry and repository are one node).
ITI_42_SENT = ("ITI-42", REPOSITORY)
#: ITI-44 Patient Identity Feed HL7v3, add (the conformance runner sends it).
ITI_44_ADD = "urn:hl7-org:v3:PRPA_IN201301UV02"


def served_at(path: str) -> list[Transaction]:
    return [t for t in TRANSACTIONS if t.endpoint == path]
