"""Complete, valid model Submissions for tests, built without XML (`request()` writes one as
the SubmitObjectsRequest a Document Source sends, with xds.ebrim.write).

`make_submission()` gives a SubmissionSet with one stable DocumentEntry and its HasMember
(SubmissionSetStatus Original); keyword arguments add documents, a folder, On-Demand entries.
Every value is valid and every code is one of the NIST toolkit's codes.xml, so a test changes
only what it is about:

    submission = make_submission(documents=2, folder=True)
    submission.documents[0].hash = "xyz"
    assert codes_of(validate(submission)) == ["format.hash"]

uniqueIds are fresh on every call (unique across runs too), so submissions made here can be
registered into one database one after another. Ids are symbolic ("SubmissionSet01",
"Document01", "Folder01") unless `uuids=True`.
"""

from __future__ import annotations

import itertools
import uuid

from lxml import etree

from xds.ebrim.write import write_submission
from xds.model import (
    Association,
    AssociationType,
    Author,
    Code,
    DocumentEntry,
    DocumentEntryType,
    Folder,
    Submission,
    SubmissionSet,
    SubmissionSetStatus,
)

PATIENT = "P1^^^&1.2.3&ISO"
OTHER_PATIENT = "P2^^^&1.2.3&ISO"
HASH = "da39a3ee5e6b4b0d3255bfef95601890afd80709"  # SHA-1 of no bytes
REPOSITORY = "1.2.392.200119.6.102.1"
SOURCE_ID = "1.2.392.200119.6.102.2"
OID_ROOT = "1.2.392.200119.6.102.99"

HAS_MEMBER = AssociationType.HAS_MEMBER.value
REPLACE = AssociationType.REPLACE.value
APPEND = AssociationType.APPEND.value
TRANSFORM = AssociationType.TRANSFORM.value
TRANSFORM_REPLACE = AssociationType.TRANSFORM_REPLACE.value
SIGNS = AssociationType.SIGNS.value
ORIGINAL = SubmissionSetStatus.ORIGINAL.value
REFERENCE = SubmissionSetStatus.REFERENCE.value

# Codes from ../shared/conformance-data/config/nist-codes.xml (beside the checkout)
LOINC = "2.16.840.1.113883.6.1"
SNOMED = "2.16.840.1.113883.6.96"
CONNECTATHON = "1.3.6.1.4.1.21367.2017.3"
CLASS_CODE = ("REPORTS", "1.3.6.1.4.1.19376.1.2.6.1", "Reports")
TYPE_CODE = ("34133-9", LOINC, "Summary of episode note")
FORMAT_CODE = ("urn:ihe:iti:xds-sd:text:2008", "1.3.6.1.4.1.19376.1.2.3", "ITI XDS-SD TEXT")
FACILITY_CODE = ("22232009", SNOMED, "Hospital")
PRACTICE_CODE = ("309927009", SNOMED, "General medical department")
CONFIDENTIALITY_CODE = ("N", "2.16.840.1.113883.5.25", "normal")
EVENT_CODE = ("urn:connectathon:policy:full-access", CONNECTATHON, "FULL ACCESS TO ALL POLICY")
CONTENT_TYPE_CODE = ("22232009", SNOMED, "Hospital")
FOLDER_CODE = ("Referrals", CONNECTATHON, "Referrals")

_counter = itertools.count(1)
_run = uuid.uuid4().int % 10**8


def new_oid(root: str = OID_ROOT) -> str:
    """A fresh OID, unique across runs."""
    return f"{root}.{_run}.{next(_counter)}"


def code(value: tuple[str, str, str]) -> Code:
    return Code(*value)


def author() -> Author:
    return Author(
        person="^Takamatsu^Hanako^^^Dr",
        institutions=["Kagawa Central Hospital^^^^^&1.2.392.200119.6.102.11&ISO^^^^1"],
        roles=["Attending"],
        specialties=["Internal medicine"],
    )


