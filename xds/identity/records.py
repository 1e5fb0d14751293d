"""A PatientRecord as JSON, the form it is stored in (identity_patient.record and every
identity_revision): every field, every string exactly as sent (ensure_ascii=False keeps
characters outside the BMP as they are; JSON is stable across Python versions).

Fields added later are written only when they have a value, and read with their default when
absent, so a record stored by an older release reads as it did and one without them is stored
byte for byte as before: an id's assigningAuthorityName (a third item of its list), an
address's other parts and text."""

from __future__ import annotations

import json
from typing import Any

import orjson

from xds.model.person import Address, Identifier, PatientRecord, PersonName, Telecom


def _name(name: PersonName | None) -> dict[str, Any] | None:
    if name is None:
        return None
    return {"family": list(name.family), "given": list(name.given), "prefix": list(name.prefix),
            "suffix": list(name.suffix), "uses": list(name.uses), "text": name.text}


def _name_from(data: dict[str, Any] | None) -> PersonName | None:
    if data is None:
        return None
    return PersonName(family=tuple(data.get("family", ())), given=tuple(data.get("given", ())),
                      prefix=tuple(data.get("prefix", ())), suffix=tuple(data.get("suffix", ())),
                      uses=tuple(data.get("uses", ())), text=data.get("text", ""))


def _ids(ids: list[Identifier]) -> list[list[str]]:
    # [root, extension], and the assigningAuthorityName third when the sender gave one (records
    # stored before it was kept have two, and are read alike)
    return [[i.root, i.extension, i.assigning_authority_name] if i.assigning_authority_name
            else [i.root, i.extension] for i in ids]


def _ids_from(data: list) -> list[Identifier]:
    return [Identifier(*values) for values in data]


def _address(a: Address) -> dict[str, Any]:
    data: dict[str, Any] = {"street_lines": list(a.street_lines), "city": a.city, "state": a.state,
                            "postal_code": a.postal_code, "country": a.country, "uses": list(a.uses)}
    # The other AD parts (unitID, additionalLocator, houseNumber ...) and the text of an
    # address without parts, when there are any (older records have neither key)
    if a.other_parts:
        data["other_parts"] = [list(part) for part in a.other_parts]
    if a.text:
        data["text"] = a.text
    return data


def _address_from(a: dict[str, Any]) -> Address:
    return Address(street_lines=tuple(a.get("street_lines", ())), city=a.get("city", ""), state=a.get("state", ""),
                   postal_code=a.get("postal_code", ""), country=a.get("country", ""), uses=tuple(a.get("uses", ())),
                   other_parts=tuple((name, value) for name, value in a.get("other_parts", ())),
                   text=a.get("text", ""))


def to_json(record: PatientRecord) -> str:
    data = {
        "ids": _ids(record.ids),
        "other_ids": _ids(record.other_ids),
        "names": [_name(n) for n in record.names],
        "gender": record.gender,
        "birth_time": record.birth_time,
        "addresses": [_address(a) for a in record.addresses],
        "telecoms": [{"value": t.value, "uses": list(t.uses)} for t in record.telecoms],
        "mothers_maiden_name": _name(record.mothers_maiden_name),
        "multiple_birth": record.multiple_birth,
        "multiple_birth_order": record.multiple_birth_order,
        "deceased": record.deceased,
        "deceased_time": record.deceased_time,
        "provider_organization": record.provider_organization,
        "sender": record.sender,
    }
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def from_json(text: str) -> PatientRecord:
    # orjson: a PDQ page decodes 100 records, and json.loads took a third of a search's time
    # (1.8 ms of ~12 at 1,000,000 patients; orjson 0.4). It refuses what JSON text written by
    # json.dumps may still hold (a lone surrogate), which the standard library then reads.
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        data = json.loads(text)
    return PatientRecord(
        ids=_ids_from(data.get("ids", [])),
        other_ids=_ids_from(data.get("other_ids", [])),
        names=[_name_from(n) for n in data.get("names", [])],  # type: ignore[misc]
        gender=data.get("gender"),
        birth_time=data.get("birth_time"),
        addresses=[_address_from(a) for a in data.get("addresses", [])],
        telecoms=[Telecom(t["value"], tuple(t.get("uses", ()))) for t in data.get("telecoms", [])],
        mothers_maiden_name=_name_from(data.get("mothers_maiden_name")),
        multiple_birth=data.get("multiple_birth"),
        multiple_birth_order=data.get("multiple_birth_order"),
        deceased=data.get("deceased"),
        deceased_time=data.get("deceased_time"),
        provider_organization=data.get("provider_organization"),
        sender=data.get("sender"),
    )


def has_demographics(record: PatientRecord) -> bool:
    """Whether a record says anything about the patient beyond its ids."""
    return bool(record.names or record.gender or record.birth_time or record.addresses
                or record.telecoms or record.mothers_maiden_name or record.multiple_birth is not None
                or record.deceased is not None or record.other_ids)
