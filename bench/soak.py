"""The soak of issue 15: `xds serve` on SQLite under a bounded run of mixed good and bad requests
and of idle and slow connections, the memory of its worker set sampled all along.

    python -m bench.soak [--duration 180] [--clients 6] [--workers 2] [--dir var/soak]
                         [--idle 40] [--slow 8] [--big-mb 8] [--set NAME=VALUE]... [--out FILE]

`make soak` runs it with its defaults (SOAK_ARGS passes options). --set gives the server any
setting as XDS_NAME=VALUE (for example --set max_requests=0 to see memory without recycling).

What runs, all against 127.0.0.1, each kind of client from loopback addresses of its own
(127.0.1.x good and bad requests, 127.0.2.x idle connections, 127.0.3.x slow ones), so that the
server's bounds per client address apply to them as to separate hosts:

- --clients threads, one request at a time each, keeping the connection alive between
  requests where the server does (a request on a kept-alive connection that the server closed
  in the meantime is sent again on a new one, as HTTP clients do: counted as "resent"). Each
  request is drawn from this mix:

  | kind | share | what |
  | --- | --- | --- |
  | register | 20% | a valid ITI-42 (tests/submissions.py) for one of 5,000 patients: Success |
  | find | 25% | FindDocuments (LeafClass) for one of 50 others, given 10 documents each before the load: Success |
  | provide | 5% | ITI-41, one 4 KB document as MTOM: Success |
  | retrieve | 5% | ITI-43 of a document stored earlier: Success |
  | malformed | 35% | one of MALFORMED: refused (a SOAP fault or an XDS error); ODD_BUT_VALID: Success |
  | oversized | 10% | a Content-Length over max_request_size and nothing after the head, or (1 in 4) a body of --big-mb MB of empty elements |

  An answer other than the one expected is counted as "unexpected" (reported, not part of the
  bar: what the SOAP layer refuses is that layer's own matter).

- --idle connections from 4 addresses that connect and send nothing; when the server closes
  one (header_timeout), another is opened. Reported: how long the server let them live.
- --slow connections from 2 addresses, in turn: a request head at one byte a second; a valid
  head and then its body at one byte a second; an ITI-43 of a 16 MB document (more than the
  kernel's buffers hold) whose answer is read at one byte a second. Reported: how long each
  lived until the server cut it (the reader sees it in its TCP state: what the kernel already
  holds keeps coming after the cut).

Every second the resident memory (VmRSS; and PSS, which counts pages shared with the master
once) of each gunicorn worker is read from /proc and summed.

The bar (the fuzzing campaign's): no request over 5 s; none unanswered (answered: a complete
HTTP response came back, whatever its status); no internal error (a 5xx that is not a SOAP
fault, or the fault of an internal error; a SOAP VersionMismatch is 500 by SOAP 1.2's HTTP
binding and no failure); every idle and slow connection cut by the server; and RSS flat: the
highest sum in the last third of the run at most 15% above the highest in the middle third,
over the seconds when exactly --workers workers ran (a worker being replaced and its successor
run together for a moment: those seconds are reported apart). RSS at start is the first sample
(the server ready, nothing asked yet); middle and end are medians of the samples within 10 s of those points.
Exit status 0 when the bar is met. Results: a table on stdout and JSON (--out, default
<dir>/results.json); the server's log in <dir>/server.log.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from tests import submissions as s
from tests.queries import APPROVED_DOCUMENTS, quote
from tests.queries import request as query_request
from xds.soap import build_envelope, build_mtom, xop_include

ROOT = Path(__file__).resolve().parent.parent
XDS = [sys.executable, "-m", "xds.cli"]
REGISTER = "urn:ihe:iti:2007:RegisterDocumentSet-b"
STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
PNR = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
RETRIEVE = "urn:ihe:iti:2007:RetrieveDocumentSet"
XDSB = "urn:ihe:iti:xds-b:2007"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
REPOSITORY_UNIQUE_ID = "1.2.392.200119.6.102.1"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"

#: The bar: a request answered later than this is a failure of the run.
SLOW_ANSWER = 5.0
#: How long a client waits for an answer before it calls the request unanswered.
CLIENT_TIMEOUT = 60.0


def soap_type(action: str) -> str:
    return f'application/soap+xml; charset=UTF-8; action="{action}"'


# -- requests ---------------------------------------------------------------------------------------


#: The soak's patients. New documents go to PATIENTS, spread as over a network's patients; the
#: queries ask for QUERY_PATIENTS, who get QUERY_DOCUMENTS each before the load and none during
#: it, so that every FindDocuments answer is the same size all along (answers that grew with
#: the run would make memory grow with them: the soak looks for what a server keeps).
PATIENTS = [f"SOAK{i:05d}^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO" for i in range(5000)]
QUERY_PATIENTS = [f"SOAKQ{i:03d}^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO" for i in range(50)]
QUERY_DOCUMENTS = 10


def register_body(base: str, patient: str = s.PATIENT) -> bytes:
    xml, _ = s.submission(patient)
    return build_envelope(s.element(xml), REGISTER, to=base + "/registry")


def find_body(base: str, patient: str = s.PATIENT) -> bytes:
    request = query_request("FindDocuments", ("$XDSDocumentEntryPatientId", quote(patient)), APPROVED_DOCUMENTS,
                            return_type="LeafClass")
    return build_envelope(request, STORED_QUERY, to=base + "/registry")


def provide_body(base: str, data: bytes, patient: str = s.PATIENT) -> tuple[str, bytes, str]:
    """(Content-Type, body, the document's uniqueId) of an ITI-41 with one document as MTOM."""
    unique_id = s.new_oid()
    submit = s.element(s.request(
        s.submission_set("SubmissionSet01", s.new_oid(), patient),
        s.document("Document01", unique_id, patient),
        s.association("as01", "HasMember", "SubmissionSet01", "Document01", "Original")))
    for entry in submit.iter(f"{{{RIM}}}ExtrinsicObject"):
        entry.set("mimeType", "text/plain")
        for slot in list(entry.findall(f"{{{RIM}}}Slot")):
            if slot.get("name") in ("hash", "size", "repositoryUniqueId"):
                entry.remove(slot)
    request = etree.Element(f"{{{XDSB}}}ProvideAndRegisterDocumentSetRequest", nsmap={"xdsb": XDSB})
    request.append(submit)
    etree.SubElement(request, f"{{{XDSB}}}Document", id="Document01").append(xop_include("doc1@soak"))
    envelope = build_envelope(request, PNR, to=base + "/repository")
    content_type, body = build_mtom(envelope, [("doc1@soak", "text/plain", data)], action=PNR)
    return content_type, body, unique_id


def retrieve_body(base: str, unique_id: str) -> bytes:
    request = etree.Element(f"{{{XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": XDSB})
    item = etree.SubElement(request, f"{{{XDSB}}}DocumentRequest")
    etree.SubElement(item, f"{{{XDSB}}}RepositoryUniqueId").text = REPOSITORY_UNIQUE_ID
    etree.SubElement(item, f"{{{XDSB}}}DocumentUniqueId").text = unique_id
    return build_envelope(request, RETRIEVE, to=base + "/repository")


