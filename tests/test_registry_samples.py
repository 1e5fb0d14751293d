"""Public ebRIM 3.0 submissions through the registry's register step (ITI-42).

ITI-41 samples carry no hash, size or repositoryUniqueId: the repository adds them before it
registers (ITI TF-2 3.41.4.1.3), so the test does the same, then expects Success. The NIST
templates also get what the toolkit gives them before sending (a test patient, new uniqueIds).
"""

from __future__ import annotations

import uuid

import pytest
from lxml import etree

from tests.data import CONFORMANCE, needs_conformance_data, sample_message
from xds.conformance.prepare import prepare
from xds.ebrim import ns
from xds.model import DocumentEntryType
from xds.registry.codes import CodeSet
from xds.registry.register import DocumentRegistry
from xds.store import db, patients

pytestmark = needs_conformance_data

PARSER = etree.XMLParser(resolve_entities=False, no_network=True)
PATIENT = "NIST-1^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
REPOSITORY = "1.3.6.1.4.1.21367.2010.1.2.1125"
SUBMIT = f"{{{ns.LCM}}}SubmitObjectsRequest"


def _submit_objects_request(path) -> etree._Element:
    """The lcm:SubmitObjectsRequest of a sample (alone, or inside a PnR request)."""
    message = sample_message(path)
    return message if message.tag == SUBMIT else next(message.iter(SUBMIT))


def _as_the_repository_sends_it(request: etree._Element) -> etree._Element:
    """Add hash, size and repositoryUniqueId to every stable DocumentEntry that lacks them."""
    for entry in request.iter(ns.rim("ExtrinsicObject")):
        if entry.get("objectType") != DocumentEntryType.STABLE.value:
            continue
        present = {slot.get("name") for slot in entry.findall(ns.rim("Slot"))}
        for name, value in (("hash", "da39a3ee5e6b4b0d3255bfef95601890afd80709"), ("size", "0"),
                            ("repositoryUniqueId", REPOSITORY)):
            if name not in present:
                slot = etree.Element(ns.rim("Slot"), name=name)
                etree.SubElement(etree.SubElement(slot, ns.rim("ValueList")), ns.rim("Value")).text = value
                entry.insert(0, slot)
    return request


@pytest.fixture
def registry(engine, session_factory):
    with session_factory.begin() as session:
        patients.add(session, [PATIENT])
    codes = CodeSet.from_nist_xml(CONFORMANCE / "config" / "nist-codes.xml")
    return DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True), codes=codes)


def _prepared(sample: str) -> etree._Element:
    numbers = iter(range(1, 1000))
    run = uuid.uuid4().int % 10**9
    request, _ = prepare(_submit_objects_request(CONFORMANCE / sample), patient_id=PATIENT,
                         source_id="1.3.6.1.4.1.21367.2010.1.2",
                         new_unique_id=lambda: f"1.2.392.200119.6.102.{run}.{next(numbers)}", assign_uuids=True)
    return _as_the_repository_sends_it(request)


@pytest.mark.parametrize("sample", [
    "iti-41/nist/ReposAcceptanceTest-1113/SubmitTwoDocs/two_doc.xml",
    "iti-41/nist/ReposAcceptanceTest-1113/SubmitFolder/single_fol.xml",
    "iti-41/nist/ReposAcceptanceTest-1113/SubmitFolderwDoc/fol_doc.xml",
])
def test_nist_submission_is_accepted(registry, sample):
    problems = registry.register(_prepared(sample))
    assert problems == [], "\n".join(map(str, problems))


def test_nist_submission_with_retired_codes(registry, engine):
    """PnrNoXop (a raw MTOM body) still uses Connect-a-thon and demo codes that the current NIST codes.xml no
    longer lists: with those codes configured the registry names each one; without a code
    set it accepts the submission."""
    sample = "iti-41/nist/PnrNoXop/submit/body.txt"
    problems = registry.register(_prepared(sample))
    assert {p.code for p in problems} == {"XDSRegistryMetadataError"}
    assert sorted(p.context.split(": ", 1)[1].split(" ")[0] for p in problems) == [
        "classCode", "contentTypeCode", "healthcareFacilityTypeCode", "practiceSettingCode", "typeCode"]
    open_domain = DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True))
    assert open_domain.register(_prepared(sample)) == []


def test_swiss_epr_capture_is_accepted(engine, session_factory):
    """A real ITI-41 capture from the Swiss EPR test environment, its own patient and codes."""
    request = _as_the_repository_sends_it(
        _submit_objects_request(CONFORMANCE / "iti-41" / "ehealthsuisse" / "ITI-41_request_raw.xml"))
    patient = next(e.get("value") for e in request.iter(ns.rim("ExternalIdentifier"))
                   if e.get("identificationScheme") == ns.SS_PATIENT_ID)
    with session_factory.begin() as session:
        patients.add(session, [patient])
    registry = DocumentRegistry(sessions=db.make_sessionmaker(engine, write=True))
    assert registry.register(request) == []
    # The same submission again: its SubmissionSet uniqueId and its entryUUIDs are now taken.
    again = registry.register(_as_the_repository_sends_it(
        _submit_objects_request(CONFORMANCE / "iti-41" / "ehealthsuisse" / "ITI-41_request_raw.xml")))
    assert "XDSDuplicateUniqueIdInRegistry" in [p.code for p in again]
    assert all("already identifies an object" in p.context for p in again if p.code == "XDSRegistryMetadataError")


def test_ipf_marshalling_sample_is_refused_with_reasons(registry):
    """IPF's ebRS 3.0 marshalling sample is not a valid ITI-42 request: four of its scheme
    UUIDs contain a space (so patientId, uniqueId and contentTypeCode are unknown schemes),
    its sourceId is not an OID, and its DocumentEntry has no hash, size or repositoryUniqueId.
    Each is reported; nothing is stored."""
    request = etree.parse(str(CONFORMANCE / "iti-42" / "ipf" / "SubmitObjectsRequest_ebrs30.xml"), PARSER).getroot()
    problems = registry.register(request)
    contexts = " | ".join(p.context for p in problems)
    assert {p.code for p in problems} == {"XDSRegistryMetadataError"}
    for expected in ("hash", "size", "repositoryUniqueId", "patientId", "contentTypeCode", "3670984664"):
        assert expected in contexts, expected
