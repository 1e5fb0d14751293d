"""Access control leaves no trace (xds.consent, access_control = consent): over a populated
registry, every stored query (ITI-18, ITI-51), retrieval (ITI-43), PIX query (ITI-45) and PDQ
(ITI-47) a facility sends is answered exactly as a registry, repository and PIX Manager holding
only the documents and patients that facility may see answer it: the same status, errors,
objects, documents and patients, byte for byte once the values that must differ between two
servers are set aside (message ids, creation times, a Folder's lastUpdateTime).

Both nodes are the whole server (xds.app, called as WSGI), with XUA on: the facility is the
organization-id of the signed assertion each request carries (tests/saml.py). Node "full"
holds eight patients, each with two submissions (documents, a folder, an addendum, a
replacement, an association to an association), and their consents; node "visible" holds the
same objects, with the same ids, of the three patients facility A may see, and no access control.
Both also hold patients of two hospitals' own domains (identity only): none of hospital A's may
be seen, so for facility A that domain is one nobody fed (ITI-45 and ITI-47 answer "unknown
domain", not "unknown id"); one of hospital B's may.
A third server over the full node's database with access control off shows that the hidden
patients' objects are there to hide. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from lxml import etree

from tests import queries as q
from tests import saml
from tests import submissions as s
from tests.conftest import POSTGRES_ENV, postgres_schema
from tests.soap_helpers import call, environ
from tests.test_identity_data import CLINIC, DOMAIN, HOSPITAL_A, HOSPITAL_B, japanese, pid
from xds.app import Server
from xds.config import Settings
from xds.consent import store
from xds.consent.policy import ConsentPolicy
from xds.hl7v3 import pdq as hl7_pdq, pix as hl7_pix
from xds.hl7v3.ns import INTERACTIONS, V3
from xds.identity import feed
from xds.identity.policy import IdentityPolicy
from xds.model.person import Identifier, PersonName
from xds.soap import build_envelope, parse_response
from xds.store import db
from xds.transactions import ITI_18, ITI_41, ITI_43, ITI_51

FACILITY_A = saml.ATTRIBUTES["urn:oasis:names:tc:xspa:1.0:subject:organization-id"].removeprefix("urn:oid:")
FACILITY_B = "1.2.392.200119.6.102.77"
AUDIENCE = "urn:xds-affinity:test:all-endpoints"
HOST = "xds.test"
REPOSITORY = "1.2.392.200119.6.102.9"
ACCESSION = "2026001^^^&1.2.3.4.5.6&ISO^urn:ihe:iti:xds:2013:accession"
XDSB = "urn:ihe:iti:xds-b:2007"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
NAMESPACE = uuid.UUID("6b1c3f0e-5f57-4d51-9a43-0d1f6f0c1a11")
THEM, US = "1.2.392.200119.6.102.50", "1.2.392.200119.6.102.51"

#: patient -> (who, its consent: a list of (action, values) changes), and whether facility A
#: (with the assertion's user) may see it.
PATIENTS = {
    "C1": ("yamada", [("grant", dict(model="blanket"))], True),
    "C2": ("sato", [("grant", dict(model="facility", facilities=[FACILITY_A, FACILITY_B]))], True),
    "C3": ("saito_old", [("grant", dict(model="facility", facilities=[FACILITY_B]))], False),
    "C4": ("takahashi_new", [("grant", dict(model="blanket")), ("withdraw", {})], False),
    "C5": ("yamasaki_old", [("grant", dict(model="blanket", excluded=[FACILITY_A]))], False),
    "C6": ("yoshida_bmp2", [], False),
    "C7": ("katsushika", [("grant", dict(model="person", individuals=[saml.USER]))], True),
    "C8": ("takahashi_old", [("grant", dict(model="blanket")), ("hold", {})], False),
}
VISIBLE = [key for key, (_, _, shown) in PATIENTS.items() if shown]
#: Patients of the hospitals' own domains (no documents: the registry takes the affinity domain's
#: ids only): facility A may see none of hospital A's, so for it that domain is not one ever fed
#: (ITI-45 "unknown domain", ITI TF-2 3.45.4.2.3), and one of hospital B's.
HOSPITAL_PATIENTS = {
    "H1": (HOSPITAL_A, "sato", [("grant", dict(model="facility", facilities=[FACILITY_B]))], False),
    "H2": (HOSPITAL_A, "yamada", [("grant", dict(model="blanket")), ("withdraw", {})], False),
    "H3": (HOSPITAL_B, "yamada", [("grant", dict(model="blanket"))], True),
    "H4": (HOSPITAL_B, "saito_old", [], False),
}
VISIBLE_IN_HOSPITALS = [key for key, (_, _, _, shown) in HOSPITAL_PATIENTS.items() if shown]


def cx(key: str) -> str:
    return hospital_id(key).cx if key in HOSPITAL_PATIENTS else pid(key).cx


def hospital_id(key: str) -> Identifier:
    return pid(key, HOSPITAL_PATIENTS[key][0] if key in HOSPITAL_PATIENTS else HOSPITAL_A)


def uid(key: str, name: str) -> str:
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, f'{key}-{name}')}"


@contextmanager
def another_database(database_url: str, tmp_path) -> Iterator[str]:
    """A second empty database beside `database_url` (a SQLite file, or a PostgreSQL schema)."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'visible.sqlite3'}"
        return
    with postgres_schema(os.environ[POSTGRES_ENV]) as url:
        yield url


