"""Settings: defaults, then an optional TOML file, then XDS_* environment variables.

The TOML file uses the same names as the settings, in lower case, at top level:

    data_dir = "/srv/xds"
    database_url = "postgresql+psycopg://xds@db/xds"
    check_patient_ids = true
    codes_file = "/etc/xds/codes.xml"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass
class Settings:
    #: Holds the SQLite database and the documents unless database_url names another database.
    data_dir: Path = Path("./var")
    #: SQLAlchemy URL; empty means SQLite at data_dir/registry.sqlite3.
    database_url: str = ""
    #: Reject submissions for patients the registry has not been told of (XDSUnknownPatientId).
    check_patient_ids: bool = True
    #: Affinity domain codes (NIST toolkit codes.xml format); empty means any code is accepted.
    codes_file: str = ""
    #: Largest request body accepted, in bytes.
    max_request_size: int = 100 * 1024 * 1024
    #: Seconds a submission waits for a database lock before answering XDSRegistryBusy (SQLite's
    #: write lock; on PostgreSQL any lock, as lock_timeout: a transaction left open cannot hang it).
    busy_timeout: float = 10.0
    #: The most objects a stored query (ITI-18) returns as LeafClass; a query that matches more
    #: answers XDSTooManyResults (ObjectRef answers are not limited). See README for the sizing.
    max_leaf_class_results: int = 10000
    #: This registry's home community id (urn:oid:...); when set, stored query answers carry it
    #: as the objects' home attribute.
    home_community_id: str = ""
    #: This Document Repository's uniqueId: an OID, set as repositoryUniqueId on every document
    #: it stores and asked for in ITI-43. The default is in the OID arc 2.999 that ITU-T X.660
    #: keeps for examples: every deployment must set its own.
    repository_unique_id: str = "2.999.1.1"
    #: The Document Registry the repository registers documents with (ITI-42 over SOAP), e.g.
    #: http://registry.example:8080/registry; empty: this server's own registry, in-process.
    registry_url: str = ""
    #: Largest request at /repository, in bytes: documents stream to disk, so this may be far
    #: above max_request_size (which bounds the registry's requests, held in memory).
    max_document_request_size: int = 2 * 1024 * 1024 * 1024
    #: Serve POST /null: parses the SOAP envelope, answers a constant RegistryResponse
    #: Success. The floor that bench/ measures the real endpoints against; off in production.
    null_endpoint: bool = False
    #: Seconds a gunicorn worker may spend on one request before it is restarted: long enough
    #: for a document of several hundred MB over a slow hospital link.
    worker_timeout: int = 1800
    #: Where audit records go (ATNA, ITI-20): comma-separated syslog destinations, each
    #: tls://host:port (RFC 5425, the standard's choice), tcp://host:port (RFC 6587) or
    #: udp://host:port (RFC 5426). Empty: no audit trail (development only).
    audit_destinations: str = ""
    #: AuditSourceIdentification: AuditSourceID (default: this host's name) and the
    #: AuditEnterpriseSiteID (for example the network's or the facility's OID).
    audit_source_id: str = ""
    audit_enterprise_site_id: str = ""
    #: The durable spool the audit records wait in until every destination has them. When it
    #: holds this many bytes new records are refused (logged loudly, one security alert).
    audit_spool_max_bytes: int = 256 * 1024 * 1024
    #: Seconds between two fsyncs of the audit spool: records of the interval share one (a
    #: machine crash may lose them; a process crash loses nothing). 0: every record is
    #: fsynced before its transaction is answered, at about 0.2 ms (and more on slow disks).
    audit_spool_fsync_interval: float = 0.05
    #: This node's identity for mutual TLS (PEM files): serve HTTPS when tls_certificate is
    #: set; client certificates are required and checked against tls_ca_certificates. The
    #: same certificate is presented to a remote registry and to TLS audit destinations.
    tls_certificate: str = ""
    tls_private_key: str = ""
    tls_ca_certificates: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    extra: dict = field(default_factory=dict)

    @property
    def database(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(Path(self.data_dir) / 'registry.sqlite3').resolve()}"

    @property
    def documents_dir(self) -> Path:
        return Path(self.data_dir) / "documents"

    @property
    def audit_spool(self) -> Path:
        return Path(self.data_dir) / "audit-spool"


def load(config_file: str | os.PathLike | None = None, env: dict | None = None) -> Settings:
    env = os.environ if env is None else env
    settings = Settings()
    config_file = config_file or env.get("XDS_CONFIG")
    values: dict = {}
    if config_file:
        with open(config_file, "rb") as f:
            values.update(tomllib.load(f))
    for f in fields(Settings):
        key = "XDS_" + f.name.upper()
        if key in env:
            values[f.name] = env[key]
    for f in fields(Settings):
        if f.name not in values or f.name == "extra":
            continue
        raw = values.pop(f.name)
        current = getattr(settings, f.name)
        if isinstance(current, bool):
            value = raw if isinstance(raw, bool) else _bool(str(raw))
        elif isinstance(current, int):
            value = int(raw)
        elif isinstance(current, float):
            value = float(raw)
        elif isinstance(current, Path):
            value = Path(raw)
        else:
            value = str(raw)
        setattr(settings, f.name, value)
    settings.extra = values
    return settings
