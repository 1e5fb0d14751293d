"""ATNA audit messages: one per transaction and actor (ITI TF-2, each transaction's "Audit
Record Considerations"), written in the DICOM PS3.15 A.5 schema (``csd-code``,
``codeSystemName``, ``originalText``).

What belongs here: turning plain values about one finished transaction (a TransactionContext)
into an ``AuditMessage`` document: UTF-8 bytes with an XML declaration, ready for the syslog MSG.
What this module must not know: SOAP, databases, syslog or the Audit Record Repository; the
caller collects the values and sends the bytes.

Theory of operation. Every message has the same frame: EventIdentification, the active
participants of the exchange, AuditSourceIdentification and the participant objects. The frame
differs between transactions only in values, so those values live in one table, EVENTS, keyed by
(transaction, actor): the EventID, EventActionCode, EventTypeCode, the role (Source or
Destination) of the side that initiated the exchange and of the side that answered, which side
is the auditing actor itself (it carries the process id), and which participant objects the
transaction names. A key of that table is the one name of a transaction's record:
build(transaction, actor, ctx, source) writes it, and the audit trail keeps the key with the
values (xds.audit.trail). Functions are kept for the participant objects (patient, submission
set, documents, query), which carry data of their own.

Words used below: the *initiator* sent the SOAP request (its wsa:ReplyTo and its address are in
the context), the *responder* answered it at ``endpoint_url``. For ITI-41/42/18 the initiator is
the Source (110153) and the responder the Destination (110152); for ITI-43 data flows the other
way, so the responder (the repository) is the Source.

Writing. A message is written with string formatting, not built as an lxml tree: one is written
for every query the registry answers, and a tree and its serialization took about 0.04 ms, the
whole audit budget of a query (this takes about 0.007). The bytes are those lxml wrote for the
same message (checked byte for byte against the tree builder over randomized values when it was
replaced): attributes in the same order, no whitespace, ``<?xml version='1.0'
encoding='UTF-8'?>`` and a line break first. Every value that comes from outside (a certificate
subject, a wsa:ReplyTo, a patient id) goes through _attr() or _text(): markup characters are
escaped, tab, line feed and carriage return in attributes become character references (so
attribute-value normalization keeps them), and characters XML 1.0 does not allow (C0 controls,
lone surrogates, U+FFFE, U+FFFF) are replaced by U+FFFD, so the message is well-formed whatever
a client sent. Values written in base64 (ParticipantObjectQuery, ParticipantObjectDetail) are
kept as they were.
"""

from __future__ import annotations

import binascii
import datetime as _dt
import functools
import ipaddress
import operator
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from urllib.parse import urlsplit

from xds.hl7v3.ns import INTERACTIONS

__all__ = [
    "CONTEXT_FIELDS",
    "EVENTS",
    "AuditSource",
    "CodedValue",
    "DocumentRef",
    "EventOutcome",
    "EventSpec",
    "HumanRequestor",
    "TransactionContext",
    "application_start",
    "application_stop",
    "build",
    "context_from_request",
    "context_from_values",
    "context_values",
    "outcome_indicator",
    "security_alert",
    "user_authentication",
    "source_from_values",
    "source_values",
]

WSA_ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"


# --- writing ------------------------------------------------------------------------------

# Characters XML 1.0 does not allow (2.2 Char): C0 controls but tab, LF and CR; lone surrogates
# (a str can hold them); U+FFFE and U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _attr(value: str) -> str:
    """`value` for an attribute between double quotes (as libxml2 escapes it)."""
    if value.isascii() and value.isprintable():  # the usual value: only markup to look for
        if "&" in value or "<" in value or ">" in value or '"' in value:
            return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                    .replace('"', "&quot;"))
        return value
    return (_NOT_XML.sub("\ufffd", value).replace("&", "&amp;").replace("<", "&lt;")
            .replace(">", "&gt;").replace('"', "&quot;").replace("\t", "&#9;")
            .replace("\n", "&#10;").replace("\r", "&#13;"))


def _text(value: str) -> str:
    """`value` as character data (as libxml2 escapes it: CR too, which parsing would drop)."""
    return (_NOT_XML.sub("\ufffd", value).replace("&", "&amp;").replace("<", "&lt;")
            .replace(">", "&gt;").replace("\r", "&#13;"))


def _b64(value: str | bytes) -> str:
    if isinstance(value, str):
        try:
            value = value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, which UTF-8 cannot hold
            value = _SURROGATE.sub("\ufffd", value).encode("utf-8")
    return binascii.b2a_base64(value, newline=False).decode("ascii")


_DECLARATION = "<?xml version='1.0' encoding='UTF-8'?>\n<AuditMessage>"
_END = "</AuditMessage>"


