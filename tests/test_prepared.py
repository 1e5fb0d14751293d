"""Statements run on the driver's cursor (xds.store.prepared): what they answer must be what
SQLAlchemy's own execution of them answers, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, select

from tests import submissions as s
from tests.queries import register
from xds.store import db, prepared
from xds.store.tables import DocumentEntryRow as D

APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"


def test_an_expanded_statement_keeps_its_lists_and_takes_its_named_values(registry, engine):
    """The IN list is fixed at the first run, the named binds (a value, and a list bound as one
    parameter) vary; the rows come back converted as the column types say (the XML as text)."""
    first, second = (register(registry, s.document("d", s.new_oid(), patient), patient=patient)["d"]
                     for patient in (s.PATIENT, s.OTHER_PATIENT))
    statement = (select(D.entry_uuid, D.patient_id, D.xml)
                 .where(D.status.in_([APPROVED, "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"]),
                        D.patient_id == bindparam("patient"),
                        prepared.one_of(D.entry_uuid, "uuids", engine.dialect.name))
                 .order_by(D.entry_uuid))
    expanded = None
    with db.make_sessionmaker(engine)() as session:
        for patient, uuids, expected in ((s.PATIENT, [first, second], [first]),
                                         (s.OTHER_PATIENT, [first, second], [second]),
                                         (s.OTHER_PATIENT, [first], [])):
            values = {"patient": patient, "uuids": uuids}
            expanded = expanded or prepared.Expanded(statement, engine.dialect, values)
            with expanded.rows(session, values, batch=1) as rows:
                found = [dict(zip(expanded.keys, row)) for row in rows]
            assert [row["entry_uuid"] for row in found] == expected
            assert all(row["patient_id"] == patient and row["xml"].startswith("<") for row in found)
            by_sqlalchemy = session.execute(statement.params(patient=patient), {"uuids": uuids}).all()
            assert [row.entry_uuid for row in by_sqlalchemy] == expected
    assert "IN (" in expanded.sql and expanded.keys == ["entry_uuid", "patient_id", "xml"]


def test_statements_sent_together_are_read_after(registry, engine):
    """`send` inside `pipeline`: on PostgreSQL one round trip for all, each read afterwards."""
    uuid = register(registry, s.document("d", s.new_oid()))["d"]
    by_uuid = prepared.Prepared(lambda dialect: select(D.patient_id).where(D.entry_uuid == bindparam("uuid")))
    with db.make_sessionmaker(engine)() as session:
        with prepared.pipeline(session):
            sent = [by_uuid.send(session, {"uuid": value}) for value in (uuid, "urn:uuid:nothing", uuid)]
        assert [pending.scalars() for pending in sent] == [[s.PATIENT], [], [s.PATIENT]]


def test_a_bind_the_driver_spells_otherwise_cannot_vary(engine):
    statement = select(D.entry_uuid).where(D.patient_id == bindparam("a name"))
    with pytest.raises(ValueError, match="cannot vary"):
        prepared.Expanded(statement, engine.dialect, {"a name": "x"})
