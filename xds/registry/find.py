"""The stored queries as SQLAlchemy selects over the registry's tables.

What belongs here: for each stored query of `xds.registry.stored_query`, which rows of each
object table it returns, written as one WHERE condition per object kind; and the loading of
those rows (one SELECT per object kind, never more rows than the answer holds). What does not:
reading the request (`query_params` gives typed values), XML, and the rules about the answer
(too many results, one patient: `xds.registry.query`).

Theory of operation. A query builder (`_BUILDERS`, one per stored query) turns the parameters
into a `Selection`: for each object kind the query returns, a condition on that kind's table.
Conditions that depend on other objects (a SubmissionSet's members, the documents related to a
document) are subqueries, so the database does the set logic and every kind is still read with
a single SELECT. `load` then runs the selections: for ObjectRef only the entryUUIDs (served from
the indexes), for LeafClass the stored XML with the columns the answer patches (status, folder
lastUpdateTime) and the patient id (for XDSResultNotSinglePatient).

One place per concept, shared by all queries:

- `codes`: a code parameter, EXISTS on object_code (the primary key (object_uuid, attribute,
  code) answers it with one probe per entry); an AND/OR parameter is one EXISTS per slot.
- `time_range`: From inclusive (>=), To exclusive (<), on the '0'-padded DTM columns (ITI TF-2
  3.18.4.1.2.3.7.1). A stored value of lower precision stands for the first instant of its
  period, as its padding says: creationTime 2006 (20060000000000) is before To 20060601, so it
  is found; and before From 20060601, so it is not. Query times are padded the same way, so a
  To of 2006 excludes all of 2006. An entry without the time attribute does not match a query
  on it.
- `statuses`, `document_types`: IN lists.
- `author_person`: SQL LIKE with % and _ as the wildcards (ITI TF-2 3.18.4.1.2.3.7.1),
  case-sensitive on both databases; the escape character and, on SQLite, GLOB's own specials
  are escaped so that nothing else in a value acts as a wildcard.

The leading index of document_entry is (patient_id, status, object_type, creation_time,
entry_uuid): FindDocuments' equality and IN conditions come first, the creation time range
narrows within it, and every other check is a probe keyed by entry_uuid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    exists,
    false,
    literal,
    not_,
    or_,
    select,
    union,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BooleanClauseList
from sqlalchemy.sql.util import ClauseAdapter

from xds.model import AssociationType
from xds.registry.stored_query import ObjectKind, StoredQuery
from xds.store.tables import (
    AssociationRow,
    AuthorRow,
    CodeAttribute,
    DocumentEntryRow,
    FolderRow,
    ObjectCodeRow,
    ReferenceIdRow,
    SubmissionSetRow,
)

D, S, F, A = DocumentEntryRow, SubmissionSetRow, FolderRow, AssociationRow
DE, SS, FOL, ASSOC = (ObjectKind.DOCUMENT_ENTRY, ObjectKind.SUBMISSION_SET, ObjectKind.FOLDER,
                      ObjectKind.ASSOCIATION)
HAS_MEMBER = AssociationType.HAS_MEMBER.value

#: Each kind's table.
TABLES = {DE: D, SS: S, FOL: F, ASSOC: A}

Params = dict[str, Any]
Selection = dict[ObjectKind, ColumnElement[bool]]


@dataclass
class Row:
    """One object found. For ObjectRef answers only entry_uuid is read."""

    entry_uuid: str
    patient_id: str | None = None
    status: str | None = None
    xml: str | None = None
    last_update_time: str | None = None  # Folders


@dataclass
class Found:
    """The objects a stored query found, by kind, in the order the query lists its kinds."""

    objects: dict[ObjectKind, list[Row]] = field(default_factory=dict)

    def rows(self) -> Iterable[tuple[ObjectKind, Row]]:
        for kind, rows in self.objects.items():
            for row in rows:
                yield kind, row


class TooManyResults(Exception):
    def __init__(self, limit: int):
        super().__init__(f"more than {limit} objects")
        self.limit = limit


# --- shared conditions ----------------------------------------------------------------------


def codes(owner: Any, attribute: CodeAttribute, values: Sequence[str]) -> ColumnElement[bool]:
    """The object (entryUUID column `owner`) has one of these codes ('code^^^scheme') for
    `attribute`."""
    c = ObjectCodeRow
    return exists().where(c.object_uuid == owner, c.attribute == attribute.value, c.code.in_(values))


def code_parameter(owner: Any, attribute: CodeAttribute, value: list | None, and_or: bool = False) -> list:
    """The conditions of one code parameter: one EXISTS (values OR'ed), or for an AND/OR
    parameter one EXISTS per slot, all of which must hold."""
    if not value:
        return []
    groups = value if and_or else [value]
    return [codes(owner, attribute, group) for group in groups]


def time_range(column: Any, start: str | None, stop: str | None) -> list:
    """start <= column < stop, both padded DTMs (From inclusive, To exclusive)."""
    conditions = []
    if start is not None:
        conditions.append(column >= start)
    if stop is not None:
        conditions.append(column < stop)
    return conditions


def author_person(owner: Any, patterns: Sequence[str], dialect: str) -> ColumnElement[bool]:
    """The object has an author person matching one of the LIKE patterns (% any string,
    _ any one character)."""
    a = AuthorRow
    if dialect == "sqlite":
        # SQLite's LIKE ignores the case of ASCII letters; GLOB is case-sensitive like SQL LIKE.
        matches = [a.person.op("GLOB")(_glob(p)) for p in patterns]
    else:
        matches = [a.person.like(_like(p), escape="\\") for p in patterns]
    return exists().where(a.object_uuid == owner, or_(*matches))


def _like(pattern: str) -> str:
    # % and _ are the wildcards of the parameter and of LIKE alike; only the escape character
    # itself needs escaping.
    return pattern.replace("\\", "\\\\")


def _glob(pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch == "%":
            out.append("*")
        elif ch == "_":
            out.append("?")
        elif ch in "*?[":
            out.append(f"[{ch}]")
        else:
            out.append(ch)
    return "".join(out)


def _in(column: Any, values: Sequence[str] | None) -> list:
    return [column.in_(values)] if values else []


def _either(*conditions: ColumnElement[bool] | None) -> ColumnElement[bool]:
    present = [c for c in conditions if c is not None]
    return or_(*present) if present else false()


def _ids(column: Any, *conditions: Any):
    """A subquery of ids (for IN). Never correlated: the same table may be the outer one (the
    documents related to a document), and an id set must not turn into a row test."""
    return select(column).where(*conditions).correlate(None)


def _as_list(value: str | list[str] | None) -> list[str] | None:
    if value is None:
        return None
    return value if isinstance(value, list) else [value]


# --- the DocumentEntry filters (FindDocuments and the queries that share its parameters) ------


def document_entries(p: Params, dialect: str, *, patient: str | None = None,
                     statuses: Sequence[str] | None = None) -> list:
    """The conditions on document_entry of the DocumentEntry parameters present in `p`."""
    owner = D.entry_uuid
    conditions: list = []
    if patient is not None:
        conditions.append(D.patient_id == patient)
    conditions += _in(D.status, statuses)
    conditions += _in(D.object_type, p.get("$XDSDocumentEntryType"))
    conditions += time_range(D.creation_time, p.get("$XDSDocumentEntryCreationTimeFrom"),
                             p.get("$XDSDocumentEntryCreationTimeTo"))
    conditions += time_range(D.service_start_time, p.get("$XDSDocumentEntryServiceStartTimeFrom"),
                             p.get("$XDSDocumentEntryServiceStartTimeTo"))
    conditions += time_range(D.service_stop_time, p.get("$XDSDocumentEntryServiceStopTimeFrom"),
                             p.get("$XDSDocumentEntryServiceStopTimeTo"))
    for name, attribute, and_or in (
        ("$XDSDocumentEntryClassCode", CodeAttribute.CLASS, False),
        ("$XDSDocumentEntryTypeCode", CodeAttribute.TYPE, False),
        ("$XDSDocumentEntryPracticeSettingCode", CodeAttribute.PRACTICE_SETTING, False),
        ("$XDSDocumentEntryHealthcareFacilityTypeCode", CodeAttribute.HEALTHCARE_FACILITY_TYPE, False),
        ("$XDSDocumentEntryFormatCode", CodeAttribute.FORMAT, False),
        ("$XDSDocumentEntryEventCodeList", CodeAttribute.EVENT, True),
        ("$XDSDocumentEntryConfidentialityCode", CodeAttribute.CONFIDENTIALITY, True),
    ):
        conditions += code_parameter(owner, attribute, p.get(name), and_or)
    if p.get("$XDSDocumentEntryAuthorPerson"):
        conditions.append(author_person(owner, p["$XDSDocumentEntryAuthorPerson"], dialect))
    if p.get("$XDSDocumentEntryReferenceIdList"):
        r = ReferenceIdRow
        conditions.append(exists().where(r.object_uuid == owner, r.value.in_(p["$XDSDocumentEntryReferenceIdList"])))
    return conditions


# --- the stored queries (ITI TF-2 3.18.4.1.2.3.7) ------------------------------------------------


def find_documents(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.1 FindDocuments and 3.18.4.1.2.3.7.14 FindDocumentsByReferenceId."""
    return {DE: and_(*document_entries(p, dialect, patient=p["$XDSDocumentEntryPatientId"],
                                       statuses=p["$XDSDocumentEntryStatus"]))}


def find_submission_sets(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.2 FindSubmissionSets."""
    conditions = [S.patient_id == p["$XDSSubmissionSetPatientId"], S.status.in_(p["$XDSSubmissionSetStatus"])]
    conditions += _in(S.source_id, p.get("$XDSSubmissionSetSourceId"))
    conditions += time_range(S.submission_time, p.get("$XDSSubmissionSetSubmissionTimeFrom"),
                             p.get("$XDSSubmissionSetSubmissionTimeTo"))
    conditions += code_parameter(S.entry_uuid, CodeAttribute.CONTENT_TYPE, p.get("$XDSSubmissionSetContentType"))
    if p.get("$XDSSubmissionSetAuthorPerson") is not None:
        conditions.append(author_person(S.entry_uuid, [p["$XDSSubmissionSetAuthorPerson"]], dialect))
    return {SS: and_(*conditions)}


def find_folders(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.3 FindFolders."""
    conditions = [F.patient_id == p["$XDSFolderPatientId"], F.status.in_(p["$XDSFolderStatus"])]
    conditions += time_range(F.last_update_time, p.get("$XDSFolderLastUpdateTimeFrom"),
                             p.get("$XDSFolderLastUpdateTimeTo"))
    conditions += code_parameter(F.entry_uuid, CodeAttribute.FOLDER, p.get("$XDSFolderCodeList"), and_or=True)
    return {FOL: and_(*conditions)}


def get_all(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.4 GetAll: the patient's SubmissionSets, DocumentEntries and Folders, and
    the Associations between them (those to an Association too: a SubmissionSet's HasMember of
    a Folder's HasMember)."""
    patient = p["$patientId"]
    documents = and_(*document_entries(p, dialect, patient=patient, statuses=p["$XDSDocumentEntryStatus"]))
    submission_sets = and_(S.patient_id == patient, S.status.in_(p["$XDSSubmissionSetStatus"]))
    folders = and_(F.patient_id == patient, F.status.in_(p["$XDSFolderStatus"]))
    objects = union(
        select(D.entry_uuid.label("id")).where(documents),
        select(S.entry_uuid.label("id")).where(submission_sets),
        select(F.entry_uuid.label("id")).where(folders),
    ).cte("patient_objects")
    ids = _ids(objects.c.id)
    a2 = A.__table__.alias("inner_association")
    between_objects = _ids(a2.c.entry_uuid, a2.c.source.in_(ids), a2.c.target.in_(ids))
    associations = and_(A.source.in_(ids), or_(A.target.in_(ids), A.target.in_(between_objects)))
    return {SS: submission_sets, DE: documents, FOL: folders, ASSOC: associations}


def get_documents(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.5 GetDocuments (whatever their status)."""
    return {DE: _documents_by_id(p)}


def _documents_by_id(p: Params) -> ColumnElement[bool]:
    return _either(
        D.entry_uuid.in_(_as_list(p["$XDSDocumentEntryEntryUUID"])) if "$XDSDocumentEntryEntryUUID" in p else None,
        D.unique_id.in_(_as_list(p["$XDSDocumentEntryUniqueId"])) if "$XDSDocumentEntryUniqueId" in p else None,
        D.logical_id.in_(p["$XDSDocumentEntryLogicalID"]) if "$XDSDocumentEntryLogicalID" in p else None,
    )


def get_folders(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.6 GetFolders. Without Document Metadata Update a Folder's logicalID is
    its entryUUID."""
    return {FOL: _either(
        F.entry_uuid.in_(_as_list(p["$XDSFolderEntryUUID"])) if "$XDSFolderEntryUUID" in p else None,
        F.unique_id.in_(_as_list(p["$XDSFolderUniqueId"])) if "$XDSFolderUniqueId" in p else None,
        F.entry_uuid.in_(p["$XDSFolderLogicalID"]) if "$XDSFolderLogicalID" in p else None,
    )}


def get_associations(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.7 GetAssociations: those with one of the objects at either end."""
    return {ASSOC: or_(A.source.in_(p["$uuid"]), A.target.in_(p["$uuid"]))}


def get_documents_and_associations(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.8 GetDocumentsAndAssociations: the documents, and the Associations that
    have one of them at either end."""
    documents = _documents_by_id(p)
    ids = _ids(D.entry_uuid, documents)
    return {DE: documents, ASSOC: or_(A.source.in_(ids), A.target.in_(ids))}


def get_submission_sets(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.9 GetSubmissionSets: the SubmissionSets that hold the objects (by a
    HasMember Association), and those Associations."""
    is_submission_set = exists().where(S.entry_uuid == A.source)
    memberships = and_(A.type == HAS_MEMBER, A.target.in_(p["$uuid"]), is_submission_set)
    return {SS: S.entry_uuid.in_(_ids(A.source, memberships)), ASSOC: memberships}


def get_submission_set_and_contents(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.10 GetSubmissionSetAndContents: the SubmissionSet, its DocumentEntries
    (those passing the format, confidentiality and type filters) and Folders, and the
    Associations among them: the SubmissionSet's HasMembers and the member Associations
    (a Folder's HasMember). An Association with a filtered-out DocumentEntry at an end is left
    out, and so is the SubmissionSet's HasMember of such an Association."""
    submission_set = _either(
        S.entry_uuid == p["$XDSSubmissionSetEntryUUID"] if "$XDSSubmissionSetEntryUUID" in p else None,
        S.unique_id == p["$XDSSubmissionSetUniqueId"] if "$XDSSubmissionSetUniqueId" in p else None,
    )
    return _package_and_contents(S.entry_uuid, submission_set, SS, p, dialect, with_member_associations=True)


def get_folder_and_contents(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.11 GetFolderAndContents: the Folder, its DocumentEntries (those passing
    the format, confidentiality and type filters) and the Folder's HasMembers of them."""
    folder = _either(
        F.entry_uuid == p["$XDSFolderEntryUUID"] if "$XDSFolderEntryUUID" in p else None,
        F.unique_id == p["$XDSFolderUniqueId"] if "$XDSFolderUniqueId" in p else None,
    )
    return _package_and_contents(F.entry_uuid, folder, FOL, p, dialect, with_member_associations=False)


def _package_and_contents(package_uuid: Any, package: ColumnElement[bool], kind: ObjectKind, p: Params,
                          dialect: str, *, with_member_associations: bool) -> Selection:
    package_ids = _ids(package_uuid, package)
    a2 = A.__table__.alias("membership")
    members = _ids(a2.c.target, a2.c.source.in_(package_ids), a2.c.type == HAS_MEMBER)
    filters = document_entries(p, dialect)
    documents = and_(D.entry_uuid.in_(members), *filters)
    selection: Selection = {kind: package, DE: documents}
    own_hasmember = and_(A.source.in_(package_ids), A.type == HAS_MEMBER)
    if not with_member_associations:
        selection[ASSOC] = and_(own_hasmember, A.target.in_(_ids(D.entry_uuid, documents)))
        return selection
    d2 = D.__table__.alias("excluded_document")
    excluded = _ids(d2.c.entry_uuid, d2.c.entry_uuid.in_(members), not_(and_(*_rebind(filters, d2))))
    a3 = A.__table__.alias("dropped_member")
    dropped = _ids(a3.c.entry_uuid, a3.c.entry_uuid.in_(members),
                   or_(a3.c.source.in_(excluded), a3.c.target.in_(excluded)))
    selection[FOL] = F.entry_uuid.in_(members)
    selection[ASSOC] = or_(
        and_(own_hasmember, A.target.not_in(excluded), A.target.not_in(dropped)),
        and_(A.entry_uuid.in_(members), A.entry_uuid.not_in(dropped)),
    )
    return selection


def _rebind(conditions: list, alias: Any) -> list:
    """`conditions` written on a table, rewritten on an alias of it (TRUE for none)."""
    adapter = ClauseAdapter(alias)
    return [adapter.traverse(c) for c in conditions] if conditions else [literal(True)]


def get_folders_for_document(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.12 GetFoldersForDocument: the Folders with a HasMember of the document."""
    documents = _ids(D.entry_uuid, _documents_by_id(p))
    holders = _ids(A.source, A.type == HAS_MEMBER, A.target.in_(documents))
    return {FOL: F.entry_uuid.in_(holders)}


def get_related_documents(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.13 GetRelatedDocuments: the Associations of the given types between the
    document and other DocumentEntries (of the wanted DocumentEntry types), and the documents at
    their ends - the document itself included. A document with no such relation gives nothing
    (the NIST toolkit's test 11909/near_folder): only the ends of a relation are returned."""
    document = _ids(D.entry_uuid, _documents_by_id(p))
    d2 = D.__table__.alias("related_document")

    def is_document(column: Any) -> ColumnElement[bool]:
        wanted = _in(d2.c.object_type, p.get("$XDSDocumentEntryType"))
        return exists().where(d2.c.entry_uuid == column, *wanted)

    relations = and_(
        A.type.in_(p["$AssociationTypes"]),
        or_(and_(A.source.in_(document), is_document(A.target)),
            and_(A.target.in_(document), is_document(A.source))),
    )
    a2 = A.__table__.alias("relation")
    relations_2 = _rebind([relations], a2)[0]
    ends = union(select(a2.c.source.label("id")).where(relations_2),
                 select(a2.c.target.label("id")).where(relations_2)).subquery()
    return {DE: D.entry_uuid.in_(_ids(ends.c.id)), ASSOC: relations}


_BUILDERS: dict[str, Callable[[Params, str], Selection]] = {
    "FindDocuments": find_documents,
    "FindDocumentsByReferenceId": find_documents,
    "FindSubmissionSets": find_submission_sets,
    "FindFolders": find_folders,
    "GetAll": get_all,
    "GetDocuments": get_documents,
    "GetFolders": get_folders,
    "GetAssociations": get_associations,
    "GetDocumentsAndAssociations": get_documents_and_associations,
    "GetSubmissionSets": get_submission_sets,
    "GetSubmissionSetAndContents": get_submission_set_and_contents,
    "GetFolderAndContents": get_folder_and_contents,
    "GetFoldersForDocument": get_folders_for_document,
    "GetRelatedDocuments": get_related_documents,
}


def selection(query: StoredQuery, params: Params, dialect: str) -> Selection:
    """Which rows of each table `query` returns for `params` (checked by query_params)."""
    return _BUILDERS[query.name](params, dialect)


# --- loading -----------------------------------------------------------------------------------


def _columns(kind: ObjectKind, leaf_class: bool) -> list:
    table = TABLES[kind]
    if not leaf_class:
        return [table.entry_uuid]
    columns = [table.entry_uuid, table.status, table.xml]
    if kind is not ASSOC:
        columns.append(table.patient_id)
    if kind is FOL:
        columns.append(F.last_update_time)
    return columns


def _index_friendly(kind: ObjectKind, condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """A top-level OR as `entry_uuid IN (branch UNION branch ...)`.

    PostgreSQL plans `a IN (subquery) OR b IN (subquery)` as a scan of the whole table (measured:
    GetSubmissionSetAndContents 450-700 ms at 1,000,000 entries); each branch alone uses its
    index, and the union of their ids is a small hash semi-join.
    """
    if not (isinstance(condition, BooleanClauseList) and condition.operator is operators.or_):
        return condition
    table = TABLES[kind]
    branches = [select(table.entry_uuid).where(branch) for branch in condition.clauses]
    return table.entry_uuid.in_(union(*branches))


def load(session: Session, query: StoredQuery, params: Params, *, leaf_class: bool,
         limit: int | None = None) -> Found:
    """Run `query`: one SELECT per object kind it returns. With LeafClass and a `limit`, no
    more than limit + 1 rows are read in all, and TooManyResults is raised when there are more
    than `limit` objects."""
    dialect = session.get_bind().dialect.name
    conditions = selection(query, params, dialect)
    found = Found()
    remaining = limit
    for kind in query.returns:
        condition = conditions.get(kind)
        if condition is None:
            found.objects[kind] = []
            continue
        statement = select(*_columns(kind, leaf_class)).where(_index_friendly(kind, condition))
        if leaf_class and remaining is not None:
            statement = statement.limit(remaining + 1)
        rows = [Row(**row._asdict()) for row in session.execute(statement)]
        if leaf_class and remaining is not None:
            if len(rows) > remaining:
                raise TooManyResults(limit or 0)
            remaining -= len(rows)
        found.objects[kind] = rows
    return found
