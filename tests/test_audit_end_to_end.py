"""The network as a K-MIX-like operator runs it: an `xds serve` secure node (HTTPS, mutual TLS)
auditing to `xds audit-server` over TLS, a hospital publishing and reading a letter with the
command-line clients, then the patient asking who looked at their records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests import submissions as s
from tests.certs import CertificateAuthority
from tests.server import XDS, serve

ROOT = Path(__file__).resolve().parents[1]


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*XDS, *args], env=env, capture_output=True, text=True, timeout=120)


def test_a_patients_access_history_from_the_audit_record_repository(tmp_path):
    ca = CertificateAuthority(tmp_path / "pki")
    arr_node, xds_node, hospital = ca.issue("arr"), ca.issue("xds-node"), ca.issue("hospital-a")
    base = {k: v for k, v in os.environ.items() if not k.startswith("XDS_")}

    arr_env = dict(base, XDS_DATA_DIR=str(tmp_path / "arr"), XDS_TLS_CERTIFICATE=str(arr_node.certificate),
                   XDS_TLS_PRIVATE_KEY=str(arr_node.private_key), XDS_TLS_CA_CERTIFICATES=str(ca.certificate))
    assert _run(arr_env, "db", "upgrade").returncode == 0
    arr = subprocess.Popen([*XDS, "audit-server", "--tls", "127.0.0.1:0"], env=arr_env, cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server = None
    try:
        _, transport, address = arr.stdout.readline().split()
        assert transport == "tls"

        node_env = dict(base, XDS_DATA_DIR=str(tmp_path / "node"), XDS_AUDIT_DESTINATIONS=f"tls://{address}",
                        XDS_AUDIT_SOURCE_ID="KMIX-XDS-1", XDS_AUDIT_ENTERPRISE_SITE_ID="KMIX",
                        XDS_TLS_CERTIFICATE=str(xds_node.certificate), XDS_TLS_PRIVATE_KEY=str(xds_node.private_key),
                        XDS_TLS_CA_CERTIFICATES=str(ca.certificate), XDS_REPOSITORY_UNIQUE_ID="1.2.392.200119.6.102.1")
        assert _run(node_env, "db", "upgrade").returncode == 0
        assert _run(node_env, "patients", "add", s.PATIENT).returncode == 0
        import ssl

        context = ssl.create_default_context(cafile=str(ca.certificate))
        context.load_cert_chain(hospital.certificate, hospital.private_key)
        server, url = serve(node_env, tmp_path / "node.log", context=context, new_session=True)

        client_env = dict(base, XDS_DATA_DIR=str(tmp_path / "client"),
                          XDS_TLS_CERTIFICATE=str(hospital.certificate), XDS_TLS_PRIVATE_KEY=str(hospital.private_key),
                          XDS_TLS_CA_CERTIFICATES=str(ca.certificate))
        letter = tmp_path / "referral.txt"
        letter.write_text("紹介状: 高松の病院へ")
        sent = _run(client_env, "submit", str(letter), "--patient", s.PATIENT, "--url", url + "/repository",
                    "--title", "Referral letter", "--quiet")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        unique_id = sent.stdout.splitlines()[-1].split()[0]
        got = _run(client_env, "retrieve", unique_id, "--url", url + "/repository", "-o", str(tmp_path / "back.txt"),
                   "--repository", "1.2.392.200119.6.102.1", "--quiet")
        assert got.returncode == 0, got.stderr

        # ITI-41 and ITI-43, each in the Audit Record Repository, chained and intact.
        # Delivery is asynchronous: wait for the ITI-43 record, then read the report, which cannot
        # then miss it (reading the report first raced with the last record's arrival).
        deadline = time.monotonic() + 30
        while True:
            search = _run(arr_env, "audit", "search", "--xml")
            if "ITI-43" in search.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        report = _run(arr_env, "audit", "report", "--patient", s.PATIENT)
        assert report.returncode == 0, report.stderr
        assert "110107" in search.stdout and "ITI-41" in search.stdout and "ITI-43" in search.stdout
        assert "CN=hospital-a" in search.stdout  # the client certificate, in the records
        assert unique_id in report.stdout and "KMIX-XDS-1" in report.stdout, report.stdout
        verify = _run(arr_env, "audit", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(15)
        arr.send_signal(signal.SIGTERM)
        arr.communicate(timeout=30)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run with pytest")
