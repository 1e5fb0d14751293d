"""The PIX Manager / PDQ Supplier service (xds.identity.service) answering HL7v3 messages in
process, as xds.dispatch calls it: what a feed carries comes back in the PDQ answer (ITI-47)
and the PIX answer (ITI-45). On SQLite and PostgreSQL."""

from __future__ import annotations

import os

from lxml import etree

from tests.test_identity_data import DOMAIN, HOSPITAL_A, HOSPITAL_B, japanese, pid
from tests.test_identity_feed import POLICY
from xds.hl7v3 import ack, feed as hl7_feed, pdq as hl7_pdq, pix as hl7_pix
from xds.hl7v3.ns import INTERACTIONS
from xds.identity.service import IdentityService
from xds.model.person import Address, Identifier, PersonName
from xds.security.caller import Caller
from xds.soap.envelope import build_envelope, parse_envelope

US, THEM = "1.2.392.200119.6.102.1", "1.2.392.200119.6.102.99"


def answer(service: IdentityService, message: etree._Element) -> etree._Element:
    """The service's answer to `message`, through the handler its action names."""
    name = etree.QName(message).localname
    request = parse_envelope(build_envelope(message, INTERACTIONS[name].action))
    handler = {"PRPA_IN201301UV02": service.patient_identity_feed, "PRPA_IN201302UV02": service.patient_identity_feed,
               "PRPA_IN201309UV02": service.pix_query, "PRPA_IN201305UV02": service.patient_demographics_query}[name]
    return handler(request, Caller("192.0.2.7")).content


def fed(service: IdentityService, record) -> None:
    acknowledgement = ack.read_accept_acknowledgement(answer(service, hl7_feed.record_added(
        record, sender=THEM, receiver=US))).acknowledgement
    assert (acknowledgement.type_code, acknowledgement.details) == ("AA", [])


def pdq(service: IdentityService, **parameters) -> hl7_pdq.PdqQueryResponse:
    query = hl7_pdq.PdqQuery(query_id=Identifier("1.2.3.4", os.urandom(4).hex()), **parameters)
    return hl7_pdq.read_pdq_query_response(answer(service, hl7_pdq.pdq_query(query, sender=THEM, receiver=US)))


def pix(service: IdentityService, identifier: Identifier, *sources: str) -> hl7_pix.PixQueryResponse:
    return hl7_pix.read_pix_query_response(answer(service, hl7_pix.pix_query(identifier, sources, sender=THEM,
                                                                              receiver=US)))


# --- what a feed stores comes back (records.py) -------------------------------------------------

def test_the_pdq_answer_carries_assigning_authority_names_and_every_address_part(engine):
    service = IdentityService(engine, POLICY)
    own = Identifier(HOSPITAL_A, "A-1", "香川県立中央病院")
    other = Identifier(DOMAIN, "K-1", "K-MIX+")
    addresses = [
        # parts the record model has no field of: kept in document order, as sent
        Address(street_lines=("番町１丁目１－１",), city="高松市", state="香川県", postal_code="760-0017", country="JP",
                uses=("H",), other_parts=(("unitID", "301号室"), ("additionalLocator", "サンポート棟"),
                                          ("careOf", "山田 花子"))),
        Address(text="香川県高松市番町１丁目１－１", uses=("PST",)),  # an address as text alone
    ]
    record = japanese("A-1", root=HOSPITAL_A, other_ids=(other,), addresses=addresses)
    record.ids = [own]
    fed(service, record)

    found = pdq(service, living_subject_names=[PersonName(family=("山田",))])
    assert found.query_response_code == "OK"
    (match,) = found.matches
    back = match.record
    assert back.ids == [own] and back.ids[0].assigning_authority_name == "香川県立中央病院"
    assert [(i, i.assigning_authority_name) for i in back.other_ids] == [(other, "K-MIX+")]
    assert back.addresses == addresses

    # The record without any of these is stored as before (no new keys in its JSON).
    from xds.identity import records
    plain = japanese("A-2", root=HOSPITAL_A, addresses=[Address(city="高松市")])
    assert '"addresses":[{"street_lines":[],"city":"高松市","state":"","postal_code":"","country":"","uses":[]}]' in (
        records.to_json(plain))
    assert records.from_json('{"ids":[["1.2.3","X"]],"addresses":[{"city":"高松市"}]}').addresses == [
        Address(city="高松市")]


