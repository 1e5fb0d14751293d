"""Registry Stored Query (ITI-18) under hostile and careless input (issue 15), on SQLite and
PostgreSQL: long value lists cost one lookup per entry and one bound parameter per list, lists
beyond what a database takes in one statement answer correctly or are refused before any SQL
runs, a failing statement logs no megabytes, and a LeafClass answer is bounded in bytes as well
as in objects - refused before its XML is read."""

from __future__ import annotations

import contextlib
import logging

import pytest
from sqlalchemy import func, select

from tests import plans
from tests import queries as q
from tests import submissions as s
from tests.queries import find_documents, quote_list, register
from xds.config import Settings
from xds.dispatch import Dispatcher
from xds.registry import find, service
from xds.store import prepared
from xds.registry.query import RegistryStoredQuery
from xds.registry.find import INLINE_VALUES, TABLES
from xds.registry.query_params import QueryLimits
from xds.rules import RULES
from xds.soap import SoapRequest
from xds.store.tables import DocumentEntryRow
from xds.transactions import ITI_18

CLASS = ("C1", "1.2.999.1", "class 1")


@pytest.fixture
def stored(registry):
    return service.stored_query_for(registry)


@pytest.fixture
def statements(engine):
    """The SELECT statements run on `engine` (text, parameters) while the test runs."""
    with plans.statements(engine) as seen:
        yield seen


def class_codes(n: int) -> str:
    """C1 (the class of the entries registered) and n - 1 codes nobody has."""
    return quote_list([s.key(CLASS)] + [f"X{i}^^^1.2.999.1" for i in range(n - 1)])


def parameter_count(parameters) -> int:
    return len(parameters) if isinstance(parameters, (dict, list, tuple)) else 0


# --- a long list of codes: one lookup per entry, one bound parameter -------------------------------


def test_a_long_code_list_is_one_bound_parameter(registry, stored, statements):
    r = register(registry, s.document("a", s.new_oid(), class_code=CLASS), s.document("b", s.new_oid()))
    shapes = []
    for n in (1, INLINE_VALUES, INLINE_VALUES + 1, 1000):
        statements.clear()
        assert find_documents(stored, ("$XDSDocumentEntryClassCode", class_codes(n))).ids == [r["a"]]
        (statement, parameters), = statements
        shapes.append((statement, parameter_count(parameters)))
    # Short lists are written inline; past INLINE_VALUES the text and the parameters stay the same.
    assert shapes[1][1] == shapes[0][1] + INLINE_VALUES - 1
    assert shapes[2] == shapes[3] and shapes[3][1] < 10
    assert all(len(text) < 2000 for text, _ in shapes)


def test_each_entrys_codes_are_looked_up_in_a_long_list(registry, stored, statements, engine):
    """The plan that makes the cost one probe per entry, not entries x list: object_code is
    searched by the entry, and the list is a LIST SUBQUERY built once (SQLite) or a hashed
    filter of a per-entry subplan (PostgreSQL; as EXISTS, its planner would hash every entry
    holding one of the codes instead, a scan that grows with the registry)."""
    register(registry, s.document("a", s.new_oid(), class_code=CLASS))
    statements.clear()
    find_documents(stored, ("$XDSDocumentEntryClassCode", class_codes(100)))
    (statement, parameters), = statements
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as connection:
        plan = [row[-1] for row in connection.exec_driver_sql(explain + statement, parameters)]
    if engine.dialect.name == "sqlite":
        assert any("object_code" in step and "(object_id=?)" in step for step in plan), plan
        assert not any("code_id=?" in step for step in plan), plan
        assert "LIST SUBQUERY" in " ".join(plan)
    else:
        assert any("SubPlan" in step for step in plan) and not any("Join" in step for step in plan), plan


def test_and_or_slots_each_hold_a_long_list(registry, stored):
    a, b = ("A", "1.2.3", "a"), ("B", "1.2.3", "b")
    r = register(registry, s.document("ab", s.new_oid(), events=(a, b)), s.document("a", s.new_oid(), events=(a,)))
    other = [f"X{i}^^^1.2.3" for i in range(500)]
    slots = [("$XDSDocumentEntryEventCodeList", quote_list([s.key(a), *other])),
             ("$XDSDocumentEntryEventCodeList", quote_list([*other, s.key(b)]))]
    assert find_documents(stored, *slots).ids == [r["ab"]]


# --- more values than a database takes in one statement ---------------------------------------------


def many_ids(real: list[str], n: int) -> str:
    return quote_list(real + [f"urn:uuid:00000000-0000-4000-8000-{i:012d}" for i in range(n - len(real))])


