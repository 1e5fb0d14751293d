"""An AdhocQueryRequest (ITI-18, ITI-51) read into a stored query and typed parameter values.

What belongs here: everything about the request's text - the query id, the returnType, and the
slots' values as ITI TF-2 3.18.4.1.2.3 writes them - turned into Python values, with one error
per thing wrong (every error of the request, not only the first). What does not: what the
values mean for the registry's tables (`xds.registry.find`), and the answer.

The value syntax (ITI TF-2 3.18.4.1.2.3, the coding of query parameters, and the examples of
3.18.4.1.2.3.7):

- a string is quoted with single quotes: 'P1^^^&1.2.3&ISO'; a quote inside is doubled ('O''Neil');
- a number (times, $MetadataLevel) is written without quotes: 20041224; a quoted number is
  accepted too, as many consumers send one;
- several values are a list: ('a','b'). A list may also be spread over several rim:Value
  elements of one slot (ebRIM limits a Value to 256 characters); all of them are one list,
  OR'ed;
- a parameter is one Slot, holding one ValueList (rim.xsd: a Slot has exactly one; ebRIM 3.0
  gives each Slot of an object its own name). The one exception is the AND/OR parameters (see
  `xds.registry.stored_query`): each of their slots is an OR list, and the slots are AND'ed
  (ITI TF-2 3.18.4.1.2.3.7.1). Any other parameter in several slots is refused with
  XDSStoredQueryParamNumber - a single-valued one as given several values, a multi-valued one
  because two slots would have to mean AND, which its query does not define;
- a code is 'code^^^scheme' (the form the object_code table keys codes by). The NIST XDS Toolkit and
  IPF write 'code^^scheme' (an HL7 CE with components 1 and 3); both are read, and a value
  with no code or no scheme is an error (the toolkit's test 11897/classcode_scheme_mismatch).

Times are checked as HL7 DTM (YYYY[MM[DD[hh[mm[ss]]]]]) and padded with '0' to 14 characters
(`xds.dtm.padded`), as the tables store them, so find.py compares strings.

Limits (`QueryLimits`, from the settings): the work of a query must not grow without bound
with what a client writes, so before any SQL runs a request is refused with
XDSStoredQueryParamNumber, naming the parameter and the limit, when

- one parameter carries more than `parameter_values` values (all its slots together): the
  tokenizer stops reading at the first value past the limit;
- the parameters of the query carry more than `values` values in all;
- the query asks for more than `terms` terms, each a test of every candidate object against a
  side table: each slot of a code parameter (one EXISTS on object_code; an AND/OR parameter
  has one per slot) and each authorPerson pattern (one more LIKE per author). A list of codes
  in one slot is one term however long: find.py looks each object's codes up in it, it does not
  try the list value by value. What the terms cost grows faster than their number: on
  PostgreSQL, 8 AND'ed slots took 25 ms to plan, 16 took 41 ms, 64 took 725 ms (each EXISTS is
  a semi-join its planner orders); tried as subplans instead, 64 took 1.1 s to run over a
  patient's 5,000 entries.

Slots the query does not take are ignored (ebRS 3.0 6.3.2.1) and not parsed: they cost the XML
parser's work only, which the envelope's size bounds.

A Multi-Patient Stored Query (ITI-51) is read the same way, from its own table of queries: its
patient list is one parameter like any other, held to the same limits (so
`max_query_parameter_values` is also the most patients one such query names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from xds import dtm
from xds.ebrim import ns
from xds.ebrim.slots import SLOT, VALUE, VALUE_LIST, slot_values
from xds.errors import XdsError
from xds.model import AssociationType, AvailabilityStatus, DocumentEntryType
from xds.registry import stored_query
from xds.registry.stored_query import Parameter, StoredQuery, ValueKind
from xds.rules import error

LEAF_CLASS = "LeafClass"
OBJECT_REF = "ObjectRef"
RETURN_TYPES = (LEAF_CLASS, OBJECT_REF)

ADHOC_QUERY_REQUEST = f"{{{ns.QUERY}}}AdhocQueryRequest"
RESPONSE_OPTION = f"{{{ns.QUERY}}}ResponseOption"
ADHOC_QUERY = ns.rim("AdhocQuery")

#: The metadata levels this registry answers at (ITI TF-2 3.18.4.1.2.3.5.1: level 1 is the
#: default; level 2 is the Metadata Update option's, every version: xds.registry.find).
METADATA_LEVELS = (1, 2)

#: xs:boolean's lexical forms (returnComposedObjects), after its whitespace is collapsed.
_BOOLEANS = ("true", "false", "1", "0")
_XML_SPACE = " \t\r\n"

_STATUSES = frozenset(s.value for s in AvailabilityStatus)
_DOCUMENT_TYPES = frozenset(t.value for t in DocumentEntryType)
_ASSOCIATION_TYPES = frozenset(t.value for t in AssociationType)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)


@dataclass(frozen=True)
class QueryLimits:
    """What one stored query may ask for (see the module's docstring); the settings
    max_query_parameter_values, max_query_values and max_query_terms."""

    parameter_values: int = 10000
    values: int = 20000
    terms: int = 16


@dataclass
class QueryRequest:
    """A stored query call, checked: every parameter is present as the query needs it.

    params: parameter name -> value. A single-valued parameter's value is a str (an int for
    $MetadataLevel); a multi-valued one's a list of str; an AND/OR one's a list of lists (one
    list per slot). Times are padded to 14 digits; codes are 'code^^^scheme'. A parameter that
    was not given is absent, unless the query table gives it a default.
    """

    query: StoredQuery
    return_type: str
    params: dict[str, Any] = field(default_factory=dict)
    #: rim:AdhocQuery/@home, else $homeCommunityId (ITI TF-2 3.18.4.1.2.3.8).
    home: str | None = None

    @property
    def leaf_class(self) -> bool:
        return self.return_type == LEAF_CLASS


@dataclass
class _Token:
    text: str
    quoted: bool


class _SyntaxError(ValueError):
    pass


#: The stored queries of each transaction, by id.
_QUERIES = {name: {q.id: q for q in queries} for name, queries in stored_query.BY_TRANSACTION.items()}
_TITLES = {stored_query.REGISTRY_STORED_QUERY: "Registry Stored Query (ITI-18)",
           stored_query.MULTI_PATIENT_STORED_QUERY: "Multi-Patient Stored Query (ITI-51)"}


def read_query_request(request: etree._Element, limits: QueryLimits = QueryLimits(),
                       transaction: str = stored_query.REGISTRY_STORED_QUERY,
                       ) -> tuple[QueryRequest | None, list[XdsError]]:
    """The stored query call of an AdhocQueryRequest sent as `transaction` (ITI-18 or ITI-51),
    or None and every error found in it."""
    if request.tag != ADHOC_QUERY_REQUEST:
        return None, [error("query.not-adhoc-query", found=_name(request))]
    adhoc = request.find(ADHOC_QUERY)
    if adhoc is None:
        return None, [error("query.no-adhoc-query")]
    query_id = (adhoc.get("id") or "").strip()
    query = _QUERIES[transaction].get(query_id)
    if query is None:
        return None, [_unknown(query_id, transaction)]

    errors: list[XdsError] = []
    option = request.find(RESPONSE_OPTION)
    return_type = option.get("returnType") if option is not None else None
    if return_type not in RETURN_TYPES:
        errors.append(error("query.bad-return-type", "returnType", value=return_type or "(none)"))
    composed = option.get("returnComposedObjects") if option is not None else None
    if composed is not None and composed.strip(_XML_SPACE) not in _BOOLEANS:
        errors.append(error("query.bad-return-composed-objects", "returnComposedObjects", value=composed))

    slots: dict[str, list[list[str]]] = {}
    for slot in adhoc.iterchildren(SLOT):
        name = (slot.get("name") or "").strip()
        value_lists = [child for child in slot if child.tag == VALUE_LIST]
        if len(value_lists) > 1:
            # Only the first is read on: one error for the slot, not more for its values.
            errors.append(error("query.slot-value-lists", name, name=name or "(no name)", count=len(value_lists)))
            slots.setdefault(name, []).append([v.text or "" for v in value_lists[0] if v.tag == VALUE])
            continue
        slots.setdefault(name, []).append(slot_values(slot))
    params, param_errors = read_parameters(query, slots, limits)
    errors += param_errors
    if errors:
        return None, errors
    home = adhoc.get("home") or params.get("$homeCommunityId")
    return QueryRequest(query, return_type or LEAF_CLASS, params, home), []


def _unknown(query_id: str, transaction: str) -> XdsError:
    """XDSUnknownStoredQuery for `query_id` sent as `transaction`: naming the transaction that
    runs it, when another one does."""
    other = stored_query.TRANSACTION_OF.get(query_id)
    if other is not None and other != transaction:
        return error("query.wrong-transaction", query_id, id=query_id, name=stored_query.ALL_BY_ID[query_id].name,
                     transaction=_TITLES[transaction], other=_TITLES[other])
    if transaction == stored_query.MULTI_PATIENT_STORED_QUERY:
        return error("query.unknown-multi-patient", query_id, id=query_id or "(none)")
    return error("query.unknown", query_id, id=query_id or "(none)")


def read_parameters(query: StoredQuery, slots: dict[str, list[list[str]]],
                    limits: QueryLimits = QueryLimits()) -> tuple[dict[str, Any], list[XdsError]]:
    """Typed values of the slots a query takes (name -> one list of rim:Value texts per slot);
    slots the query does not take are ignored (ebRS 3.0 6.3.2.1)."""
    params: dict[str, Any] = {}
    errors: list[XdsError] = []
    counts: dict[str, int] = {}  # values per parameter (the limit + 1 for one past its limit)
    terms = 0
    for parameter in query.parameters:
        given = slots.get(parameter.name)
        if given is None:
            if parameter.required:
                errors.append(error("query.missing-param", parameter.name, query=query.name, param=parameter.name))
            elif parameter.default is not None:
                params[parameter.name] = list(parameter.default)
            continue
        if parameter.kind is ValueKind.CODE:
            terms += len(given)
        try:
            tokens = _slot_tokens(query, parameter, given, limits.parameter_values)
            counts[parameter.name] = sum(len(t) for t in tokens)
            if parameter.kind is ValueKind.PATTERN:
                terms += counts[parameter.name]
            params[parameter.name] = _read(query, parameter, given, tokens)
        except _TooManyValues:
            counts[parameter.name] = limits.parameter_values + 1
            errors.append(error("query.too-many-values", parameter.name, param=parameter.name,
                                limit=limits.parameter_values))
        except XdsError as problem:
            errors.append(problem)
    total = sum(counts.values())
    if total > limits.values:
        most = sorted(counts.items(), key=lambda item: -item[1])[:3]
        errors.append(error("query.too-many-values-in-query", query=query.name, count=total, limit=limits.values,
                            params=", ".join(f"{name} {count}" for name, count in most)))
    if terms > limits.terms:
        errors.append(error("query.too-many-terms", query=query.name, count=terms, limit=limits.terms))
    for group in query.one_of:
        present = [name for name in group if name in slots]
        if not present:
            errors.append(error("query.missing-one-of", group[0], query=query.name, params=" or ".join(group)))
        elif len(present) > 1:
            errors.append(error("query.exclusive-params", present[1], query=query.name,
                                params=" and ".join(present), choices=" or ".join(group)))
    for group in query.at_least_one_of:
        if not any(name in slots for name in group):
            errors.append(error("query.missing-at-least-one", group[0], query=query.name, params=", ".join(group)))
    level = params.get("$MetadataLevel")
    if level is not None and level not in METADATA_LEVELS:
        errors.append(error("query.metadata-level", "$MetadataLevel", value=level))
    return params, errors


# --- one parameter -------------------------------------------------------------------------


class _TooManyValues(Exception):
    pass


def _slot_tokens(query: StoredQuery, parameter: Parameter, slots: list[list[str]], limit: int) -> list[list[_Token]]:
    """The tokens of each slot of a parameter; _TooManyValues at the first past `limit` (the
    rest is not read). A parameter in several slots that may not be is refused first."""
    if len(slots) > 1 and not parameter.and_or:
        if not parameter.multiple:
            raise error("query.param-number", parameter.name, query=query.name, param=parameter.name,
                        found=f"{len(slots)} slots", value="; ".join(" ".join(values) for values in slots))
        raise error("query.repeated-param", parameter.name, query=query.name, param=parameter.name, count=len(slots))
    per_slot: list[list[_Token]] = []
    left = limit
    for values in slots:
        tokens = _tokens(parameter, values, left)
        left -= len(tokens)
        if left < 0:
            raise _TooManyValues()
        per_slot.append(tokens)
    return per_slot


def _read(query: StoredQuery, parameter: Parameter, slots: list[list[str]], tokens: list[list[_Token]]) -> Any:
    per_slot = [[_value(parameter, token) for token in slot_tokens] for slot_tokens in tokens]
    if parameter.kind is ValueKind.NUMBER:
        per_slot = [[int(v) for v in values] for values in per_slot]
    if parameter.and_or:
        return per_slot
    flat = [value for values in per_slot for value in values]
    if parameter.multiple:
        return flat
    if len(flat) != 1 or len(slots) != 1:
        shown = "; ".join(" ".join(values) for values in slots)
        how = f"{len(slots)} slots" if len(slots) > 1 else f"{len(flat)} values"
        raise error("query.param-number", parameter.name, query=query.name, param=parameter.name,
                    found=how, value=shown)
    return flat[0]


def _tokens(parameter: Parameter, values: list[str], limit: int | None = None) -> list[_Token]:
    """The values of one slot; no more than limit + 1 of them are read."""
    # A list spread over several rim:Value elements is one list: join them. A space keeps two
    # quoted strings of adjacent Values apart (joined directly, 'a''b' would read as a'b).
    text = " ".join(values)
    try:
        tokens = _parse(text, limit)
    except _SyntaxError as problem:
        raise error("query.bad-value", parameter.name, param=parameter.name, value=text, reason=str(problem)) from None
    if not tokens:
        raise error("query.bad-value", parameter.name, param=parameter.name, value=text, reason="no value")
    return tokens


def quoted_values(values: list[str], limit: int) -> list[str] | None:
    """The quoted strings of one slot's rim:Value texts (a patient list, for the audit record of
    a query that may be refused), or None when they cannot be read or are more than `limit`."""
    try:
        tokens = _parse(" ".join(values), limit)
    except _SyntaxError:
        return None
    if len(tokens) > limit:
        return None
    return [t.text for t in tokens if t.quoted]


def _parse(text: str, limit: int | None = None) -> list[_Token]:
    """The values of a slot: quoted strings and bare numbers, alone or in parenthesized lists.
    Inside a list, values are separated by commas; between top-level values (the values of
    several rim:Value elements are joined with spaces) a comma or a space separates. With a
    `limit`, reading stops at the first value past it (the limit + 1 values read are returned)."""
    tokens: list[_Token] = []
    i, n = 0, len(text)
    depth = opened = 0
    after_value = spaced = False  # a value (or list) just ended / whitespace at top level since
    while i < n:
        if limit is not None and len(tokens) > limit:
            return tokens
        c = text[i]
        if c.isspace():
            i += 1
            spaced = spaced or (after_value and not depth)
        elif c == "(":
            if depth:
                raise _SyntaxError("a list inside a list")
            if after_value and not spaced:
                raise _SyntaxError("a list must follow a comma or a space")
            depth, opened, i = 1, len(tokens), i + 1
            after_value = spaced = False
        elif c == ")":
            if not depth:
                raise _SyntaxError("')' without '('")
            if len(tokens) == opened:
                raise _SyntaxError("an empty list")
            if not after_value:
                raise _SyntaxError("a comma with no value after it")
            depth, i = 0, i + 1
            after_value, spaced = True, False
        elif c == ",":
            if not after_value:
                raise _SyntaxError("a comma with no value before it")
            i += 1
            after_value = spaced = False
        else:
            if after_value and not spaced:
                raise _SyntaxError(f"values must be separated by commas, found {text[i:i + 12]!r}")
            if c == "'":
                value, i = _quoted(text, i)
                tokens.append(_Token(value, True))
            else:
                start = i
                while i < n and not text[i].isspace() and text[i] not in "(),'":
                    i += 1
                tokens.append(_Token(text[start:i], False))
            after_value, spaced = True, False
    if depth:
        raise _SyntaxError("'(' without ')'")
    return tokens


def _quoted(text: str, start: int) -> tuple[str, int]:
    """The string quoted at text[start] (a "'"), with '' read as one quote; and where it ends."""
    parts = []
    i = start + 1
    while True:
        end = text.find("'", i)
        if end < 0:
            raise _SyntaxError("a quote that is not closed")
        parts.append(text[i:end])
        if text.startswith("''", end):
            parts.append("'")
            i = end + 2
        else:
            return "".join(parts), end + 1


def _value(parameter: Parameter, token: _Token) -> str:
    """One value, checked for the parameter's kind; raises the error that says what is wrong."""
    kind = parameter.kind
    value = token.text
    if kind in (ValueKind.TIME, ValueKind.NUMBER):
        if not _DIGITS.fullmatch(value):
            if kind is ValueKind.NUMBER:
                raise error("query.bad-value", parameter.name, param=parameter.name, value=value,
                            reason="not a whole number")
            raise error("query.bad-time", parameter.name, param=parameter.name, value=value, reason="not digits")
        if kind is ValueKind.TIME:
            reason = dtm.check(value)
            if reason:
                raise error("query.bad-time", parameter.name, param=parameter.name, value=value, reason=reason)
            return dtm.padded(value) or ""
        return value
    if not token.quoted:
        raise error("query.bad-value", parameter.name, param=parameter.name, value=value,
                    reason="a string must be in single quotes")
    if kind is ValueKind.CODE:
        code = code_key(value)
        if code is None:
            raise error("query.bad-code", parameter.name, param=parameter.name, value=value)
        return code
    if kind is ValueKind.STATUS and value not in _STATUSES:
        raise error("query.bad-status", parameter.name, param=parameter.name, value=value)
    if kind is ValueKind.DOCUMENT_TYPE and value not in _DOCUMENT_TYPES:
        raise error("query.bad-document-type", parameter.name, param=parameter.name, value=value)
    if kind is ValueKind.ASSOCIATION_TYPE and value not in _ASSOCIATION_TYPES:
        raise error("query.bad-association-type", parameter.name, param=parameter.name, value=value)
    return value


def code_key(value: str) -> str | None:
    """'code^^^scheme' (or 'code^^scheme') as the object_code table's key 'code^^^scheme';
    None if the value has no code, no scheme, or more than these two components."""
    parts = value.split("^")
    if len(parts) not in (3, 4) or any(parts[1:-1]):
        return None
    code, scheme = parts[0], parts[-1]
    if not code.strip() or not scheme.strip():
        return None
    return f"{code}^^^{scheme}"


def _name(element: etree._Element) -> str:
    qname = etree.QName(element)
    return f"{{{qname.namespace}}}{qname.localname}" if qname.namespace else qname.localname
