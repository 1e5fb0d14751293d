"""What each reader says about a bad message: the problem (code, a text a person can act on, the
location) that the acknowledgement carries; and that no content makes a reader raise.

Organised by message: the transmission wrapper, ITI-44 feeds and merges, ITI-45 queries,
ITI-47 queries and continuations, and then every public sample broken in every way one edit can
break it (each element removed, each attribute removed or set to nonsense).
"""

from __future__ import annotations

import copy

import pytest
from lxml import etree

from tests.test_hl7v3_validation import CONFORMANCE, assert_valid, message_of, needs_data, schemas
from xds.hl7v3 import ack, feed, messages, pdq, pix
from xds.hl7v3.details import AcknowledgementDetail
from xds.hl7v3.messages import Unsupported
from xds.hl7v3.wrapper import Received
from xds.model.person import Identifier, PatientRecord, PersonName

V3 = "urn:hl7-org:v3"
SOURCE, MANAGER = "1.2.3.1", "1.2.3.2"
RECORD = PatientRecord(ids=[Identifier("1.2.3", "P1")], names=[PersonName(family=("山田",))], gender="F",
                       birth_time="19800101", provider_organization="1.2.3")


def find(message: etree._Element, path: str) -> etree._Element:
    """The element at `path` (v3 local names separated by /, from the message)."""
    found = message.xpath("/".join(f"v3:{step}" for step in path.split("/")), namespaces={"v3": V3})
    assert found, path
    return found[0]


def remove(message: etree._Element, path: str) -> etree._Element:
    element = find(message, path)
    element.getparent().remove(element)
    return message


def codes(received: Received) -> list[tuple[str, str, str]]:
    return [(p.type_code, p.code, p.location) for p in received.problems]


def add_message() -> etree._Element:
    return feed.record_added(RECORD, sender=SOURCE, receiver=MANAGER)


PATIENT = "controlActProcess/subject/registrationEvent/subject1/patient"
PERSON = f"{PATIENT}/patientPerson"


# --- the transmission wrapper -----------------------------------------------------------------

def test_a_good_feed_has_no_problem():
    received = messages.read_message(add_message())
    assert received.problems == [] and received.ok


@needs_data
def test_unknown_interactions_are_refused_with_ns200_and_answered_ar():
    for body in (etree.fromstring(f'<PRPA_IN201303UV02 xmlns="{V3}"/>'),
                 etree.fromstring('<PRPA_IN201301UV02 xmlns="urn:example"/>'),
                 etree.fromstring("<Envelope/>")):
        received = messages.read_message(body)
        assert isinstance(received, Unsupported) and [p.code for p in received.problems] == ["NS200"]
        assert "unsupported interaction" in received.problems[0].text
        assert ack.acknowledgement_type(received.problems) == "AR"
    # An unknown v3 message with a readable wrapper is answered to its sender.
    other = add_message()
    other.tag = f"{{{V3}}}PRPA_IN201311UV02"
    received = messages.read_message(other)
    assert isinstance(received, Unsupported) and received.header.sender == SOURCE
    answer = ack.accept_acknowledgement(received.header, details=received.problems)
    assert_valid(answer)
    assert ack.read_accept_acknowledgement(answer).acknowledgement.type_code == "AR"


def test_the_wrapper_rules():
    message = add_message()
    find(message, "interactionId").set("extension", "PRPA_IN201302UV02")
    find(message, "processingModeCode").set("code", "R")
    find(message, "acceptAckCode").set("code", "NE")
    find(message, "processingCode").set("code", "X")
    find(message, "creationTime").set("value", "20261331")
    message.append(copy.deepcopy(find(message, "receiver")))
    message.insert(7, copy.deepcopy(find(message, "receiver")))
    received = messages.read_message(message)
    assert codes(received) == [
        ("E", "SYN102", "/PRPA_IN201301UV02/creationTime"),
        ("E", "SYN111", "/PRPA_IN201301UV02/interactionId"),
        ("E", "NS202", "/PRPA_IN201301UV02/processingCode"),
        ("E", "NS250", "/PRPA_IN201301UV02/processingModeCode"),
        ("E", "SYN111", "/PRPA_IN201301UV02/acceptAckCode"),
        ("E", "SYN110", "/PRPA_IN201301UV02/receiver[2]"),
    ]
    assert "it must be PRPA_IN201301UV02" in received.problems[1].text
    assert "no such month" in received.problems[0].text
    assert ack.acknowledgement_type(received.problems) == "AR"  # an unsupported processing code or mode


