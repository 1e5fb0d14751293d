"""The two identifier forms of XDS metadata: OIDs (uniqueIds, sourceId, repositoryUniqueId,
assigning authorities) and urn:uuid entryUUIDs."""

from __future__ import annotations

import re

OID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))+", re.ASCII)
OID_MAX = 64  # ITI TF-3 4.2.3.1.7: an XDS OID has at most 64 characters
UUID_PREFIX = "urn:uuid:"
UUID_URN = re.compile(r"urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
                      re.ASCII)


def is_oid(value: str) -> bool:
    return len(value) <= OID_MAX and OID.fullmatch(value) is not None


def is_uuid_urn(value: str) -> bool:
    return UUID_URN.fullmatch(value) is not None
