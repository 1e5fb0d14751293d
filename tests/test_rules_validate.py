"""xds.registry.validate: the rules that need no database, one section per part of ITI TF-3.

Each test builds a valid submission (tests/metadata_factory.py), breaks one thing, and checks
that exactly the expected rule fires, with the XDS error code of that rule and a codeContext
that names the offending object, attribute and value.
"""

from __future__ import annotations

import re
import string
import time

import pytest

from tests.data import CONFORMANCE
from tests.metadata_factory import (
    APPEND,
    HAS_MEMBER,
    OTHER_PATIENT,
    REFERENCE,
    REPLACE,
    SIGNS,
    TRANSFORM,
    TRANSFORM_REPLACE,
    association,
    find,
    has_member,
    make_document,
    make_submission,
    new_oid,
)
from xds.errors import XdsError
from xds.model import Author, AvailabilityStatus, Code, DocumentEntryType, Submission
from xds.registry import validate as validate_module
from xds.registry.codes import CodeSet
from xds.registry.validate import validate
from xds.rules import RULES

NIST_CODES = CONFORMANCE / "config" / "nist-codes.xml"


# --- helpers -------------------------------------------------------------------------------------


def _template(rule_id: str) -> re.Pattern[str]:
    parts = []
    for literal, field, _, _ in string.Formatter().parse(RULES[rule_id].message):
        parts.append(re.escape(literal))
        if field is not None:
            parts.append(".*")
    return re.compile("".join(parts), re.S)


def is_rule(err: XdsError, rule_id: str) -> bool:
    """The error was made by that rule: its code, and a context of that rule's message."""
    rule = RULES[rule_id]
    return err.code == rule.code and err.severity == rule.severity and bool(
        _template(rule_id).fullmatch(err.context))


def the_error(submission: Submission, rule_id: str, codes: CodeSet | None = None) -> XdsError:
    """Validate; there must be exactly one error, made by `rule_id`."""
    errors = validate(submission, codes)
    assert len(errors) == 1, [str(e) for e in errors]
    assert is_rule(errors[0], rule_id), str(errors[0])
    return errors[0]


def errors_of(submission: Submission, rule_id: str, codes: CodeSet | None = None) -> list[XdsError]:
    """Validate; every error must be made by `rule_id`."""
    errors = validate(submission, codes)
    assert errors and all(is_rule(e, rule_id) for e in errors), [str(e) for e in errors]
    return errors


@pytest.fixture(scope="module")
def nist() -> CodeSet:
    if not NIST_CODES.exists():
        pytest.skip(f"{NIST_CODES} is missing: the shared conformance data is not beside the checkout")
    return CodeSet.from_nist_xml(NIST_CODES)


# --- a valid submission --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [
    {}, {"documents": 3}, {"documents": 2, "folder": True}, {"on_demand": 1},
    {"documents": 0, "folder": True}, {"uuids": True, "folder": True},
])
def test_a_valid_submission_has_no_errors(shape, nist):
    submission = make_submission(**shape)
    assert validate(submission) == []
    assert validate(submission, nist) == []


def test_several_problems_give_several_errors():
    submission = make_submission(documents=2, folder=True)
    doc1, doc2 = submission.documents
    doc1.hash = "not-a-hash"
    doc1.class_code = None
    doc2.patient_id = OTHER_PATIENT
    submission.folders[0].status = AvailabilityStatus.DEPRECATED.value
    submission.submission_set.submission_time = "2024"  # fine: year precision is allowed
    submission.submission_set.source_id = "not-an-oid"

    errors = validate(submission)

    fired = sorted(rule_id for e in errors for rule_id in
                   ("format.hash", "document.missing", "patient.mismatch", "object.bad-status", "format.oid")
                   if is_rule(e, rule_id))
    assert fired == ["document.missing", "format.hash", "format.oid", "object.bad-status", "patient.mismatch"]
    assert len(errors) == 5
    assert {e.location for e in errors} == {"Document01", "Document02", "Folder01", "SubmissionSet01"}


def test_validate_never_raises_on_an_empty_or_hollow_submission():
    assert validate(Submission()) == []
    hollow = Submission(documents=[make_document()])
    hollow.documents[0] = type(hollow.documents[0])(id="D")  # every attribute missing
    errors = validate(hollow)
    assert errors and all(isinstance(e, XdsError) for e in errors)


def test_a_failing_check_becomes_a_registry_error_not_an_exception(monkeypatch):
    def broken(submission, codes, errors):
        raise RuntimeError("bug")

    monkeypatch.setattr(validate_module, "_CHECKS", (broken,) + validate_module._CHECKS)
    errors = validate(make_submission())
    assert len(errors) == 1 and is_rule(errors[0], "registry.internal")
    assert "broken" in errors[0].context


def test_validation_time_grows_linearly():
    """No quadratic scans: four times the objects take about four times as long, not sixteen."""

    def best_of_three(submission: Submission) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            assert validate(submission) == []
            times.append(time.perf_counter() - start)
        return min(times)

    small = best_of_three(make_submission(documents=1000, folder=True))
    large = best_of_three(make_submission(documents=4000, folder=True))
    assert large < 10 * max(small, 0.005)
    assert large < 5.0


# --- ITI TF-3 Table 4.3.1-3: required attributes -------------------------------------------------

