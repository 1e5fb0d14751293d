"""What a reader found wrong with a message, in the form the answer carries it: an HL7v3
AcknowledgementDetail (MCCI_MT000200UV01 / MCCI_MT000300UV01): a type (E error, W warning, I
information), a code, a text a person can act on, and the location (an XPath into the message).

Readers return these instead of raising; the service puts them, unchanged, into the
acknowledgement (AE / AR) or the query response (AE / QE). The codes are HL7's
AcknowledgementDetailCode (2.16.840.1.113883.5.1100), except the one IHE names for unknown keys,
204 of HL7 table 0357 (ITI TF-2 3.45.4.2.3, 3.47.4.2.3).

    code     meaning (HL7)                              used here for
    SYN      syntax error                               a message the schema refuses
    SYN100   required association missing               no controlActProcess, subject, patient ...
    SYN101   required attribute missing                 an id without root, a code without code
    SYN102   data type error                            a birth time that is no TS, a count that is no INT
    SYN103   value not found in code system             an unknown gender code
    SYN105   required element missing                   no message id, no patient id, no query id ...
    SYN109   mandatory element with null value          every Patient.id null
    SYN110   number of association repetitions exceeds  more than one patient in one feed
    SYN112   number of attribute repetitions exceeds    two genders, two birth times in one query
    SYN111   value does not match fixed value           a trigger event code, a statusCode, a mode
    SYN113   formal constraint violation                replacementOf in an add, a bad minimumDegreeMatch
    NS200    unsupported interaction                    a root element that is no PIX/PDQ message
    NS202    unsupported processing id                  a processingCode other than P, D or T
    NS250    unsupported processing mode                responsePriorityCode D (deferred)
    204      unknown key identifier (table 0357)        an unknown patient id or domain (the service)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ACKNOWLEDGEMENT_DETAIL_CODE = "2.16.840.1.113883.5.1100"
#: HL7 table 0357, Message Error Condition Codes (IHE's 204 Unknown Key Identifier).
MESSAGE_ERROR_CONDITION = "2.16.840.1.113883.12.357"
UNKNOWN_KEY_IDENTIFIER = "204"

DISPLAY_NAMES = {
    "SYN": "Syntax error",
    "SYN100": "Required association missing",
    "SYN101": "Required attribute missing",
    "SYN102": "Data type error",
    "SYN103": "Value not found in code system",
    "SYN105": "Required element missing",
    "SYN109": "Mandatory element with null value",
    "SYN110": "Number of association repetitions exceeds limit",
    "SYN111": "Value does not match fixed value",
    "SYN112": "Number of attribute repetitions exceeds limit",
    "SYN113": "Formal constraint violation",
    "NS200": "Unsupported interaction",
    "NS202": "Unsupported processing id",
    "NS250": "Unsupported processing Mode",
    "INTERR": "Internal system error",
    UNKNOWN_KEY_IDENTIFIER: "Unknown Key Identifier",
}

TypeCode = Literal["E", "W", "I"]


@dataclass(frozen=True)
class AcknowledgementDetail:
    code: str
    text: str
    location: str = ""
    type_code: TypeCode = "E"
    code_system: str = ACKNOWLEDGEMENT_DETAIL_CODE

    @property
    def display_name(self) -> str:
        return DISPLAY_NAMES.get(self.code, "")

    @property
    def is_error(self) -> bool:
        return self.type_code == "E"

    def __str__(self) -> str:
        where = f" at {self.location}" if self.location else ""
        return f"{self.type_code} {self.code}: {self.text}{where}"


def error(code: str, text: str, location: str = "") -> AcknowledgementDetail:
    return AcknowledgementDetail(code, text, location)


def warning(code: str, text: str, location: str = "") -> AcknowledgementDetail:
    return AcknowledgementDetail(code, text, location, type_code="W")


def unknown_key_identifier(text: str, location: str) -> AcknowledgementDetail:
    """ITI TF-2 3.45.4.2.3 / 3.47.4.2.3: typeCode E, code 204, the location of the value element
    of the parameter that was not recognised (see xds.hl7v3.pix / pdq for the locations)."""
    return AcknowledgementDetail(UNKNOWN_KEY_IDENTIFIER, text, location, code_system=MESSAGE_ERROR_CONDITION)


def errors(details: list[AcknowledgementDetail]) -> list[AcknowledgementDetail]:
    return [d for d in details if d.is_error]
