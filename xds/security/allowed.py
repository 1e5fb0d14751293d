"""Callers a node lets use a transaction that crosses patients: a list from the configuration.

    allowed = AllowedCallers.parse("10.1.2.0/24; CN=portal.example,O=Kagawa")
    allowed.allows(caller)      # Caller (xds.security.caller): its address or its certificate

An entry is a client address or network (an IP address, or CIDR: 10.1.2.0/24, 2001:db8::/64),
or the subject of a client certificate as the node names it in its logs and audit records
(RFC 4514, most specific RDN first: CN=portal.example,O=Kagawa; xds.security.tls.subject_string).
Entries are separated by ';' or line breaks (a subject holds commas). A subject is compared
whole and exactly; it can only match over mutual TLS, where the handshake verified the
certificate. An address matches whatever the transport: behind a proxy every request has the
proxy's address, so list subjects there. An empty list allows nobody.

A malformed entry is refused when the list is read (the server does not start), never taken
for a subject that nothing will match.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from xds.security.caller import Caller

_SEPARATORS = re.compile(r"[;\n]")
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AllowedCallers:
    networks: tuple[_Network, ...] = ()
    subjects: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str, setting: str = "the list of callers") -> "AllowedCallers":
        """The entries of `text` (see the module's docstring); ValueError names the first entry
        that is neither an address, a network nor a certificate subject, and `setting`."""
        networks: list[_Network] = []
        subjects: set[str] = set()
        for entry in (e.strip() for e in _SEPARATORS.split(text or "")):
            if not entry:
                continue
            if "=" in entry:
                subjects.add(entry)
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"{setting}: {entry!r} is neither an IP address or network (10.1.2.3, "
                                 f"10.1.2.0/24) nor a certificate subject (CN=host,O=organization)") from None
        return cls(tuple(networks), frozenset(subjects))

    def allows(self, caller: Caller) -> bool:
        if caller.certificate_subject and caller.certificate_subject in self.subjects:
            return True
        address = _address(caller.address)
        return address is not None and any(address in network for network in self.networks)

    @staticmethod
    def describe(caller: Caller) -> str:
        """The caller as an administrator would list it."""
        who = f"the client at {caller.address or 'an unknown address'}"
        if caller.certificate_subject:
            return f"{who} with certificate '{caller.certificate_subject}'"
        return f"{who} (no client certificate)"


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    # An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address
