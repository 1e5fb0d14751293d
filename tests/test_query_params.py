"""Reading an AdhocQueryRequest (xds.registry.query_params), no database: the value syntax of
ITI TF-2 3.18.4.1.2.3, each parameter kind, and every request error with its XDS code,
location (the parameter) and a codeContext that names the parameter and the value."""

from __future__ import annotations

import pytest
from lxml import etree

from tests import queries as q
from xds.ebrim import ns
from xds.ebrim.query_request import adhoc_query_request, quote, quote_list
from xds.registry import stored_query
from xds.registry.query_params import QueryLimits, _parse, _SyntaxError, code_key, read_query_request
from xds.rules import RULES

PID = "P1^^^&1.2.3&ISO"
FIND = [("$XDSDocumentEntryPatientId", quote(PID)), q.APPROVED_DOCUMENTS]


def read(name: str, *slots: tuple[str, str], return_type: str = "LeafClass"):
    return read_query_request(q.request(name, *slots, return_type=return_type))


def params(name: str, *slots: tuple[str, str]) -> dict:
    call, errors = read(name, *slots)
    assert errors == [], errors
    return call.params


def only_error(name: str, *slots: tuple[str, str], return_type: str = "LeafClass"):
    call, errors = read(name, *slots, return_type=return_type)
    assert call is None
    assert len(errors) == 1, errors
    return errors[0]


def assert_rule(problem, rule_id: str, *words: str) -> None:
    assert problem.code == RULES[rule_id].code, problem
    for word in words:
        assert word in problem.context, (word, problem.context)


# --- the table -------------------------------------------------------------------------------


def test_the_fourteen_stored_queries_by_id():
    ids = {
        "FindDocuments": "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d",
        "FindDocumentsByReferenceId": "urn:uuid:12941a89-e02e-4be5-967c-ce4bfc8fe492",
        "FindSubmissionSets": "urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9",
        "FindFolders": "urn:uuid:958f3006-baad-4929-a4de-ff1114824431",
        "GetAll": "urn:uuid:10b545ea-725c-446d-9b95-8aeb444eddf3",
        "GetDocuments": "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4",
        "GetFolders": "urn:uuid:5737b14c-8a1a-4539-b659-e03a34a5e1e4",
        "GetAssociations": "urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155",
        "GetDocumentsAndAssociations": "urn:uuid:bab9529a-4a10-40b3-a01f-f68a615d247a",
        "GetSubmissionSets": "urn:uuid:51224314-5390-4169-9b91-b1980040715a",
        "GetSubmissionSetAndContents": "urn:uuid:e8e3cb2c-e39c-46b9-99e4-c12f57260b83",
        "GetFolderAndContents": "urn:uuid:b909a503-523d-4517-8acf-8e5834dfc4c7",
        "GetFoldersForDocument": "urn:uuid:10cae35a-c7f9-4cf5-b61e-fc3278ffb578",
        "GetRelatedDocuments": "urn:uuid:d90e5407-b356-4d91-a89f-873917b4b0e6",
    }
    assert {query.name: query.id for query in stored_query.QUERIES} == ids
    assert stored_query.lookup("finddocuments").name == "FindDocuments"
    assert stored_query.lookup("14d4debf-8f97-4251-9a74-a90016b0af0d").name == "FindDocuments"
    assert stored_query.lookup("FindEverything") is None


# --- value syntax (ITI TF-2 3.18.4.1.2.3) --------------------------------------------------------


@pytest.mark.parametrize("text, values", [
    ("'a'", ["a"]),
    ("('a')", ["a"]),
    ("('a','b')", ["a", "b"]),
    ("( 'a' , 'b' )", ["a", "b"]),
    ("('a') ('b')", ["a", "b"]),  # a list over two rim:Value elements, joined
    ("'O''Neil'", ["O'Neil"]),  # a quote inside a string is doubled
    ("20041224", ["20041224"]),
    ("('a,b', 'c)')", ["a,b", "c)"]),
])
def test_value_syntax(text, values):
    assert [t.text for t in _parse(text)] == values


@pytest.mark.parametrize("text", ["('a'", "'a", "('a',)", "(,'a')", "('a' 'b')", "'a'b", "()", "(('a'))", "'a')"])
def test_malformed_values(text):
    with pytest.raises(_SyntaxError):
        _parse(text)


