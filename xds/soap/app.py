"""SoapEndpoint: one WSGI application per endpoint path, dispatching on wsa:Action.

The way of a request: read the body (bounded) -> parse_message (envelope, WS-Addressing,
MTOM) -> mustUnderstand and addressing checks -> the handler of the action -> an envelope
back, packaged as the request was (plain or MTOM). Every failure on the way becomes a SOAP 1.2
fault; nothing unexpected reaches the client except a generic Receiver fault that names the
message to look for in the server log.

Large messages. An MTOM request is parsed while it is read off the socket (envelope.read_message):
with a `spool`, each large part goes to a file as it arrives and the handler gets it as a
FileAttachment (size, sha1, open(), move_to()); the request's memory stays bounded by the
envelope part (max_envelope_size) and a chunk of look-ahead. A response's attachments may be
Content (a file) that is streamed in chunks by the WSGI body iterable. The request's spool files
are discarded when the response body is closed (after it has been sent), unless the handler
moved them away. A plain (non-MTOM) request is read whole, bounded by max_request_size and
max_envelope_size. Before an envelope is parsed its tags and attributes are counted
(max_envelope_nodes): what a parsed tree takes in memory follows them, not the bytes.

A body the HTTP server cannot read (malformed chunked framing, a connection closed early, a
read timeout) is the client's fault: a Sender fault, never an internal error. The HTTP server
knows the connection's framing is lost and closes it after the answer (gunicorn does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from xds.soap import mtom, ns
from xds.soap.attachment import Content, Spool
from xds.soap.envelope import (
    SoapRequest,
    SoapResponse,
    build_envelope,
    new_message_id,
    problem_header,
    read_message,
)
from xds.soap.fault import (
    SoapFault,
    VersionMismatch,
    not_understood,
    soap11_version_mismatch,
)

log = logging.getLogger("xds.soap")

try:  # the errors gunicorn raises from wsgi.input.read() when the request's framing is broken
    from gunicorn.http.errors import NoMoreData as _CutShort
    from gunicorn.http.errors import ParseException as _FramingError
except ImportError:  # pragma: no cover - another WSGI server
    class _CutShort(Exception):  # type: ignore[no-redef]
        pass

    class _FramingError(Exception):  # type: ignore[no-redef]
        pass

#: The handler of one action. A handler that processes header blocks itself carries their
#: QNames as an attribute `understood_headers`: blocks marked mustUnderstand are understood for
#: its action's requests (SOAP 1.2 Part 1 5.2.3: understanding is the processing a node does).
Handler = Callable[[SoapRequest], SoapResponse]

_READ_CHUNK = 64 * 1024
_STREAM_CHUNK = 1024 * 1024  # MTOM bodies are read in pieces of this size
_STATUS = {
    200: "200 OK",
    400: "400 Bad Request",
    405: "405 Method Not Allowed",
    411: "411 Length Required",
    413: "413 Content Too Large",
    500: "500 Internal Server Error",
    501: "501 Not Implemented",
}


@dataclass
class _Reply:
    status: int
    content_type: str
    chunks: list[bytes | Content]
    headers: list[tuple[str, str]] = field(default_factory=list)


class _ResponseBody:
    """The WSGI body iterable: bytes as they are, Content read from its file in chunks.
    close() (called by the server once the response is sent, or abandoned) runs the clean-ups:
    the request's spool files are removed then."""

    def __init__(self, pieces: list[bytes | Content], cleanups: list[Callable[[], None]]):
        self._pieces = pieces
        self._cleanups = cleanups

    def __iter__(self):
        return mtom.iter_pieces(self._pieces)

    def close(self) -> None:
        for cleanup in self._cleanups:
            try:
                cleanup()
            except Exception:  # a clean-up must not hide the others
                log.exception("clean-up after a response failed")
        self._cleanups = []


