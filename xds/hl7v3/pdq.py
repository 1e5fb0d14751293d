"""Patient Demographics Query HL7 V3 (ITI-47, ITI TF-2 3.47): the Find Candidates Query
PRPA_IN201305UV02, its answer PRPA_IN201306UV02, and the continuation protocol
(QUQI_IN000003UV01 continue / cancel, ITI TF-2 3.47.4.3).

    read_pdq_query(message)             -> PdqQuery(header, query_id, every parameter, problems)
    read_query_continuation(message)    -> QueryContinuation(header, query_id, quantity, cancel ...)
    pdq_query_response(query, matches, ...)  PRPA_IN201306UV02 with the matching patients, each with
                                        all its demographics and its score, and queryAck with
                                        resultTotalQuantity / resultCurrentQuantity /
                                        resultRemainingQuantity
    response_code_for(problems)         QE when a problem lies in queryByParameter, else AE
    pdq_query(query, ...), query_continuation(...), read_pdq_query_response(message)
                                        the consumer's side (tests, clients)

The parameters (ITI TF-2 3.47.4.1.2; PRPA_MT201306UV02.ParameterList), as PdqQuery keeps them:

    livingSubjectName              living_subject_names      PersonName each (use SRCH kept in uses)
    livingSubjectBirthTime         living_subject_birth_time Interval (value, or low/high)  0..1
    livingSubjectAdministrativeGender  ..._administrative_gender  M, F, UN                  0..1
    patientAddress                 patient_addresses         Address each
    livingSubjectId                living_subject_ids        Identifier each
    mothersMaidenName              mothers_maiden_name       PersonName                     0..1
    patientTelecom                 patient_telecoms          Telecom each
    otherIDsScopingOrganization    other_ids_scoping_organizations  the domains' OIDs
    initialQuantity                initial_quantity          how many matches the first answer holds
    matchCriterionList/matchAlgorithm, minimumDegreeMatch (0..100)

Parameters IHE leaves out (livingSubjectBirthPlaceAddress/Name, livingSubjectDeceasedTime,
patientStatusCode, principalCareProviderId, principalCareProvisionId) are refused (SYN113):
ignoring them would answer a wider query than the one asked.

The expected actions (ITI TF-2 3.47.4.2.3): matches: AA / OK; none: AA / NF; a domain of
otherIDsScopingOrganization not known: AE / AE with one unknown_key_identifier detail per domain at
other_ids_location(n); a query the reader refused: AE / response_code_for(problems).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from lxml import etree

from xds.hl7v3.datatypes import (
    Interval,
    Problems,
    check_code,
    child,
    children,
    location,
    read_ad,
    read_code,
    read_ii,
    read_int,
    read_ivl_ts,
    read_pn,
    read_tel,
    text_of,
    write_ad,
    write_ii,
    write_int,
    write_ivl_ts,
    write_pn,
    write_tel,
)
from xds.hl7v3.details import AcknowledgementDetail, error, warning
from xds.hl7v3.ns import ADMINISTRATIVE_GENDER, INTERACTION_ROOT, XSI, is_oid, new_message_id, root_element, sub
from xds.hl7v3.patient import GENDERS, provider_of, read_patient, write_patient, xsi_type_of
from xds.hl7v3.pix import QueryResponse, read_query_by_parameter, read_query_response
from xds.hl7v3.wrapper import (
    MessageHeader,
    Received,
    check_root,
    read_acknowledgement,
    read_control_act,
    read_header,
    write_acknowledgement,
    write_answer_header,
    write_header,
)
from xds.model.person import Address, Identifier, PatientRecord, PersonName, Telecom

QUERY, RESPONSE = "PRPA_IN201305UV02", "PRPA_IN201306UV02"
CONTINUE, CANCEL = "QUQI_IN000003UV01", "QUQI_IN000003UV01_Cancel"
PARAMETERS = f"/{QUERY}/controlActProcess/queryByParameter/parameterList"
NOT_SUPPORTED = ("livingSubjectBirthPlaceAddress", "livingSubjectBirthPlaceName", "livingSubjectDeceasedTime",
                 "patientStatusCode", "principalCareProviderId", "principalCareProvisionId")
SEMANTICS = {
    "livingSubjectAdministrativeGender": "LivingSubject.administrativeGender",
    "livingSubjectBirthTime": "LivingSubject.birthTime",
    "livingSubjectId": "LivingSubject.id",
    "livingSubjectName": "LivingSubject.name",
    "mothersMaidenName": "Person.MothersMaidenName",
    "otherIDsScopingOrganization": "OtherIDs.scopingOrganization.id",
    "patientAddress": "Patient.addr",
    "patientTelecom": "Patient.telecom",
}


def other_ids_location(index: int) -> str:
    """The value element of otherIDsScopingOrganization parameter `index` (0-based), with its
    repetition number (ITI TF-2 3.47.4.2.3)."""
    return f"{PARAMETERS}/otherIDsScopingOrganization[{index + 1}]/value"


@dataclass
class PdqQuery(Received):
    query_id: Identifier | None = None
    living_subject_names: list[PersonName] = field(default_factory=list)
    living_subject_birth_time: Interval | None = None
    living_subject_administrative_gender: str | None = None
    patient_addresses: list[Address] = field(default_factory=list)
    living_subject_ids: list[Identifier] = field(default_factory=list)
    mothers_maiden_name: PersonName | None = None
    patient_telecoms: list[Telecom] = field(default_factory=list)
    other_ids_scoping_organizations: list[str] = field(default_factory=list)
    initial_quantity: int | None = None
    match_algorithm: str | None = None
    minimum_degree_match: int | None = None

    @property
    def has_parameters(self) -> bool:
        return bool(self.living_subject_names or self.living_subject_birth_time or
                    self.living_subject_administrative_gender or self.patient_addresses or self.living_subject_ids
                    or self.mothers_maiden_name or self.patient_telecoms)


def _values(parameter: etree._Element, problems: Problems) -> list[etree._Element]:
    values = children(parameter, "value")
    if not values:
        problems.append(error("SYN105", f"{etree.QName(parameter).localname} has no value",
                              f"{location(parameter)}/value"))
    return values


def _single(parameters: etree._Element, name: str, problems: Problems) -> etree._Element | None:
    """The one value of a parameter that may appear once with one value."""
    found = children(parameters, name)
    if len(found) > 1:
        problems.append(error("SYN110", f"{name} appears {len(found)} times; it may appear once", location(found[1])))
    if not found:
        return None
    values = _values(found[0], problems)
    if len(values) > 1:
        problems.append(error("SYN112", f"{name} has {len(values)} values; it may have one", location(values[1])))
    return values[0] if values else None


def _match_criteria(query: etree._Element, result: PdqQuery, problems: Problems) -> None:
    criteria = child(query, "matchCriterionList")
    algorithm = child(child(criteria, "matchAlgorithm"), "value")
    if algorithm is not None:
        result.match_algorithm = text_of(algorithm) or None
        if xsi_type_of(algorithm) not in ("", "ST"):
            problems.append(warning("SYN102", f"matchAlgorithm value has xsi:type '{xsi_type_of(algorithm)}'; "
                                              "it must be ST", location(algorithm)))
    minimum = child(child(criteria, "minimumDegreeMatch"), "value")
    if minimum is not None:
        if xsi_type_of(minimum) not in ("", "INT"):
            problems.append(error("SYN102", f"minimumDegreeMatch value has xsi:type '{xsi_type_of(minimum)}'; "
                                            "it must be INT", location(minimum)))
        result.minimum_degree_match = read_int(minimum, problems, "minimumDegreeMatch")
        if result.minimum_degree_match is not None and not 0 <= result.minimum_degree_match <= 100:
            problems.append(error("SYN113", f"minimumDegreeMatch {result.minimum_degree_match} is not between "
                                            "0 and 100", location(minimum)))
            result.minimum_degree_match = None


def read_pdq_query(message: etree._Element) -> PdqQuery:
    result = PdqQuery(problems=[])
    problems = result.problems
    query = read_query_by_parameter(message, QUERY, "PRPA_TE201305UV02", result,
                                    query_id_for=" (needed to continue it)")
    if query is None:
        return result
    at = location(query)
    check_code(child(query, "responseModalityCode"), "R", problems, "responseModalityCode",
               where=f"{at}/responseModalityCode")
    quantity = child(query, "initialQuantity")
    result.initial_quantity = read_int(quantity, problems, "initialQuantity")
    if result.initial_quantity is not None and result.initial_quantity < 1:
        problems.append(error("SYN113", f"initialQuantity {result.initial_quantity} is not a positive number",
                              location(quantity)))
        result.initial_quantity = None
    _match_criteria(query, result, problems)

    parameters = child(query, "parameterList")
    if parameters is None:
        problems.append(error("SYN100", "the query has no parameterList", f"{at}/parameterList"))
        return result
    for name in NOT_SUPPORTED + ("id",):
        for element in children(parameters, name):
            problems.append(error("SYN113", f"{name} is not a query parameter of ITI-47 (ITI TF-2 3.47.4.1.2); "
                                            "leave it out", location(element)))

    gender = _single(parameters, "livingSubjectAdministrativeGender", problems)
    result.living_subject_administrative_gender = read_code(gender)
    if result.living_subject_administrative_gender not in GENDERS | {None}:
        problems.append(error("SYN103", "livingSubjectAdministrativeGender "
                                        f"'{result.living_subject_administrative_gender}' is not M, F or UN",
                              location(gender)))
    result.living_subject_birth_time = read_ivl_ts(_single(parameters, "livingSubjectBirthTime", problems), problems,
                                                   "livingSubjectBirthTime")
    result.mothers_maiden_name = read_pn(_single(parameters, "mothersMaidenName", problems))

    for parameter in children(parameters, "livingSubjectName"):
        result.living_subject_names.extend(n for n in map(read_pn, _values(parameter, problems)) if n is not None)
    for parameter in children(parameters, "patientAddress"):
        result.patient_addresses.extend(a for a in map(read_ad, _values(parameter, problems)) if a is not None)
    for parameter in children(parameters, "patientTelecom"):
        result.patient_telecoms.extend(t for t in map(read_tel, _values(parameter, problems)) if t is not None)
    for parameter in children(parameters, "livingSubjectId"):
        for value in _values(parameter, problems):
            identifier = read_ii(value)
            if identifier is None:
                continue
            if not identifier.root:
                problems.append(error("SYN101", f"livingSubjectId '{identifier.extension}' has no root: its domain "
                                                "(assigning authority OID) is needed", location(value)))
            result.living_subject_ids.append(identifier)
    for parameter in children(parameters, "otherIDsScopingOrganization"):
        for value in _values(parameter, problems):
            root = value.get("root")
            if value.get("extension"):
                problems.append(error("SYN111", "otherIDsScopingOrganization value has an extension; it names a "
                                                "domain by its root alone", location(value)))
            if not root:
                problems.append(error("SYN101", "otherIDsScopingOrganization value has no root (the domain's OID)",
                                      location(value)))
            elif not is_oid(root):
                problems.append(error("SYN102", f"otherIDsScopingOrganization root '{root}' is not an ISO OID",
                                      location(value)))
            else:
                result.other_ids_scoping_organizations.append(root)
    if not result.has_parameters and not any(p.is_error for p in problems):
        problems.append(error("SYN105", "the query has no demographic parameter (name, birth time, gender, address, "
                                        "id, mother's maiden name or telecom)", location(parameters)))
    return result


def response_code_for(problems: Sequence[AcknowledgementDetail]) -> str:
    """QE (query parameter error) when the query itself is wrong (a reader's SYN error in
    queryByParameter), else AE, as for an unknown domain (204, ITI TF-2 3.47.4.2.3)."""
    return "QE" if any(p.is_error and p.code.startswith("SYN") and "/queryByParameter" in p.location
                       for p in problems) else "AE"


# --- writing the query back (echoed in the response; the consumer's request) -----------------

def _parameter(parameters: etree._Element, name: str) -> etree._Element:
    return sub(parameters, name)


def _semantics(parameter: etree._Element) -> None:
    sub(parameter, "semanticsText").text = SEMANTICS[etree.QName(parameter).localname]


def write_query_by_parameter(control: etree._Element, query: PdqQuery) -> etree._Element:
    """queryByParameter (PRPA_MT201306UV02) from `query`, in the schema's order."""
    element = sub(control, "queryByParameter")
    write_ii(element, "queryId", query.query_id)
    sub(element, "statusCode", code="new")
    sub(element, "responseModalityCode", code="R")
    sub(element, "responsePriorityCode", code="I")
    if query.initial_quantity is not None:
        write_int(element, "initialQuantity", query.initial_quantity)
    if query.match_algorithm is not None or query.minimum_degree_match is not None:
        criteria = sub(element, "matchCriterionList")
        if query.match_algorithm is not None:
            algorithm = sub(criteria, "matchAlgorithm")
            value = sub(algorithm, "value")
            value.set(f"{{{XSI}}}type", "ST")
            value.text = query.match_algorithm
            sub(algorithm, "semanticsText").text = "LivingSubject.MatchAlgorithm"
        if query.minimum_degree_match is not None:
            minimum = sub(criteria, "minimumDegreeMatch")
            write_int(minimum, "value", query.minimum_degree_match, xsi_type=True)
            sub(minimum, "semanticsText").text = "Degree of match requested"
    parameters = sub(element, "parameterList")
    if query.living_subject_administrative_gender:
        parameter = _parameter(parameters, "livingSubjectAdministrativeGender")
        sub(parameter, "value", code=query.living_subject_administrative_gender, codeSystem=ADMINISTRATIVE_GENDER)
        _semantics(parameter)
    if query.living_subject_birth_time:
        parameter = _parameter(parameters, "livingSubjectBirthTime")
        write_ivl_ts(parameter, "value", query.living_subject_birth_time)
        _semantics(parameter)
    for identifier in query.living_subject_ids:
        parameter = _parameter(parameters, "livingSubjectId")
        write_ii(parameter, "value", identifier)
        _semantics(parameter)
    for name in query.living_subject_names:
        parameter = _parameter(parameters, "livingSubjectName")
        write_pn(parameter, "value", name)
        _semantics(parameter)
    if query.mothers_maiden_name:
        parameter = _parameter(parameters, "mothersMaidenName")
        write_pn(parameter, "value", query.mothers_maiden_name)
        _semantics(parameter)
    for root in query.other_ids_scoping_organizations:
        parameter = _parameter(parameters, "otherIDsScopingOrganization")
        sub(parameter, "value", root=root)
        _semantics(parameter)
    for address in query.patient_addresses:
        parameter = _parameter(parameters, "patientAddress")
        write_ad(parameter, "value", address)
        _semantics(parameter)
    for telecom in query.patient_telecoms:
        parameter = _parameter(parameters, "patientTelecom")
        write_tel(parameter, "value", telecom)
        _semantics(parameter)
    return element