def _envelope_text(body: str, header: str = "<env:Header/>", soap: str = SOAP12) -> bytes:
    return f'<env:Envelope xmlns:env="{soap}">{header}<env:Body>{body}</env:Body></env:Envelope>'.encode()


def _wsa_header(action: str) -> str:
    return ('<env:Header xmlns:wsa="http://www.w3.org/2005/08/addressing">'
            f'<wsa:Action env:mustUnderstand="1">{action}</wsa:Action>'
            '<wsa:MessageID>urn:uuid:5a0c2a2e-0bd9-4c39-9a8b-4f4f6c7f0a01</wsa:MessageID></env:Header>')


def malformed(base: str, rng: random.Random) -> tuple[str, str, bytes, dict]:
    """(name, Content-Type, body, extra headers) of one odd request, drawn at random: all are
    to be refused (a SOAP fault or an XDS error) except those in ODD_BUT_VALID."""
    good = register_body(base, rng.choice(PATIENTS))
    name = rng.choice(MALFORMED)
    headers: dict = {}
    content_type = soap_type(REGISTER)
    if name == "not xml":
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000)))
    elif name == "truncated":
        body = good[: rng.randint(1, len(good) - 1)]
    elif name == "no header":
        body = _envelope_text(s.request())
    elif name == "soap 1.1":
        body = _envelope_text(s.request(), soap="http://schemas.xmlsoap.org/soap/envelope/")
    elif name == "entities":
        body = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
                b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;">]>'
                + _envelope_text("<x>&d;&d;&d;&d;</x>", _wsa_header(REGISTER)))
    elif name == "deep":
        depth = 5000
        body = _envelope_text("<a>" * depth + "</a>" * depth, _wsa_header(REGISTER))
    elif name == "namespaces":
        declarations = " ".join(f'xmlns:n{i}="urn:soak:{i}"' for i in range(2000))
        body = good.replace(b"<env:Envelope ", f"<env:Envelope {declarations} ".encode(), 1)
    elif name == "two body children":
        body = _envelope_text(s.request() + s.request(), _wsa_header(REGISTER))
    elif name == "bad metadata":
        xml, _ = s.submission(size="184467440737095516160", hash="not a hash")
        body = build_envelope(s.element(xml), REGISTER, to=base + "/registry")
    elif name == "long code":
        xml, _ = s.submission()
        body = build_envelope(s.element(xml.replace("34133-9", "9" * 10_000)), REGISTER, to=base + "/registry")
    elif name == "unknown action":
        body = build_envelope(s.element(s.request()), "urn:soak:no-such-action", to=base + "/registry")
        content_type = soap_type("urn:soak:no-such-action")
    elif name == "mtom missing start":
        content_type = ('multipart/related; type="application/xop+xml"; boundary="b1"; '
                        'start="<missing@soak>"; start-info="application/soap+xml"')
        body = (b"--b1\r\nContent-Type: application/xop+xml; type=\"application/soap+xml\"\r\n"
                b"Content-ID: <root@soak>\r\n\r\n" + good + b"\r\n--b1--\r\n")
    elif name == "bad content type":
        content_type = "text/html"
        body = good
    else:  # "bad chunked"
        headers["Transfer-Encoding"] = "chunked"
        body = b"zz\r\n" + good[:100] + b"\r\n"
    return name, content_type, body, headers


