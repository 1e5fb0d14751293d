"""The checks of a NIST test step: what the plan expects against what the system answered.

Every check is a pure function that returns the list of its failures, each a sentence a person
can act on ("expected status Success, got Failure: XDSRegistryMetadataError ..."). An empty
list is a pass. Nothing here sends, reads files or knows the run: the runner hands in the
parsed response, the log document and the values of the plan's variables.

The checks, and where the plans use them:
- status (<ExpectedStatus> Success / Failure / PartialSuccess / Fault): every sending step;
  the full ebRS / IHE status URN is required, not just its last word;
- error codes (<ExpectedErrorCode>, <ExpectedErrorMessage>): 11996, 12004, 11981, 11983,
  12368, 12379;
- <ExpectedContents>: the object counts (ObjectRefs, Documents, SubmissionSets, Folders,
  Associations) and the named patterns SSwithOneDoc, SSwithOneDocOneFol, SSwithTwoDocOneFol,
  SSwithOneFol, SSApproved, DocApp, DocDep, None, and DocumentEntries/MustOnlyInclude
  (12000.1a). A kind not in this list never reaches here: the plan reader marks the step
  unsupported;
- <Assertions>: XPath 1.0 over the toolkit-shaped log of the section (11990, 12323, 12379);
- retrieved documents: against <ReferenceDocument>, against the documents this run submitted,
  and against the DocumentEntry of <ReferenceMetadata> (mimeType, hash, size).

The named patterns are not spelled out by the testkit beyond their names; the meanings used
here are written next to each in PATTERNS.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lxml import etree

from xds.conformance.plan import Assertion, ContentCheck
from xds.ebrim import ns
from xds.errors import ERROR
from xds.soap.ns import FAULT, SOAP12

HL7V3 = "urn:hl7-org:v3"

# ExpectedStatus -> the status values that say it (ebRS 3.0 ResponseStatusType; ITI TF-3
# 4.2.4.2 adds IHE's PartialSuccess).
STATUS_URNS = {
    "Success": ns.SUCCESS,
    "Failure": ns.FAILURE,
    "PartialSuccess": ns.PARTIAL_SUCCESS,
}
# HL7v3 acknowledgement type codes (MCCI_IN000002UV01), accept and application level.
ACK_SUCCESS = frozenset({"AA", "CA"})
ACK_FAILURE = frozenset({"AE", "AR", "CE", "CR"})

HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"

_RIM = f"{{{ns.RIM}}}"
_RS = f"{{{ns.RS}}}"


# --- what a response said --------------------------------------------------------------------

@dataclass(frozen=True)
class RegistryError:
    code: str
    context: str
    severity: str
    location: str = ""

    def __str__(self) -> str:
        severity = self.severity.rsplit(":", 1)[-1]
        return f"{self.code} ({severity}): {self.context}" if self.context else f"{self.code} ({severity})"


@dataclass
class Outcome:
    """The parts of a response the checks read."""

    kind: str                       # local name of the body element ("Fault" for a SOAP fault)
    status: str | None              # status URN, or an HL7v3 acknowledgement type code
    errors: tuple[RegistryError, ...] = ()
    fault: str | None = None        # "Code: reason" of a SOAP fault
    body: etree._Element | None = None


def read_outcome(body: etree._Element) -> Outcome:
    """The status and errors of any response body: rs:RegistryResponse (ITI-41/42),
    query:AdhocQueryResponse (ITI-18), xdsb:RetrieveDocumentSetResponse (ITI-43), an HL7v3
    acknowledgement (ITI-44), or a SOAP 1.2 env:Fault."""
    qname = etree.QName(body)
    if body.tag == FAULT:
        code = body.findtext(f"{{{SOAP12}}}Code/{{{SOAP12}}}Value") or "?"
        subcode = body.findtext(f"{{{SOAP12}}}Code/{{{SOAP12}}}Subcode/{{{SOAP12}}}Value")
        reason = " ".join((body.findtext(f"{{{SOAP12}}}Reason/{{{SOAP12}}}Text") or "no reason given").split())
        code = f"{code} / {subcode}" if subcode else code
        return Outcome("Fault", None, fault=f"{code}: {reason}", body=body)
    if qname.namespace == HL7V3:
        code = body.find(f"{{{HL7V3}}}acknowledgement/{{{HL7V3}}}typeCode")
        details = tuple(
            RegistryError(d.get("typeCode", ""), " ".join("".join(d.itertext()).split()), "")
            for d in body.iter(f"{{{HL7V3}}}acknowledgementDetail")
        )
        return Outcome(qname.localname, code.get("code") if code is not None else None, details, body=body)
    response = body if body.tag == f"{_RS}RegistryResponse" else body.find(f"{_RS}RegistryResponse")
    status_holder = body if qname.localname in ("RegistryResponse", "AdhocQueryResponse") else response
    status = status_holder.get("status") if status_holder is not None else None
    errors = tuple(
        RegistryError(e.get("errorCode", ""), " ".join((e.get("codeContext") or "").split()),
                      e.get("severity", ERROR), e.get("location", ""))
        for e in body.iter(f"{_RS}RegistryError")
    )
    return Outcome(qname.localname, status, errors, body=body)


# --- status and errors -----------------------------------------------------------------------

def check_status(expected: str | None, outcome: Outcome) -> list[str]:
    """<ExpectedStatus>; also that the status agrees with the RegistryErrorList."""
    if expected is None:
        return []
    if expected == "Fault":
        if outcome.kind == "Fault":
            return []
        return [f"expected a SOAP Fault, got {_described(outcome)}"]
    if outcome.kind == "Fault":
        return [f"expected status {expected}, got a SOAP Fault: {outcome.fault}"]
    if outcome.body is not None and etree.QName(outcome.body).namespace == HL7V3:
        wanted = ACK_SUCCESS if expected == "Success" else ACK_FAILURE
        if outcome.status in wanted:
            return []
        return [(f"expected status {expected} (acknowledgement {'/'.join(sorted(wanted))}), "
                 f"got acknowledgement {outcome.status or 'without a typeCode'}{_errors_suffix(outcome.errors)}")]
    if outcome.status is None:
        return [f"expected status {expected}, but the {outcome.kind} has no status attribute"]
    wanted_urn = STATUS_URNS[expected]
    if outcome.status != wanted_urn:
        if outcome.status.rsplit(":", 1)[-1] == expected:
            return [(f"expected status {wanted_urn}, got {outcome.status!r}: right word, wrong URN "
                     "(ebRS 3.0 ResponseStatusType; ITI TF-3 4.2.4.2)")]
        return [f"expected status {expected}, got {_short(outcome.status)}{_errors_suffix(outcome.errors)}"]
    failures = []
    errors = [e for e in outcome.errors if e.severity == ERROR]
    if expected == "Success" and errors:
        failures.append("status Success, but the RegistryErrorList holds errors of severity Error "
                        f"(ITI TF-3 4.2.4.2){_errors_suffix(tuple(errors))}")
    if expected in ("Failure", "PartialSuccess") and not outcome.errors:
        failures.append(f"status {expected} without any RegistryError: the response must say what "
                        "failed (ITI TF-3 4.2.4.2)")
    return failures


def check_error_codes(codes: Sequence[str], messages: Sequence[str], outcome: Outcome) -> list[str]:
    """<ExpectedErrorCode>: an error with that errorCode. <ExpectedErrorMessage>: an error whose
    errorCode is that text, or whose codeContext contains it (the toolkit matches both)."""
    failures = []
    found = ", ".join(e.code for e in outcome.errors) or "none"
    for code in codes:
        if not any(e.code == code for e in outcome.errors):
            failures.append(f"expected error code {code} in the RegistryErrorList; found: {found}")
    for message in messages:
        if not any(e.code == message or message in e.context for e in outcome.errors):
            failures.append(f"expected an error {message!r} in the RegistryErrorList; found: {found}")
    return failures


def check_action(expected: str, actual: str | None) -> list[str]:
    """The wsa:Action of a (non-fault) response: ITI TF-2x V.3.2.1.1 names one per transaction."""
    if actual == expected:
        return []
    return [f"the response's wsa:Action is {actual!r}, expected {expected!r} (ITI TF-2x Appendix V)"]


def check_body_kind(expected: Iterable[str], outcome: Outcome) -> list[str]:
    expected = tuple(expected)
    if outcome.kind == "Fault" or outcome.kind in expected:
        return []
    return [f"the response body is <{outcome.kind}>, expected <{' or '.join(expected)}>"]


# --- ExpectedContents ------------------------------------------------------------------------

@dataclass
class Contents:
    """The objects of a query response, sorted by kind."""

    object_refs: list[etree._Element] = field(default_factory=list)
    documents: list[etree._Element] = field(default_factory=list)
    submission_sets: list[etree._Element] = field(default_factory=list)
    folders: list[etree._Element] = field(default_factory=list)
    associations: list[etree._Element] = field(default_factory=list)
    unclassified_packages: list[etree._Element] = field(default_factory=list)
    total: int = 0

    def count(self, kind: str) -> int:
        return len(self._list(kind))

    def _list(self, kind: str) -> list[etree._Element]:
        return {
            "ObjectRefs": self.object_refs, "Documents": self.documents,
            "SubmissionSets": self.submission_sets, "Folders": self.folders,
            "Associations": self.associations,
        }[kind]


def read_contents(body: etree._Element) -> Contents:
    """Sort the objects of the response's rim:RegistryObjectList. A RegistryPackage is a
    SubmissionSet or a Folder by its classification (a Classification inside it, or one beside
    it naming it), else by its uniqueId's identification scheme."""
    contents = Contents()
    object_list = body.find(f"{_RIM}RegistryObjectList")
    if object_list is None:
        object_list = next(body.iter(f"{_RIM}RegistryObjectList"), None)
    if object_list is None:
        return contents
    children = [c for c in object_list if isinstance(c.tag, str)]
    contents.total = len(children)
    nodes_of: dict[str, set[str]] = {}
    for c in object_list.iter(f"{_RIM}Classification"):
        if c.get("classificationNode"):
            nodes_of.setdefault(c.get("classifiedObject", ""), set()).add(c.get("classificationNode"))
    for child in children:
        local = etree.QName(child).localname
        if local == "ObjectRef":
            contents.object_refs.append(child)
        elif local == "ExtrinsicObject":
            contents.documents.append(child)
        elif local == "Association":
            contents.associations.append(child)
        elif local == "RegistryPackage":
            nodes = nodes_of.get(child.get("id", ""), set())
            schemes = {e.get("identificationScheme") for e in child.findall(f"{_RIM}ExternalIdentifier")}
            if ns.SUBMISSION_SET_NODE in nodes or (not nodes and ns.SS_UNIQUE_ID in schemes):
                contents.submission_sets.append(child)
            elif ns.FOLDER_NODE in nodes or (not nodes and ns.FOL_UNIQUE_ID in schemes):
                contents.folders.append(child)
            else:
                contents.unclassified_packages.append(child)
    return contents


