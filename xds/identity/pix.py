"""PIX Query (ITI-45, ITI TF-2b 3.45.4.2.3): the ids of a person, filtered by data sources.

    query(session, identifier, data_sources, policy) -> PixAnswer

The outcomes, and what the service answers for each (acknowledgement / queryResponseCode):

| outcome | when | answer |
| --- | --- | --- |
| OK | the id is known and its person has ids in the requested domains (all, when none requested) | AA / OK, with `ids` |
| NF | the id is known, its person has no id in the requested domains | AA / NF |
| unknown-domain | nobody ever fed an id of the queried id's assigning authority | AE / AE, 204 at the patientIdentifier's root |
| unknown-id | the assigning authority is known, the id is not | AE / AE, 204 at the patientIdentifier |
| unknown-data-source | a requested data source is an assigning authority nobody fed an id of (`unknown_data_sources`) | AE / AE, 204 at each such dataSource |

A retired (merged) id answers as its survivor: `current` is the surviving id, and retired ids
are never among the `ids`. The queried id itself (or its survivor) is among `ids` when its
domain is requested: the service leaves it out of the answer if it wishes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from xds.identity import store
from xds.identity.policy import IdentityPolicy
from xds.identity.store import RETIRED
from xds.model.person import Identifier

OK, NOT_FOUND = "OK", "NF"
UNKNOWN_DOMAIN, UNKNOWN_ID, UNKNOWN_DATA_SOURCE = "unknown-domain", "unknown-id", "unknown-data-source"


@dataclass
class PixAnswer:
    outcome: str
    #: The person's active ids in the requested domains.
    ids: list[Identifier] = field(default_factory=list)
    #: The queried id, or its survivor when it was merged.
    current: Identifier | None = None
    unknown_data_sources: list[str] = field(default_factory=list)
    person_id: int | None = None


def known_domains(session: Session, roots: Iterable[str], policy: IdentityPolicy) -> set[str]:
    """Those of `roots` that are patient identity domains here: the affinity domain, and every
    assigning authority some fed id has."""
    roots = set(roots)
    known = {r for r in roots if r and r == policy.affinity_domain}
    return known | store.known_roots(session, roots - known)


def query(session: Session, identifier: Identifier, data_sources: Iterable[str], policy: IdentityPolicy) -> PixAnswer:
    sources = list(dict.fromkeys(data_sources))
    if identifier.root not in known_domains(session, [identifier.root], policy):
        return PixAnswer(UNKNOWN_DOMAIN)
    unknown = [s for s in sources if s not in known_domains(session, sources, policy)]
    if unknown:
        return PixAnswer(UNKNOWN_DATA_SOURCE, unknown_data_sources=unknown)
    row = store.get(session, identifier)
    if row is None:
        return PixAnswer(UNKNOWN_ID)
    if row.status == RETIRED and row.merged_into is not None:
        row = store.by_pk(session, [row.merged_into])[row.merged_into]
    ids = [store.identifier(m) for m in store.members(session, row.person_id)]
    if sources:
        wanted = set(sources)
        ids = [i for i in ids if i.root in wanted]
    return PixAnswer(OK if ids else NOT_FOUND, ids, store.identifier(row), person_id=row.person_id)
