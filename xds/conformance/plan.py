"""Reading NIST XDS Toolkit testkit tests: a test's index.idx and each section's testplan.xml,
into plain step objects.

Vocabulary, as the toolkit has it: a *test* (a folder such as 11990) holds *sections* (the
folders index.idx lists, run in that order); a section's testplan.xml holds *steps*
(<TestStep id=...>); a step holds one *transaction* (<RegisterTransaction>, ...) and what it
expects (<ExpectedStatus>, <ExpectedErrorCode>, <ExpectedContents>, <Assertions>). A step reads
values that earlier steps logged through <UseId> (a section of the toolkit's log:
AssignedUids, AssignedUuids, AssignedPatientId, AssignedSourceId), <UseReport> (a value a
<Report> extracted), <UseXPath>, <UseObjectRef> and <UseRepositoryUniqueId> (read from an earlier
step's log).

The vocabulary below is the toolkit test engine's (usnistgov/iheos-toolkit2: StepContext picks
the transaction by element name, BasicTransaction.parseBasicInstruction and each transaction's
parseInstruction read its children, Validator.run_test_assertion knows the ExpectedContents
kinds), kept as tables: a plan element is either one this runner carries out, one the toolkit
itself ignores (kept as a note), or one for an actor this runner does not test.

What belongs here: the structure of the plans, with file names resolved to paths, and the
dependencies between tests. Parsing is pure (bytes in, objects out); `read_test` only reads
the files. What does not: running anything, rewriting metadata (`prepare`, `ebrim21`),
judging responses (`expect`).

Nothing is ignored in silence. An element this runner cannot carry out goes into
`Step.unsupported`: the runner does not send that step and reports it as skipped (a gap of the
runner, never a failure of the system under test). An expectation it cannot check (an
ExpectedContents kind or an assertion data source it does not know) goes into
`Transaction.unchecked`: the step runs, and is reported as skipped if nothing else failed.
"""

from __future__ import annotations

import os.path
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lxml import etree

from xds.transactions import BY_ACTION

