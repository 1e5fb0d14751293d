"""Read an lcm:SubmitObjectsRequest (ebRIM 3.0; ITI TF-3 4.2.3 and 4.2.5) into the model.

What belongs here: the structure of ebRIM itself. Which element is which XDS object (a
RegistryPackage is a SubmissionSet or a Folder by the Classification that says so), which slot,
classification or external identifier carries which attribute, and the cardinalities that
structure implies - the "ebRIM structure" rules of `xds.rules` (request.*, object.*,
submission.*-submission-set(s), package.*, slot.*, classification.*, external-id.*).

What does not: required attributes, value formats, codes of the affinity domain, patient
consistency and what associations mean (`xds.registry.validate`, on the model); anything that
needs the database (`xds.registry.register`). Values are copied as written, so that a bad value
becomes one precise error there instead of a parse failure here.

The tables below (one `ObjectLayout` per object type: which XML attribute, slot,
classification or external identifier carries which model attribute) are the one description
of the layout: `xds.ebrim.write` writes the model back as ebRIM from the same tables, so
reading and writing cannot drift apart.

Theory of operation. Reading never raises on content: every problem becomes an `XdsError` from
the rule table, and reading goes on so the submitter gets all of them at once.
1. One pass over rim:RegistryObjectList sorts its children: registry objects
   (ExtrinsicObject, RegistryPackage, Association) by id; loose rim:Classification and
   rim:ExternalIdentifier elements aside; rim:ObjectRef (objects already in the registry) are
   accepted and left alone.
2. Each loose Classification / ExternalIdentifier is moved INTO the element of the object it
   names (the IPF sample and many senders classify the SubmissionSet at the top level). After
   that each object's element holds all of its metadata, which is what the registry stores.
3. Each object is read with one pass over its children, then its slots, classifications and
   external identifiers are mapped to attributes through the tables below (dict lookups by
   slot name or scheme UUID; the code is the same for every object type).

Before step 1, the census bounds the work and what could be stored: the objects and slot values
a network allows in one submission (`SubmissionLimits`, counted by libxml2's XPath in C), and the
lengths ebRIM 3.0's rim.xsd gives values (`EBRIM_LENGTHS`; lxml finds each kind of part, Python
measures it). For ten documents that is 0.14 ms of CPU, a fifth of reading them; validating
against lcm.xsd would take 0.21 ms, refuse whatever else the schema refuses (the reader is
lenient where XDS is sound) and answer in the schema's words, not naming the object. A
submission over a count limit is not read any further; one with values over their length is read
from a copy in which those values are cut to the limit, so that no message echoes them and the
caller's request (which a repository may pass on to a remote registry) is left as it came.
Either way `over_limits` says the submission is refused, and the registry looks no further.
Every id is unique in the request (ebRIM 3.0 IdentifiableType: nested Classifications and
ExternalIdentifiers are registry objects with ids of their own), with one leniency
(`check_nested_part`).

`assign_uuids` runs once the submission is accepted: symbolic ids become UUIDs, in the model
and in the XML alike (`plan_uuids` and `rewrite_xml` / `rewrite_model` are its two halves, for a
registry that prepares the XML before its write transaction).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from lxml import etree

from xds.ebrim import ns
from xds.ebrim.slots import (
    CLASSIFICATION,
    DESCRIPTION,
    EXTERNAL_IDENTIFIER,
    LOCALIZED_STRING,
    NAME,
    SLOT,
    VALUE,
    VERSION_INFO,
    join_uri_segments,
    localized_string,
    slot_values,
)
from xds.errors import XdsError
from xds.model.identifiers import is_uuid_urn
from xds.model.metadata import (
    Association,
    Author,
    Code,
    DocumentEntry,
    Folder,
    Slot,
    Submission,
    SubmissionSet,
)
from xds.rules import error

SUBMIT_OBJECTS_REQUEST = f"{{{ns.LCM}}}SubmitObjectsRequest"
REGISTRY_OBJECT_LIST = ns.rim("RegistryObjectList")
EXTRINSIC_OBJECT = ns.rim("ExtrinsicObject")
REGISTRY_PACKAGE = ns.rim("RegistryPackage")
ASSOCIATION = ns.rim("Association")
OBJECT_REF = ns.rim("ObjectRef")
CONTENT_VERSION_INFO = ns.rim("ContentVersionInfo")

REGISTRY_OBJECTS = frozenset({EXTRINSIC_OBJECT, REGISTRY_PACKAGE, ASSOCIATION})
LOOSE_PARTS = {CLASSIFICATION: "classifiedObject", EXTERNAL_IDENTIFIER: "registryObject"}

AUTHOR_SPECIALITY = "authorSpeciality"  # the misspelling many senders (and IPF's sample) use


# --- bounds: objects and values per submission, lengths of values ------------------------


@dataclass(frozen=True)
class SubmissionLimits:
    """What a network lets one submission hold (xds.config: max_submission_objects,
    max_submission_values). Counted before anything is read (two XPath counts, in C), so a
    submission over them costs nothing more."""

    #: Registry objects: the RegistryObjectList's children (ExtrinsicObjects, RegistryPackages,
    #: Associations, loose Classifications and ExternalIdentifiers, ObjectRefs) and the
    #: Classifications and ExternalIdentifiers inside them (each becomes a row, or part of one).
    max_objects: int = 10_000
    #: rim:Value elements of all slots (referenceIdList values become rows of their own).
    max_values: int = 50_000


@dataclass(frozen=True)
class Length:
    """A length limit of ebRIM 3.0 (rim.xsd): the element, the attribute (None: the element's
    text), the type rim.xsd gives it and that type's maxLength."""

    tag: str
    attribute: str | None
    type: str
    limit: int


