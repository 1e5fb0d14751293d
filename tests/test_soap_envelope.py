"""xds.soap.envelope and xds.soap.fault: SOAP 1.2 envelopes and WS-Addressing, read and
written without any HTTP. Organised by the spec section each test checks."""

from __future__ import annotations

import base64

import pytest
from lxml import etree

from tests.soap_helpers import MESSAGE_ID, PING, SOAP12, WSA, envelope_text, ping_body
from xds.soap import SoapFault, build_envelope, parse_message, parse_xml
from xds.soap.envelope import parse_envelope, xml_parser
from xds.soap.fault import VersionMismatch, not_understood, soap11_version_mismatch

SOAP_CT = "application/soap+xml; charset=UTF-8"


# -- the hardened parser ------------------------------------------------------------------------


def test_the_parser_is_configured_against_entities_dtds_and_the_network():
    parser = xml_parser()
    # lxml does not expose its options; the behaviour shows them: an entity stays unexpanded.
    root = etree.fromstring(b'<!DOCTYPE x [<!ENTITY e "expanded">]><x>&e;</x>', parser)
    assert "expanded" not in etree.tostring(root).decode()
    assert xml_parser() is parser  # one per thread, reused


@pytest.mark.parametrize("prolog", [
    b"",
    b"<?xml version='1.0' encoding='UTF-8'?>\n",
    b"\xef\xbb\xbf<?xml version='1.0'?><!-- a comment --><?pi data?>\n",
])
def test_doctype_refused_after_any_prolog(prolog):
    # SOAP 1.2 Part 1 5: a SOAP message must not contain a Document Type Declaration.
    with pytest.raises(SoapFault) as caught:
        parse_xml(prolog + b'<!DOCTYPE x [<!ENTITY e "v">]><x>&e;</x>')
    assert caught.value.code == "Sender"
    assert "Document Type Declaration" in caught.value.reason


def test_doctype_in_utf16_is_refused_by_the_check_after_parsing():
    # The byte walk of the prolog cannot read UTF-16; the check on the parsed tree does.
    data = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x [<!ENTITY e "v">]><x>&e;</x>'.encode("utf-16")
    with pytest.raises(SoapFault, match="Document Type Declaration"):
        parse_xml(data)


def test_malformed_xml_is_a_sender_fault_naming_the_problem():
    with pytest.raises(SoapFault) as caught:
        parse_xml(b"<a><b></a>")
    assert caught.value.code == "Sender"
    assert caught.value.http_status == 400
    assert "not well-formed" in caught.value.reason


# -- SOAP 1.2 Part 1 5.1-5.3: the envelope's shape ---------------------------------------------


def test_plain_envelope_is_read_with_its_addressing_headers():
    xml = envelope_text(header=f'<wsa:To>http://x/y</wsa:To><wsa:ReplyTo><wsa:Address>{WSA}/anonymous'
                               "</wsa:Address></wsa:ReplyTo>")
    message = parse_message(SOAP_CT, xml.encode())
    assert message.action == PING
    assert message.message_id == MESSAGE_ID
    assert message.to == "http://x/y"
    assert message.reply_to == f"{WSA}/anonymous"
    assert message.header.tag == f"{{{SOAP12}}}Header"
    assert message.body.tag == "{urn:test}Ping" and message.body.text == "hello"
    assert message.attachments == {} and message.is_mtom is False


def test_envelope_without_header_and_with_whitespace_and_comments():
    xml = (f'<?xml version="1.0"?>\n<!-- sent by hand -->\n<env:Envelope xmlns:env="{SOAP12}">\n'
           f'  <env:Body>\n  <!-- c -->\n  <t:Ping xmlns:t="urn:test">x</t:Ping>\n  </env:Body>\n</env:Envelope>')
    message = parse_message(f'{SOAP_CT}; action="{PING}"', xml.encode())
    assert message.header is None
    assert message.body.tag == "{urn:test}Ping"  # the first element, not the comment
    assert message.action == PING  # no wsa:Action: the Content-Type's action parameter


def test_wsa_action_wins_over_the_content_type_action():
    message = parse_message(f'{SOAP_CT}; action="urn:other"', envelope_text().encode())
    assert message.action == PING


