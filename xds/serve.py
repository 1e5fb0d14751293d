"""`xds serve`: the WSGI app under gunicorn, one app instance per worker process.

With tls_certificate set the server speaks HTTPS only, with mutual TLS: ATNA node
authentication (ITI-19). The TLS policy is xds.security.tls.server_context's (TLS 1.2 or newer, a client
certificate the configured CA vouches for), given to gunicorn through its `ssl_context` hook so
that gunicorn's own defaults never decide it. A peer that fails the handshake is refused and
audited (a Security Alert) by the worker class below."""

from __future__ import annotations

import logging
import os
import ssl
import sys
from collections.abc import Callable

from gunicorn.app.base import BaseApplication
from gunicorn.workers.sync import SyncWorker

from xds import config
from xds.security import tls
from xds.audit.transport import parse_destinations


class SecureNodeWorker(SyncWorker):
    """gunicorn's sync worker that audits the TLS handshakes it refuses.

    Where a refusal surfaces: gunicorn wraps each accepted socket without a handshake
    (do_handshake_on_connect is off), so the handshake runs on the request parser's first read,
    inside SyncWorker.handle, and its ssl.SSLError goes to handle_error - except a bare EOF (the
    peer hung up before trying), which gunicorn drops and which is no authentication attempt.
    An SSLError later on an established connection lands in handle_error too; only one whose
    handshake never finished is a refused node."""

    _own_trail = None

    def handle_error(self, req, client, addr, exc):
        if isinstance(exc, ssl.SSLError) and not tls.handshake_done(client):
            self._refused(client, addr, exc)
            # Nothing can be said to a peer without a TLS session (gunicorn would try to write
            # a 403 into it); handle() closes the connection.
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


def _ssl_context_hook(settings: config.Settings) -> Callable:
    contexts: dict[int, ssl.SSLContext] = {}

    def ssl_context(conf, default_ssl_context_factory):
        # gunicorn asks on every connection: build the context once per worker process. Per
        # process rather than once for all, so that the workers a SIGHUP starts read renewed
        # certificate files.
        pid = os.getpid()
        if pid not in contexts:
            contexts.clear()
            contexts[pid] = tls.server_context(settings)
        return contexts[pid]

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
        # A worker that stops lets its sender finish the batch in hand and move the cursor:
        # killed between sending and moving, it would leave the batch to be sent again.
        trail = getattr(getattr(worker, "wsgi", None), "audit", None)
        if trail is not None:
            trail.close()

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
    try:
        parse_destinations(settings.audit_destinations)
    except ValueError as exc:
        print(f"xds serve: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if settings.tls_certificate:
        try:  # here, once, so that a bad file stops the start instead of every connection
            tls.server_context(settings)
        except (OSError, ValueError) as exc:
            print(f"xds serve: cannot use the TLS settings: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    _Gunicorn(settings, options(settings, host, port, workers), application).run()
