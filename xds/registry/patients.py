"""The patient directory: the one question the Document Registry asks about patients.

"Is this an affinity-domain patient id, and what is its current id after merges?" The registry
answers XDSUnknownPatientId for an id the directory does not know. The answer comes from whoever feeds the registry its patients: today
the registry's own patient list (`PatientList`, filled by `xds patients add`); the PIX Manager,
as the registry's Patient Identity Feed, implements the same interface over its
cross-references and merges.

The directory is asked inside the registry's write transaction, with its session, so that a
feed committed before the submission is seen and the check and the store are one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from sqlalchemy.orm import Session

from xds.store import patients


class PatientDirectory(Protocol):
    def resolve(self, session: Session, ids: Iterable[str]) -> dict[str, str | None]:
        """Each of `ids` (CX, id^^^&OID&ISO) -> its current affinity-domain id (itself unless
        it was merged into another), or None when the directory does not know it."""
        ...


class PatientList:
    """The registry's own list of known patient ids (the `patient` table): every id it holds
    is current; it knows no merges."""

    def resolve(self, session: Session, ids: Iterable[str]) -> dict[str, str | None]:
        ids = list(ids)
        known = patients.known(session, ids)
        return {pid: pid if pid in known else None for pid in ids}
