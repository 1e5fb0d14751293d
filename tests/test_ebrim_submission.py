"""Reading an lcm:SubmitObjectsRequest into the model (xds.ebrim.submission), and assigning
UUIDs to symbolic ids.

Tests are grouped like ITI TF-3 4.2.3: the request, DocumentEntry, SubmissionSet, Folder,
Association, extra metadata; then the public samples of ../shared/conformance-data, then
assign_uuids. One test per structural rule is in test_rules_structure.py.

`minimal_request()` builds a small valid ITI-42 request (one DocumentEntry with every
attribute Register Document Set-b requires, a SubmissionSet, a HasMember with
SubmissionSetStatus Original) as an lxml tree; the helpers below it let a test change just
what it is about.

These requests are written by hand on purpose, not with `xds.ebrim.write`: the tests hold the
reader to ITI TF-3 as senders write it, and the writer walks the reader's own tables, so XML
from the writer could not show a table entry that is wrong. tests/test_rules_structure.py
builds on them to break ebRIM structure (loose, misplaced, duplicate or missing parts), which
a writer of valid ebRIM does not produce. The writer's tests (tests/test_ebrim_write.py) read
these same requests back through it.
"""

from __future__ import annotations

import itertools
import re

import pytest
from lxml import etree

from tests.data import CONFORMANCE
from xds.ebrim import ns
from xds.ebrim.submission import (
    ParsedSubmission,
    assign_uuids,
    plan_uuids,
    read_submission,
    rewrite_model,
    rewrite_xml,
)
from xds.model import Author, Code, Slot

DATA = CONFORMANCE

LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RIM = ns.RIM
STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
ON_DEMAND = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"

DE = "Document01"
SS = "SubmissionSet01"
HM = "Association01"
PATIENT = "P1001^^^&1.2.392.200119.6.102.1.1&ISO"
DOC_UID = "1.2.392.200119.6.102.10.1"
SS_UID = "1.2.392.200119.6.102.20.1"
SOURCE_ID = "1.2.392.200119.6.102.11"
HASH = "da39a3ee5e6b4b0d3255bfef95601890afd80709"
UUID_RE = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# --- building requests --------------------------------------------------------------------


def rim(tag: str, **attributes: str) -> etree._Element:
    return etree.Element(ns.rim(tag), attributes, nsmap={"rim": RIM})


def slot(name: str, *values: str) -> etree._Element:
    element = rim("Slot", name=name)
    value_list = etree.SubElement(element, ns.rim("ValueList"))
    for value in values:
        etree.SubElement(value_list, ns.rim("Value")).text = value
    return element


def name(value: str, tag: str = "Name") -> etree._Element:
    element = rim(tag)
    etree.SubElement(element, ns.rim("LocalizedString"), value=value)
    return element


def code(cid: str, scheme: str, classified: str, node: str | None, coding_scheme: str | None,
         display: str | None) -> etree._Element:
    """A coded Classification; None leaves the part out."""
    element = rim("Classification", id=cid, classificationScheme=scheme, classifiedObject=classified)
    if node is not None:
        element.set("nodeRepresentation", node)
    if coding_scheme is not None:
        element.append(slot("codingScheme", coding_scheme))
    if display is not None:
        element.append(name(display))
    return element


def author(cid: str, scheme: str, classified: str, *slots: etree._Element) -> etree._Element:
    element = rim("Classification", id=cid, classificationScheme=scheme,
                  classifiedObject=classified, nodeRepresentation="")
    element.extend(slots)
    return element


def external_id(eid: str, scheme: str, registry_object: str, value: str | None) -> etree._Element:
    element = rim("ExternalIdentifier", id=eid, identificationScheme=scheme, registryObject=registry_object)
    if value is not None:
        element.set("value", value)
    return element


def node_classification(cid: str, classified: str, node: str = ns.SUBMISSION_SET_NODE) -> etree._Element:
    return rim("Classification", id=cid, classifiedObject=classified, classificationNode=node)


def document_entry(de_id: str = DE, unique_id: str = DOC_UID) -> etree._Element:
    element = rim("ExtrinsicObject", id=de_id, mimeType="text/xml", objectType=STABLE)
    element.extend([
        slot("creationTime", "20241102091500"),
        slot("hash", HASH),
        slot("size", "1024"),
        slot("languageCode", "ja-JP"),
        slot("repositoryUniqueId", "1.2.392.200119.6.102.1"),
        slot("sourcePatientId", "12345^^^&1.2.392.200119.6.102.11&ISO"),
        slot("sourcePatientInfo", "PID-3|12345^^^&1.2.392.200119.6.102.11&ISO", "PID-5|Sanuki^Taro^^^"),
        name("Referral letter"),
        name("To the cardiology department", "Description"),
        author(f"{de_id}-author", ns.DE_AUTHOR, de_id,
               slot("authorPerson", "^Takamatsu^Hanako^^^Dr"),
               slot("authorInstitution", "Kagawa Central Hospital^^^^^&1.2.392.200119.6.102.11&ISO^^^^1"),
               slot("authorRole", "Attending")),
        code(f"{de_id}-class", ns.DE_CLASS_CODE, de_id, "34133-9", "2.16.840.1.113883.6.1",
             "Summary of episode note"),
        code(f"{de_id}-conf", ns.DE_CONFIDENTIALITY_CODE, de_id, "N", "2.16.840.1.113883.5.25", "Normal"),
        code(f"{de_id}-format", ns.DE_FORMAT_CODE, de_id, "urn:ihe:iti:xds-sd:text:2008",
             "1.3.6.1.4.1.19376.1.2.3", "XDS-SD text"),
        code(f"{de_id}-hcft", ns.DE_HEALTHCARE_FACILITY_TYPE_CODE, de_id, "22232009",
             "2.16.840.1.113883.6.96", "Hospital"),
        code(f"{de_id}-practice", ns.DE_PRACTICE_SETTING_CODE, de_id, "394802001",
             "2.16.840.1.113883.6.96", "General medicine"),
        code(f"{de_id}-type", ns.DE_TYPE_CODE, de_id, "57133-1", "2.16.840.1.113883.6.1", "Referral note"),
        external_id(f"{de_id}-pid", ns.DE_PATIENT_ID, de_id, PATIENT),
        external_id(f"{de_id}-uid", ns.DE_UNIQUE_ID, de_id, unique_id),
    ])
    return element


