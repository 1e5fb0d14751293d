"""The benchmark's registry content and requests, generated deterministically.

What belongs here: what is in the registry (patients, their documents and submission sets,
with the metadata an EHR would send) and the SOAP bodies the benchmark sends. Nothing here
touches a database or a socket.

The registry: `PATIENTS` patients, each with 10 DocumentEntries registered in 4
SubmissionSets of 1, 2, 3 and 4 documents (ITI-42 requests, symbolic ids). Everything about
patient p follows from p alone (`random.Random(p)`), so the query benchmark can name any
patient's documents and submission sets, and know what a filtered query must find, without
reading the database:

    patient_id(p)             Bnnnnnn^^^&1.2.392.200119.6.102.11.1&ISO
    document_unique_id(p, d)  d = 1..10
    submission_unique_id(p, s) s = 1..4 (submission s carries documents d with SUBMISSION_OF[d] == s)

The metadata varies the way a regional network's does: class, type, format, practice setting
and facility type codes drawn with skewed weights from realistic sets (LOINC, SNOMED CT,
IHE format codes), 0-3 event codes, 1-2 confidentiality codes, 1-3 authors with institution,
role and specialty, creation times spread over 2012-2025, a hash and a size per document.

Request templates (`register_template`, `query_template`) hold placeholders the load
generators fill per request (bench/run.py, and the wrk script it writes):

    {{P6}}  patient number, 6 digits      {{PN}} patient number
    {{D}}   document number 1..10         {{S}}  submission number 1..4
    {{N}}   a value unique to the request (for uniqueIds of new submissions)
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass
from xml.sax.saxutils import escape

from lxml import etree

from xds.ebrim.write import write_submission
from xds.model import (
    Association,
    AssociationType,
    Author,
    AvailabilityStatus,
    Code,
    DocumentEntry,
    DocumentEntryType,
    Submission,
    SubmissionSet,
    SubmissionSetStatus,
)

PATIENTS = 100_000
DOCUMENTS_PER_PATIENT = 10
#: Documents 1..10 go to submissions 1 (1 doc), 2 (2 docs), 3 (3 docs), 4 (4 docs).
SUBMISSION_OF = {1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 3, 7: 4, 8: 4, 9: 4, 10: 4}
SUBMISSIONS_PER_PATIENT = 4

PATIENT_OID = "1.2.392.200119.6.102.11.1"
DOC_UID_ROOT = "1.2.392.200119.6.102.9"
SS_UID_ROOT = "1.2.392.200119.6.102.8"
NEW_UID_ROOT = "1.2.392.200119.6.102.7"  # documents the register benchmark adds

# XDS constants the requests use (ITI TF-3 4.2.5); the ebRIM layout is xds.ebrim's
STABLE = DocumentEntryType.STABLE.value
APPROVED = AvailabilityStatus.APPROVED.value
HAS_MEMBER = AssociationType.HAS_MEMBER.value
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"

# ITI-18 stored query ids (ITI TF-2a 3.18.4.1.2.3.7)
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
GET_SUBMISSION_SET_AND_CONTENTS = "urn:uuid:e8e3cb2c-e39c-46b9-99e4-c12f57260b83"

LOINC = "2.16.840.1.113883.6.1"
SNOMED = "2.16.840.1.113883.6.96"
FORMATS = "1.3.6.1.4.1.19376.1.2.3"

# (code, scheme, display, weight)
CLASS_CODES = [
    ("11490-0", LOINC, "Physician Discharge summary", 20),
    ("57133-1", LOINC, "Referral note", 25),
    ("11502-2", LOINC, "Laboratory report", 30),
    ("18748-4", LOINC, "Diagnostic imaging study", 12),
    ("57833-6", LOINC, "Prescription for medication", 15),
    ("11506-3", LOINC, "Progress note", 10),
    ("34133-9", LOINC, "Summary of episode note", 6),
    ("60591-5", LOINC, "Patient summary Document", 4),
    ("11488-4", LOINC, "Consult note", 8),
    ("28570-0", LOINC, "Procedure note", 5),
]
TYPE_CODES = [
    ("18842-5", LOINC, "Discharge summary", 10), ("34140-4", LOINC, "Transfer of care referral note", 12),
    ("11502-2", LOINC, "Laboratory report", 15), ("24606-6", LOINC, "MG Breast Screening", 2),
    ("18782-3", LOINC, "Radiology Study observation", 8), ("57833-6", LOINC, "Prescription for medication", 12),
    ("34117-2", LOINC, "History and physical note", 5), ("11526-1", LOINC, "Pathology study", 3),
    ("34111-5", LOINC, "Emergency department note", 6), ("34109-9", LOINC, "Note", 4),
    ("11504-8", LOINC, "Surgical operation note", 3), ("18761-7", LOINC, "Transfer summary note", 3),
    ("34745-0", LOINC, "Nurse Discharge summary", 3), ("57828-6", LOINC, "Prescription list", 3),
    ("18726-0", LOINC, "Radiology studies", 4), ("28634-4", LOINC, "Miscellaneous studies", 1),
    ("11488-4", LOINC, "Consult note", 5), ("42348-3", LOINC, "Advance directives", 1),
    ("59258-4", LOINC, "Emergency department Discharge summary", 2), ("68834-1", LOINC, "Family medicine note", 2),
]
FORMAT_CODES = [
    ("urn:ihe:pcc:xphr:2007", FORMATS, "Exchange of Personal Health Records", "text/xml", 10),
    ("urn:ihe:iti:xds-sd:pdf:2008", FORMATS, "Scanned Documents (PDF)", "application/pdf", 30),
    ("urn:ihe:iti:xds-sd:text:2008", FORMATS, "Scanned Documents (text)", "text/plain", 5),
    ("urn:ihe:lab:xd-lab:2008", FORMATS, "CDA Laboratory Report", "text/xml", 25),
    ("urn:ihe:rad:TEXT", FORMATS, "Radiology Report text", "text/plain", 6),
    ("urn:ihe:rad:1.2.840.10008.5.1.4.1.1.88.59", FORMATS, "Key Object Selection", "application/dicom", 8),
    ("urn:ihe:pharm:pre:2010", FORMATS, "Community Prescription", "text/xml", 12),
    ("urn:hl7-org:sdwg:ccda-structuredBody:2.1", FORMATS, "C-CDA Structured Body", "text/xml", 4),
]
PRACTICE_CODES = [
    ("394802001", SNOMED, "General medicine", 20), ("394579002", SNOMED, "Cardiology", 10),
    ("394585009", SNOMED, "Obstetrics and gynecology", 6), ("394537008", SNOMED, "Pediatric specialty", 8),
    ("394609007", SNOMED, "General surgery", 8), ("394801008", SNOMED, "Trauma and orthopedics", 7),
    ("394914008", SNOMED, "Radiology", 9), ("394591006", SNOMED, "Neurology", 5),
    ("394583002", SNOMED, "Endocrinology", 4), ("394584008", SNOMED, "Gastroenterology", 5),
    ("394587001", SNOMED, "Psychiatry", 4), ("394810000", SNOMED, "Rheumatology", 2),
    ("394589003", SNOMED, "Nephrology", 3), ("394592004", SNOMED, "Clinical oncology", 5),
    ("394595002", SNOMED, "Pathology", 4),
]
FACILITY_CODES = [
    ("22232009", SNOMED, "Hospital", 40), ("264358009", SNOMED, "General practice premises", 25),
    ("225728007", SNOMED, "Accident and Emergency department", 8), ("33022008", SNOMED, "Hospital-based outpatient clinic", 15),
    ("708175003", SNOMED, "Pharmacy", 7), ("261904005", SNOMED, "Laboratory", 5),
]
EVENT_CODES = [
    (code, SNOMED, display, 1) for code, display in [
        ("38341003", "Hypertensive disorder"), ("44054006", "Diabetes mellitus type 2"),
        ("195967001", "Asthma"), ("22298006", "Myocardial infarction"), ("230690007", "Cerebrovascular accident"),
        ("13645005", "Chronic obstructive lung disease"), ("84114007", "Heart failure"),
        ("49436004", "Atrial fibrillation"), ("73211009", "Diabetes mellitus"), ("35489007", "Depressive disorder"),
        ("363346000", "Malignant neoplastic disease"), ("90708001", "Kidney disease"),
        ("396275006", "Osteoarthritis"), ("40055000", "Chronic sinusitis"), ("233604007", "Pneumonia"),
        ("68566005", "Urinary tract infectious disease"), ("271737000", "Anemia"), ("414916001", "Obesity"),
        ("55822004", "Hyperlipidemia"), ("26929004", "Alzheimer's disease"), ("387713003", "Surgical procedure"),
        ("71388002", "Procedure"), ("77477000", "CT of body region"), ("241615005", "MRI of head"),
        ("168537006", "Plain radiography"), ("16310003", "Ultrasonography"), ("252416005", "Histopathology test"),
        ("26604007", "Complete blood count"), ("43396009", "Hemoglobin A1c measurement"),
        ("104177005", "Blood culture"), ("29303009", "Electrocardiographic procedure"),
        ("40701008", "Echocardiography"), ("73761001", "Colonoscopy"), ("76009000", "Esophagogastroduodenoscopy"),
        ("18286008", "Catheter ablation"), ("80146002", "Appendectomy"), ("52734007", "Total hip replacement"),
        ("232717009", "Coronary artery bypass graft"), ("11466000", "Cesarean section"), ("33879002", "Vaccination"),
    ]
]
CONFIDENTIALITY = [("N", "2.16.840.1.113883.5.25", "Normal", 85), ("R", "2.16.840.1.113883.5.25", "Restricted", 12),
                   ("V", "2.16.840.1.113883.5.25", "Very restricted", 3)]
CONTENT_TYPES = [
    ("18842-5", LOINC, "Discharge summary", 3), ("34140-4", LOINC, "Transfer of care referral note", 4),
    ("11502-2", LOINC, "Laboratory report", 4), ("57833-6", LOINC, "Prescription for medication", 2),
    ("34133-9", LOINC, "Summary of episode note", 2),
]
SURNAMES = ["Takamatsu", "Sanuki", "Marugame", "Sakaide", "Kanonji", "Tanaka", "Suzuki", "Sato", "Watanabe",
            "Ito", "Yamamoto", "Nakamura", "Kobayashi", "Kato", "Yoshida", "Yamada", "Sasaki", "Yamaguchi",
            "Matsumoto", "Inoue", "Kimura", "Hayashi", "Shimizu", "Yamazaki", "Mori", "Abe", "Ikeda", "Hashimoto"]
GIVEN = ["Hanako", "Taro", "Yuki", "Haruto", "Yui", "Sota", "Aoi", "Ren", "Mei", "Riku", "Sakura", "Kaito",
         "Hina", "Yuto", "Rin", "Daiki", "Mio", "Kenji", "Emi", "Shota"]
FACILITIES = [(f"{name} Hospital", f"1.2.392.200119.6.102.11.{100 + i}") for i, name in enumerate([
    "Kagawa Central", "Takamatsu Red Cross", "Marugame Municipal", "Sakaide City", "Kanonji General",
    "Zentsuji National", "Sanuki Municipal", "Mitoyo General", "Shodoshima Central", "Kagawa University",
])] + [(f"{name} Clinic", f"1.2.392.200119.6.102.11.{200 + i}") for i, name in enumerate([
    "Ritsurin", "Yashima", "Kotohira", "Tadotsu", "Ayagawa", "Utazu", "Miki", "Naoshima",
    "Tonosho", "Higashikagawa", "Manno", "Kokubunji", "Busshozan", "Takamatsu Station", "Okawa",
])]
ROLES = ["Attending", "Primary Care Physician", "Referring", "Consulting", "Radiologist", "Pharmacist"]
SPECIALTIES = ["Internal medicine", "Cardiology", "Pediatrics", "Radiology", "Surgery", "Family medicine"]
REPOSITORIES = [f"1.2.392.200119.6.102.1.{i}" for i in range(1, 6)]

_DAY0 = 734869  # date(2013, 1, 1).toordinal()
_DAYS = 13 * 365  # creation times over 2013-2025


def patient_id(p: int) -> str:
    return f"B{p:06d}^^^&{PATIENT_OID}&ISO"


def document_unique_id(p: int, d: int) -> str:
    return f"{DOC_UID_ROOT}.{p}.{d}"


def submission_unique_id(p: int, s: int) -> str:
    return f"{SS_UID_ROOT}.{p}.{s}"


def _pick(rng: random.Random, table: list, _cache: dict = {}) -> tuple:
    weights = _cache.get(id(table))
    if weights is None:
        weights = _cache[id(table)] = [row[-1] for row in table]
    return rng.choices(table, weights)[0]


def _dtm(rng: random.Random, day: int) -> str:
    from datetime import date

    d = date.fromordinal(_DAY0 + day)
    return f"{d:%Y%m%d}{rng.randrange(7, 20):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"


@dataclass
class Doc:
    d: int
    unique_id: str
    class_code: tuple
    type_code: tuple
    format_code: tuple
    practice: tuple
    facility: tuple
    events: list
    confidentiality: list
    authors: list  # (person, institution, role, specialty)
    creation_time: str
    day: int
    hash: str
    size: int
    repository: str
    legal_authenticator: str | None


@dataclass
class Patient:
    p: int
    id: str
    family: str
    given: str
    birth: str
    sex: str
    local_id: str
    docs: list[Doc]


def patient(p: int) -> Patient:
    """Patient p and the metadata of its 10 documents (the same on every call)."""
    rng = random.Random(p)
    family, given = rng.choice(SURNAMES), rng.choice(GIVEN)
    birth = f"{rng.randrange(1930, 2020)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
    home = rng.choice(FACILITIES)
    days = sorted(rng.randrange(_DAYS) for _ in range(DOCUMENTS_PER_PATIENT))
    docs = []
    for d in range(1, DOCUMENTS_PER_PATIENT + 1):
        day = days[d - 1]
        authors = []
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
            facility = home if rng.random() < 0.6 else rng.choice(FACILITIES)
            person = f"{rng.randrange(10000, 99999)}^{rng.choice(SURNAMES)}^{rng.choice(GIVEN)}^^^Dr^^^&{facility[1]}&ISO"
            authors.append((person, f"{facility[0]}^^^^^&{facility[1]}&ISO^^^^{facility[1]}",
                            rng.choice(ROLES), rng.choice(SPECIALTIES)))
        conf = [CONFIDENTIALITY[0]] if rng.random() < 0.8 else [_pick(rng, CONFIDENTIALITY), CONFIDENTIALITY[0]]
        conf = list(dict.fromkeys(conf))
        docs.append(Doc(
            d=d,
            unique_id=document_unique_id(p, d),
            class_code=_pick(rng, CLASS_CODES),
            type_code=_pick(rng, TYPE_CODES),
            format_code=_pick(rng, FORMAT_CODES),
            practice=_pick(rng, PRACTICE_CODES),
            facility=_pick(rng, FACILITY_CODES),
            events=list(dict.fromkeys(rng.choice(EVENT_CODES) for _ in range(rng.choice((0, 1, 1, 2, 3))))),
            confidentiality=conf,
            authors=authors,
            creation_time=_dtm(rng, day),
            day=day,
            hash=hashlib.sha1(f"{p}.{d}".encode()).hexdigest(),
            size=rng.randrange(2_000, 3_000_000),
            repository=rng.choice(REPOSITORIES),
            legal_authenticator=authors[0][0] if rng.random() < 0.5 else None,
        ))
    return Patient(p, patient_id(p), family, given, birth, rng.choice("MF"), f"{rng.randrange(10**7, 10**8)}", docs)


# --- ebRIM ----------------------------------------------------------------------------------
#
# The requests are written by the project's writer (xds.ebrim.write), once per shape: a
# DocumentEntry, SubmissionSet or Association of model objects whose values are placeholders
# ("{uid}", "{a0_person}", ...) becomes a template of XML text; each request then fills its
# templates with str.format_map. A DocumentEntry's shape is how many authors, confidentiality
# and event codes it has and whether it has a legalAuthenticator (48 shapes at most), so the
# writer runs a few dozen times per process, not a million times: filling text is some 5x
# faster than building the elements.


_SPECIAL = frozenset('&<>"')


def _x(value: str) -> str:
    """`value` for XML text or an attribute in double quotes (most values need nothing)."""
    return escape(value, {'"': "&quot;"}) if not _SPECIAL.isdisjoint(value) else value


def _slot(name: str, *values: str) -> str:
    vals = "".join(f"<rim:Value>{_x(v)}</rim:Value>" for v in values)
    return f'<rim:Slot name="{name}"><rim:ValueList>{vals}</rim:ValueList></rim:Slot>'


_OBJECT_LIST_OPEN, _OBJECT_LIST_CLOSE = "<rim:RegistryObjectList>", "</rim:RegistryObjectList>"


def _written(submission: Submission) -> tuple[str, str, str]:
    """A request as the writer writes it, cut in three: up to the RegistryObjectList's content,
    the content (the objects), and the rest."""
    text = etree.tostring(write_submission(submission), encoding="unicode")
    start = text.index(_OBJECT_LIST_OPEN) + len(_OBJECT_LIST_OPEN)
    end = text.rindex(_OBJECT_LIST_CLOSE)
    return text[:start], text[start:end], text[end:]


def _placeholder_code(name: str) -> Code:
    return Code(f"{{{name}}}", f"{{{name}_scheme}}", f"{{{name}_display}}")


def _placeholder_author(i: int) -> Author:
    return Author(person=f"{{a{i}_person}}", institutions=[f"{{a{i}_institution}}"], roles=[f"{{a{i}_role}}"],
                  specialties=[f"{{a{i}_specialty}}"])


@functools.cache
def _document_template(authors: int, confidentiality: int, events: int, legal: bool) -> str:
    entry = DocumentEntry(
        id="{id}", object_type=STABLE, mime_type="{mime}", unique_id="{uid}", patient_id="{patient}",
        creation_time="{created}", hash="{hash}", size="{size}", language_code="ja-JP",
        repository_unique_id="{repository}", service_start_time="{start}", service_stop_time="{stop}",
        source_patient_id="{local_id}",
        source_patient_info=["PID-3|{local_id}", "PID-5|{family}^{given}^^^", "PID-7|{birth}", "PID-8|{sex}"],
        legal_authenticator="{legal}" if legal else None,
        title="{title}",
        authors=[_placeholder_author(i) for i in range(authors)],
        class_code=_placeholder_code("class"), type_code=_placeholder_code("type"),
        format_code=_placeholder_code("format"), healthcare_facility_type_code=_placeholder_code("hcft"),
        practice_setting_code=_placeholder_code("practice"),
        confidentiality_codes=[_placeholder_code(f"conf{i}") for i in range(confidentiality)],
        event_codes=[_placeholder_code(f"event{i}") for i in range(events)],
    )
    return _written(Submission(documents=[entry]))[1]


_SUBMISSION_SET = SubmissionSet(
    id="{id}", unique_id="{uid}", source_id="{source}", patient_id="{patient}", submission_time="{time}",
    title="{title}", authors=[_placeholder_author(0)], content_type_code=_placeholder_code("content"))
_REQUEST_HEAD, _SUBMISSION_SET_TEMPLATE, _REQUEST_TAIL = _written(Submission(submission_set=_SUBMISSION_SET))
_HAS_MEMBER_TEMPLATE = _written(Submission(associations=[Association(
    id="{id}", type=HAS_MEMBER, source="{source}", target="{target}",
    submission_set_status=SubmissionSetStatus.ORIGINAL.value)]))[1]


def _fill(template: str, values: dict[str, str]) -> str:
    return template.format_map({name: _x(value) for name, value in values.items()})


def _code_values(name: str, code: tuple) -> dict[str, str]:
    return {name: code[0], f"{name}_scheme": code[1], f"{name}_display": code[2]}


def _author_values(i: int, author: tuple) -> dict[str, str]:
    person, institution, role, specialty = author
    return {f"a{i}_person": person, f"a{i}_institution": institution, f"a{i}_role": role,
            f"a{i}_specialty": specialty}


def document_entry(pat: Patient, doc: Doc, doc_id: str, unique_id: str | None = None,
                   patient: str | None = None) -> str:
    t = doc.creation_time
    fmt = doc.format_code
    local_id = f"{pat.local_id}^^^&{doc.authors[0][1].rsplit('^', 1)[-1]}&ISO"
    values = {
        "id": doc_id, "mime": fmt[3], "uid": unique_id or doc.unique_id, "patient": patient or pat.id,
        "created": t, "hash": doc.hash, "size": str(doc.size), "repository": doc.repository,
        "start": t[:12], "stop": t[:8] + "2359", "local_id": local_id, "family": pat.family, "given": pat.given,
        "birth": pat.birth, "sex": pat.sex, "legal": doc.legal_authenticator or "", "title": doc.type_code[2],
        **_code_values("class", doc.class_code), **_code_values("type", doc.type_code),
        **_code_values("format", fmt), **_code_values("hcft", doc.facility),
        **_code_values("practice", doc.practice),
    }
    for i, author in enumerate(doc.authors):
        values.update(_author_values(i, author))
    for i, code in enumerate(doc.confidentiality):
        values.update(_code_values(f"conf{i}", code))
    for i, code in enumerate(doc.events):
        values.update(_code_values(f"event{i}", code))
    template = _document_template(len(doc.authors), len(doc.confidentiality), len(doc.events),
                                  doc.legal_authenticator is not None)
    return _fill(template, values)


def submission_set(pat: Patient, docs: list[Doc], ss_id: str, unique_id: str, patient: str | None = None) -> str:
    last = max(docs, key=lambda d: d.creation_time)
    author = last.authors[0]
    content = CONTENT_TYPES[(pat.p + len(docs)) % len(CONTENT_TYPES)]
    return _fill(_SUBMISSION_SET_TEMPLATE, {
        "id": ss_id, "uid": unique_id, "source": author[1].rsplit("^", 1)[-1], "patient": patient or pat.id,
        "time": last.creation_time[:10] + "5500", "title": content[2],
        **_author_values(0, author), **_code_values("content", content),
    })


def _has_member(assoc_id: str, source: str, target: str) -> str:
    return _fill(_HAS_MEMBER_TEMPLATE, {"id": assoc_id, "source": source, "target": target})


def _request(objects: list[str]) -> str:
    return _REQUEST_HEAD + "".join(objects) + _REQUEST_TAIL


def submission(pat: Patient, s: int) -> str:
    """Submission s (1..4) of patient `pat`: an ITI-42 SubmitObjectsRequest with symbolic ids."""
    docs = [doc for doc in pat.docs if SUBMISSION_OF[doc.d] == s]
    objects = [submission_set(pat, docs, "SubmissionSet", submission_unique_id(pat.p, s))]
    objects += [document_entry(pat, doc, f"Document{doc.d:02d}") for doc in docs]
    objects += [_has_member(f"as{doc.d:02d}", "SubmissionSet", f"Document{doc.d:02d}") for doc in docs]
    return _request(objects)


def submissions(p: int) -> list[str]:
    pat = patient(p)
    return [submission(pat, s) for s in range(1, SUBMISSIONS_PER_PATIENT + 1)]


# --- request templates ------------------------------------------------------------------------


#: The register benchmark submits for patients of their own (Rnnnnnn, known to the registry),
#: so that the corpus patients keep exactly the documents the query checks expect.
REGISTER_PATIENTS = 10_000


def register_patient_id(p: int) -> str:
    return f"R{p:06d}^^^&{PATIENT_OID}&ISO"


def register_template() -> str:
    """A one-document ITI-42 request for patient R{{P6}} (see REGISTER_PATIENTS), with new
    uniqueIds ({{N}}). Its metadata is that of document 1 of corpus patient 1."""
    pat = patient(1)
    doc = pat.docs[0]
    pid = "R{{P6}}^^^&" + PATIENT_OID + "&ISO"
    return _request([
        submission_set(pat, [doc], "SubmissionSet", f"{NEW_UID_ROOT}.1.{{{{N}}}}", patient=pid),
        document_entry(pat, doc, "Document01", unique_id=f"{NEW_UID_ROOT}.2.{{{{N}}}}", patient=pid),
        _has_member("as01", "SubmissionSet", "Document01"),
    ])


def _query(query_id: str, slots: list[tuple[str, str]], return_type: str = "LeafClass") -> str:
    body = "".join(_slot(name, value) for name, value in slots)
    return (f'<query:AdhocQueryRequest xmlns:query="{QUERY}" xmlns:rim="{RIM}">'
            f'<query:ResponseOption returnComposedObjects="true" returnType="{return_type}"/>'
            f'<rim:AdhocQuery id="{query_id}">{body}</rim:AdhocQuery></query:AdhocQueryRequest>')


QUERY_PATIENT = "'B{{P6}}^^^&" + PATIENT_OID + "&ISO'"
#: FindDocuments with a class code and a creation time range: Laboratory reports of 2018-2021.
FILTER_CLASS = CLASS_CODES[2]
FILTER_FROM, FILTER_TO = "20180101", "20220101"


def query_template(name: str) -> str:
    """The AdhocQueryRequest of one benchmarked stored query (ITI-18), with placeholders."""
    approved = f"('{APPROVED}')"
    if name == "find_documents":
        return _query(FIND_DOCUMENTS, [("$XDSDocumentEntryPatientId", QUERY_PATIENT),
                                       ("$XDSDocumentEntryStatus", approved)])
    if name == "find_documents_filtered":
        return _query(FIND_DOCUMENTS, [
            ("$XDSDocumentEntryPatientId", QUERY_PATIENT),
            ("$XDSDocumentEntryStatus", approved),
            ("$XDSDocumentEntryClassCode", f"('{FILTER_CLASS[0]}^^^{FILTER_CLASS[1]}')"),
            ("$XDSDocumentEntryCreationTimeFrom", FILTER_FROM),
            ("$XDSDocumentEntryCreationTimeTo", FILTER_TO),
        ])
    if name == "get_documents":
        return _query(GET_DOCUMENTS, [("$XDSDocumentEntryUniqueId", f"('{DOC_UID_ROOT}.{{{{PN}}}}.{{{{D}}}}')")])
    if name == "get_submission_set_and_contents":
        return _query(GET_SUBMISSION_SET_AND_CONTENTS,
                      [("$XDSSubmissionSetUniqueId", f"'{SS_UID_ROOT}.{{{{PN}}}}.{{{{S}}}}'")])
    raise KeyError(name)


QUERIES = ("find_documents", "get_documents", "find_documents_filtered", "get_submission_set_and_contents")


def expected_count(name: str, p: int, d: int = 1, s: int = 1) -> int:
    """How many ExtrinsicObjects query `name` must answer for patient p (and d, s)."""
    if name == "find_documents":
        return DOCUMENTS_PER_PATIENT
    if name == "get_documents":
        return 1
    if name == "get_submission_set_and_contents":
        return s  # submission s holds s documents
    if name == "find_documents_filtered":
        lo, hi = FILTER_FROM.ljust(14, "0"), FILTER_TO.ljust(14, "0")
        return sum(1 for doc in patient(p).docs
                   if doc.class_code[0] == FILTER_CLASS[0] and lo <= doc.creation_time < hi)
    raise KeyError(name)


def fill(template: str, p: int, d: int = 1, s: int = 1, n: str = "0") -> str:
    """A template with its placeholders filled (the Python client; wrk's Lua does the same)."""
    return (template.replace("{{P6}}", f"{p:06d}").replace("{{PN}}", str(p)).replace("{{D}}", str(d))
            .replace("{{S}}", str(s)).replace("{{N}}", n))