# The transactions this runner carries out, and the IHE transaction each one is (the row of
# xds.transactions it takes its action from; PIF, HTTP and "-" are the runner's own).
TRANSACTIONS = {
    "RegisterTransaction": "ITI-42",
    "MuTransaction": "ITI-57",                 # Update Document Set (Metadata Update)
    "RegisterODDETransaction": "ITI-61",       # Register On-Demand Document Entry
    "ProvideAndRegisterTransaction": "ITI-41",
    "StoredQueryTransaction": "ITI-18",
    "MPQTransaction": "ITI-51",                # Multi-Patient Stored Query
    "RetrieveTransaction": "ITI-43",
    "RemoveMetadataTransaction": "ITI-62",     # Delete Document Set
    "RdTransaction": "ITI-86",                 # Remove Documents
    "PatientIdentityFeedTransaction": "PIF",
    "HttpTransaction": "HTTP",
    "NullTransaction": "-",
}
# The toolkit's other transactions: they test actors other than a Document Registry and
# Repository (gateways, recipients, imaging, FHIR, the toolkit's own simulators). A step that
# holds one is skipped, saying which actor it is for.
OTHER_TRANSACTIONS = {
    "XCQTransaction": "ITI-38 Cross Gateway Query (a Responding Gateway)",
    "XCRTransaction": "ITI-39 Cross Gateway Retrieve (a Responding Gateway)",
    "IGQTransaction": "ITI-18 to an Initiating Gateway",
    "IGRTransaction": "ITI-43 to an Initiating Gateway",
    "XCAIGStoredQueryTransaction": "ITI-18 to an Initiating Gateway",
    "XCAIGRetrieveTransaction": "ITI-43 to an Initiating Gateway",
    "XDRProvideAndRegisterTransaction": "ITI-41 to a Document Recipient (XDR)",
    "XcpdTransaction": "ITI-55 Cross Gateway Patient Discovery",
    "DsubSubscribeTransaction": "ITI-52 Document Metadata Subscribe (DSUB)",
    "PublishTransaction": "ITI-54 Document Metadata Publish (DSUB)",
    "PatientMoveTransaction": "a patient move in the toolkit's own simulators",
    "EpsosTransaction": "epSOS",
    "GenericSoap11Transaction": "a raw SOAP 1.1 message (XDS.b is SOAP 1.2)",
    "SimpleTransaction": "the toolkit's own simulators",
    "MockTransaction": "the toolkit's own simulators",
    "SqlQueryTransaction": "the toolkit's own database",
    "Gather": "a question to the toolkit's operator",
    "EchoV2Transaction": "an HL7v2 echo to the toolkit",
    "EchoV3Transaction": "an HL7v3 echo to the toolkit",
    "SocketTransaction": "a raw socket to the toolkit",
    "ImagingDocSetRetrieveTransaction": "RAD-69 Retrieve Imaging Document Set",
    "ImagingDocSetIigRetrieveTransaction": "RAD-69 to an Initiating Imaging Gateway",
    "ImagingDocSetRigRetrieveTransaction": "RAD-75 Cross Gateway Retrieve Imaging Document Set",
    "ImgDetailTransaction": "imaging document checks",
    "XmlDetailTransaction": "imaging document checks",
    "WADOTransaction": "WADO retrieve (imaging)",
    "FhirCreateTransaction": "FHIR",
    "FhirCreatePatientTransaction": "FHIR",
    "FhirReadTransaction": "FHIR",
    "FhirSearchTransaction": "FHIR",
    "ProvideDocumentBundleTransaction": "ITI-65 Provide Document Bundle (MHD)",
    "MhdClientTransaction": "MHD",
    "StsTransaction": "a Security Token Service (XUA)",
    "EdgeServerTransaction": "an RSNA image sharing edge server",
}
# HttpTransaction's type attribute (the toolkit's short transaction names).
HTTP_TYPES = {"pr.b": "ITI-41", "r.b": "ITI-42", "sq.b": "ITI-18", "ret.b": "ITI-43", "rm": "ITI-62",
              "rd": "ITI-86", "update": "ITI-57", "mpq": "ITI-51"}

# Children of <TestStep> beside its transaction. RegistryEndpoint: the run's endpoints win (a
# plan's hard-wired endpoint is the toolkit's host); Standard, Rule, Goal: documentation.
STEP_ELEMENTS = frozenset({
    "ExpectedStatus", "ExpectedErrorCode", "ExpectedErrorMessage", "AltPatientId", "NewPatientId",
    "Goal", "Rule", "Standard", "RegistryEndpoint",
})
# Instructions the toolkit reads and then does nothing with, or only logs: kept as notes.
IGNORED_INSTRUCTIONS = {
    "InteractionSequence": "documentation of the toolkit's interaction diagrams",
    "WSSECHeader": "the toolkit adds no header for it either",
    "SOAP12": "SOAP 1.2 is what this runner sends",
    "NoConvert": "the metadata is sent as the template has it after the rewrites",
}
# Instructions that ask for what this runner does not send: the step is skipped.
UNSENDABLE_INSTRUCTIONS = {
    "XDSa": "XDS.a (ebXML 2.1 over SOAP 1.1), which this runner does not send",
    "SOAP11": "SOAP 1.1, which this runner does not send (XDS.b is SOAP 1.2)",
    "ASync": "asynchronous WS-Addressing (a ReplyTo endpoint), which this runner does not offer",
    "URI": "an XDS.a retrieve by URI",
    "URIRef": "an XDS.a retrieve by URI",
    "Target": "a toolkit simulator as the target",
}

# What a <Report> may read: a part of the step's log (the toolkit's instruction output).
REPORT_SECTIONS = frozenset({
    "InputMetadata", "Result", "AssignedUids", "AssignedUuids", "AssignedPatientId", "AssignedSourceId",
})
# The log sections a <UseId> may read (each a list of <Assign symbol= id=>).
USE_ID_SECTIONS = frozenset({"AssignedUids", "AssignedUuids", "AssignedPatientId", "AssignedSourceId"})
# What an ExpectedStatus may say (the toolkit takes a comma-separated list of them).
STATUSES = frozenset({"Success", "Failure", "PartialSuccess", "Fault"})

