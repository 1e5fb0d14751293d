"""Consent records and decisions (xds.consent): each model, the hold, the withdrawal, the
validity period, break-glass, implied consent; records per person (shared by linked and merged
ids), append-only with their history; decide() and decide_many() read in the caller's
transaction. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from tests.test_identity_data import DOMAIN, HOSPITAL_A, japanese, pid
from xds.config import Settings
from xds.consent import record, store
from xds.consent.decision import decide, decide_many, evaluate
from xds.consent.policy import ConsentPolicy, facility_id
from xds.consent.record import ConsentError, ConsentState
from xds.identity import feed
from xds.identity.policy import IdentityPolicy
from xds.model.person import PatientRecord
from xds.security.caller import CE, XUser
from xds.store import db
from xds.store.tables import ConsentRecordRow

NOW = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)
CLINIC_A, CLINIC_B, CLINIC_C = "1.2.392.100.1", "1.2.392.100.2", "1.2.392.100.3"
POLICY = ConsentPolicy(enabled=True)
BREAK_GLASS = ConsentPolicy.from_settings(Settings(access_control="consent", consent_break_glass=True))
EMERGENCY = CE("ETREAT", "2.16.840.1.113883.5.8")
TREATMENT = CE("TREAT", "2.16.840.1.113883.5.8")
IDENTITY = IdentityPolicy.from_settings(Settings(affinity_domain=DOMAIN, pix_linking_rules="identifier"),
                                        clock=lambda: NOW)


def user(name_id: str = "tanaka@clinic-a.example", subject_id: str = "田中 一郎", purposes=()) -> XUser:
    return XUser(name_id, "https://idp.example", subject_id=subject_id, organization_id=f"urn:oid:{CLINIC_A}",
                 purposes_of_use=tuple(purposes))


# --- the models, without a database -----------------------------------------------------------


def allowed(state, facility=CLINIC_A, who=None, purposes=(), at=NOW, policy=POLICY) -> bool:
    return evaluate(state, facility, who, purposes, at, policy).allowed


def test_blanket_allows_every_facility_but_those_excluded():
    state = record.grant(ConsentState(), "blanket", excluded=[CLINIC_B])
    assert allowed(state, CLINIC_A) and allowed(state, CLINIC_C)
    assert not allowed(state, CLINIC_B)
    assert evaluate(state, CLINIC_B, None, (), NOW, POLICY).reason == f"facility {CLINIC_B} is excluded"


def test_per_facility_allows_the_facilities_listed_and_grants_add_up():
    state = record.grant(ConsentState(), "facility", facilities=[CLINIC_A])
    assert allowed(state, CLINIC_A) and not allowed(state, CLINIC_B)
    state = record.grant(state, "facility", facilities=[f"urn:oid:{CLINIC_B}"])  # one facility at a time
    assert state.facilities == (CLINIC_A, CLINIC_B)
    assert allowed(state, CLINIC_B) and not allowed(state, CLINIC_C)


def test_an_exclusion_takes_a_facility_off_whatever_the_model_and_a_grant_puts_it_back():
    state = record.exclude(record.grant(ConsentState(), "facility", facilities=[CLINIC_A, CLINIC_B]), [CLINIC_A])
    assert state.facilities == (CLINIC_B,) and state.excluded == (CLINIC_A,)
    assert not allowed(state, CLINIC_A)
    state = record.grant(state, "facility", facilities=[CLINIC_A])
    assert allowed(state, CLINIC_A) and state.excluded == ()


def test_per_person_allows_the_individuals_named_by_name_id_or_subject_id():
    state = record.grant(ConsentState(), "person", individuals=["tanaka@clinic-a.example"])
    assert allowed(state, who=user())
    assert not allowed(state, who=user("suzuki@clinic-a.example", "鈴木"))
    assert not allowed(state, who=None)  # no XUA user: nobody to match
    by_name = record.grant(ConsentState(), "person", individuals=["鈴木"])
    assert allowed(by_name, who=user("suzuki@clinic-a.example", "鈴木"))


def test_implied_consent_allows_until_the_patient_opts_out():
    state = record.grant(ConsentState(), "implied")
    assert allowed(state, CLINIC_C)
    assert not allowed(record.withdraw(state, NOW), CLINIC_C)
    # The network's implied consent: a person with no record at all.
    implied = ConsentPolicy(enabled=True, implied=True)
    assert allowed(None, policy=implied) and not allowed(None, policy=POLICY)


def test_hold_stops_everything_until_released_and_a_grant_keeps_it():
    state = record.hold(record.grant(ConsentState(), "blanket"))
    assert evaluate(state, CLINIC_A, None, (), NOW, POLICY).reason == "viewing on hold"
    assert not allowed(record.grant(state, "facility", facilities=[CLINIC_A]))
    assert allowed(record.release(state))


def test_withdrawal_stops_everything_and_a_new_grant_is_a_new_consent():
    state = record.withdraw(record.grant(ConsentState(), "facility", facilities=[CLINIC_A]), NOW)
    assert not allowed(state, at=NOW + dt.timedelta(days=1))
    again = record.grant(state, "facility", facilities=[CLINIC_B])
    assert again.facilities == (CLINIC_B,) and again.withdrawn_at is None  # not added to the old list
    assert allowed(again, CLINIC_B) and not allowed(again, CLINIC_A)


def test_the_validity_period_is_from_inclusive_to_exclusive():
    start, end = NOW, NOW + dt.timedelta(days=30)
    state = record.grant(ConsentState(), "blanket", valid_from=start, valid_to=end)
    assert not allowed(state, at=start - dt.timedelta(seconds=1))
    assert allowed(state, at=start) and allowed(state, at=end - dt.timedelta(seconds=1))
    assert not allowed(state, at=end)
    with pytest.raises(ConsentError):
        record.grant(ConsentState(), "blanket", valid_from=end, valid_to=start)


def test_no_facility_no_data_whatever_the_consent():
    state = record.grant(ConsentState(), "blanket")
    assert not allowed(state, "")
    assert not evaluate(state, "", user(purposes=[EMERGENCY]), [EMERGENCY], NOW, BREAK_GLASS).allowed


def test_break_glass_needs_the_setting_and_an_emergency_purpose_and_never_beats_a_withdrawal():
    facility_only = record.grant(ConsentState(), "facility", facilities=[CLINIC_B])
    assert not allowed(facility_only, purposes=[EMERGENCY])  # break-glass off
    assert not allowed(facility_only, purposes=[TREATMENT], policy=BREAK_GLASS)
    glass = evaluate(facility_only, CLINIC_A, None, [EMERGENCY], NOW, BREAK_GLASS)
    assert glass.allowed and glass.break_glass
    assert glass.reason.startswith("break-glass for purpose of use ETREAT@2.16.840.1.113883.5.8: facility")
    assert evaluate(None, CLINIC_A, None, ["EMERGENCY"], NOW, BREAK_GLASS).break_glass  # no consent at all
    assert evaluate(record.hold(facility_only), CLINIC_A, None, [EMERGENCY], NOW, BREAK_GLASS).break_glass
    withdrawn = record.withdraw(facility_only, NOW)
    assert not evaluate(withdrawn, CLINIC_A, None, [EMERGENCY], NOW, BREAK_GLASS).allowed
    # Consented access is not break-glass, purpose or not.
    assert not evaluate(facility_only, CLINIC_B, None, [EMERGENCY], NOW, BREAK_GLASS).break_glass


def test_a_purpose_with_a_code_system_matches_that_code_system_only():
    swiss = "EMER@urn:oid:2.16.756.5.30.1.127.3.10.5"
    policy = ConsentPolicy.from_settings(Settings(access_control="consent", consent_break_glass=True,
                                                  consent_break_glass_purposes=swiss))
    assert policy.emergency_purpose([CE("EMER", "2.16.756.5.30.1.127.3.10.5")])
    assert not policy.emergency_purpose([CE("EMER", "2.16.840.1.113883.5.8"), "EMERGENCY"])


def test_settings_are_checked_when_read():
    with pytest.raises(ValueError, match="access_control"):
        ConsentPolicy.from_settings(Settings(access_control="strict"))
    with pytest.raises(ValueError, match="facility_certificates"):
        ConsentPolicy.from_settings(Settings(facility_certificates="CN=clinic-a"))
    with pytest.raises(ValueError, match="consent_bppc_policies"):
        ConsentPolicy.from_settings(Settings(consent_bppc_policies="1.2.3=everybody"))
    policy = ConsentPolicy.from_settings(Settings(
        facility_certificates="CN=clinic-a,O=Kagawa=urn:oid:1.2.392.100.1\nCN=clinic-b,O=Kagawa=1.2.392.100.2",
        consent_bppc_policies="1.9.1=blanket; 1.9.2=facility:1.2.392.100.1,1.2.392.100.2; 1.9.9=withdraw"))
    assert policy.certificates == {"CN=clinic-a,O=Kagawa": CLINIC_A, "CN=clinic-b,O=Kagawa": CLINIC_B}
    assert policy.bppc["1.9.2"].facilities == (CLINIC_A, CLINIC_B) and policy.bppc["1.9.9"].action == "withdraw"
    assert facility_id(" urn:oid:1.2.3 ") == facility_id("URN:OID:1.2.3") == "1.2.3"


# --- the records, per person, append-only ------------------------------------------------------


def fed(engine, *records: PatientRecord) -> None:
    with db.write_session(engine) as session:
        for patient in records:
            feed.add(session, patient, IDENTITY)


def change(engine, patient: str, action: str, **values):
    with db.write_session(engine) as session:
        return store.change(session, patient, action, POLICY, at=values.pop("at", NOW),
                            recorded_by=values.pop("by", "consent desk"), reason=values.pop("reason", ""),
                            source="test", **values)


def decision(engine, patient: str, facility=CLINIC_A, who=None, purposes=(), at=NOW, policy=POLICY):
    with db.make_sessionmaker(engine)() as session:
        person = store.persons_of(session, [patient])[patient]
        return decide(session, person, facility, who, purposes, at, policy)


def test_a_consent_follows_the_person_across_its_linked_ids(engine):
    hospital_id = pid("H-77", HOSPITAL_A)
    fed(engine, japanese("P1"), japanese("H-77", root=HOSPITAL_A, other_ids=(pid("P1"),)))
    change(engine, hospital_id.cx, "grant", model="facility", facilities=[CLINIC_A])  # recorded by another id
    assert decision(engine, pid("P1").cx).allowed
    assert decision(engine, hospital_id.cx).allowed
    assert not decision(engine, pid("P1").cx, CLINIC_B).allowed


def test_a_merged_id_has_its_survivors_consent(engine):
    fed(engine, japanese("S1"), japanese("M1", "sato"))
    change(engine, pid("S1").cx, "grant", model="blanket")
    assert not decision(engine, pid("M1").cx).allowed
    with db.write_session(engine) as session:
        feed.merge(session, PatientRecord(ids=[pid("S1")]), pid("M1"), IDENTITY)
    assert decision(engine, pid("M1").cx).allowed


def test_records_are_appended_never_changed_and_keep_who_when_why_and_source(engine):
    fed(engine, japanese("P1"))
    first = change(engine, pid("P1").cx, "grant", model="blanket", by="窓口 佐藤", reason="signed the form")
    change(engine, pid("P1").cx, "exclude", facilities=[CLINIC_B], at=NOW + dt.timedelta(hours=1))
    change(engine, pid("P1").cx, "hold", at=NOW + dt.timedelta(hours=2))
    change(engine, pid("P1").cx, "withdraw", at=NOW + dt.timedelta(hours=3), reason="moved away")
    with db.make_sessionmaker(engine)() as session:
        history = store.history(session, first.person_id)
        assert session.scalar(select(func.count()).select_from(ConsentRecordRow)) == 4
    assert [r.action for r in history] == ["grant", "exclude", "hold", "withdraw"]
    assert history[0] == first  # as written, untouched by the changes after it
    assert (history[0].recorded_by, history[0].reason, history[0].source) == ("窓口 佐藤", "signed the form", "test")
    assert history[0].state == ConsentState("blanket")
    assert history[1].state.excluded == (CLINIC_B,) and not history[1].state.on_hold
    assert history[2].state.on_hold and history[2].state.withdrawn_at is None
    assert history[3].state.withdrawn_at == NOW + dt.timedelta(hours=3) and history[3].reason == "moved away"
    assert [r.recorded_at for r in history] == [NOW + dt.timedelta(hours=h) for h in range(4)]


def test_each_change_builds_on_the_latest_record(engine):
    fed(engine, japanese("P1"))
    for facility in (CLINIC_A, CLINIC_B, CLINIC_C):
        change(engine, pid("P1").cx, "grant", model="facility", facilities=[facility])
    assert all(decision(engine, pid("P1").cx, f).allowed for f in (CLINIC_A, CLINIC_B, CLINIC_C))
    change(engine, pid("P1").cx, "exclude", facilities=[CLINIC_B])
    assert [decision(engine, pid("P1").cx, f).allowed for f in (CLINIC_A, CLINIC_B, CLINIC_C)] == [True, False, True]


def test_changes_that_cannot_be_made_store_nothing(engine):
    fed(engine, japanese("P1"))
    with pytest.raises(ConsentError, match="not known to the PIX Manager"):
        change(engine, pid("NOBODY").cx, "grant", model="blanket")
    with pytest.raises(ConsentError, match="facilities allowed"):
        change(engine, pid("P1").cx, "grant", model="facility")
    with pytest.raises(ConsentError, match="no consent model"):
        change(engine, pid("P1").cx, "grant", model="everyone")
    with db.make_sessionmaker(engine)() as session:
        assert session.scalar(select(func.count()).select_from(ConsentRecordRow)) == 0


def test_decide_many_reads_every_persons_latest_record_together(engine):
    fed(engine, japanese("P1"), japanese("P2", "sato"), japanese("P3", "saito_old"), japanese("P4", "yoshida_bmp2"))
    change(engine, pid("P1").cx, "grant", model="blanket")
    change(engine, pid("P2").cx, "grant", model="facility", facilities=[CLINIC_B])
    change(engine, pid("P3").cx, "grant", model="person", individuals=["tanaka@clinic-a.example"])
    with db.make_sessionmaker(engine)() as session:
        persons = store.persons_of(session, [pid(e).cx for e in ("P1", "P2", "P3", "P4", "UNFED")])
        assert persons[pid("UNFED").cx] is None
        decisions = decide_many(session, persons.values(), CLINIC_A, user(), (), NOW, POLICY)
    assert {e: decisions[persons[pid(e).cx]].allowed for e in ("P1", "P2", "P3", "P4", "UNFED")} == {
        "P1": True, "P2": False, "P3": True, "P4": False, "UNFED": False}
    assert decisions[persons[pid("P4").cx]].reason == "no consent recorded"


def test_a_withdrawal_is_seen_by_the_next_decision(engine):
    fed(engine, japanese("P1"))
    change(engine, pid("P1").cx, "grant", model="blanket")
    assert decision(engine, pid("P1").cx).allowed
    change(engine, pid("P1").cx, "withdraw")
    assert decision(engine, pid("P1").cx).reason.startswith("consent withdrawn at 2026-06-01T09:00:00")


def test_break_glass_is_decided_from_the_record(engine):
    fed(engine, japanese("P1"))
    change(engine, pid("P1").cx, "grant", model="facility", facilities=[CLINIC_B])
    glass = decision(engine, pid("P1").cx, who=user(purposes=[EMERGENCY]), purposes=[EMERGENCY], policy=BREAK_GLASS)
    assert glass.allowed and glass.break_glass
    assert not decision(engine, pid("P1").cx, purposes=[EMERGENCY]).allowed  # break-glass off


# --- domain knowledge (PatientAccess.sees_domain) ---------------------------------------------------

#: Consents as chains of changes, each of which allows or denies some request below.
CHAINS = {
    "none": [],
    "blanket": [("grant", dict(model="blanket"))],
    "blanket without A": [("grant", dict(model="blanket", excluded=[CLINIC_A]))],
    "to A": [("grant", dict(model="facility", facilities=[CLINIC_A]))],
    "to B": [("grant", dict(model="facility", facilities=[CLINIC_B]))],
    "to A, A excluded": [("grant", dict(model="facility", facilities=[CLINIC_A])),
                         ("exclude", dict(facilities=[CLINIC_A]))],
    "to a person": [("grant", dict(model="person", individuals=["tanaka@clinic-a.example"]))],
    "to another person": [("grant", dict(model="person", individuals=["sato@clinic-b.example"]))],
    "implied": [("grant", dict(model="implied"))],
    "held": [("grant", dict(model="blanket")), ("hold", {})],
    "withdrawn": [("grant", dict(model="blanket")), ("withdraw", {})],
    "ended": [("grant", dict(model="blanket", valid_to=NOW - dt.timedelta(days=1)))],
    "not yet": [("grant", dict(model="blanket", valid_from=NOW + dt.timedelta(days=1)))],
}
IMPLIED_POLICY = ConsentPolicy.from_settings(Settings(access_control="consent", consent_implied=True))


def test_a_domain_is_known_to_a_request_exactly_when_it_may_see_one_of_its_ids(engine):
    """sees_domain narrows in SQL (store.might_allow) before deciding: it must never leave out a
    consent that would allow, whatever the model, the network's policy or the purpose."""
    from xds.consent.access import PatientAccess

    roots = {name: f"1.2.392.100.50.{n}" for n, name in enumerate(CHAINS)}
    fed(engine, *(japanese(f"D{n}", root=roots[name]) for n, name in enumerate(CHAINS)))
    for n, (name, chain) in enumerate(CHAINS.items()):
        for action, values in chain:
            change(engine, pid(f"D{n}", roots[name]).cx, action, **values)
    requests = [(POLICY, user(), ()), (POLICY, None, ()), (IMPLIED_POLICY, user(), ()),
                (BREAK_GLASS, user(purposes=[EMERGENCY]), [EMERGENCY]), (BREAK_GLASS, user(), [TREATMENT])]
    checked = set()
    with db.make_sessionmaker(engine)() as session:
        for policy, who, _ in requests:
            for facility in (CLINIC_A, ""):
                for n, name in enumerate(CHAINS):
                    access = PatientAccess(policy, facility, who, NOW)
                    patient = pid(f"D{n}", roots[name]).cx
                    expected = bool(access.visible(session, [patient]))
                    assert PatientAccess(policy, facility, who, NOW).sees_domain(session, roots[name]) is expected, \
                        (name, policy, facility, who)
                    checked.add(expected)
    assert checked == {True, False}


