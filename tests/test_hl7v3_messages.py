"""Everything the project writes, with rich data, is valid by the NE2008 schemas and passes the
PIXv3/PDQv3 Schematron; and reading it back gives what was written.

The data are Japanese patients as a regional network holds them: each name in kanji (use IDE)
and in kana (SYL), full-width and half-width; alphabetic (ABC) and alias names; old and new
kanji forms (髙/高, 﨑/崎, 齋/斎); CJK compatibility ideographs that Unicode normalisation would
change (神 U+FA19, 侮 U+FA30); names outside the BMP (𠮷 U+20BB7, 𩸽 U+29E3D) and JIS X 0213
kana with a combining semi-voiced mark (か゚, ㇷ゚); an ideographic space inside a text-only name;
several ids in several domains, addresses, telecoms, mother's maiden name, multiple birth,
deceased. Each message goes through bytes (serialised as UTF-8 and parsed again) before it is
read back, so the test is of what travels, not of the tree.
"""

from __future__ import annotations

import datetime as dt
import unicodedata

import pytest
from lxml import etree

from tests.test_hl7v3_validation import PARSER, assert_valid, needs_data, schemas
from xds.hl7v3 import ack, feed, messages, pdq, pix
from xds.hl7v3.datatypes import Interval
from xds.hl7v3.details import error, unknown_key_identifier, warning
from xds.hl7v3.feed import pix_add_message
from xds.hl7v3.ns import INTERACTIONS
from xds.model.person import Address, Identifier, PatientRecord, PersonName, Telecom

pytestmark = needs_data

KAGAWA = "1.2.392.200119.6.102.137"          # an affinity domain (made-up OIDs under Japan's arc)
HOSPITAL = "1.2.392.200119.6.102.137.1.1"
CLINIC = "1.2.392.200119.6.102.137.1.2"
PHARMACY = "1.2.392.200119.6.102.137.1.3"
SOURCE, MANAGER = "1.2.392.200119.6.102.137.9.1", "1.2.392.200119.6.102.137.9.2"
NOW = dt.datetime(2026, 12, 7, 3, 26, 19, tzinfo=dt.timezone.utc)


def japanese_patients() -> list[PatientRecord]:
    yamada = PatientRecord(
        ids=[Identifier(HOSPITAL, "H0001", "香川中央病院"), Identifier(KAGAWA, "K-000001")],
        other_ids=[Identifier(CLINIC, "C-77"), Identifier(CLINIC, "C-78"), Identifier(PHARMACY, "P-5"),
                   Identifier(CLINIC, "C-79")],
        names=[PersonName(family=("山田",), given=("太郎",), uses=("L", "IDE")),
               PersonName(family=("ヤマダ",), given=("タロウ",), uses=("L", "SYL")),
               PersonName(family=("YAMADA",), given=("Taro",), uses=("L", "ABC")),
               PersonName(family=("ﾔﾏﾀﾞ",), given=("ﾀﾛｳ",), uses=("A", "SYL"))],
        gender="M", birth_time="19710101",
        addresses=[Address(street_lines=("番町四丁目1番10号",), city="高松市", state="香川県", postal_code="760-8570",
                           country="JP", uses=("H",)),
                   Address(street_lines=("丸の内1-1", "ビル 3F"), city="高松市", state="香川県", country="JP",
                           uses=("WP",), other_parts=(("houseNumber", "1-1"), ("precinct", "丸の内"),
                                                      ("city", "香川郡")))],
        telecoms=[Telecom("tel:+81-87-831-1111", ("HP",)), Telecom("tel:+81-90-0000-0000", ("MC",)),
                  Telecom("mailto:taro@example.jp", ("H",))],
        mothers_maiden_name=PersonName(family=("佐藤",), uses=("IDE",)),
        multiple_birth=True, multiple_birth_order=2, provider_organization=HOSPITAL, sender=SOURCE)
    takahashi = PatientRecord(
        ids=[Identifier(CLINIC, "C-1001")],
        names=[PersonName(family=("髙橋",), given=("花子",), uses=("IDE",)),
               PersonName(family=("ﾀｶﾊｼ",), given=("ﾊﾅｺ",), uses=("SYL",)),
               PersonName(family=("たかはし",), given=("はなこ",), uses=("SYL",))],
        gender="F", birth_time="19450815", deceased=True, deceased_time="20260101093000+0900",
        addresses=[Address(text="香川県小豆郡土庄町甲1番地")],
        mothers_maiden_name=PersonName(text="齋藤　キヨ"), provider_organization=CLINIC, sender=SOURCE)
    rare = PatientRecord(
        ids=[Identifier(PHARMACY, "P-𠮷-1"), Identifier(KAGAWA, "K-000002")],
        names=[PersonName(family=("𠮷野",), given=("𩸽子",), uses=("L", "IDE")),
               PersonName(family=("﨑山",), given=("\ufa19一", "\ufa30"), prefix=("Dr.",), uses=("IDE",)),
               PersonName(family=("か\u309aき",), given=("\u31f7\u309a",), uses=("SYL",)),
               PersonName(text="　斎藤　一　", uses=("A",))],
        gender="UN", birth_time="2001",
        multiple_birth=False, deceased=False, provider_organization=PHARMACY, sender=SOURCE)
    bare = PatientRecord(ids=[Identifier(HOSPITAL, "H0002")], provider_organization=HOSPITAL, sender=SOURCE)
    return [yamada, takahashi, rare, bare]


