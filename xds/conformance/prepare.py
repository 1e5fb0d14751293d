"""The rewrites the NIST XDS Toolkit makes to a metadata template before it sends it.

The conformance data's README lists them: (b) the test patient's id goes into every patientId
and into `$patientid$`; (c) every DocumentEntry, SubmissionSet and Folder gets a new uniqueId
and the SubmissionSet the harness's sourceId; (d) with <AssignUuids/>, symbolic ids become
urn:uuid values, references following; (e) `$name$` placeholders are filled from the logs of
earlier steps. `prepare` does (b) to (d) and returns the log the toolkit keeps of them (its
AssignedUids / AssignedUuids / AssignedPatientId sections, which later steps read through
<UseId>); `substitute` does (e).

What belongs here: those rewrites, as pure functions on lxml trees. Every function returns a new
tree and leaves its input alone, so one parsed template can be prepared for several steps.
What does not: reading test plans, choosing the patient, talking to a registry (the runner), and
the 2.1 -> 3.0 translation (`xds.conformance.ebrim21`). Both ebRIM 3.0 and ebRIM 2.1 trees are
accepted, so the same rewrites serve a plan without <XDSb/>.

Only what the template already has is rewritten: a patientId, uniqueId or sourceId that a
template leaves out on purpose (to test the registry's error) stays out.
"""

from __future__ import annotations

import copy
import itertools
import re
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TypedDict

from lxml import etree

from xds.conformance.ebrim21 import RIM21
from xds.ebrim import ns
from xds.model.identifiers import OID, OID_MAX, UUID_PREFIX, is_oid, is_uuid_urn

RIM_NAMESPACES = frozenset({ns.RIM, RIM21})

# ExternalIdentifier schemes, ITI TF-3 4.2.5 (the same UUIDs in XDS.a and XDS.b).
PATIENT_ID_SCHEMES = frozenset({ns.DE_PATIENT_ID, ns.SS_PATIENT_ID, ns.FOL_PATIENT_ID})
UNIQUE_ID_SCHEMES = frozenset({ns.DE_UNIQUE_ID, ns.SS_UNIQUE_ID, ns.FOL_UNIQUE_ID})
SOURCE_ID_SCHEME = ns.SS_SOURCE_ID

# The objects a submission defines; their ids may be symbolic. An ObjectRef only names an
# object that is already in the registry, so its id is never given a new UUID (though it is
# rewritten when it names an object of this submission).
DEFINED_OBJECTS = frozenset(
    {"ExtrinsicObject", "RegistryPackage", "Association", "Classification", "ExternalIdentifier"}
)
# Attributes that name an object of the submission by its id (the object's own id and lid too).
REFERENCE_ATTRIBUTES = ("id", "lid", "classifiedObject", "registryObject", "sourceObject", "targetObject")

# A plain OID (ITI TF-3 4.2.3.2.26: XDSDocumentEntry.uniqueId is an OID, at most 64 characters;
# the "oid^extension" form is allowed there but the toolkit never makes one).
# A `$name$` placeholder as the testkit writes them.
PLACEHOLDER = re.compile(r"\$[A-Za-z_][A-Za-z0-9_.-]*\$")


class PrepareLog(TypedDict):
    """What `prepare` did, shaped like the sections of the toolkit's log."""

    AssignedUids: dict[str, str]  # object id as in the template -> its new uniqueId
    AssignedUuids: dict[str, str]  # symbolic id -> the urn:uuid that replaced it
    AssignedPatientId: str
    AssignedSourceId: dict[str, str]  # SubmissionSet id as in the template -> the sourceId it got