@pytest.mark.parametrize("xml, words", [
    (f'<env:Envelope xmlns:env="{SOAP12}"/>', "env:Body"),
    (f'<env:Envelope xmlns:env="{SOAP12}"><env:Body/></env:Envelope>', "empty"),
    (f'<env:Envelope xmlns:env="{SOAP12}"><env:Body><a/></env:Body><env:Header/></env:Envelope>', "after env:Body"),
    (f'<env:Envelope xmlns:env="{SOAP12}"><x/><env:Body><a/></env:Body></env:Envelope>', "env:Body"),
    # WS-I Basic Profile 1.1 R2712 (document/literal, as every IHE WSDL): one element, not two
    (f'<env:Envelope xmlns:env="{SOAP12}"><env:Body><a/><!-- c --><b/></env:Body></env:Envelope>',
     "more than one element (a, then b)"),
    ("<Ping>not soap</Ping>", "not a SOAP 1.2 Envelope"),
])
def test_misshapen_envelopes_are_sender_faults(xml, words):
    with pytest.raises(SoapFault) as caught:
        parse_envelope(xml.encode())
    assert caught.value.code == "Sender"
    assert words in caught.value.reason


def test_empty_body_is_a_sender_fault():
    with pytest.raises(SoapFault, match="no body"):
        parse_message(SOAP_CT, b"  \r\n")


def test_soap11_envelope_is_a_version_mismatch():
    xml = b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><a/></s:Body></s:Envelope>'
    with pytest.raises(VersionMismatch) as caught:
        parse_message("text/xml", xml)
    assert caught.value.code == "VersionMismatch"
    assert caught.value.is_soap11
    assert caught.value.http_status == 500  # SOAP 1.2 Part 2 7.5.2.2


def test_envelope_of_an_unknown_version_is_a_soap12_version_mismatch():
    with pytest.raises(VersionMismatch) as caught:
        parse_envelope(b'<e:Envelope xmlns:e="http://www.w3.org/2002/12/soap-envelope"><e:Body/></e:Envelope>')
    assert not caught.value.is_soap11
    # SOAP 1.2 Part 1 5.4.7: the fault carries env:Upgrade naming the supported envelope.
    upgrade = caught.value.header_blocks[0]
    assert upgrade.tag == f"{{{SOAP12}}}Upgrade"
    prefix, local = upgrade[0].get("qname").split(":")
    assert (upgrade[0].nsmap[prefix], local) == (SOAP12, "Envelope")


def test_duplicate_wsa_action_is_an_invalid_addressing_header():
    xml = envelope_text(header=f"<wsa:Action>{PING}</wsa:Action>")
    with pytest.raises(SoapFault) as caught:
        parse_message(SOAP_CT, xml.encode())
    assert caught.value.subcodes == (f"{{{WSA}}}InvalidAddressingHeader", f"{{{WSA}}}InvalidCardinality")
    assert caught.value.action == f"{WSA}/fault"  # WS-Addressing's own faults


# -- building -----------------------------------------------------------------------------------


def test_build_envelope_round_trips_through_the_parser():
    data = build_envelope(ping_body("round trip"), PING, to="http://host/x", message_id="urn:uuid:1",
                          relates_to="urn:uuid:0")
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    message = parse_message(SOAP_CT, data)
    assert (message.action, message.message_id, message.to, message.relates_to) == (
        PING, "urn:uuid:1", "http://host/x", "urn:uuid:0")
    assert message.body.text == "round trip"


def test_build_envelope_makes_a_new_message_id_and_leaves_the_body_in_its_tree():
    parent = etree.Element("parent")
    body = etree.SubElement(parent, "{urn:test}Ping")
    body.tail = "tail text that must not leak into the envelope"
    first = parse_message(SOAP_CT, build_envelope(body, PING))
    second = parse_message(SOAP_CT, build_envelope(body, PING))
    assert first.message_id.startswith("urn:uuid:")
    assert first.message_id != second.message_id
    assert body.getparent() is parent
    assert b"tail text" not in build_envelope(body, PING)


def test_build_envelope_escapes_header_values():
    message = parse_message(SOAP_CT, build_envelope(ping_body(), "urn:a&b<c>", message_id="urn:x&y"))
    assert message.action == "urn:a&b<c>" and message.message_id == "urn:x&y"


def test_build_envelope_refuses_a_body_that_is_not_an_element():
    with pytest.raises(TypeError):
        build_envelope("<a/>", PING)  # type: ignore[arg-type]