# ExpectedContents kinds (the toolkit's Validator.run_test_assertion): those that count objects
# (count="n"), and the named checks (their meanings: xds.conformance.expect.NAMED_CHECKS).
COUNT_KINDS = frozenset({"ObjectRefs", "Documents", "SubmissionSets", "Folders", "Associations"})
NAMED_KINDS = frozenset({
    "SSwithOneDoc", "SSwithOneDocOnly", "SSwithTwoDoc", "SSwithTwoDocOnly", "SSwithOneFol", "SSwithOneDocOneFol",
    "SSwithTwoDocOneFol", "SSwithTwoDocOneFolOneDocInFol", "SSApproved", "NoSubmissionSet", "NoDocument",
    "DocApp", "DocDep", "OneDocApp", "OneDocDep", "FolApp", "FolDep", "HasRPLC", "HasXFRM_RPLC", "HasAPND",
    "DocRplcDoc", "HasSnapshotPattern", "RegistryResponseIsValid", "None",
})
# <DocumentEntries> filters (Validator.verifyDocumentEntries).
ENTRY_FILTERS = frozenset({"MustOnlyInclude", "Include", "Exclude"})

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
    for object `id` in `section` (AssignedUids / AssignedUuids / AssignedPatientId /
    AssignedSourceId) of `step`, in the section `testdir` names (relative to this section; this
    section when absent). <UseId symbol= value=> gives the value itself."""

    id: str
    symbol: str
    step: str
    section: str
    testdir: str | None = None
    value: str | None = None


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
class UseXPath:
    """<UseXPath testdir= step= symbol= decodebase64=>xpath</UseXPath>: `symbol` takes the
    string value of the XPath over that step's log (or, with file=, over an XML file)."""

    symbol: str
    xpath: str
    step: str = ""
    testdir: str | None = None
    file: Path | None = None
    decode_base64: bool = False


@dataclass(frozen=True)
class UseObjectRef:
    """<UseObjectRef testdir= step= index= symbol=>: the id of the index-th ObjectRef (from 0)
    of that step's query result."""

    symbol: str
    step: str
    index: int
    testdir: str | None = None


@dataclass(frozen=True)
class UseRepositoryUniqueId:
    """<UseRepositoryUniqueId testdir= step= symbol=>: the repositoryUniqueId slot of the
    DocumentEntries of that step's query result (they must all name the same repository)."""

    symbol: str
    step: str
    testdir: str | None = None


@dataclass(frozen=True)
class Report:
    """<Report name= section=>xpath</Report>: a value taken from a part of the step's log (the
    request as sent: InputMetadata; the response: Result; an Assigned... list) for later steps."""

    name: str
    section: str
    xpath: str


@dataclass(frozen=True)
class ExpectedEntry:
    """One <DocumentEntry> of <DocumentEntries><MustOnlyInclude|Include|Exclude>: its id comes
    from a UseId; <DocumentEntryType> names the objectType it must have."""

    use_id: UseId | None
    object_type: str | None


@dataclass(frozen=True)
class ContentCheck:
    """One child of <ExpectedContents>: a count (`count` set), a named check, or <DocumentEntries>
    (`entries`, one filter per child: `filters`; `entry_type`: a DocumentEntryType every entry
    must have)."""

    kind: str
    count: int | None = None
    entries: tuple[ExpectedEntry, ...] = ()
    filters: tuple[tuple[str, tuple[ExpectedEntry, ...]], ...] = ()
    entry_type: str | None = None


@dataclass(frozen=True)
class Assertion:
    id: str
    xpath: str


@dataclass(frozen=True)
class DataRef:
    """<DataRef file= as=>: what the assertions read, wrapped in an element named `as_`. file
    "THIS" is the section's log; otherwise an XML file (relative to the section's folder, "TEST"
    standing for it) or another section's log ("../submit/log.xml")."""

    file: str
    as_: str