def test_a_list_spread_over_several_values_of_one_slot():
    request = adhoc_query_request(q.query_id("FindDocuments"), [
        ("$XDSDocumentEntryPatientId", [quote(PID)]),
        ("$XDSDocumentEntryStatus", [f"('{q.APPROVED}',", f"'{q.DEPRECATED}')"]),
    ])
    call, errors = read_query_request(request)
    assert errors == []
    assert call.params["$XDSDocumentEntryStatus"] == [q.APPROVED, q.DEPRECATED]


def test_a_multi_valued_parameter_in_two_slots_is_refused():
    # ebRIM gives each Slot its own name; ITI TF-2 repeats only the AND/OR parameters (AND).
    problem = only_error("FindDocuments", *FIND, ("$XDSDocumentEntryClassCode", "('a^^^1')"),
                         ("$XDSDocumentEntryClassCode", "('b^^^2', 'c^^^3')"))
    assert_rule(problem, "query.repeated-param", "$XDSDocumentEntryClassCode", "2 slots", "('a','b')")
    assert problem.code == "XDSStoredQueryParamNumber" and problem.location == "$XDSDocumentEntryClassCode"
    # The same for the required status list, even when both slots say the same.
    problem = only_error("FindDocuments", *FIND, q.APPROVED_DOCUMENTS)
    assert_rule(problem, "query.repeated-param", "$XDSDocumentEntryStatus")


def test_and_or_parameters_keep_one_list_per_slot():
    p = params("FindDocuments", *FIND, ("$XDSDocumentEntryEventCodeList", "('a^^^1', 'b^^^1')"),
               ("$XDSDocumentEntryEventCodeList", "('c^^^1')"),
               ("$XDSDocumentEntryConfidentialityCode", "('N^^^2')"))
    assert p["$XDSDocumentEntryEventCodeList"] == [["a^^^1", "b^^^1"], ["c^^^1"]]
    assert p["$XDSDocumentEntryConfidentialityCode"] == [["N^^^2"]]


@pytest.mark.parametrize("value, key", [
    ("34133-9^^^2.16.840.1.113883.6.1", "34133-9^^^2.16.840.1.113883.6.1"),
    ("34133-9^^2.16.840.1.113883.6.1", "34133-9^^^2.16.840.1.113883.6.1"),  # NIST toolkit / IPF form
    ("a^^", None), ("^^^b", None), ("a", None), ("a^x^b", None), ("a^^^^b", None),
])
def test_code_forms(value, key):
    assert code_key(value) == key


def test_times_are_padded_and_may_be_quoted():
    p = params("FindDocuments", *FIND, ("$XDSDocumentEntryCreationTimeFrom", "2004"),
               ("$XDSDocumentEntryCreationTimeTo", "'20050101'"))
    assert p["$XDSDocumentEntryCreationTimeFrom"] == "20040000000000"
    assert p["$XDSDocumentEntryCreationTimeTo"] == "20050101000000"


def test_document_type_defaults_to_stable_only():
    assert params("FindDocuments", *FIND)["$XDSDocumentEntryType"] == [q.STABLE]
    p = params("FindDocuments", *FIND, ("$XDSDocumentEntryType", quote_list([q.STABLE, q.ON_DEMAND])))
    assert p["$XDSDocumentEntryType"] == [q.STABLE, q.ON_DEMAND]


def test_parameters_the_query_does_not_take_are_ignored():
    # ebRS 3.0 6.3.2.1: "A registry MUST ignore any parameters ... that do not match".
    p = params("FindDocuments", *FIND, ("$XDSFolderCodeList", "garbage"), ("$Whatever", "'x'"))
    assert "$XDSFolderCodeList" not in p and "$Whatever" not in p


def test_home_community_id_is_read_from_the_parameter_or_the_home_attribute():
    call, _ = read("GetDocuments", ("$XDSDocumentEntryUniqueId", "('1.2.3')"), ("$homeCommunityId", "'urn:oid:1.2.9'"))
    assert call.home == "urn:oid:1.2.9"
    request = adhoc_query_request(q.query_id("GetDocuments"), [("$XDSDocumentEntryUniqueId", ["('1.2.3')"])],
                                  home="urn:oid:1.2.8")
    assert read_query_request(request)[0].home == "urn:oid:1.2.8"


def test_metadata_level_1_is_accepted():
    assert params("FindDocuments", *FIND, ("$MetadataLevel", "1"))["$MetadataLevel"] == 1


# --- errors, one per rule ---------------------------------------------------------------------------


def test_a_body_that_is_not_an_adhoc_query_request():
    element = etree.fromstring(f'<lcm:SubmitObjectsRequest xmlns:lcm="{ns.LCM}"/>')
    call, errors = read_query_request(element)
    assert_rule(errors[0], "query.not-adhoc-query", "SubmitObjectsRequest")