# -- content(): xs:base64Binary inline ----------------------------------------------------------


def test_content_decodes_inline_base64_with_line_breaks():
    data = bytes(range(256)) * 40
    text = base64.encodebytes(data).decode()  # 76-character lines, as MIME writers produce
    xml = envelope_text(body=f'<t:Document xmlns:t="urn:test">{text}</t:Document>')
    message = parse_message(SOAP_CT, xml.encode())
    assert message.content(message.body) == data


def test_content_of_an_empty_element_is_empty():
    message = parse_message(SOAP_CT, envelope_text(body='<t:Document xmlns:t="urn:test"/>').encode())
    assert message.content(message.body) == b""


def test_content_with_bad_base64_is_a_sender_fault():
    message = parse_message(SOAP_CT, envelope_text(body='<t:Document xmlns:t="urn:test">QUJD=X</t:Document>').encode())
    with pytest.raises(SoapFault) as caught:
        message.content(message.body)
    assert caught.value.code == "Sender" and "base64" in caught.value.reason


def test_content_of_an_include_without_attachments_is_a_sender_fault():
    body = '<t:Document xmlns:t="urn:test"><xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:nope@x"/></t:Document>'
    message = parse_message(SOAP_CT, envelope_text(body=body).encode())
    with pytest.raises(SoapFault, match="not a part of the message"):
        message.content(message.body)


# -- faults (SOAP 1.2 Part 1 5.4) ----------------------------------------------------------------


def test_fault_element_has_code_subcode_reason_and_detail():
    fault = SoapFault("Sender", "bad thing", subcode="{urn:app}Oops", detail="more words")
    element = fault.to_element()
    value = element.find(f"{{{SOAP12}}}Code/{{{SOAP12}}}Subcode/{{{SOAP12}}}Value")
    prefix, local = value.text.split(":")
    assert (value.nsmap[prefix], local) == ("urn:app", "Oops")  # the QName resolves where written
    text = element.find(f"{{{SOAP12}}}Reason/{{{SOAP12}}}Text")
    assert text.text == "bad thing"
    assert text.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    assert element.findtext(f"{{{SOAP12}}}Detail") == "more words"
    assert fault.action == f"{WSA}/soap/fault"


@pytest.mark.parametrize("code, status", [("Sender", 400), ("Receiver", 500), ("MustUnderstand", 500),
                                          ("VersionMismatch", 500), ("DataEncodingUnknown", 500)])
def test_http_status_follows_soap12_part2_table(code, status):
    assert SoapFault(code, "x").http_status == status


def test_unknown_fault_code_is_a_programming_error():
    with pytest.raises(ValueError):
        SoapFault("Client", "SOAP 1.1 spelling")


def test_not_understood_names_the_header_qname():
    block = not_understood("{urn:h}Secret")
    prefix, local = block.get("qname").split(":")
    assert block.tag == f"{{{SOAP12}}}NotUnderstood"
    assert (block.nsmap[prefix], local) == ("urn:h", "Secret")


def test_soap11_version_mismatch_is_a_soap11_fault_with_an_upgrade_header():
    root = etree.fromstring(soap11_version_mismatch(VersionMismatch("http://schemas.xmlsoap.org/soap/envelope/")))
    s11 = "http://schemas.xmlsoap.org/soap/envelope/"
    assert root.tag == f"{{{s11}}}Envelope"
    assert root.find(f"{{{s11}}}Header/{{{SOAP12}}}Upgrade/{{{SOAP12}}}SupportedEnvelope") is not None
    assert root.findtext(f"{{{s11}}}Body/{{{s11}}}Fault/faultcode") == "soap11:VersionMismatch"


def test_a_serialized_body_is_written_as_it_is():
    """Handlers that answer from stored XML pass bytes: the envelope carries them unchanged."""
    body = b'<r:Answer xmlns:r="urn:example:answer"><r:Item n="1">stored &amp; kept</r:Item></r:Answer>'
    envelope = build_envelope(body, "urn:example:Answer", relates_to="urn:uuid:1")
    assert b"<env:Body>" + body + b"</env:Body>" in envelope
    answer = etree.fromstring(envelope).find(f"{{{SOAP12}}}Body")[0]
    assert answer.findtext("{urn:example:answer}Item") == "stored & kept"
    with pytest.raises(TypeError):
        build_envelope("<not-bytes/>", "urn:example:Answer")
