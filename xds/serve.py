"""`xds serve`: the WSGI app under gunicorn, one app instance per worker process.

With tls_certificate set the server speaks HTTPS only, with mutual TLS: ATNA node
authentication (ITI-19). The TLS policy is xds.security.tls.server_context's (TLS 1.2 or newer, a client
certificate the configured CA vouches for), given to gunicorn through its `ssl_context` hook so
that gunicorn's own defaults never decide it. A peer that fails the handshake is refused and
audited (a Security Alert) by the worker class below.

Serving model: no client can hold the server by being idle or slow (README, "Serving and slow
clients"). Each worker is gunicorn's threaded worker (gthread), to which SecureNodeWorker adds
what gunicorn has not:

* the worker's selector thread runs each connection's TLS handshake and reads its request head
  without blocking, within header_timeout of the accept; a request gets one of the worker's
  `threads` only once its head is complete, so idle and slow clients hold no thread;
* the request body and the answer keep a minimum rate (min_body_rate after body_timeout; the
  answer counted in bytes the client has acknowledged); a connection that falls behind is reset;
* one client address gets at most max_threads_per_address threads of a worker at once (its
  other requests wait their turn) and max_connections_per_address connections;
* a graceful close drains what the client still sends through the selector's events (gunicorn's
  blocks the selector thread for up to 2 s);
* a request over worker_timeout has its worker replaced (gunicorn's heartbeat now comes from
  the selector thread, which a long request does not stop);
* workers are replaced after max_requests requests (with jitter), each finishing the requests
  it has in hand first, so that what a worker's heap grew to goes back to the system; the
  master (_Arbiter) starts the successor as soon as a worker says it is being replaced.

The deadlines of a request sit in its connection's socket (_GuardedSocket): gunicorn's request
parser, the request body the application reads and the answer gunicorn writes go through it."""

from __future__ import annotations

import collections
import errno
import fcntl
import gc
import ipaddress
import logging
import os
import selectors
import signal
import socket
import ssl
import struct
import sys
import termios
import threading
import time
from collections.abc import Callable
from functools import partial

from gunicorn import http
from gunicorn import sock as gsock
from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.workers.gthread import TConn, ThreadWorker

from xds import config
from xds.security import tls
from xds.audit.transport import parse_destinations


class ClientTooSlow(TimeoutError):
    """A client missed a deadline of its connection (see _Deadlines)."""


_TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_REFUSED_503 = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
                b"Content-Type: text/plain\r\nContent-Length: 36\r\n\r\ntoo many connections from this host\n")
#: How long a connection may wait for its head when header_timeout is 0 (no limit).
_NO_HEADER_TIMEOUT = 365 * 24 * 3600.0

#: The largest piece of an answer handed to the socket in one send: between two, the deadline
#: is looked at again (it moves on with what the client has taken).
_SEND_STEP = 64 * 1024


