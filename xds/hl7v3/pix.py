"""PIXV3 Query (ITI-45, ITI TF-2 3.45): the Patient Registry Get Identifiers Query
PRPA_IN201309UV02 and its answer PRPA_IN201310UV02.

    read_pix_query(message)          -> PixQuery(header, query_id, patient_id, data_sources, problems)
    pix_query_response(query, ids, ...)  PRPA_IN201310UV02: OK with the person's ids, NF, or AE with
                                     acknowledgementDetails (ITI TF-2 3.45.4.2.3)
    pix_query(patient_id, ...)       PRPA_IN201309UV02, as a consumer sends it (tests, clients)
    read_pix_query_response(message) the answer read back (tests, clients)

The expected actions of 3.45.4.2.3, and what the service passes here for each:

    the id is known, ids exist in the domains asked for    pix_query_response(query, ids)        AA / OK
    the id is known, no id in the domains asked for        pix_query_response(query, [])         AA / NF
    the id (or its domain) is not known                    details=[unknown_key_identifier(
                                                               text, PATIENT_IDENTIFIER_LOCATION)]  AE / AE
    a domain in dataSource is not known                    one detail per domain, at
                                                               data_source_location(n)           AE / AE
    the query itself is wrong (the reader's problems)      details=query.problems                AE / AE

The queried-for id is not among the ids returned (it is echoed in queryByParameter).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from lxml import etree

from xds.hl7v3.datatypes import Problems, check_code, child, children, location, read_code, read_ii, write_ii
from xds.hl7v3.details import AcknowledgementDetail, error
from xds.hl7v3.ns import INTERACTION_ROOT, is_oid, new_message_id, root_element, sub
from xds.hl7v3.patient import read_ids, write_identifiers_patient
from xds.hl7v3.wrapper import (
    Acknowledgement,
    Received,
    check_root,
    read_acknowledgement,
    read_control_act,
    read_header,
    write_acknowledgement,
    write_answer_header,
    write_header,
)
from xds.model.person import Identifier

QUERY, RESPONSE = "PRPA_IN201309UV02", "PRPA_IN201310UV02"
PARAMETERS = f"/{QUERY}/controlActProcess/queryByParameter/parameterList"
#: Where an unknown patient id is (ITI TF-2 3.45.4.2.3: the value element of the parameter).
PATIENT_IDENTIFIER_LOCATION = f"{PARAMETERS}/patientIdentifier/value"


def data_source_location(index: int) -> str:
    """The value element of the dataSource parameter `index` (0-based) with its repetition number."""
    return f"{PARAMETERS}/dataSource[{index + 1}]/value"


@dataclass
class PixQuery(Received):
    query_id: Identifier | None = None
    #: The id asked about (patientIdentifier/value).
    patient_id: Identifier | None = None
    #: The domains asked for (dataSource/value/@root), in order; none means every domain.
    data_sources: list[str] = field(default_factory=list)


def read_query_priority(query: etree._Element, problems: Problems) -> None:
    priority = child(query, "responsePriorityCode")
    value = read_code(priority)
    if value == "D":
        problems.append(error("NS250", "responsePriorityCode D (deferred response) is not supported; "
                                       "use I (immediate)", location(priority)))
    else:
        check_code(priority, "I", problems, "responsePriorityCode", where=f"{location(query)}/responsePriorityCode")


def read_query_by_parameter(message: etree._Element, root: str, trigger: str, result, *,
                            query_id_for: str = "") -> etree._Element | None:
    """The queryByParameter of a query message (PIX or PDQ), with its header, queryId,
    statusCode and priority read into `result` (its header, query_id and problems); None,
    with the problems saying why, when the message holds none."""
    problems: Problems = result.problems
    if not check_root(message, root, problems):
        return None
    result.header = read_header(message, problems)
    control = read_control_act(message, trigger, problems)
    if control is None:
        return None
    query = child(control, "queryByParameter")
    if query is None:
        problems.append(error("SYN100", "the query has no queryByParameter", f"{location(control)}/queryByParameter"))
        return None
    at = location(query)
    result.query_id = read_ii(child(query, "queryId"))
    if result.query_id is None:
        problems.append(error("SYN105", "the query has no queryId" + query_id_for, f"{at}/queryId"))
    check_code(child(query, "statusCode"), "new", problems, "queryByParameter statusCode", where=f"{at}/statusCode")
    read_query_priority(query, problems)
    return query


def read_pix_query(message: etree._Element) -> PixQuery:
    result = PixQuery(problems=[])
    problems = result.problems
    query = read_query_by_parameter(message, QUERY, "PRPA_TE201309UV02", result)
    if query is None:
        return result
    parameters = child(query, "parameterList")
    if parameters is None:
        problems.append(error("SYN100", "the query has no parameterList", f"{location(query)}/parameterList"))
        return result

    identifiers = children(parameters, "patientIdentifier")
    if not identifiers:
        problems.append(error("SYN105", "the query names no patient (parameterList has no patientIdentifier)",
                              f"{location(parameters)}/patientIdentifier"))
    elif len(identifiers) > 1:
        problems.append(error("SYN110", f"the query names {len(identifiers)} patients; ITI-45 asks about exactly one "
                                        "patientIdentifier", location(identifiers[1])))
    if identifiers:
        values = children(identifiers[0], "value")
        if len(values) > 1:
            problems.append(error("SYN112", f"patientIdentifier has {len(values)} values; it must have exactly one",
                                  location(values[1])))
        if not values or read_ii(values[0]) is None:
            problems.append(error("SYN105" if not values else "SYN109", "patientIdentifier has no value (the id asked "
                                  "about)", location(values[0]) if values else f"{location(identifiers[0])}/value"))
        else:
            result.patient_id = read_ii(values[0])
            if not result.patient_id.root:
                problems.append(error("SYN101", f"the patient id '{result.patient_id.extension}' has no root: its "
                                                "domain (assigning authority OID) is needed", location(values[0])))
            if not result.patient_id.extension:
                problems.append(error("SYN101", f"the patient id in domain {result.patient_id.root} has no extension "
                                                "(the id itself)", location(values[0])))

    for source in children(parameters, "dataSource"):
        values = children(source, "value")
        if len(values) != 1:
            problems.append(error("SYN105" if not values else "SYN112",
                                  f"dataSource has {len(values)} values; each dataSource holds exactly one",
                                  location(source)))
        for value in values:
            root = value.get("root")
            if value.get("extension"):
                problems.append(error("SYN111", "dataSource value has an extension; it names a domain by its root "
                                                "alone", location(value)))
            if not root:
                problems.append(error("SYN101", "dataSource value has no root (the domain's OID)", location(value)))
            elif not is_oid(root):
                problems.append(error("SYN102", f"dataSource value root '{root}' is not an ISO OID", location(value)))
            else:
                result.data_sources.append(root)
    return result


def _query_by_parameter(control: etree._Element, query: PixQuery) -> None:
    parameters_of = sub(control, "queryByParameter")
    write_ii(parameters_of, "queryId", query.query_id)
    sub(parameters_of, "statusCode", code="new")
    sub(parameters_of, "responsePriorityCode", code="I")
    parameters = sub(parameters_of, "parameterList")
    for root in query.data_sources:
        source = sub(parameters, "dataSource")
        sub(source, "value", root=root)
        sub(source, "semanticsText").text = "DataSource.id"
    identifier = sub(parameters, "patientIdentifier")
    write_ii(identifier, "value", query.patient_id)
    sub(identifier, "semanticsText").text = "Patient.id"


def pix_query_response(query: PixQuery, ids: Sequence[Identifier] = (), *, query_response_code: str | None = None,
                       details: Sequence[AcknowledgementDetail] = (), sender: str | None = None,
                       message_id: str | None = None, now: dt.datetime | None = None) -> etree._Element:
    """PRPA_IN201310UV02 answering `query`. `ids` are the person's ids in the domains asked for
    (without the queried-for id). The response code is OK when there are ids, NF when there
    are none, AE when `details` hold an error; acknowledgement typeCode AA for OK/NF, else AE.
    `sender` is our device OID (by default the device the query was addressed to)."""
    if query_response_code is None:
        query_response_code = "AE" if any(d.is_error for d in details) else ("OK" if ids else "NF")
    message = root_element(RESPONSE)
    write_answer_header(message, query.header, sender=sender, message_id=message_id, now=now)
    write_acknowledgement(message, "AA" if query_response_code in ("OK", "NF") else "AE", query.header.message_id,
                          details)
    control = sub(message, "controlActProcess", classCode="CACT", moodCode="EVN")
    sub(control, "code", code="PRPA_TE201310UV02", codeSystem=INTERACTION_ROOT)
    if ids and query_response_code == "OK":
        event = sub(sub(control, "subject", typeCode="SUBJ"), "registrationEvent", classCode="REG", moodCode="EVN")
        sub(event, "id", nullFlavor="NA")
        sub(event, "statusCode", code="active")
        write_identifiers_patient(sub(event, "subject1", typeCode="SBJ"), ids)
        entity = sub(sub(event, "custodian", typeCode="CST"), "assignedEntity", classCode="ASSIGNED")
        write_ii(entity, "id", ids[0].root or None)
    ack = sub(control, "queryAck")
    if query.query_id is not None:
        write_ii(ack, "queryId", query.query_id)
    sub(ack, "statusCode", code="deliveredResponse")
    sub(ack, "queryResponseCode", code=query_response_code)
    _query_by_parameter(control, query)
    return message


def pix_query(patient_id: Identifier, data_sources: Sequence[str] = (), *, sender: str, receiver: str,
              query_id: Identifier | None = None, message_id: str | None = None,
              now: dt.datetime | None = None, processing_code: str = "P") -> etree._Element:
    """PRPA_IN201309UV02 (ITI TF-2 3.45.4.1): which ids has the person `patient_id` in the
    domains `data_sources` (all when empty)?"""
    message_id = message_id or new_message_id()
    message = root_element(QUERY)
    write_header(message, message_id=message_id, now=now, processing_code=processing_code, accept_ack_code="AL",
                 sender=sender, receiver=receiver)
    control = sub(message, "controlActProcess", classCode="CACT", moodCode="EVN")
    sub(control, "code", code="PRPA_TE201309UV02", codeSystem=INTERACTION_ROOT)
    _query_by_parameter(control, PixQuery(query_id=query_id or Identifier(message_id), patient_id=patient_id,
                                          data_sources=list(data_sources)))
    return message


@dataclass
class QueryResponse(Received):
    """What every query answer read back (consumer side) has: the acknowledgement, and the
    queryAck's response code and query id (PRPA_IN201310UV02, PRPA_IN201306UV02)."""

    acknowledgement: Acknowledgement | None = None
    query_response_code: str = ""
    query_id: Identifier | None = None


