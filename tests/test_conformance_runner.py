"""The conformance runner's own tests (xds.conformance: plan, expect, runner, report, command).

The runner must not pass what should fail, and must not fail the system for what it cannot do
itself. A small fake SOAP server (http.server on 127.0.0.1, port 0, in a thread) answers each
step with a crafted response that breaks one expectation (wrong status, a status word without
its URN, a missing error code, wrong counts, a missing HasMember, a Deprecated document where
Approved is expected, a false assertion, different retrieved bytes, a fault, a wrong wsa:Action,
an HTTP error ...), and each test checks that the step fails with a reason that says what is
wrong; the same step with a correct response passes. Every ExpectedContents kind of the
toolkit's Validator is checked both ways. Then: what the runner sends (ebRIM 3.0, the patient,
new uniqueIds, UUIDs, $var$ from earlier steps and tests, MTOM with the document bytes), the
options' transactions (ITI-62 and ITI-51 to the registry, ITI-86 to the repository, ITI-57 with
the version it updates), the toolkit's Use... instructions, what is skipped rather than failed
(another actor's transaction, XDS.a, an unknown element or expectation, a step reading a skipped
one), patient feeds (a command, ITI-44), plan reading (every NIST plan in conformance-data is
read without an unsupported element), reports (summary, JUnit, logs, known failures) and the
command line.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from lxml import etree

from xds.conformance import expect
from xds.conformance.command import add_parser, make_feed
from xds.conformance.plan import (
    ContentCheck,
    discover,
    order_tests,
    parse_testplan,
    read_index,
    read_test,
    resolve_testdir,
)
from xds.conformance.report import (
    compare,
    conformance_table,
    junit_xml,
    read_known_failures,
    summary_table,
    write_logs,
)
from xds.conformance.runner import (
    CommandPatientFeed,
    Endpoints,
    FeedResult,
    Hl7v3PatientFeed,
    HttpReply,
    HttpRequest,
    Runner,
    http_transport,
)
from xds.hl7v3.feed import pix_add_message
from xds.soap import SoapMessage, build_envelope, build_mtom, parse_message
from xds.soap.mtom import xop_include

CONFORMANCE = Path(__file__).resolve().parent.parent.parent / "shared" / "conformance-data"
HL7_SCHEMA = CONFORMANCE / "schemas" / "hl7v3" / "NE2008" / "multicacheschemas" / "PRPA_IN201301UV02.xsd"

RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
WARNING = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
SS_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
FOLDER_NODE = "urn:uuid:d9d542f3-6cc4-48b6-8870-ea235fbc94c2"
DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
STABLE = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"

REGISTER = "urn:ihe:iti:2007:RegisterDocumentSet-b"
STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
PNR = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
RETRIEVE = "urn:ihe:iti:2007:RetrieveDocumentSet"

DOCUMENT = b"This is my document.\n\nIt is great!\n"

# A small ebRIM 3.0 submission: one document in a SubmissionSet, the way testkit templates
# write it (symbolic ids, $patientid$, placeholder uniqueIds).
SUBMISSION = f"""<lcm:SubmitObjectsRequest xmlns:lcm="{LCM}" xmlns:rim="{RIM}">
 <rim:RegistryObjectList>
  <rim:ExtrinsicObject id="Document01" mimeType="text/plain" objectType="{STABLE}">
   <rim:ExternalIdentifier id="ei1" registryObject="Document01" identificationScheme="{DE_PATIENT_ID}" value="$patientid$"/>
   <rim:ExternalIdentifier id="ei2" registryObject="Document01" identificationScheme="{DE_UNIQUE_ID}" value="1.2.3"/>
  </rim:ExtrinsicObject>
  <rim:RegistryPackage id="SubmissionSet01">
   <rim:ExternalIdentifier id="ei3" registryObject="SubmissionSet01" identificationScheme="{SS_PATIENT_ID}" value="$patientid$"/>
   <rim:ExternalIdentifier id="ei4" registryObject="SubmissionSet01" identificationScheme="{SS_UNIQUE_ID}" value="1.2.4"/>
   <rim:ExternalIdentifier id="ei5" registryObject="SubmissionSet01" identificationScheme="{SS_SOURCE_ID}" value="1.2.5"/>
  </rim:RegistryPackage>
  <rim:Classification id="cl1" classifiedObject="SubmissionSet01" classificationNode="{SS_NODE}"/>
  <rim:Association id="as1" associationType="{HAS_MEMBER}" sourceObject="SubmissionSet01" targetObject="Document01"/>
 </rim:RegistryObjectList>
</lcm:SubmitObjectsRequest>"""

QUERY_BY_SS_UID = f"""<query:AdhocQueryRequest xmlns:query="{QUERY}" xmlns:rim="{RIM}">
 <query:ResponseOption returnComposedObjects="true" returnType="LeafClass"/>
 <rim:AdhocQuery id="urn:uuid:e8e3cb2c-e39c-46b9-99e4-c12f57260b83">
  <rim:Slot name="$XDSSubmissionSetUniqueId"><rim:ValueList><rim:Value>'$ssuid$'</rim:Value></rim:ValueList></rim:Slot>
 </rim:AdhocQuery>
</query:AdhocQueryRequest>"""

RETRIEVE_REQUEST = f"""<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="{XDSB}">
 <xdsb:DocumentRequest>
  <xdsb:RepositoryUniqueId>$repuid$</xdsb:RepositoryUniqueId>
  <xdsb:DocumentUniqueId>$doc_uid$</xdsb:DocumentUniqueId>
 </xdsb:DocumentRequest>
