"""Everything wrong with a submission that can be seen without the registry's database.

What belongs here: the checks of ITI TF-3 that look at one submission alone (the model of
`xds.model`, as `xds.ebrim.submission` read it) -

- the attributes each object type requires (ITI TF-3 Table 4.3.1-3, the Document Registry's
  column for Register Document Set-b), and those an On-Demand DocumentEntry must not carry;
- the format of each value (ITI TF-3 4.2.3.1.7 data types, 4.2.3.2 DocumentEntry,
  4.2.3.3 SubmissionSet, 4.2.3.4 Folder);
- the codes of the affinity domain, when a `CodeSet` is given;
- one patient per submission;
- the associations among the objects of the submission (ITI TF-3 4.2.2);
- that every value fits the registry's column it is stored in (`xds.store.tables`), where no
  format or ebRIM length already sees to it: a value the database cannot hold is answered here,
  the same on SQLite and PostgreSQL, never by the database.

What must not be here: XML (the ebRIM structure is `xds.ebrim.submission`'s), and anything that
needs to know what the registry already holds - duplicates in the registry, targets of
relationships, known patients: that is `xds.registry.register`. An id that names no object of
the submission is taken to name an object in the registry and is left for register to judge.

Theory of operation: `validate()` runs every check and returns every problem it found, each an
`XdsError` made from a rule of `xds.rules` with the offending object's id as location. Nothing
stops at the first problem and nothing raises: a value with the wrong format gives one error,
and the checks that need the value parsed (patients, service times, codes) skip it instead of
adding more errors about the same value.

The checks that are tables - which attribute each object type requires, which format each value
must have, which attribute is coded - are the tables below, one row per attribute; a rule of
the standard is a row to add, not code to write. Code is kept for what does not fit a table:
object types, service times, uniqueIds across objects, patients and associations.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from xds import dtm
from xds.errors import XdsError
from xds.model import (
    Association,
    AssociationType,
    AvailabilityStatus,
    Code,
    DocumentEntryType,
    PatientId,
    Submission,
    SubmissionSet,
    SubmissionSetStatus,
)
from xds.model.identifiers import OID, OID_MAX, is_oid
from xds.model.metadata import REPLACING
from xds.registry.codes import MIME_TYPE, CodeSet
from xds.rules import error
from xds.store.tables import CodeRow, DocumentEntryRow

log = logging.getLogger(__name__)

TABLE = "ITI TF-3 Table 4.3.1-3"

STABLE = DocumentEntryType.STABLE.value
ON_DEMAND = DocumentEntryType.ON_DEMAND.value
APPROVED = AvailabilityStatus.APPROVED.value
HAS_MEMBER = AssociationType.HAS_MEMBER.value

# --- value formats ---------------------------------------------------------------------------
# Each checker takes a present, non-empty value and returns None if it is well formed, or a
# short reason (used by the rules whose message has a {reason}).

DOCUMENT_UNIQUE_ID_MAX_BYTES = 128  # ITI TF-3 4.2.3.2.26
_HASH = re.compile(r"[0-9A-Fa-f]{40}", re.ASCII)
_SIZE = re.compile(r"[0-9]+", re.ASCII)
_LANGUAGE = re.compile(r"(?:[A-Za-z]{2,8}|[xXiI])(?:-[A-Za-z0-9]{1,8})*", re.ASCII)
_MIME_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MIME = re.compile(
    rf"{_MIME_NAME}/{_MIME_NAME}(?:\s*;\s*[A-Za-z0-9!#$&^_.+-]+=(?:[^\s;\"]+|\"[^\"]*\"))*",
    re.ASCII,
)
_SOURCE_PATIENT_INFO = re.compile(r"PID-[1-9][0-9]*\|.+")
_HOME_COMMUNITY = re.compile(r"(?i:urn:oid:)([0-9.]+)")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]*")


def _is_iso_authority(hd: str) -> bool:
    """An HL7 HD assigning authority as XDS wants it: `&OID&ISO`."""
    parts = hd.split("&")
    return len(parts) == 3 and not parts[0] and is_oid(parts[1]) and parts[2] == "ISO"


def check_oid(value: str) -> str | None:
    if not OID.fullmatch(value):
        return "not an OID"
    if len(value) > OID_MAX:
        return f"longer than {OID_MAX} characters"
    return None


def check_document_unique_id(value: str) -> str | None:
    """OID, or OID^extension (ITI TF-3 4.2.3.2.26): at most 128 bytes in all, the OID part an
    OID of at most 64 characters. The TF's limit of 16 characters for the extension is given
    as an example for CDA documents only (the registry does not know the document's format),
    so it is not enforced here."""
    if len(value.encode("utf-8")) > DOCUMENT_UNIQUE_ID_MAX_BYTES:
        return f"longer than {DOCUMENT_UNIQUE_ID_MAX_BYTES} bytes"
    oid, caret, extension = value.partition("^")
    if not is_oid(oid):
        return "the root is not an OID of at most 64 characters"
    if caret and (not extension or "^" in extension):
        return "'^' must be followed by one extension (and is left out when there is none)"
    return None


def _matches(pattern: re.Pattern[str]) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if pattern.fullmatch(value) else "does not match"

    return check


check_hash = _matches(_HASH)
check_size = _matches(_SIZE)
check_language = _matches(_LANGUAGE)
check_mime_type = _matches(_MIME)
check_source_patient_info = _matches(_SOURCE_PATIENT_INFO)
check_uri = _matches(_URI)


def check_home_community_id(value: str) -> str | None:
    match = _HOME_COMMUNITY.fullmatch(value)
    return None if match and is_oid(match.group(1)) else "not urn:oid:OID"


def check_patient_id(value: str) -> str | None:
    """CX `id^^^&OID&ISO` (ITI TF-3 4.2.3.1.7, Table 4.2.3.1.7-2); the reason says what is wrong."""
    try:
        PatientId.parse(value)
    except ValueError as e:
        return str(e)
    return None


def check_xcn(value: str) -> str | None:
    """A person (ITI TF-3 Table 4.2.3.1.7-2, XCN): an id (XCN.1) or a name (XCN.2 family,
    XCN.3 given); an assigning authority (XCN.9), if given, is `&OID&ISO`."""
    comps = value.split("^")
    person_id = comps[0]
    family = comps[1].split("&", 1)[0] if len(comps) > 1 else ""
    given = comps[2] if len(comps) > 2 else ""
    if not (person_id or family or given):
        return "neither an id (XCN.1) nor a name (XCN.2, XCN.3)"
    if len(comps) > 8 and comps[8] and not _is_iso_authority(comps[8]):
        return "the assigning authority (XCN.9) is not &OID&ISO"
    return None


def check_xon(value: str) -> str | None:
    """An organization (ITI TF-3 Table 4.2.3.1.7-2, XON): a name (XON.1); the assigning
    authority (XON.6), if given, is `&OID&ISO` and comes with an id (XON.10); an id without an
    assigning authority must itself be an OID."""
    comps = value.split("^")
    if not comps[0]:
        return "no organization name (XON.1)"
    authority = comps[5] if len(comps) > 5 else ""
    org_id = comps[9] if len(comps) > 9 else ""
    if authority and not _is_iso_authority(authority):
        return "the assigning authority (XON.6) is not &OID&ISO"
    if authority and not org_id:
        return "an assigning authority (XON.6) without an organization id (XON.10)"
    if org_id and not authority and not is_oid(org_id):
        return "the organization id (XON.10) is not an OID and has no assigning authority (XON.6)"
    return None


def check_reference_id(value: str) -> str | None:
    """CXi (ITI TF-3 4.2.3.2.28): id^^^assigning authority^identifier type code[^...]; the id
    and the type code are required, the assigning authority (needed when the id is not globally
    unique) is `&OID&ISO` when present."""
    comps = value.split("^")
    if len(comps) < 5 or not comps[0]:
        return "needs an id (CXi.1) and an identifier type code (CXi.5)"
    if comps[1] or comps[2]:
        return "components 2 and 3 must be empty"
    if comps[3] and not _is_iso_authority(comps[3]):
        return "the assigning authority (CXi.4) is not &OID&ISO"
    if not comps[4]:
        return "no identifier type code (CXi.5)"
    return None


# --- getters: each returns the present values of an attribute --------------------------------


def _one(name: str) -> Callable[[Any], tuple[str, ...]]:
    get = attrgetter(name)

    def values(obj: Any) -> tuple[str, ...]:
        value = get(obj)
        return (value,) if value else ()

    return values


def _many(name: str) -> Callable[[Any], list[str]]:
    get = attrgetter(name)
    return lambda obj: [v for v in get(obj) if v]


def _author_persons(obj: Any) -> list[str]:
    return [a.person for a in obj.authors if a.person]


def _author_institutions(obj: Any) -> list[str]:
    return [i for a in obj.authors for i in a.institutions if i]


def _recipient_part(index: int) -> Callable[[SubmissionSet], list[str]]:
    """intendedRecipient is `XON|XCN` (either part may be empty, a third part is a telecom
    address). The organization getter also yields '' for a value with no part at all, so that
    an empty recipient is reported."""

    def values(ss: SubmissionSet) -> list[str]:
        out = []
        for value in ss.intended_recipients:
            if value is None:
                continue
            parts = value.split("|")
            part = parts[index] if len(parts) > index else ""
            if part or (index == 0 and not any(parts)):
                out.append(part)
        return out

    return values


def _present(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, (str, list, tuple)):
        return len(value) > 0
    return True


# --- the tables --------------------------------------------------------------------------------

Getter = Callable[[Any], Any]

#: When a required attribute is required: a test on the object and the words the error cites.
ALWAYS = "always"
IF_STABLE = "stable"
_WHEN: dict[str, tuple[Callable[[Any], bool], str]] = {
    ALWAYS: (lambda obj: True, TABLE),
    IF_STABLE: (lambda doc: doc.object_type == STABLE, f"for a stable DocumentEntry, {TABLE}"),
}

#: (attribute, getter, when)
DOCUMENT_REQUIRED: tuple[tuple[str, Getter, str], ...] = (
    ("objectType", attrgetter("object_type"), ALWAYS),
    ("classCode", attrgetter("class_code"), ALWAYS),
    ("confidentialityCode", attrgetter("confidentiality_codes"), ALWAYS),
    ("formatCode", attrgetter("format_code"), ALWAYS),
    ("healthcareFacilityTypeCode", attrgetter("healthcare_facility_type_code"), ALWAYS),
    ("languageCode", attrgetter("language_code"), ALWAYS),
    ("mimeType", attrgetter("mime_type"), ALWAYS),
    ("patientId", attrgetter("patient_id"), ALWAYS),
    ("practiceSettingCode", attrgetter("practice_setting_code"), ALWAYS),
    ("repositoryUniqueId", attrgetter("repository_unique_id"), ALWAYS),
    ("sourcePatientId", attrgetter("source_patient_id"), ALWAYS),
    ("typeCode", attrgetter("type_code"), ALWAYS),
    ("uniqueId", attrgetter("unique_id"), ALWAYS),
    ("creationTime", attrgetter("creation_time"), IF_STABLE),
    ("hash", attrgetter("hash"), IF_STABLE),
    ("size", attrgetter("size"), IF_STABLE),
)

#: Attributes an On-Demand DocumentEntry must not carry (ITI TF-3 Table 4.3.1-3, ITI TF-2
#: 3.61.4.1.2): they describe one stable rendition of a document, which it does not have.
#: (attribute, getter)
ON_DEMAND_FORBIDDEN: tuple[tuple[str, Getter], ...] = (
    ("creationTime", attrgetter("creation_time")),
    ("hash", attrgetter("hash")),
    ("legalAuthenticator", attrgetter("legal_authenticator")),
    ("serviceStartTime", attrgetter("service_start_time")),
    ("serviceStopTime", attrgetter("service_stop_time")),
    ("size", attrgetter("size")),
)

SUBMISSION_SET_REQUIRED: tuple[tuple[str, Getter, str], ...] = (
    ("contentTypeCode", attrgetter("content_type_code"), ALWAYS),
    ("patientId", attrgetter("patient_id"), ALWAYS),
    ("sourceId", attrgetter("source_id"), ALWAYS),
    ("submissionTime", attrgetter("submission_time"), ALWAYS),
    ("uniqueId", attrgetter("unique_id"), ALWAYS),
)

FOLDER_REQUIRED: tuple[tuple[str, Getter, str], ...] = (
    ("codeList", attrgetter("codes"), ALWAYS),
    ("patientId", attrgetter("patient_id"), ALWAYS),
    ("title", attrgetter("title"), ALWAYS),
    ("uniqueId", attrgetter("unique_id"), ALWAYS),
)

ASSOCIATION_REQUIRED: tuple[tuple[str, Getter, str], ...] = (
    ("associationType", attrgetter("type"), ALWAYS),
    ("sourceObject", attrgetter("source"), ALWAYS),
    ("targetObject", attrgetter("target"), ALWAYS),
)

#: (attribute, getter of its present values, checker, rule id)
DOCUMENT_FORMATS: tuple[tuple[str, Getter, Callable[[str], str | None], str], ...] = (
    ("uniqueId", _one("unique_id"), check_document_unique_id, "format.unique-id"),
    ("patientId", _one("patient_id"), check_patient_id, "format.patient-id"),
    ("sourcePatientId", _one("source_patient_id"), check_patient_id, "format.patient-id"),
    ("sourcePatientInfo", _many("source_patient_info"), check_source_patient_info,
     "format.source-patient-info"),
    ("creationTime", _one("creation_time"), dtm.check, "format.dtm"),
    ("serviceStartTime", _one("service_start_time"), dtm.check, "format.dtm"),
    ("serviceStopTime", _one("service_stop_time"), dtm.check, "format.dtm"),
    ("hash", _one("hash"), check_hash, "format.hash"),
    ("size", _one("size"), check_size, "format.size"),
    ("languageCode", _one("language_code"), check_language, "format.language"),
    ("mimeType", _one("mime_type"), check_mime_type, "format.mime-type"),
    ("repositoryUniqueId", _one("repository_unique_id"), check_oid, "format.oid"),
    ("homeCommunityId", _one("home_community_id"), check_home_community_id,
     "format.home-community-id"),
    ("URI", _one("uri"), check_uri, "format.uri"),
    ("legalAuthenticator", _one("legal_authenticator"), check_xcn, "format.xcn"),
    ("authorPerson", _author_persons, check_xcn, "format.xcn"),
    ("authorInstitution", _author_institutions, check_xon, "format.xon"),
    ("referenceIdList", _many("reference_ids"), check_reference_id, "format.reference-id"),
)

SUBMISSION_SET_FORMATS: tuple[tuple[str, Getter, Callable[[str], str | None], str], ...] = (
    ("uniqueId", _one("unique_id"), check_oid, "format.oid"),
    ("sourceId", _one("source_id"), check_oid, "format.oid"),
    ("patientId", _one("patient_id"), check_patient_id, "format.patient-id"),
    ("submissionTime", _one("submission_time"), dtm.check, "format.dtm"),
    ("homeCommunityId", _one("home_community_id"), check_home_community_id,
     "format.home-community-id"),
    ("authorPerson", _author_persons, check_xcn, "format.xcn"),
    ("authorInstitution", _author_institutions, check_xon, "format.xon"),
    ("intendedRecipient", _recipient_part(0), check_xon, "format.xon"),
    ("intendedRecipient", _recipient_part(1), check_xcn, "format.xcn"),
)

FOLDER_FORMATS: tuple[tuple[str, Getter, Callable[[str], str | None], str], ...] = (
    ("uniqueId", _one("unique_id"), check_oid, "format.oid"),
    ("patientId", _one("patient_id"), check_patient_id, "format.patient-id"),
    ("homeCommunityId", _one("home_community_id"), check_home_community_id,
     "format.home-community-id"),
)


def _codes(*names: str) -> Callable[[Any], list[Code]]:
    getters = [attrgetter(n) for n in names]

    def values(obj: Any) -> list[Code]:
        out: list[Code] = []
        for get in getters:
            value = get(obj)
            if isinstance(value, list):
                out.extend(c for c in value if c is not None)
            elif value is not None:
                out.append(value)
        return out

    return values


#: (attribute name as in codes.xml, getter of its codes)
DOCUMENT_CODES: tuple[tuple[str, Callable[[Any], list[Code]]], ...] = (
    ("classCode", _codes("class_code")),
    ("typeCode", _codes("type_code")),
    ("formatCode", _codes("format_code")),
    ("healthcareFacilityTypeCode", _codes("healthcare_facility_type_code")),
    ("practiceSettingCode", _codes("practice_setting_code")),
    ("confidentialityCode", _codes("confidentiality_codes")),
    ("eventCodeList", _codes("event_codes")),
)
SUBMISSION_SET_CODES = (("contentTypeCode", _codes("content_type_code")),)
FOLDER_CODES = (("folderCodeList", _codes("codes")),)


@dataclass(frozen=True)
class ObjectRules:
    """The tables of one object type."""

    what: str
    missing_rule: str
    required: tuple[tuple[str, Getter, str], ...]
    formats: tuple[tuple[str, Getter, Callable[[str], str | None], str], ...]
    codes: tuple[tuple[str, Callable[[Any], list[Code]]], ...]


DOCUMENT = ObjectRules("DocumentEntry", "document.missing", DOCUMENT_REQUIRED, DOCUMENT_FORMATS,
                      DOCUMENT_CODES)
SUBMISSION_SET = ObjectRules("SubmissionSet", "submission-set.missing", SUBMISSION_SET_REQUIRED,
                            SUBMISSION_SET_FORMATS, SUBMISSION_SET_CODES)
FOLDER = ObjectRules("Folder", "folder.missing", FOLDER_REQUIRED, FOLDER_FORMATS, FOLDER_CODES)
ASSOCIATION = ObjectRules("Association", "association.missing", ASSOCIATION_REQUIRED, (), ())


# --- the checks ----------------------------------------------------------------------------------


def validate(submission: Submission, codes: CodeSet | None = None) -> list[XdsError]:
    """Every problem of the submission that can be seen without the registry's database."""
    errors: list[XdsError] = []
    for check in _CHECKS:
        try:
            check(submission, codes, errors)
        except Exception:  # a bug here must not become a stack trace for the client
            log.exception("validation step %s failed", check.__name__)
            errors.append(error("registry.internal",
                                reason=f"the metadata check '{check.__name__}' failed"))
    return errors


def _kinds(submission: Submission) -> Iterable[tuple[ObjectRules, Any]]:
    if submission.submission_set is not None:
        yield SUBMISSION_SET, submission.submission_set
    for doc in submission.documents:
        yield DOCUMENT, doc
    for folder in submission.folders:
        yield FOLDER, folder


def _check_objects(submission: Submission, codes: CodeSet | None, errors: list[XdsError]) -> None:
    """The tables: required attributes, formats, codes and status of every object."""
    for kind, obj in _kinds(submission):
        _check_required(kind, obj, errors)
        bad_values = _check_formats(kind, obj, errors)
        if codes is not None:
            _check_codes(kind, obj, codes, bad_values, errors)
        if obj.status and obj.status != APPROVED:
            errors.append(error("object.bad-status", obj.id, what=kind.what, id=obj.id,
                                value=obj.status))
    for association in submission.associations:
        _check_required(ASSOCIATION, association, errors)
        status = getattr(association, "status", None)
        if status and status != APPROVED:
            errors.append(error("object.bad-status", association.id, what=ASSOCIATION.what,
                                id=association.id, value=status))


def _check_required(kind: ObjectRules, obj: Any, errors: list[XdsError]) -> None:
    for attribute, get, when in kind.required:
        applies, how = _WHEN[when]
        if applies(obj) and not _present(get(obj)):
            errors.append(error(kind.missing_rule, obj.id, id=obj.id, attribute=attribute, how=how))


def _check_formats(kind: ObjectRules, obj: Any, errors: list[XdsError]) -> set[str]:
    """Adds an error per malformed value; returns the attributes that had one."""
    bad: set[str] = set()
    for attribute, values, check, rule_id in kind.formats:
        for value in values(obj):
            reason = check(value)
            if reason is not None:
                bad.add(attribute)
                errors.append(error(rule_id, obj.id, what=kind.what, id=obj.id,
                                    attribute=attribute, value=value, reason=reason))
    return bad


def _check_codes(kind: ObjectRules, obj: Any, codes: CodeSet, bad_values: set[str],
                 errors: list[XdsError]) -> None:
    for attribute, values in kind.codes:
        for code in values(obj):
            if not codes.allows(attribute, code):
                errors.append(error("code.unknown", obj.id, what=kind.what, id=obj.id,
                                    attribute=attribute, code=code.code, scheme=code.scheme))
    if (kind is DOCUMENT and obj.mime_type and "mimeType" not in bad_values
            and not codes.allows_mime_type(obj.mime_type)):
        errors.append(error("code.unknown", obj.id, what=kind.what, id=obj.id,
                            attribute=MIME_TYPE, code=obj.mime_type,
                            scheme="the MIME types of this affinity domain"))


def _check_documents(submission: Submission, codes: CodeSet | None,
                     errors: list[XdsError]) -> None:
    """What is not a table: the objectType, and service start before stop."""
    for doc in submission.documents:
        if doc.object_type == ON_DEMAND:
            for attribute, get in ON_DEMAND_FORBIDDEN:
                if _present(get(doc)):
                    errors.append(error("document.on-demand-forbidden", doc.id, id=doc.id,
                                        attribute=attribute))
        elif doc.object_type and doc.object_type != STABLE:
            errors.append(error("document.bad-object-type", doc.id, id=doc.id,
                                value=doc.object_type))
        start, stop = doc.service_start_time, doc.service_stop_time
        if start and stop and dtm.check(start) is None and dtm.check(stop) is None:
            n = min(len(start), len(stop))  # compare on the precision both have
            if start[:n] > stop[:n]:
                errors.append(error("format.service-times", doc.id, id=doc.id, start=start,
                                    stop=stop))


def _check_unique_ids(submission: Submission, codes: CodeSet | None,
                      errors: list[XdsError]) -> None:
    """One error per uniqueId that more than one object of the submission carries."""
    holders: dict[str, list[Any]] = {}
    for kind, obj in _kinds(submission):
        if obj.unique_id:
            holders.setdefault(obj.unique_id, []).append((kind, obj))
    for value, objects in holders.items():
        if len(objects) > 1:
            errors.append(error("unique-id.in-message", objects[0][1].id, value=value,
                                ids=", ".join(f"{k.what} '{o.id}'" for k, o in objects)))


def _parse_patient(value: str | None) -> PatientId | None:
    if not value:
        return None
    try:
        return PatientId.parse(value)
    except ValueError:
        return None


def _check_patients(submission: Submission, codes: CodeSet | None,
                    errors: list[XdsError]) -> None:
    """Every DocumentEntry and Folder is for the SubmissionSet's patient (ITI TF-3 4.2.3.2.16
    and the Folder's patientId). Malformed or missing ids are reported by the format and
    required checks."""
    ss = submission.submission_set
    expected = _parse_patient(ss.patient_id) if ss is not None else None
    if expected is None:
        return
    for kind, obj in _kinds(submission):
        if obj is ss:
            continue
        patient = _parse_patient(obj.patient_id)
        if patient is not None and patient != expected:
            errors.append(error("patient.mismatch", obj.id, what=kind.what, id=obj.id,
                                patient=obj.patient_id, expected=ss.patient_id))


def _short(association_type: str) -> str:
    """`urn:ihe:iti:2007:AssociationType:RPLC` -> `RPLC`."""
    return association_type.rsplit(":", 1)[-1]


def _check_associations(submission: Submission, codes: CodeSet | None,
                        errors: list[XdsError]) -> None:
    """Associations among the objects of the submission (ITI TF-3 4.2.2). An id that is not in
    the submission names an object in the registry; whether it exists is register's question."""
    ss = submission.submission_set
    ss_id = ss.id if ss is not None else None
    kind_of: dict[str, str] = {}
    for kind, obj in _kinds(submission):
        kind_of[obj.id] = kind.what
    for association in submission.associations:
        kind_of.setdefault(association.id, ASSOCIATION.what)

    ss_members = {
        a.target for a in submission.associations
        if a.type == HAS_MEMBER and ss_id is not None and a.source == ss_id
    }
    replaced: set[str] = set()

    for a in submission.associations:
        from_ss = a.type == HAS_MEMBER and ss_id is not None and a.source == ss_id
        if not from_ss and a.submission_set_status not in (None, *SUBMISSION_SET_STATUSES):
            # only a HasMember from the SubmissionSet means anything by it (_check_has_member);
            # elsewhere it is kept as sent, so it must still be one of the two values
            errors.append(error("association.bad-status", a.id, id=a.id, value=a.submission_set_status[:SHOWN]))
        if not (a.type and a.source and a.target):
            continue  # reported as association.missing
        association_type = a.association_type
        if association_type is None:
            errors.append(error("association.bad-type", a.id, id=a.id, value=a.type))
            continue
        if a.source == a.target:
            errors.append(error("association.self", a.id, id=a.id, source=a.source))
            continue
        if association_type is AssociationType.HAS_MEMBER:
            _check_has_member(a, ss_id, kind_of, ss_members, errors)
            continue
        # a document relationship: RPLC, APND, XFRM, XFRM_RPLC, signs, IsSnapshotOf
        if kind_of.get(a.source) != DOCUMENT.what:
            errors.append(error("association.bad-source", a.id, type=_short(a.type), id=a.id,
                                source=a.source))
        if association_type in REPLACING:
            if a.target in replaced:
                errors.append(error("association.target-already-replaced", a.id,
                                    type=_short(a.type), id=a.id, target=a.target))
            replaced.add(a.target)

    if ss_id is not None:
        for kind, obj in _kinds(submission):
            if kind is not SUBMISSION_SET and obj.id not in ss_members:
                errors.append(error("association.not-in-submission-set", obj.id,
                                    what=kind.what, id=obj.id, ss=ss_id))


def _check_has_member(a: Association, ss_id: str | None, kind_of: dict[str, str],
                      ss_members: set[str], errors: list[XdsError]) -> None:
    source_kind = kind_of.get(a.source)  # None: an object in the registry
    target_kind = kind_of.get(a.target)
    if ss_id is not None and a.source == ss_id:
        status = a.submission_set_status
        if status is None:
            if target_kind == DOCUMENT.what:
                errors.append(error("association.no-status", a.id, id=a.id, target=a.target))
            return
        expected = (SubmissionSetStatus.ORIGINAL if target_kind is not None
                    else SubmissionSetStatus.REFERENCE).value
        if status != expected:
            errors.append(error("association.bad-status", a.id, id=a.id, value=status))
        return
    if source_kind not in (None, FOLDER.what) or target_kind not in (None, DOCUMENT.what):
        errors.append(error("association.bad-member", a.id, id=a.id, source=a.source,
                            target=a.target))
        return
    # A Folder gets a DocumentEntry: the SubmissionSet must include this association
    # (ITI TF-3 4.2.2.1, adding a DocumentEntry to a Folder; NIST tests 12000, 12001).
    if ss_id is not None and a.id and a.id not in ss_members:
        errors.append(error("association.folder-member-unlinked", a.id, id=a.id,
                            source=a.source, target=a.target, ss=ss_id))


# --- what the registry's columns hold ------------------------------------------------------------
# Every value of a submission that reaches a column of xds.store.tables is bounded before it gets
# there: ids are UUIDs (the reader) or assigned; uniqueIds, sourceId, repositoryUniqueId and
# homeCommunityId by their formats (OIDs of at most 64 characters, a document uniqueId of at
# most 128 bytes); hash, times, status, objectType and associationType by their formats or
# vocabularies; patient ids, author persons and referenceIdList values by ebRIM's LongName (the
# reader). What is left is checked here.

#: document_entry.size is a BIGINT: a signed 64-bit integer.
MAX_SIZE = 2**63 - 1
#: document_entry.mime_type (ebRIM allows a LongName, 256; real MIME types are far shorter).
MIME_TYPE_MAX = DocumentEntryRow.__table__.c.mime_type.type.length
#: code.value: a coded value as code^^^codingScheme (each part a LongName of 256).
CODE_MAX = CodeRow.__table__.c.value.type.length
#: association.submission_set_status
SUBMISSION_SET_STATUSES = frozenset(status.value for status in SubmissionSetStatus)
SHOWN = 40  # how much of a long value a message shows


def _check_stored(submission: Submission, codes: CodeSet | None, errors: list[XdsError]) -> None:
    """Values the registry's columns could not hold (see above)."""
    for kind, obj in _kinds(submission):
        for attribute, values in kind.codes:
            for code in values(obj):
                if len(code.code) + len(code.scheme) > CODE_MAX - 3:
                    key = code.key()
                    errors.append(error("limit.stored-length", obj.id, what=kind.what, id=obj.id,
                                        attribute=f"{attribute} '{code.code[:SHOWN]}' with its codingScheme "
                                                  f"(stored as code^^^codingScheme)",
                                        length=len(key), limit=CODE_MAX, start=key[:SHOWN]))
    for doc in submission.documents:
        if doc.mime_type and len(doc.mime_type) > MIME_TYPE_MAX:
            errors.append(error("limit.stored-length", doc.id, what=DOCUMENT.what, id=doc.id,
                                attribute="mimeType", length=len(doc.mime_type), limit=MIME_TYPE_MAX,
                                start=doc.mime_type[:SHOWN]))
        size = doc.size
        if size and check_size(size) is None:
            digits = size.lstrip("0")
            if len(digits) > len(str(MAX_SIZE)) or (len(digits) == len(str(MAX_SIZE)) and int(digits) > MAX_SIZE):
                shown = size if len(size) <= 2 * SHOWN else f"{size[:SHOWN]}... ({len(size)} digits)"
                errors.append(error("limit.size", doc.id, id=doc.id, value=shown, limit=MAX_SIZE))


_CHECKS: tuple[Callable[[Submission, CodeSet | None, list[XdsError]], None], ...] = (
    _check_objects,
    _check_documents,
    _check_unique_ids,
    _check_patients,
    _check_associations,
    _check_stored,
)
