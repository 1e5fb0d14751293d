"""What the services tell the audit trail (xds.audit.actors): the values of a stored query's
record, read from the request as the SOAP layer parsed it."""

from __future__ import annotations

import base64

from lxml import etree

from xds.audit import actors, events
from xds.soap.envelope import parse_envelope

QUERY_ID = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
PATIENT = "6789^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
HOME = "urn:oid:1.3.6.1.4.1.21367.2010.1.2.2045"
QUERY_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
RIM_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"

# The prefixes of the body are declared on the Envelope, as some stacks do: the recorded
# AdhocQueryRequest must declare them itself.
ENVELOPE = f"""<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"
    xmlns:wsa="http://www.w3.org/2005/08/addressing" xmlns:query="{QUERY_NS}" xmlns:rim="{RIM_NS}">
 <soap:Header><wsa:Action>urn:ihe:iti:2007:RegistryStoredQuery</wsa:Action>
  <wsa:MessageID>urn:uuid:5b8d4b5a-4f0e-4d39-a0a5-4c55a1d0e2f1</wsa:MessageID></soap:Header>
 <soap:Body>
  <query:AdhocQueryRequest>
   <query:ResponseOption returnComposedObjects="true" returnType="LeafClass"/>
   <rim:AdhocQuery id="{QUERY_ID}" home="{HOME}">
    <rim:Slot name="$XDSDocumentEntryStatus"><rim:ValueList>
     <rim:Value>('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')</rim:Value></rim:ValueList></rim:Slot>
    <rim:Slot name="$XDSDocumentEntryPatientId"><rim:ValueList>
     <rim:Value> '{PATIENT.replace("&", "&amp;")}' </rim:Value></rim:ValueList></rim:Slot>
    <rim:Slot name="$XDSDocumentEntryTypeCode"><rim:ValueList>
     <rim:Value>('18842-5^^2.16.840.1.113883.6.1')</rim:Value></rim:ValueList></rim:Slot>
   </rim:AdhocQuery>
  </query:AdhocQueryRequest>
 </soap:Body>
</soap:Envelope>""".encode()


def test_stored_query_values():
    body = parse_envelope(ENVELOPE).body
    values = actors.query(body)
    assert (values["query_id"], values["patient_id"], values["home_community_id"]) == (QUERY_ID, PATIENT, HOME)
    # the request on its own: a well-formed document that declares the namespaces it uses
    request = etree.fromstring(values["query_request"])
    assert request.tag == f"{{{QUERY_NS}}}AdhocQueryRequest"
    assert request.nsmap["query"] == QUERY_NS and request.nsmap["rim"] == RIM_NS
    assert etree.tostring(request, method="c14n") == etree.tostring(body, method="c14n", with_tail=False)
    assert values["query_request"].endswith(b"</query:AdhocQueryRequest>")  # nothing of the envelope after it


def test_stored_query_record_holds_the_request():
    values = actors.query(parse_envelope(ENVELOPE).body)
    ctx = events.TransactionContext(endpoint_url="https://registry.example.org/xds", **values)
    message = etree.fromstring(events.iti18_registry(ctx, events.AuditSource("XDS-1")))
    recorded = base64.b64decode(message.findtext("ParticipantObjectIdentification/ParticipantObjectQuery"))
    assert recorded == values["query_request"]
    assert etree.fromstring(recorded).find(f"{{{RIM_NS}}}AdhocQuery").get("id") == QUERY_ID


def test_a_query_without_a_patient_or_adhoc_query():
    envelope = ENVELOPE.replace(b'name="$XDSDocumentEntryPatientId"', b'name="$Other"')
    values = actors.query(parse_envelope(envelope).body)
    assert values["patient_id"] == "" and values["query_id"] == QUERY_ID
    empty = parse_envelope(ENVELOPE.replace(b"rim:AdhocQuery", b"rim:Other")).body
    values = actors.query(empty)
    assert set(values) == {"query_request"}
    assert etree.fromstring(values["query_request"]).tag == f"{{{QUERY_NS}}}AdhocQueryRequest"
