"""xds.registry.codes: the affinity domain's codes, read from the NIST toolkit's codes.xml."""


import pytest
from lxml import etree

from tests.data import CONFORMANCE
from xds.model import Code
from xds.registry.codes import CodeSet

# ../shared/conformance-data beside the project checkout (DESIGN.md, "Test material")
NIST_CODES = CONFORMANCE / "config" / "nist-codes.xml"


@pytest.fixture(scope="module")
def nist() -> CodeSet:
    if not NIST_CODES.exists():
        pytest.skip(f"{NIST_CODES} is missing: the shared conformance data is not beside the checkout")
    return CodeSet.from_nist_xml(NIST_CODES)


@pytest.mark.parametrize(
    ("attribute", "code", "scheme"),
    [
        ("classCode", "REPORTS", "1.3.6.1.4.1.19376.1.2.6.1"),
        ("typeCode", "34133-9", "2.16.840.1.113883.6.1"),
        ("formatCode", "urn:ihe:iti:xds-sd:pdf:2008", "1.3.6.1.4.1.19376.1.2.3"),
        ("healthcareFacilityTypeCode", "22232009", "2.16.840.1.113883.6.96"),
        ("practiceSettingCode", "Practice-A", "1.3.6.1.4.1.21367.2017.3"),
        ("confidentialityCode", "N", "2.16.840.1.113883.5.25"),
        ("eventCodeList", "urn:connectathon:bppc:foundational:policy", "1.3.6.1.4.1.21367.2017.3"),
        ("contentTypeCode", "UNSPECIFIED-CONTENT-TYPE", "1.3.6.1.4.1.21367.2017.3"),
        ("folderCodeList", "Referrals", "1.3.6.1.4.1.21367.2017.3"),
    ],
)
def test_known_codes_are_allowed(nist, attribute, code, scheme):
    assert nist.allows(attribute, Code(code, scheme))


def test_display_name_is_not_compared(nist):
    assert nist.allows("confidentialityCode", Code("N", "2.16.840.1.113883.5.25", "Normal (any wording)"))


@pytest.mark.parametrize(
    ("attribute", "code", "scheme"),
    [
        ("classCode", "MADE-UP-CLASS", "1.3.6.1.4.1.19376.1.2.6.1"),
        ("typeCode", "34133-9", "9.9.9"),  # a known code under another coding scheme
        ("confidentialityCode", "n", "2.16.840.1.113883.5.25"),  # codes are case sensitive
        ("formatCode", "", ""),
        ("folderCodeList", "Allergy_Treatments", "2.16.840.1.113883.6.1"),
    ],
)
def test_unknown_codes_are_refused(nist, attribute, code, scheme):
    assert not nist.allows(attribute, Code(code, scheme))


def test_a_code_of_one_attribute_is_not_allowed_for_another(nist):
    # 22232009 (Hospital) is a healthcareFacilityTypeCode, not a classCode
    assert nist.allows("healthcareFacilityTypeCode", Code("22232009", "2.16.840.1.113883.6.96"))
    assert not nist.allows("classCode", Code("22232009", "2.16.840.1.113883.6.96"))


def test_an_attribute_the_file_does_not_list_is_unrestricted(nist):
    assert "authorRole" not in nist.attributes
    assert nist.allows("authorRole", Code("anything", "1.2.3"))


def test_the_file_lists_the_coded_attributes(nist):
    assert {"classCode", "typeCode", "formatCode", "healthcareFacilityTypeCode", "practiceSettingCode",
            "confidentialityCode", "eventCodeList", "contentTypeCode", "folderCodeList"} <= nist.attributes
    assert "mimeType" not in nist.attributes  # MIME types are kept apart: they have no scheme


@pytest.mark.parametrize("mime", ["text/xml", "application/pdf", "application/fhir+json", "TEXT/XML",
                                  "text/plain; charset=UTF-8"])
def test_known_mime_types_are_allowed(nist, mime):
    assert nist.allows_mime_type(mime)


@pytest.mark.parametrize("mime", ["application/x-made-up", "text/html", "image/bmp"])
def test_unknown_mime_types_are_refused(nist, mime):
    assert not nist.allows_mime_type(mime)


def test_a_code_set_without_mime_types_allows_any():
    codes = CodeSet({"classCode": [("A", "1.2.3")]})
    assert codes.allows_mime_type("application/x-anything")
    assert codes.allows("classCode", Code("A", "1.2.3"))
    assert not codes.allows("classCode", Code("B", "1.2.3"))
    assert codes.allows("typeCode", Code("B", "1.2.3"))


def test_an_empty_code_set_allows_everything():
    codes = CodeSet()
    assert codes.allows("classCode", Code("whatever", "1.2"))
    assert codes.allows_mime_type("x/y")


def test_reading_does_not_resolve_entities(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET")
    path = tmp_path / "codes.xml"
    path.write_text(
        f'<?xml version="1.0"?><!DOCTYPE Codes [<!ENTITY x SYSTEM "file://{secret}">]>'
        '<Codes><CodeType name="classCode"><Code code="&x;" codingScheme="1.2"/></CodeType></Codes>'
    )
    try:
        codes = CodeSet.from_nist_xml(path)
    except etree.XMLSyntaxError:
        return  # lxml refuses the external entity outright: as good
    assert not codes.allows("classCode", Code("SECRET", "1.2"))
