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
lastUpdateTime) and the patient id (for XDSResultNotSinglePatient), within the answer's limits
of objects and bytes, checked before the answer is held in memory (see `load`).

One place per concept, shared by all queries:

- `one_of`: a list of values the request gave (ids, codes, statuses...). A short one (up to
  `INLINE_VALUES`) is written inline, `IN (?, ?)`; a longer one is bound as ONE parameter
  whatever its length: a PostgreSQL array (`= ANY(:list)`), on SQLite a JSON array
  (`IN (SELECT value FROM json_each(:list))`). A statement's text and its number of bound
  parameters then stay small for 100,000 values as for 33: no list reaches the drivers'
  bound-parameter limits (SQLite 32,766, PostgreSQL 65,535), and a statement that fails is
  logged with a few kilobytes of SQL (SQLAlchemy shortens long parameter values in its
  messages), never megabytes.
- `codes` (and reference ids, `has_one_of`): a code parameter, a test on object_code for the
  entry: the primary key (object_uuid, attribute, code) finds the entry's few codes of that
  attribute, and each is looked up in the list (SQLite: the list's ephemeral index, built once
  per statement; PostgreSQL: a hashed `= ANY` filter). The cost is one probe per entry however
  long the list: it used to be `code IN (...)` probed value by value, entries x list (5,000
  entries x 1,000 codes: 1.3-1.9 s on SQLite, now 13 ms). On SQLite the code column is written
  `+code` so that the planner, which has no statistics here, cannot turn the list back into
  probes; on PostgreSQL a short list stays EXISTS (its planner may hash the entries holding a
  rare code instead, rightly), a long one is a per-entry subplan (`has_one_of` says why). An
  AND/OR parameter is one test per slot (query_params bounds the terms).
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

- `patient_is`: a query for a patient finds the objects of every id the patient directory
  gives for it (the id and the ids merged into it, ITI TF-2a 3.18.4.1.2.3.9.1): `patient_id = ?`
  for one id, an IN list (`one_of`) for several, as `query` asked the directory. A
  Multi-Patient Stored Query's patients and their merged ids are one such list, however long.
  A query for one patient whose directory writes its aliases as SQL (`Aliases`) finds them
  in the same statement, `patient_id IN (the directory's subquery)`: no statement before it.

- `visible_only` (access control, xds.consent): a query that names no patient (the Get queries,
  a multi-patient query naming none) is narrowed to the objects of the patients the caller may
  see. The objects its conditions find are read first without their XML (entryUUID and patient
  id; an Association's two ends), the patients of Associations' ends looked up (an end may be
  an Association itself: a SubmissionSet's HasMember of a Folder's HasMember), the patients
  decided together; an object is visible when its patient is, an Association when both its ends
  are (an end this registry does not hold is no patient's). When something is hidden, each
  kind's condition gets `entryUUID IN (the visible ones)`, so the limits of `load` count the
  visible objects only, as a registry holding nothing else would.

The leading index of document_entry is (patient_id, status, object_type, creation_time,
entry_uuid): FindDocuments' equality and IN conditions come first, the creation time range
narrows within it, and every other check is a probe keyed by entry_uuid. An IN list of patient
ids keeps that index (SQLite: one search of it per id of the list, inline or from json_each;
PostgreSQL: an index scan with `patient_id = ANY(...)`); so do folder and submission_set with
their (patient_id, status) indexes. A multi-patient query that names no patient is driven by
its first code parameter instead (`_driving_codes`): the object_code index
(attribute, code, object_uuid) finds the entries holding the code, not a scan of every entry.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    String,
    and_,
    any_,
    bindparam,
    case,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    Select,
    union,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BindParameter, BooleanClauseList, Grouping, UnaryExpression
from sqlalchemy.sql.util import ClauseAdapter
from sqlalchemy.sql.visitors import iterate

from xds.model import AssociationType
from xds.registry.patients import AliasesInSql
from xds.registry.stored_query import ObjectKind, StoredQuery
from xds.store import prepared
from xds.store.stored_xml import utf8_size
from xds.store.tables import (
    AssociationRow,
    AuthorRow,
    CodeAttribute,
    CodeRow,
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
#: For each kind a condition; and under RESOLVE, for the package queries, a statement run first.
Selection = dict[Any, Any]

#: GetSubmissionSetAndContents and GetFolderAndContents find their package and its members
#: first, with one statement whose rows are (package's entryUUID, a member's entryUUID or NULL):
#: the Selection's RESOLVE. The other statements take them as the bound lists PACKAGES and
#: MEMBERS. Written as subqueries, every statement found them again, and PostgreSQL planned the
#: association statement's twenty table references anew at each request (about 3 ms at a
#: million entries).
RESOLVE = "resolve"
PACKAGES, MEMBERS = "packages", "members"


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


class AnswerTooLarge(Exception):
    """The stored XML of the objects found holds more than `limit` bytes."""

    def __init__(self, limit: int):
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


# --- shared conditions ----------------------------------------------------------------------


#: Lists of up to this many values are written inline, `IN (?, ?)`: what nearly every query
#: sends, and the cheapest statement to build (a list bound as one parameter costs SQLAlchemy
#: some 0.1 ms more per statement to build: a third of a one-entry GetDocuments on SQLite).
#: Longer lists are one bound parameter each.
INLINE_VALUES = 32


#: The bind that carries a query's subject (see `load`): named, so that the statement built for one
#: request serves the next request of the same shape with another subject.
SUBJECT = "xds_subject"


class Subject(str):
    """A parameter value that conditions write as the bind SUBJECT (`equals`)."""


@dataclass(frozen=True)
class Aliases:
    """A patient parameter's value standing for the ids a patient directory gives for the one
    id `patient_id`, found within the query's statement by `in_sql`'s subquery (`patient_is`)."""

    patient_id: str
    in_sql: AliasesInSql


def equals(column: Any, value: str) -> ColumnElement[bool]:
    """`column` = `value`; a Subject as the named bind SUBJECT."""
    return column == (bindparam(SUBJECT, str(value)) if isinstance(value, Subject) else value)


def one_of(column: Any, values: Sequence[str], dialect: str, *, lookup: bool = True) -> ColumnElement[bool]:
    """`column` is one of `values` (see the module's docstring): written inline when short, else
    the whole list bound as one parameter. lookup=False (SQLite): the list is only tested
    against, never used to drive an index (the column is written `+column`), for a column the
    rest of its condition narrows to a few rows already."""
    values = list(values)
    if not lookup and dialect == "sqlite":
        column = UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)
    if len(values) == 1 and isinstance(values[0], Subject):
        return equals(column, values[0])
    if len(values) <= INLINE_VALUES:
        return column.in_(values)
    if dialect == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(String)))
    listed = func.json_each(bindparam(None, json.dumps(values), type_=String)).table_valued("value")
    return column.in_(select(listed.c.value))


