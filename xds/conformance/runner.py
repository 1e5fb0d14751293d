"""Running NIST XDS Toolkit testkit tests against any XDS.b system over SOAP.

What belongs here: the order of things for each step (values from the log, the patient, the
toolkit's rewrites, sending, checking, logging), the log of what every step assigned and
reported (read by later steps and later tests of the same run), and the ways of reaching the
system under test: a transport callable for HTTP and a patient feed. What does not: reading
plans (`plan`), the rewrites themselves (`prepare`, `ebrim21`), judging responses (`expect`),
writing reports (`report`).

Theory of operation. `Runner.run(tests)` takes tests in running order (`plan.discover` puts
each after the tests it reads from) and runs every step of every section. A step:
1. resolves the values it reads from the run's log (`StepLog`, one per step run: the
   toolkit's AssignedUids / AssignedUuids / AssignedPatientId / AssignedSourceId sections, its
   Reports, the request and the response): <UseReport>, <UseId>, <UseXPath>, <UseObjectRef>,
   <UseRepositoryUniqueId>, and the test's orchestration parameters (plan.TEST_PARAMETERS); a
   value that is missing fails the step before anything is sent, naming the step it needed;
2. picks its patient: a <UseReport useAs="$patientid$">, else the test's patient (the patient
   of the test it takes its patient from, as 12346 takes 15818's; else one of its own, fed to
   the system before the test's first submission), or with <AltPatientId/> one never fed;
3. builds the request as the toolkit's transaction of that kind does: a submission (ITI-42,
   ITI-57, ITI-61, ITI-41) is translated from ebRIM 2.1 to 3.0 when <XDSb/>, its `$var$` filled,
   then `prepare`d (patient, new uniqueIds and sourceId, UUIDs when <AssignUuids/>) unless
   <ParseMetadata>False</ParseMetadata>; any other request (ITI-18, ITI-51, ITI-43, ITI-62,
   ITI-86) goes as its template says with its `$var$` filled; a placeholder left fails the step;
4. sends it to the registry or the repository endpoint: SOAP 1.2 with WS-Addressing, the
   action from xds.transactions, MTOM/XOP for ITI-41 and ITI-43;
5. checks status, error codes, wsa:Action, the response body, ExpectedContents, retrieved
   documents; evaluates <Report>s; logs the step; then, if nothing failed, evaluates
   <Assertions> over the section's log (which now holds this step, as the plans' XPath expects).
A step that fails does not stop its section: later steps run, and fail with a reason that
names the step whose value they missed.

Skips. What this runner cannot do is never reported as the system's failure: a step whose
plan asks for something it does not carry out (a transaction for another actor, XDS.a, an
action this build does not know) is not sent and is reported as skipped, saying why; a step
with an expectation it cannot check (an unknown ExpectedContents kind) runs, and is skipped
unless something else failed. A step that reads from a skipped step is skipped too.
"""

from __future__ import annotations

import base64
import binascii
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
from xds.conformance.plan import (
    TRANSACTIONS as PLAN_TRANSACTIONS,
    DataRef,
    ReferenceMetadata,
    Section,
    Step,
    Test,
    Transaction,
    UseXPath,
    resolve_testdir,
)
from xds.conformance.prepare import PATIENT_ID_SCHEMES, PLACEHOLDER, placeholders, prepare, substitute, unique_id_sequence
from xds.ebrim import ns
from xds.hl7v3.feed import pix_add_message
from xds.soap import build_envelope, build_mtom, parse_response
from xds.soap.fault import SoapFault
from xds.soap.mtom import new_content_id, parse_content_type, root_part, split_multipart, xop_include
from xds.soap.ns import SOAP12
from xds.transactions import ITI_44_ADD, REPOSITORY, TRANSACTIONS

PIX_FEED = ITI_44_ADD

