"""Our WSDLs (wsdl/) and XML Schemas (schemas/) against the public ones, and zeep against ours.

What is checked:

- every ebRS 3.0 / XDS.b message in the conformance data is judged alike by the public
  NIST/OASIS schemas and by ours (so every sample the public schemas accept, ours accept);
  a few messages written here (responses, of which the data has almost none) are accepted by
  both, and broken variants (a wrong element, a missing required attribute ...) by neither;
- every declaration in our schemas says what the public schema says: the same names,
  namespaces, types, defaults and cardinalities. Our schemas leave parts of ebRIM out; they
  add nothing but two named types for IHE's inline DocumentRequest / DocumentResponse;
- the WSDLs name the same messages, operations, actions, binding, port and service as IPF's;
- zeep builds clients from the WSDLs served over HTTP the way the server serves them
  (GET /registry?wsdl, GET /schemas/<file>), speaks SOAP 1.2, adds the WS-Addressing action
  from wsaw:Action by itself, and its requests are valid by our schemas.

The public material is read from ../shared/conformance-data (see DESIGN.md, "Test material");
tests that need it skip when it is missing.
"""

from __future__ import annotations

import http.server
import math
import re
import threading
from pathlib import Path

import pytest
from lxml import etree

from tests.data import sample_message, standalone

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
WSDLS = ROOT / "wsdl"
CONFORMANCE = ROOT.parent / "shared" / "conformance-data"
PUBLIC_SCHEMAS = CONFORMANCE / "schemas" / "xds-b"
IPF_WSDLS = CONFORMANCE / "schemas" / "wsdl" / "xds-b"

XS = "http://www.w3.org/2001/XMLSchema"
XML_NS = "http://www.w3.org/XML/1998/namespace"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"
RMD = "urn:ihe:iti:rmd:2017"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
XOP = "http://www.w3.org/2004/08/xop/include"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP12 = "http://schemas.xmlsoap.org/wsdl/soap12/"
NS = {"rim": RIM, "rs": RS, "lcm": LCM, "query": QUERY, "xdsb": XDSB, "xs": XS, "wsdl": WSDL,
      "wsoap12": WSDL_SOAP12, "s": SOAP12, "wsa": WSA}

# The top-level elements of XDS.b messages live in these namespaces (rim only inside them).
MESSAGE_NAMESPACES = {LCM, QUERY, RS, XDSB, RMD}
# Which file of a schema folder declares which namespace; the same names in both folders.
SCHEMA_FILES = {LCM: "lcm.xsd", QUERY: "query.xsd", RS: "rs.xsd", XDSB: "XDS.b_DocumentRepository.xsd",
                RMD: "rmd.xsd"}

PARSER = etree.XMLParser(resolve_entities=False, no_network=True)

SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"

needs_conformance_data = pytest.mark.skipif(
    not PUBLIC_SCHEMAS.is_dir(),
    reason=f"the public conformance data is not at {CONFORMANCE} (see DESIGN.md, 'Test material')",
)


# --- schemas and messages ------------------------------------------------------------------

def _schema(folder: Path) -> etree.XMLSchema:
    """One XMLSchema for the four message namespaces of the XSD files in `folder`."""
    imports = "".join(f'<xs:import namespace="{ns}" schemaLocation="{(folder / name).as_uri()}"/>'
                      for ns, name in SCHEMA_FILES.items())
    return etree.XMLSchema(etree.fromstring(f'<xs:schema xmlns:xs="{XS}">{imports}</xs:schema>', PARSER))


@pytest.fixture(scope="module")
def ours() -> etree.XMLSchema:
    return _schema(SCHEMAS)


@pytest.fixture(scope="module")
def public() -> etree.XMLSchema:
    if not PUBLIC_SCHEMAS.is_dir():
        pytest.skip(f"the public schemas are not at {PUBLIC_SCHEMAS} (see DESIGN.md, 'Test material')")
    return _schema(PUBLIC_SCHEMAS)


def _samples() -> list[str]:
    """Every file of the conformance data whose message is an ebRS 3.0 / XDS.b message."""
    if not CONFORMANCE.is_dir():
        return []
    found = []
    pattern = re.compile(rb"urn:oasis:names:tc:ebxml-regrep:xsd:[a-z]+:3\.0|urn:ihe:iti:xds-b:2007")
    for path in sorted(CONFORMANCE.rglob("*")):
        relative = path.relative_to(CONFORMANCE).as_posix()
        if not path.is_file() or relative.startswith("schemas/") or not pattern.search(path.read_bytes()):
            continue
        try:
            message = sample_message(path)
        except ValueError:
            continue  # text that only mentions the namespaces
        except etree.XMLSyntaxError:
            found.append(relative)  # the test case shows the error
            continue
        if etree.QName(message).namespace in MESSAGE_NAMESPACES:
            found.append(relative)
    return found


SAMPLES = _samples()


def _verdict(schema: etree.XMLSchema, message: etree._Element) -> str:
    """'valid', or the first error."""
    if schema.validate(standalone(message)):
        return "valid"
    return f"invalid: {schema.error_log.filter_from_errors()[0].message}"


@needs_conformance_data
def test_the_samples_are_found():
    # 98 in the data this was written with: NIST stored queries, ITI-41/42/43 requests, the
    # IPF and ehealthsuisse messages. A much smaller number means the discovery broke.
    assert len(SAMPLES) >= 90, SAMPLES