def travel(message: etree._Element) -> etree._Element:
    """The message as the other side gets it: UTF-8 bytes, parsed again."""
    data = etree.tostring(message, encoding="UTF-8", xml_declaration=True)
    return etree.fromstring(data, PARSER)


def test_the_data_set_is_what_it_says():
    text = "".join(p for r in japanese_patients() for n in r.names for p in (*n.family, *n.given, n.text))
    assert any(ord(c) > 0xFFFF for c in text)                               # outside the BMP
    assert "\u309a" in text and unicodedata.normalize("NFC", text) != text   # JIS X 0213 kana, compat ideographs
    assert any(0xFF61 <= ord(c) <= 0xFF9F for c in text) and "\u3000" in text


# --- ITI-44 feeds -----------------------------------------------------------------------------

@pytest.mark.parametrize("writer", [feed.record_added, feed.record_revised])
@pytest.mark.parametrize("index", range(4))
def test_a_feed_round_trips_and_is_valid(writer, index):
    record = japanese_patients()[index]
    message = writer(record, sender=SOURCE, receiver=MANAGER, message_id="m-1", now=NOW)
    assert_valid(message)
    received = messages.read_message(travel(message))
    assert received.problems == []
    assert received.patient == record
    assert [i.assigning_authority_name for i in received.patient.ids] == [
        i.assigning_authority_name for i in record.ids]
    assert (received.header.message_id, received.header.creation_time, received.header.sender,
            received.header.receiver) == (Identifier("m-1"), "20261207032619+0000", SOURCE, MANAGER)
    assert received.revised == (writer is feed.record_revised)


def test_names_come_back_unchanged_code_point_for_code_point():
    record = japanese_patients()[2]
    received = feed.read_patient_feed(travel(feed.record_added(record, sender=SOURCE, receiver=MANAGER)))
    for written, read in zip(record.names, received.patient.names, strict=True):
        assert [list(map(ord, p)) for p in (*read.family, *read.given, read.text)] == [
            list(map(ord, p)) for p in (*written.family, *written.given, written.text)]


def test_a_merge_round_trips_and_is_valid():
    survivor = japanese_patients()[0]
    subsumed = [Identifier(HOSPITAL, "H0099", "香川中央病院"), Identifier(CLINIC, "C-12")]
    message = feed.duplicates_resolved(survivor, subsumed, sender=SOURCE, receiver=MANAGER)
    assert_valid(message)
    received = messages.read_message(travel(message))
    assert received.problems == [] and received.patient == survivor and received.subsumed == subsumed
    assert received.subsumed[0].assigning_authority_name == "香川中央病院"


