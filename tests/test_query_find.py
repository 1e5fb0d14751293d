"""FindDocuments, FindDocumentsByReferenceId, FindSubmissionSets and FindFolders (ITI TF-2
3.18.4.1.2.3.7.1-3, .14) on SQLite and PostgreSQL, one test per parameter semantic, with the
data registered through the real ITI-42 step."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests import queries as q
from tests import submissions as s
from tests.queries import find_documents, quote, quote_list, register
from sqlalchemy import select

from xds.registry import find, service
from xds.store.tables import DocumentEntryRow


@pytest.fixture
def stored(registry):
    return service.stored_query_for(registry)


def doc(symbol: str, **kw) -> str:
    return s.document(symbol, s.new_oid(), **kw)


def codes(*values: tuple[str, str, str]) -> str:
    return quote_list([s.key(v) for v in values])


# --- patient, status, return type -----------------------------------------------------------


def test_find_documents_by_patient(registry, stored):
    mine = register(registry, doc("a"), doc("b"))
    theirs = register(registry, doc("c", patient=s.OTHER_PATIENT), patient=s.OTHER_PATIENT)
    assert find_documents(stored).kind("ObjectRef") == {mine["a"], mine["b"]}
    assert find_documents(stored, patient=s.OTHER_PATIENT).kind("ObjectRef") == {theirs["c"]}
    assert find_documents(stored, patient="NOBODY^^^&1.2.3&ISO").ids == []


def test_the_statements_of_a_shape_answer_each_patient_with_their_own(registry, stored):
    """`find.load` keeps the statements built for a request's shape (all but its subject) and
    runs the same ones for the next patient, who still gets only their own documents."""
    find._shapes.clear()
    mine = register(registry, doc("a"))
    theirs = register(registry, doc("c", patient=s.OTHER_PATIENT), patient=s.OTHER_PATIENT)
    assert find_documents(stored, return_type="LeafClass").kind("DocumentEntry") == {mine["a"]}
    kept = {shape: dict(statements) for shape, statements in find._shapes.items()}
    assert [shape[0] for shape in kept] == ["FindDocuments"]
    assert find_documents(stored, patient=s.OTHER_PATIENT, return_type="LeafClass").kind("DocumentEntry") == {theirs["c"]}
    assert find_documents(stored, return_type="LeafClass").kind("DocumentEntry") == {mine["a"]}
    assert {shape: dict(statements) for shape, statements in find._shapes.items()} == kept  # the same objects


def test_a_statement_holding_its_subject_outside_the_subject_bind_is_not_kept():
    D = DocumentEntryRow
    bound = select(D.entry_uuid).where(find.equals(D.entry_uuid, find.Subject("urn:uuid:1")))
    inline = select(D.entry_uuid).where(D.entry_uuid.in_(["urn:uuid:1"]))
    assert find._subject_only_in_its_bind([bound, None], "urn:uuid:1")
    assert not find._subject_only_in_its_bind([bound, inline], "urn:uuid:1")


def test_leaf_class_answers_with_the_stored_objects(registry, stored):
    r = register(registry, doc("a", title="Discharge letter"))
    answer = find_documents(stored, return_type="LeafClass")
    assert answer.status == "Success"
    assert answer.kind("DocumentEntry") == {r["a"]}
    element = answer.element_of(r["a"])
    assert element.find(f"{{{q.ns.RIM}}}Name")[0].get("value") == "Discharge letter"
    assert element.get("status") == q.APPROVED


def test_replaced_documents_are_deprecated(registry, stored):
    first = register(registry, doc("old"))
    second = register(registry, doc("new"), s.association("r", "RPLC", "new", first["old"]))
    assert find_documents(stored).ids == [second["new"]]
    deprecated = ("$XDSDocumentEntryStatus", quote_list([q.DEPRECATED]))
    assert find_documents(stored, status=deprecated).ids == [first["old"]]
    both = ("$XDSDocumentEntryStatus", quote_list([q.APPROVED, q.DEPRECATED]))
    answer = find_documents(stored, status=both, return_type="LeafClass")
    assert answer.kind("DocumentEntry") == {first["old"], second["new"]}
    # The stored XML said Approved; the answer says what the document is now.
    assert answer.element_of(first["old"]).get("status") == q.DEPRECATED
    assert answer.element_of(second["new"]).get("status") == q.APPROVED


def test_on_demand_entries_only_when_asked_for(registry, stored):
    r = register(registry, doc("stable"), doc("od", on_demand=True, service_start=None, service_stop=None))
    assert find_documents(stored).ids == [r["stable"]]
    on_demand = ("$XDSDocumentEntryType", quote_list([q.ON_DEMAND]))
    assert find_documents(stored, on_demand).ids == [r["od"]]
    both = ("$XDSDocumentEntryType", quote_list([q.STABLE, q.ON_DEMAND]))
    assert find_documents(stored, both).kind("ObjectRef") == {r["stable"], r["od"]}


# --- time ranges: From inclusive, To exclusive, any precision ----------------------------------


@pytest.fixture
def times(registry):
    """Documents created at times of every precision around 2004-12-24."""
    return register(
        registry,
        doc("year", creation_time="2004"),
        doc("day", creation_time="20041224"),
        doc("hour", creation_time="2004122410"),
        doc("second", creation_time="20041224103000"),
        doc("next_year", creation_time="2005"),
    )


def created(stored, start: str | None = None, stop: str | None = None) -> set[str]:
    slots = []
    if start is not None:
        slots.append(("$XDSDocumentEntryCreationTimeFrom", start))
    if stop is not None:
        slots.append(("$XDSDocumentEntryCreationTimeTo", stop))
    return find_documents(stored, *slots).kind("ObjectRef")


def test_creation_time_from_is_inclusive(times, stored):
    assert created(stored, "20041224103000") == {times["second"], times["next_year"]}
    assert created(stored, "20041224") == {times[k] for k in ("day", "hour", "second", "next_year")}


def test_creation_time_to_is_exclusive(times, stored):
    assert created(stored, stop="20041224103000") == {times[k] for k in ("year", "day", "hour")}
    assert created(stored, stop="20041224") == {times["year"]}


def test_creation_time_range_of_one_second(times, stored):
    assert created(stored, "20041224103000", "20041224103001") == {times["second"]}


def test_a_lower_precision_time_stands_for_the_start_of_its_period(times, stored):
    # Stored 2004 is 20040000000000: before To 2004-06 (so found), before From 2004-06 (so not).
    assert times["year"] in created(stored, stop="200406")
    assert times["year"] not in created(stored, "200406")
    # A query time of lower precision is the start of its period too: To 2005 excludes all of 2005.
    assert times["next_year"] not in created(stored, stop="2005")
    assert times["next_year"] in created(stored, "2005")


def test_service_times(registry, stored):
    r = register(
        registry,
        doc("morning", service_start="202411010800", service_stop="202411010900"),
        doc("noon", service_start="202411011200", service_stop="202411011300"),
        doc("no_times", service_start=None, service_stop=None),
    )
    start = find_documents(stored, ("$XDSDocumentEntryServiceStartTimeFrom", "202411011000"),
                           ("$XDSDocumentEntryServiceStartTimeTo", "202411020000"))
    assert start.ids == [r["noon"]]
    stop = find_documents(stored, ("$XDSDocumentEntryServiceStopTimeFrom", "2024110109"),
                          ("$XDSDocumentEntryServiceStopTimeTo", "2024110113"))
    assert stop.ids == [r["morning"]]  # 13:00 is the exclusive end
    # An entry without the attribute does not match a query on it.
    assert r["no_times"] not in find_documents(stored, ("$XDSDocumentEntryServiceStopTimeTo", "2030")).ids


# --- code parameters: OR within a list; AND/OR for event and confidentiality codes ---------------

LAB = ("11502-2", "2.16.840.1.113883.6.1", "Laboratory report")
NOTE = ("34109-9", "2.16.840.1.113883.6.1", "Note")
OTHER_SCHEME = ("34133-9", "1.2.3.4", "same code, other scheme")


@pytest.mark.parametrize("parameter, field", [
    ("$XDSDocumentEntryClassCode", "class_code"),
    ("$XDSDocumentEntryTypeCode", "type_code"),
    ("$XDSDocumentEntryPracticeSettingCode", "practice"),
    ("$XDSDocumentEntryHealthcareFacilityTypeCode", "facility"),
    ("$XDSDocumentEntryFormatCode", "format_code"),
])
def test_code_parameters(registry, stored, parameter, field):
    r = register(registry, doc("lab", **{field: LAB}), doc("note", **{field: NOTE}),
                 doc("other", **{field: OTHER_SCHEME}))
    assert find_documents(stored, (parameter, codes(LAB))).ids == [r["lab"]]
    assert find_documents(stored, (parameter, codes(LAB, NOTE))).kind("ObjectRef") == {r["lab"], r["note"]}
    # Two slots of a parameter that is not AND/OR are refused (only AND/OR parameters repeat).
    two_slots = find_documents(stored, (parameter, codes(LAB)), (parameter, codes(NOTE)))
    assert two_slots.codes == ["XDSStoredQueryParamNumber"]
    # The scheme counts: same code, other scheme is another code.
    assert find_documents(stored, (parameter, quote_list(["34133-9^^^1.2.3.4"]))).ids == [r["other"]]
    # The NIST toolkit's code^^scheme is read as code^^^scheme.
    assert find_documents(stored, (parameter, quote_list([f"{LAB[0]}^^{LAB[1]}"]))).ids == [r["lab"]]


A = ("A", "1.2.3", "a")
B = ("B", "1.2.3", "b")
C = ("C", "1.2.3", "c")


@pytest.mark.parametrize("parameter, field", [
    ("$XDSDocumentEntryEventCodeList", "events"),
    ("$XDSDocumentEntryConfidentialityCode", "confidentiality"),
])
def test_and_or_code_parameters(registry, stored, parameter, field):
    r = register(registry, doc("ab", **{field: (A, B)}), doc("a", **{field: (A,)}), doc("c", **{field: (C,)}))

    def found(*slots):
        return find_documents(stored, *[(parameter, codes(*slot)) for slot in slots]).kind("ObjectRef")

    assert found([A]) == {r["ab"], r["a"]}  # one slot: OR
    assert found([A, C]) == {r["ab"], r["a"], r["c"]}
    assert found([A], [B]) == {r["ab"]}  # two slots: AND
    assert found([A, C], [B]) == {r["ab"]}
    assert found([B], [C]) == set()


# --- author person: LIKE wildcards -------------------------------------------------------------------


@pytest.fixture
def authors(registry):
    return register(
        registry,
        doc("smith", authors=("^Smith^John^^^Dr",)),
        doc("smythe", authors=("^Smythe^Jane^^^Dr",)),
        doc("star", authors=("^Star*^Ann^^^",)),
        doc("starry", authors=("^Starry^Bob^^^",)),
        doc("backslash", authors=("^Back\\slash^Carl^^^",)),
        doc("two", authors=("^Jones^Ann^^^", "^Brown^Tom^^^")),
    )


def by_author(stored, *patterns: str) -> set[str]:
    return find_documents(stored, ("$XDSDocumentEntryAuthorPerson", quote_list(patterns))).kind("ObjectRef")


def test_author_person_exact(authors, stored):
    assert by_author(stored, "^Smith^John^^^Dr") == {authors["smith"]}


def test_author_person_percent_matches_any_string(authors, stored):
    assert by_author(stored, "%Smith%") == {authors["smith"]}
    assert by_author(stored, "%Sm%") == {authors["smith"], authors["smythe"]}


def test_author_person_underscore_matches_one_character(authors, stored):
    assert by_author(stored, "^Sm_th^%") == {authors["smith"]}
    assert by_author(stored, "^Sm__he^%") == {authors["smythe"]}


def test_author_person_is_case_sensitive(authors, stored):
    assert by_author(stored, "%smith%") == set()


def test_author_person_other_characters_are_literal(authors, stored):
    assert by_author(stored, "%Star*%") == {authors["star"]}  # not GLOB's *
    assert by_author(stored, "%Back\\slash%") == {authors["backslash"]}  # not LIKE's escape


def test_author_person_values_are_ored_and_any_author_matches(authors, stored):
    assert by_author(stored, "%Smith%", "%Brown%") == {authors["smith"], authors["two"]}


# --- FindDocumentsByReferenceId (3.18.4.1.2.3.7.14) -------------------------------------------------

ACCESSION = "2013001^^^&1.2.3.4.5.6&ISO^urn:ihe:iti:xds:2013:accession"
ORDER = "ORD-9^^^&1.2.3.4.5.7&ISO^urn:ihe:iti:xds:2013:order"


def test_find_documents_by_reference_id(registry, stored):
    r = register(registry, doc("acc", reference_ids=(ACCESSION,)), doc("both", reference_ids=(ACCESSION, ORDER)),
                 doc("none"))

    def found(*values, extra=()):
        return q.ask(stored, "FindDocumentsByReferenceId", ("$XDSDocumentEntryPatientId", quote(s.PATIENT)),
                     q.APPROVED_DOCUMENTS, ("$XDSDocumentEntryReferenceIdList", quote_list(values)), *extra)

    assert found(ACCESSION).kind("ObjectRef") == {r["acc"], r["both"]}
    assert found(ORDER).ids == [r["both"]]
    assert found(ORDER, ACCESSION).kind("ObjectRef") == {r["acc"], r["both"]}
    # The FindDocuments filters apply too.
    assert found(ACCESSION, extra=[("$XDSDocumentEntryCreationTimeTo", "2000")]).ids == []
    missing = q.ask(stored, "FindDocumentsByReferenceId", ("$XDSDocumentEntryPatientId", quote(s.PATIENT)),
                    q.APPROVED_DOCUMENTS)
    assert missing.codes == ["XDSStoredQueryMissingParam"]


# --- FindSubmissionSets (3.18.4.1.2.3.7.2) ------------------------------------------------------------


def find_submission_sets(stored, *slots, patient=s.PATIENT):
    return q.ask(stored, "FindSubmissionSets", ("$XDSSubmissionSetPatientId", quote(patient)),
                 ("$XDSSubmissionSetStatus", quote_list([q.APPROVED])), *slots)


def test_find_submission_sets(registry, stored):
    first = register(registry, doc("a"), submission_set=dict(
        submission_time="20041224", source_id="1.2.3.100", authors=("^Dopplemeyer^Sherry^^^",), content_type=LAB))
    second = register(registry, doc("b"), submission_set=dict(
        submission_time="20050101120000", source_id="1.2.3.200", authors=("^Smith^John^^^",), content_type=NOTE))
    register(registry, doc("c", patient=s.OTHER_PATIENT), patient=s.OTHER_PATIENT)
    one, two = first["ss"], second["ss"]
    assert find_submission_sets(stored).kind("ObjectRef") == {one, two}
    assert find_submission_sets(stored, ("$XDSSubmissionSetSourceId", quote_list(["1.2.3.200"]))).ids == [two]
    assert find_submission_sets(stored, ("$XDSSubmissionSetSourceId", quote_list(["1.2.3.200", "1.2.3.100"]))).kind(
        "ObjectRef") == {one, two}
    assert find_submission_sets(stored, ("$XDSSubmissionSetSubmissionTimeFrom", "200412"),
                                ("$XDSSubmissionSetSubmissionTimeTo", "200501")).ids == [one]
    assert find_submission_sets(stored, ("$XDSSubmissionSetSubmissionTimeTo", "20050101120000")).ids == [one]
    assert find_submission_sets(stored, ("$XDSSubmissionSetAuthorPerson", quote("%Dopplemeyer%"))).ids == [one]
    assert find_submission_sets(stored, ("$XDSSubmissionSetContentType", codes(NOTE))).ids == [two]
    deprecated = q.ask(stored, "FindSubmissionSets", ("$XDSSubmissionSetPatientId", quote(s.PATIENT)),
                       ("$XDSSubmissionSetStatus", quote_list([q.DEPRECATED])))
    assert deprecated.ids == []
    leaf = find_submission_sets(stored, ("$XDSSubmissionSetSourceId", quote_list(["1.2.3.100"])))
    assert leaf.status == "Success"


def test_submission_set_author_person_is_single_valued(registry, stored):
    answer = find_submission_sets(stored, ("$XDSSubmissionSetAuthorPerson", quote_list(["%a%", "%b%"])))
    assert answer.codes == ["XDSStoredQueryParamNumber"]


# --- FindFolders (3.18.4.1.2.3.7.3) -----------------------------------------------------------------------


def at(*moment: int):
    return lambda: datetime(*moment, tzinfo=timezone.utc)


def find_folders(stored, *slots, status=(q.APPROVED,), return_type="ObjectRef"):
    return q.ask(stored, "FindFolders", ("$XDSFolderPatientId", quote(s.PATIENT)),
                 ("$XDSFolderStatus", quote_list(status)), *slots, return_type=return_type)


def test_find_folders_by_last_update_time(registry, stored):
    registry.clock = at(2024, 1, 10, 9, 0, 0)
    early = register(registry, s.folder("f", s.new_oid()))
    registry.clock = at(2024, 3, 1, 12, 0, 0)
    late = register(registry, s.folder("f", s.new_oid()))
    assert find_folders(stored).kind("ObjectRef") == {early["f"], late["f"]}
    assert find_folders(stored, ("$XDSFolderLastUpdateTimeFrom", "202402")).ids == [late["f"]]
    assert find_folders(stored, ("$XDSFolderLastUpdateTimeTo", "20240301120000")).ids == [early["f"]]
    assert find_folders(stored, ("$XDSFolderLastUpdateTimeFrom", "20240301120000")).ids == [late["f"]]
    # Adding a document to the early folder changes its lastUpdateTime: found, and patched in
    # the LeafClass answer although its stored XML still has the first time.
    registry.clock = at(2024, 5, 5, 5, 5, 5)
    register(registry, doc("d"), s.association("fd", "HasMember", early["f"], "d"),
             s.association("ss-fd", "HasMember", "ss", "fd"))
    assert find_folders(stored, ("$XDSFolderLastUpdateTimeFrom", "202405")).ids == [early["f"]]
    answer = find_folders(stored, ("$XDSFolderLastUpdateTimeFrom", "202405"), return_type="LeafClass")
    folder = answer.element_of(early["f"])
    slots = {slot.get("name"): [v.text for v in slot.iter(f"{{{q.ns.RIM}}}Value")]
             for slot in folder.iter(f"{{{q.ns.RIM}}}Slot")}
    assert slots["lastUpdateTime"] == ["20240505050505"]


def test_find_folders_by_code_list_and_or(registry, stored):
    r = register(registry, s.folder("ab", s.new_oid(), codes=(A, B)), s.folder("a", s.new_oid(), codes=(A,)),
                 s.folder("c", s.new_oid(), codes=(C,)))

    def found(*slots):
        return find_folders(stored, *[("$XDSFolderCodeList", codes(*slot)) for slot in slots]).kind("ObjectRef")

    assert found([A]) == {r["ab"], r["a"]}
    assert found([A, C]) == {r["ab"], r["a"], r["c"]}
    assert found([A], [B]) == {r["ab"]}
    assert found([C], [B]) == set()
    assert find_folders(stored, status=(q.DEPRECATED,)).ids == []