def test_a_request_without_adhoc_query():
    element = etree.fromstring(f'<query:AdhocQueryRequest xmlns:query="{ns.QUERY}"/>')
    assert_rule(read_query_request(element)[1][0], "query.no-adhoc-query")


def test_unknown_stored_query():
    problem = only_error("urn:uuid:00000000-0000-0000-0000-000000000000")
    assert_rule(problem, "query.unknown", "urn:uuid:00000000-0000-0000-0000-000000000000")
    assert problem.code == "XDSUnknownStoredQuery"


@pytest.mark.parametrize("return_type", ["RegistryObject", "leafclass", ""])
def test_unsupported_return_type(return_type):
    assert_rule(only_error("FindDocuments", *FIND, return_type=return_type), "query.bad-return-type", "LeafClass")


def test_missing_required_parameter():
    problem = only_error("FindDocuments", ("$XDSDocumentEntryPatientId", quote(PID)))
    assert_rule(problem, "query.missing-param", "FindDocuments", "$XDSDocumentEntryStatus")
    assert problem.code == "XDSStoredQueryMissingParam" and problem.location == "$XDSDocumentEntryStatus"


def test_every_missing_parameter_is_reported():
    _, errors = read("GetAll")
    assert sorted(e.location for e in errors) == sorted(
        ["$patientId", "$XDSDocumentEntryStatus", "$XDSSubmissionSetStatus", "$XDSFolderStatus"])


def test_neither_of_two_alternative_parameters():
    problem = only_error("GetDocuments", ("$homeCommunityId", "'urn:oid:1.2.3'"))
    assert_rule(problem, "query.missing-one-of", "$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId")
    assert problem.code == "XDSStoredQueryMissingParam"


def test_both_of_two_exclusive_parameters():
    problem = only_error("GetFolderAndContents", ("$XDSFolderEntryUUID", "'urn:uuid:1'"),
                         ("$XDSFolderUniqueId", "'1.2.3'"))
    assert_rule(problem, "query.exclusive-params", "$XDSFolderEntryUUID", "$XDSFolderUniqueId")
    assert problem.code == "XDSStoredQueryParamNumber"


def test_several_values_for_a_single_valued_parameter():
    problem = only_error("FindDocuments", ("$XDSDocumentEntryPatientId", quote_list([PID, "P2^^^&1.2.3&ISO"])),
                         q.APPROVED_DOCUMENTS)
    assert_rule(problem, "query.param-number", "$XDSDocumentEntryPatientId", "2 values", "P2^^^")
    assert problem.code == "XDSStoredQueryParamNumber"


def test_a_single_valued_parameter_in_two_slots():
    problem = only_error("FindDocuments", *FIND, ("$XDSDocumentEntryCreationTimeFrom", "2004"),
                         ("$XDSDocumentEntryCreationTimeFrom", "2005"))
    assert_rule(problem, "query.param-number", "$XDSDocumentEntryCreationTimeFrom", "2 slots")


def test_a_single_value_in_a_list_is_accepted_for_a_single_valued_parameter():
    assert params("GetFolderAndContents", ("$XDSFolderEntryUUID", "('urn:uuid:1')"))["$XDSFolderEntryUUID"] == "urn:uuid:1"


@pytest.mark.parametrize("value, reason", [
    ("P1^^^&1.2.3&ISO", "single quotes"),  # a string without quotes
    ("'P1^^^&1.2.3&ISO", "not closed"),
    ("", "no value"),
])
def test_unreadable_values(value, reason):
    problem = only_error("FindDocuments", ("$XDSDocumentEntryPatientId", value), q.APPROVED_DOCUMENTS)
    assert_rule(problem, "query.bad-value", "$XDSDocumentEntryPatientId", reason)
    assert problem.code == "XDSRegistryError" and problem.location == "$XDSDocumentEntryPatientId"


def test_metadata_level_must_be_a_number():
    assert_rule(only_error("FindDocuments", *FIND, ("$MetadataLevel", "'one'")), "query.bad-value", "whole number")


@pytest.mark.parametrize("code", ["a^^", "DEMO-Lab", "^^^2.16.840.1.113883.6.1", "a^b^c"])
def test_bad_code(code):
    problem = only_error("FindDocuments", *FIND, ("$XDSDocumentEntryClassCode", quote_list([code])))
    assert_rule(problem, "query.bad-code", "$XDSDocumentEntryClassCode", code)