@pytest.mark.parametrize("sample", SAMPLES)
def test_sample_is_judged_alike(sample, public, ours):
    message = sample_message(CONFORMANCE / sample)
    public_verdict, our_verdict = _verdict(public, message), _verdict(ours, message)
    if public_verdict == "valid":
        assert our_verdict == "valid", f"the public schemas accept {sample}, ours do not"
    else:
        assert our_verdict != "valid", f"the public schemas reject {sample} ({public_verdict}), ours accept it"


# --- messages written here: responses and open content ---------------------------------------

def _ipf_leaf_class_response() -> etree._Element:
    """An ITI-18 LeafClass answer: the objects of IPF's SubmitObjectsRequest, each with the
    status a registry gives it."""
    submit = sample_message(CONFORMANCE / "iti-42/ipf/SubmitObjectsRequest_ebrs30.xml")
    objects = submit.find(f"{{{RIM}}}RegistryObjectList")
    for obj in objects:
        obj.set("status", "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved")
    response = etree.Element(f"{{{QUERY}}}AdhocQueryResponse", status=SUCCESS, nsmap={"query": QUERY})
    response.append(objects)
    return response


def _xml(text: str):
    return lambda: etree.fromstring(text, PARSER)


_NSDECL = f'xmlns:rs="{RS}" xmlns:rim="{RIM}" xmlns:query="{QUERY}" xmlns:lcm="{LCM}" xmlns:xdsb="{XDSB}"'

WRITTEN = {
    "RegistryResponse-Failure": _xml(f"""
        <rs:RegistryResponse {_NSDECL} status="{FAILURE}" requestId="urn:uuid:1">
          <rs:RegistryErrorList highestSeverity="{ERROR}">
            <rs:RegistryError errorCode="XDSRegistryMetadataError" codeContext="no SubmissionSet"
                              location="SubmitObjectsRequest" severity="{ERROR}"/>
            <rs:RegistryError errorCode="XDSExtraMetadataNotSaved" codeContext="slot x ignored"
                severity="urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning">detail</rs:RegistryError>
          </rs:RegistryErrorList>
        </rs:RegistryResponse>"""),
    "AdhocQueryResponse-ObjectRef": _xml(f"""
        <query:AdhocQueryResponse {_NSDECL} status="{SUCCESS}" totalResultCount="2">
          <rim:RegistryObjectList>
            <rim:ObjectRef id="urn:uuid:7d2a4e6e-0dfa-4c4d-8f42-1c2bd7b3e1a0"/>
            <rim:ObjectRef id="urn:uuid:0b1e6f2c-5f4e-4c1e-9d33-2b3c4d5e6f70" home="urn:oid:1.2.3"/>
          </rim:RegistryObjectList>
        </query:AdhocQueryResponse>"""),
    "AdhocQueryResponse-Failure": _xml(f"""
        <query:AdhocQueryResponse {_NSDECL} status="{FAILURE}">
          <rs:RegistryErrorList highestSeverity="{ERROR}">
            <rs:RegistryError errorCode="XDSStoredQueryParamNumber" codeContext="missing $XDSDocumentEntryPatientId"/>
          </rs:RegistryErrorList>
          <rim:RegistryObjectList/>
        </query:AdhocQueryResponse>"""),
    "AdhocQueryResponse-LeafClass": _ipf_leaf_class_response,
    "RetrieveDocumentSetResponse-PartialSuccess": _xml(f"""
        <xdsb:RetrieveDocumentSetResponse {_NSDECL}>
          <rs:RegistryResponse status="{PARTIAL}">
            <rs:RegistryErrorList>
              <rs:RegistryError errorCode="XDSDocumentUniqueIdError" codeContext="1.2.3.5 unknown"
                                location="1.2.3.5"/>
            </rs:RegistryErrorList>
          </rs:RegistryResponse>
          <xdsb:DocumentResponse>
            <xdsb:HomeCommunityId>urn:oid:1.2.3</xdsb:HomeCommunityId>
            <xdsb:RepositoryUniqueId>1.2.3.1</xdsb:RepositoryUniqueId>
            <xdsb:DocumentUniqueId>1.2.3.4</xdsb:DocumentUniqueId>
            <xdsb:mimeType>text/plain</xdsb:mimeType>
            <xdsb:Document>aGVsbG8=</xdsb:Document>
          </xdsb:DocumentResponse>
        </xdsb:RetrieveDocumentSetResponse>"""),
    "RemoveObjectsRequest": _xml(f"""
        <lcm:RemoveObjectsRequest {_NSDECL}>
          <rim:ObjectRefList>
            <rim:ObjectRef id="urn:uuid:7d2a4e6e-0dfa-4c4d-8f42-1c2bd7b3e1a0"/>
          </rim:ObjectRefList>
        </lcm:RemoveObjectsRequest>"""),
    # rim:QueryExpression is the one place where ebRIM takes any markup (of another namespace).
    "AdhocQueryRequest-QueryExpression": _xml(f"""
        <query:AdhocQueryRequest {_NSDECL} maxResults="10">
          <query:ResponseOption returnType="ObjectRef"/>
          <rim:AdhocQuery id="urn:uuid:5b7f3e1a-9c2d-4e8f-a1b0-c3d4e5f6a7b8">
            <rim:QueryExpression queryLanguage="urn:example:ql">find <q:all xmlns:q="urn:example:q"/></rim:QueryExpression>
          </rim:AdhocQuery>
        </query:AdhocQueryRequest>"""),
}


