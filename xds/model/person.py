"""A patient as the Patient Identity Feed and the Patient Demographics Query carry it (HL7v3
PRPA_MT201301UV02 / PRPA_MT201310UV02 Patient and Person; ITI TF-2b 3.44, 3.47): the ids, and
every demographic the messages hold. Plain values: no XML (xds.hl7v3 reads and writes it), no
SQL (xds.identity keeps it).

Values are kept as the sender wrote them (a birth time is an HL7 TS of any precision, a gender
an AdministrativeGender code); matching normalises its own copies (xds.identity).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Identifier:
    """An HL7v3 II: the assigning authority's OID (root) and the id within it (extension)."""

    root: str
    extension: str = ""
    #: II.assigningAuthorityName, as the sender wrote it: for people only, so it takes no part
    #: in equality or hashing (the same root and extension are the same id whatever it says).
    assigning_authority_name: str = field(default="", compare=False)

    @property
    def cx(self) -> str:
        """The id as XDS writes a patient id: extension^^^&root&ISO."""
        return f"{self.extension}^^^&{self.root}&ISO"


@dataclass(frozen=True)
class PersonName:
    """An HL7v3 PN. `uses` are EntityNameUse codes: L (legal), A (alias), ... and the
    representation a Japanese name is given in: IDE (ideographic, kanji), SYL (syllabic,
    kana), ABC (alphabetic)."""

    family: tuple[str, ...] = ()
    given: tuple[str, ...] = ()
    prefix: tuple[str, ...] = ()
    suffix: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    #: A name written as text alone, without parts (PN mixed content).
    text: str = ""


@dataclass(frozen=True)
class Address:
    """An HL7v3 AD."""

    street_lines: tuple[str, ...] = ()
    city: str = ""
    state: str = ""
    postal_code: str = ""
    country: str = ""
    uses: tuple[str, ...] = ()
    #: The other address parts (ADXP) the message carries, as (element name, value) in document
    #: order: houseNumber, streetName, precinct, county, unitID ...; and a repeated city, state,
    #: postalCode or country after the first.
    other_parts: tuple[tuple[str, str], ...] = ()
    #: An address written as text alone, without parts (AD mixed content).
    text: str = ""


@dataclass(frozen=True)
class Telecom:
    """An HL7v3 TEL: a URL (tel:, mailto:, ...) and its uses (HP home, WP work, MC mobile ...)."""

    value: str
    uses: tuple[str, ...] = ()


@dataclass
class PatientRecord:
    """One patient as one source knows it."""

    #: The patient's ids in the message (Patient.id): the first is the id fed.
    ids: list[Identifier] = field(default_factory=list)
    #: Ids of the same person at other organizations (asOtherIDs).
    other_ids: list[Identifier] = field(default_factory=list)
    names: list[PersonName] = field(default_factory=list)
    gender: str | None = None                 # AdministrativeGender: M, F, UN
    birth_time: str | None = None             # HL7 TS, e.g. 19710101
    addresses: list[Address] = field(default_factory=list)
    telecoms: list[Telecom] = field(default_factory=list)
    mothers_maiden_name: PersonName | None = None
    multiple_birth: bool | None = None
    multiple_birth_order: int | None = None
    deceased: bool | None = None
    deceased_time: str | None = None
    #: The organization responsible for the patient (providerOrganization/id root).
    provider_organization: str | None = None
    #: The sending system (sender/device/id root).
    sender: str | None = None