DOCUMENT_REQUIRED = [
    # (attribute as the TF names it, model field, its empty value)
    ("classCode", "class_code", None),
    ("confidentialityCode", "confidentiality_codes", []),
    ("formatCode", "format_code", None),
    ("healthcareFacilityTypeCode", "healthcare_facility_type_code", None),
    ("languageCode", "language_code", None),
    ("mimeType", "mime_type", None),
    ("patientId", "patient_id", None),
    ("practiceSettingCode", "practice_setting_code", None),
    ("repositoryUniqueId", "repository_unique_id", None),
    ("sourcePatientId", "source_patient_id", None),
    ("typeCode", "type_code", None),
    ("uniqueId", "unique_id", ""),
    ("objectType", "object_type", None),
]
STABLE_ONLY = [("creationTime", "creation_time"), ("hash", "hash"), ("size", "size")]


@pytest.mark.parametrize(("attribute", "field", "empty"), DOCUMENT_REQUIRED)
def test_document_missing_a_required_attribute(attribute, field, empty):
    submission = make_submission()
    setattr(submission.documents[0], field, empty)
    err = the_error(submission, "document.missing")
    assert err.location == "Document01"
    assert f"DocumentEntry 'Document01' has no {attribute};" in err.context
    assert "Table 4.3.1-3" in err.context


@pytest.mark.parametrize(("attribute", "field"), STABLE_ONLY)
def test_stable_document_missing_hash_size_or_creation_time(attribute, field):
    submission = make_submission()
    setattr(submission.documents[0], field, None)
    err = the_error(submission, "document.missing")
    assert f"has no {attribute};" in err.context and "stable DocumentEntry" in err.context


def test_on_demand_document_needs_no_hash_size_or_creation_time_but_a_repository():
    submission = make_submission(documents=0, on_demand=1)
    assert validate(submission) == []
    submission.documents[0].repository_unique_id = None
    err = the_error(submission, "document.missing")
    assert "has no repositoryUniqueId;" in err.context


ON_DEMAND_FORBIDDEN = [
    ("creationTime", "creation_time", "20241102091500"),
    ("hash", "hash", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
    ("legalAuthenticator", "legal_authenticator", "^Welby^Marcus"),
    ("serviceStartTime", "service_start_time", "2024"),
    ("serviceStopTime", "service_stop_time", "2025"),
    ("size", "size", "10"),
]


@pytest.mark.parametrize(("attribute", "field", "value"), ON_DEMAND_FORBIDDEN)
def test_on_demand_document_carrying_a_stable_attribute(attribute, field, value):
    submission = make_submission(documents=0, on_demand=1)
    setattr(submission.documents[0], field, value)
    err = the_error(submission, "document.on-demand-forbidden")
    assert err.location == "Document01"
    assert f"On-Demand DocumentEntry 'Document01' carries {attribute}," in err.context


@pytest.mark.parametrize("object_type", ["urn:uuid:00000000-0000-0000-0000-000000000000", "stable"])
def test_document_with_an_unknown_object_type(object_type):
    submission = make_submission()
    submission.documents[0].object_type = object_type
    err = the_error(submission, "document.bad-object-type")
    assert err.location == "Document01" and f"objectType '{object_type}'" in err.context


SUBMISSION_SET_REQUIRED = [
    ("contentTypeCode", "content_type_code"),
    ("patientId", "patient_id"),
    ("sourceId", "source_id"),
    ("submissionTime", "submission_time"),
    ("uniqueId", "unique_id"),
]


@pytest.mark.parametrize(("attribute", "field"), SUBMISSION_SET_REQUIRED)
def test_submission_set_missing_a_required_attribute(attribute, field):
    submission = make_submission()
    setattr(submission.submission_set, field, None)
    err = the_error(submission, "submission-set.missing")
    assert err.location == "SubmissionSet01"
    assert f"SubmissionSet 'SubmissionSet01' has no {attribute};" in err.context


def test_author_title_and_recipients_are_not_required():
    submission = make_submission()
    ss, doc = submission.submission_set, submission.documents[0]
    ss.authors, ss.title, ss.intended_recipients = [], None, []  # author is R2
    doc.authors, doc.title, doc.event_codes, doc.legal_authenticator = [], None, [], None
    doc.service_start_time = doc.service_stop_time = None  # R2
    assert validate(submission) == []


FOLDER_REQUIRED = [
    ("codeList", "codes", []),
    ("patientId", "patient_id", None),
    ("title", "title", None),
    ("uniqueId", "unique_id", None),
]


@pytest.mark.parametrize(("attribute", "field", "empty"), FOLDER_REQUIRED)
def test_folder_missing_a_required_attribute(attribute, field, empty):
    submission = make_submission(folder=True)
    setattr(submission.folders[0], field, empty)
    err = the_error(submission, "folder.missing")
    assert err.location == "Folder01" and f"Folder 'Folder01' has no {attribute};" in err.context


@pytest.mark.parametrize(("attribute", "field"), [
    ("associationType", "type"), ("sourceObject", "source"), ("targetObject", "target")])
def test_association_missing_type_source_or_target(attribute, field):
    submission = make_submission()
    setattr(submission.associations[0], field, "")
    errors = validate(submission)
    missing = [e for e in errors if is_rule(e, "association.missing")]
    assert len(missing) == 1
    assert missing[0].location == "SS-Document01"
    assert f"Association 'SS-Document01' has no {attribute};" in missing[0].context


# --- availabilityStatus ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [AvailabilityStatus.DEPRECATED.value, AvailabilityStatus.SUBMITTED.value,
                                    "Approved"])
