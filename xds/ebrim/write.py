"""Write the model as ebRIM 3.0: an lcm:SubmitObjectsRequest (ITI TF-3 4.2.3 and 4.2.5), the
inverse of `xds.ebrim.submission.read_submission`, and the ITI-41
ProvideAndRegisterDocumentSetRequest around it.

What belongs here: laying model objects out as ebRIM elements. Which XML attribute, slot,
classification or external identifier carries which attribute is not decided here: the writer
walks the same tables the reader does (`xds.ebrim.submission.ObjectLayout`: DOCUMENT_ENTRY,
SUBMISSION_SET, FOLDER, ASSOCIATION_LAYOUT, AUTHOR_SLOTS), so `read_submission(
write_submission(s))` gives back `s`, and a table entry added for reading is written too.

What does not: judging values. Everything is written as the model holds it (a bad value is then
the validator's to report, as when a sender writes it); None and empty lists are left out.

Layout of each object, in the order of ebRIM 3.0 rim.xsd (RegistryObjectType):

    XML attributes    id, then the layout's (lid, objectType, status, home, mimeType;
                      associationType, sourceObject, targetObject)
    rim:Slot          the layout's slots in table order, then extra_slots (ITI TF-3 4.1.14)
    rim:Name          title; rim:Description: comments; rim:VersionInfo: version
    rim:Classification  authors (one per author, empty nodeRepresentation, ITI TF-3 4.2.3),
                      then the coded attributes (nodeRepresentation, codingScheme slot, Name),
                      then the classificationNode that makes a RegistryPackage a
                      SubmissionSet or a Folder - inside the package, where the registry
                      stores it, not at the top level of the RegistryObjectList
    rim:ExternalIdentifier  uniqueId, patientId, sourceId, each with its ITI TF-3 Name
                      (XDSDocumentEntry.uniqueId, ...)

The RegistryObjectList holds the objects in the order of `Submission.objects()`: the
SubmissionSet, the DocumentEntries, the Folders, the Associations.

Nested parts need ids of their own (ebRIM: id is required), which the model does not keep:
`part_id` makes them from their object's id and the attribute's name ("Document01-classCode",
"Document01-author-2"); for an object whose id is a urn:uuid, a UUID derived from both
(uuid5), so that the output is the same on every call and every id that says urn:uuid is
one. The registry gives the symbolic ones UUIDs of its own (`assign_uuids`).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable, Mapping

from lxml import etree

from xds.ebrim import ns
from xds.ebrim.slots import (
    CLASSIFICATION,
    DESCRIPTION,
    EXTERNAL_IDENTIFIER,
    LOCALIZED_STRING,
    NAME,
    VERSION_INFO,
    set_slot,
)
from xds.ebrim.submission import (
    ASSOCIATION_LAYOUT,
    AUTHOR_SLOTS,
    CODING_SCHEME,
    DOCUMENT_ENTRY,
    FOLDER,
    REGISTRY_OBJECT_LIST,
    SUBMISSION_SET,
    SUBMIT_OBJECTS_REQUEST,
    ObjectLayout,
    RegistryObject,
)
from xds.model.metadata import Association, Author, Code, DocumentEntry, Folder, Submission, SubmissionSet

PROVIDE_AND_REGISTER_REQUEST = f"{{{ns.XDSB}}}ProvideAndRegisterDocumentSetRequest"
DOCUMENT = f"{{{ns.XDSB}}}Document"

#: model class -> its layout (the reader's tables)
LAYOUTS: dict[type, ObjectLayout] = {
    DocumentEntry: DOCUMENT_ENTRY,
    SubmissionSet: SUBMISSION_SET,
    Folder: FOLDER,
    Association: ASSOCIATION_LAYOUT,
}

_RIM_NSMAP = {"rim": ns.RIM}
_SUBMIT_NSMAP = {"lcm": ns.LCM, "rim": ns.RIM}
#: the namespace of the uuid5 ids of nested parts of urn:uuid objects (any fixed UUID will do)
_PART_NAMESPACE = uuid.UUID("5d0c6a0e-6f1b-4e0b-9a55-2f4b1c7a8e31")


def write_submission(submission: Submission) -> etree._Element:
    """The lcm:SubmitObjectsRequest (ITI-42) of a submission."""
    request = etree.Element(SUBMIT_OBJECTS_REQUEST, nsmap=_SUBMIT_NSMAP)
    object_list = etree.SubElement(request, REGISTRY_OBJECT_LIST)
    for obj in submission.objects():
        write_registry_object(obj, object_list)
    return request


def write_registry_object(obj: RegistryObject, parent: etree._Element | None = None) -> etree._Element:
    """One DocumentEntry, SubmissionSet, Folder or Association as its ebRIM element, added to
    `parent` (a rim:RegistryObjectList) when given."""
    layout = LAYOUTS[type(obj)]
    element = _element(parent, layout.tag, {"id": obj.id})
    for name, attribute in layout.attributes.items():
        value = getattr(obj, attribute.field)
        if value is not None and (value or not attribute.required):
            element.set(name, value)
    _write_slots(element, obj, layout)
    title = getattr(obj, "title", None)
    if title is not None:
        _localized(element, NAME, title)
    comments = getattr(obj, "comments", None)
    if comments is not None:
        _localized(element, DESCRIPTION, comments)
    version = getattr(obj, "version", None)
    if version is not None:
        etree.SubElement(element, VERSION_INFO, versionName=version)
    if layout.author_scheme is not None:
        for number, author in enumerate(obj.authors, 1):  # type: ignore[union-attr]
            _write_author(element, obj.id, layout.author_scheme, author, number)
    for scheme, coded in layout.codes.items():
        value = getattr(obj, coded.field)
        codes = value if coded.multiple else [] if value is None else [value]
        for number, code in enumerate(codes, 1):
            _write_code(element, obj.id, scheme, code, part_id(obj.id, coded.name, number))
    if layout.node is not None:
        etree.SubElement(element, CLASSIFICATION, {
            "id": part_id(obj.id, "node"), "classifiedObject": obj.id, "classificationNode": layout.node})
    for scheme, identifier in layout.identifiers.items():
        value = getattr(obj, identifier.field)
        if value is not None:
            external = etree.SubElement(element, EXTERNAL_IDENTIFIER, {
                "id": part_id(obj.id, identifier.name), "identificationScheme": scheme,
                "registryObject": obj.id, "value": value})
            _localized(external, NAME, layout.identifier_name(identifier))
    return element


def part_id(object_id: str, part: str, number: int = 1) -> str:
    """The id of a Classification / ExternalIdentifier inside object `object_id`: `part` names
    the attribute it carries, `number` counts the parts of a multi-valued one from 1."""
    name = part if number == 1 else f"{part}-{number}"
    if object_id.startswith("urn:uuid:"):
        return f"urn:uuid:{uuid.uuid5(_PART_NAMESPACE, f'{object_id}/{name}')}"
    return f"{object_id}-{name}"


# --- ITI-41 -------------------------------------------------------------------------------


def write_provide_and_register(submission: Submission,
                               documents: Mapping[str, bytes | etree._Element]
                               | Iterable[tuple[str, bytes | etree._Element]] = ()) -> etree._Element:
    """An xdsb:ProvideAndRegisterDocumentSetRequest (ITI TF-2 3.41.4.1.2): the
    SubmitObjectsRequest of `submission`, then one xdsb:Document per (DocumentEntry id, content)
    of `documents` (see `add_document`)."""
    request = etree.Element(PROVIDE_AND_REGISTER_REQUEST, nsmap={"xdsb": ns.XDSB})
    request.append(write_submission(submission))
    items = documents.items() if isinstance(documents, Mapping) else documents
    for entry_id, content in items:
        add_document(request, entry_id, content)
    return request


def add_document(request: etree._Element, entry_id: str, content: bytes | etree._Element) -> etree._Element:
    """Add the xdsb:Document of DocumentEntry `entry_id` to a ProvideAndRegisterDocumentSetRequest:
    bytes go inline, in base64; an element goes inside it - for MTOM, the document's
    xop:Include (`xds.soap.xop_include(content_id)`)."""
    document = etree.SubElement(request, DOCUMENT, id=entry_id)
    if isinstance(content, etree._Element):
        document.append(content)
    else:
        document.text = base64.b64encode(content).decode("ascii")
    return document


# --- the parts ----------------------------------------------------------------------------


def _element(parent: etree._Element | None, tag: str, attributes: dict[str, str]) -> etree._Element:
    if parent is None:
        return etree.Element(tag, attributes, nsmap=_RIM_NSMAP)
    return etree.SubElement(parent, tag, attributes)


def _write_slots(element: etree._Element, obj: RegistryObject, layout: ObjectLayout) -> None:
    """The layout's slots, then the extra ones (an extra slot named like one of the layout's
    replaces it: slot names are unique within an object, ebRIM 3.0)."""
    for name, attribute in layout.slots.items():
        value = getattr(obj, attribute.field)
        if attribute.multiple:
            if value:
                set_slot(element, name, *value)
        elif value is not None:
            set_slot(element, name, value)
    for slot in obj.extra_slots:
        set_slot(element, slot.name, *slot.values)


def _localized(parent: etree._Element, tag: str, value: str) -> None:
    """rim:Name / rim:Description with one rim:LocalizedString."""
    etree.SubElement(etree.SubElement(parent, tag), LOCALIZED_STRING, value=value)


def _write_code(parent: etree._Element, object_id: str, scheme: str, code: Code, cid: str) -> None:
    """A coded value (ITI TF-3 4.2.3): nodeRepresentation, codingScheme slot, Name."""
    classification = etree.SubElement(parent, CLASSIFICATION, {
        "id": cid, "classificationScheme": scheme, "classifiedObject": object_id,
        "nodeRepresentation": code.code})
    set_slot(classification, CODING_SCHEME, code.scheme)
    if code.display is not None:
        _localized(classification, NAME, code.display)


def _write_author(parent: etree._Element, object_id: str, scheme: str, author: Author, number: int) -> None:
    """An author (ITI TF-3 4.2.3): a Classification with empty nodeRepresentation, one slot
    per attribute that has a value."""
    classification = etree.SubElement(parent, CLASSIFICATION, {
        "id": part_id(object_id, "author", number), "classificationScheme": scheme,
        "classifiedObject": object_id, "nodeRepresentation": ""})
    for name, field in AUTHOR_SLOTS.items():
        value = getattr(author, field)
        if isinstance(value, list):
            if value:
                set_slot(classification, name, *value)
        elif value is not None:
            set_slot(classification, name, value)