@needs_conformance_data
@pytest.mark.parametrize("name", WRITTEN)
def test_written_message_is_valid_by_both(name, public, ours):
    message = WRITTEN[name]()
    assert _verdict(public, message) == "valid"
    assert _verdict(ours, message) == "valid"


# --- broken variants: rejected by both -----------------------------------------------------

def _edit(xpath: str, change):
    def apply(message: etree._Element) -> None:
        found = message.xpath(xpath, namespaces=NS)
        assert found, f"{xpath} matches nothing: the variant would not be broken"
        change(found[0])
    return apply


def _drop(element):
    element.getparent().remove(element)


def _unset(attribute):
    return lambda element: element.attrib.pop(attribute)


def _set(attribute, value):
    return lambda element: element.set(attribute, value)


def _rename(tag):
    return lambda element: setattr(element, "tag", tag)


def _text(value):
    return lambda element: setattr(element, "text", value)


def _to_end(element):
    element.getparent().append(element)


def _empty(element):
    for child in list(element):
        element.remove(child)


def _unwrap(element):
    element.getparent().replace(element, element[0])


SUBMIT = "iti-42/ipf/SubmitObjectsRequest_ebrs30.xml"
QUERY_SAMPLE = "iti-18/ipf/iti18request.xml"
RETRIEVE = "iti-43/nist/15816/Retrieve/normal_query.xml"
PNR = "iti-41/nist/PnrXop/NoXop/body.txt"  # the document inline, in base64
RESPONSE = "iti-41/ehealthsuisse/ITI-41_response_raw.xml"

BROKEN = {
    # wrong elements
    "SubmitObjectsRequest-without-RegistryObjectList": (SUBMIT, _edit("rim:RegistryObjectList", _drop)),
    "misspelt-ExtrinsicObject": (SUBMIT, _edit("//rim:ExtrinsicObject", _rename(f"{{{RIM}}}ExtrinsicObjct"))),
    "ebRIM-2.1-LeafRegistryObjectList": (SUBMIT, _edit("rim:RegistryObjectList", _rename(f"{{{RIM}}}LeafRegistryObjectList"))),
    "Value-outside-ValueList": (SUBMIT, _edit("//rim:Slot/rim:ValueList", _unwrap)),
    "Name-after-ExternalIdentifier": (SUBMIT, _edit("//rim:ExtrinsicObject/rim:Name", _to_end)),
    "AdhocQueryRequest-without-ResponseOption": (QUERY_SAMPLE, _edit("query:ResponseOption", _drop)),
    "AdhocQuery-in-query-namespace": (QUERY_SAMPLE, _edit("rim:AdhocQuery", _rename(f"{{{QUERY}}}AdhocQuery"))),
    "DocumentRequest-without-DocumentUniqueId": (RETRIEVE, _edit("//xdsb:DocumentUniqueId", _drop)),
    "DocumentUniqueId-before-RepositoryUniqueId": (RETRIEVE, _edit("//xdsb:RepositoryUniqueId", _to_end)),
    "RetrieveDocumentSetRequest-without-DocumentRequest": (RETRIEVE, _edit("xdsb:DocumentRequest", _drop)),
    "Document-before-SubmitObjectsRequest": (PNR, _edit("lcm:SubmitObjectsRequest", _to_end)),
    "RegistryErrorList-without-RegistryError": ("RegistryResponse-Failure", _edit("//rs:RegistryErrorList", _empty)),
    "RegistryObjectList-missing-in-AdhocQueryResponse": ("AdhocQueryResponse-Failure", _edit("rim:RegistryObjectList", _drop)),
    # missing required attributes
    "ExtrinsicObject-without-id": (SUBMIT, _edit("//rim:ExtrinsicObject", _unset("id"))),
    "Classification-without-classifiedObject": (SUBMIT, _edit("//rim:Classification", _unset("classifiedObject"))),
    "ExternalIdentifier-without-value": (SUBMIT, _edit("//rim:ExternalIdentifier", _unset("value"))),
    "Association-without-associationType": (SUBMIT, _edit("//rim:Association", _unset("associationType"))),
    "Slot-without-name": (SUBMIT, _edit("//rim:Slot", _unset("name"))),
    "LocalizedString-without-value": (SUBMIT, _edit("//rim:LocalizedString", _unset("value"))),
    "AdhocQuery-without-id": (QUERY_SAMPLE, _edit("rim:AdhocQuery", _unset("id"))),
    "Document-without-id": (PNR, _edit("xdsb:Document", _unset("id"))),
    "RegistryResponse-without-status": (RESPONSE, _edit(".", _unset("status"))),
    "RegistryError-without-errorCode": ("RegistryResponse-Failure", _edit("//rs:RegistryError", _unset("errorCode"))),
    "RegistryError-without-codeContext": ("RegistryResponse-Failure", _edit("//rs:RegistryError", _unset("codeContext"))),
    # wrong values
    "isOpaque-not-boolean": (SUBMIT, _edit("//rim:ExtrinsicObject", _set("isOpaque", "perhaps"))),
    "Value-longer-than-LongName": (SUBMIT, _edit("(//rim:Value)[1]", _text("x" * 257))),
    "xml-lang-not-a-language": (SUBMIT, _edit("//rim:LocalizedString", _set(f"{{{XML_NS}}}lang", "en us!"))),
    "unknown-returnType": (QUERY_SAMPLE, _edit("query:ResponseOption", _set("returnType", "Everything"))),
    "Document-not-base64": (PNR, _edit("xdsb:Document", _text("not base64!"))),
    "unknown-attribute": (SUBMIT, _edit("//rim:RegistryPackage", _set("patientId", "x"))),
}