@pytest.mark.parametrize("time, reason", [("20041332", "month"), ("2004-12-24", "digits"), ("200412241", "digits"),
                                          ("'yesterday'", "digits")])
def test_bad_time(time, reason):
    problem = only_error("FindDocuments", *FIND, ("$XDSDocumentEntryCreationTimeFrom", time))
    assert_rule(problem, "query.bad-time", "$XDSDocumentEntryCreationTimeFrom", reason)


def test_bad_status():
    problem = only_error("FindDocuments", ("$XDSDocumentEntryPatientId", quote(PID)),
                         ("$XDSDocumentEntryStatus", "('Approved')"))
    assert_rule(problem, "query.bad-status", "'Approved'")


def test_bad_document_type():
    problem = only_error("FindDocuments", *FIND, ("$XDSDocumentEntryType", "('stable')"))
    assert_rule(problem, "query.bad-document-type", "'stable'")


def test_bad_association_type():
    problem = only_error("GetRelatedDocuments", ("$XDSDocumentEntryUniqueId", "'1.2.3'"), ("$AssociationTypes", "('RPLC')"))
    assert_rule(problem, "query.bad-association-type", "'RPLC'")


def test_metadata_level_2_is_accepted_and_3_is_not():
    # Levels 1 and 2 (the Metadata Update option's); xds.registry.find answers each.
    assert params("FindDocuments", *FIND, ("$MetadataLevel", "2"))["$MetadataLevel"] == 2
    problem = only_error("FindDocuments", *FIND, ("$MetadataLevel", "3"))
    assert_rule(problem, "query.metadata-level", "3", "every version")
    assert problem.code == "XDSRegistryError"


def test_all_errors_of_a_request_at_once():
    _, errors = read("FindDocuments", ("$XDSDocumentEntryStatus", "('Approved')"),
                     ("$XDSDocumentEntryClassCode", "('a^^')"), ("$XDSDocumentEntryCreationTimeTo", "2004133"))
    assert sorted(e.code for e in errors) == ["XDSRegistryError"] * 3 + ["XDSStoredQueryMissingParam"]


# --- what the standard refuses: a Slot's one ValueList, xs:boolean (ITI-18, issue 15) ---------------


def test_a_slot_with_two_value_lists():
    request = q.request("FindDocuments", *FIND)
    slot = request.find(f"{ns.rim('AdhocQuery')}/{ns.rim('Slot')}")
    etree.SubElement(etree.SubElement(slot, ns.rim("ValueList")), ns.rim("Value")).text = quote("P2^^^&1.2.3&ISO")
    call, errors = read_query_request(request)
    assert call is None and len(errors) == 1
    assert_rule(errors[0], "query.slot-value-lists", "$XDSDocumentEntryPatientId", "2 rim:ValueList")
    assert errors[0].code == "XDSRegistryError" and errors[0].location == "$XDSDocumentEntryPatientId"


@pytest.mark.parametrize("value", ["maybe", "True", "yes", ""])
def test_return_composed_objects_must_be_a_boolean(value):
    request = q.request("FindDocuments", *FIND)
    request[0].set("returnComposedObjects", value)
    call, errors = read_query_request(request)
    assert call is None and len(errors) == 1
    assert_rule(errors[0], "query.bad-return-composed-objects", repr(value)[1:-1] if value else "''")
    assert errors[0].code == "XDSRegistryError" and errors[0].location == "returnComposedObjects"


@pytest.mark.parametrize("value", ["true", "false", "1", "0", " true\n"])
def test_return_composed_objects_takes_every_boolean_form(value):
    request = q.request("FindDocuments", *FIND)
    request[0].set("returnComposedObjects", value)
    assert read_query_request(request)[1] == []
    del request[0].attrib["returnComposedObjects"]  # optional (default false)
    assert read_query_request(request)[1] == []


# --- limits: values per parameter, per query, and terms (issue 15) ------------------------------------

SMALL = QueryLimits(parameter_values=2, values=10, terms=2)


def limited(name: str, *slots: tuple[str, str], limits: QueryLimits = SMALL):
    return read_query_request(q.request(name, *slots), limits)


def codes(n: int, start: int = 0) -> str:
    return quote_list([f"c{i}^^^1.2.3" for i in range(start, start + n)])


