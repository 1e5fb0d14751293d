"""Writing the model as ebRIM (xds.ebrim.write), the inverse of xds.ebrim.submission.

`rich_submission()` fills every field of every model class (a test checks that it does, so a
field added to the model must be added here too), with several documents, a folder and every
association type. Reading back what the writer wrote must give that submission whole: a
writer that forgets a field fails `test_read_back_gives_the_same_submission`, and
`test_every_table_entry_is_exercised` shows that each entry of the shared tables matters to
that test. Then: validity against the project's schemas (schemas/) and the public OASIS/IHE
ones, the layout ITI TF-3 4.2.3 asks for, ITI-41 requests, and the writer's users (the
command-line client, tests/submissions.py, bench/corpus.py).
"""

from __future__ import annotations

import base64
import dataclasses
import uuid
from pathlib import Path

import pytest
from lxml import etree

from bench import corpus
from tests import metadata_factory as factory
from tests import submissions as s
from tests.data import CONFORMANCE
from tests.test_ebrim_submission import NIST, minimal_request, sample
from xds.ebrim import ns, write
from xds.ebrim.submission import (
    ASSOCIATION_LAYOUT,
    DOCUMENT_ENTRY,
    FOLDER,
    SUBMISSION_SET,
    ObjectLayout,
    read_submission,
)
from xds.ebrim.write import (
    add_document,
    part_id,
    write_provide_and_register,
    write_registry_object,
    write_submission,
)
from xds.model import (
    Association,
    AssociationType,
    Author,
    AvailabilityStatus,
    Code,
    DocumentEntry,
    Folder,
    Slot,
    Submission,
    SubmissionSet,
)
from xds.registry.validate import validate
from xds.repository import client
from xds.soap import xop_include

ROOT = Path(__file__).resolve().parent.parent
XS = "http://www.w3.org/2001/XMLSchema"
XDSB = ns.XDSB
PARSER = etree.XMLParser(resolve_entities=False, no_network=True)
APPROVED = AvailabilityStatus.APPROVED.value
HOME = "urn:oid:1.2.392.200119.6.102"
ORIGINAL_UUID = "urn:uuid:0f3a1c52-6a5e-4f43-9a44-4d0f1f4c2a11"


# --- a submission with everything ---------------------------------------------------------


def full_author(name: str) -> Author:
    return Author(person=f"^{name}^Hanako^^^Dr",
                  institutions=["Kagawa Central Hospital^^^^^&1.2.392.200119.6.102.11&ISO^^^^1", "Sanuki Clinic"],
                  roles=["Attending", "Referring"], specialties=["Cardiology"],
                  telecoms=[f"^^Internet^{name.lower()}@kagawa.example"])


