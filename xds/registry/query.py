"""Registry Stored Query (ITI-18) at the Document Registry: AdhocQueryRequest in,
AdhocQueryResponse out.

Theory of operation: `query_params` reads the request (every error of it at once); `find`
reads the objects, one SELECT per object kind, in a read-only transaction; then the rules about
the answer as a whole (ITI TF-2 3.18.4.1.3):

- XDSTooManyResults: a LeafClass answer holds at most `max_leaf_class_results` objects, and at
  most `max_leaf_class_bytes` bytes of stored XML; a query that matches more fails before the
  answer is held in memory (see `find.load`). An answer is built whole (the stored strings, the
  answer, the envelope: measured 3.1 times its size in a worker at the peak on SQLite, 4 times
  on PostgreSQL), so the bytes are what bounds a worker's memory, not the count: entries with
  large slots make a 10,000-entry answer of hundreds of MB. ObjectRef answers are not limited:
  they are what a consumer asks for next.
- The request's own limits (values per parameter and per query, terms) are `query_params`'s:
  XDSStoredQueryParamNumber before any SQL runs.
- XDSResultNotSinglePatient: a LeafClass answer never holds the metadata of more than one
  patient (the Get queries can name objects of several; the NIST toolkit's test 12368).
  ObjectRef answers disclose no patient data and are not restricted.

No transaction writes, and nothing is kept between requests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from lxml import etree
from sqlalchemy.orm import Session, sessionmaker

from xds.config import Settings
from xds.ebrim import ns
from xds.ebrim.query_response import (
    QueryAnswer,
    StoredObject,
    adhoc_query_response,
    error_response,
)
from xds.ebrim.slots import SLOT, VALUE, VALUE_LIST
from xds.errors import XdsError
from xds.registry import find
from xds.registry.query_params import QueryLimits, QueryRequest, read_query_request
from xds.registry.stored_query import ObjectKind
from xds.result import QueryNamed, Result
from xds.rules import error

log = logging.getLogger("xds.registry")

# Answers are our own serialization; the parser only needs the hardened defaults.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)

DEFAULT_MAX_LEAF_CLASS_RESULTS = 10000
DEFAULT_MAX_LEAF_CLASS_BYTES = 64 * 1024 * 1024
_ADHOC_QUERY = ns.rim("AdhocQuery")
# The stored query parameters that name the patient (ITI TF-2a 3.18.4.1.2.3.7).
_PATIENT_PARAMETERS = ("$XDSDocumentEntryPatientId", "$XDSSubmissionSetPatientId", "$XDSFolderPatientId",
                       "$patientId")


@dataclass
class RegistryStoredQuery:
    #: Read sessions (db.make_sessionmaker(engine), not a write one).
    sessions: sessionmaker[Session]
    max_leaf_class_results: int = DEFAULT_MAX_LEAF_CLASS_RESULTS
    #: urn:oid:... of this registry's community; set as the home attribute of every object.
    home_community_id: str | None = None
    #: The most bytes of stored XML one LeafClass answer holds (None: no limit).
    max_leaf_class_bytes: int | None = DEFAULT_MAX_LEAF_CLASS_BYTES
    #: What one request may ask for (values per parameter and per query, terms).
    limits: QueryLimits = field(default_factory=QueryLimits)

    @classmethod
    def configured(cls, sessions: sessionmaker[Session], settings: Settings) -> "RegistryStoredQuery":
        """The stored queries on `sessions` with the limits and home community of `settings`."""
        return cls(
            sessions=sessions,
            max_leaf_class_results=settings.max_leaf_class_results,
            home_community_id=settings.home_community_id or None,
            max_leaf_class_bytes=settings.max_leaf_class_bytes,
            limits=QueryLimits(settings.max_query_parameter_values, settings.max_query_values,
                               settings.max_query_terms),
        )

    def query(self, request: etree._Element) -> etree._Element:
        """The AdhocQueryResponse to an AdhocQueryRequest."""
        answer = self.answer(request)
        return answer if isinstance(answer, etree._Element) else etree.fromstring(answer, _PARSER)

    def answer(self, request: etree._Element) -> etree._Element | bytes:
        """The AdhocQueryResponse, serialized when it is a LeafClass answer (written from the
        stored XML without parsing it: see query_response.leaf_class_xml)."""
        return adhoc_query_response(self.stored_query(request))[0]

    def stored_query(self, request: etree._Element) -> Result:
        """Answer an AdhocQueryRequest: the Result's content is the QueryAnswer, its query what
        the request named (also when it is refused)."""
        call, errors = read_query_request(request, self.limits)
        result = self.run(call) if call is not None else Result(errors)
        result.query = named(request)
        return result

    def run(self, call: QueryRequest) -> Result:
        try:
            with self.sessions() as session:
                found = find.load(session, call.query, call.params, leaf_class=call.leaf_class,
                                  limit=self.max_leaf_class_results, max_bytes=self.max_leaf_class_bytes)
        except find.TooManyResults as too_many:
            return Result([error("query.too-many-results", call.query.name, limit=too_many.limit)])
        except find.AnswerTooLarge as too_large:
            return Result([error("query.answer-too-large", call.query.name, limit=too_large.limit)])
        home = self.home_community_id or None
        if not call.leaf_class:
            return Result(content=QueryAnswer(False, [row.entry_uuid for _, row in found.rows()], home))
        problem = _single_patient(found)
        if problem is not None:
            return Result([problem])
        return Result(content=QueryAnswer(True, [
            StoredObject(row.xml or "", row.status, row.last_update_time if kind is ObjectKind.FOLDER else None)
            for kind, row in found.rows()], home))


def named(request: etree._Element) -> QueryNamed:
    """The stored query's id, its patient and its homeCommunityId as the request names them,
    whether or not it is a valid call (the audit record of a refused query names them too)."""
    # iterchildren() rather than find()/findtext(): this runs for every query, and the
    # ElementPath calls cost more than the walk
    adhoc = next(request.iterchildren(_ADHOC_QUERY), None)
    if adhoc is None:
        return QueryNamed()
    patient = ""
    for slot in adhoc.iter(SLOT):
        if slot.get("name") in _PATIENT_PARAMETERS:
            patient = (_first_value(slot) or "").strip().strip("'")
            break
    return QueryNamed(adhoc.get("id") or "", patient, adhoc.get("home") or "")


def _first_value(slot: etree._Element) -> str | None:
    """slot.findtext("rim:ValueList/rim:Value")."""
    for value_list in slot.iterchildren(VALUE_LIST):
        for value in value_list.iterchildren(VALUE):
            return value.text or ""
    return None


def _single_patient(found: find.Found) -> XdsError | None:
    patients = sorted({row.patient_id for _, row in found.rows() if row.patient_id})
    if len(patients) <= 1:
        return None
    shown = ", ".join(patients[:5]) + (", ..." if len(patients) > 5 else "")
    return error("query.not-single-patient", count=len(patients), patients=shown)
