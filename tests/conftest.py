"""Fixtures shared by the whole suite.

Databases: every test that takes `database_url` (or `engine`, `session_factory`) runs once on
SQLite and once on PostgreSQL. PostgreSQL runs only when XDS_TEST_DATABASE_URL names a
database the tests may create schemas in, e.g.

    XDS_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test pytest -n 2

Tests run in parallel against that one database, so each test gets a schema of its own,
chosen for every connection through the URL's `options=-csearch_path=<schema>`, and dropped
afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from xds.store import db

POSTGRES_ENV = "XDS_TEST_DATABASE_URL"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """An empty database: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.sqlite3'}"
        return

    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(
            f"PostgreSQL tests are off: set {POSTGRES_ENV}="
            "postgresql+psycopg://postgres@127.0.0.1:5432/test (any database where the "
            "user may create schemas) to run them"
        )
    with postgres_schema(base) as url:
        yield url


@contextmanager
def postgres_schema(base: str) -> Iterator[str]:
    """The URL of a new, empty schema of the PostgreSQL database at `base`, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex}"
    admin = db.make_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base)
    options = " ".join(filter(None, [url.query.get("options"), f"-csearch_path={schema}"]))
    try:
        yield url.update_query_dict({"options": options}).render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to the latest revision."""
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return db.make_sessionmaker(engine)


@pytest.fixture
def registry(engine: Engine, session_factory: sessionmaker[Session]):
    """A Document Registry on the test database that knows tests.submissions' two patients."""
    from tests import submissions
    from xds.registry.register import DocumentRegistry
    from xds.store import patients

    with session_factory.begin() as session:
        patients.add(session, [submissions.PATIENT, submissions.OTHER_PATIENT])
    return DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True))


# --- the `xds` command in-process ---------------------------------------------------------------

@dataclass
class Run:
    """What one `xds ...` did: its exit status and what it printed."""

    code: int
    out: str
    err: str


@pytest.fixture
def xds_environment() -> dict[str, str]:
    """The settings (environment variables) the `xds` fixture runs the command with beyond
    its database and data folder: the affinity domain of tests.test_identity_data. A test
    module overrides this fixture to run with others."""
    from tests.test_identity_data import DOMAIN

    return {"XDS_AFFINITY_DOMAIN": DOMAIN}


@pytest.fixture
def xds(engine, database_url, monkeypatch, tmp_path, capsys, xds_environment):
    """`xds ...` in-process (xds.cli.main) on the test database, as a person runs it: the
    settings from the environment (no settings file), what it prints captured."""
    from xds import cli

    monkeypatch.setenv("XDS_DATABASE_URL", database_url)
    monkeypatch.setenv("XDS_DATA_DIR", str(tmp_path / "var"))
    for name, value in xds_environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("XDS_CONFIG", raising=False)

    def run(*argv: str) -> Run:
        capsys.readouterr()
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return Run(code, out, err)

    return run
