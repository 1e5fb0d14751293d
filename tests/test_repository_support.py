"""What the repository tests share: a real `xds serve` on a database of its own, ITI-41/43
requests written as a Document Source would, and a zeep transport that sends MTOM. (No tests
here: the module is named so that the file rules of the repository's tests cover it.)"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from tests import submissions as s
from tests.server import XDS, serve
from xds.repository.blobs import INCOMING, FileBlobStore, StoredDocument
from xds.soap import build_envelope, build_mtom, parse_response, xop_include
from xds.store import db
from xds.store.tables import DocumentEntryRow

PNR = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
RETRIEVE = "urn:ihe:iti:2007:RetrieveDocumentSet"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"
REPOSITORY_UNIQUE_ID = "1.2.392.200119.6.102.1"



@dataclass
class RunningServer:
    base: str
    env: dict
    data_dir: Path
    database_url: str
    process: subprocess.Popen
    log_path: Path
    repository_unique_id: str = REPOSITORY_UNIQUE_ID
    schema: str | None = None
    _engine: object = field(default=None, repr=False)

    @property
    def engine(self):
        if self._engine is None:
            self._engine = db.make_engine(self.database_url)
        return self._engine

    def entry(self, unique_id: str) -> DocumentEntryRow | None:
        with db.make_sessionmaker(self.engine)() as session:
            return session.scalars(select(DocumentEntryRow).where(DocumentEntryRow.unique_id == unique_id)).first()

    def stored(self, unique_id: str) -> StoredDocument | None:
        return FileBlobStore(self.data_dir / "documents").get(unique_id)

    def staging_left(self, wait: float = 3.0) -> list[str]:
        """What is left in the staging folder once the requests are over (spool files go when
        the response has been sent, which a client may see a moment before)."""
        deadline = time.monotonic() + wait
        while True:
            left = sorted(p.name for p in (self.data_dir / "documents" / INCOMING).iterdir())
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)

    def add_patient(self, patient: str) -> None:
        subprocess.run([*XDS, "patients", "add", patient], env=self.env, check=True, capture_output=True)

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [int(pid) for pid in children]


def _database(kind: str, tmp: Path) -> tuple[str, str | None]:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'registry.sqlite3'}", None
    base = os.environ.get("XDS_TEST_DATABASE_URL")
    if not base:
        pytest.skip("PostgreSQL tests are off: set XDS_TEST_DATABASE_URL")
    schema = f"t_{uuid.uuid4().hex}"
    admin = db.make_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    url = make_url(base)
    options = " ".join(filter(None, [url.query.get("options"), f"-csearch_path={schema}"]))
    return url.update_query_dict({"options": options}).render_as_string(hide_password=False), schema


def start_server(kind: str, tmp: Path, *, patients=(s.PATIENT,), extra_env: dict | None = None,
                 database: tuple[str, str | None] | None = None, upgrade: bool = True) -> RunningServer:
    """`xds serve` with 2 workers on a fresh database (or `database`), in a session of its own
    (so that a test can kill it whole)."""
    database_url, schema = database or _database(kind, tmp)
    env = dict(os.environ, XDS_DATA_DIR=str(tmp / "var"), XDS_DATABASE_URL=database_url,
               XDS_REPOSITORY_UNIQUE_ID=REPOSITORY_UNIQUE_ID)
    env.update(extra_env or {})
    if upgrade:
        subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    if patients:
        subprocess.run([*XDS, "patients", "add", *patients], env=env, check=True, capture_output=True)
    log_path = tmp / f"server-{len(list(tmp.glob('server-*.log')))}.log"
    process, base = serve(env, log_path, new_session=True)
    return RunningServer(base, env, tmp / "var", database_url, process, log_path,
                         repository_unique_id=env["XDS_REPOSITORY_UNIQUE_ID"], schema=schema)


def kill_server(server: RunningServer) -> None:
    """SIGKILL to the server and its workers at once: a crash, not a shutdown."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(10)


def stop_server(server: RunningServer, *, drop: bool = True) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(15)
        except subprocess.TimeoutExpired:
            kill_server(server)
    if server._engine is not None:
        server._engine.dispose()
    if drop and server.schema:
        admin = db.make_engine(os.environ["XDS_TEST_DATABASE_URL"])
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{server.schema}" CASCADE'))
        admin.dispose()


# -- requests ------------------------------------------------------------------------------------------


def pnr_request(documents: list[tuple[str, bytes, str]], *, inline: bool = False, with_documents: bool = True,
                hash: str | None = None, size: str | None = None, repository: str | None = None,
                unique_ids: list[str] | None = None, patient: str = s.PATIENT) -> tuple[etree._Element, dict]:
    """A ProvideAndRegisterDocumentSetRequest as a Document Source writes it: no hash, size or
    repositoryUniqueId unless given; each document inline (base64) or as xop:Include of
    cid:doc<n>@test (n from 1). Returns the request and {entry id: uniqueId}."""
    unique_ids = unique_ids or [s.new_oid() for _ in documents]
    objects = [s.submission_set("SubmissionSet01", s.new_oid(), patient)]
    for (entry_id, _, _), unique_id in zip(documents, unique_ids):
        objects.append(s.document(entry_id, unique_id, patient))
        objects.append(s.association(f"as-{entry_id}", "HasMember", "SubmissionSet01", entry_id, "Original"))
    submit = s.element(s.request(*objects))
    for entry in submit.iter(f"{{{RIM}}}ExtrinsicObject"):
        mime = next(m for entry_id, _, m in documents if entry_id == entry.get("id"))
        entry.set("mimeType", mime)
        for slot in list(entry.findall(f"{{{RIM}}}Slot")):
            name = slot.get("name")
            wanted = {"hash": hash, "size": size, "repositoryUniqueId": repository}.get(name, slot)
            if wanted is None:
                entry.remove(slot)
            elif isinstance(wanted, str):
                slot.find(f"{{{RIM}}}ValueList/{{{RIM}}}Value").text = wanted
    request = etree.Element(f"{{{XDSB}}}ProvideAndRegisterDocumentSetRequest", nsmap={"xdsb": XDSB})
    request.append(submit)
    if with_documents:
        for number, (entry_id, data, _) in enumerate(documents, 1):
            element = etree.SubElement(request, f"{{{XDSB}}}Document", id=entry_id)
            if inline:
                element.text = base64.b64encode(data).decode()
            else:
                element.append(xop_include(f"doc{number}@test"))
    return request, {entry_id: uid for (entry_id, _, _), uid in zip(documents, unique_ids)}


