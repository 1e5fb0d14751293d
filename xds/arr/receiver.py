"""The Audit Record Repository's listeners (ITI-20 Record Audit Event, receiving side):
syslog over TLS (RFC 5425), over plain TCP (RFC 6587) and over UDP (RFC 5426), every message
handed to xds.arr.repository to be stored.

    arr = AuditRecordRepository(settings, engine, tls=("0.0.0.0", 6514), udp=("0.0.0.0", 514))
    arr.start()          # listener threads; arr.addresses says where they listen
    ...
    arr.stop()

What belongs here: sockets, framing, TLS, threads and counting. What does not: reading the
messages and the chain (xds.arr.repository).

Streams. TLS is mutual (ATNA node authentication, ITI-19: xds.security.tls.server_context), and a
refused peer is recorded as a Security Alert in the repository itself, since this node is where
such alerts end up anyway (at most one per address a minute: a scanner must not fill the
database). Messages are framed by octet counting; plain TCP also takes non-transparent framing
(one message a line, RFC 6587 3.4.2), chosen when the connection's first byte is '<' (octet
counting starts with a digit). A frame longer than max_length, or bytes that are no frame, end
the connection: the whole frames before them are stored as messages, the rest as one malformed
record, and the connection is closed (resynchronising on a broken stream would only guess). A
connection that ends inside a frame leaves its partial frame as a malformed record too. Memory
per connection is bounded by max_length, and connections by max_connections.

Datagrams. One message per datagram, read whole (up to 65535 octets) by one thread; the socket's
receive buffer is enlarged to absorb bursts while a message is being stored.

Storing. Each batch of messages (what one read of a stream delivered, or one datagram) is one
transaction. A database that fails is retried a few times; a batch that still cannot be stored
is logged as an error with its count (`unstored`), since syslog has no way to ask the sender to
send it again.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine

from xds.arr import repository
from xds.audit import events, syslog
from xds.arr.repository import Reception
from xds.audit.syslog import FrameError, OctetCountingReader
from xds.config import Settings
from xds.security.tls import refusal_reason, server_context, subject_string

log = logging.getLogger("xds.arr.receiver")

APP_NAME = "xds-audit-record-repository"
CHUNK = 64 * 1024
MAX_LENGTH = 1024 * 1024           # the longest message accepted on a stream
MAX_CONNECTIONS = 256
HANDSHAKE_TIMEOUT = 30.0
UDP_BUFFER = 4 * 1024 * 1024
STORE_ATTEMPTS = 3
ALERT_INTERVAL = 60.0              # seconds between two Security Alerts for one refused address


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


class Counters:
    """What the listeners did, for the log and for tests: received (messages, this node's own
    Security Alerts included), stored, malformed (stored, flagged), unstored (lost to a
    database failure), refused (connections)."""

    NAMES = ("received", "stored", "malformed", "unstored", "refused")

    def __init__(self):
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self.NAMES, 0)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    def __str__(self) -> str:
        return ", ".join(f"{name} {value}" for name, value in self.snapshot().items())


# --- framing -------------------------------------------------------------------------------

class _OctetFrames:
    """OctetCountingReader, keeping what a framing error leaves: the messages split off before
    the break and the bytes after it, which must be stored."""

    def __init__(self, max_length: int):
        self._reader = OctetCountingReader(max_length)
        self._salvaged: tuple[list[bytes], bytes] = ([], b"")

    def feed(self, data: bytes) -> list[bytes]:
        try:
            return self._reader.feed(data)
        except FrameError as exc:
            self._salvaged = (exc.messages, exc.rest)
            raise

    @property
    def unread(self) -> bytes:
        return self._reader.unread

    def salvage(self) -> tuple[list[bytes], bytes]:
        """After a FrameError: the whole frames before the break, and the rest."""
        return self._salvaged


class _LineFrames:
    """Non-transparent framing (RFC 6587 3.4.2): each message ends with LF."""

    def __init__(self, max_length: int):
        self.max_length = max_length
        self.unread = b""
        self._whole: list[bytes] = []

    def feed(self, data: bytes) -> list[bytes]:
        *lines, self.unread = (self.unread + data).split(b"\n")
        lines = [line for line in lines if line.strip()]
        if len(self.unread) > self.max_length:
            self._whole = lines  # the lines before the one too long are messages all the same
            raise FrameError(f"a line of more than {self.max_length} octets without LF")
        return lines

    def salvage(self) -> tuple[list[bytes], bytes]:
        return self._whole, self.unread


# --- the servers ---------------------------------------------------------------------------

class _StreamServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, arr: AuditRecordRepository, transport: str,
                 context: ssl.SSLContext | None):
        self.address_family = _family(address[0])
        self.arr, self.transport, self.context = arr, transport, context
        self._slots = threading.BoundedSemaphore(arr.max_connections)
        self._open: dict[socket.socket, threading.Thread] = {}
        self._open_lock = threading.Lock()
        super().__init__(address, _StreamHandler)

    def get_request(self):
        sock, address = super().get_request()
        if self.context is not None:
            # The handshake runs in the connection's thread (_StreamHandler), not here in the
            # accepting one: a slow or silent peer must not hold up the others.
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def verify_request(self, request, client_address) -> bool:
        if self._slots.acquire(blocking=False):
            return True
        log.warning("refused a %s connection from %s: %d connections open already",
                    self.transport, client_address[0], self.arr.max_connections)
        self.arr.counters.add("refused")
        return False

    def process_request_thread(self, request, client_address):
        with self._open_lock:
            self._open[request] = threading.current_thread()
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.pop(request, None)
            self._slots.release()

    def handle_error(self, request, client_address):
        log.exception("error on the %s connection from %s", self.transport, client_address[0])

    def close_connections(self, timeout: float) -> None:
        """End the open connections (their threads store what they hold, then stop)."""
        with self._open_lock:
            connections = dict(self._open)
        for sock in connections:
            try:
                # socket.shutdown, not SSLSocket.shutdown: that one also drops the TLS state
                # that the connection's own thread may be using at this moment.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in connections.values():
            thread.join(timeout)


class _StreamHandler(socketserver.BaseRequestHandler):
    server: _StreamServer

    def handle(self) -> None:
        server, sock = self.server, self.request
        address, port = self.client_address[:2]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        peer = None
        if server.context is not None:
            sock.settimeout(HANDSHAKE_TIMEOUT)
            try:
                sock.do_handshake()
            except ssl.SSLError as exc:
                if isinstance(exc, ssl.SSLEOFError):
                    return  # hung up before trying: no authentication attempt
                server.arr.refused(address, port, refusal_reason(exc), server.server_address)
                return
            except OSError as exc:  # timeout, reset
                log.info("TLS handshake with %s did not finish: %s", address, exc)
                return
            sock.settimeout(None)
            subject = (sock.getpeercert() or {}).get("subject")
            peer = subject_string(subject) if subject else None
        server.arr.receive_stream(sock, server.transport, address, port, peer)


class _DatagramServer(socketserver.UDPServer):
    # One thread: the database takes one writer at a time anyway; the enlarged receive buffer
    # holds what arrives meanwhile.
    allow_reuse_address = True
    max_packet_size = 65535  # socketserver's default, 8192, would cut longer messages

    def __init__(self, address, arr: AuditRecordRepository):
        self.address_family = _family(address[0])
        self.arr = arr
        super().__init__(address, _DatagramHandler)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
        except OSError:
            pass  # the system's maximum applies

    def handle_error(self, request, client_address):
        log.exception("error on a UDP datagram from %s", client_address[0])


class _DatagramHandler(socketserver.BaseRequestHandler):
    server: _DatagramServer

    def handle(self) -> None:
        data, _ = self.request
        address, port = self.client_address[:2]
        problem = None if data else "empty datagram"
        self.server.arr.store([Reception(data, "udp", address, port, problem=problem)])


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def parse_address(value: str, default_port: int | None = None) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or :PORT (all addresses) as a (host, port) for bind()."""
    host, colon, port = value.rpartition(":")
    if not colon:
        host, port = value, ""
    host = host.strip("[]") or "0.0.0.0"
    if not port and default_port is None:
        raise ValueError(f"{value!r}: expected HOST:PORT")
    try:
        number = int(port) if port else default_port
    except ValueError:
        raise ValueError(f"{value!r}: the port is not a number") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"{value!r}: the port is out of range")
    return host, number


