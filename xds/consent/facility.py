"""Who is asking: the requesting facility of a request, a check of the way in (xds.dispatch)
that runs after XUA's and puts it in Caller.facility.

1. the organization-id of the request's verified X-User Assertion (ITI TF-2 3.40.4.1.2,
   urn:oasis:names:tc:xspa:1.0:subject:organization-id: "the unique identifier of the
   organization the user is acting on behalf of"): the identity provider signed it;
2. else the client certificate the TLS handshake verified, when facility_certificates maps its
   subject to a facility (a system acting for its facility, without a user);
3. else none: with access control on, such a request sees no patient data.

The facility is compared without the urn:oid: prefix (xds.consent.policy.facility_id).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from xds.config import Settings
from xds.consent.policy import ConsentPolicy, facility_id
from xds.security.caller import Caller


@dataclass(frozen=True)
class RequestingFacility:
    #: Client certificate subject (RFC 4514, as xds.security.tls writes it) -> facility.
    certificates: Mapping[str, str]

    def of(self, caller: Caller) -> str:
        if caller.user is not None and facility_id(caller.user.organization_id):
            return facility_id(caller.user.organization_id)
        if caller.certificate_subject:
            return self.certificates.get(caller.certificate_subject, "")
        return ""

    def __call__(self, transaction, request, caller: Caller) -> Caller | None:
        facility = self.of(caller)
        return replace(caller, facility=facility) if facility != caller.facility else None


def checks(settings: Settings) -> list[RequestingFacility]:
    """The dispatcher's checks for `settings` (after XUA's, whose user they read): the requesting
    facility when access control is on; none otherwise (today's behaviour, nothing read)."""
    policy = ConsentPolicy.from_settings(settings)
    return [RequestingFacility(policy.certificates)] if policy.enabled else []
