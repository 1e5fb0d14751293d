"""The checks of a NIST test step: what the plan expects against what the system answered.

Every check is a pure function that returns the list of its failures, each a sentence a person
can act on ("expected status Success, got Failure: XDSRegistryMetadataError ..."). An empty
list is a pass. Nothing here sends, reads files or knows the run: the runner hands in the
parsed response, the log document and the values of the plan's variables.

The checks, each as the NIST toolkit's test engine makes it (usnistgov/iheos-toolkit2:
BasicTransaction.eval_expected_status, Validator.run_test_assertion, AssertionEngine):
- status (<ExpectedStatus> Success / Failure / PartialSuccess / Fault, or several of them
  separated by commas): every sending step; the full ebRS / IHE status URN is required, not
  just its last word;
- error codes (<ExpectedErrorCode>, <ExpectedErrorMessage>);
- <ExpectedContents>: the object counts (ObjectRefs, Documents, SubmissionSets, Folders,
  Associations), the named checks of NAMED_CHECKS (SSwithOneDoc ... HasSnapshotPattern, None)
  and DocumentEntries (MustOnlyInclude, Include, Exclude, DocumentEntryType). A kind not in
  these never reaches here: the plan reader lists it as unchecked and the runner reports the
  step as skipped;
- <Assertions>: XPath 1.0 over the toolkit-shaped log of the section, wrapped as its
  <DataRef>s say;
- retrieved documents: against <ReferenceDocument>, against the documents this run submitted,
  against the DocumentEntry of <ReferenceMetadata> (mimeType, hash, size), <ExpectedMimeType>.

The toolkit's named checks are not spelled out beyond their names and its code; the meaning of
each is written next to it below. Where the toolkit's code has an evident slip (ss2Doc's
inverted test, verifyDocumentEntries stopping at its first match), the intent is checked.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lxml import etree

from xds.conformance.plan import Assertion, ContentCheck, split_statuses
from xds.ebrim import ns
from xds.errors import ERROR
from xds.model import DocumentEntryType
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

def check_status(expected: str | Sequence[str] | None, outcome: Outcome) -> list[str]:
    """<ExpectedStatus>; also that the status agrees with the RegistryErrorList. `expected` may
    name several statuses ("Success, PartialSuccess", as the toolkit's StepContext splits it):
    any of them passes."""
    if expected is None:
        return []
    alternatives = split_statuses(expected) if isinstance(expected, str) else tuple(expected)
    if not alternatives:
        return []
    outcomes = [_check_one_status(status, outcome) for status in alternatives]
    if any(not failures for failures in outcomes):
        return []
    if len(outcomes) == 1:
        return outcomes[0]
    return [f"expected status {' or '.join(alternatives)}, got {_described(outcome)}{_errors_suffix(outcome.errors)}"]


def _check_one_status(expected: str, outcome: Outcome) -> list[str]:
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
    """The objects of a query response, sorted by kind (the toolkit's Metadata of a response)."""

    object_refs: list[etree._Element] = field(default_factory=list)
    documents: list[etree._Element] = field(default_factory=list)
    submission_sets: list[etree._Element] = field(default_factory=list)
    folders: list[etree._Element] = field(default_factory=list)
    associations: list[etree._Element] = field(default_factory=list)
    unclassified_packages: list[etree._Element] = field(default_factory=list)
    total: int = 0
    body: etree._Element | None = None

    def count(self, kind: str) -> int:
        return len(self._list(kind))

    def _list(self, kind: str) -> list[etree._Element]:
        return {
            "ObjectRefs": self.object_refs, "Documents": self.documents,
            "SubmissionSets": self.submission_sets, "Folders": self.folders,
            "Associations": self.associations,
        }[kind]

    @property
    def submission_set(self) -> etree._Element | None:
        """The SubmissionSet (the first, as the toolkit's Metadata.getSubmissionSet)."""
        return self.submission_sets[0] if self.submission_sets else None


def read_contents(body: etree._Element) -> Contents:
    """Sort the objects of the response's rim:RegistryObjectList. A RegistryPackage is a
    SubmissionSet or a Folder by its classification (a Classification inside it, or one beside
    it naming it), else by its uniqueId's identification scheme."""
    contents = Contents(body=body)
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


def check_contents(checks: Sequence[ContentCheck], body: etree._Element | None,
                   variables: Mapping[str, str]) -> list[str]:
    """<ExpectedContents>, each check as the toolkit's Validator.run_test_assertion makes it.
    `variables` gives the ids of the DocumentEntries filters (their UseId symbols, already
    resolved by the runner)."""
    if not checks:
        return []
    contents = read_contents(body) if body is not None else Contents()
    failures: list[str] = []
    for check in checks:
        problems = dict.fromkeys(_check_one(check, contents, variables))  # once each, in order
        failures += [f"ExpectedContents {check.kind}: {problem}" for problem in problems]
    return failures


def _check_one(check: ContentCheck, contents: Contents, variables: Mapping[str, str]) -> list[str]:
    if check.count is not None:
        return _check_count(check.kind, check.count, contents)
    if check.kind == "DocumentEntries":
        return _check_entries(check, contents, variables)
    return NAMED_CHECKS[check.kind](contents)


def _check_count(kind: str, count: int, contents: Contents) -> list[str]:
    actual = contents.count(kind)
    problems = []
    if actual != count:
        extra = ""
        if kind in ("SubmissionSets", "Folders") and contents.unclassified_packages:
            extra = (f" ({len(contents.unclassified_packages)} RegistryPackage(s) are classified neither "
                     "as SubmissionSet nor as Folder)")
        problems.append(f"expected {count}, got {actual}{extra}")
    if kind == "ObjectRefs":
        # An ObjectRef answer holds nothing else (Validator: hasObjectRefs, then no SubmissionSet,
        # DocumentEntry, Folder nor Association).
        others = {k: contents.count(k) for k in ("SubmissionSets", "Documents", "Folders", "Associations")}
        if any(others.values()):
            problems.append("an ObjectRef answer holds no other objects; got "
                            + ", ".join(f"{n} {k}" for k, n in others.items() if n))
    return problems


# The named checks. The toolkit (Validator) records a problem and goes on, so a check may say
# several things; some stop at the first group of problems, as the toolkit's do. A check over
# "every X" passes when there is no X (DocApp with no DocumentEntry): so does the toolkit's.

def _has_submission_set(c: Contents) -> list[str]:
    return [] if c.submission_set is not None else ["no SubmissionSet in the response"]


def _counted(what: str, objects: list, count: int) -> list[str]:
    return [] if len(objects) == count else [f"expected {count} {what}, got {len(objects)}"]


def _short_type(association: etree._Element) -> str:
    return (association.get("associationType") or "").rsplit(":", 1)[-1]


def _association(c: Contents, source: etree._Element | None, target: etree._Element | None,
                 type_: str = "HasMember") -> tuple[etree._Element | None, list[str]]:
    """The `type_` association from `source` to `target` (by id), or a problem naming both."""
    if source is None or target is None:
        return None, []
    for a in c.associations:
        if (a.get("sourceObject") == source.get("id") and a.get("targetObject") == target.get("id")
                and _short_type(a) == type_):
            return a, []
    return None, [f"no {type_} association from {_described_object(c, source)} to {_described_object(c, target)}"]


def _described_object(c: Contents, element: etree._Element) -> str:
    kind = ("SubmissionSet" if element in c.submission_sets else "Folder" if element in c.folders
            else "DocumentEntry" if element in c.documents else "Association" if element in c.associations
            else etree.QName(element).localname)
    return f"{kind} {element.get('id')}"


def _with_status(what: str, objects: list, status: str) -> list[str]:
    wrong = [f"{o.get('id')} is {_short(o.get('status') or 'without status')}" for o in objects
             if o.get("status") != status]
    return [f"every {what} must be {_short(status)}; " + "; ".join(wrong)] if wrong else []


def _ss_approved(c: Contents) -> list[str]:
    if c.submission_set is None:
        return ["no SubmissionSet in the response"]
    return _with_status("SubmissionSet", [c.submission_set], APPROVED)


def _ss_with_docs(c: Contents, docs: int) -> list[str]:
    """ss1Doc / ss2Doc: a SubmissionSet, `docs` DocumentEntries, as many associations, each a
    HasMember from the SubmissionSet."""
    problems = (_has_submission_set(c) + _counted("DocumentEntry", c.documents, docs)
                + _counted("Association", c.associations, docs))
    if problems:
        return problems
    for document in c.documents:
        problems += _association(c, c.submission_set, document)[1]
    return problems


def _ss_with_one_fol(c: Contents) -> list[str]:
    problems = _has_submission_set(c) + _counted("DocumentEntry", c.documents, 0) + _counted("Folder", c.folders, 1)
    if problems:
        return problems
    return _counted("Association", c.associations, 1) + _association(c, c.submission_set, c.folders[0])[1]


def _ss_with_docs_in_folder(c: Contents, docs: int, in_folder: int) -> list[str]:
    """A SubmissionSet with `docs` DocumentEntries and one Folder, `in_folder` of the documents
    in the Folder: HasMember from the SubmissionSet to each document and the Folder, from the
    Folder to its documents, and from the SubmissionSet to each Folder-document association
    (ITI TF-3 4.2.2.1: a DocumentEntry added to a Folder, the association itself a member)."""
    problems = (_has_submission_set(c) + _counted("DocumentEntry", c.documents, docs)
                + _counted("Folder", c.folders, 1))
    if problems:
        return problems
    expected_associations = docs + 1 + 2 * in_folder
    problems += _counted("Association", c.associations, expected_associations)
    ss, fol = c.submission_set, c.folders[0]
    for target in (*c.documents, fol):
        problems += _association(c, ss, target)[1]
    folder_links = [a for a in c.associations if a.get("sourceObject") == fol.get("id")
                    and _short_type(a) == "HasMember" and a.get("targetObject") in {d.get("id") for d in c.documents}]
    if len(folder_links) < in_folder:
        problems.append(f"expected {in_folder} HasMember association(s) from Folder {fol.get('id')} to the "
                        f"DocumentEntries, got {len(folder_links)}")
    for link in folder_links[:in_folder]:
        problems += _association(c, ss, link)[1]
    return problems


def _unique_relationship(c: Contents, type_: str) -> list[str]:
    """HasRPLC, HasXFRM_RPLC, HasAPND: such an association, and no two of them naming the same
    document (Validator.hasUniqueDocumentRelationshipOfType)."""
    found = [a for a in c.associations if _short_type(a) == type_]
    if not found:
        return [f"no {type_} association in the response"]
    targets = [a.get("targetObject") for a in found]
    doubled = sorted({t for t in targets if targets.count(t) > 1})
    return [f"several {type_} associations for the same DocumentEntry: {', '.join(map(str, doubled))}"] if doubled else []


def _doc_replaces_doc(c: Contents) -> list[str]:
    """DocRplcDoc: two DocumentEntries, one association: the Approved one replaces (RPLC) the
    Deprecated one."""
    problems = _counted("DocumentEntry", c.documents, 2) + _counted("Association", c.associations, 1)
    if len(c.documents) != 2:
        return problems
    approved = [d for d in c.documents if d.get("status") == APPROVED]
    new, old = (approved[0], next(d for d in c.documents if d is not approved[0])) if approved else c.documents
    problems += _association(c, new, old, "RPLC")[1]
    problems += _with_status("replaced DocumentEntry", [old], DEPRECATED)
    return problems


def _one_with_status(c: Contents, status: str) -> list[str]:
    count = sum(1 for d in c.documents if d.get("status") == status)
    return [] if count == 1 else [f"expected exactly one {_short(status)} DocumentEntry, got {count}"]


def _snapshot_pattern(c: Contents) -> list[str]:
    """HasSnapshotPattern: one IsSnapshotOf association from an Approved stable DocumentEntry to
    the Approved On-Demand DocumentEntry it is a snapshot of (the On-Demand Documents option)."""
    links = [a for a in c.associations if _short_type(a) == "IsSnapshotOf"]
    if len(links) != 1:
        return [f"expected one IsSnapshotOf association, got {len(links)}"]
    by_id = {d.get("id"): d for d in c.documents}
    source, target = by_id.get(links[0].get("sourceObject")), by_id.get(links[0].get("targetObject"))
    if source is None or target is None:
        return ["the snapshot and the On-Demand DocumentEntry of the IsSnapshotOf association must both be in the "
                "response"]
    problems = _with_status("DocumentEntry of the snapshot pattern", [source, target], APPROVED)
    if target.get("objectType") != DocumentEntryType.ON_DEMAND.value:
        problems.append(f"the IsSnapshotOf target {target.get('id')} is not an On-Demand DocumentEntry")
    if source.get("objectType") != DocumentEntryType.STABLE.value:
        problems.append(f"the IsSnapshotOf source {source.get('id')} is not a stable DocumentEntry")
    return problems


def _registry_response_is_valid(c: Contents) -> list[str]:
    """RegistryResponseIsValid: a RegistryResponse whose status is an ebRS/IHE status other than
    Failure, every RegistryError with its errorCode and severity (ITI TF-3 4.2.4.2)."""
    body = c.body
    response = None
    if body is not None:
        response = body if body.tag == f"{_RS}RegistryResponse" else body.find(f".//{_RS}RegistryResponse")
    if response is None:
        return ["no RegistryResponse"]
    status = response.get("status")
    if status not in (ns.SUCCESS, ns.PARTIAL_SUCCESS, ns.FAILURE):
        return [f"status {status!r} is not an ebRS/IHE response status"]
    problems = [f"a RegistryError without {name}" for e in response.iter(f"{_RS}RegistryError")
                for name in ("errorCode", "severity") if not e.get(name)]
    if status == ns.FAILURE:
        problems.append("the response status is Failure")
    return problems


def _none(c: Contents) -> list[str]:
    """None: no SubmissionSet, DocumentEntry or Folder, and then no Association."""
    problems = [f"expected no {k}, got {c.count(k)}" for k in ("SubmissionSets", "Documents", "Folders") if c.count(k)]
    if problems:
        return problems
    return [f"expected no Associations, got {len(c.associations)}"] if c.associations else []


NAMED_CHECKS: dict[str, Callable[[Contents], list[str]]] = {
    "SSwithOneDoc": lambda c: _ss_with_docs(c, 1) + _ss_approved(c),
    "SSwithOneDocOnly": lambda c: _ss_with_docs(c, 1),
    "SSwithTwoDoc": lambda c: _ss_with_docs(c, 2) + _ss_approved(c),
    "SSwithTwoDocOnly": lambda c: _ss_with_docs(c, 2),
    "SSwithOneFol": _ss_with_one_fol,
    "SSwithOneDocOneFol": lambda c: _ss_with_docs_in_folder(c, 1, 1),
    "SSwithTwoDocOneFol": lambda c: _ss_with_docs_in_folder(c, 2, 2),
    "SSwithTwoDocOneFolOneDocInFol": lambda c: _ss_with_docs_in_folder(c, 2, 1),
    "SSApproved": _ss_approved,
    "NoSubmissionSet": lambda c: [] if c.submission_set is None else ["expected no SubmissionSet, got one"],
    "NoDocument": lambda c: _counted("DocumentEntry", c.documents, 0),
    "DocApp": lambda c: _with_status("DocumentEntry", c.documents, APPROVED),
    "DocDep": lambda c: _with_status("DocumentEntry", c.documents, DEPRECATED),
    "OneDocApp": lambda c: _one_with_status(c, APPROVED),
    "OneDocDep": lambda c: _one_with_status(c, DEPRECATED),
    "FolApp": lambda c: _with_status("Folder", c.folders, APPROVED),
    "FolDep": lambda c: _with_status("Folder", c.folders, DEPRECATED),
    "HasRPLC": lambda c: _unique_relationship(c, "RPLC"),
    "HasXFRM_RPLC": lambda c: _unique_relationship(c, "XFRM_RPLC"),
    "HasAPND": lambda c: _unique_relationship(c, "APND"),
    "DocRplcDoc": _doc_replaces_doc,
    "HasSnapshotPattern": _snapshot_pattern,
    "RegistryResponseIsValid": _registry_response_is_valid,
    "None": _none,
}


def _check_entries(check: ContentCheck, contents: Contents, variables: Mapping[str, str]) -> list[str]:
    """<DocumentEntries>: MustOnlyInclude (exactly these DocumentEntries), Include (at least
    these), Exclude (none of these), each entry's DocumentEntryType (its objectType), and a
    DocumentEntryType of its own (every DocumentEntry has that objectType)."""
    problems = []
    got = {d.get("id"): d.get("objectType") for d in contents.documents}
    for name, entries in check.filters:
        wanted: dict[str, str | None] = {}
        for entry in entries:
            if entry.use_id is None:
                continue
            value = variables.get(entry.use_id.symbol)
            if value is None:
                problems.append(f"no value for {entry.use_id.symbol}")
                continue
            wanted[value] = entry.object_type
        if name == "MustOnlyInclude" and set(got) != set(wanted):
            problems.append(f"{name}: expected exactly {sorted(wanted)}, got {sorted(str(g) for g in got)}")
        elif name == "Include" and not set(wanted) <= set(got):
            problems.append(f"{name}: {sorted(set(wanted) - set(got))} not in the response")
        elif name == "Exclude" and set(wanted) & set(got):
            problems.append(f"{name}: {sorted(set(wanted) & set(got))} must not be in the response")
        if name != "Exclude":
            for entry_id, object_type in wanted.items():
                if entry_id in got and object_type and got[entry_id] != object_type:
                    problems.append(f"{entry_id} has objectType {got[entry_id]}, expected {object_type}")
    if check.entry_type:
        wrong = sorted(str(i) for i, t in got.items() if t != check.entry_type)
        if wrong:
            problems.append(f"DocumentEntryType: every DocumentEntry must have objectType {check.entry_type}; "
                            f"not: {', '.join(wrong)}")
    return problems


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


def assertion_data(sources: Sequence[tuple[str, etree._Element]]) -> etree._Element:
    """What the assertions read, as the toolkit's AssertionEngine builds it: <Data> holding, for
    each <DataRef file= as=>, an element named `as` around that log (file THIS: the section's
    log, this step included) or file."""
    data = etree.Element("Data")
    for name, root in sources:
        holder = etree.SubElement(data, name)
        holder.append(copy.deepcopy(root))
    return data


def check_assertions(assertions: Sequence[Assertion], data: etree._Element | etree._ElementTree,
                     replacements: Mapping[str, str]) -> list[str]:
    """<Assertions>: each <Assert> is an XPath 1.0 expression evaluated with <Data> as context;
    it holds when its string value is "true" (AssertionEngine: stringValueOf(data), compared
    without case), so a boolean expression that is true, or a node whose text is "true".
    The toolkit's own "a equalsIgnoreCase b" is a = b on the lower-cased text of both sides."""
    context = data.getroot() if isinstance(data, etree._ElementTree) else data
    failures = []
    for assertion in assertions:
        expression = fill(assertion.xpath, replacements)
        left, token, right = expression.partition("equalsIgnoreCase")
        if token and "equalsIgnoreCase" not in right:
            expression = f"{left.lower()} = {right.lower()}"
        label = f"assertion {assertion.id!r}" if assertion.id else "assertion"
        try:
            value = context.xpath(f"string(({expression}))")
        except etree.XPathError as exc:
            failures.append(f"{label} is not valid XPath 1.0 ({exc}): {expression}")
            continue
        if str(value).strip().lower() != "true":
            failures.append(f"{label} is false: {expression}")
    return failures


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
    *,
    all_expected: bool = True,
    mime_type: str | None = None,
) -> list[str]:
    """Retrieved documents against: each <ReferenceDocument> (uid, bytes, file name); the
    documents this run submitted under the same uniqueId; the DocumentEntries of
    <ReferenceMetadata> (by uniqueId: mimeType, and the hash and size slots when present);
    <ExpectedMimeType>. all_expected: every reference document must come back (the step expects
    Success); otherwise only those that come back are compared (PartialSuccess, Failure)."""
    failures = []
    by_uid = {d.document_unique_id: d for d in retrieved}
    for uid, expected, name in references:
        document = by_uid.get(uid)
        if document is None:
            if all_expected:
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
        if mime_type and document.mime_type != mime_type:
            failures.append(f"retrieved document {document.document_unique_id} has mimeType {document.mime_type!r}, "
                            f"ExpectedMimeType says {mime_type!r}")
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
