"""The Audit Record Repository's listeners (xds.arr.receiver), over real sockets: syslog over
mutual TLS (RFC 5425), plain TCP (RFC 6587, octet counting and LF framing) and UDP (RFC 5426),
with certificates from tests/certs.py; broken framing, malformed messages, refused peers; and
`xds audit-server` as a process. Each runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.certs import CertificateAuthority
from tests.test_audit_repository import (
    PATIENT,
    query_event,
    retrieve_event,
    submit_event,
    syslog_message,
)
from xds.arr import repository
from xds.audit import events, syslog
from xds.arr.receiver import AuditRecordRepository, parse_address
from xds.audit.transport import connect
from xds.config import Settings

LOCAL = ("127.0.0.1", 0)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The network's CA with the repository's and a hospital's certificates, and a CA nobody
    trusts with a node of its own."""
    folder = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(folder / "network")
    stranger = CertificateAuthority(folder / "elsewhere", name="other-ca")
    return {"ca": ca, "arr": ca.issue("arr"), "hospital": ca.issue("kagawa-hospital"),
            "stranger": stranger.issue("stranger")}


@pytest.fixture
def settings(pki):
    arr = pki["arr"]
    return Settings(tls_certificate=str(arr.certificate), tls_private_key=str(arr.private_key),
                    tls_ca_certificates=str(pki["ca"].certificate), audit_source_id="KMIX-ARR")


@pytest.fixture
def arr(settings, engine):
    with AuditRecordRepository(settings, engine, tls=LOCAL, tcp=LOCAL, udp=LOCAL) as server:
        yield server


def _client_context(pki, node: str | None = "hospital") -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca"].certificate))
    if node:
        context.load_cert_chain(str(pki[node].certificate), str(pki[node].private_key))
    return context


def _wait_until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def _wait_stored(arr: AuditRecordRepository, count: int) -> None:
    _wait_until(lambda: arr.counters.snapshot()["stored"] >= count)


def _all(engine):
    return repository.search(engine, limit=None).records


def _tls_connection(arr, pki, node="hospital") -> ssl.SSLSocket:
    host, port = arr.addresses["tls"]
    raw = socket.create_connection((host, port), timeout=10)
    return _client_context(pki, node).wrap_socket(raw, server_hostname="localhost")


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server ended the connection (EOF, reset or a TLS alert)."""
    sock.settimeout(10)
    try:
        return sock.recv(100) == b""
    except (ssl.SSLError, ConnectionError):
        return True


# --- TLS -----------------------------------------------------------------------------------

def test_tls_messages_are_stored_with_the_peer(arr, engine, pki):
    sent = [syslog_message(retrieve_event()), syslog_message(query_event())]
    with _tls_connection(arr, pki) as sock:
        sock.sendall(b"".join(syslog.octet_counted(message) for message in sent))
        _wait_stored(arr, 2)
    first, second = _all(engine)
    assert [first.raw, second.raw] == sent
    assert (first.transport, first.sender_address, first.tls_peer) == (
        "tls", "127.0.0.1", pki["hospital"].subject)
    assert first.sender_port > 0
    assert first.message == retrieve_event()
    assert (first.event_id, first.event_action, first.user_name, first.source_address) == (
        "110106", "R", "山田 太郎", "10.1.2.3")
    assert first.patients == [PATIENT] and first.documents == ["1.2.392.1.1", "1.2.392.1.2"]
    assert second.event_id == "110112"
    assert first.received_at <= second.received_at
    assert repository.verify(engine).ok


def test_the_projects_own_sender_delivers_over_tls(arr, engine, pki):
    """xds.audit.transport, the audit trail's sender, as the client."""
    node = pki["hospital"]
    sender = Settings(tls_certificate=str(node.certificate), tls_private_key=str(node.private_key),
                      tls_ca_certificates=str(pki["ca"].certificate))
    host, port = arr.addresses["tls"]
    destination = connect(f"tls://localhost:{port}", sender)
    try:
        for message in (submit_event(), query_event(), retrieve_event()):
            destination.send(syslog_message(message))
        _wait_stored(arr, 3)
    finally:
        destination.close()
    assert [r.event_id for r in _all(engine)] == ["110107", "110112", "110106"]


