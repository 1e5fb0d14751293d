"""The registry's tables (SQLAlchemy 2 typed declarative).

What belongs here: the schema, and the one value conversion every writer and reader of it must
agree on (times padded by `xds.dtm.padded`). What does not: queries, sessions, XML.

The shape follows the ITI-18 stored queries. Each registry object is one row holding its ebRIM
XML as stored (so LeafClass answers need no rebuilding) and, beside it, every value a stored
query may filter on: single-valued parameters in indexed columns of the object's row,
multi-valued ones (codes, author persons, reference ids) in side tables keyed by the object's
integer id. A FindDocuments query then starts from the patient's entries through
`ix_document_entry_patient` and checks the other parameters entry by entry, each side-table
check a single primary-key probe (`EXISTS (SELECT 1 FROM object_code c WHERE c.object_id =
d.id AND c.code_id IN (SELECT id FROM code WHERE attribute = ... AND value IN (...)))`).

Why integer ids and a code dictionary (issue 14, measured at 1,000,000 entries): keyed by the
45-character entryUUID and the `code^^^scheme` text, object_code was a third of PostgreSQL's
bytes (3.5 of 10.2 GB), and every side-table row of a new submission went into its indexes at
a random place. Object ids are given in increasing order (`xds.store.registry.next_object_ids`),
so a submission's side rows are appended at the end of their primary keys, and a code is a
small integer. The stored XML is compressed (`xds.store.stored_xml`).

No ORM relationships and no foreign keys between object tables: rows are written with bulk
inserts, and an association's source or target may be any object kind (or, for a Reference
submission set, an object outside this registry).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (BigInteger, Boolean, DateTime, Index, Integer, LargeBinary, MetaData, Sequence, SmallInteger,
                        String, Text, UniqueConstraint, func, true)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from xds import dtm
from xds.store.stored_xml import StoredXml

#: Column sizes. PostgreSQL enforces them, so they are generous: an OID is at most 64
#: characters in XDS; a uniqueId may carry an extension (OID^ext); a CX patient id is
#: id^^^&OID&ISO; code keys and author persons (XCN) are free text of the affinity domain.
UUID = 64  # "urn:uuid:" + 36
OID = 128
URN = 128  # status, objectType, association type
PATIENT = 256
TEXT_KEY = 512  # code^^^scheme, XCN, CXi
DTM = dtm.LENGTH  # YYYYMMDDhhmmss, padded (xds.dtm)

#: An object id (DocumentEntry, SubmissionSet, Folder: the key of their side-table rows). On
#: SQLite it is the table's INTEGER PRIMARY KEY, its rowid: no index beside the table, and every
#: other index of the table ends with it.
ObjectId = BigInteger().with_variant(Integer, "sqlite")


class CodeAttribute(str, enum.Enum):
    """What an `object_code` row is the value of: the stored query parameter names' stems."""

    CLASS = "classCode"
    TYPE = "typeCode"
    FORMAT = "formatCode"
    HEALTHCARE_FACILITY_TYPE = "healthcareFacilityTypeCode"
    PRACTICE_SETTING = "practiceSettingCode"
    CONFIDENTIALITY = "confidentialityCode"
    EVENT = "eventCodeList"
    CONTENT_TYPE = "contentTypeCode"  # SubmissionSet
    FOLDER = "folderCodeList"  # Folder


