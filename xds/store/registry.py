"""What the register step (ITI-42) stores and looks up, on a Session the caller opened.

The caller owns the transaction (one per submission: all of it stored, or none) and has
already validated the submission and given every object its entryUUID. These functions only
move values between model objects and rows; they decide nothing about XDS rules, except the
defaults a newly registered object gets.

Writes are bulk inserts (one statement per table per submission): this is the hot path of
every Register and Provide-and-Register.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from xds import dtm
from xds.model import (
    Author,
    AvailabilityStatus,
    Code,
    DocumentEntry,
    Folder,
    Submission,
    SubmissionSet,
)
from xds.store.db import chunked
from xds.store.tables import (
    AssociationRow,
    AuthorRow,
    Base,
    CodeAttribute,
    DocumentEntryRow,
    FolderRow,
    ObjectCodeRow,
    ReferenceIdRow,
    SubmissionSetRow,
)

Kind = Literal["DocumentEntry", "SubmissionSet", "Folder", "Association"]

APPROVED = AvailabilityStatus.APPROVED.value
DEPRECATED = AvailabilityStatus.DEPRECATED.value


@dataclass(frozen=True)
class ObjectRow:
    """What the register step needs to know of an object already in the registry.

    Fields that do not apply to the object's kind are None.
    """

    kind: Kind
    entry_uuid: str
    status: str
    patient_id: str | None = None
    unique_id: str | None = None
    hash: str | None = None  # lower case
    size: int | None = None
    logical_id: str | None = None
    version: str | None = None
    object_type: str | None = None  # DocumentEntry: stable or on-demand
    association_type: str | None = None
    source: str | None = None
    target: str | None = None


# -- writing ------------------------------------------------------------------------------


def save_submission(session: Session, submission: Submission, xml: dict[str, str]) -> None:
    """Insert every object of `submission`, with `xml[obj.id]` as its stored ebRIM XML.

    Every object needs its entry in `xml`. New objects are Approved unless the model says
    otherwise. A SubmissionSet or Folder whose uniqueId is already registered makes the insert
    raise IntegrityError, also when a concurrent transaction registered it first (PostgreSQL
    waits for that transaction to end, SQLite's write lock already ordered the two); the
    caller answers XDSDuplicateUniqueIdInRegistry.
    """
    side = _SideRows()
    ss = submission.submission_set
    if ss is not None:
        _insert(session, SubmissionSetRow, [_submission_set_row(ss, xml[ss.id])])
        side.codes(ss.id, CodeAttribute.CONTENT_TYPE, [ss.content_type_code])
        side.authors(ss.id, ss.authors)

    documents = []
    for d in submission.documents:
        documents.append(_document_row(d, xml[d.id], ss.id if ss else None))
        side.codes(d.id, CodeAttribute.CLASS, [d.class_code])
        side.codes(d.id, CodeAttribute.TYPE, [d.type_code])
        side.codes(d.id, CodeAttribute.FORMAT, [d.format_code])
        side.codes(d.id, CodeAttribute.HEALTHCARE_FACILITY_TYPE, [d.healthcare_facility_type_code])
        side.codes(d.id, CodeAttribute.PRACTICE_SETTING, [d.practice_setting_code])
        side.codes(d.id, CodeAttribute.CONFIDENTIALITY, d.confidentiality_codes)
        side.codes(d.id, CodeAttribute.EVENT, d.event_codes)
        side.authors(d.id, d.authors)
        side.reference_ids(d.id, d.reference_ids)
    _insert(session, DocumentEntryRow, documents)

    folders = []
    for f in submission.folders:
        folders.append(_folder_row(f, xml[f.id]))
        side.codes(f.id, CodeAttribute.FOLDER, f.codes)
    _insert(session, FolderRow, folders)

    _insert(
        session,
        AssociationRow,
        [
            {
                "entry_uuid": a.id,
                "type": a.type,
                "source": a.source,
                "target": a.target,
                "submission_set_status": a.submission_set_status,
                "status": a.status or APPROVED,
                "xml": xml[a.id],
            }
            for a in submission.associations
        ],
    )

    _insert(session, ObjectCodeRow, side.code_rows())
    _insert(session, AuthorRow, side.author_rows())
    _insert(session, ReferenceIdRow, side.reference_id_rows())


def deprecate(session: Session, uuids: Iterable[str]) -> int:
    """Mark DocumentEntries Deprecated (RPLC/XFRM_RPLC targets); return how many changed.

    Only the column changes: queries patch the XML's status attribute from it. Entries
    already Deprecated are not counted, so a caller that finds fewer than it asked for knows
    a concurrent submission replaced the same document (on PostgreSQL the second UPDATE waits
    for the first transaction and then sees its result).
    """
    changed = 0
    for chunk in chunked(list(dict.fromkeys(uuids))):
        result = session.execute(
            update(DocumentEntryRow.__table__)
            .where(DocumentEntryRow.entry_uuid.in_(chunk), DocumentEntryRow.status != DEPRECATED)
            .values(status=DEPRECATED)
        )
        changed += result.rowcount
    return changed


def touch_folders(session: Session, uuids: Iterable[str], time: str) -> int:
    """Set lastUpdateTime of existing Folders that gained members; return how many.

    As with status, queries write the column's value into the XML's lastUpdateTime slot.
    """
    changed = 0
    for chunk in chunked(list(dict.fromkeys(uuids))):
        result = session.execute(
            update(FolderRow.__table__)
            .where(FolderRow.entry_uuid.in_(chunk))
            .values(last_update_time=dtm.padded(time))
        )
        changed += result.rowcount
    return changed


# -- reading ------------------------------------------------------------------------------


def find_entries_by_uuid(session: Session, uuids: Iterable[str]) -> dict[str, ObjectRow]:
    """The registry objects among `uuids`, whatever their kind (association ends, RPLC
    targets, HasMember sources...). Unknown uuids are simply absent from the answer."""
    wanted = list(dict.fromkeys(uuids))
    found: dict[str, ObjectRow] = {}
    for chunk in chunked(wanted):
        for row in _documents(session, DocumentEntryRow.entry_uuid.in_(chunk)):
            found[row.entry_uuid] = row
        for row in _submission_sets(session, SubmissionSetRow.entry_uuid.in_(chunk)):
            found[row.entry_uuid] = row
        for row in _folders(session, FolderRow.entry_uuid.in_(chunk)):
            found[row.entry_uuid] = row
        for row in _associations(session, AssociationRow.entry_uuid.in_(chunk)):
            found[row.entry_uuid] = row
    return found


def lock_document_unique_ids(session: Session, unique_ids: Iterable[str]) -> None:
    """Serialize concurrent submissions of the same document uniqueId until commit.

    A document uniqueId may be registered twice (a resubmission with the same hash and size),
    so no unique index can decide between two concurrent submissions with different hashes.
    PostgreSQL: a transaction-scoped advisory lock per uniqueId, taken in sorted order so two
    submissions never wait on each other crosswise. SQLite: the write transaction already
    holds the database's only write lock.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    for unique_id in sorted(set(unique_ids)):
        session.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(unique_id, 0))))