@needs_conformance_data
@pytest.mark.parametrize("name", BROKEN)
def test_broken_variant_is_rejected_by_both(name, public, ours):
    source, change = BROKEN[name]
    message = WRITTEN[source]() if source in WRITTEN else sample_message(CONFORMANCE / source)
    assert _verdict(public, message) == "valid", "the variant must start from a valid message"
    change(message)
    assert _verdict(public, message).startswith("invalid")
    assert _verdict(ours, message).startswith("invalid")


@needs_conformance_data
def test_empty_xml_lang_is_valid_by_both(public, ours):
    """xml:lang="" undeclares the language: our one-attribute xml.xsd allows it as W3C's does."""
    message = sample_message(CONFORMANCE / SUBMIT)
    message.xpath("//rim:LocalizedString", namespaces=NS)[0].set(f"{{{XML_NS}}}lang", "")
    assert _verdict(public, message) == _verdict(ours, message) == "valid"


# --- declarations: ours say what the public schemas say ---------------------------------------

# Named types of ours that IHE writes inline (the elements using them are compared instead).
OUR_ADDITIONS = {("complexType", f"{{{XDSB}}}DocumentRequestType"),
                 ("complexType", f"{{{XDSB}}}DocumentResponseType")}
# Ours differ from the public copy on purpose: IHE's RMD schema and the peers' ITI-86 WSDLs take
# several DocumentRequests in a RemoveDocumentsRequest, NIST's copy one (tests/test_repository_remove.py
# checks that both accept one and only ours several).
DELIBERATELY_DIFFERENT = {("element", f"{{{RMD}}}RemoveDocumentsRequest"),
                          ("complexType", f"{{{RMD}}}RemoveDocumentsRequestType")}


def _children(node):
    """Child elements only: no comments, no processing instructions."""
    return node.iterchildren(etree.Element)


class Declarations:
    """The global declarations of a set of XSD files, described so that two sets can be
    compared by what they mean: particles flattened with their effective occurrence, named
    simple types by name, complex types of local and global elements expanded, attributes
    unordered, annotations ignored."""

    KINDS = ("element", "complexType", "simpleType", "attribute", "attributeGroup", "group")

    def __init__(self, files):
        self.nodes: dict[tuple[str, str], etree._Element] = {}
        self.element_form: dict[str, str] = {}
        for path in files:
            root = etree.parse(str(path), PARSER).getroot()
            namespace = root.get("targetNamespace")
            self.element_form[namespace] = root.get("elementFormDefault", "unqualified")
            for node in _children(root):
                if etree.QName(node).localname in self.KINDS:
                    self.nodes[(etree.QName(node).localname, etree.QName(namespace, node.get("name")).text)] = node

    @staticmethod
    def _qname(node, value):
        prefix, _, local = value.rpartition(":")
        return etree.QName(node.nsmap.get(prefix or None), local).text

    def describe(self, key):
        kind, _ = key
        node = self.nodes[key]
        if kind == "element":
            return self._element(node, 1, 1)
        if kind == "complexType":
            return self._complex(node)
        if kind == "simpleType":
            return self._simple(node)
        if kind == "attribute":
            return self._attribute(node)
        raise AssertionError(f"{key}: {kind} is not used by our schemas")

    def _element(self, node, low, high):
        if node.get("ref"):
            return ("ref", self._qname(node, node.get("ref")), low, high)
        flags = tuple(sorted((name, node.get(name)) for name in ("abstract", "nillable", "default", "fixed")
                             if node.get(name) is not None))
        group = node.get("substitutionGroup")
        return ("element", node.get("name"), low, high, flags,
                group and self._qname(node, group), self._type_of(node))

    def _type_of(self, node):
        inline = [c for c in _children(node) if etree.QName(c).localname in ("complexType", "simpleType")]
        if inline:
            return self._complex(inline[0]) if etree.QName(inline[0]).localname == "complexType" \
                else self._simple(inline[0])
        name = self._qname(node, node.get("type")) if node.get("type") else f"{{{XS}}}anyType"
        named = self.nodes.get(("complexType", name))
        return self._complex(named) if named is not None else name

    def _complex(self, node):
        mixed = node.get("mixed") == "true"
        abstract = node.get("abstract") == "true"
        content = [c for c in _children(node) if etree.QName(c).localname in ("complexContent", "simpleContent")]
        if content:
            derivation = next(c for c in _children(content[0])
                              if etree.QName(c).localname in ("extension", "restriction"))
            head = (etree.QName(content[0]).localname, etree.QName(derivation).localname,
                    self._qname(derivation, derivation.get("base")))
            node = derivation
        else:
            head = ()
        return ("complexType", mixed, abstract, head, tuple(self._particles(node, 1, 1)),
                frozenset(self._attributes(node)))

    def _particles(self, node, low, high):
        for child in _children(node):
            kind = etree.QName(child).localname
            c_low = int(child.get("minOccurs", "1"))
            c_high = math.inf if child.get("maxOccurs") == "unbounded" else int(child.get("maxOccurs", "1"))
            if kind == "sequence":
                yield from self._particles(child, low * c_low, high * c_high)
            elif kind in ("choice", "all"):
                yield (kind, low * c_low, high * c_high, tuple(self._particles(child, 1, 1)))
            elif kind == "element":
                yield self._element(child, low * c_low, high * c_high)
            elif kind == "any":
                yield ("any", child.get("namespace", "##any"), child.get("processContents", "strict"),
                       low * c_low, high * c_high)

    def _attributes(self, node):
        for child in _children(node):
            kind = etree.QName(child).localname
            if kind == "attribute":
                yield self._attribute(child)
            elif kind == "anyAttribute":
                yield ("anyAttribute", child.get("namespace", "##any"), child.get("processContents", "strict"))

    def _attribute(self, node):
        name = self._qname(node, node.get("ref")) if node.get("ref") else node.get("name")
        inline = node.find(f"{{{XS}}}simpleType")
        if inline is not None:
            kind = self._simple(inline)
        elif node.get("type"):
            kind = self._qname(node, node.get("type"))
        else:
            kind = None if node.get("ref") else f"{{{XS}}}anySimpleType"
        return ("attribute", name, kind, node.get("use", "optional"), node.get("default"), node.get("fixed"))

    def _simple(self, node):
        for child in _children(node):
            kind = etree.QName(child).localname
            if kind == "restriction":
                facets = frozenset((etree.QName(f).localname, f.get("value")) for f in _children(child)
                                   if etree.QName(f).localname != "annotation")
                return ("restriction", self._qname(child, child.get("base")), facets)
            if kind == "union":
                members = frozenset(self._qname(child, m) for m in child.get("memberTypes", "").split())
                return ("union", members, frozenset(self._simple(s) for s in child.findall(f"{{{XS}}}simpleType")))
            if kind == "list":
                return ("list", self._qname(child, child.get("itemType")))
        raise AssertionError(f"unexpected simple type at line {node.sourceline}")