def has_one_of(table: Any, owner: Any, *conditions: Any, column: Any, values: Sequence[str],
               dialect: str) -> ColumnElement[bool]:
    """The object (id column `owner`) has a row in the side table `table` (keyed by object_id)
    meeting `conditions` whose `column` is one of `values`: looked up entry by entry (see
    `codes` in the module's docstring).

    On PostgreSQL a long list is asked as a scalar subquery, `(SELECT 1 ... LIMIT 1) IS NOT
    NULL`, which the planner keeps a per-entry probe: as EXISTS it becomes a semi-join, and for
    a long array its estimates favour hashing every object holding any of the values - a scan
    that grows with the registry (10,000 codes, 2 million code rows: 370 ms, against 33-49 ms
    for the patient's 5,000 entries probed one by one). Short lists stay EXISTS, where the
    planner's per-value statistics choose well."""
    return _probe(table, owner, conditions + (one_of(column, values, dialect, lookup=False),), dialect,
                  long=len(values) > INLINE_VALUES)


def _probe(table: Any, owner: Any, conditions: tuple, dialect: str, *, long: bool) -> ColumnElement[bool]:
    matches = (table.object_id == owner, *conditions)
    if dialect == "postgresql" and long:
        return select(literal(1)).where(*matches).limit(1).scalar_subquery().is_not(None)
    return exists().where(*matches)


def codes(owner: Any, attribute: CodeAttribute, values: Sequence[str], dialect: str) -> ColumnElement[bool]:
    """The object (id column `owner`) has one of these codes ('code^^^scheme') for
    `attribute`. As in has_one_of, on SQLite the code never drives the probe (`+code_id`)."""
    c = ObjectCodeRow
    code_id = UnaryExpression(c.code_id, operator=operators.custom_op("+"), type_=c.code_id.type) \
        if dialect == "sqlite" else c.code_id
    return _probe(c, owner, (code_id.in_(_code_ids(attribute, values, dialect)),), dialect,
                  long=len(values) > INLINE_VALUES)


def _code_ids(attribute: CodeAttribute, values: Sequence[str], dialect: str):
    """The dictionary ids of these codes, as a subquery: a few index probes into a small table,
    and a code the registry has never seen matches nothing."""
    return _ids(CodeRow.id, CodeRow.attribute == attribute.value, one_of(CodeRow.value, values, dialect))


def code_parameter(owner: Any, attribute: CodeAttribute, value: list | None, dialect: str,
                   and_or: bool = False) -> list:
    """The conditions of one code parameter: one EXISTS (values OR'ed), or for an AND/OR
    parameter one EXISTS per slot, all of which must hold."""
    if not value:
        return []
    groups = value if and_or else [value]
    return [codes(owner, attribute, group, dialect) for group in groups]


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
    return exists().where(a.object_id == owner, or_(*matches))


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


def patient_is(column: Any, patient: str | Sequence[str] | Aliases, dialect: str) -> ColumnElement[bool]:
    """The object's patient id is `patient`, or one of a list of them, or one of the aliases
    of an id (see the docstring)."""
    if isinstance(patient, Aliases):
        return _alias_of(column, patient, dialect)
    if isinstance(patient, str):
        return equals(column, patient)
    if len(patient) == 1:
        return equals(column, patient[0])
    return one_of(column, patient, dialect)


def _alias_of(column: Any, patient: Aliases, dialect: str) -> ColumnElement[bool]:
    """`column` is one of the aliases of `patient.patient_id`, which the directory's subquery
    finds in the statement, on the bind SUBJECT for the id (its other binds' values are
    `in_sql.values(id)`: `load` gives them). The aliases are searched in the patient index as an
    IN list is, one index search per alias in the order of their values, so that the answer
    comes in the same order as when they were listed: on SQLite `IN (subquery)` (read into a
    sorted list first); on PostgreSQL `= ANY(ARRAY(subquery))`, an array computed once before
    the scan (an InitPlan) that the index scan sorts as it does a bound list (`one_of`), where
    `IN (subquery)` would be a semi-join whose order is that of the planner's choice."""
    subject = patient.patient_id
    bound = bindparam(SUBJECT, str(subject), type_=String) if isinstance(subject, Subject) else literal(subject, String)
    aliases = patient.in_sql.select(bound)
    if dialect == "postgresql":
        return column == any_(func.array(aliases.scalar_subquery(), type_=ARRAY(String)))
    return column.in_(aliases)


def _in(column: Any, values: Sequence[str] | None, dialect: str) -> list:
    return [one_of(column, values, dialect)] if values else []


# Aliases of the tables a query's subqueries use, made once: an alias made per request built its
# column collections anew each time (a tenth of GetSubmissionSetAndContents' CPU).
_INNER_ASSOCIATION = A.__table__.alias("inner_association")
_MEMBERSHIP = A.__table__.alias("membership")
_EXCLUDED_DOCUMENT = D.__table__.alias("excluded_document")
_DROPPED_MEMBER = A.__table__.alias("dropped_member")
_RELATED_DOCUMENT = D.__table__.alias("related_document")
_RELATION = A.__table__.alias("relation")


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