class Base(DeclarativeBase):
    # Named constraints and indexes: the migration spells the same names, and later
    # migrations can drop or alter them on every database.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class DocumentEntryRow(Base):
    __tablename__ = "document_entry"

    id: Mapped[int] = mapped_column(ObjectId, primary_key=True, autoincrement=False)
    entry_uuid: Mapped[str] = mapped_column(String(UUID), unique=True)
    #: Metadata Update (ITI-57) versions share a logicalId; the first version's is its entryUUID.
    logical_id: Mapped[str] = mapped_column(String(UUID))
    #: The versionName: "1", "2", ... (xds.registry.update numbers them).
    version: Mapped[str] = mapped_column(String(32))
    #: This is the latest version of its logical object: what queries at $MetadataLevel 1 see.
    #: Older versions are Deprecated, so an Approved entry is always a latest one.
    latest: Mapped[bool] = mapped_column(Boolean, server_default=true())
    #: Not unique: a document resubmitted with the same uniqueId, hash and size is accepted
    #: (ITI TF-3 4.2.3.2.26 / XDSNonIdenticalHash), and versions of one document share it.
    unique_id: Mapped[str] = mapped_column(String(OID), index=True)
    patient_id: Mapped[str] = mapped_column(String(PATIENT))
    status: Mapped[str] = mapped_column(String(URN))
    object_type: Mapped[str] = mapped_column(String(URN))
    creation_time: Mapped[str | None] = mapped_column(String(DTM))
    service_start_time: Mapped[str | None] = mapped_column(String(DTM))
    service_stop_time: Mapped[str | None] = mapped_column(String(DTM))
    #: Lower case, so that comparing hashes is comparing strings.
    hash: Mapped[str | None] = mapped_column(String(128))
    size: Mapped[int | None] = mapped_column(BigInteger)
    repository_unique_id: Mapped[str | None] = mapped_column(String(OID))
    mime_type: Mapped[str | None] = mapped_column(String(OID))
    home_community_id: Mapped[str | None] = mapped_column(String(OID))
    #: entryUUID of the SubmissionSet that registered this entry.
    submission_set: Mapped[str | None] = mapped_column(String(UUID))
    #: The ebRIM ExtrinsicObject as stored; status is patched from the column when answering.
    xml: Mapped[str] = mapped_column(StoredXml)
    #: Its size in UTF-8 bytes: what a LeafClass answer's byte limit counts (the column above
    #: holds fewer bytes, compressed).
    xml_size: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        # FindDocuments: patientId and availabilityStatus are required, objectType is an
        # (often defaulted) list; all three are equality/IN tests, so they lead the index.
        # creation_time (the commonest time parameter) then narrows by range within the
        # index, and the id (on SQLite the rowid every index ends with) makes it covering for
        # the side-table probes: they need no visit to the wide row. Measured at 1,000,000
        # entries for a patient with 2,890 of them: FindDocuments by classCode + typeCode +
        # creationTime + authorPerson 6.6 -> 2.7 ms on SQLite, 8 -> 5.5 ms on PostgreSQL;
        # a patient with 10 entries takes 0.05 / 0.2 ms either way.
        Index(
            "ix_document_entry_patient",
            "patient_id",
            "status",
            "object_type",
            "creation_time",
            postgresql_include=["id"],
        ),
        # One row per version: of two concurrent updates of one version, the database lets one
        # store its new version (the other gets an IntegrityError: XDSMetadataVersionError).
        # It also serves "the versions of this logicalID" ($XDSDocumentEntryLogicalID).
        UniqueConstraint("logical_id", "version"),
    )


class SubmissionSetRow(Base):
    __tablename__ = "submission_set"

    id: Mapped[int] = mapped_column(ObjectId, primary_key=True, autoincrement=False)
    entry_uuid: Mapped[str] = mapped_column(String(UUID), unique=True)
    #: Unique: the database, not a check before insert, decides which of two concurrent
    #: submissions of one SubmissionSet uniqueId wins (the other gets an IntegrityError).
    unique_id: Mapped[str] = mapped_column(String(OID), unique=True)
    source_id: Mapped[str | None] = mapped_column(String(OID))
    patient_id: Mapped[str] = mapped_column(String(PATIENT))
    submission_time: Mapped[str | None] = mapped_column(String(DTM))
    status: Mapped[str] = mapped_column(String(URN))
    home_community_id: Mapped[str | None] = mapped_column(String(OID))
    xml: Mapped[str] = mapped_column(StoredXml)
    xml_size: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_submission_set_patient", "patient_id", "status"),)


