"""GetAll and the Get queries (ITI TF-2 3.18.4.1.2.3.7.4-13) on SQLite and PostgreSQL, and the
rules about a whole answer: XDSResultNotSinglePatient, XDSTooManyResults (ITI TF-2
3.18.4.1.3), the home attribute, and the answer's schema (ebRS 3.0 query.xsd)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree
from sqlalchemy import select

from tests import queries as q
from tests import submissions as s
from tests.queries import ask, quote, quote_list, register
from xds.dispatch import Dispatcher
from xds.registry import service
from xds.registry.query import RegistryStoredQuery
from xds.rules import RULES
from xds.soap import SoapRequest
from xds.store.tables import AssociationRow
from xds.transactions import ITI_18

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"

FORMAT_PDF = ("urn:ihe:iti:xds-sd:pdf:2008", "1.3.6.1.4.1.19376.1.2.3", "XDS-SD PDF")
RESTRICTED = ("R", "2.16.840.1.113883.5.25", "Restricted")


@pytest.fixture
def stored(registry):
    return service.stored_query_for(registry)


def association(session_factory, source: str, target: str) -> str:
    with session_factory() as session:
        return session.scalar(select(AssociationRow.entry_uuid).where(
            AssociationRow.source == source, AssociationRow.target == target))


@pytest.fixture
def folder_submission(registry, session_factory):
    """A SubmissionSet with two documents (one a PDF, restricted) in a new Folder: the shape of
    the NIST toolkit's 12346/two_doc_w_fol. Its ids, and its associations by name."""
    r = register(
        registry,
        s.document("text", s.new_oid()),
        s.document("pdf", s.new_oid(), format_code=FORMAT_PDF, confidentiality=(RESTRICTED,)),
        s.folder("f", s.new_oid()),
        s.association("f-text", "HasMember", "f", "text"),
        s.association("f-pdf", "HasMember", "f", "pdf"),
        s.association("ss-f-text", "HasMember", "ss", "f-text"),
        s.association("ss-f-pdf", "HasMember", "ss", "f-pdf"),
    )
    names = {
        "ss-text": (r["ss"], r["text"]), "ss-pdf": (r["ss"], r["pdf"]), "ss-f": (r["ss"], r["f"]),
        "f-text": (r["f"], r["text"]), "f-pdf": (r["f"], r["pdf"]),
    }
    r.uuids.update({name: association(session_factory, *ends) for name, ends in names.items()})
    r.uuids["ss-f-text"] = association(session_factory, r["ss"], r["f-text"])
    r.uuids["ss-f-pdf"] = association(session_factory, r["ss"], r["f-pdf"])
    return r


def ids(r, *names: str) -> set[str]:
    return {r[n] for n in names}


# --- GetAll (3.18.4.1.2.3.7.4) ---------------------------------------------------------------------


def get_all(stored, *slots, statuses=(q.APPROVED,), return_type="ObjectRef", patient=s.PATIENT):
    status = quote_list(statuses)
    return ask(stored, "GetAll", ("$patientId", quote(patient)), ("$XDSDocumentEntryStatus", status),
               ("$XDSSubmissionSetStatus", status), ("$XDSFolderStatus", status), *slots, return_type=return_type)


def test_get_all(folder_submission, stored):
    r = folder_submission
    answer = get_all(stored, return_type="LeafClass")
    assert answer.status == "Success"
    assert answer.kind("SubmissionSet") == {r["ss"]}
    assert answer.kind("DocumentEntry") == ids(r, "text", "pdf")
    assert answer.kind("Folder") == {r["f"]}
    assert answer.kind("Association") == ids(r, "ss-text", "ss-pdf", "ss-f", "f-text", "f-pdf", "ss-f-text", "ss-f-pdf")
    assert get_all(stored, patient=s.OTHER_PATIENT).ids == []


def test_get_all_filters_documents_and_their_associations(folder_submission, stored):
    r = folder_submission
    answer = get_all(stored, ("$XDSDocumentEntryFormatCode", quote_list([s.key(FORMAT_PDF)])))
    assert set(answer.ids) == ids(r, "ss", "f", "pdf", "ss-pdf", "ss-f", "f-pdf", "ss-f-pdf")
    answer = get_all(stored, ("$XDSDocumentEntryConfidentialityCode", quote_list([s.key(s.CONFIDENTIALITY)])))
    assert set(answer.ids) == ids(r, "ss", "f", "text", "ss-text", "ss-f", "f-text", "ss-f-text")


