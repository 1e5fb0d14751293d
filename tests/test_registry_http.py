"""The registry over HTTP, served by `xds serve` (gunicorn) on a random port, on SQLite and
PostgreSQL; real clients: raw SOAP 1.2 over urllib, zeep built from the served WSDL, and the
`xds` command line."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest
from lxml import etree

from tests import submissions as s
from tests.server import XDS, serve
from xds.soap import build_envelope, parse_response

REGISTER = "urn:ihe:iti:2007:RegisterDocumentSet-b"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
WSA = "http://www.w3.org/2005/08/addressing"



@pytest.fixture
def server(database_url, tmp_path):
    """A real server process; yields its base URL and the environment that points at its database."""
    env = dict(os.environ, XDS_DATA_DIR=str(tmp_path / "var"), XDS_DATABASE_URL=database_url)
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run([*XDS, "patients", "add", s.PATIENT], env=env, check=True, capture_output=True)
    process, base = serve(env, tmp_path / "server.log")
    yield base, env
    process.terminate()
    process.wait(10)


def post(url: str, body: bytes, content_type: str) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def soap_register(base: str, xml: str, message_id: str = "urn:uuid:6a0b1c2d-0000-4000-8000-000000000001"):
    envelope = build_envelope(s.element(xml), REGISTER, to=base + "/registry", message_id=message_id)
    status, content_type, body = post(base + "/registry", envelope,
                                      f'application/soap+xml; charset=UTF-8; action="{REGISTER}"')
    return status, parse_response(content_type, body)


def test_register_over_http(server):
    base, _ = server
    xml, _ = s.submission()
    status, response = soap_register(base, xml)
    assert status == 200
    assert response.action == REGISTER + "Response"
    assert response.header.findtext(f"{{{WSA}}}RelatesTo") == "urn:uuid:6a0b1c2d-0000-4000-8000-000000000001"
    assert response.body.tag == f"{{{RS}}}RegistryResponse"
    assert response.body.get("status").endswith(":Success"), etree.tostring(response.body)


def test_failure_over_http_lists_the_errors(server):
    base, _ = server
    xml, _ = s.submission(patient="NOBODY^^^&1.2.392.200119.6.102.99&ISO")
    status, response = soap_register(base, xml)
    assert status == 200
    assert response.body.get("status").endswith(":Failure")
    codes = [e.get("errorCode") for e in response.body.iter(f"{{{RS}}}RegistryError")]
    assert codes == ["XDSUnknownPatientId"]


def test_health_reports_the_database(server):
    base, _ = server
    body = json.loads(urllib.request.urlopen(base + "/health").read())
    assert body == {"status": "ok", "database": "reachable"}


def test_wsdl_is_served(server):
    base, _ = server
    wsdl = etree.fromstring(urllib.request.urlopen(base + "/registry?wsdl").read())
    assert wsdl.tag == "{http://schemas.xmlsoap.org/wsdl/}definitions"


class _EbrimBody:
    """A zeep plugin that puts an lxml SubmitObjectsRequest in the outgoing body: zeep builds
    the envelope, WS-Addressing headers and HTTP from the WSDL, but cannot serialize ebRIM's
    substitution groups (rim:ExtrinsicObject in rim:Identifiable) from Python objects."""

    def __init__(self, request: etree._Element):
        self.request = request

    def egress(self, envelope, http_headers, operation, binding_options):
        body = envelope.find("{http://www.w3.org/2003/05/soap-envelope}Body")
        body.clear()
        body.append(self.request)
        return envelope, http_headers

    def ingress(self, envelope, http_headers, operation):
        return envelope, http_headers


def test_zeep_client_from_the_served_wsdl(server):
    import zeep

    base, _ = server
    xml, _ = s.submission()
    client = zeep.Client(base + "/registry?wsdl", plugins=[_EbrimBody(s.element(xml))])
    service = client.create_service("{urn:ihe:iti:xds-b:2007}DocumentRegistry_Binding_Soap12", base + "/registry")
    # zeep validates its own (empty) rendering of the request; the plugin then swaps in ours.
    response = service["DocumentRegistry_RegisterDocumentSet-b"](RegistryObjectList={})
    assert response.status == "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"


def test_register_command_line(server, tmp_path):
    base, env = server
    xml, _ = s.submission()
    path = tmp_path / "submission.xml"
    path.write_text(xml)
    done = subprocess.run([*XDS, "register", str(path), "--url", base + "/registry"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "status: Success" in done.stdout
    again = subprocess.run([*XDS, "register", str(path), "--url", base + "/registry"], env=env,
                           capture_output=True, text=True)
    assert again.returncode == 1
    assert "XDSDuplicateUniqueIdInRegistry" in again.stdout


def test_patients_command_line(database_url, tmp_path):
    env = dict(os.environ, XDS_DATA_DIR=str(tmp_path / "var"), XDS_DATABASE_URL=database_url)
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"K{i:06d}^^^&1.2.392.200119.6.102.11&ISO\n" for i in range(100_000)))
    done = subprocess.run([*XDS, "patients", "add", "--from", str(ids)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("100000 patient id(s) added")
    bad = subprocess.run([*XDS, "patients", "add", "K1^^^&not-an-oid&ISO"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "not an OID" in bad.stderr
    removed = subprocess.run([*XDS, "patients", "remove", "K000001^^^&1.2.392.200119.6.102.11&ISO"], env=env,
                             capture_output=True, text=True)
    assert removed.stdout.startswith("1 patient id(s) removed")
    listed = subprocess.run([*XDS, "patients", "list"], env=env, capture_output=True, text=True)
    assert len(listed.stdout.splitlines()) == 99_999
