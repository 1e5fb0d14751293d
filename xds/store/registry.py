"""What the register step (ITI-42) stores and looks up, on a Session the caller opened.

The caller owns the transaction (one per submission: all of it stored, or none) and has
already validated the submission and given every object its entryUUID. These functions only
move values between model objects and rows; they decide nothing about XDS rules, except the
defaults a newly registered object gets.

Writes are bulk inserts (one prepared statement per table per submission, `xds.store.prepared`;
on PostgreSQL all of them in one round trip, pipelined): this is the hot path of every Register
and Provide-and-Register. DocumentEntries, SubmissionSets and Folders get an
integer id, increasing (`next_object_ids`), that keys their side-table rows; codes are ids of
the code dictionary (`code_ids`).
"""

from __future__ import annotations

import functools
import threading
import weakref
from contextlib import nullcontext
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import String, bindparam, event, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
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
from xds.store.group_commit import after_commit
from xds.store.prepared import Pending, Prepared, one_of, pipeline
from xds.store.stored_xml import Packed, utf8_size
from xds.store.tables import (
    AssociationRow,
    AuthorRow,
    Base,
    CodeAttribute,
    CodeRow,
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


def save_submission(session: Session, submission: Submission, xml: dict[str, str | Packed]) -> None:
    """Insert every object of `submission`, with `xml[obj.id]` as its stored ebRIM XML (text,
    or packed already: `stored_xml.pack`).

    Every object needs its entry in `xml`. New objects are Approved unless the model says
    otherwise. A SubmissionSet or Folder whose uniqueId is already registered makes the insert
    raise IntegrityError, also when a concurrent transaction registered it first (PostgreSQL
    waits for that transaction to end, SQLite's write lock already ordered the two); the
    caller answers XDSDuplicateUniqueIdInRegistry.
    """
    ss = submission.submission_set
    owners = ([ss] if ss is not None else []) + list(submission.documents) + list(submission.folders)
    ids = dict(zip((o.id for o in owners), next_object_ids(session, len(owners))))
    side = _SideRows(ids)
    rows: dict[type[Base], list[dict[str, Any]]] = {}
    if ss is not None:
        rows[SubmissionSetRow] = [_submission_set_row(ids[ss.id], ss, xml[ss.id])]
        side.codes(ss.id, CodeAttribute.CONTENT_TYPE, [ss.content_type_code])
        side.authors(ss.id, ss.authors)

    documents = []
    for d in submission.documents:
        documents.append(_document_row(ids[d.id], d, xml[d.id], ss.id if ss else None))
        side.codes(d.id, CodeAttribute.CLASS, [d.class_code])
        side.codes(d.id, CodeAttribute.TYPE, [d.type_code])
        side.codes(d.id, CodeAttribute.FORMAT, [d.format_code])
        side.codes(d.id, CodeAttribute.HEALTHCARE_FACILITY_TYPE, [d.healthcare_facility_type_code])
        side.codes(d.id, CodeAttribute.PRACTICE_SETTING, [d.practice_setting_code])
        side.codes(d.id, CodeAttribute.CONFIDENTIALITY, d.confidentiality_codes)
        side.codes(d.id, CodeAttribute.EVENT, d.event_codes)
        side.authors(d.id, d.authors)
        side.reference_ids(d.id, d.reference_ids)
    rows[DocumentEntryRow] = documents

    folders = []
    for f in submission.folders:
        folders.append(_folder_row(ids[f.id], f, xml[f.id]))
        side.codes(f.id, CodeAttribute.FOLDER, f.codes)
    rows[FolderRow] = folders
    rows[AssociationRow] = [
        {
            "entry_uuid": a.id,
            "type": a.type,
            "source": a.source,
            "target": a.target,
            "submission_set_status": a.submission_set_status,
            "status": a.status or APPROVED,
            "xml": xml[a.id],
            "xml_size": utf8_size(xml[a.id]),
        }
        for a in submission.associations
    ]
    rows[ObjectCodeRow] = side.code_rows(code_ids(session, side.code_keys()))
    rows[AuthorRow] = side.author_rows()
    rows[ReferenceIdRow] = side.reference_id_rows()
    with pipeline(session) if isinstance(session, Session) else nullcontext():
        for table, table_rows in rows.items():
            _insert(session, table, table_rows)


def next_object_ids(session: Session, count: int) -> list[int]:
    """`count` new object ids, each larger than every id given before.

    PostgreSQL: the sequence registry_object_id (concurrent transactions never wait for each
    other on it). SQLite: one past the largest id stored, which is safe because the write
    transaction holds the database's only write lock from its start (BEGIN IMMEDIATE). An id
    freed by a deletion may come again there, and that is harmless: its side-table rows went
    with it. The bulk loader's stand-in session (bench/load.py) numbers objects itself.
    """
    if count == 0:
        return []
    if not isinstance(session, Session):
        return session.next_object_ids(count)
    top = _NEXT_IDS.scalars(session, {"count": count})
    if session.get_bind().dialect.name == "postgresql":
        return top  # count values of the sequence
    return list(range(top[0] + 1, top[0] + 1 + count))


def _next_ids(dialect: str):
    if dialect == "postgresql":
        return select(func.nextval("registry_object_id")).select_from(func.generate_series(1, bindparam("count")))
    return select(func.max(*[func.coalesce(select(func.max(t.id)).scalar_subquery(), 0)
                             for t in (DocumentEntryRow, SubmissionSetRow, FolderRow)]))


_NEXT_IDS = Prepared(_next_ids)


#: Per database (its connection pool: an engine and those made from it with other options share
#: it): (attribute, value) -> id of the code dictionary, for codes committed to it. An id read in
#: a transaction that then rolled back may never have existed for anyone else.
_code_caches: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], int]] = weakref.WeakKeyDictionary()
_code_cache_lock = threading.Lock()


