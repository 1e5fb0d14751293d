"""The repository's protocol logic without a server: ProvideAndRegister (ITI-41) and
RetrieveDocumentSet (ITI-43) over a FileBlobStore in a temporary folder, with the registry
replaced by a function (or the real in-process registry where the test is about it)."""

from __future__ import annotations

import hashlib
import os

import pytest
from lxml import etree

from tests import submissions as s
from tests.test_repository_support import RIM, XDSB, codes_of, pnr_request
from xds.ebrim.response import registry_response
from xds.registry.register import DocumentRegistry
from xds.repository.blobs import FileBlobStore
from xds.ebrim.retrieve import retrieve_document_set_response
from xds.ebrim.slots import set_slot
from xds.ebrim.submission import ParsedSubmission
from xds.model import Submission
from xds.repository.provide import ProvideAndRegister
from xds.repository.registration import LocalRegistry
from xds.repository.retrieve import RetrieveDocumentSet
from xds.rules import RULES, error
from xds.soap import MemoryAttachment, SoapFault
from xds.store import db, patients

REPOSITORY = "1.2.392.200119.6.102.1"


class FakeRegistry:
    def __init__(self, answer=()):
        self.answer = list(answer)
        self.received: list[etree._Element] = []

    def __call__(self, parsed):
        self.received.append(parsed.request)  # the SubmitObjectsRequest a remote registry is sent
        return list(self.answer)


def _content_of(data_by_entry):
    def content_of(element):
        return MemoryAttachment(data_by_entry[element.get("id")])
    return content_of


@pytest.fixture
def blobs(tmp_path):
    return FileBlobStore(tmp_path / "documents")


def _provide(blobs, registry, documents, **kwargs):
    request, ids = pnr_request([(entry_id, data, mime) for entry_id, data, mime in documents], inline=True, **kwargs)
    data = {entry_id: payload for entry_id, payload, _ in documents}
    errors = ProvideAndRegister(REPOSITORY, blobs, registry).provide(request, _content_of(data))
    return errors, ids, request


def test_sets_hash_size_and_repository_then_registers_and_stores(blobs):
    registry = FakeRegistry()
    data = os.urandom(5000)
    errors, ids, _ = _provide(blobs, registry, [("Document01", data, "application/pdf")])
    assert errors == []
    (submit,) = registry.received
    entry = next(submit.iter(f"{{{RIM}}}ExtrinsicObject"))
    slots = {slot.get("name"): slot.findtext(f"{{{RIM}}}ValueList/{{{RIM}}}Value") for slot in entry.iter(f"{{{RIM}}}Slot")}
    assert slots["hash"] == hashlib.sha1(data).hexdigest() and slots["size"] == "5000"
    assert slots["repositoryUniqueId"] == REPOSITORY
    stored = blobs.get(ids["Document01"])
    assert stored.path.read_bytes() == data and stored.mime_type == "application/pdf" and stored.size == 5000


def test_registry_failure_leaves_nothing(blobs):
    refusal = error("patient.unknown", "SubmissionSet01", patient="X")
    errors, ids, _ = _provide(blobs, FakeRegistry([refusal]), [("Document01", b"x", "text/plain")])
    assert errors == [refusal]  # unchanged
    assert blobs.get(ids["Document01"]) is None
    assert list(blobs.incoming.iterdir()) == []


def test_registry_warnings_pass_through_and_the_documents_are_stored(blobs):
    warning = error("registry.busy", reason="x")
    warning.severity = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"
    errors, ids, _ = _provide(blobs, FakeRegistry([warning]), [("Document01", b"x", "text/plain")])
    assert errors == [warning] and blobs.get(ids["Document01"]) is not None


def test_not_a_provide_and_register_request(blobs):
    # "repository.not-provide-and-register"
    provider = ProvideAndRegister(REPOSITORY, blobs, FakeRegistry())
    errors = provider.provide(etree.Element("{urn:x}Other"), _content_of({}))
    assert [e.code for e in errors] == [RULES["repository.not-provide-and-register"].code] == ["XDSRepositoryError"]
    bare = etree.Element(f"{{{XDSB}}}ProvideAndRegisterDocumentSetRequest")
    assert "without lcm:SubmitObjectsRequest" in provider.provide(bare, _content_of({}))[0].context


