"""What a conformance run leaves behind: the summary table, JUnit XML, a log per step, and the
comparison with the known-failures list.

The known-failures file (conformance/known-failures.txt) lists the steps that are allowed to
fail, each with the reason and the IHE text that backs it. An entry is one or more step lines
(`test/section/step`, not indented) followed by indented `reason:` and `ihe:` lines; several
steps with one reason share a block:

    # comment
    11990/eval/by_uid
    11990/eval/verify_availabilityStatus
        reason: not implemented yet: ITI-18 Registry Stored Query
        ihe: ITI TF-2a 3.18: the Document Registry shall support Registry Stored Query

The list only shrinks: a listed step that passes is an error too (`Comparison.fixed`), so the
entry gets removed.

Verdicts: PASS, FAIL, KNOWN (a listed failure), FIXED (listed, but passes) and SKIP (the runner
could not carry out or check the step: a gap of the runner, never a failure of the system; JUnit
<skipped> with the reason, the summary says why). A listed step that is skipped is "not run":
the list cannot be checked for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from xds.conformance.runner import Exchange, StepLog, StepResult, step_log_element

# --- known failures --------------------------------------------------------------------------

@dataclass(frozen=True)
class KnownFailure:
    step: str       # test/section/step
    reason: str
    ihe: str


def read_known_failures(text: str) -> dict[str, KnownFailure]:
    """Parse the known-failures format (see the module's doc). Raises ValueError on an entry
    without a reason or without its IHE text, or on a step listed twice."""
    entries: dict[str, KnownFailure] = {}
    steps: list[str] = []
    fields: dict[str, list[str]] = {}
    last_key: str | None = None

    def close(line_number: int) -> None:
        if not steps:
            return
        reason = " ".join(fields.get("reason", []))
        ihe = " ".join(fields.get("ihe", []))
        if not reason or not ihe:
            raise ValueError(f"known failures, entry ending at line {line_number} ({steps[0]}): "
                             "needs both a 'reason:' and an 'ihe:' line")
        for step in steps:
            if step in entries:
                raise ValueError(f"known failures: {step} is listed twice")
            entries[step] = KnownFailure(step, reason, ihe)

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            if fields:  # a step line after the fields of the previous entry: a new entry
                close(number - 1)
                steps, fields, last_key = [], {}, None
            if line.count("/") != 2:
                raise ValueError(f"known failures, line {number}: {line!r} is not test/section/step")
            steps.append(line.strip())
            continue
        key, colon, value = line.strip().partition(":")
        if colon and key in ("reason", "ihe"):
            fields.setdefault(key, []).append(value.strip())
            last_key = key
        elif last_key is not None:  # a continuation of the previous field
            fields[last_key].append(line.strip())
        else:
            raise ValueError(f"known failures, line {number}: expected 'reason:' or 'ihe:', got {line.strip()!r}")
    close(len(text.splitlines()))
    return entries


@dataclass
class Comparison:
    """A run against the known-failures list."""

    new_failures: list[StepResult] = field(default_factory=list)  # failed, not listed
    known: list[StepResult] = field(default_factory=list)         # failed, listed
    fixed: list[StepResult] = field(default_factory=list)         # listed, but passed: shrink the list
    not_run: list[str] = field(default_factory=list)              # listed, not in this run (or skipped)
    skipped: list[StepResult] = field(default_factory=list)       # the runner could not carry them out

    @property
    def ok(self) -> bool:
        return not self.new_failures and not self.fixed


def compare(results: Sequence[StepResult], known: Mapping[str, KnownFailure]) -> Comparison:
    comparison = Comparison()
    seen = set()
    for result in results:
        listed = result.name in known
        if result.skipped:
            comparison.skipped.append(result)
            continue
        seen.add(result.name)
        if result.passed and listed:
            comparison.fixed.append(result)
        elif not result.passed:
            (comparison.known if listed else comparison.new_failures).append(result)
    comparison.not_run = sorted(set(known) - seen)
    return comparison


def verdict(result: StepResult, known: Mapping[str, KnownFailure] | None = None) -> str:
    """PASS, FAIL, KNOWN (a listed failure), FIXED (listed, but passes) or SKIP."""
    if result.skipped:
        return "SKIP"
    listed = known is not None and result.name in known
    if result.passed:
        return "FIXED" if listed else "PASS"
    return "KNOWN" if listed else "FAIL"


# --- tables ----------------------------------------------------------------------------------

def summary_table(results: Sequence[StepResult], known: Mapping[str, KnownFailure] | None = None,
                  width: int = 110) -> str:
    """One line per step: test/section/step, transaction, verdict, first reason; then totals."""
    rows = [("step", "transaction", "result", "reason")]
    for r in results:
        reason = r.reasons[0] if r.reasons else ""
        if verdict(r, known) == "KNOWN":
            reason = f"known: {known[r.name].reason}"  # type: ignore[index]
        elif verdict(r, known) == "FIXED":
            reason = "passes now: remove it from the known failures"
        elif verdict(r, known) == "SKIP":
            reason = f"skipped: {r.skips[0]}"
        more = len(r.reasons) - 1 if r.reasons else len(r.skips) - 1 if r.skipped else 0
        if more > 0:
            reason += f" (+{more} more)"
        rows.append((r.name, r.iti, verdict(r, known), _cut(reason, width)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}".rstrip() for a, b, c, d in rows]
    lines.insert(1, "-" * min(sum(widths) + 6 + 10, 160))
    counts = _counts(results, known)
    lines.append("")
    lines.append(", ".join(f"{n} {name}" for name, n in counts.items() if n) + f" of {len(results)} steps")
    return "\n".join(lines) + "\n"


def conformance_table(results: Sequence[StepResult], known: Mapping[str, KnownFailure] | None = None) -> str:
    """The README's table, one row per test: test, transaction(s), result."""
    order: dict[str, list[StepResult]] = {}
    for r in results:
        order.setdefault(r.test, []).append(r)
    lines = ["| test | transaction | result |", "| --- | --- | --- |"]
    for test, steps in order.items():
        transactions = ", ".join(dict.fromkeys(s.iti for s in steps if s.iti not in ("-",)))
        passed = sum(s.passed for s in steps)
        known_count = sum(1 for s in steps if verdict(s, known) == "KNOWN")
        skipped = sum(1 for s in steps if s.skipped)
        if passed == len(steps):
            result = "pass"
        elif passed + known_count + skipped == len(steps) and known_count:
            result = f"known failures ({passed} of {len(steps)} steps pass)"
        elif passed + skipped == len(steps):
            result = f"skipped ({skipped} of {len(steps)} steps not run)"
        else:
            result = f"FAIL ({passed} of {len(steps)} steps pass)"
        if skipped and not result.startswith("skipped"):
            result += f", {skipped} skipped"
        lines.append(f"| {test} | {transactions or '-'} | {result} |")
    return "\n".join(lines) + "\n"


def _counts(results: Sequence[StepResult], known: Mapping[str, KnownFailure] | None) -> dict[str, int]:
    counts = {"passed": 0, "failed": 0, "known failures": 0, "fixed (listed but pass)": 0, "skipped": 0}
    names = {"PASS": "passed", "FAIL": "failed", "KNOWN": "known failures", "FIXED": "fixed (listed but pass)",
             "SKIP": "skipped"}
    for r in results:
        counts[names[verdict(r, known)]] += 1
    return counts


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --- JUnit XML -------------------------------------------------------------------------------

def junit_xml(results: Sequence[StepResult], known: Mapping[str, KnownFailure] | None = None) -> bytes:
    """JUnit XML: a testsuite per test, a testcase per step (classname test.section). A known
    failure is <skipped> with its reason (visible, not red); a listed step that passes is a
    <failure> telling to shrink the list."""
    root = etree.Element("testsuites", name="NIST XDS Toolkit tests")
    suites: dict[str, etree._Element] = {}
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for r in results:
        suite = suites.get(r.test)
        if suite is None:
            suite = suites[r.test] = etree.SubElement(root, "testsuite", name=r.test)
            suite.attrib.update({"tests": "0", "failures": "0", "skipped": "0", "time": "0"})
        case = etree.SubElement(suite, "testcase", classname=f"{r.test}.{r.section}", name=r.step,
                                time=f"{r.seconds:.3f}")
        outcome = verdict(r, known)
        suite.set("tests", str(int(suite.get("tests")) + 1))
        suite.set("time", f"{float(suite.get('time')) + r.seconds:.3f}")
        totals["tests"] += 1
        if outcome == "FAIL":
            failure = etree.SubElement(case, "failure", message=_cut(r.reasons[0], 500), type=r.iti)
            failure.text = "\n".join(r.reasons)
            suite.set("failures", str(int(suite.get("failures")) + 1))
            totals["failures"] += 1
        elif outcome == "FIXED":
            failure = etree.SubElement(case, "failure", type="known-failure-fixed",
                                       message="listed in known-failures.txt but passes: remove the entry")
            failure.text = known[r.name].reason  # type: ignore[index]
            suite.set("failures", str(int(suite.get("failures")) + 1))
            totals["failures"] += 1
        elif outcome == "KNOWN":
            entry = known[r.name]  # type: ignore[index]
            skipped = etree.SubElement(case, "skipped", message=_cut(f"known failure: {entry.reason}", 500))
            skipped.text = f"{entry.reason}\nIHE: {entry.ihe}\n\nfailure:\n" + "\n".join(r.reasons)
            suite.set("skipped", str(int(suite.get("skipped")) + 1))
            totals["skipped"] += 1
        elif outcome == "SKIP":
            skipped = etree.SubElement(case, "skipped", message=_cut(f"not run by this runner: {r.skips[0]}", 500))
            skipped.text = "\n".join(r.skips)
            suite.set("skipped", str(int(suite.get("skipped")) + 1))
            totals["skipped"] += 1
        if r.notes:
            etree.SubElement(case, "system-out").text = "\n".join(r.notes)
    root.attrib.update({k: str(v) for k, v in totals.items()})
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


# --- per-step logs ---------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def step_log_text(result: StepResult, known: Mapping[str, KnownFailure] | None = None) -> str:
    """A step's log: verdict, reasons, notes, then each request and response as sent."""
    lines = [f"step: {result.name}", f"transaction: {result.iti}", f"result: {verdict(result, known)}",
             f"seconds: {result.seconds:.3f}"]
    for goal in result.goals:
        lines.append(f"goal: {goal}")
    if known is not None and result.name in known:
        lines += [f"known failure: {known[result.name].reason}", f"IHE: {known[result.name].ihe}"]
    lines += [f"reason: {reason}" for reason in result.reasons]
    lines += [f"skipped: {skip}" for skip in result.skips]
    lines += [f"note: {note}" for note in result.notes]
    for number, exchange in enumerate(result.exchanges, 1):
        lines += ["", *_exchange_text(number, exchange)]
    return "\n".join(lines) + "\n"


def _exchange_text(number: int, exchange: Exchange) -> list[str]:
    lines = [f"=== {number}. request: POST {exchange.url}", f"action: {exchange.action}",
             f"Content-Type: {exchange.request_content_type}", "", _shown(exchange.request)]
    if exchange.error:
        lines += [f"=== {number}. no response: {exchange.error}"]
    else:
        lines += [f"=== {number}. response: HTTP {exchange.status}",
                  f"Content-Type: {exchange.response_content_type}", "", _shown(exchange.response)]
    return lines


def _shown(data: bytes, limit: int = 200_000) -> str:
    """Bodies as text; binary MTOM parts stay readable enough, and huge ones are cut."""
    text = data[:limit].decode("utf-8", errors="replace")
    return text + (f"\n[... {len(data) - limit} more bytes]" if len(data) > limit else "")


def write_logs(directory: Path, results: Sequence[StepResult], logs: Mapping[tuple[str, str, str], StepLog],
               known: Mapping[str, KnownFailure] | None = None) -> None:
    """<dir>/<test>/<section>/<step>.log (verdict, reason, request, response), the toolkit-shaped
    <dir>/<test>/<section>/log.xml, and <dir>/summary.txt."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sections: dict[tuple[str, str], list[StepLog]] = {}
    for key, log in logs.items():
        sections.setdefault((key[0], key[1]), []).append(log)
    for result in results:
        folder = directory / _safe(result.test) / _safe(result.section or "_")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{_safe(result.step)}.log").write_text(step_log_text(result, known), encoding="utf-8")
    for (test, section), step_logs in sections.items():
        root = etree.Element("TestResults", test=test, section=section)
        for log in step_logs:
            root.append(step_log_element(log))
        folder = directory / _safe(test) / _safe(section or "_")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "log.xml").write_bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8",
                                                        pretty_print=True))
    (directory / "summary.txt").write_text(summary_table(results, known), encoding="utf-8")


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name) or "_"


def comparison_text(comparison: Comparison, known: Mapping[str, KnownFailure]) -> str:
    """What to do after a run compared with the known failures, for people."""
    lines: list[str] = []
    if comparison.new_failures:
        lines.append(f"{len(comparison.new_failures)} step(s) failed that are not in the known failures:")
        lines += [f"  {r.name}: {r.reasons[0] if r.reasons else ''}" for r in comparison.new_failures]
    if comparison.fixed:
        lines.append(f"{len(comparison.fixed)} step(s) in the known failures pass now: remove them from the list:")
        lines += [f"  {r.name}" for r in comparison.fixed]
    if comparison.not_run:
        lines.append(f"{len(comparison.not_run)} listed step(s) were not run: " + ", ".join(comparison.not_run))
    if comparison.skipped:
        lines.append(f"{len(comparison.skipped)} step(s) skipped (the runner could not carry them out):")
        lines += [f"  {r.name}: {r.skips[0]}" for r in comparison.skipped]
    return "\n".join(lines) + ("\n" if lines else "")


def results_by_test(results: Iterable[StepResult]) -> dict[str, list[StepResult]]:
    grouped: dict[str, list[StepResult]] = {}
    for r in results:
        grouped.setdefault(r.test, []).append(r)
    return grouped
