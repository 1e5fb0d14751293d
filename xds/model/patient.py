"""The XDS patient identifier: an HL7 v2 CX value `id^^^&universalId&ISO` (ITI TF-3 4.2.3.1.7
and Table 4.2.3.1.7-2). Only components 1 and 4 may be present, and the assigning authority
must be an ISO OID."""

from __future__ import annotations

from dataclasses import dataclass

from xds.model.identifiers import is_oid


@dataclass(frozen=True)
class PatientId:
    id: str
    authority_oid: str

    def __str__(self) -> str:
        return f"{self.id}^^^&{self.authority_oid}&ISO"

    @classmethod
    def parse(cls, value: str) -> "PatientId":
        """Parse a CX patient id; raise ValueError saying what is wrong with it."""
        if value is None or not value.strip():
            raise ValueError("the patient id is empty")
        if value != value.strip():
            raise ValueError(f"patient id '{value}' has leading or trailing spaces")
        parts = value.split("^")
        if len(parts) != 4:
            raise ValueError(
                f"patient id '{value}' is not of the form id^^^&OID&ISO "
                f"(found {len(parts)} components, expected 4)"
            )
        pid, c2, c3, authority = parts
        if not pid:
            raise ValueError(f"patient id '{value}' has an empty id (CX.1)")
        if c2 or c3:
            raise ValueError(f"patient id '{value}' may only have components 1 and 4 (CX.1, CX.4)")
        sub = authority.split("&")
        if len(sub) != 3 or sub[0] or sub[2] != "ISO":
            raise ValueError(
                f"patient id '{value}': the assigning authority (CX.4) must be '&OID&ISO'"
            )
        if not is_oid(sub[1]):
            raise ValueError(f"patient id '{value}': the assigning authority '{sub[1]}' is not an OID")
        return cls(pid, sub[1])
