"""One test per "ebRIM structure" rule of xds/rules.py, the rules `xds.ebrim.submission`
checks while reading a SubmitObjectsRequest (ITI TF-3 4.2.3, ebRIM 3.0).

Each test starts from the valid minimal request of test_ebrim_submission.py, breaks one thing,
and asserts that exactly that rule answers, at the right object, with a message that names
what is wrong."""

from __future__ import annotations

import copy
import re

import pytest
from lxml import etree

from xds.ebrim import ns
from xds.ebrim.submission import EBRIM_LENGTHS, SubmissionLimits, assign_uuids, read_submission
from xds.errors import XdsError
from xds.rules import RULES

from tests.test_ebrim_submission import (
    DE,
    HM,
    LCM,
    SS,
    add_slot,
    association,
    author,
    child,
    code,
    document_entry,
    external_id,
    folder,
    minimal_request,
    node_classification,
    obj,
    object_list,
    remove,
    rim,
    slot,
    submission_set,
)


def _pattern(message: str) -> re.Pattern[str]:
    """A rule's message template as a regular expression: literal text, any value per field."""
    parts = re.split(r"\{[a-z_]+\}", message)
    return re.compile("(.*?)".join(re.escape(p) for p in parts), re.DOTALL)


PATTERNS = {rule_id: _pattern(rule.message) for rule_id, rule in RULES.items()}


def rule_of(problem: XdsError) -> str:
    """The id of the rule an error comes from (its code and message template both fit)."""
    fits = [rule_id for rule_id, pattern in PATTERNS.items()
            if RULES[rule_id].code == problem.code and pattern.fullmatch(problem.context)]
    assert len(fits) == 1, (problem, fits)
    return fits[0]


def rules(request: etree._Element) -> list[str]:
    return [rule_of(e) for e in read_submission(request).errors]


def assert_rule(request: etree._Element, rule_id: str, location: str | None, *words: str) -> XdsError:
    """Reading `request` gives exactly one error, of rule `rule_id`, at `location`, whose
    codeContext names each of `words`."""
    problems = read_submission(request).errors
    assert [rule_of(p) for p in problems] == [rule_id], [str(p) for p in problems]
    (problem,) = problems
    assert problem.code == RULES[rule_id].code
    if location is not None:
        assert problem.location == location
    for word in words:
        assert word in problem.context, (word, problem.context)
    return problem


# --- the request ----------------------------------------------------------------------------


def test_request_not_submit_objects():
    request = etree.Element("{urn:ihe:iti:xds-b:2007}ProvideAndRegisterDocumentSetRequest",
                            nsmap={"xdsb": "urn:ihe:iti:xds-b:2007"})
    request.append(minimal_request())
    assert_rule(request, "request.not-submit-objects", "", "xdsb:ProvideAndRegisterDocumentSetRequest")


def test_request_not_submit_objects_ebrim_2_1():
    """An ebRIM 2.1 request (rs:SubmitObjectsRequest of XDS.a) is not an ebRIM 3.0 one."""
    request = etree.Element("{urn:oasis:names:tc:ebxml-regrep:registry:xsd:2.1}SubmitObjectsRequest")
    assert_rule(request, "request.not-submit-objects", "", "urn:oasis:names:tc:ebxml-regrep:registry:xsd:2.1")


def test_request_no_object_list():
    request = etree.Element(f"{{{LCM}}}SubmitObjectsRequest")
    assert_rule(request, "request.no-object-list", "")


def test_request_unknown_object():
    request = minimal_request(rim("ExternalLink", id="link01", externalURI="http://example.org"))
    assert_rule(request, "request.unknown-object", "link01", "rim:ExternalLink", "link01")


# --- the submission as a whole ------------------------------------------------------------


def test_submission_no_submission_set():
    request = minimal_request()
    remove(obj(request, SS))
    remove(obj(request, HM))
    assert_rule(request, "submission.no-submission-set", "")


def test_submission_many_submission_sets():
    request = minimal_request(submission_set("SubmissionSet02", "1.2.3.99"))
    problem = assert_rule(request, "submission.many-submission-sets", None, "2 SubmissionSets",
                          "SubmissionSet01", "SubmissionSet02")
    assert problem.location == "SubmissionSet02"
    parsed = read_submission(request)
    assert parsed.submission.submission_set.id == SS and "SubmissionSet02" not in parsed.elements


