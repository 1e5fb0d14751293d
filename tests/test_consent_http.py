"""Access control over HTTP (xds.consent): a real `xds serve` with several workers.

- A withdrawal under load: clients query the patient's documents in a loop, each request carrying
  its facility's XUA assertion, while the patient withdraws on the command line; no answer to a
  request sent after the withdrawal's commit (the command's return) shows the documents, on any
  worker. Conditions are waited for, never a fixed time.
- The facility of a request without an assertion: its TLS client certificate, as
  facility_certificates maps it; a certificate it does not map sees no patient.

On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import ssl
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field

from tests import queries as q
from tests import saml
from tests import submissions as s
from tests.certs import CertificateAuthority
from tests.server import XDS, serve
from tests.test_registry_http import soap_register
from xds.client import send_register
from xds.ebrim.query_response import read_query_response
from xds.soap import build_envelope, parse_response

DOMAIN = "1.3.6.1.4.1.21367.2005.13.20.1000"  # the assigning authority of tests.submissions' patients
FACILITY_A = saml.ATTRIBUTES["urn:oasis:names:tc:xspa:1.0:subject:organization-id"].removeprefix("urn:oid:")
FACILITY_B = "1.2.392.200119.6.102.77"
AUDIENCE = "urn:xds-affinity:test:all-endpoints"
STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
CLIENTS = 4


def xds(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*XDS, *args], env=env, check=True, capture_output=True, text=True)


def find_documents(url: str, patient: str, *, assertion=None, context: ssl.SSLContext | None = None) -> int:
    """The number of the patient's documents a FindDocuments (ObjectRef) answers with."""
    body = q.request("FindDocuments", ("$XDSDocumentEntryPatientId", q.quote(patient)), q.APPROVED_DOCUMENTS)
    blocks = [saml.security(assertion)] if assertion is not None else []
    request = urllib.request.Request(url, data=build_envelope(body, STORED_QUERY, to=url, header_blocks=blocks),
                                     headers={"Content-Type": f'application/soap+xml; charset=UTF-8; '
                                                              f'action="{STORED_QUERY}"'})
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        answer = parse_response(response.headers["Content-Type"], response.read())
    status, errors, objects = read_query_response(answer.body)
    assert status.endswith(":Success") and not errors, (status, errors)
    return len(objects)


@dataclass
class Client:
    """A client querying in a loop: (sent, answered, documents) of each request."""

    url: str
    assertion: object
    answers: list[tuple[float, float, int]] = field(default_factory=list)
    failure: BaseException | None = None

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                sent = time.monotonic()
                documents = find_documents(self.url, s.PATIENT, assertion=self.assertion)
                self.answers.append((sent, time.monotonic(), documents))
        except BaseException as exc:  # seen by the test, which fails with it
            self.failure = exc

    def count(self, condition) -> int:
        return sum(1 for answer in list(self.answers) if condition(*answer))