LCM_SOR = f"{{{ns.LCM}}}SubmitObjectsRequest"
LCM_REMOVE = f"{{{ns.LCM}}}RemoveObjectsRequest"
PNR_REQUEST = f"{{{ns.XDSB}}}ProvideAndRegisterDocumentSetRequest"
ADHOC_QUERY_REQUEST = f"{{{ns.QUERY}}}AdhocQueryRequest"
RETRIEVE_REQUEST = f"{{{ns.XDSB}}}RetrieveDocumentSetRequest"
REMOVE_DOCUMENTS_REQUEST = f"{{{ns.RMD}}}RemoveDocumentsRequest"
_RIM = f"{{{ns.RIM}}}"
_XDSB = f"{{{ns.XDSB}}}"


@dataclass(frozen=True)
class Route:
    """How one IHE transaction is sent: its actions (from xds.transactions), the endpoint
    (registry or repository), MTOM or not, the response bodies it may come back with and the
    request element it sends."""

    name: str
    action: str
    response_action: str
    actor: str            # "registry" or "repository": which URL
    mtom: bool
    response_bodies: tuple[str, ...]
    request: str


# The transactions this runner sends: IHE name -> (MTOM request, response bodies, request
# element). Their actions, and the actor that answers (registry or repository), come from
# xds.transactions, the one place they are written (ITI TF-2 3.18, 3.41-3.43, 3.51, 3.57, 3.61,
# 3.62, 3.86; ITI TF-2 Appendix V).
ROUTE_SHAPES = {
    "ITI-42": (False, ("RegistryResponse",), LCM_SOR),
    "ITI-57": (False, ("RegistryResponse",), LCM_SOR),
    "ITI-61": (False, ("RegistryResponse",), LCM_SOR),
    "ITI-18": (False, ("AdhocQueryResponse",), ADHOC_QUERY_REQUEST),
    "ITI-51": (False, ("AdhocQueryResponse",), ADHOC_QUERY_REQUEST),
    "ITI-62": (False, ("RegistryResponse",), LCM_REMOVE),
    "ITI-41": (True, ("RegistryResponse",), PNR_REQUEST),
    "ITI-43": (True, ("RetrieveDocumentSetResponse",), RETRIEVE_REQUEST),
    "ITI-86": (False, ("RegistryResponse",), REMOVE_DOCUMENTS_REQUEST),
}


def _routes() -> dict[str, Route]:
    routes: dict[str, Route] = {}
    for t in TRANSACTIONS:
        shape = ROUTE_SHAPES.get(t.name)
        if shape is not None and t.name not in routes:
            actor = "repository" if t.actor == REPOSITORY else "registry"
            routes[t.name] = Route(t.name, t.action, t.response_action, actor, *shape)
    return routes


#: IHE name -> Route, for the transactions this build knows the actions of (a transaction
#: without a row in xds.transactions, such as ITI-61, has none: its steps are skipped).
ROUTES = _routes()
ROUTES_BY_ACTION = {r.action: r for r in ROUTES.values()}
REGISTER, STORED_QUERY = ROUTES["ITI-42"].action, ROUTES["ITI-18"].action
PROVIDE_AND_REGISTER, RETRIEVE = ROUTES["ITI-41"].action, ROUTES["ITI-43"].action

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
    skipped: bool = False
    patient_id: str | None = None                       # AssignedPatientId
    assigned_uids: dict[str, str] = field(default_factory=dict)   # AssignedUids
    assigned_uuids: dict[str, str] = field(default_factory=dict)  # AssignedUuids
    assigned_source_ids: dict[str, str] = field(default_factory=dict)  # AssignedSourceId
    reports: dict[str, str] = field(default_factory=dict)
    input_metadata: etree._Element | None = None
    result: etree._Element | None = None

    @property
    def name(self) -> str:
        return f"{self.test}/{self.section}/{self.step}"


