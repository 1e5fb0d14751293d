"""ITI-62 Delete Document Set at the Document Registry (the RMD supplement's ITI TF-2b 3.62), in
process on SQLite and PostgreSQL, and over HTTP against a real `xds serve`.

The NIST toolkit's ITI-62 tests (30000-30008, ../shared/conformance-data/iti-62/nist) are replayed
step by step: their submissions are written here in ebRIM 3.0 with the same shape (the same
objects and associations), their Remove Metadata requests are the toolkit's own files with
the `$...$` placeholders filled, and each step expects what its testplan.xml expects. (The
conformance runner cannot send an ITI-62 step yet.) Then every rule of the request and of the
reference checks, all-or-nothing, what removal leaves behind, concurrency, the audit record and
the `xds delete` command."""

from __future__ import annotations

import multiprocessing
import socket
import subprocess
import threading
import time
from datetime import datetime, timezone

import pytest
from lxml import etree
from sqlalchemy import select, text

from tests import submissions as s
from tests.data import CONFORMANCE
from tests.queries import APPROVED, DEPRECATED, ask, find_documents, quote, quote_list, register
from tests.server import XDS
from tests.test_repository_remove import AuditListener
from tests.test_repository_support import start_server, stop_server
from xds.audit import events
from xds.conformance.prepare import substitute
from xds.dispatch import Dispatcher
from xds.ebrim import ns
from xds.ebrim.response import read_registry_response
from xds.errors import XdsError
from xds.registry import service
from xds.registry.register import DocumentRegistry
from xds.registry.remove import DeleteDocumentSet
from xds.result import Result
from xds.rules import RULES
from xds.soap import SoapRequest
from xds.store import db, patients
from xds.store.tables import (
    AssociationRow,
    AuthorRow,
    DocumentEntryRow,
    FolderRow,
    ObjectCodeRow,
    ReferenceIdRow,
    SubmissionSetRow,
)
from xds.transactions import ITI_62

NIST = CONFORMANCE / "iti-62" / "nist"
needs_nist = pytest.mark.skipif(not NIST.is_dir(), reason=f"the NIST ITI-62 tests are not at {NIST}")
BOTH = ("$XDSDocumentEntryStatus", quote_list([APPROVED, DEPRECATED]))


@pytest.fixture
def stored(registry):
    return service.stored_query_for(registry)


# --- helpers ----------------------------------------------------------------------------------


def request(*ids: str, attributes: str = "", extra: str = "") -> etree._Element:
    refs = "".join(f'<rim:ObjectRef id="{oid}"/>' for oid in ids)
    return etree.fromstring(
        f'<lcm:RemoveObjectsRequest xmlns:lcm="{ns.LCM}" xmlns:rim="{ns.RIM}" {attributes}>{extra}'
        f'<rim:ObjectRefList>{refs}</rim:ObjectRefList></lcm:RemoveObjectsRequest>')


def delete(registry: DocumentRegistry, *ids: str, **kw) -> Result:
    return DeleteDocumentSet.of(registry).delete(request(*ids, **kw))


def nist_remove(registry, test: str, section: str, file: str, **symbols: str) -> Result:
    """A Remove Metadata request of the NIST testkit, its $symbol$ placeholders filled."""
    template = etree.parse(str(NIST / test / section / file)).getroot()
    filled = substitute(template, {f"${name}$": value for name, value in symbols.items()})
    return DeleteDocumentSet.of(registry).delete(filled)


def codes(result: Result) -> list[str]:
    return [e.code for e in result.errors]


def status(result: Result) -> str:
    return result.status.rsplit(":", 1)[-1]


def the_error(result: Result, rule_id: str, *words: str) -> XdsError:
    assert status(result) == "Failure"
    assert codes(result) == [RULES[rule_id].code], [str(e) for e in result.errors]
    for word in words:
        assert word in result.errors[0].context, result.errors[0].context
    return result.errors[0]


def association(registry, source: str, target: str) -> str:
    with registry.sessions() as session:
        return session.scalars(select(AssociationRow.entry_uuid).where(
            AssociationRow.source == source, AssociationRow.target == target)).one()