@dataclass(frozen=True)
class ReferenceDocument:
    """<ReferenceDocument uid="$x$">path</ReferenceDocument>: the bytes a retrieved document
    must have. The path is relative to the section's folder, as the toolkit resolves it
    (TestConfig.testplanDir); `fallback` is the same path from the test's folder, where every
    upstream plan actually keeps the file ("submit/my_document.pdf" from 12029/retrieve)."""

    uid: str
    path: Path
    fallback: Path | None = None

    def existing(self) -> Path:
        """The file to read: the section-relative path, else the test-relative one."""
        if self.path.is_file() or self.fallback is None:
            return self.path
        return self.fallback if self.fallback.is_file() else self.path


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
    assign_uids: bool = True                    # <NoAssignUids/> without an id: none assigned
    parse_metadata: bool = True                 # <ParseMetadata>False</ParseMetadata>: sent as written
    no_patient_id: bool = False
    no_metadata: bool = False
    create_new_patient_id: bool = False
    clean_params: bool = False                  # <CleanParams/>: query parameters left unfilled are dropped
    no_assign_uids: tuple[str, ...] = ()
    use_ids: tuple[UseId, ...] = ()
    use_reports: tuple[UseReport, ...] = ()
    use_xpaths: tuple[UseXPath, ...] = ()
    use_object_refs: tuple[UseObjectRef, ...] = ()
    use_repository_unique_ids: tuple[UseRepositoryUniqueId, ...] = ()
    reports: tuple[Report, ...] = ()
    documents: tuple[tuple[str, Path], ...] = ()  # (<Document id>, file)
    expected_contents: tuple[ContentCheck, ...] | None = None
    expected_mime_type: str | None = None
    assertions: tuple[Assertion, ...] = ()
    data_refs: tuple[DataRef, ...] = ()
    wait_before_ms: int = 0
    reference_documents: tuple[ReferenceDocument, ...] = ()
    reference_metadata: ReferenceMetadata | None = None
    soap_headers: tuple[bytes, ...] = ()        # <SOAPHeader> blocks, serialized
    headers: tuple[tuple[str, str], ...] = ()   # HttpTransaction <Headers>
    body_file: Path | None = None               # HttpTransaction <BodyFile>
    http_type: str | None = None                # HttpTransaction type=
    notes: tuple[str, ...] = ()                 # instructions the toolkit ignores too
    unchecked: tuple[str, ...] = ()             # expectations this runner cannot check

    @property
    def iti(self) -> str:
        """The IHE transaction: ITI-42, ITI-18 ... (an HttpTransaction by its type or action)."""
        if self.kind == "HttpTransaction":
            if self.http_type in HTTP_TYPES:
                return HTTP_TYPES[self.http_type]
            action = _content_type_action(dict(self.headers).get("content-type", ""))
            transaction = BY_ACTION.get(action or "")
            return transaction.name if transaction else "HTTP"
        return TRANSACTIONS.get(self.kind, "-")

    def all_use_ids(self) -> tuple[UseId, ...]:
        """The transaction's UseIds and those inside its ExpectedContents."""
        inner = tuple(e.use_id for c in self.expected_contents or () for _, entries in c.filters
                      for e in entries if e.use_id)
        return self.use_ids + inner

    def referenced_steps(self) -> Iterable[tuple[str | None, str]]:
        """(testdir, step) of every earlier step whose log this transaction reads by testdir."""
        for use in self.all_use_ids():
            if use.value is None:
                yield use.testdir, use.step
        for use in (*self.use_xpaths, *self.use_object_refs, *self.use_repository_unique_ids):
            if getattr(use, "file", None) is None:
                yield use.testdir, use.step
        if self.reference_metadata is not None:
            yield self.reference_metadata.testdir, self.reference_metadata.step