LONG_NAME = 256  # rim.xsd LongName
FREE_FORM_TEXT = 1024  # rim.xsd FreeFormText
STRING16 = 16  # rim.xsd String16
#: The parts of XDS metadata whose length rim.xsd bounds, with the type it gives each. (ShortName,
#: 64, types only parts XDS metadata has none of: PersonName, EmailAddress, PostalAddress. The
#: ids and references - id, lid, home, objectType, status, classificationScheme, ... - are anyURI
#: and have no maxLength; XDS bounds them by their formats.)
EBRIM_LENGTHS = (
    Length(SLOT, "name", "LongName", LONG_NAME),
    Length(VALUE, None, "LongName", LONG_NAME),
    Length(LOCALIZED_STRING, "value", "FreeFormText", FREE_FORM_TEXT),
    Length(CLASSIFICATION, "nodeRepresentation", "LongName", LONG_NAME),
    Length(EXTERNAL_IDENTIFIER, "value", "LongName", LONG_NAME),
    Length(EXTRINSIC_OBJECT, "mimeType", "LongName", LONG_NAME),
    Length(VERSION_INFO, "versionName", "String16", STRING16),
    Length(CONTENT_VERSION_INFO, "versionName", "String16", STRING16),
)
_LENGTHS = {length.tag: length for length in EBRIM_LENGTHS}
assert len(_LENGTHS) == len(EBRIM_LENGTHS), "one length per element"
#: How much of an over-long value a message shows.
SHOWN = 40


# --- the tables: which ebRIM part carries which attribute (ITI TF-3 4.2.5) -----------------


@dataclass(frozen=True)
class ElementAttribute:
    """An attribute carried by an XML attribute of the object's own element (ebRIM 3.0 rim.xsd:
    lid, status, home, objectType, mimeType; associationType, sourceObject, targetObject)."""

    field: str
    #: ebRIM requires it: a missing one reads as '' for the validator to report (else None)
    required: bool = False


@dataclass(frozen=True)
class SlotAttribute:
    """An attribute carried by a rim:Slot (ITI TF-3 4.2.3, "Slot" coding)."""

    field: str
    multiple: bool = False


@dataclass(frozen=True)
class CodedAttribute:
    """An attribute carried by an external Classification (ITI TF-3 4.2.3, coded values):
    nodeRepresentation = code, codingScheme slot = scheme, Name = display name."""

    name: str  # as ITI TF-3 names it, for messages
    field: str
    multiple: bool = False


@dataclass(frozen=True)
class IdentifierAttribute:
    """An attribute carried by a rim:ExternalIdentifier (ITI TF-3 4.2.3, uniqueId/patientId/sourceId)."""

    name: str
    field: str


@dataclass(frozen=True)
class ObjectLayout:
    """Where each attribute of one XDS object type sits in ebRIM: the tables are keyed by XML
    attribute name, slot name, classificationScheme and identificationScheme. Title (rim:Name),
    comments (rim:Description) and version (rim:VersionInfo) are ebRIM's own parts, the same
    for every object type."""

    what: str  # the object type's name in ITI TF-3, used in every message
    tag: str  # the ebRIM element: rim:ExtrinsicObject, rim:RegistryPackage, rim:Association
    attributes: dict[str, ElementAttribute]
    slots: dict[str, SlotAttribute]
    codes: dict[str, CodedAttribute] = field(default_factory=dict)
    identifiers: dict[str, IdentifierAttribute] = field(default_factory=dict)
    author_scheme: str | None = None
    #: the classificationNode that makes a rim:RegistryPackage this object type
    node: str | None = None

    def identifier_name(self, attribute: IdentifierAttribute) -> str:
        """The Name ITI TF-3 4.2.3 gives the ExternalIdentifier: XDSDocumentEntry.uniqueId, ..."""
        return f"XDS{self.what}.{attribute.name}"


REFERENCE_ID_LIST = "urn:ihe:iti:xds:2013:referenceIdList"
CODING_SCHEME = "codingScheme"  # the slot of a coded Classification that names its scheme

#: XML attributes that DocumentEntries, SubmissionSets and Folders keep (ebRIM 3.0 rim.xsd: status of
#: RegistryObjectType, home of IdentifiableType)
_STATUS_AND_HOME = {
    "status": ElementAttribute("status"),
    "home": ElementAttribute("home_community_id"),
}

# ITI TF-3 Table 4.2.3.2-1 (DocumentEntry metadata attributes)
DOCUMENT_ENTRY = ObjectLayout(
    what="DocumentEntry",
    tag=EXTRINSIC_OBJECT,
    attributes={
        "lid": ElementAttribute("logical_id"),
        "objectType": ElementAttribute("object_type", required=True),
        **_STATUS_AND_HOME,
        "mimeType": ElementAttribute("mime_type"),
    },
    slots={
        "creationTime": SlotAttribute("creation_time"),
        "serviceStartTime": SlotAttribute("service_start_time"),
        "serviceStopTime": SlotAttribute("service_stop_time"),
        "hash": SlotAttribute("hash"),
        "size": SlotAttribute("size"),
        "languageCode": SlotAttribute("language_code"),
        "legalAuthenticator": SlotAttribute("legal_authenticator"),
        "sourcePatientId": SlotAttribute("source_patient_id"),
        "repositoryUniqueId": SlotAttribute("repository_unique_id"),
        "URI": SlotAttribute("uri"),
        "sourcePatientInfo": SlotAttribute("source_patient_info", multiple=True),
        REFERENCE_ID_LIST: SlotAttribute("reference_ids", multiple=True),
    },
    codes={
        ns.DE_CLASS_CODE: CodedAttribute("classCode", "class_code"),
        ns.DE_TYPE_CODE: CodedAttribute("typeCode", "type_code"),
        ns.DE_FORMAT_CODE: CodedAttribute("formatCode", "format_code"),
        ns.DE_HEALTHCARE_FACILITY_TYPE_CODE: CodedAttribute(
            "healthcareFacilityTypeCode", "healthcare_facility_type_code"
        ),
        ns.DE_PRACTICE_SETTING_CODE: CodedAttribute("practiceSettingCode", "practice_setting_code"),
        ns.DE_CONFIDENTIALITY_CODE: CodedAttribute(
            "confidentialityCode", "confidentiality_codes", multiple=True
        ),
        ns.DE_EVENT_CODE: CodedAttribute("eventCodeList", "event_codes", multiple=True),
    },
    identifiers={
        ns.DE_UNIQUE_ID: IdentifierAttribute("uniqueId", "unique_id"),
        ns.DE_PATIENT_ID: IdentifierAttribute("patientId", "patient_id"),
    },
    author_scheme=ns.DE_AUTHOR,
)

