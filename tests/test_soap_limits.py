"""The SOAP layer's bounds on hostile and careless input (issue 15): the tags and attributes of
an envelope, counted before it is parsed; a request body the HTTP server cannot read (malformed
chunked framing, a connection closed early); transfer codings. In-process with a WSGI environ,
then against a real `xds serve` (gunicorn), where the HTTP layer takes part."""

from __future__ import annotations

import base64
import logging
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkExtension, InvalidChunkSize, NoMoreData

from tests.server import XDS, serve
from tests.soap_helpers import (
    PING,
    PING_RESPONSE,
    SOAP12,
    WSA,
    call,
    echo,
    envelope_text,
    environ,
    mtom_content_type,
    multipart,
    ping_envelope,
)
from xds.soap import SoapEndpoint, SoapResponse, parse_response
from xds.soap import envelope as envelope_module
from xds.soap.envelope import check_nodes, count_nodes

BOUNDARY = "MIMEBoundary_limits"
REGISTER = "urn:ihe:iti:2007:RegisterDocumentSet-b"
PNR = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"


def empty_elements(count: int, action: str = PING) -> bytes:
    """An envelope whose body holds `count` empty elements: the cheapest bytes for the most tree."""
    return envelope_text(body='<t:Ping xmlns:t="urn:test">' + "<a/>" * count + "</t:Ping>", action=action).encode()


class Recorder:
    def __init__(self):
        self.calls = 0

    def __call__(self, request):
        self.calls += 1
        return echo(request)


# -- counting ------------------------------------------------------------------------------------


@pytest.mark.parametrize("xml, count", [
    (b"<a/>", 1),
    (b"<a>text</a>", 2),                                  # start and end tag
    (b'<a x="1" y="2"/>', 3),                             # one element, two attributes
    (b'<a xmlns="urn:x" xmlns:p="urn:p"><p:b/></a>', 5),  # namespace declarations count as attributes
    (b"<a>x = y &lt; z</a>", 3),                          # an '=' in text counts (an upper bound)
    (b"<!-- c --><a/>", 2),
])
def test_count_nodes_is_an_upper_bound_of_tags_and_attributes(xml, count):
    assert count_nodes(xml) == count


def test_short_documents_are_not_counted(monkeypatch):
    # A document of at most max_nodes bytes cannot hold more: no pass over it at all.
    monkeypatch.setattr(envelope_module, "count_nodes", lambda data: pytest.fail("counted"))
    check_nodes(b"<a/>" * 25, 100)


# -- the endpoint: refused before parsing --------------------------------------------------------


def test_more_tags_than_the_limit_is_a_sender_fault_before_parsing(monkeypatch):
    recorder = Recorder()
    endpoint = SoapEndpoint({PING: recorder}, max_envelope_nodes=60)
    with monkeypatch.context() as patch:
        patch.setattr(envelope_module, "xml_parser", lambda *a, **k: pytest.fail("parsed"))
        result = call(endpoint, environ(empty_elements(60)))
    assert result.status == 413
    assert result.fault_code() == ["env:Sender"]
    reason = result.fault_reason()
    assert "at most 60" in reason and "tags and attributes" in reason and "split the request" in reason
    assert recorder.calls == 0


def test_attributes_count_too():
    attributes = " ".join(f'a{i}=""' for i in range(60))
    body = envelope_text(body=f'<t:Ping xmlns:t="urn:test" {attributes}>x</t:Ping>').encode()
    result = call(SoapEndpoint({PING: echo}, max_envelope_nodes=60), environ(body))
    assert result.status == 413 and "at most 60" in result.fault_reason()


def test_an_envelope_within_the_limit_is_answered():
    body = empty_elements(10)
    assert count_nodes(body) < 60 < len(body)  # counted, and under the limit
    result = call(SoapEndpoint({PING: echo}, max_envelope_nodes=60), environ(body))
    assert result.status == 200 and result.message.action == PING_RESPONSE


def test_the_envelope_part_of_an_mtom_request_is_counted(tmp_path):
    body = multipart([({"Content-ID": "<root@x>"}, empty_elements(60))], BOUNDARY)
    result = call(SoapEndpoint({PING: echo}, max_envelope_nodes=60),
                  environ(body, mtom_content_type(BOUNDARY, start="<root@x>")))
    assert result.status == 413 and result.content_type.startswith("multipart/related")
    assert "at most 60" in result.fault_reason()


def _size_handler(request):
    from lxml import etree

    return SoapResponse(body=etree.Element("{urn:test}Got", size=str(request.attachment(request.body).size)),
                        action=PING_RESPONSE)


