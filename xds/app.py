"""Wires the actors to their endpoints: one WSGI application for the whole server.

    POST /registry          ITI-42 Register Document Set-b
    POST /repository        ITI-41 Provide and Register Document Set-b, ITI-43 Retrieve Document Set
    GET  /repository?wsdl   the repository's WSDL
    GET  /registry?wsdl     the registry's WSDL
    GET  /schemas/<file>    the XML Schemas the WSDLs import
    GET  /health            JSON: is the database reachable; the audit records waiting to be sent
    POST /null              only with null_endpoint on: any SOAP action, a constant Success
                            (the floor bench/ measures the registry against)
    POST /null/repository   only with null_endpoint on: ITI-41/43 without XDS processing (the
                            floor bench/repository.py measures the repository against)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from xds import config
from xds.audit.trail import AuditTrail
from xds.ebrim.response import registry_response
from xds.registry import service as registry_service
from xds.registry.codes import CodeSet
from xds.registry.register import DocumentRegistry
from xds.repository import service as repository_service
from xds.soap import SoapEndpoint, SoapRequest, SoapResponse
from xds.store import db

ROOT = Path(__file__).resolve().parent.parent
WSDL_DIR = ROOT / "wsdl"
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
            check_patient_ids=settings.check_patient_ids,
        )
        self.routes = {
            "/registry": SoapEndpoint(
                registry_service.actions(self.registry, settings, audit=self.audit),
                wsdl=WSDL_DIR / "XDS.b_DocumentRegistry.wsdl",
                max_request_size=settings.max_request_size,
            ),
        }
        # The Document Repository: registers with this server's registry in-process, or with
        # settings.registry_url. Each worker finishes what a crash left half stored first.
        self.repository = repository_service.build(settings, self.registry, audit=self.audit)
        self.repository.recover()
        self.routes.update(repository_service.routes(self.repository, settings, self.audit))
        if settings.null_endpoint:
            self.routes["/null"] = NullEndpoint({}, max_request_size=settings.max_request_size)

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


class NullEndpoint(SoapEndpoint):
    """The SOAP layer's full way of a request (body read, envelope and WS-Addressing parsed,
    headers checked, reply envelope built) around a handler that does nothing: whatever the
    action, a constant rs:RegistryResponse Success. A benchmark's floor, not an XDS actor."""

    _body = registry_response()  # serialized, never moved, by build_envelope: safe to share

    def _handler(self, action: str):
        return self._answer_constant

    def _answer_constant(self, request: SoapRequest) -> SoapResponse:
        return SoapResponse(body=self._body, action=(request.action or "") + "Response")


def _plain(start_response, status: str, body: bytes):
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def create_app(settings: config.Settings | None = None) -> Server:
    return Server(settings or config.load())
