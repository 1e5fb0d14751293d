"""ebRIM 2.1 -> ebRIM 3.0: the translation the NIST XDS Toolkit makes when a test plan says <XDSb/>.

What belongs here: the structural differences between the two versions of ebRIM, for the
constructs the NIST testkit templates use (a SubmitObjectsRequest of ExtrinsicObjects,
RegistryPackages, Associations, Classifications, ExternalIdentifiers and ObjectRefs, with their
Slots, Names and Descriptions). The tables below hold every renamed element and every renamed
attribute value; code is only for what does not fit a table (child order, missing ids).

What does not: the other rewrites of the toolkit (patient ids, uniqueIds, UUIDs, placeholders:
`xds.conformance.prepare`), and any judgement of the metadata. A template that is broken on
purpose (a missing slot, classification or attribute) stays broken: nothing is added that the
template did not say, except what ebRIM 3.0 makes explicit where 2.1 left it implied (an id on
every object, the registryObject of a nested ExternalIdentifier).

Theory of operation. One walk over the 2.1 tree builds a new 3.0 tree:
1. rs:SubmitObjectsRequest becomes lcm:SubmitObjectsRequest, rim:LeafRegistryObjectList
   becomes rim:RegistryObjectList; ObjectRefs are kept (ebRIM 3.0 allows them in the list, and
   they name objects of earlier steps such as the document an RPLC replaces).
2. Each registry object keeps its attributes; association types, status and object type
   values are renamed through the tables; 2.1-only attributes become VersionInfo or go.
3. Its children are sorted into the 3.0 order: ebRIM 2.1 puts Name, Description before Slot,
   ebRIM 3.0 (IdentifiableType) puts Slot first, then Name, Description, VersionInfo,
   Classification, ExternalIdentifier, then ContentVersionInfo (ExtrinsicObject) or
   RegistryObjectList (RegistryPackage).
4. Slot, ValueList, Value, Name, Description and LocalizedString have the same shape in both
   versions and are copied with the 3.0 namespace. Comments are not copied (several templates
   hold their deliberate defect as commented-out XML; the defect is the absence, not the comment).

A document that is already ebRS 3.0 (lcm, query, rs or xds-b namespace at the root) is returned
as it is.
"""

from __future__ import annotations

from collections.abc import Iterator

from lxml import etree

from xds.ebrim import ns
from xds.model import AssociationType

RS21 = "urn:oasis:names:tc:ebxml-regrep:registry:xsd:2.1"
RIM21 = "urn:oasis:names:tc:ebxml-regrep:rim:xsd:2.1"
SUBMIT_OBJECTS_REQUEST_21 = f"{{{RS21}}}SubmitObjectsRequest"
SUBMIT_OBJECTS_REQUEST_30 = f"{{{ns.LCM}}}SubmitObjectsRequest"

# Roots in these namespaces are ebRS 3.0 / XDS.b messages already: nothing to translate.
EBRS30_NAMESPACES = frozenset({ns.LCM, ns.QUERY, ns.RS, ns.RIM, ns.XDSB})

# The list element of a 2.1 SubmitObjectsRequest (RegistryObjectList is the 2.1 name inside a
# RegistryPackage); both become rim:RegistryObjectList.
OBJECT_LISTS = frozenset({"LeafRegistryObjectList", "RegistryObjectList"})

# Registry objects: same element name, same attribute names in both versions.
REGISTRY_OBJECTS = frozenset(
    {"ExtrinsicObject", "RegistryPackage", "Association", "Classification", "ExternalIdentifier"}
)

# Elements of the same shape in both versions: copied, namespace changed.
SAME_SHAPE = frozenset({"Slot", "ValueList", "Value", "Name", "Description", "LocalizedString"})

