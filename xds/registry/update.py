"""Update Document Set (ITI-57) at the Document Registry: the Metadata Update option
(ITI TF-2b 3.57, and ITI TF-3 4.1 for versions).

What belongs here: reading the operations an Update Document Set request carries, checking each
against what the registry holds, and carrying them out. What does not: the XML (xds.ebrim
reads it, xds.ebrim.versions names the option's parts), the checks a submission shares with
Register Document Set-b (xds.registry.validate), the queries that show versions
(xds.registry.find, "Metadata levels").

Theory of operation. The request is a SubmitObjectsRequest with one SubmissionSet; every other
object in it belongs to one operation (ITI TF-2b 3.57.4.1.3.3):

- a new version of a DocumentEntry or Folder (3.57.4.1.3.3.1 and .3.3): the object with an lid
  naming the logical object it updates and an id of its own, and the SubmissionSet's HasMember
  of it with a PreviousVersion slot naming the version it replaces (the latest). It keeps the
  uniqueId (and a DocumentEntry its objectType) and gets the next versionName and the status of
  the version it replaces, which becomes Deprecated. Unless the HasMember says
  AssociationPropagation = no, the new version takes over the Approved associations of the one
  it replaces: the Folders that hold it, its document relationships (3.57.4.1.3.3.1.5). A new
  version may name another patient (a patient id correction) only when the version it replaces
  is linked to nothing of its patient (3.57.4.1.3.3.1.7: XDSPatientIDReconciliationError).
- a status change (3.57.4.1.3.3.2 and .3.4): an UpdateAvailabilityStatus association from the
  SubmissionSet to the latest version of a DocumentEntry or Folder, or to a document relationship
  or a Folder's HasMember, with OriginalStatus (what it is now) and NewStatus. No new version.
- a new association between registered objects (3.57.4.1.3.3.5 and .3.6): a document relationship
  between two DocumentEntries, or a Folder's HasMember of a DocumentEntry, of one patient, with
  the SubmissionSet's HasMember of it (or the NIST toolkit's SubmitAssociation, its tests' form).

Anything else is an operation this registry cannot decode (XDSMetadataUpdateOperationError),
and so is one request changing one logical object twice (3.57.4.1.3.1). All of it is stored,
the SubmissionSet and the operations' associations with it, or none of it (3.57.4.1.3.5: Success
or Failure, never PartialSuccess).

Concurrency. The database holds (logicalID, version) unique, and the update that supersedes a
version marks it in a statement conditioned on its being the latest still; a status change is
conditioned on the status its request names. Of two concurrent updates of one object the second
finds that and fails with XDSMetadataVersionError, nothing stored.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from lxml import etree
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from xds.dtm import dtm
from xds.ebrim import ns
from xds.ebrim.slots import set_slot
from xds.ebrim.submission import ParsedSubmission, plan_uuids, rewrite_model, rewrite_xml
from xds.ebrim.versions import (
    NEW_STATUS,
    ORIGINAL_STATUS,
    PREVIOUS_VERSION,
    SUBMIT_ASSOCIATION,
    UPDATE_AVAILABILITY_STATUS,
    propagates,
    set_version,
    slot_values,
)
from xds.ebrim.write import write_registry_object
from xds.errors import XdsError
from xds.model import Association, AssociationType, AvailabilityStatus, DocumentEntry, Folder, Submission
from xds.model.identifiers import is_uuid_urn
from xds.registry.register import DocumentRegistry, _is_busy, serialized, standalone
from xds.registry.validate import validate
from xds.result import Result
from xds.rules import error
from xds.store import registry as store
from xds.store.db import chunked
from xds.store.tables import AssociationRow, DocumentEntryRow, FolderRow

log = logging.getLogger("xds.registry")

APPROVED = AvailabilityStatus.APPROVED.value
DEPRECATED = AvailabilityStatus.DEPRECATED.value
HAS_MEMBER = AssociationType.HAS_MEMBER.value
#: The statuses an update may set (ITI TF-2b 3.57.4.1.3.3.2).
STATUSES = (APPROVED, DEPRECATED)
#: The association types ITI TF-3 4.2.2 defines (a new association is one of them).
KNOWN_TYPES = frozenset(t.value for t in AssociationType)
TABLES = {"DocumentEntry": DocumentEntryRow, "Folder": FolderRow}


# --- the operations of a request (the model alone) ------------------------------------------------


@dataclass
class NewVersion:
    """A DocumentEntry or Folder of the request and the SubmissionSet's HasMember of it."""

    kind: str  # "DocumentEntry" or "Folder"
    obj: DocumentEntry | Folder
    member: Association
    previous: str  # the PreviousVersion slot's value

    @property
    def logical_id(self) -> str:
        return self.obj.logical_id or ""


