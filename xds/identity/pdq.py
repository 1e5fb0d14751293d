"""Patient Demographics Query (ITI-47, ITI TF-2b 3.47.4.1.2): find patients by demographics.

    search(session, PdqQuery(...), policy, offset=0, count=None) -> PdqPage

What a query matches (every parameter given must match: they are ANDed; the repetitions of one
parameter are ORed):

| parameter | matches a patient when |
| --- | --- |
| livingSubjectName (`names`) | one of its names has every family part and every given part of the query name (normalised: xds.identity.names, so a kanji query finds the IDE name, a kana query the SYL name, whatever the width or kana kind); a query name with text only (no parts) matches the whole name (family then given, or for an alphabetic name given then family; spaces do not count) or the family name alone. Exact, unless the name's use has SRCH: then each part is a prefix ("If the sender needs to indicate that the name parts specified are not limited to an exact match, the use attribute should be set to SRCH") |
| livingSubjectBirthTime (`birth_time`, or `birth_time_low` / `_high`) | its birth time begins with the query's digits, to the day (1971 matches 19710101); or lies between the bounds, each inclusive at its precision |
| livingSubjectAdministrativeGender (`gender`) | same code |
| patientAddress (`addresses`) | one of its addresses has every part the query address has (street lines, city, state, postal code, country; normalised, exact) |
| livingSubjectId (`ids`) | it is one of these ids |
| mothersMaidenName | its mother's maiden name matches as a name does |
| patientTelecom (`telecoms`) | one of its telecoms is one of these (scheme kept, separators and spaces ignored) |
| otherIDsScopingOrganization (`scoping_organizations`) | (not a filter) each match carries its person's ids in these domains, and names the domains it has none in |

Each match is one patient record (an id and its demographics, as its source fed it), with the
other ids of its person. Retired (merged) ids are never found. Score: 100 when every name part
matched whole, 80 when some matched only as a prefix (SRCH); matches come by score, then in the
order the patients were first fed, so that pages (offset, count) are stable for the continuation
protocol (QUQI_IN000003UV01_Continue: call again with the next offset).

Speed: every parameter is an indexed column or search key (identity_key), so a query by family
name is one index range scan of ix_identity_key_key, whatever else it has. A search runs one
statement per score tier (its count and its page together) and one for the patients found with
their persons' ids: on PostgreSQL each statement is a round trip, which on a busy host costs
more than the work. bench/pdq.py measures it over 1,000,000 patients (bench/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import (BigInteger, ColumnElement, CompoundSelect, Select, and_, distinct, except_, func, intersect,
                        literal, or_, select, tuple_, union, union_all)
from sqlalchemy import Table
from sqlalchemy.orm import Session

from xds.identity import records
from xds.identity.errors import IdentityError
from xds.identity.names import (FAMILY, GIVEN, MMN_FAMILY, MMN_GIVEN, MMN_NAME, NAME, TELECOM, Normaliser,
                                birth_date, prefix_upper)
from xds.identity.links import NAMED
from xds.identity.policy import IdentityPolicy
from xds.identity.store import ACTIVE
from xds.model.person import Address, Identifier, PatientRecord, PersonName
from xds.store.prepared import Prepared, one_of
from xds.store.tables import IdentityKeyRow, IdentityOtherIdRow, IdentityPatientRow

#: The use code that allows more than exact matching of a name (EntityNameUse SRCH).
SEARCH_USE = "SRCH"
EXACT_SCORE, PREFIX_SCORE = 100, 80


@dataclass
class PdqQuery:
    names: list[PersonName] = field(default_factory=list)
    #: livingSubjectBirthTime: a value (TS at any precision), or bounds (IVL_TS low / high,
    #: inclusive at their precision: high 1980 takes all of 1980).
    birth_time: str | None = None
    birth_time_low: str | None = None
    birth_time_high: str | None = None
    gender: str | None = None
    addresses: list[Address] = field(default_factory=list)
    ids: list[Identifier] = field(default_factory=list)
    mothers_maiden_name: PersonName | None = None
    telecoms: list[str] = field(default_factory=list)
    scoping_organizations: list[str] = field(default_factory=list)


@dataclass
class PdqMatch:
    patient: Identifier
    record: PatientRecord
    score: int
    #: The person's other active ids (only those in the scoping organizations when some are
    #: requested), and the requested domains it has no id in (the service writes a nullFlavor).
    other_ids: list[Identifier]
    missing_domains: list[str]
    person_id: int


@dataclass
class PdqPage:
    #: How many patients match in all (resultTotalQuantity); `matches` are those from `offset`.
    total: int
    offset: int
    matches: list[PdqMatch]

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.offset - len(self.matches))


# A requirement on one search key: (kinds, key, prefix?).
_Req = tuple[tuple[str, ...], str, bool]


#: Access control (xds.consent): which of a search's matches (patient pks) may be shown.
Shown = Callable[[Session, list[int]], set[int]]


def search(session: Session, query: PdqQuery, policy: IdentityPolicy, offset: int = 0,
           count: int | None = None, shown: Shown | None = None) -> PdqPage:
    """The matches from `offset`, at most `count` of them (all when None). With `shown`, of
    those it lets through: every match's pk is read to ask it (the total counts them exactly),
    the demographics of the page only."""
    if shown is not None:
        every = _ranked(session, query, policy, 0, None)[1]
        allowed = shown(session, [pk for pk, _ in every])
        kept = [match for match in every if match[0] in allowed]
        page = kept[offset:] if count is None else kept[offset:offset + count]
        return PdqPage(len(kept), offset, _matches(session, page, query))
    total, found = _ranked(session, query, policy, offset, count)
    return PdqPage(total, offset, _matches(session, found, query))


def _ranked(session: Session, query: PdqQuery, policy: IdentityPolicy, offset: int,
            count: int | None) -> tuple[int, list[tuple[int, int]]]:
    """How many patients match, and the (pk, score) of those from `offset` (at most `count`)."""
    n = policy.normaliser
    dialect = session.get_bind().dialect.name
    exact = _candidates(query, n, dialect, prefix=False)
    if exact is None:
        raise IdentityError("no-parameters", "the query has no parameter to match on")
    tiers: list[tuple[int, _Matching | None]] = [(EXACT_SCORE, exact)]
    if _has_search_names(query):
        tiers.append((PREFIX_SCORE, None))  # built once the exact tier is counted
    found: list[tuple[int, int]] = []  # (pk, score)
    total, skip = 0, offset
    for score, matching in tiers:
        if matching is None:
            fuzzy = _candidates(query, n, dialect, prefix=True)
            assert fuzzy is not None
            # The prefix tier is what the prefix query finds beyond the exact tier. When the
            # exact tier is empty (the usual SRCH query: a prefix shorter than any name) that
            # is the prefix query itself, counted and paged from the index like any query,
            # not an EXCEPT that collects every prefix match twice (count, then page).
            matching = fuzzy if total == 0 else _beyond(fuzzy, exact)
        want = None if count is None else count - len(found)
        size, pks = _count_and_page(session, matching, skip, want)
        total += size
        found += [(pk, score) for pk in pks]
        skip = max(0, skip - size)
    return total, found


def _count_and_page(session: Session, matching: _Matching, skip: int, want: int | None) -> tuple[int, list[int]]:
    """How many patients `matching` finds, and the pks of those from `skip` on (at most
    `want`), in one statement: the count, then the page. On PostgreSQL each statement is a
    round trip to the server, which on a busy host costs more than counting or paging do."""
    if want == 0:
        return session.scalar(matching.count) or 0, []
    page = matching.page.offset(skip)
    if want is not None:
        page = page.limit(want)
    listed = page.subquery()
    both = union_all(select(literal(0).label("part"), matching.count.scalar_subquery().label("value")),
                     select(literal(1), *listed.c))
    # The page is in pk order (every _Matching.page is): ordering by value keeps it.
    rows = session.execute(both.order_by(*both.selected_columns)).all()
    return rows[0].value or 0, [row.value for row in rows[1:]]


def _beyond(fuzzy: _Matching, exact: _Matching) -> _Matching:
    """The patients `fuzzy` matches and `exact` does not."""
    rest = except_(fuzzy.pks, exact.pks).subquery()
    pk = list(rest.c)[0]
    return _Matching(select(pk), select(func.count()).select_from(rest), select(pk).order_by(pk))


@dataclass
class _Matching:
    """The patients a query matches: their pks (a patient may come more than once), how many
    they are, and the pks each once in pk order (the caller adds offset and limit)."""

    pks: Select
    count: Select
    page: Select


def _candidates(query: PdqQuery, n: Normaliser, dialect: str, *, prefix: bool) -> _Matching | None:
    """None when the query asks nothing.

    Retired patients have no search keys, so a query on keys alone (names, addresses,
    telecoms: the common case) is answered from ix_identity_key_key without visiting a patient
    row; one on a single name part in one index range is then counted and paged straight from
    that index (GROUP BY patient_pk in its order: a page of 100 of 130,000 "佐藤" in 0.1 ms).
    The others check the patient's columns."""
    P = IdentityPatientRow
    keys, columns = _conditions(query, n, dialect, prefix=prefix)
    if not keys and not columns:
        return None
    if len(keys) == 1 and not columns and not isinstance(keys[0], CompoundSelect):
        only = keys[0]
        pk = only.selected_columns[0]
        return _Matching(only, only.with_only_columns(func.count(distinct(pk))), only.group_by(pk).order_by(pk))
    if keys and not columns:
        matched = keys[0] if len(keys) == 1 else intersect(*keys)
        return _Matching(matched, select(func.count()).select_from(matched.subquery()),
                         select(P.pk).where(P.pk.in_(matched)).order_by(P.pk))
    if keys:
        columns.append(P.pk.in_(keys[0] if len(keys) == 1 else intersect(*keys)))
    where = and_(P.status == ACTIVE, *columns)
    return _Matching(select(P.pk).where(where), select(func.count()).select_from(P).where(where),
                     select(P.pk).where(where).order_by(P.pk))


