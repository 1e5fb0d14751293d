"""The node's own audit events: start, stop, and a configuration changed between two starts."""

from __future__ import annotations

import base64
import os
import subprocess

import pytest

from tests.server import XDS, serve
from tests.test_audit_events import schema  # noqa: F401 (fixture)
from tests.test_audit_trail import _receive, _udp_receiver
from xds.audit import node
from xds.audit.trail import AuditTrail
from xds.config import Settings


def _started(tmp_path, receiver, **values):
    settings = Settings(data_dir=tmp_path, audit_destinations=f"udp://127.0.0.1:{receiver.getsockname()[1]}",
                        **values)
    trail = AuditTrail.from_settings(settings).start()
    node.started(trail, settings, "http://127.0.0.1:8080/")
    assert trail.flush(10)
    trail.close()
    return trail


def _codes(record) -> tuple[str, str]:
    event = record.find("EventIdentification")
    return event.find("EventID").get("csd-code"), event.find("EventTypeCode").get("csd-code")


def test_start_stop_and_a_configuration_change(tmp_path, schema):  # noqa: F811 (the fixture)
    receiver = _udp_receiver()
    _started(tmp_path, receiver, codes_file="")
    (start,) = _receive(receiver, 1)  # the first start: nothing to compare with
    schema.assertValid(start)
    assert _codes(start) == ("110100", "110120")

    _started(tmp_path, receiver, codes_file="", port=9090)  # where it listens is not configuration
    assert _codes(_receive(receiver, 1)[0]) == ("110100", "110120")

    _started(tmp_path, receiver, codes_file="/etc/xds/codes.xml", check_patient_ids=False)
    start, alert = _receive(receiver, 2)
    schema.assertValid(alert)
    assert _codes(alert) == ("110113", "110131")
    description = alert.findtext("EventIdentification/EventOutcomeDescription")
    assert description == "settings changed since the last start: check_patient_ids, codes_file"
    assert "/etc/xds" not in base64.b64decode(alert.find(".//ParticipantObjectDetail").get("value")).decode()

    trail = AuditTrail.from_settings(Settings(
        data_dir=tmp_path, audit_destinations=f"udp://127.0.0.1:{receiver.getsockname()[1]}")).start()
    node.stopped(trail)
    assert trail.flush(10)
    trail.close()
    (stop,) = _receive(receiver, 1)
    schema.assertValid(stop)
    assert _codes(stop) == ("110100", "110121")


def test_a_server_records_its_start_and_its_stop(tmp_path, schema):  # noqa: F811
    """Once per server (its master process), not per worker; the stop, written when no worker
    is left to send it, goes out at the next start."""
    receiver = _udp_receiver()
    env = dict(os.environ, XDS_DATA_DIR=str(tmp_path / "var"),
               XDS_AUDIT_DESTINATIONS=f"udp://127.0.0.1:{receiver.getsockname()[1]}")
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    process, _ = serve(env, tmp_path / "server-1.log")
    (start,) = _receive(receiver, 1)
    assert _codes(start) == ("110100", "110120")
    process.terminate()
    process.wait(15)
    process, _ = serve(env, tmp_path / "server-2.log")
    try:
        stop, start = _receive(receiver, 2)
        schema.assertValid(stop)
        assert [_codes(stop), _codes(start)] == [("110100", "110121"), ("110100", "110120")]
        receiver.settimeout(1)
        with pytest.raises(TimeoutError):  # two workers, still one start
            receiver.recv(65536)
    finally:
        process.terminate()
        process.wait(15)


def test_bad_audit_destinations_stop_the_start(tmp_path):
    env = dict(os.environ, XDS_DATA_DIR=str(tmp_path), XDS_AUDIT_DESTINATIONS="syslog://arr:514")
    done = subprocess.run([*XDS, "serve", "--port", "1"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "audit destination 'syslog://arr:514'" in done.stderr
    assert "Traceback" not in done.stderr
