"""The NIST XDS Toolkit's rewrites of a metadata template (xds.conformance): the ebRIM 2.1 -> 3.0
translation (`to_ebrim30`) and the patient id / uniqueId / sourceId / UUID / placeholder steps
(`prepare`, `substitute`).

What is checked, on the real templates of ../shared/conformance-data (every ebRIM 2.1 file a
<RegisterTransaction> names in iti-42/nist and in the iti-18/nist fixtures 12346 and 12374, and
every file a <ProvideAndRegisterTransaction> names in iti-41/nist):

- the translation is valid by our schemas/lcm.xsd and by the public NIST/OASIS lcm.xsd, holds
  no ebRIM 2.1 element, and loses nothing: every object, slot, localized string, classification,
  external identifier, association (its type renamed) and ObjectRef of the template is there;
  a 3.0 template comes back as it was;
- templates broken on purpose stay broken: each 11998a/<attr> still lacks <attr>, and 12084's
  first document still has no repositoryUniqueId;
- prepare() puts the patient in every patientId and every $patientid$, a new plain-OID uniqueId
  on every DocumentEntry, SubmissionSet and Folder (except <NoAssignUids/>), the sourceId on
  the SubmissionSet, logs them as the toolkit does, and with assign_uuids gives every symbolic
  id a UUID and every reference the same UUID;
- then the details, on small hand-written documents: each table of the translation, the child
  order, the ids ebRIM 3.0 requires, what is refused; substitute() and placeholders().
"""

from __future__ import annotations

import collections
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lxml import etree

from xds.conformance.ebrim21 import RIM21, RS21, to_ebrim30
from xds.conformance.prepare import (
    placeholders,
    prepare,
    substitute,
    unique_id_sequence,
)
from xds.ebrim import ns

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
CONFORMANCE = ROOT.parent / "shared" / "conformance-data"
PUBLIC_SCHEMAS = CONFORMANCE / "schemas" / "xds-b"

PARSER = etree.XMLParser(resolve_entities=False, no_network=True)

LCM_SOR = f"{{{ns.LCM}}}SubmitObjectsRequest"
RS21_SOR = f"{{{RS21}}}SubmitObjectsRequest"
PNR = f"{{{ns.XDSB}}}ProvideAndRegisterDocumentSetRequest"