class SoapEndpoint:
    """A WSGI application serving SOAP 1.2 actions at one path (and its WSDL on GET ?wsdl).

    actions             wsa:Action of a request -> the handler that answers it
    wsdl                a WSDL file served as it is on GET ?wsdl
    max_request_size    bodies above this many bytes get HTTP 413, unread
    understood_headers  QNames of the header blocks this endpoint honours when they are
                        marked mustUnderstand (SOAP 1.2 Part 1 5.2.3), for every action; a
                        handler adds those it processes itself (see Handler)
    spool               where MTOM parts go while a request is read (None: all in memory)
    max_envelope_size   the largest SOAP envelope (a plain body, or an MTOM root part) in bytes
    huge_tree           parse envelopes without libxml2's 10 MB text node limit (inline base64
                        documents); only with max_envelope_size, which then bounds them
    max_envelope_nodes  the most tags and attributes an envelope may hold, counted before it is
                        parsed (envelope.check_nodes); None: no bound
    """

    def __init__(
        self,
        actions: Mapping[str, Handler],
        *,
        wsdl: Path | None = None,
        max_request_size: int = 100 * 1024 * 1024,
        understood_headers: Iterable[str] = ns.DEFAULT_UNDERSTOOD_HEADERS,
        spool: Spool | None = None,
        max_envelope_size: int | None = None,
        huge_tree: bool = False,
        max_envelope_nodes: int | None = None,
    ) -> None:
        if huge_tree and max_envelope_size is None:
            raise ValueError("huge_tree needs a max_envelope_size to bound the envelope instead")
        self.actions = dict(actions)
        self.max_request_size = max_request_size
        self.understood_headers = frozenset(understood_headers)
        self.spool = spool or Spool()
        self.max_envelope_size = max_envelope_size
        self.huge_tree = huge_tree
        self.max_envelope_nodes = max_envelope_nodes
        # Read once: a missing WSDL should fail at start-up, not on a client's first GET.
        self._wsdl = Path(wsdl).read_bytes() if wsdl is not None else None

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        cleanups: list[Callable[[], None]] = []
        if method == "POST":
            reply = self._post(environ, cleanups)
        elif method in ("GET", "HEAD") and self._wsdl is not None and _asks_for_wsdl(environ):
            reply = _Reply(200, "text/xml", [self._wsdl])
        else:
            reply = _Reply(405, "text/plain; charset=UTF-8", [b"POST SOAP 1.2 messages to this endpoint\n"],
                           [("Allow", "POST")])
        try:
            length = mtom.pieces_length(reply.chunks)
            start_response(_STATUS.get(reply.status, str(reply.status)), [
                ("Content-Type", reply.content_type), ("Content-Length", str(length)), *reply.headers])
        except BaseException:
            _ResponseBody([], cleanups).close()
            raise
        return _ResponseBody([] if method == "HEAD" else reply.chunks, cleanups)

    # -- POST -----------------------------------------------------------------------------------

    def _post(self, environ: dict, cleanups: list[Callable[[], None]]) -> _Reply:
        content_type = environ.get("CONTENT_TYPE") or ""
        # Answer in the packaging of the request, faults included: IHE ITI TF-2x Appendix V
        # has MTOM requests (ITI-41, ITI-43) answered as MTOM.
        as_mtom = content_type.lstrip().lower().startswith("multipart/related")
        request: SoapRequest | None = None
        try:
            if as_mtom:
                chunks = body_chunks(environ, self.max_request_size)
            else:
                limit, hint = self.max_request_size, ""
                if self.max_envelope_size is not None and self.max_envelope_size < limit:
                    limit, hint = self.max_envelope_size, "; send documents as MTOM/XOP attachments"
                chunks = [read_body(environ, limit, hint=hint)]
            request = read_message(content_type, chunks, environ, spool=self.spool,
                                   max_envelope_size=self.max_envelope_size, huge_tree=self.huge_tree,
                                   max_envelope_nodes=self.max_envelope_nodes)
            cleanups.append(request.close)
            self._check_headers(request)
            response = self._handler(request.action)(request)
            return self._answer(request, response)
        except SoapFault as fault:
            log.info("SOAP fault %s to %s (action %s, MessageID %s): %s", fault.code,
                     environ.get("REMOTE_ADDR", "?"), _get(request, "action"), _get(request, "message_id"),
                     fault.reason)
            return self._fault_reply(fault, request, as_mtom)
        except Exception:
            return self._fault_reply(_internal_error(request, environ), request, as_mtom)

    def _check_headers(self, request: SoapRequest) -> None:
        """The checks before any processing, in SOAP's order: mustUnderstand first (SOAP 1.2
        Part 1 2.6), then the addressing headers the dispatch relies on."""
        if request.header is not None:
            understood = self.understood_headers.union(
                getattr(self.actions.get(request.action), "understood_headers", ()))
            missed = [block.tag for block in request.header.iterchildren(etree.Element)
                      if _must_understand(block) and block.tag not in understood]
            if missed:
                raise SoapFault(
                    "MustUnderstand",
                    "header blocks marked mustUnderstand that this endpoint does not process: "
                    + ", ".join(missed),
                    header_blocks=[not_understood(tag) for tag in missed],
                )
        # IHE ITI TF-2 Appendix V: requests carry WS-Addressing headers, wsa:Action always; the
        # action parameter of the Content-Type (SOAP 1.2 Part 2 7.1.4, optional) does not
        # replace it. WS-Addressing 1.0 SOAP Binding 6.4 (Message Addressing Header Required).
        if request.header is None:
            raise SoapFault("Sender", "the request has no env:Header; IHE ITI TF-2 Appendix V requires WS-Addressing "
                                      "headers, wsa:Action at least", subcode=ns.WSA_HEADER_REQUIRED,
                            detail=problem_header("Action"))
        action = request.header.find(ns.WSA_ACTION)
        if action is None:
            raise SoapFault("Sender", "the request has no wsa:Action header (IHE ITI TF-2 Appendix V requires it; "
                                      "the action parameter of the Content-Type does not replace it)",
                            subcode=ns.WSA_HEADER_REQUIRED, detail=problem_header("Action"))
        if not (action.text or "").strip():
            # WS-Addressing 1.0 SOAP Binding 6.4 (Invalid Addressing Header): [action] is an IRI.
            raise SoapFault("Sender", "the wsa:Action header is empty", subcode=ns.WSA_INVALID_HEADER,
                            detail=problem_header("Action"))
        if request.reply_to not in (None, ns.WSA_ANONYMOUS, ns.WSA_NONE):
            # This endpoint answers on the HTTP response only; replying there to a request that
            # asked for its reply elsewhere would lose it. WS-Addressing 1.0 SOAP Binding 6.4.1
            # (Invalid Addressing Header, subsubcode OnlyAnonymousAddressSupported).
            raise SoapFault("Sender", f"wsa:ReplyTo must be {ns.WSA_ANONYMOUS}; this endpoint answers synchronously",
                            subcode=(ns.WSA_INVALID_HEADER, ns.WSA_ONLY_ANONYMOUS), detail=problem_header("ReplyTo"))

    def _handler(self, action: str) -> Handler:
        handler = self.actions.get(action)
        if handler is None:
            # WS-Addressing 1.0 SOAP Binding 6.4 (Action Not Supported)
            detail = etree.Element(ns.qname(ns.WSA, "ProblemAction"), nsmap={"wsa": ns.WSA})
            etree.SubElement(detail, ns.WSA_ACTION).text = action
            raise SoapFault("Sender", f"action {action!r} is not supported by this endpoint; supported: "
                            + ", ".join(sorted(self.actions)), subcode=ns.WSA_ACTION_NOT_SUPPORTED, detail=detail)
        return handler

    def _answer(self, request: SoapRequest, response: SoapResponse) -> _Reply:
        envelope = build_envelope(response.body, response.action, relates_to=request.message_id,
                                  header_blocks=response.header_blocks)
        if request.is_mtom or response.attachments or response.mtom:
            content_type, pieces = mtom.mtom_pieces(envelope, response.attachments, action=response.action)
            return _Reply(200, content_type, pieces)
        return _Reply(200, _soap_content_type(response.action), [envelope])

    # -- faults ---------------------------------------------------------------------------------

    def _fault_reply(self, fault: SoapFault, request: SoapRequest | None, as_mtom: bool) -> _Reply:
        try:
            return _render_fault(fault, request, as_mtom)
        except Exception:  # a handler's fault with unusable detail, say: still answer
            return _render_fault(_internal_error(request, {}), request, as_mtom)