def _has_search_names(query: PdqQuery) -> bool:
    names = [*query.names, *([query.mothers_maiden_name] if query.mothers_maiden_name else [])]
    return any(SEARCH_USE in name.uses for name in names)


def _conditions(query: PdqQuery, n: Normaliser, dialect: str, *,
                prefix: bool) -> tuple[list[Select], list[ColumnElement[bool]]]:
    """The query as selects of patient pks from identity_key (all must hold) and conditions
    on identity_patient's columns. `prefix`: match SRCH names by prefix (else exactly)."""
    P = IdentityPatientRow
    keys: list[Select] = []
    conditions: list[ColumnElement[bool]] = []

    def any_group(groups: list[list[_Req]]) -> None:
        selects = [_group(reqs, dialect) for reqs in groups if reqs]
        if not selects:
            conditions.append(literal(False))
        else:
            keys.append(selects[0] if len(selects) == 1 else union(*selects))

    if query.names:
        groups = [_name_requirements(name, n, FAMILY, GIVEN, NAME, prefix) for name in query.names]
        any_group(groups)
    if query.mothers_maiden_name is not None:
        groups = [_name_requirements(query.mothers_maiden_name, n, MMN_FAMILY, MMN_GIVEN, MMN_NAME, prefix)]
        any_group(groups)
    if query.birth_time:
        date = birth_date(query.birth_time)
        if date is None:
            conditions.append(literal(False))
        elif len(date) == 8:
            conditions.append(P.birth_date == date)
        else:
            conditions.append(and_(P.birth_date >= date, P.birth_date < prefix_upper(date)))
    if query.birth_time_low or query.birth_time_high:
        low, high = birth_date(query.birth_time_low), birth_date(query.birth_time_high)
        if low:
            conditions.append(P.birth_date >= low)
        if high:
            conditions.append(P.birth_date < prefix_upper(high))
        if not low and not high:
            conditions.append(literal(False))
    if query.gender:
        conditions.append(P.gender == query.gender)
    if query.addresses:
        groups = [[((kind,), key, False) for kind, keys in n.address_parts(address) for key in keys]
                  for address in query.addresses]
        any_group(groups)
    if query.ids:
        wanted = [(i.root, i.extension) for i in query.ids]
        # The patient of the id (not a named one: its record is the id alone), or a patient
        # whose record names the id (asOtherIDs): the person is found by an id no source fed.
        # One set of pks from both indexes: written as an OR of the two, PostgreSQL scanned every
        # patient (1.3 s at 1,000,000).
        o, own = _OTHER_IDS, _OWN
        conditions.append(P.pk.in_(union(
            select(own.c.pk).where(tuple_(own.c.root, own.c.extension).in_(wanted), own.c.link != NAMED),
            select(o.c.patient_pk).where(tuple_(o.c.root, o.c.extension).in_(wanted)))))
    if query.telecoms:
        telecoms = sorted({k for k in (n.telecom_key(t) for t in query.telecoms) if k})
        any_group([[((TELECOM,), key, False)] for key in telecoms])
    return keys, conditions