@pytest.mark.parametrize("object_id", ["SubmissionSet01", "Document01", "Folder01", "SS-Folder01"])
def test_submitted_object_with_a_status_other_than_approved(status, object_id):
    submission = make_submission(folder=True)
    find(submission, object_id).status = status
    err = the_error(submission, "object.bad-status")
    assert err.location == object_id and f"'{object_id}' has status '{status}'" in err.context


def test_approved_status_is_accepted():
    submission = make_submission(folder=True)
    for obj in submission.objects():
        obj.status = AvailabilityStatus.APPROVED.value
    assert validate(submission) == []


# --- ITI TF-3 4.2.3.1.7: DTM -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "2024", "202402", "20240229", "20000229", "2024110209", "202411020915", "20241231235959",
])
def test_dtm_of_every_precision_is_accepted(value):
    submission = make_submission()
    submission.documents[0].creation_time = value
    submission.submission_set.submission_time = value
    assert validate(submission) == []


@pytest.mark.parametrize("value", [
    "24", "2024013", "20241301", "20240001", "20240230", "20230229", "19000229", "20240431",
    "2024010124", "202401010060", "20240101000060", "2024-01-01", "20240101T0000", "20240101000000.5",
    "20240101000000+0900", "２０２４",
])
@pytest.mark.parametrize(("field", "attribute"), [("creation_time", "creationTime"),
                                                  ("service_start_time", "serviceStartTime")])
def test_document_time_that_is_not_a_dtm(value, field, attribute):
    submission = make_submission()
    setattr(submission.documents[0], field, value)
    err = the_error(submission, "format.dtm")
    assert err.location == "Document01"
    assert f"DocumentEntry 'Document01': {attribute} '{value}' is not an HL7 DTM" in err.context


def test_submission_time_that_is_not_a_dtm():
    submission = make_submission()
    submission.submission_set.submission_time = "2024-11-02T09:16:00Z"
    err = the_error(submission, "format.dtm")
    assert "SubmissionSet 'SubmissionSet01': submissionTime '2024-11-02T09:16:00Z'" in err.context


@pytest.mark.parametrize(("start", "stop"), [
    ("202411021000", "20241101"), ("20241101100001", "20241101100000"), ("2025", "2024"),
])
def test_service_start_after_service_stop(start, stop):
    submission = make_submission()
    doc = submission.documents[0]
    doc.service_start_time, doc.service_stop_time = start, stop
    err = the_error(submission, "format.service-times")
    assert err.location == "Document01" and f"serviceStartTime {start} is after serviceStopTime {stop}" in err.context


@pytest.mark.parametrize(("start", "stop"), [
    ("20241101", "202411010900"),  # equal on the common precision
    ("202411010900", "2024"), ("202411010900", "202411010900"), ("2024", "2025"),
])
def test_service_times_compared_on_their_common_precision(start, stop):
    submission = make_submission()
    doc = submission.documents[0]
    doc.service_start_time, doc.service_stop_time = start, stop
    assert validate(submission) == []


def test_service_times_not_compared_when_malformed():
    submission = make_submission()
    doc = submission.documents[0]
    doc.service_start_time, doc.service_stop_time = "2025-01", "2024"
    the_error(submission, "format.dtm")


# --- OIDs and uniqueIds (ITI TF-3 4.2.3.1.7, 4.2.3.2.26) ------------------------------------------


@pytest.mark.parametrize("value", ["1.2.x", "01.2.3", "1.02.3", "3.1", "1", "1.2.", "1.2.3 ", "1." + "2" * 64])
@pytest.mark.parametrize(("object_id", "field", "attribute"), [
    ("Document01", "repository_unique_id", "repositoryUniqueId"),
    ("SubmissionSet01", "source_id", "sourceId"),
    ("SubmissionSet01", "unique_id", "uniqueId"),
    ("Folder01", "unique_id", "uniqueId"),
])
def test_value_that_is_not_an_oid(value, object_id, field, attribute):
    submission = make_submission(folder=True)
    setattr(find(submission, object_id), field, value)
    err = the_error(submission, "format.oid")
    assert err.location == object_id and f"'{object_id}': {attribute} '{value}' is not an OID" in err.context


@pytest.mark.parametrize("value", [
    "abc", "1.2.3^", "^abc", "1.2.3^ab^c", "1.02.3", "1." + "2" * 64,
    "1.2.3^" + "x" * 123,  # 129 bytes
    "1.2.3^" + "é" * 62,  # 124 characters but 130 bytes
])
def test_document_unique_id_that_is_not_oid_or_oid_extension(value):
    submission = make_submission()
    submission.documents[0].unique_id = value
    err = the_error(submission, "format.unique-id")
    assert err.location == "Document01" and f"uniqueId '{value}' is not an OID" in err.context


@pytest.mark.parametrize("value", [
    "1.2.3", "1.2.3^A1", "1.2.3^" + "x" * 122,  # 128 bytes
    "1.2.3^0123456789ABCDEFGHIJ",  # an extension longer than the CDA example's 16 characters
])
def test_document_unique_id_accepted(value):
    submission = make_submission()
    submission.documents[0].unique_id = value
    assert validate(submission) == []


