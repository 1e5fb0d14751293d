"""xds.soap with large messages: the incremental multipart parser, the spool (parts to files,
hashed on the way, locked while alive, removed after the response), streamed responses, and
the envelope size limits with inline base64 (libxml2's 10 MB text node limit)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import tracemalloc

import pytest
from lxml import etree

from tests.soap_helpers import (
    PING,
    PING_RESPONSE,
    envelope_text,
    environ,
    mtom_content_type,
    multipart,
)
from xds.soap import (
    FileAttachment,
    MemoryAttachment,
    SoapEndpoint,
    SoapFault,
    SoapRequest,
    SoapResponse,
    Spool,
    build_envelope,
    build_mtom,
    parse_response,
    read_message,
    xop_include,
)
from xds.soap.mtom import (
    MultipartParser,
    iter_pieces,
    mtom_pieces,
    pieces_length,
    split_multipart,
)

BOUNDARY = "MIMEBoundary_streaming_test"
XOP_ENVELOPE = envelope_text(body='<t:Doc xmlns:t="urn:test"><xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" '
                                  'href="cid:doc@x"/></t:Doc>').encode()


def _mtom_body(document: bytes, newline: bytes = b"\r\n") -> bytes:
    return multipart([({"Content-ID": "<root@x>", "Content-Type": "application/xop+xml"}, XOP_ENVELOPE),
                      ({"Content-ID": "<doc@x>", "Content-Type": "application/pdf"}, document)],
                     BOUNDARY, newline=newline)


# -- the parser, fed in pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"])
def test_any_split_of_the_input_gives_the_same_parts(newline):
    # CR and LF and boundary look-alikes right where a piece may end.
    # (Content ending in CR is kept with CRLF delimiters only: with bare LF it cannot be told apart.)
    document = ((b"\r" + b"--" + BOUNDARY.encode()[:-1] + b"\r\n--\n\r") * 50 + os.urandom(3000)
                + (b"\r" if newline == b"\r\n" else b"x"))
    body = _mtom_body(document, newline)
    expected = [p.content for p in split_multipart(body, BOUNDARY)]
    assert expected[1] == document
    rng = random.Random(7)
    for _ in range(40):
        parser = MultipartParser(BOUNDARY, Spool(memory_limit=100))
        position = 0
        while position < len(body):
            step = rng.choice([1, 2, 3, 7, 64, 1000])
            parser.feed(body[position:position + step])
            position += step
        assert [part.content() for part in parser.close()] == expected


def test_base64_transfer_encoding_is_decoded_as_it_streams():
    data = os.urandom(10_000)
    encoded = base64.encodebytes(data)  # with line breaks every 76 characters
    body = multipart([({"Content-ID": "<a>", "Content-Transfer-Encoding": "base64"}, encoded)], BOUNDARY)
    parser = MultipartParser(BOUNDARY, Spool())
    for i in range(0, len(body), 333):
        parser.feed(body[i:i + 333])
    assert parser.close()[0].content() == data


def test_a_body_cut_short_removes_what_was_spooled(tmp_path):
    spool = Spool(tmp_path, memory_limit=1000, digest=True)
    body = _mtom_body(os.urandom(50_000))
    parser = MultipartParser(BOUNDARY, spool)
    parser.feed(body[:40_000])
    assert len(list(tmp_path.glob("*.part"))) == 1  # the document was spilling to a file
    with pytest.raises(SoapFault, match="closing boundary"):
        parser.close()
    assert list(tmp_path.iterdir()) == []


# -- the spool ---------------------------------------------------------------------------------------------


def test_large_parts_go_to_locked_files_with_their_sha1(tmp_path):
    spool = Spool(tmp_path, memory_limit=1000, digest=True)
    small, large = os.urandom(500), os.urandom(5000)
    envelope = envelope_text(body='<t:Docs xmlns:t="urn:test" xmlns:xop="http://www.w3.org/2004/08/xop/include">'
                                  '<t:Doc><xop:Include href="cid:s"/></t:Doc><t:Doc><xop:Include href="cid:l"/></t:Doc>'
                                  '</t:Docs>').encode()
    body = multipart([({"Content-ID": "<root>"}, envelope), ({"Content-ID": "<s>"}, small),
                      ({"Content-ID": "<l>"}, large)], BOUNDARY)
    message = read_message(mtom_content_type(BOUNDARY, start="<root>"), [body], spool=spool)
    s_part, l_part = message.attachments["s"], message.attachments["l"]
    assert isinstance(s_part, MemoryAttachment) and s_part.path is None and s_part.content() == small
    assert isinstance(l_part, FileAttachment) and l_part.path.parent == tmp_path and l_part.content() == large
    assert l_part.size == 5000 and l_part.sha1 == hashlib.sha1(large).hexdigest()
    assert s_part.sha1 == hashlib.sha1(small).hexdigest()
    assert spool.sweep() == 0  # alive: locked by this request
    message.close()
    assert list(tmp_path.iterdir()) == []


def test_move_to_keeps_a_spooled_part(tmp_path):
    spool = Spool(tmp_path / "spool", memory_limit=10)
    message = read_message(mtom_content_type(BOUNDARY, start="<root@x>"), [_mtom_body(b"x" * 100)], spool=spool)
    part = message.attachment(message.body)
    part.move_to(tmp_path / "kept")
    message.close()
    assert (tmp_path / "kept").read_bytes() == b"x" * 100 and list((tmp_path / "spool").iterdir()) == []


# -- the endpoint --------------------------------------------------------------------------------------------


class Chunked(io.RawIOBase):
    """A wsgi.input that makes a large body on the fly (never all in memory)."""

    def __init__(self, head: bytes, size: int, tail: bytes):
        self.pieces = iter([head, *([b"\x5a" * 1_000_000] * (size // 1_000_000)), b"\x5a" * (size % 1_000_000), tail])
        self.buffer = b""

    def read(self, n=-1):
        while len(self.buffer) < n:
            piece = next(self.pieces, None)
            if piece is None:
                break
            self.buffer += piece
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data


def test_a_200_mb_mtom_request_passes_with_bounded_memory(tmp_path):
    seen = {}

    def handler(request: SoapRequest) -> SoapResponse:
        part = request.attachment(request.body)
        seen.update(size=part.size, sha1=part.sha1, path=part.path)
        return SoapResponse(body=etree.Element("{urn:test}Ok"), action=PING_RESPONSE)

    size = 200_000_000
    endpoint = SoapEndpoint({PING: handler}, spool=Spool(tmp_path, digest=True), max_request_size=300_000_000)
    full = _mtom_body(b"@@DOC@@")
    head, tail = full.split(b"@@DOC@@")
    env = environ(content_type=mtom_content_type(BOUNDARY, start="<root@x>"), content_length=len(head) + size + len(tail),
                  stream=Chunked(head, size, tail))
    tracemalloc.start()
    try:
        status = {}
        body = endpoint(env, lambda s, h: status.update(s=s))
        answer = b"".join(body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status["s"] == "200 OK", answer
    assert seen["size"] == size and seen["path"].parent == tmp_path
    assert seen["sha1"] == hashlib.sha1(b"\x5a" * size).hexdigest()
    assert peak < 16 * 1024 * 1024, f"peak {peak} bytes"
    body.close()  # after the response: the request's spool file is gone
    assert list(tmp_path.iterdir()) == []


def test_a_streamed_response_from_a_file(tmp_path):
    document = tmp_path / "doc"
    document.write_bytes(os.urandom(3_000_000))

    def handler(request: SoapRequest) -> SoapResponse:
        body = etree.Element("{urn:test}Doc", nsmap={"t": "urn:test"})
        body.append(xop_include("doc@x"))
        return SoapResponse(body=body, action=PING_RESPONSE, attachments=[("doc@x", "application/pdf",
                                                                           FileAttachment(document))])

    headers = {}
    iterable = SoapEndpoint({PING: handler})(environ(build_envelope(etree.Element("{urn:test}Ping"), PING)),
                                              lambda s, h: headers.update(h))
    chunks = list(iterable)
    iterable.close()
    assert int(headers["Content-Length"]) == sum(map(len, chunks))
    assert max(map(len, chunks)) <= 1024 * 1024  # read from the file in chunks
    message = parse_response(headers["Content-Type"], b"".join(chunks))
    assert message.content(message.body) == document.read_bytes()


def test_mtom_pieces_measure_and_stream_content(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1000)
    content_type, pieces = mtom_pieces(b"<x/>", [("a@b", "text/plain", FileAttachment(path))])
    data = b"".join(iter_pieces(pieces, chunk_size=100))
    assert pieces_length(pieces) == len(data)
    assert build_mtom(b"<x/>", [("a@b", "text/plain", b"abc" * 1000)], action=None)[1].count(b"abc" * 1000) == 1


def test_mtom_response_forced_for_a_plain_request():
    def handler(request):
        return SoapResponse(body=etree.Element("{urn:test}Ok"), action=PING_RESPONSE, mtom=True)

    headers = {}
    iterable = SoapEndpoint({PING: handler})(environ(build_envelope(etree.Element("{urn:test}Ping"), PING)),
                                              lambda s, h: headers.update(h))
    b"".join(iterable)
    assert headers["Content-Type"].startswith("multipart/related")


# -- inline base64 and the envelope's size ------------------------------------------------------------------


def _inline_envelope(size: int) -> bytes:
    text = base64.b64encode(b"\x00" * size).decode()
    return envelope_text(body=f'<t:Doc xmlns:t="urn:test">{text}</t:Doc>').encode()


def _size_handler(request):
    return SoapResponse(body=etree.Element("{urn:test}Got", size=str(request.attachment(request.body).size)),
                        action=PING_RESPONSE)


def _call(endpoint, data):
    status, headers = {}, {}
    body = b"".join(endpoint(environ(data), lambda s, h: (status.update(s=s), headers.update(h))))
    return status["s"], parse_response(headers["Content-Type"], body)


def test_inline_base64_over_the_xml_text_limit_says_to_use_mtom():
    status, message = _call(SoapEndpoint({PING: _size_handler}), _inline_envelope(8 * 1024 * 1024))
    assert status.startswith("400") and "MTOM/XOP" in message.body.findtext(".//{*}Text")


def test_inline_base64_with_huge_tree_is_bounded_by_the_envelope_size():
    endpoint = SoapEndpoint({PING: _size_handler}, huge_tree=True, max_envelope_size=16 * 1024 * 1024)
    status, message = _call(endpoint, _inline_envelope(8 * 1024 * 1024))
    assert status.startswith("200") and message.body.get("size") == str(8 * 1024 * 1024)
    status, message = _call(endpoint, _inline_envelope(13 * 1024 * 1024))
    assert status.startswith("413") and "MTOM/XOP" in message.body.findtext(".//{*}Text")
    with pytest.raises(ValueError):
        SoapEndpoint({PING: _size_handler}, huge_tree=True)


def test_an_mtom_envelope_part_over_the_limit_is_413(tmp_path):
    endpoint = SoapEndpoint({PING: _size_handler}, spool=Spool(tmp_path), max_envelope_size=1000)
    body = multipart([({"Content-ID": "<root@x>"}, _inline_envelope(5000))], BOUNDARY)
    status = {}
    answer = b"".join(endpoint(environ(body, mtom_content_type(BOUNDARY, start="<root@x>")),
                               lambda s, h: status.update(s=s)))
    assert status["s"].startswith("413") and b"MTOM/XOP" in answer
    assert list(tmp_path.iterdir()) == []
