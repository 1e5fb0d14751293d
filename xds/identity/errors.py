"""The one error of the identity actors: what the services answer AE/AR for."""

from __future__ import annotations

from xds.model.person import Identifier

#: code -> what it means (the service picks its acknowledgementDetail from the code).
CODES = {
    "invalid-id": "the record has no patient id, or an id without root or extension",
    "retired": "the id was merged into another id (ITI-44 duplicates resolved): it is no longer used",
    "unknown-id": "the id was never fed",
    "unknown-subsumed": "a merge names, as the id to retire, an id that was never fed",
    "merge-self": "a merge names the same id as survivor and as the id to retire",
    "same-domain": "a link would give one person two active ids of one assigning authority",
    "no-parameters": "a demographics query has no parameter to match on",
}


class IdentityError(Exception):
    """A feed or command the identity store refuses; `code` is a key of CODES, `identifier` the
    id at fault (the service points its acknowledgementDetail location at it)."""

    def __init__(self, code: str, message: str, identifier: Identifier | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.identifier = identifier