def test_get_all_statuses(registry, stored):
    first = register(registry, s.document("old", s.new_oid()))
    second = register(registry, s.document("new", s.new_oid()), s.association("rplc", "RPLC", "new", first["old"]))
    approved = get_all(stored)
    assert approved.kind("ObjectRef") >= {first["ss"], second["ss"], second["new"]}
    assert first["old"] not in approved.ids
    both = get_all(stored, statuses=(q.APPROVED, q.DEPRECATED), return_type="LeafClass")
    assert both.kind("DocumentEntry") == {first["old"], second["new"]}
    assert len(both.kind("Association")) == 3  # two HasMembers and the RPLC


# --- GetDocuments, GetFolders (3.18.4.1.2.3.7.5-6) -------------------------------------------------


def test_get_documents_by_uuid_unique_id_or_logical_id(registry, stored):
    r = register(registry, s.document("a", s.new_oid()), s.document("b", s.new_oid()))
    by_uuid = ask(stored, "GetDocuments", ("$XDSDocumentEntryEntryUUID", quote_list([r["a"], r["b"]])),
                  return_type="LeafClass")
    assert by_uuid.kind("DocumentEntry") == ids(r, "a", "b")
    by_uid = ask(stored, "GetDocuments", ("$XDSDocumentEntryUniqueId", quote(r.unique_ids["a"])))
    assert by_uid.ids == [r["a"]]
    by_lid = ask(stored, "GetDocuments", ("$XDSDocumentEntryLogicalID", quote_list([r["b"]])))
    assert by_lid.ids == [r["b"]]
    assert ask(stored, "GetDocuments", ("$XDSDocumentEntryUniqueId", quote("1.2.3.404"))).ids == []
    both = ask(stored, "GetDocuments", ("$XDSDocumentEntryUniqueId", quote("1.2")), ("$XDSDocumentEntryEntryUUID", quote("urn:uuid:x")))
    assert both.codes == ["XDSStoredQueryParamNumber"]


def test_get_documents_whatever_their_status(registry, stored):
    first = register(registry, s.document("old", s.new_oid()))
    register(registry, s.document("new", s.new_oid()), s.association("rplc", "RPLC", "new", first["old"]))
    answer = ask(stored, "GetDocuments", ("$XDSDocumentEntryEntryUUID", quote(first["old"])), return_type="LeafClass")
    assert answer.element_of(first["old"]).get("status") == q.DEPRECATED


def test_get_folders(registry, stored):
    r = register(registry, s.folder("f", s.new_oid()), s.folder("g", s.new_oid()))
    answer = ask(stored, "GetFolders", ("$XDSFolderEntryUUID", quote_list([r["f"], r["g"]])), return_type="LeafClass")
    assert answer.kind("Folder") == ids(r, "f", "g")
    assert ask(stored, "GetFolders", ("$XDSFolderUniqueId", quote(r.unique_ids["g"]))).ids == [r["g"]]
    assert ask(stored, "GetFolders", ("$XDSFolderLogicalID", quote(r["f"]))).ids == [r["f"]]
    assert ask(stored, "GetFolders").codes == ["XDSStoredQueryMissingParam"]


# --- GetAssociations, GetDocumentsAndAssociations (3.18.4.1.2.3.7.7-8) -----------------------------


def test_get_associations(folder_submission, stored):
    r = folder_submission
    from_ss = ask(stored, "GetAssociations", ("$uuid", quote_list([r["ss"]])), return_type="LeafClass")
    assert from_ss.kind("Association") == ids(r, "ss-text", "ss-pdf", "ss-f", "ss-f-text", "ss-f-pdf")
    of_text = ask(stored, "GetAssociations", ("$uuid", quote_list([r["text"]])))
    assert set(of_text.ids) == ids(r, "ss-text", "f-text")
    of_both = ask(stored, "GetAssociations", ("$uuid", quote_list([r["text"], r["f-text"]])))
    assert set(of_both.ids) == ids(r, "ss-text", "f-text", "ss-f-text")


