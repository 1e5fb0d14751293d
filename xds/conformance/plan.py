"""Reading NIST XDS Toolkit testkit tests: a test's index.idx and each section's testplan.xml,
into plain step objects.

Vocabulary, as the toolkit has it: a *test* (a folder such as 11990) holds *sections* (the
folders index.idx lists, run in that order); a section's testplan.xml holds *steps*
(<TestStep id=...>); a step holds one *transaction* (<RegisterTransaction>, ...) and what it
expects (<ExpectedStatus>, <ExpectedErrorCode>, <ExpectedContents>, <Assertions>). A step reads
values that earlier steps logged through <UseId> (a section of the toolkit's log:
AssignedUids, AssignedUuids, AssignedPatientId) and <UseReport> (a value a <Report> extracted).

What belongs here: the structure of the plans, with file names resolved to paths, and the
dependencies between tests. Parsing is pure (bytes in, objects out); `read_test` only reads
the files. What does not: running anything, rewriting metadata (`prepare`, `ebrim21`),
judging responses (`expect`).

Nothing is ignored in silence: an element this reader does not know is kept in
`Step.unsupported`, and the runner fails that step saying so, rather than passing a step whose
expectation it never checked.
"""

from __future__ import annotations

import os.path
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lxml import etree

from xds.transactions import BY_ACTION

# The transactions a step may hold, and the IHE transaction each one is.
TRANSACTIONS = {
    "RegisterTransaction": "ITI-42",
    "ProvideAndRegisterTransaction": "ITI-41",
    "StoredQueryTransaction": "ITI-18",
    "RetrieveTransaction": "ITI-43",
    "PatientIdentityFeedTransaction": "PIF",
    "HttpTransaction": "HTTP",
    "NullTransaction": "-",
}
# HttpTransaction's type attribute (the toolkit's short transaction names).
HTTP_TYPES = {"pr.b": "ITI-41", "r.b": "ITI-42", "sq.b": "ITI-18", "ret.b": "ITI-43"}

# The log sections a <UseId> may read.
USE_ID_SECTIONS = frozenset({"AssignedUids", "AssignedUuids", "AssignedPatientId"})
# The parts of a step a <Report> may read.
REPORT_SECTIONS = frozenset({"InputMetadata", "Result"})
# What a ExpectedStatus may say.
STATUSES = frozenset({"Success", "Failure", "PartialSuccess", "Fault"})

# ExpectedContents kinds: the ones that count objects (count="n"), and the named patterns.
COUNT_KINDS = frozenset({"ObjectRefs", "Documents", "SubmissionSets", "Folders", "Associations"})
PATTERN_KINDS = frozenset({
    "SSwithOneDoc", "SSwithOneDocOneFol", "SSwithTwoDocOneFol", "SSwithOneFol",
    "SSApproved", "DocApp", "DocDep", "None",
})

# Upstream index.idx files that leave out a section the test needs (conformance-data
# README, "Known oddities": "the upstream index.idx of 15816 leaves out its Retrieve section.
# Run that section after PnR"). test -> (section to add, the section it follows).
INDEX_ADDITIONS: dict[str, tuple[tuple[str, str], ...]] = {"15816": (("Retrieve", "PnR"),)}

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True,
                          remove_pis=True)


# --- the objects -----------------------------------------------------------------------------

@dataclass(frozen=True)
class UseId:
    """<UseId testdir= id= symbol= step= section=>: `symbol` takes the value the toolkit logged
    for object `id` in `section` (AssignedUids / AssignedUuids / AssignedPatientId) of `step`,
    in the section `testdir` names (relative to this section; this section when absent)."""

    id: str
    symbol: str
    step: str
    section: str
    testdir: str | None = None


@dataclass(frozen=True)
class UseReport:
    """<UseReport test= section= step= reportName= useAs=>: `use_as` takes the report value.
    `test` absent means this test; section "THIS" means this section."""

    report_name: str
    use_as: str
    section: str
    step: str
    test: str | None = None