class _Deadlines:
    """When a connection's client must have sent, or taken, what. One per connection, used by
    the thread that serves its current request (and by the selector thread between requests).

    Phases: "head" (the TLS handshake and the request line and headers: one fixed deadline),
    "body" (from the end of the head on: the request body may take body_timeout seconds plus
    one second for each min_body_rate bytes received; with min_body_rate 0, body_timeout is the
    longest wait for the next bytes), and None between requests (the connection waits in the
    worker's selector, under gunicorn's keepalive). The response is bounded like the body, from
    its first byte, by the bytes the client has taken: acknowledged, not merely handed to the
    kernel (whose send buffer alone holds megabytes). A limit of 0 is no limit."""

    def __init__(self, header_timeout: float, body_timeout: float, min_rate: float):
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.min_rate = min_rate
        self.phase: str | None = None
        self.expired: str | None = None  # why the connection was cut, once it was
        self.head_bytes = 0
        self._head_deadline = 0.0
        self._read_from = self._read_at = 0.0
        self._read = 0
        self._write_from: float | None = None
        self._written = self._taken = 0
        self._taken_at = 0.0

    def head(self, start: float | None = None) -> None:
        self.phase = "head"
        self.head_bytes = 0
        self._head_deadline = (time.monotonic() if start is None else start) + self.header_timeout
        self._write_from = None

    def body(self) -> None:
        self.phase = "body"
        self._read_from = self._read_at = time.monotonic()
        self._read = 0

    def end(self) -> None:
        self.phase = self._write_from = None

    def read_left(self) -> float | None:
        """Seconds left to read (None: no deadline now)."""
        if self.phase == "head":
            return self._head_deadline - time.monotonic() if self.header_timeout else None
        if self.phase == "body" and self.body_timeout:
            return self._left(self._read_from, self._read, self._read_at)
        return None

    def bounds_writes(self) -> bool:
        """Whether writes have a deadline now (the first asks start the response's clock)."""
        if self.phase is None or not self.body_timeout:
            return False
        if self._write_from is None:
            self._write_from = self._taken_at = time.monotonic()
            self._written = self._taken = 0
        return True

    def write_left(self, unacknowledged: int) -> float:
        """Seconds left to write, the client having taken all but `unacknowledged` of the
        bytes handed to the socket so far (bounds_writes() first)."""
        now = time.monotonic()
        taken = max(self._written - unacknowledged, 0)
        if taken > self._taken:
            self._taken, self._taken_at = taken, now
        return self._left(self._write_from, self._taken, self._taken_at)

    def _left(self, start: float, moved: int, last: float) -> float:
        if self.min_rate:
            return start + self.body_timeout + moved / self.min_rate - time.monotonic()
        return last + self.body_timeout - time.monotonic()  # no rate: the longest wait for progress

    def received(self, count: int) -> None:
        if self.phase == "head":
            self.head_bytes += count
        elif count:
            self._read += count
            self._read_at = time.monotonic()

    def sent(self, count: int) -> None:
        self._written += count

    def expire(self, direction: str) -> ClientTooSlow:
        if direction == "read" and self.phase == "head":
            reason = f"no complete request head within {self.header_timeout:g} s (header_timeout)"
        else:
            what = "request body" if direction == "read" else "response taken"
            reason = (f"{what} slower than {self.min_rate:g} bytes/s after {self.body_timeout:g} s "
                      "(min_body_rate, body_timeout)" if self.min_rate
                      else f"{what}: nothing for {self.body_timeout:g} s (body_timeout)")
        self.expired = self.expired or reason
        return ClientTooSlow(reason)