# The children a 2.1 registry object may hold, by kind, in the order ebRIM 3.0 wants them.
# VersionInfo is made from attributes (see `_version_info`), never copied.
CHILD_ORDER_30 = (
    "Slot",
    "Name",
    "Description",
    "VersionInfo",
    "Classification",
    "ExternalIdentifier",
    "ContentVersionInfo",
    "RegistryObjectList",
)
CHILDREN_21 = {
    "ExtrinsicObject": frozenset({"Name", "Description", "Slot", "Classification", "ExternalIdentifier"}),
    "RegistryPackage": frozenset(
        {"Name", "Description", "Slot", "Classification", "ExternalIdentifier", "RegistryObjectList"}
    ),
    "Association": frozenset({"Name", "Description", "Slot", "Classification", "ExternalIdentifier"}),
    "Classification": frozenset({"Name", "Description", "Slot", "Classification", "ExternalIdentifier"}),
    "ExternalIdentifier": frozenset({"Name", "Description", "Slot", "Classification", "ExternalIdentifier"}),
}

# ebRIM 2.1 association types (rim.xsd 2.1, AssociationType1 enumeration) are the short names
# of the ebRIM 3.0 / ITI TF-3 4.2.2 ones. HasMember is ebRIM's own; the document relationships are IHE's.
ASSOCIATION_TYPES = {t.short_name: t.value for t in AssociationType if t is not AssociationType.IS_SNAPSHOT_OF}

# ebRIM 2.1 RegistryEntry status enumeration -> ebRIM 3.0 StatusType classification nodes.
STATUS_TYPES = {
    name: f"urn:oasis:names:tc:ebxml-regrep:StatusType:{name}"
    for name in ("Submitted", "Approved", "Deprecated", "Withdrawn")
}

# ebRIM 2.1 names object types by class name; ebRIM 3.0 by ObjectType classification node.
# Values already written as 3.0 URNs or as XDS UUIDs (most templates) pass unchanged.
OBJECT_TYPES = {
    name: f"urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:{name}"
    for name in ("ExtrinsicObject", "RegistryPackage", "Association", "Classification",
                 "ExternalIdentifier")
}

# Attribute values renamed, by attribute name. A value not in its table is copied as written:
# a template that sends a wrong type keeps sending it.
VALUE_MAPS = {"associationType": ASSOCIATION_TYPES, "status": STATUS_TYPES, "objectType": OBJECT_TYPES}

# 2.1 RegistryEntry attributes that ebRIM 3.0 moved into rim:VersionInfo.
VERSION_ATTRIBUTES = ("majorVersion", "minorVersion")
# 2.1 RegistryEntry attributes that ebRIM 3.0 has no place for on a RegistryObject (and that
# XDS never gave a meaning); they are left out rather than making the document invalid.
DROPPED_ATTRIBUTES = frozenset({"expiration", "stability", "userVersion"})


def to_ebrim30(root: etree._Element) -> etree._Element:
    """The ebRIM 3.0 lcm:SubmitObjectsRequest for an ebRIM 2.1 rs:SubmitObjectsRequest.

    A root that is already ebRS 3.0 is returned itself, unchanged. Anything else raises
    ValueError: a harness must not send something it could not translate.
    """
    if etree.QName(root).namespace in EBRS30_NAMESPACES:
        return root
    if root.tag != SUBMIT_OBJECTS_REQUEST_21:
        raise ValueError(f"not an ebRIM 2.1 SubmitObjectsRequest nor an ebRS 3.0 message: {root.tag}")
    ids = _IdAllocator(root)
    request = etree.Element(SUBMIT_OBJECTS_REQUEST_30, nsmap={"lcm": ns.LCM, "rim": ns.RIM})
    for child in _rim_children(root):
        if _local(child) not in OBJECT_LISTS:
            raise ValueError(f"unexpected element in a 2.1 SubmitObjectsRequest: {child.tag}")
        _object_list(child, request, ids)
    return request


class _IdAllocator:
    """Ids for the objects ebRIM 2.1 let go without one (ebRIM 3.0 IdentifiableType requires
    one). They are symbolic ids: the registry, or `prepare(assign_uuids=True)`, turns them into
    UUIDs like any other. Deterministic, so a translation can be compared with another."""

    def __init__(self, root: etree._Element) -> None:
        self._taken = {e.get("id") for e in root.iter(etree.Element) if e.get("id") is not None}
        self._count = 0

    def new(self, kind: str) -> str:
        while True:
            self._count += 1
            candidate = f"{kind}_{self._count}"
            if candidate not in self._taken:
                self._taken.add(candidate)
                return candidate


