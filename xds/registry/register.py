"""Register Document Set-b (ITI-42) at the Document Registry.

Theory of operation. A submission passes three gates, each collecting every error it sees:
1. `xds.ebrim.submission` reads the XML into the model (ebRIM structure);
2. `xds.registry.validate` checks the model alone (attributes, formats, codes, patients,
   associations within the submission);
3. this module checks the submission against what the registry holds (patients it knows,
   uniqueIds already registered, targets of relationships and their status), inside the
   same write transaction that then stores it - so what was checked is what is stored, and
   a failed submission leaves no trace (ITI TF-2 3.42.4.1.3: "the registry shall not
   store any of the metadata" when it answers an error).

Errors point at the ids the submitter used (symbolic ids included); UUIDs are assigned only
once the submission is accepted.

Replacement (ITI TF-3 4.2.2.2): an RPLC or XFRM_RPLC deprecates, in the transaction that stores
it, the document it replaces and that document's addenda (APND) and transformations (XFRM). A
relationship to a Deprecated document (XDSRegistryDeprecatedDocumentError) is refused, and so is
one of the same submission to a document the submission itself deprecates; of two concurrent
replacements of one document, the one that deprecates it second is refused the same way.

What is stored of each object is its element as read, standing alone: taken out of the request,
declaring only the namespaces its own elements and attributes use (an element serialized in
place carries every declaration in scope, the SOAP envelope's included: an envelope declaring
100,000 namespaces cost 11 s and 4 MB per object). The elements get their UUIDs, status and
lastUpdateTime and are serialized before the write transaction begins, so the database's write
lock is held for the checks against the registry and the inserts only.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from lxml import etree
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from xds.ebrim import ns
from xds.dtm import dtm
from xds.ebrim.slots import set_slot
from xds.ebrim.versions import UPDATE_ASSOCIATION_TYPES, UPDATE_SLOTS, set_version, slot_values
from xds.ebrim.write import write_registry_object
from xds.ebrim.submission import (
    ParsedSubmission,
    SubmissionLimits,
    plan_uuids,
    read_submission,
    rewrite_model,
    rewrite_xml,
)
from xds.errors import XdsError
from xds.model.identifiers import is_uuid_urn
from xds.model import Association, AssociationType, AvailabilityStatus, Submission
from xds.model.metadata import REPLACING
from xds.registry.codes import CodeSet
from xds.registry.validate import validate
from xds.rules import error
from xds.registry.patients import PatientDirectory, PatientList
from xds.store import registry as store
from xds.store.db import chunked
from xds.store.stored_xml import Packed, pack
from xds.store.tables import AssociationRow, DocumentEntryRow

log = logging.getLogger("xds.registry")

APPROVED = AvailabilityStatus.APPROVED.value
DEPRECATED = AvailabilityStatus.DEPRECATED.value
HAS_MEMBER = AssociationType.HAS_MEMBER.value
#: The relationships whose source is deprecated with its target when the target is replaced
#: (ITI TF-3 4.2.2.2: a replaced document's addenda and transformations).
DEPRECATED_WITH_TARGET = (AssociationType.APPEND, AssociationType.TRANSFORM)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class DocumentRegistry:
    sessions: sessionmaker
    codes: CodeSet | None = None
    check_patient_ids: bool = True
    clock: Callable[[], datetime] = field(default=utc_now)
    #: Which patient ids are the affinity domain's (XDSUnknownPatientId for the others).
    patients: PatientDirectory = field(default_factory=PatientList)
    #: The most registry objects, and slot values, one submission may hold (xds.config).
    max_submission_objects: int = SubmissionLimits.max_objects
    max_submission_values: int = SubmissionLimits.max_values
    #: Called with the write session and the submission once it is stored, in its transaction
    #: (xds.consent.bppc: BPPC consent documents update the consent record); may raise to undo it.
    after_store: Callable[[Session, Submission], None] | None = None
    #: DSG (xds.security.dsg): what the registry can check of signature DocumentEntries.
    signatures: Callable[[Submission], list[XdsError]] | None = None

    @property
    def limits(self) -> SubmissionLimits:
        return SubmissionLimits(self.max_submission_objects, self.max_submission_values)

    def read(self, request: etree._Element) -> ParsedSubmission:
        """Read a SubmitObjectsRequest within this registry's limits."""
        return read_submission(request, self.limits)

    def register(self, request: etree._Element) -> list[XdsError]:
        """Check and store one SubmitObjectsRequest. Returns its errors and warnings;
        the submission was stored if and only if none of them is an error."""
        return self.register_submission(self.read(request))

    def register_submission(self, parsed: ParsedSubmission) -> list[XdsError]:
        """Check and store a submission read already (the repository's, in-process, read with
        this registry's limits: `read`): the same as register(), without reading the XML
        again."""
        problems = list(parsed.errors)
        if parsed.over_limits:
            return problems  # refused as it was read: nothing more is worth checking
        problems += validate(parsed.submission, self.codes)
        problems += self.signatures(parsed.submission) if self.signatures is not None else []
        problems += first_version_problems(parsed.submission)
        stored = None if any(p.is_error for p in problems) else self._prepare(parsed)
        try:
            with self.sessions.begin() as session:
                problems += self._check_against_registry(session, parsed.submission)
                if stored is None or any(p.is_error for p in problems):
                    session.rollback()
                    return problems
                self._store(session, parsed, stored)
        except _Conflict as conflict:
            return problems + conflict.errors
        except IntegrityError as exc:
            # A concurrent submission registered the same SubmissionSet or Folder uniqueId
            # between our check and our insert: the database's unique index decided.
            log.info("submission lost a uniqueId race: %s", exc.orig)
            return problems + [_race_error(parsed.submission)]
        except OperationalError as exc:
            if _is_busy(exc):
                return problems + [error("registry.busy", reason="the database is locked")]
            raise
        return problems

    def holds_document(self, unique_id: str, sha1: str) -> bool | None:
        """Whether a DocumentEntry with this uniqueId and hash is registered (the repository
        asks after a crash); None when the database cannot be read."""
        try:
            with self.sessions() as session:
                hashes = store.document_hashes(session, unique_id)
        except Exception:
            log.exception("cannot read the registry database to recover %s", unique_id)
            return None
        return any((h or "").lower() == sha1.lower() for h in hashes)

    def documents_in(self, repository_unique_id: str) -> list[tuple[str, str | None, int | None]]:
        """(uniqueId, hash, size) of every DocumentEntry stored in that repository (`xds
        documents verify` checks the repository's files against them)."""
        with self.sessions() as session:
            return store.documents_in_repository(session, repository_unique_id)

    # --- gate 3: against what the registry holds ------------------------------------------

    def _check_against_registry(self, session: Session, sub: Submission) -> list[XdsError]:
        problems: list[XdsError] = []
        own = {o.id: o for o in sub.objects()}
        ss = sub.submission_set

        if self.check_patient_ids:
            ids = {o.patient_id for o in [ss, *sub.documents, *sub.folders] if o and o.patient_id}
            current = self.patients.resolve(session, ids)
            for pid in sorted(pid for pid in ids if current.get(pid) is None):
                problems.append(error("patient.unknown", ss.id if ss else "", patient=pid))

        uuids = [oid for oid in own if oid.startswith("urn:uuid:")]
        refs = {
            ref
            for a in sub.associations
            for ref in (a.source, a.target)
            if ref and ref not in own and ref.startswith("urn:uuid:")
        }
        if refs:
            store.hold_references(session)
        found = store.find_entries_by_uuid(session, [*uuids, *refs])
        for oid in uuids:
            if oid in found:
                problems.append(error("object.uuid-exists", oid, id=oid))

        # References are judged by what the registry held before: an object of this
        # submission that clashes with an existing entryUUID is reported above, once.
        existing = {k: v for k, v in found.items() if k not in own}
        problems += self._check_references(sub, own, existing)
        problems += self._check_replacement_cascade(session, sub, existing)
        problems += self._check_unique_ids(session, sub)
        return problems

    def _check_references(self, sub: Submission, own: dict, found: dict) -> list[XdsError]:
        problems = []

        def patient_of(ref: str) -> str | None:
            return own[ref].patient_id if ref in own else getattr(found.get(ref), "patient_id", None)

        for a in sub.associations:
            kind = a.association_type
            if kind is None or not a.source or not a.target:
                continue  # the validator reported it
            for end, ref in (("sourceObject", a.source), ("targetObject", a.target)):
                if ref not in own and ref not in found:
                    if kind.is_document_relationship and end == "targetObject":
                        problems.append(error("association.bad-target", a.id, type=kind.short_name, id=a.id, target=ref))
                    else:
                        problems.append(error("object.bad-reference", a.id, what=end, id=a.id, ref=ref))
            if kind is AssociationType.HAS_MEMBER:
                problems += self._check_membership(a, found, patient_of)
            elif a.target in found and kind is not AssociationType.SIGNS:
                target = found[a.target]
                if target.kind != "DocumentEntry":
                    problems.append(error("association.bad-target", a.id, type=kind.short_name, id=a.id, target=a.target))
                    continue
                if target.status == DEPRECATED:
                    problems.append(error("association.deprecated-target", a.id, type=kind.short_name, id=a.id, target=a.target))
                source_patient = patient_of(a.source)
                if source_patient and target.patient_id != source_patient:
                    problems.append(error(
                        "patient.target-mismatch", a.id, type=kind.short_name, id=a.id, target=a.target,
                        target_patient=target.patient_id, source=a.source, patient=source_patient,
                    ))
        return problems

    def _check_membership(self, a: Association, found: dict, patient_of) -> list[XdsError]:
        """HasMember to or from objects already in the registry: a source must be a Folder,
        a document must still be current, and both ends must be of one patient."""
        problems = []
        source, target = found.get(a.source), found.get(a.target)
        if source is not None and source.kind != "Folder":
            problems.append(error("association.bad-member", a.id, id=a.id, source=a.source, target=a.target))
        elif source is not None and source.status == DEPRECATED:  # Metadata Update: not its latest version
            problems.append(error("version.deprecated-folder", a.id, id=a.id, source=a.source))
        if target is not None and target.kind == "DocumentEntry" and target.status == DEPRECATED:
            problems.append(error("association.deprecated-target", a.id, type="HasMember", id=a.id, target=a.target))
        if source is not None or target is not None:
            expected, actual = patient_of(a.source), patient_of(a.target)
            if expected and actual and expected != actual:
                problems.append(error(
                    "patient.target-mismatch", a.id, type="HasMember", id=a.id, target=a.target,
                    target_patient=actual, source=a.source, patient=expected,
                ))
        return problems

    def _check_replacement_cascade(self, session: Session, sub: Submission, found: dict) -> list[XdsError]:
        """An addendum or transformation of this submission may not relate to a document this
        submission deprecates: one it replaces, or an addendum or transformation of one it
        replaces (deprecated with it, ITI TF-3 4.2.2.2)."""
        replaced = {a.target: a.source for a in sub.associations if a.association_type in REPLACING
                    and getattr(found.get(a.target), "kind", None) == "DocumentEntry"}
        relating = [a for a in sub.associations if a.association_type in DEPRECATED_WITH_TARGET]
        if not replaced or not relating:
            return []
        dependents = self._addenda_and_transformations(session, list(replaced))
        problems = []
        for a in relating:
            if a.target in replaced:
                reason = f"replaced by '{replaced[a.target]}' in this submission"
            elif a.target in dependents:
                reason = (f"an addendum or transformation of '{dependents[a.target]}', which this "
                          "submission replaces")
            else:
                continue
            problems.append(error("association.target-deprecated-by-replacement", a.id,
                                  type=a.association_type.short_name, id=a.id, target=a.target, reason=reason))
        return problems

    @staticmethod
    def _addenda_and_transformations(session: Session, replaced: list[str]) -> dict[str, str]:
        """The Approved DocumentEntries that are an addendum (APND) or a transformation (XFRM)
        of one of `replaced`: {its entryUUID: the entryUUID of the document it relates to}."""
        found: dict[str, str] = {}
        for chunk in chunked(list(dict.fromkeys(replaced))):
            rows = session.execute(
                select(AssociationRow.source, AssociationRow.target)
                .join(DocumentEntryRow, DocumentEntryRow.entry_uuid == AssociationRow.source)
                .where(AssociationRow.type.in_([t.value for t in DEPRECATED_WITH_TARGET]),
                       AssociationRow.target.in_(chunk),
                       DocumentEntryRow.status == APPROVED)
            )
            found.update({source: target for source, target in rows})
        return found

    def _check_unique_ids(self, session: Session, sub: Submission) -> list[XdsError]:
        problems = []
        docs = {d.unique_id: d for d in sub.documents if d.unique_id}
        wanted = {"SubmissionSet": {sub.submission_set.unique_id: sub.submission_set}
                  if sub.submission_set and sub.submission_set.unique_id else {},
                  "Folder": {f.unique_id: f for f in sub.folders if f.unique_id}}
        documents, registered = store.registered_unique_ids(session, list(docs), list(wanted["SubmissionSet"]),
                                                            list(wanted["Folder"]))
        for unique_id, rows in documents.items():
            doc = docs[unique_id]
            for row in rows:
                if doc.patient_id and row.patient_id != doc.patient_id:
                    problems.append(error(
                        "unique-id.resubmitted-other-patient", doc.id, id=doc.id, value=unique_id,
                        existing=row.patient_id, patient=doc.patient_id,
                    ))
                elif doc.hash and row.hash and row.hash.lower() != doc.hash.lower():
                    problems.append(error(
                        "unique-id.hash-differs", doc.id, id=doc.id, value=unique_id,
                        existing=row.hash, value_hash=doc.hash,
                    ))
                elif doc.size and row.size is not None and str(row.size) != doc.size.strip():
                    problems.append(error(
                        "unique-id.size-differs", doc.id, id=doc.id, value=unique_id,
                        existing=row.size, value_size=doc.size,
                    ))
                else:
                    continue
                break
        for kind, existing_of in registered.items():
            for unique_id, existing in existing_of.items():
                o = wanted[kind][unique_id]
                problems.append(error("unique-id.in-registry", o.id, what=kind, value=unique_id, existing=existing))
        return problems

    # --- storing ---------------------------------------------------------------------------

    def _prepare(self, parsed: ParsedSubmission) -> _Stored:
        """The XML each object will be stored as, made before the write transaction: its
        element taken out of the request (`standalone`), with UUIDs, status Approved and a
        Folder's lastUpdateTime. The model stays as it is (errors found against the registry
        still name the submitter's ids); the request does not (as the register step always
        did, it rewrites the elements it stores)."""
        sub = parsed.submission
        now = dtm(self.clock())  # lastUpdateTime
        elements = {oid: standalone(element) for oid, element in parsed.elements.items()}
        mapping = plan_uuids(sub)
        rewrite_xml(elements, sub, mapping)
        for element in elements.values():
            element.set("status", APPROVED)
        for folder in sub.folders:
            set_slot(elements[folder.id], "lastUpdateTime", now)
        for obj in [*sub.documents, *sub.folders]:  # first versions (ITI-57 makes the next ones)
            uuid_ = mapping.get(obj.id, obj.id)
            set_version(elements[obj.id], uuid_, "1")
        # Compressed here, not by the column type inside the write transaction (on SQLite, the
        # write lock): about 0.1 ms for a one-document submission that other writers no longer wait.
        return _Stored(mapping, elements, {mapping.get(oid, oid): pack(serialized(element))
                                           for oid, element in elements.items()}, now)

    def _store(self, session: Session, parsed: ParsedSubmission, stored: _Stored) -> None:
        sub = parsed.submission
        parsed.elements.clear()
        parsed.elements.update(stored.elements)
        rewrite_model(parsed, stored.mapping)
        for obj in sub.objects():
            obj.status = APPROVED
        xml = stored.xml

        replaced = [a.target for a in sub.associations if a.association_type in REPLACING]
        # Existing folders that receive a document change their lastUpdateTime (ITI TF-3, the
        # Folder's lastUpdateTime: set by the registry whenever the folder's content changes).
        own = {o.id for o in sub.objects()}
        touched_folders = {a.source for a in sub.associations
                           if a.association_type is AssociationType.HAS_MEMBER and a.source not in own}
        if replaced:
            # ITI TF-3, Document Replacement: the replacement joins every folder the document it
            # replaces belongs to (NIST test 12323 checks it), and those folders' lastUpdateTime changes.
            new_members = self._replacement_memberships(session, sub, replaced)
            for member in new_members:
                sub.associations.append(member)
                member.status = APPROVED
                parsed.elements[member.id] = element = write_registry_object(member)
                element.set("objectType", ns.ASSOCIATION)  # the model keeps no objectType
                xml[member.id] = serialized(element)
                touched_folders.add(member.source)
            if store.deprecate(session, replaced) != len(set(replaced)):
                # Another submission replaced one of these documents since we checked.
                raise _Conflict([error("association.deprecated-target", a.id, type=a.association_type.short_name,
                                       id=a.id, target=a.target)
                                 for a in sub.associations if a.association_type in REPLACING])
            # ITI TF-3 4.2.2.2: the replaced document's addenda (APND) and transformations (XFRM)
            # are deprecated with it, in this same transaction. (Those of its addenda are not: the
            # rule names the replaced document's own.)
            store.deprecate(session, list(self._addenda_and_transformations(session, replaced)))
        for folder in sub.folders:
            folder.last_update_time = stored.now
        if touched_folders:
            store.touch_folders(session, list(touched_folders), stored.now)
        store.save_submission(session, sub, xml)
        if self.after_store is not None:
            self.after_store(session, sub)

    def _replacement_memberships(self, session: Session, sub: Submission, replaced: list[str]) -> list[Association]:
        """HasMember associations that put each replacement into the folders of the
        document it replaces."""
        replacement_of = {a.target: a.source for a in sub.associations if a.association_type in REPLACING}
        rows = session.execute(
            select(AssociationRow.source, AssociationRow.target).where(
                AssociationRow.type == HAS_MEMBER,
                AssociationRow.target.in_(replaced),
                AssociationRow.status == APPROVED,
            )
        ).all()
        sources = store.find_entries_by_uuid(session, list({r.source for r in rows}))
        return [
            Association(id=_new_uuid(), type=HAS_MEMBER, source=source, target=replacement_of[target])
            for source, target in rows
            if getattr(sources.get(source), "kind", None) == "Folder"
        ]


