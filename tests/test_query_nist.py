"""The NIST XDS Toolkit's stored query tests (../shared/conformance-data/iti-18/nist, and the
queries of iti-42/nist/*/eval*) against our registry.

1. Every AdhocQueryRequest there, its $placeholders$ filled with plausible values, is read by
   xds.registry.query_params as the query its id names, with no error - except the one the
   toolkit marks as broken on purpose (11897/classcode_scheme_mismatch, "not_in_CE_format").
2. The toolkit's fixtures 12346 (five submissions for one patient: a single document, a
   document in a folder, two documents in a folder, a document and its replacement) and
   12374/submit_doc (a second patient) are registered through the real ITI-42 step, the way
   the toolkit prepares them (ebRIM 2.1 -> 3.0, patient id, new uniqueIds, UUIDs; see
   xds.conformance), and each query test step is run with its <UseId> values: the status,
   error code and object counts its <ExpectedContents> states must come out.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree

from tests import queries as q
from xds.conformance.ebrim21 import to_ebrim30
from xds.conformance.prepare import prepare, substitute, unique_id_sequence
from xds.registry import service, stored_query
from xds.registry.query_params import read_query_request
from xds.registry.register import DocumentRegistry
from xds.store import db, patients

CONFORMANCE = Path(__file__).resolve().parent.parent.parent / "shared" / "conformance-data"
NIST = CONFORMANCE / "iti-18" / "nist"
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=True)
ADHOC_QUERY_REQUEST = f"{{{q.ns.QUERY}}}AdhocQueryRequest"

pytestmark = pytest.mark.skipif(not NIST.is_dir(), reason=f"the conformance data is not at {CONFORMANCE}")

PATIENT = "NIST12346^^^&1.3.6.1.4.1.21367.13.20.1000&ISO"
SECOND_PATIENT = "NIST12374^^^&1.3.6.1.4.1.21367.13.20.1000&ISO"
BROKEN_ON_PURPOSE = {"11897/classcode_scheme_mismatch"}


def query_files() -> list[Path]:
    files = sorted(NIST.glob("*/*/*.xml")) + sorted((CONFORMANCE / "iti-42" / "nist").glob("*/eval*/query.xml"))
    return [f for f in files if f.name != "testplan.xml" and etree.parse(str(f), PARSER).getroot().tag == ADHOC_QUERY_REQUEST]


PLAUSIBLE = {
    "patient_id": PATIENT, "uuid": "urn:uuid:0a6d5d04-1c36-4c1f-9d3b-3c1f2e8a0001",
    "uuid1": "urn:uuid:0a6d5d04-1c36-4c1f-9d3b-3c1f2e8a0002", "uuid2": "urn:uuid:0a6d5d04-1c36-4c1f-9d3b-3c1f2e8a0003",
    "uid": "1.2.392.200119.6.102.99.1", "uniqueid": "1.2.392.200119.6.102.99.2", "ssuid": "1.2.392.200119.6.102.99.3",
    "foluid": "1.2.392.200119.6.102.99.4", "doc_uid": "1.2.392.200119.6.102.99.5",
    "lastyear": "20240101", "now": "20250101120000",
}


@pytest.mark.parametrize("path", query_files(), ids=lambda p: str(p.relative_to(CONFORMANCE)))
def test_every_nist_query_is_understood(path):
    root = substitute(etree.parse(str(path), PARSER).getroot(), PLAUSIBLE)
    query_id = root.find(f"{{{q.ns.RIM}}}AdhocQuery").get("id")
    call, errors = read_query_request(root)
    if f"{path.parent.parent.name}/{path.parent.name}" in BROKEN_ON_PURPOSE:
        assert call is None and [e.code for e in errors] == ["XDSRegistryError"], errors
        assert "a^^" in errors[0].context
        return
    assert errors == [], errors
    assert call.query is stored_query.BY_ID[query_id]


def test_the_nist_query_files_cover_every_stored_query_but_one():
    # FindDocumentsByReferenceId came later than these tests.
    ids = {etree.parse(str(p), PARSER).getroot().find(f"{{{q.ns.RIM}}}AdhocQuery").get("id") for p in query_files()}
    assert {stored_query.BY_ID[i].name for i in ids} == {query.name for query in stored_query.QUERIES} - {
        "FindDocumentsByReferenceId"}


# --- running the toolkit's query tests against registered fixtures ---------------------------------------

FIXTURES = [  # (section as <UseId testdir> names it, metadata file, patient), in the toolkit's order
    ("12346/single_doc", "single_doc.xml", PATIENT),
    ("12346/doc_w_fol", "single_doc_w_fol.xml", PATIENT),
    ("12346/two_doc_w_fol", "two_doc_w_fol.xml", PATIENT),
    ("12346/doc_for_rplc", "single_doc_for_rplc.xml", PATIENT),
    ("12346/rplc", "rplc.xml", PATIENT),
    ("12374/submit_doc", "single_doc.xml", SECOND_PATIENT),
]


@pytest.fixture
def loaded(engine, session_factory):
    """The registry with the toolkit's fixtures; the logs of their preparation by section."""
    with session_factory.begin() as session:
        patients.add(session, [PATIENT, SECOND_PATIENT])
    registry = DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True))
    new_unique_id = unique_id_sequence(f"1.2.392.200119.6.102.98.{uuid.uuid4().int % 10**9}")
    logs = {}
    for section, file, patient in FIXTURES:
        template = to_ebrim30(etree.parse(str(NIST / section / file), PARSER).getroot())
        tree, log = prepare(template, patient_id=patient, source_id="1.2.392.200119.6.102.11",
                            new_unique_id=new_unique_id, assign_uuids=True)
        if section == "12346/rplc":
            tree = substitute(tree, {"rplc_doc_uuid": logs["12346/doc_for_rplc"]["AssignedUuids"]["Document01"]})
        problems = [p for p in registry.register(tree) if p.is_error]
        assert problems == [], (section, problems)
        logs[section] = log
    return service.stored_query_for(registry), logs


