"""xds.soap.app.SoapEndpoint as a WSGI application: called directly with an environ, and once
under wsgiref over a real socket. Organised by what the client sees: answers, faults,
hostile input, size limits, MTOM, the WSDL."""

from __future__ import annotations

import io
import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from lxml import etree

from tests.soap_helpers import (
    MESSAGE_ID,
    PING,
    PING_RESPONSE,
    SOAP12,
    WSA,
    call,
    echo,
    echo_endpoint,
    envelope_text,
    environ,
    mtom_content_type,
    multipart,
    ping_envelope,
)
from xds.soap import (
    SoapEndpoint,
    SoapFault,
    SoapRequest,
    SoapResponse,
    build_envelope,
    build_mtom,
    xop_include,
)
from xds.soap.mtom import parse_content_type

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
BOUNDARY = "MIMEBoundary_0123456789abcdef"


def post(app: SoapEndpoint, body: bytes, **kwargs):
    return call(app, environ(body, **kwargs))


class Recorder:
    """A handler that remembers whether it ran."""

    def __init__(self, handler=echo):
        self.requests: list[SoapRequest] = []
        self.handler = handler

    def __call__(self, request: SoapRequest) -> SoapResponse:
        self.requests.append(request)
        return self.handler(request)


# -- answers (WS-Addressing 1.0 Core 3.4: reply headers) ------------------------------------------


def test_answer_relates_to_the_request_and_has_a_new_message_id():
    result = post(echo_endpoint(), ping_envelope(text="hi there"))
    assert result.status == 200
    assert result.content_type == f'application/soap+xml; charset=UTF-8; action="{PING_RESPONSE}"'
    message = result.message
    assert message.action == PING_RESPONSE
    assert message.relates_to == MESSAGE_ID
    assert message.message_id.startswith("urn:uuid:") and message.message_id != MESSAGE_ID
    assert message.body.tag == "{urn:test}Pong" and message.body.text == "hi there"


def test_answer_without_request_message_id_has_no_relates_to():
    result = post(echo_endpoint(), envelope_text(message_id=None).encode())
    assert result.status == 200
    assert result.message.relates_to is None
    assert result.message.header.find(f"{{{WSA}}}RelatesTo") is None


def test_handler_gets_request_fields_and_environ():
    recorder = Recorder()
    post(SoapEndpoint({PING: recorder}), ping_envelope())
    request = recorder.requests[0]
    assert (request.action, request.message_id, request.to) == (PING, MESSAGE_ID, "http://localhost/endpoint")
    assert request.environ["REMOTE_ADDR"] == "192.0.2.7"
    assert request.header.find(f"{{{WSA}}}Action") is not None


def test_content_type_action_does_not_replace_wsa_action():
    # IHE ITI TF-2 Appendix V: wsa:Action is required; WS-Addressing 1.0 SOAP Binding 6.4.
    recorder = Recorder()
    result = post(SoapEndpoint({PING: recorder}), envelope_text(action=None).encode(),
                  content_type=f'application/soap+xml; charset=UTF-8; action="{PING}"')
    assert result.status == 400
    assert result.fault_code() == ["env:Sender", "wsa:MessageAddressingHeaderRequired"]
    assert "wsa:Action" in result.fault_reason() and "Appendix V" in result.fault_reason()
    assert result.message.body.findtext(f".//{{{WSA}}}ProblemHeaderQName") == "wsa:Action"
    assert result.message.action == f"{WSA}/fault"
    assert recorder.requests == []


def test_envelope_without_header_is_message_addressing_header_required():
    body = f'<env:Envelope xmlns:env="{SOAP12}"><env:Body><t:Ping xmlns:t="urn:test">x</t:Ping></env:Body></env:Envelope>'
    result = post(echo_endpoint(), body.encode())  # the Content-Type names the action
    assert result.status == 400
    assert result.fault_code() == ["env:Sender", "wsa:MessageAddressingHeaderRequired"]
    assert "env:Header" in result.fault_reason()