def test_package_unclassified():
    request = minimal_request(rim("RegistryPackage", id="Package01"))
    assert_rule(request, "package.unclassified", "Package01", "Package01")


def test_package_unclassified_submission_set_is_no_submission_set():
    request = minimal_request()
    remove(child(obj(request, SS), "Classification", classificationNode=ns.SUBMISSION_SET_NODE))
    assert rules(request) == ["package.unclassified", "submission.no-submission-set"]


def test_package_ambiguous():
    request = minimal_request()
    object_list(request).append(node_classification("as-folder", SS, ns.FOLDER_NODE))
    assert rules(request) == ["package.ambiguous", "submission.no-submission-set"]
    problem = read_submission(request).errors[0]
    assert problem.location == SS and "both as a SubmissionSet and as a Folder" in problem.context


# --- object ids -----------------------------------------------------------------------------


def test_object_missing_id():
    request = minimal_request(association("x", SS, DE))
    del obj(request, "x").attrib["id"]
    assert_rule(request, "object.missing-id", "", "rim:Association")


def test_object_duplicate_id():
    request = minimal_request(association(DE, SS, DE))
    problem = assert_rule(request, "object.duplicate-id", DE, DE)
    assert problem.context.count(DE) == 1


def test_object_bad_uuid():
    request = minimal_request(association("urn:uuid:not-a-uuid", SS, DE))
    assert_rule(request, "object.bad-uuid", "urn:uuid:not-a-uuid", "urn:uuid:not-a-uuid")


# ebRIM 3.0 IdentifiableType: every registry object has its own id, the Classifications and
# ExternalIdentifiers inside objects included (each is a RegistryObject), and ObjectRefs.

UUID_A = "urn:uuid:aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"


def test_object_duplicate_id_two_parts_of_one_object():
    request = minimal_request()
    child(obj(request, DE), "Classification", id=f"{DE}-conf").set("id", f"{DE}-class")
    assert_rule(request, "object.duplicate-id", f"{DE}-class", f"'{DE}-class'")


def test_object_duplicate_id_a_classification_copied_in_its_object():
    """The smallest input the fuzzer found: one Classification written twice."""
    request = minimal_request()
    author_element = child(obj(request, DE), "Classification", id=f"{DE}-author")
    author_element.addnext(copy.deepcopy(author_element))
    assert_rule(request, "object.duplicate-id", f"{DE}-author", f"{DE}-author")


def test_object_duplicate_id_a_part_with_the_id_of_an_object():
    request = minimal_request()
    child(obj(request, DE), "Classification", id=f"{DE}-class").set("id", SS)
    assert_rule(request, "object.duplicate-id", SS, SS)


def test_object_duplicate_id_a_loose_part_and_a_nested_one():
    request = minimal_request()
    object_list(request).append(node_classification(f"{DE}-class", SS))
    remove(child(obj(request, SS), "Classification", id=f"{SS}-node"))
    assert_rule(request, "object.duplicate-id", f"{DE}-class", f"{DE}-class")


@pytest.mark.parametrize("first, second", [(UUID_A, UUID_A), (DE, None)])
def test_object_duplicate_id_object_refs(first, second):
    """ObjectRefs name objects in the registry by their ids: one id once, and not the id of an
    object the submission creates."""
    request = minimal_request(rim("ObjectRef", id=first), *([rim("ObjectRef", id=second)] if second else []))
    assert_rule(request, "object.duplicate-id", first, first)


def test_a_part_id_repeated_in_another_object_is_given_its_own():
    """NIST's two_doc.xml gives id_1 ... to the parts of both its documents (the toolkit's
    AssignUuids makes each one UUID): accepted, and no id is stored twice."""
    request = minimal_request(document_entry("Document02", "1.2.392.200119.6.102.10.2"),
                              association("Association02", SS, "Document02"))
    for de_id in (DE, "Document02"):
        child(obj(request, de_id), "Classification", id=f"{de_id}-class").set("id", UUID_A)
    parsed = read_submission(request)
    assert parsed.errors == []
    assign_uuids(parsed)
    ids = [e.get("id") for element in parsed.elements.values() for e in element.iter() if e.get("id")]
    assert len(ids) == len(set(ids)) and UUID_A in ids