# --- the two nodes ---------------------------------------------------------------------------------


def settings(folder, database_url: str, idp: saml.IdentityProvider, access_control: str) -> Settings:
    return Settings(data_dir=folder, database_url=database_url, access_control=access_control,
                    affinity_domain=DOMAIN, pix_linking_rules="", repository_unique_id=REPOSITORY,
                    xua_policy="optional", xua_trusted_certificates=str(idp.certificate), xua_audiences=AUDIENCE,
                    multi_patient_query_callers="127.0.0.1")


def send(server: Server, path: str, body: etree._Element, action: str, *, assertion=None):
    blocks = [saml.security(assertion)] if assertion is not None else []
    data = build_envelope(body, action, to=f"http://{HOST}{path}", header_blocks=blocks)
    answer = call(server, environ(data, f'application/soap+xml; charset=UTF-8; action="{action}"', PATH_INFO=path,
                                  HTTP_HOST=HOST, REMOTE_ADDR="127.0.0.1"))
    return answer.status, parse_response(answer.content_type, answer.body)


def charts(key: str, unique_ids: dict) -> list[tuple[etree._Element, dict[str, bytes]]]:
    """The patient's two ITI-41 submissions, every id fixed (the same on both nodes)."""
    patient = cx(key)
    u = {name: uid(key, name) for name in ("ss1", "d1", "d2", "f1", "a1", "a2", "a3", "a4", "a5",
                                           "ss2", "d3", "d4", "a6", "a7", "a8", "a9")}
    first = s.request(
        s.submission_set(u["ss1"], unique_ids[key, "ss1"], patient),
        s.document(u["d1"], unique_ids[key, "d1"], patient, reference_ids=[ACCESSION]),
        s.document(u["d2"], unique_ids[key, "d2"], patient, title="Lab results"),
        s.folder(u["f1"], unique_ids[key, "f1"], patient),
        s.association(u["a1"], "HasMember", u["ss1"], u["d1"], "Original"),
        s.association(u["a2"], "HasMember", u["ss1"], u["d2"], "Original"),
        s.association(u["a3"], "HasMember", u["ss1"], u["f1"]),
        s.association(u["a4"], "HasMember", u["f1"], u["d1"]),
        s.association(u["a5"], "HasMember", u["ss1"], u["a4"]),
    )
    second = s.request(
        s.submission_set(u["ss2"], unique_ids[key, "ss2"], patient),
        s.document(u["d3"], unique_ids[key, "d3"], patient, title="Addendum"),
        s.document(u["d4"], unique_ids[key, "d4"], patient, title="Lab results, corrected"),
        s.association(u["a6"], "HasMember", u["ss2"], u["d3"], "Original"),
        s.association(u["a7"], "HasMember", u["ss2"], u["d4"], "Original"),
        s.association(u["a8"], "APND", u["d3"], u["d1"]),
        s.association(u["a9"], "RPLC", u["d4"], u["d2"]),
    )
    return [(_provide(first, {u["d1"]: f"{key} letter".encode(), u["d2"]: f"{key} labs".encode()})),
            (_provide(second, {u["d3"]: f"{key} addendum".encode(), u["d4"]: f"{key} labs 2".encode()}))]


