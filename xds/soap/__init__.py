"""The SOAP transport: SOAP 1.2 envelopes, WS-Addressing 1.0, MTOM/XOP in and out, faults, and
a WSGI endpoint that dispatches on wsa:Action. Knows nothing of XDS.

    endpoint = SoapEndpoint({"urn:x:Ping": ping}, wsdl=Path("wsdl/ping.wsdl"))

    def ping(request: SoapRequest) -> SoapResponse:
        ...  # request.body, request.header, request.content(base64_element)
        return SoapResponse(body=answer_element, action="urn:x:PingResponse")

Large messages: `SoapEndpoint(..., spool=Spool(directory, digest=True))` streams MTOM parts of
a request to files as they arrive; `request.attachment(element)` then gives an Attachment
(.size, .sha1, .open(), .path, .move_to(), .content() for small ones). A response attachment
may be any Content (.size, .open()), streamed from its file. See attachment.py and app.py.

Modules: ns (names), fault (SoapFault), attachment (received and sent content, the spool),
mtom (multipart both ways, incremental), envelope (parse and build envelopes; the hardened
parser), app (SoapEndpoint).
"""

from xds.soap.app import Handler, SoapEndpoint
from xds.soap.attachment import (
    Attachment,
    Content,
    FileAttachment,
    MemoryAttachment,
    Spool,
)
from xds.soap.envelope import (
    SoapMessage,
    SoapRequest,
    SoapResponse,
    build_envelope,
    new_message_id,
    parse_message,
    parse_response,
    parse_xml,
    read_message,
)
from xds.soap.fault import SoapFault
from xds.soap.mtom import build_mtom, cid_href, xop_include
from xds.soap.ns import DEFAULT_UNDERSTOOD_HEADERS

__all__ = [
    "Attachment", "Content", "FileAttachment", "MemoryAttachment", "Spool", "read_message",
    "DEFAULT_UNDERSTOOD_HEADERS", "Handler", "SoapEndpoint", "SoapFault", "SoapMessage", "SoapRequest", "SoapResponse",
    "build_envelope", "build_mtom", "cid_href", "new_message_id", "parse_message", "parse_response",
    "parse_xml", "xop_include",
]