# ITI TF-3 Table 4.2.3.3-1 (SubmissionSet metadata attributes)
SUBMISSION_SET = ObjectLayout(
    what="SubmissionSet",
    tag=REGISTRY_PACKAGE,
    attributes=_STATUS_AND_HOME,
    slots={
        "submissionTime": SlotAttribute("submission_time"),
        "intendedRecipient": SlotAttribute("intended_recipients", multiple=True),
    },
    codes={ns.SS_CONTENT_TYPE_CODE: CodedAttribute("contentTypeCode", "content_type_code")},
    identifiers={
        ns.SS_UNIQUE_ID: IdentifierAttribute("uniqueId", "unique_id"),
        ns.SS_SOURCE_ID: IdentifierAttribute("sourceId", "source_id"),
        ns.SS_PATIENT_ID: IdentifierAttribute("patientId", "patient_id"),
    },
    author_scheme=ns.SS_AUTHOR,
    node=ns.SUBMISSION_SET_NODE,
)

# ITI TF-3 Table 4.2.3.4-1 (Folder metadata attributes)
FOLDER = ObjectLayout(
    what="Folder",
    tag=REGISTRY_PACKAGE,
    attributes={"lid": ElementAttribute("logical_id"), **_STATUS_AND_HOME},
    slots={"lastUpdateTime": SlotAttribute("last_update_time")},
    codes={ns.FOL_CODE_LIST: CodedAttribute("codeList", "codes", multiple=True)},
    identifiers={
        ns.FOL_UNIQUE_ID: IdentifierAttribute("uniqueId", "unique_id"),
        ns.FOL_PATIENT_ID: IdentifierAttribute("patientId", "patient_id"),
    },
    node=ns.FOLDER_NODE,
)

# ITI TF-3 4.2.2: an Association's own metadata is its type, ends and SubmissionSetStatus.
ASSOCIATION_LAYOUT = ObjectLayout(
    what="Association",
    tag=ASSOCIATION,
    attributes={
        "associationType": ElementAttribute("type", required=True),
        "sourceObject": ElementAttribute("source", required=True),
        "targetObject": ElementAttribute("target", required=True),
        "status": ElementAttribute("status"),
    },
    slots={"SubmissionSetStatus": SlotAttribute("submission_set_status")},
)

#: Association slots that XDS itself defines (Restricted Metadata Update, ITI-57): kept in
#: Association.extra_slots, but not extra metadata in the sense of ITI TF-3 4.1.14.
ASSOCIATION_SLOTS_DEFINED_BY_XDS = frozenset(
    {"PreviousVersion", "OriginalStatus", "NewStatus", "AssociationPropagation"}
)

#: Author slots (ITI TF-3 4.2.3, author); authorPerson holds one value, the others many.
AUTHOR_SLOTS = {
    "authorPerson": "person",
    "authorInstitution": "institutions",
    "authorRole": "roles",
    "authorSpecialty": "specialties",
    "authorTelecommunication": "telecoms",
}

#: classificationNode -> the layout of the RegistryPackage it classifies
PACKAGE_LAYOUTS = {layout.node: layout for layout in (SUBMISSION_SET, FOLDER)}

RegistryObject = DocumentEntry | SubmissionSet | Folder | Association


# --- the result ---------------------------------------------------------------------------


@dataclass
class ParsedSubmission:
    submission: Submission
    #: object id -> its rim:ExtrinsicObject / rim:RegistryPackage / rim:Association element,
    #: holding every Classification and ExternalIdentifier of the object (loose ones from the
    #: RegistryObjectList are moved into it), so each element can be stored on its own.
    elements: dict[str, etree._Element] = field(default_factory=dict)
    errors: list[XdsError] = field(default_factory=list)
    #: object id -> names of the extra metadata slots it carries (ITI TF-3 4.1.14)
    extra: dict[str, list[str]] = field(default_factory=dict)
    #: The SubmitObjectsRequest read, its loose parts moved into their objects: what a
    #: remote registry is sent (xds.repository.registration). A request with values over
    #: their ebRIM length stays as it came (what was read is a copy with those values cut).
    request: etree._Element | None = None
    #: The submission is over a limit (`SubmissionLimits`, `EBRIM_LENGTHS`): refused, and
    #: whatever was read of it is not worth checking further.
    over_limits: bool = False
    #: The registry objects and slot values the submission holds, as counted, and the limits
    #: it was read with.
    objects: int = 0
    values: int = 0
    limits: SubmissionLimits | None = None


def read_submission(request: etree._Element, limits: SubmissionLimits | None = None) -> ParsedSubmission:
    """Read a SubmitObjectsRequest into the model; every problem of ebRIM structure is in
    `errors`, none is raised. `limits`: the network's (the defaults of SubmissionLimits
    without)."""
    limits = limits or SubmissionLimits()
    parsed = ParsedSubmission(Submission(), request=request, limits=limits)
    _SubmissionReader(parsed, limits).read(request)
    return parsed


# --- reading ------------------------------------------------------------------------------


