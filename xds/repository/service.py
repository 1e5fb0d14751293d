"""The repository's SOAP endpoint: ITI-41 and ITI-43 at POST /repository, its WSDL at GET ?wsdl.

    urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b   ITI-41 -> RegistryResponse
    urn:ihe:iti:2007:RetrieveDocumentSet               ITI-43 -> RetrieveDocumentSetResponse (MTOM)

The endpoint streams: its spool is the blob store's staging folder, so a document of an MTOM
request is written to disk (and hashed) while it arrives and staged by a rename; a retrieved
document is sent from its file in chunks. Requests up to `max_document_request_size`; the SOAP
envelope (which holds the metadata, and documents sent inline as base64) up to
MAX_ENVELOPE_SIZE, parsed without libxml2's 10 MB text limit so that inline documents up to
about 48 MB work (larger ones are refused with a fault that says to use MTOM).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from xds.audit import actors, events
from xds.audit.trail import NO_AUDIT, AuditTrail
from xds.config import Settings
from xds.ebrim.response import registry_response
from xds.registry.register import DocumentRegistry
from xds.repository.blobs import BlobStore, FileBlobStore, Recovery
from xds.repository.provide import ProvideAndRegister
from xds.repository.registration import LocalRegistry, RemoteRegistry
from xds.repository.retrieve import RetrieveDocumentSet
from xds.rules import error
from xds.soap import (
    FileAttachment,
    SoapEndpoint,
    SoapFault,
    SoapRequest,
    SoapResponse,
    xop_include,
)

log = logging.getLogger("xds.repository")

PROVIDE_AND_REGISTER = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
PROVIDE_AND_REGISTER_RESPONSE = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
RETRIEVE = "urn:ihe:iti:2007:RetrieveDocumentSet"
RETRIEVE_RESPONSE = "urn:ihe:iti:2007:RetrieveDocumentSetResponse"
REGISTER = "urn:ihe:iti:2007:RegisterDocumentSet-b"

#: The largest SOAP envelope at /repository: metadata, and documents sent inline in base64.
MAX_ENVELOPE_SIZE = 64 * 1024 * 1024
#: The example repositoryUniqueId of the settings' default (see xds.config).
EXAMPLE_REPOSITORY_UNIQUE_ID = Settings.repository_unique_id

WSDL = Path(__file__).resolve().parent.parent.parent / "wsdl" / "XDS.b_DocumentRepository.wsdl"


@dataclass
class DocumentRepository:
    provide: ProvideAndRegister
    retrieve: RetrieveDocumentSet
    blobs: BlobStore
    registration: LocalRegistry | RemoteRegistry

    def recover(self) -> Recovery:
        """Finish what a crash left half done (see xds.repository.blobs)."""
        recovery = self.blobs.recover(self.registration.is_registered)
        if recovery.rolled_forward or recovery.rolled_back or recovery.spool_files_removed:
            log.warning("repository recovery: %d document(s) made final, %d dropped, %d left pending, "
                        "%d unfinished upload(s) removed", len(recovery.rolled_forward), len(recovery.rolled_back),
                        len(recovery.pending), recovery.spool_files_removed)
        return recovery


def build(settings: Settings, registry: DocumentRegistry | None = None, *,
          blobs: BlobStore | None = None, audit: AuditTrail = NO_AUDIT) -> DocumentRepository:
    """The repository of `settings`: documents under settings.documents_dir (unless `blobs`),
    registering with settings.registry_url, or with `registry` in-process when that is empty.
    Registrations with a remote registry are recorded in `audit` (the repository is the
    ITI-42 Document Source there; in-process, registry and repository are one node)."""
    # With this server's own registry, recovery asks its database: no commit marker needed.
    blobs = blobs or FileBlobStore(settings.documents_dir, mark_commits=bool(settings.registry_url))
    if settings.registry_url:
        registration: LocalRegistry | RemoteRegistry = RemoteRegistry.from_settings(settings)
    elif registry is not None:
        registration = LocalRegistry(registry)
    else:
        raise ValueError("the repository needs a registry: set registry_url, or run it beside this server's registry")
    if settings.repository_unique_id == EXAMPLE_REPOSITORY_UNIQUE_ID:
        log.warning("repository_unique_id is the example %s: set this repository's own OID",
                    EXAMPLE_REPOSITORY_UNIQUE_ID)
    register = registration.register
    if settings.registry_url and audit.enabled:
        register = _audited_registration(register, audit, settings.registry_url)
    return DocumentRepository(
        provide=ProvideAndRegister(settings.repository_unique_id, blobs, register),
        retrieve=RetrieveDocumentSet(settings.repository_unique_id, blobs),
        blobs=blobs,
        registration=registration,
    )


def _audited_registration(register, audit: AuditTrail, registry_url: str):
    """`register`, recording each ITI-42 this repository sends (ITI TF-2b 3.42.7.1.1)."""
    host = socket.gethostname()

    def audited(submit: etree._Element) -> list:
        errors = register(submit)
        try:
            ctx = events.TransactionContext(
                action=REGISTER, client_address=host, endpoint_url=registry_url,
                outcome=registry_response(errors).get("status"), process_id=str(os.getpid()),
                **actors.submission(submit))
            audit.record_transaction(events.iti42_repository, ctx)
        except Exception:
            log.exception("AUDIT RECORD LOST for the ITI-42 sent to %s", registry_url)
        return errors

    return audited


def actions(repository: DocumentRepository, audit: AuditTrail = NO_AUDIT, home_community_id: str = "") -> dict:
    def provide_and_register(request: SoapRequest) -> SoapResponse:
        try:
            errors = repository.provide.provide(request.body, request.attachment)
        except SoapFault:
            raise  # the message itself is broken (an xop:Include to a missing part): a Sender fault
        except Exception:
            log.exception("ITI-41 failed (MessageID %s)", request.message_id)
            errors = [error("repository.internal", reason=f"unexpected failure, logged with MessageID "
                                                          f"{request.message_id}")]
        body = registry_response(errors)
        if audit.enabled:
            actors.audit(audit, events.iti41_repository, request, body, **actors.submission(request.body))
        return SoapResponse(body=body, action=PROVIDE_AND_REGISTER_RESPONSE)

    def retrieve(request: SoapRequest) -> SoapResponse:
        result = repository.retrieve.retrieve(request.body)
        if audit.enabled:
            found = ((f.document.unique_id, f.document.patient_id) for f in result.found)
            for values in actors.retrievals(request.body, found, repository.retrieve.repository_unique_id,
                                            home_community_id):
                actors.audit(audit, events.iti43_repository, request, result.response, **values)
        return SoapResponse(
            body=result.response, action=RETRIEVE_RESPONSE, mtom=True,
            attachments=[(f.content_id, f.document.mime_type or "application/octet-stream", f.document)
                         for f in result.found])

    return {PROVIDE_AND_REGISTER: provide_and_register, RETRIEVE: retrieve}


def routes(repository: DocumentRepository, settings: Settings, audit: AuditTrail = NO_AUDIT,
           ) -> dict[str, SoapEndpoint]:
    """The repository's paths: /repository, and with settings.null_endpoint the floor that
    bench/repository.py measures it against, /null/repository."""
    found = {"/repository": endpoint(repository, settings, audit)}
    if settings.null_endpoint:
        found["/null/repository"] = floor_endpoint(repository, settings)
    return found


def floor_endpoint(repository: DocumentRepository, settings: Settings) -> SoapEndpoint:
    """The same SOAP layer and the same bytes without XDS processing: ITI-41 bodies are read,
    their parts spooled to disk (not hashed) and dropped, and a constant Success answered; an
    ITI-43 request is answered with the stored file of each DocumentUniqueId, streamed as the
    real endpoint does, without reading its metadata or checking the repository. A benchmark's
    floor (bench/repository.py), served only with null_endpoint on."""
    blobs = repository.blobs
    success = registry_response([])

    def provide_and_register(request: SoapRequest) -> SoapResponse:
        return SoapResponse(body=success, action=PROVIDE_AND_REGISTER_RESPONSE)

    def retrieve(request: SoapRequest) -> SoapResponse:
        xdsb = "{urn:ihe:iti:xds-b:2007}"
        response = etree.Element(f"{xdsb}RetrieveDocumentSetResponse")
        response.append(registry_response([]))
        attachments = []
        for index, item in enumerate(request.body.iter(f"{xdsb}DocumentRequest")):
            unique_id = item.findtext(f"{xdsb}DocumentUniqueId") or ""
            content_id = f"doc{index}@xds.local"
            document = etree.SubElement(response, f"{xdsb}DocumentResponse")
            etree.SubElement(document, f"{xdsb}RepositoryUniqueId").text = item.findtext(f"{xdsb}RepositoryUniqueId")
            etree.SubElement(document, f"{xdsb}DocumentUniqueId").text = unique_id
            etree.SubElement(document, f"{xdsb}mimeType").text = "application/octet-stream"
            etree.SubElement(document, f"{xdsb}Document").append(xop_include(content_id))
            attachments.append((content_id, "application/octet-stream",
                                FileAttachment(blobs.path_of(unique_id) / "content")))
        return SoapResponse(body=response, action=RETRIEVE_RESPONSE, mtom=True, attachments=attachments)

    spool = blobs.spool()
    spool.digest = False
    return SoapEndpoint({PROVIDE_AND_REGISTER: provide_and_register, RETRIEVE: retrieve},
                        max_request_size=settings.max_document_request_size, spool=spool,
                        max_envelope_size=MAX_ENVELOPE_SIZE, huge_tree=True)


def endpoint(repository: DocumentRepository, settings: Settings, audit: AuditTrail = NO_AUDIT,
             ) -> SoapEndpoint:
    """The SOAP endpoint of `repository` (streaming: see the module's docstring)."""
    return SoapEndpoint(
        actions(repository, audit, settings.home_community_id),
        wsdl=WSDL,
        max_request_size=settings.max_document_request_size,
        spool=repository.blobs.spool(),
        max_envelope_size=MAX_ENVELOPE_SIZE,
        huge_tree=True,
    )
