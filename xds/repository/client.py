"""A Document Source and Document Consumer for the command line: build a Provide and Register
request from files, send it as MTOM, and retrieve a document into a file - both streaming, so
a file of several hundred MB passes with bounded memory, and both reporting progress.

`submission()` writes the metadata a hospital system would (ITI TF-3 4.2.3): one SubmissionSet,
one stable DocumentEntry per file, HasMember associations. uniqueIds are UUID-derived OIDs
(2.25.<uuid as an integer>, ITU-T X.667) so they need no configured root. Codes default to
values any open affinity domain accepts; each can be changed (code^scheme^display).
"""

from __future__ import annotations

import http.client
import mimetypes
import socket
import ssl
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from lxml import etree

from xds.ebrim import ns
from xds.ebrim.response import read_registry_response
from xds.errors import XdsError
from xds.soap import SoapFault, Spool, build_envelope, read_message, xop_include
from xds.soap.attachment import FileAttachment
from xds.soap.envelope import SOAP12
from xds.soap.mtom import iter_pieces, mtom_pieces, new_content_id, pieces_length

PROVIDE_AND_REGISTER = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
RETRIEVE = "urn:ihe:iti:2007:RetrieveDocumentSet"
_RIM = f"{{{ns.RIM}}}"
_XDSB = f"{{{ns.XDSB}}}"

# ITI TF-3 4.2.5.2: classification scheme and external identifier UUIDs used below.
DE_OBJECT_TYPE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"


@dataclass(frozen=True)
class Code:
    code: str
    scheme: str
    display: str

    @classmethod
    def parse(cls, text: str) -> "Code":
        """code^scheme^display (display optional: the code then)."""
        parts = text.split("^")
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ValueError(f"{text!r} is not code^scheme^display (e.g. 34133-9^2.16.840.1.113883.6.1^Summary)")
        return cls(parts[0], parts[1], "^".join(parts[2:]) or parts[0])


@dataclass
class Metadata:
    """What `xds submit` puts in the metadata besides the files themselves."""

    patient_id: str
    class_code: Code = Code("34133-9", "2.16.840.1.113883.6.1", "Summary of episode note")
    type_code: Code = Code("34133-9", "2.16.840.1.113883.6.1", "Summary of episode note")
    format_code: Code = Code("urn:ihe:iti:xds:2017:mimeTypeSufficient", "1.3.6.1.4.1.19376.1.2.3",
                             "mimeType Sufficient")
    confidentiality_codes: list[Code] = field(default_factory=lambda: [Code("N", "2.16.840.1.113883.5.25", "Normal")])
    healthcare_facility_type_code: Code = Code("22232009", "2.16.840.1.113883.6.96", "Hospital")
    practice_setting_code: Code = Code("394802001", "2.16.840.1.113883.6.96", "General medicine")
    content_type_code: Code | None = None  # the SubmissionSet's; the class code when None
    title: str | None = None               # every document's title; the file name when None
    mime_type: str | None = None           # every document's; guessed from the file name when None
    language: str = "en-US"
    author: str | None = None              # an XCN, e.g. ^Takamatsu^Hanako^^^Dr
    source_id: str = field(default_factory=lambda: uuid_oid(uuid.uuid5(uuid.NAMESPACE_DNS, socket.gethostname())))


def uuid_oid(value: uuid.UUID | None = None) -> str:
    """An OID made of a UUID (ITU-T X.667): unique without a registered root."""
    return f"2.25.{(value or uuid.uuid4()).int}"


