"""Names every HL7v3 module here shares: the namespaces, the code systems and fixed codes of the
PIX/PDQ messages, the interactions with their SOAP actions, and the two small element helpers
the writers are built from.

Nothing here reads or writes a message; it is the vocabulary the readers and writers agree on.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass

from lxml import etree

V3 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
NSMAP = {None: V3, "xsi": XSI}

#: The root of interactionId and of the trigger event codes (HL7 interaction ids).
INTERACTION_ROOT = "2.16.840.1.113883.1.6"
#: AdministrativeGender (M, F, UN).
ADMINISTRATIVE_GENDER = "2.16.840.1.113883.5.1"
#: PersonalRelationshipRoleType: MTH carries the mother's maiden name.
PERSONAL_RELATIONSHIP_ROLE_TYPE = "2.16.840.1.113883.5.111"
MOTHER = "MTH"

#: An ISO OID as the Gazelle Schematron checks it: ^[0-2](\.(0|[1-9][0-9]*))*$
OID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))*", re.ASCII)


def is_oid(value: str | None) -> bool:
    return bool(value) and OID.fullmatch(value) is not None


def tag(name: str) -> str:
    """The Clark name of an element of the HL7v3 namespace."""
    return f"{{{V3}}}{name}"


#: Clark names by local name: a PDQ answer of 100 patients creates about 2,700 elements.
_TAGS: dict[str, str] = {}


def sub(parent: etree._Element, name: str, attributes: dict[str, str] | None = None, /,
        **more: str | None) -> etree._Element:
    """A child of `parent` in the HL7v3 namespace; attributes whose value is None are left out."""
    # Lean on purpose: the messages are built element by element, and the merging and
    # filtering this did for every element was a third of building a PDQ answer (the bytes are
    # the same: attributes keep their order).
    qname = _TAGS.get(name) or _TAGS.setdefault(name, tag(name))
    if attributes:
        more = {**attributes, **more}
    if None in more.values():
        more = {k: v for k, v in more.items() if v is not None}
    return etree.SubElement(parent, qname, more)


def root_element(name: str) -> etree._Element:
    """The root of a message: <name ITSVersion="XML_1.0"> with the default namespace v3."""
    return etree.Element(tag(name), {"ITSVersion": "XML_1.0"}, nsmap=NSMAP)


def new_message_id() -> str:
    return str(uuid.uuid4())


def ts(moment: dt.datetime) -> str:
    """An HL7 TS to the second, in UTC and saying so: 20261207032619+0000."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y%m%d%H%M%S+0000")


@dataclass(frozen=True)
class Interaction:
    """One message the PIX Manager / PDQ Supplier receives, as the IHE WSDLs name it."""

    name: str               # the root element
    transaction: str        # ITI-44, ITI-45, ITI-47
    trigger_event: str      # controlActProcess/code/@code
    action: str             # wsa:Action of the request
    response: str           # the root element of the answer
    response_action: str
    operation: str          # the WSDL operation (IPF's iti44-pix / iti45 / iti47 WSDLs)


INTERACTIONS: dict[str, Interaction] = {i.name: i for i in (
    Interaction("PRPA_IN201301UV02", "ITI-44", "PRPA_TE201301UV02", "urn:hl7-org:v3:PRPA_IN201301UV02",
                "MCCI_IN000002UV01", "urn:hl7-org:v3:MCCI_IN000002UV01", "PIXManager_PRPA_IN201301UV02"),
    Interaction("PRPA_IN201302UV02", "ITI-44", "PRPA_TE201302UV02", "urn:hl7-org:v3:PRPA_IN201302UV02",
                "MCCI_IN000002UV01", "urn:hl7-org:v3:MCCI_IN000002UV01", "PIXManager_PRPA_IN201302UV02"),
    Interaction("PRPA_IN201304UV02", "ITI-44", "PRPA_TE201304UV02", "urn:hl7-org:v3:PRPA_IN201304UV02",
                "MCCI_IN000002UV01", "urn:hl7-org:v3:MCCI_IN000002UV01", "PIXManager_PRPA_IN201304UV02"),
    Interaction("PRPA_IN201309UV02", "ITI-45", "PRPA_TE201309UV02", "urn:hl7-org:v3:PRPA_IN201309UV02",
                "PRPA_IN201310UV02", "urn:hl7-org:v3:PRPA_IN201310UV02", "PIXManager_PRPA_IN201309UV02"),
    Interaction("PRPA_IN201305UV02", "ITI-47", "PRPA_TE201305UV02", "urn:hl7-org:v3:PRPA_IN201305UV02",
                "PRPA_IN201306UV02", "urn:hl7-org:v3:PRPA_IN201306UV02", "PDSupplier_PRPA_IN201305UV02"),
    Interaction("QUQI_IN000003UV01", "ITI-47", "PRPA_TE000003UV01", "urn:hl7-org:v3:QUQI_IN000003UV01_Continue",
                "PRPA_IN201306UV02", "urn:hl7-org:v3:PRPA_IN201306UV02", "PDSupplier_QUQI_IN000003UV01_Continue"),
    Interaction("QUQI_IN000003UV01_Cancel", "ITI-47", "PRPA_TE000003UV01",
                "urn:hl7-org:v3:QUQI_IN000003UV01_Cancel", "MCCI_IN000002UV01", "urn:hl7-org:v3:MCCI_IN000002UV01",
                "PDSupplier_QUQI_IN000003UV01_Cancel"),
)}

#: What the PIX Manager sends (ITI-46) and the messages it answers with.
UPDATE_NOTIFICATION_ACTION = "urn:hl7-org:v3:PRPA_IN201302UV02"