@dataclass
class Step:
    name: str
    query: Path
    status: str
    error_code: str | None
    use_ids: list[dict[str, str]]
    expected: list[etree._Element]


def steps() -> list[Step]:
    found = []
    for plan in sorted(NIST.glob("1[12]*/*/testplan.xml")) + sorted(NIST.glob("15803/*/testplan.xml")):
        root = etree.parse(str(plan), PARSER).getroot()
        for step in root.iter("TestStep"):
            transaction = step.find("StoredQueryTransaction")
            if transaction is None:
                continue
            expected = transaction.find("ExpectedContents")
            found.append(Step(
                name=f"{plan.parent.parent.name}/{plan.parent.name}/{step.get('id')}",
                query=plan.parent / transaction.findtext("MetadataFile").strip(),
                status=step.findtext("ExpectedStatus").strip(),
                error_code=(step.findtext("ExpectedErrorCode") or "").strip() or None,
                use_ids=[dict(u.attrib) for u in transaction.iter("UseId")],
                expected=list(expected) if expected is not None else [],
            ))
    return found


def _section(use_id: dict[str, str]) -> str:
    return "/".join(Path(use_id["testdir"]).parts[-2:])


def _value(use_id: dict[str, str], logs) -> str:
    log = logs[_section(use_id)]
    if use_id["section"] == "AssignedPatientId":
        return log["AssignedPatientId"]
    return log[use_id["section"]][use_id["id"]]


COUNTED = {"Documents": "DocumentEntry", "SubmissionSets": "SubmissionSet", "Folders": "Folder",
           "Associations": "Association", "ObjectRefs": "ObjectRef"}
SHAPES = {  # the toolkit's named contents: (SubmissionSets, Documents, Folders)
    "SSwithTwoDocOneFol": (1, 2, 1),
    "SSwithOneDocOneFol": (1, 1, 1),
}


@pytest.mark.parametrize("step", steps(), ids=lambda step: step.name)
def test_nist_query_step(step: Step, loaded):
    stored, logs = loaded
    variables = {u["symbol"]: _value(u, logs) for u in step.use_ids}
    variables.update({"$lastyear$": "20000101", "$now$": "29991231"})
    request = substitute(etree.parse(str(step.query), PARSER).getroot(), variables)
    answer = q.read(stored.query(request))
    assert answer.status == step.status, answer.errors
    if step.error_code:
        assert step.error_code in answer.codes
    counts = answer.counts()
    for expectation in step.expected:
        if expectation.tag in COUNTED:
            assert counts.get(COUNTED[expectation.tag], 0) == int(expectation.get("count")), (expectation.tag, counts)
        elif expectation.tag in SHAPES:
            submission_sets, documents, folders = SHAPES[expectation.tag]
            assert (counts.get("SubmissionSet", 0), counts.get("DocumentEntry", 0), counts.get("Folder", 0)) == (
                submission_sets, documents, folders), counts
        elif expectation.tag == "None":
            assert answer.ids == []
        else:
            pytest.fail(f"unknown ExpectedContents {expectation.tag}")


def test_the_nist_steps_are_all_run():
    names = [step.name for step in steps()]
    assert len(names) >= 40 and len(set(names)) == len(names)
    assert "12368/doc_leafclass/leafclass" in names and "15803/all/leafclass" in names


