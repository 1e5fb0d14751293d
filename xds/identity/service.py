"""The PIX Manager and the PDQ Supplier as SOAP services: the handlers the transactions table
(xds.transactions) names for ITI-44, ITI-45 and ITI-47.

    POST /pix   ITI-44 Patient Identity Feed HL7v3 (add, revise, duplicates resolved)
                  -> MCCI_IN000002UV01; the feed is also the Document Registry's
                ITI-45 PIX Query -> PRPA_IN201310UV02
    POST /pdq   ITI-47 Patient Demographics Query -> PRPA_IN201306UV02, its continuation
                  (QUQI_IN000003UV01) -> PRPA_IN201306UV02 and cancel -> MCCI_IN000002UV01

Each handler reads the body (xds.hl7v3: readers never raise, they list problems), optionally
checks it against the NE2008 schemas (setting hl7v3_schemas), does the work in the identity
store (xds.identity, one database transaction) and returns a Result whose `content` is the HL7v3
answer and whose `acknowledgement` (AA, AE, AR) is the outcome the audit records. Whatever is
wrong with a message is answered in HL7's terms, an acknowledgementDetail with a code and the
location of the offending element, never with a SOAP fault: a fault would tell the sender less.
An unexpected failure is logged with the request's MessageID and answered AE with INTERR.

PDQ continuation: an answer holds at most the query's initialQuantity matches (else
pdq_page_size); when more remain, the query is kept in the database (pdq_query) under the
consumer's queryId, so a continuation may reach any worker on any host. A cancel, the last page
or pdq_continuation_timeout seconds without a continuation end it.

Access control (xds.consent, access_control = consent): no answer names a person who has not
consented to the requesting facility. ITI-45 for an id of such a person is answered as for an
id the PIX Manager does not know: AE, acknowledgementDetail 204 (unknown key identifier) at
the patient identifier, no registrationEvent, the id echoed in queryByParameter (ITI TF-2
3.45.4.2.3, Case 3, "the Patient Identifier Cross-reference Manager does not recognize the
Patient Identifier sent"). Case 2 (AA, NF: the id is recognized but the person has no id in the
domains asked for) would tell the consumer that the id exists and is cross-referenced, which a
PIX Manager holding only what the facility may see could not say. ITI-47 leaves such persons'
matches out before counting: resultTotalQuantity, remainingQuantity and the pages a
continuation returns count the others only (every match is decided, its demographics read
only when it is on the page; consent is decided again at each continuation, so a withdrawal
applies to the next page). An assigning authority none of whose ids the facility may see is
answered as one nobody fed (xds.consent.identity).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from xds.consent import identity as consent_identity
from xds.consent.access import ConsentGate, PatientAccess
from xds.hl7v3 import ack, pdq as hl7_pdq, pix as hl7_pix
from xds.hl7v3.details import AcknowledgementDetail, error, unknown_key_identifier
from xds.hl7v3.feed import DuplicatesResolved, PatientFeed
from xds.hl7v3.messages import read_message
from xds.hl7v3.ns import INTERACTIONS, new_message_id
from xds.hl7v3.schemas import MessageSchemas
from xds.hl7v3.wrapper import Received
from xds.identity import feed, pdq, pix
from xds.identity.errors import IdentityError
from xds.identity.feed import FeedResult
from xds.identity.policy import IdentityPolicy
from xds.model.person import Identifier
from xds.result import QueryNamed, Result
from xds.security.caller import Caller
from xds.soap import SoapRequest
from xds.store import db
from xds.store.tables import PdqQueryRow

log = logging.getLogger("xds")

#: The messages each handler takes (the SOAP action chose the handler; the body must agree).
FEED = {"PRPA_IN201301UV02", "PRPA_IN201302UV02", "PRPA_IN201304UV02"}
PIX_QUERY = {"PRPA_IN201309UV02"}
PDQ_QUERY = {"PRPA_IN201305UV02"}
CONTINUATION = {"QUQI_IN000003UV01", "QUQI_IN000003UV01_Cancel"}

#: The acknowledgementDetail code answering each refusal of the identity store: 204 (unknown key
#: identifier, HL7 table 0357) where an id is unknown, as ITI TF-2 3.45.4.2.3 names it; SYN101
#: for an id without its parts; SYN113 (formal constraint violation) for a feed the store's
#: rules forbid (an id merged away, into itself, two ids of one domain in one person).
_IDENTITY_CODES = {"unknown-id": "204", "unknown-subsumed": "204", "invalid-id": "SYN101"}

#: Called in the feed's transaction with what it did (the ITI-46 notification queue).
AfterFeed = Callable[[Session, FeedResult], None]


@dataclass
class IdentityService:
    engine: Engine
    policy: IdentityPolicy
    #: Validates every message against HL7's NE2008 schemas when given (setting hl7v3_schemas).
    schemas: MessageSchemas | None = None
    #: This system's device id (an OID) as the answers' sender; "" : the device the request was
    #: addressed to.
    device: str = ""
    #: Matches in an ITI-47 answer when the query sets no initialQuantity.
    page_size: int = 100
    #: Seconds an ITI-47 query with matches still to come waits for a continuation.
    continuation_timeout: float = 600
    after_feed: AfterFeed | None = None
    #: Access control (xds.consent): the persons a caller may see; None: every person.
    consent: ConsentGate | None = None

    def __post_init__(self) -> None:
        # Queries read outside any write transaction: on SQLite a write one would queue them
        # behind every feed and registration.
        self._reading = db.make_sessionmaker(self.engine)

    # --- ITI-44 ------------------------------------------------------------------------------

    def patient_identity_feed(self, request: SoapRequest, caller: Caller) -> Result:
        message = self._read(request, FEED)
        return self._answering(request, message, lambda: self._feed(message))

    def _feed(self, message: Received) -> Result:
        details = list(message.problems)
        if message.ok:
            assert isinstance(message, (PatientFeed, DuplicatesResolved)) and message.patient is not None
            try:
                with db.write_session(self.engine) as session:
                    result, retired = self._apply(session, message)
                    if self.after_feed is not None:
                        self.after_feed(session, result)
            except IdentityError as refused:
                details.append(_identity_detail(refused, message))
            else:
                answer = ack.accept_acknowledgement(message.header, details=details, sender=self._sender)
                return Result(content=answer, acknowledgement="AA", patient_id=result.patient.cx,
                              patients=[i.cx for i in retired])
        patient = getattr(message, "patient", None)
        answer = ack.accept_acknowledgement(message.header, details=details, sender=self._sender)
        return Result(content=answer, acknowledgement=ack.acknowledgement_type(details),
                      patient_id=patient.ids[0].cx if patient is not None and patient.ids else "")

    def _apply(self, session: Session, message: PatientFeed | DuplicatesResolved) -> tuple[FeedResult, list[Identifier]]:
        """What the feed did, and the ids it retired."""
        if isinstance(message, DuplicatesResolved):
            # One merge per subsumed id (the reader requires one at least); what they changed
            # together is what the last one reports, with every person and retired id.
            results = [feed.merge(session, message.patient, subsumed, self.policy) for subsumed in message.subsumed]
            result = results[-1]
            for earlier in results[:-1]:
                result.persons_changed |= earlier.persons_changed
                result.registry_removed += earlier.registry_removed
            # The ids this message retired (a merge sent again retires nothing: not audited again).
            return result, [r.retired for r in results if r.retired is not None and r.action == "merged"]
        if message.revised:
            return feed.revise(session, message.patient, self.policy), []
        return feed.add(session, message.patient, self.policy), []

    # --- ITI-45 ------------------------------------------------------------------------------

    def pix_query(self, request: SoapRequest, caller: Caller) -> Result:
        message = self._read(request, PIX_QUERY)
        access = self._access(caller)
        return self._answering(request, message, lambda: self._pix(message, access), access)

    def _pix(self, query: hl7_pix.PixQuery, access: PatientAccess | None = None) -> Result:
        sender = self._sender
        if not query.ok:
            return _answer(hl7_pix.pix_query_response(query, details=query.problems, sender=sender), "AE")
        with self._reading() as session:
            found = pix.query(session, query.patient_id, query.data_sources, self.policy)
            if access is not None:  # as a PIX Manager holding what it may see (see the module's docstring)
                found = consent_identity.pix_answer(session, access, found, query.patient_id, query.data_sources,
                                                    self.policy)
        details = list(query.problems)
        if found.outcome == pix.UNKNOWN_DOMAIN:
            details.append(unknown_key_identifier(
                f"no patient id of assigning authority {query.patient_id.root} is known here",
                hl7_pix.PATIENT_IDENTIFIER_LOCATION))
        elif found.outcome == pix.UNKNOWN_ID:
            details.append(unknown_key_identifier(f"patient id {query.patient_id.cx} is not known here",
                                                  hl7_pix.PATIENT_IDENTIFIER_LOCATION))
        elif found.outcome == pix.UNKNOWN_DATA_SOURCE:
            details += [unknown_key_identifier(f"no patient id of assigning authority {root} is known here",
                                               hl7_pix.data_source_location(query.data_sources.index(root)))
                        for root in found.unknown_data_sources]
        if any(d.is_error for d in details):
            return _answer(hl7_pix.pix_query_response(query, details=details, sender=sender), "AE",
                           patient_id=query.patient_id.cx)
        # The queried-for id is echoed in queryByParameter, not among the ids (ITI TF-2 3.45.4.2.3);
        # the survivor of a merged one is: it is the id to use now.
        ids = [i for i in found.ids if i != query.patient_id]
        answer = hl7_pix.pix_query_response(query, ids, details=details, sender=sender)
        return _answer(answer, "AA", patient_id=query.patient_id.cx, patients=[i.cx for i in ids])

    # --- ITI-47 ------------------------------------------------------------------------------

    def patient_demographics_query(self, request: SoapRequest, caller: Caller) -> Result:
        message = self._read(request, PDQ_QUERY)
        access = self._access(caller)
        return self._answering(request, message, lambda: self._pdq(message, etree.tostring(request.body), access),
                               access)

    def _pdq(self, query: hl7_pdq.PdqQuery, body: bytes, access: PatientAccess | None = None) -> Result:
        if not query.ok:
            return self._pdq_refused(query, list(query.problems))
        with self._reading() as session:
            details = self._unknown_domains(session, query, access)
            if any(d.is_error for d in details):
                return self._pdq_refused(query, details)
            size = query.initial_quantity or self.page_size
            page = self._search(session, search_query(query), 0, size, access)
        message_id = new_message_id()
        if page.remaining:
            with db.write_session(self.engine) as session:
                self._keep(session, query.query_id, body, len(page.matches), message_id)
        return self._pdq_answer(query, page, query.header, message_id)

    def query_continuation(self, request: SoapRequest, caller: Caller) -> Result:
        message = self._read(request, CONTINUATION)
        access = self._access(caller)
        return self._answering(request, message, lambda: self._continue(message, access), access)

    def _search(self, session: Session, query: pdq.PdqQuery, offset: int, size: int,
                access: PatientAccess | None) -> pdq.PdqPage:
        """A page of the matches `access` may see (all of them without access control)."""
        return consent_identity.search(session, access, query, self.policy, offset, size)

    def _access(self, caller: Caller) -> PatientAccess | None:
        return self.consent.access(caller) if self.consent is not None else None

    def _continue(self, message: hl7_pdq.QueryContinuation, access: PatientAccess | None = None) -> Result:
        if not message.ok:
            return self._continuation_refused(message, list(message.problems))
        key = _key(message.query_id)
        with db.write_session(self.engine) as session:
            row = session.get(PdqQueryRow, key, with_for_update=True)
            now = self.policy.clock()
            if row is not None and _aware(row.expires_at) <= now:
                session.delete(row)
                row = None
            if message.cancel:
                if row is not None:
                    session.delete(row)
                # A cancel of a query already ended is no error: the consumer wants no more.
                answer = ack.accept_acknowledgement(message.header, "AA", message.problems, sender=self._sender)
                return _answer(answer, "AA")
            if row is None:
                return self._continuation_refused(message, [unknown_key_identifier(
                    f"query {key} is not open here: it was never asked, has ended (all its matches were sent, or "
                    f"it was cancelled) or waited more than {self.continuation_timeout:g} s for a continuation",
                    "/QUQI_IN000003UV01/controlActProcess/queryContinuation/queryId")])
            query = hl7_pdq.read_pdq_query(etree.fromstring(row.request))
            start = (message.start_result_number - 1) if message.start_result_number else row.position
            size = message.continuation_quantity or query.initial_quantity or self.page_size
            page = self._search(session, search_query(query), max(0, start), size, access)
            message_id = new_message_id()
            if page.remaining:
                row.position = start + len(page.matches)
                row.last_response_id = message_id
                row.expires_at = now + dt.timedelta(seconds=self.continuation_timeout)
            else:
                session.delete(row)
        return self._pdq_answer(query, page, message.header, message_id)

    def _continuation_refused(self, message: hl7_pdq.QueryContinuation,
                              details: list[AcknowledgementDetail]) -> Result:
        """A continuation is answered as its query is (PRPA_IN201306UV02, AE, the query id it
        named); a cancel with an acknowledgement."""
        if message.cancel:
            return _answer(ack.accept_acknowledgement(message.header, details=details, sender=self._sender),
                           ack.acknowledgement_type(details))
        query = hl7_pdq.PdqQuery(query_id=message.query_id)
        answer = hl7_pdq.pdq_query_response(query, request=message.header, details=details, sender=self._sender)
        return _answer(answer, "AE")

    def _keep(self, session: Session, query_id: Identifier, body: bytes, position: int, message_id: str) -> None:
        now = self.policy.clock()
        session.execute(delete(PdqQueryRow).where(PdqQueryRow.expires_at <= now))
        row = session.get(PdqQueryRow, _key(query_id)) or PdqQueryRow(query_id=_key(query_id))
        row.request, row.position, row.last_response_id = body.decode(), position, message_id
        row.expires_at = now + dt.timedelta(seconds=self.continuation_timeout)
        session.add(row)

    def _unknown_domains(self, session: Session, query: hl7_pdq.PdqQuery,
                         access: PatientAccess | None = None) -> list[AcknowledgementDetail]:
        """204 for every assigning authority the query names that is no domain here (ITI TF-2
        3.47.4.2.3): of the otherIDsScopingOrganizations and of the livingSubjectIds; with
        access control, none the caller may see an id of is (xds.consent.identity)."""
        roots = query.other_ids_scoping_organizations + [i.root for i in query.living_subject_ids]
        known = consent_identity.known_domains(session, access, roots, self.policy)
        details = list(query.problems)
        for index, root in enumerate(query.other_ids_scoping_organizations):
            if root not in known:
                details.append(unknown_key_identifier(f"no patient id of assigning authority {root} is known here",
                                                      hl7_pdq.other_ids_location(index)))
        for index, identifier in enumerate(query.living_subject_ids):
            if identifier.root not in known:
                details.append(unknown_key_identifier(
                    f"no patient id of assigning authority {identifier.root} is known here",
                    f"{hl7_pdq.PARAMETERS}/livingSubjectId/value[{index + 1}]"))
        return details

    def _pdq_refused(self, query: hl7_pdq.PdqQuery, details: list[AcknowledgementDetail]) -> Result:
        return _answer(hl7_pdq.pdq_query_response(query, details=details, sender=self._sender), "AE")

    def _pdq_answer(self, query: hl7_pdq.PdqQuery, page: pdq.PdqPage, request, message_id: str) -> Result:
        matches = [hl7_pdq.PdqMatch(dataclasses.replace(m.record, ids=[m.patient], other_ids=m.other_ids), m.score)
                   for m in page.matches]
        answer = hl7_pdq.pdq_query_response(query, matches, request=request, total=page.total,
                                            remaining=page.remaining, details=query.problems,
                                            sender=self._sender, message_id=message_id)
        return _answer(answer, "AA", patients=[m.patient.cx for m in page.matches])

    # --- common ------------------------------------------------------------------------------

    def _read(self, request: SoapRequest, roots: set[str]) -> Received:
        """The body as its reader reads it, with the schema's findings first when validating;
        NS200 when the body is not a message of the action that brought it."""
        message = read_message(request.body)
        name = etree.QName(request.body).localname if isinstance(request.body.tag, str) else ""
        if name == "QUQI_IN000003UV01" and request.action == INTERACTIONS["QUQI_IN000003UV01_Cancel"].action:
            name = "QUQI_IN000003UV01_Cancel"
        if name in INTERACTIONS and name not in roots:
            message.problems.insert(0, error(
                "NS200", f"the body is {name} but the action {request.action} asks for "
                         f"{' or '.join(sorted(roots))}", f"/{name}"))
        elif self.schemas is not None and name in INTERACTIONS:
            message.problems[:0] = self.schemas.validate(request.body)
        return message

    def _answering(self, request: SoapRequest, message: Received, answer: Callable[[], Result],
                   access: PatientAccess | None = None) -> Result:
        try:
            result = answer()
        except Exception:
            # The sender gets an HL7 answer it can act on; the traceback stays in our log.
            log.exception("%s failed (MessageID %s)", message.header.interaction or "an HL7v3 message",
                          request.message_id)
            detail = error("INTERR", f"unexpected failure, logged with MessageID {request.message_id}")
            result = _answer(ack.accept_acknowledgement(message.header, "AE", [detail], sender=self._sender), "AE")
        # What the audit record names: the message (its id, detail II) and the patient.
        identifier = message.header.message_id
        result.query = QueryNamed(query_id=_key(identifier) if identifier else "", patient_id=result.patient_id)
        result.consent = access
        return result

    @property
    def _sender(self) -> str | None:
        return self.device or None


def search_query(query: hl7_pdq.PdqQuery) -> pdq.PdqQuery:
    """The identity store's query from the message's parameters."""
    birth = query.living_subject_birth_time
    return pdq.PdqQuery(
        names=list(query.living_subject_names),
        birth_time=birth.value if birth else None,
        birth_time_low=birth.low if birth else None,
        birth_time_high=birth.high if birth else None,
        gender=query.living_subject_administrative_gender,
        addresses=list(query.patient_addresses),
        ids=list(query.living_subject_ids),
        mothers_maiden_name=query.mothers_maiden_name,
        telecoms=[t.value for t in query.patient_telecoms],
        scoping_organizations=list(query.other_ids_scoping_organizations),
    )


def _answer(content: etree._Element, acknowledgement: str, **values) -> Result:
    return Result(content=content, acknowledgement=acknowledgement, **values)


def _identity_detail(refused: IdentityError, message: Received) -> AcknowledgementDetail:
    code = _IDENTITY_CODES.get(refused.code, "SYN113")
    name = message.header.interaction or "message"
    where = f"/{name}/controlActProcess/subject/registrationEvent/subject1/patient/id"
    if refused.code == "unknown-subsumed":
        where = f"/{name}/controlActProcess/subject/registrationEvent/replacementOf/priorRegistration/subject1/" \
                "priorRegisteredRole/id"
    if code == "204":
        return unknown_key_identifier(refused.message, where)
    return error(code, refused.message, where)


def _key(identifier: Identifier) -> str:
    """An II as one string: root^extension (a query's key, a message's id in the audit)."""
    return f"{identifier.root}^{identifier.extension}" if identifier.extension else identifier.root


def _aware(moment: dt.datetime) -> dt.datetime:
    # SQLite gives back naive datetimes (stored in UTC).
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)