class FolderRow(Base):
    __tablename__ = "folder"

    id: Mapped[int] = mapped_column(ObjectId, primary_key=True, autoincrement=False)
    entry_uuid: Mapped[str] = mapped_column(String(UUID), unique=True)
    #: Shared by the versions of one Folder (Metadata Update), and by nothing else: see the
    #: unique constraints below.
    unique_id: Mapped[str] = mapped_column(String(OID))
    #: As for DocumentEntries: the logicalID, the versionName, the latest version.
    logical_id: Mapped[str] = mapped_column(String(UUID))
    version: Mapped[str] = mapped_column(String(32))
    latest: Mapped[bool] = mapped_column(Boolean, server_default=true())
    patient_id: Mapped[str] = mapped_column(String(PATIENT))
    #: Changed by the registry whenever the folder gains a member; the XML slot is patched
    #: from this column when answering.
    last_update_time: Mapped[str | None] = mapped_column(String(DTM))
    status: Mapped[str] = mapped_column(String(URN))
    home_community_id: Mapped[str | None] = mapped_column(String(OID))
    xml: Mapped[str] = mapped_column(StoredXml)
    xml_size: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_folder_patient", "patient_id", "status"),
        # A Folder uniqueId names one logical Folder: its versions share it, so the database
        # holds it unique per version. Two concurrent submissions of one new Folder uniqueId both
        # insert version 1, and one gets the IntegrityError (as the uniqueId's own unique index did
        # before versions); an update keeps the uniqueId (xds.registry.update checks it).
        UniqueConstraint("unique_id", "version"),
        UniqueConstraint("logical_id", "version"),
    )


class AssociationRow(Base):
    __tablename__ = "association"

    entry_uuid: Mapped[str] = mapped_column(String(UUID), primary_key=True)
    type: Mapped[str] = mapped_column(String(URN))
    #: GetAssociations, GetRelatedDocuments, GetFolderAndContents... look up both ends.
    source: Mapped[str] = mapped_column(String(UUID), index=True)
    target: Mapped[str] = mapped_column(String(UUID), index=True)
    #: HasMember from a SubmissionSet: Original or Reference.
    submission_set_status: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(URN))
    xml: Mapped[str] = mapped_column(StoredXml)
    xml_size: Mapped[int] = mapped_column(Integer)


class CodeRow(Base):
    """The code dictionary: one row per coded value (`code^^^scheme`, the form query
    parameters use) of one attribute. Rows are added, never changed or removed, so an id once
    read stays true (xds.store.registry caches them)."""

    __tablename__ = "code"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    attribute: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(TEXT_KEY))

    __table_args__ = (UniqueConstraint("attribute", "value"),)


class ObjectCodeRow(Base):
    """One coded value of an object: its id and the code's."""

    __tablename__ = "object_code"

    # The primary key, led by object_id, serves "does this entry have code X" probes from the
    # object tables. WITHOUT ROWID on SQLite: the primary key is the table, not an index beside it.
    object_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    code_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)

    __table_args__ = (
        # The other direction: "which objects have code X", when a code is rarer than the
        # patient's entries (or for queries without a patient).
        Index("ix_object_code_code_id", "code_id", "object_id"),
        {"sqlite_with_rowid": False},
    )


class AuthorRow(Base):
    """An author person of a DocumentEntry or SubmissionSet ($...AuthorPerson parameters).

    Only authorPerson is queryable, so an author without a person has no row, and the rest of
    the author (institutions, roles...) lives in the XML only.
    """

    __tablename__ = "author"

    object_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    person: Mapped[str] = mapped_column(String(TEXT_KEY), primary_key=True, index=True)

    __table_args__ = ({"sqlite_with_rowid": False},)


class ReferenceIdRow(Base):
    """One referenceIdList value of a DocumentEntry (FindDocumentsByReferenceId)."""

    __tablename__ = "reference_id"

    object_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    value: Mapped[str] = mapped_column(String(TEXT_KEY), primary_key=True, index=True)

    __table_args__ = ({"sqlite_with_rowid": False},)