@dataclass
class StepResult:
    """The verdict of a step, with what was sent and received. `reasons`: what failed (the
    system's failures); `skips`: what this runner could not do or check. A step with reasons
    failed; a step with only skips was skipped; a step with neither passed."""

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
    skips: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.test}/{self.section}/{self.step}"

    @property
    def skipped(self) -> bool:
        return bool(self.skips) and not self.reasons


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

    def skip(self, reason: str) -> None:
        self.result.skips.append(reason)

    def note(self, text: str) -> None:
        self.result.notes.append(text)

    @property
    def stopped(self) -> bool:
        """Something failed or cannot be done: nothing more is sent for this step."""
        return bool(self.result.reasons or self.result.skips)


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
        self.skipped_sections: dict[tuple[str, str], str] = {}  # (test, section) -> why

    # -- running ------------------------------------------------------------------------------

    def run(self, tests: Sequence[Test]) -> list[StepResult]:
        results = []
        for test in tests:
            results += self.run_test(test)
        return results

    def run_test(self, test: Test) -> list[StepResult]:
        results: list[StepResult] = []
        if test.problems:
            self.skipped_sections[(test.name, "")] = "; ".join(test.problems)
            results.append(self._record(StepResult(test.name, "", "(test)", "-", skips=list(test.problems))))
            return results
        patients = self._test_patient(test)
        for section in test.sections:
            if section.problems:
                self.skipped_sections[(test.name, section.name)] = "; ".join(section.problems)
                results.append(self._record(StepResult(test.name, section.name, "(section)", "-",
                                                       skips=list(section.problems))))
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
        result.passed = not result.reasons and not result.skips
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
            # The toolkit reports the run's parameters as Reports of every step (BasicTransaction.
            # reportManagerPostRun): 20001's queries read "$patientid$" from a step of their own test.
            patient = ctx.variables.get("$patientid$") or patients.default
            if patient:
                log.reports.setdefault("$patientid$", patient)
            log.passed = not result.reasons and not result.skips
            log.skipped = result.skipped
            self.logs[(test.name, section.name, step.id)] = log
            result.seconds = time.monotonic() - started
        return result

    def _dispatch(self, ctx: _Context, patients: _Patients) -> None:
        step, transaction = ctx.step, ctx.transaction
        if step.unsupported:
            for what in step.unsupported:
                ctx.skip(f"the plan uses {what}, which this runner does not carry out")
            return
        if step.new_patient_id:
            self._new_patient_step(ctx, patients)
        if transaction is None:
            if not step.new_patient_id:
                ctx.skip("the step holds no transaction: nothing to send or check")
            return
        for note in transaction.notes:
            ctx.note(note)
        kind = transaction.kind
        route = None
        if kind not in ("PatientIdentityFeedTransaction", "HttpTransaction", "NullTransaction"):
            if not transaction.xdsb:
                ctx.skip(f"<{kind}> without <XDSb/> is XDS.a, which this runner does not send")
                return
            iti = PLAN_TRANSACTIONS[kind]
            route = ROUTES.get(iti)
            if route is None:
                ctx.skip(f"<{kind}> is {iti}, whose action this build does not know (no {iti} row in "
                         "xds/transactions.py)")
                return
        self._resolve_variables(ctx)
        if ctx.stopped:
            return
        if transaction.wait_before_ms and self.wait:
            self.sleep(transaction.wait_before_ms / 1000)
        if kind in ("RegisterTransaction", "MuTransaction", "RegisterODDETransaction"):
            self._register(ctx, patients, route)
        elif kind == "ProvideAndRegisterTransaction":
            self._provide_and_register(ctx, patients, route)
        elif route is not None:
            self._send_template(ctx, route)
        elif kind == "HttpTransaction":
            self._http(ctx, patients)
        elif kind == "PatientIdentityFeedTransaction":
            self._patient_feed_step(ctx, patients)
        else:  # NullTransaction: Reports and Assertions over what earlier steps logged
            self._after(ctx, None)

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
            "$AlternatePatientId$": self.alt_patient_id,
        }
        if self.endpoints.repository_unique_id:
            values["$repuid$"] = self.endpoints.repository_unique_id
        return values

    def _resolve_variables(self, ctx: _Context) -> None:
        """The values of the step's Use... instructions, as the toolkit's Linkage and
        UseReportManager take them from the logs of earlier steps: each symbol is then replaced
        wherever it stands in the request (and in the assertions)."""
        transaction = ctx.transaction
        assert transaction is not None
        variables = self.builtins()
        for use_report in (*ctx.test.parameters, *transaction.use_reports):
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
        for use_id in transaction.all_use_ids():
            if use_id.value is not None:  # <UseId symbol= value=>: the value itself
                variables[use_id.symbol] = use_id.value
                continue
            log = self._step_log(ctx, use_id.testdir, use_id.step, f"UseId {use_id.symbol}")
            if log is None:
                continue
            assigned = {"AssignedUids": log.assigned_uids, "AssignedUuids": log.assigned_uuids,
                        "AssignedSourceId": log.assigned_source_ids}.get(use_id.section)
            value = log.patient_id if use_id.section == "AssignedPatientId" else (assigned or {}).get(use_id.id)
            if value is None:
                logged = ", ".join(sorted(assigned or {})) or "nothing"
                ctx.fail(f"UseId {use_id.symbol}: step {log.name} logged no {use_id.section} value for "
                         f"{use_id.id!r} (it logged: {logged})")
                continue
            variables[use_id.symbol] = value
        for use_xpath in transaction.use_xpaths:
            value = self._use_xpath(ctx, use_xpath)
            if value is not None:
                variables[use_xpath.symbol] = value
        for use_ref in transaction.use_object_refs:
            log = self._step_log(ctx, use_ref.testdir, use_ref.step, f"UseObjectRef {use_ref.symbol}")
            if log is None:
                continue
            refs = [] if log.result is None else expect.read_contents(log.result).object_refs
            if use_ref.index >= len(refs):
                ctx.fail(f"UseObjectRef {use_ref.symbol}: step {log.name} returned {len(refs)} ObjectRef(s), "
                         f"not one at index {use_ref.index}")
                continue
            variables[use_ref.symbol] = refs[use_ref.index].get("id", "")
        for use_repo in transaction.use_repository_unique_ids:
            log = self._step_log(ctx, use_repo.testdir, use_repo.step, f"UseRepositoryUniqueId {use_repo.symbol}")
            if log is None:
                continue
            found = set()
            for entry in expect.read_contents(log.result).documents if log.result is not None else ():
                found.add(_slot(entry, "repositoryUniqueId"))
            if len(found) != 1 or None in found:
                ctx.fail(f"UseRepositoryUniqueId {use_repo.symbol}: the DocumentEntries step {log.name} returned "
                         f"name {len(found - {None})} repositoryUniqueId(s) (one is needed)")
                continue
            variables[use_repo.symbol] = found.pop()
        ctx.variables = variables

    def _use_xpath(self, ctx: _Context, use: UseXPath) -> str | None:
        """<UseXPath>: the string value of the XPath over a step's entry in its section's log
        (the toolkit's TestStep element), or over an XML file."""
        if use.file is not None:
            try:
                context = etree.parse(str(use.file), _PARSER).getroot()
            except (OSError, etree.XMLSyntaxError) as exc:
                ctx.fail(f"UseXPath {use.symbol}: cannot read {use.file}: {exc}")
                return None
        else:
            log = self._step_log(ctx, use.testdir, use.step, f"UseXPath {use.symbol}")
            if log is None:
                return None
            document = self.section_log(log.test, log.section)
            context = next((e for e in document.getroot() if e.get("id") == log.step), document.getroot())
        try:
            value = str(context.xpath(f"string(({use.xpath}))"))
        except etree.XPathError as exc:
            ctx.fail(f"UseXPath {use.symbol}: {use.xpath!r} is not valid XPath 1.0 ({exc})")
            return None
        if use.decode_base64:
            try:
                value = base64.b64decode(value, validate=False).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                ctx.fail(f"UseXPath {use.symbol}: the value is not base64 text: {exc}")
                return None
        return value

    def _step_log(self, ctx: _Context, testdir: str | None, step: str, what: str) -> StepLog | None:
        test, section = resolve_testdir(ctx.test.name, ctx.section.name, testdir)
        return self._log_of(ctx, test, section, step, what)

    def _log_of(self, ctx: _Context, test: str, section: str, step: str, what: str) -> StepLog | None:
        log = self.logs.get((test, section, step))
        if log is None:
            skipped = self.skipped_sections.get((test, section)) or self.skipped_sections.get((test, ""))
            if skipped is not None:
                ctx.skip(f"{what}: section {test}/{section} was skipped ({skipped})")
            else:
                ctx.fail(f"{what}: there is no log of step {test}/{section}/{step} in this run "
                         f"(run test {test} first; `xds conformance run` adds the tests a test reads from)")
            return None
        if log.skipped:
            ctx.skip(f"{what} comes from step {log.name}, which was skipped")
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
        expected = ctx.step.expected_statuses
        if outcome.ok != ("Success" in expected):
            ctx.fail(f"Patient Identity Feed of {patient}: expected {' or '.join(expected)}; {outcome.detail}")
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

    def _translated(self, ctx: _Context, root: etree._Element) -> etree._Element | None:
        """ebRIM 2.1 -> 3.0 when the plan says <XDSb/> (a 3.0 template comes back as it is)."""
        try:
            return to_ebrim30(root)
        except ValueError as exc:
            ctx.fail(f"cannot translate the ebRIM 2.1 metadata to 3.0: {exc}")
            return None

    def _prepare(self, ctx: _Context, root: etree._Element, patient: str) -> etree._Element:
        transaction = ctx.transaction
        assert transaction is not None
        tree, prepared = prepare(
            root, patient_id=patient, source_id=self.source_id, new_unique_id=self._new_unique_id,
            assign_uuids=transaction.assign_uuids, no_assign_uids=transaction.no_assign_uids,
            assign_uids=transaction.assign_uids,
        )
        if transaction.no_patient_id:
            _restore_patient_ids(root, tree)
        ctx.log.patient_id = prepared["AssignedPatientId"]
        ctx.log.assigned_uids = dict(prepared["AssignedUids"])
        ctx.log.assigned_uuids = dict(prepared["AssignedUuids"])
        ctx.log.assigned_source_ids = dict(prepared["AssignedSourceId"])
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

    def _expect_root(self, ctx: _Context, request: etree._Element, route: Route) -> bool:
        if request.tag == route.request:
            return True
        ctx.fail(f"<{ctx.transaction.kind}> metadata must be {etree.QName(route.request).localname} "
                 f"({etree.QName(route.request).namespace}) for {route.name}, not {request.tag}")
        return False

    # -- transactions -------------------------------------------------------------------------

    def _register(self, ctx: _Context, patients: _Patients, route: Route) -> None:
        """A submission to the registry: ITI-42, ITI-57 (the toolkit's MuTransaction is its
        RegisterTransaction with the Update Document Set action), ITI-61."""
        transaction = ctx.transaction
        root = self._template(ctx, transaction.metadata_file)
        if root is None:
            return
        if not transaction.parse_metadata:
            # <ParseMetadata>False: no patient, uniqueIds nor UUIDs; only the values filled in.
            self._send_template(ctx, route, root)
            return
        root = self._translated(ctx, root)
        if root is None:
            return
        root = substitute(root, ctx.variables, as_written=True)
        patient = self._patient(ctx, patients)
        if patient is None:
            return
        request = self._prepare(ctx, root, patient)
        if self._expect_root(ctx, request, route) and self._no_placeholders(ctx, request):
            self._send(ctx, route, request)

    def _provide_and_register(self, ctx: _Context, patients: _Patients, route: Route) -> None:
        transaction = ctx.transaction
        root = self._template(ctx, transaction.metadata_file)
        if root is None:
            return
        if root.tag == PNR_REQUEST:
            request = root
        else:
            root = self._translated(ctx, root)
            if root is None:
                return
            if root.tag != LCM_SOR:
                ctx.fail(f"ProvideAndRegisterTransaction metadata must be a SubmitObjectsRequest or a "
                         f"ProvideAndRegisterDocumentSetRequest, not {root.tag}")
                return
            request = etree.Element(PNR_REQUEST, nsmap={"xdsb": ns.XDSB})
            request.append(copy.deepcopy(root))
        request = substitute(request, ctx.variables, as_written=True)
        if transaction.parse_metadata:
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
        outcome = self._send(ctx, route, request, attachments)
        if outcome is not None and outcome.status in (ns.SUCCESS, ns.PARTIAL_SUCCESS):
            self.submitted.update({d.unique_id: d for d in documents})

    def _send_template(self, ctx: _Context, route: Route, root: etree._Element | None = None) -> None:
        """Send the step's request template as written, its $variables$ filled (ITI-18, ITI-51,
        ITI-43, ITI-62, ITI-86, and a submission with <ParseMetadata>False)."""
        if root is None:
            root = self._template(ctx, ctx.transaction.metadata_file)
            if root is None:
                return
        request = substitute(root, ctx.variables, as_written=True)
        if ctx.transaction.clean_params:
            _clean_params(request)
        if self._expect_root(ctx, request, route) and self._no_placeholders(ctx, request):
            self._send(ctx, route, request)

    def _http(self, ctx: _Context, patients: _Patients) -> None:
        """A complete HTTP body (PnrXop, PnrNoXop): sent with the plan's Content-Type, after the
        toolkit's rewrites (patient, uniqueIds, sourceId) of the SOAP envelope it holds; the
        MIME framing and the other parts go byte for byte as written."""
        transaction = ctx.transaction
        content_type = dict(transaction.headers)["content-type"]
        media_type, params = parse_content_type(content_type)
        route = ROUTES_BY_ACTION.get(params.get("action", ""))
        if route is None:
            ctx.skip(f"HttpTransaction: the Content-Type names no action this runner knows: {content_type}")
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
        rewritten = self._prepare(ctx, substitute(envelope, ctx.variables, as_written=True), patient)
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

    # -- sending and checking -----------------------------------------------------------------

    def _url(self, ctx: _Context, route: Route) -> str | None:
        url = self.endpoints.registry if route.actor == "registry" else self.endpoints.repository
        if not url:
            ctx.skip(f"no {route.actor} endpoint given (--{route.actor} URL): {route.name} not sent")
        return url

    def _send(self, ctx: _Context, route: Route, request: etree._Element,
              attachments: Sequence[tuple[str, str, bytes]] = ()) -> expect.Outcome | None:
        ctx.log.input_metadata = request
        url = self._url(ctx, route)
        if url is None:
            return None
        headers = [etree.fromstring(block) for block in ctx.transaction.soap_headers]
        envelope = build_envelope(request, route.action, to=url, header_blocks=headers)
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
        for failure in expect.check_status(step.expected_statuses, outcome):
            ctx.fail(failure)
        for failure in expect.check_error_codes(step.expected_error_codes, step.expected_error_messages, outcome):
            ctx.fail(failure)
        if outcome.kind != "Fault":
            for failure in expect.check_action(route.response_action, message.action):
                ctx.fail(failure)
            for failure in expect.check_body_kind(route.response_bodies, outcome):
                ctx.fail(failure)
            if route.name == "ITI-43":
                self._check_retrieved(ctx, message)
        self._after(ctx, outcome)
        return outcome

    def _after(self, ctx: _Context, outcome: expect.Outcome | None) -> None:
        """ExpectedContents, Reports, then (with this step in the log, and only if nothing
        failed, as the toolkit's StepContext does) Assertions."""
        transaction = ctx.transaction
        assert transaction is not None
        if transaction.expected_contents and (outcome is None or outcome.kind != "Fault"):
            for failure in expect.check_contents(transaction.expected_contents, ctx.log.result, ctx.variables):
                ctx.fail(failure)
        for report in transaction.reports:
            element = self._report_source(ctx.log, report.section)
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
        for what in transaction.unchecked:
            ctx.skip(f"not checked: the plan uses {what}, which this runner does not know")
        if transaction.assertions and not ctx.result.reasons:
            # The step is in the section's log for its own assertions (12323, 12379 read it).
            ctx.log.passed = True
            self.logs[(ctx.test.name, ctx.section.name, ctx.step.id)] = ctx.log
            sources = self._assertion_sources(ctx, transaction.data_refs)
            if sources is not None:
                data = expect.assertion_data(sources)
                for failure in expect.check_assertions(transaction.assertions, data, ctx.variables):
                    ctx.fail(failure)

    @staticmethod
    def _report_source(log: StepLog, section: str) -> etree._Element | None:
        if section == "InputMetadata":
            return log.input_metadata
        if section == "Result":
            return log.result
        return step_log_element(log).find(f"./*/{section}")

    def _assertion_sources(self, ctx: _Context, refs: Sequence[DataRef]) -> list[tuple[str, etree._Element]] | None:
        """The logs and files the <DataRef>s name (AssertionEngine.buildDataModel): THIS, the
        section's log; a file of the plan (relative to the section's folder, TEST standing for
        it); or another section's log ("../submit/log.xml")."""
        sources = []
        for ref in refs:
            if ref.file == "THIS":
                sources.append((ref.as_, self.section_log(ctx.test.name, ctx.section.name).getroot()))
                continue
            path = Path(ref.file.replace("TEST", str(ctx.section.path), 1))
            path = path if path.is_absolute() else ctx.section.path / path
            if path.is_file():
                try:
                    sources.append((ref.as_, etree.parse(str(path), _PARSER).getroot()))
                except etree.XMLSyntaxError as exc:
                    ctx.fail(f"<DataRef file={ref.file!r}> is not well-formed XML: {exc}")
                    return None
                continue
            test, section = resolve_testdir(ctx.test.name, ctx.section.name, ref.file)
            if not any(t == test and s == section for t, s, _ in self.logs):
                ctx.skip(f"not checked: <DataRef file={ref.file!r}> names neither a file of the plan nor the log "
                         "of a section of this run")
                return None
            sources.append((ref.as_, self.section_log(test, section).getroot()))
        return sources

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
            path = reference.existing()
            try:
                references.append((uid, path.read_bytes(), path.name))
            except OSError as exc:
                ctx.fail(f"cannot read ReferenceDocument {path}: {exc.strerror or exc}")
        metadata = self._reference_metadata(ctx, ctx.transaction.reference_metadata)
        all_expected = ctx.step.expected_statuses == ("Success",)
        for failure in expect.check_documents(retrieved, references, self.submitted, metadata,
                                              all_expected=all_expected,
                                              mime_type=ctx.transaction.expected_mime_type):
            ctx.fail(failure)

    def _reference_metadata(self, ctx: _Context, reference: ReferenceMetadata | None) -> dict[str, etree._Element]:
        if reference is None:
            return {}
        log = self._step_log(ctx, reference.testdir, reference.step, "ReferenceMetadata")
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
    element = etree.Element("TestStep", id=log.step,
                            status="Skip" if log.skipped else "Pass" if log.passed else "Fail")
    if log.expected_status:
        etree.SubElement(element, "ExpectedStatus").text = log.expected_status
    transaction = etree.SubElement(element, log.kind if log.kind.endswith("Transaction") else "Transaction")
    if log.patient_id:
        etree.SubElement(etree.SubElement(transaction, "AssignedPatientId"), "Assign", symbol="PatientId",
                         id=log.patient_id)
    for name, values in (("AssignedUids", log.assigned_uids), ("AssignedUuids", log.assigned_uuids),
                         ("AssignedSourceId", log.assigned_source_ids)):
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


def _clean_params(request: etree._Element) -> None:
    """<CleanParams/> (StoredQueryTransaction.cleanSqParams): the AdhocQuery's attributes and
    slot values that still hold a `$name$` are dropped, and a slot left without values with them."""
    for query in request.iter(f"{_RIM}AdhocQuery"):
        for name, value in list(query.attrib.items()):
            if "$" in value:
                del query.attrib[name]
        for slot in query.findall(f"{_RIM}Slot"):
            values = slot.find(f"{_RIM}ValueList")
            if values is None:
                continue
            for value in values.findall(f"{_RIM}Value"):
                if PLACEHOLDER.search(value.text or ""):
                    values.remove(value)
            if len(values) == 0:
                query.remove(slot)


def _slot(entry: etree._Element, name: str) -> str | None:
    for slot in entry.findall(f"{_RIM}Slot"):
        if slot.get("name") == name:
            value = slot.findtext(f"{_RIM}ValueList/{_RIM}Value")
            return value.strip() if value else None
    return None


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
    "NoPatientFeed", "PatientFeed", "ROUTES", "Route", "Runner", "StepLog", "StepResult", "StorePatientFeed",
    "Transport", "http_transport", "step_log_element",
]