def test_empty_wsa_action_is_an_invalid_addressing_header():
    result = post(echo_endpoint(), envelope_text(action="  ").encode())
    assert result.status == 400
    assert result.fault_code() == ["env:Sender", "wsa:InvalidAddressingHeader"]


# -- faults the endpoint raises ---------------------------------------------------------------------


def test_unknown_action_is_action_not_supported():
    endpoint = SoapEndpoint({PING: echo, "urn:test:Other": echo})
    result = post(endpoint, envelope_text(action="urn:test:Nope").encode())
    assert result.status == 400  # SOAP 1.2 Part 2 7.5.2.2: env:Sender
    assert result.fault_code() == ["env:Sender", "wsa:ActionNotSupported"]
    reason = result.fault_reason()
    assert "urn:test:Nope" in reason and PING in reason and "urn:test:Other" in reason
    assert result.message.body.findtext(f".//{{{WSA}}}ProblemAction/{{{WSA}}}Action") == "urn:test:Nope"
    assert result.message.action == f"{WSA}/fault"
    assert result.message.relates_to == MESSAGE_ID


def test_no_action_at_all_is_message_addressing_header_required():
    result = post(echo_endpoint(), envelope_text(action=None).encode(), content_type="application/soap+xml")
    assert result.status == 400
    assert result.fault_code() == ["env:Sender", "wsa:MessageAddressingHeaderRequired"]


def test_non_anonymous_reply_to_is_refused():
    header = "<wsa:ReplyTo><wsa:Address>http://client.example/callback</wsa:Address></wsa:ReplyTo>"
    recorder = Recorder()
    result = post(SoapEndpoint({PING: recorder}), envelope_text(header=header).encode())
    assert result.status == 400
    assert result.fault_code() == ["env:Sender", "wsa:InvalidAddressingHeader", "wsa:OnlyAnonymousAddressSupported"]
    assert recorder.requests == []


@pytest.mark.parametrize("flag", ["true", "1", " true "])
def test_must_understand_unknown_header_is_a_must_understand_fault(flag):
    recorder = Recorder()
    header = f'<x:Secret xmlns:x="urn:x" env:mustUnderstand="{flag}">s</x:Secret>'
    result = post(SoapEndpoint({PING: recorder}), envelope_text(header=header).encode())
    assert result.status == 500
    assert result.fault_code() == ["env:MustUnderstand"]
    assert "{urn:x}Secret" in result.fault_reason()
    # SOAP 1.2 Part 1 5.4.8: an env:NotUnderstood header block names it
    block = result.message.header.find(f"{{{SOAP12}}}NotUnderstood")
    prefix, local = block.get("qname").split(":")
    assert (block.nsmap[prefix], local) == ("urn:x", "Secret")
    assert result.message.action == f"{WSA}/soap/fault"
    assert recorder.requests == []  # nothing was processed


@pytest.mark.parametrize("attributes", [
    'env:mustUnderstand="false"',
    'env:mustUnderstand="0"',
    'env:mustUnderstand="true" env:role="http://www.w3.org/2003/05/soap-envelope/role/none"',
    'env:mustUnderstand="true" env:role="urn:some:other:node"',
    "",
])
def test_header_blocks_not_mandatory_for_this_node_are_ignored(attributes):
    header = f'<x:Optional xmlns:x="urn:x" {attributes}>o</x:Optional>'
    assert post(echo_endpoint(), envelope_text(header=header).encode()).status == 200


def test_must_understand_for_role_next_applies():
    header = f'<x:Secret xmlns:x="urn:x" env:mustUnderstand="1" env:role="{SOAP12}/role/next">s</x:Secret>'
    assert post(echo_endpoint(), envelope_text(header=header).encode()).fault_code() == ["env:MustUnderstand"]


def test_must_understand_on_understood_headers_passes():
    header = f'<wsa:To env:mustUnderstand="1">http://localhost/endpoint</wsa:To>'
    assert post(echo_endpoint(), envelope_text(header=header).encode()).status == 200