# --- coded values -------------------------------------------------------------------------

@dataclass(frozen=True)
class CodedValue:
    """A coded value (DICOM PS3.15 A.5 CodedValueType)."""

    code: str
    system: str
    text: str
    _attributes: str = field(init=False, repr=False, compare=False)  # written once

    def __post_init__(self):
        object.__setattr__(self, "_attributes", f'csd-code="{_attr(self.code)}" codeSystemName='
                                                f'"{_attr(self.system)}" originalText="{_attr(self.text)}"')

    def xml(self, tag: str) -> str:
        """The value as an empty element named `tag`."""
        return f"<{tag} {self._attributes}/>"


def _dcm(code: str, text: str) -> CodedValue:
    return CodedValue(code, "DCM", text)


def _iti(code: str, text: str) -> CodedValue:
    return CodedValue(code, "IHE Transactions", text)


# EventID (DICOM CID 400)
APPLICATION_ACTIVITY = _dcm("110100", "Application Activity")
EXPORT = _dcm("110106", "Export")
IMPORT = _dcm("110107", "Import")
QUERY = _dcm("110112", "Query")
SECURITY_ALERT = _dcm("110113", "Security Alert")
USER_AUTHENTICATION = _dcm("110114", "User Authentication")

# EventTypeCode
APPLICATION_START = _dcm("110120", "Application Start")
APPLICATION_STOP = _dcm("110121", "Application Stop")
LOGIN = _dcm("110122", "Login")
NODE_AUTHENTICATION = _dcm("110126", "Node Authentication")
SOFTWARE_CONFIGURATION = _dcm("110131", "Software Configuration")
USE_OF_RESTRICTED_FUNCTION = _dcm("110132", "Use of Restricted Function")
AUDIT_RECORDING_STOPPED = _dcm("110133", "Audit Recording Stopped")
ITI_18 = _iti("ITI-18", "Registry Stored Query")
ITI_41 = _iti("ITI-41", "Provide and Register Document Set-b")
ITI_42 = _iti("ITI-42", "Register Document Set-b")
ITI_43 = _iti("ITI-43", "Retrieve Document Set")
ITI_44 = _iti("ITI-44", "Patient Identity Feed")
ITI_45 = _iti("ITI-45", "PIX Query")
ITI_47 = _iti("ITI-47", "Patient Demographics Query")
PATIENT_RECORD = _dcm("110110", "Patient Record")
ITI_62 = _iti("ITI-62", "Delete Document Set")
ITI_86 = _iti("ITI-86", "Remove Documents")
ITI_51 = _iti("ITI-51", "Multi-Patient Query")

# RoleIDCode (DICOM CID 402)
APPLICATION = _dcm("110150", "Application")
APPLICATION_LAUNCHER = _dcm("110151", "Application Launcher")
DESTINATION = _dcm("110152", "Destination Role ID")
SOURCE = _dcm("110153", "Source Role ID")

# ParticipantObjectIDTypeCode
PATIENT_NUMBER = CodedValue("2", "RFC-3881", "Patient Number")
REPORT_NUMBER = CodedValue("9", "RFC-3881", "Report Number")
URI = CodedValue("12", "RFC-3881", "URI")
REGISTRY_OBJECT = CodedValue("urn:ihe:iti:2017:ObjectRef", "IHE XDS Metadata", "registry object reference")
SUBMISSION_SET = CodedValue("urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd", "IHE XDS Metadata",
                            "submission set classificationNode")

# ParticipantObjectDataLifeCycle 14: logical deletion (the object is kept, marked deleted)
LOGICAL_DELETION = "14"

# AuditSourceTypeCode 4: application server process tier in a multi-tier system
APPLICATION_SERVER = _dcm("4", "Application Server Process Tier in Multi-tier System")