def _provide(submit_xml: str, documents: dict[str, bytes]):
    submit = s.element(submit_xml)
    for entry in submit.iter(f"{{{RIM}}}ExtrinsicObject"):
        for slot in entry.findall(f"{{{RIM}}}Slot"):
            if slot.get("name") in ("hash", "size", "repositoryUniqueId"):  # the repository sets them
                entry.remove(slot)
    request = etree.Element(f"{{{XDSB}}}ProvideAndRegisterDocumentSetRequest", nsmap={"xdsb": XDSB})
    request.append(submit)
    for entry_id, data in documents.items():
        etree.SubElement(request, f"{{{XDSB}}}Document", id=entry_id).text = base64.b64encode(data).decode()
    return request


def populate(server: Server, keys, hospital_keys, unique_ids, *, consents: bool) -> None:
    identity = IdentityPolicy.from_settings(server.settings)
    with db.write_session(server.engine) as session:
        for key in keys:
            feed.add(session, japanese(key, PATIENTS[key][0]), identity)
        for key in hospital_keys:
            root, who, _, _ = HOSPITAL_PATIENTS[key]
            feed.add(session, japanese(key, who, root=root, birth="19800202"), identity)
    if consents:
        policy = ConsentPolicy.from_settings(server.settings)
        changes = [(key, PATIENTS[key][1]) for key in keys] + [(key, HOSPITAL_PATIENTS[key][2]) for key in hospital_keys]
        for key, actions in changes:
            for action, values in actions:
                with db.write_session(server.engine) as session:
                    store.change(session, cx(key), action, policy, at=dt.datetime.now(dt.UTC),
                                 recorded_by="consent desk", reason="", source="test", **values)
    for key in keys:
        for request in charts(key, unique_ids):
            status, answer = send(server, "/repository", request, ITI_41.action)
            assert answer.body.get("status").endswith(":Success"), etree.tostring(answer.body)


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    return saml.IdentityProvider(tmp_path_factory.mktemp("idp"), "notrace-idp")


@pytest.fixture
def nodes(database_url, tmp_path, idp):
    unique_ids = {(key, name): s.new_oid() for key in PATIENTS for name in ("ss1", "d1", "d2", "f1", "ss2", "d3", "d4")}
    with another_database(database_url, tmp_path) as visible_url:
        for url in (database_url, visible_url):
            db.upgrade(url)
        full = Server(settings(tmp_path / "full", database_url, idp, "consent"))
        visible = Server(settings(tmp_path / "visible", visible_url, idp, "off"))
        unfiltered = Server(settings(tmp_path / "full", database_url, idp, "off"))
        try:
            populate(full, list(PATIENTS), list(HOSPITAL_PATIENTS), unique_ids, consents=True)
            populate(visible, VISIBLE, VISIBLE_IN_HOSPITALS, unique_ids, consents=False)
            yield full, visible, unfiltered, unique_ids
        finally:
            for server in (full, visible, unfiltered):
                server.engine.dispose()


# --- what differs between two servers whatever they hold -------------------------------------------


def normalized(status: int, message) -> tuple:
    """The answer as a client reads it, without the values two servers must differ in."""
    body = copy.deepcopy(message.body)
    for slot in body.iter(f"{{{RIM}}}Slot"):
        if slot.get("name") == "lastUpdateTime":  # a Folder's: when this registry stored it
            for value in slot.iter(f"{{{RIM}}}Value"):
                value.text = "*"
    for objects in body.iter(f"{{{RIM}}}RegistryObjectList"):
        children = sorted(objects, key=lambda e: etree.tostring(e, method="c14n"))
        objects[:] = children
    if body.tag.startswith(f"{{{V3}}}"):
        for name in ("id", "creationTime"):  # the answer's own message id and time
            element = body.find(f"{{{V3}}}{name}")
            if element is not None:
                element.attrib.clear()
    attachments = sorted((cid, part.read_bytes() if hasattr(part, "read_bytes") else part.open().read())
                         for cid, part in message.attachments.items())
    return status, message.action, etree.tostring(body, method="c14n"), attachments