@dataclass(frozen=True)
class Report:
    """<Report name= section=>xpath</Report>: a value taken from the request as sent
    (InputMetadata) or from the response (Result), for later steps."""

    name: str
    section: str
    xpath: str


@dataclass(frozen=True)
class ExpectedEntry:
    """One <DocumentEntry> of <DocumentEntries><MustOnlyInclude>: its id comes from a UseId."""

    use_id: UseId | None
    object_type: str | None


@dataclass(frozen=True)
class ContentCheck:
    """One child of <ExpectedContents>: a count (`count` set), a named pattern, or the
    DocumentEntries list (`entries`)."""

    kind: str
    count: int | None = None
    entries: tuple[ExpectedEntry, ...] = ()


@dataclass(frozen=True)
class Assertion:
    id: str
    xpath: str


@dataclass(frozen=True)
class DataRef:
    file: str
    as_: str


@dataclass(frozen=True)
class ReferenceDocument:
    """<ReferenceDocument uid="$x$">path</ReferenceDocument>: the bytes a retrieved document
    must have. The path is relative to the test's folder (e.g. "submit/my_document.pdf")."""

    uid: str
    path: Path


@dataclass(frozen=True)
class ReferenceMetadata:
    """<ReferenceMetadata testdir= step=>: the query result whose DocumentEntries describe the
    documents a retrieve returns."""

    step: str
    testdir: str | None = None


@dataclass(frozen=True)
class Transaction:
    kind: str                                   # the element name, a key of TRANSACTIONS
    xdsb: bool = False
    metadata_file: Path | None = None
    assign_uuids: bool = False
    no_patient_id: bool = False
    no_metadata: bool = False
    create_new_patient_id: bool = False
    no_assign_uids: tuple[str, ...] = ()
    use_ids: tuple[UseId, ...] = ()
    use_reports: tuple[UseReport, ...] = ()
    reports: tuple[Report, ...] = ()
    documents: tuple[tuple[str, Path], ...] = ()  # (<Document id>, file)
    expected_contents: tuple[ContentCheck, ...] | None = None
    assertions: tuple[Assertion, ...] = ()
    data_refs: tuple[DataRef, ...] = ()
    wait_before_ms: int = 0
    reference_documents: tuple[ReferenceDocument, ...] = ()
    reference_metadata: ReferenceMetadata | None = None
    headers: tuple[tuple[str, str], ...] = ()   # HttpTransaction <Headers>
    body_file: Path | None = None               # HttpTransaction <BodyFile>
    http_type: str | None = None                # HttpTransaction type=

    @property
    def iti(self) -> str:
        """The IHE transaction: ITI-42, ITI-18 ... (an HttpTransaction by its type or action)."""
        if self.kind == "HttpTransaction":
            if self.http_type in HTTP_TYPES:
                return HTTP_TYPES[self.http_type]
            action = _content_type_action(dict(self.headers).get("content-type", ""))
            transaction = BY_ACTION.get(action or "")
            return transaction.name if transaction else "HTTP"
        return TRANSACTIONS[self.kind]

    def all_use_ids(self) -> tuple[UseId, ...]:
        """The transaction's UseIds and those inside its ExpectedContents."""
        inner = tuple(e.use_id for c in self.expected_contents or () for e in c.entries if e.use_id)
        return self.use_ids + inner


@dataclass(frozen=True)
class Step:
    id: str
    transaction: Transaction | None
    expected_status: str | None = None
    expected_error_codes: tuple[str, ...] = ()
    expected_error_messages: tuple[str, ...] = ()
    alt_patient_id: bool = False                 # <AltPatientId/>: a patient the registry does not know
    new_patient_id: bool = False                 # <NewPatientId/>: the test moves to a new patient
    goals: tuple[str, ...] = ()
    unsupported: tuple[str, ...] = ()            # what this reader does not know: the step fails

    @property
    def iti(self) -> str:
        if self.transaction is not None:
            return self.transaction.iti
        return "NewPatientId" if self.new_patient_id else "-"


@dataclass(frozen=True)
class Section:
    name: str
    path: Path
    steps: tuple[Step, ...] = ()
    problems: tuple[str, ...] = ()  # the section could not be read: the runner fails it
    added: bool = False             # run although index.idx leaves it out (INDEX_ADDITIONS)


