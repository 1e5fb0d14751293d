"""The audit trail (xds.audit.trail, xds.audit.transport) against a real Audit Record
Repository's syslog side: a private rsyslogd (tests/rsyslog.py) taking RFC 5425 syslog over
mutual TLS and RFC 5426 syslog over UDP, writing down every message as it came.

What is checked: a record arrives whole (header of ITI-20, the AuditMessage byte for byte)
over TLS and over UDP, and at every destination when there are several; records made while the
peer is down wait in the spool and then arrive exactly once and in spool order; a node whose
certificate the peer refuses keeps its records, and delivers them once it has a good one.

Skipped when rsyslog or rsyslog-gnutls is not installed (.ci/run installs them as root).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from lxml import etree

from tests.certs import CertificateAuthority, Node
from tests.rsyslog import Rsyslog, missing, rsyslog_fixture  # noqa: F401  (the `rsyslog` fixture)
from xds.audit import events, syslog
from xds.audit.trail import AuditTrail
from xds.config import Settings

pytestmark = pytest.mark.skipif(missing() is not None, reason=missing() or "")

PARSER = etree.XMLParser(no_network=True, resolve_entities=False)


@pytest.fixture
def trails():
    """make(data_dir, destinations, node, peer) -> a started AuditTrail, closed afterwards."""
    made: list[AuditTrail] = []

    def make(data_dir: Path, destinations: list[str], node: Node, peer: Rsyslog,
             start: bool = True) -> AuditTrail:
        settings = Settings(data_dir=data_dir, audit_destinations=",".join(destinations),
                            audit_source_id="XDS-AFFINITY-TEST",
                            tls_certificate=str(node.certificate), tls_private_key=str(node.private_key),
                            tls_ca_certificates=str(peer.ca.certificate))
        trail = AuditTrail.from_settings(settings)
        assert trail.enabled
        made.append(trail)
        return trail.start() if start else trail

    yield make
    for trail in made:
        trail.close()


def tls(peer: Rsyslog) -> str:
    return f"tls://127.0.0.1:{peer.tls_port}"


def udp(peer: Rsyslog) -> str:
    return f"udp://127.0.0.1:{peer.udp_port}"


def application(raw: bytes) -> str:
    """The application name an application_start record was made for (its participant)."""
    root = etree.fromstring(syslog.parse(raw).msg, PARSER)
    return root.find("ActiveParticipant").get("UserID")


def settled(peer: Rsyslog, count: int, quiet: float = 0.5) -> list[bytes]:
    """The messages once `count` have arrived and no more came for `quiet` seconds."""
    peer.wait_for(count, timeout=30)
    time.sleep(quiet)
    return peer.messages()


def assert_whole(raw: bytes, sent: bytes) -> None:
    received = syslog.parse(raw)
    assert received.facility == syslog.FACILITY_AUTH == 10
    assert received.severity == syslog.SEVERITY_NOTICE  # a successful application start
    assert received.version == 1
    assert received.msgid == "IHE+RFC-3881"
    assert received.app_name and received.hostname and received.timestamp is not None
    assert received.msg == sent
    root = etree.fromstring(received.msg, PARSER)
    assert root.tag == "AuditMessage"
    assert etree.tostring(root, method="c14n") == etree.tostring(etree.fromstring(sent, PARSER), method="c14n")


# --- the peer itself ----------------------------------------------------------------------------

def _send_raw(peer: Rsyslog, node: Node | None, message: bytes) -> None:
    context = ssl.create_default_context(cafile=str(peer.ca.certificate))
    if node is not None:
        context.load_cert_chain(str(node.certificate), str(node.private_key))
    with socket.create_connection(("127.0.0.1", peer.tls_port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(syslog.octet_counted(message))
        if node is None:  # refused: wait until the peer has closed, so that it is in its log
            try:
                sock.recv(1)
            except OSError:
                pass


def test_peer_takes_mutual_tls_and_udp_and_refuses_a_client_without_certificate(rsyslog):
    message = (b"<85>1 2026-11-24T10:00:00.000Z host app 123 IHE+RFC-3881 - "
               + syslog.BOM + b"<?xml version='1.0' encoding='UTF-8'?>\n<AuditMessage/>")
    _send_raw(rsyslog, None, message.replace(b"app", b"anonymous"))
    _send_raw(rsyslog, rsyslog.ca.issue("raw-client"), message)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.replace(b"app", b"udp"), ("127.0.0.1", rsyslog.udp_port))
    received = settled(rsyslog, 2)
    assert received == [message, message.replace(b"app", b"udp")] or \
        received == [message.replace(b"app", b"udp"), message]
    assert "not permitted" in rsyslog.log.read_text()


# --- the audit trail --------------------------------------------------------------------------

def test_record_over_tls_arrives_whole(rsyslog, trails, tmp_path):
    trail = trails(tmp_path / "node", [tls(rsyslog)], rsyslog.ca.issue("xds-node"), rsyslog)
    sent = events.application_start("xds", trail.source)
    trail.record(sent)

    assert trail.flush(timeout=15), rsyslog.diagnostics()
    [raw] = settled(rsyslog, 1)
    assert_whole(raw, sent)


def test_record_over_udp_arrives_whole(rsyslog, trails, tmp_path):
    trail = trails(tmp_path / "node", [udp(rsyslog)], rsyslog.ca.issue("xds-node"), rsyslog)
    sent = events.application_start("xds", trail.source)
    trail.record(sent)

    assert trail.flush(timeout=15)
    [raw] = settled(rsyslog, 1)
    assert_whole(raw, sent)


def test_every_destination_gets_every_record(rsyslog, trails, tmp_path):
    second = Rsyslog(tmp_path / "second", ca=rsyslog.ca)
    third = Rsyslog(tmp_path / "third", ca=rsyslog.ca)
    with second, third:
        trail = trails(tmp_path / "node", [tls(rsyslog), tls(second), udp(third)],
                       rsyslog.ca.issue("xds-node"), rsyslog)
        names = [f"xds-{i}" for i in range(10)]
        for name in names:
            trail.record(events.application_start(name, trail.source))

        assert trail.flush(timeout=15), rsyslog.diagnostics()
        for peer in (rsyslog, second, third):
            assert [application(raw) for raw in settled(peer, len(names))] == names, peer.folder


def test_records_wait_while_the_peer_is_down_then_arrive_exactly_once_in_order(rsyslog, trails, tmp_path):
    trail = trails(tmp_path / "node", [tls(rsyslog)], rsyslog.ca.issue("xds-node"), rsyslog)
    trail.record(events.application_start("before", trail.source))
    assert trail.flush(timeout=15), rsyslog.diagnostics()
    assert [application(raw) for raw in rsyslog.wait_for(1)] == ["before"]

    rsyslog.stop()  # the sender's connection is now closed by the peer, and nothing listens
    threads, per_thread = 5, 10

    def record(thread: int) -> None:
        for i in range(per_thread):
            trail.record(events.application_start(f"t{thread}-{i:02d}", trail.source))

    workers = [threading.Thread(target=record, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    total = threads * per_thread
    assert trail.flush(timeout=1) is False
    waiting = trail.spool.unsent(trail.destinations[0])
    assert len(waiting) == total

    rsyslog.start()
    assert trail.flush(timeout=90), rsyslog.diagnostics()
    received = settled(rsyslog, 1 + total, quiet=1.0)
    names = [application(raw) for raw in received]
    assert names[0] == "before"
    assert len(names) == 1 + total, f"duplicates: {sorted({n for n in names if names.count(n) > 1})}"
    assert sorted(names[1:]) == sorted(f"t{t}-{i:02d}" for t in range(threads) for i in range(per_thread))
    assert received[1:] == waiting  # in the spool's order, byte for byte
    for t in range(threads):  # so each thread's records in the order it made them
        mine = [name for name in names if name.startswith(f"t{t}-")]
        assert mine == sorted(mine)


@pytest.mark.parametrize("tls_priority", [None, "NORMAL:-VERS-TLS1.3"], ids=["TLS1.3", "TLS1.2"])
def test_refused_certificate_keeps_records_in_the_spool(tls_priority, trails, tmp_path):
    # GnuTLS (rsyslog) asks for the client certificate but checks it after the handshake, in
    # TLS 1.2 as in 1.3: the sender sees a handshake that succeeds, then the peer closing.
    with Rsyslog(tmp_path / "arr", tls_priority=tls_priority) as peer:
        intruder = CertificateAuthority(tmp_path / "other-ca", "other-ca").issue("xds-node")
        trail = trails(tmp_path / "node", [tls(peer)], intruder, peer)
        names = [f"kept-{i}" for i in range(5)]
        for name in names:
            trail.record(events.application_start(name, trail.source))

        assert trail.flush(timeout=3) is False, (
            "the spool let go of records the peer refused (sent into connections it closed)")
        assert len(trail.spool.unsent(trail.destinations[0])) == len(names)
        assert peer.messages() == []
        log = peer.log.read_text()
        assert "not permitted" in log, log  # refused by rsyslog, not by our own TLS checks
        trail.close()

        # The records were kept, not dropped: the node with a good certificate delivers them.
        trail = trails(tmp_path / "node", [tls(peer)], peer.ca.issue("xds-node"), peer)
        assert trail.flush(timeout=15), peer.diagnostics()
        assert [application(raw) for raw in settled(peer, len(names))] == names