def dtm(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y%m%d%H%M%S")


@dataclass
class Document:
    entry_id: str
    path: Path
    mime_type: str
    unique_id: str


def submission(files: Sequence[Path], metadata: Metadata) -> tuple[etree._Element, list[Document]]:
    """A ProvideAndRegisterDocumentSetRequest for `files` (their xdsb:Document elements not yet
    added: send() adds them) and the documents it describes."""
    request = etree.Element(f"{_XDSB}ProvideAndRegisterDocumentSetRequest", nsmap={"xdsb": ns.XDSB})
    submit = etree.SubElement(request, f"{{{ns.LCM}}}SubmitObjectsRequest", nsmap={"lcm": ns.LCM, "rim": ns.RIM})
    objects = etree.SubElement(submit, f"{_RIM}RegistryObjectList")
    now = dtm(datetime.now(timezone.utc))
    ss = etree.SubElement(objects, f"{_RIM}RegistryPackage", id="SubmissionSet01")
    _slot(ss, "submissionTime", now)
    _name(ss, "Documents sent with xds submit")
    if metadata.author:
        _author(ss, ns.SS_AUTHOR, "SubmissionSet01", metadata.author)
    _code(ss, ns.SS_CONTENT_TYPE_CODE, "SubmissionSet01", metadata.content_type_code or metadata.class_code, "ss-ct")
    _identifier(ss, ns.SS_UNIQUE_ID, "SubmissionSet01", uuid_oid(), "XDSSubmissionSet.uniqueId")
    _identifier(ss, ns.SS_SOURCE_ID, "SubmissionSet01", metadata.source_id, "XDSSubmissionSet.sourceId")
    _identifier(ss, ns.SS_PATIENT_ID, "SubmissionSet01", metadata.patient_id, "XDSSubmissionSet.patientId")
    etree.SubElement(objects, f"{_RIM}Classification", id="ss-node", classifiedObject="SubmissionSet01",
                     classificationNode=ns.SUBMISSION_SET_NODE)
    documents = []
    for number, path in enumerate(files, 1):
        entry_id = f"Document{number:02d}"
        mime_type = metadata.mime_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        unique_id = uuid_oid()
        created = dtm(datetime.fromtimestamp(path.stat().st_mtime, timezone.utc))
        entry = etree.SubElement(objects, f"{_RIM}ExtrinsicObject", id=entry_id, mimeType=mime_type,
                                 objectType=DE_OBJECT_TYPE)
        _slot(entry, "creationTime", created)
        _slot(entry, "languageCode", metadata.language)
        _slot(entry, "sourcePatientId", metadata.patient_id)
        _name(entry, metadata.title or path.name)
        if metadata.author:
            _author(entry, ns.DE_AUTHOR, entry_id, metadata.author)
        _code(entry, ns.DE_CLASS_CODE, entry_id, metadata.class_code, "class")
        for i, code in enumerate(metadata.confidentiality_codes):
            _code(entry, ns.DE_CONFIDENTIALITY_CODE, entry_id, code, f"conf{i}")
        _code(entry, ns.DE_FORMAT_CODE, entry_id, metadata.format_code, "format")
        _code(entry, ns.DE_HEALTHCARE_FACILITY_TYPE_CODE, entry_id, metadata.healthcare_facility_type_code, "hcft")
        _code(entry, ns.DE_PRACTICE_SETTING_CODE, entry_id, metadata.practice_setting_code, "practice")
        _code(entry, ns.DE_TYPE_CODE, entry_id, metadata.type_code, "type")
        _identifier(entry, ns.DE_PATIENT_ID, entry_id, metadata.patient_id, "XDSDocumentEntry.patientId")
        _identifier(entry, ns.DE_UNIQUE_ID, entry_id, unique_id, "XDSDocumentEntry.uniqueId")
        association = etree.SubElement(objects, f"{_RIM}Association", id=f"as{number:02d}",
                                       associationType="urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember",
                                       sourceObject="SubmissionSet01", targetObject=entry_id)
        _slot(association, "SubmissionSetStatus", "Original")
        documents.append(Document(entry_id, path, mime_type, unique_id))
    return request, documents


def _slot(parent: etree._Element, name: str, *values: str) -> None:
    slot = etree.SubElement(parent, f"{_RIM}Slot", name=name)
    value_list = etree.SubElement(slot, f"{_RIM}ValueList")
    for value in values:
        etree.SubElement(value_list, f"{_RIM}Value").text = value


def _name(parent: etree._Element, text: str) -> None:
    etree.SubElement(etree.SubElement(parent, f"{_RIM}Name"), f"{_RIM}LocalizedString", value=text)


def _code(parent: etree._Element, scheme: str, object_id: str, code: Code, suffix: str) -> None:
    classification = etree.SubElement(parent, f"{_RIM}Classification", id=f"{object_id}-{suffix}",
                                      classificationScheme=scheme, classifiedObject=object_id,
                                      nodeRepresentation=code.code)
    _slot(classification, "codingScheme", code.scheme)
    _name(classification, code.display)


def _author(parent: etree._Element, scheme: str, object_id: str, person: str) -> None:
    classification = etree.SubElement(parent, f"{_RIM}Classification", id=f"{object_id}-author",
                                      classificationScheme=scheme, classifiedObject=object_id, nodeRepresentation="")
    _slot(classification, "authorPerson", person)


def _identifier(parent: etree._Element, scheme: str, object_id: str, value: str, name: str) -> None:
    identifier = etree.SubElement(parent, f"{_RIM}ExternalIdentifier", id=f"{object_id}-{name.rsplit('.', 1)[1]}",
                                  identificationScheme=scheme, registryObject=object_id, value=value)
    _name(identifier, name)


# -- progress -------------------------------------------------------------------------------------


class Progress:
    """Bytes done of a total, on stderr: a line redrawn in place on a terminal, else a line
    every 10%. Silent for transfers under `threshold` bytes."""

    def __init__(self, label: str, total: int | None, stream=None, threshold: int = 1024 * 1024):
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.done = 0
        self.active = total is None or total >= threshold
        self.started = time.monotonic()
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._shown = -1

    def advance(self, count: int) -> None:
        self.done += count
        if not self.active:
            return
        if self._tty:
            mark = int(self.done * 100 / self.total) if self.total else int(self.done // 1e6)
        else:  # a log: a line every 10%, or every 100 MB when the total is unknown
            mark = int(self.done * 10 / self.total) if self.total else int(self.done // 1e8)
        if mark != self._shown:
            self._shown = mark
            self.stream.write(f"\r{self._line()}" if self._tty else self._line() + "\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.active:
            self.stream.write(("\r" if self._tty else "") + self._line() + "\n")
            self.stream.flush()

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        done = self.done / 1e6
        rate = done / elapsed
        if self.total:
            return f"{self.label}: {done:,.1f} / {self.total / 1e6:,.1f} MB ({self.done * 100 // self.total}%), {rate:,.1f} MB/s"
        return f"{self.label}: {done:,.1f} MB, {rate:,.1f} MB/s"


# -- HTTP -----------------------------------------------------------------------------------------


def _connection(url: str, timeout: float, context: ssl.SSLContext | None = None
                ) -> tuple[http.client.HTTPConnection, str]:
    """`context`: for https, the TLS context (xds.security.tls.client_context for mutual TLS); None:
    Python's default (system CAs, no client certificate)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url}: only http:// and https:// URLs")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "https":
        return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=context), path
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout), path


def post_streaming(url: str, content_type: str, pieces: Sequence, *, progress: Progress | None = None,
                   timeout: float = 600, context: ssl.SSLContext | None = None
                   ) -> tuple[int, str, Iterator[bytes], Callable[[], None]]:
    """POST a body made of pieces (bytes and Content, read in chunks as they are sent).
    Returns (status, Content-Type, the response body's chunks, close)."""
    connection, path = _connection(url, timeout, context)
    length = pieces_length(pieces)

    def body() -> Iterator[bytes]:
        for chunk in iter_pieces(pieces):
            yield chunk
            if progress:
                progress.advance(len(chunk))

    connection.putrequest("POST", path)
    connection.putheader("Content-Type", content_type)
    connection.putheader("Content-Length", str(length))
    connection.endheaders()
    for chunk in body():
        connection.send(chunk)
    if progress:
        progress.finish()
    response = connection.getresponse()

    def chunks() -> Iterator[bytes]:
        while data := response.read(1024 * 1024):
            yield data

    return response.status, response.getheader("Content-Type", ""), chunks(), connection.close


def _read_answer(url: str, status: int, content_type: str, chunks: Iterator[bytes], spool: Spool | None = None):
    if "xml" not in content_type and not content_type.lower().startswith("multipart/"):
        raise ValueError(f"{url} answered HTTP {status}: {b''.join(chunks)[:200]!r}")
    try:
        message = read_message(content_type, chunks, spool=spool)
    except SoapFault as fault:
        raise ValueError(f"{url} answered HTTP {status} with an unreadable message: {fault.reason}") from None
    if message.body.tag == f"{{{SOAP12}}}Fault":
        message.close()
        reason = message.body.findtext(f".//{{{SOAP12}}}Text") or "no reason given"
        raise ValueError(f"SOAP fault from {url}: {reason}")
    return message


# -- the two transactions -------------------------------------------------------------------------


def provide_and_register(url: str, request: etree._Element, documents: Sequence[Document], *,
                         progress: bool = True, timeout: float = 600,
                         context: ssl.SSLContext | None = None) -> tuple[str, list[XdsError]]:
    """Send ITI-41 with each document as an MTOM part streamed from its file; returns the
    RegistryResponse's status and errors."""
    attachments = []
    for document in documents:
        content_id = new_content_id()
        element = etree.SubElement(request, f"{_XDSB}Document", id=document.entry_id)
        element.append(xop_include(content_id))
        attachments.append((content_id, document.mime_type, FileAttachment(document.path)))
    envelope = build_envelope(request, PROVIDE_AND_REGISTER, to=url)
    content_type, pieces = mtom_pieces(envelope, attachments, action=PROVIDE_AND_REGISTER)
    meter = Progress("sending", pieces_length(pieces)) if progress else None
    status, answer_type, chunks, close = post_streaming(url, content_type, pieces, progress=meter, timeout=timeout,
                                                        context=context)
    try:
        message = _read_answer(url, status, answer_type, chunks)
    finally:
        close()
    return read_registry_response(message.body)


def retrieve(url: str, repository_unique_id: str, unique_id: str, output: Path, *,
             home_community_id: str | None = None, progress: bool = True, timeout: float = 600,
             context: ssl.SSLContext | None = None) -> tuple[str, list[XdsError], str | None]:
    """Send ITI-43 for one document and write it to `output` as it arrives (through a spool
    file beside `output`, renamed when whole). Returns (status, errors, mimeType)."""
    request = etree.Element(f"{_XDSB}RetrieveDocumentSetRequest", nsmap={"xdsb": ns.XDSB})
    item = etree.SubElement(request, f"{_XDSB}DocumentRequest")
    if home_community_id:
        etree.SubElement(item, f"{_XDSB}HomeCommunityId").text = home_community_id
    etree.SubElement(item, f"{_XDSB}RepositoryUniqueId").text = repository_unique_id
    etree.SubElement(item, f"{_XDSB}DocumentUniqueId").text = unique_id
    envelope = build_envelope(request, RETRIEVE, to=url)
    status, answer_type, chunks, close = post_streaming(
        url, f'application/soap+xml; charset=UTF-8; action="{RETRIEVE}"', [envelope], timeout=timeout,
        context=context)
    meter = Progress("receiving", None) if progress else None

    def counted() -> Iterator[bytes]:
        for chunk in chunks:
            if meter:
                meter.advance(len(chunk))
            yield chunk

    output = Path(output)
    spool = Spool(output.resolve().parent, memory_limit=1024 * 1024)
    try:
        message = _read_answer(url, status, answer_type, counted(), spool)
    finally:
        close()
    if meter and meter.done >= 1024 * 1024:
        meter.finish()
    try:
        registry_response = message.body.find(f"{{{ns.RS}}}RegistryResponse")
        if registry_response is None:
            raise ValueError(f"{url} answered without a RegistryResponse")
        status_value, errors = read_registry_response(registry_response)
        mime_type = None
        for response in message.body.iter(f"{_XDSB}DocumentResponse"):
            if (response.findtext(f"{_XDSB}DocumentUniqueId") or "").strip() != unique_id:
                continue
            mime_type = (response.findtext(f"{_XDSB}mimeType") or "").strip() or None
            document = response.find(f"{_XDSB}Document")
            if document is None:
                raise ValueError(f"DocumentResponse for {unique_id} without a Document")
            if output.exists():
                output.unlink()
            message.attachment(document).move_to(output)
            break
        return status_value, errors, mime_type
    finally:
        message.close()