def rich_submission(uuids: bool = False) -> Submission:
    """A SubmissionSet, two stable DocumentEntries and an On-Demand one, a Folder holding them,
    and one association of every type, every optional attribute set."""
    sub = factory.make_submission(documents=2, folder=True, on_demand=1, uuids=uuids)
    ss = sub.submission_set
    ss.comments = "Referral to the cardiology department & <its> clinic"
    ss.home_community_id = HOME
    ss.status = APPROVED
    ss.authors.append(full_author("Sanuki"))
    ss.intended_recipients.append("|^Peirre^LaPointe^^^Dr^MD")
    ss.extra_slots = [Slot("urn:kagawa:batch", ["7"]), Slot("urn:kagawa:empty", [])]
    for n, doc in enumerate(sub.documents, 1):
        doc.logical_id = f"urn:uuid:1e0a7d8c-1ea6-4c32-9b2a-6b0f7c7b8f0{n}"
        doc.version = str(n)
        doc.status = APPROVED
        doc.home_community_id = HOME
        doc.comments = f"Document {n}"
        doc.uri = f"http://kagawa.example/documents/{n}.xml"
        doc.authors.append(full_author("Marugame"))
        doc.confidentiality_codes.append(Code("R", "2.16.840.1.113883.5.25", "restricted"))
        doc.event_codes.append(Code("ANNGEN", "1.2.840.10008.2.16.4", "Angiography"))
        doc.reference_ids.append("A-1^^^&1.2.4&ISO^urn:ihe:iti:xds:2015:encounterId")
        doc.extra_slots = [Slot("urn:kagawa:consent", ["opt-in", "facility-42"])]
    (fol,) = sub.folders
    fol.last_update_time = "20241102091700"
    fol.logical_id = "urn:uuid:1e0a7d8c-1ea6-4c32-9b2a-6b0f7c7b8f10"  # a Folder's versions (ITI-57)
    fol.version = "2"
    fol.comments = "Referrals of 2024"
    fol.home_community_id = HOME
    fol.status = APPROVED
    fol.codes.append(Code("394579002", factory.SNOMED, "Cardiology"))
    fol.extra_slots = [Slot("urn:kagawa:episode", ["E-1"])]
    first = sub.documents[0].id
    for kind in AssociationType:
        if kind is not AssociationType.HAS_MEMBER:
            sub.associations.append(factory.association(kind.value, first, ORIGINAL_UUID,
                                                        assoc_id=_id(uuids, kind.short_name)))
    for association in sub.associations:
        association.status = APPROVED
    signs = next(a for a in sub.associations if a.type == AssociationType.SIGNS.value)
    signs.extra_slots = [Slot("PreviousVersion", ["1"]), Slot("urn:example:reason", ["typo", "again"])]
    return sub


def _id(uuids: bool, symbolic: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, symbolic)}" if uuids else symbolic


def _filled(value) -> bool:
    return value is not None and value != "" and value != []


def _instances(sub: Submission) -> dict[type, list]:
    objects = list(sub.objects())
    authors = [a for o in objects for a in getattr(o, "authors", [])]
    codes = [c for o in objects for name in ("class_code", "type_code", "format_code", "healthcare_facility_type_code",
                                              "practice_setting_code", "content_type_code")
             if (c := getattr(o, name, None)) is not None]
    codes += [c for o in objects for name in ("confidentiality_codes", "event_codes", "codes")
              for c in getattr(o, name, [])]
    return {
        DocumentEntry: sub.documents, SubmissionSet: [sub.submission_set], Folder: sub.folders,
        Association: sub.associations, Author: authors, Code: codes,
        Slot: [slot for o in objects for slot in o.extra_slots],
    }


def test_the_rich_submission_fills_every_field():
    """If this fails, the model has a field the rich submission leaves empty: fill it, and the
    round trip below checks that the writer writes it."""
    sub = rich_submission()
    for cls, objects in _instances(sub).items():
        for f in dataclasses.fields(cls):
            assert any(_filled(getattr(o, f.name)) for o in objects), f"no {cls.__name__}.{f.name} in rich_submission"
    assert {a.type for a in sub.associations} == {t.value for t in AssociationType}


# --- reading back -------------------------------------------------------------------------


@pytest.mark.parametrize("uuids", [False, True], ids=["symbolic ids", "urn:uuid ids"])
def test_read_back_gives_the_same_submission(uuids):
    sub = rich_submission(uuids)
    parsed = read_submission(write_submission(sub))
    assert [str(e) for e in parsed.errors] == []
    assert parsed.submission == sub
    signs = next(a for a in sub.associations if a.type == AssociationType.SIGNS.value)
    assert parsed.extra == {  # extra metadata, ITI TF-3 4.1.14 (PreviousVersion is XDS's own)
        sub.submission_set.id: ["urn:kagawa:batch", "urn:kagawa:empty"],
        **{doc.id: ["urn:kagawa:consent"] for doc in sub.documents},
        sub.folders[0].id: ["urn:kagawa:episode"],
        signs.id: ["urn:example:reason"],
    }


LAYOUTS = {"DocumentEntry": DOCUMENT_ENTRY, "SubmissionSet": SUBMISSION_SET, "Folder": FOLDER,
           "Association": ASSOCIATION_LAYOUT}