def _render_fault(fault: SoapFault, request: SoapRequest | None, as_mtom: bool) -> _Reply:
    if isinstance(fault, VersionMismatch) and fault.is_soap11:
        return _Reply(500, "text/xml; charset=UTF-8", [soap11_version_mismatch(fault)])
    envelope = build_envelope(fault.to_element(), fault.action, relates_to=_get(request, "message_id"),
                              header_blocks=fault.header_blocks)
    if as_mtom:
        content_type, chunks = mtom.mtom_chunks(envelope, action=fault.action)
        return _Reply(fault.http_status, content_type, chunks)
    return _Reply(fault.http_status, _soap_content_type(fault.action), [envelope])


def _internal_error(request: SoapRequest | None, environ: dict) -> SoapFault:
    """Log the exception being handled; return the fault the client sees, which names the
    message to look for in the log and nothing else (DESIGN.md: no stack trace to a client)."""
    message_id = _get(request, "message_id") or new_message_id()
    log.exception("SOAP request failed: action %s, MessageID %s, from %s",
                  _get(request, "action"), message_id, environ.get("REMOTE_ADDR", "?"))
    return SoapFault("Receiver", f"internal error; the request was not processed, see the server log for message {message_id}")


def _get(request: SoapRequest | None, name: str) -> str | None:
    return getattr(request, name) if request is not None else None


