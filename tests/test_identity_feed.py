"""The Patient Identity Feed (ITI-44, ITI TF-2b 3.44.4): add, revise, merge; what the registry
learns from it; the history. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from tests.test_identity_data import CLINIC, DOMAIN, FULL, HOSPITAL_A, HOSPITAL_B, japanese, pid
from xds.config import Settings
from xds.identity import feed, pix, store
from xds.identity.directory import IdentityDirectory
from xds.identity.errors import IdentityError
from xds.identity.policy import IdentityPolicy
from xds.model.person import Identifier, PatientRecord, PersonName
from xds.store import db, patients
from xds.store.tables import IdentityKeyRow, IdentityPersonRow

POLICY = IdentityPolicy.from_settings(Settings(affinity_domain=DOMAIN),
                                      clock=lambda: datetime(2025, 12, 1, tzinfo=timezone.utc))


def write(engine, fn, *args, **kwargs):
    with db.write_session(engine) as session:
        return fn(session, *args, **kwargs)


def read(engine, fn, *args, **kwargs):
    with db.make_sessionmaker(engine)() as session:
        return fn(session, *args, **kwargs)


def registry_ids(engine) -> list[str]:
    return read(engine, patients.list_all)


def count(engine, table) -> int:
    return read(engine, lambda s: s.scalar(select(func.count()).select_from(table)))


# --- add ------------------------------------------------------------------------------------

def test_add_stores_the_record_as_sent(engine):
    result = write(engine, feed.add, FULL, POLICY)
    assert (result.action, result.link, result.linked) == ("added", "new", [FULL.ids[0]])
    view = read(engine, store.person_of, FULL.ids[0])
    assert view.patients[0].record == FULL  # 𠮷田 𩸽子, addresses, telecoms ... unchanged
    assert view.patients[0].revision == 1
    history = read(engine, lambda s: store.history(s, store.get(s, FULL.ids[0]).pk))
    assert [(h.action, h.record) for h in history] == [("add", FULL)]


def test_an_affinity_domain_id_is_known_to_the_registry_in_the_same_transaction(engine):
    result = write(engine, feed.add, japanese("D1"), POLICY)
    assert result.registry_added == ["D1^^^&1.2.392.200119.6.102.11&ISO"]
    write(engine, feed.add, japanese("H1", root=HOSPITAL_A), POLICY)
    assert registry_ids(engine) == ["D1^^^&1.2.392.200119.6.102.11&ISO"]


def test_without_an_affinity_domain_the_registry_learns_nothing(engine):
    write(engine, feed.add, japanese("D1"), IdentityPolicy())
    assert registry_ids(engine) == []


def test_a_feed_that_fails_later_in_its_transaction_leaves_nothing(engine):
    with pytest.raises(RuntimeError):
        with db.write_session(engine) as session:
            feed.add(session, japanese("D1"), POLICY)
            raise RuntimeError("the service failed after the feed")
    assert registry_ids(engine) == [] and count(engine, IdentityPersonRow.__table__) == 0


def test_add_of_a_known_id_revises_it_and_keeps_the_history(engine):
    write(engine, feed.add, japanese("D1", "yamada"), POLICY)
    second = japanese("D1", "sato", kana="halfwidth")
    result = write(engine, feed.add, second, POLICY)
    assert result.action == "revised"
    history = read(engine, lambda s: store.history(s, store.get(s, pid("D1")).pk))
    assert [h.action for h in history] == ["add", "revise"]
    assert history[0].record.names[0].family == ("山田",) and history[1].record == second
    assert read(engine, store.person_of, pid("D1")).patients[0].record == second


def test_revise_replaces_the_search_keys(engine):
    write(engine, feed.add, japanese("D1", "yamada"), POLICY)
    write(engine, feed.revise, japanese("D1", "sato"), POLICY)
    keys = read(engine, lambda s: set(s.scalars(select(IdentityKeyRow.key))))
    assert "佐藤" in keys and "山田" not in keys


def test_revise_of_an_id_never_fed_adds_it(engine):
    result = write(engine, feed.revise, japanese("D9"), POLICY)
    assert result.action == "added"


@pytest.mark.parametrize("record", [PatientRecord(), PatientRecord(ids=[Identifier("1.2.3", "")]),
                                    PatientRecord(ids=[Identifier("", "X")])])
def test_a_record_without_a_whole_id_is_refused(engine, record):
    with pytest.raises(IdentityError) as e:
        write(engine, feed.add, record, POLICY)
    assert e.value.code == "invalid-id"


# --- merge ----------------------------------------------------------------------------------

def _merge_message(survivor: Identifier, **fields) -> PatientRecord:
    return PatientRecord(ids=[survivor], **fields)


def test_merge_retires_the_subsumed_id(engine):
    write(engine, feed.add, japanese("D1"), POLICY)
    write(engine, feed.add, japanese("D2", "sato", gender="F"), POLICY)
    write(engine, feed.add, japanese("H2", "sato", gender="F", root=HOSPITAL_A), POLICY)  # linked to D2
    result = write(engine, feed.merge, _merge_message(pid("D1")), pid("D2"), POLICY)
    assert result.action == "merged" and result.retired == pid("D2")
    assert result.registry_removed == ["D2^^^&1.2.392.200119.6.102.11&ISO"]
    # The subsumed id's person joined the survivor's; the subsumed id is no longer among its ids.
    assert sorted(result.linked, key=str) == sorted([pid("D1"), pid("H2", HOSPITAL_A)], key=str)
    assert registry_ids(engine) == ["D1^^^&1.2.392.200119.6.102.11&ISO"]
    directory = IdentityDirectory()
    assert read(engine, directory.resolve, [pid("D2").cx, pid("D1").cx]) == {pid("D2").cx: None,
                                                                             pid("D1").cx: pid("D1").cx}
    assert read(engine, directory.aliases, pid("D1").cx) == [pid("D1").cx, pid("D2").cx]
    answer = read(engine, pix.query, pid("D2"), [], POLICY)
    assert answer.current == pid("D1") and pid("D2") not in answer.ids
    view = read(engine, store.person_of, pid("D2"))
    assert [(p.identifier, p.status, p.merged_into) for p in view.patients][-1] == (pid("D2"), "retired", pid("D1"))
    history = read(engine, lambda s: store.history(s, store.get(s, pid("D2")).pk))
    assert history[-1].action == "retire"


def test_merge_of_an_id_never_fed_is_refused_and_changes_nothing(engine):
    write(engine, feed.add, japanese("D1"), POLICY)
    with pytest.raises(IdentityError) as e:
        write(engine, feed.merge, _merge_message(pid("D1")), pid("NEVER"), POLICY)
    assert e.value.code == "unknown-subsumed" and e.value.identifier == pid("NEVER")
    assert registry_ids(engine) == [pid("D1").cx]


def test_merge_into_itself_is_refused(engine):
    write(engine, feed.add, japanese("D1"), POLICY)
    with pytest.raises(IdentityError) as e:
        write(engine, feed.merge, _merge_message(pid("D1")), pid("D1"), POLICY)
    assert e.value.code == "merge-self"


def test_merge_sent_again_changes_nothing(engine):
    write(engine, feed.add, japanese("D1"), POLICY)
    write(engine, feed.add, japanese("D2", "sato"), POLICY)
    write(engine, feed.merge, _merge_message(pid("D1")), pid("D2"), POLICY)
    again = write(engine, feed.merge, _merge_message(pid("D1")), pid("D2"), POLICY)
    assert again.action == "unchanged"


def test_merge_into_an_unknown_survivor_adds_it_from_the_message(engine):
    write(engine, feed.add, japanese("D2", "sato"), POLICY)
    result = write(engine, feed.merge, japanese("D1", "yamada"), pid("D2"), POLICY)
    assert result.action == "merged" and result.linked == [pid("D1")]
    assert registry_ids(engine) == [pid("D1").cx]


def test_merge_message_with_demographics_revises_the_survivor(engine):
    write(engine, feed.add, japanese("D1", "yamada"), POLICY)
    write(engine, feed.add, japanese("D2", "sato"), POLICY)
    write(engine, feed.merge, japanese("D1", "yamada", kana="hiragana"), pid("D2"), POLICY)
    history = read(engine, lambda s: store.history(s, store.get(s, pid("D1")).pk))
    assert [h.action for h in history] == ["add", "revise", "merge"]


def test_a_retired_id_cannot_be_fed_again_nor_be_a_survivor(engine):
    write(engine, feed.add, japanese("D1"), POLICY)
    write(engine, feed.add, japanese("D2", "sato"), POLICY)
    write(engine, feed.merge, _merge_message(pid("D1")), pid("D2"), POLICY)
    for attempt in (lambda s: feed.add(s, japanese("D2", "sato"), POLICY),
                    lambda s: feed.merge(s, _merge_message(pid("D2")), pid("D1"), POLICY)):
        with pytest.raises(IdentityError) as e:
            write(engine, attempt)
        assert e.value.code == "retired" and "D1^^^" in e.value.message


def test_merge_chains_are_flattened(engine):
    for ext, who in (("A", "yamada"), ("B", "sato"), ("C", "saito_old")):
        write(engine, feed.add, japanese(ext, who), POLICY)
    write(engine, feed.merge, _merge_message(pid("A")), pid("B"), POLICY)
    write(engine, feed.merge, _merge_message(pid("C")), pid("A"), POLICY)
    directory = IdentityDirectory()
    assert read(engine, directory.aliases, pid("C").cx) == [pid("C").cx, pid("A").cx, pid("B").cx]
    assert read(engine, directory.survivor, pid("B").cx) == pid("C").cx
    assert read(engine, pix.query, pid("B"), [], POLICY).current == pid("C")


def test_a_retired_id_is_not_searched_by_and_its_candidates_go(engine):
    write(engine, feed.add, japanese("D1"), POLICY)
    write(engine, feed.add, japanese("D2"), POLICY)  # same demographics, same domain: a candidate
    from xds.identity import links
    assert read(engine, links.candidates)
    write(engine, feed.merge, _merge_message(pid("D1")), pid("D2"), POLICY)
    assert read(engine, links.candidates) == []
    pks = read(engine, lambda s: set(s.scalars(select(IdentityKeyRow.patient_pk))))
    assert pks == {read(engine, lambda s: store.get(s, pid("D1")).pk)}


def test_merge_across_domains_as_the_ipf_sample_does(engine):
    """IPF's PIX_FEED_MERGE_Maximal_Request retires 120-02 of 1.2.3.4.666 into 120-01 of
    1.2.3.4.5.1000, with the survivor's name "Unknown"."""
    write(engine, feed.add, PatientRecord(ids=[Identifier("1.2.3.4.666", "120-02")]), POLICY)
    message = PatientRecord(ids=[Identifier("1.2.3.4.5.1000", "120-01")], names=[PersonName(text="Unknown")])
    result = write(engine, feed.merge, message, Identifier("1.2.3.4.666", "120-02"), POLICY)
    assert result.linked == [Identifier("1.2.3.4.5.1000", "120-01")]
    assert read(engine, pix.query, Identifier("1.2.3.4.666", "120-02"), [], POLICY).current == message.ids[0]


def test_persons_left_empty_are_removed(engine):
    write(engine, feed.add, japanese("D1"), POLICY)
    write(engine, feed.add, japanese("D2", "sato"), POLICY)
    write(engine, feed.merge, _merge_message(pid("D1")), pid("D2"), POLICY)
    assert count(engine, IdentityPersonRow.__table__) == 1


def test_hospital_and_clinic_ids_join_one_person(engine):
    write(engine, feed.add, japanese("D1"), POLICY)
    write(engine, feed.add, japanese("A1", root=HOSPITAL_A, kana="halfwidth"), POLICY)
    write(engine, feed.add, japanese("B1", root=HOSPITAL_B, kana="hiragana"), POLICY)
    result = write(engine, feed.add, japanese("C1", root=CLINIC, kana="none"), POLICY)
    assert result.link == "demographics"
    assert set(result.linked) == {pid("D1"), pid("A1", HOSPITAL_A), pid("B1", HOSPITAL_B), pid("C1", CLINIC)}
