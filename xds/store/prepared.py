"""Statements of the hot paths, compiled once per database and run on the driver's cursor.

A registration runs about ten statements and a stored query two or three; through the ORM
session each costs 170-420 us of Python (building the expression, its cache key, the execution
context, the result's rows) where SQLite's own work is 5-20 us (measured: one uniqueId lookup
415 us from a freshly built select, 173 us from a prebuilt one, 5 us on the driver's cursor).
A `Prepared` statement is written once as a SQLAlchemy Core expression (so the tables'
definitions stay the one place that names columns), compiled once per dialect, and then run on
the DBAPI cursor of the session's own connection: in the session's transaction, with the
column types' bind and result conversions applied (the compressed XML, booleans), and with no
per-call work beyond them. psycopg prepares a statement on the server after a few executions,
so on PostgreSQL it is a server-side prepared statement too.

A list of values is ONE bound parameter (`one_of`): a PostgreSQL array, on SQLite a JSON array
read by json_each, so a statement's text never depends on a list's length.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import exc as exc_
from sqlalchemy import ColumnElement, String, TypeDecorator, any_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.selectable import Select
from sqlalchemy.types import TypeEngine

#: A bind's value when none was written into the statement: the caller must give it.
_REQUIRED = object()


class _ValueList(TypeDecorator):
    """A list bound as one parameter: an array of `item` on PostgreSQL, JSON text on SQLite."""

    impl = String
    cache_ok = True

    def __init__(self, item: type[TypeEngine] = String):
        super().__init__()
        self.item = item

    def load_dialect_impl(self, dialect: Dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(ARRAY(self.item))
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: Iterable[Any] | None, dialect: Dialect):
        values = list(value or ())
        return values if dialect.name == "postgresql" else json.dumps(values)


def one_of(column: ColumnElement, name: str, dialect: str, item: type[TypeEngine] = String) -> ColumnElement[bool]:
    """`column` is one of the values of the list parameter `name` (a list, tuple or set of
    `item`s: text unless said)."""
    listed = bindparam(name, type_=_ValueList(item))
    if dialect == "postgresql":
        return column == any_(listed)
    return column.in_(select(func.json_each(listed).table_valued("value").c.value))


class _Compiled:
    """One statement compiled for one dialect: its SQL text, how to turn a dict of values into
    the driver's parameters, and how to convert a result row's values."""

    def __init__(self, statement: Executable, dialect: Dialect):
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.positional = compiled.positiontup is not None
        # The names the SQL text uses: in order for a positional driver (SQLite's ?), else each once.
        names = (list(compiled.positiontup) if self.positional
                 else list(dict.fromkeys(compiled.bind_names.values())))
        # (name in the SQL, key a caller gives it by, value it has when not given or _REQUIRED,
        # conversion): a bind written with a value (a literal in the expression) keeps it.
        self.binds = [(name, bind.key, _REQUIRED if bind.required else bind.effective_value,
                       bind.type.dialect_impl(dialect).bind_processor(dialect))
                      for name, bind in ((name, compiled.binds[name]) for name in names)]
        self.results = [column.type.dialect_impl(dialect).result_processor(dialect, None)
                        for column in getattr(statement, "exported_columns", ())]
        self.converts = any(self.results)

    def parameters(self, values: dict[str, Any]) -> Sequence[Any] | dict[str, Any]:
        converted = []
        for _name, key, fixed, processor in self.binds:
            value = values[key] if key in values or fixed is _REQUIRED else fixed
            converted.append(processor(value) if processor is not None else value)
        if self.positional:
            return converted
        return {name: value for (name, *_), value in zip(self.binds, converted)}

    def row(self, raw: Sequence[Any]) -> tuple:
        if not self.converts:
            return tuple(raw)
        return tuple(value if convert is None or value is None else convert(value)
                     for convert, value in zip(self.results, raw))


@contextmanager
def _driver_errors(connection: Connection, sql: str) -> Iterator[Any]:
    """The driver's connection; its errors raised as SQLAlchemy's (IntegrityError,
    OperationalError...: what callers catch), and a lost connection not reused."""
    driver = connection.connection.driver_connection
    error = connection.dialect.loaded_dbapi.Error
    try:
        yield driver
    except error as exc:
        if connection.dialect.is_disconnect(exc, driver, None):
            connection.invalidate(exc)
        raise exc_.DBAPIError.instance(sql, None, exc, error, dialect=connection.dialect) from exc


@contextmanager
def pipeline(session: Session) -> Iterator[None]:
    """On PostgreSQL, the statements run inside are sent without waiting for each one's answer
    (psycopg's pipeline mode): one round trip for all of them, where each costs one alone. Their
    errors are raised at the latest when the block ends. Read what they return (`Prepared.send`)
    after the block: a read inside it waits for its own round trip. Elsewhere, nothing changes."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        yield
        return
    with _driver_errors(connection, "(pipeline)") as driver, driver.pipeline():
        yield


class Prepared:
    """A statement built by `build(dialect name)` on first use for each dialect.

    The builder returns a Core select, insert, update or delete whose parameters a caller gives
    by name (`bindparam("name")`); lists only through `one_of`, never an expanding IN.
    """

    def __init__(self, build: Callable[[str], Executable]):
        self._build = build
        self._compiled: dict[str, _Compiled] = {}
        self._lock = threading.Lock()

    def _for(self, session: Session) -> tuple[_Compiled, Any]:
        session.flush()  # objects added to the session are written first, as its autoflush does
        connection = session.connection()
        compiled = self._compiled.get(connection.dialect.name)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.setdefault(
                    connection.dialect.name, _Compiled(self._build(connection.dialect.name), connection.dialect))
        return compiled, connection

    @contextmanager
    def _cursor(self, session: Session) -> Iterator[tuple[_Compiled, Any]]:
        compiled, connection = self._for(session)
        with _driver_errors(connection, compiled.sql) as driver:
            cursor = driver.cursor()
            try:
                yield compiled, cursor
            finally:
                cursor.close()

    def send(self, session: Session, values: dict[str, Any] | None = None) -> Pending:
        """Execute now, read the rows later (`Pending.all`): statements sent one after another
        inside `pipeline(session)` share one round trip on PostgreSQL."""
        compiled, connection = self._for(session)
        return _send(connection, compiled, compiled.parameters(values or {}))

    def all(self, session: Session, values: dict[str, Any] | None = None) -> list[tuple]:
        return self.send(session, values).all()

    def scalars(self, session: Session, values: dict[str, Any] | None = None) -> list[Any]:
        return [row[0] for row in self.all(session, values)]

    def run(self, session: Session, values: dict[str, Any] | list[dict[str, Any]] | None = None) -> int:
        """Execute (a list of value dicts: once per dict, as one executemany); the row count."""
        if isinstance(values, list) and not values:
            return 0
        with self._cursor(session) as (compiled, cursor):
            if isinstance(values, list):
                cursor.executemany(compiled.sql, [compiled.parameters(v) for v in values])
            else:
                cursor.execute(compiled.sql, compiled.parameters(values or {}))
            return cursor.rowcount


class Expanded:
    """A statement built elsewhere (xds.registry.find keeps one per request shape), run on the
    driver's cursor as a `Prepared` one is. Its SQL text and parameters are made once, from its
    first run's values: the binds named in them vary from run to run, every other value is fixed
    as it was then, the lists of `IN (...)` expanded (`IN (?, ?)`) included. Through the
    connection's execute, SQLAlchemy expanded those lists and made the execution context anew
    at every run: 0.1-0.3 ms of client CPU per statement (a third of FindDocuments' CPU)."""

    def __init__(self, statement: Select, dialect: Dialect, values: dict[str, Any]):
        compiled = statement.compile(dialect=dialect)
        state = compiled.construct_expanded_state(values)
        hidden = [name for name in values if name in compiled.binds and name not in state.parameters]
        if hidden:  # a name the driver's parameters spell otherwise: it would stay as first given
            raise ValueError(f"binds {hidden} cannot vary in an Expanded statement")
        self.sql = state.statement
        self._order = state.positiontup  # a positional driver's (SQLite's ?), else None
        processors = {name: bind.type.dialect_impl(dialect).bind_processor(dialect)
                      for name, bind in compiled.binds.items()}
        for name, expanded in (state.parameter_expansion or {}).items():  # IN (?, ?): each as its list
            processors.update(dict.fromkeys(expanded, processors.get(name)))
        processors = {name: processor for name, processor in processors.items() if processor is not None}
        self._varying = [(name, processors.get(name)) for name in values if name in state.parameters]
        varying = {name for name, _ in self._varying}
        self._fixed = {name: processors[name](value) if name in processors else value
                       for name, value in state.parameters.items() if name not in varying}
        self.keys = list(statement.selected_columns.keys())
        self._results = [column.type.dialect_impl(dialect).result_processor(dialect, None)
                         for column in statement.selected_columns]

    def _parameters(self, values: dict[str, Any]) -> Sequence[Any] | dict[str, Any]:
        parameters = dict(self._fixed)
        for name, processor in self._varying:
            parameters[name] = processor(values[name]) if processor is not None else values[name]
        return tuple(parameters[name] for name in self._order) if self._order is not None else parameters

    def send(self, session: Session, values: dict[str, Any]) -> Pending:
        """Execute now, read the rows later (see `Prepared.send`)."""
        return _send(session.connection(), self, self._parameters(values))

    def row(self, raw: Sequence[Any]) -> tuple:
        return tuple(value if convert is None or value is None else convert(value)
                     for convert, value in zip(self._results, raw))

    @contextmanager
    def rows(self, session: Session, values: dict[str, Any], batch: int = 100) -> Iterator[Iterator[tuple]]:
        """The rows of a run, read `batch` at a time as they are iterated."""
        connection = session.connection()
        with _driver_errors(connection, self.sql) as driver:
            cursor = driver.cursor()
            try:
                cursor.execute(self.sql, self._parameters(values))
                yield self._converted(cursor, batch)
            finally:
                cursor.close()

    def _converted(self, cursor: Any, batch: int) -> Iterator[tuple]:
        while raws := cursor.fetchmany(batch):
            for raw in raws:
                yield self.row(raw)


def _send(connection: Connection, statement: _Compiled | Expanded, parameters: Any) -> Pending:
    with _driver_errors(connection, statement.sql) as driver:
        cursor = driver.cursor()
        try:
            cursor.execute(statement.sql, parameters)
            # SQLite steps a SELECT as it is read: read it whole before the next statement.
            rows = None if connection.dialect.name == "postgresql" else cursor.fetchall()
        except BaseException:
            cursor.close()
            raise
    if rows is not None:
        cursor.close()
    return Pending(statement, connection, cursor, rows)


class Pending:
    """A statement sent (`Prepared.send`, `Expanded.send`), its rows not read yet."""

    def __init__(self, compiled: _Compiled | Expanded, connection: Connection, cursor: Any, rows: list | None):
        self._compiled, self._connection, self._cursor, self._rows = compiled, connection, cursor, rows

    def all(self) -> list[tuple]:
        if self._rows is None:
            with _driver_errors(self._connection, self._compiled.sql):
                try:
                    self._rows = self._cursor.fetchall()
                finally:
                    self._cursor.close()
        return [self._compiled.row(raw) for raw in self._rows]

    def scalars(self) -> list[Any]:
        return [row[0] for row in self.all()]
