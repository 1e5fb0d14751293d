"""The Document Registry's patient directory (xds.registry.patients.PatientDirectory) over the
PIX Manager's cross-references and merges.

    directory = IdentityDirectory()
    directory.resolve(session, ["P1^^^&1.2.3&ISO", ...])   # registration (ITI-42)
    directory.aliases(session, "P1^^^&1.2.3&ISO")          # stored queries (ITI-18)

* resolve: an id the registry knows (its patient list, which feeds of the affinity domain
  fill) resolves to itself; an id merged into another (retired) resolves to None, so a
  submission for it fails with XDSUnknownPatientId; so does an id nobody fed.
* aliases: the ids whose documents a query for an id answers with: the id itself first, then
  every id retired into it (ITI-44 merges, chains flattened). A retired id has none: a query
  for a subsumed id "shall return no results" (ITI TF-2a 3.18.4.1.2.3.9.1); its documents are
  found under its survivor.
* aliases_in_sql: aliases() of one id as a subquery, which a stored query for one patient
  runs within its own statement (xds.registry.patients.AliasesInSql): no statement of its own.
* aliases_of: aliases() of many ids at once, in a few statements per thousand ids (a
  Multi-Patient Stored Query may name tens of thousands of patients).
* survivor: the id a retired id was merged into (None for an id not retired).

All three read in the caller's session: inside the registry's write transaction, a feed
committed before is seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, CompoundSelect, String, bindparam, exists, select, union_all
from sqlalchemy.orm import Session

from xds.identity import store
from xds.identity.store import RETIRED
from xds.model.patient import PatientId
from xds.model.person import Identifier
from xds.store import patients
from xds.store.db import chunked
from xds.store.prepared import Prepared, one_of, pipeline
from xds.store.tables import IdentityPatientRow


def parse_cx(patient_id: str) -> Identifier | None:
    """An XDS patient id (id^^^&OID&ISO) as an Identifier; None when it is not one."""
    try:
        parsed = PatientId.parse(patient_id)
    except ValueError:
        return None
    return Identifier(parsed.authority_oid, parsed.id)


# The id's own row (is it retired?) and the ids merged into it, in the order they were fed: one
# statement on the rows' (root, extension) and merged_into indexes, not an ORM load of each row
# (aliases() runs for every stored query by patient: 0.04 ms this way, 0.3 ms loading the rows).
_survivor = IdentityPatientRow.__table__.alias("survivor")
_merged = IdentityPatientRow.__table__.alias("merged")
_ALIASES = Prepared(lambda dialect: select(_survivor.c.status, _merged.c.root, _merged.c.extension)
                    .outerjoin(_merged, _merged.c.merged_into == _survivor.c.pk)
                    .where(_survivor.c.root == bindparam("root"), _survivor.c.extension == bindparam("extension"))
                    .order_by(_merged.c.pk))
_MERGED_INTO_MANY = (select(_survivor.c.extension, _merged.c.root, _merged.c.extension)
                     .join(_survivor, _merged.c.merged_into == _survivor.c.pk)
                     .where(_survivor.c.status != RETIRED)
                     .order_by(_merged.c.pk))


# aliases() of one id written as SQL, for a stored query to find them in its own statement
# instead of asking first (one round trip fewer on PostgreSQL; `_ALIASES` cost 0.3-0.5 ms of a
# 2 ms FindDocuments there). The same answer as aliases(): the id itself unless its row is
# retired, then the ids merged into a survivor that is not retired, written as Identifier.cx
# writes them (extension^^^&root&ISO); each part found by the (root, extension) index, the
# merged ids by merged_into's. An id parse_cx cannot read binds NULL root and extension, which
# no row matches: the id is its own only alias, as aliases() says.
#
#   SELECT :patient_id WHERE NOT EXISTS (SELECT * FROM identity_patient AS survivor
#       WHERE survivor.root = :alias_root AND survivor.extension = :alias_extension
#         AND survivor.status = 'retired')
#   UNION ALL
#   SELECT merged.extension || '^^^&' || merged.root || '&ISO'
#     FROM identity_patient AS survivor JOIN identity_patient AS merged ON merged.merged_into = survivor.pk
#    WHERE survivor.root = :alias_root AND survivor.extension = :alias_extension
#      AND survivor.status != 'retired'
_ALIAS_ROOT, _ALIAS_EXTENSION = "alias_root", "alias_extension"


class _AliasesInSql:
    def select(self, patient_id: ColumnElement[str]) -> CompoundSelect:
        named = (_survivor.c.root == bindparam(_ALIAS_ROOT, type_=String),
                 _survivor.c.extension == bindparam(_ALIAS_EXTENSION, type_=String))
        retired = exists().where(*named, _survivor.c.status == RETIRED)
        cx = _merged.c.extension + "^^^&" + _merged.c.root + "&ISO"
        return union_all(
            select(patient_id.label("patient_id")).where(~retired),
            select(cx.label("patient_id")).select_from(_survivor.join(_merged, _merged.c.merged_into == _survivor.c.pk))
            .where(*named, _survivor.c.status != RETIRED))

    def values(self, patient_id: str) -> dict[str, Any]:
        identifier = parse_cx(patient_id)
        if identifier is None:
            return {_ALIAS_ROOT: None, _ALIAS_EXTENSION: None}
        return {_ALIAS_ROOT: identifier.root, _ALIAS_EXTENSION: identifier.extension}


# Which of a root's extensions are retired ids (merged into another): resolve() runs in every
# registration, where an ORM load of the ids' rows cost more than the rest of the check.
_RETIRED = Prepared(lambda dialect: select(_survivor.c.extension).where(
    _survivor.c.root == bindparam("root"), one_of(_survivor.c.extension, "extensions", dialect),
    _survivor.c.status == RETIRED))


class IdentityDirectory:
    aliases_in_sql = _AliasesInSql()

    def resolve(self, session: Session, ids: Iterable[str]) -> dict[str, str | None]:
        ids = list(dict.fromkeys(ids))
        by_root: dict[str, dict[str, str]] = {}  # root -> extension -> the id
        for cx in ids:
            if (identifier := parse_cx(cx)) is not None:
                by_root.setdefault(identifier.root, {})[identifier.extension] = cx
        with pipeline(session):  # one round trip on PostgreSQL
            known = patients.sent_known(session, ids)
            sent = [(extensions, _RETIRED.send(session, {"root": root, "extensions": list(extensions)}))
                    for root, extensions in by_root.items()]
        retired = {extensions[e] for extensions, pending in sent for e in pending.scalars()}
        known_ids = set(known.scalars()) if known is not None else set()
        return {cx: cx if cx in known_ids and cx not in retired else None for cx in ids}

    def aliases(self, session: Session, patient_id: str) -> list[str]:
        identifier = parse_cx(patient_id)
        if identifier is None:
            return [patient_id]
        rows = _ALIASES.all(session, {"root": identifier.root, "extension": identifier.extension})
        if rows and rows[0][0] == RETIRED:
            return []
        return [patient_id, *(Identifier(root, extension).cx for _, root, extension in rows if root is not None)]

    def aliases_of(self, session: Session, ids: Iterable[str]) -> dict[str, list[str]]:
        parsed = {cx: parse_cx(cx) for cx in dict.fromkeys(ids)}
        by_root: dict[str, list[str]] = {}
        for identifier in {i for i in parsed.values() if i is not None}:
            by_root.setdefault(identifier.root, []).append(identifier.extension)
        merged: dict[Identifier, list[str]] = {}
        for root, extensions in by_root.items():
            for chunk in chunked(sorted(extensions)):
                statement = (_MERGED_INTO_MANY.where(_survivor.c.root == root, _survivor.c.extension.in_(chunk)))
                for extension, merged_root, merged_extension in session.execute(statement):
                    merged.setdefault(Identifier(root, extension), []).append(
                        Identifier(merged_root, merged_extension).cx)
        retired = {i for i, row in store.get_many(session, [i for i in parsed.values() if i is not None]).items()
                   if row.status == RETIRED}
        return {cx: [] if i in retired else [cx, *merged.get(i, [])] if i is not None else [cx]
                for cx, i in parsed.items()}

    def survivor(self, session: Session, patient_id: str) -> str | None:
        identifier = parse_cx(patient_id)
        row = store.get(session, identifier) if identifier is not None else None
        if row is None or row.status != RETIRED or row.merged_into is None:
            return None
        return store.identifier(store.by_pk(session, [row.merged_into])[row.merged_into]).cx