def test_get_documents_and_associations(folder_submission, stored):
    r = folder_submission
    answer = ask(stored, "GetDocumentsAndAssociations", ("$XDSDocumentEntryUniqueId", quote(r.unique_ids["pdf"])),
                 return_type="LeafClass")
    assert answer.kind("DocumentEntry") == {r["pdf"]}
    assert answer.kind("Association") == ids(r, "ss-pdf", "f-pdf")


# --- GetSubmissionSets (3.18.4.1.2.3.7.9) -------------------------------------------------------------


def test_get_submission_sets(registry, folder_submission, stored):
    r = folder_submission
    other = register(registry, s.document("d", s.new_oid()))
    answer = ask(stored, "GetSubmissionSets", ("$uuid", quote_list([r["text"], other["d"]])), return_type="LeafClass")
    assert answer.kind("SubmissionSet") == {r["ss"], other["ss"]}
    assert answer.kind("Association") == {r["ss-text"], association_of(stored, other["ss"], other["d"])}
    folder = ask(stored, "GetSubmissionSets", ("$uuid", quote_list([r["f"]])))
    assert set(folder.ids) == ids(r, "ss", "ss-f")  # not the folder's own HasMembers


def association_of(stored, source: str, target: str) -> str:
    answer = ask(stored, "GetAssociations", ("$uuid", quote_list([source])), return_type="LeafClass")
    for entry_uuid in answer.ids:
        if answer.element_of(entry_uuid).get("targetObject") == target:
            return entry_uuid
    raise KeyError((source, target))


# --- GetSubmissionSetAndContents, GetFolderAndContents (3.18.4.1.2.3.7.10-11) ------------------------


def test_get_submission_set_and_contents(folder_submission, stored):
    r = folder_submission
    answer = ask(stored, "GetSubmissionSetAndContents", ("$XDSSubmissionSetUniqueId", quote(r.unique_ids["ss"])),
                 return_type="LeafClass")
    assert answer.kind("SubmissionSet") == {r["ss"]}
    assert answer.kind("DocumentEntry") == ids(r, "text", "pdf")
    assert answer.kind("Folder") == {r["f"]}
    assert answer.kind("Association") == ids(r, "ss-text", "ss-pdf", "ss-f", "f-text", "f-pdf", "ss-f-text", "ss-f-pdf")
    by_uuid = ask(stored, "GetSubmissionSetAndContents", ("$XDSSubmissionSetEntryUUID", quote(r["ss"])))
    assert set(by_uuid.ids) == set(answer.ids)


def test_get_submission_set_and_contents_filters_documents(folder_submission, stored):
    r = folder_submission
    answer = ask(stored, "GetSubmissionSetAndContents", ("$XDSSubmissionSetEntryUUID", quote(r["ss"])),
                 ("$XDSDocumentEntryFormatCode", quote_list([s.key(s.FORMAT)])))
    # The PDF is left out, and every association that has it at an end, or that holds one.
    assert set(answer.ids) == ids(r, "ss", "text", "f", "ss-text", "ss-f", "f-text", "ss-f-text")
    restricted = ask(stored, "GetSubmissionSetAndContents", ("$XDSSubmissionSetEntryUUID", quote(r["ss"])),
                     ("$XDSDocumentEntryConfidentialityCode", quote_list([s.key(RESTRICTED)])))
    assert set(restricted.ids) == ids(r, "ss", "pdf", "f", "ss-pdf", "ss-f", "f-pdf", "ss-f-pdf")


def test_get_folder_and_contents(folder_submission, stored):
    r = folder_submission
    answer = ask(stored, "GetFolderAndContents", ("$XDSFolderEntryUUID", quote(r["f"])), return_type="LeafClass")
    assert answer.kind("Folder") == {r["f"]}
    assert answer.kind("DocumentEntry") == ids(r, "text", "pdf")
    assert answer.kind("Association") == ids(r, "f-text", "f-pdf")
    restricted = ask(stored, "GetFolderAndContents", ("$XDSFolderUniqueId", quote(r.unique_ids["f"])),
                     ("$XDSDocumentEntryConfidentialityCode", quote_list([s.key(RESTRICTED)])))
    assert set(restricted.ids) == ids(r, "f", "pdf", "f-pdf")
    assert ask(stored, "GetFolderAndContents", ("$XDSFolderEntryUUID", quote("urn:uuid:404"))).ids == []


