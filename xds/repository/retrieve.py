"""Retrieve Document Set (ITI-43) at the Document Repository (ITI TF-2b 3.43).

What belongs here: deciding per DocumentRequest (this repository? a document it holds?).
What does not: the XML (xds.ebrim.retrieve reads the request and writes the response), SOAP and
MTOM (each document goes in the response as an attachment that the SOAP layer streams from its
file).

Status (ITI TF-2b 3.43.4.2.3): Success when every document was found, PartialSuccess when
some were, Failure when none was; each one not returned has a RegistryError: XDSUnknownRepositoryId
when the request names another repository, XDSDocumentUniqueIdError when this repository does
not hold it. A HomeCommunityId in a request is passed through into its DocumentResponse.

Access control (xds.consent, access_control = consent): a document of a patient the caller's
facility may not see is answered XDSDocumentUniqueIdError, with the very codeContext and
location a document the repository does not hold gets, in the same place of the error list:
the patients of the documents found are decided together (by their persons, in a read of the
database made for this request), then every DocumentRequest is answered in order. A document
whose patient the repository does not know (stored before patient ids were kept) is no
patient's the caller can be shown: it is answered the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lxml import etree
from sqlalchemy.orm import Session, sessionmaker

from xds.consent.access import ConsentGate, PatientAccess
from xds.ebrim.retrieve import RETRIEVE_REQUEST, RetrievedDocument, document_requests
from xds.errors import XdsError
from xds.repository.blobs import BlobStore
from xds.result import DocumentTouched, Result
from xds.rules import error
from xds.security.caller import Caller

log = logging.getLogger("xds.repository")


@dataclass
class RetrieveDocumentSet:
    repository_unique_id: str
    blobs: BlobStore
    #: This node's homeCommunityId, named in the audit record of a request that names none.
    home_community_id: str = ""
    #: Access control (xds.consent) and the database its consent records are read from; None:
    #: every document is retrieved.
    consent: ConsentGate | None = None
    sessions: sessionmaker[Session] | None = None

    def retrieve(self, request: etree._Element, content_id_of=lambda index, uid: f"doc{index}@xds.local",
                 caller: Caller | None = None) -> Result:
        """The answer to one RetrieveDocumentSetRequest from `caller` (None: this server's own
        command line, which may read every document): its Result's content is the
        RetrievedDocuments, its documents those returned with their patients;
        content_id_of(index, uniqueId) names the MTOM part of each document found."""
        access = self.consent.access(caller) if self.consent is not None and self.sessions is not None else None
        requests = document_requests(request)
        if not requests:
            found = etree.QName(request).localname if request.tag != RETRIEVE_REQUEST else \
                "a RetrieveDocumentSetRequest without DocumentRequest"
            return Result([error("retrieve.not-retrieve-request", found=found)], content=[])
        # Each document this repository holds, or the error of the request for it, in order.
        answers: list[object] = []
        for item in requests:
            unique_id = item.document_unique_id
            if item.repository_unique_id != self.repository_unique_id:
                answers.append(error("retrieve.unknown-repository", unique_id, value=item.repository_unique_id,
                                     expected=self.repository_unique_id, document=unique_id))
                continue
            try:
                answers.append(self.blobs.get(unique_id))
            except OSError as exc:
                log.exception("reading document %s failed", unique_id)
                answers.append(error("retrieve.internal", unique_id, document=unique_id,
                                     reason=exc.strerror or str(exc)))
        if access is not None:
            self._withhold(answers, access)
        retrieved: list[RetrievedDocument] = []
        errors: list[XdsError] = []
        for index, (item, answer) in enumerate(zip(requests, answers)):
            unique_id = item.document_unique_id
            if isinstance(answer, XdsError):
                errors.append(answer)
            elif answer is None:
                errors.append(error("retrieve.unknown-document", unique_id, value=unique_id,
                                    repository=self.repository_unique_id))
            else:
                retrieved.append(RetrievedDocument(item, content_id_of(index, unique_id), answer))
        touched = [DocumentTouched(r.document.unique_id, r.document.patient_id, self.repository_unique_id,
                                   r.request.home_community_id or self.home_community_id) for r in retrieved]
        return Result(errors, partial=bool(retrieved), documents=touched, content=retrieved, consent=access)

    def _withhold(self, answers: list, access: PatientAccess) -> None:
        """Replace by None (not held) each document of `answers` whose patient `access` may not
        see, noting it in access.withheld for the audit trail."""
        patients = {a.patient_id for a in answers if _is_document(a) and a.patient_id}
        allowed: set[str] = set()
        if patients:
            with self.sessions() as session:
                allowed = access.visible(session, patients)
        for index, answer in enumerate(answers):
            if _is_document(answer) and answer.patient_id not in allowed:
                if not answer.patient_id:
                    access.denied.setdefault("", "the document's patient is not known to the repository")
                access.withheld.setdefault(answer.patient_id, []).append(answer.unique_id)
                answers[index] = None


def _is_document(answer: object) -> bool:
    return answer is not None and not isinstance(answer, XdsError)