def submission_set(ss_id: str = SS, unique_id: str = SS_UID) -> etree._Element:
    element = rim("RegistryPackage", id=ss_id)
    element.extend([
        slot("submissionTime", "20241102091600"),
        name("Referral"),
        author(f"{ss_id}-author", ns.SS_AUTHOR, ss_id, slot("authorPerson", "^Takamatsu^Hanako^^^Dr")),
        code(f"{ss_id}-ct", ns.SS_CONTENT_TYPE_CODE, ss_id, "57133-1", "2.16.840.1.113883.6.1", "Referral note"),
        node_classification(f"{ss_id}-node", ss_id),
        external_id(f"{ss_id}-uid", ns.SS_UNIQUE_ID, ss_id, unique_id),
        external_id(f"{ss_id}-src", ns.SS_SOURCE_ID, ss_id, SOURCE_ID),
        external_id(f"{ss_id}-pid", ns.SS_PATIENT_ID, ss_id, PATIENT),
    ])
    return element


def folder(folder_id: str = "Folder01") -> etree._Element:
    element = rim("RegistryPackage", id=folder_id)
    element.extend([
        name("Cardiology episode"),
        code(f"{folder_id}-code", ns.FOL_CODE_LIST, folder_id, "394579002", "2.16.840.1.113883.6.96",
             "Cardiology"),
        node_classification(f"{folder_id}-node", folder_id, ns.FOLDER_NODE),
        external_id(f"{folder_id}-uid", ns.FOL_UNIQUE_ID, folder_id, "1.2.392.200119.6.102.30.1"),
        external_id(f"{folder_id}-pid", ns.FOL_PATIENT_ID, folder_id, PATIENT),
    ])
    return element


def association(assoc_id: str, source: str, target: str, kind: str = HAS_MEMBER,
                status: str | None = "Original") -> etree._Element:
    element = rim("Association", id=assoc_id, associationType=kind, sourceObject=source, targetObject=target)
    if status is not None:
        element.append(slot("SubmissionSetStatus", status))
    return element


def minimal_request(*more: etree._Element) -> etree._Element:
    """A valid ITI-42 request with symbolic ids; `more` is appended to its RegistryObjectList."""
    request = etree.Element(f"{{{LCM}}}SubmitObjectsRequest", nsmap={"lcm": LCM, "rim": RIM})
    object_list = etree.SubElement(request, ns.rim("RegistryObjectList"))
    object_list.extend([document_entry(), submission_set(), association(HM, SS, DE), *more])
    return request


def object_list(request: etree._Element) -> etree._Element:
    return request.find(ns.rim("RegistryObjectList"))


def obj(request: etree._Element, object_id: str) -> etree._Element:
    """The element with this id anywhere in the request."""
    return next(e for e in request.iter() if e.get("id") == object_id)


def child(element: etree._Element, tag: str, **attributes: str) -> etree._Element:
    """The first child `rim:tag` whose attributes have these values."""
    return next(c for c in element if c.tag == ns.rim(tag) and all(c.get(k) == v for k, v in attributes.items()))


def remove(element: etree._Element) -> None:
    element.getparent().remove(element)


def add_slot(element: etree._Element, *args: str) -> None:
    """Add a slot where ebRIM wants slots: before everything else."""
    element.insert(0, slot(*args))


def read(request: etree._Element) -> ParsedSubmission:
    parsed = read_submission(request)
    assert all(isinstance(e.context, str) for e in parsed.errors)
    return parsed


def read_ok(request: etree._Element) -> ParsedSubmission:
    parsed = read(request)
    assert parsed.errors == []
    return parsed


# --- the minimal request ------------------------------------------------------------------


def test_minimal_request_reads_without_errors():
    parsed = read_ok(minimal_request())
    sub = parsed.submission
    assert [d.id for d in sub.documents] == [DE]
    assert sub.submission_set.id == SS
    assert [a.id for a in sub.associations] == [HM]
    assert sub.folders == []
    assert list(parsed.elements) == [DE, SS, HM]
    assert parsed.extra == {}