class PatientRow(Base):
    """A patient id the registry has been told of (Patient Identity Feed or the CLI)."""

    __tablename__ = "patient"

    #: The CX as text: id^^^&OID&ISO.
    patient_id: Mapped[str] = mapped_column(String(PATIENT), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.current_timestamp()
    )


metadata = Base.metadata

#: PostgreSQL: where object ids come from (xds.store.registry.next_object_ids). SQLite needs none.
OBJECT_IDS = Sequence("registry_object_id", metadata=metadata)


# --- Audit Record Repository (ATNA, ITI-20) -------------------------------------------------
#
# Append-only and chained by hash (xds.arr.repository says how): every column of a record and
# its keys go into its hash, so a value changed by SQL shows in `xds audit verify`. Sizes are
# those of the syslog header (RFC 5424 6.2) and of the values the audit messages carry; longer
# values are cut to fit before the hash is taken (the raw message keeps them whole).

class AuditRecordRow(Base):
    """One received syslog message: its bytes as received and the fields read from them."""

    __tablename__ = "audit_record"

    #: Position in the chain, 1, 2, 3... without gaps: given by the appender under the chain
    #: lock, never by the database (a sequence would leave gaps on rollback). INTEGER on
    #: SQLite makes it the rowid: no second index beside the table.
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=False)
    #: sha256 hex of the previous record's hash and this record's canonical content; the first
    #: record's previous hash is 64 zeros.
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: "tls", "tcp", "udp", or "local" for the Audit Record Repository's own records.
    transport: Mapped[str] = mapped_column(String(8))
    sender_address: Mapped[str | None] = mapped_column(String(64))
    sender_port: Mapped[int | None] = mapped_column(Integer)
    #: The TLS client certificate's subject (RFC 4514), when the message came over TLS.
    tls_peer: Mapped[str | None] = mapped_column(String(1024))
    #: The SYSLOG-MSG exactly as received (without the octet count).
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    #: Why the message is not a readable audit message; None for a good one.
    malformed: Mapped[str | None] = mapped_column(String(1024))
    # The RFC 5424 header.
    facility: Mapped[int | None] = mapped_column(SmallInteger)
    severity: Mapped[int | None] = mapped_column(SmallInteger)
    syslog_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    hostname: Mapped[str | None] = mapped_column(String(255))
    app_name: Mapped[str | None] = mapped_column(String(48))
    procid: Mapped[str | None] = mapped_column(String(128))
    msgid: Mapped[str | None] = mapped_column(String(32))
    # The AuditMessage (DICOM PS3.15 A.5 or RFC 3881).
    event_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    event_id: Mapped[str | None] = mapped_column(String(64), index=True)
    event_name: Mapped[str | None] = mapped_column(String(256))
    event_action: Mapped[str | None] = mapped_column(String(8))
    outcome: Mapped[int | None] = mapped_column(SmallInteger)
    #: The requestor: the person when the message names one, else the requesting system.
    user_id: Mapped[str | None] = mapped_column(String(TEXT_KEY), index=True)
    user_name: Mapped[str | None] = mapped_column(String(TEXT_KEY), index=True)
    #: The requesting system: its UserName (the project's senders write its TLS certificate
    #: subject there) or UserID, and its NetworkAccessPointID.
    source_system: Mapped[str | None] = mapped_column(String(TEXT_KEY))
    source_address: Mapped[str | None] = mapped_column(String(256))
    audit_source_id: Mapped[str | None] = mapped_column(String(256))
    audit_enterprise_site_id: Mapped[str | None] = mapped_column(String(256))


