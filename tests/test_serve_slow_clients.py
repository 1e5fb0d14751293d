"""Idle and slow clients against the real `xds serve` (issue 15, "Stalling the server"): none of
them may keep other clients from being served, and each is cut once it misses its deadline.

The servers run with short deadlines (header_timeout and body_timeout 1.5 s; min_body_rate 20,000
bytes/s, high so that a reader whose kernel buffers hold a few KB is cut in seconds) and few
threads (4 per worker, 2 per client address), so that a handful of connections would take every
thread if they could. Clients connect from loopback addresses of their own (127.0.x.y: Linux
routes the whole 127/8 to lo), which the server counts as separate hosts; the prompt requests
(GET /health, ITI-42, ITI-18) come from 127.0.0.1 and must each be answered within PROMPT
seconds while the idle and slow connections are open.

Also here, the memory item's safety net: workers replaced every few requests (max_requests)
answer every request, store every document whole and lose no audit record.

What is waited for is a condition (a close, an answer, a line in the server's log), each with a
bound; the slow clients pace their bytes with select() on their socket, so they notice the
server's answer or close at once."""

from __future__ import annotations

import os
import select
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree

from tests import submissions as s
from tests.certs import CertificateAuthority
from tests.queries import APPROVED_DOCUMENTS, quote
from tests.queries import request as query_request
from tests.server import XDS, serve
from xds import client
from xds.audit import syslog
from xds.soap import build_envelope, build_mtom

HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 1.5
MIN_RATE = 20_000
#: How soon a prompt request must be answered while idle and slow clients are connected (the
#: machine runs other test processes meanwhile: generous against the 0.01 s it takes).
PROMPT = 3.0
#: How long after its deadline a cut connection may still be open (the worker checks deadlines
#: about once a second).
SLACK = 4.0
SETTINGS = {"XDS_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "XDS_BODY_TIMEOUT": str(BODY_TIMEOUT),
            "XDS_MIN_BODY_RATE": str(MIN_RATE), "XDS_THREADS": "4", "XDS_MAX_THREADS_PER_ADDRESS": "2",
            "XDS_MAX_CONNECTIONS_PER_ADDRESS": "6"}
REGISTER = "urn:ihe:iti:2007:RegisterDocumentSet-b"
STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
PNR = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
RETRIEVE = "urn:ihe:iti:2007:RetrieveDocumentSet"
REPOSITORY_UNIQUE_ID = "1.2.392.200119.6.102.1"