def test_document_entry_attributes():
    """ITI TF-3 4.2.3.2: every attribute of the ebRIM ExtrinsicObject lands in its field."""
    entry = read_ok(minimal_request()).submission.documents[0]
    assert entry.object_type == STABLE and not entry.is_on_demand
    assert entry.mime_type == "text/xml"
    assert entry.unique_id == DOC_UID
    assert entry.patient_id == PATIENT
    assert entry.creation_time == "20241102091500"
    assert entry.hash == HASH
    assert entry.size == "1024"
    assert entry.language_code == "ja-JP"
    assert entry.repository_unique_id == "1.2.392.200119.6.102.1"
    assert entry.source_patient_id == "12345^^^&1.2.392.200119.6.102.11&ISO"
    assert entry.source_patient_info == ["PID-3|12345^^^&1.2.392.200119.6.102.11&ISO", "PID-5|Sanuki^Taro^^^"]
    assert entry.title == "Referral letter"
    assert entry.comments == "To the cardiology department"
    assert entry.class_code == Code("34133-9", "2.16.840.1.113883.6.1", "Summary of episode note")
    assert entry.type_code == Code("57133-1", "2.16.840.1.113883.6.1", "Referral note")
    assert entry.format_code == Code("urn:ihe:iti:xds-sd:text:2008", "1.3.6.1.4.1.19376.1.2.3", "XDS-SD text")
    assert entry.healthcare_facility_type_code == Code("22232009", "2.16.840.1.113883.6.96", "Hospital")
    assert entry.practice_setting_code == Code("394802001", "2.16.840.1.113883.6.96", "General medicine")
    assert entry.confidentiality_codes == [Code("N", "2.16.840.1.113883.5.25", "Normal")]
    assert entry.event_codes == []
    assert entry.authors == [Author(
        person="^Takamatsu^Hanako^^^Dr",
        institutions=["Kagawa Central Hospital^^^^^&1.2.392.200119.6.102.11&ISO^^^^1"],
        roles=["Attending"],
    )]
    # not sent, so not set: the validator decides whether they were needed
    assert entry.logical_id is None and entry.version is None and entry.status is None
    assert entry.home_community_id is None and entry.uri is None and entry.legal_authenticator is None
    assert entry.extra_slots == [] and entry.reference_ids == []


def test_document_entry_optional_attributes():
    request = minimal_request()
    de = obj(request, DE)
    de.set("lid", "urn:uuid:1e0a7d8c-1ea6-4c32-9b2a-6b0f7c7b8f01")
    de.set("status", APPROVED)
    de.set("home", "urn:oid:1.2.392.200119.6.102")
    de.insert(0, slot("legalAuthenticator", "^Marugame^Jiro^^^Dr"))
    de.insert(0, slot("serviceStartTime", "202411010900"))
    de.insert(0, slot("serviceStopTime", "202411011000"))
    de.insert(0, slot("urn:ihe:iti:xds:2013:referenceIdList",
                      "2013-001^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:order",
                      "A-1^^^&1.2.4&ISO^urn:ihe:iti:xds:2015:encounterId"))
    de.insert(0, slot("URI", "http://kagawa.example/doc/1"))
    child(de, "Description").addnext(_version_info("2"))
    de.append(code("ev1", ns.DE_EVENT_CODE, DE, "ANNGEN", "1.2.840.10008.2.16.4", "Angiography"))
    de.append(code("ev2", ns.DE_EVENT_CODE, DE, "CARD", "1.2.3", "Cardiology"))
    de.append(code("conf2", ns.DE_CONFIDENTIALITY_CODE, DE, "R", "2.16.840.1.113883.5.25", "Restricted"))
    entry = read_ok(request).submission.documents[0]
    assert entry.logical_id == "urn:uuid:1e0a7d8c-1ea6-4c32-9b2a-6b0f7c7b8f01"
    assert entry.status == APPROVED
    assert entry.home_community_id == "urn:oid:1.2.392.200119.6.102"
    assert entry.legal_authenticator == "^Marugame^Jiro^^^Dr"
    assert (entry.service_start_time, entry.service_stop_time) == ("202411010900", "202411011000")
    assert entry.reference_ids == ["2013-001^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:order",
                                   "A-1^^^&1.2.4&ISO^urn:ihe:iti:xds:2015:encounterId"]
    assert entry.uri == "http://kagawa.example/doc/1"
    assert entry.version == "2"
    assert [c.code for c in entry.event_codes] == ["ANNGEN", "CARD"]
    assert [c.code for c in entry.confidentiality_codes] == ["N", "R"]


def _version_info(version: str) -> etree._Element:
    return rim("VersionInfo", versionName=version)


def test_on_demand_and_unknown_object_types_are_kept_for_the_validator():
    request = minimal_request(document_entry("Document02", "1.2.3.2"), document_entry("Document03", "1.2.3.3"),
                              document_entry("Document04", "1.2.3.4"))
    obj(request, "Document02").set("objectType", ON_DEMAND)
    obj(request, "Document03").set("objectType", "urn:uuid:00000000-0000-0000-0000-000000000000")
    del obj(request, "Document04").attrib["objectType"]
    docs = read_ok(request).submission.documents
    assert docs[1].is_on_demand
    assert docs[2].object_type == "urn:uuid:00000000-0000-0000-0000-000000000000"
    assert docs[3].object_type == ""  # missing: the validator says it is required


def test_uri_split_over_numbered_values_is_joined_in_order():
    """XDS.a senders cut a long URI into values "n|part" (128 characters per value)."""
    request = minimal_request()
    add_slot(obj(request, DE), "URI", "2|/docs/0001.pdf", "1|http://kagawa.example", "3|?v=1")
    entry = read_ok(request).submission.documents[0]
    assert entry.uri == "http://kagawa.example/docs/0001.pdf?v=1"


def test_author_speciality_misspelling_and_telecommunication():
    request = minimal_request()
    de = obj(request, DE)
    de.append(author("a2", ns.DE_AUTHOR, DE,
                     slot("authorSpeciality", "Cardiology"),
                     slot("authorTelecommunication", "^^Internet^hanako@kagawa.example")))
    entry = read_ok(request).submission.documents[0]
    assert entry.authors[1] == Author(specialties=["Cardiology"], telecoms=["^^Internet^hanako@kagawa.example"])


def test_limited_metadata_and_unknown_schemes_are_kept_in_the_xml_only():
    request = minimal_request()
    de = obj(request, DE)
    de.append(rim("Classification", id="lim", classificationScheme=ns.DE_LIMITED_METADATA,
                  classifiedObject=DE, nodeRepresentation=""))
    de.append(code("other", "urn:uuid:11111111-2222-3333-4444-555555555555", DE, "x", None, None))
    de.append(external_id("other-eid", "urn:uuid:66666666-7777-8888-9999-000000000000", DE, "whatever"))
    parsed = read_ok(request)
    element = parsed.elements[DE]
    assert {"lim", "other", "other-eid"} <= {e.get("id") for e in element}