def test_contents_leave_out_on_demand_entries_unless_asked(registry, stored):
    r = register(registry, s.document("od", s.new_oid(), on_demand=True, service_start=None, service_stop=None))
    by_default = ask(stored, "GetSubmissionSetAndContents", ("$XDSSubmissionSetEntryUUID", quote(r["ss"])))
    assert r["od"] not in by_default.ids
    asked = ask(stored, "GetSubmissionSetAndContents", ("$XDSSubmissionSetEntryUUID", quote(r["ss"])),
                ("$XDSDocumentEntryType", quote_list([q.ON_DEMAND])))
    assert r["od"] in asked.ids


# --- GetFoldersForDocument, GetRelatedDocuments (3.18.4.1.2.3.7.12-13) -------------------------------


def test_get_folders_for_document(folder_submission, registry, stored):
    r = folder_submission
    answer = ask(stored, "GetFoldersForDocument", ("$XDSDocumentEntryUniqueId", quote(r.unique_ids["text"])),
                 return_type="LeafClass")
    assert answer.by_kind == {"Folder": [r["f"]]}
    alone = register(registry, s.document("d", s.new_oid()))
    assert ask(stored, "GetFoldersForDocument", ("$XDSDocumentEntryEntryUUID", quote(alone["d"]))).ids == []


def related(stored, document: str, *types: str, extra=(), return_type="ObjectRef"):
    return ask(stored, "GetRelatedDocuments", ("$XDSDocumentEntryEntryUUID", quote(document)),
               ("$AssociationTypes", quote_list(types)), *extra, return_type=return_type)


def test_get_related_documents(registry, session_factory, stored):
    original = register(registry, s.document("doc", s.new_oid()))
    addendum = register(registry, s.document("apnd", s.new_oid()), s.association("a", "APND", "apnd", original["doc"]))
    replacement = register(registry, s.document("rplc", s.new_oid()), s.association("r", "RPLC", "rplc", original["doc"]))
    rplc = association(session_factory, replacement["rplc"], original["doc"])
    apnd = association(session_factory, addendum["apnd"], original["doc"])
    answer = related(stored, original["doc"], q.RPLC, return_type="LeafClass")
    assert answer.kind("DocumentEntry") == {original["doc"], replacement["rplc"]}
    assert answer.kind("Association") == {rplc}
    both = related(stored, original["doc"], q.RPLC, q.APND)
    assert set(both.ids) == {original["doc"], replacement["rplc"], addendum["apnd"], rplc, apnd}
    # From the other end, by uniqueId.
    from_addendum = ask(stored, "GetRelatedDocuments", ("$XDSDocumentEntryUniqueId", quote(addendum.unique_ids["apnd"])),
                        ("$AssociationTypes", quote_list([q.APND])))
    assert set(from_addendum.ids) == {original["doc"], addendum["apnd"], apnd}


def test_get_related_documents_without_relations_is_empty(folder_submission, stored):
    # HasMember from a SubmissionSet or Folder relates no document (NIST 11909/near_folder).
    r = folder_submission
    assert related(stored, r["text"], q.HAS_MEMBER, q.RPLC).ids == []
    assert related(stored, "urn:uuid:d90e5407-b356-4d91-a89f-873917b4b0e6", q.RPLC).ids == []


def test_get_related_documents_needs_association_types(registry, stored):
    answer = ask(stored, "GetRelatedDocuments", ("$XDSDocumentEntryUniqueId", quote("1.2.3")))
    assert answer.codes == ["XDSStoredQueryMissingParam"]


# --- rules about the whole answer ----------------------------------------------------------------------