def test_wsse_security_is_understood_only_by_a_handler_that_reads_it():
    """The transport does not process WS-Security: a mandatory wsse:Security is a MustUnderstand
    fault unless the action's handler says it processes it (XUA does, xds.security.xua), so a
    client never believes its assertion was checked when it was not."""
    header = f'<wsse:Security xmlns:wsse="{WSSE}" env:mustUnderstand="true"/>'
    refused = post(echo_endpoint(), envelope_text(header=header).encode())
    assert refused.status == 500 and refused.fault_code() == ["env:MustUnderstand"]

    def reads_security(request: SoapRequest) -> SoapResponse:
        return echo(request)

    reads_security.understood_headers = frozenset({f"{{{WSSE}}}Security"})
    recorder = Recorder()
    endpoint = SoapEndpoint({PING: reads_security, "urn:test:Other": recorder})
    assert post(endpoint, envelope_text(header=header).encode()).status == 200
    other = post(endpoint, envelope_text(header=header, action="urn:test:Other").encode())
    assert other.fault_code() == ["env:MustUnderstand"] and recorder.requests == []


def test_understood_headers_can_be_extended():
    header = '<x:Secret xmlns:x="urn:x" env:mustUnderstand="true">s</x:Secret>'
    endpoint = echo_endpoint(understood_headers=[f"{{{WSA}}}Action", "{urn:x}Secret"])
    assert post(endpoint, envelope_text(header=header).encode()).status == 200


def test_soap11_envelope_gets_a_soap11_version_mismatch_with_upgrade():
    s11 = "http://schemas.xmlsoap.org/soap/envelope/"
    body = f'<s:Envelope xmlns:s="{s11}"><s:Body><t:Ping xmlns:t="urn:test"/></s:Body></s:Envelope>'.encode()
    result = post(echo_endpoint(), body, content_type="text/xml; charset=utf-8")
    assert result.status == 500
    assert result.content_type.startswith("text/xml")
    root = etree.fromstring(result.body)
    assert root.findtext(f"{{{s11}}}Body/{{{s11}}}Fault/faultcode") == "soap11:VersionMismatch"
    supported = root.find(f"{{{s11}}}Header/{{{SOAP12}}}Upgrade/{{{SOAP12}}}SupportedEnvelope")
    prefix = supported.get("qname").split(":")[0]
    assert supported.nsmap[prefix] == SOAP12


@pytest.mark.parametrize("body", [b"this is not XML", b"<a><b></a>", b"\x00\xff\xfe garbage", b"{}"])
def test_non_xml_body_is_a_sender_fault(body):
    result = post(echo_endpoint(), body)
    assert result.status == 400
    assert result.fault_code() == ["env:Sender"]


def test_non_envelope_root_is_a_sender_fault():
    result = post(echo_endpoint(), b'<t:Ping xmlns:t="urn:test">hi</t:Ping>')
    assert result.status == 400 and "not a SOAP 1.2 Envelope" in result.fault_reason()


def test_empty_post_is_a_sender_fault():
    result = post(echo_endpoint(), b"")
    assert result.status == 400 and "no body" in result.fault_reason()


# -- hostile XML ----------------------------------------------------------------------------------


def _xxe_envelopes(uri: str) -> list[bytes]:
    """External entities in the three places they can be expanded: element content, an
    attribute value (through an internal entity), and a parameter entity in the DTD."""
    tail = envelope_text(body='<t:Ping xmlns:t="urn:test">&xxe;</t:Ping>')
    in_attribute = envelope_text(body='<t:Ping xmlns:t="urn:test" a="&xxe;">x</t:Ping>')
    return [
        f'<?xml version="1.0"?><!DOCTYPE env:Envelope [<!ENTITY xxe SYSTEM "{uri}">]>{tail}'.encode(),
        f'<!DOCTYPE env:Envelope [<!ENTITY ext SYSTEM "{uri}"><!ENTITY xxe "&ext;">]>{in_attribute}'.encode(),
        f'<!DOCTYPE env:Envelope [<!ENTITY % p SYSTEM "{uri}"> %p; <!ENTITY xxe "x">]>{tail}'.encode(),
    ]


