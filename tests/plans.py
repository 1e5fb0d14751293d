"""The statements a piece of code runs, and SQLite's plans for them: tests that keep a query's
shape (which index it starts from, whether two ranges are merged) without loading a million
rows. SQLite plans without statistics here (the library runs no ANALYZE), so its plan over a
few rows is its plan over 1,000,000 patients (bench/pdq.py --explain shows the same plans)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import Engine, event

from xds.store.prepared import Prepared


@contextlib.contextmanager
def statements(engine: Engine) -> Iterator[list[tuple[str, object]]]:
    """Collects the SELECT statements (with their parameters) run on `engine` meanwhile,
    through SQLAlchemy or as `Prepared` statements (which run on the driver's cursor, unseen
    by the engine's events)."""
    seen: list[tuple[str, object]] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("SELECT", "WITH", "(")):
            seen.append((statement, parameters))

    send_prepared = Prepared.send  # what Prepared.all runs too

    def prepared(self, session, values=None):
        compiled, connection = self._for(session)
        if connection.engine.pool is engine.pool:  # the engine, or a copy with other options (a reader's)
            seen.append((compiled.sql, compiled.parameters(values or {})))
        return send_prepared(self, session, values)

    event.listen(engine, "before_cursor_execute", before)
    Prepared.send = prepared  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        Prepared.send = send_prepared  # type: ignore[method-assign]
        event.remove(engine, "before_cursor_execute", before)


def sqlite_plan(engine: Engine, statement: str, parameters: object) -> list[str]:
    """EXPLAIN QUERY PLAN of `statement`, one line per step, in order."""
    with engine.connect() as connection:
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            return [row[3] for row in cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)]
        finally:
            cursor.close()
