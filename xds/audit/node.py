"""The node's own audit events, not tied to a transaction: the application starting and
stopping (DICOM 110100 Application Activity), its configuration changing between two starts
(110113 Security Alert, 110131 Software Configuration), as ATNA asks of a secure node, and a
user's authentication refused (110114 User Authentication), as XUA asks of an X-Service
Provider (ITI TF-2 3.40.4.1.3).

A configuration change is found at start: the settings that shape what the node does are
compared with those of the previous start, kept in data_dir/audit-configuration.json, and the
names of those that changed (not their values: a value may be a secret's path or a URL with a
password) go into the alert.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
from dataclasses import asdict
from pathlib import Path

from xds.audit import events
from xds.audit.trail import AuditTrail
from xds.config import Settings

log = logging.getLogger("xds.audit")

APPLICATION = "xds-affinity"
# Settings that say where the node listens or how many processes it has are not configuration
# of what it does; the rest is.
_NOT_CONFIGURATION = {"host", "port", "workers", "worker_timeout", "extra"}


def _launcher() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name for this uid (a container): the uid is still someone
        return str(os.getuid())


def started(trail: AuditTrail, settings: Settings, url: str) -> None:
    """Record the application's start, and a configuration change since the last start."""
    if not trail.enabled:
        return
    host = socket.gethostname()
    trail.record(events.application_start(APPLICATION, trail.source, launcher=_launcher(), address=host))
    changed = _changed_settings(settings)
    if changed:
        ctx = events.TransactionContext(
            endpoint_url=url, server_address=host, outcome=0,
            human_requestor=events.HumanRequestor(_launcher()),
            outcome_description="settings changed since the last start: " + ", ".join(changed))
        trail.record(events.security_alert(ctx, trail.source, reason=ctx.outcome_description,
                                           type_code=events.SOFTWARE_CONFIGURATION))


def user_authentication(trail: AuditTrail, ctx: events.TransactionContext) -> None:
    """Record a user's authentication at this node (DICOM 110114, Login): ``ctx.human_requestor``
    the person authenticated or claimed, ``ctx.outcome`` and ``ctx.outcome_description`` how it
    ended. XUA asks it of an X-Service Provider whose validation of an X-User Assertion fails:
    "the ATNA Audit event for Authentication Failure shall be recorded according to ATNA rules"
    (ITI TF-2 3.40.4.1.3), ATNA's event for a user's attempt to log on, successful or not, being
    DICOM's User Authentication (PS3.15 A.5.3.12)."""
    if trail.enabled:
        trail.record(events.user_authentication(ctx, trail.source), ctx.outcome)


def stopped(trail: AuditTrail) -> None:
    if trail.enabled:
        trail.record(events.application_stop(APPLICATION, trail.source, launcher=_launcher(),
                                             address=socket.gethostname()))


def _changed_settings(settings: Settings) -> list[str]:
    """The names of the settings that differ from the last start's (none at the first)."""
    path = Path(settings.data_dir) / "audit-configuration.json"
    current = {name: str(value) for name, value in asdict(settings).items() if name not in _NOT_CONFIGURATION}
    try:
        previous = json.loads(path.read_text())
    except FileNotFoundError:
        previous = None
    except (OSError, ValueError):
        log.warning("%s cannot be read: the configuration is taken as changed", path)
        previous = {}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(current, indent=1, sort_keys=True))
    except OSError:
        log.exception("cannot keep the configuration in %s", path)
    if previous is None:
        return []
    return sorted(name for name in current.keys() | previous.keys() if current.get(name) != previous.get(name))