@dataclass(frozen=True)
class Step:
    id: str
    transaction: Transaction | None
    expected_status: str | None = None          # as written: one status, or several with commas
    expected_error_codes: tuple[str, ...] = ()
    expected_error_messages: tuple[str, ...] = ()
    alt_patient_id: bool = False                 # <AltPatientId/>: a patient the registry does not know
    new_patient_id: bool = False                 # <NewPatientId/>: the test moves to a new patient
    goals: tuple[str, ...] = ()
    unsupported: tuple[str, ...] = ()            # what this runner cannot carry out: the step is skipped

    @property
    def iti(self) -> str:
        if self.transaction is not None:
            return self.transaction.iti
        return "NewPatientId" if self.new_patient_id else "-"

    @property
    def expected_statuses(self) -> tuple[str, ...]:
        """The statuses ExpectedStatus accepts (Success when it says none)."""
        return split_statuses(self.expected_status) or ("Success",)


@dataclass(frozen=True)
class Section:
    name: str
    path: Path
    steps: tuple[Step, ...] = ()
    problems: tuple[str, ...] = ()  # the section could not be read: it is skipped, saying why
    added: bool = False             # run although index.idx leaves it out (INDEX_ADDITIONS)


@dataclass(frozen=True)
class Test:
    name: str
    path: Path
    sections: tuple[Section, ...] = ()
    problems: tuple[str, ...] = ()
    parameters: tuple[UseReport, ...] = ()  # TEST_PARAMETERS: values the toolkit's orchestration passes

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)


# Values the toolkit's conformance orchestration passes to a test instead of its plan saying
# where they come from (RegOrchestrationBuilder: 12361 loads the Multi-Patient Query data for
# the patients of 15819 and 15820, as $patient_id1$ and $patient_id2$; 12364 then queries them
# by those PIF tests' $patientid$ reports).
TEST_PARAMETERS: dict[str, tuple[UseReport, ...]] = {
    "12361": (UseReport("$patientid$", "$patient_id1$", "pif", "step", "15819"),
              UseReport("$patientid$", "$patient_id2$", "pif", "step", "15820")),
}


# --- reading ---------------------------------------------------------------------------------

