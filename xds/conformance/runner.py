"""Running NIST XDS Toolkit testkit tests against any XDS.b system over SOAP.

What belongs here: the order of things for each step (values from the log, the patient, the
toolkit's rewrites, sending, checking, logging), the log of what every step assigned and
reported (read by later steps and later tests of the same run), and the ways of reaching the
system under test: a transport callable for HTTP and a patient feed. What does not: reading
plans (`plan`), the rewrites themselves (`prepare`, `ebrim21`), judging responses (`expect`),
writing reports (`report`).

Theory of operation. `Runner.run(tests)` takes tests in running order (`plan.discover` puts
each after the tests it reads from) and runs every step of every section. A step:
1. resolves its <UseId>/<UseReport> values from the run's log (`StepLog`, one per step run,
   the toolkit's AssignedUids / AssignedUuids / AssignedPatientId sections and Reports); a
   value that is missing fails the step before anything is sent, naming the step it needed;
2. picks its patient: a <UseReport useAs="$patientid$">, else the test's patient (the patient
   of the test it takes its patient from, as 12346 takes 15818's; else one of its own, fed to
   the system before the test's first submission), or with <AltPatientId/> one never fed;
3. builds the request: ebRIM 2.1 -> 3.0 when <XDSb/>, `$var$` filled, then `prepare` (patient,
   new uniqueIds and sourceId, UUIDs when <AssignUuids/>); a placeholder left fails the step;
4. sends it: SOAP 1.2 with WS-Addressing, MTOM/XOP for ITI-41 and ITI-43;
5. checks status, error codes, wsa:Action, ExpectedContents, retrieved documents; evaluates
   <Report>s; logs the step; then evaluates <Assertions> over the section's log (which now
   holds this step, as the plans' XPath expects).
A step that fails does not stop its section: later steps run, and fail with a reason that
names the step whose value they missed.

Nothing is skipped: a step whose transaction the system does not serve fails like any other
(a SOAP fault or an HTTP error), so the known-failures list has to name it.
"""

from __future__ import annotations

import copy
import datetime as dt
import ssl
import subprocess
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lxml import etree

from xds.conformance import expect
from xds.conformance.ebrim21 import RIM21, to_ebrim30
from xds.conformance.plan import ReferenceMetadata, Section, Step, Test, Transaction, resolve_testdir
from xds.conformance.prepare import PATIENT_ID_SCHEMES, placeholders, prepare, substitute, unique_id_sequence
from xds.ebrim import ns
from xds.hl7v3.feed import pix_add_message
from xds.soap import build_envelope, build_mtom, parse_response
from xds.soap.fault import SoapFault
from xds.soap.mtom import new_content_id, parse_content_type, root_part, split_multipart, xop_include
from xds.soap.ns import SOAP12
from xds.transactions import ITI_18, ITI_41, ITI_42, ITI_43, ITI_44_ADD

# The SOAP actions (ITI TF-2b 3.41-3.43, TF-2a 3.18), where each is sent, whether as MTOM, and
# the response body it must come back with.
REGISTER, STORED_QUERY = ITI_42.action, ITI_18.action
PROVIDE_AND_REGISTER, RETRIEVE = ITI_41.action, ITI_43.action
PIX_FEED = ITI_44_ADD


@dataclass(frozen=True)
class Route:
    action: str
    actor: str            # "registry" or "repository": which URL
    mtom: bool
    response_bodies: tuple[str, ...]


ROUTES = {
    REGISTER: Route(REGISTER, "registry", False, ("RegistryResponse",)),
    STORED_QUERY: Route(STORED_QUERY, "registry", False, ("AdhocQueryResponse",)),
    PROVIDE_AND_REGISTER: Route(PROVIDE_AND_REGISTER, "repository", True, ("RegistryResponse",)),
    RETRIEVE: Route(RETRIEVE, "repository", True, ("RetrieveDocumentSetResponse",)),
}
ACTION_OF = {
    "RegisterTransaction": REGISTER,
    "StoredQueryTransaction": STORED_QUERY,
    "ProvideAndRegisterTransaction": PROVIDE_AND_REGISTER,
    "RetrieveTransaction": RETRIEVE,
}

LCM_SOR = f"{{{ns.LCM}}}SubmitObjectsRequest"
PNR_REQUEST = f"{{{ns.XDSB}}}ProvideAndRegisterDocumentSetRequest"
ADHOC_QUERY_REQUEST = f"{{{ns.QUERY}}}AdhocQueryRequest"
RETRIEVE_REQUEST = f"{{{ns.XDSB}}}RetrieveDocumentSetRequest"
_RIM = f"{{{ns.RIM}}}"
_XDSB = f"{{{ns.XDSB}}}"

# The NIST affinity domain's assigning authority (the toolkit's default patients use it).
NIST_AUTHORITY = "1.3.6.1.4.1.21367.13.20.1000"
# Our sourceId: an OID under 2.25 (ITU-T X.667: an OID made of a UUID, unique without
# registration), fixed so that every run names the same source.
DEFAULT_SOURCE_ID = "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, "urn:xds-affinity:conformance-runner").int)

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True)


# --- talking to the system under test --------------------------------------------------------

@dataclass(frozen=True)
class HttpRequest:
    url: str
    content_type: str
    body: bytes


