"""The HL7v3 data types of the PIX/PDQ messages, read into xds.model.person values and written
back: II (Identifier), PN (PersonName), AD (Address), TEL (Telecom), TS, IVL_TS, INT, BL.

Readers take the element and a list to add problems to; they never raise. A value with a
nullFlavor is absent (None). Text is kept as the sender wrote it: only XML whitespace (space,
tab, CR, LF) around a text-only name or address is dropped, never an ideographic space, and no
normalisation (NFC, NFKC) is applied, so names outside the BMP and JIS X 0213 sequences come
back unchanged.

`location(element)` gives the XPath the acknowledgementDetail names: /PRPA_IN201305UV02/
controlActProcess/queryByParameter/parameterList/livingSubjectName[2]/value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from xds import dtm
from xds.hl7v3.details import AcknowledgementDetail, error, warning
from xds.hl7v3.ns import V3, XSI, sub, tag
from xds.model.person import Address, Identifier, PersonName, Telecom

XML_SPACE = " \t\r\n"
NAME_PARTS = ("family", "given", "prefix", "suffix")
ADDRESS_FIELDS = {"city": "city", "state": "state", "postalCode": "postal_code", "country": "country"}
TS_PATTERN = re.compile(r"([0-9]{4}(?:[0-9]{2}){0,5})(\.[0-9]{1,4})?([+-][0-9]{4})?", re.ASCII)
INT_PATTERN = re.compile(r"[+-]?[0-9]+", re.ASCII)

Problems = list[AcknowledgementDetail]


def local(element: etree._Element) -> str:
    """The local name of an element of the v3 namespace, '' for anything else (comments too)."""
    if not isinstance(element.tag, str):
        return ""
    q = etree.QName(element)
    return q.localname if q.namespace == V3 else ""


def children(element: etree._Element | None, name: str) -> list[etree._Element]:
    return [] if element is None else list(element.iterchildren(tag(name)))


def child(element: etree._Element | None, name: str) -> etree._Element | None:
    return None if element is None else element.find(tag(name))


def location(element: etree._Element) -> str:
    """An XPath of `element` by local names from the message's root element (not from a SOAP
    envelope around it), with [n] where a name repeats among siblings."""
    steps = []
    node: etree._Element | None = element
    while node is not None:
        if not isinstance(node.tag, str):
            node = node.getparent()
            continue
        name = etree.QName(node).localname
        parent = node.getparent()
        if parent is not None and etree.QName(parent).namespace == V3:
            same = list(parent.iterchildren(node.tag))
            if len(same) > 1:
                name += f"[{same.index(node) + 1}]"
            steps.append(name)
            node = parent
        else:
            steps.append(name)
            break
    return "/" + "/".join(reversed(steps))


def text_of(element: etree._Element | None) -> str:
    """The text of a simple element (ST, an ENXP or ADXP part), children's text included."""
    return "" if element is None else "".join(element.itertext())


def null(element: etree._Element | None) -> bool:
    return element is None or element.get("nullFlavor") is not None


def uses(element: etree._Element) -> tuple[str, ...]:
    return tuple((element.get("use") or "").split())


# --- II ---------------------------------------------------------------------------------------

def read_ii(element: etree._Element | None) -> Identifier | None:
    if null(element):
        return None
    root, extension = element.get("root") or "", element.get("extension") or ""
    if not root and not extension:
        return None
    return Identifier(root, extension, element.get("assigningAuthorityName") or "")


def write_ii(parent: etree._Element, name: str, value: Identifier | str | None) -> etree._Element:
    """<name root extension assigningAuthorityName/>; nullFlavor NI when there is no value."""
    if value is None:
        return sub(parent, name, nullFlavor="NI")
    if isinstance(value, str):
        return sub(parent, name, root=value)
    return sub(parent, name, root=value.root or None, extension=value.extension or None,
               assigningAuthorityName=value.assigning_authority_name or None)


# --- PN ---------------------------------------------------------------------------------------

def read_pn(element: etree._Element | None) -> PersonName | None:
    """A PN (or an EN used as one): its parts in order, its uses; a name of text alone is kept
    as `text`. Delimiters and validTime are not kept."""
    if null(element):
        return None
    parts: dict[str, list[str]] = {p: [] for p in NAME_PARTS}
    has_parts = False
    for part in element:
        name = local(part)
        if name in parts:
            parts[name].append(text_of(part))
            has_parts = True
        elif name == "delimiter":
            has_parts = True
    text = "" if has_parts else (element.text or "").strip(XML_SPACE)
    if not has_parts and not text:
        return None
    return PersonName(family=tuple(parts["family"]), given=tuple(parts["given"]), prefix=tuple(parts["prefix"]),
                      suffix=tuple(parts["suffix"]), uses=uses(element), text=text)


def write_pn(parent: etree._Element, name: str, value: PersonName | None,
             family_qualifier: str | None = None) -> etree._Element:
    """<name use="..."><prefix/><given/><family/><suffix/></name>; a name without parts as its
    text (a name with both is written by its parts, as read_pn reads it); NA when absent."""
    if value is None or not (value.text or value.family or value.given or value.prefix or value.suffix):
        return sub(parent, name, nullFlavor="NA")
    element = sub(parent, name, use=" ".join(value.uses) or None)
    if not (value.family or value.given or value.prefix or value.suffix):
        element.text = value.text
        return element
    for part, values in (("prefix", value.prefix), ("given", value.given), ("family", value.family),
                         ("suffix", value.suffix)):
        for item in values:
            sub(element, part, qualifier=family_qualifier if part == "family" else None).text = item or None
    return element


# --- AD ---------------------------------------------------------------------------------------

