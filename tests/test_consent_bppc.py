"""A BPPC consent document that is deprecated or deleted no longer grants its consent
(xds.consent.bppc, xds.consent.store.revoke): replaced by a registration (RPLC, ITI-42), made
Deprecated by an update (ITI-57), deleted (ITI-62). Each leaves a record (action "revoke",
source "bppc:<uniqueId>", the reason naming the transaction) whose consent is the person's
record without that document's grants, each later change made again as it was asked; what the
document forbade stays. Made Approved again (ITI-57), a deprecated one grants again (a record
"reinstate"); a deleted one cannot come back. Through the registry's own steps
(DocumentRegistry, UpdateDocumentSet.of, DeleteDocumentSet.of, as the server wires them), on
SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from tests import queries as q
from tests import submissions as s
from tests.test_identity_data import DOMAIN, japanese, pid
from tests.test_registry_update import DEPRECATED, APPROVED, status_change, update
from xds.config import Settings
from xds.consent import store
from xds.consent.bppc import hook
from xds.consent.decision import decide
from xds.consent.policy import ConsentPolicy
from xds.identity import feed
from xds.identity.directory import IdentityDirectory
from xds.identity.policy import IdentityPolicy
from xds.registry.register import DocumentRegistry
from xds.registry.remove import DeleteDocumentSet
from xds.store import db
from xds.store.tables import AssociationRow

CLINIC_A, CLINIC_B, CLINIC_C = "1.2.392.100.1", "1.2.392.100.2", "1.2.392.100.3"
SETTINGS = Settings(access_control="consent", consent_bppc_policies=(
    f"1.2.392.100.9.1=blanket; 1.2.392.100.9.2=facility:{CLINIC_A}; 1.2.392.100.9.3=facility:{CLINIC_C}; "
    f"1.2.392.100.9.8=exclude:{CLINIC_B}; 1.2.392.100.9.9=withdraw"))
POLICY = ConsentPolicy.from_settings(SETTINGS)
BPPC = ("urn:ihe:iti:bppc:2007", "1.3.6.1.4.1.19376.1.2.3", "Basic Patient Privacy Consents")
PATIENT = pid("P1").cx
BLANKET, TO_A, TO_C, EXCLUDE_B, WITHDRAW = (f"1.2.392.100.9.{n}" for n in (1, 2, 3, 8, 9))


@pytest.fixture
def registry(engine):
    with db.write_session(engine) as session:
        feed.add(session, japanese("P1"), IdentityPolicy.from_settings(Settings(affinity_domain=DOMAIN)))
    return DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True), patients=IdentityDirectory(),
                            after_store=hook(SETTINGS))


def consent_document(doc_id: str, *policies: str) -> str:
    return s.document(doc_id, s.new_oid(), PATIENT, format_code=BPPC, service_start=None, service_stop=None,
                      events=[(p, "1.2.392.100.9", "a policy of the network") for p in policies],
                      class_code=("57016-8", "2.16.840.1.113883.6.1", "Privacy Policy Acknowledgement Document"))


def history(engine) -> list[store.ConsentRecord]:
    with db.make_sessionmaker(engine)() as session:
        return store.history(session, store.persons_of(session, [PATIENT])[PATIENT])


def now_state(engine):
    return history(engine)[-1].state


def allowed(engine, facility: str) -> bool:
    with db.make_sessionmaker(engine)() as session:
        person = store.persons_of(session, [PATIENT])[PATIENT]
        return decide(session, person, facility, None, (), dt.datetime.now(dt.UTC), POLICY).allowed


def by_desk(engine, action: str, **values) -> None:
    with db.write_session(engine) as session:
        store.change(session, PATIENT, action, POLICY, at=dt.datetime.now(dt.UTC), recorded_by="consent desk",
                     reason="", source="cli", **values)


def delete_submission(registry, registered: q.Registered, doc_id: str):
    """ITI-62 of the document, its SubmissionSet and the HasMember between them."""
    with registry.sessions() as session:
        member = session.scalars(select(AssociationRow.entry_uuid).where(
            AssociationRow.source == registered["ss"], AssociationRow.target == registered[doc_id])).one()
    from tests.test_registry_remove import request
    return DeleteDocumentSet.of(registry).delete(request(registered[doc_id], member, registered["ss"]))


def test_a_replaced_consent_document_no_longer_grants_and_its_replacement_does(registry, engine):
    first = q.register(registry, consent_document("consent", TO_A), patient=PATIENT)
    assert now_state(engine).facilities == (CLINIC_A,)
    second = q.register(registry, consent_document("consent2", TO_C),
                        s.association("rplc", "RPLC", "consent2", first["consent"]), patient=PATIENT)
    granted, revoked, replacement = history(engine)
    old, new = first.unique_ids["consent"], second.unique_ids["consent2"]
    assert (revoked.action, revoked.source) == ("revoke", f"bppc:{old}")
    assert revoked.reason == (f"BPPC consent document {old} deprecated: replaced (RPLC) by document {new} of "
                              f"submission set {second.unique_ids['ss']} (ITI-42 Register Document Set-b)")
    assert revoked.state.model == "none" and revoked.state.facilities == ()
    # Without the revocation the new grant would have added to the old one (a grant to the
    # model in force adds its facilities).
    assert (replacement.source, replacement.state.facilities) == (f"bppc:{new}", (CLINIC_C,))
    assert allowed(engine, CLINIC_C) and not allowed(engine, CLINIC_A)


def test_a_consent_document_deprecated_by_an_update_no_longer_grants(registry, engine):
    by_desk(engine, "grant", model="facility", facilities=[CLINIC_C])
    registered = q.register(registry, consent_document("consent", BLANKET), patient=PATIENT)
    by_desk(engine, "exclude", facilities=[CLINIC_B])  # a later restriction stays
    assert allowed(engine, CLINIC_A) and not allowed(engine, CLINIC_B)
    result = update(registry, status_change(registered["consent"], APPROVED, DEPRECATED), patient=PATIENT)
    assert result.status.endswith(":Success"), [str(e) for e in result.errors]
    revoked = history(engine)[-1]
    unique_id = registered.unique_ids["consent"]
    assert (revoked.action, revoked.source, revoked.recorded_by) == ("revoke", f"bppc:{unique_id}",
                                                                     "ITI-57 Update Document Set")
    assert revoked.reason == (f"BPPC consent document {unique_id} deprecated: status changed to Deprecated "
                              "(ITI-57 Update Document Set)")
    # The consent before the document, with what came after it.
    assert (revoked.state.model, revoked.state.facilities, revoked.state.excluded) == ("facility", (CLINIC_C,),
                                                                                       (CLINIC_B,))
    assert allowed(engine, CLINIC_C) and not allowed(engine, CLINIC_A) and not allowed(engine, CLINIC_B)

    # A document revoked already is not revoked again (its deletion, say, after its deprecation).
    with db.write_session(engine) as session:
        hook(SETTINGS).removed(session, [registered["consent"]], "ITI-62 Delete Document Set")
    assert [r.action for r in history(engine)].count("revoke") == 1


def test_a_deleted_consent_document_no_longer_grants(registry, engine):
    by_desk(engine, "grant", model="facility", facilities=[CLINIC_C])
    registered = q.register(registry, consent_document("consent", TO_A), patient=PATIENT)
    assert now_state(engine).facilities == (CLINIC_C, CLINIC_A)
    result = delete_submission(registry, registered, "consent")
    assert result.status.endswith(":Success"), [str(e) for e in result.errors]
    revoked = history(engine)[-1]
    unique_id = registered.unique_ids["consent"]
    assert (revoked.action, revoked.source) == ("revoke", f"bppc:{unique_id}")
    assert revoked.reason == f"BPPC consent document {unique_id} deleted (ITI-62 Delete Document Set)"
    assert revoked.state.facilities == (CLINIC_C,)
    assert allowed(engine, CLINIC_C) and not allowed(engine, CLINIC_A)


def test_a_later_withdrawal_stays_and_earlier_revocations_stay_revoked(registry, engine):
    blanket = q.register(registry, consent_document("consent", BLANKET), patient=PATIENT)
    to_a = q.register(registry, consent_document("consent", TO_A), patient=PATIENT)
    update(registry, status_change(blanket["consent"], APPROVED, DEPRECATED), patient=PATIENT)
    assert now_state(engine).facilities == (CLINIC_A,) and not allowed(engine, CLINIC_C)
    by_desk(engine, "withdraw")
    delete_submission(registry, to_a, "consent")
    last = history(engine)[-1]
    # Neither document grants any more; the withdrawal stands.
    assert last.action == "revoke" and last.state.model == "none" and last.state.withdrawn_at is not None
    assert not allowed(engine, CLINIC_A)


def test_what_a_document_forbade_stays_and_other_documents_change_nothing(registry, engine):
    q.register(registry, consent_document("consent", BLANKET), patient=PATIENT)
    opt_out = q.register(registry, consent_document("consent", WITHDRAW, EXCLUDE_B), patient=PATIENT)
    before = history(engine)
    assert delete_submission(registry, opt_out, "consent").status.endswith(":Success")
    assert history(engine) == before  # it granted nothing: a deleted opt-out does not reopen the record
    assert not allowed(engine, CLINIC_A)

    letter = q.register(registry, s.document("letter", s.new_oid(), PATIENT), patient=PATIENT)
    update(registry, status_change(letter["letter"], APPROVED, DEPRECATED), patient=PATIENT)
    assert history(engine) == before


# --- exact replay (the records keep what each change asked) --------------------------------------


def test_a_later_grant_naming_again_what_a_revoked_document_granted_keeps_it(registry, engine):
    registered = q.register(registry, consent_document("consent", TO_A), patient=PATIENT)
    by_desk(engine, "grant", model="facility", facilities=[CLINIC_A, CLINIC_C])  # names A again, adds C
    by_desk(engine, "hold")
    by_desk(engine, "exclude", facilities=[CLINIC_B])
    by_desk(engine, "release")
    assert now_state(engine).facilities == (CLINIC_A, CLINIC_C)
    update(registry, status_change(registered["consent"], APPROVED, DEPRECATED), patient=PATIENT)
    revoked = history(engine)[-1]
    assert revoked.action == "revoke"
    # The desk's grant made again as asked: A is the desk's too (a replay by the difference the
    # grant made, C alone, lost it).
    assert (revoked.state.model, revoked.state.facilities, revoked.state.excluded, revoked.state.on_hold) == (
        "facility", (CLINIC_A, CLINIC_C), (CLINIC_B,), False)
    assert allowed(engine, CLINIC_A) and allowed(engine, CLINIC_C) and not allowed(engine, CLINIC_B)


def test_each_record_keeps_what_its_change_asked(registry, engine):
    by_desk(engine, "grant", model="facility", facilities=[f"urn:oid:{CLINIC_C}"], excluded=[CLINIC_B],
            valid_to=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    document = s.document("consent", s.new_oid(), PATIENT, format_code=BPPC, service_start="20260101",
                          service_stop="20270101", events=[(TO_A, "1.2.392.100.9", "a policy of the network")])
    registered = q.register(registry, document, patient=PATIENT)
    update(registry, status_change(registered["consent"], APPROVED, DEPRECATED), patient=PATIENT)
    desk, bppc, revoked = history(engine)
    assert store.asked(desk) == {"action": "grant", "model": "facility", "facilities": [f"urn:oid:{CLINIC_C}"],
                                 "excluded": [CLINIC_B], "valid_to": dt.datetime(2030, 1, 1, tzinfo=dt.UTC)}
    # A policy id's meaning is kept as it was when the document was registered (the setting may
    # say otherwise later), with the document's effective time as the validity period.
    assert store.asked(bppc) == {"action": "grant", "model": "facility", "facilities": [CLINIC_A],
                                 "valid_from": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                                 "valid_to": dt.datetime(2027, 1, 1, tzinfo=dt.UTC)}
    assert store.asked(revoked) == {"action": "revoke", "ended": "deprecated"}
    assert revoked.state.facilities == (CLINIC_C,) and revoked.state.valid_to == dt.datetime(2030, 1, 1,
                                                                                              tzinfo=dt.UTC)


# --- made Approved again (ITI-57) --------------------------------------------------------------------


def test_a_consent_document_approved_again_grants_again(registry, engine):
    by_desk(engine, "grant", model="facility", facilities=[CLINIC_C])
    registered = q.register(registry, consent_document("consent", TO_A), patient=PATIENT)
    unique_id = registered.unique_ids["consent"]
    update(registry, status_change(registered["consent"], APPROVED, DEPRECATED), patient=PATIENT)
    by_desk(engine, "exclude", facilities=[CLINIC_B])  # recorded while the document was deprecated
    assert not allowed(engine, CLINIC_A)
    result = update(registry, status_change(registered["consent"], DEPRECATED, APPROVED), patient=PATIENT)
    assert result.status.endswith(":Success"), [str(e) for e in result.errors]
    again = history(engine)[-1]
    assert (again.action, again.source, again.recorded_by) == ("reinstate", f"bppc:{unique_id}",
                                                               "ITI-57 Update Document Set")
    assert again.reason == (f"BPPC consent document {unique_id} approved again: status changed to Approved "
                            "(ITI-57 Update Document Set)")
    assert (again.state.facilities, again.state.excluded) == ((CLINIC_C, CLINIC_A), (CLINIC_B,))
    assert allowed(engine, CLINIC_A) and allowed(engine, CLINIC_C) and not allowed(engine, CLINIC_B)

    # Approving again what grants already writes nothing; deprecating it again revokes again.
    with db.write_session(engine) as session:
        hook(SETTINGS).approved(session, [registered["consent"]], "ITI-57 Update Document Set")
    assert [r.action for r in history(engine)].count("reinstate") == 1
    update(registry, status_change(registered["consent"], APPROVED, DEPRECATED), patient=PATIENT)
    assert [r.action for r in history(engine)][-1] == "revoke" and not allowed(engine, CLINIC_A)


def test_what_came_after_a_document_applies_to_it_when_approved_again(registry, engine):
    """Approved again, a document grants in its place among the changes, not as a new grant:
    a withdrawal recorded after it stays (while it was deprecated or before)."""
    registered = q.register(registry, consent_document("consent", BLANKET), patient=PATIENT)
    update(registry, status_change(registered["consent"], APPROVED, DEPRECATED), patient=PATIENT)
    by_desk(engine, "withdraw")
    update(registry, status_change(registered["consent"], DEPRECATED, APPROVED), patient=PATIENT)
    again = history(engine)[-1]
    assert again.action == "reinstate" and again.state.model == "blanket" and again.state.withdrawn_at is not None
    assert not allowed(engine, CLINIC_A)


def test_a_replaced_consent_document_approved_again_grants_again(registry, engine):
    first = q.register(registry, consent_document("consent", TO_A), patient=PATIENT)
    q.register(registry, consent_document("consent2", TO_C), s.association("rplc", "RPLC", "consent2",
                                                                           first["consent"]), patient=PATIENT)
    assert not allowed(engine, CLINIC_A)
    update(registry, status_change(first["consent"], DEPRECATED, APPROVED), patient=PATIENT)
    assert history(engine)[-1].action == "reinstate"
    assert allowed(engine, CLINIC_A) and allowed(engine, CLINIC_C)


def test_only_a_consent_document_that_was_revoked_by_deprecation_grants_again(registry, engine):
    letter = q.register(registry, s.document("letter", s.new_oid(), PATIENT), patient=PATIENT)
    update(registry, status_change(letter["letter"], APPROVED, DEPRECATED), patient=PATIENT)
    update(registry, status_change(letter["letter"], DEPRECATED, APPROVED), patient=PATIENT)
    assert history(engine) == []  # not a consent document: nothing recorded

    registered = q.register(registry, consent_document("consent", TO_A), patient=PATIENT)
    delete_submission(registry, registered, "consent")
    before = history(engine)
    assert before[-1].action == "revoke" and store.asked(before[-1])["ended"] == "deleted"
    # A deleted document is gone from the registry (ITI-57 cannot name it); its records say it
    # cannot come back either.
    with db.write_session(engine) as session:
        person = store.persons_of(session, [PATIENT])[PATIENT]
        assert store.reinstate(session, person, PATIENT, before[-1].source, POLICY, at=dt.datetime.now(dt.UTC),
                               recorded_by="test", reason="") is None
    assert history(engine) == before and not allowed(engine, CLINIC_A)