@dataclass
class _Contents:
    """The children of one registry object element, sorted in one pass."""

    slots: dict[str, list[str]] = field(default_factory=dict)
    title: str | None = None
    comments: str | None = None
    version: str | None = None
    classifications: dict[str, list[etree._Element]] = field(default_factory=dict)  # by scheme
    identifiers: dict[str, list[etree._Element]] = field(default_factory=dict)  # by scheme


class _SubmissionReader:
    def __init__(self, parsed: ParsedSubmission, limits: SubmissionLimits):
        self.parsed = parsed
        self.limits = limits
        self.submission = parsed.submission
        self.errors = parsed.errors
        self.submission_sets: list[str] = []
        #: ids of the top-level objects, loose parts and ObjectRefs
        self.seen: set[str] = set()
        #: the loose Classifications and ExternalIdentifiers (moved into their objects)
        self.loose: set[etree._Element] = set()
        #: ids already reported as used twice
        self.reported_ids: set[str] = set()

    def fail(self, rule_id: str, location: str = "", **values: object) -> None:
        self.errors.append(error(rule_id, location, **values))

    # --- the request and its RegistryObjectList -------------------------------------------

    def read(self, request: etree._Element) -> None:
        if request.tag != SUBMIT_OBJECTS_REQUEST:
            self.fail("request.not-submit-objects", found=_describe(request))
            return
        object_list = next((c for c in request if c.tag == REGISTRY_OBJECT_LIST), None)
        if object_list is None:
            self.fail("request.no-object-list")
            return
        too_long = self.census(object_list)
        if too_long is None:
            return  # over a count limit: nothing is read
        if too_long:
            self.report_lengths(object_list, too_long)
            # Read a copy with each over-long value cut to its limit: every message then shows
            # at most that much of it, and the caller's request stays as it came.
            request = copy.deepcopy(request)
            object_list = next(c for c in request if c.tag == REGISTRY_OBJECT_LIST)
            _cut(object_list)

        objects: dict[str, etree._Element] = {}  # id -> element, in document order
        loose: list[etree._Element] = []
        seen = self.seen
        for child in object_list:
            tag = child.tag
            if not isinstance(tag, str):
                continue  # comments and processing instructions
            if tag in REGISTRY_OBJECTS:
                object_id = self.identify(child, seen)
                if object_id is not None:
                    objects[object_id] = child
            elif tag in LOOSE_PARTS:
                # its UUID is checked once it sits in its object (read_contents)
                self.identify(child, seen, check_uuid=False)
                loose.append(child)
            elif tag == OBJECT_REF:
                # ebRS 3.0: a reference to an object already in the registry; its id is an id
                # of the request like any other
                self.identify(child, seen, check_uuid=False)
            else:
                self.fail("request.unknown-object", child.get("id", ""),
                          tag=etree.QName(child).localname, id=child.get("id", ""))
        self.loose = set(loose)

        for part in loose:
            self.attach(part, objects)
        for object_id, element in objects.items():
            if element.tag == EXTRINSIC_OBJECT:
                self.read_document_entry(element, object_id)
            elif element.tag == REGISTRY_PACKAGE:
                self.read_registry_package(element, object_id)
            else:
                self.read_association(element, object_id)
        self.check_one_submission_set()

    # --- the census: counts and lengths ----------------------------------------------------

    def census(self, object_list: etree._Element) -> list[tuple[etree._Element, Length, str]] | None:
        """One look at the registry objects' elements before anything is read: how many
        objects and values they hold, and which values are longer than ebRIM allows (returned,
        as (element, its Length, the value)). None when the submission holds more objects or
        values than the limits (reported; nothing more is looked at)."""
        limits = self.limits
        parsed = self.parsed
        parsed.objects, parsed.values = int(_COUNT_OBJECTS(object_list)), int(_COUNT_VALUES(object_list))
        if parsed.objects > limits.max_objects:
            return self.over_count("limit.objects", limits.max_objects)
        if parsed.values > limits.max_values:
            return self.over_count("limit.values", limits.max_values)
        # lxml finds each kind of part in C; Python looks at the parts found.
        too_long = []
        for element in object_list.iter(VALUE):
            if len(element) or len(element.text or "") > LONG_NAME:
                text = _text(element)
                if len(text) > LONG_NAME:
                    too_long.append((element, _LENGTHS[VALUE], text))
        for tag, attribute, limit in _ATTRIBUTE_LENGTHS:
            for element in object_list.iter(tag):
                value = element.get(attribute)
                if value is not None and len(value) > limit:
                    too_long.append((element, _LENGTHS[tag], value))
        return too_long

    def over_count(self, rule_id: str, limit: int) -> None:
        self.fail(rule_id, limit=limit)
        self.parsed.over_limits = True
        return None

    def report_lengths(self, object_list: etree._Element,
                       too_long: list[tuple[etree._Element, Length, str]]) -> None:
        """One error per value longer than its ebRIM type allows, at the object that holds it."""
        self.parsed.over_limits = True
        for element, length, value in too_long:
            top = element
            while top.getparent() is not object_list:
                top = top.getparent()
            object_id = top.get("id", "")
            self.fail("limit.length", object_id, what=f"rim:{etree.QName(top).localname}", id=object_id,
                      part=_part(element, length), length=len(value), limit=length.limit, type=length.type,
                      start=value[:SHOWN])

    def identify(self, element: etree._Element, seen: set[str], check_uuid: bool = True) -> str | None:
        """The id of a top-level object; None when it has none or repeats an earlier one
        (ebRIM 3.0: id is required and unique within the request)."""
        object_id = element.get("id")
        if not object_id:
            self.fail("object.missing-id", tag=etree.QName(element).localname)
            return None
        if check_uuid:
            self.check_uuid(object_id, object_id)
        if object_id in seen:
            self.fail("object.duplicate-id", object_id, id=object_id)
            return None
        seen.add(object_id)
        return object_id

    def check_uuid(self, object_id: str, location: str) -> None:
        """entryUUID (ITI TF-3 4.2.3): an id given as urn:uuid: must be a real UUID; anything
        else is a symbolic id that the registry replaces (ebRIM 3.0 rim.xsd, IdentifiableType)."""
        if object_id.startswith("urn:uuid:") and not is_uuid_urn(object_id):
            self.fail("object.bad-uuid", location, id=object_id)

    def attach(self, part: etree._Element, objects: dict[str, etree._Element]) -> None:
        """Move a loose Classification / ExternalIdentifier into the object it names, so the
        object's element is complete (the IPF sample classifies its SubmissionSet this way)."""
        reference = LOOSE_PARTS[part.tag]
        target_id = part.get(reference, "")
        target = objects.get(target_id)
        if target is None:
            self.fail("object.bad-reference", part.get("id", ""),
                      what=reference, id=part.get("id", ""), ref=target_id)
            return
        _insert_in_schema_order(target, part)

    def check_one_submission_set(self) -> None:
        """A submission carries exactly one SubmissionSet (ITI TF-3 4.2.3.3; ITI TF-2 3.42)."""
        if not self.submission_sets:
            self.fail("submission.no-submission-set")
        elif len(self.submission_sets) > 1:
            self.fail("submission.many-submission-sets", self.submission_sets[1],
                      count=len(self.submission_sets), ids=", ".join(self.submission_sets))

    # --- the four object types ------------------------------------------------------------

    def read_document_entry(self, element: etree._Element, object_id: str) -> None:
        """rim:ExtrinsicObject (ITI TF-3 4.2.3.2). The objectType is kept as sent, even when it
        is neither stable nor On-Demand, for the validator to judge; a missing one is ''."""
        contents = self.read_contents(element, DOCUMENT_ENTRY.what, object_id)
        entry = DocumentEntry(
            id=object_id,
            version=contents.version,
            title=contents.title,
            comments=contents.comments,
            **_element_attributes(element, DOCUMENT_ENTRY),
        )
        lid = entry.logical_id
        if lid and lid.startswith("urn:uuid:") and not is_uuid_urn(lid):
            # a symbolic lid is replaced like a symbolic id; this one would be kept as it is
            self.fail("object.bad-lid", object_id, id=object_id, value=_shown(lid))
        self.read_metadata(entry, contents, DOCUMENT_ENTRY)
        self.submission.documents.append(entry)
        self.parsed.elements[object_id] = element

    def read_registry_package(self, element: etree._Element, object_id: str) -> None:
        """rim:RegistryPackage: a SubmissionSet or a Folder, as its Classification by
        classificationNode says (ITI TF-3 4.2.3.3 and 4.2.3.4; nodes in 4.2.5)."""
        nodes = {
            node
            for child in element
            if child.tag == CLASSIFICATION and (node := child.get("classificationNode")) in PACKAGE_LAYOUTS
        }
        if not nodes:
            self.fail("package.unclassified", object_id, id=object_id)
            return
        if len(nodes) > 1:
            self.fail("package.ambiguous", object_id, id=object_id)
            return
        layout = PACKAGE_LAYOUTS[nodes.pop()]
        contents = self.read_contents(element, layout.what, object_id)
        common = dict(
            id=object_id,
            title=contents.title,
            comments=contents.comments,
            **_element_attributes(element, layout),
        )
        package: SubmissionSet | Folder
        if layout is SUBMISSION_SET:
            package = SubmissionSet(**common)
            self.submission_sets.append(object_id)
        else:
            package = Folder(**common, version=contents.version)
        self.read_metadata(package, contents, layout)  # a second SubmissionSet's errors count too
        if layout is FOLDER:
            self.submission.folders.append(package)
        elif self.submission.submission_set is None:
            self.submission.submission_set = package
        else:
            self.parsed.extra.pop(object_id, None)
            return  # submission.many-submission-sets: only the first one is in the model
        self.parsed.elements[object_id] = element

    def read_association(self, element: etree._Element, object_id: str) -> None:
        """rim:Association (ITI TF-3 4.2.2). Missing required attributes are '' for the
        validator to report."""
        contents = self.read_contents(element, ASSOCIATION_LAYOUT.what, object_id)
        association = Association(id=object_id, **_element_attributes(element, ASSOCIATION_LAYOUT))
        self.read_metadata(association, contents, ASSOCIATION_LAYOUT)
        self.submission.associations.append(association)
        self.parsed.elements[object_id] = element

    # --- one object's children ------------------------------------------------------------

    def read_contents(self, element: etree._Element, what: str, object_id: str) -> _Contents:
        """Sort an object's children in one pass, checking what ebRIM says of each: slot names
        are unique within their object (ebRIM 3.0, Slot), a nested Classification classifies
        and a nested ExternalIdentifier identifies the object that holds it. Classifications
        by classificationNode only (SubmissionSet, Folder) are read by read_registry_package."""
        contents = _Contents()
        part_ids: set[str] = set()
        for child in element:
            tag = child.tag
            if tag == SLOT:
                name = child.get("name")
                if name is None:
                    continue
                if name in contents.slots:
                    self.fail("slot.duplicate", object_id, what=what, id=object_id, slot=name)
                    continue
                contents.slots[name] = slot_values(child)
            elif tag == NAME:
                contents.title = localized_string(child)
            elif tag == DESCRIPTION:
                contents.comments = localized_string(child)
            elif tag == VERSION_INFO:
                contents.version = child.get("versionName")
            elif tag == CLASSIFICATION:
                self.check_nested_part(child, "classifiedObject", object_id, part_ids)
                scheme = child.get("classificationScheme")
                if scheme:
                    contents.classifications.setdefault(scheme, []).append(child)
            elif tag == EXTERNAL_IDENTIFIER:
                self.check_nested_part(child, "registryObject", object_id, part_ids)
                scheme = child.get("identificationScheme")
                if scheme:
                    contents.identifiers.setdefault(scheme, []).append(child)
        return contents

    def check_nested_part(self, part: etree._Element, reference: str, object_id: str,
                          part_ids: set[str]) -> None:
        """A Classification / ExternalIdentifier inside an object belongs to that object
        (classifiedObject / registryObject, required by ebRIM 3.0), and its own id, when a
        urn:uuid, is a real UUID.

        Its id is unique in the request (ebRIM 3.0 IdentifiableType): not the id of a top-level
        object, loose part or ObjectRef, nor of another part of the same object (`part_ids`, the
        ids of its parts so far). One leniency: the same id on parts of different objects.
        NIST's two_doc.xml gives id_1 ... id_11 to the parts of both its documents, and the
        toolkit's AssignUuids turns each into one UUID; the registry gives the repeats ids of
        their own (`rewrite_xml`), so none is stored twice."""
        part_id = part.get("id", "")
        if part_id:
            self.check_uuid(part_id, object_id)
            if part_id in part_ids or (part_id in self.seen and part not in self.loose):
                if part_id not in self.reported_ids:
                    self.reported_ids.add(part_id)
                    self.fail("object.duplicate-id", part_id, id=part_id)
            part_ids.add(part_id)
        target = part.get(reference, "")
        if target != object_id:
            if part.tag == CLASSIFICATION:
                self.fail("classification.wrong-object", object_id,
                          cid=part_id, id=object_id, target=target)
            else:
                attribute = _identifier_name(part.get("identificationScheme", ""))
                self.fail("external-id.wrong-object", object_id,
                          eid=part_id, attribute=attribute, id=object_id, target=target)

    def read_metadata(self, obj: RegistryObject, contents: _Contents, layout: ObjectLayout) -> None:
        """Map slots, classifications and external identifiers to the object's attributes
        through the layout's tables."""
        self.read_slots(obj, contents.slots, layout)
        for scheme, attribute in layout.codes.items():
            found = contents.classifications.get(scheme)
            if found:
                self.read_coded_attribute(obj, found, attribute, layout.what)
        if layout.author_scheme is not None:
            for classification in contents.classifications.get(layout.author_scheme, ()):
                author = self.read_author(classification, obj.id, layout.what)
                if author is not None:
                    obj.authors.append(author)  # type: ignore[union-attr]
        for scheme, attribute in layout.identifiers.items():
            found = contents.identifiers.get(scheme)
            if found:
                self.read_external_identifier(obj, found, attribute, layout.what)

    def read_slots(self, obj: RegistryObject, slots: dict[str, list[str]], layout: ObjectLayout) -> None:
        """Slots (ITI TF-3 4.2.3); every slot the layout does not define is extra metadata
        (ITI TF-3 4.1.14), kept on the object and listed in `extra`."""
        extra_names: list[str] = []
        for name, values in slots.items():
            attribute = layout.slots.get(name)
            if attribute is None:
                obj.extra_slots.append(Slot(name, values))
                if layout is not ASSOCIATION_LAYOUT or name not in ASSOCIATION_SLOTS_DEFINED_BY_XDS:
                    extra_names.append(name)
                continue
            if not values:
                self.fail("slot.empty", obj.id, what=layout.what, id=obj.id, slot=name)
                continue
            if attribute.multiple:
                setattr(obj, attribute.field, values)
                continue
            value = values[0]
            joined = join_uri_segments(values) if name == "URI" else None
            if joined is not None:
                value = joined
            elif len(values) > 1:
                self.fail("slot.single-value", obj.id,
                          what=layout.what, id=obj.id, count=len(values), slot=name)
            setattr(obj, attribute.field, value)
        if extra_names:
            self.parsed.extra[obj.id] = extra_names

    def read_coded_attribute(self, obj: RegistryObject, found: list[etree._Element],
                             attribute: CodedAttribute, what: str) -> None:
        """The classifications of one coded attribute; a single-valued one (classCode,
        typeCode, ...) keeps its first and reports the others."""
        if not attribute.multiple and len(found) > 1:
            self.fail("slot.single-value", obj.id,
                      what=what, id=obj.id, count=len(found), slot=attribute.name)
            found = found[:1]
        codes = [code for c in found if (code := self.read_code(c, obj.id, what, attribute.name))]
        if attribute.multiple:
            setattr(obj, attribute.field, codes)
        elif codes:
            setattr(obj, attribute.field, codes[0])

    def read_code(self, classification: etree._Element, object_id: str, what: str,
                  attribute: str) -> Code | None:
        """A coded value (ITI TF-3 4.2.3): nodeRepresentation is the code, the codingScheme
        slot (exactly one value) its scheme, Name its display name. A code without code or
        scheme is left out of the model; one without a display name is kept."""
        cid = classification.get("id", "")
        context = dict(what=what, id=object_id, attribute=attribute, cid=cid)
        code = classification.get("nodeRepresentation")
        if not code:
            self.fail("classification.no-node", object_id, **context)
        schemes: list[str] = []
        display = None
        for child in classification:
            if child.tag == SLOT and child.get("name") == CODING_SCHEME:
                schemes += slot_values(child)
            elif child.tag == NAME:
                display = localized_string(child)
        if len(schemes) != 1:
            self.fail("classification.no-scheme", object_id, **context)
        if not display:
            self.fail("classification.no-name", object_id, **context)
        if not code or len(schemes) != 1:
            return None
        return Code(code=code, scheme=schemes[0], display=display)

    def read_author(self, classification: etree._Element, object_id: str,
                    what: str) -> Author | None:
        """An author (ITI TF-3 4.2.3): a Classification with empty nodeRepresentation
        whose slots describe one author; authorSpeciality is read as authorSpecialty."""
        cid = classification.get("id", "")
        context = dict(what="author classification", id=cid)
        slots: dict[str, list[str]] = {}
        for child in classification:
            if child.tag != SLOT:
                continue
            name = child.get("name")
            if name == AUTHOR_SPECIALITY:
                name = "authorSpecialty"
            if name not in AUTHOR_SLOTS:
                continue  # unknown slots stay in the XML
            if name in slots:
                self.fail("slot.duplicate", object_id, slot=name, **context)
                continue
            slots[name] = slot_values(child)
        author = Author()
        for name, values in slots.items():
            if not values:
                self.fail("slot.empty", object_id, slot=name, **context)
            elif name == "authorPerson":
                if len(values) > 1:
                    self.fail("slot.single-value", object_id, count=len(values), slot=name, **context)
                author.person = values[0]
            else:
                setattr(author, AUTHOR_SLOTS[name], values)
        if not any(value for values in slots.values() for value in values):
            self.fail("classification.author-empty", object_id,
                      what=what, id=object_id, cid=cid)
            return None
        return author

    def read_external_identifier(self, obj: RegistryObject, found: list[etree._Element],
                                 attribute: IdentifierAttribute, what: str) -> None:
        """External identifiers (ITI TF-3 4.2.3): each scheme appears once, with a value."""
        if len(found) > 1:
            self.fail("external-id.duplicate", obj.id, what=what, id=obj.id, attribute=attribute.name)
        value = found[0].get("value")
        if value is None or not value.strip():
            self.fail("external-id.no-value", obj.id, what=what, id=obj.id, attribute=attribute.name)
            return
        setattr(obj, attribute.field, value)