@dataclass
class PdqMatch:
    """One patient of a PDQ answer and how well it matches (0..100, the queryMatchObservation)."""

    record: PatientRecord
    score: int | None = None


def pdq_query_response(query: PdqQuery, matches: Sequence[PdqMatch] = (), *, request: MessageHeader | None = None,
                       total: int | None = None, remaining: int = 0, query_response_code: str | None = None,
                       details: Sequence[AcknowledgementDetail] = (), sender: str | None = None,
                       message_id: str | None = None, now: dt.datetime | None = None) -> etree._Element:
    """PRPA_IN201306UV02 answering `query` (or, with `request`, the continuation asking for
    more of it: the answer goes to that message). `matches` are this answer's patients;
    `total` all matches (default: len(matches)), `remaining` those still to come. The response
    code is OK with matches, NF without, AE (or response_code_for) when `details` hold an error;
    acknowledgement typeCode AA for OK/NF, else AE."""
    request = request or query.header
    if query_response_code is None:
        if any(d.is_error for d in details):
            query_response_code = response_code_for(details)
        else:
            query_response_code = "OK" if matches else "NF"
    answered = query_response_code in ("OK", "NF")
    shown = list(matches) if answered else []
    message = root_element(RESPONSE)
    write_answer_header(message, request, sender=sender, message_id=message_id, now=now)
    write_acknowledgement(message, "AA" if answered else "AE", request.message_id, details)
    control = sub(message, "controlActProcess", classCode="CACT", moodCode="EVN")
    sub(control, "code", code="PRPA_TE201306UV02", codeSystem=INTERACTION_ROOT)
    for match in shown:
        subject = sub(control, "subject", typeCode="SUBJ", contextConductionInd="false")
        event = sub(subject, "registrationEvent", classCode="REG", moodCode="EVN")
        sub(event, "id", nullFlavor="NA")
        sub(event, "statusCode", code="active")
        write_patient(sub(event, "subject1", typeCode="SBJ"), match.record, score=match.score, with_score=True)
        # the custodian is the providerOrganization write_patient wrote
        entity = sub(sub(event, "custodian", typeCode="CST"), "assignedEntity", classCode="ASSIGNED")
        write_ii(entity, "id", provider_of(match.record))
    ack = sub(control, "queryAck")
    write_ii(ack, "queryId", query.query_id)
    sub(ack, "statusCode", code="deliveredResponse")
    sub(ack, "queryResponseCode", code=query_response_code)
    write_int(ack, "resultTotalQuantity", (len(shown) if total is None else total) if answered else 0)
    write_int(ack, "resultCurrentQuantity", len(shown))
    write_int(ack, "resultRemainingQuantity", remaining if answered else 0)
    write_query_by_parameter(control, query)
    return message


