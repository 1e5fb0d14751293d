"""query:AdhocQueryRequest, the request of Registry Stored Query (ITI-18) and Multi-Patient
Stored Query (ITI-51), for clients (the command line and tests) and for the audit trail.

    adhoc_query_request(FIND_DOCUMENTS_ID, [("$XDSDocumentEntryPatientId", [quote(pid)]),
                                            ("$XDSDocumentEntryStatus", ["('urn:...:Approved')"])])

Slot values are written as ITI TF-2 3.18.4.1.2.3 has them (`quote` makes a string value);
a name given twice makes two slots (the AND of the AND/OR parameters).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable, Iterator, Sequence
from xml.sax.saxutils import escape

from lxml import etree

from xds.ebrim import ns

ADHOC_QUERY_REQUEST = f"{{{ns.QUERY}}}AdhocQueryRequest"
RESPONSE_OPTION = f"{{{ns.QUERY}}}ResponseOption"


def quote(value: str) -> str:
    """A string parameter value: in single quotes, a quote inside doubled."""
    return "'" + value.replace("'", "''") + "'"


def quote_list(values: Iterable[str]) -> str:
    """A list parameter value: ('a','b')."""
    return "(" + ",".join(quote(v) for v in values) + ")"


def adhoc_query_request(query_id: str, slots: Iterable[tuple[str, Sequence[str]]],
                        return_type: str = "LeafClass", home: str | None = None) -> etree._Element:
    """An AdhocQueryRequest calling stored query `query_id` with one rim:Slot per (name,
    values) pair, each value a rim:Value as written."""
    request = etree.Element(ADHOC_QUERY_REQUEST, nsmap={"query": ns.QUERY, "rim": ns.RIM})
    etree.SubElement(request, RESPONSE_OPTION, returnComposedObjects="true", returnType=return_type)
    query = etree.SubElement(request, ns.rim("AdhocQuery"), id=query_id)
    if home:
        query.set("home", home)
    for name, values in slots:
        slot = etree.SubElement(query, ns.rim("Slot"), name=name)
        value_list = etree.SubElement(slot, ns.rim("ValueList"))
        for value in values:
            etree.SubElement(value_list, ns.rim("Value")).text = value
    return request


def with_each_value(request: etree._Element, slot_name: str, values: Iterable[str]) -> Iterator[bytes]:
    """The AdhocQueryRequest serialized (as the audit trail keeps a query: standing alone, with
    the namespace declarations it inherited) once for each of `values`, its slot `slot_name`
    holding that value alone, as a one-value list: the query of one patient's audit record of a
    multi-patient query. The request is serialized once; each value is put in its place."""
    template = copy.deepcopy(request)
    marker = f"@@{uuid.uuid4().hex}@@"
    adhoc = template.find(ns.rim("AdhocQuery"))
    for slot in () if adhoc is None else adhoc.iterchildren(ns.rim("Slot")):
        if slot.get("name") == slot_name:
            for child in list(slot):
                slot.remove(child)
            etree.SubElement(etree.SubElement(slot, ns.rim("ValueList")), ns.rim("Value")).text = marker
            break
    before, found, after = etree.tostring(template, encoding="UTF-8", with_tail=False).partition(marker.encode())
    for value in values:
        if not found:
            yield before
            continue
        yield before + escape(quote_list([value]), {"\r": "&#13;"}).encode("utf-8") + after
