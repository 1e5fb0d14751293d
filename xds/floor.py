"""The floors the benchmarks measure the actors against (bench/): the server's whole SOAP way
of a request around handlers that do no XDS work. Served only with the setting null_endpoint
on; not an IHE actor.

    POST /null              any action: a constant rs:RegistryResponse Success
    POST /null/repository   ITI-41: the parts read and spooled to disk (not hashed) and dropped,
                            a constant Success; ITI-43: the stored file of each DocumentUniqueId,
                            streamed as the real endpoint does, without reading its metadata or
                            checking the repository
"""

from __future__ import annotations

from dataclasses import dataclass

from xds.ebrim.response import registry_response
from xds.ebrim.retrieve import RetrievedDocument, document_requests, retrieve_document_set_response
from xds.repository.blobs import BlobStore
from xds.result import Result
from xds.soap import FileAttachment, SoapEndpoint, SoapRequest, SoapResponse
from xds.transactions import ITI_41, ITI_43


class NullEndpoint(SoapEndpoint):
    """The SOAP layer's full way of a request (body read, envelope and WS-Addressing parsed,
    headers checked, reply envelope built) around a handler that does nothing: whatever the
    action, a constant rs:RegistryResponse Success."""

    _body = registry_response()  # serialized, never moved, by build_envelope: safe to share

    def _handler(self, action: str):
        return self._answer_constant

    def _answer_constant(self, request: SoapRequest) -> SoapResponse:
        return SoapResponse(body=self._body, action=(request.action or "") + "Response")


@dataclass(frozen=True)
class _File:
    unique_id: str
    content: FileAttachment
    mime_type: str = "application/octet-stream"

    @property
    def size(self) -> int:
        return self.content.size

    def open(self):
        return self.content.open()


def repository_floor(blobs: BlobStore, *, max_request_size: int, max_envelope_size: int,
                     max_envelope_nodes: int | None = None) -> SoapEndpoint:
    """POST /null/repository over the documents of `blobs` (see the module's text)."""
    success = registry_response([])

    def provide_and_register(request: SoapRequest) -> SoapResponse:
        return SoapResponse(body=success, action=ITI_41.response_action)

    def retrieve(request: SoapRequest) -> SoapResponse:
        retrieved = [RetrievedDocument(item, f"doc{index}@xds.local", _File(
                         item.document_unique_id or "",
                         FileAttachment(blobs.path_of(item.document_unique_id or "") / "content")))
                     for index, item in enumerate(document_requests(request.body) or [])]
        body, attachments = retrieve_document_set_response(Result(content=retrieved))
        return SoapResponse(body=body, action=ITI_43.response_action, mtom=True, attachments=attachments)

    spool = blobs.spool()
    spool.digest = False
    return SoapEndpoint({ITI_41.action: provide_and_register, ITI_43.action: retrieve},
                        max_request_size=max_request_size, spool=spool,
                        max_envelope_size=max_envelope_size, huge_tree=True, max_envelope_nodes=max_envelope_nodes)
