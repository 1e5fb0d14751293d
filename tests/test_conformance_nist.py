"""The NIST XDS Toolkit tests against this project: a real `xds serve` on a random port with the
NIST codes (../shared/conformance-data/config/nist-codes.xml), fed its test patients through
`xds patients add`, and the conformance runner in-process over every NIST test under iti-42,
iti-18, iti-41 and iti-43.

Every step must pass except those in conformance/known-failures.txt, and the list must be
exact: a failure that is not listed fails this test, and so does a listed step that passes
(remove it: the list only shrinks). Set XDS_CONFORMANCE_REPORT_DIR to keep the per-step logs,
the summary, the README table and JUnit XML of the run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.server import XDS, serve
from xds.config import Settings
from xds.conformance.plan import discover
from xds.conformance.report import (
    compare,
    comparison_text,
    conformance_table,
    junit_xml,
    read_known_failures,
    summary_table,
    write_logs,
)
from xds.conformance.runner import CommandPatientFeed, Endpoints, Runner

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE = ROOT.parent / "shared" / "conformance-data"
NIST_CODES = CONFORMANCE / "config" / "nist-codes.xml"
KNOWN_FAILURES = ROOT / "conformance" / "known-failures.txt"
TEST_FOLDERS = [CONFORMANCE / folder / "nist" for folder in ("iti-42", "iti-18", "iti-41", "iti-43")]
# The repository's uniqueId, for the plans that name it without reporting it (15816's $repuid$):
# the one `xds serve` has by default (the server below sets none).
REPOSITORY_UNIQUE_ID: str | None = Settings().repository_unique_id

pytestmark = pytest.mark.skipif(
    not CONFORMANCE.is_dir(),
    reason=f"the public conformance data is not at {CONFORMANCE} (see DESIGN.md, 'Test material')",
)



@pytest.fixture(scope="module")
def nist_server(tmp_path_factory):
    """`xds serve` on SQLite with the NIST codes; yields its base URL and its environment."""
    tmp = tmp_path_factory.mktemp("nist")
    env = dict(os.environ, XDS_DATA_DIR=str(tmp / "var"), XDS_DATABASE_URL=f"sqlite:///{tmp / 'registry.sqlite3'}",
               XDS_CODES_FILE=str(NIST_CODES))
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    process, base = serve(env, tmp / "server.log")
    yield base, env
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def nist_run(nist_server):
    base, env = nist_server
    # This project on the same machine: the test patients go in through `xds patients add`.
    feed = CommandPatientFeed([*XDS, "patients", "add"], env=env)
    runner = Runner(Endpoints(base + "/registry", base + "/repository", REPOSITORY_UNIQUE_ID), patient_feed=feed)
    found = discover(TEST_FOLDERS)
    assert not found.missing, f"tests the plans read from are missing: {found.missing}"
    results = runner.run(found.tests)
    known = read_known_failures(KNOWN_FAILURES.read_text(encoding="utf-8"))
    report_dir = os.environ.get("XDS_CONFORMANCE_REPORT_DIR")
    if report_dir:
        write_logs(Path(report_dir), results, runner.logs, known)
        (Path(report_dir) / "junit.xml").write_bytes(junit_xml(results, known))
        (Path(report_dir) / "conformance-table.md").write_text(conformance_table(results, known), encoding="utf-8")
    return runner, results, known


def test_every_step_passes_except_the_known_failures(nist_run):
    _, results, known = nist_run
    comparison = compare(results, known)
    explanation = comparison_text(comparison, known) + "\n" + summary_table(results, known)
    assert not comparison.new_failures, explanation
    assert not comparison.fixed, explanation
    assert not comparison.not_run, explanation


def test_every_nist_test_ran(nist_run):
    """Nothing is skipped in silence: every section of every test ran as a step result."""
    _, results, _ = nist_run
    tests = {r.test for r in results}
    expected = {p.name for folder in TEST_FOLDERS for p in folder.iterdir() if (p / "index.idx").is_file()}
    assert tests == expected
    assert len(results) >= 157  # the steps of the plans in conformance-data (15816/Retrieve included)


def test_the_test_patients_were_fed_with_xds_patients_add(nist_run, nist_server):
    runner, _, _ = nist_run
    _, env = nist_server
    listed = subprocess.run([*XDS, "patients", "list"], env=env, check=True, capture_output=True, text=True).stdout
    for test in ("15817", "15817b", "15818", "12374"):
        assert runner.patients_of[test] in listed.split(), test
    # the alternate patient of 11996 (XDSUnknownPatientId) is never fed
    assert runner.alt_patient_id not in listed
    # the query fixture 12346 uses the patient 15818 fed, as the toolkit does through UseReport
    assert runner.logs[("12346", "two_doc_w_fol", "submit_2doc_w_fol")].patient_id == runner.patients_of["15818"]