@dataclass(frozen=True)
class HttpReply:
    status: int
    content_type: str
    body: bytes


# Sends one POST; raises OSError when the system cannot be reached. Tests pass their own.
Transport = Callable[[HttpRequest], HttpReply]


def http_transport(timeout: float = 60, context: ssl.SSLContext | None = None) -> Transport:
    """POST with urllib. HTTP error statuses are replies too: a SOAP fault comes with 400/500.
    `context`: for an https system under test, e.g. xds.security.tls.client_context(settings) to show
    it a client certificate."""

    def send(request: HttpRequest) -> HttpReply:
        http_request = urllib.request.Request(request.url, data=request.body,
                                              headers={"Content-Type": request.content_type})
        try:
            with urllib.request.urlopen(http_request, timeout=timeout, context=context) as response:
                return HttpReply(response.status, response.headers.get("Content-Type", ""), response.read())
        except urllib.error.HTTPError as exc:
            return HttpReply(exc.code, exc.headers.get("Content-Type", "") if exc.headers else "", exc.read())

    return send


@dataclass
class Exchange:
    """One message sent and what came back, for the step's log."""

    url: str
    action: str
    request_content_type: str
    request: bytes
    status: int | None = None
    response_content_type: str = ""
    response: bytes = b""
    error: str | None = None


@dataclass
class FeedResult:
    ok: bool
    detail: str
    exchange: Exchange | None = None


class PatientFeed(Protocol):
    """Tells the system under test of a patient id (the toolkit's Patient Identity Feed)."""

    description: str

    def feed(self, patient_id: str) -> FeedResult: ...


class NoPatientFeed:
    """For systems that accept any patient, or are fed by hand: nothing is sent, and every
    step that would have fed a patient says so in its notes."""

    description = "none"

    def feed(self, patient_id: str) -> FeedResult:
        return FeedResult(True, f"not fed (no patient feed configured): the system must already know {patient_id}")


class CommandPatientFeed:
    """Runs a command with the patient id as its last argument; this project on the same
    machine is fed with `xds patients add`."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 60):
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.timeout = timeout
        self.description = " ".join(self.argv)

    def feed(self, patient_id: str) -> FeedResult:
        try:
            done = subprocess.run([*self.argv, patient_id], check=False, env=self.env, capture_output=True, text=True,
                                  timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return FeedResult(False, f"{self.description} {patient_id}: {exc}")
        output = (done.stdout + done.stderr).strip()
        if done.returncode != 0:
            return FeedResult(False, f"{self.description} {patient_id} exited with {done.returncode}: {output}")
        return FeedResult(True, f"{self.description} {patient_id}: {output}")


class StorePatientFeed:
    """Adds the patient to this project's patient list directly in its database (the store
    `xds patients add` writes to): for a registry of this project on the same machine."""

    def __init__(self, database_url: str):
        self.database_url = database_url
        self.description = "the registry's patient list (database)"

    def feed(self, patient_id: str) -> FeedResult:
        from sqlalchemy.exc import SQLAlchemyError

        from xds.store import db, patients

        engine = db.make_engine(self.database_url)
        try:
            with db.make_sessionmaker(engine, write=True).begin() as session:
                added = patients.add(session, [patient_id])
        except (SQLAlchemyError, OSError) as exc:  # the feed's failure, reported on the step
            return FeedResult(False, f"could not add {patient_id} to the patient list: {exc}")
        finally:
            engine.dispose()
        return FeedResult(True, f"{patient_id} {'added to' if added else 'already in'} the patient list")


class Hl7v3PatientFeed:
    """ITI-44 Patient Identity Feed HL7v3 (PRPA_IN201301UV02, add a patient) to a PIX Manager
    or a registry that takes HL7v3 feeds; an accept acknowledgement AA or CA is success."""

    def __init__(self, url: str, transport: Transport | None = None, *, sender: str = DEFAULT_SOURCE_ID,
                 receiver: str = "1.3.6.1.4.1.21367.13.20.1000.2"):
        self.url = url
        self.transport = transport or http_transport()
        self.sender = sender
        self.receiver = receiver
        self.description = f"ITI-44 to {url}"

    def feed(self, patient_id: str) -> FeedResult:
        message = pix_add_message(patient_id, sender=self.sender, receiver=self.receiver)
        envelope = build_envelope(message, PIX_FEED, to=self.url)
        content_type = f'application/soap+xml; charset=UTF-8; action="{PIX_FEED}"'
        exchange = Exchange(self.url, PIX_FEED, content_type, envelope)
        try:
            reply = self.transport(HttpRequest(self.url, content_type, envelope))
        except OSError as exc:
            exchange.error = str(exc)
            return FeedResult(False, f"could not reach {self.url}: {exc}", exchange)
        exchange.status, exchange.response_content_type, exchange.response = reply.status, reply.content_type, reply.body
        try:
            outcome = expect.read_outcome(parse_response(reply.content_type, reply.body).body)
        except (SoapFault, ValueError) as exc:
            return FeedResult(False, f"HTTP {reply.status} from {self.url} is not a SOAP 1.2 answer: {exc}", exchange)
        failures = expect.check_status("Success", outcome)
        if failures:
            return FeedResult(False, f"ITI-44 feed of {patient_id}: " + "; ".join(failures), exchange)
        return FeedResult(True, f"ITI-44 feed of {patient_id}: acknowledged {outcome.status}", exchange)


# --- the log ---------------------------------------------------------------------------------

@dataclass
class StepLog:
    """What the toolkit logs of a step, as later steps read it."""

    test: str
    section: str
    step: str
    kind: str
    expected_status: str | None = None
    passed: bool = False
    patient_id: str | None = None                       # AssignedPatientId
    assigned_uids: dict[str, str] = field(default_factory=dict)   # AssignedUids
    assigned_uuids: dict[str, str] = field(default_factory=dict)  # AssignedUuids
    reports: dict[str, str] = field(default_factory=dict)
    input_metadata: etree._Element | None = None
    result: etree._Element | None = None

    @property
    def name(self) -> str:
        return f"{self.test}/{self.section}/{self.step}"


@dataclass
class StepResult:
    """The verdict of a step, with what was sent and received."""

    test: str
    section: str
    step: str
    iti: str
    passed: bool = True
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    seconds: float = 0.0
    goals: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.test}/{self.section}/{self.step}"


@dataclass
class Endpoints:
    registry: str | None = None
    repository: str | None = None
    # The repository's uniqueId: the toolkit's $repuid$ where no step reports one (15816).
    repository_unique_id: str | None = None


@dataclass
class _Context:
    """One step being run."""

    test: Test
    section: Section
    step: Step
    transaction: Transaction | None
    result: StepResult
    log: StepLog
    variables: dict[str, str] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.result.reasons.append(reason)

    def note(self, text: str) -> None:
        self.result.notes.append(text)


@dataclass
class _Patients:
    """A test's patient: its own, or the patient of the test it takes it from."""

    default: str | None = None
    problem: str | None = None   # why there is none
    fed: bool = False