TABLES = ("attributes", "slots", "codes", "identifiers")


def _table_entries():
    for what, layout in LAYOUTS.items():
        for table in TABLES:
            for key in getattr(layout, table):
                yield pytest.param(what, table, key, id=f"{what}.{table}[{key}]")


@pytest.mark.parametrize("what, table, key", list(_table_entries()))
def test_every_table_entry_is_exercised(monkeypatch, what, table, key):
    """A writer that leaves out any one entry of the tables no longer gives the rich submission
    back: the round trip test sees every one of them."""
    layout: ObjectLayout = LAYOUTS[what]
    smaller = dataclasses.replace(layout, **{table: {k: v for k, v in getattr(layout, table).items() if k != key}})
    cls = next(c for c, known in write.LAYOUTS.items() if known is layout)
    monkeypatch.setitem(write.LAYOUTS, cls, smaller)
    sub = rich_submission()
    assert read_submission(write_submission(sub)).submission != sub


@pytest.mark.parametrize("cls, layout", [(DocumentEntry, DOCUMENT_ENTRY), (SubmissionSet, SUBMISSION_SET),
                                         (Folder, FOLDER), (Association, ASSOCIATION_LAYOUT)])
def test_every_model_field_has_a_place_in_the_layout(cls, layout):
    """Fields are carried by the tables, or by ebRIM's own parts (id, Name, Description,
    VersionInfo, the author classifications, extra slots)."""
    placed = {"id", "title", "comments", "version", "authors", "extra_slots"}
    for table in TABLES:
        placed |= {entry.field for entry in getattr(layout, table).values()}
    assert {f.name for f in dataclasses.fields(cls)} <= placed


def test_hand_written_minimal_request_reads_back_the_same():
    original = read_submission(minimal_request()).submission
    again = read_submission(write_submission(original))
    assert again.errors == [] and again.submission == original


@pytest.mark.parametrize("relative", [
    "iti-42/ipf/SubmitObjectsRequest_ebrs30.xml",
    f"{NIST}/PnrXop/Xop/body.txt",
    f"{NIST}/ReposAcceptanceTest-1111/SubmitRplc/single_doc.xml",
    f"{NIST}/ReposAcceptanceTest-1113/SubmitTwoDocs/two_doc.xml",
    f"{NIST}/ReposAcceptanceTest-1113/SubmitFolderwDoc/fol_doc.xml",
])
def test_public_samples_read_back_the_same(relative):
    """What the model keeps of real senders' requests survives writing."""
    original = read_submission(sample(relative))
    assert original.errors == []
    again = read_submission(write_submission(original.submission))
    assert again.errors == [] and again.submission == original.submission
    assert again.extra == original.extra


def test_nothing_is_written_for_what_is_not_there():
    """None and empty lists leave their part out; missing required XML attributes read back
    as '' for the validator, as from any sender."""
    entry = write_registry_object(DocumentEntry(id="Document01", object_type=""))
    assert dict(entry.attrib) == {"id": "Document01"} and len(entry) == 0
    bare = Association(id="a", type="", source="", target="")
    element = write_registry_object(bare)
    assert dict(element.attrib) == {"id": "a"} and len(element) == 0
    request = write_submission(Submission(documents=[DocumentEntry(id="Document01")], associations=[bare]))
    parsed = read_submission(request)
    assert parsed.submission.documents == [DocumentEntry(id="Document01")]
    assert parsed.submission.associations == [bare]


def test_values_are_written_as_given():
    """Judging values is the validator's job: a bad one is written, and reads back, as it is."""
    entry = factory.make_document()
    entry.hash, entry.size, entry.title = "xyz", "-1", 'a "quoted" <title> & more'
    parsed = read_submission(write_submission(Submission(documents=[entry])))
    assert parsed.submission.documents == [entry]


# --- the schemas --------------------------------------------------------------------------