#: Odd but valid: a Success is the right answer.
ODD_BUT_VALID = {"namespaces"}
MALFORMED = ["not xml", "truncated", "no header", "soap 1.1", "entities", "deep", "namespaces", "two body children",
             "bad metadata", "long code", "unknown action", "mtom missing start", "bad content type", "bad chunked"]


def big_body(base: str, megabytes: float) -> bytes:
    """An ITI-42 envelope whose body is --big-mb MB of empty elements (the campaign's memory
    hog at 95 MB: 2.9 GB of RSS in one worker)."""
    count = int(megabytes * 1e6 / 4)
    return _envelope_text("<lcm:SubmitObjectsRequest xmlns:lcm=\"urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0\">"
                          + "<a/>" * count + "</lcm:SubmitObjectsRequest>", _wsa_header(REGISTER))


# -- HTTP over raw sockets ----------------------------------------------------------------------------


class Unanswered(Exception):
    pass


def http_request(path: str, content_type: str, body: bytes, headers: dict | None = None, *,
                 keep_alive: bool = True) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}"]
    extra = dict(headers or {})
    if "Transfer-Encoding" not in extra and "Content-Length" not in extra:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in extra.items()]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_response(sock: socket.socket, deadline: float) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 response (Content-Length, chunked, or to the end)."""
    buffer = bytearray()

    def more() -> bool:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(1 << 16)
        buffer.extend(chunk)
        return bool(chunk)

    while b"\r\n\r\n" not in buffer:
        if not more():
            raise Unanswered("closed before a response" if not buffer else "closed within the response head")
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    buffer[:] = rest
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(buffer) < length:
            if not more():
                raise Unanswered("closed within the response body")
        return status, headers, bytes(buffer[:length])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            while b"\r\n" not in buffer:
                if not more():
                    raise Unanswered("closed within a chunk")
            size_line, _, rest = bytes(buffer).partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            buffer[:] = rest
            while len(buffer) < size + 2:
                if not more():
                    raise Unanswered("closed within a chunk")
            body += buffer[:size]
            del buffer[: size + 2]
            if size == 0:
                return status, headers, bytes(body)
    while more():
        pass
    return status, headers, bytes(buffer)


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: Counter = field(default_factory=Counter)
    answered: Counter = field(default_factory=Counter)
    unanswered: Counter = field(default_factory=Counter)
    statuses: dict = field(default_factory=lambda: defaultdict(Counter))
    unexpected: Counter = field(default_factory=Counter)
    internal: Counter = field(default_factory=Counter)  # 5xx for an internal error (not a SOAP VersionMismatch...)
    max_latency: dict = field(default_factory=lambda: defaultdict(float))
    latencies: list = field(default_factory=list)
    slow_answers: list = field(default_factory=list)
    resent: int = 0
    refused_503: int = 0
    unanswered_samples: list = field(default_factory=list)
    cut: dict = field(default_factory=lambda: defaultdict(list))  # kind -> seconds each lived
    not_cut: Counter = field(default_factory=Counter)

    def record(self, kind: str, status: int | None, seconds: float, ok: bool, why: str = "",
               internal: bool = False) -> None:
        with self.lock:
            self.sent[kind] += 1
            if status is None:
                self.unanswered[kind] += 1
                if len(self.unanswered_samples) < 20:
                    self.unanswered_samples.append(f"{kind}: {why}")
                return
            self.answered[kind] += 1
            self.statuses[kind][status] += 1
            self.latencies.append(seconds)
            self.max_latency[kind] = max(self.max_latency[kind], seconds)
            if seconds > SLOW_ANSWER:
                self.slow_answers.append((kind, round(seconds, 2)))
            if not ok:
                self.unexpected[kind] += 1
            if internal:
                self.internal[kind] += 1


class Client:
    """One client thread's connection: kept alive while the server keeps it."""

    def __init__(self, port: int, source: str):
        self.port = port
        self.source = source
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.socket()
        sock.bind((self.source, 0))
        sock.settimeout(CLIENT_TIMEOUT)
        sock.connect(("127.0.0.1", self.port))
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def exchange(self, request: bytes, stats: Stats, body_after_head: bool = True) -> tuple[int, dict, bytes, float]:
        """Send and read one answer; returns (status, headers, body, seconds from the first
        byte sent to the last read). Raises Unanswered."""
        for attempt in (1, 2):
            reused = self.sock is not None
            if self.sock is None:
                self.sock = self._connect()
            start = time.monotonic()
            try:
                self.sock.sendall(request)
                status, headers, body = read_response(self.sock, start + CLIENT_TIMEOUT)
            except (Unanswered, OSError) as exc:
                self.close()
                nothing = isinstance(exc, Unanswered) and "before a response" in str(exc)
                if reused and attempt == 1 and (nothing or isinstance(exc, (ConnectionResetError, BrokenPipeError))):
                    with stats.lock:
                        stats.resent += 1  # the server closed the kept-alive connection meanwhile
                    continue
                raise Unanswered(f"{type(exc).__name__}: {exc}") from None
            seconds = time.monotonic() - start
            if headers.get("connection", "").lower() == "close":
                self.close()
            return status, headers, body, seconds
        raise AssertionError("unreachable")