# Named patterns: (SubmissionSets, Documents, Folders) counts, and the SubmissionSet must hold
# each Document and Folder by a HasMember association (GetSubmissionSetAndContents returns
# those associations, ITI TF-2a 3.18.4.1.2.3.7.6).
PATTERNS = {
    "SSwithOneDoc": (1, 1, 0),
    "SSwithOneDocOneFol": (1, 1, 1),
    "SSwithTwoDocOneFol": (1, 2, 1),
    "SSwithOneFol": (1, 0, 1),
}
# Status patterns: every object of the kind has the status, and there is at least one.
STATUS_PATTERNS = {
    "SSApproved": ("submission_sets", "SubmissionSet", APPROVED),
    "DocApp": ("documents", "DocumentEntry", APPROVED),
    "DocDep": ("documents", "DocumentEntry", DEPRECATED),
}


def check_contents(checks: Sequence[ContentCheck], body: etree._Element | None,
                   variables: Mapping[str, str]) -> list[str]:
    """<ExpectedContents>. `variables` gives the ids of DocumentEntries/MustOnlyInclude (their
    UseId symbols, already resolved by the runner)."""
    if not checks:
        return []
    contents = read_contents(body) if body is not None else Contents()
    failures: list[str] = []
    for check in checks:
        failures += _check_one(check, contents, variables)
    return failures


