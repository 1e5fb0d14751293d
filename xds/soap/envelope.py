"""SOAP 1.2 envelopes with WS-Addressing 1.0 headers, both directions.

In: bytes (plain application/soap+xml, or MTOM multipart/related) -> SoapMessage, through the
one hardened XML parser of this layer. Out: build_envelope() writes an envelope around a body
element. Parsed responses (parse_response) come back as the same SoapMessage type, so clients
and tests read answers with the code that reads requests.

What this module does not do: mustUnderstand checks and dispatch (the endpoint's job, because
which headers are understood depends on the endpoint), and WS-Security (the security layer
reads the wsse:Security block from SoapMessage.header).
"""

from __future__ import annotations

import binascii
import re
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from lxml import etree

from xds.soap import mtom, ns
from xds.soap.attachment import Attachment, MemoryAttachment, Spool
from xds.soap.fault import SoapFault, VersionMismatch
from xds.soap.ns import SOAP12, WSA  # SOAP12 is also imported from here by callers

# -- the parser ---------------------------------------------------------------------------------

# The one parser configuration of the layer: no entity expansion, no DTD loading, no network,
# libxml2's default size limits (huge_tree=False). A DOCTYPE is refused outright besides (see
# parse_xml), which removes XXE and entity-expansion attacks at the root.
#
# libxml2's limits refuse a text node over 10,000,000 characters: a document sent inline as
# base64 (no MTOM) beyond about 7 MB. An endpoint that must accept those (the repository) parses
# with huge_tree=True, and bounds the envelope's size itself instead (SoapEndpoint's
# max_envelope_size); everywhere else the limit stands and its error says to use MTOM.
_PARSER_OPTIONS = dict(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                       remove_blank_text=False)
_parsers = threading.local()


def xml_parser(huge_tree: bool = False) -> etree.XMLParser:
    """The hardened parser, one instance per thread: an lxml parser holds a lock while it
    parses, so a single shared instance would serialize the threads of a gthread worker."""
    name = "huge" if huge_tree else "parser"
    parser = getattr(_parsers, name, None)
    if parser is None:
        parser = etree.XMLParser(**{**_PARSER_OPTIONS, "huge_tree": huge_tree})
        setattr(_parsers, name, parser)
    return parser


_SPACE = re.compile(rb"[ \t\r\n]*")


def _has_doctype(data: bytes) -> bool:
    """Whether a DOCTYPE precedes the root element, found by walking the prolog (XML 1.0 2.8:
    XMLDecl? Misc* (doctypedecl Misc*)?) without parsing. This refuses an entity bomb before
    libxml2 spends any time on it; the check after parsing stays the authority (it also sees
    encodings such as UTF-16 that this byte walk does not)."""
    i = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    while True:
        i = _SPACE.match(data, i).end()
        if data.startswith(b"<?", i):
            end = data.find(b"?>", i)
            i = end + 2
        elif data.startswith(b"<!--", i):
            end = data.find(b"-->", i + 4)
            i = end + 3
        else:
            return data.startswith(b"<!DOCTYPE", i)
        if end < 0:
            return False


def count_nodes(data: bytes) -> int:
    """An upper bound of the elements and attributes of an XML document, read without parsing
    it: its '<' characters (one per start tag; end tags, comments, processing instructions and
    CDATA sections count too) and its '=' characters (one per attribute and namespace
    declaration; any in text count too). Two passes of bytes.count: about 2 GB/s, 8 ms for 16 MiB.

    What it bounds is what a parsed tree costs: libxml2 takes about 130 bytes per element or
    text node and 240 per attribute, so 16 MB of empty elements would become 540 MB of tree."""
    return data.count(b"<") + data.count(b"=")


def check_nodes(data: bytes, max_nodes: int | None) -> None:
    """Refuse, before parsing, a document with more than max_nodes tags and attributes (see
    count_nodes): the memory its tree would take, not its bytes, is what this bounds."""
    if max_nodes is None or len(data) <= max_nodes:  # it cannot hold more '<' and '=' than bytes
        return
    nodes = count_nodes(data)
    if nodes > max_nodes:
        raise SoapFault("Sender", f"the SOAP envelope holds more XML markup than this endpoint accepts: {nodes} "
                                  f"tags and attributes (its '<' and '=' characters), at most {max_nodes}; "
                                  "split the request into smaller ones", http_status=413)