@dataclass(frozen=True)
class Test:
    name: str
    path: Path
    sections: tuple[Section, ...] = ()
    problems: tuple[str, ...] = ()

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)


# --- reading ---------------------------------------------------------------------------------

def read_index(text: str) -> list[str]:
    """The section names of an index.idx, in order (blank lines and stray spaces dropped:
    15817's upstream index.idx says "pif ")."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def read_test(path: Path) -> Test:
    """A test folder: index.idx and its sections' plans. A folder without index.idx but with
    a testplan.xml is a test of one section (the toolkit allows both)."""
    path = Path(path)
    index = path / "index.idx"
    if index.is_file():
        names = read_index(index.read_text(encoding="utf-8", errors="replace"))
    elif (path / "testplan.xml").is_file():
        return Test(path.name, path, (read_section(path, name=""),))
    else:
        return Test(path.name, path, problems=(f"{path}: neither index.idx nor testplan.xml",))
    added: set[str] = set()
    for extra, after in INDEX_ADDITIONS.get(path.name, ()):
        if extra not in names and (path / extra / "testplan.xml").is_file():
            position = names.index(after) + 1 if after in names else len(names)
            names.insert(position, extra)
            added.add(extra)
    sections = tuple(read_section(path / name, name=name, added=name in added) for name in names)
    return Test(path.name, path, sections)


def read_section(path: Path, *, name: str, added: bool = False) -> Section:
    plan = path / "testplan.xml"
    try:
        data = plan.read_bytes()
    except OSError as exc:
        return Section(name, path, problems=(f"cannot read {plan}: {exc.strerror or exc}",), added=added)
    try:
        steps = parse_testplan(data, section_dir=path, test_dir=path.parent if name else path)
    except ValueError as exc:
        return Section(name, path, problems=(f"{plan}: {exc}",), added=added)
    return Section(name, path, tuple(steps), added=added)


def parse_testplan(data: bytes, *, section_dir: Path, test_dir: Path) -> list[Step]:
    """The steps of a testplan.xml. File names are resolved against the section's folder
    (ReferenceDocument: against the test's folder, as the plans write them)."""
    try:
        # Some upstream plans start with blank lines before the XML declaration.
        root = etree.fromstring(data.lstrip(), _PARSER)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"not well-formed XML: {exc}") from None
    if root.tag != "TestPlan":
        raise ValueError(f"the root element is <{root.tag}>, not <TestPlan>")
    steps = []
    for child in _elements(root):
        if child.tag == "TestStep":
            steps.append(_step(child, section_dir, test_dir))
        elif child.tag not in ("Test", "Rule", "Goal"):
            # An unknown plan-level element could change every step: the section fails.
            raise ValueError(f"<TestPlan> holds <{child.tag}>, which this runner does not know")
    if not steps:
        raise ValueError("the plan has no <TestStep>")
    return steps


def _step(element: etree._Element, section_dir: Path, test_dir: Path) -> Step:
    step_id = element.get("id") or ""
    unsupported: list[str] = []
    transaction: Transaction | None = None
    status: str | None = None
    codes: list[str] = []
    messages: list[str] = []
    goals: list[str] = []
    alt = new = False
    for child in _elements(element):
        tag = child.tag
        if tag in TRANSACTIONS:
            if transaction is not None:
                unsupported.append(f"a second transaction <{tag}> in one step")
                continue
            transaction, problems = _transaction(child, section_dir, test_dir)
            unsupported += problems
            # ExpectedStatus may sit inside the transaction in some toolkit plans.
            inner_status = child.findtext("ExpectedStatus")
            if inner_status is not None and status is None:
                status = inner_status.strip()
        elif tag == "ExpectedStatus":
            status = _text(child)
        elif tag == "ExpectedErrorCode":
            codes.append(_text(child))
        elif tag == "ExpectedErrorMessage":
            messages.append(_text(child))
        elif tag == "AltPatientId":
            alt = True
        elif tag == "NewPatientId":
            new = True
        elif tag == "Goal":
            goals.append(" ".join(_text(child).split()))
        elif tag == "Rule":
            pass  # documentation of the step
        else:
            unsupported.append(f"<{tag}> in <TestStep>")
    if status is not None and status not in STATUSES:
        unsupported.append(f"ExpectedStatus {status!r} (known: {', '.join(sorted(STATUSES))})")
    if transaction is None and not new:
        unsupported.append("a step without a transaction")
    return Step(step_id, transaction, status, tuple(codes), tuple(messages), alt, new, tuple(goals),
                tuple(unsupported))


