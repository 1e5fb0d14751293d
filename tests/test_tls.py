"""ATNA node authentication (ITI-19) over real TLS: `xds serve` with mutual TLS in subprocesses,
with certificates the tests make (tests/certs.py): the network's CA and its nodes, a CA nobody
trusts, an expired node certificate.

What is checked: a node with a good certificate is served (GET /health, ITI-42, ITI-18); a
peer without a certificate, with one from another CA, with an expired one, speaking plain HTTP
or TLS 1.1 is refused, and every refusal becomes a Security Alert that reaches the audit
destination (a UDP socket here, read with xds.audit.syslog). The application sees the client
certificate's subject (xds.security.tls.peer_subject, through a real request). A repository registers
with a remote registry over mutual TLS with its node certificate; without one it answers
XDSRegistryNotAvailable, and the registry audits the refusal."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lxml import etree

from tests import submissions as s
from tests.certs import CertificateAuthority, Node
from tests.queries import APPROVED_DOCUMENTS, quote
from tests.queries import request as query_request
from tests.server import XDS, free_port, serve
from xds import client
from xds.security import tls
from xds.audit import syslog
from xds.config import Settings
from xds.ebrim.response import read_registry_response
from xds.repository.client import Document, provide_and_register

REGISTER = "urn:ihe:iti:2007:RegisterDocumentSet-b"
STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"


# -- the network's certificates -------------------------------------------------------------------


@dataclass
class Pki:
    ca: CertificateAuthority           # the affinity domain's CA: every node trusts it
    rogue: CertificateAuthority        # a CA nobody here trusts
    registry: Node                     # server certificates (also client: ATNA secure nodes)
    repository: Node
    hospital: Node                     # a Document Source / Consumer
    intruder: Node                     # issued by the rogue CA
    lapsed: Node                       # issued by the network's CA, expired

    def context(self, node: Node | None = None, *, trust: tuple[CertificateAuthority, ...] = ()) -> ssl.SSLContext:
        """A client context trusting the network's CA (and `trust`), offering `node`'s certificate."""
        context = ssl.create_default_context(cafile=str(self.ca.certificate))
        for authority in trust:
            context.load_verify_locations(cafile=str(authority.certificate))
        if node is not None:
            context.load_cert_chain(node.certificate, node.private_key)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(folder / "network", "network-ca")
    rogue = CertificateAuthority(folder / "rogue", "rogue-ca")
    return Pki(ca, rogue, ca.issue("registry-node"), ca.issue("repository-node"), ca.issue("hospital-a"),
               rogue.issue("intruder"), ca.issue("lapsed-node", expired=True))


# -- the audit destination ------------------------------------------------------------------------


@dataclass
class AuditListener:
    """A syslog UDP destination (RFC 5426): every AuditMessage received, in order."""

    sock: socket.socket
    messages: list[etree._Element] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "udp://127.0.0.1:%d" % self.sock.getsockname()[1]

    def mark(self) -> int:
        """The number of messages received so far: wait_for(after=mark) looks only at later ones."""
        self._drain(0)
        return len(self.messages)

    def _drain(self, wait: float) -> None:
        self.sock.settimeout(wait)
        while True:
            try:
                data = self.sock.recv(65535)
            except (TimeoutError, BlockingIOError):
                return
            self.messages.append(etree.fromstring(syslog.parse(data).msg))
            self.sock.settimeout(0)

    def wait_for(self, predicate, *, after: int = 0, timeout: float = 15.0) -> etree._Element:
        deadline = time.monotonic() + timeout
        seen = after
        while True:
            for message in self.messages[seen:]:
                if predicate(message):
                    return message
            seen = max(seen, len(self.messages))
            if time.monotonic() > deadline:
                raise AssertionError(f"no such audit message among {len(self.messages) - after} received: "
                                     + "; ".join(_describe(m) for m in self.messages[after:]))
            self._drain(0.2)


def _describe(message: etree._Element) -> str:
    event = message.find("EventIdentification")
    return f"{event.find('EventID').get('csd-code')} {event.findtext('EventOutcomeDescription') or ''}".strip()


def alert_description(message: etree._Element) -> str:
    detail = message.find("ParticipantObjectIdentification/ParticipantObjectDetail[@type='Alert Description']")
    return base64.b64decode(detail.get("value")).decode() if detail is not None else ""


def node_authentication_alert(reason_part: str):
    """A predicate: a Security Alert (110113) of type Node Authentication (110126) whose Alert
    Description holds `reason_part`."""

    def matches(message: etree._Element) -> bool:
        event = message.find("EventIdentification")
        return (event.find("EventID").get("csd-code") == "110113"
                and event.find("EventTypeCode").get("csd-code") == "110126"
                and reason_part in alert_description(message))

    return matches


@pytest.fixture(scope="module")
def audit():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    listener = AuditListener(sock)
    yield listener
    sock.close()


# -- servers --------------------------------------------------------------------------------------


@dataclass
class TlsServer:
    base: str
    env: dict
    process: subprocess.Popen
    log: Path


def node_env(tmp: Path, node: Node | None, pki: Pki, audit: AuditListener, **extra: str) -> dict:
    env = dict(os.environ, XDS_DATA_DIR=str(tmp / "var"),
               XDS_DATABASE_URL=f"sqlite:///{tmp / 'registry.sqlite3'}",
               XDS_REPOSITORY_UNIQUE_ID="1.2.392.200119.6.102.1",
               XDS_TLS_CA_CERTIFICATES=str(pki.ca.certificate), XDS_AUDIT_DESTINATIONS=audit.url)
    env.update(extra)
    if node is not None:
        env.update(XDS_TLS_CERTIFICATE=str(node.certificate), XDS_TLS_PRIVATE_KEY=str(node.private_key))
    return env


def start(env: dict, tmp: Path, context: ssl.SSLContext | None, patients=(s.PATIENT,)) -> TlsServer:
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    if patients:
        subprocess.run([*XDS, "patients", "add", *patients], env=env, check=True, capture_output=True)
    log = tmp / "server.log"
    process, base = serve(env, log, context=context, new_session=True)
    return TlsServer(base, env, process, log)


def stop(server: TlsServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(5)


@pytest.fixture(scope="module")
def registry(pki, audit, tmp_path_factory):
    """A registry and repository node (one `xds serve`), HTTPS with mutual TLS only."""
    tmp = tmp_path_factory.mktemp("registry-node")
    server = start(node_env(tmp, pki.registry, pki, audit), tmp, pki.context(pki.hospital))
    yield server
    stop(server)


def register(url: str, context: ssl.SSLContext | None) -> tuple[str, str]:
    """ITI-42 of one document; returns (status, the document's uniqueId)."""
    xml, ids = s.submission()
    status, errors = read_registry_response(client.post_soap(url, s.element(xml), REGISTER, context=context))
    assert not errors, errors
    return status.rsplit(":", 1)[-1], ids["document"]


def find_documents(url: str, context: ssl.SSLContext) -> etree._Element:
    request = query_request("FindDocuments", ("$XDSDocumentEntryPatientId", quote(s.PATIENT)), APPROVED_DOCUMENTS,
                            return_type="LeafClass")
    return client.post_soap(url, request, STORED_QUERY, context=context)


# -- the node with a good certificate is served -----------------------------------------------------


def test_good_client_is_served(registry: TlsServer, pki: Pki):
    with urllib.request.urlopen(registry.base + "/health", context=pki.context(pki.hospital), timeout=10) as response:
        assert response.status == 200 and json.load(response)["status"] == "ok"

    status, unique_id = register(registry.base + "/registry", pki.context(pki.hospital))
    assert status == "Success"
    answer = find_documents(registry.base + "/registry", pki.context(pki.hospital))
    assert (answer.get("status") or "").endswith(":Success")
    assert unique_id in etree.tostring(answer).decode()  # LeafClass: the entry, with its uniqueId


def test_negotiates_tls_12_or_newer_only(registry: TlsServer, pki: Pki):
    context = pki.context(pki.hospital)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # the oldest we accept still works
    with urllib.request.urlopen(registry.base + "/health", context=context, timeout=10) as response:
        assert response.status == 200


def test_the_application_sees_the_client_certificate_subject(pki: Pki, audit: AuditListener, tmp_path):
    """xds.security.tls.peer_subject through a real request: a WSGI app echoing it, under `xds serve`'s
    gunicorn setup (xds.serve.serve with its TLS options and worker class)."""
    env = node_env(tmp_path, pki.registry, pki, audit)
    port = free_port()
    script = (
        "import json, sys\n"
        "from xds import config, serve\nfrom xds.security import tls\n"
        "def echo(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'application/json')])\n"
        "    return [json.dumps({'subject': tls.peer_subject(environ)}).encode()]\n"
        "serve.serve(config.load(), port=int(sys.argv[1]), workers=1, application=lambda: echo)\n"
    )
    log = tmp_path / "echo.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", script, str(port)], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/", context=pki.context(pki.hospital),
                                            timeout=2) as response:
                    answer = json.load(response)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(log.read_text()) from None
                time.sleep(0.1)
        assert answer["subject"] == pki.hospital.subject == "CN=hospital-a,O=xds-affinity tests"
    finally:
        process.terminate()
        process.wait(15)