</xdsb:RetrieveDocumentSetRequest>"""


# --- the fake system -------------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes


Answer = Callable[[SoapMessage], Reply]


@dataclass
class FakeSystem:
    """A SOAP endpoint on 127.0.0.1 that records what it receives and answers with `answer`."""

    answer: Answer
    received: list[SoapMessage] = field(default_factory=list)
    raw: list[tuple[str, bytes]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def fake():
    system = FakeSystem(answer=lambda message: registry_reply(SUCCESS))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # http.server's name for the POST handler
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            content_type = self.headers.get("Content-Type", "")
            system.raw.append((content_type, body))
            system.paths.append(self.path)
            message = parse_message(content_type, body)
            system.received.append(message)
            reply = system.answer(message)
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    system.url = f"http://127.0.0.1:{server.server_address[1]}/xds"
    yield system
    server.shutdown()
    server.server_close()


def soap_reply(body: etree._Element | str, action: str, status: int = 200, attachments=()) -> Reply:
    element = etree.fromstring(body) if isinstance(body, str) else body
    envelope = build_envelope(element, action, relates_to="urn:uuid:00000000-0000-4000-8000-000000000000")
    if attachments:
        content_type, data = build_mtom(envelope, attachments, action=action)
        return Reply(status, content_type, data)
    return Reply(status, f'application/soap+xml; charset=UTF-8; action="{action}"', envelope)


def registry_response_xml(status: str, errors=()) -> str:
    items = "".join(f'<rs:RegistryError errorCode="{code}" codeContext="{context}" severity="{severity}"/>'
                    for code, context, severity in errors)
    error_list = f'<rs:RegistryErrorList highestSeverity="{ERROR}">{items}</rs:RegistryErrorList>' if errors else ""
    return f'<rs:RegistryResponse xmlns:rs="{RS}" status="{status}">{error_list}</rs:RegistryResponse>'


def registry_reply(status: str, errors=(), action: str = REGISTER + "Response") -> Reply:
    return soap_reply(registry_response_xml(status, errors), action)


def fault_reply(reason: str = "the registry broke") -> Reply:
    fault = (f'<env:Fault xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Code><env:Value>env:Receiver'
             f'</env:Value></env:Code><env:Reason><env:Text xml:lang="en">{reason}</env:Text></env:Reason></env:Fault>')
    return soap_reply(fault, "http://www.w3.org/2005/08/addressing/soap/fault", status=500)


def query_reply(objects: str, status: str = SUCCESS, errors=(), action: str = STORED_QUERY + "Response") -> Reply:
    items = "".join(f'<rs:RegistryError errorCode="{code}" codeContext="{context}" severity="{severity}"/>'
                    for code, context, severity in errors)
    error_list = f'<rs:RegistryErrorList highestSeverity="{ERROR}">{items}</rs:RegistryErrorList>' if errors else ""
    body = (f'<query:AdhocQueryResponse xmlns:query="{QUERY}" xmlns:rim="{RIM}" xmlns:rs="{RS}" status="{status}">'
            f'{error_list}<rim:RegistryObjectList>{objects}</rim:RegistryObjectList></query:AdhocQueryResponse>')
    return soap_reply(body, action)


def document(id_: str, status: str = APPROVED, uid: str = "1.2.3", object_type: str = STABLE, slots: str = "") -> str:
    return (f'<rim:ExtrinsicObject id="{id_}" status="{status}" objectType="{object_type}" mimeType="text/plain">'
            f'{slots}<rim:ExternalIdentifier id="{id_}-uid" registryObject="{id_}" identificationScheme="{DE_UNIQUE_ID}" '
            f'value="{uid}"/></rim:ExtrinsicObject>')


def submission_set(id_: str, status: str = APPROVED) -> str:
    return (f'<rim:RegistryPackage id="{id_}" status="{status}"><rim:Classification id="{id_}-c" '
            f'classifiedObject="{id_}" classificationNode="{SS_NODE}"/></rim:RegistryPackage>')


def folder(id_: str) -> str:
    return (f'<rim:RegistryPackage id="{id_}" status="{APPROVED}"><rim:Classification id="{id_}-c" '
            f'classifiedObject="{id_}" classificationNode="{FOLDER_NODE}"/></rim:RegistryPackage>')


def has_member(source: str, target: str, id_: str | None = None) -> str:
    return (f'<rim:Association id="{id_ or source + "-" + target}" associationType="{HAS_MEMBER}" '
            f'sourceObject="{source}" targetObject="{target}"/>')


def retrieve_reply(documents, status: str = SUCCESS, errors=()) -> Reply:
    items = "".join(f'<rs:RegistryError errorCode="{code}" codeContext="{context}" severity="{severity}"/>'
                    for code, context, severity in errors)
    error_list = f'<rs:RegistryErrorList highestSeverity="{ERROR}">{items}</rs:RegistryErrorList>' if errors else ""
    body = etree.fromstring(f'<xdsb:RetrieveDocumentSetResponse xmlns:xdsb="{XDSB}" xmlns:rs="{RS}">'
                            f'<rs:RegistryResponse status="{status}">{error_list}</rs:RegistryResponse>'
                            '</xdsb:RetrieveDocumentSetResponse>')
    attachments = []
    for number, (uid, mime, data) in enumerate(documents):
        response = etree.SubElement(body, f"{{{XDSB}}}DocumentResponse")
        etree.SubElement(response, f"{{{XDSB}}}RepositoryUniqueId").text = "1.2.840.1"
        etree.SubElement(response, f"{{{XDSB}}}DocumentUniqueId").text = uid
        etree.SubElement(response, f"{{{XDSB}}}mimeType").text = mime
        content_id = f"doc{number}@fake"
        etree.SubElement(response, f"{{{XDSB}}}Document").append(xop_include(content_id))
        attachments.append((content_id, mime, data))
    return soap_reply(body, RETRIEVE + "Response", attachments=attachments or [("none@fake", "text/plain", b"")])


# --- writing small tests ---------------------------------------------------------------------

def make_test(root: Path, name: str, sections: dict[str, str], files: dict[str, str | bytes] | None = None) -> Path:
    """A test folder: index.idx with the sections in order, each section's testplan.xml, and
    files (paths relative to the test folder)."""
    test = root / name
    test.mkdir(parents=True)
    (test / "index.idx").write_text("\n".join(sections) + "\n")
    for section, plan in sections.items():
        (test / section).mkdir()
        (test / section / "testplan.xml").write_text(f"<TestPlan><Test>{name}/{section}</Test>{plan}</TestPlan>")
    for path, content in (files or {}).items():
        target = test / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return test


def register_step(step_id: str = "submit", status: str = "Success", extra: str = "", inner: str = "") -> str:
    return (f'<TestStep id="{step_id}"><ExpectedStatus>{status}</ExpectedStatus>{extra}'
            f'<RegisterTransaction><XDSb/>{inner}<MetadataFile>submission.xml</MetadataFile></RegisterTransaction>'
            "</TestStep>")


def query_step(step_id: str = "query", contents: str = "", extra: str = "", inner: str = "", status: str = "Success") -> str:
    return (f'<TestStep id="{step_id}"><ExpectedStatus>{status}</ExpectedStatus>{extra}<StoredQueryTransaction><XDSb/>'
            f'<UseId testdir="../submit" id="SubmissionSet01" symbol="$ssuid$" step="submit" section="AssignedUids"/>'
            f'{inner}<MetadataFile>query.xml</MetadataFile>'
            f'{"<ExpectedContents>" + contents + "</ExpectedContents>" if contents else ""}'
            "</StoredQueryTransaction></TestStep>")


class RecordingFeed:
    description = "recording"

    def __init__(self, ok: bool = True):
        self.fed: list[str] = []
        self.ok = ok

    def feed(self, patient_id: str) -> FeedResult:
        self.fed.append(patient_id)
        return FeedResult(self.ok, f"fed {patient_id}" if self.ok else "the feed is down")


def run(fake: FakeSystem, *paths: Path, feed=None, **endpoint_options):
    runner = Runner(Endpoints(fake.url, fake.url, **endpoint_options), patient_feed=feed or RecordingFeed(),
                    wait=False)
    found = discover(list(paths))
    return runner, runner.run(found.tests)


def by_name(results):
    return {r.name: r for r in results}


def register_then_query(tmp_path: Path, contents: str, query_extra: str = "", query_inner: str = "",
                        query_status: str = "Success") -> Path:
    return make_test(tmp_path, "T1", {
        "submit": register_step(),
        "eval": query_step(contents=contents, extra=query_extra, inner=query_inner, status=query_status),
    }, {"submit/submission.xml": SUBMISSION, "eval/query.xml": QUERY_BY_SS_UID})


def answer_register_then(query: Reply) -> Answer:
    def answer(message: SoapMessage) -> Reply:
        return registry_reply(SUCCESS) if message.action == REGISTER else query

    return answer


# --- status and error codes ------------------------------------------------------------------

BREAKS_SUCCESS = [
    ("failure", lambda: registry_reply(FAILURE, [("XDSRegistryMetadataError", "no classCode", ERROR)]),
     "expected status Success, got Failure (XDSRegistryMetadataError (Error): no classCode)"),
    ("bare word", lambda: soap_reply(f'<rs:RegistryResponse xmlns:rs="{RS}" status="Success"/>', REGISTER + "Response"),
     "right word, wrong URN"),
    ("no status", lambda: soap_reply(f'<rs:RegistryResponse xmlns:rs="{RS}"/>', REGISTER + "Response"),
     "has no status attribute"),
    ("success with an error", lambda: registry_reply(SUCCESS, [("XDSRegistryError", "oops", ERROR)]),
     "status Success, but the RegistryErrorList holds errors of severity Error"),
    ("fault", lambda: fault_reply("the registry broke"), "got a SOAP Fault: env:Receiver: the registry broke"),
    ("wrong action", lambda: registry_reply(SUCCESS, action="urn:ihe:iti:2007:SomethingElse"),
     ("the response's wsa:Action is 'urn:ihe:iti:2007:SomethingElse', expected "
      "'urn:ihe:iti:2007:RegisterDocumentSet-bResponse'")),
    ("wrong body", lambda: soap_reply(f'<query:AdhocQueryResponse xmlns:query="{QUERY}" status="{SUCCESS}"/>',
                                      REGISTER + "Response"),
     "the response body is <AdhocQueryResponse>, expected <RegistryResponse>"),
    ("http error", lambda: Reply(404, "text/plain", b"not found\n"), "HTTP 404 from"),
    ("not soap", lambda: Reply(200, "application/soap+xml", b"<html>hello</html>"), "is not a SOAP 1.2 response"),
]


@pytest.mark.parametrize("name, reply, reason", BREAKS_SUCCESS, ids=[b[0] for b in BREAKS_SUCCESS])
def test_a_register_step_fails_on_a_broken_success(fake, tmp_path, name, reply, reason):
    test = make_test(tmp_path, "T1", {"submit": register_step()}, {"submit/submission.xml": SUBMISSION})
    fake.answer = lambda message: reply()
    _, results = run(fake, test)
    [result] = results
    assert not result.passed
    assert any(reason in r for r in result.reasons), result.reasons


def test_a_register_step_passes_on_success(fake, tmp_path):
    test = make_test(tmp_path, "T1", {"submit": register_step()}, {"submit/submission.xml": SUBMISSION})
    _, results = run(fake, test)
    assert [r.passed for r in results] == [True], results[0].reasons


def test_a_warning_does_not_spoil_success(fake, tmp_path):
    test = make_test(tmp_path, "T1", {"submit": register_step(extra="<ExpectedErrorCode>XDSExtraMetadataNotSaved</ExpectedErrorCode>")},
                     {"submit/submission.xml": SUBMISSION})
    fake.answer = lambda m: registry_reply(SUCCESS, [("XDSExtraMetadataNotSaved", "dropped", WARNING)])
    _, [result] = run(fake, test)
    assert result.passed, result.reasons


FAILURE_CASES = [
    ("right code", [("XDSUnknownPatientId", "who?", ERROR)], None),
    ("code in context", [("XDSRegistryError", "XDSUnknownPatientId: who?", ERROR)], None),
    ("wrong code", [("XDSRegistryMetadataError", "no", ERROR)],
     "expected an error 'XDSUnknownPatientId' in the RegistryErrorList; found: XDSRegistryMetadataError"),
    ("no error at all", [], "status Failure without any RegistryError"),
]


@pytest.mark.parametrize("name, errors, reason", FAILURE_CASES, ids=[c[0] for c in FAILURE_CASES])
def test_expected_error_message(fake, tmp_path, name, errors, reason):
    step = register_step(status="Failure", extra="<ExpectedErrorMessage>XDSUnknownPatientId</ExpectedErrorMessage>")
    test = make_test(tmp_path, "T1", {"submit": step}, {"submit/submission.xml": SUBMISSION})
    fake.answer = lambda m: registry_reply(FAILURE, errors)
    _, [result] = run(fake, test)
    if reason is None:
        assert result.passed, result.reasons
    else:
        assert not result.passed and any(reason in r for r in result.reasons), result.reasons


def test_expected_error_code_must_be_the_code_itself(fake, tmp_path):
    step = register_step(status="Failure", extra="<ExpectedErrorCode>XDSNonIdenticalHash</ExpectedErrorCode>")
    test = make_test(tmp_path, "T1", {"submit": step}, {"submit/submission.xml": SUBMISSION})
    fake.answer = lambda m: registry_reply(FAILURE, [("XDSRegistryError", "XDSNonIdenticalHash mentioned", ERROR)])
    _, [result] = run(fake, test)
    assert result.reasons == ["expected error code XDSNonIdenticalHash in the RegistryErrorList; found: XDSRegistryError"]


def test_expected_failure_is_not_met_by_success(fake, tmp_path):
    test = make_test(tmp_path, "T1", {"submit": register_step(status="Failure")}, {"submit/submission.xml": SUBMISSION})
    _, [result] = run(fake, test)
    assert result.reasons == ["expected status Failure, got Success"]


def test_expected_fault(fake, tmp_path):
    test = make_test(tmp_path, "T1", {"submit": register_step(status="Fault")}, {"submit/submission.xml": SUBMISSION})
    _, [result] = run(fake, test)
    assert result.reasons == ["expected a SOAP Fault, got status Success"]
    fake.answer = lambda m: fault_reply()
    _, [result] = run(fake, test)
    assert result.passed, result.reasons


def test_unreachable_system(tmp_path):
    test = make_test(tmp_path, "T1", {"submit": register_step()}, {"submit/submission.xml": SUBMISSION})
    runner = Runner(Endpoints("http://127.0.0.1:9/registry"), patient_feed=RecordingFeed(), wait=False)
    [result] = runner.run(discover([test]).tests)
    assert not result.passed and result.reasons[0].startswith("could not reach http://127.0.0.1:9/registry")


def test_injected_transport(tmp_path):
    """The runner takes any transport callable: no server needed."""
    sent: list[HttpRequest] = []

    def transport(request: HttpRequest) -> HttpReply:
        sent.append(request)
        reply = registry_reply(FAILURE, [("XDSRegistryError", "no", ERROR)])
        return HttpReply(reply.status, reply.content_type, reply.body)

    test = make_test(tmp_path, "T1", {"submit": register_step()}, {"submit/submission.xml": SUBMISSION})
    runner = Runner(Endpoints("http://sut/registry"), transport=transport, patient_feed=RecordingFeed(), wait=False)
    [result] = runner.run(discover([test]).tests)
    assert sent[0].url == "http://sut/registry" and 'action="urn:ihe:iti:2007:RegisterDocumentSet-b"' in sent[0].content_type
    assert result.reasons[0].startswith("expected status Success, got Failure")


def test_a_runner_error_fails_only_its_step(tmp_path):
    calls = []

    def transport(request: HttpRequest) -> HttpReply:
        calls.append(request)
        if len(calls) == 1:
            raise RuntimeError("boom")
        reply = registry_reply(SUCCESS)
        return HttpReply(reply.status, reply.content_type, reply.body)

    test = make_test(tmp_path, "T1", {"a": register_step(), "b": register_step()},
                     {"a/submission.xml": SUBMISSION, "b/submission.xml": SUBMISSION})
    runner = Runner(Endpoints("http://sut/registry"), transport=transport, patient_feed=RecordingFeed(), wait=False)
    first, second = runner.run(discover([test]).tests)
    assert first.reasons == ["the runner failed on this step: RuntimeError: boom"]
    assert "Traceback" in first.notes[-1] and second.passed


# --- what is sent ----------------------------------------------------------------------------

def test_the_request_is_rewritten_as_the_toolkit_does(fake, tmp_path):
    feed = RecordingFeed()
    test = make_test(tmp_path, "T1", {"submit": register_step(inner="<AssignUuids/>")},
                     {"submit/submission.xml": SUBMISSION})
    runner, [result] = run(fake, test, feed=feed)
    assert result.passed, result.reasons
    [message] = fake.received
    assert message.action == REGISTER and message.body.tag == f"{{{LCM}}}SubmitObjectsRequest"
    values = {e.get("identificationScheme"): e.get("value") for e in message.body.iter(f"{{{RIM}}}ExternalIdentifier")}
    # the test's own patient, fed before the first submission
    assert feed.fed == [values[DE_PATIENT_ID]] == [values[SS_PATIENT_ID]]
    assert values[DE_PATIENT_ID].endswith("^^^&1.3.6.1.4.1.21367.13.20.1000&ISO")
    # new uniqueIds under the run's root, the runner's sourceId
    assert values[DE_UNIQUE_ID].startswith(runner.uid_root + ".") and values[SS_UNIQUE_ID].startswith(runner.uid_root)
    assert values[SS_SOURCE_ID] == runner.source_id
    # UUIDs for the symbolic ids, references following
    log = runner.logs[("T1", "submit", "submit")]
    document_uuid = log.assigned_uuids["Document01"]
    assert message.body.find(f".//{{{RIM}}}ExtrinsicObject").get("id") == document_uuid
    assert message.body.find(f".//{{{RIM}}}Association").get("targetObject") == document_uuid
    assert log.assigned_uids["Document01"] == values[DE_UNIQUE_ID]
    assert log.patient_id == values[DE_PATIENT_ID]


def test_ebrim21_templates_are_sent_as_30(fake, tmp_path):
    template = (CONFORMANCE / "iti-42" / "nist" / "11990" / "submit" / "single_doc.xml")
    if not template.is_file():
        pytest.skip(f"the public conformance data is not at {CONFORMANCE}")
    test = make_test(tmp_path, "T1", {"submit": register_step()}, {"submit/submission.xml": template.read_bytes()})
    run(fake, test)
    body = fake.received[0].body
    assert body.tag == f"{{{LCM}}}SubmitObjectsRequest"
    assert not [e for e in body.iter() if isinstance(e.tag, str) and "2.1" in etree.QName(e).namespace]
    assert "$patientid$" not in etree.tostring(body).decode()


def test_no_patient_id_keeps_a_written_patient(fake, tmp_path):
    written = SUBMISSION.replace('identificationScheme="' + DE_PATIENT_ID + '" value="$patientid$"',
                                 'identificationScheme="' + DE_PATIENT_ID + '" value="OTHER^^^&amp;1.2.3&amp;ISO"')
    test = make_test(tmp_path, "T1", {"submit": register_step(inner="<NoPatientId/>")}, {"submit/submission.xml": written})
    run(fake, test)
    values = {e.get("identificationScheme"): e.get("value") for e in fake.received[0].body.iter(f"{{{RIM}}}ExternalIdentifier")}
    assert values[DE_PATIENT_ID] == "OTHER^^^&1.2.3&ISO"
    assert values[SS_PATIENT_ID].startswith("XDS")


def test_alt_patient_id_is_never_fed(fake, tmp_path):
    feed = RecordingFeed()
    test = make_test(tmp_path, "T1", {"submit": register_step(extra="<AltPatientId/>")}, {"submit/submission.xml": SUBMISSION})
    runner, _ = run(fake, test, feed=feed)
    values = {e.get("identificationScheme"): e.get("value") for e in fake.received[0].body.iter(f"{{{RIM}}}ExternalIdentifier")}
    assert values[DE_PATIENT_ID] == runner.alt_patient_id and feed.fed == []


def test_a_failing_patient_feed_fails_the_submission(fake, tmp_path):
    test = make_test(tmp_path, "T1", {"submit": register_step()}, {"submit/submission.xml": SUBMISSION})
    _, [result] = run(fake, test, feed=RecordingFeed(ok=False))
    assert fake.received == []
    assert result.reasons[0].startswith("could not feed the test patient") and "the feed is down" in result.reasons[0]


def test_placeholders_left_fail_before_sending(fake, tmp_path):
    test = make_test(tmp_path, "T1", {"retrieve": (
        '<TestStep id="r"><ExpectedStatus>Success</ExpectedStatus><RetrieveTransaction><XDSb/>'
        '<MetadataFile>query.xml</MetadataFile></RetrieveTransaction></TestStep>')},
        {"retrieve/query.xml": RETRIEVE_REQUEST})
    _, [result] = run(fake, test)
    assert fake.received == []
    assert result.reasons == [("placeholders left unfilled in the request: $doc_uid$, $repuid$ "
                               "(give the repository's uniqueId: --repository-uid)")]


def test_values_flow_across_sections_and_tests(fake, tmp_path):
    """UseId (AssignedUids, AssignedUuids, AssignedPatientId), UseReport (a Report, the
    automatic <id>_uuid, the PIF's $patientid$), from other sections and other tests."""
    feed = RecordingFeed()
    make_test(tmp_path, "PIF", {"pif": (
        '<TestStep id="step"><ExpectedStatus>Success</ExpectedStatus>'
        "<PatientIdentityFeedTransaction><XDSb/><NoMetadata/></PatientIdentityFeedTransaction></TestStep>")})
    make_test(tmp_path, "FIXTURE", {"submit": register_step(inner=(
        '<UseReport reportName="$patientid$" test="PIF" section="pif" step="step" useAs="$patientid$"/>'
        '<AssignUuids/><Report name="ssuid" section="InputMetadata">'
        f"//*[local-name()='ExternalIdentifier'][@identificationScheme='{SS_UNIQUE_ID}']/@value</Report>"))},
        {"submit/submission.xml": SUBMISSION})
    query = (f'<query:AdhocQueryRequest xmlns:query="{QUERY}" xmlns:rim="{RIM}"><rim:AdhocQuery id="x">'
             "<rim:Slot name='a'><rim:ValueList><rim:Value>$ssuid$|$uuid$|$pid$|$ss_uuid$|$report$</rim:Value>"
             "</rim:ValueList></rim:Slot></rim:AdhocQuery></query:AdhocQueryRequest>")
    user = make_test(tmp_path, "USER", {"q": (
        '<TestStep id="q"><ExpectedStatus>Success</ExpectedStatus><StoredQueryTransaction><XDSb/>'
        '<UseId testdir="../../FIXTURE/submit" id="SubmissionSet01" symbol="$ssuid$" step="submit" section="AssignedUids"/>'
        '<UseId testdir="../../FIXTURE/submit" id="Document01" symbol="$uuid$" step="submit" section="AssignedUuids"/>'
        '<UseId testdir="../../FIXTURE/submit" id="SubmissionSet01" symbol="$pid$" step="submit" section="AssignedPatientId"/>'
        '<UseReport test="FIXTURE" section="submit" step="submit" reportName="SubmissionSet01_uuid" useAs="$ss_uuid$"/>'
        '<UseReport test="FIXTURE" section="submit" step="submit" reportName="ssuid" useAs="$report$"/>'
        "<MetadataFile>query.xml</MetadataFile></StoredQueryTransaction></TestStep>")},
        {"q/query.xml": query})
    fake.answer = answer_register_then(query_reply(""))
    found = discover([user])  # FIXTURE and PIF are found beside USER and run first
    assert [t.name for t in found.tests] == ["PIF", "FIXTURE", "USER"] and found.pulled_in == ["FIXTURE", "PIF"]
    runner = Runner(Endpoints(fake.url), patient_feed=feed, wait=False)
    results = runner.run(found.tests)
    assert all(r.passed for r in results), [r.reasons for r in results]
    log = runner.logs[("FIXTURE", "submit", "submit")]
    sent = fake.received[-1].body.findtext(f".//{{{RIM}}}Value")
    assert sent == "|".join([log.assigned_uids["SubmissionSet01"], log.assigned_uuids["Document01"], feed.fed[0],
                             log.assigned_uuids["SubmissionSet01"], log.assigned_uids["SubmissionSet01"]])
    assert log.patient_id == feed.fed[0] and len(feed.fed) == 1  # the PIF's patient, fed once


def test_a_missing_value_names_the_step_it_needed(fake, tmp_path):
    test = make_test(tmp_path, "T1", {"eval": query_step()}, {"eval/query.xml": QUERY_BY_SS_UID})
    _, [result] = run(fake, test)
    assert fake.received == []
    assert result.reasons[0].startswith("UseId $ssuid$: there is no log of step T1/submit/submit in this run")


def test_a_value_from_a_failed_step_is_noted(fake, tmp_path):
    test = register_then_query(tmp_path, "<None/>")
    fake.answer = lambda m: registry_reply(FAILURE, [("XDSRegistryError", "x", ERROR)]) if m.action == REGISTER else query_reply("")
    _, results = run(fake, test)
    assert by_name(results)["T1/eval/query"].notes == ["UseId $ssuid$ comes from step T1/submit/submit, which failed"]


# --- ExpectedContents ------------------------------------------------------------------------

ONE_DOC = submission_set("ss") + document("doc") + has_member("ss", "doc")
TWO_DOCS = (submission_set("ss") + document("d1") + document("d2", uid="1.2.9") + has_member("ss", "d1")
            + has_member("ss", "d2"))
# A SubmissionSet with a document in a new Folder (ITI TF-3 4.2.2.1.7): SS-doc, SS-folder,
# folder-doc, and SS to the folder-doc association.
DOC_IN_FOLDER = (ONE_DOC + folder("f") + has_member("ss", "f") + has_member("f", "doc", "fd")
                 + has_member("ss", "fd"))
TWO_DOCS_IN_FOLDER = (TWO_DOCS + folder("f") + has_member("ss", "f") + has_member("f", "d1", "fd1")
                      + has_member("f", "d2", "fd2") + has_member("ss", "fd1") + has_member("ss", "fd2"))
ONE_OF_TWO_IN_FOLDER = (TWO_DOCS + folder("f") + has_member("ss", "f") + has_member("f", "d1", "fd1")
                        + has_member("ss", "fd1"))
ON_DEMAND = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"


def association(type_: str, source: str, target: str, id_: str | None = None) -> str:
    return (f'<rim:Association id="{id_ or source + "-" + type_ + "-" + target}" '
            f'associationType="urn:ihe:iti:2007:AssociationType:{type_}" sourceObject="{source}" targetObject="{target}"/>')


REPLACED = (document("new") + document("old", status=DEPRECATED, uid="1.2.8") + association("RPLC", "new", "old"))
SNAPSHOT = (document("snap") + document("od", object_type=ON_DEMAND, uid="1.2.7")
            + '<rim:Association id="s" associationType="urn:ihe:iti:2010:AssociationType:IsSnapshotOf" '
              'sourceObject="snap" targetObject="od"/>')
CONTENT_CASES = [
    # (ExpectedContents, objects returned, reason or None for a pass): each as the toolkit's
    # Validator.run_test_assertion checks it.
    ('<Documents count="1"/>', ONE_DOC, None),
    ('<Documents count="1"/>', ONE_DOC + document("doc2", uid="1.2.9"), "ExpectedContents Documents: expected 1, got 2"),
    ('<ObjectRefs count="1"/>', '<rim:ObjectRef id="urn:uuid:a"/>', None),
    ('<ObjectRefs count="2"/>', '<rim:ObjectRef id="urn:uuid:a"/>', "ExpectedContents ObjectRefs: expected 2, got 1"),
    ('<ObjectRefs count="1"/>', '<rim:ObjectRef id="urn:uuid:a"/>' + document("d"),
     "ExpectedContents ObjectRefs: an ObjectRef answer holds no other objects; got 1 Documents"),
    ('<SubmissionSets count="0"/>', ONE_DOC, "ExpectedContents SubmissionSets: expected 0, got 1"),
    ('<Folders count="1"/>', ONE_DOC, "ExpectedContents Folders: expected 1, got 0"),
    ('<Associations count="0"/>', ONE_DOC, "ExpectedContents Associations: expected 0, got 1"),
    ("<SSwithOneDoc/>", ONE_DOC, None),
    ("<SSwithOneDoc/>", submission_set("ss") + document("doc") + association("APND", "doc", "x"),
     "ExpectedContents SSwithOneDoc: no HasMember association from SubmissionSet ss to DocumentEntry doc"),
    ("<SSwithOneDoc/>", submission_set("ss") + document("doc"), "ExpectedContents SSwithOneDoc: expected 1 Association, got 0"),
    ("<SSwithOneDoc/>", document("doc") + has_member("ss", "doc"),
     "ExpectedContents SSwithOneDoc: no SubmissionSet in the response"),
    ("<SSwithOneDoc/>", submission_set("ss", status=DEPRECATED) + document("doc") + has_member("ss", "doc"),
     "ExpectedContents SSwithOneDoc: every SubmissionSet must be Approved; ss is Deprecated"),
    ("<SSwithOneDocOnly/>", submission_set("ss", status=DEPRECATED) + document("doc") + has_member("ss", "doc"), None),
    ("<SSwithTwoDoc/>", TWO_DOCS, None),
    ("<SSwithTwoDoc/>", ONE_DOC, [f"ExpectedContents SSwithTwoDoc: expected 2 {k}, got 1"
                                  for k in ("DocumentEntry", "Association")]),
    ("<SSwithTwoDocOnly/>", TWO_DOCS.replace(f'"{HAS_MEMBER}" sourceObject="ss" targetObject="d2"',
                                              f'"{HAS_MEMBER}" sourceObject="x" targetObject="d2"'),
     "ExpectedContents SSwithTwoDocOnly: no HasMember association from SubmissionSet ss to DocumentEntry d2"),
    ("<SSwithOneDocOneFol/>", DOC_IN_FOLDER, None),
    ("<SSwithOneDocOneFol/>", ONE_DOC + folder("f") + has_member("ss", "f"), [
        "ExpectedContents SSwithOneDocOneFol: expected 4 Association, got 2",
        "ExpectedContents SSwithOneDocOneFol: expected 1 HasMember association(s) from Folder f to the DocumentEntries, got 0"]),
    ("<SSwithTwoDocOneFol/>", TWO_DOCS_IN_FOLDER, None),
    ("<SSwithTwoDocOneFol/>", ONE_DOC + folder("f") + has_member("ss", "f"),
     "ExpectedContents SSwithTwoDocOneFol: expected 2 DocumentEntry, got 1"),
    ("<SSwithTwoDocOneFolOneDocInFol/>", ONE_OF_TWO_IN_FOLDER, None),
    ("<SSwithTwoDocOneFolOneDocInFol/>", TWO_DOCS_IN_FOLDER,
     "ExpectedContents SSwithTwoDocOneFolOneDocInFol: expected 5 Association, got 7"),
    ("<SSwithOneFol/>", submission_set("ss") + folder("f") + has_member("ss", "f"), None),
    ("<SSwithOneFol/>", submission_set("ss") + folder("f"), [
        "ExpectedContents SSwithOneFol: expected 1 Association, got 0",
        "ExpectedContents SSwithOneFol: no HasMember association from SubmissionSet ss to Folder f"]),
    ("<SSApproved/>", submission_set("ss", status="urn:oasis:names:tc:ebxml-regrep:StatusType:Submitted"),
     "ExpectedContents SSApproved: every SubmissionSet must be Approved; ss is Submitted"),
    ("<SSApproved/>", "", "ExpectedContents SSApproved: no SubmissionSet in the response"),
    ("<NoSubmissionSet/>", ONE_DOC, "ExpectedContents NoSubmissionSet: expected no SubmissionSet, got one"),
    ("<NoSubmissionSet/>", document("d"), None),
    ("<NoDocument/>", ONE_DOC, "ExpectedContents NoDocument: expected 0 DocumentEntry, got 1"),
    ("<DocApp/>", ONE_DOC, None),
    ("<DocApp/>", submission_set("ss") + document("doc", status=DEPRECATED) + has_member("ss", "doc"),
     "ExpectedContents DocApp: every DocumentEntry must be Approved; doc is Deprecated"),
    ("<DocApp/>", "", None),  # every DocumentEntry of none: the toolkit passes it too (30006 eval_rplc_contents)
    ("<DocDep/>", ONE_DOC, "ExpectedContents DocDep: every DocumentEntry must be Deprecated; doc is Approved"),
    ("<DocDep/>", "", None),
    ("<OneDocApp/>", REPLACED, None),
    ("<OneDocApp/>", TWO_DOCS, "ExpectedContents OneDocApp: expected exactly one Approved DocumentEntry, got 2"),
    ("<OneDocDep/>", REPLACED, None),
    ("<OneDocDep/>", ONE_DOC, "ExpectedContents OneDocDep: expected exactly one Deprecated DocumentEntry, got 0"),
    ("<FolApp/>", submission_set("ss") + folder("f"), None),
    ("<FolApp/>", folder("f").replace(APPROVED, DEPRECATED),
     "ExpectedContents FolApp: every Folder must be Approved; f is Deprecated"),
    ("<FolDep/>", folder("f"), "ExpectedContents FolDep: every Folder must be Deprecated; f is Approved"),
    ("<HasRPLC/>", REPLACED, None),
    ("<HasRPLC/>", ONE_DOC, "ExpectedContents HasRPLC: no RPLC association in the response"),
    ("<HasAPND/>", document("a") + document("b", uid="1.2.8") + association("APND", "a", "b")
     + association("APND", "c", "b"), "ExpectedContents HasAPND: several APND associations for the same DocumentEntry: b"),
    ("<HasXFRM_RPLC/>", document("a") + document("b", uid="1.2.8") + association("XFRM_RPLC", "a", "b"), None),
    ("<DocRplcDoc/>", REPLACED, None),
    ("<DocRplcDoc/>", REPLACED.replace(f'id="old" status="{DEPRECATED}"', f'id="old" status="{APPROVED}"'),
     "ExpectedContents DocRplcDoc: every replaced DocumentEntry must be Deprecated; old is Approved"),
    ("<HasSnapshotPattern/>", SNAPSHOT, None),
    ("<HasSnapshotPattern/>", SNAPSHOT.replace(ON_DEMAND, STABLE),
     "ExpectedContents HasSnapshotPattern: the IsSnapshotOf target od is not an On-Demand DocumentEntry"),
    ("<None/>", "", None),
    ("<None/>", '<rim:ObjectRef id="urn:uuid:a"/>', None),  # None counts no ObjectRefs (Validator)
    ("<None/>", ONE_DOC, [f"ExpectedContents None: expected no {k}, got 1" for k in ("SubmissionSets", "Documents")]),
    ("<None/>", has_member("a", "b"), "ExpectedContents None: expected no Associations, got 1"),
]


@pytest.mark.parametrize("contents, objects, reason", CONTENT_CASES,
                         ids=[f"{i}-{c[0]}" for i, c in enumerate(CONTENT_CASES)])
def test_expected_contents(fake, tmp_path, contents, objects, reason):
    test = register_then_query(tmp_path, contents)
    fake.answer = answer_register_then(query_reply(objects))
    _, results = run(fake, test)
    result = by_name(results)["T1/eval/query"]
    if reason is None:
        assert result.passed, result.reasons
    else:
        assert result.reasons == ([reason] if isinstance(reason, str) else reason)


def test_registry_response_is_valid():
    """RegistryResponseIsValid (a check of a submission's response): a known status other than
    Failure, and errors that say their code and severity."""
    def check(body: str) -> list[str]:
        return expect.check_contents([ContentCheck("RegistryResponseIsValid")], etree.fromstring(body), {})

    assert check(registry_response_xml(SUCCESS)) == []
    assert check(registry_response_xml(FAILURE, [("XDSRegistryError", "x", ERROR)])) == [
        "ExpectedContents RegistryResponseIsValid: the response status is Failure"]
    assert check(registry_response_xml("Success")) == [
        "ExpectedContents RegistryResponseIsValid: status 'Success' is not an ebRS/IHE response status"]


def test_document_entries_must_only_include(fake, tmp_path):
    contents = ('<DocumentEntries><MustOnlyInclude><DocumentEntry>'
                '<UseId testdir="../submit" id="Document01" symbol="$uuid$" step="submit" section="AssignedUuids"/>'
                f"<DocumentEntryType>{STABLE}</DocumentEntryType></DocumentEntry></MustOnlyInclude></DocumentEntries>")
    test = make_test(tmp_path, "T1", {
        "submit": register_step(inner="<AssignUuids/>"),
        "eval": query_step(contents=contents)},
        {"submit/submission.xml": SUBMISSION, "eval/query.xml": QUERY_BY_SS_UID})
    holder = {}

    def answer(message):
        if message.action == REGISTER:
            holder["uuid"] = message.body.find(f".//{{{RIM}}}ExtrinsicObject").get("id")
            return registry_reply(SUCCESS)
        return query_reply(holder.pop("objects", None) or document(holder["uuid"]))

    fake.answer = answer
    _, results = run(fake, test)
    assert by_name(results)["T1/eval/query"].passed, by_name(results)["T1/eval/query"].reasons
    holder["objects"] = document("urn:uuid:00000000-0000-4000-8000-00000000000f")
    _, results = run(fake, test)
    [reason] = by_name(results)["T1/eval/query"].reasons
    assert reason.startswith("ExpectedContents DocumentEntries: MustOnlyInclude: expected exactly ['urn:uuid:")
    assert "got ['urn:uuid:00000000-0000-4000-8000-00000000000f']" in reason


def test_failure_status_with_contents(fake, tmp_path):
    """12368: Failure, XDSResultNotSinglePatient, and no documents."""
    test = register_then_query(tmp_path, '<Documents count="0"/>', query_status="Failure",
                               query_extra="<ExpectedErrorCode>XDSResultNotSinglePatient</ExpectedErrorCode>")
    fake.answer = answer_register_then(query_reply("", FAILURE, [("XDSResultNotSinglePatient", "two", ERROR)]))
    _, results = run(fake, test)
    assert by_name(results)["T1/eval/query"].passed
    fake.answer = answer_register_then(query_reply(document("d"), FAILURE, [("XDSResultNotSinglePatient", "two", ERROR)]))
    _, results = run(fake, test)
    assert by_name(results)["T1/eval/query"].reasons == ["ExpectedContents Documents: expected 0, got 1"]


# --- Reports and Assertions ------------------------------------------------------------------

def test_assertions_over_the_section_log(fake, tmp_path):
    """11990: an XPath over the section's log (the toolkit's layout); 12323: UseReport values
    put into the XPath text as written, and $DATE$."""
    sections = {
        "submit": register_step(),
        "eval": query_step(step_id="by_uid", inner=(
            '<Report name="status" section="Result">//*[local-name()=\'ExtrinsicObject\']/@status</Report>')) + (
            '<TestStep id="verify"><NullTransaction><Assertions><DataRef file="THIS" as="output"/>'
            "<Assert id=\"approved\">//TestStep[@id='by_uid']/StoredQueryTransaction/Result/*[local-name()='AdhocQueryResponse']"
            "//*[local-name()='ExtrinsicObject']/@status = 'urn:oasis:names:tc:ebxml-regrep:StatusType:Approved'</Assert>"
            "</Assertions></NullTransaction></TestStep>"
            '<TestStep id="date"><NullTransaction>'
            '<UseReport reportName="status" section="THIS" step="by_uid" useAs="theStatus"/>'
            "<Assertions><Assert id=\"same\">'theStatus' = 'urn:oasis:names:tc:ebxml-regrep:StatusType:Approved' "
            "and string-length('$DATE$') = 8</Assert></Assertions></NullTransaction></TestStep>"),
    }
    test = make_test(tmp_path, "T1", sections, {"submit/submission.xml": SUBMISSION, "eval/query.xml": QUERY_BY_SS_UID})
    fake.answer = answer_register_then(query_reply(ONE_DOC))
    _, results = run(fake, test)
    assert all(r.passed for r in results), [r.reasons for r in results]
    fake.answer = answer_register_then(query_reply(submission_set("ss") + document("doc", status=DEPRECATED)))
    _, results = run(fake, test)
    results = by_name(results)
    assert results["T1/eval/verify"].reasons[0].startswith("assertion 'approved' is false: //TestStep[@id='by_uid']")
    [reason] = results["T1/eval/date"].reasons
    assert reason.startswith("assertion 'same' is false: 'urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated' = ")
    assert "$DATE$" not in reason and "theStatus" not in reason


def test_an_invalid_assertion_is_a_failure(fake, tmp_path):
    test = make_test(tmp_path, "T1", {"s": (
        '<TestStep id="x"><NullTransaction><Assertions><Assert id="bad">count(//</Assert></Assertions>'
        "</NullTransaction></TestStep>")})
    _, [result] = run(fake, test)
    assert result.reasons[0].startswith("assertion 'bad' is not valid XPath 1.0")


def assertion_step(step_id: str, asserts: str, refs: str = '<DataRef file="THIS" as="output"/>') -> str:
    return f'<TestStep id="{step_id}"><NullTransaction><Assertions>{refs}{asserts}</Assertions></NullTransaction></TestStep>'


def test_assertions_hold_as_the_toolkit_reads_them(fake, tmp_path):
    """AssertionEngine: the XPath's string value must be "true" (a node-set holds only when its
    first node says "true"); "equalsIgnoreCase" compares the lower-cased sides; the data is
    <Data><as>log</as></Data>, another section's log by its path."""
    test = make_test(tmp_path, "T1", {
        "submit": register_step(),
        "check": (assertion_step("nodes", "<Assert id=\"a\">//*[local-name()='RegistryResponse']/@status</Assert>")
                  + assertion_step("case", "<Assert id=\"b\">'ABC' equalsIgnoreCase 'abc'</Assert>")
                  + assertion_step("other", "<Assert id=\"c\">count(/Data/submitted//TestStep[@id='submit']) = 1 and "
                                            "count(/Data/here//TestStep[@id='other']) = 1</Assert>",
                                   '<DataRef file="../submit/log.xml" as="submitted"/><DataRef file="THIS" as="here"/>')
                  + assertion_step("nothing", "<Assert id=\"d\">count(//TestStep) = 0</Assert>", refs="")
                  + assertion_step("missing", "<Assert id=\"e\">true()</Assert>", '<DataRef file="../nowhere/log.xml" as="x"/>')),
    }, {"submit/submission.xml": SUBMISSION})
    _, results = run(fake, test)
    results = by_name(results)
    assert results["T1/check/nodes"].reasons == ["assertion 'a' is false: //*[local-name()='RegistryResponse']/@status"]
    assert results["T1/check/case"].passed and results["T1/check/other"].passed, results["T1/check/other"].reasons
    assert results["T1/check/nothing"].passed  # no DataRef: nothing to read
    assert results["T1/check/missing"].skips == [
        "not checked: <DataRef file='../nowhere/log.xml'> names neither a file of the plan nor the log of a section of this run"]


def test_assertions_are_not_made_after_a_failure(fake, tmp_path):
    """StepContext runs the assertion engine only for a step that has not failed."""
    test = make_test(tmp_path, "T1", {"s": register_step(inner=(
        '<Assertions><DataRef file="THIS" as="output"/><Assert id="x">false()</Assert></Assertions>'))},
        {"s/submission.xml": SUBMISSION})
    fake.answer = lambda m: registry_reply(FAILURE, [("XDSRegistryError", "no", ERROR)])
    _, [result] = run(fake, test)
    assert len(result.reasons) == 1 and result.reasons[0].startswith("expected status Success, got Failure")
    fake.answer = lambda m: registry_reply(SUCCESS)
    _, [result] = run(fake, test)
    assert result.reasons == ["assertion 'x' is false: false()"]


def test_document_entries_include_exclude_and_type(fake, tmp_path):
    def entries(body: str) -> str:
        return (f"<DocumentEntries>{body}</DocumentEntries>")

    use = '<UseId testdir="../submit" id="Document01" symbol="$uuid$" step="submit" section="AssignedUuids"/>'
    cases = [
        (entries(f"<Include><DocumentEntry>{use}</DocumentEntry></Include>"), lambda u: document(u) + document("x"), []),
        (entries(f"<Include><DocumentEntry>{use}</DocumentEntry></Include>"), lambda u: document("x"),
         ["ExpectedContents DocumentEntries: Include: ['{u}'] not in the response"]),
        (entries(f"<Exclude><DocumentEntry>{use}</DocumentEntry></Exclude>"), lambda u: document("x"), []),
        (entries(f"<Exclude><DocumentEntry>{use}</DocumentEntry></Exclude>"), lambda u: document(u),
         ["ExpectedContents DocumentEntries: Exclude: ['{u}'] must not be in the response"]),
        (entries(f"<DocumentEntryType>{ON_DEMAND}</DocumentEntryType>"), lambda u: document("x", object_type=ON_DEMAND), []),
        (entries(f"<DocumentEntryType>{ON_DEMAND}</DocumentEntryType>"), lambda u: document("x"),
         [f"ExpectedContents DocumentEntries: DocumentEntryType: every DocumentEntry must have objectType {ON_DEMAND}; "
          "not: x"]),
    ]
    for number, (contents, objects, reasons) in enumerate(cases):
        test = make_test(tmp_path / str(number), "T1", {
            "submit": register_step(inner="<AssignUuids/>"), "eval": query_step(contents=contents)},
            {"submit/submission.xml": SUBMISSION, "eval/query.xml": QUERY_BY_SS_UID})
        holder = {}

        def answer(message):
            if message.action == REGISTER:
                holder["uuid"] = message.body.find(f".//{{{RIM}}}ExtrinsicObject").get("id")
                return registry_reply(SUCCESS)
            return query_reply(objects(holder["uuid"]))

        fake.answer = answer
        _, results = run(fake, test)
        assert by_name(results)["T1/eval/query"].reasons == [r.format(u=holder["uuid"]) for r in reasons], contents


# --- ITI-41 and ITI-43 -----------------------------------------------------------------------

def pnr_and_retrieve(tmp_path: Path, reference: bytes = DOCUMENT) -> Path:
    return make_test(tmp_path, "T1", {
        "PnR": ('<TestStep id="submit"><ExpectedStatus>Success</ExpectedStatus><ProvideAndRegisterTransaction><XDSb/>'
                "<AssignUuids/><MetadataFile>submission.xml</MetadataFile>"
                '<Document id="Document01">my_document.txt</Document></ProvideAndRegisterTransaction></TestStep>'),
        "Retrieve": ('<TestStep id="retrieve"><ExpectedStatus>Success</ExpectedStatus><RetrieveTransaction><XDSb/>'
                     '<UseReport reportName="Document01_uid" section="PnR" step="submit" useAs="$doc_uid$"/>'
                     "<MetadataFile>query.xml</MetadataFile><ExpectedContents/>"
                     '<ReferenceDocument uid="$doc_uid$">PnR/reference.txt</ReferenceDocument>'
                     "</RetrieveTransaction></TestStep>"),
    }, {"PnR/submission.xml": SUBMISSION, "PnR/my_document.txt": DOCUMENT, "PnR/reference.txt": reference,
        "Retrieve/query.xml": RETRIEVE_REQUEST})


class FakeRepository:
    """Keeps what ITI-41 sends; ITI-43 gives it back (or what `tamper` makes of it)."""

    def __init__(self, tamper: Callable[[bytes], bytes] = lambda data: data, drop: bool = False):
        self.documents: dict[str, tuple[str, bytes]] = {}
        self.tamper = tamper
        self.drop = drop

    def __call__(self, message: SoapMessage) -> Reply:
        if message.action == PNR:
            for doc in message.body.findall(f"{{{XDSB}}}Document"):
                entry = next(e for e in message.body.iter(f"{{{RIM}}}ExtrinsicObject") if e.get("id") == doc.get("id"))
                uid = next(i.get("value") for i in entry.iter(f"{{{RIM}}}ExternalIdentifier")
                           if i.get("identificationScheme") == DE_UNIQUE_ID)
                self.documents[uid] = (entry.get("mimeType"), message.content(doc))
            return registry_reply(SUCCESS, action=PNR + "Response")
        uids = [u.text for u in message.body.iter(f"{{{XDSB}}}DocumentUniqueId")]
        found = [(u, *self.documents[u]) for u in uids if u in self.documents and not self.drop]
        return retrieve_reply([(u, mime, self.tamper(data)) for u, mime, data in found])


def test_provide_and_register_sends_mtom_with_the_document(fake, tmp_path):
    test = pnr_and_retrieve(tmp_path)
    fake.answer = FakeRepository()
    runner, results = run(fake, test, repository_unique_id="1.2.840.1")
    assert all(r.passed for r in results), [r.reasons for r in results]
    pnr = fake.received[0]
    assert pnr.is_mtom and pnr.action == PNR
    [doc] = pnr.body.findall(f"{{{XDSB}}}Document")
    assert doc.get("id") == runner.logs[("T1", "PnR", "submit")].assigned_uuids["Document01"]
    assert doc.find("{http://www.w3.org/2004/08/xop/include}Include") is not None
    assert pnr.content(doc) == DOCUMENT
    assert fake.received[1].is_mtom and fake.received[1].action == RETRIEVE
    assert fake.received[1].body.findtext(f".//{{{XDSB}}}RepositoryUniqueId") == "1.2.840.1"


def test_retrieved_bytes_that_differ_fail(fake, tmp_path):
    test = pnr_and_retrieve(tmp_path)
    fake.answer = FakeRepository(tamper=lambda data: data.replace(b"great", b"GREAT"))
    _, results = run(fake, test, repository_unique_id="1.2.840.1")
    reasons = by_name(results)["T1/Retrieve/retrieve"].reasons
    assert len(reasons) == 2
    size = len(DOCUMENT)
    assert reasons[0].endswith(f"differs from ReferenceDocument reference.txt: same length ({size} bytes), "
                               "first difference at byte 28")
    assert f"differs from the one submitted in T1/PnR/submit: same length ({size} bytes)" in reasons[1]


def test_retrieved_document_against_the_reference_file(fake, tmp_path):
    """The reference file is what counts even when the run submitted the same bytes (12029's
    upstream defect: it names another file than it submits)."""
    test = pnr_and_retrieve(tmp_path, reference=b"another document")
    fake.answer = FakeRepository()
    _, results = run(fake, test, repository_unique_id="1.2.840.1")
    [reason] = by_name(results)["T1/Retrieve/retrieve"].reasons
    assert reason.endswith(f"differs from ReferenceDocument reference.txt: {len(DOCUMENT)} bytes instead of 16")


def test_a_document_not_returned_fails(fake, tmp_path):
    test = pnr_and_retrieve(tmp_path)
    fake.answer = FakeRepository(drop=True)
    _, results = run(fake, test, repository_unique_id="1.2.840.1")
    [reason] = by_name(results)["T1/Retrieve/retrieve"].reasons
    assert reason.startswith("document 2.25.") and "was not returned (ReferenceDocument reference.txt); returned: none" in reason


def test_a_reference_document_is_read_from_the_section_folder_first(fake, tmp_path):
    """The toolkit resolves <ReferenceDocument> against the section's folder; the upstream plans
    keep the file under the test's folder ("submit/my_document.pdf" from 12029/retrieve), which
    is read when the section has none."""
    test = pnr_and_retrieve(tmp_path, reference=b"another document")
    (test / "Retrieve" / "PnR").mkdir()
    (test / "Retrieve" / "PnR" / "reference.txt").write_bytes(DOCUMENT)
    fake.answer = FakeRepository()
    _, results = run(fake, test, repository_unique_id="1.2.840.1")
    assert by_name(results)["T1/Retrieve/retrieve"].passed, by_name(results)["T1/Retrieve/retrieve"].reasons


def test_a_reference_document_is_not_demanded_from_a_failing_retrieve(fake, tmp_path):
    """50000/verify: after ITI-86 the retrieve must fail; its ReferenceDocument is not returned."""
    test = pnr_and_retrieve(tmp_path)
    plan = test / "Retrieve" / "testplan.xml"
    plan.write_text(plan.read_text().replace("<ExpectedStatus>Success</ExpectedStatus>",
                                             "<ExpectedStatus>Failure</ExpectedStatus>"))

    def answer(message):
        if message.action == PNR:
            return registry_reply(SUCCESS, action=PNR + "Response")
        return retrieve_reply([], status=FAILURE, errors=[("XDSDocumentUniqueIdError", "gone", ERROR)])

    fake.answer = answer
    _, results = run(fake, test, repository_unique_id="1.2.840.1")
    assert by_name(results)["T1/Retrieve/retrieve"].passed, by_name(results)["T1/Retrieve/retrieve"].reasons


def test_expected_mime_type(fake, tmp_path):
    test = pnr_and_retrieve(tmp_path)
    plan = test / "Retrieve" / "testplan.xml"
    plan.write_text(plan.read_text().replace("<ExpectedContents/>", "<ExpectedMimeType>text/xml</ExpectedMimeType>"))
    fake.answer = FakeRepository()
    _, results = run(fake, test, repository_unique_id="1.2.840.1")
    [reason] = by_name(results)["T1/Retrieve/retrieve"].reasons
    assert reason.endswith("has mimeType 'text/plain', ExpectedMimeType says 'text/xml'")


def test_retrieved_document_against_its_metadata():
    content = b"abc"
    entry = etree.fromstring(document("d", slots=(
        '<rim:Slot name="hash"><rim:ValueList><rim:Value>0000</rim:Value></rim:ValueList></rim:Slot>'
        '<rim:Slot name="size"><rim:ValueList><rim:Value>4</rim:Value></rim:ValueList></rim:Slot>')).replace(
        "<rim:ExtrinsicObject", f'<rim:ExtrinsicObject xmlns:rim="{RIM}"', 1))
    retrieved = [expect.RetrievedDocument("1.2", "1.2.3", "application/pdf", content)]
    failures = expect.check_documents(retrieved, [], {}, {"1.2.3": entry})
    assert failures == [
        "retrieved document 1.2.3 has mimeType 'application/pdf'; its DocumentEntry says 'text/plain'",
        f"retrieved document 1.2.3: SHA-1 {hashlib.sha1(content).hexdigest()} is not the DocumentEntry's hash 0000",
        "retrieved document 1.2.3: 3 bytes, the DocumentEntry's size says 4",
    ]


def test_partial_success(fake, tmp_path):
    test = make_test(tmp_path, "T1", {"Retrieve": (
        '<TestStep id="partial"><ExpectedStatus>PartialSuccess</ExpectedStatus><RetrieveTransaction><XDSb/>'
        "<MetadataFile>query.xml</MetadataFile></RetrieveTransaction></TestStep>")},
        {"Retrieve/query.xml": RETRIEVE_REQUEST.replace("$doc_uid$", "1.2.3")})
    fake.answer = lambda m: retrieve_reply([("1.2.3", "text/plain", b"x")], status=PARTIAL,
                                           errors=[("XDSDocumentUniqueIdError", "bad", ERROR)])
    _, [result] = run(fake, test, repository_unique_id="1.2.840.1")
    assert result.passed, result.reasons
    fake.answer = lambda m: retrieve_reply([("1.2.3", "text/plain", b"x")])
    _, [result] = run(fake, test, repository_unique_id="1.2.840.1")
    assert result.reasons == ["expected status PartialSuccess, got Success"]


def test_http_transaction_sends_the_body_with_its_content_type(fake, tmp_path):
    template = CONFORMANCE / "iti-41" / "nist" / "PnrXop" / "Xop"
    if not template.is_dir():
        pytest.skip(f"the public conformance data is not at {CONFORMANCE}")
    test = make_test(tmp_path, "PnrXop", {"Xop": (template / "testplan.xml").read_text().split("<TestPlan>", 1)[1]
                                          .rsplit("</TestPlan>", 1)[0]},
                     {"Xop/body.txt": (template / "body.txt").read_bytes()})
    fake.answer = lambda m: registry_reply(SUCCESS, action=PNR + "Response")
    runner, [result] = run(fake, test)
    assert result.passed, result.reasons
    content_type, _ = fake.raw[0]
    assert content_type.startswith('multipart/related; boundary="MIMEBoundary_95b57d7287e4fa4b528a8f050c41f8ad829c20332f23b48d"')
    message = fake.received[0]
    values = {e.get("identificationScheme"): e.get("value") for e in message.body.iter(f"{{{RIM}}}ExternalIdentifier")}
    assert values[SS_UNIQUE_ID] == runner.logs[("PnrXop", "Xop", "submit")].assigned_uids["SubmissionSet01"]
    assert values[DE_PATIENT_ID] == runner.patients_of["PnrXop"]
    # the document part goes byte for byte as the body file has it
    original = parse_message(content_type, (template / "body.txt").read_bytes())
    [doc] = message.body.findall(f"{{{XDSB}}}Document")
    [original_doc] = original.body.findall(f"{{{XDSB}}}Document")
    assert message.content(doc) == original.content(original_doc) and message.content(doc).startswith(b"This is my")


# --- patient feeds ---------------------------------------------------------------------------

def pif_test(tmp_path: Path, status: str = "Success") -> Path:
    return make_test(tmp_path, "PIF", {"pif": (
        f'<TestStep id="step"><ExpectedStatus>{status}</ExpectedStatus>'
        "<PatientIdentityFeedTransaction><XDSb/><NoMetadata/></PatientIdentityFeedTransaction></TestStep>")})


def test_patient_feed_step_and_its_report(fake, tmp_path):
    feed = RecordingFeed()
    runner, [result] = run(fake, pif_test(tmp_path), feed=feed)
    assert result.passed and feed.fed == [runner.logs[("PIF", "pif", "step")].reports["$patientid$"]]
    _, [result] = run(fake, pif_test(tmp_path / "again"), feed=RecordingFeed(ok=False))
    assert result.reasons[0].startswith("Patient Identity Feed of XDS") and "the feed is down" in result.reasons[0]


def test_command_patient_feed(fake, tmp_path):
    out = tmp_path / "fed.txt"
    feed = CommandPatientFeed([sys.executable, "-c", f"import sys; open({str(out)!r}, 'a').write(sys.argv[1])"])
    runner, [result] = run(fake, pif_test(tmp_path), feed=feed)
    assert result.passed, result.reasons
    assert out.read_text() == runner.patients_of["PIF"]
    failing = CommandPatientFeed([sys.executable, "-c", "import sys; print('no such domain'); sys.exit(3)"])
    assert failing.feed("P^^^&1.2&ISO").detail.endswith("exited with 3: no such domain")


def test_hl7v3_patient_feed(fake):
    def answer(message):
        code = "AA" if message.body.find(".//{urn:hl7-org:v3}patient/{urn:hl7-org:v3}id").get("extension") == "P1" else "AE"
        ack = (f'<MCCI_IN000002UV01 xmlns="urn:hl7-org:v3" ITSVersion="XML_1.0"><acknowledgement><typeCode code="{code}"/>'
               "<acknowledgementDetail><text>unknown domain</text></acknowledgementDetail>"
               "</acknowledgement></MCCI_IN000002UV01>")
        return soap_reply(ack, "urn:hl7-org:v3:MCCI_IN000002UV01")

    fake.answer = answer
    feed = Hl7v3PatientFeed(fake.url, http_transport(10))
    ok = feed.feed("P1^^^&1.2.3&ISO")
    assert ok.ok and ok.detail == "ITI-44 feed of P1^^^&1.2.3&ISO: acknowledged AA"
    assert fake.received[0].action == "urn:hl7-org:v3:PRPA_IN201301UV02"
    refused = feed.feed("P2^^^&1.2.3&ISO")
    assert not refused.ok and "got acknowledgement AE" in refused.detail and "unknown domain" in refused.detail


def test_the_iti44_message_is_valid_hl7v3():
    if not HL7_SCHEMA.is_file():
        pytest.skip(f"the HL7v3 schemas are not at {HL7_SCHEMA.parent}")
    schema = etree.XMLSchema(etree.parse(str(HL7_SCHEMA)))
    message = pix_add_message("P1^^^&1.2.3&ISO", sender="1.2.3.4", receiver="1.2.3.5")
    assert schema.validate(message), schema.error_log
    patient_id = message.find(".//{urn:hl7-org:v3}patient/{urn:hl7-org:v3}id")
    assert (patient_id.get("root"), patient_id.get("extension")) == ("1.2.3", "P1")


# --- plans -----------------------------------------------------------------------------------

# --- what this runner cannot do: skipped, never the system's failure -------------------------

def test_unknown_plan_elements_skip_the_step_unsent(fake, tmp_path):
    test = make_test(tmp_path, "T1", {"s": (
        '<TestStep id="x"><ExpectedStatus>Success</ExpectedStatus><RegisterTransaction><XDSb/>'
        "<MetadataFile>submission.xml</MetadataFile><Frobnicate/></RegisterTransaction></TestStep>")},
        {"s/submission.xml": SUBMISSION})
    _, [result] = run(fake, test)
    assert fake.received == []
    assert result.skipped and not result.passed and not result.reasons
    assert result.skips == ["the plan uses <Frobnicate> in <RegisterTransaction>, which this runner does not carry out"]


def test_an_unknown_expectation_runs_the_step_and_skips_it(fake, tmp_path):
    """An ExpectedContents kind the toolkit does not know either: the submission still goes (a
    later step may need it) and every other check is made; a failure still fails."""
    test = make_test(tmp_path, "T1", {"s": register_step(inner="<ExpectedContents><FolApproved/></ExpectedContents>")},
                     {"s/submission.xml": SUBMISSION})
    runner, [result] = run(fake, test)
    assert len(fake.received) == 1 and result.skipped
    assert result.skips == ["not checked: the plan uses ExpectedContents kind <FolApproved>, which this runner does not know"]
    assert runner.logs[("T1", "s", "submit")].assigned_uids  # logged for later steps
    fake.answer = lambda m: registry_reply(FAILURE, [("XDSRegistryError", "no", ERROR)])
    _, [result] = run(fake, test)
    assert not result.skipped and result.reasons[0].startswith("expected status Success, got Failure")


OTHER_ACTOR_STEPS = [
    ('<XCQTransaction><XDSb/><MetadataFile>q.xml</MetadataFile></XCQTransaction>',
     "the plan uses <XCQTransaction>: ITI-38 Cross Gateway Query (a Responding Gateway), an actor this runner does not "
     "test, which this runner does not carry out"),
    ('<FhirCreateTransaction/>',
     "the plan uses <FhirCreateTransaction>: FHIR, an actor this runner does not test, which this runner does not carry out"),
    ('<RegisterTransaction><XDSa/><MetadataFile>submission.xml</MetadataFile></RegisterTransaction>',
     "the plan uses <XDSa>: XDS.a (ebXML 2.1 over SOAP 1.1), which this runner does not send, which this runner does not "
     "carry out"),
    ('<RegisterTransaction><MetadataFile>submission.xml</MetadataFile></RegisterTransaction>',
     "<RegisterTransaction> without <XDSb/> is XDS.a, which this runner does not send"),
    ('<RegisterODDETransaction><XDSb/><MetadataFile>submission.xml</MetadataFile></RegisterODDETransaction>',
     "<RegisterODDETransaction> is ITI-61, whose action this build does not know (no ITI-61 row in xds/transactions.py)"),
    ("", "the step holds no transaction: nothing to send or check"),
]


@pytest.mark.parametrize("transaction, reason", OTHER_ACTOR_STEPS, ids=[r[:30] for _, r in OTHER_ACTOR_STEPS])
def test_what_this_runner_does_not_send_is_skipped(fake, tmp_path, transaction, reason):
    test = make_test(tmp_path, "T1", {"s": f'<TestStep id="x"><ExpectedStatus>Success</ExpectedStatus>{transaction}'
                                           "</TestStep>"}, {"s/submission.xml": SUBMISSION})
    _, [result] = run(fake, test)
    assert fake.received == [] and result.skipped and result.skips == [reason]


def test_a_step_reading_a_skipped_step_is_skipped_too(fake, tmp_path):
    test = make_test(tmp_path, "T1", {
        "submit": register_step(inner="<SOAP11/>"),
        "eval": query_step(),
    }, {"submit/submission.xml": SUBMISSION, "eval/query.xml": QUERY_BY_SS_UID})
    _, results = run(fake, test)
    assert fake.received == [] and all(r.skipped for r in results)
    assert by_name(results)["T1/eval/query"].skips == ["UseId $ssuid$ comes from step T1/submit/submit, which was skipped"]


def test_unreadable_sections_are_skipped(tmp_path):
    test = tmp_path / "T1"
    (test / "a").mkdir(parents=True)
    (test / "index.idx").write_text("a\nmissing\n")
    (test / "a" / "testplan.xml").write_text("<TestPlan><TestStep id='x'>")
    runner = Runner(Endpoints("http://127.0.0.1:9/"), patient_feed=RecordingFeed(), wait=False)
    results = runner.run([read_test(test)])
    assert [(r.name, r.skipped) for r in results] == [("T1/a/(section)", True), ("T1/missing/(section)", True)]
    assert "not well-formed XML" in results[0].skips[0] and "cannot read" in results[1].skips[0]


def test_skips_in_the_reports(fake, tmp_path):
    test = make_test(tmp_path, "T1", {"s": ('<TestStep id="x"><ExpectedStatus>Success</ExpectedStatus>'
                                            "<XCRTransaction/></TestStep>")})
    _, results = run(fake, test)
    known = read_known_failures("T1/s/x\n  reason: r\n  ihe: i\n")
    comparison = compare(results, known)
    assert [r.name for r in comparison.skipped] == ["T1/s/x"] and comparison.not_run == ["T1/s/x"]
    assert not compare(results, {}).new_failures and compare(results, {}).ok
    assert "T1/s/x  -            SKIP    skipped: the plan uses <XCRTransaction>" in summary_table(results)
    assert "1 skipped of 1 steps" in summary_table(results)
    junit = etree.fromstring(junit_xml(results))
    assert junit.get("skipped") == "1" and junit.get("failures") == "0"
    assert junit.find(".//testcase/skipped").get("message").startswith("not run by this runner: the plan uses <XCRTransaction>")
    assert conformance_table(results).endswith("| T1 | - | skipped (1 of 1 steps not run) |\n")


# --- the options: ITI-62, ITI-86, ITI-51, ITI-57 ------------------------------------------------

DELETE, REMOVE_DOCS = "urn:ihe:iti:2010:DeleteDocumentSet", "urn:ihe:iti:2017:RemoveDocuments"
MPQ, UPDATE = "urn:ihe:iti:2009:MultiPatientStoredQuery", "urn:ihe:iti:2010:UpdateDocumentSet"
REMOVE_OBJECTS = (f'<lcm:RemoveObjectsRequest xmlns:lcm="{LCM}" xmlns:rim="{RIM}"><rim:ObjectRefList>'
                  '<rim:ObjectRef id="$SubmissionSet01$"/><rim:ObjectRef id="$Document01$"/>'
                  "</rim:ObjectRefList></lcm:RemoveObjectsRequest>")
REMOVE_DOCUMENTS = ('<rmd:RemoveDocumentsRequest xmlns:rmd="urn:ihe:iti:rmd:2017" xmlns:xds="urn:ihe:iti:xds-b:2007">'
                    "<xds:DocumentRequest><xds:RepositoryUniqueId>$repuid$</xds:RepositoryUniqueId>"
                    "<xds:DocumentUniqueId>$docuid1$</xds:DocumentUniqueId></xds:DocumentRequest>"
                    "</rmd:RemoveDocumentsRequest>")


def run_split(fake: FakeSystem, *paths: Path, feed=None):
    """The registry and the repository at two paths of the fake system."""
    runner = Runner(Endpoints(fake.url + "/registry", fake.url + "/repository", "1.2.840.1"),
                    patient_feed=feed or RecordingFeed(), wait=False)
    return runner, runner.run(discover(list(paths)).tests)


def test_delete_document_set_is_sent_as_written_to_the_registry(fake, tmp_path):
    """ITI-62 (RemoveMetadataTransaction, <ParseMetadata>False): the template's ids filled from
    the submission's log, nothing else rewritten and no patient fed (30002)."""
    remove = ('<TestStep id="remove"><ExpectedStatus>Success</ExpectedStatus><RemoveMetadataTransaction><XDSb/>'
              "<NoPatientId/><ParseMetadata>False</ParseMetadata>"
              '<UseId testdir="../submit" step="submit" section="AssignedUuids" id="SubmissionSet01" symbol="$SubmissionSet01$"/>'
              '<UseId testdir="../submit" step="submit" section="AssignedUuids" id="Document01" symbol="$Document01$"/>'
              "<MetadataFile>remove.xml</MetadataFile></RemoveMetadataTransaction></TestStep>")
    test = make_test(tmp_path, "T1", {"submit": register_step(inner="<AssignUuids/>"), "remove": remove},
                     {"submit/submission.xml": SUBMISSION, "remove/remove.xml": REMOVE_OBJECTS})
    feed = RecordingFeed()
    fake.answer = lambda m: registry_reply(SUCCESS, action=m.action + "Response")
    runner, results = run_split(fake, test, feed=feed)
    assert all(r.passed for r in results), [r.reasons for r in results]
    assert fake.paths == ["/xds/registry", "/xds/registry"] and len(feed.fed) == 1
    message = fake.received[1]
    uuids = runner.logs[("T1", "submit", "submit")].assigned_uuids
    assert message.action == DELETE and message.body.tag == f"{{{LCM}}}RemoveObjectsRequest"
    assert [r.get("id") for r in message.body.iter(f"{{{RIM}}}ObjectRef")] == [uuids["SubmissionSet01"], uuids["Document01"]]
    assert by_name(results)["T1/remove/remove"].iti == "ITI-62"
    # the answer must be DeleteDocumentSet's
    fake.answer = lambda m: registry_reply(SUCCESS)
    _, results = run_split(fake, test)
    assert by_name(results)["T1/remove/remove"].reasons == [
        "the response's wsa:Action is 'urn:ihe:iti:2007:RegisterDocumentSet-bResponse', expected "
        f"'{DELETE}Response' (ITI TF-2x Appendix V)"]


def test_remove_documents_goes_to_the_repository(fake, tmp_path):
    """ITI-86 (RdTransaction, 50000/delete and 50002's refused one): values from Reports."""
    delete = ('<TestStep id="delete"><ExpectedStatus>Failure</ExpectedStatus>'
              "<ExpectedErrorCode>XDSUnknownRepositoryId</ExpectedErrorCode><RdTransaction>"
              '<UseReport reportName="Document01_uid" section="submit" step="submit" useAs="$docuid1$"/>'
              "<XDSb/><MetadataFile>query.xml</MetadataFile></RdTransaction></TestStep>")
    test = make_test(tmp_path, "T1", {"submit": register_step(), "delete": delete},
                     {"submit/submission.xml": SUBMISSION, "delete/query.xml": REMOVE_DOCUMENTS})

    def answer(message):
        if message.action == REMOVE_DOCS:
            return registry_reply(FAILURE, [("XDSUnknownRepositoryId", "not here", ERROR)], action=REMOVE_DOCS + "Response")
        return registry_reply(SUCCESS)

    fake.answer = answer
    runner, results = run_split(fake, test)
    assert all(r.passed for r in results), [r.reasons for r in results]
    assert fake.paths[-1] == "/xds/repository"
    sent = fake.received[-1].body
    assert sent.findtext(".//{urn:ihe:iti:xds-b:2007}DocumentUniqueId") == runner.logs[("T1", "submit", "submit")].assigned_uids["Document01"]
    assert sent.findtext(".//{urn:ihe:iti:xds-b:2007}RepositoryUniqueId") == "1.2.840.1"  # $repuid$ from the endpoints


def test_multi_patient_query_goes_to_the_registry(fake, tmp_path):
    query = (f'<query:AdhocQueryRequest xmlns:query="{QUERY}" xmlns:rim="{RIM}"><query:ResponseOption returnType="ObjectRef"/>'
             '<rim:AdhocQuery id="urn:uuid:3d1bdb10-39a2-11de-89c2-2f44d94eaa9f"><rim:Slot name="$XDSDocumentEntryPatientId">'
             "<rim:ValueList><rim:Value>('$patient_id1$')</rim:Value></rim:ValueList></rim:Slot></rim:AdhocQuery>"
             "</query:AdhocQueryRequest>")
    test = make_test(tmp_path, "T1", {"pif": pif_step(), "q": (
        '<TestStep id="object_refs"><ExpectedStatus>Success</ExpectedStatus><MPQTransaction><XDSb/>'
        "<MetadataFile>query.xml</MetadataFile>"
        '<UseReport reportName="$patientid$" section="pif" step="step" useAs="$patient_id1$"/>'
        '<ExpectedContents><ObjectRefs count="2"/></ExpectedContents></MPQTransaction></TestStep>')},
        {"q/query.xml": query})
    refs = '<rim:ObjectRef id="urn:uuid:a"/><rim:ObjectRef id="urn:uuid:b"/>'
    fake.answer = lambda m: query_reply(refs, action=MPQ + "Response")
    runner, results = run_split(fake, test)
    assert all(r.passed for r in results), [r.reasons for r in results]
    assert fake.received[0].action == MPQ and fake.paths == ["/xds/registry"]
    assert runner.patients_of["T1"] in fake.received[0].body.findtext(f".//{{{RIM}}}Value")


def test_metadata_update_names_the_version_it_updates(fake, tmp_path):
    """ITI-57 (MuTransaction, 15800/update): prepared like a registration, but the updated
    DocumentEntry keeps its uniqueId (<NoAssignUids id=>) and names the first version's
    entryUUID as its lid; its own id is a new UUID."""
    update = SUBMISSION.replace('<rim:ExtrinsicObject id="Document01"', '<rim:ExtrinsicObject id="Document01" lid="$lid$"')
    update = update.replace('identificationScheme="' + DE_UNIQUE_ID + '" value="1.2.3"',
                            'identificationScheme="' + DE_UNIQUE_ID + '" value="$Document01_uid$"')
    test = make_test(tmp_path, "T1", {
        "original": register_step(step_id="original", inner="<AssignUuids/>"),
        "update": ('<TestStep id="update"><ExpectedStatus>Success</ExpectedStatus><MuTransaction>'
                   '<NoAssignUids id="Document01"/><XDSb/><AssignUuids/><MetadataFile>submission.xml</MetadataFile>'
                   '<UseId testdir="../original" id="Document01" symbol="$lid$" step="original" section="AssignedUuids"/>'
                   '<UseId testdir="../original" id="Document01" symbol="$Document01_uid$" step="original" '
                   'section="AssignedUids"/></MuTransaction></TestStep>'),
    }, {"original/submission.xml": SUBMISSION, "update/submission.xml": update})
    fake.answer = lambda m: registry_reply(SUCCESS, action=m.action + "Response")
    runner, results = run(fake, test)
    assert all(r.passed for r in results), [r.reasons for r in results]
    original = runner.logs[("T1", "original", "original")]
    message = fake.received[1]
    entry = message.body.find(f".//{{{RIM}}}ExtrinsicObject")
    assert message.action == UPDATE and by_name(results)["T1/update/update"].iti == "ITI-57"
    assert entry.get("lid") == original.assigned_uuids["Document01"] != entry.get("id")
    assert entry.get("id") == runner.logs[("T1", "update", "update")].assigned_uuids["Document01"]
    uid = next(e.get("value") for e in entry.iter(f"{{{RIM}}}ExternalIdentifier") if e.get("identificationScheme") == DE_UNIQUE_ID)
    assert uid == original.assigned_uids["Document01"]


def test_no_assign_uids_without_an_id_keeps_every_uniqueid(fake, tmp_path):
    test = make_test(tmp_path, "T1", {"s": register_step(inner="<NoAssignUids/>")}, {"s/submission.xml": SUBMISSION})
    runner, [result] = run(fake, test)
    values = {e.get("identificationScheme"): e.get("value") for e in fake.received[0].body.iter(f"{{{RIM}}}ExternalIdentifier")}
    assert (values[DE_UNIQUE_ID], values[SS_UNIQUE_ID]) == ("1.2.3", "1.2.4")
    assert runner.logs[("T1", "s", "submit")].assigned_uids == {}


# --- the toolkit's Use... instructions ----------------------------------------------------------

def pif_step() -> str:
    return ('<TestStep id="step"><ExpectedStatus>Success</ExpectedStatus>'
            "<PatientIdentityFeedTransaction><XDSb/><NoMetadata/></PatientIdentityFeedTransaction></TestStep>")


def value_query(values: str) -> str:
    return (f'<query:AdhocQueryRequest xmlns:query="{QUERY}" xmlns:rim="{RIM}"><rim:AdhocQuery id="x">'
            f"<rim:Slot name='a'><rim:ValueList><rim:Value>{values}</rim:Value>"
            "</rim:ValueList></rim:Slot></rim:AdhocQuery></query:AdhocQueryRequest>")


def test_symbols_are_replaced_as_written(fake, tmp_path):
    """The toolkit's Linkage replaces a symbol exactly as the plan writes it: 15801 fills a bare
    Document01 (<UseId symbol="Document01">), and <UseId symbol= value=> gives the value itself."""
    test = make_test(tmp_path, "T1", {"s": register_step(step_id="submit", inner="<AssignUuids/>") + (
        '<TestStep id="q"><ExpectedStatus>Success</ExpectedStatus><StoredQueryTransaction><XDSb/>'
        '<UseId id="Document01" symbol="Document01" step="submit" section="AssignedUuids"/>'
        '<UseId symbol="$fixed$" value="1.2.3.4"/>'
        '<UseId id="SubmissionSet01" symbol="$source$" step="submit" section="AssignedSourceId"/>'
        "<MetadataFile>query.xml</MetadataFile></StoredQueryTransaction></TestStep>")},
        {"s/submission.xml": SUBMISSION, "s/query.xml": value_query("('Document01')|$fixed$|$source$")})
    fake.answer = answer_register_then(query_reply(""))
    runner, results = run(fake, test)
    assert all(r.passed for r in results), [r.reasons for r in results]
    uuid_ = runner.logs[("T1", "s", "submit")].assigned_uuids["Document01"]
    assert fake.received[1].body.findtext(f".//{{{RIM}}}Value") == f"('{uuid_}')|1.2.3.4|{runner.source_id}"


def test_use_xpath_object_ref_and_repository_unique_id(fake, tmp_path):
    """<UseXPath> over a step's log entry, <UseObjectRef> (the n-th ObjectRef of a query
    result), <UseRepositoryUniqueId> (the repositoryUniqueId of its DocumentEntries)."""
    slot = '<rim:Slot name="repositoryUniqueId"><rim:ValueList><rim:Value>1.2.840.7</rim:Value></rim:ValueList></rim:Slot>'
    answers = iter([query_reply('<rim:ObjectRef id="urn:uuid:r0"/><rim:ObjectRef id="urn:uuid:r1"/>'),
                    query_reply(document("d", slots=slot)), query_reply("")])
    fake.answer = lambda m: next(answers)
    test = make_test(tmp_path, "T1", {"s": (
        query_step("refs", inner="").replace(
            '<UseId testdir="../submit" id="SubmissionSet01" symbol="$ssuid$" step="submit" section="AssignedUids"/>', "")
        .replace("query.xml", "plain.xml")
        + query_step("docs", inner="").replace(
            '<UseId testdir="../submit" id="SubmissionSet01" symbol="$ssuid$" step="submit" section="AssignedUids"/>', "")
        .replace("query.xml", "plain.xml")
        + '<TestStep id="use"><ExpectedStatus>Success</ExpectedStatus><StoredQueryTransaction><XDSb/>'
          '<UseObjectRef step="refs" index="1" symbol="$ref$"/>'
          '<UseRepositoryUniqueId step="docs" symbol="$repo$"/>'
          "<UseXPath testdir=\"../s\" step=\"docs\" symbol=\"$status$\">//*[local-name()='ExtrinsicObject']/@status</UseXPath>"
          "<MetadataFile>query.xml</MetadataFile></StoredQueryTransaction></TestStep>")},
        {"s/plain.xml": value_query("x"), "s/query.xml": value_query("$ref$|$repo$|$status$")})
    _, results = run(fake, test)
    assert all(r.passed for r in results), [r.reasons for r in results]
    assert fake.received[2].body.findtext(f".//{{{RIM}}}Value") == f"urn:uuid:r1|1.2.840.7|{APPROVED}"


def test_orchestration_parameters_of_12361(fake, tmp_path):
    """12361 loads the Multi-Patient Query data for the patients of 15819 and 15820, which the
    toolkit's orchestration passes as $patient_id1$ and $patient_id2$ (plan.TEST_PARAMETERS):
    they run first, and the submissions carry their patients."""
    make_test(tmp_path, "15819", {"pif": pif_step()})
    make_test(tmp_path, "15820", {"pif": pif_step()})
    template = SUBMISSION.replace('"$patientid$"', '"$patient_id1$"')
    loader = make_test(tmp_path, "12361", {"multi_doc": register_step(step_id="multi_doc", inner="<NoPatientId/>")},
                       {"multi_doc/submission.xml": template})
    found = discover([loader])
    assert [t.name for t in found.tests] == ["15819", "15820", "12361"]
    runner = Runner(Endpoints(fake.url), patient_feed=RecordingFeed(), wait=False)
    results = runner.run(found.tests)
    assert all(r.passed for r in results), [r.reasons for r in results]
    values = {e.get("identificationScheme"): e.get("value") for e in fake.received[0].body.iter(f"{{{RIM}}}ExternalIdentifier")}
    assert values[DE_PATIENT_ID] == values[SS_PATIENT_ID] == runner.patients_of["15819"]


def test_every_step_reports_its_patient(fake, tmp_path):
    """The toolkit reports the run's parameters as every step's Reports: 20001's queries read
    $patientid$ from a query step of their own test."""
    test = make_test(tmp_path, "T1", {"pif": pif_step(), "eval": (
        '<TestStep id="by_uid"><ExpectedStatus>Success</ExpectedStatus><StoredQueryTransaction><XDSb/>'
        "<MetadataFile>plain.xml</MetadataFile></StoredQueryTransaction></TestStep>"
        '<TestStep id="q"><ExpectedStatus>Success</ExpectedStatus><StoredQueryTransaction><XDSb/>'
        '<UseReport reportName="$patientid$" section="eval" step="by_uid" useAs="$patientid$"/>'
        "<MetadataFile>query.xml</MetadataFile></StoredQueryTransaction></TestStep>")},
        {"eval/plain.xml": value_query("x"), "eval/query.xml": value_query("$patientid$")})
    fake.answer = lambda m: query_reply("")
    runner, results = run(fake, test)
    assert all(r.passed for r in results), [r.reasons for r in results]
    assert fake.received[1].body.findtext(f".//{{{RIM}}}Value") == runner.patients_of["T1"]


def test_clean_params_soap_header_and_status_alternatives(fake, tmp_path):
    query = (f'<query:AdhocQueryRequest xmlns:query="{QUERY}" xmlns:rim="{RIM}"><rim:AdhocQuery id="x">'
             "<rim:Slot name='$XDSDocumentEntryPatientId'><rim:ValueList><rim:Value>'$unset$'</rim:Value></rim:ValueList></rim:Slot>"
             "<rim:Slot name='$XDSDocumentEntryStatus'><rim:ValueList><rim:Value>('a')</rim:Value></rim:ValueList></rim:Slot>"
             "</rim:AdhocQuery></query:AdhocQueryRequest>")
    test = make_test(tmp_path, "T1", {"s": (
        '<TestStep id="q"><ExpectedStatus>Success, PartialSuccess</ExpectedStatus><StoredQueryTransaction><XDSb/>'
        '<CleanParams/><SOAPHeader><h:Hint xmlns:h="urn:example:hint">x</h:Hint></SOAPHeader>'
        "<MetadataFile>query.xml</MetadataFile></StoredQueryTransaction></TestStep>")}, {"s/query.xml": query})
    fake.answer = lambda m: query_reply("", PARTIAL, [("XDSRegistryError", "some", ERROR)])
    _, [result] = run(fake, test)
    assert result.passed, result.reasons
    slots = [s.get("name") for s in fake.received[0].body.iter(f"{{{RIM}}}Slot")]
    assert slots == ["$XDSDocumentEntryStatus"]
    assert b"<h:Hint" in fake.raw[0][1] and b"urn:example:hint" in fake.raw[0][1]
    fake.answer = lambda m: query_reply("", FAILURE, [("XDSRegistryError", "no", ERROR)])
    _, [result] = run(fake, test)
    assert result.reasons[0].startswith("expected status Success or PartialSuccess, got status Failure")


def test_plan_reading():
    steps = parse_testplan(b"""
      <?xml version="1.0"?><TestPlan><Test>x</Test>
      <TestStep id="s"><ExpectedStatus>Failure</ExpectedStatus><ExpectedErrorCode>XDSA</ExpectedErrorCode>
        <RegisterTransaction><WaitBefore>4000</WaitBefore><XDSb/><NoPatientId/><AssignUuids/>
          <!-- <UseReport reportName="commented" section="a" step="b" useAs="$c$"/> -->
          <NoAssignUids id="Document01"/>
          <UseId testdir="../submit" id="SubmissionSet01" symbol="$ssuid$" step="submit" section="AssignedUids"/>
          <UseReport reportName="$patientid$" test="15817" section="pif" step="step" useAs="$patientid$"/>
          <MetadataFile>m.xml</MetadataFile>
          <Report name="docid" section="InputMetadata"> //*[local-name()='ExtrinsicObject']/@id </Report>
          <ExpectedContents><Documents count="2"/><SSwithOneDoc/></ExpectedContents>
        </RegisterTransaction></TestStep></TestPlan>""".replace(b"\n      <?xml", b"<?xml"),
        section_dir=Path("/t/x/s"), test_dir=Path("/t/x"))
    [step] = steps
    t = step.transaction
    assert (step.id, step.expected_status, step.expected_error_codes, step.iti) == ("s", "Failure", ("XDSA",), "ITI-42")
    assert (t.xdsb, t.no_patient_id, t.assign_uuids, t.wait_before_ms, t.no_assign_uids) == (True, True, True, 4000, ("Document01",))
    assert t.metadata_file == Path("/t/x/s/m.xml")
    assert [u.symbol for u in t.use_ids] == ["$ssuid$"] and [r.test for r in t.use_reports] == ["15817"]
    assert t.reports[0].xpath == "//*[local-name()='ExtrinsicObject']/@id"
    assert t.expected_contents == (ContentCheck("Documents", 2), ContentCheck("SSwithOneDoc"))
    assert not step.unsupported


def test_index_and_testdir():
    assert read_index("pif \n\n submit\n") == ["pif", "submit"]
    assert resolve_testdir("11990", "eval", "../submit") == ("11990", "submit")
    assert resolve_testdir("11897", "leafclass", "../../12346/single_doc") == ("12346", "single_doc")
    assert resolve_testdir("11990", "eval", None) == ("11990", "eval")


def test_order_puts_fixtures_first(tmp_path):
    user = read_test(make_test(tmp_path, "USER", {"q": query_step(inner=(
        '<UseId testdir="../../FIX/s" id="a" symbol="$a$" step="s" section="AssignedUuids"/>'))}))
    fixture = read_test(make_test(tmp_path, "FIX", {"s": register_step()}))
    assert [t.name for t in order_tests([user, fixture])] == ["FIX", "USER"]


nist_plans = pytest.mark.skipif(not CONFORMANCE.is_dir(), reason=f"the public conformance data is not at {CONFORMANCE}")


NIST_FOLDERS = [CONFORMANCE / f"iti-{n}" / "nist" for n in (18, 41, 42, 43, 51, 57, 62, 86)]


@nist_plans
def test_every_nist_plan_is_understood():
    """Every element of every NIST plan in conformance-data is one this runner carries out or
    checks: nothing there is skipped."""
    found = discover(NIST_FOLDERS)
    assert not found.missing
    steps = [(t, s, st) for t in found.tests for s in t.sections for st in s.steps]
    problems = [f"{t.name}/{s.name}/{st.id}: {st.unsupported}" for t, s, st in steps if st.unsupported]
    problems += [f"{t.name}/{s.name}/{st.id}: {st.transaction.unchecked}" for t, s, st in steps
                 if st.transaction and st.transaction.unchecked]
    problems += [f"{t.name}/{s.name}: {s.problems}" for t in found.tests for s in t.sections if s.problems]
    assert problems == []
    kinds = {c.kind for _, _, st in steps if st.transaction for c in st.transaction.expected_contents or ()}
    assert kinds == {"ObjectRefs", "Documents", "SubmissionSets", "Folders", "Associations", "SSwithOneDoc",
                     "SSwithOneDocOneFol", "SSwithTwoDocOneFol", "SSwithOneFol", "SSApproved", "DocApp", "DocDep",
                     "None", "DocumentEntries", "FolApp", "OneDocApp", "OneDocDep", "SSwithTwoDoc"}
    transactions = {st.transaction.kind for _, _, st in steps if st.transaction}
    assert {"RemoveMetadataTransaction", "RdTransaction", "MPQTransaction", "MuTransaction"} <= transactions


def test_the_vocabulary_tables_agree():
    """Every ExpectedContents kind the plan reader accepts has its check; every transaction it
    sends has its shape; the actions are those of xds.transactions."""
    from xds.conformance import plan
    from xds.conformance.runner import ROUTE_SHAPES, ROUTES
    from xds.transactions import BY_ACTION

    assert plan.NAMED_KINDS == set(expect.NAMED_CHECKS)
    sent = {iti for iti in plan.TRANSACTIONS.values() if iti.startswith("ITI-")}
    assert sent == set(ROUTE_SHAPES)
    assert not set(plan.TRANSACTIONS) & set(plan.OTHER_TRANSACTIONS)
    for route in ROUTES.values():
        assert BY_ACTION[route.action].name == route.name
        assert route.response_action == BY_ACTION[route.action].response_action


@nist_plans
def test_15816_runs_its_retrieve_section_after_pnr():
    test = read_test(CONFORMANCE / "iti-43" / "nist" / "15816")
    assert [(s.name, s.added) for s in test.sections] == [("Register_Stable", False), ("PnR", False), ("Retrieve", True)]


# --- reports ---------------------------------------------------------------------------------

KNOWN = """
# a comment
T1/submit/submit
T1/eval/query
    reason: not implemented yet: ITI-18
    ihe: ITI TF-2a 3.18: the registry
      shall answer stored queries
T2/a/b
    reason: upstream defect
    ihe: ITI TF-3 4.2
"""


def test_known_failures_format():
    known = read_known_failures(KNOWN)
    assert set(known) == {"T1/submit/submit", "T1/eval/query", "T2/a/b"}
    assert known["T1/eval/query"].ihe == "ITI TF-2a 3.18: the registry shall answer stored queries"
    with pytest.raises(ValueError, match="needs both"):
        read_known_failures("T/a/b\n  reason: x\n")
    with pytest.raises(ValueError, match="listed twice"):
        read_known_failures("T/a/b\n  reason: x\n  ihe: y\nT/a/b\n  reason: x\n  ihe: y\n")
    with pytest.raises(ValueError, match="is not test/section/step"):
        read_known_failures("T/a\n  reason: x\n  ihe: y\n")


def test_reports(fake, tmp_path):
    test = register_then_query(tmp_path, '<Documents count="3"/>')
    fake.answer = answer_register_then(query_reply(ONE_DOC))
    runner, results = run(fake, test)
    known = read_known_failures(KNOWN)
    comparison = compare(results, known)
    assert [r.name for r in comparison.fixed] == ["T1/submit/submit"]
    assert [r.name for r in comparison.known] == ["T1/eval/query"] and not comparison.new_failures
    assert comparison.not_run == ["T2/a/b"] and not comparison.ok
    table = summary_table(results, known)
    assert "T1/submit/submit  ITI-42       FIXED   passes now: remove it from the known failures" in table
    assert "T1/eval/query     ITI-18       KNOWN   known: not implemented yet: ITI-18" in table
    junit = etree.fromstring(junit_xml(results, known))
    assert junit.get("tests") == "2" and junit.get("failures") == "1" and junit.get("skipped") == "1"
    assert junit.find(".//testcase[@name='query']/skipped").get("message") == "known failure: not implemented yet: ITI-18"
    plain = etree.fromstring(junit_xml(results))
    assert plain.find(".//testcase[@name='query']/failure").get("message") == "ExpectedContents Documents: expected 3, got 1"
    assert conformance_table(results) == ("| test | transaction | result |\n| --- | --- | --- |\n"
                                          "| T1 | ITI-42, ITI-18 | FAIL (1 of 2 steps pass) |\n")
    write_logs(tmp_path / "logs", results, runner.logs, known)
    log = (tmp_path / "logs" / "T1" / "eval" / "query.log").read_text()
    assert "result: KNOWN" in log and "reason: ExpectedContents Documents: expected 3, got 1" in log
    assert "=== 1. request: POST " + fake.url in log and "AdhocQueryResponse" in log
    section = etree.parse(str(tmp_path / "logs" / "T1" / "submit" / "log.xml"))
    assert section.xpath("//TestStep[@id='submit']/RegisterTransaction/AssignedUids/Assign[@symbol='Document01']")
    assert (tmp_path / "logs" / "summary.txt").is_file()


# --- the command -----------------------------------------------------------------------------

def command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="xds")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.run(args, None)