@dataclass
class Operations:
    versions: list[NewVersion] = field(default_factory=list)
    #: UpdateAvailabilityStatus associations.
    statuses: list[Association] = field(default_factory=list)
    #: New associations between registered objects, each with the SubmissionSet's link to it.
    associations: list[tuple[Association, Association]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.versions or self.statuses or self.associations)


def operations(sub: Submission) -> tuple[Operations, list[XdsError]]:
    """What each object of `sub` is for (see the module's docstring), and the objects that are
    for nothing this transaction knows."""
    ops, problems = Operations(), []
    ss = sub.submission_set
    if ss is None:
        return ops, problems  # the reader said so
    own = {o.id: o for o in sub.objects()}
    links = {a.target: a for a in sub.associations
             if a.source == ss.id and a.type in (HAS_MEMBER, SUBMIT_ASSOCIATION)}
    used: set[str] = set()

    for kind, objects in (("DocumentEntry", sub.documents), ("Folder", sub.folders)):
        for obj in objects:
            lid = obj.logical_id
            member = links.get(obj.id)
            if member is not None and member.type == HAS_MEMBER:
                used.add(member.id)  # it belongs to this object, whatever is wrong with it
            if not lid or lid == obj.id:
                how = "has no lid" if not lid else "has lid equal to its own id"
                problems.append(error("update.first-version", obj.id, what=kind, id=obj.id, how=how))
                continue
            if not is_uuid_urn(lid):
                problems.append(error("update.symbolic-lid", obj.id, what=kind, id=obj.id, value=lid))
                continue
            previous = slot_values(member, PREVIOUS_VERSION) if member and member.type == HAS_MEMBER else None
            if previous is None:
                problems.append(error("update.no-previous-version", obj.id, what=kind, id=obj.id))
                continue
            if len(previous) != 1:
                problems.append(error("update.bad-previous-version", member.id, id=member.id, count=len(previous)))
                continue
            ops.versions.append(NewVersion(kind, obj, member, previous[0].strip()))

    for a in sub.associations:
        if a.id in used:
            continue
        if a.type == UPDATE_AVAILABILITY_STATUS:
            ops.statuses.append(a)
        elif a.source == ss.id and a.type in (HAS_MEMBER, SUBMIT_ASSOCIATION):
            target = own.get(a.target)
            if not isinstance(target, Association) or target.type == UPDATE_AVAILABILITY_STATUS:
                problems.append(error("update.unknown-operation", a.id, what="Association", id=a.id))
        elif a.source in own or a.target in own or a.id not in links:
            problems.append(error("update.unknown-operation", a.id, what="Association", id=a.id))
        elif a.type not in KNOWN_TYPES:
            problems.append(error("association.bad-type", a.id, id=a.id, value=a.type))
        elif a.source == a.target:
            problems.append(error("association.self", a.id, id=a.id, source=a.source))
        else:
            ops.associations.append((a, links[a.id]))

    changed: dict[str, str] = {}
    for lid, what in [*((v.logical_id, v.obj.id) for v in ops.versions), *((a.target, a.id) for a in ops.statuses)]:
        if lid in changed:
            problems.append(error("update.same-object-twice", what, first=changed[lid], second=what, lid=lid))
        changed.setdefault(lid, what)
    if not ops and not problems:
        problems.append(error("update.no-operation", ss.id))
    return ops, problems


def _core(sub: Submission, ops: Operations) -> Submission:
    """What Register Document Set-b's validator judges of the request: the SubmissionSet, the new
    versions and the SubmissionSet's HasMember of each (the rest is this module's)."""
    return Submission(sub.submission_set, list(sub.documents), list(sub.folders), [v.member for v in ops.versions])


# --- the registry's rows the checks read ----------------------------------------------------------


@dataclass(frozen=True)
class Version:
    """A version in the registry."""

    kind: str
    entry_uuid: str
    logical_id: str
    version: str
    latest: bool
    status: str
    unique_id: str
    patient_id: str
    object_type: str | None = None


