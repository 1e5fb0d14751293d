"""The connections audit records leave by (ITI-20): syslog over TLS (RFC 5425), over plain
TCP (RFC 6587) and over UDP (RFC 5426), one Destination per configured URL.

    tls://arr.example:6514     octet counting over mutual TLS (this node's certificate)
    tcp://arr.example:601      octet counting, no encryption (a local relay only)
    udp://arr.example:514      one message per datagram; nothing tells whether it arrived

A stream destination connects when it first has something to send and stays connected. Syslog
has no acknowledgement, so a message written into a connection the peer has just closed would
be lost without an error; before each write the connection is checked for the peer's close
(an Audit Record Repository never sends us data, so anything readable means the end), and a
closed one is opened anew before the messages go. What remains is a peer that dies between
that check and its reading the message: RFC 5425 leaves that window open for every sender.
"""

from __future__ import annotations

import select
import socket
import ssl
from urllib.parse import urlsplit

from xds.audit.syslog import octet_counted
from xds.config import Settings
from xds.security.tls import client_context

CONNECT_TIMEOUT = 10.0
POST_HANDSHAKE_WAIT = 0.3  # seconds to wait for a server's refusal after the handshake
UDP_MAX = 65507  # the largest IPv4 UDP payload; RFC 5426 3.2 lets larger messages be dropped


class MessageTooLarge(ValueError):
    """A message that this destination can never carry (a datagram over the UDP limit)."""


class SendError(OSError):
    """A batch that failed part way: the first `sent` messages are gone, the rest are not."""

    def __init__(self, cause: OSError, sent: int):
        super().__init__(*cause.args)
        self.cause, self.sent = cause, sent

    def __str__(self) -> str:
        return str(self.cause)


class Destination:
    url: str

    def send(self, message: bytes) -> None:
        """Send one SYSLOG-MSG; OSError when the peer cannot be reached."""
        raise NotImplementedError

    def send_batch(self, messages: list[bytes]) -> list[tuple[int, MessageTooLarge]]:
        """Send `messages` in order; SendError says how many went before a failure. Returns
        the messages this destination can never carry (index, reason): skipped, not sent."""
        skipped = []
        for index, message in enumerate(messages):
            try:
                self.send(message)
            except MessageTooLarge as exc:
                skipped.append((index, exc))
            except OSError as exc:
                raise SendError(exc, index) from exc
        return skipped

    def close(self) -> None:
        pass


class StreamDestination(Destination):
    def __init__(self, url: str, host: str, port: int, context: ssl.SSLContext | None):
        self.url, self.host, self.port, self.context = url, host, port, context
        self._socket: socket.socket | None = None

    def send(self, message: bytes) -> None:
        self._write(octet_counted(message))

    def send_batch(self, messages: list[bytes]) -> list[tuple[int, MessageTooLarge]]:
        """One write for the whole batch (octet counting frames each message): a failure
        counts none of it as sent, so a broken connection makes a batch go again whole."""
        try:
            self._write(b"".join(octet_counted(message) for message in messages))
        except OSError as exc:
            raise SendError(exc, 0) from exc
        return []

    def _write(self, data: bytes) -> None:
        if self._socket is not None and self._peer_closed(self._socket):
            self.close()
        try:
            if self._socket is None:
                self._socket = self._connect()
            self._socket.sendall(data)
        except OSError:
            self.close()
            raise

    def _connect(self) -> socket.socket:
        raw = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        try:
            if self.context is None:
                return raw
            sock = self.context.wrap_socket(raw, server_hostname=self.host)
            # The handshake may end before the server has judged our certificate: TLS 1.3
            # hands it over after the client's side is done, and some receivers (rsyslog's
            # GnuTLS driver) check it only once the handshake is over, whatever the version.
            # A refusal is then a close a moment later: wait for it here, so that it fails
            # this connection and not, silently, the messages that would be sent on it.
            if self._peer_closed(sock, wait=POST_HANDSHAKE_WAIT):
                raise ConnectionRefusedError(f"{self.url} closed the connection after the TLS handshake "
                                             f"(our certificate refused?)")
            return sock
        except BaseException:
            raw.close()
            raise

    @staticmethod
    def _peer_closed(sock: socket.socket, wait: float = 0.0) -> bool:
        """Whether the peer has closed (or reset, or sent a TLS alert on) the connection."""
        try:
            readable, _, _ = select.select([sock], [], [], wait)
        except (OSError, ValueError):
            return True
        if not readable and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            return False
        sock.setblocking(False)
        try:
            while True:  # TLS 1.3 session tickets are readable and carry no data: read past them
                if not sock.recv(4096):
                    return True
        except (ssl.SSLWantReadError, BlockingIOError):
            return False
        except OSError:  # ssl.SSLError included: a TLS alert
            return True
        finally:
            try:
                sock.settimeout(CONNECT_TIMEOUT)
            except OSError:
                pass

    def close(self) -> None:
        """Close gracefully: a socket closed with unread data in it (a TLS 1.3 session ticket
        the peer sent) is reset, not closed, and a reset makes the peer's kernel drop the
        messages its receiver has not read yet. So read what is there, then say we are done."""
        sock, self._socket = self._socket, None
        if sock is None:
            return
        try:
            if not self._peer_closed(sock):
                sock.shutdown(socket.SHUT_WR)
                self._peer_closed(sock, wait=1.0)  # the peer's close, or a second of grace
        except OSError:
            pass
        finally:
            sock.close()


class UdpDestination(Destination):
    def __init__(self, url: str, host: str, port: int):
        self.url, self.address = url, (host, port)
        family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
        self._socket = socket.socket(family, socket.SOCK_DGRAM)

    def send(self, message: bytes) -> None:
        if len(message) > UDP_MAX:
            raise MessageTooLarge(f"{len(message)} octets do not fit in one UDP datagram")
        self._socket.sendto(message, self.address)

    def close(self) -> None:
        self._socket.close()


def parse_destinations(value: str) -> list[str]:
    """The URLs of a comma-separated audit_destinations setting, checked."""
    urls = [item.strip() for item in value.split(",") if item.strip()]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("tls", "tcp", "udp") or not parts.hostname or not parts.port:
            raise ValueError(f"audit destination {url!r}: expected tls://, tcp:// or udp://host:port")
    return urls


def connect(url: str, settings: Settings) -> Destination:
    """The Destination for one URL; stream destinations connect on their first message."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port
    if parts.scheme == "udp":
        return UdpDestination(url, host, port)
    if parts.scheme == "tcp":
        return StreamDestination(url, host, port, None)
    if parts.scheme == "tls":
        return StreamDestination(url, host, port, client_context(settings))
    raise ValueError(f"audit destination {url!r}: expected tls://, tcp:// or udp://host:port")
