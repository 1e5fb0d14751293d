"""The Patient Identity Feed HL7 V3 (ITI-44, ITI TF-2 3.44) and the PIX Update Notification
HL7 V3 (ITI-46, ITI TF-2 3.46): the messages that carry a patient's ids and demographics.

Read (the PIX Manager and the registry receive them):

    read_patient_feed(message)        PRPA_IN201301UV02 Patient Registry Record Added, or
                                      PRPA_IN201302UV02 Patient Registry Record Revised
                                      -> PatientFeed(header, patient, problems)
    read_duplicates_resolved(message) PRPA_IN201304UV02 Patient Registry Duplicates Resolved
                                      -> DuplicatesResolved(header, patient, subsumed, problems)

Written (a Patient Identity Source sends them: the conformance runner, tests; the PIX Manager
sends the ITI-46 one):

    record_added(record, ...)            PRPA_IN201301UV02
    record_revised(record, ...)          PRPA_IN201302UV02
    duplicates_resolved(record, subsumed, ...)  PRPA_IN201304UV02
    update_notification(ids, ...)        PRPA_IN201302UV02 as ITI-46 sends it: a person's ids
    pix_add_message(patient_id, ...)     the runner's test patient, fed by its CX id

A feed carries one patient (controlActProcess has one subject): a second one is an error
(SYN110), not a second patient. The registrationEvent is active; an add or a revise carries no
replacementOf; a merge carries at least one, each naming a subsumed id in
priorRegistration/subject1/priorRegisteredRole/id with priorRegistration statusCode obsolete.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from lxml import etree

from xds.hl7v3.datatypes import Problems, check_code, child, children, location
from xds.hl7v3.details import error
from xds.hl7v3.ns import INTERACTION_ROOT, root_element, sub
from xds.hl7v3.patient import provider_of, read_ids, read_patient, write_identifiers_patient, write_patient
from xds.hl7v3.wrapper import Received, check_root, read_control_act, read_header, write_header
from xds.model.person import Identifier, PatientRecord, PersonName

ADD, REVISE, MERGE = "PRPA_IN201301UV02", "PRPA_IN201302UV02", "PRPA_IN201304UV02"
TRIGGER_EVENTS = {ADD: "PRPA_TE201301UV02", REVISE: "PRPA_TE201302UV02", MERGE: "PRPA_TE201304UV02"}


@dataclass
class PatientFeed(Received):
    """An add or a revise: the patient as the source knows it (None when the message has none)."""

    patient: PatientRecord | None = None

    @property
    def revised(self) -> bool:
        return self.header.interaction == REVISE


@dataclass
class DuplicatesResolved(Received):
    """A merge: the surviving patient and the ids it subsumes (to be retired)."""

    patient: PatientRecord | None = None
    subsumed: list[Identifier] = field(default_factory=list)


def _registration_event(message: etree._Element, interaction: str, problems: Problems) -> etree._Element | None:
    control = read_control_act(message, TRIGGER_EVENTS[interaction], problems)
    if control is None:
        return None
    subjects = children(control, "subject")
    if not subjects:
        problems.append(error("SYN100", "the feed carries no patient (controlActProcess has no subject)",
                              f"{location(control)}/subject"))
        return None
    if len(subjects) > 1:
        problems.append(error("SYN110", f"more than one patient in one feed: controlActProcess has {len(subjects)} "
                                        "subjects; ITI-44 carries one patient per message, send one message each",
                              location(subjects[1])))
    event = child(subjects[0], "registrationEvent")
    if event is None:
        problems.append(error("SYN100", "the subject has no registrationEvent",
                              f"{location(subjects[0])}/registrationEvent"))
        return None
    check_code(child(event, "statusCode"), "active", problems, "registrationEvent statusCode",
               where=f"{location(event)}/statusCode")
    return event


def _patient(event: etree._Element, problems: Problems) -> etree._Element | None:
    patient = child(child(event, "subject1"), "patient")
    if patient is None:
        problems.append(error("SYN100", "the registrationEvent has no subject1/patient",
                              f"{location(event)}/subject1/patient"))
    return patient


def read_patient_feed(message: etree._Element) -> PatientFeed:
    problems: Problems = []
    if not check_root(message, {ADD, REVISE}, problems):
        return PatientFeed(problems=problems)
    header = read_header(message, problems)
    feed = PatientFeed(header=header, problems=problems)
    event = _registration_event(message, header.interaction, problems)
    if event is None:
        return feed
    for replacement in children(event, "replacementOf"):
        problems.append(error("SYN113", "replacementOf is not allowed in an add or a revise; a merge is "
                                        "PRPA_IN201304UV02", location(replacement)))
    patient = _patient(event, problems)
    if patient is not None:
        feed.patient = read_patient(patient, problems)
        feed.patient.sender = header.sender or None
    return feed


def read_duplicates_resolved(message: etree._Element) -> DuplicatesResolved:
    problems: Problems = []
    if not check_root(message, MERGE, problems):
        return DuplicatesResolved(problems=problems)
    header = read_header(message, problems)
    merge = DuplicatesResolved(header=header, problems=problems)
    event = _registration_event(message, MERGE, problems)
    if event is None:
        return merge
    patient = _patient(event, problems)
    if patient is not None:
        merge.patient = read_patient(patient, problems)
        merge.patient.sender = header.sender or None
    replacements = children(event, "replacementOf")
    if not replacements:
        problems.append(error("SYN100", "the merge names no subsumed patient: registrationEvent has no replacementOf",
                              f"{location(event)}/replacementOf"))
    for replacement in replacements:
        prior = child(replacement, "priorRegistration")
        if prior is None:
            problems.append(error("SYN100", "replacementOf has no priorRegistration",
                                  f"{location(replacement)}/priorRegistration"))
            continue
        check_code(child(prior, "statusCode"), "obsolete", problems, "priorRegistration statusCode",
                   where=f"{location(prior)}/statusCode")
        role = child(child(prior, "subject1"), "priorRegisteredRole")
        ids = read_ids(children(role, "id"), problems, "priorRegisteredRole.id")
        if not ids:
            problems.append(error("SYN105", "priorRegistration names no subsumed patient id "
                                            "(subject1/priorRegisteredRole/id)",
                                  f"{location(prior)}/subject1/priorRegisteredRole/id"))
        merge.subsumed.extend(ids)
    if merge.patient is not None:
        for identifier in merge.subsumed:
            if identifier in merge.patient.ids:
                problems.append(error("SYN113", f"the merge subsumes the surviving id {identifier.cx} itself",
                                      f"{location(event)}/replacementOf"))
    return merge


# --- writing ----------------------------------------------------------------------------------

def _feed(interaction: str, *, sender: str, receiver: str, message_id: str | None, now: dt.datetime | None,
          processing_code: str) -> tuple[etree._Element, etree._Element]:
    """The message up to registrationEvent/subject1 (returned with the message)."""
    message = root_element(interaction)
    write_header(message, message_id=message_id, now=now, processing_code=processing_code, accept_ack_code="AL",
                 sender=sender, receiver=receiver)
    control = sub(message, "controlActProcess", classCode="CACT", moodCode="EVN")
    sub(control, "code", code=TRIGGER_EVENTS[interaction], codeSystem=INTERACTION_ROOT)
    event = sub(sub(control, "subject", typeCode="SUBJ"), "registrationEvent", classCode="REG", moodCode="EVN")
    sub(event, "id", nullFlavor="NA")
    sub(event, "statusCode", code="active")
    subject1 = sub(event, "subject1", typeCode="SBJ")
    return message, subject1


def _custodian(event: etree._Element, root: str | None) -> None:
    entity = sub(sub(event, "custodian", typeCode="CST"), "assignedEntity", classCode="ASSIGNED")
    if root:
        sub(entity, "id", root=root)
    else:
        sub(entity, "id", nullFlavor="NI")


def _record_message(interaction: str, record: PatientRecord, *, sender: str, receiver: str, message_id: str | None,
                    now: dt.datetime | None, processing_code: str,
                    subsumed: Sequence[Identifier] = ()) -> etree._Element:
    message, subject1 = _feed(interaction, sender=sender, receiver=receiver, message_id=message_id,
                              now=now, processing_code=processing_code)
    write_patient(subject1, record)
    event = subject1.getparent()
    _custodian(event, provider_of(record))
    for identifier in subsumed:
        prior = sub(sub(event, "replacementOf", typeCode="RPLC"), "priorRegistration", classCode="REG", moodCode="EVN")
        sub(prior, "statusCode", code="obsolete")
        role = sub(sub(prior, "subject1", typeCode="SBJ"), "priorRegisteredRole", classCode="PAT")
        sub(role, "id", root=identifier.root or None, extension=identifier.extension or None,
            assigningAuthorityName=identifier.assigning_authority_name or None)
    return message


def record_added(record: PatientRecord, *, sender: str, receiver: str, message_id: str | None = None,
                 now: dt.datetime | None = None, processing_code: str = "P") -> etree._Element:
    """PRPA_IN201301UV02 (ITI TF-2 3.44.4.1): `record` with all its demographics, from the
    device `sender` to the device `receiver` (OIDs)."""
    return _record_message(ADD, record, sender=sender, receiver=receiver, message_id=message_id, now=now,
                           processing_code=processing_code)


def record_revised(record: PatientRecord, *, sender: str, receiver: str, message_id: str | None = None,
                   now: dt.datetime | None = None, processing_code: str = "P") -> etree._Element:
    """PRPA_IN201302UV02 (ITI TF-2 3.44.4.1): the patient's new demographics."""
    return _record_message(REVISE, record, sender=sender, receiver=receiver, message_id=message_id, now=now,
                           processing_code=processing_code)


