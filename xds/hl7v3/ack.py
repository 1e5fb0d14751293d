"""The accept acknowledgement MCCI_IN000002UV01 (ITI TF-2 Appendix O.1.2): the answer to a
feed (ITI-44), to an update notification (ITI-46) and to a query cancel (ITI-47).

    acknowledgement_type(problems)        AA when no problem is an error, AR when the message
                                          itself is not supported (NS2xx: interaction, processing
                                          code or mode), else AE
    accept_acknowledgement(request, ...)  MCCI_IN000002UV01 to the request's sender, its
                                          acknowledgementDetails a person can act on
    read_accept_acknowledgement(message)  the same read back (clients, tests)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from xds.hl7v3.datatypes import Problems
from xds.hl7v3.details import AcknowledgementDetail
from xds.hl7v3.ns import root_element
from xds.hl7v3.wrapper import (
    Acknowledgement,
    MessageHeader,
    Received,
    check_root,
    read_acknowledgement,
    read_header,
    write_acknowledgement,
    write_answer_header,
)

ACK = "MCCI_IN000002UV01"


def acknowledgement_type(problems: Sequence[AcknowledgementDetail]) -> str:
    errors = [p for p in problems if p.is_error]
    if not errors:
        return "AA"
    if any(p.code.startswith("NS2") for p in errors):
        return "AR"
    return "AE"


def accept_acknowledgement(request: MessageHeader | None, type_code: str | None = None,
                           details: Sequence[AcknowledgementDetail] = (), *, sender: str | None = None,
                           message_id: str | None = None, now: dt.datetime | None = None) -> etree._Element:
    """MCCI_IN000002UV01 acknowledging `request` (its header as read; None when the message was
    too broken to have one). `type_code` defaults to acknowledgement_type(details). `sender`
    is our device OID (by default the device the request was addressed to)."""
    message = root_element(ACK)
    write_answer_header(message, request, sender=sender, message_id=message_id, now=now)
    write_acknowledgement(message, type_code or acknowledgement_type(details),
                          request.message_id if request else None, list(details))
    return message


@dataclass
class AcceptAcknowledgement(Received):
    acknowledgement: Acknowledgement | None = None


def read_accept_acknowledgement(message: etree._Element) -> AcceptAcknowledgement:
    problems: Problems = []
    if not check_root(message, ACK, problems):
        return AcceptAcknowledgement(problems=problems)
    return AcceptAcknowledgement(header=read_header(message, problems, request=False), problems=problems,
                                 acknowledgement=read_acknowledgement(message))
