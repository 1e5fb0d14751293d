"""The Document Registry's transactions, as the way in (xds.dispatch) calls them: the SOAP
request and the Caller in, a Result out (see xds.transactions for the table).

    ITI-42 Register Document Set-b   register_document_set   DocumentRegistry (write sessions)
    ITI-18 Registry Stored Query     registry_stored_query   RegistryStoredQuery (read sessions)
    ITI-51 Multi-Patient Stored Query multi_patient_stored_query RegistryStoredQuery, for the
                                     callers multi_patient_query_callers lists
    ITI-62 Delete Document Set       delete_document_set     DeleteDocumentSet (write sessions)
    ITI-57 Update Document Set       update_document_set     UpdateDocumentSet (write sessions)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xds.config import Settings
from xds.registry.query import RegistryStoredQuery, named
from xds.registry.register import DocumentRegistry
from xds.registry.remove import DeleteDocumentSet
from xds.registry.update import UpdateDocumentSet
from xds.result import Result
from xds.rules import error
from xds.security.allowed import AllowedCallers
from xds.security.caller import Caller
from xds.soap import SoapRequest
from xds.store import db


def stored_query_for(registry: DocumentRegistry, settings: Settings | None = None) -> RegistryStoredQuery:
    """The stored queries over the database `registry` writes to: read sessions on the same
    engine (on SQLite they begin DEFERRED, so a query never waits for a submission), with the
    limits of `settings` (the defaults without), following the merges of the registry's patient
    directory."""
    engine = registry.sessions.kw["bind"]
    return RegistryStoredQuery.configured(db.make_sessionmaker(engine), settings or Settings(), registry.patients)


@dataclass
class RegistryService:
    registry: DocumentRegistry
    query: RegistryStoredQuery
    #: Who may send ITI-51 (the setting multi_patient_query_callers; nobody by default).
    multi_patient_callers: AllowedCallers = field(default_factory=AllowedCallers)

    @classmethod
    def of(cls, registry: DocumentRegistry, settings: Settings | None = None) -> "RegistryService":
        settings = settings or Settings()
        return cls(registry, stored_query_for(registry, settings),
                   AllowedCallers.parse(settings.multi_patient_query_callers, "multi_patient_query_callers"))

    def register_document_set(self, request: SoapRequest, caller: Caller) -> Result:
        """ITI-42: the registry's errors, and the patient and submission set it names."""
        parsed = self.registry.read(request.body)
        errors = self.registry.register_submission(parsed)
        ss = parsed.submission.submission_set
        return Result(errors, patient_id=(ss.patient_id or "") if ss else "",
                      submission_set_unique_id=(ss.unique_id or "") if ss else "")

    def registry_stored_query(self, request: SoapRequest, caller: Caller) -> Result:
        """ITI-18."""
        return self.query.stored_query(request.body, caller=caller)

    def multi_patient_stored_query(self, request: SoapRequest, caller: Caller) -> Result:
        """ITI-51 (ITI TF-2b 3.51): it crosses patients, so it is answered only for the callers
        the configuration lists (who may is the affinity domain's policy); others get
        XDSRegistryError, and the refusal is audited like an answer, once per patient named."""
        if not self.multi_patient_callers.allows(caller):
            result = Result([error("query.multi-patient-refused", caller=AllowedCallers.describe(caller))])
            result.query = self.query.named_patients(request.body, named(request.body))
            return result
        return self.query.multi_patient_stored_query(request.body, caller)

    def update_document_set(self, request: SoapRequest, caller: Caller) -> Result:
        """ITI-57 (the Metadata Update option): the errors, and the SubmissionSet and patient the
        update names."""
        return UpdateDocumentSet.of(self.registry).update(request.body)

    def delete_document_set(self, request: SoapRequest, caller: Caller) -> Result:
        """ITI-62: the errors, and the objects removed (or named, when none was) with their
        patients."""
        return DeleteDocumentSet.of(self.registry).delete(request.body)
