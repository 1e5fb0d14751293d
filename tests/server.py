"""A real `xds serve` for integration tests: gunicorn on a free loopback port."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

XDS = [sys.executable, "-m", "xds.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(env: dict, log_path: Path, *, workers: int = 2, new_session: bool = False,
          context: ssl.SSLContext | None = None) -> tuple[subprocess.Popen, str]:
    """Start `xds serve` with `env` and wait until GET /health answers. Returns the process
    and the base URL; on failure the server's log is the error. `new_session` puts the server
    and its workers in a process group of their own, so a test can kill them all at once.
    `context`: the server speaks HTTPS (env has XDS_TLS_*); /health is asked with this client
    context and the base URL is https://."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*XDS, "serve", "--port", str(port), "--workers", str(workers)], env=env,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=new_session)
    base = f"{'https' if context else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(base + "/health", timeout=1, context=context).read()
            return process, base
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(log_path.read_text()) from None
            time.sleep(0.1)
