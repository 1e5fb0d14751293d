"""SubmitObjectsRequests for tests, written the way an EHR would send them.

`submission()` gives a complete, valid ITI-42 request; keyword arguments add documents,
folders and relationships so each test states only what it is about.

Each helper builds the model object (xds.model) and writes it with the project's writer
(`xds.ebrim.write`), returning its XML text, so that tests can put requests together from
pieces (`request(document(...), association(...))`) and add hand-written pieces of their own.
Values are written as given, valid or not: a test about a bad hash passes `hash="xyz"`. Tests
about malformed ebRIM structure write their XML by hand (tests/test_ebrim_submission.py,
tests/test_rules_structure.py): the writer only writes well-formed structure."""

from __future__ import annotations

import itertools
import uuid

from lxml import etree

from xds.ebrim.write import write_registry_object
from xds.model import (
    Association,
    AssociationType,
    Author,
    Code,
    DocumentEntry,
    DocumentEntryType,
    Folder,
    SubmissionSet,
)

PATIENT = "P1001^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
OTHER_PATIENT = "P2002^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
HASH = "da39a3ee5e6b4b0d3255bfef95601890afd80709"

_counter = itertools.count(1)
_run = uuid.uuid4().int % 10**8


def new_oid(prefix: str = "1.2.392.200119.6.102") -> str:
    """A fresh OID, unique across runs so that tests sharing a database never collide."""
    return f"{prefix}.{_run}.{next(_counter)}"


#: Codes as (code, codingScheme, display name): the defaults of `document`, `submission_set`
#: and `folder`.
CLASS = ("34133-9", "2.16.840.1.113883.6.1", "Summary of episode note")
CONFIDENTIALITY = ("N", "2.16.840.1.113883.5.25", "Normal")
EVENT = ("ANNGEN", "1.2.840.10008.2.16.4", "Angiography")
FORMAT = ("urn:ihe:iti:xds-sd:text:2008", "1.3.6.1.4.1.19376.1.2.3", "XDS-SD text")
FACILITY = ("22232009", "2.16.840.1.113883.6.96", "Hospital")
PRACTICE = ("394802001", "2.16.840.1.113883.6.96", "General medicine")
TYPE = ("18842-5", "2.16.840.1.113883.6.1", "Discharge summary")
CONTENT_TYPE = ("18842-5", "2.16.840.1.113883.6.1", "Discharge summary")
FOLDER_CODE = ("394802001", "2.16.840.1.113883.6.96", "General medicine")
AUTHOR = "^Takamatsu^Hanako^^^Dr"
INSTITUTION = "Kagawa Central Hospital^^^^^&1.2.392.200119.6.102.11&ISO^^^^1"
SOURCE_PATIENT = "12345^^^&1.2.392.200119.6.102.11&ISO"


def key(code: tuple[str, str, str]) -> str:
    """A code as stored query parameters write it: code^^^scheme."""
    return f"{code[0]}^^^{code[1]}"


def _xml(obj) -> str:
    return etree.tostring(write_registry_object(obj), encoding="unicode")


def document(doc_id: str, unique_id: str, patient: str = PATIENT, hash: str = HASH, size: str = "0",
             title: str = "Referral letter", on_demand: bool = False, *,
             creation_time: str = "20241102091500", service_start: str | None = "202411010900",
             service_stop: str | None = "202411011000", class_code=CLASS, type_code=TYPE, format_code=FORMAT,
             facility=FACILITY, practice=PRACTICE, confidentiality=(CONFIDENTIALITY,), events=(EVENT,),
             authors=(AUTHOR,), reference_ids=()) -> str:
    """A DocumentEntry; the keyword arguments change one attribute each (codes are (code,
    scheme, display) tuples; lists may be empty, a service time None leaves the slot out).
    On-Demand entries have no hash, size or creationTime."""
    stable = not on_demand
    return _xml(DocumentEntry(
        id=doc_id,
        object_type=(DocumentEntryType.STABLE if stable else DocumentEntryType.ON_DEMAND).value,
        unique_id=unique_id,
        patient_id=patient,
        mime_type="text/xml",
        title=title,
        hash=hash if stable else None,
        size=size if stable else None,
        creation_time=creation_time if stable else None,
        service_start_time=service_start or None,
        service_stop_time=service_stop or None,
        language_code="ja-JP",
        repository_unique_id="1.2.392.200119.6.102.1",
        source_patient_id=SOURCE_PATIENT,
        source_patient_info=[f"PID-3|{SOURCE_PATIENT}", "PID-5|Sanuki^Taro^^^", "PID-7|19560527", "PID-8|M"],
        reference_ids=list(reference_ids),
        authors=[Author(person=person, institutions=[INSTITUTION], roles=["Attending"]) for person in authors],
        class_code=Code(*class_code),
        type_code=Code(*type_code),
        format_code=Code(*format_code),
        healthcare_facility_type_code=Code(*facility),
        practice_setting_code=Code(*practice),
        confidentiality_codes=[Code(*c) for c in confidentiality],
        event_codes=[Code(*c) for c in events],
    ))


def submission_set(ss_id: str, unique_id: str, patient: str = PATIENT, *, submission_time: str = "20241102091600",
                   authors=(AUTHOR,), content_type=CONTENT_TYPE, source_id: str = "1.2.392.200119.6.102.11") -> str:
    return _xml(SubmissionSet(
        id=ss_id,
        unique_id=unique_id,
        source_id=source_id,
        patient_id=patient,
        submission_time=submission_time,
        title="Discharge",
        authors=[Author(person=person) for person in authors],
        content_type_code=Code(*content_type),
    ))


def folder(folder_id: str, unique_id: str, patient: str = PATIENT, *, codes=(FOLDER_CODE,)) -> str:
    return _xml(Folder(id=folder_id, unique_id=unique_id, patient_id=patient, title="Cardiology episode",
                       codes=[Code(*c) for c in codes]))


def association(assoc_id: str, kind: str, source: str, target: str, status: str | None = None) -> str:
    """`kind`: a short name (HasMember, RPLC, ...) or any associationType, written as given."""
    known = AssociationType.from_short_name(kind)
    return _xml(Association(id=assoc_id, type=known.value if known else kind, source=source, target=target,
                            submission_set_status=status))


def request(*objects: str) -> str:
    """A SubmitObjectsRequest around the objects' XML text."""
    return (
        '<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0" '
        'xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><rim:RegistryObjectList>'
        + "".join(objects)
        + "</rim:RegistryObjectList></lcm:SubmitObjectsRequest>"
    )


def submission(patient: str = PATIENT, doc_uid: str | None = None, ss_uid: str | None = None,
               hash: str = HASH, size: str = "0", extra: tuple[str, ...] = ()) -> tuple[str, dict]:
    """One document in one submission set, symbolic ids. Returns (xml, uniqueIds)."""
    doc_uid = doc_uid or new_oid()
    ss_uid = ss_uid or new_oid()
    xml = request(
        submission_set("SubmissionSet01", ss_uid, patient),
        document("Document01", doc_uid, patient, hash=hash, size=size),
        association("as01", "HasMember", "SubmissionSet01", "Document01", "Original"),
        *extra,
    )
    return xml, {"document": doc_uid, "submission_set": ss_uid}


def element(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode())