def _name_requirements(name: PersonName, n: Normaliser, family: str, given: str, whole: str,
                       prefix: bool) -> list[_Req]:
    """What one query name requires of one name of a patient (all at one seq)."""
    prefix = prefix and SEARCH_USE in name.uses
    reqs: list[_Req] = [((family,), k, prefix) for k in (n.key(p) for p in name.family)]
    reqs += [((given,), k, prefix) for k in (n.key(p) for p in name.given)]
    if not name.family and not name.given and name.text:
        tokens = name.text.split()
        kinds = (family, whole) if len(tokens) == 1 else (whole,)
        reqs.append((kinds, n.key(name.text), prefix))
    if any(not key for _, key, _ in reqs):
        return []  # a part with nothing left after normalising (punctuation only) matches nothing
    return reqs


_KEYS: Table = IdentityKeyRow.__table__  # type: ignore[assignment]
_PATIENTS: Table = IdentityPatientRow.__table__  # type: ignore[assignment]
_OTHER_IDS: Table = IdentityOtherIdRow.__table__  # type: ignore[assignment]
_OWN = _PATIENTS.alias("own")  # made once: an alias builds its column collections
_FOUND = _PATIENTS.alias("found")


def _group(reqs: list[_Req], dialect: str) -> Select:
    """The pks of the patients with one name (or address) that meets every requirement (a
    patient may come more than once).

    The parts of one name are entries of one (patient_pk, seq) in several ranges of
    ix_identity_key_key, each range in (patient_pk, seq) order when its key is exact.
    PostgreSQL merge-joins those ranges (a join on patient_pk and seq). SQLite has no merge
    join and, with no statistics, starts the join from the first part and probes the primary
    key for each of its entries (0.4-0.8 s for 佐藤 正 at 1,000,000 patients: 33,000 佐藤 spread
    over 14 million entries); an INTERSECT ordered by (patient_pk, seq) it does merge, reading
    each range once in index order (a few ms for 佐藤 正, whichever part is rarer).
    """
    # Core tables and aliases, not ORM ones: building the statement is a good part of a
    # query's time.
    if len(reqs) > 1 and dialect == "sqlite":
        merged = intersect(*(select(_KEYS.c.patient_pk, _KEYS.c.seq).where(_match(_KEYS.c, req)) for req in reqs))
        # LIMIT -1 (none): SQLite drops the ORDER BY of a subquery without a LIMIT when the
        # outer query orders too (the page does), and without it intersects through a
        # temporary b-tree instead of merging.
        name = merged.order_by(*merged.selected_columns).limit(-1).subquery("k")
        return select(name.c.patient_pk).select_from(name)
    first = _KEYS.alias("k0")
    joined = first
    conditions = [_match(first.c, reqs[0])]
    for number, req in enumerate(reqs[1:], 1):
        other = _KEYS.alias(f"k{number}")
        joined = joined.join(other, and_(other.c.patient_pk == first.c.patient_pk, other.c.seq == first.c.seq))
        conditions.append(_match(other.c, req))
    return select(first.c.patient_pk).select_from(joined).where(*conditions)


