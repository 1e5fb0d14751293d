"""The compact registry (migration 0008, issue 14): integer object ids, the code dictionary,
compressed XML. A registry taken back to the layout of 0007 and forward again answers every
stored query exactly as before; the XML is stored compressed; object ids only grow; codes
another transaction added but rolled back are never served from the cache."""

from __future__ import annotations

import pytest
from lxml import etree
from sqlalchemy import func, select, text

from tests import submissions as s
from tests.queries import APPROVED, DEPRECATED, ask, find_documents, quote, quote_list, register
from xds.ebrim import ns
from xds.registry import service
from xds.registry.register import DocumentRegistry
from xds.store import db, patients, stored_xml
from xds.store import registry as store
from xds.store.tables import CodeRow, DocumentEntryRow

ORDER = "^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:order"
OTHER_CLASS = ("11488-4", "2.16.840.1.113883.6.1", "Consult note")
BOTH = ("$XDSDocumentEntryStatus", quote_list([APPROVED, DEPRECATED]))


def _fill(registry: DocumentRegistry) -> dict[str, str]:
    first = register(registry, s.document("a", s.new_oid(), authors=("^Sato^Hanako", "^Ito^Ken"),
                                          reference_ids=["R-1" + ORDER]),
                     s.document("b", s.new_oid(), class_code=OTHER_CLASS, events=()),
                     s.folder("f", s.new_oid()))
    second = register(registry, s.document("c", s.new_oid()), s.association("rplc", "RPLC", "c", first["a"]))
    return {"a": first["a"], "b": first["b"], "f": first["f"], "ss1": first["ss"], "c": second["c"],
            "ss2": second["ss"]}


def _answers(stored, ids: dict[str, str]) -> list:
    """Every kind of stored query the side tables and the stored XML take part in, LeafClass."""
    leaf = {"return_type": "LeafClass"}
    asked = [
        find_documents(stored, status=BOTH, **leaf),
        find_documents(stored, ("$XDSDocumentEntryClassCode", quote_list([s.key(OTHER_CLASS)])), status=BOTH, **leaf),
        find_documents(stored, ("$XDSDocumentEntryAuthorPerson", quote_list(["^Ito%"])), status=BOTH, **leaf),
        find_documents(stored, ("$XDSDocumentEntryEventCodeList", quote_list([s.key(s.EVENT)])), status=BOTH, **leaf),
        ask(stored, "FindDocumentsByReferenceId", ("$XDSDocumentEntryPatientId", quote(s.PATIENT)), BOTH,
            ("$XDSDocumentEntryReferenceIdList", quote_list(["R-1" + ORDER])), **leaf),
        ask(stored, "FindSubmissionSets", ("$XDSSubmissionSetPatientId", quote(s.PATIENT)),
            ("$XDSSubmissionSetStatus", quote_list([APPROVED])),
            ("$XDSSubmissionSetContentType", quote_list([s.key(s.CONTENT_TYPE)])), **leaf),
        ask(stored, "FindFolders", ("$XDSFolderPatientId", quote(s.PATIENT)),
            ("$XDSFolderStatus", quote_list([APPROVED])), ("$XDSFolderCodeList", quote_list([s.key(s.FOLDER_CODE)])),
            **leaf),
        ask(stored, "GetSubmissionSetAndContents", ("$XDSSubmissionSetEntryUUID", quote(ids["ss1"])), **leaf),
        ask(stored, "GetFolderAndContents", ("$XDSFolderEntryUUID", quote(ids["f"])), **leaf),
        ask(stored, "GetAssociations", ("$uuid", quote_list([ids["a"], ids["c"]])), **leaf),
    ]
    # Whole objects, in canonical XML; in any order (a stored query's answer has none).
    return [(a.status, sorted(etree.tostring(o, method="c14n") for o in a.element.iter(*KINDS))) for a in asked]


KINDS = [ns.rim(kind) for kind in ("ExtrinsicObject", "RegistryPackage", "Association", "ObjectRef")]


def test_down_to_0007_and_up_again_answers_the_same(database_url):
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    try:
        with db.write_session(engine) as session:
            patients.add(session, [s.PATIENT])
        registry = DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True))
        ids = _fill(registry)
        before = _answers(service.stored_query_for(registry), ids)
        found = [[o for o in objects if o.startswith(b"<rim:ExtrinsicObject")] for _, objects in before]
        assert [len(f) for f in found[:5]] == [3, 1, 1, 2, 1]
        assert ids["b"].encode() in found[1][0] and ids["a"].encode() in found[2][0] + found[4][0]
        engine.dispose()

        db.downgrade(database_url, "0007")
        with engine.connect() as c:  # the layout of 0007: text keys and plain XML
            codes = c.execute(text("SELECT object_uuid, attribute, code FROM object_code")).all()
            assert (ids["b"], "classCode", s.key(OTHER_CLASS)) in codes
            xml = c.execute(text("SELECT xml FROM document_entry WHERE entry_uuid = :e"), {"e": ids["a"]}).scalar()
            assert xml.startswith("<rim:ExtrinsicObject") and ids["a"] in xml
        engine.dispose()

        db.upgrade(database_url)
        assert _answers(service.stored_query_for(registry), ids) == before
        # and it goes on taking submissions, with new ids past the migrated ones
        with db.make_sessionmaker(engine)() as session:
            top = session.scalar(select(func.max(DocumentEntryRow.id)))
        new = register(registry, s.document("d", s.new_oid()))
        with db.make_sessionmaker(engine)() as session:
            assert session.scalar(select(DocumentEntryRow.id).where(DocumentEntryRow.entry_uuid == new["d"])) > top
    finally:
        engine.dispose()


def test_the_xml_is_stored_compressed_and_read_back_whole(registry, engine):
    ids = register(registry, s.document("a", s.new_oid()))
    with engine.connect() as c:
        raw, size = c.execute(text("SELECT xml, xml_size FROM document_entry WHERE entry_uuid = :e"),
                              {"e": ids["a"]}).one()
    raw = bytes(raw)
    assert raw[0] == stored_xml.CURRENT
    text_ = stored_xml.decompress(raw)
    assert size == len(text_.encode()) and ids["a"] in text_
    assert len(raw) < size / 2


def test_stored_xml_round_trips_any_text():
    for value in ("", "<a/>", "<a>髙橋 𠮷田 ｶﾀｶﾅ</a>" * 50, "x" * 100_000):
        assert stored_xml.decompress(stored_xml.compress(value)) == value
        packed = stored_xml.pack(value)  # as register packs it before its transaction
        assert stored_xml.decompress(stored_xml.stored(packed)) == value
        assert stored_xml.utf8_size(packed) == stored_xml.utf8_size(value) == len(value.encode())
    with pytest.raises(ValueError, match="unknown format version"):
        stored_xml.decompress(b"\x09abc")


def test_a_code_added_by_a_transaction_that_rolled_back_is_not_cached(engine):
    sessions = db.make_sessionmaker(engine, write=True)
    key = ("classCode", "never-committed^^^1.2.3")
    with sessions() as session:
        with session.begin():
            first = store.code_ids(session, [key])[key]
            session.rollback()
    with sessions.begin() as session:  # another code takes the place (and perhaps the id) it had
        store.code_ids(session, [("classCode", "other^^^1.2.3")])
    with sessions.begin() as session:
        again = store.code_ids(session, [key])[key]
    with sessions() as session:
        assert session.scalar(select(CodeRow.value).where(CodeRow.id == again)) == key[1]
    assert first is not None