def present(registry, *ids: str) -> set[str]:
    """Those of `ids` that are still rows of some object table."""
    found = set()
    with registry.sessions() as session:
        for table in (DocumentEntryRow, SubmissionSetRow, FolderRow, AssociationRow):
            found |= set(session.scalars(select(table.entry_uuid).where(table.entry_uuid.in_(ids))))
    return found


def doc_status(registry, uuid: str) -> str:
    with registry.sessions() as session:
        return session.scalar(select(DocumentEntryRow.status).where(DocumentEntryRow.entry_uuid == uuid))


def submission(registry, doc: str = "Document01", *relations: tuple[str, str]) -> dict[str, str]:
    """A NIST-shaped submission: SubmissionSet01 with one DocumentEntry, its HasMember
    (SSHMAssoc01, which `register` adds), and relationships (kind, target) from the document
    (Assoc<kind>). Returns the toolkit's symbolic ids -> entryUUIDs (its AssignedUuids)."""
    objects = [s.document(doc, s.new_oid())]
    objects += [s.association(f"Assoc{kind}", kind, doc, target) for kind, target in relations]
    registered = register(registry, *objects)
    ids = {"SubmissionSet01": registered["ss"], "Document01": registered[doc],
           "SSHMAssoc01": association(registry, registered["ss"], registered[doc])}
    for kind, target in relations:
        ids[f"Assoc{kind}"] = association(registry, registered[doc], target)
    return ids


# --- the NIST toolkit's tests -------------------------------------------------------------------


@needs_nist
def test_nist_30000_an_unknown_object(registry):
    """30000/remove: an id the registry does not hold -> UnresolvedReferenceException."""
    result = nist_remove(registry, "30000", "remove", "remove.xml")
    error = the_error(result, "remove.unresolved", "urn:uuid:11111111-2222-3333-4444-999999999999")
    assert error.location == "urn:uuid:11111111-2222-3333-4444-999999999999"


@needs_nist
def test_nist_30002_a_submission_set_with_an_empty_folder(registry, stored):
    r = register(registry, s.folder("Folder01", s.new_oid()))
    ids = {"SubmissionSet01": r["ss"], "Folder01": r["Folder01"],
           "AssociationHM01": association(registry, r["ss"], r["Folder01"])}
    # remove_submissionset: the SubmissionSet alone; its HasMember still refers to it.
    the_error(nist_remove(registry, "30002", "remove", "remove.xml", **ids), "remove.references-exist",
              ids["SubmissionSet01"], ids["AssociationHM01"])
    # remove_folder_and_association: the SubmissionSet would be left with no member.
    error = the_error(nist_remove(registry, "30002", "remove", "remove_fd.xml", **ids), "remove.unreferenced",
                      ids["SubmissionSet01"])
    assert error.location == ids["AssociationHM01"]
    assert present(registry, *ids.values()) == set(ids.values())
    # remove_all
    assert status(nist_remove(registry, "30002", "remove", "remove_all.xml", **ids)) == "Success"
    assert present(registry, *ids.values()) == set()
    answer = ask(stored, "GetSubmissionSetAndContents", ("$XDSSubmissionSetUniqueId", quote(r.unique_ids["ss"])),
                 return_type="LeafClass")
    assert answer.status == "Success" and answer.ids == []


@needs_nist
def test_nist_30004_an_appended_document(registry, stored):
    original = submission(registry)
    appended = submission(registry, "Document01", ("APND", original["Document01"]))
    # remove_orig_set_only: the APND of the other submission still refers to the original.
    result = nist_remove(registry, "30004", "remove", "remove_de.xml", Document01=original["Document01"],
                         SSHM01Association=original["SSHMAssoc01"], SubmissionSet01=original["SubmissionSet01"])
    the_error(result, "remove.references-exist", original["Document01"], appended["AssocAPND"], "(APND)")
    # remove_apnd_set_only
    result = nist_remove(registry, "30004", "remove", "remove_de2.xml", APNDAssociation=appended["AssocAPND"],
                         Document01=appended["Document01"], SSHM01Association=appended["SSHMAssoc01"],
                         SubmissionSet01=appended["SubmissionSet01"])
    assert status(result) == "Success"
    # eval_remove: the appended submission is gone, the original is whole and Approved.
    assert present(registry, *appended.values()) == set()
    assert present(registry, *original.values()) == set(original.values())
    assert doc_status(registry, original["Document01"]) == APPROVED


