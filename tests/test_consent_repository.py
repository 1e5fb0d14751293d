"""A Document Repository that registers with a remote registry (registry_url) holds no consent
records and no PIX persons: with access_control = consent it reads them, for ITI-43, from the
registry's database (registry_database_url), and without that setting it does not start
(xds.consent.access.consent_database). `xds serve`'s start-up log says where consent is read.

The registry is `xds serve` on a database of its own; the repository is the whole server
in-process (xds.app, called as WSGI) on another, with XUA on (the facility is the signed
assertion's organization-id). On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from lxml import etree

from tests import saml
from tests.test_consent_notrace import AUDIENCE, FACILITY_A, RS, XDSB, send
from tests.test_identity_data import DOMAIN, pid
from tests.test_repository_support import pnr_request, start_server, stop_server
from xds.app import Server
from xds.config import Settings
from xds.consent import store
from xds.consent.access import consent_database
from xds.consent.policy import ConsentPolicy
from xds.serve import serve
from xds.store import db
from xds.transactions import ITI_41, ITI_43

REPOSITORY = "1.2.392.200119.6.102.9"
SHARED, PRIVATE = pid("R1").cx, pid("R2").cx


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    return saml.IdentityProvider(tmp_path_factory.mktemp("idp"), "repository-idp")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def registry(request, tmp_path_factory, idp):
    """`xds serve`: the registry and PIX Manager, holding the persons and their consent. It reads
    X-User Assertions: the repository's ITI-42 conveys its clients' (xds.repository.registration)."""
    running = start_server(request.param, tmp_path_factory.mktemp(f"registry-{request.param}"),
                           patients=(SHARED, PRIVATE), extra_env={
                               "XDS_AFFINITY_DOMAIN": DOMAIN, "XDS_XUA_TRUSTED_CERTIFICATES": str(idp.certificate),
                               "XDS_XUA_AUDIENCES": AUDIENCE})
    engine = db.make_engine(running.database_url)
    with db.write_session(engine) as session:
        store.change(session, SHARED, "grant", ConsentPolicy(enabled=True), at=dt.datetime.now(dt.UTC),
                     recorded_by="consent desk", reason="", source="test", model="facility",
                     facilities=[FACILITY_A])
    engine.dispose()
    yield running
    stop_server(running)


def repository_settings(tmp_path, registry, idp, **values) -> Settings:
    return Settings(data_dir=tmp_path / "repository", access_control="consent", repository_unique_id=REPOSITORY,
                    registry_url=f"{registry.base}/registry", xua_policy="optional",
                    xua_trusted_certificates=str(idp.certificate), xua_audiences=AUDIENCE, **values)


def retrieve(server: Server, unique_id: str, assertion) -> list[str]:
    """The errors of an ITI-43 of one document; [] when it was returned."""
    request = etree.Element(f"{{{XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": XDSB})
    item = etree.SubElement(request, f"{{{XDSB}}}DocumentRequest")
    etree.SubElement(item, f"{{{XDSB}}}RepositoryUniqueId").text = REPOSITORY
    etree.SubElement(item, f"{{{XDSB}}}DocumentUniqueId").text = unique_id
    message = send(server, "/repository", request, ITI_43.action, assertion=assertion)[1]
    return [e.get("errorCode") for e in message.body.iter(f"{{{RS}}}RegistryError")]


def test_it_reads_consent_from_the_registrys_database(registry, idp, tmp_path):
    settings = repository_settings(tmp_path, registry, idp, registry_database_url=registry.database_url)
    assert consent_database(settings) == ("access control: ITI-43 reads consent records and persons from the "
                                          f"registry's database {db.redacted(registry.database_url)} "
                                          "(registry_database_url)")
    db.upgrade(settings.database)
    server = Server(settings)
    assertion = idp.signed(audience=AUDIENCE)
    try:
        documents = {}
        for patient in (SHARED, PRIVATE):
            request, unique_ids = pnr_request([("doc1", f"{patient} letter".encode(), "text/plain")],
                                              patient=patient, inline=True)
            status, answer = send(server, "/repository", request, ITI_41.action, assertion=assertion)
            assert answer.body.get("status").endswith(":Success"), etree.tostring(answer.body)
            documents[patient] = unique_ids["doc1"]
        # The repository's own database has neither persons nor consent: what it answers comes
        # from the registry's.
        assert retrieve(server, documents[SHARED], assertion) == []
        assert retrieve(server, documents[PRIVATE], assertion) == ["XDSDocumentUniqueIdError"]
        # A withdrawal recorded at the registry applies to the repository's next retrieval.
        engine = db.make_engine(registry.database_url)
        with db.write_session(engine) as session:
            store.change(session, SHARED, "withdraw", ConsentPolicy(enabled=True), at=dt.datetime.now(dt.UTC),
                         recorded_by="patient", reason="", source="test")
        engine.dispose()
        assert retrieve(server, documents[SHARED], assertion) == ["XDSDocumentUniqueIdError"]
    finally:
        server.audit.close()
        server.engine.dispose()


def test_without_the_registrys_database_it_does_not_start(registry, idp, tmp_path, capsys):
    settings = repository_settings(tmp_path, registry, idp)
    with pytest.raises(ValueError, match="set registry_database_url to that registry's database"):
        Server(settings)
    with pytest.raises(SystemExit) as stopped:
        serve(settings)  # stops before gunicorn starts
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "xds serve: access_control = consent with registry_url" in err and "registry_database_url" in err
    # Access control off: nothing to read, nothing said.
    assert consent_database(Settings(registry_url=settings.registry_url)) == ""