def _versions(session: Session, kind: str, column, values: list[str], latest_only: bool) -> list[Version]:
    t = TABLES[kind]
    columns = [t.entry_uuid, t.logical_id, t.version, t.latest, t.status, t.unique_id, t.patient_id]
    if kind == "DocumentEntry":
        columns.append(t.object_type)
    found = []
    for chunk in chunked(values):
        statement = select(*columns).where(column(t).in_(chunk))
        if latest_only:
            statement = statement.where(t.latest.is_(True))
        found += [Version(kind, *row) for row in session.execute(statement)]
    return found


def latest_versions(session: Session, kind: str, logical_ids: list[str]) -> dict[str, Version]:
    """logicalID -> its latest version, for those of `logical_ids` the registry holds."""
    return {v.logical_id: v for v in _versions(session, kind, lambda t: t.logical_id, logical_ids, True)}


def versions_by_uuid(session: Session, uuids: list[str]) -> dict[str, Version]:
    found = {}
    for kind in TABLES:
        found.update({v.entry_uuid: v for v in _versions(session, kind, lambda t: t.entry_uuid, uuids, False)})
    return found


@dataclass(frozen=True)
class _Link:
    entry_uuid: str
    type: str
    source: str
    target: str


def _approved_links(session: Session, uuids: list[str]) -> list[_Link]:
    """The Approved associations with one of `uuids` at an end."""
    t = AssociationRow
    links: dict[str, _Link] = {}
    for chunk in chunked(uuids):
        rows = session.execute(select(t.entry_uuid, t.type, t.source, t.target).where(
            or_(t.source.in_(chunk), t.target.in_(chunk)), t.status == APPROVED))
        links.update({row.entry_uuid: _Link(*row) for row in rows})
    return list(links.values())


# --- the transaction ------------------------------------------------------------------------------


class _Conflict(Exception):
    """A concurrent request changed what this one was checked against: roll back."""

    def __init__(self, errors: list[XdsError]):
        self.errors = errors