@dataclass
class _Stored:
    """What _prepare made for _store: the UUIDs, the objects' elements (by the submitter's
    ids), their XML (by UUID), and the lastUpdateTime."""

    mapping: dict[str, str]
    elements: dict[str, etree._Element]
    xml: dict[str, str | Packed]
    now: str


def first_version_problems(sub: Submission) -> list[XdsError]:
    """What Register Document Set-b refuses of Metadata Update (ITI TF-2b 3.57.4.1.3.1: a new
    version, with an lid other than its own id, is sent only with Update Document Set, which
    ITI-42 is not): lids naming other objects, the update slots and association types."""
    problems = []
    for what, objects in (("DocumentEntry", sub.documents), ("Folder", sub.folders)):
        for obj in objects:
            # a DocumentEntry's malformed urn:uuid lid is the reader's object.bad-lid already
            reported = (what == "DocumentEntry" and obj.logical_id and obj.logical_id.startswith("urn:uuid:")
                        and not is_uuid_urn(obj.logical_id))
            if obj.logical_id and obj.logical_id != obj.id and not reported:
                problems.append(error("version.lid-in-register", obj.id, what=what, id=obj.id, value=obj.logical_id))
    for a in sub.associations:
        if a.type in UPDATE_ASSOCIATION_TYPES:
            problems.append(error("version.update-in-register", a.id, id=a.id, how=f"has type {a.type}"))
            continue
        for name in UPDATE_SLOTS:
            if slot_values(a, name) is not None:
                problems.append(error("version.update-in-register", a.id, id=a.id, how=f"carries the slot {name}"))
    return problems