def _match(k, req: _Req) -> ColumnElement[bool]:
    kinds, key, prefix = req
    kind = k.kind == kinds[0] if len(kinds) == 1 else k.kind.in_(kinds)
    if not prefix:
        return and_(kind, k.key == key)
    upper = prefix_upper(key)
    bound = k.key >= key if upper is None else and_(k.key >= key, k.key < upper)
    return and_(kind, bound)


def _persons_of_found(dialect: str) -> Select:
    """The patients found (`pks`) and every active patient of their persons, in pk order. A
    patient found is read even when a merge retired it since (PostgreSQL: each statement sees
    the latest commits), so that the page stays whole."""
    P, found = _PATIENTS.c, _FOUND.c
    return (select(P.pk, P.root, P.extension, P.person_id, P.status, P.record)
            .where(P.person_id.in_(select(found.person_id).where(one_of(found.pk, "pks", dialect, BigInteger))),
                   or_(P.status == ACTIVE, one_of(P.pk, "pks", dialect, BigInteger)))
            .order_by(P.pk))


#: One statement (one round trip) for a page, compiled once: its pks are one bound list, so
#: the statement's text is the same for every page (an IN of 100 binds was compiled anew and
#: parsed by the driver for each). Plain rows, not ORM objects.
_PERSONS_OF_FOUND = Prepared(_persons_of_found)


def _matches(session: Session, found: list[tuple[int, int]], query: PdqQuery) -> list[PdqMatch]:
    if not found:
        return []
    rows: dict[int, tuple] = {}
    members: dict[int, list[tuple[int, Identifier]]] = {}
    for row in _PERSONS_OF_FOUND.all(session, {"pks": [pk for pk, _ in found]}):
        pk, root, extension, person_id, status, _record = row
        rows[pk] = row
        if status == ACTIVE:
            members.setdefault(person_id, []).append((pk, Identifier(root, extension)))
    wanted = list(dict.fromkeys(query.scoping_organizations))
    matches = []
    for pk, score in found:
        _pk, root, extension, person_id, _status, stored = rows[pk]
        others = [i for member, i in members.get(person_id, []) if member != pk]
        if wanted:
            # The patient's own id counts for its own domain.
            have = {i.root for i in others} | {root}
            others = [i for i in others if i.root in wanted]
            missing = [d for d in wanted if d not in have]
        else:
            missing = []
        record = records.from_json(stored)
        # The ids as the record's source wrote them, with the assigningAuthorityName it gave
        # (ids are equal whatever their name says)
        named = {i: i for i in (*record.ids, *record.other_ids) if i.assigning_authority_name}
        own = Identifier(root, extension)
        matches.append(PdqMatch(named.get(own, own), record, score, [named.get(i, i) for i in others],
                                missing, person_id))
    return matches
