"""A real syslog peer for the audit tests: a private rsyslogd (Debian's rsyslog with
rsyslog-gnutls), receiving RFC 5425 syslog over mutual TLS and RFC 5426 syslog over UDP on
free ports of 127.0.0.1, and writing every message it receives, exactly as received, to a file.

It is not the system's rsyslogd: its own configuration, pid file, work directory and log, all
in one folder; it loads no imuxsock or imklog, so it never takes /dev/log or the kernel log.

    with Rsyslog(tmp_path) as peer:          # or the `rsyslog` fixture (rsyslog_fixture)
        ...send to tls://127.0.0.1:{peer.tls_port} with a certificate from peer.ca...
        peer.wait_for(1)                     # -> [b"<85>1 2026-... IHE+RFC-3881 - \\xef\\xbb\\xbf<?xml..."]
        peer.stop(); peer.start()            # down and up again, on the same ports

The configuration, and why:
- imtcp with the gtls stream driver in TLS-only mode (StreamDriver.Mode 1) and AuthMode
  x509/certvalid: a client must present a certificate our CA issued (the name is not checked,
  as an ATNA Audit Record Repository takes any node of the domain). Octet-counted framing
  (RFC 5425 4.3) is on by default in imtcp.
- imudp on another port, for RFC 5426.
- Both inputs feed the ruleset "received", whose only action writes each message's rawmsg (the
  SYSLOG-MSG as it came, without the octet count) as one JSON string per line. JSON because an
  audit message may hold line feeds (lxml writes one after the XML declaration); for the same
  reason parser.escapeControlCharactersOnReceive is off, else rsyslog would turn them into
  "#012". maxMessageSize is raised from the default 8 KiB: audit messages of queries are longer.
- The file is written synchronously and flushed at the end of every batch (asyncWriting off,
  flushOnTXEnd on), so a message is in the file soon after it arrives.
- rsyslogd's own messages (start, stop, refused TLS peers) go to rsyslogd.log next to it, which
  is what to read when a test fails; processInternalMessages keeps them there (by default this
  rsyslog hands them to the system's syslog, the machine's log, through /dev/log).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.certs import CertificateAuthority, Node

_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])
_MODULE_DIRS = ("/usr/lib/*/rsyslog", "/usr/lib/rsyslog", "/usr/lib64/rsyslog", "/lib/*/rsyslog",
                "/usr/local/lib/rsyslog")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


def rsyslogd_path() -> str | None:
    return shutil.which("rsyslogd", path=_SEARCH_PATH)


def missing() -> str | None:
    """Why a private rsyslogd with TLS cannot run here, or None when it can."""
    if rsyslogd_path() is None:
        return "rsyslogd is not installed (Debian: apt-get install rsyslog rsyslog-gnutls; .ci/run does it as root)"
    for pattern in _MODULE_DIRS:
        if glob.glob(os.path.join(pattern, "lmnsd_gtls.so")):
            return None
    return "rsyslog's GnuTLS driver lmnsd_gtls is not installed (Debian: apt-get install rsyslog-gnutls)"


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _quote(value: object) -> str:
    return json.dumps(str(value))  # a RainerScript string constant: "..." with \" and \\ escapes


class Rsyslog:
    """A private rsyslogd in `folder`: TLS (mutual, certificates from `ca`) and UDP inputs.
    `tls_priority` is a GnuTLS priority string for the TLS input, e.g. "NORMAL:-VERS-TLS1.3"
    for a peer that speaks TLS 1.2 at most."""

    def __init__(self, folder: Path, ca: CertificateAuthority | None = None, *,
                 tls_priority: str | None = None):
        reason = missing()
        if reason:
            raise RuntimeError(reason)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ca = ca or CertificateAuthority(self.folder / "certs", "rsyslog-test-ca")
        # A name of its own: peers may share a CA (and its folder), each keeps its own key.
        self.server: Node = self.ca.issue(f"rsyslog-arr-{uuid.uuid4().hex[:12]}")
        self.tls_priority = tls_priority
        self.tls_port = free_port(socket.SOCK_STREAM)
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.output = self.folder / "received.jsonl"
        self.log = self.folder / "rsyslogd.log"
        self.config = self.folder / "rsyslog.conf"
        self.pidfile = self.folder / "rsyslogd.pid"
        self.workdir = self.folder / "work"
        self.workdir.mkdir(exist_ok=True)
        self.config.write_text(self._config())
        self._process: subprocess.Popen | None = None

    def _config(self) -> str:
        priority = f" gnutlsPriorityString={_quote(self.tls_priority)}" if self.tls_priority else ""
        return f"""\