def _code_cache(session: Session) -> dict[tuple[str, str], int]:
    pool = session.get_bind().engine.pool  # the bind is a Connection in a group commit
    cache = _code_caches.get(pool)
    if cache is None:
        with _code_cache_lock:
            cache = _code_caches.setdefault(pool, {})
    return cache


def code_ids(session: Session, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The dictionary ids of these (attribute, value) codes, adding the codes not yet in it.

    Two transactions adding the same new code: on PostgreSQL the second waits on the unique
    index for the first and adds nothing (ON CONFLICT DO NOTHING), then reads the first's id;
    SQLite's write lock orders them. The ids this transaction read or added are cached once it
    has committed.
    """
    if not isinstance(session, Session):
        return session.code_ids(keys)
    wanted = set(keys)
    cache = _code_cache(session)
    found = {key: cache[key] for key in wanted if key in cache}
    missing = sorted(wanted - found.keys())
    if not missing:
        return found
    read = _read_codes(session, missing)
    new = [key for key in missing if key not in read]
    if new:
        dialect = session.get_bind().dialect.name
        statement = (pg_insert if dialect == "postgresql" else sqlite_insert)(CodeRow.__table__)
        session.execute(statement.on_conflict_do_nothing(),
                        [{"attribute": attribute, "value": value} for attribute, value in new])
        read.update(_read_codes(session, new))
    pending = session.info.setdefault("xds_new_codes", {})
    if not pending:
        after_commit(session, functools.partial(_remember_codes, cache))
        event.listen(session, "after_rollback", lambda s: s.info.pop("xds_new_codes", None), once=True)
    pending.update(read)
    found.update(read)
    return found


def _read_codes(session: Session, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    by_attribute: dict[str, list[str]] = {}
    for attribute, value in keys:
        by_attribute.setdefault(attribute, []).append(value)
    for attribute, values in by_attribute.items():
        for value, id_ in _READ_CODES.all(session, {"attribute": attribute, "values": values}):
            found[(attribute, value)] = id_
    return found


_READ_CODES = Prepared(lambda dialect: select(CodeRow.value, CodeRow.id).where(
    CodeRow.attribute == bindparam("attribute"), one_of(CodeRow.value, "values", dialect)))


def _remember_codes(cache: dict[tuple[str, str], int], session: Session) -> None:
    committed = session.info.pop("xds_new_codes", None)
    if committed:
        with _code_cache_lock:
            cache.update(committed)


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
    if not wanted:
        return {}
    values = {"uuids": wanted}
    with pipeline(session):  # the four tables in one round trip
        sent = [(objects, objects[2].send(session, values))
                for objects in (_DOCUMENTS_BY_UUID, _SUBMISSION_SETS_BY_UUID, _FOLDERS_BY_UUID, _ASSOCIATIONS_BY_UUID)]
    return {row.entry_uuid: row for objects, pending in sent for row in _rows(objects, pending)}


def hold_references(session: Session) -> None:
    """Keep the objects a submission refers to from being deleted under it, until commit.

    ITI-62 (xds.registry.remove) locks the association table against new rows while it checks
    and deletes (SHARE ROW EXCLUSIVE). A submission that read an object and then added an
    association to it after such a deletion committed would leave the association dangling; so
    on PostgreSQL a submission that refers to existing objects takes the table's ROW EXCLUSIVE
    lock before it reads them: submissions do not wait for each other, a deletion waits for
    them, and they wait for it (and then find the object gone). SQLite's write lock already
    orders the two.
    """
    if session.get_bind().dialect.name == "postgresql":
        _HOLD_REFERENCES.run(session)


_HOLD_REFERENCES = Prepared(lambda dialect: text("LOCK TABLE association IN ROW EXCLUSIVE MODE"))


def registered_unique_ids(session: Session, documents: Iterable[str], submission_sets: Iterable[str] = (),
                          folders: Iterable[str] = ()) -> tuple[dict[str, list[ObjectRow]], dict[str, dict[str, str]]]:
    """What is registered under a submission's uniqueIds, read in one round trip on PostgreSQL:
    the DocumentEntries of each document uniqueId (several when a document was resubmitted or
    has versions: the caller compares hash and size, XDSNonIdenticalHash / XDSNonIdenticalSize),
    and for "SubmissionSet" and "Folder" uniqueId -> entryUUID of those registered already.

    Document uniqueIds are locked first, until commit, so concurrent submissions of one are
    checked one after the other: a document uniqueId may be registered twice (a resubmission
    with the same hash and size), so no unique index can decide between two with different
    hashes. PostgreSQL: a transaction-scoped advisory lock per uniqueId (and schema: advisory
    locks are the database's), taken in sorted order so two submissions never wait on each other
    crosswise. SQLite: the write transaction already holds the database's only write lock.
    SubmissionSet and Folder uniqueIds are unique in the database: this early read lets the
    register step name every duplicate in its answer, and the unique indexes decide races.
    """
    wanted = {kind: list(dict.fromkeys(ids)) for kind, ids in
              (("DocumentEntry", documents), ("SubmissionSet", submission_sets), ("Folder", folders))}
    postgresql = session.get_bind().dialect.name == "postgresql"
    with pipeline(session):
        locks = [_LOCK_UNIQUE_ID.send(session, {"unique_id": unique_id})
                 for unique_id in sorted(wanted["DocumentEntry"]) if postgresql]
        sent = {kind: statement.send(session, {"unique_ids": wanted[kind]})
                for kind, statement in (("DocumentEntry", _DOCUMENTS_BY_UNIQUE_ID[2]), *_UNIQUE_IDS.items())
                if wanted[kind]}
    for lock in locks:
        lock.all()
    found: dict[str, list[ObjectRow]] = {}
    if "DocumentEntry" in sent:
        for row in _rows(_DOCUMENTS_BY_UNIQUE_ID, sent.pop("DocumentEntry")):
            found.setdefault(row.unique_id or "", []).append(row)
    return found, {kind: dict(pending.all()) for kind, pending in sent.items()}


_LOCK_UNIQUE_ID = Prepared(lambda dialect: select(func.pg_advisory_xact_lock(
    func.hashtextextended(func.concat(func.current_schema(), "|", bindparam("unique_id", type_=String)), 0))))


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
    """uniqueId -> entryUUID of the SubmissionSets or Folders already registered (see
    `registered_unique_ids`)."""
    if kind not in _UNIQUE_IDS:
        raise ValueError(f"uniqueIds are unique only for SubmissionSet and Folder, not {kind}")
    wanted = {"submission_sets": unique_ids} if kind == "SubmissionSet" else {"folders": unique_ids}
    return registered_unique_ids(session, (), **wanted)[1].get(kind, {})


_UNIQUE_IDS = {kind: Prepared(lambda dialect, t=table: select(t.unique_id, t.entry_uuid)
                              .where(one_of(t.unique_id, "unique_ids", dialect)))
               for kind, table in (("SubmissionSet", SubmissionSetRow), ("Folder", FolderRow))}


# -- rows <-> model -----------------------------------------------------------------------


def _insert(session: Session, table: type[Base], rows: list[dict[str, Any]]) -> None:
    # One executemany of a prepared INSERT naming every column (each row gives them all); the
    # bulk loader's stand-in session (bench/load.py) collects Core inserts instead.
    if not rows:
        return
    if isinstance(session, Session):
        _INSERTS[table].run(session, rows)
    else:
        session.execute(insert(table.__table__), rows)


_INSERTS = {table: Prepared(lambda dialect, t=table.__table__: insert(t).values(
                {column.name: bindparam(column.name) for column in t.columns}))
            for table in (DocumentEntryRow, SubmissionSetRow, FolderRow, AssociationRow, ObjectCodeRow,
                          AuthorRow, ReferenceIdRow)}


def _document_row(id_: int, d: DocumentEntry, xml: str | Packed, submission_set: str | None) -> dict[str, Any]:
    return {
        "id": id_,
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
        "xml_size": utf8_size(xml),
    }


def _submission_set_row(id_: int, ss: SubmissionSet, xml: str | Packed) -> dict[str, Any]:
    return {
        "id": id_,
        "entry_uuid": ss.id,
        "unique_id": ss.unique_id,
        "source_id": ss.source_id,
        "patient_id": ss.patient_id,
        "submission_time": dtm.padded(ss.submission_time),
        "status": ss.status or APPROVED,
        "home_community_id": ss.home_community_id,
        "xml": xml,
        "xml_size": utf8_size(xml),
    }


def _folder_row(id_: int, f: Folder, xml: str | Packed) -> dict[str, Any]:
    return {
        "id": id_,
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
        "xml_size": utf8_size(xml),
    }


class _SideRows:
    """Side-table rows of one submission, without duplicates: a submitter may repeat an
    event code or an author person, and the side tables' primary keys would refuse it."""

    def __init__(self, ids: dict[str, int]) -> None:
        self._ids = ids  # entryUUID -> object id
        self._codes: dict[tuple[int, str, str], None] = {}
        self._authors: dict[tuple[int, str], None] = {}
        self._reference_ids: dict[tuple[int, str], None] = {}

    def codes(self, uuid: str, attribute: CodeAttribute, codes: Iterable[Code | None]) -> None:
        for code in codes:
            if code is not None:
                self._codes[(self._ids[uuid], attribute.value, code.key())] = None

    def authors(self, uuid: str, authors: Iterable[Author]) -> None:
        for author in authors:
            if author.person:
                self._authors[(self._ids[uuid], author.person)] = None

    def reference_ids(self, uuid: str, values: Iterable[str]) -> None:
        for value in values:
            self._reference_ids[(self._ids[uuid], value)] = None

    def code_keys(self) -> set[tuple[str, str]]:
        return {(a, c) for _, a, c in self._codes}

    def code_rows(self, ids: dict[tuple[str, str], int]) -> list[dict[str, Any]]:
        return [{"object_id": o, "code_id": ids[(a, c)]} for o, a, c in self._codes]

    def author_rows(self) -> list[dict[str, Any]]:
        return [{"object_id": o, "person": p} for o, p in self._authors]

    def reference_id_rows(self) -> list[dict[str, Any]]:
        return [{"object_id": o, "value": v} for o, v in self._reference_ids]


_OBJECT_COLUMNS = {
    "DocumentEntry": ("entry_uuid", "status", "patient_id", "unique_id", "hash", "size", "logical_id", "version",
                      "object_type"),
    "SubmissionSet": ("entry_uuid", "status", "patient_id", "unique_id"),
    "Folder": ("entry_uuid", "status", "patient_id", "unique_id"),
}


def _objects(kind: Kind, table: type[Base], key: str, parameter: str) -> tuple[Kind, tuple[str, ...], Prepared]:
    """(kind, field names, statement): the ObjectRow fields of `table`'s rows whose `key`
    column is one of the list parameter `parameter`."""
    if kind == "Association":
        fields = ("entry_uuid", "status", "association_type", "source", "target")
        columns = [AssociationRow.entry_uuid, AssociationRow.status, AssociationRow.type,
                   AssociationRow.source, AssociationRow.target]
    else:
        fields = _OBJECT_COLUMNS[kind]
        columns = [getattr(table, name) for name in fields]
    return kind, fields, Prepared(lambda dialect: select(*columns).where(
        one_of(getattr(table, key), parameter, dialect)))


_DOCUMENTS_BY_UUID = _objects("DocumentEntry", DocumentEntryRow, "entry_uuid", "uuids")
_DOCUMENTS_BY_UNIQUE_ID = _objects("DocumentEntry", DocumentEntryRow, "unique_id", "unique_ids")
_SUBMISSION_SETS_BY_UUID = _objects("SubmissionSet", SubmissionSetRow, "entry_uuid", "uuids")
_FOLDERS_BY_UUID = _objects("Folder", FolderRow, "entry_uuid", "uuids")
_ASSOCIATIONS_BY_UUID = _objects("Association", AssociationRow, "entry_uuid", "uuids")


def _rows(objects: tuple[Kind, tuple[str, ...], Prepared], pending: Pending) -> list[ObjectRow]:
    kind, fields, _statement = objects
    return [ObjectRow(kind, **dict(zip(fields, row))) for row in pending.all()]