def pdq_query(query: PdqQuery, *, sender: str, receiver: str, message_id: str | None = None,
              now: dt.datetime | None = None, processing_code: str = "P") -> etree._Element:
    """PRPA_IN201305UV02 with the parameters of `query` (its header and problems are ignored);
    a query without a queryId gets the message id as its root."""
    message_id = message_id or new_message_id()
    message = root_element(QUERY)
    write_header(message, message_id=message_id, now=now, processing_code=processing_code, accept_ack_code="AL",
                 sender=sender, receiver=receiver)
    control = sub(message, "controlActProcess", classCode="CACT", moodCode="EVN")
    sub(control, "code", code="PRPA_TE201305UV02", codeSystem=INTERACTION_ROOT)
    if query.query_id is None:
        query = PdqQuery(**{**query.__dict__, "query_id": Identifier(message_id)})
    write_query_by_parameter(control, query)
    return message


# --- continuation -------------------------------------------------------------------------------

@dataclass
class QueryContinuation(Received):
    """QUQI_IN000003UV01: more of the query `query_id`, or (cancel) no more of it."""

    query_id: Identifier | None = None
    continuation_quantity: int | None = None
    start_result_number: int | None = None
    #: acknowledgement/targetMessage/id: the response this continues from.
    target_message_id: Identifier | None = None
    cancel: bool = False