def find_documents_by_unique_id(
    session: Session, unique_ids: Iterable[str]
) -> dict[str, list[ObjectRow]]:
    """DocumentEntries by uniqueId: several per id when a document was resubmitted or has
    versions; the caller compares hash and size (XDSNonIdenticalHash / XDSNonIdenticalSize)."""
    found: dict[str, list[ObjectRow]] = {}
    for chunk in chunked(list(dict.fromkeys(unique_ids))):
        for row in _documents(session, DocumentEntryRow.unique_id.in_(chunk)):
            found.setdefault(row.unique_id or "", []).append(row)
    return found


def document_hashes(session: Session, unique_id: str) -> list[str | None]:
    """The hashes of the DocumentEntries with this uniqueId."""
    return list(session.scalars(select(DocumentEntryRow.hash).where(DocumentEntryRow.unique_id == unique_id)))


def documents_in_repository(session: Session, repository_unique_id: str) -> list[tuple[str, str | None, int | None]]:
    """(uniqueId, hash, size) of the DocumentEntries whose repositoryUniqueId is this one."""
    return [tuple(row) for row in session.execute(
        select(DocumentEntryRow.unique_id, DocumentEntryRow.hash, DocumentEntryRow.size)
        .where(DocumentEntryRow.repository_unique_id == repository_unique_id))]


def existing_unique_ids(
    session: Session, kind: Literal["SubmissionSet", "Folder"], unique_ids: Iterable[str]
) -> dict[str, str]:
    """uniqueId -> entryUUID of the SubmissionSets or Folders already registered.

    The early check that lets the register step name every duplicate in its answer; the
    unique constraints still decide races between concurrent submissions.
    """
    table = {"SubmissionSet": SubmissionSetRow, "Folder": FolderRow}.get(kind)
    if table is None:
        raise ValueError(f"uniqueIds are unique only for SubmissionSet and Folder, not {kind}")
    found: dict[str, str] = {}
    for chunk in chunked(list(dict.fromkeys(unique_ids))):
        rows = session.execute(
            select(table.unique_id, table.entry_uuid).where(table.unique_id.in_(chunk))
        )
        found.update({unique_id: entry_uuid for unique_id, entry_uuid in rows})
    return found


# -- rows <-> model -----------------------------------------------------------------------