@needs_nist
def test_nist_30006_a_transformed_replacement_then_appended(registry):
    original = submission(registry)
    replacement = submission(registry, "Document01", ("XFRM_RPLC", original["Document01"]))
    appended = submission(registry, "Document01", ("APND", replacement["Document01"]))
    assert doc_status(registry, original["Document01"]) == DEPRECATED
    orig = {"Document00": original["Document01"], "SSHM00Association": original["SSHMAssoc01"],
            "SubmissionSet00": original["SubmissionSet01"]}
    rplc = {"Document01": replacement["Document01"], "SSHM01Association": replacement["SSHMAssoc01"],
            "SubmissionSet01": replacement["SubmissionSet01"]}
    # remove_original_submissionset: the XFRM_RPLC refers to the original.
    the_error(nist_remove(registry, "30006", "remove", "remove_orig_ss.xml", **orig), "remove.references-exist",
              replacement["AssocXFRM_RPLC"])
    # remove_original_submissionset_and_rplc
    assert status(nist_remove(registry, "30006", "remove", "remove_orig_ss_and_assoc.xml", **orig,
                              XFRM_RPLCAssociation=replacement["AssocXFRM_RPLC"])) == "Success"
    # remove_replacement_submissionset: the APND refers to the replacement.
    the_error(nist_remove(registry, "30006", "remove", "remove_rplc_ss.xml", **rplc), "remove.references-exist",
              appended["AssocAPND"])
    # remove_append_submissionset
    assert status(nist_remove(registry, "30006", "remove", "remove_apnd_ss.xml",
                              APNDAssociation=appended["AssocAPND"], Document02=appended["Document01"],
                              SSHM02Association=appended["SSHMAssoc01"],
                              SubmissionSet02=appended["SubmissionSet01"])) == "Success"
    # now_remove_replacement_submissionset
    assert status(nist_remove(registry, "30006", "remove", "remove_rplc_ss.xml", **rplc)) == "Success"
    everything = [*original.values(), *replacement.values(), *appended.values()]
    assert present(registry, *everything) == set()


@needs_nist
def test_nist_30008_an_addendum_replaced(registry, stored):
    """30008: DE0; DE1 appends DE0; DE2 transforms and replaces DE1 (the addendum), which is
    deprecated - DE0 is not (a replaced addendum does not deprecate what it amends)."""
    submit = submission(registry)
    apnd = submission(registry, "Document01", ("APND", submit["Document01"]))
    xfrm_rplc = submission(registry, "Document01", ("XFRM_RPLC", apnd["Document01"]))
    assert doc_status(registry, apnd["Document01"]) == DEPRECATED
    assert doc_status(registry, submit["Document01"]) == APPROVED

    def set_of(ids, **more):
        return {"Document01": ids["Document01"], "SSHM01Association": ids["SSHMAssoc01"],
                "SubmissionSet01": ids["SubmissionSet01"], **more}

    # attempt_remove_original_set: the APND refers to DE0.
    the_error(nist_remove(registry, "30008", "attempt_remove_original_set", "remove_orig_set_only.xml",
                          **set_of(submit)), "remove.references-exist", apnd["AssocAPND"])
    # remove_APND_assoc_only: DE1 and DE0 stay referred to by their HasMembers.
    assert status(nist_remove(registry, "30008", "remove_APND_assoc_only", "remove_assoc_only.xml",
                              Association=apnd["AssocAPND"])) == "Success"
    # remove_orig_set
    assert status(nist_remove(registry, "30008", "remove_orig_set", "remove_orig_set_only.xml",
                              **set_of(submit))) == "Success"
    # attempt_remove_apnd_set: the XFRM_RPLC refers to DE1.
    the_error(nist_remove(registry, "30008", "attempt_remove_apnd_set", "remove_apnd_set_only.xml",
                          **set_of(apnd)), "remove.references-exist", xfrm_rplc["AssocXFRM_RPLC"])
    # remove_xfrm_rplc
    assert status(nist_remove(registry, "30008", "remove_xfrm_rplc", "remove_rplc_set_only.xml",
                              **set_of(xfrm_rplc, XFRM_RPLCAssociation=xfrm_rplc["AssocXFRM_RPLC"]))) == "Success"
    # eval_remove: GetDocumentsAndAssociations of the three finds DE1, Deprecated, and its HasMember.
    answer = ask(stored, "GetDocumentsAndAssociations",
                 ("$XDSDocumentEntryEntryUUID", quote_list([submit["Document01"], apnd["Document01"],
                                                           xfrm_rplc["Document01"]])), return_type="LeafClass")
    assert answer.kind("ExtrinsicObject") | answer.kind("DocumentEntry") == {apnd["Document01"]}
    assert answer.kind("Association") == {apnd["SSHMAssoc01"]}
    assert answer.element_of(apnd["Document01"]).get("status") == DEPRECATED


