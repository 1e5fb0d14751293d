"""The NIST XDS Toolkit tests against this project: a real `xds serve` on a random port with the
NIST codes (../shared/conformance-data/config/nist-codes.xml) and the runner's address allowed
to ask Multi-Patient Queries, fed its test patients through its own PIX Manager (ITI-44 over
HTTP, the NIST patients' assigning authority being its affinity domain), and the conformance
runner in-process over every NIST test under iti-51, iti-42, iti-18, iti-41, iti-43, iti-62 and
iti-86, and iti-57 when the registry's WSDL offers Update Document Set.

Every step must pass except those in conformance/known-failures.txt, and the list must be
exact: a failure that is not listed fails this test, and so does a listed step that passes
(remove it: the list only shrinks). No step may be skipped: a skip is a gap of the runner.
Set XDS_CONFORMANCE_REPORT_DIR to keep the per-step logs, the summary, the README table and
JUnit XML of the run.
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.server import XDS, serve
from xds.config import Settings
from xds.conformance.plan import discover
from xds.conformance.prepare import PATIENT_ID_SCHEMES
from xds.conformance.report import (
    compare,
    comparison_text,
    conformance_table,
    junit_xml,
    read_known_failures,
    summary_table,
    write_logs,
)
from xds.conformance.runner import NIST_AUTHORITY, ROUTES, Endpoints, Hl7v3PatientFeed, Runner, http_transport

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE = ROOT.parent / "shared" / "conformance-data"
NIST_CODES = CONFORMANCE / "config" / "nist-codes.xml"
KNOWN_FAILURES = ROOT / "conformance" / "known-failures.txt"
# iti-51 first: its query tests (12364) count every DocumentEntry of the registry with their
# codes, across patients, and expect only what 12361 loads ("This test data must be loaded in
# your Registry Actor exactly once", 12361/readme.txt); iti-42 and iti-57 use the same codes.
FOLDERS = ["iti-51", "iti-42", "iti-18", "iti-41", "iti-43", "iti-62", "iti-86"]
# ITI-57's tests run when the registry offers Update Document Set (its WSDL names the action).
UPDATE_FOLDER = "iti-57"
# The repository's uniqueId, for the plans that name it without reporting it (15816's $repuid$):
# the one `xds serve` has by default (the server below sets none).
REPOSITORY_UNIQUE_ID: str | None = Settings().repository_unique_id

pytestmark = pytest.mark.skipif(
    not CONFORMANCE.is_dir(),
    reason=f"the public conformance data is not at {CONFORMANCE} (see DESIGN.md, 'Test material')",
)


@pytest.fixture(scope="module")
def nist_server(tmp_path_factory):
    """`xds serve` on SQLite with the NIST codes, answering Multi-Patient Queries from this
    machine; yields its base URL and its environment."""
    tmp = tmp_path_factory.mktemp("nist")
    env = dict(os.environ, XDS_DATA_DIR=str(tmp / "var"), XDS_DATABASE_URL=f"sqlite:///{tmp / 'registry.sqlite3'}",
               XDS_CODES_FILE=str(NIST_CODES), XDS_AFFINITY_DOMAIN=NIST_AUTHORITY,
               XDS_MULTI_PATIENT_QUERY_CALLERS="127.0.0.1")
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    process, base = serve(env, tmp / "server.log")
    yield base, env
    process.terminate()
    process.wait(10)


def offers_update(base: str) -> bool:
    """The registry's WSDL names the ITI-57 action, and this build knows it."""
    route = ROUTES.get("ITI-57")
    if route is None:
        return False
    with urllib.request.urlopen(base + "/registry?wsdl", timeout=10) as answer:
        return route.action.encode() in answer.read()