def test_japanese_text_is_stored_without_damage(arr, engine, pki):
    message = syslog_message(retrieve_event(patient_name="山田^花子", requestor=events.HumanRequestor(
        "yamada@kagawa-hp.example", "山田 太郎（小児科）")))
    with _tls_connection(arr, pki) as sock:
        sock.sendall(syslog.octet_counted(message))
        _wait_stored(arr, 1)
    (record,) = _all(engine)
    assert record.raw == message
    assert "山田^花子".encode() in record.raw
    assert record.user_name == "山田 太郎（小児科）"
    assert record.malformed is None


@pytest.mark.parametrize("node, reason", [(None, "no client certificate"),
                                           ("stranger", "client certificate refused")])
def test_tls_refuses_a_node_the_network_did_not_certify(arr, engine, pki, node, reason):
    host, port = arr.addresses["tls"]
    raw = socket.create_connection((host, port), timeout=10)
    try:
        sock = _client_context(pki, node).wrap_socket(raw, server_hostname="localhost")
    except (ssl.SSLError, ConnectionError):
        pass  # TLS 1.2: refused within the handshake
    else:
        with sock:  # TLS 1.3: the server refuses the certificate after the client's handshake
            try:
                sock.sendall(syslog.octet_counted(syslog_message(retrieve_event())))
            except (ssl.SSLError, ConnectionError):
                pass
            assert _closed_by_peer(sock)
    _wait_until(lambda: arr.counters.snapshot()["refused"] == 1)
    _wait_stored(arr, 1)
    (alert,) = _all(engine)  # the repository's own Security Alert, and nothing the peer sent
    assert (alert.transport, alert.sender_address, alert.tls_peer) == ("local", "127.0.0.1", None)
    assert (alert.event_id, alert.outcome, alert.audit_source_id) == ("110113", 4, "KMIX-ARR")
    assert reason in alert.message.decode()


# --- TCP -----------------------------------------------------------------------------------

def test_tcp_octet_counting(arr, engine):
    messages = [syslog_message(retrieve_event(documents=(f"1.2.392.5.{i}",))) for i in range(20)]
    stream = b"".join(syslog.octet_counted(m) for m in messages)
    with socket.create_connection(arr.addresses["tcp"]) as sock:
        for start in range(0, len(stream), 777):  # frames cut anywhere
            sock.sendall(stream[start:start + 777])
        _wait_stored(arr, 20)
    stored = _all(engine)
    assert [r.raw for r in stored] == messages
    assert {r.transport for r in stored} == {"tcp"} and {r.tls_peer for r in stored} == {None}


def test_tcp_takes_lf_framing_when_the_first_byte_is_a_pri(arr, engine):
    # lxml writes a LF after the XML declaration: a message sent with LF framing cannot have one.
    one, two = (syslog_message(m).replace(b"?>\n<AuditMessage", b"?><AuditMessage")
                for m in (query_event(), submit_event()))
    with socket.create_connection(arr.addresses["tcp"]) as sock:
        sock.sendall(one + b"\n" + two)  # the last message without its LF: the connection's end ends it
    _wait_stored(arr, 2)
    assert [r.raw for r in _all(engine)] == [one, two]
    assert [r.malformed for r in _all(engine)] == [None, None]


def test_broken_framing_keeps_what_came_and_closes(arr, engine):
    good = syslog_message(query_event())
    with socket.create_connection(arr.addresses["tcp"]) as sock:
        sock.sendall(syslog.octet_counted(good) + b"GARBAGE that is not a frame")
        assert _closed_by_peer(sock)
    _wait_stored(arr, 2)
    first, second = _all(engine)
    assert (first.raw, first.malformed) == (good, None)
    assert second.raw == b"GARBAGE that is not a frame"
    assert "broken tcp framing" in second.malformed
    assert arr.counters.snapshot()["malformed"] == 1


def test_a_frame_longer_than_the_limit_is_refused(settings, engine):
    with AuditRecordRepository(settings, engine, tcp=LOCAL, max_length=2000) as arr:
        with socket.create_connection(arr.addresses["tcp"]) as sock:
            sock.sendall(b"5000000 <85>1 - - - - - - " + b"x" * 100)
            assert _closed_by_peer(sock)
        _wait_stored(arr, 1)
    (record,) = _all(engine)
    assert record.raw.startswith(b"5000000 <85>1")
    assert "more than the 2000 accepted" in record.malformed