# --- hash, size, languageCode, mimeType (ITI TF-3 4.2.3.2) ----------------------------------------


@pytest.mark.parametrize("value", ["xyz", "da39a3ee5e6b4b0d3255bfef95601890afd8070", "da39a3ee5e6b4b0d3255bfef95601890afd807090",
                                   "g" * 40, "da39a3ee-5e6b4b0d3255bfef95601890afd8070"])
def test_hash_that_is_not_sha1_hex(value):
    submission = make_submission()
    submission.documents[0].hash = value
    err = the_error(submission, "format.hash")
    assert err.location == "Document01" and f"hash '{value}'" in err.context


def test_hash_in_upper_case_is_accepted():
    submission = make_submission()
    submission.documents[0].hash = "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709"
    assert validate(submission) == []


@pytest.mark.parametrize("value", ["-1", "1.5", "abc", "1e3", " 12", "+3"])
def test_size_that_is_not_a_non_negative_integer(value):
    submission = make_submission()
    submission.documents[0].size = value
    err = the_error(submission, "format.size")
    assert f"size '{value}'" in err.context


@pytest.mark.parametrize("value", ["en_US", "e", "en-", "123", "en--US", "english language", "en-abcdefghi"])
def test_language_code_that_is_not_a_language_tag(value):
    submission = make_submission()
    submission.documents[0].language_code = value
    err = the_error(submission, "format.language")
    assert f"languageCode '{value}'" in err.context


@pytest.mark.parametrize("value", ["en", "en-US", "en-us", "ja-JP", "zh-Hant-TW", "de-CH-1996", "x-klingon", "i-default"])
def test_language_tags_accepted(value):
    submission = make_submission()
    submission.documents[0].language_code = value
    assert validate(submission) == []


@pytest.mark.parametrize("value", ["textxml", "text/", "/xml", "text/x ml", "text/xml/x", "text/xml;"])
def test_mime_type_that_is_not_type_slash_subtype(value):
    submission = make_submission()
    submission.documents[0].mime_type = value
    err = the_error(submission, "format.mime-type")
    assert f"mimeType '{value}'" in err.context


@pytest.mark.parametrize("value", ["application/pdf", "application/fhir+json", "text/plain; charset=UTF-8",
                                   "application/vnd.ms-excel"])
def test_mime_types_accepted(value):
    submission = make_submission()
    submission.documents[0].mime_type = value
    assert validate(submission) == []


# --- patient ids (ITI TF-3 4.2.3.1.7, CX) ---------------------------------------------------------


@pytest.mark.parametrize("value", ["P1^^^1.2.3", "P1", "^^^&1.2.3&ISO", "P1^^^&1.2.3&L", "P1^x^^&1.2.3&ISO",
                                   "P1^^^&1.2.x&ISO", " P1^^^&1.2.3&ISO"])
@pytest.mark.parametrize(("object_id", "field", "attribute"), [
    ("Document01", "patient_id", "patientId"),
    ("Document01", "source_patient_id", "sourcePatientId"),
    ("Folder01", "patient_id", "patientId"),
])
def test_patient_id_that_is_not_a_cx(value, object_id, field, attribute):
    from xds.model import PatientId

    submission = make_submission(folder=True)
    setattr(find(submission, object_id), field, value)
    err = the_error(submission, "format.patient-id")
    with pytest.raises(ValueError) as reason:
        PatientId.parse(value)
    assert err.location == object_id
    assert err.context == f"{find(submission, object_id).__class__.__name__} '{object_id}': {attribute}: {reason.value}"


def test_submission_set_patient_id_that_is_not_a_cx():
    submission = make_submission()
    submission.submission_set.patient_id = "P1^^^&1.2.3"
    err = the_error(submission, "format.patient-id")  # and no patient.mismatch for the documents
    assert err.location == "SubmissionSet01" and "patientId" in err.context and "P1^^^&1.2.3" in err.context


@pytest.mark.parametrize("value", ["PID3|x", "PID-5", "5|Doe", "PID-0|x", "PID-5|", "pid-5|Doe"])
def test_source_patient_info_that_is_not_pid_n_value(value):
    submission = make_submission()
    submission.documents[0].source_patient_info.append(value)
    err = the_error(submission, "format.source-patient-info")
    assert err.location == "Document01" and f"sourcePatientInfo value '{value}'" in err.context


# --- persons and organizations (ITI TF-3 Table 4.2.3.1.7-2, XCN and XON) --------------------------


@pytest.mark.parametrize("value", ["^^^", "^^^^^^^^&1.2.3&ISO", "123^Doe^^^^^^^&1.2.3&L", "123^^^^^^^^1.2.3",
                                   "123^^^^^^^^&1.2.x&ISO"])
def test_legal_authenticator_that_is_not_an_xcn(value):
    submission = make_submission()
    submission.documents[0].legal_authenticator = value
    err = the_error(submission, "format.xcn")
    assert err.location == "Document01" and f"legalAuthenticator '{value}' is not an HL7 XCN" in err.context


