"""Delete Document Set (ITI-62) at the Document Registry: the Remove Metadata half of the
Remove Metadata and Documents (RMD) profile (ITI TF-2b 3.62, as the RMD supplement has it).

What belongs here: deciding whether the objects a RemoveObjectsRequest names may be removed,
and removing them. What does not: the XML (xds.ebrim.remove reads the request), the documents
themselves (a Document Repository removes those on ITI-86, xds.repository.remove).

Theory of operation. The request names DocumentEntries, SubmissionSets, Folders and
Associations by entryUUID. Inside one write transaction (all of them are removed, or none):

1. Every id must be an object of this registry, else UnresolvedReferenceException
   (ITI TF-2b 3.62.4.1.3), one error per id.
2. Nothing may be left referring to a removed object: an Association that the request does
   not remove and whose sourceObject or targetObject is a removed object gives
   ReferencesExistException, one error per object naming the associations. So a document is
   removed with the HasMember that puts it in its SubmissionSet, and a replaced document with
   the RPLC that replaced it (NIST tests 30004-30008).
3. Nothing may be left referred to by nothing: when a removed Association's source or target
   stays, some other Association must still refer to it, else XDSUnreferencedObjectException
   (the NIST toolkit's check of the metadata model, test 30002: a SubmissionSet whose last
   member goes must go too; a DocumentEntry must stay in a SubmissionSet).
4. The rows go: the objects and their side-table rows (codes, authors, reference ids). A Folder
   that loses a member gets a new lastUpdateTime, as when it gains one.

Deprecation is not undone: a document replaced by one that is removed stays Deprecated
(ITI-62 removes metadata; reinstating a version is Metadata Update's, ITI-57).

Concurrency. SQLite: a write transaction holds the database's one write lock. PostgreSQL: the
transaction locks the association table against writers (SHARE ROW EXCLUSIVE, which readers
do not notice) before it reads what refers to what, so a concurrent submission cannot add an
association to an object while it is being removed unseen, and two removals are checked one
after the other. A held lock past busy_timeout answers XDSRegistryBusy, nothing removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from lxml import etree
from sqlalchemy import delete, or_, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from xds.dtm import dtm
from xds.ebrim.remove import read_remove_objects
from xds.ebrim.submission import SubmissionLimits
from xds.errors import XdsError
from xds.model import AssociationType
from xds.registry.register import _is_busy, utc_now
from xds.result import DocumentTouched, Result
from xds.rules import error
from xds.store import registry as store
from xds.store.db import chunked
from xds.store.tables import (
    AssociationRow,
    AuthorRow,
    DocumentEntryRow,
    FolderRow,
    ObjectCodeRow,
    ReferenceIdRow,
    SubmissionSetRow,
)

log = logging.getLogger("xds.registry")

HAS_MEMBER = AssociationType.HAS_MEMBER.value
#: The tables of each kind of object; those whose rows have side-table rows (keyed by their id);
#: the side tables.
_OBJECT_TABLES = (DocumentEntryRow, SubmissionSetRow, FolderRow, AssociationRow)
_KEYED_TABLES = (DocumentEntryRow, SubmissionSetRow, FolderRow)
_SIDE_TABLES = (ObjectCodeRow, AuthorRow, ReferenceIdRow)
#: How many referring associations one ReferencesExistException names before "and N more".
_NAMED = 5


@dataclass(frozen=True)
class _Link:
    """An Association as the checks need it."""

    entry_uuid: str
    type: str
    source: str
    target: str


@dataclass
class DeleteDocumentSet:
    #: Write sessions (on SQLite they begin IMMEDIATE: xds.store.db).
    sessions: sessionmaker
    clock: Callable[[], datetime] = field(default=utc_now)
    #: The most objects one request may name (the registry's max_submission_objects).
    max_objects: int = SubmissionLimits.max_objects
    #: Called with the write session, the ids removed and the transaction's name before their
    #: rows go (xds.consent.bppc: a deleted BPPC document no longer grants); may raise to undo it.
    before_remove: Callable[[Session, list[str], str], None] | None = None

    @classmethod
    def of(cls, registry) -> "DeleteDocumentSet":
        """The removal step of a DocumentRegistry: its database, clock, limits and consent hook."""
        return cls(registry.sessions, registry.clock, registry.max_submission_objects,
                   getattr(registry.after_store, "removed", None))

    def delete(self, request: etree._Element) -> Result:
        """Check and carry out one RemoveObjectsRequest. The Result's errors say why nothing
        was removed; its documents name each object removed (or, on failure, each object named
        that exists) with its patient, for the audit record."""
        read = read_remove_objects(request, self.max_objects)
        if read.errors:
            return Result(read.errors)
        try:
            with self.sessions.begin() as session:
                _lock_associations(session)
                errors, touched, removed_links = self._check(session, read.ids)
                if errors:
                    session.rollback()
                    return Result(errors, documents=touched)
                if self.before_remove is not None:
                    self.before_remove(session, read.ids, "ITI-62 Delete Document Set")
                self._remove(session, read.ids, removed_links)
        except OperationalError as exc:
            if _is_busy(exc):
                return Result([error("remove.busy", reason="the database is locked")])
            raise
        log.info("removed %d registry object(s): %s", len(read.ids), ", ".join(read.ids[:20]))
        return Result([], documents=touched)

    # --- the checks ------------------------------------------------------------------------------

    def _check(self, session: Session, ids: list[str]) -> tuple[list[XdsError], list[DocumentTouched], list[_Link]]:
        """The errors of removing `ids`, the objects named with their patients, and the
        Associations among `ids` (which the removal needs to know the Folders that lose a
        member)."""
        found = store.find_entries_by_uuid(session, ids)
        removed = set(ids)
        errors = [error("remove.unresolved", oid, id=oid) for oid in ids if oid not in found]
        links = _associations_of(session, removed)
        ends = {end for oid in ids if found.get(oid) and found[oid].kind == "Association"
                for end in (found[oid].source, found[oid].target) if end and end not in removed}
        kept_ends = store.find_entries_by_uuid(session, ends) if ends else {}
        touched = [DocumentTouched(oid, _patient_of(found[oid], found, kept_ends)) for oid in ids if oid in found]
        removed_links = [_Link(oid, found[oid].association_type or "", found[oid].source or "", found[oid].target or "")
                         for oid in ids if oid in found and found[oid].kind == "Association"]
        if errors:
            return errors, touched, removed_links

        # 2. References left to a removed object.
        referring: dict[str, list[_Link]] = {}
        for link in links:
            if link.entry_uuid in removed:
                continue
            for end in {link.source, link.target} & removed:
                referring.setdefault(end, []).append(link)
        for oid in ids:
            if oid in referring:
                names = [f"{link.entry_uuid} ({_short(link.type)})" for link in referring[oid]]
                more = len(names) - _NAMED
                listed = ", ".join(names[:_NAMED]) + (f" and {more} more" if more > 0 else "")
                errors.append(error("remove.references-exist", oid, what=found[oid].kind, id=oid,
                                    count=len(names), associations=listed))

        # 3. Objects a removed association leaves referred to by nothing.
        if kept_ends:
            still = _referred_to(session, set(kept_ends), removed)
            reported: set[str] = set()
            for oid in ids:
                row = found[oid]
                if row.kind != "Association":
                    continue
                for end in (row.source, row.target):
                    if end in kept_ends and end not in still and end not in reported:
                        reported.add(end)
                        errors.append(error("remove.unreferenced", oid, association=oid,
                                            what=kept_ends[end].kind, id=end))
        return errors, touched, removed_links

    # --- removing --------------------------------------------------------------------------------

    def _remove(self, session: Session, ids: list[str], removed_links: list[_Link]) -> None:
        for chunk in chunked(ids):
            # Side-table rows first: they are found by the ids of the objects still there.
            object_ids = [id_ for table in _KEYED_TABLES
                          for id_ in session.scalars(select(table.id).where(table.entry_uuid.in_(chunk)))]
            for table in _SIDE_TABLES:
                session.execute(delete(table.__table__).where(table.object_id.in_(object_ids)))
            for table in _OBJECT_TABLES:
                session.execute(delete(table.__table__).where(table.entry_uuid.in_(chunk)))
        # A Folder's lastUpdateTime changes whenever its content does (ITI TF-3 4.2.3.4): here
        # when it loses a member and stays.
        removed = set(ids)
        sources = {link.source for link in removed_links if link.type == HAS_MEMBER and link.source not in removed}
        if sources:
            store.touch_folders(session, list(sources), dtm(self.clock()))  # non-folders match no row


def _lock_associations(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE association IN SHARE ROW EXCLUSIVE MODE"))


def _associations_of(session: Session, ids: Iterable[str]) -> list[_Link]:
    """Every Association whose sourceObject or targetObject is one of `ids`."""
    t = AssociationRow
    links: dict[str, _Link] = {}
    for chunk in chunked(list(ids)):
        rows = session.execute(select(t.entry_uuid, t.type, t.source, t.target)
                               .where(or_(t.source.in_(chunk), t.target.in_(chunk))))
        links.update({row.entry_uuid: _Link(*row) for row in rows})
    return list(links.values())


def _referred_to(session: Session, ends: set[str], removed: set[str]) -> set[str]:
    """Those of `ends` that an Association outside `removed` refers to."""
    return {end for link in _associations_of(session, ends) if link.entry_uuid not in removed
            for end in (link.source, link.target) if end in ends}


def _patient_of(row, *known: dict) -> str:
    """An object's patient; an Association's is that of its ends (a HasMember's source may be a
    SubmissionSet, a relationship's both ends are documents of one patient)."""
    if row.patient_id:
        return row.patient_id
    for end in (row.source, row.target):
        for objects in known:
            other = objects.get(end)
            if other is not None and other.patient_id:
                return other.patient_id
    return ""


def _short(association_type: str) -> str:
    return association_type.rsplit(":", 1)[-1]
