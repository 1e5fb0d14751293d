"""The access-control settings, read once at start (a mistake stops the server with the name of
the setting): whether consent is enforced, the facilities client certificates stand for,
break-glass and its purposes of use, implied consent, and the BPPC policy ids.

Facility ids are OIDs, written with or without the urn:oid: prefix an XUA organization-id
carries (ITI TF-2 3.40.4.1.2: "urn:oasis:names:tc:xspa:1.0:subject:organization-id ... a URI,
urn:oid: format for an OID"): `facility_id` makes both the same.

Break-glass purposes: XUA carries the purpose of use as an HL7 CE whose value set the affinity
domain chooses (ITI TF-2 3.40.4.1.2, the PurposeOfUse option). The default names the code for
emergency treatment in the sets networks use: EMERGENCY (NHIN / XSPA purpose of use,
2.16.840.1.113883.3.18.7.1), ETREAT (HL7 ActReason, 2.16.840.1.113883.5.8), EMER (eHealth
Suisse, 2.16.756.5.30.1.127.3.10.5). An entry code@system matches that code system only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from xds.config import Settings
from xds.security.caller import CE

OFF, CONSENT = "off", "consent"
_SEPARATORS = re.compile(r"[;\n]")

# What a BPPC policy id may mean (consent_bppc_policies): a model granted, or a change.
BLANKET, FACILITY, PERSON, IMPLIED = "blanket", "facility", "person", "implied"
MODELS = (BLANKET, FACILITY, PERSON, IMPLIED)
EXCLUDE, HOLD, RELEASE, WITHDRAW = "exclude", "hold", "release", "withdraw"


def facility_id(value: str) -> str:
    """A facility as compared: an OID without its urn:oid: prefix, surrounding blanks dropped."""
    value = (value or "").strip()
    return value[8:] if value[:8].lower() == "urn:oid:" else value


@dataclass(frozen=True)
class PolicyMeaning:
    """What a BPPC patient privacy policy id stands for here: an action of xds.consent.record
    (grant of a model, exclude, hold, release, withdraw) with its facilities or individuals."""

    action: str
    model: str = ""
    facilities: tuple[str, ...] = ()
    individuals: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConsentPolicy:
    #: access_control = consent.
    enabled: bool = False
    break_glass: bool = False
    #: (code, code system or "" for any) of the purposes of use that are an emergency.
    emergency: frozenset[tuple[str, str]] = frozenset()
    #: consent_implied: a person with no consent recorded is shared (implied consent).
    implied: bool = False
    #: client certificate subject -> facility (facility_certificates).
    certificates: Mapping[str, str] = field(default_factory=dict)
    #: BPPC policy id -> its meaning (consent_bppc_policies).
    bppc: Mapping[str, PolicyMeaning] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> "ConsentPolicy":
        mode = (settings.access_control or OFF).strip().lower()
        if mode not in (OFF, CONSENT):
            raise ValueError(f"access_control: {settings.access_control!r} is neither 'off' nor 'consent'")
        return cls(enabled=mode == CONSENT, break_glass=settings.consent_break_glass,
                   emergency=frozenset(_purposes(settings.consent_break_glass_purposes)),
                   implied=settings.consent_implied,
                   certificates=_certificates(settings.facility_certificates),
                   bppc=_bppc(settings.consent_bppc_policies))

    def emergency_purpose(self, purposes: Iterable[CE | str]) -> str:
        """The first of `purposes` that is an emergency, as code@system ("" when none)."""
        for purpose in purposes:
            code, system = (purpose, "") if isinstance(purpose, str) else (purpose.code, purpose.code_system)
            if (code, "") in self.emergency or (code, system) in self.emergency:
                return f"{code}@{system}" if system else code
        return ""


def _entries(text: str) -> list[str]:
    return [e.strip() for e in _SEPARATORS.split(text or "") if e.strip()]


def _purposes(text: str) -> list[tuple[str, str]]:
    out = []
    for entry in (e.strip() for e in (text or "").split(",")):
        if entry:
            code, _, system = entry.partition("@")
            out.append((code.strip(), facility_id(system)))
    return out


def _certificates(text: str) -> dict[str, str]:
    """facility_certificates: each entry is SUBJECT=FACILITY, the facility after the last '='
    (a subject holds '=' itself)."""
    mapping: dict[str, str] = {}
    for entry in _entries(text):
        subject, equals, facility = entry.rpartition("=")
        if not equals or "=" not in subject or not facility_id(facility):
            raise ValueError(f"facility_certificates: {entry!r} is not SUBJECT=FACILITY, e.g. "
                             "CN=clinic-a,O=Kagawa=1.2.392.100.1")
        mapping[subject.strip()] = facility_id(facility)
    return mapping


def _bppc(text: str) -> dict[str, PolicyMeaning]:
    mapping: dict[str, PolicyMeaning] = {}
    for entry in _entries(text):
        policy, equals, meaning = entry.partition("=")
        parsed = parse_meaning(meaning) if equals and policy.strip() else None
        if parsed is None:
            raise ValueError(f"consent_bppc_policies: {entry!r} is not POLICY=MEANING, the meaning one of "
                             "blanket, implied, facility:FAC,FAC, person:ID,ID, exclude:FAC,FAC, hold, release, "
                             "withdraw")
        mapping[policy.strip()] = parsed
    return mapping


def parse_meaning(text: str) -> PolicyMeaning | None:
    """A meaning as consent_bppc_policies writes it; None when it is none."""
    name, _, values = text.strip().partition(":")
    name = name.strip().lower()
    listed = tuple(v.strip() for v in values.split(",") if v.strip())
    if name in (BLANKET, IMPLIED) and not listed:
        return PolicyMeaning("grant", name)
    if name == FACILITY and listed:
        return PolicyMeaning("grant", FACILITY, facilities=tuple(map(facility_id, listed)))
    if name == PERSON and listed:
        return PolicyMeaning("grant", PERSON, individuals=listed)
    if name == EXCLUDE and listed:
        return PolicyMeaning(EXCLUDE, facilities=tuple(map(facility_id, listed)))
    if name in (HOLD, RELEASE, WITHDRAW) and not listed:
        return PolicyMeaning(name)
    return None