@pytest.mark.parametrize("object_id", ["Document01", "SubmissionSet01"])
def test_author_person_that_is_not_an_xcn(object_id):
    submission = make_submission()
    find(submission, object_id).authors.append(Author(person="^^^^^^^^^"))
    err = the_error(submission, "format.xcn")
    assert err.location == object_id and "authorPerson '^^^^^^^^^'" in err.context


@pytest.mark.parametrize("value", ["123^^^^^^^^&1.2.3&ISO", "Sherry Dopplemeyer", "^Doe", "^^Taro", "^Doe&van^John"])
def test_xcn_accepted(value):
    submission = make_submission()
    submission.documents[0].legal_authenticator = value
    submission.documents[0].authors[0].person = value
    assert validate(submission) == []


@pytest.mark.parametrize("value", ["^^^^^&1.2.3&ISO^^^^1", "Org^^^^^1.2.3^^^^1", "Org^^^^^&1.2.3&ISO",
                                   "Org^^^^^^^^^ABC", "Org^^^^^&1.2.x&ISO^^^^1"])
@pytest.mark.parametrize("object_id", ["Document01", "SubmissionSet01"])
def test_author_institution_that_is_not_an_xon(value, object_id):
    submission = make_submission()
    find(submission, object_id).authors[0].institutions.append(value)
    err = the_error(submission, "format.xon")
    assert err.location == object_id and f"authorInstitution '{value}' is not an HL7 XON" in err.context


@pytest.mark.parametrize("value", ["Org", "Parma Community^^^^^^^^^1.2.3", "Cleveland Clinic^^^^^&1.2.3&ISO^^^^CleveClin"])
def test_xon_accepted(value):
    submission = make_submission()
    submission.documents[0].authors[0].institutions = [value]
    assert validate(submission) == []


@pytest.mark.parametrize(("value", "rule_id", "part"), [
    ("^^^^^^^^^1.2|^Doe", "format.xon", "^^^^^^^^^1.2"),
    ("Org^^^^^x^^^^1|^Doe", "format.xon", "Org^^^^^x^^^^1"),
    ("Org|^^^", "format.xcn", "^^^"),
    ("|", "format.xon", ""),
])
def test_intended_recipient_that_is_not_xon_or_xcn(value, rule_id, part):
    submission = make_submission()
    submission.submission_set.intended_recipients = [value]
    err = the_error(submission, rule_id)
    assert err.location == "SubmissionSet01" and f"intendedRecipient '{part}'" in err.context


@pytest.mark.parametrize("value", ["|^Doe", "Org", "Org|^Doe", "Org^^^^^^^^^1.2.3|^Doe|^^Internet^doe@example.org"])
def test_intended_recipients_accepted(value):
    submission = make_submission()
    submission.submission_set.intended_recipients = [value]
    assert validate(submission) == []


# --- homeCommunityId, URI, referenceIdList (ITI TF-3 4.2.3.2, 4.2.3.2.28) ------------------------


@pytest.mark.parametrize("value", ["1.2.3", "urn:oid:abc", "urn:uuid:1ba97051-7806-41a8-a48b-8fce7af683c5", "urn:oid:"])
@pytest.mark.parametrize("object_id", ["Document01", "SubmissionSet01", "Folder01"])
def test_home_community_id_that_is_not_urn_oid(value, object_id):
    submission = make_submission(folder=True)
    find(submission, object_id).home_community_id = value
    err = the_error(submission, "format.home-community-id")
    assert err.location == object_id and f"homeCommunityId '{value}'" in err.context


def test_home_community_id_accepted():
    submission = make_submission(folder=True)
    for obj in (submission.submission_set, submission.documents[0], submission.folders[0]):
        obj.home_community_id = "urn:oid:1.2.392.200119.6.102"
    assert validate(submission) == []


@pytest.mark.parametrize("value", ["not a uri", "http://exa mple.org", "//example.org/doc", "1http://x"])
def test_uri_that_is_not_a_uri(value):
    submission = make_submission()
    submission.documents[0].uri = value
    err = the_error(submission, "format.uri")
    assert f"URI '{value}'" in err.context


@pytest.mark.parametrize("value", ["http://", "https://example.org/doc?id=1", "urn:oid:1.2.3"])
def test_uri_accepted(value):
    submission = make_submission()
    submission.documents[0].uri = value
    assert validate(submission) == []


@pytest.mark.parametrize("value", ["abc", "123^^^&1.2.3&ISO", "123^^^&1.2.3&ISO^", "123^x^^&1.2.3&ISO^t",
                                   "123^^^1.2.3^t", "^^^&1.2.3&ISO^t"])
def test_reference_id_that_is_not_a_cxi(value):
    submission = make_submission()
    submission.documents[0].reference_ids.append(value)
    err = the_error(submission, "format.reference-id")
    assert err.location == "Document01" and f"referenceIdList value '{value}'" in err.context


@pytest.mark.parametrize("value", ["123^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:order",
                                   "1.2.3.4^^^^urn:ihe:iti:xds:2013:uniqueId",
                                   "A1^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:accession^&1.2.4&ISO"])
def test_reference_ids_accepted(value):
    submission = make_submission()
    submission.documents[0].reference_ids = [value]
    assert validate(submission) == []


# --- codes of the affinity domain ----------------------------------------------------------------