class AuditRecordKeyRow(Base):
    """A value a record is searched by, one row each: kind "patient" (a patient's
    ParticipantObjectID), "document" (a document uniqueId), "submission_set", "query" (a
    stored query id) or "event_type" (an EventTypeCode's code)."""

    __tablename__ = "audit_record_key"

    #: Leads the primary key: a record's keys are read together (search output, verify).
    record_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(TEXT_KEY), primary_key=True)

    __table_args__ = (
        # The other direction: a patient's records (`xds audit report`), without a table scan.
        Index("ix_audit_record_key_value", "kind", "value", "record_seq"),
    )


class AuditChainRow(Base):
    """The chain's head, one row (id 1): the last record's seq and hash. Appenders lock this
    row (SELECT ... FOR UPDATE on PostgreSQL; SQLite's write lock does it there), so records
    are chained one after the other however many receivers run; verify compares the last
    record with it, which shows records deleted from the end."""

    __tablename__ = "audit_chain"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


# --- Patient identity: PIX Manager and PDQ Supplier (ITI-44/45/47) --------------------------
#
# xds.identity says how these are used. A patient is one id of one assigning authority with the
# demographics its source last sent (kept whole, as JSON, beside the columns and keys searches
# need); a person is a cross-reference, the set of patients linked as one human being. Search
# keys are normalised copies (NFKC, case folded, kana folded, kanji variants folded), so that a
# PDQ by name is one index range scan however the name was typed.

#: Surrogate keys: BIGINT on PostgreSQL, INTEGER (the rowid) on SQLite so that it autoincrements.
_SERIAL = BigInteger().with_variant(Integer, "sqlite")
#: Search keys compare in code point order on both databases (prefix searches are ranges):
#: SQLite's default BINARY collation does; PostgreSQL needs "C" whatever the database's default.
_KEY = String(TEXT_KEY).with_variant(String(TEXT_KEY, collation="C"), "postgresql")


class IdentityPersonRow(Base):
    """A person: the cross-reference its patients (ids) belong to."""

    __tablename__ = "identity_person"

    id: Mapped[int] = mapped_column(_SERIAL, primary_key=True, autoincrement=True)
    #: Counts changes of the set of linked ids (an ITI-46 notification per change, later).
    revision: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class IdentityPatientRow(Base):
    """One patient id (root = assigning authority OID, extension) and its current record."""

    __tablename__ = "identity_patient"

    pk: Mapped[int] = mapped_column(_SERIAL, primary_key=True, autoincrement=True)
    root: Mapped[str] = mapped_column(String(OID))
    extension: Mapped[str] = mapped_column(String(PATIENT))
    person_id: Mapped[int] = mapped_column(BigInteger, index=True)
    #: "active", or "retired" once merged into another id (ITI-44 duplicates resolved).
    status: Mapped[str] = mapped_column(String(16))
    #: The surviving patient of a retired one (always the final survivor: chains are flattened).
    merged_into: Mapped[int | None] = mapped_column(BigInteger, index=True)
    #: Why it is in its person: "new", "identifier", "demographics", "manual" (an
    #: administrator's link or unlink: never undone by a feed), "merge".
    link: Mapped[str] = mapped_column(String(16))
    #: The number of its latest identity_revision.
    revision: Mapped[int] = mapped_column(Integer)
    #: AdministrativeGender as sent (M, F, UN ...).
    gender: Mapped[str | None] = mapped_column(String(8))
    #: The birth time's digits up to the day (YYYYMMDD, or fewer at a coarser precision).
    birth_date: Mapped[str | None] = mapped_column(String(8))
    sender: Mapped[str | None] = mapped_column(String(OID))
    #: The PatientRecord as last fed, JSON (xds.identity.records), every string as sent.
    record: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("root", "extension"),
        # PDQ by birth date (and gender); demographic linking narrows by it too.
        Index("ix_identity_patient_birth", "birth_date", "gender"),
    )