def test_a_document_twice_and_a_document_without_entry(blobs):
    # "repository.duplicate-document" and "repository.missing-metadata"
    request, ids = pnr_request([("Document01", b"a", "text/plain")], inline=True)
    etree.SubElement(request, f"{{{XDSB}}}Document", id="Document01").text = "YQ=="
    etree.SubElement(request, f"{{{XDSB}}}Document", id="urn:uuid:0f4b7a52-0000-4000-8000-00000000dead").text = "YQ=="
    registry = FakeRegistry()
    errors = ProvideAndRegister(REPOSITORY, blobs, registry).provide(request, lambda e: MemoryAttachment(b"a"))
    assert [(e.code, e.location) for e in errors] == [
        ("XDSRepositoryMetadataError", "Document01"),
        ("XDSMissingDocumentMetadata", "urn:uuid:0f4b7a52-0000-4000-8000-00000000dead")]
    assert registry.received == []


def test_every_problem_of_a_request_at_once(blobs):
    # "repository.missing-document", "repository.hash-mismatch", "repository.size-mismatch",
    # "repository.other-repository", "repository.duplicate-unique-id": collected, not the first only.
    uid = s.new_oid()
    request, ids = pnr_request([("Document01", b"one", "text/plain"), ("Document02", b"two", "text/plain"),
                                ("Document03", b"three", "text/plain")], inline=True, unique_ids=[uid, uid, s.new_oid()],
                               hash="ab" * 20, size="1", repository="1.2.3")
    request.remove(request.findall(f"{{{XDSB}}}Document")[2])
    registry = FakeRegistry()
    errors = ProvideAndRegister(REPOSITORY, blobs, registry).provide(
        request, _content_of({"Document01": b"one", "Document02": b"two"}))
    assert codes_of(registry_response(errors)) == [
        "XDSRepositoryDuplicateUniqueIdInMessage",
        "XDSRepositoryMetadataError", "XDSRepositoryMetadataError", "XDSRepositoryMetadataError",
        "XDSRepositoryMetadataError", "XDSRepositoryMetadataError", "XDSRepositoryMetadataError",
        "XDSMissingDocument"]
    assert "not the SHA-1 of the document received" in errors[1].context
    assert "is not the size of the document received (3 bytes)" in errors[2].context
    assert "is not this repository's (1.2.392.200119.6.102.1)" in errors[3].context
    assert errors[-1].location == "Document03" and registry.received == []


def test_on_demand_entries_need_no_document(blobs):
    request, _ = pnr_request([("Document01", b"a", "text/plain")], inline=True, with_documents=False)
    next(request.iter(f"{{{RIM}}}ExtrinsicObject")).set("objectType", "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248")
    assert ProvideAndRegister(REPOSITORY, blobs, FakeRegistry()).provide(request, _content_of({})) == []


def test_broken_xop_reference_is_the_senders_fault(blobs):
    def content_of(element):
        raise SoapFault("Sender", "xop:Include refers to 'cid:x', which is not a part of the message")

    request, _ = pnr_request([("Document01", b"a", "text/plain")])
    with pytest.raises(SoapFault):
        ProvideAndRegister(REPOSITORY, blobs, FakeRegistry()).provide(request, content_of)


def test_a_store_that_cannot_write(blobs, monkeypatch):
    # "repository.internal": the disk is full, say; the registry is never asked.
    def full(documents):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(blobs, "stage", full)
    registry = FakeRegistry()
    errors, ids, _ = _provide(blobs, registry, [("Document01", b"x", "text/plain")])
    assert [e.code for e in errors] == ["XDSRepositoryError"] and "No space left" in errors[0].context
    assert registry.received == []


def test_a_registry_that_raises_leaves_nothing(blobs):
    def broken(parsed):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        _provide(blobs, broken, [("Document01", b"x", "text/plain")])
    assert list(blobs.incoming.iterdir()) == []


def test_with_the_real_registry_in_process(blobs, engine):
    with db.make_sessionmaker(engine).begin() as session:
        patients.add(session, [s.PATIENT])
    registry = LocalRegistry(DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True)))
    data = b"discharge summary"
    errors, ids, _ = _provide(blobs, registry.register, [("Document01", data, "text/plain")])
    assert errors == []
    assert registry.is_registered(ids["Document01"], hashlib.sha1(data).hexdigest()) is True
    assert registry.is_registered(ids["Document01"], "0" * 40) is False
    # The same document again (same uniqueId, hash and size): the registry accepts it, the
    # store keeps the copy it has.
    request, _ = pnr_request([("Document01", data, "text/plain")], inline=True, unique_ids=[ids["Document01"]])
    assert ProvideAndRegister(REPOSITORY, blobs, registry.register).provide(request, _content_of({"Document01": data})) == []
    assert blobs.get(ids["Document01"]).path.read_bytes() == data
    # Another content under that uniqueId: the registry's XDSNonIdenticalHash, the first copy kept.
    request, _ = pnr_request([("Document01", b"other", "text/plain")], inline=True, unique_ids=[ids["Document01"]])
    errors = ProvideAndRegister(REPOSITORY, blobs, registry.register).provide(request, _content_of({"Document01": b"other"}))
    assert [e.code for e in errors] == ["XDSNonIdenticalHash"]
    assert blobs.get(ids["Document01"]).path.read_bytes() == data


