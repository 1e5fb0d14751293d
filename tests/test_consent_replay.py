"""Consent records keep what each change asked (consent_record.arguments, migration 0009), so a
BPPC document's grants are replayed away (revoke) and back (reinstate) exactly; records written
before 0009 have none and are replayed by the difference each made, as before. On SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import func, insert, inspect, select

from tests.test_identity_data import DOMAIN, japanese, pid
from xds.config import Settings
from xds.consent import record, store
from xds.consent.policy import ConsentPolicy
from xds.consent.record import ConsentState
from xds.identity import feed
from xds.identity.policy import IdentityPolicy
from xds.store import db
from xds.store.tables import ConsentRecordRow

NOW = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)
POLICY = ConsentPolicy(enabled=True)
IDENTITY = IdentityPolicy.from_settings(Settings(affinity_domain=DOMAIN))
CLINIC_A, CLINIC_B, CLINIC_C = "1.2.392.100.1", "1.2.392.100.2", "1.2.392.100.3"
R = ConsentRecordRow.__table__
#: The columns of consent_record at revision 0008 (all but `arguments`).
COLUMNS_0008 = [c.name for c in R.columns if c.name not in ("id", "arguments")]


def _written_at_0008(session, person: int, patient: str, action: str, state: ConsentState, source: str,
                     reason: str = "") -> None:
    """A record as the code of revision 0008 wrote it: the consent it left, nothing of what was asked."""
    values = dict(person_id=person, patient_id=patient, action=action, model=state.model,
                  facilities=json.dumps(list(state.facilities)), excluded=json.dumps(list(state.excluded)),
                  individuals=json.dumps(list(state.individuals)), valid_from=state.valid_from,
                  valid_to=state.valid_to, on_hold=state.on_hold, withdrawn_at=state.withdrawn_at, recorded_at=NOW,
                  recorded_by="desk", reason=reason, source=source)
    assert sorted(values) == sorted(COLUMNS_0008)
    session.execute(insert(R).values(**values))


def _person(session, patient: str) -> int:
    return store.persons_of(session, [patient])[patient]


def test_an_upgrade_from_0008_keeps_the_records_and_replays_them_as_before(database_url):
    db.upgrade(database_url, "0008")
    engine = db.make_engine(database_url)
    p1, p2, p3 = (pid(e).cx for e in ("P1", "P2", "P3"))
    try:
        with db.write_session(engine) as session:
            for extension, who in (("P1", "yamada"), ("P2", "sato"), ("P3", "saito_old")):
                feed.add(session, japanese(extension, who), IDENTITY)
            one, two, three = (_person(session, p) for p in (p1, p2, p3))
            to_c = record.grant(ConsentState(), "facility", facilities=[CLINIC_C])
            with_a = record.grant(to_c, "facility", facilities=[CLINIC_A])
            _written_at_0008(session, one, p1, "grant", to_c, "cli")
            _written_at_0008(session, one, p1, "grant", with_a, "bppc:1")
            # A grant naming A again and adding B: kept as the state it left alone.
            _written_at_0008(session, one, p1, "grant",
                             record.grant(with_a, "facility", facilities=[CLINIC_A, CLINIC_B]), "cli")
            # Documents revoked at 0008: one deprecated, one deleted (their reasons say which).
            for person, patient, source, ended in ((two, p2, "bppc:7", "deprecated: status changed to Deprecated "
                                                    "(ITI-57 Update Document Set)"),
                                                   (three, p3, "bppc:8", "deleted (ITI-62 Delete Document Set)")):
                _written_at_0008(session, person, patient, "grant", record.grant(ConsentState(), "blanket"), source)
                _written_at_0008(session, person, patient, "revoke", ConsentState(), source,
                                 f"BPPC consent document {source[5:]} {ended}")
        rows_0008 = select(R.c.id, *(R.c[name] for name in COLUMNS_0008)).order_by(R.c.id)
        with engine.connect() as connection:
            before = connection.execute(rows_0008).all()
        engine.dispose()

        db.upgrade(database_url)
        assert "arguments" in {c["name"] for c in inspect(engine).get_columns("consent_record")}
        engine.dispose()
        with db.make_sessionmaker(engine)() as session:
            assert session.execute(rows_0008).all() == before
            assert session.scalar(select(func.count()).where(R.c.arguments.is_(None))) == len(before) == 7
            assert [r.state.facilities for r in store.history(session, one)] == [
                (CLINIC_C,), (CLINIC_C, CLINIC_A), (CLINIC_C, CLINIC_A, CLINIC_B)]

        with db.write_session(engine) as session:
            revoked = store.revoke(session, one, p1, "bppc:1", POLICY, at=NOW, recorded_by="t", reason="gone")
        # Replayed as before 0009: the later grant made again by the difference it made (B),
        # so A, which it named again, is lost (the safe side).
        assert (revoked.state.model, revoked.state.facilities) == ("facility", (CLINIC_C, CLINIC_B))
        assert store.asked(revoked) == {"action": "revoke", "ended": "deprecated"}
        with db.write_session(engine) as session:
            back = store.reinstate(session, one, p1, "bppc:1", POLICY, at=NOW, recorded_by="t", reason="back")
            deprecated = store.reinstate(session, two, p2, "bppc:7", POLICY, at=NOW, recorded_by="t", reason="back")
            deleted = store.reinstate(session, three, p3, "bppc:8", POLICY, at=NOW, recorded_by="t", reason="back")
        assert back.action == "reinstate" and back.state.facilities == (CLINIC_C, CLINIC_A, CLINIC_B)
        assert deprecated.state.model == "blanket"
        assert deleted is None  # a document deleted at 0008 cannot come back either

        # and back down: the records stay, without what the new ones asked
        db.downgrade(database_url, "0008")
        assert "arguments" not in {c["name"] for c in inspect(engine).get_columns("consent_record")}
        engine.dispose()
        with engine.connect() as connection:
            assert connection.scalar(select(func.count()).select_from(R)) == 10
    finally:
        engine.dispose()


def _change(engine, patient: str, source: str, action: str, **values) -> store.ConsentRecord:
    with db.write_session(engine) as session:
        return store.change(session, patient, action, POLICY, at=NOW, recorded_by="t", reason="", source=source,
                            **values)


def _revoke(engine, patient: str, source: str, ended=store.DEPRECATED) -> store.ConsentRecord | None:
    with db.write_session(engine) as session:
        return store.revoke(session, _person(session, patient), patient, source, POLICY, at=NOW, recorded_by="t",
                            reason="", ended=ended)


def _reinstate(engine, patient: str, source: str) -> store.ConsentRecord | None:
    with db.write_session(engine) as session:
        return store.reinstate(session, _person(session, patient), patient, source, POLICY, at=NOW,
                               recorded_by="t", reason="")


def test_the_replay_makes_each_change_again_as_it_was_asked(engine):
    with db.write_session(engine) as session:
        feed.add(session, japanese("P1"), IDENTITY)
    patient = pid("P1").cx
    _change(engine, patient, "bppc:1", "grant", model="facility", facilities=[CLINIC_A],
            valid_to=NOW + dt.timedelta(days=30))
    _change(engine, patient, "cli", "grant", model="facility", facilities=[CLINIC_A, CLINIC_B])
    _change(engine, patient, "bppc:2", "grant", model="facility", facilities=[CLINIC_C])
    _change(engine, patient, "cli", "exclude", facilities=[CLINIC_B])
    revoked = _revoke(engine, patient, "bppc:1")
    # As if bppc:1 had never granted: the desk's grant is a new consent to A and B (no period),
    # bppc:2 adds C, the exclusion takes B off.
    assert revoked.state == ConsentState("facility", facilities=(CLINIC_A, CLINIC_C), excluded=(CLINIC_B,))
    assert _revoke(engine, patient, "bppc:2").state == ConsentState("facility", facilities=(CLINIC_A,),
                                                                    excluded=(CLINIC_B,))
    # bppc:1 back, bppc:2 still revoked: its period comes back, the desk's grant keeps it.
    assert _reinstate(engine, patient, "bppc:1").state == ConsentState(
        "facility", facilities=(CLINIC_A,), excluded=(CLINIC_B,), valid_to=NOW + dt.timedelta(days=30))
    assert _reinstate(engine, patient, "bppc:1") is None  # it grants already
    assert _reinstate(engine, patient, "cli") is None  # never revoked


def test_a_deleted_documents_grants_never_come_back_and_its_uniqueid_registered_again_grants(engine):
    with db.write_session(engine) as session:
        feed.add(session, japanese("P1"), IDENTITY)
    patient = pid("P1").cx
    _change(engine, patient, "bppc:9", "grant", model="facility", facilities=[CLINIC_A])
    assert _revoke(engine, patient, "bppc:9", store.DELETED).state.model == "none"
    assert _reinstate(engine, patient, "bppc:9") is None
    # A new document with the deleted one's uniqueId: its grants hold, the old one's do not.
    assert _change(engine, patient, "bppc:9", "grant", model="facility", facilities=[CLINIC_B]).state.facilities \
        == (CLINIC_B,)
    assert _reinstate(engine, patient, "bppc:9") is None
    assert _revoke(engine, patient, "bppc:9").state.model == "none"
    assert _reinstate(engine, patient, "bppc:9").state == ConsentState("facility", facilities=(CLINIC_B,))