@pytest.mark.parametrize(("object_id", "attribute", "put"), [
    ("Document01", "classCode", lambda d, c: setattr(d, "class_code", c)),
    ("Document01", "typeCode", lambda d, c: setattr(d, "type_code", c)),
    ("Document01", "formatCode", lambda d, c: setattr(d, "format_code", c)),
    ("Document01", "healthcareFacilityTypeCode", lambda d, c: setattr(d, "healthcare_facility_type_code", c)),
    ("Document01", "practiceSettingCode", lambda d, c: setattr(d, "practice_setting_code", c)),
    ("Document01", "confidentialityCode", lambda d, c: d.confidentiality_codes.append(c)),
    ("Document01", "eventCodeList", lambda d, c: d.event_codes.append(c)),
    ("SubmissionSet01", "contentTypeCode", lambda s, c: setattr(s, "content_type_code", c)),
    ("Folder01", "folderCodeList", lambda f, c: f.codes.append(c)),
])
def test_code_unknown_to_the_affinity_domain(nist, object_id, attribute, put):
    submission = make_submission(folder=True)
    put(find(submission, object_id), Code("MADE-UP", "9.9.9", "Made up"))
    err = the_error(submission, "code.unknown", nist)
    assert err.location == object_id
    assert f"'{object_id}': {attribute} 'MADE-UP' of coding scheme '9.9.9'" in err.context
    assert validate(submission) == []  # without a CodeSet, codes are not checked


def test_known_code_in_the_wrong_coding_scheme(nist):
    submission = make_submission()
    submission.documents[0].class_code = Code("REPORTS", "2.16.840.1.113883.6.1")
    err = the_error(submission, "code.unknown", nist)
    assert "classCode 'REPORTS' of coding scheme '2.16.840.1.113883.6.1'" in err.context


def test_mime_type_unknown_to_the_affinity_domain(nist):
    submission = make_submission()
    submission.documents[0].mime_type = "application/x-made-up"
    err = the_error(submission, "code.unknown", nist)
    assert err.location == "Document01" and "mimeType 'application/x-made-up'" in err.context


def test_malformed_mime_type_is_reported_once(nist):
    submission = make_submission()
    submission.documents[0].mime_type = "nonsense"
    the_error(submission, "format.mime-type", nist)


def test_only_the_attributes_a_code_set_lists_are_restricted():
    codes = CodeSet({"classCode": [("REPORTS", "1.3.6.1.4.1.19376.1.2.6.1")]})
    submission = make_submission()
    submission.documents[0].type_code = Code("anything", "1.2.3")
    assert validate(submission, codes) == []
    submission.documents[0].class_code = Code("OTHER", "1.3.6.1.4.1.19376.1.2.6.1")
    the_error(submission, "code.unknown", codes)


# --- uniqueIds within the submission (ITI TF-2 3.42.4.1.3: XDSRegistryDuplicateUniqueIdInMessage) ---


def test_two_documents_with_one_unique_id():
    submission = make_submission(documents=3)
    d1, d2, d3 = submission.documents
    d2.unique_id = d1.unique_id
    err = the_error(submission, "unique-id.in-message")
    assert err.code == "XDSRegistryDuplicateUniqueIdInMessage"
    assert f"uniqueId '{d1.unique_id}' is used by DocumentEntry 'Document01', DocumentEntry 'Document02'" in err.context


def test_one_error_per_duplicated_value_across_object_types():
    submission = make_submission(documents=2, folder=True)
    shared, other = new_oid(), new_oid()
    submission.submission_set.unique_id = submission.folders[0].unique_id = submission.documents[0].unique_id = shared
    submission.documents[1].unique_id = other  # unique: no error
    errors = errors_of(submission, "unique-id.in-message")
    assert len(errors) == 1
    assert "SubmissionSet 'SubmissionSet01', DocumentEntry 'Document01', Folder 'Folder01'" in errors[0].context


# --- one patient per submission (ITI TF-3 4.2.3.2.16) ---------------------------------------------


@pytest.mark.parametrize(("object_id", "what"), [("Document02", "DocumentEntry"), ("Folder01", "Folder")])
def test_object_for_another_patient(object_id, what):
    submission = make_submission(documents=2, folder=True)
    find(submission, object_id).patient_id = OTHER_PATIENT
    err = the_error(submission, "patient.mismatch")
    assert err.code == "XDSPatientIdDoesNotMatch"
    assert err.location == object_id
    assert f"{what} '{object_id}' has patientId {OTHER_PATIENT}, but the SubmissionSet has P1^^^&1.2.3&ISO" in err.context


def test_malformed_patient_id_is_a_format_error_not_a_mismatch():
    submission = make_submission()
    submission.documents[0].patient_id = "P1^^^1.2.3"
    the_error(submission, "format.patient-id")


def test_source_patient_id_may_be_another_domain():
    submission = make_submission()
    submission.documents[0].source_patient_id = "X-99^^^&1.2.392.999&ISO"
    assert validate(submission) == []


# --- associations within the submission (ITI TF-3 4.2.2) --------------------------------------------


@pytest.mark.parametrize("value", ["urn:example:AssociationType:Copy", "HasMember",
                                   "urn:oasis:names:tc:ebxml-regrep:AssociationType:Contains"])
def test_association_type_xds_does_not_define(value):
    submission = make_submission()
    submission.associations.append(association(value, "Document01", "urn:uuid:5a1fc3b2-0a5c-4b3a-9c4b-7ea0f5b64c11",
                                               assoc_id="A1"))
    err = the_error(submission, "association.bad-type")
    assert err.location == "A1" and f"associationType '{value}'" in err.context