def test_a_parameter_carries_at_most_its_limit_of_values():
    call, errors = limited("FindDocuments", *FIND, ("$XDSDocumentEntryClassCode", codes(2)))
    assert errors == [] and len(call.params["$XDSDocumentEntryClassCode"]) == 2
    call, errors = limited("FindDocuments", *FIND, ("$XDSDocumentEntryClassCode", codes(3)))
    assert call is None and len(errors) == 1
    assert_rule(errors[0], "query.too-many-values", "$XDSDocumentEntryClassCode", "more than 2 values",
                "max_query_parameter_values")
    assert errors[0].code == "XDSStoredQueryParamNumber" and errors[0].location == "$XDSDocumentEntryClassCode"


def test_the_values_of_an_and_or_parameter_count_over_all_its_slots():
    call, errors = limited("FindDocuments", *FIND, ("$XDSDocumentEntryEventCodeList", codes(1)),
                           ("$XDSDocumentEntryEventCodeList", codes(2, 1)))
    assert_rule(errors[0], "query.too-many-values", "$XDSDocumentEntryEventCodeList", "more than 2")


def test_the_default_limit_is_ten_thousand_values():
    assert QueryLimits().parameter_values == 10000
    ids = [f"urn:uuid:{i:08d}-0000-4000-8000-000000000000" for i in range(10001)]
    call, errors = read("GetDocuments", ("$XDSDocumentEntryEntryUUID", quote_list(ids[:10000])))
    assert errors == [] and len(call.params["$XDSDocumentEntryEntryUUID"]) == 10000
    assert_rule(only_error("GetDocuments", ("$XDSDocumentEntryEntryUUID", quote_list(ids))), "query.too-many-values",
                "more than 10000")


def test_reading_stops_at_the_first_value_past_the_limit():
    # A malformed tail after the limit is not read: the request is refused for its size first.
    assert len(_parse("'a','b','c',", limit=1)) == 2
    call, errors = limited("FindDocuments", *FIND, ("$XDSDocumentEntryClassCode", "('a^^^1','b^^^1','c^^^1',"))
    assert [e.code for e in errors] == ["XDSStoredQueryParamNumber"]


def test_a_query_carries_at_most_its_limit_of_values():
    call, errors = limited("FindDocuments", ("$XDSDocumentEntryPatientId", quote(PID)),
                           ("$XDSDocumentEntryStatus", quote_list([q.APPROVED])),
                           ("$XDSDocumentEntryClassCode", codes(2)), limits=QueryLimits(values=4))
    assert errors == []  # 1 + 1 + 2 values; the defaulted $XDSDocumentEntryType was not sent
    call, errors = limited("FindDocuments", ("$XDSDocumentEntryPatientId", quote(PID)),
                           ("$XDSDocumentEntryStatus", quote_list([q.APPROVED])),
                           ("$XDSDocumentEntryClassCode", codes(2)), ("$XDSDocumentEntryTypeCode", codes(1)),
                           limits=QueryLimits(values=4))
    assert call is None and len(errors) == 1
    assert_rule(errors[0], "query.too-many-values-in-query", "FindDocuments", "5 values in all", "more than the 4",
                "$XDSDocumentEntryClassCode 2", "max_query_values")
    assert errors[0].code == "XDSStoredQueryParamNumber"


def test_code_slots_and_author_patterns_are_terms():
    and_slots = [("$XDSDocumentEntryEventCodeList", codes(1, i)) for i in range(3)]
    call, errors = limited("FindDocuments", *FIND, *and_slots, limits=QueryLimits(terms=2))
    assert call is None and len(errors) == 1
    assert_rule(errors[0], "query.too-many-terms", "FindDocuments", "3 terms", "more than the 2", "max_query_terms")
    assert errors[0].code == "XDSStoredQueryParamNumber"
    assert limited("FindDocuments", *FIND, *and_slots[:2], limits=QueryLimits(terms=2))[1] == []
    # A list of codes in one slot is one term however long.
    assert limited("FindDocuments", *FIND, ("$XDSDocumentEntryEventCodeList", codes(100)),
                   limits=QueryLimits(terms=1))[1] == []
    patterns = ("$XDSDocumentEntryAuthorPerson", quote_list(["%Sato%", "%Suzuki%", "%Takahashi%"]))
    assert_rule(limited("FindDocuments", *FIND, patterns, limits=QueryLimits(terms=2))[1][0], "query.too-many-terms")
    # Every code parameter is a term: two single ones and an AND/OR one of one slot are 3.
    three = [("$XDSDocumentEntryClassCode", codes(5)), ("$XDSDocumentEntryTypeCode", codes(5)), and_slots[0]]
    assert_rule(limited("FindDocuments", *FIND, *three, limits=QueryLimits(terms=2))[1][0], "query.too-many-terms",
                "3 terms")
    assert QueryLimits().terms == 16