def _success(body: bytes) -> bool:
    return b"ResponseStatusType:Success" in body


def good_and_bad(port: int, base: str, index: int, stop: threading.Event, stats: Stats, args,
                 stored: list[str], rng: random.Random) -> None:
    client = Client(port, f"127.0.1.{index + 1}")
    document = b"soak document " * 300
    kinds = (["register"] * 20 + ["find"] * 25 + ["provide"] * 5 + ["retrieve"] * 5 + ["malformed"] * 35
             + ["oversized"] * 10)
    while not stop.is_set():
        kind = rng.choice(kinds)
        extra: dict = {}
        label = kind
        patient = rng.choice(PATIENTS)
        if kind == "register":
            path, content_type, body = "/registry", soap_type(REGISTER), register_body(base, patient)
        elif kind == "find":
            path, content_type = "/registry", soap_type(STORED_QUERY)
            body = find_body(base, rng.choice(QUERY_PATIENTS))
        elif kind == "provide":
            content_type, body, unique_id = provide_body(base, document, patient)
            path = "/repository"
        elif kind == "retrieve":
            if not stored:
                continue
            path, content_type, body = "/repository", soap_type(RETRIEVE), retrieve_body(base, rng.choice(stored))
        elif kind == "malformed":
            name, content_type, body, extra = malformed(base, rng)
            path, label = "/registry", f"malformed: {name}"
        else:
            path, content_type = "/registry", soap_type(REGISTER)
            if rng.random() < 0.25:
                body, label = big_body(base, args.big_mb), f"oversized: {args.big_mb:g} MB body"
            else:
                body, label = b"", "oversized: Content-Length only"
                extra = {"Content-Length": str(10 * 1024 ** 3)}
        request = http_request(path, content_type, body, extra)
        try:
            status, _, answer, seconds = client.exchange(request, stats)
        except Unanswered as exc:
            stats.record(label, None, 0.0, False, str(exc))
            continue
        if status == 503 and b"too many connections" in answer:
            with stats.lock:
                stats.refused_503 += 1
        internal = status >= 500 and (b"internal error" in answer or b"Envelope" not in answer)
        if kind in ("register", "find", "provide", "retrieve") or label.removeprefix("malformed: ") in ODD_BUT_VALID:
            ok = status == 200 and _success(answer)
            if kind == "provide" and ok:
                stored.append(unique_id)
        else:
            ok = status != 200 or not _success(answer)
        stats.record(label, status, seconds, ok, internal=internal)
        if label.startswith("oversized") or label == "malformed: bad chunked":
            client.close()  # the rest of the body was never sent: this connection is spent
    client.close()