def test_huge_tree_endpoint_takes_inline_base64_and_still_bounds_its_tags():
    """The repository's way: huge_tree for inline documents over libxml2's 10 MB text limit
    (base64 has no '<' and at most two '='), tags bounded all the same."""
    endpoint = SoapEndpoint({PING: _size_handler}, huge_tree=True, max_envelope_size=16 * 1024 * 1024,
                            max_envelope_nodes=1000)
    text = base64.b64encode(b"\x00" * (8 * 1024 * 1024)).decode()  # 11 MB of text: over the 10 MB limit
    result = call(endpoint, environ(envelope_text(body=f'<t:Doc xmlns:t="urn:test">{text}</t:Doc>').encode()))
    assert result.status == 200 and result.message.body.get("size") == str(8 * 1024 * 1024)
    result = call(endpoint, environ(empty_elements(1000)))
    assert result.status == 413 and "at most 1000" in result.fault_reason()


def test_sixteen_megabytes_of_empty_elements_are_refused_quickly():
    """Parsed, 16 MiB of <a/> is a tree of 540 MB built in over a second; counted, it is refused
    in milliseconds (the figures are in the README)."""
    body = empty_elements(4 * 1024 * 1024)
    endpoint = SoapEndpoint({PING: echo}, max_request_size=32 * 1024 * 1024, max_envelope_nodes=500_000)
    started = time.perf_counter()
    result = call(endpoint, environ(body))
    elapsed = time.perf_counter() - started
    assert result.status == 413 and "at most 500000" in result.fault_reason()
    assert elapsed < 0.5, f"refusal took {elapsed * 1000:.0f} ms"


# -- a body the HTTP server cannot read: the client's fault --------------------------------------


class Broken:
    """A wsgi.input that gives a few bytes, then raises what gunicorn raises from its reader."""

    def __init__(self, error: BaseException):
        self.error, self.given = error, False

    def read(self, size=-1):
        if not self.given:
            self.given = True
            return b"<env:Envelope"
        raise self.error


@pytest.mark.parametrize("error, words", [
    (InvalidChunkSize(b"zz"), "chunked transfer coding is malformed"),
    (ChunkMissingTerminator(b"XX"), "chunked transfer coding is malformed"),
    (InvalidChunkExtension("bare CR not allowed"), "chunked transfer coding is malformed"),
    (NoMoreData(b""), "connection closed before the request body ended"),
    (TimeoutError("timed out"), "could not be read to its end"),
    (ConnectionResetError(104, "Connection reset by peer"), "could not be read to its end"),
])
@pytest.mark.parametrize("mtom", [False, True], ids=["plain", "mtom"])
def test_a_body_that_cannot_be_read_is_a_sender_fault_not_an_internal_error(caplog, error, words, mtom):
    content_type = mtom_content_type(BOUNDARY) if mtom else f'application/soap+xml; action="{PING}"'
    env = environ(content_type=content_type, content_length=None, stream=Broken(error),
                  HTTP_TRANSFER_ENCODING="chunked", **{"wsgi.input_terminated": True})
    with caplog.at_level(logging.INFO, logger="xds.soap"):
        result = call(SoapEndpoint({PING: echo}), env)
    assert result.status == 400
    assert result.fault_code() == ["env:Sender"]
    assert words in result.fault_reason()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_a_transfer_coding_the_server_hands_on_undecoded_is_501():
    """gunicorn takes `gzip, chunked`, removes the chunking and passes the body on still gzipped:
    refused before reading, with the status RFC 9112 6.1 gives an unsupported coding."""
    env = environ(ping_envelope(), content_length=None, HTTP_TRANSFER_ENCODING="gzip, chunked",
                  **{"wsgi.input_terminated": True})
    result = call(SoapEndpoint({PING: echo}), env)
    assert result.status == 501
    assert result.fault_code() == ["env:Sender"]
    assert "'gzip' is not supported" in result.fault_reason()


def test_identity_and_chunked_are_read():
    env = environ(ping_envelope(), content_length=None, HTTP_TRANSFER_ENCODING="identity, Chunked",
                  **{"wsgi.input_terminated": True})
    assert call(SoapEndpoint({PING: echo}), env).status == 200


# -- against a real `xds serve` --------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One gunicorn worker, so that its memory can be read."""
    tmp = tmp_path_factory.mktemp("limits")
    env = dict(os.environ, XDS_DATA_DIR=str(tmp / "var"))
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    log_path = tmp / "server.log"
    process, base = serve(env, log_path, workers=1)
    yield int(base.rsplit(":", 1)[1]), process, log_path
    process.terminate()
    process.wait(10)