PATIENT = "P1001^^^&1.2.392.200119.6.102.1.1&ISO"
SOURCE_ID = "1.2.392.200119.6.102.11"
UID_ROOT = "1.2.392.200119.6.102.99.20250101"
UUID_RE = re.compile(r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PATIENT_SCHEMES = {ns.DE_PATIENT_ID, ns.SS_PATIENT_ID, ns.FOL_PATIENT_ID}
UID_SCHEMES = {ns.DE_UNIQUE_ID, ns.SS_UNIQUE_ID, ns.FOL_UNIQUE_ID}
DEFINED = {"ExtrinsicObject", "RegistryPackage", "Association", "Classification", "ExternalIdentifier"}
REFERENCES = ("id", "classifiedObject", "registryObject", "sourceObject", "targetObject")

# Written out here, not taken from the module: what ITI TF-3 4.2.2 says each 2.1 type is.
ASSOCIATION_TYPES = {
    "HasMember": "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember",
    "RPLC": "urn:ihe:iti:2007:AssociationType:RPLC",
    "APND": "urn:ihe:iti:2007:AssociationType:APND",
    "XFRM": "urn:ihe:iti:2007:AssociationType:XFRM",
    "XFRM_RPLC": "urn:ihe:iti:2007:AssociationType:XFRM_RPLC",
    "signs": "urn:ihe:iti:2007:AssociationType:signs",
}

pytestmark = pytest.mark.skipif(
    not CONFORMANCE.is_dir(),
    reason=f"the public conformance data is not at {CONFORMANCE} (see DESIGN.md, 'Test material')",
)


# --- the templates ---------------------------------------------------------------------------

@dataclass
class Template:
    path: Path
    transaction: str
    assign_uuids: bool = False
    no_assign_uids: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return str(self.path.relative_to(CONFORMANCE))

    def root(self) -> etree._Element:
        return etree.parse(str(self.path), PARSER).getroot()


def _templates() -> list[Template]:
    """The metadata files the test plans' submit steps name (a file named by several steps is
    one case; what any of them asks for, it gets)."""
    if not CONFORMANCE.is_dir():
        return []
    plans = [
        *sorted(CONFORMANCE.glob("iti-42/nist/*/*/testplan.xml")),
        *sorted(CONFORMANCE.glob("iti-18/nist/12346/*/testplan.xml")),
        *sorted(CONFORMANCE.glob("iti-18/nist/12374/*/testplan.xml")),
        *sorted(CONFORMANCE.glob("iti-41/nist/*/*/testplan.xml")),
    ]
    found: dict[Path, Template] = {}
    for plan_path in plans:
        plan = etree.parse(str(plan_path), PARSER)
        for transaction in plan.iter("RegisterTransaction", "ProvideAndRegisterTransaction"):
            metadata = transaction.find("MetadataFile")
            if metadata is None:
                continue
            path = plan_path.parent / metadata.text.strip()
            root = etree.parse(str(path), PARSER).getroot()
            if transaction.tag == "RegisterTransaction" and root.tag != RS21_SOR:
                continue  # only the ebRIM 2.1 Register templates
            template = found.setdefault(path, Template(path, transaction.tag))
            template.assign_uuids |= transaction.find("AssignUuids") is not None
            template.no_assign_uids |= {e.get("id") for e in transaction.iter("NoAssignUids")}
    return list(found.values())


TEMPLATES = _templates()
TEMPLATES_21 = [t for t in TEMPLATES if etree.parse(str(t.path), PARSER).getroot().tag == RS21_SOR]


def _cases(templates: list[Template]) -> list:
    return [pytest.param(t, id=t.name) for t in templates]


def test_the_templates_are_found():
    """The parametrised tests below run on what this finds; make sure it finds them all."""
    names = {t.name for t in TEMPLATES}
    assert len(TEMPLATES_21) >= 40
    assert "iti-42/nist/11990/submit/single_doc.xml" in names
    assert "iti-42/nist/12084/submit/two_doc.xml" in names
    assert "iti-18/nist/12374/submit_2doc_w_fol/two_doc_w_fol.xml" in names
    assert "iti-41/nist/11966/submit/single_doc.xml" in names  # 2.1 ProvideAndRegister
    assert "iti-41/nist/ReposAcceptanceTest-1113/SubmitTwoDocs/two_doc.xml" in names  # 3.0
    assert sum(t.name.startswith("iti-42/nist/11998a/") for t in TEMPLATES) == 9


# --- schemas and helpers ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def schemas() -> dict[str, etree.XMLSchema]:
    return {
        "ours": etree.XMLSchema(etree.parse(str(SCHEMAS / "lcm.xsd"), PARSER)),
        "public": etree.XMLSchema(etree.parse(str(PUBLIC_SCHEMAS / "lcm.xsd"), PARSER)),
    }


def _assert_valid(root: etree._Element, schemas: dict[str, etree.XMLSchema]) -> None:
    """The lcm:SubmitObjectsRequest of `root` (itself, or inside a ProvideAndRegister request)
    is valid by both schemas."""
    request = root if root.tag == LCM_SOR else root.find(LCM_SOR)
    assert request is not None, f"no lcm:SubmitObjectsRequest in {root.tag}"
    document = etree.fromstring(etree.tostring(request), PARSER)
    for name, schema in schemas.items():
        assert schema.validate(document), f"{name} schema: {schema.error_log}"


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname


def _elements(root: etree._Element, *names: str) -> list[etree._Element]:
    return [e for e in root.iter() if isinstance(e.tag, str) and _local(e) in names]


def _identifiers(root: etree._Element, schemes: set[str]) -> list[etree._Element]:
    return [e for e in _elements(root, "ExternalIdentifier") if e.get("identificationScheme") in schemes]


def _owner(identifier: etree._Element) -> str | None:
    return identifier.get("registryObject") or identifier.getparent().get("id")


def _values(slot: etree._Element) -> tuple[str, ...]:
    return tuple(value.text or "" for value in slot.iter("{*}Value"))


def _fingerprint(root: etree._Element) -> collections.Counter:
    """What a submission says, the same for its 2.1 and its 3.0 form: every piece of content,
    with association types in their 3.0 names and no generated ids."""
    content: collections.Counter = collections.Counter()
    for e in _elements(root, "Slot", "LocalizedString", "Classification", "ExternalIdentifier",
                       "Association", "ExtrinsicObject", "RegistryPackage", "ObjectRef"):
        kind, parent = _local(e), e.getparent()
        if kind == "Slot":
            content[kind, _local(parent), e.get("name"), _values(e)] += 1
        elif kind == "LocalizedString":
            content[kind, _local(parent.getparent()), _local(parent), e.get("value")] += 1
        elif kind == "Classification":
            content[kind, e.get("classifiedObject"), e.get("classificationScheme"),
                    e.get("classificationNode"), e.get("nodeRepresentation")] += 1
        elif kind == "ExternalIdentifier":
            content[kind, _owner(e), e.get("identificationScheme"), e.get("value")] += 1
        elif kind == "Association":
            association_type = e.get("associationType")
            if etree.QName(e).namespace == RIM21:  # the 3.0 side must say the 3.0 name itself
                association_type = ASSOCIATION_TYPES.get(association_type, association_type)
            content[kind, e.get("sourceObject"), e.get("targetObject"), association_type] += 1
        else:
            content[kind, e.get("id"), e.get("objectType"), e.get("mimeType")] += 1
    return content


def _uuid_maker():
    counter = itertools.count(1)
    return lambda: f"urn:uuid:00000000-0000-4000-8000-{next(counter):012d}"


def _prepare(root: etree._Element, template: Template | None = None, *, assign_uuids: bool = False):
    return prepare(
        root,
        patient_id=PATIENT,
        source_id=SOURCE_ID,
        new_unique_id=unique_id_sequence(UID_ROOT),
        assign_uuids=assign_uuids,
        no_assign_uids=template.no_assign_uids if template else (),
        new_uuid=_uuid_maker(),
    )


# --- translation of the real templates -------------------------------------------------------

@pytest.mark.parametrize("template", _cases(TEMPLATES))
def test_translation_is_valid_ebrs30(template: Template, schemas):
    source = template.root()
    translated = to_ebrim30(source)
    if source.tag == RS21_SOR:
        assert translated.tag == LCM_SOR
        left = {etree.QName(e).namespace for e in translated.iter() if isinstance(e.tag, str)}
        assert left == {ns.LCM, ns.RIM}
    else:  # already ebRS 3.0: passed through untouched
        assert translated is source
        assert translated.tag == PNR
    _assert_valid(translated, schemas)


@pytest.mark.parametrize("template", _cases(TEMPLATES_21))
def test_translation_keeps_all_content(template: Template):
    source = template.root()
    translated = to_ebrim30(source)
    expected = _fingerprint(source)
    assert sum(expected.values()) > 20  # the comparison is about something
    assert _fingerprint(translated) == expected
    # Every object keeps the id the template gave it (references use them).
    given = collections.Counter(e.get("id") for e in _elements(source, *DEFINED, "ObjectRef") if e.get("id"))
    kept = collections.Counter(e.get("id") for e in _elements(translated, *DEFINED, "ObjectRef"))
    assert not given - kept


@pytest.mark.parametrize("template", _cases(TEMPLATES_21))
def test_translation_makes_implied_ids_explicit(template: Template):
    """ebRIM 3.0 requires what 2.1 implied: an id on every object, the registryObject of an
    ExternalIdentifier (the object it is nested in)."""
    translated = to_ebrim30(template.root())
    objects = _elements(translated, *DEFINED)
    ids = [e.get("id") for e in objects]
    assert all(ids) and len(set(ids)) == len(ids)
    for identifier in _elements(translated, "ExternalIdentifier"):
        parent = identifier.getparent()
        if _local(parent) != "RegistryObjectList":
            assert identifier.get("registryObject") == parent.get("id")


# --- deliberate defects survive ----------------------------------------------------------------

# What each 11998a/<attr> template leaves out of its DocumentEntry.
MISSING_IN_11998A = {
    "creationTime": ("Slot", "creationTime"),
    "languageCode": ("Slot", "languageCode"),
    "sourcePatientId": ("Slot", "sourcePatientId"),
    "classCode": ("Classification", ns.DE_CLASS_CODE),
    "confidentialityCode": ("Classification", ns.DE_CONFIDENTIALITY_CODE),
    "formatCode": ("Classification", ns.DE_FORMAT_CODE),
    "healthcareFacilityTypeCode": ("Classification", ns.DE_HEALTHCARE_FACILITY_TYPE_CODE),
    "practiceSettingCode": ("Classification", ns.DE_PRACTICE_SETTING_CODE),
    "typeCode": ("Classification", ns.DE_TYPE_CODE),
}


def _count(entry: etree._Element, kind: str, key: str) -> int:
    """How many of this slot (by name) / classification (by scheme) the DocumentEntry has."""
    attribute = "name" if kind == "Slot" else "classificationScheme"
    return sum(1 for child in entry if isinstance(child.tag, str)
               and _local(child) == kind and child.get(attribute) == key)


def _document_entry(root: etree._Element, object_id: str | None = None) -> etree._Element:
    entries = [e for e in _elements(root, "ExtrinsicObject") if object_id in (None, e.get("id"))]
    assert len(entries) == 1
    return entries[0]


def test_every_11998a_template_is_covered():
    folders = {p.name for p in (CONFORMANCE / "iti-42/nist/11998a").iterdir() if p.is_dir()}
    assert folders == set(MISSING_IN_11998A)


@pytest.mark.parametrize("attribute", sorted(MISSING_IN_11998A))
def test_11998a_translation_still_lacks_the_attribute(attribute: str):
    kind, key = MISSING_IN_11998A[attribute]
    complete = to_ebrim30(etree.parse(str(CONFORMANCE / "iti-42/nist/11990/submit/single_doc.xml"),
                                      PARSER).getroot())
    broken = to_ebrim30(etree.parse(str(CONFORMANCE / f"iti-42/nist/11998a/{attribute}/single_doc.xml"),
                                    PARSER).getroot())
    prepared, _ = _prepare(broken, assign_uuids=True)
    # The complete template has it once; the broken one has it nowhere, even prepared, and
    # lacks nothing else.
    assert _count(_document_entry(complete), kind, key) == 1
    assert _count(_document_entry(broken), kind, key) == 0
    assert _count(_document_entry(prepared), kind, key) == 0
    assert len(_document_entry(broken)) == len(_document_entry(complete)) - 1


def test_12084_first_document_still_lacks_repository_unique_id():
    source = etree.parse(str(CONFORMANCE / "iti-42/nist/12084/submit/two_doc.xml"), PARSER).getroot()
    translated = to_ebrim30(source)
    prepared, log = _prepare(translated, assign_uuids=False)
    for tree in (translated, prepared):
        assert _count(_document_entry(tree, "Document01"), "Slot", "repositoryUniqueId") == 0
        assert _count(_document_entry(tree, "Document02"), "Slot", "repositoryUniqueId") == 1
    # Both documents get a uniqueId of their own (the template wrote "Document01" in both).
    assert log["AssignedUids"]["Document01"] != log["AssignedUids"]["Document02"]


# --- prepare() on the real templates ---------------------------------------------------------

@pytest.mark.parametrize("template", _cases(TEMPLATES))
def test_prepare_sets_patient_unique_and_source_ids(template: Template, schemas):
    translated = to_ebrim30(template.root())
    before = etree.tostring(translated)
    prepared, log = _prepare(translated, template)

    assert etree.tostring(translated) == before  # the input is left alone
    assert log["AssignedPatientId"] == PATIENT
    patient_ids = _identifiers(prepared, PATIENT_SCHEMES)
    assert patient_ids and all(e.get("value") == PATIENT for e in patient_ids)
    assert b"$patientid$" not in etree.tostring(prepared)

    source_ids = _identifiers(prepared, {ns.SS_SOURCE_ID})
    assert source_ids and all(e.get("value") == SOURCE_ID for e in source_ids)

    assigned: dict[str, str] = {}
    for old, new in zip(_identifiers(translated, UID_SCHEMES), _identifiers(prepared, UID_SCHEMES)):
        owner = _owner(new)
        if owner in template.no_assign_uids:
            assert new.get("value") == old.get("value")
        else:
            assert re.fullmatch(re.escape(UID_ROOT) + r"\.[1-9][0-9]*", new.get("value"))
            assigned[owner] = new.get("value")
    assert assigned and log["AssignedUids"] == assigned
    assert len(set(assigned.values())) == len(assigned)
    # Every SubmissionSet has one (every template has a SubmissionSet with a uniqueId).
    assert _identifiers(prepared, {ns.SS_UNIQUE_ID})

    # Without assign_uuids the ids are the template's.
    assert log["AssignedUuids"] == {}
    assert [e.get("id") for e in prepared.iter() if isinstance(e.tag, str)] == \
        [e.get("id") for e in translated.iter() if isinstance(e.tag, str)]
    _assert_valid(prepared, schemas)


@pytest.mark.parametrize("template", _cases(TEMPLATES))
def test_assign_uuids_rewrites_every_reference(template: Template, schemas):
    translated = to_ebrim30(template.root())
    prepared, log = _prepare(translated, template, assign_uuids=True)
    uuids = log["AssignedUuids"]

    symbolic = {e.get("id") for e in _elements(translated, *DEFINED)
                if not e.get("id").startswith("urn:uuid:")}
    assert set(uuids) == symbolic
    assert all(UUID_RE.match(u) for u in uuids.values()) and len(set(uuids.values())) == len(uuids)
    # The uniqueIds were logged under the symbolic ids, before those were replaced.
    assert set(log["AssignedUids"]) <= symbolic | {e.get("id") for e in _elements(translated, *DEFINED)}

    rewritten = 0
    for old, new in zip(translated.iter(), prepared.iter()):
        if not isinstance(old.tag, str):
            continue
        assert old.tag == new.tag
        for name in REFERENCES:
            value = old.get(name)
            if value in uuids:
                assert new.get(name) == uuids[value], f"{_local(old)}/@{name}={value}"
                rewritten += 1
            else:
                assert new.get(name) == value
    if symbolic:
        assert rewritten > len(symbolic)  # each object's own id, and references to it
    # No object of the submission is left with a symbolic id.
    assert all(e.get("id").startswith("urn:uuid:") for e in _elements(prepared, *DEFINED))
    _assert_valid(prepared, schemas)


def test_12004_resubmission_keeps_the_first_uniqueid():
    """12004: <NoAssignUids id="Document01"/> and <UseId id="Document01" symbol="$doc_uid$"
    section="AssignedUids"/> resubmit the document of step `submit` under its uniqueId."""
    folder = CONFORMANCE / "iti-42/nist/12004/submit"
    first, first_log = _prepare(to_ebrim30(etree.parse(str(folder / "single_doc.xml"), PARSER).getroot()))
    template = Template(folder / "single_doc2.xml", "RegisterTransaction", no_assign_uids={"Document01"})
    second, second_log = prepare(
        to_ebrim30(template.root()), patient_id=PATIENT, source_id=SOURCE_ID,
        new_unique_id=unique_id_sequence(UID_ROOT + ".2"), assign_uuids=False,
        no_assign_uids=template.no_assign_uids,
    )
    assert "Document01" not in second_log["AssignedUids"]
    assert placeholders(second) == {"$doc_uid$"}
    sent = substitute(second, {"$doc_uid$": first_log["AssignedUids"]["Document01"]})

    def document_uid(tree: etree._Element) -> str:
        return _identifiers(tree, {ns.DE_UNIQUE_ID})[0].get("value")

    assert document_uid(sent) == document_uid(first)
    assert second_log["AssignedUids"]["SubmissionSet01"] != first_log["AssignedUids"]["SubmissionSet01"]
    assert placeholders(sent) == set()


# --- the translation, construct by construct ---------------------------------------------------

def _v21(body: str) -> etree._Element:
    return etree.fromstring(
        f'<rs:SubmitObjectsRequest xmlns:rs="{RS21}" xmlns:rim="{RIM21}">'
        f"<rim:LeafRegistryObjectList>{body}</rim:LeafRegistryObjectList></rs:SubmitObjectsRequest>",
        PARSER,
    )


def _one(root: etree._Element, name: str) -> etree._Element:
    found = _elements(root, name)
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("short, urn", sorted(ASSOCIATION_TYPES.items()))
def test_association_types_get_their_30_names(short: str, urn: str):
    translated = to_ebrim30(_v21(
        f'<rim:Association id="a" associationType="{short}" sourceObject="x" targetObject="y"/>'))
    association = _one(translated, "Association")
    assert association.get("associationType") == urn
    assert (association.get("sourceObject"), association.get("targetObject")) == ("x", "y")


def test_a_30_association_type_and_an_unknown_one_are_kept():
    translated = to_ebrim30(_v21(
        f'<rim:Association id="a" associationType="{ASSOCIATION_TYPES["RPLC"]}" sourceObject="x" targetObject="y"/>'
        '<rim:Association id="b" associationType="Replaces" sourceObject="x" targetObject="y"/>'))
    types = [a.get("associationType") for a in _elements(translated, "Association")]
    assert types == [ASSOCIATION_TYPES["RPLC"], "Replaces"]


@pytest.mark.parametrize("status", ["Submitted", "Approved", "Deprecated", "Withdrawn"])
def test_status_gets_its_30_name(status: str):
    translated = to_ebrim30(_v21(f'<rim:ExtrinsicObject id="d" status="{status}"/>'))
    assert _one(translated, "ExtrinsicObject").get("status") == \
        f"urn:oasis:names:tc:ebxml-regrep:StatusType:{status}"


def test_object_types_by_class_name_get_their_30_names_and_uuids_stay():
    translated = to_ebrim30(_v21(
        '<rim:ExtrinsicObject id="d" objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"/>'
        '<rim:RegistryPackage id="p" objectType="RegistryPackage"/>'
        '<rim:Association id="a" objectType="Association" associationType="HasMember" '
        'sourceObject="p" targetObject="d"/>'))
    assert _one(translated, "ExtrinsicObject").get("objectType") == "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
    assert _one(translated, "RegistryPackage").get("objectType") == ns.REGISTRY_PACKAGE
    assert _one(translated, "Association").get("objectType") == ns.ASSOCIATION


def test_children_are_put_in_30_order(schemas):
    """2.1: Name, Description, Slot, Classification, ExternalIdentifier. 3.0: Slot first."""
    translated = to_ebrim30(_v21(
        '<rim:ExtrinsicObject id="d" mimeType="text/plain" majorVersion="2" minorVersion="1">'
        '<rim:Name><rim:LocalizedString xml:lang="fr-FR" charset="UTF-8" value="Titre"/></rim:Name>'
        '<rim:Description><rim:LocalizedString value="c"/></rim:Description>'
        '<rim:Slot name="creationTime"><rim:ValueList><rim:Value>20051224</rim:Value></rim:ValueList></rim:Slot>'
        '<rim:Classification classifiedObject="d" classificationScheme="urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"'
        ' nodeRepresentation="REPORTS"><rim:Name><rim:LocalizedString value="Reports"/></rim:Name>'
        '<rim:Slot name="codingScheme"><rim:ValueList><rim:Value>1.2.3</rim:Value></rim:ValueList></rim:Slot>'
        '</rim:Classification>'
        '<rim:ExternalIdentifier identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" value="1.2">'
        '<rim:Name><rim:LocalizedString value="XDSDocumentEntry.uniqueId"/></rim:Name></rim:ExternalIdentifier>'
        '<rim:Slot name="hash"><rim:ValueList><rim:Value>abc</rim:Value></rim:ValueList></rim:Slot>'
        '</rim:ExtrinsicObject>'))
    entry = _one(translated, "ExtrinsicObject")
    assert [_local(c) for c in entry] == ["Slot", "Slot", "Name", "Description", "VersionInfo",
                                          "Classification", "ExternalIdentifier"]
    assert [s.get("name") for s in entry.findall(ns.rim("Slot"))] == ["creationTime", "hash"]
    assert [_local(c) for c in _one(translated, "Classification")] == ["Slot", "Name"]
    # 2.1 majorVersion / minorVersion -> 3.0 VersionInfo; names and languages as written.
    assert entry.find(ns.rim("VersionInfo")).get("versionName") == "2.1"
    assert entry.get("majorVersion") is None and entry.get("minorVersion") is None
    title = entry.find(f"{ns.rim('Name')}/{ns.rim('LocalizedString')}")
    assert (title.get("value"), title.get("charset")) == ("Titre", "UTF-8")
    assert title.get("{http://www.w3.org/XML/1998/namespace}lang") == "fr-FR"
    assert [_values(s) for s in entry.findall(ns.rim("Slot"))] == [("20051224",), ("abc",)]
    _assert_valid(translated, schemas)


def test_attributes_without_a_30_place_are_left_out(schemas):
    translated = to_ebrim30(_v21(
        '<rim:ExtrinsicObject id="d" expiration="2030-01-01T00:00:00" stability="Static" userVersion="x"/>'))
    assert dict(_one(translated, "ExtrinsicObject").attrib) == {"id": "d"}
    assert _one(translated, "ExtrinsicObject").find(ns.rim("VersionInfo")) is None
    _assert_valid(translated, schemas)


def test_missing_ids_are_made_without_colliding():
    translated = to_ebrim30(_v21(
        '<rim:RegistryPackage id="Classification_1">'
        '<rim:ExternalIdentifier identificationScheme="urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8" value="1.2"/>'
        '</rim:RegistryPackage>'
        '<rim:Classification classifiedObject="Classification_1" '
        'classificationNode="urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"/>'
        '<rim:ExternalIdentifier identificationScheme="urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832" value="1.3"/>'))
    ids = [e.get("id") for e in _elements(translated, *DEFINED)]
    assert ids[0] == "Classification_1" and all(ids) and len(set(ids)) == len(ids)
    nested, loose = _elements(translated, "ExternalIdentifier")
    assert nested.get("registryObject") == "Classification_1"
    # A loose one names no owner in the template: that stays unsaid (the registry's error).
    assert loose.get("registryObject") is None
    assert to_ebrim30(_v21('<rim:Classification classifiedObject="x" classificationNode="y"/>')) \
        .find(f".//{ns.rim('Classification')}").get("id") == "Classification_1"


def test_a_nested_object_list_and_object_refs_are_kept(schemas):
    translated = to_ebrim30(_v21(
        '<rim:ObjectRef id="urn:uuid:10000000-0000-4000-8000-000000000001"/>'
        '<rim:RegistryPackage id="p"><rim:Name><rim:LocalizedString value="n"/></rim:Name>'
        '<rim:RegistryObjectList><rim:ObjectRef id="q"/></rim:RegistryObjectList></rim:RegistryPackage>'))
    package = _one(translated, "RegistryPackage")
    assert [_local(c) for c in package] == ["Name", "RegistryObjectList"]
    assert [r.get("id") for r in _elements(translated, "ObjectRef")] == \
        ["urn:uuid:10000000-0000-4000-8000-000000000001", "q"]
    _assert_valid(translated, schemas)


def test_comments_are_not_copied():
    translated = to_ebrim30(_v21('<!-- <rim:Slot name="x"/> --><rim:ExtrinsicObject id="d"><!-- c --></rim:ExtrinsicObject>'))
    assert not [node for node in translated.iter() if isinstance(node, etree._Comment)]


def test_a_30_document_passes_through_unchanged():
    request = etree.fromstring(f'<lcm:SubmitObjectsRequest xmlns:lcm="{ns.LCM}" xmlns:rim="{ns.RIM}">'
                               '<rim:RegistryObjectList/></lcm:SubmitObjectsRequest>', PARSER)
    before = etree.tostring(request)
    assert to_ebrim30(request) is request
    assert etree.tostring(request) == before


@pytest.mark.parametrize("document", [
    f'<rs:AdhocQueryRequest xmlns:rs="{RS21}"/>',
    f'<rs:SubmitObjectsRequest xmlns:rs="{RS21}" xmlns:rim="{RIM21}"><rim:ObjectRefList/></rs:SubmitObjectsRequest>',
    f'<rs:SubmitObjectsRequest xmlns:rs="{RS21}" xmlns:rim="{RIM21}"><rim:LeafRegistryObjectList>'
    '<rim:Organization id="o"/></rim:LeafRegistryObjectList></rs:SubmitObjectsRequest>',
    f'<rs:SubmitObjectsRequest xmlns:rs="{RS21}" xmlns:rim="{RIM21}"><rim:LeafRegistryObjectList>'
    f'<rim:ExtrinsicObject id="d"><x:Slot xmlns:x="{ns.RIM}" name="n"/></rim:ExtrinsicObject>'
    '</rim:LeafRegistryObjectList></rs:SubmitObjectsRequest>',
    '<Envelope/>',
], ids=["2.1-query", "unknown-list", "unknown-object", "mixed-versions", "not-ebrim"])
def test_what_cannot_be_translated_is_refused(document: str):
    with pytest.raises(ValueError):
        to_ebrim30(etree.fromstring(document, PARSER))


# --- prepare() and substitute(), detail by detail -----------------------------------------------

def _v30(body: str) -> etree._Element:
    return to_ebrim30(_v21(body))


SMALL = (
    '<rim:ExtrinsicObject id="Document01">'
    f'<rim:ExternalIdentifier identificationScheme="{ns.DE_UNIQUE_ID}" value="Document01"/>'
    f'<rim:ExternalIdentifier identificationScheme="{ns.DE_PATIENT_ID}" value="OLD^^^&amp;1.2&amp;ISO"/>'
    '<rim:Slot name="sourcePatientInfo"><rim:ValueList><rim:Value>PID-3|$patientid$</rim:Value></rim:ValueList></rim:Slot>'
    '</rim:ExtrinsicObject>'
    '<rim:ExtrinsicObject id="Document01"/>'  # a duplicate symbolic id
    '<rim:Association id="urn:uuid:10000000-0000-4000-8000-000000000009" associationType="RPLC" '
    'sourceObject="Document01" targetObject="$rplc_doc_uuid$"/>'
    '<rim:ObjectRef id="$rplc_doc_uuid$"/>'
)


def test_prepare_replaces_patientid_everywhere_and_keeps_ext_ids_values():
    prepared, log = _prepare(_v30(SMALL), assign_uuids=True)
    assert _identifiers(prepared, {ns.DE_PATIENT_ID})[0].get("value") == PATIENT
    assert _one(prepared, "Value").text == f"PID-3|{PATIENT}"
    # The uniqueId's value equalled the symbolic id; it is a value, not a reference.
    assert _identifiers(prepared, {ns.DE_UNIQUE_ID})[0].get("value") == log["AssignedUids"]["Document01"]
    # One UUID for the duplicate id; the template's UUID and the placeholder are not touched.
    entries = _elements(prepared, "ExtrinsicObject")
    assert entries[0].get("id") == entries[1].get("id") == log["AssignedUuids"]["Document01"]
    association = _one(prepared, "Association")
    assert association.get("id") == "urn:uuid:10000000-0000-4000-8000-000000000009"
    assert association.get("sourceObject") == log["AssignedUuids"]["Document01"]
    assert association.get("targetObject") == "$rplc_doc_uuid$"
    assert _one(prepared, "ObjectRef").get("id") == "$rplc_doc_uuid$"
    assert "$rplc_doc_uuid$" not in log["AssignedUuids"]


def test_prepare_works_on_a_21_tree_too():
    prepared, log = _prepare(_v21(SMALL), assign_uuids=True)
    assert _identifiers(prepared, {ns.DE_PATIENT_ID})[0].get("value") == PATIENT
    assert set(log["AssignedUids"]) == {"Document01"}
    assert _one(prepared, "Association").get("sourceObject") == log["AssignedUuids"]["Document01"]


@pytest.mark.parametrize("bad", ["1.2.3^ext", "abc", "1.02.3", "1." + "2" * 70])
def test_prepare_refuses_a_uniqueid_that_is_not_a_plain_oid(bad: str):
    with pytest.raises(ValueError, match="plain OID"):
        prepare(_v30(SMALL), patient_id=PATIENT, source_id=SOURCE_ID,
                new_unique_id=lambda: bad, assign_uuids=False)


def test_prepare_refuses_a_uuid_maker_that_makes_no_uuid():
    with pytest.raises(ValueError, match="urn:uuid"):
        prepare(_v30(SMALL), patient_id=PATIENT, source_id=SOURCE_ID,
                new_unique_id=unique_id_sequence(UID_ROOT), assign_uuids=True, new_uuid=lambda: "Doc")


def test_prepare_makes_random_uuids_by_default():
    _, first = prepare(_v30(SMALL), patient_id=PATIENT, source_id=SOURCE_ID,
                       new_unique_id=unique_id_sequence(UID_ROOT), assign_uuids=True)
    _, second = prepare(_v30(SMALL), patient_id=PATIENT, source_id=SOURCE_ID,
                        new_unique_id=unique_id_sequence(UID_ROOT), assign_uuids=True)
    assert UUID_RE.match(first["AssignedUuids"]["Document01"])
    assert first["AssignedUuids"]["Document01"] != second["AssignedUuids"]["Document01"]


def test_unique_id_sequence():
    make = unique_id_sequence("1.2.3")
    assert [make(), make(), make()] == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
    with pytest.raises(ValueError):
        unique_id_sequence("1.2.3^x")


def test_substitute_fills_attributes_and_text_once():
    root = etree.fromstring(
        '<a x="$ssuid$" y="pre-$doc$-post" z="$unknown$">$doc$<b>$Folder01</b> $ssuid$ tail</a>', PARSER)
    before = etree.tostring(root)
    filled = substitute(root, {"$ssuid$": "1.2.3", "doc": "$ssuid$", "$Folder01": "urn:uuid:f"})
    assert etree.tostring(root) == before  # the input is left alone
    assert filled.get("x") == "1.2.3"
    assert filled.get("y") == "pre-$ssuid$-post"  # a filled-in value is not filled again
    assert filled.get("z") == "$unknown$"
    assert filled.text == "$ssuid$"
    assert filled[0].text == "urn:uuid:f"
    assert filled[0].tail == " 1.2.3 tail"
    assert placeholders(filled) == {"$unknown$", "$ssuid$"}
    assert placeholders(root) == {"$ssuid$", "$doc$", "$unknown$"}


def test_substitute_with_nothing_to_fill_copies():
    root = etree.fromstring("<a>$x$</a>", PARSER)
    copy = substitute(root, {})
    assert copy is not root and copy.text == "$x$"


def test_substitute_as_written_replaces_bare_symbols():
    """The toolkit's Linkage replaces a symbol exactly as the plan writes it (15801's bare
    Document01); the default keeps the `name` -> `$name$` shorthand."""
    root = etree.fromstring("<a v=\"('Document01')\">$Document01$ Document01</a>", PARSER)
    assert substitute(root, {"Document01": "urn:uuid:x"}).text == "urn:uuid:x Document01"
    written = substitute(root, {"Document01": "urn:uuid:x"}, as_written=True)
    assert written.get("v") == "('urn:uuid:x')" and written.text == "$urn:uuid:x$ urn:uuid:x"


def test_no_uniqueids_and_the_source_ids_logged():
    """<NoAssignUids/> without an id keeps every uniqueId; the sourceIds set are logged as the
    toolkit's AssignedSourceId (by SubmissionSet id)."""
    template = _v30(SMALL + (
        '<rim:RegistryPackage id="SubmissionSet01">'
        f'<rim:ExternalIdentifier identificationScheme="{ns.SS_UNIQUE_ID}" value="1.2.4"/>'
        f'<rim:ExternalIdentifier identificationScheme="{ns.SS_SOURCE_ID}" value="1.2.5"/></rim:RegistryPackage>'))
    prepared, log = prepare(template, patient_id=PATIENT, source_id=SOURCE_ID, new_unique_id=unique_id_sequence(UID_ROOT),
                            assign_uuids=False, assign_uids=False)
    assert log["AssignedUids"] == {}
    assert [e.get("value") for e in _identifiers(prepared, UID_SCHEMES)] == ["Document01", "1.2.4"]
    assert log["AssignedSourceId"] == {"SubmissionSet01": SOURCE_ID}
    assert _identifiers(prepared, {ns.SS_SOURCE_ID})[0].get("value") == SOURCE_ID