@needs_conformance_data
def test_our_declarations_match_the_public_schemas():
    # hl7v3-messages.xsd is no copy of a public schema: it declares the PIX/PDQ messages with
    # open content, their schemas being HL7's (tests/test_identity_http.py builds clients on it).
    mine = Declarations(sorted(p for p in SCHEMAS.glob("*.xsd") if p.name != "hl7v3-messages.xsd"))
    theirs = Declarations(PUBLIC_SCHEMAS / name for name in ("rim.xsd", *SCHEMA_FILES.values()))
    assert {ns: mine.element_form[ns] for ns in theirs.element_form} == theirs.element_form
    compared, differences = 0, []
    for key in sorted(mine.nodes):
        namespace = etree.QName(key[1]).namespace
        if namespace == XML_NS or key in OUR_ADDITIONS or key in DELIBERATELY_DIFFERENT:
            continue  # xml:lang is checked by the samples and the xml:lang tests
        if key not in theirs.nodes:
            differences.append(f"{key}: not in the public schemas")
            continue
        compared += 1
        if mine.describe(key) != theirs.describe(key):
            differences.append(f"{key}:\n  ours:   {mine.describe(key)}\n  public: {theirs.describe(key)}")
    assert differences == [], "\n".join(differences)
    needed = {("element", f"{{{ns}}}{name}") for ns, names in {
        LCM: ["SubmitObjectsRequest", "RemoveObjectsRequest"],
        QUERY: ["AdhocQueryRequest", "AdhocQueryResponse", "ResponseOption"],
        RS: ["RegistryResponse", "RegistryErrorList", "RegistryError"],
        RIM: ["RegistryObjectList", "Identifiable", "ExtrinsicObject", "RegistryPackage", "Association",
              "Classification", "ExternalIdentifier", "ObjectRef", "AdhocQuery", "Slot", "ValueList",
              "Value", "Name", "Description", "LocalizedString", "ObjectRefList"],
        XDSB: ["ProvideAndRegisterDocumentSetRequest", "RetrieveDocumentSetRequest",
               "RetrieveDocumentSetResponse", "DocumentRequest"],
    }.items() for name in names}
    assert needed <= set(mine.nodes), needed - set(mine.nodes)
    assert compared > 50


def test_each_schema_compiles_and_imports_by_file_name():
    """The server serves schemas/ flat at /schemas/<file>: imports must be plain file names
    of this folder, and each file must compile with what it imports."""
    for path in sorted(SCHEMAS.glob("*.xsd")):
        etree.XMLSchema(etree.parse(str(path), PARSER))
        for imported in etree.parse(str(path), PARSER).iterfind(f"{{{XS}}}import"):
            location = imported.get("schemaLocation")
            assert "/" not in location and (SCHEMAS / location).is_file(), (path.name, location)


# --- the WSDLs -------------------------------------------------------------------------------

def _wsdl_facts(paths):
    """What a client relies on: per operation its messages' elements and actions, and the
    names of portType, binding, port and service."""
    facts = {"operations": {}, "names": set()}
    for path in paths:
        doc = etree.parse(str(path), PARSER).getroot()
        assert doc.tag == f"{{{WSDL}}}definitions" and doc.get("targetNamespace") == XDSB
        messages = {m.get("name"): Declarations._qname(part, part.get("element"))
                    for m in doc.iterfind("wsdl:message", NS) for part in m.iterfind("wsdl:part", NS)}

        def action(node):
            # IPF writes wsam:Action (WS-Addressing Metadata), we write wsaw:Action (WS-Addressing
            # WSDL Binding); zeep reads both
            return node.get("{http://www.w3.org/2007/05/addressing/metadata}Action") or \
                node.get("{http://www.w3.org/2006/05/addressing/wsdl}Action")

        for port_type in doc.iterfind("wsdl:portType", NS):
            facts["names"].add(("portType", port_type.get("name")))
            for op in port_type.iterfind("wsdl:operation", NS):
                put, out = op.find("wsdl:input", NS), op.find("wsdl:output", NS)
                facts["operations"][op.get("name")] = (
                    messages[put.get("message").split(":")[-1]], action(put),
                    messages[out.get("message").split(":")[-1]], action(out))
        for binding in doc.iterfind("wsdl:binding", NS):
            style = binding.find("wsoap12:binding", NS)
            facts["names"].add(("binding", binding.get("name"), binding.get("type").split(":")[-1],
                                style.get("style"), style.get("transport")))
            for op in binding.iterfind("wsdl:operation", NS):
                assert op.get("name") in facts["operations"]
                for direction in ("wsdl:input", "wsdl:output"):
                    assert op.find(f"{direction}/wsoap12:body", NS).get("use") == "literal"
        for service in doc.iterfind("wsdl:service", NS):
            for port in service.iterfind("wsdl:port", NS):
                assert port.find("wsoap12:address", NS) is not None
                facts["names"].add(("service", service.get("name"), port.get("name"),
                                    port.get("binding").split(":")[-1]))
    return facts


