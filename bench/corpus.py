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

import hashlib
import random
from dataclasses import dataclass
from xml.sax.saxutils import escape

PATIENTS = 100_000
DOCUMENTS_PER_PATIENT = 10
#: Documents 1..10 go to submissions 1 (1 doc), 2 (2 docs), 3 (3 docs), 4 (4 docs).
SUBMISSION_OF = {1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 3, 7: 4, 8: 4, 9: 4, 10: 4}
SUBMISSIONS_PER_PATIENT = 4

PATIENT_OID = "1.2.392.200119.6.102.11.1"
DOC_UID_ROOT = "1.2.392.200119.6.102.9"
SS_UID_ROOT = "1.2.392.200119.6.102.8"
NEW_UID_ROOT = "1.2.392.200119.6.102.7"  # documents the register benchmark adds

# ebRIM / XDS constants used by the requests (ITI TF-3 4.2.5)
STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
SS_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"

DE = {
    "author": "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d",
    "class": "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a",
    "conf": "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f",
    "event": "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4",
    "format": "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d",
    "hcft": "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1",
    "practice": "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead",
    "type": "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
    "pid": "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427",
    "uid": "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab",
}
SS = {
    "author": "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d",
    "content": "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500",
    "pid": "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446",
    "src": "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832",
    "uid": "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8",
}

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


def _x(value: str) -> str:
    return escape(value, {'"': "&quot;"})


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


def _slot(name: str, *values: str) -> str:
    vals = "".join(f"<rim:Value>{_x(v)}</rim:Value>" for v in values)
    return f'<rim:Slot name="{name}"><rim:ValueList>{vals}</rim:ValueList></rim:Slot>'


def _name(text: str) -> str:
    return f'<rim:Name><rim:LocalizedString xml:lang="ja-JP" charset="UTF-8" value="{_x(text)}"/></rim:Name>'


def _code(cid: str, scheme: str, obj: str, code: tuple) -> str:
    return (f'<rim:Classification id="{cid}" classificationScheme="{scheme}" classifiedObject="{obj}" '
            f'nodeRepresentation="{_x(code[0])}">{_slot("codingScheme", code[1])}{_name(code[2])}</rim:Classification>')


def _ext(eid: str, scheme: str, obj: str, value: str, name: str) -> str:
    return (f'<rim:ExternalIdentifier id="{eid}" identificationScheme="{scheme}" registryObject="{obj}" '
            f'value="{_x(value)}">{_name(name)}</rim:ExternalIdentifier>')


def _author(cid: str, scheme: str, obj: str, author: tuple) -> str:
    person, institution, role, specialty = author
    return (f'<rim:Classification id="{cid}" classificationScheme="{scheme}" classifiedObject="{obj}" nodeRepresentation="">'
            + _slot("authorPerson", person) + _slot("authorInstitution", institution)
            + _slot("authorRole", role) + _slot("authorSpecialty", specialty) + "</rim:Classification>")


def document_entry(pat: Patient, doc: Doc, doc_id: str, unique_id: str | None = None,
                   patient: str | None = None) -> str:
    patient = patient or pat.id
    t = doc.creation_time
    fmt = doc.format_code
    parts = [
        f'<rim:ExtrinsicObject id="{doc_id}" mimeType="{fmt[3]}" objectType="{STABLE}">',
        _slot("creationTime", t),
        _slot("hash", doc.hash),
        _slot("size", str(doc.size)),
        _slot("languageCode", "ja-JP"),
        _slot("repositoryUniqueId", doc.repository),
        _slot("serviceStartTime", t[:12]),
        _slot("serviceStopTime", t[:8] + "2359"),
        _slot("sourcePatientId", f"{pat.local_id}^^^&{doc.authors[0][1].rsplit('^', 1)[-1]}&ISO"),
        _slot("sourcePatientInfo", f"PID-3|{pat.local_id}^^^&{doc.authors[0][1].rsplit('^', 1)[-1]}&ISO",
              f"PID-5|{pat.family}^{pat.given}^^^", f"PID-7|{pat.birth}", f"PID-8|{pat.sex}"),
    ]
    if doc.legal_authenticator:
        parts.append(_slot("legalAuthenticator", doc.legal_authenticator))
    parts.append(_name(doc.type_code[2]))
    for i, author in enumerate(doc.authors):
        parts.append(_author(f"{doc_id}-author{i}", DE["author"], doc_id, author))
    parts.append(_code(f"{doc_id}-class", DE["class"], doc_id, doc.class_code))
    for i, code in enumerate(doc.confidentiality):
        parts.append(_code(f"{doc_id}-conf{i}", DE["conf"], doc_id, code))
    for i, code in enumerate(doc.events):
        parts.append(_code(f"{doc_id}-event{i}", DE["event"], doc_id, code))
    parts += [
        _code(f"{doc_id}-format", DE["format"], doc_id, fmt),
        _code(f"{doc_id}-hcft", DE["hcft"], doc_id, doc.facility),
        _code(f"{doc_id}-practice", DE["practice"], doc_id, doc.practice),
        _code(f"{doc_id}-type", DE["type"], doc_id, doc.type_code),
        _ext(f"{doc_id}-pid", DE["pid"], doc_id, patient, "XDSDocumentEntry.patientId"),
        _ext(f"{doc_id}-uid", DE["uid"], doc_id, unique_id or doc.unique_id, "XDSDocumentEntry.uniqueId"),
        "</rim:ExtrinsicObject>",
    ]
    return "".join(parts)