#: The Identifiables a submission holds: its top-level objects (and loose parts and ObjectRefs),
#: and the Classifications and ExternalIdentifiers inside them. (Registry objects nested in a
#: RegistryPackage's own RegistryObjectList are not XDS: they are stored in its XML, unread.)
#: (`*//rim:Classification` would say it directly, but libxml2 merges a node-set per child: 10 times
#: slower on 1,700 documents than counting them all and taking the loose ones off.)
_COUNT_OBJECTS = etree.XPath("count(*) + count(.//rim:Classification) + count(.//rim:ExternalIdentifier)"
                             " - count(rim:Classification) - count(rim:ExternalIdentifier)",
                             namespaces={"rim": ns.RIM})
_COUNT_VALUES = etree.XPath("count(.//rim:Value)", namespaces={"rim": ns.RIM})
#: (tag, attribute, maxLength) of the attributes EBRIM_LENGTHS bounds
_ATTRIBUTE_LENGTHS = tuple((tag, length.attribute, length.limit) for tag, length in _LENGTHS.items()
                           if length.attribute is not None)


def _shown(value: str) -> str:
    """A value as a message shows it: whole, or its start when it is long."""
    return value if len(value) <= 2 * SHOWN else f"{value[:SHOWN]}..."


def _text(value: etree._Element) -> str:
    """A rim:Value's string, as a schema validator (and a client) sees it: all of its text,
    also where a comment or an element splits it."""
    return "".join(value.itertext()) if len(value) else (value.text or "")


