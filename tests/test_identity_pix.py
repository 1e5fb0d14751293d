"""PIX Query (ITI-45, ITI TF-2b 3.45.4.2.3) and the registry's patient directory over the
identity store: merges seen by registration. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests import submissions as s
from tests.test_identity_data import CLINIC, DOMAIN, HOSPITAL_A, HOSPITAL_B, japanese, pid
from tests.test_identity_feed import POLICY, read, write
from xds.identity import feed, pix
from xds.identity.directory import IdentityDirectory, parse_cx
from xds.model.person import Identifier, PatientRecord
from xds.registry.register import DocumentRegistry
from xds.store import db


@pytest.fixture
def linked(engine):
    """D1 (affinity domain), A1 (hospital A), B1 (hospital B): one person. D2 alone."""
    write(engine, feed.add, japanese("D1"), POLICY)
    write(engine, feed.add, japanese("A1", root=HOSPITAL_A, kana="halfwidth"), POLICY)
    write(engine, feed.add, japanese("B1", root=HOSPITAL_B, kana="hiragana"), POLICY)
    write(engine, feed.add, japanese("D2", "sato", gender="F"), POLICY)
    return engine


def query(engine, identifier, sources=()):
    return read(engine, pix.query, identifier, list(sources), POLICY)


def test_all_ids_of_the_person(linked):
    answer = query(linked, pid("A1", HOSPITAL_A))
    assert answer.outcome == pix.OK and answer.current == pid("A1", HOSPITAL_A)
    assert set(answer.ids) == {pid("D1"), pid("A1", HOSPITAL_A), pid("B1", HOSPITAL_B)}


def test_filtered_by_data_sources(linked):
    answer = query(linked, pid("A1", HOSPITAL_A), [DOMAIN, HOSPITAL_B])
    assert answer.outcome == pix.OK and answer.ids == [pid("D1"), pid("B1", HOSPITAL_B)]


def test_no_id_in_the_requested_domains_is_nf(linked):
    assert query(linked, pid("D2"), [HOSPITAL_A]).outcome == pix.NOT_FOUND


def test_an_unknown_id_of_a_known_domain(linked):
    assert query(linked, pid("NOBODY")).outcome == pix.UNKNOWN_ID


def test_an_unknown_domain(linked):
    assert query(linked, Identifier("1.2.999", "X")).outcome == pix.UNKNOWN_DOMAIN


def test_the_affinity_domain_is_known_before_any_feed(engine):
    assert query(engine, pid("D1")).outcome == pix.UNKNOWN_ID
    assert query(engine, Identifier(HOSPITAL_A, "A1")).outcome == pix.UNKNOWN_DOMAIN


def test_an_unknown_data_source(linked):
    answer = query(linked, pid("D1"), [HOSPITAL_A, "1.2.999", CLINIC])
    assert answer.outcome == pix.UNKNOWN_DATA_SOURCE and answer.unknown_data_sources == ["1.2.999", CLINIC]
    assert read(linked, pix.known_domains, [DOMAIN, HOSPITAL_A, CLINIC, "1.2.999"], POLICY) == {DOMAIN, HOSPITAL_A}


def test_a_retired_id_answers_as_its_survivor(linked):
    write(linked, feed.merge, PatientRecord(ids=[pid("D1")]), pid("D2"), POLICY)
    answer = query(linked, pid("D2"))
    assert answer.outcome == pix.OK and answer.current == pid("D1")
    assert set(answer.ids) == {pid("D1"), pid("A1", HOSPITAL_A), pid("B1", HOSPITAL_B)}


# --- the registry's patient directory -------------------------------------------------------

def test_parse_cx():
    assert parse_cx("P1^^^&1.2.3&ISO") == Identifier("1.2.3", "P1")
    assert parse_cx("P1") is None and parse_cx("P1^^^&notanoid&ISO") is None


def test_resolve(linked):
    directory = IdentityDirectory()
    ids = [pid("D1").cx, pid("A1", HOSPITAL_A).cx, "NOBODY^^^&1.2.3&ISO", "garbage"]
    # A hospital's own id is not an affinity domain id: the registry does not accept it.
    assert read(linked, directory.resolve, ids) == {ids[0]: ids[0], ids[1]: None, ids[2]: None, ids[3]: None}
    assert read(linked, directory.aliases, pid("D1").cx) == [pid("D1").cx]
    assert read(linked, directory.aliases, "NOBODY^^^&1.2.3&ISO") == ["NOBODY^^^&1.2.3&ISO"]
    assert read(linked, directory.survivor, pid("D1").cx) is None


def test_ids_added_by_the_cli_before_the_feed_existed_resolve(engine):
    from xds.store import patients
    with db.write_session(engine) as session:
        patients.add(session, [s.PATIENT])
    assert read(engine, IdentityDirectory().resolve, [s.PATIENT]) == {s.PATIENT: s.PATIENT}


def test_the_registry_refuses_a_submission_for_a_retired_id(linked):
    registry = DocumentRegistry(sessions=db.make_sessionmaker(linked, write=True), patients=IdentityDirectory())
    xml, _ = s.submission(patient=pid("D2").cx)
    assert [p.code for p in registry.register(s.element(xml)) if p.is_error] == []
    write(linked, feed.merge, PatientRecord(ids=[pid("D1")]), pid("D2"), POLICY)
    xml, _ = s.submission(patient=pid("D2").cx)
    assert "XDSUnknownPatientId" in [p.code for p in registry.register(s.element(xml)) if p.is_error]
    xml, _ = s.submission(patient=pid("D1").cx)
    assert [p.code for p in registry.register(s.element(xml)) if p.is_error] == []
    # The default directory (the registry's own patient list) refuses it too: the merge took
    # the retired id off that list.
    plain = DocumentRegistry(sessions=db.make_sessionmaker(linked, write=True))
    xml, _ = s.submission(patient=pid("D2").cx)
    assert "XDSUnknownPatientId" in [p.code for p in plain.register(s.element(xml)) if p.is_error]