class Runner:
    """Runs tests against the endpoints. Keep one Runner for a whole run: its log lets tests
    read what earlier tests assigned (the query tests read 12346's uuids)."""

    def __init__(
        self,
        endpoints: Endpoints,
        *,
        transport: Transport | None = None,
        patient_feed: PatientFeed | None = None,
        source_id: str = DEFAULT_SOURCE_ID,
        patient_authority: str = NIST_AUTHORITY,
        uid_root: str | None = None,
        wait: bool = True,
        clock: Callable[[], dt.datetime] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_step: Callable[[StepResult], None] | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.transport = transport or http_transport()
        self.patient_feed = patient_feed or NoPatientFeed()
        self.source_id = source_id
        self.patient_authority = patient_authority
        # uniqueIds must never repeat across submissions to one registry: a fresh UUID-based
        # root (2.25.<uuid>) per run, "<root>.1", "<root>.2", ... within it.
        self.uid_root = uid_root or f"2.25.{uuid.uuid4().int}"
        self._new_unique_id = unique_id_sequence(self.uid_root)
        self._token = uuid.uuid4().hex[:8].upper()
        self._patient_count = 0
        self.alt_patient_id = f"ALT{self._token}^^^&{patient_authority}&ISO"
        self.wait = wait
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.sleep = sleep
        self.on_step = on_step
        self.logs: dict[tuple[str, str, str], StepLog] = {}
        self.results: list[StepResult] = []
        self.submitted: dict[str, expect.SubmittedDocument] = {}
        self.patients_of: dict[str, str] = {}  # test -> its patient, for reports

    # -- running ------------------------------------------------------------------------------

    def run(self, tests: Sequence[Test]) -> list[StepResult]:
        results = []
        for test in tests:
            results += self.run_test(test)
        return results

    def run_test(self, test: Test) -> list[StepResult]:
        results: list[StepResult] = []
        if test.problems:
            results.append(self._record(StepResult(test.name, "", "(test)", "-", False, list(test.problems))))
            return results
        patients = self._test_patient(test)
        for section in test.sections:
            if section.problems:
                results.append(self._record(StepResult(test.name, section.name, "(section)", "-", False,
                                                       list(section.problems))))
                continue
            if section.added:
                note = "section run although index.idx leaves it out (conformance-data README, known oddities)"
            else:
                note = None
            for step in section.steps:
                result = self._run_step(test, section, step, patients)
                if note:
                    result.notes.append(note)
                results.append(self._record(result))
        return results

    def _record(self, result: StepResult) -> StepResult:
        result.passed = not result.reasons
        self.results.append(result)
        if self.on_step is not None:
            self.on_step(result)
        return result

    def _run_step(self, test: Test, section: Section, step: Step, patients: _Patients) -> StepResult:
        started = time.monotonic()
        transaction = step.transaction
        kind = transaction.kind if transaction is not None else ("NewPatientId" if step.new_patient_id else "-")
        result = StepResult(test.name, section.name, step.id, step.iti, goals=step.goals)
        log = StepLog(test.name, section.name, step.id, kind, step.expected_status)
        ctx = _Context(test, section, step, transaction, result, log)
        try:
            self._dispatch(ctx, patients)
        except Exception as exc:  # noqa: BLE001 - one odd plan or answer must not end the run
            # A bug of the runner or a case it does not foresee: the step fails, visibly, with
            # the traceback in its log; the other steps still run.
            ctx.fail(f"the runner failed on this step: {type(exc).__name__}: {exc}")
            ctx.note(traceback.format_exc())
        finally:
            log.passed = not result.reasons
            self.logs[(test.name, section.name, step.id)] = log
            result.seconds = time.monotonic() - started
        return result

    def _dispatch(self, ctx: _Context, patients: _Patients) -> None:
        step, transaction = ctx.step, ctx.transaction
        if step.unsupported:
            for what in step.unsupported:
                ctx.fail(f"the plan uses {what}, which this runner does not support")
            return
        if transaction is None:  # <NewPatientId/> alone
            self._new_patient_step(ctx, patients)
            return
        if not transaction.xdsb and transaction.kind in ACTION_OF:
            ctx.fail(f"<{transaction.kind}> without <XDSb/> is XDS.a, which this runner does not send")
            return
        self._resolve_variables(ctx)
        if ctx.result.reasons:
            return
        if transaction.wait_before_ms and self.wait:
            self.sleep(transaction.wait_before_ms / 1000)
        handler = {
            "RegisterTransaction": self._register,
            "ProvideAndRegisterTransaction": self._provide_and_register,
            "StoredQueryTransaction": self._stored_query,
            "RetrieveTransaction": self._retrieve,
            "HttpTransaction": self._http,
            "PatientIdentityFeedTransaction": self._patient_feed_step,
            "NullTransaction": self._null,
        }[transaction.kind]
        handler(ctx, patients)

    # -- values from the log ------------------------------------------------------------------

    def builtins(self) -> dict[str, str]:
        """Values the toolkit fills without a UseId: dates, and the repository's uniqueId."""
        now = self.clock()
        last_year = now.replace(year=now.year - 1) if not (now.month == 2 and now.day == 29) else now - dt.timedelta(days=366)
        # A stored query's time range includes its From and excludes its To (ITI TF-2a
        # 3.18.4.1.2.3.6), at the precision of a second: "now" as an upper bound is the end of
        # this second, or a run that queries in the second it registered finds nothing (11899).
        end_of_second = now.replace(microsecond=0) + dt.timedelta(seconds=1)
        values = {
            "$now$": end_of_second.strftime("%Y%m%d%H%M%S"),
            "$lastyear$": last_year.strftime("%Y%m%d%H%M%S"),
            "$DATE$": now.strftime("%Y%m%d"),
        }
        if self.endpoints.repository_unique_id:
            values["$repuid$"] = self.endpoints.repository_unique_id
        return values

    def _resolve_variables(self, ctx: _Context) -> None:
        transaction = ctx.transaction
        assert transaction is not None
        variables = self.builtins()
        for use_id in transaction.all_use_ids():
            test, section = resolve_testdir(ctx.test.name, ctx.section.name, use_id.testdir)
            log = self._log_of(ctx, test, section, use_id.step, f"UseId {use_id.symbol}")
            if log is None:
                continue
            if use_id.section == "AssignedPatientId":
                value = log.patient_id
            elif use_id.section == "AssignedUids":
                value = log.assigned_uids.get(use_id.id)
            else:
                value = log.assigned_uuids.get(use_id.id)
            if value is None:
                known = sorted(log.assigned_uids if use_id.section == "AssignedUids" else log.assigned_uuids)
                ctx.fail(f"UseId {use_id.symbol}: step {log.name} logged no {use_id.section} value for "
                         f"{use_id.id!r} (it logged: {', '.join(known) or 'nothing'})")
                continue
            variables[use_id.symbol] = value
        for use_report in transaction.use_reports:
            test = use_report.test or ctx.test.name
            section = ctx.section.name if use_report.section == "THIS" else use_report.section
            log = self._log_of(ctx, test, section, use_report.step, f"UseReport {use_report.report_name}")
            if log is None:
                continue
            value = log.reports.get(use_report.report_name)
            if value is None:
                ctx.fail(f"UseReport {use_report.report_name}: step {log.name} reported no such value "
                         f"(it reported: {', '.join(sorted(log.reports)) or 'nothing'})")
                continue
            variables[use_report.use_as] = value
        ctx.variables = variables

    def _log_of(self, ctx: _Context, test: str, section: str, step: str, what: str) -> StepLog | None:
        log = self.logs.get((test, section, step))
        if log is None:
            ctx.fail(f"{what}: there is no log of step {test}/{section}/{step} in this run "
                     f"(run test {test} first; `xds conformance run` adds the tests a test reads from)")
            return None
        if not log.passed:
            ctx.note(f"{what} comes from step {log.name}, which failed")
        return log

    # -- patients -----------------------------------------------------------------------------

    def new_patient_id(self) -> str:
        self._patient_count += 1
        return f"XDS{self._token}.{self._patient_count}^^^&{self.patient_authority}&ISO"

    def _test_patient(self, test: Test) -> _Patients:
        """The test's patient: the one a step takes from another test through
        <UseReport useAs="$patientid$" test=...> (the whole test then uses it, as 12346's
        sections all use 15818's), else a new one, fed before its first submission."""
        for section in test.sections:
            for step in section.steps:
                for use in step.transaction.use_reports if step.transaction else ():
                    if use.use_as == "$patientid$" and use.test and use.test != test.name:
                        log = self.logs.get((use.test, use.section, use.step))
                        value = log.reports.get(use.report_name) if log is not None else None
                        if value is None:
                            return _Patients(problem=f"the test takes its patient from {use.test}/{use.section}/"
                                                     f"{use.step}, which logged none (was {use.test} run?)")
                        self.patients_of[test.name] = value
                        return _Patients(default=value, fed=True)
        patient = self.new_patient_id()
        self.patients_of[test.name] = patient
        return _Patients(default=patient)

    def _patient(self, ctx: _Context, patients: _Patients) -> str | None:
        """The patient of a submission; fed first if it is the test's own and not yet fed."""
        if ctx.step.alt_patient_id:
            ctx.note(f"AltPatientId: {self.alt_patient_id}, never fed to the system")
            return self.alt_patient_id
        explicit = ctx.variables.get("$patientid$")
        if explicit:
            return explicit
        if patients.default is None:
            ctx.fail(f"no patient for this step: {patients.problem}")
            return None
        if not patients.fed:
            outcome = self.patient_feed.feed(patients.default)
            if outcome.exchange is not None:
                ctx.result.exchanges.append(outcome.exchange)
            ctx.note(f"test patient fed before this step: {outcome.detail}")
            if not outcome.ok:
                ctx.fail(f"could not feed the test patient {patients.default}: {outcome.detail}")
                return None
            patients.fed = True
        return patients.default

    def _patient_feed_step(self, ctx: _Context, patients: _Patients) -> None:
        transaction = ctx.transaction
        assert transaction is not None
        if transaction.create_new_patient_id or patients.default is None:
            patients.default = self.new_patient_id()
            patients.problem = None
            self.patients_of[ctx.test.name] = patients.default
        patient = patients.default
        outcome = self.patient_feed.feed(patient)
        if outcome.exchange is not None:
            ctx.result.exchanges.append(outcome.exchange)
            ctx.log.input_metadata, ctx.log.result = _element_of(outcome.exchange)
        ctx.note(outcome.detail)
        expected = ctx.step.expected_status or "Success"
        if outcome.ok != (expected == "Success"):
            ctx.fail(f"Patient Identity Feed of {patient}: expected {expected}; {outcome.detail}")
        patients.fed = patients.fed or outcome.ok
        ctx.log.patient_id = patient
        ctx.log.reports["$patientid$"] = patient

    def _new_patient_step(self, ctx: _Context, patients: _Patients) -> None:
        patients.default = self.new_patient_id()
        patients.fed = False
        patients.problem = None
        ctx.log.patient_id = patients.default
        ctx.log.reports["$patientid$"] = patients.default
        ctx.note(f"new patient for the rest of the test: {patients.default}")

    # -- building requests --------------------------------------------------------------------

    def _template(self, ctx: _Context, path: Path | None) -> etree._Element | None:
        if path is None:
            ctx.fail("no metadata file")
            return None
        try:
            return etree.fromstring(path.read_bytes().lstrip(), _PARSER)
        except OSError as exc:
            ctx.fail(f"cannot read {path}: {exc.strerror or exc}")
        except etree.XMLSyntaxError as exc:
            ctx.fail(f"{path} is not well-formed XML: {exc}")
        return None

    def _submission(self, ctx: _Context, patients: _Patients, root: etree._Element) -> etree._Element | None:
        """The toolkit's rewrites of a submission: 2.1 -> 3.0 (<XDSb/>), $vars$, then prepare."""
        transaction = ctx.transaction
        assert transaction is not None
        if transaction.xdsb:
            try:
                root = to_ebrim30(root)
            except ValueError as exc:
                ctx.fail(f"cannot translate the ebRIM 2.1 metadata to 3.0: {exc}")
                return None
        root = substitute(root, ctx.variables)
        patient = self._patient(ctx, patients)
        if patient is None:
            return None
        return self._prepare(ctx, root, patient)

    def _prepare(self, ctx: _Context, root: etree._Element, patient: str) -> etree._Element:
        transaction = ctx.transaction
        assert transaction is not None
        tree, prepared = prepare(
            root, patient_id=patient, source_id=self.source_id, new_unique_id=self._new_unique_id,
            assign_uuids=transaction.assign_uuids, no_assign_uids=transaction.no_assign_uids,
        )
        if transaction.no_patient_id:
            _restore_patient_ids(root, tree)
        ctx.log.patient_id = prepared["AssignedPatientId"]
        ctx.log.assigned_uids = dict(prepared["AssignedUids"])
        ctx.log.assigned_uuids = dict(prepared["AssignedUuids"])
        # Reports the toolkit makes of every assignment (15816 and ReposAcceptanceTest read
        # "Document01_uid" and "myDocId1_uuid").
        ctx.log.reports.update({f"{k}_uid": v for k, v in prepared["AssignedUids"].items()})
        ctx.log.reports.update({f"{k}_uuid": v for k, v in prepared["AssignedUuids"].items()})
        return tree

    def _no_placeholders(self, ctx: _Context, root: etree._Element) -> bool:
        left = sorted(placeholders(root))
        if not left:
            return True
        hint = " (give the repository's uniqueId: --repository-uid)" if "$repuid$" in left else ""
        ctx.fail(f"placeholders left unfilled in the request: {', '.join(left)}{hint}")
        return False

    # -- transactions -------------------------------------------------------------------------

    def _register(self, ctx: _Context, patients: _Patients) -> None:
        root = self._template(ctx, ctx.transaction.metadata_file)
        if root is None:
            return
        request = self._submission(ctx, patients, root)
        if request is None or not self._no_placeholders(ctx, request):
            return
        if request.tag != LCM_SOR:
            ctx.fail(f"RegisterTransaction metadata must be a SubmitObjectsRequest, not {request.tag}")
            return
        self._send(ctx, ROUTES[REGISTER], request)

    def _provide_and_register(self, ctx: _Context, patients: _Patients) -> None:
        transaction = ctx.transaction
        root = self._template(ctx, transaction.metadata_file)
        if root is None:
            return
        if root.tag == PNR_REQUEST:
            request = root
        else:
            if transaction.xdsb:
                try:
                    root = to_ebrim30(root)
                except ValueError as exc:
                    ctx.fail(f"cannot translate the ebRIM 2.1 metadata to 3.0: {exc}")
                    return
            if root.tag != LCM_SOR:
                ctx.fail(f"ProvideAndRegisterTransaction metadata must be a SubmitObjectsRequest or a "
                         f"ProvideAndRegisterDocumentSetRequest, not {root.tag}")
                return
            request = etree.Element(PNR_REQUEST, nsmap={"xdsb": ns.XDSB})
            request.append(copy.deepcopy(root))
        request = substitute(request, ctx.variables)
        patient = self._patient(ctx, patients)
        if patient is None:
            return
        request = self._prepare(ctx, request, patient)
        attachments = []
        documents: list[expect.SubmittedDocument] = []
        for doc_id, path in transaction.documents:
            try:
                data = path.read_bytes()
            except OSError as exc:
                ctx.fail(f"cannot read document {path}: {exc.strerror or exc}")
                return
            # The document goes with the ExtrinsicObject's id as sent (its UUID after AssignUuids).
            entry_id = ctx.log.assigned_uuids.get(doc_id, doc_id)
            entry = next((e for e in request.iter(f"{_RIM}ExtrinsicObject") if e.get("id") == entry_id), None)
            mime_type = entry.get("mimeType") if entry is not None and entry.get("mimeType") else "application/octet-stream"
            content_id = new_content_id()
            document = etree.SubElement(request, f"{_XDSB}Document", id=entry_id)
            document.append(xop_include(content_id))
            attachments.append((content_id, mime_type, data))
            unique_id = _unique_id(entry) if entry is not None else None
            if unique_id:
                documents.append(expect.SubmittedDocument(unique_id, mime_type, data, ctx.log.name))
        if not self._no_placeholders(ctx, request):
            return
        outcome = self._send(ctx, ROUTES[PROVIDE_AND_REGISTER], request, attachments)
        if outcome is not None and outcome.status in (ns.SUCCESS, ns.PARTIAL_SUCCESS):
            self.submitted.update({d.unique_id: d for d in documents})

    def _stored_query(self, ctx: _Context, patients: _Patients) -> None:
        self._send_template(ctx, ADHOC_QUERY_REQUEST, "StoredQueryTransaction", "an AdhocQueryRequest", STORED_QUERY)

    def _retrieve(self, ctx: _Context, patients: _Patients) -> None:
        self._send_template(ctx, RETRIEVE_REQUEST, "RetrieveTransaction", "a RetrieveDocumentSetRequest", RETRIEVE)

    def _send_template(self, ctx: _Context, tag: str, transaction: str, what: str, route: str) -> None:
        """Send the step's request template as written, its $variables$ filled."""
        root = self._template(ctx, ctx.transaction.metadata_file)
        if root is None:
            return
        request = substitute(root, ctx.variables)
        if request.tag != tag:
            ctx.fail(f"{transaction} metadata must be {what}, not {request.tag}")
            return
        if self._no_placeholders(ctx, request):
            self._send(ctx, ROUTES[route], request)

    def _http(self, ctx: _Context, patients: _Patients) -> None:
        """A complete HTTP body (PnrXop, PnrNoXop): sent with the plan's Content-Type, after the
        toolkit's rewrites (patient, uniqueIds, sourceId) of the SOAP envelope it holds; the
        MIME framing and the other parts go byte for byte as written."""
        transaction = ctx.transaction
        content_type = dict(transaction.headers)["content-type"]
        media_type, params = parse_content_type(content_type)
        route = ROUTES.get(params.get("action", ""))
        if route is None:
            ctx.fail(f"HttpTransaction: the Content-Type names no known action: {content_type}")
            return
        try:
            body = transaction.body_file.read_bytes()
        except OSError as exc:
            ctx.fail(f"cannot read {transaction.body_file}: {exc.strerror or exc}")
            return
        try:
            if media_type == "multipart/related":
                parts = split_multipart(body, params.get("boundary", ""))
                xml = root_part(parts, params.get("start")).content
            else:
                xml = body
            envelope = etree.fromstring(xml.strip(), _PARSER)
        except (SoapFault, etree.XMLSyntaxError) as exc:
            ctx.fail(f"cannot read the SOAP envelope in {transaction.body_file}: {exc}")
            return
        patient = self._patient(ctx, patients)
        if patient is None:
            return
        rewritten = self._prepare(ctx, substitute(envelope, ctx.variables), patient)
        new_xml = etree.tostring(rewritten, xml_declaration=True, encoding="UTF-8")
        if body.count(xml) != 1:
            ctx.fail("HttpTransaction: cannot locate the envelope's bytes in the body to rewrite them")
            return
        body = body.replace(xml, new_xml, 1)
        soap_body = rewritten.find(f"{{{SOAP12}}}Body")
        ctx.log.input_metadata = soap_body[0] if soap_body is not None and len(soap_body) else rewritten
        url = self._url(ctx, route)
        if url is not None:
            self._exchange(ctx, route, url, content_type, body)

    def _null(self, ctx: _Context, patients: _Patients) -> None:
        self._after(ctx, None)

    # -- sending and checking -----------------------------------------------------------------

    def _url(self, ctx: _Context, route: Route) -> str | None:
        url = self.endpoints.registry if route.actor == "registry" else self.endpoints.repository
        if not url:
            ctx.fail(f"no {route.actor} endpoint given (--{route.actor} URL)")
        return url

    def _send(self, ctx: _Context, route: Route, request: etree._Element,
              attachments: Sequence[tuple[str, str, bytes]] = ()) -> expect.Outcome | None:
        ctx.log.input_metadata = request
        url = self._url(ctx, route)
        if url is None:
            return None
        envelope = build_envelope(request, route.action, to=url)
        if route.mtom:
            content_type, body = build_mtom(envelope, attachments, action=route.action)
        else:
            content_type, body = f'application/soap+xml; charset=UTF-8; action="{route.action}"', envelope
        return self._exchange(ctx, route, url, content_type, body)

    def _exchange(self, ctx: _Context, route: Route, url: str, content_type: str, body: bytes
                  ) -> expect.Outcome | None:
        exchange = Exchange(url, route.action, content_type, body)
        ctx.result.exchanges.append(exchange)
        try:
            reply = self.transport(HttpRequest(url, content_type, body))
        except OSError as exc:
            exchange.error = str(exc)
            ctx.fail(f"could not reach {url}: {exc}")
            return None
        exchange.status, exchange.response_content_type, exchange.response = reply.status, reply.content_type, reply.body
        media_type = parse_content_type(reply.content_type)[0]
        if reply.status >= 300 and "xml" not in media_type and not media_type.startswith("multipart/"):
            ctx.fail(f"HTTP {reply.status} from {url} ({media_type or 'no Content-Type'}): {reply.body[:200]!r}")
            return None
        try:
            message = parse_response(reply.content_type, reply.body)
        except (SoapFault, ValueError) as exc:
            reason = exc.reason if isinstance(exc, SoapFault) else str(exc)
            ctx.fail(f"HTTP {reply.status} from {url} is not a SOAP 1.2 response ({reason}): "
                     f"{reply.body[:200]!r}")
            return None
        outcome = expect.read_outcome(message.body)
        ctx.log.result = message.body
        step = ctx.step
        for failure in expect.check_status(step.expected_status or "Success", outcome):
            ctx.fail(failure)
        for failure in expect.check_error_codes(step.expected_error_codes, step.expected_error_messages, outcome):
            ctx.fail(failure)
        if outcome.kind != "Fault":
            for failure in expect.check_action(route.action + "Response", message.action):
                ctx.fail(failure)
            for failure in expect.check_body_kind(route.response_bodies, outcome):
                ctx.fail(failure)
            if route.action == RETRIEVE:
                self._check_retrieved(ctx, message)
        self._after(ctx, outcome)
        return outcome

    def _after(self, ctx: _Context, outcome: expect.Outcome | None) -> None:
        """ExpectedContents, Reports, then (with this step in the log) Assertions."""
        transaction = ctx.transaction
        assert transaction is not None
        if transaction.expected_contents and (outcome is None or outcome.kind != "Fault"):
            for failure in expect.check_contents(transaction.expected_contents, ctx.log.result, ctx.variables):
                ctx.fail(failure)
        for report in transaction.reports:
            element = ctx.log.input_metadata if report.section == "InputMetadata" else ctx.log.result
            if element is None:
                ctx.note(f"Report {report.name}: no {report.section} to read")
                continue
            try:
                value = expect.evaluate_report(report.xpath, element)
            except ValueError as exc:
                ctx.fail(str(exc))
                continue
            if value is None:
                ctx.note(f"Report {report.name}: the XPath selects nothing in {report.section}")
            else:
                ctx.log.reports[report.name] = value
        if transaction.assertions:
            unknown = [r for r in transaction.data_refs if r.file != "THIS"]
            for ref in unknown:
                ctx.fail(f"<DataRef file={ref.file!r}> is not supported (only THIS, the section's log)")
            if not unknown:
                # The step is in the section's log for its own assertions (12323, 12379 read it).
                ctx.log.passed = not ctx.result.reasons
                self.logs[(ctx.test.name, ctx.section.name, ctx.step.id)] = ctx.log
                document = self.section_log(ctx.test.name, ctx.section.name)
                for failure in expect.check_assertions(transaction.assertions, document, ctx.variables):
                    ctx.fail(failure)

    def _check_retrieved(self, ctx: _Context, message) -> None:
        retrieved = []
        for response in message.body.findall(f"{_XDSB}DocumentResponse"):
            uid = (response.findtext(f"{_XDSB}DocumentUniqueId") or "").strip()
            document = response.find(f"{_XDSB}Document")
            if document is None:
                ctx.fail(f"DocumentResponse for {uid} has no Document element")
                continue
            try:
                content = message.content(document)
            except SoapFault as exc:
                ctx.fail(f"DocumentResponse for {uid}: {exc.reason}")
                continue
            retrieved.append(expect.RetrievedDocument(
                (response.findtext(f"{_XDSB}RepositoryUniqueId") or "").strip(), uid,
                (response.findtext(f"{_XDSB}mimeType") or "").strip(), content))
        references = []
        for reference in ctx.transaction.reference_documents:
            uid = expect.fill(reference.uid, ctx.variables)
            try:
                references.append((uid, reference.path.read_bytes(), reference.path.name))
            except OSError as exc:
                ctx.fail(f"cannot read ReferenceDocument {reference.path}: {exc.strerror or exc}")
        metadata = self._reference_metadata(ctx, ctx.transaction.reference_metadata)
        for failure in expect.check_documents(retrieved, references, self.submitted, metadata):
            ctx.fail(failure)

    def _reference_metadata(self, ctx: _Context, reference: ReferenceMetadata | None) -> dict[str, etree._Element]:
        if reference is None:
            return {}
        test, section = resolve_testdir(ctx.test.name, ctx.section.name, reference.testdir)
        log = self._log_of(ctx, test, section, reference.step, "ReferenceMetadata")
        if log is None or log.result is None:
            return {}
        return {uid: entry for entry in log.result.iter(f"{_RIM}ExtrinsicObject") if (uid := _unique_id(entry))}

    # -- the section log ----------------------------------------------------------------------

    def section_log(self, test: str, section: str) -> etree._ElementTree:
        """The section's log as the toolkit writes it (the plans' Assertions are XPath over it):
        <TestResults><TestStep id=...><XxxTransaction><InputMetadata>request</InputMetadata>
        <Result>response</Result></XxxTransaction></TestStep>...</TestResults>."""
        root = etree.Element("TestResults", test=test, section=section)
        for (t, s, _), log in self.logs.items():
            if t == test and s == section:
                root.append(step_log_element(log))
        return etree.ElementTree(root)


def step_log_element(log: StepLog) -> etree._Element:
    element = etree.Element("TestStep", id=log.step, status="Pass" if log.passed else "Fail")
    if log.expected_status:
        etree.SubElement(element, "ExpectedStatus").text = log.expected_status
    transaction = etree.SubElement(element, log.kind if log.kind.endswith("Transaction") else "Transaction")
    if log.patient_id:
        etree.SubElement(transaction, "AssignedPatientId").text = log.patient_id
    for name, values in (("AssignedUids", log.assigned_uids), ("AssignedUuids", log.assigned_uuids)):
        if values:
            holder = etree.SubElement(transaction, name)
            for key, value in values.items():
                etree.SubElement(holder, "Assign", symbol=key, id=value)
    for name, value in log.reports.items():
        etree.SubElement(transaction, "Report", name=name).text = value
    for name, part in (("InputMetadata", log.input_metadata), ("Result", log.result)):
        if part is not None:
            etree.SubElement(transaction, name).append(copy.deepcopy(part))
    return element


# --- helpers ---------------------------------------------------------------------------------

def _restore_patient_ids(before: etree._Element, after: etree._Element) -> None:
    """<NoPatientId/>: only `$patientid$` is replaced (conformance-data README (b)); a patientId
    the template writes out stays as written. `prepare` sets them all, so put back the literal
    ones. `prepare` copies the tree without adding or removing elements: walk both together."""
    namespaces = {ns.RIM, RIM21}
    for old, new in zip(before.iter(), after.iter()):
        if not isinstance(old.tag, str) or etree.QName(old).namespace not in namespaces:
            continue
        if etree.QName(old).localname == "ExternalIdentifier" and old.get("identificationScheme") in PATIENT_ID_SCHEMES:
            value = old.get("value", "")
            if "$" not in value:
                new.set("value", value)


def _unique_id(entry: etree._Element) -> str | None:
    for identifier in entry.findall(f"{_RIM}ExternalIdentifier"):
        if identifier.get("identificationScheme") == ns.DE_UNIQUE_ID:
            return identifier.get("value")
    return None


def _element_of(exchange: Exchange) -> tuple[etree._Element | None, etree._Element | None]:
    """The bodies of a patient feed's exchange, for the step's log."""
    out: list[etree._Element | None] = []
    for content_type, data in ((exchange.request_content_type, exchange.request),
                               (exchange.response_content_type, exchange.response)):
        try:
            out.append(parse_response(content_type, data).body if data else None)
        except (SoapFault, ValueError):
            out.append(None)
    return out[0], out[1]


__all__ = [
    "CommandPatientFeed", "Endpoints", "Exchange", "FeedResult", "Hl7v3PatientFeed", "HttpReply", "HttpRequest",
    "NoPatientFeed", "PatientFeed", "Runner", "StepLog", "StepResult", "StorePatientFeed", "Transport",
    "http_transport", "step_log_element",
]