def test_pix_add_message_is_the_runners_patient_and_passes_the_rules():
    message = pix_add_message("P1^^^&1.2.3&ISO", sender="1.2.3.4", receiver="1.2.3.5")
    assert_valid(message)
    received = feed.read_patient_feed(travel(message))
    assert received.problems == [] and received.patient == PatientRecord(
        ids=[Identifier("1.2.3", "P1")], names=[PersonName(family=("APPLESEED",), given=("JOHN",))], gender="M",
        birth_time="19710101", provider_organization="1.2.3", sender="1.2.3.4")
    assert received.header.processing_code == "T"


# --- ITI-46 -----------------------------------------------------------------------------------

def test_an_update_notification_carries_the_persons_ids_and_is_valid():
    ids = [Identifier(KAGAWA, "K-000001"), Identifier(HOSPITAL, "H0001"), Identifier(CLINIC, "C-77"),
           Identifier(KAGAWA, "K-000009"), Identifier(CLINIC, "C-78")]
    message = feed.update_notification(ids, sender=MANAGER, receiver="1.2.392.200119.6.102.137.9.3", now=NOW)
    assert_valid(message)
    received = messages.read_message(travel(message))
    assert received.problems == [] and received.header.interaction == "PRPA_IN201302UV02"
    # The first domain's ids are Patient.id; every other domain has an asOtherIDs of its own.
    assert received.patient.ids == [Identifier(KAGAWA, "K-000001"), Identifier(KAGAWA, "K-000009")]
    assert received.patient.other_ids == [Identifier(HOSPITAL, "H0001"), Identifier(CLINIC, "C-77"),
                                          Identifier(CLINIC, "C-78")]
    assert received.patient.names == [] and received.patient.provider_organization == KAGAWA
    with_names = feed.update_notification(ids[:1], sender=MANAGER, receiver="1.2.3", record=japanese_patients()[0])
    assert_valid(with_names)
    assert feed.read_patient_feed(with_names).patient.names == japanese_patients()[0].names


# --- acknowledgements -------------------------------------------------------------------------

def test_accept_acknowledgements_are_valid_for_each_outcome():
    request = feed.read_patient_feed(feed.record_added(japanese_patients()[0], sender=SOURCE, receiver=MANAGER))
    details = [error("SYN110", "more than one patient in one feed: 山田 and 髙橋",
                     "/PRPA_IN201301UV02/controlActProcess/subject[2]"),
               warning("SYN103", "administrativeGenderCode 'U' is not M, F or UN")]
    for type_code, given in (("AA", []), ("AE", details), ("AR", [error("NS200", "unsupported interaction")]),
                             ("CA", [])):
        message = ack.accept_acknowledgement(request.header, type_code if type_code == "CA" else None, given,
                                             message_id="a-1", now=NOW)
        assert_valid(message)
        read = ack.read_accept_acknowledgement(travel(message))
        assert read.ok and read.acknowledgement.type_code == type_code
        assert read.acknowledgement.target_message_id == request.header.message_id
        assert read.acknowledgement.details == given
        assert (read.header.sender, read.header.receiver) == (MANAGER, SOURCE)


# --- ITI-45 -----------------------------------------------------------------------------------

def test_a_pix_query_round_trips_and_is_valid():
    message = pix.pix_query(Identifier(HOSPITAL, "H0001"), [KAGAWA, CLINIC], sender="1.2.3.7", receiver=MANAGER,
                            query_id=Identifier("1.2.3.7.1", "q-1"))
    assert_valid(message)
    query = pix.read_pix_query(travel(message))
    assert query.problems == []
    assert (query.patient_id, query.data_sources, query.query_id) == (
        Identifier(HOSPITAL, "H0001"), [KAGAWA, CLINIC], Identifier("1.2.3.7.1", "q-1"))