def document_entries(p: Params, dialect: str, *, patient: str | Sequence[str] | None = None,
                     statuses: Sequence[str] | None = None, driving: str | None = None) -> list:
    """The conditions on document_entry of the DocumentEntry parameters present in `p`; the
    code parameter named `driving` is written to drive the search (`_driving_codes`)."""
    owner = D.id
    conditions: list = []
    if patient is not None:
        conditions.append(patient_is(D.patient_id, patient, dialect))
    conditions += _in(D.status, statuses, dialect)
    conditions += _in(D.object_type, p.get("$XDSDocumentEntryType"), dialect)
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
        if name == driving:
            conditions += _driving_codes(owner, attribute, p[name], dialect, and_or)
        else:
            conditions += code_parameter(owner, attribute, p.get(name), dialect, and_or)
    if p.get("$XDSDocumentEntryAuthorPerson"):
        conditions.append(author_person(owner, p["$XDSDocumentEntryAuthorPerson"], dialect))
    if p.get("$XDSDocumentEntryReferenceIdList"):
        r = ReferenceIdRow
        conditions.append(has_one_of(r, owner, column=r.value, values=p["$XDSDocumentEntryReferenceIdList"],
                                     dialect=dialect))
    return conditions


def _driving_codes(owner: Any, attribute: CodeAttribute, value: list, dialect: str, and_or: bool) -> list:
    """A code parameter as `entryUUID IN (the objects holding one of the codes)`, searched in
    the object_code index by code: for a query with nothing narrower to start from (a
    multi-patient query naming no patient), where probing every entry's codes would read the
    whole registry. An AND/OR parameter drives with its first slot; the others stay probes."""
    groups = value if and_or else [value]
    c = ObjectCodeRow
    holders = _ids(c.object_id, c.code_id.in_(_code_ids(attribute, groups[0], dialect)))
    return [owner.in_(holders), *(codes(owner, attribute, group, dialect) for group in groups[1:])]


# --- the stored queries (ITI TF-2 3.18.4.1.2.3.7) ------------------------------------------------


