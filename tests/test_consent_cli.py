"""`xds consent` (xds.consent.command): grant, exclude, hold, withdraw, show and review, run
in-process as the command runs, on SQLite and PostgreSQL; and BPPC consent documents registered
through XDS (xds.consent.bppc), which update the record in the registration's transaction."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from tests import queries as q
from tests import submissions as s
from tests.test_identity_data import DOMAIN, HOSPITAL_A, japanese, pid
from xds.config import Settings
from xds.consent import store
from xds.consent.bppc import BppcConsents, hook
from xds.consent.policy import ConsentPolicy
from xds.identity import feed
from xds.identity.directory import IdentityDirectory
from xds.identity.policy import IdentityPolicy
from xds.registry.register import DocumentRegistry
from xds.store import db
from xds.store.tables import ConsentRecordRow

CLINIC_A, CLINIC_B = "1.2.392.100.1", "1.2.392.100.2"


@pytest.fixture
def xds_environment():
    """`xds ...` (the fixture of tests/conftest.py) with the affinity domain and access control on."""
    return {"XDS_AFFINITY_DOMAIN": DOMAIN, "XDS_ACCESS_CONTROL": "consent"}


def test_each_change_prints_the_consent_it_left_and_show_prints_the_history(xds):
    patient, hospital_id = pid("P1").cx, pid("H-1", HOSPITAL_A).cx
    assert xds("patients", "add", patient, "--family", "山田", "--given", "太郎").code == 0
    assert xds("patients", "add", hospital_id).code == 0
    assert xds("patients", "link", patient, hospital_id).code == 0
    steps = [
        (("grant", patient, "--by", "受付 佐藤", "--reason", "signed the network's form"), "blanket"),
        (("grant", hospital_id, "--facility", CLINIC_A), f"facility; facilities {CLINIC_A}"),
        (("grant", patient, "--facility", f"urn:oid:{CLINIC_B}"), f"facilities {CLINIC_A}, {CLINIC_B}"),
        (("exclude", patient, CLINIC_A), f"facilities {CLINIC_B}; excluding {CLINIC_A}"),
        (("hold", patient), "ON HOLD"),
        (("hold", patient, "--release"), f"facilities {CLINIC_B}; excluding {CLINIC_A}"),
        (("withdraw", patient, "--reason", "moved away"), "WITHDRAWN"),
    ]
    for argv, shown in steps:
        run = xds("consent", *argv)
        assert run.code == 0 and shown in run.out, (argv, run)
    run = xds("consent", "show", hospital_id)  # any id of the person
    assert run.code == 0
    assert patient in run.out and hospital_id in run.out and "consent now: facility" in run.out
    assert "受付 佐藤" in run.out and "signed the network's form" in run.out and "moved away" in run.out
    history = json.loads(xds("consent", "show", patient, "--json").out)["history"]
    assert [h["action"] for h in history] == ["grant", "grant", "grant", "exclude", "hold", "release", "withdraw"]
    assert history[0]["by"] == "受付 佐藤" and history[1]["patient"] == hospital_id
    assert history[-1]["withdrawn_at"] and all(h["source"] == "cli" for h in history)
    assert history[2]["asked"] == {"action": "grant", "model": "facility", "facilities": [f"urn:oid:{CLINIC_B}"]}


def test_a_grant_with_a_period_and_person_consent(xds):
    patient = pid("P1").cx
    xds("patients", "add", patient)
    run = xds("consent", "grant", patient, "--person", "tanaka@clinic-a.example", "--from", "2026-04-01",
              "--to", "2027-03-31")
    assert run.code == 0 and "person; individuals tanaka@clinic-a.example" in run.out
    assert "valid 2026-04-01T00:00:00+00:00 to 2027-04-01T00:00:00+00:00" in run.out  # a date: to its end


def test_mistakes_are_answered_in_words_and_store_nothing(xds, engine):
    patient = pid("P1").cx
    xds("patients", "add", patient)
    run = xds("consent", "grant", pid("NOBODY").cx)
    assert run.code == 1 and "not known to the PIX Manager" in run.err
    run = xds("consent", "grant", patient, "--model", "facility")
    assert run.code == 1 and "names the facilities allowed" in run.err
    run = xds("consent", "grant", patient, "--from", "next tuesday")
    assert run.code == 2 and "--from" in run.err
    run = xds("consent", "show", pid("NOBODY").cx)
    assert run.code == 1
    run = xds("consent", "show", patient)
    assert run.code == 0 and "consent now: none recorded" in run.out
    with db.make_sessionmaker(engine)() as session:
        assert session.scalar(select(func.count()).select_from(ConsentRecordRow)) == 0
    assert xds("consent", "review").out.strip() == "No break-glass access."


# --- BPPC ------------------------------------------------------------------------------------------

POLICIES = Settings(access_control="consent", consent_bppc_policies=(
    f"1.2.392.100.9.1=blanket; 1.2.392.100.9.2=facility:{CLINIC_A}; 1.2.392.100.9.8=exclude:{CLINIC_B}; "
    "1.2.392.100.9.9=withdraw"))
BPPC = ("urn:ihe:iti:bppc:2007", "1.3.6.1.4.1.19376.1.2.3", "Basic Patient Privacy Consents")
IDENTITY = IdentityPolicy.from_settings(Settings(affinity_domain=DOMAIN))


def policy_code(code: str) -> tuple[str, str, str]:
    return (code, "1.2.392.100.9", "a policy of the network")


@pytest.fixture
def registry(engine):
    with db.write_session(engine) as session:
        feed.add(session, japanese("P1"), IDENTITY)
    return DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True), patients=IdentityDirectory(),
                            after_store=hook(POLICIES))


def consent_document(*codes: str, format_code=BPPC, start="20260401", stop="20270401") -> str:
    return s.document("consent", s.new_oid(), pid("P1").cx, format_code=format_code,
                      events=[policy_code(c) for c in codes], service_start=start, service_stop=stop,
                      class_code=("57016-8", "2.16.840.1.113883.6.1", "Privacy Policy Acknowledgement Document"))


def history(engine) -> list[store.ConsentRecord]:
    with db.make_sessionmaker(engine)() as session:
        person = store.persons_of(session, [pid("P1").cx])[pid("P1").cx]
        return store.history(session, person)


def test_a_bppc_document_registered_records_the_policies_it_acknowledges(registry, engine):
    registered = q.register(registry, consent_document("1.2.392.100.9.2", "1.2.392.100.9.8", "1.2.392.999.1"),
                            patient=pid("P1").cx)
    unique_id = registered.unique_ids["consent"]
    (granted, excluded) = history(engine)
    assert (granted.action, granted.state.model, granted.state.facilities) == ("grant", "facility", (CLINIC_A,))
    assert granted.state.valid_from.isoformat() == "2026-04-01T00:00:00+00:00"
    assert granted.state.valid_to.isoformat() == "2027-04-01T00:00:00+00:00"
    assert (granted.source, granted.reason) == (f"bppc:{unique_id}", f"BPPC consent document {unique_id}")
    assert granted.recorded_by == s.AUTHOR
    assert excluded.action == "exclude" and excluded.state.excluded == (CLINIC_B,)

    q.register(registry, consent_document("1.2.392.100.9.9"), patient=pid("P1").cx)  # an opt-out document
    assert history(engine)[-1].state.withdrawn_at is not None


def test_documents_that_are_no_bppc_consent_of_a_configured_policy_change_nothing(registry, engine):
    q.register(registry, consent_document("1.2.392.100.9.1", format_code=s.FORMAT), patient=pid("P1").cx)
    q.register(registry, consent_document("1.2.392.999.1"), patient=pid("P1").cx)
    assert history(engine) == []
    plain = DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True), patients=IdentityDirectory(),
                             after_store=hook(Settings()))
    assert plain.after_store is None  # no policy configured: registrations do nothing more
    q.register(plain, consent_document("1.2.392.100.9.1"), patient=pid("P1").cx)
    assert history(engine) == []


def test_a_consent_that_cannot_be_recorded_undoes_the_registration(engine):
    with db.write_session(engine) as session:
        feed.add(session, japanese("P1"), IDENTITY)

    class Broken(BppcConsents):
        def __call__(self, session, submission):
            super().__call__(session, submission)
            raise RuntimeError("the consent store is unreachable")

    registry = DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True), patients=IdentityDirectory(),
                                after_store=Broken(ConsentPolicy.from_settings(POLICIES)))
    with pytest.raises(RuntimeError):
        q.register(registry, consent_document("1.2.392.100.9.1"), patient=pid("P1").cx)
    assert history(engine) == []
    with db.make_sessionmaker(engine)() as session:
        assert store.consents_of(session, [pid("P1").cx])[pid("P1").cx][1] is None
    answer = q.find_documents(service_stored_query(registry), patient=pid("P1").cx)
    assert answer.ids == []  # nothing half-stored: the document went with its consent


def service_stored_query(registry):
    from xds.registry import service

    return service.stored_query_for(registry)