def test_devices_without_ids():
    message = add_message()
    remove(message, "sender/device/id")
    find(message, "receiver/device/id").set("extension", "x")
    received = messages.read_message(message)
    assert codes(received) == [("W", "SYN111", "/PRPA_IN201301UV02/receiver/device/id"),
                               ("E", "SYN101", "/PRPA_IN201301UV02/sender/device")]
    assert received.header.sender == "" and received.patient.sender is None


# --- ITI-44 -----------------------------------------------------------------------------------

@needs_data
def test_more_than_one_patient_in_one_feed():
    message = add_message()
    control = find(message, "controlActProcess")
    control.append(copy.deepcopy(find(message, "controlActProcess/subject")))
    received = messages.read_message(message)
    [problem] = received.problems
    assert (problem.code, problem.location) == ("SYN110", "/PRPA_IN201301UV02/controlActProcess/subject[2]")
    assert problem.text.startswith("more than one patient in one feed")
    answer = ack.accept_acknowledgement(received.header, details=received.problems)
    assert_valid(answer)
    [detail] = ack.read_accept_acknowledgement(answer).acknowledgement.details
    assert detail == problem and ack.read_accept_acknowledgement(answer).acknowledgement.type_code == "AE"


@pytest.mark.parametrize("path, expected", [
    ("controlActProcess", ("SYN100", "/PRPA_IN201301UV02/controlActProcess")),
    ("controlActProcess/subject", ("SYN100", "/PRPA_IN201301UV02/controlActProcess/subject")),
    ("controlActProcess/subject/registrationEvent/subject1",
     ("SYN100", "/PRPA_IN201301UV02/controlActProcess/subject/registrationEvent/subject1/patient")),
    (f"{PATIENT}/id", ("SYN105", f"/PRPA_IN201301UV02/{PATIENT}/id")),
    (f"{PATIENT}/patientPerson", ("SYN100", f"/PRPA_IN201301UV02/{PATIENT}/patientPerson")),
    ("controlActProcess/code", ("SYN105", "/PRPA_IN201301UV02/controlActProcess/code")),
    ("controlActProcess/subject/registrationEvent/statusCode",
     ("SYN105", "/PRPA_IN201301UV02/controlActProcess/subject/registrationEvent/statusCode")),
])
def test_a_missing_required_element(path, expected):
    received = messages.read_message(remove(add_message(), path))
    assert [(p.code, p.location) for p in received.errors] == [expected]


def test_feed_content_errors():
    message = add_message()
    find(message, f"{PATIENT}/id").attrib.clear()
    find(message, f"{PATIENT}/id").set("nullFlavor", "UNK")
    find(message, "controlActProcess/code").set("code", "PRPA_TE201302UV02")
    find(message, f"{PERSON}/birthTime").set("value", "1980-01-01")
    find(message, f"{PERSON}/administrativeGenderCode").set("code", "U")
    person = find(message, PERSON)
    etree.SubElement(person, f"{{{V3}}}deceasedInd", value="yes")
    etree.SubElement(person, f"{{{V3}}}multipleBirthOrderNumber", value="two")
    event = find(message, "controlActProcess/subject/registrationEvent")
    etree.SubElement(event, f"{{{V3}}}replacementOf")
    received = messages.read_message(message)
    assert [(p.type_code, p.code) for p in received.problems] == [
        ("E", "SYN111"), ("E", "SYN113"), ("E", "SYN109"), ("W", "SYN103"), ("E", "SYN102"), ("E", "SYN102"),
        ("E", "SYN102")]
    texts = [p.text for p in received.problems]
    assert "controlActProcess code (the trigger event) is 'PRPA_TE201302UV02'" in texts[0]
    assert "replacementOf is not allowed in an add or a revise" in texts[1]
    assert "every Patient.id is null" in texts[2]
    assert received.patient.gender == "U"  # kept as written, with its warning
    assert "'1980-01-01' is not an HL7 TS" in texts[4]
    assert "deceasedInd 'yes' is not a boolean" in texts[5] and "'two' is not an integer" in texts[6]


def test_merge_rules():
    def merge() -> etree._Element:
        return feed.duplicates_resolved(RECORD, [Identifier("1.2.3", "OLD")], sender=SOURCE, receiver=MANAGER)

    assert messages.read_message(merge()).problems == []
    event = "controlActProcess/subject/registrationEvent"
    received = messages.read_message(remove(merge(), f"{event}/replacementOf"))
    assert codes(received) == [("E", "SYN100", f"/PRPA_IN201304UV02/{event}/replacementOf")]
    assert "names no subsumed patient" in received.problems[0].text

    message = merge()
    find(message, f"{event}/replacementOf/priorRegistration/statusCode").set("code", "active")
    remove(message, f"{event}/replacementOf/priorRegistration/subject1/priorRegisteredRole/id")
    received = messages.read_message(message)
    assert [p.code for p in received.problems] == ["SYN111", "SYN105"] and received.subsumed == []

    itself = feed.duplicates_resolved(RECORD, RECORD.ids, sender=SOURCE, receiver=MANAGER)
    received = messages.read_message(itself)
    assert [p.code for p in received.problems] == ["SYN113"]
    assert "subsumes the surviving id" in received.problems[0].text

    several = feed.duplicates_resolved(RECORD, [Identifier("1.2.3", "A"), Identifier("1.2.4", "B")],
                                       sender=SOURCE, receiver=MANAGER)
    assert messages.read_message(several).subsumed == [Identifier("1.2.3", "A"), Identifier("1.2.4", "B")]


