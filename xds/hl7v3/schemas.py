"""Validation of a message against the HL7 V3 NE2008 schemas, its failures as
acknowledgementDetails.

The schemas are HL7's and are not part of this project: the service is given the folder that
holds them (the NE2008 folder, with multicacheschemas/ and coreschemas/). Each message's schema
is compiled on first use (about 20 to 50 ms) and kept; validating a message then costs about
50 microseconds (a 7 KB feed), far less than parsing it. A compiled schema is shared by the
threads of a worker behind a lock (its error log is per schema object).

    schemas = MessageSchemas(folder)
    schemas.validate(body)   [] when valid, else SYN / SYN105 / SYN101 / SYN102 details with the
                             schema's message and the path of the offending element
"""

from __future__ import annotations

import threading
from pathlib import Path

from lxml import etree

from xds.hl7v3.datatypes import location
from xds.hl7v3.details import AcknowledgementDetail, error
from xds.hl7v3.ns import V3

SCHEMA_FILES = {
    "PRPA_IN201301UV02": "PRPA_IN201301UV02.xsd",
    "PRPA_IN201302UV02": "PRPA_IN201302UV02.xsd",
    "PRPA_IN201304UV02": "PRPA_IN201304UV02.xsd",
    "PRPA_IN201305UV02": "PRPA_IN201305UV02.xsd",
    "PRPA_IN201306UV02": "PRPA_IN201306UV02.xsd",
    "PRPA_IN201309UV02": "PRPA_IN201309UV02.xsd",
    "PRPA_IN201310UV02": "PRPA_IN201310UV02.xsd",
    "MCCI_IN000002UV01": "MCCI_IN000002UV01.xsd",
    "QUQI_IN000003UV01": "QUQI_IN000003UV01.xsd",
    "QUQI_IN000003UV01_Cancel": "QUQI_IN000003UV01.xsd",
}


def _code(message: str) -> str:
    if "Missing child element" in message:
        return "SYN105"
    if "is required but missing" in message:
        return "SYN101"
    if any(s in message for s in ("is not a valid value", "is not accepted by the pattern",
                                  "is not an element of the set")):
        return "SYN102"
    return "SYN"


class MessageSchemas:
    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self._schemas: dict[str, tuple[etree.XMLSchema, threading.Lock]] = {}
        self._compiling = threading.Lock()

    def schema(self, name: str) -> tuple[etree.XMLSchema, threading.Lock] | None:
        if name not in SCHEMA_FILES:
            return None
        with self._compiling:
            if name not in self._schemas:
                path = self.folder / "multicacheschemas" / SCHEMA_FILES[name]
                parser = etree.XMLParser(resolve_entities=False, no_network=True)
                self._schemas[name] = (etree.XMLSchema(etree.parse(str(path), parser)), threading.Lock())
            return self._schemas[name]

    def validate(self, message: etree._Element) -> list[AcknowledgementDetail]:
        q = etree.QName(message) if isinstance(message.tag, str) else None
        found = self.schema(q.localname) if q is not None and q.namespace == V3 else None
        if found is None:
            name = q.localname if q is not None else "?"
            return [error("NS200", f"no HL7 V3 schema here for {name}", f"/{name}")]
        schema, lock = found
        with lock:
            if schema.validate(message):
                return []
            entries = list(schema.error_log)
        return [error(_code(e.message), f"the message is not valid by the HL7 V3 schema: {e.message}",
                      _location(message, e.path)) for e in entries]


def _location(message: etree._Element, path: str | None) -> str:
    """The schema error's node located as the readers locate things (by names, from the
    message's root). lxml's path starts at the message, even inside a SOAP envelope, and
    writes elements of a default namespace as * (/*/*[9])."""
    if not path or not path.startswith("/"):
        return path or ""
    rest = "/".join(path.split("/")[2:]) or "."
    try:
        found = message.xpath(rest, namespaces={p: u for p, u in message.nsmap.items() if p})
    except etree.XPathError:
        return path
    return location(found[0]) if found and isinstance(found[0], etree._Element) else path