def test_association_from_an_object_to_itself():
    submission = make_submission()
    submission.associations.append(association(APPEND, "Document01", "Document01", assoc_id="A1"))
    err = the_error(submission, "association.self")
    assert err.location == "A1" and "'Document01' as both source and target" in err.context


def test_submission_set_membership_without_status():
    submission = make_submission()
    submission.associations[0].submission_set_status = None
    err = the_error(submission, "association.no-status")
    assert err.location == "SS-Document01" and "to DocumentEntry 'Document01' needs a SubmissionSetStatus" in err.context


@pytest.mark.parametrize("status", ["Reference", "Copy", "original", ""])
def test_status_of_a_new_document_other_than_original(status):
    submission = make_submission()
    submission.associations[0].submission_set_status = status
    err = the_error(submission, "association.bad-status")
    assert err.location == "SS-Document01" and f"SubmissionSetStatus '{status}'" in err.context


def test_status_original_for_an_object_in_the_registry():
    submission = make_submission()
    existing = "urn:uuid:8cd0ef76-f0ba-4c83-a4a5-2e2c6b3c4b6d"
    submission.associations.append(has_member("SubmissionSet01", existing, "Original", "A1"))
    err = the_error(submission, "association.bad-status")
    assert err.location == "A1" and "SubmissionSetStatus 'Original'" in err.context


def test_reference_to_a_document_in_the_registry_is_accepted():
    submission = make_submission()
    submission.associations.append(has_member("SubmissionSet01", "urn:uuid:8cd0ef76-f0ba-4c83-a4a5-2e2c6b3c4b6d",
                                              REFERENCE, "A1"))
    assert validate(submission) == []


@pytest.mark.parametrize(("source", "target"), [
    ("Document01", "Document02"),  # a DocumentEntry holds nothing
    ("Folder01", "Folder02"),  # a Folder holds DocumentEntries only
    ("Folder01", "SubmissionSet01"),
    ("SS-Document01", "Document01"),  # an Association holds nothing
    ("urn:uuid:0e0a6c45-4d52-4e0c-9f5e-2f0b0f3b9a11", "Folder01"),  # an existing folder: documents only
])
def test_has_member_that_links_the_wrong_kinds_of_object(source, target):
    submission = make_submission(documents=2, folder=True)
    second = make_submission(folder=True).folders[0]
    second.id = "Folder02"
    submission.folders.append(second)
    submission.associations.append(has_member("SubmissionSet01", "Folder02", assoc_id="SS-Folder02"))
    submission.associations.append(has_member(source, target, assoc_id="A1"))
    submission.associations.append(has_member("SubmissionSet01", "A1", assoc_id="SS-A1"))
    err = the_error(submission, "association.bad-member")
    assert err.location == "A1" and f"links '{source}' to '{target}'" in err.context


@pytest.mark.parametrize(("object_id", "link", "what"), [
    ("Document01", "SS-Document01", "DocumentEntry"),
    ("Folder01", "SS-Folder01", "Folder"),
])
def test_object_the_submission_set_does_not_include(object_id, link, what):
    submission = make_submission(folder=True)
    submission.associations = [a for a in submission.associations if a.id != link]
    err = the_error(submission, "association.not-in-submission-set")
    assert err.location == object_id
    assert f"{what} '{object_id}' is not a member of the SubmissionSet: add a HasMember Association from 'SubmissionSet01'" in err.context


def test_folder_membership_the_submission_set_does_not_include():
    submission = make_submission(folder=True)
    submission.associations = [a for a in submission.associations if a.id != "SS-Folder01-Document01"]
    err = the_error(submission, "association.folder-member-unlinked")
    assert err.location == "Folder01-Document01"
    assert "adds 'Document01' to Folder 'Folder01'" in err.context
    assert "from 'SubmissionSet01' to 'Folder01-Document01'" in err.context


def test_adding_a_document_to_a_folder_in_the_registry():
    """ITI TF-3 4.2.2.1: a HasMember from the existing Folder, itself a member of the SubmissionSet."""
    submission = make_submission()
    folder = "urn:uuid:0e0a6c45-4d52-4e0c-9f5e-2f0b0f3b9a11"
    submission.associations.append(has_member(folder, "Document01", assoc_id="F-D"))
    the_error(submission, "association.folder-member-unlinked")
    submission.associations.append(has_member("SubmissionSet01", "F-D", assoc_id="SS-F-D"))
    assert validate(submission) == []


@pytest.mark.parametrize("assoc_type", [REPLACE, APPEND, TRANSFORM, TRANSFORM_REPLACE, SIGNS])
@pytest.mark.parametrize("source", ["urn:uuid:0e0a6c45-4d52-4e0c-9f5e-2f0b0f3b9a11", "Folder01", "SubmissionSet01"])
def test_document_relationship_whose_source_is_not_a_new_document(assoc_type, source):
    submission = make_submission(folder=True)
    target = "urn:uuid:6c2f1f0e-8f0e-4a8e-8f50-3a7d2f6c1d22"
    submission.associations.append(association(assoc_type, source, target, assoc_id="R1"))
    err = the_error(submission, "association.bad-source")
    short = assoc_type.rsplit(":", 1)[-1]
    assert err.location == "R1"
    assert f"{short} Association 'R1': the source '{source}' must be a DocumentEntry of this submission" in err.context


