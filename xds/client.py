"""Sending XDS requests from the command line: a SOAP 1.2 POST and a readable outcome."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from lxml import etree

from xds.ebrim import ns
from xds.ebrim.response import read_registry_response
from xds.errors import XdsError
from xds.soap import build_envelope, parse_response
from xds.soap.envelope import SOAP12, parse_xml
from xds.transactions import ITI_42


def request_body(path: Path) -> etree._Element:
    """The request element of a file: a SOAP envelope's body, or the file's root itself."""
    root = parse_xml(path.read_bytes())
    if root.tag == f"{{{SOAP12}}}Envelope":
        body = root.find(f"{{{SOAP12}}}Body")
        if body is None or len(body) == 0:
            raise ValueError(f"{path}: the SOAP envelope has an empty body")
        return body[0]
    return root


def post_soap(url: str, body: etree._Element, action: str, timeout: float = 60,
              context: ssl.SSLContext | None = None, header_blocks: Iterable[etree._Element | bytes] = ()
              ) -> etree._Element:
    """POST one SOAP 1.2 request; return the response body element (a fault raises ValueError).
    `context`: for an https URL, the TLS context (xds.security.tls.client_context: this node's
    certificate, the network's CA); None: Python's default (system CAs, no certificate).
    `header_blocks`: after the WS-Addressing headers (build_envelope)."""
    envelope = build_envelope(body, action, to=url, header_blocks=header_blocks)
    request = urllib.request.Request(
        url, data=envelope,
        headers={"Content-Type": f'application/soap+xml; charset=UTF-8; action="{action}"'},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            content_type, data = response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        # SOAP faults come with HTTP 400/500: their text is what the user needs to see.
        content_type, data = exc.headers.get("Content-Type", ""), exc.read()
        if "xml" not in content_type:
            raise ValueError(f"{url} answered HTTP {exc.code}: {data[:200]!r}") from None
    message = parse_response(content_type, data)
    if message.body.tag == f"{{{SOAP12}}}Fault":
        reason = message.body.findtext(f".//{{{SOAP12}}}Text") or "no reason given"
        raise ValueError(f"SOAP fault from {url}: {reason}")
    return message.body


def send_register(path: Path, url: str, *, context: ssl.SSLContext | None = None) -> tuple[str, list[XdsError]]:
    body = request_body(path)
    if body.tag != f"{{{ns.LCM}}}SubmitObjectsRequest":
        raise ValueError(f"{path}: expected an lcm:SubmitObjectsRequest, found {body.tag}")
    return read_registry_response(post_soap(url, body, ITI_42.action, context=context))
