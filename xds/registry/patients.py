"""The patient directory: the questions the Document Registry asks about patients.

"Is this an affinity-domain patient id a submission may name?" The registry answers
XDSUnknownPatientId for an id the directory does not accept. "Which ids does a query for this
patient answer with?" A stored query for a patient answers with the objects of the patient's
id and of every id merged into it (ITI TF-2a 3.18.4.1.2.3.9.1, Patient Identity Merge). The
answers come from whoever feeds the registry its patients: today the registry's own patient
list (`PatientList`, filled by `xds patients add`), which knows no merges; the PIX Manager, as
the registry's Patient Identity Feed, implements the same interface over its cross-references
and merges (xds.identity.directory.IdentityDirectory).

The directory is asked inside the caller's transaction, with its session: the registry's write
transaction (a feed committed before the submission is seen, and the check and the store are
one transaction), or a stored query's read transaction.

A directory whose aliases come from the database can also write `aliases` of one id as SQL
(`aliases_in_sql`): a stored query for one patient then finds them inside its own statement,
`patient_id IN (the aliases)`, instead of asking for them first: one statement, and on
PostgreSQL one round trip, fewer per query.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from sqlalchemy import ColumnElement, CompoundSelect, Select
from sqlalchemy.orm import Session

from xds.store import patients


class AliasesInSql(Protocol):
    """`PatientDirectory.aliases` of one id, written into the statement of the query that
    needs them."""

    def select(self, patient_id: ColumnElement[str]) -> Select | CompoundSelect:
        """A select of one column: the ids `aliases(patient_id)` gives (any order), for the id
        the bound parameter `patient_id` holds. Its other parameters are bound ones named as in
        `values`: one SQL text for every id, built once and run for each."""
        ...

    def values(self, patient_id: str) -> dict[str, Any]:
        """The values of the select's own parameters for `patient_id`."""
        ...


class PatientDirectory(Protocol):
    #: `aliases` of one id as SQL, for a stored query to find them within its own statement;
    #: None: the query asks `aliases` first.
    aliases_in_sql: AliasesInSql | None

    def resolve(self, session: Session, ids: Iterable[str]) -> dict[str, str | None]:
        """Each of `ids` (CX, id^^^&OID&ISO) -> the id a submission may name for it (itself),
        or None when the directory does not know it or it was merged into another (a retired
        id: submissions name its survivor)."""
        ...

    def aliases(self, session: Session, patient_id: str) -> list[str]:
        """The ids whose objects a query for `patient_id` answers with: the id itself first,
        then every id merged (retired) into it. A retired id, or one the directory does not
        know, is its own only alias."""
        ...

    def aliases_of(self, session: Session, ids: Iterable[str]) -> dict[str, list[str]]:
        """`aliases` of each of `ids`, looked up together: a Multi-Patient Stored Query may
        name tens of thousands of patients, each of which one by one would cost statements."""
        ...


class PatientList:
    """The registry's own list of known patient ids (the `patient` table): every id it holds
    is current; it knows no merges."""

    #: An id is its own only alias: aliases() asks no database.
    aliases_in_sql = None

    def resolve(self, session: Session, ids: Iterable[str]) -> dict[str, str | None]:
        ids = list(ids)
        known = patients.known(session, ids)
        return {pid: pid if pid in known else None for pid in ids}

    def aliases(self, session: Session, patient_id: str) -> list[str]:
        return [patient_id]

    def aliases_of(self, session: Session, ids: Iterable[str]) -> dict[str, list[str]]:
        return {pid: [pid] for pid in ids}