def _must_understand(block: etree._Element) -> bool:
    """SOAP 1.2 Part 1 5.2.3 (xs:boolean "true" or "1"), for blocks aimed at this node: no
    env:role, or role next / ultimateReceiver (Part 1 2.2, 5.2.2)."""
    flag = block.get(ns.MUST_UNDERSTAND)
    if flag is None or flag.strip() not in ("true", "1"):
        return False
    role = block.get(ns.ROLE)
    return role is None or role.strip() in ns.OUR_ROLES


def _soap_content_type(action: str) -> str:
    # SOAP 1.2 Part 2 7.1.4 / RFC 3902: the action travels as a media type parameter.
    return 'application/soap+xml; charset=UTF-8; action="' + action.replace('"', '\\"') + '"'


def _asks_for_wsdl(environ: dict) -> bool:
    """?wsdl, ?WSDL (and ?wsdl=... or ?x&wsdl: the usual spellings of clients)."""
    query = environ.get("QUERY_STRING", "")
    return any(item.partition("=")[0].lower() == "wsdl" for item in query.split("&"))


# -- reading the body -----------------------------------------------------------------------------


def body_chunks(environ: dict, limit: int, chunk_size: int = _STREAM_CHUNK) -> Iterator[bytes]:
    """The request body in chunks as it comes off the socket, never more than `limit` bytes of
    it read; the same rules as read_body (413 before reading when the Content-Length is over
    the limit, 411 when a chunked body cannot be read to its end safely, a Sender fault when
    the body cannot be read)."""
    stream = _Input(environ.get("wsgi.input"))
    length = _length(environ, limit)
    if length is None:
        total = 0
        while chunk := stream.read(chunk_size):
            total += len(chunk)
            if total > limit:
                raise _too_large(limit)
            yield chunk
        return
    remaining = length
    while remaining > 0:
        chunk = stream.read(min(chunk_size, remaining))
        if not chunk:
            raise SoapFault("Sender", f"the request body ended after {length - remaining} of {length} bytes")
        remaining -= len(chunk)
        yield chunk