@needs_conformance_data
@pytest.mark.parametrize("ours_name, ipf_names", [
    ("XDS.b_DocumentRegistry.wsdl", ["iti42.wsdl", "iti18.wsdl"]),
    ("XDS.b_DocumentRepository.wsdl", ["iti41.wsdl", "iti43.wsdl"]),
])
def test_wsdl_names_what_ipf_names(ours_name, ipf_names):
    mine = _wsdl_facts([WSDLS / ours_name])
    theirs = _wsdl_facts([IPF_WSDLS / name for name in ipf_names])
    # The RMD and MPQ operations, whose public WSDLs are not in the shared data: as
    # RMD_OPERATIONS, MPQ_OPERATIONS and MU_OPERATIONS say.
    others = {**RMD_OPERATIONS, **MPQ_OPERATIONS, **MU_OPERATIONS}
    rmd = {name: mine["operations"].pop(name) for name in list(mine["operations"]) if name in others}
    assert mine == theirs
    actor = ours_name.removeprefix("XDS.b_").removesuffix(".wsdl")
    assert rmd == {name: facts for name, facts in others.items() if name.startswith(actor + "_")}


# Multi-Patient Stored Query (ITI-51) as IPF's Iti51PortType names it (operation
# DocumentRegistry_MultiPatientStoredQuery) and the NIST toolkit its actions.
MPQ_OPERATIONS = {
    "DocumentRegistry_MultiPatientStoredQuery": (
        f"{{{QUERY}}}AdhocQueryRequest", "urn:ihe:iti:2009:MultiPatientStoredQuery",
        f"{{{QUERY}}}AdhocQueryResponse", "urn:ihe:iti:2009:MultiPatientStoredQueryResponse"),
}


# Update Document Set (ITI-57, XDS Metadata Update) as IHE's XDS.b_DocumentRegistry WSDL of the
# option names it (operation DocumentRegistry_UpdateDocumentSet) and the NIST toolkit its actions.
MU_OPERATIONS = {
    "DocumentRegistry_UpdateDocumentSet": (
        f"{{{LCM}}}SubmitObjectsRequest", "urn:ihe:iti:2010:UpdateDocumentSet",
        f"{{{RS}}}RegistryResponse", "urn:ihe:iti:2010:UpdateDocumentSetResponse"),
}


# The operations of Remove Metadata and Documents as IPF's iti62.wsdl and the NIST toolkit's ITI-86
# WSDL name them: request element and action, response element and action.
RMD_OPERATIONS = {
    "DocumentRegistry_DeleteDocumentSet": (
        f"{{{LCM}}}RemoveObjectsRequest", "urn:ihe:iti:2010:DeleteDocumentSet",
        f"{{{RS}}}RegistryResponse", "urn:ihe:iti:2010:DeleteDocumentSetResponse"),
    "DocumentRepository_RemoveDocuments": (
        f"{{{RMD}}}RemoveDocumentsRequest", "urn:ihe:iti:2017:RemoveDocuments",
        f"{{{RS}}}RegistryResponse", "urn:ihe:iti:2017:RemoveDocumentsResponse"),
}


@pytest.mark.parametrize("name", ["XDS.b_DocumentRegistry.wsdl", "XDS.b_DocumentRepository.wsdl"])
def test_wsdl_imports_schemas_relative_to_its_endpoint(name):
    doc = etree.parse(str(WSDLS / name), PARSER).getroot()
    locations = [i.get("schemaLocation") for i in doc.iterfind("wsdl:types/xs:schema/xs:import", NS)]
    assert locations
    for location in locations:
        folder, _, file_name = location.partition("/")
        assert folder == "schemas" and (SCHEMAS / file_name).is_file(), location
    binding = doc.find("wsdl:binding", NS)
    assert binding.find("{http://www.w3.org/2006/05/addressing/wsdl}UsingAddressing") is not None
    mtom = binding.find(".//{http://schemas.xmlsoap.org/ws/2004/09/policy/optimizedmimeserialization}"
                        "OptimizedMimeSerialization")
    assert (mtom is not None) == ("Repository" in name)


# --- zeep against the WSDLs, served as the server serves them ----------------------------------

def _envelope(action: str, relates_to: str, body: str) -> bytes:
    return (f'<s:Envelope xmlns:s="{SOAP12}" xmlns:wsa="{WSA}"><s:Header>'
            f'<wsa:Action s:mustUnderstand="true">{action}</wsa:Action>'
            f'<wsa:RelatesTo>{relates_to}</wsa:RelatesTo></s:Header>'
            f'<s:Body>{body}</s:Body></s:Envelope>').encode()