def _transaction(element: etree._Element, section_dir: Path, test_dir: Path) -> tuple[Transaction, list[str]]:
    kind = element.tag
    values: dict = {}
    problems: list[str] = []
    use_ids: list[UseId] = []
    use_reports: list[UseReport] = []
    reports: list[Report] = []
    documents: list[tuple[str, Path]] = []
    no_assign: list[str] = []
    references: list[ReferenceDocument] = []
    for child in _elements(element):
        tag = child.tag
        if tag == "XDSb":
            values["xdsb"] = True
        elif tag == "MetadataFile":
            values["metadata_file"] = section_dir / _text(child)
        elif tag == "AssignUuids":
            values["assign_uuids"] = True
        elif tag == "NoPatientId":
            values["no_patient_id"] = True
        elif tag == "NoMetadata":
            values["no_metadata"] = True
        elif tag == "CreateNewPatientId":
            values["create_new_patient_id"] = True
        elif tag == "NoAssignUids":
            no_assign.append(child.get("id", ""))
        elif tag == "UseId":
            use_id, problem = _use_id(child)
            use_ids.append(use_id)
            problems += problem
        elif tag == "UseReport":
            use_reports.append(UseReport(
                report_name=child.get("reportName", ""), use_as=child.get("useAs", ""),
                section=child.get("section", ""), step=child.get("step", ""), test=child.get("test"),
            ))
        elif tag == "Report":
            report = Report(child.get("name", ""), child.get("section", ""), " ".join(_text(child).split()))
            if report.section not in REPORT_SECTIONS:
                problems.append(f"<Report section={report.section!r}> (known: InputMetadata, Result)")
            reports.append(report)
        elif tag == "Document":
            documents.append((child.get("id", ""), section_dir / _text(child)))
        elif tag == "ExpectedContents":
            checks, problem = _expected_contents(child)
            values["expected_contents"] = checks
            problems += problem
        elif tag == "Assertions":
            asserts, refs, problem = _assertions(child)
            values["assertions"], values["data_refs"] = asserts, refs
            problems += problem
        elif tag == "WaitBefore":
            try:
                values["wait_before_ms"] = int(_text(child))
            except ValueError:
                problems.append(f"<WaitBefore> {_text(child)!r} is not a number of milliseconds")
        elif tag == "ReferenceDocument":
            references.append(ReferenceDocument(child.get("uid", ""), test_dir / _text(child)))
        elif tag == "ReferenceMetadata":
            values["reference_metadata"] = ReferenceMetadata(child.get("step", ""), child.get("testdir"))
        elif tag == "Headers":
            values["headers"] = tuple(_headers(_text(child)))
        elif tag == "BodyFile":
            values["body_file"] = section_dir / _text(child)
        elif tag == "ExpectedStatus":
            pass  # read by _step
        else:
            problems.append(f"<{tag}> in <{kind}>")
    if kind == "HttpTransaction":
        values["http_type"] = element.get("type")
    transaction = Transaction(
        kind=kind, use_ids=tuple(use_ids), use_reports=tuple(use_reports), reports=tuple(reports),
        documents=tuple(documents), no_assign_uids=tuple(no_assign),
        reference_documents=tuple(references), **values,
    )
    needs_file = kind in ("RegisterTransaction", "ProvideAndRegisterTransaction", "StoredQueryTransaction",
                          "RetrieveTransaction")
    if needs_file and transaction.metadata_file is None:
        problems.append(f"<{kind}> without <MetadataFile>")
    if kind == "HttpTransaction" and (transaction.body_file is None or "content-type" not in dict(transaction.headers)):
        problems.append("<HttpTransaction> needs <BodyFile> and a Content-Type in <Headers>")
    return transaction, problems