def standalone(element: etree._Element) -> etree._Element:
    """`element`, taken out of its request, declaring only the namespaces its elements and
    attributes use.

    Taken out of its tree, an element gets from lxml (libxml2) a declaration of each namespace
    it uses from outside, not every one in scope; cleanup_namespaces drops those declared inside
    it and not used. Both are linear in the element's size, whatever the envelope around it
    declares, and cost about what serializing it in place did. (A namespace named only inside
    an attribute's value, as xsi:type="prefix:Type", would lose its declaration: ebRIM 3.0
    objects have none.)"""
    parent = element.getparent()
    if parent is not None:
        parent.remove(element)
    element.tail = None
    etree.cleanup_namespaces(element)
    return element


def serialized(element: etree._Element) -> str:
    return etree.tostring(element, encoding="unicode", with_tail=False)


class _Conflict(Exception):
    """A concurrent submission changed what this one was checked against: roll back."""

    def __init__(self, errors: list[XdsError]):
        self.errors = errors


def _new_uuid() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _race_error(sub: Submission) -> XdsError:
    ss = sub.submission_set
    return error("unique-id.in-registry", ss.id if ss else "", what="SubmissionSet",
                 value=ss.unique_id if ss else "", existing="registered concurrently")


def _is_busy(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "locked" in text or "busy" in text or "timeout" in text
