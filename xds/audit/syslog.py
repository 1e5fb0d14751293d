"""Syslog as ATNA uses it (ITI TF-2 3.20.4.1): RFC 5424 messages carrying one audit message
each, framed by octet counting on streams (RFC 5425 over TLS, RFC 6587 over plain TCP) and one
message per datagram over UDP (RFC 5426). Both directions live here: the audit trail formats
and frames, the Audit Record Repository parses.

ITI-20 fixes the header: facility 10 (security/authorization), severity 5 (notice; 4, warning,
for a failed outcome), MSGID "IHE+RFC-3881", and the audit message as the UTF-8 MSG, which RFC
5424 6.4 marks with a byte order mark. A receiver must take any PRI and a MSG with or without
the BOM, and never lose a message it cannot parse: parse() says what is wrong instead.
"""

from __future__ import annotations

import datetime as _dt
import functools
import re
from dataclasses import dataclass

FACILITY_AUTH = 10           # security/authorization messages (RFC 5424 table 1)
SEVERITY_NOTICE = 5
SEVERITY_WARNING = 4
MSGID = "IHE+RFC-3881"
BOM = b"\xef\xbb\xbf"
NIL = "-"

# RFC 5424 6.2: HOSTNAME at most 255, APP-NAME 48, PROCID 128 printable US-ASCII characters.
_LIMITS = {"hostname": 255, "app_name": 48, "procid": 128, "msgid": 32}


def _field(value: str, name: str) -> str:
    printable = "".join(c for c in (value or "") if "!" <= c <= "~")
    return printable[:_LIMITS[name]] or NIL


def _timestamp(time: _dt.datetime) -> str:
    """RFC 5424 6.2.3 TIMESTAMP: RFC 3339 with at most microseconds, UTC as Z."""
    time = time.astimezone(_dt.UTC) if time.tzinfo else time.replace(tzinfo=_dt.UTC)
    return time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@functools.lru_cache(maxsize=64)  # constant in a process: its host name, application, pid
def _header_rest(hostname: str, app_name: str, procid: str) -> bytes:
    """The header after the TIMESTAMP, STRUCTURED-DATA (none) and the BOM that opens MSG."""
    return (f" {_field(hostname, 'hostname')} {_field(app_name, 'app_name')} "
            f"{_field(procid, 'procid')} {MSGID} {NIL} ").encode("ascii") + BOM


def format_message(message: bytes, *, hostname: str, app_name: str, procid: str,
                   time: _dt.datetime | None = None, severity: int = SEVERITY_NOTICE) -> bytes:
    """One SYSLOG-MSG with `message` (UTF-8 XML) as its MSG; `time` defaults to now."""
    stamp = _timestamp(time or _dt.datetime.now(_dt.UTC)).encode("ascii")
    return b"".join((b"<%d>1 " % (FACILITY_AUTH * 8 + severity), stamp,
                     _header_rest(hostname, app_name, procid), message))


def octet_counted(message: bytes) -> bytes:
    """RFC 5425 4.3 / RFC 6587 3.4.1 framing: MSG-LEN SP SYSLOG-MSG."""
    return b"%d %s" % (len(message), message)


class FrameError(ValueError):
    """A stream that cannot be framed: it is not octet counting (or not syslog at all).
    `messages` are the whole messages the failing feed() had split off before the break,
    `rest` the bytes from the break on: a receiver stores both rather than lose them."""

    def __init__(self, reason: str, messages: list[bytes] | None = None, rest: bytes = b""):
        super().__init__(reason)
        self.messages = messages or []
        self.rest = rest


