"""ITI-86 Remove Documents at the Document Repository (RMD supplement, ITI TF-2b 3.86): the blob
store's removal and its recovery after a crash, the transaction's answers, the audit record, and
over HTTP a real `xds serve` on SQLite and PostgreSQL with zeep built from the served WSDL, the
NIST toolkit's ITI-86 requests (50000, 50002), and `xds documents remove`.

"Removed" means the bytes are gone from disk: every test that removes a document looks for its
content in every file under the documents folder afterwards."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from lxml import etree

from tests import submissions as s
from tests.data import CONFORMANCE
from tests.server import XDS
from tests.test_repository_support import (
    RS,
    XDSB,
    RunningServer,
    codes_of,
    pnr_request,
    post,
    soap_pnr,
    soap_retrieve,
    start_server,
    status_of,
    stop_server,
)
from xds.audit import events
from xds.conformance.prepare import substitute
from xds.dispatch import Dispatcher
from xds.ebrim import ns
from xds.ebrim.remove import remove_documents_request
from xds.ebrim.response import read_registry_response
from xds.repository import blobs as blobs_module
from xds.repository.blobs import INCOMING, REMOVED, FileBlobStore, NewDocument
from xds.repository.remove import RemoveDocuments
from xds.result import Result
from xds.rules import RULES
from xds.soap import SoapRequest, build_envelope, parse_response
from xds.soap.attachment import MemoryAttachment
from xds.transactions import ITI_86

REPOSITORY = "1.2.392.200119.6.102.1"
NIST = CONFORMANCE / "iti-86" / "nist"
needs_nist = pytest.mark.skipif(not NIST.is_dir(), reason=f"the NIST ITI-86 tests are not at {NIST}")
PUBLIC_RMD = CONFORMANCE / "schemas" / "xds-b" / "rmd.xsd"
OUR_RMD = Path(__file__).resolve().parent.parent / "schemas" / "rmd.xsd"


# --- helpers ---------------------------------------------------------------------------------------


def store_documents(store: FileBlobStore, count: int = 1, patient: str = s.PATIENT) -> dict[str, bytes]:
    """Documents stored as ITI-41 stores them (staged, then committed): uniqueId -> content, each
    content marked so that a search of the disk finds it."""
    documents = {}
    for _ in range(count):
        unique_id = s.new_oid()
        content = f"REMOVE-ME-{unique_id}-".encode() + os.urandom(64)
        documents[unique_id] = content
        staged = store.stage([NewDocument(unique_id, "text/plain", MemoryAttachment(content),
                                          hashlib.sha1(content).hexdigest(), len(content), patient)])
        store.commit(staged)
    return documents


def on_disk(root: Path, content: bytes) -> list[Path]:
    """Every file under `root` that holds `content`."""
    return [path for path in root.rglob("*") if path.is_file() and content in path.read_bytes()]


def remove(store: FileBlobStore, *unique_ids: str, repository: str = REPOSITORY) -> Result:
    return RemoveDocuments(REPOSITORY, store).remove(remove_documents_request(unique_ids, repository))


def status(result: Result) -> str:
    return result.status.rsplit(":", 1)[-1]


@pytest.fixture
def store(tmp_path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "documents")


# --- removal (RMD 3.86.4.1.3) ---------------------------------------------------------------------------


def test_a_removed_document_is_gone_from_disk(store):
    documents = store_documents(store, 2)
    gone, kept = documents
    result = remove(store, gone)
    assert status(result) == "Success" and result.errors == []
    assert [(d.unique_id, d.patient_id, d.repository_unique_id) for d in result.documents] == [
        (gone, s.PATIENT, REPOSITORY)]
    assert store.get(gone) is None and not store.path_of(gone).exists()
    assert on_disk(store.root, documents[gone]) == []
    assert list((store.root / INCOMING).iterdir()) == []  # nothing left over
    assert store.get(kept) is not None and on_disk(store.root, documents[kept])


def test_several_documents_in_one_request(store):
    documents = store_documents(store, 3)
    result = remove(store, *documents)
    assert status(result) == "Success" and len(result.documents) == 3
    assert all(on_disk(store.root, content) == [] for content in documents.values())


def test_partial_success_and_failure(store):
    """RMD 3.86.4.2.2 (as ITI-43): some removed -> PartialSuccess, none -> Failure; an error per
    document not removed, located at its uniqueId."""
    (stored,) = store_documents(store)
    request = remove_documents_request([stored, "1.2.3.404"], REPOSITORY)
    other = remove_documents_request(["1.2.3.5"], "1.2.3.999")
    request.append(other[0])
    result = RemoveDocuments(REPOSITORY, store).remove(request)
    assert status(result) == "PartialSuccess"
    assert [(e.code, e.location) for e in result.errors] == [
        (RULES["remove-documents.unknown-document"].code, "1.2.3.404"),
        (RULES["remove-documents.unknown-repository"].code, "1.2.3.5")]
    assert "1.2.3.999" in result.errors[1].context and REPOSITORY in result.errors[1].context
    assert [d.unique_id for d in result.documents] == [stored]
    result = remove(store, stored)  # removed already: nothing to remove
    assert status(result) == "Failure" and [e.code for e in result.errors] == ["XDSDocumentUniqueIdError"]


def test_a_document_named_twice_is_removed_once(store):
    (stored,) = store_documents(store)
    result = remove(store, stored, stored)
    assert status(result) == "Success" and [d.unique_id for d in result.documents] == [stored]


def test_a_request_that_is_not_a_remove_documents_request(store):
    retrieve = etree.fromstring(f'<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{XDSB}"/>')
    result = RemoveDocuments(REPOSITORY, store).remove(retrieve)
    assert [e.code for e in result.errors] == [RULES["remove-documents.not-remove-documents"].code]
    assert "RetrieveDocumentSetRequest" in result.errors[0].context
    empty = RemoveDocuments(REPOSITORY, store).remove(remove_documents_request([], REPOSITORY))
    assert "without DocumentRequest" in empty.errors[0].context and status(empty) == "Failure"


def test_a_document_request_without_its_ids(store):
    (stored,) = store_documents(store)
    request = remove_documents_request([stored, "x"], REPOSITORY)
    second = request[1]
    second.remove(second.find(f"{{{XDSB}}}DocumentUniqueId"))
    result = RemoveDocuments(REPOSITORY, store).remove(request)
    assert status(result) == "PartialSuccess"
    (problem,) = result.errors
    assert problem.code == RULES["remove-documents.incomplete-request"].code
    assert "DocumentRequest 2 has no DocumentUniqueId" in problem.context


def test_a_file_system_refusal_leaves_the_document_stored(store, monkeypatch):
    """The rename that removes a document fails (a read-only mount, say): XDSRepositoryError
    for that document, which is still stored and retrievable."""
    documents = store_documents(store)
    (stored,) = documents

    def refuse(source, target):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(blobs_module.os, "rename", refuse)
    result = remove(store, stored)
    assert [e.code for e in result.errors] == [RULES["remove-documents.not-removed"].code]
    assert "Read-only file system" in result.errors[0].context and "still stored" in result.errors[0].context
    monkeypatch.undo()
    assert store.get(stored) is not None and on_disk(store.root, documents[stored])


def test_a_retrieval_under_way_keeps_its_bytes(store):
    """POSIX keeps a file open for reading alive after its unlink: a document being sent by
    ITI-43 when ITI-86 removes it is sent whole."""
    documents = store_documents(store)
    (stored,) = documents
    with store.get(stored).open() as reading:
        head = reading.read(5)
        assert status(remove(store, stored)) == "Success"
        assert head + reading.read() == documents[stored]
    assert on_disk(store.root, documents[stored]) == []


def test_concurrent_removals_of_one_document(store):
    """Two removals of one document at once: one removes it, the other finds nothing."""
    documents = store_documents(store, 20)
    outcomes: list[list[str]] = []
    barrier = threading.Barrier(2)

    def run():
        barrier.wait()
        for unique_id in documents:
            outcomes.append([e.code for e in remove(store, unique_id).errors])

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(map(tuple, outcomes)) == [()] * 20 + [("XDSDocumentUniqueIdError",)] * 20
    assert all(on_disk(store.root, content) == [] for content in documents.values())


# --- durability: a crash between the decision and the deletion -----------------------------------------


def _remove_and_die(root: str, unique_id: str) -> None:
    """Remove a document in a process that is killed (SIGKILL) right after the rename that
    decides the removal, before any of its files is deleted."""
    def crash(path, *args, **kw):
        os.kill(os.getpid(), signal.SIGKILL)

    blobs_module.shutil.rmtree = crash
    FileBlobStore(root).remove(unique_id)


def test_a_crash_after_the_decision_is_finished_by_recovery(store):
    documents = store_documents(store, 2)
    gone, kept = documents
    process = multiprocessing.get_context("spawn").Process(target=_remove_and_die, args=(str(store.root), gone))
    process.start()
    process.join(60)
    assert process.exitcode == -signal.SIGKILL
    # Decided and durable: no longer retrievable, though its bytes still wait in a removed-* folder.
    assert store.get(gone) is None
    left = list((store.root / INCOMING).glob(f"{REMOVED}*"))
    assert len(left) == 1 and on_disk(store.root, documents[gone])
    # Recovery (every worker runs it when it starts) deletes them; it never brings the document
    # back, even from a registry that still holds its DocumentEntry.
    recovery = FileBlobStore(store.root).recover(lambda unique_id, digest: True)
    assert recovery.removals_finished == 1 and recovery.rolled_forward == []
    assert store.get(gone) is None and on_disk(store.root, documents[gone]) == []
    assert store.get(kept) is not None


def test_a_failed_deletion_is_left_to_recovery(store, monkeypatch):
    """The files cannot be deleted after the rename (an I/O error): the removal stands (Success:
    the document is gone for every reader) and recovery deletes the files later."""
    documents = store_documents(store)
    (stored,) = documents

    def fail(path, *args, **kw):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(blobs_module.shutil, "rmtree", fail)
    assert status(remove(store, stored)) == "Success"
    monkeypatch.undo()
    assert store.get(stored) is None
    assert FileBlobStore(store.root).recover(lambda unique_id, digest: None).removals_finished == 1
    assert on_disk(store.root, documents[stored]) == []


# --- the transaction: dispatch, response, audit ------------------------------------------------------


def test_the_repository_answers_iti_86_with_its_status(tmp_path):
    """Through the way in (xds.dispatch) with the repository as `xds serve` builds it: the
    RegistryResponse carries PartialSuccess as IHE writes it."""
    from xds.config import Settings
    from xds.repository import service

    settings = Settings(data_dir=tmp_path, repository_unique_id=REPOSITORY)
    repository = service.build(settings, registry=object())
    (stored,) = store_documents(repository.blobs)
    handler = Dispatcher({"DocumentRepository": repository}).handler(ITI_86)
    request = SoapRequest(action=ITI_86.action, message_id="urn:uuid:86", header=None,
                          body=remove_documents_request([stored, "1.2.3.404"], REPOSITORY))
    response = handler(request)
    assert response.action == "urn:ihe:iti:2017:RemoveDocumentsResponse" and not response.mtom
    answer, errors = read_registry_response(response.body)
    assert answer == ns.PARTIAL_SUCCESS and [e.code for e in errors] == ["XDSDocumentUniqueIdError"]


def test_an_unexpected_failure_answers_repository_error(tmp_path, monkeypatch):
    from xds.config import Settings
    from xds.repository import service

    repository = service.build(Settings(data_dir=tmp_path, repository_unique_id=REPOSITORY), registry=object())
    monkeypatch.setattr(RemoveDocuments, "remove", lambda self, body: 1 / 0)
    handler = Dispatcher({"DocumentRepository": repository}).handler(ITI_86)
    request = SoapRequest(action=ITI_86.action, message_id="urn:uuid:86", header=None,
                          body=remove_documents_request(["1.2.3"], REPOSITORY))
    answer, errors = read_registry_response(handler(request).body)
    assert answer == ns.FAILURE and [e.code for e in errors] == [RULES["remove-documents.internal"].code]
    assert "urn:uuid:86" in errors[0].context


def test_the_audit_record_names_the_documents_removed(store):
    """Patient Record (110110), Delete, ITI-86; the patient and each document by uniqueId with
    its repositoryUniqueId (RMD 3.86.5.1.2)."""
    documents = store_documents(store, 2)
    result = remove(store, *documents)
    ctx = events.TransactionContext(
        action=ITI_86.action, endpoint_url="http://repository.example/repository", outcome=result.status,
        patient_id=s.PATIENT, documents=[events.DocumentRef(d.unique_id, d.repository_unique_id)
                                         for d in result.documents])
    message = etree.fromstring(events.build("ITI-86", "DocumentRepository", ctx, events.AuditSource("node")))
    event = message.find("EventIdentification")
    assert (event.get("EventActionCode"), event.find("EventID").get("csd-code"),
            event.find("EventTypeCode").get("csd-code")) == ("D", "110110", "ITI-86")
    objects = message.findall("ParticipantObjectIdentification")
    assert [o.get("ParticipantObjectID") for o in objects] == [s.PATIENT, *documents]
    assert all(o.find("ParticipantObjectIDTypeCode").get("csd-code") == "9" for o in objects[1:])
    details = [o.find("ParticipantObjectDetail") for o in objects[1:]]
    assert {d.get("type") for d in details} == {"Repository Unique Id"}
    schema_path = CONFORMANCE / "schemas" / "audit" / "dicom2017c.xsd"
    if schema_path.is_file():
        schema = etree.XMLSchema(etree.parse(str(schema_path)))
        assert schema.validate(message), schema.error_log


# --- the schema -------------------------------------------------------------------------------------


@pytest.mark.skipif(not PUBLIC_RMD.is_file(), reason=f"the public rmd.xsd is not at {PUBLIC_RMD}")
def test_our_schema_takes_several_document_requests_nists_one():
    """NIST's copy of rmd.xsd allows one DocumentRequest; IHE's schema, the peers' WSDLs and ours
    several: one is valid by both, two by ours only."""
    ours, theirs = (etree.XMLSchema(etree.parse(str(path))) for path in (OUR_RMD, PUBLIC_RMD))
    one = remove_documents_request(["1.2.3.4"], REPOSITORY, "urn:oid:1.2.3")
    two = remove_documents_request(["1.2.3.4", "1.2.3.5"], REPOSITORY)
    assert ours.validate(one) and theirs.validate(one)
    assert ours.validate(two) and not theirs.validate(two)
    assert not ours.validate(remove_documents_request([], REPOSITORY))


# --- over HTTP ------------------------------------------------------------------------------------------


class AuditListener:
    """A UDP syslog receiver (RFC 5426) the server audits to."""

    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.address = "udp://127.0.0.1:%d" % self.socket.getsockname()[1]
        self.received: list[bytes] = []

    def wait_for(self, *words: bytes, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.received:
                if all(word in message for word in words):
                    return message
            if time.monotonic() > deadline:
                raise AssertionError(f"no audit record with {words} in {len(self.received)} received")
            try:
                self.received.append(self.socket.recv(65536))
            except TimeoutError:
                pass


@pytest.fixture(scope="module")
def audit():
    listener = AuditListener()
    yield listener
    listener.socket.close()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request, tmp_path_factory, audit):
    running = start_server(request.param, tmp_path_factory.mktemp(f"rmd-{request.param}"),
                           extra_env={"XDS_AUDIT_DESTINATIONS": audit.address})
    yield running
    stop_server(running)


def provide(server: RunningServer, count: int = 1) -> dict[str, bytes]:
    """Documents through ITI-41: uniqueId -> content."""
    contents = [f"REMOVE-ME-{s.new_oid()}-".encode() + os.urandom(200) for _ in range(count)]
    request, ids = pnr_request([(f"Document{n:02d}", data, "text/plain") for n, data in enumerate(contents, 1)])
    status_code, response = soap_pnr(server, request, [(f"doc{n}@test", "text/plain", data)
                                                       for n, data in enumerate(contents, 1)])
    assert status_code == 200 and status_of(response.body) == "Success", etree.tostring(response.body)
    return {ids[f"Document{n:02d}"]: data for n, data in enumerate(contents, 1)}


def test_zeep_removes_documents_over_http(server: RunningServer, audit):
    import requests
    import zeep

    documents = provide(server, 2)
    first, second = documents
    session = requests.Session()
    session.trust_env = False
    client = zeep.Client(server.base + "/repository?wsdl", transport=zeep.Transport(session=session))
    proxy = client.create_service("{urn:ihe:iti:xds-b:2007}DocumentRepository_Binding_Soap12",
                                  server.base + "/repository")
    answer = proxy.DocumentRepository_RemoveDocuments(DocumentRequest=[
        {"RepositoryUniqueId": server.repository_unique_id, "DocumentUniqueId": first},
        {"RepositoryUniqueId": server.repository_unique_id, "DocumentUniqueId": "1.2.3.404"}])
    assert answer.status == ns.PARTIAL_SUCCESS
    assert [(e.errorCode, e.location) for e in answer.RegistryErrorList.RegistryError] == [
        ("XDSDocumentUniqueIdError", "1.2.3.404")]
    # gone: not retrievable, not on disk; the other document is untouched
    _, response = soap_retrieve(server, [(server.repository_unique_id, first)])
    registry_response = response.body.find(f"{{{RS}}}RegistryResponse")
    assert status_of(registry_response) == "Failure" and codes_of(registry_response) == ["XDSDocumentUniqueIdError"]
    assert server.stored(first) is None and on_disk(server.data_dir / "documents", documents[first]) == []
    assert server.stored(second) is not None
    # audited as ITI-86 (Patient Record, Delete), naming the document and its patient
    record = audit.wait_for(b'csd-code="ITI-86"', first.encode())
    assert b'EventActionCode="D"' in record and s.PATIENT.encode().replace(b"&", b"&amp;") in record


@needs_nist
def test_nist_50000_and_50002(server: RunningServer):
    """The toolkit's requests: 50002 names another repository (Failure, the document stays),
    50000 this one (Success, then its retrieve fails)."""
    documents = provide(server)
    (unique_id,) = documents

    def send(file: Path):
        body = substitute(etree.parse(str(file)).getroot(),
                          {"$repuid$": server.repository_unique_id, "$docuid1$": unique_id})
        envelope = build_envelope(body, ITI_86.action, to=server.base + "/repository")
        code, content_type, answer = post(server.base + "/repository", envelope,
                                          f'application/soap+xml; charset=UTF-8; action="{ITI_86.action}"')
        assert code == 200
        return parse_response(content_type, answer)

    wrong = send(NIST / "50002" / "delete" / "query.xml")
    assert wrong.action == "urn:ihe:iti:2017:RemoveDocumentsResponse"
    assert status_of(wrong.body) == "Failure" and codes_of(wrong.body) == ["XDSUnknownRepositoryId"]
    _, response = soap_retrieve(server, [(server.repository_unique_id, unique_id)])
    assert status_of(response.body.find(f"{{{RS}}}RegistryResponse")) == "Success"

    right = send(NIST / "50000" / "delete" / "query.xml")
    assert status_of(right.body) == "Success" and codes_of(right.body) == []
    _, response = soap_retrieve(server, [(server.repository_unique_id, unique_id)])
    assert status_of(response.body.find(f"{{{RS}}}RegistryResponse")) == "Failure"


def test_the_documents_remove_command(server: RunningServer, audit):
    documents = provide(server, 2)
    remote, local = documents
    url = server.base + "/repository"
    done = subprocess.run([*XDS, "documents", "remove", remote, "1.2.3.404", "--url", url], env=server.env,
                          capture_output=True, text=True)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "status: PartialSuccess" in done.stdout and "XDSDocumentUniqueIdError" in done.stdout
    assert f"{remote}  removed" in done.stdout and "1.2.3.404  removed" not in done.stdout
    # in process, on the server's documents folder (its settings: the same data_dir)
    here = subprocess.run([*XDS, "documents", "remove", local], env=server.env, capture_output=True, text=True)
    assert here.returncode == 0, here.stdout + here.stderr
    assert "status: Success" in here.stdout
    # audited in process too: the record waits in the spool, and the server's sender delivers it
    audit.wait_for(b'csd-code="ITI-86"', local.encode(), f'NetworkAccessPointID="{socket.gethostname()}"'.encode())
    assert all(on_disk(server.data_dir / "documents", content) == [] for content in documents.values())
    # the registry still has their metadata: verify says their files are missing (ITI-62 removes it)
    verify = subprocess.run([*XDS, "documents", "verify"], env=server.env, capture_output=True, text=True)
    assert verify.returncode == 1 and f"MISSING  {remote}" in verify.stdout and f"MISSING  {local}" in verify.stdout
    unreachable = subprocess.run([*XDS, "documents", "remove", "1.2.3", "--url", "http://127.0.0.1:9/repository"],
                                 env=server.env, capture_output=True, text=True)
    assert unreachable.returncode == 2 and "xds documents remove:" in unreachable.stderr


def test_a_document_removed_from_the_repository_and_its_metadata_from_the_registry(server: RunningServer):
    """The Document Administrator's whole removal, as RMD has it: ITI-62 for the metadata (at
    /registry) and ITI-86 for the document (at /repository); `xds documents verify` is then clean
    for it."""
    from sqlalchemy import select

    from xds.store import db
    from xds.store.tables import AssociationRow, DocumentEntryRow

    documents = provide(server)
    (unique_id,) = documents
    with db.make_sessionmaker(server.engine)() as session:
        entry = session.scalars(select(DocumentEntryRow).where(DocumentEntryRow.unique_id == unique_id)).one()
        member = session.scalars(select(AssociationRow).where(AssociationRow.target == entry.entry_uuid)).one()
    ids = [entry.entry_uuid, member.entry_uuid, member.source]
    metadata = subprocess.run([*XDS, "delete", *ids, "--url", server.base + "/registry"], env=server.env,
                              capture_output=True, text=True)
    assert metadata.returncode == 0, metadata.stdout + metadata.stderr
    document = subprocess.run([*XDS, "documents", "remove", unique_id, "--url", server.base + "/repository"],
                              env=server.env, capture_output=True, text=True)
    assert document.returncode == 0, document.stdout + document.stderr
    verify = subprocess.run([*XDS, "documents", "verify"], env=server.env, capture_output=True, text=True)
    assert unique_id not in verify.stdout
    assert server.entry(unique_id) is None and server.stored(unique_id) is None