def test_the_audit_record_names_the_client_certificate(registry: TlsServer, pki: Pki, audit: AuditListener):
    mark = audit.mark()
    status, _ = register(registry.base + "/registry", pki.context(pki.hospital))
    assert status == "Success"
    audit.wait_for(lambda m: m.find("EventIdentification/EventID").get("csd-code") == "110107"
                   and pki.hospital.subject in etree.tostring(m).decode(), after=mark)


# -- peers that fail node authentication are refused, and audited ----------------------------------


def refused(url: str, context: ssl.SSLContext | None) -> OSError:
    with pytest.raises(OSError) as caught:  # ssl.SSLError, or the connection closed without an answer
        urllib.request.urlopen(url, context=context, timeout=10).read()
    return caught.value


def assert_alert(message: etree._Element, registry: TlsServer) -> None:
    event = message.find("EventIdentification")
    assert event.get("EventOutcomeIndicator") == "4" and event.get("EventActionCode") == "E"
    peer, node = message.findall("ActiveParticipant")
    assert peer.get("UserIsRequestor") == "true" and peer.get("NetworkAccessPointID") == "127.0.0.1"
    assert node.get("UserID") == registry.base  # https://127.0.0.1:<port>: the node that refused


@pytest.mark.parametrize("case, node, reason", [
    ("no client certificate", None, "no client certificate"),
    ("a certificate from another CA", "intruder", "unable to get local issuer certificate"),
    ("an expired certificate", "lapsed", "certificate has expired"),
])
def test_refused_and_audited(registry: TlsServer, pki: Pki, audit: AuditListener, case, node, reason):
    mark = audit.mark()
    context = pki.context(getattr(pki, node) if node else None)
    refused(registry.base + "/health", context)
    alert = audit.wait_for(node_authentication_alert(reason), after=mark)
    assert_alert(alert, registry)
    assert reason in alert.find("EventIdentification").findtext("EventOutcomeDescription")


