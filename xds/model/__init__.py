"""Plain XDS metadata objects (ITI TF-3 4.2.3). No XML, no SQL.

Values are kept as the submitter wrote them (strings); checking their format is the
validator's job, so that one bad value becomes one error instead of a parse failure.
"""

from xds.model.metadata import (
    Association,
    AssociationType,
    Author,
    AvailabilityStatus,
    Code,
    DocumentEntry,
    DocumentEntryType,
    Folder,
    Slot,
    Submission,
    SubmissionSet,
    SubmissionSetStatus,
)
from xds.model.patient import PatientId

__all__ = [
    "Association",
    "AssociationType",
    "Author",
    "AvailabilityStatus",
    "Code",
    "DocumentEntry",
    "DocumentEntryType",
    "Folder",
    "PatientId",
    "Slot",
    "Submission",
    "SubmissionSet",
    "SubmissionSetStatus",
]
