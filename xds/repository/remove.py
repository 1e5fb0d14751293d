"""Remove Documents (ITI-86) at the Document Repository: the Remove Documents half of the
Remove Metadata and Documents (RMD) profile (RMD supplement, ITI TF-2b 3.86).

What belongs here: deciding per DocumentRequest (this repository? a document it holds?) and
asking the blob store to remove it. What does not: the XML (xds.ebrim.remove), how a removal
is made durable and how a crash is recovered from (xds.repository.blobs, `remove()`), the
registry's metadata (the Document Administrator removes it with ITI-62; RMD leaves the order to
it, and the repository does not look: removing a document whose DocumentEntry is still
registered is allowed, and `xds documents verify` then reports the entry's file missing).

Status (RMD 3.86.4.2.2, as ITI-43 has it): Success when every document named was removed,
PartialSuccess when some were, Failure when none was. Each one not removed has a RegistryError
located at its uniqueId: XDSUnknownRepositoryId when the request names another repository,
XDSDocumentUniqueIdError when this repository does not hold it (or no longer does: a second
removal of one document finds nothing), XDSRepositoryError when the file system refused. A
document named twice in one request is removed once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lxml import etree

from xds.ebrim.remove import REMOVE_DOCUMENTS_REQUEST, remove_document_requests
from xds.errors import XdsError
from xds.repository.blobs import BlobStore
from xds.result import DocumentTouched, Result
from xds.rules import error

log = logging.getLogger("xds.repository")


@dataclass
class RemoveDocuments:
    repository_unique_id: str
    blobs: BlobStore
    #: This node's homeCommunityId, named in the audit record of a request that names none.
    home_community_id: str = ""

    def remove(self, request: etree._Element) -> Result:
        """The answer to one RemoveDocumentsRequest: its errors, and the documents removed
        with their patients (for the audit record)."""
        requests = remove_document_requests(request)
        if not requests:
            found = etree.QName(request).localname if request.tag != REMOVE_DOCUMENTS_REQUEST else \
                "a RemoveDocumentsRequest without DocumentRequest"
            return Result([error("remove-documents.not-remove-documents", found=found)])
        errors: list[XdsError] = []
        removed: list[DocumentTouched] = []
        seen: set[str] = set()
        for number, item in enumerate(requests, 1):
            unique_id = item.document_unique_id
            missing = [name for name, value in (("RepositoryUniqueId", item.repository_unique_id),
                                                ("DocumentUniqueId", unique_id)) if not value]
            if missing:
                errors.append(error("remove-documents.incomplete-request", unique_id or "", number=number,
                                    missing=" and ".join(missing)))
                continue
            if unique_id in seen:
                continue
            seen.add(unique_id)
            if item.repository_unique_id != self.repository_unique_id:
                errors.append(error("remove-documents.unknown-repository", unique_id, value=item.repository_unique_id,
                                    expected=self.repository_unique_id, document=unique_id))
                continue
            try:
                document = self.blobs.remove(unique_id)
            except OSError as exc:
                log.exception("removing document %s failed", unique_id)
                errors.append(error("remove-documents.not-removed", unique_id, document=unique_id,
                                    reason=exc.strerror or str(exc)))
                continue
            if document is None:
                errors.append(error("remove-documents.unknown-document", unique_id, value=unique_id,
                                    repository=self.repository_unique_id))
                continue
            log.info("document %s removed (ITI-86)", unique_id)
            removed.append(DocumentTouched(unique_id, document.patient_id, self.repository_unique_id,
                                           item.home_community_id or self.home_community_id))
        return Result(errors, partial=bool(removed), documents=removed)