def test_plain_http_to_the_tls_port_is_refused_and_audited(registry: TlsServer, audit: AuditListener):
    mark = audit.mark()
    refused(registry.base.replace("https://", "http://") + "/health", None)
    assert_alert(audit.wait_for(node_authentication_alert("plain HTTP"), after=mark), registry)


def test_tls_11_is_refused_and_audited(registry: TlsServer, pki: Pki, audit: AuditListener):
    context = pki.context(pki.hospital)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 allows TLS 1.1 only at level 0
    except (ValueError, ssl.SSLError) as exc:
        pytest.skip(f"this OpenSSL will not speak TLS 1.1: {exc}")
    mark = audit.mark()
    error = refused(registry.base + "/health", context)
    if getattr(error, "reason", None) == "NO_PROTOCOLS_AVAILABLE" or "no protocols available" in str(error):
        pytest.skip(f"this OpenSSL will not speak TLS 1.1: {error}")
    assert_alert(audit.wait_for(node_authentication_alert("TLS version below 1.2"), after=mark), registry)


def test_a_bad_tls_setting_stops_the_start(pki: Pki, tmp_path):
    """tls_certificate without tls_ca_certificates: a message and exit status 2, no traceback."""
    env = dict(os.environ, XDS_DATA_DIR=str(tmp_path), XDS_TLS_CERTIFICATE=str(pki.registry.certificate),
               XDS_TLS_PRIVATE_KEY=str(pki.registry.private_key))
    env.pop("XDS_TLS_CA_CERTIFICATES", None)
    result = subprocess.run([*XDS, "serve", "--port", str(free_port())], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot use the TLS settings" in result.stderr and "tls_ca_certificates" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


# -- outgoing: the repository authenticates to a remote registry ------------------------------------


def provide(url: str, context: ssl.SSLContext, tmp: Path) -> tuple[str, list, str]:
    """ITI-41 of one small document through xds.repository.client (MTOM, streamed, https)."""
    from tests.test_repository_support import pnr_request

    path = tmp / "letter.txt"
    path.write_bytes(b"referral letter")
    request, ids = pnr_request([("Document01", b"", "text/plain")], with_documents=False)
    status, errors = provide_and_register(url, request, [Document("Document01", path, "text/plain", ids["Document01"])],
                                          progress=False, context=context)
    return status.rsplit(":", 1)[-1], errors, ids["Document01"]


def test_repository_registers_over_mutual_tls(registry: TlsServer, pki: Pki, audit: AuditListener,
                                              tmp_path_factory):
    tmp = tmp_path_factory.mktemp("repository-node")
    env = node_env(tmp, pki.repository, pki, audit, XDS_REGISTRY_URL=registry.base + "/registry",
                   XDS_REPOSITORY_UNIQUE_ID="1.2.392.200119.6.102.2")
    repository = start(env, tmp, pki.context(pki.hospital), patients=())
    try:
        status, errors, unique_id = provide(repository.base + "/repository", pki.context(pki.hospital), tmp)
        assert status == "Success", [str(e) for e in errors]
        # In the remote registry, registered by the repository node over mutual TLS:
        assert unique_id in etree.tostring(find_documents(registry.base + "/registry",
                                                          pki.context(pki.hospital))).decode()
    finally:
        stop(repository)


def test_repository_without_a_certificate_gets_registry_not_available(
        registry: TlsServer, pki: Pki, audit: AuditListener, tmp_path_factory):
    """A repository that trusts the network's CA but has no certificate of its own (and so
    serves plain HTTP): the registry refuses it and audits; the repository's client gets
    XDSRegistryNotAvailable with OpenSSL's reason - no stack trace."""
    tmp = tmp_path_factory.mktemp("repository-without-certificate")
    env = node_env(tmp, None, pki, audit, XDS_REGISTRY_URL=registry.base + "/registry")
    repository = start(env, tmp, None, patients=())
    try:
        mark = audit.mark()
        status, errors, _ = provide(repository.base + "/repository", None, tmp)
        assert status == "Failure" and [e.code for e in errors] == ["XDSRegistryNotAvailable"]
        assert "Traceback" not in (errors[0].context or "")
        assert_alert(audit.wait_for(node_authentication_alert("no client certificate"), after=mark), registry)
    finally:
        stop(repository)


# -- the pieces, without servers ------------------------------------------------------------------


def test_subject_string_spells_as_cryptography_does():
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'Kagawa "K-MIX+", Hospital; <East>'),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "#radiology "),
        x509.NameAttribute(NameOID.COMMON_NAME, "node\\1"),
    ])
    # getpeercert()'s form: RDNs from the root down, each a tuple of (long name, value).
    long_names = {NameOID.COUNTRY_NAME: "countryName", NameOID.ORGANIZATION_NAME: "organizationName",
                  NameOID.ORGANIZATIONAL_UNIT_NAME: "organizationalUnitName", NameOID.COMMON_NAME: "commonName"}
    peercert = tuple(((long_names[a.oid], a.value),) for a in name)
    assert tls.subject_string(peercert) == name.rfc4514_string()


