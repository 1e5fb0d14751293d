"""Wires the actors to their endpoints: one WSGI application for the whole server. Which
transaction is served where, and by which actor, is the table in xds.transactions; every one
comes in the same way (xds.dispatch).

    POST /registry          ITI-42 Register Document Set-b, ITI-18 Registry Stored Query,
                            ITI-62 Delete Document Set, ITI-51 Multi-Patient Stored Query
    POST /repository        ITI-41 Provide and Register Document Set-b, ITI-43 Retrieve Document Set,
                            ITI-86 Remove Documents
    POST /pix               ITI-44 Patient Identity Feed HL7 V3, ITI-45 PIXV3 Query
    POST /pdq               ITI-47 Patient Demographics Query HL7 V3 (and its continuation)
    GET  /<endpoint>?wsdl   each endpoint's WSDL
    GET  /schemas/<file>    the XML Schemas the WSDLs import
    GET  /health            JSON: is the database reachable; the audit records and ITI-46
                            notifications waiting to be sent
    POST /null              only with null_endpoint on: the benchmarks' floors (xds.floor)
    POST /null/repository
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

from xds import config
from xds.audit import actors
from xds.audit.trail import AuditTrail
from xds.consent import access as consent, bppc, facility
from xds.dispatch import Dispatcher
from xds.floor import NullEndpoint, repository_floor
from xds.hl7v3.schemas import MessageSchemas
from xds.identity import notify
from xds.identity.directory import IdentityDirectory
from xds.identity.policy import IdentityPolicy
from xds.identity.service import IdentityService
from xds.registry.codes import CodeSet
from xds.registry.register import DocumentRegistry
from xds.registry.service import RegistryService
from xds.repository import service as repository_service
from xds.security import dsg, xua
from xds.soap import SoapEndpoint
from xds.store import db
from xds.transactions import ENDPOINTS, PDQ_SUPPLIER, PIX_MANAGER, REGISTRY, REPOSITORY, Endpoint, served_at

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "schemas"

log = logging.getLogger("xds")


class Server:
    """A WSGI app that routes by path to the endpoints."""

    def __init__(self, settings: config.Settings):
        self.settings = settings
        # ATNA: every transaction is recorded; delivery runs in the background (xds.audit.trail).
        self.audit = AuditTrail.from_settings(settings).start()
        self.engine = db.make_engine(settings.database, busy_timeout=settings.busy_timeout)
        codes = CodeSet.from_nist_xml(settings.codes_file) if settings.codes_file else None
        self.registry = DocumentRegistry(
            sessions=db.make_sessionmaker(self.engine, write=True),
            codes=codes,
            # The PIX Manager's cross-references: ids merged away are refused, and queries for
            # a survivor find the documents of the ids merged into it.
            patients=IdentityDirectory(),
            check_patient_ids=settings.check_patient_ids,
            max_submission_objects=settings.max_submission_objects,
            max_submission_values=settings.max_submission_values,
            # BPPC consent documents update the consent record as they are registered (xds.consent)
            after_store=bppc.hook(settings),
            # DSG: signature DocumentEntries' metadata, as dsg_policy says (xds.security.dsg)
            signatures=dsg.SubmissionSignatures.from_settings(settings).check_register,
        )
        # The Document Repository: registers with this server's registry in-process, or with
        # settings.registry_url. Each worker finishes what a crash left half stored first.
        self.repository = repository_service.build(settings, self.registry, audit=self.audit)
        self.repository.recover()
        # The PIX Manager and PDQ Supplier, over the same database: a feed of an affinity-domain
        # id makes it known to the registry in the feed's own transaction (xds.identity.feed).
        # ITI-46: a feed's update notifications are queued in its own transaction and sent by each
        # worker's sender in the background (xds.identity.notify); none without pix_consumers.
        self.pix_notifier = notify.UpdateNotifier.from_settings(settings, self.engine, self.audit).start()
        self.identity = IdentityService(
            self.engine, IdentityPolicy.from_settings(settings),
            schemas=MessageSchemas(Path(settings.hl7v3_schemas)) if settings.hl7v3_schemas else None,
            device=settings.hl7v3_device_id, page_size=settings.pdq_page_size,
            continuation_timeout=settings.pdq_continuation_timeout,
            consent=consent.ConsentGate.from_settings(settings),
            after_feed=functools.partial(notify.enqueue, policy=self.pix_notifier.policy)
            if self.pix_notifier.enabled else None)
        # Every transaction comes in the same way (xds.dispatch): its row in xds.transactions
        # names the actor's service that answers it; the audit trail records each one.
        self.dispatcher = Dispatcher(
            services={REGISTRY: RegistryService.of(self.registry, settings), REPOSITORY: self.repository,
                      PIX_MANAGER: self.identity, PDQ_SUPPLIER: self.identity},
            # XUA (xds.security.xua): the user of each request's assertion, as xua_policy asks; then
            # the requesting facility, which access control reads (xds.consent, access_control)
            checks=[*xua.checks(settings, self.audit), *facility.checks(settings)],
            after=([functools.partial(actors.record, self.audit)] if self.audit.enabled else [])
            + consent.after_hooks(settings, self.engine))
        self.routes: dict[str, SoapEndpoint] = {e.path: self._endpoint(e) for e in ENDPOINTS.values()}
        if settings.null_endpoint:
            self.routes["/null"] = NullEndpoint({}, max_request_size=settings.max_request_size,
                                                max_envelope_nodes=settings.max_envelope_nodes)
            self.routes["/null/repository"] = repository_floor(
                self.repository.blobs, max_request_size=settings.max_document_request_size,
                max_envelope_size=settings.max_document_envelope_size,
                max_envelope_nodes=settings.max_envelope_nodes)

    def _endpoint(self, endpoint: Endpoint) -> SoapEndpoint:
        actions = self.dispatcher.actions(served_at(endpoint.path))
        # Every envelope's tags and attributes are counted before it is parsed: the parsed tree's
        # memory follows them (xds.soap.envelope.check_nodes).
        if not endpoint.documents:
            return SoapEndpoint(actions, wsdl=endpoint.wsdl, max_request_size=self.settings.max_request_size,
                                max_envelope_nodes=self.settings.max_envelope_nodes)
        # Streaming: MTOM parts go to the blob store's staging folder as they arrive (see
        # xds.repository.service).
        return SoapEndpoint(actions, wsdl=endpoint.wsdl, max_request_size=self.settings.max_document_request_size,
                            spool=self.repository.blobs.spool(),
                            max_envelope_size=self.settings.max_document_envelope_size, huge_tree=True,
                            max_envelope_nodes=self.settings.max_envelope_nodes)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "") or "/"
        endpoint = self.routes.get(path.rstrip("/") or "/")
        if endpoint is not None:
            return endpoint(environ, start_response)
        if path == "/health":
            return self._health(start_response)
        if path.startswith("/schemas/"):
            return self._schema(path.removeprefix("/schemas/"), start_response)
        return _plain(start_response, "404 Not Found", b"not found\n")

    def _health(self, start_response):
        ok = db.ping(self.engine)
        health = {"status": "ok" if ok else "degraded", "database": "reachable" if ok else "unreachable"}
        if self.audit.enabled:
            # What a monitor needs to see an Audit Record Repository that stopped taking records
            # before the spool fills: the records waiting, and those refused so far.
            state = self.audit.spool.state()
            health["audit"] = {"waiting_bytes": state["bytes"], "refused": state["refused"],
                               "full": bool(state["full"])}
        if ok and self.pix_notifier.enabled:
            # ITI-46 notifications waiting, retrying and parked (refused by their consumer).
            with db.make_sessionmaker(self.engine)() as session:
                health["pix_notifications"] = notify.queue_state(session)
        body = json.dumps(health)
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
        return [body.encode()]

    def _schema(self, name: str, start_response):
        # Only plain file names: no path may leave the schemas folder.
        candidate = SCHEMA_DIR / name
        if "/" in name or "\\" in name or name.startswith(".") or not candidate.is_file():
            return _plain(start_response, "404 Not Found", b"not found\n")
        start_response("200 OK", [("Content-Type", "text/xml; charset=UTF-8")])
        return [candidate.read_bytes()]


def _plain(start_response, status: str, body: bytes):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def create_app(settings: config.Settings | None = None) -> Server:
    return Server(settings or config.load())