def make_document(doc_id: str = "Document01", patient: str = PATIENT,
                  on_demand: bool = False) -> DocumentEntry:
    """A complete DocumentEntry; On-Demand ones have no hash, size, creationTime,
    legalAuthenticator or service times."""
    doc = DocumentEntry(
        id=doc_id,
        object_type=(DocumentEntryType.ON_DEMAND if on_demand else DocumentEntryType.STABLE).value,
        unique_id=new_oid(),
        patient_id=patient,
        mime_type="text/xml",
        title="Referral letter",
        language_code="ja-JP",
        repository_unique_id=REPOSITORY,
        source_patient_id="12345^^^&1.2.392.200119.6.102.11&ISO",
        source_patient_info=["PID-3|12345^^^&1.2.392.200119.6.102.11&ISO",
                             "PID-5|Sanuki^Taro^^^", "PID-7|19560527", "PID-8|M"],
        class_code=code(CLASS_CODE),
        type_code=code(TYPE_CODE),
        format_code=code(FORMAT_CODE),
        healthcare_facility_type_code=code(FACILITY_CODE),
        practice_setting_code=code(PRACTICE_CODE),
        confidentiality_codes=[code(CONFIDENTIALITY_CODE)],
        event_codes=[code(EVENT_CODE)],
        authors=[author()],
        reference_ids=["ORD-1^^^&1.2.392.200119.6.102.13&ISO^urn:ihe:iti:xds:2013:order"],
    )
    if not on_demand:
        doc.hash = HASH
        doc.size = "0"
        doc.creation_time = "20241102091500"
        doc.service_start_time = "202411010900"
        doc.service_stop_time = "202411011000"
        doc.legal_authenticator = "^Welby^Marcus^^^Dr"
    return doc


def make_folder(folder_id: str = "Folder01", patient: str = PATIENT) -> Folder:
    return Folder(id=folder_id, unique_id=new_oid(), patient_id=patient,
                  codes=[code(FOLDER_CODE)], title="Referrals 2024")


def make_submission_set(ss_id: str = "SubmissionSet01", patient: str = PATIENT) -> SubmissionSet:
    return SubmissionSet(
        id=ss_id,
        unique_id=new_oid(),
        source_id=SOURCE_ID,
        patient_id=patient,
        submission_time="20241102091600",
        content_type_code=code(CONTENT_TYPE_CODE),
        title="Referral",
        authors=[author()],
        intended_recipients=["Kagawa University Hospital^^^^^^^^^1.2.392.200119.6.102.12"
                             "|^Sanuki^Jiro^^^Dr"],
    )


def association(assoc_type: str, source: str, target: str, assoc_id: str | None = None,
                status: str | None = None) -> Association:
    return Association(id=assoc_id or f"{_short(assoc_type)}-{source}-{target}",
                       type=assoc_type, source=source, target=target,
                       submission_set_status=status)


def has_member(source: str, target: str, status: str | None = None,
               assoc_id: str | None = None) -> Association:
    return association(HAS_MEMBER, source, target, assoc_id, status)


def _short(assoc_type: str) -> str:
    return assoc_type.rsplit(":", 1)[-1]


def make_submission(documents: int = 1, folder: bool = False, patient: str = PATIENT,
                    on_demand: int = 0, uuids: bool = False) -> Submission:
    """SubmissionSet + `documents` stable DocumentEntries + `on_demand` On-Demand ones, each
    linked by a HasMember (Original); with `folder`, a Folder holding every document, with the
    HasMember associations ITI TF-3 4.2.2.1 asks for (SubmissionSet->Folder,
    Folder->DocumentEntry, and SubmissionSet->that association)."""

    def new_id(symbolic: str) -> str:
        return f"urn:uuid:{uuid.uuid4()}" if uuids else symbolic

    ss = make_submission_set(new_id("SubmissionSet01"), patient)
    submission = Submission(submission_set=ss)
    for n in range(1, documents + on_demand + 1):
        doc = make_document(new_id(f"Document{n:02d}"), patient, on_demand=n > documents)
        submission.documents.append(doc)
        submission.associations.append(
            has_member(ss.id, doc.id, ORIGINAL, new_id(f"SS-Document{n:02d}")))
    if folder:
        fol = make_folder(new_id("Folder01"), patient)
        submission.folders.append(fol)
        submission.associations.append(has_member(ss.id, fol.id, assoc_id=new_id("SS-Folder01")))
        for n, doc in enumerate(list(submission.documents), 1):
            link = has_member(fol.id, doc.id, assoc_id=new_id(f"Folder01-Document{n:02d}"))
            submission.associations.append(link)
            submission.associations.append(
                has_member(ss.id, link.id, assoc_id=new_id(f"SS-Folder01-Document{n:02d}")))
    return submission


def request(submission: Submission) -> etree._Element:
    """The lcm:SubmitObjectsRequest (ITI-42) of `submission`, written by xds.ebrim.write."""
    return write_submission(submission)


def find(submission: Submission, object_id: str):
    """The object of the submission with that id."""
    for obj in submission.objects():
        if obj.id == object_id:
            return obj
    raise KeyError(object_id)