def test_several_localized_strings_give_the_first():
    request = minimal_request()
    title = child(obj(request, DE), "Name")
    etree.SubElement(title, ns.rim("LocalizedString"), value="紹介状", lang="ja")
    assert read_ok(request).submission.documents[0].title == "Referral letter"


def test_empty_name_and_description_give_none():
    request = minimal_request()
    de = obj(request, DE)
    child(de, "Name").clear()
    child(de, "Description").clear()
    entry = read_ok(request).submission.documents[0]
    assert entry.title is None and entry.comments is None


# --- SubmissionSet, Folder, Association ---------------------------------------------------


def test_submission_set_attributes():
    request = minimal_request()
    ss = obj(request, SS)
    ss.set("home", "urn:oid:1.2.392.200119.6.102")
    ss.insert(0, slot("intendedRecipient", "Some Hospital^^^^^^^^^1.2.3.4.5.6.7.8.9.1789.45|^Wel^Marcus^^^Dr^MD",
                      "|^Peirre^LaPointe^^^Dr^MD"))
    ss.insert(3, name("Annual physical", "Description"))
    ss_model = read_ok(request).submission.submission_set
    assert ss_model.unique_id == SS_UID
    assert ss_model.source_id == SOURCE_ID
    assert ss_model.patient_id == PATIENT
    assert ss_model.submission_time == "20241102091600"
    assert ss_model.content_type_code == Code("57133-1", "2.16.840.1.113883.6.1", "Referral note")
    assert ss_model.title == "Referral" and ss_model.comments == "Annual physical"
    assert ss_model.home_community_id == "urn:oid:1.2.392.200119.6.102"
    assert ss_model.authors == [Author(person="^Takamatsu^Hanako^^^Dr")]
    assert len(ss_model.intended_recipients) == 2


def test_top_level_submission_set_classification_is_moved_into_the_package():
    """The IPF sample and many senders classify the SubmissionSet from the RegistryObjectList;
    the package element must hold it for storage, where ebRIM's order puts Classifications
    (before the ExternalIdentifiers)."""
    request = minimal_request()
    ss = obj(request, SS)
    remove(child(ss, "Classification", id=f"{SS}-node"))
    object_list(request).insert(0, node_classification("ss-node", SS))
    parsed = read_ok(request)
    assert parsed.submission.submission_set.id == SS
    element = parsed.elements[SS]
    tags = [etree.QName(c).localname for c in element]
    assert tags.index("Classification") < tags.index("ExternalIdentifier")
    moved = child(element, "Classification", id="ss-node")
    assert tags.index("ExternalIdentifier") > list(element).index(moved)
    assert all(e.get("id") != "ss-node" for e in object_list(request))


def test_top_level_classification_and_external_identifier_of_a_document_are_moved_in():
    """ebRIM lets any Classification or ExternalIdentifier stand at the top level."""
    request = minimal_request()
    de = obj(request, DE)
    class_code = child(de, "Classification", id=f"{DE}-class")
    uid = child(de, "ExternalIdentifier", id=f"{DE}-uid")
    object_list(request).append(class_code)
    object_list(request).append(uid)
    parsed = read_ok(request)
    entry = parsed.submission.documents[0]
    assert entry.class_code.code == "34133-9" and entry.unique_id == DOC_UID
    assert class_code.getparent() is parsed.elements[DE] and uid.getparent() is parsed.elements[DE]


def test_folder_attributes():
    request = minimal_request(folder(), association("a-fol", SS, "Folder01", status=None),
                              association("a-fol-doc", "Folder01", DE, status=None),
                              association("a-ss-fol-doc", SS, "a-fol-doc", status=None))
    fol = obj(request, "Folder01")
    fol.insert(0, slot("lastUpdateTime", "20241102091700"))
    fol.append(code("fc2", ns.FOL_CODE_LIST, "Folder01", "394802001", "2.16.840.1.113883.6.96", "General medicine"))
    parsed = read_ok(request)
    (folder_model,) = parsed.submission.folders
    assert folder_model.id == "Folder01"
    assert folder_model.unique_id == "1.2.392.200119.6.102.30.1"
    assert folder_model.patient_id == PATIENT
    assert folder_model.title == "Cardiology episode"
    assert folder_model.last_update_time == "20241102091700"
    assert [c.code for c in folder_model.codes] == ["394579002", "394802001"]
    assert parsed.submission.submission_set.id == SS
    assert len(parsed.submission.associations) == 4


def test_association_attributes():
    request = minimal_request(association("rplc", DE, "urn:uuid:0f3a1c52-6a5e-4f43-9a44-4d0f1f4c2a11", RPLC, None))
    rplc = obj(request, "rplc")
    rplc.set("status", APPROVED)
    rplc.insert(0, slot("urn:example:reason", "typo"))
    rplc.insert(0, slot("PreviousVersion", "1"))
    parsed = read_ok(request)
    has_member, replace = parsed.submission.associations
    assert (has_member.type, has_member.source, has_member.target) == (HAS_MEMBER, SS, DE)
    assert has_member.submission_set_status == "Original"
    assert (replace.type, replace.source, replace.target) == (
        RPLC, DE, "urn:uuid:0f3a1c52-6a5e-4f43-9a44-4d0f1f4c2a11")
    assert replace.submission_set_status is None and replace.status == APPROVED
    assert replace.extra_slots == [Slot("PreviousVersion", ["1"]), Slot("urn:example:reason", ["typo"])]
    # PreviousVersion is XDS's own (ITI-57), not extra metadata
    assert parsed.extra == {"rplc": ["urn:example:reason"]}


