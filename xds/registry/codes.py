"""The codes of an affinity domain: which values each coded metadata attribute may take.

An affinity domain agrees on the codes its documents use (ITI TF-1 10.2.3; ITI TF-3 4.2.3.2
for each coded attribute). A `CodeSet` holds them per attribute, keyed by the attribute names of
the NIST XDS Toolkit's `codes.xml`: classCode, typeCode, formatCode, healthcareFacilityTypeCode,
practiceSettingCode, confidentialityCode, eventCodeList, contentTypeCode, folderCodeList (and
mimeType, a list of MIME types rather than codes).

An attribute the set does not list is unrestricted: any code passes. A listed attribute accepts
exactly its (code, codingScheme) pairs; the display name is not compared, since the same code
is often shown with different wording.

This module knows no XML beyond reading that file, and nothing of submissions or errors: the
validator asks `allows()` and turns a refusal into an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from os import PathLike

from lxml import etree

from xds.model import Code

#: The CodeType that lists MIME types (code only, no codingScheme).
MIME_TYPE = "mimeType"

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)


def _base_mime_type(mime: str) -> str:
    """`Text/XML; charset=UTF-8` -> `text/xml`: MIME types compare without parameters or case."""
    return mime.split(";", 1)[0].strip().lower()


class CodeSet:
    """The allowed codes per coded attribute; attributes not listed are unrestricted."""

    def __init__(
        self,
        codes: Mapping[str, Iterable[tuple[str, str]]] | None = None,
        mime_types: Iterable[str] | None = None,
    ):
        self._codes: dict[str, frozenset[tuple[str, str]]] = {
            attribute: frozenset(pairs) for attribute, pairs in (codes or {}).items()
        }
        self._mime_types: frozenset[str] | None = (
            None if mime_types is None else frozenset(_base_mime_type(m) for m in mime_types)
        )

    @classmethod
    def from_nist_xml(cls, path: str | PathLike[str]) -> "CodeSet":
        """Read the NIST XDS Toolkit's codes.xml:
        `<Codes><CodeType name="classCode"><Code code=".." codingScheme=".." display=".."/>`,
        and `<CodeType name="mimeType"><Code code="text/xml"/>` for MIME types."""
        root = etree.parse(str(path), _PARSER).getroot()
        codes: dict[str, set[tuple[str, str]]] = {}
        mime_types: list[str] | None = None
        for code_type in root.iter("CodeType"):
            name = code_type.get("name")
            if not name:
                continue
            if name == MIME_TYPE:
                mime_types = (mime_types or []) + [
                    c.get("code") for c in code_type.iter("Code") if c.get("code")
                ]
                continue
            pairs = codes.setdefault(name, set())
            for c in code_type.iter("Code"):
                code = c.get("code")
                if code is not None:
                    pairs.add((code, c.get("codingScheme") or ""))
        return cls(codes, mime_types)

    @property
    def attributes(self) -> frozenset[str]:
        """The coded attributes this set restricts."""
        return frozenset(self._codes)

    def restricts(self, attribute: str) -> bool:
        return attribute in self._codes

    def allows(self, attribute: str, code: Code) -> bool:
        """True if `code` may be used for `attribute` (always, for an attribute not listed)."""
        allowed = self._codes.get(attribute)
        return allowed is None or (code.code, code.scheme) in allowed

    def allows_mime_type(self, mime: str) -> bool:
        """True if the MIME type is listed (case and parameters ignored), or none are listed."""
        return self._mime_types is None or _base_mime_type(mime) in self._mime_types

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}: {len(pairs)}" for name, pairs in sorted(self._codes.items()))
        mimes = "any" if self._mime_types is None else len(self._mime_types)
        return f"CodeSet({sizes}; mimeType: {mimes})"