def _insert(session: Session, table: type[Base], rows: list[dict[str, Any]]) -> None:
    # Core insert of the mapped table, not the ORM entity: no identity map, no per-object
    # bookkeeping; SQLAlchemy sends the list as one executemany / multi-row INSERT.
    if rows:
        session.execute(insert(table.__table__), rows)


def _document_row(d: DocumentEntry, xml: str, submission_set: str | None) -> dict[str, Any]:
    return {
        "entry_uuid": d.id,
        # A first version (ITI TF-3 4.2.3.2.13, Metadata Update): logicalId = entryUUID.
        "logical_id": d.logical_id or d.id,
        "version": d.version or "1",
        "latest": True,  # an older version is marked so by the update that supersedes it
        "unique_id": d.unique_id,
        "patient_id": d.patient_id,
        "status": d.status or APPROVED,
        "object_type": d.object_type,
        "creation_time": dtm.padded(d.creation_time),
        "service_start_time": dtm.padded(d.service_start_time),
        "service_stop_time": dtm.padded(d.service_stop_time),
        "hash": d.hash.lower() if d.hash else None,
        "size": int(d.size) if d.size else None,
        "repository_unique_id": d.repository_unique_id,
        "mime_type": d.mime_type,
        "home_community_id": d.home_community_id,
        "submission_set": submission_set,
        "xml": xml,
    }


def _submission_set_row(ss: SubmissionSet, xml: str) -> dict[str, Any]:
    return {
        "entry_uuid": ss.id,
        "unique_id": ss.unique_id,
        "source_id": ss.source_id,
        "patient_id": ss.patient_id,
        "submission_time": dtm.padded(ss.submission_time),
        "status": ss.status or APPROVED,
        "home_community_id": ss.home_community_id,
        "xml": xml,
    }


def _folder_row(f: Folder, xml: str) -> dict[str, Any]:
    return {
        "entry_uuid": f.id,
        "unique_id": f.unique_id,
        "logical_id": f.logical_id or f.id,
        "version": f.version or "1",
        "latest": True,
        "patient_id": f.patient_id,
        "last_update_time": dtm.padded(f.last_update_time),
        "status": f.status or APPROVED,
        "home_community_id": f.home_community_id,
        "xml": xml,
    }


class _SideRows:
    """Side-table rows of one submission, without duplicates: a submitter may repeat an
    event code or an author person, and the side tables' primary keys would refuse it."""

    def __init__(self) -> None:
        self._codes: dict[tuple[str, str, str], None] = {}
        self._authors: dict[tuple[str, str], None] = {}
        self._reference_ids: dict[tuple[str, str], None] = {}

    def codes(self, uuid: str, attribute: CodeAttribute, codes: Iterable[Code | None]) -> None:
        for code in codes:
            if code is not None:
                self._codes[(uuid, attribute.value, code.key())] = None

    def authors(self, uuid: str, authors: Iterable[Author]) -> None:
        for author in authors:
            if author.person:
                self._authors[(uuid, author.person)] = None

    def reference_ids(self, uuid: str, values: Iterable[str]) -> None:
        for value in values:
            self._reference_ids[(uuid, value)] = None

    def code_rows(self) -> list[dict[str, Any]]:
        return [{"object_uuid": u, "attribute": a, "code": c} for u, a, c in self._codes]

    def author_rows(self) -> list[dict[str, Any]]:
        return [{"object_uuid": u, "person": p} for u, p in self._authors]

    def reference_id_rows(self) -> list[dict[str, Any]]:
        return [{"object_uuid": u, "value": v} for u, v in self._reference_ids]


def _documents(session: Session, where) -> list[ObjectRow]:
    t = DocumentEntryRow
    rows = session.execute(
        select(
            t.entry_uuid, t.status, t.patient_id, t.unique_id, t.hash, t.size,
            t.logical_id, t.version, t.object_type,
        ).where(where)
    )  # fmt: skip
    return [ObjectRow(kind="DocumentEntry", **row._asdict()) for row in rows]


def _submission_sets(session: Session, where) -> list[ObjectRow]:
    t = SubmissionSetRow
    rows = session.execute(select(t.entry_uuid, t.status, t.patient_id, t.unique_id).where(where))
    return [ObjectRow(kind="SubmissionSet", **row._asdict()) for row in rows]


def _folders(session: Session, where) -> list[ObjectRow]:
    t = FolderRow
    rows = session.execute(select(t.entry_uuid, t.status, t.patient_id, t.unique_id).where(where))
    return [ObjectRow(kind="Folder", **row._asdict()) for row in rows]


def _associations(session: Session, where) -> list[ObjectRow]:
    t = AssociationRow
    rows = session.execute(
        select(
            t.entry_uuid, t.status, t.type.label("association_type"), t.source, t.target
        ).where(where)
    )
    return [ObjectRow(kind="Association", **row._asdict()) for row in rows]