def idle_connections(port: int, count: int, stop: threading.Event, stats: Stats, limit: float) -> None:
    """Keep `count` connections open that send nothing; note when the server closes each (one
    still open `limit` seconds after it connected is counted as not cut)."""
    open_: dict[socket.socket, float] = {}
    addresses = [f"127.0.2.{i + 1}" for i in range(4)]
    n = 0
    while not stop.is_set():
        while len(open_) < count and not stop.is_set():
            sock = socket.socket()
            sock.bind((addresses[n % len(addresses)], 0))
            n += 1
            try:
                sock.connect(("127.0.0.1", port))
            except OSError:
                sock.close()
                break
            sock.setblocking(False)
            open_[sock] = time.monotonic()
        time.sleep(0.2)
        now = time.monotonic()
        for sock, since in list(open_.items()):
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                if now - since > limit:
                    with stats.lock:
                        stats.not_cut["idle"] += 1
                    sock.close()
                    del open_[sock]
                continue
            except OSError:
                data = b""
            if data == b"" or data.startswith(b"HTTP/1.1 503"):
                with stats.lock:
                    if data:
                        stats.refused_503 += 1
                    else:
                        stats.cut["idle"].append(now - since)
                sock.close()
                del open_[sock]
    now = time.monotonic()
    for sock, since in open_.items():
        if now - since > limit:
            with stats.lock:
                stats.not_cut["idle"] += 1
        sock.close()


def slow_connections(port: int, base: str, index: int, stop: threading.Event, stats: Stats, limits: dict,
                     big_document: str | None) -> None:
    """A byte a second: request heads, bodies after a valid head, and answers read that slowly
    (an ITI-43 of a document larger than the kernel's buffers, so that the server must wait).
    One still open `limits[kind]` seconds after it connected is counted as not cut."""
    source = f"127.0.3.{index % 2 + 1}"
    kinds = ("slow head", "slow body", "slow reader") if big_document else ("slow head", "slow body")
    turn = index
    while not stop.is_set():
        kind = kinds[turn % len(kinds)]
        turn += 1
        sock = socket.socket()
        sock.bind((source, 0))
        if kind == "slow reader":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            stop.wait(1)
            continue
        start = time.monotonic()
        limit = limits[kind]
        request = http_request("/registry", soap_type(STORED_QUERY), find_body(base))
        if kind == "slow head":
            prefix, payload = b"", request
        elif kind == "slow body":
            head, _, body = request.partition(b"\r\n\r\n")
            prefix, payload = head + b"\r\n\r\n", body
        else:
            prefix, payload = http_request("/repository", soap_type(RETRIEVE), retrieve_body(base, big_document)), b""
        cut = False
        try:
            sock.sendall(prefix)
            if kind == "slow reader":
                # What the kernel already holds keeps coming after the server has cut the
                # connection: the cut shows in the connection's TCP state, not in the bytes.
                sock.settimeout(1)
                while not stop.is_set() and time.monotonic() - start < limit:
                    try:
                        if sock.recv(1) == b"":
                            cut = True
                            break
                    except TimeoutError:
                        pass  # no answer yet
                    if tcp_state(sock) in _CLOSED_STATES:
                        cut = True
                        break
                    stop.wait(1)
            else:
                for i in range(len(payload)):
                    if stop.is_set() or time.monotonic() - start > limit:
                        break
                    sock.send(payload[i:i + 1])
                    sock.setblocking(False)
                    try:
                        sock.recv(4096)  # an answer (408, or a fault for a body cut short) or a close
                        cut = True
                        break
                    except BlockingIOError:
                        pass
                    finally:
                        sock.setblocking(True)
                    stop.wait(1)
        except OSError:
            cut = True
        sock.close()
        with stats.lock:
            if cut:
                stats.cut[kind].append(time.monotonic() - start)
            elif time.monotonic() - start >= limit:
                stats.not_cut[kind] += 1