def test_command_line(fake, tmp_path, capsys):
    test = register_then_query(tmp_path, '<Documents count="3"/>')
    fake.answer = answer_register_then(query_reply(ONE_DOC))
    junit = tmp_path / "out" / "junit.xml"
    status = command(["conformance", "run", str(tmp_path), "--registry", fake.url, "--patient-feed", "none",
                      "--report", str(junit), "--log-dir", str(tmp_path / "logs")])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAIL  T1/eval/query  ExpectedContents Documents: expected 3, got 1" in out
    assert "1 passed, 1 failed of 2 steps" in out
    assert etree.parse(str(junit)).getroot().get("failures") == "1"
    known = tmp_path / "known.txt"
    known.write_text("T1/eval/query\n  reason: a reason\n  ihe: a text\n")
    assert command(["conformance", "run", str(test), "--registry", fake.url, "--patient-feed", "none",
                    "--known-failures", str(known), "--quiet"]) == 0
    fake.answer = answer_register_then(query_reply(ONE_DOC + document("d2") + document("d3")))
    assert command(["conformance", "run", str(test), "--registry", fake.url, "--patient-feed", "none",
                    "--known-failures", str(known), "--quiet"]) == 1
    assert "in the known failures pass now: remove them from the list" in capsys.readouterr().out


