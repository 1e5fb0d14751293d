"""XDS metadata objects as ITI TF-3 4.2.3 names them.

Every object keeps `id` (its entryUUID, or the symbolic id it was submitted with until the
registry assigns a UUID) and the extra slots it carried (ITI TF-3 4.2.3.1.9, "Extra Metadata").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class AvailabilityStatus(str, enum.Enum):
    APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
    DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
    SUBMITTED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Submitted"


class DocumentEntryType(str, enum.Enum):
    STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
    ON_DEMAND = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"


class AssociationType(str, enum.Enum):
    HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
    REPLACE = "urn:ihe:iti:2007:AssociationType:RPLC"
    APPEND = "urn:ihe:iti:2007:AssociationType:APND"
    TRANSFORM = "urn:ihe:iti:2007:AssociationType:XFRM"
    TRANSFORM_REPLACE = "urn:ihe:iti:2007:AssociationType:XFRM_RPLC"
    SIGNS = "urn:ihe:iti:2007:AssociationType:signs"
    IS_SNAPSHOT_OF = "urn:ihe:iti:2010:AssociationType:IsSnapshotOf"

    @property
    def is_document_relationship(self) -> bool:
        return self is not AssociationType.HAS_MEMBER

    @property
    def short_name(self) -> str:
        """The name without its namespace (HasMember, RPLC, ...), as ebRIM 2.1 and people write it."""
        return self.value.rsplit(":", 1)[-1]

    @classmethod
    def from_short_name(cls, name: str) -> "AssociationType | None":
        return _BY_SHORT_NAME.get(name)


_BY_SHORT_NAME = {t.short_name: t for t in AssociationType}

#: Relationships whose source replaces its target (the target becomes Deprecated).
REPLACING = frozenset({AssociationType.REPLACE, AssociationType.TRANSFORM_REPLACE})


class SubmissionSetStatus(str, enum.Enum):
    ORIGINAL = "Original"
    REFERENCE = "Reference"


@dataclass
class Slot:
    name: str
    values: list[str]


@dataclass
class Code:
    """A coded value: Classification nodeRepresentation, codingScheme slot, Name."""

    code: str
    scheme: str
    display: str | None = None

    def key(self) -> str:
        """`code^^^scheme`: the form stored queries use for code parameters."""
        return f"{self.code}^^^{self.scheme}"


@dataclass
class Author:
    person: str | None = None
    institutions: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    specialties: list[str] = field(default_factory=list)
    telecoms: list[str] = field(default_factory=list)


@dataclass
class DocumentEntry:
    id: str
    object_type: str = DocumentEntryType.STABLE.value
    unique_id: str | None = None
    patient_id: str | None = None
    logical_id: str | None = None
    version: str | None = None
    status: str | None = None
    home_community_id: str | None = None
    mime_type: str | None = None
    title: str | None = None
    comments: str | None = None
    hash: str | None = None
    size: str | None = None
    creation_time: str | None = None
    service_start_time: str | None = None
    service_stop_time: str | None = None
    language_code: str | None = None
    legal_authenticator: str | None = None
    source_patient_id: str | None = None
    source_patient_info: list[str] = field(default_factory=list)
    repository_unique_id: str | None = None
    uri: str | None = None
    class_code: Code | None = None
    type_code: Code | None = None
    format_code: Code | None = None
    healthcare_facility_type_code: Code | None = None
    practice_setting_code: Code | None = None
    confidentiality_codes: list[Code] = field(default_factory=list)
    event_codes: list[Code] = field(default_factory=list)
    authors: list[Author] = field(default_factory=list)
    reference_ids: list[str] = field(default_factory=list)
    extra_slots: list[Slot] = field(default_factory=list)

    @property
    def is_on_demand(self) -> bool:
        return self.object_type == DocumentEntryType.ON_DEMAND.value


@dataclass
class SubmissionSet:
    id: str
    unique_id: str | None = None
    source_id: str | None = None
    patient_id: str | None = None
    submission_time: str | None = None
    content_type_code: Code | None = None
    title: str | None = None
    comments: str | None = None
    home_community_id: str | None = None
    status: str | None = None
    authors: list[Author] = field(default_factory=list)
    intended_recipients: list[str] = field(default_factory=list)
    extra_slots: list[Slot] = field(default_factory=list)


@dataclass
class Folder:
    id: str
    unique_id: str | None = None
    patient_id: str | None = None
    last_update_time: str | None = None
    #: Metadata Update (ITI-57): the logicalID (lid) shared by a Folder's versions, and this
    #: version's versionName, as DocumentEntry has them.
    logical_id: str | None = None
    version: str | None = None
    codes: list[Code] = field(default_factory=list)
    title: str | None = None
    comments: str | None = None
    home_community_id: str | None = None
    status: str | None = None
    extra_slots: list[Slot] = field(default_factory=list)


@dataclass
class Association:
    id: str
    type: str
    source: str
    target: str
    submission_set_status: str | None = None
    #: Slots other than SubmissionSetStatus (e.g. signs' or update options' slots).
    extra_slots: list[Slot] = field(default_factory=list)
    #: availabilityStatus, as DocumentEntry, SubmissionSet and Folder have it.
    status: str | None = None

    @property
    def association_type(self) -> AssociationType | None:
        try:
            return AssociationType(self.type)
        except ValueError:
            return None


@dataclass
class Submission:
    """The content of one SubmitObjectsRequest: one SubmissionSet and what it carries."""

    submission_set: SubmissionSet | None = None
    documents: list[DocumentEntry] = field(default_factory=list)
    folders: list[Folder] = field(default_factory=list)
    associations: list[Association] = field(default_factory=list)

    def objects(self):
        """Every registry object of the submission, submission set first."""
        if self.submission_set is not None:
            yield self.submission_set
        yield from self.documents
        yield from self.folders
        yield from self.associations