#: TCP states (linux/tcp_states.h) of a connection the other end has closed or reset.
_CLOSED_STATES = {7, 8, 9}  # CLOSE, CLOSE_WAIT, LAST_ACK


def tcp_state(sock: socket.socket) -> int:
    """The connection's TCP state (TCP_INFO's first byte, Linux)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


# -- the server and its memory --------------------------------------------------------------------


def worker_pids(master: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    except OSError:
        return []


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, Pss) of a process in kB; (0, 0) when it is gone."""
    try:
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        pss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                   if line.startswith("Pss:"))
        return rss, pss
    except (OSError, StopIteration, ValueError):
        return 0, 0


def sample_memory(master: int, stop: threading.Event, samples: list, started: float) -> None:
    while not stop.is_set():
        pids = worker_pids(master)
        sizes = [memory_kb(pid) for pid in pids]
        samples.append((round(time.monotonic() - started, 1), sum(r for r, _ in sizes), sum(p for _, p in sizes),
                        len(pids)))
        stop.wait(1.0)


def start_server(data_dir: Path, workers: int, settings: dict[str, str]) -> tuple[subprocess.Popen, int, dict, Path]:
    env = dict(os.environ, XDS_DATA_DIR=str(data_dir), XDS_REPOSITORY_UNIQUE_ID=REPOSITORY_UNIQUE_ID)
    env.update({f"XDS_{k.upper()}": v for k, v in settings.items()})
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run([*XDS, "patients", "add", s.PATIENT, *PATIENTS, *QUERY_PATIENTS], env=env, check=True,
                   capture_output=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = data_dir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*XDS, "serve", "--port", str(port), "--workers", str(workers)], env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return process, port, env, log_path
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise SystemExit(f"the server did not start: see {log_path}")
            time.sleep(0.2)


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def preload(port: int, base: str) -> None:
    """QUERY_DOCUMENTS documents for each of QUERY_PATIENTS."""
    client = Client(port, "127.0.1.251")
    try:
        for patient in QUERY_PATIENTS:
            for _ in range(QUERY_DOCUMENTS):
                request = http_request("/registry", soap_type(REGISTER), register_body(base, patient))
                status, _, answer, _ = client.exchange(request, Stats())
                if status != 200 or not _success(answer):
                    raise SystemExit(f"the soak's query patients could not be registered: {answer[:500]!r}")
    finally:
        client.close()


def store_big_document(port: int, base: str) -> str | None:
    """A 16 MB document for the slow readers: more than the kernel's send and receive buffers
    hold between the server and a reader."""
    content_type, body, unique_id = provide_body(base, os.urandom(16 << 20))
    client = Client(port, "127.0.1.250")
    try:
        request = http_request("/repository", content_type, body, keep_alive=False)
        status, _, answer, _ = client.exchange(request, Stats())
    except Unanswered:
        return None
    finally:
        client.close()
    return unique_id if status == 200 and _success(answer) else None


