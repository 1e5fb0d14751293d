"""Who is asking: the Caller of one request, made once where the request comes in (xds.dispatch)
and handed to every actor and hook.

A caller is known by its network address and, with mutual TLS, by the subject of the
certificate it authenticated with (ATNA node authentication). When the request carried an
X-User Assertion that XUA verified (xds.security.xua), the person it names is the Caller's
`user`: subject, organization, home community, roles, purposes of use and the patient the
request is about, as the identity provider signed them, and the assertion itself, as the bytes
that were verified. Configuration is to say which facility a certificate or an organization id
stands for. An actor that needs to know who asks reads it here and nowhere else.

A request this server sends while it answers one (the repository's ITI-42 to a remote registry)
is sent on the Caller's behalf: the handler says so with `on_behalf_of(caller)` around the work,
and the sender asks `acting_for()`. The Caller is not passed down as an argument there because
the code in between (the repository's Register callable) is the same for the in-process
registry, which needs no Caller; a context variable is per thread and per request, so one
request's user can never go out with another's (gthread workers answer several at once).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from xds.security.tls import peer_subject


@dataclass(frozen=True)
class CE:
    """An HL7 v3 CE (coded element), as XUA carries a role or a purpose of use (ITI TF-2
    3.40.4.1.2: the hl7:Role and hl7:PurposeOfUse elements of an AttributeValue)."""

    code: str
    code_system: str = ""        # an OID
    code_system_name: str = ""
    display_name: str = ""


@dataclass(frozen=True)
class XUser:
    """The person an X-User Assertion names (ITI TF-2 3.40.4.1.2), read from what its identity
    provider signed and nothing else."""

    #: saml2:Subject/saml2:NameID: the user, as the identity provider knows them.
    name_id: str
    #: saml2:Issuer: the identity provider (X-Assertion Provider) entity id.
    issuer: str
    #: the NameID's SPProvidedID, an alias some providers give (empty when none).
    alias: str = ""
    #: saml2:Assertion/@ID.
    assertion_id: str = ""
    #: urn:oasis:names:tc:xspa:1.0:subject:subject-id: the user's name in plain text.
    subject_id: str = ""
    #: urn:oasis:names:tc:xspa:1.0:subject:organization, and :organization-id (a URI, urn:oid:...).
    organization: str = ""
    organization_id: str = ""
    #: urn:ihe:iti:xca:2010:homeCommunityId of the user's community.
    home_community_id: str = ""
    #: urn:oasis:names:tc:xacml:2.0:subject:role (Subject-Role option).
    roles: tuple[CE, ...] = ()
    #: urn:oasis:names:tc:xspa:1.0:subject:purposeofuse (PurposeOfUse option).
    purposes_of_use: tuple[CE, ...] = ()
    #: urn:oasis:names:tc:xacml:2.0:resource:resource-id: the patient id (CX) the request is about.
    resource_id: str = ""

    @property
    def audit_name(self) -> str:
        """The ATNA UserName of this user: alias<user@issuer> (ITI TF-2 3.40.4.2)."""
        return f"{self.alias}<{self.name_id}@{self.issuer}>"


@dataclass(frozen=True)
class Caller:
    #: The client's IP address as this server saw it (the WSGI REMOTE_ADDR).
    address: str = ""
    #: The subject (RFC 4514) of the client certificate the TLS handshake verified; "" without.
    certificate_subject: str = ""
    #: The requesting facility, once configuration or an assertion says which one it is: set by
    #: xds.consent.facility (the XUA organization-id, else the client certificate mapped in
    #: facility_certificates) when access control is on; "" when no one says.
    facility: str = ""
    #: The person of a verified X-User Assertion (xds.security.xua); None without one.
    user: XUser | None = None
    #: That assertion: the saml2:Assertion element serialized on its own, the exact bytes whose
    #: signature was verified; b"" without one. An actor acting on the user's behalf conveys
    #: these bytes as they are (its exclusive C14N signature holds wherever they are embedded,
    #: and no unverified element can take their place).
    assertion: bytes = field(default=b"", repr=False)

    @classmethod
    def from_environ(cls, environ: dict) -> "Caller":
        return cls(address=environ.get("REMOTE_ADDR", "") or "",
                   certificate_subject=peer_subject(environ) or "")


#: A caller inside this server (the command line, an in-process registration).
LOCAL = Caller(address="127.0.0.1")


_ACTING_FOR: ContextVar[Caller | None] = ContextVar("xds_acting_for", default=None)


@contextmanager
def on_behalf_of(caller: Caller) -> Iterator[Caller]:
    """While the block runs, what this server sends is sent on `caller`'s behalf."""
    token = _ACTING_FOR.set(caller)
    try:
        yield caller
    finally:
        _ACTING_FOR.reset(token)


def acting_for() -> Caller | None:
    """The Caller on whose behalf the current request is being answered (on_behalf_of), or None
    outside such a block (the command line, background work)."""
    return _ACTING_FOR.get()
