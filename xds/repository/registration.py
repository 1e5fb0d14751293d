"""How the repository registers metadata (ITI-42) and asks, after a crash, whether it did.

Two registries: the one of this server (`LocalRegistry`: the submission the repository read,
handed to the registry in-process; one database transaction, no HTTP, no second reading) and a
remote one (`RemoteRegistry`: ITI-42 over SOAP 1.2 to `registry_url`, the submission written
out again). Both give the registry's errors and warnings as they are, so the client of the
repository sees what the registry said. The repository knows the registry only by the
`Registry` interface below: it reads none of the registry's tables.

The remote path uses the project's plain SOAP client (xds.client.post_soap: lxml envelope,
urllib), not zeep, which DESIGN.md names for SOAP clients. The repository holds the
SubmitObjectsRequest as an lxml element and must hand the registry's RegistryResponse back
unchanged; zeep cannot serialize ebRIM's substitution groups from Python objects (the
registry's zeep test swaps its own element into the body with a plugin after zeep rendered an
empty request) and would parse the answer into objects we would have to turn back into XML.
zeep would add a WSDL load and two throwaway (de)serializations per submission and give nothing.

Over https the repository authenticates as an ATNA secure node: `RemoteRegistry.from_settings`
gives it this node's certificate and the network's CA (xds.security.tls.client_context). A registry that
refuses the certificate, or one whose own certificate we do not trust, is a registry we cannot
reach: XDSRegistryNotAvailable, with OpenSSL's reason.

On the user's behalf (XUA, ITI TF-2b 3.40): when the ITI-41 being answered carried an X-User
Assertion that this server verified, the ITI-42 to a remote registry carries that assertion in
its wsse:Security header (mustUnderstand), so that the registry can apply its own xua_policy and
record the same human requestor. The repository is then an X-Service User of the registry
acting for that user, and it conveys what the identity provider signed, not a claim of its
own: the verified bytes (Caller.assertion), unchanged. The registry verifies them again, with
its own clock, trusted certificates and audiences; if it refuses them (an assertion that has
expired meanwhile, one not addressed to it, a registry that does not read assertions and so
does not understand the header), that is its SOAP fault, and the ITI-41 fails with
XDSRegistryError naming it, nothing stored. Without a verified assertion nothing is added. The
handler marks the work it does for a caller with xds.security.caller.on_behalf_of; the
in-process registry needs no assertion: it is the same node, whose ITI-41 record names the user.

Failures: a registry that cannot be reached (refused, timed out, DNS, HTTP 5xx without a SOAP
answer) gives XDSRegistryNotAvailable; one that answers with a SOAP fault or something that is
not a RegistryResponse gives XDSRegistryError naming what came back.
"""

from __future__ import annotations

import logging
import socket
import ssl
import urllib.error
from dataclasses import dataclass
from typing import Protocol

from lxml import etree
from xds import client
from xds.config import Settings
from xds.ebrim import ns
from xds.ebrim.response import read_registry_response
from xds.ebrim.submission import ParsedSubmission
from xds.errors import XdsError
from xds.rules import error
from xds.security import tls
from xds.security.caller import acting_for
from xds.security.wssecurity import security_block
from xds.transactions import ITI_42

log = logging.getLogger("xds.repository")

REGISTRY_RESPONSE = f"{{{ns.RS}}}RegistryResponse"


class Registry(Protocol):
    """What the repository needs of this server's Document Registry
    (xds.registry.register.DocumentRegistry is one)."""

    def register_submission(self, parsed: ParsedSubmission) -> list[XdsError]: ...

    def holds_document(self, unique_id: str, sha1: str) -> bool | None: ...

    def documents_in(self, repository_unique_id: str) -> list[tuple[str, str | None, int | None]]: ...


@dataclass
class LocalRegistry:
    """The registry of this server, called in-process."""

    registry: Registry

    def register(self, parsed: ParsedSubmission) -> list[XdsError]:
        try:
            return self.registry.register_submission(parsed)
        except Exception:
            log.exception("in-process registration failed")
            return [error("registry.internal", reason="unexpected failure, logged by the server")]

    def is_registered(self, unique_id: str, sha1: str) -> bool | None:
        """Whether the registry holds a DocumentEntry with this uniqueId and hash."""
        return self.registry.holds_document(unique_id, sha1)


@dataclass
class RemoteRegistry:
    """A Document Registry elsewhere, over ITI-42."""

    url: str
    timeout: float = 60.0
    context: ssl.SSLContext | None = None  # for https: this node's TLS identity and trust

    @classmethod
    def from_settings(cls, settings: Settings) -> "RemoteRegistry":
        """The registry at settings.registry_url; over https with this node's certificate."""
        return cls(settings.registry_url, context=tls.context_for(settings.registry_url, settings))

    def register(self, parsed: ParsedSubmission) -> list[XdsError]:
        caller = acting_for()
        security = [security_block(caller.assertion)] if caller is not None and caller.assertion else []
        try:
            body = client.post_soap(self.url, parsed.request, ITI_42.action, timeout=self.timeout,
                                    context=self.context, header_blocks=security)
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            log.warning("registry %s not available: %s", self.url, reason)
            return [error("repository.registry-unavailable", url=self.url, reason=str(reason))]
        except ValueError as exc:  # a SOAP fault, or an HTTP error without SOAP
            text = str(exc)
            if text.startswith(f"{self.url} answered HTTP 5"):
                return [error("repository.registry-unavailable", url=self.url, reason=text)]
            return [error("repository.registry-failed", url=self.url, reason=text)]
        except Exception as exc:  # e.g. an answer that is not XML
            return [error("repository.registry-failed", url=self.url, reason=str(exc) or type(exc).__name__)]
        if body.tag != REGISTRY_RESPONSE:
            return [error("repository.registry-failed", url=self.url,
                          reason=f"the answer's body is {etree.QName(body).localname}")]
        status, errors = read_registry_response(body)
        if status != ns.SUCCESS and not any(e.is_error for e in errors):
            errors.append(error("repository.registry-failed", url=self.url, reason=f"status {status} without errors"))
        return errors

    def is_registered(self, unique_id: str, sha1: str) -> bool | None:
        """Not asked of a remote registry (it would take an ITI-18 query per document): a
        staged submission without its commit marker is left for an operator."""
        return None