def duplicates_resolved(record: PatientRecord, subsumed: Sequence[Identifier], *, sender: str, receiver: str,
                        message_id: str | None = None, now: dt.datetime | None = None,
                        processing_code: str = "P") -> etree._Element:
    """PRPA_IN201304UV02 (ITI TF-2 3.44.4.2): `record` survives, each id of `subsumed` is merged
    into it (one replacementOf each). The Gazelle rules want the survivor's name (Person.name
    non-null): a record without names is written NA and fails them."""
    return _record_message(MERGE, record, sender=sender, receiver=receiver, message_id=message_id, now=now,
                           processing_code=processing_code, subsumed=subsumed)


def update_notification(ids: Sequence[Identifier], *, sender: str, receiver: str, record: PatientRecord | None = None,
                        message_id: str | None = None, now: dt.datetime | None = None,
                        processing_code: str = "P") -> etree._Element:
    """PRPA_IN201302UV02 as the PIX Manager sends it (ITI-46, ITI TF-2 3.46.4.1): the ids a person
    now has in the domains the consumer asked for; the first domain's ids in Patient.id, each
    other domain's in an asOtherIDs. Person.name is nullFlavor NA unless `record` gives names."""
    message, subject1 = _feed(REVISE, sender=sender, receiver=receiver, message_id=message_id, now=now,
                              processing_code=processing_code)
    write_identifiers_patient(subject1, ids, record=record)
    _custodian(subject1.getparent(), next((i.root for i in ids if i.root), None))
    return message


def pix_add_message(patient_id: str, *, sender: str, receiver: str, message_id: str | None = None,
                    now: dt.datetime | None = None) -> etree._Element:
    """PRPA_IN201301UV02 (ITI TF-2b 3.44.4.1, Patient Registry Record Added) for a CX patient
    id `id^^^&OID&ISO`: the patient's id is <id root=OID extension=id/>. The name and birth
    date are the toolkit's test patient (its ADT^A01 template: APPLESEED^JOHN, 19710101, M)."""
    pid, _, _, authority = patient_id.split("^", 3)
    oid = authority.split("&")[1]
    record = PatientRecord(ids=[Identifier(oid, pid)], names=[PersonName(family=("APPLESEED",), given=("JOHN",))],
                           gender="M", birth_time="19710101", provider_organization=oid)
    return record_added(record, sender=sender, receiver=receiver, message_id=message_id, now=now,
                        processing_code="T")