def _check_one(check: ContentCheck, contents: Contents, variables: Mapping[str, str]) -> list[str]:
    kind = check.kind
    if check.count is not None:
        actual = contents.count(kind)
        if actual == check.count:
            return []
        extra = ""
        if kind in ("SubmissionSets", "Folders") and contents.unclassified_packages:
            extra = (f" ({len(contents.unclassified_packages)} RegistryPackage(s) are classified neither "
                     "as SubmissionSet nor as Folder)")
        return [f"ExpectedContents {kind}: expected {check.count}, got {actual}{extra}"]
    if kind == "None":
        if contents.total == 0:
            return []
        return [f"ExpectedContents None: expected no objects, got {contents.total} ({_summary(contents)})"]
    if kind in PATTERNS:
        return _check_pattern(kind, contents)
    if kind in STATUS_PATTERNS:
        attribute, what, status = STATUS_PATTERNS[kind]
        objects = getattr(contents, attribute)
        if not objects:
            return [f"ExpectedContents {kind}: no {what} in the response"]
        wrong = [f"{o.get('id')} is {_short(o.get('status') or 'without status')}" for o in objects
                 if o.get("status") != status]
        if wrong:
            return [f"ExpectedContents {kind}: every {what} must be {_short(status)}; " + "; ".join(wrong)]
        return []
    if kind == "DocumentEntries":
        return _check_entries(check, contents, variables)
    return [f"ExpectedContents kind {kind} is not supported by this runner"]