@pytest.mark.parametrize("case", range(3))
def test_xxe_marker_file_never_reaches_the_response(tmp_path, case):
    marker = tmp_path / "marker.txt"
    marker.write_text("XXE-MARKER-6b1f0c2e")
    recorder = Recorder()
    result = post(SoapEndpoint({PING: recorder}), _xxe_envelopes(marker.as_uri())[case])
    assert result.status == 400
    assert b"XXE-MARKER" not in result.body
    assert "Document Type Declaration" in result.fault_reason()
    assert recorder.requests == []


@pytest.mark.skipif(not Path("/etc/passwd").exists(), reason="needs /etc/passwd")
def test_xxe_etc_passwd_never_reaches_the_response():
    result = post(echo_endpoint(), _xxe_envelopes("file:///etc/passwd")[0])
    assert result.status == 400
    assert b"root:" not in result.body


def test_billion_laughs_answers_fast_with_a_fault():
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    body = f'<?xml version="1.0"?><!DOCTYPE env:Envelope [{entities}]>' + envelope_text(
        body='<t:Ping xmlns:t="urn:test">&lol9;</t:Ping>')
    started = time.perf_counter()
    result = post(echo_endpoint(), body.encode())
    elapsed = time.perf_counter() - started
    assert result.status == 400 and result.fault_code() == ["env:Sender"]
    assert b"lollollol" not in result.body
    assert elapsed < 1.0


# -- size limits ------------------------------------------------------------------------------------


class CountingStream:
    """A wsgi.input that hands out `total` bytes in small reads and counts what was read."""

    def __init__(self, total: int, chunk: int = 8192, forbid: bool = False):
        self.left, self.chunk, self.forbid, self.read_bytes = total, chunk, forbid, 0

    def read(self, size: int = -1) -> bytes:
        if self.forbid:
            raise AssertionError("the body must not be read")
        size = self.chunk if size is None or size < 0 else min(size, self.chunk)
        data = b"x" * min(size, self.left)
        self.left -= len(data)
        self.read_bytes += len(data)
        return data


def test_declared_length_over_the_limit_is_413_without_reading():
    result = call(echo_endpoint(max_request_size=1000),
                  environ(content_length=10_000_000, stream=CountingStream(10_000_000, forbid=True)))
    assert result.status == 413
    assert result.fault_code() == ["env:Sender"]
    assert "1000 bytes" in result.fault_reason()


def test_chunked_body_over_the_limit_is_413_and_reading_stops():
    stream = CountingStream(50_000_000)
    result = call(echo_endpoint(max_request_size=100_000),
                  environ(content_length=None, stream=stream, HTTP_TRANSFER_ENCODING="chunked",
                          **{"wsgi.input_terminated": True}))
    assert result.status == 413
    assert stream.read_bytes <= 100_000 + 64 * 1024


def test_chunked_body_within_the_limit_is_read_to_the_end():
    body = ping_envelope()
    result = call(echo_endpoint(), environ(body, content_length=None, HTTP_TRANSFER_ENCODING="chunked",
                                           **{"wsgi.input_terminated": True}))
    assert result.status == 200 and result.message.relates_to == MESSAGE_ID


def test_chunked_body_on_a_server_that_does_not_end_the_stream_is_411():
    # Reading to EOF there could block on the socket; ask the client for a length instead.
    result = call(echo_endpoint(), environ(ping_envelope(), content_length=None, HTTP_TRANSFER_ENCODING="chunked"))
    assert result.status == 411


@pytest.mark.parametrize("length", ["abc", "-5", "1e3"])
def test_invalid_content_length_is_a_sender_fault(length):
    result = call(echo_endpoint(), environ(ping_envelope(), content_length=length))
    assert result.status == 400 and "Content-Length" in result.fault_reason()


def test_body_shorter_than_its_content_length_is_a_sender_fault():
    body = ping_envelope()
    result = call(echo_endpoint(), environ(body, content_length=len(body) + 10))
    assert result.status == 400 and "ended after" in result.fault_reason()


# -- MTOM ---------------------------------------------------------------------------------------------