# --- ITI-45 -----------------------------------------------------------------------------------

PARAMETERS = "controlActProcess/queryByParameter/parameterList"


def pix_message() -> etree._Element:
    return pix.pix_query(Identifier("1.2.3", "P1"), ["1.2.4"], sender=SOURCE, receiver=MANAGER)


@needs_data
def test_pix_query_errors():
    message = pix_message()
    parameters = find(message, PARAMETERS)
    parameters.append(copy.deepcopy(find(message, f"{PARAMETERS}/patientIdentifier")))
    find(message, f"{PARAMETERS}/dataSource/value").set("extension", "x")
    find(message, "controlActProcess/queryByParameter/responsePriorityCode").set("code", "D")
    received = messages.read_message(message)
    assert codes(received) == [
        ("E", "NS250", "/PRPA_IN201309UV02/controlActProcess/queryByParameter/responsePriorityCode"),
        ("E", "SYN110", f"/PRPA_IN201309UV02/{PARAMETERS}/patientIdentifier[2]"),
        ("E", "SYN111", f"/PRPA_IN201309UV02/{PARAMETERS}/dataSource/value"),
    ]
    message = pix_message()
    find(message, f"{PARAMETERS}/dataSource/value").set("root", "not-an-oid")
    find(message, f"{PARAMETERS}/patientIdentifier/value").attrib.pop("root")
    received = messages.read_message(message)
    assert [p.code for p in received.problems] == ["SYN101", "SYN102"]
    assert "has no root: its domain" in received.problems[0].text and received.data_sources == []

    received = messages.read_message(remove(pix_message(), f"{PARAMETERS}/patientIdentifier"))
    assert codes(received) == [("E", "SYN105", f"/PRPA_IN201309UV02/{PARAMETERS}/patientIdentifier")]
    assert received.patient_id is None
    answer = pix.pix_query_response(received, details=received.problems)
    assert schemas().validate(answer) == []


# --- ITI-47 -----------------------------------------------------------------------------------

def pdq_message(**parameters) -> etree._Element:
    query = pdq.PdqQuery(living_subject_names=[PersonName(family=("ﾔﾏﾀﾞ",))], **parameters)
    return pdq.pdq_query(query, sender=SOURCE, receiver=MANAGER)


@needs_data
def test_pdq_query_errors():
    message = pdq_message(living_subject_administrative_gender="X", initial_quantity=0, minimum_degree_match=150)
    parameters = find(message, PARAMETERS)
    parameters.insert(0, copy.deepcopy(find(message, f"{PARAMETERS}/livingSubjectAdministrativeGender")))
    extra = etree.SubElement(parameters, f"{{{V3}}}livingSubjectDeceasedTime")
    etree.SubElement(extra, f"{{{V3}}}value", value="2020")
    etree.SubElement(extra, f"{{{V3}}}semanticsText").text = "LivingSubject.deceasedTime"
    received = messages.read_message(message)
    at = f"/PRPA_IN201305UV02/{PARAMETERS}"
    assert codes(received) == [
        ("E", "SYN113", "/PRPA_IN201305UV02/controlActProcess/queryByParameter/initialQuantity"),
        ("E", "SYN113",
         "/PRPA_IN201305UV02/controlActProcess/queryByParameter/matchCriterionList/minimumDegreeMatch/value"),
        ("E", "SYN113", f"{at}/livingSubjectDeceasedTime"),
        ("E", "SYN110", f"{at}/livingSubjectAdministrativeGender[2]"),
        ("E", "SYN103", f"{at}/livingSubjectAdministrativeGender[1]/value"),
    ]
    assert pdq.response_code_for(received.problems) == "QE"
    answer = pdq.pdq_query_response(received, details=received.problems)
    assert_valid(answer)
    assert pdq.read_pdq_query_response(answer).query_response_code == "QE"


