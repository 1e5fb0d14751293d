"""Registry Stored Query (ITI-18) at the Document Registry: AdhocQueryRequest in,
AdhocQueryResponse out.

Theory of operation: `query_params` reads the request (every error of it at once); `find`
reads the objects, one SELECT per object kind, in a read-only transaction; then the rules about
the answer as a whole (ITI TF-2 3.18.4.1.3):

- XDSTooManyResults: a LeafClass answer holds at most `max_leaf_class_results` objects; a query
  that matches more fails (find stops reading at the first object past the limit). ObjectRef
  answers are not limited: they are what a consumer asks for next.
- XDSResultNotSinglePatient: a LeafClass answer never holds the metadata of more than one
  patient (the Get queries can name objects of several; the NIST toolkit's test 12368).
  ObjectRef answers disclose no patient data and are not restricted.

No transaction writes, and nothing is kept between requests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lxml import etree
from sqlalchemy.orm import Session, sessionmaker

from xds.ebrim.query_response import (
    StoredObject,
    error_response,
    leaf_class_xml,
    object_ref_response,
)
from xds.errors import XdsError
from xds.registry import find
from xds.registry.query_params import QueryRequest, read_query_request
from xds.registry.stored_query import ObjectKind
from xds.rules import error

log = logging.getLogger("xds.registry")

# Answers are our own serialization; the parser only needs the hardened defaults.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)

DEFAULT_MAX_LEAF_CLASS_RESULTS = 10000


@dataclass
class RegistryStoredQuery:
    #: Read sessions (db.make_sessionmaker(engine), not a write one).
    sessions: sessionmaker[Session]
    max_leaf_class_results: int = DEFAULT_MAX_LEAF_CLASS_RESULTS
    #: urn:oid:... of this registry's community; set as the home attribute of every object.
    home_community_id: str | None = None

    def query(self, request: etree._Element) -> etree._Element:
        """The AdhocQueryResponse to an AdhocQueryRequest."""
        answer = self.answer(request)
        return answer if isinstance(answer, etree._Element) else etree.fromstring(answer, _PARSER)

    def answer(self, request: etree._Element) -> etree._Element | bytes:
        """The AdhocQueryResponse, serialized when it is a LeafClass answer (written from the
        stored XML without parsing it: see query_response.leaf_class_xml)."""
        call, errors = read_query_request(request)
        if call is None:
            return error_response(errors)
        return self.run(call)

    def run(self, call: QueryRequest) -> etree._Element | bytes:
        try:
            with self.sessions() as session:
                found = find.load(session, call.query, call.params, leaf_class=call.leaf_class,
                                  limit=self.max_leaf_class_results)
        except find.TooManyResults as too_many:
            return error_response([error("query.too-many-results", call.query.name, limit=too_many.limit)])
        home = self.home_community_id or None
        if not call.leaf_class:
            return object_ref_response((row.entry_uuid for _, row in found.rows()), home)
        problem = _single_patient(found)
        if problem is not None:
            return error_response([problem])
        return leaf_class_xml(
            (StoredObject(row.xml or "", row.status, row.last_update_time if kind is ObjectKind.FOLDER else None)
             for kind, row in found.rows()),
            home,
        )


def _single_patient(found: find.Found) -> XdsError | None:
    patients = sorted({row.patient_id for _, row in found.rows() if row.patient_id})
    if len(patients) <= 1:
        return None
    shown = ", ".join(patients[:5]) + (", ..." if len(patients) > 5 else "")
    return error("query.not-single-patient", count=len(patients), patients=shown)