def _use_id(element: etree._Element) -> tuple[UseId, list[str]]:
    use_id = UseId(id=element.get("id", ""), symbol=element.get("symbol", ""), step=element.get("step", ""),
                   section=element.get("section", ""), testdir=element.get("testdir"))
    problems = []
    if use_id.section not in USE_ID_SECTIONS:
        problems.append(f"<UseId section={use_id.section!r}> (known: {', '.join(sorted(USE_ID_SECTIONS))})")
    return use_id, problems


def _expected_contents(element: etree._Element) -> tuple[tuple[ContentCheck, ...], list[str]]:
    checks: list[ContentCheck] = []
    problems: list[str] = []
    for child in _elements(element):
        kind = child.tag
        if kind in COUNT_KINDS:
            try:
                checks.append(ContentCheck(kind, count=int(child.get("count", ""))))
            except ValueError:
                problems.append(f"<ExpectedContents><{kind}> without a numeric count")
        elif kind in PATTERN_KINDS:
            checks.append(ContentCheck(kind))
        elif kind == "DocumentEntries":
            entries, problem = _document_entries(child)
            checks.append(ContentCheck(kind, entries=entries))
            problems += problem
        else:
            problems.append(f"ExpectedContents kind <{kind}>")
    return tuple(checks), problems


def _document_entries(element: etree._Element) -> tuple[tuple[ExpectedEntry, ...], list[str]]:
    entries: list[ExpectedEntry] = []
    problems: list[str] = []
    for child in _elements(element):
        if child.tag != "MustOnlyInclude":
            problems.append(f"<DocumentEntries><{child.tag}>")
            continue
        for entry in _elements(child):
            if entry.tag != "DocumentEntry":
                problems.append(f"<MustOnlyInclude><{entry.tag}>")
                continue
            use_id = None
            object_type = None
            for part in _elements(entry):
                if part.tag == "UseId":
                    use_id, problem = _use_id(part)
                    problems += problem
                elif part.tag == "DocumentEntryType":
                    object_type = _text(part)
                else:
                    problems.append(f"<DocumentEntry><{part.tag}>")
            if use_id is None:
                problems.append("<DocumentEntry> without <UseId>")
            entries.append(ExpectedEntry(use_id, object_type))
    return tuple(entries), problems


def _assertions(element: etree._Element) -> tuple[tuple[Assertion, ...], tuple[DataRef, ...], list[str]]:
    asserts: list[Assertion] = []
    refs: list[DataRef] = []
    problems: list[str] = []
    for child in _elements(element):
        if child.tag == "Assert":
            asserts.append(Assertion(child.get("id", ""), " ".join(_text(child).split())))
        elif child.tag == "DataRef":
            refs.append(DataRef(child.get("file", ""), child.get("as", "")))
        else:
            problems.append(f"<Assertions><{child.tag}>")
    return tuple(asserts), tuple(refs), problems


def _headers(text: str) -> Iterable[tuple[str, str]]:
    """`Name: value` lines; names lower-cased (HTTP header names are case-insensitive)."""
    for line in text.splitlines():
        name, colon, value = line.strip().partition(":")
        if colon and name.strip():
            yield name.strip().lower(), value.strip()


def _content_type_action(content_type: str) -> str | None:
    for part in content_type.split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "action":
            return value.strip().strip('"')
    return None


def _elements(element: etree._Element) -> Iterable[etree._Element]:
    return (child for child in element if isinstance(child.tag, str))


def _text(element: etree._Element) -> str:
    return (element.text or "").strip()


# --- references between tests ----------------------------------------------------------------