def read_query_continuation(message: etree._Element) -> QueryContinuation:
    problems: Problems = []
    if not check_root(message, {CONTINUE, CANCEL}, problems):
        return QueryContinuation(problems=problems)
    result = QueryContinuation(header=read_header(message, problems), problems=problems)
    ack = read_acknowledgement(message)
    if ack is None:
        problems.append(error("SYN100", "the continuation has no acknowledgement (typeCode AA, targetMessage the "
                                        "last response)", f"{location(message)}/acknowledgement"))
    else:
        result.target_message_id = ack.target_message_id
        check_code(child(child(message, "acknowledgement"), "typeCode"), "AA", problems, "acknowledgement typeCode",
                   where=f"{location(message)}/acknowledgement/typeCode")
        if ack.target_message_id is None:
            problems.append(error("SYN105", "the continuation names no target message (the last response's id)",
                                  f"{location(message)}/acknowledgement/targetMessage/id"))
    control = read_control_act(message, "PRPA_TE000003UV01", problems)
    if control is None:
        return result
    continuation = child(control, "queryContinuation")
    if continuation is None:
        problems.append(error("SYN100", "the message has no queryContinuation",
                              f"{location(control)}/queryContinuation"))
        return result
    result.query_id = read_ii(child(continuation, "queryId"))
    if result.query_id is None:
        problems.append(error("SYN105", "queryContinuation has no queryId (the query to continue)",
                              f"{location(continuation)}/queryId"))
    status = check_code(child(continuation, "statusCode"), {"waitContinuedQueryResponse", "aborted"}, problems,
                        "queryContinuation statusCode", where=f"{location(continuation)}/statusCode")
    result.cancel = etree.QName(message).localname == CANCEL or status == "aborted"
    result.start_result_number = read_int(child(continuation, "startResultNumber"), problems, "startResultNumber")
    quantity = child(continuation, "continuationQuantity")
    result.continuation_quantity = read_int(quantity, problems, "continuationQuantity")
    if result.continuation_quantity is not None and result.continuation_quantity < 1 and not result.cancel:
        problems.append(error("SYN113", f"continuationQuantity {result.continuation_quantity} is not a positive "
                                        "number", location(quantity)))
        result.continuation_quantity = None
    return result


