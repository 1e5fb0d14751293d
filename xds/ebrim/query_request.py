"""query:AdhocQueryRequest, the request of Registry Stored Query (ITI-18), for clients: the
command line and tests.

    adhoc_query_request(FIND_DOCUMENTS_ID, [("$XDSDocumentEntryPatientId", [quote(pid)]),
                                            ("$XDSDocumentEntryStatus", ["('urn:...:Approved')"])])

Slot values are written as ITI TF-2 3.18.4.1.2.3 has them (`quote` makes a string value);
a name given twice makes two slots (the AND of the AND/OR parameters).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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