def test_a_line_longer_than_the_limit_is_refused(settings, engine):
    first = syslog_message(b"<AuditMessage/>")
    with AuditRecordRepository(settings, engine, tcp=LOCAL, max_length=2000) as arr:
        with socket.create_connection(arr.addresses["tcp"]) as sock:
            sock.sendall(first + b"\n<85>1 " + b"x" * 3000)
            assert _closed_by_peer(sock)
        _wait_stored(arr, 2)
    line, rest = _all(engine)
    assert (line.raw, line.malformed) == (first, "AuditMessage without EventIdentification")
    assert rest.raw == b"<85>1 " + b"x" * 3000
    assert "a line of more than 2000 octets" in rest.malformed


def test_a_connection_ending_inside_a_frame(arr, engine):
    frame = syslog.octet_counted(syslog_message(query_event()))
    with socket.create_connection(arr.addresses["tcp"]) as sock:
        sock.sendall(frame[:100])
    _wait_stored(arr, 1)
    (record,) = _all(engine)
    assert record.raw == frame[:100]
    assert "ended inside a message" in record.malformed


# --- UDP -----------------------------------------------------------------------------------

def test_udp_one_message_a_datagram(arr, engine):
    big = syslog_message(retrieve_event(documents=tuple(f"1.2.392.7.{i}" for i in range(100))))
    assert 8192 < len(big) < 65507
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(syslog_message(query_event()), arr.addresses["udp"])
        _wait_stored(arr, 1)
        sock.sendto(big, arr.addresses["udp"])
        _wait_stored(arr, 2)
        sock.sendto(b"<85>1 2026-03-01T00:00:00Z h a 1 IHE+RFC-3881 - not xml at all", arr.addresses["udp"])
        _wait_stored(arr, 3)
    first, second, third = _all(engine)
    assert (first.transport, first.event_id) == ("udp", "110112")
    assert second.raw == big and len(second.documents) == 100
    assert "MSG is not well-formed XML" in third.malformed
    assert arr.counters.snapshot() == {"received": 3, "stored": 3, "malformed": 1, "unstored": 0, "refused": 0}


# --- together ------------------------------------------------------------------------------

def test_many_senders_at_once_make_one_intact_chain(arr, engine, pki):
    def send_tls(n):
        with _tls_connection(arr, pki) as sock:
            for i in range(10):
                sock.sendall(syslog.octet_counted(syslog_message(retrieve_event(documents=(f"1.2.{n}.{i}",)))))

    def send_udp(n):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(10):
                sock.sendto(syslog_message(query_event()), arr.addresses["udp"])
                time.sleep(0.005)

    threads = [threading.Thread(target=send_tls, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=send_udp, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _wait_stored(arr, 60)
    report = repository.verify(engine)
    assert report.ok and report.count == 60


def test_parse_address():
    assert parse_address("0.0.0.0:6514") == ("0.0.0.0", 6514)
    assert parse_address("[::1]:514") == ("::1", 514)
    assert parse_address(":601") == ("0.0.0.0", 601)
    for bad in ("localhost", "host:port", "host:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)


# --- `xds audit-server` --------------------------------------------------------------------

def test_audit_server_command(database_url, engine, tmp_path):
    """The command as an operator runs it: listens, stores, stops on SIGTERM."""
    env = {**os.environ, "XDS_DATABASE_URL": database_url, "XDS_DATA_DIR": str(tmp_path)}
    env.pop("XDS_CONFIG", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "xds.cli", "audit-server", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=Path(__file__).parents[1], text=True)
    try:
        addresses = {}
        while len(addresses) < 2:
            line = server.stdout.readline()
            assert line, server.stderr.read()
            _, transport, address = line.split()
            host, port = address.rsplit(":", 1)
            addresses[transport] = (host, int(port))
        with socket.create_connection(addresses["tcp"]) as sock:
            sock.sendall(syslog.octet_counted(syslog_message(submit_event())))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"noise", addresses["udp"])
        _wait_until(lambda: len(_all(engine)) == 2)
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert "stored 2, malformed 1" in err
    assert sorted(r.transport for r in _all(engine)) == ["tcp", "udp"]


def test_audit_server_needs_a_listener_and_a_database(tmp_path):
    env = {**os.environ, "XDS_DATABASE_URL": f"sqlite:///{tmp_path / 'none.sqlite3'}"}
    env.pop("XDS_CONFIG", None)
    run = subprocess.run([sys.executable, "-m", "xds.cli", "audit-server"], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).parents[1])
    assert run.returncode == 2 and "at least one of --tls, --tcp, --udp" in run.stderr
    run = subprocess.run([sys.executable, "-m", "xds.cli", "audit-server", "--tcp", "127.0.0.1:0"],
                         capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1])
    assert run.returncode == 2 and "xds db upgrade" in run.stderr