class IdentityKeyRow(Base):
    """A normalised search value of a patient: kind "family", "given", "name" (family and
    given together, and for alphabetic names also given then family), "mmn_family",
    "mmn_given", "mmn_name" (mother's maiden name), "street", "city", "state", "postal",
    "country", "telecom". `seq` groups the keys of one name or one address."""

    __tablename__ = "identity_key"

    patient_pk: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(_KEY, primary_key=True)

    __table_args__ = (
        # PDQ: "which patients have this (prefix of a) family name", one range scan; with seq
        # it covers the join to the other parts of the same name (family and given together).
        Index("ix_identity_key_key", "kind", "key", "patient_pk", "seq"),
    )


class IdentityOtherIdRow(Base):
    """An id the patient's source says the same person has elsewhere (asOtherIDs): evidence
    for the identifier linking rule, in both directions."""

    __tablename__ = "identity_other_id"

    patient_pk: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[str] = mapped_column(String(OID), primary_key=True)
    extension: Mapped[str] = mapped_column(String(PATIENT), primary_key=True)

    __table_args__ = (Index("ix_identity_other_id_id", "root", "extension", "patient_pk"),)


class IdentityRevisionRow(Base):
    """The history of a patient: every record fed (add, revise, merge) and every change of its
    person (link, unlink, retire)."""

    __tablename__ = "identity_revision"

    patient_pk: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    action: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    person_id: Mapped[int] = mapped_column(BigInteger)
    sender: Mapped[str | None] = mapped_column(String(OID))
    #: The record as fed (JSON); None when only the links changed.
    record: Mapped[str | None] = mapped_column(Text)


class IdentityCandidateRow(Base):
    """A possible link the rules would not make alone, for an administrator to decide:
    patient_pk (the one fed) may be the same person as other_pk."""

    __tablename__ = "identity_candidate"

    patient_pk: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    other_pk: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False, index=True)
    #: "demographics-ambiguous", "demographics-partial", "identifier-conflict", "same-domain".
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PdqQueryRow(Base):
    """An ITI-47 query with more matches than its first answer held, kept so that a
    continuation (QUQI_IN000003UV01) reaches any worker on any host: the query as received and
    where the next page starts. Removed by a cancel, by its last page, or when it expires."""

    __tablename__ = "pdq_query"

    #: The consumer's queryId (root^extension), which every continuation names.
    query_id: Mapped[str] = mapped_column(String(TEXT_KEY), primary_key=True)
    #: The query message's body as received (PRPA_IN201305UV02): read again by a continuation.
    request: Mapped[str] = mapped_column(Text)
    #: The match the next page starts at (0 is the first).
    position: Mapped[int] = mapped_column(Integer)
    #: The id of the latest answer: a continuation names it as its targetMessage.
    last_response_id: Mapped[str] = mapped_column(String(TEXT_KEY))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class PixNotificationRow(Base):
    """An ITI-46 PIX Update Notification on its way to one PIX Consumer (xds.identity.notify):
    the person's ids in the consumer's domains as they were when the feed that changed them
    committed. Written in that feed's transaction (one row per person per consumer); deleted
    once the consumer accepted it, parked when it refused it (AE, AR)."""

    __tablename__ = "pix_notification"

    #: The queue's order: a person's notifications reach a consumer in this order.
    id: Mapped[int] = mapped_column(_SERIAL, primary_key=True, autoincrement=True)
    #: The consumer's URL, as configured (pix_consumers).
    consumer: Mapped[str] = mapped_column(String(1024))
    person_id: Mapped[int] = mapped_column(BigInteger)
    #: What the message carries: JSON [[root, extension], ...], the consumer's first domain first.
    ids: Mapped[str] = mapped_column(Text)
    #: The HL7 message id (a UUID), the same in every attempt: a consumer can tell a resend.
    message_id: Mapped[str] = mapped_column(String(UUID))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: "waiting", or "parked" (the consumer refused it; an administrator sends it again or drops it).
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: Why the last attempt failed, or why the consumer refused it.
    last_error: Mapped[str | None] = mapped_column(String(2048))

    __table_args__ = (
        # "Is an earlier notification of this person to this consumer still waiting?": asked of
        # every candidate, so that a person's notifications never overtake one another.
        Index("ix_pix_notification_person", "consumer", "person_id", "id"),
        # The senders' poll: what is due now.
        Index("ix_pix_notification_due", "status", "next_attempt_at"),
    )