# --- ids only in asOtherIDs are cross-referenced ------------------------------------------------

def test_an_id_only_named_in_as_other_ids_is_cross_referenced_until_its_source_feeds_it(engine):
    from xds.store import db, patients

    service = IdentityService(engine, POLICY)
    hospital, named = pid("A-1", HOSPITAL_A), pid("K-1")  # K-1: of the affinity domain, never fed
    fed(service, japanese("A-1", "sato", root=HOSPITAL_A, other_ids=(named,)))

    # ITI-45 answers it, and finds the person by it
    assert pix(service, hospital).ids == [named]
    by_named = pix(service, named)
    assert (by_named.query_response_code, by_named.ids) == ("OK", [hospital])
    # ITI-47 finds the patient that names it; the named id has no record of its own to answer with
    found = pdq(service, living_subject_ids=[named])
    assert [(m.record.ids, m.record.other_ids) for m in found.matches] == [([hospital], [named])]
    # the registry accepts only ids their own source fed
    with db.make_sessionmaker(engine)() as session:
        assert patients.known(session, [named.cx]) == set()

    # Its own source feeds it: its record replaces the named one, in the same person, and the
    # registry accepts it now.
    fed(service, japanese("K-1", "sato", birth="19900909"))
    assert pix(service, hospital).ids == [named]
    found = pdq(service, living_subject_ids=[named])
    assert sorted((m.record.ids[0].extension, m.record.birth_time) for m in found.matches) == [
        ("A-1", "19710101"), ("K-1", "19900909")]
    with db.make_sessionmaker(engine)() as session:
        assert patients.known(session, [named.cx]) == {named.cx}


def test_a_named_id_the_revised_record_no_longer_names_leaves_the_person(engine):
    service = IdentityService(engine, POLICY)
    hospital, named = pid("A-1", HOSPITAL_A), pid("B-9", HOSPITAL_B)
    fed(service, japanese("A-1", "sato", root=HOSPITAL_A, other_ids=(named,)))
    assert pix(service, hospital).ids == [named]
    fed(service, japanese("A-1", "sato", root=HOSPITAL_A))  # an add again: a revise
    assert pix(service, hospital).query_response_code == "NF"
    assert pix(service, named).query_response_code == "NF"  # known still, alone


def test_without_the_identifier_rule_nothing_is_named(engine):
    import dataclasses

    service = IdentityService(engine, dataclasses.replace(POLICY, rules=("demographics",)))
    fed(service, japanese("A-1", "sato", root=HOSPITAL_A, other_ids=(pid("K-1"),)))
    assert pix(service, pid("K-1")).query_response_code == "AE"  # 204: never fed, never named


# --- the PDQ answer's bytes -----------------------------------------------------------------------

def test_a_pdq_answer_of_100_patients_is_written_byte_for_byte_as_before():
    """Building PRPA_IN201306UV02 was made cheaper (xds.hl7v3.ns.sub; the custodian taken from the
    record, not searched for): the bytes of a fixed answer are those the writer gave before."""
    import datetime as dt
    import hashlib

    from tests.test_identity_data import FULL, many
    from xds.hl7v3.wrapper import MessageHeader

    query = hl7_pdq.PdqQuery(query_id=Identifier("1.2.3.4", "q1"), living_subject_administrative_gender="F",
                             header=MessageHeader(interaction="PRPA_IN201305UV02", message_id=Identifier("1.2.3", "m1"),
                                                  sender="1.2.3.9", receiver="1.2.3.8", processing_code="P"))
    matches = [hl7_pdq.PdqMatch(record, 100) for record in [FULL, *many(99)]]
    answer = hl7_pdq.pdq_query_response(query, matches, total=250, remaining=150, sender="1.2.3.8",
                                        message_id="fixed-id", now=dt.datetime(2026, 12, 7, tzinfo=dt.timezone.utc))
    data = etree.tostring(answer)
    assert (len(data), hashlib.sha256(data).hexdigest()) == (
        117840, "61295bff877884bda502226783bed733e1105da7f3f8c1c6a87045c98134ac76")
