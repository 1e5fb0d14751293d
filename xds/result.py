"""What a transaction did: the one answer every actor gives, whatever the transaction.

An actor returns a Result; two readers take it from there and neither parses anything back:
the transaction's response writer (the RegistryResponse, AdhocQueryResponse or
RetrieveDocumentSetResponse the client gets; see xds.transactions) and the audit trail (the
outcome, the patient, the submission set, the documents and the query it names; see
xds.audit.actors). Later hooks (consent, XUA) read the same.

    Result(errors)                                   ITI-42, ITI-41: the registry's errors
    Result(errors, patient_id=..., submission_set_unique_id=...)
    Result(content=QueryAnswer(...), query=QueryNamed(...))          ITI-18
    Result(errors, content=[RetrievedDocument, ...], documents=[...]) ITI-43
    Result(content=<MCCI_IN000002UV01>, acknowledgement="AA", patient_id=...)  ITI-44, 45, 47

status follows ebRS 3.0 (ITI TF-3 4.2.4.2): Failure when an error of severity Error was
found and nothing was done, PartialSuccess when some of the request was done
(`partial`, ITI-43), Success otherwise (warnings alone leave it at Success). An HL7v3
transaction's status is Success when it was acknowledged AA, Failure otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xds.ebrim import ns
from xds.errors import XdsError


@dataclass(frozen=True)
class DocumentTouched:
    """A document the transaction read or wrote."""

    unique_id: str
    patient_id: str = ""
    repository_unique_id: str = ""
    home_community_id: str = ""


@dataclass(frozen=True)
class QueryNamed:
    """What a stored query request named, as sent (also when it was refused)."""

    query_id: str = ""
    patient_id: str = ""
    home_community_id: str = ""
    #: A Multi-Patient Stored Query (ITI-51): its patients, each audited in a record of its own
    #: (ITI TF-2b 3.51.5.1), and the parameter naming them ("" when the query named none and
    #: the patients are those of its answer): each record's query names its own patient only.
    patients: tuple[str, ...] = ()
    patient_parameter: str = ""


@dataclass
class Result:
    errors: list[XdsError] = field(default_factory=list)
    #: Some of the request was done despite errors (PartialSuccess).
    partial: bool = False
    patient_id: str = ""
    submission_set_unique_id: str = ""
    documents: list[DocumentTouched] = field(default_factory=list)
    query: QueryNamed | None = None
    #: The transaction's answer for its response writer (a query's objects, the documents
    #: retrieved, an HL7v3 message); None for the transactions whose answer is their status and
    #: errors.
    content: Any = None
    #: HL7v3 transactions (PIX, PDQ): the acknowledgement typeCode of the answer (AA, AE, AR),
    #: which is their outcome; the XDS ones leave it empty and have `errors`.
    acknowledgement: str = ""
    #: Other patient ids the transaction read or changed: those a PIX or PDQ query answered
    #: with, the id a merge retired.
    patients: list[str] = field(default_factory=list)
    #: With access control on (xds.consent): the request's PatientAccess, whose `denied` and
    #: `break_glass` the audit trail records; None without.
    consent: Any = None

    @property
    def failed(self) -> bool:
        if self.acknowledgement:
            return self.acknowledgement != "AA"
        return any(e.is_error for e in self.errors)

    @property
    def status(self) -> str:
        if not self.failed:
            return ns.SUCCESS
        return ns.PARTIAL_SUCCESS if self.partial else ns.FAILURE