def _part(element: etree._Element, length: Length) -> str:
    """The over-long part, in words, for a message."""
    tag = etree.QName(element).localname
    if element.tag == VALUE:
        slot = element.getparent()
        slot = slot.getparent() if slot is not None else None
        name = slot.get("name", "") if slot is not None else ""
        return f"a value of the slot '{name[:SHOWN]}'"
    if element.tag == SLOT:
        return "the name of a slot"
    if element.tag == LOCALIZED_STRING:
        parent = element.getparent()
        return f"a LocalizedString of its {etree.QName(parent).localname if parent is not None else 'name'}"
    if element.tag in (CLASSIFICATION, EXTERNAL_IDENTIFIER):
        return f"the {length.attribute} of {tag} '{element.get('id', '')}'"
    return f"the {length.attribute} of {tag}" if element.tag != EXTRINSIC_OBJECT else f"its {length.attribute}"


def _cut(object_list: etree._Element) -> None:
    """Cut every value of the objects under `object_list` to its ebRIM length."""
    for element in object_list.iter(*_LENGTHS):
        length = _LENGTHS[element.tag]
        if length.attribute is None:
            text = _text(element)
            if len(text) > length.limit:
                for child in list(element):
                    element.remove(child)
                element.text = text[:length.limit]
        else:
            value = element.get(length.attribute)
            if value is not None and len(value) > length.limit:
                element.set(length.attribute, value[:length.limit])


