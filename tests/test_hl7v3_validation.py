"""Checking HL7 V3 messages against the public rules: the NE2008 schemas and the PIXv3/PDQv3
Schematron in ../shared/conformance-data/schemas/ (the other test_hl7v3_* files use
`assert_valid` from here on everything the project writes).

The Schematron files are written for XSLT 2 engines; lxml runs ISO Schematron through XSLT 1.
What that means, and how each file is run here:

- gazelle-pixpdqv3.sch.xml (the Gazelle rules, one phase per message) uses three XPath 2
  constructs: matches() (14 times, for ISO OIDs), the value comparison `eq` (2 times, "exactly
  one subject"), and Schematron 1.5's pattern/@name, which lxml's ISO schema check refuses. An
  in-memory copy (the file itself is never changed or copied into the project) replaces
  matches(x, re) with EXSLT regexp:test(x, re) (lxml implements it with Python's re; the
  patterns are ^...$ anchored, so test() and matches() agree), `eq` with `=` (the operands are
  single numbers) and drops the name attributes. Every assert of every phase then runs; the
  "-warnings" patterns (moodCode RQO, CP-ITI-455) belong to no phase and are not run (they
  contradict the NE2008 schema, which fixes moodCode EVN).
- iti47/PRPA_IN201305UV02.sch.xml and PRPA_IN201306UV02.sch.xml (IPF's ITI-47 rules) extend
  ../generic.sch.xml, which is not in the data, for the abstract pattern "check-type"
  (resolve-QName, XPath 2); the response file also uses `ge`. Here "check-type" is written
  again in XPath 1 (the xsi:type's prefix resolves to urn:hl7-org:v3 and its local name is the
  type), `ge` becomes `>=`, and lxml's ISO abstract-pattern expansion does the rest. The request
  rules are IPF's own profile: they forbid mothersMaidenName and patientTelecom, which ITI TF-2
  3.47.4.1.2 allows (Pediatric Demographics option); they are run on the public query samples
  only, as a calibration, never on what the project accepts.
"""

from __future__ import annotations

import copy
import re
import statistics
import time
from functools import lru_cache
from pathlib import Path

import pytest
from lxml import etree, isoschematron

from xds.hl7v3.schemas import SCHEMA_FILES, MessageSchemas

ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE = ROOT.parent / "shared" / "conformance-data"
NE2008 = CONFORMANCE / "schemas" / "hl7v3" / "NE2008"
SCHEMATRON = CONFORMANCE / "schemas" / "hl7v3-schematron"
GAZELLE = SCHEMATRON / "gazelle-pixpdqv3.sch.xml"
SCH = "http://purl.oclc.org/dsdl/schematron"
SVRL = "http://purl.oclc.org/dsdl/svrl"
V3 = "urn:hl7-org:v3"
SOAP = "http://www.w3.org/2003/05/soap-envelope"
PARSER = etree.XMLParser(resolve_entities=False, no_network=True)

needs_data = pytest.mark.skipif(not NE2008.is_dir() or not GAZELLE.is_file(),
                                reason=f"the public HL7 V3 schemas and Schematron are not at {CONFORMANCE / 'schemas'}")

# Our XPath 1 version of IPF's abstract pattern (its generic.sch.xml is not in the data).
CHECK_TYPE = f"""<sch:pattern xmlns:sch="{SCH}" abstract="true" id="check-type">
  <sch:rule context="$element">
    <sch:assert test="(contains(@xsi:type, ':') and substring-after(@xsi:type, ':') = '$type'
                        and namespace::*[local-name() = substring-before(current()/@xsi:type, ':')] = '{V3}')
                      or (not(contains(@xsi:type, ':')) and @xsi:type = '$type'
                        and namespace::*[local-name() = ''] = '{V3}')">value must be of data type $type</sch:assert>
  </sch:rule>
</sch:pattern>"""


@lru_cache(maxsize=1)
def schemas() -> MessageSchemas:
    return MessageSchemas(NE2008)


def gazelle_xpath1(text: str) -> str:
    """The Gazelle file with its XPath 2 made XPath 1 + EXSLT (see the module's docstring)."""
    text = re.sub(r"\bmatches\(", "regexp:test(", text)
    return re.sub(r"\s+eq\s+", " = ", text)


@lru_cache(maxsize=None)
def gazelle(phase: str) -> isoschematron.Schematron:
    document = etree.fromstring(gazelle_xpath1(GAZELLE.read_text(encoding="utf-8")).encode(), PARSER)
    for pattern in document.iter(f"{{{SCH}}}pattern"):
        pattern.attrib.pop("name", None)
    first_ns = document.find(f"{{{SCH}}}ns")
    first_ns.addnext(etree.Element(f"{{{SCH}}}ns", prefix="regexp", uri="http://exslt.org/regular-expressions"))
    return isoschematron.Schematron(document, phase=phase, store_report=True)