@pytest.mark.parametrize("case", ["OK", "NF", "unknown id", "unknown domain", "bad query"])
def test_pix_query_responses_are_valid_for_each_case(case):
    query = pix.read_pix_query(pix.pix_query(Identifier(HOSPITAL, "H0001"), [KAGAWA, CLINIC, "1.9.9"],
                                             sender="1.2.3.7", receiver=MANAGER))
    ids, details = [], []
    if case == "OK":
        ids = [Identifier(KAGAWA, "K-000001"), Identifier(CLINIC, "C-77"), Identifier(KAGAWA, "K-000009")]
    elif case == "unknown id":
        details = [unknown_key_identifier("H0001 is not known in 1.2.392.200119.6.102.137.1.1",
                                          pix.PATIENT_IDENTIFIER_LOCATION)]
    elif case == "unknown domain":
        details = [unknown_key_identifier("domain 1.9.9 is not known", pix.data_source_location(2))]
    elif case == "bad query":
        details = [error("SYN110", "the query names 2 patients", "/PRPA_IN201309UV02/controlActProcess")]
    message = pix.pix_query_response(query, ids, details=details, message_id="r-1", now=NOW)
    assert_valid(message)
    response = pix.read_pix_query_response(travel(message))
    expected = {"OK": ("AA", "OK"), "NF": ("AA", "NF")}.get(case, ("AE", "AE"))
    assert (response.acknowledgement.type_code, response.query_response_code) == expected
    assert response.acknowledgement.details == details and response.query_id == query.query_id
    assert sorted(response.ids, key=lambda i: (i.root, i.extension)) == sorted(ids, key=lambda i: (i.root, i.extension))
    assert response.header.receiver == "1.2.3.7"


# --- ITI-47 -----------------------------------------------------------------------------------

def full_query() -> pdq.PdqQuery:
    return pdq.PdqQuery(
        query_id=Identifier("1.2.3.7.2", "pdq-1"),
        living_subject_names=[PersonName(family=("ﾔﾏﾀﾞ",), uses=("SRCH",)),
                              PersonName(family=("山田",), given=("太郎",), uses=("IDE",))],
        living_subject_birth_time=Interval(low="19700101", high="19721231"),
        living_subject_administrative_gender="M",
        patient_addresses=[Address(city="高松市", state="香川県")],
        living_subject_ids=[Identifier(HOSPITAL, "H0001")],
        mothers_maiden_name=PersonName(family=("佐藤",)),
        patient_telecoms=[Telecom("tel:+81-87-831-1111", ("HP",))],
        other_ids_scoping_organizations=[KAGAWA, CLINIC],
        initial_quantity=2, match_algorithm="NFKC-kana", minimum_degree_match=80)


def parameters(query: pdq.PdqQuery) -> dict:
    return {k: v for k, v in vars(query).items() if k not in ("header", "problems")}


def test_a_pdq_query_with_every_parameter_round_trips_and_is_valid():
    written = full_query()
    message = pdq.pdq_query(written, sender="1.2.3.7", receiver=MANAGER)
    assert_valid(message)
    query = pdq.read_pdq_query(travel(message))
    assert query.problems == []
    assert parameters(query) == parameters(written)
    exact_day = pdq.read_pdq_query(pdq.pdq_query(pdq.PdqQuery(living_subject_birth_time=Interval("19710101")),
                                                 sender="1.2.3.7", receiver=MANAGER))
    assert exact_day.living_subject_birth_time == Interval("19710101") and exact_day.query_id is not None


def test_a_pdq_response_carries_every_demographic_and_its_score():
    query = pdq.read_pdq_query(pdq.pdq_query(full_query(), sender="1.2.3.7", receiver=MANAGER))
    patients = japanese_patients()
    matches = [pdq.PdqMatch(record, score) for record, score in zip(patients, (100, 87, 60, 0), strict=True)]
    message = pdq.pdq_query_response(query, matches[:2], total=4, remaining=2, message_id="r-2", now=NOW)
    assert_valid(message)
    response = pdq.read_pdq_query_response(travel(message))
    assert response.problems == [] and response.query_response_code == "OK"
    assert (response.result_total_quantity, response.result_current_quantity, response.result_remaining_quantity) == (
        4, 2, 2)
    for written, read in zip(matches[:2], response.matches, strict=True):
        expected = PatientRecord(**{**vars(written.record), "sender": None})
        assert read.record == expected and read.score == written.score
    assert response.acknowledgement.target_message_id == query.header.message_id

    everyone = pdq.pdq_query_response(query, matches)
    assert_valid(everyone)
    assert [m.record.names for m in pdq.read_pdq_query_response(travel(everyone)).matches] == [
        p.names for p in patients]


