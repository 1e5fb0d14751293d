"""HL7v3 messages of the Patient Identity Feed (ITI-44), as a Patient Identity Source sends
them: the conformance runner feeds the registry under test with them, and the PIX Manager reads
the same messages (ITI TF-2b 3.44)."""

from __future__ import annotations

import datetime as dt
import uuid

from lxml import etree


def pix_add_message(patient_id: str, *, sender: str, receiver: str, message_id: str | None = None,
                    now: dt.datetime | None = None) -> etree._Element:
    """PRPA_IN201301UV02 (ITI TF-2b 3.44.4.1, Patient Registry Record Added) for a CX patient
    id `id^^^&OID&ISO`: the patient's id is <id root=OID extension=id/>. The name and birth
    date are the toolkit's test patient (its ADT^A01 template: APPLESEED^JOHN, 19710101, M)."""
    pid, _, _, authority = patient_id.split("^", 3)
    oid = authority.split("&")[1]
    now = now or dt.datetime.now(dt.UTC)
    v3 = "{urn:hl7-org:v3}"

    def sub(parent: etree._Element, name: str, **attributes: str) -> etree._Element:
        return etree.SubElement(parent, v3 + name, attributes)

    message = etree.Element(v3 + "PRPA_IN201301UV02", {"ITSVersion": "XML_1.0"}, nsmap={None: "urn:hl7-org:v3"})
    sub(message, "id", root=message_id or str(uuid.uuid4()))
    sub(message, "creationTime", value=now.strftime("%Y%m%d%H%M%S"))
    sub(message, "interactionId", root="2.16.840.1.113883.1.6", extension="PRPA_IN201301UV02")
    sub(message, "processingCode", code="T")
    sub(message, "processingModeCode", code="T")
    sub(message, "acceptAckCode", code="AL")
    for role, type_code, oid_value in (("receiver", "RCV", receiver), ("sender", "SND", sender)):
        device = sub(sub(message, role, typeCode=type_code), "device", classCode="DEV", determinerCode="INSTANCE")
        sub(device, "id", root=oid_value)
    control = sub(message, "controlActProcess", classCode="CACT", moodCode="EVN")
    sub(control, "code", code="PRPA_TE201301UV02", codeSystem="2.16.840.1.113883.1.6")
    event = sub(sub(control, "subject", typeCode="SUBJ"), "registrationEvent", classCode="REG", moodCode="EVN")
    sub(event, "id", nullFlavor="NA")
    sub(event, "statusCode", code="active")
    patient = sub(sub(event, "subject1", typeCode="SBJ"), "patient", classCode="PAT")
    sub(patient, "id", root=oid, extension=pid)
    sub(patient, "statusCode", code="active")
    person = sub(patient, "patientPerson", classCode="PSN", determinerCode="INSTANCE")
    name = sub(person, "name")
    sub(name, "given").text = "JOHN"
    sub(name, "family").text = "APPLESEED"
    sub(person, "administrativeGenderCode", code="M")
    sub(person, "birthTime", value="19710101")
    organization = sub(patient, "providerOrganization", classCode="ORG", determinerCode="INSTANCE")
    sub(organization, "id", root=oid)
    sub(organization, "contactParty", classCode="CON")
    custodian = sub(sub(event, "custodian", typeCode="CST"), "assignedEntity", classCode="ASSIGNED")
    sub(custodian, "id", root=oid)
    return message