def _check_pattern(kind: str, contents: Contents) -> list[str]:
    want_ss, want_docs, want_fols = PATTERNS[kind]
    got = (len(contents.submission_sets), len(contents.documents), len(contents.folders))
    if got != (want_ss, want_docs, want_fols):
        return [(f"ExpectedContents {kind}: expected {want_ss} SubmissionSet, {want_docs} DocumentEntry, "
                 f"{want_fols} Folder; got {got[0]}, {got[1]}, {got[2]}")]
    ss_id = contents.submission_sets[0].get("id")
    members = {a.get("targetObject") for a in contents.associations
               if a.get("sourceObject") == ss_id and a.get("associationType") == HAS_MEMBER}
    missing = [o.get("id") for o in contents.documents + contents.folders if o.get("id") not in members]
    if missing:
        return [f"ExpectedContents {kind}: no HasMember association from the SubmissionSet to "
                + ", ".join(str(m) for m in missing)]
    return []


def _check_entries(check: ContentCheck, contents: Contents, variables: Mapping[str, str]) -> list[str]:
    failures = []
    wanted: dict[str, str | None] = {}
    for entry in check.entries:
        if entry.use_id is None:
            continue
        value = variables.get(entry.use_id.symbol)
        if value is None:
            failures.append(f"ExpectedContents DocumentEntries: no value for {entry.use_id.symbol}")
            continue
        wanted[value] = entry.object_type
    got = {d.get("id"): d.get("objectType") for d in contents.documents}
    if set(got) != set(wanted):
        failures.append("ExpectedContents DocumentEntries/MustOnlyInclude: expected exactly "
                        f"{sorted(wanted)}, got {sorted(str(g) for g in got)}")
    for entry_id, object_type in wanted.items():
        if entry_id in got and object_type and got[entry_id] != object_type:
            failures.append(f"ExpectedContents DocumentEntries: {entry_id} has objectType {got[entry_id]}, "
                            f"expected {object_type}")
    return failures


def _summary(contents: Contents) -> str:
    parts = [f"{contents.count(k)} {k}" for k in ("ObjectRefs", "Documents", "SubmissionSets", "Folders", "Associations")
             if contents.count(k)]
    return ", ".join(parts) or "other objects"


# --- XPath: Reports and Assertions -----------------------------------------------------------

def evaluate_report(xpath: str, element: etree._Element) -> str | None:
    """The value of a <Report>: the XPath 1.0 string value of its expression over `element`
    taken as a document of its own (the toolkit logs the request and the response alone).
    None when the expression selects nothing."""
    document = etree.ElementTree(etree.fromstring(etree.tostring(element)))
    try:
        value = document.xpath(xpath)
    except etree.XPathError as exc:
        raise ValueError(f"Report XPath {xpath!r} is not valid XPath 1.0: {exc}") from None
    if isinstance(value, list):
        if not value:
            return None
        first = value[0]
        if isinstance(first, etree._Element):
            return "".join(first.itertext()).strip()
        return str(first).strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    return str(value).strip() or None


def fill(text: str, replacements: Mapping[str, str]) -> str:
    """Literal replacement of each key, longest first. Assertions use the UseReport `useAs`
    text as written, without $...$ (12323: substring("updateTime",1,8) = "$DATE$")."""
    for key in sorted(replacements, key=len, reverse=True):
        if key:
            text = text.replace(key, replacements[key])
    return text


def check_assertions(assertions: Sequence[Assertion], document: etree._ElementTree,
                     replacements: Mapping[str, str]) -> list[str]:
    """<Assertions>: each <Assert> is an XPath 1.0 expression over the section's log that must
    be true (a node-set: not empty; a number: not 0 nor NaN; a string: not empty)."""
    failures = []
    for assertion in assertions:
        expression = fill(assertion.xpath, replacements)
        label = f"assertion {assertion.id!r}" if assertion.id else "assertion"
        try:
            value = document.xpath(expression)
        except etree.XPathError as exc:
            failures.append(f"{label} is not valid XPath 1.0 ({exc}): {expression}")
            continue
        if not _true(value):
            failures.append(f"{label} is false: {expression}")
    return failures