def test_object_bad_lid():
    request = minimal_request()
    obj(request, DE).set("lid", "urn:uuid:" + "9" * 300)
    problem = assert_rule(request, "object.bad-lid", DE, DE, "urn:uuid:999")
    assert len(problem.context) < 300  # the long value is not echoed whole


def test_a_uuid_lid_and_a_symbolic_lid_are_accepted():
    for lid in ("urn:uuid:9c1d8f0e-2b7a-4e5f-8a3c-6d4e2f1a0b93", "SomeSymbolicLid"):
        request = minimal_request()
        obj(request, DE).set("lid", lid)
        assert rules(request) == []


# --- bounds: objects and values per submission, ebRIM 3.0 lengths ---------------------------


def test_limit_objects():
    """The minimal request holds 18 registry objects: 3 objects, and inside them 10
    Classifications and 5 ExternalIdentifiers."""
    request = minimal_request()
    assert read_submission(request, SubmissionLimits(max_objects=18)).errors == []
    parsed = read_submission(request, SubmissionLimits(max_objects=17))
    assert [rule_of(p) for p in parsed.errors] == ["limit.objects"]
    assert "more than 17 registry objects" in parsed.errors[0].context
    assert "max_submission_objects" in parsed.errors[0].context
    assert parsed.over_limits and parsed.submission.documents == [] and parsed.elements == {}
    # a loose part (beside the objects, as IPF's sample sends the SubmissionSet's) counts once
    node = child(obj(request, SS), "Classification", id=f"{SS}-node")
    remove(node)
    object_list(request).append(node)
    assert read_submission(request).objects == 18


def test_limit_values():
    request = minimal_request()
    values = len(list(request.iter(ns.rim("Value"))))
    assert read_submission(request, SubmissionLimits(max_values=values)).errors == []
    parsed = read_submission(request, SubmissionLimits(max_values=values - 1))
    assert [rule_of(p) for p in parsed.errors] == ["limit.values"]
    assert f"more than {values - 1} values" in parsed.errors[0].context
    assert "max_submission_values" in parsed.errors[0].context
    assert parsed.over_limits and parsed.submission.documents == []


def _set_length(request, tag: str, attribute: str | None, n: int) -> str:
    """Give the first rim:`tag` of the DocumentEntry a value of n characters; returns the value."""
    value = ("x" * n) if tag != "ExtrinsicObject" else "text/" + "x" * (n - 5)
    element = obj(request, DE)
    if tag == "ExtrinsicObject":
        pass
    elif tag in ("VersionInfo", "ContentVersionInfo"):
        element = etree.SubElement(element, ns.rim(tag))
        if tag == "VersionInfo":  # Name, Description, VersionInfo come before Classifications
            element.getparent().remove(element)
            child(obj(request, DE), "Name").addnext(element)
    else:
        element = next(element.iter(ns.rim(tag)))
    if attribute is None:
        element.text = value
    else:
        element.set(attribute, value)
    return value


@pytest.mark.parametrize("length", EBRIM_LENGTHS, ids=lambda length: etree.QName(length.tag).localname)
def test_limit_length(length):
    """Each length rim.xsd gives a part of XDS metadata: at the limit accepted, one more
    refused with the part, the limit and its type named, the value not echoed whole."""
    tag = etree.QName(length.tag).localname
    request = minimal_request()
    _set_length(request, tag, length.attribute, length.limit)
    assert "limit.length" not in rules(request)

    request = minimal_request()
    value = _set_length(request, tag, length.attribute, length.limit + 1)
    parsed = read_submission(request)
    problems = [p for p in parsed.errors if rule_of(p) == "limit.length"]
    assert len(problems) == 1, [str(p) for p in parsed.errors]
    (problem,) = problems
    assert problem.location == DE and problem.code == "XDSRegistryMetadataError"
    for word in ("rim:ExtrinsicObject 'Document01'", f"{length.limit + 1} characters long",
                 f"at most {length.limit} ({length.type} in rim.xsd)"):
        assert word in problem.context, problem.context
    assert len(problem.context) < 400
    assert parsed.over_limits
    # what was read is a copy with the value cut: no message holds a long value whole
    if len(value) > 80:
        assert all(value not in p.context for p in parsed.errors)
    # the caller's request is left as it came (a repository may send it on to its registry)
    assert value in etree.tostring(request, encoding="unicode")