@pytest.fixture(scope="module")
def nist_run(nist_server):
    base, env = nist_server
    folders = FOLDERS + ([UPDATE_FOLDER] if offers_update(base) else [])
    # The test patients go in as a Patient Identity Source sends them: ITI-44 to /pix.
    feed = Hl7v3PatientFeed(base + "/pix", http_transport(60))
    runner = Runner(Endpoints(base + "/registry", base + "/repository", REPOSITORY_UNIQUE_ID), patient_feed=feed)
    test_folders = [CONFORMANCE / folder / "nist" for folder in folders]
    found = discover(test_folders)
    assert not found.missing, f"tests the plans read from are missing: {found.missing}"
    results = runner.run(found.tests)
    known = read_known_failures(KNOWN_FAILURES.read_text(encoding="utf-8"))
    report_dir = os.environ.get("XDS_CONFORMANCE_REPORT_DIR")
    if report_dir:
        write_logs(Path(report_dir), results, runner.logs, known)
        (Path(report_dir) / "junit.xml").write_bytes(junit_xml(results, known))
        (Path(report_dir) / "conformance-table.md").write_text(conformance_table(results, known), encoding="utf-8")
    return runner, results, known, test_folders


def test_every_step_passes_except_the_known_failures(nist_run):
    _, results, known, folders = nist_run
    if CONFORMANCE / UPDATE_FOLDER / "nist" not in folders:  # ITI-57's known failures wait for its run
        update_tests = {p.name for p in (CONFORMANCE / UPDATE_FOLDER / "nist").iterdir()}
        known = {step: entry for step, entry in known.items() if step.split("/")[0] not in update_tests}
    comparison = compare(results, known)
    explanation = comparison_text(comparison, known) + "\n" + summary_table(results, known)
    assert not comparison.new_failures, explanation
    assert not comparison.fixed, explanation
    assert not comparison.not_run, explanation
    assert not comparison.skipped, explanation


def test_every_nist_test_ran(nist_run):
    """Nothing is skipped in silence: every section of every test ran as a step result."""
    _, results, _, folders = nist_run
    tests = {r.test for r in results}
    expected = {p.name for folder in folders for p in folder.iterdir() if (p / "index.idx").is_file()}
    assert tests == expected
    # the steps of the plans in conformance-data (15816/Retrieve included): 157 of ITI-42,
    # ITI-18, ITI-41 and ITI-43, 62 of the Remove Metadata and Documents and the Multi-Patient
    # Query options (15817 counted once), 140 of Metadata Update (15817 and 15817b with them)
    assert len(results) >= 157 + 62 - 1 + (140 - 2 if len(folders) > len(FOLDERS) else 0)
    assert {r.iti for r in results} >= {"ITI-42", "ITI-18", "ITI-41", "ITI-43", "ITI-62", "ITI-86", "ITI-51"}


def test_the_test_patients_were_fed_through_iti_44(nist_run, nist_server):
    runner, _, _, _ = nist_run
    _, env = nist_server
    listed = subprocess.run([*XDS, "patients", "list"], env=env, check=True, capture_output=True, text=True).stdout
    for test in ("15817", "15817b", "15818", "12374", "15819", "15820"):
        assert runner.patients_of[test] in listed.split(), test
    # the alternate patient of 11996 (XDSUnknownPatientId) is never fed
    assert runner.alt_patient_id not in listed
    # the query fixture 12346 uses the patient 15818 fed, as the toolkit does through UseReport
    assert runner.logs[("12346", "two_doc_w_fol", "submit_2doc_w_fol")].patient_id == runner.patients_of["15818"]
    # the Multi-Patient Query data are the patients of 15819 and 15820 (TEST_PARAMETERS)
    for section, test in (("multi_doc", "15819"), ("single_doc", "15820")):
        sent = runner.logs[("12361", section, section)].input_metadata
        patients = {e.get("value") for e in sent.iter("{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}ExternalIdentifier")
                    if e.get("identificationScheme") in PATIENT_ID_SCHEMES}
        assert patients == {runner.patients_of[test]}, section
