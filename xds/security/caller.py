"""Who is asking: the Caller of one request, made once where the request comes in (xds.dispatch)
and handed to every actor and hook.

Today a caller is known by its network address and, with mutual TLS, by the subject of the
certificate it authenticated with (ATNA node authentication). The checks to come fill in the
rest: XUA the user its SAML assertion names (subject, organization, role, purpose of use),
configuration the facility a certificate or an organization id stands for. An actor that needs
to know who asks reads it here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from xds.security.tls import peer_subject


@dataclass(frozen=True)
class Caller:
    #: The client's IP address as this server saw it (the WSGI REMOTE_ADDR).
    address: str = ""
    #: The subject (RFC 4514) of the client certificate the TLS handshake verified; "" without.
    certificate_subject: str = ""
    #: The requesting facility, once configuration or an assertion says which one it is.
    facility: str = ""

    @classmethod
    def from_environ(cls, environ: dict) -> "Caller":
        return cls(address=environ.get("REMOTE_ADDR", "") or "",
                   certificate_subject=peer_subject(environ) or "")


#: A caller inside this server (the command line, an in-process registration).
LOCAL = Caller(address="127.0.0.1")