def test_limit_length_names_the_slot_of_a_value():
    request = minimal_request()
    add_slot(obj(request, DE), "urn:kagawa:note", "y" * 300)
    assert_rule(request, "limit.length", DE, "a value of the slot 'urn:kagawa:note'", "300 characters")


def test_limit_length_counts_a_value_split_by_a_comment():
    """A value is all its text: a comment in it does not hide 10 MB behind a short first piece."""
    request = minimal_request()
    value = next(obj(request, DE).iter(ns.rim("Value")))
    value.text = "2024"
    comment = etree.Comment("x")
    comment.tail = "1" * 300
    value.append(comment)
    assert_rule(request, "limit.length", DE, "304 characters long")


def test_limit_length_in_a_part_the_reader_does_not_read():
    """An unknown slot of an ExternalIdentifier is stored with its object: bounded too."""
    request = minimal_request()
    identifier = child(obj(request, DE), "ExternalIdentifier", id=f"{DE}-uid")
    identifier.insert(0, slot("x" * 257, "1"))
    assert_rule(request, "limit.length", DE, "the name of a slot", "257 characters")


def test_limit_length_ten_megabytes():
    """ITI-41 parses with huge_tree: a 10 MB slot value is refused, and not echoed."""
    request = minimal_request()
    add_slot(obj(request, DE), "urn:kagawa:note", "z" * 10_000_000)
    problem = assert_rule(request, "limit.length", DE, "10000000 characters long")
    assert len(problem.context) < 400
    # the model holds the value cut to its limit, for whatever reports on it after the reader
    (note,) = read_submission(request).submission.documents[0].extra_slots
    assert note.values == ["z" * 256]


def test_object_bad_uuid_in_a_nested_classification():
    request = minimal_request()
    child(obj(request, DE), "Classification", id=f"{DE}-class").set("id", "urn:uuid:1234")
    assert_rule(request, "object.bad-uuid", DE, "urn:uuid:1234")


def test_object_bad_reference_of_a_top_level_classification():
    """A top-level Classification must classify an object of this submission; the registry
    cannot put a classification into an object it already holds."""
    request = minimal_request(node_classification("stray", "urn:uuid:0f3a1c52-6a5e-4f43-9a44-4d0f1f4c2a11"))
    assert_rule(request, "object.bad-reference", "stray", "classifiedObject",
                "urn:uuid:0f3a1c52-6a5e-4f43-9a44-4d0f1f4c2a11")


def test_object_bad_reference_of_a_top_level_external_identifier():
    request = minimal_request(external_id("eid", ns.DE_UNIQUE_ID, "Nowhere01", "1.2.3"))
    assert_rule(request, "object.bad-reference", "eid", "registryObject", "Nowhere01")


# --- slots ----------------------------------------------------------------------------------


def test_slot_duplicate():
    request = minimal_request()
    add_slot(obj(request, DE), "creationTime", "20241231")
    assert_rule(request, "slot.duplicate", DE, "DocumentEntry", DE, "creationTime")
    # the first one counts
    assert read_submission(request).submission.documents[0].creation_time == "20241231"


def test_slot_duplicate_on_a_submission_set():
    request = minimal_request()
    add_slot(obj(request, SS), "submissionTime", "20241231")
    assert_rule(request, "slot.duplicate", SS, "SubmissionSet", "submissionTime")


def test_slot_duplicate_in_an_author():
    request = minimal_request()
    child(obj(request, DE), "Classification", id=f"{DE}-author").append(slot("authorRole", "Consultant"))
    assert_rule(request, "slot.duplicate", DE, "author classification", f"{DE}-author", "authorRole")


def test_slot_duplicate_author_specialty_in_both_spellings():
    request = minimal_request()
    author_element = child(obj(request, DE), "Classification", id=f"{DE}-author")
    author_element.append(slot("authorSpecialty", "Cardiology"))
    author_element.append(slot("authorSpeciality", "Cardiology"))
    assert_rule(request, "slot.duplicate", DE, "authorSpecialty")