def read_query_response(message: etree._Element, root: str, trigger_event: str,
                        result: QueryResponse) -> tuple[etree._Element | None, etree._Element | None]:
    """Read the wrapper, the acknowledgement and the queryAck of the answer `message` into
    `result`; its controlActProcess and queryAck, for what the answer carries beyond them (None
    when the message is not a `root`: the problems say so)."""
    if not check_root(message, root, result.problems):
        return None, None
    result.header = read_header(message, result.problems, request=False)
    result.acknowledgement = read_acknowledgement(message)
    control = read_control_act(message, trigger_event, result.problems)
    ack = child(control, "queryAck")
    result.query_response_code = read_code(child(ack, "queryResponseCode")) or ""
    result.query_id = read_ii(child(ack, "queryId"))
    return control, ack


@dataclass
class PixQueryResponse(QueryResponse):
    #: Patient.id then every asOtherIDs id, in order.
    ids: list[Identifier] = field(default_factory=list)


def read_pix_query_response(message: etree._Element) -> PixQueryResponse:
    result = PixQueryResponse()
    control, _ = read_query_response(message, RESPONSE, "PRPA_TE201310UV02", result)
    patient = child(child(child(child(control, "subject"), "registrationEvent"), "subject1"), "patient")
    if patient is not None:
        result.ids = read_ids(children(patient, "id"), result.problems, "Patient.id")
        for other in children(child(patient, "patientPerson"), "asOtherIDs"):
            scoping = read_ii(child(child(other, "scopingOrganization"), "id"))
            result.ids.extend(read_ids(children(other, "id"), result.problems, "asOtherIDs.id", scoping))
    return result