def test_a_revoked_documents_grants_are_replayed_away_and_the_rest_kept(engine):
    """store.revoke over a history with grants, an exclusion, a hold and a release around the
    revoked source's grants (as the BPPC hooks call it)."""
    fed(engine, japanese("P1"))
    patient = pid("P1").cx

    def by(source: str, action: str, **values):
        with db.write_session(engine) as session:
            store.change(session, patient, action, POLICY, at=NOW, recorded_by="t", reason="", source=source,
                         **values)

    by("cli", "grant", model="facility", facilities=[CLINIC_A])
    by("bppc:1", "grant", model="facility", facilities=[CLINIC_B])     # adds B
    by("cli", "hold")
    by("cli", "grant", model="facility", facilities=[CLINIC_C])         # adds C
    by("cli", "exclude", facilities=[CLINIC_A])
    by("cli", "release")
    with db.write_session(engine) as session:
        person = store.persons_of(session, [patient])[patient]
        revoked = store.revoke(session, person, patient, "bppc:1", POLICY, at=NOW, recorded_by="registry",
                               reason="gone")
        again = store.revoke(session, person, patient, "bppc:1", POLICY, at=NOW, recorded_by="registry",
                             reason="gone")
        never = store.revoke(session, person, patient, "bppc:2", POLICY, at=NOW, recorded_by="registry",
                             reason="granted nothing")
    assert (again, never) == (None, None)
    assert revoked.action == "revoke" and revoked.source == "bppc:1"
    state = revoked.state
    assert (state.model, state.facilities, state.excluded, state.on_hold) == ("facility", (CLINIC_C,), (CLINIC_A,),
                                                                              False)