def test_command_line_a_skip_is_no_failure(fake, tmp_path, capsys):
    make_test(tmp_path, "T1", {"s": '<TestStep id="x"><ExpectedStatus>Success</ExpectedStatus><XCQTransaction/></TestStep>'})
    assert command(["conformance", "run", str(tmp_path), "--registry", fake.url, "--patient-feed", "none"]) == 0
    out = capsys.readouterr().out
    assert "SKIP  T1/s/x  the plan uses <XCQTransaction>" in out and "1 skipped of 1 steps" in out


def test_command_line_usage_errors(tmp_path, capsys):
    assert command(["conformance", "run", str(tmp_path)]) == 2
    assert command(["conformance", "run", str(tmp_path / "nope"), "--registry", "http://x"]) == 2
    assert command(["conformance", "run", str(tmp_path), "--registry", "http://x", "--patient-feed", "carrier-pigeon"]) == 2
    assert command(["conformance", "run", str(tmp_path), "--registry", "http://x", "--patient-feed", "none"]) == 2
    err = capsys.readouterr().err
    assert "give --registry URL" in err and "no such folder" in err and "carrier-pigeon" in err and "no test" in err


def test_feeds_by_name():
    assert make_feed("none").description == "none"
    assert make_feed("command:xds patients add").description == "xds patients add"
    assert make_feed("hl7v3:http://pix/feed").description == "ITI-44 to http://pix/feed"


def test_fake_server_is_plain_http(fake):
    """Sanity of the fixture itself: it answers whatever is posted."""
    reply = urllib.request.urlopen(urllib.request.Request(
        fake.url, data=build_envelope(etree.fromstring(SUBMISSION), REGISTER),
        headers={"Content-Type": "application/soap+xml"}), timeout=5)
    assert reply.status == 200