def query_continuation(query_id: Identifier, target_message_id: Identifier, *, continuation_quantity: int | None = None,
                       cancel: bool = False, sender: str, receiver: str, message_id: str | None = None,
                       now: dt.datetime | None = None, processing_code: str = "P") -> etree._Element:
    """QUQI_IN000003UV01 (continue: statusCode waitContinuedQueryResponse) or
    QUQI_IN000003UV01_Cancel (statusCode aborted), acknowledging the response `target_message_id`."""
    message = root_element(CANCEL if cancel else CONTINUE)
    write_header(message, message_id=message_id, now=now, processing_code=processing_code, accept_ack_code="AL",
                 sender=sender, receiver=receiver)
    write_acknowledgement(message, "AA", target_message_id)
    control = sub(message, "controlActProcess", classCode="CACT", moodCode="EVN")
    sub(control, "code", code="PRPA_TE000003UV01", codeSystem=INTERACTION_ROOT)
    continuation = sub(control, "queryContinuation")
    write_ii(continuation, "queryId", query_id)
    if continuation_quantity is not None:
        write_int(continuation, "continuationQuantity", continuation_quantity)
    sub(continuation, "statusCode", code="aborted" if cancel else "waitContinuedQueryResponse")
    return message


# --- the answer read back (consumer side) ------------------------------------------------------

@dataclass
class PdqQueryResponse(QueryResponse):
    matches: list[PdqMatch] = field(default_factory=list)
    result_total_quantity: int | None = None
    result_current_quantity: int | None = None
    result_remaining_quantity: int | None = None


def read_pdq_query_response(message: etree._Element) -> PdqQueryResponse:
    result = PdqQueryResponse()
    problems = result.problems
    control, ack = read_query_response(message, RESPONSE, "PRPA_TE201306UV02", result)
    for subject in children(control, "subject"):
        patient = child(child(child(subject, "registrationEvent"), "subject1"), "patient")
        if patient is None:
            continue
        record = read_patient(patient, problems)
        value = child(child(child(patient, "subjectOf1"), "queryMatchObservation"), "value")
        result.matches.append(PdqMatch(record, read_int(value, problems, "queryMatchObservation value")))
    result.result_total_quantity = read_int(child(ack, "resultTotalQuantity"), problems, "resultTotalQuantity")
    result.result_current_quantity = read_int(child(ack, "resultCurrentQuantity"), problems, "resultCurrentQuantity")
    result.result_remaining_quantity = read_int(child(ack, "resultRemainingQuantity"), problems,
                                                "resultRemainingQuantity")
    return result
