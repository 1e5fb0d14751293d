"""`xds conformance run`: run NIST XDS Toolkit testkit tests against any XDS.b system.

    xds conformance run TESTDIR... --registry URL [--repository URL] [--repository-uid OID]
        [--patient-feed local|none|command:CMD|hl7v3:URL] [--report junit.xml] [--log-dir DIR]
        [--known-failures FILE]

TESTDIR is a test folder (with index.idx) or any folder above tests (../shared/conformance-data/
iti-42 runs every test in it). Tests the given ones read from (15817, 12346, ...) are found
beside them and run first.

`add_parser(subparsers)` defines the command; the `xds` command line hooks it in. The handler
follows cli.py's convention: `args.run(args, settings) -> exit status`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from xds.security import tls
from xds.conformance.plan import discover
from xds.conformance.report import (
    compare,
    comparison_text,
    junit_xml,
    read_known_failures,
    summary_table,
    verdict,
    write_logs,
)
from xds.conformance.runner import (
    DEFAULT_SOURCE_ID,
    NIST_AUTHORITY,
    CommandPatientFeed,
    Endpoints,
    Hl7v3PatientFeed,
    NoPatientFeed,
    PatientFeed,
    Runner,
    StepResult,
    StorePatientFeed,
    http_transport,
)

FEEDS_HELP = (
    "how test patients reach the system under test: "
    "'local' (default) adds them to this project's patient list, in the database of --config / XDS_* "
    "(a registry of this project on this machine); "
    "'command:CMD' runs CMD with the patient id as last argument (e.g. command:'xds patients add'); "
    "'hl7v3:URL' sends an ITI-44 Patient Identity Feed (PRPA_IN201301UV02) to URL; "
    "'none' feeds nothing (the system accepts any patient, or is fed by hand)"
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    conformance = subparsers.add_parser("conformance", help="run NIST XDS Toolkit testkit tests against an XDS.b system")
    commands = conformance.add_subparsers(dest="conformance_command", required=True)
    run = commands.add_parser(
        "run", help="run NIST tests (index.idx + testplan.xml) over SOAP",
        description="Runs NIST XDS Toolkit testkit tests the way the toolkit does (ebRIM 2.1 -> 3.0, test "
                    "patient, new uniqueIds, UUIDs, $var$ from earlier steps and tests) and checks every "
                    "expectation: ITI-42, ITI-41, ITI-18, ITI-43, and the options ITI-57, ITI-62, ITI-86 and "
                    "ITI-51. A step this runner cannot carry out is reported as skipped, saying why. Exit status "
                    "0 when no step fails (or only as the known-failures file allows), 1 otherwise, 2 on a usage "
                    "error.",
    )
    run.add_argument("tests", nargs="+", metavar="TESTDIR", type=Path,
                     help="a test folder, or a folder of tests (searched below)")
    run.add_argument("--registry", metavar="URL",
                     help="Document Registry endpoint (ITI-42, ITI-18, ITI-57, ITI-62, ITI-51)")
    run.add_argument("--repository", metavar="URL", help="Document Repository endpoint (ITI-41, ITI-43, ITI-86)")
    run.add_argument("--repository-uid", metavar="OID",
                     help="the repository's uniqueId, for tests that name it without reporting it ($repuid$)")
    run.add_argument("--patient-feed", default="local", metavar="FEED", help=FEEDS_HELP)
    run.add_argument("--patient-authority", default=NIST_AUTHORITY, metavar="OID",
                     help=f"assigning authority of the test patients (default {NIST_AUTHORITY})")
    run.add_argument("--source-id", default=DEFAULT_SOURCE_ID, metavar="OID",
                     help="the SubmissionSet sourceId to send")
    run.add_argument("--report", metavar="FILE", type=Path, help="write JUnit XML here")
    run.add_argument("--log-dir", metavar="DIR", type=Path,
                     help="write a log per step (request, response, verdict, reason) and summary.txt here")
    run.add_argument("--known-failures", metavar="FILE", type=Path,
                     help="steps allowed to fail (conformance/known-failures.txt); a listed step that passes "
                          "is an error, so the list only shrinks")
    run.add_argument("--no-wait", action="store_true", help="ignore the plans' <WaitBefore> pauses")
    run.add_argument("--timeout", type=float, default=60, metavar="SECONDS", help="per HTTP request (default 60)")
    run.add_argument("--quiet", action="store_true", help="no line per step while running")
    run.set_defaults(run=run_command)
    return conformance


def make_feed(spec: str, settings=None, timeout: float = 60) -> PatientFeed:
    """The patient feed a --patient-feed value names (ValueError for an unknown one)."""
    if spec == "none":
        return NoPatientFeed()
    if spec == "local":
        if settings is None:
            from xds import config

            settings = config.load()
        return StorePatientFeed(settings.database)
    kind, colon, rest = spec.partition(":")
    if colon and kind == "command" and rest.strip():
        return CommandPatientFeed(shlex.split(rest))
    if colon and kind == "hl7v3" and rest.strip():
        return Hl7v3PatientFeed(rest.strip(), http_transport(timeout))
    raise ValueError(f"--patient-feed {spec!r}: expected local, none, command:CMD or hl7v3:URL")


def run_command(args: argparse.Namespace, settings=None) -> int:
    if not args.registry and not args.repository:
        print("xds conformance run: give --registry URL and/or --repository URL", file=sys.stderr)
        return 2
    missing_dirs = [str(p) for p in args.tests if not p.exists()]
    if missing_dirs:
        print(f"xds conformance run: no such folder: {', '.join(missing_dirs)}", file=sys.stderr)
        return 2
    if settings is None:
        from xds import config

        settings = config.load()
    try:
        feed = make_feed(args.patient_feed, settings, args.timeout)
        known = read_known_failures(args.known_failures.read_text(encoding="utf-8")) if args.known_failures else None
        # An https system under test sees this node's certificate (tls_* settings), if it has one.
        context = tls.context_for(args.registry or args.repository, settings)
    except (OSError, ValueError) as exc:
        print(f"xds conformance run: {exc}", file=sys.stderr)
        return 2
    found = discover(args.tests)
    if not found.tests:
        print("xds conformance run: no test (a folder with index.idx) under " + ", ".join(map(str, args.tests)),
              file=sys.stderr)
        return 2
    if found.pulled_in:
        print(f"also running, because the given tests read from them: {', '.join(found.pulled_in)}")
    if found.missing:
        print(f"not found (steps reading from them will fail): {', '.join(found.missing)}")

    def progress(result: StepResult) -> None:
        if not args.quiet:
            outcome = verdict(result, known)
            reason = (f"  {result.reasons[0]}" if outcome == "FAIL" else f"  {result.skips[0]}" if outcome == "SKIP"
                      else "")
            print(f"{outcome:5} {result.name}{reason}", flush=True)

    runner = Runner(
        Endpoints(args.registry, args.repository, args.repository_uid),
        transport=http_transport(args.timeout, context), patient_feed=feed, source_id=args.source_id,
        patient_authority=args.patient_authority, wait=not args.no_wait, on_step=progress,
    )
    results = runner.run(found.tests)
    print()
    print(summary_table(results, known), end="")
    if args.log_dir:
        write_logs(args.log_dir, results, runner.logs, known)
        print(f"logs: {args.log_dir}")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_bytes(junit_xml(results, known))
        print(f"JUnit XML: {args.report}")
    if known is None:
        # A skipped step is the runner's gap, not the system's failure (the summary lists it).
        return 0 if all(r.passed or r.skipped for r in results) else 1
    comparison = compare(results, known)
    text = comparison_text(comparison, known)
    if text:
        print(text, end="")
    return 0 if comparison.ok else 1
