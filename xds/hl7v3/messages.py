"""One way in for every message the PIX Manager and the PDQ Supplier receive: the root element
chooses the reader.

    read_message(body)   PatientFeed | DuplicatesResolved | PixQuery | PdqQuery |
                         QueryContinuation, or Unsupported (NS200) for anything else

Which answer goes with which message, and their SOAP actions, is xds.hl7v3.ns.INTERACTIONS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree

from xds.hl7v3.datatypes import Problems
from xds.hl7v3.feed import read_duplicates_resolved, read_patient_feed
from xds.hl7v3.ns import INTERACTIONS
from xds.hl7v3.pdq import read_pdq_query, read_query_continuation
from xds.hl7v3.pix import read_pix_query
from xds.hl7v3.wrapper import Received, check_root, read_header

READERS: dict[str, Callable[[etree._Element], Received]] = {
    "PRPA_IN201301UV02": read_patient_feed,
    "PRPA_IN201302UV02": read_patient_feed,
    "PRPA_IN201304UV02": read_duplicates_resolved,
    "PRPA_IN201309UV02": read_pix_query,
    "PRPA_IN201305UV02": read_pdq_query,
    "QUQI_IN000003UV01": read_query_continuation,
    "QUQI_IN000003UV01_Cancel": read_query_continuation,
}
assert set(READERS) == set(INTERACTIONS)


@dataclass
class Unsupported(Received):
    """A message no reader here takes; its header is read when it looks like an HL7v3 one, so
    the AR acknowledgement can still reach its sender."""


def read_message(body: etree._Element) -> Received:
    if not isinstance(body.tag, str):
        problems: Problems = []
        check_root(body, set(READERS), problems)
        return Unsupported(problems=problems)
    reader = READERS.get(etree.QName(body).localname) if etree.QName(body).namespace == "urn:hl7-org:v3" else None
    if reader is not None:
        return reader(body)
    problems = []
    check_root(body, set(READERS), problems)
    header_problems: Problems = []
    header = read_header(body, header_problems) if etree.QName(body).namespace == "urn:hl7-org:v3" else None
    return Unsupported(header=header, problems=problems) if header else Unsupported(problems=problems)
