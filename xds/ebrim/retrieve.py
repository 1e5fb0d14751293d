"""The XML of Retrieve Document Set (ITI-43, ITI TF-2b 3.43.4): reading a
RetrieveDocumentSetRequest's DocumentRequests and writing the RetrieveDocumentSetResponse, one
DocumentResponse per document returned, each Document an xop:Include of the MTOM part the SOAP
layer streams from the document's file. Deciding what is returned is the repository's
(xds.repository.retrieve).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lxml import etree

from xds.ebrim import ns
from xds.ebrim.response import registry_error_list
from xds.soap.mtom import xop_include

if TYPE_CHECKING:
    from xds.result import Result

_XDSB = f"{{{ns.XDSB}}}"
RETRIEVE_REQUEST = f"{_XDSB}RetrieveDocumentSetRequest"
RETRIEVE_RESPONSE = f"{_XDSB}RetrieveDocumentSetResponse"
DOCUMENT_REQUEST = f"{_XDSB}DocumentRequest"


@dataclass(frozen=True)
class DocumentRequest:
    home_community_id: str | None
    repository_unique_id: str | None
    document_unique_id: str | None


@dataclass(frozen=True)
class RetrievedDocument:
    """A document of the answer: `document` is the stored Content (unique_id, mime_type,
    size, open()) sent as the MTOM part `content_id`."""

    request: DocumentRequest
    content_id: str
    document: Any


def document_requests(request: etree._Element) -> list[DocumentRequest] | None:
    """The DocumentRequests of a RetrieveDocumentSetRequest, in order (None when `request` is
    not one)."""
    if request.tag != RETRIEVE_REQUEST:
        return None
    return [document_request(item) for item in request.iterchildren(DOCUMENT_REQUEST)]


def document_request(item: etree._Element) -> DocumentRequest:
    """One xdsb:DocumentRequest (ITI-43's, and ITI-86's inside an rmd:RemoveDocumentsRequest)."""
    return DocumentRequest(_text(item, "HomeCommunityId"), _text(item, "RepositoryUniqueId"),
                           _text(item, "DocumentUniqueId"))


def _text(item: etree._Element, name: str) -> str | None:
    value = item.findtext(f"{_XDSB}{name}")
    return value.strip() if value is not None else None


def retrieve_document_set_response(result: "Result") -> tuple[etree._Element, list]:
    """The RetrieveDocumentSetResponse of an ITI-43 Result (status and errors in its
    RegistryResponse) and the MTOM attachments of the documents it returns."""
    response = etree.Element(RETRIEVE_RESPONSE, nsmap={"xdsb": ns.XDSB})
    registry_response = etree.SubElement(response, f"{{{ns.RS}}}RegistryResponse", nsmap={"rs": ns.RS})
    registry_response.set("status", result.status)
    if result.errors:
        registry_response.append(registry_error_list(result.errors))
    retrieved: list[RetrievedDocument] = result.content or []
    for item in retrieved:
        response.append(_document_response(item))
    return response, [(item.content_id, item.document.mime_type or "application/octet-stream", item.document)
                      for item in retrieved]


def _document_response(item: RetrievedDocument) -> etree._Element:
    response = etree.Element(f"{_XDSB}DocumentResponse")
    if item.request.home_community_id:
        etree.SubElement(response, f"{_XDSB}HomeCommunityId").text = item.request.home_community_id
    etree.SubElement(response, f"{_XDSB}RepositoryUniqueId").text = item.request.repository_unique_id
    etree.SubElement(response, f"{_XDSB}DocumentUniqueId").text = item.document.unique_id
    etree.SubElement(response, f"{_XDSB}mimeType").text = item.document.mime_type
    etree.SubElement(response, f"{_XDSB}Document").append(xop_include(item.content_id))
    return response
