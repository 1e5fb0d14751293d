"""A Document Source and Document Consumer for the command line: build a Provide and Register
request from files, send it as MTOM, and retrieve a document into a file - both streaming, so
a file of several hundred MB passes with bounded memory, and both reporting progress.

`submission()` makes the metadata a hospital system would (ITI TF-3 4.2.3) as model objects -
one SubmissionSet, one stable DocumentEntry per file, HasMember associations - and
`xds.ebrim.write` writes them. uniqueIds are UUID-derived OIDs (2.25.<uuid as an integer>,
ITU-T X.667) so they need no configured root. Codes default to values any open affinity domain
accepts; each can be changed (`parse_code`: code^scheme^display).
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

from xds import model
from xds.dtm import dtm
from xds.ebrim import ns
from xds.ebrim.response import read_registry_response
from xds.ebrim.write import add_document, write_provide_and_register
from xds.errors import XdsError
from xds.soap import SoapFault, Spool, build_envelope, read_message, xop_include
from xds.soap.attachment import FileAttachment
from xds.soap.envelope import SOAP12
from xds.soap.mtom import iter_pieces, mtom_pieces, new_content_id, pieces_length
from xds.transactions import ITI_41, ITI_43

_XDSB = f"{{{ns.XDSB}}}"


def parse_code(text: str) -> model.Code:
    """A code as the command line takes it: code^scheme^display (display optional: the code then)."""
    parts = text.split("^")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"{text!r} is not code^scheme^display (e.g. 34133-9^2.16.840.1.113883.6.1^Summary)")
    return model.Code(parts[0], parts[1], "^".join(parts[2:]) or parts[0])




def _default(code: str, scheme: str, display: str):
    """A Metadata code's default (model.Code is mutable: each Metadata gets its own)."""
    return field(default_factory=lambda: model.Code(code, scheme, display))


@dataclass
class Metadata:
    """What `xds submit` puts in the metadata besides the files themselves."""

    patient_id: str
    class_code: model.Code = _default("34133-9", "2.16.840.1.113883.6.1", "Summary of episode note")
    type_code: model.Code = _default("34133-9", "2.16.840.1.113883.6.1", "Summary of episode note")
    format_code: model.Code = _default("urn:ihe:iti:xds:2017:mimeTypeSufficient", "1.3.6.1.4.1.19376.1.2.3",
                                       "mimeType Sufficient")
    confidentiality_codes: list[model.Code] = field(
        default_factory=lambda: [model.Code("N", "2.16.840.1.113883.5.25", "Normal")])
    healthcare_facility_type_code: model.Code = _default("22232009", "2.16.840.1.113883.6.96", "Hospital")
    practice_setting_code: model.Code = _default("394802001", "2.16.840.1.113883.6.96", "General medicine")
    content_type_code: model.Code | None = None  # the SubmissionSet's; the class code when None
    title: str | None = None               # every document's title; the file name when None
    mime_type: str | None = None           # every document's; guessed from the file name when None
    language: str = "en-US"
    author: str | None = None              # an XCN, e.g. ^Takamatsu^Hanako^^^Dr
    source_id: str = field(default_factory=lambda: uuid_oid(uuid.uuid5(uuid.NAMESPACE_DNS, socket.gethostname())))


def uuid_oid(value: uuid.UUID | None = None) -> str:
    """An OID made of a UUID (ITU-T X.667): unique without a registered root."""
    return f"2.25.{(value or uuid.uuid4()).int}"


@dataclass
class Document:
    entry_id: str
    path: Path
    mime_type: str
    unique_id: str


SUBMISSION_SET_ID = "SubmissionSet01"


def submission(files: Sequence[Path], metadata: Metadata) -> tuple[etree._Element, list[Document]]:
    """A ProvideAndRegisterDocumentSetRequest for `files` (their xdsb:Document elements not yet
    added: provide_and_register() adds them) and the documents it describes."""
    submission_set = model.SubmissionSet(
        id=SUBMISSION_SET_ID,
        unique_id=uuid_oid(),
        source_id=metadata.source_id,
        patient_id=metadata.patient_id,
        submission_time=dtm(datetime.now(timezone.utc)),
        content_type_code=metadata.content_type_code or metadata.class_code,
        title="Documents sent with xds submit",
        authors=_authors(metadata),
    )
    content = model.Submission(submission_set=submission_set)
    documents = []
    for number, path in enumerate(files, 1):
        entry = model.DocumentEntry(
            id=f"Document{number:02d}",
            object_type=model.DocumentEntryType.STABLE.value,
            unique_id=uuid_oid(),
            patient_id=metadata.patient_id,
            mime_type=metadata.mime_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream",
            title=metadata.title or path.name,
            creation_time=dtm(datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)),
            language_code=metadata.language,
            source_patient_id=metadata.patient_id,
            class_code=metadata.class_code,
            type_code=metadata.type_code,
            format_code=metadata.format_code,
            healthcare_facility_type_code=metadata.healthcare_facility_type_code,
            practice_setting_code=metadata.practice_setting_code,
            confidentiality_codes=list(metadata.confidentiality_codes),
            authors=_authors(metadata),
        )
        content.documents.append(entry)
        content.associations.append(model.Association(
            id=f"as{number:02d}", type=model.AssociationType.HAS_MEMBER.value, source=SUBMISSION_SET_ID,
            target=entry.id, submission_set_status=model.SubmissionSetStatus.ORIGINAL.value))
        documents.append(Document(entry.id, path, entry.mime_type, entry.unique_id))
    return write_provide_and_register(content), documents


def _authors(metadata: Metadata) -> list[model.Author]:
    return [model.Author(person=metadata.author)] if metadata.author else []


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
        add_document(request, document.entry_id, xop_include(content_id))
        attachments.append((content_id, document.mime_type, FileAttachment(document.path)))
    envelope = build_envelope(request, ITI_41.action, to=url)
    content_type, pieces = mtom_pieces(envelope, attachments, action=ITI_41.action)
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
    envelope = build_envelope(request, ITI_43.action, to=url)
    status, answer_type, chunks, close = post_streaming(
        url, f'application/soap+xml; charset=UTF-8; action="{ITI_43.action}"', [envelope], timeout=timeout,
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