def read_index(text: str) -> list[str]:
    """The section names of an index.idx, in order (blank lines and stray spaces dropped:
    15817's upstream index.idx says "pif ")."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def read_test(path: Path) -> Test:
    """A test folder: index.idx and its sections' plans. A folder without index.idx but with
    a testplan.xml is a test of one section (the toolkit allows both)."""
    path = Path(path)
    parameters = TEST_PARAMETERS.get(path.name, ())
    index = path / "index.idx"
    if index.is_file():
        names = read_index(index.read_text(encoding="utf-8", errors="replace"))
    elif (path / "testplan.xml").is_file():
        return Test(path.name, path, (read_section(path, name=""),), parameters=parameters)
    else:
        return Test(path.name, path, problems=(f"{path}: neither index.idx nor testplan.xml",))
    added: set[str] = set()
    for extra, after in INDEX_ADDITIONS.get(path.name, ()):
        if extra not in names and (path / extra / "testplan.xml").is_file():
            position = names.index(after) + 1 if after in names else len(names)
            names.insert(position, extra)
            added.add(extra)
    sections = tuple(read_section(path / name, name=name, added=name in added) for name in names)
    return Test(path.name, path, sections, parameters=parameters)


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
    """The steps of a testplan.xml. File names are resolved against the section's folder, as
    the toolkit resolves them (ReferenceDocument: also against the test's folder, see
    ReferenceDocument)."""
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
        elif child.tag not in ("Test", "Rule", "Goal", "RegistryEndpoint"):
            # An unknown plan-level element could change every step: the section is skipped.
            raise ValueError(f"<TestPlan> holds <{child.tag}>, which this runner does not know")
    if not steps:
        raise ValueError("the plan has no <TestStep>")
    return steps


def split_statuses(text: str | None) -> tuple[str, ...]:
    """ExpectedStatus "Success" or "Success, PartialSuccess" (StepContext splits on commas)."""
    return tuple(s.strip() for s in (text or "").split(",") if s.strip())


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
        if tag in TRANSACTIONS or tag in OTHER_TRANSACTIONS:
            if transaction is not None:
                unsupported.append(f"a second transaction <{tag}> in one step")
                continue
            if tag in OTHER_TRANSACTIONS:
                unsupported.append(f"<{tag}>: {OTHER_TRANSACTIONS[tag]}, an actor this runner does not test")
                transaction = Transaction(kind=tag)
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
        elif tag in STEP_ELEMENTS:
            pass  # documentation of the step, or the toolkit's own endpoint
        else:
            unsupported.append(f"<{tag}> in <TestStep>")
    unknown = [s for s in split_statuses(status) if s not in STATUSES]
    if unknown:
        unsupported.append(f"ExpectedStatus {', '.join(map(repr, unknown))} (known: {', '.join(sorted(STATUSES))})")
    return Step(step_id, transaction, status, tuple(codes), tuple(messages), alt, new, tuple(goals),
                tuple(unsupported))


def _transaction(element: etree._Element, section_dir: Path, test_dir: Path) -> tuple[Transaction, list[str]]:
    """The transaction's instructions (BasicTransaction.parseBasicInstruction and the
    transactions' own parseInstruction), and what of them this runner cannot carry out."""
    kind = element.tag
    values: dict = {}
    problems: list[str] = []
    notes: list[str] = []
    unchecked: list[str] = []
    lists: dict[str, list] = {name: [] for name in (
        "use_ids", "use_reports", "use_xpaths", "use_object_refs", "use_repository_unique_ids", "reports",
        "documents", "no_assign_uids", "reference_documents", "soap_headers")}
    for child in _elements(element):
        tag = child.tag
        if tag == "XDSb":
            values["xdsb"] = True
        elif tag == "MetadataFile":
            values["metadata_file"] = section_dir / _text(child)
        elif tag == "AssignUuids":
            values["assign_uuids"] = True
        elif tag == "NoAssignUids":
            # With an id, that object keeps its uniqueId; without, no uniqueId is assigned.
            if child.get("id"):
                lists["no_assign_uids"].append(child.get("id"))
            else:
                values["assign_uids"] = False
        elif tag == "ParseMetadata":
            values["parse_metadata"] = _text(child) != "False"  # the toolkit's own test: exactly "False"
        elif tag == "NoPatientId":
            values["no_patient_id"] = True
        elif tag == "NoMetadata":
            values["no_metadata"] = True
        elif tag == "CreateNewPatientId":
            values["create_new_patient_id"] = True
        elif tag == "CleanParams":
            values["clean_params"] = True
        elif tag == "UseId":
            use_id, problem = _use_id(child)
            lists["use_ids"].append(use_id)
            problems += problem
        elif tag == "UseReport":
            lists["use_reports"].append(UseReport(
                report_name=child.get("reportName", ""), use_as=child.get("useAs", ""),
                section=child.get("section", ""), step=child.get("step", ""), test=child.get("test"),
            ))
        elif tag == "UseXPath":
            use, problem = _use_xpath(child, section_dir)
            lists["use_xpaths"].append(use)
            problems += problem
        elif tag == "UseObjectRef":
            try:
                index = int(child.get("index", ""))
            except ValueError:
                problems.append(f"<UseObjectRef index={child.get('index')!r}> is not a number")
                index = 0
            if not child.get("step") or not child.get("symbol") or index < 0:
                problems.append("<UseObjectRef> needs step, symbol and an index of 0 or more")
            lists["use_object_refs"].append(UseObjectRef(child.get("symbol", ""), child.get("step", ""), index,
                                                         child.get("testdir")))
        elif tag == "UseRepositoryUniqueId":
            if not child.get("step") or not child.get("symbol"):
                problems.append("<UseRepositoryUniqueId> needs step and symbol")
            lists["use_repository_unique_ids"].append(UseRepositoryUniqueId(
                child.get("symbol", ""), child.get("step", ""), child.get("testdir")))
        elif tag == "Report":
            report = Report(child.get("name", ""), child.get("section", ""), " ".join(_text(child).split()))
            if report.section not in REPORT_SECTIONS:
                problems.append(f"<Report section={report.section!r}> (known: {', '.join(sorted(REPORT_SECTIONS))})")
            lists["reports"].append(report)
        elif tag == "Document":
            lists["documents"].append((child.get("id", ""), section_dir / _text(child)))
        elif tag == "ExpectedContents":
            checks, problem = _expected_contents(child)
            values["expected_contents"] = checks
            unchecked += problem
        elif tag == "ExpectedMimeType":
            values["expected_mime_type"] = _text(child)
        elif tag == "Assertions":
            asserts, refs, problem = _assertions(child)
            values["assertions"], values["data_refs"] = asserts, refs
            unchecked += problem
        elif tag == "WaitBefore":
            try:
                values["wait_before_ms"] = int(_text(child))
            except ValueError:
                problems.append(f"<WaitBefore> {_text(child)!r} is not a number of milliseconds")
        elif tag == "ReferenceDocument":
            lists["reference_documents"].append(ReferenceDocument(
                child.get("uid", ""), section_dir / _text(child), test_dir / _text(child)))
        elif tag == "ReferenceMetadata":
            values["reference_metadata"] = ReferenceMetadata(child.get("step", ""), child.get("testdir"))
        elif tag == "SOAPHeader":
            block = next(_elements(child), None)
            if block is None:
                problems.append("<SOAPHeader> without a header block")
            else:
                lists["soap_headers"].append(etree.tostring(block))
        elif tag == "Headers" and kind == "HttpTransaction":
            values["headers"] = tuple(_headers(_text(child)))
        elif tag == "BodyFile" and kind == "HttpTransaction":
            values["body_file"] = section_dir / _text(child)
        elif tag == "ExpectedStatus":
            pass  # read by _step
        elif tag in IGNORED_INSTRUCTIONS:
            notes.append(f"<{tag}> ignored: {IGNORED_INSTRUCTIONS[tag]}")
        elif tag in UNSENDABLE_INSTRUCTIONS:
            problems.append(f"<{tag}>: {UNSENDABLE_INSTRUCTIONS[tag]}")
        else:
            problems.append(f"<{tag}> in <{kind}>")
    if kind == "HttpTransaction":
        values["http_type"] = element.get("type")
    transaction = Transaction(
        kind=kind, notes=tuple(notes), unchecked=tuple(unchecked),
        **{name: tuple(items) for name, items in lists.items()}, **values,
    )
    needs_file = kind not in ("PatientIdentityFeedTransaction", "HttpTransaction", "NullTransaction")
    if needs_file and transaction.metadata_file is None:
        problems.append(f"<{kind}> without <MetadataFile>")
    if kind == "HttpTransaction" and (transaction.body_file is None or "content-type" not in dict(transaction.headers)):
        problems.append("<HttpTransaction> needs <BodyFile> and a Content-Type in <Headers>")
    return transaction, problems


