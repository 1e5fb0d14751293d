"""The transmission wrapper every message has (MCCI_MT000100UV01 for requests, MCCI_MT000200UV01
and MCCI_MT000300UV01 for acknowledgements and responses; ITI TF-2 Appendix O.1): the message id,
creation time, interaction id, processing codes, acceptAckCode, one receiver and one sender
device; and, in answers, the acknowledgement with its details.

    read_header(message, problems)       MessageHeader, adding what is wrong to problems
    write_header(message, ...)           the wrapper of an answer or a request we send
    write_acknowledgement(message, ...)  <acknowledgement> with typeCode, targetMessage, details
    read_acknowledgement(message)        the same back, for clients and tests

The rules checked are those of Appendix O and of the Gazelle PIXv3/PDQv3 Schematron
(MCCI_IN000100UV01-errors and each message's own pattern): a message id and creation time,
interactionId naming the message, processingModeCode T, acceptAckCode AL, exactly one receiver
device and one sender device, each with an id root.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from lxml import etree

from xds.hl7v3.datatypes import (
    Problems,
    check_code,
    child,
    children,
    location,
    read_code,
    read_ii,
    read_ts,
    text_of,
    write_ii,
)
from xds.hl7v3.details import AcknowledgementDetail, error, warning
from xds.hl7v3.ns import INTERACTION_ROOT, V3, is_oid, new_message_id, sub, ts
from xds.model.person import Identifier

PROCESSING_CODES = {"P", "D", "T"}  # production, debugging, training


@dataclass
class MessageHeader:
    """The transmission wrapper of a message received (or of one sent, read back)."""

    #: The root element's name: PRPA_IN201301UV02, QUQI_IN000003UV01_Cancel ...
    interaction: str = ""
    message_id: Identifier | None = None
    creation_time: str | None = None
    #: interactionId/@extension, as written (the reader checks it names the message).
    interaction_id: str = ""
    processing_code: str = ""
    processing_mode_code: str = ""
    accept_ack_code: str = ""
    #: sender/device/id/@root and receiver/device/id/@root: the systems' device OIDs.
    sender: str = ""
    receiver: str = ""
    #: .../device/asAgent/representedOrganization/id/@root, when given.
    sender_organization: str = ""
    receiver_organization: str = ""


def read_header(message: etree._Element, problems: Problems, *, request: bool = True) -> MessageHeader:
    name = etree.QName(message).localname
    at = location(message)
    header = MessageHeader(interaction=name)

    id_element = child(message, "id")
    header.message_id = read_ii(id_element)
    if header.message_id is None:
        problems.append(error("SYN105", "the message has no id (a message id is required to acknowledge it)",
                              f"{at}/id"))
    creation = child(message, "creationTime")
    if creation is None:
        problems.append(error("SYN105", "the message has no creationTime", f"{at}/creationTime"))
    else:
        found: Problems = []
        header.creation_time = read_ts(creation, found, "creationTime")
        # An answer with a creationTime that is no real date still answers.
        problems.extend(found if request else [warning(p.code, p.text, p.location) for p in found])

    interaction = child(message, "interactionId")
    header.interaction_id = "" if interaction is None else interaction.get("extension") or ""
    expected = "QUQI_IN000003UV01" if name == "QUQI_IN000003UV01_Cancel" else name
    if interaction is None:
        problems.append(error("SYN105", f"the message has no interactionId; it must be {expected}",
                              f"{at}/interactionId"))
    elif header.interaction_id != expected:
        problems.append(error("SYN111", f"interactionId '{header.interaction_id}' does not name this message; "
                                        f"it must be {expected}", location(interaction)))

    processing = child(message, "processingCode")
    header.processing_code = read_code(processing) or ""
    if processing is None or not header.processing_code:
        problems.append(error("SYN105", "the message has no processingCode (P, D or T)", f"{at}/processingCode"))
    elif header.processing_code not in PROCESSING_CODES:
        problems.append(error("NS202", f"processingCode '{header.processing_code}' is not P, D or T",
                              location(processing)))
    mode = child(message, "processingModeCode")
    header.processing_mode_code = check_code(mode, "T", problems, "processingModeCode", code="NS250",
                                             where=f"{at}/processingModeCode") or ""
    ack = child(message, "acceptAckCode")
    if request:
        header.accept_ack_code = check_code(ack, "AL", problems, "acceptAckCode", where=f"{at}/acceptAckCode") or ""
    else:
        header.accept_ack_code = read_code(ack) or ""

    header.receiver, header.receiver_organization = _device(message, "receiver", problems)
    header.sender, header.sender_organization = _device(message, "sender", problems)
    return header


def _device(message: etree._Element, role: str, problems: Problems) -> tuple[str, str]:
    at = location(message)
    found = children(message, role)
    if not found:
        problems.append(error("SYN100", f"the message has no {role}", f"{at}/{role}"))
        return "", ""
    if len(found) > 1:
        problems.append(error("SYN110", f"the message has {len(found)} {role}s; IHE allows exactly one",
                              f"{at}/{role}[2]"))
    device = child(found[0], "device")
    ids = children(device, "id")
    if device is None or not ids or ids[0].get("root") is None:
        problems.append(error("SYN101", f"the {role} device has no id root (its OID)",
                              location(device) if device is not None else location(found[0])))
        return "", ""
    root = ids[0].get("root")
    if ids[0].get("extension"):
        problems.append(warning("SYN111", f"the {role} device id has an extension; IHE says device ids are "
                                          "a root (an OID) alone", location(ids[0])))
    if not is_oid(root):
        problems.append(warning("SYN102", f"the {role} device id root '{root}' is not an ISO OID",
                                location(ids[0])))
    organization = read_ii(child(child(child(device, "asAgent"), "representedOrganization"), "id"))
    return root, organization.root if organization else ""


def write_header(message: etree._Element, *, message_id: str | None, now: dt.datetime | None,
                 processing_code: str, accept_ack_code: str, sender: str | None, receiver: str | None,
                 sender_organization: str = "", receiver_organization: str = "") -> None:
    """The wrapper of a message we write: id, creationTime, interactionId (the root element's
    name), processingCode, processingModeCode T, acceptAckCode, receiver, sender. A device
    without a known id (the answer to a message too broken to say who sent it) gets
    <id nullFlavor="NI"/>."""
    name = etree.QName(message).localname
    sub(message, "id", root=message_id or new_message_id())
    sub(message, "creationTime", value=ts(now or dt.datetime.now(dt.timezone.utc)))
    sub(message, "interactionId", root=INTERACTION_ROOT,
        extension="QUQI_IN000003UV01" if name == "QUQI_IN000003UV01_Cancel" else name)
    sub(message, "processingCode", code=processing_code or "P")
    sub(message, "processingModeCode", code="T")
    sub(message, "acceptAckCode", code=accept_ack_code)
    for role, type_code, device_id, organization in (("receiver", "RCV", receiver, receiver_organization),
                                                    ("sender", "SND", sender, sender_organization)):
        device = sub(sub(message, role, typeCode=type_code), "device", classCode="DEV", determinerCode="INSTANCE")
        write_ii(device, "id", device_id or None)
        if organization:
            agent = sub(device, "asAgent", classCode="AGNT")
            write_ii(sub(agent, "representedOrganization", classCode="ORG", determinerCode="INSTANCE"), "id",
                     organization)


def write_answer_header(message: etree._Element, request: MessageHeader | None, *, sender: str | None,
                        message_id: str | None, now: dt.datetime | None) -> None:
    """The wrapper of an answer to `request`: to its sender, from `sender` (our device OID;
    by default the device the request was addressed to), processingCode echoed, acceptAckCode NE."""
    request = request or MessageHeader()
    write_header(message, message_id=message_id, now=now, processing_code=request.processing_code or "P",
                 accept_ack_code="NE", sender=sender or request.receiver, receiver=request.sender,
                 sender_organization=request.receiver_organization if not sender else "",
                 receiver_organization=request.sender_organization)


def write_acknowledgement(message: etree._Element, type_code: str, target: Identifier | None,
                          details: list[AcknowledgementDetail] | tuple[AcknowledgementDetail, ...] = ()) -> None:
    ack = sub(message, "acknowledgement")
    sub(ack, "typeCode", code=type_code)
    write_ii(sub(ack, "targetMessage"), "id", target)
    for detail in details:
        element = sub(ack, "acknowledgementDetail", typeCode=detail.type_code)
        sub(element, "code", code=detail.code, codeSystem=detail.code_system, displayName=detail.display_name or None)
        sub(element, "text").text = detail.text
        if detail.location:
            sub(element, "location").text = detail.location


@dataclass
class Received:
    """What every reader returns: the wrapper, the payload (in subclasses) and the problems found.
    A message is usable when no problem is an error (warnings are for people)."""

    header: MessageHeader = field(default_factory=MessageHeader)
    problems: list[AcknowledgementDetail] = field(default_factory=list)

    @property
    def errors(self) -> list[AcknowledgementDetail]:
        return [p for p in self.problems if p.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors


def check_root(message: etree._Element, names: set[str] | str, problems: Problems) -> bool:
    """Whether `message` is one of the v3 messages `names`; NS200 when it is not."""
    allowed = {names} if isinstance(names, str) else names
    q = etree.QName(message) if isinstance(message.tag, str) else None
    if q is not None and q.namespace == V3 and q.localname in allowed:
        return True
    found = f"{{{q.namespace}}}{q.localname}" if q is not None and q.namespace else (q.localname if q else "?")
    problems.append(error("NS200", f"unsupported interaction: {found} is not "
                                   f"{' or '.join(sorted(allowed))} of namespace {V3}",
                          "/" + (q.localname if q else "")))
    return False


def read_control_act(message: etree._Element, trigger_event: str, problems: Problems) -> etree._Element | None:
    """controlActProcess, checking its code names `trigger_event`."""
    control = child(message, "controlActProcess")
    if control is None:
        problems.append(error("SYN100", "the message has no controlActProcess",
                              f"{location(message)}/controlActProcess"))
        return None
    check_code(child(control, "code"), trigger_event, problems, "controlActProcess code (the trigger event)",
               where=f"{location(control)}/code")
    return control


@dataclass
class Acknowledgement:
    """An <acknowledgement> read back: typeCode, the message acknowledged, the details."""

    type_code: str = ""
    target_message_id: Identifier | None = None
    details: list[AcknowledgementDetail] = field(default_factory=list)


def read_acknowledgement(message: etree._Element) -> Acknowledgement | None:
    ack = child(message, "acknowledgement")
    if ack is None:
        return None
    details = []
    for element in children(ack, "acknowledgementDetail"):
        code = child(element, "code")
        if code is None and child(element, "text") is None and child(element, "location") is None:
            continue  # an empty <acknowledgementDetail/> says nothing
        details.append(AcknowledgementDetail(
            code=(code.get("code") if code is not None else "") or "", text=text_of(child(element, "text")),
            location=text_of(child(element, "location")), type_code=element.get("typeCode") or "E",
            code_system=(code.get("codeSystem") if code is not None else "") or ""))
    return Acknowledgement(read_code(child(ack, "typeCode")) or "",
                           read_ii(child(child(ack, "targetMessage"), "id")), details)
