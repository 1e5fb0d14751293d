"""Large documents and crashes, against a real `xds serve` (SQLite):

- a 500 MB document goes in (MTOM) and comes back out with the server's peak memory (VmHWM of
  its worker processes, from /proc) far below the document's size: it is streamed to disk and
  from disk, never held whole. The test's own client streams too: the document is a repeating
  1 MB random block, generated as it is sent and hashed as it comes back;
- the server killed (SIGKILL, master and workers) in the middle of a submission - while the
  document is arriving, and while the repository waits for a registry's answer - leaves, after
  a restart, no document visible, nothing registered and nothing in the staging folder.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import threading
import time
from urllib.parse import urlsplit

from lxml import etree

from tests.test_repository_support import (
    PNR,
    RETRIEVE,
    RS,
    XDSB,
    RunningServer,
    codes_of,
    kill_server,
    pnr_request,
    retrieve_request,
    soap_retrieve,
    start_server,
    status_of,
    stop_server,
)
from xds.soap import Spool, build_envelope, parse_response, read_message

MB = 1024 * 1024
BLOCK = os.urandom(MB)


def _vm_hwm_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _mtom_head_and_tail(request: etree._Element, size: int, mime: str = "application/octet-stream"):
    """The bytes before and after a document of `size` bytes in an MTOM ITI-41 body."""
    envelope = build_envelope(request, PNR)
    boundary = "big-" + os.urandom(8).hex()
    head = (f"--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"\r\n"
            f"Content-ID: <root@big>\r\n\r\n").encode() + envelope + (
        f"\r\n--{boundary}\r\nContent-Type: {mime}\r\nContent-Transfer-Encoding: binary\r\n"
        f"Content-ID: <doc1@test>\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    content_type = (f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; start="<root@big>"; '
                    f'start-info="application/soap+xml"; action="{PNR}"')
    return content_type, head, tail


def _send_document(server: RunningServer, request: etree._Element, size: int, *, stop_after: int | None = None,
                   on_stop=None):
    """POST an ITI-41 request whose one document is `size` bytes of the repeating block, streamed
    from a generator. Returns (HTTP status, response message, SHA-1 sent); with stop_after, calls
    on_stop() once that many document bytes are sent and returns None when the server is gone."""
    content_type, head, tail = _mtom_head_and_tail(request, size)
    parts = urlsplit(server.base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    connection.putrequest("POST", "/repository")
    connection.putheader("Content-Type", content_type)
    connection.putheader("Content-Length", str(len(head) + size + len(tail)))
    connection.endheaders()
    digest = hashlib.sha1()
    try:
        connection.send(head)
        sent = 0
        while sent < size:
            piece = BLOCK[: min(MB, size - sent)]
            digest.update(piece)
            connection.send(piece)
            sent += len(piece)
            if stop_after is not None and sent >= stop_after:
                on_stop()
                stop_after = None
        connection.send(tail)
        response = connection.getresponse()
        answer = response.read()
        return response.status, parse_response(response.getheader("Content-Type"), answer), digest.hexdigest()
    except OSError:
        return None
    finally:
        connection.close()


def test_a_500_mb_document_round_trip_with_bounded_server_memory(tmp_path):
    server = start_server("sqlite", tmp_path)
    try:
        size = 500 * MB
        baseline = max(_vm_hwm_kb(pid) for pid in server.worker_pids())
        request, ids = pnr_request([("Document01", b"", "application/octet-stream")])
        started = time.monotonic()
        status, response, sent_sha1 = _send_document(server, request, size)
        stored_seconds = time.monotonic() - started
        assert status == 200 and status_of(response.body) == "Success", etree.tostring(response.body)
        entry = server.entry(ids["Document01"])
        assert entry.size == size and entry.hash == sent_sha1

        # Retrieve it, reading the MTOM answer as it streams (the document to a spool file).
        started = time.monotonic()
        parts = urlsplit(server.base)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
        body = build_envelope(retrieve_request([(server.repository_unique_id, ids["Document01"])]), RETRIEVE)
        connection.request("POST", "/repository", body,
                           {"Content-Type": f'application/soap+xml; charset=UTF-8; action="{RETRIEVE}"'})
        answer = connection.getresponse()
        assert answer.status == 200
        chunks = iter(lambda: answer.read(MB), b"")
        message = read_message(answer.getheader("Content-Type"), chunks, spool=Spool(tmp_path / "client", digest=True))
        connection.close()
        retrieved_seconds = time.monotonic() - started
        document = message.attachment(message.body.find(f"{{{XDSB}}}DocumentResponse/{{{XDSB}}}Document"))
        assert document.size == size and document.sha1 == sent_sha1
        message.close()

        peak = max(_vm_hwm_kb(pid) for pid in server.worker_pids())
        print(f"\n500 MB: stored in {stored_seconds:.1f} s, retrieved in {retrieved_seconds:.1f} s; server worker "
              f"peak RSS {peak / 1024:.0f} MB (baseline {baseline / 1024:.0f} MB)")
        assert peak < baseline + 64 * 1024, f"worker peak RSS {peak} kB, baseline {baseline} kB"
        assert stored_seconds < 30 and retrieved_seconds < 30
    finally:
        stop_server(server)


def test_killed_while_the_document_arrives(tmp_path):
    server = start_server("sqlite", tmp_path)
    request, ids = pnr_request([("Document01", b"", "application/octet-stream")])
    incoming = server.data_dir / "documents" / ".incoming"
    seen: list[str] = []

    def crash():
        time.sleep(0.3)  # let the server write what it has received
        seen.extend(p.name for p in incoming.iterdir())
        kill_server(server)

    assert _send_document(server, request, 200 * MB, stop_after=60 * MB, on_stop=crash) is None
    assert any(name.endswith(".part") for name in seen), seen  # it was being spooled to disk
    restarted = start_server("sqlite", tmp_path, patients=(), database=(server.database_url, None), upgrade=False)
    try:
        assert restarted.staging_left() == []  # the dead upload's spool file is swept at start
        assert restarted.entry(ids["Document01"]) is None
        status, response = soap_retrieve(restarted, [(restarted.repository_unique_id, ids["Document01"])])
        assert codes_of(response.body.find(f"{{{RS}}}RegistryResponse")) == ["XDSDocumentUniqueIdError"]
    finally:
        stop_server(restarted)


def test_killed_while_waiting_for_the_registry(tmp_path):
    """The documents are staged (written and fsynced under temporary names) and the
    repository waits for a remote registry that never answers: killed then, the restarted
    server (with its own registry, which never got the metadata) drops the staged documents."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    server = start_server("sqlite", tmp_path, extra_env={
        "XDS_REGISTRY_URL": f"http://127.0.0.1:{silent.getsockname()[1]}/registry"})
    incoming = server.data_dir / "documents" / ".incoming"
    try:
        request, ids = pnr_request([("Document01", b"", "text/plain")])
        result: list = []
        sender = threading.Thread(target=lambda: result.append(_send_document(server, request, 5 * MB)), daemon=True)
        sender.start()
        deadline = time.monotonic() + 20
        while not any(p.name.startswith("doc-") and (p / "meta.json").exists() for p in incoming.iterdir()):
            assert time.monotonic() < deadline, "the submission was never staged"
            time.sleep(0.05)
        kill_server(server)
        sender.join(10)
        staged = [p.name for p in incoming.iterdir()]
        assert any(name.startswith("doc-") for name in staged)
    finally:
        silent.close()
    restarted = start_server("sqlite", tmp_path, patients=(), database=(server.database_url, None), upgrade=False,
                             extra_env={"XDS_REGISTRY_URL": ""})
    try:
        assert restarted.staging_left() == []
        assert restarted.stored(ids["Document01"]) is None
        assert "dropped" in restarted.log_path.read_text()
    finally:
        stop_server(restarted)
