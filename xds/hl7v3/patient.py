"""The Patient role and its Person, to and from xds.model.person.PatientRecord: the same
shape in the feed (PRPA_MT201301UV02 add, PRPA_MT201302UV02 revise, PRPA_MT201303UV02 the
surviving patient of a merge) and in the PDQ response (PRPA_MT201310UV02); the PIX query
response (PRPA_MT201304UV02) carries only ids.

    Patient.id                      record.ids (the first is the id fed)
    Patient.statusCode              active
    Person.name                     record.names (uses: L, A, IDE, SYL, ABC ...); NA when none
    Person.telecom                  record.telecoms
    Person.administrativeGenderCode record.gender (M, F, UN)
    Person.birthTime                record.birth_time
    Person.deceasedInd/deceasedTime record.deceased, record.deceased_time
    Person.multipleBirthInd/-Order  record.multiple_birth, record.multiple_birth_order
    Person.addr                     record.addresses
    Person.asOtherIDs               record.other_ids (one asOtherIDs per run of ids of one root,
                                    scopingOrganization id = that root)
    Person.personalRelationship     record.mothers_maiden_name (code MTH, relationshipHolder1.name,
                                    family parts qualified BR, as ITI TF-2 3.44 / 3.47 write it)
    Patient.providerOrganization    record.provider_organization (written: the root of the first
                                    id when the record names none; the schema needs one)

What the messages carry beyond this (marital status, race, religion, citizenship, language,
birth place, VIP code, name part qualifiers) is not kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import groupby

from lxml import etree

from xds.hl7v3.datatypes import (
    Problems,
    child,
    children,
    location,
    read_ad,
    read_bl,
    read_code,
    read_ii,
    read_int,
    read_pn,
    read_tel,
    read_ts,
    write_ad,
    write_bl,
    write_ii,
    write_int,
    write_pn,
    write_tel,
)
from xds.hl7v3.details import error, warning
from xds.hl7v3.ns import ADMINISTRATIVE_GENDER, MOTHER, PERSONAL_RELATIONSHIP_ROLE_TYPE, XSI, sub
from xds.model.person import Identifier, PatientRecord

GENDERS = {"M", "F", "UN"}


def read_ids(elements: Iterable[etree._Element], problems: Problems, what: str,
             scoping: Identifier | None = None) -> list[Identifier]:
    """The non-null ids among `elements`; an id without a root takes the scoping organization's
    root when there is one, else it is kept with a warning (it names no domain)."""
    ids = []
    for element in elements:
        identifier = read_ii(element)
        if identifier is None:
            continue
        if not identifier.root and scoping is not None and scoping.root:
            identifier = Identifier(scoping.root, identifier.extension, identifier.assigning_authority_name)
        if not identifier.root:
            problems.append(warning("SYN101", f"{what} '{identifier.extension}' has no root: it names no assigning "
                                              "authority, so it cannot be cross-referenced", location(element)))
        ids.append(identifier)
    return ids


def read_patient(patient: etree._Element, problems: Problems, *, require_id: bool = True) -> PatientRecord:
    """A PatientRecord from a Patient element of any of the PRPA_MT2013xx models."""
    record = PatientRecord()
    id_elements = children(patient, "id")
    record.ids = read_ids(id_elements, problems, "Patient.id")
    if require_id and not record.ids:
        if id_elements:
            problems.append(error("SYN109", "every Patient.id is null: the patient needs an id in a known domain",
                                  location(id_elements[0])))
        else:
            problems.append(error("SYN105", "the patient has no id (Patient.id)", f"{location(patient)}/id"))

    person = child(patient, "patientPerson")
    if person is None:
        problems.append(error("SYN100", "the patient has no patientPerson", f"{location(patient)}/patientPerson"))
        person = etree.Element("none")
    for element in children(person, "name"):
        name = read_pn(element)
        if name is not None:
            record.names.append(name)
    for element in children(person, "telecom"):
        telecom = read_tel(element)
        if telecom is not None:
            record.telecoms.append(telecom)
    gender = child(person, "administrativeGenderCode")
    record.gender = read_code(gender)
    if record.gender is not None and record.gender not in GENDERS:
        problems.append(warning("SYN103", f"administrativeGenderCode '{record.gender}' is not M, F or UN "
                                          "(AdministrativeGender); it is kept as written", location(gender)))
    record.birth_time = read_ts(child(person, "birthTime"), problems, "birthTime")
    record.deceased = read_bl(child(person, "deceasedInd"), problems, "deceasedInd")
    record.deceased_time = read_ts(child(person, "deceasedTime"), problems, "deceasedTime")
    record.multiple_birth = read_bl(child(person, "multipleBirthInd"), problems, "multipleBirthInd")
    record.multiple_birth_order = read_int(child(person, "multipleBirthOrderNumber"), problems,
                                           "multipleBirthOrderNumber")
    for element in children(person, "addr"):
        address = read_ad(element)
        if address is not None:
            record.addresses.append(address)
    for other in children(person, "asOtherIDs"):
        if other.get("classCode") in ("CIT", "EMP"):
            problems.append(warning("SYN111", f"asOtherIDs classCode '{other.get('classCode')}': IHE allows any "
                                              "role but citizen (CIT) or employee (EMP)", location(other)))
        scoping = read_ii(child(child(other, "scopingOrganization"), "id"))
        record.other_ids.extend(read_ids(children(other, "id"), problems, "asOtherIDs.id", scoping))
    for relationship in children(person, "personalRelationship"):
        if read_code(child(relationship, "code")) == MOTHER:
            holder = child(relationship, "relationshipHolder1")
            names = [n for n in (read_pn(e) for e in children(holder, "name")) if n is not None]
            if names and record.mothers_maiden_name is None:
                record.mothers_maiden_name = names[0]

    provider = read_ii(child(child(patient, "providerOrganization"), "id"))
    record.provider_organization = provider.root if provider and provider.root else None
    return record


def group_by_root(ids: Sequence[Identifier]) -> list[list[Identifier]]:
    """Runs of consecutive ids with the same root, in order (so reading them back keeps the order)."""
    return [list(run) for _, run in groupby(ids, key=lambda i: i.root)]


def write_other_ids(person: etree._Element, ids: Sequence[Identifier]) -> None:
    for run in group_by_root(ids):
        other = sub(person, "asOtherIDs", classCode="PAT")
        for identifier in run:
            write_ii(other, "id", identifier)
        organization = sub(other, "scopingOrganization", classCode="ORG", determinerCode="INSTANCE")
        write_ii(organization, "id", run[0].root or None)


def provider_of(record: PatientRecord) -> str | None:
    if record.provider_organization:
        return record.provider_organization
    return next((i.root for i in record.ids if i.root), None)


def write_provider_organization(patient: etree._Element, root: str | None) -> None:
    organization = sub(patient, "providerOrganization", classCode="ORG", determinerCode="INSTANCE")
    write_ii(organization, "id", root)
    sub(organization, "contactParty", classCode="CON")


def write_patient(parent: etree._Element, record: PatientRecord, *, score: int | None = None,
                  with_score: bool = False) -> etree._Element:
    """<patient> with every demographic of `record` (PRPA_MT201301/201302/201303/201310UV02).
    `with_score` adds the PDQ match annotation (subjectOf1/queryMatchObservation, code IHE_PDQ,
    an INT score) that PRPA_MT201310UV02 requires."""
    patient = sub(parent, "patient", classCode="PAT")
    for identifier in record.ids:
        write_ii(patient, "id", identifier)
    if not record.ids:
        sub(patient, "id", nullFlavor="NI")
    sub(patient, "statusCode", code="active")
    person = sub(patient, "patientPerson", classCode="PSN", determinerCode="INSTANCE")
    for name in record.names or [None]:
        write_pn(person, "name", name)
    for telecom in record.telecoms:
        write_tel(person, "telecom", telecom)
    if record.gender:
        sub(person, "administrativeGenderCode", code=record.gender, codeSystem=ADMINISTRATIVE_GENDER)
    if record.birth_time:
        sub(person, "birthTime", value=record.birth_time)
    if record.deceased is not None:
        write_bl(person, "deceasedInd", record.deceased)
    if record.deceased_time:
        sub(person, "deceasedTime", value=record.deceased_time)
    if record.multiple_birth is not None:
        write_bl(person, "multipleBirthInd", record.multiple_birth)
    if record.multiple_birth_order is not None:
        write_int(person, "multipleBirthOrderNumber", record.multiple_birth_order)
    for address in record.addresses:
        write_ad(person, "addr", address)
    write_other_ids(person, record.other_ids)
    if record.mothers_maiden_name is not None:
        relationship = sub(person, "personalRelationship", classCode="PRS")
        sub(relationship, "code", code=MOTHER, codeSystem=PERSONAL_RELATIONSHIP_ROLE_TYPE, displayName="Mother")
        holder = sub(relationship, "relationshipHolder1", classCode="PSN", determinerCode="INSTANCE")
        write_pn(holder, "name", record.mothers_maiden_name, family_qualifier="BR")
    write_provider_organization(patient, provider_of(record))
    if with_score:
        observation = sub(sub(patient, "subjectOf1"), "queryMatchObservation", classCode="COND", moodCode="EVN")
        sub(observation, "code", code="IHE_PDQ")
        value = write_int(observation, "value", score if score is not None else 0, xsi_type=True)
        if score is None:
            del value.attrib["value"]
            value.set("nullFlavor", "NI")
    return patient


def write_identifiers_patient(parent: etree._Element, ids: Sequence[Identifier], *,
                              record: PatientRecord | None = None) -> etree._Element:
    """<patient> as the PIX Manager writes a person's ids (ITI-45 response, ITI-46): the ids of
    the first domain in Patient.id with providerOrganization naming that domain, the ids of
    every other domain in an asOtherIDs of their own (ITI TF-2 3.45.4.2.3 case 6 allows both);
    Person.name NA unless `record` gives names."""
    domains: dict[str, list[Identifier]] = {}
    for identifier in ids:
        domains.setdefault(identifier.root, []).append(identifier)
    runs = list(domains.values())
    first = runs[0] if runs else []
    patient = sub(parent, "patient", classCode="PAT")
    for identifier in first:
        write_ii(patient, "id", identifier)
    if not first:
        sub(patient, "id", nullFlavor="NI")
    sub(patient, "statusCode", code="active")
    person = sub(patient, "patientPerson", classCode="PSN", determinerCode="INSTANCE")
    for name in (record.names if record and record.names else [None]):
        write_pn(person, "name", name)
    write_other_ids(person, [i for run in runs[1:] for i in run])
    if first and first[0].root:
        write_provider_organization(patient, first[0].root)
    return patient


def xsi_type_of(element: etree._Element) -> str:
    value = element.get(f"{{{XSI}}}type") or ""
    return value.rsplit(":", 1)[-1]