def test_more_ids_than_a_statement_may_bind_answer_correctly(registry, stored, statements):
    """70,000 entryUUIDs: past PostgreSQL's 65,535 and SQLite's 32,766 bound parameters, had
    each value its own; with the limit raised they are answered, in statements of a few
    hundred bytes."""
    r = register(registry, s.document("a", s.new_oid()), s.document("b", s.new_oid()))
    generous = RegistryStoredQuery(stored.sessions, limits=QueryLimits(100000, 200000))
    for return_type in ("ObjectRef", "LeafClass"):
        statements.clear()
        answer = q.ask(generous, "GetDocuments", ("$XDSDocumentEntryEntryUUID", many_ids([r["a"]], 70000)),
                       return_type=return_type)
        assert answer.status == "Success" and answer.ids == [r["a"]]
        assert statements and all(len(text) < 2000 and parameter_count(parameters) < 10
                                   for text, parameters in statements)
    answer = q.ask(generous, "GetAssociations", ("$uuid", many_ids([r["a"]], 70000)))
    assert answer.status == "Success" and len(answer.ids) == 1  # the SubmissionSet's HasMember of a


def test_too_many_ids_are_refused_before_any_sql_runs(registry, stored, statements):
    answer = q.ask(stored, "GetDocuments", ("$XDSDocumentEntryEntryUUID", many_ids([], 70000)))
    assert answer.status == "Failure" and answer.codes == ["XDSStoredQueryParamNumber"]
    assert answer.errors[0].location == "$XDSDocumentEntryEntryUUID"
    assert "more than 10000 values" in answer.errors[0].context
    assert answer.errors[0].context == RULES["query.too-many-values"].error(
        param="$XDSDocumentEntryEntryUUID", limit=10000).context
    assert statements == []


def test_a_failing_statement_logs_no_megabytes(registry, stored, engine, caplog):
    """A statement that fails is logged with its SQL: a few kilobytes, never the values one by one."""
    register(registry, s.document("a", s.new_oid(), class_code=CLASS))
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE object_code")
    handler = Dispatcher({"DocumentRegistry": service.RegistryService(registry, stored)}).handler(ITI_18)
    body = q.request("FindDocuments", ("$XDSDocumentEntryPatientId", q.quote(s.PATIENT)), q.APPROVED_DOCUMENTS,
                     ("$XDSDocumentEntryClassCode", class_codes(10000)))
    with caplog.at_level(logging.ERROR):
        response = handler(SoapRequest(action=ITI_18.action, message_id="urn:uuid:2", header=None, body=body))
    assert q.read(response.body).codes == ["XDSRegistryError"]
    logged = "\n".join(record.getMessage() + (caplog.handler.format(record) if record.exc_info else "")
                       for record in caplog.records)
    assert "object_code" in logged  # the failure itself is logged...
    assert len(logged) < 20000  # ...in kilobytes: 10,000 codes are some 200 KB of values


# --- the bytes of a LeafClass answer --------------------------------------------------------------------


def stored_bytes(stored) -> int:
    with stored.sessions() as session:
        return sum(len(xml.encode()) for xml in session.scalars(select(DocumentEntryRow.xml)))


def test_a_leaf_class_answer_is_bounded_in_bytes(registry, stored, statements):
    r = register(registry, s.document("a", s.new_oid()), s.document("b", s.new_oid()))
    size = stored_bytes(stored)
    exact = RegistryStoredQuery(stored.sessions, max_leaf_class_bytes=size)
    assert find_documents(exact, return_type="LeafClass").kind("DocumentEntry") == {r["a"], r["b"]}

    statements.clear()
    smaller = RegistryStoredQuery(stored.sessions, max_leaf_class_bytes=size - 1)
    answer = find_documents(smaller, return_type="LeafClass")
    assert len(statements) == 1  # checked within the one statement that reads the answer
    assert answer.status == "Failure" and answer.codes == ["XDSTooManyResults"] and answer.ids == []
    assert answer.errors[0].context == RULES["query.answer-too-large"].error(limit=size - 1).context
    assert f"more than {size - 1} bytes" in answer.errors[0].context
    assert "max_leaf_class_bytes" in answer.errors[0].context
    # ObjectRef answers are not limited.
    assert len(find_documents(smaller).ids) == 2


#: GetAll's parameters for tests.submissions' patient, everything approved.
GET_ALL = (("$patientId", q.quote(s.PATIENT)),
           *[(name, quote_list([q.APPROVED])) for name in ("$XDSDocumentEntryStatus", "$XDSSubmissionSetStatus",
                                                             "$XDSFolderStatus")])


def all_stored_bytes(stored) -> int:
    """The bytes of every object's stored XML, of every kind."""
    with stored.sessions() as session:
        return sum(len(xml.encode()) for table in TABLES.values() for xml in session.scalars(select(table.xml)))


def test_the_bytes_limit_counts_every_kind_of_the_answer(registry, stored):
    """GetAll: SubmissionSet, DocumentEntries, Folders, Associations, all in one budget."""
    register(registry, s.document("a", s.new_oid()))
    total = all_stored_bytes(stored)
    assert q.ask(RegistryStoredQuery(stored.sessions, max_leaf_class_bytes=total), "GetAll", *GET_ALL,
                 return_type="LeafClass").counts() == {"SubmissionSet": 1, "DocumentEntry": 1, "Association": 1}
    assert q.ask(RegistryStoredQuery(stored.sessions, max_leaf_class_bytes=total - 1), "GetAll", *GET_ALL,
                 return_type="LeafClass").codes == ["XDSTooManyResults"]


