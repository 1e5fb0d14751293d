"""The XML of the Remove Metadata and Documents (RMD) transactions: reading an ITI-62
lcm:RemoveObjectsRequest and an ITI-86 rmd:RemoveDocumentsRequest, and writing their
RegistryResponse. Deciding what is removed is the registry's (xds.registry.remove) and the
repository's (xds.repository.remove).

ITI-62 Delete Document Set (ITI TF-2b 3.62.4.1.2, RMD supplement): an lcm:RemoveObjectsRequest
whose rim:ObjectRefList names, by entryUUID, each DocumentEntry, SubmissionSet, Folder and
Association to remove. ebRS 3.0 also lets a RemoveObjectsRequest select objects with an
rim:AdhocQuery and choose a deletionScope; ITI-62 allows neither (the default scope, DeleteAll,
is the only one), so both are refused with an error that says so.

ITI-86 Remove Documents (RMD 3.86.4.1.2): an rmd:RemoveDocumentsRequest holding one or more
xdsb:DocumentRequest, each a RepositoryUniqueId and a DocumentUniqueId (a HomeCommunityId is
read and passed on, as in ITI-43). NIST's copy of rmd.xsd allows one DocumentRequest; IHE's
schema and the peers' WSDLs (RetrieveDocumentSetRequestType) allow several, and so do we.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lxml import etree

from xds.ebrim import ns
from xds.ebrim.response import registry_response
from xds.ebrim.retrieve import DOCUMENT_REQUEST, DocumentRequest, document_request
from xds.errors import XdsError
from xds.rules import error

if TYPE_CHECKING:
    from xds.result import Result

REMOVE_OBJECTS_REQUEST = f"{{{ns.LCM}}}RemoveObjectsRequest"
REMOVE_DOCUMENTS_REQUEST = f"{{{ns.RMD}}}RemoveDocumentsRequest"
#: ebRS 3.0's default deletionScope: the objects themselves (their repository items too).
DELETE_ALL = "urn:oasis:names:tc:ebxml-regrep:DeletionScopeType:DeleteAll"


@dataclass
class RemoveObjects:
    """What an ITI-62 request names: the entryUUIDs of its ObjectRefs in order, each once, and
    what is wrong with the request (nothing is removed when there is anything)."""

    ids: list[str] = field(default_factory=list)
    errors: list[XdsError] = field(default_factory=list)


def read_remove_objects(request: etree._Element, max_objects: int | None = None) -> RemoveObjects:
    """The ObjectRefs of an lcm:RemoveObjectsRequest; more than `max_objects` of them is an
    error, found before any is read into the answer."""
    read = RemoveObjects()
    if request.tag != REMOVE_OBJECTS_REQUEST:
        read.errors.append(error("remove.not-remove-objects", found=_name(request)))
        return read
    if request.find(ns.rim("AdhocQuery")) is not None:
        read.errors.append(error("remove.adhoc-query"))
    scope = request.get("deletionScope")
    if scope is not None and scope.strip() != DELETE_ALL:
        read.errors.append(error("remove.deletion-scope", value=scope))
    refs = request.findall(f"{ns.rim('ObjectRefList')}/{ns.rim('ObjectRef')}")
    if max_objects is not None and len(refs) > max_objects:
        read.errors.append(error("remove.too-many-objects", limit=max_objects))
        return read
    seen: set[str] = set()
    for ref in refs:
        object_id = (ref.get("id") or "").strip()
        if not object_id:
            read.errors.append(error("remove.object-ref-without-id"))
        elif object_id not in seen:  # named twice is removed once
            seen.add(object_id)
            read.ids.append(object_id)
    if not refs and not read.errors:
        read.errors.append(error("remove.no-objects"))
    return read


def remove_document_requests(request: etree._Element) -> list[DocumentRequest] | None:
    """The DocumentRequests of an rmd:RemoveDocumentsRequest, in order (None when `request`
    is not one)."""
    if request.tag != REMOVE_DOCUMENTS_REQUEST:
        return None
    return [document_request(item) for item in request.iterchildren(DOCUMENT_REQUEST)]


def registry_response_of(result: "Result") -> tuple[etree._Element, list]:
    """The RegistryResponse of an RMD Result: its status is the Result's, so a removal of
    several documents of which some were removed answers PartialSuccess (RMD 3.86.4.2.2)."""
    response = registry_response(result.errors)
    response.set("status", result.status)
    return response, []


def _name(element: etree._Element) -> str:
    qname = etree.QName(element)
    return f"{{{qname.namespace}}}{qname.localname}" if qname.namespace else qname.localname


def remove_documents_request(unique_ids, repository_unique_id: str, home_community_id: str | None = None
                             ) -> etree._Element:
    """An rmd:RemoveDocumentsRequest (for clients: the command line) naming documents of one
    repository."""
    request = etree.Element(REMOVE_DOCUMENTS_REQUEST, nsmap={"rmd": ns.RMD, "xdsb": ns.XDSB})
    for unique_id in unique_ids:
        item = etree.SubElement(request, DOCUMENT_REQUEST)
        if home_community_id:
            etree.SubElement(item, f"{{{ns.XDSB}}}HomeCommunityId").text = home_community_id
        etree.SubElement(item, f"{{{ns.XDSB}}}RepositoryUniqueId").text = repository_unique_id
        etree.SubElement(item, f"{{{ns.XDSB}}}DocumentUniqueId").text = unique_id
    return request
