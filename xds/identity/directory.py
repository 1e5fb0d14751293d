"""The Document Registry's patient directory (xds.registry.patients.PatientDirectory) over the
PIX Manager's cross-references and merges.

    directory = IdentityDirectory()
    directory.resolve(session, ["P1^^^&1.2.3&ISO", ...])   # registration (ITI-42)
    directory.aliases(session, "P1^^^&1.2.3&ISO")          # stored queries (ITI-18)

* resolve: an id the registry knows (its patient list, which feeds of the affinity domain
  fill) resolves to itself; an id merged into another (retired) resolves to None, so a
  submission for it fails with XDSUnknownPatientId; so does an id nobody fed.
* aliases: the ids whose documents a query for an id answers with: the id itself first, then
  every id retired into it (ITI-44 merges, chains flattened). A retired id's aliases are itself
  alone: its documents are found under its survivor.
* survivor: the id a retired id was merged into (None for an id not retired).

All three read in the caller's session: inside the registry's write transaction, a feed
committed before is seen.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from xds.identity import store
from xds.identity.store import RETIRED
from xds.model.patient import PatientId
from xds.model.person import Identifier
from xds.store import patients
from xds.store.tables import IdentityPatientRow


def parse_cx(patient_id: str) -> Identifier | None:
    """An XDS patient id (id^^^&OID&ISO) as an Identifier; None when it is not one."""
    try:
        parsed = PatientId.parse(patient_id)
    except ValueError:
        return None
    return Identifier(parsed.authority_oid, parsed.id)


class IdentityDirectory:
    def resolve(self, session: Session, ids: Iterable[str]) -> dict[str, str | None]:
        ids = list(dict.fromkeys(ids))
        known = patients.known(session, ids)
        parsed = {cx: parse_cx(cx) for cx in ids}
        rows = store.get_many(session, [i for i in parsed.values() if i is not None])
        retired = {cx for cx, i in parsed.items() if i is not None and i in rows and rows[i].status == RETIRED}
        return {cx: cx if cx in known and cx not in retired else None for cx in ids}

    def aliases(self, session: Session, patient_id: str) -> list[str]:
        identifier = parse_cx(patient_id)
        row = store.get(session, identifier) if identifier is not None else None
        if row is None or row.status == RETIRED:
            return [patient_id]
        retired = session.scalars(select(IdentityPatientRow).where(IdentityPatientRow.merged_into == row.pk)
                                  .order_by(IdentityPatientRow.pk))
        return [patient_id, *(store.identifier(r).cx for r in retired)]

    def survivor(self, session: Session, patient_id: str) -> str | None:
        identifier = parse_cx(patient_id)
        row = store.get(session, identifier) if identifier is not None else None
        if row is None or row.status != RETIRED or row.merged_into is None:
            return None
        return store.identifier(store.by_pk(session, [row.merged_into])[row.merged_into]).cx