# --- the requests --------------------------------------------------------------------------------

STATUSES = ("$XDSDocumentEntryStatus", q.quote_list([q.APPROVED, q.DEPRECATED]))
SET_STATUSES = ("$XDSSubmissionSetStatus", q.quote_list([q.APPROVED]))
FOLDER_STATUSES = ("$XDSFolderStatus", q.quote_list([q.APPROVED]))
RELATIONS = ("$AssociationTypes", q.quote_list([q.RPLC, q.APND]))
CLASS = ("$XDSDocumentEntryClassCode", q.quote_list([s.key(s.CLASS)]))
FOLDER_CODES = ("$XDSFolderCodeList", q.quote_list([s.key(s.FOLDER_CODE)]))


def stored_queries(unique_ids) -> Iterator[tuple[str, etree._Element]]:
    """(action, AdhocQueryRequest) for every stored query, by patient and by id."""
    keys = [*PATIENTS, "NOBODY"]
    every = {name: [uid(key, name) for key in PATIENTS] for name in ("d1", "d2", "d3", "d4", "ss1", "ss2", "f1", "a4")}
    documents = every["d1"] + every["d2"] + every["d3"] + every["d4"]
    requests = []
    for key in keys:
        patient = q.quote(cx(key))
        requests += [
            ("FindDocuments", ("$XDSDocumentEntryPatientId", patient), STATUSES),
            ("FindDocumentsByReferenceId", ("$XDSDocumentEntryPatientId", patient), STATUSES,
             ("$XDSDocumentEntryReferenceIdList", q.quote_list([ACCESSION]))),
            ("FindSubmissionSets", ("$XDSSubmissionSetPatientId", patient), SET_STATUSES),
            ("FindFolders", ("$XDSFolderPatientId", patient), FOLDER_STATUSES),
            ("GetAll", ("$patientId", patient), STATUSES, SET_STATUSES, FOLDER_STATUSES),
        ]
    requests += [
        ("GetDocuments", ("$XDSDocumentEntryEntryUUID", q.quote_list(documents))),
        ("GetDocuments", ("$XDSDocumentEntryUniqueId",
                          q.quote_list([unique_ids[key, "d1"] for key in PATIENTS] + ["1.2.3.4.404"]))),
        ("GetFolders", ("$XDSFolderEntryUUID", q.quote_list(every["f1"]))),
        ("GetAssociations", ("$uuid", q.quote_list(documents + every["ss1"] + every["f1"] + every["a4"]))),
        ("GetDocumentsAndAssociations", ("$XDSDocumentEntryEntryUUID", q.quote_list(documents))),
        ("GetSubmissionSets", ("$uuid", q.quote_list(documents + every["f1"]))),
    ]
    for key in PATIENTS:
        requests += [
            ("GetDocuments", ("$XDSDocumentEntryEntryUUID", q.quote_list([uid(key, "d1")]))),
            ("GetSubmissionSetAndContents", ("$XDSSubmissionSetEntryUUID", q.quote(uid(key, "ss1")))),
            ("GetSubmissionSetAndContents", ("$XDSSubmissionSetUniqueId", q.quote(unique_ids[key, "ss2"]))),
            ("GetFolderAndContents", ("$XDSFolderEntryUUID", q.quote(uid(key, "f1")))),
            ("GetFoldersForDocument", ("$XDSDocumentEntryEntryUUID", q.quote(uid(key, "d1")))),
            ("GetRelatedDocuments", ("$XDSDocumentEntryEntryUUID", q.quote(uid(key, "d1"))), RELATIONS),
            ("GetRelatedDocuments", ("$XDSDocumentEntryEntryUUID", q.quote(uid(key, "d4"))), RELATIONS),
        ]
    for name, *slots in requests:
        for return_type in ("LeafClass", "ObjectRef"):
            yield ITI_18.action, q.request(name, *slots, return_type=return_type)
    named = ("$XDSDocumentEntryPatientId", q.quote_list([cx(key) for key in keys]))
    for slots in ((named, STATUSES), (CLASS, STATUSES)):
        for return_type in ("LeafClass", "ObjectRef"):
            yield ITI_51.action, q.request("FindDocumentsForMultiplePatients", *slots, return_type=return_type)
    for slots in ((("$XDSFolderPatientId", q.quote_list([cx(key) for key in keys])), FOLDER_STATUSES),
                  (FOLDER_CODES, FOLDER_STATUSES)):
        yield ITI_51.action, q.request("FindFoldersForMultiplePatients", *slots, return_type="LeafClass")