# -- the run ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180, help="seconds of load (default 180)")
    parser.add_argument("--clients", type=int, default=6, help="threads of good and bad requests (default 6)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--idle", type=int, default=40, help="idle connections kept open (default 40)")
    parser.add_argument("--slow", type=int, default=8, help="byte-a-second connections (default 8)")
    parser.add_argument("--big-mb", type=float, default=8.0, help="MB of the large bodies (default 8)")
    parser.add_argument("--dir", default=str(ROOT / "var" / "soak"), help="data folder (emptied first)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a server setting, as XDS_NAME=VALUE")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--out", help="results as JSON (default <dir>/results.json)")
    args = parser.parse_args(argv)
    settings = dict(item.split("=", 1) for item in args.set)

    data_dir = Path(args.dir)
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    process, port, env, log_path = start_server(data_dir, args.workers, settings)
    base = f"http://127.0.0.1:{port}"
    header_timeout = float(settings.get("header_timeout", 10))
    body_timeout = float(settings.get("body_timeout", 20))
    stats = Stats()
    samples: list = []
    stored: list[str] = []
    stop, load_stop = threading.Event(), threading.Event()
    started = time.monotonic()
    try:
        sampler = threading.Thread(target=sample_memory, args=(process.pid, stop, samples, started), daemon=True)
        sampler.start()
        stop.wait(3)  # the memory at start: the server ready, nothing asked yet
        big_document = store_big_document(port, base)
        preload(port, base)
        rng = random.Random(args.seed)
        threads = [threading.Thread(target=good_and_bad, daemon=True,
                                    args=(port, base, i, load_stop, stats, args, stored, random.Random(rng.random())))
                   for i in range(args.clients)]
        # Where the soak calls an idle or slow connection not cut: its deadline and some slack
        # (a reader's deadline also counts what its kernel took for it: up to 32 KB here).
        min_rate = float(settings.get("min_body_rate", 500)) or 1.0
        limits = {"idle": header_timeout + 5, "slow head": header_timeout + 5, "slow body": body_timeout + 10,
                  "slow reader": body_timeout + 32768 / min_rate + 10}
        threads.append(threading.Thread(target=idle_connections, daemon=True,
                                        args=(port, args.idle, load_stop, stats, limits["idle"])))
        threads += [threading.Thread(target=slow_connections, daemon=True,
                                     args=(port, base, i, load_stop, stats, limits, big_document))
                    for i in range(args.slow)]
        load_started = time.monotonic()
        for thread in threads:
            thread.start()
        while time.monotonic() - load_started < args.duration and process.poll() is None:
            time.sleep(1)
            elapsed = time.monotonic() - load_started
            if int(elapsed) % 15 == 0:
                print(f"  {elapsed:5.0f} s  {sum(stats.sent.values())} requests  "
                      f"RSS {samples[-1][1] / 1024 if samples else 0:.0f} MB", flush=True)
        load_stop.set()
        for thread in threads:
            thread.join(CLIENT_TIMEOUT + 5)
        load_seconds = time.monotonic() - load_started
        stop.wait(3)
        stop.set()
        sampler.join(5)
        health = urllib.request.urlopen(base + "/health", timeout=5).read().decode()
    finally:
        stop.set()
        load_stop.set()
        stop_server(process)

    log = log_path.read_text(errors="replace")
    report = summarize(args, settings, stats, samples, load_seconds, log, health, started, load_started)
    out = Path(args.out or data_dir / "results.json")
    out.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    print(f"results: {out}; server log: {log_path}")
    return 0 if report["bar"]["met"] else 1