def submission_set(pat: Patient, docs: list[Doc], ss_id: str, unique_id: str, patient: str | None = None) -> str:
    patient = patient or pat.id
    last = max(docs, key=lambda d: d.creation_time)
    author = last.authors[0]
    source = author[1].rsplit("^", 1)[-1]
    content = CONTENT_TYPES[(pat.p + len(docs)) % len(CONTENT_TYPES)]
    return (
        f'<rim:RegistryPackage id="{ss_id}" objectType="urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage">'
        + _slot("submissionTime", last.creation_time[:10] + "5500")
        + _name(content[2])
        + _author(f"{ss_id}-author", SS["author"], ss_id, author)
        + _code(f"{ss_id}-ct", SS["content"], ss_id, content)
        + _ext(f"{ss_id}-uid", SS["uid"], ss_id, unique_id, "XDSSubmissionSet.uniqueId")
        + _ext(f"{ss_id}-src", SS["src"], ss_id, source, "XDSSubmissionSet.sourceId")
        + _ext(f"{ss_id}-pid", SS["pid"], ss_id, patient, "XDSSubmissionSet.patientId")
        + "</rim:RegistryPackage>"
        + f'<rim:Classification id="{ss_id}-node" classifiedObject="{ss_id}" classificationNode="{SS_NODE}"/>'
    )


def _request(objects: list[str]) -> str:
    return (f'<lcm:SubmitObjectsRequest xmlns:lcm="{LCM}" xmlns:rim="{RIM}"><rim:RegistryObjectList>'
            + "".join(objects) + "</rim:RegistryObjectList></lcm:SubmitObjectsRequest>")


def submission(pat: Patient, s: int) -> str:
    """Submission s (1..4) of patient `pat`: an ITI-42 SubmitObjectsRequest with symbolic ids."""
    docs = [doc for doc in pat.docs if SUBMISSION_OF[doc.d] == s]
    objects = [submission_set(pat, docs, "SubmissionSet", submission_unique_id(pat.p, s))]
    for doc in docs:
        objects.append(document_entry(pat, doc, f"Document{doc.d:02d}"))
        objects.append(f'<rim:Association id="as{doc.d:02d}" associationType="{HAS_MEMBER}" sourceObject="SubmissionSet" '
                       f'targetObject="Document{doc.d:02d}">{_slot("SubmissionSetStatus", "Original")}</rim:Association>')
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
    objects = [
        submission_set(pat, [doc], "SubmissionSet", f"{NEW_UID_ROOT}.1.{{{{N}}}}", patient=pid),
        document_entry(pat, doc, "Document01", unique_id=f"{NEW_UID_ROOT}.2.{{{{N}}}}", patient=pid),
        f'<rim:Association id="as01" associationType="{HAS_MEMBER}" sourceObject="SubmissionSet" '
        f'targetObject="Document01">{_slot("SubmissionSetStatus", "Original")}</rim:Association>',
    ]
    return _request(objects)


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
