"""XUA over HTTP: a real `xds serve` (gunicorn) with xua_policy set, real clients (zeep built
from the served WSDL, raw SOAP 1.2 over urllib, mutual TLS for holder-of-key), assertions signed
by a test identity provider (tests/saml.py), and the audit records the server sends, received
over UDP as an Audit Record Repository would receive them."""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from cryptography import x509
from lxml import etree

from tests import queries as q
from tests import saml
from tests import submissions as s
from tests.certs import CertificateAuthority
from tests.server import XDS, serve
from xds.audit import syslog
from xds.soap import build_envelope, parse_response

STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
RETRIEVE = "urn:ihe:iti:2007:RetrieveDocumentSet"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"


class AuditReceiver:
    """A UDP socket the server's audit trail sends to (RFC 5426)."""

    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"udp://127.0.0.1:{self.socket.getsockname()[1]}"
        self.seen: list[etree._Element] = []

    def wait_for(self, matches, timeout: float = 20) -> etree._Element:
        """The first record that `matches`, waiting for it to be delivered."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.seen:
                if matches(message):
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no such audit record among {len(self.seen)} received")
            self.socket.settimeout(remaining)
            try:
                self.seen.append(etree.fromstring(syslog.parse(self.socket.recv(65536)).msg))
            except TimeoutError:
                continue


def _event(code: str):
    return lambda message: any(element.get("csd-code") == code for element in
                               message.iterfind("EventIdentification/EventTypeCode"))


@pytest.fixture
def server(database_url, tmp_path):
    """`xds serve` with XUA required at the registry and off at the repository."""
    idp = saml.IdentityProvider(tmp_path / "idp")
    audit = AuditReceiver()
    env = dict(os.environ, XDS_DATA_DIR=str(tmp_path / "var"), XDS_DATABASE_URL=database_url,
               XDS_XUA_POLICY="registry=required,repository=off", XDS_XUA_TRUSTED_CERTIFICATES=str(idp.certificate),
               XDS_AUDIT_DESTINATIONS=audit.url)
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run([*XDS, "patients", "add", s.PATIENT], env=env, check=True, capture_output=True)
    process, base = serve(env, tmp_path / "server.log")
    yield base, idp, audit
    process.terminate()
    process.wait(10)
    audit.socket.close()


def post(url: str, body: bytes, action: str, context: ssl.SSLContext | None = None):
    request = urllib.request.Request(url, data=body, headers={
        "Content-Type": f'application/soap+xml; charset=UTF-8; action="{action}"'})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, parse_response(response.headers["Content-Type"], response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, parse_response(exc.headers["Content-Type"], exc.read())


def find_documents(url: str, *header_blocks, context: ssl.SSLContext | None = None):
    body = q.request("FindDocuments", ("$XDSDocumentEntryPatientId", q.quote(s.PATIENT)), q.APPROVED_DOCUMENTS)
    return post(url, build_envelope(body, STORED_QUERY, to=url, header_blocks=header_blocks), STORED_QUERY, context)


def fault_codes(response) -> list[str]:
    return [value.text for value in response.body.iter(f"{{{SOAP12}}}Value")]


class _QueryBody:
    """A zeep plugin that puts an lxml AdhocQueryRequest in the body zeep built (zeep cannot
    write ebRIM's slots from Python objects); zeep writes the envelope, its WS-Addressing
    headers, the wsse:Security header it is given (_soapheaders) and the HTTP."""

    def __init__(self, request: etree._Element):
        self.request = request

    def egress(self, envelope, http_headers, operation, binding_options):
        body = envelope.find(f"{{{SOAP12}}}Body")
        body.clear()
        body.append(self.request)
        return envelope, http_headers

    def ingress(self, envelope, http_headers, operation):
        return envelope, http_headers


def test_zeep_with_a_signed_assertion_is_answered_and_its_user_audited(server):
    import zeep

    base, idp, audit = server
    request = q.request("FindDocuments", ("$XDSDocumentEntryPatientId", q.quote(s.PATIENT)), q.APPROVED_DOCUMENTS)
    client = zeep.Client(base + "/registry?wsdl", plugins=[_QueryBody(request)])
    service = client.create_service("{urn:ihe:iti:xds-b:2007}DocumentRegistry_Binding_Soap12", base + "/registry")
    assertion = idp.signed(audience=base + "/registry", alias="taro")
    response = service["DocumentRegistry_RegistryStoredQuery"](
        ResponseOption={"returnType": "ObjectRef"}, AdhocQuery={"id": "x"}, _soapheaders=[saml.security(assertion)])
    assert response.status == "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"

    record = audit.wait_for(_event("ITI-18"))
    person = record.find(f"ActiveParticipant[@UserID='{saml.USER}']")
    assert person.get("UserName") == f"taro<{saml.USER}@{saml.ISSUER}>"
    assert person.get("UserIsRequestor") == "true"
    assert person.find("RoleIDCode").get("csd-code") == "HCP"
    assert record.find("EventIdentification/PurposeOfUse").get("csd-code") == "NORM"


def test_without_or_with_a_bad_assertion_the_registry_answers_the_ws_security_fault(server):
    base, idp, audit = server
    url = base + "/registry"
    status, response = find_documents(url)
    assert status == 400 and fault_codes(response) == ["env:Sender", "wsse:InvalidSecurity"]
    assert "requires an X-User Assertion" in response.body.findtext(f".//{{{SOAP12}}}Text")

    now = dt.datetime.now(dt.UTC)
    expired = idp.signed(audience=url, not_before=now - dt.timedelta(hours=2),
                         not_on_or_after=now - dt.timedelta(hours=1))
    status, response = find_documents(url, saml.security(expired))
    assert status == 400 and fault_codes(response) == ["env:Sender", "wsse:InvalidSecurityToken"]
    assert "expired" in response.body.findtext(f".//{{{SOAP12}}}Text")

    tampered = idp.signed(audience=url)
    tampered.find(f"{{{saml.SAML2}}}Subject/{{{saml.SAML2}}}NameID").text = "director@kagawa-hp.example"
    status, response = find_documents(url, saml.security(tampered))
    assert status == 400 and fault_codes(response) == ["env:Sender", "wsse:FailedAuthentication"]

    status, response = find_documents(url, saml.security(idp.signed(audience=url)))
    assert status == 200 and response.body.get("status").endswith(":Success")

    alert = audit.wait_for(lambda m: _event("110132")(m) and b"expired" in etree.tostring(m))
    assert alert.find("EventIdentification/EventID").get("csd-code") == "110113"
    assert alert.find("ActiveParticipant[@UserIsRequestor='false']").get("UserID") == url


def test_where_xua_is_off_a_mandatory_security_header_is_not_understood(server):
    base, idp, _ = server
    url = base + "/repository"
    body = etree.Element("{urn:ihe:iti:xds-b:2007}RetrieveDocumentSetRequest")
    status, response = post(url, build_envelope(body, RETRIEVE, to=url, header_blocks=[
        saml.security(idp.signed(audience=url))]), RETRIEVE)
    assert status == 500 and fault_codes(response) == ["env:MustUnderstand"]
    assert response.header.find(f"{{{SOAP12}}}NotUnderstood") is not None
    # not marked mustUnderstand, it is only ignored (SOAP 1.2 Part 1 2.4)
    status, response = post(url, build_envelope(body, RETRIEVE, to=url, header_blocks=[
        saml.security(idp.signed(audience=url), must_understand=False)]), RETRIEVE)
    assert fault_codes(response)[:1] != ["env:MustUnderstand"]


def test_holder_of_key_over_mutual_tls(database_url, tmp_path):
    """The assertion names the key of hospital A's TLS certificate: hospital A is answered,
    hospital B presenting the same assertion is refused."""
    ca = CertificateAuthority(tmp_path / "pki")
    node, hospital_a, hospital_b = ca.issue("xds-node"), ca.issue("hospital-a"), ca.issue("hospital-b")
    idp = saml.IdentityProvider(tmp_path / "idp")
    env = dict(os.environ, XDS_DATA_DIR=str(tmp_path / "var"), XDS_DATABASE_URL=database_url,
               XDS_XUA_POLICY="required", XDS_XUA_TRUSTED_CERTIFICATES=str(idp.certificate),
               XDS_TLS_CERTIFICATE=str(node.certificate), XDS_TLS_PRIVATE_KEY=str(node.private_key),
               XDS_TLS_CA_CERTIFICATES=str(ca.certificate))
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)

    def context(client) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(ca.certificate))
        ctx.load_cert_chain(client.certificate, client.private_key)
        return ctx

    process, base = serve(env, tmp_path / "server.log", context=context(hospital_a))
    try:
        url = base + "/registry"
        key = x509.load_pem_x509_certificate(hospital_a.certificate.read_bytes())
        assertion = idp.signed(audience=url, method=saml.HOLDER_OF_KEY, confirmation_key=key)
        status, response = find_documents(url, saml.security(assertion), context=context(hospital_a))
        assert status == 200 and response.body.get("status").endswith(":Success")
        status, response = find_documents(url, saml.security(assertion), context=context(hospital_b))
        assert status == 400 and fault_codes(response) == ["env:Sender", "wsse:FailedAuthentication"]
        assert "TLS client certificate" in response.body.findtext(f".//{{{SOAP12}}}Text")
    finally:
        process.terminate()
        process.wait(10)