def retrievals(unique_ids) -> Iterator[etree._Element]:
    def request(items):
        element = etree.Element(f"{{{XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": XDSB})
        for repository, document in items:
            item = etree.SubElement(element, f"{{{XDSB}}}DocumentRequest")
            etree.SubElement(item, f"{{{XDSB}}}RepositoryUniqueId").text = repository
            etree.SubElement(item, f"{{{XDSB}}}DocumentUniqueId").text = document
        return element

    every = [unique_ids[key, name] for key in PATIENTS for name in ("d1", "d2", "d3", "d4")]
    for document in every:
        yield request([(REPOSITORY, document)])
    yield request([(REPOSITORY, d) for d in every])
    yield request([(REPOSITORY, unique_ids["C3", "d1"]), (REPOSITORY, "1.2.3.4.404"), ("9.9.9", unique_ids["C1", "d1"]),
                   (REPOSITORY, unique_ids["C1", "d1"])])


def identity_queries() -> Iterator[tuple[str, etree._Element]]:
    for key in [*PATIENTS, "NOBODY"]:
        yield "/pix", hl7_pix.pix_query(pid(key), sender=THEM, receiver=US, message_id=f"1.2.3.{key}")
        yield "/pix", hl7_pix.pix_query(pid(key), [DOMAIN], sender=THEM, receiver=US, message_id=f"1.2.4.{key}")
        by_id = hl7_pdq.PdqQuery(query_id=Identifier("1.2.5", key), living_subject_ids=[pid(key)])
        yield "/pdq", hl7_pdq.pdq_query(by_id, sender=THEM, receiver=US, message_id=f"1.2.5.{key}")
    for key, (who, _, _) in PATIENTS.items():
        family = japanese(key, who).names[0].family
        yield "/pdq", hl7_pdq.pdq_query(hl7_pdq.PdqQuery(query_id=Identifier("1.2.6", key),
                                                         living_subject_names=[PersonName(family=family)]),
                                        sender=THEM, receiver=US, message_id=f"1.2.6.{key}")
    # Domain knowledge: hospital A's ids are all hidden, hospital B's partly, a clinic's unknown.
    for key in [*HOSPITAL_PATIENTS, "NOBODY"]:
        yield "/pix", hl7_pix.pix_query(hospital_id(key), sender=THEM, receiver=US, message_id=f"1.2.8.{key}")
        by_id = hl7_pdq.PdqQuery(query_id=Identifier("1.2.9", key), living_subject_ids=[hospital_id(key)])
        yield "/pdq", hl7_pdq.pdq_query(by_id, sender=THEM, receiver=US, message_id=f"1.2.9.{key}")
    for number, (key, sources) in enumerate([("C1", [HOSPITAL_A]), ("C1", [HOSPITAL_B]), ("C1", [CLINIC]),
                                             ("C1", [DOMAIN, HOSPITAL_A, HOSPITAL_B]), ("H3", [HOSPITAL_A]),
                                             ("H3", [DOMAIN, HOSPITAL_B]), ("H4", [HOSPITAL_A]),
                                             ("H1", [HOSPITAL_B]), ("C3", [HOSPITAL_A])]):
        identifier = hospital_id(key) if key in HOSPITAL_PATIENTS else pid(key)
        yield "/pix", hl7_pix.pix_query(identifier, sources, sender=THEM, receiver=US,
                                        message_id=f"1.2.10.{number}")
    for number, scoping in enumerate([[HOSPITAL_A], [HOSPITAL_B], [DOMAIN, HOSPITAL_A], [CLINIC]]):
        named = hl7_pdq.PdqQuery(query_id=Identifier("1.2.11", str(number)), other_ids_scoping_organizations=scoping,
                                 living_subject_names=[PersonName(family=("山田",))])
        yield "/pdq", hl7_pdq.pdq_query(named, sender=THEM, receiver=US, message_id=f"1.2.11.{number}")
    for gender in ("M", "F"):  # many patients each, paged
        yield "/pdq", hl7_pdq.pdq_query(hl7_pdq.PdqQuery(query_id=Identifier("1.2.7", gender), initial_quantity=2,
                                                         living_subject_administrative_gender=gender),
                                        sender=THEM, receiver=US, message_id=f"1.2.7.{gender}")