def _document_handler(request: SoapRequest) -> SoapResponse:
    """Answers with the size and first bytes of the document the request carries."""
    data = request.content(request.body.find("{urn:test}Document"))
    answer = etree.Element("{urn:test}Got", size=str(len(data)))
    answer.text = data[:20].decode("latin-1")
    return SoapResponse(body=answer, action=PING_RESPONSE)


def test_mtom_request_with_bare_lf_percent_cid_and_declaration_gets_an_mtom_answer():
    document = b"This is my document.\n\nIt is great!\n"
    envelope = (b'<?xml version="1.0" encoding="UTF-8"?>\n' + envelope_text(body=(
        '<t:Ping xmlns:t="urn:test"><t:Document><xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" '
        'href="cid:1.urn%3Auuid%3AB5B57D72%40apache.org"/></t:Document></t:Ping>')).encode())
    body = multipart([
        ({"Content-Type": 'application/xop+xml; charset=UTF-8; type="application/soap+xml"',
          "Content-Transfer-Encoding": "binary", "Content-ID": "<0.root@apache.org>"}, envelope),
        ({"Content-Type": "text/plain", "Content-Transfer-Encoding": "binary",
          "Content-ID": "<1.urn:uuid:B5B57D72@apache.org>"}, document),
    ], BOUNDARY, newline=b"\n")
    result = post(SoapEndpoint({PING: _document_handler}), body,
                  content_type=mtom_content_type(BOUNDARY, start="<0.root@apache.org>"))
    assert result.status == 200
    media_type, params = parse_content_type(result.content_type)
    assert media_type == "multipart/related" and params["type"] == "application/xop+xml"
    message = result.message
    assert message.is_mtom and message.relates_to == MESSAGE_ID
    assert message.body.get("size") == str(len(document))
    assert message.body.text == document[:20].decode()


def test_fault_to_an_mtom_request_is_mtom_too():
    body = multipart([({"Content-ID": "<root@x>"}, envelope_text(action="urn:test:Nope").encode())], BOUNDARY)
    result = post(echo_endpoint(), body, content_type=mtom_content_type(BOUNDARY))
    assert result.status == 400
    assert result.content_type.startswith("multipart/related")
    assert result.fault_code() == ["env:Sender", "wsa:ActionNotSupported"]


def test_mtom_response_with_attachments_round_trips():
    data = bytes(range(256)) * 4000

    def retrieve(request: SoapRequest) -> SoapResponse:
        document = etree.Element("{urn:test}Document", nsmap={"t": "urn:test"})
        document.append(xop_include("doc1@xds.test"))
        return SoapResponse(body=document, action=PING_RESPONSE,
                            attachments=[("doc1@xds.test", "application/octet-stream", data)])

    result = post(SoapEndpoint({PING: retrieve}), ping_envelope())  # a plain request
    assert result.status == 200
    assert result.content_type.startswith("multipart/related")
    message = result.message
    assert message.action == PING_RESPONSE
    assert message.body.find("{http://www.w3.org/2004/08/xop/include}Include") is not None
    assert message.content(message.body) == data


def test_mtom_request_through_build_mtom_of_the_client_side():
    document = etree.Element("{urn:test}Ping", nsmap={"t": "urn:test"})
    inner = etree.SubElement(document, "{urn:test}Document")
    inner.append(xop_include("a b@c"))
    content_type, body = build_mtom(build_envelope(document, PING, message_id=MESSAGE_ID),
                                    [("a b@c", "application/pdf", b"%PDF-1.7")], action=PING)
    result = post(SoapEndpoint({PING: _document_handler}), body, content_type=content_type)
    assert result.status == 200 and result.message.body.get("size") == "8"


# -- accepted once, although the standards refuse it (issue 15) ---------------------------------------


def test_body_with_two_elements_is_a_sender_fault_and_nothing_runs():
    recorder = Recorder()
    body = '<t:Ping xmlns:t="urn:test">one</t:Ping><t:Ping xmlns:t="urn:test">two</t:Ping>'
    result = post(SoapEndpoint({PING: recorder}), envelope_text(body=body).encode())
    assert result.status == 400 and result.fault_code() == ["env:Sender"]
    assert "more than one element (Ping, then Ping)" in result.fault_reason()
    assert recorder.requests == []