@pytest.mark.parametrize("assoc_type", [REPLACE, APPEND, TRANSFORM, TRANSFORM_REPLACE, SIGNS])
def test_document_relationship_from_a_new_document_is_accepted(assoc_type):
    submission = make_submission()
    target = "urn:uuid:6c2f1f0e-8f0e-4a8e-8f50-3a7d2f6c1d22"
    submission.associations.append(association(assoc_type, "Document01", target, assoc_id="R1"))
    assert validate(submission) == []


@pytest.mark.parametrize(("first", "second"), [(REPLACE, REPLACE), (REPLACE, TRANSFORM_REPLACE),
                                               (TRANSFORM_REPLACE, TRANSFORM_REPLACE)])
def test_one_document_replaced_twice(first, second):
    submission = make_submission(documents=2)
    target = "urn:uuid:6c2f1f0e-8f0e-4a8e-8f50-3a7d2f6c1d22"
    submission.associations.append(association(first, "Document01", target, assoc_id="R1"))
    submission.associations.append(association(second, "Document02", target, assoc_id="R2"))
    err = the_error(submission, "association.target-already-replaced")
    assert err.location == "R2"
    assert f"{second.rsplit(':', 1)[-1]} Association 'R2': DocumentEntry '{target}' is replaced twice" in err.context


def test_replace_and_append_of_one_document_are_accepted():
    submission = make_submission(documents=2)
    target = "urn:uuid:6c2f1f0e-8f0e-4a8e-8f50-3a7d2f6c1d22"
    submission.associations.append(association(REPLACE, "Document01", target, assoc_id="R1"))
    submission.associations.append(association(APPEND, "Document02", target, assoc_id="R2"))
    assert validate(submission) == []


def test_has_member_of_the_factory_is_the_ebrim_type():
    assert HAS_MEMBER == "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
    assert DocumentEntryType.ON_DEMAND.value == make_submission(documents=0, on_demand=1).documents[0].object_type


def test_submission_set_status_elsewhere_is_one_of_the_two_values():
    """Only a HasMember from the SubmissionSet means anything by SubmissionSetStatus; on another
    association it is kept as sent (association.submission_set_status, 32 characters), so it
    must still be Original or Reference."""
    submission = make_submission(documents=2)
    target = "urn:uuid:6c2f1f0e-8f0e-4a8e-8f50-3a7d2f6c1d22"
    submission.associations.append(association(REPLACE, "Document01", target, assoc_id="R1", status="x" * 300))
    err = the_error(submission, "association.bad-status")
    assert err.location == "R1" and len(err.context) < 400
    submission.associations[-1].submission_set_status = "Original"
    assert validate(submission) == []


# --- what the registry's columns hold (xds.store.tables): found here, not by the database -------


@pytest.mark.parametrize("size", [str(2**63), "9" * 256, "0" * 240 + str(2**64)])
def test_size_beyond_64_bits(size):
    """document_entry.size is a BIGINT: SQLite raised OverflowError, PostgreSQL 'bigint out of
    range'."""
    submission = make_submission()
    submission.documents[0].size = size
    err = the_error(submission, "limit.size")
    assert err.location == "Document01"
    assert f"more than {2**63 - 1}" in err.context and "64-bit" in err.context and len(err.context) < 300


@pytest.mark.parametrize("size", [str(2**63 - 1), "0" * 200 + "1", "0"])
def test_size_within_64_bits(size):
    submission = make_submission()
    submission.documents[0].size = size
    assert validate(submission) == []


def test_mime_type_longer_than_the_registry_stores():
    """ebRIM allows a LongName (256); the registry's column holds 128."""
    submission = make_submission()
    submission.documents[0].mime_type = "application/" + "x" * 117
    assert len(submission.documents[0].mime_type) == 129
    err = the_error(submission, "limit.stored-length")
    assert err.location == "Document01"
    assert "mimeType is 129 characters long, more than the 128 this registry stores" in err.context
    submission.documents[0].mime_type = "application/" + "x" * 116
    assert validate(submission) == []


@pytest.mark.parametrize("object_id, put", [
    ("Document01", lambda s, c: setattr(s.documents[0], "class_code", c)),
    ("Document01", lambda s, c: s.documents[0].event_codes.append(c)),
    ("SubmissionSet01", lambda s, c: setattr(s.submission_set, "content_type_code", c)),
    ("Folder01", lambda s, c: s.folders[0].codes.append(c)),
])
def test_code_longer_than_the_registry_stores(object_id, put):
    """A code is stored as code^^^codingScheme in 512 characters: two LongNames (256 each) do
    not fit; this was stored on SQLite and failed on PostgreSQL's varchar(512)."""
    submission = make_submission(folder=True)
    put(submission, Code("c" * 256, "1." + "2" * 254, "display"))
    err = the_error(submission, "limit.stored-length")
    assert err.location == object_id
    assert "515 characters long, more than the 512 this registry stores" in err.context and len(err.context) < 400
    submission = make_submission(folder=True)
    put(submission, Code("c" * 256, "1." + "2" * 251, "display"))  # 512: fits
    assert validate(submission) == []