def test_peer_subject_without_tls():
    assert tls.peer_subject({}) is None
    with socket.socket() as plain:
        assert tls.peer_subject({"gunicorn.socket": plain}) is None


def test_context_for_only_https():
    settings = Settings()
    assert tls.context_for("http://registry.example/registry", settings) is None
    context = tls.context_for("https://registry.example/registry", settings)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2 and context.verify_mode == ssl.CERT_REQUIRED


def test_submit_retrieve_and_query_commands_over_mutual_tls(registry: TlsServer, pki: Pki, tmp_path):
    """`xds submit`, `xds retrieve` and `xds query --url` present the node certificate of
    their settings."""
    letter = tmp_path / "letter.txt"
    letter.write_bytes("紹介状 referral letter".encode())
    env = dict(os.environ, XDS_DATA_DIR=str(tmp_path / "client"),
               XDS_TLS_CERTIFICATE=str(pki.hospital.certificate), XDS_TLS_PRIVATE_KEY=str(pki.hospital.private_key),
               XDS_TLS_CA_CERTIFICATES=str(pki.ca.certificate))
    url = registry.base + "/repository"
    sent = subprocess.run([*XDS, "submit", str(letter), "--patient", s.PATIENT, "--url", url, "--quiet"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    unique_id = sent.stdout.splitlines()[-1].split()[0]
    got = subprocess.run([*XDS, "retrieve", unique_id, "--url", url, "-o", str(tmp_path / "back.txt"), "--quiet",
                          "--repository", "1.2.392.200119.6.102.1"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert got.returncode == 0, got.stdout + got.stderr
    assert (tmp_path / "back.txt").read_bytes() == letter.read_bytes()
    found = subprocess.run([*XDS, "query", "FindDocuments", "--patient", s.PATIENT, "--url",
                            registry.base + "/registry"], env=env, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0 and unique_id in found.stdout, found.stdout + found.stderr

    anonymous = dict(env, XDS_TLS_CERTIFICATE="", XDS_TLS_PRIVATE_KEY="")
    refused = subprocess.run([*XDS, "submit", str(letter), "--patient", s.PATIENT, "--url", url, "--quiet"],
                             env=anonymous, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr


def test_a_missing_tls_file_is_named_by_its_setting(tmp_path, pki: Pki):
    missing = str(tmp_path / "nowhere.pem")
    with pytest.raises(OSError, match="tls_certificate .*nowhere.pem"):
        tls.client_context(Settings(tls_certificate=missing))
    with pytest.raises(OSError, match="tls_ca_certificates .*nowhere.pem"):
        tls.server_context(Settings(tls_certificate=str(pki.registry.certificate),
                                    tls_private_key=str(pki.registry.private_key), tls_ca_certificates=missing))