def retrieve_request(items) -> etree._Element:
    """items: (repositoryUniqueId, documentUniqueId) or (..., homeCommunityId)."""
    request = etree.Element(f"{{{XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": XDSB})
    for item in items:
        document_request = etree.SubElement(request, f"{{{XDSB}}}DocumentRequest")
        if len(item) > 2:
            etree.SubElement(document_request, f"{{{XDSB}}}HomeCommunityId").text = item[2]
        etree.SubElement(document_request, f"{{{XDSB}}}RepositoryUniqueId").text = item[0]
        etree.SubElement(document_request, f"{{{XDSB}}}DocumentUniqueId").text = item[1]
    return request


def post(url: str, body: bytes, content_type: str, *, method: str = "POST", query: str = ""
         ) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url + query, data=body if method == "POST" else None, method=method,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def soap_pnr(server: RunningServer, request: etree._Element, attachments=(), *, mtom: bool = True):
    envelope = build_envelope(request, PNR, to=server.base + "/repository")
    if mtom:
        content_type, body = build_mtom(envelope, list(attachments), action=PNR)
    else:
        content_type, body = f'application/soap+xml; charset=UTF-8; action="{PNR}"', envelope
    status, answer_type, answer = post(server.base + "/repository", body, content_type)
    return status, parse_response(answer_type, answer)


def soap_retrieve(server: RunningServer, items, *, body: etree._Element | None = None):
    envelope = build_envelope(body if body is not None else retrieve_request(items), RETRIEVE,
                              to=server.base + "/repository")
    status, answer_type, answer = post(server.base + "/repository", envelope,
                                       f'application/soap+xml; charset=UTF-8; action="{RETRIEVE}"')
    return status, parse_response(answer_type, answer)


def status_of(registry_response: etree._Element) -> str:
    return (registry_response.get("status") or "").rsplit(":", 1)[-1]


def codes_of(registry_response: etree._Element) -> list[str]:
    return [e.get("errorCode") for e in registry_response.iter(f"{{{RS}}}RegistryError")]


def sha1_hex(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


# -- zeep ------------------------------------------------------------------------------------------------


class ReplaceBody:
    """A zeep plugin that puts an lxml request in the outgoing body: zeep builds the envelope,
    WS-Addressing headers and HTTP from the WSDL, but cannot serialize ebRIM's substitution
    groups (rim:ExtrinsicObject in rim:Identifiable) from Python objects."""

    def __init__(self, request: etree._Element):
        self.request = request

    def egress(self, envelope, http_headers, operation, binding_options):
        body = envelope.find("{http://www.w3.org/2003/05/soap-envelope}Body")
        body.clear()
        body.append(etree.fromstring(etree.tostring(self.request)))
        return envelope, http_headers

    def ingress(self, envelope, http_headers, operation):
        return envelope, http_headers


def _mtom_transport_class():
    import zeep.transports

    class MtomTransport(zeep.transports.Transport):
        """zeep sends xs:base64Binary inline; this sends each xdsb:Document as an XOP part
        (SOAP 1.2 MTOM), written here by hand rather than with the project's own MTOM code."""

        sent_parts = 0
        sent_bytes = 0

        def post_xml(self, address, envelope, headers):
            parts = []
            for document in envelope.iter(f"{{{XDSB}}}Document"):
                if len(document) or not (document.text or "").strip():
                    continue
                content_id = f"{uuid.uuid4().hex}@zeep.test"
                parts.append((content_id, base64.b64decode(document.text)))
                document.text = None
                include = etree.SubElement(document, "{http://www.w3.org/2004/08/xop/include}Include")
                include.set("href", "cid:" + content_id)
            if not parts:
                return super().post_xml(address, envelope, headers)
            boundary = "zeep-" + uuid.uuid4().hex
            xml = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
            chunks = [f"--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; "
                      f'type="application/soap+xml"\r\nContent-ID: <root@zeep.test>\r\n\r\n'.encode(), xml]
            for content_id, data in parts:
                chunks += [f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                           f"Content-Transfer-Encoding: binary\r\nContent-ID: <{content_id}>\r\n\r\n".encode(), data]
            chunks.append(f"\r\n--{boundary}--\r\n".encode())
            body = b"".join(chunks)
            action = headers.get("Content-Type", "").partition("action=")[2].strip('"')
            headers = dict(headers)
            headers["Content-Type"] = (f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; '
                                       f'start="<root@zeep.test>"; start-info="application/soap+xml"; '
                                       f'action="{action}"')
            self.sent_parts = 1 + len(parts)
            self.sent_bytes = len(body)
            return self.post(address, body, headers)

    return MtomTransport


def __getattr__(name):  # MtomTransport imports zeep only when a test asks for it
    if name == "MtomTransport":
        return _mtom_transport_class()
    raise AttributeError(name)