def test_association_missing_attributes_are_empty_for_the_validator():
    request = minimal_request(rim("Association", id="bare"))
    bare = read_ok(request).submission.associations[1]
    assert (bare.type, bare.source, bare.target) == ("", "", "")


def test_object_refs_are_accepted_and_ignored():
    request = minimal_request(rim("ObjectRef", id="urn:uuid:0f3a1c52-6a5e-4f43-9a44-4d0f1f4c2a11"))
    parsed = read_ok(request)
    assert "urn:uuid:0f3a1c52-6a5e-4f43-9a44-4d0f1f4c2a11" not in parsed.elements


def test_comments_and_request_slots_are_ignored():
    request = minimal_request()
    request.insert(0, etree.Element(f"{{{ns.RS}}}RequestSlotList"))
    object_list(request).insert(1, etree.Comment(" a comment "))
    object_list(request).append(etree.ProcessingInstruction("pi", "x"))
    read_ok(request)


# --- extra metadata (ITI TF-3 4.1.14) -----------------------------------------------------


def test_extra_metadata_slots_are_kept_and_listed():
    request = minimal_request(folder(), association("a-fol", SS, "Folder01", status=None))
    add_slot(obj(request, DE), "urn:kagawa:consent", "opt-in", "facility-42")
    add_slot(obj(request, SS), "urn:kagawa:batch", "7")
    add_slot(obj(request, "Folder01"), "urn:kagawa:episode", "E-1")
    add_slot(obj(request, SS), "creationTime", "20241102")  # a DocumentEntry slot on a SubmissionSet
    parsed = read_ok(request)
    sub = parsed.submission
    assert sub.documents[0].extra_slots == [Slot("urn:kagawa:consent", ["opt-in", "facility-42"])]
    assert sub.submission_set.extra_slots == [Slot("creationTime", ["20241102"]), Slot("urn:kagawa:batch", ["7"])]
    assert sub.folders[0].extra_slots == [Slot("urn:kagawa:episode", ["E-1"])]
    assert parsed.extra == {
        DE: ["urn:kagawa:consent"],
        SS: ["creationTime", "urn:kagawa:batch"],
        "Folder01": ["urn:kagawa:episode"],
    }


# --- never raising ------------------------------------------------------------------------


def test_garbage_gives_errors_not_exceptions():
    request = minimal_request()
    de = obj(request, DE)
    for c in list(de):
        if c.tag == ns.rim("Classification"):
            for a in ("classificationScheme", "nodeRepresentation", "classifiedObject", "id"):
                c.attrib.pop(a, None)
            c.append(rim("Slot"))  # no name
            c.append(rim("Name"))
        if c.tag == ns.rim("ExternalIdentifier"):
            c.attrib.clear()
        if c.tag == ns.rim("Slot"):
            c.clear()
    object_list(request).append(etree.Element("{urn:other}Thing"))
    object_list(request).append(rim("Classification"))
    parsed = read(request)
    assert parsed.errors  # and nothing raised


# --- the public samples -------------------------------------------------------------------


def _between(data: bytes, start: bytes, end: bytes) -> bytes:
    first = data.index(start)
    return data[first:data.index(end, first) + len(end)]


def _submit_objects_request(root: etree._Element) -> etree._Element:
    return next(root.iter(f"{{{LCM}}}SubmitObjectsRequest"))


def sample(relative: str) -> etree._Element:
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is missing: the conformance data lives beside the project checkout")
    data = path.read_bytes()
    if b"<soapenv:Envelope" in data:  # NIST MIME bodies (PnrXop, PnrNoXop): the SOAP part
        data = _between(data, b"<soapenv:Envelope", b"</soapenv:Envelope>")
    return _submit_objects_request(etree.fromstring(data))


def test_ipf_sample_symbolic_ids_and_top_level_submission_set_classification():
    """oehf/ipf SubmitObjectsRequest_ebrs30.xml: symbolic ids, the SubmissionSet classified
    from the RegistryObjectList, authorSpeciality. Four of its scheme UUIDs carry a space
    ("...-92fd- a8ffeff98427" for the DocumentEntry patientId, and the SubmissionSet's
    uniqueId, patientId and contentTypeCode): those are not XDS schemes, so they stay in the
    XML unread, and the validator will report the attributes as missing."""
    parsed = read_ok(sample("iti-42/ipf/SubmitObjectsRequest_ebrs30.xml"))
    sub = parsed.submission
    (entry,) = sub.documents
    assert entry.id == "Document01" and entry.mime_type == "text/xml"
    assert entry.unique_id == "1.3.6.1.4.1.21367.2005.3.9999.32"
    assert entry.patient_id is None  # its identificationScheme has a space in it
    assert entry.source_patient_id == "ST-1000^^^&1.3.6.1.4.1.21367.2003.3.9&ISO"
    assert len(entry.source_patient_info) == 5
    assert entry.class_code == Code("History and Physical", "Connect-a-thon classCodes", "History and Physical")
    assert entry.type_code == Code("34108-1", "LOINC", "Outpatient Evaluation And Management")
    assert entry.confidentiality_codes == [Code("1.3.6.1.4.1.21367.2006.7.101",
                                                "Connect-a-thon confidentialityCodes", "Clinical-Staff")]
    assert entry.authors == [Author("Gerald Smitty", ["Cleveland Clinic", "Parma Community"],
                                    ["Attending"], ["Orthopedic"])]
    assert entry.comments is None  # <rim:Description/>
    ss = sub.submission_set
    assert ss.id == "SubmissionSet01" and ss.source_id == "3670984664"
    assert ss.unique_id is None and ss.patient_id is None and ss.content_type_code is None  # spaces again
    assert ss.comments == "Annual physical"
    assert ss.authors[0].specialties == ["Orthopedic"]
    assert [(a.type, a.source, a.target, a.submission_set_status) for a in sub.associations] == [
        (HAS_MEMBER, "SubmissionSet01", "Document01", "Original"),
        ("urn:ihe:iti:2010:AssociationType:IsSnapshotOf", "Document01",
         "urn:uuid:e0985823-dc50-45a5-a6c8-a11a829893bd", None),
    ]
    assert child(parsed.elements["SubmissionSet01"], "Classification", id="cl10") is not None