def test_set_slot_replaces_or_adds_after_the_other_slots():
    entry = etree.fromstring(f'<rim:ExtrinsicObject xmlns:rim="{RIM}"><rim:Slot name="a"><rim:ValueList>'
                             f'<rim:Value>1</rim:Value><rim:Value>2</rim:Value></rim:ValueList></rim:Slot>'
                             f'<rim:Name/></rim:ExtrinsicObject>')
    set_slot(entry, "a", "x")
    set_slot(entry, "b", "y")
    assert [(c.get("name"), [v.text for v in c.iter(f"{{{RIM}}}Value")]) for c in entry] == [
        ("a", ["x"]), ("b", ["y"]), (None, [])]


# -- ITI-43 ---------------------------------------------------------------------------------------------


def _request(*items):
    from tests.test_repository_support import retrieve_request

    return retrieve_request(items)


def test_retrieve_outcomes(blobs):
    _, ids, _ = _provide(blobs, FakeRegistry(), [("Document01", b"letter", "text/plain")])
    retrieve = RetrieveDocumentSet(REPOSITORY, blobs)
    found = retrieve.retrieve(_request((REPOSITORY, ids["Document01"], "urn:oid:1.2.3")))
    response = retrieve_document_set_response(found)[0]
    assert response.find("{*}RegistryResponse").get("status").endswith(":Success")
    assert [f.document.unique_id for f in found.content] == [ids["Document01"]]
    assert response.findtext(f".//{{{XDSB}}}HomeCommunityId") == "urn:oid:1.2.3"
    # "retrieve.unknown-document", "retrieve.unknown-repository"
    partial = retrieve.retrieve(_request((REPOSITORY, ids["Document01"]), (REPOSITORY, "9.9"), ("1.2.3", "9.8")))
    assert retrieve_document_set_response(partial)[0].find("{*}RegistryResponse").get("status").endswith(
        ":PartialSuccess")
    assert [(e.code, e.location) for e in partial.errors] == [
        ("XDSDocumentUniqueIdError", "9.9"), ("XDSUnknownRepositoryId", "9.8")]
    none = retrieve.retrieve(_request((REPOSITORY, "9.9")))
    assert retrieve_document_set_response(none)[0].find("{*}RegistryResponse").get("status").endswith(
        ":Failure") and none.content == []


def test_retrieve_of_a_request_without_documents(blobs):
    # "retrieve.not-retrieve-request"
    result = RetrieveDocumentSet(REPOSITORY, blobs).retrieve(_request())
    assert [e.code for e in result.errors] == ["XDSRepositoryError"]
    assert "without DocumentRequest" in result.errors[0].context


def test_retrieve_when_the_store_fails(blobs, monkeypatch):
    # "retrieve.internal"
    def broken(unique_id):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(blobs, "get", broken)
    result = RetrieveDocumentSet(REPOSITORY, blobs).retrieve(_request((REPOSITORY, "1.2")))
    assert [e.code for e in result.errors] == ["XDSRepositoryError"] and "Permission denied" in result.errors[0].context


def test_remote_registry_answers(monkeypatch):
    # "repository.registry-unavailable" and "repository.registry-failed", decided by what comes back
    import urllib.error

    from xds import client
    from xds.repository.registration import RemoteRegistry

    remote = RemoteRegistry("http://registry.invalid/registry")
    submission = ParsedSubmission(Submission(), request=etree.Element("x"))

    def refused(*args, **kwargs):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(client, "post_soap", refused)
    assert [e.code for e in remote.register(submission)] == ["XDSRegistryNotAvailable"]

    def fault(*args, **kwargs):
        raise ValueError("SOAP fault from http://registry.invalid/registry: no")

    monkeypatch.setattr(client, "post_soap", fault)
    assert [e.code for e in remote.register(submission)] == ["XDSRegistryError"]

    monkeypatch.setattr(client, "post_soap", lambda *a, **k: registry_response([]))
    assert remote.register(submission) == []
    assert remote.is_registered("1.2", "ab") is None
