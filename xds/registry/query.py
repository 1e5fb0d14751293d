"""Registry Stored Query (ITI-18) and Multi-Patient Stored Query (ITI-51) at the Document
Registry: AdhocQueryRequest in, AdhocQueryResponse out.

Theory of operation: `query_params` reads the request (every error of it at once); the patient
directory (xds.registry.patients) gives the ids a query for a patient answers with (for one
patient, as a subquery of find's own statement when it can write them in SQL); `find` reads
the objects, one SELECT per object kind, in a read-only transaction; then the rules about the
answer as a whole (ITI TF-2 3.18.4.1.3):

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
  ObjectRef answers disclose no patient data and are not restricted. A Multi-Patient Stored
  Query answers for several patients by definition: the rule is not its.

Patient Identity Merge (ITI TF-2a 3.18.4.1.2.3.9.1): "if the query includes a patient
identifier and that patient identifier matches the surviving patient identifier of a previous
merge message then the query shall return the composite of: metadata registered against the
surviving patient identifier, metadata registered against the subsumed patient identifier".
So a query's patient parameter stands for the directory's aliases of it (the id, then every id
merged into it), for every query that takes a patient id (FindDocuments, FindDocumentsBy-
ReferenceId, FindSubmissionSets, FindFolders, GetAll, and each patient of the multi-patient
queries). The objects are answered as they were registered: their patientId is the id they
were registered with, the subsumed one included (the TF asks for the metadata registered
against each id, and the registry keeps each object's XML as received; a consumer sees which
id a document was filed under). One person is one patient for XDSResultNotSinglePatient: an
answer holding a survivor's objects and those of ids merged into it is a single patient's.
A query for a retired (subsumed) id "shall return no results" (the same section): the
directory gives it no aliases, and a query whose patients all have none answers with nothing.

Access control (xds.consent, access_control = consent): a query answers only for the patients
the caller's facility may see, and answers as a registry holding only their objects would. A
query for a patient the facility may not see is a query for a patient with nothing registered:
Success, no objects (decided once, by the patient's person, in the query's own read
transaction). The queries that name no patient (the Get queries by id, and a multi-patient
query naming none) are narrowed in `find.load` to the objects of patients it may see, before
any limit is counted, so XDSTooManyResults and XDSResultNotSinglePatient see what the answer
holds and nothing else. A multi-patient query naming patients answers for those it may see. The
Result carries the request's PatientAccess: the audit trail records each patient denied.

No transaction writes, and nothing is kept between requests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from lxml import etree
from sqlalchemy.orm import Session, sessionmaker

from xds.config import Settings
from xds.consent.access import ConsentGate, PatientAccess
from xds.ebrim import ns
from xds.ebrim.query_response import (
    QueryAnswer,
    StoredObject,
    adhoc_query_response,
)
from xds.ebrim.slots import SLOT, VALUE, VALUE_LIST
from xds.errors import XdsError
from xds.registry import find
from xds.registry.patients import PatientDirectory, PatientList
from xds.registry.query_params import QueryLimits, QueryRequest, quoted_values, read_query_request
from xds.registry.stored_query import (
    ALL_BY_ID,
    MULTI_PATIENT_STORED_QUERY,
    REGISTRY_STORED_QUERY,
    ObjectKind,
    StoredQuery,
)
from xds.result import QueryNamed, Result
from xds.rules import error
from xds.security.caller import Caller

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
    #: Which ids a query for a patient answers with (the ids merged into it).
    patients: PatientDirectory = field(default_factory=PatientList)
    #: Access control (xds.consent): which patients a caller may see; None: every patient.
    consent: ConsentGate | None = None

    @classmethod
    def configured(cls, sessions: sessionmaker[Session], settings: Settings,
                   patients: PatientDirectory | None = None) -> "RegistryStoredQuery":
        """The stored queries on `sessions` with the limits and home community of `settings`,
        following the merges `patients` knows (the registry's patient list, none, without)."""
        return cls(
            sessions=sessions,
            max_leaf_class_results=settings.max_leaf_class_results,
            home_community_id=settings.home_community_id or None,
            max_leaf_class_bytes=settings.max_leaf_class_bytes,
            limits=QueryLimits(settings.max_query_parameter_values, settings.max_query_values,
                               settings.max_query_terms),
            patients=patients or PatientList(),
            consent=ConsentGate.from_settings(settings),
        )

    def query(self, request: etree._Element, transaction: str = REGISTRY_STORED_QUERY) -> etree._Element:
        """The AdhocQueryResponse to an AdhocQueryRequest sent as `transaction`."""
        answer = self.answer(request, transaction)
        return answer if isinstance(answer, etree._Element) else etree.fromstring(answer, _PARSER)

    def answer(self, request: etree._Element, transaction: str = REGISTRY_STORED_QUERY) -> etree._Element | bytes:
        """The AdhocQueryResponse, serialized when it is a LeafClass answer (written from the
        stored XML without parsing it: see query_response.leaf_class_xml)."""
        return adhoc_query_response(self.stored_query(request, transaction))[0]

    def stored_query(self, request: etree._Element, transaction: str = REGISTRY_STORED_QUERY,
                     caller: Caller | None = None) -> Result:
        """Answer an AdhocQueryRequest sent as `transaction` (ITI-18 unless told) by `caller`
        (None: this server's own command line, which sees every patient): the Result's content is
        the QueryAnswer, its query what the request named (also when it is refused)."""
        access = self.consent.access(caller) if self.consent is not None else None
        call, errors = read_query_request(request, self.limits, transaction)
        result, answered_for = self._run(call, access) if call is not None else (Result(errors), [])
        result.consent = access
        result.query = named(request)
        if transaction == MULTI_PATIENT_STORED_QUERY:
            result.query = self.named_patients(request, result.query, answered_for)
        return result

    def multi_patient_stored_query(self, request: etree._Element, caller: Caller | None = None) -> Result:
        """ITI-51: stored_query() for the multi-patient queries."""
        return self.stored_query(request, MULTI_PATIENT_STORED_QUERY, caller)

    def run(self, call: QueryRequest) -> Result:
        return self._run(call)[0]

    def _run(self, call: QueryRequest, access: PatientAccess | None = None) -> tuple[Result, list[str]]:
        """The Result of `call`, and the patient ids of its LeafClass answer's objects; with
        `access`, of the patients it may see only."""
        query = call.query
        try:
            with self.sessions() as session:
                params = self._with_aliases(session, query, call.params, access)
                if params is None:
                    return Result(content=QueryAnswer(call.leaf_class, [], self.home_community_id or None)), []
                # A query by patient was decided above; one naming none is narrowed object by object.
                by_patient = query.patient_parameter is not None and bool(call.params.get(query.patient_parameter))
                found = find.load(session, query, params, leaf_class=call.leaf_class,
                                  limit=self.max_leaf_class_results, max_bytes=self.max_leaf_class_bytes,
                                  visible=access.visible if access is not None and not by_patient else None)
                # A query for a patient answers for that patient alone, its merged ids included;
                # a multi-patient one for several by definition. Only the Get queries can mix.
                problem = (self._single_patient(session, found)
                           if call.leaf_class and query.patient_parameter is None else None)
        except find.TooManyResults as too_many:
            return Result([error("query.too-many-results", query.name, limit=too_many.limit)]), []
        except find.AnswerTooLarge as too_large:
            return Result([error("query.answer-too-large", query.name, limit=too_large.limit)]), []
        home = self.home_community_id or None
        if not call.leaf_class:
            return Result(content=QueryAnswer(False, [row.entry_uuid for _, row in found.rows()], home)), []
        if problem is not None:
            return Result([problem]), []
        answer = Result(content=QueryAnswer(True, [
            StoredObject(row.xml or "", row.status, row.last_update_time if kind is ObjectKind.FOLDER else None)
            for kind, row in found.rows()], home))
        return answer, sorted({row.patient_id for _, row in found.rows() if row.patient_id})

    def _with_aliases(self, session: Session, query: StoredQuery, params: dict,
                      access: PatientAccess | None = None) -> dict | None:
        """`params` with the patient parameter standing for every id the directory gives for
        the patient(s) it names (see the module's docstring) that `access` may see; None when
        that is no id at all (only retired ids, or patients it may not see, were named): the
        answer is empty, whatever else the query asks. One patient stands for its aliases as
        the directory writes them in SQL (`find.Aliases`), when it can: find's statement looks
        them up itself (and a retired id's query runs, to find nothing)."""
        name = query.patient_parameter
        if name is None or not params.get(name):
            return params
        value = params[name]
        if isinstance(value, str):
            if access is not None and not access.visible(session, [value]):
                return None
            if self.patients.aliases_in_sql is not None:
                return {**params, name: find.Aliases(value, self.patients.aliases_in_sql)}
            ids = self.patients.aliases(session, value)
        else:
            if access is not None:
                allowed = access.visible(session, value)
                value = [pid for pid in value if pid in allowed]
                if not value:
                    return None
            aliases = self.patients.aliases_of(session, value)
            ids = list(dict.fromkeys(a for pid in value for a in aliases[pid]))
        return {**params, name: ids} if ids else None

    def _single_patient(self, session: Session, found: find.Found) -> XdsError | None:
        """XDSResultNotSinglePatient when the objects found are of more than one patient: ids
        are one patient when one is merged into another that the answer holds too."""
        patients = sorted({row.patient_id for _, row in found.rows() if row.patient_id})
        if len(patients) <= 1:
            return None
        aliases = self.patients.aliases_of(session, patients)
        person = {pid: pid for pid in patients}
        for pid in patients:
            for merged in aliases[pid][1:]:
                if merged in person:
                    person[merged] = pid
        persons = sorted(set(person.values()))
        if len(persons) <= 1:
            return None
        shown = ", ".join(persons[:5]) + (", ..." if len(persons) > 5 else "")
        return error("query.not-single-patient", count=len(persons), patients=shown)

    def named_patients(self, request: etree._Element, query: QueryNamed,
                       answered_for: list[str] | None = None) -> QueryNamed:
        """`query` (what a multi-patient request named) with the patients its audit records are
        for: those the request names; when it names none, those of its LeafClass answer (an
        ObjectRef answer holds ids only, no patient's metadata: one record without patient)."""
        stored = ALL_BY_ID.get(query.query_id)
        if stored is None or not stored.multi_patient:
            return query
        parameter = stored.patient_parameter or ""
        named_ids = _slot_strings(request, parameter, self.limits.parameter_values)
        if named_ids:
            return replace(query, patient_id="", patients=tuple(dict.fromkeys(named_ids)),
                           patient_parameter=parameter)
        return replace(query, patient_id="", patients=tuple(answered_for or ()))


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


def _slot_strings(request: etree._Element, name: str, limit: int) -> list[str]:
    """The quoted values of the request's slot `name`, read whatever else is wrong with the
    request ([] when there is no such slot, or it cannot be read, or holds more than `limit`)."""
    adhoc = next(request.iterchildren(_ADHOC_QUERY), None)
    if adhoc is None or not name:
        return []
    for slot in adhoc.iterchildren(SLOT):
        if slot.get("name") == name:
            values = [v.text or "" for value_list in slot.iterchildren(VALUE_LIST)
                      for v in value_list.iterchildren(VALUE)]
            return quoted_values(values, limit) or []
    return []