def test_slot_single_value():
    request = minimal_request()
    remove(child(obj(request, DE), "Slot", name="hash"))
    add_slot(obj(request, DE), "hash", "da39a3ee5e6b4b0d3255bfef95601890afd80709", "00")
    assert_rule(request, "slot.single-value", DE, "DocumentEntry", "2 values", "'hash'")


def test_slot_single_value_uri_not_numbered():
    """Several URI values join only when each has its "n|" prefix."""
    request = minimal_request()
    add_slot(obj(request, DE), "URI", "1|http://a.example/", "http://b.example/")
    assert_rule(request, "slot.single-value", DE, "'URI'")


def test_slot_single_value_submission_set_status():
    request = minimal_request()
    status = child(obj(request, HM), "Slot", name="SubmissionSetStatus")
    etree.SubElement(status[0], ns.rim("Value")).text = "Reference"
    assert_rule(request, "slot.single-value", HM, "Association", "SubmissionSetStatus")


def test_slot_single_value_coded_attribute_twice():
    """classCode, typeCode, formatCode, healthcareFacilityTypeCode, practiceSettingCode and
    contentTypeCode take one classification each (ITI TF-3 4.2.3.2 / 4.2.3.3)."""
    request = minimal_request()
    obj(request, DE).append(code("class2", ns.DE_CLASS_CODE, DE, "11488-4", "2.16.840.1.113883.6.1",
                                 "Consult note"))
    assert_rule(request, "slot.single-value", DE, "2 values", "'classCode'")
    assert read_submission(request).submission.documents[0].class_code.code == "34133-9"


def test_slot_single_value_author_person():
    request = minimal_request()
    ss_author = child(obj(request, SS), "Classification", id=f"{SS}-author")
    remove(child(ss_author, "Slot", name="authorPerson"))
    add_slot(ss_author, "authorPerson", "^A^^^^", "^B^^^^")
    assert_rule(request, "slot.single-value", SS, "author classification", "authorPerson")


def test_slot_empty():
    request = minimal_request()
    add_slot(obj(request, DE), "URI")
    assert_rule(request, "slot.empty", DE, "DocumentEntry", "'URI'")


def test_slot_empty_in_an_author():
    request = minimal_request()
    child(obj(request, DE), "Classification", id=f"{DE}-author").append(slot("authorTelecommunication"))
    assert_rule(request, "slot.empty", DE, "author classification", "authorTelecommunication")


# --- classifications ------------------------------------------------------------------------


def _replace_code(request, cid: str, **parts) -> None:
    de = obj(request, DE)
    old = child(de, "Classification", id=cid)
    scheme = old.get("classificationScheme")
    values = dict(node="34133-9", coding_scheme="2.16.840.1.113883.6.1", display="Summary of episode note")
    values.update(parts)
    old.addnext(code(cid, scheme, DE, values["node"], values["coding_scheme"], values["display"]))
    remove(old)


def test_classification_no_node():
    request = minimal_request()
    _replace_code(request, f"{DE}-class", node=None)
    assert_rule(request, "classification.no-node", DE, "classCode", f"{DE}-class")
    assert read_submission(request).submission.documents[0].class_code is None


def test_classification_no_node_when_empty():
    request = minimal_request()
    _replace_code(request, f"{DE}-type", node="")
    assert_rule(request, "classification.no-node", DE, "typeCode")


def test_classification_no_scheme():
    request = minimal_request()
    _replace_code(request, f"{DE}-format", coding_scheme=None)
    assert_rule(request, "classification.no-scheme", DE, "formatCode", f"{DE}-format")
    assert read_submission(request).submission.documents[0].format_code is None


def test_classification_no_scheme_when_multi_valued():
    request = minimal_request()
    conf = child(obj(request, DE), "Classification", id=f"{DE}-conf")
    etree.SubElement(child(conf, "Slot", name="codingScheme")[0], ns.rim("Value")).text = "2.16.840.1.113883.5.26"
    assert_rule(request, "classification.no-scheme", DE, "confidentialityCode")