def summarize(args, settings, stats: Stats, samples: list, load_seconds: float, log: str, health: str,
              started: float, load_started: float) -> dict:
    offset = load_started - started
    during = [x for x in samples if offset <= x[0] <= offset + load_seconds]
    before = [x for x in samples if x[0] < offset]

    def at(fraction: float, column: int):
        """The median of the samples within 10 s of that point of the run (a worker being
        replaced and its successor are both counted for a moment: medians, not single samples)."""
        t = offset + fraction * load_seconds
        near = sorted(x[column] for x in during if abs(x[0] - t) <= 10)
        return near[len(near) // 2] if near else None

    # Flat: the highest the worker set reached in the last third of the run, at most 15% above
    # the highest of the middle third, counting the moments when exactly --workers workers ran
    # (a worker being replaced and its successor, both counted for a moment, are reported apart).
    third = load_seconds / 3
    steady = [x for x in during if x[3] == args.workers]
    middle = [x[1] for x in steady if offset + third <= x[0] < offset + 2 * third]
    last = [x[1] for x in steady if x[0] >= offset + 2 * third]
    flat = bool(middle and last and max(last) <= 1.15 * max(middle))
    latencies = sorted(stats.latencies)

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1) if latencies else 0.0

    server_errors = {k: n for k, n in stats.internal.items() if n}
    sent, answered, unanswered = (sum(c.values()) for c in (stats.sent, stats.answered, stats.unanswered))
    max_latency = max(stats.max_latency.values(), default=0.0)
    cut = {k: {"count": len(v), "min_s": round(min(v), 1), "max_s": round(max(v), 1)}
           for k, v in stats.cut.items() if v}
    bar = {"no answer over 5 s": max_latency <= SLOW_ANSWER, "none unanswered": unanswered == 0,
           "no internal error": not server_errors, "RSS flat": flat,
           "every idle/slow connection cut": not stats.not_cut}
    mb = lambda x: round(x / 1024, 1) if x is not None else None  # noqa: E731
    return {
        "command": "python -m bench.soak " + " ".join(sys.argv[1:]),
        "settings": settings, "duration_s": round(load_seconds, 1), "clients": args.clients, "workers": args.workers,
        "idle": args.idle, "slow": args.slow, "big_mb": args.big_mb,
        "requests": sent, "answered": answered, "unanswered": unanswered, "resent_on_new_connection": stats.resent,
        "refused_503_per_address": stats.refused_503,
        "max_latency_s": round(max_latency, 2), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
        "answers_over_5s": stats.slow_answers[:20], "unanswered_samples": stats.unanswered_samples,
        "by_kind": {k: {"sent": stats.sent[k], "answered": stats.answered[k], "statuses": dict(stats.statuses[k]),
                        "unexpected": stats.unexpected[k], "max_s": round(stats.max_latency[k], 2)}
                    for k in sorted(stats.sent)},
        "internal_errors": server_errors,
        "cut": cut, "not_cut": dict(stats.not_cut),
        "rss_mb": {"start": mb(before[0][1] if before else None), "middle": mb(at(0.5, 1)), "end": mb(at(1.0, 1)),
                   "max": mb(max((x[1] for x in during), default=0)),
                   "max_middle_third": mb(max(middle, default=0)), "max_last_third": mb(max(last, default=0)),
                   "seconds_with_a_worker_being_replaced": sum(1 for x in during if x[3] > args.workers)},
        "pss_mb": {"start": mb(before[0][2] if before else None), "middle": mb(at(0.5, 2)), "end": mb(at(1.0, 2))},
        "workers_started": log.count("Booting worker"),
        "tracebacks_in_log": log.count("Traceback (most recent call last)"),
        "health_at_end": health,
        "samples": samples,
        "bar": {**bar, "met": all(bar.values())},
    }


def markdown(r: dict) -> str:
    rss, pss = r["rss_mb"], r["pss_mb"]
    lines = [
        f"soak: {r['duration_s']:.0f} s, {r['clients']} request threads, {r['idle']} idle and {r['slow']} slow "
        f"connections, {r['workers']} workers, settings {r['settings'] or 'default'}",
        "",
        "| requests | answered | unanswered | max latency | p50 | p99 | internal errors "
        "| RSS start / middle / end (max) | PSS start / middle / end |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        f"| {r['requests']} | {r['answered']} | {r['unanswered']} | {r['max_latency_s']} s | {r['p50_ms']} ms "
        f"| {r['p99_ms']} ms | {sum(r['internal_errors'].values())} | {rss['start']} / {rss['middle']} / "
        f"{rss['end']} MB ({rss['max']}) | {pss['start']} / {pss['middle']} / {pss['end']} MB |",
        "",
        "| kind | sent | answered | statuses | unexpected | max s |",
        "| --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for kind, k in r["by_kind"].items():
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(k["statuses"].items()))
        lines.append(f"| {kind} | {k['sent']} | {k['answered']} | {statuses} | {k['unexpected']} | {k['max_s']} |")
    lines += ["", "| connection | cut by the server | lived (s) |", "| --- | ---: | --- |"]
    for kind, c in sorted(r["cut"].items()):
        lines.append(f"| {kind} | {c['count']} | {c['min_s']}-{c['max_s']} |")
    for kind, n in sorted(r["not_cut"].items()):
        lines.append(f"| {kind} | NOT CUT: {n} | |")
    lines += ["", f"workers started: {r['workers_started']}; tracebacks in the server log: {r['tracebacks_in_log']}; "
              f"resent on a new connection: {r['resent_on_new_connection']}; 503 (per address): "
              f"{r['refused_503_per_address']}",
              "bar: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in r["bar"].items() if k != "met")
              + f" -> {'MET' if r['bar']['met'] else 'NOT MET'}"]
    if r["unanswered_samples"]:
        lines.append("unanswered: " + "; ".join(r["unanswered_samples"][:5]))
    if r["answers_over_5s"]:
        lines.append("over 5 s: " + ", ".join(f"{k} {sec}" for k, sec in r["answers_over_5s"][:10]))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