def test_leaf_class_metadata_of_two_patients_is_refused(registry, stored):
    # NIST 12368: GetDocuments / GetSubmissionSets naming objects of two patients.
    mine = register(registry, s.document("d", s.new_oid()))
    theirs = register(registry, s.document("d", s.new_oid(), patient=s.OTHER_PATIENT), patient=s.OTHER_PATIENT)
    both = ("$XDSDocumentEntryEntryUUID", quote_list([mine["d"], theirs["d"]]))
    answer = ask(stored, "GetDocuments", both, return_type="LeafClass")
    assert answer.status == "Failure" and answer.codes == ["XDSResultNotSinglePatient"] and answer.ids == []
    assert answer.codes == [RULES["query.not-single-patient"].code]
    assert "2 patients" in answer.errors[0].context and "P2002" in answer.errors[0].context
    assert set(ask(stored, "GetDocuments", both, return_type="ObjectRef").ids) == {mine["d"], theirs["d"]}
    submission_sets = ask(stored, "GetSubmissionSets", ("$uuid", quote_list([mine["d"], theirs["d"]])),
                          return_type="LeafClass")
    assert submission_sets.codes == ["XDSResultNotSinglePatient"]


def test_too_many_leaf_class_results(registry, stored):
    register(registry, *[s.document(f"d{i}", s.new_oid()) for i in range(3)])
    limited = RegistryStoredQuery(stored.sessions, max_leaf_class_results=2)
    answer = q.find_documents(limited, return_type="LeafClass")
    assert answer.status == "Failure" and answer.codes == ["XDSTooManyResults"] and answer.ids == []
    assert answer.codes == [RULES["query.too-many-results"].code]
    assert "more than 2" in answer.errors[0].context
    assert len(q.find_documents(limited, return_type="ObjectRef").ids) == 3  # ObjectRef still answers
    assert len(q.find_documents(RegistryStoredQuery(stored.sessions, max_leaf_class_results=3),
                                return_type="LeafClass").ids) == 3
    # The limit counts every object of the answer: 1 SubmissionSet + 3 documents + 3 HasMembers.
    assert get_all(limited, return_type="LeafClass").codes == ["XDSTooManyResults"]
    assert len(get_all(RegistryStoredQuery(stored.sessions, max_leaf_class_results=7), return_type="LeafClass").ids) == 7


def test_home_community_id_is_set_on_every_object(registry, stored):
    r = register(registry, s.document("d", s.new_oid()))
    home = RegistryStoredQuery(stored.sessions, home_community_id="urn:oid:1.2.392.200119.6.102")
    for return_type in ("LeafClass", "ObjectRef"):
        answer = get_all(home, return_type=return_type)
        objects = answer.element.find(f"{{{q.ns.RIM}}}RegistryObjectList")
        assert len(objects) == 3 and {o.get("home") for o in objects} == {"urn:oid:1.2.392.200119.6.102"}
    assert q.find_documents(stored, return_type="LeafClass").element_of(r["d"]).get("home") is None


@pytest.fixture(scope="module")
def query_schema():
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "query.xsd")))


def test_answers_are_valid_by_the_schema(folder_submission, stored, query_schema):
    for answer in (
        get_all(stored, return_type="LeafClass"),
        get_all(stored, return_type="ObjectRef"),
        ask(stored, "GetAll"),  # errors
    ):
        assert query_schema.validate(answer.element), query_schema.error_log


def test_the_soap_action_answers_and_hides_failures(registry, stored):
    def serve(query):
        return Dispatcher({"DocumentRegistry": service.RegistryService(registry, query)}).handler(ITI_18)

    request = SoapRequest(action=ITI_18.action, message_id="urn:uuid:1", header=None,
                          body=q.request("FindDocuments", ("$XDSDocumentEntryPatientId", quote(s.PATIENT)),
                                         q.APPROVED_DOCUMENTS))
    response = serve(service.stored_query_for(registry))(request)
    assert response.action == "urn:ihe:iti:2007:RegistryStoredQueryResponse"
    assert q.read(response.body).status == "Success"

    class Broken:
        def stored_query(self, request):
            raise RuntimeError("the disk is on fire")

    broken = serve(Broken())(request)
    answer = q.read(broken.body)
    assert answer.status == "Failure" and answer.codes == ["XDSRegistryError"]
    assert "urn:uuid:1" in answer.errors[0].context and "fire" not in answer.errors[0].context
    assert answer.errors[0].context == RULES["query.internal"].error(
        reason="unexpected failure, logged with MessageID urn:uuid:1").context