def _element_attributes(element: etree._Element, layout: ObjectLayout) -> dict[str, str | None]:
    """The model attributes the object's own XML attributes carry, by field name."""
    return {attribute.field: element.get(name, "" if attribute.required else None)
            for name, attribute in layout.attributes.items()}


def _describe(element: etree._Element) -> str:
    if not isinstance(element.tag, str):
        return "no element"
    name = etree.QName(element)
    prefix = f"{element.prefix}:" if element.prefix else ""
    where = f" (namespace {name.namespace})" if name.namespace else ""
    return f"{prefix}{name.localname}{where}"


_IDENTIFIER_NAMES = {
    scheme: f"{layout.what}.{attribute.name}"
    for layout in (DOCUMENT_ENTRY, SUBMISSION_SET, FOLDER)
    for scheme, attribute in layout.identifiers.items()
}


def _identifier_name(scheme: str) -> str:
    return _IDENTIFIER_NAMES.get(scheme, scheme or "(no identificationScheme)")


# ebRIM 3.0 RegistryObjectType: Slot*, Name?, Description?, VersionInfo?, Classification*,
# ExternalIdentifier*, then ContentVersionInfo? (ExtrinsicObject) or RegistryObjectList?
# (RegistryPackage). A moved part goes where the schema wants it, so stored XML stays valid.
_FOLLOWING = {
    CLASSIFICATION: frozenset({EXTERNAL_IDENTIFIER, CONTENT_VERSION_INFO, REGISTRY_OBJECT_LIST}),
    EXTERNAL_IDENTIFIER: frozenset({CONTENT_VERSION_INFO, REGISTRY_OBJECT_LIST}),
}


