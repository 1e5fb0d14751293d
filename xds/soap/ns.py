"""Namespaces and qualified names of the transport: SOAP 1.2, WS-Addressing 1.0, XOP, WS-Security.

Nothing here knows of XDS. QNames are in lxml's Clark notation, ``{namespace}local``.
"""

from __future__ import annotations

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
WSA = "http://www.w3.org/2005/08/addressing"
XOP = "http://www.w3.org/2004/08/xop/include"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
XML = "http://www.w3.org/XML/1998/namespace"

# Prefixes used when we write QNames (element names and QName-valued text such as fault codes).
PREFIXES = {SOAP12: "env", WSA: "wsa", XOP: "xop", WSSE: "wsse"}


def qname(namespace: str, local: str) -> str:
    return f"{{{namespace}}}{local}"


def split_qname(clark: str) -> tuple[str | None, str]:
    """``{ns}local`` -> (ns, local); a name without braces is in no namespace."""
    if clark.startswith("{"):
        namespace, _, local = clark[1:].partition("}")
        return namespace, local
    return None, clark


# SOAP 1.2 Part 1 (5.1-5.4)
ENVELOPE = qname(SOAP12, "Envelope")
HEADER = qname(SOAP12, "Header")
BODY = qname(SOAP12, "Body")
FAULT = qname(SOAP12, "Fault")
MUST_UNDERSTAND = qname(SOAP12, "mustUnderstand")
ROLE = qname(SOAP12, "role")
# SOAP 1.2 Part 1 2.2: the roles this node plays. A header block aimed at another role
# (or at "none") is not ours to understand, whatever its mustUnderstand says.
ROLE_NEXT = SOAP12 + "/role/next"
ROLE_NONE = SOAP12 + "/role/none"
ROLE_ULTIMATE_RECEIVER = SOAP12 + "/role/ultimateReceiver"
OUR_ROLES = frozenset({ROLE_NEXT, ROLE_ULTIMATE_RECEIVER})

# WS-Addressing 1.0 Core 3.2 (message addressing properties) and SOAP Binding 6 (faults)
WSA_ACTION = qname(WSA, "Action")
WSA_MESSAGE_ID = qname(WSA, "MessageID")
WSA_TO = qname(WSA, "To")
WSA_FROM = qname(WSA, "From")
WSA_REPLY_TO = qname(WSA, "ReplyTo")
WSA_FAULT_TO = qname(WSA, "FaultTo")
WSA_RELATES_TO = qname(WSA, "RelatesTo")
WSA_ADDRESS = qname(WSA, "Address")
WSA_ANONYMOUS = WSA + "/anonymous"
WSA_NONE = WSA + "/none"
# Core 3.3 / SOAP Binding 6: [action] of SOAP-defined faults and of WS-Addressing's own faults.
WSA_SOAP_FAULT_ACTION = WSA + "/soap/fault"
WSA_FAULT_ACTION = WSA + "/fault"
# SOAP Binding 6.4 subcodes
WSA_ACTION_NOT_SUPPORTED = qname(WSA, "ActionNotSupported")
WSA_INVALID_HEADER = qname(WSA, "InvalidAddressingHeader")
WSA_INVALID_CARDINALITY = qname(WSA, "InvalidCardinality")
WSA_HEADER_REQUIRED = qname(WSA, "MessageAddressingHeaderRequired")
WSA_ONLY_ANONYMOUS = qname(WSA, "OnlyAnonymousAddressSupported")

XOP_INCLUDE = qname(XOP, "Include")
WSSE_SECURITY = qname(WSSE, "Security")

# Header blocks this layer processes itself. A mustUnderstand block outside this set is a
# MustUnderstand fault, unless the handler of the request's action processes it (a handler's
# `understood_headers`, see app.SoapEndpoint): wsse:Security is understood only where XUA reads
# it (xds.security.xua), so a client is never left believing its assertion was checked.
DEFAULT_UNDERSTOOD_HEADERS: tuple[str, ...] = (
    WSA_ACTION, WSA_MESSAGE_ID, WSA_TO, WSA_REPLY_TO, WSA_FROM, WSA_FAULT_TO, WSA_RELATES_TO,
)
