"""Reading the small ebRIM 3.0 building blocks that every registry object is made of:
rim:Slot (a name with a list of string values), rim:Name / rim:Description (localized strings)
and rim:VersionInfo (ebRIM 3.0; ITI TF-3 4.2.3).

The readers judge nothing; `set_slot` is the one place that writes a slot (the registry and
the repository set slots of their own on what they store: lastUpdateTime, hash, size,
repositoryUniqueId). What a slot means for XDS, and which slots may
hold how many values, is decided by `xds.ebrim.submission`.

All lookups walk the element's children directly (no XPath): a SubmitObjectsRequest at national
load carries thousands of slots, and a child iteration with a tag comparison is the cheapest way
through them with lxml.
"""

from __future__ import annotations

import re

from lxml import etree

from xds.ebrim.ns import rim

SLOT = rim("Slot")
VALUE_LIST = rim("ValueList")
VALUE = rim("Value")
NAME = rim("Name")
DESCRIPTION = rim("Description")
LOCALIZED_STRING = rim("LocalizedString")
VERSION_INFO = rim("VersionInfo")
CLASSIFICATION = rim("Classification")
EXTERNAL_IDENTIFIER = rim("ExternalIdentifier")


def slot_values(slot: etree._Element) -> list[str]:
    """The values of one rim:Slot, in document order, as written (an empty rim:Value is '')."""
    values: list[str] = []
    for value_list in slot:
        if value_list.tag == VALUE_LIST:
            for value in value_list:
                if value.tag == VALUE:
                    values.append(value.text or "")
    return values


def localized_string(element: etree._Element | None) -> str | None:
    """The value of the first rim:LocalizedString of a rim:Name or rim:Description.

    ebRIM allows one LocalizedString per language; XDS metadata (title, comments) carries one
    title and one comment, so the first is the one the model keeps (every one stays in the
    stored XML)."""
    if element is None:
        return None
    for child in element:
        if child.tag == LOCALIZED_STRING:
            return child.get("value")
    return None


_SEGMENT = re.compile(r"^([0-9]+)\|")


def join_uri_segments(values: list[str]) -> str | None:
    """Join a URI that an XDS.a-era sender split over several values, each prefixed with its
    position ("1|http://...", "2|..."): XDS.a limited a slot value to 128 characters, so a
    long URI was cut that way. Returns None unless every value carries the
    prefix, so that an ordinary multi-valued slot is not mistaken for a split one."""
    if not values:
        return None
    numbered: list[tuple[int, str]] = []
    for value in values:
        match = _SEGMENT.match(value)
        if match is None:
            return None
        numbered.append((int(match.group(1)), value[match.end():]))
    numbered.sort(key=lambda segment: segment[0])
    return "".join(text for _, text in numbered)


def set_slot(element: etree._Element, name: str, *values: str) -> None:
    """Give the ebRIM object `element` the slot `name` with `values`: the values of a slot of
    that name are replaced (a duplicate of it is dropped), or the slot is added after the
    object's other slots (slots come first in an ebRIM RegistryObject, before Name,
    Description, Classification ...)."""
    position = 0
    found: etree._Element | None = None
    for index, child in enumerate(element):
        if child.tag == SLOT:
            position = index + 1
            if child.get("name") == name:
                if found is None:
                    found = child
                else:
                    element.remove(child)
    if found is None:
        found = etree.Element(SLOT, name=name)
        element.insert(position, found)
    for old in list(found):
        found.remove(old)
    value_list = etree.SubElement(found, VALUE_LIST)
    for value in values:
        etree.SubElement(value_list, VALUE).text = value
