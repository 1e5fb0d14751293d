"""What the PIX Manager (ITI-45) and the PDQ Supplier (ITI-47) answer with access control on:
as a PIX Manager holding only the persons the requesting facility may see would.

    known_domains(session, access, roots, policy)                -> the domains it may know
    pix_answer(session, access, found, identifier, sources, policy) -> the PixAnswer it may have
    search(session, access, query, policy, offset, count)         -> the page of matches it may see

Domain knowledge is data too. "Is this assigning authority known here" is answered by the ids
fed (xds.identity.pix.known_domains): a facility that may see no id of a domain would learn,
from "unknown id" instead of "unknown domain" (ITI TF-2 3.45.4.2.3: 204 at the
patientIdentifier's root, or at its extension), that patients of that domain are here, and
from a data source or a scoping organization accepted, the same. So a domain is known to a
request when it is the affinity domain (configuration, not data) or some id of it may be seen
(PatientAccess.sees_domain). The PIX checks keep their order (the id's domain, the data
sources, the id), each asked of what the request may know.

A search decides every match (the total and the continuation count the visible ones, exactly)
but reads the demographics of the page only: the matches' ids and their persons' consent are
read together, one statement per thousand matches (xds.identity.pdq.search's `shown`).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from xds.consent.access import PatientAccess
from xds.identity import pdq, pix
from xds.identity.policy import IdentityPolicy
from xds.model.person import Identifier


def known_domains(session: Session, access: PatientAccess | None, roots: Iterable[str],
                  policy: IdentityPolicy) -> set[str]:
    """Those of `roots` that are patient identity domains for this request (all those known
    here without access control)."""
    known = pix.known_domains(session, roots, policy)
    if access is None:
        return known
    return {root for root in known if root == policy.affinity_domain or access.sees_domain(session, root)}


def pix_answer(session: Session, access: PatientAccess, found: pix.PixAnswer, identifier: Identifier,
               data_sources: Iterable[str], policy: IdentityPolicy) -> pix.PixAnswer:
    """`found` (xds.identity.pix.query's answer for `identifier`) as this request may have it.
    A person it may not see is denied (audited) even when its domain then answers: the request
    asked for that patient."""
    hidden = found.outcome in (pix.OK, pix.NOT_FOUND) and not access.visible_persons(
        session, {identifier.cx: found.person_id})
    if found.outcome == pix.UNKNOWN_DOMAIN:
        return found
    sources = list(dict.fromkeys(data_sources))
    known = known_domains(session, access, [identifier.root, *sources], policy)
    if identifier.root not in known:
        return pix.PixAnswer(pix.UNKNOWN_DOMAIN)
    unknown = [source for source in sources if source not in known]
    if unknown:
        return pix.PixAnswer(pix.UNKNOWN_DATA_SOURCE, unknown_data_sources=unknown)
    if hidden:
        return pix.PixAnswer(pix.UNKNOWN_ID)  # as an id nobody fed (see xds.identity.service)
    return found


def search(session: Session, access: PatientAccess | None, query: pdq.PdqQuery, policy: IdentityPolicy,
           offset: int, count: int) -> pdq.PdqPage:
    """A page of the matches `access` may see (all of them without access control); the
    audit notes of the search (PatientAccess.note_search)."""
    if access is None:
        return pdq.search(session, query, policy, offset, count)
    page = pdq.search(session, query, policy, offset, count, shown=access.sift)
    access.note_search([m.patient.cx for m in page.matches], [i.cx for i in query.ids])
    return page