class OctetCountingReader:
    """Splits a received stream into SYSLOG-MSGs: feed() bytes as they come, take the
    complete messages it returns. A frame longer than max_length is an error, so a peer
    cannot make the receiver buffer without bound."""

    def __init__(self, max_length: int = 1024 * 1024):
        self.max_length = max_length
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        try:
            return self._split(messages)
        except FrameError as exc:
            exc.messages, exc.rest = messages, bytes(self._buffer)
            self._buffer.clear()
            raise

    def _split(self, messages: list[bytes]) -> list[bytes]:
        while True:
            space = self._buffer.find(b" ", 0, 12)
            if space < 0:
                if len(self._buffer) >= 12 or (self._buffer and not self._buffer[:1].isdigit()):
                    raise FrameError(f"not octet-counting framing: {bytes(self._buffer[:20])!r}")
                return messages
            digits = bytes(self._buffer[:space])
            if not digits.isdigit() or digits.startswith(b"0"):
                raise FrameError(f"bad MSG-LEN {digits[:20]!r}")
            length = int(digits)
            if length > self.max_length:
                raise FrameError(f"message of {length} octets, more than the {self.max_length} accepted")
            end = space + 1 + length
            if len(self._buffer) < end:
                return messages
            messages.append(bytes(self._buffer[space + 1:end]))
            del self._buffer[:end]

    @property
    def unread(self) -> bytes:
        """Octets received that do not make a whole message yet."""
        return bytes(self._buffer)


@dataclass(frozen=True)
class SyslogMessage:
    facility: int
    severity: int
    version: int
    timestamp: _dt.datetime | None
    hostname: str | None
    app_name: str | None
    procid: str | None
    msgid: str | None
    structured_data: str | None
    msg: bytes  # without the BOM


_HEADER = re.compile(
    rb"<(?P<pri>\d{1,3})>(?P<version>[1-9]\d{0,2}) (?P<timestamp>\S+) (?P<hostname>\S+) "
    rb"(?P<app_name>\S+) (?P<procid>\S+) (?P<msgid>\S+) ")
_SD_ELEMENT = re.compile(rb'\[[^ \]=\"]+(?: [^ \]=\"]+="(?:[^"\\\]]|\\.)*")*\]')


def _nil(value: bytes) -> str | None:
    text = value.decode("ascii", "replace")
    return None if text == NIL else text


def _parse_time(value: bytes) -> _dt.datetime | None:
    if value == b"-":
        return None
    text = value.decode("ascii").replace("Z", "+00:00")
    time = _dt.datetime.fromisoformat(text)
    if time.tzinfo is None:
        raise ValueError("TIMESTAMP without a time offset")
    return time


def parse(data: bytes) -> SyslogMessage:
    """An RFC 5424 SYSLOG-MSG; ValueError names what does not conform."""
    match = _HEADER.match(data)
    if match is None:
        raise ValueError("not an RFC 5424 header (PRI VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID)")
    pri = int(match["pri"])
    if pri > 191:
        raise ValueError(f"PRI {pri} is above 191")
    try:
        timestamp = _parse_time(match["timestamp"])
    except ValueError as exc:
        raise ValueError(f"bad TIMESTAMP {match['timestamp'][:40]!r}: {exc}") from None
    rest = data[match.end():]
    if rest.startswith(b"-"):
        structured, rest = None, rest[1:]
    else:
        end = 0
        while (element := _SD_ELEMENT.match(rest, end)) is not None:
            end = element.end()
        if end == 0:
            raise ValueError("STRUCTURED-DATA is neither '-' nor SD-ELEMENTs")
        structured, rest = rest[:end].decode("utf-8", "replace"), rest[end:]
    if rest and not rest.startswith(b" "):
        raise ValueError("no space between STRUCTURED-DATA and MSG")
    msg = rest[1:]
    if msg.startswith(BOM):
        msg = msg[len(BOM):]
    return SyslogMessage(
        facility=pri // 8, severity=pri % 8, version=int(match["version"]), timestamp=timestamp,
        hostname=_nil(match["hostname"]), app_name=_nil(match["app_name"]),
        procid=_nil(match["procid"]), msgid=_nil(match["msgid"]), structured_data=structured,
        msg=msg)
