"""What the audit trail records of a transaction (xds.audit.actors): a TransactionContext
written from the transaction's row, the request's addressing, the Caller and the actor's
Result; the values of a stored query's record as the registry read them from the request."""

from __future__ import annotations

import base64

from lxml import etree

from xds.audit import actors, events
from xds.registry.query import named
from xds.result import DocumentTouched, QueryNamed, Result
from xds.rules import error
from xds.security.caller import Caller
from xds.soap.envelope import parse_envelope
from xds.transactions import ITI_18, ITI_43

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




class Recording:
    """An audit trail that keeps what it is given."""

    enabled = True

    def __init__(self):
        self.records: list[tuple[tuple[str, str], events.TransactionContext]] = []

    def record_transaction(self, event, ctx):
        self.records.append((event, ctx))


def _recorded(transaction, request, result, caller=Caller("198.51.100.7", "CN=ehr.example")):
    trail = Recording()
    actors.record(trail, transaction, request, caller, result)
    return trail.records


def test_stored_query_values():
    request = parse_envelope(ENVELOPE)
    query = named(request.body)
    assert (query.query_id, query.patient_id, query.home_community_id) == (QUERY_ID, PATIENT, HOME)
    ((event, ctx),) = _recorded(ITI_18, request, Result(query=query))
    assert event == ("ITI-18", "DocumentRegistry") and ctx.action == ITI_18.action
    assert (ctx.query_id, ctx.patient_id, ctx.home_community_id) == (QUERY_ID, PATIENT, HOME)
    assert (ctx.client_address, ctx.client_certificate) == ("198.51.100.7", "CN=ehr.example")
    assert ctx.message_id == "urn:uuid:5b8d4b5a-4f0e-4d39-a0a5-4c55a1d0e2f1" and ctx.outcome.endswith(":Success")
    # the request on its own: a well-formed document that declares the namespaces it uses
    recorded = etree.fromstring(ctx.query_request)
    assert recorded.tag == f"{{{QUERY_NS}}}AdhocQueryRequest"
    assert recorded.nsmap["query"] == QUERY_NS and recorded.nsmap["rim"] == RIM_NS
    assert etree.tostring(recorded, method="c14n") == etree.tostring(request.body, method="c14n", with_tail=False)
    assert ctx.query_request.endswith(b"</query:AdhocQueryRequest>")  # nothing of the envelope after it


def test_stored_query_record_holds_the_request():
    request = parse_envelope(ENVELOPE)
    ((event, ctx),) = _recorded(ITI_18, request, Result(query=named(request.body)))
    ctx.endpoint_url = "https://registry.example.org/xds"
    message = etree.fromstring(events.build(*event, ctx, events.AuditSource("XDS-1")))
    recorded = base64.b64decode(message.findtext("ParticipantObjectIdentification/ParticipantObjectQuery"))
    assert recorded == ctx.query_request
    assert etree.fromstring(recorded).find(f"{{{RIM_NS}}}AdhocQuery").get("id") == QUERY_ID


def test_a_query_without_a_patient_or_adhoc_query():
    envelope = ENVELOPE.replace(b'name="$XDSDocumentEntryPatientId"', b'name="$Other"')
    query = named(parse_envelope(envelope).body)
    assert query.patient_id == "" and query.query_id == QUERY_ID
    empty = parse_envelope(ENVELOPE.replace(b"rim:AdhocQuery", b"rim:Other"))
    assert named(empty.body) == QueryNamed()
    ((_, ctx),) = _recorded(ITI_18, empty, Result(query=named(empty.body)))
    assert (ctx.query_id, ctx.patient_id) == ("", "")
    assert etree.fromstring(ctx.query_request).tag == f"{{{QUERY_NS}}}AdhocQueryRequest"


def test_a_retrieval_is_recorded_once_per_patient():
    request = parse_envelope(ENVELOPE)  # what the request held does not matter here: the Result does
    found = [DocumentTouched("d1", "P1", "1.2", "urn:oid:9"), DocumentTouched("d2", "P2", "1.2", "urn:oid:9"),
             DocumentTouched("d3", "P2", "1.2", "urn:oid:9")]
    records = _recorded(ITI_43, request, Result(documents=found))
    assert [(ctx.patient_id, [d.unique_id for d in ctx.documents]) for _, ctx in records] == [
        ("P1", ["d1"]), ("P2", ["d2", "d3"])]
    assert records[0][1].documents[0].home_community_id == "urn:oid:9"
    assert {event for event, _ in records} == {("ITI-43", "DocumentRepository")}
    unknown = error("retrieve.unknown-document", "9.9", value="9.9", repository="1.2")
    (none,) = _recorded(ITI_43, request, Result([unknown], content=[]))  # a Failure is recorded too
    assert none[1].documents == () and none[1].outcome.endswith(":Failure")