def test_pdq_query_value_errors():
    message = pdq_message()
    time = etree.Element(f"{{{V3}}}livingSubjectBirthTime")
    etree.SubElement(time, f"{{{V3}}}value")
    etree.SubElement(time, f"{{{V3}}}semanticsText").text = "LivingSubject.birthTime"
    find(message, PARAMETERS).insert(0, time)
    other = etree.SubElement(find(message, PARAMETERS), f"{{{V3}}}otherIDsScopingOrganization")
    etree.SubElement(other, f"{{{V3}}}value", root="1.2.3", extension="x")
    received = messages.read_message(message)
    assert [(p.code, p.text) for p in received.problems] == [
        ("SYN101", "livingSubjectBirthTime has neither a value nor low/high bounds"),
        ("SYN111", "otherIDsScopingOrganization value has an extension; it names a domain by its root alone")]
    assert received.other_ids_scoping_organizations == ["1.2.3"]


def test_a_pdq_query_without_parameters():
    received = messages.read_message(pdq.pdq_query(pdq.PdqQuery(other_ids_scoping_organizations=["1.2.3"]),
                                                   sender=SOURCE, receiver=MANAGER))
    assert [p.code for p in received.problems] == ["SYN105"] and "no demographic parameter" in received.problems[0].text
    assert pdq.response_code_for(received.problems) == "QE"


def test_continuation_errors():
    message = pdq.query_continuation(Identifier("q"), Identifier("r"), continuation_quantity=5, sender=SOURCE,
                                     receiver=MANAGER)
    find(message, "controlActProcess/queryContinuation/statusCode").set("code", "new")
    find(message, "acknowledgement/typeCode").set("code", "AE")
    remove(message, "controlActProcess/queryContinuation/queryId")
    received = messages.read_message(message)
    assert [p.code for p in received.problems] == ["SYN111", "SYN105", "SYN111"]
    assert not received.cancel and received.continuation_quantity == 5
    received = messages.read_message(remove(pdq.query_continuation(Identifier("q"), Identifier("r"), sender=SOURCE,
                                                                   receiver=MANAGER), "acknowledgement"))
    assert [p.code for p in received.problems] == ["SYN100"] and received.target_message_id is None
    aborted = pdq.query_continuation(Identifier("q"), Identifier("r"), sender=SOURCE, receiver=MANAGER)
    find(aborted, "controlActProcess/queryContinuation/statusCode").set("code", "aborted")
    assert messages.read_message(aborted).cancel


# --- no content makes a reader raise ----------------------------------------------------------

SAMPLES = sorted(p for d in ("iti-44", "iti-45", "iti-47") for p in (CONFORMANCE / d).rglob("*.xml"))


def mutations(message: etree._Element):
    """Every message one edit away from `message`: an element removed, an attribute removed, an
    attribute set to '' or to nonsense, an element's text replaced."""
    def element(copy_: etree._Element, index: int) -> etree._Element:
        return [e for e in copy_.iter() if isinstance(e.tag, str)][index]

    elements = [e for e in message.iter() if isinstance(e.tag, str)]
    for index in range(1, len(elements)):
        copy_ = copy.deepcopy(message)
        found = element(copy_, index)
        found.getparent().remove(found)
        yield copy_
    for index, original in enumerate(elements):
        for name in list(original.attrib):
            for value in (None, "", "x\u3000𠮷", "-1"):
                copy_ = copy.deepcopy(message)
                found = element(copy_, index)
                if value is None:
                    del found.attrib[name]
                else:
                    found.set(name, value)
                yield copy_
        copy_ = copy.deepcopy(message)
        element(copy_, index).text = "\ufffd garbage <>"
        yield copy_


@needs_data
@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_no_sample_broken_by_one_edit_makes_a_reader_raise(path):
    message = copy.deepcopy(message_of(path))
    for extra in message.findall(f"{{{V3}}}controlActProcess/{{{V3}}}subject")[2:]:
        extra.getparent().remove(extra)  # the PDQ answers repeat one structure; two are enough
    count = 0
    readers = [messages.read_message, feed.read_patient_feed, pix.read_pix_query_response,
               pdq.read_pdq_query_response, ack.read_accept_acknowledgement]
    for broken in mutations(message):
        for reader in readers:
            received = reader(broken)
            assert isinstance(received, Received)
            assert all(isinstance(p, AcknowledgementDetail) and p.text for p in received.problems)
        count += 1
    assert count > len(list(message.iter()))


def test_odd_roots_do_not_make_a_reader_raise():
    for body in (etree.Comment("x"), etree.ProcessingInstruction("pi"),
                 etree.fromstring(f'<x:PRPA_IN201305UV02 xmlns:x="{V3}"/>'),
                 etree.fromstring(f'<PRPA_IN201301UV02 xmlns="{V3}"><controlActProcess><subject/></controlActProcess>'
                                  "</PRPA_IN201301UV02>")):
        received = messages.read_message(body)
        assert not received.ok