def test_classification_no_scheme_on_a_folder_code():
    request = minimal_request(folder(), association("a-fol", SS, "Folder01", status=None))
    fol = obj(request, "Folder01")
    remove(child(child(fol, "Classification", id="Folder01-code"), "Slot"))
    assert_rule(request, "classification.no-scheme", "Folder01", "Folder", "codeList")


def test_classification_no_name():
    request = minimal_request()
    _replace_code(request, f"{DE}-hcft", display=None)
    assert_rule(request, "classification.no-name", DE, "healthcareFacilityTypeCode", f"{DE}-hcft")
    # code and scheme are sound: the code stays
    assert read_submission(request).submission.documents[0].healthcare_facility_type_code.code == "34133-9"


def test_classification_no_name_on_content_type_code():
    request = minimal_request()
    ct = child(obj(request, SS), "Classification", id=f"{SS}-ct")
    remove(child(ct, "Name"))
    assert_rule(request, "classification.no-name", SS, "SubmissionSet", "contentTypeCode")


def test_classification_wrong_object():
    request = minimal_request(document_entry("Document02", "1.2.3.2"), association("hm2", SS, "Document02"))
    child(obj(request, DE), "Classification", id=f"{DE}-practice").set("classifiedObject", "Document02")
    assert_rule(request, "classification.wrong-object", DE, f"{DE}-practice", "Document02")


def test_classification_wrong_object_when_missing():
    request = minimal_request()
    del child(obj(request, SS), "Classification", id=f"{SS}-node").attrib["classifiedObject"]
    assert_rule(request, "classification.wrong-object", SS, f"{SS}-node")


def test_classification_author_empty():
    request = minimal_request()
    obj(request, DE).append(author("nobody", ns.DE_AUTHOR, DE, slot("authorNickname", "Hana")))
    assert_rule(request, "classification.author-empty", DE, "DocumentEntry", "nobody")
    assert len(read_submission(request).submission.documents[0].authors) == 1


def test_classification_author_empty_on_a_submission_set():
    request = minimal_request()
    obj(request, SS).append(author("nobody", ns.SS_AUTHOR, SS))
    assert_rule(request, "classification.author-empty", SS, "SubmissionSet", "nobody")


# --- external identifiers -------------------------------------------------------------------


def test_external_id_duplicate():
    request = minimal_request()
    obj(request, DE).append(external_id("uid2", ns.DE_UNIQUE_ID, DE, "1.2.3.4"))
    assert_rule(request, "external-id.duplicate", DE, "DocumentEntry", "uniqueId")


def test_external_id_duplicate_patient_id_of_a_submission_set():
    request = minimal_request()
    obj(request, SS).append(external_id("pid2", ns.SS_PATIENT_ID, SS, "X^^^&1.2.3&ISO"))
    assert_rule(request, "external-id.duplicate", SS, "SubmissionSet", "patientId")


def test_external_id_wrong_object():
    request = minimal_request()
    child(obj(request, SS), "ExternalIdentifier", id=f"{SS}-src").set("registryObject", DE)
    assert_rule(request, "external-id.wrong-object", SS, f"{SS}-src", "SubmissionSet.sourceId", DE)


def test_external_id_no_value():
    request = minimal_request()
    del child(obj(request, DE), "ExternalIdentifier", id=f"{DE}-pid").attrib["value"]
    assert_rule(request, "external-id.no-value", DE, "DocumentEntry", "patientId")
    assert read_submission(request).submission.documents[0].patient_id is None


def test_external_id_no_value_when_blank():
    request = minimal_request(folder(), association("a-fol", SS, "Folder01", status=None))
    child(obj(request, "Folder01"), "ExternalIdentifier", id="Folder01-uid").set("value", "  ")
    assert_rule(request, "external-id.no-value", "Folder01", "Folder", "uniqueId")


# --- every error at once ------------------------------------------------------------------


def test_every_structural_error_is_reported_not_only_the_first():
    request = minimal_request()
    add_slot(obj(request, DE), "creationTime", "20241231")
    _replace_code(request, f"{DE}-class", node=None)
    obj(request, SS).append(external_id("uid2", ns.SS_UNIQUE_ID, SS, "1.2.3.4"))
    assert sorted(rules(request)) == ["classification.no-node", "external-id.duplicate", "slot.duplicate"]