def _unacknowledged(sock) -> int:
    """Bytes in the socket's send queue that the peer has not acknowledged (Linux SIOCOUTQ);
    0 where that cannot be asked."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except (OSError, ValueError, AttributeError):
        return 0


class _GuardedSocket:
    """A connection's socket (plain or TLS) whose reads and writes keep the connection's
    deadlines; everything else is the socket's own (getpeercert for xds.security.tls, fileno
    for the selector...).

    A request body that misses its deadline reads as ended: the application answers a body
    shorter than announced as the client's fault (a SOAP Sender fault), which it is, and the
    worker logs the real reason and closes the connection without sending that answer. A
    missed head or response deadline raises ClientTooSlow, which the worker turns into a log
    line and a closed connection."""

    __slots__ = ("_sock", "_deadlines", "_timeout")

    def __init__(self, sock, deadlines: _Deadlines):
        self._sock = sock
        self._deadlines = deadlines
        self._timeout = sock.gettimeout()  # what the caller asked for; the deadline may be shorter

    def __getattr__(self, name):
        return getattr(self._sock, name)

    @property
    def raw(self):
        return self._sock

    def settimeout(self, value) -> None:
        self._timeout = value
        self._sock.settimeout(value)

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0
        self._sock.setblocking(flag)

    def gettimeout(self):
        return self._timeout

    def recv(self, size: int, flags: int = 0) -> bytes:
        deadlines = self._deadlines
        if deadlines.read_left() is None or self._timeout == 0.0:
            return self._sock.recv(size, flags)
        try:
            data = self._bounded(self._sock.recv, "read", size, flags)
        except ClientTooSlow:
            if deadlines.phase == "body":
                return b""  # the body ends here (see the class's text)
            raise
        deadlines.received(len(data))
        return data

    def send(self, data, flags: int = 0) -> int:
        if not self._deadlines.bounds_writes() or self._timeout == 0.0:
            return self._sock.send(data, flags)
        count = self._bounded(self._sock.send, "write", data, flags)
        self._deadlines.sent(count)
        return count

    def sendall(self, data, flags: int = 0) -> None:
        if not self._deadlines.bounds_writes() or self._timeout == 0.0:
            return self._sock.sendall(data, flags)
        with memoryview(data) as view, view.cast("B") as rest:
            while rest:
                count = self.send(rest[:_SEND_STEP], flags)
                rest = rest[count:]
        return None

    def _left(self, direction: str) -> float:
        if direction == "read":
            return self._deadlines.read_left()
        return self._deadlines.write_left(_unacknowledged(self._sock))

    def _bounded(self, call, direction: str, data, flags: int):
        own = self._timeout
        while True:
            left = self._left(direction)
            if self._deadlines.expired or left <= 0:
                raise self._deadlines.expire(direction)
            self._sock.settimeout(left if own is None else min(left, own))
            try:
                return call(data, flags) if flags else call(data)
            except TimeoutError:
                if own is not None and own < left:
                    raise  # the caller's own timeout, not a deadline
                # Look again: a client that took bytes meanwhile has moved its deadline on.
            finally:
                self._sock.settimeout(own)


class _Connection(TConn):
    """gunicorn's connection, with what the worker below adds: its deadlines, the request head
    as read so far in the selector, the client's address (as counted per address) and, once a
    thread serves it, the guarded socket. HTTP/1.1 only: HTTP/2 is not offered (gunicorn's
    http_protocols stays "h1")."""

    def __init__(self, cfg, sock, client, server, deadlines: _Deadlines, address: str,
                 release: Callable[[], None], linger: Callable[[socket.socket], None]):
        super().__init__(cfg, sock, client, server)
        self.deadlines = deadlines
        self.address = address
        self.head = bytearray()
        self.handshaken = not cfg.is_ssl
        self._release = release
        self._linger = linger
        self.abort = False  # reset, not closed: see SecureNodeWorker.handle

    @property
    def closed(self) -> bool:
        return self._release is None

    @property
    def raw(self):
        """The plain or TLS socket, under the guard once a thread has served the connection."""
        return self.sock.raw if isinstance(self.sock, _GuardedSocket) else self.sock

    def read_head(self) -> bool:
        """In the worker's selector thread, without blocking: the TLS handshake, then the
        request head. True once the head is complete (or as large as _HEAD_BUFFER, the
        parser's limits say the rest); False while more must come. EOFError when the client
        hung up; an ssl.SSLError is a refused handshake."""
        if not self.handshaken:
            try:
                self.raw.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return False
            self.handshaken = True
        while True:
            try:
                data = self.raw.recv(_HEAD_BUFFER)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return False
            if not data:
                raise EOFError
            searched = max(0, len(self.head) - 3)
            self.head += data
            self.deadlines.received(len(data))
            if self.head.find(b"\r\n\r\n", searched) >= 0 or len(self.head) >= _HEAD_BUFFER:
                return True

    def init(self) -> None:
        """In the request's thread: the guarded socket and the parser, which starts with the
        bytes the selector read."""
        if not self.initialized:
            self.initialized = True
            self.sock = _GuardedSocket(self.sock, self.deadlines)
            self.parser = http.get_parser(self.cfg, self.sock, self.client)
        self.sock.setblocking(True)
        if self.head:
            self.parser.unreader.unread(bytes(self.head))
            self.head.clear()

    def close(self, graceful: bool = False) -> None:
        """Closed at once, or gracefully (RFC 9112 9.6: our end first, then what the client
        still sends is read and dropped for a moment, so that it gets our last answer rather
        than a reset). gunicorn drains in the calling thread, here the selector's, which a
        client that keeps sending would hold for seconds: the worker drains in its selector."""
        release, self._release = self._release, None
        if release is not None:
            release()
        if self.abort:
            _reset(self.raw)
        elif graceful:
            self._linger(self.raw)
        else:
            util.close(self.sock)


#: How long a stopping worker keeps connections that have not sent their request yet.
_STOP_PENDING_LINGER = 2.0

#: A graceful close reads and drops what the client still sends for this long, this much at most.
_LINGER = 2.0
_LINGER_BYTES = 64 * 1024

#: The most of a request head read in the selector; a longer head (up to gunicorn's
#: limit_request_line and limit_request_field_size) is read on by the request's thread.
_HEAD_BUFFER = 64 * 1024


def _address_key(addr) -> str:
    """The client address that connections are counted by: the IPv4 address, or the IPv6 /64
    (one host is given a whole /64; counting single IPv6 addresses would bound nothing)."""
    host = addr[0] if isinstance(addr, tuple) and addr else ""
    if ":" in host:
        try:
            return str(ipaddress.IPv6Network(f"{host}/64", strict=False).network_address) + "/64"
        except ValueError:
            return host
    return host


class SecureNodeWorker(ThreadWorker):
    """gunicorn's threaded worker with the deadlines, the bounds per client address and the
    recycling of the module's text, that audits the TLS handshakes it refuses.

    The selector thread accepts a connection, runs its TLS handshake and reads its request head
    without blocking; only a complete head is handed to a thread (no more than
    max_threads_per_address at once for one client address: the others wait their turn). So an
    idle or slow client holds no thread until its head is in, and a connection whose head is
    not in by header_timeout is closed (murder_pending). The request's thread parses the head,
    runs the application and writes the answer; the body and the answer keep min_body_rate.

    A refused TLS handshake surfaces as an ssl.SSLError in the selector thread and goes to
    handle_error, which audits it - except a bare EOF (the peer hung up before trying), which
    is no authentication attempt. An SSLError later on an established connection lands in
    handle_error too; only one whose handshake never finished is a refused node. A handshake
    that does not finish in time is a slow client: logged, not audited."""

    _own_trail = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        settings = getattr(self.app, "settings", None) or config.Settings()
        self._timeouts = (settings.header_timeout, settings.body_timeout, settings.min_body_rate)
        self._max_connections = settings.max_connections_per_address
        self._max_threads = settings.max_threads_per_address
        self._connections: collections.Counter[str] = collections.Counter()
        self._threads: collections.Counter[str] = collections.Counter()
        self._waiting: dict[str, collections.deque] = {}
        self._refusals = self._timeouts_closed = 0
        self._refusal_logged = self._timeout_logged = 0.0
        self._accept_paused_until = 0.0
        self._lingering: collections.deque = collections.deque()  # (until, socket), in that order
        self._running: dict[int, float] = {}  # thread: when its request began
        self._told_to_stop = self._stopping = False
        self._idle = threading.Condition()

    # -- connections: accepted into the selector, not into a thread ---------------------------------

    def accept(self, listener):
        try:
            client, addr = listener.accept()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of file descriptors: stop accepting for a moment instead of spinning on
                # a listener that stays readable (the backlog waits; other workers accept).
                self.log.error("cannot accept connections: %s", e)
                self._accept_paused_until = time.monotonic() + 0.5
                self.set_accept_enabled(False)
                return
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        accepted = time.monotonic()
        address = _address_key(addr)
        if self._max_connections and self._connections[address] >= self._max_connections:
            self._refuse(client, address)
            return
        self.nr_conns += 1
        self._connections[address] += 1
        deadlines = _Deadlines(*self._timeouts)
        deadlines.head(start=accepted)
        conn = _Connection(self.cfg, client, addr, listener.getsockname(), deadlines, address,
                           partial(self._released, address), self._linger)
        if self.cfg.is_ssl:
            try:
                conn.sock = gsock.ssl_wrap_socket(conn.sock, self.cfg)  # no handshake yet
            except OSError:
                self.nr_conns -= 1
                conn.close()
                return
        self._wait_for_head(conn, accepted)
        self._on_head_readable(conn, conn.sock)  # the client may have sent at once

    def set_accept_enabled(self, enabled):
        if enabled and time.monotonic() < self._accept_paused_until:
            enabled = False
        super().set_accept_enabled(enabled)

    def _wait_for_head(self, conn, since: float) -> None:
        conn.timeout = since + (self._timeouts[0] or _NO_HEADER_TIMEOUT)
        self.pending_conns.append(conn)  # in deadline order: every deadline is now + header_timeout
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_readable, conn))

    def _on_head_readable(self, conn, client) -> None:
        try:
            complete = conn.read_head()
        except ssl.SSLError as e:
            if e.args[0] not in (ssl.SSL_ERROR_EOF, ssl.SSL_ERROR_ZERO_RETURN):
                self.handle_error(None, conn.raw, conn.client, e)  # while the socket can say where
            self._drop(conn)
            return
        except (EOFError, OSError):
            self._drop(conn)
            return
        if complete:
            self.poller.unregister(conn.sock)
            self.pending_conns.remove(conn)
            self.enqueue_req(conn)

    def on_client_socket_readable(self, conn, client):
        """A kept-alive connection's next request: its head is read in the selector too, within
        header_timeout of its first byte."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        now = time.monotonic()
        conn.deadlines.head(start=now)
        self._wait_for_head(conn, now)
        self._on_head_readable(conn, conn.sock)

    def murder_pending(self):
        """Close the connections whose head is not in by header_timeout: a head that began gets
        408 (RFC 9110 15.5.9) if the socket takes it at once. Logged as one line a second.
        (gunicorn calls this about once a second, and while stopping: the worker's clock.)"""
        now = time.monotonic()
        if not self.alive and not self._stopping:
            self._stop_began(now)
        while self.pending_conns and self.pending_conns[0].timeout <= now:
            conn = self.pending_conns.popleft()
            try:
                self.poller.unregister(conn.sock)
            except (OSError, KeyError, ValueError):
                pass
            if conn.head and conn.handshaken:
                try:
                    conn.raw.send(_TIMEOUT_408)
                except (OSError, ValueError):
                    pass
            self.nr_conns -= 1
            conn.close()
            self._timeouts_closed += 1
        while self._lingering and self._lingering[0][0] <= now:
            self._end_linger(self._lingering.popleft()[1])
        self._watch(now)
        if self._timeouts_closed and now - self._timeout_logged >= 1.0:
            self.log.warning("closed %d connection(s) without a complete request head within %g s "
                             "(header_timeout)", self._timeouts_closed, self._timeouts[0])
            self._timeouts_closed, self._timeout_logged = 0, now

    def _linger(self, sock) -> None:
        """A graceful close without blocking (see _Connection.close): FIN now, then what comes
        is read in the selector and dropped, for _LINGER seconds or _LINGER_BYTES at most."""
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
            self.poller.register(sock, selectors.EVENT_READ, partial(self._on_linger_readable, [0]))
        except (OSError, ValueError, KeyError):
            util.close(sock)
            return
        self._lingering.append((time.monotonic() + _LINGER, sock))

    def _on_linger_readable(self, drained: list, sock) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            return
        except OSError:
            data = b""
        drained[0] += len(data)
        if not data or drained[0] > _LINGER_BYTES:
            self._end_linger(sock)

    def _end_linger(self, sock) -> None:
        try:
            self.poller.unregister(sock)
        except (OSError, KeyError, ValueError):
            pass
        util.close(sock)

    def _drop(self, conn) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (OSError, KeyError, ValueError):
            pass
        try:
            self.pending_conns.remove(conn)
        except ValueError:
            pass
        self.nr_conns -= 1
        conn.close()

    def _released(self, address: str) -> None:
        self._connections[address] -= 1
        if self._connections[address] <= 0:
            del self._connections[address]

    def _refuse(self, client: socket.socket, address: str) -> None:
        """One address holds max_connections_per_address connections already: close this one
        (over plain HTTP with a 503 first, if the socket takes it at once)."""
        self._refusals += 1
        try:
            if not self.cfg.is_ssl:
                client.setblocking(False)
                client.send(_REFUSED_503)
        except OSError:
            pass
        finally:
            client.close()
        now = time.monotonic()
        if now - self._refusal_logged >= 1.0:  # one line a second at most, whatever the flood
            self.log.warning("refused %d connection(s): %s has %d open (max_connections_per_address)",
                             self._refusals, address or "a client", self._max_connections)
            self._refusals, self._refusal_logged = 0, now

    # -- threads: a fair share per client address ---------------------------------------------------

    def enqueue_req(self, conn):
        if self._max_threads and self._threads[conn.address] >= self._max_threads:
            self._waiting.setdefault(conn.address, collections.deque()).append(conn)
            return
        self._threads[conn.address] += 1
        super().enqueue_req(conn)

    def finish_request(self, conn, fs):
        address = conn.address
        self._threads[address] -= 1
        if self._threads[address] <= 0:
            del self._threads[address]
        super().finish_request(conn, fs)
        self._tls_pending(conn)
        waiting = self._waiting.get(address)
        while waiting and self._threads[address] < (self._max_threads or sys.maxsize):
            following = waiting.popleft()
            if not following.closed:
                self.enqueue_req(following)
        if waiting is not None and not waiting:
            del self._waiting[address]

    def _tls_pending(self, conn) -> None:
        """A kept-alive TLS connection whose next request is already decrypted (it came in the
        same records as the last one) would never wake the selector: read it now."""
        raw = conn.raw
        if conn.closed or not isinstance(raw, ssl.SSLSocket):
            return
        try:
            if not raw.pending():
                return
            key = self.poller.get_key(conn.sock)
        except (KeyError, ValueError, OSError):
            return
        if getattr(key.data, "func", None) == self.on_client_socket_readable:
            self.on_client_socket_readable(conn, conn.sock)

    # -- a request, in a thread ---------------------------------------------------------------------

    def handle(self, conn):
        with self._idle:
            self._running[threading.get_ident()] = time.monotonic()
        deadlines = conn.deadlines
        req = None
        try:
            conn.init()
            req = next(conn.parser)
            if not req:
                return False
            return self._keepalive_after(conn, self.handle_request(req, conn))
        except ClientTooSlow:
            if deadlines.phase == "head":
                try:
                    conn.raw.setblocking(False)
                    conn.raw.send(_TIMEOUT_408)
                except (OSError, ValueError):
                    pass
            else:
                # A body or an answer that stopped moving: reset the connection, which also
                # drops what the kernel still holds for a reader that takes nothing (megabytes
                # of send buffer that a plain close would keep trying to deliver). Here, at
                # once: a stopping worker may no longer run finish_request (the count of the
                # address's connections is kept there, by the selector thread).
                conn.abort = True
                _reset(conn.raw)
        except http.errors.NoMoreData as e:
            self.log.debug("Ignored premature client disconnection. %s", e)
        except StopIteration as e:
            self.log.debug("Closing connection. %s", e)
        except ssl.SSLError as e:
            if e.args[0] in (ssl.SSL_ERROR_EOF, ssl.SSL_ERROR_ZERO_RETURN):
                self.log.debug("ssl connection closed")
            else:
                self.handle_error(req, conn.sock, conn.client, e)
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
            else:
                self.log.debug("Ignoring socket error %s", e)
        except Exception as e:
            self.handle_error(req, conn.sock, conn.client, e)
        finally:
            if deadlines.expired:
                self.log.warning("closed the connection from %s: %s", _peer(conn.client), deadlines.expired)
            deadlines.end()
            with self._idle:
                del self._running[threading.get_ident()]
                self._idle.notify_all()
        return False

    def handle_request(self, req, conn):
        conn.deadlines.body()
        keepalive = super().handle_request(req, conn)
        return keepalive and not conn.deadlines.expired

    # -- recycling: finish what is in hand ----------------------------------------------------------

    def run(self):
        super().run()
        # gunicorn's threaded worker stops waiting for its requests after graceful_timeout; a
        # worker replaced after max_requests must not leave a document half stored or an audit
        # record unwritten, so it waits for them (telling the arbiter it is alive), each until
        # it has run worker_timeout seconds. The audit trail is closed after this (worker_exit).
        with self._idle:
            while self._running and min(self._running.values()) > time.monotonic() - self.cfg.timeout:
                self.notify()
                self._idle.wait(1.0)
            stuck = len(self._running)
        if stuck:
            # A thread cannot be stopped, and the interpreter would wait for it at exit: the
            # process ends here, as gunicorn's sync worker is ended after worker_timeout (what
            # the request left half done is what a crash leaves: recovered at the next start).
            self.log.error("%d request(s) still running after worker_timeout (%d s): the worker exits without them",
                           stuck, self.cfg.timeout)
            try:
                self.cfg.worker_exit(None, self)
            finally:
                os._exit(1)

    def handle_exit(self, sig, frame):
        self._told_to_stop = True  # by the arbiter (SIGTERM): stopping or reloading, no successor
        super().handle_exit(sig, frame)

    def handle_quit(self, sig, frame):
        self._told_to_stop = True
        super().handle_quit(sig, frame)

    def _stop_began(self, now: float) -> None:
        """The worker has stopped taking connections. Replaced (not told to stop by the
        arbiter): it says so, and the arbiter starts its successor now (_Arbiter). Connections
        that sent nothing yet get what gunicorn gives kept-alive ones: a moment for a request
        already on its way."""
        self._stopping = True
        if not self._told_to_stop:
            try:
                os.ftruncate(self.tmp.fileno(), 1)
            except OSError:
                pass
        for conn in self.pending_conns:
            conn.timeout = min(conn.timeout, now + _STOP_PENDING_LINGER)
        if not self._told_to_stop:
            self._give_back_memory()

    def _give_back_memory(self) -> None:
        """A replaced worker runs beside its successor until its last requests end (a slow
        client's can take its deadline): meanwhile it keeps only what they need. The database
        pool's idle connections go (SQLite keeps a page cache in each; those in use close when
        their request is done) and the C heap returns its free pages."""
        engine = getattr(self.wsgi, "engine", None)
        try:
            if engine is not None:
                engine.dispose()
            gc.collect()
            if _malloc_trim is not None:
                _malloc_trim(0)
        except Exception:  # only memory: never a reason to fail a stop
            self.log.exception("could not release memory while stopping")

    def _watch(self, now: float) -> None:
        """A request that has run worker_timeout seconds has its worker replaced: the worker
        stops taking connections, finishes its other requests and exits (run)."""
        with self._idle:
            oldest = min(self._running.values(), default=now)
        if self.alive and now - oldest > self.cfg.timeout:
            self.log.error("a request has run over worker_timeout (%d s): this worker is replaced", self.cfg.timeout)
            self.alive = False

    # -- refused TLS handshakes ---------------------------------------------------------------------

    def handle_error(self, req, client, addr, exc):
        if isinstance(exc, ssl.SSLError) and not tls.handshake_done(client):
            self._refused(client, addr, exc)
            # Nothing can be said to a peer without a TLS session (gunicorn would try to write
            # a 403 into it); the connection is closed.
            return
        super().handle_error(req, client, addr, exc)

    def _refused(self, client, addr, exc: ssl.SSLError) -> None:
        reason = tls.refusal_reason(exc)
        peer = addr[0] if addr else ""
        self.log.warning("refused TLS connection from %s: %s", peer or "an unknown peer", reason)
        try:
            from xds.audit import events

            trail = self._audit_trail()
            ctx = events.TransactionContext(
                client_address=peer, endpoint_url=_endpoint_url(client, self.cfg),
                # EventOutcomeIndicator 4, minor failure (DICOM PS3.15 A.5.3.11 gives "invalid
                # password with first retry" as its example): one connection is refused, the
                # node is not locked out and may come back with a good certificate at once.
                # 8 and 12 say an account or a service was stopped, which did not happen.
                outcome=events.EventOutcome.MINOR_FAILURE, outcome_description=reason)
            trail.record(events.security_alert(ctx, trail.source, reason=reason), ctx.outcome)
        except Exception:  # auditing must not take the worker down; the refusal stands
            self.log.exception("could not audit the refused TLS connection from %s", peer)

    def _audit_trail(self):
        """The application's trail (xds.app.Server.audit); an application without one (any
        other WSGI app under this worker) gets a trail of the worker's own, from the settings."""
        trail = getattr(self.wsgi, "audit", None)
        if trail is not None:
            return trail
        if self._own_trail is None:
            from xds.audit.trail import AuditTrail

            self._own_trail = AuditTrail.from_settings(self.app.settings).start()
        return self._own_trail


def _endpoint_url(client, cfg) -> str:
    """This node's address as the peer reached it (the connection's local end)."""
    try:
        host, port = client.getsockname()[:2]
    except (OSError, ValueError):
        host, port = "localhost", ""
    host = f"[{host}]" if ":" in str(host) else host
    return f"https://{host}:{port}" if port else f"https://{host}"


try:  # glibc: hand the free pages of the C heap back to the system
    import ctypes

    _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):
    _malloc_trim = None