def _exchange(port: int, head: bytes, body: bytes = b"", *, half_close: bool = False) -> tuple[bytes, bool]:
    """Send a raw request; return everything the server sent and whether it closed the
    connection afterwards (rather than keep it for another request)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        data, closed = b"", False
        while not closed:
            try:
                piece = sock.recv(65536)
            except TimeoutError:
                break
            closed = not piece
            data += piece
        return data, closed


def _head(path: str, content_type: str, transfer_encoding: str | None = "chunked", length: int | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}"]
    if transfer_encoding:
        lines.append(f"Transfer-Encoding: {transfer_encoding}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer(data: bytes):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    status = int(lines[0].split()[1])
    if "xml" not in headers.get("content-type", "") and "multipart" not in headers.get("content-type", ""):
        return status, headers, None
    return status, headers, parse_response(headers["content-type"], body)


ENDPOINTS = {
    "/registry": f'application/soap+xml; charset=UTF-8; action="{REGISTER}"',
    "/repository": (f'multipart/related; boundary="{BOUNDARY}"; type="application/xop+xml"; '
                    f'start-info="application/soap+xml"; action="{PNR}"'),
}


@pytest.mark.parametrize("body, half_close, words", [
    (b"zz\r\n<env:Envelope/>\r\n0\r\n\r\n", False, "malformed (RFC 9112 7.1): Invalid chunk size"),
    (b"5\r\n<env:XX0\r\n\r\n", False, "malformed (RFC 9112 7.1): Invalid chunk terminator"),
    (b"100\r\n<env:Envelope", True, "connection closed before the request body ended"),
], ids=["bad chunk size", "missing terminator", "early end"])
@pytest.mark.parametrize("path", sorted(ENDPOINTS))
def test_malformed_chunked_bodies_get_a_sender_fault_from_the_real_server(server, path, body, half_close, words):
    port, _, log_path = server
    data, closed = _exchange(port, _head(path, ENDPOINTS[path]), body, half_close=half_close)
    status, headers, message = _answer(data)
    assert status == 400
    assert message is not None, data[:300]
    code = message.body.find(f"{{{SOAP12}}}Code")
    assert code.findtext(f"{{{SOAP12}}}Value") == "env:Sender"
    assert words in message.body.findtext(f".//{{{SOAP12}}}Text")
    assert message.action == f"{WSA}/soap/fault"
    assert closed  # the framing is lost: gunicorn closes the connection after the answer
    assert "Traceback" not in log_path.read_text()


def test_gzip_transfer_coding_gets_a_soap_fault_from_the_real_server(server):
    port, _, _ = server
    data, _ = _exchange(port, _head("/registry", ENDPOINTS["/registry"], "gzip, chunked"),
                        b"4\r\nabcd\r\n0\r\n\r\n")
    status, _, message = _answer(data)
    assert status == 501 and message is not None
    assert "'gzip' is not supported" in message.body.findtext(f".//{{{SOAP12}}}Text")


def test_an_unknown_transfer_coding_gets_the_http_layers_501(server):
    """gunicorn refuses a coding it does not know while it reads the request head, before any
    application runs, with its own HTML page (RFC 9112 6.1; see README "What the SOAP layer
    refuses"): the body's framing is unknown, so nothing of it can be read."""
    port, _, _ = server
    data, closed = _exchange(port, _head("/registry", ENDPOINTS["/registry"], "foo, chunked"),
                             b"4\r\nabcd\r\n0\r\n\r\n")
    status, headers, _ = _answer(data)
    assert status == 501 and closed


def _worker_memory(process) -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of the server's one worker, in MB."""
    worker = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()[0]
    fields = {}
    for line in Path(f"/proc/{worker}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) // 1024
    return fields


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads worker memory from /proc (Linux)")
def test_envelopes_of_empty_elements_leave_the_workers_memory_flat(server):
    """The issue's case: 95 MB of empty elements at /registry took 3.1 GB (16 MB: 530 MB).
    Now 95 MB is over max_request_size and refused unread; 16 MiB is read, counted and refused."""
    port, process, _ = server
    before = _worker_memory(process)

    data, _ = _exchange(port, _head("/registry", ENDPOINTS["/registry"], None, 95 * 1024 * 1024))
    status, _, message = _answer(data)
    assert status == 413 and "16777216 bytes" in message.body.findtext(f".//{{{SOAP12}}}Text")

    body = empty_elements(4 * 1024 * 1024 - 100, action=REGISTER)
    assert len(body) <= 16 * 1024 * 1024
    data, _ = _exchange(port, _head("/registry", ENDPOINTS["/registry"], None, len(body)), body)
    status, _, message = _answer(data)
    assert status == 413 and "at most 500000" in message.body.findtext(f".//{{{SOAP12}}}Text")

    after = _worker_memory(process)
    assert after["VmHWM"] - before["VmHWM"] < 150, (before, after)
