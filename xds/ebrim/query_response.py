"""query:AdhocQueryResponse, the answer of Registry Stored Query (ITI-18): writing it (the
registry) and reading it (the command line, tests).

Writing. ebRS 3.0 (query.xsd): an AdhocQueryResponse is a RegistryResponse (status, optional
rs:RegistryErrorList) followed by a rim:RegistryObjectList, which is always present, empty when
the query failed (ITI TF-2 3.18.4.1.3: no objects with an error).

- ObjectRef: one rim:ObjectRef id="..." per object.
- LeafClass: the objects as the registry stored them (their ebRIM XML, kept by the register
  step), with what has changed since: the availabilityStatus (a replaced document is
  Deprecated) and a Folder's lastUpdateTime slot. The stored XML strings are joined into one
  document and parsed once; only the attributes and slots that differ are then touched.

With a configured home community id every object carries it as its `home` attribute (ebRIM
3.0 IdentifiableType/@home; ITI TF-2 3.18.4.1.2.3.8).

Reading: `read_query_response` gives the status, the errors and one `ObjectSummary` per object,
with the values a person wants in a table (patient, uniqueId, class, type, creation time,
status, title).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lxml import etree

from xds.ebrim import ns
from xds.ebrim.response import read_registry_response, registry_error_list
from xds.ebrim.slots import SLOT, VALUE, VALUE_LIST, localized_string, slot_values
from xds.errors import ERROR, XdsError

if TYPE_CHECKING:
    from xds.result import Result

ADHOC_QUERY_RESPONSE = f"{{{ns.QUERY}}}AdhocQueryResponse"
REGISTRY_OBJECT_LIST = ns.rim("RegistryObjectList")
OBJECT_REF = ns.rim("ObjectRef")

# The stored XML was parsed by the hardened parser of the register step and written by lxml:
# no DTD, no text node past libxml2's default limits. The same limits apply here.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
_OPEN = (
    f'<query:AdhocQueryResponse xmlns:query="{ns.QUERY}" xmlns:rim="{ns.RIM}" xmlns:rs="{ns.RS}" '
    f'status="{ns.SUCCESS}"><rim:RegistryObjectList>'
)
_CLOSE = "</rim:RegistryObjectList></query:AdhocQueryResponse>"


@dataclass(frozen=True)
class StoredObject:
    """One object of a LeafClass answer: its stored XML and the current values to patch in."""

    xml: str
    status: str | None = None
    last_update_time: str | None = None  # a Folder's


def leaf_class_xml(objects: Iterable[StoredObject], home: str | None = None) -> bytes:
    """A successful LeafClass answer holding `objects`, in order, written from the stored XML
    strings as they are.

    Only an object whose current values differ from its stored XML (a replaced document now
    Deprecated, a folder whose lastUpdateTime moved on, a home community id to add) is parsed
    and patched: on the hot path - one patient's current documents - nothing is parsed at all
    (measured: about half of a FindDocuments answer's server time went to parsing and
    serializing its ten stored entries)."""
    parts = [_OPEN]
    for stored in objects:
        parts.append(stored.xml if _is_current(stored, home) else _patched(stored, home))
    parts.append(_CLOSE)
    return "".join(parts).encode("utf-8")


def _is_current(stored: StoredObject, home: str | None) -> bool:
    start_tag = stored.xml[: stored.xml.find(">") + 1]
    if home or (stored.status and f'status="{stored.status}"' not in start_tag):
        return False
    # The registry writes lastUpdateTime into a folder's stored XML when it creates the folder;
    # a later change lives only in the column.
    return not stored.last_update_time or f">{stored.last_update_time}<" in stored.xml


def _patched(stored: StoredObject, home: str | None) -> str:
    element = etree.fromstring(stored.xml, _PARSER)
    if stored.status and element.get("status") != stored.status:
        element.set("status", stored.status)
    if stored.last_update_time:
        _patch_slot(element, "lastUpdateTime", stored.last_update_time)
    if home:
        element.set("home", home)
    return etree.tostring(element, encoding="unicode")


@dataclass(frozen=True)
class QueryAnswer:
    """What a successful stored query found, for its response writer: the objects of a
    LeafClass answer, or the entryUUIDs of an ObjectRef one."""

    leaf_class: bool
    objects: list[StoredObject] | list[str]
    home: str | None = None


def adhoc_query_response(result: "Result") -> tuple[etree._Element | bytes, list]:
    """The AdhocQueryResponse of a stored query's Result (xds.transactions): its errors, else
    its QueryAnswer (a LeafClass answer serialized already, written from the stored XML)."""
    if result.errors or result.content is None:
        return error_response(result.errors), []
    answer: QueryAnswer = result.content
    if answer.leaf_class:
        return leaf_class_xml(answer.objects, answer.home), []
    return object_ref_response(answer.objects, answer.home), []


def object_ref_response(ids: Iterable[str], home: str | None = None) -> etree._Element:
    """A successful ObjectRef answer: one rim:ObjectRef per id, in order."""
    root = _response(ns.SUCCESS)
    object_list = root[0]
    for entry_uuid in ids:
        ref = etree.SubElement(object_list, OBJECT_REF, id=entry_uuid)
        if home:
            ref.set("home", home)
    return root


def error_response(errors: list[XdsError]) -> etree._Element:
    """A failed answer: Failure if any error has severity Error, with every error listed and
    no objects."""
    failed = any(e.severity == ERROR for e in errors)
    root = _response(ns.FAILURE if failed else ns.SUCCESS)
    if errors:
        root.insert(0, registry_error_list(errors))
    return root


def _response(status: str) -> etree._Element:
    root = etree.Element(ADHOC_QUERY_RESPONSE, nsmap={"query": ns.QUERY, "rim": ns.RIM, "rs": ns.RS})
    root.set("status", status)
    etree.SubElement(root, REGISTRY_OBJECT_LIST)
    return root


def _patch_slot(element: etree._Element, name: str, value: str) -> None:
    """Give the single-valued slot `name` the value `value` (the slot is added if missing)."""
    for slot in element.iterchildren(SLOT):
        if slot.get("name") == name:
            values = list(slot.iter(VALUE))
            if len(values) == 1 and values[0].text == value:
                return
            for value_list in slot.findall(VALUE_LIST):
                slot.remove(value_list)
            break
    else:
        slot = etree.Element(SLOT, name=name)
        position = sum(1 for child in element if child.tag == SLOT)
        element.insert(position, slot)
    etree.SubElement(etree.SubElement(slot, VALUE_LIST), VALUE).text = value


# --- reading -------------------------------------------------------------------------------------

_KINDS = {
    ns.rim("ExtrinsicObject"): "DocumentEntry",
    ns.rim("Association"): "Association",
    OBJECT_REF: "ObjectRef",
}


@dataclass(frozen=True)
class ObjectSummary:
    """What a table row shows of one object of an answer."""

    kind: str  # DocumentEntry, SubmissionSet, Folder, Association, ObjectRef
    id: str
    patient_id: str = ""
    unique_id: str = ""
    class_code: str = ""
    type_code: str = ""
    creation_time: str = ""
    status: str = ""
    title: str = ""


def read_query_response(response: etree._Element) -> tuple[str, list[XdsError], list[ObjectSummary]]:
    """The status, the errors and the objects of an AdhocQueryResponse."""
    status, errors = read_registry_response(response)
    object_list = response.find(REGISTRY_OBJECT_LIST)
    objects = [summary(element) for element in (object_list if object_list is not None else ())
               if isinstance(element.tag, str)]
    return status, errors, objects


def summary(element: etree._Element) -> ObjectSummary:
    """The table values of one ebRIM object (an unknown element gives its tag as kind)."""
    kind = _KINDS.get(element.tag) or _package_kind(element) or etree.QName(element).localname
    schemes = {ns.DE_PATIENT_ID, ns.SS_PATIENT_ID, ns.FOL_PATIENT_ID}
    unique_schemes = {ns.DE_UNIQUE_ID, ns.SS_UNIQUE_ID, ns.FOL_UNIQUE_ID}
    patient = unique = class_code = type_code = creation = ""
    for child in element:
        tag = child.tag
        if tag == ns.rim("ExternalIdentifier"):
            scheme = child.get("identificationScheme")
            if scheme in schemes:
                patient = child.get("value", "")
            elif scheme in unique_schemes:
                unique = child.get("value", "")
        elif tag == ns.rim("Classification"):
            scheme = child.get("classificationScheme")
            if scheme == ns.DE_CLASS_CODE:
                class_code = _code_text(child)
            elif scheme in (ns.DE_TYPE_CODE, ns.SS_CONTENT_TYPE_CODE):
                type_code = _code_text(child)
        elif tag == SLOT and child.get("name") in ("creationTime", "submissionTime", "lastUpdateTime"):
            creation = next(iter(slot_values(child)), "")
    title = localized_string(element.find(ns.rim("Name"))) or ""
    if kind == "Association":
        title = f"{_short(element.get('associationType', ''))} {element.get('sourceObject', '')} -> {element.get('targetObject', '')}"
    return ObjectSummary(kind, element.get("id", ""), patient, unique, class_code, type_code, creation,
                         _short(element.get("status", "")), title)


def _package_kind(element: etree._Element) -> str | None:
    if element.tag != ns.rim("RegistryPackage"):
        return None
    nodes = {c.get("classificationNode") for c in element.iterchildren(ns.rim("Classification"))}
    if ns.FOLDER_NODE in nodes:
        return "Folder"
    if ns.SUBMISSION_SET_NODE in nodes:
        return "SubmissionSet"
    # The classification may stand beside the package; a package with a lastUpdateTime is a Folder.
    slots = {s.get("name") for s in element.iterchildren(SLOT)}
    return "Folder" if "lastUpdateTime" in slots else "SubmissionSet"


def _code_text(classification: etree._Element) -> str:
    code = classification.get("nodeRepresentation", "")
    display = localized_string(classification.find(ns.rim("Name")))
    return f"{code} ({display})" if display else code


def _short(urn: str) -> str:
    return urn.rsplit(":", 1)[-1]
