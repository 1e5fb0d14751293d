"""ITI-47 with access control on, over a search that hides many matches (xds.consent.identity):
the answers, continuations included, are byte for byte those of a PDQ Supplier holding only the
patients the facility may see (once the message ids and times two servers must differ in are
set aside), and the refusal is audited once per request: the query's own record, outcome 4,
counting the matches left out and naming none of them.

Two whole servers in-process (xds.app, called as WSGI), XUA on (the facility is the signed
assertion's organization-id), the full one's audit records sent over UDP. On SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from tests import saml
from tests.test_consent_notrace import AUDIENCE, FACILITY_B, THEM, US, another_database, normalized, send
from tests.test_identity_data import DOMAIN, japanese, pid
from tests.test_xua_http import AuditReceiver
from xds.app import Server
from xds.config import Settings
from xds.consent import store
from xds.consent.policy import ConsentPolicy
from xds.hl7v3 import pdq as hl7_pdq, pix as hl7_pix
from xds.hl7v3.ns import INTERACTIONS
from xds.identity import feed
from xds.identity.policy import IdentityPolicy
from xds.model.person import Identifier, PersonName
from xds.store import db

PATIENTS = 240
#: Every fourth patient consents to every facility; the others are hidden from facility A in
#: each of the ways a consent hides: none recorded, another facility only, withdrawn.
HIDDEN_CONSENTS = ([], [("grant", dict(model="facility", facilities=[FACILITY_B]))],
                   [("grant", dict(model="blanket")), ("withdraw", {})])
PAGE = 25


def consent_of(n: int) -> tuple[list, bool]:
    if n % 4 == 0:
        return [("grant", dict(model="blanket"))], True
    return HIDDEN_CONSENTS[n % 3], False


def key(n: int) -> str:
    return f"S{n:04d}"


def populate(server: Server, numbers, *, consents: bool) -> None:
    identity = IdentityPolicy.from_settings(server.settings)
    policy = ConsentPolicy.from_settings(server.settings)
    with db.write_session(server.engine) as session:
        for n in numbers:
            feed.add(session, japanese(key(n), "sato", birth=f"19{40 + n % 50:02d}0101"), identity)
            for action, values in consent_of(n)[0] if consents else ():
                store.change(session, pid(key(n)).cx, action, policy, at=dt.datetime.now(dt.UTC),
                             recorded_by="consent desk", reason="", source="test", **values)


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    return saml.IdentityProvider(tmp_path_factory.mktemp("idp"), "pdq-idp")


@pytest.fixture
def nodes(database_url, tmp_path, idp):
    receiver = AuditReceiver()
    with another_database(database_url, tmp_path) as visible_url:
        servers = []
        for url, folder, access_control, audit in ((database_url, "full", "consent", receiver.url),
                                                   (visible_url, "visible", "off", "")):
            db.upgrade(url)
            servers.append(Server(Settings(
                data_dir=tmp_path / folder, database_url=url, access_control=access_control, affinity_domain=DOMAIN,
                pix_linking_rules="", xua_policy="optional", xua_trusted_certificates=str(idp.certificate),
                xua_audiences=AUDIENCE, audit_destinations=audit)))
        full, visible = servers
        try:
            populate(full, range(PATIENTS), consents=True)
            populate(visible, [n for n in range(PATIENTS) if consent_of(n)[1]], consents=False)
            yield full, visible, receiver
        finally:
            for server in servers:
                server.audit.close()
                server.engine.dispose()
            receiver.socket.close()


def test_a_search_hiding_many_matches_answers_as_the_visible_only_supplier_and_is_audited_once(nodes, idp):
    full, visible, receiver = nodes
    assertion = idp.signed(audience=AUDIENCE)
    hidden = sum(1 for n in range(PATIENTS) if not consent_of(n)[1])
    shown = PATIENTS - hidden
    query = hl7_pdq.pdq_query(hl7_pdq.PdqQuery(query_id=Identifier("1.2.20", "sato"), initial_quantity=PAGE,
                                               living_subject_names=[PersonName(family=("佐藤",))]),
                              sender=THEM, receiver=US, message_id="1.2.20.1")
    ask = INTERACTIONS["PRPA_IN201305UV02"].action
    more = INTERACTIONS["QUQI_IN000003UV01"].action
    answers = {name: [send(node, "/pdq", query, ask, assertion=assertion)]
               for name, node in (("full", full), ("visible", visible))}
    requests = 1
    while True:
        read = {name: hl7_pdq.read_pdq_query_response(answer[-1][1].body) for name, answer in answers.items()}
        assert normalized(*answers["full"][-1]) == normalized(*answers["visible"][-1])
        if not read["full"].result_remaining_quantity:
            break
        for name, node in (("full", full), ("visible", visible)):
            continuation = hl7_pdq.query_continuation(
                Identifier("1.2.20", "sato"), read[name].header.message_id, continuation_quantity=PAGE,
                sender=THEM, receiver=US, message_id=f"1.2.20.{requests + 1}")
            answers[name].append(send(node, "/pdq", continuation, more, assertion=assertion))
        requests += 1
    first = hl7_pdq.read_pdq_query_response(answers["full"][0][1].body)
    assert first.result_total_quantity == shown and requests == -(-shown // PAGE)
    patients = [m.record.ids[0] for answer in answers["full"] for m in
                hl7_pdq.read_pdq_query_response(answer[1].body).matches]
    assert patients == [pid(key(n)) for n in range(PATIENTS) if consent_of(n)[1]]

    # The audit trail: what a later request's record is delivered after, the trail delivered first.
    barrier = hl7_pix.pix_query(pid(key(0)), sender=THEM, receiver=US, message_id="1.2.20.barrier")
    send(full, "/pix", barrier, INTERACTIONS["PRPA_IN201309UV02"].action, assertion=assertion)
    receiver.wait_for(lambda m: any(e.get("csd-code") == "ITI-45" for e in m.iterfind("EventIdentification/"
                                                                                     "EventTypeCode")))
    searches = [m for m in receiver.seen
                if any(e.get("csd-code") == "ITI-47" for e in m.iterfind("EventIdentification/EventTypeCode"))]
    assert len(searches) == requests  # one a request, however many matches each hid
    for record in searches:
        assert record.find("EventIdentification").get("EventOutcomeIndicator") == "4"
        assert record.findtext("EventIdentification/EventOutcomeDescription") == \
            f"access denied by consent: {hidden} matches left out"
        assert not [e for e in record.iterfind("ParticipantObjectIdentification")
                    if e.get("ParticipantObjectTypeCodeRole") == "1"]  # no hidden patient named


def test_a_search_that_hides_nothing_is_audited_as_a_plain_query(nodes, idp):
    full, visible, receiver = nodes
    query = hl7_pdq.pdq_query(hl7_pdq.PdqQuery(query_id=Identifier("1.2.21", "one"),
                                               living_subject_ids=[pid(key(0))]),
                              sender=THEM, receiver=US, message_id="1.2.21.1")
    status, message = send(full, "/pdq", query, INTERACTIONS["PRPA_IN201305UV02"].action,
                           assertion=idp.signed(audience=AUDIENCE))
    assert [m.record.ids[0] for m in hl7_pdq.read_pdq_query_response(message.body).matches] == [pid(key(0))]
    record = receiver.wait_for(lambda m: any(e.get("csd-code") == "ITI-47" for e in
                                             m.iterfind("EventIdentification/EventTypeCode")))
    assert record.find("EventIdentification").get("EventOutcomeIndicator") == "0"
    assert not record.findtext("EventIdentification/EventOutcomeDescription")