@dataclass
class _Listener:
    transport: str
    server: socketserver.BaseServer
    thread: threading.Thread | None = None


class AuditRecordRepository:
    """The listeners and what they share: the database, the counters, the TLS context."""

    def __init__(self, settings: Settings, engine: Engine, *, tls: tuple[str, int] | None = None,
                 tcp: tuple[str, int] | None = None, udp: tuple[str, int] | None = None,
                 max_length: int = MAX_LENGTH, max_connections: int = MAX_CONNECTIONS):
        if not (tls or tcp or udp):
            raise ValueError("no listener: give a TLS, TCP or UDP address")
        self.settings, self.engine = settings, engine
        self.max_length, self.max_connections = max_length, max_connections
        self.counters = Counters()
        self.source = events.AuditSource(settings.audit_source_id or socket.gethostname(),
                                         settings.audit_enterprise_site_id)
        self._alerted: dict[str, float] = {}
        self._alert_lock = threading.Lock()
        self._listeners: list[_Listener] = []
        try:
            if tls:
                context = server_context(settings)
                # No TLS 1.3 session tickets: sent after the handshake, they sit unread at a
                # sender that only writes; when it closes, its kernel answers the unread data
                # with a reset, and a reset makes ours drop the messages not yet read.
                context.num_tickets = 0
                self._listeners.append(_Listener("tls", _StreamServer(tls, self, "tls", context)))
            if tcp:
                self._listeners.append(_Listener("tcp", _StreamServer(tcp, self, "tcp", None)))
            if udp:
                self._listeners.append(_Listener("udp", _DatagramServer(udp, self)))
        except BaseException:
            self._close()
            raise

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        """Where each transport listens (the ports given as 0 resolved)."""
        return {listener.transport: listener.server.server_address[:2] for listener in self._listeners}

    def start(self) -> AuditRecordRepository:
        for listener in self._listeners:
            listener.thread = threading.Thread(target=listener.server.serve_forever, kwargs={"poll_interval": 0.2},
                                               name=f"audit-{listener.transport}", daemon=True)
            listener.thread.start()
        for transport, (host, port) in self.addresses.items():
            log.info("Audit Record Repository listening for syslog over %s on %s:%d", transport.upper(), host, port)
        return self

    def stop(self) -> None:
        for listener in self._listeners:
            if listener.thread is not None:
                listener.server.shutdown()
                listener.thread.join(timeout=10)
            if isinstance(listener.server, _StreamServer):
                listener.server.close_connections(timeout=10)
        self._close()
        log.info("Audit Record Repository stopped: %s", self.counters)

    def _close(self) -> None:
        for listener in self._listeners:
            listener.server.server_close()

    def __enter__(self) -> AuditRecordRepository:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- receiving ------------------------------------------------------------------------

    def receive_stream(self, sock: socket.socket, transport: str, address: str, port: int,
                       peer: str | None) -> None:
        """Read one connection to its end, storing each message as it completes."""
        frames = None

        def reception(raw: bytes, problem: str | None = None) -> Reception:
            return Reception(raw, transport, address, port, peer, _now(), problem)

        try:
            while True:
                try:
                    data = sock.recv(CHUNK)
                except (OSError, ValueError) as exc:  # reset, TLS alert, closed under us
                    log.info("%s connection from %s ended: %s", transport, address, exc)
                    data = b""
                if not data:
                    break
                if frames is None:
                    lines = transport == "tcp" and data.startswith(b"<")
                    frames = _LineFrames(self.max_length) if lines else _OctetFrames(self.max_length)
                try:
                    messages = frames.feed(data)
                except FrameError as exc:
                    messages, rest = frames.salvage()
                    batch = [reception(message) for message in messages]
                    if rest:
                        batch.append(reception(rest, f"broken {transport} framing, connection closed: {exc}"))
                    log.warning("closing the %s connection from %s: %s", transport, address, exc)
                    self.store(batch)
                    return
                if messages:
                    self.store([reception(message) for message in messages])
            if frames is not None and frames.unread:
                if isinstance(frames, _LineFrames):  # the last line may come without its LF
                    self.store([reception(frames.unread)])
                else:
                    self.store([reception(frames.unread, f"the {transport} connection ended inside a message "
                                                         f"({len(frames.unread)} octets of its frame)")])
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def store(self, receptions: Sequence[Reception]) -> None:
        """Store a batch; never raises (a listener thread must go on)."""
        if not receptions:
            return
        self.counters.add("received", len(receptions))
        try:
            records = [repository.read(reception) for reception in receptions]
        except Exception:  # read() is meant not to raise; if it does, keep the bytes all the same
            log.exception("could not read %d audit message(s); storing them as malformed", len(receptions))
            records = [repository.read(Reception(r.raw, r.transport, r.sender_address, r.sender_port, r.tls_peer,
                                                 r.received_at, "could not be read (see the server's log)"))
                       for r in receptions]
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                repository.append(self.engine, records)
                break
            except Exception as exc:  # SQLAlchemyError mostly; whatever it is, the batch is retried
                if attempt == STORE_ATTEMPTS:
                    self.counters.add("unstored", len(records))
                    sender = receptions[0].sender_address
                    log.error("AUDIT RECORDS LOST: %d message(s) from %s could not be stored (%s: %s); %s",
                              len(records), sender, type(exc).__name__, exc, self.counters)
                    return
                log.warning("storing %d audit message(s) failed (%s), trying again", len(records),
                            type(exc).__name__)
                time.sleep(0.5 * attempt)
        malformed = sum(record.malformed is not None for record in records)
        self.counters.add("stored", len(records))
        if malformed:
            self.counters.add("malformed", malformed)
            for record in records:
                if record.malformed:
                    log.warning("malformed audit message from %s over %s stored: %s", record.sender_address,
                                record.transport, record.malformed)

    def refused(self, address: str, port: int, reason: str, listening: tuple) -> None:
        """A peer failed TLS node authentication: log it, count it, and record a Security Alert
        (DICOM PS3.15 A.5.3.11) in the repository, at most one per address a minute."""
        log.warning("refused TLS connection from %s: %s", address, reason)
        self.counters.add("refused")
        now = time.monotonic()
        with self._alert_lock:
            if now - self._alerted.get(address, -ALERT_INTERVAL) < ALERT_INTERVAL:
                return
            self._alerted[address] = now
            if len(self._alerted) > 10000:  # forget the old ones; memory stays bounded
                self._alerted = {a: t for a, t in self._alerted.items() if now - t < ALERT_INTERVAL}
        host, listen_port = listening[:2]
        host = f"[{host}]" if ":" in host else host
        ctx = events.TransactionContext(
            client_address=address, endpoint_url=f"tls://{host}:{listen_port}",
            # 4, minor failure: one connection refused; the node may come back with a good
            # certificate (as xds.serve records it).
            outcome=events.EventOutcome.MINOR_FAILURE, outcome_description=reason)
        alert = events.security_alert(ctx, self.source, reason=reason)
        raw = syslog.format_message(alert, hostname=socket.gethostname(), app_name=APP_NAME,
                                    procid=str(os.getpid()), severity=syslog.SEVERITY_WARNING)
        self.store([Reception(raw, "local", address, port)])