def prepare(
    root: etree._Element,
    *,
    patient_id: str,
    source_id: str,
    new_unique_id: Callable[[], str],
    assign_uuids: bool,
    no_assign_uids: Collection[str] = (),
    assign_uids: bool = True,
    new_uuid: Callable[[], str] | None = None,
) -> tuple[etree._Element, PrepareLog]:
    """Steps (b), (c) and (d) on a copy of `root`; the copy and the log.

    no_assign_uids: ids of objects that keep the uniqueId the template gives them (the plan's
        <NoAssignUids id="..."/>, used to resubmit a document under its earlier uniqueId).
    assign_uids: False for <NoAssignUids/> without an id: every object keeps the uniqueId the
        template gives it (a Metadata Update names the versions' uniqueIds itself).
    new_uuid: makes one urn:uuid; a random UUID by default (tests pass a predictable one).
    """
    tree = copy.deepcopy(root)
    _set_patient_ids(tree, patient_id)
    unique_ids = _assign_unique_ids(tree, new_unique_id, keep=frozenset(no_assign_uids)) if assign_uids else {}
    source_ids = _set_source_ids(tree, source_id)
    uuids = _assign_uuids(tree, new_uuid or _random_uuid) if assign_uuids else {}
    return tree, PrepareLog(AssignedUids=unique_ids, AssignedUuids=uuids, AssignedPatientId=patient_id,
                            AssignedSourceId=source_ids)


def substitute(root: etree._Element, variables: Mapping[str, str], *, as_written: bool = False) -> etree._Element:
    """A copy of `root` with `$name$` placeholders filled, in attribute values and text.

    Keys may be written `name` or `$name$` (test plans write `useAs="$patientid$"` and
    `symbol="$ssuid$"`); a key with a leading `$` is used exactly as written, so the legacy
    one-sided `$Folder01` symbols of some templates work too. as_written: every key is replaced
    exactly as written, `$` or not, as the toolkit's Linkage does (15801 fills a bare
    `Document01` through <UseId symbol="Document01">). Each placeholder is replaced once: a
    value that itself contains `$...$` is not filled again. Unknown placeholders stay.
    """
    tree = copy.deepcopy(root)
    _substitute_in_place(tree, variables if as_written else {_symbol(k): v for k, v in variables.items()})
    return tree


def placeholders(root: etree._Element) -> set[str]:
    """The `$name$` placeholders still in `root` (attribute values and text): what a runner has
    not filled yet."""
    found: set[str] = set()
    for text in _texts(root):
        found.update(PLACEHOLDER.findall(text))
    return found


def unique_id_sequence(root_oid: str) -> Callable[[], str]:
    """A uniqueId maker for `prepare`: root_oid.1, root_oid.2, ... A runner passes a root that
    is new for each run (for example one that ends in a timestamp): uniqueIds must never
    repeat across submissions to one registry."""
    if not OID.fullmatch(root_oid):
        raise ValueError(f"not an OID: {root_oid!r}")
    counter = itertools.count(1)
    return lambda: f"{root_oid}.{next(counter)}"


# --- (b) patient ids -------------------------------------------------------------------------

def _set_patient_ids(tree: etree._Element, patient_id: str) -> None:
    for identifier in _rim_elements(tree, {"ExternalIdentifier"}):
        if identifier.get("identificationScheme") in PATIENT_ID_SCHEMES:
            identifier.set("value", patient_id)
    # Templates also write $patientid$ where no scheme says so (e.g. a sourcePatientInfo).
    _substitute_in_place(tree, {"$patientid$": patient_id})


# --- (c) uniqueIds and sourceId --------------------------------------------------------------

def _assign_unique_ids(
    tree: etree._Element, new_unique_id: Callable[[], str], keep: frozenset[str]
) -> dict[str, str]:
    assigned: dict[str, str] = {}
    for identifier in _rim_elements(tree, {"ExternalIdentifier"}):
        if identifier.get("identificationScheme") not in UNIQUE_ID_SCHEMES:
            continue
        owner = _owner_id(identifier)
        if owner in keep:
            continue
        value = _checked_oid(new_unique_id())
        # The log is keyed by the object's id, as <UseId id="SubmissionSet01" .../> reads it;
        # an identifier whose owner cannot be told is keyed by the value it replaced.
        assigned[owner or identifier.get("value", "")] = value
        identifier.set("value", value)
    return assigned