def parse_xml(data: bytes, *, huge_tree: bool = False, max_nodes: int | None = None) -> etree._Element:
    """Parse untrusted XML; any fault is the sender's (SOAP 1.2 Part 1 5.4.6 env:Sender).
    max_nodes: refuse more tags and attributes than this before parsing (check_nodes)."""
    if _has_doctype(data):
        raise _doctype_fault()
    check_nodes(data, max_nodes)
    try:
        root = etree.fromstring(data, xml_parser(huge_tree))
    except etree.XMLSyntaxError as exc:
        if "Text node too long" in (exc.msg or ""):
            raise SoapFault("Sender", "the message holds a text node over 10,000,000 characters (base64 "
                                      "content of more than about 7 MB); send binary content as an "
                                      "MTOM/XOP attachment") from None
        raise SoapFault("Sender", f"the message is not well-formed XML: {exc.msg}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise _doctype_fault()
    return root


def _doctype_fault() -> SoapFault:
    # SOAP 1.2 Part 1 5: "A SOAP message MUST NOT contain a Document Type Declaration."
    return SoapFault("Sender", "a SOAP message must not contain a Document Type Declaration (SOAP 1.2 Part 1 5)")


# -- the parsed message -------------------------------------------------------------------------


@dataclass
class SoapMessage:
    """A received SOAP 1.2 message: a request on the server, a response on the client."""

    action: str                          # wsa:Action, else the action parameter of the Content-Type
                                         # (a SoapEndpoint refuses requests without wsa:Action)
    message_id: str | None               # wsa:MessageID
    header: etree._Element | None        # the env:Header element
    body: etree._Element                 # the first element child of env:Body
    attachments: dict[str, Attachment] = field(default_factory=dict)  # MTOM parts by percent-decoded Content-ID
    environ: dict = field(default_factory=dict)  # the WSGI environ (empty for a parsed response)
    to: str | None = None                # wsa:To
    reply_to: str | None = None          # wsa:ReplyTo/wsa:Address
    relates_to: str | None = None        # wsa:RelatesTo (set in responses)
    is_mtom: bool = False                # came as multipart/related (XOP)

    def attachment(self, element: etree._Element) -> Attachment:
        """The content of an xs:base64Binary element: the MTOM part its xop:Include points at
        (XOP 1.0 3.1; in a file when it was large), else its base64 text decoded (in memory).
        The tree is left as received."""
        include = element.find(ns.XOP_INCLUDE)
        if include is not None:
            check_include(include)
            return self._part(include.get("href") or "")
        text = element.text if len(element) == 0 else "".join(element.itertext())
        if not text:
            return MemoryAttachment(b"")
        try:
            return MemoryAttachment(binascii.a2b_base64(text))
        except (binascii.Error, ValueError) as exc:
            raise SoapFault("Sender", f"{_local(element)} does not hold valid base64: {exc}") from None

    def content(self, element: etree._Element) -> bytes:
        """The bytes of an xs:base64Binary element (see attachment(); for small content)."""
        return self.attachment(element).content()

    def _part(self, href: str) -> Attachment:
        if not href.startswith("cid:"):
            raise SoapFault("Sender", f"xop:Include href must be a cid: URL (XOP 1.0 3.1), not {href!r}")
        content_id = mtom.normalize_content_id(href[4:])
        part = self.attachments.get(content_id)
        if part is None:
            raise SoapFault("Sender", f"xop:Include refers to {href!r}, which is not a part of the message")
        return part

    def close(self) -> None:
        """Discard the attachments' spool files (those a handler did not move away)."""
        for part in self.attachments.values():
            part.discard()


SoapRequest = SoapMessage


def check_include(include: etree._Element) -> None:
    """An xop:Include stands for the whole content of its parent (XOP 1.0: the base64
    characters of the element are replaced by it): nothing may be beside it, neither text
    (base64 sent twice, which copy counts?) nor other elements. Whitespace is allowed, because
    pretty-printed XOP is common (the NIST toolkit's own samples indent the xop:Include)."""
    parent = include.getparent()
    if len(parent) != 1 or (parent.text or "").strip() or (include.tail or "").strip():
        raise SoapFault("Sender", f"{_local(parent)} holds other content beside its xop:Include; an element that "
                                  "refers to an MTOM part with xop:Include must hold nothing else")


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname


# -- reading ------------------------------------------------------------------------------------


def parse_message(content_type: str | None, data: bytes, environ: dict | None = None, *,
                  huge_tree: bool = False, max_envelope_nodes: int | None = None) -> SoapMessage:
    """A SOAP 1.2 message from an HTTP body and its Content-Type: plain XML or MTOM.

    Anything that is not multipart/related is read as XML (application/soap+xml by the SOAP
    1.2 HTTP binding; text/xml is read too, so that a SOAP 1.1 client gets a VersionMismatch
    rather than an unhelpful media type error)."""
    return read_message(content_type, [data], environ, huge_tree=huge_tree, max_envelope_nodes=max_envelope_nodes)


def read_message(content_type: str | None, chunks: Iterable[bytes], environ: dict | None = None, *,
                 spool: Spool | None = None, max_envelope_size: int | None = None,
                 huge_tree: bool = False, max_envelope_nodes: int | None = None) -> SoapMessage:
    """A SOAP 1.2 message from an HTTP body that arrives in chunks (read from the socket as it
    is consumed). An MTOM body is parsed as it streams: its envelope part is kept in memory
    (at most max_envelope_size bytes), its other parts go to `spool` (files for large ones);
    on any fault every spooled part is removed. A plain body is joined and parsed (the caller
    bounds its size). Either way the envelope is refused before it is parsed when it holds
    more than max_envelope_nodes tags and attributes (check_nodes)."""
    media_type, params = mtom.parse_content_type(content_type)
    if media_type == "multipart/related":
        return _read_mtom(chunks, params, environ, spool or Spool(), max_envelope_size, huge_tree,
                          max_envelope_nodes)
    if media_type.startswith("multipart/"):
        raise SoapFault("Sender", f"{media_type} is not supported; send application/soap+xml or MTOM")
    pieces = list(chunks)
    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    if not data or data.isspace():  # isspace stops at the first other byte; strip() would copy
        raise SoapFault("Sender", "the request has no body")
    if max_envelope_size is not None and len(data) > max_envelope_size:
        raise SoapFault("Sender", f"the SOAP envelope is larger than this endpoint accepts ({max_envelope_size} "
                                  "bytes); send documents as MTOM/XOP attachments", http_status=413)
    return parse_envelope(data, content_type_action=params.get("action"), environ=environ, huge_tree=huge_tree,
                          max_nodes=max_envelope_nodes)


def parse_response(content_type: str | None, data: bytes) -> SoapMessage:
    """A response as a client sees it (faults included: body is then the env:Fault)."""
    return parse_message(content_type, data)


def _read_mtom(chunks: Iterable[bytes], params: dict[str, str], environ: dict | None, spool: Spool,
               max_envelope_size: int | None, huge_tree: bool, max_envelope_nodes: int | None) -> SoapMessage:
    parser = mtom.MultipartParser(params.get("boundary", ""), spool, root_id=params.get("start"),
                                  max_root_size=max_envelope_size)
    try:
        for chunk in chunks:
            parser.feed(chunk)
    except BaseException:
        parser.abort()
        raise
    parts = parser.close()
    try:
        root = mtom.root_part(parts, params.get("start"))
        if max_envelope_size is not None and root.size > max_envelope_size:
            raise SoapFault("Sender", f"the SOAP envelope part is larger than this endpoint accepts "
                                      f"({max_envelope_size} bytes)", http_status=413)
        # A part without a Content-ID cannot be referred to by xop:Include: nothing to keep it under.
        attachments = {}
        for part in parts:
            if part is root:
                continue
            if part.content_id is not None and part.content_id not in attachments:
                attachments[part.content_id] = part
            else:
                part.discard()
        action = params.get("action") or _action_of_part(root.content_type) or _action_of(params.get("start-info"))
        xml = root.content()
        if xml[:1].isspace():  # some stacks put a line break before the XML declaration
            xml = xml.lstrip()
        message = parse_envelope(xml, attachments=attachments, content_type_action=action, environ=environ,
                                 is_mtom=True, huge_tree=huge_tree, max_nodes=max_envelope_nodes)
        _check_includes(message)
        return message
    except BaseException:
        for part in parts:
            part.discard()
        raise


def _check_includes(message: SoapMessage) -> None:
    """Every xop:Include of an XOP package alone in its element (check_include) and pointing at
    a part of the package, checked before any handler runs: a package that refers to content
    it does not hold is refused whole, whether or not the handler would have read that element."""
    envelope = message.body.getroottree().getroot()
    for include in envelope.iter(ns.XOP_INCLUDE):
        check_include(include)
        message._part(include.get("href") or "")


def _action_of_part(content_type: str) -> str | None:
    # The root part: application/xop+xml; type="application/soap+xml; action=\"...\"" (XOP 1.0
    # 4.1 and SOAP 1.2 MTOM 4.3 put the SOAP media type and its action in `type`).
    params = mtom.parse_content_type(content_type)[1]
    return params.get("action") or _action_of(params.get("type"))


def _action_of(content_type: str | None) -> str | None:
    return mtom.parse_content_type(content_type)[1].get("action") if content_type else None


def parse_envelope(
    xml: bytes,
    *,
    attachments: dict[str, Attachment | bytes] | None = None,
    content_type_action: str | None = None,
    environ: dict | None = None,
    is_mtom: bool = False,
    huge_tree: bool = False,
    max_nodes: int | None = None,
) -> SoapMessage:
    """Check the envelope's shape (SOAP 1.2 Part 1 5.1-5.3) and read the WS-Addressing
    message addressing properties (WS-Addressing 1.0 SOAP Binding 2.2). Attachments given as
    bytes are wrapped as MemoryAttachment."""
    attachments = {key: value if isinstance(value, Attachment) else MemoryAttachment(value, content_id=key)
                   for key, value in (attachments or {}).items()}
    root = parse_xml(xml, huge_tree=huge_tree, max_nodes=max_nodes)
    header, body = _envelope_children(root)
    addressing = _addressing(header)
    action = addressing.get(ns.WSA_ACTION) or (content_type_action or "").strip()
    reply_to = _address(addressing.get(ns.WSA_REPLY_TO))
    return SoapMessage(
        action=action,
        message_id=addressing.get(ns.WSA_MESSAGE_ID),
        header=header,
        body=body,
        attachments=attachments or {},
        environ=environ if environ is not None else {},
        to=addressing.get(ns.WSA_TO),
        reply_to=reply_to,
        relates_to=addressing.get(ns.WSA_RELATES_TO),
        is_mtom=is_mtom,
    )


def _envelope_children(root: etree._Element) -> tuple[etree._Element | None, etree._Element]:
    if root.tag != ns.ENVELOPE:
        qname = etree.QName(root)
        if qname.localname == "Envelope":
            raise VersionMismatch(qname.namespace)
        raise SoapFault("Sender", f"the root element is {qname.localname!r}, not a SOAP 1.2 Envelope")
    children = list(root.iterchildren(etree.Element))
    header = children[0] if children and children[0].tag == ns.HEADER else None
    rest = children[1:] if header is not None else children
    if not rest or rest[0].tag != ns.BODY:
        raise SoapFault("Sender", "env:Envelope must hold an optional env:Header, then env:Body (SOAP 1.2 Part 1 5.1)")
    if len(rest) > 1:
        raise SoapFault("Sender", "env:Envelope must not hold elements after env:Body (SOAP 1.2 Part 1 5.1)")
    body = next(rest[0].iterchildren(etree.Element), None)
    if body is None:
        raise SoapFault("Sender", "env:Body is empty")
    second = next(body.itersiblings(etree.Element), None)
    if second is not None:
        # SOAP 1.2 itself allows several; a document/literal operation (every IHE WSDL, WS-I
        # Basic Profile 1.1 R2201, R2712) has exactly one, and a second would go unread.
        raise SoapFault("Sender", f"env:Body holds more than one element ({_local(body)}, then {_local(second)}); "
                                  "send one request element per message")
    return header, body


_SINGLE = (ns.WSA_ACTION, ns.WSA_MESSAGE_ID, ns.WSA_TO, ns.WSA_REPLY_TO, ns.WSA_FAULT_TO, ns.WSA_FROM)


def _addressing(header: etree._Element | None) -> dict[str, object]:
    """WS-Addressing headers by QName: text for Action/MessageID/To/RelatesTo, the element
    for the endpoint references (ReplyTo, FaultTo, From). Each may occur at most once
    (WS-Addressing 1.0 SOAP Binding 6.4.1, InvalidAddressingHeader / InvalidCardinality)."""
    found: dict[str, object] = {}
    if header is None:
        return found
    for block in header.iterchildren(etree.Element):
        tag = block.tag
        if not tag.startswith("{" + ns.WSA + "}"):
            continue
        if tag in found and tag in _SINGLE:
            raise SoapFault(
                "Sender", f"more than one wsa:{_local(block)} header",
                subcode=(ns.WSA_INVALID_HEADER, ns.WSA_INVALID_CARDINALITY), detail=problem_header(_local(block)),
            )
        if tag in (ns.WSA_REPLY_TO, ns.WSA_FAULT_TO, ns.WSA_FROM):
            found[tag] = block
        elif tag not in found:  # RelatesTo may repeat (one per relationship type): keep the first
            found[tag] = (block.text or "").strip()
    return found


def _address(endpoint_reference: object) -> str | None:
    if endpoint_reference is None:
        return None
    assert isinstance(endpoint_reference, etree._Element)
    return (endpoint_reference.findtext(ns.WSA_ADDRESS) or "").strip() or None


def problem_header(wsa_local_name: str) -> etree._Element:
    """WS-Addressing 1.0 SOAP Binding 6.4 fault detail: the QName of the faulty header."""
    detail = etree.Element(ns.qname(ns.WSA, "ProblemHeaderQName"), nsmap={"wsa": ns.WSA})
    detail.text = f"wsa:{wsa_local_name}"
    return detail


# -- writing ------------------------------------------------------------------------------------


def new_message_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


_ENVELOPE_START = (
    b"<?xml version='1.0' encoding='UTF-8'?>\n"
    b'<env:Envelope xmlns:env="' + SOAP12.encode() + b'" xmlns:wsa="' + WSA.encode() + b'"><env:Header>'
)


def build_envelope(
    body: etree._Element | bytes,
    action: str,
    to: str | None = None,
    message_id: str | None = None,
    *,
    relates_to: str | None = None,
    header_blocks: Iterable[etree._Element | bytes] = (),
) -> bytes:
    """A SOAP 1.2 envelope around `body`, with the WS-Addressing headers of a request or a
    reply: wsa:To (if given), wsa:Action, wsa:MessageID (a new urn:uuid unless given) and
    wsa:RelatesTo (for replies, WS-Addressing 1.0 Core 3.4). Extra header blocks follow.

    The body is serialized on its own (lxml writes the namespace declarations it inherits)
    and the envelope written around it, rather than appended to a new envelope tree. An
    append moves the element out of the caller's tree (a handler may answer with a part of
    the request, or of a stored document), and on a move lxml drops declarations it finds
    redundant, renaming prefixes: QName-valued text (xsi:type, fault codes) would then point
    at undeclared prefixes. Speed is the same either way (measured: a 2,000-entry query
    response serializes in about 10 ms both ways).

    `body` may also be bytes: one well-formed element, UTF-8, no XML declaration, that declares
    every namespace it uses - a handler that writes its answer from stored XML fragments
    (LeafClass query answers) saves parsing and serializing them again. A header block may be
    bytes on the same terms (a signed assertion conveyed as it was verified)."""
    if isinstance(body, bytes):
        body_bytes = body
    elif isinstance(body, etree._Element):
        body_bytes = etree.tostring(body, encoding="UTF-8", xml_declaration=False, with_tail=False)
    else:
        raise TypeError(f"the body must be an lxml element or bytes, not {type(body).__name__}")
    parts = [_ENVELOPE_START]
    if to:
        parts.append(_wsa("To", to))
    parts.append(_wsa("Action", action))
    parts.append(_wsa("MessageID", message_id or new_message_id()))
    if relates_to:
        parts.append(_wsa("RelatesTo", relates_to))
    for block in header_blocks:
        parts.append(block if isinstance(block, bytes) else
                     etree.tostring(block, encoding="UTF-8", xml_declaration=False, with_tail=False))
    parts.append(b"</env:Header><env:Body>")
    parts.append(body_bytes)
    parts.append(b"</env:Body></env:Envelope>")
    return b"".join(parts)


def _wsa(name: str, value: str) -> bytes:
    return f"<wsa:{name}>{escape(value)}</wsa:{name}>".encode("utf-8")


@dataclass
class SoapResponse:
    """What a handler returns: the body element (or its serialized bytes, see build_envelope)
    and its wsa:Action. With attachments the
    response is MTOM; the body refers to each (content_id, content_type, data) with
    mtom.xop_include(content_id). data is bytes, or Content (anything with .size and .open(),
    such as a stored document's file), streamed from its file while the response is sent.
    mtom=True packages the response as MTOM even without attachments and for a plain request
    (ITI-43 answers in MTOM whatever it found)."""

    body: etree._Element | bytes
    action: str
    attachments: list[mtom.OutgoingPart] = field(default_factory=list)
    header_blocks: list[etree._Element] = field(default_factory=list)
    mtom: bool = False
