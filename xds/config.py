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
    #: The most registry objects one submission (ITI-42, ITI-41) may hold: its DocumentEntries,
    #: SubmissionSet, Folders and Associations, their Classifications and ExternalIdentifiers,
    #: and ObjectRefs; more are refused (XDSRegistryError) before any is read. A rich DocumentEntry
    #: takes about 25 (codes, several authors, identifiers, its HasMembers), a large discharge
    #: bundle (a long stay's summaries, reports and results) some 200 documents: 5,000, twice
    #: over. At the limit (830 documents) registering takes 0.3 s on SQLite, 0.8 s on PostgreSQL.
    max_submission_objects: int = 10000
    #: The most slot values (rim:Value) one submission may hold; more are refused the same way.
    #: About 100 for a rich DocumentEntry (authors, sourcePatientInfo): 20,000 for that bundle,
    #: 2.5 times over. Each referenceIdList value is a row: 50,000 take 0.3 s / 1.0 s.
    max_submission_values: int = 50000
    #: Affinity domain codes (NIST toolkit codes.xml format); empty means any code is accepted.
    codes_file: str = ""
    #: Largest request body accepted, in bytes.
    max_request_size: int = 16 * 1024 * 1024
    # (It bounds /registry, whose requests are all SOAP envelope, held and parsed in memory: a
    # 1,000-document ITI-42 is about 6.6 MB, so 16 MiB leaves room for verbose metadata and
    # pretty-printing; the former 100 MB let one request take 3 GB of parsed tree.)
    #: The most tags and attributes one SOAP envelope may hold (at /registry and /repository),
    #: counted as its '<' and '=' characters before it is parsed: a parsed tree takes 130-240
    #: bytes for each, whatever the bytes. A 1,000-document submission has about 300,000.
    max_envelope_nodes: int = 500_000
    #: Largest SOAP envelope at /repository, in bytes: the metadata, and documents sent inline
    #: in base64 (about 3/4 of it; larger documents go as MTOM attachments, which stream to disk).
    max_document_envelope_size: int = 64 * 1024 * 1024
    #: Seconds a submission waits for a database lock before answering XDSRegistryBusy (SQLite's
    #: write lock; on PostgreSQL any lock, as lock_timeout: a transaction left open cannot hang it).
    busy_timeout: float = 10.0
    #: The most objects a stored query (ITI-18) returns as LeafClass; a query that matches more
    #: answers XDSTooManyResults (ObjectRef answers are not limited). See README for the sizing.
    max_leaf_class_results: int = 10000
    #: The most bytes of stored metadata XML one LeafClass answer holds; a query whose objects
    #: hold more answers XDSTooManyResults before any XML is read. An answer is built whole in
    #: a worker's memory, at some 3-5 times its size: this, not the count, bounds that memory.
    max_leaf_class_bytes: int = 64 * 1024 * 1024
    #: The most values one stored query parameter may carry (all its slots together), and all
    #: the parameters of one query: more answer XDSStoredQueryParamNumber before any SQL runs.
    #: 10000: a consumer may ask GetDocuments for the ids of a whole LeafClass answer.
    max_query_parameter_values: int = 10000
    max_query_values: int = 20000
    #: The most terms of one stored query, each a test of every entry: the slots of the code
    #: parameters (the AND/OR ones may have several) and the authorPerson patterns.
    max_query_terms: int = 16
    #: Who may send Multi-Patient Stored Query (ITI-51), which crosses patients: client
    #: certificate subjects (RFC 4514, as audit records name them: CN=portal,O=Kagawa) and
    #: client addresses or networks (10.1.2.0/24), separated by ';' or line breaks. Empty:
    #: nobody (every ITI-51 is refused with XDSRegistryError, and audited).
    multi_patient_query_callers: str = ""
    #: This registry's home community id (urn:oid:...); when set, stored query answers carry it
    #: as the objects' home attribute.
    home_community_id: str = ""
    #: The affinity domain: the assigning authority (an OID) of the patient ids the Document
    #: Registry accepts. A Patient Identity Feed (ITI-44) of an id in it makes the id known to
    #: the registry at once; empty: the feed tells the registry nothing.
    affinity_domain: str = ""
    #: The PIX Manager's linking rules, tried in order on every feed: "identifier" (the record's
    #: other ids name a known patient), "demographics" (the same normalised name, birth date
    #: and gender). Empty: ids are linked only by an administrator (`xds patients link`).
    pix_linking_rules: str = "identifier,demographics"
    #: Kanji that name searches and demographic linking take for one another: old/new pairs
    #: separated by spaces. Changing it needs `xds.identity.store.rebuild_keys` (the search
    #: keys hold the folded forms); names are stored as they were sent either way.
    name_kanji_variants: str = (
        "髙/高 﨑/崎 嵜/崎 齋/斎 齊/斉 邊/辺 邉/辺 濱/浜 濵/浜 澤/沢 櫻/桜 廣/広 國/国 德/徳 "
        "眞/真 槇/槙 冨/富 嶋/島 嶌/島 瀨/瀬 桒/桑 峯/峰 舘/館 𠮷/吉 靜/静 實/実 惠/恵 榮/栄 "
        "藏/蔵 壽/寿 淺/浅 萬/万 滿/満 禮/礼 瀧/滝 彌/弥 來/来 邨/村 條/条 增/増"
    )
    #: Name searches and linking take small kana for large ones (キョウコ = キヨウコ), as
    #: systems that wrote half-width kana without small letters did. Same caveat as above.
    name_fold_small_kana: bool = True
    #: The folder of HL7's NE2008 schemas (holding multicacheschemas/ and coreschemas/; HL7's,
    #: not shipped here). When set, every PIX and PDQ message is checked against its schema and
    #: refused (AE, SYN details naming the element) when invalid; empty: the readers' own checks.
    hl7v3_schemas: str = ""
    #: The device id (an OID) the PIX Manager and PDQ Supplier answer as (sender/device/id);
    #: empty: the device each request was addressed to.
    hl7v3_device_id: str = ""
    #: Patients in an ITI-47 answer when the query sets no initialQuantity; the rest follow on
    #: continuation (QUQI_IN000003UV01).
    pdq_page_size: int = 100
    #: Seconds an ITI-47 query with matches still to come waits for its next continuation.
    pdq_continuation_timeout: float = 600
    #: ITI-46 PIX Update Notification (xds.identity.notify): the PIX Consumers told when the ids
    #: linked to a person change, ";"-separated, each `URL=OID,OID...`: where it takes
    #: PRPA_IN201302UV02 and the assigning authorities (domains) it wants ids of, optionally
    #: followed by ` device=OID`, its device id (the messages' receiver; default: its first
    #: domain), e.g. "https://ehr.example/pix=1.2.3,1.2.4;https://lab.example/pix=1.2.5
    #: device=1.2.9". They are sent as hl7v3_device_id, which must then be set. Empty: nothing is
    #: queued.
    pix_consumers: str = ""
    #: Seconds before a notification is sent again after its consumer could not take it (down,
    #: HTTP error, SOAP fault, no acknowledgement), doubling from the first bound to the second.
    #: Refusals (AE, AR) are not retried: the notification is parked.
    pix_notify_retry_min: float = 1.0
    pix_notify_retry_max: float = 300.0
    #: Seconds a consumer has to answer one notification.
    pix_notify_timeout: float = 30.0
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
    #: XUA (ITI-40; xds.security.xua). Whether SOAP requests must carry an X-User Assertion in
    #: their wsse:Security header: "required" (every request, or it gets a WS-Security fault),
    #: "optional" (an assertion that is there must be valid), "off" (none is read; a
    #: wsse:Security marked mustUnderstand then gets a MustUnderstand fault). One value for every
    #: endpoint, or per endpoint: "registry=required,repository=optional,pix=off,pdq=optional"
    #: (a bare value among them is the rest's). Empty: "optional" when xua_trusted_certificates
    #: is set, else "off".
    xua_policy: str = ""
    #: PEM file of the identity providers' signing certificates: an assertion's signature must
    #: verify with the key of one of them (and the certificate be within its validity dates).
    xua_trusted_certificates: str = ""
    #: Comma-separated audiences an assertion's AudienceRestriction may name. Empty: the URL of
    #: the endpoint as the request reached it (its Host header: set this behind a proxy, or
    #: where clients reach the server by more than one name).
    xua_audiences: str = ""
    #: Seconds of clock difference allowed with the identity provider when NotBefore,
    #: NotOnOrAfter and IssueInstant are compared with this server's clock.
    xua_clock_skew: float = 60.0
    #: Accept assertions signed or digested with SHA-1 (rsa-sha1, as some national networks'
    #: identity providers still sign). Off: SHA-1 is refused as broken for signatures.
    xua_allow_sha1: bool = False
    #: DSG (ITI TF-3 5.5; xds.security.dsg): what a signature document that does not verify does
    #: to its submission. "record": accepted, the verdict kept with the repository's copy of the
    #: signature document (shown by `xds verify`); "reject": refused with XDSRepositoryMetadataError
    #: (ITI-41) or XDSRegistryMetadataError (ITI-42) naming the check that failed.
    dsg_policy: str = "record"
    #: PEM file of the CAs whose signers' signatures are trusted (the signing certificate must
    #: chain to one of them, valid at the signing time). Empty: no signature's certificate holds.
    dsg_trust_anchors: str = ""
    #: Access control (xds.consent): "off", every caller sees every patient's data (the IHE
    #: profiles' own behaviour); "consent", each request sees only the patients whose consent
    #: allows its facility (ITI-18, ITI-51, ITI-43, ITI-45, ITI-47), and a request whose facility
    #: is not known sees none.
    access_control: str = "off"
    #: Which facility a client certificate stands for, when the request carries no XUA assertion
    #: naming its organization: "SUBJECT=FACILITY" entries separated by ';' or line breaks, the
    #: subject as audit records name it (RFC 4514, CN=clinic-a,O=Kagawa), the facility an OID
    #: (the text after the last '=' is the facility), e.g. "CN=clinic-a,O=Kagawa=1.2.392.100.1".
    facility_certificates: str = ""
    #: Break-glass: a request whose XUA purpose of use is one of consent_break_glass_purposes
    #: sees a patient whose consent does not allow it (not one who withdrew), flagged and audited,
    #: listed by `xds consent review`. Off: emergencies get what consent allows.
    consent_break_glass: bool = False
    #: The purposes of use that are an emergency: codes, each optionally code@codeSystem (an
    #: OID): the affinity domain defines its value set (ITI TF-2 3.40.4.1.2). The defaults are
    #: the NHIN/XSPA, HL7 ActReason and eHealth Suisse codes for emergency treatment.
    consent_break_glass_purposes: str = "EMERGENCY,ETREAT,EMER"
    #: Implied consent with opt-out for the whole network: a person with no consent recorded is
    #: shared with every facility (until they opt out: `xds consent withdraw` or an exclusion).
    #: Off: no consent recorded, no access.
    consent_implied: bool = False
    #: BPPC (ITI TF-3 5.1): the patient privacy policy ids a consent document's eventCodeList
    #: may name, and what each means here, ';'-separated "POLICY=MEANING", the meaning one of
    #: blanket, implied, facility:FAC,FAC (allowed list), person:ID,ID (named individuals),
    #: exclude:FAC,FAC, hold, release, withdraw; e.g. "1.2.392.100.9.1=blanket;
    #: 1.2.392.100.9.9=withdraw". Documents naming no configured policy change nothing.
    consent_bppc_policies: str = ""
    #: The remote registry's database (its database_url), for a repository that registers with
    #: it (registry_url): with access_control = consent, ITI-43 reads the consent records and the
    #: PIX Manager's persons from it (read only), since such a repository holds none of its own.
    #: Empty, with registry_url and access control on: `xds serve` refuses to start.
    registry_database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    #: Threads per worker: the requests one worker works on at once. A connection gets a thread
    #: only once its TLS handshake and request head are in (read by the worker's selector), so
    #: idle and slow clients cost no thread until then.
    threads: int = 16
    #: Seconds a client has, from connecting, to finish its TLS handshake and send the whole
    #: request head (on a kept-alive connection: from the next request's first byte); then the
    #: connection is closed (a head begun gets 408). 0: no limit.
    header_timeout: float = 10.0
    #: A request body must arrive, and an answer be taken (bytes the client acknowledged), at
    #: min_body_rate bytes a second on average after a grace of body_timeout seconds, or the
    #: connection is reset (a body cut off reads to the application as ended early).
    #: min_body_rate 0: body_timeout bounds each wait for data instead. body_timeout 0: no limit.
    body_timeout: float = 20.0
    min_body_rate: int = 500
    #: Requests from one client address (IPv6: one /64) that one worker works on at once; the
    #: address's other requests wait their turn without a thread. Connections from one address
    #: open to one worker (waiting, served or kept alive); more are closed at once (503 over
    #: plain HTTP). 0: no limit (behind a reverse proxy every connection has its address).
    max_threads_per_address: int = 4
    max_connections_per_address: int = 64
    #: A worker is replaced after this many requests plus a random 0 to max_requests_jitter (so
    #: that workers are not replaced together): its successor starts at once, it finishes the
    #: requests in hand and exits, and what its heap grew to goes back to the system. 0: never.
    max_requests: int = 10000
    max_requests_jitter: int = 2000
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