def _use_id(element: etree._Element) -> tuple[UseId, list[str]]:
    use_id = UseId(id=element.get("id", ""), symbol=element.get("symbol", ""), step=element.get("step", ""),
                   section=element.get("section", ""), testdir=element.get("testdir"), value=element.get("value"))
    problems = []
    if not use_id.symbol:
        problems.append("<UseId> without a symbol")
    elif use_id.value is None and use_id.section not in USE_ID_SECTIONS:
        problems.append(f"<UseId section={use_id.section!r}> (known: {', '.join(sorted(USE_ID_SECTIONS))})")
    return use_id, problems


def _use_xpath(element: etree._Element, section_dir: Path) -> tuple[UseXPath, list[str]]:
    file = element.get("file")
    use = UseXPath(symbol=element.get("symbol", ""), xpath=" ".join(_text(element).split()),
                   step=element.get("step", ""), testdir=element.get("testdir"),
                   file=section_dir / file.replace("TEST", str(section_dir), 1) if file else None,
                   decode_base64=(element.get("decodebase64") or "").lower() == "true")
    problems = []
    if not use.symbol or not use.xpath or (not use.step and use.file is None):
        problems.append("<UseXPath> needs a symbol, an XPath and either step (with testdir) or file")
    elif file and "MGMT" in file:
        problems.append("<UseXPath file=MGMT...>: the toolkit's own management folder")
    return use, problems