def test_ehealthsuisse_capture_default_namespace_and_extra_metadata():
    """A real ITI-41 capture from the Swiss EPR test environment: HTTP header lines, then a
    MIME multipart. Its SOAP envelope is not namespace-well-formed (the capture kept a
    wsse:Security header but not the wsse declaration), so the test takes the
    ProvideAndRegisterDocumentSetRequest, which declares everything it uses. rim is its
    default namespace; UUIDs throughout; one extra metadata slot of the Swiss EPR."""
    path = DATA / "iti-41/ehealthsuisse/ITI-41_request_raw.xml"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    body = _between(path.read_bytes(), b"<xds:ProvideAndRegisterDocumentSetRequest",
                    b"</xds:ProvideAndRegisterDocumentSetRequest>")
    parsed = read_ok(_submit_objects_request(etree.fromstring(body)))
    sub = parsed.submission
    (entry,) = sub.documents
    doc_id = "urn:uuid:af516d8d-c449-4a8b-bbb4-9e36489d474d"
    ss_id = "urn:uuid:a459a58b-1c47-4b43-b7db-82eb1b340168"
    assert entry.id == doc_id and entry.mime_type == "application/fhir+json"
    assert entry.patient_id == "CHPAM3946^^^&1.3.6.1.4.1.12559.11.20.1&ISO"
    assert entry.unique_id == "2.25.267241352778226683619515102048382761723"
    assert entry.title == "Vaccination - FSME-Immun 0.25 ml Junior"
    assert entry.class_code == Code("184216000", "2.16.840.1.113883.6.96", "Patient record type (record artifact)")
    assert entry.format_code.code == "urn:che:epr:ch-vacd:immunization-administration:2022"
    assert entry.confidentiality_codes[0].code == "17621005"
    assert entry.authors == [Author("^Max^Mustermann^^^Dr.Med", [], ["HCP^^^&2.16.756.5.30.1.127.3.10.6&ISO"],
                                    ["1050^^^&2.16.756.5.30.1.127.3.5&ISO"])]
    assert parsed.extra == {doc_id: ["urn:e-health-suisse:2020:originalProviderRole"]}
    ss = sub.submission_set
    assert ss.id == ss_id
    assert ss.unique_id == "2.25.194301908197721326796925171598754063498"
    assert ss.source_id == "2.16.756.5.30.1.139.1.1.11"
    assert ss.content_type_code.code == "71388002"
    (has_member,) = sub.associations
    assert (has_member.source, has_member.target, has_member.submission_set_status) == (ss_id, doc_id, "Original")
    # UUIDs already: nothing to assign
    assert assign_uuids(parsed) == {}
    assert entry.id == doc_id and entry.logical_id == doc_id


NIST = "iti-41/nist"


@pytest.mark.parametrize("relative, documents, folders, associations, ss_uid, doc_uids", [
    ("PnrXop/Xop/body.txt", 1, 0, 1, "1.42.20160705093311.7", ["1.42.20160705093311.6"]),
    ("PnrXop/NoXop/body.txt", 1, 0, 1, "1.42.20160705093311.7.8", ["1.42.20160705093311.6.5"]),
    ("PnrNoXop/submit/body.txt", 1, 0, 1, "1.42.20160705093311.7", ["1.42.20160705093311.6"]),
    ("ReposAcceptanceTest-1111/SubmitSingleDoc/single_doc.xml", 1, 0, 1, None, None),
    ("ReposAcceptanceTest-1111/SubmitRplc/single_doc.xml", 1, 0, 2, None, None),
    ("ReposAcceptanceTest-1113/SubmitTwoDocs/two_doc.xml", 2, 0, 2, None, None),
    ("ReposAcceptanceTest-1113/SubmitFolder/single_fol.xml", 0, 1, 1, "1.2.42.20181005.3.777.33", []),
    ("ReposAcceptanceTest-1113/SubmitFolderwDoc/fol_doc.xml", 1, 1, 4, "1.2.42.20181005.1504.1.777.100",
     ["1.2.42.20181005.1504.2.777.300"]),
    ("ReposAcceptanceTest-1113/AssociateNewDEwithExistingFolder/associate_fol.xml", 1, 0, 3,
     "1.2.42.20181005.1515.777.100", ["1.2.42.20181005.1515.777.200"]),
    ("ReposAcceptanceTest-1113/AssociateExistingDEwithExistingFolder/associate.xml", 0, 0, 2,
     "1.2.42.20181005.1521.777.100", []),
])
def test_nist_samples(relative, documents, folders, associations, ss_uid, doc_uids):
    """NIST XDS Toolkit ITI-41 tests whose ExpectedStatus is Success. The toolkit rewrites
    patient ids, uniqueIds and $vars$ before sending; read as they are, they are still sound
    ebRIM, and references such as "$fol_uuid$" are only the validator's business."""
    parsed = read_ok(sample(f"{NIST}/{relative}"))
    sub = parsed.submission
    assert (len(sub.documents), len(sub.folders), len(sub.associations)) == (documents, folders, associations)
    assert sub.submission_set is not None and sub.submission_set.source_id
    if ss_uid is not None:
        assert sub.submission_set.unique_id == ss_uid
    if doc_uids is not None:
        assert [d.unique_id for d in sub.documents] == doc_uids
    for entry in sub.documents:
        assert entry.patient_id == sub.submission_set.patient_id
        assert entry.class_code and entry.type_code and entry.format_code and entry.confidentiality_codes
        assert entry.healthcare_facility_type_code and entry.practice_setting_code
        assert entry.authors and entry.mime_type == "text/plain" and entry.object_type == STABLE
    assert set(parsed.elements) == {o.id for o in sub.objects()}