def _insert_in_schema_order(parent: etree._Element, part: etree._Element) -> None:
    following = _FOLLOWING[part.tag]
    for index, child in enumerate(parent):
        if child.tag in following:
            parent.insert(index, part)
            return
    parent.append(part)


# --- assigning UUIDs ----------------------------------------------------------------------

#: Attributes of ebRIM elements that hold the id of a registry object.
REFERENCE_ATTRIBUTES = ("lid", "classifiedObject", "registryObject", "sourceObject", "targetObject")


def _new_uuid() -> str:
    """A random (version 4) UUID URN, as uuid.uuid4() makes it (RFC 4122 4.4: 122 random bits,
    the version and variant bits set) at half its cost: a submission of ten documents takes
    some 130 of them."""
    random = bytearray(os.urandom(16))
    random[6] = (random[6] & 0x0F) | 0x40
    random[8] = (random[8] & 0x3F) | 0x80
    h = random.hex()
    return f"urn:uuid:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def is_uuid(object_id: str | None) -> bool:
    return bool(object_id) and object_id.startswith("urn:uuid:")


def assign_uuids(parsed: ParsedSubmission,
                 new_uuid: Callable[[], str] = _new_uuid) -> dict[str, str]:
    """Give every object whose id is not a urn:uuid a new UUID (ebRS 3.0 / rim.xsd
    IdentifiableType: symbolic ids are replaced by the registry); rewrite every reference to it: in the model
    (ids, association source/target, logical_id when it was symbolic) AND in the XML elements
    (id, lid, classifiedObject, registryObject, sourceObject, targetObject attributes, and the
    ids of nested Classification/ExternalIdentifier elements, which also need urn:uuid ids).
    Also set lid = id on DocumentEntries that have none (first version).
    Returns the map old id -> new id.

    The map holds the registry objects (and a symbolic lid that named no object); nested
    Classification/ExternalIdentifier ids are not in it: nothing refers to them, and senders
    reuse them across objects (NIST's two_doc.xml has id_1... in both documents), so each gets
    its own UUID (a urn:uuid one keeps it, unless an earlier object has it already)."""
    mapping = plan_uuids(parsed.submission, new_uuid)
    rewrite_xml(parsed.elements, parsed.submission, mapping, new_uuid)
    rewrite_model(parsed, mapping)
    return mapping


def plan_uuids(submission: Submission, new_uuid: Callable[[], str] = _new_uuid) -> dict[str, str]:
    """The first half of assign_uuids: the map old id -> new id, nothing changed yet."""
    mapping = {o.id: new_uuid() for o in submission.objects() if not is_uuid(o.id)}
    for entry in _versioned(submission):
        if entry.logical_id and not is_uuid(entry.logical_id) and entry.logical_id not in mapping:
            mapping[entry.logical_id] = new_uuid()
    return mapping


def _versioned(submission: Submission) -> list[DocumentEntry | Folder]:
    """The objects that have versions (ebRIM 3.0 lid and VersionInfo; ITI-57 updates them)."""
    return [*submission.documents, *submission.folders]


def rewrite_xml(elements: dict[str, etree._Element], submission: Submission, mapping: dict[str, str],
                new_uuid: Callable[[], str] = _new_uuid) -> None:
    """The XML half of assign_uuids, on `elements` (the objects' elements, or copies of them,
    keyed by the submitter's ids; the model is read, not changed)."""
    # The urn:uuid ids kept so far: a nested part that repeats one (the reader lets a part's id
    # repeat in another object, see check_nested_part) gets one of its own.
    kept = {mapping.get(object_id, object_id) for object_id in elements}
    for element in elements.values():
        _rewrite_element(element, mapping, new_uuid, kept)
    # ebRIM 3.0 versioning (used by ITI-57): the first version's lid is its own id.
    for entry in _versioned(submission):
        if not entry.logical_id:
            element = elements.get(entry.id)
            if element is not None:
                element.set("lid", mapping.get(entry.id, entry.id))


def rewrite_model(parsed: ParsedSubmission, mapping: dict[str, str]) -> None:
    """The model half of assign_uuids: ids, references and lids; `parsed.elements` and
    `parsed.extra` are keyed by the new ids."""
    submission = parsed.submission
    first_versions = [entry for entry in _versioned(submission) if not entry.logical_id]
    for obj in submission.objects():
        obj.id = mapping.get(obj.id, obj.id)
    for association in submission.associations:
        association.source = mapping.get(association.source, association.source)
        association.target = mapping.get(association.target, association.target)
    for entry in _versioned(submission):
        if entry.logical_id:
            entry.logical_id = mapping.get(entry.logical_id, entry.logical_id)
    for entry in first_versions:
        entry.logical_id = entry.id
    _rekey(parsed.elements, mapping)
    _rekey(parsed.extra, mapping)


def _rewrite_element(element: etree._Element, mapping: dict[str, str],
                     new_uuid: Callable[[], str], kept: set[str]) -> None:
    object_id = element.get("id")
    if object_id in mapping:
        element.set("id", mapping[object_id])
    _rewrite_references(element, mapping)
    for part in element.iter(CLASSIFICATION, EXTERNAL_IDENTIFIER):
        part_id = part.get("id")
        if not is_uuid(part_id) or part_id in kept:
            part.set("id", new_uuid())
        else:
            kept.add(part_id)
        _rewrite_references(part, mapping)


def _rewrite_references(element: etree._Element, mapping: dict[str, str]) -> None:
    for name in REFERENCE_ATTRIBUTES:
        value = element.get(name)
        if value is not None and value in mapping:
            element.set(name, mapping[value])


def _rekey(table: dict, mapping: dict[str, str]) -> None:
    """Rename keys in place (callers may hold the dict), keeping their order."""
    items = list(table.items())
    table.clear()
    for key, value in items:
        table[mapping.get(key, key)] = value
