"""Stored query requests for tests, and their answers read back (tests/test_query_*.py).

    ask(stored, "FindDocuments", ("$XDSDocumentEntryPatientId", quote(PATIENT)), APPROVED_DOCUMENTS)

Each slot is (name, value) with the value written as the standard writes it; a name given
twice makes two slots."""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from tests import submissions as s
from xds.ebrim import ns
from xds.ebrim.query_request import adhoc_query_request, quote, quote_list
from xds.ebrim.query_response import read_query_response
from xds.errors import XdsError
from xds.registry import stored_query
from xds.registry.register import DocumentRegistry
from xds.store import registry as store

APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
ON_DEMAND = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
APND = "urn:ihe:iti:2007:AssociationType:APND"

APPROVED_DOCUMENTS = ("$XDSDocumentEntryStatus", quote_list([APPROVED]))

__all__ = ["quote", "quote_list"]


def query_id(name: str) -> str:
    return stored_query.BY_NAME[name].id


@dataclass
class Answer:
    element: etree._Element
    status: str  # Success, Failure
    errors: list[XdsError]
    #: ids of the objects (or ObjectRefs) by kind: DocumentEntry, SubmissionSet, Folder,
    #: Association, ObjectRef.
    by_kind: dict[str, list[str]]

    @property
    def ids(self) -> list[str]:
        return [i for ids in self.by_kind.values() for i in ids]

    @property
    def codes(self) -> list[str]:
        return [e.code for e in self.errors]

    def kind(self, name: str) -> set[str]:
        return set(self.by_kind.get(name, []))

    def counts(self) -> dict[str, int]:
        return {kind: len(ids) for kind, ids in self.by_kind.items()}

    def element_of(self, entry_uuid: str) -> etree._Element:
        for element in self.element.find(ns.rim("RegistryObjectList")):
            if element.get("id") == entry_uuid:
                return element
        raise KeyError(entry_uuid)


def read(response: etree._Element) -> Answer:
    status, errors, objects = read_query_response(response)
    by_kind: dict[str, list[str]] = {}
    for o in objects:
        by_kind.setdefault(o.kind, []).append(o.id)
    return Answer(response, status.rsplit(":", 1)[-1], errors, by_kind)


def request(name_or_id: str, *slots: tuple[str, str], return_type: str = "ObjectRef") -> etree._Element:
    known = stored_query.lookup(name_or_id)
    return adhoc_query_request(known.id if known else name_or_id, [(n, [v]) for n, v in slots], return_type)


def ask(stored, name_or_id: str, *slots: tuple[str, str], return_type: str = "ObjectRef") -> Answer:
    """Run a stored query on a RegistryStoredQuery and read its answer."""
    return read(stored.query(request(name_or_id, *slots, return_type=return_type)))


def find_documents(stored, *slots: tuple[str, str], patient: str = s.PATIENT, status=APPROVED_DOCUMENTS,
                   return_type: str = "ObjectRef") -> Answer:
    """FindDocuments for `patient` (Approved unless `status` says otherwise) with more slots."""
    head = [("$XDSDocumentEntryPatientId", quote(patient))] + ([status] if status else [])
    return ask(stored, "FindDocuments", *head, *slots, return_type=return_type)


# --- registering test data through the real ITI-42 step -------------------------------------------


@dataclass
class Registered:
    """The ids of one registered submission: symbolic id -> entryUUID, symbolic id -> uniqueId."""

    uuids: dict[str, str]
    unique_ids: dict[str, str]

    def __getitem__(self, symbolic_id: str) -> str:
        return self.uuids[symbolic_id]


def register(registry: DocumentRegistry, *objects: str, ss_uid: str | None = None,
             patient: str = s.PATIENT, submission_set: dict | None = None) -> Registered:
    """Register a SubmissionSet "ss" holding `objects` (s.document(...), s.folder(...),
    associations); each DocumentEntry and Folder gets a HasMember from the SubmissionSet
    unless the objects already carry one ("ss-<id>")."""
    ss_uid = ss_uid or s.new_oid()
    members = []
    root = etree.fromstring(s.request(*objects).encode())
    unique_ids = {"ss": ss_uid}
    for element in root.iter(ns.rim("ExtrinsicObject"), ns.rim("RegistryPackage")):
        oid = element.get("id")
        for identifier in element.iter(ns.rim("ExternalIdentifier")):
            if identifier.get("identificationScheme") in (ns.DE_UNIQUE_ID, ns.FOL_UNIQUE_ID):
                unique_ids[oid] = identifier.get("value")
        explicit = f'id="ss-{oid}"'
        if not any(explicit in o for o in objects):
            status = "Original" if element.tag == ns.rim("ExtrinsicObject") else None
            members.append(s.association(f"ss-{oid}", "HasMember", "ss", oid, status))
    xml = s.request(s.submission_set("ss", ss_uid, patient, **(submission_set or {})), *objects, *members)
    problems = [p for p in registry.register(s.element(xml)) if p.is_error]
    assert problems == [], problems
    with registry.sessions() as session:
        uuids = {}
        listed = list(unique_ids.values())
        documents, registered = store.registered_unique_ids(session, [u for k, u in unique_ids.items() if k != "ss"],
                                                            listed, listed)
        for symbolic, unique_id in unique_ids.items():
            if unique_id in documents:
                uuids[symbolic] = documents[unique_id][-1].entry_uuid
        for found in registered.values():
            for symbolic, unique_id in unique_ids.items():
                if unique_id in found:
                    uuids[symbolic] = found[unique_id]
    return Registered(uuids, unique_ids)