def test_nist_folder_with_document_details():
    parsed = read_ok(sample(f"{NIST}/ReposAcceptanceTest-1113/SubmitFolderwDoc/fol_doc.xml"))
    sub = parsed.submission
    (entry,) = sub.documents
    assert entry.patient_id == "P1005125143.2^^^&1.3.6.1.4.1.21367.13.20.1000&ISO"
    assert entry.event_codes == [Code("urn:connectathon:policy:deny-access", "1.3.6.1.4.1.21367.2017.3",
                                      "DENY ACCESS TO ALL POLICY")]
    assert [a.person for a in entry.authors] == ["^Smitty^Gerald^^^", "^Dopplemeyer^Sherry^^^"]
    assert entry.type_code == Code("11502-2", "2.16.840.1.113883.6.1", "Laboratory report.total")
    (fol,) = sub.folders
    assert (fol.id, fol.title, fol.comments) == ("myFolderId1", "FOLDER", "comments go here")
    assert fol.codes == [Code("Referrals", "1.3.6.1.4.1.21367.2017.3", "Referrals")]
    assert fol.unique_id == "1.2.42.20181005.1504.4.777.200"
    assert [(a.id, a.source, a.target, a.submission_set_status) for a in sub.associations] == [
        ("myAssocId1", "mySsId01", "myFolderId1", None),
        ("myAssocId4", "myFolderId1", "myDocId1", None),
        ("myAssocId2", "mySsId01", "myAssocId4", None),
        ("myAssocId3", "mySsId01", "myDocId1", "Original"),
    ]


def test_nist_replacement_keeps_its_target_placeholder():
    parsed = read_ok(sample(f"{NIST}/ReposAcceptanceTest-1111/SubmitRplc/single_doc.xml"))
    rplc = next(a for a in parsed.submission.associations if a.type == RPLC)
    assert (rplc.id, rplc.source, rplc.target) == ("myRplcAssocId", "myDocId1", "$original_doc_uuid$")


# --- assign_uuids -------------------------------------------------------------------------


def counter_uuids():
    numbers = itertools.count(1)
    return lambda: f"urn:uuid:00000000-0000-4000-8000-{next(numbers):012d}"


def test_assign_uuids_replaces_symbolic_ids_everywhere():
    request = minimal_request(folder(), association("a-fol", SS, "Folder01", status=None),
                              association("a-fol-doc", "Folder01", DE, status=None),
                              association("a-ss-fol-doc", SS, "a-fol-doc", status=None))
    add_slot(obj(request, DE), "urn:kagawa:consent", "opt-in")
    parsed = read_ok(request)
    mapping = assign_uuids(parsed, counter_uuids())

    old_ids = [DE, SS, HM, "Folder01", "a-fol", "a-fol-doc", "a-ss-fol-doc"]
    assert sorted(mapping) == sorted(old_ids)
    assert len(set(mapping.values())) == len(old_ids)
    assert all(UUID_RE.match(new) for new in mapping.values())

    sub = parsed.submission
    assert sub.documents[0].id == mapping[DE]
    assert sub.submission_set.id == mapping[SS]
    assert sub.folders[0].id == mapping["Folder01"]
    ends = {a.id: (a.source, a.target) for a in sub.associations}
    assert ends == {
        mapping[HM]: (mapping[SS], mapping[DE]),
        mapping["a-fol"]: (mapping[SS], mapping["Folder01"]),
        mapping["a-fol-doc"]: (mapping["Folder01"], mapping[DE]),
        mapping["a-ss-fol-doc"]: (mapping[SS], mapping["a-fol-doc"]),
    }
    assert list(parsed.elements) == [mapping[i] for i in (DE, SS, HM, *old_ids[3:])]
    assert parsed.extra == {mapping[DE]: ["urn:kagawa:consent"]}

    # the XML says the same as the model
    for object_id, element in parsed.elements.items():
        assert element.get("id") == object_id
        for part in element.iter(ns.rim("Classification"), ns.rim("ExternalIdentifier")):
            assert UUID_RE.match(part.get("id")), part.get("id")
            assert part.get("classifiedObject", part.get("registryObject")) == object_id
    for a in sub.associations:
        element = parsed.elements[a.id]
        assert (element.get("sourceObject"), element.get("targetObject")) == (a.source, a.target)
    text = b"".join(etree.tostring(e) for e in parsed.elements.values())
    for old in old_ids:
        assert f'"{old}"'.encode() not in text


def test_assign_uuids_first_version_gets_lid_equal_to_id():
    parsed = read_ok(minimal_request())
    mapping = assign_uuids(parsed, counter_uuids())
    entry = parsed.submission.documents[0]
    assert entry.logical_id == entry.id == mapping[DE]
    assert parsed.elements[entry.id].get("lid") == entry.id