@lru_cache(maxsize=None)
def ipf_iti47(name: str) -> isoschematron.Schematron:
    text = (SCHEMATRON / "iti47" / f"{name}.sch.xml").read_text(encoding="utf-8")
    document = etree.fromstring(re.sub(r"\s+ge\s+", " >= ", text).encode(), PARSER)
    for extends in document.findall(f"{{{SCH}}}extends"):
        document.remove(extends)
    document.find(f"{{{SCH}}}ns[last()]").addnext(etree.fromstring(CHECK_TYPE))
    return isoschematron.Schematron(document, store_report=True)


def failures(schematron: isoschematron.Schematron, message: etree._Element) -> list[str]:
    """The failed asserts' texts ([] when the message passes)."""
    document = etree.ElementTree(copy.deepcopy(message))  # rules are written from the message's root
    if schematron.validate(document):
        return []
    report = schematron.validation_report
    return [" ".join(t.text.split()) for t in report.iter(f"{{{SVRL}}}text")
            if t.getparent().tag == f"{{{SVRL}}}failed-assert"]


def phase_of(message: etree._Element) -> str:
    return etree.QName(message).localname.replace("_Cancel", "")


def problems_of(message: etree._Element) -> list[str]:
    """Everything the public rules say against `message`: the NE2008 schema, the Gazelle phase
    of the message, and for a PDQ response IPF's ITI-47 response rules."""
    found = [f"XSD: {d.text} at {d.location}" for d in schemas().validate(message)]
    found += [f"Gazelle: {f}" for f in failures(gazelle(phase_of(message)), message)]
    if phase_of(message) == "PRPA_IN201306UV02":
        found += [f"IPF ITI-47: {f}" for f in failures(ipf_iti47("PRPA_IN201306UV02"), message)]
    return found


def assert_valid(message: etree._Element) -> None:
    found = problems_of(message)
    assert not found, "\n".join(found) + "\n" + etree.tostring(message, pretty_print=True, encoding="unicode")


def message_of(path: Path) -> etree._Element:
    """A sample's HL7 message: the file's root, or the body of a SOAP capture."""
    root = etree.parse(str(path), PARSER).getroot()
    if root.tag == f"{{{SOAP}}}Envelope":
        return root.find(f"{{{SOAP}}}Body")[0]
    return root


# --- the machinery checked --------------------------------------------------------------------

@needs_data
def test_the_translation_covers_every_xpath2_construct_of_the_gazelle_file():
    text = GAZELLE.read_text(encoding="utf-8")
    assert len(re.findall(r"\bmatches\(", text)) == 14 and len(re.findall(r"\s+eq\s+", text)) == 2
    document = etree.fromstring(gazelle_xpath1(text).encode(), PARSER)
    expressions = [e.get(a) for e in document.iter() for a in ("test", "context") if e.get(a)]
    assert len(expressions) > 60
    for xpath2 in (r"\bmatches\(", r"\s(eq|ne|lt|le|gt|ge)\s", "resolve-QName", r"\bQName\(", r"\breplace\(",
                   r"\btokenize\(", r"\bexists\(", r"\bstring-join\(", r"\b(upper|lower)-case\(", r"\bif\s*\(",
                   r"\bfor\s+\$", r"\bsome\s+\$", r"\bevery\s+\$"):
        assert not [e for e in expressions if re.search(xpath2, e)], xpath2


@needs_data
@pytest.mark.parametrize("phase", ["MCCI_IN000002UV01", "PRPA_IN201301UV02", "PRPA_IN201302UV02",
                                   "PRPA_IN201304UV02", "PRPA_IN201305UV02", "PRPA_IN201306UV02",
                                   "PRPA_IN201309UV02", "PRPA_IN201310UV02", "QUQI_IN000003UV01"])
def test_every_gazelle_phase_compiles_with_lxml(phase):
    assert gazelle(phase) is not None


