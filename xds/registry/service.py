"""The registry's SOAP actions: SOAP request in, RegistryResponse / AdhocQueryResponse out.

    urn:ihe:iti:2007:RegisterDocumentSet-b   ITI-42, DocumentRegistry.register (write sessions)
    urn:ihe:iti:2007:RegistryStoredQuery     ITI-18, RegistryStoredQuery.query (read sessions)
"""

from __future__ import annotations

import logging

from xds.audit import actors, events
from xds.audit.trail import NO_AUDIT, AuditTrail
from xds.config import Settings
from xds.ebrim.query_response import error_response
from xds.ebrim.response import registry_response
from xds.registry.query import RegistryStoredQuery
from xds.registry.register import DocumentRegistry
from xds.rules import error
from xds.soap import SoapRequest, SoapResponse
from xds.store import db

log = logging.getLogger("xds.registry")

REGISTER = "urn:ihe:iti:2007:RegisterDocumentSet-b"
REGISTER_RESPONSE = "urn:ihe:iti:2007:RegisterDocumentSet-bResponse"
STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
STORED_QUERY_RESPONSE = "urn:ihe:iti:2007:RegistryStoredQueryResponse"


def stored_query_for(registry: DocumentRegistry, settings: Settings | None = None) -> RegistryStoredQuery:
    """The stored queries over the database `registry` writes to: read sessions on the same
    engine (on SQLite they begin DEFERRED, so a query never waits for a submission), with the
    limits of `settings` (the defaults without)."""
    settings = settings or Settings()
    engine = registry.sessions.kw["bind"]
    return RegistryStoredQuery(
        sessions=db.make_sessionmaker(engine),
        max_leaf_class_results=settings.max_leaf_class_results,
        home_community_id=settings.home_community_id or None,
    )


def actions(registry: DocumentRegistry, settings: Settings | None = None, *,
            query: RegistryStoredQuery | None = None, audit: AuditTrail = NO_AUDIT) -> dict:
    """The registry's actions for a SoapEndpoint. The stored queries read the registry's own
    database unless `query` is given. Each transaction is recorded in `audit` (ATNA)."""
    query = query or stored_query_for(registry, settings)

    def register(request: SoapRequest) -> SoapResponse:
        try:
            errors = registry.register(request.body)
        except Exception:
            # The client gets an XDS answer it can act on; the traceback stays in our log.
            log.exception("ITI-42 failed (MessageID %s)", request.message_id)
            errors = [error("registry.internal", reason=f"unexpected failure, logged with MessageID {request.message_id}")]
        body = registry_response(errors)
        if audit.enabled:
            actors.audit(audit, events.iti42_registry, request, body, **actors.submission(request.body))
        return SoapResponse(body=body, action=REGISTER_RESPONSE)

    def stored_query(request: SoapRequest) -> SoapResponse:
        try:
            body = query.answer(request.body)
        except Exception:
            log.exception("ITI-18 failed (MessageID %s)", request.message_id)
            body = error_response([error("query.internal",
                                         reason=f"unexpected failure, logged with MessageID {request.message_id}")])
        if audit.enabled:
            actors.audit(audit, events.iti18_registry, request, body, **actors.query(request.body))
        return SoapResponse(body=body, action=STORED_QUERY_RESPONSE)

    return {REGISTER: register, STORED_QUERY: stored_query}