global(
  workDirectory={_quote(self.workdir)}
  maxMessageSize="1m"
  processInternalMessages="on"
  parser.escapeControlCharactersOnReceive="off"
  defaultNetstreamDriverCAFile={_quote(self.ca.certificate)}
  defaultNetstreamDriverCertFile={_quote(self.server.certificate)}
  defaultNetstreamDriverKeyFile={_quote(self.server.private_key)}
)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1"
       streamDriver.authMode="x509/certvalid")
module(load="imudp")

template(name="rawjson" type="list") {{
  constant(value="\\"")
  property(name="rawmsg" format="json")
  constant(value="\\"\\n")
}}

ruleset(name="received") {{
  action(type="omfile" file={_quote(self.output)} template="rawjson"
         asyncWriting="off" flushOnTXEnd="on")
}}

input(type="imtcp" address="127.0.0.1" port="{self.tls_port}" ruleset="received"{priority})
input(type="imudp" address="127.0.0.1" port="{self.udp_port}" ruleset="received")

# rsyslogd's own messages (startup, refused peers): for reading when a test fails.
*.* action(type="omfile" file={_quote(self.log)})
"""

    # --- running ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start rsyslogd (again) on the same ports, and wait until both inputs listen."""
        if self.running:
            return
        self.pidfile.unlink(missing_ok=True)
        env = {key: value for key, value in os.environ.items()
               if key not in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET")}
        with open(self.folder / "rsyslogd.stderr", "ab") as stderr:
            self._process = subprocess.Popen(
                [rsyslogd_path(), "-n", "-f", str(self.config), "-i", str(self.pidfile)],
                stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, env=env,
                cwd=self.folder, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not (self._tcp_listens() and self._udp_bound()):
            if self._process.poll() is not None:
                raise RuntimeError(f"rsyslogd exited with {self._process.returncode}:\n{self.diagnostics()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rsyslogd did not listen within {START_TIMEOUT} s:\n{self.diagnostics()}")
            time.sleep(0.05)

    def _tcp_listens(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.tls_port), timeout=1):
                return True
        except OSError:
            return False

    def _udp_bound(self) -> bool:
        """Whether a socket is bound to the UDP port. Read from /proc/net/udp on Linux: a probe
        bind() could take the port from rsyslogd at the moment it binds."""
        try:
            table = Path("/proc/net/udp").read_text()
        except OSError:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind(("127.0.0.1", self.udp_port))
                except OSError:
                    return True
                return False
        local = f"0100007F:{self.udp_port:04X}"  # 127.0.0.1, as the kernel writes it
        return any(line.split()[1] == local for line in table.splitlines()[1:] if line.strip())

    def stop(self) -> None:
        """Terminate rsyslogd and wait until it has gone (and its ports are closed)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Rsyslog:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- what arrived ----------------------------------------------------------------------

    def messages(self) -> list[bytes]:
        """Every SYSLOG-MSG received so far, as it came (without the octet count), in order."""
        try:
            data = self.output.read_bytes()
        except FileNotFoundError:
            return []
        lines = data.split(b"\n")[:-1]  # the last piece is empty or a line being written
        # rsyslog's JSON escaping escapes control characters, '"' and '\\' only: other bytes
        # are the message's own, valid UTF-8 or not.
        return [json.loads(line.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
                for line in lines]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[bytes]:
        """The messages once at least `count` have arrived; AssertionError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages()
            if len(messages) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(messages) >= count, (
            f"rsyslog received {len(messages)} messages, not {count}, within {timeout} s\n"
            f"{self.diagnostics()}")
        return messages

    def diagnostics(self) -> str:
        """rsyslogd's own log (or its stderr, where it writes before reading its
        configuration), for failure messages."""
        for path in (self.log, self.folder / "rsyslogd.stderr"):
            with contextlib.suppress(FileNotFoundError):
                text = path.read_text(errors="replace").strip()
                if text:
                    return f"--- {path}\n{text[-4000:]}"
        return "(rsyslogd wrote nothing)"


@pytest.fixture(name="rsyslog")
def rsyslog_fixture(tmp_path: Path) -> Iterator[Rsyslog]:
    """`rsyslog`: a running private rsyslogd (see Rsyslog); the test is skipped when rsyslog or
    its GnuTLS driver is not installed. A test module takes it with
    ``from tests.rsyslog import rsyslog_fixture  # noqa: F401``."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    peer = Rsyslog(tmp_path / "rsyslog")
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()