# --- the request (ITI TF-2b 3.62.4.1.2) -----------------------------------------------------------


def test_a_body_that_is_not_a_remove_objects_request(registry):
    body = etree.fromstring(f'<lcm:SubmitObjectsRequest xmlns:lcm="{ns.LCM}"/>')
    result = DeleteDocumentSet.of(registry).delete(body)
    the_error(result, "remove.not-remove-objects", "SubmitObjectsRequest")


def test_objects_chosen_by_a_query_are_refused(registry):
    r = register(registry, s.document("d", s.new_oid()))
    query = f'<rim:AdhocQuery id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"/>'
    the_error(delete(registry, r["d"], extra=query), "remove.adhoc-query", "ObjectRef")
    assert present(registry, r["d"]) == {r["d"]}


def test_a_deletion_scope_other_than_delete_all_is_refused(registry):
    r = register(registry, s.document("d", s.new_oid()))
    everything = [r["d"], r["ss"], association(registry, r["ss"], r["d"])]
    scope = 'deletionScope="urn:oasis:names:tc:ebxml-regrep:DeletionScopeType:DeleteRepositoryItemOnly"'
    the_error(delete(registry, *everything, attributes=scope), "remove.deletion-scope", "DeleteRepositoryItemOnly")
    # DeleteAll, the default, may be written out
    all_scope = 'deletionScope="urn:oasis:names:tc:ebxml-regrep:DeletionScopeType:DeleteAll"'
    assert status(delete(registry, *everything, attributes=all_scope)) == "Success"


def test_a_request_naming_nothing(registry):
    the_error(delete(registry), "remove.no-objects", "ObjectRefList")


def test_an_object_ref_without_an_id(registry):
    the_error(delete(registry, ""), "remove.object-ref-without-id")


def test_more_objects_than_the_limit(registry):
    r = register(registry, s.document("d", s.new_oid()))
    ids = [r["d"], r["ss"], association(registry, r["ss"], r["d"])]
    limited = DeleteDocumentSet(registry.sessions, max_objects=2)
    result = limited.delete(request(*ids))
    assert codes(result) == ["XDSRegistryError"] and "more than 2 objects" in result.errors[0].context
    assert result.errors[0].context == RULES["remove.too-many-objects"].message.format(limit=2)
    assert present(registry, *ids) == set(ids)


def test_an_id_named_twice_is_removed_once(registry):
    r = register(registry, s.document("d", s.new_oid()))
    hm = association(registry, r["ss"], r["d"])
    result = delete(registry, r["d"], hm, r["ss"], r["d"], hm)
    assert status(result) == "Success"
    assert [d.unique_id for d in result.documents] == [r["d"], hm, r["ss"]]


# --- the checks against the registry (3.62.4.1.3) ---------------------------------------------------


def test_all_or_nothing_with_an_unknown_id(registry):
    r = register(registry, s.document("d", s.new_oid()))
    ids = [r["d"], r["ss"], association(registry, r["ss"], r["d"])]
    unknown = "urn:uuid:00000000-0000-4000-8000-00000000dead"
    result = delete(registry, *ids, unknown)
    the_error(result, "remove.unresolved", unknown)
    assert present(registry, *ids) == set(ids)