def _object_list(source: etree._Element, parent: etree._Element, ids: _IdAllocator) -> None:
    """rim:LeafRegistryObjectList / RegistryObjectList (2.1) -> rim:RegistryObjectList (3.0)."""
    target = etree.SubElement(parent, ns.rim("RegistryObjectList"))
    for child in _rim_children(source):
        kind = _local(child)
        if kind == "ObjectRef":
            etree.SubElement(target, ns.rim("ObjectRef"), dict(child.attrib))
        elif kind in REGISTRY_OBJECTS:
            _registry_object(child, target, ids, owner=None)
        else:
            raise ValueError(f"unexpected element in a 2.1 object list: {child.tag}")


def _registry_object(
    source: etree._Element, parent: etree._Element, ids: _IdAllocator, owner: str | None
) -> None:
    """One ExtrinsicObject, RegistryPackage, Association, Classification or ExternalIdentifier,
    with its children in the 3.0 order. `owner` is the id of the object it is nested in."""
    kind = _local(source)
    attributes = _attributes_30(source)
    if "id" not in attributes:
        attributes = {"id": ids.new(kind), **attributes}
    target = etree.SubElement(parent, ns.rim(kind), attributes)
    if kind == "ExternalIdentifier" and target.get("registryObject") is None and owner is not None:
        # 2.1 made registryObject optional (the parent says it); 3.0 requires it.
        target.set("registryObject", owner)

    buckets: dict[str, list[etree._Element]] = {name: [] for name in CHILD_ORDER_30}
    for child in _rim_children(source):
        name = _local(child)
        if name not in CHILDREN_21[kind]:
            raise ValueError(f"unexpected element in a 2.1 {kind}: {child.tag}")
        buckets[name].append(child)

    for name in CHILD_ORDER_30:
        if name == "VersionInfo":
            _version_info(source, target)
        for child in buckets[name]:
            if name in SAME_SHAPE:
                _copy_same_shape(child, target)
            elif name == "RegistryObjectList":
                _object_list(child, target, ids)
            else:
                _registry_object(child, target, ids, owner=target.get("id"))


def _attributes_30(source: etree._Element) -> dict[str, str]:
    """The attributes of a 2.1 registry object, values renamed for 3.0, 2.1-only ones left out."""
    attributes: dict[str, str] = {}
    for name, value in source.attrib.items():
        if name in DROPPED_ATTRIBUTES or name in VERSION_ATTRIBUTES:
            continue
        attributes[name] = VALUE_MAPS.get(name, {}).get(value, value)
    return attributes


def _version_info(source: etree._Element, target: etree._Element) -> None:
    """2.1 majorVersion / minorVersion -> 3.0 rim:VersionInfo versionName "major.minor", only
    when the template wrote either (their 2.1 defaults, 1 and 0, say nothing)."""
    major, minor = (source.get(name) for name in VERSION_ATTRIBUTES)
    if major is None and minor is None:
        return
    etree.SubElement(target, ns.rim("VersionInfo"), versionName=f"{major or 1}.{minor or 0}")


def _copy_same_shape(source: etree._Element, parent: etree._Element) -> None:
    """Copy Slot / ValueList / Value / Name / Description / LocalizedString into the 3.0
    namespace. Attributes (name, slotType, value, xml:lang, charset) are copied as written.
    Text is kept only in leaves (a Value's text is data; the indentation of a ValueList is not)."""
    kind = _local(source)
    if kind not in SAME_SHAPE:
        raise ValueError(f"unexpected element in a 2.1 {_local(parent)}: {source.tag}")
    target = etree.SubElement(parent, ns.rim(kind), dict(source.attrib))
    children = list(_rim_children(source))
    if not children:
        target.text = source.text
    for child in children:
        _copy_same_shape(child, target)


def _rim_children(element: etree._Element) -> Iterator[etree._Element]:
    """The element children (comments and processing instructions skipped), all of which must
    be ebRIM 2.1: a template that mixes versions is not one the toolkit could send either."""
    for child in element:
        if not isinstance(child.tag, str):
            continue
        if etree.QName(child).namespace != RIM21:
            raise ValueError(f"not an ebRIM 2.1 element inside a 2.1 document: {child.tag}")
        yield child


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname
