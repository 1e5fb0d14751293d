"""The PIX Manager and PDQ Supplier over HTTP (ITI-44, ITI-45, ITI-47), served by `xds serve` on
SQLite and PostgreSQL; real clients: raw SOAP 1.2 over urllib, the public IPF and eHealth Suisse
samples, and zeep built from the served WSDLs. The feed is also the Document Registry's: an id
of the affinity domain fed here is registered for at once, a merged one is refused."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from tests import submissions as s
from tests.server import XDS, serve
from tests.test_identity_data import DOMAIN, HOSPITAL_A, japanese, many, pid
from tests.test_registry_http import _EbrimBody, post, soap_register
from xds.hl7v3 import ack, feed, pdq as hl7_pdq, pix as hl7_pix
from xds.hl7v3.ns import INTERACTIONS, V3
from xds.model.person import Identifier, PersonName
from xds.soap import build_envelope, parse_response

SHARED = Path(__file__).resolve().parents[2] / "shared" / "conformance-data"
US, THEM = "1.2.392.200119.6.102.1", "1.2.392.200119.6.102.99"  # the devices: this server, a client


@pytest.fixture(scope="module")
def pdq_page():
    return 3


@pytest.fixture
def server(database_url, tmp_path, pdq_page):
    env = dict(os.environ, XDS_DATA_DIR=str(tmp_path / "var"), XDS_DATABASE_URL=database_url,
               XDS_AFFINITY_DOMAIN=DOMAIN, XDS_PDQ_PAGE_SIZE=str(pdq_page))
    subprocess.run([*XDS, "db", "upgrade"], env=env, check=True, capture_output=True)
    process, base = serve(env, tmp_path / "server.log")
    yield base
    process.terminate()
    process.wait(10)


def send(base: str, path: str, message: etree._Element, interaction: str | None = None):
    """POST one HL7v3 message with the action its root (or `interaction`) names; the answer's
    HTTP status, wsa:Action and body."""
    action = INTERACTIONS[interaction or etree.QName(message).localname].action
    envelope = build_envelope(message, action, to=base + path)
    status, content_type, body = post(base + path, envelope, f'application/soap+xml; charset=UTF-8; action="{action}"')
    response = parse_response(content_type, body)
    return status, response.action, response.body


def feed_add(base: str, record) -> etree._Element:
    status, action, body = send(base, "/pix", feed.record_added(record, sender=THEM, receiver=US))
    assert status == 200 and action == INTERACTIONS["PRPA_IN201301UV02"].response_action
    return body


def ack_of(body: etree._Element) -> tuple[str, list[str]]:
    answer = ack.read_accept_acknowledgement(body)
    return answer.acknowledgement.type_code, [d.code for d in answer.acknowledgement.details]


def test_an_affinity_domain_feed_is_registered_for_and_a_merge_retires_the_id(server):
    base = server
    survivor, retired = pid("S1"), pid("R1")
    assert ack_of(feed_add(base, japanese("S1")))[0] == "AA"
    assert ack_of(feed_add(base, japanese("R1", "sato")))[0] == "AA"
    for who in (survivor, retired):
        xml, _ = s.submission(patient=who.cx)
        assert soap_register(base, xml)[1].body.get("status").endswith(":Success")

    merge = feed.duplicates_resolved(japanese("S1"), [retired], sender=THEM, receiver=US)
    status, action, body = send(base, "/pix", merge)
    assert ack_of(body) == ("AA", [])
    xml, _ = s.submission(patient=retired.cx)
    response = soap_register(base, xml)[1].body
    codes = [e.get("errorCode") for e in response.iter("{urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0}RegistryError")]
    assert codes == ["XDSUnknownPatientId"]

    # ITI-45 for the retired id answers with the survivor's person.
    query = hl7_pix.pix_query(retired, [DOMAIN], sender=THEM, receiver=US)
    status, action, body = send(base, "/pix", query)
    answer = hl7_pix.read_pix_query_response(body)
    assert answer.acknowledgement.type_code == "AA" and answer.query_response_code == "OK"
    assert survivor in answer.ids and retired not in answer.ids


def test_a_merge_of_an_id_never_fed_is_refused_with_204(server):
    base = server
    feed_add(base, japanese("S2"))
    merge = feed.duplicates_resolved(japanese("S2"), [pid("NEVER")], sender=THEM, receiver=US)
    status, action, body = send(base, "/pix", merge)
    assert status == 200
    assert ack_of(body) == ("AE", ["204"])


def test_pix_query_cross_references_and_unknowns(server):
    base = server
    local = japanese("H-1", root=HOSPITAL_A, other_ids=(pid("X1"),))
    feed_add(base, japanese("X1"))
    feed_add(base, local)
    query = hl7_pix.pix_query(pid("X1"), [HOSPITAL_A], sender=THEM, receiver=US)
    answer = hl7_pix.read_pix_query_response(send(base, "/pix", query)[2])
    assert (answer.query_response_code, answer.ids) == ("OK", [Identifier(HOSPITAL_A, "H-1")])

    unknown_id = hl7_pix.pix_query(pid("NOBODY"), sender=THEM, receiver=US)
    answer = hl7_pix.read_pix_query_response(send(base, "/pix", unknown_id)[2])
    assert answer.acknowledgement.type_code == "AE" and answer.query_response_code == "AE"
    assert [(d.code, d.location) for d in answer.acknowledgement.details] == [
        ("204", hl7_pix.PATIENT_IDENTIFIER_LOCATION)]

    unknown_source = hl7_pix.pix_query(pid("X1"), ["1.2.3.4.5.6.7"], sender=THEM, receiver=US)
    answer = hl7_pix.read_pix_query_response(send(base, "/pix", unknown_source)[2])
    assert [(d.code, d.location) for d in answer.acknowledgement.details] == [
        ("204", hl7_pix.data_source_location(0))]


def pdq_message(**parameters) -> etree._Element:
    query = hl7_pdq.PdqQuery(query_id=Identifier("1.2.3.4", "q-" + os.urandom(4).hex()), **parameters)
    return hl7_pdq.pdq_query(query, sender=THEM, receiver=US)


def test_pdq_finds_by_kanji_and_half_width_kana_and_pages_with_continuation(server, pdq_page):
    base = server
    for record in many(8):  # 8 people, among them yamada, sato, ... (tests.test_identity_data)
        feed_add(base, record)
    # every third record is of the same person kind; ask for all women by gender and a birth range
    message = pdq_message(living_subject_administrative_gender="F",
                          living_subject_birth_time=hl7_pdq.Interval(low="1900", high="2020"))
    status, action, body = send(base, "/pdq", message)
    assert action == INTERACTIONS["PRPA_IN201305UV02"].response_action
    first = hl7_pdq.read_pdq_query_response(body)
    assert first.query_response_code == "OK"
    assert (first.result_total_quantity, first.result_current_quantity, first.result_remaining_quantity) == (4, 3, 1)
    assert pdq_page == 3

    query_id = first.query_id
    response_id = etree.fromstring(etree.tostring(body)).find(f"{{{V3}}}id")
    target = Identifier(response_id.get("root"), response_id.get("extension") or "")
    more = hl7_pdq.query_continuation(query_id, target, continuation_quantity=3, sender=THEM, receiver=US)
    status, action, body = send(base, "/pdq", more, "QUQI_IN000003UV01")
    second = hl7_pdq.read_pdq_query_response(body)
    assert (second.result_current_quantity, second.result_remaining_quantity) == (1, 0)
    found = {m.record.ids[0] for m in first.matches + second.matches}
    assert len(found) == 4

    # The query ended with its last page: a further continuation is told so (204).
    status, action, body = send(base, "/pdq", more, "QUQI_IN000003UV01")
    ended = hl7_pdq.read_pdq_query_response(body)
    assert (ended.query_response_code, ended.query_id) == ("AE", query_id)
    assert [d.code for d in ended.acknowledgement.details] == ["204"]


def test_pdq_cancel_ends_the_query(server):
    base = server
    for record in many(6):
        feed_add(base, record)
    first = hl7_pdq.read_pdq_query_response(send(base, "/pdq", pdq_message(
        living_subject_birth_time=hl7_pdq.Interval(low="1900", high="2020")))[2])
    assert first.result_remaining_quantity == 3
    cancel = hl7_pdq.query_continuation(first.query_id, Identifier("1.2.3", "x"), cancel=True, sender=THEM,
                                        receiver=US)
    status, action, body = send(base, "/pdq", cancel, "QUQI_IN000003UV01_Cancel")
    assert action == INTERACTIONS["QUQI_IN000003UV01_Cancel"].response_action
    assert ack_of(body) == ("AA", [])
    more = hl7_pdq.query_continuation(first.query_id, Identifier("1.2.3", "x"), sender=THEM, receiver=US)
    answer = hl7_pdq.read_pdq_query_response(send(base, "/pdq", more, "QUQI_IN000003UV01")[2])
    assert [d.code for d in answer.acknowledgement.details] == ["204"]


def test_pdq_by_name_in_kanji_and_in_half_width_kana(server):
    base = server
    feed_add(base, japanese("Y1", "yamada", root=HOSPITAL_A))
    feed_add(base, japanese("S1", "sato", root=HOSPITAL_A))
    for family in ("山田", "ﾔﾏﾀﾞ"):
        answer = hl7_pdq.read_pdq_query_response(send(base, "/pdq", pdq_message(
            living_subject_names=[PersonName(family=(family,))]))[2])
        assert [m.record.ids[0] for m in answer.matches] == [Identifier(HOSPITAL_A, "Y1")], family


def test_pdq_with_an_unknown_scoping_organization_answers_204(server):
    base = server
    feed_add(base, japanese("Y1", root=HOSPITAL_A))
    answer = hl7_pdq.read_pdq_query_response(send(base, "/pdq", pdq_message(
        living_subject_names=[PersonName(family=("山田",))], other_ids_scoping_organizations=["1.2.3.4.5.6.7.9"]))[2])
    assert answer.query_response_code == "AE"
    assert [(d.code, d.location) for d in answer.acknowledgement.details] == [("204", hl7_pdq.other_ids_location(0))]


def test_a_body_that_is_not_the_actions_message_is_refused_ns200(server):
    base = server
    query = hl7_pix.pix_query(pid("X1"), sender=THEM, receiver=US)
    status, action, body = send(base, "/pix", query, "PRPA_IN201301UV02")
    assert status == 200
    assert ack_of(body) == ("AR", ["NS200"])


@pytest.mark.parametrize("sample", ["iti-44/ipf/PIX_FEED_REG_Maximal_Request.xml",
                                    "iti-44/ehealthsuisse/ITI-44_request_raw.xml"])
def test_public_feed_samples_are_acknowledged(server, sample):
    base = server
    document = etree.parse(str(SHARED / sample)).getroot()
    message = document if etree.QName(document).localname in INTERACTIONS else next(
        e for e in document.iter() if isinstance(e.tag, str) and etree.QName(e).localname in INTERACTIONS)
    status, action, body = send(base, "/pix", message)
    assert status == 200
    code, details = ack_of(body)
    assert code == "AA", etree.tostring(body, pretty_print=True).decode()


def test_zeep_clients_from_the_served_wsdls(server):
    import zeep

    base = server
    for path, binding, operation, message in (
            ("/pix", "{urn:ihe:iti:pixv3:2007}PIXManager_Binding_Soap12", "PIXManager_PRPA_IN201301UV02",
             feed.record_added(japanese("Z1"), sender=THEM, receiver=US)),
            ("/pdq", "{urn:ihe:iti:pdqv3:2007}PDSupplier_Binding_Soap12", "PDSupplier_PRPA_IN201305UV02",
             pdq_message(living_subject_names=[PersonName(family=("山田",))]))):
        # zeep builds the envelope, WS-Addressing and HTTP from the WSDL; the message goes in
        # as XML (the WSDL declares it with open content: its schema is HL7's)
        client = zeep.Client(base + path + "?wsdl", plugins=[_EbrimBody(message)])
        service = client.create_service(binding, base + path)
        with client.settings(raw_response=True):
            response = getattr(service, operation)()
        assert response.status_code == 200, response.content
        answer = parse_response(response.headers["Content-Type"], response.content).body
        assert etree.QName(answer).localname in ("MCCI_IN000002UV01", "PRPA_IN201306UV02")