def test_the_continuation_protocol():
    query = pdq.read_pdq_query(pdq.pdq_query(full_query(), sender="1.2.3.7", receiver=MANAGER))
    first = pdq.pdq_query_response(query, [pdq.PdqMatch(r, 90) for r in japanese_patients()[:2]], total=4,
                                   remaining=2, message_id="r-first")
    assert_valid(first)
    more = pdq.query_continuation(query.query_id, Identifier("r-first"), continuation_quantity=2,
                                  sender="1.2.3.7", receiver=MANAGER, message_id="c-1", now=NOW)
    assert_valid(more)
    continuation = messages.read_message(travel(more))
    assert continuation.problems == []
    assert (continuation.query_id, continuation.continuation_quantity, continuation.target_message_id,
            continuation.cancel) == (query.query_id, 2, Identifier("r-first"), False)
    assert INTERACTIONS[continuation.header.interaction].action == "urn:hl7-org:v3:QUQI_IN000003UV01_Continue"
    second = pdq.pdq_query_response(query, [pdq.PdqMatch(r, 50) for r in japanese_patients()[2:]],
                                    request=continuation.header, total=4, remaining=0)
    assert_valid(second)
    read = pdq.read_pdq_query_response(travel(second))
    assert read.acknowledgement.target_message_id == Identifier("c-1") and read.query_id == query.query_id
    assert (read.result_total_quantity, read.result_current_quantity, read.result_remaining_quantity) == (4, 2, 0)

    stop = pdq.query_continuation(query.query_id, Identifier("r-first"), cancel=True, sender="1.2.3.7",
                                  receiver=MANAGER)
    assert_valid(stop)
    cancel = messages.read_message(travel(stop))
    assert cancel.problems == [] and cancel.cancel and cancel.header.interaction == "QUQI_IN000003UV01_Cancel"
    assert INTERACTIONS["QUQI_IN000003UV01_Cancel"].response == "MCCI_IN000002UV01"
    answer = ack.accept_acknowledgement(cancel.header)
    assert_valid(answer)


@pytest.mark.parametrize("case", ["NF", "unknown domain", "bad parameter", "unknown query"])
def test_pdq_responses_are_valid_for_each_case(case):
    query = pdq.read_pdq_query(pdq.pdq_query(full_query(), sender="1.2.3.7", receiver=MANAGER))
    details = {
        "NF": [],
        "unknown domain": [unknown_key_identifier("domain 1.2.392.200119.6.102.137.1.2 is not known",
                                                  pdq.other_ids_location(1))],
        "bad parameter": [error("SYN103", "livingSubjectAdministrativeGender 'X' is not M, F or UN",
                                "/PRPA_IN201305UV02/controlActProcess/queryByParameter/parameterList/"
                                "livingSubjectAdministrativeGender/value")],
        "unknown query": [unknown_key_identifier("no query pdq-1 to continue", "/QUQI_IN000003UV01/controlActProcess/"
                                                 "queryContinuation/queryId")],
    }[case]
    message = pdq.pdq_query_response(query, [], details=details)
    assert_valid(message)
    response = pdq.read_pdq_query_response(travel(message))
    expected = {"NF": ("AA", "NF"), "bad parameter": ("AE", "QE")}.get(case, ("AE", "AE"))
    assert (response.acknowledgement.type_code, response.query_response_code) == expected
    assert response.acknowledgement.details == details and response.matches == []
    assert (response.result_total_quantity, response.result_current_quantity, response.result_remaining_quantity) == (
        0, 0, 0)


def test_a_response_to_a_query_too_broken_to_read_is_still_valid_by_the_schema():
    broken = pdq.read_pdq_query(etree.fromstring(b'<PRPA_IN201305UV02 xmlns="urn:hl7-org:v3" ITSVersion="XML_1.0"/>'))
    assert not broken.ok
    message = pdq.pdq_query_response(broken, details=broken.problems, sender=MANAGER)
    assert schemas().validate(message) == []
    assert pdq.read_pdq_query_response(message).query_response_code == "AE"
