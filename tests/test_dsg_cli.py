"""DSG over HTTP: `xds serve` (2 workers) takes ITI-41 submissions with signature documents
under dsg_policy record and reject, and `xds verify` finds a signature document in its registry
(ITI-18), retrieves it and what it signs (ITI-43) and prints its verdict, with its exit status.
The signature documents come from tests/test_dsg.py's signers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.server import free_port
from tests.test_dsg import Authority, _signed_request, pki  # noqa: F401 - pki is a fixture
from tests.test_repository_support import codes_of, soap_pnr, start_server, status_of, stop_server

XDS = [sys.executable, "-m", "xds.cli"]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def recording(request, tmp_path_factory, pki):  # noqa: F811
    running = start_server(request.param, tmp_path_factory.mktemp(f"dsg-record-{request.param}"),
                           extra_env={"XDS_DSG_TRUST_ANCHORS": str(pki["ca"].pem)})
    yield running
    stop_server(running)


def _submit(server, request):
    status, response = soap_pnr(server, request, mtom=False)
    assert status == 200
    return response.body


def _verify(server, unique_id, *extra, env=None):
    return subprocess.run([*XDS, "verify", unique_id, "--url", server.base + "/registry", *extra],
                          env=env or server.env, capture_output=True, text=True, timeout=120)


def test_a_valid_signature_is_stored_and_verified(recording, pki):  # noqa: F811
    request, _, ids = _signed_request(pki)
    assert status_of(_submit(recording, request)) == "Success"
    done = _verify(recording, ids["Signature"])
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for check in ("structure: held", "algorithms: held", "signature: held", "certificate: held", "purpose: held",
                  "signs: held", f"digest:{ids['Letter']}: held", f"digest:{ids['Lab']}: held"):
        assert check in out, out
    assert "verdict: all checks held (8 of 8 held)" in out
    # the same machine's store holds the verdict recorded when the signature was submitted
    assert "recorded when it was submitted" in out


def test_a_failing_signature_is_recorded_and_reported(recording, pki):  # noqa: F811
    request, _, ids = _signed_request(pki, signed_over={"lab": b"the lab report before it was changed"})
    assert status_of(_submit(recording, request)) == "Success"  # record: accepted
    done = _verify(recording, ids["Signature"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"digest:{ids['Lab']}: failed - the 5,000 bytes retrieved are not what was signed" in done.stdout
    assert "verdict: NOT VERIFIED (7 of 8 held)" in done.stdout
    recorded = done.stdout.split("recorded when it was submitted", 1)[1]
    assert f"digest:{ids['Lab']}: failed - the 5,000 bytes in the submission are not what was signed" in recorded


def test_verify_without_trust_anchors_fails_the_certificate(recording, pki):  # noqa: F811
    request, _, ids = _signed_request(pki)
    assert status_of(_submit(recording, request)) == "Success"
    env = {**recording.env, "XDS_DSG_TRUST_ANCHORS": ""}
    done = _verify(recording, ids["Signature"], env=env)
    assert done.returncode == 1 and "certificate: failed - no trust anchors are configured" in done.stdout


def test_verify_with_other_trust_anchors(recording, pki, tmp_path):  # noqa: F811
    request, _, ids = _signed_request(pki)
    assert status_of(_submit(recording, request)) == "Success"
    other = Authority(tmp_path, "another-ca")
    done = _verify(recording, ids["Signature"], "--trust-anchors", str(other.pem))
    assert done.returncode == 1 and "does not chain to a trust anchor" in done.stdout


def test_verify_of_what_is_not_there(recording):
    done = _verify(recording, "1.2.999.404")
    assert done.returncode == 1 and "the registry holds no DocumentEntry with this uniqueId" in done.stdout


def test_verify_of_an_unreachable_registry(recording):
    done = subprocess.run([*XDS, "verify", "1.2.3", "--url", f"http://127.0.0.1:{free_port()}/registry"],
                          env=recording.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "xds: the registry at http://127.0.0.1:" in done.stderr


def test_reject_refuses_what_does_not_verify_over_http(tmp_path, pki):  # noqa: F811
    server = start_server("sqlite", tmp_path, extra_env={"XDS_DSG_TRUST_ANCHORS": str(pki["ca"].pem),
                                                          "XDS_DSG_POLICY": "reject"})
    try:
        good, _, good_ids = _signed_request(pki)
        assert status_of(_submit(server, good)) == "Success"
        for signer in ("untrusted", "expired"):
            bad, _, ids = _signed_request(pki, signer=signer)
            body = _submit(server, bad)
            assert status_of(body) == "Failure" and codes_of(body) == ["XDSRepositoryMetadataError"]
            assert "the DSG check 'certificate' failed" in body.find(".//{*}RegistryError").get("codeContext")
            assert _verify(server, ids["Signature"]).returncode == 1  # never registered
        assert _verify(server, good_ids["Signature"]).returncode == 0
    finally:
        stop_server(server)
