"""The Document Repository's transactions, as the way in (xds.dispatch) calls them: the SOAP
request and the Caller in, a Result out (see xds.transactions for the table).

    ITI-41 Provide and Register Document Set-b   provide_and_register_document_set
    ITI-43 Retrieve Document Set                 retrieve_document_set
    ITI-86 Remove Documents                      remove_documents

Its endpoint streams: the endpoint's spool is the blob store's staging folder, so a document of
an MTOM request is written to disk (and hashed) while it arrives and staged by a rename; a
retrieved document is sent from its file in chunks. Requests up to `max_document_request_size`;
the SOAP envelope (which holds the metadata, and documents sent inline as base64) up to
MAX_ENVELOPE_SIZE, parsed without libxml2's 10 MB text limit so that inline documents up to
about 48 MB work (larger ones are refused with a fault that says to use MTOM).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from xds.audit.actors import audited_registration
from xds.audit.trail import NO_AUDIT, AuditTrail
from xds.config import Settings
from xds.consent.access import ConsentGate, consent_sessions
from xds.ebrim.submission import SubmissionLimits
from xds.repository.blobs import BlobStore, FileBlobStore, Recovery
from xds.repository.provide import ProvideAndRegister
from xds.repository.registration import LocalRegistry, Registry, RemoteRegistry
from xds.repository.remove import RemoveDocuments
from xds.repository.retrieve import RetrieveDocumentSet
from xds.result import Result
from xds.security import dsg
from xds.security.caller import Caller, on_behalf_of
from xds.soap import SoapRequest

log = logging.getLogger("xds.repository")

#: The largest SOAP envelope at /repository: metadata, and documents sent inline in base64.
MAX_ENVELOPE_SIZE = 64 * 1024 * 1024
#: The example repositoryUniqueId of the settings' default (see xds.config).
EXAMPLE_REPOSITORY_UNIQUE_ID = Settings.repository_unique_id


@dataclass
class DocumentRepository:
    provide: ProvideAndRegister
    retrieve: RetrieveDocumentSet
    blobs: BlobStore
    registration: LocalRegistry | RemoteRegistry
    #: ITI-86; by default this repository's, over the same blob store as retrieve.
    remove: RemoveDocuments | None = None

    def __post_init__(self) -> None:
        if self.remove is None:
            self.remove = RemoveDocuments(self.retrieve.repository_unique_id, self.blobs,
                                          self.retrieve.home_community_id)

    def recover(self) -> Recovery:
        """Finish what a crash left half done (see xds.repository.blobs)."""
        recovery = self.blobs.recover(self.registration.is_registered)
        if recovery.rolled_forward or recovery.rolled_back or recovery.spool_files_removed \
                or recovery.removals_finished:
            log.warning("repository recovery: %d document(s) made final, %d dropped, %d left pending, "
                        "%d unfinished upload(s) removed, %d removed document(s) deleted",
                        len(recovery.rolled_forward), len(recovery.rolled_back), len(recovery.pending),
                        recovery.spool_files_removed, recovery.removals_finished)
        return recovery

    def provide_and_register_document_set(self, request: SoapRequest, caller: Caller) -> Result:
        """ITI-41: the errors for the RegistryResponse, and the patient and submission set the
        request names. A SoapFault (an xop:Include to a part that is not there) goes to the
        client as it is. The registration is sent on the caller's behalf (with a remote registry,
        the caller's verified X-User Assertion goes with it: xds.repository.registration)."""
        with on_behalf_of(caller):
            return self.provide.provide_and_register(request.body, request.attachment)

    def retrieve_document_set(self, request: SoapRequest, caller: Caller) -> Result:
        """ITI-43."""
        return self.retrieve.retrieve(request.body, caller=caller)

    def remove_documents(self, request: SoapRequest, caller: Caller) -> Result:
        """ITI-86: the errors, and the documents removed with their patients."""
        return self.remove.remove(request.body)


def build(settings: Settings, registry: Registry | None = None, *,
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
        register = audited_registration(register, audit, settings.registry_url)
    return DocumentRepository(
        provide=ProvideAndRegister(settings.repository_unique_id, blobs, register,
                                   SubmissionLimits(settings.max_submission_objects, settings.max_submission_values),
                                   # DSG: signature documents checked against what they sign (dsg_policy)
                                   dsg.SubmissionSignatures.from_settings(
                                       settings, registered=dsg.registry_lookup(settings, registry),
                                       stored=dsg.stored_in(blobs))),
        retrieve=RetrieveDocumentSet(settings.repository_unique_id, blobs, settings.home_community_id,
                                     consent=(consent := ConsentGate.from_settings(settings)),
                                     sessions=consent_sessions(settings, registry) if consent else None),
        blobs=blobs,
        registration=registration,
    )
