"""Retrieve Document Set (ITI-43) at the Document Repository (ITI TF-2b 3.43).

What belongs here: deciding per DocumentRequest (this repository? a document it holds?).
What does not: the XML (xds.ebrim.retrieve reads the request and writes the response), SOAP and
MTOM (each document goes in the response as an attachment that the SOAP layer streams from its
file).

Status (ITI TF-2b 3.43.4.2.3): Success when every document was found, PartialSuccess when
some were, Failure when none was; each one not returned has a RegistryError: XDSUnknownRepositoryId
when the request names another repository, XDSDocumentUniqueIdError when this repository does
not hold it. A HomeCommunityId in a request is passed through into its DocumentResponse.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lxml import etree

from xds.ebrim.retrieve import RETRIEVE_REQUEST, RetrievedDocument, document_requests
from xds.errors import XdsError
from xds.repository.blobs import BlobStore
from xds.result import DocumentTouched, Result
from xds.rules import error

log = logging.getLogger("xds.repository")


@dataclass
class RetrieveDocumentSet:
    repository_unique_id: str
    blobs: BlobStore
    #: This node's homeCommunityId, named in the audit record of a request that names none.
    home_community_id: str = ""

    def retrieve(self, request: etree._Element, content_id_of=lambda index, uid: f"doc{index}@xds.local"
                 ) -> Result:
        """The answer to one RetrieveDocumentSetRequest: its Result's content is the
        RetrievedDocuments, its documents those returned with their patients;
        content_id_of(index, uniqueId) names the MTOM part of each document found."""
        requests = document_requests(request)
        if not requests:
            found = etree.QName(request).localname if request.tag != RETRIEVE_REQUEST else \
                "a RetrieveDocumentSetRequest without DocumentRequest"
            return Result([error("retrieve.not-retrieve-request", found=found)], content=[])
        retrieved: list[RetrievedDocument] = []
        errors: list[XdsError] = []
        for index, item in enumerate(requests):
            unique_id = item.document_unique_id
            if item.repository_unique_id != self.repository_unique_id:
                errors.append(error("retrieve.unknown-repository", unique_id, value=item.repository_unique_id,
                                    expected=self.repository_unique_id, document=unique_id))
                continue
            try:
                document = self.blobs.get(unique_id)
            except OSError as exc:
                log.exception("reading document %s failed", unique_id)
                errors.append(error("retrieve.internal", unique_id, document=unique_id, reason=exc.strerror or str(exc)))
                continue
            if document is None:
                errors.append(error("retrieve.unknown-document", unique_id, value=unique_id,
                                    repository=self.repository_unique_id))
                continue
            retrieved.append(RetrievedDocument(item, content_id_of(index, unique_id), document))
        touched = [DocumentTouched(r.document.unique_id, r.document.patient_id, self.repository_unique_id,
                                   r.request.home_community_id or self.home_community_id) for r in retrieved]
        return Result(errors, partial=bool(retrieved), documents=touched, content=retrieved)