def wait_until(clients: list[Client], condition, at_least: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not all(c.count(condition) >= at_least for c in clients):
        failures = [c.failure for c in clients if c.failure]
        if failures:
            raise failures[0]
        assert time.monotonic() < deadline, [c.count(condition) for c in clients]
        time.sleep(0.01)  # polling the clients' progress, not waiting for the server


def test_a_withdrawal_under_load_hides_the_documents_from_every_request_after_its_commit(database_url, tmp_path):
    idp = saml.IdentityProvider(tmp_path / "idp", "load-idp")
    env = dict(os.environ, XDS_DATA_DIR=str(tmp_path / "var"), XDS_DATABASE_URL=database_url,
               XDS_AFFINITY_DOMAIN=DOMAIN, XDS_ACCESS_CONTROL="consent", XDS_XUA_POLICY="optional",
               XDS_XUA_TRUSTED_CERTIFICATES=str(idp.certificate), XDS_XUA_AUDIENCES=AUDIENCE)
    xds(env, "db", "upgrade")
    xds(env, "patients", "add", s.PATIENT)  # a feed: the patient is a person of the PIX Manager
    xds(env, "consent", "grant", s.PATIENT, "--facility", FACILITY_A, "--by", "consent desk")
    process, base = serve(env, tmp_path / "server.log", workers=4)
    stop = threading.Event()
    clients = [Client(base + "/registry", idp.signed(audience=AUDIENCE)) for _ in range(CLIENTS)]
    threads = [threading.Thread(target=c.run, args=(stop,)) for c in clients]
    try:
        for _ in range(2):
            status, response = soap_register(base, s.submission()[0])
            assert status == 200 and response.body.get("status").endswith(":Success")
        for thread in threads:
            thread.start()
        wait_until(clients, lambda sent, answered, documents: documents == 2, at_least=3)

        withdrawing = time.monotonic()
        xds(env, "consent", "withdraw", s.PATIENT, "--reason", "the patient asked at the desk")
        committed = time.monotonic()  # the command returns after its transaction committed
        wait_until(clients, lambda sent, answered, documents: sent > committed, at_least=5)
    finally:
        stop.set()
        for thread in threads:
            if thread.is_alive() or thread.ident:
                thread.join(60)
        process.terminate()
        process.wait(10)
    assert all(c.failure is None for c in clients), [c.failure for c in clients]
    after = [documents for c in clients for sent, _, documents in c.answers if sent > committed]
    before = [documents for c in clients for _, answered, documents in c.answers if answered < withdrawing]
    assert len(after) >= 5 * CLIENTS and set(after) == {0}
    assert len(before) >= 3 * CLIENTS and set(before) == {2}  # (in between: either, as the commit fell)


def test_the_facility_of_a_client_certificate_is_the_one_facility_certificates_names(database_url, tmp_path):
    ca = CertificateAuthority(tmp_path / "pki")
    node, clinic_b, clinic_c = ca.issue("xds-node"), ca.issue("clinic-b"), ca.issue("clinic-c")
    env = dict(os.environ, XDS_DATA_DIR=str(tmp_path / "var"), XDS_DATABASE_URL=database_url,
               XDS_AFFINITY_DOMAIN=DOMAIN, XDS_ACCESS_CONTROL="consent",
               XDS_FACILITY_CERTIFICATES=f"{clinic_b.subject}=urn:oid:{FACILITY_B}",
               XDS_TLS_CERTIFICATE=str(node.certificate), XDS_TLS_PRIVATE_KEY=str(node.private_key),
               XDS_TLS_CA_CERTIFICATES=str(ca.certificate))
    xds(env, "db", "upgrade")
    xds(env, "patients", "add", s.PATIENT, s.OTHER_PATIENT)
    xds(env, "consent", "grant", s.PATIENT, "--facility", FACILITY_B)
    xds(env, "consent", "grant", s.OTHER_PATIENT, "--facility", FACILITY_A)

    def context(client) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(ca.certificate))
        ctx.load_cert_chain(client.certificate, client.private_key)
        return ctx

    process, base = serve(env, tmp_path / "server.log", context=context(clinic_b))
    try:
        for patient in (s.PATIENT, s.OTHER_PATIENT):
            (tmp_path / "submission.xml").write_text(s.submission(patient=patient)[0])
            status, errors = send_register(tmp_path / "submission.xml", base + "/registry",  # `xds register`'s
                                           context=context(clinic_b))
            assert status.endswith(":Success"), errors
        url = base + "/registry"
        assert find_documents(url, s.PATIENT, context=context(clinic_b)) == 1
        assert find_documents(url, s.OTHER_PATIENT, context=context(clinic_b)) == 0  # consented to A only
        assert find_documents(url, s.PATIENT, context=context(clinic_c)) == 0  # no facility: nothing
    finally:
        process.terminate()
        process.wait(10)