def _expected_contents(element: etree._Element) -> tuple[tuple[ContentCheck, ...], list[str]]:
    checks: list[ContentCheck] = []
    unchecked: list[str] = []
    for child in _elements(element):
        kind = child.tag
        if kind in COUNT_KINDS:
            try:
                checks.append(ContentCheck(kind, count=int(child.get("count", ""))))
            except ValueError:
                unchecked.append(f"ExpectedContents <{kind}> without a numeric count")
        elif kind in NAMED_KINDS:
            checks.append(ContentCheck(kind))
        elif kind == "DocumentEntries":
            check, problem = _document_entries(child)
            checks.append(check)
            unchecked += problem
        else:
            unchecked.append(f"ExpectedContents kind <{kind}>")
    return tuple(checks), unchecked


def _document_entries(element: etree._Element) -> tuple[ContentCheck, list[str]]:
    filters: list[tuple[str, tuple[ExpectedEntry, ...]]] = []
    entry_type: str | None = None
    problems: list[str] = []
    for child in _elements(element):
        if child.tag == "DocumentEntryType":
            entry_type = _text(child)
            continue
        if child.tag not in ENTRY_FILTERS:
            problems.append(f"<DocumentEntries><{child.tag}>")
            continue
        entries: list[ExpectedEntry] = []
        for entry in _elements(child):
            if entry.tag != "DocumentEntry":
                problems.append(f"<{child.tag}><{entry.tag}>")
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
        filters.append((child.tag, tuple(entries)))
    must_only = next((entries for name, entries in filters if name == "MustOnlyInclude"), ())
    return ContentCheck("DocumentEntries", entries=must_only, filters=tuple(filters), entry_type=entry_type), problems


def _assertions(element: etree._Element) -> tuple[tuple[Assertion, ...], tuple[DataRef, ...], list[str]]:
    asserts: list[Assertion] = []
    refs: list[DataRef] = []
    unchecked: list[str] = []
    for child in _elements(element):
        if child.tag == "Assert":
            if child.get("process") or len(list(_elements(child))):
                # The toolkit hands these to a simulator's validation plugins.
                unchecked.append(f"<Assert id={child.get('id')!r}> with a process or validations (toolkit simulators)")
                continue
            asserts.append(Assertion(child.get("id", ""), " ".join(_text(child).split())))
        elif child.tag == "DataRef":
            ref = DataRef(child.get("file", ""), child.get("as", ""))
            if not ref.file or not ref.as_:
                unchecked.append("<DataRef> needs file and as")
            elif "MGMT" in ref.file:
                unchecked.append(f"<DataRef file={ref.file!r}>: the toolkit's own management folder")
            else:
                refs.append(ref)
        else:
            unchecked.append(f"<Assertions><{child.tag}>")
    return tuple(asserts), tuple(refs), unchecked


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
    if target.name == "log.xml":  # a DataRef names the section's log file itself
        target = target.parent
    if section:
        return target.parent.name, target.name
    return target.name, ""


def dependencies(test: Test) -> list[str]:
    """The other tests whose logs this test reads (UseReport test=, UseId testdir= and the other
    Use... instructions, ReferenceMetadata testdir=, TEST_PARAMETERS), in the order first met."""
    found: dict[str, None] = {}
    for use in test.parameters:
        if use.test and use.test != test.name:
            found.setdefault(use.test)
    for section in test.sections:
        for step in section.steps:
            transaction = step.transaction
            if transaction is None:
                continue
            names = [r.test for r in transaction.use_reports if r.test]
            names += [resolve_testdir(test.name, section.name, testdir)[0]
                      for testdir, _ in transaction.referenced_steps()]
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
