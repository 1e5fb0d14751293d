"""The fourteen stored queries of Registry Stored Query (ITI-18) and the two of Multi-Patient
Stored Query (ITI-51), as tables.

What belongs here: for each stored query of ITI TF-2a 3.18.4.1.2.3.7 and ITI TF-2b 3.51.4.1.2,
its id, its name, every parameter it takes (required or optional, single- or multi-valued, what
kind of value) and the kinds of registry object it returns. The table is the contract the other
modules read:
`xds.registry.query_params` checks a request against it, `xds.registry.find` runs it,
`xds.cli` lists it. What does not: reading XML, SQL, answering.

Reading the table:

- `required`: the query fails with XDSStoredQueryMissingParam without it (ITI TF-2
  3.18.4.1.2.3.7, the "Opt" column R).
- `multiple`: the parameter takes a list, written ('a','b') (and may be spread over several
  rim:Value elements of its slot); the values are OR'ed (ITI TF-2 3.18.4.1.2.3). A
  single-valued parameter given several values fails with XDSStoredQueryParamNumber.
- `and_or`: the AND/OR parameters of ITI TF-2 3.18.4.1.2.3.7.1 ($XDSDocumentEntryEventCodeList,
  $XDSDocumentEntryConfidentialityCode, $XDSFolderCodeList): the values of one slot are OR'ed,
  several slots are AND'ed. These are the only parameters that may come in several slots; any
  other given twice fails with XDSStoredQueryParamNumber (`query_params`).
- `one_of`: groups of which exactly one parameter must be given (the Get queries by entryUUID
  or uniqueId): none gives XDSStoredQueryMissingParam, two give XDSStoredQueryParamNumber.
- `at_least_one_of`: groups of which one parameter or more must be given (the multi-patient
  queries, whose patient id is optional: without one, a query must still say what it looks
  for); none gives XDSStoredQueryMissingParam.
- `multi_patient`: a query of ITI-51, whose patient parameter takes a list, or nothing (every
  patient). Each transaction runs its own queries only: ITI-18 does not run an ITI-51 query,
  nor ITI-51 an ITI-18 one (XDSUnknownStoredQuery, naming the transaction that does).
- `default`: the value a missing optional parameter stands for ($XDSDocumentEntryType: stable
  DocumentEntries only, as ITI TF-2 3.18.4.1.2.3.7.1 says of a query that leaves it out).

Parameters a request names that its query does not take are ignored: ebRS 3.0 6.3.2.1, "A
registry MUST ignore any parameters specified by the client for a stored query that do not
match the parameters defined by the stored query."
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from xds.model import DocumentEntryType


class ValueKind(enum.Enum):
    """What the values of a parameter are, and so how `query_params` reads them."""

    STRING = "string"  # a quoted string: ids, uniqueIds, patient ids, sourceIds, reference ids
    CODE = "code"  # a quoted code^^^scheme
    TIME = "time"  # an HL7 DTM of any precision, as a number
    STATUS = "status"  # an availabilityStatus URN
    DOCUMENT_TYPE = "document type"  # a DocumentEntry objectType (stable / On-Demand)
    ASSOCIATION_TYPE = "association type"  # an associationType URN
    PATTERN = "pattern"  # a quoted string with the LIKE wildcards % and _ (author person)
    NUMBER = "number"  # an integer ($MetadataLevel)


class ObjectKind(str, enum.Enum):
    DOCUMENT_ENTRY = "DocumentEntry"
    SUBMISSION_SET = "SubmissionSet"
    FOLDER = "Folder"
    ASSOCIATION = "Association"


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: ValueKind
    required: bool = False
    multiple: bool = False
    and_or: bool = False
    default: tuple[str, ...] | None = None


@dataclass(frozen=True)
class StoredQuery:
    id: str
    name: str
    parameters: tuple[Parameter, ...]
    returns: tuple[ObjectKind, ...]
    one_of: tuple[tuple[str, ...], ...] = ()
    #: The parameter holding the patient id, for queries by patient (`xds query --patient`);
    #: a query for a patient answers for the ids merged into it too (xds.registry.patients).
    patient_parameter: str | None = None
    at_least_one_of: tuple[tuple[str, ...], ...] = ()
    multi_patient: bool = False
    by_name: dict[str, Parameter] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.parameters})


K = ValueKind
DE, SS, FOL, ASSOC = (ObjectKind.DOCUMENT_ENTRY, ObjectKind.SUBMISSION_SET, ObjectKind.FOLDER,
                      ObjectKind.ASSOCIATION)

STABLE_ONLY = (DocumentEntryType.STABLE.value,)

# Parameters shared by several queries.
METADATA_LEVEL = Parameter("$MetadataLevel", K.NUMBER)
HOME_COMMUNITY_ID = Parameter("$homeCommunityId", K.STRING)
DOCUMENT_TYPE = Parameter("$XDSDocumentEntryType", K.DOCUMENT_TYPE, multiple=True, default=STABLE_ONLY)
FORMAT_CODE = Parameter("$XDSDocumentEntryFormatCode", K.CODE, multiple=True)
CONFIDENTIALITY_CODE = Parameter("$XDSDocumentEntryConfidentialityCode", K.CODE, multiple=True, and_or=True)

#: The DocumentEntry filters of FindDocuments (ITI TF-2 3.18.4.1.2.3.7.1), which
#: FindDocumentsByReferenceId takes too (3.18.4.1.2.3.7.14).
_FIND_DOCUMENTS = (
    Parameter("$XDSDocumentEntryPatientId", K.STRING, required=True),
    Parameter("$XDSDocumentEntryClassCode", K.CODE, multiple=True),
    Parameter("$XDSDocumentEntryTypeCode", K.CODE, multiple=True),
    Parameter("$XDSDocumentEntryPracticeSettingCode", K.CODE, multiple=True),
    Parameter("$XDSDocumentEntryCreationTimeFrom", K.TIME),
    Parameter("$XDSDocumentEntryCreationTimeTo", K.TIME),
    Parameter("$XDSDocumentEntryServiceStartTimeFrom", K.TIME),
    Parameter("$XDSDocumentEntryServiceStartTimeTo", K.TIME),
    Parameter("$XDSDocumentEntryServiceStopTimeFrom", K.TIME),
    Parameter("$XDSDocumentEntryServiceStopTimeTo", K.TIME),
    Parameter("$XDSDocumentEntryHealthcareFacilityTypeCode", K.CODE, multiple=True),
    Parameter("$XDSDocumentEntryEventCodeList", K.CODE, multiple=True, and_or=True),
    CONFIDENTIALITY_CODE,
    Parameter("$XDSDocumentEntryAuthorPerson", K.PATTERN, multiple=True),
    FORMAT_CODE,
    Parameter("$XDSDocumentEntryStatus", K.STATUS, required=True, multiple=True),
    DOCUMENT_TYPE,
    METADATA_LEVEL,
)

_DOCUMENT_BY_ID = (
    Parameter("$XDSDocumentEntryEntryUUID", K.STRING),
    Parameter("$XDSDocumentEntryUniqueId", K.STRING),
)
_DOCUMENTS_BY_ID = (
    Parameter("$XDSDocumentEntryEntryUUID", K.STRING, multiple=True),
    Parameter("$XDSDocumentEntryUniqueId", K.STRING, multiple=True),
)
_ONE_DOCUMENT = (("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId"),)

QUERIES: tuple[StoredQuery, ...] = (
    StoredQuery(
        "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d", "FindDocuments",
        _FIND_DOCUMENTS, (DE,), patient_parameter="$XDSDocumentEntryPatientId",
    ),
    StoredQuery(
        "urn:uuid:12941a89-e02e-4be5-967c-ce4bfc8fe492", "FindDocumentsByReferenceId",
        (*_FIND_DOCUMENTS,
         Parameter("$XDSDocumentEntryReferenceIdList", K.STRING, required=True, multiple=True)),
        (DE,), patient_parameter="$XDSDocumentEntryPatientId",
    ),
    StoredQuery(
        "urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9", "FindSubmissionSets",
        (
            Parameter("$XDSSubmissionSetPatientId", K.STRING, required=True),
            Parameter("$XDSSubmissionSetSourceId", K.STRING, multiple=True),
            Parameter("$XDSSubmissionSetSubmissionTimeFrom", K.TIME),
            Parameter("$XDSSubmissionSetSubmissionTimeTo", K.TIME),
            Parameter("$XDSSubmissionSetAuthorPerson", K.PATTERN),
            Parameter("$XDSSubmissionSetContentType", K.CODE, multiple=True),
            Parameter("$XDSSubmissionSetStatus", K.STATUS, required=True, multiple=True),
            METADATA_LEVEL,
        ),
        (SS,), patient_parameter="$XDSSubmissionSetPatientId",
    ),
    StoredQuery(
        "urn:uuid:958f3006-baad-4929-a4de-ff1114824431", "FindFolders",
        (
            Parameter("$XDSFolderPatientId", K.STRING, required=True),
            Parameter("$XDSFolderLastUpdateTimeFrom", K.TIME),
            Parameter("$XDSFolderLastUpdateTimeTo", K.TIME),
            Parameter("$XDSFolderCodeList", K.CODE, multiple=True, and_or=True),
            Parameter("$XDSFolderStatus", K.STATUS, required=True, multiple=True),
            METADATA_LEVEL,
        ),
        (FOL,), patient_parameter="$XDSFolderPatientId",
    ),
    StoredQuery(
        "urn:uuid:10b545ea-725c-446d-9b95-8aeb444eddf3", "GetAll",
        (
            Parameter("$patientId", K.STRING, required=True),
            Parameter("$XDSDocumentEntryStatus", K.STATUS, required=True, multiple=True),
            Parameter("$XDSSubmissionSetStatus", K.STATUS, required=True, multiple=True),
            Parameter("$XDSFolderStatus", K.STATUS, required=True, multiple=True),
            FORMAT_CODE,
            CONFIDENTIALITY_CODE,
            DOCUMENT_TYPE,
            METADATA_LEVEL,
        ),
        (SS, DE, FOL, ASSOC), patient_parameter="$patientId",
    ),
    StoredQuery(
        "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4", "GetDocuments",
        (*_DOCUMENTS_BY_ID,
         # Metadata Update: the versions of a document share it (all of them at $MetadataLevel 2).
         Parameter("$XDSDocumentEntryLogicalID", K.STRING, multiple=True),
         HOME_COMMUNITY_ID, METADATA_LEVEL),
        (DE,),
        one_of=(("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId", "$XDSDocumentEntryLogicalID"),),
    ),
    StoredQuery(
        "urn:uuid:5737b14c-8a1a-4539-b659-e03a34a5e1e4", "GetFolders",
        (
            Parameter("$XDSFolderEntryUUID", K.STRING, multiple=True),
            Parameter("$XDSFolderUniqueId", K.STRING, multiple=True),
            Parameter("$XDSFolderLogicalID", K.STRING, multiple=True),
            HOME_COMMUNITY_ID, METADATA_LEVEL,
        ),
        (FOL,), one_of=(("$XDSFolderEntryUUID", "$XDSFolderUniqueId", "$XDSFolderLogicalID"),),
    ),
    StoredQuery(
        "urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155", "GetAssociations",
        (Parameter("$uuid", K.STRING, required=True, multiple=True), HOME_COMMUNITY_ID, METADATA_LEVEL),
        (ASSOC,),
    ),
    StoredQuery(
        "urn:uuid:bab9529a-4a10-40b3-a01f-f68a615d247a", "GetDocumentsAndAssociations",
        (*_DOCUMENTS_BY_ID, HOME_COMMUNITY_ID, METADATA_LEVEL),
        (DE, ASSOC), one_of=_ONE_DOCUMENT,
    ),
    StoredQuery(
        "urn:uuid:51224314-5390-4169-9b91-b1980040715a", "GetSubmissionSets",
        (Parameter("$uuid", K.STRING, required=True, multiple=True), HOME_COMMUNITY_ID, METADATA_LEVEL),
        (SS, ASSOC),
    ),
    StoredQuery(
        "urn:uuid:e8e3cb2c-e39c-46b9-99e4-c12f57260b83", "GetSubmissionSetAndContents",
        (
            Parameter("$XDSSubmissionSetEntryUUID", K.STRING),
            Parameter("$XDSSubmissionSetUniqueId", K.STRING),
            FORMAT_CODE, CONFIDENTIALITY_CODE, DOCUMENT_TYPE, HOME_COMMUNITY_ID, METADATA_LEVEL,
        ),
        (SS, DE, FOL, ASSOC), one_of=(("$XDSSubmissionSetEntryUUID", "$XDSSubmissionSetUniqueId"),),
    ),
    StoredQuery(
        "urn:uuid:b909a503-523d-4517-8acf-8e5834dfc4c7", "GetFolderAndContents",
        (
            Parameter("$XDSFolderEntryUUID", K.STRING),
            Parameter("$XDSFolderUniqueId", K.STRING),
            FORMAT_CODE, CONFIDENTIALITY_CODE, DOCUMENT_TYPE, HOME_COMMUNITY_ID, METADATA_LEVEL,
        ),
        (FOL, DE, ASSOC), one_of=(("$XDSFolderEntryUUID", "$XDSFolderUniqueId"),),
    ),
    StoredQuery(
        "urn:uuid:10cae35a-c7f9-4cf5-b61e-fc3278ffb578", "GetFoldersForDocument",
        (*_DOCUMENT_BY_ID, HOME_COMMUNITY_ID, METADATA_LEVEL),
        (FOL,), one_of=_ONE_DOCUMENT,
    ),
    StoredQuery(
        "urn:uuid:d90e5407-b356-4d91-a89f-873917b4b0e6", "GetRelatedDocuments",
        (
            *_DOCUMENT_BY_ID,
            Parameter("$AssociationTypes", K.ASSOCIATION_TYPE, required=True, multiple=True),
            DOCUMENT_TYPE, HOME_COMMUNITY_ID, METADATA_LEVEL,
        ),
        (DE, ASSOC), one_of=_ONE_DOCUMENT,
    ),
)

# --- Multi-Patient Stored Query (ITI-51, ITI TF-2b 3.51.4.1.2) --------------------------------
#
# Their parameters are those of FindDocuments and FindFolders, with the patient id optional and
# a list (OR'ed). A query naming no patient must name something else to select on: at least a
# classCode, an eventCode or a healthcareFacilityTypeCode (documents), a folder code (folders),
# as IPF's validator requires (oehf/ipf, FIND_DOCUMENTS_MPQ / FIND_FOLDERS_MPQ) and the NIST
# toolkit's test 12364/nothing expects: a query with the status alone must fail.

_MULTI_PATIENT_DOCUMENTS = tuple(
    Parameter("$XDSDocumentEntryPatientId", K.STRING, multiple=True) if p.name == "$XDSDocumentEntryPatientId"
    else p for p in _FIND_DOCUMENTS)

MULTI_PATIENT_QUERIES: tuple[StoredQuery, ...] = (
    StoredQuery(
        "urn:uuid:3d1bdb10-39a2-11de-89c2-2f44d94eaa9f", "FindDocumentsForMultiplePatients",
        _MULTI_PATIENT_DOCUMENTS, (DE,), patient_parameter="$XDSDocumentEntryPatientId",
        at_least_one_of=(("$XDSDocumentEntryPatientId", "$XDSDocumentEntryClassCode",
                          "$XDSDocumentEntryEventCodeList", "$XDSDocumentEntryHealthcareFacilityTypeCode"),),
        multi_patient=True,
    ),
    StoredQuery(
        "urn:uuid:50d3f5ac-39a2-11de-a1ca-b366239e58df", "FindFoldersForMultiplePatients",
        (
            Parameter("$XDSFolderPatientId", K.STRING, multiple=True),
            Parameter("$XDSFolderLastUpdateTimeFrom", K.TIME),
            Parameter("$XDSFolderLastUpdateTimeTo", K.TIME),
            Parameter("$XDSFolderCodeList", K.CODE, multiple=True, and_or=True),
            Parameter("$XDSFolderStatus", K.STATUS, required=True, multiple=True),
            METADATA_LEVEL,
        ),
        (FOL,), patient_parameter="$XDSFolderPatientId",
        at_least_one_of=(("$XDSFolderPatientId", "$XDSFolderCodeList"),),
        multi_patient=True,
    ),
)

REGISTRY_STORED_QUERY, MULTI_PATIENT_STORED_QUERY = "ITI-18", "ITI-51"
#: The stored queries each transaction runs.
BY_TRANSACTION: dict[str, tuple[StoredQuery, ...]] = {
    REGISTRY_STORED_QUERY: QUERIES,
    MULTI_PATIENT_STORED_QUERY: MULTI_PATIENT_QUERIES,
}
TRANSACTION_OF: dict[str, str] = {q.id: name for name, queries in BY_TRANSACTION.items() for q in queries}

#: The queries of Registry Stored Query (ITI-18), by id and by name.
BY_ID: dict[str, StoredQuery] = {q.id: q for q in QUERIES}
BY_NAME: dict[str, StoredQuery] = {q.name: q for q in QUERIES}
#: Every stored query of either transaction, by id.
ALL_BY_ID: dict[str, StoredQuery] = {q.id: q for q in (*QUERIES, *MULTI_PATIENT_QUERIES)}


def lookup(name_or_id: str, queries: tuple[StoredQuery, ...] = QUERIES) -> StoredQuery | None:
    """A stored query of `queries` (ITI-18's unless told) by its id (urn:uuid:...) or its name
    (FindDocuments; case ignored)."""
    wanted = name_or_id.strip().lower()
    for query in queries:
        if query.id == name_or_id or query.name.lower() == wanted or query.id == f"urn:uuid:{wanted}":
            return query
    return None