def resolve_testdir(test: str, section: str, testdir: str | None) -> tuple[str, str]:
    """(test, section) a `testdir` names, seen from section `section` of test `test`:
    "../submit" is section submit of the same test, "../../12346/single_doc" section
    single_doc of test 12346. Absent: this section. Names only; no file is looked at, so a
    test may live in any folder of the run."""
    if not testdir:
        return test, section
    here = PurePosixPath("/", "tests", test, section) if section else PurePosixPath("/", "tests", test)
    target = PurePosixPath(os.path.normpath(str(here / testdir.replace("\\", "/"))))
    if section:
        return target.parent.name, target.name
    return target.name, ""


def dependencies(test: Test) -> list[str]:
    """The other tests whose logs this test reads (UseReport test=, UseId testdir=,
    ReferenceMetadata testdir=), in the order first met."""
    found: dict[str, None] = {}
    for section in test.sections:
        for step in section.steps:
            transaction = step.transaction
            if transaction is None:
                continue
            names = [r.test for r in transaction.use_reports if r.test]
            names += [resolve_testdir(test.name, section.name, u.testdir)[0] for u in transaction.all_use_ids()]
            if transaction.reference_metadata is not None:
                names.append(resolve_testdir(test.name, section.name, transaction.reference_metadata.testdir)[0])
            for name in names:
                if name and name != test.name:
                    found.setdefault(name)
    return list(found)


def order_tests(tests: Sequence[Test]) -> list[Test]:
    """The tests with every test after the tests it reads from (a stable topological order:
    otherwise the given order). A cycle, which no upstream test has, keeps the given order."""
    by_name = {t.name: t for t in tests}
    ordered: list[Test] = []
    state: dict[str, str] = {}

    def visit(test: Test) -> None:
        if state.get(test.name) is not None:
            return
        state[test.name] = "visiting"
        for name in dependencies(test):
            dependency = by_name.get(name)
            if dependency is not None and state.get(name) is None:
                visit(dependency)
        state[test.name] = "done"
        ordered.append(test)

    for test in tests:
        visit(test)
    return ordered


@dataclass
class Discovery:
    tests: list[Test] = field(default_factory=list)
    pulled_in: list[str] = field(default_factory=list)   # dependencies found beside the given tests
    missing: list[str] = field(default_factory=list)     # dependencies found nowhere


def find_test_dirs(path: Path) -> list[Path]:
    """The test folders at or under `path`: a folder with index.idx is a test (its section
    folders are not searched); so is a folder with testplan.xml whose parent is no test."""
    path = Path(path)
    if (path / "index.idx").is_file():
        return [path]
    if (path / "testplan.xml").is_file():
        return [path]
    found: list[Path] = []
    if path.is_dir():
        for child in sorted(p for p in path.iterdir() if p.is_dir()):
            found += find_test_dirs(child)
    return found


def discover(paths: Sequence[Path]) -> Discovery:
    """The tests under `paths`, plus the tests they read from that were not given (looked for
    beside each given test, then in the sibling transaction folders: 12346 is in iti-18/nist
    and 15817 in iti-42/nist), in running order."""
    result = Discovery()
    dirs: list[Path] = []
    for path in paths:
        for found in find_test_dirs(Path(path)):
            if found.resolve() not in {d.resolve() for d in dirs}:
                dirs.append(found)
    tests = [read_test(d) for d in dirs]
    names = {t.name for t in tests}
    queue = list(tests)
    while queue:
        test = queue.pop(0)
        for name in dependencies(test):
            if name in names:
                continue
            where = _look_beside(test.path, name)
            names.add(name)
            if where is None:
                result.missing.append(name)
                continue
            extra = read_test(where)
            tests.append(extra)
            queue.append(extra)
            result.pulled_in.append(name)
    result.tests = order_tests(tests)
    return result


def _look_beside(test_dir: Path, name: str) -> Path | None:
    beside = test_dir.parent / name
    if (beside / "index.idx").is_file():
        return beside
    # <root>/iti-18/nist/12346 seen from <root>/iti-42/nist/11990: same folder name, other parent.
    grand = test_dir.parent.parent
    for candidate in sorted(grand.parent.glob(f"*/{test_dir.parent.name}/{name}")):
        if (candidate / "index.idx").is_file():
            return candidate
    return None
