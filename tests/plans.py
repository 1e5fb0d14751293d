"""The statements a piece of code runs, and SQLite's plans for them: tests that keep a query's
shape (which index it starts from, whether two ranges are merged) without loading a million
rows. SQLite plans without statistics here (the library runs no ANALYZE), so its plan over a
few rows is its plan over 1,000,000 patients (bench/pdq.py --explain shows the same plans)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import Engine, event

from xds.store.prepared import Expanded, Prepared


@contextlib.contextmanager
def statements(engine: Engine, containing: str = "", every: bool = False) -> Iterator[list[tuple[str, object]]]:
    """Collects the SELECT statements (`every`: all statements) with their parameters run on
    `engine` meanwhile whose text holds `containing`: through SQLAlchemy, or on the driver's
    cursor, unseen by the engine's events (`Prepared` statements, and the statements stored
    queries keep per shape, `Expanded`)."""
    seen: list[tuple[str, object]] = []

    def note(statement: str, parameters: object) -> None:
        selects = statement.lstrip().upper().startswith(("SELECT", "WITH", "("))
        if (every or selects) and containing in statement:
            seen.append((statement, parameters))

    def before(conn, cursor, statement, parameters, context, executemany):
        note(statement, parameters)

    def ours(connection) -> bool:  # the engine, or a copy with other options (a reader's)
        return connection.engine.pool is engine.pool

    send_prepared, rows_expanded = Prepared.send, Expanded.rows  # what Prepared.all runs too

    def prepared(self, session, values=None):
        compiled, connection = self._for(session)
        if ours(connection):
            note(compiled.sql, compiled.parameters(values or {}))
        return send_prepared(self, session, values)

    def expanded(self, session, values, batch=100):
        if ours(session.connection()):
            note(self.sql, self._parameters(values))
        return rows_expanded(self, session, values, batch)

    event.listen(engine, "before_cursor_execute", before)
    Prepared.send, Expanded.rows = prepared, expanded  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        Prepared.send, Expanded.rows = send_prepared, rows_expanded  # type: ignore[method-assign]
        event.remove(engine, "before_cursor_execute", before)


def sqlite_plan(engine: Engine, statement: str, parameters: object) -> list[str]:
    """EXPLAIN QUERY PLAN of `statement`, one line per step, in order."""
    with engine.connect() as connection:
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            return [row[3] for row in cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)]
        finally:
            cursor.close()