# --- Consent and access control (xds.consent) ------------------------------------------------
#
# A person's consent is a chain of records, one per change (a grant, an exclusion, a hold, a
# withdrawal, a BPPC document registered), each holding the whole state the change left: the
# latest record of a person is its consent now, the earlier ones its history. Rows are only
# ever inserted (xds.consent.store), never updated or deleted: who recorded what, when, why and
# from which source stays readable.

class ConsentRecordRow(Base):
    """One change of a person's consent, and the consent it left (xds.consent.store)."""

    __tablename__ = "consent_record"

    #: The order of the changes: a person's latest record is its highest id.
    id: Mapped[int] = mapped_column(_SERIAL, primary_key=True, autoincrement=True)
    #: identity_person.id: a consent follows the person across its linked ids.
    person_id: Mapped[int] = mapped_column(BigInteger)
    #: The local id the change was recorded for (the command's PATIENT, a BPPC document's patient).
    patient_id: Mapped[str] = mapped_column(String(PATIENT))
    #: What was done: "grant", "exclude", "hold", "release", "withdraw"; "revoke" and
    #: "reinstate" (a BPPC document's grants taken back, given back).
    action: Mapped[str] = mapped_column(String(16))
    #: The model in force after it: "blanket", "facility", "person", "implied".
    model: Mapped[str] = mapped_column(String(16))
    #: JSON lists: the facilities allowed (per facility), those excluded (any model), the
    #: individuals allowed (per person: XUA subject ids).
    facilities: Mapped[str] = mapped_column(Text)
    excluded: Mapped[str] = mapped_column(Text)
    individuals: Mapped[str] = mapped_column(Text)
    valid_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Viewing on hold: nothing is shown until a release.
    on_hold: Mapped[bool] = mapped_column(Boolean)
    #: Set by a withdrawal (or an opt-out of implied consent); cleared by a later grant.
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_by: Mapped[str] = mapped_column(String(TEXT_KEY))
    reason: Mapped[str] = mapped_column(String(1024))
    #: "cli", or "bppc:<the consent document's uniqueId>".
    source: Mapped[str] = mapped_column(String(TEXT_KEY))
    #: What the change asked, JSON text (action, model, facilities, excluded, individuals,
    #: valid_from/to; a revocation's ending), so that a replay makes it again exactly; NULL for
    #: records written before migration 0009 (replayed by the difference each made).
    arguments: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        # "The latest record of each of these persons": one probe of the index per person.
        Index("ix_consent_record_person", "person_id", "id"),
    )


class ConsentBreakGlassRow(Base):
    """An access granted without consent for an emergency (break-glass), for review
    (`xds consent review`)."""

    __tablename__ = "consent_break_glass"

    id: Mapped[int] = mapped_column(_SERIAL, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    person_id: Mapped[int | None] = mapped_column(BigInteger)
    patient_id: Mapped[str] = mapped_column(String(PATIENT))
    #: ITI-18, ITI-43...
    transaction: Mapped[str] = mapped_column(String(16))
    facility: Mapped[str] = mapped_column(String(TEXT_KEY))
    #: The XUA user: NameID, and alias<user@issuer> as audit records name them.
    user_id: Mapped[str] = mapped_column(String(TEXT_KEY))
    user_name: Mapped[str] = mapped_column(String(TEXT_KEY))
    #: The purposes of use the assertion carried (code^codeSystem, space separated).
    purposes: Mapped[str] = mapped_column(String(TEXT_KEY))
    #: Why consent alone would not have allowed it.
    reason: Mapped[str] = mapped_column(String(1024))
    message_id: Mapped[str] = mapped_column(String(TEXT_KEY))
    address: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_consent_break_glass_person", "person_id", "id"),)