def test_assign_uuids_keeps_uuids_and_references_outside_the_submission():
    de_uuid = "urn:uuid:5b4f2c5e-0f3c-4a8e-9e46-3c0a5e6f7a81"
    original = "urn:uuid:0f3a1c52-6a5e-4f43-9a44-4d0f1f4c2a11"
    lid = "urn:uuid:9c1d8f0e-2b7a-4e5f-8a3c-6d4e2f1a0b93"
    request = minimal_request(association("rplc", de_uuid, original, RPLC, None))
    de = obj(request, DE)
    for element in [de, *de]:
        for attribute in ("id", "classifiedObject", "registryObject"):
            if element.get(attribute) == DE:
                element.set(attribute, de_uuid)
    child(de, "Classification", id=f"{DE}-class").set("id", "urn:uuid:aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")
    de.set("lid", lid)
    obj(request, HM).set("targetObject", de_uuid)
    parsed = read_ok(request)
    mapping = assign_uuids(parsed, counter_uuids())
    assert set(mapping) == {SS, HM, "rplc"}
    entry = parsed.submission.documents[0]
    assert entry.id == de_uuid and entry.logical_id == lid
    element = parsed.elements[de_uuid]
    assert element.get("lid") == lid
    assert child(element, "Classification", classificationScheme=ns.DE_CLASS_CODE).get("id") == \
        "urn:uuid:aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    rplc = parsed.submission.associations[1]
    assert (rplc.source, rplc.target) == (de_uuid, original)
    assert parsed.elements[rplc.id].get("targetObject") == original


def test_assign_uuids_symbolic_lid_follows_its_object():
    request = minimal_request()
    obj(request, DE).set("lid", DE)
    parsed = read_ok(request)
    mapping = assign_uuids(parsed, counter_uuids())
    assert parsed.submission.documents[0].logical_id == mapping[DE]
    assert parsed.elements[mapping[DE]].get("lid") == mapping[DE]


def test_assign_uuids_gives_repeated_nested_ids_their_own_uuids():
    """NIST's two_doc.xml uses id_1 ... id_11 inside both of its documents."""
    parsed = read_ok(sample(f"{NIST}/ReposAcceptanceTest-1113/SubmitTwoDocs/two_doc.xml"))
    assign_uuids(parsed)
    nested = [part.get("id") for element in parsed.elements.values()
              for part in element.iter(ns.rim("Classification"), ns.rim("ExternalIdentifier"))]
    assert len(nested) == len(set(nested)) and all(UUID_RE.match(i) for i in nested)
    for entry in parsed.submission.documents:
        assert UUID_RE.match(entry.id) and entry.logical_id == entry.id


def test_new_uuids_are_random_version_4_uuids():
    import uuid

    from xds.ebrim.submission import _new_uuid

    made = [_new_uuid() for _ in range(1000)]
    assert len(set(made)) == 1000
    for urn in made:
        value = uuid.UUID(urn.removeprefix("urn:uuid:"))
        assert UUID_RE.match(urn) and value.version == 4 and value.variant == uuid.RFC_4122 and str(value) == urn[9:]


def test_assign_uuids_in_two_halves_xml_first():
    """The registry rewrites the XML before its write transaction (rewrite_xml, the model left
    alone so that errors still name the submitter's ids) and the model once it stores
    (rewrite_model): together they do what assign_uuids does."""
    request = minimal_request(folder(), association("a-fol", SS, "Folder01", status=None))
    parsed = read_ok(request)
    mapping = plan_uuids(parsed.submission, counter_uuids())
    assert sorted(mapping) == sorted([DE, SS, HM, "Folder01", "a-fol"])
    rewrite_xml(parsed.elements, parsed.submission, mapping, counter_uuids())
    assert parsed.submission.documents[0].id == DE and list(parsed.elements)[0] == DE  # the model: as sent
    assert parsed.elements[DE].get("id") == mapping[DE] == parsed.elements[DE].get("lid")
    assert parsed.elements[HM].get("sourceObject") == mapping[SS]
    rewrite_model(parsed, mapping)
    entry = parsed.submission.documents[0]
    assert entry.id == entry.logical_id == mapping[DE] and list(parsed.elements)[0] == mapping[DE]
    assert parsed.submission.associations[0].source == mapping[SS]


def test_assign_uuids_on_the_ipf_sample_moves_the_top_level_classification_along():
    parsed = read_ok(sample("iti-42/ipf/SubmitObjectsRequest_ebrs30.xml"))
    mapping = assign_uuids(parsed)
    package = parsed.elements[mapping["SubmissionSet01"]]
    node = next(c for c in package if c.get("classificationNode") == ns.SUBMISSION_SET_NODE)
    assert node.get("classifiedObject") == mapping["SubmissionSet01"]
    assert UUID_RE.match(node.get("id"))
    snapshot = parsed.submission.associations[1]
    assert snapshot.source == mapping["Document01"]
    assert snapshot.target == "urn:uuid:e0985823-dc50-45a5-a6c8-a11a829893bd"


@pytest.mark.parametrize("relative", [
    "iti-42/ipf/SubmitObjectsRequest_ebrs30.xml",
    f"{NIST}/ReposAcceptanceTest-1113/SubmitFolderwDoc/fol_doc.xml",
    f"{NIST}/PnrXop/Xop/body.txt",
])
def test_stored_elements_are_valid_ebrim_after_moving_and_assigning(relative):
    """Each element is stored on its own: with the loose SubmissionSet/Folder classifications
    moved in and UUIDs assigned it must still be valid against the OASIS rim.xsd."""
    schema_path = DATA / "schemas/xds-b/rim.xsd"
    if not schema_path.exists():
        pytest.skip(f"{schema_path} is missing")
    schema = etree.XMLSchema(etree.parse(str(schema_path)))
    parsed = read_ok(sample(relative))
    assign_uuids(parsed)
    for object_id, element in parsed.elements.items():
        alone = etree.fromstring(etree.tostring(element, with_tail=False))
        assert schema.validate(alone), (object_id, schema.error_log.last_error)