def _true(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return value != 0 and not math.isnan(value)
    if isinstance(value, (list, str)):
        return len(value) > 0
    return bool(value)


# --- retrieved documents ---------------------------------------------------------------------

@dataclass(frozen=True)
class RetrievedDocument:
    repository_unique_id: str
    document_unique_id: str
    mime_type: str
    content: bytes


@dataclass(frozen=True)
class SubmittedDocument:
    """A document this run sent in an ITI-41 step: what a later retrieve must give back."""

    unique_id: str
    mime_type: str
    content: bytes
    where: str  # test/section/step that sent it


def check_documents(
    retrieved: Sequence[RetrievedDocument],
    references: Sequence[tuple[str, bytes, str]],
    submitted: Mapping[str, SubmittedDocument],
    metadata: Mapping[str, etree._Element],
) -> list[str]:
    """Retrieved documents against: each <ReferenceDocument> (uid, bytes, file name); the
    documents this run submitted under the same uniqueId; the DocumentEntries of
    <ReferenceMetadata> (by uniqueId: mimeType, and the hash and size slots when present)."""
    failures = []
    by_uid = {d.document_unique_id: d for d in retrieved}
    for uid, expected, name in references:
        document = by_uid.get(uid)
        if document is None:
            failures.append(f"document {uid} was not returned (ReferenceDocument {name}); returned: "
                            f"{sorted(by_uid) or 'none'}")
        elif document.content != expected:
            failures.append(f"retrieved document {uid} differs from ReferenceDocument {name}: "
                            + _difference(document.content, expected))
    for document in retrieved:
        sent = submitted.get(document.document_unique_id)
        if sent is not None:
            if document.content != sent.content:
                failures.append(f"retrieved document {document.document_unique_id} differs from the one "
                                f"submitted in {sent.where}: " + _difference(document.content, sent.content))
            if document.mime_type != sent.mime_type:
                failures.append(f"retrieved document {document.document_unique_id} has mimeType "
                                f"{document.mime_type!r}, submitted as {sent.mime_type!r}")
        entry = metadata.get(document.document_unique_id)
        if entry is not None:
            failures += _against_entry(document, entry)
    return failures


def _against_entry(document: RetrievedDocument, entry: etree._Element) -> list[str]:
    failures = []
    uid = document.document_unique_id
    if entry.get("mimeType") and entry.get("mimeType") != document.mime_type:
        failures.append(f"retrieved document {uid} has mimeType {document.mime_type!r}; its DocumentEntry "
                        f"says {entry.get('mimeType')!r}")
    slots = {s.get("name"): s.findtext(f"{_RIM}ValueList/{_RIM}Value") for s in entry.findall(f"{_RIM}Slot")}
    if slots.get("hash") and slots["hash"].strip().lower() != hashlib.sha1(document.content).hexdigest():
        failures.append(f"retrieved document {uid}: SHA-1 {hashlib.sha1(document.content).hexdigest()} "
                        f"is not the DocumentEntry's hash {slots['hash'].strip()}")
    if slots.get("size") and slots["size"].strip() != str(len(document.content)):
        failures.append(f"retrieved document {uid}: {len(document.content)} bytes, the DocumentEntry's size "
                        f"says {slots['size'].strip()}")
    return failures


def _difference(actual: bytes, expected: bytes) -> str:
    if len(actual) != len(expected):
        return f"{len(actual)} bytes instead of {len(expected)}"
    first = next(i for i, (a, b) in enumerate(zip(actual, expected)) if a != b)
    return f"same length ({len(actual)} bytes), first difference at byte {first}"


# --- wording ---------------------------------------------------------------------------------

def _short(urn: str) -> str:
    return urn.rsplit(":", 1)[-1]


def _described(outcome: Outcome) -> str:
    return f"status {_short(outcome.status)}" if outcome.status else f"<{outcome.kind}> without status"


def _errors_suffix(errors: tuple[RegistryError, ...]) -> str:
    if not errors:
        return ""
    shown = "; ".join(str(e) for e in errors[:3])
    more = f"; and {len(errors) - 3} more" if len(errors) > 3 else ""
    return f" ({shown}{more})"
