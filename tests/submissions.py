"""SubmitObjectsRequests for tests, written the way an EHR would send them.

`submission()` gives a complete, valid ITI-42 request; keyword arguments add documents,
folders and relationships so each test states only what it is about."""

from __future__ import annotations

import itertools
import uuid
from xml.sax.saxutils import escape

from lxml import etree

from xds.model import AssociationType

PATIENT = "P1001^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
OTHER_PATIENT = "P2002^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"


def _x(value: str) -> str:
    return escape(value, {'"': "&quot;"})
HASH = "da39a3ee5e6b4b0d3255bfef95601890afd80709"

_counter = itertools.count(1)
_run = uuid.uuid4().int % 10**8


def new_oid(prefix: str = "1.2.392.200119.6.102") -> str:
    """A fresh OID, unique across runs so that tests sharing a database never collide."""
    return f"{prefix}.{_run}.{next(_counter)}"


def _nested(obj_id: str, part: str) -> str:
    """The id of a classification or external identifier inside `obj_id` (never a broken urn:uuid)."""
    return f"{part}-{obj_id[-12:]}" if obj_id.startswith("urn:uuid:") else f"{obj_id}-{part}"


def _slot(name: str, *values: str) -> str:
    vals = "".join(f"<rim:Value>{_x(v)}</rim:Value>" for v in values)
    return f'<rim:Slot name="{name}"><rim:ValueList>{vals}</rim:ValueList></rim:Slot>'


def _code(cid: str, scheme: str, obj: str, code: str, system: str, display: str) -> str:
    return (
        f'<rim:Classification id="{cid}" classificationScheme="{scheme}" classifiedObject="{obj}" '
        f'nodeRepresentation="{_x(code)}">{_slot("codingScheme", system)}'
        f'<rim:Name><rim:LocalizedString value="{_x(display)}"/></rim:Name></rim:Classification>'
    )


def _ext(eid: str, scheme: str, obj: str, value: str, name: str) -> str:
    return (
        f'<rim:ExternalIdentifier id="{eid}" identificationScheme="{scheme}" registryObject="{obj}" '
        f'value="{_x(value)}"><rim:Name><rim:LocalizedString value="{name}"/></rim:Name></rim:ExternalIdentifier>'
    )


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


def key(code: tuple[str, str, str]) -> str:
    """A code as stored query parameters write it: code^^^scheme."""
    return f"{code[0]}^^^{code[1]}"


def _numbered(obj_id: str, part: str, i: int) -> str:
    return _nested(obj_id, part if i == 0 else f"{part}{i + 1}")


def _author(cid: str, scheme: str, obj: str, person: str, institution: bool) -> str:
    return (
        f'<rim:Classification id="{cid}" classificationScheme="{scheme}" classifiedObject="{obj}" nodeRepresentation="">'
        + _slot("authorPerson", person)
        + (_slot("authorInstitution", "Kagawa Central Hospital^^^^^&1.2.392.200119.6.102.11&ISO^^^^1")
           + _slot("authorRole", "Attending") if institution else "")
        + "</rim:Classification>"
    )