SCHEMA_FILES = {ns.LCM: "lcm.xsd", ns.QUERY: "query.xsd", ns.RS: "rs.xsd", XDSB: "XDS.b_DocumentRepository.xsd"}


def _schema(folder: Path) -> etree.XMLSchema:
    """One XMLSchema for the message namespaces of the XSD files in `folder` (as
    tests/test_wsdl_schemas.py builds it)."""
    imports = "".join(f'<xs:import namespace="{namespace}" schemaLocation="{(folder / name).as_uri()}"/>'
                      for namespace, name in SCHEMA_FILES.items())
    return etree.XMLSchema(etree.fromstring(f'<xs:schema xmlns:xs="{XS}">{imports}</xs:schema>', PARSER))


@pytest.fixture(scope="module", params=["ours", "public"])
def schema(request) -> etree.XMLSchema:
    if request.param == "ours":
        return _schema(ROOT / "schemas")
    folder = CONFORMANCE / "schemas" / "xds-b"
    if not folder.is_dir():
        pytest.skip(f"the public schemas are not at {folder} (see DESIGN.md, 'Test material')")
    return _schema(folder)


def _assert_valid(schema: etree.XMLSchema, element: etree._Element) -> None:
    alone = etree.fromstring(etree.tostring(element), PARSER)
    assert schema.validate(alone), schema.error_log.filter_from_errors()[0]


@pytest.mark.parametrize("uuids", [False, True], ids=["symbolic ids", "urn:uuid ids"])
def test_written_request_is_valid(schema, uuids):
    _assert_valid(schema, write_submission(rich_submission(uuids)))


def test_each_object_alone_is_valid(schema):
    """The registry stores each object's element on its own."""
    for obj in rich_submission().objects():
        _assert_valid(schema, write_registry_object(obj))


def test_provide_and_register_with_inline_documents_is_valid(schema):
    sub = rich_submission()
    request = write_provide_and_register(sub, {doc.id: f"document {doc.id}".encode() for doc in sub.documents})
    _assert_valid(schema, request)


# --- the layout (ITI TF-3 4.2.3) ----------------------------------------------------------


def _children(element: etree._Element, tag: str) -> list[etree._Element]:
    return [c for c in element if c.tag == ns.rim(tag)]


def test_external_identifiers_carry_their_names():
    request = write_submission(rich_submission())
    names = {(e.get("identificationScheme"), e.find(f"{ns.rim('Name')}/{ns.rim('LocalizedString')}").get("value"))
             for e in request.iter(ns.rim("ExternalIdentifier"))}
    assert names == {
        (ns.DE_UNIQUE_ID, "XDSDocumentEntry.uniqueId"), (ns.DE_PATIENT_ID, "XDSDocumentEntry.patientId"),
        (ns.SS_UNIQUE_ID, "XDSSubmissionSet.uniqueId"), (ns.SS_SOURCE_ID, "XDSSubmissionSet.sourceId"),
        (ns.SS_PATIENT_ID, "XDSSubmissionSet.patientId"),
        (ns.FOL_UNIQUE_ID, "XDSFolder.uniqueId"), (ns.FOL_PATIENT_ID, "XDSFolder.patientId"),
    }


def test_packages_hold_their_node_classification():
    """The SubmissionSet / Folder classificationNode sits inside its RegistryPackage, where the
    registry stores it; nothing but registry objects stands in the RegistryObjectList."""
    sub = rich_submission()
    request = write_submission(sub)
    (object_list,) = request
    assert [c.tag for c in object_list] == (
        [ns.rim("RegistryPackage")] + [ns.rim("ExtrinsicObject")] * 3 + [ns.rim("RegistryPackage")]
        + [ns.rim("Association")] * len(sub.associations))
    for package, node in ((object_list[0], ns.SUBMISSION_SET_NODE), (object_list[4], ns.FOLDER_NODE)):
        (classification,) = [c for c in _children(package, "Classification") if c.get("classificationNode")]
        assert classification.get("classificationNode") == node
        assert classification.get("classifiedObject") == package.get("id")


