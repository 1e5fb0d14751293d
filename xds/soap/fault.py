"""SOAP 1.2 faults: the exception that carries one, and the env:Fault element that answers it.

A fault is raised anywhere below the endpoint (envelope parsing, MTOM splitting, a handler) as
``SoapFault``; the endpoint turns it into a response. This module does not write envelopes or
know of WSGI: it only builds the fault's own elements.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from xml.sax.saxutils import escape

from lxml import etree

from xds.soap import ns

# SOAP 1.2 Part 1 5.4.6: the only values env:Code/env:Value may take.
FAULT_CODES = frozenset({"VersionMismatch", "MustUnderstand", "DataEncodingUnknown", "Sender", "Receiver"})

Detail = etree._Element | Sequence[etree._Element] | str | None


class SoapFault(Exception):
    """A SOAP 1.2 fault to send back.

    code     one of FAULT_CODES (normally "Sender": the request is at fault, or "Receiver")
    reason   text for env:Reason/env:Text; shown to the client, so never put internals in it
    subcode  QName in Clark notation, e.g. "{http://www.w3.org/2005/08/addressing}ActionNotSupported",
             or a sequence of them for nested env:Subcode elements (WS-Addressing's subsubcodes)
    detail   env:Detail content: an element, a list of elements, or text
    header_blocks  header blocks the fault message must carry (env:NotUnderstood, env:Upgrade)
    http_status    overrides the status of SOAP 1.2 Part 2 7.5.2.2 (e.g. 413 for a body too large)
    action   the wsa:Action of the fault message; by default the one WS-Addressing gives
    """

    def __init__(
        self,
        code: str,
        reason: str,
        *,
        subcode: str | Sequence[str] | None = None,
        detail: Detail = None,
        header_blocks: Iterable[etree._Element] = (),
        http_status: int | None = None,
        action: str | None = None,
    ) -> None:
        if code not in FAULT_CODES:
            raise ValueError(f"SOAP 1.2 fault code must be one of {sorted(FAULT_CODES)}, not {code!r}")
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.subcodes: tuple[str, ...] = (subcode,) if isinstance(subcode, str) else tuple(subcode or ())
        self.detail = detail
        self.header_blocks = list(header_blocks)
        self._http_status = http_status
        self._action = action

    def __repr__(self) -> str:
        return f"SoapFault({self.code!r}, {self.reason!r}, subcode={self.subcode!r})"

    @property
    def subcode(self) -> str | None:
        """The outermost subcode, if any."""
        return self.subcodes[0] if self.subcodes else None

    @property
    def http_status(self) -> int:
        """SOAP 1.2 Part 2 7.5.2.2, table 20: env:Sender -> 400 Bad Request; every other
        fault code -> 500 Internal Server Error."""
        if self._http_status is not None:
            return self._http_status
        return 400 if self.code == "Sender" else 500

    @property
    def action(self) -> str:
        """WS-Addressing 1.0 SOAP Binding 6: faults WS-Addressing defines (subcode in its
        namespace) use .../addressing/fault; other SOAP faults use .../addressing/soap/fault."""
        if self._action is not None:
            return self._action
        if self.subcode is not None and self.subcode.startswith("{" + ns.WSA + "}"):
            return ns.WSA_FAULT_ACTION
        return ns.WSA_SOAP_FAULT_ACTION

    def to_element(self) -> etree._Element:
        """The env:Fault element (SOAP 1.2 Part 1 5.4): Code (Value, Subcode?), Reason, Detail?"""
        fault = etree.Element(ns.FAULT, nsmap={"env": ns.SOAP12})
        code = etree.SubElement(fault, ns.qname(ns.SOAP12, "Code"))
        _qname_value(code, ns.qname(ns.SOAP12, self.code))
        parent = code
        for subcode in self.subcodes:  # each env:Subcode nests in the previous one (Part 1 5.4.1.3)
            parent = etree.SubElement(parent, ns.qname(ns.SOAP12, "Subcode"))
            _qname_value(parent, subcode)
        reason = etree.SubElement(fault, ns.qname(ns.SOAP12, "Reason"))
        text = etree.SubElement(reason, ns.qname(ns.SOAP12, "Text"))
        text.set(ns.qname(ns.XML, "lang"), "en")
        text.text = self.reason
        if self.detail is not None:
            _add_detail(etree.SubElement(fault, ns.qname(ns.SOAP12, "Detail")), self.detail)
        return fault


def _qname_value(parent: etree._Element, clark: str) -> None:
    """An env:Value holding a QName as text; its prefix is declared on the element itself."""
    namespace, local = ns.split_qname(clark)
    if namespace is None:
        etree.SubElement(parent, ns.qname(ns.SOAP12, "Value")).text = local
        return
    prefix = ns.PREFIXES.get(namespace, "sc")
    value = etree.SubElement(parent, ns.qname(ns.SOAP12, "Value"), nsmap={prefix: namespace})
    value.text = f"{prefix}:{local}"


def _add_detail(detail_element: etree._Element, detail: Detail) -> None:
    if isinstance(detail, str):
        detail_element.text = detail
    elif isinstance(detail, etree._Element):
        detail_element.append(detail)
    else:
        for child in detail or ():
            detail_element.append(child)


# -- header blocks that particular faults carry ------------------------------------------------


def not_understood(header_qname: str) -> etree._Element:
    """SOAP 1.2 Part 1 5.4.8: one env:NotUnderstood block per header block not understood."""
    namespace, local = ns.split_qname(header_qname)
    if namespace is None:
        block = etree.Element(ns.qname(ns.SOAP12, "NotUnderstood"), nsmap={"env": ns.SOAP12})
        block.set("qname", local)
        return block
    prefix = "env" if namespace == ns.SOAP12 else "h"
    block = etree.Element(ns.qname(ns.SOAP12, "NotUnderstood"), nsmap={"env": ns.SOAP12, prefix: namespace})
    block.set("qname", f"{prefix}:{local}")
    return block


def upgrade() -> etree._Element:
    """SOAP 1.2 Part 1 5.4.7: env:Upgrade lists the envelope versions this node supports."""
    block = etree.Element(ns.qname(ns.SOAP12, "Upgrade"), nsmap={"env": ns.SOAP12})
    supported = etree.SubElement(block, ns.qname(ns.SOAP12, "SupportedEnvelope"), nsmap={"s12": ns.SOAP12})
    supported.set("qname", "s12:Envelope")
    return block


class VersionMismatch(SoapFault):
    """The root was an Envelope of another SOAP version (SOAP 1.2 Part 1 5.4.6, 5.4.7)."""

    def __init__(self, received_namespace: str | None) -> None:
        super().__init__(
            "VersionMismatch",
            f"this endpoint speaks SOAP 1.2 ({ns.SOAP12}) only; the envelope is in "
            f"{received_namespace or 'no namespace'}",
            header_blocks=[upgrade()],
        )
        self.received_namespace = received_namespace

    @property
    def is_soap11(self) -> bool:
        return self.received_namespace == ns.SOAP11


def soap11_version_mismatch(fault: VersionMismatch) -> bytes:
    """The answer to a SOAP 1.1 envelope, per SOAP 1.2 Part 1 Appendix A: a SOAP 1.2 node
    that does not process SOAP/1.1 answers with a SOAP/1.1 VersionMismatch fault (the only
    fault a SOAP 1.1 client can read) carrying an env:Upgrade block that names SOAP 1.2.
    Sent as text/xml with HTTP 500 (SOAP 1.1 section 6.2).

    Written around the serialized Upgrade block rather than by appending it to a SOAP 1.1
    tree: on a move lxml drops namespace declarations it finds redundant, and the QName in
    the qname attribute would lose its prefix."""
    upgrade_block = etree.tostring(upgrade(), encoding="unicode")
    return (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        f'<soap11:Envelope xmlns:soap11="{ns.SOAP11}"><soap11:Header>{upgrade_block}</soap11:Header>'
        "<soap11:Body><soap11:Fault><faultcode>soap11:VersionMismatch</faultcode>"
        f"<faultstring>{escape(fault.reason)}</faultstring></soap11:Fault></soap11:Body></soap11:Envelope>"
    ).encode("utf-8")