@dataclass
class Server:
    base: str
    port: int
    env: dict
    process: subprocess.Popen
    log: Path

    def log_has(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


def start(tmp: Path, *, workers: int = 2, context: ssl.SSLContext | None = None, **extra: str) -> Server:
    env = dict(os.environ, XDS_DATA_DIR=str(tmp / "var"), XDS_DATABASE_URL=f"sqlite:///{tmp / 'registry.sqlite3'}",
               XDS_REPOSITORY_UNIQUE_ID=REPOSITORY_UNIQUE_ID, **SETTINGS)
    env.update(extra)
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run([*XDS, "patients", "add", s.PATIENT], env=env, check=True, capture_output=True)
    log = tmp / f"server-{len(list(tmp.glob('server-*.log')))}.log"
    process, base = serve(env, log, workers=workers, new_session=True, context=context)
    return Server(base, int(base.rsplit(":", 1)[1]), env, process, log)


def stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(5)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start(tmp_path_factory.mktemp("slow-clients"))
    yield running
    stop(running)


# -- clients -----------------------------------------------------------------------------------------


def connect(server: Server, source: str, *, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)  # before connect: the window
    sock.connect(("127.0.0.1", server.port))
    return sock


def find_envelope(base: str, padding: int = 0) -> bytes:
    request = query_request("FindDocuments", ("$XDSDocumentEntryPatientId", quote(s.PATIENT)), APPROVED_DOCUMENTS,
                            return_type="LeafClass")
    envelope = build_envelope(request, STORED_QUERY, to=base + "/registry")
    if padding:  # a comment after the root: the same request, as large as wanted
        envelope += b"<!--" + b" " * padding + b"-->"
    return envelope


def http_post(path: str, body: bytes, content_type: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def soap_type(action: str) -> str:
    return f'application/soap+xml; charset=UTF-8; action="{action}"'


def assert_prompt(server: Server, context: ssl.SSLContext | None = None, *, soap: bool = True) -> None:
    """Other clients are served at once: GET /health, and an ITI-42 and an ITI-18."""
    start_time = time.monotonic()
    with urllib.request.urlopen(server.base + "/health", timeout=PROMPT, context=context) as response:
        assert response.status == 200
    if soap:
        xml, ids = s.submission()
        answer = client.post_soap(server.base + "/registry", s.element(xml), REGISTER, timeout=PROMPT,
                                  context=context)
        assert answer.get("status", "").endswith(":Success")
        request = query_request("FindDocuments", ("$XDSDocumentEntryPatientId", quote(s.PATIENT)),
                                APPROVED_DOCUMENTS)
        answer = client.post_soap(server.base + "/registry", request, STORED_QUERY, timeout=PROMPT,
                                  context=context)
        assert answer.get("status", "").endswith(":Success")
    elapsed = time.monotonic() - start_time
    assert elapsed < PROMPT, f"other clients waited {elapsed:.2f} s"


def wait_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float | None]:
    """Read until the server closes; (what it sent, when it closed: time.monotonic()) or (.., None)."""
    received = bytearray()
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            break
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return bytes(received), time.monotonic()
        if not data:
            return bytes(received), time.monotonic()
        received += data
    return bytes(received), None


class Trickle(threading.Thread):
    """Sends `payload` one byte every `interval` seconds after `prefix` at once, until the server
    answers or closes (select() on the socket paces the bytes) or `limit` seconds pass."""

    def __init__(self, sock: socket.socket, payload: bytes, interval: float, *, prefix: bytes = b"",
                 limit: float = 30.0):
        super().__init__(daemon=True)
        self.sock, self.payload, self.interval, self.prefix, self.limit = sock, payload, interval, prefix, limit
        self.started_at = time.monotonic()
        self.cut_at: float | None = None
        self.answer = b""

    def run(self) -> None:
        try:
            self.sock.sendall(self.prefix)
            for i in range(len(self.payload)):
                if time.monotonic() - self.started_at > self.limit:
                    return
                self.sock.send(self.payload[i:i + 1])
                ready, _, _ = select.select([self.sock], [], [], self.interval)
                if ready:
                    break
            self.answer, self.cut_at = wait_closed(self.sock, self.limit)
        except OSError:
            self.cut_at = time.monotonic()

    @property
    def lived(self) -> float | None:
        return None if self.cut_at is None else self.cut_at - self.started_at


def wait_all(trickles: list[Trickle], timeout: float) -> None:
    for trickle in trickles:
        trickle.join(timeout)
    assert all(not t.is_alive() for t in trickles)


# -- idle connections ----------------------------------------------------------------------------------


def test_idle_connections_hold_no_thread_and_are_closed_at_the_header_deadline(server):
    """40 connections that send nothing (10 times the threads of a worker): the server still
    answers at once, and closes each when header_timeout has passed since it connected."""
    idle = [(connect(server, f"127.0.2.{i % 8 + 1}"), time.monotonic()) for i in range(40)]
    try:
        assert_prompt(server)
        assert_prompt(server)
        for sock, opened in idle:
            received, closed = wait_closed(sock, HEADER_TIMEOUT + SLACK)
            assert closed is not None, "an idle connection was left open past header_timeout"
            assert received == b""  # nothing to say to a client that said nothing
            assert closed - opened >= HEADER_TIMEOUT - 0.1
    finally:
        for sock, _ in idle:
            sock.close()
    assert server.log_has("without a complete request head within 1.5 s (header_timeout)", 5)


# -- slow request heads and bodies ---------------------------------------------------------------------


def test_slow_request_heads_are_cut_with_408_and_others_are_served(server):
    """Request heads sent a byte a second, and a byte every 0.1 s: served clients do not wait for
    them, and each is answered 408 and closed at header_timeout, however steadily it sends."""
    head = http_post("/registry", find_envelope(server.base), soap_type(STORED_QUERY))
    trickles = [Trickle(connect(server, f"127.0.3.{i % 4 + 1}"), head, 1.0 if i % 2 else 0.1) for i in range(8)]
    for trickle in trickles:
        trickle.start()
    try:
        assert_prompt(server)
        wait_all(trickles, HEADER_TIMEOUT + SLACK + 1)
        for trickle in trickles:
            assert trickle.lived is not None and HEADER_TIMEOUT - 0.1 <= trickle.lived <= HEADER_TIMEOUT + SLACK
            assert trickle.answer.startswith(b"HTTP/1.1 408 "), trickle.answer[:100]
    finally:
        for trickle in trickles:
            trickle.sock.close()


def test_a_slow_body_is_cut_at_its_minimum_rate(server):
    """A valid head, then the body at 20 bytes a second (the minimum is 20,000 after a grace of
    1.5 s): cut, the reason logged; served clients do not wait meanwhile."""
    body = find_envelope(server.base)
    request = http_post("/registry", body, soap_type(STORED_QUERY))
    head, _, rest = request.partition(b"\r\n\r\n")
    trickles = [Trickle(connect(server, f"127.0.3.{5 + i % 2}"), rest, 0.05, prefix=head + b"\r\n\r\n")
                for i in range(4)]
    for trickle in trickles:
        trickle.start()
    try:
        assert_prompt(server)
        wait_all(trickles, BODY_TIMEOUT + SLACK + 1)
        for trickle in trickles:
            # Cut at the deadline; the SOAP fault for a body that ended early is not sent to it.
            assert trickle.lived is not None and trickle.lived <= BODY_TIMEOUT + SLACK
            assert b" 200 " not in trickle.answer[:20]
    finally:
        for trickle in trickles:
            trickle.sock.close()
    assert server.log_has("request body slower than 20000 bytes/s after 1.5 s", 5)


def test_a_slow_but_steady_body_is_served(server):
    """A 60 KB request sent in 3 s, 6 KB every 0.3 s (about the minimum rate): longer than
    body_timeout, but never behind the minimum rate: answered."""
    body = find_envelope(server.base, padding=60_000)
    request = http_post("/registry", body, soap_type(STORED_QUERY))
    head, _, rest = request.partition(b"\r\n\r\n")
    sock = connect(server, "127.0.3.7")
    try:
        sock.sendall(head + b"\r\n\r\n")
        began = time.monotonic()
        for offset in range(0, len(rest), 6000):
            sock.sendall(rest[offset:offset + 6000])
            select.select([sock], [], [], 0.3)
        assert time.monotonic() - began > BODY_TIMEOUT
        answer, closed = wait_closed(sock, 10)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"ResponseStatusType:Success" in answer, answer[:300]
    finally:
        sock.close()


# -- a client that takes its answer slowly ------------------------------------------------------------


def provide(server: Server, data: bytes) -> str:
    """ITI-41 of one document as MTOM; its uniqueId."""
    from tests.test_repository_support import pnr_request

    request, ids = pnr_request([("Document01", data, "application/octet-stream")])
    envelope = build_envelope(request, PNR, to=server.base + "/repository")
    content_type, body = build_mtom(envelope, [("doc1@test", "application/octet-stream", data)], action=PNR)
    post = urllib.request.Request(server.base + "/repository", data=body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(post, timeout=60) as response:
        assert b"ResponseStatusType:Success" in response.read()
    return ids["Document01"]


def retrieve_envelope(base: str, unique_id: str) -> bytes:
    xdsb = "urn:ihe:iti:xds-b:2007"
    request = etree.Element(f"{{{xdsb}}}RetrieveDocumentSetRequest", nsmap={"xdsb": xdsb})
    item = etree.SubElement(request, f"{{{xdsb}}}DocumentRequest")
    etree.SubElement(item, f"{{{xdsb}}}RepositoryUniqueId").text = REPOSITORY_UNIQUE_ID
    etree.SubElement(item, f"{{{xdsb}}}DocumentUniqueId").text = unique_id
    return build_envelope(request, RETRIEVE, to=base + "/repository")


def test_a_client_that_does_not_take_its_answer_is_cut(server):
    """ITI-43 of a 16 MB document (more than the kernel's buffers hold) by a client that reads
    nothing: the answer counts only the bytes the client has taken, so the server cuts it after
    body_timeout and what the buffers held; served clients do not wait meanwhile."""
    unique_id = provide(server, os.urandom(16 << 20))
    sock = connect(server, "127.0.3.8", receive_buffer=4096)
    try:
        sock.sendall(http_post("/repository", retrieve_envelope(server.base, unique_id), soap_type(RETRIEVE)))
        assert_prompt(server, soap=False)
        assert server.log_has("response taken slower than 20000 bytes/s after 1.5 s", BODY_TIMEOUT + SLACK + 5)
        assert_prompt(server)
        received, closed = wait_closed(sock, 30)
        assert closed is not None and len(received) < 16 << 20  # what the buffers held, then the end
    finally:
        sock.close()


# -- one client address: a fair share of the threads, a bounded number of connections ------------------


def test_one_address_gets_a_share_of_the_threads_and_a_bounded_number_of_connections(tmp_path):
    """One worker (4 threads, 2 per address, 6 connections per address): six slow bodies from one
    address hold two threads at most, the address's seventh connection is refused with 503, and
    other addresses are served at once all along."""
    one = start(tmp_path, workers=1)
    try:
        request = http_post("/registry", find_envelope(one.base), soap_type(STORED_QUERY))
        head, _, rest = request.partition(b"\r\n\r\n")
        trickles = [Trickle(connect(one, "127.0.4.1"), rest, 0.05, prefix=head + b"\r\n\r\n", limit=60)
                    for _ in range(6)]
        for trickle in trickles:
            trickle.start()
        seventh = connect(one, "127.0.4.1")
        answer, closed = wait_closed(seventh, 5)
        seventh.close()
        assert answer.startswith(b"HTTP/1.1 503 ") and b"too many connections" in answer
        assert closed is not None
        assert_prompt(one)
        assert_prompt(one)
        # Two at a time, each cut at its deadline: all six are gone after three rounds.
        wait_all(trickles, 3 * (BODY_TIMEOUT + SLACK))
        assert all(t.lived is not None for t in trickles)
        assert one.log_has("refused 1 connection(s): 127.0.4.1 has 6 open (max_connections_per_address)", 5)
    finally:
        stop(one)


# -- TLS: handshakes are within the head's deadline too ---------------------------------------------------


def test_idle_and_slow_tls_handshakes_hold_no_thread_and_are_cut(tmp_path):
    """Mutual TLS on one worker: 20 connections that never start their handshake and 4 that send
    a ClientHello's first bytes slowly; a node with a good certificate is served at once, and the
    others are closed at header_timeout."""
    ca = CertificateAuthority(tmp_path / "pki")
    node, hospital = ca.issue("registry-node"), ca.issue("hospital-a")
    context = ssl.create_default_context(cafile=str(ca.certificate))
    context.load_cert_chain(hospital.certificate, hospital.private_key)
    secure = start(tmp_path, workers=1, context=context, XDS_TLS_CERTIFICATE=str(node.certificate),
                   XDS_TLS_PRIVATE_KEY=str(node.private_key), XDS_TLS_CA_CERTIFICATES=str(ca.certificate))
    try:
        idle = [connect(secure, f"127.0.5.{i % 5 + 1}") for i in range(20)]
        hello = bytes.fromhex("16030100c8010000c40303") + os.urandom(32)  # a ClientHello's beginning
        slow = [Trickle(connect(secure, "127.0.5.9"), hello, 0.2) for _ in range(4)]
        for trickle in slow:
            trickle.start()
        assert_prompt(secure, context)
        assert_prompt(secure, context)
        wait_all(slow, HEADER_TIMEOUT + SLACK + 1)
        assert all(t.lived is not None and t.lived >= HEADER_TIMEOUT - 0.1 for t in slow)
        for sock in idle:
            _, closed = wait_closed(sock, HEADER_TIMEOUT + SLACK)
            assert closed is not None
            sock.close()
        assert_prompt(secure, context, soap=False)
    finally:
        stop(secure)


# -- workers replaced every few requests lose nothing -----------------------------------------------------


def test_recycled_workers_answer_everything_and_lose_no_document_or_audit_record(tmp_path):
    """max_requests 6 (+0-3): 36 ITI-41 requests from three clients at once, so that each of
    the two workers is replaced several times with requests in hand. Every request is answered
    Success, none waits for a worker to be replaced (its successor starts at once), every
    document is stored whole (none left in staging), and the audit destination gets one ITI-41
    record for each."""
    audit = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    audit.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    audit.bind(("127.0.0.1", 0))
    server = start(tmp_path, XDS_MAX_REQUESTS="6", XDS_MAX_REQUESTS_JITTER="3",
                   XDS_AUDIT_DESTINATIONS=f"udp://127.0.0.1:{audit.getsockname()[1]}")
    documents: dict[str, bytes] = {}
    errors: list[BaseException] = []
    waited: list[float] = []

    def send(n: int) -> None:
        try:
            for i in range(12):
                data = f"letter {n}.{i} ".encode() * 500
                began = time.monotonic()
                documents[provide(server, data)] = data
                waited.append(time.monotonic() - began)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    try:
        clients = [threading.Thread(target=send, args=(n,)) for n in range(3)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(120)
        assert not errors, errors
        assert len(documents) == 36
        assert max(waited) < 5.0, sorted(waited)[-3:]
        from xds.repository.blobs import INCOMING, FileBlobStore

        store = FileBlobStore(tmp_path / "var" / "documents")
        for unique_id, data in documents.items():
            stored = store.get(unique_id)
            assert stored is not None and stored.path.read_bytes() == data
        assert not list((tmp_path / "var" / "documents" / INCOMING).iterdir())
        assert server.log.read_text().count("Autorestarting worker") >= 4

        records = 0
        deadline = time.monotonic() + 20
        audit.settimeout(0.5)
        while records < 36 and time.monotonic() < deadline:
            try:
                message = etree.fromstring(syslog.parse(audit.recv(65535)).msg)
            except TimeoutError:
                continue
            codes = [c.get("csd-code") for c in message.iter("EventTypeCode")]
            if "ITI-41" in codes and message.find("EventIdentification").get("EventOutcomeIndicator") == "0":
                records += 1
        assert records == 36
    finally:
        stop(server)
        audit.close()