# operation -> (endpoint, request element, action, zeep arguments, response action, response body)
OPERATIONS = {
    "DocumentRegistry_RegisterDocumentSet-b": (
        "registry", f"{{{LCM}}}SubmitObjectsRequest", "urn:ihe:iti:2007:RegisterDocumentSet-b",
        {"RegistryObjectList": {}},
        "urn:ihe:iti:2007:RegisterDocumentSet-bResponse",
        f'<rs:RegistryResponse xmlns:rs="{RS}" status="{SUCCESS}"/>'),
    "DocumentRegistry_RegistryStoredQuery": (
        "registry", f"{{{QUERY}}}AdhocQueryRequest", "urn:ihe:iti:2007:RegistryStoredQuery",
        {"ResponseOption": {"returnType": "LeafClass", "returnComposedObjects": True},
         "AdhocQuery": {"id": FIND_DOCUMENTS, "Slot": [
             {"name": "$XDSDocumentEntryPatientId", "ValueList": {"Value": ["'P1^^^&1.2.3&ISO'"]}},
             {"name": "$XDSDocumentEntryStatus",
              "ValueList": {"Value": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]}}]}},
        "urn:ihe:iti:2007:RegistryStoredQueryResponse",
        f'<query:AdhocQueryResponse xmlns:query="{QUERY}" xmlns:rim="{RIM}" status="{SUCCESS}">'
        f'<rim:RegistryObjectList/></query:AdhocQueryResponse>'),
    "DocumentRepository_ProvideAndRegisterDocumentSet-b": (
        "repository", f"{{{XDSB}}}ProvideAndRegisterDocumentSetRequest",
        "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b",
        {"SubmitObjectsRequest": {"RegistryObjectList": {}},
         "Document": [{"_value_1": b"hello", "id": "Document01"}]},
        "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse",
        f'<rs:RegistryResponse xmlns:rs="{RS}" status="{SUCCESS}"/>'),
    "DocumentRepository_RetrieveDocumentSet": (
        "repository", f"{{{XDSB}}}RetrieveDocumentSetRequest", "urn:ihe:iti:2007:RetrieveDocumentSet",
        {"DocumentRequest": [{"RepositoryUniqueId": "1.2.3.1", "DocumentUniqueId": "1.2.3.4"}]},
        "urn:ihe:iti:2007:RetrieveDocumentSetResponse",
        f'<xdsb:RetrieveDocumentSetResponse xmlns:xdsb="{XDSB}" xmlns:rs="{RS}">'
        f'<rs:RegistryResponse status="{SUCCESS}"/><xdsb:DocumentResponse>'
        f'<xdsb:RepositoryUniqueId>1.2.3.1</xdsb:RepositoryUniqueId>'
        f'<xdsb:DocumentUniqueId>1.2.3.4</xdsb:DocumentUniqueId>'
        f'<xdsb:mimeType>text/plain</xdsb:mimeType><xdsb:Document>aGVsbG8=</xdsb:Document>'
        f'</xdsb:DocumentResponse></xdsb:RetrieveDocumentSetResponse>'),
    "DocumentRegistry_DeleteDocumentSet": (
        "registry", f"{{{LCM}}}RemoveObjectsRequest", "urn:ihe:iti:2010:DeleteDocumentSet",
        {"ObjectRefList": {"ObjectRef": [{"id": "urn:uuid:7d2a4e6e-0dfa-4c4d-8f42-1c2bd7b3e1a0"}]}},
        "urn:ihe:iti:2010:DeleteDocumentSetResponse",
        f'<rs:RegistryResponse xmlns:rs="{RS}" status="{SUCCESS}"/>'),
    "DocumentRepository_RemoveDocuments": (
        "repository", f"{{{RMD}}}RemoveDocumentsRequest", "urn:ihe:iti:2017:RemoveDocuments",
        {"DocumentRequest": [{"RepositoryUniqueId": "1.2.3.1", "DocumentUniqueId": "1.2.3.4"},
                             {"RepositoryUniqueId": "1.2.3.1", "DocumentUniqueId": "1.2.3.5"}]},
        "urn:ihe:iti:2017:RemoveDocumentsResponse",
        f'<rs:RegistryResponse xmlns:rs="{RS}" status="{SUCCESS}"/>'),
    "DocumentRegistry_UpdateDocumentSet": (
        "registry", f"{{{LCM}}}SubmitObjectsRequest", "urn:ihe:iti:2010:UpdateDocumentSet",
        {"RegistryObjectList": {}},
        "urn:ihe:iti:2010:UpdateDocumentSetResponse",
        f'<rs:RegistryResponse xmlns:rs="{RS}" status="{SUCCESS}"/>'),
    "DocumentRegistry_MultiPatientStoredQuery": (
        "registry", f"{{{QUERY}}}AdhocQueryRequest", "urn:ihe:iti:2009:MultiPatientStoredQuery",
        {"ResponseOption": {"returnType": "ObjectRef", "returnComposedObjects": True},
         "AdhocQuery": {"id": "urn:uuid:3d1bdb10-39a2-11de-89c2-2f44d94eaa9f", "Slot": [
             {"name": "$XDSDocumentEntryPatientId", "ValueList": {"Value": ["('P1^^^&1.2.3&ISO','P2^^^&1.2.3&ISO')"]}},
             {"name": "$XDSDocumentEntryStatus",
              "ValueList": {"Value": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]}}]}},
        "urn:ihe:iti:2009:MultiPatientStoredQueryResponse",
        f'<query:AdhocQueryResponse xmlns:query="{QUERY}" xmlns:rim="{RIM}" status="{SUCCESS}">'
        f'<rim:RegistryObjectList/></query:AdhocQueryResponse>'),
}
ENDPOINTS = {
    "registry": ("XDS.b_DocumentRegistry.wsdl", f"{{{XDSB}}}DocumentRegistry_Binding_Soap12"),
    "repository": ("XDS.b_DocumentRepository.wsdl", f"{{{XDSB}}}DocumentRepository_Binding_Soap12"),
}


