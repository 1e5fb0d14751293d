"""Retrieve Document Set (ITI-43) at the Document Repository (ITI TF-2b 3.43).

What belongs here: reading a RetrieveDocumentSetRequest, deciding per DocumentRequest
(this repository? a document it holds?), and writing the RetrieveDocumentSetResponse with one
DocumentResponse per document found. What does not: SOAP and MTOM (the service puts each
document in the response as an attachment that the SOAP layer streams from its file).

Status (ITI TF-2b 3.43.4.2.3): Success when every document was found, PartialSuccess when
some were, Failure when none was; each one not returned has a RegistryError: XDSUnknownRepositoryId
when the request names another repository, XDSDocumentUniqueIdError when this repository does
not hold it. A HomeCommunityId in a request is passed through into its DocumentResponse.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from lxml import etree

from xds.ebrim import ns
from xds.ebrim.response import registry_error_list
from xds.errors import XdsError
from xds.repository.blobs import BlobStore, StoredDocument
from xds.rules import error
from xds.soap.mtom import xop_include

log = logging.getLogger("xds.repository")

_XDSB = f"{{{ns.XDSB}}}"
RETRIEVE_REQUEST = f"{_XDSB}RetrieveDocumentSetRequest"
RETRIEVE_RESPONSE = f"{_XDSB}RetrieveDocumentSetResponse"


@dataclass
class Found:
    """A document of the answer: its DocumentResponse element refers to content_id."""

    content_id: str
    document: StoredDocument


@dataclass
class RetrieveResult:
    response: etree._Element
    found: list[Found] = field(default_factory=list)
    errors: list[XdsError] = field(default_factory=list)


@dataclass
class RetrieveDocumentSet:
    repository_unique_id: str
    blobs: BlobStore

    def retrieve(self, request: etree._Element, content_id_of=lambda index, uid: f"doc{index}@xds.local"
                 ) -> RetrieveResult:
        """The answer to one RetrieveDocumentSetRequest; content_id_of(index, uniqueId) names
        the MTOM part of each document found."""
        requests = request.findall(f"{_XDSB}DocumentRequest") if request.tag == RETRIEVE_REQUEST else []
        if not requests:
            found = etree.QName(request).localname if request.tag != RETRIEVE_REQUEST else \
                "a RetrieveDocumentSetRequest without DocumentRequest"
            return self._answer([], [error("retrieve.not-retrieve-request", found=found)], [])
        answers: list[tuple[etree._Element, Found]] = []
        errors: list[XdsError] = []
        for index, item in enumerate(requests):
            home = _text(item, "HomeCommunityId")
            repository = _text(item, "RepositoryUniqueId")
            unique_id = _text(item, "DocumentUniqueId")
            if repository != self.repository_unique_id:
                errors.append(error("retrieve.unknown-repository", unique_id, value=repository,
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
            found = Found(content_id_of(index, unique_id), document)
            answers.append((_document_response(home, repository, document, found.content_id), found))
        return self._answer(answers, errors, requests)

    def _answer(self, answers, errors: list[XdsError], requests) -> RetrieveResult:
        response = etree.Element(RETRIEVE_RESPONSE, nsmap={"xdsb": ns.XDSB})
        registry_response = etree.SubElement(response, f"{{{ns.RS}}}RegistryResponse", nsmap={"rs": ns.RS})
        if not errors:
            status = ns.SUCCESS
        elif answers:
            status = ns.PARTIAL_SUCCESS
        else:
            status = ns.FAILURE
        registry_response.set("status", status)
        if errors:
            registry_response.append(registry_error_list(errors))
        for element, _ in answers:
            response.append(element)
        return RetrieveResult(response, [found for _, found in answers], errors)


def _text(item: etree._Element, name: str) -> str | None:
    value = item.findtext(f"{_XDSB}{name}")
    return value.strip() if value is not None else None


def _document_response(home: str | None, repository: str, document: StoredDocument,
                       content_id: str) -> etree._Element:
    response = etree.Element(f"{_XDSB}DocumentResponse")
    if home:
        etree.SubElement(response, f"{_XDSB}HomeCommunityId").text = home
    etree.SubElement(response, f"{_XDSB}RepositoryUniqueId").text = repository
    etree.SubElement(response, f"{_XDSB}DocumentUniqueId").text = document.unique_id
    etree.SubElement(response, f"{_XDSB}mimeType").text = document.mime_type
    etree.SubElement(response, f"{_XDSB}Document").append(xop_include(content_id))
    return response