def test_postgresql_reads_the_kinds_together_and_no_more_xml_than_the_limit(registry, stored, engine, monkeypatch):
    """GetAll's four statements go out together, each measured against a share of the limit;
    the limit is judged on their total, a kind past its share is read again, and the XML the
    database sent never holds more bytes than the limit, answered or refused."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's way; SQLite streams")
    register(registry, s.document("a", s.new_oid()), s.document("b", s.new_oid()))
    total = all_stored_bytes(stored)
    received = []
    row = prepared.Expanded.row

    def spy(self, raw):  # the XML of every row the database sent
        converted = row(self, raw)
        if "xml" in self.keys and converted[self.keys.index("xml")] is not None:
            received.append(len(converted[self.keys.index("xml")].encode()))
        return converted

    monkeypatch.setattr(prepared.Expanded, "row", spy)
    read_again = []
    measured = find._leaf_class_measured
    monkeypatch.setattr(find, "_leaf_class_measured", lambda *args: read_again.append(args[1]) or measured(*args))
    for limit in (total, total - 1, total // 2, 1):
        received.clear()
        answer = q.ask(RegistryStoredQuery(stored.sessions, max_leaf_class_bytes=limit), "GetAll", *GET_ALL,
                       return_type="LeafClass")
        if limit == total:
            assert answer.counts() == {"SubmissionSet": 1, "DocumentEntry": 2, "Association": 2}
            assert sum(received) == total
            assert len(read_again) == 1  # the DocumentEntries: past their quarter of the limit
        else:
            assert answer.codes == ["XDSTooManyResults"]
            assert sum(received) <= limit


def test_postgresql_sends_no_xml_past_a_limit(registry, stored, engine, monkeypatch):
    """psycopg takes a whole result before the first row is seen: the statement itself holds
    the XML back when the objects found pass a limit (SQLite hands rows over one by one, and
    reading stops at the first past the limit)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's way; SQLite streams")
    register(registry, *[s.document(f"d{i}", s.new_oid()) for i in range(3)])
    received = []
    rows_of = find._rows

    @contextlib.contextmanager
    def spy(*args, **kwargs):  # every row the database sent, as the stored query reads them
        with rows_of(*args, **kwargs) as (keys, rows):
            yield keys, (received.append(dict(zip(keys, row))) or row for row in rows)

    monkeypatch.setattr(find, "_rows", spy)
    for limited, rows in ((RegistryStoredQuery(stored.sessions, max_leaf_class_results=2), 3),
                          (RegistryStoredQuery(stored.sessions, max_leaf_class_bytes=100), 3),
                          (RegistryStoredQuery(stored.sessions), 3)):
        received.clear()
        answer = find_documents(limited, return_type="LeafClass")
        assert len(received) == rows
        if answer.codes:
            assert answer.codes == ["XDSTooManyResults"]
            assert all(row["xml"] is None for row in received)  # counted, sized, not sent
        else:
            assert all(row["xml"].startswith("<") for row in received)


def test_the_stored_size_is_counted_in_bytes_not_characters(registry, stored):
    """A Japanese title: 3 bytes a character in UTF-8, as the answer is written."""
    register(registry, s.document("a", s.new_oid(), title="紹介状" * 100))
    size = stored_bytes(stored)
    with stored.sessions() as session:
        characters = session.scalar(select(func.sum(func.length(DocumentEntryRow.xml))))
    assert size >= characters + 600
    assert find_documents(RegistryStoredQuery(stored.sessions, max_leaf_class_bytes=size - 1),
                          return_type="LeafClass").codes == ["XDSTooManyResults"]
    assert find_documents(RegistryStoredQuery(stored.sessions, max_leaf_class_bytes=size),
                          return_type="LeafClass").status == "Success"


# --- the settings reach the stored queries -------------------------------------------------------------


def test_the_limits_come_from_the_settings(registry):
    settings = Settings(max_leaf_class_bytes=1, max_query_parameter_values=2, max_query_values=50, max_query_terms=3)
    configured = service.stored_query_for(registry, settings)
    assert configured.max_leaf_class_bytes == 1
    assert configured.limits == QueryLimits(parameter_values=2, values=50, terms=3)
    defaults = Settings()
    assert (defaults.max_leaf_class_bytes, defaults.max_query_parameter_values, defaults.max_query_values,
            defaults.max_query_terms) == (64 * 1024 * 1024, 10000, 20000, 16)
    answer = find_documents(configured, ("$XDSDocumentEntryClassCode", class_codes(3)))
    assert answer.codes == ["XDSStoredQueryParamNumber"]
