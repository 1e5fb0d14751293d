"""The Document Registry's transactions, as the way in (xds.dispatch) calls them: the SOAP
request and the Caller in, a Result out (see xds.transactions for the table).

    ITI-42 Register Document Set-b   register_document_set   DocumentRegistry (write sessions)
    ITI-18 Registry Stored Query     registry_stored_query   RegistryStoredQuery (read sessions)
"""

from __future__ import annotations

from dataclasses import dataclass

from xds.config import Settings
from xds.registry.query import RegistryStoredQuery
from xds.registry.register import DocumentRegistry
from xds.result import Result
from xds.security.caller import Caller
from xds.soap import SoapRequest
from xds.store import db


def stored_query_for(registry: DocumentRegistry, settings: Settings | None = None) -> RegistryStoredQuery:
    """The stored queries over the database `registry` writes to: read sessions on the same
    engine (on SQLite they begin DEFERRED, so a query never waits for a submission), with the
    limits of `settings` (the defaults without)."""
    engine = registry.sessions.kw["bind"]
    return RegistryStoredQuery.configured(db.make_sessionmaker(engine), settings or Settings())


@dataclass
class RegistryService:
    registry: DocumentRegistry
    query: RegistryStoredQuery

    @classmethod
    def of(cls, registry: DocumentRegistry, settings: Settings | None = None) -> "RegistryService":
        return cls(registry, stored_query_for(registry, settings))

    def register_document_set(self, request: SoapRequest, caller: Caller) -> Result:
        """ITI-42: the registry's errors, and the patient and submission set it names."""
        parsed = self.registry.read(request.body)
        errors = self.registry.register_submission(parsed)
        ss = parsed.submission.submission_set
        return Result(errors, patient_id=(ss.patient_id or "") if ss else "",
                      submission_set_unique_id=(ss.unique_id or "") if ss else "")

    def registry_stored_query(self, request: SoapRequest, caller: Caller) -> Result:
        """ITI-18."""
        return self.query.stored_query(request.body)