def read_body(environ: dict, limit: int, *, hint: str = "") -> bytes:
    """The request body, never more than `limit` bytes of it read.

    With a Content-Length, a body over the limit is refused before one byte is read. Without
    one (chunked transfer coding), the body is read in chunks only if the server says its
    input stream ends with the body (wsgi.input_terminated, set by gunicorn); otherwise
    reading could block on the socket, and 411 asks the client for a length (RFC 9110 15.5.12).
    A body the server cannot read (see _Input) is a Sender fault.
    """
    stream = _Input(environ.get("wsgi.input"))
    length = _length(environ, limit, hint)
    if length is None:
        return _read_to_end(stream, limit, hint)
    return _read_exactly(stream, length)


def _length(environ: dict, limit: int, hint: str = "") -> int | None:
    """The body's length by its Content-Length (0 without a body); None when the body is to be
    read to its end (chunked, and the server says the stream ends with the body).

    A transfer coding besides chunked (gzip, compress, deflate: gunicorn takes them and hands
    the body on still coded) is refused before reading: RFC 9112 6.1 answers a coding the
    server does not decode with 501. Codings gunicorn does not know never reach the app (its
    own 501, see README "What the SOAP layer refuses")."""
    coded = [coding for coding in (environ.get("HTTP_TRANSFER_ENCODING") or "").lower().split(",")
             if coding.strip(" \t") not in ("", "chunked", "identity")]
    if coded:
        raise SoapFault("Sender", f"the transfer coding {_shown(','.join(coded).strip())!r} is not supported "
                                  "(RFC 9112 6.1): send the body as it is, with a Content-Length or chunked alone",
                        http_status=501)
    declared = (environ.get("CONTENT_LENGTH") or "").strip()
    if declared:
        if not declared.isdigit():
            raise SoapFault("Sender", f"invalid Content-Length {declared!r}")
        length = int(declared)
        if length > limit:
            raise _too_large(limit, hint)
        return length
    if environ.get("wsgi.input_terminated"):
        return None
    if environ.get("HTTP_TRANSFER_ENCODING"):
        raise SoapFault("Sender", "send a Content-Length with the request", http_status=411)
    return 0


class _Input:
    """wsgi.input whose read errors are the client's: a chunked body the HTTP server cannot
    decode (gunicorn: InvalidChunkSize, ChunkMissingTerminator, InvalidChunkExtension, a bad
    trailer), a connection closed in mid-body (gunicorn's NoMoreData is an OSError), a read
    that timed out or was reset. Each becomes a Sender fault (HTTP 400) that says what broke."""

    def __init__(self, stream):
        self._stream = stream

    def read(self, size: int) -> bytes:
        try:
            return self._stream.read(size)
        except _CutShort:
            raise SoapFault("Sender", "the connection closed before the request body ended (a chunked body "
                                      "without its last chunk)") from None
        except _FramingError as exc:
            raise SoapFault("Sender", "the request body's chunked transfer coding is malformed (RFC 9112 7.1): "
                                      + _shown(str(exc))) from None
        except OSError as exc:
            raise SoapFault("Sender", "the request body could not be read to its end (the connection closed, "
                                      f"or the read timed out): {_shown(str(exc)) or type(exc).__name__}") from None


def _shown(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _too_large(limit: int, hint: str = "") -> SoapFault:
    return SoapFault("Sender", f"the request is larger than this endpoint accepts ({limit} bytes){hint}",
                     http_status=413)


def _read_exactly(stream, length: int) -> bytes:
    chunks: list[bytes] = []
    remaining = length
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            raise SoapFault("Sender", f"the request body ended after {length - remaining} of {length} bytes")
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _read_to_end(stream, limit: int, hint: str = "") -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := stream.read(_READ_CHUNK):
        total += len(chunk)
        if total > limit:
            raise _too_large(limit, hint)
        chunks.append(chunk)
    return b"".join(chunks)
