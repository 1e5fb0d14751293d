"""Helpers of the xds.soap tests: a WSGI environ and call without a server, an echo endpoint,
and hand-written MTOM bodies (the kind other stacks send, not the kind we build)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from lxml import etree

from xds.soap import (
    SoapEndpoint,
    SoapMessage,
    SoapRequest,
    SoapResponse,
    build_envelope,
    parse_response,
)

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
XOP = "http://www.w3.org/2004/08/xop/include"
PING = "urn:test:Ping"
PING_RESPONSE = "urn:test:PingResponse"
MESSAGE_ID = "urn:uuid:0f4b7a52-0000-4000-8000-000000000042"


def environ(
    body: bytes = b"",
    content_type: str | None = f'application/soap+xml; charset=UTF-8; action="{PING}"',
    *,
    method: str = "POST",
    query: str = "",
    content_length: int | None | bool = True,
    stream=None,
    **extra,
) -> dict:
    """A minimal PEP 3333 environ. content_length: True = len(body), None = header absent."""
    env = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/endpoint",
        "QUERY_STRING": query,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "192.0.2.7",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": stream if stream is not None else io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if content_type is not None:
        env["CONTENT_TYPE"] = content_type
    if content_length is True:
        env["CONTENT_LENGTH"] = str(len(body))
    elif content_length is not None and content_length is not False:
        env["CONTENT_LENGTH"] = str(content_length)
    env.update(extra)
    return env


@dataclass
class Result:
    status: int
    headers: dict[str, str]
    body: bytes
    _message: SoapMessage | None = field(default=None, repr=False)

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def message(self) -> SoapMessage:
        """The response parsed with the layer's own reader."""
        if self._message is None:
            self._message = parse_response(self.content_type, self.body)
        return self._message

    def fault_code(self) -> list[str]:
        """[Value, Subcode/Value, ...] of a SOAP 1.2 fault, as the QName text written."""
        code = self.message.body.find(f"{{{SOAP12}}}Code")
        values = []
        while code is not None:
            values.append(code.findtext(f"{{{SOAP12}}}Value"))
            code = code.find(f"{{{SOAP12}}}Subcode")
        return values

    def fault_reason(self) -> str:
        return self.message.body.findtext(f"{{{SOAP12}}}Reason/{{{SOAP12}}}Text") or ""


def call(app, env: dict) -> Result:
    """Run a WSGI app once, the way a server would."""
    seen: dict = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
        seen["status"], seen["headers"] = status, headers

    chunks = app(env, start_response)
    body = b"".join(chunks)
    headers = dict(seen["headers"])
    if env["REQUEST_METHOD"] != "HEAD":  # HEAD: the length of the GET answer, without it
        assert int(headers["Content-Length"]) == len(body)
    return Result(int(seen["status"].split()[0]), headers, body)


def ping_body(text: str = "hello") -> etree._Element:
    element = etree.Element("{urn:test}Ping", nsmap={"t": "urn:test"})
    element.text = text
    return element


def echo(request: SoapRequest) -> SoapResponse:
    """Answers a Ping with a Pong holding the ping's text."""
    pong = etree.Element("{urn:test}Pong", nsmap={"t": "urn:test"})
    pong.text = request.body.text
    return SoapResponse(body=pong, action=PING_RESPONSE)


def echo_endpoint(**kwargs) -> SoapEndpoint:
    return SoapEndpoint({PING: echo}, **kwargs)


def ping_envelope(message_id: str = MESSAGE_ID, text: str = "hello") -> bytes:
    return build_envelope(ping_body(text), PING, to="http://localhost/endpoint", message_id=message_id)


def envelope_text(header: str = "", body: str = '<t:Ping xmlns:t="urn:test">hello</t:Ping>',
                  action: str | None = PING, message_id: str | None = MESSAGE_ID) -> str:
    """A hand-written SOAP 1.2 envelope with WS-Addressing headers and extra header XML."""
    addressing = ""
    if action is not None:
        addressing += f'<wsa:Action env:mustUnderstand="true">{action}</wsa:Action>'
    if message_id is not None:
        addressing += f"<wsa:MessageID>{message_id}</wsa:MessageID>"
    return (f'<env:Envelope xmlns:env="{SOAP12}" xmlns:wsa="{WSA}">'
            f"<env:Header>{addressing}{header}</env:Header><env:Body>{body}</env:Body></env:Envelope>")


def multipart(parts: list[tuple[dict[str, str], bytes]], boundary: str, *, newline: bytes = b"\r\n",
              preamble: bytes = b"") -> bytes:
    """A multipart body written by hand, with the chosen line ending."""
    out = [preamble]
    for headers, content in parts:
        out.append(b"--" + boundary.encode() + newline)
        for name, value in headers.items():
            out.append(f"{name}: {value}".encode() + newline)
        out.append(newline + content + newline)
    out.append(b"--" + boundary.encode() + b"--" + newline)
    return b"".join(out)


def mtom_content_type(boundary: str, start: str | None = None, action: str | None = PING) -> str:
    value = f'multipart/related; boundary="{boundary}"; type="application/xop+xml"; start-info="application/soap+xml"'
    if start is not None:
        value += f'; start="{start}"'
    if action is not None:
        value += f'; action="{action}"'
    return value