def _mtom_with_document(start: str | None, parts_after_root: list[tuple[dict[str, str], bytes]],
                        document: str = '<xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" '
                                        'href="cid:doc@x"/>') -> tuple[bytes, str]:
    envelope = envelope_text(body=f'<t:Ping xmlns:t="urn:test"><t:Document>{document}</t:Document></t:Ping>')
    body = multipart([({"Content-ID": "<root@x>", "Content-Type": "application/xop+xml"}, envelope.encode()),
                      *parts_after_root], BOUNDARY)
    return body, mtom_content_type(BOUNDARY, start=start)


@pytest.mark.parametrize("start, parts, document, words", [
    ("<elsewhere@x>", [({"Content-ID": "<doc@x>"}, b"D")], None, "start parameter names <elsewhere@x>"),
    ("<root@x>", [({"Content-ID": "<doc@x>"}, b"D"), ({"Content-ID": "<doc@x>"}, b"E")], None,
     "two parts of the multipart body have the Content-ID <doc@x>"),
    ("<root@x>", [({"Content-ID": "<doc@x>"}, b"D")],
     'RA==<xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:doc@x"/>',
     "Document holds other content beside its xop:Include"),
], ids=["start names no part", "duplicate Content-ID", "base64 beside xop:Include"])
def test_broken_xop_packages_are_sender_faults_and_nothing_runs(start, parts, document, words):
    recorder = Recorder(_document_handler)
    body, content_type = _mtom_with_document(start, parts, *([document] if document else []))
    result = post(SoapEndpoint({PING: recorder}), body, content_type=content_type)
    assert result.status == 400 and result.fault_code() == ["env:Sender"]
    assert result.content_type.startswith("multipart/related")
    assert words in result.fault_reason()
    assert recorder.requests == []


# -- handler failures ------------------------------------------------------------------------------


def test_handler_exception_is_a_generic_receiver_fault_and_a_logged_traceback(caplog):
    def broken(request):
        raise RuntimeError("db password hunter2 at /srv/secret/config.py")

    with caplog.at_level(logging.ERROR, logger="xds.soap"):
        result = post(SoapEndpoint({PING: broken}), ping_envelope())
    assert result.status == 500
    assert result.fault_code() == ["env:Receiver"]
    assert result.fault_reason() == (
        f"internal error; the request was not processed, see the server log for message {MESSAGE_ID}")
    for leak in (b"hunter2", b"RuntimeError", b"Traceback", b"secret", b".py"):
        assert leak not in result.body
    record = next(r for r in caplog.records if r.name == "xds.soap")
    assert MESSAGE_ID in record.getMessage()
    assert record.exc_info is not None and "hunter2" in str(record.exc_info[1])


def test_handler_exception_without_message_id_names_a_fresh_incident_id(caplog):
    def broken(request):
        raise KeyError("x")

    with caplog.at_level(logging.ERROR, logger="xds.soap"):
        result = post(SoapEndpoint({PING: broken}), envelope_text(message_id=None).encode())
    incident = result.fault_reason().rsplit(" ", 1)[1]
    assert incident.startswith("urn:uuid:")
    assert any(incident in r.getMessage() for r in caplog.records)


def test_broken_response_is_a_generic_receiver_fault(caplog):
    def bad(request):
        return SoapResponse(body="<not-an-element/>", action=PING_RESPONSE)  # type: ignore[arg-type]

    with caplog.at_level(logging.ERROR, logger="xds.soap"):
        result = post(SoapEndpoint({PING: bad}), ping_envelope())
    assert result.status == 500 and result.fault_code() == ["env:Receiver"]
    assert b"not-an-element" not in result.body and b"TypeError" not in result.body