class EventOutcome(IntEnum):
    """EventOutcomeIndicator (DICOM PS3.15 A.5.1)."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


_OUTCOME_BY_STATUS = {
    "Success": EventOutcome.SUCCESS,
    "PartialSuccess": EventOutcome.MINOR_FAILURE,
    "Failure": EventOutcome.SERIOUS_FAILURE,
}


def outcome_indicator(outcome: str | int) -> EventOutcome:
    """The EventOutcomeIndicator for a transaction outcome: a RegistryResponse status (short
    name or full URN: Success 0, PartialSuccess 4, Failure 8) or a number 0/4/8/12."""
    if isinstance(outcome, int):
        return EventOutcome(outcome)
    name = outcome.rsplit(":", 1)[-1]
    try:
        return _OUTCOME_BY_STATUS[name]
    except KeyError:
        raise ValueError(f"unknown transaction outcome {outcome!r}") from None


# --- inputs -------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuditSource:
    """AuditSourceIdentification: which node wrote the record (configurable)."""

    audit_source_id: str
    enterprise_site_id: str = ""
    type_code: CodedValue = APPLICATION_SERVER


@dataclass(frozen=True)
class DocumentRef:
    unique_id: str
    repository_unique_id: str = ""
    home_community_id: str = ""


@dataclass(frozen=True)
class HumanRequestor:
    """The person behind a request when known: the user of a verified XUA assertion, whose
    record ITI TF-2 3.40.4.2 gives (UserName alias<user@issuer>, the roles as RoleIDCode, the
    purposes of use as the event's PurposeOfUse)."""

    user_id: str
    user_name: str = ""
    roles: tuple[CodedValue, ...] = ()
    purposes_of_use: tuple[CodedValue, ...] = ()


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


@dataclass
class TransactionContext:
    """Plain values about one transaction, as the actor saw it."""

    action: str = ""                         # wsa:Action of the request
    message_id: str | None = None            # wsa:MessageID of the request
    reply_to: str | None = None              # wsa:ReplyTo of the request (None: anonymous)
    client_address: str = ""                 # the initiator's IP address or host name
    endpoint_url: str = ""                   # the responder's SOAP endpoint URL
    server_address: str = ""                 # the responder's address; default: endpoint_url's host
    outcome: str | int = "Success"           # RegistryResponse status, or 0/4/8/12
    outcome_description: str = ""            # EventOutcomeDescription (free text), optional
    patient_id: str = ""                     # HL7 CX, e.g. "123^^^&1.2.3&ISO"
    submission_set_unique_id: str = ""
    documents: Sequence[DocumentRef] = ()
    query_id: str = ""                       # stored query id (urn:uuid:...)
    query_request: bytes = b""               # the AdhocQueryRequest as received
    query_encoding: str = "UTF-8"
    home_community_id: str = ""              # of the query, when it had one
    client_certificate: str = ""             # the initiator's TLS certificate subject, if any
    human_requestor: HumanRequestor | None = None
    process_id: str = field(default_factory=lambda: str(os.getpid()))  # the auditing actor's
    time: _dt.datetime = field(default_factory=_now)


# A transaction's values as plain data, for the audit spool: a transaction keeps its values and
# the sender writes the message later (xds.audit.trail keeps them as JSON). A list rather than a
# dict: the field names would add a fifth to an ITI-18 record's bytes and half again to the time
# of encoding it (4.9 against 7.2 us, measured when JSON replaced marshal). The order is
# CONTEXT_FIELDS: the plain values first (strings, None, the outcome), then those written as
# lists (documents, the person with their roles and purposes of use, the time as microseconds
# since the epoch and its UTC offset in microseconds, so the message writes the same
# EventDateTime) and the query request in base64 (JSON has no bytes). Another order or another
# field is another layout of the spool (xds.audit.trail._LAYOUT), and the trail must keep reading
# the old one. (The purposes of use were appended to the person's list, which entries written
# before them lack and are still read without: the layout's number stayed.)
CONTEXT_FIELDS = (
    "action", "message_id", "reply_to", "client_address", "endpoint_url", "server_address", "outcome",
    "outcome_description", "patient_id", "submission_set_unique_id", "query_id", "query_encoding",
    "home_community_id", "client_certificate", "process_id",
    "documents", "human_requestor", "time", "query_request")
_PLAIN_FIELDS = CONTEXT_FIELDS[:-4]
_plain_values = operator.attrgetter(*_PLAIN_FIELDS)
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_MICROSECOND = _dt.timedelta(microseconds=1)


def context_values(ctx: TransactionContext) -> list:
    """`ctx` as a list of strings, numbers, None and lists, in CONTEXT_FIELDS order."""
    person = ctx.human_requestor
    time = ctx.time if ctx.time.tzinfo else ctx.time.replace(tzinfo=_dt.UTC)
    return [
        *_plain_values(ctx),
        [(d.unique_id, d.repository_unique_id, d.home_community_id) for d in ctx.documents],
        None if person is None else (person.user_id, person.user_name, [_coded_values(r) for r in person.roles],
                                     [_coded_values(p) for p in person.purposes_of_use]),
        ((time - _EPOCH) // _MICROSECOND, time.utcoffset() // _MICROSECOND),
        # _b64 as the message writes it: a str query (not bytes) comes back as the bytes whose
        # base64 the message would have held
        _b64(ctx.query_request),
    ]


def context_from_values(values: list) -> TransactionContext:
    """The TransactionContext context_values() was given."""
    *plain, documents, person, (instant, offset), query_request = values
    if person is not None:
        # [id, name, roles], and since XUA [id, name, roles, purposes of use]: both are read
        user_id, user_name, roles, *purposes = person
        person = HumanRequestor(user_id, user_name, tuple(CodedValue(*role) for role in roles),
                                tuple(CodedValue(*purpose) for purpose in (purposes[0] if purposes else ())))
    return TransactionContext(
        **dict(zip(_PLAIN_FIELDS, plain, strict=True)),
        documents=tuple(DocumentRef(*document) for document in documents),
        human_requestor=person,
        time=(_EPOCH + instant * _MICROSECOND).astimezone(_dt.timezone(offset * _MICROSECOND)),
        query_request=binascii.a2b_base64(query_request))


def source_values(source: AuditSource) -> tuple:
    return source.audit_source_id, source.enterprise_site_id, _coded_values(source.type_code)


def source_from_values(values: Sequence) -> AuditSource:
    audit_source_id, enterprise_site_id, type_code = values
    return AuditSource(audit_source_id, enterprise_site_id, CodedValue(*type_code))


def _coded_values(code: CodedValue) -> tuple:
    return code.code, code.system, code.text


def context_from_request(request, *, endpoint_url: str, **values) -> TransactionContext:
    """A TransactionContext from a received xds.soap SoapRequest (action, message_id,
    reply_to, environ's REMOTE_ADDR and SERVER_NAME); ``values`` fill the other fields."""
    environ = getattr(request, "environ", None) or {}
    return TransactionContext(
        action=getattr(request, "action", "") or "",
        message_id=getattr(request, "message_id", None),
        reply_to=getattr(request, "reply_to", None),
        client_address=environ.get("REMOTE_ADDR", ""),
        endpoint_url=endpoint_url,
        **values,
    )


# --- the table ----------------------------------------------------------------------------

@dataclass(frozen=True)
class EventSpec:
    event_id: CodedValue
    action: str                       # EventActionCode
    type_code: CodedValue
    initiator_role: CodedValue        # RoleIDCode of the side that sent the request
    responder_role: CodedValue        # RoleIDCode of the side that answered
    auditor: str                      # "initiator" or "responder": the actor writing the record
    objects: tuple[str, ...]          # participant objects, in order; see _OBJECTS
    reference: str                    # where ITI TF-2 specifies it
    #: EventActionCode by request action, where one transaction has several (wsa:Action: code)
    actions: Mapping[str, str] = field(default_factory=dict)


#: EventActionCode by request, where one transaction has several (ITI-44: an add creates, a
#: revise or a merge updates).
EVENT_ACTIONS = {INTERACTIONS["PRPA_IN201302UV02"].action: "U", INTERACTIONS["PRPA_IN201304UV02"].action: "U"}
#: The record of an id a feed retired (the key's actor says which record of the PIX Manager's).
ITI_44_DELETE = ("ITI-44", "PatientIdentifierCrossReferenceManager/delete")
#: The record each of `Result.patients` gets, by the record of the transaction, where they get
#: one: the ids a merge retired (xds.audit.actors).
RETIRED_RECORDS = {("ITI-44", "PatientIdentifierCrossReferenceManager"): ITI_44_DELETE}

# The records this node writes for the transactions it takes part in, by (transaction, actor):
# the one name of each, in the code and in the audit spool (changing a key loses the records of
# that key an older release left in a spool).
EVENTS: dict[tuple[str, str], EventSpec] = {
    # Register Document Set-b, at the Document Registry: Import.
    ("ITI-42", "DocumentRegistry"): EventSpec(
        IMPORT, "C", ITI_42, SOURCE, DESTINATION, "responder",
        ("patient", "submission_set"), "ITI TF-2b 3.42.7.1.2"),
    # Registry Stored Query, at the Document Registry: Query.
    ("ITI-18", "DocumentRegistry"): EventSpec(
        QUERY, "E", ITI_18, SOURCE, DESTINATION, "responder",
        ("patient?", "query"), "ITI TF-2a 3.18.5.1.2"),
    # Provide and Register Document Set-b, at the Document Repository: Import.
    ("ITI-41", "DocumentRepository"): EventSpec(
        IMPORT, "C", ITI_41, SOURCE, DESTINATION, "responder",
        ("patient", "submission_set"), "ITI TF-2b 3.41.7.1.2"),
    # Register Document Set-b sent by the Document Repository (as Document Source): Export. The
    # repository initiates: ``client_address`` is its own address, ``endpoint_url`` the registry's.
    ("ITI-42", "DocumentRepository"): EventSpec(
        EXPORT, "R", ITI_42, SOURCE, DESTINATION, "initiator",
        ("patient", "submission_set"), "ITI TF-2b 3.42.7.1.1"),
    # Retrieve Document Set, at the Document Repository: Export.
    ("ITI-43", "DocumentRepository"): EventSpec(
        EXPORT, "R", ITI_43, DESTINATION, SOURCE, "responder",
        ("patient?", "documents"), "ITI TF-2b 3.43.6.1.2"),
    # Patient Identity Feed HL7 V3, at the PIX Manager: Patient Record, C for an add, U for a
    # revise and for the survivor of a merge (EVENT_ACTIONS).
    ("ITI-44", "PatientIdentifierCrossReferenceManager"): EventSpec(
        PATIENT_RECORD, "C", ITI_44, SOURCE, DESTINATION, "responder",
        ("patient", "hl7_message"), "ITI TF-2b 3.44.5.1.2", EVENT_ACTIONS),
    # The same feed's record of an id it retired: a merge is recorded as an update of the
    # survivor (above) and a delete of each subsumed id, one patient a record (ITI TF-2a 3.8.5.2,
    # whose Connectathon rules want D or U and one patient; ITI-44 records a merge as ITI-8
    # does). Also an id the registry no longer accepts (`xds patients remove`). The patient is
    # logically deleted (ParticipantObjectDataLifeCycle 14): its history stays.
    ITI_44_DELETE: EventSpec(
        PATIENT_RECORD, "D", ITI_44, SOURCE, DESTINATION, "responder",
        ("deleted_patient", "hl7_message"), "ITI TF-2b 3.44.5.1.2"),
    # PIXV3 Query, at the PIX Manager: Query, the id asked about and the query parameters.
    ("ITI-45", "PatientIdentifierCrossReferenceManager"): EventSpec(
        QUERY, "E", ITI_45, SOURCE, DESTINATION, "responder",
        ("patient?", "pix_query"), "ITI TF-2b 3.45.5.1.2"),
    # Patient Demographics Query HL7 V3, at the PDQ Supplier: Query and its parameters; a
    # patient (0..n) in the records access control adds for a match left out (xds.consent).
    ("ITI-47", "PatientDemographicsSupplier"): EventSpec(
        QUERY, "E", ITI_47, SOURCE, DESTINATION, "responder",
        ("patient?", "pdq_query"), "ITI TF-2b 3.47.5.1.2"),
    # Delete Document Set, at the Document Registry: Patient Record, Delete; one participant
    # object per registry object removed, by entryUUID (ITI TF-2b 3.62.5.1.2, RMD supplement).
    ("ITI-62", "DocumentRegistry"): EventSpec(
        PATIENT_RECORD, "D", ITI_62, SOURCE, DESTINATION, "responder",
        ("patient?", "registry_objects"), "ITI TF-2b 3.62.5.1.2"),
    # Remove Documents, at the Document Repository: Patient Record, Delete; the documents
    # removed, by uniqueId with their repositoryUniqueId (RMD supplement 3.86.5.1.2).
    ("ITI-86", "DocumentRepository"): EventSpec(
        PATIENT_RECORD, "D", ITI_86, SOURCE, DESTINATION, "responder",
        ("patient?", "documents"), "ITI TF-2b 3.86.5.1.2"),
    # Multi-Patient Stored Query, at the Document Registry: Query, as ITI-18's; one record per
    # patient (xds.audit.actors), its query narrowed to that patient (ITI TF-2b 3.51.5.1).
    ("ITI-51", "DocumentRegistry"): EventSpec(
        QUERY, "E", ITI_51, SOURCE, DESTINATION, "responder",
        ("patient?", "multi_patient_query"), "ITI TF-2b 3.51.5.1"),
    # PIXV3 Update Notification sent by the PIX Manager (xds.identity.notify): Patient Record,
    # Update; the PIX Manager initiates (``client_address`` is its own, ``endpoint_url`` the
    # consumer's); the patient and the HL7 message id (query_id) as for ITI-44.
    ("ITI-46", "PatientIdentifierCrossReferenceManager"): EventSpec(
        PATIENT_RECORD, "U", _iti("ITI-46", "PIX Update Notification"), SOURCE, DESTINATION, "initiator",
        ("patient", "hl7_message"), "ITI TF-2b 3.46.5.1.1"),
    # Update Document Set, at the Document Registry: Import, Update; the patient and the
    # SubmissionSet that brought the update, as ITI-42 names them (ITI TF-2b 3.57.6.1.2).
    ("ITI-57", "DocumentRegistry"): EventSpec(
        IMPORT, "U", _iti("ITI-57", "Update Document Set"), SOURCE, DESTINATION, "responder",
        ("patient", "submission_set"), "ITI TF-2b 3.57.6.1.2"),
}




# --- participant objects -----------------------------------------------------------------

def _object(out: list[str], object_id: str, type_code: str, role: str, id_type: CodedValue,
            *children: str, life_cycle: str = "") -> None:
    """A ParticipantObjectIdentification (`type_code`, `role` and `life_cycle` are this
    module's digits)."""
    cycle = f' ParticipantObjectDataLifeCycle="{life_cycle}"' if life_cycle else ""
    out.append(f'<ParticipantObjectIdentification ParticipantObjectID="{_attr(object_id)}" '
               f'ParticipantObjectTypeCode="{type_code}" ParticipantObjectTypeCodeRole="{role}"{cycle}>'
               f'{id_type.xml("ParticipantObjectIDTypeCode")}')
    out.extend(children)
    out.append("</ParticipantObjectIdentification>")


@functools.lru_cache(maxsize=1024)  # the query encoding, a node's repositories and communities
def _detail(kind: str, value: str | bytes) -> str:
    return f'<ParticipantObjectDetail type="{_attr(kind)}" value="{_b64(value)}"/>'


def _patient(out: list[str], ctx: TransactionContext, required: bool) -> None:
    if not ctx.patient_id:
        if required:
            raise ValueError("this audit event needs the patient id")
        return
    _object(out, ctx.patient_id, "1", "1", PATIENT_NUMBER)


def _deleted_patient(out: list[str], ctx: TransactionContext, required: bool) -> None:
    """The patient of a record of its deletion: logically deleted (DICOM ParticipantObject
    DataLifeCycle 14), since its record and history are kept."""
    if not ctx.patient_id:
        if required:
            raise ValueError("this audit event needs the patient id")
        return
    _object(out, ctx.patient_id, "1", "1", PATIENT_NUMBER, life_cycle=LOGICAL_DELETION)


def _submission_set(out: list[str], ctx: TransactionContext, required: bool) -> None:
    if not ctx.submission_set_unique_id:
        if required:
            raise ValueError("this audit event needs the submission set uniqueId")
        return
    _object(out, ctx.submission_set_unique_id, "2", "20", SUBMISSION_SET)


def _query(out: list[str], ctx: TransactionContext, required: bool, *, type_code: CodedValue = ITI_18) -> None:
    if not ctx.query_id:
        if required:
            raise ValueError("this audit event needs the stored query id")
        return
    children = [f"<ParticipantObjectQuery>{_b64(ctx.query_request)}</ParticipantObjectQuery>",
                _detail("QueryEncoding", ctx.query_encoding)]
    if ctx.home_community_id:
        children.append(_detail("urn:ihe:iti:xca:2010:homeCommunityId", ctx.home_community_id))
    _object(out, ctx.query_id, "2", "24", type_code, *children)


def _documents(out: list[str], ctx: TransactionContext, required: bool) -> None:
    if required and not ctx.documents:
        raise ValueError("this audit event needs at least one document")
    for document in ctx.documents:
        children = []
        if document.repository_unique_id:
            children.append(_detail("Repository Unique Id", document.repository_unique_id))
        if document.home_community_id:
            children.append(_detail("ihe:homeCommunityID", document.home_community_id))
        _object(out, document.unique_id, "2", "3", REPORT_NUMBER, *children)


def _hl7_message(out: list[str], ctx: TransactionContext, required: bool) -> None:
    """The HL7v3 message id (a detail of type II, where HL7 v2 records have MSH-10) in the
    patient object just written: PIX and PDQ records name the message they audit."""
    if ctx.query_id and out and out[-1] == "</ParticipantObjectIdentification>":
        out.insert(len(out) - 1, _detail("II", ctx.query_id))


def _hl7_query(out: list[str], ctx: TransactionContext, required: bool, *, type_code: CodedValue) -> None:
    """ITI-45 / ITI-47 Query Parameters: the queryByParameter as received, and the message id
    (type II)."""
    children = [f"<ParticipantObjectQuery>{_b64(ctx.query_request)}</ParticipantObjectQuery>"]
    if ctx.query_id:
        children.append(_detail("II", ctx.query_id))
    _object(out, "", "2", "24", type_code, *children)


def _registry_objects(out: list[str], ctx: TransactionContext, required: bool) -> None:
    """ITI-62: each registry object (DocumentEntry, SubmissionSet, Folder, Association) by its
    entryUUID; the transaction's ``documents`` carry them (their unique_id is the entryUUID)."""
    if required and not ctx.documents:
        raise ValueError("this audit event needs at least one registry object")
    for registry_object in ctx.documents:
        _object(out, registry_object.unique_id, "2", "3", REGISTRY_OBJECT)


_OBJECTS = {
    "patient": _patient,
    "deleted_patient": _deleted_patient,
    "submission_set": _submission_set,
    "query": _query,
    "documents": _documents,
    "hl7_message": _hl7_message,
    "pix_query": functools.partial(_hl7_query, type_code=ITI_45),
    "pdq_query": functools.partial(_hl7_query, type_code=ITI_47),
    "registry_objects": _registry_objects,
    "multi_patient_query": functools.partial(_query, type_code=ITI_51),
}


# --- the frame ----------------------------------------------------------------------------

def _datetime(value: _dt.datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    return value.isoformat(timespec="milliseconds")


@functools.lru_cache(maxsize=1024)  # a node's peers are few; parsing is a tenth of a message
def _access_point_type(address: str) -> str:
    """NetworkAccessPointTypeCode: 2 for an IP address, 1 for a machine name."""
    try:
        ipaddress.ip_address(address.strip("[]"))
        return "2"
    except ValueError:
        return "1"


def _event(out: list[str], event_id: CodedValue, action: str, type_codes: Sequence[CodedValue],
           outcome: EventOutcome, time: _dt.datetime, description: str = "",
           purposes_of_use: Sequence[CodedValue] = ()) -> None:
    out.append(f'<EventIdentification EventActionCode="{action}" EventDateTime="{_datetime(time)}" '
               f'EventOutcomeIndicator="{int(outcome)}">{event_id.xml("EventID")}')
    for type_code in type_codes:
        out.append(type_code.xml("EventTypeCode"))
    if description:
        out.append(f"<EventOutcomeDescription>{_text(description)}</EventOutcomeDescription>")
    # The XUA user's purposes of use (ITI TF-2 3.40.4.2; DICOM PS3.15 A.5's PurposeOfUse)
    for purpose in purposes_of_use:
        out.append(purpose.xml("PurposeOfUse"))
    out.append("</EventIdentification>")


@functools.lru_cache(maxsize=1024)  # a node's peers and endpoints are few: most are written once
def _participant(user_id: str, requestor: bool, roles: tuple[CodedValue, ...] = (), *,
                 alternative: str = "", name: str = "", address: str = "") -> str:
    element = f'<ActiveParticipant UserID="{_attr(user_id)}"'
    if alternative:
        element += f' AlternativeUserID="{_attr(alternative)}"'
    if name:
        element += f' UserName="{_attr(name)}"'
    element += ' UserIsRequestor="true"' if requestor else ' UserIsRequestor="false"'
    if address:
        element += (f' NetworkAccessPointID="{_attr(address)}"'
                    f' NetworkAccessPointTypeCode="{_access_point_type(address)}"')
    if not roles:
        return element + "/>"
    return element + ">" + "".join(role.xml("RoleIDCode") for role in roles) + "</ActiveParticipant>"


@functools.lru_cache(maxsize=64)  # one source per node
def _audit_source(source: AuditSource) -> str:
    site = (f' AuditEnterpriseSiteID="{_attr(source.enterprise_site_id)}"'
            if source.enterprise_site_id else "")
    return (f'<AuditSourceIdentification{site} AuditSourceID="{_attr(source.audit_source_id)}">'
            f'{source.type_code.xml("AuditSourceTypeCode")}</AuditSourceIdentification>')


def _server_address(ctx: TransactionContext) -> str:
    return ctx.server_address or _hostname(ctx.endpoint_url)


@functools.lru_cache(maxsize=64)  # a node's own endpoints
def _hostname(url: str) -> str:
    return urlsplit(url).hostname or ""


def build(transaction: str, actor: str, ctx: TransactionContext, source: AuditSource) -> bytes:
    """The AuditMessage that ``actor`` writes for ``transaction`` (a key of EVENTS), as UTF-8
    bytes with an XML declaration."""
    spec = EVENTS[(transaction, actor)]
    outcome = outcome_indicator(ctx.outcome)
    out = [_DECLARATION]
    _event(out, spec.event_id, spec.actions.get(ctx.action, spec.action), (spec.type_code,), outcome, ctx.time,
           ctx.outcome_description, ctx.human_requestor.purposes_of_use if ctx.human_requestor else ())
    local_initiator = spec.auditor == "initiator"
    out.append(_participant(ctx.reply_to or WSA_ANONYMOUS, True, (spec.initiator_role,),
                                alternative=ctx.process_id if local_initiator else "",
                                name=ctx.client_certificate, address=ctx.client_address))
    out.append(_participant(ctx.endpoint_url, False, (spec.responder_role,),
                                alternative="" if local_initiator else ctx.process_id,
                                address=_server_address(ctx)))
    if ctx.human_requestor is not None:
        person = ctx.human_requestor
        out.append(_participant(person.user_id, True, tuple(person.roles), name=person.user_name))
    out.append(_audit_source(source))
    # A request refused for its content may lack what a success must name (no patient id, no
    # submission set): the refusal is recorded all the same, with what it had.
    succeeded = outcome == EventOutcome.SUCCESS
    for name in spec.objects:
        _OBJECTS[name.rstrip("?")](out, ctx, required=succeeded and not name.endswith("?"))
    out.append(_END)
    return "".join(out).encode("utf-8")


# --- node events (no transaction) ---------------------------------------------------------

def _application_activity(type_code: CodedValue, application: str, source: AuditSource, *,
                           process_id: str, launcher: str, outcome: int | str,
                           time: _dt.datetime | None, address: str) -> bytes:
    out = [_DECLARATION]
    _event(out, APPLICATION_ACTIVITY, "E", (type_code,), outcome_indicator(outcome), time or _now())
    out.append(_participant(application, False, (APPLICATION,), alternative=process_id, address=address))
    if launcher:
        out.append(_participant(launcher, True, (APPLICATION_LAUNCHER,)))
    out.append(_audit_source(source))
    out.append(_END)
    return "".join(out).encode("utf-8")


def application_start(application: str, source: AuditSource, *, process_id: str = "",
                      launcher: str = "", outcome: int | str = 0,
                      time: _dt.datetime | None = None, address: str = "") -> bytes:
    """Application Activity (110100) / Application Start (110120), DICOM PS3.15 A.5.3.1."""
    return _application_activity(APPLICATION_START, application, source,
                                 process_id=process_id or str(os.getpid()), launcher=launcher,
                                 outcome=outcome, time=time, address=address)


def application_stop(application: str, source: AuditSource, *, process_id: str = "",
                     launcher: str = "", outcome: int | str = 0,
                     time: _dt.datetime | None = None, address: str = "") -> bytes:
    """Application Activity (110100) / Application Stop (110121), DICOM PS3.15 A.5.3.1."""
    return _application_activity(APPLICATION_STOP, application, source,
                                 process_id=process_id or str(os.getpid()), launcher=launcher,
                                 outcome=outcome, time=time, address=address)


def security_alert(ctx: TransactionContext, source: AuditSource, *, reason: str,
                   type_code: CodedValue = NODE_AUTHENTICATION) -> bytes:
    """Security Alert (110113), DICOM PS3.15 A.5.3.11, for a rejected authentication: the
    peer that failed (as requestor, at ``client_address``), this node (at ``endpoint_url``) and
    the endpoint as the security resource, with ``reason`` as its Alert Description.
    ``ctx.outcome`` says how bad it was; pass 4, 8 or 12 (a rejection is not a success)."""
    out = [_DECLARATION]
    _event(out, SECURITY_ALERT, "E", (type_code,), outcome_indicator(ctx.outcome), ctx.time,
           ctx.outcome_description)
    peer = ctx.human_requestor.user_id if ctx.human_requestor else (ctx.client_address or "unknown")
    out.append(_participant(peer, True, address=ctx.client_address))
    out.append(_participant(ctx.endpoint_url, False, alternative=ctx.process_id,
                            address=_server_address(ctx)))
    out.append(_audit_source(source))
    _object(out, ctx.endpoint_url, "2", "13", URI, _detail("Alert Description", reason))
    out.append(_END)
    return "".join(out).encode("utf-8")


def user_authentication(ctx: TransactionContext, source: AuditSource) -> bytes:
    """User Authentication (110114) / Login (110122), DICOM PS3.15 A.5.3.12: a user's attempt
    to authenticate, here by presenting an X-User Assertion (ITI TF-2 3.40.4.1.3). The person
    authenticated or claimed is ``ctx.human_requestor`` (requestor, at ``client_address``;
    "unknown" when nobody is named), the node that authenticated is this endpoint (at
    ``endpoint_url``); ``ctx.outcome`` 0 for a user authenticated, 4, 8 or 12 for a refusal,
    whose reason is ``ctx.outcome_description``. No participant object (A.5.3.12)."""
    out = [_DECLARATION]
    _event(out, USER_AUTHENTICATION, "E", (LOGIN,), outcome_indicator(ctx.outcome), ctx.time,
           ctx.outcome_description)
    person = ctx.human_requestor or HumanRequestor("unknown")
    out.append(_participant(person.user_id, True, tuple(person.roles), name=person.user_name,
                            address=ctx.client_address))
    out.append(_participant(ctx.endpoint_url, False, alternative=ctx.process_id,
                            address=_server_address(ctx)))
    out.append(_audit_source(source))
    out.append(_END)
    return "".join(out).encode("utf-8")