@dataclass
class UpdateDocumentSet:
    #: The register step whose database, codes, patients, clock and limits the update shares.
    registry: DocumentRegistry

    @classmethod
    def of(cls, registry: DocumentRegistry) -> "UpdateDocumentSet":
        return cls(registry)

    def update(self, request: etree._Element) -> Result:
        """Check and carry out one Update Document Set request. The Result's errors say why
        nothing was changed; it names the SubmissionSet and its patient (for the audit record)."""
        parsed = self.registry.read(request)
        sub = parsed.submission
        ss = sub.submission_set
        named = dict(patient_id=(ss.patient_id or "") if ss else "",
                     submission_set_unique_id=(ss.unique_id or "") if ss else "")
        problems = list(parsed.errors)
        if parsed.over_limits:
            return Result(problems, **named)
        ops, found = operations(sub)
        problems += found
        problems += validate(_core(sub, ops), self.registry.codes)
        if any(p.is_error for p in problems):
            return Result(problems, **named)
        try:
            with self.registry.sessions.begin() as session:
                problems += self._check(session, sub, ops)
                if any(p.is_error for p in problems):
                    session.rollback()
                    return Result(problems, **named)
                self._store(session, parsed, ops)
        except _Conflict as conflict:
            return Result(problems + conflict.errors, **named)
        except IntegrityError as exc:
            # A concurrent update stored the same version first (uq_..._logical_id_version), or a
            # concurrent submission the same SubmissionSet uniqueId.
            log.info("update lost a race: %s", exc.orig)
            return Result(problems + self._race_errors(sub, ops), **named)
        except OperationalError as exc:
            if _is_busy(exc):
                return Result(problems + [error("update.busy", reason="the database is locked")], **named)
            raise
        log.info("updated the registry: %d version(s), %d status change(s), %d association(s)",
                 len(ops.versions), len(ops.statuses), len(ops.associations))
        return Result(problems, **named)

    # --- checks against the registry ------------------------------------------------------------

    def _check(self, session: Session, sub: Submission, ops: Operations) -> list[XdsError]:
        problems: list[XdsError] = []
        ss = sub.submission_set
        store.hold_references(session)  # an update always refers to what is registered
        if self.registry.check_patient_ids:
            ids = {o.patient_id for o in [ss, *sub.documents, *sub.folders] if o and o.patient_id}
            current = self.registry.patients.resolve(session, ids)
            problems += [error("patient.unknown", ss.id, patient=pid) for pid in sorted(ids) if current.get(pid) is None]
        own_uuids = [o.id for o in sub.objects() if o.id.startswith("urn:uuid:")]
        problems += [error("object.uuid-exists", oid, id=oid) for oid in store.find_entries_by_uuid(session, own_uuids)]
        if ss.unique_id:
            for unique_id, existing in store.existing_unique_ids(session, "SubmissionSet", [ss.unique_id]).items():
                problems.append(error("unique-id.in-registry", ss.id, what="SubmissionSet", value=unique_id,
                                      existing=existing))
        problems += self._check_versions(session, ops)
        problems += self._check_statuses(session, sub, ops)
        problems += self._check_associations(session, ops)
        return problems

    def _check_versions(self, session: Session, ops: Operations) -> list[XdsError]:
        problems = []
        for kind in TABLES:
            wanted = [v for v in ops.versions if v.kind == kind]
            if not wanted:
                continue
            latest = latest_versions(session, kind, [v.logical_id for v in wanted])
            for v in wanted:
                obj, lid = v.obj, v.logical_id
                current = latest.get(lid)
                if current is None:
                    problems.append(error("update.unknown-logical-id", obj.id, what=kind, id=obj.id, lid=lid))
                    continue
                if v.previous != current.version:
                    problems.append(error("update.version-mismatch", obj.id, what=kind, id=obj.id, value=v.previous,
                                          lid=lid, latest=current.version, latest_uuid=current.entry_uuid))
                if obj.unique_id != current.unique_id:
                    problems.append(error("update.unique-id-changed", obj.id, what=kind, id=obj.id,
                                          value=obj.unique_id, lid=lid, existing=current.unique_id))
                if isinstance(obj, DocumentEntry) and obj.object_type != current.object_type:
                    problems.append(error("update.object-type-changed", obj.id, id=obj.id, value=obj.object_type,
                                          lid=lid, existing=current.object_type))
                if obj.patient_id != current.patient_id and propagates(v.member):
                    linked = propagated_links(session, current)
                    if linked:
                        shown = ", ".join(f"{link.entry_uuid} ({_short(link.type)})" for link in linked[:5])
                        problems.append(error("update.patient-linked", obj.id, what=kind, id=obj.id, lid=lid,
                                              existing=current.patient_id, patient=obj.patient_id, links=shown))
        return problems

    def _check_statuses(self, session: Session, sub: Submission, ops: Operations) -> list[XdsError]:
        problems = []
        ss = sub.submission_set
        targets = store.find_entries_by_uuid(session, [a.target for a in ops.statuses])
        versions = versions_by_uuid(session, [a.target for a in ops.statuses])
        changed_lids = {v.logical_id for v in ops.versions}
        for a in ops.statuses:
            if a.source != ss.id:
                problems.append(error("update.status-source", a.id, id=a.id, source=a.source, ss=ss.id))
            values = {}
            for name in (ORIGINAL_STATUS, NEW_STATUS):
                found = slot_values(a, name)
                if found is None or len(found) != 1:
                    problems.append(error("update.status-slot", a.id, id=a.id, slot=name))
                elif found[0].strip() not in STATUSES:
                    problems.append(error("update.bad-status", a.id, id=a.id, slot=name, value=found[0]))
                else:
                    values[name] = found[0].strip()
            target = targets.get(a.target)
            if target is None:
                problems.append(error("update.status-target-unknown", a.id, id=a.id, target=a.target))
                continue
            if target.kind == "SubmissionSet":
                problems.append(error("update.status-of-submission-set", a.id, id=a.id, target=a.target))
                continue
            if target.kind == "Association":
                problem = self._association_may_change(session, a, target)
                if problem is not None:
                    problems.append(problem)
                    continue
            else:
                version = versions[a.target]
                if not version.latest:
                    latest = latest_versions(session, version.kind, [version.logical_id])[version.logical_id]
                    problems.append(error("update.status-not-latest", a.id, id=a.id, version=version.version,
                                          what=version.kind, lid=version.logical_id, latest=latest.version,
                                          latest_uuid=latest.entry_uuid))
                    continue
                if version.logical_id in changed_lids:
                    first = next(v.obj.id for v in ops.versions if v.logical_id == version.logical_id)
                    problems.append(error("update.same-object-twice", a.id, first=first, second=a.id,
                                          lid=version.logical_id))
            original = values.get(ORIGINAL_STATUS)
            if original is not None and original != target.status:
                problems.append(error("update.original-status", a.id, id=a.id, what=target.kind, target=a.target,
                                      value=original, existing=target.status))
        return problems

    @staticmethod
    def _association_may_change(session: Session, a: Association, target) -> XdsError | None:
        """A document relationship or a Folder's HasMember may change status; a SubmissionSet's
        HasMember, or an association of this option, may not (ITI TF-2b 3.57.4.1.3.3.4)."""
        kind = target.association_type
        source = store.find_entries_by_uuid(session, [target.source]).get(target.source)
        source_kind = source.kind if source is not None else "object outside this registry"
        if kind in KNOWN_TYPES and (kind != HAS_MEMBER or source_kind == "Folder"):
            return None
        return error("update.status-of-association", a.id, id=a.id, target=a.target, type=_short(kind or ""),
                     source_kind=source_kind)

    def _check_associations(self, session: Session, ops: Operations) -> list[XdsError]:
        problems = []
        ends = store.find_entries_by_uuid(session, [end for a, _ in ops.associations for end in (a.source, a.target)])
        for a, _link in ops.associations:
            kind = _short(a.type)
            source, target = ends.get(a.source), ends.get(a.target)
            missing = False
            for end, ref, row in (("sourceObject", a.source, source), ("targetObject", a.target, target)):
                if row is None:
                    problems.append(error("update.association-end-unknown", a.id, id=a.id, type=kind, end=end, ref=ref))
                    missing = True
                elif row.status == DEPRECATED:
                    problems.append(error("update.association-end-deprecated", a.id, id=a.id, type=kind, end=end,
                                          ref=ref))
            if missing:
                continue
            expected = ("Folder", "DocumentEntry") if a.type == HAS_MEMBER else ("DocumentEntry", "DocumentEntry")
            if (source.kind, target.kind) != expected:
                problems.append(error("update.association-kind", a.id, id=a.id, type=kind, source_kind=source.kind,
                                      source=a.source, target_kind=target.kind, target=a.target))
                continue
            if source.patient_id != target.patient_id:
                problems.append(error("update.association-patients", a.id, id=a.id, type=kind, source=a.source,
                                      source_patient=source.patient_id, target=a.target,
                                      target_patient=target.patient_id))
            existing = session.scalar(select(AssociationRow.entry_uuid).where(
                AssociationRow.source == a.source, AssociationRow.target == a.target, AssociationRow.type == a.type,
                AssociationRow.status == APPROVED).limit(1))
            if existing is not None:
                problems.append(error("update.association-exists", a.id, id=a.id, type=kind, source=a.source,
                                      target=a.target, existing=existing))
        return problems

    # --- storing ----------------------------------------------------------------------------------

    def _store(self, session: Session, parsed: ParsedSubmission, ops: Operations) -> None:
        sub = parsed.submission
        now = dtm(self.registry.clock())
        elements = {oid: standalone(element) for oid, element in parsed.elements.items()}
        mapping = plan_uuids(sub)
        rewrite_xml(elements, sub, mapping)
        for element in elements.values():
            element.set("status", APPROVED)
        parsed.elements.clear()
        parsed.elements.update(elements)
        rewrite_model(parsed, mapping)
        for obj in sub.objects():
            obj.status = APPROVED

        touched_folders: set[str] = set()
        for kind in TABLES:
            wanted = [v for v in ops.versions if v.kind == kind]
            if wanted:
                latest = latest_versions(session, kind, [v.logical_id for v in wanted])
                for v in wanted:
                    current = latest.get(v.logical_id)
                    if current is None or current.version != v.previous:  # changed since the checks
                        raise _Conflict([error("update.concurrent", v.obj.id, what=v.kind, lid=v.logical_id)])
                    touched_folders |= self._new_version(session, parsed, v, current, now)
        for a in ops.statuses:
            self._change_status(session, a)
        # A BPPC consent document made Deprecated no longer grants its consent; made Approved
        # again, it grants again (xds.consent.bppc).
        if (revoke := getattr(self.registry.after_store, "deprecated", None)) is not None:
            revoke(session, [a.target for a in ops.statuses if (slot_values(a, NEW_STATUS) or [""])[0].strip()
                             == DEPRECATED], "ITI-57 Update Document Set")
        if (reinstate := getattr(self.registry.after_store, "approved", None)) is not None:
            reinstate(session, [a.target for a in ops.statuses if (slot_values(a, NEW_STATUS) or [""])[0].strip()
                                == APPROVED], "ITI-57 Update Document Set")
        for a, _link in ops.associations:
            if a.type == HAS_MEMBER:
                touched_folders.add(a.source)
        xml = {obj.id: serialized(parsed.elements[obj.id]) for obj in sub.objects()}
        if touched_folders:
            store.touch_folders(session, touched_folders, now)
        store.save_submission(session, sub, xml)

    def _new_version(self, session: Session, parsed: ParsedSubmission, v: NewVersion, current: Version,
                     now: str) -> set[str]:
        """Make `v` the next version of `current`, which becomes Deprecated and not the latest;
        the Folders that gain a member, for their lastUpdateTime."""
        obj, table = v.obj, TABLES[v.kind]
        changed = session.execute(
            update(table.__table__)
            .where(table.entry_uuid == current.entry_uuid, table.latest.is_(True))
            .values(latest=False, status=DEPRECATED)
        ).rowcount
        if changed != 1:
            raise _Conflict([error("update.concurrent", obj.id, what=v.kind, lid=v.logical_id)])
        obj.version = str(int(current.version) + 1)
        # ITI TF-2b 3.57.4.1.3.3.1: the new version takes the status of the one it replaces (a
        # replaced, Deprecated document's metadata may be corrected too).
        obj.status = current.status
        element = parsed.elements[obj.id]
        element.set("status", current.status)
        set_version(element, v.logical_id, obj.version)
        if isinstance(obj, Folder):
            obj.last_update_time = now
            set_slot(element, "lastUpdateTime", now)
        if not propagates(v.member):
            return set()
        touched = set()
        for link in propagated_links(session, current):
            source = obj.id if link.source == current.entry_uuid else link.source
            target = obj.id if link.target == current.entry_uuid else link.target
            copy = Association(id=f"urn:uuid:{uuid.uuid4()}", type=link.type, source=source, target=target,
                               status=APPROVED)
            parsed.submission.associations.append(copy)
            element = write_registry_object(copy)
            element.set("objectType", ns.ASSOCIATION)  # the model keeps no objectType
            parsed.elements[copy.id] = element
            if link.type == HAS_MEMBER and source != obj.id:
                touched.add(source)  # a Folder holding the document
        return touched

    @staticmethod
    def _change_status(session: Session, a: Association) -> None:
        original = (slot_values(a, ORIGINAL_STATUS) or [""])[0].strip()
        new = (slot_values(a, NEW_STATUS) or [""])[0].strip()
        for table in (*TABLES.values(), AssociationRow):
            changed = session.execute(
                update(table.__table__).where(table.entry_uuid == a.target, table.status == original)
                .values(status=new)).rowcount
            if changed:
                return
        raise _Conflict([error("update.concurrent", a.id, what="the object", lid=a.target)])

    @staticmethod
    def _race_errors(sub: Submission, ops: Operations) -> list[XdsError]:
        if ops.versions:
            return [error("update.concurrent", v.obj.id, what=v.kind, lid=v.logical_id) for v in ops.versions]
        ss = sub.submission_set  # the only other unique value an update inserts
        return [error("unique-id.in-registry", ss.id, what="SubmissionSet", value=ss.unique_id or "",
                      existing="registered concurrently")]


def propagated_links(session: Session, version: Version) -> list[_Link]:
    """The associations a new version of `version` takes over (ITI TF-2b 3.57.4.1.3.3.1.5), the
    Approved ones: for a DocumentEntry, the HasMembers of the Folders holding it and its document
    relationships, either way; for a Folder, its HasMembers of documents. A SubmissionSet's
    HasMember stays with the version it brought."""
    links = _approved_links(session, [version.entry_uuid])
    if version.kind == "Folder":
        return [link for link in links if link.type == HAS_MEMBER and link.source == version.entry_uuid]
    holders = [link.source for link in links if link.type == HAS_MEMBER and link.target == version.entry_uuid]
    folders = set()
    for chunk in chunked(holders):
        folders |= set(session.scalars(select(FolderRow.entry_uuid).where(FolderRow.entry_uuid.in_(chunk))))
    return [link for link in links
            if (link.type == HAS_MEMBER and link.source in folders)
            or (link.type != HAS_MEMBER and link.type in KNOWN_TYPES)]


def _short(association_type: str) -> str:
    return association_type.rsplit(":", 1)[-1]