# --- the comparison --------------------------------------------------------------------------------


def every_request(unique_ids):
    for action, body in stored_queries(unique_ids):
        yield "/registry", action, body
    for body in retrievals(unique_ids):
        yield "/repository", ITI_43.action, body
    for path, message in identity_queries():
        interaction = etree.QName(message).localname
        yield path, INTERACTIONS[interaction].action, message


def test_every_answer_is_that_of_a_registry_holding_only_what_the_facility_may_see(nodes, idp):
    full, visible, unfiltered, unique_ids = nodes
    assertion = idp.signed(audience=AUDIENCE)
    compared = hidden_somewhere = 0
    for path, action, body in every_request(unique_ids):
        filtered = normalized(*send(full, path, body, action, assertion=assertion))
        expected = normalized(*send(visible, path, body, action, assertion=assertion))
        assert filtered == expected, (path, etree.tostring(body)[:300])
        compared += 1
        if normalized(*send(unfiltered, path, body, action, assertion=assertion)) != expected:
            hidden_somewhere += 1
    # The test compares something: a good share of the answers would show hidden patients' data.
    assert compared > 250 and hidden_somewhere > 100, (compared, hidden_somewhere)


def test_a_request_whose_facility_is_not_known_sees_nothing(nodes):
    full, visible, unfiltered, unique_ids = nodes
    body = q.request("FindDocuments", ("$XDSDocumentEntryPatientId", q.quote(cx("C1"))), STATUSES,
                     return_type="ObjectRef")
    assert q.read(send(unfiltered, "/registry", body, ITI_18.action)[1].body).by_kind.get("ObjectRef")
    answer = q.read(send(full, "/registry", body, ITI_18.action)[1].body)  # no assertion: no facility
    assert answer.status == "Success" and not answer.by_kind.get("ObjectRef")
    retrieve = next(retrievals(unique_ids))
    status, message = send(full, "/repository", retrieve, ITI_43.action)
    assert [e.get("errorCode") for e in message.body.iter(f"{{{RS}}}RegistryError")] == [
        "XDSDocumentUniqueIdError"]


def test_a_withdrawal_hides_the_patient_from_the_next_request(nodes, idp):
    full, visible, unfiltered, unique_ids = nodes
    assertion = idp.signed(audience=AUDIENCE)
    body = q.request("FindDocuments", ("$XDSDocumentEntryPatientId", q.quote(cx("C1"))), STATUSES,
                     return_type="ObjectRef")
    assert len(q.read(send(full, "/registry", body, ITI_18.action, assertion=assertion)[1].body).ids) == 4
    with db.write_session(full.engine) as session:
        store.change(session, cx("C1"), "withdraw", ConsentPolicy.from_settings(full.settings),
                     at=dt.datetime.now(dt.UTC), recorded_by="patient", reason="", source="test")
    assert q.read(send(full, "/registry", body, ITI_18.action, assertion=assertion)[1].body).ids == []