def document(doc_id: str, unique_id: str, patient: str = PATIENT, hash: str = HASH, size: str = "0",
             title: str = "Referral letter", on_demand: bool = False, *,
             creation_time: str = "20241102091500", service_start: str | None = "202411010900",
             service_stop: str | None = "202411011000", class_code=CLASS, type_code=TYPE, format_code=FORMAT,
             facility=FACILITY, practice=PRACTICE, confidentiality=(CONFIDENTIALITY,), events=(EVENT,),
             authors=(AUTHOR,), reference_ids=()) -> str:
    """A DocumentEntry; the keyword arguments change one attribute each (codes are (code,
    scheme, display) tuples; lists may be empty, a service time None leaves the slot out)."""
    object_type = ("urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248" if on_demand
                   else "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1")
    stable = "" if on_demand else _slot("hash", hash) + _slot("size", size) + _slot("creationTime", creation_time)
    return (
        f'<rim:ExtrinsicObject id="{doc_id}" mimeType="text/xml" objectType="{object_type}">'
        + stable
        + _slot("languageCode", "ja-JP")
        + _slot("repositoryUniqueId", "1.2.392.200119.6.102.1")
        + (_slot("serviceStartTime", service_start) if service_start else "")
        + (_slot("serviceStopTime", service_stop) if service_stop else "")
        + _slot("sourcePatientId", "12345^^^&1.2.392.200119.6.102.11&ISO")
        + _slot("sourcePatientInfo", "PID-3|12345^^^&1.2.392.200119.6.102.11&ISO", "PID-5|Sanuki^Taro^^^",
                "PID-7|19560527", "PID-8|M")
        + (_slot("urn:ihe:iti:xds:2013:referenceIdList", *reference_ids) if reference_ids else "")
        + f'<rim:Name><rim:LocalizedString value="{_x(title)}"/></rim:Name>'
        + "".join(_author(_numbered(doc_id, "author", i), "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d", doc_id,
                          person, institution=True) for i, person in enumerate(authors))
        + _code(_nested(doc_id, "class"), "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a", doc_id, *class_code)
        + "".join(_code(_numbered(doc_id, "conf", i), "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f", doc_id, *c)
                  for i, c in enumerate(confidentiality))
        + "".join(_code(_numbered(doc_id, "event", i), "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4", doc_id, *c)
                  for i, c in enumerate(events))
        + _code(_nested(doc_id, "format"), "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d", doc_id, *format_code)
        + _code(_nested(doc_id, "hcft"), "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1", doc_id, *facility)
        + _code(_nested(doc_id, "practice"), "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead", doc_id, *practice)
        + _code(_nested(doc_id, "type"), "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983", doc_id, *type_code)
        + _ext(_nested(doc_id, "pid"), "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427", doc_id, patient,
               "XDSDocumentEntry.patientId")
        + _ext(_nested(doc_id, "uid"), "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab", doc_id, unique_id,
               "XDSDocumentEntry.uniqueId")
        + "</rim:ExtrinsicObject>"
    )


def submission_set(ss_id: str, unique_id: str, patient: str = PATIENT, *, submission_time: str = "20241102091600",
                   authors=(AUTHOR,), content_type=CONTENT_TYPE, source_id: str = "1.2.392.200119.6.102.11") -> str:
    return (
        f'<rim:RegistryPackage id="{ss_id}">'
        + _slot("submissionTime", submission_time)
        + '<rim:Name><rim:LocalizedString value="Discharge"/></rim:Name>'
        + "".join(_author(_numbered(ss_id, "author", i), "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d", ss_id,
                          person, institution=False) for i, person in enumerate(authors))
        + _code(_nested(ss_id, "ct"), "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500", ss_id, *content_type)
        + _ext(_nested(ss_id, "uid"), "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8", ss_id, unique_id,
               "XDSSubmissionSet.uniqueId")
        + _ext(_nested(ss_id, "src"), "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832", ss_id,
               source_id, "XDSSubmissionSet.sourceId")
        + _ext(_nested(ss_id, "pid"), "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446", ss_id, patient,
               "XDSSubmissionSet.patientId")
        + "</rim:RegistryPackage>"
        + f'<rim:Classification id="{_nested(ss_id, "node")}" classifiedObject="{ss_id}" '
          'classificationNode="urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"/>'
    )


def folder(folder_id: str, unique_id: str, patient: str = PATIENT, *, codes=(FOLDER_CODE,)) -> str:
    return (
        f'<rim:RegistryPackage id="{folder_id}">'
        + '<rim:Name><rim:LocalizedString value="Cardiology episode"/></rim:Name>'
        + "".join(_code(_numbered(folder_id, "code", i), "urn:uuid:1ba97051-7806-41a8-a48b-8fce7af683c5", folder_id, *c)
                  for i, c in enumerate(codes))
        + _ext(_nested(folder_id, "uid"), "urn:uuid:75df8f67-9973-4fbe-a900-df66cefecc5a", folder_id, unique_id,
               "XDSFolder.uniqueId")
        + _ext(_nested(folder_id, "pid"), "urn:uuid:f64ffdf0-4b97-4e06-b79f-a52b38ec2f8a", folder_id, patient,
               "XDSFolder.patientId")
        + "</rim:RegistryPackage>"
        + f'<rim:Classification id="{_nested(folder_id, "node")}" classifiedObject="{folder_id}" '
          'classificationNode="urn:uuid:d9d542f3-6cc4-48b6-8870-ea235fbc94c2"/>'
    )


def association(assoc_id: str, kind: str, source: str, target: str, status: str | None = None) -> str:
    known = AssociationType.from_short_name(kind)
    slot = _slot("SubmissionSetStatus", status) if status else ""
    return (f'<rim:Association id="{assoc_id}" associationType="{known.value if known else kind}" '
            f'sourceObject="{source}" targetObject="{target}">{slot}</rim:Association>')


def request(*objects: str) -> str:
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