def find_documents(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.1 FindDocuments and 3.18.4.1.2.3.7.14 FindDocumentsByReferenceId."""
    return {DE: and_(*document_entries(p, dialect, patient=p["$XDSDocumentEntryPatientId"],
                                       statuses=p["$XDSDocumentEntryStatus"]))}


def find_submission_sets(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.2 FindSubmissionSets."""
    conditions = [patient_is(S.patient_id, p["$XDSSubmissionSetPatientId"], dialect),
                  one_of(S.status, p["$XDSSubmissionSetStatus"], dialect)]
    conditions += _in(S.source_id, p.get("$XDSSubmissionSetSourceId"), dialect)
    conditions += time_range(S.submission_time, p.get("$XDSSubmissionSetSubmissionTimeFrom"),
                             p.get("$XDSSubmissionSetSubmissionTimeTo"))
    conditions += code_parameter(S.id, CodeAttribute.CONTENT_TYPE, p.get("$XDSSubmissionSetContentType"),
                                 dialect)
    if p.get("$XDSSubmissionSetAuthorPerson") is not None:
        conditions.append(author_person(S.id, [p["$XDSSubmissionSetAuthorPerson"]], dialect))
    return {SS: and_(*conditions)}


def find_folders(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.3 FindFolders."""
    return {FOL: and_(*_folders(p, dialect, p["$XDSFolderPatientId"]))}


def _folders(p: Params, dialect: str, patient: str | Sequence[str] | None) -> list:
    conditions = [] if patient is None else [patient_is(F.patient_id, patient, dialect)]
    conditions.append(one_of(F.status, p["$XDSFolderStatus"], dialect))
    conditions += time_range(F.last_update_time, p.get("$XDSFolderLastUpdateTimeFrom"),
                             p.get("$XDSFolderLastUpdateTimeTo"))
    if patient is None and p.get("$XDSFolderCodeList"):
        conditions += _driving_codes(F.id, CodeAttribute.FOLDER, p["$XDSFolderCodeList"], dialect, True)
    else:
        conditions += code_parameter(F.id, CodeAttribute.FOLDER, p.get("$XDSFolderCodeList"), dialect,
                                     and_or=True)
    return conditions


def get_all(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.4 GetAll: the patient's SubmissionSets, DocumentEntries and Folders, and
    the Associations between them (those to an Association too: a SubmissionSet's HasMember of
    a Folder's HasMember)."""
    patient = p["$patientId"]
    # The associations follow the objects this level sees (an older version's are left out).
    documents = and_(*document_entries(p, dialect, patient=patient, statuses=p["$XDSDocumentEntryStatus"]),
                     *_seen(DE, p))
    submission_sets = and_(patient_is(S.patient_id, patient, dialect),
                           one_of(S.status, p["$XDSSubmissionSetStatus"], dialect))
    folders = and_(patient_is(F.patient_id, patient, dialect), one_of(F.status, p["$XDSFolderStatus"], dialect),
                   *_seen(FOL, p))
    objects = union(
        select(D.entry_uuid.label("id")).where(documents),
        select(S.entry_uuid.label("id")).where(submission_sets),
        select(F.entry_uuid.label("id")).where(folders),
    ).cte("patient_objects")
    ids = _ids(objects.c.id)
    a2 = _INNER_ASSOCIATION
    between_objects = _ids(a2.c.entry_uuid, a2.c.source.in_(ids), a2.c.target.in_(ids))
    associations = and_(A.source.in_(ids), or_(A.target.in_(ids), A.target.in_(between_objects)))
    return {SS: submission_sets, DE: documents, FOL: folders, ASSOC: associations}


def get_documents(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.5 GetDocuments (whatever their status)."""
    return {DE: _documents_by_id(p, dialect)}


def _documents_by_id(p: Params, dialect: str) -> ColumnElement[bool]:
    return _either(*(one_of(column, _as_list(p[name]), dialect) if name in p else None for name, column in (
        ("$XDSDocumentEntryEntryUUID", D.entry_uuid),
        ("$XDSDocumentEntryUniqueId", D.unique_id),
        ("$XDSDocumentEntryLogicalID", D.logical_id),
    )))


def get_folders(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.6 GetFolders (a Folder's versions share its logicalID)."""
    return {FOL: _either(*(one_of(column, _as_list(p[name]), dialect) if name in p else None for name, column in (
        ("$XDSFolderEntryUUID", F.entry_uuid),
        ("$XDSFolderUniqueId", F.unique_id),
        ("$XDSFolderLogicalID", F.logical_id),
    )))}


def get_associations(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.7 GetAssociations: those with one of the objects at either end."""
    return {ASSOC: or_(one_of(A.source, p["$uuid"], dialect), one_of(A.target, p["$uuid"], dialect))}


def get_documents_and_associations(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.8 GetDocumentsAndAssociations: the documents, and the Associations that
    have one of them at either end."""
    documents = _documents_by_id(p, dialect)
    ids = _ids(D.entry_uuid, documents)
    return {DE: documents, ASSOC: or_(A.source.in_(ids), A.target.in_(ids))}


def get_submission_sets(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.9 GetSubmissionSets: the SubmissionSets that hold the objects (by a
    HasMember Association), and those Associations."""
    is_submission_set = exists().where(S.entry_uuid == A.source)
    memberships = and_(A.type == HAS_MEMBER, one_of(A.target, p["$uuid"], dialect), is_submission_set)
    return {SS: S.entry_uuid.in_(_ids(A.source, memberships)), ASSOC: memberships}


def get_submission_set_and_contents(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.10 GetSubmissionSetAndContents: the SubmissionSet, its DocumentEntries
    (those passing the format, confidentiality and type filters) and Folders, and the
    Associations among them: the SubmissionSet's HasMembers and the member Associations
    (a Folder's HasMember). An Association with a filtered-out DocumentEntry at an end is left
    out, and so is the SubmissionSet's HasMember of such an Association."""
    submission_set = _either(
        equals(S.entry_uuid, p["$XDSSubmissionSetEntryUUID"]) if "$XDSSubmissionSetEntryUUID" in p else None,
        equals(S.unique_id, p["$XDSSubmissionSetUniqueId"]) if "$XDSSubmissionSetUniqueId" in p else None,
    )
    return _package_and_contents(S.entry_uuid, submission_set, SS, p, dialect, with_member_associations=True)


def get_folder_and_contents(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.11 GetFolderAndContents: the Folder, its DocumentEntries (those passing
    the format, confidentiality and type filters) and the Folder's HasMembers of them."""
    folder = _either(
        equals(F.entry_uuid, p["$XDSFolderEntryUUID"]) if "$XDSFolderEntryUUID" in p else None,
        equals(F.unique_id, p["$XDSFolderUniqueId"]) if "$XDSFolderUniqueId" in p else None,
    )
    return _package_and_contents(F.entry_uuid, folder, FOL, p, dialect, with_member_associations=False)


def _package_and_contents(package_uuid: Any, package: ColumnElement[bool], kind: ObjectKind, p: Params,
                          dialect: str, *, with_member_associations: bool) -> Selection:
    a2 = _MEMBERSHIP
    resolve = (select(package_uuid, a2.c.target)
               .outerjoin_from(TABLES[kind], a2, and_(a2.c.source == package_uuid, a2.c.type == HAS_MEMBER,
                                                      *_visible(a2, p)))
               .where(package))

    def in_package(column: Any) -> ColumnElement[bool]:
        return prepared.one_of(column, PACKAGES, dialect)

    def is_member(column: Any) -> ColumnElement[bool]:
        return prepared.one_of(column, MEMBERS, dialect)

    # A member that this level does not see (an older version) is left out, with its associations.
    filters = document_entries(p, dialect) + _seen(DE, p)
    documents = and_(is_member(D.entry_uuid), *filters)
    selection: Selection = {RESOLVE: resolve, kind: in_package(package_uuid), DE: documents}
    own_hasmember = and_(in_package(A.source), A.type == HAS_MEMBER)
    if not with_member_associations:
        selection[ASSOC] = and_(own_hasmember, A.target.in_(_ids(D.entry_uuid, documents)))
        return selection
    d2 = _EXCLUDED_DOCUMENT
    excluded = _ids(d2.c.entry_uuid, is_member(d2.c.entry_uuid), not_(and_(*_rebind(filters, d2))))
    a3 = _DROPPED_MEMBER
    dropped = _ids(a3.c.entry_uuid, is_member(a3.c.entry_uuid),
                   or_(a3.c.source.in_(excluded), a3.c.target.in_(excluded)))
    selection[FOL] = is_member(F.entry_uuid)
    selection[ASSOC] = or_(
        and_(own_hasmember, A.target.not_in(excluded), A.target.not_in(dropped)),
        and_(is_member(A.entry_uuid), A.entry_uuid.not_in(dropped)),
    )
    return selection


def _rebind(conditions: list, alias: Any) -> list:
    """`conditions` written on a table, rewritten on an alias of it (TRUE for none)."""
    adapter = ClauseAdapter(alias)
    return [adapter.traverse(c) for c in conditions] if conditions else [literal(True)]


def get_folders_for_document(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.12 GetFoldersForDocument: the Folders with a HasMember of the document."""
    documents = _ids(D.entry_uuid, _documents_by_id(p, dialect))
    holders = _ids(A.source, A.type == HAS_MEMBER, A.target.in_(documents), *_visible(A.__table__, p))
    return {FOL: F.entry_uuid.in_(holders)}


def get_related_documents(p: Params, dialect: str) -> Selection:
    """3.18.4.1.2.3.7.13 GetRelatedDocuments: the Associations of the given types between the
    document and other DocumentEntries (of the wanted DocumentEntry types), and the documents at
    their ends - the document itself included. A document with no such relation gives nothing
    (the NIST toolkit's test 11909/near_folder): only the ends of a relation are returned."""
    document = _ids(D.entry_uuid, _documents_by_id(p, dialect))
    d2 = _RELATED_DOCUMENT

    def is_document(column: Any) -> ColumnElement[bool]:
        wanted = _in(d2.c.object_type, p.get("$XDSDocumentEntryType"), dialect)
        return exists().where(d2.c.entry_uuid == column, *wanted)

    relations = and_(
        one_of(A.type, p["$AssociationTypes"], dialect),
        or_(and_(A.source.in_(document), is_document(A.target)),
            and_(A.target.in_(document), is_document(A.source))),
        *_visible(A.__table__, p),
    )
    a2 = _RELATION
    relations_2 = _rebind([relations], a2)[0]
    ends = union(select(a2.c.source.label("id")).where(relations_2),
                 select(a2.c.target.label("id")).where(relations_2)).subquery()
    return {DE: D.entry_uuid.in_(_ids(ends.c.id)), ASSOC: relations}


# --- Multi-Patient Stored Query (ITI TF-2b 3.51.4.1.2) -------------------------------------------

#: The code parameters that may stand for the patient list of FindDocumentsForMultiplePatients,
#: in the order one is chosen to drive a query naming no patient.
_SELECTING_CODES = ("$XDSDocumentEntryClassCode", "$XDSDocumentEntryHealthcareFacilityTypeCode",
                    "$XDSDocumentEntryEventCodeList")


def find_documents_for_multiple_patients(p: Params, dialect: str) -> Selection:
    """3.51.4.1.2.1 FindDocumentsForMultiplePatients: FindDocuments for a list of patients, or
    for every patient when none is named."""
    patients = p.get("$XDSDocumentEntryPatientId")
    driving = None if patients else next((name for name in _SELECTING_CODES if p.get(name)), None)
    return {DE: and_(*document_entries(p, dialect, patient=patients, statuses=p["$XDSDocumentEntryStatus"],
                                       driving=driving))}


def find_folders_for_multiple_patients(p: Params, dialect: str) -> Selection:
    """3.51.4.1.2.2 FindFoldersForMultiplePatients: FindFolders for a list of patients, or for
    every patient when none is named."""
    return {FOL: and_(*_folders(p, dialect, p.get("$XDSFolderPatientId") or None))}


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
    "FindDocumentsForMultiplePatients": find_documents_for_multiple_patients,
    "FindFoldersForMultiplePatients": find_folders_for_multiple_patients,
}


def selection(query: StoredQuery, params: Params, dialect: str) -> Selection:
    """Which rows of each table `query` returns for `params` (checked by query_params), at the
    metadata level the query asks for (see "Metadata levels")."""
    found = _BUILDERS[query.name](params, dialect)
    if metadata_level(params) >= 2:
        return found
    for kind, condition in list(found.items()):
        extra = _level_1(kind, params)
        if extra is not None:
            found[kind] = and_(condition, extra)
    return found


# --- Metadata levels (ITI TF-2a 3.18.4.1.2.3.5.1, with the Metadata Update option) -----------
#
# Update Document Set (ITI-57, xds.registry.update) makes versions: a DocumentEntry or Folder
# has rows of one logicalID, the latest marked `latest`, the older ones Deprecated. A query at
# $MetadataLevel 1 (the default: a consumer that knows nothing of versions) sees the latest
# version of each object only, and the associations it would understand: Approved ones of the
# types of ITI TF-3 4.2.2 (not an association deprecated by ITI-57, nor an UpdateAvailabilityStatus
# or SubmitAssociation one). At $MetadataLevel 2 a query sees every version and association, as
# stored: GetDocuments with $XDSDocumentEntryLogicalID lists a document's history.
#
# An Approved DocumentEntry or Folder is always a latest version (an update deprecates the one it
# replaces, and only the latest version's status can change), so a query for Approved objects
# alone needs no test of `latest`: FindDocuments keeps its covering index.

#: The association types a query at level 1 answers with.
_LEVEL_1_ASSOCIATION_TYPES = tuple(t.value for t in AssociationType)
_APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"


def metadata_level(p: Params) -> int:
    return p.get("$MetadataLevel") or 1


def _approved_only(statuses: Any) -> bool:
    return isinstance(statuses, list) and set(statuses) == {_APPROVED}


def _level_1(kind: ObjectKind, p: Params) -> ColumnElement[bool] | None:
    """The condition a level-1 answer adds on the rows of `kind` (None: nothing to add)."""
    if kind is DE:
        return None if _approved_only(p.get("$XDSDocumentEntryStatus")) else D.latest.is_(True)
    if kind is FOL:
        return None if _approved_only(p.get("$XDSFolderStatus")) else F.latest.is_(True)
    if kind is ASSOC:
        return _association_level_1(A.__table__, p)
    return None


def _seen(kind: ObjectKind, p: Params) -> list:
    """The conditions of `_level_1` on the rows of `kind` at `p`'s level, as a list, for the
    queries whose associations follow the objects they return."""
    condition = _level_1(kind, p) if metadata_level(p) < 2 else None
    return [] if condition is None else [condition]


def _association_level_1(table: Any, p: Params) -> ColumnElement[bool] | None:
    """The associations `table` (the association table or an alias) a query at `p`'s level
    sees, for the queries that follow associations to other objects."""
    if metadata_level(p) >= 2:
        return None
    return and_(table.c.status == _APPROVED, table.c.type.in_(_LEVEL_1_ASSOCIATION_TYPES))


def _visible(table: Any, p: Params) -> list:
    condition = _association_level_1(table, p)
    return [] if condition is None else [condition]


# --- access control ------------------------------------------------------------------------------

#: How deep Association ends are followed to find their patients: an Association's end may be
#: an Association (a SubmissionSet's HasMember of a Folder's HasMember), whose ends are objects.
_END_DEPTH = 3


def _owners(session: Session, uuids: set[str], dialect: str) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """For the registry objects among `uuids`: DocumentEntries, SubmissionSets and Folders ->
    their patient id; Associations -> their (source, target)."""
    patients: dict[str, str] = {}
    ends: dict[str, tuple[str, str]] = {}
    listed = sorted(uuids)
    if not listed:
        return patients, ends
    for table in (D, S, F):
        for entry_uuid, patient in session.execute(select(table.entry_uuid, table.patient_id)
                                                   .where(one_of(table.entry_uuid, listed, dialect))):
            patients[entry_uuid] = patient
    for entry_uuid, source, target in session.execute(select(A.entry_uuid, A.source, A.target)
                                                      .where(one_of(A.entry_uuid, listed, dialect))):
        ends[entry_uuid] = (source, target)
    return patients, ends


def visible_only(session: Session, query: StoredQuery, conditions: Selection, dialect: str,
                 visible: Callable[[Session, Iterable[str]], set[str]], values: dict[str, Any]) -> Selection:
    """`conditions` narrowed to the objects of the patients `visible` allows (see
    `visible_only` in the module's docstring); the same conditions when nothing is hidden.
    `values`: what the conditions' bound parameters take (a package query's, `_resolve`)."""
    found: dict[ObjectKind, list[str]] = {}
    patients: dict[str, str] = {}
    ends: dict[str, tuple[str, str]] = {}
    for kind in query.returns:
        condition = conditions.get(kind)
        if condition is None:
            continue
        where = _index_friendly(kind, condition)
        if kind is ASSOC:
            rows = session.execute(select(A.entry_uuid, A.source, A.target).where(where), values).all()
            ends.update((row.entry_uuid, (row.source, row.target)) for row in rows)
        else:
            table = TABLES[kind]
            rows = session.execute(select(table.entry_uuid, table.patient_id).where(where), values).all()
            patients.update((row.entry_uuid, row.patient_id) for row in rows)
        found[kind] = [row.entry_uuid for row in rows]
    # The patients of the Associations' ends, which the answer need not hold.
    unknown = {end for pair in ends.values() for end in pair} - patients.keys() - ends.keys()
    for _ in range(_END_DEPTH):
        if not unknown:
            break
        more_patients, more_ends = _owners(session, unknown, dialect)
        patients.update(more_patients)
        ends.update(more_ends)
        unknown = {end for pair in more_ends.values() for end in pair} - patients.keys() - ends.keys()
    allowed = visible(session, {p for p in patients.values() if p})

    def shown(uuid: str, depth: int = 0) -> bool:
        if uuid in patients:
            return patients[uuid] in allowed
        if uuid in ends and depth < _END_DEPTH:
            return all(shown(end, depth + 1) for end in ends[uuid])
        return True  # no object of this registry: no patient's data to hide

    narrowed = dict(conditions)
    for kind, uuids in found.items():
        kept = [uuid for uuid in uuids if shown(uuid)]
        if len(kept) != len(uuids):
            narrowed[kind] = and_(conditions[kind], one_of(TABLES[kind].entry_uuid, kept, dialect)) if kept \
                else false()
    return narrowed


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
    """A top-level OR as `entry_uuid IN (branch UNION branch ...)`; also one inside a top-level
    AND, the other terms going into every branch (`a AND (b OR c)`: the status and
    $MetadataLevel terms around GetSubmissionSetAndContents' association selection).

    PostgreSQL plans `a IN (subquery) OR b IN (subquery)` as a scan of the whole table (measured:
    GetSubmissionSetAndContents 450-700 ms at 1,000,000 entries, and again 370-490 ms once the
    OR was wrapped in an AND); each branch alone uses its index, and the union of their ids is a
    small hash semi-join.
    """
    if not isinstance(condition, BooleanClauseList):
        return condition
    if condition.operator is operators.or_:
        others, alternatives = [], list(condition.clauses)
    elif condition.operator is operators.and_:
        # an OR within an AND comes wrapped in parentheses (a Grouping)
        terms = [c.element if isinstance(c, Grouping) else c for c in condition.clauses]
        ors = [c for c in terms if isinstance(c, BooleanClauseList) and c.operator is operators.or_]
        if len(ors) != 1:
            return condition
        others = [c for c in terms if c is not ors[0]]
        alternatives = list(ors[0].clauses)
    else:
        return condition
    table = TABLES[kind]
    branches = [select(table.entry_uuid).where(*others, branch) for branch in alternatives]
    return table.entry_uuid.in_(union(*branches))


#: Rows fetched at a time while a SQLite answer is read.
_BATCH = 100


@dataclass
class _Left:
    """What is left of a LeafClass answer's limits (None: no limit), and the limits."""

    objects: int | None
    bytes: int | None
    limit: int | None
    max_bytes: int | None

    def take(self, objects: int, size: int) -> None:
        """Count `objects` holding `size` bytes in, or raise the error of the limit passed."""
        if self.objects is not None:
            if objects > self.objects:
                raise TooManyResults(self.limit or 0)
            self.objects -= objects
        if self.bytes is not None:
            if size > self.bytes:
                raise AnswerTooLarge(self.max_bytes or 0)
            self.bytes -= size


#: What is left of the limits, bound when a PostgreSQL LeafClass statement runs (_UNLIMITED: none).
_LEFT_OBJECTS = bindparam("left_objects", type_=BigInteger)
_LEFT_BYTES = bindparam("left_bytes", type_=BigInteger)
_UNLIMITED = 2 ** 62


@functools.cache
def _measured_columns(kind: ObjectKind) -> tuple:
    """The LeafClass columns of `kind` with the XML held back past a limit, and the count and
    bytes of all the objects the statement finds (built once per kind: building them for each
    query cost more than running the statement)."""
    table = TABLES[kind]
    count = func.count().over()
    size = func.coalesce(func.sum(table.xml_size).over(), 0)
    fits = and_(count <= _LEFT_OBJECTS, size <= _LEFT_BYTES)
    columns = [case((fits, column), else_=None).label("xml") if column.key == "xml" else column
               for column in _columns(kind, True)]
    return (*columns, count.label("found_count"), size.label("found_size"))


def _statement(kind: ObjectKind, where: ColumnElement[bool], *, leaf_class: bool, dialect: str,
               limited: bool) -> Select:
    """The SELECT of one kind: ids only (ObjectRef); LeafClass at most `row_limit` + 1 rows (when
    limited), on PostgreSQL with the measuring columns (`_leaf_class_measured`)."""
    if not leaf_class:
        return select(*_columns(kind, False)).where(where)
    columns = _measured_columns(kind) if dialect == "postgresql" else _columns(kind, True)
    statement = select(*columns).where(where)
    return statement.limit(_ROW_LIMIT) if limited else statement


def _leaf_class_measured(session: Session, statement: Select, values: dict[str, Any], left: _Left,
                         kept: bool) -> list[Row]:
    """PostgreSQL: psycopg receives a whole result before the first row is seen, so the
    statement itself holds the XML back when the limits are passed. Window functions count all
    the objects the condition finds and sum their stored sizes (octet_length reads a value's
    header, not the value), and the XML is sent only if both fit what is left: one statement,
    as without limits (a measuring statement of its own cost 0.4 ms of client CPU, as much as a
    one-entry GetDocuments), and a refusal sends at most limit + 1 rows, without XML."""
    values = {**values, "left_objects": _UNLIMITED if left.objects is None else left.objects,
              "left_bytes": _UNLIMITED if left.bytes is None else left.bytes}
    with _rows(session, statement, values, kept) as (keys, rows):
        result = [dict(zip(keys, row)) for row in rows]
    if not result:
        return []
    left.take(result[0]["found_count"], int(result[0]["found_size"]))
    return [_unmeasured(row) for row in result]


def _unmeasured(row: dict[str, Any]) -> Row:
    """A measured statement's row (`_measured_columns`) without its measures."""
    return Row(**{key: value for key, value in row.items() if key not in ("found_count", "found_size")})


def _leaf_class_streamed(session: Session, statement: Select, values: dict[str, Any], left: _Left,
                         kept: bool) -> list[Row]:
    """SQLite: rows are handed over as the statement steps, so they are read in batches and
    counted as they come; a refusal stops reading at the first row past a limit (no second
    statement on the way of every small answer)."""
    found: list[Row] = []
    with _rows(session, statement, values, kept) as (keys, rows):
        for row in rows:
            found.append(Row(**dict(zip(keys, row))))
            left.take(1, utf8_size(found[-1].xml))
    return found


#: The kept statements (below) as the driver runs them, made at their first run.
_expanded: weakref.WeakKeyDictionary[Select, prepared.Expanded] = weakref.WeakKeyDictionary()


def _expanded_for(session: Session, statement: Select, values: dict[str, Any]) -> prepared.Expanded:
    expanded = _expanded.get(statement)
    if expanded is None:
        expanded = _expanded[statement] = prepared.Expanded(statement, session.get_bind().dialect, values)
    return expanded


def _measured_together(session: Session, statements: dict[ObjectKind, Select], given: dict[str, Any],
                       leaf_class: bool, left: _Left) -> dict[ObjectKind, list[Row]]:
    """PostgreSQL, the kept statements of a query of several kinds (GetSubmissionSetAndContents'
    four): sent together, one round trip where each waited for its own. Each kind is measured
    against an equal share of the answer's limits, so that the XML read before a refusal stays
    within them; the limits are then judged on the kinds' totals, and a kind past its share (its
    XML held back) is read again with what the others left - only in answers near the limits."""
    shares = _Left(*(None if value is None else value // len(statements) for value in (left.objects, left.bytes)),
                   left.limit, left.max_bytes)
    values = {}
    for kind in statements:
        values[kind] = dict(given)
        if leaf_class:
            if shares.objects is not None:
                values[kind]["row_limit"] = shares.objects + 1
            values[kind]["left_objects"] = _UNLIMITED if shares.objects is None else shares.objects
            values[kind]["left_bytes"] = _UNLIMITED if shares.bytes is None else shares.bytes
    sent = {}
    with prepared.pipeline(session):
        for kind, statement in statements.items():
            expanded = _expanded_for(session, statement, values[kind])
            sent[kind] = (expanded.keys, expanded.send(session, values[kind]))
    rows = {kind: [dict(zip(keys, row)) for row in pending.all()] for kind, (keys, pending) in sent.items()}
    if not leaf_class:
        return {kind: [Row(**row) for row in found] for kind, found in rows.items()}
    measured = {kind: (found[0]["found_count"], int(found[0]["found_size"])) if found else (0, 0)
                for kind, found in rows.items()}
    left.take(sum(count for count, _ in measured.values()), sum(size for _, size in measured.values()))
    out = {}
    for kind, found in rows.items():
        count, size = measured[kind]
        if (shares.objects is None or count <= shares.objects) and (shares.bytes is None or size <= shares.bytes):
            out[kind] = [_unmeasured(row) for row in found]
            continue
        others = [measured[other] for other in measured if other != kind]
        again = _Left(None if left.limit is None else left.limit - sum(c for c, _ in others),
                      None if left.max_bytes is None else left.max_bytes - sum(b for _, b in others),
                      left.limit, left.max_bytes)
        value = dict(given)
        if again.objects is not None:
            value["row_limit"] = again.objects + 1
        out[kind] = _leaf_class_measured(session, statements[kind], value, again, True)
    return out


@contextlib.contextmanager
def _rows(session: Session, statement: Select, values: dict[str, Any],
          kept: bool) -> Iterator[tuple[list[str], Iterator[tuple]]]:
    """The column names and rows of `statement` run with `values`, read `_BATCH` at a time. A
    kept statement runs on the driver's cursor (`prepared.Expanded`: its other values are its
    shape's); one made for this request alone, through the connection's execute."""
    if kept:
        expanded = _expanded_for(session, statement, values)
        with expanded.rows(session, values, _BATCH) as rows:
            yield expanded.keys, rows
        return
    connection = session.connection()
    # (psycopg receives a whole result at once; a server-side cursor would need a transaction)
    options = {"yield_per": _BATCH} if connection.dialect.name == "sqlite" else {}
    with connection.execute(statement, values, execution_options=options) as result:
        yield list(result.keys()), (tuple(row) for row in result)


# --- statements per query shape -----------------------------------------------------------------
#
# Building a query's statements (the conditions, `_index_friendly`'s unions) cost more than running
# them: for GetSubmissionSetAndContents at 1,000,000 entries, 6% of its CPU was SQLite's work and
# the rest SQLAlchemy's building and preparing the statements anew. So `load` keeps the statements
# it built for a request's shape: the query, the database, the return type, the limits and every
# parameter value but one, the subject (the patient of a Find query, the one id of a Get query),
# which the conditions write as the named bind SUBJECT (`equals`). The next request of that shape
# runs the same statement objects (their SQL and cache key already made) with its own subject,
# on the driver's cursor (`_rows`, `prepared.Expanded`: their SQL text and fixed parameters made
# at the first run, where SQLAlchemy's execute made them again for every request).
# A statement in which the subject's value shows up elsewhere than in that bind is not kept (a
# condition that did not write it through `equals`); nor is one narrowed by access control
# (`visible_only` depends on the caller).

#: The id parameters that are a Get query's subject when they hold one value.
_ID_PARAMETERS = ("$XDSDocumentEntryEntryUUID", "$XDSDocumentEntryUniqueId", "$XDSSubmissionSetEntryUUID",
                  "$XDSSubmissionSetUniqueId", "$XDSFolderEntryUUID", "$XDSFolderUniqueId")
_SHAPES_KEPT = 256
_shapes: dict[tuple, dict[ObjectKind, Select | None]] = {}
_shapes_lock = threading.Lock()
_ROW_LIMIT = bindparam("row_limit", type_=BigInteger)


def _subject(query: StoredQuery, params: Params) -> tuple[str, str] | None:
    """(parameter, value) of the request's subject: the patient, else a single id."""
    for name in (query.patient_parameter, *_ID_PARAMETERS):
        value = params.get(name) if name else None
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, Aliases):
            return name, value.patient_id
        if isinstance(value, str):
            return name, value
    return None


def _aliases_in_sql(params: Params, subject: tuple[str, str] | None) -> AliasesInSql | None:
    """The directory's SQL for the subject's aliases, when the subject stands for them."""
    value = params[subject[0]] if subject else None
    return value.in_sql if isinstance(value, Aliases) else None


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def _shape(query: StoredQuery, params: Params, subject: tuple[str, str] | None, dialect: str, leaf_class: bool,
           limits: tuple) -> tuple | None:
    name = subject[0] if subject else None
    key = (query.name, dialect, leaf_class, limits, name, _aliases_in_sql(params, subject),
           tuple(sorted((k, _frozen(v)) for k, v in params.items() if k != name)))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _with_subject(params: Params, subject: tuple[str, str] | None) -> Params:
    if subject is None:
        return params
    name, value = subject
    current = params[name]
    if isinstance(current, Aliases):
        return {**params, name: Aliases(Subject(value), current.in_sql)}
    return {**params, name: [Subject(value)] if isinstance(params[name], list) else Subject(value)}


def _subject_only_in_its_bind(statements: Iterable[Select | None], subject: str | None,
                              binds: Iterable[str] = (SUBJECT,)) -> bool:
    """Whether the subject's value shows up in no bound parameter but `binds` (those given
    their values for each request)."""
    if subject is None:
        return True
    own = set(binds)
    for statement in statements:
        for element in iterate(statement) if statement is not None else ():
            if isinstance(element, BindParameter) and element.key not in own and subject in str(element.value):
                return False
    return True


def _keep(shape: tuple, statements: dict[ObjectKind, Select | None]) -> None:
    with _shapes_lock:
        while len(_shapes) >= _SHAPES_KEPT:
            del _shapes[next(iter(_shapes))]
        _shapes[shape] = statements


def load(session: Session, query: StoredQuery, params: Params, *, leaf_class: bool,
         limit: int | None = None, max_bytes: int | None = None,
         visible: Callable[[Session, Iterable[str]], set[str]] | None = None) -> Found:
    """Run `query`: one SELECT per object kind it returns (on the session's connection: Core
    rows, without the ORM session's per-statement work). For LeafClass, `limit` bounds the
    objects of the answer (TooManyResults past it) and `max_bytes` the bytes of their stored
    XML (AnswerTooLarge), all kinds together; no more than limit + 1 rows are read, and a
    refusal is made before the XML of an answer is held in memory (PostgreSQL: before any is
    read; SQLite: at the first object past the limit). ObjectRef answers are not limited.
    `visible(session, patient ids)`, when given, says which patients' objects may be answered
    (`visible_only`). The statements of a request's shape are built once (see above)."""
    dialect = session.get_bind().dialect.name
    named = _subject(query, params)
    subject = named[1] if named else None
    shape = (_shape(query, params, named, dialect, leaf_class, (limit is None, max_bytes is None))
             if visible is None else None)
    statements = _shapes.get(shape) if shape is not None else None
    kept = statements is not None
    if statements is None:
        conditions = selection(query, _with_subject(params, named), dialect)
        resolve = conditions.pop(RESOLVE, None)
    else:
        resolve = statements[RESOLVE]
    given = {SUBJECT: subject} if subject is not None else {}
    in_sql = _aliases_in_sql(params, named)
    if in_sql is not None:
        given.update(in_sql.values(subject))
    if resolve is not None and not _resolve(session, resolve, given, kept):
        return Found({kind: [] for kind in query.returns})  # no such package
    if statements is None:
        if visible is not None:
            conditions = visible_only(session, query, conditions, dialect, visible, given)
        statements = {kind: None if conditions.get(kind) is None else _statement(
                          kind, _index_friendly(kind, conditions[kind]), leaf_class=leaf_class, dialect=dialect,
                          limited=limit is not None)
                      for kind in query.returns}
        statements[RESOLVE] = resolve
        if shape is not None and _subject_only_in_its_bind(statements.values(), subject, given):
            _keep(shape, statements)
            kept = True
    found = Found()
    left = _Left(limit, max_bytes, limit, max_bytes)
    present = {kind: statements[kind] for kind in query.returns if statements[kind] is not None}
    if kept and dialect == "postgresql" and len(present) > 1:
        together = _measured_together(session, present, given, leaf_class, left)
        found.objects = {kind: together.get(kind, []) for kind in query.returns}
        return found
    for kind in query.returns:
        statement = statements[kind]
        values = dict(given)
        if statement is None:
            found.objects[kind] = []
        elif not leaf_class:
            with _rows(session, statement, values, kept) as (keys, rows):
                found.objects[kind] = [Row(**dict(zip(keys, row))) for row in rows]
        else:
            if left.objects is not None:
                values["row_limit"] = left.objects + 1
            read = _leaf_class_measured if dialect == "postgresql" else _leaf_class_streamed
            found.objects[kind] = read(session, statement, values, left, kept)
    return found


def _resolve(session: Session, statement: Select, values: dict[str, Any], kept: bool) -> bool:
    """Run a package query's RESOLVE statement: its package and members go into `values` (as
    PACKAGES and MEMBERS); False when there is no such package."""
    with _rows(session, statement, values, kept) as (_keys, found):
        rows = list(found)
    values[PACKAGES] = sorted({package for package, _member in rows})
    values[MEMBERS] = sorted({member for _package, member in rows if member is not None})
    return bool(rows)