def _set_source_ids(tree: etree._Element, source_id: str) -> dict[str, str]:
    assigned: dict[str, str] = {}
    for identifier in _rim_elements(tree, {"ExternalIdentifier"}):
        if identifier.get("identificationScheme") == SOURCE_ID_SCHEME:
            identifier.set("value", source_id)
            assigned[_owner_id(identifier) or source_id] = source_id
    return assigned


def _owner_id(identifier: etree._Element) -> str | None:
    """The id of the object an ExternalIdentifier belongs to: its registryObject, or (ebRIM 2.1
    lets it go unsaid) the object it is nested in."""
    owner = identifier.get("registryObject")
    if owner is not None:
        return owner
    parent = identifier.getparent()
    return parent.get("id") if parent is not None else None


def _checked_oid(value: str) -> str:
    if not is_oid(value):
        raise ValueError(f"new_unique_id gave {value!r}: a uniqueId must be a plain OID of at most "
                         f"{OID_MAX} characters")
    return value


# --- (d) UUIDs -------------------------------------------------------------------------------

def _assign_uuids(tree: etree._Element, new_uuid: Callable[[], str]) -> dict[str, str]:
    assigned: dict[str, str] = {}
    for element in _rim_elements(tree, DEFINED_OBJECTS):
        old = element.get("id")
        # urn:uuid ids are the template's own (even a malformed one: that may be the test).
        # A `$name$` id is a placeholder for `substitute`, not a symbolic id. Two objects with
        # one symbolic id get one UUID: the duplicate, if it is the test, stays a duplicate.
        if old is None or old.startswith(UUID_PREFIX) or PLACEHOLDER.search(old) or old in assigned:
            continue
        assigned[old] = _checked_uuid(new_uuid())
    for element in tree.iter():
        if not isinstance(element.tag, str) or etree.QName(element).namespace not in RIM_NAMESPACES:
            continue
        for name in REFERENCE_ATTRIBUTES:
            value = element.get(name)
            if value in assigned:
                element.set(name, assigned[value])
    return assigned


def _random_uuid() -> str:
    return f"{UUID_PREFIX}{uuid.uuid4()}"


def _checked_uuid(value: str) -> str:
    if not is_uuid_urn(value):
        raise ValueError(f"new_uuid gave {value!r}: not a urn:uuid")
    return value


# --- (e) placeholders ------------------------------------------------------------------------

def _substitute_in_place(tree: etree._Element, symbols: Mapping[str, str]) -> None:
    """Replace each key of `symbols`, exactly as written, in attribute values and text."""
    symbols = {name: value for name, value in symbols.items() if name}
    if not symbols:
        return
    # Longest first, so that `$Folder01` never eats the start of `$Folder012`.
    pattern = re.compile("|".join(re.escape(symbol) for symbol in sorted(symbols, key=len, reverse=True)))

    def fill(text: str) -> str:
        return pattern.sub(lambda match: symbols[match.group(0)], text)

    for node in tree.iter():
        if isinstance(node.tag, str):
            for name, value in node.attrib.items():
                filled = fill(value)
                if filled != value:
                    node.set(name, filled)
            if node.text:
                node.text = fill(node.text)
        if node is not tree and node.tail:
            node.tail = fill(node.tail)


def _symbol(name: str) -> str:
    return name if name.startswith("$") else f"${name}$"


# --- tree walking ----------------------------------------------------------------------------

def _rim_elements(tree: etree._Element, names: Collection[str]) -> Iterator[etree._Element]:
    """The ebRIM (3.0 or 2.1) elements of `tree` with one of these local names."""
    for element in tree.iter():
        if not isinstance(element.tag, str):
            continue
        qname = etree.QName(element)
        if qname.namespace in RIM_NAMESPACES and qname.localname in names:
            yield element


def _texts(tree: etree._Element) -> Iterator[str]:
    """Every attribute value and text of the elements of `tree`."""
    for element in tree.iter():
        if isinstance(element.tag, str):
            yield from element.attrib.values()
            if element.text:
                yield element.text
        if element is not tree and element.tail:
            yield element.tail