@needs_data
def test_the_gazelle_rules_catch_what_they_should():
    """Each construct translated still fails the messages it must: an OID check (matches), the
    one-subject check (eq), and a plain assert."""
    ack = message_of(CONFORMANCE / "iti-44" / "ipf" / "Ack.xml")
    assert failures(gazelle("MCCI_IN000002UV01"), ack) == []
    ack.find(f"{{{V3}}}sender/{{{V3}}}device/{{{V3}}}id").set("root", "1.02.3")
    assert any("id.root SHALL be an ISO OID" in f for f in failures(gazelle("MCCI_IN000002UV01"), ack))
    ack.find(f"{{{V3}}}acceptAckCode").set("code", "AL")
    assert any("acceptAckCode/@code shall be set to NE" in f for f in failures(gazelle("MCCI_IN000002UV01"), ack))

    feed = message_of(CONFORMANCE / "iti-44" / "ipf" / "PIX_FEED_REG_Maximal_Request.xml")
    assert failures(gazelle("PRPA_IN201301UV02"), feed) == []
    control = feed.find(f"{{{V3}}}controlActProcess")
    control.append(copy.deepcopy(control.find(f"{{{V3}}}subject")))
    assert "Exactly one subject shall be present" in failures(gazelle("PRPA_IN201301UV02"), feed)


@needs_data
def test_the_ipf_iti47_rules_run_and_catch_what_they_should():
    response = message_of(CONFORMANCE / "iti-47" / "ipf" / "PDQ_Maximal_Query_Response.xml")
    assert failures(ipf_iti47("PRPA_IN201306UV02"), response) == []
    value = response.find(f".//{{{V3}}}queryMatchObservation/{{{V3}}}value")
    value.set("{http://www.w3.org/2001/XMLSchema-instance}type", "REAL")
    assert "value must be of data type INT" in failures(ipf_iti47("PRPA_IN201306UV02"), response)
    response.find(f".//{{{V3}}}patient").remove(response.find(f".//{{{V3}}}providerOrganization"))
    assert "providerOrganization must be present" in failures(ipf_iti47("PRPA_IN201306UV02"), response)

    query = message_of(CONFORMANCE / "iti-47" / "ipf" / "PDQ_Maximal_Query.xml")
    assert failures(ipf_iti47("PRPA_IN201305UV02"), query) == []
    query.find(f".//{{{V3}}}minimumDegreeMatch/{{{V3}}}value").set("value", "101")
    assert "minimumDegreeMatch.value must be between 0 and 100" in failures(ipf_iti47("PRPA_IN201305UV02"), query)


@needs_data
def test_schema_failures_become_details_located_in_the_message():
    feed = message_of(CONFORMANCE / "iti-44" / "ehealthsuisse" / "ITI-44_request_raw.xml")  # inside its envelope
    assert schemas().validate(feed) == []
    feed.find(f"{{{V3}}}creationTime").set("value", "2023-09-11")
    feed.find(f"{{{V3}}}controlActProcess").set("moodCode", "RQO")
    details = schemas().validate(feed)
    assert [(d.code, d.location) for d in details] == [("SYN102", "/PRPA_IN201301UV02/creationTime"),
                                                      ("SYN102", "/PRPA_IN201301UV02/controlActProcess")]
    assert "not accepted by the pattern" in details[0].text
    unknown = etree.fromstring(f'<x:MCCI_IN000004UV01 xmlns:x="{V3}"/>')
    assert [d.code for d in schemas().validate(unknown)] == ["NS200"]


@needs_data
def test_the_cost_of_validating_an_incoming_message(capsys):
    """The service may validate every request: a schema compiles once per message type and
    worker (tens of ms), then each validation costs well under a millisecond."""
    fresh = MessageSchemas(NE2008)
    compile_ms = {}
    for name in sorted(set(SCHEMA_FILES) - {"QUQI_IN000003UV01_Cancel"}):
        start = time.perf_counter()
        fresh.schema(name)
        compile_ms[name] = (time.perf_counter() - start) * 1000
    samples = {"PRPA_IN201301UV02 (IPF maximal, 7 KB)": CONFORMANCE / "iti-44/ipf/PIX_FEED_REG_Maximal_Request.xml",
               "PRPA_IN201305UV02 (IPF maximal)": CONFORMANCE / "iti-47/ipf/PDQ_Maximal_Query.xml",
               "PRPA_IN201309UV02 (NIST)": CONFORMANCE / "iti-45/ipf/NistPixpdq_Mesa10501-04_Example_01.xml"}
    per_message_us = {}
    for label, path in samples.items():
        message = message_of(path)
        data = etree.tostring(message)
        assert fresh.validate(message) == []
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(200):
                fresh.validate(message)
            runs.append((time.perf_counter() - start) / 200 * 1e6)
        parse = time.perf_counter()
        for _ in range(200):
            etree.fromstring(data, PARSER)
        per_message_us[label] = (statistics.median(runs), (time.perf_counter() - parse) / 200 * 1e6)
    with capsys.disabled():
        print("\nschema compile (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in compile_ms.items()))
        for label, (validate, parse) in per_message_us.items():
            print(f"validate {label}: {validate:.0f} us (parsing it: {parse:.0f} us)")
    assert max(compile_ms.values()) < 5000
    assert all(validate < 5000 for validate, _ in per_message_us.values())