def test_every_error_is_reported(registry):
    """A request with two unknown ids names both; one whose objects are referred to from two
    places names each object once, with every association in its codeContext."""
    unknown = ["urn:uuid:00000000-0000-4000-8000-0000000000a1", "urn:uuid:00000000-0000-4000-8000-0000000000a2"]
    assert [e.location for e in delete(registry, *unknown).errors] == unknown
    original = submission(registry)
    addendum = submission(registry, "Document01", ("APND", original["Document01"]))
    transform = submission(registry, "Document01", ("XFRM", original["Document01"]))
    result = delete(registry, original["Document01"], original["SubmissionSet01"])
    assert codes(result) == ["ReferencesExistException", "ReferencesExistException"]
    by_object = {e.location: e.context for e in result.errors}
    assert addendum["AssocAPND"] in by_object[original["Document01"]]
    assert transform["AssocXFRM"] in by_object[original["Document01"]]
    assert original["SSHMAssoc01"] in by_object[original["Document01"]]
    assert "3 Association(s)" in by_object[original["Document01"]]
    assert original["SSHMAssoc01"] in by_object[original["SubmissionSet01"]]


def test_a_long_list_of_references_is_shortened(registry):
    r = register(registry, s.document("d", s.new_oid()))
    for _ in range(7):
        submission(registry, "Document01", ("APND", r["d"]))
    error = delete(registry, r["d"]).errors[0]
    assert "8 Association(s)" in error.context and "and 3 more" in error.context