def _reset(sock) -> None:
    """Close with a reset (SO_LINGER 0): what the kernel still holds for the peer is dropped."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, ValueError):
        pass
    util.close(sock)


def _peer(client) -> str:
    return (client[0] if isinstance(client, tuple) and client else "") or "an unknown peer"




def _ssl_context_hook(settings: config.Settings) -> Callable:
    contexts: dict[int, ssl.SSLContext] = {}
    lock = threading.Lock()

    def ssl_context(conf, default_ssl_context_factory):
        # gunicorn asks on every connection: build the context once per worker process (its
        # threads share it). Per process rather than once for all, so that the workers a
        # SIGHUP starts read renewed certificate files.
        pid = os.getpid()
        context = contexts.get(pid)
        if context is None:
            with lock:
                context = contexts.get(pid)
                if context is None:
                    contexts.clear()
                    context = contexts[pid] = tls.server_context(settings)
        return context

    return ssl_context


class _Gunicorn(BaseApplication):
    def __init__(self, settings: config.Settings, options: dict, application: Callable | None = None):
        self.settings = settings
        self.options = options
        self.application = application
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        # Called in each worker after the fork: every worker opens its own database pool.
        if self.application is not None:
            return self.application()
        from xds.app import create_app

        return create_app(self.settings)

    def run(self):
        try:
            _Arbiter(self).run()
        except RuntimeError as e:
            print(f"\nError: {e}\n", file=sys.stderr)
            raise SystemExit(1) from None


def _retiring(worker) -> bool:
    """Whether a worker has said it is being replaced (SecureNodeWorker._retire)."""
    try:
        return os.fstat(worker.tmp.fileno()).st_size > 0
    except (OSError, ValueError):
        return False


class _Arbiter(Arbiter):
    """gunicorn's master, which starts a worker's successor as soon as the worker says it is
    being replaced (max_requests, or a request over worker_timeout), not when it has exited: a
    worker finishing a long upload, or two workers replaced together, must not leave the
    listening socket without anyone to accept."""

    def manage_workers(self):
        active = sorted(((pid, w) for pid, w in self.WORKERS.items() if not _retiring(w)), key=lambda w: w[1].age)
        for _ in range(self.num_workers - len(active)):
            self.spawn_worker()
        while len(active) > self.num_workers:
            pid, _ = active.pop(0)
            self.kill_worker(pid, signal.SIGTERM)


def _node_hooks(settings: config.Settings, url: str) -> dict:
    """gunicorn server hooks that audit the application starting and stopping (in the master
    process: once per server, not per worker), and stop each worker's audit trail cleanly. The
    master records into the spool and closes it; a worker delivers (a stop is delivered at the
    next start if no worker is left)."""
    from xds.audit import node
    from xds.audit.trail import AuditTrail

    def record(what) -> None:
        try:
            trail = AuditTrail.from_settings(settings)
            try:
                what(trail)
            finally:
                trail.close()  # fsynced, and closed before the fork: no worker inherits it
        except Exception:
            logging.getLogger("xds.audit").exception("AUDIT RECORD LOST: the server's start or stop")

    def worker_exit(arbiter, worker) -> None:
        # A worker that stops lets its senders finish what they have in hand: killed between
        # sending and moving the cursor (or settling a notification), they would send it again.
        # The PIX notifier first: it records each notification in the audit trail.
        app = getattr(worker, "wsgi", None)
        for sender in (getattr(app, "pix_notifier", None), getattr(app, "audit", None)):
            if sender is not None:
                sender.close()

    return {"when_ready": lambda arbiter: record(lambda trail: node.started(trail, settings, url)),
            "worker_exit": worker_exit,
            "on_exit": lambda arbiter: record(node.stopped)}


def options(settings: config.Settings, host: str | None = None, port: int | None = None,
            workers: int | None = None) -> dict:
    """gunicorn's settings for `xds serve`."""
    bind = f"{host or settings.host}:{port or settings.port}"
    result = {
        "bind": bind,
        "workers": workers or settings.workers,
        "worker_class": SecureNodeWorker,
        "threads": settings.threads,
        "max_requests": settings.max_requests,
        "max_requests_jitter": settings.max_requests_jitter,
        "timeout": settings.worker_timeout,
        "accesslog": "-",
        "errorlog": "-",
        **_node_hooks(settings, f"{'https' if settings.tls_certificate else 'http'}://{bind}/"),
    }
    if settings.tls_certificate:
        # certfile is what turns gunicorn's TLS on; the rest says the same as the hook, so
        # that gunicorn's printed configuration is true, but the hook's context is what is used.
        result.update({
            "certfile": settings.tls_certificate,
            "keyfile": settings.tls_private_key or None,
            "ca_certs": settings.tls_ca_certificates or None,
            "cert_reqs": ssl.CERT_REQUIRED,
            "ssl_context": _ssl_context_hook(settings),
        })
    return result


def serve(settings: config.Settings, host: str | None = None, port: int | None = None,
          workers: int | None = None, application: Callable | None = None) -> None:
    """Run gunicorn until it is stopped. `application`: what each worker serves, made in the
    worker (default: xds.app.create_app(settings))."""
    from xds.consent.access import consent_database

    try:
        parse_destinations(settings.audit_destinations)
        consent = consent_database(settings)  # where ITI-43 reads consent; refused when nowhere
    except ValueError as exc:
        print(f"xds serve: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if consent:
        print(f"xds serve: {consent}", file=sys.stderr)
    if settings.tls_certificate:
        try:  # here, once, so that a bad file stops the start instead of every connection
            tls.server_context(settings)
        except (OSError, ValueError) as exc:
            print(f"xds serve: cannot use the TLS settings: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    _Gunicorn(settings, options(settings, host, port, workers), application).run()