def test_handler_soap_fault_is_sent_as_raised():
    def refuse(request):
        raise SoapFault("Receiver", "the registry is unreachable", subcode="{urn:app}Unavailable",
                        detail=etree.Element("{urn:app}Retry"))

    result = post(SoapEndpoint({PING: refuse}), ping_envelope())
    assert result.status == 500
    assert result.fault_reason() == "the registry is unreachable"
    assert result.fault_code()[0] == "env:Receiver"
    assert result.message.body.find(f"{{{SOAP12}}}Detail/{{urn:app}}Retry") is not None
    assert result.message.relates_to == MESSAGE_ID


def test_handler_soap_fault_that_cannot_be_written_still_answers(caplog):
    def refuse(request):
        raise SoapFault("Sender", "bad", detail=42)  # type: ignore[arg-type]

    with caplog.at_level(logging.ERROR, logger="xds.soap"):
        result = post(SoapEndpoint({PING: refuse}), ping_envelope())
    assert result.status == 500 and result.fault_code() == ["env:Receiver"]


# -- other methods and the WSDL ----------------------------------------------------------------------


@pytest.fixture
def wsdl_file(tmp_path) -> Path:
    path = tmp_path / "ping.wsdl"
    path.write_bytes(b'<?xml version="1.0"?><definitions xmlns="http://schemas.xmlsoap.org/wsdl/" name="ping"/>')
    return path


@pytest.mark.parametrize("query", ["wsdl", "WSDL", "wsdl=", "x=1&wsdl"])
def test_get_wsdl(wsdl_file, query):
    result = call(echo_endpoint(wsdl=wsdl_file), environ(method="GET", query=query, content_type=None))
    assert result.status == 200
    assert result.content_type == "text/xml"
    assert result.body == wsdl_file.read_bytes()


def test_head_wsdl_has_headers_only(wsdl_file):
    result = call(echo_endpoint(wsdl=wsdl_file), environ(method="HEAD", query="wsdl", content_type=None,
                                                          content_length=None))
    assert result.status == 200 and result.body == b""


def test_missing_wsdl_file_fails_at_start_up(tmp_path):
    with pytest.raises(FileNotFoundError):
        echo_endpoint(wsdl=tmp_path / "absent.wsdl")


@pytest.mark.parametrize("method, query, with_wsdl", [
    ("GET", "", True), ("GET", "wsdl", False), ("GET", "xsd=1", True), ("PUT", "", True), ("DELETE", "wsdl", True),
])
def test_other_requests_are_405_with_allow(wsdl_file, method, query, with_wsdl):
    endpoint = echo_endpoint(wsdl=wsdl_file if with_wsdl else None)
    result = call(endpoint, environ(method=method, query=query, content_type=None))
    assert result.status == 405
    assert result.headers["Allow"] == "POST"


# -- over a real socket ---------------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def served(wsdl_file):
    server = make_server("127.0.0.1", 0, echo_endpoint(wsdl=wsdl_file), handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/endpoint"
    server.shutdown()
    thread.join(5)
    server.server_close()


def _http(url: str, data: bytes | None = None, content_type: str | None = None):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type} if content_type else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_over_a_socket_with_wsgiref(served):
    from xds.soap import parse_response

    status, content_type, body = _http(served, ping_envelope(text="over the wire"),
                                       f'application/soap+xml; charset=UTF-8; action="{PING}"')
    assert status == 200
    message = parse_response(content_type, body)
    assert message.body.text == "over the wire" and message.relates_to == MESSAGE_ID

    status, content_type, body = _http(served, envelope_text(action="urn:test:Nope").encode(), "application/soap+xml")
    assert status == 400 and b"ActionNotSupported" in body

    status, content_type, body = _http(served + "?wsdl")
    assert status == 200 and body.startswith(b"<?xml") and content_type == "text/xml"


def test_wsgi_input_is_read_in_pieces():
    """Servers may return fewer bytes than asked for; the body is still read whole."""

    class Trickle(io.BytesIO):
        def read(self, size=-1):
            return super().read(min(size, 7) if size and size > 0 else 7)

    body = ping_envelope()
    result = call(echo_endpoint(), environ(body, stream=Trickle(body)))
    assert result.status == 200 and result.message.body.text == "hello"