def read_ad(element: etree._Element | None) -> Address | None:
    if null(element):
        return None
    lines: list[str] = []
    named: dict[str, str] = {}
    other: list[tuple[str, str]] = []
    has_parts = False
    for part in element:
        name = local(part)
        if not name or name == "useablePeriod":
            continue
        has_parts = True
        value = text_of(part)
        if name == "streetAddressLine":
            lines.append(value)
        elif name in ADDRESS_FIELDS and name not in named:
            named[name] = value
        else:
            other.append((name, value))
    text = "" if has_parts else (element.text or "").strip(XML_SPACE)
    if not has_parts and not text:
        return None
    return Address(street_lines=tuple(lines), city=named.get("city", ""), state=named.get("state", ""),
                   postal_code=named.get("postalCode", ""), country=named.get("country", ""),
                   uses=uses(element), other_parts=tuple(other), text=text)


def write_ad(parent: etree._Element, name: str, value: Address) -> etree._Element:
    element = sub(parent, name, use=" ".join(value.uses) or None)
    if value.text and not (value.street_lines or value.city or value.state or value.postal_code or value.country
                           or value.other_parts):
        element.text = value.text
        return element
    for line in value.street_lines:
        sub(element, "streetAddressLine").text = line or None
    for part, attribute in ADDRESS_FIELDS.items():
        if getattr(value, attribute):
            sub(element, part).text = getattr(value, attribute)
    for part, text in value.other_parts:
        sub(element, part).text = text or None
    return element


# --- TEL --------------------------------------------------------------------------------------

def read_tel(element: etree._Element | None) -> Telecom | None:
    if null(element) or not element.get("value"):
        return None
    return Telecom(element.get("value"), uses(element))


def write_tel(parent: etree._Element, name: str, value: Telecom) -> etree._Element:
    return sub(parent, name, value=value.value, use=" ".join(value.uses) or None)


# --- TS, IVL_TS, INT, BL, CE ------------------------------------------------------------------

def ts_problem(value: str) -> str | None:
    """None when `value` is an HL7 TS of a real date (any precision, a fraction, an offset)."""
    match = TS_PATTERN.fullmatch(value)
    if not match:
        return "is not an HL7 TS (YYYY[MM[DD[hh[mm[ss]]]]][.f][+-zzzz])"
    reason = dtm.check(match.group(1))
    return f"is not a real date and time ({reason})" if reason else None


def read_ts(element: etree._Element | None, problems: Problems, what: str) -> str | None:
    if null(element):
        return None
    value = element.get("value")
    if value is None:
        problems.append(error("SYN101", f"{what} has no value attribute", location(element)))
        return None
    reason = ts_problem(value)
    if reason:
        problems.append(error("SYN102", f"{what} '{value}' {reason}", location(element)))
        return None
    return value


@dataclass(frozen=True)
class Interval:
    """An IVL_TS of a query: a value of any precision (a whole day, month or year), or low and
    high bounds."""

    value: str | None = None
    low: str | None = None
    high: str | None = None


def read_ivl_ts(element: etree._Element | None, problems: Problems, what: str) -> Interval | None:
    if null(element):
        return None
    before = len(problems)
    low = read_ts(child(element, "low"), problems, f"{what} low")
    high = read_ts(child(element, "high"), problems, f"{what} high")
    value = read_ts(element, problems, what) if element.get("value") is not None else None
    if value is None and low is None and high is None:
        if len(problems) == before:
            problems.append(error("SYN101", f"{what} has neither a value nor low/high bounds", location(element)))
        return None
    return Interval(value, low, high)


def write_ivl_ts(parent: etree._Element, name: str, value: Interval) -> etree._Element:
    element = sub(parent, name, value=value.value)
    if value.low:
        sub(element, "low", value=value.low)
    if value.high:
        sub(element, "high", value=value.high)
    return element


def read_int(element: etree._Element | None, problems: Problems, what: str) -> int | None:
    if null(element):
        return None
    value = element.get("value")
    if value is None or not INT_PATTERN.fullmatch(value.strip(XML_SPACE)):
        problems.append(error("SYN102", f"{what} '{value if value is not None else ''}' is not an integer (INT)",
                              location(element)))
        return None
    return int(value)


def write_int(parent: etree._Element, name: str, value: int, xsi_type: bool = False) -> etree._Element:
    element = sub(parent, name, value=str(value))
    if xsi_type:
        element.set(f"{{{XSI}}}type", "INT")
    return element


def read_bl(element: etree._Element | None, problems: Problems, what: str) -> bool | None:
    if null(element):
        return None
    value = element.get("value")
    if value not in ("true", "false"):
        problems.append(error("SYN102", f"{what} '{value or ''}' is not a boolean (true or false)", location(element)))
        return None
    return value == "true"


def write_bl(parent: etree._Element, name: str, value: bool) -> etree._Element:
    return sub(parent, name, value="true" if value else "false")


def read_code(element: etree._Element | None) -> str | None:
    """@code of a CS / CE / CD; None when absent or null."""
    if null(element):
        return None
    return element.get("code") or None


def check_code(element: etree._Element | None, expected: set[str] | str, problems: Problems, what: str, *,
               where: str = "", code: str = "SYN111", required: bool = True, type_code: str = "E") -> str | None:
    """@code of `element`, with a problem when it is missing (if required) or not one of
    `expected`; `where` locates an element that is missing."""
    allowed = {expected} if isinstance(expected, str) else expected
    value = read_code(element)
    add = error if type_code == "E" else warning
    if value is None:
        if required:
            problems.append(add("SYN105" if element is None else "SYN101",
                                f"{what} is missing; it must be {' or '.join(sorted(allowed))}",
                                location(element) if element is not None else where))
        return None
    if value not in allowed:
        problems.append(add(code, f"{what} is '{value}'; it must be {' or '.join(sorted(allowed))}",
                            location(element)))
    return value