def test_authors_and_codes():
    entry = write_registry_object(rich_submission().documents[0])
    author, second = [c for c in _children(entry, "Classification") if c.get("classificationScheme") == ns.DE_AUTHOR]
    assert author.get("nodeRepresentation") == "" and author.get("classifiedObject") == "Document01"
    assert [slot.get("name") for slot in _children(second, "Slot")] == [
        "authorPerson", "authorInstitution", "authorRole", "authorSpecialty", "authorTelecommunication"]
    (class_code,) = [c for c in _children(entry, "Classification")
                     if c.get("classificationScheme") == ns.DE_CLASS_CODE]
    assert class_code.get("nodeRepresentation") == factory.CLASS_CODE[0]
    (coding_scheme,) = _children(class_code, "Slot")
    assert coding_scheme.get("name") == "codingScheme"
    assert coding_scheme.findtext(f"{ns.rim('ValueList')}/{ns.rim('Value')}") == factory.CLASS_CODE[1]


def test_part_ids():
    """Symbolic objects: <object id>-<attribute>, numbered from the second; urn:uuid objects:
    UUIDs, the same on every call, all different."""
    entry = write_registry_object(rich_submission().documents[0])
    ids = [part.get("id") for part in entry if part.get("id")]
    assert "Document01-classCode" in ids and "Document01-author-2" in ids
    assert "Document01-confidentialityCode" in ids and "Document01-confidentialityCode-2" in ids
    assert len(ids) == len(set(ids))
    first = write_registry_object(rich_submission(uuids=True).documents[0])
    uuid_ids = [part.get("id") for part in first if part.get("id")]
    assert all(i.startswith("urn:uuid:") and len(i) == 45 for i in uuid_ids) and len(set(uuid_ids)) == len(uuid_ids)
    assert part_id(first.get("id"), "classCode") in uuid_ids
    assert part_id(first.get("id"), "classCode") == part_id(first.get("id"), "classCode")


# --- ITI-41 -------------------------------------------------------------------------------


def test_provide_and_register_inline_and_xop():
    sub = factory.make_submission(documents=2)
    request = write_provide_and_register(sub, [("Document01", b"\x00referral\xff")])
    add_document(request, "Document02", xop_include("doc2@test"))
    assert request.tag == f"{{{XDSB}}}ProvideAndRegisterDocumentSetRequest"
    submit, inline, attached = request
    assert read_submission(submit).submission == sub
    assert (inline.tag, inline.get("id")) == (f"{{{XDSB}}}Document", "Document01")
    assert base64.b64decode(inline.text) == b"\x00referral\xff"
    assert attached.get("id") == "Document02" and attached.text is None
    (include,) = attached
    assert include.tag == "{http://www.w3.org/2004/08/xop/include}Include"
    assert include.get("href") == "cid:doc2@test"


# --- the writer's users -------------------------------------------------------------------


def test_client_submission(tmp_path):
    """`xds submit`'s request (xds.repository.client): a SubmissionSet, a stable DocumentEntry per
    file with the codes asked for, HasMembers; valid ebRIM."""
    letter, note = tmp_path / "referral.pdf", tmp_path / "note.txt"
    letter.write_bytes(b"%PDF-1.7")
    note.write_text("note")
    metadata = client.Metadata(patient_id=s.PATIENT, author="^Takamatsu^Hanako^^^Dr",
                               class_code=client.parse_code("11488-4^2.16.840.1.113883.6.1^Consult note"),
                               confidentiality_codes=[client.parse_code("R^2.16.840.1.113883.5.25")])
    request, documents = client.submission([letter, note], metadata)
    _assert_valid(_schema(ROOT / "schemas"), request)
    parsed = read_submission(request[0])
    assert parsed.errors == []
    sub = parsed.submission
    assert [d.entry_id for d in documents] == [d.id for d in sub.documents] == ["Document01", "Document02"]
    assert [d.mime_type for d in sub.documents] == ["application/pdf", "text/plain"]
    assert [d.unique_id for d in sub.documents] == [d.unique_id for d in documents]
    for entry in sub.documents:
        assert entry.patient_id == sub.submission_set.patient_id == s.PATIENT
        assert entry.class_code == Code("11488-4", "2.16.840.1.113883.6.1", "Consult note")
        assert entry.confidentiality_codes == [Code("R", "2.16.840.1.113883.5.25", "R")]
        assert entry.authors == [Author(person="^Takamatsu^Hanako^^^Dr")]
    assert sub.submission_set.content_type_code == sub.documents[0].class_code
    assert [(a.source, a.target, a.submission_set_status) for a in sub.associations] == [
        ("SubmissionSet01", "Document01", "Original"), ("SubmissionSet01", "Document02", "Original")]
    # hash, size and repositoryUniqueId are the repository's to add (ITI TF-3 Table 4.3.1-3)


