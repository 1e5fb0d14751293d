"""The patient ids the registry knows (XDSUnknownPatientId is answered for the others).

Ids arrive from a Patient Identity Feed or from the CLI in batches of up to some hundred
thousand, already checked with PatientId.parse; they are stored as the CX text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import Insert, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from xds.store.db import chunked
from xds.store.prepared import Pending, Prepared, one_of
from xds.store.tables import PatientRow

_patient: Table = PatientRow.__table__  # type: ignore[assignment]


def add(session: Session, ids: Iterable[str]) -> int:
    """Add patient ids; return how many were new. Known ids are skipped, not an error.

    ON CONFLICT DO NOTHING makes this one statement per thousand ids and safe against a
    concurrent feed adding the same ids (no check-then-insert race).
    """
    insert_ = _dialect_insert(session)
    added = 0
    for chunk in chunked(list(dict.fromkeys(ids))):
        statement = (
            insert_(_patient)
            .values([{"patient_id": patient_id} for patient_id in chunk])
            .on_conflict_do_nothing(index_elements=["patient_id"])
            # Both databases count only the rows actually inserted; SQLAlchemy keeps an
            # INSERT's count only when asked to.
            .execution_options(preserve_rowcount=True)
        )
        added += session.execute(statement).rowcount
    return added


def remove(session: Session, ids: Iterable[str]) -> int:
    """Forget patient ids; return how many were known. Their documents stay registered."""
    removed = 0
    for chunk in chunked(list(dict.fromkeys(ids))):
        removed += session.execute(delete(_patient).where(_patient.c.patient_id.in_(chunk))).rowcount
    return removed


def list_all(session: Session) -> list[str]:
    """Every known patient id, sorted."""
    return list(session.scalars(select(_patient.c.patient_id).order_by(_patient.c.patient_id)))


def known(session: Session, ids: Iterable[str]) -> set[str]:
    """The ids among `ids` the registry knows."""
    sent = sent_known(session, ids)
    return set(sent.scalars()) if sent is not None else set()


def sent_known(session: Session, ids: Iterable[str]) -> Pending | None:
    """`known`, sent (`Prepared.send`: to be read with other statements in one round trip);
    None when there is nothing to ask."""
    wanted = list(dict.fromkeys(ids))
    return _KNOWN.send(session, {"ids": wanted}) if wanted else None


_KNOWN = Prepared(lambda dialect: select(_patient.c.patient_id).where(one_of(_patient.c.patient_id, "ids", dialect)))


def _dialect_insert(session: Session) -> Callable[[Table], Insert]:
    # ON CONFLICT is not standard SQL; SQLite and PostgreSQL spell it the same way, but
    # SQLAlchemy offers it only through each dialect's own insert().
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"patients.add does not support the {name} database")
