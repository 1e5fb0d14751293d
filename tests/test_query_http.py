"""Registry Stored Query (ITI-18) over HTTP against `xds serve` (gunicorn, SQLite and
PostgreSQL), and the `xds query` command on a remote registry (--url) and on the local
database."""

from __future__ import annotations

import os
import subprocess

import pytest
from lxml import etree

from tests import queries as q
from tests import submissions as s
from tests.server import serve
from tests.test_registry_http import XDS, post, server, soap_register  # noqa: F401  (server is a fixture)
from xds.soap import build_envelope, parse_response

STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
WSA = "http://www.w3.org/2005/08/addressing"


def soap_query(base: str, request: etree._Element, message_id: str = "urn:uuid:6a0b1c2d-0000-4000-8000-0000000000aa"):
    envelope = build_envelope(request, STORED_QUERY, to=base + "/registry", message_id=message_id)
    status, content_type, body = post(base + "/registry", envelope,
                                      f'application/soap+xml; charset=UTF-8; action="{STORED_QUERY}"')
    return status, parse_response(content_type, body)


def registered(base: str) -> dict:
    xml, uids = s.submission()
    status, response = soap_register(base, xml)
    assert status == 200 and response.body.get("status").endswith(":Success")
    return uids


def test_find_documents_over_http(server):
    base, _ = server
    uids = registered(base)
    request = q.request("FindDocuments", ("$XDSDocumentEntryPatientId", q.quote(s.PATIENT)), q.APPROVED_DOCUMENTS,
                        return_type="LeafClass")
    status, response = soap_query(base, request)
    assert status == 200
    assert response.action == "urn:ihe:iti:2007:RegistryStoredQueryResponse"
    assert response.header.findtext(f"{{{WSA}}}RelatesTo") == "urn:uuid:6a0b1c2d-0000-4000-8000-0000000000aa"
    answer = q.read(response.body)
    assert answer.status == "Success"
    assert len(answer.kind("DocumentEntry")) == 1
    element = answer.element.find(f"{{{q.ns.RIM}}}RegistryObjectList")[0]
    assert uids["document"] in etree.tostring(element, encoding="unicode")


def test_error_over_http(server):
    base, _ = server
    status, response = soap_query(base, q.request("urn:uuid:00000000-0000-4000-8000-000000000000"))
    assert status == 200
    answer = q.read(response.body)
    assert answer.status == "Failure" and answer.codes == ["XDSUnknownStoredQuery"]
    assert response.body.find(f"{{{q.ns.RIM}}}RegistryObjectList") is not None


def xds(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*XDS, "query", *args], env=env, capture_output=True, text=True)


def test_query_command_line_remote_and_local(server):
    base, env = server
    uids = registered(base)
    url = ("--url", base + "/registry")
    for where in (url, ()):  # over SOAP, then in process on the settings' database
        table = xds(env, "FindDocuments", "--patient", s.PATIENT, *where)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0] == "status: Success"
        assert lines[1].split() == ["object", "patient", "uniqueId", "class", "type", "time", "status", "title"]
        assert uids["document"] in lines[2] and "Approved" in lines[2] and "Referral letter" in lines[2]
        assert lines[-1] == "1 object(s)"

    refs = xds(env, "GetAll", "--patient", s.PATIENT, "--return", "ObjectRef", *url)
    assert refs.returncode == 0 and refs.stdout.splitlines()[-1] == "3 object(s)"  # SubmissionSet, document, HasMember

    raw = xds(env, "GetSubmissionSetAndContents", "--param", f"$XDSSubmissionSetUniqueId='{uids['submission_set']}'",
              "--xml", *url)
    answer = q.read(etree.fromstring(raw.stdout.encode()))
    assert answer.counts() == {"SubmissionSet": 1, "DocumentEntry": 1, "Association": 1}

    by_id = xds(env, "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d", "--patient", s.PATIENT,
                "-p", f"$XDSDocumentEntryClassCode=('{s.key(s.CLASS)}')", "-p", "$XDSDocumentEntryCreationTimeFrom=2025")
    assert by_id.returncode == 0 and by_id.stdout.splitlines()[-1] == "0 object(s)"


def test_query_command_line_errors(server):
    base, env = server
    failed = xds(env, "FindDocuments", "--param", "$XDSDocumentEntryPatientId=P1", "--url", base + "/registry")
    assert failed.returncode == 1
    assert "status: Failure" in failed.stdout and "XDSRegistryError at $XDSDocumentEntryPatientId" in failed.stdout
    unknown = xds(env, "FindEverything")
    assert unknown.returncode == 2 and "FindDocuments" in unknown.stderr
    no_patient = xds(env, "GetDocuments", "--patient", s.PATIENT)
    assert no_patient.returncode == 2 and "takes no patient id" in no_patient.stderr
    bad_param = xds(env, "FindDocuments", "--param", "no-equals-sign")
    assert bad_param.returncode == 2


@pytest.fixture
def limited_server(database_url, tmp_path):
    """A server whose query limits are set in its environment, as an operator sets them."""
    env = dict(os.environ, XDS_DATA_DIR=str(tmp_path / "var"), XDS_DATABASE_URL=database_url,
               XDS_MAX_QUERY_PARAMETER_VALUES="2", XDS_MAX_LEAF_CLASS_BYTES="1000")
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run([*XDS, "patients", "add", s.PATIENT], env=env, check=True, capture_output=True)
    process, base = serve(env, tmp_path / "server.log")
    yield base
    process.terminate()
    process.wait(10)


def test_query_limits_over_http(limited_server):
    base = limited_server
    registered(base)
    patient = ("$XDSDocumentEntryPatientId", q.quote(s.PATIENT))
    three_codes = ("$XDSDocumentEntryClassCode", q.quote_list(["a^^^1", "b^^^1", "c^^^1"]))
    status, response = soap_query(base, q.request("FindDocuments", patient, q.APPROVED_DOCUMENTS, three_codes))
    answer = q.read(response.body)
    assert status == 200 and answer.codes == ["XDSStoredQueryParamNumber"]
    assert "more than 2 values" in answer.errors[0].context
    # The one DocumentEntry's XML is larger than the 1,000 bytes the server answers as LeafClass.
    status, response = soap_query(base, q.request("FindDocuments", patient, q.APPROVED_DOCUMENTS,
                                                  return_type="LeafClass"))
    answer = q.read(response.body)
    assert status == 200 and answer.codes == ["XDSTooManyResults"]
    assert "more than 1000 bytes" in answer.errors[0].context
    status, response = soap_query(base, q.request("FindDocuments", patient, q.APPROVED_DOCUMENTS))
    assert q.read(response.body).status == "Success" and len(q.read(response.body).ids) == 1