def test_client_parse_code():
    assert client.parse_code("N^2.16.840.1.113883.5.25^Normal") == Code("N", "2.16.840.1.113883.5.25", "Normal")
    assert client.parse_code("a^b^c^d") == Code("a", "b", "c^d")
    with pytest.raises(ValueError, match="code\\^scheme\\^display"):
        client.parse_code("N")


def test_test_submissions_are_valid():
    """tests/submissions.py's default request, as the registry tests send it."""
    xml, uids = s.submission(extra=(s.folder("F", s.new_oid()), s.association("a2", "HasMember", "SubmissionSet01", "F")))
    parsed = read_submission(s.element(xml))
    assert parsed.errors == []
    assert parsed.submission.documents[0].unique_id == uids["document"]
    assert [e for e in validate(parsed.submission) if e.is_error] == []
    _assert_valid(_schema(ROOT / "schemas"), s.element(xml))


@pytest.mark.parametrize("p", [0, 1, 4242, corpus.PATIENTS - 1])
def test_bench_corpus_submissions(p):
    """bench/corpus.py fills text templates the writer wrote: the submissions read back as the
    patient's metadata says, valid."""
    pat = corpus.patient(p)
    schema = _schema(ROOT / "schemas")
    for number, xml in enumerate(corpus.submissions(p), 1):
        request = etree.fromstring(xml.encode())
        _assert_valid(schema, request)
        parsed = read_submission(request)
        assert parsed.errors == []
        sub = parsed.submission
        assert [e for e in validate(sub) if e.is_error] == []
        docs = [doc for doc in pat.docs if corpus.SUBMISSION_OF[doc.d] == number]
        assert sub.submission_set.unique_id == corpus.submission_unique_id(p, number)
        assert [d.unique_id for d in sub.documents] == [doc.unique_id for doc in docs]
        for entry, doc in zip(sub.documents, docs):
            assert entry.patient_id == corpus.patient_id(p)
            assert entry.class_code == Code(*doc.class_code[:3])
            assert entry.event_codes == [Code(*code[:3]) for code in doc.events]
            assert entry.confidentiality_codes == [Code(*code[:3]) for code in doc.confidentiality]
            assert [a.person for a in entry.authors] == [author[0] for author in doc.authors]
            assert entry.legal_authenticator == doc.legal_authenticator
            assert (entry.creation_time, entry.hash, entry.size) == (doc.creation_time, doc.hash, str(doc.size))
            assert entry.source_patient_info[1] == f"PID-5|{pat.family}^{pat.given}^^^"


def test_bench_register_template():
    filled = corpus.fill(corpus.register_template(), 7, n="99")
    sub = read_submission(etree.fromstring(filled.encode())).submission
    assert sub.submission_set.patient_id == corpus.register_patient_id(7) == sub.documents[0].patient_id
    assert sub.documents[0].unique_id == f"{corpus.NEW_UID_ROOT}.2.99"
    assert sub.submission_set.unique_id == f"{corpus.NEW_UID_ROOT}.1.99"