class _Server:
    """A tiny HTTP server: GET /registry?wsdl, /repository?wsdl and /schemas/<file> as the real
    server serves them; POST /registry and /repository record the request and answer the
    canned response of its wsa:Action."""

    def __init__(self):
        self.requests: list[tuple[str, dict, bytes]] = []
        self.gets: list[tuple[str, int]] = []
        recorder = self
        responses = {op[2]: (op[4], op[5]) for op in OPERATIONS.values()}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path, _, query = self.path.partition("?")
                name = path.lstrip("/")
                if query == "wsdl" and name in ENDPOINTS:
                    file = WSDLS / ENDPOINTS[name][0]
                elif path.startswith("/schemas/") and "/" not in path[len("/schemas/"):]:
                    file = SCHEMAS / path[len("/schemas/"):]
                else:
                    file = None
                if file is None or not file.is_file():
                    recorder.gets.append((self.path, 404))
                    self.send_error(404)
                    return
                recorder.gets.append((self.path, 200))
                self._send(200, "text/xml; charset=UTF-8", file.read_bytes())

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                recorder.requests.append((self.path, dict(self.headers), body))
                envelope = etree.fromstring(body, PARSER)
                action = envelope.findtext("s:Header/wsa:Action", namespaces=NS)
                message_id = envelope.findtext("s:Header/wsa:MessageID", namespaces=NS)
                if action not in responses:
                    self._send(500, "text/plain", b"unknown action")
                    return
                reply_action, reply = responses[action]
                self._send(200, "application/soap+xml; charset=UTF-8", _envelope(reply_action, message_id, reply))

            def _send(self, status, content_type, body):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def logsample_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def server():
    with _Server() as running:
        yield running


@pytest.fixture(scope="module")
def clients(server):
    zeep = pytest.importorskip("zeep")
    import requests

    session = requests.Session()
    session.trust_env = False  # never send 127.0.0.1 through a proxy from the environment
    built = {name: zeep.Client(f"{server.base}/{name}?wsdl", transport=zeep.Transport(session=session))
             for name in ENDPOINTS}
    return built


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_zeep_builds_a_soap12_client_from_the_served_wsdl(endpoint, server, clients):
    from zeep.wsdl.bindings import Soap12Binding

    client = clients[endpoint]
    assert [code for path, code in server.gets if code != 200] == []
    assert f"/{endpoint}?wsdl" in [path for path, _ in server.gets]
    service_name = {"registry": "DocumentRegistry_Service", "repository": "DocumentRepository_Service"}[endpoint]
    service = client.wsdl.services[service_name]
    port = service.ports[f"{service_name.removesuffix('_Service')}_Port_Soap12"]
    assert isinstance(port.binding, Soap12Binding)
    assert port.binding.name.text == ENDPOINTS[endpoint][1]
    expected = {name for name, op in OPERATIONS.items() if op[0] == endpoint}
    assert set(port.binding.all()) == expected


@pytest.mark.parametrize("operation", OPERATIONS)
def test_zeep_message_has_the_action_and_a_valid_body(operation, clients, ours):
    endpoint, element, action, arguments, _, _ = OPERATIONS[operation]
    client = clients[endpoint]
    envelope = client.create_message(client.service, operation, **arguments)
    assert envelope.tag == f"{{{SOAP12}}}Envelope"
    # zeep adds WS-Addressing from wsaw:Action by itself: exactly one Action, no plugin needed
    assert envelope.xpath("s:Header/wsa:Action/text()", namespaces=NS) == [action]
    assert len(envelope.xpath("s:Header/wsa:MessageID", namespaces=NS)) == 1
    body = envelope.find("s:Body", NS)
    assert len(body) == 1 and body[0].tag == element
    assert _verdict(ours, body[0]) == "valid"


@pytest.mark.parametrize("operation", OPERATIONS)
def test_zeep_calls_the_endpoint_it_is_given(operation, server, clients):
    endpoint, element, action, arguments, _, _ = OPERATIONS[operation]
    client = clients[endpoint]
    address = f"{server.base}/{endpoint}"
    service = client.create_service(ENDPOINTS[endpoint][1], address)
    before = len(server.requests)
    response = service[operation](**arguments)
    path, headers, body = server.requests[before]
    assert path == f"/{endpoint}"
    content_type = headers["Content-Type"]
    assert content_type.startswith("application/soap+xml") and f'action="{action}"' in content_type
    envelope = etree.fromstring(body, PARSER)
    assert envelope.findtext("s:Header/wsa:Action", namespaces=NS) == action
    assert envelope.findtext("s:Header/wsa:To", namespaces=NS) == address
    assert envelope.find("s:Body", NS)[0].tag == element
    if operation == "DocumentRepository_RetrieveDocumentSet":
        assert response.RegistryResponse.status == SUCCESS
        assert response.DocumentResponse[0].Document == b"hello"
    else:
        assert response.status == SUCCESS
