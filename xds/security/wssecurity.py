"""WS-Security as this server reads it: the wsse:Security header block addressed to this node,
the SAML 2.0 assertion it carries (OASIS SOAP Message Security 1.1 and its SAML Token Profile
1.1), and the faults WS-Security 1.1 names for what is wrong with them.

What belongs here: finding the one wsse:Security block and the one saml2:Assertion in it, the
fault an error becomes, and the block this server writes to convey a user's assertion onwards.
What does not: whether an assertion is good (xds.security.xua) or anything of XDS. Nothing here
trusts what it finds; it only says where it is.

Faults (WS-Security 1.1, section 12, table of "security errors"): SOAP 1.2 env:Sender with the
wsse QName as env:Subcode, and the standard's fault string followed by what exactly was wrong.
A client may show the reason to a person, so it says what to change and nothing internal.
"""

from __future__ import annotations

from lxml import etree

from xds.soap import SoapFault
from xds.soap import ns as soap_ns

WSSE = soap_ns.WSSE
SAML2 = "urn:oasis:names:tc:SAML:2.0:assertion"
SAML1 = "urn:oasis:names:tc:SAML:1.0:assertion"

SECURITY = soap_ns.WSSE_SECURITY
ASSERTION = f"{{{SAML2}}}Assertion"
ENCRYPTED_ASSERTION = f"{{{SAML2}}}EncryptedAssertion"
SAML1_ASSERTION = f"{{{SAML1}}}Assertion"

# WS-Security 1.1 section 12: the fault codes used here, and their fault strings.
INVALID_SECURITY = soap_ns.qname(WSSE, "InvalidSecurity")
INVALID_SECURITY_TOKEN = soap_ns.qname(WSSE, "InvalidSecurityToken")
FAILED_AUTHENTICATION = soap_ns.qname(WSSE, "FailedAuthentication")
_FAULT_STRINGS = {
    INVALID_SECURITY: "An error was discovered processing the <wsse:Security> header",
    INVALID_SECURITY_TOKEN: "An invalid security token was provided",
    FAILED_AUTHENTICATION: "The security token could not be authenticated or authorized",
}


class SecurityFault(SoapFault):
    """A WS-Security 1.1 fault: env:Sender, subcode `code` (one of the three above). `why` is
    the particular reason, also kept on its own for the audit trail's alert."""

    def __init__(self, code: str, why: str) -> None:
        super().__init__("Sender", f"{_FAULT_STRINGS[code]}: {why}", subcode=code)
        self.why = why


def _addressed_to_us(block: etree._Element) -> bool:
    """SOAP 1.2 Part 1 2.2: a block without env:role, or for role next or ultimateReceiver."""
    role = block.get(soap_ns.ROLE)
    return role is None or role.strip() in soap_ns.OUR_ROLES


def security_header(header: etree._Element | None) -> etree._Element | None:
    """The wsse:Security header block addressed to this node, or None. Blocks for other roles
    are not ours to read. WS-Security 1.1 section 5 allows one block per role; two for this
    node would leave which one counts to chance, so that is refused."""
    if header is None:
        return None
    blocks = [block for block in header.iterchildren(SECURITY) if _addressed_to_us(block)]
    if len(blocks) > 1:
        raise SecurityFault(INVALID_SECURITY, f"{len(blocks)} wsse:Security header blocks are addressed to this "
                                              "node; send one (WS-Security 1.1 section 5)")
    return blocks[0] if blocks else None


def assertion_in(security: etree._Element) -> etree._Element | None:
    """The saml2:Assertion a wsse:Security block carries as its child (SAML Token Profile 1.1
    section 3.4.1), or None. More than one is refused: which of them speaks for the user would
    be a guess (a signed assertion with an unsigned one beside it is the usual wrapping attack).
    Assertions elsewhere in the block are not read at all."""
    if security.find(ENCRYPTED_ASSERTION) is not None:
        raise SecurityFault(INVALID_SECURITY_TOKEN, "saml2:EncryptedAssertion is not supported; send the "
                                                    "assertion signed, over TLS")
    if security.find(SAML1_ASSERTION) is not None:
        raise SecurityFault(INVALID_SECURITY_TOKEN, "a SAML 1.1 assertion was sent; XUA requires SAML 2.0 "
                                                    f"({SAML2}, ITI TF-2 3.40.4.1)")
    assertions = security.findall(ASSERTION)
    if len(assertions) > 1:
        raise SecurityFault(INVALID_SECURITY, f"the wsse:Security header holds {len(assertions)} saml2:Assertion "
                                              "elements; send exactly one X-User Assertion")
    return assertions[0] if assertions else None


def security_block(assertion: bytes) -> bytes:
    """The wsse:Security header block that conveys `assertion` (a saml2:Assertion serialized on
    its own, as Caller.assertion holds it) in a request this server sends on the user's behalf
    (SAML Token Profile 1.1 section 3.4.1: the assertion a child of the block).

    The assertion's bytes go in as they are, not parsed and appended: on a move lxml drops
    namespace declarations it finds redundant, and a copy is only sure to be what the identity
    provider signed if it is the same bytes. The block is marked mustUnderstand (SOAP 1.2 Part
    1 5.2.3): a receiver that does not process WS-Security must refuse the request rather than
    take it without its user. For build_envelope's header_blocks: every namespace it uses is
    declared in it."""
    return (b'<wsse:Security xmlns:wsse="' + WSSE.encode() + b'" xmlns:env="' + soap_ns.SOAP12.encode()
            + b'" env:mustUnderstand="true">' + assertion + b"</wsse:Security>")