def test_a_folder_membership_is_removed_with_the_association_that_records_it(registry, session_factory):
    """A document leaves a folder: the Folder->DocumentEntry HasMember and the SubmissionSet's
    HasMember of that association go together; the folder's lastUpdateTime moves on."""
    r = register(registry, s.document("d", s.new_oid()), s.folder("f", s.new_oid()),
                 s.association("f-d", "HasMember", "f", "d"), s.association("ss-f-d", "HasMember", "ss", "f-d"))
    membership = association(registry, r["f"], r["d"])
    recorded = association(registry, r["ss"], membership)
    # the membership alone: the SubmissionSet's HasMember refers to it
    the_error(delete(registry, membership), "remove.references-exist", "Association", recorded)
    # the SubmissionSet's HasMember alone: the membership would be referred to by nothing
    the_error(delete(registry, recorded), "remove.unreferenced", "Association", membership)
    registry.clock = lambda: datetime(2031, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    assert status(delete(registry, membership, recorded)) == "Success"
    assert present(registry, r["f"], r["d"]) == {r["f"], r["d"]}
    with session_factory() as session:
        assert session.scalars(select(FolderRow).where(FolderRow.entry_uuid == r["f"])).one().last_update_time.startswith("20310203040506")


def test_removal_leaves_nothing_behind(registry, session_factory, stored):
    """The rows of the removed objects go with their codes, authors and reference ids; other
    objects keep theirs; stored queries find nothing of them."""
    order = "^^^&1.2.3&ISO^urn:ihe:iti:xds:2013:order"
    kept = register(registry, s.document("k", s.new_oid(), reference_ids=["R-1" + order]))
    r = register(registry, s.document("d", s.new_oid(), reference_ids=["R-2" + order]))
    ids = [r["d"], r["ss"], association(registry, r["ss"], r["d"])]
    with session_factory() as session:  # the side tables' key: the object's id
        object_id = {uuid: id_ for table in (DocumentEntryRow, SubmissionSetRow)
                     for uuid, id_ in session.execute(select(table.entry_uuid, table.id))}
    assert status(delete(registry, *ids)) == "Success"
    with session_factory() as session:
        for table in (ObjectCodeRow, AuthorRow, ReferenceIdRow):
            left = set(session.scalars(select(table.object_id).distinct()))
            assert not left & {object_id[r["d"]], object_id[r["ss"]]}, table
            assert object_id[kept["k"]] in left
    assert r["d"] not in find_documents(stored, status=BOTH).kind("ObjectRef")
    assert kept["k"] in find_documents(stored).kind("ObjectRef")
    answer = ask(stored, "GetAssociations", ("$uuid", quote_list([r["d"]])))
    assert answer.ids == []


def test_removing_a_replacement_leaves_the_original_deprecated(registry):
    """Deprecation is not undone: the replaced document stays Deprecated when its replacement
    and the RPLC go (reinstating it is an update, ITI-57, not a removal)."""
    original = submission(registry)
    replacement = submission(registry, "Document01", ("RPLC", original["Document01"]))
    assert status(delete(registry, *replacement.values())) == "Success"
    assert doc_status(registry, original["Document01"]) == DEPRECATED


def test_a_locked_database_answers_busy(database_url, engine, session_factory):
    with session_factory.begin() as session:
        patients.add(session, [s.PATIENT])
    impatient = db.make_engine(database_url, busy_timeout=0.2)
    remover = DeleteDocumentSet(db.make_sessionmaker(impatient, write=True))
    with db.write_session(engine) as other:  # another writer holds the lock
        if database_url.startswith("sqlite"):
            other.execute(select(1))
        else:
            other.execute(text("LOCK TABLE association IN EXCLUSIVE MODE"))
        started = time.monotonic()
        result = remover.delete(request("urn:uuid:00000000-0000-4000-8000-00000000beef"))
        assert time.monotonic() - started < 5
    the_error(result, "remove.busy", "locked")
    impatient.dispose()


# --- concurrency --------------------------------------------------------------------------------


def test_a_submission_referring_to_a_document_being_deleted_waits_and_finds_it_gone(registry, database_url,
                                                                                      engine):
    """An ITI-62 deleting a document is inside its transaction (checked, not yet committed) when
    an ITI-42 appends to that document. The submission must not read the document before the
    deletion commits and then add its association to a document that is gone: it waits
    (PostgreSQL: the association table's lock), then is refused as an unresolved reference."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's single write lock orders the two by itself")
    original = submission(registry)
    paused, release = threading.Event(), threading.Event()

    def pause(session, ids, transaction):
        paused.set()
        assert release.wait(30)

    remover = DeleteDocumentSet(registry.sessions, registry.clock, before_remove=pause)
    removal = threading.Thread(target=lambda: results.append(remover.delete(request(*original.values()))))
    results: list = []
    removal.start()
    while not paused.wait(0.05):
        assert removal.is_alive(), results[0].errors
    appended: list = []
    appending = threading.Thread(target=lambda: appended.append(registry.register(s.element(s.request(
        s.submission_set("ss", s.new_oid()), s.document("d", s.new_oid()),
        s.association("hm", "HasMember", "ss", "d", "Original"),
        s.association("apnd", "APND", "d", original["Document01"]))))))
    appending.start()
    # until the submission waits on the lock, as PostgreSQL sees it (each look a transaction of
    # its own: the statistics views keep one snapshot per transaction)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watcher:
        while not watcher.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                       "AND query LIKE 'LOCK TABLE association%'")).scalar():
            assert appending.is_alive(), appended
            time.sleep(0.01)
    release.set()
    removal.join(30)
    appending.join(30)
    assert status(results[0]) == "Success"
    refused = [p for p in appended[0] if p.is_error]
    assert refused and any(original["Document01"] in p.context for p in refused), appended[0]
    with registry.sessions() as session:  # and no association points at the deleted document
        assert not session.scalars(select(AssociationRow.entry_uuid)
                                   .where(AssociationRow.target == original["Document01"])).all()



def _remove_in_a_process(database_url: str, ids: list[str], start, results) -> None:
    engine = db.make_engine(database_url)
    remover = DeleteDocumentSet(db.make_sessionmaker(engine, write=True))
    start.wait()
    results.put(codes(remover.delete(request(*ids))))
    engine.dispose()


def test_two_removals_that_together_would_orphan_a_submission_set(registry, database_url):
    """A SubmissionSet with two documents; one request removes the first with its HasMember,
    another the second, at the same time. Each alone is allowed; both would leave the
    SubmissionSet a member of nothing. The removals are checked one after the other: one
    succeeds, the other is refused with XDSUnreferencedObjectException."""
    r = register(registry, s.document("a", s.new_oid()), s.document("b", s.new_oid()))
    halves = [[r[d], association(registry, r["ss"], r[d])] for d in ("a", "b")]
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    workers = [context.Process(target=_remove_in_a_process, args=(database_url, half, start, results))
               for half in halves]
    for w in workers:
        w.start()
    start.set()
    outcomes = sorted(results.get(timeout=60) for _ in workers)
    for w in workers:
        w.join(30)
    assert outcomes == [[], ["XDSUnreferencedObjectException"]]
    assert present(registry, r["ss"]) == {r["ss"]}


# --- the transaction: dispatch, audit ----------------------------------------------------------------


def _soap(body: etree._Element) -> SoapRequest:
    return SoapRequest(action=ITI_62.action, message_id="urn:uuid:62", header=None, body=body)


def test_the_registry_service_answers_iti_62(registry):
    r = register(registry, s.document("d", s.new_oid()))
    ids = [r["d"], association(registry, r["ss"], r["d"]), r["ss"]]
    handler = Dispatcher({"DocumentRegistry": service.RegistryService.of(registry)}).handler(ITI_62)
    response = handler(_soap(request(*ids)))
    assert response.action == "urn:ihe:iti:2010:DeleteDocumentSetResponse"
    assert read_registry_response(response.body) == (ns.SUCCESS, [])
    response = handler(_soap(request(*ids)))
    answer_status, errors = read_registry_response(response.body)
    assert answer_status == ns.FAILURE and {e.code for e in errors} == {"UnresolvedReferenceException"}


def test_an_unexpected_failure_answers_registry_error(registry, monkeypatch):
    def broken(self, body):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(DeleteDocumentSet, "delete", broken)
    handler = Dispatcher({"DocumentRegistry": service.RegistryService.of(registry)}).handler(ITI_62)
    answer_status, errors = read_registry_response(handler(_soap(request("urn:uuid:x"))).body)
    assert answer_status == ns.FAILURE
    assert [e.code for e in errors] == [RULES["remove.internal"].code]
    assert "urn:uuid:62" in errors[0].context and "disk on fire" not in errors[0].context


def test_the_audit_record_names_each_object_removed(registry):
    """ITI TF-2b 3.62.5.1.2: Patient Record (110110), Delete, ITI-62; the patient, and one
    participant object per registry object by entryUUID ('registry object reference')."""
    r = register(registry, s.document("d", s.new_oid()))
    ids = [r["d"], association(registry, r["ss"], r["d"]), r["ss"]]
    result = delete(registry, *ids)
    assert {d.patient_id for d in result.documents} == {s.PATIENT}
    ctx = events.TransactionContext(action=ITI_62.action, endpoint_url="http://registry.example/registry",
                                    outcome=result.status, patient_id=s.PATIENT,
                                    documents=[events.DocumentRef(d.unique_id) for d in result.documents])
    message = etree.fromstring(events.build("ITI-62", "DocumentRegistry", ctx, events.AuditSource("node")))
    event = message.find("EventIdentification")
    assert event.get("EventActionCode") == "D" and event.get("EventOutcomeIndicator") == "0"
    assert event.find("EventID").get("csd-code") == "110110"
    assert event.find("EventTypeCode").get("csd-code") == "ITI-62"
    objects = message.findall("ParticipantObjectIdentification")
    assert objects[0].get("ParticipantObjectID") == s.PATIENT
    assert [o.get("ParticipantObjectID") for o in objects[1:]] == ids
    assert {o.find("ParticipantObjectIDTypeCode").get("csd-code") for o in objects[1:]} == {
        "urn:ihe:iti:2017:ObjectRef"}
    assert {(o.get("ParticipantObjectTypeCode"), o.get("ParticipantObjectTypeCodeRole")) for o in objects[1:]} == {
        ("2", "3")}
    schema_path = CONFORMANCE / "schemas" / "audit" / "dicom2017c.xsd"
    if schema_path.is_file():
        schema = etree.XMLSchema(etree.parse(str(schema_path)))
        assert schema.validate(message), schema.error_log


def test_a_refused_removal_is_audited_with_what_it_named(registry):
    """A refusal is recorded too (outcome 8), naming the objects the request named that exist."""
    r = register(registry, s.document("d", s.new_oid()))
    result = delete(registry, r["d"])
    assert status(result) == "Failure" and [d.unique_id for d in result.documents] == [r["d"]]
    ctx = events.TransactionContext(action=ITI_62.action, outcome=result.status,
                                    documents=[events.DocumentRef(d.unique_id) for d in result.documents])
    message = etree.fromstring(events.build("ITI-62", "DocumentRegistry", ctx, events.AuditSource("node")))
    assert message.find("EventIdentification").get("EventOutcomeIndicator") == "8"
    assert [o.get("ParticipantObjectID") for o in message.findall("ParticipantObjectIdentification")] == [r["d"]]


# --- over HTTP: a real server, zeep from the served WSDL, and `xds delete` -------------------------------


@pytest.fixture(scope="module")
def audit():
    listener = AuditListener()
    yield listener
    listener.socket.close()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request, tmp_path_factory, audit):
    """One `xds serve` per database for the HTTP tests (each registers its own objects), auditing
    to `audit`, and a DocumentRegistry on the same database to register them with."""
    running = start_server(request.param, tmp_path_factory.mktemp(f"remove-{request.param}"),
                           extra_env={"XDS_AUDIT_DESTINATIONS": audit.address})
    registry = DocumentRegistry(sessions=db.make_sessionmaker(running.engine, write=True))
    yield running.base, running.env, registry
    stop_server(running)


def test_zeep_deletes_a_document_set_over_http(server, audit):
    import requests
    import zeep

    base, _, registry = server
    r = register(registry, s.document("d", s.new_oid()))
    ids = [r["d"], association(registry, r["ss"], r["d"]), r["ss"]]
    session = requests.Session()
    session.trust_env = False
    client = zeep.Client(base + "/registry?wsdl", transport=zeep.Transport(session=session))
    service_proxy = client.create_service("{urn:ihe:iti:xds-b:2007}DocumentRegistry_Binding_Soap12",
                                          base + "/registry")
    refused = service_proxy.DocumentRegistry_DeleteDocumentSet(ObjectRefList={"ObjectRef": [{"id": ids[0]}]})
    assert refused.status == ns.FAILURE
    assert [e.errorCode for e in refused.RegistryErrorList.RegistryError] == ["ReferencesExistException"]
    answer = service_proxy.DocumentRegistry_DeleteDocumentSet(ObjectRefList={"ObjectRef": [{"id": i} for i in ids]})
    assert answer.status == ns.SUCCESS
    assert present(registry, *ids) == set()
    record = audit.wait_for(b'csd-code="ITI-62"', b'EventOutcomeIndicator="0"', ids[0].encode())
    assert all(i.encode() in record for i in ids) and b"urn:ihe:iti:2017:ObjectRef" in record


def test_the_delete_command_over_http_and_in_process(server, tmp_path, audit):
    base, env, registry = server
    r = register(registry, s.document("d", s.new_oid()))
    hm = association(registry, r["ss"], r["d"])
    refused = subprocess.run([*XDS, "delete", r["d"], "--url", base + "/registry"], env=env,
                             capture_output=True, text=True)
    assert refused.returncode == 1
    assert "status: Failure" in refused.stdout and "ReferencesExistException" in refused.stdout
    assert hm in refused.stdout
    listed = tmp_path / "ids.txt"
    listed.write_text(f"{hm}\n# the submission set too\n{r['ss']}\n")
    done = subprocess.run([*XDS, "delete", r["d"], "--from", str(listed), "--url", base + "/registry"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "status: Success" in done.stdout and "3 object(s) removed" in done.stdout
    # in process, on the database of the settings: nothing left to remove; audited all the same
    again = subprocess.run([*XDS, "delete", r["d"]], env=env, capture_output=True, text=True)
    assert again.returncode == 1 and "UnresolvedReferenceException" in again.stdout
    here = f'NetworkAccessPointID="{socket.gethostname()}"'.encode()  # the requestor: this host, not 127.0.0.1
    audit.wait_for(b'csd-code="ITI-62"', b'EventOutcomeIndicator="8"', here)


def test_the_delete_command_refuses_bad_use(server):
    _, env, _ = server
    none = subprocess.run([*XDS, "delete"], env=env, capture_output=True, text=True)
    assert none.returncode == 2 and "no entryUUID" in none.stderr
    unreachable = subprocess.run([*XDS, "delete", "urn:uuid:00000000-0000-4000-8000-000000000001",
                                  "--url", "http://127.0.0.1:9/registry"], env=env, capture_output=True, text=True)
    assert unreachable.returncode == 2 and "xds delete:" in unreachable.stderr
